"""Digest hash algorithms (RFC 7616 §3.2, RFC 8760 §2) and the stored secret HA1.

The gateway keeps no passwords: for each (realm, algorithm) an account stores
``HA1 = H(username ":" realm ":" password)`` (RFC 7616 §3.4.2, RFC 8760 §3), which is all the
server side of digest needs. HA1 is password-equivalent for that realm: it is a secret, never
logged and never part of a repr.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes


def _hashlib_hex(name: str) -> Callable[[bytes], str]:
    def digest(data: bytes) -> str:
        return hashlib.new(name, data).hexdigest()

    return digest


def _sha512_256_hex(data: bytes) -> str:
    # SHA-512/256 is SHA-512 with its own initial hash values, truncated (FIPS 180-4 §5.3.6.2);
    # it is NOT sha512(data)[:64]. hashlib only has it when its OpenSSL exposes "sha512_256", so
    # fall back to cryptography's implementation of the same function.
    if "sha512_256" in hashlib.algorithms_available:
        return hashlib.new("sha512_256", data).hexdigest()
    h = hashes.Hash(hashes.SHA512_256())
    h.update(data)
    return h.finalize().hex()


class DigestAlgorithm(enum.Enum):
    """The algorithms a SIP digest server may offer (RFC 8760 §2.1). Values are the wire tokens."""

    MD5 = "MD5"
    SHA_256 = "SHA-256"
    SHA_512_256 = "SHA-512-256"

    @classmethod
    def from_token(cls, token: str) -> DigestAlgorithm | None:
        """The algorithm for a wire token (case-insensitive, RFC 7616 §3.3), or None if unknown.

        The ``-sess`` variants are not supported and give None.
        """
        return _BY_TOKEN.get(token.lower())

    def hexdigest(self, data: bytes) -> str:
        """Lower-case hex of H(data) (RFC 7616 §3.4.1)."""
        return _HEX[self](data)

    def h(self, text: str) -> str:
        """H(text) with text encoded as UTF-8 (RFC 7616 §3.4.4 charset)."""
        return self.hexdigest(text.encode("utf-8"))

    @property
    def hex_length(self) -> int:
        """Length of a response/HA1 in hex characters."""
        return 32 if self is DigestAlgorithm.MD5 else 64


_HEX: dict[DigestAlgorithm, Callable[[bytes], str]] = {
    DigestAlgorithm.MD5: _hashlib_hex("md5"),
    DigestAlgorithm.SHA_256: _hashlib_hex("sha256"),
    DigestAlgorithm.SHA_512_256: _sha512_256_hex,
}

_BY_TOKEN: dict[str, DigestAlgorithm] = {a.value.lower(): a for a in DigestAlgorithm}

ALL_ALGORITHMS: tuple[DigestAlgorithm, ...] = tuple(DigestAlgorithm)


def compute_ha1(algorithm: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """HA1 = H(username:realm:password) (RFC 7616 §3.4.2, RFC 8760 §3), lower-case hex."""
    return algorithm.h(f"{username}:{realm}:{password}")


def compute_response(
    algorithm: DigestAlgorithm,
    ha1: str,
    *,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The digest ``response`` (lower-case hex) for HA1 and a request.

    With ``qop`` (RFC 7616 §3.4.1): ``KD(HA1, nonce:nc:cnonce:qop:HA2)``, where ``nc``, ``cnonce``
    and ``qop`` enter the hash exactly as written on the wire. Without (RFC 2069 §2.1.2):
    ``KD(HA1, nonce:HA2)``. ``HA2 = H(method:uri)`` (qop=auth) and ``KD(s, d) = H(s:d)``.
    """
    ha2 = algorithm.h(f"{method}:{uri}")
    if qop is None:
        return algorithm.h(f"{ha1}:{nonce}:{ha2}")
    if nc is None or cnonce is None:
        raise ValueError("qop needs nc and cnonce")
    return algorithm.h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
