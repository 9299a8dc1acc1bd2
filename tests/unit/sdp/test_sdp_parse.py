"""Parsing real-world session descriptions: every line kept, typed accessors, byte-exact relay."""

from __future__ import annotations

import pytest

from gateway.core.sdp.model import (
    Attribute,
    Bandwidth,
    Connection,
    Direction,
    Origin,
    Rtcp,
    RtpMap,
    TimeDescription,
)
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from tests.unit.sdp.sdp_samples import (
    ALL_SAMPLES,
    BARESIP_DTLS,
    BARESIP_FINGERPRINT,
    BARESIP_PLAIN,
    BARESIP_SDES,
    IPV6,
    LINPHONE_SRTP,
    MULTICAST_SCHEDULE,
    RFC8866_EXAMPLE,
    RTPENGINE_SRTP_OFFER,
    SDES_KEY_80,
    SIPP_UAC,
    UNKNOWN_ATTRIBUTES,
    WEBRTC_OFFER,
    crlf,
)


@pytest.mark.parametrize("name", sorted(ALL_SAMPLES))
def test_relay_is_byte_exact(name: str) -> None:
    wire = crlf(ALL_SAMPLES[name])
    assert serialize_sdp(parse_sdp_untrusted(wire)) == wire


@pytest.mark.parametrize("name", sorted(ALL_SAMPLES))
def test_lf_only_and_str_input_parse_the_same(name: str) -> None:
    wire = crlf(ALL_SAMPLES[name])
    expected = parse_sdp_untrusted(wire)
    assert parse_sdp_untrusted(wire.replace(b"\r\n", b"\n")) == expected
    assert parse_sdp_untrusted(wire.decode()) == expected
    # Some stacks omit the final line end, others add a blank line after it.
    assert parse_sdp_untrusted(wire.rstrip(b"\r\n")) == expected
    assert parse_sdp_untrusted(wire + b"\r\n") == expected


def test_baresip_offer() -> None:
    sd = parse_sdp_untrusted(crlf(BARESIP_PLAIN))
    assert sd.version == 0
    assert sd.origin == Origin("-", 3877100932, 1999646198, "IN", "IP4", "127.0.0.1")
    assert sd.session_name == "-"
    assert sd.connection == Connection("IN", "IP4", "127.0.0.1")
    assert sd.times == (TimeDescription(0, 0),)
    assert list(sd.attributes) == [Attribute("tool", "baresip 1.0.0")]
    (audio,) = sd.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 20102, "RTP/AVP")
    assert audio.formats == ("0", "8", "96", "101")
    assert audio.payload_types == (0, 8, 96, 101)
    assert audio.is_rtp and not audio.is_rejected
    assert audio.rtpmap(96) == RtpMap(96, "opus", 48000, 2)
    assert audio.rtpmap(101) == RtpMap(101, "telephone-event", 8000)
    assert audio.fmtp(96) == "stereo=1;sprop-stereo=1"
    assert audio.fmtp(101) == "0-15"
    assert audio.fmtp(0) is None
    assert audio.direction is Direction.SENDRECV
    assert audio.ptime == 20.0
    assert audio.rtcp is None and not audio.rtcp_mux
    assert audio.connection is None
    assert sd.effective_connection(audio) == Connection("IN", "IP4", "127.0.0.1")
    names = [a.name for a in audio.attributes]
    assert names == ["rtpmap"] * 3 + ["fmtp", "rtpmap", "fmtp", "sendrecv", "label",
                     "rtcp-rsize", "ssrc", "minptime", "ptime"]  # fmt: skip
    assert audio.attributes.get("rtcp-rsize") is None and "rtcp-rsize" in audio.attributes


def test_sdes_offers_keep_crypto_lines_raw_and_in_order() -> None:
    (audio,) = parse_sdp_untrusted(crlf(BARESIP_SDES)).media
    assert audio.proto == "RTP/SAVP"
    assert audio.crypto == (f"1 AES_CM_128_HMAC_SHA1_80 inline:{SDES_KEY_80}",)

    (audio,) = parse_sdp_untrusted(crlf(RTPENGINE_SRTP_OFFER)).media
    suites = [line.split()[1] for line in audio.crypto]
    assert suites[:3] == ["AEAD_AES_256_GCM", "AEAD_AES_128_GCM", "AES_256_CM_HMAC_SHA1_80"]
    assert len(suites) == 12
    assert [line.split()[0] for line in audio.crypto] == [str(n) for n in range(1, 13)]
    assert audio.rtcp == Rtcp(31005)
    assert audio.setup == "actpass"
    assert audio.fingerprints[0].startswith("sha-256 06:29:84")
    assert audio.attributes.get("tls-id") == "8d2a6a0d8e1ed2e3a5e4f1b2c3d4e5f6"


