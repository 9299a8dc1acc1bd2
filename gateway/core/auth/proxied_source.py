"""Who a failed authentication is counted against when an edge proxy relayed the request.

``[gateway] auth_max_failures`` counts failures per source address (:mod:`failures`). Behind an
edge proxy (kamailio or OpenSIPS in front of the nodes, where the phones' NAT bindings and TCP
or TLS connections end) every phone's REGISTER and INVITE comes from the proxy's address: one
phone with a wrong password, or one guesser, would block every phone behind it. For a request
from one of ``[gateway] auth_proxies`` the address counted is the one that proxy received it
from, which the proxy wrote into the Via below its own (RFC 3261 §18.2.1: ``received`` when the
sent-by is not the packet's source; RFC 3581 §4: ``rport``). Through a chain of listed proxies
(an edge behind a load balancer) the walk goes on down the Vias while the address found is
another listed proxy's.

Only the listed proxies are believed: below them the Vias are the sender's to write, so a
request from any other address is counted against that address, whatever its Vias say. A
listed proxy's own requests (one Via: its OPTIONS, say) are counted against the proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from gateway.core.ip import ip_literal
from gateway.core.sip.headers import Via
from gateway.core.sip.message import Request
from gateway.core.sip.via import default_port

__all__ = ["AuthProxies", "proxied_source"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AuthProxies:
    """``[gateway] auth_proxies``: addresses and networks (CIDR) of trusted edge proxies."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry, strict=True) for entry in entries
        )

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, host: str) -> bool:
        try:
            address = ip_literal(host)
        except ValueError:
            return False
        mapped = getattr(address, "ipv4_mapped", None)  # a dual-stack socket's IPv4 peer
        if mapped is not None:
            address = mapped
        return any(address in network for network in self.networks)


def proxied_source(
    request: Request, source: tuple[str, int], proxies: AuthProxies
) -> tuple[str, int]:
    """The address ``request``'s failed authentication is counted against: ``source`` (host,
    port), or, when that is a listed proxy, the address the proxy says the request came from
    (see the module's docstring). A proxy's Via that names no address (a host name without
    ``received``, which a proxy that follows RFC 3261 §18.2.1 does not leave) ends the walk at
    the proxy."""
    if not proxies or source[0] not in proxies:
        return source
    vias = request.vias  # every Via parsed already: a garbled one got the request a 400
    depth = 1
    while source[0] in proxies and depth < len(vias):
        below = _received_from(vias[depth])
        if below is None:
            break
        source = below
        depth += 1
    return source


def _received_from(via: Via) -> tuple[str, int] | None:
    """Where the hop that wrote ``via`` sent from, as the next hop up recorded it: ``received``
    (else the sent-by host, when an IP literal) and ``rport`` (else the sent-by port, else the
    transport's default)."""
    host = via.received or via.host
    plain = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ip_literal(plain)
    except ValueError:
        return None
    port = via.rport or via.port or default_port(via.transport)
    return plain, port
