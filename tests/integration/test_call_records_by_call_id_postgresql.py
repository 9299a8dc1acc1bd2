"""``PostgresStore.call_records_of_call_id`` (``voipgw calls --call-id``) on a real server: the
records of a SIP Call-ID among every record, whatever the database's collation. In one collated
"C" (the test cluster's, ``initdb --locale=C``) the UNIQUE index on call_id answers the range of
ids; in one whose collation ignores punctuation at first (ICU ``und-u-ka-shifted``, as glibc's
en_US does), a range in the database's collation misses records, so the ids are compared in "C"
(through the index on ``call_id COLLATE "C"``, which the store builds since session 42:
test_call_id_index_postgresql.py; while it is not built, after the newest records, looked
among first)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pgcluster import STORE_USER, Cluster

from gateway.core.store import postgresql
from gateway.core.store.errors import StoreBusy
from gateway.core.store.interface import CallRecord
from gateway.core.store.postgresql import PostgresStore, _call_id_query

CALL_ID = "a84b4c76e66710@127.0.0.1"


def _records() -> list[CallRecord]:
    """Two calls of CALL_ID (a retry makes a second record), others around them in id order:
    "...@127.0.0.1;z" sorts after "...@127.0.0.1<" when ";" is ignored."""
    return [
        CallRecord(f"{CALL_ID};t1", "sip:a@x", "sip:b@y", 1.0, None, 2.0, "486 from B leg"),
        CallRecord(f"{CALL_ID};zz", "sip:a@x", "sip:b@y", 3.0),
        CallRecord(f"{CALL_ID}<;t3", "sip:a@x", "sip:b@y", 4.0),
        CallRecord(f"{CALL_ID}0;t4", "sip:a@x", "sip:b@y", 5.0),
        CallRecord(f"{CALL_ID};t5;t6", "sip:a@x", "sip:b@y", 6.0),
        CallRecord("a84b4c76e66710;t7", "sip:a@x", "sip:b@y", 7.0),
    ]


def _found(store: PostgresStore, call_id: str, limit: int = 100) -> list[str]:
    return [r.call_id for r in store.call_records_of_call_id(call_id, limit)]


def _check(store: PostgresStore) -> None:
    store.call_records_save(_records())
    assert _found(store, CALL_ID) == [f"{CALL_ID};zz", f"{CALL_ID};t1"]  # newest first
    assert _found(store, CALL_ID, 1) == [f"{CALL_ID};zz"]
    assert _found(store, f"{CALL_ID};t1") == [f"{CALL_ID};t1"]  # a record's id
    assert _found(store, f"{CALL_ID};t5") == [f"{CALL_ID};t5;t6"]
    assert _found(store, f"{CALL_ID}<") == [f"{CALL_ID}<;t3"]
    assert _found(store, "a84b4c76e66710") == ["a84b4c76e66710;t7"]
    for nobody in ("a84b4c76e6671", f"{CALL_ID};", f"{CALL_ID};t", "t1", ""):
        assert _found(store, nobody) == [], nobody


def _plan(cluster: Cluster, database: str, *, collated: bool) -> str:
    sql = _call_id_query(collated=collated)
    for value in ("'x'", "'x;'", "'x<'", "3", "9"):  # call_id, the range, the tag's start, limit
        sql = sql.replace("%s", value, 1)
    rows = cluster.admin(f"EXPLAIN {sql}", database)
    return "\n".join(str(row[0]) for row in rows)


def _fill(cluster: Cluster, database: str) -> None:
    """20,000 more records, analyzed (as autovacuum does in time), so that the plan is the one
    a node's table gets, not a few rows' (read whole whatever the indexes)."""
    cluster.admin(
        "INSERT INTO call_records (call_id, from_uri, to_uri, started_at)"
        " SELECT 'c' || n || '@127.0.0.1;t' || n, 'sip:a@x', 'sip:b@y', 100 + n"
        " FROM generate_series(1, 20000) AS n",
        database,
    )
    cluster.admin("ANALYZE call_records", database)


def test_a_call_ids_records_are_read_through_the_id_index_in_a_c_database(
    postgres_cluster: Cluster, postgres_database: str
) -> None:
    store = PostgresStore.open(postgres_cluster.dsn(postgres_database), listen=False)
    try:
        _check(store)
        assert store._ids_in_code_point_order is True
    finally:
        store.close()
    _fill(postgres_cluster, postgres_database)
    plan = _plan(postgres_cluster, postgres_database, collated=False)
    assert plan.count("call_records_call_id_key") == 2, plan  # both arms, the UNIQUE index


@pytest.fixture
def shifted_database(postgres_cluster: Cluster) -> Iterator[str]:
    """A database whose ICU collation ignores punctuation at first (alternate shifted)."""
    if not postgres_cluster.admin("SELECT 1 FROM pg_collation WHERE collprovider = 'i' LIMIT 1"):
        pytest.skip("this PostgreSQL has no ICU")
    name = "store_call_id_icu"
    postgres_cluster.admin(
        f"CREATE DATABASE {name} OWNER {STORE_USER} TEMPLATE template0 LOCALE 'C'"
        " LOCALE_PROVIDER icu ICU_LOCALE 'und-u-ka-shifted'"
    )
    yield name
    postgres_cluster.drop_database(name)


def test_a_call_ids_records_are_all_found_in_a_database_collated_otherwise(
    postgres_cluster: Cluster, shifted_database: str
) -> None:
    store = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    try:
        _check(store)
        assert store._ids_in_code_point_order is False
    finally:
        store.close()
    # What the store does not do: a range in the database's collation misses ";zz".
    in_range = postgres_cluster.admin(
        f"SELECT call_id FROM call_records WHERE call_id >= '{CALL_ID};'"
        f" AND call_id < '{CALL_ID}<' ORDER BY call_id",
        shifted_database,
    )
    assert (f"{CALL_ID};zz",) not in in_range
    # Without the index on call_id COLLATE "C" the whole table is read ...
    postgres_cluster.admin("DROP INDEX call_records_call_id_c", shifted_database)
    _fill(postgres_cluster, shifted_database)
    plan = _plan(postgres_cluster, shifted_database, collated=True)
    assert "Seq Scan on call_records" in plan or "Index Scan Backward" in plan, plan
    # ... which answers the query (as the store builds it, or the operator by hand).
    postgres_cluster.admin(
        'CREATE INDEX CONCURRENTLY call_records_call_id_c ON call_records ((call_id COLLATE "C"))',
        shifted_database,
    )
    postgres_cluster.admin("ANALYZE call_records", shifted_database)
    plan = _plan(postgres_cluster, shifted_database, collated=True)
    assert "call_records_call_id_c" in plan and "call_records_call_id_key" in plan, plan


def _slow_whole_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's read of the whole table (not of the newest records) outlasts any
    statement_timeout, as it does on a big table: a sleep per row."""
    real = postgresql._call_id_query

    def slow(*, collated: bool, newest: bool = False) -> str:
        if newest:
            return real(collated=collated, newest=True)
        return real(collated=collated).replace(" WHERE ", " WHERE pg_sleep(5) IS NOT NULL AND ", 1)

    monkeypatch.setattr(postgresql, "_call_id_query", slow)


