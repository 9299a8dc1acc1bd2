"""An in-memory datagram network for component tests, on trio's (virtual) clock.

Sockets bound on a :class:`MemoryNetwork` exchange datagrams through one delivery task that
sleeps on the trio clock, so under pytest-trio's ``autojump_clock`` a two-second delay costs no
real time and the clock reads exactly ``send time + delay`` when the datagram arrives.

Every random choice (loss, duplication, reordering, delay) is drawn from one
``random.Random(seed)`` at ``sendto`` time, in send order, and datagrams due at the same instant
are delivered in send order: the same seed and the same sends give the same deliveries.
A failing test is reproduced by rerunning it with the seed it printed.

Typical use::

    async def test_invite_survives_loss(autojump_clock):
        async with MemoryNetwork(seed=7, drop=0.3, delay=(0.01, 0.05)) as net:
            uac = net.bind(("127.0.0.1", 0))
            uas = net.bind(("127.0.0.1", 5060))
            ...
            assert net.statistics().dropped > 0

Like UDP, nothing here retransmits or reports loss: a datagram sent to an address where no socket
is bound, or to a socket whose receive queue is full, is counted and discarded.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import math
from contextlib import AbstractAsyncContextManager
from random import Random
from types import TracebackType
from typing import Any, TypeAlias

import attrs
import trio

from gateway.core.transport.flows import format_address

Address: TypeAlias = tuple[str, int]

#: Largest UDP payload over IPv4: 65535 minus the 20-byte IP and 8-byte UDP headers (RFC 768).
MAX_DATAGRAM_SIZE = 65507
#: Receive queue length in datagrams when :meth:`MemoryNetwork.bind` is not told otherwise.
DEFAULT_RECEIVE_BUFFER = 256
#: How long a reordered datagram is held back at most: one 20 ms RTP packetization interval,
#: so the next packet of a stream usually overtakes it.
DEFAULT_REORDER_WINDOW = 0.02
#: Port 0 binds pick from the IANA dynamic port range (RFC 6335 §6).
EPHEMERAL_PORTS = range(49152, 65536)

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})


def _check_probability(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


def _check_delay(_instance: object, _attribute: object, value: float | tuple[float, float]) -> None:
    low, high = value if isinstance(value, tuple) else (value, value)
    if not 0.0 <= low <= high:
        raise ValueError(f"delay must be >= 0 seconds, or a (low, high) range; got {value!r}")


def _check_window(_instance: object, _attribute: object, value: float) -> None:
    if value < 0.0:
        raise ValueError(f"reorder_window must be >= 0 seconds, got {value!r}")


@attrs.frozen
class Impairment:
    """What a link does to each datagram; probabilities are per datagram, from 0 to 1.

    ``drop``: the datagram is lost. ``duplicate``: a second copy is sent, with its own delay.
    ``reorder``: the datagram is held back a further uniform(0, ``reorder_window``) seconds, so
    datagrams sent after it may overtake it. ``delay``: one-way delay in seconds, fixed or drawn
    uniformly from a ``(low, high)`` range (a range also reorders).
    """

    drop: float = attrs.field(default=0.0, validator=_check_probability)
    duplicate: float = attrs.field(default=0.0, validator=_check_probability)
    reorder: float = attrs.field(default=0.0, validator=_check_probability)
    delay: float | tuple[float, float] = attrs.field(default=0.0, validator=_check_delay)
    reorder_window: float = attrs.field(default=DEFAULT_REORDER_WINDOW, validator=_check_window)


@attrs.frozen
class CapturedDatagram:
    """One datagram: when it was sent (in ``capture``) or when it arrived (in ``deliveries``)."""

    time: float
    src: Address
    dst: Address
    data: bytes


@attrs.define
class NetworkStatistics:
    """Datagram counters for a whole :class:`MemoryNetwork`; ``statistics()`` returns a copy.

    ``sent`` counts ``sendto`` calls; ``dropped``, ``duplicated`` and ``reordered`` count what the
    impairments did; ``delivered`` counts datagrams put in a receive queue (duplicates included);
    ``overflowed`` those that found the queue full; ``unreachable`` those sent where no socket
    is bound.
    """

    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delivered: int = 0
    overflowed: int = 0
    unreachable: int = 0


@attrs.frozen
class SocketStatistics:
    """One socket's receive queue: datagrams waiting, its size, and arrivals dropped when full."""

    queued: int
    receive_buffer: int
    overflowed: int


def _check_address(address: Address, *, allow_port_zero: bool) -> Address:
    host, port = address
    if not isinstance(host, str) or not isinstance(port, int):
        raise TypeError(f"address must be a (host: str, port: int) tuple, got {address!r}")
    if not (0 if allow_port_zero else 1) <= port <= 65535:
        raise ValueError(f"port out of range in {address!r}")
    return (host, port)


