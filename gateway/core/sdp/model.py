"""Session descriptions (RFC 8866) as frozen values.

A :class:`SessionDescription` holds the session-level lines and a tuple of
:class:`MediaDescription` (one per m= line). Every field the RFC defines is kept, including the
obsolete k= and the rarely seen r=/z= lines, so a description we only relay comes out as it came in.

Attributes (a= lines) are kept in order as ``(name, value)`` pairs in :class:`Attributes`, value
None for the property form (``a=sendrecv``), unknown names included. Typed accessors
(``rtpmap``, ``direction``, ``rtcp`` ...) read the stored text on demand; a malformed value raises
:class:`SdpError` then, so an attribute nobody asks about never makes a call fail.

Build edits with the ``with_*`` methods (they return new values);
parse network bytes with :func:`gateway.core.sdp.parser.parse_sdp_untrusted`; write bytes with
:func:`gateway.core.sdp.serializer.serialize_sdp`.

Secrets: SDES keys (a=crypto inline:), MIKEY (a=key-mgmt), ICE passwords (a=ice-pwd) and k=
lines are redacted in every ``repr``.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple

import attrs

from gateway.core.sdp import grammar
from gateway.core.sdp.errors import LocalSdpError, SdpError

REDACTED = "<redacted>"
_INLINE_KEY = re.compile(r"inline:[^\s;]+")
# Attributes whose whole value is a secret (RFC 4567 key-mgmt, RFC 8839 ice-pwd).
_SECRET_ATTRIBUTES = frozenset({"key-mgmt", "ice-pwd"})


def redact_attribute_value(name: str, value: str | None) -> str | None:
    """The value of ``a=name:value`` with key material replaced by ``<redacted>``.

    a=crypto keeps its tag, suite and session parameters (useful when debugging a negotiation) and
    loses every ``inline:`` key (RFC 4568 §9.1: several key-params may be ``;``-separated).
    """
    if value is None:
        return None
    lname = name.lower()
    if lname == "crypto":
        return _INLINE_KEY.sub("inline:" + REDACTED, value)
    if lname in _SECRET_ATTRIBUTES:
        return REDACTED
    return value


def _redact_key(key: str | None) -> str:
    return "None" if key is None else repr(REDACTED)


class Attribute(NamedTuple):
    """One a= line: ``a=name:value``, or the property form ``a=name`` (value None)."""

    name: str
    value: str | None = None

    def __repr__(self) -> str:
        return f"Attribute({self.name!r}, {redact_attribute_value(self.name, self.value)!r})"


@attrs.frozen
class Attributes:
    """Ordered a= lines of one section; names compare case-insensitively, order is preserved."""

    items: tuple[Attribute, ...] = ()

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str | None]]) -> Attributes:
        return cls(tuple([Attribute(name, value) for name, value in pairs]))

    def __iter__(self) -> Iterator[Attribute]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.has(name)

    def has(self, name: str) -> bool:
        key = name.lower()
        # A loop, not any() over a generator (a frame and a resumption per item): asked a
        # dozen times per call.
        for a in self.items:  # noqa: SIM110
            if a.name.lower() == key:
                return True
        return False

    def get(self, name: str) -> str | None:
        """Value of the first attribute called ``name``; None if absent or a property attribute."""
        key = name.lower()
        for a in self.items:
            if a.name.lower() == key:
                return a.value
        return None

    def get_all(self, name: str) -> tuple[str | None, ...]:
        key = name.lower()
        # Lists, not generators, here and below (a resumption per item): a call reads and
        # rewrites each section's attributes a few dozen times (docs/benchmarks.md, session 27).
        return tuple([a.value for a in self.items if a.name.lower() == key])

    def values(self, name: str) -> tuple[str, ...]:
        """Values of every ``a=name:value`` line (property forms skipped), in order."""
        key = name.lower()
        return tuple([a.value for a in self.items if a.value is not None and a.name.lower() == key])

    def add(self, name: str, value: str | None = None) -> Attributes:
        """Append ``a=name[:value]`` after all existing attributes."""
        return Attributes((*self.items, Attribute(name, value)))

    def extend(self, pairs: Iterable[tuple[str, str | None]]) -> Attributes:
        return Attributes((*self.items, *(Attribute(n, v) for n, v in pairs)))

    def remove(self, *names: str) -> Attributes:
        """Drop every attribute whose name is one of ``names``."""
        keys = {n.lower() for n in names}
        return Attributes(tuple([a for a in self.items if a.name.lower() not in keys]))

    def remove_if(self, predicate: Callable[[Attribute], bool]) -> Attributes:
        return Attributes(tuple([a for a in self.items if not predicate(a)]))

    def set(self, name: str, *values: str | None) -> Attributes:
        """Replace every attribute called ``name`` with ``values``, at the first one's position.

        Appends when there was none; ``set(name)`` with no values removes them.
        """
        return self._replace_group(
            frozenset({name.lower()}), tuple(Attribute(name, v) for v in values)
        )

    def _replace_group(self, keys: frozenset[str], new: tuple[Attribute, ...]) -> Attributes:
        out: list[Attribute] = []
        placed = False
        for a in self.items:
            if a.name.lower() in keys:
                if not placed:
                    out.extend(new)
                    placed = True
                continue
            out.append(a)
        if not placed:
            out.extend(new)
        return Attributes(tuple(out))

    def direction(self) -> Direction | None:
        """The first direction attribute of this section (RFC 8866 §6.7), or None."""
        for a in self.items:
            found = _DIRECTIONS.get(a.name.lower())
            if found is not None:
                return found
        return None

    def with_direction(self, direction: Direction | None) -> Attributes:
        """Replace all direction attributes by ``direction`` (None removes them)."""
        new = () if direction is None else (Attribute(direction.value),)
        return self._replace_group(frozenset(_DIRECTIONS), new)


class Direction(enum.Enum):
    """Media direction attributes (RFC 8866 §6.7, RFC 3264 §5.1), from the describer's side."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    # The members compared by identity through module names: on CPython 3.11 reading a member
    # from the class (``Direction.SENDRECV``) goes through the enum's metaclass and costs about
    # as much as the rest of the property (docs/benchmarks.md, session 44).
    @property
    def sends(self) -> bool:
        return self is _SENDRECV or self is _SENDONLY

    @property
    def receives(self) -> bool:
        return self is _SENDRECV or self is _RECVONLY

    @classmethod
    def from_flags(cls, *, sends: bool, receives: bool) -> Direction:
        if sends:
            return _SENDRECV if receives else _SENDONLY
        return _RECVONLY if receives else _INACTIVE

    def reversed(self) -> Direction:
        """The same stream seen from the other end: sendonly <-> recvonly."""
        return Direction.from_flags(sends=self.receives, receives=self.sends)


