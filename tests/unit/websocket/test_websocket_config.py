"""[plugins.ws] and [plugins.wss]: defaults, and errors that name the file, table and key."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import ConfigError, from_mapping
from gateway.core.plugins import load_plugins
from gateway.plugins.transports import ws, wss


def load(name: str, table: dict[str, Any]) -> Any:
    config = from_mapping(
        {
            "sip": {"listen": [f"{name}:127.0.0.1:0"]},
            "plugins": {"enable": ["udp", name], name: table},
        },
        file="gw.toml",
    )
    # The entry points may predate these plugins in an editable install: pass them in.
    module = ws if name == "ws" else wss
    plugins = load_plugins(config, extra=[(name, module)])
    return plugins.configs[name]


def test_defaults() -> None:
    config = load("ws", {})
    assert isinstance(config, ws.WsConfig)
    assert config.allowed_origins == ()
    assert (config.ping_interval, config.idle_timeout, config.handshake_timeout) == (
        30.0,
        90.0,
        10.0,
    )
    assert config.max_connections == 1024
    secure = load("wss", {})
    assert isinstance(secure, wss.WssConfig)
    assert secure.tls.mode == "encryption-only"
    assert secure.websocket.allowed_origins == frozenset()


@pytest.mark.parametrize("name", ["ws", "wss"])
@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"allowed_origins": ["phone.example"]}, "allowed_origins: expected origins like"),
        ({"allowed_origins": "https://phone.example"}, "allowed_origins: expected a list"),
        ({"ping_interval": 0}, "ping_interval: expected a positive number"),
        ({"idle_timeout": 20}, "idle_timeout: must be longer than ping_interval"),
        ({"max_connections": 0}, "max_connections: expected 1 or more"),
        ({"path": "/ws"}, "path: unknown key"),
    ],
)
def test_invalid_tables_name_the_key(name: str, table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(name, table)
    assert str(caught.value).startswith(f"gw.toml: [plugins.{name}]")
    assert message in str(caught.value)


def test_wss_certificate_needs_its_key() -> None:
    with pytest.raises(ConfigError, match=r"\[plugins.wss\] private_key: certificate and"):
        load("wss", {"certificate": "a.crt"})


def test_ws_takes_no_certificate() -> None:
    with pytest.raises(ConfigError, match=r"\[plugins.ws\] certificate: unknown key"):
        load("ws", {"certificate": "a.crt"})


def test_entry_points_are_declared() -> None:
    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())
    entry_points = project["project"]["entry-points"]["voipgw.plugins"]
    assert entry_points["ws"] == "gateway.plugins.transports.ws"
    assert entry_points["wss"] == "gateway.plugins.transports.wss"
    assert any(dep.startswith("wsproto>=") for dep in project["project"]["dependencies"])
    assert any(
        dep.startswith("websockets>=")
        for dep in project["project"]["optional-dependencies"]["test"]
    )
