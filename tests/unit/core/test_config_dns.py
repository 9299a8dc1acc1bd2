"""``[dns]`` and trunk addresses that name a host (RFC 3263): parsing, and errors that name
the file, the table and the key."""

from __future__ import annotations

import pytest

from gateway.core.config import ConfigError, TrunkAddress, dns_server, from_mapping


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # IP addresses parse as ever.
        ("udp:192.0.2.10:5060", ("udp", "192.0.2.10", 5060, False)),
        ("TLS:[2001:db8::1]:5061", ("tls", "2001:db8::1", 5061, False)),
        # A name without a port: SRV; with one: A/AAAA only (RFC 3263 §4.2). Lower case, no dot.
        ("udp:sip.carrier.example", ("udp", "sip.carrier.example", None, True)),
        ("tls:SIP.Carrier.Example.", ("tls", "sip.carrier.example", None, True)),
        ("tcp:sip-1.carrier.example:5080", ("tcp", "sip-1.carrier.example", 5080, True)),
        # No transport and no port: the DNS chooses (NAPTR, RFC 3263 §4.1).
        ("sip.carrier.example", ("", "sip.carrier.example", None, True)),
        ("SIP.Carrier.Example.", ("", "sip.carrier.example", None, True)),
    ],
)
def test_trunk_addresses(text: str, expected: tuple[object, ...]) -> None:
    parsed = TrunkAddress.parse(text)
    assert (parsed.transport, parsed.host, parsed.port, parsed.is_name) == expected


def test_only_a_bare_name_is_looked_up_by_naptr_and_prints_as_written() -> None:
    naptr = TrunkAddress.parse("sip.carrier.example")
    assert naptr.by_naptr and str(naptr) == "sip.carrier.example"
    for text in ("udp:sip.carrier.example", "tcp:sip.carrier.example:5080", "udp:192.0.2.1:5"):
        parsed = TrunkAddress.parse(text)
        assert not parsed.by_naptr and str(parsed) == text


@pytest.mark.parametrize(
    ("text", "words"),
    [
        # A port without a transport: say which, or drop the port for NAPTR.
        ("sip.carrier.example:5080", "name the transport (udp:, tcp: or tls:)"),
        ("sip.carrier.example:5080", "leave out the port"),
        # One label is no name (the resolver's search list would decide); an IP address
        # without a transport fails as before.
        ("carrier", "TRANSPORT:HOST:PORT"),
        ("192.0.2.1:5060", "TRANSPORT:HOST:PORT"),
        ("192.0.2.1", "TRANSPORT:HOST:PORT"),
    ],
)
def test_addresses_without_a_transport_that_are_refused(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({"trunks": [{"name": "c", "address": text}]}, file="gw.toml")
    assert (info.value.table, info.value.key) == ("trunks.c", "address")
    assert words in str(info.value)


def test_a_trunk_named_for_naptr_is_by_name_with_no_sources() -> None:
    config = from_mapping({"trunks": [{"name": "c", "address": "sip.carrier.example"}]}, file="x")
    (trunk,) = config.trunks
    assert trunk.by_name and trunk.address_parts.by_naptr and trunk.sources == ()


def test_an_ip_trunk_keeps_its_address_spec() -> None:
    config = from_mapping(
        {"trunks": [{"name": "c", "address": "udp:192.0.2.10:5060"}]}, file="gw.toml"
    )
    (trunk,) = config.trunks
    assert str(trunk.address_spec) == "udp:192.0.2.10:5060"
    assert trunk.sources == ("192.0.2.10",) and not trunk.by_name


def test_a_named_trunk_has_no_default_sources_in_its_config() -> None:
    config = from_mapping(
        {"trunks": [{"name": "c", "address": "udp:sip.carrier.example"}]}, file="gw.toml"
    )
    (trunk,) = config.trunks
    assert trunk.by_name and trunk.sources == ()


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"servers": ["ns.example"]}, "servers", "IP address"),
        ({"servers": ["127.0.0.1:0"]}, "servers", "port"),
        ({"timeout": 0}, "timeout", "at least 0.0001"),
        # Every resolution failed at once: a trunk named by DNS was never reached.
        ({"timeout": 1e-9}, "timeout", "at least 0.0001 (a resolution is two to three queries"),
        ({"min_ttl": 0}, "min_ttl", "1 s or more"),
        ({"min_ttl": 100, "max_ttl": 50}, "min_ttl", "max_ttl"),
        ({"max_ttl": 100000}, "max_ttl", "86400"),
        ({"retry_interval": 0}, "retry_interval", "1 to 3600"),
        ({"max_targets": 0}, "max_targets", "1 to 16"),
        ({"nameservers": []}, "nameservers", "unknown key"),
    ],
)
def test_dns_errors_name_file_table_and_key(table: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_mapping({"dns": table}, file="gw.toml")
    assert (info.value.file, info.value.table, info.value.key) == ("gw.toml", "dns", key)
    assert words in str(info.value)


def test_dns_servers() -> None:
    assert dns_server("127.0.0.1") == ("127.0.0.1", 53)
    assert dns_server("127.0.0.1:5353") == ("127.0.0.1", 5353)
    assert dns_server("[::1]:5353") == ("::1", 5353)
    assert dns_server("::1") == ("::1", 53)
    config = from_mapping({"dns": {"servers": ["127.0.0.1:5353"]}}, file="gw.toml")
    assert config.dns.servers == ("127.0.0.1:5353",)
