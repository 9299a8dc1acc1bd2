"""The store's behaviour, on both backends where it is meant to be the same (the ``store``
fixture is SQLite and PostgreSQL, tests/pgcluster.py): accounts without passwords, bindings,
call records; and SQLite's own: its file, restart persistence, its cache across processes."""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.core.auth.algorithms import DigestAlgorithm, compute_ha1
from gateway.core.store import sqlite as sqlite_module
from gateway.core.store.errors import (
    AccountExists,
    AccountNotFound,
    CallRecordExists,
    CallRecordNotFound,
    InvalidValue,
    StoreError,
)
from gateway.core.store.interface import (
    MAX_BULK_ACCOUNTS,
    Binding,
    BindingFlow,
    CallRecord,
    CertificateMatch,
    Store,
    StoredPublication,
)
from gateway.core.store.sqlite import CACHE_RECHECK_SECONDS, DB_FILENAME, SqliteStore

PASSWORD = "s3cret-Pa55word"
REALM = "voipgw.local"
FLOW = BindingFlow("udp", "127.0.0.1:5060", "127.0.0.1:40000")
FINGERPRINT = "AB:" * 31 + "CD"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store(
    request: pytest.FixtureRequest, backend: str, tmp_path: Path, clock: Clock
) -> Iterator[Store]:
    s: Store
    if backend == "sqlite":
        s = SqliteStore.open(tmp_path / "state", clock=clock)
    else:
        from gateway.core.store.postgresql import PostgresStore

        cluster = request.getfixturevalue("postgres_cluster")
        database = request.getfixturevalue("postgres_database")
        s = PostgresStore.open(cluster.dsn(database), clock=clock)
        wait_until(lambda: s.listening)  # its cache is used from then on
    yield s
    s.close()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.005)


