"""Server side of SIP digest authentication (RFC 3261 §22, RFC 7616, RFC 8760), sans-IO.

Theory of operation. A REGISTER is challenged with 401 and ``WWW-Authenticate``; an INVITE at the
edge with 407 and ``Proxy-Authenticate`` (RFC 3261 §22.2, §22.3); :class:`AuthKind` names the pair.
A challenge is one header per offered algorithm, strongest first (RFC 8760 §2.3: SHA-256 before
MD5), all with the same nonce, ``qop="auth"`` and ``opaque``. The client answers with
(Proxy-)Authorization credentials; the server picks the ones for its realm (RFC 3261 §22.4),
looks up the stored HA1 for (username, realm, algorithm) and checks::

    response = KD(HA1, nonce ":" nc ":" cnonce ":" qop ":" HA2)   (RFC 7616 §3.4.1)
    HA2      = H(method ":" digest-uri)                            (qop=auth)
    KD(s, d) = H(s ":" d)

RFC 2069 style answers without qop (``KD(HA1, nonce ":" HA2)``) are accepted only when configured.
The response is checked before the nonce and the opaque: a correct response over an expired or
unknown nonce, or with another node's (or an earlier start's) opaque, means the client knows the
secret and just needs a fresh challenge (``stale=true``, RFC 7616 §3.3); anything else is bad
credentials. Outcomes are values, never exceptions: the peer's bad input is
an ordinary result that carries the challenge to send back.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable, Sequence

import attrs

from gateway.core.auth.algorithms import DigestAlgorithm, compute_response
from gateway.core.auth.credentials import (
    DigestCredentials,
    MalformedCredentials,
    parse_credentials_untrusted,
    quote,
)
from gateway.core.auth.nonce import NcVerdict, NonceCounts, NonceIssuer, NonceStatus

__all__ = [
    "WRONG_RESPONSE",
    "AuthKind",
    "AuthOutcome",
    "AuthRejection",
    "Authenticated",
    "BadCredentials",
    "Challenge",
    "DigestAuthenticator",
    "DigestConfig",
    "DigestCredentials",
    "Ha1Lookup",
    "MalformedCredentials",
    "Stale",
    "UnknownUser",
    "parse_credentials_untrusted",
]


class AuthKind(enum.Enum):
    """Who challenges: the registrar/UAS (401) or the proxy-like edge (407)."""

    WWW = "www"
    PROXY = "proxy"

    @property
    def status(self) -> int:
        """401 Unauthorized (RFC 3261 §22.2) or 407 Proxy Authentication Required (§22.3)."""
        return 401 if self is AuthKind.WWW else 407

    @property
    def challenge_header(self) -> str:
        return "WWW-Authenticate" if self is AuthKind.WWW else "Proxy-Authenticate"

    @property
    def credentials_header(self) -> str:
        return "Authorization" if self is AuthKind.WWW else "Proxy-Authorization"


@attrs.frozen
class DigestConfig:
    """Digest settings for one realm.

    ``algorithms`` is the offer order (RFC 8760 §2.3: strongest first; SHA-256 then MD5 by
    default, since most deployed phones know only MD5). Accounts need an HA1 for each algorithm
    offered. ``allow_rfc2069`` accepts answers without qop (no replay protection beyond making
    the nonce single-use); leave it off unless a legacy device needs it.
    """

    realm: str
    algorithms: tuple[DigestAlgorithm, ...] = (DigestAlgorithm.SHA_256, DigestAlgorithm.MD5)
    nonce_lifetime: float = 300.0
    max_tracked_nonces: int = 10_000
    allow_rfc2069: bool = False
    max_credentials_headers: int = 8

    def __attrs_post_init__(self) -> None:
        if not self.algorithms:
            raise ValueError("at least one digest algorithm must be offered")
        if len(set(self.algorithms)) != len(self.algorithms):
            raise ValueError("digest algorithms are listed more than once")
        if not self.realm or any(c in self.realm for c in '"\\\r\n'):
            raise ValueError("realm must be non-empty and contain no quote, backslash or newline")


@attrs.frozen
class Authenticated:
    """The credentials verified: the request comes from ``username``."""

    username: str
    realm: str
    algorithm: DigestAlgorithm
    qop: str | None
    device_certificate: bool = False
    """Set by the registrar (registration.py), not here: the account is bound to device
    certificates and the connection presented one of them, a second factor beside the digest."""


@attrs.frozen
class AuthRejection:
    """Base of every negative outcome: answer ``status`` with ``challenges`` (one header value
    per offered algorithm) in the ``kind.challenge_header`` header."""

    kind: AuthKind
    challenges: tuple[str, ...]

    @property
    def status(self) -> int:
        return self.kind.status

    def response_headers(self) -> tuple[tuple[str, str], ...]:
        """Header fields to add to the 401/407 (e.g. ``make_response(..., extra=...)``)."""
        return tuple((self.kind.challenge_header, value) for value in self.challenges)


@attrs.frozen
class Challenge(AuthRejection):
    """No credentials for our realm: ask for them. Not a failure (the normal first round)."""


@attrs.frozen
class Stale(AuthRejection):
    """A correct response over an expired, unknown or forgotten nonce: challenge again with
    ``stale=true`` so the client retries with the new nonce without asking its user (RFC 7616
    §3.3). Not a failure."""

    username: str


WRONG_RESPONSE = "response does not match"
""":class:`BadCredentials` reason of a wrong password (or a guess): every other reason is a
client (or a proxy in its path) that does digest differently from us."""


@attrs.frozen
class BadCredentials(AuthRejection):
    """Credentials for our realm that do not verify (wrong password, replayed nonce-count,
    malformed, unsupported algorithm or qop ...). ``reason`` is for logs and never holds a
    secret. Counts as a failed attempt."""

    reason: str
    username: str | None = None


@attrs.frozen
class UnknownUser(AuthRejection):
    """No HA1 for the presented username (no such account, disabled, or no credential for this
    realm and algorithm). Answered exactly like bad credentials so the peer cannot tell the two
    apart; counts as a failed attempt."""

    username: str


AuthOutcome = Authenticated | Challenge | Stale | BadCredentials | UnknownUser

Ha1Lookup = Callable[[str, str, DigestAlgorithm], str | None]
"""``lookup(username, realm, algorithm) -> HA1 hex or None``; None for unknown or disabled users."""


class DigestAuthenticator:
    """Challenges and verifies digest credentials for one realm.

    ``secret`` keys the nonce HMAC (at least 16 random bytes; share it between nodes that must
    accept each other's nonces). ``entropy(n)`` returns ``n`` unpredictable bytes. The only state
    is the bounded nonce-count memory; time comes in as ``now``.
    """

    def __init__(
        self,
        config: DigestConfig,
        *,
        secret: bytes,
        entropy: Callable[[int], bytes],
    ) -> None:
        self.config = config
        self._nonces = NonceIssuer(secret, entropy, lifetime=config.nonce_lifetime)
        self._counts = NonceCounts(config.max_tracked_nonces)
        self._opaque = self._nonces.opaque(config.realm)

    def __repr__(self) -> str:
        return f"<DigestAuthenticator realm={self.config.realm!r}>"

    @property
    def tracked_nonces(self) -> int:
        """Nonces whose highest nonce-count is remembered now (at most
        ``max_tracked_nonces``)."""
        return len(self._counts)

    # -- challenges -------------------------------------------------------------------------

    def challenge_values(self, *, now: float, stale: bool = False) -> tuple[str, ...]:
        """One challenge header value per configured algorithm, sharing one fresh nonce."""
        nonce = self._nonces.issue(self.config.realm, now=now)
        values = []
        for algorithm in self.config.algorithms:
            value = (
                f"Digest realm={quote(self.config.realm)}, nonce={quote(nonce)}, "
                f'opaque={quote(self._opaque)}, algorithm={algorithm.value}, qop="auth"'
            )
            if stale:
                value += ", stale=true"
            values.append(value)
        return tuple(values)

    def challenge(self, kind: AuthKind, *, now: float) -> Challenge:
        """A fresh challenge (the answer to a request without credentials for our realm)."""
        return Challenge(kind, self.challenge_values(now=now))

    # -- verification -----------------------------------------------------------------------

    def select_credentials(
        self, header_values: Sequence[str], kind: AuthKind, *, now: float
    ) -> DigestCredentials | Challenge | BadCredentials:
        """Pick the Digest credentials for our realm among the request's
        ``kind.credentials_header`` values (RFC 3261 §22.4: one per realm may be present).

        Other schemes and other realms are ignored; if nothing is left the result is a
        :class:`Challenge`. A malformed Digest value is :class:`BadCredentials` unless a
        well-formed one for our realm is also present.
        """
        malformed: MalformedCredentials | None = None
        for value in header_values[: self.config.max_credentials_headers]:
            try:
                credentials = parse_credentials_untrusted(value)
            except MalformedCredentials as exc:
                malformed = exc
                continue
            if credentials is not None and credentials.realm == self.config.realm:
                return credentials
        if malformed is not None:
            return BadCredentials(kind, self.challenge_values(now=now), malformed.reason)
        return self.challenge(kind, now=now)

    def verify(
        self,
        credentials: DigestCredentials,
        ha1: str | None,
        *,
        kind: AuthKind,
        method: str,
        request_uri: str | None,
        now: float,
    ) -> AuthOutcome:
        """Check ``credentials`` against the stored ``ha1`` for their username, realm and
        algorithm (None: unknown user).

        ``method`` is the request method (HA2). ``request_uri`` is the Request-URI as text; when
        given, the credentials' ``uri`` must name it (RFC 7616 §3.4.6), compared without regard
        to case. On success the nonce-count is recorded so the same answer is not accepted twice.
        """
        username = credentials.username

        def bad(reason: str) -> BadCredentials:
            return BadCredentials(kind, self.challenge_values(now=now), reason, username)

        if credentials.realm != self.config.realm:
            return self.challenge(kind, now=now)
        algorithm = DigestAlgorithm.from_token(credentials.algorithm or "MD5")
        if algorithm is None or algorithm not in self.config.algorithms:
            return bad("algorithm not offered")
        if credentials.userhash:
            return bad("userhash not supported")
        qop = credentials.qop
        if qop is None:
            if not self.config.allow_rfc2069:
                return bad("no qop (RFC 2069 answers are not accepted)")
        elif qop.lower() != "auth":
            return bad("qop not offered")
        if request_uri is not None and not _same_uri(credentials.uri, request_uri):
            return bad("digest uri does not match the Request-URI")
        if ha1 is None:
            # Do the same hashing as for a known user, so timing does not tell them apart.
            _expected_response(algorithm, "0" * algorithm.hex_length, credentials, method)
            return UnknownUser(kind, self.challenge_values(now=now), username)

        expected = _expected_response(algorithm, ha1.lower(), credentials, method)
        if not hmac.compare_digest(
            credentials.response.lower().encode("utf-8"), expected.encode("ascii")
        ):
            return bad(WRONG_RESPONSE)

        # The opaque is checked with the nonce, after the response: both are ours only if this
        # start of this node issued them. A client answering another node's challenge (a load
        # balancer that sent its retry elsewhere) or one from before our restart returns that
        # challenge's opaque (RFC 7616 §3.3: unchanged), with a response that proves it knows
        # the password: it needs a fresh challenge (stale=true), not a failed authentication
        # counted against its address (auth_max_failures: a proxy's address is all its phones').
        if credentials.opaque is not None and not hmac.compare_digest(
            credentials.opaque.encode("utf-8"), self._opaque.encode("ascii")
        ):
            return Stale(kind, self.challenge_values(now=now, stale=True), username)
        check = self._nonces.check(credentials.nonce, self.config.realm, now=now)
        if check.status is not NonceStatus.VALID or check.issued_at is None:
            return Stale(kind, self.challenge_values(now=now, stale=True), username)
        verdict = self._counts.verdict(credentials.nonce, credentials.nc_value, check.issued_at)
        if verdict is NcVerdict.FORGOTTEN:
            return Stale(kind, self.challenge_values(now=now, stale=True), username)
        if verdict is NcVerdict.REPLAYED:
            return bad("nonce-count replayed")
        self._counts.record(credentials.nonce, credentials.nc_value, check.issued_at)
        return Authenticated(username, self.config.realm, algorithm, qop)

    def authenticate(
        self,
        header_values: Sequence[str],
        *,
        kind: AuthKind,
        method: str,
        request_uri: str | None,
        now: float,
        lookup: Ha1Lookup,
    ) -> AuthOutcome:
        """:meth:`select_credentials`, then ``lookup`` the HA1, then :meth:`verify`.

        ``lookup`` is called only for credentials that parsed and name our realm, and only with
        an algorithm we offer.
        """
        selected = self.select_credentials(header_values, kind, now=now)
        if not isinstance(selected, DigestCredentials):
            return selected
        algorithm = DigestAlgorithm.from_token(selected.algorithm or "MD5")
        ha1 = None
        if algorithm is not None and algorithm in self.config.algorithms:
            ha1 = lookup(selected.username, self.config.realm, algorithm)
        return self.verify(
            selected, ha1, kind=kind, method=method, request_uri=request_uri, now=now
        )


def _expected_response(
    algorithm: DigestAlgorithm, ha1: str, credentials: DigestCredentials, method: str
) -> str:
    return compute_response(
        algorithm,
        ha1,
        method=method,
        uri=credentials.uri,
        nonce=credentials.nonce,
        qop=credentials.qop,
        nc=credentials.nc,
        cnonce=credentials.cnonce,
    )


def _same_uri(digest_uri: str, request_uri: str) -> bool:
    return digest_uri.strip().lower() == request_uri.strip().lower()
