"""Overload: a new INVITE or REGISTER that waited too long to be read gets a stateless 503;
everything else is still served, and requests that did not wait are served again.

The wait is made with the mock clock: messages are queued, then the clock jumps before the
endpoint gets to take them, as if it had been busy for that long.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
import trio.testing

from gateway.core.endpoint import EMERGENCY_PASSES_PER_SECOND
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.sip.message import Request, Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.transport.flows import Flow, FlowKey
from gateway.testing.fake_dns import FakeResolver
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_PASSWORD,
    GW,
    TRUNK,
    build_b2bua,
    eventually,
    start_b2bua,
)

PEER = ("127.0.0.9", 5099)


def request(method: str, n: int, *, to_tag: str = "", credentials: bool = False) -> bytes:
    to = "<sip:+15550123@127.0.0.1:5060>" + (f";tag={to_tag}" if to_tag else "")
    uri = "sip:127.0.0.1:5060" if method == "REGISTER" else "sip:+15550123@127.0.0.1:5060"
    return (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.9:5099;branch=z9hG4bK-overload-{method}-{n}\r\n"
        f"Max-Forwards: 70\r\n"
        f"From: <sip:caller@127.0.0.9>;tag=from{n}\r\n"
        f"To: {to}\r\n"
        f"Call-ID: overload-{n}@127.0.0.9\r\n"
        f"CSeq: 1 {method}\r\n"
        f"Contact: <sip:caller@127.0.0.9:5099>\r\n"
        + (
            'Proxy-Authorization: Digest username="caller", realm="voipgw.test", '
            f'nonce="n{n}", uri="sip:+15550123@127.0.0.1:5060", response="0"\r\n'
            if credentials
            else ""
        )
        + "Content-Length: 0\r\n\r\n"
    ).encode()


class Peer:
    """A flow the test queues messages on directly, and the responses it got, by Call-ID."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.responses: list[Response] = []

        async def send(data: bytes) -> None:
            parsed = parse_message_untrusted(data)
            assert isinstance(parsed, Response)
            self.responses.append(parsed)

        self.flow = Flow(key=FlowKey("udp", GW, PEER), send=send, reliable=False)

    def queue(self, *messages: bytes) -> None:
        for data in messages:
            self.gateway.deliver(data, self.flow)

    def status_of(self, call_id: str) -> list[int]:
        """The final responses for ``call_id`` (retransmissions included), in order."""
        return [r.status for r in self.responses if r.call_id == call_id and r.status >= 200]

    async def finals(self, *numbers: int) -> None:
        """Wait until each of the requests ``numbers`` has a final response."""
        await eventually(lambda: all(self.status_of(f"overload-{n}@127.0.0.9") for n in numbers))