_SENDRECV = Direction.SENDRECV
_SENDONLY = Direction.SENDONLY
_RECVONLY = Direction.RECVONLY
_INACTIVE = Direction.INACTIVE

_DIRECTIONS: dict[str, Direction] = {d.value: d for d in Direction}


@attrs.frozen
class Origin:
    """o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address> (§5.2)."""

    username: str
    session_id: int
    session_version: int
    nettype: str
    addrtype: str
    address: str

    def bumped(self) -> Origin:
        """The same origin with ``session_version`` + 1 (RFC 3264 §8: a changed re-offer)."""
        return attrs.evolve(self, session_version=self.session_version + 1)

    def __str__(self) -> str:
        return (
            f"{self.username} {self.session_id} {self.session_version} "
            f"{self.nettype} {self.addrtype} {self.address}"
        )


@attrs.frozen
class Connection:
    """c=<nettype> <addrtype> <connection-address> (RFC 8866 §5.7).

    ``ttl`` and ``count`` are the multicast suffixes: IP4 ``addr/ttl[/count]``,
    IP6 ``addr[/count]``.
    """

    nettype: str
    addrtype: str
    address: str
    ttl: int | None = None
    count: int | None = None

    @classmethod
    def for_address(cls, address: str) -> Connection:
        """``IN IP4 addr`` or ``IN IP6 addr``, chosen from the literal."""
        return cls("IN", "IP6" if ":" in address else "IP4", address)

    @property
    def is_null(self) -> bool:
        """c=IN IP4 0.0.0.0: RFC 2543 hold, "send nothing here" (RFC 3264 §8.4)."""
        return self.addrtype.upper() == "IP4" and self.address == "0.0.0.0"

    @property
    def is_multicast(self) -> bool:
        return grammar.is_multicast(self.address)

    @property
    def connection_address(self) -> str:
        """The address with its /ttl and /count suffixes, as on the wire."""
        text = self.address
        if self.ttl is not None:
            text += f"/{self.ttl}"
        if self.count is not None:
            text += f"/{self.count}"
        return text

    def __str__(self) -> str:
        return f"{self.nettype} {self.addrtype} {self.connection_address}"


