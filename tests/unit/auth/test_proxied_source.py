"""``[gateway] auth_proxies``: a failed authentication relayed by a listed edge proxy counts
against the address the proxy received the request from (its Via below the proxy's), so one
phone's wrong password does not block every phone behind the proxy; nobody else's Vias are
believed."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from gateway.core.auth.client import authorize
from gateway.core.auth.digest import AuthKind
from gateway.core.auth.failures import FailurePolicy
from gateway.core.auth.proxied_source import AuthProxies, RelayedHop, proxied_source, relayed_hops
from gateway.core.registration import RegistrationService
from gateway.core.sip.message import Request, Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import Flow, FlowKey

PROXY = ("192.0.2.1", 5060)
PHONE = "198.51.100.7"
OTHER_PHONE = "198.51.100.8"


def register(*vias: str, cseq: int = 1) -> Request:
    """A REGISTER with these Via values, top first."""
    lines = [
        "REGISTER sip:127.0.0.1:5060 SIP/2.0",
        *(f"Via: {via}" for via in vias),
        "Max-Forwards: 69",
        "From: <sip:1000@127.0.0.1:5060>;tag=f1",
        "To: <sip:1000@127.0.0.1:5060>",
        f"Call-ID: reg-{len(vias)}-{cseq}@test",
        f"CSeq: {cseq} REGISTER",
        "Contact: <sip:1000@198.51.100.7:5060>",
    ]
    message = parse_message_untrusted(
        ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()
    )
    assert isinstance(message, Request)
    return message


PROXY_VIA = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKp1"


@pytest.mark.parametrize(
    ("below", "expected"),
    [
        # The proxy recorded where it came from (RFC 3261 §18.2.1, RFC 3581 §4).
        (f"SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;received={PHONE};rport=40001", (PHONE, 40001)),
        (f"SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bKa;received={PHONE}", (PHONE, 5062)),
        (f"SIP/2.0/TLS 10.0.0.5;branch=z9hG4bKa;received={PHONE}", (PHONE, 5061)),
        # Its sent-by was its source: nothing to record.
        (f"SIP/2.0/UDP {PHONE}:5070;branch=z9hG4bKa", (PHONE, 5070)),
        ("SIP/2.0/UDP [2001:db8::7]:5060;branch=z9hG4bKa", ("2001:db8::7", 5060)),
        # A host name the proxy did not resolve into received: the proxy is all we know.
        ("SIP/2.0/UDP phone.example;branch=z9hG4bKa", PROXY),
    ],
)
def test_a_listed_proxys_request_counts_against_the_address_below_it(
    below: str, expected: tuple[str, int]
) -> None:
    proxies = AuthProxies(["192.0.2.0/28"])
    assert proxied_source(register(PROXY_VIA, below), PROXY, proxies) == expected


def test_nobody_elses_vias_are_believed() -> None:
    below = f"SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;received={PHONE};rport=40001"
    request = register(PROXY_VIA, below)
    assert proxied_source(request, ("203.0.113.9", 5060), AuthProxies(["192.0.2.1"])) == (
        "203.0.113.9",
        5060,
    )
    assert proxied_source(request, PROXY, AuthProxies()) == PROXY  # none listed: as before


def test_a_proxys_own_request_counts_against_the_proxy() -> None:
    assert proxied_source(register(PROXY_VIA), PROXY, AuthProxies(["192.0.2.1"])) == PROXY


def test_a_chain_of_listed_proxies_is_walked_down_to_the_phone() -> None:
    # A load balancer (192.0.2.1) in front of an edge (192.0.2.2) in front of the phone.
    edge = "SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKe;received=192.0.2.2"
    phone = f"SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;received={PHONE};rport=40001"
    request = register(PROXY_VIA, edge, phone)
    assert proxied_source(request, PROXY, AuthProxies(["192.0.2.1", "192.0.2.2"])) == (
        PHONE,
        40001,
    )
    # The edge not listed: its Via is as far as the balancer's word goes.
    assert proxied_source(request, PROXY, AuthProxies(["192.0.2.1"])) == ("192.0.2.2", 5060)


def test_the_hops_below_listed_proxies_say_each_ones_transport_nearest_first() -> None:
    # A phone sent over TLS to the edge (192.0.2.2), which sent over UDP to the balancer
    # (192.0.2.1), which sent to us: what each Via's sent-protocol says (RFC 3261 §18.1.1).
    edge = "SIP/2.0/UDP 192.0.2.2:5060;branch=z9hG4bKe"
    phone = f"SIP/2.0/TLS 10.0.0.5:5061;branch=z9hG4bKa;received={PHONE};rport=40001"
    request = register(PROXY_VIA, edge, phone)
    hops = relayed_hops(request, PROXY, AuthProxies(["192.0.2.1", "192.0.2.2"]))
    assert hops == (
        RelayedHop(PROXY, "udp", ("192.0.2.2", 5060)),
        RelayedHop(("192.0.2.2", 5060), "tls", (PHONE, 40001)),
    )
    assert [hop.record() for hop in hops] == [
        {"proxy": "192.0.2.1:5060", "transport": "udp", "from": "192.0.2.2:5060"},
        {"proxy": "192.0.2.2:5060", "transport": "tls", "from": f"{PHONE}:40001"},
    ]
    # Only the listed proxies' word is taken, and a request straight from its sender has none.
    assert relayed_hops(request, PROXY, AuthProxies(["192.0.2.1"])) == hops[:1]
    assert relayed_hops(request, ("203.0.113.9", 5060), AuthProxies(["192.0.2.1"])) == ()
    assert relayed_hops(request, PROXY, AuthProxies()) == ()
    assert relayed_hops(register(PROXY_VIA), PROXY, AuthProxies(["192.0.2.1"])) == ()


def test_proxies_match_by_network_and_by_a_dual_stack_sockets_ipv4_peer() -> None:
    proxies = AuthProxies(["192.0.2.0/28", "2001:db8:1::/64"])
    assert "192.0.2.14" in proxies and "192.0.2.16" not in proxies
    assert "::ffff:192.0.2.3" in proxies and "2001:db8:1::99" in proxies
    assert "2001:db8:2::1" not in proxies and "proxy.example" not in proxies
    with pytest.raises(ValueError):
        AuthProxies(["192.0.2.1/24"])  # host bits set: refused, not widened


async def _send(data: bytes) -> None:
    raise AssertionError("nothing is sent")


def _from_proxy() -> Flow:
    return Flow(FlowKey("udp", ("127.0.0.1", 5060), PROXY), _send, reliable=False)


def _service(tmp_path: Path, proxies: AuthProxies) -> RegistrationService:
    store = SqliteStore.open(tmp_path / "state")
    store.accounts_add("1000", "secret1000", "voipgw.local")
    return RegistrationService(
        store,
        realm="voipgw.local",
        domains=frozenset({"127.0.0.1:5060"}),
        new_tag=lambda: "t",
        clock=lambda: 1000.0,
        failure_policy=FailurePolicy(max_failures=3, window=60.0),
        auth_proxies=proxies,
    )


def _phone_via(address: str) -> str:
    return f"SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bK{address};received={address};rport=5060"


@pytest.mark.parametrize("listed", [True, False])
def test_one_phones_wrong_password_through_the_proxy_blocks_that_phone_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, listed: bool
) -> None:
    caplog.set_level(logging.WARNING, "gateway.core.registration")
    service = _service(tmp_path, AuthProxies([PROXY[0]] if listed else []))
    guess = register(PROXY_VIA, _phone_via(PHONE))
    challenge = service.authenticate(guess, _from_proxy(), AuthKind.WWW)
    assert isinstance(challenge, Response) and challenge.status == 401
    wrong = authorize(guess, challenge, username="1000", password="guess", cnonce="c1")
    assert wrong is not None
    for _ in range(3):
        answer = service.authenticate(wrong, _from_proxy(), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 403
    # Another phone behind the same proxy.
    other = service.authenticate(
        register(PROXY_VIA, _phone_via(OTHER_PHONE)), _from_proxy(), AuthKind.WWW
    )
    assert isinstance(other, Response)
    lines = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    if listed:
        assert other.status == 401  # challenged as ever, not refused
        assert lines[-1] == (
            f"REGISTER from {PHONE}:5060: authentication failed for user '1000' "
            "(source now blocked)"
        )
    else:  # as before the key: the proxy's address, every phone's, is blocked
        assert other.status == 403
        assert lines[-1].startswith(f"REGISTER from {PROXY[0]}:{PROXY[1]}: ")
