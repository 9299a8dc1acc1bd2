"""A failure of ours while applying the SDP of a callee's 2xx (a key exchange's or the media
relay's bug, not bad SDP from the peer) ends that call cleanly and says why: the 2xx is ACKed
once all the same (RFC 3261 §13.2.2.4), then BYEd with a Reason (RFC 3326); the caller gets 500
with a Warning, or its re-INVITE does and the call ends with BYE. Other calls go on. Signalling
on the in-memory network, virtual time (T1 = 0.5 s: 64*T1 = 32 s)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.media.errors import LocalMediaError
from gateway.core.media.security import KeyExchangeFailed
from gateway.core.media.session import MediaSession
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.network import CapturedDatagram
from gateway.testing.sip_agent import AutoAnswer, simple_sdp
from tests.component.calls.answer_error_checks import (
    SECRET,
    assert_logged_once_and_nothing_secret,
    fail_next,
)
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_DID,
    GW,
    B2bua,
    answered_call,
    eventually,
    start_b2bua,
)
from tests.component.calls.transfer_calls import BOB_URI, bob_phone, eventually_notify, refer

LIMIT = 32.0  # 64 * T1: a 2xx not ACKed is re-sent until then (§13.3.1.4)


def invite_2xx_and_acks(env: B2bua, call_id: str) -> tuple[list[bytes], list[bytes]]:
    """alice's 2xx to INVITEs of dialog ``call_id`` (retransmissions included) and the
    gateway's ACKs to her, as sent."""

    def of_call(datagram: CapturedDatagram) -> bool:
        return f"Call-ID: {call_id}\r\n".encode() in datagram.data

    capture = [d for d in env.network.capture if of_call(d)]
    oks = [
        d.data
        for d in capture
        if d.src == ALICE and d.dst == GW and d.data.startswith(b"SIP/2.0 200")
        if b" INVITE\r\n" in d.data
    ]
    acks = [d.data for d in capture if d.src == GW and d.dst == ALICE and d.data.startswith(b"ACK")]
    return oks, acks


