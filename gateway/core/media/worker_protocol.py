"""The control channel between the SIP process and a media worker process: messages and framing.

Theory of operation
-------------------
With ``[media] workers = N`` (N >= 2) each media worker (:mod:`gateway.core.media.worker`) relays
the streams of the calls the SIP process gives it, on its own slice of the media port range. The
two processes talk over one local Unix stream socket (a socketpair made by the SIP process), in
frames::

    frame   = length:u32 (big-endian, of what follows) type:u8 fields...

Every message type is an ``@attrs.frozen`` class below with an explicit field layout
(:data:`_LAYOUTS`); nothing is pickled, so a frame can only ever become one of these values.

Protocol version
----------------
Both processes must use the same layouts, and after an in-place upgrade of the package (``pip
install -U``, a .deb) while the gateway runs they need not: the SIP process keeps the code it
started with, but a worker it starts again (after a crash) imports the new code from disk.
:data:`PROTOCOL_VERSION` names the layouts. The SIP process gives its version on the worker's
command line (``--protocol-version``); the worker compares it with its own before it binds a
port or reads a message, and its first message is always :class:`Hello` with its own version,
which the SIP process checks in turn (:func:`check_hello`) before it takes any other. On a
mismatch the worker sends nothing after its ``Hello`` and exits with
:data:`EXIT_PROTOCOL_MISMATCH`; the SIP process logs it once and does not start that worker
again (restarting the service runs the installed version on both sides). The check costs one
message per worker start, nothing per message or packet. ``Hello``'s layout (type 0, the
version as u32), the framing it travels in and ``--protocol-version`` never change, whatever
the version: they are how two versions find out that they differ.
The channel is local and trusted, but a worker that crashed half-way through a write or a bug
must still end in a clear :class:`ChannelError`, never in an odd object: frames are decoded by
:func:`parse_message_untrusted`, which checks every length against what is left and the frame
against :data:`MAX_FRAME`.

SRTP master keys cross this channel (:class:`SetKeys`): it is a socketpair between two processes
of the same user, never a network socket. No ``repr`` shows them (``SrtpKeys`` redacts itself)
and no error message quotes a frame's bytes. The same holds for ICE passwords (:class:`SetIce`).

SIP process -> worker: :class:`Open`, :class:`SetRemote`, :class:`SetBlocked`, :class:`SetKeys`,
:class:`SetDtls`, :class:`SendDatagram`, :class:`LatchPeer`, :class:`Close`, :class:`Ping`,
:class:`SetTap`, :class:`SetOpaque`, :class:`SetIce`, :class:`SetPayloadTypes`,
:class:`SetRedPayloadTypes`, :class:`SetDtmf`, :class:`SendDtmf`, :class:`SetTranscoding`,
:class:`SendStats`, :class:`SetReceiverEvent`, :class:`PlayTone`.
Worker -> SIP process: :class:`Hello` (first), :class:`PairsReady`, :class:`Datagram`,
:class:`Stats`, :class:`StreamFailed`, :class:`Pong`, :class:`Tapped`, :class:`TappedDatagram`,
:class:`DtmfEvent`, :class:`Tables`.

Decrypted media crosses this channel too (:class:`Tapped`, :class:`TappedDatagram`, for a call's
media taps: recording, interception), under the same rule: it is a socketpair between two
processes of one user.

Call quality: :class:`SetRtcpWatch` (SIP process -> worker) asks for copies of a direction's
plain RTCP, which come back as :class:`Rtcp` (bounded in size and rate).

Sans-IO: bytes in, messages out (:class:`FrameReader`), messages in, bytes out (:func:`encode`).
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Callable
from typing import Any

import attrs

from gateway.core.interfaces import SrtpKeys
from gateway.core.media.relay import DirectionStatistics
from gateway.core.media.srtp import SrtpStatistics

PROTOCOL_VERSION = 18
"""The version of the channel's messages and of the worker's command line. **Bump it on any
change to a message's layout** (a field added, removed, reordered or retyped, a default that
is sent, a type number, a field codec) **or to what a message means, and on any change to the
worker's command line** (an option the SIP process passes or the worker requires, added,
removed, renamed or read another way: ``worker._parser``, ``WorkerPool._command``): a worker of
one version cannot read another's messages (session 36 added ``SetDtls``, session 37 a bool to
``SendDatagram``, with no version to tell), and one that cannot parse its command line exits
on a usage error before it can say which version it is (status 2: the SIP process stops
that slot, session 39, but can only guess why). The known-bytes
frames and the worker's options in tests/unit/media/test_worker_protocol.py are those of this
version: a change without a bump fails them. The framing (a u32 length, a u8 type) never
changes: :class:`Hello` rides on it. 1: the first versioned layouts (session 38); before it the
channel had no version (a SIP process of then passes no ``--protocol-version``). 2: with
:class:`LatchPeer` (session 39). 3: :class:`Datagram` and :class:`LatchPeer` carry the whole
socket address (an IPv6 scope id), :class:`SetDtls` its ``proves_peer`` (session 40, zrtp-40).
4: :class:`SetDtls` its ``handshake_per_source`` and :class:`SendDatagram` a ``destination``
(session 40, dtls-40: a DTLS handshake per source). 5: :class:`SetDtmf` its ``relayed``
(session 44). 6: :class:`Stats`' direction counters gain the DTMF interworking's
(``DirectionStatistics.dtmf_*``: the worker's counts of the event packets it took,
injected, ended at a change and relayed on; session 45). 7: they gain
``dtmf_end_copies_dropped`` (session 46). 8: :class:`SendStats`, answered by a :class:`Stats`
that is never dropped (a call's final counters, session 46). 9: :class:`SetReceiverEvent` (the
receiving leg's telephone-event in force, for the delayed DTMF end copies) and :class:`Close`
its ``final_counters`` (session 50). 10: :class:`SetDtls` its ``other_phones`` (session 52:
the callee's DTLS engine keeps other phones' handshakes for another phone's answer). 11:
:class:`PlayTone` (a transferee's ringing tone, session 52). 12: :class:`PlayTone` its ``codec``
(G.722 beside the G.711 laws, session 55). 13: the worker's ``--ringback-tone`` (it makes that
plan's frames as it starts, session 56). 14: :class:`PlayTone`'s codec may be ``G729``
(session 56). 15: and ``opus`` (session 57). 16: and ``AMR``, ``AMR-WB`` and their
``octet-aligned`` packings (session 62). 17: and ``GSM`` (session 63). 18: :class:`Tables`
(a worker's internal tables, session 68)."""

SocketAddress = tuple[str, int] | tuple[str, int, int, int]
"""A peer's address as a socket gives it: (host, port), or for IPv6 (host, port, flow info,
scope id): a link-local peer is reached only through its scope id (RFC 4007 §6)."""


def socket_address(source: tuple[Any, ...]) -> SocketAddress:
    """``source`` (as a socket or the relay gave it) as the channel carries it: host and port,
    and an IPv6 address's flow info and scope id."""
    if len(source) >= 4:
        return (str(source[0]), int(source[1]), int(source[2]), int(source[3]))
    return (str(source[0]), int(source[1]))


EXIT_PROTOCOL_MISMATCH = 78
"""A worker's exit status when the SIP process that started it speaks another protocol
version (sysexits' EX_CONFIG: the installation is not what the running process was started
from). Never changes."""

MAX_FRAME = 128 * 1024
"""The largest frame (type and fields): a 64 KiB datagram and its header fit with room."""

SIDES = ("a", "b")
DIRECTIONS = ("a_to_b", "b_to_a")
LAWS = ("", "PCMU", "PCMA")
""":class:`SetTranscoding`'s ``law``: empty for none, else a G.711 law's encoding name."""


class ChannelError(Exception):
    """A frame that is not one of the messages below (the peer process is broken): the channel
    is closed and the worker treated as dead. The text names the problem, never the bytes."""


class ProtocolMismatch(ChannelError):
    """The worker speaks another protocol version than this process (:func:`check_hello`):
    the package was upgraded (or changed) while the gateway ran."""

    def __init__(self, theirs: int | None, ours: int) -> None:
        self.theirs = theirs
        """The worker's version; None when its first message was no :class:`Hello` this
        process can read (never a worker from before versions: that one stops on
        ``--protocol-version``, an option it does not know, before it sends anything)."""
        self.ours = ours
        super().__init__(
            f"the media worker speaks protocol version {self.theirs_text}, this process {ours}"
        )

    @property
    def theirs_text(self) -> str:
        """The worker's version as the log names it."""
        if self.theirs is None:
            return "unknown (its first message is no Hello this process can read)"
        return str(self.theirs)


def version_text(version: int | str | None) -> str:
    """A SIP process's protocol version (a worker's ``--protocol-version``) as the log names
    it; None: a voipgw from before versions, which passes none."""
    return "none (a voipgw from before protocol versions)" if version is None else str(version)


# -- worker -> SIP process, first ---------------------------------------------------------------


@attrs.frozen
class Hello:
    """The worker's first message, always: the protocol version it speaks. Its layout (type
    0, ``version`` u32) never changes, so that a SIP process of any version reads it from a
    worker of any version."""

    version: int


# -- SIP process -> worker ----------------------------------------------------------------------


@attrs.frozen
class Open:
    """Relay a new stream between two port pairs the worker reported in :class:`PairsReady`."""

    stream: int
    a_port: int
    b_port: int


@attrs.frozen
class SetRemote:
    """``StreamSide.set_remote`` of ``side`` ("a" or "b")."""

    stream: int
    side: str
    rtp: tuple[str, int] | None
    rtcp: tuple[str, int] | None
    rtcp_mux: bool


@attrs.frozen
class SetBlocked:
    """``DirectionControl.blocked`` of ``direction`` ("a_to_b" or "b_to_a")."""

    stream: int
    direction: str
    blocked: bool


@attrs.frozen
class SetKeys:
    """A :class:`gateway.core.media.keying.StreamKeys`: each leg's SRTP keys (None: plain RTP on
    that leg), its separate SRTCP keys if it has them, and the block flag of both directions;
    the worker builds the sessions (:class:`gateway.core.media.keying.StreamSrtp`)."""

    stream: int
    blocked: bool
    a: SrtpKeys | None
    b: SrtpKeys | None
    a_separate_rtcp: bool
    a_rtcp: SrtpKeys | None
    b_separate_rtcp: bool
    b_rtcp: SrtpKeys | None


@attrs.frozen
class SetDtls:
    """Hand datagrams that are not RTP/RTCP (RFC 7983: DTLS, ...) arriving on ``side``'s RTP
    socket (``rtcp``: its RTCP socket) to the SIP process (or stop)."""

    stream: int
    side: str
    rtcp: bool
    enabled: bool
    sdp_address_only: bool = False
    """Before keys, no source but the leg's SDP address (relay's set_non_rtp_handler)."""
    proves_peer: bool = False
    """The key exchange tells its peer from other sources (relay's set_non_rtp_handler)."""
    handshake_per_source: bool = False
    """Before keys, DTLS from other sources too: the engine runs a handshake per source
    (relay's set_non_rtp_handler)."""
    other_phones: bool = False
    """After keys too, DTLS from other sources, the socket not connected: the engine keeps
    other phones' handshakes for another phone's answer (relay's set_non_rtp_handler)."""


@attrs.frozen
class SetIce:
    """Answer ICE connectivity checks on ``side``'s RTP socket (``rtcp``: its RTCP socket) as
    an ICE-lite agent with these credentials (:class:`~gateway.core.media.ice.IceLiteResponder`),
    or stop (``enabled`` False, the strings empty). ``remote_ufrag`` empty: not known yet. The
    passwords are credentials: no ``repr`` shows them."""

    stream: int
    side: str
    rtcp: bool
    enabled: bool
    local_ufrag: str
    local_pwd: str = attrs.field(repr=False)
    remote_ufrag: str
    remote_pwd: str = attrs.field(repr=False)


@attrs.frozen
class SendDatagram:
    """``StreamSide.send``: a key exchange's datagram out of ``side``'s RTP socket (``rtcp``:
    its RTCP socket)."""

    stream: int
    side: str
    rtcp: bool
    packet: bytes = attrs.field(repr=lambda p: f"<{len(p)} octets>")
    copy_to_sdp_address: bool = True
    """False: never copied to the leg's SDP address (our DTLS server flight, StreamSide.send)."""
    destination: SocketAddress | None = None
    """Sent to this source only (``StreamSide.send_to``: a DTLS handshake per source); None:
    where the leg's traffic goes (``StreamSide.send``)."""


@attrs.frozen
class LatchPeer:
    """``StreamSide.latch_peer``: the key exchange proved before keys that ``source`` is
    ``side``'s peer; it takes the RTP socket's latch (``rtcp``: the RTCP socket's)."""

    stream: int
    side: str
    rtcp: bool
    source: SocketAddress | None
    """Whole, as :class:`Datagram` gave it: an IPv6 link-local peer is reached through its
    scope id (RFC 4007 §6), which host and port alone lose."""


@attrs.frozen
class Close:
    """Stop relaying the stream and release its ports. ``final_counters``: send its counters
    first, in a :class:`Stats` that is never dropped (a stream a re-INVITE removed: its last
    second of packets goes into the call's totals; version 9)."""

    stream: int
    final_counters: bool = False


@attrs.frozen
class SetTap:
    """Send every packet the stream forwards, after the sending leg's SRTP was removed, to the
    SIP process as :class:`Tapped` (the call's media taps), or stop."""

    stream: int
    enabled: bool


@attrs.frozen
class SetOpaque:
    """``MediaStream.set_opaque``: relay the stream's datagrams as they are (``opaque``: T.38
    UDPTL, ITU-T T.38 Annex D) or as RTP/RTCP again. Sent in the order the call switches the
    mode relative to its other messages (the session switches before setting remotes)."""

    stream: int
    opaque: bool


@attrs.frozen
class SetRtcpWatch:
    """Send the RTCP datagrams of ``direction`` to the SIP process, plain (after SRTCP
    unprotect), as :class:`Rtcp` (the call's quality, from its legs' reports), or stop."""

    stream: int
    direction: str
    enabled: bool


@attrs.frozen
class SetPayloadTypes:
    """``DirectionControl.payload_types`` of ``direction``: RTP payload types to renumber, as
    (sent, wanted) pairs, each 0..127 (empty: none)."""

    stream: int
    direction: str
    renumbered: tuple[tuple[int, int], ...]


@attrs.frozen
class SetRedPayloadTypes:
    """``DirectionControl.red_payload_types`` of ``direction``: the sending leg's RFC 2198 RED
    payload types, each 0..127 (empty: none), whose blocks a renumbering rewrites too."""

    stream: int
    direction: str
    red: tuple[int, ...]


@attrs.frozen
class SetTranscoding:
    """``DirectionControl.transcoding`` of ``direction`` (G.711 A-law <-> mu-law,
    :class:`~gateway.core.media.g711.G711Transcoding`): the sending leg's law (``PCMU`` or
    ``PCMA``; empty: no transcoding) and its payload type, and the receiving leg's payload
    type for the other law."""

    stream: int
    direction: str
    law: str
    payload_type: int
    to_payload_type: int


@attrs.frozen
class SetDtmf:
    """``DirectionControl.dtmf`` of ``direction`` (DTMF interworking, docs/architecture.md):
    take the sending leg's telephone-event packets of ``take_payload_type`` (-1: none) and copy
    them to the SIP process as :class:`DtmfEvent`; inject events of ``inject_payload_type``
    (-1: none) at ``clock_rate``, with ``ssrc`` before any media. Both -1: none. ``red``:
    the sending leg's RFC 2198 RED payload types, each 0..127, whose packets are read for
    events too (RFC 4733 §2.5.1.5; empty: none). ``relayed``: the receiving leg heard the
    sending leg's events until now (``DtmfInterworking.relayed_until_now``). Both -1 ends the
    interworking: an event it injected is ended, the sequence offset kept (version 5)."""

    stream: int
    direction: str
    take_payload_type: int
    inject_payload_type: int
    clock_rate: int
    ssrc: int
    red: tuple[int, ...] = ()
    relayed: bool = False


RECEIVER_EVENT_NOT_TOLD = -2
""":class:`SetReceiverEvent`'s ``payload_type`` for "not told" (the relay's own rule)."""


@attrs.frozen
class SetReceiverEvent:
    """``DirectionControl.receiver_telephone_event`` of ``direction``: the receiving leg takes
    telephone-event as ``payload_type`` at ``clock_rate`` in the SDP in force; -1 (clock rate
    0): it takes none; :data:`RECEIVER_EVENT_NOT_TOLD`: not told. The delayed end copies of
    a DTMF event a change ended take that number, or are dropped (version 9)."""

    stream: int
    direction: str
    payload_type: int
    clock_rate: int


@attrs.frozen
class SendDtmf:
    """``MediaStream.send_telephone_event`` in ``direction``: one RFC 4733 event packet."""

    stream: int
    direction: str
    marker: bool
    start: bool
    payload: bytes


TONE_PLANS = ("", "us", "uk", "eu", "fr")
""":class:`PlayTone`'s plans (:data:`gateway.core.media.tones.RINGBACK_PLANS`); empty: stop.
Append only, as the type numbers."""
TONE_CODECS = (
    "",
    "PCMU",
    "PCMA",
    "G722",
    "G729",
    "opus",
    "AMR",
    "AMR octet-aligned",
    "AMR-WB",
    "AMR-WB octet-aligned",
    "GSM",
)
""":class:`PlayTone`'s codecs (:class:`gateway.core.media.tones.ToneCodec`); empty with no
plan. Append only."""


@attrs.frozen
class PlayTone:
    """``MediaStream.play_tone`` in ``direction``: the tone ``plan`` (empty: stop playing) in
    ``codec`` (``PCMU``, ``PCMA``, ``G722``; empty with no plan) as ``payload_type`` (-1 with
    no plan). The worker draws the tone's SSRC and computes its frames itself (version 11;
    G722 since version 12)."""

    stream: int
    direction: str
    plan: str
    codec: str
    payload_type: int


@attrs.frozen
class SendStats:
    """Send the stream's :class:`Stats` now, whatever changed, and never drop it as a periodic
    one is dropped when the channel is full: the SIP process asks before it reads a call's
    final counters (its record, its metrics), then waits for a :class:`Pong` to a
    :class:`Ping` sent after it. A periodic ``Stats`` is about a second old: without this the
    last second of every call was missing from its record."""

    stream: int


@attrs.frozen
class Ping:
    """Answer with :class:`Pong` once every message sent before this one is applied."""

    token: int


# -- worker -> SIP process ----------------------------------------------------------------------


@attrs.frozen
class Pong:
    """The answer to :class:`Ping`: everything sent before it has been applied."""

    token: int


@attrs.frozen
class PairsReady:
    """Port pairs (their RTP ports) the worker has bound and keeps for future :class:`Open`s.
    The first one after start-up says the worker is ready."""

    ports: tuple[int, ...]


@attrs.frozen
class Datagram:
    """A datagram that is not RTP/RTCP from ``side``'s peer at ``source``, on its RTP socket
    (``rtcp``: its RTCP socket): the relay's non-RTP handler."""

    stream: int
    side: str
    rtcp: bool
    source: SocketAddress | None
    """As the worker's socket gave it (:data:`SocketAddress`)."""
    packet: bytes = attrs.field(repr=lambda p: f"<{len(p)} octets>")


@attrs.frozen
class Stats:
    """A stream's counters, pushed periodically while it receives. ``idle`` is the seconds since
    it last received a packet (the processes' clocks differ, so no timestamps cross)."""

    stream: int
    idle: float
    a_to_b: DirectionStatistics
    b_to_a: DirectionStatistics
    srtp_a: SrtpStatistics | None
    srtp_b: SrtpStatistics | None


@attrs.frozen
class StreamFailed:
    """The worker could not do what a message asked for this stream (e.g. keys for a suite it
    cannot build): the call ends with ``reason``."""

    stream: int
    reason: str


@attrs.frozen
class Tapped:
    """A packet the stream forwarded in ``direction``, as the relay's taps see it (plain)."""

    stream: int
    direction: str
    packet: bytes = attrs.field(repr=lambda p: f"<{len(p)} octets>")


@attrs.frozen
class TappedDatagram:
    """A datagram an opaque stream (T.38 UDPTL) forwarded in ``direction``, for the call's taps,
    with the source latched on the sending leg's socket (None before any latched): what an
    interception needs to deliver it as an IP packet (the SIP process knows our port)."""

    stream: int
    direction: str
    source: tuple[str, int] | None
    packet: bytes = attrs.field(repr=lambda p: f"<{len(p)} octets>")


@attrs.frozen
class Rtcp:
    """An RTCP datagram the stream forwarded in ``direction``, plain, for the call's quality
    (:class:`SetRtcpWatch`). At most :data:`MAX_RTCP_COPY` octets, and at most one per direction
    every :data:`RTCP_COPY_INTERVAL` seconds: the rest are forwarded but not copied."""

    stream: int
    direction: str
    packet: bytes = attrs.field(repr=lambda p: f"<{len(p)} octets>")


@attrs.frozen
class DtmfEvent:
    """A telephone-event packet ``direction`` took (:class:`SetDtmf`), plain, for the call to
    read the digit. At most :data:`MAX_DTMF_COPY` octets and :data:`DTMF_COPIES_PER_SECOND`
    per direction; droppable like :class:`Rtcp`."""

    stream: int
    direction: str
    packet: bytes = attrs.field(repr=lambda p: f"<{len(p)} octets>")


@attrs.frozen
class Tables:
    """Entries of the worker's internal tables now, by name (the relay's streams and the port
    pairs they use, the worker's maps by stream id, its reserve of port pairs, its tasks, the
    interpreter's allocated blocks: ``Worker.sizes``), sent every few seconds for leak hunting:
    the SIP process exports them as ``voipgw_media_worker_internal_entries`` beside its own
    ``voipgw_internal_entries``. Names are ``[a-z_]`` (a metric's label value as written);
    counts fit in 64 bits."""

    entries: tuple[tuple[str, int], ...]


MAX_DTMF_COPY = 256
"""The longest event packet copied (an RFC 4733 packet is 16 octets plus any CSRCs and header
extension)."""
DTMF_COPIES_PER_SECOND = 100
"""Event packets copied per direction and second: a phone sends one every 10-50 ms while a key
is down; a peer flooding its telephone-event number must not flood the control channel."""

MAX_RTCP_COPY = 1500
"""The longest RTCP datagram copied to the SIP process (a phone's compound SR/RR, SDES and XR is
a few hundred octets)."""

RTCP_COPY_INTERVAL = 0.2
"""Least seconds between two copies of one direction's RTCP: reports come every few seconds
(RFC 3550 §6.2); a peer flooding RTCP must not flood the control channel."""


Message = (
    Hello
    | Open
    | SetRemote
    | SetBlocked
    | SetKeys
    | SetDtls
    | SendDatagram
    | LatchPeer
    | Close
    | Ping
    | Pong
    | PairsReady
    | Datagram
    | Stats
    | StreamFailed
    | SetTap
    | SetRtcpWatch
    | Rtcp
    | Tapped
    | SetOpaque
    | TappedDatagram
    | SetIce
    | SetPayloadTypes
    | SetRedPayloadTypes
    | SetTranscoding
    | SetDtmf
    | SendDtmf
    | DtmfEvent
    | SendStats
    | SetReceiverEvent
    | PlayTone
    | Tables
)

# -- field codecs -------------------------------------------------------------------------------


class _Reader:
    """Reads fields from one frame; every read checks what is left."""

    def __init__(self, frame: bytes) -> None:
        self._frame = frame
        self._offset = 1  # after the type octet

    def take(self, size: int) -> bytes:
        end = self._offset + size
        if end > len(self._frame):
            raise ChannelError("truncated frame")
        chunk = self._frame[self._offset : end]
        self._offset = end
        return chunk

    def unpack(self, fmt: struct.Struct) -> tuple[Any, ...]:
        return fmt.unpack(self.take(fmt.size))

    def finish(self) -> None:
        if self._offset != len(self._frame):
            raise ChannelError(f"{len(self._frame) - self._offset} octets after the last field")


_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_F64 = struct.Struct(">d")
_I16 = struct.Struct(">h")
_DIRECTION_FIELDS = tuple(f.name for f in attrs.fields(DirectionStatistics))
_SRTP_FIELDS = tuple(f.name for f in attrs.fields(SrtpStatistics))
_DIRECTION_COUNTERS = struct.Struct(f">{len(_DIRECTION_FIELDS)}Q")
_SRTP_COUNTERS = struct.Struct(f">{len(_SRTP_FIELDS)}Q")


def _put_bytes(value: bytes) -> bytes:
    return _U32.pack(len(value)) + value


def _get_bytes(reader: _Reader) -> bytes:
    (size,) = reader.unpack(_U32)
    return reader.take(size)


def _put_str(value: str) -> bytes:
    data = value.encode()
    if len(data) > 0xFFFF:
        raise ValueError("string field longer than 65535 octets")
    return _U16.pack(len(data)) + data


def _get_str(reader: _Reader) -> str:
    (size,) = reader.unpack(_U16)
    try:
        return reader.take(size).decode()
    except UnicodeDecodeError:
        raise ChannelError("string field is not UTF-8") from None


def _put_choice(choices: tuple[str, ...]) -> Callable[[str], bytes]:
    def put(value: str) -> bytes:
        return _U8.pack(choices.index(value))

    return put


def _get_choice(choices: tuple[str, ...]) -> Callable[[_Reader], str]:
    def get(reader: _Reader) -> str:
        index = int(reader.unpack(_U8)[0])
        if index >= len(choices):
            raise ChannelError(f"value {index} is not one of {', '.join(choices)}")
        return choices[index]

    return get


def _put_bool(value: bool) -> bytes:
    return _U8.pack(1 if value else 0)


def _get_bool(reader: _Reader) -> bool:
    (value,) = reader.unpack(_U8)
    if value > 1:
        raise ChannelError(f"boolean field holds {value}")
    return bool(value)


def _optional(
    put: Callable[[Any], bytes], get: Callable[[_Reader], Any]
) -> tuple[Callable[[Any], bytes], Callable[[_Reader], Any]]:
    def put_optional(value: Any) -> bytes:
        return b"\x00" if value is None else b"\x01" + put(value)

    def get_optional(reader: _Reader) -> Any:
        return get(reader) if _get_bool(reader) else None

    return put_optional, get_optional


def _put_address(value: tuple[str, int]) -> bytes:
    return _put_str(value[0]) + _U16.pack(value[1])


def _get_address(reader: _Reader) -> tuple[str, int]:
    host = _get_str(reader)
    (port,) = reader.unpack(_U16)
    return (host, port)


def _put_socket_address(value: SocketAddress) -> bytes:
    # host, port, then how many more fields (0, or 2 for IPv6: flow info and scope id).
    extra = value[2:]
    if len(extra) not in (0, 2):
        raise ValueError("a socket address has 2 or 4 fields")
    return (
        _put_str(value[0])
        + _U16.pack(value[1])
        + _U8.pack(len(extra))
        + b"".join(_U32.pack(field) for field in extra)
    )


def _get_socket_address(reader: _Reader) -> SocketAddress:
    host = _get_str(reader)
    (port,) = reader.unpack(_U16)
    (count,) = reader.unpack(_U8)
    if count == 0:
        return (host, port)
    if count != 2:
        raise ChannelError(f"a socket address with {count} fields after its port")
    flowinfo, scope_id = reader.unpack(_U32)[0], reader.unpack(_U32)[0]
    return (host, port, flowinfo, scope_id)


def _put_keys(value: SrtpKeys) -> bytes:
    # An absent MKI (RFC 3711 §3.1) is sent as an empty one: an MKI is 1..128 octets.
    return (
        _put_str(value.suite)
        + _put_bytes(value.local_key)
        + _put_bytes(value.remote_key)
        + _put_bytes(value.local_mki or b"")
        + _put_bytes(value.remote_mki or b"")
    )


def _get_keys(reader: _Reader) -> SrtpKeys:
    suite, local, remote = _get_str(reader), _get_bytes(reader), _get_bytes(reader)
    local_mki, remote_mki = _get_bytes(reader) or None, _get_bytes(reader) or None
    return SrtpKeys(suite, local, remote, local_mki, remote_mki)


def _put_ports(value: tuple[int, ...]) -> bytes:
    return _U16.pack(len(value)) + struct.pack(f">{len(value)}H", *value)


def _get_ports(reader: _Reader) -> tuple[int, ...]:
    (count,) = reader.unpack(_U16)
    return tuple(struct.unpack(f">{count}H", reader.take(2 * count)))


def _put_renumbered(value: tuple[tuple[int, int], ...]) -> bytes:
    return _U8.pack(len(value)) + b"".join(bytes(pair) for pair in value)


def _get_renumbered(reader: _Reader) -> tuple[tuple[int, int], ...]:
    (count,) = reader.unpack(_U8)
    data = reader.take(2 * count)
    if any(octet > 127 for octet in data):
        raise ChannelError("payload type over 127")
    return tuple((data[i], data[i + 1]) for i in range(0, len(data), 2))


def _put_payload_types(value: tuple[int, ...]) -> bytes:
    return _U8.pack(len(value)) + bytes(value)


def _get_payload_types(reader: _Reader) -> tuple[int, ...]:
    (count,) = reader.unpack(_U8)
    data = reader.take(count)
    if any(octet > 127 for octet in data):
        raise ChannelError("payload type over 127")
    return tuple(data)


def _put_entries(value: tuple[tuple[str, int], ...]) -> bytes:
    return _U16.pack(len(value)) + b"".join(_put_str(name) + _U64.pack(n) for name, n in value)


def _get_entries(reader: _Reader) -> tuple[tuple[str, int], ...]:
    (count,) = reader.unpack(_U16)
    return tuple((_get_str(reader), int(reader.unpack(_U64)[0])) for _ in range(count))


def _put_direction(value: DirectionStatistics) -> bytes:
    return _DIRECTION_COUNTERS.pack(*(getattr(value, name) for name in _DIRECTION_FIELDS))


def _get_direction(reader: _Reader) -> DirectionStatistics:
    return DirectionStatistics(*reader.unpack(_DIRECTION_COUNTERS))


def _put_srtp(value: SrtpStatistics) -> bytes:
    return _SRTP_COUNTERS.pack(*(getattr(value, name) for name in _SRTP_FIELDS))


def _get_srtp(reader: _Reader) -> SrtpStatistics:
    return SrtpStatistics(*reader.unpack(_SRTP_COUNTERS))


def _struct(fmt: struct.Struct) -> tuple[Callable[[Any], bytes], Callable[[_Reader], Any]]:
    return (lambda value: fmt.pack(value)), (lambda reader: reader.unpack(fmt)[0])


_Codec = tuple[Callable[[Any], bytes], Callable[[_Reader], Any]]
_STREAM: _Codec = _struct(_U32)
_PORT: _Codec = _struct(_U16)
_BOOL: _Codec = (_put_bool, _get_bool)
_SIDE: _Codec = (_put_choice(SIDES), _get_choice(SIDES))
_DIRECTION: _Codec = (_put_choice(DIRECTIONS), _get_choice(DIRECTIONS))
_BYTES: _Codec = (_put_bytes, _get_bytes)
_STR: _Codec = (_put_str, _get_str)
_ADDRESS: _Codec = _optional(_put_address, _get_address)
_SOCKET_ADDRESS: _Codec = _optional(_put_socket_address, _get_socket_address)
_KEYS: _Codec = _optional(_put_keys, _get_keys)
_STATS: _Codec = (_put_direction, _get_direction)
_SRTP: _Codec = _optional(_put_srtp, _get_srtp)
_SECONDS: _Codec = _struct(_F64)
_PAYLOAD_TYPE: _Codec = _struct(_I16)  # -1: none
_LAW: _Codec = (_put_choice(LAWS), _get_choice(LAWS))
_TONE_PLAN: _Codec = (_put_choice(TONE_PLANS), _get_choice(TONE_PLANS))
_TONE_CODEC: _Codec = (_put_choice(TONE_CODECS), _get_choice(TONE_CODECS))
_VERSION: _Codec = _struct(_U32)

# type octet -> (class, the codec of each field in attrs order). Append only: never renumber.
# Any change to a layout here bumps PROTOCOL_VERSION; Hello's (type 0) never changes.
_LAYOUTS: dict[int, tuple[type[Any], tuple[_Codec, ...]]] = {
    0: (Hello, (_VERSION,)),
    1: (Open, (_STREAM, _PORT, _PORT)),
    2: (SetRemote, (_STREAM, _SIDE, _ADDRESS, _ADDRESS, _BOOL)),
    3: (SetBlocked, (_STREAM, _DIRECTION, _BOOL)),
    4: (SetKeys, (_STREAM, _BOOL, _KEYS, _KEYS, _BOOL, _KEYS, _BOOL, _KEYS)),
    5: (SetDtls, (_STREAM, _SIDE, _BOOL, _BOOL, _BOOL, _BOOL, _BOOL, _BOOL)),
    6: (SendDatagram, (_STREAM, _SIDE, _BOOL, _BYTES, _BOOL, _SOCKET_ADDRESS)),
    7: (Close, (_STREAM, _BOOL)),
    8: (Ping, (_STREAM,)),
    20: (PairsReady, ((_put_ports, _get_ports),)),
    21: (Datagram, (_STREAM, _SIDE, _BOOL, _SOCKET_ADDRESS, _BYTES)),
    22: (Stats, (_STREAM, _SECONDS, _STATS, _STATS, _SRTP, _SRTP)),
    23: (StreamFailed, (_STREAM, _STR)),
    24: (Pong, (_STREAM,)),
    9: (SetTap, (_STREAM, _BOOL)),
    12: (SetRtcpWatch, (_STREAM, _DIRECTION, _BOOL)),
    27: (Rtcp, (_STREAM, _DIRECTION, _BYTES)),
    25: (Tapped, (_STREAM, _DIRECTION, _BYTES)),
    10: (SetOpaque, (_STREAM, _BOOL)),
    26: (TappedDatagram, (_STREAM, _DIRECTION, _ADDRESS, _BYTES)),
    11: (SetIce, (_STREAM, _SIDE, _BOOL, _BOOL, _STR, _STR, _STR, _STR)),
    13: (SetPayloadTypes, (_STREAM, _DIRECTION, (_put_renumbered, _get_renumbered))),
    14: (
        SetDtmf,
        (
            _STREAM,
            _DIRECTION,
            _PAYLOAD_TYPE,
            _PAYLOAD_TYPE,
            _STREAM,
            _STREAM,
            (_put_payload_types, _get_payload_types),
            _BOOL,
        ),
    ),
    15: (SendDtmf, (_STREAM, _DIRECTION, _BOOL, _BOOL, _BYTES)),
    28: (DtmfEvent, (_STREAM, _DIRECTION, _BYTES)),
    16: (SetRedPayloadTypes, (_STREAM, _DIRECTION, (_put_payload_types, _get_payload_types))),
    17: (SetTranscoding, (_STREAM, _DIRECTION, _LAW, _PAYLOAD_TYPE, _PAYLOAD_TYPE)),
    18: (LatchPeer, (_STREAM, _SIDE, _BOOL, _SOCKET_ADDRESS)),
    19: (SendStats, (_STREAM,)),
    29: (SetReceiverEvent, (_STREAM, _DIRECTION, _PAYLOAD_TYPE, _STREAM)),
    30: (PlayTone, (_STREAM, _DIRECTION, _TONE_PLAN, _TONE_CODEC, _PAYLOAD_TYPE)),
    31: (Tables, ((_put_entries, _get_entries),)),
}
_TYPES = {cls: (code, codecs) for code, (cls, codecs) in _LAYOUTS.items()}


# Per type: its type octet, a getter of its fields' values in attrs order (a tuple even for
# one field) and each field's writer. A call with media workers sends about ten messages: the
# generic attrs.astuple and a generator per message cost half of each encode (session 52).
def _values_of(cls: type[Any]) -> Callable[[Any], tuple[Any, ...]]:
    names = [field.name for field in attrs.fields(cls)]
    if len(names) == 1:
        (name,) = names
        return lambda message: (getattr(message, name),)
    return operator.attrgetter(*names)


_WRITERS: dict[type[Any], tuple[bytes, Callable[[Any], tuple[Any, ...]], tuple[Any, ...]]] = {
    cls: (bytes([code]), _values_of(cls), tuple(put for put, _ in codecs))
    for code, (cls, codecs) in _LAYOUTS.items()
}


def encode(message: Message) -> bytes:
    """``message`` as one frame, length prefix included. Raises ValueError for a value that
    does not fit its field (our bug, never the peer's)."""
    code, values_of, puts = _WRITERS[type(message)]
    values = values_of(message)
    try:
        body = code + b"".join([put(v) for put, v in zip(puts, values, strict=True)])
    except struct.error as exc:
        raise ValueError(f"{type(message).__name__}: a field is out of range ({exc})") from None
    if len(body) > MAX_FRAME:
        raise ValueError(f"{type(message).__name__} needs {len(body)} octets, over {MAX_FRAME}")
    return _U32.pack(len(body)) + body


def parse_message_untrusted(frame: bytes) -> Message:
    """One frame (type octet and fields, without the length prefix) as its message.

    Raises :class:`ChannelError` for an unknown type, a field that does not fit or octets left
    over."""
    if not frame:
        raise ChannelError("empty frame")
    layout = _LAYOUTS.get(frame[0])
    if layout is None:
        raise ChannelError(f"unknown message type {frame[0]}")
    cls, codecs = layout
    reader = _Reader(frame)
    values = [get(reader) for _, get in codecs]
    reader.finish()
    message: Message = cls(*values)
    return message


def check_hello(first: Message, ours: int) -> None:
    """Check a worker's first message: :class:`Hello` with version ``ours`` (the SIP process's
    :data:`PROTOCOL_VERSION`). Raises :class:`ProtocolMismatch` otherwise."""
    if not isinstance(first, Hello):
        raise ProtocolMismatch(None, ours)
    if first.version != ours:
        raise ProtocolMismatch(first.version, ours)


class FrameReader:
    """Splits the bytes of the channel into messages. Bounded: a frame longer than
    :data:`MAX_FRAME` is a :class:`ChannelError` before any of it is buffered."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """Add what was read; returns the messages completed by it, in order."""
        self._buffer += data
        messages: list[Message] = []
        buffer = self._buffer
        offset = 0
        while len(buffer) - offset >= 4:
            (length,) = _U32.unpack_from(buffer, offset)
            if length > MAX_FRAME:
                raise ChannelError(f"frame of {length} octets is over the {MAX_FRAME} limit")
            if len(buffer) - offset - 4 < length:
                break
            frame = bytes(buffer[offset + 4 : offset + 4 + length])
            offset += 4 + length
            messages.append(parse_message_untrusted(frame))
        del buffer[:offset]
        return messages

    @property
    def pending(self) -> int:
        """Octets of an incomplete frame held."""
        return len(self._buffer)
