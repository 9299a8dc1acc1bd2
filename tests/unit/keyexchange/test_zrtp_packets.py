"""ZRTP framing and messages (RFC 6189 §5) against the known answers of the ZRTP digest §15: the
CRC-32C of a HelloACK, and the nine packets of a DH3k exchange between two linphone endpoints
(bzrtp's parser test), parsed, re-encoded and checked with the hash chain and keys published for
that exchange. Then our own messages round trip, and malformed input is refused without being
quoted."""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest

from gateway.plugins.keyexchange.zrtp import packets as p
from gateway.plugins.keyexchange.zrtp.crypto import (
    cfb_decrypt,
    cfb_encrypt,
    mac64,
    message_mac_valid,
    sha256,
    with_mac,
)
from tests.unit.keyexchange.zrtp_vectors import (
    COMMIT_I,
    CONF2_ACK_R,
    CONFIRM1_R,
    CONFIRM2_I,
    DH_PART1_R,
    DH_PART2_I,
    EXCHANGE,
    HELLO_ACK_R,
    HELLO_I,
    HELLO_R,
    MAC_KEY_I,
    MAC_KEY_R,
    PACKETS,
    ZRTP_KEY_I,
    ZRTP_KEY_R,
)

# -- the exchange of digest §15.3 (responder SSRC 0x12345678, initiator SSRC 0x87654321) ---------


PACKET_IDS = [name for name, *_ in EXCHANGE]

ZID_R = bytes.fromhex("7eb00497c0feb2c92431497f")
ZID_I = bytes.fromhex("9242c2cf44ee9c65ca5878f1")
H2_R = bytes.fromhex("7012ef2e852ffc84b88dcc03d78f530163fbd3b02dbb9e98220de3e36425040f")
H1_R = bytes.fromhex("287c28e4d73d1439b56d1c479d590af21033de6bd52bfb26a5874de9206b9fdd")
H0_R = bytes.fromhex("bbbf7eb114d5d40c6bb0795819c1d083c9e1f42e11cd7ec3aad8b917e6b59e86")
H2_I = bytes.fromhex("d9ff148b34aa69e933c162e66be8cd9de30fb76ae86a622bcbe46b9105c7c87e")
H1_I = bytes.fromhex("9eb2a58be89637f55a4134b2ecda8495f0f89bab614f7c9e56b73bd346babe9a")
H0_I = bytes.fromhex("0902cc13c48403316891054de06df4c96ab5be82e83733b7a9cebeb542aa54ba")
HELLO_HASH_R = bytes.fromhex("13e9f407367895861f0eee6707ba30aca05a0ad9997625e9279ad5d08485aa9d")
HELLO_HASH_I = bytes.fromhex("8a286f762a00f21907fe937801894ce4f4ac6a7d2b9acd61eb25b014f905df77")
HVI = bytes.fromhex("1ec0fe2e72064dfbfc92028c030fb8f891b4e796ac25fdf968c6e967a942b15b")
TOTAL_HASH = bytes.fromhex("0d87f63d07fde7f4ba4b0c9b1c6077d8da09c99bd91cac2af3bcf0724cbe82bf")


def message_of(packet: bytes) -> bytes:
    return p.parse_packet_untrusted(packet).message


def refused(parse: Callable[[bytes], object], data: bytes, reason: str) -> None:
    """``parse(data)`` raises ZrtpParseError whose message contains ``reason`` and quotes none
    of ``data``'s content (no eight-octet run of it, raw or in hex)."""
    with pytest.raises(p.ZrtpParseError, match=reason) as info:
        parse(data)
    text = str(info.value)
    content = data[12:]  # after what names the message type (or the packet header)
    for start in range(max(0, len(content) - 7)):
        run = content[start : start + 8]
        assert run.hex() not in text.lower()
        assert run.decode("latin-1") not in text


# -- CRC-32C (RFC 4960 appendix B) and framing ----------------------------------------------------