def test_linphone_static_payload_types_need_no_rtpmap() -> None:
    (audio,) = parse_sdp_untrusted(crlf(LINPHONE_SRTP)).media
    assert audio.rtpmaps().get(18) is None
    assert audio.rtpmap(18) == RtpMap(18, "G729", 8000)
    assert audio.fmtp(18) == "annexb=yes"
    assert audio.rtpmap(0) == RtpMap(0, "PCMU", 8000)
    assert audio.rtpmap(99) == RtpMap(99, "telephone-event", 48000)
    assert audio.rtpmap(120) is None  # dynamic, not mapped
    assert len(audio.crypto) == 4
    assert audio.direction is None
    assert audio.attributes.values("rtcp-fb") == ("* trr-int 5000", "* ccm tmmbr")


def test_sipp_default_offer() -> None:
    sd = parse_sdp_untrusted(crlf(SIPP_UAC))
    assert sd.origin.username == "user1"
    (audio,) = sd.media
    assert (audio.port, audio.formats) == (6000, ("0",))
    assert sd.effective_direction(audio) is Direction.SENDRECV  # no attribute: the default


def test_dtls_attributes_at_session_level_apply_to_media() -> None:
    sd = parse_sdp_untrusted(crlf(BARESIP_DTLS))
    (audio,) = sd.media
    assert audio.proto == "UDP/TLS/RTP/SAVPF"
    assert audio.fingerprints == () and audio.setup is None
    assert sd.effective_fingerprints(audio) == (BARESIP_FINGERPRINT,)
    assert sd.effective_setup(audio) == "actpass"


def test_webrtc_offer() -> None:
    sd = parse_sdp_untrusted(crlf(WEBRTC_OFFER))
    assert sd.connection is None
    assert sd.attributes.get("group") == "BUNDLE 0 1"
    assert sd.attributes.get("msid-semantic") == " WMS stream0"  # leading space kept
    audio, video = sd.media
    assert audio.port == 9 and audio.connection == Connection("IN", "IP4", "0.0.0.0")
    assert audio.rtcp == Rtcp(9, Connection("IN", "IP4", "0.0.0.0"))
    assert audio.rtcp_mux and video.rtcp_mux
    assert audio.attributes.get("ice-ufrag") == "8hhY"
    assert audio.attributes.get("ice-options") == "trickle"
    assert audio.setup == "actpass"
    assert sd.effective_fingerprints(video) == video.fingerprints != ()
    assert audio.rtpmap(63) == RtpMap(63, "red", 48000, 2)
    assert audio.fmtp(111) == "minptime=10;useinbandfec=1"
    assert video.fmtp(97) == "apt=96"
    assert video.attributes.values("rtcp-fb") == ("96 nack", "96 nack pli")
    assert [m.attributes.get("mid") for m in sd.media] == ["0", "1"]


def test_unknown_attributes_survive_in_order() -> None:
    sd = parse_sdp_untrusted(crlf(UNKNOWN_ATTRIBUTES))
    assert list(sd.attributes) == [("X-nat", "0")]
    (audio,) = sd.media
    assert audio.attributes.get("silenceSupp") == "off - - - -"
    assert audio.attributes.has("x-custom-thing")
    assert audio.attributes.get("x-cdsc") == " 1 audio RTP/AVP 0 18"  # names ignore case
    assert [a.name for a in audio.attributes][-5:] == [
        "silenceSupp",
        "x-custom-thing",
        "X-cdsc",
        "ptime",
        "sendrecv",
    ]
    assert audio.rtpmap(19) == RtpMap(19, "CN", 8000)


def test_ipv6_connection_and_rtcp_address() -> None:
    sd = parse_sdp_untrusted(crlf(IPV6))
    assert sd.origin.addrtype == "IP6" and sd.origin.address == "2001:db8::10"
    assert sd.connection == Connection("IN", "IP6", "2001:db8::10")
    (audio,) = sd.media
    assert audio.rtcp == Rtcp(49171, Connection("IN", "IP6", "2001:db8::11"))
    assert audio.direction is Direction.RECVONLY


