"""ZRTP cryptography (RFC 6189 §4.4, §4.5, §5.1.5, §5.1.6): the KDF against bzrtp's vectors
(ZRTP digest §15.2), s0, SAS rendering, and each key agreement: both sides agree, the public
values have the sizes of Table 5, and a peer's unusable value is refused (error 0x61)."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, x25519

from gateway.plugins.keyexchange.zrtp.crypto import (
    CIPHER_KEY_BITS,
    KEY_AGREEMENTS,
    SRTP_SALT_BITS,
    SRTP_SUITES,
    KeyAgreementError,
    cfb_decrypt,
    cfb_encrypt,
    kdf,
    mac64,
    render_sas,
    s0_dh_mode,
)

# -- KDF (§4.5.1), digest §15.2 -------------------------------------------------------------------

KI = bytes.fromhex("33e66c01ca6fe64fb76ffde31cabc0fbad3d3102676b0c090fc996381e0a8c2f")
CONTEXT = bytes.fromhex(
    "f01f2402000000008024adfb94a90690cf9ced13998c51347dc435a74d75254480c211f2d3205ea71b4ba4ee"
    "c78eb7357528e56fcf4f749f"
)
SASHASH = bytes.fromhex("d269b0718ad58f3c8e0dcf4535811d951847314128319f54c606595b522c5287")


@pytest.mark.parametrize(
    ("label", "bits", "expected"),
    [
        (b"Responder SRTP master key", 128, "f2cfc5724acfd7b50e89bed8a5c9f2cd"),
        (b"Responder SRTP master salt", 112, "3c8fb13fd6ca83fbd6af3bd5ab1c"),
        (b"SAS", 256, SASHASH.hex()),
        (
            b"ZRTP Session Key",
            256,
            "c363390bc9ee13aa9e6a00528409ddc90717e01d1ae2dcf9a70ab98886ac6975",
        ),
        (
            b"retained secret",
            256,
            "a7272dee77e7990c24b20b9f54ba2b617a23d8a59765829b78072bc51299015c",
        ),
        (b"Responder ZRTP key", 128, "75767d41829cb697c7a20d6812eadb9a"),
        (b"Initiator ZRTP key", 128, "08a821460cbd6ce0f1fe3c4c704e3bea"),
        (
            b"Responder HMAC key",
            256,
            "2169f15c1b85a23977024d5ea71f481623fe94dc1aabf489b8744d0d373d7cab",
        ),
        (
            b"Initiator HMAC key",
            256,
            "1d117befd627cc5a80d0236e8d496be42a6a0118ac4159e861b9b14a784b5d3f",
        ),
    ],
    ids=lambda value: value.decode() if isinstance(value, bytes) else None,
)
def test_kdf_vectors(label: bytes, bits: int, expected: str) -> None:
    assert len(CONTEXT) == 56  # ZIDi || ZIDr || total_hash
    assert kdf(KI, label, CONTEXT, bits).hex() == expected


def test_kdf_length_is_part_of_the_input_not_only_a_truncation() -> None:
    # L is hashed in (§4.5.1): 128 bits is not the first half of the 256-bit output.
    assert kdf(KI, b"SAS", CONTEXT, 128) != SASHASH[:16]
    assert len(kdf(KI, b"SAS", CONTEXT, 128)) == 16


def test_s0_in_dh_mode_hashes_its_inputs_in_the_rfc_order() -> None:
    dh_result, zid_i, zid_r, total_hash = b"\x11" * 384, b"I" * 12, b"R" * 12, b"\x22" * 32
    null = b"\x00\x00\x00\x00"
    expected = hashlib.sha256(
        b"\x00\x00\x00\x01" + dh_result + b"ZRTP-HMAC-KDF" + zid_i + zid_r + total_hash + null * 3
    ).digest()
    s0 = s0_dh_mode(
        dh_result, zid_i=zid_i, zid_r=zid_r, total_hash=total_hash, secrets=(b"", b"", b"")
    )
    assert s0 == expected
    # A present secret goes in with its length (§4.4.1.4).
    with_s1 = s0_dh_mode(
        dh_result, zid_i=zid_i, zid_r=zid_r, total_hash=total_hash, secrets=(b"s" * 32, b"", b"")
    )
    assert (
        with_s1
        == hashlib.sha256(
            b"\x00\x00\x00\x01"
            + dh_result
            + b"ZRTP-HMAC-KDF"
            + zid_i
            + zid_r
            + total_hash
            + struct.pack("!I", 32)
            + b"s" * 32
            + null * 2
        ).digest()
    )


def test_mac64_is_truncated_hmac_sha256() -> None:
    # RFC 4231 test case 2.
    full = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert mac64(b"Jefe", b"what do ya want for nothing?").hex() == full[:16]


def test_cfb_is_aes_cfb128_and_keeps_a_partial_last_block() -> None:
    # NIST SP 800-38A F.3.13 (CFB128-AES128.Encrypt), first block and a half.
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    iv = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    plaintext = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c")
    ciphertext = cfb_encrypt(key, iv, plaintext)
    assert ciphertext.hex() == "3b3fd92eb72dad20333449f8e83cfb4ac8a64537a0b3a93f"
    assert cfb_decrypt(key, iv, ciphertext) == plaintext


# -- SRTP parameters (§5.1.3, §5.1.4) --------------------------------------------------------------


def test_srtp_suites_of_the_ciphers_and_auth_tags() -> None:
    assert CIPHER_KEY_BITS == {"AES1": 128, "AES3": 256}
    assert SRTP_SALT_BITS == 112
    assert SRTP_SUITES == {
        ("AES1", "HS80"): "AES_CM_128_HMAC_SHA1_80",
        ("AES1", "HS32"): "AES_CM_128_HMAC_SHA1_32",
        ("AES3", "HS80"): "AES_256_CM_HMAC_SHA1_80",
        ("AES3", "HS32"): "AES_256_CM_HMAC_SHA1_32",
    }


# -- SAS (§5.1.6, §7) -----------------------------------------------------------------------------


def test_sas_of_the_vector_sashash() -> None:
    assert render_sas("B32 ", SASHASH) == "4jw5"
    assert render_sas("B256", SASHASH) == "standard:guitarist"


@pytest.mark.parametrize(
    ("sasvalue", "b32", "b256"),
    [
        (0x00000000, "yyyy", "aardvark:adroitness"),
        (0xFFFFFFFF, "9999", "zulu:yucatan"),
        (0x08000000, "byyy", "aimless:adroitness"),  # the 5th bit from the left is the first
        (0x00000FFF, "yyyy", "aardvark:adroitness"),  # only the leftmost 20 / 16 bits count
        (0x0001F000, "yyy9", "aardvark:adviser"),
    ],
)
def test_sas_uses_the_leftmost_bits(sasvalue: int, b32: str, b256: str) -> None:
    sashash = sasvalue.to_bytes(4, "big") + b"\xff" * 28
    assert render_sas("B32 ", sashash) == b32
    assert render_sas("B256", sashash) == b256


def test_an_unknown_sas_type_is_refused() -> None:
    with pytest.raises(ValueError, match="B10D"):
        render_sas("B10D", SASHASH)


# -- key agreements (§5.1.5) ----------------------------------------------------------------------

# RFC 3526 §3 (group 14, 2048 bits) and §4 (group 15, 3072 bits), generator 2.
MODP_2048 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)
MODP_3072 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AAAC42DAD33170D04507A33"
    "A85521ABDF1CBA64ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7"
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6BF12FFA06D98A0864"
    "D87602733EC86A64521F2B18177B200CBBE117577A615D6C770988C0BAD946E2"
    "08E24FA074E5AB3143DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
    16,
)
PRIMES = {"DH2k": MODP_2048, "DH3k": MODP_3072}

# Table 5 and the post-quantum draft: public value octets and DH result octets.
SIZES = {"DH3k": (384, 384), "DH2k": (256, 256), "EC25": (64, 32), "X255": (32, 32)}


class RecordingRandom:
    """A seeded stand-in for the CSPRNG that records what it was asked for."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self.calls: list[int] = []

    def __call__(self, n: int) -> bytes:
        self.calls.append(n)
        return self._random.randbytes(n)


