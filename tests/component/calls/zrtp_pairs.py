"""The ZRTP phone pairs, SDP and exchange of the in-memory ZRTP tests: moved here from
test_b2bua_zrtp.py so that no test module imports another."""

from __future__ import annotations

from gateway.core.sdp.model import MediaDescription, SessionDescription
from gateway.plugins.keyexchange.zrtp import ZrtpKeyExchange
from gateway.plugins.keyexchange.zrtp import packets as p
from gateway.plugins.keyexchange.zrtp.crypto import sha256, with_mac
from gateway.plugins.keyexchange.zrtp.engine import ZrtpNegotiation
from tests.component.calls.dtls_phone import PHONE_PORT

PHONE_ZID = bytes.fromhex("0123456789abcdef01234567")


def zrtp_sdp(
    negotiation: ZrtpNegotiation | None, *, port: int = PHONE_PORT, zrtp_hash: str | None = None
) -> bytes:
    """A phone's offer or answer at ``port``: plain RTP/AVP with its a=zrtp-hash (none without
    ``negotiation``: a phone without ZRTP; ``zrtp_hash``: that value instead of its own, e.g.
    one nobody can read)."""
    hashes = "".join(
        f"a={name}:{value if zrtp_hash is None else zrtp_hash}\r\n"
        for name, value in (negotiation.local_sdp_attributes() if negotiation else ())
    )
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n{hashes}"
    ).encode()


def pairs(sd: SessionDescription, media: MediaDescription) -> list[tuple[str, str | None]]:
    return [(a[0], a[1]) for a in media.attributes] + [(a[0], a[1]) for a in sd.attributes]


def phone_exchange() -> ZrtpKeyExchange:
    return ZrtpKeyExchange(zid=lambda: PHONE_ZID)


def forged_hello(zid: bytes = b"F" * 12) -> bytes:
    """A stranger's ZRTP Hello packet (RFC 6189 §5.2): well formed, MAC right for its own H2,
    so it matches no phone's a=zrtp-hash."""
    message = with_mac(
        p.encode_hello(
            client_id=b"stranger",
            h3=sha256(sha256(b"h1")),
            zid=zid,
            flags=0,
            hashes=("S256",),
            ciphers=("AES1",),
            auth_tags=("HS32",),
            key_agreements=("DH3k",),
            sas_types=("B32 ",),
        ),
        sha256(b"h1"),
    )
    return p.frame(1, 0xF0F0F0F0, message)
