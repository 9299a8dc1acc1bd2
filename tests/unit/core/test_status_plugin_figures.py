"""``StatusView``'s reads of a plugin's own figures (session 41): each one a plugin may raise in
costs that plugin's rows only, is counted per (kind, plugin, figures) and said once at WARNING
without the exception's text. The component test (test_b2bua_metrics.py) scrapes two of them;
this checks every one, so that a read left outside the guard fails here."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.core.interfaces import LoadedCertificate
from gateway.core.plugins import Plugins, new_plugin_manager
from gateway.core.reload import CertificateReloads
from gateway.core.status import PLUGIN_COUNTERS_MAX, StatusView


class _Registry:
    def __init__(self, items: dict[str, object]) -> None:
        self._items = items

    def items(self) -> list[tuple[str, object]]:
        return list(self._items.items())

    def names(self) -> list[str]:
        return list(self._items)


class _Raising:
    """Each figure a plugin may have, raising when read."""

    def __getattr__(self, name: str) -> Any:
        if name == "covert":
            return False
        raise RuntimeError("a plugin's bug: secret=hunter2")


def _healthy() -> object:
    crl = SimpleNamespace(path="/etc/ca.crl", next_update=1.5)
    return SimpleNamespace(
        certificate_refetches={"fetched": 2},
        update_failures={"refused": 3},
        streams_unrecorded={"no_port": 3},
        counters=lambda: [("discarded", 4)],
        handshake_failures={"no_certificate": 5},
        connections_revoked=6,
        ocsp=SimpleNamespace(queries={"good": 7}, stapled={"good": 8}),
        loaded_crls=lambda: [crl],
        reliable=True,
    )


def _view(registry: str) -> StatusView:
    plugins = {
        name: _Registry({"broken": _Raising(), "healthy": _healthy()})
        if name == registry
        else _Registry({})
        for name in ("caller_identity", "media_taps", "key_exchanges", "transports")
    }
    statistics = SimpleNamespace(key_exchange_failures={})
    flows = SimpleNamespace(connections=lambda: collections.Counter(healthy=9, broken=1))
    gateway = SimpleNamespace(plugins=SimpleNamespace(**plugins), flows=flows)
    return StatusView(gateway, statistics)  # type: ignore[arg-type]


READS: list[tuple[str, str, str, str, Callable[[StatusView], object], object]] = [
    (
        "caller_identity",
        "caller_identity",
        "certificate_refetches",
        "caller identity",
        StatusView.caller_identity_refetches,
        (("fetched", 2),),
    ),
    (
        "media_taps",
        "media_tap",
        "update_failures",
        "media tap",
        StatusView.recording_update_failures,
        (("refused", 3),),
    ),
    (
        "media_taps",
        "media_tap",
        "streams_unrecorded",
        "media tap",
        StatusView.recording_streams_unrecorded,
        (("no_port", 3),),
    ),
    (
        "key_exchanges",
        "key_exchange",
        "counters",
        "key exchange",
        StatusView.key_exchange_counters,
        (("healthy", "discarded", 4),),
    ),
    (
        "media_taps",
        "media_tap",
        "counters",
        "media tap",
        StatusView.media_tap_counters,
        (("healthy", "discarded", 4),),
    ),
    (
        "transports",
        "transport",
        "handshake_failures",
        "transport",
        StatusView.tls_handshake_failures,
        (("healthy", "no_certificate", 5),),
    ),
    (
        "transports",
        "transport",
        "connections_revoked",
        "transport",
        StatusView.tls_connections_revoked,
        (("healthy", 6),),
    ),
    (
        "transports",
        "transport",
        "ocsp",
        "transport",
        StatusView.tls_ocsp_queries,
        (("healthy", "good", 7),),
    ),
    (
        "transports",
        "transport",
        "ocsp",
        "transport",
        StatusView.tls_ocsp_stapled,
        (("healthy", "good", 8),),
    ),
    (
        "transports",
        "transport",
        "loaded_crls",
        "transport",
        StatusView.tls_crls,
        (("healthy", "/etc/ca.crl", 1.5),),
    ),
    # Session 42: voipgw_sip_connections read every transport's ``reliable`` unguarded.
    (
        "transports",
        "transport",
        "reliable",
        "transport",
        StatusView._connections,
        (("healthy", 9),),
    ),
]


@pytest.mark.parametrize(
    ("registry", "kind", "figures", "said_kind", "read", "rows"),
    READS,
    ids=[f"{read[1]}-{read[4].__name__}" for read in READS],
)
def test_a_plugin_whose_figures_raise_costs_only_its_own_rows(
    registry: str,
    kind: str,
    figures: str,
    said_kind: str,
    read: Callable[[StatusView], object],
    rows: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    view = _view(registry)
    caplog.set_level(logging.WARNING, logger="gateway.core.status")
    assert read(view) == rows
    assert read(view) == rows
    assert view.plugin_figures_failures() == ((kind, "broken", figures, 2),)
    said = [r for r in caplog.records if r.name == "gateway.core.status"]
    assert [(r.levelno, r.getMessage()) for r in said] == [
        (
            logging.WARNING,
            f"status: the {said_kind} plugin broken raised reading its {figures}: left out of"
            " monitoring until it answers (said once; counted in"
            " voipgw_plugin_figures_failures_total)",
        )
    ]
    assert "hunter2" not in caplog.text


CERT = LoadedCertificate(
    path="/etc/voipgw/tls.crt",
    subject="CN=sip.example.com",
    sha256_fingerprint="ab" * 32,
    not_before=1_790_000_000.0,
    not_after=1_797_776_000.0,
)


class _Serving:
    def reload_certificates(self) -> tuple[LoadedCertificate, ...]:
        return (CERT,)

    def loaded_certificates(self) -> tuple[LoadedCertificate, ...]:
        return (CERT,)


class _RaisingServing(_Serving):
    def loaded_certificates(self) -> tuple[LoadedCertificate, ...]:
        raise RuntimeError("a plugin's bug: secret=hunter2")


def test_a_certificate_holder_that_raises_is_counted_and_said_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Session 42: a holder whose loaded_certificates() raised logged an ERROR with its
    traceback at every scrape (every 15 s), uncounted. Now it costs its own rows (the expiry
    gauge of the other holders is answered), is counted per holder in
    voipgw_plugin_figures_failures_total and said once at WARNING, as the other figures."""
    plugins = Plugins(new_plugin_manager(), {})
    for name, holder in (("broken", _RaisingServing()), ("healthy", _Serving())):
        plugins.transports._current_plugin = name
        plugins.transports.add(name, holder)
    plugins.transports._current_plugin = "<core>"
    gateway = SimpleNamespace(certificate_reloads=CertificateReloads(plugins))
    view = StatusView(gateway, SimpleNamespace())  # type: ignore[arg-type]
    caplog.set_level(logging.INFO)
    for _ in range(3):
        assert view.tls_certificates() == (("healthy", CERT),)
    assert view.plugin_figures_failures() == (("transport", "broken", "loaded_certificates", 3),)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        (
            "gateway.core.status",
            logging.WARNING,
            "status: the transport plugin broken raised reading its loaded_certificates: left"
            " out of monitoring until it answers (said once; counted in"
            " voipgw_plugin_figures_failures_total)",
        )
    ]
    assert "hunter2" not in caplog.text


