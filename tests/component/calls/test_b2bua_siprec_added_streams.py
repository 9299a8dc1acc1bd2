"""SIPREC and the streams a call adds or removes after its answer (the ``siprec`` tap, RFC 7866
§8.1.1, RFC 3264 §8.1, §8.2), the recorder (SRS) a SIP agent on the in-memory network, the
call's RTP and the copies on real 127.0.0.1 sockets, in virtual time:

- a caller's re-INVITE adding a video stream (``record_video = true``), or a second audio
  stream (recorded whatever the table says), re-INVITEs the SRS with
  two new sendonly m= lines after the first two, new labels (3, 4), the metadata with the two
  new stream elements and who sends and receives them; the video copies reach the SRS's ports
  for those labels once it answered;
- the call removing the video again (port 0) re-INVITEs the SRS with those lines at port 0, the
  metadata still naming the streams but no party sending or receiving them;
- the call adding the video again on the line it had removed gets two more m= lines with
  new labels (5, 6) and stream ids, the removed ones staying at port 0 in their places (a label
  names one stream for the session's life, RFC 7866 §8.1.1);
- a stream the call adds while the SRS is being replaced (it answered 481, the new session's
  first INVITE was refused, the next round waits) is in the next round's INVITE;
- a paused recording whose SRS answers 481 opens its new session paused (every line
  a=inactive) and the resume re-INVITEs that session sendonly;
- a call that ends paused: its final snapshot says every stream inactive, and it leaves the
  gauge of paused recordings (``voipgw_recordings_paused``) as it goes;
- without ``record_video`` an added video stream is not recorded, and the log says so.
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path

import pytest
import trio

import gateway.plugins.taps.siprec as siprec_plugin
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.message import Request
from gateway.plugins.taps.siprec import srs_sdp
from gateway.testing.sip_agent import AutoAnswer, Received, SipAgent
from tests.component.calls.b2bua_env import B2bua, next_within
from tests.component.calls.dtls_phone import bind
from tests.component.calls.siprec_added_calls import audio_video, callee_takes_two_streams
from tests.component.calls.siprec_calls import (
    CALLEE_PORT,
    CALLER_PORT,
    NS,
    SRS_PORT,
    metadata_of,
    rtp,
    siprec_env,
    srs_answer,
)
from tests.component.calls.siprec_recorded_calls import HELD, directions, recorded_call


def srs_answer_of(update: Received, *, removed_at_a_port: bool = False) -> bytes:
    """The SRS's answer to our re-INVITE's offer: every line it was offered at a port (labels
    1, 2, 3... at SRS_PORT, +2, +4 ...) recvonly, the lines at port 0 declined (or, with
    ``removed_at_a_port``, a faulty SRS's: those too at their label's port)."""
    return srs_answer_of_request(update.request, removed_at_a_port=removed_at_a_port)


def srs_answer_of_request(request: Request, *, removed_at_a_port: bool = False) -> bytes:
    """:func:`srs_answer_of` for an INVITE's offer."""
    offer = srs_sdp(request.headers.get("Content-Type"), request.body)
    lines = ["v=0", "o=srs 1 2 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for media in parse_sdp_untrusted(offer).media:
        label = media.attributes.get("label") or ""
        port = SRS_PORT + 2 * (int(label) - 1)
        if media.port == 0 and not removed_at_a_port:
            port = 0
        lines += [f"m={media.media} {port} RTP/AVP {media.formats[0]}", f"a=label:{label}"]
        lines.append("a=recvonly" if port else "a=inactive")
    return ("\r\n".join(lines) + "\r\n").encode()


def offered(update: Received) -> list[tuple[str, str, int, str]]:
    """(media, label, port, direction) of each m= line of a re-INVITE's SDP offer."""
    return offered_in(update.request)


def offered_in(request: Request) -> list[tuple[str, str, int, str]]:
    """(media, label, port, direction) of each m= line of an INVITE's SDP offer."""
    sdp = parse_sdp_untrusted(srs_sdp(request.headers.get("Content-Type"), request.body))
    return [
        (m.media, m.attributes.get("label") or "", m.port, sdp.effective_direction(m).value)
        for m in sdp.media
    ]


async def add_video(
    env: B2bua, srs: SipAgent, second: str = "video"
) -> tuple[object, tuple[str, int], Received]:
    """A recorded call whose caller then adds video (or a ``second`` audio stream): the call,
    where the caller sends the new stream, and the SRS's re-INVITE for it (not answered yet)."""
    call, _, _ = await recorded_call(env, srs)
    await callee_takes_two_streams(env, CALLEE_PORT, second)
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, CALLER_PORT + 2, version=2, second=second)
    )
    assert answer.status == 200
    video_port = parse_sdp_untrusted(answer.body).media[1].port
    assert video_port != 0
    update = await srs.next_request("INVITE", timeout=10)
    return call, ("127.0.0.1", video_port), update