@attrs.frozen
class Bandwidth:
    """b=<bwtype>:<bandwidth> (RFC 8866 §5.8), e.g. AS (kb/s), TIAS (b/s), RS, RR."""

    bwtype: str
    bandwidth: int

    def __str__(self) -> str:
        return f"{self.bwtype}:{self.bandwidth}"


@attrs.frozen
class TimeDescription:
    """t=<start> <stop> with its r= lines and optional z= line, kept as text (RFC 8866 §5.9-5.11).

    SIP uses ``t=0 0`` (RFC 3264 §5); the repeat and zone lines are carried, not interpreted.
    A z= line after the last time description (RFC 4566 placement) is kept on that description.
    """

    start: int = 0
    stop: int = 0
    repeats: tuple[str, ...] = ()
    zone: str | None = None


@attrs.frozen
class RtpMap:
    """a=rtpmap:<payload type> <encoding name>/<clock rate>[/<encoding parameters>] (§6.6).

    ``channels`` is the audio channel count when given (RFC 3551 §4.5: absent means one).
    """

    payload_type: int
    encoding: str
    clock_rate: int
    channels: int | None = None

    @property
    def codec_key(self) -> tuple[str, int, int]:
        """What identifies a codec across payload type numbers: name (any case), rate, channels."""
        return (
            self.encoding.lower(),
            self.clock_rate,
            1 if self.channels is None else self.channels,
        )

    def __str__(self) -> str:
        text = f"{self.payload_type} {self.encoding}/{self.clock_rate}"
        return text if self.channels is None else f"{text}/{self.channels}"


# RFC 3551 §6, tables 4 and 5: payload types with a fixed meaning, usable without a=rtpmap.
STATIC_PAYLOAD_TYPES: Mapping[int, RtpMap] = {
    rtpmap.payload_type: rtpmap
    for rtpmap in (
        RtpMap(0, "PCMU", 8000),
        RtpMap(3, "GSM", 8000),
        RtpMap(4, "G723", 8000),
        RtpMap(5, "DVI4", 8000),
        RtpMap(6, "DVI4", 16000),
        RtpMap(7, "LPC", 8000),
        RtpMap(8, "PCMA", 8000),
        RtpMap(9, "G722", 8000),
        RtpMap(10, "L16", 44100, 2),
        RtpMap(11, "L16", 44100),
        RtpMap(12, "QCELP", 8000),
        RtpMap(13, "CN", 8000),
        RtpMap(14, "MPA", 90000),
        RtpMap(15, "G728", 8000),
        RtpMap(16, "DVI4", 11025),
        RtpMap(17, "DVI4", 22050),
        RtpMap(18, "G729", 8000),
        RtpMap(25, "CelB", 90000),
        RtpMap(26, "JPEG", 90000),
        RtpMap(28, "nv", 90000),
        RtpMap(31, "H261", 90000),
        RtpMap(32, "MPV", 90000),
        RtpMap(33, "MP2T", 90000),
        RtpMap(34, "H263", 90000),
    )
}
DYNAMIC_PAYLOAD_TYPES = range(96, 128)