def test_crc32c_of_the_hello_ack_vector_and_its_wire_order() -> None:
    unframed = bytes.fromhex("100018cd5a52545063674bfb505a000348656c6c6f41434b")
    assert p.crc32c(unframed) == 0xCDDC9E9C
    framed = p.frame(0x18CD, 0x63674BFB, p.message(p.HELLO_ACK))
    assert framed == unframed + bytes.fromhex("9c9edccd")  # least significant octet first
    assert p.parse_packet_untrusted(framed) == p.Packet(0x18CD, 0x63674BFB, unframed[12:])


def test_crc32c_check_value() -> None:
    # The catalogue check value of CRC-32/ISCSI (Castagnoli), and of nothing at all.
    assert p.crc32c(b"123456789") == 0xE3069283
    assert p.crc32c(b"") == 0


@pytest.mark.parametrize(("name", "packet", "sequence", "ssrc", "kind"), EXCHANGE, ids=PACKET_IDS)
def test_each_packet_of_the_exchange_passes_and_reframes_identically(
    name: str, packet: bytes, sequence: int, ssrc: int, kind: bytes
) -> None:
    parsed = p.parse_packet_untrusted(packet)
    assert (parsed.sequence, parsed.ssrc, parsed.message_type) == (sequence, ssrc, kind)
    assert parsed.message == packet[12:-4]
    assert len(parsed.message) == 4 * int.from_bytes(packet[14:16], "big")
    assert p.frame(sequence, ssrc, parsed.message) == packet
    assert p.is_zrtp_packet(packet)


@pytest.mark.parametrize("packet", PACKETS, ids=PACKET_IDS)
def test_one_flipped_bit_anywhere_is_refused(packet: bytes) -> None:
    # Every octet, a different bit each time; every bit of the short packets.
    flips = [(i, i % 8) for i in range(len(packet))]
    if len(packet) <= 28:
        flips = [(i, bit) for i in range(len(packet)) for bit in range(8)]
    for index, bit in flips:
        damaged = bytearray(packet)
        damaged[index] ^= 1 << bit
        with pytest.raises(p.ZrtpParseError):
            p.parse_packet_untrusted(bytes(damaged))


# -- the messages of §15.3 ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("packet", "zid", "h3_hex", "hello_hash"),
    [
        (HELLO_R, ZID_R, ("e8d526c1", "0829"), HELLO_HASH_R),
        (HELLO_I, ZID_I, ("8d0f5a20", "6a3e"), HELLO_HASH_I),
    ],
    ids=["responder", "initiator"],
)
def test_parse_the_linphone_hellos(
    packet: bytes, zid: bytes, h3_hex: tuple[str, str], hello_hash: bytes
) -> None:
    hello = p.parse_hello_untrusted(message_of(packet))
    assert hello.version == b"1.10"
    assert hello.client_id == b"LINPHONE-ZRTPCPP"
    assert hello.zid == zid
    assert hello.h3.hex().startswith(h3_hex[0]) and hello.h3.hex().endswith(h3_hex[1])
    assert hello.flags == 0 and not hello.passive and not hello.mitm
    assert hello.hashes == ("S256",)
    assert hello.ciphers == ("AES1",)
    assert hello.auth_tags == ("HS32", "HS80")
    assert hello.key_agreements == ("DH3k", "DH2k", "Mult")
    assert hello.sas_types == ("B32 ",)
    assert hello.raw == packet[12:-4]
    assert sha256(hello.raw) == hello_hash  # the a=zrtp-hash value (§8.1)


def test_the_responder_hello_mac_is_keyed_with_its_h2() -> None:
    hello = p.parse_hello_untrusted(message_of(HELLO_R))
    assert message_mac_valid(hello.raw, H2_R)
    assert not message_mac_valid(hello.raw, H1_R)
    assert sha256(H2_R) == hello.h3
    assert sha256(H1_R) == H2_R and sha256(H0_R) == H1_R


