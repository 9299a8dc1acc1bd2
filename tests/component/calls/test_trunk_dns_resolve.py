"""One resolution of a trunk named by DNS (RFC 3263 §4.2) and the task that keeps it, against
:class:`~gateway.testing.fake_dns.FakeResolver`, in virtual time: explicit port (A/AAAA only),
SRV with its targets' addresses, no SRV (the name's own addresses at the transport's port), a
lone "." target, a target that does not resolve, and start-up bounded by ``[dns] timeout``;
for a bare name (RFC 3263 §4.1) NAPTR by order and preference over the transports in use, SRV
per transport without NAPTR, A/AAAA without either."""

from __future__ import annotations

import logging
import random
import re

import pytest
import trio

from gateway.core.calls.trunk_dns import (
    DnsError,
    NaptrRecord,
    SrvRecord,
    TrunkHop,
    TrunkTargets,
    named_uri_address,
    resolve,
)
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


# -- a bare name: the DNS chooses the transport (RFC 3263 §4.1) ----------------------------------


def carrier_naptr() -> FakeResolver:
    """NAPTR: TLS first (preference 10), then TCP (20), then UDP (30), each to its SRV name."""
    return FakeResolver(
        naptr_records={
            NAME: [
                NaptrRecord(10, 30, "S", "SIP+D2U", "", f"_sip._udp.{NAME}"),
                NaptrRecord(10, 10, "S", "SIPS+D2T", "", f"_sips._tcp.{NAME}"),
                NaptrRecord(10, 20, "S", "SIP+D2T", "", f"_sip._tcp.{NAME}"),
            ]
        },
        srv_records={
            f"_sips._tcp.{NAME}": [SrvRecord(10, 0, 5061, "tls.example")],
            f"_sip._tcp.{NAME}": [
                SrvRecord(20, 0, 5070, "b.example"),
                SrvRecord(10, 0, 5060, "a.example"),
            ],
            f"_sip._udp.{NAME}": [SrvRecord(10, 0, 5060, "a.example")],
        },
        hosts={
            "tls.example": ["192.0.2.1"],
            "a.example": ["192.0.2.2"],
            "b.example": ["192.0.2.3"],
        },
    )


async def test_naptr_then_srv_then_addresses_by_order_and_preference(
    autojump_clock: trio.abc.Clock,
) -> None:
    resolver = carrier_naptr()
    resolver.ttl = 300.0
    found = await resolve(TrunkAddress.parse(NAME), resolver, ("udp", "tcp", "tls"))
    assert found.hops == (
        TrunkHop("tls", "192.0.2.1", 5061),
        TrunkHop("tcp", "192.0.2.2", 5060),  # SRV priority 10 before 20
        TrunkHop("tcp", "192.0.2.3", 5070),
        TrunkHop("udp", "192.0.2.2", 5060),
    )
    # Each SRV's priorities stay groups of their own: a call tries them in this order.
    assert len(found.groups) == 4 and found.ttl == 300.0


async def test_naptr_of_a_transport_we_do_not_use_is_passed_over(
    autojump_clock: trio.abc.Clock,
) -> None:
    resolver = carrier_naptr()
    found = await resolve(TrunkAddress.parse(NAME), resolver, ("udp", "tcp"))  # no TLS plugin
    assert [hop.transport for hop in found.hops] == ["tcp", "tcp", "udp"]
    assert f"SRV _sip._tcp.{NAME}" in resolver.asked
    assert not any("_sips" in query for query in resolver.asked)


async def test_a_naptr_record_whose_srv_leads_nowhere_gives_way_to_the_next(
    autojump_clock: trio.abc.Clock,
) -> None:
    resolver = carrier_naptr()
    del resolver.srv_records[f"_sips._tcp.{NAME}"]  # TLS's SRV name has no records
    resolver.hosts.pop("b.example")  # and one TCP target no address
    found = await resolve(TrunkAddress.parse(NAME), resolver, ("udp", "tcp", "tls"))
    assert found.hops == (TrunkHop("tcp", "192.0.2.2", 5060), TrunkHop("udp", "192.0.2.2", 5060))


async def test_without_naptr_the_srv_records_of_each_transport_we_use(
    autojump_clock: trio.abc.Clock,
) -> None:
    resolver = carrier_naptr()
    resolver.naptr_records.clear()
    found = await resolve(TrunkAddress.parse(NAME), resolver, ("tcp", "udp"))
    # udp, tcp (tls is not used): RFC 3263 leaves the order to the client.
    assert [str(hop) for hop in found.hops] == [
        "udp:192.0.2.2:5060",
        "tcp:192.0.2.2:5060",
        "tcp:192.0.2.3:5070",
    ]


@pytest.mark.parametrize(
    ("transports", "expected"),
    [
        (("udp", "tcp", "tls"), TrunkHop("udp", "192.0.2.7", 5060)),
        (("tcp", "tls"), TrunkHop("tcp", "192.0.2.7", 5060)),  # no UDP: the first we use
        (("tls",), TrunkHop("tls", "192.0.2.7", 5061)),
    ],
)
async def test_without_naptr_or_srv_the_names_addresses_on_udp_5060(
    autojump_clock: trio.abc.Clock, transports: tuple[str, ...], expected: TrunkHop
) -> None:
    resolver = FakeResolver(hosts={NAME: ["192.0.2.7"]})
    found = await resolve(TrunkAddress.parse(NAME), resolver, transports)
    assert found.hops == (expected,)