RTPMAP_CACHE_ENTRIES = 256
"""a=rtpmap values :func:`parse_rtpmap_untrusted` keeps parsed: a handful of texts ("0
PCMU/8000", "101 telephone-event/8000") recur in every call, each read several times per call
(the answer's check against our offer, the DTMF plan); bounded, as the texts come from peers."""
_RTPMAP_CACHE_MAX_TEXT = 64  # longer values (no codec's is) are parsed every time, never held


def parse_rtpmap_untrusted(value: str) -> RtpMap:
    """The value of an a=rtpmap line: ``96 opus/48000/2``. Memoized (an :class:`RtpMap` is
    frozen); a malformed value raises :class:`SdpError` every time, as errors are not kept."""
    if len(value) > _RTPMAP_CACHE_MAX_TEXT:
        return _parse_rtpmap(value)
    return _parse_rtpmap_cached(value)


def _parse_rtpmap(value: str) -> RtpMap:
    parts = value.split(None, 1)
    if len(parts) != 2:
        raise SdpError("malformed a=rtpmap")
    payload_type = grammar.parse_uint_untrusted(parts[0], "a=rtpmap payload type", maximum=127)
    fields = parts[1].strip().split("/")
    if len(fields) not in (2, 3) or not grammar.is_token(fields[0]):
        raise SdpError("malformed a=rtpmap")
    clock_rate = grammar.parse_uint_untrusted(fields[1], "a=rtpmap clock rate", minimum=1)
    channels = None
    if len(fields) == 3:
        channels = grammar.parse_uint_untrusted(fields[2], "a=rtpmap channels", minimum=1)
    return RtpMap(payload_type, fields[0], clock_rate, channels)


_parse_rtpmap_cached = functools.lru_cache(maxsize=RTPMAP_CACHE_ENTRIES)(_parse_rtpmap)


@attrs.frozen
class Rtcp:
    """a=rtcp:<port> [<nettype> <addrtype> <connection-address>] (RFC 3605 §2.1)."""

    port: int
    connection: Connection | None = None

    def __str__(self) -> str:
        return str(self.port) if self.connection is None else f"{self.port} {self.connection}"


def parse_rtcp_untrusted(value: str) -> Rtcp:
    """The value of an a=rtcp line: ``53021`` or ``53021 IN IP4 126.16.64.4``."""
    parts = value.split()
    if len(parts) not in (1, 4):
        raise SdpError("malformed a=rtcp")
    port = grammar.parse_uint_untrusted(parts[0], "a=rtcp port", maximum=65535)
    if len(parts) == 1:
        return Rtcp(port)
    nettype, addrtype, address = parts[1:]
    grammar.check_address_untrusted(addrtype, address, "a=rtcp")
    return Rtcp(port, Connection(nettype, addrtype, address))


def _parse_ptime_untrusted(value: str, what: str) -> float:
    # RFC 8866 §6.4: milliseconds, a positive integer or decimal ("20", "22.5").
    text = value.strip()
    whole, _, fraction = text.partition(".")
    if not grammar.is_digits(whole) or (fraction and not grammar.is_digits(fraction)):
        raise SdpError(f"malformed a={what}")
    if len(text) > grammar.MAX_DIGITS:
        raise SdpError(f"a={what} is out of range")
    result = float(text)
    if result <= 0:
        raise SdpError(f"a={what} is out of range")
    return result


