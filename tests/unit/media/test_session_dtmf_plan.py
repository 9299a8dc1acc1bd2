"""MediaSession decides DTMF interworking at each answer (gateway/core/media/session.py,
docs/architecture.md "DTMF interworking"): the offerer offered telephone-event, the answerer
answered without it. The offerer's answer keeps its telephone-event; the streams' directions
get their DtmfInterworking (take from the RFC 4733 leg, inject towards it); nothing when both
legs or neither have it, or when it is off; restored when an offer is abandoned. A real relay
binds its ports on 127.0.0.1 in RANGE; no packet is sent."""

from __future__ import annotations

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
from tests.unit.media import session_env
from tests.unit.media.session_env import stream_of

RANGE = ModuleBlock(100, parse=PortRange.parse)


def sdp(port: int, *media_lines: str, formats: str, version: int = 1) -> SessionDescription:
    lines = [
        "v=0",
        f"o=- 1 {version} IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        *media_lines,
        "",
    ]
    return parse_sdp_untrusted("\r\n".join(lines).encode())


WITH_EVENTS = ("a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16")
CALLER = sdp(20000, *WITH_EVENTS, formats="0 101")
INFO_ONLY = sdp(30000, "a=rtpmap:0 PCMU/8000", formats="0")
CALLEE_WITH_EVENTS = sdp(30000, *WITH_EVENTS, formats="0 101", version=2)


def make_session(enabled: bool = True) -> tuple[MediaSession, MediaRelay]:
    return session_env.make_session(RANGE.get(), dtmf_interworking=enabled)


@pytest.fixture
def session() -> Iterator[MediaSession]:
    with session_env.closed_after(RANGE.get(), dtmf_interworking=True) as session:
        yield session


def test_an_answer_without_telephone_event_makes_the_interworking(session: MediaSession) -> None:
    sent_offer = session.offer_from("a", CALLER)
    assert sent_offer.media[0].formats == ("0", "101")  # the offer goes as it came
    answer = session.answer_from("b", INFO_ONLY)
    session.settle()
    media = answer.media[0]
    assert media.formats == ("0", "101")  # kept for the caller (RFC 3264 §6.1)
    assert "101 telephone-event/8000" in media.attributes.values("rtpmap")
    assert "101 0-16" in media.attributes.values("fmtp")
    assert session.dtmf == DtmfPlan(0, "a", "b", 101, 8000)
    stream = stream_of(session)
    take, inject = stream.a_to_b.dtmf, stream.b_to_a.dtmf
    assert take is not None and (take.take_payload_type, take.inject_payload_type) == (101, -1)
    assert inject is not None and (inject.take_payload_type, inject.inject_payload_type) == (
        -1,
        101,
    )
    assert inject.inject_clock_rate == 8000


def test_the_session_reads_the_digits_of_taken_events(session: MediaSession) -> None:
    session.offer_from("a", CALLER)
    session.answer_from("b", INFO_ONLY)
    heard: list[tuple[str, Digit]] = []
    session.on_dtmf_digit = lambda side, digit: heard.append((side, digit))
    take = stream_of(session).a_to_b.dtmf
    assert take is not None and take.on_event is not None
    header = bytes.fromhex("80650001000003e8000000aa")
    take.on_event(header + event_payload(11, end=False, duration=400))
    take.on_event(header + event_payload(11, end=True, duration=1600))
    take.on_event(header + event_payload(11, end=True, duration=1600))
    assert heard == [("a", Digit("#", 200))]


def test_both_or_neither_with_telephone_event_change_nothing(session: MediaSession) -> None:
    session.offer_from("a", CALLER)
    answer = session.answer_from("b", CALLEE_WITH_EVENTS)
    session.settle()
    assert session.dtmf is None
    assert answer.media[0].formats == ("0", "101")
    stream = stream_of(session)
    assert stream.a_to_b.dtmf is None and stream.b_to_a.dtmf is None
    # Neither: a caller without telephone-event is offered none either.
    other, relay = make_session()
    try:
        offer = other.offer_from("a", INFO_ONLY)
        assert offer.media[0].formats == ("0",)
        other.answer_from("b", INFO_ONLY)
        assert other.dtmf is None
    finally:
        other.close()
        relay.close()


