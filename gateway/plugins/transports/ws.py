"""The ``ws`` signalling transport: SIP over WebSocket (RFC 7118), for browser softphones.

A browser (JsSIP, SIP.js) cannot open TCP or UDP sockets, only WebSockets: it connects to us,
offers the ``sip`` subprotocol, and sends one SIP message per WebSocket message. The handshake
and framing are in :mod:`gateway.plugins.transports.websocket` (sans-IO); this module runs them
on trio streams, reusing the connection handling of the ``tcp`` transport (one flow per
connection, per-source limits) and adding:

- a cap on all WebSocket connections at once (``max_connections``), counted from accept, and a
  time limit for the HTTP upgrade (``handshake_timeout``), so sockets that never become SIP
  cannot use the gateway up;
- WebSocket pings when the connection has been quiet for ``ping_interval``, so that a browser
  (which answers pings by itself, RFC 6455 §5.5.2) and every proxy and NAT on the way keep it
  open between REGISTER refreshes; a connection silent for ``idle_timeout`` is closed;
- no outbound connections: a WebSocket client has no address we could connect to (its Via and
  Contact name a random ``*.invalid`` host, RFC 7118 §5 and RFC 6761 §6.4). Responses go back
  over the connection the request came on (RFC 3261 §18.2.2), and requests to a registered
  browser over the connection it registered on (the registrar's flow binding, as for a phone
  behind NAT over TCP); once that connection is gone the registration cannot be reached.

``ws`` is plain text: run it on the loopback behind a TLS-terminating proxy, or in tests;
browsers on https pages only connect to ``wss`` (:mod:`gateway.plugins.transports.wss`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import attrs
import trio

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import TransportHost
from gateway.core.logs import log_exception, transport_error_text
from gateway.core.plugins import Registry
from gateway.core.transport.flows import Address, Flow, FlowKey, format_address
from gateway.plugins.transports.tcp import ConnectionInfo, StreamTransport, TcpConfig
from gateway.plugins.transports.websocket import (
    CLOSE_GOING_AWAY,
    Closed,
    Opened,
    Refused,
    SipMessage,
    SipWebSocket,
    normalize_origin,
    printable,
)

log = logging.getLogger(__name__)

_READ_SIZE = 65536
_Flush = Callable[[], Awaitable[None]]


def check_origins(origins: tuple[str, ...]) -> None:
    """``allowed_origins`` entries are RFC 6454 origins: ``scheme://host[:port]``, no path."""
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if not sep or not scheme or not rest or "/" in rest.rstrip("/") or " " in origin:
            raise ValueError(
                f"allowed_origins: expected origins like 'https://phone.example.com', "
                f"got {origin!r}"
            )


# The least handshake_timeout and ping_interval of [plugins.ws] and [plugins.wss]: the HTTP
# upgrade is a round trip after the TCP one (as [plugins.tcp]'s least connect_timeout: with
# 1e-9 no browser ever got through; [plugins.wss] also runs the TLS handshake within it, and
# [plugins.tls]'s least applies there); pings more often than each second are a busy loop, not
# a keepalive (NATs keep a TCP mapping for minutes, RFC 5382 REQ-5).
MIN_HANDSHAKE_TIMEOUT = 1e-5
MIN_PING_INTERVAL = 1.0
# Under half a second a browser across a WAN (the TCP, TLS and HTTP round trips) or one lost
# segment (resent after 1 s, RFC 6298 §2) does not make it: allowed, and said by check-config.
WARN_HANDSHAKE_TIMEOUT = 0.5


def handshake_warnings(config: object) -> list[str]:
    """``config_warnings`` of a ``[plugins.ws]`` or ``[plugins.wss]`` table."""
    handshake_timeout = getattr(config, "handshake_timeout")  # noqa: B009
    if handshake_timeout < WARN_HANDSHAKE_TIMEOUT:
        return [
            f"handshake_timeout: {handshake_timeout:g} s works only for browsers on the host or "
            f"the LAN: under {WARN_HANDSHAKE_TIMEOUT:g} s one across a WAN, or one lost segment "
            "(resent after 1 s, RFC 6298 §2), fails its connection"
        ]
    return []


