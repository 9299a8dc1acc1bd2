"""A check of an HTTP/1.1 request head's octets before h11 parses it.

h11's header-field regex backtracks over the white space around a control character it then
refuses: "Upgrade:" + 8000 spaces + CR + 8000 spaces took it 0.2 s of the event loop (quadratic),
within its 16 KiB head limit, per connection attempt, before any authentication. The gateway's
HTTP servers (the WebSocket transports' handshake, the metrics exporter) refuse such a head with
400 first.
"""

from __future__ import annotations

import re

# Octets no HTTP/1.1 request head may hold (RFC 9110 §5.5: a field value holds no CR, LF or
# NUL; RFC 9112 §2.2: a bare CR is invalid). VT and FF are the rest of what h11's header regex
# treats as white space. A bare CR is one not followed by LF; a CR that ends the bytes seen so
# far is judged when the next octet comes.
_BAD_HEAD_OCTET = re.compile(rb"[\x00\x0b\x0c]|\r(?!\n)")


def head_problem_untrusted(head: bytes | bytearray) -> str | None:
    """What makes ``head``, the start of an HTTP request head, unacceptable, or None.

    h11 would refuse these octets too, but only after its header-field regex backtracked over
    the white space around them: "Upgrade:" + 8000 spaces + CR + 8000 spaces took it 0.2 s of
    the event loop's time (quadratic), per connection attempt."""
    found = _BAD_HEAD_OCTET.search(head[:-1] if head.endswith(b"\r") else head)
    if found is None:
        return None
    return f"control character 0x{found[0][0]:02x} in the request head"
