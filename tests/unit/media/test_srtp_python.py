"""gateway.core.media.srtp_python: AES-CM + HMAC-SHA1 SRTP/SRTCP in Python (RFC 3711, RFC 6188).

SrtpSession uses it for the AES-192 suites (libsrtp 2.7.0 derives their keys wrongly); the
session-level behaviour of those suites is tested with every other suite in test_srtp.py and
test_srtp_vectors.py. Here:

- known answers of its parts: key derivation (RFC 3711 B.3, RFC 6188 §7.2, §7.4), keystream
  (RFC 3711 B.2, RFC 6188 §7.1, §7.3), and the per-packet keystream against plain AES-CTR;
- interop: what it protects is verified and decrypted by an independent reference written here
  (``cryptography``'s AES-CTR and the standard library's hmac) and by libsrtp (for AES-128 and
  AES-256, which the bundled libsrtp gets right), and it reads what they protect;
- the packet index (RFC 3711 Appendix A), the replay window against a plain set model, the
  SRTCP index and E bit, limits, malformed packets, errors, closing, no kept key bytes.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.interfaces import SrtpKeys
from gateway.core.media import srtp, srtp_python
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.srtp import SUITES, SrtpSession
from gateway.core.media.srtp_python import (
    MAX_PACKET_LENGTH,
    Drop,
    SrtpReceiver,
    SrtpSender,
    aes_cm_keystream,
    derive_session_key,
)

CM_SUITES = [name for name in SUITES if "_CM_" in name]  # every AES-CM + HMAC-SHA1 suite
AES192 = ["AES_192_CM_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_32"]
# Suites the bundled libsrtp gets right, to check the Python code against it.
LIBSRTP_CM = [name for name in CM_SUITES if name not in srtp.PYTHON_SUITES]


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


def key_for(name: str, seed: int) -> bytes:
    return bytes((seed * 71 + i * 13 + 5) & 0xFF for i in range(SUITES[name].key_salt_length))


def sender(name: str, key: bytes, **kwargs: int) -> SrtpSender:
    suite = SUITES[name]
    return SrtpSender(
        key,
        master_key_length=suite.master_key_length,
        rtp_tag_length=suite.rtp_tag_length,
        **kwargs,
    )


def receiver(name: str, key: bytes, **kwargs: int) -> SrtpReceiver:
    suite = SUITES[name]
    return SrtpReceiver(
        key,
        master_key_length=suite.master_key_length,
        rtp_tag_length=suite.rtp_tag_length,
        **kwargs,
    )


def rtp(sequence: int, *, ssrc: int = 0x600DF00D, payload: bytes = b"\xd5" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence & 0xFFFF, 160 * sequence, ssrc) + payload


def rtp_with_csrcs_and_extension(sequence: int, ssrc: int = 0x600DF00D) -> bytes:
    header = struct.pack("!BBHII", 0x93, 0x80 | 8, sequence, 4242, ssrc)
    header += struct.pack("!III", 1, 2, 3)  # three CSRCs
    header += struct.pack("!HHII", 0xBEDE, 2, 0x10FF0000, 0x22AABB00)  # RFC 8285, two words
    return header + bytes(range(61))


def sender_report(ssrc: int = 0x600DF00D) -> bytes:
    sr = struct.pack("!BBHIIIIII", 0x80, 200, 6, ssrc, 1, 2, 3, 4, 5)
    bye = struct.pack("!BBHI", 0x81, 203, 1, ssrc)
    return sr + bye


def ok(result: bytes | Drop) -> bytes:
    assert isinstance(result, bytes), result
    return result


# -- an independent reference: cryptography's AES-CTR, the standard library's HMAC -------------


def reference_key(key_salt: bytes, key_length: int, label: int, length: int) -> bytes:
    """RFC 3711 §4.3.1-§4.3.3, kdr 0: AES-CTR under the master key from (salt XOR label<<48)."""
    master_key, master_salt = key_salt[:key_length], key_salt[key_length:]
    x = bytearray(master_salt)
    x[7] ^= label  # key_id = label || 0^48, right-aligned against the 14-octet salt
    encryptor = Cipher(algorithms.AES(master_key), modes.CTR(bytes(x) + bytes(2))).encryptor()
    return encryptor.update(bytes(length))


def reference_crypt(key: bytes, salt: bytes, ssrc: bytes, index: int, data: bytes) -> bytes:
    iv = bytearray(salt + bytes(2))
    for position, octet in enumerate(ssrc):
        iv[4 + position] ^= octet
    for position, octet in enumerate(index.to_bytes(6, "big")):
        iv[8 + position] ^= octet
    return Cipher(algorithms.AES(key), modes.CTR(bytes(iv))).encryptor().update(data)


def reference_header_length(packet: bytes) -> int:
    length = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        length += 4 + 4 * int.from_bytes(packet[length + 2 : length + 4], "big")
    return length


def reference_unprotect_srtp(name: str, key_salt: bytes, packet: bytes, roc: int) -> bytes | None:
    """Check the tag (RFC 3711 §4.2) and decrypt, for a known ROC; None if the tag is wrong."""
    suite = SUITES[name]
    n = suite.master_key_length
    body, tag = packet[: -suite.rtp_tag_length], packet[-suite.rtp_tag_length :]
    auth_key = reference_key(key_salt, n, 1, 20)
    expected = hmac.new(auth_key, body + roc.to_bytes(4, "big"), hashlib.sha1).digest()
    if expected[: suite.rtp_tag_length] != tag:
        return None
    header = body[: reference_header_length(body)]
    index = roc << 16 | int.from_bytes(body[2:4], "big")
    key, salt = reference_key(key_salt, n, 0, n), reference_key(key_salt, n, 2, 14)
    return header + reference_crypt(key, salt, body[8:12], index, body[len(header) :])


def reference_protect_srtp(name: str, key_salt: bytes, packet: bytes, roc: int) -> bytes:
    suite = SUITES[name]
    n = suite.master_key_length
    header = packet[: reference_header_length(packet)]
    index = roc << 16 | int.from_bytes(packet[2:4], "big")
    key, salt = reference_key(key_salt, n, 0, n), reference_key(key_salt, n, 2, 14)
    body = header + reference_crypt(key, salt, packet[8:12], index, packet[len(header) :])
    auth_key = reference_key(key_salt, n, 1, 20)
    tag = hmac.new(auth_key, body + roc.to_bytes(4, "big"), hashlib.sha1).digest()
    return body + tag[: suite.rtp_tag_length]


def reference_unprotect_srtcp(name: str, key_salt: bytes, packet: bytes) -> tuple[int, bytes]:
    """(SRTCP index, RTCP); the E bit must be set and the 80-bit tag right (RFC 3711 §3.4)."""
    n = SUITES[name].master_key_length
    body, tag = packet[:-10], packet[-10:]
    expected = hmac.new(reference_key(key_salt, n, 4, 20), body, hashlib.sha1).digest()[:10]
    assert expected == tag
    (word,) = struct.unpack("!I", body[-4:])
    assert word & 0x80000000
    index = word & 0x7FFFFFFF
    key, salt = reference_key(key_salt, n, 3, n), reference_key(key_salt, n, 5, 14)
    return index, body[:8] + reference_crypt(key, salt, body[4:8], index, body[8:-4])


def reference_protect_srtcp(name: str, key_salt: bytes, packet: bytes, index: int) -> bytes:
    n = SUITES[name].master_key_length
    key, salt = reference_key(key_salt, n, 3, n), reference_key(key_salt, n, 5, 14)
    body = packet[:8] + reference_crypt(key, salt, packet[4:8], index, packet[8:])
    body += struct.pack("!I", 0x80000000 | index)
    return body + hmac.new(reference_key(key_salt, n, 4, 20), body, hashlib.sha1).digest()[:10]


# -- known answers ---------------------------------------------------------------------------

RFC6188_192_KEY = h("73edc66c4fa15776fb57f9505c17136550ffda71f3e8e5f1")
RFC6188_192_SALT = h("c8522f3acd4ce86d5add78edbb11")


@pytest.mark.parametrize(
    ("label", "length", "expected"),
    [
        # RFC 6188 §7.4 (AES_192_CM_PRF): SRTP encryption, authentication, salt.
        (0, 24, "31874736a8f1143870c26e4857d8a5b2c4a354407faadabb"),
        (1, 20, "355b10973cd95b9eacf4061c7e1a7151e7cfbfcb"),
        (2, 14, "2372b82d639b6d8503a47adc0a6c"),
        # SRTCP (labels 3-5): no published values; computed independently by the spec's author
        # (specs/sdes-srtp.md §6.4) and by the reference above.
        (3, 24, "0c3b5d24e0005fb7b821f22466607ea095818448aff1a464"),
        (4, 20, "1435bd4b2d52ecdd00b401c5fbf38d087f529199"),
        (5, 14, "25a16ab36c966196475415cbc6f0"),
    ],
)
def test_aes192_key_derivation_rfc6188_7_4(label: int, length: int, expected: str) -> None:
    assert derive_session_key(RFC6188_192_KEY, RFC6188_192_SALT, label, length) == h(expected)
    key_salt = RFC6188_192_KEY + RFC6188_192_SALT
    assert reference_key(key_salt, 24, label, length) == h(expected)


def test_aes256_key_derivation_rfc6188_7_2() -> None:
    key = h("f0f04914b513f2763a1b1fa130f10e2998f6f6e43e4309d1e622a0e332b9f1b6")
    salt = h("3b04803de51ee7c96423ab5b78d2")
    assert derive_session_key(key, salt, 0, 32) == h(
        "5ba1064e30ec51613cad926c5a28ef731ec7fb397f70a960653caf06554cd8c4"
    )
    assert derive_session_key(key, salt, 1, 20) == h("fd9c32d39ed5fbb5a9dc96b30818454d1313dc05")
    assert derive_session_key(key, salt, 2, 14) == h("fa31791685ca444a9e07c6c64e93")
    # SRTCP (labels 3-5): no published values; computed independently (specs/sdes-srtp.md §6.4).
    assert derive_session_key(key, salt, 3, 32) == h(
        "8ee75f2de53606ebfb9aabce0b530213ce0966976277ff918700903dcc406073"
    )
    assert derive_session_key(key, salt, 4, 20) == h("0235c1262ca7178cf9d8180fa6574a1d997fdc7a")
    assert derive_session_key(key, salt, 5, 14) == h("b174376e041b45cd4031056e44ba")


def test_aes128_key_derivation_rfc3711_b3() -> None:
    key, salt = h("E1F97A0D3E018BE0D64FA32C06DE4139"), h("0EC675AD498AFEEBB6960B3AABE6")
    assert derive_session_key(key, salt, 0, 16) == h("C61E7A93744F39EE10734AFE3FF7A087")
    assert derive_session_key(key, salt, 2, 14) == h("30CBBC08863D8C85D49DB34A9AE1")
    assert derive_session_key(key, salt, 1, 20) == h("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4")
    # SRTCP (labels 3-5): computed independently (specs/sdes-srtp.md §6.2).
    assert derive_session_key(key, salt, 3, 16) == h("4c1aa45a81f73d61c800bbb00fbb1eaa")
    assert derive_session_key(key, salt, 4, 20) == h("8d54534feb49ae8e7993a6bd0b844fc323a93dfd")
    assert derive_session_key(key, salt, 5, 14) == h("9581c7ad87b3e530bf3e4454a8b3")


@pytest.mark.parametrize(
    ("key", "keystream"),
    [
        pytest.param(  # RFC 6188 §7.3
            "eab234764e517b2d3d160d587d8c86219740f65f99b6bcf7",
            "35096cba4610028dc1b57503804ce37c 5de986291dcce161d5165ec4568f5c9a",
            id="AES-192",
        ),
        pytest.param(  # RFC 6188 §7.1
            "57f82fe3613fd170a85ec93c40b1f0922ec4cb0dc025b58272147cc438944a98",
            "92bdd28a93c3f52511c677d08b5515a4 9da71b2378a854f67050756ded165bac",
            id="AES-256",
        ),
        pytest.param(  # RFC 3711 B.2, first two blocks
            "2B7E151628AED2A6ABF7158809CF4F3C",
            "E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB",
            id="AES-128",
        ),
    ],
)
def test_keystream_rfc6188_7_1_7_3_and_rfc3711_b2(key: str, keystream: str) -> None:
    assert aes_cm_keystream(h(key), h("f0f1f2f3f4f5f6f7f8f9fafbfcfd0000"), 32) == h(keystream)


def test_packet_keystream_runs_the_block_counter_like_rfc3711_b2() -> None:
    # The per-packet path encrypts counter blocks with an ECB context. With RFC 3711 B.2's key
    # as session key, its IV's high 14 octets as session salt, SSRC 0 and index 0, the IV is
    # B.2's: the first blocks must be B.2's, and the longest packet's keystream plain AES-CTR's.
    key = h("2B7E151628AED2A6ABF7158809CF4F3C")
    keys = srtp_python._SessionKeys.__new__(srtp_python._SessionKeys)
    keys._ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    keys._salt = int.from_bytes(h("F0F1F2F3F4F5F6F7F8F9FAFBFCFD"), "big")
    assert keys.crypt(0, 0, bytes(48)) == h(
        """E03EAD0935C95E80E166B16DD92B4EB4 D23513162B02D0F72A43A2FE4A5F97AB
           41E95B3BB0A2E8DD477901E4FCA894C0"""
    )
    longest = keys.crypt(0, 0, bytes(MAX_PACKET_LENGTH))
    assert longest == aes_cm_keystream(key, h("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000"), 65536)


@settings(max_examples=80, deadline=None)
@given(
    key_length=st.sampled_from([16, 24, 32]),
    seed=st.integers(0, 255),
    ssrc=st.integers(0, 2**32 - 1),
    index=st.integers(0, 2**48 - 1),
    data=st.binary(max_size=700),
)
def test_packet_keystream_is_aes_ctr_with_the_rfc3711_iv(
    key_length: int, seed: int, ssrc: int, index: int, data: bytes
) -> None:
    key_salt = bytes((seed + 17 * i) & 0xFF for i in range(key_length + 14))
    keys = srtp_python._SessionKeys(memoryview(key_salt)[:key_length], key_salt[key_length:], 0)
    expected = reference_crypt(
        reference_key(key_salt, key_length, 0, key_length),
        reference_key(key_salt, key_length, 2, 14),
        ssrc.to_bytes(4, "big"),
        index,
        data,
    )
    assert keys.crypt(ssrc, index, data) == expected


# -- interop with the reference ----------------------------------------------------------------


@pytest.mark.parametrize("name", CM_SUITES)
def test_the_reference_reads_what_the_sender_protects_across_the_wrap(name: str) -> None:
    key = key_for(name, 1)
    ours = sender(name, key)
    packets = [(rtp(s), roc) for s, roc in ((65533, 0), (65534, 0), (65535, 0), (0, 1), (1, 1))]
    packets.append((rtp_with_csrcs_and_extension(2), 1))
    for packet, roc in packets:
        protected = ok(ours.protect_rtp(packet))
        assert len(protected) == len(packet) + SUITES[name].rtp_tag_length
        assert reference_unprotect_srtp(name, key, protected, roc) == packet
        assert reference_unprotect_srtp(name, key, protected, 1 - roc) is None  # ROC is in the tag


@pytest.mark.parametrize("name", CM_SUITES)
def test_the_receiver_reads_what_the_reference_protects_across_the_wrap(name: str) -> None:
    key = key_for(name, 2)
    ours = receiver(name, key)
    # In order, then 0 overtaking 65535 across the wrap: Appendix A guesses ROC - 1 for 65535.
    for sequence, roc in ((65534, 0), (0, 1), (65535, 0), (1, 1), (3, 1), (2, 1)):
        packet = rtp(sequence)
        assert ok(ours.unprotect_rtp(reference_protect_srtp(name, key, packet, roc))) == packet
    packet = rtp_with_csrcs_and_extension(4)
    assert ok(ours.unprotect_rtp(reference_protect_srtp(name, key, packet, 1))) == packet


@pytest.mark.parametrize("name", CM_SUITES)
def test_srtcp_both_ways_with_the_reference(name: str) -> None:
    key = key_for(name, 3)
    ours_out, ours_in = sender(name, key), receiver(name, key)
    for expected_index in (1, 2, 3):  # per SSRC, first packet 1 (as libsrtp)
        protected = ok(ours_out.protect_rtcp(sender_report()))
        assert len(protected) == len(sender_report()) + 4 + 10  # always the 80-bit tag
        assert reference_unprotect_srtcp(name, key, protected) == (expected_index, sender_report())
    assert reference_unprotect_srtcp(name, key, ok(ours_out.protect_rtcp(sender_report(7))))[0] == 1
    for index in (0, 9, 5, 0x7FFFFFFF):
        report = sender_report(ssrc=0xABCDEF01)
        protected = reference_protect_srtcp(name, key, report, index)
        assert ok(ours_in.unprotect_rtcp(protected)) == report


# -- interop with libsrtp (AES-128 and AES-256, which the bundled libsrtp gets right) -----------


@pytest.mark.parametrize("name", LIBSRTP_CM)
def test_libsrtp_reads_what_the_python_sender_protects(name: str) -> None:
    key = key_for(name, 4)
    ours = sender(name, key)
    with SrtpSession(SrtpKeys(name, local_key=key_for(name, 5), remote_key=key)) as theirs:
        assert theirs.implementation == "libsrtp"
        for sequence in (65530, 65535, 0, 1, 7, 5):
            assert theirs.unprotect_rtp(ok(ours.protect_rtp(rtp(sequence)))) == rtp(sequence)
        packet = rtp_with_csrcs_and_extension(8)
        assert theirs.unprotect_rtp(ok(ours.protect_rtp(packet))) == packet
        for _ in range(3):
            protected = ok(ours.protect_rtcp(sender_report()))
            assert theirs.unprotect_rtcp(protected) == sender_report()
        assert theirs.statistics().unprotected == 10


@pytest.mark.parametrize("name", LIBSRTP_CM)
def test_the_python_receiver_reads_what_libsrtp_protects(name: str) -> None:
    key = key_for(name, 6)
    ours = receiver(name, key)
    with SrtpSession(SrtpKeys(name, local_key=key, remote_key=key_for(name, 7))) as theirs:
        for sequence in (65534, 65535, 0, 1, 2):
            assert ours.unprotect_rtp(theirs.protect_rtp(rtp(sequence)) or b"") == rtp(sequence)
        for _ in range(3):
            protected = theirs.protect_rtcp(sender_report()) or b""
            assert ours.unprotect_rtcp(protected) == sender_report()
            assert ours.unprotect_rtcp(protected) is Drop.REPLAY
        assert theirs.protect_rtp(rtp(1)) is None  # libsrtp refuses the duplicate too
        assert ours.unprotect_rtp(sender(name, key).protect_rtp(rtp(1)) or b"") is Drop.REPLAY


@pytest.mark.parametrize("name", LIBSRTP_CM)
def test_same_bytes_as_libsrtp(name: str) -> None:
    key = key_for(name, 8)
    ours = sender(name, key)
    with SrtpSession(SrtpKeys(name, local_key=key, remote_key=key)) as theirs:
        for sequence in (100, 101, 99, 40000, 7000):
            assert ours.protect_rtp(rtp(sequence)) == theirs.protect_rtp(rtp(sequence))
        assert ours.protect_rtcp(sender_report()) == theirs.protect_rtcp(sender_report())


# -- the packet index (RFC 3711 §3.3.1, Appendix A) ---------------------------------------------


@pytest.mark.parametrize(
    ("roc", "s_l", "sequence", "expected_roc"),
    [
        (1, 100, 101, 1),
        (1, 100, 32868, 1),  # SEQ - s_l = 32768: not more than 2^15, same ROC
        (1, 100, 32869, 0),  # SEQ - s_l > 2^15: from before the wrap, ROC - 1
        (1, 100, 65535, 0),
        (0, 100, 65535, 0),  # no ROC - 1 before the first wrap (libsrtp does the same)
        (2, 40000, 7232, 2),  # s_l - 2^15 = 7232 is not more than SEQ: same ROC
        (2, 40000, 7231, 3),  # s_l - 2^15 > SEQ: after the wrap, ROC + 1
        (2, 40000, 7000, 3),
        (2, 65535, 0, 3),
        (2, 65535, 40000, 2),
        (0, 32768, 0, 0),  # s_l = 2^15: s_l - 2^15 > SEQ never holds
    ],
)
def test_index_estimation_follows_appendix_a(
    roc: int, s_l: int, sequence: int, expected_roc: int
) -> None:
    index = srtp_python._estimate_index(roc << 16 | s_l, sequence)
    assert index == expected_roc << 16 | sequence


@pytest.mark.parametrize("name", AES192)
def test_the_roc_moves_only_after_authentication(name: str) -> None:
    key = key_for(name, 9)
    theirs, ours = sender(name, key), receiver(name, key)
    first = ok(theirs.protect_rtp(rtp(65535)))
    assert ok(ours.unprotect_rtp(first)) == rtp(65535)
    # A forged post-wrap packet (guessed ROC 1) fails and must not move ROC or s_l...
    forged = rtp(3) + bytes(SUITES[name].rtp_tag_length)
    assert ours.unprotect_rtp(forged) is Drop.AUTH_FAILURE
    # ...so a genuine late pre-wrap packet still gets ROC 0, and the real wrap still works.
    late = reference_protect_srtp(name, key, rtp(65500), roc=0)
    assert ok(ours.unprotect_rtp(late)) == rtp(65500)
    after = ok(theirs.protect_rtp(rtp(0)))
    assert reference_unprotect_srtp(name, key, after, roc=1) == rtp(0)
    assert ok(ours.unprotect_rtp(after)) == rtp(0)


@pytest.mark.parametrize("name", AES192)
def test_the_roc_keeps_counting_over_many_wraps(name: str) -> None:
    key = key_for(name, 10)
    theirs, ours = sender(name, key), receiver(name, key)
    for step in range(5 * 65536 // 20000 + 1):
        sequence = step * 20000
        roc = sequence >> 16
        protected = ok(theirs.protect_rtp(rtp(sequence)))
        assert reference_unprotect_srtp(name, key, protected, roc) == rtp(sequence)
        assert ok(ours.unprotect_rtp(protected)) == rtp(sequence)


# -- the replay window (RFC 3711 §3.3.2) -------------------------------------------------------


@pytest.mark.parametrize("window", [64, 100, 128, 32767])
def test_the_window_is_exactly_as_long_as_configured(window: int) -> None:
    name = "AES_192_CM_HMAC_SHA1_80"
    key = key_for(name, 11)
    theirs, ours = (
        sender(name, key, replay_window=window),
        receiver(name, key, replay_window=window),
    )
    start = 1000
    packets = {s: ok(theirs.protect_rtp(rtp(s))) for s in range(start, start + window + 1)}
    newest = start + window
    assert ok(ours.unprotect_rtp(packets[newest])) == rtp(newest)
    assert ours.unprotect_rtp(packets[newest - window]) is Drop.REPLAY  # window behind: too old
    oldest_kept = newest - window + 1
    assert ok(ours.unprotect_rtp(packets[oldest_kept])) == rtp(oldest_kept)
    assert ours.unprotect_rtp(packets[oldest_kept]) is Drop.REPLAY
    assert ours.unprotect_rtp(packets[newest]) is Drop.REPLAY


@settings(max_examples=150, deadline=None)
@given(
    window=st.sampled_from([64, 65, 128, 200]),
    steps=st.lists(st.integers(-300, 300), min_size=1, max_size=60),
)
def test_the_window_agrees_with_a_set_model(window: int, steps: list[int]) -> None:
    first = 1_000_000
    replay = srtp_python._ReplayWindow(first)
    seen, highest = {first}, first
    index = first
    for step in steps:
        index = max(0, index + step)
        model_refuses = index in seen or index <= highest - window
        assert replay.seen(index, window) is model_refuses
        if not model_refuses:
            replay.add(index, window)
            seen.add(index)
            highest = max(highest, index)
        assert replay.highest == highest
        assert replay.mask < 1 << window


def test_a_huge_jump_resets_the_window_without_a_huge_shift() -> None:
    replay = srtp_python._ReplayWindow(5)
    replay.add(5 + 2**47, 128)
    assert (replay.highest, replay.mask) == (5 + 2**47, 1)
    assert replay.seen(5, 128)  # far behind: too old


@pytest.mark.parametrize("name", AES192)
def test_the_sender_refuses_an_index_twice_but_takes_reordered_packets(name: str) -> None:
    key = key_for(name, 12)
    ours = sender(name, key, replay_window=64)
    for sequence in (10, 12, 11):  # 11 arrives from the other leg after 12: still protected
        protected = ok(ours.protect_rtp(rtp(sequence)))
        assert reference_unprotect_srtp(name, key, protected, 0) == rtp(sequence)
    assert ours.protect_rtp(rtp(11)) is Drop.REPLAY  # same index: would reuse keystream
    assert ours.protect_rtp(rtp(11, payload=b"other")) is Drop.REPLAY
    ok(ours.protect_rtp(rtp(200)))
    assert ours.protect_rtp(rtp(136)) is Drop.REPLAY  # 64 behind: outside the window
    ok(ours.protect_rtp(rtp(137)))


@pytest.mark.parametrize("name", AES192)
def test_srtcp_replays_and_reordering(name: str) -> None:
    key = key_for(name, 13)
    ours = receiver(name, key)
    packets = {i: reference_protect_srtcp(name, key, sender_report(), i) for i in (1, 2, 3, 300)}
    assert ok(ours.unprotect_rtcp(packets[2]))
    assert ok(ours.unprotect_rtcp(packets[1]))  # late, inside the window
    assert ours.unprotect_rtcp(packets[1]) is Drop.REPLAY
    assert ok(ours.unprotect_rtcp(packets[300]))
    assert ours.unprotect_rtcp(packets[3]) is Drop.REPLAY  # 297 behind a 128 window
    assert ours.unprotect_rtcp(packets[300]) is Drop.REPLAY


# -- SRTCP index and E bit ---------------------------------------------------------------------


@pytest.mark.parametrize("name", AES192)
def test_srtcp_index_counts_per_ssrc_with_the_e_bit(name: str) -> None:
    ours = sender(name, key_for(name, 14))

    def word(packet: bytes | Drop) -> int:
        (value,) = struct.unpack_from("!I", ok(packet), len(ok(packet)) - 14)
        return int(value)

    assert [word(ours.protect_rtcp(sender_report())) for _ in range(3)] == [
        0x80000001,
        0x80000002,
        0x80000003,
    ]
    assert word(ours.protect_rtcp(sender_report(ssrc=9))) == 0x80000001


@pytest.mark.parametrize("name", AES192)
def test_srtcp_without_the_e_bit_is_refused_before_the_tag(name: str) -> None:
    key = key_for(name, 15)
    # A correctly tagged packet with E = 0 (UNENCRYPTED_SRTCP, which we never negotiate).
    n = SUITES[name].master_key_length
    body = sender_report() + struct.pack("!I", 5)
    tag = hmac.new(reference_key(key, n, 4, 20), body, hashlib.sha1).digest()[:10]
    assert receiver(name, key).unprotect_rtcp(body + tag) is Drop.MALFORMED


@pytest.mark.parametrize("name", AES192)
def test_the_srtcp_index_stops_at_2_31(name: str) -> None:
    # RFC 3711 §9.2: after 2^31 - 1 SRTCP packets the master key must change; never wrap.
    ours = sender(name, key_for(name, 16))
    ok(ours.protect_rtcp(sender_report()))
    ours._streams[sender_report()[4:8]].rtcp_index = 0x7FFFFFFE
    last = ok(ours.protect_rtcp(sender_report()))
    assert last[-14:-10] == b"\xff\xff\xff\xff"
    assert ours.protect_rtcp(sender_report()) is Drop.MALFORMED


@pytest.mark.parametrize("name", AES192)
def test_the_srtp_index_stops_at_2_48(name: str) -> None:
    ours = sender(name, key_for(name, 17))
    ok(ours.protect_rtp(rtp(1)))
    ours._streams[rtp(1)[8:12]].rtp = srtp_python._ReplayWindow((1 << 48) - 2)
    last = ok(ours.protect_rtp(rtp(65535)))  # ROC 2^32 - 1, SEQ 65535: the last index
    assert reference_unprotect_srtp(name, key_for(name, 17), last, roc=2**32 - 1) == rtp(65535)
    assert ours.protect_rtp(rtp(0)) is Drop.MALFORMED  # would need ROC 2^32


# -- tampering, malformed packets, limits ---------------------------------------------------------


@settings(max_examples=120, deadline=None)
@given(name=st.sampled_from(AES192), bit=st.integers(0, 8 * (172 + 10) - 1))
def test_any_flipped_bit_is_refused(name: str, bit: int) -> None:
    key = key_for(name, 18)
    packet = bytearray(ok(sender(name, key).protect_rtp(rtp(42))))
    bit %= 8 * len(packet)
    packet[bit // 8] ^= 0x80 >> (bit % 8)
    ours = receiver(name, key)
    # A flip in CC or X changes the header length (malformed or a wrong tag); anything else
    # is a wrong tag.
    assert ours.unprotect_rtp(bytes(packet)) in (Drop.AUTH_FAILURE, Drop.MALFORMED)
    assert ours.ssrc_count == 0


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(AES192),
    sequence=st.integers(0, 65535),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=400),
)
def test_any_packet_round_trips(name: str, sequence: int, ssrc: int, payload: bytes) -> None:
    key = key_for(name, 19)
    packet = rtp(sequence, ssrc=ssrc, payload=payload)
    protected = ok(sender(name, key).protect_rtp(packet))
    assert reference_unprotect_srtp(name, key, protected, roc=0) == packet
    assert ok(receiver(name, key).unprotect_rtp(protected)) == packet


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x80\x00\x00\x01",
        rtp(1)[:11],
        b"\x8f" + rtp(1)[1:12] + bytes(56),  # 15 CSRCs announced, 14 present
        b"\x90" + rtp(1)[1:12] + b"\xbe\xde",  # extension header cut short
        b"\x90" + rtp(1)[1:12] + b"\xbe\xde\x00\x05" + bytes(16),  # extension longer than packet
    ],
)
def test_malformed_rtp_is_refused_both_ways(packet: bytes) -> None:
    name = "AES_192_CM_HMAC_SHA1_80"
    assert sender(name, key_for(name, 20)).protect_rtp(packet) is Drop.MALFORMED
    assert receiver(name, key_for(name, 20)).unprotect_rtp(packet) is Drop.MALFORMED


def test_too_short_for_the_tag_and_too_long_are_malformed() -> None:
    name = "AES_192_CM_HMAC_SHA1_80"
    key = key_for(name, 21)
    ours_in, ours_out = receiver(name, key), sender(name, key)
    assert ours_in.unprotect_rtp(rtp(1, payload=b"")[:12] + bytes(9)) is Drop.MALFORMED
    assert ours_in.unprotect_rtcp(sender_report()[:8] + bytes(13)) is Drop.MALFORMED
    assert ours_out.protect_rtcp(sender_report()[:7]) is Drop.MALFORMED
    too_long = rtp(1, payload=bytes(MAX_PACKET_LENGTH - 11))
    assert ours_out.protect_rtp(too_long) is Drop.MALFORMED
    assert ours_in.unprotect_rtp(too_long) is Drop.MALFORMED
    assert ours_out.protect_rtcp(sender_report() + bytes(MAX_PACKET_LENGTH)) is Drop.MALFORMED


def test_the_longest_packets_and_an_empty_payload_work() -> None:
    name = "AES_192_CM_HMAC_SHA1_32"
    key = key_for(name, 22)
    assert MAX_PACKET_LENGTH == srtp.MAX_PACKET_LENGTH
    payload = bytes(range(256)) * 256
    longest = rtp(1, payload=payload[: MAX_PACKET_LENGTH - 12])  # the longest we protect
    assert len(longest) == MAX_PACKET_LENGTH
    protected = ok(sender(name, key).protect_rtp(longest))
    assert reference_unprotect_srtp(name, key, protected, roc=0) == longest
    # The longest SRTP packet we unprotect is MAX_PACKET_LENGTH with its tag.
    longest_srtp = rtp(2, payload=payload[: MAX_PACKET_LENGTH - 12 - 4])
    empty = rtp(3, payload=b"")
    ours_out, ours_in = sender(name, key), receiver(name, key)
    for packet in (longest_srtp, empty):
        protected = ok(ours_out.protect_rtp(packet))
        assert reference_unprotect_srtp(name, key, protected, roc=0) == packet
        assert ok(ours_in.unprotect_rtp(protected)) == packet


def test_ssrcs_are_bounded_and_forgeries_take_no_slot() -> None:
    name = "AES_192_CM_HMAC_SHA1_80"
    key = key_for(name, 23)
    theirs, ours = sender(name, key), receiver(name, key, max_ssrcs=2)
    for ssrc in range(10, 30):
        assert ours.unprotect_rtp(rtp(1, ssrc=ssrc) + bytes(10)) is Drop.AUTH_FAILURE
    assert ours.ssrc_count == 0
    for ssrc in (1, 2):
        assert ok(ours.unprotect_rtp(ok(theirs.protect_rtp(rtp(1, ssrc=ssrc)))))
    assert ours.unprotect_rtp(ok(theirs.protect_rtp(rtp(1, ssrc=3)))) is Drop.SSRC_LIMIT
    assert ours.unprotect_rtcp(ok(theirs.protect_rtcp(sender_report(ssrc=3)))) is Drop.SSRC_LIMIT
    assert ok(ours.unprotect_rtcp(ok(theirs.protect_rtcp(sender_report(ssrc=2)))))
    assert ours.ssrc_count == 2
    limited = sender(name, key, max_ssrcs=1)
    ok(limited.protect_rtcp(sender_report(ssrc=1)))
    ok(limited.protect_rtp(rtp(1, ssrc=1)))  # RTP and RTCP of one SSRC share one slot
    assert limited.protect_rtp(rtp(1, ssrc=2)) is Drop.SSRC_LIMIT
    assert limited.protect_rtcp(sender_report(ssrc=2)) is Drop.SSRC_LIMIT


# -- construction, keys, closing, sans-IO --------------------------------------------------------


@pytest.mark.parametrize(
    ("key_length", "key_salt_length", "kwargs", "message"),
    [
        (20, 34, {}, "16-, 24- or 32-octet key, not 20"),
        (24, 37, {}, "38-octet master key and salt, got 37"),
        (24, 38, {"rtp_tag_length": 8}, "4 or 10 octets, not 8"),
        (24, 38, {"replay_window": 63}, "replay window 63"),
        (24, 38, {"replay_window": 32768}, "replay window 32768"),
        (24, 38, {"max_ssrcs": 0}, "max_ssrcs"),
    ],
)
def test_misuse_is_a_local_error_without_key_material(
    key_length: int, key_salt_length: int, kwargs: dict[str, int], message: str
) -> None:
    options: dict[str, int] = {"rtp_tag_length": 10, **kwargs}
    for kind in (SrtpSender, SrtpReceiver):
        with pytest.raises(LocalMediaError, match=message) as error:
            kind(b"\xa5" * key_salt_length, master_key_length=key_length, **options)
        assert "a5" not in str(error.value).lower() and "\\xa5" not in str(error.value)
    with pytest.raises(LocalMediaError, match="14 octets"):
        derive_session_key(bytes(24), bytes(12), 0, 24)


def _values(obj: object, depth: int = 0) -> list[object]:
    """Everything reachable through __slots__ of our own classes (not into cryptography)."""
    found: list[object] = []
    for klass in type(obj).__mro__:
        for slot in getattr(klass, "__slots__", ()):
            if hasattr(obj, slot):
                value = getattr(obj, slot)
                found.append(value)
                if isinstance(value, dict):
                    found.extend(value.values())
                if type(value).__module__ == srtp_python.__name__ and depth < 3:
                    found.extend(_values(value, depth + 1))
    return found


@pytest.mark.parametrize("kind", [SrtpSender, SrtpReceiver])
def test_contexts_keep_no_key_bytes_and_show_none(kind: type[SrtpSender | SrtpReceiver]) -> None:
    key = bytes(range(38))
    context = kind(key, master_key_length=24, rtp_tag_length=10)
    values = _values(context)
    assert len(values) >= 8  # the walk found the session keys
    assert not any(isinstance(v, bytes | bytearray | memoryview) for v in values)
    assert key.hex() not in repr(context) and "\\x00\\x01" not in repr(context)


@pytest.mark.parametrize("name", AES192)
def test_a_closed_context_drops_everything(name: str) -> None:
    key = key_for(name, 24)
    theirs, ours, ours_out = sender(name, key), receiver(name, key), sender(name, key)
    packet = ok(theirs.protect_rtp(rtp(1)))
    report = ok(theirs.protect_rtcp(sender_report()))
    assert ok(ours.unprotect_rtp(packet)) and not ours.closed
    ours.close()
    ours.close()
    ours_out.close()
    assert ours.closed and ours.ssrc_count == 0
    assert ours.unprotect_rtp(packet) is Drop.MALFORMED
    assert ours.unprotect_rtcp(report) is Drop.MALFORMED
    assert ours_out.protect_rtp(rtp(2)) is Drop.MALFORMED
    assert ours_out.protect_rtcp(sender_report()) is Drop.MALFORMED


def test_the_module_is_sans_io() -> None:
    # The rule of tests/unit/core/test_sans_io.py, whose list does not name this module yet.
    path = Path(srtp_python.__file__)
    forbidden = {"trio", "socket", "time", "random", "asyncio", "threading", "select", "os"}
    forbidden |= {"secrets", "ctypes", "pylibsrtp"}
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots
    assert not roots & forbidden
