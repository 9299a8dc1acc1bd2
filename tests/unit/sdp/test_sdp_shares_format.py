"""Session 42 (#7): ``validate_answer``'s "the answer keeps a codec of the offer" (RFC 3264
§6.1) looks at the answer's formats in order, each against the offer's format of its own number
first, and gathers the offer's codecs by name, rate and channels only for an answer that
renumbered. It must answer as the rule it replaced (both sections' codec maps built whole, then
the answer's formats looked up in the offer's codecs) for any pair of sections, and refuse a
malformed a=rtpmap in either whichever format matches."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.sdp import offer_answer
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import STATIC_PAYLOAD_TYPES, MediaDescription


def _codecs_by_format(media: MediaDescription) -> dict[int, object]:
    rtpmaps = media.rtpmaps()
    return {pt: rtpmaps.get(pt) or STATIC_PAYLOAD_TYPES.get(pt) for pt in media.payload_types}


def _reference(offer: MediaDescription, answer: MediaDescription) -> bool:
    """The rule as main had it (session 41): both maps whole, then the answer in order."""
    if not offer.is_rtp:
        return bool(set(offer.formats) & set(answer.formats))
    offered = _codecs_by_format(offer)
    offered_keys = {r.codec_key for r in offered.values() if r is not None}  # type: ignore[attr-defined]
    for payload_type, rtpmap in _codecs_by_format(answer).items():
        if rtpmap is not None and rtpmap.codec_key in offered_keys:  # type: ignore[attr-defined]
            return True
        if rtpmap is None and payload_type in offered and offered[payload_type] is None:
            return True
    return False


# Static types with and without a codec (RFC 3551: 0 PCMU, 8 PCMA, 9 G722, 18 G729; 1, 2, 19
# unassigned or reserved) and dynamic ones, which name a codec only with an a=rtpmap.
_NUMBERS = st.sampled_from(["0", "8", "9", "18", "1", "19", "96", "97", "100", "101", "127"])
_CODECS = st.sampled_from(
    [
        "PCMU/8000",
        "pcmu/8000",
        "PCMA/8000",
        "G722/8000",
        "G729/8000",
        "opus/48000/2",
        "OPUS/48000/2",
        "opus/48000",
        "telephone-event/8000",
        "telephone-event/48000",
        "L16/44100/2",
        "L16/44100/1",
    ]
)


@st.composite
def _sections(draw: st.DrawFn, proto: str = "RTP/AVP") -> MediaDescription:
    formats = draw(st.lists(_NUMBERS, min_size=1, max_size=5))  # repeats allowed
    mapped = draw(st.lists(st.tuples(_NUMBERS, _CODECS), max_size=6))  # any number, twice too
    attributes = [("rtpmap", f"{pt} {codec}") for pt, codec in mapped]
    return MediaDescription(
        media="audio", port=4000, proto=proto, formats=tuple(formats)
    ).with_attributes(attributes)


@settings(max_examples=200, deadline=None)
@given(offer=_sections(), answer=_sections())
def test_shares_format_answers_as_the_rule_it_replaced(
    offer: MediaDescription, answer: MediaDescription
) -> None:
    assert offer_answer._shares_format(offer, answer) is _reference(offer, answer)


@settings(max_examples=50, deadline=None)
@given(offer=_sections(proto="udptl"), answer=_sections(proto="udptl"))
def test_shares_format_of_non_rtp_lines_compares_the_formats(
    offer: MediaDescription, answer: MediaDescription
) -> None:
    assert offer_answer._shares_format(offer, answer) is _reference(offer, answer)


def _section(formats: tuple[str, ...], *rtpmaps: str) -> MediaDescription:
    return MediaDescription(
        media="audio", port=4000, proto="RTP/AVP", formats=formats
    ).with_attributes([("rtpmap", value) for value in rtpmaps])


def test_the_usual_answer_and_a_renumbering_one_share_a_format() -> None:
    offer = _section(("0", "8", "101"), "0 PCMU/8000", "8 PCMA/8000", "101 telephone-event/8000")
    assert offer_answer._shares_format(offer, _section(("0", "101"), "0 PCMU/8000"))
    # The first format's number is the offer's with another codec; a later one renumbered.
    renumbered = _section(("101", "96"), "101 G729/8000", "96 pcma/8000")
    assert offer_answer._shares_format(offer, renumbered)
    assert not offer_answer._shares_format(offer, _section(("18",)))
    # A dynamic number with no a=rtpmap on either side matches by number, and only so.
    assert offer_answer._shares_format(_section(("97",)), _section(("97",)))
    assert not offer_answer._shares_format(_section(("97",)), _section(("96",)))
    assert not offer_answer._shares_format(_section(("97", "1")), _section(("97",), "97 G722/8000"))


def test_an_answer_that_swapped_the_offers_numbers_shares_a_format() -> None:
    # RFC 3264 §6.1: the answerer SHOULD keep the offer's numbers, but one that did not is still
    # an answer with the offer's codec. Each number here is the offer's, for the offer's other
    # codec: the number's own codec differs, so only the offer's codec set finds opus.
    offer = _section(("96", "97"), "96 opus/48000/2", "97 telephone-event/48000")
    assert offer_answer._shares_format(offer, _section(("97",), "97 opus/48000/2"))
    assert offer_answer._shares_format(
        offer, _section(("96", "97"), "96 telephone-event/48000", "97 OPUS/48000/2")
    )
    # A static number given another codec by a=rtpmap: the codec counts, not the number.
    offer = _section(("0", "8"), "0 PCMU/8000", "8 PCMA/8000")
    assert offer_answer._shares_format(offer, _section(("8",), "8 PCMU/8000"))
    assert not offer_answer._shares_format(offer, _section(("8",), "8 G722/8000"))


@pytest.mark.parametrize("where", ["offer", "answer"])
def test_a_malformed_rtpmap_is_refused_even_when_the_first_format_matches(where: str) -> None:
    good = _section(("0", "8"), "0 PCMU/8000", "8 PCMA/8000")
    bad = _section(("0", "8"), "0 PCMU/8000", "8 PCMA")
    offer, answer = (bad, good) if where == "offer" else (good, bad)
    with pytest.raises(SdpError, match="malformed a=rtpmap"):
        offer_answer._shares_format(offer, answer)