@pytest.mark.parametrize("second", ["video", "audio"])
async def test_a_stream_the_call_adds_is_offered_to_the_srs_and_its_copies_sent(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    second: str,
) -> None:
    # A second audio stream is recorded whatever the table says; video with record_video.
    table = {"record_video": True} if second == "video" else {}
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(), **table)
    call, to_caller_video, update = await add_video(env, srs, second)
    opened = metadata_of(srs.requests("INVITE")[0].body)
    lines = offered(update)
    assert [(kind, label, direction) for kind, label, _, direction in lines] == [
        ("audio", "1", "sendonly"),
        ("audio", "2", "sendonly"),
        (second, "3", "sendonly"),
        (second, "4", "sendonly"),
    ]
    assert len({port for _, _, port, _ in lines}) == 4  # a socket of its own each
    # RFC 7865: the two new streams by their labels, the old ones' ids kept, and each party
    # sending one of the new ones and receiving the other.
    root = metadata_of(update.request.body)
    before = {
        s.findtext("r:label", namespaces=NS): s.get("stream_id")
        for s in opened.iterfind("r:stream", NS)
    }
    streams = {
        s.findtext("r:label", namespaces=NS): s.get("stream_id")
        for s in root.iterfind("r:stream", NS)
    }
    assert set(streams) == {"1", "2", "3", "4"}
    assert {label: streams[label] for label in ("1", "2")} == before
    sends = {
        a.get("participant_id"): sorted(e.text or "" for e in a.iterfind("r:send", NS))
        for a in root.iterfind("r:participantstreamassoc", NS)
    }
    caller_id, callee_id = (p.get("participant_id") for p in root.iterfind("r:participant", NS))
    assert sends[caller_id] == sorted([streams["1"], streams["3"]])
    assert sends[callee_id] == sorted([streams["2"], streams["4"]])

    with await bind(CALLER_PORT + 2) as caller_video, await bind(SRS_PORT + 4) as srs_video:
        # Before the SRS answers, the new stream has nowhere to go: nothing reaches it.
        await caller_video.sendto(rtp(1, 0x33, 0x3333), to_caller_video)
        with trio.move_on_after(1) as waited:
            await srs_video.recvfrom(2048)
        assert waited.cancelled_caught
        await srs.respond(update, 200, body=srs_answer_of(update), content_type="application/sdp")
        await srs.next_request("ACK", timeout=5)
        got = []
        for seq in range(2, 7):
            await caller_video.sendto(rtp(seq, 0x33, 0x3333), to_caller_video)
            with trio.move_on_after(1):
                got.append((await srs_video.recvfrom(2048))[0])
    assert got == [rtp(seq, 0x33, 0x3333) for seq in range(2, 7)]
    await call.bye()  # type: ignore[attr-defined]
    final = await srs.next_request("INVITE", timeout=10)  # the final snapshot: four lines
    assert [direction for *_, direction in offered(final)] == ["inactive"] * 4