@pytest.mark.parametrize(
    ("naptr", "transports", "words"),
    [
        # NAPTR only for TLS, which is off: no guessing at SRV names (§4.1).
        (
            [NaptrRecord(10, 10, "s", "SIPS+D2T", "", f"_sips._tcp.{NAME}")],
            ("udp", "tcp"),
            "no NAPTR record for a transport we use (udp, tcp); it offers SIPS+D2T",
        ),
        (
            [NaptrRecord(10, 10, "s", "SIP+D2U", "", f"_sip._udp.{NAME}")],
            ("udp",),
            "no NAPTR target of sip.carrier.example resolves",
        ),
        ([], ("udp",), "no NAPTR, SRV, A or AAAA record"),
        ([], (), "no transport to choose from"),
    ],
)
async def test_bare_names_that_lead_nowhere_are_dns_errors(
    autojump_clock: trio.abc.Clock,
    naptr: list[NaptrRecord],
    transports: tuple[str, ...],
    words: str,
) -> None:
    resolver = FakeResolver(naptr_records={NAME: naptr}, hosts={NAME: []})
    with pytest.raises(DnsError, match=re.escape(words)):
        await resolve(TrunkAddress.parse(NAME), resolver, transports)


async def test_the_kept_targets_of_a_bare_name_use_the_transports_given(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    targets = TrunkTargets(
        [TrunkConfig(name="carrier", address=NAME)],
        DnsSection(),
        carrier_naptr(),
        rng=random.Random(1),
        on_unresolved=lambda trunk, why: None,
        on_resolved=lambda trunk: None,
        on_change=lambda trunk, resolution: None,
        transports=("tcp", "udp"),
    )
    await nursery.start(targets.serve)
    assert [hop.transport for hop in targets.hops("carrier")] == ["tcp", "tcp", "udp"]


# -- a DNS that keeps failing: logged once, summarized, once more when it answers --------------


async def test_a_dns_that_keeps_failing_is_logged_once_summarized_and_once_more_when_it_answers(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.core.calls.trunk_dns")
    resolver = FakeResolver(hosts={NAME: ["192.0.2.1"]}, ttl=60.0)
    targets = TrunkTargets(
        [TrunkConfig(name="carrier", address=f"udp:{NAME}:5060")],
        DnsSection(retry_interval=10.0, min_ttl=60.0),
        resolver,
        rng=random.Random(1),
        on_unresolved=lambda trunk, why: None,
        on_resolved=lambda trunk: None,
        on_change=lambda trunk, resolution: None,
        wall_clock=lambda: 1.8e9 + trio.current_time(),
    )
    await nursery.start(targets.serve)
    caplog.clear()
    resolver.failing = True
    await trio.sleep(54 + 360)  # the refresh at 54 s, then a retry every 10 s for 6 minutes
    assert resolver.queries > 30
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2, warnings  # one line, one summary: not one per retry
    assert warnings[0].startswith(f"trunk carrier: the DNS of udp:{NAME}:5060 is failing: ")
    assert "keeping its last answer (udp:192.0.2.1:5060)" in warnings[0]
    assert "asked again every 10 s" in warnings[0]
    assert re.search(
        r"still failing: 30 failed resolutions in the last 300(\.\d+)? s, 31 since ", warnings[1]
    )
    assert warnings[1].endswith(f"; the last: {NAME} A: no answer")
    assert targets.hops("carrier") == (TrunkHop("udp", "192.0.2.1", 5060),)  # still the last
    caplog.clear()
    resolver.failing = False
    await trio.sleep(10)
    [answered] = [r for r in caplog.records]
    assert answered.levelno == logging.INFO
    assert re.fullmatch(
        f"trunk carrier: the DNS of udp:{NAME}:5060 answers again, after 3[67] failed "
        f"resolutions in 3[67][0-9.]* s; udp:{NAME}:5060 resolves again \\(unchanged\\)",
        answered.getMessage(),
    ), answered.getMessage()


async def test_a_session_target_that_keeps_failing_is_logged_without_its_uris_password(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.core.calls.trunk_dns")
    uri = f"sip:srs:s3cret@{NAME}:5060;transport=udp"
    address = named_uri_address(uri)
    assert address is not None
    resolver = FakeResolver(hosts={NAME: ["192.0.2.1"]}, failing=True)
    targets = TrunkTargets(
        (),
        DnsSection(retry_interval=10.0),
        resolver,
        rng=random.Random(1),
        on_unresolved=lambda trunk, why: None,
        on_resolved=lambda trunk: None,
        on_change=lambda trunk, resolution: None,
        named={uri: address},
        what="session target",
        wall_clock=lambda: 1.8e9 + trio.current_time(),
    )
    await nursery.start(targets.serve)
    await trio.sleep(310)
    resolver.failing = False
    await trio.sleep(10)
    lines = [r.getMessage() for r in caplog.records]
    shown = f"session target sip:srs:***@{NAME}:5060;transport=udp: the DNS of udp:{NAME}:5060"
    assert [line.partition(" is ")[0].partition(" answers")[0] for line in lines] == [shown] * 3
    assert "no session goes to it until it resolves" in lines[0]
    assert "s3cret" not in caplog.text
