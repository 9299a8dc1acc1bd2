"""Stateless digest nonces and nonce-count replay protection (RFC 7616 §3.3, §3.4).

A nonce is ``base64url(version | issued_ms | salt | mac)`` where ``mac`` is an HMAC-SHA-256 over
the realm and the rest, keyed by a secret the gateway injects. Any node holding the secret can
check a nonce without remembering it, and its issue time gives expiry (answered with
``stale=true``, RFC 7616 §3.3). The salt comes from an injected entropy source, so two challenges
issued at the same instant differ and tests are deterministic.

Replays are caught by remembering, per nonce, the highest nonce-count seen (RFC 7616 §3.4: a
repeated ``nc`` is a replay). That memory is a bounded LRU; a nonce whose entry was evicted can no
longer be checked for replays, so any unknown nonce issued no later than the newest evicted one is
refused as stale and the client simply gets a fresh nonce.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable

import attrs

_VERSION = 1
_SALT_BYTES = 8
_MAC_BYTES = 16
_RAW_BYTES = 1 + 8 + _SALT_BYTES + _MAC_BYTES  # 33 bytes -> 44 base64 characters, no padding
_ENCODED_LENGTH = 44
_NONCE_LABEL = b"voipgw digest nonce v1\x00"
_OPAQUE_LABEL = b"voipgw digest opaque v1\x00"
MIN_SECRET_BYTES = 16


class NonceStatus(enum.Enum):
    """What a presented nonce is: ours and current, ours but too old (or from the future after a
    clock step), or not ours at all (forged, garbled, or signed with another secret)."""

    VALID = "valid"
    STALE = "stale"
    INVALID = "invalid"


@attrs.frozen
class NonceCheck:
    status: NonceStatus
    issued_at: float | None = None


class NonceIssuer:
    """Issues and checks HMAC-signed nonces for digest challenges.

    ``secret`` must be at least 16 random bytes and is never exposed. ``entropy(n)`` returns ``n``
    unpredictable bytes (``os.urandom`` in production). ``lifetime`` is how long a nonce stays
    valid; ``max_clock_skew`` tolerates an issue time slightly in the future (clock steps, or
    nodes sharing the secret).
    """

    def __init__(
        self,
        secret: bytes,
        entropy: Callable[[int], bytes],
        *,
        lifetime: float = 300.0,
        max_clock_skew: float = 5.0,
    ) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"nonce secret must be at least {MIN_SECRET_BYTES} bytes")
        if lifetime <= 0:
            raise ValueError("nonce lifetime must be positive")
        self._secret = secret
        self._entropy = entropy
        self.lifetime = lifetime
        self.max_clock_skew = max_clock_skew

    def __repr__(self) -> str:
        return f"<NonceIssuer lifetime={self.lifetime}>"

    def issue(self, realm: str, *, now: float) -> str:
        """A fresh nonce for ``realm`` carrying ``now`` as its issue time."""
        if now < 0:
            raise ValueError("now must not be negative")
        salt = self._entropy(_SALT_BYTES)
        if len(salt) != _SALT_BYTES:
            raise ValueError(f"entropy source returned {len(salt)} bytes, wanted {_SALT_BYTES}")
        body = bytes([_VERSION]) + int(now * 1000).to_bytes(8, "big") + salt
        raw = body + self._mac(realm, body)
        return base64.urlsafe_b64encode(raw).decode("ascii")

    def check(self, nonce: str, realm: str, *, now: float) -> NonceCheck:
        """Whether ``nonce`` (untrusted, from credentials) is one we issued for ``realm``, and
        whether it is still within its lifetime."""
        if len(nonce) != _ENCODED_LENGTH:
            return NonceCheck(NonceStatus.INVALID)
        try:
            raw = base64.b64decode(nonce.encode("ascii"), altchars=b"-_", validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return NonceCheck(NonceStatus.INVALID)
        if len(raw) != _RAW_BYTES or raw[0] != _VERSION:
            return NonceCheck(NonceStatus.INVALID)
        if base64.urlsafe_b64encode(raw).decode("ascii") != nonce:
            # "+" and "/" decode like "-" and "_": accept one spelling only, so a nonce has
            # exactly one string form (the replay memory is keyed by it).
            return NonceCheck(NonceStatus.INVALID)
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        if not hmac.compare_digest(mac, self._mac(realm, body)):
            return NonceCheck(NonceStatus.INVALID)
        issued_at = int.from_bytes(body[1:9], "big") / 1000
        if now - issued_at > self.lifetime or issued_at - now > self.max_clock_skew:
            return NonceCheck(NonceStatus.STALE, issued_at)
        return NonceCheck(NonceStatus.VALID, issued_at)

    def opaque(self, realm: str) -> str:
        """The ``opaque`` value of our challenges for ``realm`` (RFC 7616 §3.3): constant per
        realm and secret, so any node can check it."""
        mac = hmac.new(self._secret, _OPAQUE_LABEL + realm.encode("utf-8"), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:12]).decode("ascii")

    def _mac(self, realm: str, body: bytes) -> bytes:
        message = _NONCE_LABEL + realm.encode("utf-8") + b"\x00" + body
        return hmac.new(self._secret, message, hashlib.sha256).digest()[:_MAC_BYTES]


class NcVerdict(enum.Enum):
    FRESH = "fresh"
    REPLAYED = "replayed"
    FORGOTTEN = "forgotten"  # issued before the newest evicted entry: cannot tell, refuse as stale


_SINGLE_USE = 1 << 32  # above any 8-hex-digit nonce-count


class NonceCounts:
    """Highest nonce-count seen per nonce, in an LRU of at most ``max_nonces`` entries.

    Call :meth:`verdict` before and :meth:`record` only after a response verified, so a peer
    that does not know the password cannot burn nonce-counts of a legitimate client. A request
    without qop (RFC 2069) has no nonce-count: its nonce becomes single-use.
    """

    def __init__(self, max_nonces: int = 10_000) -> None:
        if max_nonces < 1:
            raise ValueError("max_nonces must be at least 1")
        self.max_nonces = max_nonces
        self._highest: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._evicted_watermark: float | None = None

    def __len__(self) -> int:
        return len(self._highest)

    def verdict(self, nonce: str, nc: int | None, issued_at: float) -> NcVerdict:
        """Whether ``nc`` (None: no qop) may be accepted for ``nonce`` issued at ``issued_at``."""
        entry = self._highest.get(nonce)
        if entry is None:
            if self._evicted_watermark is not None and issued_at <= self._evicted_watermark:
                return NcVerdict.FORGOTTEN
            return NcVerdict.FRESH if nc is None or nc > 0 else NcVerdict.REPLAYED
        highest, _ = entry
        if nc is None or nc <= highest:
            return NcVerdict.REPLAYED
        return NcVerdict.FRESH

    def record(self, nonce: str, nc: int | None, issued_at: float) -> None:
        """Remember that ``nc`` was accepted for ``nonce``."""
        self._highest[nonce] = (_SINGLE_USE if nc is None else nc, issued_at)
        self._highest.move_to_end(nonce)
        while len(self._highest) > self.max_nonces:
            _, (_, evicted_issued_at) = self._highest.popitem(last=False)
            if self._evicted_watermark is None or evicted_issued_at > self._evicted_watermark:
                self._evicted_watermark = evicted_issued_at
