"""The HEP chunk parser of the HEP tests: moved here from test_hep.py so that no test module
imports another."""

from __future__ import annotations

import struct


def chunks(packet: bytes) -> dict[int, bytes]:
    assert packet[:4] == b"HEP3"
    (total,) = struct.unpack_from("!H", packet, 4)
    assert total == len(packet)
    found: dict[int, bytes] = {}
    offset = 6
    while offset < len(packet):
        vendor, kind, length = struct.unpack_from("!HHH", packet, offset)
        assert vendor == 0 and length >= 6
        found[kind] = packet[offset + 6 : offset + length]
        offset += length
    assert offset == len(packet)
    return found
