"""Write SIP requests and responses as bytes (RFC 3261 §7).

One line per :class:`~gateway.core.sip.message.Headers` entry, CRLF line ends, and a
Content-Length that always equals ``len(body)`` (RFC 3261 §18.3, §20.14: mandatory on streams,
and a wrong value would desynchronize the peer's framing). A stored Content-Length keeps its
position and gets the right value; without one it is appended last.

Anything that would let a value escape its line (CR, LF) or break the start line is our
own bug, not the peer's, and raises :class:`LocalSipError`.
"""

from __future__ import annotations

from gateway.core.sip.errors import LocalSipError
from gateway.core.sip.grammar import is_token
from gateway.core.sip.headers import canonical_name
from gateway.core.sip.message import Request, Response
from gateway.core.sip.uri import Uri

__all__ = ["serialize_message", "serialize_uri"]

# CR/LF would let a value escape its line (header injection). NUL is legal inside a quoted-pair
# (RFC 3261 §25.1; RFC 4475 §3.1.1.2), so a parsed message may carry it.
_FORBIDDEN = ("\r", "\n")


def serialize_uri(uri: Uri) -> str:
    """Wire form of a URI (components are stored escaped, so this is ``str(uri)``)."""
    text = str(uri)
    if " " in text or "\t" in text or "\r" in text or "\n" in text:  # _FORBIDDEN and white space
        raise LocalSipError("URI contains whitespace or control characters")
    return text


# Header names already checked -> whether the name is Content-Length. A message has a dozen
# fields and the same names recur in every message; bounded, as names can come from the network.
_CHECKED_NAMES: dict[str, bool] = {}
_CHECKED_NAMES_MAX = 1024


def _check_name(name: str) -> bool:
    """Raise LocalSipError unless ``name`` is a token; True when it is Content-Length."""
    if not is_token(name):
        raise LocalSipError("header name is not a token")
    is_length = canonical_name(name) == "Content-Length"
    if len(_CHECKED_NAMES) < _CHECKED_NAMES_MAX:
        _CHECKED_NAMES[name] = is_length
    return is_length


def serialize_message(msg: Request | Response) -> bytes:
    """Bytes of ``msg``: start line, header fields, empty line, body."""
    if isinstance(msg, Request):
        if not is_token(msg.method):
            raise LocalSipError("request method is not a token")
        start = f"{msg.method} {serialize_uri(msg.uri)} {msg.version}"
    else:
        if not 100 <= msg.status <= 699:
            raise LocalSipError("status code must be 100..699")
        if "\r" in msg.reason or "\n" in msg.reason:  # _FORBIDDEN
            raise LocalSipError("reason phrase contains CR or LF")
        start = f"{msg.version} {msg.status} {msg.reason}"
    lines = [start]
    length_written = False
    for name, value in msg.headers.fields:
        is_length = _CHECKED_NAMES.get(name)
        if is_length is None:
            is_length = _check_name(name)
        if is_length:
            if length_written:
                continue  # a second Content-Length would make the message invalid (RFC 4475 §3.3.9)
            lines.append(f"{name}: {len(msg.body)}")
            length_written = True
            continue
        if "\r" in value or "\n" in value:  # _FORBIDDEN, without a generator per field
            raise LocalSipError(f"value of {name} contains CR or LF")
        lines.append(f"{name}: {value}")
    if not length_written:
        lines.append(f"Content-Length: {len(msg.body)}")
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode("utf-8") + msg.body
