"""The ``udp`` signalling transport (RFC 3261 §18, datagrams).

One socket per listener. Every datagram is one SIP message; a flow per remote address remembers
where replies and later requests go (symmetric response routing, RFC 3581). Outbound flows to a
new address use the listener socket of the same address family, so requests leave from the
address and port peers know us by.

The socket is used directly, non-blocking, and read by the SIP endpoint's own task
(``TransportHost.serve_datagrams``): when it is readable and nothing else is queued, or after a
turn of queued messages, the endpoint reads up to a turn's worth of datagrams and handles them.
A datagram is a message as read, so a task per socket only moved each to the endpoint's task, at
the price of a second task step and a second turn of trio's run loop per datagram (session 34,
docs/benchmarks.md); trio's socket methods cost more again (a checkpoint before and after each
system call, epoll re-armed for every receive). A send waits only when the kernel's buffer is
full.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import struct
import time
from collections.abc import Callable

import attrs
import trio

from gateway.core.config import ListenSpec
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import Listener, TransportHost
from gateway.core.plugins import Registry
from gateway.core.transport.flows import Address, Flow, FlowKey, format_address

log = logging.getLogger(__name__)

# Largest UDP payload; a bigger SIP message cannot arrive in one datagram anyway.
_RECV_SIZE = 65535
# Linux's SO_TIMESTAMPNS (asm-generic/socket.h SO_TIMESTAMPNS_OLD; Python does not name it): the
# kernel stamps each datagram when it is queued to the socket, delivered as a struct timespec in
# an SCM_TIMESTAMPNS (= the option) control message. A backlog waits in the socket buffer, so
# this is where overload shows first (gateway/core/sip/overload.py).
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)


@attrs.frozen
class UdpConfig:
    """``[plugins.udp]``."""

    # SO_RCVBUF bytes. Absorbs bursts of REGISTER/INVITE, and must hold [sip]
    # overload_queue_delay's worth of datagrams (0.3 s at 700 calls/s: ~2,100 datagrams, 3-5 MB
    # of kernel memory), or the kernel drops the backlog before overload control sees it.
    receive_buffer: int = 1 << 22


def _time_in_socket(ancillary: list[tuple[int, int, bytes]]) -> float:
    """How long a datagram waited in the socket's receive buffer, from its kernel stamp."""
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
            # Both are CLOCK_REALTIME; a step of the clock must not make a wait negative.
            waited: float = time.time() - seconds - nanoseconds * 1e-9
            return max(0.0, waited)
    return 0.0


class UdpTransport:
    name = "udp"
    reliable = False
    secure = False

    def __init__(self, config: UdpConfig | None = None) -> None:
        self.config = config or UdpConfig()
        # (local address, trio's socket, the stdlib socket it wraps) per listener.
        self._sockets: list[tuple[Address, trio.socket.SocketType, socket.socket]] = []

    async def serve(
        self,
        listen: ListenSpec,
        host: TransportHost,
        *,
        task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
        # trio wraps this very object (and makes it non-blocking): the receive loop and the
        # flows' send use it directly, trio only to bind (name resolution) and to wait.
        raw = socket.socket(family, socket.SOCK_DGRAM)
        sock = trio.socket.from_stdlib_socket(raw)
        with sock:
            # The kernel caps the size (net.core.rmem_max); a refusal is not fatal.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.config.receive_buffer)
            self._check_receive_buffer(sock)
            # Without it (not Linux) datagrams carry no stamp and count as not having waited.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            await sock.bind((listen.host, listen.port))
            local: Address = sock.getsockname()[:2]
            entry = (local, sock, raw)
            self._sockets.append(entry)
            log.info("listening on udp:%s", format_address(local))
            task_status.started(Listener(self.name, local))
            try:
                await host.serve_datagrams(raw.fileno(), self._reader(sock, raw, local, host))
            finally:
                self._sockets.remove(entry)

    def _reader(
        self, sock: trio.socket.SocketType, raw: socket.socket, local: Address, host: TransportHost
    ) -> Callable[[int], bool]:
        """The function the endpoint's task reads this socket with (``serve_datagrams``)."""
        flows = host.flows
        deliver = host.deliver
        clock = trio.lowlevel.current_clock()
        name = self.name

        def read(limit: int) -> bool:
            # One reading of the clock per turn: the datagrams of a turn are read within
            # microseconds of each other.
            now = clock.current_time()
            for _ in range(limit):
                try:
                    data, ancillary, _flags, remote = raw.recvmsg(_RECV_SIZE, _ANCILLARY_SIZE)
                except BlockingIOError:
                    return True
                except ConnectionResetError:
                    # ICMP port unreachable from an earlier send surfaces here on some systems.
                    continue
                remote = remote[:2]
                if not data.strip(b"\r\n"):
                    continue  # RFC 5626 §3.5.1 keep-alive / stray CRLF: nothing to do
                flow = flows.get(FlowKey(name, local, remote))
                if flow is None:
                    flow = self._make_flow(sock, raw, local, remote)
                    flows.add(flow)
                flow.last_activity = now
                deliver(data, flow, waited=_time_in_socket(ancillary))
            return False

        return read

    def _check_receive_buffer(self, sock: trio.socket.SocketType) -> None:
        # Linux reports twice what it grants (socket(7)); less than asked means rmem_max.
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if granted < self.config.receive_buffer:
            log.warning(
                "UDP receive buffer is %d bytes, not the %d of [plugins.udp] receive_buffer: "
                "the kernel caps it at net.core.rmem_max. Under load the kernel will drop "
                "datagrams before overload control sees them; raise it, e.g. "
                "sysctl -w net.core.rmem_max=%d",
                granted,
                self.config.receive_buffer,
                self.config.receive_buffer,
            )

    def _make_flow(
        self, sock: trio.socket.SocketType, raw: socket.socket, local: Address, remote: Address
    ) -> Flow:
        if not _is_ip_address(remote[0]):
            # A host name: trio resolves it without blocking the event loop.
            async def send_resolving(data: bytes) -> None:
                await sock.sendto(data, remote)

            return Flow(key=FlowKey(self.name, local, remote), send=send_resolving, reliable=False)

        async def send(data: bytes) -> None:
            while True:
                try:
                    raw.sendto(data, remote)
                    return
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(raw)

        return Flow(key=FlowKey(self.name, local, remote), send=send, reliable=False)

    async def open_flow(self, remote: Address, host: TransportHost) -> Flow:
        want_v6 = ":" in remote[0]
        for local, sock, raw in self._sockets:
            if (":" in local[0]) == want_v6:
                key = FlowKey(self.name, local, remote)
                flow = host.flows.get(key)
                if flow is None:
                    flow = self._make_flow(sock, raw, local, remote)
                    host.flows.add(flow)
                return flow
        family = "IPv6" if want_v6 else "IPv4"
        raise OSError(f"no udp listener for {family} to send to {remote[0]}:{remote[1]}")


def _is_ip_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@hookimpl
def gateway_plugin_config() -> type:
    return UdpConfig


@hookimpl
def gateway_register_transports(registry: Registry[UdpTransport], config: UdpConfig) -> None:
    registry.add(UdpTransport.name, UdpTransport(config))