@pytest.fixture
def stored_text(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Callable[[], str]:
    """Everything the store keeps, as text, for "the password is not in there" checks."""
    if backend == "sqlite":
        return lambda: all_db_text(tmp_path / "state")
    cluster = request.getfixturevalue("postgres_cluster")
    database = request.getfixturevalue("postgres_database")

    def every_row() -> str:
        tables = cluster.admin(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
            database,
        )
        return " ".join(
            str(row) for (table,) in tables for row in cluster.admin(f"TABLE {table}", database)
        )

    return every_row


def binding(key: str = "sip:alice@192.0.2.1:5062", **changes: object) -> Binding:
    values: dict[str, object] = {
        "aor": "sip:alice@127.0.0.1:5060",
        "key": key,
        "account": "alice",
        "contact": key,
        "expires_at": 4600.0,
        "call_id": "call-1",
        "cseq": 1,
        "flow": FLOW,
    }
    values.update(changes)
    return Binding(**values)  # type: ignore[arg-type]


def all_db_text(path: Path) -> str:
    """Every byte of the database files, for "the password is not in there" checks."""
    blobs = []
    for name in os.listdir(path):
        if name.startswith(DB_FILENAME):
            blobs.append((path / name).read_bytes())
    return b"".join(blobs).decode("latin-1")


# -- opening ------------------------------------------------------------------------------


def test_open_creates_one_private_file_in_wal_mode(tmp_path: Path) -> None:
    state = tmp_path / "state"
    s = SqliteStore.open(state)
    try:
        assert (state / DB_FILENAME).exists()
        assert stat.S_IMODE((state / DB_FILENAME).stat().st_mode) == 0o600
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        mode = sqlite3.connect(state / DB_FILENAME).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
        assert s.schema_version() == len(sqlite_module.MIGRATIONS)
    finally:
        s.close()


def test_satisfies_the_store_protocol(store: Store) -> None:
    as_protocol: Store = store
    assert as_protocol.accounts_list() == ()


def test_restart_sees_the_same_data(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = SqliteStore.open(state)
    first.accounts_add("alice", PASSWORD, REALM, display_name="Alice")
    first.upsert_binding(binding())
    first.call_record_insert(CallRecord("c1", "sip:a@x", "sip:b@y", started_at=5.0))
    first.close()

    second = SqliteStore.open(state)
    try:
        alice = second.get_account("alice")
        assert alice is not None
        assert alice.display_name == "Alice"
        expected = compute_ha1(DigestAlgorithm.SHA_256, "alice", REALM, PASSWORD)
        assert alice.ha1_for(REALM, DigestAlgorithm.SHA_256) == expected
        assert second.registrations_for("sip:alice@127.0.0.1:5060") == (binding(),)
        record = second.call_record_get("c1")
        assert record is not None and record.started_at == 5.0
        assert second.schema_version() == len(sqlite_module.MIGRATIONS)
    finally:
        second.close()


def test_garbage_file_is_a_store_error(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / DB_FILENAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        SqliteStore.open(state)


# -- accounts ------------------------------------------------------------------------------


def test_add_keeps_ha1_per_realm_and_algorithm_and_no_password(
    store: Store, clock: Clock, stored_text: Callable[[], str]
) -> None:
    account = store.accounts_add("alice", PASSWORD, REALM)
    assert account.name == "alice"
    assert account.enabled is True
    assert account.media_policy == "best-effort"
    assert account.require_tls is False
    assert account.display_name is None
    assert account.certificate_matches == ()
    assert account.created_at == account.updated_at == clock.now
    assert account.realms == (REALM,)
    for algorithm in DigestAlgorithm:
        assert account.ha1_for(REALM, algorithm) == compute_ha1(algorithm, "alice", REALM, PASSWORD)
    assert account.ha1_for("other", DigestAlgorithm.MD5) is None
    text = stored_text()
    assert account.ha1_for(REALM, DigestAlgorithm.MD5) in text  # it does look at the HA1s
    assert PASSWORD not in text


def test_reprs_hide_ha1(store: Store) -> None:
    account = store.accounts_add("alice", PASSWORD, REALM)
    ha1 = account.ha1_for(REALM, DigestAlgorithm.MD5)
    assert ha1 is not None
    assert ha1 not in repr(account)
    assert PASSWORD not in repr(account)


def test_add_options(store: Store) -> None:
    account = store.accounts_add(
        "bob",
        PASSWORD,
        REALM,
        display_name="Bob B.",
        enabled=False,
        media_policy="srtp-required",
        require_tls=True,
    )
    assert (account.display_name, account.enabled, account.media_policy, account.require_tls) == (
        "Bob B.",
        False,
        "srtp-required",
        True,
    )
    assert store.get_account("bob") == account


def test_duplicate_name(store: Store) -> None:
    store.accounts_add("alice", PASSWORD, REALM)
    with pytest.raises(AccountExists, match="alice"):
        store.accounts_add("alice", "other-password", REALM)


@pytest.mark.parametrize("name", ["", "al ice", "alice@host", "alice:x", 'a"b', "x" * 65])
def test_bad_names(store: Store, name: str) -> None:
    with pytest.raises(InvalidValue):
        store.accounts_add(name, PASSWORD, REALM)


def test_bad_password_error_does_not_echo_it(store: Store) -> None:
    long_secret = "Z" * 300
    with pytest.raises(InvalidValue) as info:
        store.accounts_add("alice", long_secret, REALM)
    assert long_secret not in str(info.value)
    with pytest.raises(InvalidValue):
        store.accounts_add("alice", "", REALM)


def test_bad_realm(store: Store) -> None:
    with pytest.raises(InvalidValue):
        store.accounts_add("alice", PASSWORD, 'bad"realm')


@pytest.mark.parametrize("value", [-1, 10_001, True, 1.5, "2"])
def test_bad_max_calls(store: Store, value: object) -> None:
    store.accounts_add("alice", PASSWORD, REALM)
    with pytest.raises(InvalidValue, match="max_calls"):
        store.accounts_set("alice", max_calls=value)
    with pytest.raises(InvalidValue, match="max_calls"):
        store.accounts_add("bob", PASSWORD, REALM, max_calls=value)  # type: ignore[arg-type]
    assert store.accounts_add("carol", PASSWORD, REALM, max_calls=3).max_calls == 3
    assert store.accounts_set("carol", max_calls=0).max_calls == 0


def test_list_is_sorted(store: Store) -> None:
    for name in ("carol", "alice", "bob"):
        store.accounts_add(name, PASSWORD, REALM)
    assert [a.name for a in store.accounts_list()] == ["alice", "bob", "carol"]


def test_set_plain_fields(store: Store, clock: Clock) -> None:
    store.accounts_add("alice", PASSWORD, REALM)
    clock.now = 2000.0
    account = store.accounts_set(
        "alice", display_name="Alice A.", enabled=False, media_policy="srtp", require_tls=True
    )
    assert (account.display_name, account.enabled, account.media_policy, account.require_tls) == (
        "Alice A.",
        False,
        "srtp",
        True,
    )
    assert account.created_at == 1000.0
    assert account.updated_at == 2000.0
    assert store.accounts_set("alice", display_name=None).display_name is None


def test_password_change_recomputes_every_realm(
    store: Store, stored_text: Callable[[], str]
) -> None:
    store.accounts_add("alice", PASSWORD, REALM)
    before = store.get_account("alice")
    assert before is not None
    after = store.accounts_set("alice", password="new-password")
    assert after.realms == (REALM,)
    for algorithm in DigestAlgorithm:
        assert after.ha1_for(REALM, algorithm) == compute_ha1(
            algorithm, "alice", REALM, "new-password"
        )
        assert after.ha1_for(REALM, algorithm) != before.ha1_for(REALM, algorithm)
    assert "new-password" not in stored_text()


def test_password_with_realm_moves_the_account(store: Store) -> None:
    store.accounts_add("alice", PASSWORD, REALM)
    after = store.accounts_set("alice", password="pw2", realm="example.com")
    assert after.realms == ("example.com",)
    assert after.ha1_for("example.com", DigestAlgorithm.MD5) == compute_ha1(
        DigestAlgorithm.MD5, "alice", "example.com", "pw2"
    )
    with pytest.raises(InvalidValue, match="password"):
        store.accounts_set("alice", realm="elsewhere")


def test_set_rejects_unknown_fields_and_bad_values(store: Store) -> None:
    store.accounts_add("alice", PASSWORD, REALM)
    with pytest.raises(InvalidValue, match="colour"):
        store.accounts_set("alice", colour="blue")
    with pytest.raises(InvalidValue):
        store.accounts_set("alice", enabled="yes")
    with pytest.raises(InvalidValue):
        store.accounts_set("alice", media_policy="")
    with pytest.raises(InvalidValue) as info:
        store.accounts_set("alice", password="")
    assert "password" in str(info.value)
    with pytest.raises(AccountNotFound):
        store.accounts_set("nobody", enabled=False)


def test_certificate_matches(store: Store) -> None:
    store.accounts_add("alice", PASSWORD, REALM)
    account = store.accounts_set(
        "alice",
        certificate_matches=[
            ("fingerprint", FINGERPRINT),
            CertificateMatch("subject", "CN=alice.phone.example"),
        ],
    )
    assert account.certificate_matches == (
        CertificateMatch("fingerprint", "ab" * 31 + "cd"),
        CertificateMatch("subject", "CN=alice.phone.example"),
    )
    assert store.accounts_set("alice", certificate_matches=()).certificate_matches == ()
    with pytest.raises(InvalidValue):
        store.accounts_set("alice", certificate_matches=[("fingerprint", "abcd")])
    with pytest.raises(InvalidValue):
        store.accounts_set("alice", certificate_matches=[("serial", "1")])
    with pytest.raises(InvalidValue):
        store.accounts_set("alice", certificate_matches="fingerprint")


def test_failed_set_changes_nothing(store: Store) -> None:
    store.accounts_add("alice", PASSWORD, REALM)
    before = store.get_account("alice")
    with pytest.raises(InvalidValue):
        store.accounts_set("alice", display_name="ok", certificate_matches=[("bad", "x")])
    assert store.get_account("alice") == before


def test_remove_cascades_to_bindings(store: Store) -> None:
    store.accounts_add("alice", PASSWORD, REALM)
    store.upsert_binding(binding())
    store.accounts_remove("alice")
    assert store.get_account("alice") is None
    assert store.registrations_for("sip:alice@127.0.0.1:5060") == ()
    with pytest.raises(AccountNotFound):
        store.accounts_remove("alice")


# -- bindings -----------------------------------------------------------------------------


@pytest.fixture
def alice(store: Store) -> Store:
    store.accounts_add("alice", PASSWORD, REALM)
    return store


def test_binding_round_trip_with_every_field(alice: Store) -> None:
    full = binding(
        q=0.7,
        instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>",
        reg_id=1,
        user_agent="Phone/1.0",
        path=("<sip:edge.example;lr>", "<sip:p2.example;lr>"),
        updated_at=999.0,
    )
    alice.upsert_binding(full)
    assert alice.registrations_for(full.aor) == (full,)
    assert alice.bindings_for_account("alice") == (full,)


def test_upsert_replaces_by_aor_and_key(alice: Store) -> None:
    alice.upsert_binding(binding())
    alice.upsert_binding(binding(expires_at=9999.0, cseq=2, contact="sip:alice@192.0.2.1:5062;x"))
    (only,) = alice.registrations_for("sip:alice@127.0.0.1:5060")
    assert (only.expires_at, only.cseq, only.contact) == (9999.0, 2, "sip:alice@192.0.2.1:5062;x")


def test_upsert_for_unknown_account(alice: Store) -> None:
    with pytest.raises(AccountNotFound):
        alice.upsert_binding(binding(account="nobody"))


def test_order_and_expiry_filter(alice: Store) -> None:
    alice.upsert_binding(binding("k-low", q=0.1))
    alice.upsert_binding(binding("k-none"))
    alice.upsert_binding(binding("k-mid", q=0.5, expires_at=2000.0))
    aor = "sip:alice@127.0.0.1:5060"
    assert [b.key for b in alice.registrations_for(aor)] == ["k-none", "k-mid", "k-low"]
    assert [b.key for b in alice.registrations_for(aor, now=2000.0)] == ["k-none", "k-low"]
    assert alice.registrations_for("sip:bob@127.0.0.1:5060") == ()


def test_remove_binding(alice: Store) -> None:
    alice.upsert_binding(binding("a"))
    alice.upsert_binding(binding("b"))
    assert alice.remove_binding("sip:alice@127.0.0.1:5060", "a") is True
    assert alice.remove_binding("sip:alice@127.0.0.1:5060", "a") is False
    assert [b.key for b in alice.registrations_for("sip:alice@127.0.0.1:5060")] == ["b"]


def test_apply_changes_is_all_or_nothing(alice: Store) -> None:
    aor = "sip:alice@127.0.0.1:5060"
    alice.upsert_binding(binding("a"))
    with pytest.raises(AccountNotFound):
        alice.apply_binding_changes(aor, [binding("b"), binding("c", account="ghost")], ["a"])
    assert [b.key for b in alice.registrations_for(aor)] == ["a"]
    alice.apply_binding_changes(aor, [binding("b")], ["a"])
    assert [b.key for b in alice.registrations_for(aor)] == ["b"]
    with pytest.raises(InvalidValue):
        alice.apply_binding_changes("sip:other@x", [binding("b")], [])


def test_expire_bindings(alice: Store) -> None:
    alice.upsert_binding(binding("old", expires_at=100.0))
    alice.upsert_binding(binding("edge", expires_at=200.0))
    alice.upsert_binding(binding("new", expires_at=300.0))
    expired = alice.expire_bindings(200.0)
    assert sorted(b.key for b in expired) == ["edge", "old"]
    assert [b.key for b in alice.registrations_for("sip:alice@127.0.0.1:5060")] == ["new"]
    assert alice.expire_bindings(200.0) == ()


def test_expire_bindings_at_most_so_many_the_earliest_first(alice: Store) -> None:
    for key, expires_at in [("c", 130.0), ("a", 110.0), ("live", 900.0), ("b", 120.0)]:
        alice.upsert_binding(binding(key, expires_at=expires_at))
    assert [b.key for b in alice.expire_bindings(200.0, most=2)] in (["a", "b"], ["b", "a"])
    assert [b.key for b in alice.expire_bindings(200.0, most=2)] == ["c"]
    assert alice.expire_bindings(200.0, most=2) == ()
    assert [b.key for b in alice.registrations_for("sip:alice@127.0.0.1:5060")] == ["live"]
    with pytest.raises(ValueError, match="at least 1"):
        alice.expire_bindings(200.0, most=0)


def test_binding_remaining() -> None:
    b = binding(expires_at=4600.0)
    assert b.remaining(1000.0) == 3600
    assert b.remaining(4599.6) == 0
    assert b.remaining(5000.0) == 0


# -- call records -------------------------------------------------------------------------


def test_call_record_life(store: Store) -> None:
    store.call_record_insert(CallRecord("c1", "sip:a@x", "sip:b@y", started_at=10.0))
    updated = store.call_record_update("c1", answered_at=12.0)
    assert updated.answered_at == 12.0 and updated.ended_at is None
    updated = store.call_record_update(
        "c1",
        ended_at=70.0,
        end_reason="caller-bye",
        security={"legs": [{"side": "a", "key_exchange": "sdes"}]},
    )
    assert (updated.answered_at, updated.ended_at, updated.end_reason) == (12.0, 70.0, "caller-bye")
    assert updated.security == {"legs": [{"side": "a", "key_exchange": "sdes"}]}
    assert store.call_record_get("c1") == updated
    assert store.call_record_update("c1", answered_at=None).answered_at is None
    assert store.call_record_update("c1") == store.call_record_get("c1")


def test_call_record_errors(store: Store) -> None:
    store.call_record_insert(CallRecord("c1", "sip:a@x", "sip:b@y", started_at=10.0))
    with pytest.raises(CallRecordExists):
        store.call_record_insert(CallRecord("c1", "sip:a@x", "sip:b@y", started_at=11.0))
    with pytest.raises(CallRecordNotFound):
        store.call_record_update("nope", ended_at=1.0)
    with pytest.raises(InvalidValue):
        store.call_record_update("c1", security={"x": object()})
    with pytest.raises(InvalidValue):
        store.call_record_insert(CallRecord("c2", "a", "b", started_at=1.0, security_json="{"))
    assert store.call_record_get("nope") is None


def test_call_records_save_inserts_and_replaces_in_one_transaction(store: Store) -> None:
    store.call_record_insert(CallRecord("c1", "sip:a@x", "sip:b@y", started_at=10.0))
    ended = CallRecord(
        "c1", "sip:a@x", "sip:b@y", 10.0, 12.0, 70.0, "BYE from A leg", '{"a": {"suite": "x"}}'
    )
    new = CallRecord("c2", "sip:c@x", "sip:d@y", started_at=11.0)
    store.call_records_save([ended, new])
    assert store.call_record_get("c1") == ended
    assert store.call_record_get("c2") == new
    # All or nothing: one bad record keeps the others out too.
    with pytest.raises(InvalidValue):
        store.call_records_save(
            [
                CallRecord("c3", "a", "b", started_at=1.0),
                CallRecord("c4", "a", "b", started_at=1.0, security_json="{"),
            ]
        )
    assert store.call_record_get("c3") is None
    store.call_records_save([])
    assert [r.call_id for r in store.call_records_recent()] == ["c2", "c1"]


def test_unfinished_calls_of_a_killed_run_are_ended(store: Store) -> None:
    store.call_record_insert(CallRecord("up", "a", "b", started_at=1.0))
    store.call_record_insert(CallRecord("done", "a", "b", 1.0, 2.0, 3.0, "caller-bye"))
    assert store.call_records_end_unfinished(9.0, "gateway stopped") == 1
    assert store.call_record_get("up") == CallRecord(
        "up", "a", "b", 1.0, None, 9.0, "gateway stopped"
    )
    done = store.call_record_get("done")
    assert done is not None and (done.ended_at, done.end_reason) == (3.0, "caller-bye")
    assert store.call_records_end_unfinished(10.0, "gateway stopped") == 0


def test_old_call_records_are_deleted_oldest_first_at_most_so_many(store: Store) -> None:
    """Retention (``[store] call_record_days``): by the end, or the start of a record
    without one; newer ones stay, whatever their start."""
    store.call_records_save(
        [
            CallRecord("ended-early", "a", "b", 10.0, 11.0, 20.0, "bye"),
            CallRecord("ended-later", "a", "b", 12.0, None, 30.0, "cancel"),
            CallRecord("unfinished-old", "a", "b", 40.0),
            CallRecord("long-call", "a", "b", 5.0, 6.0, 150.0, "bye"),  # started before
            CallRecord("unfinished-new", "a", "b", 120.0),
            CallRecord("at-the-limit", "a", "b", 90.0, None, 100.0, "bye"),  # not older
        ]
    )
    assert store.expire_call_records(100.0, most=2) == 2
    kept = {record.call_id for record in store.call_records_recent()}
    assert kept == {"unfinished-old", "long-call", "unfinished-new", "at-the-limit"}
    assert store.expire_call_records(100.0, most=2) == 1
    assert store.expire_call_records(100.0, most=2) == 0
    kept = {record.call_id for record in store.call_records_recent()}
    assert kept == {"long-call", "unfinished-new", "at-the-limit"}
    with pytest.raises(ValueError):
        store.expire_call_records(100.0, most=0)


def test_the_oldest_call_record_is_by_its_end_or_its_start(store: Store) -> None:
    """What the metrics show retention by (``voipgw_call_records_oldest_time_seconds``)."""
    assert store.oldest_call_record() is None
    store.call_records_save(
        [
            CallRecord("long-call", "a", "b", 5.0, 6.0, 150.0, "bye"),  # started first
            CallRecord("unfinished", "a", "b", 40.0),
            CallRecord("ended", "a", "b", 10.0, None, 30.0, "cancel"),
        ]
    )
    assert store.oldest_call_record() == 30.0
    store.expire_call_records(35.0, most=10)
    assert store.oldest_call_record() == 40.0  # by its start: it has no end


def test_the_retention_query_uses_an_index(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        with store._read() as db:  # what expire_call_records selects
            plan = db.execute(
                "EXPLAIN QUERY PLAN SELECT id FROM call_records"
                " WHERE COALESCE(ended_at, started_at) < ?"
                " ORDER BY COALESCE(ended_at, started_at) LIMIT ?",
                (1.0, 10),
            ).fetchall()
            oldest = db.execute(  # what oldest_call_record selects
                "EXPLAIN QUERY PLAN SELECT COALESCE(ended_at, started_at) FROM call_records"
                " ORDER BY COALESCE(ended_at, started_at) LIMIT 1"
            ).fetchall()
    finally:
        store.close()
    assert "USING INDEX call_records_kept_by" in " ".join(row[-1] for row in plan)
    assert "USING INDEX call_records_kept_by" in " ".join(row[-1] for row in oldest)


def test_recent_call_records(store: Store) -> None:
    for i in range(5):
        store.call_record_insert(CallRecord(f"c{i}", "a", "b", started_at=float(i)))
    assert [r.call_id for r in store.call_records_recent(3)] == ["c4", "c3", "c2"]


def test_call_records_of_a_call_id_among_every_record(store: Store) -> None:
    """``voipgw calls --call-id``: a SIP Call-ID's records (``Call-ID;tag``) and a record by its
    id, newest first, however many newer records there are (session 41)."""
    store.call_records_save(
        [
            CallRecord("x@h;t1", "a", "b", started_at=1.0),
            CallRecord("x@h;t2", "a", "b", started_at=2.0),
            CallRecord("x@h<;t3", "a", "b", started_at=3.0),
            CallRecord("x@h0;t4", "a", "b", started_at=4.0),
            CallRecord("x@h;t5;t6", "a", "b", started_at=5.0),
            CallRecord("x;t7", "a", "b", started_at=6.0),
            *(CallRecord(f"n{i}@h;t", "a", "b", started_at=10.0 + i) for i in range(1200)),
        ]
    )
    found = store.call_records_of_call_id
    assert [r.call_id for r in found("x@h")] == ["x@h;t2", "x@h;t1"]
    assert [r.call_id for r in found("x@h", 1)] == ["x@h;t2"]
    assert [r.call_id for r in found("x@h;t1")] == ["x@h;t1"]
    assert [r.call_id for r in found("x@h;t5")] == ["x@h;t5;t6"]
    assert [r.call_id for r in found("x")] == ["x;t7"]
    for nobody in ("x@", "x@h;", "x@h;t", "t1", ""):
        assert found(nobody) == (), nobody


def test_call_records_of_a_call_id_are_read_through_the_id_index(tmp_path: Path) -> None:
    """Both arms of the query search the UNIQUE index on call_id: no record read that is not
    the Call-ID's, whatever the table's size."""
    store = SqliteStore.open(tmp_path / "state")
    statements: list[str] = []
    try:
        store._db.set_trace_callback(statements.append)
        store.call_records_of_call_id("x@h")
        store._db.set_trace_callback(None)
        (query,) = [s for s in statements if s.lstrip().startswith("SELECT")]
        plan = [row[3] for row in store._db.execute(f"EXPLAIN QUERY PLAN {query}")]
    finally:
        store.close()
    searches = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
    assert searches == [
        "SEARCH call_records USING INDEX sqlite_autoindex_call_records_1 (call_id=?)",
        "SEARCH call_records USING INDEX sqlite_autoindex_call_records_1 (call_id>? AND call_id<?)",
    ], plan


# -- the account cache ----------------------------------------------------------------------


class Ticks:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def pass_recheck_interval(self) -> None:
        self.now += CACHE_RECHECK_SECONDS


def test_an_account_changed_by_another_process_is_read_again(tmp_path: Path) -> None:
    ticks = Ticks()
    gateway = SqliteStore.open(tmp_path / "state", monotonic=ticks)
    cli = SqliteStore.open(tmp_path / "state")  # voipgw accounts, another connection
    try:
        assert gateway.get_account("alice") is None
        cli.accounts_add("alice", "secret-password-1", "gw.example")
        ticks.pass_recheck_interval()
        alice = gateway.get_account("alice")
        assert alice is not None and alice.enabled
        cli.accounts_set("alice", enabled=False)
        ticks.pass_recheck_interval()
        changed = gateway.get_account("alice")
        assert changed is not None and not changed.enabled
        cli.accounts_remove("alice")
        ticks.pass_recheck_interval()
        assert gateway.get_account("alice") is None
    finally:
        gateway.close()
        cli.close()


def test_another_process_s_change_is_seen_after_the_recheck_interval(tmp_path: Path) -> None:
    # Within the interval the cache is used without asking SQLite (PRAGMA data_version).
    ticks = Ticks()
    gateway = SqliteStore.open(tmp_path / "state", monotonic=ticks)
    cli = SqliteStore.open(tmp_path / "state")
    try:
        cli.accounts_add("alice", "secret-password-1", "gw.example")
        before = gateway.get_account("alice")
        assert before is not None and before.enabled
        cli.accounts_set("alice", enabled=False)
        ticks.now += CACHE_RECHECK_SECONDS / 2
        assert gateway.get_account("alice") is before  # not asked yet
        ticks.now += CACHE_RECHECK_SECONDS / 2
        after = gateway.get_account("alice")
        assert after is not None and not after.enabled
    finally:
        gateway.close()
        cli.close()


def test_an_account_changed_through_the_same_store_is_read_again(store: Store) -> None:
    assert store.get_account("alice") is None
    store.accounts_add("alice", "secret-password-1", "gw.example")
    first = store.get_account("alice")
    assert first is not None and first.media_policy == "best-effort"
    assert store.get_account("alice") is first  # from memory
    store.accounts_set("alice", media_policy="sdes")
    again = store.get_account("alice")
    assert again is not None and again.media_policy == "sdes"


def test_bindings_changed_by_another_process_are_read_again(tmp_path: Path) -> None:
    ticks = Ticks()
    gateway = SqliteStore.open(tmp_path / "state", monotonic=ticks)
    cli = SqliteStore.open(tmp_path / "state")  # another connection (another gateway, a tool)
    try:
        gateway.accounts_add("alice", PASSWORD, REALM)
        assert gateway.bindings_for_account("alice") == ()
        cli.upsert_binding(binding())
        ticks.pass_recheck_interval()
        assert [b.key for b in gateway.bindings_for_account("alice")] == [binding().key]
        cli.remove_binding(binding().aor, binding().key)
        ticks.pass_recheck_interval()
        assert gateway.bindings_for_account("alice") == ()
    finally:
        gateway.close()
        cli.close()


def test_bindings_from_memory_follow_own_writes_and_expiry(store: Store) -> None:
    store.accounts_add("alice", PASSWORD, REALM)
    store.upsert_binding(binding(expires_at=100.0))
    first = store.bindings_for_account("alice")
    assert store.bindings_for_account("alice") is first  # from memory
    # Expiry is applied to the cached list: best first, expired ones left out.
    store.upsert_binding(binding("sip:alice@192.0.2.2:5062", expires_at=200.0, q=0.5))
    keys = [b.key for b in store.bindings_for_account("alice", now=50.0)]
    assert keys == ["sip:alice@192.0.2.1:5062", "sip:alice@192.0.2.2:5062"]
    assert [b.key for b in store.bindings_for_account("alice", now=150.0)] == [
        "sip:alice@192.0.2.2:5062"
    ]
    assert store.bindings_for_account("alice", now=250.0) == ()
    # A call record written by the same store keeps the cache; a registration change does not.
    cached = store.bindings_for_account("alice")
    store.call_records_save([CallRecord("c1", "a", "b", started_at=1.0)])
    assert store.bindings_for_account("alice") is cached
    store.remove_binding(binding().aor, "sip:alice@192.0.2.1:5062")
    assert [b.key for b in store.bindings_for_account("alice")] == ["sip:alice@192.0.2.2:5062"]


def test_binding_expiries_of_many_accounts_at_once(store: Store) -> None:
    """What presence from registration polls: each name's unexpired bindings' expiries, every
    AOR of the account, a key for every name asked (none: ``[]``), bounded per call."""
    for name in ("alice", "bob", "carol"):
        store.accounts_add(name, PASSWORD, REALM)
    store.upsert_binding(binding(expires_at=100.0))
    other_aor = binding(
        "sip:alice@192.0.2.2:5062", aor="sip:alice@example.org", expires_at=200.0, q=0.5
    )
    store.upsert_binding(other_aor)
    store.upsert_binding(
        binding(
            "sip:bob@192.0.2.3:5062", aor="sip:bob@127.0.0.1:5060", account="bob", expires_at=40.0
        )
    )
    found = store.binding_expiries(["alice", "bob", "carol", "nobody", "alice"], now=50.0)
    assert {name: sorted(expiries) for name, expiries in found.items()} == {
        "alice": [100.0, 200.0],
        "bob": [],  # expired at 40
        "carol": [],
        "nobody": [],
    }
    assert store.binding_expiries(["alice"], now=150.0) == {"alice": [200.0]}
    assert store.binding_expiries(["bob"], now=30.0) == {"bob": [40.0]}
    assert store.binding_expiries([], now=50.0) == {}
    most = [f"user{i}" for i in range(MAX_BULK_ACCOUNTS)]
    assert store.binding_expiries(most, now=50.0) == {name: [] for name in most}
    with pytest.raises(ValueError, match="at most"):
        store.binding_expiries([*most, "one-more"], now=50.0)


def test_binding_expiries_ask_sqlite_once_and_bypass_the_cache(tmp_path: Path) -> None:
    """One statement per call, whatever the number of names; not from the cache, which it
    leaves as it was (a poll's thousands of names would push out what calls read)."""
    frozen = SqliteStore.open(tmp_path / "state", monotonic=lambda: 0.0)  # cache never rechecked
    other = SqliteStore.open(tmp_path / "state")  # another process: voipgw accounts, the CLI
    try:
        frozen.accounts_add("alice", PASSWORD, REALM)
        assert frozen.bindings_for_account("alice") == ()  # cached, and trusted from now on
        other.upsert_binding(binding(expires_at=100.0))
        assert frozen.bindings_for_account("alice") == ()  # the cache did not see it
        statements: list[str] = []
        frozen._db.set_trace_callback(statements.append)
        names = ["alice", *(f"nobody{i}" for i in range(300))]
        found = frozen.binding_expiries(names, now=50.0)
        frozen._db.set_trace_callback(None)
        assert found["alice"] == [100.0] and len(found) == 301
        assert len(statements) == 1
        assert set(frozen._bindings) == {"alice"}  # neither filled nor dropped
    finally:
        frozen.close()
        other.close()


def test_the_account_cache_is_bounded(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[type(store).__module__], "ACCOUNT_CACHE_ENTRIES", 3)
    cache: Any = store
    # PostgreSQL keeps names no account has apart, so they never push real accounts out.
    unknown = getattr(cache, "_absent", cache._accounts)
    for i in range(10):  # unknown names from the network
        assert store.get_account(f"nobody{i}") is None
        assert 1 <= len(unknown) <= 3
        assert store.bindings_for_account(f"nobody{i}") == ()
        assert 1 <= len(cache._bindings) <= 3


def publication(etag: str, expires_at: float = 2000.0, account: str = "alice", **kw: Any) -> Any:
    fields = {"published_at": 1000.0, "open": True, "definite": True, "body": b"<doc/>"}
    fields.update(kw)
    return StoredPublication(account, etag, expires_at, **fields)


def test_presence_publications_are_saved_replaced_and_removed_by_entity_tag(store: Store) -> None:
    """What a PUBLISH on one node leaves for the others (gateway/core/calls/presence.py): a
    publication under its entity tag; a refresh or modification replaces the version it named
    (a new tag), a removal deletes it, each only while the store still has that version (else
    nothing is written: 412); the document is not in a repr (personal data)."""
    first = publication("e1", body=b"<presence>open</presence>")
    assert store.publication_save("alice", first, replaces=None, now=1000.0, most=4)
    assert store.publications_of(["alice", "bob"], now=1000.0) == {"alice": [first], "bob": []}
    modified = publication("e2", 3000.0, published_at=1500.0, open=False, body=b"<closed/>")
    assert store.publication_save("alice", modified, replaces="e1", now=1500.0, most=4)
    assert store.publications_of(["alice"], now=1500.0) == {"alice": [modified]}
    assert "closed" not in repr(modified)
    # e1 was superseded (as by another node): a second refresh of it writes nothing.
    assert not store.publication_save("alice", publication("e3"), replaces="e1", now=1.0, most=4)
    assert not store.publication_save("bob", None, replaces="e2", now=1600.0, most=4)
    assert store.publications_of(["alice"], now=1500.0) == {"alice": [modified]}
    assert store.publication_save("alice", None, replaces="e2", now=1600.0, most=4)
    assert store.publications_of(["alice"], now=1600.0) == {"alice": []}
    # One replaced by a new publication of the account's (a fifth phone's) is dropped.
    store.publication_save("alice", first, replaces=None, now=1000.0, most=4)
    store.publication_save("alice", modified, replaces=None, dropped=["e1"], now=1000.0, most=4)
    assert store.publications_of(["alice"], now=1000.0) == {"alice": [modified]}
    with pytest.raises(InvalidValue):
        store.publication_save("bob", publication("e3"), replaces=None, now=1.0, most=4)


def test_an_account_keeps_its_latest_expiring_publications_across_writers(store: Store) -> None:
    """Each write trims the account to ``most`` (those expiring first go) and drops its expired
    ones: the store holds a few per account whichever nodes wrote them; reads skip expired."""
    for n, expires_at in enumerate((1500.0, 4000.0, 2500.0, 3000.0)):
        store.publication_save(
            "alice", publication(f"e{n}", expires_at), replaces=None, now=1000.0, most=4
        )
    store.publication_save(
        "bob", publication("b1", 1200.0, "bob"), replaces=None, now=1000.0, most=4
    )
    store.publication_save("alice", publication("e9", 5000.0), replaces=None, now=1000.0, most=4)
    found = store.publications_of(["alice", "bob"], now=1000.0)
    assert sorted(p.etag for p in found["alice"]) == ["e1", "e2", "e3", "e9"]  # e0 went first
    assert [p.etag for p in found["bob"]] == ["b1"]
    assert store.publications_of(["bob"], now=1200.0) == {"bob": []}  # expired: not read
    store.publication_save("alice", publication("e8", 6000.0), replaces=None, now=2600.0, most=4)
    assert sorted(p.etag for p in store.publications_of(["alice"], now=2600.0)["alice"]) == [
        "e1",
        "e3",
        "e8",
        "e9",
    ]  # e2 expired at 2500: deleted by that write
    most = [f"user{i}" for i in range(MAX_BULK_ACCOUNTS)]
    assert store.publications_of(most, now=1.0) == {name: [] for name in most}
    with pytest.raises(ValueError, match="at most"):
        store.publications_of([*most, "one-more"], now=1.0)


def test_expired_presence_publications_are_deleted_in_chunks(store: Store) -> None:
    for n in range(5):
        account = f"user{n}"
        store.publication_save(
            account, publication(f"e{n}", 100.0 + n, account), replaces=None, now=0.0, most=4
        )
    store.publication_save("alice", publication("live", 900.0), replaces=None, now=0.0, most=4)
    assert store.expire_publications(200.0, most=3) == 3
    assert store.expire_publications(200.0, most=3) == 2
    assert store.expire_publications(200.0, most=3) == 0
    names = ["alice", *(f"user{n}" for n in range(5))]
    assert sum(len(found) for found in store.publications_of(names, now=0.0).values()) == 1
    with pytest.raises(ValueError):
        store.expire_publications(200.0, most=0)
