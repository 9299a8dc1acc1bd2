"""Why a call or a ringing ends travels to the other leg (RFC 3326 Reason): a callee's CANCEL
says "Call completed elsewhere" when another device answered (test_b2bua_more.py) or carries the
caller's own Reason; a BYE carries the Reason the other side hung up with (a Q.850 cause from
the PSTN, say), else ours; a callee's failure carries its Reason to the caller. Before, only our
own generic Reason was sent, and a carrier's release cause was lost.

Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 calls alice's DID.
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.testing.sip_agent import Call
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    B2bua,
    answered_call,
    eventually,
    start_b2bua,
)

Q850_NORMAL = 'Q.850;cause=16;text="Normal call clearing"'
Q850_BUSY = 'Q.850;cause=17;text="User busy"'


async def test_a_bye_carries_the_reason_the_other_side_hung_up_with(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    exchange = await call.request("BYE", extra=[("Reason", Q850_NORMAL)])
    assert (await exchange.final()).status == 200
    bye = await env.alice.next_request("BYE")
    assert bye.request.headers.get_all("Reason") == (Q850_NORMAL,)
    await eventually(lambda: env.calls == 0)
    # Without one, ours says which side hung up.
    call, leg_b = await answered_call(env)
    assert (await leg_b.bye()).status == 200
    bye = await env.trunk.next_request("BYE")
    assert bye.request.headers.get("Reason") == 'SIP;cause=200;text="BYE from B leg"'


async def ringing(env: B2bua) -> tuple[Call, Call]:
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    assert call.exchange is not None
    await call.exchange.wait_for(lambda r: r.status == 180)
    return call, leg_b


async def test_the_callers_cancel_reason_reaches_the_ringing_callee(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    # A CANCEL without a Reason: the callee's has none either (we invent no cause).
    call, _ = await ringing(env)
    await call.cancel()
    assert (await call.final()).status == 487
    # A PSTN caller hanging up while it rings: Q.850 cause 16 in the CANCEL.
    call, _ = await ringing(env)
    await call.cancel(extra=[("Reason", Q850_NORMAL)])
    assert (await call.final()).status == 487
    await eventually(lambda: len(env.alice.requests("CANCEL")) == 2)
    assert [c.headers.get("Reason") for c in env.alice.requests("CANCEL")] == [None, Q850_NORMAL]
    await eventually(lambda: env.calls == 0)


async def test_a_callees_failure_reason_reaches_the_caller(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 486, extra=[("Reason", Q850_BUSY)])
    busy = await call.final()
    assert busy.status == 486
    assert busy.headers.get_all("Reason") == (Q850_BUSY,)
    await eventually(lambda: env.calls == 0)