@pytest.mark.parametrize(
    ("registry", "kind", "read"),
    [
        ("key_exchanges", "key_exchange", StatusView.key_exchange_counters),
        ("media_taps", "media_tap", StatusView.media_tap_counters),
    ],
)
def test_counters_past_the_bound_or_named_twice_cost_that_plugin_its_rows(
    registry: str, kind: str, read: Callable[[StatusView], object]
) -> None:
    """Each counter is a series of voipgw_plugin_counters_total (session 42): a plugin naming
    one per call (or per address) grew the scrape and Prometheus's series without end, and a
    name given twice made two series of one name. Review of session 42: such a plugin's rows
    are left out and counted, as a raising counters()'s, read no further than the bound."""
    given = 0

    def per_call() -> Any:
        nonlocal given
        for n in range(10**6):
            given += 1
            yield f"call-{n}", 1

    plugins = {
        name: _Registry(
            {
                "per-call": SimpleNamespace(counters=per_call),
                "twice": SimpleNamespace(counters=lambda: [("a", 1), ("a", 2)]),
                "fixed": SimpleNamespace(
                    counters=lambda: [(f"c{n}", n) for n in range(PLUGIN_COUNTERS_MAX)]
                ),
            }
            if name == registry
            else {}
        )
        for name in ("caller_identity", "media_taps", "key_exchanges", "transports")
    }
    statistics = SimpleNamespace(key_exchange_failures={})
    gateway = SimpleNamespace(plugins=SimpleNamespace(**plugins))
    view = StatusView(gateway, statistics)  # type: ignore[arg-type]
    rows = read(view)
    assert {row[0] for row in rows} == {"fixed"}  # type: ignore[attr-defined]
    assert len(rows) == PLUGIN_COUNTERS_MAX  # type: ignore[arg-type]
    assert given == PLUGIN_COUNTERS_MAX + 1
    assert sorted(view.plugin_figures_failures()) == [
        (kind, "per-call", "counters", 1),
        (kind, "twice", "counters", 1),
    ]