# Transport protocols of m= lines (IANA "proto" registry) the gateway understands. Compared
# case-insensitively; the original spelling is kept.
RTP_PROTOS = frozenset(
    {
        "RTP/AVP",  # RFC 3551
        "RTP/AVPF",  # RFC 4585
        "RTP/SAVP",  # RFC 3711
        "RTP/SAVPF",  # RFC 5124
        "UDP/TLS/RTP/SAVP",  # RFC 5764
        "UDP/TLS/RTP/SAVPF",  # RFC 5764
        "TCP/RTP/AVP",  # RFC 4571
        "TCP/RTP/AVPF",  # RFC 7850
        "TCP/RTP/SAVP",  # RFC 7850
        "TCP/RTP/SAVPF",  # RFC 7850
        "TCP/TLS/RTP/SAVP",  # RFC 7850
        "TCP/TLS/RTP/SAVPF",  # RFC 7850
    }
)
OTHER_PROTOS = frozenset(
    {
        "UDP",  # RFC 8866 §5.14: "udp"
        "UDPTL",  # ITU-T T.38 fax
        "UDP/TLS/UDPTL",  # RFC 7345: T.38 over DTLS (parsed, not relayed)
        "TCP",  # RFC 4145
        "TCP/TLS",  # RFC 4572
        "TCP/MSRP",  # RFC 4975
        "TCP/TLS/MSRP",  # RFC 4975
        "UDP/BFCP",  # RFC 8856
        "TCP/BFCP",  # RFC 4583
        "TCP/TLS/BFCP",  # RFC 4583
        "UDP/TLS/BFCP",  # RFC 8856
        "UDP/DTLS/SCTP",  # RFC 8841
        "TCP/DTLS/SCTP",  # RFC 8841
        "DTLS/SCTP",  # draft form used by older WebRTC stacks
        "TCP/MRCPV2",  # RFC 6787
        "TCP/TLS/MRCPV2",  # RFC 6787
    }
)
KNOWN_PROTOS = RTP_PROTOS | OTHER_PROTOS


@functools.lru_cache(maxsize=256)
def payload_type_number(text: str) -> int:
    """An RTP format as its payload type number, memoized: the same few numbers ("0", "8",
    "101") are read in every call's m= lines and offer/answer checks. Only valid numbers are
    kept (an error is raised each time), and a valid one has at most grammar.MAX_DIGITS
    digits."""
    return grammar.parse_uint_untrusted(text, "payload type", maximum=127)


def is_rtp_proto(proto: str) -> bool:
    return proto.upper() in RTP_PROTOS


