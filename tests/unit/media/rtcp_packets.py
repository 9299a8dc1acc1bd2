"""RTCP packets built field by field (RFC 3550 §6.4, RFC 3611 §4.7), for the RTCP reader's
tests and the tests that check the same bytes elsewhere (tshark's reading of them, the binary
fuzzers' seeds). Helpers only: no test is collected from this module."""

from __future__ import annotations

import struct


def header(count: int, packet_type: int, body: bytes, *, padding: int = 0) -> bytes:
    """An RTCP packet: V=2, P, count, PT, length in words minus one (RFC 3550 §6.4.1)."""
    body += bytes(padding - 1) + bytes([padding]) if padding else b""
    assert len(body) % 4 == 0
    first = 0x80 | (0x20 if padding else 0) | count
    return struct.pack("!BBH", first, packet_type, len(body) // 4) + body


def block(ssrc: int, fraction: int, lost: int, highest: int, jitter: int, lsr: int, dlsr: int):
    return (
        struct.pack("!IB", ssrc, fraction)
        + lost.to_bytes(3, "big", signed=True)
        + struct.pack("!IIII", highest, jitter, lsr, dlsr)
    )


SENDER_INFO = struct.pack("!IIIIII", 0x11111111, 0xE8D4A510, 0x80000000, 160_000, 500, 80_000)
SR = header(1, 200, SENDER_INFO + block(0x22222222, 64, 12, 0x1_0005, 96, 0x12345678, 0x8000))
RR = header(1, 201, struct.pack("!I", 0x33333333) + block(0x11111111, 3, -1, 70000, 800, 0, 0))
SDES = header(1, 202, struct.pack("!I", 0x11111111) + b"\x01\x03abc" + bytes(3))
