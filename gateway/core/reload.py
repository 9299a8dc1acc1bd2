"""Certificate reload on SIGHUP, without a restart (``voipgw run``; systemd's ``ExecReload``).

Operators with short-lived certificates (ACME, 90 days) replace the files and signal the
gateway, as they would nginx or HAProxy; a restart would end every call. Only certificate, key
and CA files are read again: the config file is not (listeners, ports, trunks and plugins need
a restart).

The certificates live in the objects plugins registered (the ``tls`` and ``wss`` transports,
the metrics exporter), so the core asks those objects, not a pluggy hook: a module-level
hookimpl has no handle on the per-gateway object that holds the contexts. Any registered object
with ``reload_certificates()`` and ``loaded_certificates()``
(``interfaces.ReloadableCertificates``) takes part. Each object reloads all or nothing: either
every file it uses loaded and passed the start-up checks and new handshakes use them, or it
raised ``ReloadError`` and kept what it had. One object's failure never stops another's
reload. SIGHUP runs :meth:`CertificateReloads.reload_async`: a holder that also has
``async reload_certificates_async()`` (the ``tls`` transport, whose CRLs of some MiB take
hundreds of ms per context to build) is awaited instead, and builds its contexts off the event
loop; the others are called as they are. Holders reload one after another, in order, and a
second SIGHUP waits for the first reload's end. Connections already up keep the contexts they
were made with (OpenSSL counts its references), so calls on them are untouched; the one
exception is a ``tls`` connection whose peer certificate a reloaded CRL revokes, which the
transport closes itself (``TransportHost.flow_revoked``). Nothing here runs per call or per packet.

A holder with ``covert = True`` (lawful interception: that it is configured must not show to
whoever reads the ordinary log or the metrics) reloads like the others, but is never counted,
never in ``plugins``, ``statistics()`` or ``certificates()`` (the metrics), nor in the reports
``reload()`` returns; its lines go to the logger of the module that defines its class (the
plugin's own logger), never this module's. A gateway with only covert holders logs what one
with none logs.
"""

from __future__ import annotations

import collections
import inspect
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import attrs

from gateway.core.interfaces import LoadedCertificate, ReloadError
from gateway.core.logs import log_exception
from gateway.core.plugins import REGISTRY_HOOKS

if TYPE_CHECKING:
    from gateway.core.plugins import Plugins

log = logging.getLogger(__name__)

OUTCOMES = ("reloaded", "failed")


@attrs.frozen
class ReloadReport:
    """What one registered object did on a reload."""

    plugin: str
    name: str  # the name it was registered under
    outcome: str  # one of OUTCOMES
    certificates: tuple[LoadedCertificate, ...] = ()
    error: str | None = None


FiguresReader = Callable[
    [str, str, str, Callable[[], tuple[LoadedCertificate, ...]]],
    tuple[LoadedCertificate, ...] | None,
]
"""How :meth:`CertificateReloads.certificates` calls a holder's ``loaded_certificates()``:
``read(kind, name, figures, call)``, what ``call`` returns or None (the status view's guard)."""


def _read(
    kind: str, name: str, figures: str, call: Callable[[], tuple[LoadedCertificate, ...]]
) -> tuple[LoadedCertificate, ...]:
    return call()


def _loaded_certificates(holder: Any) -> tuple[LoadedCertificate, ...]:
    return tuple(holder.loaded_certificates())


# A holder's kind, as the metrics' kind label names plugins: the registry it is in, singular.
_KINDS = {
    "transports": "transport",
    "key_exchanges": "key_exchange",
    "media_policies": "media_policy",
    "media_taps": "media_tap",
    "sip_captures": "sip_capture",
    "device_profiles": "device_profile",
    "interworking": "interworking",
    "services": "service",
    "caller_identity": "caller_identity",
}


@attrs.frozen
class _Holder:
    plugin: str
    name: str
    holder: Any = attrs.field(eq=False)
    covert: bool = False
    kind: str = "service"

    @property
    def log(self) -> logging.Logger:
        """Where this holder's reload lines go: a covert one's to its own plugin's logger."""
        return logging.getLogger(type(self.holder).__module__) if self.covert else log


