"""ZRTP packets and messages (RFC 6189 §5), as bytes in and values out.

A ZRTP packet shares the RTP port with media (RFC 7983: first byte 16..19) and is framed as::

    0x10 0x00 | sequence (2) | "ZRTP" (4) | SSRC (4) | message | CRC-32C (4)

The CRC (RFC 4960 appendix B, Castagnoli) covers everything before it and is written least
significant byte first (the byte order bzrtp, GNU ZRTP and Wireshark agree on). A message is the
preamble ``0x505a``, its length in 32-bit words (the whole message, without the packet header and
CRC), an eight-character type block, and a body that depends on the type (§5.2 to §5.16).

Parsing is of untrusted input (STYLE.md habit 5): every length is checked against the packet
before it is read, and any defect raises :class:`ZrtpParseError` with a reason that quotes no
packet content. A message keeps its bytes (``raw``): MACs, the Hello hash and the hashes of the
key derivation are computed over them exactly as received.

Not parsed: the fragmented packets of the post-quantum key agreements (first byte 0x11), which we
never offer; SASrelay and GoClear bodies (we answer them without reading them, see the engine).
"""

from __future__ import annotations

import struct

import attrs

MAGIC_COOKIE = b"ZRTP"  # 0x5a525450, §5
PREAMBLE = b"PZ"  # 0x505a, §5.1
HEADER_SIZE = 12
CRC_SIZE = 4
MIN_PACKET_SIZE = HEADER_SIZE + 12 + CRC_SIZE  # a message without a body
MAX_PACKET_SIZE = 3072  # bzrtp's bound; a DH3k DHPart is 484 octets
MAC_SIZE = 8
HASH_SIZE = 32  # H0..H3 and hvi: the implicit hash, SHA-256 (§5.1.2.1)
ZID_SIZE = 12
VERSION = b"1.10"


class ZrtpParseError(ValueError):
    """A ZRTP packet or message is malformed; ``str`` is the reason (never packet content)."""