async def test_a_stream_the_call_removes_goes_to_port_0_and_out_of_the_parties_streams(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(), record_video=True
    )
    call, _, update = await add_video(env, srs)
    await srs.respond(update, 200, body=srs_answer_of(update), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    added = metadata_of(update.request.body)

    # RFC 3264 §8.2: the caller removes the video (port 0).
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, 0, version=3)
    )
    assert answer.status == 200
    removed = await srs.next_request("INVITE", timeout=10)
    lines = offered(removed)
    assert [(kind, label, port == 0) for kind, label, port, _ in lines] == [
        ("audio", "1", False),
        ("audio", "2", False),
        ("video", "3", True),
        ("video", "4", True),
    ]
    root = metadata_of(removed.request.body)
    ids = {
        s.findtext("r:label", namespaces=NS): s.get("stream_id")
        for s in root.iterfind("r:stream", NS)
    }
    assert ids == {
        s.findtext("r:label", namespaces=NS): s.get("stream_id")
        for s in added.iterfind("r:stream", NS)
    }  # the stream elements stay, same ids
    named = {
        e.text
        for a in root.iterfind("r:participantstreamassoc", NS)
        for e in [*a.iterfind("r:send", NS), *a.iterfind("r:recv", NS)]
    }
    assert named == {ids["1"], ids["2"]}  # no one sends or receives the video any more
    await srs.respond(removed, 200, body=srs_answer_of(removed), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    assert await next_within(srs, "INVITE", 10) is None
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)


async def test_without_record_video_an_added_video_stream_is_logged_as_not_recorded(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.plugins.taps.siprec")
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, _, update = await add_video(env, srs)
    assert [(kind, label) for kind, label, _, _ in offered(update)] == [
        ("audio", "1"),
        ("audio", "2"),
    ]
    gateway_call_id = call.call_id  # type: ignore[attr-defined]
    assert any(
        gateway_call_id in r.getMessage()
        and "stream 1 (video) is not recorded (record_video = false)" in r.getMessage()
        for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


def stream_ids(body: bytes) -> dict[str, str | None]:
    """The metadata's stream ids by label."""
    root = metadata_of(body)
    return {
        s.findtext("r:label", namespaces=NS) or "": s.get("stream_id")
        for s in root.iterfind("r:stream", NS)
    }


async def test_a_stream_the_call_adds_again_after_removing_it_takes_new_labels(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(), record_video=True
    )
    call, _, update = await add_video(env, srs)
    await srs.respond(update, 200, body=srs_answer_of(update), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, 0, version=3)
    )
    assert answer.status == 200
    removed = await srs.next_request("INVITE", timeout=10)
    await srs.respond(removed, 200, body=srs_answer_of(removed), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)

    # The caller uses the port-0 line again (RFC 3264 §8.1): a new stream for the SRS.
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, CALLER_PORT + 2, version=4)
    )
    assert answer.status == 200
    again = await srs.next_request("INVITE", timeout=10)
    assert [(kind, label, port == 0, d) for kind, label, port, d in offered(again)] == [
        ("audio", "1", False, "sendonly"),
        ("audio", "2", False, "sendonly"),
        ("video", "3", True, "inactive"),  # in their places, at port 0 (RFC 3264 §8)
        ("video", "4", True, "inactive"),
        ("video", "5", False, "sendonly"),  # never 3 and 4 again (RFC 7866 §8.1.1)
        ("video", "6", False, "sendonly"),
    ]
    before, now = stream_ids(removed.request.body), stream_ids(again.request.body)
    assert {label: now[label] for label in before} == before
    assert len(set(now.values())) == 6  # the new streams' ids are new
    await srs.respond(again, 200, body=srs_answer_of(again), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)


