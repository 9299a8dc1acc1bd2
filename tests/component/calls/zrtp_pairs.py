"""The ZRTP phone pairs, SDP and exchange of the in-memory ZRTP tests: moved here from
test_b2bua_zrtp.py so that no test module imports another."""

from __future__ import annotations

from gateway.core.sdp.model import MediaDescription, SessionDescription
from gateway.plugins.keyexchange.zrtp import ZrtpKeyExchange
from gateway.plugins.keyexchange.zrtp.engine import ZrtpNegotiation
from tests.component.calls.dtls_phone import PHONE_PORT

PHONE_ZID = bytes.fromhex("0123456789abcdef01234567")


def zrtp_sdp(negotiation: ZrtpNegotiation | None, *, port: int = PHONE_PORT) -> bytes:
    """A phone's offer or answer at ``port``: plain RTP/AVP with its a=zrtp-hash (none without
    ``negotiation``: a phone without ZRTP)."""
    hashes = "".join(
        f"a={name}:{value}\r\n"
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
