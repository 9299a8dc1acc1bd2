"""Via handling: new branches, received/rport stamping, and where a response goes.

- RFC 3261 §8.1.1.7: every new client transaction gets a branch that starts with the magic cookie
  ``z9hG4bK``; the rest is a unique token. Here the token comes from an injected id source, so
  tests are deterministic and the gateway decides how ids are made.
- RFC 3261 §18.2.1 and RFC 3581 §4: on receipt of a request the server records in the top Via
  where the request really came from (``received``, and ``rport`` when the client asked for it),
  so that responses find their way back through NATs.
- RFC 3261 §18.2.2 and RFC 3581 §4: a response goes back over the request's connection on
  reliable transports; otherwise to ``maddr``, to ``received``:``rport``, or to the sent-by.

Addresses are :class:`Hop` values: a Via transport token and an IP address (IPv6 without
brackets) with a port, as the transport layer sees the other end of a packet or connection.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import attrs

from gateway.core.ip import ip_literal
from gateway.core.sip.errors import LocalSipError
from gateway.core.sip.grammar import is_token, via_text
from gateway.core.sip.headers import MAGIC_COOKIE, Via
from gateway.core.sip.message import Request

__all__ = [
    "DEFAULT_PORTS",
    "Hop",
    "ResponseTarget",
    "default_port",
    "has_rfc3261_branch",
    "make_via",
    "new_branch",
    "response_target",
    "stamp_received",
    "stamp_request",
]

# RFC 3261 §19.1.2 (5060/5061), RFC 4168 (SCTP), RFC 7118 §5 (WebSocket: the HTTP ports).
DEFAULT_PORTS: dict[str, int] = {
    "UDP": 5060,
    "TCP": 5060,
    "SCTP": 5060,
    "TLS": 5061,
    "TLS-SCTP": 5061,
    "WS": 80,
    "WSS": 443,
}


def default_port(transport: str) -> int:
    """Default port of a Via transport token (5060 for unknown ones, RFC 3261 §18.2.2)."""
    return DEFAULT_PORTS.get(transport.upper(), 5060)


def _upper(value: str) -> str:
    return value.upper()


@attrs.frozen
class Hop:
    """One end of a SIP hop as the transport layer sees it.

    ``transport`` is a Via transport token (``UDP``, ``TCP``, ``TLS``, ``WS`` ...; stored
    upper-case), ``host`` an IP address (IPv6 without brackets) or, for a destination not yet
    resolved, a domain name.
    """

    transport: str = attrs.field(converter=_upper)
    host: str
    port: int

    @property
    def reliable(self) -> bool:
        """True on every transport but UDP: no retransmissions there (RFC 3261 §17.1.1.2)."""
        return self.transport != "UDP"


def new_branch(next_id: Callable[[], str]) -> str:
    """A fresh RFC 3261 branch: the magic cookie plus a token from ``next_id`` (§8.1.1.7).

    ``next_id`` must return a non-empty token that is unique across space and time (a random or
    counter-based id); a value that is not a token is a bug and raises :class:`LocalSipError`.
    """
    token = next_id()
    if not token or not is_token(token):
        raise LocalSipError("branch id source returned an empty or non-token value")
    return MAGIC_COOKIE + token


def has_rfc3261_branch(via: Via) -> bool:
    """True when the branch can identify a transaction by itself (RFC 3261 §17.2.3).

    That is a branch that starts with the magic cookie *and has something after it*: RFC 4475
    §3.2.1 (badbranch) sends exactly ``z9hG4bK``, which must fall back to RFC 2543 matching.
    """
    branch = via.branch
    return (
        branch is not None and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE)
    )


def make_via(
    transport: str, host: str, port: int | None, *, branch: str, rport: bool = True
) -> Via:
    """Our own Via for a request we send: sent-by, branch, and the RFC 3581 ``rport`` flag.

    ``host`` is our address as the peer should see it (IPv6 in brackets, as in a URI).
    """
    params: tuple[tuple[str, str | None], ...] = (("branch", branch),)
    if rport:
        params += (("rport", None),)
    return Via(transport=transport.upper(), host=host, port=port, params=params)


def stamp_received(via: Via, source: Hop) -> Via:
    """The top Via of a received request, annotated with where it came from.

    RFC 3261 §18.2.1: add ``received=<source IP>`` when the sent-by host is a domain name or an
    IP address other than the packet's source. RFC 3581 §4: when the Via has ``rport``, fill in
    the source port, and add ``received`` even when it equals the sent-by. A ``received`` the
    sender wrote itself would misdirect our responses, so it is replaced or dropped.

    Parameter names compare case-insensitively (RFC 3261 §7.3.1); the first ``rport`` and the
    first ``received`` are set where they stand, keeping their spelling, and a missing
    ``received`` goes last: what :func:`~gateway.core.sip.uri.set_param` does, found here in one
    pass over the parameters (every received request is stamped; docs/benchmarks.md,
    session 43).
    """
    params = via.params
    rport_at = received_at = -1
    for index, (key, _) in enumerate(params):
        name = key.lower()
        if name == "rport":
            if rport_at < 0:
                rport_at = index
        elif name == "received" and received_at < 0:
            received_at = index
    if rport_at < 0 and _same_ip(via.host, source.host):
        if received_at < 0:
            return via
        return via.with_params(tuple([p for p in params if p[0].lower() != "received"]))
    stamped = list(params)
    if rport_at >= 0:
        stamped[rport_at] = (params[rport_at][0], str(source.port))
    received = _plain(source.host)
    if received_at >= 0:
        stamped[received_at] = (params[received_at][0], received)
    else:
        stamped.append(("received", received))
    return via.with_params(tuple(stamped))


def stamp_request(request: Request, source: Hop) -> Request:
    """``request`` with its top Via stamped by :func:`stamp_received`; other Vias untouched."""
    stamped = via_text(stamp_received(request.top_via, source))
    return request.with_headers(request.headers.replace_first("Via", stamped))


@attrs.frozen
class ResponseTarget:
    """Where to send a response (RFC 3261 §18.2.2, RFC 3581 §4).

    With ``reuse_connection`` (reliable transports) the response MUST go over the connection the
    request arrived on while it is open; ``host``/``port`` is where to open a new connection
    otherwise. ``port`` is None only when ``host`` is a domain name without a port: resolve it
    with RFC 3263 §5 (SRV). ``host`` is an IP address without brackets, or a domain name.
    """

    transport: str
    host: str
    port: int | None
    reuse_connection: bool


def response_target(via: Via) -> ResponseTarget:
    """Apply RFC 3261 §18.2.2 and RFC 3581 §4 to the top Via of a response (as stamped on receipt
    of its request by :func:`stamp_received`)."""
    transport = via.transport.upper()
    received, rport, maddr = _response_params(via)
    if transport != "UDP":
        # Reliable: the existing connection first; else received (or sent-by) at the sent-by port.
        host = _plain(received if received is not None else via.host)
        return ResponseTarget(transport, host, _port_or_default(via, host), reuse_connection=True)
    if maddr is not None:
        # Multicast (or explicit) address; port from sent-by or 5060.
        return ResponseTarget(transport, _plain(maddr), via.port or 5060, reuse_connection=False)
    if received is not None:
        port = rport if rport is not None else via.port or default_port(transport)
        return ResponseTarget(transport, _plain(received), port, reuse_connection=False)
    host = _plain(via.host)
    return ResponseTarget(transport, host, _port_or_default(via, host), reuse_connection=False)


def _response_params(via: Via) -> tuple[str | None, int | None, str | None]:
    """The Via's ``received``, ``rport`` (its port number, None when absent, a flag or not
    digits) and ``maddr`` values, in one pass over its parameters (every response sent reads
    them): the first of each name, compared case-insensitively (RFC 3261 §7.3.1, §20.42), as
    :attr:`Via.received`, :attr:`Via.rport` and :attr:`Via.maddr` read them."""
    received = rport = maddr = None
    seen_received = seen_rport = seen_maddr = False
    for key, value in via.params:
        name = key if key.islower() else key.lower()
        if name == "received":
            if not seen_received:
                received, seen_received = value, True
        elif name == "rport":
            if not seen_rport:
                rport, seen_rport = value, True
        elif name == "maddr" and not seen_maddr:
            maddr, seen_maddr = value, True
    port = int(rport) if rport is not None and rport.isdigit() else None
    return received, port, maddr


def _port_or_default(via: Via, host: str) -> int | None:
    if via.port is not None:
        return via.port
    # RFC 3263 §5: a numeric sent-by without port uses the default; a name without port is an
    # SRV lookup, which is the caller's business.
    return default_port(via.transport) if _ip(host) is not None else None


def _plain(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ip_literal(_plain(host))
    except ValueError:
        return None


def _same_ip(sent_by_host: str, source_host: str) -> bool:
    """True when the sent-by is an IP literal equal to the source (IPv6 spellings normalized)."""
    sent_by = _ip(sent_by_host)
    return sent_by is not None and sent_by == _ip(source_host)
