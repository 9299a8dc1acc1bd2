"""HTTP basic authentication of scrapes (RFC 7617), as Prometheus' ``basic_auth`` sends it.

Theory of operation. ``[plugins.metrics] basic_auth_users`` maps a user name to a password
hash, never a password: ``scrypt$N$r$p$SALT$HASH`` (RFC 7914 scrypt from hashlib; SALT and HASH
base64 without padding), made by ``voipgw metrics-password``. scrypt is slow on purpose (tens of
milliseconds and 16 MiB per check at the default N = 2^14, r = 8), which is what makes a stolen
config file expensive to guess from, and also what a scrape every 5 s must not pay each time:
like Prometheus' exporter-toolkit, a (user, password) pair once verified is remembered in
memory, keyed by a keyed fast hash of user, password and stored hash (:class:`VerifiedCache`,
bounded). A wrong password is never remembered, so guessing always pays scrypt; the server runs
it in a worker thread, one at a time, so it stalls neither SIP nor the other scrapes.

An unknown user costs the same scrypt as a known one (against a fixed dummy hash), so the time of
an answer does not tell which user names exist.

Sans-IO: no sockets, no trio; the server (:mod:`.server`) calls :meth:`BasicAuth.cached` and
:meth:`BasicAuth.remember` in its task and only :meth:`BasicAuth.matches`, which changes nothing,
in a worker thread, so the cache is never touched by two threads.
"""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import os
from collections.abc import Mapping

import attrs

#: Cost parameters of new hashes (RFC 7914 §2 defines them): N = 2^14, r = 8, p = 1, 16 MiB
#: and tens of milliseconds, the scrypt paper's choice for interactive logins; a scraper pays it
#: only until its pair is cached.
DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
HASH_BYTES = 32
SCHEME = "scrypt"

# Bounds on parameters read from the config: a typo must not make every check take a minute
# or a gigabyte (OpenSSL's scrypt needs 128 * N * r octets).
_MIN_LOG2_N, _MAX_LOG2_N = 10, 20
_MAX_R, _MAX_P = 32, 16
_MAX_MEMORY = 256 * 1024 * 1024
_MIN_SALT, _MAX_FIELD = 8, 256

#: The longest Authorization header value read; a user name and password fit many times over.
MAX_AUTHORIZATION = 1024
#: How many verified (user, password) pairs are remembered (a few Prometheus servers and people).
CACHE_SIZE = 64


