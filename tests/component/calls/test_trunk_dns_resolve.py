"""One resolution of a trunk named by DNS (RFC 3263 §4.2) and the task that keeps it, against
:class:`~gateway.testing.fake_dns.FakeResolver`, in virtual time: explicit port (A/AAAA only),
SRV with its targets' addresses, no SRV (the name's own addresses at the transport's port), a
lone "." target, a target that does not resolve, and start-up bounded by ``[dns] timeout``."""

from __future__ import annotations

import random

import pytest
import trio

from gateway.core.calls.trunk_dns import DnsError, SrvRecord, TrunkHop, TrunkTargets, resolve
from gateway.core.config import DnsSection, TrunkAddress, TrunkConfig
from gateway.testing.fake_dns import FakeResolver

NAME = "sip.carrier.example"


async def test_an_explicit_port_asks_for_addresses_only(autojump_clock: trio.abc.Clock) -> None:
    resolver = FakeResolver(
        srv_records={f"_sip._udp.{NAME}": [SrvRecord(1, 0, 9999, "x.example")]},
        hosts={NAME: ["192.0.2.1", "2001:db8::1"]},
        ttl=120.0,
    )
    found = await resolve(TrunkAddress.parse(f"udp:{NAME}:5080"), resolver)
    assert found.hops == (TrunkHop("udp", "192.0.2.1", 5080), TrunkHop("udp", "2001:db8::1", 5080))
    assert found.ttl == 120.0
    assert resolver.queries == 1  # no SRV query


async def test_srv_targets_by_priority_with_their_addresses(autojump_clock: trio.abc.Clock) -> None:
    resolver = FakeResolver(
        srv_records={
            f"_sips._tcp.{NAME}": [
                SrvRecord(20, 0, 5062, "b.example"),
                SrvRecord(10, 0, 5061, "a.example"),
            ]
        },
        hosts={"a.example": ["192.0.2.1", "192.0.2.2"], "b.example": ["192.0.2.3"]},
    )
    found = await resolve(TrunkAddress.parse(f"tls:{NAME}"), resolver)
    assert found.hops == (
        TrunkHop("tls", "192.0.2.1", 5061),
        TrunkHop("tls", "192.0.2.2", 5061),
        TrunkHop("tls", "192.0.2.3", 5062),
    )


async def test_without_srv_the_names_own_addresses_at_the_default_port(
    autojump_clock: trio.abc.Clock,
) -> None:
    resolver = FakeResolver(hosts={NAME: ["192.0.2.7"]})
    assert (await resolve(TrunkAddress.parse(f"tcp:{NAME}"), resolver)).hops == (
        TrunkHop("tcp", "192.0.2.7", 5060),
    )
    assert (await resolve(TrunkAddress.parse(f"tls:{NAME}"), resolver)).hops == (
        TrunkHop("tls", "192.0.2.7", 5061),
    )


async def test_a_target_that_does_not_resolve_is_left_out(autojump_clock: trio.abc.Clock) -> None:
    resolver = FakeResolver(
        srv_records={
            f"_sip._udp.{NAME}": [
                SrvRecord(10, 0, 5060, "gone.example"),
                SrvRecord(20, 0, 5060, "b.example"),
            ]
        },
        hosts={"b.example": ["192.0.2.3"]},
    )
    found = await resolve(TrunkAddress.parse(f"udp:{NAME}"), resolver)
    assert found.hops == (TrunkHop("udp", "192.0.2.3", 5060),)


@pytest.mark.parametrize(
    ("records", "hosts", "words"),
    [
        ([SrvRecord(0, 0, 0, ".")], {NAME: ["192.0.2.1"]}, "not offered"),  # RFC 2782 "."
        ([], {}, "no SRV, A or AAAA record"),
        ([SrvRecord(10, 0, 5060, "gone.example")], {}, "no target"),
    ],
)
async def test_names_that_lead_nowhere_are_dns_errors(
    autojump_clock: trio.abc.Clock,
    records: list[SrvRecord],
    hosts: dict[str, list[str]],
    words: str,
) -> None:
    resolver = FakeResolver(srv_records={f"_sip._udp.{NAME}": records}, hosts=hosts)
    with pytest.raises(DnsError, match=words):
        await resolve(TrunkAddress.parse(f"udp:{NAME}"), resolver)


async def test_start_up_waits_at_most_the_timeout(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    slow = FakeResolver(hosts={NAME: ["192.0.2.1"]}, delay=100.0)  # a server that never answers
    down: list[tuple[str, str]] = []
    targets = TrunkTargets(
        [TrunkConfig(name="carrier", address=f"udp:{NAME}")],
        DnsSection(timeout=2.0),
        slow,
        rng=random.Random(1),
        on_unresolved=lambda trunk, why: down.append((trunk, why)),
        on_resolved=lambda trunk: None,
        on_change=lambda trunk, resolution: None,
    )
    started = trio.current_time()
    await nursery.start(targets.serve)
    assert trio.current_time() - started == pytest.approx(2.0)
    assert down == [("carrier", f"udp:{NAME} does not resolve: no answer within 2 s")]
    assert targets.hops("carrier") == ()
