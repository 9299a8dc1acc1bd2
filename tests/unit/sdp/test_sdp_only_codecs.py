"""``only_codecs`` (gateway/core/sdp/offer_answer.py): an audio line narrowed to a device
profile's codecs (``DeviceProfile.codecs``), as offers to and from that phone are."""

from __future__ import annotations

from gateway.core.sdp.model import MediaDescription
from gateway.core.sdp.offer_answer import only_codecs
from gateway.core.sdp.parser import parse_sdp_untrusted

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVPF 9 0 8 96 101 13\r\n"
    b"a=rtpmap:9 G722/8000\r\na=rtpmap:96 opus/48000/2\r\na=fmtp:96 useinbandfec=1\r\n"
    b"a=rtcp-fb:96 nack\r\na=rtcp-fb:* trr-int 100\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n"
    b"m=video 30002 RTP/AVP 97\r\na=rtpmap:97 H264/90000\r\n"
    b"m=audio 0 RTP/AVP 0\r\n"
)


def lines() -> tuple[MediaDescription, ...]:
    return parse_sdp_untrusted(SDP).media


def attributes(media: MediaDescription) -> list[tuple[str, str | None]]:
    return [(a.name, a.value) for a in media.attributes]


def test_our_offer_keeps_the_profiles_codecs_in_its_order() -> None:
    audio = lines()[0]
    kept = only_codecs(audio, ("pcma", "PCMU", "telephone-event"), reorder=True)
    assert kept is not None
    assert kept.formats == ("8", "0", "101")  # static numbers found without a=rtpmap
    assert attributes(kept) == [
        ("rtcp-fb", "* trr-int 100"),
        ("rtpmap", "101 telephone-event/8000"),
        ("fmtp", "101 0-16"),
        ("ptime", "20"),
    ]
    assert (kept.media, kept.port, kept.proto) == (audio.media, audio.port, audio.proto)


def test_a_phones_offer_keeps_its_own_order() -> None:
    kept = only_codecs(lines()[0], ("PCMU", "opus", "G722"), reorder=False)
    assert kept is not None
    assert kept.formats == ("9", "0", "96")
    assert ("fmtp", "96 useinbandfec=1") in attributes(kept)
    assert ("rtcp-fb", "96 nack") in attributes(kept)
    assert ("rtpmap", "101 telephone-event/8000") not in attributes(kept)  # not listed: gone


def test_events_and_comfort_noise_alone_leave_nothing_to_play() -> None:
    assert only_codecs(lines()[0], ("telephone-event", "CN", "G729"), reorder=True) is None


def test_other_lines_are_left_alone() -> None:
    _, video, rejected = lines()
    assert only_codecs(video, ("PCMU",), reorder=True) is video
    assert only_codecs(rejected, ("G722",), reorder=True) is rejected


def test_a_line_with_only_what_the_phone_takes_is_returned_as_it_is() -> None:
    audio = lines()[0]
    everything = ("G722", "PCMU", "PCMA", "opus", "telephone-event", "CN")
    assert only_codecs(audio, everything, reorder=False) is audio


WIDEBAND = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 30000 RTP/AVP 96 0 102 101 100 13\r\n"
    b"a=rtpmap:96 opus/48000/2\r\na=rtpmap:102 telephone-event/48000\r\na=fmtp:102 0-16\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
    b"a=rtpmap:100 CN/48000\r\n"
)


def test_events_and_comfort_noise_keep_only_a_kept_codecs_clock_rate() -> None:
    # Opus goes, and telephone-event/48000 and CN/48000 with it (RFC 4733 §2.1, RFC 3389 §5):
    # left first, telephone-event/48000 is the one a phone (and our DTMF interworking) takes.
    audio = parse_sdp_untrusted(WIDEBAND).media[0]
    for reorder in (True, False):
        kept = only_codecs(audio, ("PCMU", "telephone-event", "CN"), reorder=reorder)
        assert kept is not None
        assert kept.formats == ("0", "101", "13")
        assert ("rtpmap", "102 telephone-event/48000") not in attributes(kept)
        assert ("fmtp", "102 0-16") not in attributes(kept)
        assert ("rtpmap", "100 CN/48000") not in attributes(kept)
    both = only_codecs(audio, ("opus", "PCMU", "telephone-event"), reorder=True)
    assert both is not None
    assert both.formats == ("96", "0", "102", "101")  # each rate has its codec: both stay
