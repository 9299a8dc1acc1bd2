"""Parse one complete SIP message from bytes (RFC 3261 §7, §20, §25; RFC 4475).

The input is one message: a UDP datagram, or a frame the stream framer cut at Content-Length.
The parser checks what every later layer relies on (start line, Via, From, To, Call-ID, CSeq,
Max-Forwards, Content-Length, Expires, Contact/Route syntax) so that the typed accessors of
:class:`~gateway.core.sip.message.Request` / ``Response`` do not fail later on a message that was
accepted. Header values are stored unfolded and trimmed, one :class:`Headers` entry per element
of the comma-separated list headers (:data:`~gateway.core.sip.headers.LIST_HEADERS`).

Errors are :class:`SipParseError` (or :class:`MessageTooLarge`) whose ``status`` is the response
to send to a request (400, 505, 416, 513) and None ("discard", RFC 3261 §18.1.2) when the message
is a response. :func:`salvage_request_headers` recovers what is needed to address that response.

Semantics left to the UAS core (not checked here): Require/Proxy-Require (420), Content-Type and
Accept (415/406), Max-Forwards reaching 0 (483), Authorization schemes, Via sent-by sanity.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar

from gateway.core.sip.errors import MessageTooLarge, SipParseError
from gateway.core.sip.grammar import (
    is_call_id,
    is_token,
    parse_cseq_untrusted,
    parse_name_addr_untrusted,
    parse_uint_untrusted,
    parse_uri_untrusted,
    parse_via_untrusted,
    split_list_untrusted,
)
from gateway.core.sip.headers import LIST_HEADERS, CSeq, canonical_name
from gateway.core.sip.message import SIP_VERSION, Headers, Request, Response, index_key
from gateway.core.sip.uri import SipUri, TelUri, Uri

__all__ = [
    "SUPPORTED_URI_SCHEMES",
    "parse_message_untrusted",
    "parse_request_line_untrusted",
    "parse_status_line_untrusted",
    "salvage_request_headers",
]

SUPPORTED_URI_SCHEMES: frozenset[str] = frozenset({"sip", "sips", "tel"})
"""Request-URI schemes the gateway serves; any other gets 416 (RFC 3261 §8.2.2.1)."""

# ASCII: for str patterns \d also matches fullwidth or Arabic-Indic digits, which int() reads.
_VERSION = re.compile(r"SIP/(\d{1,3})\.(\d{1,3})", re.IGNORECASE | re.ASCII)
_MAX_DELTA_SECONDS = 2**32 - 1  # RFC 3261 §20.19, §20.47: delta-seconds; RFC 4475 §3.1.2.4
_MAX_CONTENT_LENGTH = 2**32 - 1
# Header fields that may appear at most once (RFC 3261 §7.3.1: only list headers may repeat;
# RFC 4475 §3.3.8, §3.3.9 ask for 400 when these repeat).
_SINGLE = (
    "From",
    "To",
    "Call-ID",
    "CSeq",
    "Max-Forwards",
    "Content-Length",
    "Content-Type",
    "Expires",
    "Min-Expires",
)


def parse_message_untrusted(
    data: bytes, *, max_size: int = 65535, max_headers: int = 200, max_line: int = 8192
) -> Request | Response:
    """Parse one complete SIP request or response.

    ``max_size`` bounds the whole input, ``max_headers`` the number of header entries (after list
    splitting) and ``max_line`` every physical header line; exceeding one raises
    :class:`MessageTooLarge` (513). With Content-Length the body is exactly that many bytes and
    any further octets are ignored (RFC 3261 §18.3, RFC 4475 §3.1.1.8); without it the body is the
    rest of the input (RFC 3261 §20.14 allows this for datagrams only; stream framing always
    supplies Content-Length). Leading CRLFs are skipped (RFC 3261 §7.5).
    """
    response = data.lstrip(b"\r\n")[:4].upper() == b"SIP/"
    try:
        return _parse(data, max_size=max_size, max_headers=max_headers, max_line=max_line)
    except SipParseError as err:
        if response:
            # RFC 3261 §18.1.2 / RFC 4475 §3.1.2: a malformed response is silently discarded.
            err.status = None
        raise


def parse_request_line_untrusted(line: str) -> tuple[str, Uri]:
    """Parse ``Method SP Request-URI SP SIP-Version`` (RFC 3261 §7.1, §25.1).

    Exactly one SP separates the three elements (RFC 4475 §3.1.2.8-10). An unknown version gives
    505. The Request-URI scheme is not checked here (see :data:`SUPPORTED_URI_SCHEMES`).
    """
    if "\t" in line:
        raise SipParseError("HTAB in Request-Line")
    if line != line.rstrip(" "):
        raise SipParseError("whitespace at the end of the Request-Line")
    if line != line.lstrip(" ") or "  " in line:
        raise SipParseError("extra whitespace in the Request-Line")
    parts = line.split(" ")
    if len(parts) > 3:
        raise SipParseError("whitespace inside the Request-URI")
    if len(parts) < 3:
        raise SipParseError("Request-Line is not Method SP Request-URI SP SIP-Version")
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError("invalid method in the Request-Line")
    _check_version(version, request=True)
    try:
        uri = parse_uri_untrusted(uri_text)
    except SipParseError as err:
        raise SipParseError(f"bad Request-URI ({err.reason})") from err
    if isinstance(uri, SipUri) and uri.headers:
        # RFC 3261 §19.1.1 table 1: headers are not allowed in a Request-URI (RFC 4475 §3.1.2.11).
        raise SipParseError("Request-URI must not contain headers")
    return method, uri


def parse_status_line_untrusted(line: str) -> tuple[int, str]:
    """Parse ``SIP-Version SP Status-Code SP Reason-Phrase`` (RFC 3261 §7.2, §25.1).

    The status code is three digits, 100..699. An empty reason phrase is valid (RFC 4475 §3.1.1.13);
    a status line that ends right after the code is accepted as having one.
    """
    version, _, rest = line.partition(" ")
    _check_version(version, request=False)
    code, _, reason = rest.partition(" ")
    # isascii: str.isdigit() is also true for "²" or "٣", which int() refuses or misreads.
    if len(code) != 3 or not code.isascii() or not code.isdigit() or not 100 <= int(code) <= 699:
        raise SipParseError("status code must be 100..699")
    if _REASON_CONTROL.search(reason) is not None:
        raise SipParseError("control character in the reason phrase")
    return int(code), reason


def _check_version(version: str, *, request: bool) -> None:
    if version == SIP_VERSION:
        return  # what every element sends (RFC 3261 §7.1: upper case): no match and no int()
    match = _VERSION.fullmatch(version)
    if match is None:
        raise SipParseError("malformed SIP-Version")
    if (int(match[1]), int(match[2])) != (2, 0):
        # RFC 3261 §8.2.2 / §21.5.20: 505 Version Not Supported (RFC 4475 §3.1.2.16).
        raise SipParseError("SIP version not supported", status=505 if request else None)


def _parse(data: bytes, *, max_size: int, max_headers: int, max_line: int) -> Request | Response:
    if len(data) > max_size:
        raise MessageTooLarge("message larger than the size limit")
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    if start == len(data):
        raise SipParseError("empty message")
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        raise SipParseError("no empty line after the header fields")
    rest = data[end + 4 :]
    head = data[start:end]
    lines, folded = _decode_lines(head, max_line)
    first = lines[0]
    if first[:4].upper() == "SIP/":
        status, reason = parse_status_line_untrusted(first)
        headers = _headers(lines[1:], max_headers, folded)
        _, content_length = _validate_common(headers)
        body = _body(content_length, rest)
        return Response(status=status, reason=reason, headers=headers, body=body)
    method, uri = parse_request_line_untrusted(first)
    headers = _headers(lines[1:], max_headers, folded)
    cseq, content_length = _validate_common(headers)
    if cseq.method != method:
        # RFC 3261 §8.1.1.5 (RFC 4475 §3.1.2.17, §3.1.2.18): method names are case-sensitive.
        raise SipParseError("CSeq method does not match the Request-Line")
    body = _body(content_length, rest)
    scheme = "tel" if isinstance(uri, TelUri) else uri.scheme
    if scheme.lower() not in SUPPORTED_URI_SCHEMES:
        # RFC 3261 §8.2.2.1: 416 Unsupported URI Scheme (RFC 4475 §3.3.2). Checked last so that a
        # request that is also malformed gets its 400 first.
        raise SipParseError("Unsupported URI Scheme", status=416)
    return Request(method=method, uri=uri, headers=headers, body=body, version=SIP_VERSION)


# Control characters a reason phrase may not hold: all below 0x20 but HTAB, and DEL.
_REASON_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def _decode_lines(head: bytes, max_line: int) -> tuple[list[str], bool]:
    """The header section's lines, and whether a line continues the one before it (folded)."""
    crlfs = head.count(b"\r\n")
    if head.count(b"\r") != crlfs or head.count(b"\n") != crlfs:
        # Every CR and LF is part of a CRLF line end, or one of them stands alone.
        raise SipParseError("bare CR or LF in the header section")
    if len(head) > max_line and any(len(raw) > max_line for raw in head.split(b"\r\n")):
        raise MessageTooLarge("header line longer than the line limit")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # RFC 3261 §7.3.1 / §25.1: header text is UTF-8 (TEXT-UTF8).
        raise SipParseError("header section is not valid UTF-8") from None
    # A line starting with SP or HTAB continues the field before it (RFC 3261 §7.3.1). Looked
    # for in the text: on the bytes, ``in`` first reads its operand as a byte value and builds
    # and discards a TypeError, and ``head.find`` costs a method look-up.
    return text.split("\r\n"), "\r\n " in text or "\r\n\t" in text