@attrs.frozen
class MediaDescription:
    """An m= section: m=<media> <port>[/<count>] <proto> <fmt> ... and its i=, c=, b=, k=, a=.

    For RTP transports ``formats`` are payload type numbers as text (``("0", "8", "101")``).
    Several c= lines are allowed at media level (layered multicast, RFC 8866 §5.7).
    """

    media: str
    port: int
    proto: str
    formats: tuple[str, ...]
    port_count: int | None = None
    information: str | None = None
    connections: tuple[Connection, ...] = ()
    bandwidths: tuple[Bandwidth, ...] = ()
    key: str | None = attrs.field(default=None, repr=_redact_key)
    attributes: Attributes = Attributes()

    # -- reading -------------------------------------------------------------------------------

    @property
    def is_rejected(self) -> bool:
        """Port 0: a rejected or removed stream (RFC 3264 §6, §8.2)."""
        return self.port == 0

    @property
    def is_rtp(self) -> bool:
        return is_rtp_proto(self.proto)

    @property
    def connection(self) -> Connection | None:
        """This section's own (first) c= line; see ``SessionDescription.effective_connection``."""
        return self.connections[0] if self.connections else None

    @property
    def payload_types(self) -> tuple[int, ...]:
        """The formats as payload type numbers (RTP transports only)."""
        if not self.is_rtp:
            return ()
        return tuple([payload_type_number(f) for f in self.formats])

    def rtpmaps(self) -> dict[int, RtpMap]:
        """Explicit a=rtpmap lines by payload type (the first one wins for duplicates)."""
        found: dict[int, RtpMap] = {}
        for value in self.attributes.values("rtpmap"):
            rtpmap = parse_rtpmap_untrusted(value)
            found.setdefault(rtpmap.payload_type, rtpmap)
        return found

    def rtpmap(self, payload_type: int) -> RtpMap | None:
        """The codec of ``payload_type``: its a=rtpmap, else the RFC 3551 static one, else None."""
        explicit = self.rtpmaps().get(payload_type)
        if explicit is not None:
            return explicit
        return STATIC_PAYLOAD_TYPES.get(payload_type)

    def fmtp(self, payload_type: int) -> str | None:
        """The parameters of ``a=fmtp:<payload_type> <parameters>`` (RFC 8866 §6.15), or None."""
        prefix = str(payload_type)
        for value in self.attributes.values("fmtp"):
            fmt, _, params = value.partition(" ")
            if fmt == prefix:
                return params.strip()
        return None

    @property
    def direction(self) -> Direction | None:
        """This section's own direction attribute; see ``effective_direction``."""
        return self.attributes.direction()

    @property
    def rtcp(self) -> Rtcp | None:
        """RFC 3605 a=rtcp (RTCP port, and address when it differs from c=)."""
        value = self.attributes.get("rtcp")
        return None if value is None else parse_rtcp_untrusted(value)

    @property
    def rtcp_mux(self) -> bool:
        """RFC 5761 §5.1.1 a=rtcp-mux: RTP and RTCP share the port."""
        return self.attributes.has("rtcp-mux")

    @property
    def ptime(self) -> float | None:
        """RFC 8866 §6.4 a=ptime in milliseconds."""
        value = self.attributes.get("ptime")
        return None if value is None else _parse_ptime_untrusted(value, "ptime")

    @property
    def maxptime(self) -> float | None:
        """RFC 8866 §6.5 a=maxptime in milliseconds."""
        value = self.attributes.get("maxptime")
        return None if value is None else _parse_ptime_untrusted(value, "maxptime")

    @property
    def crypto(self) -> tuple[str, ...]:
        """RFC 4568 a=crypto values, raw and in offer order (the SDES plugin parses them)."""
        return self.attributes.values("crypto")

    @property
    def fingerprints(self) -> tuple[str, ...]:
        """RFC 8122 a=fingerprint values of this section, raw."""
        return self.attributes.values("fingerprint")

    @property
    def setup(self) -> str | None:
        """RFC 4145 a=setup value of this section, raw (active/passive/actpass/holdconn)."""
        return self.attributes.get("setup")

    # -- editing -------------------------------------------------------------------------------

    def with_port(self, port: int, port_count: int | None = None) -> MediaDescription:
        if not 0 <= port <= 65535:
            raise LocalSdpError("port out of range")
        return attrs.evolve(self, port=port, port_count=port_count)

    def with_connection(self, connection: Connection | None) -> MediaDescription:
        """Replace the media-level c= lines by ``connection`` (None: use the session's)."""
        return attrs.evolve(self, connections=() if connection is None else (connection,))

    def with_formats(self, formats: Iterable[str | int]) -> MediaDescription:
        return attrs.evolve(self, formats=tuple(str(f) for f in formats))

    def with_attributes(
        self,
        attributes: Attributes | Iterable[tuple[str, str | None]],
        proto: str | None = None,
    ) -> MediaDescription:
        """This section with ``attributes`` instead of its own (and ``proto`` as its transport
        protocol, when given: the media security steps change both at once)."""
        if not isinstance(attributes, Attributes):
            attributes = Attributes.of(attributes)
        # Built directly rather than with attrs.evolve, which looks up every field by name: the
        # media security steps rewrite each section's attributes a few times per call.
        return MediaDescription(
            self.media,
            self.port,
            self.proto if proto is None else proto,
            self.formats,
            self.port_count,
            self.information,
            self.connections,
            self.bandwidths,
            self.key,
            attributes,
        )

    def with_direction(self, direction: Direction | None) -> MediaDescription:
        """Replace this section's direction attribute (None removes it)."""
        return attrs.evolve(self, attributes=self.attributes.with_direction(direction))

    def with_proto(self, proto: str) -> MediaDescription:
        """This section with ``proto`` as its transport protocol (RTP/AVP, RTP/SAVP...)."""
        return self.with_attributes(self.attributes, proto)


