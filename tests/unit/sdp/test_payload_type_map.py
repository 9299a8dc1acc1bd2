"""payload_type_map (gateway/core/sdp/offer_answer.py): how the relay renumbers RTP payload types
between two peers whose SDP numbers a codec differently (RFC 3264 §5.1, §6.1), from the two
descriptions alone."""

from __future__ import annotations

import pytest

from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import MediaDescription
from gateway.core.sdp.offer_answer import (
    keep_leg_numbers,
    numbered_alike,
    payload_type_map,
    renumbered_media,
)
from gateway.core.sdp.parser import parse_sdp_untrusted


def audio(*lines: str, formats: str) -> MediaDescription:
    text = "\r\n".join(
        [
            "v=0",
            "o=- 1 1 IN IP4 192.0.2.1",
            "s=-",
            "c=IN IP4 192.0.2.1",
            "t=0 0",
            f"m=audio 4000 RTP/AVP {formats}",
            *lines,
            "",
        ]
    )
    return parse_sdp_untrusted(text.encode()).media[0]


CALLER = audio(
    "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", formats="0 101"
)
PICKER = audio(
    "a=rtpmap:0 PCMU/8000", "a=rtpmap:96 telephone-event/8000", "a=fmtp:96 0-15", formats="0 96"
)


def test_the_same_numbers_need_no_map() -> None:
    assert payload_type_map(CALLER, CALLER) == {}
    # An answer that kept a subset of the offer's formats (RFC 3264 §6.1) agrees too.
    answer = audio("a=rtpmap:101 telephone-event/8000", formats="0 101")
    assert payload_type_map(CALLER, answer) == {}
    assert payload_type_map(answer, CALLER) == {}


def test_telephone_event_101_and_96_are_mapped_each_way() -> None:
    assert payload_type_map(CALLER, PICKER) == {101: 96}
    assert payload_type_map(PICKER, CALLER) == {96: 101}


def test_a_format_only_one_side_has_is_not_mapped() -> None:
    with_opus = audio(
        "a=rtpmap:111 opus/48000/2", "a=rtpmap:101 telephone-event/8000", formats="111 0 101"
    )
    assert payload_type_map(with_opus, PICKER) == {101: 96}
    assert payload_type_map(PICKER, with_opus) == {96: 101}


def test_static_payload_types_match_by_codec_with_or_without_rtpmap() -> None:
    bare = audio(formats="0 8")  # RFC 3551 static types need no a=rtpmap
    named = audio("a=rtpmap:8 PCMA/8000", "a=rtpmap:0 PCMU/8000", formats="8 0")
    assert payload_type_map(bare, named) == {}
    # A dynamic number for a codec that has a static one is still that codec.
    dynamic = audio("a=rtpmap:97 PCMA/8000", formats="97")
    assert payload_type_map(bare, dynamic) == {8: 97}
    assert payload_type_map(dynamic, bare) == {97: 8}


def test_codecs_differ_by_clock_rate_and_channels() -> None:
    wideband = audio("a=rtpmap:100 telephone-event/16000", formats="9 100")
    assert payload_type_map(CALLER, wideband) == {}
    stereo = audio("a=rtpmap:96 L16/44100/2", formats="96")
    mono = audio("a=rtpmap:97 L16/44100", formats="97")
    assert payload_type_map(stereo, mono) == {}
    assert payload_type_map(stereo, audio("a=rtpmap:98 L16/44100/2", formats="98")) == {96: 98}


def test_a_codec_listed_twice_maps_to_the_one_with_the_same_fmtp() -> None:
    sender = audio("a=rtpmap:96 H264/90000", "a=fmtp:96 packetization-mode=1", formats="96")
    receiver = audio(
        "a=rtpmap:100 H264/90000",
        "a=fmtp:100 packetization-mode=0",
        "a=rtpmap:102 H264/90000",
        "a=fmtp:102 packetization-mode=1",
        formats="100 102",
    )
    assert payload_type_map(sender, receiver) == {96: 102}
    no_fmtp = audio("a=rtpmap:96 H264/90000", formats="96")
    assert payload_type_map(no_fmtp, receiver) == {96: 100}  # none alike: the first
    # The receiver's own number for the codec is kept when it is among them.
    assert payload_type_map(audio("a=rtpmap:102 H264/90000", formats="102"), receiver) == {}


