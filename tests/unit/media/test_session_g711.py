"""MediaSession's G.711 transcoding (gateway/core/media/session.py, transcoding.py,
docs/architecture.md "G.711 transcoding"): the offer gets the other law after the offerer's
own formats; only an answer that keeps the added law and not the offerer's transcodes (both
directions of that stream), and our answer names the offerer's law; a shared codec, a caller
with both laws or neither, or the option off change nothing; re-INVITEs from either side and
an abandoned offer keep it right. A real relay binds its ports on 127.0.0.1 in RANGE; no
packet is sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.core.config import PortRange
from gateway.core.media.g711 import G711Transcoding, Law
from gateway.core.media.relay import MediaRelay
from gateway.core.media.session import MediaSession
from gateway.core.media.transcoding import (
    AddedLaw,
    TranscodingPlan,
    answer_in_offerers_law,
    g711_laws,
    number_clash,
    through_renumbering,
    with_other_law,
)
from gateway.core.sdp.model import MediaDescription, SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.port_blocks import ModuleBlock
from tests.unit.media import session_env
from tests.unit.media.session_env import stream_of

RANGE = ModuleBlock(100, parse=PortRange.parse)

EVENTS = ("a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16")


def sdp(port: int, formats: str, *lines: str, version: int = 1) -> SessionDescription:
    text = [
        "v=0",
        f"o=- 1 {version} IN IP4 127.0.0.1",
        "s=-",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} RTP/AVP {formats}",
        *lines,
        "",
    ]
    return parse_sdp_untrusted("\r\n".join(text).encode())


def media(formats: str, *lines: str) -> MediaDescription:
    return sdp(4000, formats, *lines).media[0]


PHONE = sdp(20000, "0 101", "a=rtpmap:0 PCMU/8000", *EVENTS)  # a US phone: PCMU only
CARRIER = sdp(30000, "8 101", "a=rtpmap:8 PCMA/8000", *EVENTS)  # EU carrier: PCMA only
CARRIER_BOTH = sdp(30000, "0 8 101", *EVENTS)  # it has PCMU too


def make_session(enabled: bool = True) -> tuple[MediaSession, MediaRelay]:
    return session_env.make_session(RANGE.get(), g711_transcoding=enabled)


@pytest.fixture
def session() -> Iterator[MediaSession]:
    with session_env.closed_after(RANGE.get(), g711_transcoding=True) as session:
        yield session


def transcodings(session: MediaSession) -> tuple[G711Transcoding | None, G711Transcoding | None]:
    stream = stream_of(session)
    return stream.a_to_b.transcoding, stream.b_to_a.transcoding


# -- the SDP helpers ------------------------------------------------------------------------------


def test_laws_by_rtpmap_or_static_number() -> None:
    assert g711_laws(media("0 8 101", *EVENTS)) == {Law.PCMU: 0, Law.PCMA: 8}
    assert g711_laws(media("96", "a=rtpmap:96 pcma/8000")) == {Law.PCMA: 96}
    assert g711_laws(media("96", "a=rtpmap:96 PCMU/16000")) == {}  # not G.711's 8000 Hz
    assert g711_laws(media("18 101", *EVENTS)) == {}
    assert g711_laws(media("96", "a=rtpmap:96 PCMU")) == {}  # unreadable rtpmap: none


def test_the_other_law_goes_after_every_format() -> None:
    offered = media("0 101", "a=rtpmap:0 PCMU/8000", *EVENTS)
    added = with_other_law(0, offered, offered, None)
    assert added is not None
    line, law = added
    assert line.formats == ("0", "101", "8")
    assert "8 PCMA/8000" in line.attributes.values("rtpmap")
    assert law == AddedLaw(0, Law.PCMU, 0, 8)
    pcma = media("8", "a=rtpmap:8 PCMA/8000")
    assert with_other_law(0, pcma, pcma, None) == (
        media("8 0", "a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000"),
        AddedLaw(0, Law.PCMA, 8, 0),
    )


@pytest.mark.parametrize(
    ("offered", "last"),
    [
        pytest.param(media("0 8"), None, id="both-laws"),
        pytest.param(media("18 101", *EVENTS), None, id="neither"),
        # The leg was told 8 is another codec earlier in the session (RFC 3264 §8.3.2).
        pytest.param(media("0"), media("8", "a=rtpmap:8 G729/8000"), id="number-known-otherwise"),
    ],
)
def test_nothing_is_added(offered: MediaDescription, last: MediaDescription | None) -> None:
    assert with_other_law(0, offered, offered, last) is None


def test_a_number_taken_in_our_offer_is_not_reused() -> None:
    offered = media("0 96", "a=rtpmap:96 opus/48000/2")
    ours = media("0 8", "a=rtpmap:8 opus/48000/2")  # renumbered for the leg (keep_leg_numbers)
    assert with_other_law(0, offered, ours, None) is None


def test_our_answer_names_the_offerers_law_in_its_place() -> None:
    added = AddedLaw(0, Law.PCMU, 0, 8)
    answer = media("8 101", "a=rtpmap:8 PCMA/8000", *EVENTS)
    assert answer_in_offerers_law(added, True, answer) == media(
        "0 101", *EVENTS, "a=rtpmap:0 PCMU/8000"
    )
    # A shared codec: the added law is only dropped.
    shared = media("0 8 101", *EVENTS)
    assert answer_in_offerers_law(added, False, shared) == media("0 101", *EVENTS)
    # Never left without a format.
    only = media("8", "a=rtpmap:8 PCMA/8000")
    assert answer_in_offerers_law(added, False, only) == only


# -- the session ----------------------------------------------------------------------------------


def test_a_pcmu_caller_and_a_pcma_callee_are_transcoded(session: MediaSession) -> None:
    offer = session.offer_from("a", PHONE)
    assert offer.media[0].formats == ("0", "101", "8")
    assert "8 PCMA/8000" in offer.media[0].attributes.values("rtpmap")
    answer = session.answer_from("b", CARRIER)
    session.settle()
    assert answer.media[0].formats == ("0", "101")
    assert "0 PCMU/8000" in answer.media[0].attributes.values("rtpmap")
    assert "8 PCMA/8000" not in answer.media[0].attributes.values("rtpmap")
    assert session.transcoding == TranscodingPlan(0, Law.PCMU, 0, 8)
    assert transcodings(session) == (
        G711Transcoding(Law.PCMU, 0, 8),
        G711Transcoding(Law.PCMA, 8, 0),
    )
    assert session.transcoding_record() == {
        "line": 1,
        "described": "PCMU <-> PCMA transcoded",
        "now": True,
        "a_to_b_packets": 0,
        "b_to_a_packets": 0,
    }


def test_a_callee_sharing_a_law_is_not_transcoded(session: MediaSession) -> None:
    session.offer_from("a", PHONE)
    answer = session.answer_from("b", CARRIER_BOTH)
    session.settle()
    # Its answer keeps our added 8 too: not the caller's to receive (RFC 3264 §6.1).
    assert answer.media[0].formats == ("0", "101")
    assert session.transcoding is None
    assert transcodings(session) == (None, None)
    assert session.transcoding_record() is None


def test_off_by_default_the_offer_is_as_ever() -> None:
    session, relay = make_session(enabled=False)
    try:
        offer = session.offer_from("a", PHONE)
        assert offer.media[0].formats == ("0", "101")
        assert session.transcoding is None
    finally:
        session.close()
        relay.close()


def test_the_callees_numbers_are_its_own(session: MediaSession) -> None:
    # An answerer that numbers PCMA dynamically (legal, if odd): the relay writes its number.
    session.offer_from("a", PHONE)
    answer = session.answer_from("b", sdp(30000, "97", "a=rtpmap:97 PCMA/8000"))
    assert session.transcoding == TranscodingPlan(0, Law.PCMU, 0, 97)
    assert answer.media[0].formats == ("0",)


def test_a_late_offer_from_the_callee_is_transcoded_the_other_way(
    session: MediaSession,
) -> None:
    # INVITE without SDP: the callee's 200 carries the offer, the caller's ACK the answer.
    offer = session.offer_from("b", CARRIER)
    assert offer.media[0].formats == ("8", "101", "0")
    answer = session.answer_from("a", PHONE)
    session.settle()
    assert answer.media[0].formats == ("8", "101")
    # Leg A speaks PCMU: a_to_b converts PCMU 0 -> PCMA 8, b_to_a the other way.
    assert session.transcoding == TranscodingPlan(0, Law.PCMU, 0, 8)
    assert transcodings(session) == (
        G711Transcoding(Law.PCMU, 0, 8),
        G711Transcoding(Law.PCMA, 8, 0),
    )


def test_reinvites_keep_and_end_the_transcoding(session: MediaSession) -> None:
    session.offer_from("a", PHONE)
    session.answer_from("b", CARRIER)
    session.settle()
    # The carrier re-INVITEs (a session refresh with its own SDP): PCMU added for the phone.
    offer = session.offer_from("b", sdp(30000, "8 101", "a=rtpmap:8 PCMA/8000", *EVENTS, version=2))
    assert offer.media[0].formats == ("8", "101", "0")
    session.answer_from("a", sdp(20000, "0 101", "a=rtpmap:0 PCMU/8000", *EVENTS, version=2))
    session.settle()
    assert session.transcoding == TranscodingPlan(0, Law.PCMU, 0, 8)
    # The phone re-INVITEs, and the carrier now answers PCMU: no more transcoding.
    session.offer_from("a", sdp(20000, "0 101", "a=rtpmap:0 PCMU/8000", *EVENTS, version=3))
    session.answer_from("b", sdp(30000, "0 101", *EVENTS, version=3))
    session.settle()
    assert session.transcoding is None
    assert transcodings(session) == (None, None)
    record = session.transcoding_record()
    assert record is not None and record["now"] is False


def test_an_abandoned_offer_restores_the_transcoding(session: MediaSession) -> None:
    session.offer_from("a", PHONE)
    session.answer_from("b", CARRIER)
    session.settle()
    plan = session.transcoding
    session.offer_from("a", sdp(20000, "0 101", "a=rtpmap:0 PCMU/8000", *EVENTS, version=2))
    session.answer_from("b", CARRIER_BOTH)  # an early answer sharing PCMU ...
    assert session.transcoding is None
    session.abandon_offer()  # ... then the re-INVITE fails: as before
    assert plan is not None and session.transcoding == plan
    assert transcodings(session) == (plan.a_to_b, plan.b_to_a)


def test_early_media_then_another_answer(session: MediaSession) -> None:
    session.offer_from("a", PHONE)
    session.answer_from("b", CARRIER)  # a 183
    assert session.transcoding is not None
    session.answer_from("b", CARRIER_BOTH)  # another fork's 200 shares PCMU
    assert session.transcoding is None
    assert transcodings(session) == (None, None)


def test_a_rejected_line_transcodes_nothing(session: MediaSession) -> None:
    session.offer_from("a", PHONE)
    answer = session.answer_from("b", sdp(0, "8", "a=rtpmap:8 PCMA/8000"))
    assert answer.media[0].port == 0
    assert session.transcoding is None
    assert session.transcoding_record() is None


def test_voipgw_calls_says_the_stream_is_transcoded(session: MediaSession) -> None:
    from gateway.core.cli import describe_transcoding

    session.offer_from("a", PHONE)
    session.answer_from("b", CARRIER)
    record = session.transcoding_record()
    assert record is not None
    assert describe_transcoding(record) == (
        "media line 1: PCMU <-> PCMA transcoded, 0 packets caller -> callee, 0 callee -> caller"
    )
    assert describe_transcoding({**record, "now": False, "a_to_b_packets": 7}) == (
        "media line 1: PCMU <-> PCMA transcoded (until a re-INVITE), 7 packets caller -> "
        "callee, 0 callee -> caller"
    )
    stats = session.statistics()
    assert (stats["a_to_b_transcoded_packets"], stats["b_to_a_transcoded_packets"]) == (0, 0)


# -- payload type numbers (RFC 3264 §5.1, §6.1) ---------------------------------------------------


def delivered(session: MediaSession, direction: str, payload_type: int) -> tuple[int, bool]:
    """The payload type a packet of ``payload_type`` leaves ``direction`` with, and whether its
    samples were converted: the relay's order, conversion first, then the renumbering."""
    stream = stream_of(session)
    control = stream.a_to_b if direction == "a_to_b" else stream.b_to_a
    converted = False
    transcoding = control.transcoding
    if transcoding is not None and payload_type == transcoding.payload_type:
        payload_type, converted = transcoding.to_payload_type, True
    return control.payload_types.get(payload_type, payload_type), converted


