"""The session description values: edits return new values, accessors, secrets stay out of reprs."""

from __future__ import annotations

import attrs
import pytest

from gateway.core.sdp.errors import LocalSdpError, SdpError
from gateway.core.sdp.model import (
    Attribute,
    Attributes,
    Connection,
    Direction,
    MediaDescription,
    Origin,
    Rtcp,
    RtpMap,
    SessionDescription,
    parse_rtcp_untrusted,
    parse_rtpmap_untrusted,
    redact_attribute_value,
)
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from tests.unit.sdp.sdp_samples import (
    BARESIP_PLAIN,
    BARESIP_SDES,
    LINPHONE_SRTP,
    SDES_KEY_80,
    SIPP_UAC,
    WEBRTC_ICE_PWD,
    WEBRTC_OFFER,
    crlf,
)

ORIGIN = Origin("gw", 10, 20, "IN", "IP4", "192.0.2.10")


def sipp() -> SessionDescription:
    return parse_sdp_untrusted(crlf(SIPP_UAC))


def test_values_are_frozen() -> None:
    sd = sipp()
    with pytest.raises(AttributeError):
        sd.session_name = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        sd.media[0].port = 1  # type: ignore[misc]


def test_set_port_and_connection() -> None:
    sd = sipp()
    audio = sd.media[0].with_port(30000).with_connection(Connection.for_address("2001:db8::5"))
    edited = sd.with_media_at(0, audio).with_connection(Connection.for_address("203.0.113.9"))
    assert sd.media[0].port == 6000  # the original is untouched
    assert edited.media[0].port == 30000
    assert edited.connection == Connection("IN", "IP4", "203.0.113.9")
    assert edited.effective_connection(edited.media[0]) == Connection("IN", "IP6", "2001:db8::5")
    wire = serialize_sdp(edited)
    assert b"c=IN IP4 203.0.113.9\r\n" in wire
    assert b"m=audio 30000 RTP/AVP 0\r\nc=IN IP6 2001:db8::5\r\n" in wire
    assert parse_sdp_untrusted(wire) == edited
    back = edited.media[0].with_connection(None)
    assert back.connections == () and edited.effective_connection(back) == edited.connection


def test_with_port_range_and_index_are_checked() -> None:
    audio = sipp().media[0]
    assert audio.with_port(0).is_rejected
    assert audio.with_port(5004, 2).port_count == 2
    with pytest.raises(LocalSdpError):
        audio.with_port(65536)
    with pytest.raises(LocalSdpError):
        sipp().with_media_at(1, audio)


def test_bump_origin_version() -> None:
    sd = sipp()
    bumped = sd.with_bumped_version()
    assert bumped.origin.session_version == sd.origin.session_version + 1
    assert bumped.origin.session_id == sd.origin.session_id
    assert sd.with_origin(ORIGIN).origin == ORIGIN
    assert str(ORIGIN) == "gw 10 20 IN IP4 192.0.2.10"


def test_attribute_edits_keep_order() -> None:
    attributes = Attributes.of([("rtpmap", "0 PCMU/8000"), ("sendrecv", None), ("ptime", "20")])
    assert attributes.add("rtcp-mux").items[-1] == Attribute("rtcp-mux", None)
    assert attributes.extend([("a", "1"), ("b", None)]).items[-2:] == (("a", "1"), ("b", None))
    assert attributes.set("ptime", "30").items[2] == ("ptime", "30")
    assert attributes.set("maxptime", "60").items[-1] == ("maxptime", "60")
    assert list(attributes.set("rtpmap", "0 PCMU/8000", "8 PCMA/8000")) == [
        ("rtpmap", "0 PCMU/8000"),
        ("rtpmap", "8 PCMA/8000"),
        ("sendrecv", None),
        ("ptime", "20"),
    ]
    assert attributes.set("ptime").has("ptime") is False
    assert [a.name for a in attributes.remove("SENDRECV", "ptime")] == ["rtpmap"]
    assert len(attributes.remove_if(lambda a: a.value is None)) == 2
    assert attributes.get_all("sendrecv") == (None,)
    assert attributes.values("sendrecv") == ()


def test_replace_and_remove_attributes_on_media_and_session() -> None:
    sd = parse_sdp_untrusted(crlf(BARESIP_SDES))
    audio = sd.media[0]
    plain = audio.with_attributes(audio.attributes.remove("crypto"))
    assert plain.crypto == () and len(plain.attributes) == len(audio.attributes) - 1
    assert plain.with_attributes([("x", "y")]).attributes == Attributes((Attribute("x", "y"),))
    sd2 = sd.with_attributes(sd.attributes.set("tool", "voipgw"))
    assert sd2.attributes.get("tool") == "voipgw"
    assert sd2.with_attributes([]).attributes.items == ()


