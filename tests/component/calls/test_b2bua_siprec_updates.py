"""SIPREC recording sessions that recover and end as RFC 7866 expects (the ``siprec`` tap), the
recorder (SRS) a SIP agent on the in-memory network, in virtual time:

- an update the SRS refuses with 500, then 503 with a Retry-After, goes again after a
  randomized back-off, then not before the Retry-After, with the call as it is by then (the
  resume that came meanwhile, never the hold in between);
- an SRS that never takes an update (always 503, or never answering) gets three resends, then
  the update is given up with a WARNING naming the call, counted in the metrics; the BYE still
  comes at the end, without a final snapshot;
- (a 481, after which a new recording session carries the rest of the call:
  test_b2bua_siprec_reopen.py);
- the call's end releases its legs at once; the SRS then gets the final snapshot (a re-INVITE,
  streams inactive, everyone and the recording disassociated) and the BYE after it, also when it
  never answers the snapshot (within ``bye_timeout``); ``final_metadata = false`` sends the BYE
  alone.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio

import gateway.plugins.taps.siprec as siprec_plugin
from gateway.testing.sip_agent import AutoAnswer
from tests.component.calls.b2bua_env import eventually, next_within
from tests.component.calls.siprec_calls import (
    NS,
    metadata_of,
    siprec_env,
    srs_answer,
)
from tests.component.calls.siprec_recorded_calls import (
    HELD,
    RESUMED,
    VirtualWallClock,
    directions,
    recorded_call,
    scrape,
    stamp_of,
)


async def test_a_refused_update_goes_again_after_a_back_off_then_its_retry_after_as_it_is_now(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, _, call_id = await recorded_call(env, srs)

    assert (await call.reinvite(HELD)).status == 200  # type: ignore[attr-defined]
    first = await srs.next_request("INVITE", timeout=10)
    assert directions(first) == ["inactive", "inactive"]
    refused_at = trio.current_time()
    await srs.respond(first, 500)
    second = await srs.next_request("INVITE", timeout=10)
    assert 2.0 <= trio.current_time() - refused_at <= 3.05  # 2 s, up to half again at random
    assert second.request.call_id == call_id
    assert directions(second) == ["inactive", "inactive"]
    refused_at = trio.current_time()
    await srs.respond(second, 503, extra=[("Retry-After", "7")])
    # The call is resumed while the update waits: the next one says so, and no re-INVITE
    # with the hold goes in between.
    assert (await call.reinvite(RESUMED)).status == 200  # type: ignore[attr-defined]
    third = await srs.next_request("INVITE", timeout=15)
    assert 7.0 <= trio.current_time() - refused_at <= 7.1  # the Retry-After, no sooner
    assert third.request.cseq.number > second.request.cseq.number
    assert directions(third) == ["sendonly", "sendonly"]
    await srs.respond(third, 200, body=srs_answer(), content_type="application/sdp")
    assert await next_within(srs, "INVITE", 30) is None  # taken: nothing more to say
    assert 'voipgw_recording_update_failures_total{reason="refused"} 0\n' in scrape(env)
    await call.bye()  # type: ignore[attr-defined]
    final = await srs.next_request("INVITE", timeout=10)  # the final snapshot
    await srs.respond(final, 200, body=srs_answer(), content_type="application/sdp")
    await srs.next_request("BYE", timeout=10)


@pytest.mark.parametrize("refusal", [503, None], ids=["503", "never-answers"])
async def test_an_update_the_srs_never_takes_is_given_up_after_three_resends_with_a_warning(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    refusal: int | None,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.plugins.taps.siprec")
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, _, call_id = await recorded_call(env, srs)
    gateway_call_id = call.call_id  # type: ignore[attr-defined]

    assert (await call.reinvite(HELD)).status == 200  # type: ignore[attr-defined]
    for _ in range(4):  # the update and three resends
        update = await srs.next_request("INVITE", timeout=60)
        assert update.request.call_id == call_id
        if refusal is not None:
            await srs.respond(update, refusal)
    assert await next_within(srs, "INVITE", 60) is None  # given up
    reason = "refused" if refusal is not None else "no_answer"
    assert f'voipgw_recording_update_failures_total{{reason="{reason}"}} 1\n' in scrape(env)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        gateway_call_id in text
        and ("503" if refusal else "no answer") in text
        and "tried 4 times" in text
        for text in warnings
    ), warnings
    assert env.calls == 1  # the call goes on, recorded as the SRS last took it

    await call.bye()  # type: ignore[attr-defined]
    bye = await srs.next_request("BYE", timeout=10)  # no final snapshot of a refused state
    assert bye.request.call_id == call_id
    assert len(srs.requests("INVITE")) == 5


@pytest.mark.parametrize("answers", [True, False], ids=["answered", "never-answered"])
async def test_the_call_ends_at_once_then_the_srs_gets_the_final_snapshot_and_the_bye(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    answers: bool,
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, _, call_id = await recorded_call(env, srs)
    opened = metadata_of(srs.requests("INVITE")[0].body)

    await call.bye()  # type: ignore[attr-defined]
    final = await srs.next_request("INVITE", timeout=5)
    sent_at = trio.current_time()
    assert env.calls == 0  # the call's legs are gone before the SRS said anything
    await eventually(lambda: bool(env.alice.requests("BYE")), timeout=1)
    assert final.request.call_id == call_id
    assert directions(final) == ["inactive", "inactive"]  # no more media
    root = metadata_of(final.request.body)
    # Same ids as the opening snapshot (RFC 7865 §6), now each party and the recording ended.
    assert root.find("r:session", NS).get("session_id") == opened.find(  # type: ignore[union-attr]
        "r:session", NS
    ).get("session_id")  # type: ignore[union-attr]
    assert {p.get("participant_id") for p in root.findall("r:participant", NS)} == {
        p.get("participant_id") for p in opened.findall("r:participant", NS)
    }
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
    left = [
        a.findtext("r:disassociate-time", namespaces=NS)
        for a in root.findall("r:participantsessionassoc", NS)
    ]
    assert len(left) == 2 and all(stamp.fullmatch(t or "") for t in left), left
    stopped = root.findtext("r:sessionrecordingassoc/r:disassociate-time", namespaces=NS)
    assert stamp.fullmatch(stopped or ""), ET.tostring(root)
    # Both still name the streams they sent and received, each association ended then
    # (RFC 7865 §6.8).
    streams_left = [
        (
            a.find("r:send", NS) is not None,
            a.find("r:recv", NS) is not None,
            a.findtext("r:disassociate-time", namespaces=NS),
        )
        for a in root.findall("r:participantstreamassoc", NS)
    ]
    assert streams_left == [(True, True, t) for t in left], streams_left
    assert opened.find("r:sessionrecordingassoc/r:disassociate-time", NS) is None

    if answers:
        await trio.sleep(1)
        await srs.respond(final, 200, body=srs_answer(), content_type="application/sdp")
        await srs.next_request("ACK", timeout=5)
    bye = await srs.next_request("BYE", timeout=10)
    assert bye.request.call_id == call_id
    waited = trio.current_time() - sent_at
    if answers:
        assert 1.0 <= waited <= 1.5
    else:
        assert 5.0 <= waited <= 5.5  # bye_timeout for the snapshot, then the BYE


async def test_the_final_snapshot_says_when_the_call_stopped_before_a_bye_without_a_body(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 7865 §6.3: the communication session's start-time in every snapshot, its stop-time
    (the call's end) in the final one, sent in a re-INVITE before the BYE (RFC 7866 §9), the
    BYE itself without a body."""
    monkeypatch.setattr(siprec_plugin, "time", VirtualWallClock())
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, _, call_id = await recorded_call(env, srs)
    opened = metadata_of(srs.requests("INVITE")[0].body)
    session = opened.find("r:session", NS)
    assert session is not None
    started = stamp_of(session.findtext("r:start-time", namespaces=NS))
    assert session.find("r:stop-time", NS) is None  # the call goes on
    assert abs(started - (1_700_000_000 + trio.current_time())) <= 1  # at the answer

    await trio.sleep(95)  # 95 s of conversation
    await call.bye()  # type: ignore[attr-defined]
    ended_at = 1_700_000_000 + trio.current_time()
    final = await srs.next_request("INVITE", timeout=5)
    assert final.request.call_id == call_id
    assert srs.requests("BYE") == []  # the metadata goes first
    root = metadata_of(final.request.body)
    session = root.find("r:session", NS)
    assert session is not None
    # The schema's order (RFC 7865 §11): sipSessionID, start-time, stop-time.
    assert [child.tag.split("}")[1] for child in session] == [
        "sipSessionID",
        "start-time",
        "stop-time",
    ]
    assert stamp_of(session.findtext("r:start-time", namespaces=NS)) == started
    stopped = stamp_of(session.findtext("r:stop-time", namespaces=NS))
    assert 95 <= stopped - started <= 96 and abs(stopped - ended_at) <= 1
    # The recording and every participant ended then too.
    recording = root.find("r:sessionrecordingassoc", NS)
    assert recording is not None
    assert stamp_of(recording.findtext("r:disassociate-time", namespaces=NS)) == stopped
    assert [
        stamp_of(a.findtext("r:disassociate-time", namespaces=NS))
        for a in root.findall("r:participantsessionassoc", NS)
    ] == [stopped, stopped]
    assert [
        stamp_of(a.findtext("r:disassociate-time", namespaces=NS))
        for a in root.findall("r:participantstreamassoc", NS)
    ] == [stopped, stopped]
    await srs.respond(final, 200, body=srs_answer(), content_type="application/sdp")
    bye = await srs.next_request("BYE", timeout=10)
    assert bye.request.call_id == call_id
    assert bye.request.body == b"" and bye.request.headers.get("Content-Type") is None


async def test_without_final_metadata_the_call_end_sends_the_bye_alone(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(), final_metadata=False
    )
    call, _, call_id = await recorded_call(env, srs)
    await call.bye()  # type: ignore[attr-defined]
    bye = await srs.next_request("BYE", timeout=5)
    assert bye.request.call_id == call_id
    assert len(srs.requests("INVITE")) == 1
