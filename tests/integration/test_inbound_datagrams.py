"""Datagram sockets read by the inbound queue's consumer (gateway/core/transport/inbound.py),
on a real socket pair: a readable socket or a delivery wakes the waiting task, a backlog stays
in the socket's buffer, a cancelled or ended wait leaves nothing behind."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

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


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the peer's end, the gateway's non-blocking end)."""
    peer, ours = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    with peer, ours:
        yield peer, ours


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


def _taken(queue: InboundQueue) -> list[bytes]:
    taken = []
    while (item := queue.take()) is not None:
        taken.append(item[0])
    return taken


async def test_a_datagram_on_a_source_wakes_the_waiting_task(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    peer, ours = pair
    queue = InboundQueue(8)
    reads: list[int] = []
    queue.add_source(ours.fileno(), _reader(ours, queue, reads))
    assert queue.take() is None  # read at once (it may have been readable), found empty
    assert reads == [8]  # no more than the queue has room for
    taken: list[bytes] = []

    async def consumer() -> None:
        await queue.wait()
        taken.extend(_taken(queue))

    with trio.fail_after(10):  # a hang guard, not a measurement
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.testing.wait_all_tasks_blocked()
            assert taken == []
            peer.send(b"INVITE")
    assert taken == [b"INVITE"]
    queue.remove_source(ours.fileno())
    queue.close()


async def test_a_delivery_wakes_a_task_waiting_on_sources(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # A stream transport's message while the endpoint waits for its UDP sockets.
    _, ours = pair
    queue = InboundQueue(8)
    queue.add_source(ours.fileno(), _reader(ours, queue, []))
    assert queue.take() is None
    taken: list[bytes] = []

    async def consumer() -> None:
        await queue.wait()
        taken.extend(_taken(queue))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.testing.wait_all_tasks_blocked()
            assert queue.put((b"OPTIONS over tcp", FLOW, 0.0))
    assert taken == [b"OPTIONS over tcp"]
    # The wake-up was consumed: the next wait parks until something comes.
    with trio.move_on_after(0.05) as scope:
        await queue.wait()
    assert scope.cancelled_caught
    queue.remove_source(ours.fileno())
    queue.close()


async def test_a_backlog_waits_in_the_socket_not_in_the_queue(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    peer, ours = pair
    queue = InboundQueue(1024)
    reads: list[int] = []
    queue.add_source(ours.fileno(), _reader(ours, queue, reads))
    for n in range(40):
        peer.send(b"%d" % n)
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
    queue.remove_source(ours.fileno())
    queue.close()


async def test_a_cancelled_wait_on_sources_leaves_no_waiter(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    peer, ours = pair
    queue = InboundQueue(8)
    queue.add_source(ours.fileno(), _reader(ours, queue, []))
    assert queue.take() is None
    with trio.move_on_after(0.05) as scope:
        await queue.wait()
    assert scope.cancelled_caught
    # The next wait is allowed, and a delivery made while nobody waited needs no wake-up.
    queue.put((b"queued", FLOW, 0.0))
    with trio.fail_after(10):
        await queue.wait()
    assert _taken(queue) == [b"queued"]
    peer.send(b"BYE")
    with trio.fail_after(10):
        await queue.wait()
    assert _taken(queue) == [b"BYE"]
    queue.remove_source(ours.fileno())
    queue.close()


async def test_a_removed_source_is_not_read_and_the_last_one_releases_the_epoll(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    peer, ours = pair
    queue = InboundQueue(8)
    reads: list[int] = []
    fds_before = len(os.listdir("/proc/self/fd"))
    queue.add_source(ours.fileno(), _reader(ours, queue, reads))
    assert len(os.listdir("/proc/self/fd")) == fds_before + 2  # the epoll and the eventfd
    queue.remove_source(ours.fileno())
    peer.send(b"late")
    assert queue.take() is None
    assert reads == []
    # Without sources the task parks as before (a delivery wakes it directly), and the epoll
    # and eventfd are closed.
    taken: list[bytes] = []

    async def consumer() -> None:
        await queue.wait()
        taken.extend(_taken(queue))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.testing.wait_all_tasks_blocked()
            assert len(os.listdir("/proc/self/fd")) == fds_before
            queue.put((b"tcp", FLOW, 0.0))
    assert taken == [b"tcp"]
    assert ours.recv(100) == b"late"  # left in the socket


async def test_a_source_added_while_the_task_waits_is_waited_on(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # The endpoint starts before the transports: it waits without sources when the UDP
    # listener registers its socket.
    peer, ours = pair
    queue = InboundQueue(8)
    taken: list[bytes] = []

    async def consumer() -> None:
        while not taken:
            await queue.wait()
            taken.extend(_taken(queue))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            await trio.testing.wait_all_tasks_blocked()
            queue.add_source(ours.fileno(), _reader(ours, queue, []))
            await trio.testing.wait_all_tasks_blocked()
            peer.send(b"REGISTER")
    assert taken == [b"REGISTER"]
    queue.remove_source(ours.fileno())
    queue.close()


async def test_a_turn_of_datagrams_that_are_no_messages_lets_other_tasks_run(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # A flood of keep-alives (RFC 5626 §3.5.1 CRLFs) delivers nothing: the consumer's next wait
    # must still be a checkpoint, or it would read on without other tasks ever running.
    peer, ours = pair
    queue = InboundQueue(8)

    def read(limit: int) -> bool:
        for _ in range(limit):
            try:
                ours.recv(100)
            except BlockingIOError:
                return True
        return False

    queue.add_source(ours.fileno(), read)
    for _ in range(2 * DATAGRAMS_PER_TURN):
        peer.send(b"\r\n\r\n")
    assert queue.take() is None  # one turn read, nothing delivered
    with trio.CancelScope() as scope:
        scope.cancel()
        await queue.wait()  # a checkpoint: it raises Cancelled here
        raise AssertionError("the wait returned without a checkpoint")
    assert scope.cancelled_caught
    queue.remove_source(ours.fileno())
    queue.close()


def test_steady_stream_deliveries_do_not_starve_a_datagram_source(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    # A TCP/TLS/WS peer delivering at least as fast as the endpoint takes keeps the queue from
    # ever being empty: the UDP sockets (a trunk's responses, its ACKs and BYEs) must still be
    # read, a turn of them after each turn of queued messages, as when UDP had its own task.
    peer, ours = pair
    queue = InboundQueue(1024)
    queue.add_source(ours.fileno(), _reader(ours, queue, []))
    assert queue.take() is None  # the socket read once, empty
    queue.put((b"tcp", FLOW, 0.0))
    peer.send(b"200 OK over udp")
    taken = []
    for _ in range(4 * DATAGRAMS_PER_TURN):
        queue.put((b"tcp", FLOW, 0.0))  # the stream's next message, before every take
        item = queue.take()
        assert item is not None
        taken.append(item[0])
    assert b"200 OK over udp" in taken
    queue.remove_source(ours.fileno())
    queue.close()


def test_a_flooded_datagram_source_does_not_starve_another() -> None:
    # An IPv4 and an IPv6 listener (or two listeners): a flood on one, every turn of it a
    # message, must not keep the other's datagrams in its socket for as long as it lasts.
    flooded_peer, flooded = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    other_peer, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with flooded_peer, flooded, other_peer, other:
        flooded.setblocking(False)
        other.setblocking(False)
        queue = InboundQueue(1024)
        queue.add_source(flooded.fileno(), _reader(flooded, queue, []))
        queue.add_source(other.fileno(), _reader(other, queue, []))
        for _ in range(10 * DATAGRAMS_PER_TURN):
            flooded_peer.send(b"flood")
        first = queue.take()  # both read: the flooded one stops at the turn, the other empty
        assert first is not None
        other_peer.send(b"INVITE on the other listener")
        taken = [first[0]]
        for _ in range(4 * DATAGRAMS_PER_TURN):
            item = queue.take()
            assert item is not None  # the flood keeps the endpoint busy: it never waits
            taken.append(item[0])
        assert b"INVITE on the other listener" in taken
        queue.remove_source(flooded.fileno())
        queue.remove_source(other.fileno())
        queue.close()
