"""The queue between the transports and the SIP endpoint's task.

Every transport hands each message it reads to ``TransportHost.deliver``; one task, the
endpoint's, takes them, so the sans-IO transaction table is never touched concurrently. This is
a bounded FIFO with that one consumer: a trio memory channel did the same, but a hand-off through
it cost a channel state machine, a ``WouldBlock`` raised and caught per empty poll and, around
each wait, a new cancel scope (session 29 profile, docs/benchmarks.md). Here the consumer parks
with :func:`trio.lowlevel.wait_task_rescheduled` and a delivery wakes it directly; the endpoint
keeps one cancel scope across its waits and moves its deadline.

Datagram sockets are read by the consumer itself (session 34). A stream transport's task reads
a connection and cuts frames, so it delivers from its own task; a datagram is a message as read,
and a task per UDP socket only moved each one to the endpoint's task: a second task step and a
second turn of trio's run loop per datagram, which at a few datagrams per wake-up cost about as
much as the endpoint's own dispatch. A datagram transport registers its socket here
(:meth:`InboundQueue.add_source`, through ``TransportHost.serve_datagrams``) with a function
that reads up to a number of ready datagrams and delivers each through :meth:`InboundQueue.put`.
:meth:`InboundQueue.take` calls it when nothing else is queued, and after every turn of queued
messages taken (else stream transports delivering as fast as the endpoint takes would leave the
UDP sockets unread, where a task per socket had its share of the queue), so a datagram waits in
the kernel's receive buffer (bounded by ``SO_RCVBUF``, its wait stamped by the kernel for overload
control) instead of in the gateway: a turn per source for each turn of messages taken, never
more than the queue has room for. While
sources are registered the consumer waits for the first of: a source readable, a delivery, its
deadline, on a level-triggered ``select.epoll`` holding the sources and an ``eventfd`` that a
delivery writes while the consumer waits (the media relay waits the same way,
gateway/core/media/relay.py). Linux only, as the relay.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import struct
from collections.abc import Callable

import trio

from gateway.core.transport.flows import Flow

Inbound = tuple[bytes, Flow, float]
"""A message's bytes, the flow it came over, and when it arrived (trio's clock)."""

DatagramReader = Callable[[int], bool]
"""Reads up to the given number of a socket's ready datagrams and delivers each (a keep-alive
is read and dropped); True when the socket had no more (``BlockingIOError``), False when it
stopped at the limit and may have more."""

# Linux's SO_MEMINFO (asm-generic/socket.h; Python does not name it): an array of u32, the
# socket's memory counters and, at SK_MEMINFO_DROPS (linux/sock_diag.h, Linux 4.7), its drops.
_SO_MEMINFO = 55
_SK_MEMINFO_DROPS = 8
_MEMINFO = struct.Struct("@9I")

DATAGRAMS_PER_TURN = 16
"""Datagrams read from one source per :meth:`InboundQueue.take` that finds the queue empty: the
endpoint lets the call tasks run every 16 messages it takes; a backlog past a turn waits in the
socket's receive buffer, not in the gateway."""


