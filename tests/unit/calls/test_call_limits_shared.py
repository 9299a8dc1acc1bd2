"""Call limits counted for a cluster (gateway/core/calls/limits.py with a SharedCallLimits, as a
PostgreSQL store gives): which keys reach the store, what it is told, and what a node does
while the store does not answer. The store here is a fake that records its calls; the SQL is
tested against a real server in tests/integration/test_call_limits_postgresql.py."""

from __future__ import annotations

import logging

import pytest

from gateway.core.calls.limits import NO_LIMIT, CallLimits, Key, Limit
from gateway.core.store.errors import StoreBusy
from tests.unit.calls.fake_shared import FakeShared

TRUNK: Key = ("trunk", "carrier")
ALICE: Key = ("account", "alice")
FREE: Key = ("account", "bob")  # no limit


def limits(shared: FakeShared, **configured: Limit) -> CallLimits:
    return CallLimits(lambda key: configured.get(key[1], NO_LIMIT), shared)


def test_keys_without_a_limit_never_reach_the_store() -> None:
    shared = FakeShared()
    lim = limits(shared, carrier=Limit(max_cps=5))
    calls = [object() for _ in range(50)]
    for call in calls:
        assert lim.take(call, FREE) is None
        assert lim.take(call, TRUNK) is None  # from the trunk: max_cps only, not paced
    for call in calls:
        lim.release(call)
    lim.take(object(), TRUNK, now=1.0)
    assert shared.calls == []
    assert lim.in_progress[TRUNK] == 1


def test_a_limited_key_is_counted_by_the_cluster() -> None:
    shared = FakeShared()
    shared.others[TRUNK] = 1  # another node has one of the two channels
    lim = limits(shared, carrier=Limit(max_calls=2))
    first, second = object(), object()
    assert lim.take(first, TRUNK) is None
    assert lim.take(first, TRUNK) is None  # once per call: not asked again
    assert lim.take(second, TRUNK) == "call limit"
    assert lim.refused[(TRUNK, "call limit")] == 1
    assert shared.calls == [("take", 1, TRUNK, 2, False), ("take", 2, TRUNK, 2, False)]
    assert shared.rows == {(1, TRUNK)}
    assert lim.in_progress[TRUNK] == 1  # this node's
    lim.release(first)
    assert shared.calls[-1] == ("release", [(1, TRUNK)])
    assert shared.rows == set()
    assert lim.in_progress == {}
    lim.release(first)  # twice: nothing more to give back, nothing asked
    assert len(shared.calls) == 3


def test_release_one_gives_back_that_key_only_and_the_holder_keeps_its_number() -> None:
    shared = FakeShared()
    lim = limits(shared, carrier=Limit(max_calls=5), alice=Limit(max_calls=5))
    call = object()
    assert lim.take(call, ALICE) is None
    assert lim.take(call, TRUNK) is None
    lim.release_one(call, TRUNK)  # the trunk failed: the call went on elsewhere
    assert shared.rows == {(1, ALICE)}
    assert lim.take(call, TRUNK) is None  # back to it (a transfer): the same hold number
    assert shared.rows == {(1, ALICE), (1, TRUNK)}
    lim.release(call)
    assert shared.calls[-1] == ("release", [(1, ALICE), (1, TRUNK)])
    assert shared.rows == set()


def test_counts_taken_for_an_invite_are_handed_over_to_its_call() -> None:
    shared = FakeShared()
    lim = limits(shared, alice=Limit(max_calls=1))
    transaction, call = object(), object()
    assert lim.take(transaction, ALICE) is None
    lim.hand_over(transaction, call)
    lim.release(transaction)  # nothing left under the old holder
    assert shared.rows == {(1, ALICE)}
    lim.release(call)
    assert shared.rows == set()
    assert lim.in_progress == {}


def test_an_exempt_call_is_held_whatever_the_count() -> None:
    shared = FakeShared()
    shared.others[ALICE] = 1
    lim = limits(shared, alice=Limit(max_calls=1))
    assert lim.take(object(), ALICE, count_refusal=False) == "call limit"
    assert lim.refused[(ALICE, "call limit")] == 0
    assert lim.take(object(), ALICE, exempt=True) is None
    assert shared.calls[-1] == ("take", 2, ALICE, 1, True)
    assert lim.in_progress[ALICE] == 1