class MemoryDatagramSocket:
    """A UDP-like socket on a :class:`MemoryNetwork`; create it with :meth:`MemoryNetwork.bind`.

    Arrivals wait in a bounded queue of ``receive_buffer`` datagrams; when it is full, further
    arrivals are dropped and counted, as a kernel does when a socket buffer fills.
    """

    def __init__(self, network: MemoryNetwork, address: Address, receive_buffer: int) -> None:
        self._network = network
        self._address = address
        self._receive_buffer = receive_buffer
        self._overflowed = 0
        self._closed = False
        self._incoming_send, self._incoming = trio.open_memory_channel[tuple[bytes, Address]](
            receive_buffer
        )

    def __repr__(self) -> str:
        return f"<MemoryDatagramSocket {self._address[0]}:{self._address[1]}>"

    def __enter__(self) -> MemoryDatagramSocket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def getsockname(self) -> Address:
        """The address this socket is bound to (the chosen port if it was bound to port 0)."""
        return self._address

    async def sendto(self, data: bytes | bytearray | memoryview, address: Address) -> int:
        """Send one datagram to ``address``; returns its length. Never blocks, like UDP."""
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("socket is closed")
        payload = bytes(data)
        if len(payload) > MAX_DATAGRAM_SIZE:
            raise OSError(errno.EMSGSIZE, f"datagram of {len(payload)} bytes is too long")
        dst = _check_address(address, allow_port_zero=False)
        self._network._transmit(self._address, dst, payload)
        return len(payload)

    async def recvfrom(self, bufsize: int = MAX_DATAGRAM_SIZE) -> tuple[bytes, Address]:
        """Wait for the next datagram; returns ``(data, sender)``.

        Like a real datagram socket, bytes beyond ``bufsize`` are discarded.
        """
        data, src = await self._incoming.receive()
        return data[:bufsize], src

    def close(self) -> None:
        """Unbind the address and discard queued datagrams; blocked ``recvfrom`` calls raise
        :class:`trio.ClosedResourceError`. Closing twice is harmless."""
        if self._closed:
            return
        self._closed = True
        self._network._unbind(self._address)
        self._incoming.close()  # first, so a blocked recvfrom sees ClosedResourceError, not EOF
        self._incoming_send.close()

    def statistics(self) -> SocketStatistics:
        """The receive queue's current length, size and overflow count."""
        used = 0 if self._closed else self._incoming.statistics().current_buffer_used
        return SocketStatistics(used, self._receive_buffer, self._overflowed)

    def _enqueue(self, data: bytes, src: Address) -> bool:
        try:
            self._incoming_send.send_nowait((data, src))
        except trio.WouldBlock:
            self._overflowed += 1
            return False
        return True


