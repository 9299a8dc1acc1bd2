"""MediaSession across a change of its DTMF plan (gateway/core/media/session.py ``_set_dtmf``,
docs/architecture.md "DTMF interworking"): what was in progress is finished before the plan
goes. An RFC 4733 event the old plan was reading is reported once, with the duration known
(RFC 4733 §2.5.2: the receiver ends an event it will hear no more of), while the session
still names the old plan; a plan made by a re-key answer that leaves telephone-event out marks
the caller's direction as relayed until now (an event in progress goes on to its end); the end
of an interworking is logged as its start is. A real relay binds its ports on 127.0.0.1 in
RANGE; no packet is sent. Float time: the session's clock is a list the test moves."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest

from gateway.core.config import PortRange
from gateway.core.media.dtmf import Digit, event_payload
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay
from gateway.core.media.session import DtmfPlan, MediaSession
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.port_blocks import ModuleBlock
from tests.unit.media.session_env import stream_of

RANGE = ModuleBlock(100, parse=PortRange.parse)
CODECS = {
    "0": "a=rtpmap:0 PCMU/8000",
    "8": "a=rtpmap:8 PCMA/8000",
    "101": "a=rtpmap:101 telephone-event/8000",
}
# RTP header (RFC 3550 §5.1): V=2, PT 101, sequence 1, timestamp 1000, SSRC 0xaa.
EVENT_HEADER = bytes.fromhex("80650001000003e8000000aa")
ENDED = "DTMF interworking ended, leg a RFC 4733 (payload type 101/8000), leg b SIP INFO"


def sdp(port: int, formats: tuple[str, ...], *, version: int = 1) -> SessionDescription:
    text = [
        "v=0",
        f"o=- 7 {version} IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(formats)}",
        *(CODECS[f] for f in formats),
        "",
    ]
    return parse_sdp_untrusted("\r\n".join(text).encode())


@pytest.fixture
def now() -> list[float]:
    return [100.0]


@pytest.fixture
def session(now: list[float]) -> Iterator[MediaSession]:
    relay = MediaRelay(PortAllocator("127.0.0.1", RANGE.get()), clock=lambda: 0.0)
    session = MediaSession(
        relay,
        media_address="127.0.0.1",
        session_id_source=itertools.count(1).__next__,
        dtmf_interworking=True,
        clock=lambda: now[0],
    )
    yield session
    session.close()
    relay.close()
    assert relay.allocator.in_use == 0


def interworking(session: MediaSession) -> DtmfPlan:
    """The caller (A) has telephone-event 101, the callee (B) answers without: A's events go
    to B as INFO."""
    session.offer_from("a", sdp(20000, ("0", "101")))
    session.answer_from("b", sdp(30000, ("0",)))
    session.settle()
    plan = session.dtmf
    assert plan == DtmfPlan(0, "a", "b", 101, 8000)
    return plan


def test_an_event_being_read_when_the_plan_ends_is_reported_once_with_its_duration(
    session: MediaSession, now: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    """A's digit 9 began (two packets, 100 ms) when B re-offers with telephone-event: both
    legs have it, the plan ends. Its end packets would now go to B as they come, never to the
    detector: the digit is reported then, once, to the INFO leg of the plan it was heard
    under (the session still names it while the handler runs), not lost."""
    plan = interworking(session)
    heard: list[tuple[str, Digit, DtmfPlan | None]] = []
    session.on_dtmf_digit = lambda side, digit: heard.append((side, digit, session.dtmf))
    take = stream_of(session).a_to_b.dtmf
    assert take is not None and take.on_event is not None
    take.on_event(EVENT_HEADER + event_payload(9, end=False, duration=400))
    now[0] += 0.125
    take.on_event(EVENT_HEADER + event_payload(9, end=False, duration=800))
    assert heard == []
    caplog.set_level(logging.INFO, logger="gateway")
    session.offer_from("b", sdp(30000, ("0", "101"), version=2))
    session.answer_from("a", sdp(20000, ("0", "101"), version=2))
    session.settle()
    assert session.dtmf is None
    # The duration known (RFC 4733 §2.5.2.2's estimate): the first packet's 50 ms and the
    # 125 ms its packets spanned; more than the longest duration a packet gave (100 ms).
    assert heard == [("a", Digit("9", 175), plan)]
    assert session.dtmf_timer() is None  # nothing left to time out
    take.on_event(EVENT_HEADER + event_payload(9, end=True, duration=960))  # a late copy
    assert len(heard) == 1
    messages = [record.getMessage() for record in caplog.records]
    assert "m= line 1: DTMF event withheld from leg a ended as its interworking changed" in messages
    assert f"m= line 1: {ENDED}" in messages


def test_no_event_in_progress_reports_nothing_but_the_end_is_logged(
    session: MediaSession, caplog: pytest.LogCaptureFixture
) -> None:
    interworking(session)
    heard: list[tuple[str, Digit]] = []
    session.on_dtmf_digit = lambda side, digit: heard.append((side, digit))
    take = stream_of(session).a_to_b.dtmf
    assert take is not None and take.on_event is not None
    take.on_event(EVENT_HEADER + event_payload(2, end=True, duration=800))
    assert heard == [("a", Digit("2", 100))]
    caplog.set_level(logging.INFO, logger="gateway")
    session.offer_from("b", sdp(30000, ("0", "101"), version=2))
    session.answer_from("a", sdp(20000, ("0", "101"), version=2))
    session.settle()
    assert heard == [("a", Digit("2", 100))]  # ended already: not again
    ended = [r for r in caplog.records if "DTMF interworking ended" in r.getMessage()]
    assert len(ended) == 1 and ended[0].levelno == logging.INFO


def test_a_plan_renewed_with_other_numbers_logs_no_end(
    session: MediaSession, caplog: pytest.LogCaptureFixture
) -> None:
    # The same legs on the same line, telephone-event renumbered (a re-offer): the new start
    # line says it; the interworking did not end.
    interworking(session)
    caplog.set_level(logging.INFO, logger="gateway")
    reoffer = parse_sdp_untrusted(
        b"v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 20000 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:96 telephone-event/8000\r\n"
    )
    session.offer_from("a", reoffer)
    session.answer_from("b", sdp(30000, ("0",), version=2))
    assert session.dtmf == DtmfPlan(0, "a", "b", 96, 8000)
    messages = [record.getMessage() for record in caplog.records]
    assert not any("DTMF interworking ended" in m for m in messages)
    assert any("DTMF interworking, leg a RFC 4733 (payload type 96/8000)" in m for m in messages)


def test_a_re_key_answer_leaving_telephone_event_out_marks_the_events_relayed_until_now(
    session: MediaSession,
) -> None:
    """Both legs had telephone-event: A's events went to B as they came. B's answer to our
    re-key leaves it out: A's direction is told so (an event in progress began towards B and
    goes on to its end, DtmfInterworking.relayed_until_now); the direction towards A injects
    and is not."""
    session.offer_from("a", sdp(20000, ("0", "8", "101")))
    session.answer_from("b", sdp(30000, ("0", "8", "101")))
    session.settle()
    assert session.dtmf is None
    session.repeat_offer("b")
    session.answer_to_repeated_offer("b", sdp(30000, ("0",), version=2))
    assert session.dtmf == DtmfPlan(0, "a", "b", 101, 8000)
    stream = stream_of(session)
    take, inject = stream.a_to_b.dtmf, stream.b_to_a.dtmf
    assert take is not None and take.relayed_until_now
    assert inject is not None and not inject.relayed_until_now


def test_a_plan_made_at_the_first_answer_relayed_nothing_before(session: MediaSession) -> None:
    interworking(session)
    take = stream_of(session).a_to_b.dtmf
    assert take is not None and not take.relayed_until_now


def test_a_re_invite_answered_without_telephone_event_marks_the_events_relayed_until_now(
    session: MediaSession,
) -> None:
    """Both legs had telephone-event; A re-offers with it and B answers without: the same as
    B's re-key answer leaving it out (A's event in progress began towards B)."""
    session.offer_from("a", sdp(20000, ("0", "101")))
    session.answer_from("b", sdp(30000, ("0", "101")))
    session.settle()
    assert session.dtmf is None
    session.offer_from("a", sdp(20000, ("0", "101"), version=2))
    session.answer_from("b", sdp(30000, ("0",), version=2))
    session.settle()
    assert session.dtmf == DtmfPlan(0, "a", "b", 101, 8000)
    take = stream_of(session).a_to_b.dtmf
    assert take is not None and take.relayed_until_now


@pytest.mark.parametrize("ended_before", [False, True])
def test_an_event_is_not_read_again_by_the_plan_that_replaces_its_own(
    session: MediaSession, ended_before: bool
) -> None:
    """A's digit 6 is reported (by its first end packet, or at the change as unfinished) when
    a re-offer renumbers telephone-event: a new plan on the same legs. The event's later
    packets that reach the new plan's detector (its other end copies, RFC 4733 §2.5.1.4;
    with media workers the copies taken under the old plan still in the channel) are of an
    event that ended: not a second 6 (before, the new detector read them as a new event
    whose start was lost, and the INFO leg got 66)."""
    interworking(session)
    heard: list[tuple[str, Digit]] = []
    session.on_dtmf_digit = lambda side, digit: heard.append((side, digit))
    take = stream_of(session).a_to_b.dtmf
    assert take is not None and take.on_event is not None
    end = EVENT_HEADER + event_payload(6, end=True, duration=800)
    if ended_before:
        take.on_event(end)
    else:
        take.on_event(EVENT_HEADER + event_payload(6, end=False, duration=400))
    reoffer = parse_sdp_untrusted(
        b"v=0\r\no=- 7 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 20000 RTP/AVP 0 96\r\na=rtpmap:0 PCMU/8000\r\n"
        b"a=rtpmap:96 telephone-event/8000\r\n"
    )
    session.offer_from("a", reoffer)
    session.answer_from("b", sdp(30000, ("0",), version=2))
    assert session.dtmf == DtmfPlan(0, "a", "b", 96, 8000)
    assert [digit.digit for _, digit in heard] == ["6"]
    renewed = stream_of(session).a_to_b.dtmf
    assert renewed is not None and renewed is not take and renewed.on_event is not None
    for _ in range(2):
        renewed.on_event(end)
    assert [digit.digit for _, digit in heard] == ["6"]
    # The sender's next event (a later timestamp) is read as ever.
    later = bytearray(EVENT_HEADER)
    later[4:8] = (2000).to_bytes(4, "big")
    renewed.on_event(bytes(later) + event_payload(1, end=True, duration=800))
    assert [digit.digit for _, digit in heard] == ["6", "1"]
