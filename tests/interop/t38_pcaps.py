"""The T.38 packets and pcap files of the sipp T.38 tests: moved here from test_t38_sipp.py so that
no test module imports another."""

from __future__ import annotations

import struct

from gateway.plugins.taps.intercept.pdu import udp_packet

# T.30 indicators (T.38 §6.1, PER: type-of-msg t30-indicator, then the value): CNG, CED,
# V.21 preamble, no signal. tshark shows them as 1, 2, 3, 0.
INDICATORS = [0x02, 0x04, 0x06, 0x00]
FIRST_SEQUENCE = 0x8000


def udptl(sequence: int, ifp: bytes) -> bytes:
    """A UDPTL packet (T.38 §9.1): sequence number, primary IFP as a length-prefixed octet
    string, error recovery: secondary IFPs (choice 0) of which there are none."""
    return struct.pack("!HB", sequence, len(ifp)) + ifp + b"\x00\x00"


PACKETS = [udptl(FIRST_SEQUENCE + n, bytes([i])) for n, i in enumerate(INDICATORS)]


def pcap_of(datagrams: list[bytes]) -> bytes:
    """A classic pcap (Ethernet link type) of ``datagrams`` as UDP over IPv4, 20 ms apart, for
    sipp's play_pcap_image, which replays their payloads to the peer's m=image address."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    for n, datagram in enumerate(datagrams):
        _, packet = udp_packet(("192.0.2.1", 4000), ("192.0.2.2", 4000), datagram)
        frame = bytes(12) + b"\x08\x00" + packet  # Ethernet: addresses, then IPv4
        out += struct.pack("<IIII", 1, n * 20_000, len(frame), len(frame)) + frame
    return out
