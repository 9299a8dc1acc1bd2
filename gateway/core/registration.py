"""REGISTER handling: digest authentication, brute-force protection, then the registrar.

The trio-side glue between the SIP endpoint and the sans-IO pieces: :mod:`gateway.core.auth`
decides whether the credentials verify, :class:`~gateway.core.registrar.Registrar` applies
RFC 3261 §10.3 and the store keeps the bindings across restarts. Repeated bad credentials from
one source address get 403 and a log line naming that address (issue #3 "Bad input"); the
response to an unknown user is the same as to a wrong password, so usernames cannot be probed
(sipvicious' svwar relies on the difference).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable

import attrs

from gateway.core.auth.algorithms import DigestAlgorithm
from gateway.core.auth.device_binding import check_device
from gateway.core.auth.digest import (
    WRONG_RESPONSE,
    Authenticated,
    AuthKind,
    BadCredentials,
    DigestAuthenticator,
    DigestConfig,
    UnknownUser,
)
from gateway.core.auth.failures import FailureCounter, FailurePolicy
from gateway.core.auth.proxied_source import AuthProxies, proxied_source
from gateway.core.config import RegistrarSection
from gateway.core.failure_log import FailureLog
from gateway.core.interfaces import Listener
from gateway.core.registrar import Registrar, RegistrarPolicy
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.uri import redact_password
from gateway.core.store.errors import StoreBusy
from gateway.core.store.interface import Binding, Store
from gateway.core.transport.flows import Flow, format_address

log = logging.getLogger(__name__)

STORE_BUSY_RETRY_AFTER = 5
"""Retry-After (seconds) of the 503 to a REGISTER the busy store could not take."""

BLOCKED_LOG_INTERVAL = 10.0
"""Requests refused from blocked sources are logged at most this often (s), with their count: a
password guesser such as svcrack keeps sending hundreds a second while it is blocked, and one
line each filled the log (the source that became blocked is logged when it did)."""


def local_domains(listeners: list[Listener], domains: tuple[str, ...]) -> frozenset[str]:
    """Names a REGISTER may use: every listener's ``host:port`` and every configured domain."""
    names = {format_address(listener.address) for listener in listeners}
    names.update(domains)
    return frozenset(names)


