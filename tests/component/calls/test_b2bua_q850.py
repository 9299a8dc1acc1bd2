"""Release causes for a trunk with a PSTN interworking (``[[trunks]] interworking = "rfc3398"``,
the ``pstn`` plugin): what the gateway sends the carrier carries a Q.850 ``Reason`` (RFC 3326;
in failure responses RFC 6432), mapped from the SIP status by RFC 3398 §8.2.6.1, 16 "normal
call clearing" in the BYE of a hang-up; a Q.850 cause the other side gave goes on alone; a trunk
without an interworking gets none (test_b2bua_reason.py).

Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 calls alice's DID; bob never registers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from gateway.plugins.pstn import rfc3398
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    BOB_DID,
    B2bua,
    answered_call,
    eventually,
    start_b2bua,
)


async def with_interworking(
    nursery: trio.Nursery, tmp_path: Path, seed: int, **kwargs: Any
) -> B2bua:
    return await start_b2bua(
        nursery,
        tmp_path,
        seed,
        plugins=[("pstn", rfc3398)],
        carrier={"interworking": "rfc3398"},
        **kwargs,
    )


async def test_failures_to_the_trunk_carry_the_mapped_release_cause(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_interworking(nursery, tmp_path, voipgw_seed, alice_auto=None)
    # Our own refusal: bob has no registered device (480 -> 18 "no user responding").
    call = await env.trunk.invite(env.did_uri(BOB_DID))
    refused = await call.final()
    assert refused.status == 480
    assert refused.headers.get_all("Reason") == ("Q.850;cause=18",)
    # A number nobody has: 404 -> 1 "unallocated number".
    call = await env.trunk.invite(env.did_uri("+4930000000"))
    assert (await call.final()).headers.get_all("Reason") == ("Q.850;cause=1",)
    # alice's phone is busy and says no more: 486 -> 17 "user busy".
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 486)
    busy = await call.final()
    assert (busy.status, busy.headers.get_all("Reason")) == (486, ("Q.850;cause=17",))
    # A cause the phone gave goes on as it came, and nothing is added to it.
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 603, extra=[("Reason", "Q.850;cause=21")])
    declined = await call.final()
    assert (declined.status, declined.headers.get_all("Reason")) == (603, ("Q.850;cause=21",))


async def test_a_hang_up_is_normal_call_clearing_and_an_expired_session_timer_102(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_interworking(nursery, tmp_path, voipgw_seed)
    _, leg_b = await answered_call(env)
    assert (await leg_b.bye()).status == 200
    bye = await env.trunk.next_request("BYE")
    assert bye.request.headers.get_all("Reason") == (
        'SIP;cause=200;text="BYE from B leg"',
        "Q.850;cause=16",
    )
    await eventually(lambda: env.calls == 0)
    # The carrier was to refresh its session (RFC 4028) and did not: the gateway ends the call
    # with SIP cause 408, which RFC 3398 maps to 102 "recovery on timer expiry".
    timer = [("Supported", "timer"), ("Session-Expires", "90;refresher=uac")]
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=timer)
    assert (await call.final()).status == 200
    bye = await env.trunk.next_request("BYE", timeout=120)
    reasons = bye.request.headers.get_all("Reason")
    assert reasons[0].startswith("SIP;cause=408;")
    assert reasons[1:] == ("Q.850;cause=102",)
    await eventually(lambda: env.calls == 0)


async def test_the_operators_override_replaces_one_entry(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    tables = {"enable": ["pstn"], "pstn": {"q850_for_status": {"480": 20}}}
    env = await with_interworking(nursery, tmp_path, voipgw_seed, plugin_tables=tables)
    call = await env.trunk.invite(env.did_uri(BOB_DID))
    refused = await call.final()
    assert refused.headers.get_all("Reason") == ("Q.850;cause=20",)  # "subscriber absent"
