"""Call record retention's metrics on a gateway whose store is PostgreSQL (a throwaway cluster,
tests/pgcluster.py): the oldest record kept is read from the database through migration 6's
index at each scrape, and a retention pass's deletes are counted. The gateway runs in this
process on the in-memory network, in real time (the store's connection is real), with the
housekeeping's interval shortened so that a pass comes within the test.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import trio
from pgcluster import Cluster

import gateway.core.gateway as gateway_module
from gateway.core.store.postgresql import PostgresStore
from tests.component.calls.b2bua_env import ALICE_PASSWORD, REALM
from tests.component.calls.metrics_scrape import aged_records, metrics_env, scrape


async def test_a_postgresql_stores_retention_is_scraped(
    nursery: trio.Nursery,
    tmp_path: Path,
    voipgw_seed: int,
    postgres_cluster: Cluster,
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = PostgresStore.open(postgres_cluster.dsn(postgres_database), listen=False)
    try:
        store.accounts_add("alice", ALICE_PASSWORD, REALM)  # start_b2bua registers her
        now = int(time.time())
        store.call_records_save(aged_records(now))
    finally:
        store.close()
    monkeypatch.setattr(gateway_module, "HOUSEKEEPING_INTERVAL", 0.2)
    scraped = trio.Event()  # no pass before the first scrape
    expire = gateway_module.expire_call_records

    async def after_the_first_scrape(*args: Any, **kwargs: Any) -> int:
        await scraped.wait()
        return await expire(*args, **kwargs)

    monkeypatch.setattr(gateway_module, "expire_call_records", after_the_first_scrape)
    table = postgres_cluster.store_table(postgres_database, tmp_path, node="retention")
    env, address = await metrics_env(
        nursery, tmp_path, voipgw_seed, store_table={**table, "call_record_days": 1}
    )
    samples = await scrape(address)
    assert samples["voipgw_call_record_retention_seconds"] == 86400
    assert samples["voipgw_call_records_expired_total"] == 0
    assert samples["voipgw_call_records_oldest_time_seconds"] == now - 2 * 86400 - 2
    scraped.set()
    with trio.fail_after(10):
        while samples["voipgw_call_records_expired_total"] < 3:
            await trio.sleep(0.1)  # polls for the pass, asserts nothing on time
            samples = await scrape(address)
    assert samples["voipgw_call_records_expired_total"] == 3
    assert samples["voipgw_call_records_oldest_time_seconds"] == now - 60
    assert samples["voipgw_call_record_retention_failures_total"] == 0
    assert env.gateway.store is not None
    assert [r.call_id for r in env.gateway.store.call_records_recent(10)] == ["new"]
