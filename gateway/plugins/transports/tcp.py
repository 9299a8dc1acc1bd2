"""The ``tcp`` signalling transport (RFC 3261 §18.3, stream framing by Content-Length).

Each connection, accepted or opened by us, is one flow and is reused in both directions: requests
to a peer that connected to us go back over its connection (RFC 3261 §18, and the only way to reach
a phone behind NAT). Limits: connections per source address, an idle timeout, and the framer's
message-size bound; breaking one closes that connection only.

The TLS transport reuses this module's connection handling with a TLS stream.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs
import trio

from gateway.core.config import ListenSpec
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import Listener, TransportHost
from gateway.core.logs import transport_error_text
from gateway.core.plugins import Registry
from gateway.core.sip.errors import SipParseError
from gateway.core.sip.framing import KeepAlivePing, StreamFramer
from gateway.core.transport.flows import Address, Flow, FlowKey, PeerCertificate, format_address

if TYPE_CHECKING:
    from gateway.plugins.transports.ocsp import OcspTarget

log = logging.getLogger(__name__)

_READ_SIZE = 65536
_PONG = b"\r\n"  # RFC 5626 §4.4.1: answer a double-CRLF ping with a single CRLF


# The least idle_timeout of a SIP connection ([plugins.tcp], [plugins.tls]; ws's is more than its
# ping_interval, at least 1 s): it must outlive a request's round trip and the 100 Trying that
# answers it within 200 ms (RFC 3261 §17.2.1); closed after 1e-9 s of quiet, no connection
# lasted from a request to its answer. What a phone registered over it needs is far longer
# (RFC 5626 §4.4.1: CRLF pings every 95 to 120 s): docs/configuration.md says so; tests on
# loopback use this least.
MIN_IDLE_TIMEOUT = 0.5
# The least connect_timeout of [plugins.tcp]: a connection on the loopback took 0.155 ms at the
# least (trio, the 2-vCPU test host); the floor is a power of ten under half that, so no
# connection on the host or a LAN is refused, while 1e-9 (no connection ever made) is.
MIN_CONNECT_TIMEOUT = 1e-5


def check_idle_timeout(config: object) -> None:
    """``idle_timeout`` of a stream transport's table at least :data:`MIN_IDLE_TIMEOUT`."""
    idle_timeout = getattr(config, "idle_timeout")  # noqa: B009
    if not idle_timeout >= MIN_IDLE_TIMEOUT:
        raise ValueError(
            f"idle_timeout: expected a positive number of seconds, "
            f"at least {MIN_IDLE_TIMEOUT:g} (a request's round trip and its 100 Trying, "
            f"RFC 3261 §17.2.1), got {idle_timeout:g}"
        )


@attrs.frozen
class TcpConfig:
    """``[plugins.tcp]``."""

    max_connections_per_source: int = 32
    idle_timeout: float = 300.0
    connect_timeout: float = 10.0

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        if self.max_connections_per_source < 1:
            raise ValueError(
                "max_connections_per_source: expected 1 or more, "
                f"got {self.max_connections_per_source}"
            )
        check_idle_timeout(self)
        if not self.connect_timeout >= MIN_CONNECT_TIMEOUT:
            raise ValueError(
                f"connect_timeout: expected a positive number of seconds, at least "
                f"{MIN_CONNECT_TIMEOUT:.5f} (a TCP handshake's round trip), "
                f"got {self.connect_timeout:g}"
            )


@attrs.frozen
class ConnectionInfo:
    """What a stream transport knows about one connection, for building its flow."""

    secure: bool = False
    peer_certificate: PeerCertificate | None = None
    # TLS: (issuer Name DER, serial number) of the peer's certificate, what a CRL entry names
    # (RFC 5280 §5.3): a reload that revokes it closes the connection (tls.py).
    revocation_id: tuple[bytes, int] | None = None
    # TLS with [plugins.tls] ocsp: the certificate its responder said "good" (or soft-fail let
    # in) and when to ask again while the connection is open (Unix time).
    ocsp: OcspTarget | None = None
    ocsp_until: float = 0.0


