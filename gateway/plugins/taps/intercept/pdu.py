"""X2/X3 PDUs (ETSI TS 103 221-2 §5): what the point of interception sends its mediation function.

Every PDU is a 40-octet fixed header, conditional attributes, then the payload; all integers are
big-endian and PDUs follow each other on the TCP (or TLS) stream, framed by their own two length
fields, so several may share a segment and one may span several.

======  ====  ==================================================================================
offset  size  field
======  ====  ==================================================================================
0       2     version
2       2     PDU type: 1 X2 (xIRI), 2 X3 (xCC), 3 keepalive, 4 keepalive acknowledgement
4       4     header length: from offset 0 to the end of the conditional attributes
8       4     payload length
12      2     payload format: 8 RTP packet, 9 SIP message, 5/6 IPv4/IPv6 packet, 0 keepalives
14      2     payload direction: 1 unknown, 2 sent to the target, 3 sent from the target
16      16    XID: the task's UUID from X1
32      8     correlation ID: one value for every PDU of one call
40      ...   conditional attributes: type (2), length (2, of the value), value
======  ====  ==================================================================================

Sources: the ETSI texts were not readable here; the layout and code points come from two
independent implementations that agree (Wireshark's ``packet-li5g.c``, "TS 103 221-2 V1.6.1", and
OpenLI's X2/X3 ingester), summarised in ../shared/specs/lawful-intercept.md. The version field's
value is configuration (OpenLI writes 5; Wireshark's TLS heuristic only recognises 1).

Sans-IO: :func:`encode_pdu` makes bytes, :class:`PduReader` takes bytes as they arrive and gives
whole PDUs, refusing lengths past its bounds (the peer is another system: STYLE.md habit 5).
"""

from __future__ import annotations

import ipaddress
import struct
import uuid

import attrs

# PDU types (§5.2.2)
X2 = 1
X3 = 2
KEEPALIVE = 3
KEEPALIVE_ACK = 4

# Payload formats (§5.2.4)
FORMAT_NONE = 0
FORMAT_IPV4 = 5
FORMAT_IPV6 = 6
FORMAT_RTP = 8
FORMAT_SIP = 9

# Payload directions (§5.2.5)
DIRECTION_NONE = 0
DIRECTION_UNKNOWN = 1
TO_TARGET = 2
FROM_TARGET = 3

# Conditional attribute types (§5.3)
NETWORK_FUNCTION_ID = 6  # NFID: the element that sent the PDU (our ne_identifier, UTF-8)
INTERCEPTION_POINT_ID = 7  # IPID: where in that element the tap sits (interception_point_id)
SEQUENCE_NUMBER = 8
TIMESTAMP = 9
SOURCE_IPV4 = 10
DESTINATION_IPV4 = 11
SOURCE_IPV6 = 12
DESTINATION_IPV6 = 13
SOURCE_PORT = 14
DESTINATION_PORT = 15
IP_PROTOCOL = 16
MATCHED_TARGET = 17

FIXED_HEADER = 40
MAX_HEADER_LENGTH = 65_536
MAX_PAYLOAD_LENGTH = 1_048_576

_FIXED = struct.Struct("!HHIIHH16sQ")
NIL_XID = uuid.UUID(int=0)


class PduError(Exception):
    """A PDU from the peer that breaks the format or our bounds; the reason says which."""


@attrs.frozen
class Pdu:
    pdu_type: int
    payload_format: int
    direction: int
    xid: uuid.UUID
    correlation: int
    attributes: tuple[tuple[int, bytes], ...] = ()
    payload: bytes = attrs.field(default=b"", repr=lambda p: f"<{len(p)} octets>")
    version: int = 5

    def attribute(self, kind: int) -> bytes | None:
        """The first attribute of type ``kind``, or None."""
        for found, value in self.attributes:
            if found == kind:
                return value
        return None

    @property
    def sequence(self) -> int | None:
        value = self.attribute(SEQUENCE_NUMBER)
        return int.from_bytes(value, "big") if value is not None else None