def test_set_direction_replaces_in_place_or_appends() -> None:
    audio = parse_sdp_untrusted(crlf(BARESIP_PLAIN)).media[0]
    index = [a.name for a in audio.attributes].index("sendrecv")
    held = audio.with_direction(Direction.SENDONLY)
    assert held.direction is Direction.SENDONLY
    assert held.attributes.items[index] == ("sendonly", None)
    assert len(held.attributes) == len(audio.attributes)
    assert audio.with_direction(None).direction is None
    sipp_audio = sipp().media[0]
    assert sipp_audio.with_direction(Direction.INACTIVE).attributes.items[-1] == ("inactive", None)
    sd = sipp().with_direction(Direction.RECVONLY)
    assert sd.direction is Direction.RECVONLY
    assert sd.effective_direction(sd.media[0]) is Direction.RECVONLY
    assert sd.with_direction(None).direction is None


def test_two_direction_attributes_collapse_to_one() -> None:
    attributes = Attributes.of([("sendrecv", None), ("x", "1"), ("inactive", None)])
    assert attributes.direction() is Direction.SENDRECV  # the first one counts
    assert list(attributes.with_direction(Direction.RECVONLY)) == [("recvonly", None), ("x", "1")]


def test_direction_flags() -> None:
    assert [(d.sends, d.receives) for d in Direction] == [
        (True, True),
        (True, False),
        (False, True),
        (False, False),
    ]
    for d in Direction:
        assert Direction.from_flags(sends=d.sends, receives=d.receives) is d
        assert d.reversed().reversed() is d
    assert Direction.SENDONLY.reversed() is Direction.RECVONLY
    assert Direction.SENDRECV.reversed() is Direction.SENDRECV


def test_rtpmap_and_rtcp_parsers() -> None:
    assert str(parse_rtpmap_untrusted("96 opus/48000/2")) == "96 opus/48000/2"
    assert parse_rtpmap_untrusted("8 PCMA/8000").codec_key == ("pcma", 8000, 1)
    assert parse_rtcp_untrusted("53021") == Rtcp(53021)
    rtcp = parse_rtcp_untrusted("53021 IN IP4 126.16.64.4")
    assert str(rtcp) == "53021 IN IP4 126.16.64.4"
    for bad in ("", "96", "96 opus", "x opus/8000", "96 opus/fast", "200 opus/8000", "96 a/1/2/3"):
        with pytest.raises(SdpError):
            parse_rtpmap_untrusted(bad)
    for bad in ("", "x", "70000", "1 IN IP4", "1 IN IP4 ::1"):
        with pytest.raises(SdpError):
            parse_rtcp_untrusted(bad)


def test_rtpmap_values_are_memoized_and_errors_are_not() -> None:
    # The same short text gives the same (frozen) value without parsing it again; a bad text
    # raises every time it is read; a long one is parsed each time and never held.
    first = parse_rtpmap_untrusted("101 telephone-event/8000")
    assert parse_rtpmap_untrusted("101 telephone-event/8000") is first
    assert first == RtpMap(101, "telephone-event", 8000)
    for _ in range(2):
        with pytest.raises(SdpError):
            parse_rtpmap_untrusted("101 telephone-event/fast")
    long_name = "96 " + "x" * 80 + "/8000"
    assert parse_rtpmap_untrusted(long_name) == RtpMap(96, "x" * 80, 8000)
    assert parse_rtpmap_untrusted(long_name) is not parse_rtpmap_untrusted(long_name)


def test_a_memoized_rtpmap_is_frozen_and_each_spelling_keeps_its_own() -> None:
    # Every later read of a text gets the value memoized for it: one caller changing it would
    # change every call's parse, so an RtpMap stays frozen. The key is the exact text: a name's
    # spellings are parsed apart and each keeps its case (an answer echoes the peer's, and
    # codec_key compares them in any case).
    upper = parse_rtpmap_untrusted("0 PCMU/8000")
    lower = parse_rtpmap_untrusted("0 pcmu/8000")
    assert (upper.encoding, lower.encoding) == ("PCMU", "pcmu")
    assert parse_rtpmap_untrusted("0 PCMU/8000").encoding == "PCMU"
    assert upper.codec_key == lower.codec_key
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        upper.encoding = "G729"  # type: ignore[misc]
    assert parse_rtpmap_untrusted("0 PCMU/8000") == RtpMap(0, "PCMU", 8000)


def test_malformed_attributes_fail_when_read_not_when_parsed() -> None:
    # An attribute nobody asks about never fails a call; reading a broken one is a 488.
    text = crlf(SIPP_UAC) + b"a=rtpmap:96 broken\r\na=ptime:soon\r\na=rtcp:port\r\n"
    audio = parse_sdp_untrusted(text).media[0]
    for read in (audio.rtpmaps, lambda: audio.ptime, lambda: audio.rtcp):
        with pytest.raises(SdpError) as info:
            read()
        assert info.value.sip_status == 488