def check_limits(config: object) -> None:
    """The limits of a ``[plugins.ws]`` or ``[plugins.wss]`` table make sense together."""
    handshake_timeout = getattr(config, "handshake_timeout")  # noqa: B009
    if not handshake_timeout >= MIN_HANDSHAKE_TIMEOUT:
        raise ValueError(
            f"handshake_timeout: expected a positive number of seconds, "
            f"at least {MIN_HANDSHAKE_TIMEOUT:.5f} (the "
            f"HTTP upgrade follows the TCP and TLS handshakes, RFC 6455 §4), got "
            f"{handshake_timeout:g}"
        )
    ping_interval = getattr(config, "ping_interval")  # noqa: B009
    if not ping_interval >= MIN_PING_INTERVAL:
        raise ValueError(
            f"ping_interval: expected a positive number of seconds, "
            f"at least {MIN_PING_INTERVAL:g} (a keepalive, "
            f"RFC 6455 §5.5.2), got {ping_interval:g}"
        )
    for key in ("max_connections", "max_connections_per_source"):
        if getattr(config, key) < 1:
            raise ValueError(f"{key}: expected 1 or more, got {getattr(config, key)}")
    idle_timeout = getattr(config, "idle_timeout")  # noqa: B009
    if idle_timeout <= ping_interval:
        raise ValueError(
            f"idle_timeout: must be longer than ping_interval ({ping_interval:g} s), or a "
            f"connection that answers every ping is closed anyway, got {idle_timeout:g}"
        )


@attrs.frozen
class WebSocketLimits:
    """What the WebSocket connection code reads, from ``[plugins.ws]`` or ``[plugins.wss]``."""

    allowed_origins: frozenset[str]
    max_connections: int
    max_connections_per_source: int
    handshake_timeout: float
    ping_interval: float
    idle_timeout: float


@attrs.frozen
class WsConfig:
    """``[plugins.ws]``. See docs/configuration.md."""

    allowed_origins: tuple[str, ...] = ()
    max_connections: int = 1024
    max_connections_per_source: int = 32
    handshake_timeout: float = 10.0
    ping_interval: float = 30.0
    idle_timeout: float = 90.0

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        check_origins(self.allowed_origins)
        check_limits(self)

    def config_warnings(self) -> list[str]:
        """``"KEY: why"`` for values the gateway runs with that fail where the network is
        not a LAN: errors of ``voipgw check-config``, warnings of ``voipgw run``."""
        return handshake_warnings(self)

    @property
    def websocket(self) -> WebSocketLimits:
        return WebSocketLimits(
            allowed_origins=frozenset(normalize_origin(o) for o in self.allowed_origins),
            max_connections=self.max_connections,
            max_connections_per_source=self.max_connections_per_source,
            handshake_timeout=self.handshake_timeout,
            ping_interval=self.ping_interval,
            idle_timeout=self.idle_timeout,
        )


