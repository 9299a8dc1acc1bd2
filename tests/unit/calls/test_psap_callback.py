"""PSAP callbacks (RFC 7090, gateway/core/calls/psap_callback.py): the marking, and the numbers
an emergency call presented, each for the window after the call."""

from __future__ import annotations

import logging

import pytest

from gateway.core.calls import psap_callback
from gateway.core.calls.psap_callback import PsapCallbacks, marked_as_callback
from gateway.core.store.errors import StoreBusy, StoreUnavailable


@pytest.mark.parametrize(
    ("value", "marked"),
    [
        ("psap-callback", True),
        ("PSAP-Callback", True),  # a token: any case
        (" psap-callback ", True),
        ("emergency", False),
        ("urgent", False),
        ("psap-callback-x", False),
        ("", False),
        (None, False),
    ],
)
def test_the_priority_value_marks_a_callback(value: str | None, marked: bool) -> None:
    assert marked_as_callback(value) is marked


def test_a_number_is_called_back_only_within_the_window() -> None:
    callbacks = PsapCallbacks(window=1800.0)
    callbacks.emergency_call_presented("+4930123456", now=100.0)
    assert callbacks.called_back("+4930123456", now=100.0)
    assert callbacks.called_back("+4930123456", now=1899.9)
    assert not callbacks.called_back("+4930999", now=200.0)  # another number
    assert not callbacks.called_back("+4930123456", now=1900.0)
    assert len(callbacks) == 0  # the expired number is forgotten when asked


def test_a_second_emergency_call_restarts_the_window() -> None:
    callbacks = PsapCallbacks(window=60.0)
    callbacks.emergency_call_presented("+15551234", now=0.0)
    callbacks.emergency_call_presented("+15551234", now=50.0)
    assert callbacks.called_back("+15551234", now=100.0)
    assert not callbacks.called_back("+15551234", now=110.0)


def test_a_window_of_zero_keeps_nothing() -> None:
    callbacks = PsapCallbacks(window=0.0)
    callbacks.emergency_call_presented("+4930123456", now=0.0)
    assert len(callbacks) == 0
    assert not callbacks.called_back("+4930123456", now=0.0)


def test_memory_is_bounded_and_the_oldest_numbers_go_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(psap_callback, "MAX_NUMBERS", 3)
    callbacks = PsapCallbacks(window=1000.0)
    for n in range(5):
        callbacks.emergency_call_presented(f"+1555000{n}", now=float(n))
    assert len(callbacks) == 3
    assert not callbacks.called_back("+15550000", now=10.0)
    assert not callbacks.called_back("+15550001", now=10.0)
    assert all(callbacks.called_back(f"+1555000{n}", now=10.0) for n in (2, 3, 4))


