"""The gateway on real sockets on 127.0.0.1 (port 0): OPTIONS, malformed input, TCP framing."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio

from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.logs import transport_error_text
from gateway.core.plugins import load_plugins
from gateway.core.sip.message import Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import render
from gateway.plugins.transports.udp import SO_TIMESTAMPNS, _time_in_socket
from tests.integration.gateway_options import options, port_of
from tests.port_blocks import ModuleBlock

# The relay's ports: this process's own (tests/port_blocks.py), not the gateway's default range,
# which another test run's gateway may bind as well (tests/media_range_guard.py).
MEDIA_PORTS = ModuleBlock(20)


@pytest.fixture
async def gateway(tmp_path) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    config = from_mapping(
        {
            "gateway": {"state_dir": str(tmp_path / "state")},
            "sip": {"listen": ["udp:127.0.0.1:0", "tcp:127.0.0.1:0"]},
            "media": {"ports": MEDIA_PORTS.text()},
        }
    )
    gw = Gateway(config, load_plugins(config), ids=SeededIds(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(gw.serve)
        yield gw
        nursery.cancel_scope.cancel()


async def udp_exchange(port: int, data: bytes) -> Response:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        await sock.sendto(data, ("127.0.0.1", port))
        with trio.fail_after(5):
            reply, _ = await sock.recvfrom(65535)
    message = parse_message_untrusted(reply)
    assert isinstance(message, Response)
    return message


async def test_options_over_udp_gets_200_with_allow(gateway: Gateway, tmp_path) -> None:  # type: ignore[no-untyped-def]
    response = await udp_exchange(port_of(gateway, "udp"), options("UDP", 0))
    assert response.status == 200
    assert "INVITE" in (response.headers.get("Allow") or "")
    assert response.call_id == "options-1@127.0.0.1"
    assert response.to.tag is not None
    # RFC 3581: rport filled with the source port, received with the source address
    via = response.top_via
    assert via.received == "127.0.0.1" or via.host == "127.0.0.1"
    assert via.rport is not None and via.rport > 0
    assert (tmp_path / "state").is_dir()


async def test_malformed_request_gets_400_naming_the_defect(gateway: Gateway) -> None:
    bad = options("UDP", 0).replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")
    response = await udp_exchange(port_of(gateway, "udp"), bad)
    assert response.status == 400
    assert "CSeq" in response.reason
    assert response.call_id == "options-1@127.0.0.1"


async def test_a_malformed_ack_gets_no_answer(gateway: Gateway) -> None:
    """RFC 3261 §8.2.7: an ACK is never answered, a malformed one neither (no 400)."""
    port = port_of(gateway, "udp")
    bad_ack = options("UDP", 0).replace(b"OPTIONS sip:", b"ACK sip:", 1)
    bad_ack = bad_ack.replace(b"CSeq: 1 OPTIONS", b"CSeq: 1 INVITE")  # CSeq's method not ACK
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        await sock.sendto(bad_ack, ("127.0.0.1", port))
        await sock.sendto(options("UDP", 0, branch="z9hG4bKopt2"), ("127.0.0.1", port))
        first = await sock.recv(65535)
    assert first.startswith(b"SIP/2.0 200 "), first[:60]  # the OPTIONS' answer, nothing before
    assert gateway.endpoint.statistics.rejected_malformed == 1


async def test_malformed_response_is_dropped_and_gateway_keeps_serving(gateway: Gateway) -> None:
    port = port_of(gateway, "udp")
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(("127.0.0.1", 0))
        await sock.sendto(b"SIP/2.0 999 Way Too Big\r\nVia: x\r\n\r\n", ("127.0.0.1", port))
        await sock.sendto(b"\x00\xff garbage", ("127.0.0.1", port))
    response = await udp_exchange(port, options("UDP", 0))
    assert response.status == 200
    assert gateway.endpoint.statistics.dropped_malformed_responses == 1


async def test_options_over_tcp_with_partial_writes_and_keepalive(gateway: Gateway) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", port_of(gateway, "tcp"))
    async with stream:
        await stream.send_all(b"\r\n\r\n")  # RFC 5626 keep-alive ping
        with trio.fail_after(5):
            assert await stream.receive_some(10) == b"\r\n"
        data = options("TCP", 0)
        for i in range(0, len(data), 7):  # framing must cope with any chunking
            await stream.send_all(data[i : i + 7])
        buffer = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in buffer:
                buffer += await stream.receive_some(65535)
    response = parse_message_untrusted(buffer)
    assert isinstance(response, Response)
    assert response.status == 200
    assert len(gateway.flows) >= 1


def invite(port: int, n: int) -> bytes:
    return (
        f"INVITE sip:+15550123@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKinv{n};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:caller@127.0.0.1>;tag=inv{n}\r\n"
        f"To: <sip:+15550123@127.0.0.1:{port}>\r\n"
        f"Call-ID: invite-{n}@127.0.0.1\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:caller@127.0.0.1:5999>\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def wait_until_the_kernel_stamps_datagrams_on_arrival() -> None:
    """Linux stamps datagrams as they arrive only once a workqueue has switched stamping on,
    after the first socket on the machine asked for it (net_enable_timestamp); until then
    recvmsg stamps a datagram when it is read, so one that waited looks as if it had not. The
    gateway's socket asked as it opened: wait for the switch (a gateway that runs keeps it on;
    with no other socket asking, as on a quiet CI machine, the switch comes a little later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        probe.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        deadline = time.monotonic() + 5.0
        while True:
            probe.sendto(b"probe", probe.getsockname())
            time.sleep(0.01)
            _, ancillary, _, _ = probe.recvmsg(16, 1024)
            if _time_in_socket(ancillary) >= 0.005:
                return
            assert time.monotonic() < deadline, "the kernel never stamped a datagram on arrival"


