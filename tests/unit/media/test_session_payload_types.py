"""MediaSession sets each stream's payload type renumbering from the two legs' own SDP
(gateway/core/media/session.py): none for a call whose legs agree (every call that passes one
leg's SDP to the other), one each way where a peer numbers a codec its own way (a non-compliant
answer, a pickup's picker via ``numbering``, a re-offer from a new party); restored when an offer
is abandoned. A real relay binds its ports on 127.0.0.1 in RANGE; no packet is sent."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from gateway.core.config import PortRange
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay, MediaStream
from gateway.core.media.session import MediaSession
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.offer_answer import answer_with
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.port_blocks import ModuleBlock

RANGE = ModuleBlock(100, parse=PortRange.parse)


def sdp(port: int, *media_lines: str, formats: str) -> SessionDescription:
    lines = [
        "v=0",
        "o=- 1 1 IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        *media_lines,
        "",
    ]
    return parse_sdp_untrusted("\r\n".join(lines).encode())


CALLER = sdp(20000, "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000", formats="0 101")
CALLEE = sdp(30000, "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000", formats="0 101")
PICKER = sdp(40000, "a=rtpmap:0 PCMU/8000", "a=rtpmap:96 telephone-event/8000", formats="0 96")


@pytest.fixture
def session() -> Iterator[MediaSession]:
    relay = MediaRelay(PortAllocator("127.0.0.1", RANGE.get()), clock=lambda: 0.0)
    session = MediaSession(
        relay, media_address="127.0.0.1", session_id_source=itertools.count(1).__next__
    )
    yield session
    session.close()
    relay.close()
    assert relay.allocator.in_use == 0


def renumbering(session: MediaSession) -> tuple[dict[int, int], dict[int, int]]:
    (stream,) = session.streams
    assert isinstance(stream, MediaStream)
    return stream.a_to_b.payload_types, stream.b_to_a.payload_types


def test_a_plain_call_renumbers_nothing(session: MediaSession) -> None:
    session.offer_from("a", CALLER)
    session.answer_from("b", CALLEE)
    session.settle()
    assert renumbering(session) == ({}, {})


def test_an_answer_that_numbers_its_own_way_is_renumbered_both_ways(session: MediaSession) -> None:
    # RFC 3264 §6.1 asks the answerer to reuse the offer's numbers; not every phone does.
    session.offer_from("a", CALLER)
    sent = session.answer_from("b", PICKER)
    assert renumbering(session) == ({101: 96}, {96: 101})
    # The caller gets the answer in its own numbers, as it should have come (§6.1).
    assert sent.media[0].formats == ("0", "101")
    assert "101 telephone-event/8000" in sent.media[0].attributes.values("rtpmap")
    session.settle()


def test_an_answer_that_would_give_a_number_twice_is_passed_as_it_came(
    session: MediaSession,
) -> None:
    # The answer adds a codec the offer lacks, on the number the offer gives telephone-event.
    session.offer_from("a", CALLER)
    odd = sdp(
        30000,
        "a=rtpmap:101 G722/8000",
        "a=rtpmap:96 telephone-event/8000",
        formats="101 96",
    )
    sent = session.answer_from("b", odd)
    assert sent.media[0].formats == ("101", "96")
    assert renumbering(session) == ({101: 96}, {96: 101})


def test_the_pickers_own_numbers_count_not_the_answer_made_for_the_caller(
    session: MediaSession,
) -> None:
    # Call pickup: our offer to the ringing phones is answered with the picker's SDP in the
    # caller's numbers (answer_with); the picker got its own numbers back.
    offer_b = session.offer_from("a", CALLER)
    to_caller = answer_with(offer_b, PICKER)
    assert to_caller.media[0].formats == ("0", "101")
    session.answer_from("b", to_caller, numbering=PICKER)
    session.settle()
    assert renumbering(session) == ({101: 96}, {96: 101})
    # The picker re-offers (hold, resume) with its numbers, the caller answers with its own
    # (RFC 3264 §8.3.2 keeps a number's codec for the session): still renumbered.
    session.offer_from("b", PICKER)
    session.answer_from("a", CALLER)
    session.settle()
    assert renumbering(session) == ({101: 96}, {96: 101})
    # A caller that takes the new numbers: nothing left to renumber.
    session.offer_from("b", PICKER)
    session.answer_from("a", sdp(20000, "a=rtpmap:96 telephone-event/8000", formats="0 96"))
    session.settle()
    assert renumbering(session) == ({}, {})


def test_an_abandoned_offer_restores_the_renumbering_of_before(session: MediaSession) -> None:
    session.offer_from("a", CALLER)
    session.answer_from("b", PICKER)
    session.settle()
    session.offer_from("a", CALLER)
    session.answer_from("b", CALLEE)  # an early answer (183) agreeing with the caller ...
    assert renumbering(session) == ({}, {})
    session.abandon_offer()  # ... then the re-INVITE failed
    assert renumbering(session) == ({101: 96}, {96: 101})


def test_a_new_partys_re_offer_keeps_the_legs_numbers_and_its_answer_goes_back_in_its_own(
    session: MediaSession,
) -> None:
    # A transfer: the target (telephone-event 96) takes over side B and offers; the caller's
    # leg knows telephone-event as 101 (RFC 3264 §8.3.2: numbers keep their codec).
    session.offer_from("a", CALLER)
    session.answer_from("b", CALLEE)
    session.settle()
    to_caller = session.offer_from("b", PICKER)
    assert to_caller.media[0].formats == ("0", "101")
    assert "101 telephone-event/8000" in to_caller.media[0].attributes.values("rtpmap")
    assert renumbering(session) == ({}, {})  # nothing changes before the answer
    to_target = session.answer_from("a", CALLER)
    # The target gets the answer in its own numbers (RFC 3264 §6.1).
    assert to_target.media[0].formats == ("0", "96")
    assert "96 telephone-event/8000" in to_target.media[0].attributes.values("rtpmap")
    session.settle()
    assert renumbering(session) == ({101: 96}, {96: 101})
    # The caller holds: its offer reaches the target in the target's numbers, and back.
    to_target = session.offer_from("a", CALLER)
    assert to_target.media[0].formats == ("0", "96")
    assert session.answer_from("b", PICKER).media[0].formats == ("0", "101")
    session.settle()
    assert renumbering(session) == ({101: 96}, {96: 101})


def test_after_a_pickup_the_callers_re_offer_reaches_the_picker_in_its_numbers(
    session: MediaSession,
) -> None:
    offer_b = session.offer_from("a", CALLER)
    session.answer_from("b", answer_with(offer_b, PICKER), numbering=PICKER)
    session.settle()
    to_picker = answer_with(PICKER, offer_b)
    session.sent_elsewhere("b", to_picker)
    assert session.last_sent("b") == to_picker
    # The caller holds: the picker's leg knows telephone-event as 96.
    reoffer = session.offer_from("a", CALLER)
    assert reoffer.media[0].formats == ("0", "96")
    assert reoffer.origin.session_version == to_picker.origin.session_version + 1  # RFC 3264 §8
    assert session.answer_from("b", PICKER).media[0].formats == ("0", "101")
    session.settle()
    assert renumbering(session) == ({101: 96}, {96: 101})


# -- RFC 2198 RED: the relay learns the sender's RED numbers where a direction renumbers --------

BROWSER = sdp(
    50000,
    "a=rtpmap:111 opus/48000/2",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    formats="111 63",
)
PHONE = sdp(
    60000,
    "a=rtpmap:109 opus/48000/2",
    "a=rtpmap:121 red/48000/2",
    "a=fmtp:121 109/109",
    formats="109 121",
)


def red(session: MediaSession) -> tuple[tuple[int, ...], tuple[int, ...]]:
    (stream,) = session.streams
    assert isinstance(stream, MediaStream)
    return stream.a_to_b.red_payload_types, stream.b_to_a.red_payload_types


def test_red_numbers_go_with_a_renumbering_and_the_answer_lists_the_offerers(
    session: MediaSession,
) -> None:
    session.offer_from("a", BROWSER)
    sent = session.answer_from("b", PHONE)
    assert renumbering(session) == ({111: 109, 63: 121}, {109: 111, 121: 63})
    assert red(session) == ((63,), (121,))  # each direction: the sender's own number
    # The browser's answer is in its numbers, RED's fmtp included (RFC 2198 §5).
    assert sent.media[0].attributes.values("fmtp") == ("63 111/111",)
    session.settle()
    # An abandoned re-offer restores both.
    session.offer_from("a", BROWSER)
    session.answer_from("b", BROWSER)
    assert red(session) == ((), ())
    session.abandon_offer()
    assert red(session) == ((63,), (121,))


def test_red_alone_is_not_set_where_nothing_is_renumbered(session: MediaSession) -> None:
    session.offer_from("a", BROWSER)
    session.answer_from("b", BROWSER)
    session.settle()
    assert renumbering(session) == ({}, {})
    assert red(session) == ((), ())


def test_a_new_partys_red_reaches_the_leg_in_the_legs_numbers(session: MediaSession) -> None:
    # A transfer: the browser's leg knows Opus as 111 and RED as 63; the target (Opus 109,
    # RED 121) re-offers: RED's fmtp must name 111, the number the leg's Opus keeps.
    session.offer_from("a", BROWSER)
    session.answer_from("b", BROWSER)
    session.settle()
    to_browser = session.offer_from("b", PHONE)
    assert to_browser.media[0].formats == ("111", "63")
    assert to_browser.media[0].attributes.values("fmtp") == ("63 111/111",)
    to_target = session.answer_from("a", BROWSER)
    assert to_target.media[0].attributes.values("fmtp") == ("121 109/109",)
    session.settle()
    assert red(session) == ((63,), (121,))