async def test_a_stream_added_while_the_srs_is_replaced_is_in_the_new_sessions_invite(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(), record_video=True
    )
    call, _, _ = await recorded_call(env, srs)
    assert (await call.reinvite(HELD)).status == 200  # type: ignore[attr-defined]
    await srs.respond(await srs.next_request("INVITE", timeout=10), 481)
    await (await srs.next_call(timeout=5)).answer(503)  # the next round waits
    await callee_takes_two_streams(env, CALLEE_PORT)
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, CALLER_PORT + 2, version=4)
    )
    assert answer.status == 200
    taken = await srs.next_call(timeout=10)  # the next round
    assert [(kind, label, d) for kind, label, _, d in offered_in(taken.invite)] == [
        ("audio", "1", "sendonly"),
        ("audio", "2", "sendonly"),
        ("video", "3", "sendonly"),
        ("video", "4", "sendonly"),
    ]
    assert set(stream_ids(taken.invite.body)) == {"1", "2", "3", "4"}
    await taken.answer(200, sdp=srs_answer_of_request(taken.invite))
    await srs.next_request("ACK", timeout=5)
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)


async def test_a_paused_recording_whose_srs_answers_481_opens_its_new_session_paused(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, _, _ = await recorded_call(env, srs)
    manager = env.gateway.calls
    assert manager is not None
    (gateway_call,) = manager.calls
    manager.pause_recording(gateway_call.id, True, by="agent 7")
    paused = await srs.next_request("INVITE", timeout=10)
    assert directions(paused) == ["inactive", "inactive"]
    await srs.respond(paused, 481)  # the SRS restarted meanwhile
    again = await srs.next_call(timeout=5)
    assert directions(again.incoming) == ["inactive", "inactive"]  # type: ignore[arg-type]
    await again.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)
    assert await next_within(srs, "INVITE", 5) is None  # paused as it was: nothing to say

    manager.pause_recording(gateway_call.id, False, by="agent 7")
    resumed = await srs.next_request("INVITE", timeout=10)
    assert resumed.request.call_id == again.invite.call_id
    assert directions(resumed) == ["sendonly", "sendonly"]
    await srs.respond(resumed, 200, body=srs_answer(), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)


async def test_a_stream_added_again_before_the_srs_took_its_removal_sends_nothing_early(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The SRS refuses the removal's re-INVITE (491) and the caller adds the video again on
    # the same line meanwhile: until the SRS answers the retry, which offers labels 5 and 6,
    # no copy of the new stream goes to where the removed one's (label 3) went.
    env, srs = await siprec_env(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(), record_video=True
    )
    call, _, update = await add_video(env, srs)
    await srs.respond(update, 200, body=srs_answer_of(update), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, 0, version=3)
    )
    assert answer.status == 200
    await srs.respond(await srs.next_request("INVITE", timeout=10), 491)
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, CALLER_PORT + 2, version=4)
    )
    assert answer.status == 200
    to_caller_video = ("127.0.0.1", parse_sdp_untrusted(answer.body).media[1].port)
    retry = await srs.next_request("INVITE", timeout=10)
    assert [label for _, label, _, _ in offered(retry)] == ["1", "2", "3", "4", "5", "6"]
    with await bind(CALLER_PORT + 2) as caller_video, await bind(SRS_PORT + 4) as removed_port:
        await caller_video.sendto(rtp(1, 0x33, 0x3333), to_caller_video)
        with trio.move_on_after(1) as waited:
            await removed_port.recvfrom(2048)
        assert waited.cancelled_caught  # nothing to the removed stream's address
    await srs.respond(retry, 200, body=srs_answer_of(retry), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)


