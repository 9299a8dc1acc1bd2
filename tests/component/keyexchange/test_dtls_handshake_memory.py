"""DTLS-SRTP handshakes over the in-memory network on trio's virtual clock: seeded loss,
duplication and reordering, retransmission driven only by ``get_timer``/``handle_timer``, and the
handshake timeout against a dead peer. No real time passes (``autojump_clock``)."""

from __future__ import annotations

import datetime
import math

import attrs
import pytest
import trio

from gateway.core.interfaces import KeysReady, NegotiationFailed, SrtpKeys
from gateway.plugins.keyexchange.dtls_certificates import DtlsIdentity, generate_identity
from gateway.plugins.keyexchange.dtls_srtp import (
    HANDSHAKE_TIMEOUT_REASON,
    PROFILES,
    DtlsKeyExchange,
    DtlsNegotiation,
)
from gateway.testing.network import MemoryDatagramSocket, MemoryNetwork

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
IDENTITY_A = generate_identity(now=NOW, max_age=datetime.timedelta(days=30))
IDENTITY_B = generate_identity(now=NOW, max_age=datetime.timedelta(days=30))
OFFERER = ("127.0.0.1", 30000)  # the gateway's media port on one leg ...
ANSWERER = ("127.0.0.1", 40000)  # ... and the peer's
# Seed 9 loses every copy of the server's final flight: see the test written for it below.
LOSSY_SEED = 9
SEEDS = [seed for seed in range(12) if seed != LOSSY_SEED]
IMPAIRMENT = {"drop": 0.2, "duplicate": 0.05, "reorder": 0.3, "delay": (0.01, 0.06)}


@attrs.define
class Outcome:
    keys: SrtpKeys | None = None
    failure: NegotiationFailed | None = None
    at: float | None = None


def exchange(identity: DtlsIdentity) -> DtlsKeyExchange:
    return DtlsKeyExchange(identity=lambda: identity, random_bytes=lambda n: b"\x07" * n)


async def drive(
    negotiation: DtlsNegotiation,
    sock: MemoryDatagramSocket,
    peer: tuple[str, int],
    outcome: Outcome,
    settled: trio.Event,
) -> None:
    """What the core's media task does for one negotiation: send what is due, wait for a
    datagram or the timer, hand over what the engine claims, collect events."""
    while True:
        now = trio.current_time()
        for datagram in negotiation.packets_to_send(now=now):
            await sock.sendto(datagram, peer)
        while (event := negotiation.next_event()) is not None:
            if isinstance(event, KeysReady):
                outcome.keys, outcome.at = event.keys, now
            elif isinstance(event, NegotiationFailed):
                outcome.failure, outcome.at = event, now
            settled.set()
        if outcome.failure is not None:
            return
        deadline = negotiation.get_timer()
        with trio.move_on_at(math.inf if deadline is None else deadline):
            data, _ = await sock.recvfrom()
            if data and negotiation.claims_packet(data[0], data):
                negotiation.receive_packet(data, now=trio.current_time())
            continue
        negotiation.handle_timer(now=trio.current_time())


def negotiations(suite: str) -> tuple[DtlsNegotiation, DtlsNegotiation]:
    offerer = exchange(IDENTITY_A).offer(suites=[suite], secure_signalling=False)
    answerer = exchange(IDENTITY_B).answer(
        offerer.local_sdp_attributes(), suites=[], secure_signalling=False
    )
    assert answerer is not None
    offerer.remote_sdp_attributes(answerer.local_sdp_attributes())
    return offerer, answerer


@pytest.mark.parametrize("seed", SEEDS)
async def test_the_handshake_completes_over_a_lossy_reordering_network(
    seed: int, autojump_clock: trio.abc.Clock
) -> None:
    suite = sorted(PROFILES.values(), key=lambda p: p.name)[seed % len(PROFILES)].suite
    offerer, answerer = negotiations(suite)
    outcomes = Outcome(), Outcome()
    async with MemoryNetwork(seed, **IMPAIRMENT) as net:  # type: ignore[arg-type]
        start = trio.current_time()
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                events = trio.Event(), trio.Event()
                nursery.start_soon(
                    drive, offerer, net.bind(OFFERER), ANSWERER, outcomes[0], events[0]
                )
                nursery.start_soon(
                    drive, answerer, net.bind(ANSWERER), OFFERER, outcomes[1], events[1]
                )
                await events[0].wait()
                await events[1].wait()
                nursery.cancel_scope.cancel()
        stats = net.statistics()
    ours, theirs = outcomes
    assert ours.failure is None and theirs.failure is None, (seed, ours, theirs)
    assert ours.keys is not None and theirs.keys is not None
    assert ours.keys.suite == theirs.keys.suite == suite
    assert ours.keys.local_key == theirs.keys.remote_key
    assert ours.keys.remote_key == theirs.keys.local_key
    assert ours.at is not None and theirs.at is not None
    assert max(ours.at, theirs.at) - start < 20.0  # inside the handshake timeout
    assert stats.sent > 0 and stats.dropped + stats.reordered > 0


