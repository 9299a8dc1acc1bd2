"""The index on ``call_id COLLATE "C"`` (``postgresql.CALL_ID_INDEX``), which the nodes build
themselves since session 42 in a database whose collation is not code point order, as they
build the retention index: concurrently, by the holder of the build's advisory lock, a small
table's while the store opens, a big one's in a thread; an interrupted build's invalid index is
dropped and built again; a role that may not build it says so and ``voipgw migrate-store`` (the
owner) builds it. Before, docs/operations.md told the operator to build it by hand, and until
then ``voipgw calls --call-id`` read the newest 1000 records, then the whole table (which the
CLI's statement_timeout may end on a big store)."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pgcluster import STORE_USER, Cluster

from gateway.core.store import postgresql as pg_module
from gateway.core.store.interface import CallRecord
from gateway.core.store.postgresql import CALL_ID_INDEX, RETENTION_INDEX, PostgresStore

REPO = Path(__file__).parents[2]
CALL_ID = "a84b4c76e66710@127.0.0.1"
RW_ROLE = "voipgw_rw_call_id"


def _wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.01)


def _index_state(cluster: Cluster, database: str, name: str = CALL_ID_INDEX) -> list[object]:
    """[valid] for the index ``name``, [] without one."""
    rows = cluster.admin(
        f"SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('{name}')", database
    )
    return [row[0] for row in rows]


def _building(cluster: Cluster, database: str) -> bool:
    rows = cluster.admin(
        "SELECT count(*) FROM pg_stat_progress_create_index WHERE relid = 'call_records'::regclass",
        database,
    )
    return bool(rows[0][0])


def _records() -> list[CallRecord]:
    """Two calls of CALL_ID, and ids that sort between them when ";" is ignored (ICU shifted)."""
    return [
        CallRecord(f"{CALL_ID};t1", "sip:a@x", "sip:b@y", 1.0, None, 2.0),
        CallRecord(f"{CALL_ID};zz", "sip:a@x", "sip:b@y", 3.0),
        CallRecord(f"{CALL_ID}<;t3", "sip:a@x", "sip:b@y", 4.0),
        CallRecord(f"{CALL_ID}0;t4", "sip:a@x", "sip:b@y", 5.0),
    ]


class _Queries:
    """Which of call_records_of_call_id's statements the store asks (postgresql._call_id_query)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.asked: list[tuple[bool, bool]] = []
        real = pg_module._call_id_query

        def spy(*, collated: bool, newest: bool = False) -> str:
            self.asked.append((collated, newest))
            return real(collated=collated, newest=newest)

        monkeypatch.setattr(pg_module, "_call_id_query", spy)


def _found(store: PostgresStore, call_id: str, limit: int = 100) -> list[str]:
    return [record.call_id for record in store.call_records_of_call_id(call_id, limit)]


def _check_through_the_index(store: PostgresStore, queries: _Queries) -> None:
    """Every record of a Call-ID found, in one statement over the whole table in "C" order,
    never the newest-records-first one (which stands in while the index is missing)."""
    queries.asked.clear()
    assert _found(store, CALL_ID) == [f"{CALL_ID};zz", f"{CALL_ID};t1"]
    assert _found(store, f"{CALL_ID};t1") == [f"{CALL_ID};t1"]
    assert _found(store, f"{CALL_ID}<") == [f"{CALL_ID}<;t3"]
    assert _found(store, "nobody") == []
    assert queries.asked == [(True, False)] * 4


def _plan(cluster: Cluster, database: str) -> str:
    """EXPLAIN of the store's statement over 20,000 more records, analyzed (the plan a node's
    table gets, not a few rows')."""
    cluster.admin(
        "INSERT INTO call_records (call_id, from_uri, to_uri, started_at)"
        " SELECT 'c' || n || '@127.0.0.1;t' || n, 'sip:a@x', 'sip:b@y', 100 + n"
        " FROM generate_series(1, 20000) AS n",
        database,
    )
    cluster.admin("ANALYZE call_records", database)
    sql = pg_module._call_id_query(collated=True)
    for value in ("'x'", "'x;'", "'x<'", "3", "9"):
        sql = sql.replace("%s", value, 1)
    return "\n".join(str(row[0]) for row in cluster.admin(f"EXPLAIN {sql}", database))


@pytest.fixture
def shifted_database(postgres_cluster: Cluster) -> Iterator[str]:
    """A database whose ICU collation ignores punctuation at first (alternate shifted), as
    glibc's en_US does: a range of ids in it misses records."""
    if not postgres_cluster.admin("SELECT 1 FROM pg_collation WHERE collprovider = 'i' LIMIT 1"):
        pytest.skip("this PostgreSQL has no ICU")
    name = "store_call_id_index_icu"
    postgres_cluster.admin(
        f"CREATE DATABASE {name} OWNER {STORE_USER} TEMPLATE template0 LOCALE 'C'"
        " LOCALE_PROVIDER icu ICU_LOCALE 'und-u-ka-shifted'"
    )
    yield name
    postgres_cluster.drop_database(name)


@pytest.fixture
def c_utf8_database(postgres_cluster: Cluster) -> Iterator[str]:
    """A database of libc's C.UTF-8 (Debian's cluster default when the system locale is)."""
    name = "store_call_id_index_c_utf8"
    try:
        postgres_cluster.admin(
            f"CREATE DATABASE {name} OWNER {STORE_USER} TEMPLATE template0"
            " LOCALE_PROVIDER libc LOCALE 'C.UTF-8'"
        )
    except Exception as exc:  # psycopg's error: the system has no C.UTF-8 locale
        pytest.skip(f"no libc C.UTF-8 here: {exc}")
    yield name
    postgres_cluster.drop_database(name)


@pytest.fixture
def opened() -> Iterator[list[PostgresStore]]:
    """Stores a test opens, closed after it."""
    stores: list[PostgresStore] = []
    yield stores
    for store in stores:
        store.close()


