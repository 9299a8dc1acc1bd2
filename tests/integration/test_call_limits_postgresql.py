"""``max_calls`` counted for a cluster of nodes sharing one PostgreSQL store (tests/pgcluster.py):
a hold taken through one node counts on the other, the last slot goes to exactly one of many
concurrent takers, a killed node's holds stop counting once its heartbeat is old, a node's
start drops what its previous run held, and a node whose database does not answer counts its
own calls. Each store here is a node (its own connection and ``node`` name)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from pgcluster import Cluster

from gateway.core.calls.limits import NO_LIMIT, CallLimits, Key, Limit
from gateway.core.store.errors import StoreError
from gateway.core.store.postgresql import NODE_TIMEOUT, PostgresStore

TRUNK: Key = ("trunk", "carrier")
ALICE: Key = ("account", "alice")


@pytest.fixture
def open_node(
    postgres_cluster: Cluster, postgres_database: str
) -> Iterator[Callable[..., PostgresStore]]:
    """Opens stores ("nodes") named as asked on the test's database, and closes them after."""
    opened: list[PostgresStore] = []

    def open_one(node: str, **options: Any) -> PostgresStore:
        options.setdefault("listen", False)
        store = PostgresStore.open(postgres_cluster.dsn(postgres_database), node=node, **options)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def holds(cluster: Cluster, database: str) -> list[tuple[Any, ...]]:
    return cluster.admin(
        "SELECT node, kind, name FROM call_limit_holds ORDER BY node, call", database
    )


def age(cluster: Cluster, database: str, node: str, seconds: float) -> None:
    """``node`` was last seen ``seconds`` ago (as if that long had passed without a beat)."""
    cluster.admin(
        f"UPDATE call_limit_nodes SET seen_at = clock_timestamp() - interval '{seconds} seconds'"
        f" WHERE node = '{node}'",
        database,
    )


def call_limits(
    store: PostgresStore, *, cluster_cps: bool = False, **configured: Limit
) -> CallLimits:
    shared = store.shared_call_limits()
    assert shared is not None
    shared.start()
    return CallLimits(lambda key: configured.get(key[1], NO_LIMIT), shared, cluster_cps=cluster_cps)


