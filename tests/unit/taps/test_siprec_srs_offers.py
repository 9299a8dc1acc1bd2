"""What an SRS asks of the recording session itself, without sockets: its re-offer answered
line for line (RFC 3264 §6, §8) with our labels, ports and sendonly, the copies' new addresses,
one a=crypto line chosen from its several (RFC 4568 §6.1, §7.1.2) and our key kept where it
may be (§7.1.4); the offers we refuse (488); its metadata snapshot request (RFC 7866 §9) read
from the body, alone or beside an SDP; and the bounded multipart reader."""

from __future__ import annotations

import random

import pytest

from gateway.core.interfaces import TappedMedia
from gateway.core.sdp.body import MAX_PARTS, body_parts_untrusted
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.sdes import SdesKeyExchange, parse_crypto_untrusted
from gateway.plugins.taps.siprec import (
    METADATA_REQUEST_TYPE,
    OfferRefused,
    UnsupportedSrsBody,
    answer_srs_offer,
    recorded_streams,
    srs_request_untrusted,
)

AUDIO = TappedMedia(0, "audio", ("0", "101"), ("0 PCMU/8000", "101 telephone-event/8000"))
STREAMS = recorded_streams((AUDIO,))
PORTS = [4000, 4002]
KEY_A = "inline:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"
KEY_B = "inline:" + "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkw"


def srs_offer(*media: str, connection: str = "c=IN IP4 192.0.2.60") -> bytes:
    lines = ["v=0", "o=srs 1 2 IN IP4 192.0.2.60", "s=-", connection, "t=0 0", *media]
    return ("\r\n".join(lines) + "\r\n").encode()


def line(label: str, port: int, *extra: str, proto: str = "RTP/AVP", fmts: str = "0") -> str:
    return "\r\n".join([f"m=audio {port} {proto} {fmts}", f"a=label:{label}", *extra])


def answer(offer: bytes, **kwargs: object) -> object:
    return answer_srs_offer(
        offer, STREAMS, PORTS, address="192.0.2.10", session_id=7, version=9, **kwargs
    )


def test_a_re_offer_with_new_ports_is_answered_line_for_line_and_moves_the_copies() -> None:
    offer = srs_offer(
        line("2", 7002, "a=recvonly", fmts="8 0 101"),
        line("1", 7000, "a=recvonly", "a=rtpmap:101 telephone-event/8000", fmts="0 101"),
    )
    result = answer(offer)
    sdp = parse_sdp_untrusted(result.sdp)
    assert sdp.origin.session_id == 7 and sdp.origin.session_version == 9
    assert [m.attributes.get("label") for m in sdp.media] == ["2", "1"]  # its order
    assert [m.port for m in sdp.media] == [4002, 4000]  # our port of each stream
    assert [m.formats for m in sdp.media] == [("0", "101"), ("0", "101")]  # the call's only
    assert all(m.attributes.has("sendonly") for m in sdp.media)
    assert sdp.media[0].attributes.values("rtpmap") == ("0 PCMU/8000", "101 telephone-event/8000")
    assert result.destinations == {
        (0, "a_to_b"): ("192.0.2.60", 7000),
        (0, "b_to_a"): (
            "192.0.2.60",
            7002,
        ),
    }
    assert result.negotiations is None


def test_lines_it_declines_or_we_do_not_know_are_port_0_and_get_no_copies() -> None:
    offer = srs_offer(
        line("1", 0, "a=recvonly"),
        line("2", 7002, "a=sendonly"),  # it would not receive: inactive, nothing sent
        "m=video 7004 RTP/AVP 96\r\na=label:9",
    )
    result = answer(offer)
    sdp = parse_sdp_untrusted(result.sdp)
    assert [m.port for m in sdp.media] == [0, 4002, 0]
    assert sdp.media[1].attributes.has("inactive")
    assert sdp.media[2].media == "video"  # RFC 3264 §6: the rejected line keeps its type
    assert result.destinations == {}


def test_a_held_stream_is_answered_inactive_but_keeps_its_address() -> None:
    held = recorded_streams((TappedMedia(0, "audio", ("0",), ("0 PCMU/8000",), (), "sendonly"),))
    result = answer_srs_offer(
        srs_offer(line("1", 7000, "a=recvonly"), line("2", 7002, "a=recvonly")),
        held,
        PORTS,
        address="192.0.2.10",
        session_id=7,
        version=9,
    )
    sdp = parse_sdp_untrusted(result.sdp)
    assert all(m.attributes.has("inactive") for m in sdp.media)
    assert result.destinations[(0, "a_to_b")] == ("192.0.2.60", 7000)


@pytest.mark.parametrize(
    ("offer", "why"),
    [
        (srs_offer(line("1", 7000, proto="RTP/SAVP"), line("2", 7002)), "RTP/SAVP"),
        (srs_offer(line("1", 7000, fmts="8"), line("2", 7002)), "codecs"),
        (
            srs_offer(line("1", 7000, "a=rtpmap:101 opus/48000", fmts="101"), line("2", 7002)),
            "codecs",
        ),
        (srs_offer(line("1", 7000), connection="c=IN IP6 ::1"), "IPv4"),
    ],
)
def test_an_offer_we_cannot_answer_is_refused(offer: bytes, why: str) -> None:
    with pytest.raises(OfferRefused, match=why):
        answer(offer)