async def test_a_call_that_ends_paused_leaves_the_paused_gauge(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call, _, _ = await recorded_call(env, srs)
    manager = env.gateway.calls
    assert manager is not None
    (gateway_call,) = manager.calls
    manager.pause_recording(gateway_call.id, True, by="agent 7")
    paused = await srs.next_request("INVITE", timeout=10)
    await srs.respond(paused, 200, body=srs_answer(), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    assert manager.recordings_paused == {gateway_call}
    await call.bye()  # type: ignore[attr-defined]
    final = await srs.next_request("INVITE", timeout=10)  # the final snapshot
    assert directions(final) == ["inactive", "inactive"]
    assert manager.recordings_paused == set()  # the gauge: no live call paused
    assert manager.recording_pauses == {
        "pause": 1,
        "resume": 0,
        "preference_pause": 0,
        "preference_resume": 0,
    }


async def test_an_srs_answering_a_removed_line_at_a_port_is_not_sent_the_line_s_new_stream(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # RFC 3264 §8.2: a stream offered at port 0 stays removed whatever the SRS answers. Here
    # the SRS answers the removal with labels 3 and 4 at their old ports; the caller then adds
    # video again on that line: until the SRS answers the labels 5 and 6 of the new stream,
    # none of its copies may go to where the removed one's went.
    env, srs = await siprec_env(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(), record_video=True
    )
    call, _, update = await add_video(env, srs)
    await srs.respond(update, 200, body=srs_answer_of(update), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, 0, version=3)
    )
    assert answer.status == 200
    removed = await srs.next_request("INVITE", timeout=10)
    body = srs_answer_of(removed, removed_at_a_port=True)
    assert [m.port != 0 for m in parse_sdp_untrusted(body).media] == [True] * 4
    await srs.respond(removed, 200, body=body, content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, CALLER_PORT + 2, version=4)
    )
    assert answer.status == 200
    to_caller_video = ("127.0.0.1", parse_sdp_untrusted(answer.body).media[1].port)
    again = await srs.next_request("INVITE", timeout=10)
    assert [label for _, label, _, _ in offered(again)] == ["1", "2", "3", "4", "5", "6"]
    with await bind(CALLER_PORT + 2) as caller_video, await bind(SRS_PORT + 4) as removed_port:
        await caller_video.sendto(rtp(1, 0x33, 0x3333), to_caller_video)
        with trio.move_on_after(1) as waited:
            await removed_port.recvfrom(2048)
        assert waited.cancelled_caught  # nothing to the removed stream's address
    await srs.respond(again, 200, body=srs_answer_of(again), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)


async def test_a_stream_no_port_can_be_had_for_goes_unrecorded_and_the_rest_is_recorded(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The gateway is out of file descriptors when the caller adds video: the video's two
    # lines go to the SRS at port 0, with a warning and counted, and the audio is recorded on.
    caplog.set_level(logging.WARNING, logger="gateway.plugins.taps.siprec")
    env, srs = await siprec_env(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(), record_video=True
    )
    call, _, _ = await recorded_call(env, srs)

    async def no_port(self: object) -> object:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(siprec_plugin.SiprecSink, "_bind", no_port)
    await callee_takes_two_streams(env, CALLEE_PORT)
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, CALLER_PORT + 2, version=2)
    )
    assert answer.status == 200
    to_caller_side = ("127.0.0.1", parse_sdp_untrusted(answer.body).media[0].port)
    update = await srs.next_request("INVITE", timeout=10)
    assert [(kind, label, port == 0, d) for kind, label, port, d in offered(update)] == [
        ("audio", "1", False, "sendonly"),
        ("audio", "2", False, "sendonly"),
        ("video", "3", True, "inactive"),
        ("video", "4", True, "inactive"),
    ]
    assert set(stream_ids(update.request.body)) == {"1", "2", "3", "4"}  # named all the same
    await srs.respond(update, 200, body=srs_answer_of(update), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"SIPREC: call {call.call_id};")  # type: ignore[attr-defined]
    assert warning.endswith(
        ": stream 1 (video) the call added is not recorded: no local port for its copies (Too "
        "many open files); offered to the SRS at port 0 as labels 3, 4"
    )
    (tap,) = [tap for _, tap in env.gateway.plugins.media_taps.items()]
    assert tap.streams_unrecorded == {"no_port": 1, "too_many_lines": 0}  # type: ignore[attr-defined]
    with await bind(CALLER_PORT) as caller, await bind(SRS_PORT) as srs_caller:
        for seq in range(3):
            await caller.sendto(rtp(seq, 0x00, 0x1111), to_caller_side)
        got = []
        with trio.move_on_after(1):
            while len(got) < 3:
                got.append((await srs_caller.recvfrom(2048))[0])
    assert got == [rtp(seq, 0x00, 0x1111) for seq in range(3)]  # the audio recorded on
    # The next update (a pause here) has the video still at port 0: not tried again.
    manager = env.gateway.calls
    assert manager is not None
    (gateway_call,) = manager.calls
    manager.pause_recording(gateway_call.id, True, by="agent 7")
    held = await srs.next_request("INVITE", timeout=10)
    assert [(label, port == 0) for _, label, port, _ in offered(held)] == [
        ("1", False),
        ("2", False),
        ("3", True),
        ("4", True),
    ]
    await srs.respond(held, 200, body=srs_answer_of(held), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)


