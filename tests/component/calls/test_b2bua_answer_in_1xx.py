"""A callee whose SDP answer came in a reliable 1xx (RFC 3262 §5) and whose 2xx has no SDP.

Carriers commonly answer our offer in a reliable 183 (``Require: 100rel``), then send the 200 to
the INVITE without SDP: the offer/answer exchange was complete with the 183 (RFC 3261 §13.2.1
forbids a new answer in the 2xx). Before, such a call ended with "2xx without SDP answer" (BYE
to the callee, 488 to the caller). Now the 2xx confirms the answer taken from the 183, and the
caller's 200 carries the SDP our 183 gave it, byte for byte: a caller that did not use 100rel
has no answer until then, one that PRACKed our 183 gets the same answer again. An answer in an
*unreliable* 183 is only a preview: a 2xx without SDP after it still fails.

Also here, two early-dialog gaps: a later unreliable 1xx of the same callee moves the early
dialog's remote target (RFC 3261 §12.1.2), and a transferee's own re-INVITE gets 491 only while
a transfer's re-INVITE to it is pending (§14.2), not for the whole time the target has answered.

Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 calls alice's DID; alice answers by hand.
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.sip.headers import NameAddr
from gateway.core.sip.uri import SipUri
from gateway.testing.sip_agent import Call, Received, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_DID,
    B2bua,
    answered_call,
    assert_media_via_gateway,
    eventually,
    start_b2bua,
)
from tests.component.calls.b2bua_scenarios import ALICE2, relay, second_phone
from tests.component.calls.transfer_calls import (
    BOB_URI,
    bob_phone,
    eventually_notify,
    refer,
)

RELIABLE = [("Require", "100rel")]
REQUIRE_100REL = [("Require", "100rel"), ("Supported", "100rel")]
ALICE_SDP = simple_sdp(ALICE[0], 30000, version=1)


async def answer_in_183(env: B2bua, caller_extra: list[tuple[str, str]]) -> tuple[Call, Call]:
    """The trunk calls alice, who answers the offer in a reliable 183, PRACKed by us."""
    call = await env.trunk.invite(env.did_uri(ALICE_DID), extra=caller_extra)
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 183, body=ALICE_SDP, extra=[*RELIABLE, ("RSeq", "1")])
    assert (await env.alice.next_request("PRACK")).request.headers.get("RAck") == "1 1 INVITE"
    return call, leg_b


async def talk_and_hang_up(env: B2bua, call: Call) -> None:
    await env.alice.next_request("ACK")
    await trio.sleep(5)
    assert env.alice.requests("BYE") == []  # not ended "without SDP answer"
    assert (await call.bye()).status == 200
    await env.alice.next_request("BYE")
    await eventually(lambda: env.calls == 0)


async def test_a_bare_2xx_after_an_answer_in_a_reliable_183_gives_the_caller_that_answer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, leg_b = await answer_in_183(env, [])
    assert call.exchange is not None
    early = await call.exchange.wait_for(lambda r: r.status == 183)
    # The caller did not ask for 100rel: our 183 is unreliable, so it has no answer yet.
    assert early.headers.get("Require") is None
    assert_media_via_gateway(early.body)
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 200)  # no SDP: the 183's answer stands
    ok = await call.final()
    assert ok.status == 200
    assert ok.body == early.body  # the answer, in the 2xx as RFC 3261 §13.2.1 requires
    await talk_and_hang_up(env, call)


async def test_a_caller_that_pracked_our_183_gets_the_same_answer_in_the_200(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, leg_b = await answer_in_183(env, REQUIRE_100REL)
    assert call.exchange is not None
    early = await call.exchange.wait_for(lambda r: r.status == 183)
    assert early.headers.get("Require") == "100rel"
    await eventually(lambda: len(call.pracks) == 1)
    assert (await call.pracks[0].final()).status == 200
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 200)
    ok = await call.final()
    assert ok.status == 200
    assert ok.body == early.body  # an identical copy: no new offer or answer
    await talk_and_hang_up(env, call)


async def test_a_bare_2xx_after_an_answer_in_an_unreliable_183_still_fails(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # An unreliable 1xx's SDP is only a preview of the answer (RFC 3261 §13.2.1): the 2xx
    # must carry the answer itself.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 183, body=ALICE_SDP)
    await env.alice.respond(leg_b.incoming, 200)
    assert (await call.final()).status == 488
    await env.alice.next_request("BYE")
    await eventually(lambda: env.calls == 0)


async def test_a_bare_2xx_takes_the_media_back_from_a_later_forks_early_answer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Both of alice's phones answer in a reliable 183; the relay follows the later one (early
    # media: the latest answer wins). The first phone's bare 200 confirms its own answer: the
    # media goes to it, not to the phone whose early media was playing.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    phone2 = await second_phone(env, nursery, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg1 = await env.alice.next_call(timeout=1)
    leg2 = await phone2.next_call(timeout=1)
    assert leg1.incoming is not None and leg2.incoming is not None
    phone2_sdp = simple_sdp(ALICE2[0], 30010, version=1)
    await env.alice.respond(leg1.incoming, 183, body=ALICE_SDP, extra=[*RELIABLE, ("RSeq", "1")])
    await env.alice.next_request("PRACK")
    await phone2.respond(leg2.incoming, 183, body=phone2_sdp, extra=[*RELIABLE, ("RSeq", "1")])
    await phone2.next_request("PRACK")
    [stream] = relay(env).streams
    await eventually(lambda: stream.b.rtp_destination == (ALICE2[0], 30010))
    await env.alice.respond(leg1.incoming, 200)
    ok = await call.final()
    assert ok.status == 200
    assert_media_via_gateway(ok.body)
    assert stream.b.rtp_destination == (ALICE[0], 30000)
    assert (await phone2.next_request("CANCEL")).request.call_id == leg2.call_id
    await talk_and_hang_up(env, call)


async def test_a_later_unreliable_1xx_moves_the_early_dialogs_remote_target(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, leg_b = await answer_in_183(env, [])
    assert leg_b.incoming is not None
    moved = NameAddr(SipUri("sip", ALICE[0], user="moved", port=ALICE[1]))
    # RFC 3261 §12.1.2, §13.2.2.4: this 180's Contact is the early dialog's target now ...
    await env.alice.respond(leg_b.incoming, 180, contact=moved)
    # ... so the PRACK of the next reliable 1xx (which names no Contact) goes there.
    await env.alice.respond(leg_b.incoming, 180, extra=[*RELIABLE, ("RSeq", "2")], contact=False)
    prack = (await env.alice.next_request("PRACK")).request
    assert prack.headers.get("RAck") == "2 1 INVITE"
    assert prack.uri == moved.uri
    await call.cancel()
    assert (await call.final()).status == 487


async def test_a_transferees_reinvite_gets_491_only_while_ours_to_it_is_pending(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The trunk (the transferee) holds our re-INVITE with bob's offer: its own crosses it and
    # gets 491 (RFC 3261 §14.2). It then refuses ours with 491 and re-INVITEs again while we
    # wait to retry (§14.1): that one is not crossing anything of ours and goes through
    # (relayed to alice, still the transferor); ours follows and the transfer completes.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    call, alice_leg = await answered_call(env)
    held: list[Received] = []
    own: list[int] = []

    async def own_reinvite() -> None:
        own.append((await call.reinvite(env.trunk.offer_sdp())).status)

    async def cross_ours(received: Received) -> bool:
        if received.request.method != "INVITE" or held:
            return False
        held.append(received)
        nursery.start_soon(own_reinvite)
        return True

    env.trunk.in_dialog = cross_ours
    assert await refer(alice_leg, BOB_URI) == 202
    await eventually(lambda: len(own) == 1)
    assert own == [491]  # ours to it is pending

    env.trunk.in_dialog = None
    await env.trunk.respond(held[0], 491)
    await own_reinvite()
    assert own == [491, 200]  # before: 491 again, for as long as the target had answered
    relayed = [
        r
        for r in env.alice.requests("INVITE")
        if r.call_id == alice_leg.call_id and r.to.tag is not None
    ]
    assert len(relayed) == 1  # the trunk's re-INVITE, not ours
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    ack = await bob.next_request("ACK")
    assert_media_via_gateway(ack.request.body)
    assert (await alice_leg.bye()).status == 200
    assert (await bob.calls[0].bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_transferees_reinvite_gets_491_while_the_transferor_has_left_the_target_answered(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # alice hung up right after the 202 (a "blind" transfer): relayed to her ended dialog, the
    # trunk's re-INVITE would get 481 and end the call. bob, who answered, takes her place in
    # a moment: until then 491, which the trunk tries again later.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    call, alice_leg = await answered_call(env)
    own: list[int] = []

    async def own_reinvite() -> None:
        own.append((await call.reinvite(env.trunk.offer_sdp())).status)

    async def glare_once(received: Received) -> bool:
        if received.request.method != "INVITE" or own:
            return False
        await env.trunk.respond(received, 491)
        nursery.start_soon(own_reinvite)
        return True

    env.trunk.in_dialog = glare_once
    assert await refer(alice_leg, BOB_URI) == 202
    assert (await alice_leg.bye()).status == 200
    await eventually(lambda: len(own) == 1)
    assert own == [491]
    ack = await bob.next_request("ACK")  # the transfer completed with ours sent again
    assert_media_via_gateway(ack.request.body)
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
