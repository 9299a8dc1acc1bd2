"""Mutation fuzzing of SDP and what is read from it: the session description, its media
sections' attributes (rtpmap, rtcp, ptime, direction), the key-exchange attributes (a=crypto,
a=fingerprint/setup/tls-id, a=zrtp-hash, a=key-mgmt:mikey, ICE credentials), offer/answer
matching, and multipart/mixed bodies around the SDP.

Seeds are the captured samples of tests/unit/sdp/sdp_samples.py; every outcome other than a
result or SdpError (488) is a bug. ``VOIPGW_FUZZ_EXAMPLES`` raises the count (docs/testing.md).
"""

from __future__ import annotations

import contextlib

from gateway.core.media.ice import remote_credentials_untrusted
from gateway.core.media.t38 import t38_problem_untrusted
from gateway.core.sdp.body import read_body
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import Connection, Origin, SessionDescription
from gateway.core.sdp.offer_answer import (
    Codec,
    intersect_codecs,
    make_answer,
    offered_direction,
    validate_answer,
)
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.dtls_srtp import parse_dtls_attributes_untrusted
from gateway.plugins.keyexchange.mikey.engine import mikey_message_of
from gateway.plugins.keyexchange.mikey.payloads import parse_message_untrusted as parse_mikey
from gateway.plugins.keyexchange.sdes import parse_crypto_untrusted
from gateway.plugins.keyexchange.zrtp.engine import parse_hello_hashes_untrusted
from tests.unit.fuzz.mutator import fuzz
from tests.unit.sdp.sdp_samples import ALL_SAMPLES, SDES_KEY_80, SDES_KEY_256, crlf

T38 = (
    b"v=0\r\no=- 2 2 IN IP4 192.0.2.7\r\ns=-\r\nc=IN IP4 192.0.2.7\r\nt=0 0\r\n"
    b"m=image 20002 udptl t38\r\na=T38FaxVersion:0\r\na=T38MaxBitRate:14400\r\n"
    b"a=T38FaxRateManagement:transferredTCF\r\na=T38FaxMaxBuffer:262\r\n"
    b"a=T38FaxMaxDatagram:176\r\na=T38FaxUdpEC:t38UDPRedundancy\r\n"
)
SEEDS = (*(crlf(text) for text in ALL_SAMPLES.values()), T38)
CAPS = {
    "audio": (
        Codec("PCMU", 8000),
        Codec("PCMA", 8000),
        Codec("opus", 48000, 2),
        Codec("telephone-event", 8000),
    ),
    "image": (Codec("t38", 0),),
}
ORIGIN = Origin("-", 1, 1, "IN", "IP4", "192.0.2.1")


def _read(sd: SessionDescription) -> None:
    """What the gateway reads from a peer's SDP; each step may raise only SdpError."""
    for media in sd.media:
        read: list[object] = [media.rtpmaps(), media.direction, media.rtcp, media.connection]
        read += [media.rtcp_mux, media.ptime, media.maxptime, media.setup]
        for payload_type in media.payload_types:
            read += [media.rtpmap(payload_type), media.fmtp(payload_type)]
        offered_direction(sd, media)
        intersect_codecs(media, CAPS.get(media.media, ()))
        attributes = [*media.attributes, *sd.attributes]
        for value in media.crypto:
            with contextlib.suppress(SdpError):
                parse_crypto_untrusted(value)
        if media.fingerprints or sd.attributes.get("fingerprint"):
            with contextlib.suppress(SdpError):
                parse_dtls_attributes_untrusted(attributes)
        parse_hello_hashes_untrusted(attributes)
        t38_problem_untrusted(media)
        remote_credentials_untrusted(sd, media)
        try:
            message = mikey_message_of(attributes)
            if message is not None:
                parse_mikey(message)
        except SdpError:
            pass
    answer = make_answer(
        sd,
        CAPS,
        origin=ORIGIN,
        connection=Connection.for_address("192.0.2.1"),
        ports=[20000 + 2 * i for i in range(len(sd.media))],
    )
    validate_answer(sd, answer)  # our own answer to it must be valid
    validate_answer(answer, sd)  # the peer's SDP taken as an answer: SdpError or fine


def test_session_descriptions_and_their_attributes() -> None:
    def parse(data: bytes) -> None:
        _read(parse_sdp_untrusted(data))

    # No part of an a=crypto key (8 characters or more) may show in an error's text.
    keys = [key for key in (SDES_KEY_80, SDES_KEY_256) if key in "".join(ALL_SAMPLES.values())]
    secrets = [key[i : i + 8] for key in keys for i in range(0, len(key) - 8, 4)]
    assert secrets
    fuzz("sdp", parse, SEEDS, (SdpError,), secrets=secrets)


def test_multipart_bodies() -> None:
    sdp = SEEDS[0]
    body = (
        b"preamble\r\n--unique-boundary-1\r\nContent-Type: application/sdp\r\n\r\n" + sdp + b"\r\n"
        b"--unique-boundary-1\r\nContent-Type: application/ISUP;version=itu-t92+\r\n"
        b"Content-Disposition: signal;handling=optional\r\n\r\n\x01\x00\x49\x00\x00\x03\x02"
        b"\r\n--unique-boundary-1\r\nContent-Type: application/pidf+xml\r\n"
        b"Content-ID: <target123@atlanta.example.com>\r\n\r\n<presence/>\r\n"
        b"--unique-boundary-1--\r\nepilogue"
    )
    content_type = 'multipart/mixed; boundary="unique-boundary-1"'

    def parse(data: bytes) -> None:
        found, _ = read_body(content_type, data)
        if found:
            parse_sdp_untrusted(found)

    fuzz("multipart", parse, (body,), (SdpError,))

    def parse_type(data: bytes) -> None:
        read_body(data.decode("utf-8", "replace"), body)

    fuzz("multipart type", parse_type, (content_type.encode(),), (SdpError,))