def test_a_reinvite_that_brings_telephone_event_ends_it_and_abandoning_restores(
    session: MediaSession,
) -> None:
    session.offer_from("a", CALLER)
    session.answer_from("b", INFO_ONLY)
    session.settle()
    plan = session.dtmf
    assert plan is not None
    # The callee re-offers with telephone-event: both legs have it now.
    session.offer_from("b", CALLEE_WITH_EVENTS)
    session.answer_from("a", sdp(20000, *WITH_EVENTS, formats="0 101", version=2))
    session.settle()
    assert session.dtmf is None
    stream = stream_of(session)
    assert stream.a_to_b.dtmf is None and stream.b_to_a.dtmf is None
    # The caller re-offers, the callee answers without: interworking again; a refused re-offer
    # (abandoned) leaves it as it was.
    session.offer_from("a", sdp(20000, *WITH_EVENTS, formats="0 101", version=3))
    session.answer_from("b", sdp(30000, "a=rtpmap:0 PCMU/8000", formats="0", version=3))
    session.settle()
    assert session.dtmf == plan
    session.offer_from("b", sdp(30000, *WITH_EVENTS, formats="0 101", version=4))
    session.abandon_offer()
    assert session.dtmf == plan
    assert stream.a_to_b.dtmf is not None


def test_a_callee_reoffer_with_telephone_event_answered_without_swaps_the_legs(
    session: MediaSession,
) -> None:
    session.offer_from("a", INFO_ONLY)
    session.answer_from("b", INFO_ONLY)
    session.settle()
    assert session.dtmf is None
    session.offer_from("b", CALLEE_WITH_EVENTS)
    answer = session.answer_from("a", sdp(20000, "a=rtpmap:0 PCMU/8000", formats="0", version=2))
    assert session.dtmf == DtmfPlan(0, "b", "a", 101, 8000)
    assert answer.media[0].formats == ("0", "101")
    stream = stream_of(session)
    assert stream.b_to_a.dtmf is not None and stream.b_to_a.dtmf.take_payload_type == 101


def test_off_means_relayed_as_it_comes() -> None:
    session, relay = make_session(enabled=False)
    try:
        session.offer_from("a", CALLER)
        answer = session.answer_from("b", INFO_ONLY)
        assert answer.media[0].formats == ("0",)
        assert session.dtmf is None
        assert not session.send_dtmf_event(b"\x01\x0a\x00\x00", marker=True, start=True)
    finally:
        session.close()
        relay.close()


def test_an_event_whose_end_packets_are_lost_ends_on_the_session_timer() -> None:
    now = [10.0]
    relay = MediaRelay(PortAllocator("127.0.0.1", RANGE.get()), clock=lambda: 0.0)
    session = MediaSession(
        relay, media_address="127.0.0.1", dtmf_interworking=True, clock=lambda: now[0]
    )
    try:
        session.offer_from("a", CALLER)
        session.answer_from("b", INFO_ONLY)  # early media (a 183's answer) plans the same
        heard: list[tuple[str, Digit]] = []
        armed: list[float | None] = []
        session.on_dtmf_digit = lambda side, digit: heard.append((side, digit))
        session.on_dtmf_timer = lambda: armed.append(session.dtmf_timer())
        assert session.dtmf_timer() is None
        take = stream_of(session).a_to_b.dtmf
        assert take is not None and take.on_event is not None
        header = bytes.fromhex("80650001000003e8000000aa")
        take.on_event(header + event_payload(9, end=False, duration=400))
        now[0] = 10.05
        take.on_event(header + event_payload(9, end=False, duration=800))
        assert armed == [10.0 + 0.5]  # once, when the event began
        assert session.dtmf_timer() == pytest.approx(10.55)
        session.dtmf_timeout(10.5)
        assert heard == []
        session.dtmf_timeout(10.55)  # all three end packets lost: the timeout ends it
        assert heard == [("a", Digit("9", 100))]
        assert session.dtmf_timeouts == 1 and session.dtmf_timer() is None
        take.on_event(header + event_payload(9, end=True, duration=960))  # late: once
        session.dtmf_timeout(20.0)
        assert heard == [("a", Digit("9", 100))]
    finally:
        session.close()
        relay.close()


def test_a_new_plan_on_the_line_keeps_the_stream_numbering(session: MediaSession) -> None:
    session.offer_from("a", CALLER)
    session.answer_from("b", INFO_ONLY)
    session.settle()
    stream = stream_of(session)
    take = stream.a_to_b.dtmf
    assert take is not None
    take.seq_offset, take.last_seq = -3, 41  # three event packets taken so far
    # A re-offer from the caller numbering telephone-event 96: a new plan on the same line.
    reoffer = sdp(
        20000,
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:96 telephone-event/8000",
        formats="0 96",
        version=2,
    )
    session.offer_from("a", reoffer)
    session.answer_from("b", sdp(30000, "a=rtpmap:0 PCMU/8000", formats="0", version=3))
    assert session.dtmf == DtmfPlan(0, "a", "b", 96, 8000)
    renewed = stream.a_to_b.dtmf
    assert renewed is not None and renewed is not take
    assert renewed.take_payload_type == 96
    # The callee goes on hearing one sequence: the packets taken so far still count.
    assert (renewed.seq_offset, renewed.last_seq) == (-3, 41)