class WebSocketConnections(StreamTransport):
    """SIP over WebSocket on the connections a :class:`StreamTransport` accepts (and, for
    ``wss``, has run the TLS handshake on). Subclasses set :attr:`websocket`."""

    websocket: WebSocketLimits

    def __init__(self, config: TcpConfig | None = None) -> None:
        super().__init__(config)
        self._connections = 0

    @property
    def connections(self) -> int:
        """WebSocket connections open now, handshaking or not."""
        return self._connections

    async def _accepted(self, stream: trio.SocketStream, host: TransportHost) -> None:
        if self._connections >= self.websocket.max_connections:
            log.warning(
                "%s: refusing a connection: %d WebSocket connections open (max_connections)",
                self.name,
                self._connections,
            )
            await stream.aclose()
            return
        self._connections += 1
        try:
            await super()._accepted(stream, host)
        except Exception:
            # A failure boundary: whatever one client's bytes did, the listener and every other
            # connection go on (wsproto and h11 raise documented errors, handled below; this
            # is for the ones nobody expected).
            log_exception(log, "%s: connection failed unexpectedly; closed", self.name)
            await trio.aclose_forcefully(stream)
        finally:
            self._connections -= 1

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
        ws = SipWebSocket(
            allowed_origins=self.websocket.allowed_origins,
            max_message_size=host.limits.max_message_size,
        )
        send_lock = trio.Lock()

        async def flush() -> None:
            async with send_lock:
                data = ws.data_to_send()
                if data:
                    await stream.send_all(data)

        try:
            async with stream:
                if not await self._handshake(stream, ws, remote, flush):
                    return

                async def send(data: bytes) -> None:
                    async with send_lock:
                        if ws.done:
                            raise trio.ClosedResourceError("the WebSocket connection is closing")
                        ws.send_message(data)
                        await stream.send_all(ws.data_to_send())

                flow = Flow(
                    key=FlowKey(self.name, local, remote),
                    send=send,
                    reliable=True,
                    secure=info.secure,
                    peer_certificate=info.peer_certificate,
                    last_activity=trio.current_time(),
                )
                host.flows.add(flow)
                try:
                    await self._read_loop_ws(stream, ws, flow, host, flush)
                finally:
                    host.flows.remove(flow)
                    host.flow_closed(flow)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug(
                "%s: connection from %s ended: %s",
                self.name,
                format_address(remote),
                transport_error_text(exc),
            )

    async def _handshake(
        self, stream: trio.abc.Stream, ws: SipWebSocket, remote: Address, flush: _Flush
    ) -> bool:
        """Run the HTTP upgrade (RFC 6455 §4.2) within ``handshake_timeout``; True once the
        connection carries SIP, False (logged) when it was refused or timed out."""
        with trio.move_on_after(self.websocket.handshake_timeout) as timer:
            while not ws.opened and not ws.done:
                data = await stream.receive_some(_READ_SIZE)
                ws.receive_data(data)
                await flush()
        if timer.cancelled_caught:
            log.info(
                "%s: closing %s: no WebSocket handshake within %g s",
                self.name,
                format_address(remote),
                self.websocket.handshake_timeout,
            )
            return False
        event = ws.next_event()  # the first event is the handshake's outcome
        if isinstance(event, Opened):
            log.debug(
                "%s: WebSocket from %s opened (origin %s, path %s)",
                self.name,
                format_address(remote),
                printable(event.origin) if event.origin is not None else "none",
                printable(event.path),
            )
            return True
        if isinstance(event, Refused):
            log.info(
                "%s: refused WebSocket from %s with HTTP %d: %s",
                self.name,
                format_address(remote),
                event.status,
                event.reason,
            )
        elif isinstance(event, Closed):
            log.debug("%s: %s left during the handshake", self.name, format_address(remote))
        return False

    async def _read_loop_ws(
        self,
        stream: trio.abc.Stream,
        ws: SipWebSocket,
        flow: Flow,
        host: TransportHost,
        flush: _Flush,
    ) -> None:
        limits = self.websocket
        while True:
            # Messages that came with the handshake's last bytes are waiting already.
            while (event := ws.next_event()) is not None:
                if isinstance(event, SipMessage):
                    host.deliver(event.data, flow)
                elif isinstance(event, Closed):
                    await flush()  # our close frame, if one is due
                    if event.by_peer:
                        log.debug("%s: %s closed by the peer", self.name, flow.key)
                    else:
                        log.info("%s: closing %s: %s", self.name, flow.key, event.reason)
                    return
            await flush()  # pongs and keep-alive answers
            now = trio.current_time()
            quiet_until = flow.last_activity + limits.idle_timeout
            if now >= quiet_until:
                log.info("%s: closing idle connection %s", self.name, flow.key)
                ws.close(CLOSE_GOING_AWAY, "idle")
                await flush()
                return
            with trio.move_on_after(min(limits.ping_interval, quiet_until - now)) as quiet:
                data = await stream.receive_some(_READ_SIZE)
            if quiet.cancelled_caught:
                if trio.current_time() < quiet_until:
                    # RFC 6455 §5.5.2: a browser answers by itself; the pong is activity.
                    ws.ping()
                continue
            if data:
                flow.last_activity = trio.current_time()
            ws.receive_data(data)

    async def open_flow(self, remote: Address, host: TransportHost) -> Flow:
        """The open connection from ``remote``; a WebSocket client cannot be connected to
        (RFC 7118 §5: its address is a ``.invalid`` name), so anything else is unreachable."""
        existing = host.flows.find(self.name, remote)
        if existing is not None:
            return existing
        raise OSError(
            f"{self.name}: no open WebSocket connection from {format_address(remote)}; "
            "WebSocket clients are reached only over the connection they opened"
        )


class WsTransport(WebSocketConnections):
    """SIP over plain WebSocket."""

    name = "ws"

    def __init__(self, config: WsConfig | None = None) -> None:
        self.ws_config = config or WsConfig()
        self.websocket = self.ws_config.websocket
        super().__init__(
            TcpConfig(
                max_connections_per_source=self.ws_config.max_connections_per_source,
                idle_timeout=self.ws_config.idle_timeout,
            )
        )


@hookimpl
def gateway_plugin_config() -> type:
    return WsConfig


@hookimpl
def gateway_register_transports(registry: Registry[WsTransport], config: WsConfig) -> None:
    registry.add(WsTransport.name, WsTransport(config))
