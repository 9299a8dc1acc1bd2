"""A trunk whose transport the DNS chooses (RFC 3263 §4.1), the synchronous parts: which NAPTR
records are followed and in what order (services of usable transports only, flag S, no regexp,
the lowest order, then preference), the Request-URI such a trunk's calls carry, and the plugin
view of a named trunk's ordered targets (``Directory.trunk_targets``)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from gateway.core.calls.routing import Destination, GatewayDirectory, TrunkHopTarget, trunk_uri
from gateway.core.calls.trunk_dns import (
    NaptrRecord,
    Resolution,
    TrunkHop,
    TrunkTargets,
    naptr_choices,
)
from gateway.core.config import DnsSection, TrunkConfig
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import FlowTable
from gateway.testing.fake_dns import FakeResolver

DOMAIN = "sip.carrier.example"
ALL = ("udp", "tcp", "tls")


def naptr(order: int, preference: int, service: str, replacement: str, **kw: str) -> NaptrRecord:
    return NaptrRecord(
        order, preference, kw.get("flags", "s"), service, kw.get("regexp", ""), replacement
    )


def test_the_lowest_order_by_preference() -> None:
    records = [
        naptr(10, 30, "SIP+D2U", f"_sip._udp.{DOMAIN}"),
        naptr(10, 10, "SIPS+D2T", f"_sips._tcp.{DOMAIN}"),
        naptr(10, 20, "SIP+D2T", f"_sip._tcp.{DOMAIN}"),
        naptr(20, 1, "SIP+D2U", f"_sip._udp.backup.{DOMAIN}"),  # another order: never
    ]
    assert naptr_choices(records, ALL) == [
        ("tls", f"_sips._tcp.{DOMAIN}"),
        ("tcp", f"_sip._tcp.{DOMAIN}"),
        ("udp", f"_sip._udp.{DOMAIN}"),
    ]


def test_only_services_of_transports_in_use() -> None:
    records = [
        naptr(10, 10, "SIPS+D2T", f"_sips._tcp.{DOMAIN}"),
        naptr(10, 20, "SIP+D2T", f"_sip._tcp.{DOMAIN}"),
        naptr(10, 30, "SIP+D2U", f"_sip._udp.{DOMAIN}"),
    ]
    # Without the TLS transport SIPS+D2T is discarded (RFC 3263 §4.1).
    assert naptr_choices(records, ("udp", "tcp")) == [
        ("tcp", f"_sip._tcp.{DOMAIN}"),
        ("udp", f"_sip._udp.{DOMAIN}"),
    ]
    assert naptr_choices(records, ("udp",)) == [("udp", f"_sip._udp.{DOMAIN}")]
    assert naptr_choices(records, ()) == []


def test_the_lowest_order_among_the_records_we_can_use() -> None:
    # Order 10 offers only TLS, which is off: order 20 is the first that matches.
    records = [
        naptr(10, 10, "SIPS+D2T", f"_sips._tcp.{DOMAIN}"),
        naptr(20, 10, "SIP+D2U", f"_sip._udp.{DOMAIN}"),
        naptr(30, 10, "SIP+D2T", f"_sip._tcp.{DOMAIN}"),
    ]
    assert naptr_choices(records, ("udp", "tcp")) == [("udp", f"_sip._udp.{DOMAIN}")]


@pytest.mark.parametrize(
    "record",
    [
        naptr(10, 10, "SIP+D2U", f"_sip._udp.{DOMAIN}", flags="a"),  # not an SRV name
        naptr(10, 10, "SIP+D2U", f"_sip._udp.{DOMAIN}", flags=""),  # non-terminal
        naptr(10, 10, "SIP+D2U", "", regexp="!^.*$!sip:x@example!"),  # a rewrite: not SIP's
        naptr(10, 10, "SIP+D2U", ""),  # no replacement
        naptr(10, 10, "SIP+D2S", f"_sip._sctp.{DOMAIN}"),  # SCTP: a transport we lack
        naptr(10, 10, "E2U+sip", "example.com"),  # ENUM, not RFC 3263
    ],
)
def test_records_that_are_not_followed(record: NaptrRecord) -> None:
    assert naptr_choices([record], ALL) == []


def test_flags_and_services_are_read_without_case_and_duplicates_once() -> None:
    records = [
        naptr(10, 10, "sip+d2t", f"_sip._tcp.{DOMAIN}", flags="S"),
        naptr(10, 20, "SIP+D2T", f"_sip._tcp.{DOMAIN}"),
    ]
    assert naptr_choices(records, ALL) == [("tcp", f"_sip._tcp.{DOMAIN}")]


def test_at_most_sixteen_records_are_read() -> None:
    records = [naptr(10, 10, "SIP+D2X", f"n{i}.example") for i in range(16)]
    records.append(naptr(10, 1, "SIP+D2U", f"_sip._udp.{DOMAIN}"))
    assert naptr_choices(records, ALL) == []


def test_a_naptr_trunks_uri_names_its_domain_without_transport_or_port() -> None:
    trunk = TrunkConfig(name="c", address=DOMAIN)
    assert trunk_uri(trunk, "+15551234") == f"sip:+15551234@{DOMAIN}"
    assert trunk_uri(trunk, "#31#1") == f"sip:%2331%231@{DOMAIN}"
    # Every other form keeps its URI byte for byte.
    assert trunk_uri(TrunkConfig(name="c", address=f"udp:{DOMAIN}"), "1") == (
        f"sip:1@{DOMAIN};transport=udp"
    )
    assert trunk_uri(TrunkConfig(name="c", address="tcp:192.0.2.1:5070"), "1") == (
        "sip:1@192.0.2.1:5070;transport=tcp"
    )


def _directory(tmp_path: Path, resolution: Resolution | None) -> GatewayDirectory:
    trunks = [
        TrunkConfig(name="named", address=DOMAIN, prefixes=("+1",)),
        TrunkConfig(name="ip", address="udp:192.0.2.50:5060", prefixes=("+1",)),
    ]
    targets = TrunkTargets(
        trunks,
        DnsSection(max_targets=3),
        FakeResolver(),
        rng=random.Random(1),
        on_unresolved=lambda trunk, why: None,
        on_resolved=lambda trunk: None,
        on_change=lambda trunk, resolution: None,
    )
    if resolution is not None:
        targets._resolved["named"] = resolution
    store = SqliteStore.open(tmp_path)
    return GatewayDirectory(
        store,
        FlowTable(),
        trunks,
        frozenset({"gw.example"}),
        now=lambda: 0.0,
        trunk_targets=targets,
    )


def test_plugins_get_every_target_of_a_named_trunk_in_order(tmp_path: Path) -> None:
    hops = [
        TrunkHop("tls", "192.0.2.1", 5061),
        TrunkHop("tcp", "192.0.2.2", 5060),
        TrunkHop("udp", "192.0.2.3", 5060),
        TrunkHop("udp", "192.0.2.4", 5060),
    ]
    directory = _directory(
        tmp_path, Resolution(groups=tuple((((0, (h,)),)) for h in hops), ttl=60.0)
    )
    targets = directory.trunk_targets("named", "+15551234")
    assert [t.hop for t in targets if isinstance(t, TrunkHopTarget)] == hops[:3]  # max_targets
    assert [t.uri for t in targets] == [f"sip:+15551234@{DOMAIN}"] * 3
    assert [(t.index, t.last) for t in targets if isinstance(t, TrunkHopTarget)] == [
        (0, False),
        (1, False),
        (2, True),
    ]
    # The first is what trunk_target gives, as before.
    first = directory.trunk_target("named", "+15551234")
    assert isinstance(first, TrunkHopTarget) and first.hop == hops[0]
    # A trunk with an address has its one target; a number it cannot take, none.
    (ip,) = directory.trunk_targets("ip", "+15551234")
    assert ip.uri == "sip:+15551234@192.0.2.50:5060;transport=udp" and ip.trunk == "ip"
    assert directory.trunk_targets("ip", "alice") == ()
    assert directory.trunk_targets("nobody", "+15551234") == ()


def test_an_unresolved_named_trunk_has_no_targets(tmp_path: Path) -> None:
    directory = _directory(tmp_path, None)
    assert directory.trunk_targets("named", "+15551234") == ()
    assert directory.trunk_target("named", "+15551234") is None


def test_a_trunks_hop_is_its_address_or_its_first_dns_target(tmp_path: Path) -> None:
    """Where a new connection to the trunk goes once a call's connection from it is closed
    (routing.reconnect_destination; tests/unit/calls/test_reconnect_destination.py)."""
    first, second = TrunkHop("tls", "192.0.2.1", 5061), TrunkHop("tcp", "192.0.2.2", 5060)
    directory = _directory(tmp_path, Resolution(groups=(((0, (first, second)),),), ttl=60.0))
    assert directory.trunk_hop("named") == Destination("tls", "192.0.2.1", 5061)
    assert directory.trunk_hop("ip") == Destination("udp", "192.0.2.50", 5060)
    assert directory.trunk_hop("nobody") is None
    # Not resolved yet: nowhere better than the leg's address.
    assert _directory(tmp_path / "unresolved", None).trunk_hop("named") is None
