"""Known-answer tests of gateway.core.media.srtp for every suite (specs/sdes-srtp.md §6).

Two kinds of evidence:

1. Whole packets from libsrtp's test driver (spec §6.5): the exact SRTP and SRTCP bytes for
   AES_CM_128_HMAC_SHA1_80, AES_256_CM_HMAC_SHA1_80 and AEAD_AES_128_GCM.
2. For every suite, an independent reference written here from RFC 3711 §4 and RFC 7714 §8-§9
   with the ``cryptography`` package. The reference itself is first checked against the RFC
   vectors of each of its parts: AES-CM keystream (RFC 3711 B.2, RFC 6188 §7.1/§7.3), key
   derivation (RFC 3711 B.3, RFC 6188 §7.2/§7.4), AES-GCM SRTP and SRTCP (RFC 7714 §16.1,
   §16.2.1, §17.1, §17.2) and the libsrtp packets above. Then libsrtp's output must equal the
   reference's, byte for byte, for every suite, with CSRCs and a header extension, across the
   sequence wrap (ROC 1), and for consecutive SRTCP indexes.

AES-192: libsrtp 2.7.0 (bundled with pylibsrtp 1.0.0) derives its session keys with the AES-256
PRF (cisco/libsrtp issue 763), so SrtpSession protects those suites with srtp_python. Every suite
test above runs them too (through Python); the last tests add exact AES-192 packets for the RFC
6188 §7.4 key, pin the libsrtp diagnosis down and check which implementation is chosen.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.core.interfaces import SrtpKeys
from gateway.core.media import srtp
from gateway.core.media.srtp import (
    PYTHON_SUITES,
    SUITES,
    SUPPORTED_SUITES,
    UNSUPPORTED_SUITES,
    SrtpSession,
    SrtpSuite,
)

# -- an independent reference implementation --------------------------------------------------


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def aes_cm(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES in counter mode from a 16-octet IV (RFC 3711 §4.1.1)."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def derive(master_key: bytes, master_salt: bytes, label: int, length: int) -> bytes:
    """RFC 3711 §4.3.1 with key derivation rate 0 (r = 0) and the AES-CM PRF of §4.3.3.

    key_id = label || r (7 octets), x = key_id XOR master_salt, both right-aligned in 14 octets.
    A GCM master salt has 12 octets; libsrtp puts it left-aligned in the 14 (spec §4.5).
    """
    x = xor(master_salt.ljust(14, b"\0"), bytes(7) + bytes([label]) + bytes(6))
    return aes_cm(master_key, x + b"\0\0", bytes(length))


def header_length(packet: bytes) -> int:
    """RFC 3550 §5.1, §5.3.1: fixed header, CSRCs, header extension."""
    length = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        (words,) = struct.unpack_from("!H", packet, length + 2)
        length += 4 + 4 * words
    return length


def cm_iv(session_salt: bytes, ssrc: bytes, index: int) -> bytes:
    """RFC 3711 §4.1.1: IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)."""
    return xor(session_salt + b"\0\0", bytes(4) + ssrc + (index << 16).to_bytes(8, "big"))


def gcm_rtp(key: bytes, salt: bytes, packet: bytes, roc: int) -> bytes:
    """RFC 7714 §8.1: IV = (00 00 || SSRC || ROC || SEQ) XOR salt; AAD = the RTP header."""
    header = packet[: header_length(packet)]
    iv = xor(b"\0\0" + packet[8:12] + roc.to_bytes(4, "big") + packet[2:4], salt)
    return header + AESGCM(key).encrypt(iv, packet[len(header) :], header)


def gcm_rtcp(key: bytes, salt: bytes, packet: bytes, index: int) -> bytes:
    """RFC 7714 §9.1 (E = 1): IV = (00 00 || SSRC || 00 00 || 0 || index) XOR salt;
    AAD = first 8 octets || E || index; the E/index word follows the tag."""
    trailer = (0x80000000 | index).to_bytes(4, "big")
    iv = xor(b"\0\0" + packet[4:8] + b"\0\0" + index.to_bytes(4, "big"), salt)
    return packet[:8] + AESGCM(key).encrypt(iv, packet[8:], packet[:8] + trailer) + trailer


def split(suite: SrtpSuite, key_salt: bytes) -> tuple[bytes, bytes]:
    return key_salt[: suite.master_key_length], key_salt[suite.master_key_length :]


def reference_srtp(suite: SrtpSuite, key_salt: bytes, packet: bytes, roc: int = 0) -> bytes:
    """SRTP per RFC 3711 §3.3 (AES-CM + HMAC-SHA1) or RFC 7714 §8 (AES-GCM)."""
    master_key, master_salt = split(suite, key_salt)
    encryption_key = derive(master_key, master_salt, 0, len(master_key))
    if suite.name.startswith("AEAD_"):
        return gcm_rtp(encryption_key, derive(master_key, master_salt, 2, 12), packet, roc)
    index = (roc << 16) | int.from_bytes(packet[2:4], "big")
    header = packet[: header_length(packet)]
    iv = cm_iv(derive(master_key, master_salt, 2, 14), packet[8:12], index)
    body = header + aes_cm(encryption_key, iv, packet[len(header) :])
    # RFC 3711 §4.2: the tag covers the packet and the ROC, truncated to the suite's length.
    auth_key = derive(master_key, master_salt, 1, 20)
    tag = hmac.new(auth_key, body + roc.to_bytes(4, "big"), hashlib.sha1).digest()
    return body + tag[: suite.rtp_tag_length]


def reference_srtcp(suite: SrtpSuite, key_salt: bytes, packet: bytes, index: int) -> bytes:
    """SRTCP per RFC 3711 §3.4 (labels 3-5, E = 1, always the 80-bit tag) or RFC 7714 §9."""
    master_key, master_salt = split(suite, key_salt)
    encryption_key = derive(master_key, master_salt, 3, len(master_key))
    if suite.name.startswith("AEAD_"):
        return gcm_rtcp(encryption_key, derive(master_key, master_salt, 5, 12), packet, index)
    iv = cm_iv(derive(master_key, master_salt, 5, 14), packet[4:8], index)
    body = packet[:8] + aes_cm(encryption_key, iv, packet[8:])
    body += (0x80000000 | index).to_bytes(4, "big")
    auth_key = derive(master_key, master_salt, 4, 20)
    return body + hmac.new(auth_key, body, hashlib.sha1).digest()[:10]


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# -- the reference against RFC vectors -------------------------------------------------------


def test_reference_aes_cm_keystream_rfc3711_b2() -> None:
    key = h("2B7E151628AED2A6ABF7158809CF4F3C")
    stream = aes_cm(key, h("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"), bytes(16 * 0xFF02))

    def block(counter: int) -> str:
        return stream[16 * counter : 16 * counter + 16].hex().upper()

    assert block(0x0000) == "E03EAD0935C95E80E166B16DD92B4EB4"
    assert block(0x0001) == "D23513162B02D0F72A43A2FE4A5F97AB"
    assert block(0x0002) == "41E95B3BB0A2E8DD477901E4FCA894C0"
    assert block(0xFEFF) == "EC8CDF7398607CB0F2D21675EA9EA1E4"
    assert block(0xFF00) == "362B7C3C6773516318A077D7FC5073AE"
    assert block(0xFF01) == "6A2CC3787889374FBEB4C81B17BA6C44"


def test_reference_key_derivation_rfc3711_b3() -> None:
    master_key, master_salt = (
        h("E1F97A0D3E018BE0D64FA32C06DE4139"),
        h("0EC675AD498AFEEBB6960B3AABE6"),
    )
    assert derive(master_key, master_salt, 0, 16) == h("C61E7A93744F39EE10734AFE3FF7A087")
    assert derive(master_key, master_salt, 2, 14) == h("30CBBC08863D8C85D49DB34A9AE1")
    assert derive(master_key, master_salt, 1, 94) == h(
        """CEBE321F6FF7716B6FD4AB49AF256A156D38BAA48F0A0ACF3C34E2359E6CDBCE
           E049646C43D9327AD175578EF72270986371C10C9A369AC2F94A8C5FBCDDDC25
           6D6E919A48B610EF17C2041E474035766B68642C59BBFC2F34DB60DBDFB2"""
    )


@pytest.mark.parametrize(
    ("master_key", "master_salt", "k_e", "k_a", "k_s"),
    [
        pytest.param(  # RFC 6188 §7.2
            "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6",
            "3b04803de51ee7c96423ab5b78d2",
            "5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4",
            "fd9c32d39ed5fbb5a9dc96b30818454d1313dc05",
            "fa31791685ca444a9e07c6c64e93",
            id="AES-256",
        ),
        pytest.param(  # RFC 6188 §7.4
            "73edc66c4fa15776fb57f9505c17136550ffda71f3e8e5f1",
            "c8522f3acd4ce86d5add78edbb11",
            "31874736a8f1143870c26e4857d8a5b2c4a354407faadabb",
            "355b10973cd95b9eacf4061c7e1a7151e7cfbfcb",
            "2372b82d639b6d8503a47adc0a6c",
            id="AES-192",
        ),
    ],
)
def test_reference_key_derivation_rfc6188(
    master_key: str, master_salt: str, k_e: str, k_a: str, k_s: str
) -> None:
    key, salt = h(master_key), h(master_salt)
    assert derive(key, salt, 0, len(key)).hex() == k_e
    assert derive(key, salt, 1, 20).hex() == k_a
    assert derive(key, salt, 2, 14).hex() == k_s


@pytest.mark.parametrize(
    ("key", "keystream"),
    [
        pytest.param(  # RFC 6188 §7.1
            "57f82fe3613fd170a85ec93c40b1f0922ec4cb0dc025b58272147cc438944a98",
            "92bdd28a93c3f52511c677d08b5515a4 9da71b2378a854f67050756ded165bac",
            id="AES-256",
        ),
        pytest.param(  # RFC 6188 §7.3
            "eab234764e517b2d3d160d587d8c86219740f65f99b6bcf7",
            "35096cba4610028dc1b57503804ce37c 5de986291dcce161d5165ec4568f5c9a",
            id="AES-192",
        ),
    ],
)
def test_reference_keystream_rfc6188(key: str, keystream: str) -> None:
    iv = h("f0f1f2f3f4f5f6f7f8f9fafbfcfd0000")
    assert aes_cm(h(key), iv, bytes(32)) == h(keystream)


GCM_SALT = h("517569642070726f2071756f")  # "Quid pro quo", RFC 7714 §16
GCM_128_KEY = h("000102030405060708090a0b0c0d0e0f")
GCM_256_KEY = bytes(range(32))
GCM_RTP = h("8040f17b8041f8d35501a0b2") + b"Gallia est omnis divisa in partes tres"
GCM_RTCP = h("81c8000d4d6172734e5450314e545032525450200000042a0000e9304c756e61") + h("deadbeef" * 5)


@pytest.mark.parametrize(
    ("key", "ciphertext", "tag"),
    [
        pytest.param(
            GCM_128_KEY,
            "f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833",
            "899d7f27beb16a9152cf765ee4390cce",
            id="AES-128-GCM-16.1",
        ),
        pytest.param(
            GCM_256_KEY,
            "32b1de78a822fe12ef9f78fa332e33aab18012389a58e2f3b50b2a0276ffae0f1ba63799b87b",
            "7aa3db36dfffd6b0f9bb7878d7a76c13",
            id="AES-256-GCM-16.2.1",
        ),
    ],
)
def test_reference_gcm_srtp_rfc7714_16(key: bytes, ciphertext: str, tag: str) -> None:
    assert gcm_rtp(key, GCM_SALT, GCM_RTP, roc=0) == GCM_RTP[:12] + h(ciphertext) + h(tag)


@pytest.mark.parametrize(
    ("key", "ciphertext", "tag"),
    [
        pytest.param(
            GCM_128_KEY,
            "63e94885dcdab67ca727d7662f6b7e997ff5c0f76c06f32dc676a5f1730d6fda4ce09b4686303ded0bb9275b",
            "c84aa45896cf4d2fc5abf87245d9eade",
            id="AES-128-GCM-17.1",
        ),
        pytest.param(
            GCM_256_KEY,
            "d50ae4d1f5ce5d304ba297e47d470c282c3ece5dbffe0a50a2eaa5c1110555be8415f658c61de0476f1b6fad",
            "1d1eb30c4446839f57ff6f6cb26ac3be",
            id="AES-256-GCM-17.2",
        ),
    ],
)
def test_reference_gcm_srtcp_rfc7714_17(key: bytes, ciphertext: str, tag: str) -> None:
    expected = GCM_RTCP[:8] + h(ciphertext) + h(tag) + h("800005d4")
    assert gcm_rtcp(key, GCM_SALT, GCM_RTCP, index=0x5D4) == expected


# -- whole packets: libsrtp's test driver (spec §6.5) -----------------------------------------

PLAIN_RTP = h("800f1234decafbadcafebabe") + b"\xab" * 16
PLAIN_RTCP = h("81c8000bcafebabe") + b"\xab" * 16

DRIVER_VECTORS = [
    pytest.param(
        "AES_CM_128_HMAC_SHA1_80",
        "e1f97a0d3e018be0d64fa32c06de4139 0ec675ad498afeebb6960b3aabe6",
        "800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb",
        "81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798",
        id="AES_CM_128_HMAC_SHA1_80",
    ),
    pytest.param(
        "AES_256_CM_HMAC_SHA1_80",
        "f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6"
        "3b04803de51ee7c96423ab5b78d2",
        "800f1234decafbadcafebabe f1d9de17ff251ff1aa007774b0b4b40d a08d9d9a5b3a55d8873b",
        # SRTCP: computed by the spec's author (no published counterpart), matched here too.
        "81c8000bcafebabe b4d0e7a917d24b9faab9d3b6127b3ba6 80000001 e04ac0ec2846f71bd31c",
        id="AES_256_CM_HMAC_SHA1_80",
    ),
    pytest.param(
        "AEAD_AES_128_GCM",
        "000102030405060708090a0b0c0d0e0f a0a1a2a3a4a5a6a7a8a9aaab",
        "800f1234decafbadcafebabe c5002ede04cfdd2eb91159e0880aa06ed2976826f796b201df3131a127e8a392",
        "81c8000bcafebabe c98b8b5df0392a55852b6c21ac8e7025 c52c6fbea2b3b446ea31123ba88ce61e"
        "80000001",
        id="AEAD_AES_128_GCM",
    ),
]


@pytest.mark.parametrize(("suite", "key_salt", "srtp", "srtcp"), DRIVER_VECTORS)
def test_reference_matches_libsrtp_driver_packets(
    suite: str, key_salt: str, srtp: str, srtcp: str
) -> None:
    assert reference_srtp(SUITES[suite], h(key_salt), PLAIN_RTP) == h(srtp)
    assert reference_srtcp(SUITES[suite], h(key_salt), PLAIN_RTCP, index=1) == h(srtcp)


@pytest.mark.parametrize(("suite", "key_salt", "srtp", "srtcp"), DRIVER_VECTORS)
def test_session_protects_the_driver_packets_exactly(
    suite: str, key_salt: str, srtp: str, srtcp: str
) -> None:
    key = h(key_salt)
    with SrtpSession(SrtpKeys(suite, local_key=key, remote_key=key)) as session:
        assert session.protect_rtp(PLAIN_RTP) == h(srtp)
        assert session.protect_rtcp(PLAIN_RTCP) == h(srtcp)
        assert session.unprotect_rtp(h(srtp)) == PLAIN_RTP
        assert session.unprotect_rtcp(h(srtcp)) == PLAIN_RTCP


# -- every suite: libsrtp against the reference -------------------------------------------------


def key_salt_for(suite: SrtpSuite, seed: int) -> bytes:
    return bytes((seed * 37 + i * 11) & 0xFF for i in range(suite.key_salt_length))


def rtp_packet(sequence: int, *, ssrc: int = 0x5501A0B2, payload: bytes = b"\xd5" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence, 160 * sequence, ssrc) + payload


def rtp_with_csrcs_and_extension(sequence: int) -> bytes:
    """Two CSRCs and a one-word RFC 8285 extension: all of it stays in clear, all authenticated."""
    header = struct.pack("!BBHII", 0x92, 0x80 | 8, sequence, 4242, 0x0BADCAFE)
    header += struct.pack("!II", 0x11111111, 0x22222222)
    header += struct.pack("!HHI", 0xBEDE, 1, 0x10FF0000)
    return header + bytes(range(97))


def sender_report(ssrc: int = 0x4D617273) -> bytes:
    """An RTCP SR without report blocks plus an SDES CNAME chunk (a compound packet)."""
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 1, 2, 3, 4, 5)
    sdes = struct.pack("!BBHIBB", 0x81, 202, 3, ssrc, 1, 6) + b"voipgw" + bytes(2)
    return sr + sdes


ALL_SUITES = sorted(SUPPORTED_SUITES)


@pytest.mark.parametrize("name", ALL_SUITES)
def test_every_suite_protects_rtp_like_the_reference(name: str) -> None:
    suite = SUITES[name]
    key = key_salt_for(suite, 1)
    packets = [rtp_packet(s) for s in (1, 2, 3, 1000)] + [rtp_with_csrcs_and_extension(1001)]
    with SrtpSession(SrtpKeys(name, local_key=key, remote_key=key)) as session:
        for packet in packets:
            protected = session.protect_rtp(packet)
            assert protected == reference_srtp(suite, key, packet)
            assert len(protected) == len(packet) + suite.rtp_tag_length
            assert session.unprotect_rtp(protected) == packet


@pytest.mark.parametrize("name", ALL_SUITES)
def test_every_suite_unprotects_what_the_reference_protects(name: str) -> None:
    suite = SUITES[name]
    key = key_salt_for(suite, 2)
    with SrtpSession(SrtpKeys(name, local_key=key_salt_for(suite, 3), remote_key=key)) as session:
        for sequence in (10, 11, 9):
            packet = rtp_packet(sequence)
            assert session.unprotect_rtp(reference_srtp(suite, key, packet)) == packet
        report = sender_report()
        assert session.unprotect_rtcp(reference_srtcp(suite, key, report, index=7)) == report


@pytest.mark.parametrize("name", ALL_SUITES)
def test_every_suite_protects_rtcp_like_the_reference(name: str) -> None:
    suite = SUITES[name]
    key = key_salt_for(suite, 4)
    with SrtpSession(SrtpKeys(name, local_key=key, remote_key=key)) as session:
        for index in (1, 2, 3):  # libsrtp's SRTCP index starts at 1 and counts per packet
            report = sender_report()
            assert session.protect_rtcp(report) == reference_srtcp(suite, key, report, index)


@pytest.mark.parametrize("name", ALL_SUITES)
def test_every_suite_carries_the_roll_over_counter_across_the_wrap(name: str) -> None:
    # RFC 3711 §3.3.1: after 65535 the sequence number wraps and the ROC becomes 1; the ROC is
    # in the tag (HMAC input) or the IV (GCM), so the reference with ROC 1 must match exactly.
    suite = SUITES[name]
    key = key_salt_for(suite, 5)
    expected = [(65534, 0), (65535, 0), (0, 1), (1, 1), (2, 1)]
    with SrtpSession(SrtpKeys(name, local_key=key, remote_key=key)) as session:
        for sequence, roc in expected:
            packet = rtp_packet(sequence)
            protected = session.protect_rtp(packet)
            assert protected == reference_srtp(suite, key, packet, roc=roc)
            assert protected != reference_srtp(suite, key, packet, roc=1 - roc)
            assert session.unprotect_rtp(protected) == packet


# -- AES-192: libsrtp 2.7.0 gets it wrong, srtp_python gets it right ---------------------------

RFC6188_AES192_KEY_SALT = h(
    "73edc66c4fa15776fb57f9505c17136550ffda71f3e8e5f1 c8522f3acd4ce86d5add78edbb11"
)

# Whole packets under RFC 6188 §7.4's master key and salt (libsrtp's driver packets above, first
# packet: ROC 0, SRTCP index 1). No published counterpart: computed with the reference above,
# whose AES-192 key derivation and keystream match RFC 6188 §7.3 and §7.4 exactly (tests above).
AES192_VECTORS = [
    pytest.param(
        "AES_192_CM_HMAC_SHA1_80",
        "800f1234decafbadcafebabe 1e84e1395a55cc6cd7b80db939a83a78 e3e7e10bf579c261e5c6",
        "81c8000bcafebabe 3a8b5fbd5eabc9949eec92043a9a4b58 80000001 2fd0d52db8f8be3d1e48",
        id="AES_192_CM_HMAC_SHA1_80",
    ),
    pytest.param(
        "AES_192_CM_HMAC_SHA1_32",
        "800f1234decafbadcafebabe 1e84e1395a55cc6cd7b80db939a83a78 e3e7e10b",
        # RFC 3711 §5.2: SRTCP keeps the 80-bit tag, so this is the _80 packet.
        "81c8000bcafebabe 3a8b5fbd5eabc9949eec92043a9a4b58 80000001 2fd0d52db8f8be3d1e48",
        id="AES_192_CM_HMAC_SHA1_32",
    ),
]


@pytest.mark.parametrize(("name", "srtp", "srtcp"), AES192_VECTORS)
def test_reference_gives_the_aes192_packets(name: str, srtp: str, srtcp: str) -> None:
    suite = SUITES[name]
    assert reference_srtp(suite, RFC6188_AES192_KEY_SALT, PLAIN_RTP) == h(srtp)
    assert reference_srtcp(suite, RFC6188_AES192_KEY_SALT, PLAIN_RTCP, index=1) == h(srtcp)


@pytest.mark.parametrize(("name", "srtp", "srtcp"), AES192_VECTORS)
def test_session_protects_the_aes192_packets_exactly(name: str, srtp: str, srtcp: str) -> None:
    key = RFC6188_AES192_KEY_SALT
    with SrtpSession(SrtpKeys(name, local_key=key, remote_key=key)) as session:
        assert session.protect_rtp(PLAIN_RTP) == h(srtp)
        assert session.protect_rtcp(PLAIN_RTCP) == h(srtcp)
        assert session.unprotect_rtp(h(srtp)) == PLAIN_RTP
        assert session.unprotect_rtcp(h(srtcp)) == PLAIN_RTCP


def libsrtp_270_aes192_srtp(key_salt: bytes, packet: bytes, tag_length: int) -> bytes:
    """What libsrtp <= 2.7.0 does for AES-192-CM (srtp_stream_init_keys): key || salt is
    zero-widened to 46 octets and derived with the AES-256 PRF (key = first 32 octets, salt =
    the last 14), then the 24-octet session key drives AES-192-CM as usual."""
    wide = key_salt + bytes(8)
    prf_key, prf_salt = wide[:32], wide[32:]
    index = int.from_bytes(packet[2:4], "big")
    iv = cm_iv(derive(prf_key, prf_salt, 2, 14), packet[8:12], index)
    body = packet[:12] + aes_cm(derive(prf_key, prf_salt, 0, 24), iv, packet[12:])
    tag = hmac.new(derive(prf_key, prf_salt, 1, 20), body + bytes(4), hashlib.sha1).digest()
    return body + tag[:tag_length]


def test_the_import_time_aes192_check_expects_rfc6188_keys() -> None:
    suite = SUITES["AES_192_CM_HMAC_SHA1_80"]
    assert srtp._AES192_CHECK_KEY == RFC6188_AES192_KEY_SALT
    assert srtp._AES192_CHECK_RTP == PLAIN_RTP
    assert reference_srtp(suite, RFC6188_AES192_KEY_SALT, PLAIN_RTP) == srtp._AES192_CHECK_SRTP


def libsrtp_protect(name: str, key: bytes, packet: bytes) -> bytes:
    """One packet through a bare libsrtp context of the suite (bypassing SrtpSession)."""
    context = srtp._create_context(SUITES[name], key, srtp._lib.ssrc_any_outbound, 128)
    try:
        buffer = srtp._ffi.new("unsigned char[]", len(packet) + 16)
        srtp._ffi.memmove(buffer, packet, len(packet))
        length = srtp._ffi.new("int *", len(packet))
        assert srtp._protect(context, buffer, length) == 0
        result: bytes = srtp._ffi.buffer(buffer, length[0])[:]
        return result
    finally:
        srtp._ffi.release(context)


def libsrtp_unprotect_status(name: str, key: bytes, packet: bytes) -> int:
    context = srtp._create_context(SUITES[name], key, srtp._lib.ssrc_any_inbound, 128)
    try:
        buffer = srtp._ffi.new("unsigned char[]", len(packet))
        srtp._ffi.memmove(buffer, packet, len(packet))
        status: int = srtp._unprotect(context, buffer, srtp._ffi.new("int *", len(packet)))
        return status
    finally:
        srtp._ffi.release(context)


@pytest.mark.parametrize("name", ["AES_192_CM_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_32"])
def test_aes192_goes_to_libsrtp_only_when_libsrtp_follows_rfc6188(name: str) -> None:
    suite = SUITES[name]
    key = RFC6188_AES192_KEY_SALT
    libsrtp_output = libsrtp_protect(name, key, PLAIN_RTP)
    rfc_output = reference_srtp(suite, key, PLAIN_RTP)
    with SrtpSession(SrtpKeys(name, local_key=key, remote_key=key)) as session:
        assert session.protect_rtp(PLAIN_RTP) == rfc_output
        if name not in PYTHON_SUITES:  # a fixed libsrtp: it does the work again
            assert libsrtp_output == rfc_output
            assert session.implementation == "libsrtp"
            return
        # The bundled libsrtp has the bug: its output is exactly the AES-256-PRF model, not
        # RFC 6188, and the session does not use it.
        assert libsrtp_output == libsrtp_270_aes192_srtp(key, PLAIN_RTP, suite.rtp_tag_length)
        assert libsrtp_output != rfc_output
        assert "issue 763" in PYTHON_SUITES[name]
        assert session.implementation == "python"
        assert name in SUPPORTED_SUITES and name not in UNSUPPORTED_SUITES


@pytest.mark.parametrize("name", ["AES_192_CM_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_32"])
def test_the_buggy_libsrtp_cannot_read_a_conforming_aes192_packet(name: str) -> None:
    # Why the Python path exists: what an RFC 6188 peer sends fails authentication in libsrtp
    # 2.7.0 (status 7), and what the session sends (the same bytes) would too.
    if name not in PYTHON_SUITES:
        pytest.skip("this libsrtp derives AES-192 keys correctly")
    key = RFC6188_AES192_KEY_SALT
    conforming = reference_srtp(SUITES[name], key, PLAIN_RTP)
    assert libsrtp_unprotect_status(name, key, conforming) == srtp._ERR_AUTH_FAIL
    with SrtpSession(SrtpKeys(name, local_key=key, remote_key=key)) as session:
        assert session.unprotect_rtp(conforming) == PLAIN_RTP
