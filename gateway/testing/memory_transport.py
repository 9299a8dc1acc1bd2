"""A ``udp`` signalling transport on a :class:`~gateway.testing.network.MemoryNetwork`.

It satisfies :class:`gateway.core.interfaces.Transport` exactly as the real ``udp`` plugin does
(one socket per listener, a flow per remote address, outbound flows leave from the listener
socket so peers see the address in our Via), but its sockets are memory sockets on trio's clock.
A whole :class:`~gateway.core.gateway.Gateway` then runs in virtual time under pytest-trio's
``autojump_clock``, with the network's seeded loss, duplication and reordering, and every
datagram in ``network.capture``::

    network = MemoryNetwork(seed=7, drop=0.2)
    await nursery.start(network.serve)
    config = from_mapping({"sip": {"listen": ["udp:127.0.0.1:5060"]},
                           "plugins": {"enable": []}, ...})
    gateway = Gateway(config, memory_plugins(config, network), ids=SeededIds(7))
    await nursery.start(gateway.serve)

The media relay still binds real sockets on ``[media] address``; signalling is all in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from gateway.core.config import GatewayConfig, ListenSpec
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import Listener, TransportHost
from gateway.core.plugins import Plugins, Registry, load_plugins
from gateway.core.transport.flows import Address, Flow, FlowKey
from gateway.testing.network import MemoryDatagramSocket, MemoryNetwork

log = logging.getLogger(__name__)

#: The plugin name :func:`memory_plugins` registers the transport under.
PLUGIN_NAME = "memory-udp"


class MemoryUdpTransport:
    """The ``udp`` transport over a :class:`MemoryNetwork` (datagrams, unreliable)."""

    name = "udp"
    reliable = False
    secure = False

    def __init__(self, network: MemoryNetwork, *, receive_buffer: int = 1024) -> None:
        self.network = network
        self.receive_buffer = receive_buffer
        self._sockets: list[tuple[Address, MemoryDatagramSocket]] = []

    async def serve(
        self,
        listen: ListenSpec,
        host: TransportHost,
        *,
        task_status: trio.TaskStatus[Listener] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind ``listen`` on the memory network and deliver every datagram to ``host``."""
        with self.network.bind(
            (listen.host, listen.port), receive_buffer=self.receive_buffer
        ) as sock:
            local = sock.getsockname()
            entry = (local, sock)
            self._sockets.append(entry)
            task_status.started(Listener(self.name, local))
            try:
                while True:
                    data, remote = await sock.recvfrom()
                    if not data.strip(b"\r\n"):
                        continue  # RFC 5626 §3.5.1 keep-alive: nothing to deliver
                    flow = host.flows.get(FlowKey(self.name, local, remote))
                    if flow is None:
                        flow = self._make_flow(sock, local, remote)
                        host.flows.add(flow)
                    flow.last_activity = trio.current_time()
                    host.deliver(data, flow)
            finally:
                self._sockets.remove(entry)

    async def open_flow(self, remote: Address, host: TransportHost) -> Flow:
        """A flow to ``remote`` from the first listener socket (of the same address family)."""
        want_v6 = ":" in remote[0]
        for local, sock in self._sockets:
            if (":" in local[0]) == want_v6:
                key = FlowKey(self.name, local, remote)
                flow = host.flows.get(key)
                if flow is None:
                    flow = self._make_flow(sock, local, remote)
                    host.flows.add(flow)
                return flow
        raise OSError(f"no memory udp listener to send to {remote[0]}:{remote[1]}")

    def _make_flow(self, sock: MemoryDatagramSocket, local: Address, remote: Address) -> Flow:
        async def send(data: bytes) -> None:
            await sock.sendto(data, remote)

        return Flow(key=FlowKey(self.name, local, remote), send=send, reliable=False)


class MemoryTlsStandIn(MemoryUdpTransport):
    """A stand-in for the ``tls`` transport: memory datagrams, but named ``tls`` and with flows
    marked secure, for component tests of what the core only sends over TLS (SDES keys, RFC 4568
    §8.3). No TLS happens: it is the core's choice of flow that such a test checks."""

    name = "tls"
    secure = True

    def _make_flow(self, sock: MemoryDatagramSocket, local: Address, remote: Address) -> Flow:
        flow = super()._make_flow(sock, local, remote)
        flow.secure = True
        return flow


class MemoryWsStandIn(MemoryUdpTransport):
    """A stand-in for the ``ws`` transport (SIP over WebSocket, RFC 7118): memory datagrams,
    named ``ws``, for component tests of what the core does for a browser's leg (a leg whose
    signalling is ``ws`` gets ICE-lite and a=rtcp-mux, gateway/core/media/security.py). No
    WebSocket happens, and unlike the real transport it can open flows to a peer."""

    name = "ws"


class MemoryUdpPlugin:
    """A plugin object registering one :class:`MemoryUdpTransport` (pass it to
    ``load_plugins(..., extra=[(PLUGIN_NAME, plugin)])``)."""

    def __init__(
        self, network: MemoryNetwork, *, tls_stand_in: bool = False, ws_stand_in: bool = False
    ) -> None:
        self.transport = MemoryUdpTransport(network)
        self.tls = MemoryTlsStandIn(network) if tls_stand_in else None
        self.ws = MemoryWsStandIn(network) if ws_stand_in else None

    @hookimpl
    def gateway_register_transports(self, registry: Registry[MemoryUdpTransport]) -> None:
        registry.add(self.transport.name, self.transport)
        for stand_in in (self.tls, self.ws):
            if stand_in is not None:
                registry.add(stand_in.name, stand_in)


def memory_plugins(
    config: GatewayConfig,
    network: MemoryNetwork,
    *,
    extra: Sequence[tuple[str, object]] = (),
    tls_stand_in: bool = False,
    ws_stand_in: bool = False,
) -> Plugins:
    """Load the plugins ``config`` enables plus the memory ``udp`` transport on ``network`` and
    the ``extra`` plugin objects. ``config`` must not enable the real ``udp`` plugin (both would
    register the transport ``udp``): use ``[plugins] enable = []``. ``tls_stand_in`` also
    registers :class:`MemoryTlsStandIn` as ``tls`` (listen on it as ``tls:HOST:PORT``),
    ``ws_stand_in`` :class:`MemoryWsStandIn` as ``ws``."""
    plugin = MemoryUdpPlugin(network, tls_stand_in=tls_stand_in, ws_stand_in=ws_stand_in)
    return load_plugins(config, extra=[(PLUGIN_NAME, plugin), *extra])
