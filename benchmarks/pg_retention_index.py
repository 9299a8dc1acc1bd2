"""Benchmark PostgreSQL's call record retention index (migration 6) on a big table: how long
building it takes, and how long the nodes' call record saves wait meanwhile.

Run from the repository root (needs Debian's ``postgresql`` and psycopg; minutes per million
rows)::

    python benchmarks/pg_retention_index.py --rows 1000000
    python benchmarks/pg_retention_index.py --rows 1000000 10000000

For each size, a throwaway cluster (tests/pgcluster.py, durable: fsync on, unlike the tests')
gets a database at schema version 5 whose ``call_records`` holds ``--rows`` synthetic records
of about 1 KiB (a security record like a bridged SRTP call's; one in a thousand unfinished),
vacuumed and analysed. Then the index is built two ways, each while a thread saves one call
record every 100 ms as a node of the older release does (its own connection, the gateway's
``statement_timeout`` of 0.5 s: a save that waits longer fails and is retried by the gateway):

- ``plain``: ``CREATE INDEX`` in a transaction, as migration 6 was (a SHARE lock: every
  INSERT and UPDATE of call_records waits until it commits);
- ``concurrently``: ``CREATE INDEX CONCURRENTLY`` (no lock that writers wait for; it scans
  the table twice and waits for the transactions open at its start).

Printed per way: the build's time, the saves made during it, those that failed (waited past
0.5 s), and the longest save. Then this voipgw's node start-up on the database at version 5
(``PostgresStore.open`` migrating it, and the index built in its thread), timed the same way,
and the plan of the oldest record's look-up (``voipgw_call_records_oldest_time_seconds``).

Figures (2-vCPU development VM, PostgreSQL 15, 2026-11-30), build time; saves failed:

| rows | plain CREATE INDEX | CONCURRENTLY |
|---|---|---|
| 1 M (977 MB) | 1.5 s; 2 of 3 | 1.6 s; 0 of 16, longest 19 ms |
| 10 M (9.8 GB) | 12.1 s; 20 of 21 | 14.2 s; 0 of 132, longest 106 ms |

This voipgw's node start on 1 M records (the migration, then the build in the store's thread):
2.6 s, 0 of 24 saves failed, the longest 21 ms (the first release's: 1.3 s, 2 of 3 failed).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pgcluster  # noqa: E402

from gateway.core.store.errors import StoreError  # noqa: E402
from gateway.core.store.interface import CallRecord  # noqa: E402
from gateway.core.store.postgresql import MIGRATIONS, PostgresStore  # noqa: E402

SECURITY = (
    '{"legs": [{"transport": "tls", "tls_version": "TLSv1.3", "peer": "CN=0004f2aabbcc",'
    ' "key_exchange": "dtls-srtp", "suite": "AES_CM_128_HMAC_SHA1_80", "keys": "gateway",'
    ' "taps": []}, {"transport": "udp", "key_exchange": "sdes",'
    ' "suite": "AEAD_AES_256_GCM", "keys": "gateway", "taps": ["recording"]}],'
    ' "media": [{"kind": "audio", "codec": "PCMA", "packets": 15000, "lost": 3,'
    ' "jitter_ms": 4.2, "mos": 4.31}], "note": "' + "x" * 380 + '"}'
)
DAY = 86400.0


def fill(cluster: Any, database: str, rows: int) -> float:
    """``rows`` records started over the last 400 days, 60 s long (one in a thousand
    unfinished); seconds it took."""
    started = time.perf_counter()
    now = time.time()
    step = 1_000_000
    for first in range(0, rows, step):
        last = min(rows, first + step)
        cluster.admin(
            "INSERT INTO call_records (call_id, from_uri, to_uri, started_at, answered_at,"
            " ended_at, end_reason, security, node)"
            f" SELECT 'bench-' || i, 'sip:+1555' || i || '@trunk.example',"
            f" 'sip:alice@voipgw.example', {now} - 400 * {DAY} * i / {rows},"
            f" {now} - 400 * {DAY} * i / {rows} + 2,"
            f" CASE WHEN i % 1000 = 0 THEN NULL ELSE {now} - 400 * {DAY} * i / {rows} + 60 END,"
            f" 'caller-bye', '{SECURITY}'::json, 'node-' || (i % 3)"
            f" FROM generate_series({first}, {last - 1}) AS i",
            database,
        )
    cluster.admin("VACUUM ANALYZE call_records", database)
    return time.perf_counter() - started


class Saver:
    """A node of the older release saving one record every 100 ms from a thread."""

    def __init__(self, cluster: Any, database: str) -> None:
        self.store = PostgresStore.open(
            cluster.dsn(database),
            listen=False,
            node="old-node",
            statement_timeout=0.5,
            migrations=MIGRATIONS[:5],
        )
        self.saves: list[tuple[float, float, bool]] = []  # (started, took, failed)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._count = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self._count += 1
            now = time.time()
            record = CallRecord(f"saver-{self._count}", "sip:a@x", "sip:b@x", now, now, now, "bye")
            started = time.perf_counter()
            failed = False
            try:
                self.store.call_records_save([record])
            except StoreError:
                failed = True
            self.saves.append((started, time.perf_counter() - started, failed))
            self._stop.wait(0.1)

    def __enter__(self) -> Saver:
        self._thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.store.close()


def timed(build: Callable[[], None], cluster: Any, database: str) -> str:
    with Saver(cluster, database) as saver:
        started = time.perf_counter()
        build()
        ended = time.perf_counter()
    took = ended - started
    # The saves started while it built (one that waited for it ends after it).
    made = [(took, failed) for at, took, failed in saver.saves if started <= at <= ended]
    during = [took for took, _ in made]
    failures = sum(failed for _, failed in made)
    longest = max(during, default=0.0)
    median = statistics.median(during) if during else 0.0
    return (
        f"{took:7.1f} s; saves during it: {len(during)}, failed {failures},"
        f" median {median * 1000:.1f} ms, longest {longest * 1000:.0f} ms"
    )


def reset(cluster: Any, database: str) -> None:
    cluster.admin("DROP INDEX IF EXISTS call_records_kept_by", database)
    cluster.admin("DELETE FROM schema_version WHERE version > 5", database)
    cluster.admin("CHECKPOINT", database)


def run(rows: int) -> None:
    bindir = pgcluster.postgres_bindir()
    if bindir is None:
        sys.exit("Debian's postgresql is not installed")
    pgcluster.FAST = "-c max_connections=200"  # durable, as a production server
    cluster = pgcluster.Cluster(bindir)
    try:
        cluster.initdb()
        cluster.start()
        cluster.create_role()
        database = cluster.create_database()
        PostgresStore.open(cluster.dsn(database), listen=False, migrations=MIGRATIONS[:5]).close()
        filled = fill(cluster, database, rows)
        size = cluster.admin("SELECT pg_size_pretty(pg_table_size('call_records'))", database)
        print(f"{rows:,} rows ({size[0][0]}), filled in {filled:.0f} s")
        index = "call_records_kept_by ON call_records ((COALESCE(ended_at, started_at)))"
        owner = cluster.dsn(database)

        def plain() -> None:
            import psycopg

            with psycopg.connect(owner) as db, db.transaction():
                db.execute(f"CREATE INDEX {index}")

        def concurrently() -> None:
            import psycopg

            with psycopg.connect(owner, autocommit=True) as db:
                db.execute(f"CREATE INDEX CONCURRENTLY {index}")

        def migrate() -> None:
            # A gateway node's start (it listens): the schema migrated, the index built in
            # the store's thread (a table this big), waited for here.
            store = PostgresStore.open(owner, statement_timeout=0.5)
            if store._builder is not None:
                store._builder.join()
            store.close()

        print(f"  plain CREATE INDEX:        {timed(plain, cluster, database)}")
        reset(cluster, database)
        print(f"  CREATE INDEX CONCURRENTLY: {timed(concurrently, cluster, database)}")
        reset(cluster, database)
        print(f"  this voipgw's migration:   {timed(migrate, cluster, database)}")
        plan = cluster.admin(
            "EXPLAIN SELECT COALESCE(ended_at, started_at) FROM call_records"
            " ORDER BY COALESCE(ended_at, started_at) LIMIT 1",
            database,
        )
        print("  oldest record's plan:", " / ".join(str(row[0]).strip() for row in plan[:2]))
    finally:
        cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    options = parser.parse_args()
    print(f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    for rows in options.rows:
        run(rows)


if __name__ == "__main__":
    main()
