"""The PostgreSQL store against a real server (tests/pgcluster.py): two nodes on one database
see each other's changes, a lost listener turns the cache off and back on, a stopped server
fails calls quickly and is reconnected to, and no secret reaches a log, an error or a repr."""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from pgcluster import Cluster, StallingProxy

from gateway.core.auth.algorithms import DigestAlgorithm
from gateway.core.store import postgresql as pg_module
from gateway.core.store.errors import SchemaError, StoreBusy, StoreError, StoreUnavailable
from gateway.core.store.interface import Binding, BindingFlow, CallRecord, StoredPublication
from gateway.core.store.postgresql import MIGRATIONS, PostgresStore
from tests.port_blocks import PortLease

PASSWORD = "s3cret-Pa55word"
REALM = "voipgw.local"
AOR = "sip:alice@127.0.0.1:5060"
REPO = Path(__file__).parents[2]


def binding(key: str = "sip:alice@192.0.2.1:5062", **changes: object) -> Binding:
    values: dict[str, object] = {
        "aor": AOR,
        "key": key,
        "account": "alice",
        "contact": key,
        "expires_at": time.time() + 3600,
        "call_id": "call-1",
        "cseq": 1,
        "flow": BindingFlow("udp", "127.0.0.1:5060", "127.0.0.1:40000"),
    }
    values.update(changes)
    return Binding(**values)  # type: ignore[arg-type]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.005)


@pytest.fixture
def open_node(
    postgres_cluster: Cluster, postgres_database: str
) -> Iterator[Callable[..., PostgresStore]]:
    """Opens stores ("nodes") on the test's database, listening, and closes them after."""
    opened: list[PostgresStore] = []

    def open_one(dsn: str | None = None, **options: object) -> PostgresStore:
        dsn = postgres_cluster.dsn(postgres_database) if dsn is None else dsn
        store = PostgresStore.open(dsn, **options)  # type: ignore[arg-type]
        opened.append(store)
        if options.get("listen", True):
            wait_until(lambda: store.listening)
        return store

    yield open_one
    for store in opened:
        store.close()


def test_two_nodes_see_each_other_s_accounts_and_bindings(
    open_node: Callable[..., PostgresStore],
) -> None:
    a, b = open_node(), open_node()
    a.accounts_add("alice", PASSWORD, REALM)
    # From memory once A's notification has come in (until the next one says otherwise).
    wait_until(lambda: b.get_account("alice") is b.get_account("alice") is not None)
    assert b.bindings_for_account("alice") == ()
    assert b.registrations_for(AOR) == ()

    a.upsert_binding(binding())  # a REGISTER taken by node A
    wait_until(lambda: [x.key for x in b.bindings_for_account("alice")] == [binding().key])
    wait_until(lambda: len(b.registrations_for(AOR)) == 1)

    b.accounts_set("alice", enabled=False)  # voipgw accounts set, against node B
    wait_until(lambda: getattr(a.get_account("alice"), "enabled", True) is False)

    a.remove_binding(AOR, binding().key)
    wait_until(lambda: b.bindings_for_account("alice") == () and b.registrations_for(AOR) == ())

    b.upsert_binding(binding("sip:alice@192.0.2.9:5062"))
    a.accounts_remove("alice")  # cascades to the bindings B wrote
    wait_until(lambda: b.get_account("alice") is None)
    wait_until(lambda: b.bindings_for_account("alice") == () and b.registrations_for(AOR) == ())


