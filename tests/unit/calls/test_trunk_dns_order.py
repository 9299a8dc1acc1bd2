"""Trunks named by DNS, the synchronous parts (gateway/core/calls/trunk_dns.py, routing.py):
RFC 2782 order (priority, then weights with a seeded generator), the TTL clamps, the targets'
addresses recognising the trunk, and where its requests go."""

from __future__ import annotations

import collections
import random

import pytest

from gateway.core.calls.routing import (
    TrunkHopTarget,
    TrunkMatcher,
    destination_for,
    trunk_uri,
)
from gateway.core.calls.trunk_dns import Resolution, TrunkHop, refresh_in, weighted_order
from gateway.core.calls.trunk_health import TrunkHealth
from gateway.core.config import DnsSection, TrunkConfig


def hop(host: str, port: int = 5060) -> TrunkHop:
    return TrunkHop("udp", host, port)


def resolution(*groups: list[tuple[int, list[str]]]) -> Resolution:
    return Resolution(
        groups=tuple(
            tuple((weight, tuple(hop(h) for h in hosts)) for weight, hosts in group)
            for group in groups
        ),
        ttl=60.0,
    )


def test_lower_priority_first_each_target_followed_by_its_addresses() -> None:
    answer = resolution([(0, ["10.0.0.1", "10.0.0.2"])], [(0, ["10.0.0.3"])])
    assert answer.ordered(random.Random(1), 16) == (
        hop("10.0.0.1"),
        hop("10.0.0.2"),
        hop("10.0.0.3"),
    )
    assert answer.ordered(random.Random(1), 2) == (hop("10.0.0.1"), hop("10.0.0.2"))


def test_weights_share_the_first_place_in_proportion() -> None:
    rng = random.Random(7)
    group = [(60, (hop("a"),)), (30, (hop("b"),)), (10, (hop("c"),))]
    firsts = collections.Counter(weighted_order(group, rng)[0][1][0].host for _ in range(10_000))
    assert 5700 <= firsts["a"] <= 6300
    assert 2700 <= firsts["b"] <= 3300
    assert 800 <= firsts["c"] <= 1200


def test_every_entry_is_ordered_once() -> None:
    rng = random.Random(3)
    group = [(0, (hop("z"),)), (5, (hop("a"),)), (1, (hop("b"),))]
    for _ in range(100):
        assert sorted(e[1][0].host for e in weighted_order(group, rng)) == ["a", "b", "z"]


def test_a_zero_weight_comes_first_rarely() -> None:
    # RFC 2782: weight 0 has "a very small chance of being selected" while others are left.
    rng = random.Random(11)
    group = [(0, (hop("zero"),)), (100, (hop("heavy"),))]
    firsts = collections.Counter(weighted_order(group, rng)[0][1][0].host for _ in range(10_000))
    assert 0 < firsts["zero"] < 300


def test_a_priority_with_one_target_draws_nothing() -> None:
    class NoDraws(random.Random):
        def randint(self, a: int, b: int) -> int:
            raise AssertionError("drew a number")

    answer = resolution([(5, ["10.0.0.1"])], [(1, ["10.0.0.2"])])
    assert answer.ordered(NoDraws(), 4) == (hop("10.0.0.1"), hop("10.0.0.2"))


@pytest.mark.parametrize(
    ("ttl", "expected"),
    [(0.0, 30.0), (10.0, 30.0), (100.0, 90.0), (86400.0, 3600.0)],
)
def test_refresh_before_the_ttl_within_the_clamps(ttl: float, expected: float) -> None:
    assert refresh_in(ttl, DnsSection(min_ttl=30.0, max_ttl=3600.0)) == expected


def named(name: str = "carrier", **keys: object) -> TrunkConfig:
    return TrunkConfig(name=name, address="udp:sip.carrier.example", **keys)  # type: ignore[arg-type]


def test_a_named_trunk_has_no_sources_until_it_resolves() -> None:
    matcher = TrunkMatcher([named()])
    assert matcher.identify("192.0.2.1") is None
    matcher.set_resolved("carrier", ["192.0.2.1", "2001:db8::1"])
    assert matcher.identify("192.0.2.1").name == "carrier"  # type: ignore[union-attr]
    assert matcher.identify("[2001:db8::1]").name == "carrier"  # type: ignore[union-attr]
    matcher.set_resolved("carrier", ["192.0.2.2"])  # a refresh moved it
    assert matcher.identify("192.0.2.1") is None
    assert matcher.identify("192.0.2.2").name == "carrier"  # type: ignore[union-attr]


def test_configured_sources_win_over_resolved_addresses() -> None:
    matcher = TrunkMatcher([named(allowed_sources=("198.51.100.0/24",))])
    matcher.set_resolved("carrier", ["192.0.2.1"])
    assert matcher.identify("192.0.2.1") is None
    assert matcher.identify("198.51.100.7").name == "carrier"  # type: ignore[union-attr]


def test_a_single_address_is_more_specific_than_a_network_listed_first() -> None:
    wide = TrunkConfig(name="wide", address="udp:192.0.2.1:5060", allowed_sources=("10.0.0.0/8",))
    exact = TrunkConfig(name="exact", address="udp:10.1.2.3:5060")
    narrow = TrunkConfig(
        name="narrow", address="udp:192.0.2.2:5060", allowed_sources=("10.1.0.0/16",)
    )
    matcher = TrunkMatcher([wide, narrow, exact])
    assert matcher.identify("10.1.2.3").name == "exact"  # type: ignore[union-attr]
    assert matcher.identify("10.1.9.9").name == "narrow"  # type: ignore[union-attr]
    assert matcher.identify("10.9.9.9").name == "wide"  # type: ignore[union-attr]


def test_a_named_trunks_uri_names_its_domain_and_its_target_is_the_resolved_hop() -> None:
    assert trunk_uri(named(), "+15551234") == "sip:+15551234@sip.carrier.example;transport=udp"
    with_port = TrunkConfig(name="c", address="tcp:sip.carrier.example:5080")
    assert trunk_uri(with_port, "1") == "sip:1@sip.carrier.example:5080;transport=tcp"
    target = TrunkHopTarget(
        uri="sip:1@sip.carrier.example;transport=udp",
        trunk="carrier",
        hop=hop("192.0.2.9", 5070),
        index=0,
        last=True,
        server_name="sip.carrier.example",
    )
    destination = destination_for(target)
    assert (destination.transport, destination.host, destination.port) == (
        "udp",
        "192.0.2.9",
        5070,
    )


def test_an_unresolved_trunk_is_down_until_it_resolves_probed_or_not() -> None:
    health = TrunkHealth(probed=["other"])
    health.unresolved("carrier", "sip.carrier.example does not resolve")
    assert not health.is_up("carrier")
    assert health.down == {"carrier": "sip.carrier.example does not resolve"}
    health.resolved("carrier")
    assert health.is_up("carrier")
    health.resolved("other")  # resolving does not bring up a trunk down for another reason
    health.failed("other", "no answer")
    health.resolved("other")
    assert not health.is_up("other")
