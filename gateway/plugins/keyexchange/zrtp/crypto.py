"""The cryptography of ZRTP (RFC 6189 §4.4, §4.5, §5.1, §5.7, §7): key agreements, the key
derivation function, Confirm encryption and SAS rendering.

The negotiated hash is always SHA-256 here: we offer only ``S256`` (the mandatory one; §5.1.2),
so a peer cannot choose another, and the hash chain uses SHA-256 anyway (§9). All functions are
pure; the only randomness is the key agreements' private values, drawn from the injected
``random_bytes`` for the finite-field groups and from OpenSSL for X25519 and P-256.

The finite-field groups (DH3k, DH2k: RFC 3526's 3072- and 2048-bit MODP groups, generator 2) are
computed with Python's ``pow`` because ``cryptography`` deprecates finite-field Diffie-Hellman.
``pow`` is not constant-time; the private exponent is used for one exchange only and never again,
so timing reveals at most a little of a value that protects one call's keys already derived.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Protocol

import attrs
from cryptography.hazmat.decrepit.ciphers.modes import CFB
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from gateway.plugins.keyexchange.zrtp.pgp_words import EVEN_WORDS, ODD_WORDS

RandomBytes = Callable[[int], bytes]


def sha256(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def mac64(key: bytes, data: bytes) -> bytes:
    """A message MAC (§5.1.2.2): HMAC with the negotiated hash, truncated to 64 bits."""
    return hmac_sha256(key, data)[:8]


def message_mac_valid(raw: bytes, key: bytes) -> bool:
    """Whether the MAC at the end of a message (Hello, Commit, DHPart) is right for ``key``."""
    return hmac.compare_digest(mac64(key, raw[:-8]), raw[-8:])


def with_mac(raw: bytes, key: bytes) -> bytes:
    """``raw`` with its last eight octets replaced by its MAC under ``key``."""
    return raw[:-8] + mac64(key, raw[:-8])


def kdf(key: bytes, label: bytes, context: bytes, bits: int) -> bytes:
    """The ZRTP KDF (§4.5.1), NIST SP 800-108 in counter mode with one iteration:
    HMAC(KI, 0x00000001 || Label || 0x00 || Context || L), truncated to L bits."""
    data = b"\x00\x00\x00\x01" + label + b"\x00" + context + bits.to_bytes(4, "big")
    return hmac_sha256(key, data)[: bits // 8]


def s0_dh_mode(
    dh_result: bytes, *, zid_i: bytes, zid_r: bytes, total_hash: bytes, secrets: tuple[bytes, ...]
) -> bytes:
    """s0 in DH mode (§4.4.1.4). ``secrets`` are s1, s2, s3: a null secret is b"" (length 0,
    no octets). We keep no retained secrets, so all three are null."""
    data = b"\x00\x00\x00\x01" + dh_result + b"ZRTP-HMAC-KDF" + zid_i + zid_r + total_hash
    for secret in secrets:
        data += len(secret).to_bytes(4, "big") + secret
    return sha256(data)


def zrtp_session_key(s0: bytes, context: bytes) -> bytes:
    """ZRTPSess (§4.5.2), derived by the first (DH mode) stream only: the key the leg's later
    streams are keyed from in Multistream mode."""
    return kdf(s0, b"ZRTP Session Key", context, 256)


def s0_multistream(
    zrtp_sess: bytes, *, zid_i: bytes, zid_r: bytes, hello_responder: bytes, commit: bytes
) -> bytes:
    """s0 in Multistream mode (§4.4.3.2): KDF(ZRTPSess, "ZRTP MSK", KDF_Context, 256) with
    KDF_Context = ZIDi || ZIDr || hash(responder's Hello || Commit) of *this* stream. The
    initiator's nonce (in the Commit) and the responder's H3 (in its Hello) make it unique per
    stream."""
    total_hash = sha256(hello_responder, commit)
    return kdf(zrtp_sess, b"ZRTP MSK", zid_i + zid_r + total_hash, 256)


def cfb_encrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES in CFB mode with 128-bit feedback (§5.7): Confirm and SASrelay bodies."""
    encryptor = Cipher(algorithms.AES(key), CFB(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def cfb_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), CFB(iv)).decryptor()
    return decryptor.update(data) + decryptor.finalize()


# -- key agreements (§5.1.5) ----------------------------------------------------------------------


class KeyAgreementError(ValueError):
    """The peer's public value is unusable (error 0x61, §5.9)."""


class PrivateValue(Protocol):
    """One side's private value of one exchange and its public value as sent."""

    public_value: bytes

    def agree(self, peer_public_value: bytes) -> bytes:
        """DHResult (§4.4.1.4). Raises :class:`KeyAgreementError` for an unusable peer value."""


_MODP_2048 = int(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B"
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF695581718"
    "3995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF",
    16,
)  # RFC 3526 §3, group 14
_MODP_3072 = int(
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
)  # RFC 3526 §4, group 15


class _FiniteFieldPrivate:
    def __init__(self, prime: int, exponent: int) -> None:
        self._prime = prime
        self._exponent = exponent
        self._size = (prime.bit_length() + 7) // 8
        self.public_value = pow(2, exponent, prime).to_bytes(self._size, "big")

    def __repr__(self) -> str:
        return f"<finite-field private value, {self._prime.bit_length()} bits>"

    def agree(self, peer_public_value: bytes) -> bytes:
        if len(peer_public_value) != self._size:
            raise KeyAgreementError("public value of the wrong length")
        peer = int.from_bytes(peer_public_value, "big")
        # §4.4.1.1: pvr and pvi of 0, 1 and p-1 must be refused (they force the result).
        if not 1 < peer < self._prime - 1:
            raise KeyAgreementError("public value 0, 1 or p-1")
        return pow(peer, self._exponent, self._prime).to_bytes(self._size, "big")


class _X25519Private:
    def __init__(self) -> None:
        self._key = x25519.X25519PrivateKey.generate()
        self.public_value = self._key.public_key().public_bytes_raw()

    def __repr__(self) -> str:
        return "<X25519 private value>"

    def agree(self, peer_public_value: bytes) -> bytes:
        try:
            peer = x25519.X25519PublicKey.from_public_bytes(peer_public_value)
            return self._key.exchange(peer)
        except ValueError:  # wrong length, or a low-order point (all-zero result)
            raise KeyAgreementError("unusable X25519 public value") from None


class _P256Private:
    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        numbers = self._key.public_key().public_numbers()
        self.public_value = numbers.x.to_bytes(32, "big") + numbers.y.to_bytes(32, "big")

    def __repr__(self) -> str:
        return "<P-256 private value>"

    def agree(self, peer_public_value: bytes) -> bytes:
        if len(peer_public_value) != 64:
            raise KeyAgreementError("public value of the wrong length")
        try:
            peer = ec.EllipticCurvePublicKey.from_encoded_point(
                ec.SECP256R1(), b"\x04" + peer_public_value
            )
            # §5.1.5: the result is the x coordinate of the shared point.
            return self._key.exchange(ec.ECDH(), peer)
        except ValueError:  # not a point of the curve
            raise KeyAgreementError("public value not on P-256") from None


@attrs.frozen
class KeyAgreement:
    """One key agreement type (§5.1.5): its name, the size of its public value and how fast it
    is (lower first: the initiator prefers the faster of both sides' first choices, §4.1.2)."""

    name: str
    public_value_size: int
    speed_rank: int
    _make: Callable[[RandomBytes], PrivateValue] = attrs.field(repr=False)

    def generate(self, random_bytes: RandomBytes) -> PrivateValue:
        return self._make(random_bytes)


def _modp(prime: int, exponent_bits: int) -> Callable[[RandomBytes], PrivateValue]:
    def make(random_bytes: RandomBytes) -> PrivateValue:
        # §5.1.5: the exponent SHOULD be twice the AES key length; 512 bits covers AES-256.
        exponent = int.from_bytes(random_bytes(exponent_bits // 8), "big") | 1 << (
            exponent_bits - 1
        )
        return _FiniteFieldPrivate(prime, exponent)

    return make


# §4.1.2 and the post-quantum draft rank DH2k, X25519, EC25, DH3k from fastest to slowest.
KEY_AGREEMENTS: dict[str, KeyAgreement] = {
    agreement.name: agreement
    for agreement in (
        KeyAgreement("DH2k", 256, 0, _modp(_MODP_2048, 512)),
        KeyAgreement("X255", 32, 1, lambda _random: _X25519Private()),
        KeyAgreement("EC25", 64, 2, lambda _random: _P256Private()),
        KeyAgreement("DH3k", 384, 3, _modp(_MODP_3072, 512)),
    )
}


# -- SRTP parameters from the negotiated cipher and auth tag (§5.1.3, §5.1.4) ---------------------

CIPHER_KEY_BITS = {"AES1": 128, "AES3": 256}

SRTP_SUITES = {
    ("AES1", "HS80"): "AES_CM_128_HMAC_SHA1_80",
    ("AES1", "HS32"): "AES_CM_128_HMAC_SHA1_32",
    ("AES3", "HS80"): "AES_256_CM_HMAC_SHA1_80",
    ("AES3", "HS32"): "AES_256_CM_HMAC_SHA1_32",
}
SRTP_SALT_BITS = 112


# -- SAS rendering (§5.1.6, §7) -------------------------------------------------------------------

_BASE32 = "ybndrfg8ejkmcpqxot1uwisza345h769"


def render_sas(sas_type: str, sashash: bytes) -> str:
    """The SAS the users compare: from the leftmost 32 bits of sashash (sasvalue), B32 is four
    characters of the z-base-32 alphabet for its leftmost 20 bits; B256 two PGP words for its
    leftmost 16 (the form linphone shows, joined by a colon)."""
    value = int.from_bytes(sashash[:4], "big")
    if sas_type == "B32 ":
        return "".join(_BASE32[(value >> (27 - 5 * i)) & 31] for i in range(4))
    if sas_type == "B256":
        return f"{EVEN_WORDS[sashash[0]]}:{ODD_WORDS[sashash[1]]}"
    raise ValueError(f"unknown SAS type {sas_type!r}")
