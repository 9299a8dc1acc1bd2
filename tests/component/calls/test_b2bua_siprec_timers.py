"""Session timers on the SIPREC recording session (RFC 4028) and updates the gateway gives up
(RFC 3261 §9.1, §13.2.2.4, §15), the recorder (SRS) a SIP agent on the in-memory network, in
virtual time (``session_expires = 90``, RFC 4028's least: a real-time test would take minutes):

- the recording INVITE offers a timer with us refreshing; an SRS that takes it and allows
  UPDATE gets an UPDATE without a body at half the interval; one that stops answering the
  refresh (a re-INVITE, for an SRS without UPDATE) is BYEd and the rest of the call goes in a
  new recording session;
- a 422 is answered by asking again at its Min-SE;
- an SRS that refreshes itself is answered 200 (its UPDATE, and its re-INVITE with our answer,
  that 200 re-sent until its ACK), and when it stops, the session is BYEd at the expiry less a
  third and opened anew; its re-INVITE while ours is out gets 491;
- an update the SRS leaves at 100 Trying is CANCELled after UPDATE_TIMEOUT, and the 2xx that
  crosses the CANCEL is ACKed;
- a new recording session still pending when the call ends is CANCELled, one answered then is
  ACKed and BYEd.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import pytest
import trio

from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.component.calls.b2bua_env import eventually, next_within
from tests.component.calls.siprec_calls import srs_answer
from tests.component.calls.siprec_counts import counted
from tests.component.calls.siprec_recorded_calls import HELD, RESUMED
from tests.component.calls.siprec_timed_env import take, timed_env

WITH_UPDATE = ("Allow", "INVITE, ACK, BYE, CANCEL, UPDATE")
WITHOUT_UPDATE = ("Allow", "INVITE, ACK, BYE, CANCEL")


async def test_the_recording_invite_offers_a_timer_and_we_refresh_with_update(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs, call = await timed_env(nursery, tmp_path, voipgw_seed)
    recording = await srs.next_call()
    invite = recording.invite
    assert "timer" in (invite.headers.get("Supported") or "")
    assert invite.headers.get("Session-Expires") == "90;refresher=uac"
    assert invite.headers.get("Min-SE") == "90"
    await take(srs, recording, ("Session-Expires", "90;refresher=uac"), WITH_UPDATE)
    answered = trio.current_time()

    for round_ in (1, 2):
        update = await srs.next_request("UPDATE", timeout=60)
        assert update.request.call_id == invite.call_id and update.request.body == b""
        assert update.request.headers.get("Session-Expires") == "90;refresher=uac"
        assert 45 * round_ - 1 <= update.at - answered <= 45 * round_ + 1  # half the interval
        await srs.respond(update, 200, extra=[("Session-Expires", "90;refresher=uac")])
    assert srs.requests("INVITE") == [invite]  # no re-INVITE for a refresh
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)  # the final snapshot, left unanswered
    await srs.next_request("BYE", timeout=20)
    await eventually(lambda: env.calls == 0)


async def test_an_srs_that_stops_answering_the_refresh_is_replaced_by_a_new_session(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.plugins.taps.siprec")
    env, srs, call = await timed_env(nursery, tmp_path, voipgw_seed)
    recording = await srs.next_call()
    await take(srs, recording, ("Session-Expires", "90;refresher=uac"), WITHOUT_UPDATE)

    # No UPDATE in its Allow: the refresh is a re-INVITE with the streams as they are.
    refresh = await srs.next_request("INVITE", timeout=60)
    assert refresh.request.call_id == recording.invite.call_id
    assert refresh.request.headers.get("Session-Expires") == "90;refresher=uac"
    offer = parse_sdp_untrusted(refresh.request.body)
    assert [m.attributes.get("label") for m in offer.media] == ["1", "2"]
    # The SRS died: only its transaction's 100 Trying. The gateway CANCELs the refresh after
    # 32 s, takes the recording session as gone, BYEs it and opens a new one.
    cancel = await srs.next_request("CANCEL", timeout=40)
    assert cancel.request.call_id == recording.invite.call_id
    bye = await srs.next_request("BYE", timeout=5)
    assert bye.request.call_id == recording.invite.call_id
    again = await srs.next_call(timeout=5)
    assert again.invite.call_id != recording.invite.call_id
    assert again.invite.headers.get("Session-Expires") == "90;refresher=uac"
    await take(srs, again)
    await eventually(lambda: counted(env, "session_reopened", 1))
    assert env.calls == 1  # the call goes on
    await call.bye()  # type: ignore[attr-defined]
    snapshot = await srs.next_request("INVITE", timeout=10)
    assert snapshot.request.call_id == again.invite.call_id
    assert "the SRS did not answer a session refresh (no answer)" in caplog.text


async def test_a_422_is_asked_again_at_its_min_se(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs, call = await timed_env(nursery, tmp_path, voipgw_seed)
    first = await srs.next_call()
    assert first.incoming is not None
    await srs.respond(first.incoming, 422, extra=[("Min-SE", "300")])
    second = await srs.next_call(timeout=5)
    invite = second.invite
    assert invite.call_id == first.invite.call_id and invite.cseq.number == 2
    assert invite.headers.get("Session-Expires") == "300;refresher=uac"
    assert invite.headers.get("Min-SE") == "300"
    await take(srs, second, ("Session-Expires", "300;refresher=uac"), WITH_UPDATE)
    answered = trio.current_time()
    assert await next_within(srs, "UPDATE", 140) is None  # not at 45 s any more
    update = await srs.next_request("UPDATE", timeout=20)
    assert 149 <= update.at - answered <= 151
    assert update.request.headers.get("Session-Expires") == "300;refresher=uac"
    await srs.respond(update, 200, extra=[("Session-Expires", "300;refresher=uac")])
    assert env.calls == 1
    await call.bye()  # type: ignore[attr-defined]


async def test_an_srs_that_refreshes_is_answered_and_when_it_stops_is_replaced(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs, call = await timed_env(nursery, tmp_path, voipgw_seed)
    recording = await srs.next_call()
    await take(srs, recording, ("Session-Expires", "90;refresher=uas"), WITH_UPDATE)

    # Its refreshes: an UPDATE, then a re-INVITE with an offer; never a 501.
    await trio.sleep(45)
    exchange = await recording.request(
        "UPDATE", extra=[("Session-Expires", "90;refresher=uac"), ("Supported", "timer")]
    )
    answer = await exchange.final()
    assert answer.status == 200
    assert answer.headers.get("Session-Expires") == "90;refresher=uac"
    await trio.sleep(45)
    exchange = await recording.request(
        "INVITE",
        body=srs_answer(),
        content_type="application/sdp",
        extra=[("Session-Expires", "90;refresher=uac"), ("Supported", "timer")],
    )
    answer = await exchange.final()
    assert answer.status == 200 and answer.headers.get("Session-Expires") == "90;refresher=uac"
    ours = parse_sdp_untrusted(answer.body)  # our answer to its offer, line for line
    assert [m.attributes.get("label") for m in ours.media] == ["2", "1"]  # RFC 3264 §6
    refreshed = trio.current_time()
    await trio.sleep(10)
    assert exchange.statuses.count(200) == 1  # its ACK stopped our 2xx (RFC 3261 §13.3.1.4)
    assert srs.requests("UPDATE") == [] and len(srs.requests("INVITE")) == 1  # nothing of ours

    # It stops: at the expiry less a third (RFC 4028 §10), BYE, and a new recording session.
    bye = await srs.next_request("BYE", timeout=80)
    assert 59 <= bye.at - refreshed <= 61
    assert bye.request.call_id == recording.invite.call_id
    again = await srs.next_call(timeout=5)
    await take(srs, again)
    await eventually(lambda: counted(env, "session_reopened", 1))
    assert env.calls == 1
    await call.bye()  # type: ignore[attr-defined]


async def test_an_update_left_pending_is_cancelled_and_its_late_2xx_acked(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs, call = await timed_env(nursery, tmp_path, voipgw_seed)
    recording = await srs.next_call()
    await take(srs, recording)  # no Session-Expires: no timer (RFC 4028 §7.2)

    assert (await call.reinvite(HELD)).status == 200  # type: ignore[attr-defined]
    update = await srs.next_request("INVITE", timeout=10)
    sent_at = update.at
    cancel = await srs.next_request("CANCEL", timeout=40)  # 100 Trying, then nothing
    assert 31 <= cancel.at - sent_at <= 33
    assert cancel.request.cseq.number == update.request.cseq.number
    # The SRS's 200 crossed the CANCEL: the gateway ACKs it all the same (RFC 3261 §13.2.2.4).
    await srs.respond(update, 200, body=srs_answer(), content_type="application/sdp")
    ack = await srs.next_request("ACK", timeout=5)
    assert ack.request.cseq.number == update.request.cseq.number
    assert srs.awaiting_ack == []
    # The hold was not taken: it goes again (no answer is a refusal that may pass).
    again = await srs.next_request("INVITE", timeout=20)
    assert again.request.cseq.number > update.request.cseq.number
    await srs.respond(again, 200, body=srs_answer(), content_type="application/sdp")
    assert (await call.reinvite(RESUMED)).status == 200  # type: ignore[attr-defined]
    await srs.respond(
        await srs.next_request("INVITE", timeout=10),
        200,
        body=srs_answer(),
        content_type="application/sdp",
    )
    assert env.calls == 1
    await call.bye()  # type: ignore[attr-defined]


async def test_a_new_session_pending_at_the_call_end_is_cancelled(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs, call = await timed_env(nursery, tmp_path, voipgw_seed)
    recording = await srs.next_call()
    await take(srs, recording)
    assert (await call.reinvite(HELD)).status == 200  # type: ignore[attr-defined]
    await srs.respond(await srs.next_request("INVITE", timeout=10), 481)
    pending = await srs.next_call(timeout=5)  # the new session: 100 Trying, then nothing
    await pending.ring()
    await call.bye()  # type: ignore[attr-defined]
    cancel = await srs.next_request("CANCEL", timeout=10)
    assert cancel.request.call_id == pending.invite.call_id
    await eventually(lambda: pending.answered == 487)  # the SRS's answer to the CANCEL
    await eventually(lambda: env.calls == 0)
    assert await next_within(srs, "BYE", 40) is None  # nothing was answered: nothing to end


async def test_a_new_session_answered_as_the_call_ends_is_acked_and_ended(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs, call = await timed_env(nursery, tmp_path, voipgw_seed)
    recording = await srs.next_call()
    await take(srs, recording)
    assert (await call.reinvite(HELD)).status == 200  # type: ignore[attr-defined]
    await srs.respond(await srs.next_request("INVITE", timeout=10), 481)
    late = await srs.next_call(timeout=5)
    async with trio.open_nursery() as both:
        both.start_soon(call.bye)  # type: ignore[attr-defined]
        both.start_soon(partial(late.answer, 200, sdp=srs_answer()))  # crosses the end
    await srs.next_request("ACK", timeout=10)
    bye = await srs.next_request("BYE", timeout=10)
    assert bye.request.call_id == late.invite.call_id
    assert srs.awaiting_ack == []
    await eventually(lambda: env.calls == 0)


async def test_an_srs_re_invite_crossing_ours_is_answered_491(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs, call = await timed_env(nursery, tmp_path, voipgw_seed)
    recording = await srs.next_call()
    await take(srs, recording, ("Session-Expires", "90;refresher=uas"), WITH_UPDATE)
    assert (await call.reinvite(HELD)).status == 200  # type: ignore[attr-defined]
    ours = await srs.next_request("INVITE", timeout=10)  # left pending while the SRS refreshes
    exchange = await recording.request("INVITE", body=srs_answer(), content_type="application/sdp")
    assert (await exchange.final()).status == 491  # RFC 3261 §14.2: our offer is out
    refresh = await recording.request("UPDATE", extra=[("Session-Expires", "90;refresher=uac")])
    assert (await refresh.final()).status == 200  # a refresh without an offer still passes
    await srs.respond(ours, 200, body=srs_answer(), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    assert env.calls == 1
    await call.bye()  # type: ignore[attr-defined]