class StreamTransport:
    """Connection handling shared by stream transports; ``wrap`` turns a TCP stream into the
    stream SIP is read from (identity for TCP, a TLS handshake for TLS)."""

    name = "tcp"
    reliable = True
    secure = False

    def __init__(self, config: TcpConfig | None = None) -> None:
        self.config = config or TcpConfig()
        self._nursery: trio.Nursery | None = None
        self._per_source: Counter[str] = Counter()
        self._local_addresses: list[Address] = []

    async def wrap(
        self, stream: trio.SocketStream, *, server_side: bool, remote: Address
    ) -> tuple[trio.abc.Stream, ConnectionInfo]:
        return stream, ConnectionInfo()

    def _connection_up(
        self, flow: Flow, info: ConnectionInfo, reading: trio.CancelScope, host: TransportHost
    ) -> None:
        """A connection's flow is up; cancelling ``reading`` closes it (TLS keeps the ones a
        CRL reload may have to close). Once per connection, never per message."""

    def _connection_down(self, flow: Flow) -> None:
        """The connection of ``flow`` is closing."""

    async def serve(
        self,
        listen: ListenSpec,
        host: TransportHost,
        *,
        task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(listen.port, host=listen.host)
        listener = listeners[0]
        local: Address = listener.socket.getsockname()[:2]
        self._local_addresses.append(local)
        log.info("listening on %s:%s", self.name, format_address(local))
        async with trio.open_nursery() as nursery:
            if self._nursery is None:
                self._nursery = nursery
            task_status.started(Listener(self.name, local))
            async with listener:
                while True:
                    stream = await listener.accept()
                    nursery.start_soon(self._accepted, stream, host)

    async def _accepted(self, stream: trio.SocketStream, host: TransportHost) -> None:
        remote: Address = stream.socket.getpeername()[:2]
        local: Address = stream.socket.getsockname()[:2]
        source = remote[0]
        if self._per_source[source] >= self.config.max_connections_per_source:
            log.warning(
                "%s: refusing connection from %s: %d connections from that address already",
                self.name,
                format_address(remote),
                self._per_source[source],
            )
            await stream.aclose()
            return
        self._per_source[source] += 1
        try:
            try:
                wrapped, info = await self.wrap(stream, server_side=True, remote=remote)
            except (trio.BrokenResourceError, OSError, ValueError) as exc:
                # A transport whose wrap() logs its own failures (TLS handshakes) marks them.
                if not getattr(exc, "logged", False):
                    log.warning(
                        "%s: connection from %s failed: %s",
                        self.name,
                        format_address(remote),
                        transport_error_text(exc),
                    )
                await stream.aclose()
                return
            await self._run_connection(wrapped, info, local, remote, host)
        finally:
            self._per_source[source] -= 1
            if not self._per_source[source]:
                del self._per_source[source]

    async def _run_connection(
        self,
        stream: trio.abc.Stream,
        info: ConnectionInfo,
        local: Address,
        remote: Address,
        host: TransportHost,
        *,
        task_status: trio.TaskStatus[Flow] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        send_lock = trio.Lock()

        async def send(data: bytes) -> None:
            async with send_lock:
                await stream.send_all(data)

        flow = Flow(
            key=FlowKey(self.name, local, remote),
            send=send,
            reliable=True,
            secure=info.secure,
            peer_certificate=info.peer_certificate,
            last_activity=trio.current_time(),
        )
        host.flows.add(flow)
        task_status.started(flow)
        # One limit for every transport, [sip] max_message_size: a header block or a body that
        # UDP and WebSocket take whole must not close a TCP or TLS connection (the framer's own
        # defaults were 32 KiB of header and 64 KiB of body whatever the configuration said).
        limit = host.limits.max_message_size
        framer = StreamFramer(max_header_size=limit, max_body_size=limit, max_message_size=limit)
        # Inside the stream's context: a cancelled read loop still closes the stream cleanly
        # (TLS close_notify).
        reading = trio.CancelScope()
        self._connection_up(flow, info, reading, host)
        try:
            async with stream:
                with reading:
                    await self._read_loop(stream, framer, flow, host, send)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("%s: connection %s ended: %s", self.name, flow.key, transport_error_text(exc))
        finally:
            self._connection_down(flow)
            host.flows.remove(flow)
            host.flow_closed(flow)

    async def _read_loop(
        self,
        stream: trio.abc.Stream,
        framer: StreamFramer,
        flow: Flow,
        host: TransportHost,
        send: Callable[[bytes], Awaitable[None]],
    ) -> None:
        while True:
            with trio.move_on_after(self.config.idle_timeout) as idle:
                data = await stream.receive_some(_READ_SIZE)
            if idle.cancelled_caught:
                log.info("%s: closing idle connection %s", self.name, flow.key)
                return
            if not data:
                return
            flow.last_activity = trio.current_time()
            try:
                framer.receive_data(bytes(data))
                while (frame := framer.next_frame()) is not None:
                    if isinstance(frame, KeepAlivePing):
                        await send(_PONG)
                    else:
                        host.deliver(frame, flow)
            except SipParseError as exc:
                # Framing is lost: nothing later on this stream can be trusted to start a message.
                log.warning("%s: closing %s: %s", self.name, flow.key, exc.reason)
                return

    async def open_flow(self, remote: Address, host: TransportHost) -> Flow:
        existing = host.flows.find(self.name, remote)
        if existing is not None:
            return existing
        if self._nursery is None:
            raise OSError(f"no {self.name} listener is running to own outbound connections")
        try:
            with trio.fail_after(self.config.connect_timeout):
                stream = await trio.open_tcp_stream(remote[0], remote[1])
                try:
                    wrapped, info = await self.wrap(stream, server_side=False, remote=remote)
                except BaseException:
                    await stream.aclose()
                    raise
        except trio.TooSlowError:
            # Callers handle unreachable peers as OSError (the endpoint answers 408/503).
            raise OSError(
                f"{self.name}: no connection to {format_address(remote)} within "
                f"{self.config.connect_timeout:g} s"
            ) from None
        local: Address = stream.socket.getsockname()[:2]
        # The connection's reader lives in the listener's nursery, not in the caller's task, so
        # the connection outlives the request that opened it and carries the peer's requests too.
        flow: Flow = await self._nursery.start(
            self._run_connection, wrapped, info, local, remote, host
        )
        return flow


class TcpTransport(StreamTransport):
    name = "tcp"


@hookimpl
def gateway_plugin_config() -> type:
    return TcpConfig


@hookimpl
def gateway_register_transports(registry: Registry[TcpTransport], config: TcpConfig) -> None:
    registry.add(TcpTransport.name, TcpTransport(config))
