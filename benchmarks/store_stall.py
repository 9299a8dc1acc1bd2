"""Benchmark how long saving call records stalls the gateway's event loop (which also relays media).

Run from the repository root (about a minute)::

    python benchmarks/store_stall.py
    python benchmarks/store_stall.py --calls-per-second 600 --seconds 20 --lock 2.0

One trio process, as in the gateway without ``[media] workers``: a :class:`CallRecordBook` over a
:class:`SqliteStore` in a fresh state directory, fed ``--calls-per-second`` calls (each started,
answered and ended, with a security record like a bridged SRTP call's), saving every 0.1 s as the
gateway does, with the gateway's garbage collector settings; beside it a task that asks to wake
every millisecond, standing for the media relay's next packet. Its lateness (woken minus asked)
is the stall every call's media would have seen. Printed: lateness p50, p99, p99.9 and max, the
number of wake-ups later than 2 ms and 10 ms, the time spent in saves and the longest save. The
calls still up at the end are ended and saved after the measurement.

Two ways of opening the store, one after the other, each in its own directory:

- ``on-commit``: ``SqliteStore.open(state_dir)`` as before 2026-11-28: SQLite checkpoints the
  write-ahead log at the commit that finds it past 1000 pages, so that save pays for copying the
  log into the database file and the ``fsync`` (the disk's latency, on the event loop);
- ``gateway``: as the gateway opens it (``gateway.core.gateway``): no commit checkpoints, a
  thread does it every second, and a write waits at most 50 ms for another process's lock.

``--lock S``: halfway through, another connection (an operator's ``sqlite3`` shell inside
``BEGIN IMMEDIATE``) holds the write lock for S seconds from a thread; records are counted after
the run, so a save that failed is seen as a missing record.

The state directories are made under ``--dir`` (default: the current directory, which is where an
operator's state directory would be, on a disk; /tmp may be memory). The figures depend on the
disk's fsync latency first.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sqlite3
import sys
import tempfile
import threading
import time

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.core.calls.records import CallRecordBook
from gateway.core.cli import _tune_garbage_collector as tune_garbage_collector
from gateway.core.config import GatewaySection
from gateway.core.gateway import STORE_BUSY_TIMEOUT, STORE_CHECKPOINT_INTERVAL
from gateway.core.store.sqlite import DB_FILENAME, SqliteStore

TICK = 0.001
"""Seconds the stand-in for the media relay asks to sleep between wake-ups."""

SECURITY = {
    "a_leg": {"keying": "sdes", "suite": "AES_CM_128_HMAC_SHA1_80", "packets_in": 1500},
    "b_leg": {"keying": "dtls", "suite": "AEAD_AES_128_GCM", "packets_in": 1500},
}


class _Call:
    def security_record(self) -> dict[str, object]:
        return SECURITY


def open_store(mode: str, state_dir: str) -> SqliteStore:
    if mode == "on-commit":
        return SqliteStore.open(state_dir)
    return SqliteStore.open(
        state_dir, busy_timeout=STORE_BUSY_TIMEOUT, checkpoint_interval=STORE_CHECKPOINT_INTERVAL
    )


def hold_write_lock(state_dir: str, seconds: float) -> None:
    connection = sqlite3.connect(os.path.join(state_dir, DB_FILENAME), isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        time.sleep(seconds)
        connection.execute("COMMIT")
    finally:
        connection.close()


async def run(mode: str, state_dir: str, args: argparse.Namespace) -> str:
    store = open_store(mode, state_dir)
    book = CallRecordBook(store)
    call = _Call()
    lateness: list[float] = []
    saves: list[float] = []
    flush = book.flush

    def timed_flush() -> None:
        start = time.perf_counter()
        flush()
        saves.append(time.perf_counter() - start)

    book.flush = timed_flush  # type: ignore[method-assign]
    calls = round(args.calls_per_second * args.seconds)
    locker: threading.Thread | None = None

    async def media() -> None:
        clock = trio.current_time
        while True:
            asked = clock() + TICK
            await trio.sleep_until(asked)
            lateness.append(clock() - asked)

    async def callers() -> list[tuple[float, str]]:
        nonlocal locker
        # A call lasts `hold` seconds: started, answered at once, ended `hold` later.
        hold = args.hold
        live: list[tuple[float, str]] = []
        start = trio.current_time()
        for n in range(calls):
            due = start + n / args.calls_per_second
            await trio.sleep_until(due)
            if locker is None and args.lock and n >= calls // 2:
                locker = threading.Thread(target=hold_write_lock, args=(state_dir, args.lock))
                locker.start()
            record_id = f"call-{n}"
            book.started(record_id, "sip:alice@example.com", "sip:+15551234567@trunk")
            book.answered(record_id, call)
            live.append((due + hold, record_id))
            while live and live[0][0] <= due:
                book.ended(live.pop(0)[1], "caller hung up", SECURITY)
        return live

    async with trio.open_nursery() as nursery:
        nursery.start_soon(media)
        nursery.start_soon(book.run)
        live = await callers()
        nursery.cancel_scope.cancel()
    # Outside the measurement: the calls still up end, and their records are saved.
    measured = len(saves)
    if locker is not None:
        locker.join()
    for _, record_id in live:
        book.ended(record_id, "caller hung up", SECURITY)
    flush()
    store.close()
    check = sqlite3.connect(os.path.join(state_dir, DB_FILENAME))
    saved = check.execute("SELECT COUNT(*) FROM call_records WHERE ended_at IS NOT NULL").fetchone()
    check.close()
    return summary(mode, lateness, saves[:measured], calls, int(saved[0]), args.seconds)


def summary(
    mode: str, lateness: list[float], saves: list[float], calls: int, saved: int, seconds: float
) -> str:
    ordered = sorted(lateness)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1e3

    return (
        f"  {mode:10} wake-ups {len(ordered):6}  late p50 {at(0.5):6.2f}  p99 {at(0.99):6.2f}"
        f"  p99.9 {at(0.999):7.2f}  max {ordered[-1] * 1e3:7.1f} ms"
        f"  >2 ms {sum(x > 0.002 for x in ordered):4}  >10 ms {sum(x > 0.010 for x in ordered):3}"
        f"  saves {sum(saves) * 1e3 / seconds:5.1f} ms/s, longest {max(saves) * 1e3:5.1f} ms"
        f"  records {saved}/{calls}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls-per-second", type=float, default=400.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--hold", type=float, default=2.0, help="seconds each call lasts")
    parser.add_argument("--lock", type=float, default=0.0, help="seconds another process holds")
    parser.add_argument("--modes", nargs="+", choices=("on-commit", "gateway"))
    parser.add_argument("--dir", default=".", help="where to make the state directories")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="    log: %(message)s")
    modes: list[str] = args.modes or ["on-commit", "gateway"]
    # As `voipgw run` does: fewer, shorter collector pauses.
    tune_garbage_collector(GatewaySection().gc_thresholds)
    print(
        f"store stall benchmark: {os.cpu_count()} CPUs, "
        f"Linux {platform.release()}, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )
    print(
        f"{args.calls_per_second:g} calls/s for {args.seconds:g} s, each {args.hold:g} s long; "
        f"a {TICK * 1e3:g} ms tick stands for the relay; lock {args.lock:g} s; "
        f"state directories under {os.path.abspath(args.dir)}"
    )
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="store-stall-", dir=args.dir) as state_dir:
            print(trio.run(run, mode, state_dir, args), flush=True)


if __name__ == "__main__":
    main()
