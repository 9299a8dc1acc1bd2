"""Flows: the core's table of (transport, local address, remote address) -> how to send there.

A flow is what a SIP message arrived over and what a reply or a later request goes back over: a UDP
socket and a peer address, or one TCP/TLS connection. Keeping them lets responses follow RFC 3261
§18.2.2 and lets calls reach users behind NAT over the flow they registered on (RFC 5626 §3.4 idea).
"""

from __future__ import annotations

import collections
from collections.abc import Awaitable, Callable, Iterator

import attrs

TLS_TRANSPORTS = frozenset({"tls", "wss"})
"""Transports that run over TLS (WSS is a WebSocket over TLS, RFC 7118 §5): what makes a
dialog over a SIPS Request-URI secure (RFC 3261 §12.1.1)."""

Address = tuple[str, int]


def format_host_port(host: str, port: int | None = None) -> str:
    """``host:port`` (or ``host`` alone when ``port`` is None) as an operator reads it and as URIs
    write it: an IPv6 address in brackets, whose colons would otherwise run into the port's
    (RFC 3986 §3.2.2, RFC 3261 §25.1 IPv6reference). A host already in brackets is kept."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def format_address(address: Address) -> str:
    return format_host_port(address[0], address[1])


@attrs.frozen
class FlowKey:
    transport: str
    local: Address
    remote: Address

    def __str__(self) -> str:
        return f"{self.transport}:{format_address(self.local)}<->{format_address(self.remote)}"


@attrs.frozen
class PeerCertificate:
    """What TLS learned about the peer (filled by the tls transport, read by policy and reports).

    ``verified``: the chain verified against the configured CAs and, on a connection the gateway
    opened, the certificate names ``server_name``. ``server_name``: on a connection the gateway
    opened (to a trunk, RFC 5922 §4), the name the certificate had to carry; None on one the peer
    opened, where the certificate is the peer's client certificate (a phone's)."""

    sha256_fingerprint: str
    subject: str
    issuer: str
    verified: bool
    subject_alt_names: tuple[str, ...] = ()
    server_name: str | None = None


@attrs.define(eq=False)
class Flow:
    """One signalling path. ``send`` writes one complete SIP message (already serialized).

    ``reliable`` is True for stream transports (no SIP retransmissions, RFC 3261 §17.1.1.2) and
    ``secure`` for TLS. ``closed`` becomes True when the connection is gone; a closed flow is
    never used again.
    """

    key: FlowKey
    send: Callable[[bytes], Awaitable[None]]
    reliable: bool
    secure: bool = False
    peer_certificate: PeerCertificate | None = None
    closed: bool = False
    last_activity: float = 0.0

    @property
    def transport(self) -> str:
        return self.key.transport

    @property
    def local(self) -> Address:
        return self.key.local

    @property
    def remote(self) -> Address:
        return self.key.remote


class FlowTable:
    """Live flows by key, plus by (transport, remote) to reuse a connection in both directions
    (RFC 3261 §18: a TCP connection opened by a peer carries our requests to it too)."""

    def __init__(self) -> None:
        self._by_key: dict[FlowKey, Flow] = {}
        self._by_remote: dict[tuple[str, Address], Flow] = {}

    def add(self, flow: Flow) -> None:
        self._by_key[flow.key] = flow
        self._by_remote[(flow.key.transport, flow.key.remote)] = flow

    def remove(self, flow: Flow) -> None:
        flow.closed = True
        if self._by_key.get(flow.key) is flow:
            del self._by_key[flow.key]
        remote_key = (flow.key.transport, flow.key.remote)
        if self._by_remote.get(remote_key) is flow:
            del self._by_remote[remote_key]

    def get(self, key: FlowKey) -> Flow | None:
        return self._by_key.get(key)

    def find(self, transport: str, remote: Address) -> Flow | None:
        flow = self._by_remote.get((transport, remote))
        if flow is None or flow.closed:
            return None
        return flow

    def connections(self) -> collections.Counter[str]:
        """Open connections (stream flows: TCP, TLS, WebSocket) by transport, for monitoring:
        a walk of the table, once per scrape."""
        return collections.Counter(
            flow.key.transport for flow in self._by_key.values() if flow.reliable
        )

    def expire_datagram_flows(self, *, now: float, idle: float) -> int:
        """Forget datagram flows that have received nothing for ``idle`` seconds. A UDP flow
        is only a remembered peer address, so this bounds the table against scanners that
        send one packet from many ports; a later request to that peer simply makes a new one.
        Connection flows end when their connection does. Returns how many were removed."""
        stale = [
            flow
            for flow in self._by_key.values()
            if not flow.reliable and now - flow.last_activity > idle
        ]
        for flow in stale:
            self.remove(flow)
        return len(stale)

    def __iter__(self) -> Iterator[Flow]:
        return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        return len(self._by_key)

    def sizes(self) -> dict[str, int]:
        """Entries of the table's two maps, for leak hunting (``StatusView.tables``)."""
        return {"flows": len(self._by_key), "flows_by_remote": len(self._by_remote)}