@attrs.frozen
class SessionDescription:
    """A whole session description (RFC 8866 §5), session level plus media sections."""

    origin: Origin
    session_name: str = "-"
    version: int = 0
    information: str | None = None
    uri: str | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()
    connection: Connection | None = None
    bandwidths: tuple[Bandwidth, ...] = ()
    times: tuple[TimeDescription, ...] = (TimeDescription(),)
    key: str | None = attrs.field(default=None, repr=_redact_key)
    attributes: Attributes = Attributes()
    media: tuple[MediaDescription, ...] = ()

    # -- reading -------------------------------------------------------------------------------

    @property
    def direction(self) -> Direction | None:
        """The session-level direction attribute, or None."""
        return self.attributes.direction()

    def effective_direction(self, media: MediaDescription) -> Direction:
        """Media-level direction, else session-level, else sendrecv (RFC 8866 §6.7)."""
        return media.direction or self.direction or Direction.SENDRECV

    def effective_connection(self, media: MediaDescription) -> Connection | None:
        """The media's own c= line, else the session's (RFC 8866 §5.7)."""
        return media.connection or self.connection

    def effective_fingerprints(self, media: MediaDescription) -> tuple[str, ...]:
        """Media-level a=fingerprint lines, else session-level ones (RFC 8122 §5)."""
        return media.fingerprints or self.attributes.values("fingerprint")

    def effective_setup(self, media: MediaDescription) -> str | None:
        """Media-level a=setup, else session-level (RFC 4145 §4)."""
        setup = media.setup
        return setup if setup is not None else self.attributes.get("setup")

    # -- editing -------------------------------------------------------------------------------

    def with_origin(self, origin: Origin) -> SessionDescription:
        return attrs.evolve(self, origin=origin)

    def with_bumped_version(self) -> SessionDescription:
        """The same description with o= version + 1 (RFC 3264 §8)."""
        return attrs.evolve(self, origin=self.origin.bumped())

    def with_connection(self, connection: Connection | None) -> SessionDescription:
        """Replace the session-level c= line."""
        return attrs.evolve(self, connection=connection)

    def with_attributes(
        self, attributes: Attributes | Iterable[tuple[str, str | None]]
    ) -> SessionDescription:
        if not isinstance(attributes, Attributes):
            attributes = Attributes.of(attributes)
        # Built directly, as MediaDescription.with_attributes.
        return SessionDescription(
            self.origin,
            self.session_name,
            self.version,
            self.information,
            self.uri,
            self.emails,
            self.phones,
            self.connection,
            self.bandwidths,
            self.times,
            self.key,
            attributes,
            self.media,
        )

    def with_direction(self, direction: Direction | None) -> SessionDescription:
        """Replace the session-level direction attribute (None removes it)."""
        return attrs.evolve(self, attributes=self.attributes.with_direction(direction))

    def with_media(self, media: Iterable[MediaDescription]) -> SessionDescription:
        # Built directly, as with_attributes: the media security steps replace the sections of
        # each offer and answer (four or five times per call).
        return SessionDescription(
            self.origin,
            self.session_name,
            self.version,
            self.information,
            self.uri,
            self.emails,
            self.phones,
            self.connection,
            self.bandwidths,
            self.times,
            self.key,
            self.attributes,
            tuple(media),
        )

    def with_media_at(self, index: int, media: MediaDescription) -> SessionDescription:
        """Replace the m= section at ``index`` (RFC 3264 matches streams by position)."""
        if not 0 <= index < len(self.media):
            raise LocalSdpError("no m= line at that index")
        return attrs.evolve(self, media=(*self.media[:index], media, *self.media[index + 1 :]))
