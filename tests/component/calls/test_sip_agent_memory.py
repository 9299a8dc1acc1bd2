"""The scripted SipAgent (gateway.testing.sip_agent) against itself, without a gateway: the
behaviour the B2BUA tests rely on (2xx retransmission until ACK, re-ACK of retransmitted 2xx,
CANCEL, timeouts, digest answers)."""

from __future__ import annotations

import pytest
import trio

from gateway.core.auth.algorithms import DigestAlgorithm, compute_ha1
from gateway.core.auth.client import parse_challenge_untrusted
from gateway.core.auth.digest import Authenticated, AuthKind, DigestAuthenticator, DigestConfig
from gateway.core.ids import SeededIds
from gateway.core.sip.dialog import DialogState
from gateway.core.sip.message import make_response
from gateway.testing.network import Address, MemoryNetwork
from gateway.testing.sip_agent import AutoAnswer, SipAgent

A: Address = ("127.0.0.10", 5060)
B: Address = ("127.0.0.11", 5060)
NOWHERE: Address = ("127.0.0.99", 5060)
URI_B = "sip:bob@127.0.0.11:5060"


async def test_a_lost_ack_is_repaired_by_the_next_2xx_retransmission(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    network = MemoryNetwork(1, delay=0.01)
    await nursery.start(network.serve)
    alice = SipAgent(network, A, ids=SeededIds(1), user="alice")
    bob = SipAgent(network, B, ids=SeededIds(2), user="bob", auto=None)
    await nursery.start(alice.serve)
    await nursery.start(bob.serve)

    call = await alice.invite(URI_B, destination=B)
    incoming = await bob.next_call()
    await incoming.ring()
    network.set_link(A, B, drop=1.0)
    answered_at = trio.current_time()
    await incoming.answer()
    assert (await call.final()).status == 200
    await trio.sleep(0.1)
    network.clear_link(A, B)
    assert bob.awaiting_ack != []

    ack = await bob.next_request("ACK")
    # Bob's 2xx goes again at T1 = 0.5 s and alice ACKs it again, with the same ACK.
    assert 0.5 < ack.at - answered_at < 0.6
    acks = [d.data for d in network.capture if d.src == A and d.data.startswith(b"ACK ")]
    assert len(acks) == 2 and acks[0] == acks[1]
    assert bob.awaiting_ack == [] and bob.never_acked == []

    assert (await incoming.bye()).status == 200
    assert (await alice.next_request("BYE")).request.call_id == call.call_id
    assert call.dialog is not None and call.dialog.state is DialogState.TERMINATED


async def test_cancel_is_answered_200_and_the_invite_487(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    network = MemoryNetwork(2, delay=0.01)
    await nursery.start(network.serve)
    alice = SipAgent(network, A, ids=SeededIds(1), user="alice")
    bob = SipAgent(network, B, ids=SeededIds(2), user="bob", auto=AutoAnswer(status=None))
    await nursery.start(alice.serve)
    await nursery.start(bob.serve)

    call = await alice.invite(URI_B, destination=B)
    assert call.exchange is not None
    await call.exchange.wait_for(lambda r: r.status == 180)
    cancel = await call.cancel()
    assert (await cancel.final()).status == 200
    assert (await call.final()).status == 487
    assert bob.calls[0].answered == 487
    assert call.dialog is None


async def test_an_invite_to_nobody_times_out_with_timer_b(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    network = MemoryNetwork(3)
    await nursery.start(network.serve)
    alice = SipAgent(network, A, ids=SeededIds(1), user="alice")
    await nursery.start(alice.serve)
    started = trio.current_time()
    call = await alice.invite("sip:nobody@127.0.0.99:5060", destination=NOWHERE)
    final = await call.final()
    assert final.status == 408
    assert call.exchange is not None and call.exchange.timed_out
    assert trio.current_time() - started == pytest.approx(32.0)
    assert network.statistics().unreachable == 7  # Timer A: 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5


async def test_the_digest_answer_verifies_with_the_gateway_authenticator() -> None:
    authenticator = DigestAuthenticator(
        DigestConfig(realm="example.test"), secret=b"k" * 32, entropy=lambda n: b"e" * n
    )
    alice = SipAgent(
        MemoryNetwork(4), A, ids=SeededIds(1), user="alice", password="s3cret", proxy=B
    )
    invite = alice.new_request("INVITE", "sip:+15551234@127.0.0.11:5060")
    challenge = authenticator.challenge(AuthKind.PROXY, now=100.0)
    parsed = parse_challenge_untrusted(challenge.challenges[0])
    assert parsed is not None
    assert parsed.realm == "example.test" and parsed.algorithm.value == "SHA-256"

    answered = alice.authorize(
        invite, make_response(invite, 407, extra=challenge.response_headers())
    )
    outcome = authenticator.authenticate(
        answered.headers.get_all("Proxy-Authorization"),
        kind=AuthKind.PROXY,
        method="INVITE",
        request_uri=str(answered.uri),
        now=101.0,
        lookup=lambda user, realm, algorithm: compute_ha1(algorithm, user, realm, "s3cret"),
    )
    assert outcome == Authenticated("alice", "example.test", DigestAlgorithm.SHA_256, "auth")