def test_swapped_numbers_are_swapped_back() -> None:
    one = audio("a=rtpmap:96 opus/48000/2", "a=rtpmap:97 telephone-event/48000", formats="96 97")
    other = audio("a=rtpmap:97 opus/48000/2", "a=rtpmap:96 telephone-event/48000", formats="97 96")
    assert payload_type_map(one, other) == {96: 97, 97: 96}


def test_non_rtp_streams_have_no_map() -> None:
    fax = parse_sdp_untrusted(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=image 4000 udptl t38\r\n"
    ).media[0]
    assert payload_type_map(fax, CALLER) == {}
    assert payload_type_map(CALLER, fax) == {}


def test_an_unreadable_rtpmap_is_an_sdp_error() -> None:
    broken = audio("a=rtpmap:96 telephone-event", formats="96")
    with pytest.raises(SdpError):
        payload_type_map(broken, CALLER)


# -- keep_leg_numbers / renumbered_media: a re-offer keeps the leg's numbers (RFC 3264 §8.3.2) --


def test_a_re_offer_in_the_legs_own_numbers_is_left_alone() -> None:
    assert keep_leg_numbers(CALLER, CALLER) == {}
    assert keep_leg_numbers(CALLER, audio("a=rtpmap:0 PCMU/8000", formats="0")) == {}


def test_a_codec_keeps_the_number_the_leg_gave_it() -> None:
    # The leg knows telephone-event as 101; a transfer's target offers it as 96.
    assert keep_leg_numbers(CALLER, PICKER) == {96: 101}
    renumbered = renumbered_media(PICKER, keep_leg_numbers(CALLER, PICKER))
    assert renumbered.formats == ("0", "101")
    assert renumbered.attributes.values("rtpmap") == ("0 PCMU/8000", "101 telephone-event/8000")
    assert renumbered.attributes.values("fmtp") == ("101 0-15",)  # the target's parameters
    assert payload_type_map(renumbered, CALLER) == {}


def test_a_new_codec_on_a_number_the_leg_knows_as_another_gets_a_fresh_one() -> None:
    leg = audio("a=rtpmap:96 telephone-event/8000", formats="0 96")
    offer = audio(
        "a=rtpmap:96 opus/48000/2",
        "a=rtcp-fb:96 nack",
        "a=rtpmap:101 telephone-event/8000",
        formats="96 0 101",
    )
    assert keep_leg_numbers(leg, offer) == {96: 97, 101: 96}
    renumbered = renumbered_media(offer, {96: 97, 101: 96})
    assert renumbered.formats == ("97", "0", "96")
    assert renumbered.attributes.values("rtcp-fb") == ("97 nack",)
    assert renumbered.attributes.values("rtpmap") == ("97 opus/48000/2", "96 telephone-event/8000")


def test_swapped_numbers_are_swapped_back_in_the_re_offer() -> None:
    leg = audio("a=rtpmap:96 opus/48000/2", "a=rtpmap:97 telephone-event/48000", formats="96 97")
    offer = audio("a=rtpmap:97 opus/48000/2", "a=rtpmap:96 telephone-event/48000", formats="97 96")
    assert keep_leg_numbers(leg, offer) == {97: 96, 96: 97}


def test_no_fresh_number_left_means_no_renumbering() -> None:
    every = " ".join(str(n) for n in range(96, 128))
    leg = audio(*(f"a=rtpmap:{n} L16/{8000 + n}" for n in range(96, 128)), formats=every)
    assert keep_leg_numbers(leg, audio("a=rtpmap:96 opus/48000/2", formats="96")) == {}


