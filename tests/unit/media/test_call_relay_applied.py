"""``CallRelay.applied`` when a media worker does not answer its ``Ping`` in time: the call goes
on, and the ping it gave up on leaves nothing behind in the worker's slot. A call's final
counters (``CallRelay.final_counters``, ``MediaSession.final_counters``): a worker that answers
gives them at once, one that does not is given up on after ``FINAL_COUNTERS_WAIT`` and the
counters are said partial."""

from __future__ import annotations

import attrs
import pytest
import trio
import trio.testing

from gateway.core.config import PortRange
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import DirectionStatistics, MediaRelay
from gateway.core.media.relay_api import (
    COUNTERS_NO_ANSWER,
    COUNTERS_POOL_STOPPED,
    COUNTERS_WORKER_EXITED,
)
from gateway.core.media.remote_relay import APPLIED_WAIT, CallRelay, WorkerPool
from gateway.core.media.session import FINAL_COUNTERS_WAIT, MediaSession
from gateway.core.media.worker_protocol import (
    Message,
    Open,
    Ping,
    Pong,
    SendStats,
    Stats,
    StreamFailed,
)
from tests.port_blocks import PortLease


class _StuckChannel:
    """A worker's channel whose worker takes every message and answers none (yet)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.closed = False

    def send(self, message: Message) -> bool:
        if self.closed:
            return False
        self.sent.append(message)
        return True


async def test_a_ping_given_up_on_is_forgotten(
    port_lease: PortLease, autojump_clock: trio.testing.MockClock
) -> None:
    # Never started: no port is bound, but a range of this process all the same.
    pool = WorkerPool("127.0.0.1", PortRange.parse(port_lease.text(10)), 1)
    slot = pool._workers[0]
    channel = _StuckChannel()
    slot.channel = channel  # type: ignore[assignment]
    relay = CallRelay(pool, None)
    relay._workers.add(0)
    for _ in range(3):  # three answers, each given up on after APPLIED_WAIT
        started = trio.current_time()
        await relay.applied()
        assert trio.current_time() - started == APPLIED_WAIT
    assert [type(message) for message in channel.sent] == [Ping, Ping, Ping]
    # A stuck worker that never exits would otherwise keep one event per answer for ever.
    assert slot.pongs == {}
    # Its late answers find nothing to wake.
    for message in channel.sent:
        assert isinstance(message, Ping)
        pool._handle(slot, Pong(message.token))
    assert slot.pongs == {}


# -- a call's final counters (CallRelay.final_counters, MediaSession.final_counters) -----------


class _AnsweringChannel:
    """A worker's channel whose worker answers at once: a ``Stats`` for each ``SendStats``
    (``packets`` RTP packets each way), a ``Pong`` for each ``Ping``."""

    def __init__(self, pool: WorkerPool, packets: int) -> None:
        self.sent: list[Message] = []
        self._pool = pool
        self._packets = packets

    def send(self, message: Message) -> bool:
        self.sent.append(message)
        slot = self._pool._workers[0]
        if isinstance(message, SendStats):
            counts = attrs.evolve(NO_COUNTS, rtp_packets=self._packets, rtp_bytes=172)
            self._pool._handle(slot, Stats(message.stream, 0.0, counts, counts, None, None))
        elif isinstance(message, Ping):
            self._pool._handle(slot, Pong(message.token))
        return True


NO_COUNTS = DirectionStatistics(*(0 for _ in attrs.fields(DirectionStatistics)))


def _pool_with(port_lease: PortLease, channel: object) -> tuple[WorkerPool, CallRelay]:
    """A pool never started whose one worker slot has ``channel`` and two pairs ready."""
    pool = WorkerPool("127.0.0.1", PortRange.parse(port_lease.text(10)), 1)
    slot = pool._workers[0]
    slot.channel = channel  # type: ignore[assignment]
    slot.ready.extend((slot.ports.low, slot.ports.low + 2))
    return pool, CallRelay(pool, None)


async def test_final_counters_of_a_stuck_worker_are_given_up_on_and_said_partial(
    port_lease: PortLease, autojump_clock: trio.testing.MockClock
) -> None:
    channel = _StuckChannel()
    pool, relay = _pool_with(port_lease, channel)
    relay.open_stream()
    session = MediaSession(relay, media_address="127.0.0.1")
    started = trio.current_time()
    await session.final_counters()
    # The call's end waits the bound, not for ever, and its record says so.
    assert trio.current_time() - started == FINAL_COUNTERS_WAIT
    assert session.counters_partial
    assert session.statistics()["counters_partial"] is True
    assert [type(message) for message in channel.sent] == [Open, SendStats, Ping]
    assert pool._workers[0].pongs == {}  # the ping given up on is forgotten
    # The call's media-counters-partial line says which worker, and why.
    assert relay.counters_missing == {0: COUNTERS_NO_ANSWER}
    assert session.counters_partial_why == "media worker 0: timed out after 0.5 s"


async def test_final_counters_a_worker_answers_are_the_streams(
    port_lease: PortLease, autojump_clock: trio.testing.MockClock
) -> None:
    pool, relay = _pool_with(port_lease, None)
    channel = _AnsweringChannel(pool, packets=3)
    pool._workers[0].channel = channel  # type: ignore[assignment]
    stream = relay.open_stream()
    session = MediaSession(relay, media_address="127.0.0.1")
    started = trio.current_time()
    await session.final_counters()
    assert trio.current_time() == started
    assert not session.counters_partial
    assert session.counters_partial_why is None
    assert relay.counters_missing == {}
    assert stream.a_to_b.totals() == (3, 172, 0)
    assert "counters_partial" not in session.statistics()
    assert [type(message) for message in channel.sent] == [Open, SendStats, Ping]


async def test_final_counters_of_a_lost_stream_are_partial_without_a_wait(
    port_lease: PortLease, autojump_clock: trio.testing.MockClock
) -> None:
    channel = _StuckChannel()
    _, relay = _pool_with(port_lease, channel)
    stream = relay.open_stream()
    # Its worker exited (WorkerPool._supervise): the stream is closed and failed.
    stream._link.channel = None
    stream._lost("media worker exited")
    started = trio.current_time()
    assert not await relay.final_counters()
    assert trio.current_time() == started
    assert [type(message) for message in channel.sent] == [Open]
    assert relay.counters_missing == {0: COUNTERS_WORKER_EXITED}


class _FailingChannel:
    """A worker's channel whose worker had failed the stream (its ``StreamFailed`` still on
    the way when ``SendStats`` was sent): it answers no ``Stats`` (the stream is gone from
    it), only the ``Pong``."""

    def __init__(self, pool: WorkerPool) -> None:
        self.sent: list[Message] = []
        self._pool = pool

    def send(self, message: Message) -> bool:
        self.sent.append(message)
        slot = self._pool._workers[0]
        if isinstance(message, SendStats):
            self._pool._handle(slot, StreamFailed(message.stream, "keys refused"))
        elif isinstance(message, Ping):
            self._pool._handle(slot, Pong(message.token))
        return True


async def test_final_counters_of_a_stream_failed_meanwhile_are_partial(
    port_lease: PortLease, autojump_clock: trio.testing.MockClock
) -> None:
    pool, relay = _pool_with(port_lease, None)
    channel = _FailingChannel(pool)
    pool._workers[0].channel = channel  # type: ignore[assignment]
    stream = relay.open_stream()
    session = MediaSession(relay, media_address="127.0.0.1")
    await session.final_counters()
    # The Pong came, but no Stats before it: the stream's counters are the last pushed.
    assert stream.failure == "keys refused"
    assert session.counters_partial
    assert [type(message) for message in channel.sent] == [Open, SendStats, Ping]
    assert session.counters_partial_why == "media worker 0: stream failed"


async def test_final_counters_in_process_are_not_waited_for(
    port_lease: PortLease, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The in-process relay's counters are of now: a call's end neither asks for them nor
    # enters a cancel scope (its hot path).
    async def asked(self: MediaRelay) -> bool:
        raise AssertionError("the in-process relay was asked for its final counters")

    monkeypatch.setattr(MediaRelay, "final_counters", asked)
    relay = MediaRelay(PortAllocator("127.0.0.1", PortRange.parse(port_lease.text(10))))
    session = MediaSession(relay, media_address="127.0.0.1")
    await session.final_counters()
    assert not session.counters_partial
    assert session.counters_partial_why is None


async def test_final_counters_are_awaited_through_a_cancellation_within_the_bound(
    port_lease: PortLease, autojump_clock: trio.testing.MockClock
) -> None:
    # The gateway stopping cancels the call's task: the record still gets the counters, and
    # the wait stays bounded.
    channel = _StuckChannel()
    _, relay = _pool_with(port_lease, channel)
    relay.open_stream()
    session = MediaSession(relay, media_address="127.0.0.1")
    started = trio.current_time()
    with trio.CancelScope() as scope:
        scope.cancel()
        await session.final_counters()
    assert trio.current_time() - started == FINAL_COUNTERS_WAIT
    assert [type(message) for message in channel.sent] == [Open, SendStats, Ping]
    assert session.counters_partial


def _two_worker_pool(port_lease: PortLease) -> WorkerPool:
    """A pool never started with two worker slots, each with two pairs ready and a channel
    whose worker answers nothing (yet)."""
    pool = WorkerPool("127.0.0.1", PortRange.parse(port_lease.text(20)), 2)
    for slot in pool._workers:
        slot.channel = _StuckChannel()  # type: ignore[assignment]
        slot.ready.extend((slot.ports.low, slot.ports.low + 2))
    return pool


async def test_why_final_counters_are_partial_is_said_per_worker(
    port_lease: PortLease, autojump_clock: trio.testing.MockClock
) -> None:
    # A call with a stream on each of two workers: worker 0 stuck, worker 1's exited (its
    # stream lost): one reason each, in worker order, as the call's line says them.
    pool = _two_worker_pool(port_lease)
    relay = CallRelay(pool, None)
    on_0 = pool.open_stream(prefer=0, on_lost=relay._lost)
    on_1 = pool.open_stream(prefer=1, on_lost=relay._lost)
    relay._streams.extend((on_0, on_1))
    relay._workers.update((0, 1))
    on_1._link.channel = None
    on_1._lost("media worker exited")
    session = MediaSession(relay, media_address="127.0.0.1")
    await session.final_counters()
    assert relay.counters_missing == {0: COUNTERS_NO_ANSWER, 1: COUNTERS_WORKER_EXITED}
    assert session.counters_partial_why == (
        "media worker 0: timed out after 0.5 s; media worker 1: worker exited"
    )
    assert not session.counters_partial_at_stop


async def test_final_counters_while_the_pool_stops_are_said_stopped_with_the_gateway(
    port_lease: PortLease, autojump_clock: trio.testing.MockClock
) -> None:
    # The gateway shutting down: the pool closed the worker's channel (WorkerPool._run_once),
    # its stream not lost (no worker exited): the call's end asks nothing and waits not.
    pool = _two_worker_pool(port_lease)
    relay = CallRelay(pool, None)
    stream = relay.open_stream()
    pool._stopping = True
    slot = pool._workers[stream.worker]
    assert isinstance(slot.channel, _StuckChannel)
    slot.channel.closed = True
    slot.channel = None
    session = MediaSession(relay, media_address="127.0.0.1")
    started = trio.current_time()
    await session.final_counters()
    assert trio.current_time() == started
    assert relay.counters_missing == {stream.worker: COUNTERS_POOL_STOPPED}
    assert session.counters_partial_why == (
        f"media worker {stream.worker}: stopped with the gateway"
    )
    assert session.counters_partial_at_stop  # said at INFO: a shutdown's, expected
