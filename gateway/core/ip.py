"""IP literals, parsed once.

Every call parses the same few addresses again and again (the relay's, its peers', the SDP
connection lines of phones that call often): :func:`ip_literal` remembers them.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import NamedTuple

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=4096)
def ip_literal(text: str) -> IpAddress:
    """``ipaddress.ip_address(text)``, memoized (the results are immutable). Raises
    ValueError for anything but an IPv4 or IPv6 literal; failures are not remembered."""
    return ipaddress.ip_address(text)


class IpFacts(NamedTuple):
    """What the media path asks of an address from SDP, for every offer and answer: the
    address's canonical text, its version, and whether it is the unspecified or a multicast
    one. ``ipaddress`` answers each in Python calls of its own (a string built from the integer
    each time, a comparison with a constant address); these are worked out once per text."""

    text: str
    version: int
    unspecified: bool
    multicast: bool


@functools.lru_cache(maxsize=4096)
def ip_facts(text: str) -> IpFacts:
    """:class:`IpFacts` of the IP literal ``text``, memoized as :func:`ip_literal`. Raises
    ValueError for anything but an IPv4 or IPv6 literal; failures are not remembered."""
    ip = ip_literal(text)
    return IpFacts(str(ip), ip.version, ip.is_unspecified, ip.is_multicast)


def source_key(source: tuple[object, ...]) -> tuple[str, int]:
    """A datagram's source as one host and port that tells sources apart: ``(host, port)``,
    the host with ``%<scope id>`` when the socket gave a nonzero one (RFC 4007 §6, §11: a
    link-local address names a host only with its zone; ``fe80::1`` on two links are two
    hosts). recvfrom gives an IPv6 source as (host, port, flowinfo, scope_id), the host without
    its zone (Python 3.7 on): the call's handshake queue, the DTLS engine's handshakes per
    source and its cookie all key a source by this, so that they agree (session 44; before,
    the queue and the cookie could disagree on a link-local source, which then lost the
    priority a returned cookie gives)."""
    host = str(source[0])
    if len(source) >= 4 and source[3] and "%" not in host:
        host = f"{host}%{source[3]}"
    return host, int(source[1])  # type: ignore[call-overload]
