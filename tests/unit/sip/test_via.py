"""Via helpers: branches (RFC 3261 §8.1.1.7), received/rport stamping (§18.2.1, RFC 3581) and
response routing (§18.2.2, RFC 3581 §4)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.sip.errors import LocalSipError
from gateway.core.sip.grammar import parse_via_untrusted
from gateway.core.sip.headers import Via
from gateway.core.sip.via import (
    Hop,
    ResponseTarget,
    _plain,
    _port_or_default,
    default_port,
    has_rfc3261_branch,
    make_via,
    new_branch,
    response_target,
    stamp_received,
    stamp_request,
)
from tests.unit.sip.sip_builders import request

SOURCE = Hop("UDP", "198.51.100.7", 41000)


def via(text: str) -> Via:
    return parse_via_untrusted(text)


# --- branches -----------------------------------------------------------------------------------


def test_new_branch_uses_the_injected_source() -> None:
    ids = (f"id{n}" for n in itertools.count())
    assert new_branch(lambda: next(ids)) == "z9hG4bKid0"
    assert new_branch(lambda: next(ids)) == "z9hG4bKid1"


@pytest.mark.parametrize("bad", ["", "a b", "x;y", "tab\t"])
def test_new_branch_refuses_non_tokens(bad: str) -> None:
    with pytest.raises(LocalSipError):
        new_branch(lambda: bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SIP/2.0/UDP h;branch=z9hG4bK776asdhds", True),
        ("SIP/2.0/UDP h;branch=z9hG4bK", False),  # RFC 4475 §3.2.1 badbranch
        ("SIP/2.0/UDP h;branch=776asdhds", False),  # RFC 2543
        ("SIP/2.0/UDP h", False),
    ],
)
def test_rfc3261_branch(text: str, expected: bool) -> None:
    assert has_rfc3261_branch(via(text)) is expected


def test_make_via_asks_for_rport() -> None:
    own = make_via("tcp", "gw.example.net", 5060, branch="z9hG4bKx")
    assert str(own) == "SIP/2.0/TCP gw.example.net:5060;branch=z9hG4bKx;rport"
    assert str(make_via("UDP", "[2001:db8::1]", None, branch="z9hG4bKy", rport=False)) == (
        "SIP/2.0/UDP [2001:db8::1];branch=z9hG4bKy"
    )


# --- stamping on receipt ------------------------------------------------------------------------


def test_no_received_when_sent_by_is_the_source_address() -> None:
    stamped = stamp_received(via("SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKa"), SOURCE)
    assert stamped.received is None
    assert str(stamped) == "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKa"


def test_received_added_when_the_address_differs() -> None:
    stamped = stamp_received(via("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa"), SOURCE)
    assert stamped.received == "198.51.100.7"
    assert stamped.rport is None and not stamped.has_rport


def test_received_added_for_a_domain_name() -> None:
    # §18.2.1: a name always gets received=, even if it would resolve to the source.
    stamped = stamp_received(via("SIP/2.0/UDP pc33.example.com;branch=z9hG4bKa"), SOURCE)
    assert stamped.received == "198.51.100.7"


def test_rport_filled_and_received_always_added() -> None:
    # RFC 3581 §4: rport gets the source port, and received is added even when equal.
    stamped = stamp_received(via("SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKa;rport"), SOURCE)
    assert stamped.rport == 41000
    assert stamped.received == "198.51.100.7"
    assert str(stamped) == (
        "SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bKa;rport=41000;received=198.51.100.7"
    )


def test_peer_supplied_received_and_rport_values_are_overwritten() -> None:
    forged = via("SIP/2.0/UDP 10.0.0.5;received=203.0.113.9;rport=9;branch=z9hG4bKa")
    stamped = stamp_received(forged, SOURCE)
    assert stamped.received == "198.51.100.7"
    assert stamped.rport == 41000
    # A received= the sender wrote about itself is dropped when not needed.
    honest = via("SIP/2.0/UDP 198.51.100.7;received=203.0.113.9;branch=z9hG4bKa")
    assert stamp_received(honest, SOURCE).received is None


def test_ipv6_addresses_compare_by_value() -> None:
    source = Hop("UDP", "2001:db8::9", 5060)
    same = stamp_received(via("SIP/2.0/UDP [2001:0db8:0:0:0:0:0:9]:5060;branch=z9hG4bKa"), source)
    assert same.received is None
    other = stamp_received(via("SIP/2.0/UDP [2001:db8::1];branch=z9hG4bKa;rport"), source)
    assert other.received == "2001:db8::9"  # RFC 3261 §25.1: no brackets in received
    assert parse_via_untrusted(str(other)).received == "2001:db8::9"


def test_stamp_request_touches_only_the_top_via() -> None:
    req = request(sent_by="10.0.0.5:5060", extra=("Via: SIP/2.0/UDP proxy.example.org",))
    stamped = stamp_request(req, SOURCE)
    vias = stamped.headers.get_all("Via")
    assert len(vias) == 2
    assert stamped.top_via.received == "198.51.100.7"
    assert vias[1] == req.headers.get_all("Via")[1]
    assert stamped.headers.names() == req.headers.names()  # order kept


# --- response routing ---------------------------------------------------------------------------


def test_reliable_transport_reuses_the_connection() -> None:
    target = response_target(via("SIP/2.0/TCP pc33.example.com:5070;received=198.51.100.7"))
    assert target == ResponseTarget("TCP", "198.51.100.7", 5070, reuse_connection=True)


def test_reliable_fallback_defaults_to_the_transport_port() -> None:
    target = response_target(via("SIP/2.0/TLS 198.51.100.7;branch=z9hG4bKa"))
    assert target == ResponseTarget("TLS", "198.51.100.7", 5061, reuse_connection=True)


def test_maddr_wins_on_unreliable_transport() -> None:
    target = response_target(via("SIP/2.0/UDP h.example.com:5080;maddr=239.255.255.1;ttl=1"))
    assert target == ResponseTarget("UDP", "239.255.255.1", 5080, reuse_connection=False)
    target = response_target(via("SIP/2.0/UDP h.example.com;maddr=239.255.255.1"))
    assert target.port == 5060


def test_received_and_rport_send_back_to_the_nat_binding() -> None:
    stamped = stamp_received(via("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport"), SOURCE)
    assert response_target(stamped) == ResponseTarget(
        "UDP", "198.51.100.7", 41000, reuse_connection=False
    )


def test_received_without_rport_uses_the_sent_by_port() -> None:
    stamped = stamp_received(via("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bKa"), SOURCE)
    assert response_target(stamped) == ResponseTarget("UDP", "198.51.100.7", 5070, False)
    no_port = stamp_received(via("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKa"), SOURCE)
    assert response_target(no_port).port == 5060


def test_sent_by_when_nothing_else() -> None:
    assert response_target(via("SIP/2.0/UDP 198.51.100.7:5062")) == ResponseTarget(
        "UDP", "198.51.100.7", 5062, False
    )
    assert response_target(via("SIP/2.0/UDP [2001:db8::9]")) == ResponseTarget(
        "UDP", "2001:db8::9", 5060, False
    )
    # A name without port: RFC 3263 §5 (SRV) is the caller's job.
    assert response_target(via("SIP/2.0/UDP pc33.example.com")).port is None


def _target_read_param_by_param(via: Via) -> ResponseTarget:
    """response_target as it was written before its one-pass read of the parameters: each of
    received, rport and maddr found by its own scan (Via's properties)."""
    transport = via.transport.upper()
    received = via.received
    if transport != "UDP":
        host = _plain(received if received is not None else via.host)
        return ResponseTarget(transport, host, _port_or_default(via, host), reuse_connection=True)
    if via.maddr is not None:
        return ResponseTarget(transport, _plain(via.maddr), via.port or 5060, False)
    if received is not None:
        port = via.rport if via.rport is not None else via.port or default_port(transport)
        return ResponseTarget(transport, _plain(received), port, reuse_connection=False)
    host = _plain(via.host)
    return ResponseTarget(transport, host, _port_or_default(via, host), reuse_connection=False)


_PARAM_NAMES = st.sampled_from(
    ["received", "RECEIVED", "Received", "rport", "RPort", "maddr", "MADDR", "branch", "ttl", "x"]
)
_PARAM_VALUES = st.sampled_from(
    [None, "192.0.2.9", "2001:db8::5", "5071", "65535", "0", "12a", "", "239.255.255.1"]
)


@given(
    transport=st.sampled_from(["UDP", "udp", "TCP", "TLS", "WS"]),
    host=st.sampled_from(["10.0.0.5", "[2001:db8::1]", "pc33.example.com"]),
    port=st.sampled_from([None, 5060, 5070]),
    params=st.lists(st.tuples(_PARAM_NAMES, _PARAM_VALUES), max_size=6),
)
def test_response_target_reads_the_first_of_each_parameter_case_insensitively(
    transport: str, host: str, port: int | None, params: list[tuple[str, str | None]]
) -> None:
    # RFC 3261 §7.3.1 and §20.42: parameter names compare case-insensitively; the first of a
    # repeated name counts, a flag (no value) counts as absent, an rport that is not digits too.
    # The one-pass read of received/rport/maddr must target what reading each did.
    value = Via(transport, host, port, tuple(params))
    assert response_target(value) == _target_read_param_by_param(value)


def test_hop_transport_is_upper_case_and_reliability() -> None:
    assert Hop("udp", "192.0.2.1", 5060).transport == "UDP"
    assert not Hop("udp", "192.0.2.1", 5060).reliable
    assert Hop("tls", "192.0.2.1", 5061).reliable
    assert Hop("WSS", "192.0.2.1", 443).reliable


def test_default_ports() -> None:
    assert [default_port(t) for t in ("udp", "TCP", "TLS", "WS", "WSS", "XYZ")] == [
        5060,
        5060,
        5061,
        80,
        443,
        5060,
    ]
