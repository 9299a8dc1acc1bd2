"""RFC 3264 offer/answer: stream matching, rejection, directions, codecs, hold, o= versions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pytest

from gateway.core.sdp.errors import LocalSdpError, SdpError
from gateway.core.sdp.model import (
    Connection,
    Direction,
    MediaDescription,
    Origin,
    RtpMap,
    SessionDescription,
    TimeDescription,
)
from gateway.core.sdp.offer_answer import (
    ANSWER_DIRECTION,
    Codec,
    NegotiatedFormat,
    answer_direction,
    apply_version_rule,
    check_version_rule,
    direction_allowed,
    has_common_codec,
    hold_direction,
    intersect_codecs,
    is_hold,
    make_answer,
    match_media,
    offered_direction,
    rejected_media,
    validate_answer,
)
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from tests.unit.sdp.sdp_samples import (
    BARESIP_PLAIN,
    BARESIP_SDES,
    LINPHONE_SRTP,
    RFC8866_EXAMPLE,
    SIPP_UAC,
    UNKNOWN_ATTRIBUTES,
    WEBRTC_OFFER,
    crlf,
)

PCMU = Codec("PCMU", 8000)
PCMA = Codec("PCMA", 8000)
OPUS = Codec("opus", 48000, 2)
G729 = Codec("G729", 8000)
DTMF = Codec("telephone-event", 8000, fmtp="0-16")
VP8 = Codec("VP8", 90000)
AUDIO_CAPS = {"audio": [PCMA, PCMU, DTMF]}
ORIGIN = Origin("voipgw", 7, 1, "IN", "IP4", "192.0.2.10")
HERE = Connection.for_address("192.0.2.10")
D = Direction


def parse(text: str) -> SessionDescription:
    return parse_sdp_untrusted(crlf(text))


def answer(
    offer: SessionDescription, caps: dict[str, list[Codec]] | None = None, **kw: Any
) -> SessionDescription:
    options: dict[str, Any] = {"origin": ORIGIN, "connection": HERE}
    options["ports"] = [40000 + 2 * i for i in range(len(offer.media))]
    options.update(kw)
    return make_answer(offer, AUDIO_CAPS if caps is None else caps, **options)


def with_direction(text: str, direction: str) -> SessionDescription:
    sd = parse(text)
    return sd.with_media_at(0, sd.media[0].with_direction(D(direction)))


# -- directions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("offered", "wanted"), list(ANSWER_DIRECTION))
def test_direction_table_is_the_rfc3264_rule(offered: Direction, wanted: Direction) -> None:
    got = answer_direction(offered, wanted)
    # An answer sends only what the offer receives and receives only what it sends (§6.1).
    assert got.sends == (offered.receives and wanted.sends)
    assert got.receives == (offered.sends and wanted.receives)
    assert direction_allowed(offered, got)


@pytest.mark.parametrize(
    ("offered", "allowed"),
    [
        (D.SENDONLY, {D.RECVONLY, D.INACTIVE}),
        (D.RECVONLY, {D.SENDONLY, D.INACTIVE}),
        (D.SENDRECV, set(D)),
        (D.INACTIVE, {D.INACTIVE}),
    ],
)
def test_allowed_answers_rfc3264_section_6_1(offered: Direction, allowed: set[Direction]) -> None:
    assert {d for d in D if direction_allowed(offered, d)} == allowed


def test_answer_mirrors_a_sendonly_offer() -> None:
    (audio,) = answer(with_direction(SIPP_UAC, "sendonly")).media
    assert audio.direction is D.RECVONLY
    (audio,) = answer(with_direction(SIPP_UAC, "recvonly")).media
    assert audio.direction is D.SENDONLY
    (audio,) = answer(with_direction(SIPP_UAC, "inactive")).media
    assert audio.direction is D.INACTIVE and audio.port != 0
    (audio,) = answer(parse(SIPP_UAC), direction=D.RECVONLY).media
    assert audio.direction is D.RECVONLY


def test_hold_direction() -> None:
    assert hold_direction(D.SENDRECV) is D.SENDONLY
    assert hold_direction(D.RECVONLY) is D.INACTIVE
    assert hold_direction(D.SENDONLY) is D.SENDONLY
    assert hold_direction(D.INACTIVE) is D.INACTIVE


# -- hold ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("direction", "held"),
    [("sendrecv", False), ("recvonly", False), ("sendonly", True), ("inactive", True)],
)
def test_hold_by_direction(direction: str, held: bool) -> None:
    sd = with_direction(SIPP_UAC, direction)
    assert is_hold(sd, sd.media[0]) is held


def test_session_level_direction_counts_for_hold() -> None:
    sd = parse(SIPP_UAC).with_direction(D.SENDONLY)
    assert is_hold(sd, sd.media[0])


def test_legacy_hold_with_null_connection() -> None:
    # RFC 3264 §8.4: c=0.0.0.0 (RFC 2543) means "send nothing here", whatever the direction says.
    sd = parse(SIPP_UAC.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"))
    assert offered_direction(sd, sd.media[0]) is D.SENDONLY
    assert is_hold(sd, sd.media[0])
    (audio,) = answer(sd).media
    assert audio.direction is D.RECVONLY  # we must not send to 0.0.0.0
    sd = with_direction(SIPP_UAC.replace("IP4 127.0.0.1\nt", "IP4 0.0.0.0\nt"), "recvonly")
    assert offered_direction(sd, sd.media[0]) is D.INACTIVE


def test_trickle_ice_placeholder_address_is_not_hold() -> None:
    sd = parse(WEBRTC_OFFER)
    audio = sd.media[0]
    assert sd.effective_connection(audio) == Connection("IN", "IP4", "0.0.0.0")
    assert offered_direction(sd, audio) is D.SENDRECV
    assert not is_hold(sd, audio)


def test_rejected_stream_is_not_on_hold() -> None:
    sd = with_direction(SIPP_UAC, "inactive")
    assert not is_hold(sd, sd.media[0].with_port(0))


# -- codecs ----------------------------------------------------------------------------------------


def pts(formats: tuple[NegotiatedFormat, ...]) -> list[int]:
    return [f.payload_type for f in formats]


def test_intersection_keeps_offer_order_and_payload_types() -> None:
    audio = parse(BARESIP_PLAIN).media[0]  # 0 8 96(opus) 101(telephone-event)
    found = intersect_codecs(audio, [DTMF, OPUS, PCMA])
    assert pts(found) == [8, 96, 101]
    assert found[1].rtpmap == RtpMap(96, "opus", 48000, 2)
    assert found[1].fmtp == "stereo=1;sprop-stereo=1"  # echoed: no fmtp of our own
    assert found[2].fmtp == "0-16"  # ours
    assert pts(intersect_codecs(audio, [DTMF, OPUS, PCMA], prefer="local")) == [101, 96, 8]


def test_dynamic_payload_types_of_the_offer_are_reused() -> None:
    audio = parse(LINPHONE_SRTP).media[0]  # opus is 96, telephone-event/8000 is 101
    found = intersect_codecs(audio, [Codec("OPUS", 48000, 2), DTMF])
    assert pts(found) == [96, 101]
    assert [f.rtpmap.encoding for f in found] == ["opus", "telephone-event"]


def test_telephone_event_matches_by_clock_rate() -> None:
    audio = parse(LINPHONE_SRTP).media[0]  # telephone-event at 48000 (99), 16000 (100), 8000 (101)
    assert pts(intersect_codecs(audio, [PCMU, DTMF])) == [0, 101]
    assert pts(intersect_codecs(audio, [OPUS, Codec("telephone-event", 48000)])) == [96, 99]


def test_static_payload_types_match_without_rtpmap() -> None:
    audio = parse(LINPHONE_SRTP).media[0]  # PT 18 has an fmtp but no rtpmap
    (g729,) = intersect_codecs(audio, [G729])
    assert g729.rtpmap == RtpMap(18, "G729", 8000)
    assert g729.fmtp == "annexb=yes"


def test_channels_and_rate_must_match() -> None:
    audio = parse(BARESIP_PLAIN).media[0]
    assert intersect_codecs(audio, [Codec("opus", 48000, 1), Codec("PCMU", 16000)]) == ()


def test_unknown_dynamic_payload_type_is_never_guessed() -> None:
    sd = parse(SIPP_UAC.replace("RTP/AVP 0", "RTP/AVP 0 96"))
    assert pts(intersect_codecs(sd.media[0], [PCMU, OPUS])) == [0]


def test_auxiliary_formats_alone_are_no_common_codec() -> None:
    audio = parse(BARESIP_PLAIN).media[0]
    only_dtmf = intersect_codecs(audio, [G729, DTMF])
    assert pts(only_dtmf) == [101] and not has_common_codec(only_dtmf)
    assert has_common_codec(intersect_codecs(audio, [PCMU, DTMF]))


# -- building answers ------------------------------------------------------------------------------


def test_answer_to_baresip() -> None:
    offer = parse(BARESIP_PLAIN)
    sd = answer(offer)
    assert sd.origin == ORIGIN and sd.connection == HERE
    assert sd.times == offer.times == (TimeDescription(0, 0),)
    (audio,) = sd.media
    assert (audio.media, audio.port, audio.proto) == ("audio", 40000, "RTP/AVP")
    assert audio.formats == ("0", "8", "101")
    assert audio.attributes.values("rtpmap") == (
        "0 PCMU/8000",
        "8 PCMA/8000",
        "101 telephone-event/8000",
    )
    assert audio.fmtp(101) == "0-16"
    assert audio.direction is D.SENDRECV
    assert not audio.rtcp_mux  # not offered
    validate_answer(offer, parse_sdp_untrusted(serialize_sdp(sd)))


def test_answer_in_our_order() -> None:
    (audio,) = answer(parse(BARESIP_PLAIN), prefer="local").media
    assert audio.formats == ("8", "0", "101")


def test_answer_echoes_rtcp_mux_when_offered_and_wanted() -> None:
    offer = parse(WEBRTC_OFFER)
    caps = {"audio": [OPUS, PCMU], "video": [VP8]}
    audio, video = answer(offer, caps).media
    assert audio.rtcp_mux and video.rtcp_mux
    assert audio.formats == ("111", "0") and video.formats == ("96",)
    assert audio.proto == "UDP/TLS/RTP/SAVPF"
    audio, _ = answer(offer, caps, rtcp_mux=False).media
    assert not audio.rtcp_mux


def test_unsupported_media_type_is_rejected_keeping_the_m_line() -> None:
    offer = parse(WEBRTC_OFFER)
    sd = answer(offer, {"audio": [OPUS]})
    audio, video = sd.media
    assert audio.port == 40000
    assert video.is_rejected and video.media == "video" and video.proto == offer.media[1].proto
    assert video.formats == offer.media[1].formats and video.attributes.items == ()
    validate_answer(offer, sd)


def test_offered_port_zero_stays_rejected() -> None:
    offer = parse(RFC8866_EXAMPLE)
    offer = offer.with_media_at(1, offer.media[1].with_port(0))
    first, second, video = answer(
        offer, {"audio": [PCMU], "video": [Codec("H263-1998", 90000)]}
    ).media
    assert first.port == 40000 and second.is_rejected and video.port == 40004
    assert video.rtpmap(99) == RtpMap(99, "h263-1998", 90000)


def test_port_zero_from_the_caller_rejects_that_stream() -> None:
    offer = parse(RFC8866_EXAMPLE)
    first, second, video = answer(offer, {"audio": [PCMU]}, ports=[0, 5000, 5002]).media
    assert first.is_rejected and second.port == 5000 and video.is_rejected


def test_no_common_codec_is_488() -> None:
    with pytest.raises(SdpError) as info:
        answer(parse(BARESIP_PLAIN), {"audio": [G729]})
    assert info.value.reason == "no common codec"
    assert info.value.sip_status == 488
    with pytest.raises(SdpError, match="no common codec"):
        answer(parse(BARESIP_PLAIN), {"audio": [G729, DTMF]})  # telephone-event alone


def test_nothing_acceptable_is_488() -> None:
    with pytest.raises(SdpError) as info:
        answer(parse(BARESIP_SDES), protos={"RTP/AVP"})  # we will not do SRTP here
    assert info.value.reason == "no acceptable media stream"
    assert info.value.sip_status == 488
    with pytest.raises(SdpError, match="no acceptable media stream"):
        answer(parse(BARESIP_PLAIN), {"video": [VP8]})
    sd = answer(parse(BARESIP_SDES), protos={"rtp/savp"})
    assert sd.media[0].proto == "RTP/SAVP"


def test_non_rtp_streams_are_rejected() -> None:
    offer = parse(SIPP_UAC + "m=image 4002 udptl t38\n")
    audio, image = answer(offer, {"audio": [PCMU], "image": [Codec("t38", 0)]}).media
    assert audio.port == 40000 and image.is_rejected and image.formats == ("t38",)


def test_offer_without_active_streams_gets_an_answer_without_them() -> None:
    offer = parse(SIPP_UAC)
    assert answer(offer.with_media([])).media == ()
    rejected = offer.with_media([offer.media[0].with_port(0)])
    assert answer(rejected).media[0].is_rejected


def test_ports_must_match_the_offer() -> None:
    with pytest.raises(LocalSdpError):
        answer(parse(SIPP_UAC), ports=[])


def test_rejected_media_helper() -> None:
    audio = parse(BARESIP_SDES).media[0]
    rejected = rejected_media(audio)
    assert rejected == MediaDescription("audio", 0, "RTP/SAVP", ("0", "8", "96", "101"))
    assert rejected_media(attrs.evolve(audio, port=0, formats=())).formats == ("0",)


def test_unknown_attributes_offer_answers_with_static_payload_types() -> None:
    offer = parse(UNKNOWN_ATTRIBUTES)  # G729 (18), telephone-event (101), CN (19)
    (audio,) = answer(offer, {"audio": [G729, DTMF, Codec("CN", 8000)]}).media
    assert audio.formats == ("18", "101", "19")


# -- matching and validating answers -------------------------------------------------------------


def test_match_media_pairs_by_position() -> None:
    offer = parse(RFC8866_EXAMPLE)
    pairs = match_media(offer, offer)
    assert [(o.port, a.port) for o, a in pairs] == [(49170, 49170), (49180, 49180), (51372, 51372)]


def test_answer_with_a_different_number_of_m_lines() -> None:
    offer = parse(RFC8866_EXAMPLE)
    with pytest.raises(SdpError) as info:
        match_media(offer, offer.with_media(offer.media[:2]))
    assert info.value.reason == "answer has 2 m= lines, offer has 3 (RFC 3264 §6)"
    assert info.value.sip_status == 488


def test_answer_with_another_media_type_at_a_position() -> None:
    offer = parse(RFC8866_EXAMPLE)
    swapped = offer.with_media([offer.media[0], offer.media[2], offer.media[1]])
    with pytest.raises(SdpError, match="m= line 2: answer media type differs"):
        validate_answer(offer, swapped)


def good_pair() -> tuple[SessionDescription, SessionDescription]:
    offer = parse(BARESIP_PLAIN)
    return offer, answer(offer)


def test_validate_accepts_a_rejection() -> None:
    offer, sd = good_pair()
    validate_answer(offer, sd.with_media([rejected_media(offer.media[0])]))


def test_validate_refuses_reviving_a_removed_stream() -> None:
    offer, sd = good_pair()
    removed = offer.with_media([offer.media[0].with_port(0)])
    with pytest.raises(SdpError, match="answer accepts a stream the offer removed"):
        validate_answer(removed, sd)


def test_validate_refuses_a_transport_downgrade() -> None:
    offer = parse(BARESIP_SDES)
    plain = answer(offer)
    plain = plain.with_media([attrs.evolve(plain.media[0], proto="RTP/AVP")])
    with pytest.raises(SdpError, match="answer changes the transport protocol"):
        validate_answer(offer, plain)


def test_validate_refuses_a_forbidden_direction() -> None:
    offer = with_direction(SIPP_UAC, "sendonly")
    sd = answer(offer)
    validate_answer(offer, sd)
    bad = sd.with_media([sd.media[0].with_direction(D.SENDONLY)])
    with pytest.raises(
        SdpError, match="answer direction sendonly not allowed for offered sendonly"
    ):
        validate_answer(offer, bad)


def test_validate_refuses_an_answer_without_offered_codecs() -> None:
    offer, sd = good_pair()
    g729 = sd.with_media([sd.media[0].with_formats(["18"]).with_attributes([])])
    with pytest.raises(SdpError, match="answer has no format from the offer"):
        validate_answer(offer, g729)
    # Extra formats besides an offered one are allowed (RFC 3264 §6.1), and inactive streams
    # may list anything.
    validate_answer(offer, sd.with_media([sd.media[0].with_formats(["18", "0"])]))
    validate_answer(offer, g729.with_media([g729.media[0].with_direction(D.INACTIVE)]))


def test_validate_matches_codecs_not_numbers() -> None:
    offer, sd = good_pair()
    # The answerer chose another number for PCMU (allowed: reusing the offer's is a SHOULD).
    renumbered = sd.media[0].with_formats(["100"]).with_attributes([("rtpmap", "100 PCMU/8000")])
    validate_answer(offer, sd.with_media([renumbered]))


def test_validate_refuses_multicast_answer_to_unicast_offer() -> None:
    offer, sd = good_pair()
    with pytest.raises(SdpError, match="multicast answer to a unicast offer"):
        validate_answer(offer, sd.with_connection(Connection("IN", "IP4", "233.252.0.1", ttl=1)))


# -- o= versions (RFC 3264 §8) ------------------------------------------------------------------


def test_apply_version_rule() -> None:
    first = answer(parse(BARESIP_PLAIN))
    assert apply_version_rule(None, first) is first
    # A re-answer built with a fresh origin keeps the first o= line when nothing changed ...
    same = attrs.evolve(first, origin=Origin("other", 99, 99, "IN", "IP4", "192.0.2.99"))
    assert apply_version_rule(first, same) == first
    # ... and bumps the version by exactly one when something did.
    held = same.with_media([same.media[0].with_direction(D.SENDONLY)])
    sent = apply_version_rule(first, held)
    assert sent.origin == attrs.evolve(first.origin, session_version=2)
    assert sent.media == held.media
    assert apply_version_rule(sent, held) == sent


def test_check_version_rule() -> None:
    previous = parse(BARESIP_PLAIN)
    assert check_version_rule(previous, previous) is False
    changed = previous.with_direction(D.SENDONLY).with_bumped_version()
    assert check_version_rule(previous, changed) is True
    # Tolerated: a jump of more than one, and an o= address change (IPv4 -> IPv6 handover).
    assert check_version_rule(previous, changed.with_bumped_version()) is True
    moved = attrs.evolve(previous.origin, addrtype="IP6", address="2001:db8::1")
    assert check_version_rule(previous, previous.with_origin(moved.bumped())) is True


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda sd: sd.with_direction(D.SENDONLY), "SDP changed without a new o= version"),
        (
            lambda sd: sd.with_origin(attrs.evolve(sd.origin, session_version=1)),
            "o= version went backwards",
        ),
        (
            lambda sd: sd.with_origin(attrs.evolve(sd.origin, session_id=1)).with_bumped_version(),
            "o= line names a different session",
        ),
        (
            lambda sd: sd.with_origin(attrs.evolve(sd.origin, username="x")),
            "o= line names a different session",
        ),
    ],
)
def test_check_version_rule_violations(
    edit: Callable[[SessionDescription], SessionDescription], reason: str
) -> None:
    previous = parse(BARESIP_PLAIN)
    with pytest.raises(SdpError) as info:
        check_version_rule(previous, edit(previous))
    assert info.value.reason.startswith(reason)
    assert info.value.sip_status == 488
