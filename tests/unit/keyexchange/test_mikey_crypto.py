"""MIKEY cryptography: the MIKEY-1 PRF (RFC 3830 §4.1.2) against a straightforward HMAC
computation written here, the TEK/salt/KEMAC labels (§4.1.3, §4.1.4), KEMAC encryption (AES-KW
against RFC 3394's own vector, AES-CM's IV), MACs, and the OAKLEY groups rebuilt from pi."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from gateway.plugins.keyexchange.mikey import crypto
from gateway.plugins.keyexchange.mikey.payloads import MikeyError


def reference_prf(inkey: bytes, label: bytes, length: int) -> bytes:
    """RFC 3830 §4.1.2 as the digest states it, written out without sharing code."""

    def h(key: bytes, data: bytes) -> bytes:
        return hmac.new(key, data, hashlib.sha1).digest()

    m = (length * 8 + 159) // 160
    pieces = [inkey[i : i + 32] for i in range(0, len(inkey), 32)]
    result = bytes(20 * m)
    for s in pieces:
        a = [label]
        for _ in range(m):
            a.append(h(s, a[-1]))
        p = b"".join(h(s, a[i] + label) for i in range(1, m + 1))
        result = bytes(x ^ y for x, y in zip(result, p, strict=True))
    return result[:length]


@pytest.mark.parametrize("inkey_length", [1, 16, 20, 31, 32, 33, 64, 65, 192])
@pytest.mark.parametrize("out_length", [1, 14, 16, 20, 21, 32, 46])
def test_prf_matches_an_independent_computation(inkey_length: int, out_length: int) -> None:
    inkey = bytes((7 * i + inkey_length) & 0xFF for i in range(inkey_length))
    label = bytes.fromhex("2ad01c64") + b"\x01" + bytes(4) + bytes(range(16))
    assert crypto.prf(inkey, label, out_length) == reference_prf(inkey, label, out_length)


def test_prf_of_a_32_octet_key_has_one_piece_not_minisips_empty_extra_one() -> None:
    inkey, label = bytes(range(32)), b"label"
    one_piece = reference_prf(inkey, label, 20)
    assert crypto.prf(inkey, label, 20) == one_piece
    # minisip's libmikey keys the last piece with an empty key when the inkey is a multiple of
    # 256 bits (so a 32-octet TGK gives P(empty key) alone); an extra XORed empty piece would
    # differ too. Neither is RFC 3830 §4.1.2.
    empty = hmac.new(b"", hmac.new(b"", label, hashlib.sha1).digest() + label, hashlib.sha1)
    assert crypto.prf(inkey, label, 20) != empty.digest()
    assert crypto.prf(inkey, label, 20) != bytes(
        a ^ b for a, b in zip(one_piece, empty.digest(), strict=True)
    )


def test_the_labels_are_constant_cs_id_csb_id_rand() -> None:
    tgk, rand, csb = bytes(range(32)), bytes(range(100, 116)), 0xDEADBEEF
    tek, salt = crypto.tek_and_salt(tgk, 2, csb, rand, 16, 14)
    tail = b"\x02" + bytes.fromhex("deadbeef") + rand
    assert tek == reference_prf(tgk, bytes.fromhex("2ad01c64") + tail, 16)
    assert salt == reference_prf(tgk, bytes.fromhex("39a2c14b") + tail, 14)
    assert crypto.tek_and_salt(tgk, 1, csb, rand, 16, 14)[0] != tek  # per crypto session
    encr, auth, kemac_salt = crypto.kemac_keys(b"psk" * 8, csb, rand)
    psk_tail = b"\xff" + bytes.fromhex("deadbeef") + rand
    assert encr == reference_prf(b"psk" * 8, bytes.fromhex("150533e1") + psk_tail, 16)
    assert auth == reference_prf(b"psk" * 8, bytes.fromhex("2d22ac75") + psk_tail, 20)
    assert kemac_salt == reference_prf(b"psk" * 8, bytes.fromhex("29b88916") + psk_tail, 14)


def test_aes_kw_matches_rfc_3394_section_4_1() -> None:
    kek = bytes.fromhex("000102030405060708090A0B0C0D0E0F")
    key = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
    wrapped = bytes.fromhex("1FA68B0A8112B447AEF34BD8FB5A7B829D3E862371D2CFE5")
    assert crypto.kemac_encrypt(2, kek, b"", 0, b"", key) == wrapped
    assert crypto.kemac_decrypt(2, kek, b"", 0, b"", wrapped) == key


def test_aes_kw_pads_to_64_bits_and_refuses_a_wrong_key() -> None:
    data = bytes(range(36))  # a TGK key-data sub-payload: not a multiple of 8
    wrapped = crypto.kemac_encrypt(2, bytes(16), b"", 0, b"", data)
    assert len(wrapped) == 48
    assert crypto.kemac_decrypt(2, bytes(16), b"", 0, b"", wrapped) == data + bytes(4)
    with pytest.raises(MikeyError, match="does not unwrap") as caught:
        crypto.kemac_decrypt(2, b"\x01" * 16, b"", 0, b"", wrapped)
    assert caught.value.error_no == 0
    with pytest.raises(MikeyError, match="not a wrapped key"):
        crypto.kemac_decrypt(2, bytes(16), b"", 0, b"", bytes(20))


def test_aes_cm_uses_the_salt_csb_id_and_timestamp_iv() -> None:
    key, salt = bytes(range(16)), bytes(range(50, 64))
    csb, stamp = 0x01020304, bytes.fromhex("e9b0c4d212345678")
    data = bytes(range(40))
    encrypted = crypto.kemac_encrypt(1, key, salt, csb, stamp, data)
    iv = bytes(
        a ^ b for a, b in zip(salt, bytes(2) + bytes.fromhex("01020304") + stamp, strict=True)
    )
    reference = Cipher(algorithms.AES(key), modes.CTR(iv + bytes(2))).encryptor()
    assert encrypted == reference.update(data) + reference.finalize()
    assert crypto.kemac_decrypt(1, key, salt, csb, stamp, encrypted) == data
    assert crypto.kemac_decrypt(1, key, salt, csb + 1, stamp, encrypted) != data
    with pytest.raises(MikeyError, match="NTP timestamp"):
        crypto.kemac_encrypt(1, key, salt, csb, b"\x00" * 4, data)


def test_null_encryption_is_the_identity_and_unknown_algorithms_are_refused() -> None:
    assert crypto.kemac_encrypt(0, b"", b"", 0, b"", b"abc") == b"abc"
    with pytest.raises(MikeyError, match="encryption algorithm 3") as caught:
        crypto.kemac_decrypt(3, bytes(16), b"", 0, b"", b"abc")
    assert caught.value.error_no == 4


def test_mac_is_full_hmac_sha1_and_detects_any_change() -> None:
    key, data = bytes(20), b"message"
    assert crypto.mac(1, key, data) == hmac.new(key, data, hashlib.sha1).digest()
    assert crypto.mac(0, key, data) == b""
    assert crypto.mac_valid(1, key, data, crypto.mac(1, key, data))
    assert not crypto.mac_valid(1, key, data + b"!", crypto.mac(1, key, data))
    assert not crypto.mac_valid(1, b"\x01" * 20, data, crypto.mac(1, key, data))


def pi_times_two_to(bits: int) -> int:
    """floor(pi * 2^bits) by Machin's formula, in integers."""
    scale = 1 << (bits + 64)

    def arctan_inverse(x: int) -> int:
        total = term = scale // x
        n, sign = 1, -1
        while term:
            term //= x * x
            n += 2
            total += sign * (term // n)
            sign = -sign
        return total

    return (4 * (4 * arctan_inverse(5) - arctan_inverse(239))) >> 64


@pytest.mark.parametrize(
    ("group", "bits", "offset"), [(1, 768, 149686), (2, 1024, 129093), (0, 1536, 741804)]
)
def test_the_oakley_primes_are_rfc_2409_and_3526s_formula(
    group: int, bits: int, offset: int
) -> None:
    # RFC 2409 §6.1/§6.2, RFC 3526 §2: p = 2^n - 2^(n-64) - 1 + 2^64 * ([2^(n-130) pi] + k)
    expected = 2**bits - 2 ** (bits - 64) - 1 + 2**64 * (pi_times_two_to(bits - 130) + offset)
    assert crypto.DH_GROUPS[group] == expected


@pytest.mark.parametrize("group", [0, 1, 2])
def test_dh_both_sides_agree_and_bad_values_are_refused(group: int) -> None:
    x, y = bytes(range(1, 33)), bytes(range(40, 72))
    gx, gy = crypto.dh_public(group, x), crypto.dh_public(group, y)
    assert len(gx) == {0: 192, 1: 96, 2: 128}[group]
    assert crypto.dh_shared(group, x, gy) == crypto.dh_shared(group, y, gx)
    prime = crypto.DH_GROUPS[group]
    length = len(gx)
    for bad in (0, 1, prime - 1, prime):
        with pytest.raises(MikeyError, match="out of range") as caught:
            crypto.dh_shared(group, x, bad.to_bytes(length, "big"))
        assert caught.value.error_no == 6
    with pytest.raises(MikeyError):
        crypto.dh_shared(group, x, gy[1:])
