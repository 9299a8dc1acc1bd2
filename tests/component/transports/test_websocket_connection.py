"""One ws connection driven over in-memory streams (autojump_clock): the flow it makes, SIP in
and out, pings when quiet, the idle timeout and the handshake time limit.

The server end is the ws transport's own connection code; the client is wsproto's client side
on the other end of a seeded chunked stream, so messages arrive in pieces.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

from gateway.core.interfaces import TransportLimits
from gateway.core.transport.flows import Flow, FlowTable
from gateway.plugins.transports.tcp import ConnectionInfo
from gateway.plugins.transports.ws import WsConfig, WsTransport
from gateway.testing.streams import MemoryStream, memory_stream_pair

OPTIONS = (
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/WS abc.invalid;branch=z9hG4bKws1\r\n"
    b"Max-Forwards: 70\r\nTo: <sip:127.0.0.1>\r\nFrom: <sip:a@abc.invalid>;tag=1\r\n"
    b"Call-ID: ws1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)
LOCAL = ("127.0.0.1", 5066)
REMOTE = ("127.0.0.1", 49152)


@attrs.define
class Host:
    """The TransportHost a transport is given: a flow table, limits, and what it delivered."""

    flows: FlowTable = attrs.Factory(FlowTable)
    limits: TransportLimits = attrs.Factory(lambda: TransportLimits(max_message_size=4096))
    state_dir: Path = attrs.Factory(lambda: Path("unused"))
    delivered: list[tuple[bytes, Flow]] = attrs.Factory(list)
    closed: list[Flow] = attrs.Factory(list)

    def deliver(self, data: bytes, flow: Flow, *, waited: float = 0.0) -> None:
        self.delivered.append((data, flow))

    def flow_closed(self, flow: Flow) -> None:
        self.closed.append(flow)

    def peer_name(self, remote: tuple[str, int]) -> str | None:
        return None


class Client:
    """wsproto's client side over one end of the in-memory stream."""

    def __init__(self, stream: MemoryStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)

    async def send(self, event: object) -> None:
        await self.stream.send_all(self.ws.send(event))  # type: ignore[arg-type]

    async def next_event(self) -> object | None:
        """The next event from the server; None when it closed the connection."""
        while True:
            for event in self.ws.events():
                return event
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.ws.receive_data(data)

    async def open(self) -> None:
        await self.send(Request(host="127.0.0.1", target="/", subprotocols=["sip"]))
        accepted = await self.next_event()
        assert isinstance(accepted, AcceptConnection)
        assert accepted.subprotocol == "sip"


async def start(nursery: trio.Nursery, host: Host, config: WsConfig) -> Client:
    client_end, server_end = memory_stream_pair(seed=7, addresses=(REMOTE, LOCAL))
    transport = WsTransport(config)
    nursery.start_soon(transport._run_connection, server_end, ConnectionInfo(), LOCAL, REMOTE, host)
    return Client(client_end)


async def wait_for(condition: object) -> None:
    with trio.fail_after(5):
        while not condition():  # type: ignore[operator]
            await trio.sleep(0.01)


async def test_sip_both_ways_over_one_flow(autojump_clock: trio.testing.MockClock) -> None:
    host = Host()
    async with trio.open_nursery() as nursery:
        client = await start(nursery, host, WsConfig())
        await client.open()
        await client.send(TextMessage(data=OPTIONS.decode()))
        await wait_for(lambda: host.delivered)
        data, flow = host.delivered[0]
        assert data == OPTIONS
        assert flow.transport == "ws" and flow.reliable and not flow.secure
        assert flow.remote == REMOTE
        assert host.flows.find("ws", REMOTE) is flow
        await flow.send(b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        answer = await client.next_event()
        assert answer == TextMessage(data="SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
        await client.send(CloseConnection(code=1000))
        assert isinstance(await client.next_event(), CloseConnection)
        await wait_for(lambda: host.closed)
        assert host.closed == [flow]
        assert flow.closed
        assert host.flows.find("ws", REMOTE) is None


async def test_quiet_connection_is_pinged_then_closed_when_nothing_answers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = Host()
    config = WsConfig(ping_interval=30.0, idle_timeout=90.0)
    async with trio.open_nursery() as nursery:
        client = await start(nursery, host, config)
        await client.open()
        opened_at = trio.current_time()
        pings = []
        while isinstance(event := await client.next_event(), Ping):
            pings.append(trio.current_time() - opened_at)  # not answered
        assert pings == [30.0, 60.0]
        assert isinstance(event, CloseConnection)
        assert event.code == 1001
        assert trio.current_time() - opened_at == 90.0
        await wait_for(lambda: host.closed)


async def test_answered_pings_keep_the_connection_open(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = Host()
    async with trio.open_nursery() as nursery:
        client = await start(nursery, host, WsConfig(ping_interval=30.0, idle_timeout=90.0))
        await client.open()
        opened_at = trio.current_time()
        for _ in range(10):
            ping = await client.next_event()
            assert isinstance(ping, Ping)
            await client.send(ping.response())
        assert trio.current_time() - opened_at == 300.0
        assert not host.closed
        assert len(host.flows) == 1
        nursery.cancel_scope.cancel()


async def test_no_handshake_within_the_limit_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = Host()
    async with trio.open_nursery() as nursery:
        client = await start(nursery, host, WsConfig(handshake_timeout=10.0))
        start_time = trio.current_time()
        await client.stream.send_all(b"GET / HTTP/1.1\r\n")  # and nothing more
        assert await client.next_event() is None
        assert trio.current_time() - start_time == 10.0
        assert len(host.flows) == 0 and not host.closed  # no flow was ever made


async def test_oversize_message_closes_only_after_counting_fragments(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = Host(limits=TransportLimits(max_message_size=len(OPTIONS)))
    async with trio.open_nursery() as nursery:
        client = await start(nursery, host, WsConfig())
        await client.open()
        await client.send(TextMessage(data=OPTIONS.decode()))  # exactly at the limit: fine
        await client.send(TextMessage(data=OPTIONS.decode() + " "))
        close = await client.next_event()
        assert isinstance(close, CloseConnection)
        assert close.code == 1009
        await wait_for(lambda: host.closed)
        assert [data for data, _ in host.delivered] == [OPTIONS]
