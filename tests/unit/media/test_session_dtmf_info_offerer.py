"""An offerer declared to do DTMF by SIP INFO (``dtmf = "info"``: docs/architecture.md "DTMF
interworking"): its offer without telephone-event goes to the other leg with telephone-event
added (101 when free, else a number the leg can take, RFC 3264 §8.3.2), our answer to it
leaves telephone-event out (§6.1), and an answerer that accepts it makes the interworking the
other way round (events from and to the answerer, INFO to and from the offerer). Nothing is
added for an offerer not so declared, one whose offer has telephone-event, or with
interworking off. A real relay binds its ports on 127.0.0.1 in RANGE; no packet is
sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.core.config import PortRange
from gateway.core.media.relay import MediaRelay
from gateway.core.media.session import DtmfPlan, MediaSession, with_telephone_event
from gateway.core.sdp.model import MediaDescription, SessionDescription
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


def audio(formats: str, *media_lines: str) -> MediaDescription:
    return sdp(20000, *media_lines, formats=formats).media[0]


PCMU = "a=rtpmap:0 PCMU/8000"
WITH_EVENTS = (PCMU, "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16")
INFO_CALLER = sdp(20000, PCMU, formats="0")
CALLEE_WITH_EVENTS = sdp(30000, *WITH_EVENTS, formats="0 101")
CALLEE_WITHOUT = sdp(30000, PCMU, formats="0")


def make_session(enabled: bool = True) -> tuple[MediaSession, MediaRelay]:
    return session_env.make_session(RANGE.get(), dtmf_interworking=enabled)


@pytest.fixture
def session() -> Iterator[MediaSession]:
    with session_env.closed_after(RANGE.get(), dtmf_interworking=True) as session:
        yield session


# -- the offer -------------------------------------------------------------------------------


def test_telephone_event_is_added_as_101_with_its_fmtp() -> None:
    media = with_telephone_event(audio("0 8", PCMU, "a=rtpmap:8 PCMA/8000"), None)
    assert media is not None
    assert media.formats == ("0", "8", "101")
    assert "101 telephone-event/8000" in media.attributes.values("rtpmap")
    assert "101 0-16" in media.attributes.values("fmtp")


def test_a_taken_101_gives_the_lowest_free_dynamic_number() -> None:
    media = with_telephone_event(
        audio("96 101 0", "a=rtpmap:96 opus/48000/2", "a=rtpmap:101 iLBC/8000", PCMU), None
    )
    assert media is not None
    assert media.formats == ("96", "101", "0", "97")
    assert "97 telephone-event/8000" in media.attributes.values("rtpmap")
    assert "97 0-16" in media.attributes.values("fmtp")


def test_a_reoffer_keeps_the_number_the_leg_knows_and_avoids_its_other_numbers() -> None:
    last = audio("0 98", PCMU, "a=rtpmap:98 telephone-event/8000")
    media = with_telephone_event(audio("0", PCMU), last)
    assert media is not None and media.formats == ("0", "98")
    # The leg knew 101 as another codec (§8.3.2: a number never changes its codec).
    last = audio("0 101 96", PCMU, "a=rtpmap:101 iLBC/8000", "a=rtpmap:96 G7221/16000")
    media = with_telephone_event(audio("0", PCMU), last)
    assert media is not None and media.formats == ("0", "97")


def test_no_free_number_adds_nothing() -> None:
    every = " ".join(str(n) for n in range(96, 128))
    assert with_telephone_event(audio(f"0 {every}", PCMU), None) is None


def test_an_info_offerer_gets_telephone_event_offered_and_answered_without(
    session: MediaSession,
) -> None:
    sent = session.offer_from("a", INFO_CALLER, dtmf_info=True)
    media = sent.media[0]
    assert media.formats == ("0", "101")
    assert "101 telephone-event/8000" in media.attributes.values("rtpmap")
    assert "101 0-16" in media.attributes.values("fmtp")
    answer = session.answer_from("b", CALLEE_WITH_EVENTS)
    session.settle()
    # Our answer to the caller: it never offered telephone-event (RFC 3264 §6.1).
    assert answer.media[0].formats == ("0",)
    assert not any("telephone-event" in v for v in answer.media[0].attributes.values("rtpmap"))
    assert not answer.media[0].attributes.values("fmtp")
    # The callee is the RFC 4733 leg, the caller the INFO leg.
    assert session.dtmf == DtmfPlan(0, "b", "a", 101, 8000)
    stream = stream_of(session)
    take, inject = stream.b_to_a.dtmf, stream.a_to_b.dtmf
    assert take is not None and take.take_payload_type == 101
    assert inject is not None and inject.inject_payload_type == 101


def test_the_plan_uses_the_number_the_answerer_gave(session: MediaSession) -> None:
    session.offer_from("a", INFO_CALLER, dtmf_info=True)
    answer = session.answer_from(
        "b", sdp(30000, PCMU, "a=rtpmap:100 telephone-event/8000", formats="0 100")
    )
    assert session.dtmf == DtmfPlan(0, "b", "a", 100, 8000)
    assert answer.media[0].formats == ("0",)


def test_an_answerer_that_declines_changes_nothing(session: MediaSession) -> None:
    session.offer_from("a", INFO_CALLER, dtmf_info=True)
    answer = session.answer_from("b", CALLEE_WITHOUT)
    session.settle()
    assert session.dtmf is None
    assert answer.media[0].formats == ("0",)
    stream = stream_of(session)
    assert stream.a_to_b.dtmf is None and stream.b_to_a.dtmf is None


@pytest.mark.parametrize(
    ("offer", "dtmf_info", "enabled"),
    [
        (INFO_CALLER, False, True),  # not declared: relayed as it comes
        (INFO_CALLER, True, False),  # interworking off
        (sdp(20000, *WITH_EVENTS, formats="0 101"), True, True),  # it has telephone-event
    ],
)
def test_nothing_is_added_otherwise(
    offer: SessionDescription, dtmf_info: bool, enabled: bool
) -> None:
    session, relay = make_session(enabled)
    try:
        sent = session.offer_from("a", offer, dtmf_info=dtmf_info)
        assert sent.media[0].formats == offer.media[0].formats
        assert sent.media[0].attributes.values("fmtp") == offer.media[0].attributes.values("fmtp")
        session.answer_from("b", CALLEE_WITH_EVENTS)
        assert session.dtmf is None
    finally:
        session.close()
        relay.close()


def test_reinvites_from_either_side(session: MediaSession) -> None:
    session.offer_from("a", INFO_CALLER, dtmf_info=True)
    session.answer_from("b", CALLEE_WITH_EVENTS)
    session.settle()
    plan = session.dtmf
    assert plan == DtmfPlan(0, "b", "a", 101, 8000)
    # The INFO caller re-offers (hold, a codec change): telephone-event again, same number.
    sent = session.offer_from("a", sdp(20000, PCMU, formats="0", version=2), dtmf_info=True)
    assert sent.media[0].formats == ("0", "101")
    answer = session.answer_from("b", sdp(30000, *WITH_EVENTS, formats="0 101", version=2))
    session.settle()
    assert answer.media[0].formats == ("0",)
    assert session.dtmf == plan
    # The callee re-offers with telephone-event, the INFO caller answers without: the
    # interworking stays (the existing rule: offerer with, answerer without).
    sent = session.offer_from("b", sdp(30000, *WITH_EVENTS, formats="0 101", version=3))
    assert sent.media[0].formats == ("0", "101")
    answer = session.answer_from("a", sdp(20000, PCMU, formats="0", version=3))
    session.settle()
    assert session.dtmf == plan
    assert answer.media[0].formats == ("0", "101")  # the callee offered it: kept
    # A re-offer abandoned leaves it as it was.
    session.offer_from("a", sdp(20000, PCMU, formats="0", version=4), dtmf_info=True)
    session.answer_from("b", sdp(30000, PCMU, formats="0", version=4))
    assert session.dtmf is None
    session.abandon_offer()
    assert session.dtmf == plan
    assert stream_of(session).b_to_a.dtmf is not None


def test_an_info_callee_called_by_an_offerer_with_events_still_interworks(
    session: MediaSession,
) -> None:
    # The INFO device answers: nothing is added to anything, the existing rule holds.
    sent = session.offer_from("a", sdp(20000, *WITH_EVENTS, formats="0 101"))
    assert sent.media[0].formats == ("0", "101")
    answer = session.answer_from("b", CALLEE_WITHOUT)
    assert session.dtmf == DtmfPlan(0, "a", "b", 101, 8000)
    assert answer.media[0].formats == ("0", "101")
