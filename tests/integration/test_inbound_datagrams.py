"""Datagram sockets read by the inbound queue's consumer (gateway/core/transport/inbound.py),
on a real socket pair: a readable socket or a delivery wakes the waiting task, a backlog stays
in the socket's buffer, a cancelled or ended wait leaves nothing behind.

Whether a wait parks or returns is decided without the wall clock: the waiting task is given
every chance to run (:func:`trio.testing.wait_all_tasks_blocked` polls the kernel's readiness,
epoll and eventfd included, before it calls the run idle) and then looked at, so a loaded
machine can neither fail these tests nor make one pass."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator

import attrs
import pytest
import trio
import trio.testing

from gateway.core.transport.flows import Flow, FlowKey
from gateway.core.transport.inbound import DATAGRAMS_PER_TURN, DatagramReader, InboundQueue


async def _send(data: bytes) -> None:
    pass


FLOW = Flow(
    key=FlowKey("udp", ("127.0.0.1", 5060), ("127.0.0.9", 5099)), send=_send, reliable=False
)


def _socket_pair() -> tuple[socket.socket, socket.socket]:
    """(the peer's end, the gateway's non-blocking end)."""
    peer, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    return peer, ours


def _reader(sock: socket.socket, queue: InboundQueue, reads: list[int]) -> DatagramReader:
    def read(limit: int) -> bool:
        reads.append(limit)
        for _ in range(limit):
            try:
                data = sock.recv(100)
            except BlockingIOError:
                return True
            queue.put((data, FLOW, 0.0))
        return False

    return read


@attrs.define
class Source:
    """An inbound queue with the gateway's end of a socket pair as its datagram source."""

    peer: socket.socket
    ours: socket.socket
    queue: InboundQueue
    reads: list[int] = attrs.Factory(list)  # each read's limit

    def add(self) -> None:
        self.queue.add_source(self.ours.fileno(), _reader(self.ours, self.queue, self.reads))

    def remove(self) -> None:
        self.queue.remove_source(self.ours.fileno())


@pytest.fixture
def make_source() -> Iterator[Callable[..., Source]]:
    """``make_source(size=8, *, queue=None, add=True)``: a socket pair, its gateway end a
    source of ``queue`` (a new queue of ``size`` by default) unless ``add`` is false; at the
    end each source is removed and each queue closed (both may be done already), the sockets
    closed."""
    made: list[Source] = []

    def make(size: int = 8, *, queue: InboundQueue | None = None, add: bool = True) -> Source:
        peer, ours = _socket_pair()
        source = Source(peer, ours, queue if queue is not None else InboundQueue(size))
        made.append(source)
        if add:
            source.add()
        return source

    yield make
    for source in made:
        source.remove()
        source.queue.close()
        source.peer.close()
        source.ours.close()


def _taken(queue: InboundQueue) -> list[bytes]:
    taken = []
    while (item := queue.take()) is not None:
        taken.append(item[0])
    return taken


async def _woken_by(queue: InboundQueue, *actions: Callable[[], object]) -> list[list[bytes]]:
    """Start a consumer task waiting on ``queue``; once every task is blocked, check that it is
    still waiting and run the next of ``actions``. The consumer takes all it finds at each
    wake-up and waits again until it took something: what each wake-up took."""
    wakes: list[list[bytes]] = []

    async def consumer() -> None:
        while not any(wakes):
            await queue.wait()
            wakes.append(_taken(queue))

    with trio.fail_after(10):  # a hang guard, not a measurement
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            for action in actions:
                await trio.testing.wait_all_tasks_blocked()
                assert not any(wakes), wakes  # parked: nothing has woken it with a message
                action()
    return wakes


async def _parks(queue: InboundQueue) -> bool:
    """Whether ``queue.wait()`` parks: a wait started in a task, given every chance to return
    (every task blocked), then cancelled."""
    returned = False

    async def waiter() -> None:
        nonlocal returned
        await queue.wait()
        returned = True

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return not returned


async def test_a_datagram_on_a_source_wakes_the_waiting_task(
    make_source: Callable[..., Source],
) -> None:
    source = make_source()
    assert source.queue.take() is None  # read at once (it may have been readable), found empty
    assert source.reads == [8]  # no more than the queue has room for
    wakes = await _woken_by(source.queue, lambda: source.peer.send(b"INVITE"))
    assert wakes == [[b"INVITE"]]


async def test_a_delivery_wakes_a_task_waiting_on_sources(
    make_source: Callable[..., Source],
) -> None:
    # A stream transport's message while the endpoint waits for its UDP sockets.
    source = make_source()
    queue = source.queue
    assert queue.take() is None
    wakes = await _woken_by(queue, lambda: queue.put((b"OPTIONS over tcp", FLOW, 0.0)))
    assert wakes == [[b"OPTIONS over tcp"]]
    # The wake-up was consumed: the next wait parks until something comes.
    assert await _parks(queue)


