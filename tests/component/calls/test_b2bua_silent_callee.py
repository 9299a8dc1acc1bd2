"""A callee that falls silent while it rings (a phone that lost its network, a NAT binding gone):
the caller cancels, our CANCEL and the INVITE to the callee are never answered. Found by
benchmarks/soak.py, whose drained gateway kept such INVITE client transactions for ever.

RFC 3261 §9.1: "If no final response has been received after 64*T1 seconds, the client SHOULD
then consider the original transaction cancelled and SHOULD destroy the client transaction
handling the original request." An INVITE client transaction in Proceeding has no timer of its
own (§17.1.1.2, figure 5), so without that rule it stayed in the transaction table, with the
endpoint's entry for it, after the call had ended: a few entries per thousand calls under
overload, an outage after months.
"""

from __future__ import annotations

from pathlib import Path

import trio

from tests.component.calls.b2bua_env import ALICE, ALICE_DID, GW, start_b2bua


async def test_an_invite_to_a_callee_silent_after_ringing_is_forgotten_after_the_cancel(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    endpoint = env.gateway.endpoint
    await trio.sleep(40)  # the set-up's REGISTER transaction ends (Timer J: 64*T1)
    idle = endpoint.sizes()
    assert idle["sip_client_transactions"] == 0

    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    await trio.sleep(1)  # the 180 reaches the caller
    env.network.set_link(ALICE, GW, drop=1.0)  # alice's phone is gone from here on
    await call.cancel()
    assert (await call.final()).status == 487
    # The call waits 64*T1 for the callee's final response, then ends; 64*T1 after the CANCEL
    # the INVITE is given up (§9.1); every other transaction's last timer (F and K of our
    # CANCEL, J of the caller's CANCEL, L of its INVITE) is over well before 80 s.
    await trio.sleep(80)
    assert env.calls == 0
    assert endpoint.sizes() == idle