def test_a_change_made_by_hand_in_sql_reaches_the_cache(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    node = open_node()
    node.accounts_add("alice", PASSWORD, REALM)
    assert node.get_account("alice") is node.get_account("alice")
    postgres_cluster.admin("UPDATE accounts SET max_calls = 7", postgres_database)
    wait_until(lambda: getattr(node.get_account("alice"), "max_calls", 0) == 7)
    postgres_cluster.admin("TRUNCATE accounts CASCADE", postgres_database)
    wait_until(lambda: node.get_account("alice") is None)


def test_a_read_that_raced_a_notification_is_not_kept(
    open_node: Callable[..., PostgresStore],
) -> None:
    # The window cannot be hit on purpose through the public calls: a read from the database,
    # a notification for it while the read is on its way back, then the read's result.
    node = open_node()
    node.accounts_add("alice", PASSWORD, REALM)
    stale = node.get_account("alice")
    node._forget_all()
    missing, epoch = node._cached(node._accounts, "alice")
    assert missing is pg_module._MISSING
    node._notified("aalice")  # another node changed alice meanwhile
    node._fill(node._accounts, "alice", stale, epoch)
    assert "alice" not in node._accounts
    node._fill(node._accounts, "alice", stale, node._cached(node._accounts, "alice")[1])
    assert node._accounts["alice"] is stale  # without a notification in between it is kept


def test_a_change_too_long_to_name_drops_every_cache_instead_of_failing(
    open_node: Callable[..., PostgresStore],
) -> None:
    # NOTIFY payloads are at most 8000 bytes; the trigger sends "*" for a longer one rather
    # than fail the REGISTER that made it.
    a, b = open_node(), open_node()
    a.accounts_add("alice", PASSWORD, REALM)
    wait_until(lambda: b.get_account("alice") is b.get_account("alice") is not None)
    long_aor = "sip:alice@" + "x" * 9000 + ".example"
    a.upsert_binding(binding(aor=long_aor))
    wait_until(lambda: "alice" not in b._accounts)  # dropped with everything else
    assert [x.aor for x in b.registrations_for(long_aor)] == [long_aor]


def test_a_killed_listener_turns_the_cache_off_until_it_is_back(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A window to look into, wide enough for a machine busy with other tests.
    monkeypatch.setattr(pg_module, "RECONNECT_INTERVAL", 6.0)
    a, b = open_node(), open_node()
    a.accounts_add("alice", PASSWORD, REALM)
    wait_until(lambda: b.get_account("alice") is b.get_account("alice") is not None)  # cached

    assert postgres_cluster.terminate(postgres_database, "voipgw listener") == 2
    wait_until(lambda: not b.listening)
    # The listener thread turns the cache off first, then logs: the line may follow a moment
    # after (CI once looked in between).
    wait_until(lambda: "is failing: connection lost: " in caplog.text)
    # While it is down no notification can arrive: every read goes to the database.
    a.accounts_set("alice", media_policy="sdes")
    changed = b.get_account("alice")
    assert changed is not None and changed.media_policy == "sdes"
    assert b.get_account("alice") is not changed  # read again, not kept

    wait_until(lambda: b.listening)
    assert b.get_account("alice") is b.get_account("alice")  # cached again
    a.accounts_set("alice", media_policy="dtls")
    wait_until(lambda: getattr(b.get_account("alice"), "media_policy", "") == "dtls")


def test_a_stopped_server_fails_calls_at_once_and_is_reconnected_to(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster
) -> None:
    node = open_node(statement_timeout=0.5)
    node.accounts_add("alice", PASSWORD, REALM)
    postgres_cluster.stop()
    try:
        for attempt in range(3):
            started = time.monotonic()
            with pytest.raises(StoreBusy) as failed:
                node.upsert_binding(binding(cseq=attempt + 1))
            # At once: the caller's thread never waits for a connection (connect_timeout 5 s).
            assert time.monotonic() - started < 2.0
            assert isinstance(failed.value, StoreUnavailable)
        wait_until(lambda: not node.listening)
        with pytest.raises(StoreUnavailable):
            node.get_account("alice")  # no cache without a listener
    finally:
        postgres_cluster.start()

    def works() -> bool:
        try:
            node.upsert_binding(binding(cseq=9))
        except StoreUnavailable:
            return False
        return True

    wait_until(works)
    wait_until(lambda: node.listening)
    assert [b.cseq for b in node.bindings_for_account("alice")] == [9]


def test_a_listener_that_stays_down_is_logged_once_summarized_and_once_more_when_back(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A reconnection every second while the server is down: one WARNING, not one per attempt.
    caplog.set_level(logging.INFO, logger="gateway.core.store.postgresql")
    node = open_node()
    wait_until(lambda: node.listening)
    node.listener_failures.interval = 2.0  # a summary within the test, not after 300 s
    caplog.clear()

    def lines(words: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if words in r.getMessage()]

    postgres_cluster.stop()
    try:
        wait_until(lambda: len(lines("is still failing")) == 1)
        node.listener_failures.interval = 3600.0  # no second one while the server starts
    finally:
        postgres_cluster.start()
    wait_until(lambda: len(lines("answers again")) == 1)
    [first] = lines("is failing")
    [summary] = lines("is still failing")
    [back] = lines("answers again")
    assert first.levelno == summary.levelno == logging.WARNING and back.levelno == logging.INFO
    where = f"store listener (PostgreSQL host=127.0.0.1 port={postgres_cluster.port} "
    assert first.getMessage().startswith(where)
    assert "is failing: connection lost: " in first.getMessage()
    assert "cache off until it is back" in first.getMessage()
    assert re.search(
        r"still failing: \d+ failed connection attempts in the last", summary.getMessage()
    )
    assert back.getMessage().endswith(
        "; cache on (emptied first: changes made meanwhile were never notified)"
    )
    assert first.created < summary.created < back.created
    assert node.listening
    assert postgres_cluster.password not in caplog.text


def test_a_lock_held_past_the_statement_timeout_is_store_busy(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    import psycopg

    node = open_node(statement_timeout=0.2)
    node.accounts_add("alice", PASSWORD, REALM)
    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database)) as holder:
        holder.execute("SELECT * FROM accounts FOR UPDATE")  # an operator's open transaction
        started = time.monotonic()
        with pytest.raises(StoreBusy, match="statement_timeout"):
            node.accounts_set("alice", max_calls=3)
        assert time.monotonic() - started < 1.5
        holder.rollback()
    assert node.accounts_set("alice", max_calls=3).max_calls == 3


def test_no_secret_in_logs_errors_or_reprs(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    db_password = postgres_cluster.password
    node = open_node()
    account = node.accounts_add("alice", PASSWORD, REALM)
    ha1 = account.ha1_for(REALM, DigestAlgorithm.SHA_256)
    assert ha1 is not None
    errors: list[str] = [repr(node), str(node), repr(account)]
    postgres_cluster.terminate(postgres_database)  # lost connections get logged
    for _ in range(2):
        try:
            node.get_account("alice")
        except StoreError as exc:
            errors.append(str(exc))
    wait_until(lambda: node.listening)
    cluster, database = postgres_cluster, postgres_database
    uri = f"postgresql://voipgw:{db_password}@127.0.0.1:{cluster.port}/{database}"
    by_uri = PostgresStore.open(uri, listen=False)
    errors.append(repr(by_uri))
    shown = f"host=127.0.0.1 port={cluster.port} dbname={database} user=voipgw"
    assert repr(by_uri) == f"<PostgresStore {shown}>"
    by_uri.close()
    wrong = postgres_cluster.dsn(postgres_database, with_password=False) + " password=wrong-pw"
    with pytest.raises(StoreUnavailable) as refused:
        PostgresStore.open(wrong)
    errors.append(str(refused.value))
    assert "password authentication failed" in str(refused.value)
    with pytest.raises(StoreError) as bad:
        PostgresStore.open(f"host=127.0.0.1 password={db_password} =broken")
    errors.append(str(bad.value))
    text = caplog.text + "\n".join(errors)
    assert "connection lost" in text
    for secret in (db_password, "wrong-pw", PASSWORD, ha1):
        assert secret not in text


def test_the_schema_is_migrated_once_and_a_newer_one_refused(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    first = open_node(listen=False)
    assert first.schema_version() == len(MIGRATIONS)
    open_node(listen=False)  # a second node: nothing applied twice
    rows = postgres_cluster.admin("SELECT version FROM schema_version", postgres_database)
    assert rows == [(version,) for version, _ in MIGRATIONS]

    broken = (*MIGRATIONS, (len(MIGRATIONS) + 1, ("CREATE TABLE probe (x int)", "NOT SQL")))
    with pytest.raises(SchemaError, match="cannot bring the schema up to date"):
        open_node(migrations=broken)
    tables = postgres_cluster.admin(
        "SELECT 1 FROM pg_tables WHERE tablename = 'probe'", postgres_database
    )
    assert tables == []

    postgres_cluster.admin("INSERT INTO schema_version VALUES (99, 0)", postgres_database)
    with pytest.raises(SchemaError, match="newer voipgw"):
        open_node()


def test_a_rolling_upgrade_migrates_once_and_an_old_node_is_told_to_upgrade(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    latest = len(MIGRATIONS)
    # The cluster ran the previous release (schema latest - 1); one node is upgraded.
    old_node = open_node(listen=False, migrations=MIGRATIONS[:-1])
    assert old_node.schema_version() == latest - 1
    with caplog.at_level(logging.WARNING, logger="gateway.core.store.postgresql"):
        open_node(listen=False)
    migrated = [r.getMessage() for r in caplog.records if "schema migrated" in r.getMessage()]
    assert len(migrated) == 1
    assert f"from version {latest - 1} to {latest}" in migrated[0]
    assert "upgrade each before restarting it" in migrated[0]
    # A node not yet upgraded, restarted: refused, told what to do, with the versions.
    with pytest.raises(SchemaError) as refused:
        open_node(listen=False, migrations=MIGRATIONS[:-1])
    message = str(refused.value)
    assert f"schema version {latest} was written by a newer voipgw" in message
    assert f"understands schema versions up to {latest - 1}" in message
    assert f"(one that knows schema version {latest})" in message
    assert "password" not in message and postgres_cluster.password not in message
    # A migration the role may not apply (here: the owner took the tables away from it).
    postgres_cluster.admin("ALTER TABLE call_limit_nodes OWNER TO postgres", postgres_database)
    extra = (*MIGRATIONS, (latest + 1, ("ALTER TABLE call_limit_nodes ADD COLUMN x INT",)))
    with pytest.raises(SchemaError) as failed:
        open_node(listen=False, migrations=extra)
    message = str(failed.value)
    assert f"it is at version {latest}, this voipgw" in message
    assert f"needs version {latest + 1}, and migration {latest + 1} failed" in message
    assert "must be owner of table call_limit_nodes" in message
    assert "run `voipgw migrate-store --config FILE`" in message  # as the owner
    rows = postgres_cluster.admin("SELECT MAX(version) FROM schema_version", postgres_database)
    assert rows == [(latest,)]


def test_call_records_are_not_cached_and_a_bad_batch_rolls_back(
    open_node: Callable[..., PostgresStore],
) -> None:
    a, b = open_node(), open_node()
    a.call_records_save([CallRecord("c1", "sip:a@x", "sip:b@y", 1.0, security_json='{"b": 1}')])
    record = b.call_record_get("c1")
    assert record is not None and record.security_json == '{"b": 1}'  # the text as written


def test_a_starting_node_ends_only_its_own_unfinished_calls(
    open_node: Callable[..., PostgresStore],
) -> None:
    a, b = open_node(node="edge-a"), open_node(node="edge-b")
    a.call_record_insert(CallRecord("on-a", "sip:a@x", "sip:b@y", 1.0))
    b.call_records_save([CallRecord("on-b", "sip:c@x", "sip:d@y", 2.0)])
    # Node B restarts after being killed: its call ended, A's call is still up.
    assert b.call_records_end_unfinished(50.0, "gateway stopped") == 1
    on_a, on_b = a.call_record_get("on-a"), a.call_record_get("on-b")
    assert on_a is not None and on_a.ended_at is None
    assert on_b is not None and (on_b.ended_at, on_b.end_reason) == (50.0, "gateway stopped")
    assert a.call_records_end_unfinished(60.0, "gateway stopped") == 1


def test_two_nodes_deleting_old_call_records_skip_each_other_s_rows(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    """Every node's housekeeping deletes old records (any node's): a row another node is
    deleting at that moment is skipped, not waited for (no StoreBusy), and goes later."""
    import psycopg

    a, b = open_node(node="edge-a", statement_timeout=0.2), open_node(node="edge-b")
    a.call_records_save(
        [CallRecord(f"a{i}", "sip:a@x", "sip:b@y", 10.0, None, 20.0 + i) for i in range(5)]
    )
    b.call_records_save(
        [CallRecord(f"b{i}", "sip:a@x", "sip:b@y", 10.0, None, 30.0 + i) for i in range(5)]
        + [CallRecord("up", "sip:a@x", "sip:b@y", 15.0), CallRecord("new", "a", "b", 90.0)]
    )
    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database)) as other:
        # Another node's slice in progress: the three oldest ("up" by its start, a0, a1).
        other.execute(
            "SELECT id FROM call_records ORDER BY COALESCE(ended_at, started_at) LIMIT 3 FOR UPDATE"
        )
        assert a.expire_call_records(50.0, most=4) == 4
        assert a.expire_call_records(50.0, most=4) == 4  # the rest of b's
        assert a.expire_call_records(50.0, most=4) == 0  # only the locked ones are left
        other.rollback()
    assert b.expire_call_records(50.0, most=4) == 3
    assert [record.call_id for record in b.call_records_recent()] == ["new"]


def test_a_schema_5_database_gets_the_call_record_retention_index(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    old = open_node(listen=False, migrations=MIGRATIONS[:5], node="old")
    old.call_records_save([CallRecord("c1", "a", "b", 1.0, None, 2.0)])
    new = open_node(listen=False, node="new")
    assert new.schema_version() == 6
    indexes = postgres_cluster.admin(
        "SELECT indexname FROM pg_indexes WHERE tablename = 'call_records'", postgres_database
    )
    assert ("call_records_kept_by",) in [tuple(row) for row in indexes]
    assert new.expire_call_records(5.0, most=10) == 1


def index_state(cluster: Cluster, database: str) -> list[tuple[object, ...]]:
    """[(valid,)] for the retention index, [] without one."""
    return cluster.admin(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('call_records_kept_by')",
        database,
    )


def building(cluster: Cluster, database: str) -> bool:
    rows = cluster.admin(
        "SELECT count(*) FROM pg_stat_progress_create_index WHERE relid = 'call_records'::regclass",
        database,
    )
    return bool(rows[0][0])


def test_a_big_tables_retention_index_is_built_concurrently_while_saves_go_on(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Built in migration 6's transaction, the index held a SHARE lock: every node's saves
    waited until it was built (1.5 s a million records). Concurrently, they go on."""
    import psycopg

    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    old = open_node(listen=False, migrations=MIGRATIONS[:5], node="old", statement_timeout=0.2)
    old.call_records_save([CallRecord("c1", "a", "b", 1.0, None, 2.0)])
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)  # "big": built in a thread
    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database)) as reader:
        # A writer's transaction open before the build: CREATE INDEX CONCURRENTLY waits for
        # it to end (PostgreSQL docs, "Building Indexes Concurrently"): the build is held here.
        reader.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")
        new = open_node(node="new")  # a gateway node: it starts at once, the build runs
        wait_until(lambda: building(postgres_cluster, postgres_database))
        assert new.schema_version() == 6
        # An older node's save, and this one's, within 0.2 s: nothing waits for the build.
        old.call_records_save([CallRecord("c2", "a", "b", 3.0, None, 4.0)])
        new.call_records_save([CallRecord("c3", "a", "b", 3.0, None, 5.0)])
        # Retention waits for the index (a seq scan on the event loop, else).
        with pytest.raises(StoreBusy, match="call_records_kept_by is being built"):
            new.expire_call_records(10.0, most=10)
        with pytest.raises(StoreBusy, match="being built"):
            new.oldest_call_record()
        reader.rollback()
    wait_until(lambda: index_state(postgres_cluster, postgres_database) == [(True,)])
    assert new.oldest_call_record() == 2.0
    assert new.expire_call_records(10.0, most=10) == 3
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("building the index call_records_kept_by concurrently" in line for line in infos)
    wait_until(
        lambda: any("call_records_kept_by built in" in r.getMessage() for r in caplog.records)
    )


def test_an_interrupted_build_leaves_an_invalid_index_which_the_next_start_builds_again(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import psycopg

    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    open_node(listen=False, migrations=MIGRATIONS[:5], node="old").call_records_save(
        [CallRecord("c1", "a", "b", 1.0, None, 2.0)]
    )
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)
    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database)) as reader:
        reader.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")  # holds the build
        first = open_node(node="first")
        wait_until(lambda: building(postgres_cluster, postgres_database))
        first.close()  # stopped mid-build: cancelled, not waited for
        reader.rollback()
    assert index_state(postgres_cluster, postgres_database) == [(False,)]  # left invalid
    assert any("stopped with the store" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", 64 * 1024 * 1024)
    caplog.clear()
    again = open_node(listen=False, node="again")  # small: built while it opens
    assert index_state(postgres_cluster, postgres_database) == [(True,)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("call_records_kept_by is invalid" in line for line in warnings)
    assert again.expire_call_records(10.0, most=10) == 1


# The starts' statement_timeout in the test below: what bounds their builds, and every other
# statement of theirs too, which 0.2 s did not always cover on a loaded machine.
STARTS_TIMEOUT = 1.0


def test_a_small_tables_index_build_does_not_hold_the_start_behind_a_long_transaction(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """CREATE INDEX CONCURRENTLY waits for every transaction of the database older than it
    (PostgreSQL docs, "Building Indexes Concurrently"): a session idle in a transaction, a
    pg_dump. Built while the store opens with no statement_timeout, a small table's index
    held the node's start (and any voipgw command) until that transaction ended, for ever
    if it never did. Bounded by statement_timeout, the node starts and builds it in the
    background, as a big table's; the CLI leaves it to the nodes."""
    import psycopg

    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    open_node(listen=False, migrations=MIGRATIONS[:5], node="old").call_records_save(
        [CallRecord("c1", "a", "b", 1.0, None, 2.0)]
    )
    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database)) as reader:
        reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT count(*) FROM call_records").fetchone()  # a snapshot, held
        opened: list[PostgresStore] = []
        starting = threading.Thread(
            target=lambda: opened.append(open_node(node="new", statement_timeout=STARTS_TIMEOUT)),
            daemon=True,
        )
        starting.start()
        wait_until(lambda: not starting.is_alive())  # it started, the transaction still open
        assert opened and opened[0].schema_version() == 6
        cli = open_node(listen=False, node="cli", statement_timeout=STARTS_TIMEOUT)  # a command
        assert cli.schema_version() == 6
        with pytest.raises(StoreBusy, match="being built"):
            opened[0].expire_call_records(10.0, most=10)
        reader.rollback()
    wait_until(lambda: index_state(postgres_cluster, postgres_database) == [(True,)])
    assert opened[0].expire_call_records(10.0, most=10) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_a_nodes_background_build_waits_for_a_lock_holder_that_builds_nothing(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The build's advisory lock a node's background build finds held may be a start's
    bounded try (a voipgw command's, another node's, or this node's own, its backend not yet
    gone), which gives up at statement_timeout while an older transaction is open and builds
    nothing. The background build gave up at once too, and no node built the index until one
    restarted (the test above failed so on a loaded machine, its CLI's try overlapping the
    node's background build); it waits for the lock, then builds the index itself."""
    import psycopg

    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    open_node(listen=False, migrations=MIGRATIONS[:5], node="old").call_records_save(
        [CallRecord("c1", "a", "b", 1.0, None, 2.0)]
    )
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)  # built in the background
    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (pg_module._INDEX_LOCK,))
        node = open_node(node="new")
        said = "another node builds the index call_records_kept_by"
        wait_until(lambda: any(said in record.getMessage() for record in caplog.records))
        assert index_state(postgres_cluster, postgres_database) == []
        other.execute("SELECT pg_advisory_unlock(%s)", (pg_module._INDEX_LOCK,))  # built nothing
    wait_until(lambda: index_state(postgres_cluster, postgres_database) == [(True,)])
    assert node.expire_call_records(10.0, most=10) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


def test_a_node_stopping_mid_build_while_the_cancel_cannot_reach_the_server_still_closes(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """close() cancels a build in progress over a connection of its own (libpq's cancel
    request), which fails when the server is out of reach (a failover, a network cut) as the
    node stops. That failure is the build's, not the stop's: close() still closes the store
    (its listener thread joined, its connection closed) instead of raising psycopg's error
    out of the gateway's shutdown."""
    import psycopg

    open_node(listen=False, migrations=MIGRATIONS[:5], node="old").call_records_save(
        [CallRecord("c1", "a", "b", 1.0, None, 2.0)]
    )
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)
    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database)) as reader:
        reader.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")  # holds the build
        node = open_node(node="stopping")
        wait_until(lambda: building(postgres_cluster, postgres_database))
        builder_db = node._builder_db
        assert builder_db is not None

        def unreachable(**_: object) -> None:
            raise psycopg.OperationalError("cancel failed: could not connect to server")

        monkeypatch.setattr(builder_db, "cancel_safe", unreachable)
        caplog.set_level(logging.WARNING, logger=pg_module.__name__)
        node.close()
        assert node._db is None  # closed all the same
        assert node._thread is not None and not node._thread.is_alive()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("cannot cancel the build" in line for line in warnings)
        reader.rollback()  # the build ends on its own (here: built), its connection closed
    assert node._builder is not None
    node._builder.join(10)
    assert not node._builder.is_alive()


def test_a_node_stopping_mid_build_while_the_cancel_hangs_closes_within_the_bound(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before libpq 17, psycopg's cancel_safe is libpq's blocking PQcancel, whose connect has
    no timeout: with the server's host dropping packets it hangs for the kernel's connect
    retries (about two minutes), and close() (the gateway's shutdown) with it. Here the cancel
    hangs until the test lets it go: close() returns first, the store closed all the same."""
    import psycopg

    open_node(listen=False, migrations=MIGRATIONS[:5], node="old").call_records_save(
        [CallRecord("c1", "a", "b", 1.0, None, 2.0)]
    )
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)
    monkeypatch.setattr(pg_module, "CANCEL_WAIT", 0.2)
    release = threading.Event()
    returned = threading.Event()
    timeouts: list[object] = []

    def hangs(**options: object) -> None:  # a connect to a host that drops packets
        timeouts.append(options.get("timeout"))
        release.wait(60)
        returned.set()

    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database)) as reader:
        reader.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")  # holds the build
        node = open_node(node="stopping")
        wait_until(lambda: building(postgres_cluster, postgres_database))
        builder_db = node._builder_db
        assert builder_db is not None
        monkeypatch.setattr(builder_db, "cancel_safe", hangs)
        caplog.set_level(logging.WARNING, logger=pg_module.__name__)
        node.close()
        assert not returned.is_set()  # close() did not wait for the cancel
        # The canceller thread may run only after close() gave up on it (a loaded machine):
        # waited for, not assumed.
        wait_until(lambda: timeouts == [0.2])  # bounded by psycopg itself with libpq 17
        assert node._db is None
        assert node._thread is not None and not node._thread.is_alive()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert any("was not stopped within 0.2 s" in line for line in warnings)
        release.set()
        reader.rollback()  # the build ends on its own (here: built), its connection closed
    assert node._builder is not None
    node._builder.join(10)
    assert not node._builder.is_alive()


def test_a_node_starting_while_another_builds_the_index_leaves_it_to_that_node(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    """An index being built concurrently is invalid until it is done: only the holder of the
    build's advisory lock may drop an invalid one, else a node starting during another's build
    would undo it."""
    import psycopg

    open_node(listen=False, migrations=MIGRATIONS[:5], node="old").call_records_save(
        [CallRecord("c1", "a", "b", 1.0, None, 2.0), CallRecord("c2", "a", "b", 1.0, None, 2.0)]
    )
    # The other node's build in progress, as this node sees it: the lock held, the index
    # invalid (a UNIQUE build that failed on the two equal keys leaves one so).
    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (pg_module._INDEX_LOCK,))
        with pytest.raises(psycopg.errors.UniqueViolation):
            other.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY call_records_kept_by"
                " ON call_records ((COALESCE(ended_at, started_at)))"
            )
        assert index_state(postgres_cluster, postgres_database) == [(False,)]
        node = open_node(node="second")
        assert node.schema_version() == 6
        assert index_state(postgres_cluster, postgres_database) == [(False,)]  # left alone
        with pytest.raises(StoreBusy, match="being built"):
            node.expire_call_records(10.0, most=10)
        # The other node's build ends.
        other.execute("DROP INDEX call_records_kept_by")
        other.execute(
            "CREATE INDEX call_records_kept_by ON call_records ((COALESCE(ended_at, started_at)))"
        )
        other.execute("SELECT pg_advisory_unlock(%s)", (pg_module._INDEX_LOCK,))
    assert node.expire_call_records(10.0, most=10) == 2  # asked again: built


def index_oid(cluster: Cluster, database: str) -> object:
    return cluster.admin("SELECT to_regclass('call_records_kept_by')::oid", database)[0][0]


def dropping(cluster: Cluster, database: str) -> bool:
    rows = cluster.admin(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND state = 'active' AND query LIKE 'DROP INDEX%'",
        database,
    )
    return bool(rows[0][0])


@pytest.mark.parametrize("operator", ["owner", "superuser"])
def test_an_operators_hand_run_build_in_progress_is_left_alone(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    operator: str,
) -> None:
    """The docs' CREATE INDEX CONCURRENTLY, run by hand, takes no advisory lock: its index is
    invalid until it is done, as an interrupted build's is. A node starting meanwhile took it
    for one, dropped it and built it again (its DROP waiting for the operator's build to end,
    then undoing it). It looks for a build in progress first (pg_stat_progress_create_index):
    the owner's shows which index it builds; a superuser's hides its relation from the node's
    role, and is left alone all the same."""
    import psycopg

    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    open_node(listen=False, migrations=MIGRATIONS[:5], node="old").call_records_save(
        [CallRecord("c1", "a", "b", 1.0, None, 2.0)]
    )
    dsn = (
        postgres_cluster.dsn(postgres_database)
        if operator == "owner"
        else postgres_cluster.admin_dsn(postgres_database)
    )
    reader = psycopg.connect(postgres_cluster.admin_dsn(postgres_database))
    by_hand = psycopg.connect(dsn, autocommit=True)
    build = threading.Thread(target=by_hand.execute, args=(pg_module._CREATE_RETENTION_INDEX,))
    try:
        reader.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")  # holds the build
        build.start()
        wait_until(lambda: building(postgres_cluster, postgres_database))
        wait_until(lambda: index_state(postgres_cluster, postgres_database) == [(False,)])
        theirs = index_oid(postgres_cluster, postgres_database)
        monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)  # "big": in a thread
        node = open_node(node="starting")
        assert node.schema_version() == 6 and node._builder is not None
        # The node's build decides while theirs is in progress (a DROP would wait for it),
        # then waits for it.
        wait_until(
            lambda: (
                any("being built by another session" in r.getMessage() for r in caplog.records)
                or dropping(postgres_cluster, postgres_database)
            )
        )
        assert not dropping(postgres_cluster, postgres_database)
        with pytest.raises(StoreBusy, match="being built"):
            node.expire_call_records(10.0, most=10)
    finally:
        reader.close()  # its transaction ends: the operator's build goes on
        build.join(10)
        if build.is_alive():
            by_hand.cancel_safe()
            build.join(10)
        by_hand.close()
    assert not build.is_alive()
    assert index_state(postgres_cluster, postgres_database) == [(True,)]
    assert index_oid(postgres_cluster, postgres_database) == theirs  # the operator's, kept
    assert node.expire_call_records(10.0, most=10) == 1
    lines = [r.getMessage() for r in caplog.records]
    assert any("being built by another session" in line for line in lines)
    assert not any("is invalid" in line for line in lines)


def test_an_unrelated_index_build_does_not_keep_an_invalid_index_from_being_built_again(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Another role's build shows in pg_stat_progress_create_index without its table: any
    such build, of any table, was taken for an operator's build of the retention index, and an
    interrupted build's invalid index was left until the node's next start. The table a build
    is on is read from pg_locks, which hides nothing."""
    import psycopg

    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    open_node(listen=False, migrations=MIGRATIONS[:5], node="old").call_records_save(
        [CallRecord("c1", "a", "b", 1.0, None, 2.0), CallRecord("c2", "a", "b", 1.0, None, 2.0)]
    )
    admin = postgres_cluster.admin_dsn(postgres_database)
    with psycopg.connect(admin, autocommit=True) as other:  # an interrupted build's index
        with pytest.raises(psycopg.errors.UniqueViolation):
            other.execute(
                "CREATE UNIQUE INDEX CONCURRENTLY call_records_kept_by"
                " ON call_records ((COALESCE(ended_at, started_at)))"
            )
        other.execute("CREATE TABLE unrelated (x INTEGER)")
    assert index_state(postgres_cluster, postgres_database) == [(False,)]
    holder = psycopg.connect(admin)
    by_hand = psycopg.connect(admin, autocommit=True)  # a superuser's: its table hidden
    build = threading.Thread(
        target=by_hand.execute, args=("CREATE INDEX CONCURRENTLY unrelated_x ON unrelated (x)",)
    )
    try:
        holder.execute("LOCK TABLE unrelated IN ROW EXCLUSIVE MODE")  # holds that build
        build.start()
        wait_until(
            lambda: bool(
                postgres_cluster.admin(
                    "SELECT 1 FROM pg_stat_progress_create_index"
                    " WHERE relid = 'unrelated'::regclass",
                    postgres_database,
                )
            )
        )
        node = open_node(node="starting")  # small: built again while it opens
        assert index_state(postgres_cluster, postgres_database) == [(True,)]
        assert node.expire_call_records(10.0, most=10) == 2
    finally:
        holder.close()
        build.join(10)
        by_hand.close()
    lines = [r.getMessage() for r in caplog.records]
    assert any("call_records_kept_by is invalid" in line for line in lines)
    assert not any("being built by another session" in line for line in lines)


NODE_ROLE = "voipgw_node"


def test_a_node_whose_role_does_not_own_call_records_says_retention_waits_for_the_owner(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node's role that may use the tables but does not own call_records cannot build the
    index (only the owner may index a table). Each start said at ERROR that records are "not
    deleted until a node's next start builds it", which no start of that node ever does, and
    its retention then waited as for a build in progress. It says the truth and the remedy,
    and retention fails saying so (a failure, not a wait) until the owner builds it."""
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)  # the CLI leaves it to the nodes
    owner = open_node(listen=False, node="owner")
    owner.call_records_save([CallRecord("c1", "a", "b", 1.0, None, 2.0)])
    assert index_state(postgres_cluster, postgres_database) == []
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", 64 * 1024 * 1024)
    if not postgres_cluster.admin(f"SELECT 1 FROM pg_roles WHERE rolname = '{NODE_ROLE}'"):
        postgres_cluster.admin(
            f"CREATE ROLE {NODE_ROLE} LOGIN PASSWORD '{postgres_cluster.password}'"
        )
    for grant in (
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {NODE_ROLE}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {NODE_ROLE}",
    ):
        postgres_cluster.admin(grant, postgres_database)
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    dsn = postgres_cluster.dsn(postgres_database).replace("user=voipgw ", f"user={NODE_ROLE} ")
    node = open_node(dsn=dsn, listen=False, node="node")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "next start" not in errors[0]
    # In call_records' schema: psql, where it is pasted, has a search_path of its own.
    paste = pg_module._CREATE_RETENTION_INDEX.replace(
        " ON call_records ", " ON public.call_records "
    )
    assert paste in errors[0]
    with pytest.raises(StoreError, match="until the owner runs") as raised:
        node.expire_call_records(10.0, most=10)
    assert paste in str(raised.value)
    assert not isinstance(raised.value, StoreBusy)  # no wait: a failure, counted as one
    with pytest.raises(StoreError, match="until the owner runs"):
        node.oldest_call_record()
    postgres_cluster.admin(pg_module._CREATE_RETENTION_INDEX, postgres_database)
    assert node.expire_call_records(10.0, most=10) == 1  # no restart needed


@pytest.fixture
def stalling_proxy(postgres_cluster: Cluster) -> Iterator[StallingProxy]:
    proxy = StallingProxy(postgres_cluster.port)
    yield proxy
    proxy.close()


def through(proxy: StallingProxy, cluster: Cluster, database: str) -> str:
    return cluster.dsn(database).replace(f"port={cluster.port}", f"port={proxy.port}")


def test_close_cuts_short_a_statement_a_server_that_stopped_answering_holds(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    stalling_proxy: StallingProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A statement waiting for a server that stopped answering holds the store's lock for as
    long as it waits (statement_timeout is the server's): close() waited for that lock for
    ever, and the gateway's stop with it, until systemd killed it. It shuts the statement's
    socket down past its bound instead: the call fails, the store closes."""
    node = open_node(
        dsn=through(stalling_proxy, postgres_cluster, postgres_database), connect_timeout=5
    )
    node.call_records_save([CallRecord("c0", "a", "b", 1.0, None, 2.0)])  # it works
    stalling_proxy.stall()
    failed: list[BaseException] = []

    def save() -> None:
        try:
            node.call_records_save([CallRecord("c1", "a", "b", 1.0, None, 2.0)])
        except BaseException as exc:  # what the caller would get
            failed.append(exc)

    saving = threading.Thread(target=save, daemon=True)
    saving.start()
    wait_until(stalling_proxy.unanswered)  # the statement went out: no answer comes
    caplog.set_level(logging.WARNING, logger=pg_module.__name__)
    closing = threading.Thread(target=node.close, daemon=True)
    closing.start()
    # Returned: a generous bound, far past close()'s own (2 s), that only proves no hang.
    wait_until(lambda: not closing.is_alive(), timeout=2 * 5)
    wait_until(lambda: not saving.is_alive())
    assert len(failed) == 1 and isinstance(failed[0], StoreUnavailable), failed
    assert node._db is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("without waiting for a statement in progress" in line for line in warnings)
    assert postgres_cluster.password not in caplog.text
    rows = postgres_cluster.admin("SELECT call_id FROM call_records", postgres_database)
    assert rows == [("c0",)]


def test_close_does_not_wait_for_the_listener_s_reconnection_to_a_server_out_of_reach(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    stalling_proxy: StallingProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A listener whose connection was lost reconnects, for itself and then for the store,
    each attempt up to connect_timeout against a server that does not answer: close() joined
    the thread, and so waited for both (10 s by default), past a stop timeout of a few
    seconds. It now leaves the daemon thread to end on its own, after its bound."""
    node = open_node(
        dsn=through(stalling_proxy, postgres_cluster, postgres_database), connect_timeout=5
    )
    stalling_proxy.stall()
    stalling_proxy.cut()  # the listener finds its connection lost and reconnects
    with pytest.raises(StoreUnavailable):
        node.accounts_list()  # so does the store's: the listener reopens it after its own
    wait_until(lambda: len(stalling_proxy.held) == 1)  # the listener's attempt: no answer
    assert node._thread is not None
    caplog.set_level(logging.WARNING, logger=pg_module.__name__)
    node.close()
    assert node._thread.is_alive()  # still connecting: not waited for
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("without waiting for the listener thread" in line for line in warnings)
    # Both attempts time out (connect_timeout each), and the thread sees the store closed.
    node._thread.join(3 * 5)
    assert not node._thread.is_alive()
    assert node._db is None  # the store's connection was not reopened after close()


def test_a_gateway_stopping_while_the_database_stops_answering_says_which_records_are_lost(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    stalling_proxy: StallingProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The gateway's stop saves the records of the calls it ended, removes its call-limit
    holds, then closes the store. Each statement to a server that stopped answering waited for
    ever (the stop then ended only by systemd's SIGKILL, and nothing said which records were
    lost): the stop is bounded, and the records not saved are counted at WARNING."""
    from gateway.core.calls.records import CallRecordBook
    from gateway.core.gateway import close_store

    node = open_node(
        dsn=through(stalling_proxy, postgres_cluster, postgres_database),
        connect_timeout=5,
        node="stopping",
    )
    limits = node.call_limits
    limits.start()
    book = CallRecordBook(node)
    book.started("c1", "sip:alice@example.net", "sip:bob@example.net")
    book.started("c2", "sip:carol@example.net", "sip:bob@example.net")
    stalling_proxy.stall()
    caplog.set_level(logging.WARNING, logger="gateway")
    stopping = threading.Thread(target=close_store, args=(node, book, limits), daemon=True)
    stopping.start()
    # Returned: a generous bound (connect_timeout twice) that only proves no hang.
    wait_until(lambda: not stopping.is_alive(), timeout=2 * 5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    lost = [line for line in warnings if "call record change(s) not kept" in line]
    assert lost == [
        "2 call record change(s) not kept: the store did not take them within 5 s of the stop"
        " (see its messages above)"
    ]
    assert any("holds not removed" in line for line in warnings)
    assert node._db is None
    assert postgres_cluster.password not in caplog.text


def test_a_statement_a_server_that_stopped_answering_holds_fails_within_the_watchdog_s_bound(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    stalling_proxy: StallingProxy,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that stops answering while its kernel still acknowledges (a stopped process,
    a stalled pooler or proxy) held a statement for as long as it did not answer: the
    gateway's event loop with it. The watchdog cuts the connection past statement_timeout + 1
    s: the call fails with StoreUnavailable, the call records are kept by the book for its next
    save, and once the server answers again the store is reconnected and they are written.

    The watchdog thread is held back after its cut until the call has failed, as a loaded
    machine may hold it (the shutdown gives up the GIL and the woken thread runs on): it
    marked the connection cut only then, and the call's error and WARNING said "server closed
    the connection unexpectedly" instead of why."""
    from gateway.core.calls.records import CallRecordBook

    saving: threading.Thread | None = None
    abort = pg_module._abort

    def abort_then_wait_for_the_call(db: object, **options: object) -> bool:
        aborted = abort(db, **options)  # type: ignore[arg-type]
        if aborted and saving is not None:
            saving.join(10)
        return aborted

    monkeypatch.setattr(pg_module, "_abort", abort_then_wait_for_the_call)

    node = open_node(
        dsn=through(stalling_proxy, postgres_cluster, postgres_database),
        connect_timeout=2,
        statement_timeout=0.5,
    )
    book = CallRecordBook(node)
    book.started("c1", "sip:alice@example.net", "sip:bob@example.net")
    book.flush()
    stalling_proxy.stall()
    book.started("c2", "sip:carol@example.net", "sip:bob@example.net")
    caplog.set_level(logging.INFO, logger="gateway")
    saving = threading.Thread(target=book.flush, daemon=True)
    saving.start()
    # Returned: a generous bound, far past the watchdog's (1.5 s), that only proves no hang.
    wait_until(lambda: not saving.is_alive(), timeout=10 * 1.5)
    assert book.pending == 1  # c2 kept for the next save
    assert node._server.watchdog.cuts == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        "no answer within 1.5 s (statement_timeout + 1 s): connection cut" in line
        for line in warnings
    ), warnings
    with pytest.raises(StoreUnavailable):
        node.accounts_list()  # at once: not connected while the listener reconnects
    stalling_proxy.resume()

    def saved() -> bool:
        book.flush()
        return book.pending == 0

    wait_until(saved, timeout=10 * 2)  # the listener's reconnection: connect_timeout at most
    rows = postgres_cluster.admin("SELECT call_id FROM call_records ORDER BY 1", postgres_database)
    assert rows == [("c1",), ("c2",)]
    assert postgres_cluster.password not in caplog.text


def test_the_listener_s_connection_is_watched_as_the_store_s_is(
    open_node: Callable[..., PostgresStore],
) -> None:
    """The listener thread also reopens the store's connection: a LISTEN (or the set_config
    after a connect) waiting for a server that stopped answering held it, and the store stayed
    down as long. Its connection's waits are bounded as the store's are."""
    node = open_node(statement_timeout=0.5)
    watchdog = node._server.watchdog
    watched = [db for db in list(watchdog._watched) if not db.closed]
    assert node._db in watched
    assert len(watched) == 2  # the store's and the listener's
    assert all(db.watch_bound == 1.5 for db in watched)


def test_a_psycopg_whose_waits_the_watchdog_cannot_see_is_said_at_the_store_s_opening(
    open_node: Callable[..., PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The watchdog sees a wait through psycopg's ``Connection.wait``, which psycopg does not
    document: a psycopg whose statements wait elsewhere left every wait unwatched without a
    word, and the node's event loop held by a server that stops answering, as before the
    watchdog. The opening's first statement shows it: one WARNING says so."""
    import psycopg

    class Unstamped(pg_module._watched_connection(psycopg)):  # type: ignore[misc]
        wait = psycopg.Connection.wait  # as if psycopg's statements did not wait in wait()

    monkeypatch.setitem(pg_module._connection_classes, id(psycopg), Unstamped)
    caplog.set_level(logging.WARNING, logger="gateway")
    node = open_node(statement_timeout=0.5)
    node.accounts_list()
    warnings = [r.getMessage() for r in caplog.records if "watchdog" in r.getMessage()]
    assert len(warnings) == 1, warnings  # the store's connection and the listener's: once
    assert "waits for the server are not watched" in warnings[0]
    assert f"psycopg {psycopg.__version__}" in warnings[0]


def test_the_watched_psycopg_says_nothing_of_the_watchdog(
    open_node: Callable[..., PostgresStore], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway")
    node = open_node(statement_timeout=0.5)
    node.accounts_list()
    assert "watchdog" not in caplog.text


def test_a_store_that_fails_to_open_leaves_no_watchdog_thread(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    """A store refused at its opening (a newer schema, a migration failing, the server gone
    after the connect) left its watchdog thread running for the life of the process, waking
    every 1.5 s: one more per failed attempt. It is stopped with the refusal."""
    open_node(listen=False)
    postgres_cluster.admin("INSERT INTO schema_version VALUES (99, 0)", postgres_database)

    def watchdogs() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name == "postgresql store watchdog"}

    before = watchdogs()
    with pytest.raises(SchemaError, match="newer voipgw"):
        open_node()
    # A generous bound: a stopped watchdog ends at once.
    wait_until(lambda: not watchdogs() - before, timeout=10)


# -- the CLI and check-config against PostgreSQL ----------------------------------------------


def voipgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_and_check_config_use_the_configured_database(
    tmp_path: Path, postgres_cluster: Cluster, postgres_database: str
) -> None:
    secret = tmp_path / "db-password"
    secret.write_text(postgres_cluster.password + "\n")
    secret.chmod(0o600)
    config = tmp_path / "voipgw.toml"
    dsn = postgres_cluster.dsn(postgres_database, with_password=False)
    config.write_text(
        f'[store]\nbackend = "postgresql"\ndsn = "{dsn}"\npassword_file = "{secret}"\n'
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    checked = voipgw("check-config", str(config))
    assert checked.returncode == 0, checked.stderr
    added = voipgw("accounts", "add", "alice", "--password", PASSWORD, "--config", str(config))
    assert added.returncode == 0, added.stderr
    listed = voipgw("accounts", "list", "--config", str(config))
    assert listed.returncode == 0 and "alice" in listed.stdout
    again = voipgw("accounts", "add", "alice", "--password", PASSWORD, "--config", str(config))
    assert again.returncode == 2 and "already exists" in again.stderr
    calls = voipgw("calls", "--recent", "5", "--config", str(config))
    assert calls.returncode == 0 and "no calls" in calls.stdout
    assert not (tmp_path / "state").exists()  # nothing went to SQLite
    rows = postgres_cluster.admin("SELECT name FROM accounts", postgres_database)
    assert rows == [("alice",)]

    secret.chmod(0o644)
    refused = voipgw("check-config", str(config))
    assert refused.returncode == 2
    assert f"{config}: [store] password_file" in refused.stderr and "chmod 600" in refused.stderr


def test_cli_says_when_the_database_cannot_be_reached(
    tmp_path: Path, port_lease: PortLease
) -> None:
    config = tmp_path / "voipgw.toml"
    port = __import__("pgcluster").free_port(port_lease)  # nothing listens there
    config.write_text(
        f'[store]\nbackend = "postgresql"\n'
        f'dsn = "host=127.0.0.1 port={port} dbname=x user=x password=hunter2-db"\n'
        # Not the default range, which another test run's gateway may bind (media_range_guard).
        f'[media]\nports = "{port_lease.text(20)}"\n'
    )
    result = voipgw("accounts", "list", "--config", str(config))
    assert result.returncode == 1
    assert "voipgw: store: PostgreSQL host=127.0.0.1" in result.stderr
    assert "cannot connect" in result.stderr
    assert "hunter2-db" not in result.stderr + result.stdout
    # A node that cannot reach its database does not start, and says why in one line.
    run = voipgw("run", "--config", str(config), "--listen", "udp:127.0.0.1:0")
    assert run.returncode == 1
    assert "cannot run: PostgreSQL host=127.0.0.1" in run.stderr
    assert "Traceback" not in run.stderr
    assert "hunter2-db" not in run.stderr + run.stdout


def test_names_nobody_has_do_not_push_real_accounts_out_of_the_cache(
    open_node: Callable[..., PostgresStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pg_module, "ACCOUNT_CACHE_ENTRIES", 8)
    node = open_node()
    node.accounts_add("alice", PASSWORD, REALM)
    wait_until(lambda: node.get_account("alice") is node.get_account("alice") is not None)
    cached = node.get_account("alice")
    for i in range(100):  # REGISTERs with made-up usernames
        assert node.get_account(f"guess{i}") is None
    assert node.get_account("alice") is cached  # still from memory


# -- PSAP callbacks (migration 4) ---------------------------------------------------------------


def test_a_number_presented_on_one_node_is_known_to_the_other_until_its_window_ends(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
) -> None:
    a, b = open_node(listen=False), open_node(listen=False)
    assert b.psap_number_remaining("+4930123456") is None
    a.psap_number_presented("+4930123456", 1800.0, 100)
    remaining = b.psap_number_remaining("+4930123456")
    assert remaining is not None and 1790 < remaining <= 1800  # the server's clock
    b.psap_number_presented("+4930999", 0.05, 100)
    wait_until(lambda: a.psap_number_remaining("+4930999") is None)
    # Bounded: past ``most``, the numbers whose window ends first go; expired ones too.
    for n in range(4):
        a.psap_number_presented(f"+155500{n}", 100.0 + n, 3)
    rows = postgres_cluster.admin(
        "SELECT number FROM psap_callbacks ORDER BY number", postgres_database
    )
    assert rows == [("+1555002",), ("+1555003",), ("+4930123456",)]  # +4930999: expired


def test_a_schema_3_database_is_upgraded_and_keeps_its_nodes_working(
    open_node: Callable[..., PostgresStore],
) -> None:
    old = open_node(listen=False, migrations=MIGRATIONS[:3], node="old")
    old.accounts_add("alice", PASSWORD, REALM)
    old.call_limits.start()
    assert old.schema_version() == 3
    new = open_node(listen=False, node="new")
    assert new.schema_version() == len(MIGRATIONS)
    new.psap_number_presented("+4930123456", 60.0, 10)
    remaining = new.psap_number_remaining("+4930123456")
    assert remaining is not None and 0 < remaining <= 60
    # The node of schema 3 still running: its accounts and call limits work as before.
    assert old.get_account("alice") is not None
    assert old.call_limits.take(1, ("trunk", "carrier"), 1)
    assert new.call_limits.take(1, ("trunk", "carrier"), 1) is False


# -- presence publications (migration 5) ------------------------------------------------------


def test_a_publication_saved_by_one_node_is_read_and_replaced_by_the_other(
    open_node: Callable[..., PostgresStore],
) -> None:
    """Node A takes a PUBLISH, node B reads it (its poll) and takes its refresh (a new entity
    tag replacing A's), node A reads that; one round trip each, no cache to go stale."""
    a, b = open_node(listen=False, node="a"), open_node(listen=False, node="b")
    first = StoredPublication("alice", "tag-a", 2000.0, 1000.0, True, True, b"<open/>")
    a.publication_save("alice", first, replaces=None, now=1000.0, most=4)
    assert b.publications_of(["alice"], now=1001.0) == {"alice": [first]}
    refreshed = StoredPublication("alice", "tag-b", 2600.0, 1000.0, True, True, b"<open/>")
    assert b.publication_save("alice", refreshed, replaces="tag-a", now=1002.0, most=4)
    assert a.publications_of(["alice"], now=1003.0) == {"alice": [refreshed]}
    # Node A, not having polled since, refreshes the version B replaced: nothing written.
    stale = StoredPublication("alice", "tag-c", 2700.0, 1000.0, True, True, b"<open/>")
    assert not a.publication_save("alice", stale, replaces="tag-a", now=1004.0, most=4)
    assert b.publications_of(["alice"], now=1005.0) == {"alice": [refreshed]}


def test_a_schema_4_database_is_upgraded_and_its_old_nodes_keep_working(
    open_node: Callable[..., PostgresStore],
) -> None:
    """A rolling upgrade to the presence publications' table: the nodes of schema 4 still
    running keep their accounts, bindings and PSAP numbers working (they never touch the new
    table: their publications stay in their memory until they are upgraded)."""
    old = open_node(listen=False, migrations=MIGRATIONS[:4], node="old")
    old.accounts_add("alice", PASSWORD, REALM)
    assert old.schema_version() == 4
    new = open_node(listen=False, node="new")
    assert new.schema_version() == len(MIGRATIONS) >= 5
    saved = StoredPublication("alice", "e1", 2000.0, 1000.0, True, True, b"<doc/>")
    new.publication_save("alice", saved, replaces=None, now=1000.0, most=4)
    assert new.publications_of(["alice"], now=1000.0) == {"alice": [saved]}
    old.upsert_binding(binding())
    old.psap_number_presented("+4930123456", 60.0, 10)
    assert old.get_account("alice") is not None
    assert new.bindings_for_account("alice") != ()
    assert new.psap_number_remaining("+4930123456") is not None


# -- a node's role that may only read and write the tables ------------------------------------

RW_ROLE = "voipgw_rw"
RW_GRANTS = (
    # docs/configuration.md, "The roles of a PostgreSQL store": the tables there are, and
    # those the owner's later migrations create.
    f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {RW_ROLE}",
    f"ALTER DEFAULT PRIVILEGES FOR ROLE voipgw IN SCHEMA public"
    f" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {RW_ROLE}",
)


def read_write_role(cluster: Cluster, database: str) -> str:
    """A role with only SELECT, INSERT, UPDATE and DELETE on the tables the owner's migrations
    make (no CREATE on the schema: PostgreSQL 15's default for public); its DSN."""
    if not cluster.admin(f"SELECT 1 FROM pg_roles WHERE rolname = '{RW_ROLE}'"):
        cluster.admin(f"CREATE ROLE {RW_ROLE} LOGIN PASSWORD '{cluster.password}'")
    cluster.admin("REVOKE CREATE ON SCHEMA public FROM PUBLIC", database)
    for grant in RW_GRANTS:
        cluster.admin(grant, database)
    return cluster.dsn(database).replace("user=voipgw ", f"user={RW_ROLE} ")


def test_a_node_whose_role_may_only_read_and_write_starts_on_an_up_to_date_database(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Production deployments run the nodes as a role that may only use the tables a
    migration role made. Every start ran CREATE TABLE IF NOT EXISTS schema_version, which
    PostgreSQL refuses without CREATE on the schema before it looks whether the table exists:
    such a node could not start even on a database at the current version."""
    owner = open_node(listen=False, node="owner")  # the migration role: tables and index
    owner.accounts_add("alice", PASSWORD, REALM)
    dsn = read_write_role(postgres_cluster, postgres_database)
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    node = open_node(dsn=dsn, node="node")  # a gateway node: listening
    assert node.schema_version() == len(MIGRATIONS)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    # What a node does, each through the role's grants.
    assert node.get_account("alice") is not None
    node.accounts_add("bob", PASSWORD, REALM)
    node.accounts_set("bob", display_name="Bob")
    node.upsert_binding(binding())
    assert len(node.registrations_for(AOR)) == 1
    assert node.expire_bindings(time.time() + 7200) != ()
    limits = node.call_limits
    limits.start()
    assert limits.take(1, ("account", "alice"), 1)
    assert not limits.take(2, ("account", "alice"), 1)
    assert limits.beat() is None
    limits.release([(1, ("account", "alice"))])
    limits.stop()
    node.call_record_insert(CallRecord("c1", "a", "b", 1.0, None, 2.0))
    node.call_record_update("c1", end_reason="bye")
    assert node.oldest_call_record() == 2.0
    assert node.expire_call_records(10.0, most=10) == 1
    node.psap_number_presented("+15550100", 60.0, 10)
    assert node.psap_number_remaining("+15550100") is not None
    publication = StoredPublication("alice", "etag-1", time.time() + 60, 1.0, True, True, b"x")
    assert node.publication_save("alice", publication, replaces=None, now=time.time(), most=4)
    assert node.expire_publications(time.time() + 120, most=10) == 1
    node.accounts_remove("bob")


def test_a_database_to_migrate_and_a_role_that_may_not_says_what_is_missing_and_what_to_do(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    tmp_path: Path,
) -> None:
    """Migration 5 creates a table: a role without CREATE on the schema cannot apply it. Its
    error names the privilege refused, the versions, and the command to run as the owner,
    which migrates and builds the retention index (whatever the table's size: the nodes'
    role may not), after which the node starts."""
    old = open_node(listen=False, migrations=MIGRATIONS[:4], node="old")
    old.call_records_save([CallRecord("c1", "a", "b", 1.0, None, 2.0)])
    dsn = read_write_role(postgres_cluster, postgres_database)
    with pytest.raises(SchemaError) as refused:
        open_node(dsn=dsn, node="node")
    message = str(refused.value)
    assert "migration 5 failed: permission denied for schema public" in message
    assert "at version 4" in message and f"needs version {len(MIGRATIONS)}" in message
    assert "voipgw migrate-store" in message
    rows = postgres_cluster.admin("SELECT MAX(version) FROM schema_version", postgres_database)
    assert rows == [(4,)]

    config = tmp_path / "owner.toml"
    config.write_text(
        "[store]\n"
        + "".join(
            f'{key} = "{value}"\n'
            for key, value in postgres_cluster.store_table(postgres_database, tmp_path).items()
        )
    )
    migrated = voipgw("migrate-store", "--config", str(config))
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema version {len(MIGRATIONS)}" in migrated.stdout
    assert "the index call_records_kept_by is built" in migrated.stdout
    assert index_state(postgres_cluster, postgres_database) == [(True,)]
    node = open_node(dsn=dsn, node="node")
    publication = StoredPublication("alice", "etag-1", time.time() + 60, 1.0, True, True, b"x")
    assert node.publication_save("alice", publication, replaces=None, now=time.time(), most=4)
    assert node.expire_call_records(10.0, most=10) == 1


def test_migrate_store_that_leaves_the_index_to_another_node_says_why(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    tmp_path: Path,
) -> None:
    """While another node builds the index (its advisory lock held), ``migrate-store --wait 0``
    does not build it and exits 1 saying whose build it left it to: that message and the INFO
    one ("another node builds the index") must reach the operator, as must the build's
    progress lines, which the CLI's default logging (WARNING and up) dropped."""
    import psycopg

    open_node(listen=False, migrations=MIGRATIONS[:5], node="old").call_records_save(
        [CallRecord("c1", "a", "b", 1.0, None, 2.0)]
    )
    config = tmp_path / "owner.toml"
    config.write_text(
        "[store]\n"
        + "".join(
            f'{key} = "{value}"\n'
            for key, value in postgres_cluster.store_table(postgres_database, tmp_path).items()
        )
    )
    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (pg_module._INDEX_LOCK,))
        refused = voipgw("migrate-store", "--config", str(config), "--wait", "0")
        other.execute("SELECT pg_advisory_unlock(%s)", (pg_module._INDEX_LOCK,))
    assert refused.returncode == 1, refused.stderr
    assert (
        "the index call_records_kept_by is not built yet: not waited for another node's build"
        " of the index call_records_kept_by (it holds the build's advisory lock)"
    ) in refused.stderr
    assert "another node builds the index call_records_kept_by" in refused.stderr
    assert postgres_cluster.password not in refused.stderr + refused.stdout
    built = voipgw("migrate-store", "--config", str(config))
    assert built.returncode == 0, built.stderr
    assert "building the index call_records_kept_by concurrently" in built.stderr
    assert "the index call_records_kept_by is built" in built.stdout


def schema_5_config(
    open_node: Callable[..., PostgresStore],
    cluster: Cluster,
    database: str,
    directory: Path,
) -> Path:
    """A database at schema 5 with a call record (version 6 and its index to come), and the
    owner's config file for it."""
    open_node(listen=False, migrations=MIGRATIONS[:5], node="old").call_records_save(
        [CallRecord("c1", "a", "b", 1.0, None, 2.0), CallRecord("c2", "a", "b", 1.0, None, 2.0)]
    )
    config = directory / "owner.toml"
    config.write_text(
        "[store]\n"
        + "".join(
            f'{key} = "{value}"\n'
            for key, value in cluster.store_table(database, directory).items()
        )
    )
    return config


class Lines:
    """A process's standard error, read line by line as it comes (a thread)."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line)

    def has(self, words: str) -> bool:
        return any(words in line for line in self.lines)

    def text(self) -> str:
        self._thread.join(10)
        return "".join(self.lines)


@pytest.mark.parametrize("other_build", ["built", "failed"])
def test_migrate_store_waits_for_another_nodes_build_of_the_index_then_finishes(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    tmp_path: Path,
    other_build: str,
) -> None:
    """An upgrade script runs ``voipgw migrate-store --config F && systemctl start voipgw``:
    with another node building the index at that moment, migrate-store exited 1 and the script
    stopped there. It waits for that build (progress on standard error) and then finishes:
    the index that build made, or, when that build failed (its index left invalid), its own."""
    import psycopg

    config = schema_5_config(open_node, postgres_cluster, postgres_database, tmp_path)
    with (
        psycopg.connect(postgres_cluster.admin_dsn(postgres_database), autocommit=True) as other,
        (tmp_path / "stdout").open("w+") as stdout,
    ):
        other.execute("SELECT pg_advisory_lock(%s)", (pg_module._INDEX_LOCK,))
        migrate = subprocess.Popen(
            [sys.executable, "-m", "gateway", "migrate-store", "--config", str(config)],
            cwd=REPO,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert migrate.stderr is not None
            stderr = Lines(migrate.stderr)
            waiting = (
                "waiting up to 600 s for another node's build of the index call_records_kept_by"
                " (it holds the build's advisory lock) to end"
            )
            wait_until(lambda: stderr.has(waiting) or migrate.poll() is not None, timeout=60)
            assert migrate.poll() is None, stderr.text()  # waiting, not given up
            # The other node's build ends: made, or failed (a UNIQUE build on two equal keys
            # leaves its index invalid, as an interrupted build does).
            create = "CREATE UNIQUE INDEX" if other_build == "failed" else "CREATE INDEX"
            try:
                other.execute(
                    f"{create} CONCURRENTLY call_records_kept_by"
                    " ON call_records ((COALESCE(ended_at, started_at)))"
                )
            except psycopg.errors.UniqueViolation:
                assert other_build == "failed"
            other.execute("SELECT pg_advisory_unlock(%s)", (pg_module._INDEX_LOCK,))
            migrate.wait(60)
        finally:
            if migrate.poll() is None:
                migrate.kill()
                migrate.wait()
        stdout.seek(0)
        out = stdout.read()
    assert migrate.returncode == 0, stderr.text()
    assert "the index call_records_kept_by is built" in out
    assert index_state(postgres_cluster, postgres_database) == [(True,)]
    built_here = "building the index call_records_kept_by concurrently" in stderr.text()
    assert built_here == (other_build == "failed")
    assert postgres_cluster.password not in stderr.text() + out


def interruptible() -> None:
    """SIGINT as a terminal's foreground command has it: a test run started in the background
    by a script, or under nohup, ignores it, the command inherits that (Python then installs
    no KeyboardInterrupt handler) and the test's SIGINT did nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_migrate_store_interrupted_mid_wait_exits_130_and_says_the_wait_once(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    tmp_path: Path,
) -> None:
    """``voipgw migrate-store && systemctl start voipgw``: a Ctrl-C during its wait for another
    node's build exited 0 (the CLI's SIGINT handler), and the script started the node on a
    database not ready. It exits 130, as the shell does for a command SIGINT ended. Its output
    said "another node builds the index" twice (the build's INFO line, then the wait's)."""
    import psycopg

    config = schema_5_config(open_node, postgres_cluster, postgres_database, tmp_path)
    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (pg_module._INDEX_LOCK,))
        migrate = subprocess.Popen(
            [sys.executable, "-m", "gateway", "migrate-store", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=interruptible,
        )
        try:
            assert migrate.stderr is not None
            stderr = Lines(migrate.stderr)
            waiting = "waiting up to 600 s for another node's build of the index"
            wait_until(lambda: stderr.has(waiting) or migrate.poll() is not None, timeout=60)
            assert migrate.poll() is None, stderr.text()  # waiting
            migrate.send_signal(signal.SIGINT)
            migrate.wait(60)
        finally:
            if migrate.poll() is None:
                migrate.kill()
                migrate.wait()
    assert migrate.returncode == 130, stderr.text()
    text = stderr.text()
    assert "voipgw: migrate-store: interrupted" in text
    assert "interrupted: the index call_records_kept_by is not built" in text
    assert text.count("another node builds the index") == 1, text
    assert "Traceback" not in text
    assert index_state(postgres_cluster, postgres_database) == []  # not built by it


def test_migrate_store_that_waited_its_bound_for_another_build_says_what_it_waited_for(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    tmp_path: Path,
) -> None:
    """The wait is bounded (``--wait``): past it migrate-store exits 1 naming the build it
    waited for, so the script stops with a reason rather than hangs."""
    import psycopg

    config = schema_5_config(open_node, postgres_cluster, postgres_database, tmp_path)
    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", (pg_module._INDEX_LOCK,))
        waited = voipgw("migrate-store", "--config", str(config), "--wait", "0.5")
    assert waited.returncode == 1, waited.stderr
    assert f"schema version {len(MIGRATIONS)}" in waited.stdout
    assert (
        "voipgw: migrate-store: the index call_records_kept_by is not built yet: waited 0.5 s"
        " for another node's build of the index call_records_kept_by (it holds the build's"
        " advisory lock); call records are not deleted until it is"
    ) in waited.stderr
    assert index_state(postgres_cluster, postgres_database) == []
    bad = voipgw("migrate-store", "--config", str(config), "--wait", "-1")
    assert bad.returncode == 2 and "not a number of seconds, 0 or more" in bad.stderr


def test_migrate_store_builds_a_big_tables_retention_index_the_cli_would_leave_to_the_nodes(
    open_node: Callable[..., PostgresStore],
    postgres_cluster: Cluster,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nodes whose role does not own call_records cannot build the index: the owner's
    ``voipgw migrate-store`` builds it whatever the table's size (other commands build only a
    small table's)."""
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)  # "big"
    owner = open_node(listen=False, node="owner")
    assert index_state(postgres_cluster, postgres_database) == []
    assert owner.build_indexes()
    assert index_state(postgres_cluster, postgres_database) == [(True,)]
