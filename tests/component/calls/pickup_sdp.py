"""Bob's SDP in the in-memory pickup payload type tests: moved here from
test_pickup_payload_types.py so that no test module imports another."""

from __future__ import annotations

from gateway.plugins.keyexchange.dtls_srtp import DtlsNegotiation
from tests.port_blocks import port_bases

CALLER_PORT, BOB_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)


def bob_sdp(*, dtls: DtlsNegotiation | None = None) -> bytes:
    """Bob's phone numbers telephone-event 96 (as Yealink and Grandstream phones may)."""
    proto = "RTP/AVP"
    keying = ""
    if dtls is not None:
        proto = "UDP/TLS/RTP/SAVP"
        ours = dict(dtls.local_sdp_attributes())
        keying = (
            f"a=rtcp-mux\r\na=fingerprint:{ours['fingerprint']}\r\n"
            f"a=setup:{ours['setup']}\r\na=tls-id:{ours['tls-id']}\r\n"
        )
    return (
        "v=0\r\no=- 7 7 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {BOB_PORT} {proto} 0 96\r\na=rtpmap:0 PCMU/8000\r\n"
        f"a=rtpmap:96 telephone-event/8000\r\na=fmtp:96 0-15\r\n{keying}"
    ).encode()
