"""Mutation fuzzing of the SIP WebSocket transport's sans-IO side (RFC 7118, RFC 6455): the
HTTP opening handshake and the frames after it. ``SipWebSocket.receive_data`` declares no error
at all: whatever the peer sends ends as an event (Opened, SipMessage, Refused, Closed).
``VOIPGW_FUZZ_EXAMPLES`` raises the count (docs/testing.md).
"""

from __future__ import annotations

from gateway.plugins.transports.websocket import Closed, Refused, SipMessage, SipWebSocket
from tests.unit.fuzz.mutator import fuzz

HANDSHAKE = (
    b"GET /sip HTTP/1.1\r\nHost: gw.example.com:8443\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Origin: https://phone.example.com\r\nSec-WebSocket-Protocol: sip\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)


def frame(opcode: int, payload: bytes, *, final: bool = True) -> bytes:
    """One masked client frame (RFC 6455 §5.2), any payload length."""
    mask = b"\x37\xfa\x21\x3d"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    first = (0x80 if final else 0) | opcode
    if len(payload) < 126:
        length = bytes([0x80 | len(payload)])
    elif len(payload) < 65536:
        length = bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + len(payload).to_bytes(8, "big")
    return bytes([first]) + length + mask + masked


OPTIONS = (
    b"OPTIONS sip:gw.example.com;transport=ws SIP/2.0\r\n"
    b"Via: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bKws1\r\nMax-Forwards: 70\r\n"
    b"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:gw.example.com>\r\n"
    b"Call-ID: ws1@df7jal23ls0d.invalid\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)
SEEDS = (
    HANDSHAKE,
    HANDSHAKE + frame(1, OPTIONS),
    HANDSHAKE + frame(1, OPTIONS[:40], final=False) + frame(0, OPTIONS[40:]) + frame(9, b"hi"),
    HANDSHAKE + frame(2, b"\r\n\r\n") + frame(1, b"x" * 300) + frame(8, b"\x03\xe8bye"),
)


def test_handshake_and_frames() -> None:
    def run(data: bytes) -> None:
        server = SipWebSocket(
            allowed_origins=frozenset({"https://phone.example.com"}), max_message_size=4096
        )
        # In pieces, as TCP segments arrive, then the end of the connection.
        for start in range(0, len(data), 700):
            server.receive_data(data[start : start + 700])
            server.data_to_send()
        server.receive_data(b"")
        seen = []
        while (event := server.next_event()) is not None:
            seen.append(event)
        assert isinstance(seen[-1], Refused | Closed), seen
        for event in seen:
            if isinstance(event, SipMessage):
                assert 0 < len(event.data) <= 4096

    fuzz("websocket", run, SEEDS, ())
