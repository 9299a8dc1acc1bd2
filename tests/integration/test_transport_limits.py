"""TCP transport limits on real sockets: connections per source address and the idle timeout."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.plugins import load_plugins
from tests.port_blocks import PortLease


@pytest.fixture
async def gateway(port_lease: PortLease, tmp_path: Path) -> AsyncIterator[Gateway]:
    config = from_mapping(
        {
            "gateway": {"state_dir": str(tmp_path / "state")},
            "sip": {"listen": ["tcp:127.0.0.1:0"]},
            "media": {"ports": port_lease.text(20)},
            "plugins": {
                "enable": ["tcp"],
                "tcp": {"max_connections_per_source": 2, "idle_timeout": 0.5},
            },
        }
    )
    gw = Gateway(config, load_plugins(config), ids=SeededIds(3))
    async with trio.open_nursery() as nursery:
        await nursery.start(gw.serve)
        yield gw
        nursery.cancel_scope.cancel()


async def _closed_by_peer(stream: trio.SocketStream, within: float) -> bool:
    with trio.move_on_after(within):
        try:
            return await stream.receive_some(100) == b""
        except trio.BrokenResourceError:
            return True
    return False


async def test_connections_beyond_the_per_source_limit_are_closed(gateway: Gateway) -> None:
    port = gateway.listeners[0].address[1]
    kept = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
    extra = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        assert await _closed_by_peer(extra, within=5)
        # The two within the limit are still open: a keep-alive ping gets its pong.
        for stream in kept:
            await stream.send_all(b"\r\n\r\n")
            with trio.fail_after(5):
                assert await stream.receive_some(10) == b"\r\n"
    finally:
        for stream in (*kept, extra):
            await stream.aclose()


async def test_idle_connections_are_closed(gateway: Gateway) -> None:
    port = gateway.listeners[0].address[1]
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        with trio.fail_after(5):
            while len(gateway.flows) == 0:
                await trio.sleep(0.01)
        assert await _closed_by_peer(stream, within=5)
    with trio.fail_after(5):
        while len(gateway.flows):
            await trio.sleep(0.01)
