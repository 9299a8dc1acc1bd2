"""Lexical pieces of the SDP grammar (RFC 8866 §9) shared by the parser and the typed accessors.

Everything here reads text that came from the network and raises :class:`SdpError` with a reason
that names the field, never its content (an a=crypto line must not end up in a log line).
"""

from __future__ import annotations

import functools
import re

from gateway.core.ip import ip_literal
from gateway.core.sdp.errors import SdpError

# RFC 8866 §9: token-char = ALPHA / DIGIT / "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" /
# "." / "^" / "_" / "`" / "{" / "|" / "}" / "~"
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_TOKEN_CHARS = frozenset(_ALNUM + "!#$%&'*+-.^_`{|}~")
# RFC 8866 §9 (FQDN, extn-addr): what a host name in c=/o=/a=rtcp may contain.
_HOST_CHARS = frozenset(_ALNUM + "-.")

# Numbers in SDP: NTP times and session ids are 64-bit in practice; 20 digits holds 2**64.
MAX_DIGITS = 20


# The two checks every SDP line makes several times, as compiled runs (a Python loop per
# character before). Held to the character sets above by a unit test.
TOKEN = re.compile("[" + re.escape("".join(sorted(_TOKEN_CHARS))) + "]+")
"""A run of token characters; the SDP reader calls its ``fullmatch`` directly on every a= line's
name (a Python frame less than :func:`is_token`)."""
_DIGIT_RUN = re.compile("[0-9]+")
_DOTTED = re.compile("[0-9.]*")  # only digits and dots (or nothing): an IPv4 literal, if any


def is_token(text: str) -> bool:
    """True when ``text`` is an RFC 8866 token (attribute names, media types, bwtypes ...)."""
    return TOKEN.fullmatch(text) is not None


def is_digits(text: str) -> bool:
    """True for one or more ASCII digits (``str.isdigit`` also accepts '²' and other digits)."""
    return _DIGIT_RUN.fullmatch(text) is not None


def parse_uint_untrusted(
    text: str, what: str, *, maximum: int | None = None, minimum: int = 0
) -> int:
    """An unsigned decimal of at most :data:`MAX_DIGITS` digits within [minimum, maximum]."""
    # The pattern called directly rather than through is_digits: a frame less for each of the
    # numbers of every body's o=, t= and m= lines.
    if _DIGIT_RUN.fullmatch(text) is None or len(text) > MAX_DIGITS:
        raise SdpError(f"{what} is not a number")
    value = int(text)
    if value < minimum or (maximum is not None and value > maximum):
        raise SdpError(f"{what} is out of range")
    return value


def check_address_untrusted(addrtype: str, address: str, what: str) -> None:
    """A unicast/multicast address literal or host name fitting ``addrtype`` (RFC 8866 §5.7).

    IP4 accepts a dotted quad or a host name, IP6 an IPv6 literal or a host name (RFC 8866 allows
    FQDNs). A dotted quad under IP6 or an IPv6 literal under IP4 is refused: it is the kind of
    mismatch that sends media to the wrong place. Other address types are only checked to be
    non-empty, since we never route media to them.
    """
    if not address:
        raise SdpError(f"{what}: empty address")
    kind = addrtype.upper()
    if kind not in ("IP4", "IP6"):
        if any(ch.isspace() for ch in address):
            raise SdpError(f"{what}: bad address")
        return
    if ":" in address:
        if kind != "IP6":
            raise SdpError(f"{what}: IPv6 address with address type IP4")
        try:
            ip = ip_literal(address)
        except ValueError:
            ip = None
        if ip is None or ip.version != 6:
            raise SdpError(f"{what}: bad IPv6 address")
        if ip.scope_id is not None:
            # RFC 8866 §9's IP6-address has no zone; Python's parser takes "fe80::1%eth0",
            # and a zone the peer names would choose the interface the relay sends from.
            raise SdpError(f"{what}: IPv6 address with a zone id")
        return
    if _DOTTED.fullmatch(address) is not None:
        if kind != "IP4":
            raise SdpError(f"{what}: IPv4 address with address type IP6")
        try:
            ip = ip_literal(address)
        except ValueError:
            ip = None
        if ip is None or ip.version != 4:
            raise SdpError(f"{what}: bad IPv4 address")
        return
    if not all(ch in _HOST_CHARS for ch in address) or address.startswith((".", "-")):
        raise SdpError(f"{what}: bad host name")


@functools.lru_cache(maxsize=1024)
def is_multicast(address: str) -> bool:
    """True for an IPv4/IPv6 multicast literal (host names are taken as unicast)."""
    try:
        return ip_literal(address).is_multicast
    except ValueError:
        return False
