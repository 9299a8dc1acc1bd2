"""The numbers PSAP callbacks may call, in the SQLite store (migration 3): each until its window
ends on the store's clock, a second call restarting it, the table bounded."""

from __future__ import annotations

from pathlib import Path

from gateway.core.store.sqlite import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_number_is_kept_until_its_window_ends_and_a_second_call_restarts_it(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = SqliteStore.open(tmp_path, clock=clock)
    try:
        assert store.psap_number_remaining("+4930123456") is None
        store.psap_number_presented("+4930123456", 1800.0, 100)
        clock.now += 1000
        assert store.psap_number_remaining("+4930123456") == 800.0
        store.psap_number_presented("+4930123456", 1800.0, 100)  # a second emergency call
        clock.now += 1799
        assert store.psap_number_remaining("+4930123456") == 1.0
        clock.now += 1
        assert store.psap_number_remaining("+4930123456") is None
    finally:
        store.close()
    reopened = SqliteStore.open(tmp_path, clock=clock)  # a restart: read from the file
    try:
        reopened.psap_number_presented("+15551234", 60.0, 100)
        assert reopened.psap_number_remaining("+15551234") == 60.0
    finally:
        reopened.close()


def test_the_table_is_bounded_and_expired_numbers_go_at_the_next_write(tmp_path: Path) -> None:
    clock = Clock()
    store = SqliteStore.open(tmp_path, clock=clock)
    try:
        store.psap_number_presented("+1555000", 10.0, 3)  # its window ends first
        for n in range(1, 5):
            store.psap_number_presented(f"+155500{n}", 100.0 + n, 3)
        held = [f"+155500{n}" for n in range(5) if store.psap_number_remaining(f"+155500{n}")]
        assert held == ["+1555002", "+1555003", "+1555004"]
        clock.now += 200
        store.psap_number_presented("+1555009", 100.0, 3)
        with store._read() as db:
            rows = db.execute("SELECT number FROM psap_callbacks").fetchall()
        assert rows == [("+1555009",)]  # the others' windows were over: deleted
    finally:
        store.close()
