"""2xx responses the call does not take: another fork's answer after a callee's 2xx (a
forking proxy downstream, two phones answering: RFC 3261 §13.2.2.4, §16.7 "multiple 2xx"),
each dialog ACKed in its own right and BYEd once; the 2xx of a late-offer INVITE nobody takes
(the call failed, or gave the INVITE up, §9.1), ACKed with an answer refusing its offer (RFC
3264 §4: the ACK must carry the answer) and BYEd; and a re-INVITE without SDP whose offer
finds no media ports, answered 503 as everywhere else. Signalling on the in-memory network,
virtual time (T1 = 0.5 s)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.media.errors import PortsExhausted
from gateway.core.media.session import MediaSession
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.message import Request, make_response
from gateway.core.sip.serializer import serialize_message
from gateway.testing.sip_agent import SDP
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    answered_call,
    eventually,
    start_b2bua,
)
from tests.component.calls.call_guard_logs import ended_lines
from tests.component.calls.cancel_give_up import GIVE_UP
from tests.component.calls.fork_answers import (
    FORK_CONTACT,
    FORK_ROUTE,
    FORK_TAG,
    assert_in_the_forks_dialog,
    fork_answers,
    last_2xx,
    to_phone,
)
from tests.component.calls.offer_error_checks import warning_of


async def test_no_media_ports_for_the_offer_in_a_late_reinvites_2xx_is_503(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The trunk's re-INVITE without SDP goes to alice without SDP; her 2xx offers, and the
    relay has no ports for it: the node is full, not the offer bad. 503 with Warning "no free
    media ports" and no Retry-After (RFC 3261 §21.5.4; docs/configuration.md), as a caller's
    INVITE, a re-INVITE with SDP or a picker gets, where it used to be 488 "bad SDP offer".
    Alice holds a session the trunk cannot get, so the call ends, saying so."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    real = MediaSession.offer_from
    armed = [True]

    def exhausted(self: MediaSession, *args: Any, **kwargs: Any) -> Any:
        if armed:
            armed.clear()
            raise PortsExhausted("no free media port pair")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MediaSession, "offer_from", exhausted)
    refused = await call.reinvite(b"")
    assert (refused.status, refused.reason) == (503, "Service Unavailable")
    assert warning_of(refused) == '399 voipgw "no free media ports"'
    assert refused.headers.get("Retry-After") is None
    await eventually(lambda: env.calls == 0)
    (line,) = [line for line in ended_lines(caplog) if call.call_id in line]
    assert line.endswith("ended: no free media ports"), line


# -- another fork's 2xx: its own ACK, one BYE -------------------------------------------------


async def test_another_forks_2xx_after_the_answer_gets_its_own_ack_and_one_bye(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Alice answers; a forking proxy downstream passes on the 2xx of a second target too.
    The call keeps alice; the second dialog gets its own ACK and a BYE (RFC 3261 §13.2.2.4,
    §15), where the gateway used to send it the ACK of alice's dialog again, leaving that
    target in a call with nobody. Each copy of its 2xx is ACKed again in its dialog, never
    BYEd again; alice's dialog gets nothing of it."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.answer()
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    alice_acks = len(to_phone(env, env.alice, "ACK", leg_b.local_tag))

    await fork_answers(env, env.alice, leg_b)
    (ack,) = to_phone(env, env.alice, "ACK", FORK_TAG)
    assert_in_the_forks_dialog(ack, leg_b)
    assert ack.cseq.number == leg_b.invite.cseq.number and ack.body == b""
    (bye,) = to_phone(env, env.alice, "BYE", FORK_TAG)
    assert_in_the_forks_dialog(bye, leg_b)

    await fork_answers(env, env.alice, leg_b)  # a copy: our ACK was lost
    assert len(to_phone(env, env.alice, "ACK", FORK_TAG)) == 2
    assert len({b.top_via.branch for b in to_phone(env, env.alice, "BYE", FORK_TAG)}) == 1
    assert len(to_phone(env, env.alice, "ACK", leg_b.local_tag)) == alice_acks
    assert to_phone(env, env.alice, "BYE", leg_b.local_tag) == []
    assert env.calls == 1  # the call with alice goes on
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


def assert_refusing_answer(ack: Request, offer: bytes) -> None:
    """``ack`` carries an answer rejecting every stream of ``offer`` (RFC 3264 §6: port 0):
    the 2xx it ACKs offered, and the ACK must answer (RFC 3261 §13.2.2.4, RFC 3264 §4)."""
    assert ack.content_type == SDP
    answer, offered = parse_sdp_untrusted(ack.body), parse_sdp_untrusted(offer)
    assert [m.media for m in answer.media] == [m.media for m in offered.media]
    assert {m.port for m in answer.media} == {0}


async def test_another_forks_2xx_in_a_late_offer_call_is_acked_with_a_refusing_answer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """As above, for an INVITE without SDP: the second fork's 2xx offers, so its ACK
    answers, rejecting every stream, before the BYE; alice's call goes on."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    assert leg_b.invite.body == b""
    offer = env.alice.offer_sdp()
    await leg_b.answer(sdp=offer)
    assert (await call.final()).status == 200  # the trunk's ACK answers

    await fork_answers(env, env.alice, leg_b)
    (ack,) = to_phone(env, env.alice, "ACK", FORK_TAG)
    assert_in_the_forks_dialog(ack, leg_b)
    assert_refusing_answer(ack, offer)
    (bye,) = to_phone(env, env.alice, "BYE", FORK_TAG)
    assert_in_the_forks_dialog(bye, leg_b)
    await fork_answers(env, env.alice, leg_b)
    acks = to_phone(env, env.alice, "ACK", FORK_TAG)
    assert len(acks) == 2 and acks[1].body == ack.body
    assert len({b.top_via.branch for b in to_phone(env, env.alice, "BYE", FORK_TAG)}) == 1
    assert env.calls == 1
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_forks_2xx_after_the_call_failed_on_another_forks_refusal_is_byed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A late-offer INVITE: one target of the proxy downstream refuses (486), the call fails
    on it and ends; then another target's 2xx comes (the transaction passes a 2xx racing a
    non-2xx up, RFC 3261 §13.2.2.4). Nobody holds that session: it is ACKed, with an answer
    refusing its offer, and BYEd once (§15), where it used to be ACKed only (without an
    answer) and the target left in a call with nobody."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    await leg_b.answer(486)
    assert (await call.final()).status == 486
    await eventually(lambda: env.calls == 0)

    offer = env.alice.offer_sdp()
    ok = make_response(
        leg_b.invite,
        200,
        to_tag=FORK_TAG,
        extra=[("Contact", FORK_CONTACT), ("Record-Route", FORK_ROUTE)],
        body=offer,
        content_type=SDP,
    )
    refusal = next(
        d
        for d in env.network.capture
        if d.src == env.alice.address and d.data.startswith(b"SIP/2.0 486 ")
    )
    for _ in range(2):  # the second: a copy, our ACK lost
        await env.alice.socket.sendto(serialize_message(ok), refusal.dst)
        await trio.sleep(1)
    acks = to_phone(env, env.alice, "ACK", FORK_TAG)
    assert len(acks) == 2
    assert_in_the_forks_dialog(acks[0], leg_b)
    assert_refusing_answer(acks[0], offer)
    (bye,) = to_phone(env, env.alice, "BYE", FORK_TAG)
    assert_in_the_forks_dialog(bye, leg_b)


