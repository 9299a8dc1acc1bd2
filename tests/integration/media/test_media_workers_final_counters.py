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
import trio.testing

from gateway.core.config import PortRange
from gateway.core.media import remote_relay
from gateway.core.media.remote_relay import WorkerPool
from gateway.core.media.session import FINAL_COUNTERS_WAIT, MediaSession
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.integration.media.phone_sockets import (
    ADDRESS,
    WORKER_TIMEOUT,
    EphemeralPhone,
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


# -- a call's end is not held by a worker whose channel closed (session 48) -------------------
#
# The worker is frozen (SIGSTOP), so it answers nothing: the call's end waits for its Pong.
# Before session 48 that wait was woken only once the worker's process had exited (after
# STOP_GRACE, 2 s, for one that hangs), or never when the pool stopped: each call's end then
# waited out FINAL_COUNTERS_WAIT (0.5 s).


async def _end_waiting_for_a_frozen_worker(
    nursery: trio.Nursery, pool: WorkerPool
) -> tuple[MediaSession, int, int, list[float]]:
    """A call with one stream whose worker is frozen, its end started and waiting for the
    worker's Pong. Returns the call's media session, the worker's index and pid, and a list
    that gets how long the end's final counters took once they return."""
    relay = pool.for_call()
    stream = relay.open_stream()
    with trio.fail_after(WORKER_TIMEOUT):
        await pool.sync(stream.worker)
    pid = pool.worker_pids()[stream.worker]
    assert pid is not None
    session = MediaSession(relay, media_address=ADDRESS)
    took: list[float] = []

    async def end() -> None:
        started = trio.current_time()
        await session.final_counters()
        took.append(trio.current_time() - started)

    os.kill(pid, signal.SIGSTOP)
    nursery.start_soon(end)
    await trio.testing.wait_all_tasks_blocked()
    assert pool._workers[stream.worker].pongs  # its Ping sent, unanswered
    return session, stream.worker, pid, took


async def _returned(took: list[float]) -> None:
    with trio.fail_after(WORKER_TIMEOUT):
        while not took:
            await trio.sleep(0.001)


async def test_a_pool_stopping_wakes_a_calls_final_counters_at_once() -> None:
    pool = WorkerPool(ADDRESS, PORTS.get(), 2, stats_interval=60.0)
    async with trio.open_nursery() as nursery:
        pool_scope = trio.CancelScope()

        async def serve(*, task_status: trio.TaskStatus[None]) -> None:
            with pool_scope:
                await pool.serve(task_status=task_status)

        with trio.fail_after(WORKER_TIMEOUT):
            await nursery.start(serve)
        pids = [pid for pid in pool.worker_pids() if pid is not None]
        session, index, pid, took = await _end_waiting_for_a_frozen_worker(nursery, pool)
        try:
            assert not pool.stopping
            pool_scope.cancel()  # the gateway shutting down
            await _returned(took)
        finally:
            os.kill(pid, signal.SIGCONT)  # it reads its channel's end and exits
    assert pool.stopping
    (seconds,) = took
    assert seconds < FINAL_COUNTERS_WAIT / 2
    assert session.counters_partial
    assert session.counters_partial_why == f"media worker {index}: stopped with the gateway"
    assert session.counters_partial_at_stop
    assert all(process_gone(pid) for pid in pids)


async def test_a_channel_closed_wakes_a_calls_final_counters_at_once(
    pool: WorkerPool, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    session, index, pid, took = await _end_waiting_for_a_frozen_worker(nursery, pool)
    try:
        # The frozen worker reads nothing: what is queued for it passes the limit, and the
        # channel is closed here (a channel error) while its process lives on.
        monkeypatch.setattr(remote_relay, "SEND_BUFFER_LIMIT", 0)
        slot = pool._workers[index]
        assert slot.channel is not None
        assert not slot.channel.send(remote_relay.Ping(0))
        await _returned(took)
    finally:
        os.kill(pid, signal.SIGCONT)
    (seconds,) = took
    assert seconds < FINAL_COUNTERS_WAIT / 2
    assert session.counters_partial_why == f"media worker {index}: worker exited"
    assert not pool.stopping


# -- a stream a re-INVITE removes (session 50) -------------------------------------------------
#
# Its counters were added to the call's as the worker had last pushed them: with the push
# interval of 60 s here, none of its packets; in service up to its last second's.


def _two_lines(
    version: int, first: EphemeralPhone, second: EphemeralPhone | None
) -> SessionDescription:
    """Two audio lines (RFC 3264 §8.2: a second one removed is answered port 0)."""
    port = 0 if second is None else second.address[1]
    text = (
        f"v=0\r\no=- 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {first.address[1]} RTP/AVP 0\r\nm=audio {port} RTP/AVP 0\r\n"
    )
    return parse_sdp_untrusted(text.encode())


async def test_a_stream_a_reinvite_removes_counts_to_its_last_packet(pool: WorkerPool) -> None:
    a, b, a2, b2 = await ephemeral_phones(4)
    session = MediaSession(pool.for_call(), media_address=ADDRESS)
    try:
        session.offer_from("a", _two_lines(1, a, a2))
        session.answer_from("b", _two_lines(1, b, b2))
        session.settle()
        first, second = session.streams
        for stream in (first, second):
            stream.a_to_b.blocked = stream.b_to_a.blocked = False  # the call's keying does this
        with trio.fail_after(WORKER_TIMEOUT):
            await pool.sync(second.worker)
            for sequence in range(PACKETS):
                await a2.send(rtp(sequence), second.a.ports.rtp_port)
                await b2.receive()
            assert session.statistics()["a_to_b_packets"] == 0  # relayed, none pushed yet
            session.offer_from("a", _two_lines(2, a, None))
            session.answer_from("b", _two_lines(2, b, None))
            session.settle()
            assert session.streams == (first,)
            await session.final_counters()
        assert not session.counters_partial
        statistics = session.statistics()
        assert statistics["a_to_b_packets"] == PACKETS
        assert statistics["a_to_b_bytes"] == PACKETS * len(rtp(0))
        assert statistics["b_to_a_packets"] == 0
    finally:
        session.close()


async def test_a_removed_streams_counters_lost_with_its_worker_are_said_partial(
    pool: WorkerPool,
) -> None:
    """Its worker exits before it sends them: the call's counters are partial, and the call
    is not told its (closed) stream failed."""
    a, b = await ephemeral_phones(2)
    lost: list[str] = []
    call = pool.for_call(on_lost=lost.append)
    stream = call.open_stream()
    await connected(pool, stream, a, b)
    pid = pool.worker_pids()[stream.worker]
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # it reads nothing: the Close stays in its channel
    finals: list[int] = []
    stream.close(on_final_counters=lambda: finals.append(1))
    assert stream.final_counters_pending
    os.kill(pid, signal.SIGKILL)
    with trio.fail_after(WORKER_TIMEOUT):
        while stream.failure is None:
            await trio.sleep(0.01)
        assert not await call.final_counters()
    assert call.counters_missing == {stream.worker: remote_relay.COUNTERS_WORKER_EXITED}
    assert finals == []
    assert lost == []
