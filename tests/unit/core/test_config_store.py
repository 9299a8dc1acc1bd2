"""[store]: SQLite by default, PostgreSQL when asked; mistakes name the file, table and key and
never echo the connection string (it may hold the password)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import ConfigError, StoreSection, from_mapping
from gateway.core.store import backends

DSN = "host=db.example.net dbname=voipgw user=voipgw password=Sup3r-Secret"


def test_the_default_is_sqlite_as_before() -> None:
    assert from_mapping({}).store == StoreSection(backend="sqlite")


def test_max_cps_is_each_nodes_unless_the_cluster_scope_is_asked_for() -> None:
    assert from_mapping({}).store.max_cps_scope == "node"
    postgresql = {"backend": "postgresql", "dsn": DSN}
    assert from_mapping({"store": postgresql}).store.max_cps_scope == "node"
    shared = from_mapping({"store": {**postgresql, "max_cps_scope": "cluster"}})
    assert shared.store.max_cps_scope == "cluster"


def test_call_records_are_kept_90_days_unless_told_otherwise() -> None:
    assert from_mapping({}).store.call_record_days == 0.0  # kept for ever
    assert from_mapping({"store": {"call_record_days": 0}}).store.call_record_days == 0.0
    assert from_mapping({"store": {"call_record_days": 0.5}}).store.call_record_days == 0.5
    assert from_mapping({"store": {"call_record_days": 36500}}).store.call_record_days == 36500


def test_the_nodes_build_the_call_id_index_unless_told_not_to() -> None:
    """Session 42's behaviour stays the default at upgrade; ``false`` is the opt-out, and an
    explicit ``true`` is taken with either backend (it asks for what is done anyway)."""
    assert from_mapping({}).store.call_id_index is True
    postgresql = {"backend": "postgresql", "dsn": DSN}
    assert from_mapping({"store": postgresql}).store.call_id_index is True
    off = from_mapping({"store": {**postgresql, "call_id_index": False}})
    assert off.store.call_id_index is False
    assert from_mapping({"store": {"call_id_index": True}}).store.call_id_index is True


def test_the_store_is_opened_with_the_call_id_index_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.core.store import postgresql

    asked: list[dict[str, Any]] = []
    monkeypatch.setattr(backends, "check_store", lambda config: None)
    monkeypatch.setattr(
        postgresql.PostgresStore, "open", classmethod(lambda cls, dsn, **kw: asked.append(kw))
    )
    for value in (False, True):
        store = {"backend": "postgresql", "dsn": DSN, "call_id_index": value}
        backends.open_store(from_mapping({"store": store}), gateway=True)
    assert [kw["call_id_index"] for kw in asked] == [False, True]


def test_the_dsn_is_not_in_the_config_repr() -> None:
    config = from_mapping({"store": {"backend": "postgresql", "dsn": DSN}}, file="gw.toml")
    assert config.store.dsn == DSN
    assert "Sup3r-Secret" not in repr(config)


@pytest.mark.parametrize(
    ("store", "key", "complaint"),
    [
        ({"backend": "postgresql"}, "dsn", "expected a libpq connection string"),
        ({"backend": "mysql"}, "backend", "one of 'sqlite', 'postgresql'"),
        ({"dsn": DSN}, "dsn", 'only used with backend = "postgresql"'),
        ({"password_file": "/x"}, "password_file", 'only used with backend = "postgresql"'),
        ({"node": "edge-1"}, "node", 'only used with backend = "postgresql"'),
        ({"connect_timeout": 1}, "connect_timeout", "at least 2"),
        ({"connect_timeout": 2.5}, "connect_timeout", "expected an integer"),
        ({"statement_timeout": 0}, "statement_timeout", "at least 0.001"),
        # Set in whole milliseconds: 1e-9 s and 0.4 ms are 0 ms, no timeout to PostgreSQL.
        ({"statement_timeout": 1e-9}, "statement_timeout", "0 ms is no timeout at all"),
        ({"statement_timeout": 0.0004}, "statement_timeout", "got 0.0004"),
        ({"statement_timeout": 60}, "statement_timeout", "at most 10"),
        ({"call_record_days": -1}, "call_record_days", "at least 0"),
        (
            {"call_record_days": float("nan")},
            "call_record_days",
            "expected a finite number, got nan",
        ),
        (
            {"call_record_days": float("inf")},
            "call_record_days",
            "expected a finite number, got inf",
        ),
        ({"call_record_days": "90d"}, "call_record_days", "expected a number"),
        ({"colour": "blue"}, "colour", "unknown key"),
        ({"max_cps_scope": "cluster"}, "max_cps_scope", 'needs backend = "postgresql"'),
        (
            {"backend": "postgresql", "dsn": DSN, "call_id_index": "no"},
            "call_id_index",
            "expected true or false",
        ),
        ({"backend": "postgresql", "dsn": DSN, "call_id_index": 0}, "call_id_index", "true or"),
        ({"call_id_index": False}, "call_id_index", 'only used with backend = "postgresql"'),
        (
            {"backend": "postgresql", "dsn": DSN, "max_cps_scope": "trunk"},
            "max_cps_scope",
            "one of 'node', 'cluster'",
        ),
    ],
)
def test_mistakes_name_file_table_and_key(store: dict[str, Any], key: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as raised:
        from_mapping({"store": store}, file="gw.toml")
    assert str(raised.value).startswith(f"gw.toml: [store] {key}: ")
    assert complaint in str(raised.value)


@pytest.mark.parametrize("seconds", [1e-9, 0.0004, 0.0])
def test_the_store_refuses_a_statement_timeout_of_0_ms(seconds: float) -> None:
    """PostgreSQL is given whole milliseconds, and 0 ms is no timeout at all (its docs,
    statement_timeout): refused before any connection, whoever opens the store."""
    from gateway.core.store.postgresql import PostgresStore

    with pytest.raises(ValueError, match="statement_timeout must be at least 1 ms"):
        PostgresStore.open("host=/nonexistent", statement_timeout=seconds)


def test_a_dsn_of_the_wrong_type_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as raised:
        from_mapping({"store": {"backend": "postgresql", "dsn": ["Sup3r-Secret"]}}, file="gw.toml")
    assert "Sup3r-Secret" not in str(raised.value)
    assert "[store] dsn: expected a string" in str(raised.value)


def test_postgresql_without_psycopg_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "psycopg" else real(name, *a)
    )
    config = from_mapping({"store": {"backend": "postgresql", "dsn": DSN}}, file="gw.toml")
    with pytest.raises(ConfigError) as raised:
        backends.check_store(config)
    assert str(raised.value).startswith("gw.toml: [store] backend: ")
    assert "pip install 'voipgw[postgresql]'" in str(raised.value)
    with pytest.raises(ConfigError):
        backends.open_store(config, gateway=True)


def test_a_password_file_is_read_and_must_be_private(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    secret = tmp_path / "pw"
    secret.write_text("Sup3r-Secret\nignored\n")
    secret.chmod(0o600)
    config = from_mapping(
        {"store": {"backend": "postgresql", "dsn": "dbname=x", "password_file": str(secret)}},
        file="gw.toml",
    )
    backends.check_store(config)
    assert backends._read_password(config) == "Sup3r-Secret"
    secret.chmod(0o640)
    with pytest.raises(ConfigError, match=r"gw.toml: \[store\] password_file: .*chmod 600"):
        backends.check_store(config)
    secret.unlink()
    with pytest.raises(ConfigError, match="cannot read"):
        backends.check_store(config)


def test_a_dsn_libpq_cannot_parse_is_named_not_quoted() -> None:
    pytest.importorskip("psycopg")
    config = from_mapping(
        {"store": {"backend": "postgresql", "dsn": "password=Sup3r-Secret =oops"}}, file="gw.toml"
    )
    with pytest.raises(ConfigError) as raised:
        backends.check_store(config)
    assert str(raised.value) == "gw.toml: [store] dsn: not a libpq connection string or URI"


def test_a_sqlite_gateway_never_imports_psycopg(tmp_path: Path) -> None:
    # Importing every module that opens a store, and opening SQLite, leaves psycopg unloaded:
    # a SQLite-only install never needs it.
    code = (
        "import sys\n"
        "import gateway.core.cli, gateway.core.gateway, gateway.core.store.postgresql\n"
        "from gateway.core.config import from_mapping\n"
        "from gateway.core.store.backends import check_store, open_store\n"
        f"config = from_mapping({{'gateway': {{'state_dir': {str(tmp_path)!r}}}}})\n"
        "check_store(config)\n"
        "open_store(config, gateway=False).close()\n"
        "assert 'psycopg' not in sys.modules, 'psycopg was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