def test_a_covert_taps_counters_are_never_read() -> None:
    """A covert tap (lawful interception: that it is configured must not show) that keeps
    counters: none of them shown, and counters() never called, so that one which raises is
    not counted in voipgw_plugin_figures_failures_total under its name either (session 42's
    voipgw_plugin_counters_total)."""
    called: list[str] = []

    def counters() -> list[tuple[str, int]]:
        called.append("counters")
        raise RuntimeError("a plugin's bug")

    taps = {"li": SimpleNamespace(covert=True, counters=counters)}
    plugins = {
        name: _Registry(taps if name == "media_taps" else {})
        for name in ("caller_identity", "media_taps", "key_exchanges", "transports")
    }
    gateway = SimpleNamespace(plugins=SimpleNamespace(**plugins))
    view = StatusView(gateway, SimpleNamespace(key_exchange_failures={}))  # type: ignore[arg-type]
    assert view.media_tap_counters() == ()
    assert view.plugin_figures_failures() == ()
    assert called == []


class _ReliableRaisesAttributeError:
    """A third-party transport whose ``reliable`` property has a bug raising AttributeError."""

    secure = False

    @property
    def reliable(self) -> bool:
        raise AttributeError("a plugin's bug: secret=hunter2")


class _NoReliable:
    """A transport with no ``reliable`` at all: taken for a datagram one, no failure."""


def test_an_attribute_error_inside_a_transports_reliable_is_counted_not_taken_for_false(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Session 42 left status's ``_reliable`` on ``getattr(transport, "reliable", False)``,
    which also swallows an AttributeError raised inside a ``reliable`` property: the bug was
    hidden and the transport's connections were left out as a datagram one's, never said
    nor counted. Now only a missing attribute counts as absent."""
    transports = {
        "broken": _ReliableRaisesAttributeError(),
        "absent": _NoReliable(),
        "healthy": _healthy(),
    }
    plugins = SimpleNamespace(transports=_Registry(transports))  # type: ignore[arg-type]
    flows = SimpleNamespace(connections=lambda: collections.Counter(healthy=9, broken=1))
    view = StatusView(
        SimpleNamespace(plugins=plugins, flows=flows),  # type: ignore[arg-type]
        SimpleNamespace(key_exchange_failures={}),  # type: ignore[arg-type]
    )
    caplog.set_level(logging.WARNING, logger="gateway.core.status")
    assert view._connections() == (("healthy", 9),)
    assert view._connections() == (("healthy", 9),)
    assert view.plugin_figures_failures() == (("transport", "broken", "reliable", 2),)
    said = [r.getMessage() for r in caplog.records if r.name == "gateway.core.status"]
    assert said == [
        "status: the transport plugin broken raised reading its reliable: left out of"
        " monitoring until it answers (said once; counted in"
        " voipgw_plugin_figures_failures_total)"
    ]
    assert "hunter2" not in caplog.text
