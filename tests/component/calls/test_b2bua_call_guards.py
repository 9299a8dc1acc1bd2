"""Failures the call's guards answer and state without ending more than they must: one forked
target whose offer raises (the others ring on), a leg the gateway cannot send on while it
relays (the request in hand gets 503, the call goes on, or ends saying why where the dialog
can no longer work), abandoning an offer raising in a catch-all (the request is answered all
the same), no media ports for a picker (503, the call rings on), and the record of a bad SDP
answer. Signalling on the in-memory network, virtual time (T1 = 0.5 s)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.endpoint import SipEndpoint
from gateway.core.media.errors import LocalMediaError, PortsExhausted
from gateway.core.media.session import MediaSession
from gateway.core.sip.message import Response
from gateway.testing.sip_agent import SDP, simple_sdp
from tests.component.calls.answer_error_checks import SECRET, fail_next
from tests.component.calls.answer_proto_calls import CRYPTO, alice_answer
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    answered_call,
    eventually,
    next_within,
    start_b2bua,
)
from tests.component.calls.b2bua_scenarios import second_phone
from tests.component.calls.call_guard_logs import ended_lines
from tests.component.calls.dialog_event_watch import start
from tests.component.calls.offer_error_checks import PLUGIN_BUG, plugin_bug, warning_of
from tests.component.calls.pickup_calls import (
    BOB_PORT,
    PICKUP,
    pick_up,
    replaces_of,
    ringing_alice,
)
from tests.component.calls.transfer_calls import BOB_URI, bob_phone, refer


def fail_new_via_in(monkeypatch: pytest.MonkeyPatch, caller: str) -> list[bool]:
    """Make ``SipEndpoint.new_via`` raise OSError (no listener of the flow's transport, as
    ``local_address`` says) when the Call method ``caller`` asks for it, once armed (append to
    the list returned); every other use works as before. Raised by this test's code, not the
    core's, its text is a plugin's to the log: the lines say ``OSError``
    (gateway.core.logs.transport_error_text)."""
    armed: list[bool] = []
    real = SipEndpoint.new_via

    def failing(self: SipEndpoint, flow: Any) -> Any:
        if armed and sys._getframe(1).f_code.co_name == caller:
            armed.clear()
            raise OSError("no udp listener")
        return real(self, flow)

    monkeypatch.setattr(SipEndpoint, "new_via", failing)
    return armed


def abandon_offer_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """``MediaSession.abandon_offer`` raises: a second bug, inside a catch-all."""

    def broken(self: MediaSession) -> None:
        raise LocalMediaError(f"abandoning failed holding {SECRET}")

    monkeypatch.setattr(MediaSession, "abandon_offer", broken)


# -- 1. one forked target's offer raising ------------------------------------------------------


async def test_a_failure_making_one_forked_targets_offer_drops_only_that_branch(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """alice has two phones (parallel ringing); making the offer for the first raises (a
    key-exchange plugin's bug). That phone is not called, logged once; the other rings and
    answers, and the call is up, its record not saying the dropped branch's failure."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    phone2 = await second_phone(env, nursery, voipgw_seed)
    fail_next(monkeypatch, "make_offer", error=plugin_bug)()

    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    rung = [
        (phone, received)
        for phone in (env.alice, phone2)
        if (received := await next_within(phone, "INVITE", 1)) is not None
    ]
    assert len(rung) == 1  # the other branch was dropped, not the call
    phone, _ = rung[0]
    (leg,) = phone.calls
    await leg.ring()
    await leg.answer()
    final = await call.final()
    assert final.status == 200
    # The dropped branch gave back nothing the other, of the same account, still holds.
    assert env.gateway.calls.limits.in_progress[("account", "alice")] == 1
    assert (await phone.next_request("ACK", timeout=1)).request.call_id == leg.call_id
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and PLUGIN_BUG in errors[0].getMessage()

    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert ended_lines(caplog) and all(PLUGIN_BUG not in line for line in ended_lines(caplog))
    assert all(SECRET not in r.getMessage() for r in caplog.records)


async def test_with_one_forked_targets_offer_failed_the_others_failure_decides(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The branch left is busy (486): the caller gets 486, the best failure, not a 500 for
    the branch that could not be offered the call."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    phone2 = await second_phone(env, nursery, voipgw_seed)
    fail_next(monkeypatch, "make_offer", error=plugin_bug)()

    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    rung = [p for p in (env.alice, phone2) if await next_within(p, "INVITE", 1) is not None]
    assert len(rung) == 1
    (leg,) = rung[0].calls
    await leg.answer(486)
    final = await call.final()
    assert final.status == 486
    await eventually(lambda: env.calls == 0)


# -- 2. a leg the gateway cannot send on ---------------------------------------------------------


@pytest.mark.parametrize("method", ["INVITE", "INFO"])
async def test_a_request_not_relayed_for_want_of_a_via_gets_503_and_the_call_goes_on(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    method: str,
) -> None:
    """Relaying the trunk's re-INVITE (or INFO) to alice, our Via cannot be made (no listener
    of the leg's transport left, OSError): the request gets 503 (RFC 3261 §21.5.4) and the
    call goes on; it used to end the whole call as a network error."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, leg_b = await answered_call(env)
    fail_new_via_in(monkeypatch, "_send_in_dialog").append(True)

    if method == "INVITE":
        body = simple_sdp("127.0.0.2", 40000, version=2, direction="sendonly")
        refused = await (await call.request("INVITE", body=body, content_type=SDP)).final()
    else:
        dtmf = b"Signal=5\r\nDuration=160\r\n"
        refused = await (
            await call.request("INFO", body=dtmf, content_type="application/dtmf-relay")
        ).final()
    assert refused.status == 503
    assert await next_within(env.alice, method, 1) is None  # nothing was relayed
    assert env.alice.requests("BYE") == [] and env.trunk.requests("BYE") == []
    assert env.calls == 1

    resumed = simple_sdp("127.0.0.2", 40000, version=3)
    assert (await call.reinvite(resumed)).status == 200  # the call still works
    assert (await call.bye()).status == 200
    assert (await env.alice.next_request("BYE", timeout=1)).request.call_id == leg_b.call_id
    await eventually(lambda: env.calls == 0)


async def test_a_reinvites_answerer_that_cannot_be_acked_ends_the_call_answering_503(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """alice took the trunk's re-offer (her 2xx) but our ACK to her cannot be made: the legs
    would disagree, so the call ends saying why, and the trunk's re-INVITE gets 503 first; it
    used to be left unanswered, its transaction no longer the call's."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    fail_new_via_in(monkeypatch, "_reinvite_answered").append(True)

    hold = simple_sdp("127.0.0.2", 40000, version=2, direction="sendonly")
    refused = await (await call.request("INVITE", body=hold, content_type=SDP)).final(timeout=5)
    assert refused.status == 503
    assert "leg cannot be reached" in warning_of(refused)
    bye = (await env.trunk.next_request("BYE", timeout=5)).request
    assert "signalling failed" in (bye.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)


async def test_a_late_reinvites_offerer_that_cannot_be_acked_ends_the_call_saying_why(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A re-INVITE without SDP: alice's 2xx offers, the trunk's ACK answers, and our ACK
    with that answer cannot be made. Nothing received is in hand (an ACK gets no answer), but
    the trunk uses the answer and alice never gets it: the call ends, the record and the
    BYEs saying "signalling failed", not the catch-all's "network error"."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    fail_new_via_in(monkeypatch, "_ack_late_reinvite").append(True)

    call.ack_answer = simple_sdp("127.0.0.2", 40000, version=2)
    assert (await call.reinvite(b"")).status == 200
    bye = (await env.trunk.next_request("BYE", timeout=5)).request
    assert "signalling failed" in (bye.headers.get("Reason") or "")
    await eventually(lambda: env.calls == 0)
    assert any("signalling failed: OSError" in line for line in ended_lines(caplog))


async def test_a_transferee_that_cannot_be_acked_fails_the_transfer_and_ends_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """alice transfers the trunk to bob; the trunk (transferee) answers the re-INVITE with
    bob's offer, and our ACK to it cannot be made: the transferor hears the transfer failed
    (NOTIFY 503), bob's 2xx is ACKed and BYEd, the call ends saying why."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    await answered_call(env)
    bob = await bob_phone(env, nursery, voipgw_seed)
    (alice_leg,) = env.alice.calls
    fail_new_via_in(monkeypatch, "_transferee_answered").append(True)

    assert await refer(alice_leg, BOB_URI) == 202
    await env.trunk.next_request("INVITE", timeout=5)  # bob's offer, answered by the trunk
    assert (await bob.next_request("ACK", timeout=5)) is not None
    assert (await bob.next_request("BYE", timeout=5)) is not None
    await eventually(lambda: env.calls == 0, timeout=40)
    fragments = [n.body for n in env.alice.requests("NOTIFY")]
    assert any(b"SIP/2.0 503" in body for body in fragments)
    assert any("signalling failed: OSError" in line for line in ended_lines(caplog))


async def test_a_transferee_that_cannot_be_acked_is_notified_even_when_abandoning_raises(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As above, and abandoning bob's offer raises too (a second bug): the transferor still
    hears the transfer failed (NOTIFY 503) and bob's 2xx is still ACKed and BYEd; abandoning
    first, the catch-all in run() ended the call without either."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    await answered_call(env)
    bob = await bob_phone(env, nursery, voipgw_seed)
    (alice_leg,) = env.alice.calls
    fail_new_via_in(monkeypatch, "_transferee_answered").append(True)
    abandon_offer_raises(monkeypatch)

    assert await refer(alice_leg, BOB_URI) == 202
    await env.trunk.next_request("INVITE", timeout=5)
    assert (await bob.next_request("ACK", timeout=5)) is not None
    assert (await bob.next_request("BYE", timeout=5)) is not None
    await eventually(lambda: env.calls == 0, timeout=40)
    fragments = [n.body for n in env.alice.requests("NOTIFY")]
    assert any(b"SIP/2.0 503" in body for body in fragments)


# -- 3. abandoning an offer raising inside a catch-all ------------------------------------------


async def test_a_reinvite_is_answered_its_500_even_when_abandoning_the_offer_raises(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Taking the trunk's re-offer raises, and so does abandoning it: the re-INVITE still gets
    the stated 500 with its Warning (not the catch-all's bare one) and the call ends."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, leg_b = await answered_call(env)
    fail_next(monkeypatch, "take_offer", error=plugin_bug)()
    abandon_offer_raises(monkeypatch)

    hold = simple_sdp("127.0.0.2", 40000, version=2, direction="sendonly")
    refused = await (await call.request("INVITE", body=hold, content_type=SDP)).final(timeout=5)
    assert (refused.status, warning_of(refused)) == (500, '399 voipgw "key exchange failed"')
    assert (await env.alice.next_request("BYE", timeout=5)).request.call_id == leg_b.call_id
    await eventually(lambda: env.calls == 0)


async def test_a_reinvites_answer_failing_is_answered_even_when_abandoning_raises(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same on the answer's side: applying alice's answer to the relayed re-INVITE raises,
    then abandoning the offer does. The trunk's re-INVITE, no longer the call's to answer
    (nothing else would), gets its 500 at once rather than nothing until its Timer B."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    fail_next(monkeypatch, "take_answer")()
    abandon_offer_raises(monkeypatch)

    hold = simple_sdp("127.0.0.2", 40000, version=2, direction="sendonly")
    exchange = await call.request("INVITE", body=hold, content_type=SDP)
    refused = await exchange.final(timeout=5)
    assert refused.status == 500
    assert "internal error applying the answer to re-INVITE" in warning_of(refused)
    await eventually(lambda: env.calls == 0)


async def test_a_late_reinvites_offer_failing_is_answered_even_when_abandoning_raises(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A re-INVITE without SDP: taking the offer in alice's 2xx raises, then abandoning it
    does. The trunk's re-INVITE gets its 500 with the Warning at once, not nothing."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    call, _ = await answered_call(env)
    fail_next(monkeypatch, "take_offer", error=plugin_bug)()
    abandon_offer_raises(monkeypatch)

    refused = await (await call.request("INVITE")).final(timeout=5)
    assert (refused.status, warning_of(refused)) == (500, '399 voipgw "key exchange failed"')
    await eventually(lambda: env.calls == 0)


# -- 4. no media ports for a picker ----------------------------------------------------------------


async def test_no_media_ports_for_a_picker_answers_503_and_the_call_rings_on(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """bob picks up the call ringing alice (both with offers) and the relay has no ports for
    it: 503 with "no free media ports" (RFC 3261 §21.5.4: the node is full, no bug), as a
    caller's INVITE gets; the call rings on and alice can still answer it."""
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    incoming, ringing, dialog = await ringing_alice(env, bob)
    real = MediaSession.answer_from
    armed = [True]

    def exhausted(self: MediaSession, *args: Any, **kwargs: Any) -> Any:
        if armed:
            armed.clear()
            raise PortsExhausted("no free media port pair")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MediaSession, "answer_from", exhausted)
    picked = await pick_up(bob, replaces_of(dialog), sdp=simple_sdp("127.0.0.1", BOB_PORT))
    refused = await picked.final()
    assert (refused.status, warning_of(refused)) == (503, '399 voipgw "no free media ports"')
    assert env.alice.requests("CANCEL") == []  # still ringing
    await ringing.answer()
    final = await incoming.final()
    assert final.status == 200
    assert (await incoming.bye()).status == 200
    await eventually(lambda: env.calls == 0)


# -- 5. the record of a bad SDP answer ---------------------------------------------------------


async def test_the_record_of_a_bad_sdp_answer_says_bad_sdp_answer(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """alice answers SRTP to a plain offer (bad SDP): the caller still gets 488 with the
    reason as Warning, and the record (and its log line) says "bad SDP answer: ...", as
    docs/architecture.md promises, not the 488's status line."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    await env.alice.respond(leg_b.incoming, 200, body=alice_answer("RTP/SAVP", CRYPTO))

    final: Response = await call.final()
    assert final.status == 488 and final.reason == "Not Acceptable Here"
    await eventually(lambda: env.calls == 0)
    (line,) = [line for line in ended_lines(caplog) if call.call_id in line]
    assert "ended: bad SDP answer: " in line and "is not the offer's RTP/AVP" in line
    key = CRYPTO.split("inline:")[1]
    assert all(key not in r.getMessage() for r in caplog.records)