def test_malformed_sdp_is_an_sdp_error() -> None:
    with pytest.raises(SdpError):
        answer(b"v=0\r\nm=audio x\r\n")
    no_connection = srs_offer(line("1", 7000)).replace(b"c=IN IP4 192.0.2.60\r\n", b"")
    with pytest.raises(SdpError, match="no c= line"):
        answer(no_connection)


def sdes(seed: int = 3) -> SdesKeyExchange:
    return SdesKeyExchange(random_bytes=random.Random(seed).randbytes)


def crypto_offer(port: int = 7000) -> bytes:
    lines = [
        line(
            label,
            port + 2 * n,
            "a=recvonly",
            f"a=crypto:1 AES_256_CM_HMAC_SHA1_80 {KEY_A}{KEY_A[7:27]}",
            f"a=crypto:2 AES_CM_128_HMAC_SHA1_80 {KEY_A}",
            f"a=crypto:3 AES_CM_128_HMAC_SHA1_32 {KEY_B}",
            proto="RTP/SAVP",
        )
        for n, label in enumerate(("1", "2"))
    ]
    return srs_offer(*lines)


def test_an_sdes_re_offer_with_several_suites_is_answered_with_one_crypto_line_each() -> None:
    suites = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
    result = answer(crypto_offer(), keying=sdes(), suites=suites)
    sdp = parse_sdp_untrusted(result.sdp)
    for media in sdp.media:
        assert media.proto == "RTP/SAVP"
        (crypto,) = media.attributes.values("crypto")  # RFC 4568 §6.1: exactly one
        chosen = parse_crypto_untrusted(crypto)
        # The first of its lines our srtp_suites allow (the 256-bit one is not configured).
        assert (chosen.tag, chosen.suite) == (2, "AES_CM_128_HMAC_SHA1_80")
    assert result.negotiations is not None
    keys = [n.keys for n in result.negotiations if n is not None]
    assert len(keys) == 2 and keys[0].local_key != keys[1].local_key  # a key per stream
    assert KEY_A[7:] not in result.sdp.decode()  # its key is not echoed back


def test_an_unchanged_sdes_re_offer_keeps_our_key() -> None:
    suites = ("AES_CM_128_HMAC_SHA1_80",)
    first = answer(crypto_offer(), keying=sdes(), suites=suites)
    assert first.negotiations is not None
    again = answer(crypto_offer(8000), keying=sdes(9), suites=suites, previous=first.negotiations)
    assert again.negotiations is not None
    assert [n.keys for n in again.negotiations] == [n.keys for n in first.negotiations]
    assert again.destinations[(0, "a_to_b")] == ("192.0.2.60", 8000)


def test_an_sdes_re_offer_without_a_usable_crypto_line_is_refused() -> None:
    plain = srs_offer(line("1", 7000, proto="RTP/SAVP"), line("2", 7002, proto="RTP/SAVP"))
    with pytest.raises(OfferRefused, match="no a=crypto line"):
        answer(plain, keying=sdes(), suites=("AES_CM_128_HMAC_SHA1_80",))
    with pytest.raises(OfferRefused, match="no acceptable a=crypto line"):
        answer(crypto_offer(), keying=sdes(), suites=("AEAD_AES_256_GCM",))
    with pytest.raises(OfferRefused, match="RTP/AVP"):
        answer(srs_offer(line("1", 7000), line("2", 7002)), keying=sdes(), suites=("x",))


def multipart(*parts: tuple[str, bytes], boundary: str = "b1") -> tuple[str, bytes]:
    body = b""
    for content_type, content in parts:
        body += f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode() + content
        body += b"\r\n"
    return f"multipart/mixed;boundary={boundary}", body + f"--{boundary}--\r\n".encode()


def test_a_metadata_request_is_read_alone_or_beside_an_offer() -> None:
    alone = srs_request_untrusted(METADATA_REQUEST_TYPE, b"SRS internal error")
    assert alone.metadata_requested and alone.offer == b""
    offer = srs_offer(line("1", 7000))
    content_type, body = multipart(("application/sdp", offer), (METADATA_REQUEST_TYPE, b"lost"))
    both = srs_request_untrusted(content_type, body)
    assert both.metadata_requested and both.offer.startswith(b"v=0")
    just_sdp = srs_request_untrusted("application/sdp", offer)
    assert not just_sdp.metadata_requested and just_sdp.offer == offer


def test_other_bodies_are_unsupported_and_broken_multiparts_refused() -> None:
    with pytest.raises(UnsupportedSrsBody):
        srs_request_untrusted("text/plain", b"hello")
    content_type, body = multipart(("application/sdp", b"v=0\r\n"), ("application/sdp", b"v=0"))
    with pytest.raises(SdpError, match="more than one"):
        srs_request_untrusted(content_type, body)
    with pytest.raises(SdpError, match="close delimiter"):
        srs_request_untrusted("multipart/mixed;boundary=b1", b"--b1\r\n\r\nx\r\n")


def test_the_multipart_reader_is_bounded() -> None:
    parts = [("text/plain", b"x")] * (MAX_PARTS + 1)
    content_type, body = multipart(*parts)
    with pytest.raises(SdpError, match=f"more than {MAX_PARTS} parts"):
        body_parts_untrusted(content_type, body)
    content_type, body = multipart(*parts[:MAX_PARTS])
    assert len(body_parts_untrusted(content_type, body)) == MAX_PARTS
    assert body_parts_untrusted(None, b"") == ()
    with pytest.raises(SdpError, match="boundary"):
        body_parts_untrusted("multipart/mixed", b"--x\r\n")
