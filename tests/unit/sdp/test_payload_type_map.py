"""payload_type_map (gateway/core/sdp/offer_answer.py): how the relay renumbers RTP payload types
between two peers whose SDP numbers a codec differently (RFC 3264 §5.1, §6.1), from the two
descriptions alone."""

from __future__ import annotations

import pytest

from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import MediaDescription
from gateway.core.sdp.offer_answer import payload_type_map
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