# -- CRC-32C (RFC 4960 appendix B) --------------------------------------------------------------


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` (reflected, initial value and final XOR 0xFFFFFFFF)."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- packets ------------------------------------------------------------------------------------


def is_zrtp_packet(packet: bytes) -> bool:
    """Whether a datagram on the media port is ZRTP: first byte 16..19 (RFC 7983 §7) and the
    magic cookie (RFC 6189 §5)."""
    return len(packet) >= HEADER_SIZE and 16 <= packet[0] <= 19 and packet[4:8] == MAGIC_COOKIE


def frame(sequence: int, ssrc: int, message: bytes) -> bytes:
    """The packet carrying ``message`` (§5, Figure 2)."""
    head = b"\x10\x00" + struct.pack("!H", sequence & 0xFFFF) + MAGIC_COOKIE
    body = head + struct.pack("!I", ssrc & 0xFFFFFFFF) + message
    return body + crc32c(body).to_bytes(4, "little")


@attrs.frozen
class Packet:
    sequence: int
    ssrc: int
    message: bytes
    """From the preamble through the MAC: what hashes and MACs are computed over."""

    @property
    def message_type(self) -> bytes:
        return self.message[4:12]


def parse_packet_untrusted(data: bytes) -> Packet:
    """Check the framing and CRC of a ZRTP packet. A packet with a bad CRC must be discarded
    silently (§5): the caller drops it on :class:`ZrtpParseError`."""
    if not MIN_PACKET_SIZE <= len(data) <= MAX_PACKET_SIZE:
        raise ZrtpParseError(f"packet of {len(data)} octets (expected 28..3072)")
    if data[0] == 0x11:
        raise ZrtpParseError("fragmented packet (post-quantum key agreements are not offered)")
    if data[0] != 0x10 or data[4:8] != MAGIC_COOKIE:
        raise ZrtpParseError("not a ZRTP packet (first octet or magic cookie)")
    if crc32c(data[:-CRC_SIZE]) != int.from_bytes(data[-CRC_SIZE:], "little"):
        raise ZrtpParseError("bad CRC")
    sequence, ssrc = struct.unpack_from("!H4xI", data, 2)
    message = data[HEADER_SIZE:-CRC_SIZE]
    if message[:2] != PREAMBLE:
        raise ZrtpParseError("no message preamble")
    (words,) = struct.unpack_from("!H", message, 2)
    if words * 4 != len(message):
        raise ZrtpParseError(f"message length {words} words in a {len(message)}-octet message")
    return Packet(sequence, ssrc, message)


# -- messages -----------------------------------------------------------------------------------


def message(message_type: bytes, body: bytes = b"") -> bytes:
    """A message without MAC (ACKs, Error, Ping...), or one whose body ends in a placeholder
    MAC that :func:`with_mac` fills in."""
    assert len(message_type) == 8 and len(body) % 4 == 0
    words = 3 + len(body) // 4
    return PREAMBLE + struct.pack("!H", words) + message_type + body


HELLO = b"Hello   "
HELLO_ACK = b"HelloACK"
COMMIT = b"Commit  "
DH_PART1 = b"DHPart1 "
DH_PART2 = b"DHPart2 "
CONFIRM1 = b"Confirm1"
CONFIRM2 = b"Confirm2"
CONF2_ACK = b"Conf2ACK"
ERROR = b"Error   "
ERROR_ACK = b"ErrorACK"
GO_CLEAR = b"GoClear "
CLEAR_ACK = b"ClearACK"
SAS_RELAY = b"SASrelay"
RELAY_ACK = b"RelayACK"
PING = b"Ping    "
PING_ACK = b"PingACK "

# Hello flags (§5.2), in the top nibble of the flags/counts word.
FLAG_SIGNATURE = 0x4  # S: can sign the SAS
FLAG_MITM = 0x2  # M: a trusted MiTM PBX that can send SASrelay
FLAG_PASSIVE = 0x1  # P: never sends Commit


@attrs.frozen
class Hello:
    """§5.2. Algorithm lists as sent (without the mandatory ones a peer implies, see
    ``with_mandatory``)."""

    version: bytes
    client_id: bytes
    h3: bytes
    zid: bytes
    flags: int
    hashes: tuple[str, ...]
    ciphers: tuple[str, ...]
    auth_tags: tuple[str, ...]
    key_agreements: tuple[str, ...]
    sas_types: tuple[str, ...]
    raw: bytes = attrs.field(repr=False)

    @property
    def passive(self) -> bool:
        return bool(self.flags & FLAG_PASSIVE)

    @property
    def mitm(self) -> bool:
        return bool(self.flags & FLAG_MITM)


def encode_hello(
    *,
    client_id: bytes,
    h3: bytes,
    zid: bytes,
    flags: int,
    hashes: tuple[str, ...],
    ciphers: tuple[str, ...],
    auth_tags: tuple[str, ...],
    key_agreements: tuple[str, ...],
    sas_types: tuple[str, ...],
) -> bytes:
    """A Hello without its MAC (eight zero octets at the end; see :func:`with_mac`)."""
    lists = (hashes, ciphers, auth_tags, key_agreements, sas_types)
    if any(len(names) > 7 for names in lists):
        raise ValueError("at most 7 algorithms of each kind (§5.2)")
    counts = 0
    for names in lists:
        counts = (counts << 4) | len(names)
    word = (flags << 28) | counts
    blocks = b"".join(_block(name) for names in lists for name in names)
    body = VERSION + client_id.ljust(16)[:16] + h3 + zid + struct.pack("!I", word) + blocks
    return message(HELLO, body + bytes(MAC_SIZE))


def _block(name: str) -> bytes:
    block = name.encode("ascii").ljust(4)
    assert len(block) == 4
    return block


def _name(block: bytes) -> str:
    return block.decode("ascii", "replace")


def parse_hello_untrusted(raw: bytes) -> Hello:
    body = _body(raw, HELLO, minimum=68 + MAC_SIZE)
    version, client_id = body[0:4], body[4:20]
    h3, zid = body[20:52], body[52:64]
    (word,) = struct.unpack_from("!I", body, 64)
    counts = [(word >> shift) & 0xF for shift in (16, 12, 8, 4, 0)]
    if any(count > 7 for count in counts):
        raise ZrtpParseError("Hello algorithm count over 7")
    expected = 68 + 4 * sum(counts) + MAC_SIZE
    if len(body) != expected:
        raise ZrtpParseError(f"Hello of {len(body)} body octets, its counts need {expected}")
    lists: list[tuple[str, ...]] = []
    offset = 68
    for count in counts:
        lists.append(tuple(_name(body[i : i + 4]) for i in range(offset, offset + 4 * count, 4)))
        offset += 4 * count
    hashes, ciphers, auth_tags, key_agreements, sas_types = lists
    return Hello(
        version, client_id, h3, zid, word >> 28,
        hashes, ciphers, auth_tags, key_agreements, sas_types, raw=raw,
    )  # fmt: skip


MULTISTREAM = "Mult"  # the key agreement type of Multistream mode (§4.4.3, §5.1.5)
PRESHARED = "Prsh"


@attrs.frozen
class Commit:
    """§5.4. ``hvi`` is the DH modes' hash commitment, or the nonce of a Multistream Commit
    (16 octets, :attr:`nonce`), or a Preshared one's nonce and keyID (24; never accepted)."""

    h2: bytes
    zid: bytes
    hash: str
    cipher: str
    auth_tag: str
    key_agreement: str
    sas_type: str
    hvi: bytes
    raw: bytes = attrs.field(repr=False)

    @property
    def dh_mode(self) -> bool:
        return self.key_agreement not in (MULTISTREAM, PRESHARED)

    @property
    def multistream(self) -> bool:
        return self.key_agreement == MULTISTREAM

    @property
    def nonce(self) -> bytes:
        """The nonce of a Multistream Commit (§4.4.3.1)."""
        return self.hvi[:16]


def encode_commit(
    *, h2: bytes, zid: bytes, algorithms: tuple[str, str, str, str, str], hvi: bytes
) -> bytes:
    """A Commit without its MAC; ``hvi`` is the nonce (16 octets) in Multistream mode."""
    assert len(hvi) == (16 if algorithms[3] == MULTISTREAM else HASH_SIZE)
    body = h2 + zid + b"".join(_block(name) for name in algorithms) + hvi
    return message(COMMIT, body + bytes(MAC_SIZE))


def parse_commit_untrusted(raw: bytes) -> Commit:
    body = _body(raw, COMMIT, minimum=64 + 16 + MAC_SIZE)
    names = tuple(_name(body[i : i + 4]) for i in range(44, 64, 4))
    hash_, cipher, auth_tag, key_agreement, sas_type = names
    tail = len(body) - 64 - MAC_SIZE
    # DH: hvi (32); Mult: nonce (16); Prsh: nonce (16) and keyID (8) (§5.4).
    expected = {MULTISTREAM: 16, PRESHARED: 24}.get(key_agreement, HASH_SIZE)
    if tail != expected:
        raise ZrtpParseError(f"Commit with a {tail}-octet tail after its algorithms")
    return Commit(
        body[0:32], body[32:44], hash_, cipher, auth_tag, key_agreement, sas_type,
        body[64 : 64 + tail], raw=raw,
    )  # fmt: skip


@attrs.frozen
class DhPart:
    """§5.5 / §5.6 (DHPart1 from the responder, DHPart2 from the initiator)."""

    h1: bytes
    rs1_id: bytes
    rs2_id: bytes
    aux_secret_id: bytes
    pbx_secret_id: bytes
    public_value: bytes
    raw: bytes = attrs.field(repr=False)


def encode_dh_part(
    message_type: bytes, *, h1: bytes, secret_ids: tuple[bytes, bytes, bytes, bytes], pv: bytes
) -> bytes:
    assert all(len(secret_id) == 8 for secret_id in secret_ids) and len(pv) % 4 == 0
    return message(message_type, h1 + b"".join(secret_ids) + pv + bytes(MAC_SIZE))


def parse_dh_part_untrusted(raw: bytes, message_type: bytes) -> DhPart:
    body = _body(raw, message_type, minimum=64 + 4 + MAC_SIZE)
    return DhPart(
        body[0:32], body[32:40], body[40:48], body[48:56], body[56:64],
        body[64:-MAC_SIZE], raw=raw,
    )  # fmt: skip


@attrs.frozen
class Confirm:
    """§5.7 as received: the MAC, the CFB IV and the encrypted part (H0, flags, expiry,
    signature), which only the session's keys open."""

    confirm_mac: bytes
    iv: bytes
    encrypted: bytes = attrs.field(repr=False)
    raw: bytes = attrs.field(repr=False)


def encode_confirm(
    message_type: bytes, *, confirm_mac: bytes, iv: bytes, encrypted: bytes
) -> bytes:
    return message(message_type, confirm_mac + iv + encrypted)


def parse_confirm_untrusted(raw: bytes, message_type: bytes) -> Confirm:
    body = _body(raw, message_type, minimum=8 + 16 + 40)
    return Confirm(body[0:8], body[8:24], body[24:], raw=raw)


@attrs.frozen
class ConfirmContent:
    """The decrypted part of a Confirm (§5.7)."""

    h0: bytes = attrs.field(repr=False)
    flags: int
    cache_expiration: int


# Confirm flags (§5.7): PBX enrollment, SAS verified, allow clear, disclosure.
CONFIRM_E, CONFIRM_V, CONFIRM_A, CONFIRM_D = 0x08, 0x04, 0x02, 0x01


def confirm_plaintext(h0: bytes, *, flags: int, cache_expiration: int) -> bytes:
    """H0, then 15 zero bits, a 9-bit signature length (0: no signature) and the flags octet,
    then the cache expiration interval."""
    return h0 + struct.pack("!II", flags & 0x0F, cache_expiration)


def parse_confirm_plaintext_untrusted(plaintext: bytes) -> ConfirmContent:
    if len(plaintext) < 40:
        raise ZrtpParseError("Confirm content too short")
    (word, expiration) = struct.unpack_from("!II", plaintext, 32)
    signature_words = (word >> 8) & 0x1FF
    if len(plaintext) != 40 + 4 * signature_words:
        raise ZrtpParseError("Confirm signature length does not match the message")
    return ConfirmContent(plaintext[:32], word & 0x0F, expiration)


def encode_error(code: int) -> bytes:
    return message(ERROR, struct.pack("!I", code))


def parse_error_untrusted(raw: bytes) -> int:
    body = _body(raw, ERROR, minimum=4)
    if len(body) != 4:
        raise ZrtpParseError("Error of the wrong length")
    return int(struct.unpack("!I", body)[0])


def parse_ping_untrusted(raw: bytes) -> bytes:
    """The endpoint hash of a Ping (§5.15)."""
    body = _body(raw, PING, minimum=12)
    if len(body) != 12:
        raise ZrtpParseError("Ping of the wrong length")
    return body[4:12]


def encode_ping_ack(*, endpoint_hash: bytes, received_hash: bytes, ssrc: int) -> bytes:
    """§5.16: our endpoint hash, the Ping's, and the SSRC of the Ping's packet."""
    return message(PING_ACK, VERSION + endpoint_hash + received_hash + struct.pack("!I", ssrc))


def _body(raw: bytes, message_type: bytes, *, minimum: int) -> bytes:
    if raw[4:12] != message_type:
        raise ZrtpParseError("unexpected message type")
    body = raw[12:]
    if len(body) < minimum:
        name = message_type.decode("ascii").strip()
        raise ZrtpParseError(f"{name} of {len(body)} body octets (at least {minimum})")
    return body


# Error codes (§5.9, Table 8) and what they mean, for reasons operators read.
ERROR_CODES = {
    0x10: "malformed packet",
    0x20: "critical software error",
    0x30: "unsupported ZRTP version",
    0x40: "Hello components mismatch",
    0x51: "hash type not supported",
    0x52: "cipher type not supported",
    0x53: "public key exchange not supported",
    0x54: "SRTP auth tag not supported",
    0x55: "SAS rendering scheme not supported",
    0x56: "no shared secret available, DH mode required",
    0x61: "DH error: bad pvi or pvr",
    0x62: "DH error: hvi does not match the hashed data",
    0x63: "relayed SAS from an untrusted MiTM",
    0x70: "bad Confirm MAC",
    0x80: "nonce reuse",
    0x90: "equal ZIDs in Hello",
    0x91: "SSRC collision",
    0xA0: "service unavailable",
    0xB0: "protocol timeout",
    0x100: "GoClear message received, but not allowed",
}


def describe_error(code: int) -> str:
    return f"0x{code:x} ({ERROR_CODES.get(code, 'unknown error code')})"