def test_parse_the_commit_and_check_it_with_the_hash_chain() -> None:
    commit = p.parse_commit_untrusted(message_of(COMMIT_I))
    assert commit.h2 == H2_I and commit.zid == ZID_I
    algorithms = (commit.hash, commit.cipher, commit.auth_tag, commit.key_agreement)
    assert algorithms == ("S256", "AES1", "HS32", "DH3k")
    assert commit.sas_type == "B32 "
    assert commit.hvi == HVI and commit.dh_mode
    # §4.4.1.1: hvi = hash(initiator's DHPart2 || responder's Hello).
    assert commit.hvi == sha256(message_of(DH_PART2_I) + message_of(HELLO_R))
    # The Commit's MAC is keyed with H1i, revealed in DHPart2; H2i opens the initiator's Hello.
    assert message_mac_valid(commit.raw, H1_I)
    assert not message_mac_valid(commit.raw, H2_I)
    hello_i = p.parse_hello_untrusted(message_of(HELLO_I))
    assert sha256(commit.h2) == hello_i.h3
    assert message_mac_valid(hello_i.raw, commit.h2)


@pytest.mark.parametrize(
    ("packet", "kind", "h1", "h0"),
    [(DH_PART1_R, p.DH_PART1, H1_R, H0_R), (DH_PART2_I, p.DH_PART2, H1_I, H0_I)],
    ids=["DHPart1", "DHPart2"],
)
def test_parse_the_dh_parts(packet: bytes, kind: bytes, h1: bytes, h0: bytes) -> None:
    dh_part = p.parse_dh_part_untrusted(message_of(packet), kind)
    assert dh_part.h1 == h1
    assert len(dh_part.public_value) == 384  # DH3k
    assert dh_part.public_value == packet[12 + 12 + 64 : -4 - 8]
    ids = (dh_part.rs1_id, dh_part.rs2_id, dh_part.aux_secret_id, dh_part.pbx_secret_id)
    assert b"".join(ids) == packet[12 + 12 + 32 : 12 + 12 + 64]
    assert message_mac_valid(dh_part.raw, h0)
    assert not message_mac_valid(dh_part.raw, h1)


def test_a_dh_part_of_the_other_type_is_refused() -> None:
    refused(lambda raw: p.parse_dh_part_untrusted(raw, p.DH_PART2), message_of(DH_PART1_R), "type")


@pytest.mark.parametrize(
    ("packet", "kind", "zrtp_key", "mac_key", "h0"),
    [
        (CONFIRM1_R, p.CONFIRM1, ZRTP_KEY_R, MAC_KEY_R, H0_R),
        (CONFIRM2_I, p.CONFIRM2, ZRTP_KEY_I, MAC_KEY_I, H0_I),
    ],
    ids=["Confirm1", "Confirm2"],
)
def test_open_the_confirms_with_the_published_keys(
    packet: bytes, kind: bytes, zrtp_key: bytes, mac_key: bytes, h0: bytes
) -> None:
    confirm = p.parse_confirm_untrusted(message_of(packet), kind)
    assert len(confirm.iv) == 16 and len(confirm.encrypted) == 40
    assert mac64(mac_key, confirm.encrypted) == confirm.confirm_mac
    other_mac_key = MAC_KEY_I if mac_key == MAC_KEY_R else MAC_KEY_R
    assert mac64(other_mac_key, confirm.encrypted) != confirm.confirm_mac
    plaintext = cfb_decrypt(zrtp_key, confirm.iv, confirm.encrypted)
    assert plaintext == h0 + bytes.fromhex("00000000ffffffff")
    content = p.parse_confirm_plaintext_untrusted(plaintext)
    assert (content.h0, content.flags, content.cache_expiration) == (h0, 0, 0xFFFFFFFF)
    # And back: our encoder and cipher produce the same message from the same values.
    again = p.confirm_plaintext(h0, flags=0, cache_expiration=0xFFFFFFFF)
    encrypted = cfb_encrypt(zrtp_key, confirm.iv, again)
    rebuilt = p.encode_confirm(
        kind, confirm_mac=mac64(mac_key, encrypted), iv=confirm.iv, encrypted=encrypted
    )
    assert rebuilt == confirm.raw


