"""Parse a session description from the network (RFC 8866).

Strict where a mistake would misroute media or hide a broken peer: v=0 first, o=, s= and t=
present, the line order of RFC 8866 §5, ``<type>=<value>`` lines with a known type letter (§5: a
description with an unknown type letter is ignored as a whole), numeric ports and numbers, known
transport protocols, addresses that fit their address type, and a c= line for every active stream.

Lenient where peers differ harmlessly: CRLF or bare LF line ends, trailing blank lines, runs of
spaces between fields, unknown attribute names (kept, in order), an empty s= line, a z= line in
either its RFC 4566 or RFC 8866 place, and formats of rejected (port 0) streams.

Every problem raises :class:`SdpError` (answer 488); so does every exceeded limit.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from gateway.core.sdp import grammar
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.grammar import parse_uint_untrusted
from gateway.core.sdp.model import (
    KNOWN_PROTOS,
    RTP_PROTOS,
    Attribute,
    Attributes,
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    TimeDescription,
    payload_type_number,
)

# RFC 8866 §5 order of session-level lines; t=, r= and z= form the time descriptions.
_SESSION_ORDER = {"v": 0, "o": 1, "s": 2, "i": 3, "u": 4, "e": 5, "p": 6, "c": 7, "b": 8,
                  "t": 9, "r": 9, "z": 9, "k": 10, "a": 11}  # fmt: skip
_SESSION_SINGLE = frozenset("vosiuck")
# RFC 8866 §5 order inside a media description (after its m= line).
_MEDIA_ORDER = {"i": 1, "c": 2, "b": 3, "k": 4, "a": 5}
_MEDIA_SINGLE = frozenset("ik")
_KNOWN_TYPES = frozenset("vosiuepcbtrzkam")

VALUE_CACHE_ENTRIES = 256
"""Parsed values of o=, c=, b=, t= and m= lines each value parser keeps, by the value's exact
text: many recur call after call ("t=0 0", a peer's "c=IN IP4 192.0.2.1", the o= line of a peer
that sends the same body each time, an m= line's protocol and formats) and their parse was most
of a body's cost (docs/benchmarks.md, sessions 36 and 38). An m= line is held by its whole text
and its protocol and formats again without its port, for a miss of the first (a phone offers a
new port in every call). A text that differs per call (a new o= sess-id, a phone's whole m=
line) is parsed as before and evicts the least recently used entry. The
values are frozen; a malformed text raises :class:`SdpError` every time (``lru_cache`` keeps no
exception); bounded, as the texts come from peers; none of these lines carries key material (k=
and a= lines are never held)."""
_VALUE_CACHE_MAX_TEXT = 128  # longer values are parsed every time, never held

_Value = TypeVar("_Value")


def parse_sdp_untrusted(
    data: bytes | str,
    *,
    max_size: int = 16384,
    max_media: int = 16,
    max_attributes: int = 256,
    max_line: int = 4096,
) -> SessionDescription:
    """Parse an application/sdp body received from a peer.

    ``max_size`` bounds the body in bytes, ``max_line`` each line in characters, ``max_media`` the
    m= lines and ``max_attributes`` the a= lines of the whole description. Exceeding one, or any
    syntax or ordering error, raises :class:`SdpError` whose ``reason`` names the line number.
    """
    if isinstance(data, str):
        try:
            raw = data.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise SdpError("SDP text is not encodable as UTF-8") from None
    else:
        raw = data
    if len(raw) > max_size:
        raise SdpError(f"SDP larger than {max_size} bytes")
    if 0 in raw:  # the byte value: ``b"\x00" in raw`` builds and discards a TypeError first
        raise SdpError("NUL byte in SDP")
    # RFC 8866 §5: text is UTF-8, but i=/s= may use another a=charset; undecodable bytes are
    # carried through as surrogates so that relaying them gives the same bytes back.
    text = raw.decode("utf-8", "surrogateescape")
    if "\r" in text:
        # CRLF line ends (RFC 8866 §5) to LF once for the whole body, rather than a check per
        # line; a CR the last line ends with is a line end too. A CR left over is inside a line.
        text = text.replace("\r\n", "\n")
        if text.endswith("\r"):
            text = text[:-1]
    lines = text.split("\n")
    while lines and lines[-1].strip("\r") == "":
        lines.pop()  # the final line end, and blank lines some stacks add after it
    if not lines:
        raise SdpError("empty SDP")
    return _read(lines, max_media, max_attributes, max_line, len(text) > max_line, "\r" in text)


def _read(
    lines: list[str],
    max_media: int,
    max_attributes: int,
    max_line: int,
    long_lines: bool,
    stray_cr: bool,
) -> SessionDescription:
    """One pass over the lines, checking RFC 8866 §5 order with a rank per line type.

    One function with local variables rather than an object with a method per line type: this
    runs for every line of every body, and a method call and an attribute access per field were
    most of a line's cost (docs/benchmarks.md, session 37). ``long_lines`` and ``stray_cr``
    say whether any line can be longer than ``max_line`` or hold a CR; when not (every body a
    peer sends in practice), those two checks are skipped per line.
    """
    # Session level.
    seen: set[str] = set()  # single-instance session line types read so far (and t=)
    rank = -1  # the rank of the last line read, _SESSION_ORDER or _MEDIA_ORDER
    previous = ""  # the last line's type: r= and z= must follow t= or r=
    origin: Origin | None = None
    session_name: str | None = None
    information: str | None = None
    uri: str | None = None
    emails: list[str] = []
    phones: list[str] = []
    connection: Connection | None = None
    bandwidths: list[Bandwidth] = []
    times: list[TimeDescription] = []
    key: str | None = None
    attributes: list[Attribute] = []
    attribute_count = 0
    # The media section being read (after its m= line), and those before it.
    media: list[MediaDescription] = []
    m_line: _MediaLine | None = None
    m_seen: set[str] = set()
    m_information: str | None = None
    m_connections: list[Connection] = []
    m_bandwidths: list[Bandwidth] = []
    m_key: str | None = None
    m_attributes: list[Attribute] = []

    lineno = 0
    for lineno, line in enumerate(lines, start=1):
        if long_lines and len(line) > max_line:
            raise _error(lineno, f"line longer than {max_line} characters")
        if stray_cr and "\r" in line:
            raise _error(lineno, "CR inside a line")
        if len(line) < 2 or line[1] != "=":
            raise _error(lineno, "not a <type>=<value> line" if line else "empty line")
        kind = line[0]
        value = line[2:]
        if lineno == 1 and kind != "v":
            raise _error(lineno, "SDP must start with v= (RFC 8866 §5)")

        if kind == "a":
            # The commonest line, and the last type at either level (its rank is the highest,
            # and any number of them may follow): no order or duplicate check can fail.
            # RFC 8866 §5.13: a=<attribute-name> or a=<attribute-name>:<attribute-value>
            attribute_count += 1
            if attribute_count > max_attributes:
                raise _error(lineno, f"more than {max_attributes} a= lines")
            name, colon, attribute_value = value.partition(":")
            if not colon:
                name = name.rstrip(" \t")  # "a=sendrecv " is seen in the wild
            if _token_fullmatch(name) is None:
                raise _error(lineno, "bad attribute name")
            # tuple.__new__ as the NamedTuple's own constructor does, without its Python frame.
            attribute = _new_attribute(Attribute, (name, attribute_value if colon else None))
            if m_line is None:
                rank = _SESSION_ORDER["a"]
                seen.add("a")
                attributes.append(attribute)
            else:
                rank = _MEDIA_ORDER["a"]
                m_seen.add("a")
                m_attributes.append(attribute)

        elif kind == "m":
            if m_line is None:
                _require_session_fields(seen, "m= line", lineno)
            else:
                media.append(
                    _media(m_line, m_information, m_connections, m_bandwidths, m_key, m_attributes)
                )
            if len(media) >= max_media:
                raise _error(lineno, f"more than {max_media} m= lines")
            m_line = _media_line(value, lineno)
            m_seen = set()
            m_information = m_key = None
            m_connections, m_bandwidths, m_attributes = [], [], []
            rank = 0

        elif m_line is not None:
            # RFC 8866 §5: i=, c=, b=, k= and a= inside a media description, in that order.
            line_rank = _MEDIA_ORDER.get(kind)
            if line_rank is None:
                raise _error(lineno, _unknown_type(kind, "media"))
            if kind in _MEDIA_SINGLE and kind in m_seen:
                raise _error(lineno, f"duplicate {kind}= line in media description")
            if line_rank < rank:
                raise _error(lineno, f"{kind}= line out of order (RFC 8866 §5)")
            rank = line_rank
            m_seen.add(kind)
            if kind == "c":
                m_connections.append(_value(_parse_connection, value, lineno))
            elif kind == "b":
                m_bandwidths.append(_value(_parse_bandwidth, value, lineno))
            elif kind == "i":
                m_information = value
            else:  # "k"
                m_key = value

        else:
            line_rank = _SESSION_ORDER.get(kind)
            if line_rank is None:
                raise _error(lineno, _unknown_type(kind, "session"))
            if kind in _SESSION_SINGLE and kind in seen:
                raise _error(lineno, f"duplicate {kind}= line")
            if line_rank < rank:
                raise _error(lineno, f"{kind}= line out of order (RFC 8866 §5)")
            rank = line_rank
            seen.add(kind)
            if kind == "v":
                if value != "0":
                    raise _error(lineno, "unsupported SDP version (v=0 expected)")
            elif kind == "o":
                origin = _value(_parse_origin, value, lineno)
            elif kind == "s":
                session_name = value
            elif kind == "c":
                connection = _value(_parse_connection, value, lineno)
            elif kind == "t":
                times.append(_value(_parse_time, value, lineno))
            elif kind == "r" or kind == "z":
                # RFC 8866 §5.10/§5.11: r= and z= belong to the t= just before them; a z= line
                # closes its time description (at most one).
                if previous not in ("t", "r") or not times:
                    raise _error(lineno, f"{kind}= line not after t= or r= (RFC 8866 §5)")
                if not value.strip():
                    raise _error(lineno, f"empty {kind}= line")
                last = times[-1]
                if kind == "r":
                    times[-1] = attrs.evolve(last, repeats=(*last.repeats, value))
                else:
                    times[-1] = attrs.evolve(last, zone=value)
            elif kind == "b":
                bandwidths.append(_value(_parse_bandwidth, value, lineno))
            elif kind == "i":
                information = value
            elif kind == "u":
                uri = value
            elif kind == "e":
                emails.append(value)
            elif kind == "p":
                phones.append(value)
            else:  # "k"
                key = value
        previous = kind

    # The end of the description; a missing line is reported on the line after the last.
    lineno += 1
    if m_line is None:
        _require_session_fields(seen, "end of SDP", lineno)
    else:
        media.append(
            _media(m_line, m_information, m_connections, m_bandwidths, m_key, m_attributes)
        )
    assert origin is not None and session_name is not None
    # RFC 8866 §5.7: c= at session level or in every media description. Rejected streams
    # (port 0) never carry media, so they are let through without one.
    if connection is None:
        for index, m in enumerate(media, start=1):
            if not m.connections and m.port != 0:
                raise SdpError(f"no c= line for m= line {index} (RFC 8866 §5.7)")
    # Positional, in the order of SessionDescription's fields (origin, session_name, version,
    # information, uri, emails, phones, connection, bandwidths, times, key, attributes, media):
    # keywords cost a look-up each.
    return SessionDescription(
        origin,
        session_name,
        0,
        information,
        uri,
        tuple(emails),
        tuple(phones),
        connection,
        tuple(bandwidths),
        tuple(times),
        key,
        Attributes(tuple(attributes)),
        tuple(media),
    )


_new_attribute = tuple.__new__
_token_fullmatch = grammar.TOKEN.fullmatch


def _error(lineno: int, reason: str) -> SdpError:
    return SdpError(f"line {lineno}: {reason}")


def _require_session_fields(seen: set[str], before: str, lineno: int) -> None:
    # RFC 8866 §5: v=, o=, s= and at least one t= are required.
    for kind in "ost":
        if kind not in seen:
            raise _error(lineno, f"missing {kind}= line before {before} (RFC 8866 §5)")


def _media(
    line: _MediaLine,
    information: str | None,
    connections: list[Connection],
    bandwidths: list[Bandwidth],
    key: str | None,
    attributes: list[Attribute],
) -> MediaDescription:
    """The m= section whose m= line read as ``line``, with the lines read after it."""
    media, port, port_count, proto, formats = line
    # Positional, in the order of MediaDescription's fields: keywords cost a look-up each.
    return MediaDescription(
        media,
        port,
        proto,
        formats,
        port_count,
        information,
        tuple(connections),
        tuple(bandwidths),
        key,
        Attributes(tuple(attributes)),
    )


def _value(parse: _Memoized[_Value], value: str, lineno: int) -> _Value:
    """``value`` parsed by ``parse``, its error reported with line ``lineno``."""
    try:
        if len(value) > _VALUE_CACHE_MAX_TEXT:
            return parse.uncached(value)
        return parse.cached(value)
    except SdpError as exc:
        raise _error(lineno, exc.reason) from None


class _Memoized(Generic[_Value]):
    """A value parser behind a bounded cache of :data:`VALUE_CACHE_ENTRIES` texts."""

    def __init__(self, parse: Callable[[str], _Value]) -> None:
        self.uncached = parse
        self.cached = functools.lru_cache(maxsize=VALUE_CACHE_ENTRIES)(parse)


# The value parsers below read one line's value and raise SdpError with a reason naming the field
# (the reader adds the line number). Each is a pure function of the text, so it is memoized.


@_Memoized
def _parse_origin(value: str) -> Origin:
    # RFC 8866 §5.2: o=<username> <sess-id> <sess-version> <nettype> <addrtype> <address>
    fields = value.split()
    if len(fields) != 6:
        raise SdpError("o= needs 6 fields (RFC 8866 §5.2)")
    username, sess_id, sess_version, nettype, addrtype, address = fields
    # A phone's o= line differs in every call (a new sess-id), so this runs for most bodies:
    # the token pattern called directly and the Origin built positionally (session 37).
    if _token_fullmatch(nettype) is None:
        raise SdpError("bad o= nettype")
    if _token_fullmatch(addrtype) is None:
        raise SdpError("bad o= addrtype")
    return Origin(
        username,
        parse_uint_untrusted(sess_id, "o= sess-id"),
        parse_uint_untrusted(sess_version, "o= sess-version"),
        nettype,
        addrtype,
        address,
    )


@_Memoized
def _parse_connection(value: str) -> Connection:
    # RFC 8866 §5.7: c=<nettype> <addrtype> <connection-address>, where a multicast address
    # carries /ttl[/count] (IP4) or /count (IP6).
    fields = value.split()
    if len(fields) != 3:
        raise SdpError("c= needs 3 fields (RFC 8866 §5.7)")
    nettype, addrtype, connection_address = fields
    if not grammar.is_token(nettype) or not grammar.is_token(addrtype):
        raise SdpError("bad c= nettype or addrtype")
    kind = addrtype.upper()
    if kind not in ("IP4", "IP6"):
        return Connection(nettype, addrtype, connection_address)
    address, *suffixes = connection_address.split("/")
    grammar.check_address_untrusted(addrtype, address, "c=")
    ttl = count = None
    if kind == "IP4" and len(suffixes) in (1, 2):
        ttl = parse_uint_untrusted(suffixes[0], "c= TTL", maximum=255)
        if len(suffixes) == 2:
            count = parse_uint_untrusted(suffixes[1], "c= address count", minimum=1)
    elif kind == "IP6" and len(suffixes) == 1:
        count = parse_uint_untrusted(suffixes[0], "c= address count", minimum=1)
    elif suffixes:
        raise SdpError("bad c= multicast suffix")
    return Connection(nettype, addrtype, address, ttl, count)


@_Memoized
def _parse_bandwidth(value: str) -> Bandwidth:
    # RFC 8866 §5.8: b=<bwtype>:<bandwidth>
    bwtype, colon, amount = value.partition(":")
    if not colon or not grammar.is_token(bwtype):
        raise SdpError("b= needs <bwtype>:<bandwidth> (RFC 8866 §5.8)")
    return Bandwidth(bwtype, parse_uint_untrusted(amount.strip(), "b= bandwidth"))


@_Memoized
def _parse_time(value: str) -> TimeDescription:
    # RFC 8866 §5.9: t=<start-time> <stop-time> (r= and z= lines are added by the reader)
    fields = value.split()
    if len(fields) != 2:
        raise SdpError("t= needs <start-time> <stop-time>")
    return TimeDescription(
        parse_uint_untrusted(fields[0], "t= start time"),
        parse_uint_untrusted(fields[1], "t= stop time"),
    )


_MediaLine = tuple[str, int, int | None, str, tuple[str, ...]]
"""An m= line's values: media, port, port count, proto, formats."""


def _media_line(value: str, lineno: int) -> _MediaLine:
    """An m= line's value, its error reported with line ``lineno``: looked up by the whole
    line's text first (a peer that sends the same body each time, sipp or an ATA with a fixed
    RTP port, hits it), and on a miss read by :func:`_parse_media_line`, whose protocol and
    formats are held without the port (a phone offers a new port in every call but the same
    codecs; docs/benchmarks.md, session 38)."""
    return _value(_parse_media_line, value, lineno)


@_Memoized
def _parse_media_line(value: str) -> _MediaLine:
    """RFC 8866 §5.14: m=<media> <port>[/<number of ports>] <proto> <fmt> ...

    The port is read here and the rest, the transport protocol and formats, by the memoized
    :func:`_parse_media_transport`. The checks and their reasons are those of one pass over
    the line, in the same order: fields, media type, port, port count, protocol, formats."""
    fields = value.split(None, 2)  # the third is the rest of the line, as split() reads it
    if len(fields) < 3:
        raise SdpError("m= needs <media> <port> <proto> <fmt> (RFC 8866 §5.14)")
    media, port_text, transport = fields
    if _token_fullmatch(media) is None:
        raise SdpError("bad m= media type")
    port_part, slash, count_part = port_text.partition("/")
    port = parse_uint_untrusted(port_part, "m= port", maximum=65535)
    port_count = parse_uint_untrusted(count_part, "m= port count", minimum=1) if slash else None
    if len(transport) > _VALUE_CACHE_MAX_TEXT:
        proto, formats = _parse_media_transport.uncached(transport)
    else:
        proto, formats = _parse_media_transport.cached(transport)
    # Not in the port-less part: it depends on the port (a rejected stream may list none).
    if not formats and port != 0:
        raise SdpError("m= line without formats")
    return media, port, port_count, proto, formats


@_Memoized
def _parse_media_transport(value: str) -> tuple[str, tuple[str, ...]]:
    # The part of an m= line after its port: <proto> <fmt> ... (RFC 8866 §5.14).
    proto, *formats = value.split()
    upper_proto = proto.upper()
    if upper_proto not in KNOWN_PROTOS:
        raise SdpError("unsupported m= transport protocol")
    if upper_proto in RTP_PROTOS:
        for fmt in formats:
            try:
                # The same check with another reason; the few numbers every call carries
                # ("0", "8", "101") are held there, already read by the offer/answer checks.
                payload_type_number(fmt)
            except SdpError:
                parse_uint_untrusted(fmt, "m= payload type", maximum=127)
    elif not all(grammar.is_token(fmt) for fmt in formats):
        raise SdpError("bad m= format")
    return proto, tuple(formats)


def _unknown_type(kind: str, level: str) -> str:
    if kind in _KNOWN_TYPES:
        return f"{kind}= line not allowed at {level} level (RFC 8866 §5)"
    return "unknown line type (RFC 8866 §5)"
