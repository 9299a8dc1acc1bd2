"""The ``sdes`` plugin: its entry point, what it registers, and the sans-IO rule for its module."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from gateway.core.config import ConfigError, from_mapping
from gateway.core.interfaces import KeysReady
from gateway.core.plugins import load_plugins
from gateway.plugins.keyexchange import sdes
from gateway.plugins.keyexchange.sdes import SdesKeyExchange

ROOT = Path(__file__).parents[3]


def test_entry_point_is_declared_like_any_plugin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry_points = project["project"]["entry-points"]["voipgw.plugins"]
    assert entry_points["sdes"] == "gateway.plugins.keyexchange.sdes"


def test_registers_the_sdes_key_exchange_and_no_policy() -> None:
    config = from_mapping({"plugins": {"enable": ["sdes"]}})
    plugins = load_plugins(config, extra=[("sdes", sdes)], installed={})
    exchange = plugins.key_exchanges.get("sdes")
    assert isinstance(exchange, SdesKeyExchange)
    assert exchange.name == "sdes" and exchange.media_path is False
    assert plugins.registered_by("sdes") == {"key_exchanges": ["sdes"]}
    assert len(plugins.media_policies) == 0
    assert plugins.configs.get("sdes") == sdes.SdesConfig()
    assert exchange.answer_suite == "policy-order"
    assert exchange.min_peer_key_lifetime == 1  # any lifetime RFC 4568 allows


def test_the_sdes_table_takes_answer_suite_and_nothing_else() -> None:
    config = from_mapping(
        {"plugins": {"enable": ["sdes"], "sdes": {"answer_suite": "offer-order"}}}
    )
    exchange = load_plugins(config, extra=[("sdes", sdes)], installed={}).key_exchanges.get("sdes")
    assert exchange.answer_suite == "offer-order"
    config = from_mapping({"plugins": {"enable": ["sdes"], "sdes": {"x": 1}}})
    with pytest.raises(ConfigError, match="x: unknown key; known keys: answer_suite"):
        load_plugins(config, extra=[("sdes", sdes)], installed={})
    config = from_mapping({"plugins": {"enable": ["sdes"], "sdes": {"answer_suite": "best"}}})
    with pytest.raises(ConfigError, match="answer_suite: expected one of"):
        load_plugins(config, extra=[("sdes", sdes)], installed={})


def test_the_sdes_table_takes_a_minimum_peer_key_lifetime() -> None:
    table = {"min_peer_key_lifetime": 2147483648}
    config = from_mapping({"plugins": {"enable": ["sdes"], "sdes": table}})
    exchange = load_plugins(config, extra=[("sdes", sdes)], installed={}).key_exchanges.get("sdes")
    assert exchange.min_peer_key_lifetime == 1 << 31
    for bad in (0, -1, (1 << 48) + 1, True):
        table = {"min_peer_key_lifetime": bad}
        config = from_mapping({"plugins": {"enable": ["sdes"], "sdes": table}})
        with pytest.raises(ConfigError, match="min_peer_key_lifetime: expected"):
            load_plugins(config, extra=[("sdes", sdes)], installed={})


def test_the_registered_exchange_draws_keys_from_the_os() -> None:
    config = from_mapping({"plugins": {"enable": ["sdes"]}})
    exchange = load_plugins(config, extra=[("sdes", sdes)], installed={}).key_exchanges.get("sdes")
    offers = [
        exchange.offer(suites=["AES_CM_128_HMAC_SHA1_80"], secure_signalling=True) for _ in range(2)
    ]
    first, second = (offer.local_sdp_attributes() for offer in offers)
    assert first != second
    answer = exchange.answer(first, suites=[], secure_signalling=True)
    assert isinstance(answer.next_event(), KeysReady)


FORBIDDEN = {"trio", "socket", "time", "random", "asyncio", "threading", "select", "secrets"}


def test_the_module_imports_no_io() -> None:
    # The engine is sans-IO; ``os`` is imported only for the registration's os.urandom default.
    path = ROOT / "gateway" / "plugins" / "keyexchange" / "sdes.py"
    tree = ast.parse(path.read_text())
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert not roots & FORBIDDEN
    uses_of_os = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    ]
    assert {node.attr for node in uses_of_os} == {"urandom"}
