"""The two settings the gateway opens its store with, because it calls the store from the event
loop that also relays media: a short wait for another process's write lock (then StoreBusy), and
write-ahead-log checkpoints in a thread instead of at a commit (gateway/core/store/sqlite.py)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.core.store.errors import StoreBusy
from gateway.core.store.interface import CallRecord
from gateway.core.store.sqlite import DB_FILENAME, SqliteStore

# A batch this size adds well over 1000 pages (SQLite's automatic checkpoint) to the log.
BIG_BATCH = 2000
SECURITY = '{"padding": "' + "x" * 2000 + '"}'


@contextmanager
def write_lock_held(state: Path) -> Iterator[None]:
    """Another process's write transaction (an operator's sqlite3 shell inside BEGIN)."""
    other = sqlite3.connect(state / DB_FILENAME, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


def records(first: int, count: int) -> list[CallRecord]:
    return [
        CallRecord(f"call-{n}", "sip:a@x", "sip:b@y", 1000.0, security_json=SECURITY)
        for n in range(first, first + count)
    ]


def database_file_size(state: Path) -> int:
    """What has been checkpointed: the log's pages reach the database file only then."""
    return (state / DB_FILENAME).stat().st_size


def checkpoint_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("sqlite checkpoints of")]


def test_a_write_the_lock_holder_keeps_out_raises_store_busy_and_writes_nothing(
    tmp_path: Path,
) -> None:
    store = SqliteStore.open(tmp_path, busy_timeout=0.01)
    try:
        with write_lock_held(tmp_path):
            started = time.monotonic()
            with pytest.raises(StoreBusy) as raised:
                store.call_records_save(records(0, 1))
            waited = time.monotonic() - started
        message = str(raised.value)
        assert str(tmp_path / DB_FILENAME) in message
        assert "longer than 0.01 s; nothing was written" in message
        assert waited < 2.0  # the short wait, not the CLI's 5 s
        assert store.call_record_get("call-0") is None
        store.call_records_save(records(0, 1))  # the lock is gone: the same write succeeds
        assert store.call_record_get("call-0") is not None
    finally:
        store.close()


def test_a_write_waits_for_a_lock_released_within_the_busy_timeout(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path, busy_timeout=5.0)
    other = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")
        releaser = threading.Timer(0.05, lambda: other.execute("COMMIT"))
        releaser.start()
        store.call_records_save(records(0, 1))
        releaser.join()
        assert store.call_record_get("call-0") is not None
    finally:
        other.close()
        store.close()


def test_with_a_checkpoint_interval_no_commit_checkpoints(tmp_path: Path) -> None:
    # The control: opened as the CLI opens it, the commit that passes 1000 pages copies them.
    cli = tmp_path / "cli"
    store = SqliteStore.open(cli)
    before = database_file_size(cli)
    store.call_records_save(records(0, BIG_BATCH))
    assert database_file_size(cli) > before + 1000 * 4096
    store.close()

    gateway = tmp_path / "gateway"
    store = SqliteStore.open(gateway, checkpoint_interval=3600.0)
    try:
        before = database_file_size(gateway)
        store.call_records_save(records(0, BIG_BATCH))
        store.call_records_save(records(BIG_BATCH, BIG_BATCH))
        assert database_file_size(gateway) == before  # all of it still in the log
        assert store.call_record_get(f"call-{2 * BIG_BATCH - 1}") is not None
    finally:
        store.close()


def test_the_checkpoint_thread_copies_the_log_into_the_database_file(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path, checkpoint_interval=0.01)
    try:
        before = database_file_size(tmp_path)
        store.call_records_save(records(0, BIG_BATCH))
        deadline = time.monotonic() + 10.0
        while database_file_size(tmp_path) <= before + 1000 * 4096:
            assert time.monotonic() < deadline, "no checkpoint within 10 s"
            time.sleep(0.01)
    finally:
        store.close()
    # Everything is there for the next process (the last close checkpoints the rest).
    reopened = SqliteStore.open(tmp_path)
    try:
        assert len(reopened.call_records_recent(BIG_BATCH + 1)) == BIG_BATCH
    finally:
        reopened.close()


def test_close_stops_the_checkpoint_thread(tmp_path: Path) -> None:
    assert checkpoint_threads() == []
    store = SqliteStore.open(tmp_path, checkpoint_interval=3600.0)
    assert len(checkpoint_threads()) == 1
    store.close()
    assert checkpoint_threads() == []


def test_without_a_checkpoint_interval_there_is_no_thread(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path)
    try:
        assert checkpoint_threads() == []
    finally:
        store.close()


@pytest.mark.parametrize(
    ("option", "value", "complaint"),
    [
        ("busy_timeout", -1.0, "busy_timeout must not be negative"),
        ("checkpoint_interval", 0.0, "checkpoint_interval must be positive"),
    ],
)
def test_bad_settings_are_refused(
    tmp_path: Path, option: str, value: float, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        SqliteStore.open(tmp_path, **{option: value})  # type: ignore[arg-type]