class CertificateReloads:
    """The objects of one gateway's plugins that hold certificates, found once at start-up,
    and how their reloads went."""

    def __init__(self, plugins: Plugins) -> None:
        self._all = _holders(plugins)
        self._holders = [holder for holder in self._all if not holder.covert]  # the named ones
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    @property
    def plugins(self) -> list[str]:
        """The plugins taking part, each once, in registration order."""
        return list(dict.fromkeys(holder.plugin for holder in self._holders))

    def reload(self) -> list[ReloadReport]:
        """Ask every holder to reload; each outcome is logged and counted (a covert holder's is
        logged on its own logger only, and neither counted nor returned)."""
        if not self._holders:
            log.info("reload: no enabled plugin holds certificates; nothing to do")
        return self._counted([(holder, self._reload_one(holder)) for holder in self._all])

    async def reload_async(self) -> list[ReloadReport]:
        """:meth:`reload`, awaiting the holders that have ``reload_certificates_async`` (what
        SIGHUP runs: their slow parts run off the event loop)."""
        if not self._holders:
            log.info("reload: no enabled plugin holds certificates; nothing to do")
        reports: list[tuple[_Holder, ReloadReport]] = []
        for holder in self._all:
            reload = getattr(holder.holder, "reload_certificates_async", None)
            if inspect.iscoroutinefunction(reload):
                try:
                    loaded = tuple(await reload())
                except Exception as exc:
                    reports.append((holder, self._failed(holder, exc)))
                    continue
                reports.append((holder, self._reloaded(holder, loaded)))
            else:
                reports.append((holder, self._reload_one(holder)))
        return self._counted(reports)

    def _counted(self, reports: list[tuple[_Holder, ReloadReport]]) -> list[ReloadReport]:
        named = [report for holder, report in reports if not holder.covert]
        for report in named:
            self.counts[(report.plugin, report.outcome)] += 1
        return named

    def _reload_one(self, holder: _Holder) -> ReloadReport:
        try:
            loaded = tuple(holder.holder.reload_certificates())
        except Exception as exc:
            return self._failed(holder, exc)
        return self._reloaded(holder, loaded)

    def _failed(self, holder: _Holder, exc: Exception) -> ReloadReport:
        logger = holder.log
        if isinstance(exc, ReloadError):
            # The plugin's words name the file and the reason, never key bytes.
            logger.error("reload: %s kept its previous certificates: %s", holder.name, exc)
            return ReloadReport(holder.plugin, holder.name, "failed", error=str(exc))
        # A bug in the plugin, not the operator's files: the traceback goes to the log.
        log_exception(
            logger, "reload: %s failed (a bug) and keeps what it had", holder.name, exc=exc
        )
        return ReloadReport(holder.plugin, holder.name, "failed", error=type(exc).__name__)

    def _reloaded(self, holder: _Holder, loaded: tuple[LoadedCertificate, ...]) -> ReloadReport:
        logger = holder.log
        if not loaded:
            logger.info("reload: %s: no certificate files to read", holder.name)
        for certificate in loaded:
            logger.info("reload: %s loaded %s", holder.name, certificate.describe())
        return ReloadReport(holder.plugin, holder.name, "reloaded", loaded)

    def statistics(self) -> tuple[tuple[str, str, int], ...]:
        """(plugin, outcome, count) for every plugin taking part and every outcome."""
        return tuple(
            (plugin, outcome, self.counts[(plugin, outcome)])
            for plugin in self.plugins
            for outcome in OUTCOMES
        )

    def certificates(
        self, read: FiguresReader = _read
    ) -> tuple[tuple[str, LoadedCertificate], ...]:
        """(plugin, certificate) for what every holder serves now. Each holder's
        ``loaded_certificates()`` is called through ``read(kind, name, "loaded_certificates",
        call)``, which returns what ``call`` returns, or None when it raised: the status view's
        guard (``StatusView._plugin_figures``), so that a holder that raises at every scrape
        (a plugin's bug) costs its own rows only, is counted in
        ``voipgw_plugin_figures_failures_total`` and said once, not at every scrape (until
        session 42 each scrape logged an ERROR with the traceback, uncounted). ``kind`` is the
        registry the holder is in (``transport``, ``service``, ...). The default ``read`` calls
        it as it is: a raising holder raises."""
        found: list[tuple[str, LoadedCertificate]] = []
        for holder in self._holders:
            loaded = read(
                holder.kind,
                holder.name,
                "loaded_certificates",
                partial(_loaded_certificates, holder.holder),
            )
            found += [(holder.plugin, certificate) for certificate in loaded or ()]
        return tuple(found)


def _holders(plugins: Plugins) -> list[_Holder]:
    """Every registered object with ``reload_certificates``, each once (an object registered
    in two registries reloads once), with the plugin that registered it."""
    found: list[_Holder] = []
    seen: set[int] = set()
    for attribute in REGISTRY_HOOKS.values():
        registry = plugins.registry(attribute)
        for name, item in registry.items():
            if id(item) in seen or not callable(getattr(item, "reload_certificates", None)):
                continue
            seen.add(id(item))
            covert = bool(getattr(item, "covert", False))
            kind = _KINDS.get(attribute, attribute)
            found.append(_Holder(registry.owner(name), name, item, covert, kind))
    return found