def _headers(lines: list[str], max_headers: int, folded: bool) -> Headers:
    """Unfold (when ``folded``), split into (canonical name, value) entries, split list headers
    into elements. The name index every received message is read through (Headers.by_name) is
    made in the same loop."""
    fields: list[tuple[str, str]] = []
    index: dict[str, str | tuple[str, ...]] = {}
    for line in _unfold_lines(lines, strict=True) if folded else lines:
        name, colon, value = line.partition(":")
        # HCOLON = *( SP / HTAB ) ":" SWS
        name = name.rstrip(" \t")
        if not colon:
            raise SipParseError("header line without ':'")
        cname, key = _HEADER_NAMES.get(name) or _header_name(name)  # the cache first
        value = value.strip(" \t")
        if cname in LIST_HEADERS and "," in value:
            try:
                elements = split_list_untrusted(value)
            except SipParseError as err:
                detail = _BAD_PREFIX.sub("", err.reason)
                raise SipParseError(f"bad {cname}: {detail}") from err
            fields.extend([(cname, element) for element in elements])
            seen = index.get(key)
            values = (*((seen,) if isinstance(seen, str) else seen or ()), *elements)
            if values:  # indexed as below: one value as itself, several in a tuple
                index[key] = values[0] if len(values) == 1 else values
        else:
            fields.append((cname, value))
            # Indexed as Headers._values does: one value as itself, several in a tuple.
            seen = index.get(key)
            if seen is None:
                index[key] = value
            elif isinstance(seen, str):
                index[key] = (seen, value)
            else:
                index[key] = (*seen, value)
        if len(fields) > max_headers:
            raise MessageTooLarge("too many header fields")
    return Headers.indexed(tuple(fields), index)


