"""Benchmark the PostgreSQL store's watchdog (gateway/core/store/postgresql.py, ``_Watchdog``):
what stamping each wait for the server costs a statement on the gateway's event loop.

Run from the repository root (needs Debian's ``postgresql`` and psycopg; a few seconds)::

    python benchmarks/pg_watchdog.py --statements 20000

Two figures, each the median of nine rounds (plain and watched interleaved):

- ``wait`` alone: psycopg's ``Connection.wait`` on a generator that finishes at once (no round
  trip), plain and watched: the overhead itself, without the network's noise;
- ``SELECT 1`` on a throwaway cluster (tests/pgcluster.py) over 127.0.0.1, on a plain psycopg
  connection and on a watched one (its watchdog thread running): what a statement costs with
  and without it.

Figures (2-vCPU development VM shared with other work, PostgreSQL 15, psycopg 3.3 with its
Python libpq wrapper, 2026-12-01, three runs of 5000 statements): ``wait`` alone 1.6 to 2.0 µs
plain, 0.4 to 0.7 µs more watched; ``SELECT 1`` 80 to 125 µs from run to run, watched within
-2 to +4 µs of plain in the same run (inside the rounds' spread).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pgcluster  # noqa: E402
import psycopg  # noqa: E402

from gateway.core.store.postgresql import _Watchdog, _watched_connection  # noqa: E402


def _done() -> Generator[Any, Any, int]:
    return 1
    yield  # a generator that finishes at once


def per_call(actions: dict[str, Callable[[], object]], count: int) -> dict[str, float]:
    """Median over nine rounds of the seconds one call of each action takes, the actions'
    rounds interleaved (the machine's load drifts between rounds, not within one)."""
    rounds: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(9):
        for name, action in actions.items():
            started = time.perf_counter()
            for _ in range(count):
                action()
            rounds[name].append((time.perf_counter() - started) / count)
    return {name: statistics.median(times) for name, times in rounds.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--statements", type=int, default=20000)
    args = parser.parse_args()
    bindir = pgcluster.postgres_bindir()
    if bindir is None:
        print("PostgreSQL is not installed (apt-get install postgresql)", file=sys.stderr)
        return 1
    watched_class = _watched_connection(psycopg)
    cluster = pgcluster.Cluster(bindir)
    try:
        cluster.initdb()
        cluster.start()
        cluster.create_role()
        database = cluster.create_database()
        dsn = cluster.dsn(database)
        plain = psycopg.connect(dsn, autocommit=True)
        watched = watched_class.connect(dsn, autocommit=True)
        watchdog = _Watchdog("benchmark", 1.5)
        watchdog.watch(watched)
        try:
            alone = per_call(
                {"plain": lambda: plain.wait(_done()), "watched": lambda: watched.wait(_done())},
                args.statements * 10,
            )
            for name, seconds in alone.items():
                print(f"wait alone, {name}: {seconds * 1e6:.2f} µs")
            query = per_call(
                {
                    "plain": lambda: plain.execute("SELECT 1"),
                    "watched": lambda: watched.execute("SELECT 1"),
                },
                args.statements,
            )
            for name, seconds in query.items():
                print(f"SELECT 1, {name}: {seconds * 1e6:.1f} µs")
            print(f"connections cut: {watchdog.cuts}")
        finally:
            watchdog.stop()
            plain.close()
            watched.close()
    finally:
        cluster.destroy()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