def test_through_renumbering_keeps_the_senders_number_where_it_would_be_renumbered() -> None:
    pcmu = G711Transcoding(Law.PCMU, 0, 96)  # the receiver's PCMA is 96 ...
    assert through_renumbering(pcmu, {101: 97}, red=False) == (False, {101: 97})
    # ... and 96 is the sender's telephone-event, renumbered to the receiver's 101.
    assert through_renumbering(pcmu, {96: 101}, red=False) == (True, {96: 101, 0: 96})
    assert through_renumbering(pcmu, {96: 101, 0: 97}, red=False) == (
        "payload type 0 (PCMU) is renumbered already"
    )
    assert isinstance(through_renumbering(pcmu, {96: 101}, red=True), str)  # RED blocks


def test_number_clash() -> None:
    added = AddedLaw(0, Law.PCMU, 0, 8)
    sent = media("0 101 8", *EVENTS, "a=rtpmap:8 PCMA/8000")
    assert number_clash(added, sent, media("8 101", *EVENTS)) is None
    assert number_clash(added, sent, media("97", "a=rtpmap:97 PCMA/8000")) is None
    assert number_clash(added, sent, media("101 96", "a=rtpmap:101 PCMA/8000")) == (
        "the answer numbers PCMA 101, which our offer gave telephone-event/8000: its packets "
        "numbered 101 could be either"
    )
    assert number_clash(
        added, sent, media("97 8", "a=rtpmap:97 PCMA/8000", "a=rtpmap:8 G729/8000")
    ) == ("the answer gives 8, the number we offered PCMA at, to G729/8000 and numbers PCMA 97")