async def test_loss_forces_timer_driven_retransmissions(autojump_clock: trio.abc.Clock) -> None:
    # Across the seeds above loss hits the handshake; here the first two datagrams of each side
    # are lost on purpose, so both sides must retransmit on their timers.
    offerer, answerer = negotiations("AEAD_AES_128_GCM")
    outcomes = Outcome(), Outcome()
    async with MemoryNetwork(seed=1, delay=0.02) as net:
        net.set_link(OFFERER, ANSWERER, drop=1.0)
        net.set_link(ANSWERER, OFFERER, drop=1.0)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            events = trio.Event(), trio.Event()
            nursery.start_soon(drive, offerer, net.bind(OFFERER), ANSWERER, outcomes[0], events[0])
            nursery.start_soon(drive, answerer, net.bind(ANSWERER), OFFERER, outcomes[1], events[1])
            await trio.sleep(2.5)  # ClientHello at 0, 1 and (after the link heals) 3 s
            net.clear_link(OFFERER, ANSWERER)
            net.clear_link(ANSWERER, OFFERER)
            await events[0].wait()
            await events[1].wait()
            nursery.cancel_scope.cancel()
    assert outcomes[0].keys is not None and outcomes[1].keys is not None
    assert outcomes[0].keys.local_key == outcomes[1].keys.remote_key
    hello_times = [d.time - start for d in net.capture if d.src == ANSWERER][:3]
    assert hello_times == pytest.approx([0.0, 1.0, 3.0])
    assert answerer.statistics().retransmissions >= 2


async def test_a_dead_peer_hits_the_handshake_timeout(autojump_clock: trio.abc.Clock) -> None:
    _, answerer = negotiations("AES_CM_128_HMAC_SHA1_80")  # nobody drives the offerer
    outcome = Outcome()
    async with MemoryNetwork(seed=3) as net:
        start = trio.current_time()
        await drive(answerer, net.bind(ANSWERER), OFFERER, outcome, trio.Event())
    assert outcome.failure == NegotiationFailed(HANDSHAKE_TIMEOUT_REASON, 488)
    assert outcome.at is not None and outcome.at - start == pytest.approx(20.0)
    assert [d.time - start for d in net.capture] == pytest.approx([0.0, 1.0, 3.0, 7.0, 15.0])
    assert outcome.keys is None and answerer.keys is None


async def test_a_final_flight_lost_every_time_fails_only_the_client(
    autojump_clock: trio.abc.Clock,
) -> None:
    # RFC 6347 §4.2.4: the server's last flight is only resent when the client's retransmission
    # arrives, and the client retransmits at 1, 2, 4, 8 s. With this seed all three resends are
    # lost: the server has keys, the client times out, and the core must end the call.
    offerer, answerer = negotiations("AEAD_AES_256_GCM")
    outcomes = Outcome(), Outcome()
    async with MemoryNetwork(LOSSY_SEED, **IMPAIRMENT) as net:  # type: ignore[arg-type]
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            events = trio.Event(), trio.Event()
            nursery.start_soon(drive, offerer, net.bind(OFFERER), ANSWERER, outcomes[0], events[0])
            nursery.start_soon(drive, answerer, net.bind(ANSWERER), OFFERER, outcomes[1], events[1])
            await events[0].wait()
            await events[1].wait()
            nursery.cancel_scope.cancel()
    assert outcomes[0].keys is not None and outcomes[0].failure is None
    assert outcomes[1].failure == NegotiationFailed(HANDSHAKE_TIMEOUT_REASON, 488)
    assert outcomes[1].at is not None and outcomes[1].at - start == pytest.approx(20.0)
    assert offerer.statistics().final_flight_resends >= 2