def test_the_h0s_of_the_confirms_check_the_dh_parts() -> None:
    # What each side does with the peer's H0 (§4.5.4): it hashes to H1 and opens the DHPart.
    assert sha256(H0_R) == H1_R and sha256(H0_I) == H1_I
    assert message_mac_valid(message_of(DH_PART1_R), H0_R)
    assert message_mac_valid(message_of(DH_PART2_I), H0_I)


def test_total_hash_of_the_exchange() -> None:
    messages = [message_of(x) for x in (HELLO_R, COMMIT_I, DH_PART1_R, DH_PART2_I)]
    assert sha256(*messages) == TOTAL_HASH


def test_our_encoders_rebuild_the_linphone_messages() -> None:
    hello = p.parse_hello_untrusted(message_of(HELLO_R))
    rebuilt = p.encode_hello(
        client_id=hello.client_id,
        h3=hello.h3,
        zid=hello.zid,
        flags=hello.flags,
        hashes=hello.hashes,
        ciphers=hello.ciphers,
        auth_tags=hello.auth_tags,
        key_agreements=hello.key_agreements,
        sas_types=hello.sas_types,
    )
    assert rebuilt[-8:] == bytes(8)  # the MAC placeholder
    assert with_mac(rebuilt, H2_R) == hello.raw
    commit = p.encode_commit(
        h2=H2_I, zid=ZID_I, algorithms=("S256", "AES1", "HS32", "DH3k", "B32 "), hvi=HVI
    )
    assert with_mac(commit, H1_I) == message_of(COMMIT_I)
    dh_part = p.parse_dh_part_untrusted(message_of(DH_PART1_R), p.DH_PART1)
    ids = (dh_part.rs1_id, dh_part.rs2_id, dh_part.aux_secret_id, dh_part.pbx_secret_id)
    rebuilt = p.encode_dh_part(p.DH_PART1, h1=H1_R, secret_ids=ids, pv=dh_part.public_value)
    assert with_mac(rebuilt, H0_R) == dh_part.raw
    assert p.message(p.HELLO_ACK) == message_of(HELLO_ACK_R)
    assert p.message(p.CONF2_ACK) == message_of(CONF2_ACK_R)


# -- our own messages round trip ------------------------------------------------------------------


@pytest.mark.parametrize(
    "lists",
    [
        (("S256",), ("AES3", "AES1"), ("HS80", "HS32"), ("X255", "DH3k"), ("B32 ", "B256")),
        (("S256",), ("AES1",), ("HS32",), ("EC25",), ("B32 ",)),
        ((), (), (), (), ()),  # counts of 0: "the mandatory ones only" (§5.2)
        ((), (), (), ("DH3k",), ()),
        (tuple(f"X{i:03d}" for i in range(7)),) * 5,
    ],
    ids=["ours", "one-each", "none", "one", "seven-each"],
)
def test_hello_round_trip(lists: tuple[tuple[str, ...], ...]) -> None:
    hashes, ciphers, auth_tags, key_agreements, sas_types = lists
    h3, zid, key = bytes(range(32)), bytes(range(100, 112)), b"h2" * 16
    raw = with_mac(
        p.encode_hello(
            client_id=b"voipgw",
            h3=h3,
            zid=zid,
            flags=p.FLAG_PASSIVE,
            hashes=hashes,
            ciphers=ciphers,
            auth_tags=auth_tags,
            key_agreements=key_agreements,
            sas_types=sas_types,
        ),
        key,
    )
    count = sum(len(names) for names in lists)
    assert len(raw) == 4 * (22 + count)  # §5.2: 22 words and one per algorithm
    packet = p.frame(7, 0xDEADBEEF, raw)
    hello = p.parse_hello_untrusted(p.parse_packet_untrusted(packet).message)
    assert hello == p.Hello(b"1.10", b"voipgw".ljust(16), h3, zid, p.FLAG_PASSIVE, *lists, raw=raw)
    assert hello.passive and not hello.mitm
    assert message_mac_valid(hello.raw, key)