def test_a_node_builds_the_call_id_index_where_the_collation_is_not_code_point_order(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    store = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    opened.append(store)
    assert store.wanted_indexes() == [RETENTION_INDEX, CALL_ID_INDEX]
    assert store.missing_indexes() == []
    assert _index_state(postgres_cluster, shifted_database) == [True]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(f"building the index {CALL_ID_INDEX} concurrently" in line for line in infos)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    store.call_records_save(_records())
    _check_through_the_index(store, _Queries(monkeypatch))
    plan = _plan(postgres_cluster, shifted_database)
    assert CALL_ID_INDEX in plan and "Seq Scan" not in plan, plan


def test_a_database_of_libc_c_utf8_gets_the_index_too(
    postgres_cluster: Cluster,
    c_utf8_database: str,
    opened: list[PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libc's C.UTF-8 is the C library's order, which PostgreSQL does not guarantee (glibc
    2.35 and later sort it by code point, earlier distributions' patches and other libraries
    their own way): not trusted as code point order, it gets the "C" index, and look-ups by
    Call-ID take the index whatever the library does."""
    store = PostgresStore.open(postgres_cluster.dsn(c_utf8_database), listen=False)
    opened.append(store)
    assert store._ids_in_code_point_order is False
    assert _index_state(postgres_cluster, c_utf8_database) == [True]
    store.call_records_save(_records())
    _check_through_the_index(store, _Queries(monkeypatch))


def test_a_c_database_gets_no_second_index_on_the_ids(
    postgres_cluster: Cluster, postgres_database: str, opened: list[PostgresStore]
) -> None:
    """(A guard: main passes it too.) In a database collated "C" the UNIQUE index on call_id
    answers; another would cost every save its upkeep for nothing."""
    store = PostgresStore.open(postgres_cluster.dsn(postgres_database), listen=False)
    opened.append(store)
    assert store.wanted_indexes() == [RETENTION_INDEX]
    assert _index_state(postgres_cluster, postgres_database) == []


def test_an_index_on_call_id_collate_c_built_by_hand_under_another_name_is_taken(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before session 42 docs/operations.md had the operator build the index by hand, and
    said PostgreSQL uses any index on that expression: one under another name is taken, and
    no second one is built beside it."""
    first = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    first.close()
    postgres_cluster.admin(f"DROP INDEX {CALL_ID_INDEX}", shifted_database)
    postgres_cluster.admin(
        'CREATE INDEX ops_call_id_c ON call_records ((call_id COLLATE "C"))', shifted_database
    )
    store = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    opened.append(store)
    assert store.missing_indexes() == []
    assert _index_state(postgres_cluster, shifted_database) == []  # not built beside it
    store.call_records_save(_records())
    _check_through_the_index(store, _Queries(monkeypatch))


def test_an_interrupted_build_of_the_call_id_index_is_built_again_at_the_next_start(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node stopped (or killed) mid-build leaves an invalid index, which IF NOT EXISTS would
    keep for ever and the planner never uses: the next start drops it and builds it again.
    Meanwhile look-ups by Call-ID read as without it (the newest records first)."""
    import psycopg

    first = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    first.call_records_save(_records())
    first.close()
    postgres_cluster.admin(f"DROP INDEX {CALL_ID_INDEX}", shifted_database)  # an upgrade's
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)  # "big": built in a thread
    with psycopg.connect(postgres_cluster.admin_dsn(shifted_database)) as writer:
        writer.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")  # holds the build
        node = PostgresStore.open(postgres_cluster.dsn(shifted_database), node="node")
        opened.append(node)
        _wait_until(lambda: _building(postgres_cluster, shifted_database))
        # The node serves meanwhile, and its retention index is there: it deletes.
        queries = _Queries(monkeypatch)
        assert _found(node, CALL_ID) == [f"{CALL_ID};zz", f"{CALL_ID};t1"]
        assert queries.asked == [(True, True)]  # the newest records, as without the index
        node.close()  # stopped mid-build: cancelled
        writer.rollback()
    assert _index_state(postgres_cluster, shifted_database) == [False]  # left invalid
    assert any(
        f"building the index {CALL_ID_INDEX} stopped with the store" in r.getMessage()
        for r in caplog.records
    )
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", 64 * 1024 * 1024)
    caplog.clear()
    again = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    opened.append(again)
    assert _index_state(postgres_cluster, shifted_database) == [True]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{CALL_ID_INDEX} is invalid" in line for line in warnings), warnings
    _check_through_the_index(again, _Queries(monkeypatch))


def _read_write_role(cluster: Cluster, database: str) -> str:
    """A role that may only read and write the tables (docs/configuration.md, "The roles of a
    PostgreSQL store"); its DSN."""
    if not cluster.admin(f"SELECT 1 FROM pg_roles WHERE rolname = '{RW_ROLE}'"):
        cluster.admin(f"CREATE ROLE {RW_ROLE} LOGIN PASSWORD '{cluster.password}'")
    cluster.admin("REVOKE CREATE ON SCHEMA public FROM PUBLIC", database)
    cluster.admin(
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {RW_ROLE}",
        database,
    )
    return cluster.dsn(database).replace(f"user={STORE_USER} ", f"user={RW_ROLE} ")


def test_a_node_that_may_not_build_it_says_so_and_migrate_store_builds_it(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """Only the owner of call_records may index it: a node of a role that only reads and
    writes says so at WARNING with the remedy (look-ups are slower, nothing is lost), and
    ``voipgw migrate-store`` as the owner builds it; the node takes it without a restart."""
    first = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    first.call_records_save(_records())
    first.close()
    postgres_cluster.admin(f"DROP INDEX {CALL_ID_INDEX}", shifted_database)
    dsn = _read_write_role(postgres_cluster, shifted_database)
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    node = PostgresStore.open(dsn, listen=False, node="node")
    opened.append(node)
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1 and said[0][0] == logging.WARNING, said
    assert f"this node's role may not build the index {CALL_ID_INDEX}" in said[0][1]
    assert "voipgw migrate-store" in said[0][1]
    # In call_records' schema: psql, where it is pasted, has a search_path of its own.
    paste = pg_module._CREATE_CALL_ID_INDEX.replace(" ON call_records ", " ON public.call_records ")
    assert paste in said[0][1]
    assert postgres_cluster.password not in caplog.text
    queries = _Queries(monkeypatch)
    assert _found(node, CALL_ID) == [f"{CALL_ID};zz", f"{CALL_ID};t1"]
    assert queries.asked == [(True, True)]

    config = tmp_path / "owner.toml"
    store = postgres_cluster.store_table(shifted_database, tmp_path)
    config.write_text("[store]\n" + "".join(f'{k} = "{v}"\n' for k, v in store.items()))
    migrated = subprocess.run(
        [sys.executable, "-m", "gateway", "migrate-store", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert f"store: the index {RETENTION_INDEX} is built" in migrated.stdout
    assert f"store: the index {CALL_ID_INDEX} is built" in migrated.stdout
    assert _index_state(postgres_cluster, shifted_database) == [True]
    _check_through_the_index(node, queries)  # no restart


def test_migrate_store_as_a_role_that_may_not_build_the_call_id_index_exits_0(
    postgres_cluster: Cluster, shifted_database: str, tmp_path: Path
) -> None:
    """An upgrade script run as the nodes' read-write role (`voipgw migrate-store &&
    systemctl start voipgw`) passed before session 42 once the retention index was there; the
    Call-ID index, which that role may not build, only slows `voipgw calls --call-id`: said
    on standard error, exit 0 (review of session 42: it exited 1, stopping the upgrade)."""
    first = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    first.close()
    postgres_cluster.admin(f"DROP INDEX {CALL_ID_INDEX}", shifted_database)
    dsn = _read_write_role(postgres_cluster, shifted_database)
    store = postgres_cluster.store_table(shifted_database, tmp_path)
    store["dsn"] = dsn.replace(f" password={postgres_cluster.password}", "")
    config = tmp_path / "rw.toml"
    config.write_text("[store]\n" + "".join(f'{k} = "{v}"\n' for k, v in store.items()))
    migrated = subprocess.run(
        [sys.executable, "-m", "gateway", "migrate-store", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert migrated.returncode == 0, migrated.stderr
    assert f"store: the index {RETENTION_INDEX} is built" in migrated.stdout
    assert CALL_ID_INDEX not in migrated.stdout
    assert (
        f"voipgw: migrate-store: warning: the index {CALL_ID_INDEX} is not built (see the"
        " message above); `voipgw calls --call-id` reads the whole table until it is"
    ) in migrated.stderr
    assert f"this node's role may not build the index {CALL_ID_INDEX}" in migrated.stderr
    assert postgres_cluster.password not in migrated.stderr + migrated.stdout
    assert _index_state(postgres_cluster, shifted_database) == []


def test_migrate_store_leaves_a_nodes_build_of_the_call_id_index_to_it(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The owner's ``build_indexes`` (migrate-store) while a node builds the Call-ID index
    (the retention index already there): it names that build and does not wait for it, even
    with a ``wait`` (review of session 42: an upgrade script waited up to --wait's 600 s for
    an index that only speeds `voipgw calls --call-id`, then failed); a later one takes the
    index that build made."""
    import psycopg

    first = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    first.close()
    postgres_cluster.admin(f"DROP INDEX {CALL_ID_INDEX}", shifted_database)
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)
    with psycopg.connect(postgres_cluster.admin_dsn(shifted_database)) as writer:
        writer.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")  # holds the build
        node = PostgresStore.open(postgres_cluster.dsn(shifted_database), node="node")
        opened.append(node)
        _wait_until(lambda: _building(postgres_cluster, shifted_database))
        owner = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
        opened.append(owner)
        assert owner.missing_indexes() == [CALL_ID_INDEX]
        assert owner.build_indexes(wait=0) is False
        assert owner.index_left_to == (
            f"another node's build of the index {CALL_ID_INDEX} (it holds the build's"
            " advisory lock)"
        )
        finished: list[bool] = []
        waiting = threading.Thread(
            target=lambda: finished.append(owner.build_indexes(wait=600)), daemon=True
        )
        waiting.start()
        waiting.join(30)  # not waited for: back at once, the node's build still held
        assert finished == [False], "build_indexes waited for a node's Call-ID index build"
        assert owner.missing_indexes() == [CALL_ID_INDEX]
        writer.rollback()  # the node's build goes on, and ends
    _wait_until(lambda: _index_state(postgres_cluster, shifted_database) == [True], 60)
    assert owner.build_indexes(wait=0) is True


def _config(cluster: Cluster, database: str, directory: Path, *extra: str) -> Path:
    """A node's config file for ``database`` (the owner's role), with ``extra`` [store] lines."""
    store = cluster.store_table(database, directory)
    config = directory / "node.toml"
    lines = [f'{k} = "{v}"\n' for k, v in store.items()] + [f"{line}\n" for line in extra]
    config.write_text("[store]\n" + "".join(lines))
    return config


def _invalidate(cluster: Cluster, database: str, name: str = CALL_ID_INDEX) -> None:
    """Leave ``name`` invalid, as a build interrupted (node killed, server restarted) does."""
    cluster.admin(
        f"UPDATE pg_index SET indisvalid = false WHERE indexrelid = '{name}'::regclass", database
    )


def test_call_id_index_false_builds_none_says_so_and_reads_without_it(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``[store] call_id_index = false`` (session 43): no node builds the index (nor does
    ``build_indexes``, migrate-store's), the node's start says so at INFO with what it leaves,
    and a look-up by Call-ID reads the newest records first, then the whole table, saying why
    (``voipgw calls --call-id`` prints it)."""
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    node = PostgresStore.open(
        postgres_cluster.dsn(shifted_database), node="node", call_id_index=False
    )
    opened.append(node)
    assert node.wanted_indexes() == [RETENTION_INDEX]
    assert node.missing_indexes() == []
    assert node.build_indexes(wait=0) is True
    assert _index_state(postgres_cluster, shifted_database) == []
    assert node._builder is None  # no thread either
    said = [(r.levelno, r.getMessage()) for r in caplog.records if CALL_ID_INDEX in r.getMessage()]
    assert said == [
        (
            logging.INFO,
            f"PostgreSQL {node._server.description}: [store] call_id_index = false: the index"
            f" {CALL_ID_INDEX} is not built: {pg_module._WITHOUT_CALL_ID_INDEX} (seconds on"
            " millions of records; docs/operations.md, 'Calls and log lines')",
        )
    ]
    node.call_records_save(_records())
    queries = _Queries(monkeypatch)
    assert _found(node, CALL_ID) == [f"{CALL_ID};zz", f"{CALL_ID};t1"]
    assert _found(node, "nobody") == []  # not among the newest: the whole table read
    assert queries.asked == [(True, True), (True, True), (True, False)]
    assert node.call_id_read_whole == "[store] call_id_index = false"


def test_call_id_index_false_leaves_an_index_already_there_alone_and_says_so(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An index built before the key was set is neither dropped nor rebuilt: a valid one is
    still read through (said at INFO, with the statement that drops it); an invalid one, which
    every save keeps up for nothing, is said at WARNING with that statement."""
    PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False).close()
    assert _index_state(postgres_cluster, shifted_database) == [True]
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    node = PostgresStore.open(
        postgres_cluster.dsn(shifted_database), node="node", call_id_index=False
    )
    opened.append(node)
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(
        f'call_id_index = false: the index {CALL_ID_INDEX} on call_id COLLATE "C" is there and'
        " left alone"
        in line
        and f"DROP INDEX CONCURRENTLY public.{CALL_ID_INDEX}" in line
        for line in infos
    ), infos
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    node.call_records_save(_records())
    _check_through_the_index(node, _Queries(monkeypatch))
    assert node.call_id_read_whole is None
    node.close()

    _invalidate(postgres_cluster, shifted_database)
    caplog.clear()
    again = PostgresStore.open(
        postgres_cluster.dsn(shifted_database), node="node", call_id_index=False
    )
    opened.append(again)
    assert _index_state(postgres_cluster, shifted_database) == [False]  # left alone
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f'the index {CALL_ID_INDEX} on call_id COLLATE "C" is there invalid' in warnings[0]
    assert f"DROP INDEX CONCURRENTLY public.{CALL_ID_INDEX}" in warnings[0]


@pytest.mark.parametrize("where", ["inline", "background", "migrate-store"])
def test_an_invalid_call_id_index_beside_a_valid_hand_built_one_is_dropped(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    """Ours left invalid (an interrupted build) beside a valid index on call_id COLLATE "C"
    an operator built by hand: the valid one answers, so no build ever looked at ours again,
    and every save kept it up for nothing (session 42's leftover). The holder of the build's
    advisory lock drops it, concurrently: at a small table's start, in a big table's
    background build, and in migrate-store's build."""
    PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False).close()
    postgres_cluster.admin(
        'CREATE INDEX ops_call_id_c ON call_records ((call_id COLLATE "C"))', shifted_database
    )
    _invalidate(postgres_cluster, shifted_database)
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    if where == "inline":
        store = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    elif where == "background":
        monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)  # "big": in the thread
        store = PostgresStore.open(postgres_cluster.dsn(shifted_database), node="node")
        assert store._builder is not None
        store._builder.join(30)
    else:
        monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)  # left by the opening
        store = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
        assert _index_state(postgres_cluster, shifted_database) == [False]
        assert store.build_indexes(wait=0) is True
    opened.append(store)
    assert _index_state(postgres_cluster, shifted_database) == []
    assert _index_state(postgres_cluster, shifted_database, "ops_call_id_c") == [True]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert (
        f"the index {CALL_ID_INDEX} is invalid (an interrupted build left it) beside the valid"
        ' index ops_call_id_c on call_id COLLATE "C", which answers in its place: dropped'
    ) in warnings[0]
    store.call_records_save(_records())
    _check_through_the_index(store, _Queries(monkeypatch))


def test_the_invalid_index_of_a_build_by_hand_in_progress_is_not_dropped(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An operator's CREATE INDEX CONCURRENTLY of our name, beside a valid index of another
    name, shows invalid until done and takes no advisory lock: left to finish, not
    dropped. (A guard of the drop: main, which has none, passes it too.)"""
    import psycopg

    PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False).close()
    postgres_cluster.admin(f"DROP INDEX {CALL_ID_INDEX}", shifted_database)
    postgres_cluster.admin(
        'CREATE INDEX ops_call_id_c ON call_records ((call_id COLLATE "C"))', shifted_database
    )
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    done: list[BaseException | None] = []

    def by_hand() -> None:
        try:
            with psycopg.connect(postgres_cluster.admin_dsn(shifted_database)) as hand:
                hand.autocommit = True
                hand.execute(pg_module._CREATE_CALL_ID_INDEX)
            done.append(None)
        except BaseException as exc:
            done.append(exc)

    with psycopg.connect(postgres_cluster.admin_dsn(shifted_database)) as writer:
        writer.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")  # holds the build
        hand = threading.Thread(target=by_hand, daemon=True)
        hand.start()
        _wait_until(lambda: _building(postgres_cluster, shifted_database))
        assert _index_state(postgres_cluster, shifted_database) == [False]
        store = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
        opened.append(store)
        assert _index_state(postgres_cluster, shifted_database) == [False]  # not dropped
        writer.rollback()
    hand.join(30)
    assert done == [None]
    assert _index_state(postgres_cluster, shifted_database) == [True]
    assert not any("dropped" in r.getMessage() for r in caplog.records)


def test_voipgw_calls_by_call_id_says_when_it_reads_without_the_index(
    postgres_cluster: Cluster,
    shifted_database: str,
    tmp_path: Path,
) -> None:
    """With ``call_id_index = false`` (and no index there), `voipgw calls --call-id` finds the
    records all the same and says on standard error that it read without the index, and why;
    migrate-store neither builds it nor says it is built (exit 0). With the index, no note."""
    seed = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    seed.call_records_save(_records())
    seed.close()
    config = _config(postgres_cluster, shifted_database, tmp_path)

    def voipgw(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *args, "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    indexed = voipgw("calls", "--call-id", CALL_ID)
    assert indexed.returncode == 0, indexed.stderr
    assert f"{CALL_ID};zz" in indexed.stdout and "note: no index" not in indexed.stderr

    postgres_cluster.admin(f"DROP INDEX {CALL_ID_INDEX}", shifted_database)
    config = _config(postgres_cluster, shifted_database, tmp_path, "call_id_index = false")
    migrated = voipgw("migrate-store")
    assert migrated.returncode == 0, migrated.stderr
    assert CALL_ID_INDEX not in migrated.stdout + migrated.stderr
    assert _index_state(postgres_cluster, shifted_database) == []
    found = voipgw("calls", "--call-id", CALL_ID)
    assert found.returncode == 0, found.stderr
    assert f"{CALL_ID};zz" in found.stdout and f"{CALL_ID};t1" in found.stdout
    assert (
        f'note: no index on call_id COLLATE "C" ({CALL_ID_INDEX}: [store] call_id_index ='
        " false): read the newest call records (at least 1000), then, if the call was not"
        " among them, the whole table"
    ) in found.stderr


def test_migrate_store_says_how_long_the_index_build_on_a_big_table_may_take(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """migrate-store (``build_indexes``) builds in the foreground what the store's opening left
    (a table past INLINE_INDEX_BYTES), whatever its size (session 43's decision: the operator
    started the run, and the saves go on meanwhile): as it starts each build, it says the
    table's size and about how long the build takes, and that Ctrl-C leaves it to the nodes.
    Not said when another session's build is left to (nothing is built here)."""
    seed = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    seed.call_records_save(_records())
    seed.close()
    postgres_cluster.admin(f"DROP INDEX {CALL_ID_INDEX}", shifted_database)
    postgres_cluster.admin("ANALYZE call_records", shifted_database)
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)  # "big": left by the opening
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    owner = PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False)
    opened.append(owner)
    assert owner.missing_indexes() == [CALL_ID_INDEX]
    assert not any("in the foreground" in r.getMessage() for r in caplog.records)
    assert owner.build_indexes(wait=0) is True
    said = [r.getMessage() for r in caplog.records if "in the foreground" in r.getMessage()]
    assert said == [
        f"PostgreSQL {owner._server.description}: the index {CALL_ID_INDEX} is built here, in"
        " the foreground, over call_records (about 4 records, 0 MiB): about 1 s at 1.6 s a"
        " million records on 2 vCPUs (docs/benchmarks.md), longer under load or while older"
        " transactions stay open; the nodes serve and save meanwhile; Ctrl-C stops it and a"
        " node's next start builds it"
    ]
    assert _index_state(postgres_cluster, shifted_database) == [True]


def test_a_nodes_background_build_leaves_a_build_by_hand_in_progress_to_finish(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As above, from a big table's background build, which has no statement_timeout: there
    a DROP INDEX CONCURRENTLY of the index being built by hand would wait for that build to
    end and then drop what it built (review-o6: the start's bounded try above gave up at
    statement_timeout whether the guard was there or not)."""
    import psycopg

    PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False).close()
    postgres_cluster.admin(f"DROP INDEX {CALL_ID_INDEX}", shifted_database)
    postgres_cluster.admin(
        'CREATE INDEX ops_call_id_c ON call_records ((call_id COLLATE "C"))', shifted_database
    )
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    monkeypatch.setattr(pg_module, "INLINE_INDEX_BYTES", -1)  # "big": in the thread
    done: list[BaseException | None] = []

    def by_hand() -> None:
        try:
            with psycopg.connect(postgres_cluster.admin_dsn(shifted_database)) as hand:
                hand.autocommit = True
                hand.execute(pg_module._CREATE_CALL_ID_INDEX)
            done.append(None)
        except BaseException as exc:
            done.append(exc)

    def dropping() -> bool:
        rows = postgres_cluster.admin(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'DROP INDEX%'",
            shifted_database,
        )
        return bool(rows[0][0])

    with psycopg.connect(postgres_cluster.admin_dsn(shifted_database)) as writer:
        writer.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")  # holds the build
        hand = threading.Thread(target=by_hand, daemon=True)
        hand.start()
        _wait_until(lambda: _building(postgres_cluster, shifted_database))
        store = PostgresStore.open(postgres_cluster.dsn(shifted_database), node="node")
        opened.append(store)
        builder = store._builder
        assert builder is not None
        _wait_until(lambda: not builder.is_alive() or dropping())
        writer.rollback()
    hand.join(30)
    builder.join(30)
    assert done == [None]
    assert _index_state(postgres_cluster, shifted_database) == [True]  # the hand-built one
    assert not any("dropp" in r.getMessage() for r in caplog.records)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_leftover_is_said_dropped_only_once_it_is(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The drop waits for the transactions open on call_records: a start's, bounded by
    statement_timeout, may give up. The WARNING that says the leftover dropped came before
    the DROP and stood in the log when it did not happen (review-o6); now an INFO says it is
    being dropped, and the WARNING comes once it is."""
    import psycopg

    PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False).close()
    postgres_cluster.admin(
        'CREATE INDEX ops_call_id_c ON call_records ((call_id COLLATE "C"))', shifted_database
    )
    _invalidate(postgres_cluster, shifted_database)
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    with psycopg.connect(postgres_cluster.admin_dsn(shifted_database)) as writer:
        writer.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")  # an open transaction
        opened.append(PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False))
        assert _index_state(postgres_cluster, shifted_database) == [False]  # not dropped
        said = [(r.levelno, r.getMessage()) for r in caplog.records if "dropp" in r.getMessage()]
        assert [level for level, _ in said] == [logging.INFO, logging.INFO], said
        assert f"dropping the index {CALL_ID_INDEX} concurrently" in said[0][1]
        assert f"the index {CALL_ID_INDEX} not dropped within statement_timeout" in said[1][1]
        writer.rollback()
    caplog.clear()
    opened.append(PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False))
    assert _index_state(postgres_cluster, shifted_database) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "which answers in its place: dropped" in warnings[0]


def test_migrate_store_interrupted_while_dropping_the_leftover_says_what_is_left(
    postgres_cluster: Cluster,
    shifted_database: str,
    tmp_path: Path,
) -> None:
    """migrate-store's drop of the invalid leftover waits for the transactions open on
    call_records, as long as they last: a Ctrl-C there exits 130 as any, and said
    "interrupted: the index ? is not built; it is needed" (no index is missing: review-o6).
    It says what is left: the leftover, which a node's next start (or migrate-store) drops."""
    import psycopg

    PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False).close()
    postgres_cluster.admin(
        'CREATE INDEX ops_call_id_c ON call_records ((call_id COLLATE "C"))', shifted_database
    )
    _invalidate(postgres_cluster, shifted_database)
    config = _config(postgres_cluster, shifted_database, tmp_path, "statement_timeout = 0.2")
    lines: list[str] = []
    with psycopg.connect(postgres_cluster.admin_dsn(shifted_database)) as writer:
        writer.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")  # an open transaction
        migrate = subprocess.Popen(
            [sys.executable, "-m", "gateway", "migrate-store", "--config", str(config)],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            # SIGINT as a terminal's foreground command has it (a test run in the background
            # ignores it, and the command would inherit that).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            assert migrate.stderr is not None
            reader = threading.Thread(target=lambda: lines.extend(migrate.stderr), daemon=True)
            reader.start()
            dropping = f"dropping the index {CALL_ID_INDEX} concurrently"
            # The opening's try (bounded, given up at statement_timeout), then build_indexes'.
            _wait_until(
                lambda: sum(dropping in line for line in lines) == 2 or migrate.poll() is not None,
                timeout=60,
            )
            assert migrate.poll() is None, "".join(lines)
            migrate.send_signal(signal.SIGINT)
            migrate.wait(60)
            reader.join(10)
        finally:
            if migrate.poll() is None:
                migrate.kill()
                migrate.wait()
    text = "".join(lines)
    assert migrate.returncode == 130, text
    assert "Traceback" not in text
    assert (
        f"voipgw: migrate-store: interrupted: the invalid index {CALL_ID_INDEX} is not dropped"
        " (it answers nothing; every call record save keeps it up): a node's next start, or"
        " migrate-store run again, drops it\n"
    ) in text, text
    assert "?" not in text.split("interrupted:")[1]
    assert _index_state(postgres_cluster, shifted_database) == [False]  # still there


@pytest.mark.parametrize("beside", ["a hand-built index", "none"])
def test_an_invalid_call_id_index_is_dropped_on_call_records_whatever_the_search_path(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    caplog: pytest.LogCaptureFixture,
    beside: str,
) -> None:
    """An invalid call_records_call_id_c is found on the call_records the search_path finds
    (to_regclass), but ``DROP INDEX ... call_records_call_id_c`` by its bare name dropped the
    first index of that name along the search_path: with ``search_path=aaa,public``
    (docs/configuration.md shows ``options=-c search_path=...``), an index of that name in
    aaa, on another table, valid, went, and the invalid one on public.call_records stayed
    (review-o6): beside a hand-built index, the leftover of session 43's drop; alone, session
    42's drop before the rebuild, whose ``IF NOT EXISTS`` then kept the invalid one. Each is
    dropped in call_records' schema."""
    PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False).close()
    if beside != "none":
        postgres_cluster.admin(
            'CREATE INDEX ops_call_id_c ON call_records ((call_id COLLATE "C"))', shifted_database
        )
    _invalidate(postgres_cluster, shifted_database)
    for statement in (
        f"CREATE SCHEMA aaa AUTHORIZATION {STORE_USER}",
        "CREATE TABLE aaa.notes (call_id text)",
        f"ALTER TABLE aaa.notes OWNER TO {STORE_USER}",
        f"CREATE INDEX {CALL_ID_INDEX} ON aaa.notes (call_id)",
    ):
        postgres_cluster.admin(statement, shifted_database)

    def index_states() -> list[tuple[object, ...]]:
        return postgres_cluster.admin(
            "SELECT n.nspname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid ="
            " i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
            f" WHERE c.relname = '{CALL_ID_INDEX}' ORDER BY n.nspname",
            shifted_database,
        )

    assert index_states() == [("aaa", True), ("public", False)]
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    dsn = postgres_cluster.dsn(shifted_database) + " options='-c search_path=aaa,public'"
    opened.append(PostgresStore.open(dsn, listen=False))
    if beside == "none":
        assert index_states() == [("aaa", True), ("public", True)]  # dropped, built again
    else:
        assert index_states() == [("aaa", True)]
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1, warnings
        assert "which answers in its place: dropped" in warnings[0]


def _decoys(cluster: Cluster, database: str, *, valid: bool) -> None:
    """A schema aaa, first on the search_path of the DSNs below, with an index of each of our
    names on a table of its own, ``valid`` or not: what ``options=-c search_path=...`` may put
    before call_records' schema (session 44)."""
    for statement in (
        f"CREATE SCHEMA aaa AUTHORIZATION {STORE_USER}",
        "CREATE TABLE aaa.notes (call_id text, ended_at float8)",
        f"ALTER TABLE aaa.notes OWNER TO {STORE_USER}",
        f"CREATE INDEX {CALL_ID_INDEX} ON aaa.notes (call_id)",
        f"CREATE INDEX {RETENTION_INDEX} ON aaa.notes (ended_at)",
    ):
        cluster.admin(statement, database)
    if not valid:
        cluster.admin(
            "UPDATE pg_index SET indisvalid = false WHERE indexrelid IN"
            f" ('aaa.{CALL_ID_INDEX}'::regclass, 'aaa.{RETENTION_INDEX}'::regclass)",
            database,
        )


def _states(cluster: Cluster, database: str, name: str) -> list[tuple[object, ...]]:
    """(schema, valid) of each index named ``name``, by schema."""
    return cluster.admin(
        "SELECT n.nspname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid ="
        " i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE c.relname = '{name}' ORDER BY n.nspname",
        database,
    )


@pytest.mark.parametrize("ours", ["invalid", "valid"])
def test_the_retention_index_is_looked_at_in_call_records_schema_whatever_the_search_path(
    postgres_cluster: Cluster,
    postgres_database: str,
    opened: list[PostgresStore],
    ours: str,
) -> None:
    """The retention index was asked of the catalogue by its bare name (to_regclass), which
    finds the first of that name along the search_path: with ``search_path=aaa,public`` and
    an index of that name in aaa, ours left invalid was taken for built (aaa's valid: never
    built again, every delete then reading the whole table), and ours valid taken for an
    interrupted build (aaa's invalid: aaa's dropped, by the bare name, and ours kept)."""
    PostgresStore.open(postgres_cluster.dsn(postgres_database), listen=False).close()
    if ours == "invalid":
        _invalidate(postgres_cluster, postgres_database, RETENTION_INDEX)
    _decoys(postgres_cluster, postgres_database, valid=ours == "invalid")
    dsn = postgres_cluster.dsn(postgres_database) + " options='-c search_path=aaa,public'"
    store = PostgresStore.open(dsn, listen=False)
    opened.append(store)
    assert store.missing_indexes() == []
    decoy = ours == "invalid"
    assert _states(postgres_cluster, postgres_database, RETENTION_INDEX) == [
        ("aaa", decoy),  # left as it was
        ("public", True),  # built again, or left
    ]


def test_call_id_index_false_names_every_valid_index_with_the_statement_to_paste(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the key false, each valid index on call_id COLLATE "C" is named (only the first
    was), and each DROP INDEX given qualified with call_records' schema and quoted, as psql,
    whose search_path is not the node's, takes it: the bare name, pasted, dropped aaa's."""
    PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False).close()
    postgres_cluster.admin(
        'CREATE INDEX "Ops C" ON call_records ((call_id COLLATE "C"))', shifted_database
    )
    _decoys(postgres_cluster, shifted_database, valid=True)
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    dsn = postgres_cluster.dsn(shifted_database) + " options='-c search_path=aaa,public'"
    opened.append(PostgresStore.open(dsn, node="node", call_id_index=False))
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "left alone" in r.getMessage()]
    assert [level for level, _ in said] == [logging.INFO, logging.INFO], said
    assert 'the index Ops C on call_id COLLATE "C" is there and left alone' in said[0][1]
    assert 'DROP INDEX CONCURRENTLY public."Ops C" drops it' in said[0][1]
    assert f"the index {CALL_ID_INDEX} on call_id" in said[1][1]
    assert f"DROP INDEX CONCURRENTLY public.{CALL_ID_INDEX} drops it" in said[1][1]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


@pytest.mark.parametrize("who", ["the node's role", "another role"])
def test_call_id_index_false_says_a_build_by_hand_in_progress_is_being_built(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    caplog: pytest.LogCaptureFixture,
    who: str,
) -> None:
    """The index of an operator's CREATE INDEX CONCURRENTLY in progress is invalid until it
    is done, as an interrupted build's is: it was warned of as one ("an interrupted build"),
    with the DROP that would undo the operator's build; it is said being built, at INFO.
    The node's own role's build is named by pg_stat_progress_create_index; another role's
    (a superuser's here) is not shown it, and is told by the index not being ready yet."""
    import psycopg

    PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False).close()
    postgres_cluster.admin(f"DROP INDEX {CALL_ID_INDEX}", shifted_database)
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    done: list[BaseException | None] = []

    def by_hand() -> None:
        try:
            with psycopg.connect(as_whom) as hand:
                hand.autocommit = True
                hand.execute(pg_module._CREATE_CALL_ID_INDEX)
            done.append(None)
        except BaseException as exc:
            done.append(exc)

    own = postgres_cluster.dsn(shifted_database)
    as_whom = own if who == "the node's role" else postgres_cluster.admin_dsn(shifted_database)
    with psycopg.connect(postgres_cluster.admin_dsn(shifted_database)) as writer:
        writer.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")  # holds the build
        hand = threading.Thread(target=by_hand, daemon=True)
        hand.start()
        _wait_until(lambda: _building(postgres_cluster, shifted_database))
        with psycopg.connect(own) as node_role:
            shown = node_role.execute(
                "SELECT index_relid IS NOT NULL FROM pg_stat_progress_create_index"
            ).fetchall()
        assert shown == [(who == "the node's role",)]  # what each path is for
        store = PostgresStore.open(own, node="node", call_id_index=False)
        opened.append(store)
        writer.rollback()
    hand.join(30)
    assert done == [None]
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert any(
        f'the index {CALL_ID_INDEX} on call_id COLLATE "C" is being built by another session'
        " (CREATE INDEX CONCURRENTLY in progress) and left to it" in r.getMessage()
        for r in caplog.records
    ), caplog.text


def test_a_role_that_may_not_drop_the_leftover_says_what_to_run_and_as_whom(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ours invalid beside a valid hand-built one, and a node of a role that only reads and
    writes: it may not drop the leftover, and says so once a start, with the statement (in
    call_records' schema) and the role that may run it, the owner of call_records."""
    PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False).close()
    postgres_cluster.admin(
        'CREATE INDEX ops_call_id_c ON call_records ((call_id COLLATE "C"))', shifted_database
    )
    _invalidate(postgres_cluster, shifted_database)
    dsn = _read_write_role(postgres_cluster, shifted_database)
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    node = PostgresStore.open(dsn, node="node")
    opened.append(node)
    if node._builder is not None:
        node._builder.join(30)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "this node's role may not drop it" in warnings[0]
    assert (
        f"run, as {STORE_USER}, the owner of call_records, outside a transaction:"
        f" DROP INDEX CONCURRENTLY public.{CALL_ID_INDEX}"
    ) in warnings[0]
    assert postgres_cluster.password not in caplog.text
    assert _index_state(postgres_cluster, shifted_database) == [False]


@pytest.mark.parametrize("theirs", ["invalid", "valid"])
def test_a_retention_index_name_on_another_table_of_the_schema_is_not_taken_for_ours(
    postgres_cluster: Cluster,
    postgres_database: str,
    opened: list[PostgresStore],
    caplog: pytest.LogCaptureFixture,
    theirs: str,
) -> None:
    """An index named call_records_kept_by on another table of call_records' own schema (an
    operator's, by hand) was taken for ours by its name alone (_index_valid): invalid, it was
    "an interrupted build" and dropped, the operator's index on their own table; valid, it was
    taken for built and every retention delete read the whole table. Only call_records'
    indexes are ours: IF NOT EXISTS then keeps theirs and the node says so."""
    PostgresStore.open(postgres_cluster.dsn(postgres_database), listen=False).close()
    postgres_cluster.admin(f"DROP INDEX {RETENTION_INDEX}", postgres_database)
    for statement in (
        "CREATE TABLE public.ops_notes (ended_at float8)",
        f"CREATE INDEX {RETENTION_INDEX} ON public.ops_notes (ended_at)",
    ):
        postgres_cluster.admin(statement, postgres_database)
    if theirs == "invalid":
        _invalidate(postgres_cluster, postgres_database, RETENTION_INDEX)
    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    store = PostgresStore.open(postgres_cluster.dsn(postgres_database), listen=False)
    opened.append(store)
    if store._builder is not None:
        store._builder.join(30)
    assert postgres_cluster.admin(
        "SELECT t.relname, i.indisvalid FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid"
        f" WHERE i.indexrelid = to_regclass('{RETENTION_INDEX}')",
        postgres_database,
    ) == [("ops_notes", theirs == "valid")]  # theirs, as it was: not dropped
    assert RETENTION_INDEX in store.missing_indexes()
    assert any(
        f"an index named {RETENTION_INDEX} is there, but not the one voipgw builds under that"
        f" name (CREATE INDEX CONCURRENTLY IF NOT EXISTS {RETENTION_INDEX}"
        " ON public.call_records (" in r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING
    ), caplog.text


@pytest.mark.parametrize(
    ("schema", "said"),
    [("select", '"select"'), ('Voip "Ops"', '"Voip ""Ops"""'), ("ops_2", "ops_2")],
)
def test_the_advice_names_are_quoted_as_psql_takes_them(
    postgres_cluster: Cluster, shifted_database: str, schema: str, said: str
) -> None:
    """What the advice lines give to paste (quote_ident): a schema named like a keyword, in
    upper case, with a space or a double quote, an index named so, and the owning role, each
    as SQL takes it; pasted where the search_path does not find call_records' schema, the
    DROP drops that index and the CREATE builds on that table."""
    import psycopg

    quoted = '"' + schema.replace('"', '""') + '"'
    for statement in (
        f"CREATE SCHEMA {quoted}",
        f"CREATE TABLE {quoted}.call_records (call_id text)",
        f'CREATE INDEX "We""ird C" ON {quoted}.call_records (call_id)',
        'DROP ROLE IF EXISTS "Ops Owner"',
        'CREATE ROLE "Ops Owner"',
        f'ALTER TABLE {quoted}.call_records OWNER TO "Ops Owner"',
    ):
        postgres_cluster.admin(statement, shifted_database)
    try:
        with psycopg.connect(postgres_cluster.admin_dsn(shifted_database)) as db:
            db.autocommit = True
            db.execute(f"SET search_path = {quoted}")
            index = pg_module._on_call_records(db, 'We"ird C')
            assert index == f'{said}."We""ird C"'
            assert pg_module._call_records_owner(db) == '"Ops Owner"'
            create = pg_module._in_schema(db, pg_module._CREATE_RETENTION_INDEX)
            assert f" ON {said}.call_records (" in create
            db.execute("SET search_path = public")  # psql's, where it is pasted
            db.execute(f"DROP INDEX CONCURRENTLY {index}")
            db.execute(create.replace("COALESCE(ended_at, started_at)", "call_id"))
            db.execute(f"SET search_path = {quoted}")
            assert pg_module._index_valid(db, 'We"ird C') is None  # that one dropped
            assert pg_module._index_valid(db) is True  # built on that call_records
    finally:
        postgres_cluster.admin(f"DROP SCHEMA {quoted} CASCADE", shifted_database)
        postgres_cluster.admin('DROP ROLE "Ops Owner"', shifted_database)


def test_a_drop_of_the_leftover_whose_connection_is_lost_says_so(
    postgres_cluster: Cluster,
    shifted_database: str,
    opened: list[PostgresStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The drop's failure line asked the catalogue for the names it gives (the schema, the
    owner) over the session the failure was on: one cut (the server restarted, a pooler or
    the watchdog closing it) failed again there, and the node said instead that building the
    retention index failed, with the second error. They are asked before the DROP."""
    import psycopg

    PostgresStore.open(postgres_cluster.dsn(shifted_database), listen=False).close()
    postgres_cluster.admin(
        'CREATE INDEX ops_call_id_c ON call_records ((call_id COLLATE "C"))', shifted_database
    )
    _invalidate(postgres_cluster, shifted_database)

    def dropping() -> list[tuple[object, ...]]:
        return postgres_cluster.admin(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'DROP INDEX CONCURRENTLY%'"
            " AND state = 'active'",
            shifted_database,
        )

    caplog.set_level(logging.INFO, logger=pg_module.__name__)
    with psycopg.connect(postgres_cluster.admin_dsn(shifted_database)) as writer:
        writer.execute("LOCK TABLE call_records IN ROW EXCLUSIVE MODE")  # holds the DROP
        store = PostgresStore.open(postgres_cluster.dsn(shifted_database), node="node")
        opened.append(store)
        builder = store._builder
        assert builder is not None
        caplog.clear()  # the start's bounded try, given up at statement_timeout
        _wait_until(lambda: bool(dropping()))
        postgres_cluster.admin(f"SELECT pg_terminate_backend({dropping()[0][0]})", shifted_database)
        builder.join(30)
        writer.rollback()
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 1, said
    assert said[0][0] == logging.WARNING
    assert f"dropping the index {CALL_ID_INDEX} failed: " in said[0][1]
    assert (
        f"as the owner of call_records ({STORE_USER}), outside a transaction:"
        f" DROP INDEX CONCURRENTLY public.{CALL_ID_INDEX})"
    ) in said[0][1]
    assert postgres_cluster.password not in caplog.text