async def test_a_backlog_waits_in_the_socket_not_in_the_queue(
    make_source: Callable[..., Source],
) -> None:
    source = make_source(1024)
    queue, reads = source.queue, source.reads
    for n in range(40):
        source.peer.send(b"%d" % n)
    first = queue.take()
    assert first is not None and first[0] == b"0"
    # One turn was read: the rest of the backlog is still the kernel's (bounded by SO_RCVBUF,
    # stamped for overload control), not the gateway's memory.
    assert len(queue) == DATAGRAMS_PER_TURN - 1
    # While messages are queued the next turn is read only once a turn of them has been
    # taken (a stream's delivered message is not held up behind the whole backlog).
    queue.put((b"tcp", FLOW, 0.0))
    assert [queue.take() for _ in range(DATAGRAMS_PER_TURN - 1)][-1] == (b"15", FLOW, 0.0)
    assert reads == [DATAGRAMS_PER_TURN]
    assert queue.take() == (b"tcp", FLOW, 0.0)
    assert reads == [DATAGRAMS_PER_TURN] * 2
    assert _taken(queue) == [b"%d" % n for n in range(DATAGRAMS_PER_TURN, 40)]
    # Two full turns, then the last eight and the empty socket.
    assert reads == [DATAGRAMS_PER_TURN] * 3
    assert queue.take() is None
    assert len(reads) == 3  # an emptied source is read again only once epoll reports it


async def test_a_cancelled_wait_on_sources_leaves_no_waiter(
    make_source: Callable[..., Source],
) -> None:
    source = make_source()
    queue = source.queue
    assert queue.take() is None
    assert await _parks(queue)  # and is cancelled
    # The next wait is allowed, and a delivery made while nobody waited needs no wake-up.
    queue.put((b"queued", FLOW, 0.0))
    with trio.fail_after(10):
        await queue.wait()
    assert _taken(queue) == [b"queued"]
    source.peer.send(b"BYE")
    with trio.fail_after(10):
        await queue.wait()
    assert _taken(queue) == [b"BYE"]


async def test_a_removed_source_is_not_read_and_the_last_one_releases_the_epoll(
    make_source: Callable[..., Source],
) -> None:
    source = make_source(add=False)
    queue = source.queue
    fds_before = len(os.listdir("/proc/self/fd"))
    source.add()
    assert len(os.listdir("/proc/self/fd")) == fds_before + 2  # the epoll and the eventfd
    source.remove()
    source.peer.send(b"late")
    assert queue.take() is None
    assert source.reads == []
    # Without sources the task parks as before (a delivery wakes it directly), and the epoll
    # and eventfd are closed.
    descriptors: list[int] = []

    def deliver() -> None:
        descriptors.append(len(os.listdir("/proc/self/fd")))
        queue.put((b"tcp", FLOW, 0.0))

    assert await _woken_by(queue, deliver) == [[b"tcp"]]
    assert descriptors == [fds_before]
    assert source.ours.recv(100) == b"late"  # left in the socket


async def test_a_source_added_while_the_task_waits_is_waited_on(
    make_source: Callable[..., Source],
) -> None:
    # The endpoint starts before the transports: it waits without sources when the UDP
    # listener registers its socket.
    source = make_source(add=False)
    wakes = await _woken_by(source.queue, source.add, lambda: source.peer.send(b"REGISTER"))
    # Woken by the registration (the socket may have had datagrams), found it empty, waited on
    # the epoll.
    assert wakes == [[], [b"REGISTER"]]


async def test_a_turn_of_datagrams_that_are_no_messages_lets_other_tasks_run(
    make_source: Callable[..., Source],
) -> None:
    # A flood of keep-alives (RFC 5626 §3.5.1 CRLFs) delivers nothing: the consumer's next wait
    # must still be a checkpoint, or it would read on without other tasks ever running.
    source = make_source(add=False)
    ours, queue = source.ours, source.queue

    def read(limit: int) -> bool:
        for _ in range(limit):
            try:
                ours.recv(100)
            except BlockingIOError:
                return True
        return False

    queue.add_source(ours.fileno(), read)
    for _ in range(2 * DATAGRAMS_PER_TURN):
        source.peer.send(b"\r\n\r\n")
    assert queue.take() is None  # one turn read, nothing delivered
    with trio.CancelScope() as scope:
        scope.cancel()
        await queue.wait()  # a checkpoint: it raises Cancelled here
        raise AssertionError("the wait returned without a checkpoint")
    assert scope.cancelled_caught


def test_steady_stream_deliveries_do_not_starve_a_datagram_source(
    make_source: Callable[..., Source],
) -> None:
    # A TCP/TLS/WS peer delivering at least as fast as the endpoint takes keeps the queue from
    # ever being empty: the UDP sockets (a trunk's responses, its ACKs and BYEs) must still be
    # read, a turn of them after each turn of queued messages, as when UDP had its own task.
    source = make_source(1024)
    queue = source.queue
    assert queue.take() is None  # the socket read once, empty
    queue.put((b"tcp", FLOW, 0.0))
    source.peer.send(b"200 OK over udp")
    taken = []
    for _ in range(4 * DATAGRAMS_PER_TURN):
        queue.put((b"tcp", FLOW, 0.0))  # the stream's next message, before every take
        item = queue.take()
        assert item is not None
        taken.append(item[0])
    assert b"200 OK over udp" in taken


def test_a_flooded_datagram_source_does_not_starve_another(
    make_source: Callable[..., Source],
) -> None:
    # An IPv4 and an IPv6 listener (or two listeners): a flood on one, every turn of it a
    # message, must not keep the other's datagrams in its socket for as long as it lasts.
    flooded = make_source(1024)
    queue = flooded.queue
    other = make_source(queue=queue)
    for _ in range(10 * DATAGRAMS_PER_TURN):
        flooded.peer.send(b"flood")
    first = queue.take()  # both read: the flooded one stops at the turn, the other empty
    assert first is not None
    other.peer.send(b"INVITE on the other listener")
    taken = [first[0]]
    for _ in range(4 * DATAGRAMS_PER_TURN):
        item = queue.take()
        assert item is not None  # the flood keeps the endpoint busy: it never waits
        taken.append(item[0])
    assert b"INVITE on the other listener" in taken
