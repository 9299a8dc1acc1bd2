"""The gateway's side of the media tests: relays, worker pools and the streams wired to the
phones of phone_sockets.py, made for each test module's own port blocks (tests/port_blocks.py's
``ModuleBlock``, taken when the module's first test runs, given back after its last), so two
modules never share a port:

- :func:`relay_fixture`: ``relay``, an in-process relay serving in the test's nursery, checked
  to have freed every port;
- :func:`in_process_fixtures`: that ``relay``, ``stream`` (one stream on it) and ``phones``
  (two :class:`~tests.integration.media.phone_sockets.Phone` on port pairs of their own);
- :func:`make_phone_fixture`: ``make_phone``, which makes a
  :class:`~tests.integration.media.phone_sockets.PlainPhone` on a port pair of its own;
- :func:`bridge`: key a stream's legs and point them at two phones;
- :func:`worker_pool_fixture`: ``pool``, two media worker processes, checked to be running
  when the test starts and gone after it; :func:`connected` points a worker stream at two
  :class:`~tests.integration.media.phone_sockets.EphemeralPhone`;
- :data:`SUITES`: the (A leg, B leg) SRTP suites the relay tests run each case with.

A module takes the fixtures as module attributes, where pytest finds them:
``relay, stream, phones = in_process_fixtures(RELAY_PORTS, PHONE_PORTS)``.

Helpers only: no test is collected from this module.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trio

from gateway.core.config import PortRange
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.ports import PortAllocator, PortPair
from gateway.core.media.relay import MediaRelay, MediaStream, Transforms
from gateway.core.media.remote_relay import RemoteStream, WorkerPool
from gateway.core.media.srtp import SrtpSession
from tests.integration.media.phone_sockets import (
    ADDRESS,
    EphemeralPhone,
    Phone,
    PlainPhone,
    master_key,
)
from tests.port_blocks import ModuleBlock

Fixture = Callable[..., Any]
# A module's block (tests/port_blocks.py), taken by the fixture when a test of the module runs.
Ports = ModuleBlock[PortRange]

#: (a_suite, b_suite) for ``pytest.mark.parametrize``: plain RTP (None) or an SRTP suite on
#: each leg, so a per-packet rewrite is checked before protect and after unprotect.
SUITES = [
    pytest.param(None, None, id="rtp-rtp"),
    pytest.param("AES_CM_128_HMAC_SHA1_80", None, id="srtp-rtp"),
    pytest.param(None, "AES_CM_128_HMAC_SHA1_80", id="rtp-srtp"),
    pytest.param("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM", id="srtp-srtp"),
]

#: A worker stream's leg B keys: the suite, what the relay protects towards phone B with, what
#: phone B protects with.
SUITE = "AES_CM_128_HMAC_SHA1_80"
GATEWAY_KEY_TO_B = bytes(range(30))
PHONE_B_KEY = bytes(range(50, 80))


def relay_fixture(relay_ports: Ports) -> Fixture:
    """``relay`` on these ports, serving in the test's nursery; closed after the test, with
    every port back in its allocator (checked)."""

    @pytest.fixture
    async def relay(nursery: trio.Nursery) -> AsyncIterator[MediaRelay]:
        relay = MediaRelay(PortAllocator(ADDRESS, relay_ports.get()))
        await nursery.start(relay.serve)
        yield relay
        relay.close()
        assert relay.allocator.in_use == 0

    return relay


def in_process_fixtures(relay_ports: Ports, phone_ports: Ports) -> tuple[Fixture, Fixture, Fixture]:
    """``relay``, ``stream`` and ``phones`` on these ports."""

    @pytest.fixture
    def stream(relay: MediaRelay) -> Iterator[MediaStream]:
        with relay.open_stream() as stream:
            yield stream

    @pytest.fixture
    def phones() -> Iterator[tuple[Phone, Phone]]:
        allocator = PortAllocator(ADDRESS, phone_ports.get())
        pairs = [allocator.allocate(), allocator.allocate()]
        yield Phone(pairs[0]), Phone(pairs[1])
        for pair in pairs:
            pair.close()

    return relay_fixture(relay_ports), stream, phones


def make_phone_fixture(phone_ports: Ports) -> Fixture:
    """``make_phone``: a factory of :class:`~tests.integration.media.phone_sockets.PlainPhone`
    on port pairs of ``phone_ports``, closed after the test."""

    @pytest.fixture
    def make_phone() -> Iterator[Callable[[], PlainPhone]]:
        allocator = PortAllocator(ADDRESS, phone_ports.get())
        pairs: list[PortPair] = []

        def make() -> PlainPhone:
            pairs.append(allocator.allocate())
            return PlainPhone(pairs[-1])

        yield make
        for pair in pairs:
            pair.close()

    return make_phone


def bridge(
    stream: MediaStream,
    alice: Phone,
    bob: Phone,
    *,
    a_suite: str | None,
    b_suite: str | None,
) -> tuple[SrtpSession | None, SrtpSession | None]:
    """Key each leg independently (as SDES would) and wire the relay's transforms: what arrives
    from a leg is unprotected with that leg's session, what leaves to a leg is protected with
    that leg's session (ARCHITECTURE.md "Media path")."""
    sessions: list[SrtpSession | None] = []
    for seed, phone, suite in ((1, alice, a_suite), (3, bob, b_suite)):
        if suite is None:
            sessions.append(None)
            continue
        gateway_key, phone_key = master_key(suite, seed), master_key(suite, seed + 1)
        phone.use_srtp(suite, key=phone_key, peer_key=gateway_key)
        sessions.append(SrtpSession(SrtpKeys(suite, local_key=gateway_key, remote_key=phone_key)))
    leg_a, leg_b = sessions

    def transforms(inbound: SrtpSession | None, outbound: SrtpSession | None) -> Transforms:
        return Transforms(
            rtp_in=inbound.unprotect_rtp if inbound else None,
            rtcp_in=inbound.unprotect_rtcp if inbound else None,
            rtp_out=outbound.protect_rtp if outbound else None,
            rtcp_out=outbound.protect_rtcp if outbound else None,
        )

    stream.a_to_b.transforms = transforms(leg_a, leg_b)
    stream.b_to_a.transforms = transforms(leg_b, leg_a)
    stream.a.set_remote(alice.rtp_address)
    stream.b.set_remote(bob.rtp_address)
    return leg_a, leg_b


