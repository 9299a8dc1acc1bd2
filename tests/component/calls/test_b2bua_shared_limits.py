"""A gateway whose store counts ``max_calls`` for a cluster (as PostgreSQL's does): the trunk's
limit is asked of the store, a channel another node holds refuses the call, the hold goes when
the call ends, the node beats its heartbeat, and while the store does not answer the node counts
its own calls, says so in its metrics and writes them once it answers.

The store's count is tests/unit/calls/test_call_limits_shared.py's fake, put where the SQLite
store would say "no shared count"; the SQL itself is tested against PostgreSQL in
tests/integration/test_call_limits_postgresql.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.core.store.sqlite import SqliteStore
from tests.component.calls.b2bua_env import ALICE_DID, eventually, start_b2bua
from tests.component.calls.test_b2bua_metrics import metrics_env, scrape
from tests.unit.calls.test_call_limits_shared import FakeShared

TRUNK = ("trunk", "carrier")


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> FakeShared:
    fake = FakeShared()
    monkeypatch.setattr(SqliteStore, "shared_call_limits", lambda store: fake)
    return fake


async def test_another_nodes_hold_refuses_the_trunks_call_until_it_goes(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    shared: FakeShared,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier={"max_calls": 1})
    assert shared.calls == [("start",)]  # the node's previous holds dropped at start-up
    shared.others[TRUNK] = 1  # the carrier's one channel is in use through another node
    refused = await (await env.trunk.invite(env.did_uri(ALICE_DID))).final()
    assert (refused.status, refused.reason) == (503, "Service Unavailable (trunk call limit)")
    assert len(env.alice.requests("INVITE")) == 0
    del shared.others[TRUNK]  # that call ended
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    assert [hold[1] for hold in shared.rows] == [TRUNK]
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert shared.rows == set()
    takes = [c for c in shared.calls if c[0] == "take"]
    assert len(takes) == 2
    assert all(c[2:] == (TRUNK, 1, False) for c in takes)
    # The heartbeat: every two seconds.
    beats = sum(1 for c in shared.calls if c[0] == "beat")
    await trio.sleep(4.1)
    assert sum(1 for c in shared.calls if c[0] == "beat") == beats + 2


async def test_an_account_without_a_limit_costs_the_store_nothing(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    shared: FakeShared,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)  # no max_calls anywhere
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert [c for c in shared.calls if c[0] not in ("start", "beat")] == []


async def test_a_node_whose_store_does_not_answer_counts_its_own_calls(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    shared: FakeShared,
) -> None:
    env, address = await metrics_env(nursery, tmp_path, voipgw_seed, carrier={"max_calls": 1})
    shared.down = True
    first = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.ring()
    second = await env.trunk.invite(env.did_uri(ALICE_DID))
    refused = await second.final()
    assert (refused.status, refused.reason) == (503, "Service Unavailable (trunk call limit)")
    samples = await scrape(address)
    assert samples['voipgw_trunk_calls_counted_alone_total{trunk="carrier"}'] == 1
    assert samples['voipgw_trunk_calls_in_progress{trunk="carrier"}'] == 1
    assert shared.rows == set()
    shared.down = False
    await trio.sleep(2.1)  # the next heartbeat writes the hold
    assert [hold[1] for hold in shared.rows] == [TRUNK]
    assert not env.gateway.calls.limits.store_failing
    await first.cancel()
    assert (await first.final()).status == 487
    await eventually(lambda: env.calls == 0)
    assert shared.rows == set()
