"""The ``siprec`` sink's first recording INVITE of a call with more recorded streams than a
recording session offers (``MAX_RECORDED_LINES``, 32 m= lines: two per stream), in virtual time,
the core's sessions host a stand-in that answers every offer: the first 16 streams are offered,
each one past them is not recorded, a WARNING naming the call and the stream and counted
(``too_many_lines``), as for streams the call adds past the cap. The core reads at most 16 m=
lines of a phone's SDP, so a call cannot have more recorded streams through SIP today: the sink
is driven directly. Also the first INVITE when no local port can be had for a stream's copies
(EMFILE): that stream's lines at port 0, a WARNING, counted (``no_port``), the rest recorded;
with none for any stream, no INVITE and a WARNING."""

from __future__ import annotations

import errno
import logging

import pytest
import trio

from gateway.core.interfaces import TappedCall, TappedMedia
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps.siprec import (
    MAX_RECORDED_LINES,
    SiprecClient,
    SiprecConfig,
    SiprecSink,
    srs_sdp,
)


class _Session:
    """A recording session the SRS answered: each line at port 9 (nothing is sent)."""

    def __init__(self, offer: bytes) -> None:
        self.on_request = None
        self.on_ack_answer = None
        self.answer_type = "application/sdp"
        self.answer_body = _answer(offer)
        self.ended = trio.Event()
        self.retry_after = None
        self.timer = None
        self.allows_update = False
        self.call_id = "recording-1"
        self.updates: list[bytes] = []

    async def update(
        self, body: bytes, content_type: str, *, secure_only: bool = False, sdp: bytes = b""
    ) -> int:
        self.updates.append(sdp)
        self.answer_body = _answer(sdp)
        return 200

    async def close(self) -> None:
        self.ended.set()


def _answer(offer: bytes) -> bytes:
    lines = ["v=0", "o=srs 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for media in parse_sdp_untrusted(offer, max_media=MAX_RECORDED_LINES).media:
        label = media.attributes.get("label")
        lines += [f"m=audio {9 if media.port else 0} RTP/AVP 0", f"a=label:{label}"]
    return ("\r\n".join(lines) + "\r\n").encode()


class _Host:
    def __init__(self) -> None:
        self.invites: list[tuple[str | None, bytes]] = []
        self.sessions: list[_Session] = []

    async def open_session(
        self, target: str, *, body: bytes, content_type: str, sdp: bytes = b"", **_: object
    ) -> _Session:
        self.invites.append((content_type, body))
        session = _Session(sdp)
        self.sessions.append(session)
        return session


async def test_a_call_with_more_streams_than_the_line_cap_offers_the_first_and_says_which_not(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.plugins.taps.siprec")
    media = tuple(TappedMedia(index, "audio", ("0",), ("0 PCMU/8000",)) for index in range(18))
    host = _Host()
    call = TappedCall(
        "call-1;tag-1",
        "sip:a@gw",
        "sip:b@gw",
        "trunk",
        "carrier",
        "account",
        "b",
        media,
        sessions=host,  # type: ignore[arg-type]
    )
    config = SiprecConfig(
        srs="sip:srs@127.0.0.1:5060", all_calls=True, session_expires=0, final_metadata=False
    )
    client = SiprecClient(config)
    sink = client.sink_for_call(call)
    assert isinstance(sink, SiprecSink)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        with trio.fail_after(5):
            while not host.invites:
                await trio.sleep(0.1)
        sink.close()
    ((content_type, body),) = host.invites
    offer = parse_sdp_untrusted(srs_sdp(content_type, body), max_media=MAX_RECORDED_LINES)
    assert len(offer.media) == MAX_RECORDED_LINES == 32
    assert [m.attributes.get("label") for m in offer.media] == [str(n) for n in range(1, 33)]
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        f"SIPREC: call call-1;tag-1: stream {index} (audio) is not recorded: the recording "
        "session has 32 m= lines, the most it is given"
        for index in (16, 17)
    ]
    assert client.streams_unrecorded == {"no_port": 0, "too_many_lines": 2}


async def _first_invite(
    media: tuple[TappedMedia, ...], binds: int, caplog: pytest.LogCaptureFixture
) -> tuple[_Host, SiprecClient, list[str]]:
    """Run a sink for a call of ``media`` whose sockets fail (EMFILE) after ``binds`` of them;
    the host its INVITEs went to, the tap and the WARNING lines."""
    host = _Host()
    call = TappedCall(
        "call-1;tag-1",
        "sip:a@gw",
        "sip:b@gw",
        "trunk",
        "carrier",
        "account",
        "b",
        media,
        sessions=host,  # type: ignore[arg-type]
    )
    config = SiprecConfig(
        srs="sip:srs@127.0.0.1:5060", all_calls=True, session_expires=0, final_metadata=False
    )
    client = SiprecClient(config)
    sink = client.sink_for_call(call)
    assert isinstance(sink, SiprecSink)
    bind, calls = sink._bind, [0]

    async def bind_then_fail() -> object:
        calls[0] += 1
        if calls[0] > binds:
            raise OSError(errno.EMFILE, "Too many open files")
        return await bind()

    sink._bind = bind_then_fail  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sink.run)
        await trio.sleep(5)
        sink.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    return host, client, warnings


async def test_a_stream_no_port_can_be_had_for_at_the_answer_goes_at_port_0_the_rest_recorded(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.plugins.taps.siprec")
    media = tuple(TappedMedia(index, "audio", ("0",), ("0 PCMU/8000",)) for index in range(2))
    host, client, warnings = await _first_invite(media, 2, caplog)
    ((content_type, body),) = host.invites
    offer = parse_sdp_untrusted(srs_sdp(content_type, body))
    assert [(m.attributes.get("label"), m.port != 0) for m in offer.media] == [
        ("1", True),
        ("2", True),
        ("3", False),
        ("4", False),
    ]
    assert warnings == [
        "SIPREC: call call-1;tag-1: stream 1 (audio) is not recorded: no local port for its "
        "copies (Too many open files); labels 3, 4 at port 0"
    ]
    assert client.streams_unrecorded == {"no_port": 1, "too_many_lines": 0}


async def test_a_call_no_port_can_be_had_for_at_all_is_not_recorded_with_a_warning(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.plugins.taps.siprec")
    media = (TappedMedia(0, "audio", ("0",), ("0 PCMU/8000",)),)
    host, client, warnings = await _first_invite(media, 0, caplog)
    assert host.invites == []  # nothing to offer the SRS
    assert warnings == [
        "SIPREC: call call-1;tag-1: stream 0 (audio) is not recorded: no local port for its "
        "copies (Too many open files); labels 1, 2 at port 0",
        "SIPREC: call call-1;tag-1 not recorded: no local port for any of its streams",
    ]
    assert client.streams_unrecorded == {"no_port": 1, "too_many_lines": 0}