def test_the_rate_is_checked_first_and_spent_only_on_a_held_call() -> None:
    shared = FakeShared()
    lim = limits(shared, carrier=Limit(max_calls=2, max_cps=1))
    assert lim.take(object(), TRUNK, now=10.0) is None
    assert lim.take(object(), TRUNK, now=10.5) == "call rate"
    assert len(shared.calls) == 1  # refused for the rate: the database was not asked
    shared.others[TRUNK] = 1  # the cluster is full: refused there, the token kept
    assert lim.take(object(), TRUNK, now=11.0) == "call limit"
    del shared.others[TRUNK]
    assert lim.take(object(), TRUNK, now=11.0) is None  # the same second's token
    assert lim.refused[(TRUNK, "call rate")] == 1


def test_while_the_store_does_not_answer_a_node_counts_its_own_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = FakeShared()
    lim = limits(shared, alice=Limit(max_calls=2))
    before = object()
    assert lim.take(before, ALICE) is None
    shared.down = True
    calls = [object(), object(), object()]
    with caplog.at_level(logging.WARNING, logger="gateway.core.calls.limits"):
        assert lim.take(calls[0], ALICE) is None  # this node has one: room for one more
        assert lim.take(calls[1], ALICE) == "call limit"  # at the limit on this node alone
        assert lim.take(calls[2], ALICE, exempt=True) is None  # an emergency call
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per outage, not per call
    assert "max_calls counted on this node only" in warnings[0]
    assert lim.store_failing
    assert lim.counted_locally[ALICE] == 2
    # Only the first call found the store out: the others were not sent to it.
    assert [c[0] for c in shared.calls] == ["take", "take"]
    lim.release(before)  # its row is in the database: deleted when it answers
    lim.release(calls[2])  # never sent to the database: nothing to write or delete later
    assert [c[0] for c in shared.calls] == ["take", "take"]
    lim.beat()  # still down: still counted here
    assert lim.store_failing
    assert lim.take(object(), ALICE) is None  # one call left on this node: room again
    shared.down = False
    lim.beat()
    assert shared.calls[-1][0] == "beat"
    _, add, remove = shared.calls[-1]
    assert add == [(2, ALICE), (5, ALICE)]
    assert remove == [(1, ALICE)]
    assert shared.rows == {(2, ALICE), (5, ALICE)}
    assert not lim.store_failing
    lim.beat()
    assert shared.calls[-1] == ("beat", [], [])  # written once
    assert lim.take(object(), ALICE) == "call limit"  # the cluster's count again
    assert shared.calls[-1][0] == "take"


def test_a_busy_store_on_release_is_retried_by_the_heartbeat() -> None:
    shared = FakeShared()
    lim = limits(shared, carrier=Limit(max_calls=1))
    call = object()
    assert lim.take(call, TRUNK) is None
    shared.down = True
    lim.release(call)
    assert shared.rows == {(1, TRUNK)}
    assert lim.store_failing
    shared.down = False
    lim.beat()
    assert shared.rows == set()
    assert lim.take(object(), TRUNK) is None


def test_a_hold_taken_again_after_a_lost_release_is_not_deleted_by_the_retry() -> None:
    shared = FakeShared()
    lim = limits(shared, carrier=Limit(max_calls=3))
    call = object()
    assert lim.take(call, TRUNK) is None
    shared.down = True
    lim.release_one(call, TRUNK)  # lost: to be deleted later...
    shared.down = False
    lim.beat()
    shared.calls.clear()
    assert lim.take(call, TRUNK) is None
    lim.beat()
    assert shared.calls[-1] == ("beat", [], [])
    assert shared.rows == {(1, TRUNK)}


def test_a_store_timeout_is_a_failure_like_any() -> None:
    shared = FakeShared()
    lim = limits(shared, carrier=Limit(max_calls=1))

    def busy(*args: object, **kwargs: object) -> bool:
        raise StoreBusy("no answer within statement_timeout")

    shared.take = busy  # type: ignore[method-assign]
    assert lim.take(object(), TRUNK) is None
    assert lim.store_failing
    assert lim.take(object(), TRUNK) == "call limit"


def test_without_a_shared_store_beat_does_nothing() -> None:
    lim = CallLimits(lambda key: Limit(max_calls=1))
    lim.beat()
    assert lim.take(object(), TRUNK) is None
    assert lim.take(object(), TRUNK) == "call limit"


