"""Trunks named by DNS through the B2BUA (RFC 3263), with a fake resolver at the boundary.

The trunk "carrier" is ``udp:sip.carrier.example``: its SRV records (``_sip._udp``) name a
first target that nobody answers at (127.0.0.6, priority 10) and a second one, the carrier's
SipAgent at 127.0.0.2 (priority 20). alice calls +15551234:

- the first target gets the INVITE, stays silent for the trunk's ``response_timeout``, and the
  call goes to the second target, which answers; the call record says which target took it,
  and the trunk stays up (one server down is not the trunk down);
- a 500 from a target is the trunk's answer: the next trunk is called, not the next target;
- the carrier's own calls come from a resolved address and are recognised as the trunk's;
- a refresh (after the TTL, clamped) moves the trunk to new targets: calls go there, and the
  old address is no longer the trunk's;
- a DNS that stops answering keeps the last answer (logged once);
- a name that does not resolve at start-up does not hold the gateway up: the trunk is down
  (503 to a caller) until it resolves;
- OPTIONS probes and the registration with the carrier move to the next target when one is
  silent; the trunk is down only when no target answers.

Signalling on the in-memory network, in virtual time. Set-up as b2bua_env.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.calls.trunk_dns import SrvRecord
from gateway.core.ids import SeededIds
from gateway.testing.fake_dns import FakeResolver
from gateway.testing.sip_agent import AutoAnswer, SipAgent
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    TRUNK,
    B2bua,
    eventually,
    start_b2bua,
)
from tests.component.calls.trunk_registrar import PASSWORD, USERNAME, Registrar

NUMBER = "+15551234"
NAME = "sip.carrier.example"
DEAD = ("127.0.0.6", 5060)  # the first SRV target: nothing answers there
BACKUP = ("127.0.0.5", 5060)
# A call whose INVITE to the dead target was given up is gone once that INVITE's transaction
# ends (Timer B, 64*T1 = 32 s): its late answer would still be CANCELled or hung up.
ENDED = 40.0


def two_targets() -> FakeResolver:
    return FakeResolver(
        srv_records={
            f"_sip._udp.{NAME}": [
                SrvRecord(20, 0, TRUNK[1], "b.carrier.example"),
                SrvRecord(10, 0, DEAD[1], "a.carrier.example"),
            ]
        },
        hosts={"a.carrier.example": [DEAD[0]], "b.carrier.example": [TRUNK[0]]},
    )


async def start(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    resolver: FakeResolver,
    *,
    carrier: dict[str, Any] | None = None,
    with_backup: bool = False,
    dns: dict[str, Any] | None = None,
) -> tuple[B2bua, SipAgent | None]:
    extra = []
    if with_backup:
        extra.append(
            {
                "name": "backup",
                "address": f"udp:{BACKUP[0]}:{BACKUP[1]}",
                "prefixes": ["+1"],
                "allowed_sources": [],
            }
        )
    env = await start_b2bua(
        nursery,
        tmp_path,
        seed,
        carrier={"address": f"udp:{NAME}", "response_timeout": 2.0, **(carrier or {})},
        extra_trunks=extra,
        dns_resolver=resolver,
        dns=dns,
    )
    env.trunk.auto = AutoAnswer(ring=True, status=200)
    backup = None
    if with_backup:
        backup = SipAgent(
            env.network, BACKUP, ids=SeededIds(seed + 5), user="backup", proxy=GW, media_port=41000
        )
        backup.auto = AutoAnswer(ring=True, status=200)
        await nursery.start(backup.serve)
    return env, backup


async def alice_calls(env: B2bua) -> Any:
    call = await env.alice.invite(f"sip:{NUMBER}@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    return call


def invites_to(env: B2bua, address: tuple[str, int]) -> list[Any]:
    return [d for d in env.network.capture if d.dst == address and d.data.startswith(b"INVITE")]


async def test_a_dead_first_target_fails_over_to_the_second(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, _ = await start(nursery, tmp_path, voipgw_seed, two_targets())
    call = await alice_calls(env)
    started = trio.current_time()
    final = await call.final()
    assert final.status == 200, final.reason
    # The first target (priority 10) had its INVITE (retransmitted, unanswered) for 2 s.
    assert invites_to(env, DEAD)
    assert 2.0 <= trio.current_time() - started < 3.0
    (invite,) = env.trunk.requests("INVITE")
    # The Request-URI names the trunk's domain, not the target (RFC 3263 §4.2).
    assert str(invite.uri) == f"sip:{NUMBER}@{NAME};transport=udp"
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    record = gateway_call.security_record()
    assert record["b"]["dns"] == {  # type: ignore[index]
        "name": NAME,
        "target": "udp:127.0.0.2:5060",
        "attempt": 2,
    }
    assert record["failovers"] == [
        {
            "trunk": "carrier",
            "status": 408,
            "reason": "Request Timeout (no response)",
            "to": "carrier",
            "target": "udp:127.0.0.6:5060",
            "to_target": "udp:127.0.0.2:5060",
        }
    ]
    assert env.gateway.trunk_health.is_up("carrier")
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0, timeout=ENDED)


async def test_a_targets_500_goes_to_the_next_trunk_not_the_next_target(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    resolver = two_targets()
    # Both targets answer (the carrier's agent at 127.0.0.2 first); its 500 is the trunk's.
    resolver.hosts["a.carrier.example"] = [TRUNK[0]]
    resolver.srv_records[f"_sip._udp.{NAME}"][1] = SrvRecord(10, 0, 5060, "a.carrier.example")
    resolver.hosts["b.carrier.example"] = [DEAD[0]]
    env, backup = await start(nursery, tmp_path, voipgw_seed, resolver, with_backup=True)
    assert backup is not None
    env.trunk.auto = AutoAnswer(ring=True, status=500)
    call = await alice_calls(env)
    assert (await call.final()).status == 200
    assert len(backup.requests("INVITE")) == 1
    assert invites_to(env, DEAD) == []  # the carrier's second target was not tried
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0, timeout=ENDED)


async def test_the_carriers_calls_are_recognised_by_its_resolved_address(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, _ = await start(nursery, tmp_path, voipgw_seed, two_targets())
    assert env.gateway.trunk_for_source(TRUNK[0]) == "carrier"
    assert env.gateway.trunk_for_source(DEAD[0]) == "carrier"
    assert env.gateway.trunk_for_source("127.0.0.9") is None
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final()
    assert final.status == 200, final.reason  # no challenge: accepted by source
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0, timeout=ENDED)


async def test_a_refresh_moves_the_trunk_to_its_new_targets(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    resolver = two_targets()
    resolver.ttl = 5.0  # clamped to min_ttl
    env, _ = await start(nursery, tmp_path, voipgw_seed, resolver, dns={"min_ttl": 20.0})
    agent = SipAgent(
        env.network, BACKUP, ids=SeededIds(voipgw_seed + 7), user="new", proxy=GW, media_port=41000
    )
    agent.auto = AutoAnswer(ring=True, status=200)
    await nursery.start(agent.serve)
    queries = resolver.queries
    resolver.srv_records[f"_sip._udp.{NAME}"] = [SrvRecord(10, 0, 5060, "c.carrier.example")]
    resolver.hosts["c.carrier.example"] = [BACKUP[0]]
    await trio.sleep(10)
    assert resolver.queries == queries  # not before min_ttl, whatever the TTL said
    await eventually(lambda: env.gateway.trunk_for_source(BACKUP[0]) == "carrier", timeout=15)
    assert env.gateway.trunk_for_source(TRUNK[0]) is None  # no longer its address
    call = await alice_calls(env)
    assert (await call.final()).status == 200
    assert len(agent.requests("INVITE")) == 1
    assert env.trunk.requests("INVITE") == []
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0, timeout=ENDED)


async def test_a_failing_dns_keeps_the_last_answer(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.core.calls.trunk_dns")
    resolver = two_targets()
    resolver.srv_records[f"_sip._udp.{NAME}"] = [SrvRecord(10, 0, 5060, "b.carrier.example")]
    env, _ = await start(nursery, tmp_path, voipgw_seed, resolver, dns={"retry_interval": 5.0})
    resolver.failing = True
    queries = resolver.queries
    await trio.sleep(200)  # past the refresh (54 s) and many retries
    assert resolver.queries > queries + 10
    assert caplog.text.count("keeping its last answer (udp:127.0.0.2:5060)") == 1
    assert env.gateway.trunk_health.is_up("carrier")
    call = await alice_calls(env)
    assert (await call.final()).status == 200
    assert len(env.trunk.requests("INVITE")) == 1
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0, timeout=ENDED)
    resolver.failing = False
    await eventually(lambda: "resolves again (unchanged)" in caplog.text, timeout=10)


async def test_a_name_that_does_not_resolve_at_start_up_is_a_trunk_down_until_it_does(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.core.calls.trunk_dns")
    resolver = two_targets()
    resolver.failing = True
    started = trio.current_time()
    env, _ = await start(
        nursery, tmp_path, voipgw_seed, resolver, dns={"timeout": 3.0, "retry_interval": 10.0}
    )
    assert trio.current_time() - started < 4.0  # start-up did not wait for the DNS
    assert "the trunk is down until it resolves" in caplog.text
    call = await alice_calls(env)
    final = await call.final()
    assert final.status == 503
    assert "trunk carrier is down (its name does not resolve)" in final.reason
    resolver.failing = False
    await eventually(lambda: env.gateway.trunk_health.is_up("carrier"), timeout=15)
    call = await alice_calls(env)
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0, timeout=ENDED)


async def test_probes_move_to_the_next_target_and_the_trunk_is_down_when_none_answers(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, _ = await start(
        nursery, tmp_path, voipgw_seed, two_targets(), carrier={"options_interval": 5.0}
    )
    health = env.gateway.trunk_health
    # The first target (127.0.0.6) misses its probe; the next goes to the second, which answers.
    await eventually(lambda: len(env.trunk.requests("OPTIONS")) >= 1, timeout=30)
    await trio.sleep(30)
    assert health.is_up("carrier")
    probes_of_dead = {
        d.data.split(b"Call-ID: ")[1].split(b"\r\n")[0]
        for d in env.network.capture
        if d.dst == DEAD and d.data.startswith(b"OPTIONS")
    }
    assert len(probes_of_dead) == 1  # one probe (retransmitted): the live target is kept
    env.network.set_link(TRUNK, GW, drop=1.0)  # now the second is silent too
    await eventually(lambda: not health.is_up("carrier"), timeout=60)
    assert "(2 probes in a row)" in health.down["carrier"]


async def test_a_registration_moves_to_the_next_target_when_the_first_is_silent(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The carrier's registrar (127.0.0.2, the second target) challenges; the first is dead.
    registering = {
        "register": True,
        "username": USERNAME,
        "password": PASSWORD,
        "register_expires": 120,
    }
    env, _ = await start(nursery, tmp_path, voipgw_seed, two_targets(), carrier=registering)
    registrar = Registrar(env.trunk)
    registration = env.gateway.trunk_registrations["carrier"]
    await eventually(lambda: registration.registered, timeout=120)
    (accepted,) = registrar.accepted
    # The registrar's domain is the trunk's name (RFC 3263: the domain, not the target).
    assert str(accepted.uri) == f"sip:{NAME}"
    assert accepted.to.uri is not None and accepted.to.uri.host == NAME
    assert [d for d in env.network.capture if d.dst == DEAD and d.data.startswith(b"REGISTER")]
