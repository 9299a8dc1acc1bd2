"""RTP and RTCP headers (RFC 3550) and RTP/RTCP demultiplexing on one port (RFC 5761). Sans-IO.

The relay does not parse headers: it forwards SSRC, sequence numbers and timestamps unchanged and
only checks what it must on the hot path, with the constants and the lookup table defined here:

- the version bits (RFC 3550 §5.1: V=2, so the first octet is 0b10xxxxxx);
- the minimal length (:data:`RTP_HEADER_LENGTH`, :data:`RTCP_MIN_LENGTH`);
- RTP or RTCP on a muxed port (:data:`RTCP_BY_SECOND_OCTET`, RFC 5761 §4).

The ``parse_*_untrusted`` functions are for everything off the hot path (taps, diagnostics, tests).
"""

from __future__ import annotations

import attrs

from gateway.core.media.errors import RtpParseError

RTP_VERSION = 2
"""RFC 3550 §5.1: the version field of every RTP and RTCP packet is 2."""

VERSION_MASK = 0xC0
"""Mask of the version bits of the first octet: ``octet & VERSION_MASK == VERSION_BITS`` is V=2."""

VERSION_BITS = RTP_VERSION << 6

RTP_HEADER_LENGTH = 12
"""RFC 3550 §5.1: the fixed RTP header (V/P/X/CC, M/PT, sequence, timestamp, SSRC)."""

RTCP_MIN_LENGTH = 8
"""RFC 3550 §6.4.2: the shortest RTCP packet, an empty receiver report (4-byte header + SSRC)."""

MAX_PACKET_LENGTH = 65535
"""Default limit for the parsers: the largest UDP payload (RFC 768)."""

RTCP_PAYLOAD_TYPES = range(64, 96)
"""RFC 5761 §4: on a muxed port an RTP payload type (second octet without the marker bit) of 64-95
is RTCP. RTCP packet types 192-223 (SR 200, RR 201, SDES 202, BYE 203, APP 204, RTPFB 205, PSFB 206,
XR 207) fall there, which is why RTP must not use payload types 64-95 with rtcp-mux."""

RTCP_BY_SECOND_OCTET = bytes(int(octet & 0x7F in RTCP_PAYLOAD_TYPES) for octet in range(256))
"""256-entry table: ``RTCP_BY_SECOND_OCTET[packet[1]]`` is 1 for RTCP on a muxed port (RFC 5761 §4).

A table lookup is the cheapest test in CPython's per-packet loop. The rule also holds for SRTCP,
whose first 8 octets are in the clear (RFC 3711 §3.4)."""


def is_rtcp(packet: bytes | bytearray | memoryview) -> bool:
    """True when a packet received on a muxed port is RTCP, False when it is RTP (RFC 5761 §4).

    Packets shorter than two octets are not RTCP (and not RTP either: check the length first).
    """
    return len(packet) >= 2 and RTCP_BY_SECOND_OCTET[packet[1]] == 1


def has_version_2(packet: bytes | bytearray | memoryview) -> bool:
    """True when the first octet carries version 2 (RFC 3550 §5.1; RFC 7983 range 128-191)."""
    return len(packet) >= 1 and packet[0] & VERSION_MASK == VERSION_BITS


@attrs.frozen
class RtpHeader:
    """The fixed RTP header and the length of all before the payload (RFC 3550 §5.1, §5.3.1)."""

    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    header_length: int
    """Octets before the payload: 12 + 4 * CSRC count + the header extension, if any."""


@attrs.frozen
class RtcpHeader:
    """The common header of the first RTCP packet in a compound packet, plus its sender SSRC
    (RFC 3550 §6.4.1: every RTCP packet type starts with V/P/count, PT, length, SSRC)."""

    padding: bool
    count: int
    """Report count (SR/RR), source count (SDES/BYE) or FMT (RTPFB/PSFB, RFC 4585 §6.1)."""
    packet_type: int
    length: int
    """Octets in this RTCP packet, header included (RFC 3550 §6.4.1: (length field + 1) * 4)."""
    ssrc: int


def _check_common(packet: bytes | bytearray | memoryview, minimum: int, max_length: int) -> None:
    if len(packet) > max_length:
        raise RtpParseError(f"packet of {len(packet)} octets exceeds the limit of {max_length}")
    if len(packet) < minimum:
        raise RtpParseError(f"packet of {len(packet)} octets is shorter than {minimum}")
    if packet[0] & VERSION_MASK != VERSION_BITS:
        raise RtpParseError(f"version {packet[0] >> 6} is not {RTP_VERSION}")


def parse_rtp_header_untrusted(
    packet: bytes | bytearray | memoryview, *, max_length: int = MAX_PACKET_LENGTH
) -> RtpHeader:
    """Parse the RTP header of ``packet`` (RFC 3550 §5.1), checking that CSRCs, the header extension
    (§5.3.1) and padding (§5.1: the last octet counts the padding octets) fit in the packet.

    Raises :class:`RtpParseError` when the packet is malformed or longer than ``max_length``.
    """
    _check_common(packet, RTP_HEADER_LENGTH, max_length)
    first, second = packet[0], packet[1]
    csrc_count = first & 0x0F
    header_length = RTP_HEADER_LENGTH + 4 * csrc_count
    extension = bool(first & 0x10)
    if extension:
        # RFC 3550 §5.3.1: 16-bit profile-defined field, then the extension length in 32-bit words.
        if len(packet) < header_length + 4:
            raise RtpParseError("header extension does not fit in the packet")
        words = int.from_bytes(packet[header_length + 2 : header_length + 4], "big")
        header_length += 4 + 4 * words
    if len(packet) < header_length:
        raise RtpParseError("CSRC list or header extension does not fit in the packet")
    padding = bool(first & 0x20)
    if padding:
        pad = packet[-1]
        if pad == 0 or header_length + pad > len(packet):
            raise RtpParseError(f"padding count {pad} does not fit in the packet")
    return RtpHeader(
        padding=padding,
        extension=extension,
        csrc_count=csrc_count,
        marker=bool(second & 0x80),
        payload_type=second & 0x7F,
        sequence_number=int.from_bytes(packet[2:4], "big"),
        timestamp=int.from_bytes(packet[4:8], "big"),
        ssrc=int.from_bytes(packet[8:12], "big"),
        header_length=header_length,
    )


def parse_rtcp_header_untrusted(
    packet: bytes | bytearray | memoryview, *, max_length: int = MAX_PACKET_LENGTH
) -> RtcpHeader:
    """Parse the header of the first RTCP packet of ``packet`` (RFC 3550 §6.4.1).

    Checks the version, that the packet type is an RTCP type (RFC 5761 §4 range) and that the
    declared length fits in the datagram (a compound packet may hold more after it, RFC 3550 §6.1).
    Raises :class:`RtpParseError` when the packet is malformed or longer than ``max_length``.
    """
    _check_common(packet, RTCP_MIN_LENGTH, max_length)
    packet_type = packet[1]
    if not RTCP_BY_SECOND_OCTET[packet_type] or packet_type < 128:
        raise RtpParseError(f"packet type {packet_type} is not RTCP")
    length = (int.from_bytes(packet[2:4], "big") + 1) * 4
    if length < RTCP_MIN_LENGTH or length > len(packet):
        raise RtpParseError(f"RTCP length of {length} octets does not fit in {len(packet)}")
    return RtcpHeader(
        padding=bool(packet[0] & 0x20),
        count=packet[0] & 0x1F,
        packet_type=packet_type,
        length=length,
        ssrc=int.from_bytes(packet[4:8], "big"),
    )
