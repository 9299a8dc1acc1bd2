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

The same walk says how such a request reached the proxy (:func:`relayed_hops`): the Via below a
proxy's names the transport its sender sent it over (RFC 3261 §18.1.1, §20.42), so a call's
protection line can say that a phone behind kamailio sent its INVITE (and its SDES keys) over
UDP, though kamailio's hop to the node is TLS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

import attrs

from gateway.core.ip import ip_literal
from gateway.core.sip.headers import Via
from gateway.core.sip.message import Request
from gateway.core.sip.via import default_port
from gateway.core.transport.flows import format_address

__all__ = ["AuthProxies", "RelayedHop", "proxied_source", "relayed_hops"]

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


@attrs.frozen
class RelayedHop:
    """One listed proxy's hop: ``proxy`` received the request over ``transport`` (lower case,
    as the sender's Via names it) from ``source``."""

    proxy: tuple[str, int]
    transport: str
    source: tuple[str, int]

    def record(self) -> dict[str, str]:
        """The call record's form (a leg's ``relayed_by``, docs/media_security.md)."""
        return {
            "proxy": format_address(self.proxy),
            "transport": self.transport,
            "from": format_address(self.source),
        }


def relayed_hops(
    request: Request, source: tuple[str, int], proxies: AuthProxies
) -> tuple[RelayedHop, ...]:
    """The hops of ``request`` below the listed proxies it came through, the nearest first:
    empty when ``source`` (host, port) is no listed proxy. A proxy's Via that names no
    address (a host name without ``received``, which a proxy that follows RFC 3261 §18.2.1
    does not leave) ends the walk at the proxy."""
    if not proxies:
        return ()
    vias = request.vias  # every Via parsed already: a garbled one got the request a 400
    hops: list[RelayedHop] = []
    depth = 1
    while source[0] in proxies and depth < len(vias):
        below = _received_from(vias[depth])
        if below is None:
            break
        hops.append(RelayedHop(source, vias[depth].transport.lower(), below))
        source = below
        depth += 1
    return tuple(hops)


def proxied_source(
    request: Request, source: tuple[str, int], proxies: AuthProxies
) -> tuple[str, int]:
    """The address ``request``'s failed authentication is counted against: ``source`` (host,
    port), or, when that is a listed proxy, the address the proxy says the request came from
    (see the module's docstring and :func:`relayed_hops`)."""
    hops = relayed_hops(request, source, proxies)
    return hops[-1].source if hops else source


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
