"""In-memory streams: trio's stream conformance, seeded chunking, listen/connect by address."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from gateway.testing.streams import (
    MemoryStream,
    MemoryStreamNetwork,
    chunked_one_way_pair,
    memory_stream_pair,
)

SERVER = ("127.0.0.1", 5060)


async def test_an_unseeded_pair_passes_trios_stream_conformance_checks() -> None:
    async def make() -> tuple[MemoryStream, MemoryStream]:
        return memory_stream_pair()

    await trio.testing.check_half_closeable_stream(make, None)


async def test_a_seeded_pair_passes_trios_stream_conformance_checks() -> None:
    async def make() -> tuple[MemoryStream, MemoryStream]:
        return memory_stream_pair(seed=9)

    await trio.testing.check_half_closeable_stream(make, None)


WRITES = [b"INVITE sip:bob@example.com SIP/2.0\r\n" * 3, b"ACK\r\n", b"BYE\r\n" * 4, b"x" * 200]


async def _write_then_read(seed: int, writes: list[bytes]) -> list[bytes]:
    """Write everything, then read to EOF in the same task: the pieces depend on the seed only."""
    client, server = memory_stream_pair(seed, max_chunk=16)
    for data in writes:
        await client.send_all(data)
    await client.send_eof()
    return [bytes(piece) async for piece in server]


async def test_chunking_splits_writes_without_losing_or_reordering_bytes() -> None:
    client, server = memory_stream_pair(seed=1, max_chunk=16)
    pieces: list[bytes] = []

    async def read_to_eof() -> None:
        async for piece in server:
            pieces.append(bytes(piece))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_to_eof)
        for data in WRITES:
            await client.send_all(data)
        await client.send_eof()
    assert b"".join(pieces) == b"".join(WRITES)
    assert len(pieces) > len(WRITES)
    assert max(len(piece) for piece in pieces) < len(WRITES[0])  # no write arrived whole


async def test_chunking_also_coalesces_writes() -> None:
    pieces = await _write_then_read(seed=1, writes=WRITES)
    assert b"".join(pieces) == b"".join(WRITES)
    write_ends = {sum(len(w) for w in WRITES[: i + 1]) for i in range(len(WRITES) - 1)}
    spanned: set[int] = set()
    position = 0
    for piece in pieces:
        spanned.update(range(position + 1, position + len(piece)))  # offsets inside the piece
        position += len(piece)
    assert write_ends & spanned, "some piece should hold the end of one write and the next"


async def test_the_same_seed_gives_the_same_pieces() -> None:
    first = await _write_then_read(seed=4, writes=WRITES)
    assert await _write_then_read(seed=4, writes=WRITES) == first
    assert await _write_then_read(seed=5, writes=WRITES) != first


async def test_chunks_respect_max_chunk_per_pump() -> None:
    send, receive = chunked_one_way_pair(seed=2, max_chunk=1)
    await send.send_all(b"abc")
    assert await receive.receive_some() == b"ab"  # one byte at send_all, one at receive_some
    assert await receive.receive_some() == b"c"


def test_max_chunk_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_chunk"):
        chunked_one_way_pair(seed=1, max_chunk=0)


async def test_an_unseeded_pair_delivers_a_write_whole() -> None:
    client, server = memory_stream_pair()
    await client.send_all(b"OPTIONS sip:a SIP/2.0\r\n\r\n")
    assert await server.receive_some() == b"OPTIONS sip:a SIP/2.0\r\n\r\n"


async def test_connect_pairs_with_accept_and_both_ends_know_the_addresses() -> None:
    net = MemoryStreamNetwork(seed=1)
    listener = net.listen(SERVER)
    client = await net.connect(SERVER)
    server = await listener.accept()
    assert client.remote_address == server.local_address == SERVER
    assert server.remote_address == client.local_address
    await client.send_all(b"REGISTER")
    received = b""
    while len(received) < 8:
        received += await server.receive_some()
    assert received == b"REGISTER"


async def test_listening_on_port_zero_picks_a_port() -> None:
    net = MemoryStreamNetwork()
    listener = net.listen(("127.0.0.1", 0))
    assert listener.address[1] != 0
    client = await net.connect(listener.address)
    assert (await listener.accept()).remote_address == client.local_address


async def test_listening_twice_on_an_address_raises_eaddrinuse() -> None:
    net = MemoryStreamNetwork()
    net.listen(SERVER)
    with pytest.raises(OSError) as excinfo:
        net.listen(SERVER)
    assert excinfo.value.errno == errno.EADDRINUSE


async def test_connecting_where_nobody_listens_is_refused() -> None:
    with pytest.raises(ConnectionRefusedError):
        await MemoryStreamNetwork().connect(SERVER)


async def test_a_full_backlog_refuses_connections() -> None:
    net = MemoryStreamNetwork()
    net.listen(SERVER, backlog=2)
    await net.connect(SERVER)
    await net.connect(SERVER)
    with pytest.raises(ConnectionRefusedError, match="backlog"):
        await net.connect(SERVER)


async def test_closing_a_listener_closes_unaccepted_connections() -> None:
    net = MemoryStreamNetwork()
    listener = net.listen(SERVER)
    client = await net.connect(SERVER)
    await listener.aclose()
    assert await client.receive_some() == b""  # EOF
    with pytest.raises(trio.BrokenResourceError):
        await client.send_all(b"anyone?")
    with pytest.raises(trio.ClosedResourceError):
        await listener.accept()
    with pytest.raises(ConnectionRefusedError):
        await net.connect(SERVER)
    net.listen(SERVER)  # the address is free again


async def test_seeded_connections_are_chunked_the_same_way_each_run() -> None:
    async def pieces_of_first_connection(seed: int) -> list[bytes]:
        net = MemoryStreamNetwork(seed, max_chunk=8)
        listener = net.listen(SERVER)
        client = await net.connect(SERVER)
        server = await listener.accept()
        await client.send_all(b"SUBSCRIBE sip:presence@example.com SIP/2.0\r\n")
        await client.send_eof()
        return [bytes(piece) async for piece in server]

    first = await pieces_of_first_connection(3)
    assert len(first) > 1
    assert await pieces_of_first_connection(3) == first
