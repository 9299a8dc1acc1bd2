"""The Ogg page reader of the Ogg Opus tests: moved here from test_oggopus.py so that no test
module imports another."""

from __future__ import annotations

import struct

import attrs

from gateway.plugins.taps.oggopus import (
    ogg_crc,
)


@attrs.frozen
class Page:
    flags: int
    granule: int
    serial: int
    sequence: int
    lacing: tuple[int, ...]


def read_ogg(data: bytes) -> tuple[list[Page], list[bytes]]:
    """Every page (its CRC checked) and every packet of an Ogg stream (RFC 3533 §6)."""
    pages: list[Page] = []
    packets: list[bytes] = []
    partial = b""
    offset = 0
    while offset < len(data):
        assert data[offset : offset + 4] == b"OggS" and data[offset + 4] == 0
        flags, granule, serial, sequence, crc, count = struct.unpack_from(
            "<BqIIIB", data, offset + 5
        )
        lacing = tuple(data[offset + 27 : offset + 27 + count])
        end = offset + 27 + count + sum(lacing)
        page = data[offset:end]
        assert ogg_crc(page[:22] + b"\0\0\0\0" + page[26:]) == crc
        assert bool(flags & 0x01) == bool(partial)  # continued exactly when a packet was open
        body = offset + 27 + count
        for value in lacing:
            partial += data[body : body + value]
            body += value
            if value < 255:
                packets.append(partial)
                partial = b""
        pages.append(Page(flags, granule, serial, sequence, lacing))
        offset = end
    assert partial == b""
    return pages, packets
