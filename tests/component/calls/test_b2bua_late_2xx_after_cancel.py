"""A 2xx that comes after the gateway gave up on a CANCELled INVITE (RFC 3261 §9.1: 64*T1 after
the CANCEL with no final response, the transaction is considered cancelled).

The peer answered after all: the UAC core still ACKs that 2xx (§13.2.2.4, RFC 6026) and ends
the session nobody will use with BYE (§15), or the peer re-sends its 2xx for 64*T1 and keeps a
dialog (a callee's phone "in a call" with nobody) until it gives up.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.core.endpoint import ClientRequest
from gateway.core.sip.message import Response
from gateway.testing.sip_agent import Received
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    T1,
    answered_call,
    eventually,
    next_within,
    start_b2bua,
)
from tests.component.calls.test_b2bua_more import second_phone

GIVE_UP = 64 * T1 + 1.0  # the §9.1 wait after the CANCEL


async def test_a_2xx_to_a_cancelled_reinvite_after_the_give_up_is_acked(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Alice answers the gateway's copy of the trunk's re-INVITE 183, ignores its CANCEL, and
    # answers 200 once the gateway has given up on it (the call ended meanwhile).
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    held: list[Received] = []

    async def only_183(received: Received) -> bool:
        if received.request.method != "INVITE":
            return False
        await env.alice.respond(received, 183, body=env.alice.answer_sdp(received.request.body))
        held.append(received)
        return True

    env.alice.in_dialog = only_183
    assert (await call.reinvite(env.trunk.offer_sdp(), timeout=2 * GIVE_UP)).status == 408
    await env.alice.next_request("CANCEL")
    await eventually(lambda: env.calls == 0)
    await trio.sleep(GIVE_UP)
    reinvite = held[0].request
    await env.alice.respond(held[0], 200, body=env.alice.answer_sdp(reinvite.body))
    ack = await next_within(env.alice, "ACK", 5)
    while ack is not None and ack.request.cseq.number != reinvite.cseq.number:
        ack = await next_within(env.alice, "ACK", 5)  # the call's first ACK
    assert ack is not None
    assert env.alice.awaiting_ack == []


async def test_a_callee_answering_after_the_give_up_on_its_cancel_is_acked_and_byed(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Alice's phone rings; the trunk hangs up (CANCEL); the phone answers the gateway's CANCEL
    # 200 but never ends its INVITE with 487, and picks up after the gateway has given up.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    delivered: list[tuple[str, int]] = []
    deliver = ClientRequest._deliver

    def spy(self: ClientRequest, response: Response) -> bool:
        delivered.append((response.cseq.method, response.status))
        return deliver(self, response)

    monkeypatch.setattr(ClientRequest, "_deliver", spy)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    assert call.exchange is not None
    await eventually(lambda: 180 in call.exchange.statuses)
    assert leg_b.incoming is not None and leg_b.incoming.transaction is not None
    # The agent would answer its INVITE 487 on the CANCEL (§9.2): this phone does not.
    del env.alice._by_invite[leg_b.incoming.transaction]
    await call.cancel()
    assert (await call.final()).status == 487
    await env.alice.next_request("CANCEL")
    # The call drains its B leg until the give-up (64*T1 after the CANCEL), then ends.
    await eventually(lambda: env.calls == 0, timeout=2 * GIVE_UP)
    # The give-up reached the call as a timeout (RFC 3261 §8.1.3.1: 408), its leg's final.
    assert ("INVITE", 408) in delivered
    await trio.sleep(1)
    await leg_b.answer(200)
    assert await next_within(env.alice, "ACK", 5) is not None
    bye = await next_within(env.alice, "BYE", 5)
    assert bye is not None
    assert env.alice.awaiting_ack == []


async def test_a_phone_answering_after_the_give_up_while_the_call_goes_on_is_acked_and_byed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Parallel ringing: the second phone answers, the first is CANCELled ("completed
    # elsewhere"), ignores the CANCEL, and picks up once the gateway gave its INVITE up (a 408
    # for that leg). The call, still up, holds that leg's responses: the 2xx is its to ACK
    # and BYE (§13.2.2.4, §15), as a late fork's answer.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    phone2 = await second_phone(env, nursery, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg1 = await env.alice.next_call(timeout=1)
    leg2 = await phone2.next_call(timeout=1)
    await leg1.ring()
    assert leg1.incoming is not None and leg1.incoming.transaction is not None
    del env.alice._by_invite[leg1.incoming.transaction]  # no 487 on the CANCEL (see above)
    await leg2.ring()
    await leg2.answer()
    assert (await call.final()).status == 200
    await env.alice.next_request("CANCEL", timeout=1)
    await trio.sleep(GIVE_UP)
    await leg1.answer(200)
    assert await next_within(env.alice, "ACK", 5) is not None
    assert await next_within(env.alice, "BYE", 5) is not None
    assert env.alice.awaiting_ack == []
    assert env.calls == 1  # the call with the second phone goes on
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
