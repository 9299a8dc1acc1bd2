"""Benchmark PostgreSQL's Call-ID index (``call_records_call_id_c``, ``call_id COLLATE "C"``),
which the nodes build themselves since session 42 where the database's collation is not code
point order: its build time, its size on disk, and what it costs each call record save.

Run from the repository root (needs Debian's ``postgresql`` and psycopg; ~2 minutes per
million rows)::

    python benchmarks/pg_call_id_index.py --rows 1000000

For each size, a throwaway cluster (tests/pgcluster.py, durable: fsync on, unlike the tests')
gets a database collated libc ``C.UTF-8`` (a collation that gets the index; ICU ``en-US`` where
the C library has no C.UTF-8) at this voipgw's schema, whose ``call_records`` holds ``--rows``
synthetic records of about 1 KiB (benchmarks/pg_retention_index.py's; Call-IDs of 32 random hex
digits at a host, as phones make them: inserts land all over the index, not at its end),
vacuumed and analysed. Printed:

- ``build``: ``CREATE INDEX CONCURRENTLY`` of the index, as a node runs it, twice (dropped
  between), and the index's size (``pg_relation_size``) beside the table's and its other
  indexes';
- ``saves``: records saved one at a time through :meth:`PostgresStore.call_records_save` (one
  transaction each, as the gateway saves a call's record), for ``--seconds`` per phase, phases
  without and with the index interleaved (``--pairs`` pairs, so that load from other processes
  falls on both): saves per second, and the WAL each save wrote (load-independent);
- ``bulk``: the server alone, one ``INSERT ... SELECT`` of ``--bulk`` records, without and with
  the index, interleaved: microseconds and WAL bytes per record.

Figures: docs/benchmarks.md, "Session 43 (the Call-ID index)".
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "benchmarks")]

import pgcluster  # noqa: E402
from pg_retention_index import DAY, SECURITY  # noqa: E402

from gateway.core.store.interface import CallRecord  # noqa: E402
from gateway.core.store.postgresql import (  # noqa: E402
    _CREATE_CALL_ID_INDEX,
    CALL_ID_INDEX,
    PostgresStore,
)


def create_database(cluster: Any) -> tuple[str, str]:
    """A database of the store's role in a collation that gets the index; its name and what."""
    name = "call_id_bench"
    if cluster.admin("SELECT 1 FROM pg_collation WHERE collname ILIKE 'C.utf8' LIMIT 1"):
        collation = "libc C.UTF-8"
        locale = "LOCALE 'C.UTF-8'"
    else:
        collation = "ICU en-US"
        locale = "LOCALE 'C' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    cluster.admin(
        f"CREATE DATABASE {name} OWNER {pgcluster.STORE_USER} TEMPLATE template0 {locale}"
    )
    return name, collation


def fill(cluster: Any, database: str, rows: int) -> float:
    """``rows`` records started over the last 400 days, 60 s long, each with a Call-ID of 32
    random hex digits (md5 of a random number); seconds it took."""
    started = time.perf_counter()
    now = time.time()
    step = 500_000
    for first in range(0, rows, step):
        last = min(rows, first + step)
        cluster.admin(
            "INSERT INTO call_records (call_id, from_uri, to_uri, started_at, answered_at,"
            " ended_at, end_reason, security, node)"
            " SELECT md5(random()::text || i) || '@127.0.0.1',"
            " 'sip:+1555' || i || '@trunk.example',"
            f" 'sip:alice@voipgw.example', {now} - 400 * {DAY} * i / {rows},"
            f" {now} - 400 * {DAY} * i / {rows} + 2, {now} - 400 * {DAY} * i / {rows} + 60,"
            f" 'caller-bye', '{SECURITY}'::json, 'node-' || (i % 3)"
            f" FROM generate_series({first}, {last - 1}) AS i",
            database,
        )
    cluster.admin("VACUUM ANALYZE call_records", database)
    cluster.admin("CHECKPOINT", database)
    return time.perf_counter() - started


def wal(cluster: Any, database: str) -> int:
    return int(cluster.admin("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn", database)[0][0])


def drop_index(cluster: Any, database: str) -> None:
    cluster.admin(f"DROP INDEX IF EXISTS {CALL_ID_INDEX}", database)


def build(cluster: Any, database: str) -> float:
    import psycopg

    started = time.perf_counter()
    with psycopg.connect(cluster.admin_dsn(database), autocommit=True) as db:
        db.execute(_CREATE_CALL_ID_INDEX)
    return time.perf_counter() - started


def saves(cluster: Any, store: PostgresStore, database: str, seconds: float) -> tuple[float, float]:
    """Saves per second, and WAL bytes per save, one record per transaction for ``seconds``."""
    now = time.time()
    made = 0
    wal_before = wal(cluster, database)
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        call_id = f"{secrets.token_hex(16)}@127.0.0.1"
        record = CallRecord(call_id, "sip:+15550100@trunk.example", "sip:alice@x", now, now)
        store.call_records_save([record])
        made += 1
    took = time.perf_counter() - started
    return made / took, (wal(cluster, database) - wal_before) / made


