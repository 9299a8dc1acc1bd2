"""Fixtures shared by the media tests, made for each test module's own port blocks
(tests/port_blocks.py), so two modules never share a port:

- :func:`in_process_fixtures`: ``relay`` (an in-process relay, checked to have freed every
  port), ``stream`` (one stream on it) and ``phones`` (two :class:`~tests.integration.media.
  test_srtp_relay.Phone` on port pairs of their own), as test_g711_relay.py and
  test_payload_type_relay.py use them;
- :func:`worker_pool_fixture`: ``pool``, two media worker processes, checked to be gone after
  the test, as test_media_workers_g711.py and test_media_workers_dtmf.py use it;
- :data:`SUITES`: the (A leg, B leg) SRTP suites the relay tests run each case with.

A module takes them as module attributes, where pytest finds fixtures:
``relay, stream, phones = in_process_fixtures(RELAY_PORTS, PHONE_PORTS)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import trio

from gateway.core.config import PortRange
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay, MediaStream
from gateway.core.media.remote_relay import WorkerPool
from tests.integration.media.test_media_workers import process_gone
from tests.integration.media.test_srtp_relay import ADDRESS, Phone

Fixture = Callable[..., Any]

#: (a_suite, b_suite) for ``pytest.mark.parametrize``: plain RTP (None) or an SRTP suite on
#: each leg, so a per-packet rewrite is checked before protect and after unprotect.
SUITES = [
    pytest.param(None, None, id="rtp-rtp"),
    pytest.param("AES_CM_128_HMAC_SHA1_80", None, id="srtp-rtp"),
    pytest.param(None, "AES_CM_128_HMAC_SHA1_80", id="rtp-srtp"),
    pytest.param("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM", id="srtp-srtp"),
]


def in_process_fixtures(
    relay_ports: PortRange, phone_ports: PortRange
) -> tuple[Fixture, Fixture, Fixture]:
    """``relay``, ``stream`` and ``phones`` on these ports."""

    @pytest.fixture
    async def relay(nursery: trio.Nursery) -> AsyncIterator[MediaRelay]:
        relay = MediaRelay(PortAllocator(ADDRESS, relay_ports))
        await nursery.start(relay.serve)
        yield relay
        relay.close()
        assert relay.allocator.in_use == 0

    @pytest.fixture
    def stream(relay: MediaRelay) -> Iterator[MediaStream]:
        with relay.open_stream() as stream:
            yield stream

    @pytest.fixture
    def phones() -> Iterator[tuple[Phone, Phone]]:
        allocator = PortAllocator(ADDRESS, phone_ports)
        pairs = [allocator.allocate(), allocator.allocate()]
        yield Phone(pairs[0]), Phone(pairs[1])
        for pair in pairs:
            pair.close()

    return relay, stream, phones


def worker_pool_fixture(ports: PortRange) -> Fixture:
    """``pool``: two workers on ``ports``, stopped after the test (checked: no process left)."""

    @pytest.fixture
    async def pool() -> AsyncIterator[WorkerPool]:
        pool = WorkerPool(ADDRESS, ports, 2, stats_interval=0.05, restart_delay=0.05)
        pids: set[int | None] = set()
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.serve)
            yield pool
            pids.update(pool.worker_pids())
            nursery.cancel_scope.cancel()
        assert all(process_gone(pid) for pid in pids if pid is not None)

    return pool
