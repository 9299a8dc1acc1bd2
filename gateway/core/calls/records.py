"""Call detail records, written to the store in batches.

A call changes its record three times (started, answered, ended). Writing each change in its
own SQLite transaction cost about a tenth of a call's CPU at a few hundred calls per second
(BEGIN, UPDATE, read-back, COMMIT: docs/benchmarks.md); this book keeps the current record of
every call in memory and saves the changed ones together, in one transaction every
:data:`FLUSH_INTERVAL` seconds and once more when the gateway stops.

What that trades: ``voipgw calls`` (another process, reading the store) sees a change up to
:data:`FLUSH_INTERVAL` later, and a gateway killed with SIGKILL loses the changes of its last
interval (the next start marks the calls it left live as ended, as before).

A store that is busy (another process holds its write lock past the gateway's short wait:
:class:`~gateway.core.store.errors.StoreBusy`) loses nothing: the batch is kept and saved with
the next one, up to :data:`MOST_KEPT` changes (one per call; about three minutes of calls at 600
calls/s), past which they are given up, logged with their number. Each refused save has waited
for the lock (the store's busy timeout) on the event loop, so while the store stays busy the
saves back off, doubling the interval up to :data:`LONGEST_BUSY_INTERVAL`: a lock held for minutes
costs the event loop one such wait every few seconds, not ten a second. A busy spell is logged
once, summarized every 300 s while it lasts, and once more when a save goes through
(gateway/core/failure_log.py); a chunk a store error other than busy loses is logged each time,
with the number of changes lost (a loss, not a wait).

Saved :data:`SAVE_CHUNK` records per transaction, with a checkpoint between two (``run``): the
backlog a busy store leaves (up to :data:`MOST_KEPT`) would otherwise be one save holding the
event loop for tens of milliseconds (57 ms for 10,000 records on SQLite, docs/benchmarks.md
"Periodic work at scale"), and every call's media and timers with it. Each chunk is all or
nothing as a batch was (a record whose security is not JSON rolls back its chunk only); a busy
store keeps the chunk it refused and those after it for the next save, the chunks saved before
stay saved: no record is lost or saved twice by a busy spell. Changes made during a checkpoint go
to the next save, a newer change of a kept record winning over the kept one.

Retention (``[store] call_record_days``): the gateway's housekeeping deletes the records older
than that (by their end; by their start for a record without one) with
:func:`expire_call_records`, :data:`~gateway.core.store.interface.CALL_RECORD_CHUNK` per
statement with :data:`EXPIRE_PAUSE` between two, at most :data:`EXPIRE_SLICES` statements a
pass: neither the event loop nor the store's write lock is held for long, even by the first
pass over a store that has kept years of records (the next passes go on with the rest). A live
call's record deleted so (a call up for longer than the whole window) is written again by its
next save. :class:`RetentionCounts` counts what the passes deleted and the passes a store failure
ended, for monitoring (docs/metrics.md, "Store"). A store whose index retention deletes by is
still being built (PostgreSQL after an upgrade: :class:`~gateway.core.store.errors.StoreIndexing`)
is waited for, said once at INFO: not a failure.
"""

from __future__ import annotations

import datetime
import itertools
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs
import trio

from gateway.core.failure_log import FailureLog
from gateway.core.logs import log_exception
from gateway.core.store.errors import StoreBusy, StoreError, StoreIndexing
from gateway.core.store.interface import CALL_RECORD_CHUNK, CallRecord, Store

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.1
"""Seconds between two saves of the changed records."""

MOST_KEPT = 100_000
"""Most call records kept in memory for a store that stays busy (see the module docstring)."""

LONGEST_BUSY_INTERVAL = FLUSH_INTERVAL * 32
"""Seconds between two saves at most, while the store stays busy (3.2)."""

SAVE_CHUNK = 500
"""Records per transaction: a few milliseconds on SQLite (about 6 µs a record at 10,000, timed
as one save; the chunked save is unmeasured). The usual batch, a few hundred changes at 600
calls/s, is one chunk."""


DAY = 86400.0

EXPIRE_PAUSE = 0.05
"""Seconds between two slices of a retention pass: other writers (another process's write,
the records' own saves) get the store, and calls the event loop."""

EXPIRE_SLICES = 100
"""Most slices a retention pass deletes (100,000 records; 2,000 calls a second for the
housekeeping's 30 s keeps up); the rest is for the next passes."""


@attrs.define
class RetentionCounts:
    """What the retention's passes did since the gateway started (one per gateway): records
    deleted, and passes a store failure (or a bug) ended before they were done."""

    expired: int = 0
    failed_passes: int = 0
    waiting_for_index: bool = False
    """Whether the last pass found the store's retention index still being built (said once,
    at INFO: an expected wait after an upgrade, neither a failure nor counted as one)."""


