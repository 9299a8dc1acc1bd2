"""The call record book: the records of live calls, saved to the store in batches."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from gateway.core.calls import records as records_module
from gateway.core.calls.records import (
    FLUSH_INTERVAL,
    LONGEST_BUSY_INTERVAL,
    CallRecordBook,
)
from gateway.core.store.errors import InvalidValue, StoreBusy, StoreError
from gateway.core.store.interface import CallRecord
from gateway.core.store.sqlite import DB_FILENAME, SqliteStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Call:
    """What the book asks a call for: its security record as it stands."""

    def __init__(self) -> None:
        self.security: dict[str, object] = {"a": {"key_exchange": "sdes"}}
        self.asked = 0

    def security_record(self) -> Mapping[str, object]:
        self.asked += 1
        return self.security


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore.open(tmp_path)
    yield store
    store.close()


def test_nothing_reaches_the_store_before_a_flush(store: SqliteStore) -> None:
    book = CallRecordBook(store, clock=FakeClock())
    book.started("c1", "sip:a@x", "sip:b@y")
    assert book.pending == 1
    assert store.call_record_get("c1") is None
    book.flush()
    assert book.pending == 0
    assert store.call_record_get("c1") == CallRecord("c1", "sip:a@x", "sip:b@y", 1000.0)


def test_a_whole_call_within_one_interval_is_one_row_with_every_field(
    store: SqliteStore,
) -> None:
    clock = FakeClock()
    book = CallRecordBook(store, clock=clock)
    call = Call()
    book.started("c1", "sip:a@x", "sip:b@y")
    clock.now = 1002.0
    book.answered("c1", call)
    clock.now = 1060.0
    book.ended("c1", "BYE from A leg", {"a": {"key_exchange": "dtls"}})
    book.flush()
    record = store.call_record_get("c1")
    assert record == CallRecord(
        "c1", "sip:a@x", "sip:b@y", 1000.0, 1002.0, 1060.0, "BYE from A leg", record.security_json
    )
    assert record.security == {"a": {"key_exchange": "dtls"}}
    assert call.asked == 0  # ended: the security given then, not the call's later state


def test_a_live_call_is_saved_with_its_security_at_the_flush(store: SqliteStore) -> None:
    book = CallRecordBook(store, clock=FakeClock())
    call = Call()
    book.started("c1", "sip:a@x", "sip:b@y")
    book.answered("c1", call)
    call.security = {"a": {"key_exchange": "zrtp"}}
    book.flush()
    record = store.call_record_get("c1")
    assert record is not None and record.answered_at == 1000.0 and record.ended_at is None
    assert record.security == {"a": {"key_exchange": "zrtp"}}
    book.flush()  # nothing changed: nothing saved, the call is not asked again
    assert call.asked == 1


def test_changes_after_a_flush_replace_the_saved_row(store: SqliteStore) -> None:
    clock = FakeClock()
    book = CallRecordBook(store, clock=clock)
    book.started("c1", "sip:a@x", "sip:b@y")
    book.flush()
    clock.now = 1030.0
    book.ended("c1", "CANCEL from A leg", {})
    book.flush()
    assert store.call_record_get("c1") == CallRecord(
        "c1", "sip:a@x", "sip:b@y", 1000.0, None, 1030.0, "CANCEL from A leg", "{}"
    )
    assert [r.call_id for r in store.call_records_recent()] == ["c1"]


def test_events_for_unknown_or_ended_calls_are_ignored(store: SqliteStore) -> None:
    book = CallRecordBook(store, clock=FakeClock())
    book.answered("nope", Call())
    book.ended("nope", "x", {})
    book.started("c1", "sip:a@x", "sip:b@y")
    book.ended("c1", "done", {})
    book.ended("c1", "again", {})
    book.flush()
    assert store.call_records_recent() == (
        CallRecord("c1", "sip:a@x", "sip:b@y", 1000.0, None, 1000.0, "done", "{}"),
    )


def test_a_security_record_that_is_not_json_is_kept_empty(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    book = CallRecordBook(store, clock=FakeClock())
    book.started("c1", "sip:a@x", "sip:b@y")
    book.ended("c1", "done", {"x": object()})
    with caplog.at_level(logging.ERROR):
        book.flush()
    record = store.call_record_get("c1")
    assert record is not None and record.security_json == "{}" and record.end_reason == "done"
    assert "not JSON-serializable" in caplog.text


def test_a_failing_store_loses_that_batch_only(
    store: SqliteStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = CallRecordBook(store, clock=FakeClock())
    book.started("c1", "sip:a@x", "sip:b@y")

    def refuse(records: object) -> None:
        raise StoreError("disk full")

    monkeypatch.setattr(store, "call_records_save", refuse)
    with caplog.at_level(logging.WARNING):
        book.flush()
    assert "1 call record change(s) not kept: disk full" in caplog.text
    monkeypatch.undo()
    book.started("c2", "sip:c@x", "sip:d@y")
    book.flush()
    assert [r.call_id for r in store.call_records_recent()] == ["c2"]


def test_a_store_that_raises_anything_does_not_stop_the_book(
    store: SqliteStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # E.g. an SQLite error the store does not translate: the gateway must go on.
    book = CallRecordBook(store, clock=FakeClock())
    book.started("c1", "sip:a@x", "sip:b@y")

    def locked(records: object) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(store, "call_records_save", locked)
    with caplog.at_level(logging.ERROR):
        book.flush()
    assert "1 call record change(s) not kept" in caplog.text
    assert book.pending == 0


def test_a_failing_security_record_keeps_the_rest_of_the_record(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(Call):
        def security_record(self) -> Mapping[str, object]:
            raise RuntimeError("plugin bug")

    book = CallRecordBook(store, clock=FakeClock())
    book.started("c1", "sip:a@x", "sip:b@y")
    book.answered("c1", Broken())
    book.started("c2", "sip:c@x", "sip:d@y")
    with caplog.at_level(logging.ERROR):
        book.flush()
    record = store.call_record_get("c1")
    assert record is not None and record.answered_at == 1000.0 and record.security_json == "{}"
    assert store.call_record_get("c2") is not None
    assert "call c1: security record failed" in caplog.text


async def test_run_saves_every_interval(
    store: SqliteStore, autojump_clock: trio.testing.MockClock
) -> None:
    book = CallRecordBook(store, clock=FakeClock())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(book.run)
        book.started("c1", "sip:a@x", "sip:b@y")
        await trio.sleep(FLUSH_INTERVAL / 2)
        assert store.call_record_get("c1") is None
        await trio.sleep(FLUSH_INTERVAL)
        assert store.call_record_get("c1") is not None
        nursery.cancel_scope.cancel()


# -- a busy store (another process holds the write lock) -------------------------------------


def test_a_busy_store_keeps_the_batch_until_it_can_be_saved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore.open(tmp_path, busy_timeout=0.0)
    other = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    try:
        call = Call()
        book = CallRecordBook(store, clock=FakeClock())
        book.started("c1", "sip:a@x", "sip:b@y")
        book.started("c2", "sip:c@x", "sip:d@y")
        book.answered("c2", call)
        other.execute("BEGIN IMMEDIATE")
        with caplog.at_level(logging.INFO):
            book.flush()
            assert book.pending == 2
            book.ended("c1", "caller hung up", {})
            book.flush()
            assert book.pending == 2
            assert store.call_record_get("c1") is None
            other.execute("ROLLBACK")
            call.security = {"a": {"key_exchange": "dtls"}}
            book.flush()
        assert book.pending == 0
        ended = store.call_record_get("c1")
        assert ended is not None and ended.end_reason == "caller hung up"
        live = store.call_record_get("c2")
        assert live is not None and "dtls" in live.security_json  # as the call stands now
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1  # once per busy spell, not once per attempt
        assert warnings[0].startswith("call records: the store is failing: it is busy (")
        assert "call records kept for the next save" in warnings[0]
        assert "call records: the store answers again, after 2 failed saves" in caplog.text
    finally:
        other.close()
        store.close()


def refuse_busy(records: object) -> None:
    raise StoreBusy("voipgw.sqlite3: another process held the write lock")


def test_saves_back_off_while_the_store_is_busy_and_recover_after(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    book = CallRecordBook(store, clock=FakeClock())
    monkeypatch.setattr(store, "call_records_save", refuse_busy)
    intervals = [book.next_interval()]
    for _ in range(8):
        book.started("c1", "sip:a@x", "sip:b@y")
        book.flush()
        intervals.append(book.next_interval())
    assert intervals == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 3.2, 3.2, 3.2])
    assert pytest.approx(3.2) == LONGEST_BUSY_INTERVAL
    monkeypatch.undo()
    book.flush()
    assert book.next_interval() == FLUSH_INTERVAL


def test_a_busy_spell_is_logged_once_summarized_every_300_s_and_its_end_once(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """What operators see of a store another process keeps locked (gateway/core/failure_log.py):
    one WARNING with the reason, a summary every 300 s (how many saves were refused, since
    when), one INFO when a save goes through; not a line per refused save."""
    clock = FakeClock()
    clock.now = 1_796_000_000.0  # 2026-11-30 00:53:20 UTC
    book = CallRecordBook(store, clock=clock)
    monkeypatch.setattr(store, "call_records_save", refuse_busy)

    def lines() -> list[tuple[int, str]]:
        found = [(r.levelno, r.getMessage()) for r in caplog.records]
        caplog.clear()
        return found

    with caplog.at_level(logging.INFO, logger="gateway.core.calls.records"):
        book.started("c1", "sip:a@x", "sip:b@y")
        book.flush()
        assert lines() == [
            (
                logging.WARNING,
                "call records: the store is failing: it is busy (voipgw.sqlite3: another "
                "process held the write lock); call records kept for the next save; further "
                "failures summarized every 300 s",
            )
        ]
        for _ in range(93):  # a save every 3.2 s (backing off), each refused: counted
            clock.now += 3.2
            book.flush()
        assert lines() == []
        clock.now += 3.2  # 300.8 s after the first
        book.flush()
        assert lines() == [
            (
                logging.WARNING,
                "call records: the store is still failing: 94 failed saves in the last 300.8 s, "
                "95 since 2026-11-30 00:53:20 UTC; the last: it is busy (voipgw.sqlite3: another "
                "process held the write lock)",
            )
        ]
        monkeypatch.undo()
        clock.now += 3.2
        book.flush()
        book.started("c2", "sip:a@x", "sip:b@y")
        book.flush()
        assert lines() == [
            (logging.INFO, "call records: the store answers again, after 95 failed saves in 304 s")
        ]
    assert book.pending == 0 and store.call_record_get("c1") is not None


async def test_run_tries_a_busy_store_a_few_times_a_second_at_most(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    # Each refused save has waited the busy timeout on the event loop: not ten times a second.
    attempts: list[float] = []

    def busy(records: object) -> None:
        attempts.append(trio.current_time())
        refuse_busy(records)

    monkeypatch.setattr(store, "call_records_save", busy)
    book = CallRecordBook(store, clock=FakeClock())
    book.started("c1", "sip:a@x", "sip:b@y")
    start = trio.current_time()
    with trio.move_on_after(20.0):
        await book.run()
    gaps = [round(b - a, 3) for a, b in zip([start, *attempts], attempts, strict=False)]
    assert gaps[:7] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 3.2]
    assert len(attempts) == 10  # 20 s: 0.1 + 0.2 + ... + 3.2 = 6.3, then every 3.2 s
    assert book.pending == 1


def test_past_most_kept_a_busy_store_loses_the_batch_and_says_so(
    store: SqliteStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records_module, "MOST_KEPT", 2)
    monkeypatch.setattr(store, "call_records_save", refuse_busy)
    book = CallRecordBook(store, clock=FakeClock())
    for n in range(3):
        book.started(f"c{n}", "sip:a@x", "sip:b@y")
    with caplog.at_level(logging.ERROR):
        book.flush()
    assert book.pending == 0
    assert (
        "3 call record change(s) not kept: the store was busy for 1 save(s) in a row" in caplog.text
    )


def test_record_copies_keep_every_field(store: SqliteStore) -> None:
    """The book copies records field by field (not through attrs.evolve): each change keeps what
    the others set, and a field left out of the copy would fall back to its default."""
    clock = FakeClock()
    book = CallRecordBook(store, clock=clock)
    book.started("c1", "sip:a@x", "sip:b@y")
    clock.now = 1001.0
    book.answered("c1", Call())
    book.flush()
    clock.now = 1002.0
    book.ended("c1", "BYE from A leg", {"a": {"key_exchange": "none"}})
    book.flush()
    assert store.call_record_get("c1") == CallRecord(
        "c1",
        "sip:a@x",
        "sip:b@y",
        1000.0,
        answered_at=1001.0,
        ended_at=1002.0,
        end_reason="BYE from A leg",
        security_json='{"a": {"key_exchange": "none"}}',
    )
    assert {f.name for f in attrs.fields(CallRecord)} == {
        "call_id",
        "from_uri",
        "to_uri",
        "started_at",
        "answered_at",
        "ended_at",
        "end_reason",
        "security_json",
    }, "a new CallRecord field must be copied by records._copy"


# -- a backlog saved in chunks ---------------------------------------------------------------


class CountingSaves:
    """Stands in for ``store.call_records_save``: what each save held, then ``then`` (which may
    raise for that save), then the real save."""

    def __init__(self, store: SqliteStore, then: Callable[[int, list[str]], None]) -> None:
        self.store = store
        self.real = store.call_records_save
        self.then = then
        self.saved: list[str] = []
        self.calls = 0

    def __call__(self, records: Sequence[CallRecord]) -> None:
        self.calls += 1
        ids = [record.call_id for record in records]
        self.then(self.calls, ids)
        self.real(records)
        self.saved += ids


def backlog(store: SqliteStore, count: int) -> CallRecordBook:
    book = CallRecordBook(store, clock=FakeClock())
    for n in range(count):
        book.started(f"c{n}", "sip:a@x", "sip:b@y")
    return book


def every_record(store: SqliteStore) -> list[str]:
    return sorted(record.call_id for record in store.call_records_recent(limit=1000))


def test_a_busy_store_mid_backlog_keeps_every_record_once(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records_module, "SAVE_CHUNK", 2)

    def busy_at_the_third(call: int, ids: list[str]) -> None:
        if call == 3:
            refuse_busy(ids)

    saves = CountingSaves(store, busy_at_the_third)
    monkeypatch.setattr(store, "call_records_save", saves)
    book = backlog(store, 7)
    book.flush()
    assert saves.saved == ["c0", "c1", "c2", "c3"]  # two chunks, then the busy one: stop
    assert book.pending == 3  # the refused chunk and the one after it
    assert book.next_interval() == 2 * FLUSH_INTERVAL  # one busy attempt, backing off
    book.flush()
    assert sorted(saves.saved) == [f"c{n}" for n in range(7)]
    assert len(saves.saved) == 7  # each once
    assert every_record(store) == [f"c{n}" for n in range(7)]
    assert book.pending == 0 and book.next_interval() == FLUSH_INTERVAL


def test_a_chunk_the_store_refuses_loses_that_chunk_only(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(records_module, "SAVE_CHUNK", 2)

    def invalid_with_c2(call: int, ids: list[str]) -> None:
        if "c2" in ids:
            raise InvalidValue("security_json is not valid JSON")

    monkeypatch.setattr(store, "call_records_save", CountingSaves(store, invalid_with_c2))
    book = backlog(store, 5)
    with caplog.at_level(logging.WARNING):
        book.flush()
    # All or nothing per chunk: c2's chunk (c2, c3) rolled back, the others saved.
    assert every_record(store) == ["c0", "c1", "c4"]
    assert "2 call record change(s) not kept: security_json is not valid JSON" in caplog.text
    assert book.pending == 0


async def test_run_saves_a_backlog_with_checkpoints_between_chunks(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Cancelled at the first checkpoint (the gateway stopping mid-backlog): what the first chunk
    # saved stays saved, the rest goes back to the changes, and a change made meanwhile wins.
    monkeypatch.setattr(records_module, "SAVE_CHUNK", 2)
    book = backlog(store, 5)
    with trio.CancelScope() as scope:

        def cancel_after_the_first(call: int, ids: list[str]) -> None:
            if call == 1:
                scope.cancel()
                book.ended("c3", "caller hung up", {})  # newer than the backlog's c3

        saves = CountingSaves(store, cancel_after_the_first)
        monkeypatch.setattr(store, "call_records_save", saves)
        await book.flush_in_steps()
    assert scope.cancelled_caught
    assert saves.saved == ["c0", "c1"]
    assert book.pending == 3
    book.flush()
    assert sorted(saves.saved) == ["c0", "c1", "c2", "c3", "c4"]  # each once
    ended = store.call_record_get("c3")
    assert ended is not None and ended.end_reason == "caller hung up"


# -- retention ([store] call_record_days) -----------------------------------------------------

DAY = records_module.DAY
NOW = 400 * DAY  # wall-clock seconds, passed in


def aged(store: SqliteStore, old: int, new: int, *, unfinished_old: int = 0) -> None:
    """``old`` records ended 91 days before NOW, ``new`` ended 89 days before (both started
    100 days before), ``unfinished_old`` without an end started 91 days before."""
    store.call_records_save(
        [
            CallRecord(f"old{i}", "a", "b", NOW - 100 * DAY, None, NOW - 91 * DAY, "bye")
            for i in range(old)
        ]
        + [
            CallRecord(f"new{i}", "a", "b", NOW - 100 * DAY, None, NOW - 89 * DAY, "bye")
            for i in range(new)
        ]
        + [CallRecord(f"up{i}", "a", "b", NOW - 91 * DAY) for i in range(unfinished_old)]
    )


def kept(store: SqliteStore) -> set[str]:
    return {record.call_id for record in store.call_records_recent(10_000)}


async def test_old_records_go_in_slices_with_a_pause_between_newer_ones_stay(
    store: SqliteStore,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    aged(store, old=23, new=4, unfinished_old=2)
    asked: list[tuple[float, int, float]] = []
    original = store.expire_call_records

    def recording(before: float, *, most: int) -> int:
        count = original(before, most=most)
        asked.append((before, count, trio.current_time()))
        return count

    store.expire_call_records = recording  # type: ignore[method-assign]
    failures = records_module.expiry_failures()
    caplog.set_level(logging.INFO, logger=records_module.__name__)
    started = trio.current_time()
    removed = await records_module.expire_call_records(
        store, days=90, now=NOW, failures=failures, chunk=10, pause=0.5
    )
    # 25 older than 90 days (the unfinished by their start): slices of 10, 10, 5; the short
    # one is the last. A pause before each slice but the first.
    assert removed == 25
    assert [count for _, count, _ in asked] == [10, 10, 5]
    assert {before for before, _, _ in asked} == {NOW - 90 * DAY}
    assert [at - started for _, _, at in asked] == [0.0, 0.5, 1.0]
    assert kept(store) == {f"new{i}" for i in range(4)}
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert infos == [
        "25 call record(s) older than 90 day(s) deleted (ended, or started if unfinished, "
        "before 1970-11-07 00:00:00 UTC)"
    ]
    caplog.clear()
    # Nothing more to delete: one statement, no line.
    assert (
        await records_module.expire_call_records(
            store, days=90, now=NOW, failures=failures, chunk=10, pause=0.5
        )
        == 0
    )
    assert len(asked) == 4 and caplog.records == []


async def test_a_pass_deletes_at_most_so_many_slices_the_next_goes_on(
    store: SqliteStore, autojump_clock: trio.testing.MockClock
) -> None:
    aged(store, old=25, new=1)
    failures = records_module.expiry_failures()
    options: dict[str, Any] = {"chunk": 10, "slices": 2, "pause": 0.1}
    first = await records_module.expire_call_records(
        store, days=90, now=NOW, failures=failures, **options
    )
    assert first == 20 and len(kept(store)) == 6
    second = await records_module.expire_call_records(
        store, days=90, now=NOW, failures=failures, **options
    )
    assert second == 5 and kept(store) == {"new0"}


async def test_zero_days_keeps_every_record(store: SqliteStore) -> None:
    aged(store, old=3, new=1, unfinished_old=1)
    failures = records_module.expiry_failures()
    assert await records_module.expire_call_records(store, days=0, now=NOW, failures=failures) == 0
    assert len(kept(store)) == 5


async def test_fractional_days(store: SqliteStore) -> None:
    store.call_records_save(
        [
            CallRecord("hour-ago", "a", "b", NOW - 7200, None, NOW - 3600, "bye"),
            CallRecord("minute-ago", "a", "b", NOW - 7200, None, NOW - 60, "bye"),
        ]
    )
    failures = records_module.expiry_failures()
    assert (
        await records_module.expire_call_records(
            store,
            days=1 / 48,
            now=NOW,
            failures=failures,  # half an hour
        )
        == 1
    )
    assert kept(store) == {"minute-ago"}


async def test_a_failing_store_is_logged_once_and_the_next_pass_retries(
    store: SqliteStore,
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    aged(store, old=3, new=1)
    original = store.expire_call_records

    def busy(before: float, *, most: int) -> int:
        raise StoreBusy("another process holds the write lock")

    monkeypatch.setattr(store, "expire_call_records", busy)
    failures = records_module.expiry_failures()
    counts = records_module.RetentionCounts()
    caplog.set_level(logging.INFO, logger=records_module.__name__)
    for minute in range(3):
        assert (
            await records_module.expire_call_records(
                store, days=90, now=NOW + 60 * minute, failures=failures, counts=counts
            )
            == 0
        )
    assert counts == records_module.RetentionCounts(expired=0, failed_passes=3)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "call record retention: the store is failing" in warnings[0]
    assert "another process holds the write lock" in warnings[0]
    assert failures.failures == 3
    monkeypatch.setattr(store, "expire_call_records", original)
    caplog.clear()
    assert (
        await records_module.expire_call_records(
            store, days=90, now=NOW + 180, failures=failures, counts=counts
        )
        == 3
    )
    assert counts == records_module.RetentionCounts(expired=3, failed_passes=3)
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "call record retention: the store answers again" in infos[0]
    assert infos[1].startswith("3 call record(s) older than 90 day(s) deleted")
    assert not failures.failing