def test_the_key_agreements_and_their_speed_ranking() -> None:
    assert set(KEY_AGREEMENTS) == set(SIZES)
    assert all(name == agreement.name for name, agreement in KEY_AGREEMENTS.items())
    # §4.1.2 and the post-quantum draft, fastest first.
    ranked = sorted(KEY_AGREEMENTS, key=lambda name: KEY_AGREEMENTS[name].speed_rank)
    assert ranked == ["DH2k", "X255", "EC25", "DH3k"]


@pytest.mark.parametrize("name", sorted(SIZES))
def test_two_private_values_agree(name: str) -> None:
    agreement = KEY_AGREEMENTS[name]
    pv_size, result_size = SIZES[name]
    assert agreement.public_value_size == pv_size
    alice, bob = agreement.generate(RecordingRandom(1)), agreement.generate(RecordingRandom(2))
    assert len(alice.public_value) == len(bob.public_value) == pv_size
    assert alice.public_value != bob.public_value
    shared = alice.agree(bob.public_value)
    assert shared == bob.agree(alice.public_value)
    assert len(shared) == result_size
    carol = agreement.generate(RecordingRandom(3))
    assert carol.agree(bob.public_value) != shared


@pytest.mark.parametrize(("name", "draws"), [("DH3k", [64]), ("DH2k", [64]), ("X255", [])])
def test_finite_field_exponents_come_from_the_injected_source(name: str, draws: list[int]) -> None:
    # §5.1.5: a 512-bit exponent (twice the AES-256 key); X25519 and P-256 use OpenSSL's.
    source = RecordingRandom(5)
    KEY_AGREEMENTS[name].generate(source)
    assert source.calls == draws


