"""In-memory reliable byte streams for TCP- and TLS-like component tests.

TCP keeps bytes in order but not write boundaries: one write may arrive in pieces and several
writes may arrive as one, so stream framing code (SIP over TCP frames by Content-Length,
RFC 3261 §18.3) must cope with both. :func:`memory_stream_pair` with a ``seed`` moves bytes
across in seeded random chunks, which exercises exactly that; without a seed it behaves like
:func:`trio.testing.memory_stream_pair` (each write arrives whole, or coalesced with others).

:class:`MemoryStreamNetwork` adds addresses: ``listen(address)`` and ``connect(address)`` give
the two ends of a connection, each knowing its local and remote address, as a flow table needs.
The streams are :class:`trio.abc.HalfCloseableStream`, so :class:`trio.SSLStream` runs over them.
Writes never block (there is no flow control); use :func:`trio.testing.lockstep_stream_pair` to
test backpressure.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
from random import Random

import attrs
import trio
import trio.testing

from gateway.core.transport.flows import format_address
from gateway.testing.network import EPHEMERAL_PORTS, Address

#: Largest chunk a seeded stream moves at once; small, so a SIP message arrives in many pieces.
DEFAULT_MAX_CHUNK = 64
#: Connections a listener holds before accept() takes them; more are refused.
DEFAULT_BACKLOG = 16
#: Addresses the two ends of a :func:`memory_stream_pair` report.
DEFAULT_PAIR_ADDRESSES: tuple[Address, Address] = (("127.0.0.1", 49152), ("127.0.0.1", 5060))


def chunked_one_way_pair(
    seed: int | str, *, max_chunk: int = DEFAULT_MAX_CHUNK
) -> tuple[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]:
    """A one-way in-memory stream whose bytes cross in random chunks of 1 to ``max_chunk``.

    Each ``send_all`` moves one chunk, and each ``receive_some`` moves one more before reading
    everything that has arrived, so writes are both split and coalesced. Chunk sizes come from
    ``random.Random(seed)``: the same seed and the same sequence of calls give the same pieces.
    (When a writer and a reader run in separate tasks, the pieces also depend on how trio
    interleaves them, which trio varies on purpose; write then read to pin them down.)
    """
    if max_chunk < 1:
        raise ValueError(f"max_chunk must be at least 1 byte, got {max_chunk}")
    sizes = Random(seed)
    send_stream = trio.testing.MemorySendStream()
    receive_stream = trio.testing.MemoryReceiveStream()

    def pump_one_chunk() -> None:
        # Moves nothing when the sender's buffer is empty; after close it delivers EOF.
        max_bytes = sizes.randint(1, max_chunk)
        trio.testing.memory_stream_pump(send_stream, receive_stream, max_bytes=max_bytes)

    async def pump_one_chunk_async() -> None:
        pump_one_chunk()

    send_stream.send_all_hook = pump_one_chunk_async
    send_stream.close_hook = pump_one_chunk
    receive_stream.receive_some_hook = pump_one_chunk_async
    return send_stream, receive_stream


@attrs.define(eq=False)
class MemoryStream(trio.abc.HalfCloseableStream):
    """One end of an in-memory connection: a trio stream that knows its addresses."""

    send_stream: trio.testing.MemorySendStream = attrs.field(repr=False)
    receive_stream: trio.testing.MemoryReceiveStream = attrs.field(repr=False)
    local_address: Address
    remote_address: Address

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.send_stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.send_stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.send_stream.aclose()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.receive_stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        self.close()
        await trio.lowlevel.checkpoint()

    def close(self) -> None:
        """Close both directions now; the peer reads EOF and its writes fail."""
        self.receive_stream.close()
        # If the peer closed first, pushing our unsent bytes to it fails: nobody is left to tell.
        with contextlib.suppress(trio.BrokenResourceError):
            self.send_stream.close()


def memory_stream_pair(
    seed: int | str | None = None,
    *,
    max_chunk: int = DEFAULT_MAX_CHUNK,
    addresses: tuple[Address, Address] = DEFAULT_PAIR_ADDRESSES,
) -> tuple[MemoryStream, MemoryStream]:
    """Two connected in-memory streams, ``(client, server)``.

    With a ``seed``, each direction moves bytes in seeded random chunks (see
    :func:`chunked_one_way_pair`); without, writes cross whole. ``addresses`` are the client's
    and the server's address, reported as ``local_address``/``remote_address``.
    """
    if seed is None:
        forward = trio.testing.memory_stream_one_way_pair()
        backward = trio.testing.memory_stream_one_way_pair()
    else:
        # One generator per direction, so the pieces in one direction do not depend on how the
        # two directions' calls interleave.
        forward = chunked_one_way_pair(f"{seed}/client-to-server", max_chunk=max_chunk)
        backward = chunked_one_way_pair(f"{seed}/server-to-client", max_chunk=max_chunk)
    client_address, server_address = addresses
    client = MemoryStream(forward[0], backward[1], client_address, server_address)
    server = MemoryStream(backward[0], forward[1], server_address, client_address)
    return client, server


@attrs.define(eq=False)
class MemoryListener(trio.abc.Listener[MemoryStream]):
    """A listening address on a :class:`MemoryStreamNetwork`; create it with ``listen()``."""

    address: Address
    _network: MemoryStreamNetwork = attrs.field(repr=False)
    _pending_send: trio.MemorySendChannel[MemoryStream] = attrs.field(repr=False)
    _pending: trio.MemoryReceiveChannel[MemoryStream] = attrs.field(repr=False)

    async def accept(self) -> MemoryStream:
        """Wait for the next connection; returns the server end."""
        return await self._pending.receive()

    async def aclose(self) -> None:
        """Stop listening; connections not yet accepted are closed (their clients read EOF)."""
        if self._network._listeners.get(self.address) is self:
            del self._network._listeners[self.address]
        while True:
            try:
                stream = self._pending.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            stream.close()
        self._pending_send.close()
        self._pending.close()
        await trio.lowlevel.checkpoint()


class MemoryStreamNetwork:
    """Stream listeners and connections by address, in memory.

    With a ``seed``, connection number *n* moves bytes in chunks seeded from ``(seed, n)``, so
    the same connects in the same order give the same pieces.
    """

    def __init__(self, seed: int | None = None, *, max_chunk: int = DEFAULT_MAX_CHUNK) -> None:
        self.seed = seed
        self.max_chunk = max_chunk
        self._listeners: dict[Address, MemoryListener] = {}
        self._connections = itertools.count()
        self._ports = itertools.cycle(EPHEMERAL_PORTS)

    def listen(self, address: Address, *, backlog: int = DEFAULT_BACKLOG) -> MemoryListener:
        """Listen on ``address`` (port 0 picks one: read ``listener.address``).

        An address already listened on raises ``OSError(EADDRINUSE)``.
        """
        host, port = address
        if port == 0:
            port = next(p for p in self._ports if (host, p) not in self._listeners)
        if (host, port) in self._listeners:
            raise OSError(errno.EADDRINUSE, f"address in use: {format_address((host, port))}")
        if backlog < 1:
            raise ValueError(f"backlog must be at least 1, got {backlog}")
        pending_send, pending = trio.open_memory_channel[MemoryStream](backlog)
        listener = MemoryListener((host, port), self, pending_send, pending)
        self._listeners[(host, port)] = listener
        return listener

    async def connect(self, address: Address, *, local_host: str = "127.0.0.1") -> MemoryStream:
        """Connect to a listener; returns the client end, its port picked from the ephemeral range.

        Raises :class:`ConnectionRefusedError` when nothing listens on ``address`` or its backlog
        is full (a real kernel would let the SYN time out; refusing keeps tests fast and clear).
        """
        await trio.lowlevel.checkpoint()
        listener = self._listeners.get(address)
        if listener is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"nothing listens on {address!r}")
        number = next(self._connections)
        seed = None if self.seed is None else f"{self.seed}/{number}"
        local_address = (local_host, next(self._ports))
        client, server = memory_stream_pair(
            seed, max_chunk=self.max_chunk, addresses=(local_address, address)
        )
        try:
            listener._pending_send.send_nowait(server)
        except trio.WouldBlock:
            raise ConnectionRefusedError(
                errno.ECONNREFUSED, f"backlog of {address!r} is full"
            ) from None
        return client