async def expire_call_records(
    store: Store,
    *,
    days: float,
    now: float,
    failures: FailureLog,
    counts: RetentionCounts | None = None,
    chunk: int = CALL_RECORD_CHUNK,
    slices: int = EXPIRE_SLICES,
    pause: float = EXPIRE_PAUSE,
) -> int:
    """Delete the records older than ``days`` at ``now`` (wall-clock seconds), ``chunk`` per
    statement, ``pause`` seconds between two, at most ``slices`` statements; how many went,
    logged once at INFO when some did. A store failure ends the pass (the next one retries)
    and goes to ``failures``: logged once, summarized while it lasts. The store's index being
    built ends it too, as no failure (said once at INFO while it lasts, with ``counts``).
    ``days`` 0 keeps all. ``counts``, when given, counts the records deleted (each slice's,
    as it goes) and a pass a failure ended."""
    if days <= 0:
        return 0
    before = now - days * DAY
    removed = 0
    for slice_number in range(slices):
        if slice_number:
            await trio.sleep(pause)
        try:
            count = store.expire_call_records(before, most=chunk)
        except StoreIndexing as exc:
            if counts is None or not counts.waiting_for_index:
                log.info("call record retention waits for the store's index: %s", exc)
            if counts is not None:
                counts.waiting_for_index = True
            break
        except StoreError as exc:
            failures.failed(str(exc), now=now)
            if counts is not None:
                counts.failed_passes += 1
            break
        except Exception:
            log_exception(log, "deleting old call records failed")
            if counts is not None:
                counts.failed_passes += 1
            break
        failures.answered(now=now)
        removed += count
        if counts is not None:
            counts.expired += count
            counts.waiting_for_index = False
        if count < chunk:
            break
    if removed:
        log.info(
            "%d call record(s) older than %g day(s) deleted (ended, or started if unfinished, "
            "before %s)",
            removed,
            days,
            _utc(before),
        )
    return removed


def expiry_failures() -> FailureLog:
    """The :class:`FailureLog` of the retention's deletes (one per gateway)."""
    return FailureLog(
        log,
        "call record retention: the store",
        "deletes",
        "old call records are deleted when it answers",
    )


def _utc(timestamp: float) -> str:
    return f"{datetime.datetime.fromtimestamp(timestamp, datetime.UTC):%Y-%m-%d %H:%M:%S} UTC"


class SecuritySource(Protocol):
    def security_record(self) -> Mapping[str, object]: ...