# Header field names seen before -> their canonical form and its key in the name index: the same
# two dozen names arrive in every message. Bounded, so names a peer makes up are checked every
# time but never pile up.
_HEADER_NAMES: dict[str, tuple[str, str]] = {}
_HEADER_NAMES_MAX = 512


def _header_name(name: str) -> tuple[str, str]:
    """The canonical name of a header field name from the wire and its key in the name index;
    SipParseError unless a token."""
    names = _HEADER_NAMES.get(name)
    if names is None:
        if not is_token(name):
            raise SipParseError("invalid header field name")
        cname = canonical_name(name)
        names = (cname, index_key(cname))
        if len(_HEADER_NAMES) < _HEADER_NAMES_MAX:
            _HEADER_NAMES[name] = names
    return names


def _unfold_lines(lines: list[str], *, strict: bool) -> list[str]:
    """Join continuation lines (RFC 3261 §7.3.1: a line starting with SP/HTAB continues the
    previous header field; the CRLF and leading white space become one SP)."""
    if not any(line.startswith((" ", "\t")) for line in lines):
        return lines  # nothing folded: the usual case
    fields: list[list[str]] = []
    for line in lines:
        if line[:1] in (" ", "\t"):
            if not fields:
                if strict:
                    raise SipParseError("continuation line before the first header field")
                continue
            fields[-1].append(line.lstrip(" \t"))
        else:
            fields.append([line])
    return [" ".join(parts) for parts in fields]


