"""Requests whose answers would not fit a UDP datagram, on real sockets (127.0.0.1, port 0):
the kernel's limit is real here (sendto of more than 65507 bytes fails with EMSGSIZE). Over
UDP such a request gets a 513 when that fits, else no answer (counted); over TCP, which has no
datagram limit, the same request is served, its header block longer than the 32 KiB the TCP
framer used to allow whatever ``[sip] max_message_size`` said (tests/component/calls/
test_endpoint_udp_answer_size.py has the details in virtual time)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from gateway.core.config import from_mapping
from gateway.core.endpoint import MAX_UDP_PAYLOAD
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.plugins import load_plugins
from gateway.core.sip.message import Response
from gateway.core.sip.parser import parse_message_untrusted
from tests.component.calls.udp_requests import request
from tests.integration.gateway_options import options, port_of
from tests.port_blocks import PortLease


@pytest.fixture
async def gateway(port_lease: PortLease, tmp_path: Path) -> AsyncIterator[Gateway]:
    config = from_mapping(
        {
            "gateway": {"state_dir": str(tmp_path / "state")},
            "sip": {"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]},
            "media": {"ports": port_lease.text(20)},
        }
    )
    gw = Gateway(config, load_plugins(config), ids=SeededIds(5))
    async with trio.open_nursery() as nursery:
        await nursery.start(gw.serve)
        yield gw
        nursery.cancel_scope.cancel()


def largest(uri: str) -> bytes:
    """An OPTIONS of exactly the largest UDP payload, nearly all of it Via (repeated in any
    answer): not even a 513 fits."""
    data = request("OPTIONS", uri, echoed=MAX_UDP_PAYLOAD)
    data = request("OPTIONS", uri, echoed=2 * MAX_UDP_PAYLOAD - len(data))
    assert len(data) == MAX_UDP_PAYLOAD
    return data


async def first_answer(sock: trio.socket.SocketType) -> Response:
    with trio.fail_after(5):
        data, _ = await sock.recvfrom(65535)
    message = parse_message_untrusted(data)
    assert isinstance(message, Response)
    return message


async def test_over_udp_a_513_when_it_fits_else_no_answer(gateway: Gateway) -> None:
    port = port_of(gateway, "udp")
    uri = f"sip:127.0.0.1:{port}"
    statistics = gateway.endpoint.statistics
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        await sock.sendto(
            request("OPTIONS", uri, echoed=MAX_UDP_PAYLOAD - 4000), ("127.0.0.1", port)
        )
        answer = await first_answer(sock)
        assert (answer.status, answer.reason) == (
            513,
            "Message Too Large (its answer would not fit a UDP datagram)",
        )
        await sock.sendto(largest(uri), ("127.0.0.1", port))
        with trio.fail_after(5):
            while statistics.dropped_too_large == 0:
                await trio.sleep(0.01)
        # The gateway serves on, and the next datagram here answers this OPTIONS: the large
        # one, read before it, got none.
        await sock.sendto(options("UDP", port, branch="z9hG4bKafter"), ("127.0.0.1", port))
        answer = await first_answer(sock)
        assert answer.status == 200 and answer.top_via.branch == "z9hG4bKafter"
    assert (statistics.rejected_too_large, statistics.dropped_too_large) == (1, 1)
    assert statistics.send_errors == 0 and statistics.internal_errors == 0


async def test_over_tcp_the_same_request_is_served(gateway: Gateway) -> None:
    port = port_of(gateway, "tcp")
    data = largest(f"sip:127.0.0.1:{port}").replace(b"SIP/2.0/UDP", b"SIP/2.0/TCP", 1)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        buffer = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive_some(65535)
    # No datagram limit on a stream: the answer is larger than any datagram, and than the
    # 65535 bytes the gateway itself reads by default ([sip] max_message_size).
    assert len(buffer) > 65535
    answer = parse_message_untrusted(buffer, max_size=len(buffer))
    assert isinstance(answer, Response) and answer.status == 200
    assert gateway.endpoint.statistics.dropped_too_large == 0
