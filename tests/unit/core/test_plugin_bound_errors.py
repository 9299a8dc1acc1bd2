"""Every bound a built-in plugin's table refuses shows the value refused, as the core's do
(docs/configuration.md: ``FILE: [TABLE] KEY: ... got VALUE``): an operator reading
check-config's line sees what the file holds, not only what it should."""

from __future__ import annotations

import typing
from typing import Any

import attrs
import pytest

from gateway.core.config import ConfigError, from_mapping
from gateway.core.plugins import discover, load_plugins

# Each plugin table's own (the table as the smallest file that enables it needs it). The
# intercept plugin's files are read after its bounds are checked: a bound is refused first.
TABLES: dict[str, dict[str, Any]] = {
    "siprec": {"srs": "sip:srs@192.0.2.5", "all_calls": True},
    "hep": {"collector": "udp:192.0.2.30:9060"},
    "recorder": {"all_calls": True},
    "intercept": {
        "x1_certificate": "/nonexistent/x1.pem",
        "x1_private_key": "/nonexistent/x1.key",
        "x1_ca": "/nonexistent/ca.pem",
        "delivery_tls": False,
    },
}


def refused(plugin: str, table: dict[str, Any]) -> ConfigError:
    config = from_mapping(
        {"plugins": {"enable": [plugin], plugin: {**TABLES.get(plugin, {}), **table}}},
        file="voipgw.toml",
    )
    with pytest.raises(ConfigError) as caught:
        load_plugins(config)
    return caught.value


@pytest.mark.parametrize(
    ("plugin", "key", "value", "shown"),
    [
        ("tls", "ocsp_timeout", 0.0, "0"),
        ("tls", "ocsp_timeout", 61.0, "61"),
        ("intercept", "keepalive_interval", 0.5, "0.5"),
        ("intercept", "report_interval", 4000.0, "4000"),
        ("intercept", "queue", 5, "5"),
        ("intercept", "pdu_version", 70000, "70000"),
        ("hep", "queue", 2_000_000, "2000000"),
        ("hep", "capture_id", -1, "-1"),
        ("recorder", "queue", 9, "9"),
        ("recorder", "min_free_mb", -1, "-1"),
        ("siprec", "queue", 0, "0"),
        ("siprec", "session_expires", 60, "60"),
        ("tcp", "max_connections_per_source", 0, "0"),
        ("tls", "max_connections_per_source", 0, "0"),
        ("ws", "max_connections_per_source", 0, "0"),
        ("wss", "max_connections", -1, "-1"),
        ("ws", "idle_timeout", 10.0, "10"),
        ("dtls", "certificate_max_age_days", 0, "0"),
        ("dtls", "mtu", 100, "100"),
        ("mikey", "replay_cache_size", 0, "0"),
        ("sdes", "min_peer_key_lifetime", 0, "0"),
    ],
)
def test_a_plugin_bound_error_shows_the_value_it_refused(
    plugin: str, key: str, value: object, shown: str
) -> None:
    error = refused(plugin, {key: value})
    assert (error.file, error.table, error.key) == ("voipgw.toml", f"plugins.{plugin}", key)
    assert str(error).startswith(f"voipgw.toml: [plugins.{plugin}] {key}: "), str(error)
    assert error.message.endswith(f"got {shown}"), error.message


def test_ocsp_timeout_not_below_connect_timeout_shows_the_value() -> None:
    error = refused("tls", {"ocsp": "soft-fail", "ocsp_timeout": 12.0})
    assert error.key == "ocsp_timeout"
    assert error.message.startswith("must be below connect_timeout (10 s)"), error.message
    assert error.message.endswith("got 12"), error.message


# Values out of every numeric key's range: what an operator mistypes (a sign, a unit).
OUT_OF_RANGE: dict[type, tuple[object, ...]] = {
    int: (-1, 0, 10**6),
    float: (-1.0, 0.0, 1e-9, 1e9),
}


def numeric_keys() -> list[tuple[str, str, object]]:
    cases = []
    for plugin in sorted(discover()):
        config = from_mapping(
            {"plugins": {"enable": [plugin], plugin: TABLES.get(plugin, {})}}, file="voipgw.toml"
        )
        try:
            cls = type(load_plugins(config).configs[plugin])
        except (ConfigError, KeyError):
            # A table that needs files to load (intercept) or a plugin without one: the
            # explicit cases above stand for it.
            cls = None
        if cls is None or not attrs.has(cls):
            continue
        hints = typing.get_type_hints(cls)
        for field in attrs.fields(cls):
            for value in OUT_OF_RANGE.get(hints[field.name], ()):
                cases.append((plugin, field.name, value))
    return cases


@pytest.mark.parametrize(("plugin", "key", "value"), numeric_keys())
def test_every_numeric_key_a_plugin_refuses_shows_the_value(
    plugin: str, key: str, value: object
) -> None:
    """Every built-in plugin's number keys, each with values an operator mistypes: the ones
    refused name the key and show the value (a bound added later without it fails here)."""
    config = from_mapping(
        {"plugins": {"enable": [plugin], plugin: {**TABLES.get(plugin, {}), key: value}}},
        file="voipgw.toml",
    )
    try:
        load_plugins(config)
    except ConfigError as error:
        if error.key == key:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            assert f"got {shown}" in error.message, str(error)
