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
costs the event loop one such wait every few seconds, not ten a second.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import trio

from gateway.core.store.errors import StoreBusy, StoreError
from gateway.core.store.interface import CallRecord, Store

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.1
"""Seconds between two saves of the changed records."""

MOST_KEPT = 100_000
"""Most call records kept in memory for a store that stays busy (see the module docstring)."""

LONGEST_BUSY_INTERVAL = FLUSH_INTERVAL * 32
"""Seconds between two saves at most, while the store stays busy (3.2)."""


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
        path, a ZRTP SAS): save its security record again with the next batch."""
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
        """Save every record changed since the last save, in one transaction. A busy store
        keeps the batch for the next save (:data:`MOST_KEPT`); a store that fails otherwise
        loses it (logged), as a failed single write did. Never raises: it runs in a task of the
        gateway's top nursery."""
        if not self._changed:
            return
        batch = []
        for record_id, record in self._changed.items():
            call = self._security_of.get(record_id)
            if call is not None:
                record = _copy(record, security_json=_security_of_call(call, record_id))
            batch.append(record)
        self._changed = {}
        try:
            self._store.call_records_save(batch)
        except StoreBusy as exc:
            self._keep(batch, exc)
            return
        except StoreError as exc:
            log.warning("%d call record change(s) not kept: %s", len(batch), exc)
        except Exception:
            log.exception("%d call record change(s) not kept", len(batch))
        if self._busy_attempts:
            log.info("call records saved again after %d busy attempt(s)", self._busy_attempts)
            self._busy_attempts = 0

    def _keep(self, batch: list[CallRecord], busy: StoreBusy) -> None:
        """Keep a batch the busy store refused for the next save (nothing has changed since it
        was taken: :meth:`flush` does not wait)."""
        self._busy_attempts += 1
        if len(batch) > MOST_KEPT:
            log.error(
                "%d call record change(s) not kept: the store was busy for %d save(s) in a row "
                "(%s)",
                len(batch),
                self._busy_attempts,
                busy,
            )
            return
        if self._busy_attempts == 1:
            log.warning("call records kept for the next save: %s", busy)
        self._changed = {record.call_id: record for record in batch}

    async def run(self) -> None:
        """Save changes every :data:`FLUSH_INTERVAL` seconds until cancelled. The owner calls
        :meth:`flush` once more after every call has ended."""
        while True:
            await trio.sleep(self.next_interval())
            self.flush()

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
        log.exception("call %s: security record failed; kept empty", record_id)
        return "{}"
    return _security_json(security)


# What json.dumps(..., sort_keys=True) builds for every call (an encoder, then its C encoder),
# made once: two security records are encoded per call.
_JSON = json.JSONEncoder(sort_keys=True)


def _security_json(security: Mapping[str, object]) -> str:
    try:
        return _JSON.encode(security)
    except (TypeError, ValueError):
        log.exception("security record is not JSON-serializable; kept empty")
        return "{}"
