"""The core's side of a certificate reload (gateway/core/reload.py): which registered objects
take part, that one plugin's failure (its files, or a bug) neither stops another's reload nor
the caller, what is logged and counted per plugin and outcome."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio

from gateway.core.interfaces import LoadedCertificate, ReloadError
from gateway.core.plugins import Plugins, Registry, new_plugin_manager
from gateway.core.reload import CertificateReloads

CERT = LoadedCertificate(
    path="/etc/voipgw/new.crt",
    subject="CN=sip.example.com",
    sha256_fingerprint="ab" * 32,
    not_before=1_790_000_000.0,
    not_after=1_797_776_000.0,  # 2026-12-20 14:13:20 UTC
)


class Holder:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.calls = 0
        self.loaded: tuple[LoadedCertificate, ...] = ()

    def reload_certificates(self) -> tuple[LoadedCertificate, ...]:
        self.calls += 1
        if isinstance(self.outcome, Exception):
            raise self.outcome
        self.loaded = self.outcome
        return self.loaded

    def loaded_certificates(self) -> tuple[LoadedCertificate, ...]:
        return self.loaded


def add(registry: Registry[Any], plugin: str, name: str, item: object) -> None:
    registry._current_plugin = plugin
    registry.add(name, item)
    registry._current_plugin = "<core>"


def plugins_with(**holders: object) -> Plugins:
    plugins = Plugins(new_plugin_manager(), {})
    for name, holder in holders.items():
        registry = plugins.services if name == "metrics" else plugins.transports
        add(registry, name, name, holder)
    return plugins


def test_every_holder_reloads_and_one_failure_stops_no_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tls = Holder((CERT,))
    wss = Holder(ReloadError("/etc/voipgw/wss.key: not the private key of /etc/voipgw/wss.crt"))
    metrics = Holder(RuntimeError("a bug"))
    plugins = plugins_with(tls=tls, wss=wss, metrics=metrics)
    add(plugins.transports, "udp", "udp", object())  # no certificates: not asked
    reloads = CertificateReloads(plugins)
    assert reloads.plugins == ["tls", "wss", "metrics"]
    caplog.set_level(logging.INFO)

    reports = reloads.reload()

    assert [(r.plugin, r.outcome) for r in reports] == [
        ("tls", "reloaded"),
        ("wss", "failed"),
        ("metrics", "failed"),
    ]
    assert (tls.calls, wss.calls, metrics.calls) == (1, 1, 1)
    assert reports[0].certificates == (CERT,)
    assert reports[1].error == "/etc/voipgw/wss.key: not the private key of /etc/voipgw/wss.crt"
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert (
        "INFO",
        "reload: tls loaded /etc/voipgw/new.crt: subject CN=sip.example.com, sha256 "
        + "ab" * 32
        + ", not after 2026-12-20 14:13:20 UTC",
    ) in lines
    assert (
        "ERROR",
        "reload: wss kept its previous certificates: /etc/voipgw/wss.key: not the private key "
        "of /etc/voipgw/wss.crt",
    ) in lines
    bug = [r for r in caplog.records if r.getMessage().startswith("reload: metrics failed")]
    # A bug's traceback, not the operator's fault (its text withheld: gateway/core/logs.py).
    assert bug and (bug[0].exc_text or "").startswith("Traceback (most recent call last):")

    reloads.reload()
    assert reloads.statistics() == (
        ("tls", "reloaded", 2),
        ("tls", "failed", 0),
        ("wss", "reloaded", 0),
        ("wss", "failed", 2),
        ("metrics", "reloaded", 0),
        ("metrics", "failed", 2),
    )
    assert reloads.certificates() == (("tls", CERT),)


def test_an_object_registered_twice_reloads_once() -> None:
    holder = Holder((CERT,))
    plugins = Plugins(new_plugin_manager(), {})
    add(plugins.media_taps, "intercept", "intercept", holder)
    add(plugins.sip_captures, "intercept", "intercept", holder)
    reloads = CertificateReloads(plugins)
    reloads.reload()
    assert holder.calls == 1
    assert reloads.statistics() == (("intercept", "reloaded", 1), ("intercept", "failed", 0))


def test_without_holders_nothing_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    reloads = CertificateReloads(Plugins(new_plugin_manager(), {}))
    assert reloads.reload() == []
    assert reloads.statistics() == ()
    assert "nothing to do" in caplog.text


class CovertHolder(Holder):
    covert = True


def test_a_covert_holder_reloads_but_is_neither_counted_nor_named_by_the_core(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tls = Holder((CERT,))
    tap = CovertHolder((CERT,))
    plugins = plugins_with(tls=tls)
    add(plugins.media_taps, "intercept", "intercept", tap)
    reloads = CertificateReloads(plugins)
    caplog.set_level(logging.INFO)

    assert [(r.plugin, r.outcome) for r in reloads.reload()] == [("tls", "reloaded")]
    tap.outcome = ReloadError("/etc/li/x1.key: not the private key of /etc/li/x1.crt")
    tap.loaded = ()
    reloads.reload()
    tap.outcome = RuntimeError("a bug")
    reloads.reload()

    assert tap.calls == 3
    assert reloads.plugins == ["tls"]
    assert reloads.statistics() == (("tls", "reloaded", 3), ("tls", "failed", 0))
    tap.loaded = (CERT,)
    assert reloads.certificates() == (("tls", CERT),)
    core = " ".join(r.getMessage() for r in caplog.records if r.name == "gateway.core.reload")
    assert "reload: tls loaded" in core and "intercept" not in core
    # Its outcome goes to the logger of the module that defines it (the plugin's own).
    own = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == __name__]
    assert own[0] == ("INFO", "reload: intercept loaded " + CERT.describe())
    assert own[1] == (
        "ERROR",
        "reload: intercept kept its previous certificates: /etc/li/x1.key: not the private key "
        "of /etc/li/x1.crt",
    )
    assert own[2] == ("ERROR", "reload: intercept failed (a bug) and keeps what it had")
    assert len(own) == 3


def test_only_covert_holders_log_what_no_holder_logs(caplog: pytest.LogCaptureFixture) -> None:
    plugins = Plugins(new_plugin_manager(), {})
    add(plugins.media_taps, "intercept", "intercept", CovertHolder(()))
    caplog.set_level(logging.INFO)
    reloads = CertificateReloads(plugins)
    assert reloads.reload() == []
    core = [r.getMessage() for r in caplog.records if r.name == "gateway.core.reload"]
    assert core == ["reload: no enabled plugin holds certificates; nothing to do"]
    assert reloads.statistics() == ()


class AsyncHolder(Holder):
    """A holder whose reload has a slow part it runs off the event loop (the tls transport)."""

    def __init__(self, outcome: Any) -> None:
        super().__init__(outcome)
        self.awaited = 0

    async def reload_certificates_async(self) -> tuple[LoadedCertificate, ...]:
        self.awaited += 1
        await trio.lowlevel.checkpoint()
        return self.reload_certificates()


async def test_reload_async_awaits_the_holders_that_can_and_calls_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tls = AsyncHolder((CERT,))
    wss = AsyncHolder(ReloadError("/etc/voipgw/crl.pem: the CRL of CN=CA expired"))
    metrics = Holder((CERT,))
    tap = CovertHolder(RuntimeError("a bug"))
    plugins = plugins_with(tls=tls, wss=wss, metrics=metrics)
    add(plugins.media_taps, "intercept", "intercept", tap)
    reloads = CertificateReloads(plugins)
    caplog.set_level(logging.INFO)

    reports = await reloads.reload_async()

    assert [(r.plugin, r.outcome, r.error) for r in reports] == [
        ("tls", "reloaded", None),
        ("wss", "failed", "/etc/voipgw/crl.pem: the CRL of CN=CA expired"),
        ("metrics", "reloaded", None),
    ]
    assert (tls.awaited, wss.awaited, tls.calls, wss.calls, metrics.calls) == (1, 1, 1, 1, 1)
    assert tap.calls == 1  # a covert one too, neither counted nor returned
    assert reloads.statistics() == (
        ("tls", "reloaded", 1),
        ("tls", "failed", 0),
        ("wss", "reloaded", 0),
        ("wss", "failed", 1),
        ("metrics", "reloaded", 1),
        ("metrics", "failed", 0),
    )
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert ("INFO", "reload: tls loaded " + CERT.describe()) in lines
    assert (
        "ERROR",
        "reload: wss kept its previous certificates: /etc/voipgw/crl.pem: the CRL of CN=CA expired",
    ) in lines