def encode_pdu(pdu: Pdu) -> bytes:
    attributes = encode_attributes(pdu.attributes)
    header_length = FIXED_HEADER + len(attributes)
    if header_length > MAX_HEADER_LENGTH or len(pdu.payload) > MAX_PAYLOAD_LENGTH:
        raise ValueError("PDU too large")
    fixed = _FIXED.pack(
        pdu.version,
        pdu.pdu_type,
        header_length,
        len(pdu.payload),
        pdu.payload_format,
        pdu.direction,
        pdu.xid.bytes,
        pdu.correlation,
    )
    return fixed + attributes + pdu.payload


_SEQUENCE_AND_TIME = struct.Struct("!HHIHHII")  # attribute 8 (4 octets), attribute 9 (8)


def encode_copy(
    pdu_type: int,
    payload_format: int,
    direction: int,
    xid: bytes,
    correlation: int,
    sequence: int,
    at: float,
    more_attributes: bytes,
    payload: bytes,
    version: int,
) -> bytes:
    """What :func:`encode_pdu` makes of an X2 or X3 PDU whose attributes are its sequence
    number, its timestamp, then ``more_attributes`` (already encoded: the matched target, the
    addresses), without the objects: this runs for every intercepted packet."""
    seconds = int(at)
    attributes = (
        _SEQUENCE_AND_TIME.pack(
            SEQUENCE_NUMBER,
            4,
            sequence & 0xFFFFFFFF,
            TIMESTAMP,
            8,
            seconds,
            min(999_999_999, round((at - seconds) * 1e9)),
        )
        + more_attributes
    )
    fixed = _FIXED.pack(
        version,
        pdu_type,
        FIXED_HEADER + len(attributes),
        len(payload),
        payload_format,
        direction,
        xid,
        correlation,
    )
    return fixed + attributes + payload


def encode_attributes(attributes: tuple[tuple[int, bytes], ...]) -> bytes:
    return b"".join(struct.pack("!HH", kind, len(value)) + value for kind, value in attributes)


def keepalive(sequence: int, *, version: int, acknowledgement: bool = False) -> bytes:
    """A keepalive (or its acknowledgement, echoing ``sequence``): no XID, no payload, only
    the sequence number attribute."""
    return encode_pdu(
        Pdu(
            KEEPALIVE_ACK if acknowledgement else KEEPALIVE,
            FORMAT_NONE,
            DIRECTION_NONE,
            NIL_XID,
            0,
            (sequence_attribute(sequence),),
            version=version,
        )
    )


def sequence_attribute(sequence: int) -> tuple[int, bytes]:
    return SEQUENCE_NUMBER, struct.pack("!I", sequence & 0xFFFFFFFF)


def timestamp_attribute(at: float) -> tuple[int, bytes]:
    """POSIX seconds and nanoseconds."""
    seconds = int(at)
    nanoseconds = min(999_999_999, round((at - seconds) * 1e9))
    return TIMESTAMP, struct.pack("!II", seconds, nanoseconds)


def address_attributes(
    source: tuple[str, int], destination: tuple[str, int], protocol: int
) -> tuple[tuple[int, bytes], ...]:
    """Source and destination addresses and ports and the IP protocol (17 UDP, 6 TCP)."""
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    v4 = src.version == 4
    return (
        (SOURCE_IPV4 if v4 else SOURCE_IPV6, src.packed),
        (DESTINATION_IPV4 if dst.version == 4 else DESTINATION_IPV6, dst.packed),
        (SOURCE_PORT, struct.pack("!H", source[1])),
        (DESTINATION_PORT, struct.pack("!H", destination[1])),
        (IP_PROTOCOL, bytes([protocol])),
    )


_IPV4_HEADER = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HEADER = struct.Struct("!IHBB16s16s")
_UDP_HEADER = struct.Struct("!HHHH")
_UDP = 17
_HOP_LIMIT = 64