class RegistrationService:
    def __init__(
        self,
        store: Store,
        *,
        realm: str,
        algorithms: tuple[str, ...] = ("SHA-256", "MD5"),
        domains: frozenset[str],
        new_tag: Callable[[], str],
        clock: Callable[[], float] = time.time,
        on_registered: Callable[[str, tuple[Binding, ...]], None] | None = None,
        failure_policy: FailurePolicy | None = None,
        failure_clock: Callable[[], float] | None = None,
        auth_proxies: AuthProxies | None = None,
        limits: RegistrarSection | None = None,
    ) -> None:
        self.store = store
        self.on_registered = on_registered  # told each accepted REGISTER's AOR and bindings
        self.clock = clock
        # The failure counter's clock (None: ``clock``): a monotonic one in the gateway. Its
        # windows and bans are durations; on the wall clock an NTP step back would stretch
        # every ban and block by the step (hours), one forward lift them all.
        self.failure_clock = clock if failure_clock is None else failure_clock
        # A fresh nonce secret per start: clients holding an old nonce get one stale=true round
        # trip (RFC 7616 §3.3), which is cheaper than persisting a secret.
        self.authenticator = DigestAuthenticator(
            DigestConfig(realm=realm, algorithms=_algorithms(algorithms)),
            secret=os.urandom(32),
            entropy=os.urandom,
        )
        self.failures = FailureCounter(failure_policy or FailurePolicy())
        # [gateway] auth_proxies: failures of what they relay count against the phone's address.
        self.auth_proxies = auth_proxies or AuthProxies()
        self.refused_blocked = 0
        """Requests refused with 403 because their source was blocked, since the start."""
        self.failed = 0
        """Failed attempts (a wrong password or an unknown user), since the start."""
        self._blocked_logged_at = -math.inf
        self._blocked_since_log = 0
        self.store_failures = FailureLog(
            log,
            "registrations: the store",
            "requests",
            f"answered 503 with Retry-After: {STORE_BUSY_RETRY_AFTER}",
        )
        """Requests the store failed (busy, out of reach, not answering): one WARNING when it
        starts, a summary every 300 s while it goes on, one INFO at the next REGISTER it takes,
        not a line per REGISTER: every phone of the node retries, hundreds a minute."""
        # [registrar]: the expiries granted and the contacts an account may hold.
        limits = limits or RegistrarSection()
        self.registrar = Registrar(
            store,
            RegistrarPolicy(
                local_domains=domains,
                min_expires=limits.min_expires,
                default_expires=limits.default,
                max_expires=limits.max_expires,
                max_bindings=limits.max_bindings,
            ),
            new_tag=new_tag,
        )
        self._new_tag = new_tag

    def _ha1(self, username: str, realm: str, algorithm: DigestAlgorithm) -> str | None:
        account = self.store.get_account(username)
        if account is None or not account.enabled:
            return None
        return account.ha1_for(realm, algorithm)

    def authenticate(
        self, request: Request, flow: Flow, kind: AuthKind
    ) -> Authenticated | Response:
        """Check the request's digest credentials (``Authorization`` for REGISTER, 401;
        ``Proxy-Authorization`` for INVITE, 407). Returns who it is, or the response to send:
        a challenge, stale=true, 403 for a source with too many failures, 400 for garbage,
        503 when the store cannot be read (a PostgreSQL server out of reach)."""
        try:
            return self._authenticate(request, flow, kind)
        except StoreBusy as exc:
            return self._store_busy(request, exc)

    def _authenticate(
        self, request: Request, flow: Flow, kind: AuthKind
    ) -> Authenticated | Response:
        now = self.clock()
        elapsed = self.failure_clock()
        # Counted against the phone's address, also behind a listed edge proxy.
        client = proxied_source(request, flow.remote, self.auth_proxies)
        source = client[0]
        if self.failures.is_blocked(source, now=elapsed):
            self._log_blocked(request, source, elapsed)
            return self._reply(request, 403, "Too Many Failed Authentications")
        try:
            outcome = self.authenticator.authenticate(
                request.headers.get_all(kind.credentials_header),
                kind=kind,
                method=request.method,
                request_uri=str(request.uri),
                now=now,
                lookup=self._ha1,
            )
        except RemoteSipError as err:
            return self._reply(request, err.status or 400, err.reason)
        if isinstance(outcome, Authenticated):
            self.failures.record_success(source, user=outcome.username)
            account = self.store.get_account(outcome.username)
            if account is None:  # removed between the HA1 lookup and now
                return self._reply(request, 403, "Forbidden")
            refused = check_device(account, secure=flow.secure, certificate=flow.peer_certificate)
            if refused is not None:
                subject = flow.peer_certificate.subject if flow.peer_certificate else "none"
                log.warning(
                    "%s from %s for %s refused: %s (certificate subject: %s)",
                    request.method,
                    format_address(flow.remote),
                    account.name,
                    refused.reason,
                    subject,
                )
                return self._reply(request, 403, f"Forbidden ({refused.reason})")
            if account.certificate_matches:  # check_device matched one of them
                return attrs.evolve(outcome, device_certificate=True)
            return outcome
        if isinstance(outcome, BadCredentials | UnknownUser):
            self.failed += 1
            blocked = self.failures.record_failure(source, user=outcome.username or "", now=elapsed)
            # Operators' fail2ban filters match this line from its start ("INVITE from
            # <HOST>:<port>: authentication failed for user"), and some to its end ("(source
            # now blocked)$"): without [gateway] auth_block_time the line is as it always was;
            # with it (an operator's choice) the ban's length is said last. An IPv6 source
            # counted per prefix ([gateway] auth_ipv6_prefix_length) says the prefix before
            # "(source now blocked)", which keeps both the start and that end.
            said = ""
            if blocked:
                counted = self.failures.source_of(source)
                if "/" in counted:
                    said = f" from {counted}"
                said += " (source now blocked)"
                if self.failures.policy.block_time > 0:
                    seconds = round(self.failures.blocked_for(source, now=elapsed), 1)
                    said += f", refused for the next {seconds:g} s"
            log.warning(
                "%s from %s: authentication failed for user %r%s",
                request.method,
                format_address(client),
                outcome.username or "?",
                said,
            )
            if isinstance(outcome, BadCredentials) and outcome.reason != WRONG_RESPONSE:
                # Not a wrong password: a client that does digest otherwise than we do, or a
                # proxy in its path that rewrote the Request-URI its digest names (kamailio's
                # ds_select_domain, operations.md). The line above cannot say which (its text
                # is an interface), so this one does: the reason never holds a secret.
                log.info(
                    "%s from %s: credentials of user %r not taken: %s",
                    request.method,
                    format_address(client),
                    outcome.username or "?",
                    outcome.reason,
                )
            if blocked:
                return self._reply(request, 403, "Too Many Failed Authentications")
        return make_response(
            request, outcome.status, to_tag=self._new_tag(), extra=outcome.response_headers()
        )

    def _log_blocked(self, request: Request, source: str, now: float) -> None:
        self.refused_blocked += 1
        self._blocked_since_log += 1
        if now - self._blocked_logged_at < BLOCKED_LOG_INTERVAL:
            return
        # An IPv6 address in brackets as the other lines write it (RFC 3986 §3.2.2; fail2ban's
        # <HOST> takes it with or without them), and the prefix counted, as the blocking line
        # says it, before the count ([gateway] auth_ipv6_prefix_length below 128: opted in).
        # An IPv4 source's line is as it always was.
        counted = self.failures.source_of(source)
        log.warning(
            "%s from %s refused: too many failed authentications%s (%d request(s) from blocked "
            "sources refused since the last such line)",
            request.method,
            f"[{source}]" if ":" in source else source,
            f" from {counted}" if "/" in counted else "",
            self._blocked_since_log,
        )
        self._blocked_logged_at = now
        self._blocked_since_log = 0

    def handle(self, request: Request, flow: Flow) -> Response:
        """The response to a REGISTER that arrived over ``flow``."""
        if not self.registrar.serves(request.uri):
            # RFC 3261 §10.3 checks the domain (step 1) before the credentials (step 3). After
            # them, a right password got 404 and a wrong one 401/403: the answer told a
            # password guesser (svcrack) when it had guessed right.
            return self._reply(request, 404, "Domain Not Served Here")
        outcome = self.authenticate(request, flow, AuthKind.WWW)
        if isinstance(outcome, Response):
            return outcome
        try:
            account = self.store.get_account(outcome.username)
            if account is None:  # removed between lookup and now
                return self._reply(request, 403, "Forbidden")
            result = self.registrar.handle_register(
                request, account=account, flow=flow.key, now=self.clock()
            )
        except StoreBusy as exc:
            return self._store_busy(request, exc)
        if self.store_failures.failing:
            self.store_failures.answered(now=self.clock())
        if (
            self.on_registered is not None
            and result.aor is not None
            and result.response.status == 200
        ):
            self.on_registered(result.aor, result.bindings)
        if result.changed:
            log.info(
                "%s: %d binding(s) for %s via %s",
                "registered" if result.bindings else "unregistered",
                len(result.bindings),
                redact_password(str(result.aor)),
                flow.key,
            )
        return result.response

    def _store_busy(self, request: Request, exc: StoreBusy) -> Response:
        # Another process holds the store's write lock, or the database is out of reach:
        # nothing changed; ask the phone to come back (RFC 3261 §21.5.4) rather than stall
        # every call waiting for it.
        self.store_failures.failed(f"{request.method} refused with 503: {exc}", now=self.clock())
        return make_response(
            request,
            503,
            "Service Unavailable (store busy)",
            to_tag=self._new_tag(),
            extra=(("Retry-After", str(STORE_BUSY_RETRY_AFTER)),),
        )

    def _reply(self, request: Request, status: int, reason: str) -> Response:
        return make_response(request, status, reason, to_tag=self._new_tag())


def _algorithms(tokens: tuple[str, ...]) -> tuple[DigestAlgorithm, ...]:
    found = []
    for token in tokens:
        algorithm = DigestAlgorithm.from_token(token)
        if algorithm is None:
            raise ValueError(f"unknown digest algorithm {token!r}")
        found.append(algorithm)
    return tuple(found)
