"""Taps and T.38 fax: X3 of each UDPTL datagram as the IP packet that carried it (payload
format 5/6), and SIPREC telling its SRS that a line turned to fax carries no audio."""

from __future__ import annotations

import struct
import uuid

import pytest

from gateway.plugins.taps.intercept import InterceptSink, pdu
from gateway.plugins.taps.intercept.targets import TargetIdentifier
from gateway.plugins.taps.intercept.tasks import Match, Task

XID = uuid.UUID("11111111-2222-4333-8444-555555555555")
DATAGRAM = struct.pack("!HB", 0x8001, 2) + b"\x06\x00\x00"  # UDPTL, first octet 0x80


def ones_complement_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def test_ipv4_packet_has_valid_checksums_and_the_datagram_unchanged() -> None:
    payload_format, packet = pdu.udp_packet(("192.0.2.1", 4000), ("198.51.100.7", 24002), DATAGRAM)
    assert payload_format == pdu.FORMAT_IPV4 == 5
    header, udp = packet[:20], packet[20:]
    assert header[0] == 0x45 and header[9] == 17
    assert struct.unpack("!H", header[2:4])[0] == len(packet)
    assert header[12:16] == bytes([192, 0, 2, 1]) and header[16:20] == bytes([198, 51, 100, 7])
    assert ones_complement_sum(header) == 0xFFFF  # RFC 791 §3.1
    assert struct.unpack("!HHH", udp[:6]) == (4000, 24002, 8 + len(DATAGRAM))
    pseudo = header[12:20] + struct.pack("!HH", 17, len(udp))
    assert ones_complement_sum(pseudo + udp) == 0xFFFF  # RFC 768
    assert udp[8:] == DATAGRAM


def test_ipv6_packet_has_a_valid_udp_checksum() -> None:
    payload_format, packet = pdu.udp_packet(
        ("2001:db8::1", 4000, 0, 0), ("2001:db8::2", 24002, 0, 0), DATAGRAM
    )
    assert payload_format == pdu.FORMAT_IPV6 == 6
    header, udp = packet[:40], packet[40:]
    assert header[0] >> 4 == 6 and header[6] == 17
    assert struct.unpack("!H", header[4:6])[0] == len(udp)
    pseudo = header[8:40] + struct.pack("!IxxxB", len(udp), 17)
    assert ones_complement_sum(pseudo + udp) == 0xFFFF  # RFC 8200 §8.1
    assert udp[8:] == DATAGRAM


def test_mixed_families_and_non_ip_addresses_are_refused() -> None:
    with pytest.raises(ValueError):
        pdu.udp_packet(("192.0.2.1", 1), ("2001:db8::2", 2), b"x")
    with pytest.raises(ValueError):
        pdu.udp_packet(("alice.example", 1), ("192.0.2.1", 2), b"x")


class FakeLink:
    version = 5

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.sequence = 0

    def next_sequence(self, xid: uuid.UUID) -> int:
        self.sequence += 1
        return self.sequence - 1

    def send(self, data: bytes) -> None:
        self.sent.append(data)


def test_a_fax_datagram_of_an_intercepted_call_is_x3_with_an_ip_packet() -> None:
    link = FakeLink()
    task = Task(XID, (TargetIdentifier("sipUri", "sip:fax@example.com"),), "X2andX3", ())
    match = Match(task, "b", task.targets[0])
    sink = InterceptSink([match], lambda m, kind: [link] if kind == "X3" else [], 7, lambda: 1.5)  # type: ignore[list-item]
    sink.datagram(
        "0",
        "a_to_b",
        DATAGRAM,
        now=0.0,
        source=("192.0.2.1", 4000),
        destination=("198.51.100.7", 24002),
    )
    # No latched source (cannot happen once relayed): nothing to build a packet from.
    sink.datagram("0", "b_to_a", DATAGRAM, now=0.0, source=None, destination=("198.51.100.7", 1))
    (sent,) = link.sent
    decoded = pdu.decode_pdu(sent)
    assert (decoded.pdu_type, decoded.payload_format) == (pdu.X3, pdu.FORMAT_IPV4)
    assert decoded.direction == pdu.TO_TARGET  # the caller sent it to the target (side b)
    assert decoded.xid == XID and decoded.correlation == 7
    assert (
        decoded.payload == pdu.udp_packet(("192.0.2.1", 4000), ("198.51.100.7", 24002), DATAGRAM)[1]
    )
    assert decoded.attribute(pdu.MATCHED_TARGET) == b"sip:fax@example.com"
    sink.close()
    sink.datagram(
        "0", "a_to_b", DATAGRAM, now=0.0, source=("192.0.2.1", 1), destination=("192.0.2.2", 2)
    )
    assert len(link.sent) == 1


def test_siprec_tells_the_srs_a_line_that_turned_to_fax_is_inactive_audio() -> None:
    from gateway.core.interfaces import TappedMedia
    from gateway.plugins.taps.siprec import _recorded_now

    audio = TappedMedia(0, "audio", ("0",), ("0 PCMU/8000",))
    fax = TappedMedia(0, "image", ("t38",))
    assert _recorded_now(audio, fax) == TappedMedia(
        0, "audio", ("0",), ("0 PCMU/8000",), direction="inactive"
    )
    held = TappedMedia(0, "audio", ("0",), ("0 PCMU/8000",), direction="sendonly")
    assert _recorded_now(audio, held) == held
    assert _recorded_now(audio, None) == audio
