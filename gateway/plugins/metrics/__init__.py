"""The ``metrics`` plugin: a Prometheus exporter of what an SBC's operator watches (calls,
registrations, SIP overload, media and SRTP, key exchanges, trunks).

Theory of operation. The plugin registers one monitoring service (``gateway_register_services``);
the core starts its ``run`` with the gateway's read-only status view. ``run`` serves HTTP on
``[plugins.metrics] listen`` (:mod:`.server`); each GET of ``path`` reads the view and renders
the text exposition format 0.0.4 (:mod:`.collect`, :mod:`.exposition`). All the work is done
at a scrape: the core keeps its counters anyway, and counts calls for the view only while a
service such as this one is registered.

The exposition holds no secret and no call's identity, but it shows the traffic. By default it
is served in plain HTTP without authentication on the loopback. For a Prometheus on another host,
``tls_certificate`` and ``tls_private_key`` serve HTTPS (:mod:`.tls`), ``tls_client_ca`` also
requires a client certificate, and ``basic_auth_users`` requires a user and password (:mod:`.auth`),
as Prometheus' own exporters do with exporter-toolkit's web config. Files and password hashes
are checked when the config is read, so a mistake is a config error of this table, at start-up
and in ``voipgw check-config``. On SIGHUP the three TLS files are read again
(:meth:`MetricsExporter.reload_certificates`, gateway/core/reload.py): new connections get the
new context, or, when any file fails, the exporter keeps the one it had.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import ssl
import time
import types
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

from gateway.core.config import unreadable_here
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import GatewayStatus, LoadedCertificate, ReloadError
from gateway.core.transport.flows import format_host_port
from gateway.plugins.metrics import tls
from gateway.plugins.metrics.auth import BasicAuth, PasswordHash, PasswordHashError
from gateway.plugins.metrics.collect import ScrapeLog, render_in_steps
from gateway.plugins.metrics.server import MetricsServer
from gateway.plugins.transports.certificates import (
    EXPIRY_CHECK_INTERVAL,
    CertificateError,
    expires_soon,
    expiry_report,
    key_open_to_others,
    loaded_certificate,
    validity_problem,
)

if TYPE_CHECKING:
    from gateway.core.interfaces import Service
    from gateway.core.plugins import Registry

log = logging.getLogger(__name__)

DEFAULT_PORT = 9464  # the default port allocations of Prometheus exporters (its wiki)
_PATH = re.compile(r"/[A-Za-z0-9._~/-]*\Z")


def _read_only(mapping: Mapping[str, str]) -> Mapping[str, str]:
    return types.MappingProxyType(dict(mapping))


@attrs.frozen
class MetricsConfig:
    """``[plugins.metrics]``. See docs/configuration.md."""

    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    path: str = "/metrics"
    tls_certificate: str | None = None
    tls_private_key: str | None = None
    tls_client_ca: str | None = None
    # repr=False: a secret. structure() then never echoes a mistyped value, and neither may we.
    basic_auth_users: Mapping[str, str] = attrs.field(
        factory=dict, converter=_read_only, hash=False, repr=False
    )

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        self.address  # noqa: B018 - checks it
        if not _PATH.match(self.path):
            raise ValueError(
                f"path: expected an absolute path of letters, digits and ._~/- "
                f"(e.g. /metrics), not {self.path!r}"
            )
        if (self.tls_certificate is None) != (self.tls_private_key is None):
            missing = "tls_certificate" if self.tls_certificate is None else "tls_private_key"
            raise ValueError(f"{missing}: tls_certificate and tls_private_key go together")
        if self.tls_client_ca is not None and self.tls_certificate is None:
            raise ValueError(
                "tls_client_ca: client certificates need TLS: set tls_certificate and "
                "tls_private_key too"
            )
        self.password_hashes  # noqa: B018 - checks them
        # The files load now, not at the first scrape; but by voipgw check-config run as
        # another user than the service's (a key of mode 600): a warning, the pair unchecked.
        files = {"tls_certificate": self.tls_certificate, "tls_private_key": self.tls_private_key}
        if not [key for key, name in files.items() if name and unreadable_here(Path(name), key)]:
            self.ssl_context()

    @property
    def password_hashes(self) -> dict[str, PasswordHash]:
        """``basic_auth_users`` parsed; a ValueError names the user, never the hash."""
        hashes: dict[str, PasswordHash] = {}
        for user, text in self.basic_auth_users.items():
            # RFC 7617 §2: a user-id holds no colon (the password follows the first one).
            if not user or ":" in user or not user.isprintable():
                raise ValueError(f"basic_auth_users: user {user!r}: expected a name without colons")
            try:
                hashes[user] = PasswordHash.parse(text)
            except PasswordHashError as exc:
                raise ValueError(f"basic_auth_users: user {user!r}: {exc}") from None
        return hashes

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS server context, or None for plain HTTP; a ValueError names the key and
        file that cannot be used."""
        if self.tls_certificate is None or self.tls_private_key is None:
            return None
        try:
            return tls.server_context(
                self.tls_certificate, self.tls_private_key, self.tls_client_ca
            )
        except tls.TlsFileError as exc:
            raise ValueError(f"{exc.key}: {exc}") from None

    @property
    def loopback(self) -> bool:
        """Whether ``listen`` is a loopback address (only this host can scrape)."""
        return ipaddress.ip_address(self.address[0]).is_loopback

    @property
    def address(self) -> tuple[str, int]:
        """``listen`` as (IP address, port); an IPv6 address is written in brackets."""
        host, _, port_text = self.listen.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        host = host[1:-1] if bracketed else host
        try:
            address = ipaddress.ip_address(host)
            if (address.version == 6) != bracketed:
                raise ValueError
            port = int(port_text)
            if not 0 <= port < 65536:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"listen: expected ADDRESS:PORT (e.g. 127.0.0.1:9464 or [::1]:9464), "
                f"not {self.listen!r}"
            ) from None
        return host, port


