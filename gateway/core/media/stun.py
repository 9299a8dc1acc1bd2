"""STUN messages (RFC 8489, formerly RFC 5389) as ICE connectivity checks use them: sans-IO.

What is here: parsing of untrusted datagrams into :class:`StunMessage` (header, attributes,
MESSAGE-INTEGRITY position, FINGERPRINT check) with explicit bounds, the short-term credential
check (HMAC-SHA1, RFC 8489 §14.5), and encoding of Binding responses with XOR-MAPPED-ADDRESS
(§14.2), ERROR-CODE (§14.8), MESSAGE-INTEGRITY and FINGERPRINT (§14.7). Known-answer tests use
RFC 5769's sample messages.

What is not: long-term credentials, MESSAGE-INTEGRITY-SHA256, USERHASH, TCP framing, requests
of our own (the gateway is an ICE-lite agent and sends no checks: RFC 8445 §2.5). A message
that uses them is still parsed; the ICE layer answers what it cannot take (420 or 400).
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import ipaddress
import struct

import attrs

from gateway.core.media.errors import RemoteMediaError

MAGIC_COOKIE = 0x2112A442
HEADER_LENGTH = 20
MAX_MESSAGE_LENGTH = 1280
"""The longest STUN datagram we parse. RFC 8489 §6.1 keeps messages under the path MTU (576
octets for IPv4 unless known otherwise); ICE checks are about 100 octets. Longer: not ours."""
MAX_ATTRIBUTES = 32
"""More attributes than this in one message is not an ICE check: refused as malformed."""

# Message types (RFC 8489 §5: method Binding 0x001, classes request/success/error).
BINDING_REQUEST = 0x0001
BINDING_INDICATION = 0x0011
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

# Attribute types (RFC 8489 §18.3, RFC 8445 §16.1).
MAPPED_ADDRESS = 0x0001
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
UNKNOWN_ATTRIBUTES = 0x000A
REALM = 0x0014
NONCE = 0x0015
XOR_MAPPED_ADDRESS = 0x0020
PRIORITY = 0x0024
USE_CANDIDATE = 0x0025
SOFTWARE = 0x8022
FINGERPRINT = 0x8028
ICE_CONTROLLED = 0x8029
ICE_CONTROLLING = 0x802A

_FINGERPRINT_XOR = 0x5354554E  # RFC 8489 §14.7: CRC-32 of the message XOR "STUN"
_INTEGRITY_LENGTH = 20  # HMAC-SHA1


class StunError(RemoteMediaError):
    """A datagram is not a well-formed STUN message (the peer's bytes): dropped, never answered
    (RFC 8489 §6.3: a malformed message, or one whose FINGERPRINT is wrong, is discarded)."""


@attrs.frozen
class StunMessage:
    """One parsed STUN message. ``attributes`` are (type, value) in order, padding removed, up
    to and including MESSAGE-INTEGRITY (RFC 8489 §14.5: attributes after it, other than
    FINGERPRINT, are ignored). ``integrity_at`` is MESSAGE-INTEGRITY's offset in ``raw``."""

    message_type: int
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...]
    raw: bytes = attrs.field(repr=False)
    integrity_at: int | None = None
    has_fingerprint: bool = False

    def get(self, attribute_type: int) -> bytes | None:
        """The value of the first attribute of that type, or None."""
        for kind, value in self.attributes:
            if kind == attribute_type:
                return value
        return None

    def has(self, attribute_type: int) -> bool:
        return any(kind == attribute_type for kind, _ in self.attributes)


def looks_like_stun(data: bytes) -> bool:
    """RFC 7983 §7: first octet 0..3, and (RFC 8489 §6) the magic cookie in place."""
    return (
        len(data) >= HEADER_LENGTH
        and data[0] < 4
        and int.from_bytes(data[4:8], "big") == MAGIC_COOKIE
    )


