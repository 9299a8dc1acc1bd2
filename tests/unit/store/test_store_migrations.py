"""Schema versions: ordered migrations applied on open, newer files refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.core.store.errors import SchemaError
from gateway.core.store.interface import CallRecord, StoredPublication
from gateway.core.store.sqlite import DB_FILENAME, MIGRATIONS, SqliteStore


def versions(path: Path) -> list[int]:
    db = sqlite3.connect(path / DB_FILENAME)
    try:
        return [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY 1")]
    finally:
        db.close()


def test_fresh_store_is_at_the_latest_version(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    store.close()
    assert versions(tmp_path) == list(range(1, len(MIGRATIONS) + 1))


def test_reopening_applies_nothing_twice(tmp_path: Path) -> None:
    SqliteStore.open(tmp_path).close()
    SqliteStore.open(tmp_path).close()
    assert versions(tmp_path) == list(range(1, len(MIGRATIONS) + 1))


LATEST = len(MIGRATIONS)


def test_missing_migrations_are_applied_in_order(tmp_path: Path) -> None:
    SqliteStore.open(tmp_path).close()
    extra = (
        *MIGRATIONS,
        (LATEST + 1, ("CREATE TABLE probe (step INTEGER)", "INSERT INTO probe VALUES (1)")),
        (LATEST + 2, ("INSERT INTO probe VALUES (2)",)),
    )
    store = SqliteStore.open(tmp_path, migrations=extra)
    try:
        assert store.schema_version() == LATEST + 2
    finally:
        store.close()
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    assert [row[0] for row in db.execute("SELECT step FROM probe")] == [1, 2]
    db.close()
    assert versions(tmp_path) == list(range(1, LATEST + 3))


def test_a_version_1_file_gets_the_account_call_limit_column(tmp_path: Path) -> None:
    # A state directory from before migration 2: its accounts keep working, with no limit.
    SqliteStore.open(tmp_path, migrations=MIGRATIONS[:1]).close()
    db = sqlite3.connect(tmp_path / DB_FILENAME)  # as version 1 wrote accounts
    db.execute(
        "INSERT INTO accounts (name, enabled, media_policy, require_tls, created_at, updated_at)"
        " VALUES ('old', 1, 'best-effort', 0, 0, 0)"
    )
    db.commit()
    db.close()
    store = SqliteStore.open(tmp_path)
    try:
        old = store.get_account("old")
        assert old is not None and old.max_calls == 0
        assert store.accounts_set("old", max_calls=2).max_calls == 2
    finally:
        store.close()


def test_failed_migration_rolls_back_and_keeps_earlier_ones(tmp_path: Path) -> None:
    broken = (
        *MIGRATIONS,
        (LATEST + 1, ("CREATE TABLE probe (step INTEGER)", "THIS IS NOT SQL")),
    )
    with pytest.raises(SchemaError):
        SqliteStore.open(tmp_path, migrations=broken)
    assert versions(tmp_path) == list(range(1, LATEST + 1))
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    db.close()
    assert "probe" not in tables


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    SqliteStore.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    db.execute("INSERT INTO schema_version VALUES (99, 0)")
    db.commit()
    db.close()
    with pytest.raises(SchemaError) as refused:
        SqliteStore.open(tmp_path)
    assert "schema version 99 was written by a newer voipgw" in str(refused.value)
    assert f"understands schema versions up to {LATEST}" in str(refused.value)
    assert "Upgrade this node" in str(refused.value)


def test_a_failed_migration_names_the_versions(tmp_path: Path) -> None:
    SqliteStore.open(tmp_path).close()
    broken = (*MIGRATIONS, (LATEST + 1, ("NOT SQL",)))
    with pytest.raises(SchemaError) as failed:
        SqliteStore.open(tmp_path, migrations=broken)
    message = str(failed.value)
    assert f"it is at version {LATEST}, this voipgw" in message
    assert f"needs version {LATEST + 1}, and migration {LATEST + 1} failed" in message
    assert "start the node again" in message


def test_migrations_must_be_numbered_in_order(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SqliteStore.open(tmp_path, migrations=((2, ()),))
    with pytest.raises(ValueError):
        SqliteStore.open(tmp_path, migrations=())


def test_a_version_2_file_gets_the_psap_callback_numbers(tmp_path: Path) -> None:
    # A state directory from before migration 3: it opens, keeps its accounts, and keeps the
    # numbers PSAP callbacks may call from then on.
    SqliteStore.open(tmp_path, migrations=MIGRATIONS[:2]).close()
    assert versions(tmp_path) == [1, 2]
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    db.execute(
        "INSERT INTO accounts (name, enabled, media_policy, require_tls, max_calls,"
        " created_at, updated_at) VALUES ('old', 1, 'best-effort', 0, 2, 0, 0)"
    )
    db.commit()
    db.close()
    store = SqliteStore.open(tmp_path)
    try:
        assert store.schema_version() == LATEST
        old = store.get_account("old")
        assert old is not None and old.max_calls == 2
        store.psap_number_presented("+4930123456", 1800.0, 10)
        remaining = store.psap_number_remaining("+4930123456")
        assert remaining is not None and 1790 < remaining <= 1800
    finally:
        store.close()


def test_a_version_3_file_gets_the_presence_publications(tmp_path: Path) -> None:
    # A state directory from before migration 4: it opens, keeps its PSAP numbers, and keeps
    # presence publications from then on (a restarted node finds them).
    old = SqliteStore.open(tmp_path, migrations=MIGRATIONS[:3])
    old.psap_number_presented("+4930123456", 1800.0, 10)
    old.close()
    assert versions(tmp_path) == [1, 2, 3]
    store = SqliteStore.open(tmp_path)
    try:
        assert store.schema_version() == LATEST >= 4
        assert store.psap_number_remaining("+4930123456") is not None
        publication = StoredPublication("alice", "e1", 2000.0, 1000.0, True, True, b"<doc/>")
        store.publication_save("alice", publication, replaces=None, now=1000.0, most=4)
        assert store.publications_of(["alice"], now=1000.0) == {"alice": [publication]}
    finally:
        store.close()


def test_a_version_4_file_gets_the_call_record_retention_index(tmp_path: Path) -> None:
    # A state directory from before migration 5: its records are kept, and found by their end
    # (or start) through the new index.
    old = SqliteStore.open(tmp_path, migrations=MIGRATIONS[:4])
    old.call_records_save(
        [CallRecord("old", "a", "b", 1.0, None, 2.0, "bye"), CallRecord("new", "a", "b", 9.0)]
    )
    old.close()
    store = SqliteStore.open(tmp_path)
    try:
        assert store.schema_version() == LATEST >= 5
        assert store.expire_call_records(5.0, most=10) == 1
        assert [record.call_id for record in store.call_records_recent()] == ["new"]
    finally:
        store.close()
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    try:
        indexes = {
            row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    finally:
        db.close()
    assert "call_records_kept_by" in indexes