def udp_packet(
    source: tuple[str, int], destination: tuple[str, int], payload: bytes
) -> tuple[int, bytes]:
    """``payload`` as the IP packet that carried it over UDP from ``source`` to ``destination``,
    and its payload format (5 IPv4 packet, 6 IPv6 packet: §5.2.4): what X3 carries for media
    that is not RTP (T.38 fax over UDPTL), so that the mediation function gets the addresses and
    ports with every datagram. Checksums are computed (RFC 791 §3.1, RFC 768, RFC 8200 §8.1);
    the IPv4 identification is 0 with Don't Fragment set (RFC 6864 §4.1). Raises ValueError for
    addresses that are not IP literals of one family, or a payload too long for UDP."""
    src = ipaddress.ip_address(source[0].split("%", 1)[0])
    dst = ipaddress.ip_address(destination[0].split("%", 1)[0])
    if src.version != dst.version:
        raise ValueError("source and destination of different address families")
    udp_length = _UDP_HEADER.size + len(payload)
    if udp_length > 0xFFFF:
        raise ValueError("payload too long for a UDP datagram")
    pseudo_header = (
        src.packed + dst.packed + struct.pack("!HH", _UDP, udp_length)
        if src.version == 4
        else src.packed + dst.packed + struct.pack("!IxxxB", udp_length, _UDP)
    )
    udp = _UDP_HEADER.pack(source[1], destination[1], udp_length, 0) + payload
    checksum = _internet_checksum(pseudo_header + udp) or 0xFFFF  # RFC 768: 0 means "none"
    udp = udp[:6] + struct.pack("!H", checksum) + udp[8:]
    if src.version == 4:
        header = _IPV4_HEADER.pack(
            0x45, 0, 20 + udp_length, 0, 0x4000, _HOP_LIMIT, _UDP, 0, src.packed, dst.packed
        )
        header = header[:10] + struct.pack("!H", _internet_checksum(header)) + header[12:]
        return FORMAT_IPV4, header + udp
    header = _IPV6_HEADER.pack(6 << 28, udp_length, _UDP, _HOP_LIMIT, src.packed, dst.packed)
    return FORMAT_IPV6, header + udp


def _internet_checksum(data: bytes) -> int:
    """The 16-bit one's complement of the one's complement sum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def decode_pdu(data: bytes) -> Pdu:
    """One whole PDU (exactly ``data``)."""
    reader = PduReader()
    pdus = reader.feed(data)
    if len(pdus) != 1 or reader.buffered:
        raise PduError("not exactly one PDU")
    return pdus[0]


class PduReader:
    """Whole PDUs out of a byte stream."""

    def __init__(
        self,
        *,
        max_header_length: int = MAX_HEADER_LENGTH,
        max_payload_length: int = MAX_PAYLOAD_LENGTH,
    ) -> None:
        self._buffer = bytearray()
        self._max_header = max_header_length
        self._max_payload = max_payload_length

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Pdu]:
        self._buffer += data
        pdus: list[Pdu] = []
        while len(self._buffer) >= FIXED_HEADER:
            version, kind, header_length, payload_length, fmt, direction, xid, correlation = (
                _FIXED.unpack_from(self._buffer)
            )
            if not FIXED_HEADER <= header_length <= self._max_header:
                raise PduError(f"header length {header_length} outside 40..{self._max_header}")
            if payload_length > self._max_payload:
                raise PduError(f"payload length {payload_length} above {self._max_payload}")
            total = header_length + payload_length
            if len(self._buffer) < total:
                break
            attributes = _attributes(bytes(self._buffer[FIXED_HEADER:header_length]))
            payload = bytes(self._buffer[header_length:total])
            del self._buffer[:total]
            pdus.append(
                Pdu(
                    kind,
                    fmt,
                    direction,
                    uuid.UUID(bytes=xid),
                    correlation,
                    attributes,
                    payload,
                    version,
                )
            )
        return pdus


def _attributes(data: bytes) -> tuple[tuple[int, bytes], ...]:
    found: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise PduError("a conditional attribute is cut short")
        kind, length = struct.unpack_from("!HH", data, offset)
        end = offset + 4 + length
        if end > len(data):
            raise PduError(f"conditional attribute {kind} runs past the header")
        found.append((kind, data[offset + 4 : end]))
        offset = end
    return tuple(found)