class PasswordHashError(ValueError):
    """A password hash that cannot be used. The message says what is wrong with it, never the
    hash itself."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str, field: str) -> bytes:
    if not text or len(text) > _MAX_FIELD:
        raise PasswordHashError(f"{field}: expected base64 of at most {_MAX_FIELD} characters")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise PasswordHashError(f"{field}: not base64") from None


@attrs.frozen(repr=False)
class PasswordHash:
    """A parsed ``scrypt$N$r$p$SALT$HASH``. Its repr shows the parameters only."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """Read a hash as ``voipgw metrics-password`` writes it; PasswordHashError says why
        not (naming the field, never echoing the text)."""
        fields = text.split("$")
        if len(fields) != 6 or fields[0] != SCHEME:
            raise PasswordHashError(
                "expected scrypt$N$r$p$SALT$HASH as voipgw metrics-password prints it"
            )
        numbers: list[int] = []
        for name, value in zip(("N", "r", "p"), fields[1:4], strict=True):
            if not value.isascii() or not value.isdigit() or len(value) > 8:
                raise PasswordHashError(f"{name}: expected a positive integer")
            numbers.append(int(value))
        n, r, p = numbers
        if n & (n - 1) or not 2**_MIN_LOG2_N <= n <= 2**_MAX_LOG2_N:
            raise PasswordHashError(
                f"N: expected a power of two from 2^{_MIN_LOG2_N} to 2^{_MAX_LOG2_N}"
            )
        if not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P:
            raise PasswordHashError(f"r, p: expected r 1-{_MAX_R} and p 1-{_MAX_P}")
        if 128 * n * r > _MAX_MEMORY:
            raise PasswordHashError(f"N, r: need more than {_MAX_MEMORY >> 20} MiB per check")
        salt = _unb64(fields[4], "SALT")
        digest = _unb64(fields[5], "HASH")
        if len(salt) < _MIN_SALT:
            raise PasswordHashError(f"SALT: expected at least {_MIN_SALT} octets")
        if len(digest) < 16:
            raise PasswordHashError("HASH: expected at least 16 octets")
        return cls(n, r, p, salt, digest)

    @classmethod
    def make(
        cls,
        password: str,
        *,
        salt: bytes | None = None,
        n: int = DEFAULT_N,
        r: int = DEFAULT_R,
        p: int = DEFAULT_P,
    ) -> PasswordHash:
        """Hash ``password`` (UTF-8, RFC 7617 §2.1) with a new random salt."""
        salt = os.urandom(SALT_BYTES) if salt is None else salt
        return cls(n, r, p, salt, _scrypt(password.encode(), salt, n, r, p, HASH_BYTES))

    def encode(self) -> str:
        """The config form, ``scrypt$N$r$p$SALT$HASH``."""
        return f"{SCHEME}${self.n}${self.r}${self.p}${_b64(self.salt)}${_b64(self.digest)}"

    def matches(self, password: bytes) -> bool:
        """Whether ``password`` hashes to this (slow: the whole scrypt; constant-time compare)."""
        computed = _scrypt(password, self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(computed, self.digest)

    def __repr__(self) -> str:
        return f"PasswordHash(scrypt N={self.n} r={self.r} p={self.p})"


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    # OpenSSL refuses when its 128 * r * (N + p + 2) octets pass maxmem (default 32 MiB): allow
    # what the parameters need, which parse() has bounded.
    maxmem = 128 * r * (n + p + 2) + 1024 * 1024
    return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=length)


def parse_basic_credentials_untrusted(value: bytes) -> tuple[str, str] | None:
    """(user, password) from an ``Authorization: Basic <base64>`` header value (RFC 7617 §2),
    or None when it is not one: another scheme, not base64, no colon, not UTF-8, or longer than
    :data:`MAX_AUTHORIZATION`. The user is what precedes the first colon (§2: a user-id holds
    none); the password may hold any."""
    if len(value) > MAX_AUTHORIZATION:
        return None
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic":  # RFC 9110 §11.1: the scheme is case-insensitive
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    try:
        # RFC 7617 §2.1: we announce charset="UTF-8", so both parts are UTF-8.
        return user.decode("utf-8"), password.decode("utf-8")
    except UnicodeDecodeError:
        return None


class VerifiedCache:
    """The (user, password) pairs verified lately, at most ``size``, least recently used leaving
    first. Keys are HMAC-SHA-256 under a key made at start-up, so memory holds no fast hash an
    attacker could test guesses against without that key."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._key = os.urandom(32)
        self._entries: collections.OrderedDict[bytes, None] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def _tag(self, user: str, password: str, stored: PasswordHash) -> bytes:
        message = b"\0".join([user.encode(), password.encode(), stored.encode().encode()])
        return hmac.digest(self._key, message, "sha256")

    def __contains__(self, item: tuple[str, str, PasswordHash]) -> bool:
        tag = self._tag(*item)
        if tag in self._entries:
            self._entries.move_to_end(tag)
            return True
        return False

    def add(self, user: str, password: str, stored: PasswordHash) -> None:
        self._entries[self._tag(user, password, stored)] = None
        self._entries.move_to_end(self._tag(user, password, stored))
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


# What an unknown user's password is checked against, so that it costs what a known one does.
_DUMMY = PasswordHash(DEFAULT_N, DEFAULT_R, DEFAULT_P, b"\0" * SALT_BYTES, b"\0" * HASH_BYTES)


class BasicAuth:
    """Checks credentials against ``users`` (name -> :class:`PasswordHash`)."""

    def __init__(self, users: Mapping[str, PasswordHash], *, cache_size: int = CACHE_SIZE) -> None:
        self.users = dict(users)
        self.cache = VerifiedCache(cache_size)

    def cached(self, user: str, password: str) -> bool:
        """Whether this pair was verified lately (fast; call it before :meth:`matches`)."""
        stored = self.users.get(user)
        return stored is not None and (user, password, stored) in self.cache

    def matches(self, user: str, password: str) -> bool:
        """The slow check (scrypt), touching no state: the server runs it in a worker thread
        and then :meth:`remember` s a pair that passed, in its own thread."""
        stored = self.users.get(user)
        return (stored or _DUMMY).matches(password.encode()) and stored is not None

    def remember(self, user: str, password: str) -> None:
        """Cache a pair :meth:`matches` accepted."""
        self.cache.add(user, password, self.users[user])

    def verify(self, user: str, password: str) -> bool:
        """:meth:`matches`, then :meth:`remember` when it does (one thread)."""
        ok = self.matches(user, password)
        if ok:
            self.remember(user, password)
        return ok