def test_the_rfc4733_legs_red_numbers_go_with_the_plan(session: MediaSession) -> None:
    # RFC 4733 §2.5.1.5: a leg with RED (a=rtpmap:100 red/8000) may send its events inside
    # RED; the direction from it reads RED too. The INFO leg's direction does not.
    caller = sdp(
        20000,
        *WITH_EVENTS,
        "a=rtpmap:100 red/8000",
        "a=fmtp:100 101/101",
        formats="0 101 100",
    )
    session.offer_from("a", caller)
    callee = sdp(30000, "a=rtpmap:0 PCMU/8000", "a=rtpmap:100 red/8000", formats="0 100")
    session.answer_from("b", callee)
    session.settle()
    assert session.dtmf == DtmfPlan(0, "a", "b", 101, 8000, (100,))
    take, inject = stream_of(session).a_to_b.dtmf, stream_of(session).b_to_a.dtmf
    assert take is not None and take.red_payload_types == (100,) and take.red
    assert inject is not None and not inject.red


def test_red_the_answer_declined_is_not_read(session: MediaSession) -> None:
    # RFC 3264 §6.1: the caller may send only what the answer kept; without RED there the
    # direction runs the plain transform.
    caller = sdp(20000, *WITH_EVENTS, "a=rtpmap:100 red/8000", formats="0 101 100")
    session.offer_from("a", caller)
    session.answer_from("b", INFO_ONLY)
    session.settle()
    assert session.dtmf == DtmfPlan(0, "a", "b", 101, 8000, ())
    take = stream_of(session).a_to_b.dtmf
    assert take is not None and not take.red


def receivers(session: MediaSession) -> tuple[object, object]:
    """What the stream's directions were told their receivers take (a_to_b: B, b_to_a: A)."""
    stream = stream_of(session)
    return stream.a_to_b.receiver_telephone_event, stream.b_to_a.receiver_telephone_event


def test_a_dtmf_lines_directions_are_told_what_each_receiver_takes(
    session: MediaSession,
) -> None:
    """The delayed end copies of an event a change ended need the telephone-event the
    receiver takes in the plan in force, interworking or not (relay.DirectionControl.
    receiver_telephone_event): told at every answer on a line that had interworking, put
    back when an offer is abandoned."""
    session.offer_from("a", sdp(20000, *WITH_EVENTS, formats="0 101"))
    session.answer_from("b", INFO_ONLY)
    session.settle()
    assert receivers(session) == ((-1, 0), (101, 8000))  # B does INFO, A takes 101
    # The callee re-offers with telephone-event 96, the caller answers with its own 100
    # (RFC 3264 §6.1 lets it number it otherwise): no interworking, both take events.
    session.offer_from(
        "b", sdp(30000, "a=rtpmap:96 telephone-event/8000", formats="0 96", version=2)
    )
    session.answer_from(
        "a", sdp(20000, "a=rtpmap:100 telephone-event/8000", formats="0 100", version=2)
    )
    session.settle()
    assert session.dtmf is None
    assert receivers(session) == ((96, 8000), (100, 8000))
    # The caller re-offers without telephone-event; the callee's early answer is taken, then
    # the offer fails: what was told before it is told again.
    session.offer_from("a", sdp(20000, formats="0", version=3))
    session.answer_from("b", sdp(30000, formats="0", version=3))
    assert receivers(session) == ((-1, 0), (-1, 0))
    session.abandon_offer()
    assert receivers(session) == ((96, 8000), (100, 8000))


def test_a_line_that_never_interworked_is_not_told(session: MediaSession) -> None:
    """Only the lines that had interworking can have end copies to go: a call whose legs
    both have telephone-event (most calls) sets nothing on its streams."""
    session.offer_from("a", CALLER)
    session.answer_from("b", CALLEE_WITH_EVENTS)
    session.settle()
    assert session.dtmf is None
    assert receivers(session) == (None, None)


def test_an_answer_to_our_re_key_that_leaves_telephone_event_out_is_told(
    session: MediaSession,
) -> None:
    """A's INFO digits reach B as events we added to our offer (B took them); B's answer to our
    re-key re-offer leaves telephone-event out: the interworking ends and B takes none."""
    session.offer_from("a", INFO_ONLY, dtmf_info=True)
    session.answer_from("b", sdp(30000, *WITH_EVENTS, formats="0 101"))
    session.settle()
    assert session.dtmf is not None and session.dtmf.rfc4733_side == "b"
    assert receivers(session)[0] == (101, 8000)
    session.repeat_offer("b")
    session.answer_to_repeated_offer(
        "b", sdp(30010, "a=rtpmap:0 PCMU/8000", formats="0", version=2)
    )
    assert session.dtmf is None
    assert receivers(session)[0] == (-1, 0)