class CallRecordBook:
    """The records of the calls this gateway handles, saved to ``store`` in batches.

    A record whose call is still up when it is saved takes the call's security record at that
    moment (``security_of``), so a short call's record is encoded once, not at each change.
    """

    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock  # wall-clock times: call records outlive the process
        self._live: dict[str, CallRecord] = {}
        self._changed: dict[str, CallRecord] = {}
        self._security_of: dict[str, SecuritySource] = {}
        self._busy_attempts = 0  # saves the busy store refused in a row
        self.busy = FailureLog(
            log,
            "call records: the store",
            "saves",
            "call records kept for the next save",
        )
        """The store's busy spells (its write lock held by another process): logged once,
        summarized every 300 s while it stays busy, once more when a save goes through
        (gateway/core/failure_log.py), not once per save refused."""

    @property
    def pending(self) -> int:
        """Records changed since the last save."""
        return len(self._changed)

    def started(self, record_id: str, from_uri: str, to_uri: str) -> None:
        record = CallRecord(
            call_id=record_id, from_uri=from_uri, to_uri=to_uri, started_at=self._clock()
        )
        self._live[record_id] = record
        self._changed[record_id] = record

    def answered(self, record_id: str, call: SecuritySource) -> None:
        record = self._live.get(record_id)
        if record is None:
            return
        record = _copy(record, answered_at=self._clock())
        self._live[record_id] = record
        self._changed[record_id] = record
        self._security_of[record_id] = call

    def security_changed(self, record_id: str) -> None:
        """A live call's protection changed after its answer (keys from a handshake on the media
        path, a ZRTP SAS) or a transfer was done or failed: save its security record again with
        the next batch."""
        record = self._live.get(record_id)
        if record is not None and record_id in self._security_of:
            self._changed[record_id] = record

    def ended(self, record_id: str, reason: str, security: Mapping[str, object]) -> None:
        """The call is over: its final record, with ``security`` as it stands now (the streams
        close right after, and their counters with them)."""
        record = self._live.pop(record_id, None)
        if record is None:
            return
        self._security_of.pop(record_id, None)
        record = _copy(
            record,
            ended_at=self._clock(),
            end_reason=reason,
            security_json=_security_json(security),
        )
        self._changed[record_id] = record

    def flush(self) -> None:
        """Save every record changed since the last save, :data:`SAVE_CHUNK` per transaction
        and without a checkpoint (at stop, when nothing else runs). A busy store keeps what it
        refused for the next save (:data:`MOST_KEPT`); a store that fails otherwise loses that
        chunk (logged), as a failed single write did. Never raises: it runs in a task of the
        gateway's top nursery."""
        batch = self._take()
        while batch and self._save_chunk(batch):
            pass

    async def flush_in_steps(self) -> None:
        """:meth:`flush` with a checkpoint between two chunks: a backlog does not hold the
        event loop. Cancelled at a checkpoint, the chunks not saved go back to the changes."""
        batch = self._take()
        try:
            while batch and self._save_chunk(batch):
                if batch:
                    await trio.lowlevel.checkpoint()
        finally:
            if batch:
                self._put_back(list(batch.values()))

    def _take(self) -> dict[str, CallRecord]:
        batch, self._changed = self._changed, {}
        return batch

    def _save_chunk(self, batch: dict[str, CallRecord]) -> bool:
        """Save the first :data:`SAVE_CHUNK` records of ``batch`` (taken out of it); whether to
        go on with the rest (False: the store is busy, and the rest is kept with this chunk)."""
        chunk = []
        for record_id in list(itertools.islice(batch, SAVE_CHUNK)):
            record = batch.pop(record_id)
            call = self._security_of.get(record_id)
            if call is not None:
                record = _copy(record, security_json=_security_of_call(call, record_id))
            chunk.append(record)
        try:
            self._store.call_records_save(chunk)
        except StoreBusy as exc:
            self._keep([*chunk, *batch.values()], exc)
            batch.clear()
            return False
        except StoreError as exc:
            # A loss, not a wait: each is logged with what was lost.
            log.warning("%d call record change(s) not kept: %s", len(chunk), exc)
        except Exception:
            log_exception(log, "%d call record change(s) not kept", len(chunk))
        else:
            if self.busy.failing:
                self.busy.answered(now=self._clock())
        self._busy_attempts = 0
        return True

    def _keep(self, kept: list[CallRecord], busy: StoreBusy) -> None:
        """Keep the records the busy store refused for the next save."""
        self._busy_attempts += 1
        self.busy.failed(f"it is busy ({busy})", now=self._clock())
        if len(kept) > MOST_KEPT:
            log.error(
                "%d call record change(s) not kept: the store was busy for %d save(s) in a row "
                "(%s)",
                len(kept),
                self._busy_attempts,
                busy,
            )
            return
        self._put_back(kept)

    def _put_back(self, kept: list[CallRecord]) -> None:
        """Return records not saved to the changes; a change made since (during a checkpoint)
        is newer and wins."""
        changed = {record.call_id: record for record in kept}
        changed.update(self._changed)
        self._changed = changed

    async def run(self) -> None:
        """Save changes every :data:`FLUSH_INTERVAL` seconds until cancelled. The owner calls
        :meth:`flush` once more after every call has ended."""
        while True:
            await trio.sleep(self.next_interval())
            await self.flush_in_steps()

    def next_interval(self) -> float:
        """Seconds until the next save: :data:`FLUSH_INTERVAL`, doubled for each save the busy
        store has refused in a row, up to :data:`LONGEST_BUSY_INTERVAL`."""
        return min(FLUSH_INTERVAL * (1 << min(self._busy_attempts, 5)), LONGEST_BUSY_INTERVAL)


_UNCHANGED: Any = object()


def _copy(
    record: CallRecord,
    *,
    answered_at: float | None = _UNCHANGED,
    ended_at: float | None = _UNCHANGED,
    end_reason: str | None = _UNCHANGED,
    security_json: str = _UNCHANGED,
) -> CallRecord:
    """``record`` with the fields given changed: attrs.evolve, three times per call, without
    its look-up of every field by name."""
    return CallRecord(
        record.call_id,
        record.from_uri,
        record.to_uri,
        record.started_at,
        record.answered_at if answered_at is _UNCHANGED else answered_at,
        record.ended_at if ended_at is _UNCHANGED else ended_at,
        record.end_reason if end_reason is _UNCHANGED else end_reason,
        record.security_json if security_json is _UNCHANGED else security_json,
    )


def _security_of_call(call: SecuritySource, record_id: str) -> str:
    try:
        security = call.security_record()
    except Exception:
        log_exception(log, "call %s: security record failed; kept empty", record_id)
        return "{}"
    return _security_json(security)


# What json.dumps(..., sort_keys=True) builds for every call (an encoder, then its C encoder),
# made once: two security records are encoded per call.
_JSON = json.JSONEncoder(sort_keys=True)


def _security_json(security: Mapping[str, object]) -> str:
    try:
        return _JSON.encode(security)
    except (TypeError, ValueError):
        log_exception(log, "security record is not JSON-serializable; kept empty")
        return "{}"