@pytest.mark.parametrize("name", ["DH2k", "DH3k"])
def test_finite_field_groups_are_the_rfc_3526_groups(name: str) -> None:
    prime = PRIMES[name]
    size = KEY_AGREEMENTS[name].public_value_size
    assert prime.bit_length() == 8 * size
    private = KEY_AGREEMENTS[name].generate(RecordingRandom(7))
    # The generator 2 as the peer's value gives back our own public value, 2^x mod p.
    assert private.agree((2).to_bytes(size, "big")) == private.public_value
    assert 1 < int.from_bytes(private.public_value, "big") < prime - 1
    # p-1 is refused and p-2 taken: together they pin the group's prime to the RFC's.
    with pytest.raises(KeyAgreementError):
        private.agree((prime - 1).to_bytes(size, "big"))
    assert len(private.agree((prime - 2).to_bytes(size, "big"))) == size


@pytest.mark.parametrize("name", ["DH2k", "DH3k"])
def test_unusable_finite_field_values_are_refused(name: str) -> None:
    prime, size = PRIMES[name], KEY_AGREEMENTS[name].public_value_size
    private = KEY_AGREEMENTS[name].generate(RecordingRandom(8))
    for value in (0, 1, prime - 1, prime, 2 ** (8 * size) - 1):
        with pytest.raises(KeyAgreementError, match="0, 1 or p-1"):
            private.agree(value.to_bytes(size, "big"))
    for wrong in (size - 1, size + 1, 0):
        with pytest.raises(KeyAgreementError, match="length"):
            private.agree(b"\x05" * wrong)


@pytest.mark.parametrize(
    "value",
    [
        bytes(32),  # the neutral element: all-zero result
        (1).to_bytes(32, "little"),  # order 1
        # RFC 7748 §5 / libsodium's blocklist: points of order 8.
        bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
        bytes(31),
        bytes(33),
    ],
    ids=["zero", "one", "order-8", "31-octets", "33-octets"],
)
def test_unusable_x25519_values_are_refused(value: bytes) -> None:
    private = KEY_AGREEMENTS["X255"].generate(RecordingRandom(9))
    with pytest.raises(KeyAgreementError):
        private.agree(value)


def test_x25519_public_value_is_a_curve25519_key() -> None:
    private = KEY_AGREEMENTS["X255"].generate(RecordingRandom(10))
    other = x25519.X25519PrivateKey.generate()
    shared = other.exchange(x25519.X25519PublicKey.from_public_bytes(private.public_value))
    assert private.agree(other.public_key().public_bytes_raw()) == shared


def test_p256_public_value_is_x_then_y_and_the_result_the_x_coordinate() -> None:
    private = KEY_AGREEMENTS["EC25"].generate(RecordingRandom(11))
    peer = ec.EllipticCurvePublicKey.from_encoded_point(
        ec.SECP256R1(), b"\x04" + private.public_value
    )
    other = ec.generate_private_key(ec.SECP256R1())
    numbers = other.public_key().public_numbers()
    other_value = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")
    assert private.agree(other_value) == other.exchange(ec.ECDH(), peer)


@pytest.mark.parametrize(
    "value",
    [
        (1).to_bytes(32, "big") + (1).to_bytes(32, "big"),  # not on the curve
        bytes(64),  # (0, 0): not on the curve either
        b"\x04" + bytes(63),
        bytes(63),
        bytes(65),
        bytes(32),
    ],
    ids=["off-curve", "zero", "with-prefix", "63-octets", "65-octets", "x-only"],
)
def test_unusable_p256_values_are_refused(value: bytes) -> None:
    private = KEY_AGREEMENTS["EC25"].generate(RecordingRandom(12))
    with pytest.raises(KeyAgreementError):
        private.agree(value)


def test_private_values_do_not_show_in_repr() -> None:
    for name in SIZES:
        private = KEY_AGREEMENTS[name].generate(RecordingRandom(13))
        text = repr(private)
        assert private.public_value.hex()[:16] not in text
        assert "private value" in text