class FakeStore:
    """The two store calls PsapCallbacks makes, a dict on the store's clock ``now``, able to
    fail like a store out of reach."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.until: dict[str, float] = {}
        self.failing = False
        self.reads = 0
        self.writes: list[tuple[str, float]] = []

    def psap_number_presented(self, number: str, window: float, most: int) -> None:
        if self.failing:
            raise StoreUnavailable("PostgreSQL host=db: not connected (reconnecting)")
        self.writes.append((number, window))
        self.until[number] = self.now + window

    def psap_number_remaining(self, number: str) -> float | None:
        self.reads += 1
        if self.failing:
            raise StoreBusy("PostgreSQL host=db: no answer within statement_timeout")
        left = self.until.get(number, self.now) - self.now
        return left if left > 0 else None


def on(store: FakeStore, window: float = 1800.0) -> PsapCallbacks:
    return PsapCallbacks(window, store)  # type: ignore[arg-type]


def test_another_node_or_a_restart_finds_the_number_in_the_store_until_its_window_ends() -> None:
    store = FakeStore()
    on(store).emergency_call_presented("+4930123456", now=5.0)
    assert store.writes == [("+4930123456", 1800.0)]
    other = on(store)  # node B, or this node restarted: its own clock, nothing in memory
    store.now += 1000
    assert other.called_back("+4930123456", now=70_000.0)
    assert other.store_hits == 1 and len(other) == 1
    # Memory keeps the 800 s the store had left: no more reads for it, and it ends with them.
    assert other.called_back("+4930123456", now=70_799.0)
    assert store.reads == 1
    store.now += 800
    assert not other.called_back("+4930123456", now=70_800.0)
    assert store.reads == 2 and len(other) == 0


def test_a_number_the_store_does_not_hold_is_asked_once_for_one_invite() -> None:
    store = FakeStore()
    callbacks = on(store)
    assert not callbacks.called_back("+4930999", now=10.0)
    assert not callbacks.called_back("+4930999", now=10.0)  # the call cap, then the trunk's
    assert store.reads == 1
    assert not callbacks.called_back("+4930999", now=11.0)  # a second later: asked again
    assert store.reads == 2
    # Presented meanwhile: the "no" kept is forgotten.
    callbacks.emergency_call_presented("+4930999", now=11.5)
    assert callbacks.called_back("+4930999", now=11.6)


def test_store_reads_are_rate_limited() -> None:
    store = FakeStore()
    callbacks = on(store)
    burst = int(psap_callback.STORE_READS_PER_SECOND)
    for n in range(burst + 5):
        callbacks.called_back(f"+1555{n:04}", now=0.0)
    assert store.reads == burst  # past the burst, memory answers alone
    store.until["+15559999"] = store.now + 60
    assert not callbacks.called_back("+15559999", now=0.0)
    assert callbacks.called_back("+15559999", now=1.0)  # a second later, asked again


def test_a_store_out_of_reach_leaves_memory_to_answer_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FakeStore()
    store.failing = True
    callbacks = on(store)
    with caplog.at_level(logging.INFO, logger="gateway.core.calls.psap_callback"):
        callbacks.emergency_call_presented("+4930111", now=0.0)
        # Not asked again for STORE_RETRY_SECONDS: memory answers alone, at once.
        callbacks.emergency_call_presented("+4930222", now=1.0)
        assert callbacks.called_back("+4930111", now=2.0)  # memory
        assert not callbacks.called_back("+4930333", now=3.0)
        assert store.reads == 0 and callbacks.store_failures == 1
        assert not callbacks.called_back("+4930333", now=6.0)  # asked again: fails again
        assert store.reads == 1 and callbacks.store_failures == 2
        assert callbacks.store_failing
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "store did not answer (PostgreSQL host=db: not connected" in warnings[0].message
        # It answers again: the next emergency call writes its number, then those missed.
        store.failing = False
        callbacks.emergency_call_presented("+4930444", now=100.0)
    assert store.writes == [("+4930444", 1800.0), ("+4930222", 1701.0), ("+4930111", 1700.0)]
    assert not callbacks.store_failing
    assert "the store answers again" in caplog.records[-1].message


def test_numbers_missed_reach_the_store_a_few_per_call_and_expired_ones_never(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(psap_callback, "WRITES_PER_CALL", 2)
    store = FakeStore()
    store.failing = True
    callbacks = on(store, window=100.0)
    callbacks.emergency_call_presented("+1555000", now=0.0)  # its window is over at 100
    for n in range(1, 4):
        callbacks.emergency_call_presented(f"+155500{n}", now=50.0 + n)
    store.failing = False
    callbacks.emergency_call_presented("+1555009", now=120.0)
    assert store.writes == [("+1555009", 100.0), ("+1555003", 33.0)]
    callbacks.emergency_call_presented("+1555008", now=121.0)
    assert store.writes[2:] == [("+1555008", 100.0), ("+1555002", 31.0)]
    callbacks.emergency_call_presented("+1555007", now=122.0)
    assert store.writes[4:] == [("+1555007", 100.0), ("+1555001", 29.0)]
    assert "+1555000" not in dict(store.writes)


def test_without_a_window_the_store_is_never_asked() -> None:
    store = FakeStore()
    callbacks = on(store, window=0.0)
    callbacks.emergency_call_presented("+4930123456", now=0.0)
    assert not callbacks.called_back("+4930123456", now=0.0)
    assert store.writes == [] and store.reads == 0


def test_a_store_outage_is_logged_once_summarized_every_300_s_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What operators see of a store that stays down (gateway/core/failure_log.py): one
    WARNING with the reason, a summary every 300 s (how many failed, since when), one INFO
    when it answers; not a line per emergency call or marked INVITE."""
    store = FakeStore()
    store.failing = True
    wall = [1_796_000_000.0]  # 2026-11-30 00:53:20 UTC
    callbacks = PsapCallbacks(window=1800.0, store=store, wall_clock=lambda: wall[0])

    def lines() -> list[tuple[int, str]]:
        found = [(r.levelno, r.getMessage()) for r in caplog.records]
        caplog.clear()
        return found

    with caplog.at_level(logging.INFO, logger="gateway.core.calls.psap_callback"):
        callbacks.emergency_call_presented("+4930111", now=0.0)
        assert lines() == [
            (
                logging.WARNING,
                "PSAP callbacks: the store is failing: the store did not answer (PostgreSQL "
                "host=db: not connected (reconnecting)); until it does, only this node's memory "
                "knows which numbers a callback may call; further failures summarized every "
                "300 s",
            )
        ]
        # Asked again every STORE_RETRY_SECONDS for 295 s: counted, not logged.
        for second in range(5, 300, 5):
            wall[0] += 5
            assert not callbacks.called_back(f"+1555{second:04}", now=float(second))
        assert callbacks.store_failures == 60
        assert lines() == []
        wall[0] += 5  # 300 s after the first
        callbacks.emergency_call_presented("+4930222", now=300.0)
        assert lines() == [
            (
                logging.WARNING,
                "PSAP callbacks: the store is still failing: 60 failed reads and writes in "
                "the last 300 s, 61 since 2026-11-30 00:53:20 UTC; the last: the store did not "
                "answer (PostgreSQL host=db: not connected (reconnecting))",
            )
        ]
        store.failing = False
        wall[0] += 10
        callbacks.emergency_call_presented("+4930333", now=310.0)
        callbacks.emergency_call_presented("+4930444", now=320.0)
        assert lines() == [
            (
                logging.INFO,
                "PSAP callbacks: the store answers again, after 61 failed reads and writes in "
                "310 s",
            )
        ]
    assert callbacks.store_failures == 61  # the metric counts every failure