_MANDATORY = frozenset(("From", "To", "Call-ID", "CSeq"))
_SINGLE_KEYS = tuple((name, name.lower()) for name in _SINGLE)  # Headers.by_name() keys
_UINTS = tuple(
    (name, name.lower(), maximum)  # Headers.by_name() keys, like _SINGLE_KEYS
    for name, maximum in (
        ("Max-Forwards", 255),
        ("Content-Length", _MAX_CONTENT_LENGTH),
        ("Expires", _MAX_DELTA_SECONDS),
        ("Min-Expires", _MAX_DELTA_SECONDS),
    )
)


def _validate_common(headers: Headers) -> tuple[CSeq, int | None]:
    """Checks shared by requests and responses (RFC 3261 §8.1.1, §20; RFC 4475 §3.1.2, §3.3).
    Returns the CSeq, which a request's method is checked against, and the Content-Length (None
    without one), which _body applies once the start line's own checks are done."""
    # Read from the name index directly (lower-case names): a value is a string, or a tuple
    # when the field is repeated. Headers.get would cost a Python call per look-up.
    by_name = headers.by_name()
    vias = by_name.get("via")
    if vias is None:
        raise SipParseError("missing Via header")
    for via in (vias,) if isinstance(vias, str) else vias:
        _check("Via", parse_via_untrusted, via)
    for name, key in _SINGLE_KEYS:
        value = by_name.get(key)
        if value is None:
            if name in _MANDATORY:
                raise SipParseError(f"missing {name} header")
        elif not isinstance(value, str):  # several values
            raise SipParseError(f"multiple {name} headers")
    for name, key in (("From", "from"), ("To", "to")):
        value = by_name[key]  # present and single: checked above
        assert isinstance(value, str)
        if _check(name, parse_name_addr_untrusted, value).wildcard:
            raise SipParseError(f"bad {name}: '*' is only allowed in Contact")
    call_id = by_name["call-id"]
    if not isinstance(call_id, str) or not is_call_id(call_id):
        raise SipParseError("bad Call-ID")
    cseq_value = by_name["cseq"]
    assert isinstance(cseq_value, str)
    cseq = _check("CSeq", parse_cseq_untrusted, cseq_value)
    content_length = None
    for name, key, maximum in _UINTS:
        value = by_name.get(key)
        if isinstance(value, str):  # absent is fine; several were refused above
            number = parse_uint_untrusted(value, name, maximum)
            if key == "content-length":
                content_length = number
    contact = by_name.get("contact")
    if isinstance(contact, str):
        _check("Contact", parse_name_addr_untrusted, contact)
    elif contact is not None:
        contacts = [_check("Contact", parse_name_addr_untrusted, v) for v in contact]
        if any(c.wildcard for c in contacts):
            # RFC 3261 §10.2.2: "*" stands alone.
            raise SipParseError("bad Contact: '*' combined with other contacts")
    for name, key in (("Route", "route"), ("Record-Route", "record-route")):
        routes = by_name.get(key)
        if routes is None:
            continue
        for value in (routes,) if isinstance(routes, str) else routes:
            if _check(name, parse_name_addr_untrusted, value).wildcard:
                raise SipParseError(f"bad {name}: '*' is not a route")
    return cseq, content_length


_T = TypeVar("_T")
_BAD_PREFIX = re.compile(r"^(?:bad [^:]{1,40}: )+")


