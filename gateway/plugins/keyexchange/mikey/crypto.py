"""MIKEY's cryptography: the MIKEY-1 PRF and key derivation (RFC 3830 §4.1), KEMAC encryption
and MAC (§4.2.4, §6.2), and the Diffie-Hellman groups of the DH payload (§6.4, RFC 4650).

Every function is pure; randomness comes in as arguments. The finite-field groups are the
OAKLEY groups 1 and 2 (RFC 2409 §6.1, §6.2) and 5 (RFC 3526 §2), generator 2, computed with
Python's ``pow`` (``cryptography`` deprecates finite-field DH). ``pow`` is not constant-time; a
private exponent serves one exchange only, so timing could reveal at most part of a value whose
keys are already in use for that one call.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from gateway.plugins.keyexchange.mikey.payloads import (
    ENCR_AES_CM_128,
    ENCR_AES_KW_128,
    ENCR_NULL,
    MAC_HMAC_SHA1_160,
    MAC_NULL,
    LocalMikeyError,
    MikeyError,
)

__all__ = [
    "DH_GROUPS",
    "LABEL_KEMAC_AUTH",
    "LABEL_KEMAC_ENCR",
    "LABEL_KEMAC_SALT",
    "LABEL_TEK",
    "LABEL_TEK_SALT",
    "dh_public",
    "dh_shared",
    "kemac_decrypt",
    "kemac_encrypt",
    "kemac_keys",
    "mac",
    "mac_valid",
    "prf",
    "tek_and_salt",
]

# RFC 3830 §4.1.3 (TGK -> TEK and friends) and §4.1.4 (PSK/envelope key -> KEMAC keys).
LABEL_TEK = 0x2AD01C64
LABEL_TEK_SALT = 0x39A2C14B
LABEL_TEK_AUTH = 0x1B5C7973
LABEL_TEK_ENCR = 0x15798CEF
LABEL_KEMAC_ENCR = 0x150533E1
LABEL_KEMAC_AUTH = 0x2D22AC75
LABEL_KEMAC_SALT = 0x29B88916

KEMAC_ENCR_KEY_LENGTH = 16  # AES-128 (§4.2.4)
KEMAC_AUTH_KEY_LENGTH = 20  # HMAC-SHA-1 (§4.2.4)
KEMAC_SALT_LENGTH = 14  # 112 bits for AES-CM (§4.2.3)

_HMAC_BLOCK = 20  # HMAC-SHA-1 output, 160 bits
_INKEY_CHUNK = 32  # §4.1.2: the PRF's inkey is split into 256-bit pieces


def _hmac_sha1(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha1).digest()


def _p(secret: bytes, label: bytes, blocks: int) -> bytes:
    """P(s, label, m) of RFC 3830 §4.1.2: HMAC(s, A_1 || label) || ... with A_0 = label and
    A_i = HMAC(s, A_{i-1})."""
    out = bytearray()
    a = label
    for _ in range(blocks):
        a = _hmac_sha1(secret, a)
        out += _hmac_sha1(secret, a + label)
    return bytes(out)


def prf(inkey: bytes, label: bytes, length: int) -> bytes:
    """PRF(inkey, label) of RFC 3830 §4.1.2 (MIKEY-1), ``length`` octets: ``inkey`` split into
    256-bit pieces s_1..s_n (the last may be shorter), P(s_i, label, m) XORed together, with
    m = ceil(length / 160 bits), truncated. An inkey that is an exact multiple of 256 bits has
    exactly that many full pieces (minisip's libmikey turns its last piece into an empty key:
    not done here). No official test vectors exist; the layout follows the digest of RFC 3830
    §4.1.2 (text not available); tests/unit/keyexchange/test_mikey_rfc_vectors.py checks it."""
    if not inkey or length <= 0:
        raise LocalMikeyError("the PRF needs a key and a positive output length")
    blocks = -(-length // _HMAC_BLOCK)
    out = bytes(blocks * _HMAC_BLOCK)
    for start in range(0, len(inkey), _INKEY_CHUNK):
        piece = _p(inkey[start : start + _INKEY_CHUNK], label, blocks)
        out = bytes(x ^ y for x, y in zip(out, piece, strict=True))
    return out[:length]


def _label(constant: int, cs_id: int, csb_id: int, rand: bytes) -> bytes:
    # §4.1.3/§4.1.4: constant (32 bits) || cs_id (8 bits) || CSB ID (32 bits) || RAND
    return constant.to_bytes(4, "big") + bytes([cs_id]) + csb_id.to_bytes(4, "big") + rand


def tek_and_salt(
    tgk: bytes, cs_id: int, csb_id: int, rand: bytes, key_length: int, salt_length: int
) -> tuple[bytes, bytes]:
    """The SRTP master key (TEK) and master salt of crypto session ``cs_id`` (1-based) from
    the TGK (RFC 3830 §4.1.3)."""
    if not 0 < cs_id < 0xFF:
        raise LocalMikeyError("a cs_id is 1..254")
    tek = prf(tgk, _label(LABEL_TEK, cs_id, csb_id, rand), key_length)
    salt = prf(tgk, _label(LABEL_TEK_SALT, cs_id, csb_id, rand), salt_length)
    return tek, salt


def kemac_keys(psk: bytes, csb_id: int, rand: bytes) -> tuple[bytes, bytes, bytes]:
    """encr_key, auth_key and salt of a KEMAC from the pre-shared key (RFC 3830 §4.1.4: the
    cs_id octet is 0xFF)."""
    return (
        prf(psk, _label(LABEL_KEMAC_ENCR, 0xFF, csb_id, rand), KEMAC_ENCR_KEY_LENGTH),
        prf(psk, _label(LABEL_KEMAC_AUTH, 0xFF, csb_id, rand), KEMAC_AUTH_KEY_LENGTH),
        prf(psk, _label(LABEL_KEMAC_SALT, 0xFF, csb_id, rand), KEMAC_SALT_LENGTH),
    )


def _aes_cm(key: bytes, salt: bytes, csb_id: int, timestamp: bytes, data: bytes) -> bytes:
    # §4.2.3 (as implemented by minisip; the RFC text was not available): the IV is
    # (S XOR (0x0000 || CSB ID || T)) || 0x0000, S the 112-bit salt, T the 64-bit T value.
    if len(timestamp) != 8:
        raise MikeyError("MIKEY AES-CM KEMAC needs an NTP timestamp (8 octets)", error_no=1)
    mixed = bytes(2) + csb_id.to_bytes(4, "big") + timestamp
    iv = bytes(a ^ b for a, b in zip(salt, mixed, strict=True)) + bytes(2)
    encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return encryptor.update(data) + encryptor.finalize()


def kemac_encrypt(
    alg: int, encr_key: bytes, salt: bytes, csb_id: int, timestamp: bytes, plaintext: bytes
) -> bytes:
    """The KEMAC's encrypted data (§6.2): NULL (as is), AES-CM-128 (§4.2.3) or AES-KW-128 (RFC
    3394 key wrap). AES-KW needs a multiple of 64 bits: the Key-data chain is zero-padded to it
    (the RFC text that says how was not available; the parser accepts zero padding only)."""
    if alg == ENCR_NULL:
        return plaintext
    if alg == ENCR_AES_CM_128:
        return _aes_cm(encr_key, salt, csb_id, timestamp, plaintext)
    if alg == ENCR_AES_KW_128:
        padded = plaintext + bytes(-len(plaintext) % 8)
        padded += bytes(max(0, 16 - len(padded)))
        return aes_key_wrap(encr_key, padded)
    raise LocalMikeyError(f"KEMAC encryption algorithm {alg} is unknown")


def kemac_decrypt(
    alg: int, encr_key: bytes, salt: bytes, csb_id: int, timestamp: bytes, data: bytes
) -> bytes:
    """The KEMAC's Key-data chain from its encrypted data. Raises :class:`MikeyError` for an
    unknown algorithm (error 4, invalid EA) or data that does not unwrap."""
    if alg == ENCR_NULL:
        return data
    if alg == ENCR_AES_CM_128:
        return _aes_cm(encr_key, salt, csb_id, timestamp, data)
    if alg == ENCR_AES_KW_128:
        if len(data) < 24 or len(data) % 8:
            raise MikeyError("MIKEY AES-KW KEMAC data is not a wrapped key", error_no=4)
        try:
            return aes_key_unwrap(encr_key, data)
        except InvalidUnwrap:
            raise MikeyError(
                "MIKEY KEMAC does not unwrap (wrong pre-shared key?)", error_no=0
            ) from None
    raise MikeyError(f"MIKEY KEMAC encryption algorithm {alg} is not supported", error_no=4)


def mac(alg: int, auth_key: bytes, data: bytes) -> bytes:
    """The MAC of ``data`` (§6.2, §6.9): nothing for NULL, full HMAC-SHA-1 (160 bits)."""
    if alg == MAC_NULL:
        return b""
    if alg == MAC_HMAC_SHA1_160:
        return _hmac_sha1(auth_key, data)
    raise LocalMikeyError(f"MAC algorithm {alg} is unknown")


def mac_valid(alg: int, auth_key: bytes, data: bytes, received: bytes) -> bool:
    """Whether ``received`` is the MAC of ``data`` (compared in constant time)."""
    return hmac.compare_digest(mac(alg, auth_key, data), received)


# --------------------------------------------------------------------------------------------
# Diffie-Hellman groups (DH payload group numbers, §6.4)

# fmt: off
_OAKLEY_1 = int(  # RFC 2409 §6.1: 2^768 - 2^704 - 1 + 2^64 * ([2^638 pi] + 149686)
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A63A3620FFFFFFFFFFFFFFFF", 16)
_OAKLEY_2 = int(  # RFC 2409 §6.2: 2^1024 - 2^960 - 1 + 2^64 * ([2^894 pi] + 129093)
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE65381FFFFFFFFFFFFFFFF", 16)
_OAKLEY_5 = int(  # RFC 3526 §2: 2^1536 - 2^1472 - 1 + 2^64 * ([2^1406 pi] + 741804)
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74"
    "020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F1437"
    "4FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED"
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF05"
    "98DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB"
    "9ED529077096966D670C354E4ABC9804F1746C08CA237327FFFFFFFFFFFFFFFF", 16)
# fmt: on

DH_GROUPS: dict[int, int] = {0: _OAKLEY_5, 1: _OAKLEY_1, 2: _OAKLEY_2}
"""DH payload group number -> prime (generator 2)."""
DH_GROUP_NAMES = {0: "OAKLEY5", 1: "OAKLEY1", 2: "OAKLEY2"}
DH_EXPONENT_LENGTH = 32  # 256-bit private exponents: beyond each group's strength


def _prime(group: int) -> int:
    prime = DH_GROUPS.get(group)
    if prime is None:
        raise LocalMikeyError(f"DH group {group} is unknown")
    return prime


def dh_public(group: int, private: bytes) -> bytes:
    """g^x mod p for the private exponent ``private``, as long as the prime."""
    prime = _prime(group)
    exponent = int.from_bytes(private, "big")
    if exponent < 2:
        raise LocalMikeyError("a DH private exponent must be at least 2")
    return pow(2, exponent, prime).to_bytes((prime.bit_length() + 7) // 8, "big")


def dh_shared(group: int, private: bytes, peer_public: bytes) -> bytes:
    """The shared secret (the TGK, RFC 4650 §3) from our exponent and the peer's value, as long
    as the prime. Raises :class:`MikeyError` (error 6, invalid DH) for a value outside 2..p-2
    (RFC 2631 §2.1.5's range check: 0, 1 and p-1 would give a known secret)."""
    prime = _prime(group)
    length = (prime.bit_length() + 7) // 8
    value = int.from_bytes(peer_public, "big")
    if len(peer_public) != length or not 2 <= value <= prime - 2:
        raise MikeyError("MIKEY DH value is out of range", error_no=6)
    shared = pow(value, int.from_bytes(private, "big"), prime)
    return shared.to_bytes(length, "big")
