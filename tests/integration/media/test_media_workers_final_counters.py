"""A call's final counters with media workers (``[media] workers >= 2``): the last packets of a
call are in its record, as in process.

A worker pushes a stream's counters about once a second (``Stats``); a call's record, written
as it ends, read what was last pushed and missed the packets of its last second. The call now
asks for them first (:meth:`~gateway.core.media.remote_relay.CallRelay.final_counters`:
``SendStats`` per stream, then a ``Ping``/``Pong`` round trip). Here the workers push their own
counters only every 60 s, so every counter read comes from that request.

Real worker processes on 127.0.0.1 in PORTS (a block of this process, tests/port_blocks.py);
the phones bind ephemeral ports. Nothing sleeps a fixed time.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import pytest
import trio

from gateway.core.config import PortRange
from gateway.core.media.remote_relay import WorkerPool
from tests.integration.media.phone_sockets import (
    ADDRESS,
    WORKER_TIMEOUT,
    ephemeral_phones,
    rtp,
)
from tests.integration.media.relay_fixtures import connected, process_gone
from tests.port_blocks import ModuleBlock

PORTS = ModuleBlock(20, parse=PortRange.parse)

PACKETS = 7


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    """Two workers that push no counters of their own during a test (every 60 s)."""
    pool = WorkerPool(ADDRESS, PORTS.get(), 2, stats_interval=60.0, restart_delay=0.05)
    pids: set[int | None] = set()
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WORKER_TIMEOUT):
            await nursery.start(pool.serve)
        yield pool
        pids.update(pool.worker_pids())
        nursery.cancel_scope.cancel()
    assert all(process_gone(pid) for pid in pids if pid is not None)


async def test_the_last_packets_before_the_end_are_in_the_final_counters(pool: WorkerPool) -> None:
    a, b = await ephemeral_phones(2)
    call = pool.for_call()
    stream = call.open_stream()
    await connected(pool, stream, a, b)
    with trio.fail_after(WORKER_TIMEOUT):
        for sequence in range(PACKETS):
            await a.send(rtp(sequence), stream.a.ports.rtp_port)
            await b.receive()
        await b.send(rtp(0, ssrc=0x99), stream.b.ports.rtp_port)
        await a.receive()
        # Relayed, not yet reported: what a record written now used to say.
        assert stream.a_to_b.statistics().rtp_packets == 0
        assert await call.final_counters()
    assert stream.a_to_b.statistics().rtp_packets == PACKETS
    assert stream.a_to_b.totals() == (PACKETS, PACKETS * len(rtp(0)), 0)
    assert stream.b_to_a.totals() == (1, len(rtp(0)), 0)
    assert stream.last_activity > 0
    stream.close()
    # A closed stream is asked no more: nothing to wait for.
    with trio.fail_after(WORKER_TIMEOUT):
        assert await call.final_counters()


async def test_final_counters_of_a_worker_that_exited_are_said_incomplete(
    pool: WorkerPool,
) -> None:
    a, b = await ephemeral_phones(2)
    call = pool.for_call()
    stream = call.open_stream()
    await connected(pool, stream, a, b)
    await a.send(rtp(1), stream.a.ports.rtp_port)
    with trio.fail_after(WORKER_TIMEOUT):
        await b.receive()
    pid = pool.worker_pids()[stream.worker]
    assert pid is not None
    stream_worker = stream.worker
    starts = pool.worker_starts()[stream_worker]
    os.kill(pid, signal.SIGKILL)
    with trio.fail_after(WORKER_TIMEOUT):
        while stream.failure is None:
            await trio.sleep(0.01)
        assert not await call.final_counters()
        while pool.worker_starts()[stream_worker] == starts:
            await trio.sleep(0.01)