class MemoryNetwork:
    """A seeded, impaired, in-memory datagram network; see the module docstring.

    The keyword arguments set the :class:`Impairment` of every link; :meth:`set_link` overrides
    it for one direction between two addresses. Datagrams move only while the network is served:
    ``async with MemoryNetwork(...) as net:``, or ``await nursery.start(net.serve)``.

    ``capture`` lists every datagram at send time (dropped ones included), ``deliveries`` every
    datagram put in a receive queue at arrival time: assert on them as on a packet trace.
    """

    def __init__(
        self,
        seed: int,
        *,
        drop: float = 0.0,
        duplicate: float = 0.0,
        reorder: float = 0.0,
        delay: float | tuple[float, float] = 0.0,
        reorder_window: float = DEFAULT_REORDER_WINDOW,
    ) -> None:
        self.seed = seed
        self.impairment = Impairment(
            drop=drop,
            duplicate=duplicate,
            reorder=reorder,
            delay=delay,
            reorder_window=reorder_window,
        )
        self.capture: list[CapturedDatagram] = []
        self.deliveries: list[CapturedDatagram] = []
        self._random = Random(seed)
        self._links: dict[tuple[Address, Address], dict[str, Any]] = {}
        self._sockets: dict[Address, MemoryDatagramSocket] = {}
        self._next_ephemeral = EPHEMERAL_PORTS.start
        self._stats = NetworkStatistics()
        # Heap of (arrival time, send sequence number, src, dst, data): the sequence number keeps
        # simultaneous arrivals in send order, whatever order trio runs tasks in.
        self._in_flight: list[tuple[float, int, Address, Address, bytes]] = []
        self._sequence = itertools.count()
        self._wakeup = trio.Event()
        self._serving = False
        self._nursery_manager: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._cancel_scope: trio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<MemoryNetwork seed={self.seed} {self.impairment!r}>"

    def bind(
        self, address: Address, *, receive_buffer: int = DEFAULT_RECEIVE_BUFFER
    ) -> MemoryDatagramSocket:
        """Bind a socket to ``address``; port 0 picks a free port (read it with getsockname).

        Binding an address already in use raises ``OSError(EADDRINUSE)``. Addresses match
        exactly, so wildcard hosts (``0.0.0.0``, ``::``) are refused: bind the address peers use.
        """
        host, port = _check_address(address, allow_port_zero=True)
        if host in _WILDCARD_HOSTS:
            raise ValueError(f"wildcard host {host!r} is not supported; bind a concrete address")
        if receive_buffer < 1:
            raise ValueError(f"receive_buffer must be at least 1 datagram, got {receive_buffer}")
        if port == 0:
            port = self._free_port(host)
        elif (host, port) in self._sockets:
            raise OSError(errno.EADDRINUSE, f"address in use: {format_address((host, port))}")
        sock = MemoryDatagramSocket(self, (host, port), receive_buffer)
        self._sockets[(host, port)] = sock
        return sock

    def set_link(
        self,
        src: Address,
        dst: Address,
        *,
        drop: float | None = None,
        duplicate: float | None = None,
        reorder: float | None = None,
        delay: float | tuple[float, float] | None = None,
        reorder_window: float | None = None,
    ) -> None:
        """Override impairments for datagrams from ``src`` to ``dst`` (one direction only).

        Arguments left as None follow the network's ``impairment``, even if it changes later.
        """
        given: dict[str, Any] = {
            "drop": drop,
            "duplicate": duplicate,
            "reorder": reorder,
            "delay": delay,
            "reorder_window": reorder_window,
        }
        overrides = {name: value for name, value in given.items() if value is not None}
        attrs.evolve(self.impairment, **overrides)  # validate now, not at the next send
        self._links[(src, dst)] = overrides

    def clear_link(self, src: Address, dst: Address) -> None:
        """Remove the override set by :meth:`set_link`, if any."""
        self._links.pop((src, dst), None)

    def link_impairment(self, src: Address, dst: Address) -> Impairment:
        """The impairment that datagrams from ``src`` to ``dst`` get."""
        overrides = self._links.get((src, dst))
        return self.impairment if overrides is None else attrs.evolve(self.impairment, **overrides)

    def statistics(self) -> NetworkStatistics:
        """A snapshot of the network's counters."""
        return attrs.evolve(self._stats)

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver datagrams until cancelled: ``await nursery.start(net.serve)``."""
        self._claim()
        try:
            task_status.started()
            await self._deliver_forever()
        finally:
            self._serving = False

    async def __aenter__(self) -> MemoryNetwork:
        if self._serving:
            raise RuntimeError("this MemoryNetwork is already being served")
        manager = trio.open_nursery()
        nursery = await manager.__aenter__()
        self._claim()
        nursery.start_soon(self._deliver_forever)
        self._nursery_manager, self._cancel_scope = manager, nursery.cancel_scope
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._nursery_manager is not None and self._cancel_scope is not None
        manager, self._nursery_manager = self._nursery_manager, None
        self._cancel_scope.cancel()
        try:
            # Only the delivery task runs in this nursery and it was just cancelled, so it exits
            # cleanly; an exception from the body propagates as itself, not in an ExceptionGroup.
            await manager.__aexit__(None, None, None)
        finally:
            self._serving = False

    def _claim(self) -> None:
        if self._serving:
            raise RuntimeError("this MemoryNetwork is already being served")
        self._serving = True

    def _free_port(self, host: str) -> int:
        # Rotate through the range rather than reuse the lowest free port, so a datagram still
        # in flight to a closed socket does not reach the next socket bound.
        for _ in EPHEMERAL_PORTS:
            port = self._next_ephemeral
            self._next_ephemeral = port + 1 if port + 1 in EPHEMERAL_PORTS else EPHEMERAL_PORTS[0]
            if (host, port) not in self._sockets:
                return port
        raise OSError(errno.EADDRNOTAVAIL, f"no free ephemeral port on {host}")

    def _unbind(self, address: Address) -> None:
        del self._sockets[address]

    def _transmit(self, src: Address, dst: Address, data: bytes) -> None:
        if not self._serving:
            raise RuntimeError(
                "MemoryNetwork is not running: use 'async with net:' or nursery.start(net.serve)"
            )
        now = trio.current_time()
        self._stats.sent += 1
        self.capture.append(CapturedDatagram(now, src, dst, data))
        link = self.link_impairment(src, dst)
        rng = self._random
        if rng.random() < link.drop:
            self._stats.dropped += 1
            return
        copies = 1
        if rng.random() < link.duplicate:
            self._stats.duplicated += 1
            copies = 2
        for _ in range(copies):
            delay = rng.uniform(*link.delay) if isinstance(link.delay, tuple) else link.delay
            if rng.random() < link.reorder:
                self._stats.reordered += 1
                delay += rng.uniform(0.0, link.reorder_window)
            heapq.heappush(self._in_flight, (now + delay, next(self._sequence), src, dst, data))
        self._wakeup.set()

    async def _deliver_forever(self) -> None:
        while True:
            now = trio.current_time()
            while self._in_flight and self._in_flight[0][0] <= now:
                _, _, src, dst, data = heapq.heappop(self._in_flight)
                self._deliver(now, src, dst, data)
            # No checkpoint between here and wait(): a sendto cannot slip in and set the old event.
            self._wakeup = trio.Event()
            deadline = self._in_flight[0][0] if self._in_flight else math.inf
            with trio.move_on_at(deadline):
                await self._wakeup.wait()

    def _deliver(self, now: float, src: Address, dst: Address, data: bytes) -> None:
        sock = self._sockets.get(dst)
        if sock is None:
            self._stats.unreachable += 1
        elif sock._enqueue(data, src):
            self._stats.delivered += 1
            self.deliveries.append(CapturedDatagram(now, src, dst, data))
        else:
            self._stats.overflowed += 1