def test_hello_flags_sit_in_the_top_nibble() -> None:
    raw = p.encode_hello(
        client_id=b"x",
        h3=bytes(32),
        zid=bytes(12),
        flags=p.FLAG_MITM | p.FLAG_SIGNATURE,
        hashes=("S256",),
        ciphers=(),
        auth_tags=(),
        key_agreements=(),
        sas_types=(),
    )
    assert raw[12 + 64 : 12 + 68] == bytes.fromhex("60010000")
    hello = p.parse_hello_untrusted(raw)
    assert hello.mitm and not hello.passive and hello.flags == 0x6


def test_a_hello_with_more_than_seven_of_a_kind_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="7"):
        p.encode_hello(
            client_id=b"x",
            h3=bytes(32),
            zid=bytes(12),
            flags=0,
            hashes=("S256",),
            ciphers=(),
            auth_tags=(),
            key_agreements=tuple(f"K{i}" for i in range(8)),
            sas_types=(),
        )


def test_commit_dh_part_error_and_ping_ack_round_trip() -> None:
    algorithms = ("S256", "AES3", "HS80", "X255", "B256")
    raw = with_mac(
        p.encode_commit(h2=b"\x02" * 32, zid=b"\x0c" * 12, algorithms=algorithms, hvi=b"\x05" * 32),
        b"h1",
    )
    assert len(raw) == 4 * 29
    commit = p.parse_commit_untrusted(raw)
    assert (commit.h2, commit.zid, commit.hvi) == (b"\x02" * 32, b"\x0c" * 12, b"\x05" * 32)
    chosen = (commit.hash, commit.cipher, commit.auth_tag, commit.key_agreement, commit.sas_type)
    assert chosen == algorithms and commit.dh_mode

    ids = (b"\x01" * 8, b"\x02" * 8, b"\x03" * 8, b"\x04" * 8)
    raw = p.encode_dh_part(p.DH_PART2, h1=b"\x09" * 32, secret_ids=ids, pv=b"\x07" * 32)
    assert len(raw) == 4 * 29  # X255: 29 words
    dh_part = p.parse_dh_part_untrusted(raw, p.DH_PART2)
    assert dh_part.h1 == b"\x09" * 32 and dh_part.public_value == b"\x07" * 32
    got = (dh_part.rs1_id, dh_part.rs2_id, dh_part.aux_secret_id, dh_part.pbx_secret_id)
    assert got == ids

    error = p.encode_error(0x62)
    assert error == bytes.fromhex("505a0004") + b"Error   " + bytes.fromhex("00000062")
    assert p.parse_error_untrusted(error) == 0x62

    ack = p.encode_ping_ack(endpoint_hash=b"E" * 8, received_hash=b"R" * 8, ssrc=0x01020304)
    assert ack == bytes.fromhex("505a0009") + b"PingACK 1.10" + b"E" * 8 + b"R" * 8 + b"\1\2\3\4"
    ping = p.message(p.PING, b"1.10" + b"P" * 8)
    assert len(ping) == 4 * 6 and p.parse_ping_untrusted(ping) == b"P" * 8


@pytest.mark.parametrize(("key_agreement", "tail"), [("Mult", 16), ("Prsh", 24)])
def test_commits_of_the_non_dh_modes_are_recognised(key_agreement: str, tail: int) -> None:
    body = b"\x02" * 32 + b"\x0c" * 12 + b"S256AES1HS32" + key_agreement.encode() + b"B32 "
    raw = p.message(p.COMMIT, body + b"\x0e" * tail + bytes(8))
    commit = p.parse_commit_untrusted(raw)
    assert commit.key_agreement == key_agreement and not commit.dh_mode
    assert commit.hvi == b"\x0e" * tail  # the nonce (and key ID)