async def test_a_failure_applying_the_callees_answer_acks_it_byes_it_and_answers_500(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    other, _ = await answered_call(env)  # a call in progress, not to be disturbed
    arm = fail_next(monkeypatch)
    arm()

    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final()
    assert (final.status, final.reason) == (500, "Server Internal Error")
    warning = final.headers.get("Warning") or ""
    assert "internal error applying the answer" in warning and SECRET not in warning
    leg_b = await env.alice.next_call()
    bye = (await env.alice.next_request("BYE", timeout=5)).request
    reason = bye.headers.get("Reason") or ""
    assert "cause=500" in reason and "internal error applying the answer" in reason
    assert SECRET not in reason

    await trio.sleep(LIMIT + 2)  # a 2xx not ACKed would have been re-sent meanwhile
    oks, acks = invite_2xx_and_acks(env, leg_b.call_id)
    assert len(oks) == 1 and len(acks) == 1  # ACKed once, at once: never re-sent
    assert env.alice.never_acked == []
    assert all(SECRET.encode() not in d.data for d in env.network.capture)
    assert_logged_once_and_nothing_secret(caplog, "internal error applying the answer")

    assert env.calls == 1  # the other call is still up and still works
    assert (await other.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    after, _ = await answered_call(env)  # and the gateway takes new ones
    assert (await after.bye()).status == 200


async def test_a_failure_applying_a_reinvites_answer_acks_it_answers_500_and_ends_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    other, _ = await answered_call(env)
    call, leg_b = await answered_call(env)
    arm = fail_next(monkeypatch)
    arm()

    hold = await call.reinvite(env.trunk.offer_sdp(direction="sendonly"))
    assert (hold.status, hold.reason) == (500, "Server Internal Error")
    warning = hold.headers.get("Warning") or ""
    assert "internal error applying the answer to re-INVITE" in warning
    for agent in (env.alice, env.trunk):
        bye = (await agent.next_request("BYE", timeout=5)).request
        assert bye.call_id in (call.call_id, leg_b.call_id)
        reason = bye.headers.get("Reason") or ""
        assert "cause=500" in reason and "internal error applying the answer" in reason

    await trio.sleep(LIMIT + 2)
    oks, acks = invite_2xx_and_acks(env, leg_b.call_id)
    assert len(oks) == 2 and len(acks) == 2  # the INVITE's and the re-INVITE's, once each
    assert env.alice.never_acked == []
    assert all(SECRET.encode() not in d.data for d in env.network.capture)
    assert_logged_once_and_nothing_secret(caplog, "internal error applying the answer")

    assert env.calls == 1
    assert (await other.bye()).status == 200
    await eventually(lambda: env.calls == 0)


ALICE_OFFER = simple_sdp("127.0.0.3", 30000, version=1)


async def test_a_failure_applying_the_answer_in_a_late_offer_callers_ack_acks_b_and_byes_both(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A late offer (RFC 3261 §13.2.1): B's 2xx offers, A's ACK answers, and applying that
    answer fails. B's 2xx is ACKed once, with an answer refusing its offer (RFC 3264 §6),
    then BYEd; A, answered already, gets a BYE."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    fail_next(monkeypatch)()
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    await leg_b.answer(sdp=ALICE_OFFER)
    assert (await call.final()).status == 200  # with our offer; the trunk's ACK answers it

    ack_b = (await env.alice.next_request("ACK", timeout=5)).request
    assert [m.port for m in parse_sdp_untrusted(ack_b.body).media] == [0]
    for agent in (env.alice, env.trunk):
        reason = (await agent.next_request("BYE", timeout=5)).request.headers.get("Reason")
        assert "cause=500" in (reason or "")
        assert "internal error applying the answer in A's ACK" in (reason or "")

    await trio.sleep(LIMIT + 2)
    oks, acks = invite_2xx_and_acks(env, leg_b.call_id)
    assert len(oks) == 1 and len(acks) == 1
    assert env.alice.never_acked == []
    assert_logged_once_and_nothing_secret(caplog, "internal error applying the answer in A's ACK")
    await eventually(lambda: env.calls == 0)


async def test_a_failure_taking_a_late_offer_callees_offer_acks_it_byes_it_and_answers_500(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    fail_next(monkeypatch, "take_offer")()
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    await leg_b.answer(sdp=ALICE_OFFER)
    final = await call.final()
    assert (final.status, final.reason) == (500, "Server Internal Error")
    assert "internal error applying the offer" in (final.headers.get("Warning") or "")

    ack_b = (await env.alice.next_request("ACK", timeout=5)).request
    assert [m.port for m in parse_sdp_untrusted(ack_b.body).media] == [0]
    reason = (await env.alice.next_request("BYE", timeout=5)).request.headers.get("Reason")
    assert "cause=500" in (reason or "") and "internal error applying the offer" in (reason or "")

    await trio.sleep(LIMIT + 2)
    oks, acks = invite_2xx_and_acks(env, leg_b.call_id)
    assert len(oks) == 1 and len(acks) == 1
    assert env.trunk.requests("BYE") == []  # A's INVITE got its 500: nothing to end there
    assert all(SECRET.encode() not in d.data for d in env.network.capture)
    assert_logged_once_and_nothing_secret(caplog, "internal error applying the offer")
    await eventually(lambda: env.calls == 0)


async def test_a_relay_failing_to_apply_the_callees_answer_is_an_internal_error_too(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The wait for the relay to carry the answer (a media worker's round trip) raising: the
    same ending as a key exchange's bug, B's 2xx ACKed before its BYE."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)

    async def applied(self: MediaSession) -> None:
        raise LocalMediaError(f"the relay lost {SECRET}")

    monkeypatch.setattr(MediaSession, "applied", applied)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final()
    assert final.status == 500
    assert "internal error applying the answer" in (final.headers.get("Warning") or "")
    leg_b = await env.alice.next_call()
    reason = (await env.alice.next_request("BYE", timeout=5)).request.headers.get("Reason")
    assert "internal error applying the answer (LocalMediaError)" in (reason or "")
    await trio.sleep(LIMIT + 2)
    oks, acks = invite_2xx_and_acks(env, leg_b.call_id)
    assert len(oks) == 1 and len(acks) == 1
    assert_logged_once_and_nothing_secret(caplog, "internal error applying the answer")
    await eventually(lambda: env.calls == 0)


async def test_a_failure_applying_the_transferees_answer_acks_every_2xx_and_ends_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A blind transfer (RFC 3515): the transferee's 2xx answers the target's offer, and
    applying it fails. The transferee's 2xx and the target's are each ACKed once, then BYEd;
    the transferor hears 500 and is BYEd too."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)
    call, alice_leg = await answered_call(env)
    fail_next(monkeypatch)()
    assert await refer(alice_leg, BOB_URI) == 202

    notify = await eventually_notify(env.alice, "SIP/2.0 500 Server Internal Error")
    assert SECRET.encode() not in notify.body
    # The target, answered but never put through, hears the transfer failed (_end_transfer).
    reason = (await bob.next_request("BYE", timeout=5)).request.headers.get("Reason")
    assert "transfer failed: 500 Server Internal Error" in (reason or "")
    for agent in (env.trunk, env.alice):
        reason = (await agent.next_request("BYE", timeout=5)).request.headers.get("Reason")
        assert "cause=500" in (reason or "")
        assert "internal error applying the answer to re-INVITE" in (reason or "")
    await trio.sleep(LIMIT + 2)
    bob_call = bob.calls[0].call_id
    bob_oks = [
        d
        for d in env.network.capture
        if d.dst == GW and d.data.startswith(b"SIP/2.0 200") and bob_call.encode() in d.data
        if b" INVITE\r\n" in d.data
    ]
    bob_acks = [
        d
        for d in env.network.capture
        if d.src == GW and d.data.startswith(b"ACK")
        if bob_call.encode() in d.data
    ]
    assert len(bob_oks) == 1 and len(bob_acks) == 1
    trunk_oks = [
        d
        for d in env.network.capture
        if d.dst == GW and d.data.startswith(b"SIP/2.0 200") and call.call_id.encode() in d.data
        if b" INVITE\r\n" in d.data
    ]
    assert len(trunk_oks) == 1  # the 2xx to our re-INVITE (the trunk called us), never re-sent
    trunk_acks = [
        d
        for d in env.network.capture
        if d.src == GW and d.data.startswith(b"ACK")
        if call.call_id.encode() in d.data
    ]
    assert len(trunk_acks) == 1  # ACKed once
    assert env.trunk.never_acked == [] and bob.never_acked == []
    assert all(SECRET.encode() not in d.data for d in env.network.capture)
    assert_logged_once_and_nothing_secret(caplog, "internal error applying the answer to re-INVITE")
    await eventually(lambda: env.calls == 0)


async def test_a_failure_applying_the_transferees_answer_after_the_transferor_left_says_so(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As above, the transferor having hung up at once (as most phones do after a blind
    transfer's 202): the transfer's end must not take the failure's place in the BYE's Reason
    and the call record ("transfer to ... failed: 500"), which would hide what failed."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed, auto=AutoAnswer(delay=3))
    _, alice_leg = await answered_call(env)
    assert await refer(alice_leg, BOB_URI) == 202
    assert (await alice_leg.bye()).status == 200  # before bob answers
    fail_next(monkeypatch)()
    reason = (await env.trunk.next_request("BYE", timeout=10)).request.headers.get("Reason")
    assert "cause=500" in (reason or "")
    assert "internal error applying the answer to re-INVITE" in (reason or "")
    await bob.next_request("BYE", timeout=5)
    assert_logged_once_and_nothing_secret(caplog, "internal error applying the answer to re-INVITE")
    await eventually(lambda: env.calls == 0)


async def test_a_key_exchange_plugins_bug_on_the_answer_is_said_as_such(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A key-exchange plugin raising something other than SdpError on the callee's answer
    (LegSecurity.read_answer makes it KeyExchangeFailed): 500 "key exchange failed", the
    record naming the plugin and the exception's type."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    plugin_bug = ValueError(f"inline:{SECRET}")
    fail_next(monkeypatch, error=lambda: KeyExchangeFailed("sdes", plugin_bug))()
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final()
    assert (final.status, final.headers.get("Warning")) == (500, '399 voipgw "key exchange failed"')
    leg_b = await env.alice.next_call()
    reason = (await env.alice.next_request("BYE", timeout=5)).request.headers.get("Reason")
    assert "key exchange failed: the sdes key exchange raised ValueError" in (reason or "")
    await trio.sleep(LIMIT + 2)
    oks, acks = invite_2xx_and_acks(env, leg_b.call_id)
    assert len(oks) == 1 and len(acks) == 1
    assert_logged_once_and_nothing_secret(
        caplog, "key exchange failed: the sdes key exchange raised ValueError"
    )
    await eventually(lambda: env.calls == 0)