class InboundQueue:
    """Bounded FIFO of delivered messages with a single consumer task, which also reads the
    registered datagram sockets (module docstring)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: collections.deque[Inbound] = collections.deque()
        self._waiter: trio.lowlevel.Task | None = None
        self._abort_wait = self._abort  # bound once, not per wait
        # Datagram sources by descriptor, the readers that may have datagrams ready, and the
        # epoll (with the eventfd a delivery writes) the consumer waits on while there are any.
        self._sources: dict[int, DatagramReader] = {}
        self._ready: list[DatagramReader] = []
        self._epoll: select.epoll | None = None
        self._wake_fd = -1
        self._waiting_on_epoll = False
        self._wake_written = False
        # Messages taken from the queue since the sources were last read (take()).
        self._taken_queued = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Inbound) -> bool:
        """Queue ``item`` and wake the consumer; False (nothing queued) when full. Synchronous:
        a transport's task calls it and goes on reading."""
        items = self._items
        if len(items) >= self.size:
            return False
        items.append(item)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)
        elif self._waiting_on_epoll and not self._wake_written:
            self._wake_written = True
            os.eventfd_write(self._wake_fd, 1)
        return True

    def take(self) -> Inbound | None:
        """The oldest queued message, or None when there is none (no checkpoint). With nothing
        queued, each source that may have datagrams ready is read first (up to
        :data:`DATAGRAMS_PER_TURN` each); with messages queued, the sources are read after
        every :data:`DATAGRAMS_PER_TURN` of them taken, so that stream transports delivering
        as fast as the endpoint takes cannot keep the UDP sockets unread."""
        items = self._items
        if items:
            if self._sources:
                self._taken_queued += 1
                if self._taken_queued >= DATAGRAMS_PER_TURN:
                    if self._epoll is not None:
                        self._poll_ready()
                    self._read_ready()
            return items.popleft()
        ready = self._ready
        if ready:
            # A source that stops at the turn stays ready, and the consumer then never waits on
            # the epoll: the others are looked for here, or one flooded listener would keep
            # another's datagrams (IPv4 and IPv6, several listeners) unread while it lasts.
            if len(ready) < len(self._sources) and self._epoll is not None:
                self._poll_ready()
            self._read_ready()
        return items.popleft() if items else None

    def _read_ready(self) -> None:
        """Read a turn from each source that may have datagrams ready, no more than the queue
        has room for (the rest wait in the socket, the source staying ready)."""
        self._taken_queued = 0
        items = self._items
        size = self.size
        ready = []
        for read in self._ready:
            room = size - len(items)
            if room <= 0 or not read(min(room, DATAGRAMS_PER_TURN)):
                ready.append(read)
        self._ready = ready

    def _poll_ready(self) -> None:
        """Add the readable sources to the ready ones (and consume a delivery's wake-up)."""
        assert self._epoll is not None
        ready = self._ready
        sources = self._sources
        for fd, _ in self._epoll.poll(0):
            if fd == self._wake_fd:
                os.eventfd_read(fd)
                self._wake_written = False
            else:
                read = sources.get(fd)
                if read is not None and read not in ready:
                    ready.append(read)

    async def wait(self) -> None:
        """Park until a message is queued or a source is readable (return at once if one is).
        Not a checkpoint when it returns at once for a queued message. Cancellable; only one
        task may wait."""
        if self._items:
            return
        if self._ready:
            # A source read a whole turn and gave no message (keep-alives, ICMP errors): a
            # checkpoint, so that a flood of them cannot hold every other task up.
            await trio.lowlevel.checkpoint()
            return
        if self._waiter is not None or self._waiting_on_epoll:
            raise RuntimeError("another task is already waiting on the inbound queue")
        epoll = self._epoll
        if epoll is not None and not self._sources:
            self._close_epoll()
            epoll = None
        if epoll is None:
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_wait)
            return
        self._waiting_on_epoll = True
        try:
            await trio.lowlevel.wait_readable(epoll.fileno())
        finally:
            self._waiting_on_epoll = False
        self._poll_ready()

    def add_source(self, fd: int, read: DatagramReader) -> None:
        """Have the consumer read the datagram socket ``fd`` with ``read`` whenever it is
        readable, until :meth:`remove_source`."""
        if fd in self._sources:
            raise RuntimeError(f"descriptor {fd} is already a source")
        if self._epoll is None:
            self._epoll = select.epoll()
            self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._epoll.register(self._wake_fd, select.EPOLLIN)
        self._epoll.register(fd, select.EPOLLIN)
        self._sources[fd] = read
        # Datagrams may be waiting already; a consumer parked without the epoll waits on it
        # from its next wait.
        self._ready.append(read)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)

    def remove_source(self, fd: int) -> None:
        """Stop reading ``fd`` (before it is closed)."""
        read = self._sources.pop(fd, None)
        if read is None:
            return
        self._ready = [other for other in self._ready if other is not read]
        if self._epoll is not None:
            self._epoll.unregister(fd)

    def source_fds(self) -> list[int]:
        """The registered datagram sockets' descriptors."""
        return list(self._sources)

    def close(self) -> None:
        """Release the epoll and eventfd (the consumer has ended)."""
        self._sources.clear()
        self._ready = []
        if self._epoll is not None and not self._waiting_on_epoll:
            self._close_epoll()

    def _close_epoll(self) -> None:
        assert self._epoll is not None
        self._epoll.close()
        os.close(self._wake_fd)
        self._epoll = None
        self._wake_fd = -1
        self._wake_written = False

    def _abort(self, _: object) -> trio.lowlevel.Abort:
        # Cancelled while parked (the endpoint's timer deadline, or shutdown).
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED


def kernel_receive_drops(fds: list[int]) -> int:
    """Datagrams the kernel dropped on arrival at the sockets ``fds`` since they were opened,
    summed (a full receive buffer, above all: a backlog overload control did not get to, see
    ``udp.UdpConfig.receive_buffer``): each socket's drop count, the ``drops`` column of
    /proc/net/udp, read by ``SO_MEMINFO`` (socket(7); no walk of /proc/net/udp, which lists
    every media socket too). Read at a scrape, so a datagram costs nothing more. 0 where the
    kernel does not tell (not Linux, before 4.7)."""
    dropped = 0
    for fd in fds:
        try:
            # A duplicate of the descriptor: the socket object must not close the transport's.
            with socket.fromfd(fd, socket.AF_INET, socket.SOCK_DGRAM) as sock:
                meminfo = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, _MEMINFO.size)
        except OSError:
            continue  # closed since (shutdown), or not Linux
        if len(meminfo) >= _MEMINFO.size:
            dropped += _MEMINFO.unpack_from(meminfo)[_SK_MEMINFO_DROPS]
    return dropped