def _check(name: str, parse: Callable[[str], _T], value: str) -> _T:
    """Run a grammar function on a header value; the error reason names the header field."""
    try:
        return parse(value)
    except SipParseError as err:
        detail = _BAD_PREFIX.sub("", err.reason)
        raise SipParseError(f"bad {name}: {detail}") from err


def _body(length: int | None, rest: bytes) -> bytes:
    """The body: ``rest`` cut to the Content-Length the common checks parsed, if any."""
    if length is None:
        return rest
    if length > len(rest):
        # RFC 4475 §3.1.2.2: the body is shorter than Content-Length says.
        raise SipParseError("Content-Length larger than the message body")
    return rest[:length]


_SALVAGED = ("Via", "From", "To", "Call-ID", "CSeq")


def salvage_request_headers(
    data: bytes, *, max_size: int = 65535, max_line: int = 8192
) -> Headers | None:
    """Best-effort Via/From/To/Call-ID/CSeq of a request the parser rejected.

    RFC 3261 §8.2.6 builds a response from these fields; this lets the transport answer 400/505/
    416/513 even when parsing failed. The whole Via stack is copied when every element parses;
    otherwise only the top Via cut before its parameters, if that parses. From, To and CSeq are
    kept only when they parse, Call-ID only when it is a valid callid. Returns None for responses
    and when no Via can be recovered (the reply could not be routed, RFC 3261 §18.2.2). Only the
    first ``max_size`` bytes are looked at, and no line longer than ``max_line`` (the parser's
    limit) is copied: a Via is then cut before its parameters, any other field left out.
    """
    data = data[:max_size]
    start = 0
    while data.startswith(b"\r\n", start):
        start += 2
    if data[start : start + 4].upper() == b"SIP/":
        return None
    end = data.find(b"\r\n\r\n", start)
    head = data[start:] if end < 0 else data[start:end]
    lines: list[str] = []
    for raw in head.split(b"\r\n")[1:]:
        if len(raw) > max_line:
            # Copied into the answer, such a line could make it too large for a datagram (a 64 KB
            # Via parameter: no 400 could be sent). The top Via cut before its parameters still
            # routes the answer (RFC 3261 §18.2.2 uses only sent-by and the source address).
            field = raw.partition(b":")[0].strip(b" \t").lower()
            raw = raw.split(b";", 1)[0] if field in (b"via", b"v") else b""
            raw = raw if len(raw) <= max_line else b""
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            line = ""
        lines.append("" if "\r" in line or "\n" in line else line)
    found: dict[str, list[str]] = {name: [] for name in _SALVAGED}
    for line in _unfold_lines(lines, strict=False):
        name, colon, value = line.partition(":")
        cname = canonical_name(name.rstrip(" \t"))
        if colon and cname in found:
            found[cname].append(value.strip(" \t"))
    vias = _salvage_vias(found["Via"])
    if not vias:
        return None
    fields: list[tuple[str, str]] = [("Via", v) for v in vias]
    for name, check in (
        ("From", parse_name_addr_untrusted),
        ("To", parse_name_addr_untrusted),
        ("Call-ID", _check_call_id),
        ("CSeq", parse_cseq_untrusted),
    ):
        if not found[name]:
            continue
        value = found[name][0]
        try:
            check(value)
        except SipParseError:
            continue
        fields.append((name, value))
    return Headers(tuple(fields))


def _check_call_id(value: str) -> None:
    if not is_call_id(value):
        raise SipParseError("bad Call-ID")


def _salvage_vias(values: list[str]) -> list[str]:
    """The Via stack if it parses; else the top Via cut before its parameters if that parses."""
    vias: list[str] = []
    try:
        for value in values:
            vias.extend(split_list_untrusted(value))
        for via in vias:
            parse_via_untrusted(via)
    except SipParseError:
        pass
    else:
        return vias
    if not values:
        return []
    top = values[0].split(",", 1)[0].split(";", 1)[0].strip(" \t")
    try:
        parse_via_untrusted(top)
    except SipParseError:
        return []
    return [top]