async def test_a_late_offer_2xx_after_the_give_up_is_acked_with_a_refusing_answer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A late-offer call to alice's phone, which rings, ignores the trunk's CANCEL and
    answers once the gateway gave its INVITE up (RFC 3261 §9.1) and the call ended: its 2xx
    offers, so the endpoint's ACK carries an answer rejecting every stream (§13.2.2.4, RFC
    3264 §4), where it used to carry none; then one BYE, each copy ACKed again alike."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    assert call.exchange is not None
    await eventually(lambda: 180 in call.exchange.statuses)
    assert leg_b.incoming is not None and leg_b.incoming.transaction is not None
    del env.alice._by_invite[leg_b.incoming.transaction]  # no 487 on the CANCEL (§9.2)
    await call.cancel()
    assert (await call.final()).status == 487
    await env.alice.next_request("CANCEL")
    await eventually(lambda: env.calls == 0, timeout=2 * GIVE_UP)
    await trio.sleep(1)

    offer = env.alice.offer_sdp()
    await leg_b.answer(200, sdp=offer)
    await trio.sleep(1)
    (ack,) = to_phone(env, env.alice, "ACK", leg_b.local_tag)
    assert_refusing_answer(ack, offer)
    assert len(to_phone(env, env.alice, "BYE", leg_b.local_tag)) == 1
    ok = last_2xx(env, env.alice, leg_b)
    await env.alice.socket.sendto(ok.data, ok.dst)  # a copy: our ACK lost
    await trio.sleep(1)
    acks = to_phone(env, env.alice, "ACK", leg_b.local_tag)
    assert len(acks) == 2 and acks[1].body == ack.body
    assert len({b.top_via.branch for b in to_phone(env, env.alice, "BYE", leg_b.local_tag)}) == 1


async def test_a_forks_2xx_racing_another_forks_refusal_is_byed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The 486 of one target and the 2xx of another arrive together (a proxy that forwards a
    6xx or a fork's refusal at once, RFC 3261 §16.7, and another target's 2xx racing it): both
    reach the call's event queue before the call task runs. The call fails on the refusal and
    ends without reading the 2xx; nobody holds that session, so it must still be ACKed and
    BYEd once (§15), not ACKed only because the 2xx had been queued for the call."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    invite = next(
        d
        for d in env.network.capture
        if d.dst == env.alice.address and d.data.startswith(b"INVITE ")
    )
    refusal = make_response(leg_b.invite, 486, to_tag="busy1")
    offer = env.alice.offer_sdp()
    ok = make_response(
        leg_b.invite,
        200,
        to_tag=FORK_TAG,
        extra=[("Contact", FORK_CONTACT), ("Record-Route", FORK_ROUTE)],
        body=offer,
        content_type=SDP,
    )
    await env.alice.socket.sendto(serialize_message(refusal), invite.src)
    await env.alice.socket.sendto(serialize_message(ok), invite.src)
    assert (await call.final()).status == 486
    await eventually(lambda: env.calls == 0)
    for _ in range(2):  # the callee re-sends its 2xx until an ACK comes (§13.3.1.4)
        await env.alice.socket.sendto(serialize_message(ok), invite.src)
        await trio.sleep(1)
    acks = to_phone(env, env.alice, "ACK", FORK_TAG)
    # The queued 2xx is ACKed by the call's end when that end reaches it before the callee's
    # first re-sent copy arrives; otherwise that copy's ACK answers both. Which comes first
    # follows the call record's write in a worker thread, which the virtual clock does not pace:
    # 2 or 3 ACKs, each copy after the first ACK answered by its own (§13.2.2.4).
    assert len(acks) in (2, 3)
    assert_refusing_answer(acks[0], offer)
    (bye,) = to_phone(env, env.alice, "BYE", FORK_TAG)
    assert_in_the_forks_dialog(bye, leg_b)
