"""IP literals, parsed once.

Every call parses the same few addresses again and again (the relay's, its peers', the SDP
connection lines of phones that call often): :func:`ip_literal` remembers them.
"""

from __future__ import annotations

import functools
import ipaddress

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@functools.lru_cache(maxsize=4096)
def ip_literal(text: str) -> IpAddress:
    """``ipaddress.ip_address(text)``, memoized (the results are immutable). Raises
    ValueError for anything but an IPv4 or IPv6 literal; failures are not remembered."""
    return ipaddress.ip_address(text)
