"""The RTCP sender and receiver reports of the in-memory RTCP quality tests: moved here from
test_b2bua_rtcp_quality.py so that no test module imports another."""

from __future__ import annotations

import struct

from gateway.core.sdp.model import MediaDescription

NTP = (3_900_000_000 << 32) | 0x8000_0000  # an SR's NTP timestamp: LSR 0x07A08000 ... below


def sender_report(ssrc: int, packets: int) -> bytes:
    """RFC 3550 §6.4.1 SR without report blocks (the callee receives nothing worth reporting)."""
    return struct.pack("!BBHIQIII", 0x80, 200, 6, ssrc, NTP, 160 * packets, packets, 160 * packets)


def receiver_report(ssrc: int, about: int, *, dlsr: float) -> bytes:
    """RFC 3550 §6.4.2 RR: 2/256 lost, 5 in all, jitter 96 (12 ms at 8 kHz), answering the SR."""
    lsr = (NTP >> 16) & 0xFFFFFFFF
    block = struct.pack("!IB", about, 2) + (5).to_bytes(3, "big") + struct.pack("!I", 20)
    block += struct.pack("!III", 96, lsr, int(dlsr * 65536))
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + block


def rtcp_port(media: MediaDescription) -> int:
    """Our RTCP port as the SDP we sent names it (RFC 3605 a=rtcp)."""
    [value] = media.attributes.values("rtcp")
    return int(value.split()[0])