class MetricsExporter:
    """The ``metrics`` service (``interfaces.Service``)."""

    name = "metrics"

    def __init__(
        self, config: MetricsConfig, *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.server: MetricsServer | None = None
        self._loaded: tuple[LoadedCertificate, ...] = ()
        self._wall_clock = wall_clock  # for tests (trio's virtual clock)

    def expiry_report(self, *, now: float) -> list[tuple[bool, str]]:
        """``voipgw check-config``: (error?, ``"tls_certificate: why"``) for ``tls_certificate``
        outside its validity period (an error: every scraper that verifies refuses it; ``run``
        starts with it, warning) or expiring within EXPIRY_WARNING_DAYS (a warning), as for
        the tls transport's certificate. Nothing for plain HTTP, nor for a file this user may
        not read (MetricsConfig warned of it, unchecked)."""
        if self.config.tls_certificate is None:
            return []
        try:
            loaded = loaded_certificate(Path(self.config.tls_certificate))
        except CertificateError:
            return []
        return expiry_report(
            "tls_certificate", (loaded,), now=now, refusal="scrapers will refuse it"
        )

    def warn_if_invalid(self, *, now: float) -> None:
        """The certificate served out of its validity period (at start-up, then daily)."""
        for certificate in self._loaded:
            problem = validity_problem(certificate, now=now)
            if problem is not None:
                log.warning("metrics: %s: scrapers will refuse it", problem)

    def warn_if_expiring(self, *, now: float) -> None:
        """One WARNING while the certificate served expires within EXPIRY_WARNING_DAYS (at
        start-up, then daily; and after a reload), as the tls transport says its own."""
        for certificate in self._loaded:
            soon = expires_soon(certificate, now=now)
            if soon is not None:
                log.warning(
                    "metrics: the certificate in %s expires on %s (in %d days): renew it",
                    certificate.path,
                    *soon,
                )

    async def _warn_before_expiry(self) -> None:
        """Once a day (trio's clock) after start-up, which said it first: the certificate in
        use out of its validity period or expiring soon. Nothing warned before the exporter's
        certificate expired, and Prometheus' scrapes then failed (``up == 0``) with nothing
        in the gateway's log saying why; a reload with the renewed one ends the warnings."""
        while True:
            await trio.sleep(EXPIRY_CHECK_INTERVAL)
            now = self._wall_clock()
            self.warn_if_invalid(now=now)
            self.warn_if_expiring(now=now)

    def loaded_certificates(self) -> tuple[LoadedCertificate, ...]:
        """The certificate new HTTPS connections get (none for plain HTTP)."""
        return self._loaded

    def reload_certificates(self) -> tuple[LoadedCertificate, ...]:
        """Read ``tls_certificate``, ``tls_private_key`` and ``tls_client_ca`` again, with the
        checks of start-up and the certificate's validity period; new connections get the new
        context. :class:`ReloadError` (the key, the file, the reason) leaves the old one."""
        config = self.config
        if config.tls_certificate is None or config.tls_private_key is None:
            return ()
        try:
            context = tls.server_context(
                config.tls_certificate, config.tls_private_key, config.tls_client_ca
            )
            loaded = loaded_certificate(Path(config.tls_certificate))
        except tls.TlsFileError as exc:
            raise ReloadError(f"{exc.key}: {exc}") from None
        except CertificateError as exc:
            raise ReloadError(f"tls_certificate: {exc}") from None
        problem = validity_problem(loaded, now=time.time())
        if problem is not None:
            raise ReloadError(f"tls_certificate: {problem}")
        _warn_if_key_readable(config)
        if self.server is not None:
            self.server.ssl_context = context
        self._loaded = (loaded,)
        if self.server is not None:
            # Renewed, nothing; one that still expires soon, said now, not at the next look.
            self.warn_if_expiring(now=self._wall_clock())
        return self._loaded

    async def run(
        self,
        status: GatewayStatus,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve scrapes until cancelled; started once the port is bound (a port taken stops
        the gateway's start-up, saying so)."""
        config = self.config
        auth = BasicAuth(config.password_hashes) if config.basic_auth_users else None
        ssl_context = config.ssl_context()
        if config.tls_certificate is not None:
            self._loaded = (loaded_certificate(Path(config.tls_certificate)),)

        scrape_log = ScrapeLog()

        async def scrape() -> bytes:
            return await render_in_steps(status, server.statistics(), scrape_log=scrape_log)

        server = MetricsServer(
            scrape,
            path=config.path,
            server=f"voipgw/{status.version}",
            ssl_context=ssl_context,
            auth=auth,
        )
        self.server = server
        host, port = config.address
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.serve, host, port)
            log.info(
                "metrics: Prometheus exposition on %s://%s%s (%s)",
                "https" if ssl_context is not None else "http",
                format_host_port(bound[0], bound[1]),
                config.path,
                _protection(config),
            )
            for certificate in self._loaded:
                log.info("metrics: certificate %s", certificate.describe())
            now = self._wall_clock()
            self.warn_if_invalid(now=now)
            self.warn_if_expiring(now=now)
            if self._loaded:
                nursery.start_soon(self._warn_before_expiry)
            warning = exposure_warning(config)
            if warning is not None:
                log.warning("metrics: %s", warning)
            _warn_if_key_readable(config)
            task_status.started()


def _warn_if_key_readable(config: MetricsConfig) -> None:
    if config.tls_private_key is not None:
        mode = key_open_to_others(Path(config.tls_private_key))
        if mode is not None:  # as the SIP tls transport warns of its own key
            log.warning(
                "metrics: private key %s is readable by group or others (mode %o); chmod 600 it",
                config.tls_private_key,
                mode,
            )


def exposure_warning(config: MetricsConfig) -> str | None:
    """What start-up warns of when ``listen`` is reachable from other hosts with nothing
    protecting it: no TLS and no authentication, or passwords sent in clear (a warning, not an
    error: such configs worked before these keys existed)."""
    if config.loopback:
        return None
    tls, auth = config.tls_certificate is not None, bool(config.basic_auth_users)
    if not tls and not auth:
        return (
            f"serving {config.listen} without TLS or authentication: whoever reaches it sees "
            "the traffic; set tls_certificate, tls_private_key and basic_auth_users in "
            "[plugins.metrics], or listen on the loopback"
        )
    if not tls:
        return (
            f"basic auth without TLS on {config.listen}: passwords cross the network in "
            "clear; set tls_certificate and tls_private_key in [plugins.metrics]"
        )
    return None


def _protection(config: MetricsConfig) -> str:
    parts = []
    if config.tls_certificate is not None:
        parts.append("TLS, client certificates required" if config.tls_client_ca else "TLS")
    if config.basic_auth_users:
        users = len(config.basic_auth_users)
        parts.append(f"basic auth, {users} user{'s' if users != 1 else ''}")
    return "; ".join(parts) or "no TLS, no authentication"


@hookimpl
def gateway_plugin_config() -> type:
    return MetricsConfig


@hookimpl
def gateway_register_services(registry: Registry[Any], config: MetricsConfig) -> None:
    """Register the exporter (its table is optional: the defaults serve on the loopback)."""
    registry.add(MetricsExporter.name, MetricsExporter(config))


if TYPE_CHECKING:

    def _conforms(exporter: MetricsExporter) -> None:
        _service: Service = exporter