def test_non_rtp_or_rejected_lines_are_not_renumbered() -> None:
    fax = parse_sdp_untrusted(
        b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
        b"m=image 4000 udptl t38\r\n"
    ).media[0]
    assert keep_leg_numbers(fax, PICKER) == {}
    assert keep_leg_numbers(CALLER, fax) == {}
    assert renumbered_media(fax, {}) is fax


def test_a_number_the_leg_knows_as_the_same_codec_is_kept() -> None:
    leg = audio("a=rtpmap:96 H264/90000", "a=rtpmap:97 H264/90000", formats="96 97")
    assert keep_leg_numbers(leg, audio("a=rtpmap:97 H264/90000", formats="97")) == {}


def test_numbered_alike_is_the_usual_answer_found_on_the_text() -> None:
    answer = audio("a=rtpmap:101 telephone-event/8000", formats="0 101")
    assert numbered_alike(CALLER, answer)
    assert numbered_alike(CALLER, CALLER)
    assert numbered_alike(CALLER, audio("a=RTPMAP:101 Telephone-Event/8000", formats="101"))
    assert not numbered_alike(CALLER, PICKER)  # 96 is not offered
    assert not numbered_alike(answer, CALLER)  # not every format of the narrower is offered
    wrong = audio("a=rtpmap:101 opus/48000/2", formats="101")
    assert not numbered_alike(CALLER, wrong)
    # Where numbered_alike holds, the full comparison finds nothing either.
    for narrower in (answer, CALLER):
        assert payload_type_map(CALLER, narrower) == payload_type_map(narrower, CALLER) == {}
        assert keep_leg_numbers(CALLER, narrower) == {}


# -- RFC 2198 RED: its a=fmtp lists payload types, renumbered with the codecs they name ----------

BROWSER = audio(
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2",
    "a=fmtp:63 111/111",
    "a=rtpmap:126 telephone-event/8000",
    formats="111 63 126",
)


def test_webrtc_red_fmtp_follows_the_opus_number() -> None:
    renumbered = renumbered_media(BROWSER, {111: 109, 63: 121, 126: 101})
    assert renumbered.formats == ("109", "121", "101")
    assert renumbered.attributes.values("fmtp") == (
        "109 minptime=10;useinbandfec=1",  # Opus's parameters are not payload types: as they are
        "121 109/109",
    )


def test_red_fmtp_is_renumbered_when_only_the_redundant_codec_moves() -> None:
    renumbered = renumbered_media(BROWSER, {111: 96})
    assert renumbered.attributes.values("rtpmap")[1] == "63 red/48000/2"
    assert renumbered.attributes.values("fmtp") == ("96 minptime=10;useinbandfec=1", "63 96/96")


def test_rfc_2198_red_fmtp_of_several_codecs_maps_each() -> None:
    # RFC 2198 §5's example: primary PCMU-like 0, redundant DVI4 5; here with dynamic numbers.
    media = audio(
        "a=rtpmap:121 RED/8000",
        "a=fmtp:121 96/0/97",
        "a=rtpmap:96 AMR/8000",
        "a=rtpmap:97 iLBC/8000",
        formats="121 96 0 97",
    )
    renumbered = renumbered_media(media, {96: 98, 97: 99})
    assert renumbered.attributes.values("fmtp") == ("121 98/0/99",)


def test_a_red_fmtp_not_listing_payload_types_is_left_alone() -> None:
    media = audio(
        "a=rtpmap:63 red/48000/2", "a=fmtp:63 foo=111/111", "a=fmtp:111 111/111", formats="63 111"
    )
    renumbered = renumbered_media(media, {111: 109, 63: 121})
    # 111's fmtp is not RED's: its parameters are the codec's own, never read as numbers.
    assert renumbered.attributes.values("fmtp") == ("121 foo=111/111", "109 111/111")