def test_rfc8866_example_with_media_level_connection() -> None:
    sd = parse_sdp_untrusted(crlf(RFC8866_EXAMPLE))
    assert sd.information == "SDP Offer #1"
    assert sd.uri == "http://www.jdoe.example.com/home.html"
    assert sd.emails == ("Jane Doe <jane@jdoe.example.com>",)
    assert sd.phones == ("+1 617 555-6011",)
    first, second, video = sd.media
    assert sd.effective_connection(first) == Connection("IN", "IP4", "198.51.100.1")
    assert sd.effective_connection(video) == Connection("IN", "IP6", "2001:db8::2")
    assert second.attributes.items == ()
    assert video.rtpmap(99) == RtpMap(99, "h263-1998", 90000)


def test_multicast_repeat_zone_key_bandwidth() -> None:
    sd = parse_sdp_untrusted(crlf(MULTICAST_SCHEDULE))
    assert sd.connection == Connection("IN", "IP4", "233.252.0.1", ttl=127, count=3)
    assert sd.connection.is_multicast
    assert sd.bandwidths == (Bandwidth("CT", 128),)
    first, second = sd.times
    assert first == TimeDescription(
        3724394400,
        3724398000,
        repeats=("604800 3600 0 90000", "7d 1h 0 25h"),
        zone="2882844526 -1h 2898848070 0",
    )
    assert second == TimeDescription(3725000000, 3725003600)
    assert sd.key == "prompt"
    assert sd.direction is Direction.RECVONLY
    audio, video = sd.media
    assert (audio.port, audio.port_count) == (49170, 2)
    assert audio.bandwidths == (Bandwidth("AS", 64),)
    assert audio.direction is None
    assert sd.effective_direction(audio) is Direction.RECVONLY  # session level applies
    assert video.connection == Connection("IN", "IP6", "ff1e:db8::1", count=3)


def test_zone_after_all_time_descriptions_rfc4566_placement() -> None:
    text = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=1 2\nt=3 4\nz=5 -1h\n"
    sd = parse_sdp_untrusted(text)
    assert sd.times == (TimeDescription(1, 2), TimeDescription(3, 4, zone="5 -1h"))
    assert serialize_sdp(sd) == text.replace("\n", "\r\n").encode()


def test_media_direction_overrides_session_direction() -> None:
    text = crlf(SIPP_UAC).replace(b"t=0 0\r\n", b"t=0 0\r\na=sendonly\r\n") + b"a=inactive\r\n"
    sd = parse_sdp_untrusted(text)
    assert sd.direction is Direction.SENDONLY
    assert sd.effective_direction(sd.media[0]) is Direction.INACTIVE


def test_lenient_spacing_and_property_attribute_trailing_space() -> None:
    text = (
        "v=0\no=-  1   2 IN IP4 192.0.2.1\ns=\nc=IN  IP4 192.0.2.1\nt=0  0\n"
        "m=audio  4000 RTP/AVP  0 8\na=sendrecv \n"
    )
    sd = parse_sdp_untrusted(text)
    assert sd.session_name == ""
    assert (sd.origin.session_id, sd.origin.session_version) == (1, 2)
    assert sd.media[0].formats == ("0", "8")
    assert sd.media[0].direction is Direction.SENDRECV


def test_rejected_stream_without_formats_or_connection_is_accepted() -> None:
    text = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nm=video 0 RTP/AVP\n"
    (video,) = parse_sdp_untrusted(text).media
    assert video.is_rejected and video.formats == ()


def test_non_rtp_media_keeps_format_tokens() -> None:
    text = (
        "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
        "m=image 4002 udptl t38\na=T38FaxVersion:0\n"
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\n"
    )
    image, data = parse_sdp_untrusted(text).media
    assert image.formats == ("t38",) and not image.is_rtp and image.payload_types == ()
    assert data.proto == "UDP/DTLS/SCTP" and data.formats == ("webrtc-datachannel",)


def test_charset_bytes_that_are_not_utf8_relay_unchanged() -> None:
    wire = crlf(SIPP_UAC).replace(b"s=-", b"s=Caf\xe9")
    sd = parse_sdp_untrusted(wire)
    assert sd.session_name.startswith("Caf")
    assert serialize_sdp(sd) == wire


def test_ptime_may_be_decimal() -> None:
    (audio,) = parse_sdp_untrusted(crlf(SIPP_UAC) + b"a=ptime:22.5\r\na=maxptime:60\r\n").media
    assert audio.ptime == 22.5 and audio.maxptime == 60.0
