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
reload. Connections already up keep the contexts they were made with (OpenSSL counts its
references), so calls on them are untouched. Nothing here runs per call or per packet.
"""

from __future__ import annotations

import collections
import logging
from typing import TYPE_CHECKING, Any

import attrs

from gateway.core.interfaces import LoadedCertificate, ReloadError
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


@attrs.frozen
class _Holder:
    plugin: str
    name: str
    holder: Any = attrs.field(eq=False)


class CertificateReloads:
    """The objects of one gateway's plugins that hold certificates, found once at start-up,
    and how their reloads went."""

    def __init__(self, plugins: Plugins) -> None:
        self._holders = _holders(plugins)
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    @property
    def plugins(self) -> list[str]:
        """The plugins taking part, each once, in registration order."""
        return list(dict.fromkeys(holder.plugin for holder in self._holders))

    def reload(self) -> list[ReloadReport]:
        """Ask every holder to reload; each outcome is logged and counted."""
        if not self._holders:
            log.info("reload: no enabled plugin holds certificates; nothing to do")
        reports = [self._reload_one(holder) for holder in self._holders]
        for report in reports:
            self.counts[(report.plugin, report.outcome)] += 1
        return reports

    def _reload_one(self, holder: _Holder) -> ReloadReport:
        try:
            loaded = tuple(holder.holder.reload_certificates())
        except ReloadError as exc:
            # The plugin's words name the file and the reason, never key bytes.
            log.error("reload: %s kept its previous certificates: %s", holder.name, exc)
            return ReloadReport(holder.plugin, holder.name, "failed", error=str(exc))
        except Exception as exc:
            # A bug in the plugin, not the operator's files: the traceback goes to the log.
            log.exception("reload: %s failed (a bug) and keeps what it had", holder.name)
            return ReloadReport(holder.plugin, holder.name, "failed", error=type(exc).__name__)
        if not loaded:
            log.info("reload: %s: no certificate files to read", holder.name)
        for certificate in loaded:
            log.info("reload: %s loaded %s", holder.name, certificate.describe())
        return ReloadReport(holder.plugin, holder.name, "reloaded", loaded)

    def statistics(self) -> tuple[tuple[str, str, int], ...]:
        """(plugin, outcome, count) for every plugin taking part and every outcome."""
        return tuple(
            (plugin, outcome, self.counts[(plugin, outcome)])
            for plugin in self.plugins
            for outcome in OUTCOMES
        )

    def certificates(self) -> tuple[tuple[str, LoadedCertificate], ...]:
        """(plugin, certificate) for what every holder serves now."""
        found: list[tuple[str, LoadedCertificate]] = []
        for holder in self._holders:
            try:
                loaded = tuple(holder.holder.loaded_certificates())
            except Exception:
                log.exception("%s could not say which certificates it serves", holder.name)
                continue
            found += [(holder.plugin, certificate) for certificate in loaded]
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
            found.append(_Holder(registry.owner(name), name, item))
    return found