def test_a_key_that_gains_a_limit_holds_the_calls_already_up_at_the_next_beat(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = FakeShared()
    configured: dict[str, Limit] = {}
    lim = CallLimits(lambda key: configured.get(key[1], NO_LIMIT), shared)
    up = [object(), object()]
    for call in up:
        assert lim.take(call, ALICE) is None  # no limit: counted in memory only
        assert lim.take(call, FREE) is None
    assert shared.calls == []
    lim.beat()  # nothing changed: nothing looked at, nothing written
    assert shared.calls == [("beat", [], [])]
    configured["alice"] = Limit(max_calls=2)  # voipgw accounts set alice --max-calls 2
    shared.changed = True
    with caplog.at_level(logging.INFO, logger="gateway.core.calls.limits"):
        lim.beat()
    assert shared.calls[-1] == ("beat", [(1, ALICE), (2, ALICE)], [])
    assert "account alice gained a max_calls: 2 call(s)" in caplog.text
    assert shared.rows == {(1, ALICE), (2, ALICE)}
    shared.changed = True
    lim.beat()  # written once
    assert shared.calls[-1] == ("beat", [], [])
    # The two calls up fill the new limit: a third is refused by the cluster's count.
    assert lim.take(object(), ALICE) == "call limit"
    lim.release(up[0])
    assert shared.calls[-1] == ("release", [(1, ALICE)])
    assert lim.take(object(), ALICE) is None
    # Lowered back to 0: the calls held keep their rows until they end, new ones none.
    configured["alice"] = NO_LIMIT
    shared.changed = True
    lim.beat()
    assert shared.calls[-1] == ("beat", [], [])


def test_a_take_on_a_key_that_gained_a_limit_writes_the_calls_up_first() -> None:
    shared = FakeShared()
    configured: dict[str, Limit] = {}
    lim = CallLimits(lambda key: configured.get(key[1], NO_LIMIT), shared)
    up = object()
    assert lim.take(up, TRUNK) is None
    configured["carrier"] = Limit(max_calls=1)
    # Before any heartbeat: the call up is written, then counted against the new call.
    assert lim.take(object(), TRUNK) == "call limit"
    assert [c[0] for c in shared.calls] == ["beat", "take"]
    assert shared.calls[0] == ("beat", [(1, TRUNK)], [])
    lim.release(up)
    assert shared.rows == set()
    assert lim.take(object(), TRUNK) is None


def test_calls_held_after_a_limit_appeared_during_an_outage_are_written_later() -> None:
    shared = FakeShared()
    configured: dict[str, Limit] = {}
    lim = CallLimits(lambda key: configured.get(key[1], NO_LIMIT), shared)
    up, ended = object(), object()
    assert lim.take(up, ALICE) is None
    assert lim.take(ended, ALICE) is None
    shared.down = True
    configured["alice"] = Limit(max_calls=5)
    shared.changed = True
    lim.beat()
    assert lim.store_failing
    lim.release(ended)  # never written: nothing to delete
    shared.down = False
    lim.beat()
    assert shared.calls[-1] == ("beat", [(1, ALICE)], [])
    assert shared.rows == {(1, ALICE)}


def test_another_instance_under_this_nodes_name_is_logged_once_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = FakeShared()
    lim = limits(shared)
    lim.beat()
    assert lim.name_conflicts == 0
    shared.intruder = "i-other"
    with caplog.at_level(logging.ERROR, logger="gateway.core.calls.limits"):
        lim.beat()
        lim.beat()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "instance i-other" in errors[0] and "[store] node" in errors[0]
    assert lim.name_conflicts == 2


# -- max_cps for the cluster ([store] max_cps_scope = "cluster") ------------------------------


def cluster_paced(shared: FakeShared, max_cps: float) -> CallLimits:
    return CallLimits(lambda key: Limit(max_cps=max_cps), shared, cluster_cps=True)


def test_each_node_paces_its_share_of_the_live_nodes() -> None:
    shared = FakeShared()
    shared.live_nodes = 3  # as start() counted them
    lim = cluster_paced(shared, 6.0)
    assert (lim.live_nodes, lim.cps_share) == (3, 1 / 3)
    assert lim.paced_cps(TRUNK) == pytest.approx(2.0)
    # Its share, 2 a second: a burst of 2, then one call every half second.
    assert [lim.take(object(), TRUNK, now=0.0) for _ in range(3)] == [None, None, "call rate"]
    assert lim.take(object(), TRUNK, now=0.4) == "call rate"
    assert lim.take(object(), TRUNK, now=0.5) is None
    # Pacing asked nothing of the store (no max_calls: no database work per call).
    assert shared.calls == []


def test_the_share_follows_the_heartbeats_count_without_a_burst() -> None:
    shared = FakeShared()
    shared.live_nodes = 2
    lim = cluster_paced(shared, 10.0)
    assert sum(lim.take(object(), TRUNK, now=0.0) is None for _ in range(20)) == 5
    shared.live_nodes = 1  # the other node died: this one's share is the whole 10 a second
    lim.beat()
    assert lim.paced_cps(TRUNK) == 10.0
    assert lim.take(object(), TRUNK, now=0.0) == "call rate"  # its bucket was not refilled
    assert lim.take(object(), TRUNK, now=0.1) is None  # refilled at the new rate
    assert lim.take(object(), TRUNK, now=0.1) == "call rate"
    # Over the next second, 10 calls (a one-call margin for float sums).
    sent = sum(lim.take(object(), TRUNK, now=0.1 + t / 100) is None for t in range(1, 101))
    assert 9 <= sent <= 11
    # Four nodes now: this one's bucket, full after a quiet while, holds 2.5 calls at most.
    shared.live_nodes = 4
    lim.beat()
    assert sum(lim.take(object(), TRUNK, now=60.0) is None for _ in range(10)) == 2


def test_a_database_out_of_reach_keeps_the_last_count(caplog: pytest.LogCaptureFixture) -> None:
    shared = FakeShared()
    shared.live_nodes = 3
    lim = cluster_paced(shared, 9.0)
    shared.down = True
    shared.live_nodes = 1  # never heard: the beat fails
    lim.beat()
    assert lim.store_failing
    # Not the whole 9 a second, which every node cut off with it would send too.
    assert (lim.live_nodes, lim.paced_cps(TRUNK)) == (3, pytest.approx(3.0))
    shared.down = False
    with caplog.at_level(logging.INFO):
        lim.beat()
    assert (lim.live_nodes, lim.paced_cps(TRUNK)) == (1, 9.0)
    assert any("1 node(s) alive" in r.getMessage() for r in caplog.records)


def test_the_node_scope_paces_the_whole_max_cps_whatever_the_count() -> None:
    shared = FakeShared()
    shared.live_nodes = 3
    lim = CallLimits(lambda key: Limit(max_cps=6.0), shared)  # max_cps_scope = "node"
    assert lim.live_nodes == 3  # counted all the same (a metric)
    assert lim.paced_cps(TRUNK) == 6.0
    assert sum(lim.take(object(), TRUNK, now=0.0) is None for _ in range(10)) == 6


def test_an_emergency_call_is_not_paced_by_the_share() -> None:
    shared = FakeShared()
    shared.live_nodes = 4
    lim = cluster_paced(shared, 1.0)  # a quarter call a second here
    assert lim.take(object(), TRUNK, now=0.0) is None
    assert lim.take(object(), TRUNK, now=0.0) == "call rate"
    assert all(lim.take(object(), TRUNK, now=0.0, exempt=True) is None for _ in range(3))


def test_a_database_outage_is_logged_once_summarized_every_300_s_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What operators see of a database that stays down (gateway/core/failure_log.py): one
    WARNING with the reason, a summary every 300 s while the heartbeats keep failing (how many,
    since when), one INFO when one is answered, saying what it wrote."""
    shared = FakeShared()
    wall = [1_796_000_000.0]  # 2026-11-30 00:53:20 UTC
    lim = CallLimits(
        lambda key: Limit(max_calls=2) if key == ALICE else NO_LIMIT,
        shared,
        wall_clock=lambda: wall[0],
    )
    shared.down = True

    def lines() -> list[tuple[int, str]]:
        found = [(r.levelno, r.getMessage()) for r in caplog.records]
        caplog.clear()
        return found

    with caplog.at_level(logging.INFO, logger="gateway.core.calls.limits"):
        assert lim.take(object(), ALICE) is None
        assert lines() == [
            (
                logging.WARNING,
                "call limits: the database is failing: it did not answer (PostgreSQL host=db: "
                "not connected (reconnecting)); max_calls counted on this node only until it "
                "does; further failures summarized every 300 s",
            )
        ]
        for _ in range(149):  # a heartbeat every 2 s, each failing: counted, not logged
            wall[0] += 2
            lim.beat()
        assert lines() == []
        wall[0] += 2  # 300 s after the first
        lim.beat()
        assert lines() == [
            (
                logging.WARNING,
                "call limits: the database is still failing: 150 failed requests in the last "
                "300 s, 151 since 2026-11-30 00:53:20 UTC; the last: it did not answer "
                "(PostgreSQL host=db: not connected (reconnecting))",
            )
        ]
        assert lim.store_failing
        shared.down = False
        wall[0] += 2
        lim.beat()
        lim.beat()
        assert lines() == [
            (
                logging.INFO,
                "call limits: the database answers again, after 151 failed requests in 302 s; "
                "max_calls counted for the cluster (1 call(s) counted on this node alone "
                "written)",
            )
        ]
    assert not lim.store_failing
    assert lim.counted_locally[ALICE] == 1