class AudioSink:
    """A recorder's sink: RTP only."""

    def __init__(self) -> None:
        self.packets: list[bytes] = []

    def packet(self, stream_id: str, direction: str, rtp: bytes, *, now: float) -> None:
        self.packets.append(rtp)

    async def run(self) -> None:
        pass

    def close(self) -> None:
        pass


class FaxSink(AudioSink):
    """An interception's sink: takes datagrams too."""

    covert = True

    def __init__(self) -> None:
        super().__init__()
        self.datagrams: list[tuple[str, str, bytes, object, object]] = []

    def datagram(
        self,
        stream_id: str,
        direction: str,
        data: bytes,
        *,
        now: float,
        source: object,
        destination: object,
    ) -> None:
        self.datagrams.append((stream_id, direction, data, source, destination))


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited (reaped, or a zombie waiting for a parent that died)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def worker_pool_fixture(ports: Ports) -> Fixture:
    """``pool``: two workers on ``ports``, both running when the test starts, stopped after it
    (checked: the pool knows no process and none is left)."""

    @pytest.fixture
    async def pool() -> AsyncIterator[WorkerPool]:
        pool = WorkerPool(ADDRESS, ports.get(), 2, stats_interval=0.05, restart_delay=0.05)
        pids: set[int | None] = set()
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.serve)
            assert None not in pool.worker_pids()
            yield pool
            pids.update(pool.worker_pids())
            nursery.cancel_scope.cancel()
        assert pool.worker_pids() == [None, None]
        assert all(process_gone(pid) for pid in pids if pid is not None)

    return pool


async def connected(
    pool: WorkerPool,
    stream: RemoteStream,
    a: EphemeralPhone,
    b: EphemeralPhone,
    *,
    blocked: bool = False,
) -> None:
    """Point the stream at the phones (and unblock it: a worker stream starts blocked)."""
    stream.a.set_remote(a.address)
    stream.b.set_remote(b.address)
    stream.a_to_b.blocked = blocked
    stream.b_to_a.blocked = blocked
    await pool.sync(stream.worker)
