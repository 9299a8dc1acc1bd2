"""``codec_in_use_only`` (gateway/core/sdp/offer_answer.py): a re-offer of ours narrowed to the
codec in use on its stream, as the join fallback offers a carrier the call's media
(docs/transfers.md): the carrier's answer can then only keep that codec or refuse."""

from __future__ import annotations

from gateway.core.sdp.model import MediaDescription
from gateway.core.sdp.offer_answer import codec_change, codec_in_use_only
from gateway.core.sdp.parser import parse_sdp_untrusted

HEAD = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
OURS = (
    "m=audio 30000 RTP/AVP 0 8 9 96 97 101 13\r\n"
    "a=rtpmap:9 G722/8000\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n"
    "a=rtpmap:97 red/48000/2\r\na=fmtp:97 96/96\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
)


def line(text: str) -> MediaDescription:
    return parse_sdp_untrusted((HEAD + text).encode()).media[0]


def test_only_the_codec_the_peer_uses_stays_with_its_events_and_attributes() -> None:
    # The transferor's phone answered G722 first (its number 9), then PCMU.
    before = line("m=audio 40000 RTP/AVP 9 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
    narrowed = codec_in_use_only(line(OURS), before)
    assert narrowed.formats == ("9", "101", "13")
    names = [(a.name, (a.value or "").split(" ")[0]) for a in narrowed.attributes]
    assert names == [("rtpmap", "9"), ("rtpmap", "101"), ("fmtp", "101"), ("ptime", "20")]
    # An answer to it that keeps G722 is taken by codec_change; PCMU alone could not be sent.
    events = "a=rtpmap:101 telephone-event/8000\r\n"
    assert codec_change(narrowed, before, line("m=audio 1 RTP/AVP 9 101\r\n" + events)) is None
    left_out = codec_change(line(OURS), before, line("m=audio 1 RTP/AVP 0 101\r\n" + events))
    assert left_out is not None and "left out" in (left_out.refused or "")


def test_the_codec_in_use_by_another_number_and_red_wrapping_it() -> None:
    # The peer numbers opus 111 and RED 112 (RFC 3264 §6.1 lets it): matched by codec.
    before = line(
        "m=audio 40000 RTP/AVP 112 111 0\r\n"
        "a=rtpmap:112 red/48000/2\r\na=rtpmap:111 opus/48000/2\r\n"
    )
    narrowed = codec_in_use_only(line(OURS), before)
    assert narrowed.formats == ("96", "97")  # no telephone-event at 48000 in our line


def test_a_line_whose_codec_in_use_cannot_be_told_is_left_as_it_is() -> None:
    ours = line(OURS)
    assert codec_in_use_only(ours, line("m=audio 40000 RTP/AVP 18\r\n")) is ours  # G729
    assert codec_in_use_only(ours, line("m=audio 40000 RTP/AVP 101 13\r\n")) is ours
    video = line("m=video 30002 RTP/AVP 98\r\na=rtpmap:98 H264/90000\r\n")
    assert codec_in_use_only(video, video) is video
    rejected = line("m=audio 0 RTP/AVP 0\r\n")
    assert codec_in_use_only(rejected, line(OURS)) is rejected
