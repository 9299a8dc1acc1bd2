"""The B2BUA end to end on the in-memory network, in virtual time.

A Gateway runs on a MemoryNetwork (gateway.testing.memory_transport) at 127.0.0.1:5060 with an
account "alice", played by a SipAgent at 127.0.0.3 that registers over the network, and a trunk
"carrier" (DIDs, prefix +1) played by another SipAgent at 127.0.0.2. Signalling never touches a
real socket; the media relay binds real ports in MEDIA_PORTS on 127.0.0.1, and no RTP is sent.
Timings are asserted in seconds of trio's virtual clock (autojump_clock). The set-up and
helpers live in b2bua_env.py.
"""

from __future__ import annotations

import functools
import itertools
import logging
from pathlib import Path

import pytest
import trio

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import CallEvent, LegInfo, OutboundMessage
from gateway.core.sdp.model import Direction
from gateway.core.sip.dialog import DialogState
from gateway.core.sip.message import Request, Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.transport.flows import Flow
from gateway.testing.sip_agent import (
    SDP,
    AutoAnswer,
    Call,
    Received,
    sdp_connection,
    sdp_direction,
)
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_DID,
    BOB_DID,
    GW,
    T1,
    TRUNK,
    B2bua,
    answered_call,
    assert_media_via_gateway,
    eventually,
    next_within,
    sent,
    start_b2bua,
)
from tests.component.calls.b2bua_scenarios import ALICE2, second_phone
from tests.component.calls.reinvite_answers import alice_answers_reinvites

# -- basic calls --------------------------------------------------------------------------------