async def test_a_backlog_in_the_socket_buffer_counts_as_overload(gateway: Gateway) -> None:
    """Datagrams that waited in the kernel's receive buffer (the gateway too busy to read them)
    carry the kernel's SO_TIMESTAMPNS stamp: the wait is counted, and a new INVITE that waited
    past the overload threshold gets 503 while an OPTIONS beside it is still answered."""
    port = port_of(gateway, "udp")
    wait_until_the_kernel_stamps_datagrams_on_arrival()
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    # Sent without a checkpoint, then the event loop blocked, as if busy: both wait 0.4 s unread
    # in the gateway's socket buffer, longer than overload_queue_delay (0.3 s).
    raw.sendto(invite(port, 1), ("127.0.0.1", port))
    raw.sendto(options("UDP", port), ("127.0.0.1", port))
    time.sleep(0.4)  # blocking on purpose: the gateway must not run meanwhile
    sock = trio.socket.from_stdlib_socket(raw)
    with sock:
        replies: dict[str, int] = {}
        with trio.fail_after(5):
            while len(replies) < 2:
                data, _ = await sock.recvfrom(65535)
                reply = parse_message_untrusted(data)
                assert isinstance(reply, Response)
                if reply.status >= 200:
                    replies[reply.call_id] = reply.status
        assert replies == {"invite-1@127.0.0.1": 503, "options-1@127.0.0.1": 200}
        assert gateway.endpoint.overload.longest_wait >= 0.4
        # Read at once: the next INVITE is challenged.
        await sock.sendto(invite(port, 2), ("127.0.0.1", port))
        with trio.fail_after(5):
            while True:
                data, _ = await sock.recvfrom(65535)
                reply = parse_message_untrusted(data)
                assert isinstance(reply, Response)
                if reply.status >= 200 and reply.call_id == "invite-2@127.0.0.1":
                    break
        assert reply.status == 407
        assert gateway.endpoint.statistics.rejected_overload == 1


