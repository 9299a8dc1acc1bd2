"""A gateway whose store counts ``max_calls`` for a cluster (as PostgreSQL's does): the trunk's
limit is asked of the store, a channel another node holds refuses the call, the hold goes when
the call ends, the node beats its heartbeat, and while the store does not answer the node counts
its own calls, says so in its metrics and writes them once it answers.

The store's count is tests/unit/calls/test_call_limits_shared.py's fake, put where the SQLite
store would say "no shared count"; the SQL itself is tested against PostgreSQL in
tests/integration/test_call_limits_postgresql.py."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from gateway.core.config import ConfigError, GatewayConfig
from gateway.core.store.sqlite import SqliteStore
from tests.component.calls import b2bua_env
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    B2bua,
    answered_call,
    eventually,
    start_b2bua,
)
from tests.component.calls.metrics_scrape import metrics_env, scrape
from tests.component.calls.transfer_calls import (
    alice_calls,
    bob_phone,
    eventually_notify,
    refer,
    replaces_of,
)
from tests.unit.calls.fake_shared import FakeShared

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
    # No other process under its name; the node's previous holds dropped at start-up.
    assert shared.calls == [("other_instance",), ("start",)]
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
    assert [c for c in shared.calls if c[0] not in ("other_instance", "start", "beat")] == []


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


async def test_a_node_name_another_running_process_heartbeats_under_refuses_the_start(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    shared: FakeShared,
) -> None:
    # A recent heartbeat of another instance, which moves while the node watches: a live
    # process has the name. Nothing of the name's holds or heartbeat is touched.
    shared.heartbeats_seen = [("i-other", 1), ("i-other", 1), ("i-other", 2)]
    started = trio.current_time()
    with pytest.raises(ConfigError) as refused:
        await start_b2bua(nursery, tmp_path, voipgw_seed)
    assert refused.value.table == "store" and refused.value.key == "node"
    assert "[store] node" in str(refused.value)
    assert "another running gateway (instance i-other" in str(refused.value)
    assert "defaults to this host's name" in str(refused.value)
    assert [c[0] for c in shared.calls] == ["other_instance"] * 3
    assert trio.current_time() - started <= 2 * shared.heartbeat_interval


async def test_a_node_restarted_after_a_crash_takes_its_name_back_from_its_previous_run(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    shared: FakeShared,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Its previous run's heartbeat (killed a moment ago) is recent but never moves: after two
    # heartbeat intervals it is taken for this node's own, and the node starts.
    shared.heartbeats_seen = [("i-killed", 7)] * 100
    started = trio.current_time()
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    waited = trio.current_time() - started
    assert 2 * shared.heartbeat_interval <= waited < 2 * shared.heartbeat_interval + 1
    assert shared.calls[-1] == ("start",)
    assert "taken for this node's previous run" in caplog.text
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200


async def test_a_restart_whose_previous_runs_heartbeat_ages_out_while_watched_says_so_and_starts(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    shared: FakeShared,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Its previous run was killed nearly the node timeout ago: its heartbeat, recent at the
    # first look, ages out at the second. The node starts at once, and its log says why the
    # wait it announced ended (a restart under load meets this as often as the other path).
    caplog.set_level(logging.INFO, logger="gateway.core.gateway")
    shared.heartbeats_seen = [("i-killed", 7), ("i-killed", 7)]  # then None: aged out
    started = trio.current_time()
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    assert trio.current_time() - started < 2 * shared.heartbeat_interval
    assert [c[0] for c in shared.calls[:4]] == ["other_instance"] * 3 + ["start"]
    assert "waiting up to 4 s to tell a running process" in caplog.text
    assert "the heartbeat of instance i-killed went or aged out while watched" in caplog.text
    assert "taken for this node's previous run" not in caplog.text
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200


async def test_a_trunk_leg_joined_by_an_attended_transfer_brings_its_count_whatever_the_limit(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    shared: FakeShared,
) -> None:
    # The carrier's one channel: its call to alice, the consultation call. alice transfers bob
    # (her call to him) to it: the carrier's leg joins bob's call, and its count moves there
    # (exempt: no new channel), so the channel stays counted, here and for the cluster.
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier={"max_calls": 1})
    assert env.gateway.calls is not None
    limits = env.gateway.calls.limits
    bob = await bob_phone(env, nursery, voipgw_seed)
    to_bob = await alice_calls(env, "sip:bob@127.0.0.1:5060")
    await bob.next_call()
    from_carrier, alice_consult = await answered_call(env)
    assert [hold[1] for hold in shared.rows] == [TRUNK]
    assert (
        await refer(to_bob, f"<sip:+15550100@127.0.0.1:5060?Replaces={replaces_of(alice_consult)}>")
        == 202
    )
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    assert (await to_bob.bye()).status == 200
    await eventually(lambda: env.calls == 1)
    # bob's call (hold 2) took it exempt; the consultation call's (hold 1) went as it ended.
    assert ("take", 2, TRUNK, 1, True) in shared.calls
    assert ("release", [(1, TRUNK)]) in shared.calls
    assert shared.rows == {(2, TRUNK)}
    assert limits.in_progress[TRUNK] == 1
    # The channel is counted: the carrier's next call is refused.
    refused = await (await env.trunk.invite(env.did_uri(ALICE_DID))).final()
    assert (refused.status, refused.reason) == (503, "Service Unavailable (trunk call limit)")
    assert (await from_carrier.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert shared.rows == set()
    assert limits.in_progress == {}


async def test_a_failed_join_gives_the_moved_count_back(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    shared: FakeShared,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier={"max_calls": 1})
    assert env.gateway.calls is not None
    limits = env.gateway.calls.limits
    bob = await bob_phone(env, nursery, voipgw_seed)
    to_bob = await alice_calls(env, "sip:bob@127.0.0.1:5060")
    await bob.next_call()
    _, alice_consult = await answered_call(env)

    async def refuse_reinvite(received: object) -> bool:
        request = received.request  # type: ignore[attr-defined]
        if request.method != "INVITE":
            return False
        await env.trunk.respond(received, 488)  # type: ignore[arg-type]
        return True

    env.trunk.in_dialog = refuse_reinvite  # the carrier refuses the join's re-INVITE
    assert (
        await refer(to_bob, f"<sip:+15550100@127.0.0.1:5060?Replaces={replaces_of(alice_consult)}>")
        == 202
    )
    await eventually_notify(env.alice, "SIP/2.0 488 Not Acceptable Here")
    await env.trunk.next_request("BYE")  # the carrier's leg, hung up
    await eventually(lambda: env.calls == 1)  # alice and bob talk on
    assert limits.in_progress.get(TRUNK, 0) == 0
    assert shared.rows == set()
    env.trunk.in_dialog = None
    assert (await to_bob.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_another_process_beating_under_the_nodes_name_is_logged_and_counted(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    shared: FakeShared,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env, address = await metrics_env(nursery, tmp_path, voipgw_seed)
    samples = await scrape(address)
    assert samples["voipgw_store_node_name_conflicts_total"] == 0
    shared.intruder = "i-twin"  # started at the same moment, so neither start saw the other
    await trio.sleep(4.1)  # two heartbeats
    samples = await scrape(address)
    assert samples["voipgw_store_node_name_conflicts_total"] == 2
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "instance i-twin" in errors[0]
    assert env.calls == 0  # calls go on: the node keeps serving


async def call_out(env: B2bua) -> int:
    """alice calls a number the carrier serves; the final status (a call answered is hung up)."""
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    final = await call.final()
    if final.status == 200:
        assert (await call.bye()).status == 200
    return final.status


async def test_with_the_cluster_scope_the_trunk_gets_this_nodes_share_of_max_cps(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    shared: FakeShared,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made = b2bua_env.gateway_config

    def cluster_scope(*args: Any, **kwargs: Any) -> GatewayConfig:
        # The store is SQLite here (the fake stands in for PostgreSQL's count), which the
        # config refuses "cluster" for: set after validation.
        config = made(*args, **kwargs)
        return attrs.evolve(config, store=attrs.evolve(config.store, max_cps_scope="cluster"))

    monkeypatch.setattr(b2bua_env, "gateway_config", cluster_scope)
    shared.live_nodes = 2  # start() found another node alive
    env, address = await metrics_env(nursery, tmp_path, voipgw_seed, carrier={"max_cps": 2})
    samples = await scrape(address)
    assert samples["voipgw_store_live_nodes"] == 2
    assert samples['voipgw_trunk_paced_cps{trunk="carrier"}'] == 1.0
    # Its share is one call a second: the second at once is past it.
    assert [await call_out(env), await call_out(env)] == [200, 503]
    assert len(env.trunk.requests("INVITE")) == 1
    shared.live_nodes = 1  # the other node died: the next heartbeat counts this one alone
    await trio.sleep(shared.heartbeat_interval + 0.1)
    samples = await scrape(address)
    assert samples["voipgw_store_live_nodes"] == 1
    assert samples['voipgw_trunk_paced_cps{trunk="carrier"}'] == 2.0
    # Two a second now: a call every half second (no burst of the new share's two at once).
    assert await call_out(env) == 200
    await trio.sleep(0.5)
    assert await call_out(env) == 200
    assert await call_out(env) == 503
    # No max_calls: pacing asked nothing of the store, the heartbeats were all it heard.
    assert {c[0] for c in shared.calls} == {"other_instance", "start", "beat"}
    await eventually(lambda: env.calls == 0)