async def test_trunk_calls_alice_by_did_and_the_trunk_hangs_up(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final()
    assert final.status == 200
    assert call.exchange is not None and 180 in call.exchange.statuses
    leg_b = await env.alice.next_call()
    ack = await env.alice.next_request("ACK")
    a, b = call.invite, leg_b.invite

    # Both legs see the relay, never the other peer's media address.
    assert_media_via_gateway(b.body)
    assert_media_via_gateway(final.body)
    assert sdp_connection(b.body) != sdp_connection(final.body)
    # Leg B is a new dialog: its own Call-ID, tags and From/To (RFC 3261 §12; B2BUA).
    assert b.call_id != a.call_id
    assert b.from_.tag != a.from_.tag
    assert str(b.from_.uri) != str(a.from_.uri)
    assert str(b.to.uri) == "sip:alice@127.0.0.1:5060"
    assert str(a.to.uri) == env.did_uri(ALICE_DID)
    assert final.to.tag is not None and final.to.tag != leg_b.local_tag
    assert ack.request.call_id == b.call_id

    bye_sent_at = trio.current_time()
    assert (await call.bye()).status == 200
    bye = await env.alice.next_request("BYE")
    assert bye.request.call_id == b.call_id
    assert bye.at - bye_sent_at < 0.1  # relayed at once (one hop each way of 10 ms)
    assert leg_b.dialog is not None and leg_b.dialog.state is DialogState.TERMINATED
    await eventually(lambda: env.calls == 0)
    assert env.call_lookups == 0


async def test_trunk_calls_alice_and_alice_hangs_up(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, leg_b = await answered_call(env)
    assert (await leg_b.bye()).status == 200
    bye = await env.trunk.next_request("BYE")
    assert bye.request.call_id == call.call_id
    assert bye.request.to.tag == call.local_tag  # our From tag is the gateway's To tag now
    assert call.dialog is not None and call.dialog.state is DialogState.TERMINATED
    await eventually(lambda: env.calls == 0)
    assert env.trunk.requests("BYE") == [bye.request]  # no second BYE towards the trunk


async def test_a_call_completes_on_a_lossy_network_because_transactions_retransmit(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        drop=0.2,
        duplicate=0.2,
        reorder=0.2,
        delay=(0.005, 0.03),
    )
    # Whatever the seed, the first INVITE is lost; 20 % of everything else is.
    env.network.set_link(TRUNK, GW, drop=1.0)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    await trio.sleep(0.2)
    env.network.clear_link(TRUNK, GW)
    final = await call.final()
    assert final.status == 200
    leg_b = await env.alice.next_call()
    assert_media_via_gateway(leg_b.invite.body)
    await env.alice.next_request("ACK")
    assert (await call.bye()).status == 200
    await env.alice.next_request("BYE")
    await eventually(lambda: env.calls == 0)
    # Let every 2xx retransmission and absorbed duplicate settle (64*T1).
    await trio.sleep(64 * T1)

    assert env.network.statistics().dropped > 0
    # Timer A repaired the loss: the same INVITE, byte for byte, went out again (copies the
    # network made are not in the capture, which records sends).
    invites = sent(env.network.capture, TRUNK, GW, b"INVITE ")
    assert len(invites) >= 2 and len({d.data for d in invites}) == 1
    # Nobody is left with an established dialog or an unacknowledged 2xx.
    assert leg_b.dialog is not None and leg_b.dialog.state is DialogState.TERMINATED
    assert env.alice.awaiting_ack == [] and env.alice.never_acked == []
    assert env.trunk.awaiting_ack == [] and env.trunk.never_acked == []
    assert env.calls == 0


async def test_a_retransmitted_2xx_from_the_callee_is_acked_again(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # RFC 3261 §13.2.2.4: the UAC core ACKs every 2xx it receives, retransmissions included; a
    # lost ACK is repaired by the callee's next 2xx retransmission (§13.3.1.4).
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    env.network.set_link(GW, ALICE, drop=1.0)  # the gateway's first ACK is lost
    answered_at = trio.current_time()
    await leg_b.answer()
    assert (await call.final()).status == 200
    await trio.sleep(0.1)
    env.network.clear_link(GW, ALICE)
    assert len(sent(env.network.capture, GW, ALICE, b"ACK ")) == 1

    ack = await next_within(env.alice, "ACK", 10)
    assert ack is not None, "the gateway did not ACK alice's retransmitted 200"
    # Alice's first 2xx retransmission is at T1 = 0.5 s; the ACK to it arrives one hop later.
    assert ack.at - answered_at < 1.0
    assert env.alice.awaiting_ack == [] and env.alice.never_acked == []
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


def _oks_to_invite(env: B2bua) -> list[float]:
    """When the gateway sent a 200 to an INVITE to the trunk (leg A): the first and repeats."""
    times = []
    for datagram in sent(env.network.capture, GW, TRUNK, b"SIP/2.0 200"):
        response = parse_message_untrusted(datagram.data)
        if response.cseq.method == "INVITE":
            times.append(datagram.time)
    return times


async def _answered_while_the_callers_acks_are_lost(env: B2bua) -> tuple[Call, float]:
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    env.network.set_link(TRUNK, GW, drop=1.0)  # the trunk's ACKs (and nothing else) are lost
    answered_at = trio.current_time()
    await leg_b.answer()
    assert (await call.final()).status == 200
    return call, answered_at


async def test_the_gateway_resends_its_200_until_the_caller_acks_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # RFC 3261 §13.3.1.4: the UAS core re-sends a 2xx at T1, 2*T1, ... (capped at T2) until
    # the ACK arrives, then stops.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, answered_at = await _answered_while_the_callers_acks_are_lost(env)
    await trio.sleep(2.0)
    env.network.clear_link(TRUNK, GW)
    await trio.sleep(20.0)
    oks = [round(at - answered_at, 1) for at in _oks_to_invite(env)]
    # Sent at ~0, again at T1 and 3*T1, then 7*T1 (3.5 s, acked: the link is back), no more.
    assert len(oks) == 4, oks
    assert [round(b - a, 1) for a, b in itertools.pairwise(oks)] == [T1, 2 * T1, 4 * T1]
    assert env.calls == 1  # the call goes on
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_an_ack_for_another_cseq_does_not_stop_the_200(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, _ = await _answered_while_the_callers_acks_are_lost(env)
    await trio.sleep(0.1)  # the trunk's own ACK is sent, and lost
    env.network.clear_link(TRUNK, GW)
    assert call.dialog is not None
    # An ACK in the dialog, but for a CSeq the gateway never answered with a 2xx.
    stray = call.dialog.create_ack(call.invite.cseq.number + 7, via=env.trunk.new_via())
    await env.trunk._send_raw(stray, GW)
    before = len(_oks_to_invite(env))
    await trio.sleep(2 * T1)
    assert len(_oks_to_invite(env)) > before, "a stray ACK stopped the 200's retransmissions"
    assert (await call.bye()).status == 200


async def test_an_ack_that_arrives_while_a_retransmission_waits_stops_them(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The ACK is taken from the endpoint's task; a retransmission whose send is waiting (a full
    # socket buffer) must not bring the stopped 2xx timer back, or the call ends at 64*T1.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, _ = await _answered_while_the_callers_acks_are_lost(env)
    endpoint = env.gateway.endpoint
    send_response = endpoint.send_response
    waiting, go = trio.Event(), trio.Event()

    async def send_when_let(response: Response, flow: Flow) -> None:
        if response.status == 200 and response.cseq.method == "INVITE" and not go.is_set():
            waiting.set()
            await go.wait()
        await send_response(response, flow)

    monkeypatch.setattr(endpoint, "send_response", send_when_let)
    await waiting.wait()  # the retransmission at T1 waits to be sent
    env.network.clear_link(TRUNK, GW)
    await env.trunk._send_raw(call._acks[call.invite.cseq.number], GW)  # its ACK again
    await trio.sleep(0.1)
    env.network.set_link(TRUNK, GW, drop=1.0)  # the ACK to the waiting 200 is lost: none needed
    go.set()
    sent = len(_oks_to_invite(env))
    await trio.sleep(64 * T1 + 5)
    assert len(_oks_to_invite(env)) == sent + 1  # the waiting one, then no more
    assert env.calls == 1, "the call was ended for want of an ACK it had"
    env.network.clear_link(TRUNK, GW)
    assert (await call.bye()).status == 200


async def test_a_200_never_acked_ends_the_call_after_64_t1(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # RFC 3261 §13.3.1.4: no ACK within 64*T1: the session is not established; BYE both legs,
    # and a WARNING naming the call and the leg (docs/operations.md, no-ack-2xx): a call that
    # ends this way had a phone believing it up, and is worth an operator's look, where the
    # transaction layer's Timer H for a failure response stays at DEBUG.
    caplog.set_level(logging.INFO, "gateway.core.calls.call")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call, answered_at = await _answered_while_the_callers_acks_are_lost(env)
    bye = await next_within(env.alice, "BYE", 64 * T1 + 5)
    assert bye is not None, "the call was not ended"
    assert 64 * T1 <= bye.at - answered_at < 64 * T1 + 1
    assert "no ACK from A leg" in (bye.request.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0, timeout=40)
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.name == "gateway.core.calls.call" and r.levelno == logging.WARNING
    ]
    assert warned == [
        f"call {call.call_id}: no ACK from the A leg for our 2xx within 32 s (64*T1, RFC 3261 "
        "§13.3.1.4): ending the call"
    ]


async def test_a_reinvites_200_never_acked_ends_the_call_with_the_same_warning(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # RFC 3261 §14.2: a UAS whose 2xx to a re-INVITE never gets its ACK SHOULD end the dialog
    # with a BYE (§13.3.1.4's 64*T1); docs/operations.md's no-ack-2xx names it as for the
    # INVITE's. The trunk's ACKs are lost from alice's 200 to its hold on.
    caplog.set_level(logging.INFO, "gateway.core.calls.call")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    answered_at: list[float] = []

    async def answer_and_lose_the_acks(received: Received) -> None:
        env.network.set_link(TRUNK, GW, drop=1.0)
        answered_at.append(trio.current_time())
        body = env.alice.answer_sdp(received.request.body)
        await env.alice.respond(received, 200, body=body)

    alice_answers_reinvites(env, answer_and_lose_the_acks)
    hold = await call.request(
        "INVITE", body=env.trunk.offer_sdp(direction="sendonly"), content_type=SDP
    )
    assert (await hold.final(timeout=5)).status == 200
    bye = await next_within(env.trunk, "BYE", 64 * T1 + 5)
    assert bye is not None, "the call was not ended"
    assert 64 * T1 <= bye.at - answered_at[0] < 64 * T1 + 1
    assert "no ACK from A leg" in (bye.request.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0, timeout=40)
    warned = [
        r.getMessage()
        for r in caplog.records
        if r.name == "gateway.core.calls.call" and r.levelno == logging.WARNING
    ]
    assert warned == [
        f"call {call.call_id}: no ACK from the A leg for our 2xx within 32 s (64*T1, RFC 3261 "
        "§13.3.1.4): ending the call"
    ]


async def test_the_200s_retransmissions_and_their_give_up_come_at_rfc_3261s_times_exactly(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # RFC 3261 §13.3.1.4: our 2xx re-sent at T1, 2*T1, 4*T1 ... each interval capped at T2 (4 s,
    # the default), until 64*T1 after it was first sent, then BYE. To the virtual clock's
    # exactness: the call's timed waits are woken by the call timers' task (calls/timers.py),
    # which must wake the call at the very deadline its own cancel scope had.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    await _answered_while_the_callers_acks_are_lost(env)
    assert await next_within(env.alice, "BYE", 64 * T1 + 5) is not None
    oks = _oks_to_invite(env)
    t2 = 4.0
    intervals = [T1, 2 * T1, 4 * T1] + [t2] * 7  # ... 3.5, 7.5, 11.5, ... 31.5 s after the first
    assert [b - a for a, b in itertools.pairwise(oks)] == pytest.approx(intervals, abs=1e-9)
    byes = [d.time for d in sent(env.network.capture, GW, TRUNK, b"BYE ")]
    assert byes[0] - oks[0] == pytest.approx(64 * T1, abs=1e-9)


# -- alice calls out over the trunk ------------------------------------------------------------


async def test_alice_calls_a_trunk_number_after_a_proxy_challenge(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    challenge = await call.final()
    assert challenge.status == 407
    assert challenge.headers.get_all("Proxy-Authenticate")
    assert env.trunk.requests("INVITE") == []  # nothing goes out before authentication

    await call.authenticate()
    assert call.invite.headers.get("Proxy-Authorization") is not None
    final = await call.final()
    assert final.status == 200, final.reason
    leg_b = await env.trunk.next_call()
    assert str(leg_b.invite.uri) == "sip:+15551234@127.0.0.2:5060;transport=udp"
    # Credentials for our realm never travel on to the trunk.
    assert leg_b.invite.headers.get("Proxy-Authorization") is None
    # alice is presented by her number on that trunk (its dids), as carriers want.
    assert str(leg_b.invite.from_.uri) == f"sip:{ALICE_DID}@127.0.0.1:5060"
    assert_media_via_gateway(leg_b.invite.body)
    assert_media_via_gateway(final.body)
    # The transaction ACKed the 407 (RFC 3261 §17.1.1.3).
    assert sent(env.network.capture, ALICE, GW, b"ACK ")
    # Each INVITE transaction's responses in order: 100 Trying, then the final one; nothing
    # provisional after a final response (sipp fails the call on a 100 after the 407).
    statuses: dict[str | None, list[int]] = {}
    for datagram in sent(env.network.capture, GW, ALICE, b"SIP/2.0 "):
        response = parse_message_untrusted(datagram.data)
        assert isinstance(response, Response)
        if response.cseq.method == "INVITE":
            statuses.setdefault(response.top_via.branch, []).append(response.status)
    assert [s for s in statuses.values() if 407 in s] == [[100, 407]]
    for sequence in statuses.values():
        final_at = next(i for i, status in enumerate(sequence) if status >= 200)
        assert sequence[0] == 100 and min(sequence[final_at:]) >= 200, sequence
    assert (await call.bye()).status == 200
    await env.trunk.next_request("BYE")
    await eventually(lambda: env.calls == 0)


# -- timeouts -----------------------------------------------------------------------------------


async def test_timer_b_an_unreachable_registered_phone_gives_the_caller_480_after_64_t1(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    # Alice's phone is gone: everything to and from it is lost.
    env.network.set_link(GW, ALICE, drop=1.0)
    env.network.set_link(ALICE, GW, drop=1.0)
    started = trio.current_time()
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final(timeout=120)
    elapsed = trio.current_time() - started
    # Timer B ended the leg to alice with 408; to the caller a registered device that does not
    # answer at all is 480 (issue #3).
    assert final.status == 480
    assert "unreachable" in final.reason
    assert call.exchange is not None and call.exchange.statuses == [100, 480]
    # Timer B = 64*T1 = 32 s after the gateway's INVITE, plus the hops (10 ms each).
    assert 64 * T1 <= elapsed < 64 * T1 + 0.5
    # Timer A retransmitted the INVITE at 0.5, 1.5, 3.5, 7.5, 15.5 and 31.5 s (RFC 3261 §17.1.1.2).
    invites = sent(env.network.capture, GW, ALICE, b"INVITE ")
    offsets = [round(d.time - invites[0].time, 3) for d in invites]
    assert offsets == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    await eventually(lambda: env.calls == 0)


async def test_timer_b_a_dead_trunk_gives_the_caller_408_after_64_t1(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    env.network.set_link(GW, TRUNK, drop=1.0)
    env.network.set_link(TRUNK, GW, drop=1.0)
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await call.final()).status == 407
    started = trio.current_time()
    await call.authenticate()
    final = await call.final(timeout=120)
    elapsed = trio.current_time() - started
    assert final.status == 408
    assert 64 * T1 <= elapsed < 64 * T1 + 0.5
    invites = sent(env.network.capture, GW, TRUNK, b"INVITE ")
    offsets = [round(d.time - invites[0].time, 3) for d in invites]
    assert offsets == [0.0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    await eventually(lambda: env.calls == 0)


async def test_timer_f_bye_to_a_dead_leg_still_ends_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    env.network.set_link(GW, ALICE, drop=1.0)
    env.network.set_link(ALICE, GW, drop=1.0)
    started = trio.current_time()
    assert (await call.bye(timeout=5)).status == 200
    assert trio.current_time() - started < 0.1  # answered at once, not after Timer F
    await eventually(lambda: env.calls == 0)

    await trio.sleep(64 * T1 + 8)
    byes = sent(env.network.capture, GW, ALICE, b"BYE ")
    offsets = [round(d.time - byes[0].time, 3) for d in byes]
    # Timer E: 0.5, 1, 2, then every T2 = 4 s; Timer F ends it at 32 s (RFC 3261 §17.1.2.2).
    assert offsets == [0.0, 0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    # Every transaction is gone, the timed-out BYE's included, and the timeout of a BYE whose
    # call has ended is not an internal error.
    assert len(env.gateway.endpoint.transactions) == 0
    assert env.gateway.endpoint.statistics.internal_errors == 0


# -- CANCEL -------------------------------------------------------------------------------------


async def test_cancel_while_ringing(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(status=None))
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert call.exchange is not None
    await call.exchange.wait_for(lambda r: r.status == 180)
    leg_b = await env.alice.next_call()

    cancel = await call.cancel()
    assert (await cancel.final()).status == 200
    assert (await call.final()).status == 487
    cancel_b = await env.alice.next_request("CANCEL")
    assert cancel_b.request.call_id == leg_b.call_id
    assert leg_b.answered == 487
    await eventually(lambda: env.calls == 0)
    # Both 487s were ACKed by the INVITE client transactions (RFC 3261 §17.1.1.3).
    assert sent(env.network.capture, GW, ALICE, b"ACK ")
    assert sent(env.network.capture, TRUNK, GW, b"ACK ")
    assert env.alice.requests("BYE") == []


@pytest.mark.parametrize(
    ("answer_after", "caller_gets"),
    [(-0.005, 200), (0.0, 487), (0.01, 487)],
    ids=[
        "200-reaches-the-gateway-first",
        "200-and-CANCEL-reach-the-gateway-together",
        "200-and-CANCEL-cross-between-gateway-and-callee",
    ],
)
async def test_cancel_and_200_race_leaves_no_dialog_behind(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    answer_after: float,
    caller_gets: int,
) -> None:
    # Alice answers ``answer_after`` seconds after the trunk sends its CANCEL (10 ms per hop:
    # at +0.01 s the gateway forwards the CANCEL to alice while her 200 is on its way).
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    assert call.exchange is not None
    await call.exchange.wait_for(lambda r: r.status == 180)

    if answer_after < 0:
        await leg_b.answer(200)
        await trio.sleep(-answer_after)
        cancel = await call.cancel()
    else:
        cancel_sent = trio.current_time()
        cancel = await call.cancel()
        await trio.sleep_until(cancel_sent + answer_after)
        await leg_b.answer(200)

    assert (await cancel.final()).status == 200
    final = await call.final()
    assert final.status == caller_gets
    if final.status == 200:
        # The 200 won: the caller got the call and hangs it up itself (RFC 3261 §9.1).
        assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    await trio.sleep(64 * T1)

    # Alice's 200 was ACKed, and her dialog was ended by a BYE (or by her own, never both
    # missing): no leg keeps an established dialog.
    assert env.alice.awaiting_ack == [] and env.alice.never_acked == []
    assert env.alice.requests("ACK")
    assert len(env.alice.requests("BYE")) == 1
    assert leg_b.dialog is not None and leg_b.dialog.state is DialogState.TERMINATED
    assert call.dialog is None or call.dialog.state is DialogState.TERMINATED
    assert env.trunk.awaiting_ack == [] and env.trunk.never_acked == []


# -- failures -----------------------------------------------------------------------------------


async def test_busy_callee_gives_the_caller_486(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(status=486))
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final()
    assert final.status == 486
    assert sent(env.network.capture, GW, ALICE, b"ACK ")  # the gateway ACKed alice's 486
    await eventually(lambda: env.calls == 0)


async def test_unknown_did_is_404_with_a_reason(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri("+4930000000"))
    final = await call.final()
    assert final.status == 404
    assert "no account or DID for +4930000000" in final.reason
    assert env.alice.requests("INVITE") == []


async def test_account_without_a_binding_is_480(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(BOB_DID))
    final = await call.final()
    assert final.status == 480
    assert "bob has no registered device" in final.reason


# -- in the call --------------------------------------------------------------------------------


async def test_hold_reinvite_from_alice_reaches_the_trunk_as_sendonly(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, leg_b = await answered_call(env)
    answer = await leg_b.reinvite(env.alice.offer_sdp(direction="sendonly"))
    assert answer.status == 200
    assert sdp_direction(answer.body) is Direction.RECVONLY
    assert_media_via_gateway(answer.body)
    reinvite = await env.trunk.next_request("INVITE")
    assert reinvite.request.call_id == call.call_id
    assert sdp_direction(reinvite.request.body) is Direction.SENDONLY
    assert_media_via_gateway(reinvite.request.body)
    await env.trunk.next_request("ACK")  # the gateway ACKed the trunk's 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_retransmitted_2xx_to_a_reinvite_is_acked_again(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # As for the first INVITE (RFC 3261 §13.2.2.4, §14.1): every 2xx of a re-INVITE is ACKed.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, leg_b = await answered_call(env)
    hold = await leg_b.request(
        "INVITE", body=env.alice.offer_sdp(direction="sendonly"), content_type=SDP
    )
    reinvite = await env.trunk.next_request("INVITE")  # the trunk has answered 200 already
    env.network.set_link(GW, TRUNK, drop=1.0)  # the gateway's ACK of that 200 is lost
    assert (await hold.final()).status == 200
    await trio.sleep(0.1)
    env.network.clear_link(GW, TRUNK)
    assert [r for r in env.trunk.received if r.at > reinvite.at] == []

    ack = await next_within(env.trunk, "ACK", 10)
    assert ack is not None, "the gateway did not ACK the trunk's retransmitted 200"
    assert ack.request.cseq.number == reinvite.request.cseq.number
    assert ack.at - reinvite.at < 1.0
    assert env.trunk.awaiting_ack == [] and env.trunk.never_acked == []
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


class FailingObserver:
    """A plugin whose gateway_call_event hook always raises."""

    def __init__(self) -> None:
        self.kinds: list[str] = []

    @hookimpl
    def gateway_call_event(self, event: CallEvent) -> None:
        self.kinds.append(event.kind)
        raise RuntimeError("observer bug")


async def test_a_failing_call_event_observer_does_not_break_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    observer = FailingObserver()
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, plugins=[("failing-observer", observer)]
    )
    with caplog.at_level(logging.ERROR, logger="gateway.core.calls.manager"):
        call, _ = await answered_call(env)
        assert (await call.bye()).status == 200
        await eventually(lambda: env.calls == 0)
    assert observer.kinds == ["started", "ringing", "answered", "ended"]
    # Named as a raising decision hook is, and once a minute per plugin: an observer failing
    # on every event does not flood the log (docs/plugin_hooks.md).
    failures = [r for r in caplog.records if "gateway_call_event" in r.getMessage()]
    assert [r.getMessage() for r in failures] == [
        f"plugin 'failing-observer': gateway_call_event observer raised RuntimeError on started "
        f"(call {failures[0].getMessage().split('(call ')[1].split(')')[0]}); the call goes on"
    ]
    assert failures[0].exc_text is not None and "RuntimeError" in failures[0].exc_text
    assert "observer bug" not in failures[0].exc_text


class RecordingObserver:
    """A plugin whose gateway_call_event hook notes every event (a CDR exporter)."""

    def __init__(self) -> None:
        self.kinds: list[str] = []

    @hookimpl
    def gateway_call_event(self, event: CallEvent) -> None:
        self.kinds.append(event.kind)


async def test_every_call_event_observer_gets_every_event_whatever_another_raises(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Observers are independent (a CDR exporter, a recording tap): one that raises must not
    # keep the others from that event. pluggy's own call stops at the first that raises, and
    # asks the newest-enabled first, so the failing observers here come before the recorders.
    first, last = RecordingObserver(), RecordingObserver()
    failing, also_failing = FailingObserver(), FailingObserver()
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[
            ("cdr", first),
            ("failing-observer", failing),
            ("tap", last),
            ("also-failing", also_failing),
        ],
    )
    with caplog.at_level(logging.ERROR, logger="gateway.core.calls.manager"):
        call, _ = await answered_call(env)
        assert (await call.bye()).status == 200
        await eventually(lambda: env.calls == 0)
    every = ["started", "ringing", "answered", "ended"]
    assert first.kinds == last.kinds == failing.kinds == also_failing.kinds == every
    # Each raising observer named (its own once-a-minute line), and nobody else blamed.
    named = sorted(
        r.getMessage().split(":")[0]
        for r in caplog.records
        if "gateway_call_event" in r.getMessage()
    )
    assert named == ["plugin 'also-failing'", "plugin 'failing-observer'"]


def _passing_on(function):  # type: ignore[no-untyped-def]
    """A decorator as plugins write them (timing, tracing): it passes on what pluggy gives,
    positionally (pluggy reads the wrapped function's arguments through ``__wrapped__``)."""

    @functools.wraps(function)
    def passing_on(*args):  # type: ignore[no-untyped-def]
        return function(*args)

    return passing_on


class DefaultedObserver:
    """An observer whose ``event`` has a default: pluggy passes it as a keyword."""

    def __init__(self) -> None:
        self.kinds: list[str] = []

    @hookimpl
    def gateway_call_event(self, event: CallEvent | None = None) -> str:
        assert event is not None
        self.kinds.append(event.kind)
        return "ignored"  # a value, as pluggy collects (and the core ignores)


class DecoratedObserver:
    """An observer behind a decorator that passes its arguments on positionally."""

    def __init__(self) -> None:
        self.kinds: list[str] = []

    @hookimpl
    @_passing_on
    def gateway_call_event(self, event: CallEvent) -> None:
        self.kinds.append(event.kind)


async def test_call_event_observers_get_the_event_as_pluggy_passes_it(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The core calls each observer on its own, with the event as pluggy's call gives it: by
    # position to a required argument (a decorated observer taking *args), by keyword to one
    # with a default. Deployed observers written against pluggy keep getting every event.
    defaulted, decorated = DefaultedObserver(), DecoratedObserver()
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("defaulted", defaulted), ("decorated", decorated)],
    )
    with caplog.at_level(logging.ERROR, logger="gateway.core.calls.manager"):
        call, _ = await answered_call(env)
        assert (await call.bye()).status == 200
        await eventually(lambda: env.calls == 0)
    every = ["started", "ringing", "answered", "ended"]
    assert defaulted.kinds == decorated.kinds == every
    assert [r for r in caplog.records if "gateway_call_event" in r.getMessage()] == []


class OutboundStamp:
    """A plugin that marks every message the gateway sends and notes each leg it is asked about.

    The core skips these hooks when no plugin implements them (Plugins.implemented); this is the
    path where one does."""

    def __init__(self) -> None:
        self.legs: list[tuple[str, str]] = []
        self.sent_to: dict[str, tuple[str, str] | None] = {}

    @hookimpl
    def gateway_outbound_message(self, outbound: OutboundMessage) -> None:
        message = outbound.message
        assert isinstance(message, Request | Response)
        if isinstance(message, Request):
            what = message.method
        else:
            what = f"{message.status} {message.cseq.method}"
        leg = outbound.leg
        self.sent_to.setdefault(what, None if leg is None else (leg.side, leg.kind))
        outbound.message = message.with_headers(message.headers.add("X-Stamped", "yes"))

    @hookimpl
    def gateway_media_security_policy(self, leg: LegInfo) -> None:
        self.legs.append((leg.side, leg.kind))


async def test_outbound_message_and_policy_hooks_run_when_a_plugin_implements_them(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    stamp = OutboundStamp()
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("stamp", stamp)])
    call, leg_b = await answered_call(env)
    assert leg_b.invite.headers.get("X-Stamped") == "yes"  # a request the gateway sent
    assert (await call.final()).headers.get("X-Stamped") == "yes"  # and a response
    assert sorted(stamp.legs) == [("a", "trunk"), ("b", "account")]
    # The hook is told which leg each message goes to: our INVITE to alice's phone, our 180
    # and 200 to the calling trunk; a 100 Trying, before our tag, belongs to no leg yet.
    assert stamp.sent_to["INVITE"] == ("b", "account")
    assert stamp.sent_to["180 INVITE"] == ("a", "trunk")
    assert stamp.sent_to["200 INVITE"] == ("a", "trunk")
    assert stamp.sent_to["100 INVITE"] is None
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


class OutboundLegs:
    """Notes the leg each request the gateway sends goes to, with the address it goes to."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, object, tuple[str, str, str | None] | None]] = []

    @hookimpl
    def gateway_outbound_message(self, outbound: OutboundMessage) -> None:
        message, leg, flow = outbound.message, outbound.leg, outbound.flow
        if isinstance(message, Request) and flow is not None:
            where = None if leg is None else (leg.side, leg.kind, leg.name)
            self.requests.append((message.method, flow.remote, where))


async def test_outbound_message_hooks_are_told_the_leg_of_each_forked_phone(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Both of alice's phones are rung, each on a B leg of its own: each INVITE, and the CANCEL
    # of the phone that did not answer, is alice's B leg (a device plugin finds the phone's
    # profile there); the caller's BYE is answered, and ours to the phone is its B leg too.
    legs = OutboundLegs()
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=None, plugins=[("legs", legs)]
    )
    phone2 = await second_phone(env, nursery, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg1 = await env.alice.next_call(timeout=1)
    leg2 = await phone2.next_call(timeout=1)
    await leg2.answer()
    assert (await call.final()).status == 200
    await env.alice.next_request("CANCEL", timeout=1)
    assert (await call.bye()).status == 200
    await phone2.next_request("BYE", timeout=1)
    await eventually(lambda: env.calls == 0)
    alice_b = ("b", "account", "alice")
    assert ("INVITE", ALICE, alice_b) in legs.requests
    assert ("INVITE", ALICE2, alice_b) in legs.requests
    assert ("CANCEL", ALICE, alice_b) in legs.requests
    assert ("BYE", ALICE2, alice_b) in legs.requests
    assert leg1.answered == 487


class BrokenOn180:
    """A plugin whose outbound hook has a bug that shows on 180 responses."""

    @hookimpl
    def gateway_outbound_message(self, outbound: OutboundMessage) -> None:
        if isinstance(outbound.message, Response) and outbound.message.status == 180:
            raise IndexError("the plugin's own words")


async def test_an_outbound_hook_that_raises_is_named_and_its_message_not_sent(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("broken", BrokenOn180())])
    for _ in range(2):
        call, _ = await answered_call(env)
        assert call.exchange is not None
        assert [r.status for r in call.exchange.responses if r.status == 180] == []  # not sent
        assert (await call.bye()).status == 200
        await eventually(lambda: env.calls == 0)
    # One line for both 180s (at most one a minute per plugin: a hook raising on every
    # message must not flood the log), naming the plugin, the hook and the message, and that
    # it was not sent; the plugin's exception text stays withheld (docs/architecture.md
    # "Logged exceptions"). Each is counted as an internal error.
    (record,) = [r for r in caplog.records if r.exc_text and "IndexError" in r.exc_text]
    assert record.getMessage().startswith(
        "plugin 'broken': gateway_outbound_message raised IndexError on 180 to INVITE for "
    )
    assert record.getMessage().endswith("; not sent")
    assert "the plugin's own words" not in record.exc_text
    assert env.gateway.endpoint.statistics.internal_errors == 2


class NoneFor180:
    """A plugin whose outbound hook replaces every 180 with None (not a message)."""

    @hookimpl
    def gateway_outbound_message(self, outbound: OutboundMessage) -> None:
        if isinstance(outbound.message, Response) and outbound.message.status == 180:
            outbound.message = None


async def test_an_outbound_hook_replacing_a_message_with_none_is_a_counted_error(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # None is no message (docs/plugin_hooks.md: replace it with a Request or Response): the
    # 180 is not sent, as ever, and that is an internal error in the log and the counter, not a
    # message dropped without a word (None is not how the endpoint says a hook raised).
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("nones", NoneFor180())])
    with caplog.at_level(logging.ERROR):
        call, _ = await answered_call(env)
        assert call.exchange is not None
        assert [r.status for r in call.exchange.responses if r.status == 180] == []
        assert (await call.bye()).status == 200
        await eventually(lambda: env.calls == 0)
    assert env.gateway.endpoint.statistics.internal_errors == 1
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_text is not None and "non-message" in record.exc_text


class BrokenOnFirstAck:
    """A plugin whose outbound hook has a bug that shows on the first ACK the gateway sends."""

    def __init__(self) -> None:
        self.acks = 0

    @hookimpl
    def gateway_outbound_message(self, outbound: OutboundMessage) -> None:
        if isinstance(outbound.message, Request) and outbound.message.method == "ACK":
            self.acks += 1
            if self.acks == 1:
                raise IndexError("the plugin's own words")


async def test_a_calls_own_ack_stopped_by_a_raising_outbound_hook_is_one_line_counted(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The call sends its ACK to the callee's 2xx itself (RFC 3261 §13.2.2.4), not through a
    # transaction: a hook raising on it is logged once (naming the plugin) and counted as an
    # internal error, and the call goes on as after an ACK lost on the way: the callee re-sends
    # its 2xx (§13.3.1.4) and the call ACKs that again. Before, the failure ended the call
    # (a second ERROR line, "call ... failed") and was not counted.
    broken = BrokenOnFirstAck()
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, plugins=[("broken", broken)])
    with caplog.at_level(logging.WARNING):
        call = await env.trunk.invite(env.did_uri(ALICE_DID))
        assert (await call.final()).status == 200
        leg_b = await env.alice.next_call()
        ack = await next_within(env.alice, "ACK", 10)
        assert ack is not None, "the gateway did not ACK alice's re-sent 200"
        assert broken.acks >= 2
        assert (await call.bye()).status == 200
        bye = await env.alice.next_request("BYE")
        assert bye.request.call_id == leg_b.invite.call_id
        await eventually(lambda: env.calls == 0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage().split(" for ")[0] for r in errors] == [
        "plugin 'broken': gateway_outbound_message raised IndexError on ACK"
    ]
    assert errors[0].getMessage().endswith("; not sent")
    assert env.gateway.endpoint.statistics.internal_errors == 1


async def test_a_2xx_to_a_reinvite_that_comes_after_the_call_ended_is_still_acked(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # RFC 3261 §13.2.2.4: the UAC core ACKs every 2xx. Alice's hold re-INVITE is relayed to the
    # trunk, alice hangs up before the trunk answers it, and the trunk's 200 comes after the call
    # has ended: nobody holds that dialog any more, and the 200 is ACKed all the same instead of
    # being re-sent for 32 s.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, leg_b = await answered_call(env)
    held: list[Received] = []

    async def trunk_holds_reinvites(received: Received) -> bool:
        if received.request.method != "INVITE":
            return False
        held.append(received)
        return True

    env.trunk.in_dialog = trunk_holds_reinvites
    await leg_b.request("INVITE", body=env.alice.offer_sdp(direction="sendonly"), content_type=SDP)
    await eventually(lambda: len(held) == 1)
    assert (await leg_b.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    reinvite = held[0]
    await env.trunk.respond(reinvite, 200, body=env.trunk.answer_sdp(reinvite.request.body))
    ack = await next_within(env.trunk, "ACK", 5)
    assert ack is not None, "the 200 that came after the call was never ACKed"
    assert ack.request.cseq.number == reinvite.request.cseq.number
    assert ack.request.call_id == call.call_id
    await eventually(lambda: env.trunk.awaiting_ack == [])