async def test_a_receive_buffer_capped_by_the_kernel_is_reported(
    tmp_path,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    # 1 GiB: more than any net.core.rmem_max lets a socket have.
    config = from_mapping(
        {
            "gateway": {"state_dir": str(tmp_path / "state")},
            "sip": {"listen": ["udp:127.0.0.1:0"]},
            "media": {"ports": MEDIA_PORTS.text()},
            "plugins": {"udp": {"receive_buffer": 1 << 30}},
        }
    )
    gw = Gateway(config, load_plugins(config), ids=SeededIds(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(gw.serve)
        nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if "net.core.rmem_max" in r.getMessage()]
    assert len(warnings) == 1
    assert "not the 1073741824 of [plugins.udp] receive_buffer" in warnings[0]


async def test_a_bug_reading_a_datagram_is_an_internal_error_not_the_gateways_end(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The endpoint's task reads the UDP sockets itself: a bug in a datagram transport's read,
    # a flow's creation or a delivery raises there, and must not end the endpoint (and with it
    # the gateway) for every call; the next datagram is read as ever (STYLE.md habit 6).
    udp = gateway.plugins.transports.get("udp")
    make_flow = udp._make_flow
    failed: list[object] = []

    def make_flow_with_a_bug(*args: Any) -> Any:
        if not failed:
            failed.append(args)
            raise RuntimeError("a bug in flow creation")
        return make_flow(*args)

    monkeypatch.setattr(udp, "_make_flow", make_flow_with_a_bug)
    port = port_of(gateway, "udp")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
        first.sendto(options("UDP", 7), ("127.0.0.1", port))
        response = await udp_exchange(port, options("UDP", 0))
    assert response.status == 200
    assert failed
    assert gateway.endpoint.statistics.internal_errors == 1


async def test_datagrams_the_kernel_dropped_at_a_full_receive_buffer_are_counted(
    tmp_path,  # type: ignore[no-untyped-def]
) -> None:
    # A UDP backlog waits in the socket's receive buffer, not in the inbound queue: what
    # overflows it is the kernel's drop, the UDP side of voipgw_sip_inbound_dropped_total.
    config = from_mapping(
        {
            "gateway": {"state_dir": str(tmp_path / "state")},
            "sip": {"listen": ["udp:127.0.0.1:0"]},
            "media": {"ports": MEDIA_PORTS.text()},
            "plugins": {"udp": {"receive_buffer": 4096}},
        }
    )
    gw = Gateway(config, load_plugins(config), ids=SeededIds(1))
    status = StatusView(gw, CallStatistics())
    async with trio.open_nursery() as nursery:
        await nursery.start(gw.serve)
        port = port_of(gw, "udp")
        assert status.sip().udp_receive_dropped == 0
        # Sent without letting the gateway run (one thread): far more than the buffer holds.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
            for n in range(200):
                peer.sendto(options("UDP", n), ("127.0.0.1", port))
        with trio.fail_after(10):  # loopback's softirq: a hang guard, not a measurement
            while status.sip().udp_receive_dropped == 0:
                await trio.sleep(0.01)
        dropped = status.sip().udp_receive_dropped
        assert 0 < dropped < 200
        assert f"voipgw_sip_udp_receive_dropped_total {dropped}\n".encode() in render(status)
        nursery.cancel_scope.cancel()


async def test_a_connection_that_cannot_be_made_says_why_in_the_log_line(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a call's line and end reason say (transport_error_text) of a peer the built-in
    # transports cannot reach, caught where the core catches it: their own words and the
    # operating system's reason, not a bare "OSError".
    namespace: dict[str, Any] = {"__name__": "gateway.core.example_caller"}
    exec(compile(CORE_CALLER, "<gateway.core.example_caller>", "exec"), namespace)
    reach = namespace["reach"]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    refused = await reach(gateway.endpoint, "tcp", ("127.0.0.1", port))
    assert transport_error_text(refused) == (
        f"all attempts to connect to 127.0.0.1:{port} failed (ECONNREFUSED (Connection refused))"
    )
    unlistened = await reach(gateway.endpoint, "tls", ("127.0.0.1", port))  # no tls listener
    assert transport_error_text(unlistened) == (
        "no tls listener is running to own outbound connections"
    )

    async def no_answer(*args: object, **kwargs: object) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError

    tcp = gateway.plugins.transports.get("tcp")
    monkeypatch.setattr(tcp, "config", attrs.evolve(tcp.config, connect_timeout=0.05))
    monkeypatch.setattr(trio, "open_tcp_stream", no_answer)
    timed_out = await reach(gateway.endpoint, "tcp", ("127.0.0.1", port))
    assert (
        transport_error_text(timed_out) == f"tcp: no connection to 127.0.0.1:{port} within 0.05 s"
    )


CORE_CALLER = """
async def reach(endpoint, transport, address):
    try:
        await endpoint.flow_to(transport, address)
    except OSError as exc:
        return exc
    raise AssertionError("reached")
"""