async def test_late_new_invites_and_registers_are_refused_and_the_rest_served(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    endpoint = env.gateway.endpoint
    peer = Peer(env.gateway)
    calls_before = env.calls

    # Queued, then taken 0.35 s later: over the 0.3 s default limit.
    peer.queue(
        request("OPTIONS", 1),
        request("INVITE", 2),
        request("REGISTER", 3),
        request("BYE", 4, to_tag="not-a-dialog"),
        request("INVITE", 5, to_tag="not-a-dialog"),  # a re-INVITE: in a dialog, not new work
    )
    autojump_clock.jump(0.35)
    await peer.finals(1, 2, 3, 4, 5)

    assert endpoint.overload.longest_wait >= 0.35
    assert peer.status_of("overload-1@127.0.0.9") == [200]
    assert peer.status_of("overload-2@127.0.0.9") == [503]
    assert peer.status_of("overload-3@127.0.0.9") == [503]
    assert peer.status_of("overload-4@127.0.0.9") == [481]
    assert peer.status_of("overload-5@127.0.0.9")[0] == 481
    refused = [r for r in peer.responses if r.status == 503]
    assert all(r.reason == "Service Unavailable (overloaded)" for r in refused)
    assert all(r.to.tag for r in refused)  # a final response to an INVITE needs one (§8.2.6.2)
    assert all(r.headers.get("Retry-After") is None for r in refused)
    assert endpoint.statistics.rejected_overload == 2
    # Refused statelessly: no transaction (the OPTIONS has one), no call.
    for method, n, kept in (("OPTIONS", 1, True), ("INVITE", 2, False), ("REGISTER", 3, False)):
        parsed = parse_message_untrusted(request(method, n))
        assert isinstance(parsed, Request)
        assert endpoint.transactions.has_server_transaction(parsed) is kept
    assert env.calls == calls_before

    # A request taken at once is served again (a challenge).
    peer.queue(request("INVITE", 6))
    await peer.finals(6)
    assert peer.status_of("overload-6@127.0.0.9") == [407]
    assert endpoint.statistics.rejected_overload == 2


async def test_a_retransmission_of_a_request_being_served_is_not_refused(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    peer = Peer(env.gateway)
    invite = request("INVITE", 1)
    peer.queue(invite)
    await peer.finals(1)
    assert peer.status_of("overload-1@127.0.0.9") == [407]

    # The 407 was lost; the retransmission waits in an overloaded queue with a new INVITE.
    peer.queue(invite, request("INVITE", 2))
    autojump_clock.jump(0.35)
    await peer.finals(2)
    await eventually(lambda: len(peer.status_of("overload-1@127.0.0.9")) >= 2)
    # The transaction answers its retransmission with the same 407 (RFC 3261 §17.2.1).
    assert peer.status_of("overload-1@127.0.0.9")[:2] == [407, 407]
    assert 503 not in peer.status_of("overload-1@127.0.0.9")
    assert env.gateway.endpoint.statistics.rejected_overload == 1
    assert peer.status_of("overload-2@127.0.0.9") == [503]


async def test_retry_after_when_configured(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, sip={"overload_retry_after": 7})
    peer = Peer(env.gateway)
    peer.queue(request("INVITE", 1))
    autojump_clock.jump(0.35)
    await peer.finals(1)
    refused = peer.responses[0]
    assert refused.status == 503
    assert refused.headers.get("Retry-After") == "7"


async def test_limit_zero_never_refuses(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, sip={"overload_queue_delay": 0})
    peer = Peer(env.gateway)
    peer.queue(request("INVITE", 1), request("REGISTER", 2))
    autojump_clock.jump(2.0)
    await peer.finals(1, 2)
    assert peer.status_of("overload-1@127.0.0.9") == [407]
    assert peer.status_of("overload-2@127.0.0.9") == [401]
    assert env.gateway.endpoint.overload.longest_wait >= 2.0
    assert env.gateway.endpoint.statistics.rejected_overload == 0


async def test_a_wait_within_the_limit_refuses_nothing(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    peer = Peer(env.gateway)
    peer.queue(request("INVITE", 1), request("REGISTER", 2))
    autojump_clock.jump(0.29)  # a pause just under the 0.3 s limit
    await peer.finals(1, 2)
    assert peer.status_of("overload-1@127.0.0.9") == [407]
    assert peer.status_of("overload-2@127.0.0.9") == [401]
    assert env.gateway.endpoint.statistics.rejected_overload == 0


async def test_a_request_with_credentials_gets_until_t1(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    """The second half of a challenged set-up is not thrown away at the first limit (its
    credentials are wrong here: it is answered, not refused, which is the point)."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    peer = Peer(env.gateway)
    peer.queue(request("INVITE", 1, credentials=True), request("INVITE", 2))
    autojump_clock.jump(0.4)  # past the 0.3 s limit, within T1 (0.5 s)
    await peer.finals(1, 2)
    assert 503 not in peer.status_of("overload-1@127.0.0.9")
    assert peer.status_of("overload-2@127.0.0.9") == [503]

    peer.queue(request("INVITE", 3, credentials=True))
    autojump_clock.jump(0.6)  # past T1
    await peer.finals(3)
    assert peer.status_of("overload-3@127.0.0.9") == [503]


def emergency_invite(n: int, number: str = "112") -> bytes:
    return request("INVITE", n).replace(b"sip:+15550123@", f"sip:{number}@".encode())


async def test_a_late_invite_to_an_emergency_number_is_served_within_a_bound(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
) -> None:
    """Overload refuses whoever comes late; an emergency call is served all the same (here the
    account's challenge, as for any INVITE), up to EMERGENCY_PASSES_PER_SECOND, so a flood of
    INVITEs to 112 cannot switch overload control off."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    endpoint = env.gateway.endpoint
    peer = Peer(env.gateway)
    bound = int(EMERGENCY_PASSES_PER_SECOND)
    flood = range(1, bound + 4)
    peer.queue(*(emergency_invite(n) for n in flood), request("INVITE", 100))
    autojump_clock.jump(0.35)
    await peer.finals(*flood, 100)

    statuses = [peer.status_of(f"overload-{n}@127.0.0.9") for n in flood]
    assert statuses[:bound] == [[407]] * bound
    assert statuses[bound:] == [[503]] * 3
    assert peer.status_of("overload-100@127.0.0.9") == [503]  # not an emergency number
    assert endpoint.statistics.emergency_overload_passes == bound
    assert endpoint.statistics.rejected_overload == 4

    # The bucket refills: a second later another late emergency INVITE is served.
    autojump_clock.jump(1.0)
    peer.queue(emergency_invite(200, "911"))
    autojump_clock.jump(0.35)
    await peer.finals(200)
    assert peer.status_of("overload-200@127.0.0.9") == [407]
    assert endpoint.statistics.emergency_overload_passes == bound + 1


async def test_requests_that_came_while_the_gateway_started_are_served_not_refused(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.testing.MockClock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The listeners are bound first and the rest of the start can take seconds: here the
    carrier's name resolving for 2 s (trunks named by DNS are resolved before calls are taken);
    media workers starting take about a second. A phone's REGISTER that came meanwhile waited
    for the start, not behind a backlog: it is served, and once serving the limit holds again.
    Found by ``benchmarks/soak.py --media-workers 2``: its phones' first REGISTERs got 503
    "overloaded" and a WARNING said the gateway was overloaded as it started."""
    resolver = FakeResolver(hosts={"sip.carrier.example": [TRUNK[0]]}, delay=2.0)
    network, gateway = await build_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"address": "udp:sip.carrier.example:5060"},
        dns_resolver=resolver,
    )
    alice = SipAgent(
        network,
        ALICE,
        ids=SeededIds(voipgw_seed + 1),
        user="alice",
        password=ALICE_PASSWORD,
        proxy=GW,
    )
    await nursery.start(alice.serve)
    nursery.start_soon(gateway.serve)
    await eventually(lambda: resolver.queries > 0)  # listening, resolving, not serving yet
    with caplog.at_level(logging.WARNING):
        registered = await alice.register()
    assert registered.status == 200, registered.reason
    assert trio.current_time() >= 2.0  # it did wait for the start
    assert gateway.endpoint.statistics.rejected_overload == 0
    assert "SIP overloaded" not in caplog.text

    # Serving, a wait over the limit is overload again.
    peer = Peer(gateway)
    peer.queue(request("INVITE", 1))
    autojump_clock.jump(0.35)
    await peer.finals(1)
    assert peer.status_of("overload-1@127.0.0.9") == [503]