def test_a_call_through_one_node_fills_the_trunk_for_the_other(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    a = call_limits(open_node("a"), carrier=Limit(max_calls=1))
    b = call_limits(open_node("b"), carrier=Limit(max_calls=1))
    call_a, call_b = object(), object()
    assert a.take(call_a, TRUNK) is None
    assert holds(postgres_cluster, postgres_database) == [("a", "trunk", "carrier")]
    assert b.take(call_b, TRUNK) == "call limit"
    assert b.refused[(TRUNK, "call limit")] == 1
    assert b.in_progress == {}
    # Another key is not affected by it.
    assert b.take(call_b, ALICE) is None
    a.release(call_a)  # the call ended
    assert holds(postgres_cluster, postgres_database) == []
    assert b.take(call_b, TRUNK) is None
    assert a.take(object(), TRUNK) == "call limit"
    assert holds(postgres_cluster, postgres_database) == [("b", "trunk", "carrier")]


def test_a_failed_over_trunk_is_given_back_alone(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    a = call_limits(
        open_node("a"), carrier=Limit(max_calls=1), backup=Limit(max_calls=1), alice=Limit(2)
    )
    call = object()
    assert a.take(call, ALICE) is None
    assert a.take(call, TRUNK) is None
    a.release_one(call, TRUNK)
    assert a.take(call, ("trunk", "backup")) is None
    assert holds(postgres_cluster, postgres_database) == [
        ("a", "account", "alice"),
        ("a", "trunk", "backup"),
    ]
    a.release(call)
    assert holds(postgres_cluster, postgres_database) == []


def test_of_many_concurrent_takers_exactly_the_limit_win(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    limit, nodes, per_node = 7, 4, 15
    stores = [open_node(f"n{i}", statement_timeout=5.0) for i in range(nodes)]
    for store in stores:
        shared = store.shared_call_limits()
        assert shared is not None
        shared.start()
    start = threading.Barrier(nodes)
    won: list[int] = []
    failed: list[BaseException] = []

    def node(index: int) -> None:
        shared = stores[index].shared_call_limits()
        assert shared is not None
        try:
            start.wait()
            for call in range(per_node):
                if shared.take(call, TRUNK, limit):
                    won.append(index)
        except BaseException as exc:
            failed.append(exc)

    threads = [threading.Thread(target=node, args=(i,)) for i in range(nodes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failed == []
    assert len(won) == limit
    assert len(holds(postgres_cluster, postgres_database)) == limit


def test_a_killed_nodes_holds_stop_counting_once_its_heartbeat_is_old(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    killed = open_node("killed")
    a = call_limits(killed, carrier=Limit(max_calls=1))
    b = call_limits(open_node("b"), carrier=Limit(max_calls=1))
    assert a.take(object(), TRUNK) is None
    killed.close()  # no release, no more heartbeats: as after SIGKILL
    b.beat()
    assert b.take(object(), TRUNK) == "call limit"
    age(postgres_cluster, postgres_database, "killed", NODE_TIMEOUT - 1.0)
    b.beat()
    assert b.take(object(), TRUNK) == "call limit"  # not yet taken for dead
    age(postgres_cluster, postgres_database, "killed", NODE_TIMEOUT + 1.0)
    assert b.take(object(), TRUNK) is None
    # A node's own holds count even when its heartbeat is old (it is alive: it is asking).
    age(postgres_cluster, postgres_database, "b", NODE_TIMEOUT + 1.0)
    assert b.take(object(), TRUNK) == "call limit"


def test_a_node_starting_again_drops_its_previous_runs_holds_only(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    first_run = call_limits(open_node("a"), carrier=Limit(max_calls=5))
    other = call_limits(open_node("b"), carrier=Limit(max_calls=5))
    assert first_run.take(object(), TRUNK) is None
    assert first_run.take(object(), TRUNK) is None
    assert other.take(object(), TRUNK) is None
    call_limits(open_node("a"), carrier=Limit(max_calls=5))  # its start
    assert holds(postgres_cluster, postgres_database) == [("b", "trunk", "carrier")]
    stopping = other.shared
    assert stopping is not None
    stopping.stop()
    assert holds(postgres_cluster, postgres_database) == []
    seen = postgres_cluster.admin(
        "SELECT node FROM call_limit_nodes ORDER BY node", postgres_database
    )
    assert seen == [("a",)]


def test_a_lost_connection_counts_on_this_node_then_writes_its_holds(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    store = open_node("a", listen=True)
    a = call_limits(store, alice=Limit(max_calls=1))
    first = object()
    assert a.take(first, ALICE) is None
    assert postgres_cluster.terminate(postgres_database, "voipgw") == 1  # a's store session
    b = call_limits(open_node("b"), alice=Limit(max_calls=1))
    # The connection is found lost: the call is counted here, against this node's calls.
    assert a.take(object(), ALICE) == "call limit"  # a has one already
    assert a.store_failing
    a.release(first)  # not heard by the database yet
    second = object()
    assert a.take(second, ALICE) is None
    assert a.counted_locally[ALICE] == 1
    # The database still has first's hold (its release did not reach it), not second's.
    assert holds(postgres_cluster, postgres_database) == [("a", "account", "alice")]
    assert b.take(object(), ALICE) == "call limit"
    # The store reconnects in the background (once a second); the heartbeat then writes what a
    # counted alone and deletes what it gave back.
    reconnected = False
    for _ in range(100):
        a.beat()
        if not a.store_failing:
            reconnected = True
            break
        threading.Event().wait(0.05)
    assert reconnected
    rows = postgres_cluster.admin("SELECT node, call FROM call_limit_holds", postgres_database)
    assert rows == [("a", 3)]  # second's (hold 3), written; first's (1), deleted
    assert b.take(object(), ALICE) == "call limit"
    a.release(second)
    assert b.take(object(), ALICE) is None


def test_a_database_that_does_not_answer_in_time_fails_open(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    store = open_node("a", statement_timeout=0.2)
    a = call_limits(store, carrier=Limit(max_calls=2))
    with psycopg.connect(postgres_cluster.admin_dsn(postgres_database)) as blocker:
        # A session holding the table (a hung migration, a long maintenance): takes wait for
        # it, until statement_timeout cancels them.
        blocker.execute("LOCK TABLE call_limit_holds IN ACCESS EXCLUSIVE MODE")
        assert a.take(object(), TRUNK) is None
        assert a.store_failing
        assert a.take(object(), TRUNK) is None
        assert a.take(object(), TRUNK) == "call limit"  # two on this node: its limit
        with pytest.raises(StoreError):
            shared = store.shared_call_limits()
            assert shared is not None
            shared.take(99, TRUNK, 2)
        blocker.rollback()
    a.beat()
    assert not a.store_failing
    assert len(holds(postgres_cluster, postgres_database)) == 2


def test_two_processes_under_one_node_name_see_each_other(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    first = open_node("same").shared_call_limits()
    second = open_node("same").shared_call_limits()
    assert first is not None and second is not None
    assert first.instance != second.instance
    assert first.other_instance() is None and second.other_instance() is None  # no heartbeat
    first.start()
    seen = second.other_instance()
    assert seen is not None and seen[0] == first.instance
    assert first.other_instance() is None  # its own heartbeat is not another's
    assert first.beat() is None  # nobody else wrote it
    moved = second.other_instance()
    assert moved is not None and moved[0] == first.instance and moved != seen  # alive
    # Both running: each heartbeat finds the other's.
    assert second.beat() == first.instance
    assert first.beat() == second.instance
    # One stopping leaves the other's heartbeat alone.
    second.stop()
    rows = postgres_cluster.admin("SELECT node, instance FROM call_limit_nodes", postgres_database)
    assert rows == [("same", first.instance)]


def test_a_previous_runs_heartbeat_stops_being_another_instance_once_old(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    killed = open_node("a").shared_call_limits()
    assert killed is not None
    killed.start()
    restarted = open_node("a").shared_call_limits()
    assert restarted is not None
    seen = restarted.other_instance()
    assert seen is not None and seen[0] == killed.instance
    assert restarted.other_instance() == seen  # a dead process's heartbeat does not move
    age(postgres_cluster, postgres_database, "a", NODE_TIMEOUT + 1.0)
    assert restarted.other_instance() is None
    restarted.start()
    assert restarted.beat() is None


def test_an_account_given_a_limit_while_its_calls_are_up_counts_them_for_the_cluster(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    # Node a's store listens (as the gateway's does): it hears of the change another process
    # (voipgw accounts set) makes.
    store_a = open_node("a", listen=True)
    admin = open_node("cli")
    admin.accounts_add("alice", "alice-password-1", "voipgw.test")

    def account_limit(store: PostgresStore) -> Callable[[Key], Limit]:
        def limit_of(key: Key) -> Limit:
            account = store.get_account(key[1])
            return NO_LIMIT if account is None else Limit(account.max_calls)

        return limit_of

    shared_a = store_a.shared_call_limits()
    assert shared_a is not None
    shared_a.start()
    a = CallLimits(account_limit(store_a), shared_a)
    b = call_limits(open_node("b"), alice=Limit(max_calls=2))
    up = [object(), object()]
    for call in up:
        assert a.take(call, ALICE) is None  # no limit yet: in memory only
    assert holds(postgres_cluster, postgres_database) == []
    admin.accounts_set("alice", max_calls=2)
    # Within a heartbeat or two of the notification, a's two calls are in the database.
    deadline = time.monotonic() + 10.0
    while len(holds(postgres_cluster, postgres_database)) < 2:
        assert time.monotonic() < deadline, "the calls up were not written"
        a.beat()
        time.sleep(0.05)
    assert holds(postgres_cluster, postgres_database) == [("a", "account", "alice")] * 2
    assert b.take(object(), ALICE) == "call limit"  # the cluster's count sees them
    a.release(up[0])
    assert b.take(object(), ALICE) is None
    a.release(up[1])
    assert holds(postgres_cluster, postgres_database) == [("b", "account", "alice")]


def test_the_heartbeat_counts_the_live_nodes_and_each_paces_its_share(
    open_node: Callable[..., PostgresStore], postgres_cluster: Cluster, postgres_database: str
) -> None:
    carrier = Limit(max_cps=10.0)
    a = call_limits(open_node("a"), cluster_cps=True, carrier=carrier)
    assert (a.live_nodes, a.paced_cps(TRUNK)) == (1, 10.0)  # alone at its start
    b = call_limits(open_node("b"), cluster_cps=True, carrier=carrier)
    assert (b.live_nodes, b.paced_cps(TRUNK)) == (2, 5.0)  # its start saw a
    a.beat()
    assert (a.live_nodes, a.paced_cps(TRUNK)) == (2, 5.0)
    # Each sends its share at once, 5 + 5: the carrier's 10, not 20.
    for node in (a, b):
        assert sum(node.take(object(), TRUNK, now=0.0) is None for _ in range(8)) == 5
    # b's heartbeat just short of the dead-node window still counts; past it, a has it all.
    age(postgres_cluster, postgres_database, "b", NODE_TIMEOUT - 1.0)
    a.beat()
    assert a.live_nodes == 2
    age(postgres_cluster, postgres_database, "b", NODE_TIMEOUT + 1.0)
    a.beat()
    assert (a.live_nodes, a.paced_cps(TRUNK)) == (1, 10.0)
    assert a.take(object(), TRUNK, now=0.0) == "call rate"  # no burst from the new share
    assert a.take(object(), TRUNK, now=0.1) is None  # 10 a second from now on
    # A third node joins, then b comes back: the counts follow; a clean stop leaves at once.
    c = call_limits(open_node("c"), cluster_cps=True, carrier=carrier)
    b.beat()
    a.beat()
    assert (a.live_nodes, b.live_nodes, c.live_nodes) == (3, 3, 2)
    assert a.paced_cps(TRUNK) == pytest.approx(10 / 3)
    assert c.shared is not None
    c.shared.stop()
    a.beat()
    assert a.live_nodes == 2