# The offerer's PCMU is dynamic 96 and its telephone-event 101; the answerer gives
# telephone-event 96: B's PCMA converted to A's 96 would be renumbered to 101 as an event.
DYNAMIC_PHONE = sdp(20000, "96 101", "a=rtpmap:96 PCMU/8000", *EVENTS)
CARRIER_EVENTS_96 = sdp(
    30000, "8 96", "a=rtpmap:8 PCMA/8000", "a=rtpmap:96 telephone-event/8000", "a=fmtp:96 0-16"
)


@pytest.mark.parametrize("offerer", ["a", "b"])
def test_converted_packets_carry_the_receivers_number_through_a_renumbering(
    session: MediaSession, offerer: str
) -> None:
    if offerer == "a":
        session.offer_from("a", DYNAMIC_PHONE)
        session.answer_from("b", CARRIER_EVENTS_96)
        pcmu_leg, pcma_leg = "a_to_b", "b_to_a"
    else:
        # The PCMA side offers (the carrier's re-INVITE, a late offer) and is leg B's
        # answerer here: its PCMU answer numbers telephone-event as the other's PCMU.
        session.offer_from("b", sdp(30000, "96 101", "a=rtpmap:96 PCMA/8000", *EVENTS))
        session.answer_from(
            "a",
            sdp(20000, "0 96", "a=rtpmap:96 telephone-event/8000", "a=fmtp:96 0-16"),
        )
        pcmu_leg, pcma_leg = "a_to_b", "b_to_a"
    session.settle()
    assert session.transcoding is not None
    if offerer == "a":
        # A -> B: PCMU 96 -> PCMA 8, events 101 -> 96; B -> A: PCMA 8 -> PCMU 96, events 96 -> 101.
        assert delivered(session, pcmu_leg, 96) == (8, True)
        assert delivered(session, pcmu_leg, 101) == (96, False)
        assert delivered(session, pcma_leg, 8) == (96, True)
        assert delivered(session, pcma_leg, 96) == (101, False)
    else:
        # A (PCMU 0, events 96) -> B (PCMA 96, events 101) and back.
        assert delivered(session, pcmu_leg, 0) == (96, True)
        assert delivered(session, pcmu_leg, 96) == (101, False)
        assert delivered(session, pcma_leg, 96) == (0, True)
        assert delivered(session, pcma_leg, 101) == (96, False)


def test_an_ambiguous_number_is_not_transcoded_and_warned_once(
    session: MediaSession, caplog: pytest.LogCaptureFixture
) -> None:
    # The answerer numbers PCMA 101, the number our offer (the phone's) gave telephone-event.
    session.offer_from("a", PHONE)
    clashing = sdp(30000, "101 96", "a=rtpmap:101 PCMA/8000", "a=rtpmap:96 telephone-event/8000")
    with caplog.at_level("INFO", logger="gateway.core.media.session"):
        answer = session.answer_from("b", clashing)  # a 183 ...
        session.answer_from("b", clashing)  # ... and the 200: one WARNING for the call
    session.settle()
    assert session.transcoding is None
    assert transcodings(session) == (None, None)
    assert session.transcoding_record() is None
    # As without transcoding: the law we added is not in our answer.
    assert "101 PCMA/8000" not in answer.media[0].attributes.values("rtpmap")
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert [r.getMessage() for r in warnings] == [
        "m= line 1: G.711 not transcoded, payload type numbers clash: the answer numbers "
        "PCMA 101, which our offer gave telephone-event/8000: its packets numbered 101 could "
        "be either"
    ]
