"""Session 36's SDP reader and writer, kept unchanged as the reference that session 37's faster
ones (gateway/core/sdp/parser.py, serializer.py) must agree with byte for byte, error for error:
test_sdp_reader_equivalence.py runs both over many mutated bodies. Copied from main at aa3a3c86
(parser.py whole, with its own value caches; serializer.py's serialize_sdp); not to be edited
except to follow a deliberate change of behaviour in the real ones.
"""

# ruff: noqa
# mypy: ignore-errors
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Generic, TypeVar

import attrs

from gateway.core.sdp import grammar
from gateway.core.sdp.errors import LocalSdpError, SdpError
from gateway.core.sdp.grammar import parse_uint_untrusted
from gateway.core.sdp.model import (
    KNOWN_PROTOS,
    Attribute,
    Attributes,
    Bandwidth,
    Connection,
    MediaDescription,
    Origin,
    SessionDescription,
    TimeDescription,
    is_rtp_proto,
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
text: many recur call after call ("t=0 0", a peer's "c=IN IP4 192.0.2.1", the o= and m= lines of
a peer that sends the same body each time) and their parse was most of a body's cost
(docs/benchmarks.md, session 36). A text that differs per call (a new o= sess-id, a new port) is
parsed as before and evicts the least recently used entry. The values are frozen; a malformed
text raises :class:`SdpError` every time (``lru_cache`` keeps no exception); bounded, as the
texts come from peers; none of these lines carries key material (k= and a= lines are never
held)."""
_VALUE_CACHE_MAX_TEXT = 128  # longer values are parsed every time, never held

_Value = TypeVar("_Value")


@attrs.define
class _Media:
    """A media section while its lines are being read."""

    line: MediaDescription
    information: str | None = None
    connections: list[Connection] = attrs.Factory(list)
    bandwidths: list[Bandwidth] = attrs.Factory(list)
    key: str | None = None
    attributes: list[Attribute] = attrs.Factory(list)

    def build(self) -> MediaDescription:
        # Built directly rather than with attrs.evolve, which looks up every field by name.
        line = self.line
        return MediaDescription(
            line.media,
            line.port,
            line.proto,
            line.formats,
            line.port_count,
            self.information,
            tuple(self.connections),
            tuple(self.bandwidths),
            self.key,
            Attributes(tuple(self.attributes)),
        )


def reference_parse_sdp_untrusted(
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
    return _Reader(max_media=max_media, max_attributes=max_attributes, max_line=max_line).read(
        lines
    )


class _Reader:
    """One pass over the lines, checking RFC 8866 §5 order with a rank per line type."""

    def __init__(self, *, max_media: int, max_attributes: int, max_line: int) -> None:
        self.max_media = max_media
        self.max_attributes = max_attributes
        self.max_line = max_line
        self.attribute_count = 0
        self.lineno = 0
        # Session level.
        self.seen: set[str] = set()
        self.rank = -1
        self.previous = ""
        self.origin: Origin | None = None
        self.session_name: str | None = None
        self.information: str | None = None
        self.uri: str | None = None
        self.emails: list[str] = []
        self.phones: list[str] = []
        self.connection: Connection | None = None
        self.bandwidths: list[Bandwidth] = []
        self.times: list[TimeDescription] = []
        self.key: str | None = None
        self.attributes: list[Attribute] = []
        # Media level.
        self.media: list[_Media] = []
        self.media_seen: set[str] = set()

    def error(self, reason: str) -> SdpError:
        return SdpError(f"line {self.lineno}: {reason}")

    def read(self, lines: list[str]) -> SessionDescription:
        for lineno, line in enumerate(lines, start=1):
            self.lineno = lineno
            if len(line) > self.max_line:
                raise self.error(f"line longer than {self.max_line} characters")
            if "\r" in line:
                raise self.error("CR inside a line")
            if len(line) < 2 or line[1] != "=":
                raise self.error("not a <type>=<value> line" if line else "empty line")
            kind, value = line[0], line[2:]
            if self.lineno == 1 and kind != "v":
                raise self.error("SDP must start with v= (RFC 8866 §5)")
            if kind == "m":
                self.start_media(value)
            elif self.media:
                self.media_line(kind, value)
            else:
                self.session_line(kind, value)
            self.previous = kind
        return self.finish()

    # -- session level -------------------------------------------------------------------------

    def session_line(self, kind: str, value: str) -> None:
        rank = _SESSION_ORDER.get(kind)
        if rank is None:
            raise self.error(_unknown_type(kind, "session"))
        if kind in _SESSION_SINGLE and kind in self.seen:
            raise self.error(f"duplicate {kind}= line")
        if rank < self.rank:
            raise self.error(f"{kind}= line out of order (RFC 8866 §5)")
        self.rank = rank
        self.seen.add(kind)
        if kind == "v":
            if value != "0":
                raise self.error("unsupported SDP version (v=0 expected)")
        elif kind == "o":
            self.origin = self.value(_parse_origin, value)
        elif kind == "s":
            self.session_name = value
        elif kind == "i":
            self.information = value
        elif kind == "u":
            self.uri = value
        elif kind == "e":
            self.emails.append(value)
        elif kind == "p":
            self.phones.append(value)
        elif kind == "c":
            self.connection = self.value(_parse_connection, value)
        elif kind == "b":
            self.bandwidths.append(self.value(_parse_bandwidth, value))
        elif kind in "trz":
            self.time_line(kind, value)
        elif kind == "k":
            self.key = value
        else:  # "a"
            self.attributes.append(self.parse_attribute(value))

    def time_line(self, kind: str, value: str) -> None:
        if kind == "t":
            self.times.append(self.value(_parse_time, value))
            return
        # RFC 8866 §5.10/§5.11: r= and z= belong to the t= just before them; a z= line closes
        # its time description (at most one).
        if self.previous not in ("t", "r") or not self.times:
            raise self.error(f"{kind}= line not after t= or r= (RFC 8866 §5)")
        if not value.strip():
            raise self.error(f"empty {kind}= line")
        last = self.times[-1]
        if kind == "r":
            self.times[-1] = attrs.evolve(last, repeats=(*last.repeats, value))
        else:
            self.times[-1] = attrs.evolve(last, zone=value)

    def require_session_fields(self, before: str) -> None:
        # RFC 8866 §5: v=, o=, s= and at least one t= are required.
        for kind in "ost":
            if kind not in self.seen:
                raise self.error(f"missing {kind}= line before {before} (RFC 8866 §5)")

    # -- media level ---------------------------------------------------------------------------

    def start_media(self, value: str) -> None:
        if not self.media:
            self.require_session_fields("m= line")
        if len(self.media) >= self.max_media:
            raise self.error(f"more than {self.max_media} m= lines")
        self.media.append(_Media(self.value(_parse_media, value)))
        self.media_seen = set()
        self.rank = 0

    def media_line(self, kind: str, value: str) -> None:
        rank = _MEDIA_ORDER.get(kind)
        if rank is None:
            raise self.error(_unknown_type(kind, "media"))
        if kind in _MEDIA_SINGLE and kind in self.media_seen:
            raise self.error(f"duplicate {kind}= line in media description")
        if rank < self.rank:
            raise self.error(f"{kind}= line out of order (RFC 8866 §5)")
        self.rank = rank
        self.media_seen.add(kind)
        current = self.media[-1]
        if kind == "i":
            current.information = value
        elif kind == "c":
            current.connections.append(self.value(_parse_connection, value))
        elif kind == "b":
            current.bandwidths.append(self.value(_parse_bandwidth, value))
        elif kind == "k":
            current.key = value
        else:  # "a"
            current.attributes.append(self.parse_attribute(value))

    def finish(self) -> SessionDescription:
        self.lineno += 1
        if not self.media:
            self.require_session_fields("end of SDP")
        assert self.origin is not None and self.session_name is not None
        media = tuple(m.build() for m in self.media)
        # RFC 8866 §5.7: c= at session level or in every media description. Rejected streams
        # (port 0) never carry media, so they are let through without one.
        for index, m in enumerate(media, start=1):
            if self.connection is None and not m.connections and m.port != 0:
                raise SdpError(f"no c= line for m= line {index} (RFC 8866 §5.7)")
        return SessionDescription(
            origin=self.origin,
            session_name=self.session_name,
            information=self.information,
            uri=self.uri,
            emails=tuple(self.emails),
            phones=tuple(self.phones),
            connection=self.connection,
            bandwidths=tuple(self.bandwidths),
            times=tuple(self.times),
            key=self.key,
            attributes=Attributes(tuple(self.attributes)),
            media=media,
        )

    # -- fields --------------------------------------------------------------------------------

    def value(self, parse: _Memoized[_Value], value: str) -> _Value:
        """``value`` parsed by ``parse``, its error reported with this line's number."""
        try:
            if len(value) > _VALUE_CACHE_MAX_TEXT:
                return parse.uncached(value)
            return parse.cached(value)
        except SdpError as exc:
            raise self.error(exc.reason) from None

    def parse_attribute(self, value: str) -> Attribute:
        # RFC 8866 §5.13: a=<attribute-name> or a=<attribute-name>:<attribute-value>
        self.attribute_count += 1
        if self.attribute_count > self.max_attributes:
            raise self.error(f"more than {self.max_attributes} a= lines")
        name, colon, attribute_value = value.partition(":")
        if not colon:
            name = name.rstrip(" \t")  # "a=sendrecv " is seen in the wild
        if not grammar.is_token(name):
            raise self.error("bad attribute name")
        return Attribute(name, attribute_value if colon else None)


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
    for token, what in ((nettype, "nettype"), (addrtype, "addrtype")):
        if not grammar.is_token(token):
            raise SdpError(f"bad o= {what}")
    return Origin(
        username=username,
        session_id=parse_uint_untrusted(sess_id, "o= sess-id"),
        session_version=parse_uint_untrusted(sess_version, "o= sess-version"),
        nettype=nettype,
        addrtype=addrtype,
        address=address,
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


@_Memoized
def _parse_media(value: str) -> MediaDescription:
    # RFC 8866 §5.14: m=<media> <port>[/<number of ports>] <proto> <fmt> ...
    fields = value.split()
    if len(fields) < 3:
        raise SdpError("m= needs <media> <port> <proto> <fmt> (RFC 8866 §5.14)")
    media, port_text, proto, *formats = fields
    if not grammar.is_token(media):
        raise SdpError("bad m= media type")
    port_part, slash, count_part = port_text.partition("/")
    port = parse_uint_untrusted(port_part, "m= port", maximum=65535)
    port_count = parse_uint_untrusted(count_part, "m= port count", minimum=1) if slash else None
    if proto.upper() not in KNOWN_PROTOS:
        raise SdpError("unsupported m= transport protocol")
    if not formats and port != 0:
        raise SdpError("m= line without formats")
    if is_rtp_proto(proto):
        for fmt in formats:
            parse_uint_untrusted(fmt, "m= payload type", maximum=127)
    elif not all(grammar.is_token(fmt) for fmt in formats):
        raise SdpError("bad m= format")
    return MediaDescription(
        media=media, port=port, proto=proto, formats=tuple(formats), port_count=port_count
    )


def _unknown_type(kind: str, level: str) -> str:
    if kind in _KNOWN_TYPES:
        return f"{kind}= line not allowed at {level} level (RFC 8866 §5)"
    return "unknown line type (RFC 8866 §5)"


# -- serializer.py at aa3a3c86 ------------------------------------------------------------


def reference_serialize_sdp(sd: SessionDescription) -> bytes:
    """The description as bytes, every line ended by CRLF (RFC 8866 §5)."""
    lines = [f"v={sd.version}", f"o={sd.origin}", f"s={sd.session_name}"]
    _optional(lines, "i", sd.information)
    _optional(lines, "u", sd.uri)
    lines.extend(f"e={email}" for email in sd.emails)
    lines.extend(f"p={phone}" for phone in sd.phones)
    if sd.connection is not None:
        lines.append(f"c={sd.connection}")
    _bandwidths(lines, sd.bandwidths)
    if not sd.times:
        raise LocalSdpError("a session description needs at least one t= line")
    for time in sd.times:
        lines.append(f"t={time.start} {time.stop}")
        lines.extend(f"r={repeat}" for repeat in time.repeats)
        _optional(lines, "z", time.zone)
    _optional(lines, "k", sd.key)
    _attributes(lines, sd.attributes)
    for media in sd.media:
        _media(lines, media)
    for line in lines:
        if "\r" in line or "\n" in line or "\x00" in line:
            # Never echo the line: it may hold key material.
            raise LocalSdpError(f"CR, LF or NUL inside an SDP {line[:1]}= line")
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


def _media(lines: list[str], media: MediaDescription) -> None:
    if not 0 <= media.port <= 65535:
        raise LocalSdpError("m= port out of range")
    port = str(media.port) if media.port_count is None else f"{media.port}/{media.port_count}"
    lines.append(" ".join(("m=" + media.media, port, media.proto, *media.formats)))
    _optional(lines, "i", media.information)
    lines.extend(f"c={connection}" for connection in media.connections)
    _bandwidths(lines, media.bandwidths)
    _optional(lines, "k", media.key)
    _attributes(lines, media.attributes)


def _optional(lines: list[str], kind: str, value: str | None) -> None:
    if value is not None:
        lines.append(f"{kind}={value}")


def _bandwidths(lines: list[str], bandwidths: tuple[Bandwidth, ...]) -> None:
    lines.extend(f"b={bandwidth}" for bandwidth in bandwidths)


def _attributes(lines: list[str], attributes: Attributes) -> None:
    for name, value in attributes:
        lines.append(f"a={name}" if value is None else f"a={name}:{value}")