def test_a_recent_call_is_found_among_the_newest_records_when_the_whole_table_is_too_slow(
    postgres_cluster: Cluster, shifted_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under another collation, while the index on call_id COLLATE "C" is not built (a node
    building it, or whose role may not), the whole table is read, which the CLI's
    statement_timeout may end on a big store: a recent call (all that was looked at before
    session 41) is still found, among the newest records; an older one fails saying where it
    looked."""
    store = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    try:
        store.call_records_save(_records())
    finally:
        store.close()
    postgres_cluster.admin("DROP INDEX call_records_call_id_c", shifted_database)
    # The CLI's opens below leave a "big" table's index to the nodes: it stays missing.
    monkeypatch.setattr(postgresql, "INLINE_INDEX_BYTES", -1)
    _fill(postgres_cluster, shifted_database)  # 20,000 records newer than _records'
    recent = [
        CallRecord(f"{CALL_ID}-recent;r{n}", "sip:a@x", "sip:b@y", 30000.0 + n) for n in (1, 2)
    ]
    # The newest records are read through the index on started_at, not the whole table.
    sql = _call_id_query(collated=True, newest=True)
    for value in ("1000", "'x'", "'x;'", "'x<'", "3", "9"):
        sql = sql.replace("%s", value, 1)
    plan = "\n".join(
        str(row[0]) for row in postgres_cluster.admin(f"EXPLAIN {sql}", shifted_database)
    )
    assert "call_records_started_at" in plan and "Seq Scan" not in plan, plan
    _slow_whole_table(monkeypatch)
    store = PostgresStore.open(
        postgres_cluster.dsn(shifted_database), listen=False, statement_timeout=0.5
    )
    try:
        store.call_records_save(recent)
        assert _found(store, f"{CALL_ID}-recent") == [
            f"{CALL_ID}-recent;r2",
            f"{CALL_ID}-recent;r1",
        ]
        assert _found(store, f"{CALL_ID}-recent;r1") == [f"{CALL_ID}-recent;r1"]
        # --recent N looks among the newest N records first, as it did before.
        assert _found(store, CALL_ID, 30000) == [f"{CALL_ID};zz", f"{CALL_ID};t1"]
        with pytest.raises(StoreBusy) as raised:
            _found(store, CALL_ID)  # 20,000 records older than the newest 1000
        assert f"none of the newest 1000 call records has Call-ID {CALL_ID}" in str(raised.value)
        assert "statement_timeout" in str(raised.value)
        assert "until the index call_records_call_id_c" in str(raised.value)
    finally:
        store.close()