def test_confirm_plaintext_with_flags_and_a_signature_length() -> None:
    plaintext = p.confirm_plaintext(
        b"\x00" * 32, flags=p.CONFIRM_V | p.CONFIRM_D, cache_expiration=7
    )
    assert plaintext[32:] == bytes.fromhex("0000000500000007")
    content = p.parse_confirm_plaintext_untrusted(plaintext)
    assert (content.flags, content.cache_expiration) == (0x05, 7)
    # A 2-word signature announced and present: accepted (its block is not read).
    signed = b"\x00" * 32 + bytes.fromhex("0000020100000000") + b"PGP " + b"\x00" * 4
    assert p.parse_confirm_plaintext_untrusted(signed).flags == 0x01
    assert "h0" not in repr(content)  # H0 is the secret of the hash chain


def test_error_codes_are_described_by_number_and_meaning() -> None:
    assert p.describe_error(0x62) == "0x62 (DH error: hvi does not match the hashed data)"
    assert p.describe_error(0x90) == "0x90 (equal ZIDs in Hello)"
    assert p.describe_error(0x77) == "0x77 (unknown error code)"


# -- malformed input ------------------------------------------------------------------------------


def reframed(packet: bytes, index: int, value: int) -> bytes:
    """``packet`` with octet ``index`` set to ``value`` and a correct CRC again."""
    body = bytearray(packet[:-4])
    body[index] = value
    return bytes(body) + p.crc32c(bytes(body)).to_bytes(4, "little")


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (b"", "0 octets"),
        (HELLO_ACK_R[:-1], "27 octets"),
        (HELLO_R[:-4], "bad CRC"),  # truncated: its last four octets are no CRC
        (HELLO_R + b"\0\0\0\0", "bad CRC"),
        (p.frame(1, 2, p.message(p.HELLO, bytes(3064))), "3092 octets"),
        (reframed(HELLO_R, 0, 0x11), "fragment"),
        (reframed(HELLO_R, 0, 0x12), "not a ZRTP packet"),
        (reframed(HELLO_R, 0, 0x80), "not a ZRTP packet"),
        (reframed(HELLO_R, 7, 0x51), "not a ZRTP packet"),  # the magic cookie
        (reframed(HELLO_R, 12, 0x51), "preamble"),
        (reframed(HELLO_R, 15, 0x1F), "31 words"),  # the length word, one too many
        (reframed(HELLO_R, 15, 0x1D), "29 words"),
        (reframed(HELLO_R, 14, 0x01), "length"),
    ],
    ids=[
        "empty",
        "too-short",
        "truncated",
        "extended",
        "too-long",
        "fragment",
        "first-octet",
        "rtp",
        "cookie",
        "preamble",
        "length-over",
        "length-under",
        "length-high-octet",
    ],
)
def test_malformed_packets_are_refused(packet: bytes, reason: str) -> None:
    refused(p.parse_packet_untrusted, packet, reason)


def test_the_longest_packet_is_accepted_and_one_word_more_is_not() -> None:
    longest = p.frame(1, 2, p.message(p.HELLO, bytes(3072 - 28)))
    assert len(longest) == 3072
    assert len(p.parse_packet_untrusted(longest).message) == 3072 - 16
    refused(p.parse_packet_untrusted, p.frame(1, 2, p.message(p.HELLO, bytes(3072 - 24))), "3076")


def with_word(raw: bytes, offset: int, word: int) -> bytes:
    return raw[:offset] + struct.pack("!I", word) + raw[offset + 4 :]


HELLO_MESSAGE = HELLO_R[12:-4]
COMMIT_MESSAGE = COMMIT_I[12:-4]