def parse_stun_untrusted(
    data: bytes,
    *,
    max_length: int = MAX_MESSAGE_LENGTH,
    max_attributes: int = MAX_ATTRIBUTES,
) -> StunMessage:
    """Parse one STUN datagram from the network. Raises :class:`StunError` when it is not a
    well-formed STUN message: shorter than a header, longer than ``max_length``, top bits set,
    no magic cookie, a length field that does not match the datagram (RFC 8489 §6.3), an
    attribute running past the end, more than ``max_attributes``, or a FINGERPRINT that is not
    last or does not match (§14.7)."""
    size = len(data)
    if size < HEADER_LENGTH:
        raise StunError(f"STUN message of {size} octets is shorter than its header")
    if size > max_length:
        raise StunError(f"STUN message of {size} octets is longer than {max_length}")
    message_type, length, cookie = struct.unpack_from("!HHI", data)
    if message_type & 0xC000:
        raise StunError("the top two bits of a STUN message are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunError("no STUN magic cookie")
    if length % 4 or HEADER_LENGTH + length != size:
        raise StunError(f"STUN length {length} does not match the datagram ({size} octets)")
    attributes: list[tuple[int, bytes]] = []
    integrity_at: int | None = None
    has_fingerprint = False
    offset = HEADER_LENGTH
    count = 0
    while offset < size:
        count += 1
        if count > max_attributes:
            raise StunError(f"more than {max_attributes} STUN attributes")
        if offset + 4 > size:
            raise StunError("truncated STUN attribute header")
        kind, value_length = struct.unpack_from("!HH", data, offset)
        start = offset + 4
        end = start + value_length
        if end > size:
            raise StunError(f"STUN attribute 0x{kind:04x} runs past the end of the message")
        value = data[start:end]
        padded_end = start + (value_length + 3) // 4 * 4
        if has_fingerprint:
            raise StunError("a STUN attribute follows FINGERPRINT")
        if kind == FINGERPRINT:
            if value_length != 4:
                raise StunError("FINGERPRINT is not 4 octets")
            expected = (binascii.crc32(data[:offset]) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
            if int.from_bytes(value, "big") != expected:
                raise StunError("STUN FINGERPRINT does not match")
            has_fingerprint = True
        elif integrity_at is None:
            # RFC 8489 §14.5: what follows MESSAGE-INTEGRITY (but FINGERPRINT) is ignored.
            if kind == MESSAGE_INTEGRITY:
                if value_length != _INTEGRITY_LENGTH:
                    raise StunError("MESSAGE-INTEGRITY is not 20 octets")
                integrity_at = offset
            attributes.append((kind, value))
        offset = padded_end
    if offset != size:
        raise StunError("STUN attribute padding runs past the end of the message")
    return StunMessage(
        message_type=message_type,
        transaction_id=data[8:20],
        attributes=tuple(attributes),
        raw=data,
        integrity_at=integrity_at,
        has_fingerprint=has_fingerprint,
    )


def integrity_ok(message: StunMessage, key: bytes) -> bool:
    """Whether MESSAGE-INTEGRITY is the HMAC-SHA1 of the message up to it under ``key``, with
    the header's length field counting up to its end (RFC 8489 §14.5). For ICE the key is the
    receiving agent's ice-pwd (short-term credential, §9.1.2; ice-pwd is ASCII, so OpaqueString
    preparation leaves it as it is). False when the message has none."""
    at = message.integrity_at
    if at is None:
        return False
    raw = message.raw
    length = at + 4 + _INTEGRITY_LENGTH - HEADER_LENGTH
    signed = raw[:2] + length.to_bytes(2, "big") + raw[4:at]
    expected = hmac.new(key, signed, hashlib.sha1).digest()
    return hmac.compare_digest(expected, raw[at + 4 : at + 4 + _INTEGRITY_LENGTH])


def encode_stun(
    message_type: int,
    transaction_id: bytes,
    attributes: list[tuple[int, bytes]],
    *,
    integrity_key: bytes | None = None,
    fingerprint: bool = True,
) -> bytes:
    """A STUN message: header, ``attributes`` (padded to 32 bits), then MESSAGE-INTEGRITY under
    ``integrity_key`` when given, then FINGERPRINT (RFC 8489 §14.5, §14.7: in that order)."""
    if len(transaction_id) != 12:
        raise ValueError("a STUN transaction id is 12 octets")
    body = b"".join(
        struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)
        for kind, value in attributes
    )

    def header(extra: int) -> bytes:
        return struct.pack("!HHI", message_type, len(body) + extra, MAGIC_COOKIE) + transaction_id

    if integrity_key is not None:
        mac = hmac.new(integrity_key, header(24) + body, hashlib.sha1).digest()
        body += struct.pack("!HH", MESSAGE_INTEGRITY, _INTEGRITY_LENGTH) + mac
    if fingerprint:
        crc = (binascii.crc32(header(8) + body) ^ _FINGERPRINT_XOR) & 0xFFFFFFFF
        body += struct.pack("!HHI", FINGERPRINT, 4, crc)
    return header(0) + body


def xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """The value of XOR-MAPPED-ADDRESS for ``host``:``port`` (RFC 8489 §14.2)."""
    ip = ipaddress.ip_address(host)
    key = struct.pack("!I", MAGIC_COOKIE) + transaction_id
    packed = ip.packed
    xored = bytes(a ^ b for a, b in zip(packed, key, strict=False))
    family = 0x01 if ip.version == 4 else 0x02
    return struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + xored


def parse_xor_address_untrusted(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    """Read an XOR-MAPPED-ADDRESS value (RFC 8489 §14.2). Raises :class:`StunError`."""
    if len(value) not in (8, 20) or value[1] not in (1, 2):
        raise StunError("malformed XOR-MAPPED-ADDRESS")
    size = 4 if value[1] == 1 else 16
    if len(value) != 4 + size:
        raise StunError("XOR-MAPPED-ADDRESS length does not match its family")
    port = int.from_bytes(value[2:4], "big") ^ (MAGIC_COOKIE >> 16)
    key = struct.pack("!I", MAGIC_COOKIE) + transaction_id
    packed = bytes(a ^ b for a, b in zip(value[4:], key, strict=False))
    return str(ipaddress.ip_address(packed)), port


def error_code(code: int, reason: str) -> bytes:
    """The value of ERROR-CODE (RFC 8489 §14.8): class and number, then the reason phrase."""
    return struct.pack("!HBB", 0, code // 100, code % 100) + reason.encode()


def parse_error_code_untrusted(value: bytes) -> int:
    """The code of an ERROR-CODE value. Raises :class:`StunError`."""
    if len(value) < 4 or not 3 <= value[2] & 0x07 <= 6 or value[3] > 99:
        raise StunError("malformed ERROR-CODE")
    return (value[2] & 0x07) * 100 + value[3]