def test_crypto_ice_pwd_and_key_are_redacted_in_reprs() -> None:
    sdes = parse_sdp_untrusted(crlf(BARESIP_SDES))
    for text in (repr(sdes), str(sdes), repr(sdes.media[0]), repr(sdes.media[0].attributes)):
        assert SDES_KEY_80 not in text
        assert "AES_CM_128_HMAC_SHA1_80 inline:<redacted>" in text
    assert SDES_KEY_80 in sdes.media[0].crypto[0]  # the value itself is intact

    webrtc = parse_sdp_untrusted(crlf(WEBRTC_OFFER))
    assert WEBRTC_ICE_PWD not in repr(webrtc)
    assert "ice-ufrag" in repr(webrtc)

    keyed = sipp().with_media_at(
        0, MediaDescription("audio", 1, "RTP/AVP", ("0",), key="clear:s3cr3t")
    )
    keyed = keyed.with_attributes([("key-mgmt", "mikey AQAFgM0XflABAAAAAAAAAAAAAAsAyO")])
    assert "s3cr3t" not in repr(keyed) and "AQAFgM0X" not in repr(keyed)
    assert "s3cr3t" not in repr(keyed.with_origin(ORIGIN).media[0])
    assert "s3cr3t" in serialize_sdp(keyed).decode()


def test_redaction_handles_several_inline_keys() -> None:
    value = "1 AES_CM_128_HMAC_SHA1_32 inline:KEYONE|2^20|1:4;inline:KEYTWO|2^20|2:4 KDR=0"
    redacted = redact_attribute_value("CRYPTO", value)
    assert redacted == ("1 AES_CM_128_HMAC_SHA1_32 inline:<redacted>;inline:<redacted> KDR=0")
    assert redact_attribute_value("rtpmap", "0 PCMU/8000") == "0 PCMU/8000"
    assert redact_attribute_value("crypto", None) is None


def test_serializer_refuses_line_breaks_without_echoing_them() -> None:
    sd = sipp()
    smuggled = sd.with_attributes([("crypto", f"1 X inline:{SDES_KEY_80}\r\nm=audio 1 RTP/AVP 0")])
    with pytest.raises(LocalSdpError) as info:
        serialize_sdp(smuggled)
    assert SDES_KEY_80 not in str(info.value)
    with pytest.raises(LocalSdpError):
        serialize_sdp(sd.with_media([]).with_origin(Origin("a b\n", 1, 1, "IN", "IP4", "x")))
    with pytest.raises(LocalSdpError):
        serialize_sdp(SessionDescription(ORIGIN, times=()))
    with pytest.raises(LocalSdpError):
        serialize_sdp(sd.with_media([MediaDescription("audio", 70000, "RTP/AVP", ("0",))]))


def test_serialize_a_built_description() -> None:
    sd = SessionDescription(
        ORIGIN,
        connection=Connection.for_address("192.0.2.10"),
        media=(
            MediaDescription(
                "audio",
                40000,
                "RTP/AVP",
                ("0", "101"),
                attributes=Attributes.of(
                    [("rtpmap", "101 telephone-event/8000"), ("sendrecv", None)]
                ),
            ),
        ),
    )
    assert serialize_sdp(sd) == (
        b"v=0\r\no=gw 10 20 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
        b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    )
    assert parse_sdp_untrusted(serialize_sdp(sd)) == sd


def test_connection_helpers() -> None:
    assert Connection.for_address("0.0.0.0").is_null
    assert not Connection.for_address("::").is_null
    assert Connection("IN", "IP4", "224.2.1.1", ttl=127, count=3).connection_address == (
        "224.2.1.1/127/3"
    )
    assert Connection.for_address("ff1e::1").is_multicast
    assert not Connection.for_address("example.com").is_multicast


def test_linphone_payload_types_and_formats() -> None:
    audio = parse_sdp_untrusted(crlf(LINPHONE_SRTP)).media[0]
    assert audio.payload_types == (96, 97, 98, 0, 8, 18, 99, 100, 101)
    assert audio.with_formats([0, "8"]).formats == ("0", "8")


def test_with_attributes_keeps_every_other_field() -> None:
    """with_attributes builds its copy field by field (not through attrs.evolve): a field added to
    the class later and left out there would silently fall back to its default."""
    media = MediaDescription(
        "audio",
        4000,
        "RTP/AVP",
        ("0",),
        port_count=2,
        information="i",
        connections=(Connection("IN", "IP4", "192.0.2.1"),),
        bandwidths=(),
        key="prompt",
        attributes=Attributes.of([("sendonly", None)]),
    )
    new = Attributes.of([("recvonly", None)])
    assert media.with_attributes(new) == MediaDescription(
        **{**attrs_fields(media), "attributes": new}
    )
    session = SessionDescription(
        ORIGIN,
        session_name="s",
        version=0,
        information="i",
        uri="http://example.com",
        emails=("a@example.com",),
        phones=("+1",),
        connection=Connection("IN", "IP4", "192.0.2.1"),
        key="prompt",
        attributes=Attributes.of([("sendonly", None)]),
        media=(media,),
    )
    assert session.with_attributes(new) == SessionDescription(
        **{**attrs_fields(session), "attributes": new}
    )


def attrs_fields(value: object) -> dict[str, object]:
    return {f.alias: getattr(value, f.name) for f in attrs.fields(type(value))}