@pytest.mark.parametrize(
    ("parse", "raw", "reason"),
    [
        (p.parse_hello_untrusted, with_word(HELLO_MESSAGE, 76, 0x00011281), "count over 7"),
        (p.parse_hello_untrusted, with_word(HELLO_MESSAGE, 76, 0x00081231), "count over 7"),
        (p.parse_hello_untrusted, with_word(HELLO_MESSAGE, 76, 0x00011221), "its counts need"),
        (p.parse_hello_untrusted, with_word(HELLO_MESSAGE, 76, 0x00011241), "its counts need"),
        (p.parse_hello_untrusted, HELLO_MESSAGE[:-4], "its counts need"),
        (p.parse_hello_untrusted, p.message(p.HELLO, bytes(72)), "at least"),
        (p.parse_hello_untrusted, COMMIT_MESSAGE, "unexpected message type"),
        (p.parse_commit_untrusted, COMMIT_MESSAGE[:-4], "tail"),
        (p.parse_commit_untrusted, COMMIT_MESSAGE + bytes(4), "tail"),
        (p.parse_commit_untrusted, COMMIT_MESSAGE[:68] + b"Mult" + COMMIT_MESSAGE[72:], "tail"),
        (p.parse_commit_untrusted, COMMIT_MESSAGE[:68] + b"Prsh" + COMMIT_MESSAGE[72:], "tail"),
        (p.parse_commit_untrusted, p.message(p.COMMIT, bytes(84)), "at least"),
        (p.parse_commit_untrusted, HELLO_MESSAGE, "unexpected message type"),
        (
            lambda raw: p.parse_dh_part_untrusted(raw, p.DH_PART1),
            p.message(p.DH_PART1, bytes(72)),
            "at least",
        ),
        (
            lambda raw: p.parse_confirm_untrusted(raw, p.CONFIRM1),
            p.message(p.CONFIRM1, bytes(60)),
            "at least",
        ),
        (
            lambda raw: p.parse_confirm_untrusted(raw, p.CONFIRM2),
            CONFIRM1_R[12:-4],
            "unexpected message type",
        ),
        (p.parse_confirm_plaintext_untrusted, b"\x01" * 36, "too short"),
        (
            p.parse_confirm_plaintext_untrusted,
            b"\x01" * 32 + bytes.fromhex("0000010000000000"),
            "signature length",
        ),
        (p.parse_error_untrusted, p.message(p.ERROR, bytes(8)), "wrong length"),
        (p.parse_error_untrusted, p.message(p.ERROR), "at least"),
        (p.parse_ping_untrusted, p.message(p.PING, bytes(16)), "wrong length"),
        (p.parse_ping_untrusted, p.message(p.PING, bytes(8)), "at least"),
    ],
)
def test_malformed_messages_are_refused(
    parse: Callable[[bytes], object], raw: bytes, reason: str
) -> None:
    refused(parse, raw, reason)


def test_a_malformed_message_reason_quotes_no_algorithm_name_unescaped() -> None:
    # The Commit's key agreement block is the peer's text: it may be named, but only escaped.
    raw = (COMMIT_MESSAGE[:68] + b"Mu\nt" + COMMIT_MESSAGE[72:])[:-4]  # and a short tail
    with pytest.raises(p.ZrtpParseError) as info:
        p.parse_commit_untrusted(raw)
    assert "\n" not in str(info.value)


def test_is_zrtp_packet_needs_the_first_octet_range_and_the_cookie() -> None:
    assert p.is_zrtp_packet(HELLO_ACK_R)
    assert p.is_zrtp_packet(bytes([0x13]) + HELLO_ACK_R[1:])  # RFC 7983: 16..19
    assert not p.is_zrtp_packet(bytes([0x14]) + HELLO_ACK_R[1:])
    assert not p.is_zrtp_packet(bytes([0x0F]) + HELLO_ACK_R[1:])
    assert not p.is_zrtp_packet(HELLO_ACK_R[:4] + b"ZRTQ" + HELLO_ACK_R[8:])
    assert not p.is_zrtp_packet(HELLO_ACK_R[:11])
    rtp = struct.pack("!BBHII", 0x80, 0, 1, 160, 0x12345678) + bytes(160)
    assert not p.is_zrtp_packet(rtp)