async def test_a_stream_added_again_after_one_no_port_was_had_for_is_tried_again(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The video the caller added had no port (EMFILE, its lines at port 0); the caller
    # removes it and, the descriptors back, adds video again on that line: a new stream,
    # new labels, bound and recorded (the "not tried again" lasts while the call has it).
    env, srs = await siprec_env(
        nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer(), record_video=True
    )
    call, _, _ = await recorded_call(env, srs)
    bind_port = siprec_plugin.SiprecSink._bind

    async def no_port(self: object) -> object:
        raise OSError(errno.EMFILE, "Too many open files")

    monkeypatch.setattr(siprec_plugin.SiprecSink, "_bind", no_port)
    await callee_takes_two_streams(env, CALLEE_PORT)
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, CALLER_PORT + 2, version=2)
    )
    assert answer.status == 200
    update = await srs.next_request("INVITE", timeout=10)
    assert [(label, port == 0) for _, label, port, _ in offered(update)][2:] == [
        ("3", True),
        ("4", True),
    ]
    await srs.respond(update, 200, body=srs_answer_of(update), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    monkeypatch.setattr(siprec_plugin.SiprecSink, "_bind", bind_port)
    answer = await call.reinvite(audio_video(CALLER_PORT, 0, version=3))  # type: ignore[attr-defined]
    assert answer.status == 200
    removed = await srs.next_request("INVITE", timeout=10)
    await srs.respond(removed, 200, body=srs_answer_of(removed), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    answer = await call.reinvite(  # type: ignore[attr-defined]
        audio_video(CALLER_PORT, CALLER_PORT + 2, version=4)
    )
    assert answer.status == 200
    to_caller_video = ("127.0.0.1", parse_sdp_untrusted(answer.body).media[1].port)
    again = await srs.next_request("INVITE", timeout=10)
    assert [(label, port == 0, d) for _, label, port, d in offered(again)] == [
        ("1", False, "sendonly"),
        ("2", False, "sendonly"),
        ("3", True, "inactive"),
        ("4", True, "inactive"),
        ("5", False, "sendonly"),
        ("6", False, "sendonly"),
    ]
    await srs.respond(again, 200, body=srs_answer_of(again), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    await trio.sleep(1)  # virtual time: the answer taken
    with await bind(CALLER_PORT + 2) as caller_video, await bind(SRS_PORT + 8) as srs_video:
        await caller_video.sendto(rtp(1, 0x33, 0x3333), to_caller_video)
        with trio.fail_after(2):
            assert (await srs_video.recvfrom(2048))[0] == rtp(1, 0x33, 0x3333)
    (tap,) = [tap for _, tap in env.gateway.plugins.media_taps.items()]
    assert tap.streams_unrecorded == {"no_port": 1, "too_many_lines": 0}  # type: ignore[attr-defined]
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("INVITE", timeout=10)
