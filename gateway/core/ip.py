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