def bulk(cluster: Any, database: str, count: int) -> tuple[float, float]:
    """Microseconds and WAL bytes per record of one INSERT ... SELECT of ``count`` records."""
    now = time.time()
    wal_before = wal(cluster, database)
    started = time.perf_counter()
    cluster.admin(
        "INSERT INTO call_records (call_id, from_uri, to_uri, started_at, answered_at,"
        " ended_at, end_reason, security, node)"
        " SELECT md5(random()::text || i) || '@127.0.0.1', 'sip:+1555' || i || '@trunk.example',"
        f" 'sip:alice@voipgw.example', {now}, {now} + 2, {now} + 60, 'caller-bye',"
        f" '{SECURITY}'::json, 'node-1' FROM generate_series(1, {count}) AS i",
        database,
    )
    took = time.perf_counter() - started
    return took / count * 1e6, (wal(cluster, database) - wal_before) / count


def run(rows: int, seconds: float, pairs: int, bulk_count: int) -> None:
    bindir = pgcluster.postgres_bindir()
    if bindir is None:
        sys.exit("Debian's postgresql is not installed")
    pgcluster.FAST = "-c max_connections=200"  # durable, as a production server
    cluster = pgcluster.Cluster(bindir)
    try:
        cluster.initdb()
        cluster.start()
        cluster.create_role()
        database, collation = create_database(cluster)
        version = cluster.admin("SHOW server_version")[0][0]
        # The schema (a node's first start builds the index on the empty table: dropped).
        PostgresStore.open(cluster.dsn(database), listen=False).close()
        drop_index(cluster, database)
        filled = fill(cluster, database, rows)
        table = cluster.admin("SELECT pg_table_size('call_records')", database)[0][0]
        others = cluster.admin("SELECT pg_indexes_size('call_records')", database)[0][0]
        print(
            f"{rows:,} rows, PostgreSQL {version}, database {collation}: table"
            f" {int(table) / 2**20:.0f} MiB, its other indexes {int(others) / 2**20:.0f} MiB;"
            f" filled in {filled:.0f} s"
        )
        builds = []
        for _ in range(2):
            drop_index(cluster, database)
            cluster.admin("CHECKPOINT", database)
            builds.append(build(cluster, database))
        size = int(cluster.admin(f"SELECT pg_relation_size('{CALL_ID_INDEX}')", database)[0][0])
        print(
            f"  build (CREATE INDEX CONCURRENTLY): {builds[0]:.1f} s, {builds[1]:.1f} s"
            f" ({min(builds) / rows * 1e6:.1f} s a million records); size"
            f" {size / 2**20:.1f} MiB ({size / rows:.0f} bytes a record)"
        )
        store = PostgresStore.open(cluster.dsn(database), listen=False, node="bench")
        try:
            figures: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
            for _ in range(pairs):
                for indexed in (False, True):
                    if indexed:
                        build(cluster, database)
                    else:
                        drop_index(cluster, database)
                    cluster.admin("CHECKPOINT", database)
                    figures[indexed].append(saves(cluster, store, database, seconds))
        finally:
            store.close()
        for indexed in (False, True):
            rates = [rate for rate, _ in figures[indexed]]
            wals = [wal_bytes for _, wal_bytes in figures[indexed]]
            print(
                f"  saves {'with' if indexed else 'without'} the index:"
                f" {statistics.median(rates):,.0f} a second (phases:"
                f" {', '.join(f'{rate:,.0f}' for rate in rates)}),"
                f" WAL {statistics.median(wals):,.0f} bytes a save"
            )
        per: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(pairs):
            for indexed in (False, True):
                if indexed:
                    build(cluster, database)
                else:
                    drop_index(cluster, database)
                cluster.admin("CHECKPOINT", database)
                per[indexed].append(bulk(cluster, database, bulk_count))
        for indexed in (False, True):
            micros = [us for us, _ in per[indexed]]
            wals = [wal_bytes for _, wal_bytes in per[indexed]]
            print(
                f"  bulk INSERT of {bulk_count:,} {'with' if indexed else 'without'} the index:"
                f" {statistics.median(micros):.1f} us a record (runs:"
                f" {', '.join(f'{us:.1f}' for us in micros)}),"
                f" WAL {statistics.median(wals):,.0f} bytes a record"
            )
    finally:
        cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--seconds", type=float, default=10.0, help="per saves phase")
    parser.add_argument("--pairs", type=int, default=3, help="phases without and with, each")
    parser.add_argument("--bulk", type=int, default=100_000, help="records per bulk INSERT")
    options = parser.parse_args()
    print(f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    for rows in options.rows:
        run(rows, options.seconds, options.pairs, options.bulk)


if __name__ == "__main__":
    main()
