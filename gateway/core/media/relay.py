"""The media relay: RTP/RTCP between the two legs of every media stream, from one trio task.

Theory of operation
-------------------
A :class:`MediaStream` joins two :class:`StreamSide` objects, ``a`` and ``b``, each holding
the :class:`~gateway.core.media.ports.PortPair` that faces one leg (the B2BUA advertises that pair
in the leg's SDP). What arrives on side A's sockets leaves from side B's sockets towards leg B's
address (direction ``a_to_b``), and the reverse.

- Symmetric latching (RFC 4961 symmetric RTP, as rtpengine and RTPproxy do): a side's remote
  address starts as the one in its SDP (:meth:`StreamSide.set_remote`). The first well-formed packet
  on a socket latches its source address (the real one behind a NAT) and from then on that is where
  the other leg's media goes. Packets from any other source are dropped and counted, unless the
  relay was built with ``relatch_after`` and the latched source has been silent that long.
  RTP and RTCP sockets latch separately. A new SDP address for the side forgets the latch.
  Caveat (shared with rtpengine's default learning mode): whoever sends first latches the socket.
  Except the source it forgot: when a new SDP address replaces a latched source that was still
  sending, that source may not latch again within :data:`PREVIOUS_SOURCE_QUARANTINE` seconds of
  its last packet before the change (a transferred call's departing party, still sending music on
  hold while the target's media starts, would otherwise win the socket back; RFC 3515 transfers,
  and any re-INVITE that moves a leg's media). Not when the new address is that source itself.
  Unless re-latching is on, a latched socket is connected to its source (``connect(2)``,
  :mod:`~gateway.core.media.udp_association`): the kernel then drops other senders' datagrams
  (answering them with ICMP port unreachable, as for a closed port) instead of the relay
  reading and counting them, and the relay reads and sends without addresses.
- rtcp-mux (RFC 5761): on a side that muxes, RTCP arrives on the RTP port and is told apart by the
  second octet (RFC 5761 §4, :data:`~gateway.core.media.rtp.RTCP_BY_SECOND_OCTET`); RTCP towards a
  side that muxes leaves from its RTP socket to its RTP address, otherwise from its RTCP socket to
  its RTCP address (SDP ``a=rtcp`` per RFC 3605, or RTP port + 1).
- Packets are forwarded unchanged (SSRC, sequence numbers, timestamps; the payload type too,
  unless renumbered, below). Per direction a :class:`DirectionControl` sets a ``blocked`` flag
  (no media before keys), :class:`Transforms` (SRTP unprotect on arrival, protect before
  sending; ``None`` from a transform drops the packet) and taps (called between the two
  transforms, so they see plain RTP).
- Payload type numbers: a direction may renumber RTP payload types
  (:attr:`DirectionControl.payload_types`, set by the media session from the two legs' SDP when
  they number a codec differently, e.g. telephone-event 101 and 96 after a call pickup). The
  second octet goes through a 256-entry table (marker bit kept), on the plain packet: after
  SRTP unprotect and before protect, since the payload type is authenticated (RFC 3711 §3.1).
  It rides on the RTP route's transforms (A->B before ``rtp_out``, B->A after ``rtp_in``, so taps
  see every packet numbered as leg A's SDP says), in place when they are: a direction without a
  renumbering is built exactly as before and pays nothing. RTCP carries no payload type.
  RFC 2198 RED (browsers' Opus redundancy) names a payload type per block inside the packet
  (§3): where the sender has RED (:attr:`DirectionControl.red_payload_types`) and the direction
  renumbers, its RED packets' block headers go through the same table, parsed with bounds (a
  RED packet that does not parse is dropped as malformed: relayed, its blocks would keep the
  sender's numbers); that direction gets a transform of its own, the others are as before.
- DTMF interworking (a leg with telephone-event and one without, docs/architecture.md "DTMF
  interworking"): a direction may have a :class:`DtmfInterworking`
  (:attr:`DirectionControl.dtmf`). Its RTP then goes through ``_DtmfIn`` on arrival (after
  SRTP unprotect, before renumbering): telephone-event packets of the sending leg are taken
  and handed on, the others' sequence numbers moved by the packets taken or injected
  (:meth:`MediaStream.send_telephone_event` adds event packets, protected with ``rtp_out``).
  Where the sending leg has RED (``DtmfInterworking.red_payload_types``) it is ``_DtmfInRed``
  instead: events may come as RFC 2198 blocks (RFC 4733 §2.5.1.5), read with bounds and handed
  on as plain event packets. Such a direction takes the bytes path; one without is built as
  before and pays nothing. An interworking replaced or removed mid-call ends the event it was
  injecting (three end packets, §2.5.1.4), and the sequence numbers it moved stay moved
  (RFC 3711 §3.3.2 would drop numbers the receiver had as replays): the next interworking
  carries them on, or the direction keeps renumbering alone. One that begins where the
  receiver heard the sender's events relays the event already in progress to its end.
- G.711 transcoding (a PCMU-only leg and a PCMA-only leg, :mod:`~gateway.core.media.g711`):
  a direction may have a :class:`~gateway.core.media.g711.G711Transcoding`
  (:attr:`DirectionControl.transcoding`). Its RTP packets of the sending leg's G.711 number
  then get their payload octets through a 256-octet table and the receiving leg's number
  (marker bit kept), on the plain packet in the sender's numbers: A->B first thing before
  renumbering and ``rtp_out``, B->A after ``rtp_in`` and DTMF interworking, before
  renumbering, so taps see leg A's law both ways. In place where the route works in place;
  lengths, timestamps and RTCP are unchanged (one octet a sample either way). Other payload
  types (telephone-event, comfort noise) pass unchanged. A direction without one is built
  exactly as before and pays nothing.
- Key exchanges on the media port (DTLS, RFC 5764 §5.1.2; ZRTP; STUN), demultiplexed by the
  first byte (RFC 7983): what is not RTP/RTCP (first byte outside 128..191) is dropped as
  malformed, unless the socket has a handler (:meth:`StreamSide.set_non_rtp_handler`, the call's
  handshake task, which gives each datagram to the negotiation that claims its range). A side's
  RTP socket has one, and its RTCP socket too when the leg does not mux RTCP (RFC 5764 §4.1
  keys SRTCP from a handshake of its own). Answers leave with :meth:`StreamSide.send`. Only that
  branch costs anything. A DTLS alert in clear (epoch 0: nothing authenticates it) or a ZRTP
  Error (no MAC, RFC 6189 §5.9) from a source that is neither the latched one nor the leg's
  SDP address is dropped and latches nothing: one forged datagram must not end the handshake
  (RFC 6347 §4.1.2.7).
  Where the leg's SDP gave an address, "the SDP address first, another source only until the
  SDP address speaks" (docs/media_security.md, "Forged handshakes"): before the socket is
  keyed (:attr:`_Endpoint.keyed`, from the direction's transforms), another source latches a
  handshake socket without connecting it, a datagram from the SDP address takes the latch
  over (:func:`_takes_over`; the handshake task restarts the port's handshake), and the key
  exchange's datagrams go to the SDP address too meanwhile, unless they only answer the
  latched source (our DTLS server flight; :meth:`StreamSide.send`). Keys connect the socket
  (:meth:`MediaStream._connect_keyed`): the keyed path is unchanged. A side set
  ``sdp_address_only`` lets no other source latch before keys. While another source than the
  SDP address holds such a latch, ZRTP datagrams from other sources go to the handler with
  their source, latching nothing (:func:`_zrtp_beside_unproven_latch`): the ZRTP engine tells
  the peer by its Hello (RFC 6189 §8.1), and :meth:`StreamSide.latch_peer` gives it the latch.
  A side set ``handshake_per_source`` (the ``dtls`` engine) gets DTLS datagrams from other
  sources the same way (:func:`_dtls_beside_unproven_latch`): the engine runs a handshake per
  source, answered at each source's address (:meth:`StreamSide.send_to`), and the one whose
  certificate matches a=fingerprint (RFC 5763 §5) takes the latch.
  On the callee's side (B) while its leg's SDP never gave an address (our offer waits for its
  answer: maybe one of several forks, RFC 3261 §16.7, sharing these sockets; a late-offer
  caller, RFC 3261 §13.2.1, is one device and latches as always) a handshake socket's latch is not
  connected, and datagrams that are not RTP from sources other than the latched one go to the
  handler with their source, latching nothing: the call's handshake task keeps them apart by
  source and feeds the answering fork's (handshakes.py). The answer's address unlatches, unless
  the latched source is that address: it stays latched and is connected then (a losing fork's
  resend must not take the socket before the answering fork's next packet); the latched
  source is kept out for :data:`PREVIOUS_SOURCE_QUARANTINE` from the answer when another
  sender was at the answer's address (it lost), from its last media if it sent media, and
  not at all when it sent only handshake datagrams and none was (a NAT: it may be the
  answer's own).
- ICE (RFC 8445, the gateway as a lite agent: :mod:`~gateway.core.media.ice`): a side whose
  leg does ICE has an ICE handler on its sockets (:meth:`StreamSide.set_ice_handler`). STUN
  (first octet 0..3) goes to it from any source, since checks come from every candidate of the
  peer, and its answer goes back to that source. Such a socket latches no source by itself: the
  handler's valid check selects a source when none is, a nomination (USE-CANDIDATE) selects its
  source, also over an earlier one (the peer moved). It is never connected (a later nomination
  from another address must reach it), so its packets take the checked path. Sides without ICE
  pay nothing: the handler is looked at only for datagrams that are not RTP/RTCP.
- Opaque streams (T.38 fax over UDPTL, ITU-T T.38 Annex D: :meth:`MediaStream.set_opaque`):
  what arrives on a side's RTP socket is relayed as it is, never parsed as RTP (a UDPTL packet's
  first octet, the high byte of its sequence number, may look like RTP version 2), transformed
  (UDPTL is never encrypted by us) nor handed to a key exchange; latching works as for RTP; taps
  see each datagram; datagrams longer than :data:`MAX_OPAQUE_DATAGRAM` are dropped as malformed.
  They are counted apart from RTP (``udptl_packets``/``udptl_bytes``), so a fax call is never
  shown as having had RTP. The RTCP socket relays nothing then. The mode is decided at setup:
  an opaque socket is kept in a table of its own, looked up only where the RTP table has no
  endpoint, so RTP pays nothing.
- Every drop is counted per direction and reason (:data:`DROP_REASONS`), where it happens, on
  the drop's own branch: the forwarding path counts nothing more for it.
  :meth:`DirectionControl.statistics`, :meth:`DirectionControl.dropped_by_reason`.
- Reading RTCP (call quality, :mod:`~gateway.core.media.quality`): a direction's
  :attr:`DirectionControl.rtcp_observer` gets each of its RTCP datagrams, plain (after SRTCP
  unprotect), and the datagram is forwarded unchanged. The observer rides on the RTCP route's
  inbound transform, so the RTP routes are built exactly as without it: RTP pays nothing, and
  RTCP (one datagram every few seconds) takes the bytes path instead of the in-place one.
- Each stream records when it last received media (:attr:`MediaStream.last_activity`); the B2BUA
  polls :meth:`MediaRelay.idle_streams` and ends calls whose media stopped.

Speed
-----
One trio task (:meth:`MediaRelay.serve`) owns a level-triggered ``select.epoll`` in which every
media socket is registered once. It waits for the epoll descriptor to become readable, asks epoll
which sockets are ready, and reads each into one preallocated buffer: with ``recv_into`` once the
socket is connected to its latched source, else with ``recvfrom_into``. All a packet needs is
precomputed on a per-socket ``_Endpoint`` and per-kind ``_Route`` (outgoing ``send`` on a
connected socket or ``sendto`` and destination, transforms, counters as plain ints), so the hot
loop does no allocation beyond what CPython's socket calls make, and no attribute chains.
Transforms that work in place (SRTP: :meth:`~gateway.core.media.srtp.SrtpTransform.in_buffer`)
run on that same buffer, so an SRTP packet is received, unprotected, protected and sent without
a copy made in Python; an SRTP->SRTP direction runs both in one call. Other transforms, and any
direction with a tap, get ``bytes``. Sockets are found by descriptor in a list. Work per wake-up
is bounded: at most ``max_rounds_per_wakeup`` rounds of one datagram from each of at most
``max_sockets_per_round`` ready sockets (about 5 ms of work with the defaults at full load), so
signalling tasks keep running. Level-triggered epoll reports what is left on the next round or
wake-up; the kernel re-queues a reported socket at the tail of its ready list, so no socket starves.

Linux only: ``select.epoll``.

Compiled
--------
This module and :mod:`~gateway.core.media.srtp` can be compiled by mypyc from this same source
(an install with ``VOIPGW_USE_MYPYC=1``, setup.py): the per-packet loop then runs as C, with the
``_Endpoint``/``_Route`` fields as struct members, and the relay's cost per packet falls to
about rtpengine's (docs/benchmarks.md, "The compiled relay"). :data:`COMPILED` says which build
runs. What keeps the module compilable, checked by tests/integration/test_compiled_relay.py:
annotations that are true at run time (mypyc checks them where a value enters a compiled
function or attribute), attributes only assigned in ``__init__`` or declared there, no attrs
class with a property setter (mypyc compiles attrs classes as ordinary Python classes, which
may not have one), and nothing that patches a compiled class or function from outside.

Streams may be opened and closed at any time from the trio thread, also while :meth:`serve` runs
(and even from a tap or transform). Changes to a stream (SDP addresses, block flags, transforms,
taps) mark it stale; the relay recomputes its ``_Endpoint``/``_Route`` state at the start of its
next poll round, so a burst of changes (keying sets four) costs one rebuild and every change is in
force for the next packet read. Latching rebuilds at once, inside the round.

Ports are released on every path: :meth:`MediaStream.close` (or its ``with`` block), a failed
:meth:`MediaRelay.open_stream`, and :meth:`MediaRelay.close`, which :meth:`MediaRelay.serve` calls
when it ends.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import secrets
import select
import socket
from collections.abc import Callable, Mapping
from importlib.machinery import EXTENSION_SUFFIXES
from itertools import repeat
from typing import Any

import attrs
import trio

from gateway.core.ip import ip_facts
from gateway.core.logs import log_exception
from gateway.core.media.dtmf import END_PACKETS, UPDATE_INTERVAL
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.g711 import G711Transcoding
from gateway.core.media.ports import PortAllocator, PortPair
from gateway.core.media.rtp import (
    RTCP_BY_SECOND_OCTET,
    RTCP_MIN_LENGTH,
    RTP_HEADER_LENGTH,
    VERSION_BITS,
    VERSION_MASK,
)
from gateway.core.media.tones import Tone, TonePlayer, codec_available
from gateway.core.media.udp_association import dissolve

logger = logging.getLogger(__name__)

COMPILED = __file__.endswith(tuple(EXTENSION_SUFFIXES))
"""True when this module runs compiled by mypyc (see "Compiled" above)."""

Transform = Callable[[bytes], bytes | None]
"""Takes one packet and returns the packet to go on with, or None to drop it (counted).

A transform may also offer ``in_buffer(buffer: bytearray) -> BufferStep | None`` (as
:class:`~gateway.core.media.srtp.SrtpTransform` does): the relay then runs that step on its
receive buffer instead of calling the transform with a ``bytes`` copy of the packet. An inbound
transform may offer ``in_buffer_then(transform_out, buffer) -> BufferStep | None`` too: one step
for both (SRTP->SRTP in one call)."""

BufferStep = Callable[[int], int]
"""A transform working in place on the relay's receive buffer: takes the length of the packet at
the start of the buffer, leaves its result there and returns its length, or -1 to drop it
(counted). The buffer has at least :data:`TRANSFORM_ROOM` octets free after any packet."""

Address = tuple[Any, ...]
"""A socket address as ``recvfrom`` returns it: (host, port) for IPv4, 4 items for IPv6."""

IceHandler = Callable[[bytes, Address], tuple[bytes | None, int]]
"""Answers a STUN connectivity check (RFC 8445 §7.3) that arrived on a side's socket from
``source``: returns the datagram to send back to that source (None: nothing) and 0 (media stays
where it goes), 1 (a valid check: its source takes the socket if nothing is selected) or 2
(nominated: its source takes the socket). :class:`~gateway.core.media.ice.IceLiteResponder`.
Called on the relay's slow path; it must not block."""

ICE_VALID = 1
ICE_NOMINATED = 2

HELD_DATAGRAMS = 8
"""Key-exchange datagrams an ICE leg holds until a check selects its address (a DTLS flight is
one to five datagrams; a retransmission repeats it): older ones are dropped."""

NonRtpHandler = Callable[[bytes, Address], None]
"""Takes a datagram that is not RTP/RTCP (RFC 7983: DTLS, ZRTP, STUN, ...) that arrived on a
side's RTP or RTCP socket from the side's peer, and its source. Called on the relay's hot path:
it must not block nor raise (hand the packet on, e.g. with a memory channel's ``send_nowait``)."""


_RECEIVE_BUFFER_SIZE = 65536  # the largest UDP payload: never truncate a datagram
# A socket's default receive buffer (net.core.rmem_default, 208 KiB) holds a few hundred RTP
# datagrams; more than this at the moment of latching is a flood.
_MOST_DATAGRAMS_READ_AT_CONNECT = 4096
TRANSFORM_ROOM = 256
"""Octets of the receive buffer beyond the largest datagram, for what an in-place transform
appends (an SRTCP index and tag take at most 148, pylibsrtp's SRTP_MAX_SRTCP_TRAILER_LEN)."""
MAX_OPAQUE_DATAGRAM = 2048
"""The longest datagram an opaque (T.38 UDPTL) stream relays. T.38 datagrams are a few hundred
octets even with redundancy (T38FaxMaxDatagram is typically 72..1400); anything longer is not fax
and is dropped as malformed rather than relayed."""
_NEVER_RTCP = bytes(256)  # RTP port of a side without rtcp-mux: everything is RTP
_ALWAYS_RTCP = bytes([1]) * 256  # RTCP port: everything is RTCP


class Direction(enum.Enum):
    """Which way a packet travels through a stream."""

    A_TO_B = "a_to_b"
    B_TO_A = "b_to_a"


# The members read at run time, as module names: on CPython 3.11 a member read from its enum
# class goes through EnumType's __getattr__ hook, ~900 instructions (docs/benchmarks.md,
# sessions 44 and 45).
_A_TO_B = Direction.A_TO_B
_B_TO_A = Direction.B_TO_A


Tap = Callable[[Direction, bytes], None]
"""Called with every forwarded packet of a direction, after ``rtp_in``/``rtcp_in`` and before
``rtp_out``/``rtcp_out``. A tap runs inside the relay's packet loop and MUST NOT block or do slow
work: hand the packet to a bounded queue with ``send_nowait``, and on ``trio.WouldBlock`` drop it
and count (STYLE.md habit 7). Exceptions are caught and counted as ``tap_errors``."""


@attrs.frozen
class Transforms:
    """Per-direction packet transforms; ``None`` means "pass unchanged".

    ``*_in`` run on arrival (e.g. SRTP/SRTCP unprotect with the sending leg's keys), taps see their
    result, ``*_out`` run just before sending (e.g. protect with the receiving leg's keys).
    A transform that returns None or raises drops the packet (counted as ``dropped_transform``).
    """

    rtp_in: Transform | None = None
    rtp_out: Transform | None = None
    rtcp_in: Transform | None = None
    rtcp_out: Transform | None = None


NO_TRANSFORMS = Transforms()
"""Every packet passes unchanged (plain RTP both ways): one shared instance (frozen), not a new
one per direction and key change (eight per plain call)."""


def drop_until_keyed(packet: bytes) -> bytes | None:
    """The SRTCP transform of a port whose own handshake has no keys yet (DTLS-SRTP without
    rtcp-mux, RFC 5764 §4.1; :mod:`~gateway.core.media.keying`): every packet is dropped
    (counted). By it the relay tells that this port is not keyed yet (:attr:`_Endpoint.keyed`)."""
    return None


RtcpObserver = Callable[[bytes], None]
"""Takes each RTCP datagram of a direction, as plain RTCP (after ``rtcp_in``, e.g. SRTCP
unprotect; before ``rtcp_out``), to read it (call quality,
:class:`~gateway.core.media.quality.CallQuality`). The packet is forwarded unchanged whatever the
observer does. Runs in the relay's loop, RTCP only (RTP never reaches it): must not block."""


DROP_REASONS = (
    "unlatched_source",
    "blocked",
    "srtp_refused",
    "malformed",
    "no_destination",
    "send_failed",
)
"""Why the relay drops a packet, in the order of :meth:`DirectionControl.dropped_by_reason`:
``dropped_unlatched_source``, ``dropped_blocked``, ``dropped_transform`` (SRTP/SRTCP refused
it, or another transform did), ``dropped_malformed``, ``dropped_no_destination`` and
``dropped_send_error`` of :class:`DirectionStatistics`. The names are the ``reason`` label of
``voipgw_media_dropped_packets_by_reason_total`` (docs/metrics.md says what each means and
what to do about it)."""


@attrs.frozen
class DirectionStatistics:
    """Counters of one direction of a stream since it was opened."""

    rtp_packets: int
    rtp_bytes: int
    rtcp_packets: int
    rtcp_bytes: int
    dropped_unlatched_source: int
    """From a source other than the latched one, read by the relay: before the socket was
    connected to its source, or with re-latching on. A connected socket never sees the others'
    datagrams: the kernel refuses them (ICMP port unreachable; ``Udp: NoPorts`` in
    /proc/net/snmp)."""
    dropped_blocked: int
    """While the direction was blocked (no keys yet)."""
    dropped_transform: int
    """A transform returned None or raised."""
    dropped_malformed: int
    """Not RTP/RTCP version 2, or shorter than a fixed RTP header (RTCP: 8 octets); on an opaque
    stream, empty or longer than :data:`MAX_OPAQUE_DATAGRAM`; an RFC 2198 RED packet whose block
    headers do not parse, on a direction that renumbers them."""
    dropped_send_error: int
    """The send failed (e.g. socket buffer full; on a socket connected to its peer also once
    per ICMP error the peer's host returned, e.g. port unreachable)."""
    dropped_no_destination: int
    """Neither SDP nor latching has given the other leg an address yet."""
    transform_errors: int
    """Transforms that raised (also counted in ``dropped_transform``); the first is logged."""
    tap_errors: int
    """Taps that raised (the packet was still forwarded); the first is logged."""
    receive_errors: int
    """Receive failures other than "nothing to read" (on a socket connected to its peer also
    once per ICMP error the peer's host returned)."""
    udptl_packets: int = 0
    """Datagrams an opaque stream forwarded (T.38 fax over UDPTL, :meth:`MediaStream.
    set_opaque`): not RTP, never in ``rtp_packets``."""
    udptl_bytes: int = 0
    """Their bytes (UDP payload)."""
    transcoded_packets: int = 0
    """RTP packets whose G.711 law this direction converted (:attr:`DirectionControl.
    transcoding`), also counted in ``rtp_packets``."""
    dtmf_taken: int = 0
    """RFC 4733 event packets DTMF interworking took from this direction for SIP INFO (every
    interworking it had, :meth:`DirectionControl.dtmf_counts`); not in ``rtp_packets``."""
    dtmf_injected: int = 0
    """Event packets it added for digits from SIP INFO, the end copies below included."""
    dtmf_ended_at_change: int = 0
    """End packets it sent for an injected event a change of interworking cut short (RFC 4733
    §2.5.1.4: three an event)."""
    dtmf_passed: int = 0
    """Event packets of an event begun before the interworking, relayed on to its end."""
    dtmf_end_copies_dropped: int = 0
    """Delayed end copies of such an event not sent because the interworking in force when
    each was due no longer sends telephone-event to this receiver, or at another clock rate
    (:meth:`DirectionControl._send_end_copy`)."""

    @property
    def packets(self) -> int:
        """RTP and RTCP packets forwarded (T.38 UDPTL datagrams not among them)."""
        return self.rtp_packets + self.rtcp_packets

    @property
    def dropped(self) -> int:
        """Packets dropped for any reason."""
        return (
            self.dropped_unlatched_source
            + self.dropped_blocked
            + self.dropped_transform
            + self.dropped_malformed
            + self.dropped_send_error
            + self.dropped_no_destination
        )

    @property
    def dropped_by_reason(self) -> tuple[int, int, int, int, int, int]:
        """``dropped`` split as :data:`DROP_REASONS` names its parts."""
        return (
            self.dropped_unlatched_source,
            self.dropped_blocked,
            self.dropped_transform,
            self.dropped_malformed,
            self.dropped_no_destination,
            self.dropped_send_error,
        )


@attrs.frozen
class StreamStatistics:
    a_to_b: DirectionStatistics
    b_to_a: DirectionStatistics
    last_activity: float


@attrs.frozen
class RelayStatistics:
    streams: int
    wakeups: int
    """Times the serving task woke up; ``packets / wakeups`` is the batch size."""
    packets: int
    """Packets forwarded by the streams open now (RTP, RTCP and T.38 UDPTL)."""
    dropped: int
    """Packets dropped by the streams open now."""


def _unconfigured(packet: Any, address: Address) -> int:
    raise OSError("media route not configured")


class _Route:
    """Where one kind of packet (RTP or RTCP) received on one socket goes. Hot-path state."""

    __slots__ = (
        "bytes",
        "destination",
        "dropped_no_destination",
        "dropped_send_error",
        "dropped_transform",
        "in_place",
        "min_length",
        "packets",
        "plain",
        "send",
        "sendto",
        "step_fused",
        "step_in",
        "step_out",
        "transform_errors",
        "transform_in",
        "transform_out",
    )

    def __init__(self, min_length: int) -> None:
        self.min_length = min_length
        self.sendto: Callable[[Any, Address], int] = _unconfigured
        self.destination: Address | None = None
        # The sending socket's ``send`` when that socket is connected to ``destination``.
        self.send: Callable[[Any], int] | None = None
        self.transform_in: Transform | None = None
        self.transform_out: Transform | None = None
        self.plain = True  # no transform and no tap: forward straight from the receive buffer
        # No tap and every transform works in the receive buffer: run step_in/step_out there.
        self.in_place = False
        self.step_in: BufferStep | None = None
        self.step_out: BufferStep | None = None
        self.step_fused = False  # step_in runs transform_in and transform_out (step_out None)
        self.packets = 0
        self.bytes = 0
        self.dropped_no_destination = 0
        self.dropped_transform = 0
        self.transform_errors = 0
        self.dropped_send_error = 0


# How long after its last packet before the change a latched source that a new SDP address
# replaced may not latch the socket again (module docstring): long enough for the new peer's
# first packet, which follows its SDP at once; short enough that a peer that kept its source
# across a re-INVITE is back soon.
PREVIOUS_SOURCE_QUARANTINE = 3.0

# How many other sources a callee's unanswered handshake socket remembers (_Endpoint.rivals),
# as the handshake task keeps at most 4 senders per port (handshakes.FORK_SOURCES).
_RIVAL_SOURCES = 4


class _Endpoint:
    """One bound media socket and everything the hot loop needs for what arrives on it."""

    __slots__ = (
        "backlog",
        "blocked",
        "connected",
        "direction",
        "dropped_blocked",
        "dropped_malformed",
        "dropped_unlatched_source",
        "fd",
        "hands_on",
        "handshake_per_source",
        "ice",
        "keyed",
        "last_received",
        "latched_at",
        "non_rtp",
        "only_from_source",
        "other_phones",
        "previous_source",
        "previous_until",
        "proven_peer",
        "proves_peer",
        "receive_errors",
        "recv_connected",
        "recvfrom_into",
        "rivals",
        "rtcp",
        "rtcp_octets",
        "rtp",
        "sdp_address_only",
        "sock",
        "source",
        "stream",
        "tap_errors",
        "taps",
        "udptl_bytes",
        "udptl_packets",
    )

    def __init__(
        self, sock: socket.socket, rtcp_octets: bytes, stream: MediaStream, now: float
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.recvfrom_into = sock.recvfrom_into
        self.recv_connected = sock.recv_into
        # The socket is connected to ``source`` (see udp_association). Once the datagrams it
        # held before the connect are read (into ``backlog``, relayed from there first), only
        # the source's arrive and the relay reads them with recv_into (only_from_source).
        self.connected = False
        self.only_from_source = False
        self.backlog: list[tuple[bytes, Address]] | None = None
        self.rtcp_octets = rtcp_octets  # second octet -> 1 if the packet is RTCP
        self.rtp = _Route(RTP_HEADER_LENGTH)
        self.rtcp = _Route(RTCP_MIN_LENGTH)
        self.stream: MediaStream | None = stream  # None once the stream is closed
        self.direction = _A_TO_B
        self.source: Address | None = None  # latched source address
        self.last_received = now
        self.latched_at = now  # when ``source`` latched (_latch): media since, if last_received
        # The source a new SDP address made it forget, kept out until ``previous_until``.
        self.previous_source: Address | None = None
        self.previous_until = 0.0
        # Other sources handed on while the callee's forks rang (_hand_on), at most
        # _RIVAL_SOURCES: the answer's address among them says the latched one lost.
        self.rivals: tuple[tuple[str, int], ...] = ()
        self.blocked = False
        self.taps: tuple[Tap, ...] = ()
        self.non_rtp: NonRtpHandler | None = None
        self.ice: IceHandler | None = None
        self.hands_on = False  # non_rtp or ice: datagrams that are not RTP/RTCP have a taker
        # What arrives here is unprotected with keys (MediaStream._rebuild): a handshake
        # socket's latch is connected from then on (_connect_keyed), not before when the latched
        # source is not the leg's SDP address (_latch).
        self.keyed = False
        # Before the leg's SDP address spoke, take no other source (a handshake socket of a
        # leg whose key exchange asks so: StreamSide.set_non_rtp_handler).
        self.sdp_address_only = False
        # Its key exchange tells its peer from other sources by what they send before keys
        # (the zrtp engine whose peer's SDP binds its Hello, RFC 6189 §8.1): ZRTP datagrams of
        # other sources go to it beside a latch nothing proved (_zrtp_beside_unproven_latch).
        self.proves_peer = False
        # Its key exchange runs a handshake per source before keys (StreamSide.
        # set_non_rtp_handler): DTLS datagrams from other sources go to it beside the latch.
        self.handshake_per_source = False
        # Its key exchange keeps other phones' handshakes for another phone's answer to our
        # offer, which may have been forked (StreamSide.set_non_rtp_handler's other_phones):
        # DTLS from other sources goes to it after keys too, and the socket is not connected.
        self.other_phones = False
        # The latched source was proved to be the peer by its key exchange before keys
        # (StreamSide.latch_peer): neither the SDP address takes it over nor other sources'
        # ZRTP is handed on beside it.
        self.proven_peer = False
        self.dropped_malformed = 0
        # Datagrams an opaque stream relayed (T.38 UDPTL, _relay_opaque): not RTP.
        self.udptl_packets = 0
        self.udptl_bytes = 0
        self.dropped_unlatched_source = 0
        self.dropped_blocked = 0
        self.receive_errors = 0
        self.tap_errors = 0


_DTLS_ALERT = 21  # RFC 6347 §4.1: ContentType alert
_DTLS_RECORD_HEADER = 13  # type (1), version (2), epoch (2), sequence number (6), length (2)


def _has_plaintext_alert(packet: bytes) -> bool:
    """Whether the datagram holds a DTLS alert record of epoch 0 (sent before any key: nothing
    authenticates it). Several records may share a datagram (RFC 6347 §4.1.1); read up to the
    first that does not fit."""
    offset = 0
    end = len(packet)
    while offset + _DTLS_RECORD_HEADER <= end:
        if packet[offset] == _DTLS_ALERT and packet[offset + 3] == 0 and packet[offset + 4] == 0:
            return True
        offset += _DTLS_RECORD_HEADER + (packet[offset + 11] << 8 | packet[offset + 12])
    return False


_ZRTP_COOKIE = b"ZRTP"  # RFC 6189 §5: the magic cookie, bytes 4..8 of every ZRTP packet
_ZRTP_ERROR = b"Error   "  # RFC 6189 §5.9: the message type block, bytes 16..24


def _is_zrtp(packet: bytes) -> bool:
    """Whether the datagram is a ZRTP packet (RFC 7983: first byte 16..19; RFC 6189 §5: the
    magic cookie); its CRC is the engine's to check."""
    return 16 <= packet[0] <= 19 and packet[4:8] == _ZRTP_COOKIE


def _is_zrtp_error(packet: bytes) -> bool:
    """Whether the datagram is a ZRTP Error (RFC 6189 §5.9): it carries no MAC (nothing
    authenticates it) and ends the receiver's exchange. Read where a DTLS alert is (RFC 7983:
    ZRTP's first byte is 16..19); its CRC is the engine's to check."""
    return _is_zrtp(packet) and packet[16:24] == _ZRTP_ERROR


def _from_sdp_address(ep: _Endpoint, source: Address) -> bool:
    """Whether ``source`` is the address the SDP of ``ep``'s leg gave for this socket's
    traffic (RTP, or RTCP: a=rtcp or the RTP port + 1, RFC 3605 §2.1)."""
    stream = ep.stream
    if stream is None:
        return False
    for side in (stream.a, stream.b):
        remote = side._remote_rtp
        if remote is None:
            continue
        if side._rtp is ep:
            return source[:2] == remote
        if side._rtcp is ep:
            rtcp = side._remote_rtcp
            if rtcp is None:
                rtcp = (remote[0], remote[1] + 1)
            return source[:2] == rtcp or (side._rtcp_mux and source[:2] == remote)
    return False


def _not_from_sdp_address(ep: _Endpoint, source: Address) -> bool:
    """Whether the SDP of ``ep``'s leg gave an address and ``source`` is not it. A leg
    without one (a late-offer caller before its ACK, on hold) has no address to prefer."""
    stream = ep.stream
    if stream is None:
        return False
    side = stream.a if ep is stream.a._rtp or ep is stream.a._rtcp else stream.b
    return side._remote_rtp is not None and not _from_sdp_address(ep, source)


def _unaddressed(ep: _Endpoint) -> bool:
    """Whether ``ep`` is the callee's (side B) and its leg has never had an SDP address: a
    callee our offer waits for, which may be any of several forks (RFC 3261 §16.7: parallel
    forking gives every branch our one offer, so the forks share this side's sockets) until an
    answer comes. Never side A: a caller without an address (a late offer, RFC 3261 §13.2.1,
    answered in its ACK) is one device, and the handshake task keeps sources apart for side B
    only (handshakes.py), so a stranger's datagram would reach the caller's engine."""
    stream = ep.stream
    if stream is None:
        return False
    side = stream.b
    if ep is not side._rtp and ep is not side._rtcp:
        return False
    return not side._addressed


def _takes_over(ep: _Endpoint, source: Address) -> bool:
    """Whether ``source``, the address the SDP of ``ep``'s leg gave, takes ``ep``'s latch from
    another source: a handshake socket (not ICE, whose checks select) latched but not connected
    before keys, on a leg whose SDP gave its address (a callee's forks are told apart at the
    answer, set_remote)."""
    return (
        ep.non_rtp is not None
        and not ep.keyed
        and not ep.connected
        and not ep.proven_peer
        and ep.ice is None
        and _from_sdp_address(ep, source)
        and not _unaddressed(ep)
    )


def _zrtp_beside_unproven_latch(ep: _Endpoint, packet: bytes, source: Address) -> bool:
    """Whether ``packet``, from ``source`` (not the latched one), is a ZRTP datagram that goes
    to the key exchange without latching (:meth:`MediaRelay._hand_on`): a source other than
    the SDP address holds the latch of this handshake socket before keys, not connected, and
    ``source`` is not the SDP address either (which takes the latch over, _takes_over). Not
    once the SDP address holds it (it took it over): the handshake task restarts the port's
    exchange whenever the SDP address speaks after another source's datagram was fed
    (handshakes.py), so a stranger's datagram handed on then would restart a DTLS server's
    association, or a ZRTP exchange without a readable a=zrtp-hash, at each of the peer's.
    Only where the socket's key exchange proves its peer (``proves_peer``: a ZRTP exchange
    whose peer's SDP binds its Hello, RFC 6189 §8.1): without that nothing tells the phone from
    a stranger, the latched source is as good a guess as any, and a racing stranger's Hello
    handed on would bind the exchange (before session 40, beside a NAT'd phone's latch)."""
    return (
        ep.proves_peer
        and ep.source is not None
        and _not_from_sdp_address(ep, ep.source)
        and not ep.keyed
        and not ep.connected
        and not ep.proven_peer
        and ep.ice is None
        and _is_zrtp(packet)
        and _not_from_sdp_address(ep, source)
        and not _unaddressed(ep)
    )


def _dtls_beside_unproven_latch(ep: _Endpoint, packet: bytes, source: Address) -> bool:
    """Whether ``packet``, from ``source`` (not the latched one), is a DTLS datagram (RFC 7983:
    first byte 20..63) that goes to a key exchange running a handshake per source
    (``handshake_per_source``, :meth:`MediaRelay._hand_on`) without latching: another source
    holds the latch of this handshake socket before keys, not connected and not proved, and
    ``source`` is not the SDP address (which takes the latch over, _takes_over). The exchange
    answers each source with its own handshake; the one whose certificate matches the peer's
    a=fingerprint takes the latch (:meth:`StreamSide.latch_peer`)."""
    return (
        ep.handshake_per_source
        and ep.source is not None
        and not ep.keyed
        and not ep.connected
        and not ep.proven_peer
        and ep.ice is None
        and 20 <= packet[0] <= 63
        and _not_from_sdp_address(ep, source)
        and not _unaddressed(ep)
    )


def _dtls_for_another_phone(ep: _Endpoint, packet: bytes) -> bool:
    """Whether ``packet``, from a source that is not the latched one, is a DTLS datagram (RFC
    7983: first byte 20..63) that goes to the callee's key exchange without latching, keys or
    not: it keeps other phones' handshakes for another phone's answer to our offer
    (``other_phones``, :meth:`StreamSide.set_non_rtp_handler`). A proxy downstream may have
    forked our offer (RFC 3261 §16.7): the phone that answers with its 200 after another's
    early media sends its ClientHello straight here, usually before its 200 reaches us, and
    dropped, its handshake waited for its resend (1 s, RFC 6347 §4.2.4.1). The engine keys
    nothing with it but under that phone's answer (its a=fingerprint, RFC 5763 §5)."""
    return ep.other_phones and ep.source is not None and 20 <= packet[0] <= 63


def _unlatch(ep: _Endpoint) -> None:
    """Forget the latched source; the socket takes datagrams from anyone again."""
    ep.source = None
    ep.proven_peer = False
    _disconnect(ep)


def _disconnect(ep: _Endpoint) -> None:
    """Undo the relay's connect, if any: the socket takes datagrams from anyone again."""
    ep.only_from_source = False
    if ep.connected:
        ep.connected = False
        try:
            dissolve(ep.sock)
        except OSError:
            # Not seen on Linux; the socket would keep refusing the new peer's media.
            log_exception(logger, "could not disconnect media socket %s", ep.sock.getsockname())


def _select(ep: _Endpoint, source: Address, now: float) -> None:
    """An ICE check selected ``source`` for ``ep``: this leg's media goes there now, and so do
    the key-exchange datagrams its side held until then (:meth:`StreamSide.send`)."""
    ep.source = source
    ep.last_received = now
    ep.previous_source = None
    stream = ep.stream
    if stream is not None:
        stream._rebuild()
        side = stream.a if ep is stream.a._rtp or ep is stream.a._rtcp else stream.b
        if side._held:
            side._send_held()


def _ignore_change() -> None:
    """The change callback of a closed stream's sides and controls."""


def _remote_address(family: int, address: tuple[str, int] | None) -> Address | None:
    """Check an address taken from SDP; the unspecified address (RFC 3264 §8.4 old-style hold,
    c=0.0.0.0) means "no destination". Host names are refused: no DNS lookups per packet."""
    if address is None:
        return None
    host, port = address
    try:
        ip = ip_facts(host)
    except ValueError:
        raise LocalMediaError(f"remote media host {host!r} is not an IP address") from None
    if not 0 < port < 65536:
        raise LocalMediaError(f"remote media port {port} is out of range")
    if (ip.version == 6) != (family == socket.AF_INET6):
        raise LocalMediaError(f"remote media address {host} is not of the relay's address family")
    if ip.unspecified:
        return None
    return (ip.text, port)


@attrs.define(eq=False)
class StreamSide:
    """The half of a stream facing one leg: the local port pair and what is known of the peer.

    The stream owns ``ports``: close the stream, never the pair directly.
    """

    ports: PortPair
    """The local pair advertised in this leg's SDP."""
    _family: int = attrs.field(repr=False)
    _rtp: _Endpoint = attrs.field(repr=False)
    _rtcp: _Endpoint = attrs.field(repr=False)
    _on_change: Callable[[], None] = attrs.field(repr=False)
    _remote_rtp: Address | None = None
    _remote_rtcp: Address | None = None
    _rtcp_mux: bool = False
    _addressed: bool = False
    """Whether this leg's SDP ever gave an address (:func:`_unaddressed`)."""
    _held: tuple[tuple[bool, bytes], ...] = ()
    """Key-exchange datagrams (on the RTCP port?, datagram) made for this ICE leg before a
    check selected its address; sent when one does (:meth:`send`). A tuple: mypyc compiles
    this class and takes no attrs factory for a list."""

    def set_remote(
        self,
        rtp: tuple[str, int] | None,
        *,
        rtcp: tuple[str, int] | None = None,
        rtcp_mux: bool = False,
    ) -> None:
        """Record this leg's media address from its SDP.

        ``rtp`` comes from c= and m= (None or 0.0.0.0: not known / on hold), ``rtcp`` from an
        ``a=rtcp`` attribute (RFC 3605; default: RTP port + 1), ``rtcp_mux`` is True when the
        offer/answer settled on rtcp-mux (RFC 5761 §5.1.1). Hosts must be IP literals of the
        relay's family. When the address changes the sockets forget their latched sources.
        """
        remote_rtp = _remote_address(self._family, rtp)
        remote_rtcp = _remote_address(self._family, rtcp)
        kept: list[tuple[_Endpoint, Address]] = []
        if remote_rtp != self._remote_rtp or remote_rtcp != self._remote_rtcp:
            # The peer's own addresses: its RTP one and its RTCP one, given by a=rtcp or else
            # implied at RTP port + 1 (RFC 3605 §2.1). A phone whose RTCP came before its SDP
            # (a callee's first RTCP, sent as its stream starts while it rings or with its 200:
            # baresip does) latched the RTCP socket from that implied address: it is the new
            # peer itself, not a previous one to keep out (its RTCP was refused for 3 s).
            implied_rtcp = remote_rtcp
            if implied_rtcp is None and remote_rtp is not None:
                implied_rtcp = (remote_rtp[0], remote_rtp[1] + 1)
            for ep in (self._rtp, self._rtcp):
                if ep.ice is not None:
                    continue  # ICE selects the source, not SDP (a check moves it)
                if (
                    remote_rtp is not None
                    and ep.source is not None
                    and ep.non_rtp is not None
                    and _unaddressed(ep)
                    and ep.source[:2]
                    == (remote_rtp if ep is self._rtp or rtcp_mux else implied_rtcp)
                ):
                    # A callee's first answer names the fork that latched this handshake socket
                    # unconnected while the forks rang (_hand_on): it stays latched, connected
                    # now. Unlatched, a losing fork's resend (RFC 6347 §4.2.4.1) or ringing
                    # media, sent before our CANCEL reached it, could latch and connect it first
                    # and the kernel would refuse the answering fork's handshake.
                    kept.append((ep, ep.source))
                    continue
                # A new peer (not "no destination", and not the latched source itself): the
                # old one may not take the socket back while it keeps sending. Each change
                # decides afresh: going back to an earlier peer frees it at once.
                ep.previous_source = None
                # The latched source as recvfrom gave it: on IPv6 (host, port, flowinfo,
                # scope_id), compared by its (host, port) with the SDP's.
                source = ep.source[:2] if ep.source is not None else None
                if remote_rtp is not None and source not in (None, remote_rtp, implied_rtcp):
                    heard = ep.last_received
                    ringing = ep.non_rtp is not None and _unaddressed(ep)
                    own = remote_rtp if ep is self._rtp or rtcp_mux else implied_rtcp
                    if not ringing or ep.last_received >= ep.latched_at:
                        # A previous peer, or a ringing fork that sent media since it latched
                        # (last_received): kept out for 3 s from its last media.
                        ep.previous_source = ep.source
                    if ringing and own in ep.rivals:
                        # A ringing fork that latched this handshake socket and lost to one
                        # that sent from the answer's address: its handshake datagrams never
                        # set last_received (only media does), and it resends until our
                        # CANCEL reaches it: kept out from the answer.
                        ep.previous_source = ep.source
                        relay = ep.stream._relay if ep.stream is not None else None
                        if relay is not None:
                            heard = max(heard, relay._clock())
                    # Else one that sent only handshake datagrams, with no sender at the
                    # answer's address (a callee behind a NAT): it may be the answering fork
                    # (or the lone callee) itself, and is not kept out, as the handshake task
                    # keeps none out then (handshakes.py); kept out, its resends were refused
                    # for 3 s and a losing fork's resend latched and connected the socket first.
                    ep.previous_until = heard + PREVIOUS_SOURCE_QUARANTINE
                if remote_rtp is not None:
                    ep.rivals = ()
                _unlatch(ep)
        self._remote_rtp = remote_rtp
        self._remote_rtcp = remote_rtcp
        self._addressed = self._addressed or remote_rtp is not None
        self._rtcp_mux = rtcp_mux
        if kept:
            stream = kept[0][0].stream
            relay = stream._relay if stream is not None else None
            if relay is not None and relay._relatch_after is None:
                for ep, source in kept:
                    relay._connect(ep, source)
        self._on_change()

    @property
    def rtcp_mux(self) -> bool:
        return self._rtcp_mux

    def set_non_rtp_handler(
        self,
        handler: NonRtpHandler | None,
        *,
        rtcp: bool = False,
        sdp_address_only: bool = False,
        proves_peer: bool = False,
        handshake_per_source: bool = False,
        other_phones: bool = False,
    ) -> None:
        """Hand datagrams that are not RTP/RTCP (RFC 7983: first byte outside 128..191, e.g.
        DTLS 20..63, ZRTP 16..19, STUN 0..3) arriving on this side's RTP socket (``rtcp``: its
        RTCP socket) to ``handler`` instead of dropping them as malformed (None: drop them
        again). They pass the same source check as RTP: the latched source, or
        (nothing latched yet) they latch it, since the handshake comes from the peer's media
        address (RFC 5764 §5.1.2). Until the socket is keyed, a source other than the leg's
        SDP address latches it without connecting it and the SDP address takes it over when it
        speaks (module docstring). With ``sdp_address_only`` no other source latches it before
        keys: their datagrams that are not RTP are handed on all the same, latching nothing,
        for the handshake task to refuse with a reason; their RTP is dropped. With
        ``proves_peer`` (the key exchange tells its peer from a stranger by what it sends: the
        ``zrtp`` engine whose peer's SDP binds its Hello, RFC 6189 §8.1) ZRTP datagrams from
        other sources are handed on, latching nothing, while a source other than the SDP
        address holds the latch before keys and nothing proved it (:meth:`latch_peer`);
        without it they are dropped there (``unlatched_source``), as RTP is. With
        ``handshake_per_source`` (the ``dtls`` engine: a handshake per source until one proved
        itself) DTLS datagrams from other sources than the latched one and the SDP address are
        handed on too before keys, latching nothing (:func:`_dtls_beside_unproven_latch`).
        With ``other_phones`` as well (the callee's side, whose ``dtls`` engine keeps other
        phones' handshakes for another phone's answer to our offer, which a proxy downstream
        may have forked, RFC 3261 §16.7) DTLS datagrams from other sources than the latched
        one are handed on after keys too, latching nothing, and the socket is not connected
        (the kernel would refuse them) until a handler without it is set
        (:func:`_dtls_for_another_phone`; docs/media_security.md "Forked callees").

        The RTCP socket has its own handshake when the leg does not use rtcp-mux: RFC 5764 §4.1
        keys SRTCP on that port from a DTLS association of its own."""
        ep = self._rtcp if rtcp else self._rtp
        ep.non_rtp = handler
        ep.sdp_address_only = sdp_address_only and handler is not None
        ep.proves_peer = proves_peer and handler is not None
        ep.handshake_per_source = handshake_per_source and handler is not None
        ep.hands_on = handler is not None or ep.ice is not None
        other_phones = other_phones and ep.handshake_per_source and ep.ice is None
        if other_phones != ep.other_phones:
            ep.other_phones = other_phones
            if other_phones:
                _disconnect(ep)
            self._on_change()  # no longer: keys connect the latch again (_connect_keyed)

    def set_ice_handler(self, handler: IceHandler | None, *, rtcp: bool = False) -> None:
        """Answer STUN connectivity checks on this side's RTP socket (``rtcp``: its RTCP socket)
        with ``handler`` (the leg does ICE; None: it does not, any more). From then on checks
        decide where this leg's media goes (module docstring): the socket forgets a source it
        latched before ICE (nobody proved the ICE password) and is not connected. Setting the
        same handler again changes nothing; a new one (ICE restart) keeps the source the old
        one selected until a check of the new one moves it (RFC 8445 §9)."""
        ep = self._rtcp if rtcp else self._rtp
        if handler is ep.ice:
            return
        if ep.ice is None or handler is None:
            _unlatch(ep)
            if handler is None:
                self._held = ()  # no ICE any more: the handshake's retransmissions go out
        else:
            _disconnect(ep)
        ep.ice = handler
        ep.hands_on = handler is not None or ep.non_rtp is not None
        self._on_change()

    def send(self, packet: bytes, *, rtcp: bool = False, copy_to_sdp_address: bool = True) -> bool:
        """Send ``packet`` (a key exchange's datagram) from this side's RTP socket to where this
        leg's RTP goes (:attr:`rtp_destination`); with ``rtcp`` from its RTCP socket to where its
        RTCP goes (:attr:`rtcp_destination`). False when there is no destination or the send
        failed. While another source holds the socket's latch before keys it goes to the leg's
        SDP address too (:meth:`_sdp_address_too`), unless ``copy_to_sdp_address`` is False: the
        datagram answers the latched source's (our DTLS server flight answering its
        ClientHello), and the peer at the SDP address would take it as the answer to its own.

        On an ICE leg before a check selected an address (RFC 8445 §12: nothing goes out
        before) the datagram is held, the last :data:`HELD_DATAGRAMS` of them, and sent when a
        check selects one (True). The DTLS client's ClientHello is made with the SDP answer,
        before the peer's first check: dropped, it would wait for its retransmission timer (1 s,
        RFC 6347 §4.2.4.1) and delay the call's media by as much."""
        if rtcp:
            destination, sock = self.rtcp_destination, self.ports.rtcp_socket
        else:
            destination, sock = self.rtp_destination, self.ports.rtp_socket
        if destination is None:
            if self._rtp.ice is None and self._rtcp.ice is None:
                return False
            self._held = (*self._held, (rtcp, packet))[-HELD_DATAGRAMS:]
            return True
        try:
            sock.sendto(packet, destination)
        except OSError:
            return False
        if not copy_to_sdp_address:
            return True
        also = self._sdp_address_too(rtcp and not self._rtcp_mux)
        if also is not None:
            with contextlib.suppress(OSError):
                sock.sendto(packet, also)
        return True

    def send_to(self, packet: bytes, destination: Address, *, rtcp: bool = False) -> bool:
        """Send ``packet`` (a key exchange's datagram for one source: a DTLS handshake per
        source, docs/media_security.md "Forged handshakes") from this side's RTP socket
        (``rtcp``: its RTCP socket) to ``destination``, a source whose datagrams it answers.
        Only before keys on a socket that is neither connected nor ICE; otherwise as
        :meth:`send` without the copy to the SDP address (where the socket's traffic goes:
        once keyed or connected that is the peer's, and an ICE leg sends only to the address
        a check selected, RFC 8445 §12). False when the send failed."""
        ep = self._rtcp if rtcp else self._rtp
        if (ep.keyed and not ep.other_phones) or ep.connected or ep.ice is not None:
            return self.send(packet, rtcp=rtcp, copy_to_sdp_address=False)
        try:
            ep.sock.sendto(packet, destination)
        except OSError:
            return False
        return True

    def latch_peer(self, source: Address, *, rtcp: bool = False, now: float) -> None:
        """The key exchange proved before keys that ``source`` is this leg's peer (the ``zrtp``
        engine: its Hello matched the peer's a=zrtp-hash, RFC 6189 §8.1): it takes this side's
        RTP socket's latch (``rtcp``: its RTCP socket's) from a source that held it without
        being connected (a stranger first at the port, docs/media_security.md "Forged
        handshakes"), or keeps it, and from then on neither the SDP address takes it over
        (:func:`_takes_over`: anyone can put that address on a datagram) nor other sources'
        ZRTP is handed on beside it. Not connected (keys connect it, as any latch before keys:
        :meth:`MediaStream._connect_keyed`). Nothing on a keyed, connected or ICE socket, one
        that hands nothing on, or one whose leg has no SDP address yet (the forks of a callee
        our offer waits for: handshakes.py keeps them apart)."""
        ep = self._rtcp if rtcp else self._rtp
        if ep.keyed or ep.connected or ep.ice is not None or ep.non_rtp is None or _unaddressed(ep):
            return
        if ep.source is None or ep.source[:2] != source[:2]:
            if len(source) == 2 and ep.sock.family == socket.AF_INET6:
                # As recvfrom gives it (Linux: flow info 0 unless asked for, no scope but for
                # a link-local address). The engines and the media workers' channel (since
                # protocol 3) pass the whole address, a link-local peer's scope id with it
                # (RFC 4007 §6): host and port alone come from a caller that has no more.
                source = (source[0], source[1], 0, 0)
            ep.source = source
            ep.latched_at = now
            if ep.stream is not None:
                ep.stream._rebuild()
        ep.proven_peer = True

    def _sdp_address_too(self, rtcp: bool) -> Address | None:
        """Where a key exchange's datagram goes as well: the SDP address of the socket
        (``rtcp``: the RTCP one), while a source other than it latched the socket before keys
        (_latch). That source may be the peer behind a NAT, or a stranger whose forged first
        datagram would otherwise draw our handshake away from the peer: a peer that waits for
        our ClientHello (a=setup:passive or actpass answered active, RFC 5763 §5) never spoke
        to take the socket over, and its handshake timed out. Only what speaks first is copied
        (:meth:`send`'s ``copy_to_sdp_address``): as DTLS server our flights answer the latched
        source's ClientHello, and a copy reaching the peer after its own ClientHello was taken
        as our answer to it, our right one after the restart ignored (both ends failed)."""
        ep = self._rtcp if rtcp else self._rtp
        if ep.keyed or ep.source is None or ep.ice is not None or ep.non_rtp is None:
            return None
        if self._remote_rtp is None or _from_sdp_address(ep, ep.source):
            return None
        if not rtcp:
            return self._remote_rtp
        if self._remote_rtcp is not None:
            return self._remote_rtcp
        return (self._remote_rtp[0], self._remote_rtp[1] + 1)  # RFC 3605 §2.1

    def _send_held(self) -> None:
        """A check selected an address: send the held datagrams (still none: held again)."""
        held, self._held = self._held, ()
        for rtcp, packet in held:
            self.send(packet, rtcp=rtcp)

    @property
    def rtp_source(self) -> Address | None:
        """The source latched on the RTP socket, if any."""
        return self._rtp.source

    @property
    def rtcp_source(self) -> Address | None:
        """The source latched on the RTCP socket, if any."""
        return self._rtcp.source

    @property
    def rtp_destination(self) -> Address | None:
        """Where RTP for this leg goes: the latched source, else the SDP address. On an ICE
        leg only the source a check selected: nothing goes anywhere before (RFC 8445 §12)."""
        if self._rtp.ice is not None:
            return self._rtp.source
        return self._rtp.source or self._remote_rtp

    @property
    def rtcp_destination(self) -> Address | None:
        """Where RTCP for this leg goes (RFC 5761 §5.1.3: the RTP address when muxing)."""
        if self._rtcp_mux:
            return self.rtp_destination
        if self._rtcp.source is not None or self._rtcp.ice is not None:
            return self._rtcp.source
        if self._remote_rtcp is not None:
            return self._remote_rtcp
        if self._remote_rtp is not None:
            return (self._remote_rtp[0], self._remote_rtp[1] + 1)  # RFC 3605 §2.1
        return None


class DirectionControl:
    """Settings and counters of one direction of a stream (packets arriving on one side).

    A plain class, not attrs: mypyc compiles the relay (see "Compiled" above) and supports
    property setters only in classes it compiles natively."""

    def __init__(
        self,
        direction: Direction,
        endpoints: tuple[_Endpoint, _Endpoint],
        on_change: Callable[[], None],
    ) -> None:
        self.direction = direction
        self._endpoints = endpoints
        self._on_change = on_change
        self._blocked = False
        self._transforms = NO_TRANSFORMS
        self._taps: tuple[Tap, ...] = ()
        self._rtcp_observer: RtcpObserver | None = None
        self._payload_types: dict[int, int] = {}
        self._payload_type_table: bytes | None = None  # second octet -> rewritten; None: none
        self._red_payload_types: tuple[int, ...] = ()
        self._red_malformed = _Count()  # RED packets dropped unparsed; kept across rebuilds
        self._dtmf: DtmfInterworking | None = None
        self._dtmf_taken_before = 0  # event packets taken by earlier interworkings
        # The counters of earlier interworkings of this direction (DirectionStatistics'
        # dtmf_*), so that the call record has the stream's life whatever the changes.
        self._dtmf_injected_before = 0
        self._dtmf_passed_before = 0
        self._dtmf_ended_at_change = 0  # end packets sent for events a change ended
        self._dtmf_end_copies_dropped = 0  # their delayed copies the new plan could not carry
        # The end copies of an injected event a change ended that are still to go, spaced by
        # the update interval (RFC 4733 §2.5.1.4): (the ended interworking, the final payload,
        # the event's payload type, its timestamp, the SSRC it went with, copies left); None:
        # none.
        self._end_copies: tuple[DtmfInterworking, bytes, int, int, int, int] | None = None
        # The numbering an interworking that ended left (RFC 3550 §5.1), kept while it moves
        # sequence numbers; None: none, or it moved none.
        self._dtmf_numbering: DtmfInterworking | None = None
        # (payload type, clock rate) of the telephone-event the receiver takes in the plan in
        # force, (-1, 0): none; None: not told (:attr:`receiver_telephone_event`).
        self._receiver_telephone_event: tuple[int, int] | None = None
        self._transcoding: G711Transcoding | None = None
        self._transcoded = _Count()  # packets transcoded; kept across rebuilds
        # The tone played to this direction's receiver in place of what its sender sends
        # (MediaStream.play_tone); None: none.
        self._tone: TonePlayer | None = None

    def __repr__(self) -> str:
        return (
            f"DirectionControl(direction={self.direction!r}, blocked={self._blocked!r}, "
            f"transforms={self._transforms!r}, taps={self._taps!r})"
        )

    @property
    def blocked(self) -> bool:
        """When True nothing is forwarded in this direction (drops are counted as
        ``dropped_blocked``). Sources are still latched, so the other direction knows where to
        send."""
        return self._blocked

    @blocked.setter
    def blocked(self, value: bool) -> None:
        self._blocked = value
        self._on_change()

    @property
    def transforms(self) -> Transforms:
        return self._transforms

    @transforms.setter
    def transforms(self, value: Transforms) -> None:
        self._transforms = value
        self._on_change()

    @property
    def taps(self) -> tuple[Tap, ...]:
        return self._taps

    @property
    def rtcp_observer(self) -> RtcpObserver | None:
        """Gets every RTCP datagram of this direction, plain (see :data:`RtcpObserver`); None:
        nobody reads RTCP. Only the RTCP routes change: RTP costs the same either way."""
        return self._rtcp_observer

    @rtcp_observer.setter
    def rtcp_observer(self, value: RtcpObserver | None) -> None:
        self._rtcp_observer = value
        self._on_change()

    @property
    def payload_types(self) -> dict[int, int]:
        """RTP payload types this direction renumbers: as the sending leg numbers a codec -> as
        the receiving leg does (the module docstring's "Payload type numbers"); empty: none,
        packets keep theirs. A copy: set a new mapping to change it."""
        return dict(self._payload_types)

    @payload_types.setter
    def payload_types(self, value: dict[int, int]) -> None:
        self._payload_type_table = payload_type_table(value)
        self._payload_types = dict(value)
        self._on_change()

    @property
    def red_payload_types(self) -> tuple[int, ...]:
        """The sending leg's RFC 2198 RED payload types (the module docstring's "Payload type
        numbers"): where this direction also renumbers, the payload type of each block inside
        such a packet goes through the same table. Empty: none; a direction without a
        renumbering ignores them and pays nothing."""
        return self._red_payload_types

    @red_payload_types.setter
    def red_payload_types(self, value: tuple[int, ...]) -> None:
        red_octets(value)  # out of range: LocalMediaError before anything changes
        self._red_payload_types = tuple(value)
        self._on_change()

    @property
    def dtmf(self) -> DtmfInterworking | None:
        """DTMF interworking on this direction (:class:`DtmfInterworking`; None: none, the
        direction is built exactly as without it and pays nothing per packet)."""
        return self._dtmf

    @dtmf.setter
    def dtmf(self, value: DtmfInterworking | None) -> None:
        old = self._dtmf
        if old is value:
            return
        carried = self._dtmf_numbering
        if old is not None:
            self._dtmf_taken_before += old.taken
            self._dtmf_passed_before += old.passed
            self._end_injected_event(old)
            self._dtmf_injected_before += old.injected
            carried = old
        if self._dtmf_numbering is not None:  # end copies it sent after an interworking ended
            self._dtmf_injected_before += self._dtmf_numbering.injected
        self._dtmf_numbering = None
        if value is not None and carried is not None:
            value.carry_on_from(carried)  # the stream's numbering goes on where it was
        elif value is None and carried is not None and carried.seq_offset:
            # The packets taken or injected moved the receiver's sequence numbers: going back
            # would number the next packets as ones it already had (an SRTP receiver drops
            # them as replays, RFC 3711 §3.3.2; RFC 3550 §5.1 numbering goes on by one). The
            # same SSRC keeps the offset for the stream's life: renumbering only.
            numbering = DtmfInterworking()
            numbering.carry_on_from(carried)
            self._dtmf_numbering = numbering
        self._dtmf = value
        self._on_change()

    @property
    def receiver_telephone_event(self) -> tuple[int, int] | None:
        """(payload type, clock rate) of the telephone-event (RFC 4733) the receiving leg takes
        in the SDP in force, (-1, 0) when it takes none; None: not told. Only the delayed end
        copies of an event a change ended read it (:meth:`_send_end_copy`): the plan that
        ended the event may have ended the interworking too, or moved the line to T.38, and
        given the old number another codec (RFC 3264 §8.3.2). The session tells the
        directions of the lines that had DTMF interworking; no packet pays for it."""
        return self._receiver_telephone_event

    @receiver_telephone_event.setter
    def receiver_telephone_event(self, value: tuple[int, int] | None) -> None:
        self._receiver_telephone_event = checked_receiver_event(value)

    def _end_injected_event(self, state: DtmfInterworking) -> None:
        """End the event ``state`` was injecting, if its end has not gone (RFC 4733 §2.5.1.4:
        the final packet, with the E bit and the duration reached, three times, the event's
        timestamp), before the interworking is replaced or removed: the receiver would
        otherwise play the digit until its own timeout. The first copy goes at once; §2.5.1.4
        sends the other two "at the interval used by the source for updates" (50 ms,
        :data:`UPDATE_INTERVAL`), so that a burst of loss does not take all three: the
        relay's task sends them then (:func:`_send_end_copies`), numbered on in the stream
        the next interworking (or the numbering alone) continues. A relay that is not
        serving sends them at once."""
        open_event = state.open_event
        if not open_event:
            return
        state.open_event = b""
        endpoint = self._endpoints[0]
        stream = endpoint.stream
        relay = None if stream is None else stream._relay
        if stream is None or relay is None or self._blocked:
            return
        if self._end_copies is not None:
            self._flush_end_copies()  # an earlier change's: they go before this event's end
        if stream in relay._stale:  # settings changed since the last poll round: apply them now
            relay._stale.discard(stream)
            stream._rebuild()
        elapsed = max(0.0, relay._clock() - state.event_started_at)
        duration = max((open_event[2] << 8) | open_event[3], int(elapsed * state.inject_clock_rate))
        # The event's payload (§2.3) with the E bit and the duration reached (at most 0xFFFF).
        duration = min(duration, 0xFFFF)
        payload = bytes((open_event[0], open_event[1] | 0x80, duration >> 8, duration & 0xFF))
        if not _send_event(state, endpoint.rtp, payload, marker=False):
            return
        state.ended_at_change += 1
        self._dtmf_ended_at_change += 1
        copies = END_PACKETS - 1
        nursery = relay._nursery
        if nursery is None:
            for _ in range(copies):
                if not _send_event(state, endpoint.rtp, payload, marker=False):
                    return
                state.ended_at_change += 1
                self._dtmf_ended_at_change += 1
            return
        self._end_copies = (
            state,
            payload,
            state.inject_payload_type,
            state.event_timestamp,
            state.last_ssrc,
            copies,
        )
        nursery.start_soon(_send_end_copies, self, state)

    def _send_end_copy(self) -> bool:
        """Send the next end copy of :attr:`_end_copies` (see :meth:`_end_injected_event`)
        through the direction's numbering now; False when none is left or it cannot go (the
        stream closed, blocked, no destination, another source's media relayed since the
        first): the rest are dropped."""
        pending = self._end_copies
        if pending is None:
            return False
        ended, payload, payload_type, timestamp, ssrc, left = pending
        self._end_copies = None
        endpoint = self._endpoints[0]
        stream = endpoint.stream
        relay = None if stream is None else stream._relay
        if stream is None or relay is None or self._blocked:
            return False
        numbering = self._dtmf if self._dtmf is not None else self._dtmf_numbering
        if numbering is None:
            # The interworking ended without moving the numbers: the copies move them now.
            numbering = DtmfInterworking()
            numbering.carry_on_from(ended)
            self._dtmf_numbering = numbering
            self._on_change()
        if numbering.last_ssrc != ssrc:
            # Another source's media came since the first copy (a transfer's new party, RFC
            # 3550 §8): sent now they would carry its SSRC and numbers with this event's
            # timestamp, an end of an event that source never began, which a receiver may
            # play as a digit of its own. The first copy went with the event's source.
            return False
        # A re-offer or re-answer may map numbers anew (RFC 3264 §8.3.2), end the interworking
        # or move the line to T.38: the old number may now be another codec's, or nothing.
        # The copies take the receiver's telephone-event number in force (as the session told
        # it; else the one an interworking in force injects with); when the receiver has no
        # telephone-event any more, or it has another clock rate (the event's timestamp and
        # duration count the old one's units, RFC 4733 §2.3, §2.5.1.4: they would end another
        # event, or none), the copies are dropped, counted. The first copy went at the
        # change, under the number then in force. Not told and no interworking in force: the
        # event's own number (a relay whose owner does not say).
        receiver = self._receiver_telephone_event
        current = self._dtmf
        if receiver is None and current is not None and current is not ended:
            receiver = (current.inject_payload_type, current.inject_clock_rate)
        if receiver is not None:
            if receiver[0] < 0 or receiver[1] != ended.inject_clock_rate:
                self._dtmf_end_copies_dropped += left
                return False
            payload_type = receiver[0]
        if stream in relay._stale:  # settings changed since the last poll round: apply them now
            relay._stale.discard(stream)
            stream._rebuild()
        if not _send_event(
            numbering,
            endpoint.rtp,
            payload,
            marker=False,
            payload_type=payload_type,
            timestamp=timestamp,
        ):
            return False
        ended.ended_at_change += 1
        self._dtmf_ended_at_change += 1
        if left > 1:
            self._end_copies = (ended, payload, payload_type, timestamp, ssrc, left - 1)
        return True

    def _flush_end_copies(self) -> None:
        """Send the end copies still to go at once: a new event begins in this direction,
        which must not come between an older event's end packets."""
        while self._send_end_copy():
            pass

    def dtmf_counts(self) -> tuple[int, int, int, int]:
        """Event packets (taken, injected, ended at a change, relayed on at a change) of every
        interworking this direction had (:class:`DtmfInterworking`), for the call record."""
        dtmf = self._dtmf
        taken = self._dtmf_taken_before + (dtmf.taken if dtmf is not None else 0)
        injected = self._dtmf_injected_before + (dtmf.injected if dtmf is not None else 0)
        numbering = self._dtmf_numbering
        if numbering is not None:
            injected += numbering.injected  # end copies sent after the interworking ended
        passed = self._dtmf_passed_before + (dtmf.passed if dtmf is not None else 0)
        return taken, injected, self._dtmf_ended_at_change, passed

    @property
    def transcoding(self) -> G711Transcoding | None:
        """G.711 A-law <-> mu-law transcoding on this direction (the module docstring's
        "G.711 transcoding"; None: none, the direction is built exactly as without it and pays
        nothing per packet)."""
        return self._transcoding

    @transcoding.setter
    def transcoding(self, value: G711Transcoding | None) -> None:
        if value == self._transcoding:
            return
        self._transcoding = value
        self._on_change()

    def add_tap(self, tap: Tap) -> None:
        """Start calling ``tap`` with every packet of this direction (see :data:`Tap`)."""
        self._taps = (*self._taps, tap)
        self._on_change()

    def remove_tap(self, tap: Tap) -> None:
        """Stop calling ``tap``; removing a tap that is not attached is harmless."""
        self._taps = tuple(t for t in self._taps if t is not tap)
        self._on_change()

    def totals(self) -> tuple[int, int, int]:
        """``statistics()``'s ``packets``, ``rtp_bytes + rtcp_bytes`` and ``dropped``, without
        building the statistics: the media session's summary and its close read only these,
        three times per call (a property test holds them equal)."""
        rtp_ep, rtcp_ep = self._endpoints
        packets = octets = dropped = 0
        for route in (rtp_ep.rtp, rtp_ep.rtcp, rtcp_ep.rtp, rtcp_ep.rtcp):
            packets += route.packets
            octets += route.bytes
            dropped += route.dropped_transform + route.dropped_send_error
            dropped += route.dropped_no_destination
        for endpoint in (rtp_ep, rtcp_ep):
            dropped += endpoint.dropped_unlatched_source + endpoint.dropped_blocked
            dropped += endpoint.dropped_malformed
        if self._dtmf is not None or self._dtmf_taken_before:
            # Event packets taken for SIP INFO are no loss (as in statistics()). RED packets
            # that do not parse move from dropped_transform to dropped_malformed: no change.
            dropped -= self._dtmf_taken_before + (self._dtmf.taken if self._dtmf else 0)
        return packets, octets, dropped

    def dropped_by_reason(self) -> tuple[int, int, int, int, int, int]:
        """``statistics().dropped_by_reason`` (see :data:`DROP_REASONS`) without building the
        statistics: the media session's summary reads it with :meth:`totals`, for the call
        record and the metrics. Read from the counters the drops already keep: nothing is
        added to the per-packet path (a property test holds it equal to the statistics)."""
        rtp_ep, rtcp_ep = self._endpoints
        routes = (rtp_ep.rtp, rtp_ep.rtcp, rtcp_ep.rtp, rtcp_ep.rtcp)
        transform = no_destination = send_failed = 0
        for route in routes:
            transform += route.dropped_transform
            no_destination += route.dropped_no_destination
            send_failed += route.dropped_send_error
        red_malformed = self._red_malformed.value
        transform -= red_malformed
        if self._dtmf is not None or self._dtmf_taken_before:
            # Event packets taken for SIP INFO are no loss (as in statistics()).
            transform -= self._dtmf_taken_before + (self._dtmf.taken if self._dtmf else 0)
        return (
            rtp_ep.dropped_unlatched_source + rtcp_ep.dropped_unlatched_source,
            rtp_ep.dropped_blocked + rtcp_ep.dropped_blocked,
            transform,
            rtp_ep.dropped_malformed + rtcp_ep.dropped_malformed + red_malformed,
            no_destination,
            send_failed,
        )

    def statistics(self) -> DirectionStatistics:
        # The direction's two sockets (RTP, RTCP), each with an RTP and an RTCP route. Added
        # up in plain statements: every call's record reads these several times.
        rtp_ep, rtcp_ep = self._endpoints
        routes = (rtp_ep.rtp, rtp_ep.rtcp, rtcp_ep.rtp, rtcp_ep.rtcp)
        dropped_transform = dropped_send_error = dropped_no_destination = transform_errors = 0
        for route in routes:
            dropped_transform += route.dropped_transform
            dropped_send_error += route.dropped_send_error
            dropped_no_destination += route.dropped_no_destination
            transform_errors += route.transform_errors
        taken, injected, ended_at_change, passed = self.dtmf_counts()
        # Event packets taken for SIP INFO are no loss: they left as INFO.
        dropped_transform -= taken
        # RED packets whose block headers do not parse: malformed, not the transform's loss.
        red_malformed = self._red_malformed.value
        dropped_transform -= red_malformed
        return DirectionStatistics(
            rtp_packets=rtp_ep.rtp.packets + rtcp_ep.rtp.packets,
            rtp_bytes=rtp_ep.rtp.bytes + rtcp_ep.rtp.bytes,
            rtcp_packets=rtp_ep.rtcp.packets + rtcp_ep.rtcp.packets,
            rtcp_bytes=rtp_ep.rtcp.bytes + rtcp_ep.rtcp.bytes,
            dropped_unlatched_source=(
                rtp_ep.dropped_unlatched_source + rtcp_ep.dropped_unlatched_source
            ),
            dropped_blocked=rtp_ep.dropped_blocked + rtcp_ep.dropped_blocked,
            dropped_transform=dropped_transform,
            dropped_malformed=(
                rtp_ep.dropped_malformed + rtcp_ep.dropped_malformed + red_malformed
            ),
            dropped_send_error=dropped_send_error,
            dropped_no_destination=dropped_no_destination,
            transform_errors=transform_errors,
            tap_errors=rtp_ep.tap_errors + rtcp_ep.tap_errors,
            receive_errors=rtp_ep.receive_errors + rtcp_ep.receive_errors,
            udptl_packets=rtp_ep.udptl_packets,  # (only the RTP socket relays UDPTL)
            udptl_bytes=rtp_ep.udptl_bytes,
            transcoded_packets=self._transcoded.value,
            dtmf_taken=taken,
            dtmf_injected=injected,
            dtmf_ended_at_change=ended_at_change,
            dtmf_passed=passed,
            dtmf_end_copies_dropped=self._dtmf_end_copies_dropped,
        )


@attrs.define(eq=False, init=False)
class MediaStream:
    """One media stream (one m= line) of a call, relayed between leg A (``a``) and leg B (``b``).

    Made by :meth:`MediaRelay.open_stream`. Close it, or use it as a context manager, to stop
    relaying and release both port pairs.
    """

    a: StreamSide
    b: StreamSide
    a_to_b: DirectionControl
    b_to_a: DirectionControl
    created: float
    _relay: MediaRelay | None = attrs.field(repr=False)
    _opaque: bool = False

    def __init__(self, relay: MediaRelay, a_ports: PortPair, b_ports: PortPair, now: float) -> None:
        # The allocator's, which bound these sockets: the socket's own ``family`` property
        # converts to AddressFamily through the enum machinery on every read.
        family = relay.allocator.family
        sides = []
        for ports in (a_ports, b_ports):
            rtp = _Endpoint(ports.rtp_socket, _NEVER_RTCP, self, now)
            rtcp = _Endpoint(ports.rtcp_socket, _ALWAYS_RTCP, self, now)
            sides.append(StreamSide(ports, family, rtp, rtcp, self._changed))
        self.a, self.b = sides
        self.a_to_b = DirectionControl(_A_TO_B, (self.a._rtp, self.a._rtcp), self._changed)
        self.b_to_a = DirectionControl(_B_TO_A, (self.b._rtp, self.b._rtcp), self._changed)
        self.created = now
        self._relay = relay
        self._opaque = False
        # The hot-path state is built by the relay's next round, before it reads a packet
        # (_changed), as after any change: a call's set-up changes a new stream at once (the
        # peers' addresses, then the keys), so state built here was built again before the
        # first packet, and for nothing when the call ends before any media.
        self._changed()

    @property
    def opaque(self) -> bool:
        """Whether the stream relays datagrams as they are (T.38 UDPTL), not RTP/RTCP."""
        return self._opaque

    def set_opaque(self, opaque: bool) -> None:
        """Relay what arrives on each side's RTP socket as opaque datagrams (``True``: T.38 fax
        over UDPTL, ITU-T T.38 Annex D), or as RTP/RTCP again (``False``: a re-INVITE back to
        audio). Ports, remote addresses and latched sources stay. An opaque stream never runs
        transforms (UDPTL is never encrypted by us) nor non-RTP handlers, and relays nothing on
        the RTCP sockets. Its datagrams count as ``udptl_packets``/``udptl_bytes`` in
        :meth:`DirectionControl.statistics`, never as RTP."""
        relay = self._relay
        if relay is None or opaque == self._opaque:
            return
        self._opaque = opaque
        relay._set_opaque(self, opaque)
        self._changed()

    @property
    def closed(self) -> bool:
        return self._relay is None

    @property
    def last_activity(self) -> float:
        """When a packet last arrived from either leg (or when the stream was opened)."""
        return max(ep.last_received for ep in self._all_endpoints())

    def statistics(self) -> StreamStatistics:
        return StreamStatistics(
            a_to_b=self.a_to_b.statistics(),
            b_to_a=self.b_to_a.statistics(),
            last_activity=self.last_activity,
        )

    def close(self, on_final_counters: Callable[[], None] | None = None) -> None:
        """Stop relaying and release both port pairs. Closing twice is harmless. The counters
        are final here: ``on_final_counters`` (for a media worker's streams, relay_api) is
        never called."""
        relay, self._relay = self._relay, None
        if relay is None:
            return
        try:
            relay._forget(self)
        finally:
            self.a.ports.close()
            self.b.ports.close()
            self._unlink()

    def _unlink(self) -> None:
        """Drop the references back to this stream (its sockets' endpoints, the sides' and
        controls' change callbacks). They make reference cycles, which only the cyclic
        garbage collector frees: ~40 objects and four sockets per call, walked by every
        collection until then. A closed stream ignores changes either way.

        Its sockets' taps too: a tap removed just before the close (CallTaps.close, at the
        call's end) is still in the endpoints, whose rebuild never came, and a tap is a
        closure over the call's taps, which hold the media session, which holds this."""
        for ep in self._all_endpoints():
            ep.stream = None
            ep.taps = ()
        for part in (self.a, self.b, self.a_to_b, self.b_to_a):
            part._on_change = _ignore_change

    def __enter__(self) -> MediaStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send_telephone_event(
        self, direction: str, payload: bytes, *, marker: bool, start: bool
    ) -> bool:
        """Send one RFC 4733 event packet (``payload``: :func:`gateway.core.media.dtmf.
        event_payload`) in ``direction`` (``"a_to_b"``/``"b_to_a"``), which must have a
        :class:`DtmfInterworking` that injects. ``start``: the first packet of an event, which
        takes its timestamp: the last relayed packet's, advanced by the time since it arrived
        (RFC 4733 §2.5.1.2: the event starts now, on the audio's clock). The packet continues
        the sequence the receiver hears (later relayed packets move up by one) and leaves
        through the direction's outbound transform (SRTP protect with the receiving leg's
        keys) from the relay's socket. False when it cannot go: no injection, blocked (no keys
        yet), no destination, a failure, or a later packet of an event this interworking did
        not start (it replaced the one that did, which ended the event: see
        :attr:`DirectionControl.dtmf`)."""
        relay = self._relay
        control = self.a_to_b if direction == "a_to_b" else self.b_to_a
        state = control._dtmf
        if relay is None or state is None or state.inject_payload_type < 0:
            return False
        if not start and state.event_started_at < 0:
            return False
        if self in relay._stale:  # settings changed since the last poll round: apply them now
            relay._stale.discard(self)
            self._rebuild()
        source = self.a if direction == "a_to_b" else self.b
        if control.blocked:
            return False
        if start:
            if control._end_copies is not None:
                control._flush_end_copies()  # an older event's end goes before this one
            now = relay._clock()
            timestamp = state.last_timestamp
            if state.last_at >= 0:
                timestamp += int(max(0.0, now - state.last_at) * state.inject_clock_rate)
            state.event_timestamp = timestamp & 0xFFFFFFFF
            state.event_started_at = now
        if not _send_event(state, source._rtp.rtp, payload, marker=marker):
            return False
        # The event stays open until a packet with the E bit went (§2.5.1.4).
        state.open_event = b"" if len(payload) < 4 or payload[1] & 0x80 else payload
        return True

    def play_tone(self, direction: str, tone: Tone | None) -> bool:
        """Play ``tone`` (:mod:`gateway.core.media.tones`) to the leg that ``direction``
        (``"a_to_b"``/``"b_to_a"``) sends to, in place of what the other leg sends that way:
        its RTP and RTCP are dropped meanwhile (counted as ``dropped_blocked``), and the
        tone's packets, an RTP stream of their own (RFC 3550 §8: a new random SSRC, sequence
        number and timestamp), leave every 20 ms through the direction's outbound transform
        (SRTP protect with the receiving leg's keys) from the relay's socket, to where relayed
        packets would go. None stops it, and the leg's packets are relayed again. Playing
        another tone replaces the first. False when it cannot play: the stream is closed or
        relays T.38, the relay is not serving, or the tone's codec is none this process can
        play (:func:`gateway.core.media.tones.codec_available`: its library failed at the
        start, in a media worker told to play it by the SIP process, which did not try it).
        While the direction is blocked for want of keys, the tone's time passes and nothing
        goes."""
        control = self.a_to_b if direction == "a_to_b" else self.b_to_a
        if tone is None:
            if control._tone is not None:
                control._tone = None
                self._changed()
            return True
        relay = self._relay
        if relay is None or self._opaque or relay._nursery is None:
            return False
        if not codec_available(tone.codec):
            return False
        player = TonePlayer(
            tone,
            ssrc=secrets.randbits(32),
            sequence=secrets.randbits(16),
            timestamp=secrets.randbits(32),
            now=relay._clock(),
        )
        control._tone = player
        self._changed()
        relay._nursery.start_soon(_play_tone, self, control, player)
        return True

    def playing_tone(self, direction: str) -> TonePlayer | None:
        """The tone ``direction``'s receiver hears (:meth:`play_tone`), or None."""
        control = self.a_to_b if direction == "a_to_b" else self.b_to_a
        return control._tone

    def _all_endpoints(self) -> tuple[_Endpoint, ...]:
        return (self.a._rtp, self.a._rtcp, self.b._rtp, self.b._rtcp)

    def _changed(self) -> None:
        """A side or control changed (SDP, block, transforms, taps): the relay rebuilds this
        stream's hot-path state before it next reads a packet. A call makes several changes in
        a row (keys: transforms and block flags of both directions); they cost one rebuild."""
        relay = self._relay
        if relay is not None:
            relay._stale.add(self)

    def _rebuild(self) -> None:
        """Recompute the hot-path state of all four sockets from the sides and controls."""
        self._connect_keyed()
        for src, dst, control in ((self.a, self.b, self.a_to_b), (self.b, self.a, self.b_to_a)):
            rtcp_out = dst._rtp if dst.rtcp_mux else dst._rtcp  # RFC 5761 §5.1.3
            transforms = control.transforms
            buffer = None if self._relay is None else self._relay._buffer
            for ep in (src._rtp, src._rtcp):
                ep.direction = control.direction
                # A tone plays in place of the sender's packets (play_tone): dropped, counted
                # as blocked, the hot path unchanged.
                ep.blocked = control._blocked or control._tone is not None
                ep.taps = control.taps
                if self._opaque:
                    # T.38 UDPTL: one port, no transforms; the RTCP socket relays nothing.
                    rtp_destination = dst.rtp_destination if ep is src._rtp else None
                    _configure(ep.rtp, dst._rtp, rtp_destination, None, None, ep.taps, buffer)
                    _configure(ep.rtcp, rtcp_out, None, None, None, ep.taps, buffer)
                    continue
                rtp_in, rtp_out = transforms.rtp_in, transforms.rtp_out
                dtmf = control._dtmf
                if dtmf is None:
                    dtmf = control._dtmf_numbering  # an ended interworking's, renumbering only
                if dtmf is not None and ep is src._rtp and self._relay is not None:
                    # Innermost on arrival (after SRTP unprotect, before any renumbering): the
                    # sender's own numbers. Injected events are protected with rtp_out alone.
                    dtmf.protect = rtp_out
                    if dtmf.red:
                        # Events may come inside RED (RFC 4733 §2.5.1.5): its own transform,
                        # so that a direction without RED runs the plain one.
                        rtp_in = _DtmfInRed(dtmf, rtp_in, self._relay._clock)
                    else:
                        rtp_in = _DtmfIn(dtmf, rtp_in, self._relay._clock)
                transcoding = control._transcoding
                if transcoding is not None and control.direction is _B_TO_A:
                    # On the plain packet in the sender's numbers (after SRTP unprotect and
                    # DTMF, before renumbering), so taps see leg A's law both ways.
                    rtp_in = _Transcoded(transcoding, control._transcoded, rtp_in, inbound=True)
                table = control._payload_type_table
                if table is not None and control._red_payload_types:
                    # RED's blocks carry payload types of their own (RFC 2198 §3): a transform
                    # of its own, so that a direction without RED runs the plain one below.
                    red = red_octets(control._red_payload_types)
                    count = control._red_malformed
                    if control.direction is _A_TO_B:
                        rtp_out = _RenumberedRed(table, red, count, rtp_out, inbound=False)
                    else:
                        rtp_in = _RenumberedRed(table, red, count, rtp_in, inbound=True)
                elif table is not None:
                    # Renumbered on the plain packet, where taps see leg A's numbers in both
                    # directions: A->B before the rewrite, B->A after it.
                    if control.direction is _A_TO_B:
                        rtp_out = _Renumbered(table, rtp_out, inbound=False)
                    else:
                        rtp_in = _Renumbered(table, rtp_in, inbound=True)
                if transcoding is not None and control.direction is _A_TO_B:
                    # Outermost on the way out: runs first, before renumbering and protect.
                    rtp_out = _Transcoded(transcoding, control._transcoded, rtp_out, inbound=False)
                _configure(ep.rtp, dst._rtp, dst.rtp_destination, rtp_in, rtp_out, ep.taps, buffer)
                rtcp_in = transforms.rtcp_in
                if control.rtcp_observer is not None:
                    # Reading RTCP makes its route take the bytes path (no in-place SRTCP):
                    # one copy per RTCP datagram, about one every five seconds per stream.
                    rtcp_in = _observed(rtcp_in, control.rtcp_observer)
                _configure(
                    ep.rtcp,
                    rtcp_out,
                    dst.rtcp_destination,
                    rtcp_in,
                    transforms.rtcp_out,
                    ep.taps,
                    buffer,
                )
            src._rtp.rtcp_octets = RTCP_BY_SECOND_OCTET if src.rtcp_mux else _NEVER_RTCP

    def _connect_keyed(self) -> None:
        """Mark each socket keyed when what arrives on it is unprotected with its leg's keys
        (SRTP: ``rtp_in``; the RTCP port of a leg without rtcp-mux: its own ``rtcp_in``), and
        connect a handshake socket whose latch waited for keys (:meth:`MediaRelay._latch`).
        Before, the routes are configured: they send on the connected socket from now on."""
        relay = self._relay
        for side, control in ((self.a, self.a_to_b), (self.b, self.b_to_a)):
            transforms = control.transforms
            rtcp_in = transforms.rtcp_in
            side._rtp.keyed = transforms.rtp_in is not None
            side._rtcp.keyed = rtcp_in is not None and rtcp_in is not drop_until_keyed
            if relay is None or relay._relatch_after is not None:
                continue
            for ep in (side._rtp, side._rtcp):
                if (
                    ep.keyed
                    and not ep.connected
                    and ep.source is not None
                    and ep.non_rtp is not None
                    and ep.ice is None
                    and not _unaddressed(ep)
                ):
                    # Keyed, so whoever sent the latched source's datagrams proved the SDP's
                    # fingerprint (RFC 5763 §5): only it may reach the socket from now on, and
                    # an established call reads and sends without addresses as before (#7).
                    relay._connect(ep, ep.source)


def payload_type_table(renumbered: dict[int, int]) -> bytes | None:
    """The relay's form of a payload type renumbering: RTP's second octet (marker bit and
    payload type, RFC 3550 §5.1) -> the octet to send, the marker bit kept; None when nothing
    changes. Raises :class:`LocalMediaError` for a number outside 0..127."""
    table = bytearray(range(256))
    for sent, wanted in renumbered.items():
        if not (0 <= sent <= 127 and 0 <= wanted <= 127):
            raise LocalMediaError(f"payload type renumbering {sent} -> {wanted} is out of range")
        table[sent] = wanted
        table[sent | 0x80] = wanted | 0x80
    if table == bytearray(range(256)):
        return None
    return bytes(table)


class _Renumbered:
    """A direction's RTP transform (``inner``, None: none) with the payload type rewritten on
    the plain packet: after ``inner`` when it is the inbound one (SRTP unprotect), before when
    it is the outbound one (SRTP protect): the payload type is inside the authenticated header
    (RFC 3711 §3.1), so it may only change between the two. Works in place when ``inner`` does
    (or is None), never fused with the other direction's transform (no ``in_buffer_then``)."""

    def __init__(self, table: bytes, inner: Transform | None, *, inbound: bool) -> None:
        self.table = table
        self.inner = inner
        self.inbound = inbound

    def __repr__(self) -> str:
        return f"_Renumbered(inner={self.inner!r}, inbound={self.inbound!r})"

    def __call__(self, packet: bytes) -> bytes | None:
        inner = self.inner
        if inner is not None and self.inbound:
            result = inner(packet)
            if result is None:
                return None
            packet = result
        packet = b"".join((packet[:1], bytes((self.table[packet[1]],)), packet[2:]))
        if inner is not None and not self.inbound:
            return inner(packet)
        return packet

    def in_buffer(self, buffer: bytearray) -> BufferStep | None:
        inner = self.inner
        inner_step = _buffer_step(inner, buffer)
        if inner is not None and inner_step is None:
            return None  # ``inner`` works on bytes only: so does this
        return _RenumberStep(self.table, buffer, inner_step, self.inbound).run


class _RenumberStep:
    """:meth:`_Renumbered.in_buffer`'s step: the second octet through the table, and the inner
    transform's own step after (inbound) or before (outbound) it."""

    def __init__(
        self, table: bytes, buffer: bytearray, inner: BufferStep | None, inbound: bool
    ) -> None:
        self.table = table
        self.buffer = buffer
        self.inner = inner
        self.inbound = inbound

    def run(self, size: int) -> int:
        inner = self.inner
        buffer = self.buffer
        if inner is not None and self.inbound:
            size = inner(size)
            if size < 0:
                return size
        buffer[1] = self.table[buffer[1]]
        if inner is not None and not self.inbound:
            return inner(size)
        return size


def red_octets(red_payload_types: tuple[int, ...]) -> bytes:
    """RTP's second octet -> 1 where its payload type is one of ``red_payload_types``, marker
    bit either way, else 0. Raises :class:`LocalMediaError` for a number outside 0..127."""
    octets = bytearray(256)
    for payload_type in red_payload_types:
        if not 0 <= payload_type <= 127:
            raise LocalMediaError(f"RED payload type {payload_type} is out of range")
        octets[payload_type] = octets[payload_type | 0x80] = 1
    return bytes(octets)


def renumber_red_blocks_untrusted(packet: bytearray, size: int, table: bytes) -> bool:
    """Put the block payload types of the RFC 2198 RED packet ``packet[:size]`` (plain RTP)
    through ``table`` (:func:`payload_type_table`), in place; False when the packet does not
    parse (then partly rewritten: drop it). The RTP header (its own payload type included) is
    not changed.

    RFC 2198 §3: after the RTP header (RFC 3550 §5.1: 12 octets, 4 per CSRC, an extension
    of 4 + 4 * its length octets) come the block headers, each one octet F bit + 7-bit block
    payload type; with F set 3 more (14-bit timestamp offset, 10-bit block length) and
    another header follows; the last (F clear) is that one octet and the primary encoding's.
    Then the blocks: the redundant ones of the lengths given, the primary the rest. RTP
    padding (P bit, its count in the last octet) is not payload. The table keeps the high bit,
    so F is kept as the marker bit is. Bounded: every header moves on at least one octet,
    and nothing is read at or past ``size``. A packet without payload (padding only) names
    no block and passes."""
    if size < 12 or size > len(packet):
        return False
    first = packet[0]
    end = size
    if first & 0x20:  # RFC 3550 §5.1 P: the last octet counts the padding, itself included
        end -= packet[size - 1]
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # X: a 4-octet extension header, then its length in 32-bit words
        if offset + 4 > end:
            return False
        offset += 4 + 4 * ((packet[offset + 2] << 8) | packet[offset + 3])
    if offset > end:
        return False
    if offset == end:
        return True
    redundant = 0  # octets of the redundant blocks the headers announce
    while offset < end:
        octet = packet[offset]
        packet[offset] = table[octet]
        if not octet & 0x80:
            return offset + 1 + redundant <= end  # the last header; the primary is the rest
        if offset + 4 > end:
            return False
        redundant += ((packet[offset + 2] & 0x03) << 8) | packet[offset + 3]
        offset += 4
    return False  # headers up to the end, none of them the last


class _Count:
    """A counter that outlives the transforms a rebuild replaces (mypyc: a plain class)."""

    def __init__(self) -> None:
        self.value = 0


class _RenumberedRed:
    """:class:`_Renumbered` for a direction whose sender has RFC 2198 RED (``red``: second
    octet -> 1 for RED, :func:`red_octets`): RED packets get their block payload types through
    the table too (:func:`renumber_red_blocks_untrusted`), the others only the second octet. A
    RED packet whose headers do not parse is dropped and counted in ``malformed`` (as the relay
    drops what is not RTP: relayed, its blocks would keep the sender's numbers). Only such
    directions are built with it: every other one pays nothing for RED."""

    def __init__(
        self, table: bytes, red: bytes, malformed: _Count, inner: Transform | None, *, inbound: bool
    ) -> None:
        self.table = table
        self.red = red
        self.malformed = malformed
        self.inner = inner
        self.inbound = inbound

    def __repr__(self) -> str:
        return f"_RenumberedRed(inner={self.inner!r}, inbound={self.inbound!r})"

    def __call__(self, packet: bytes) -> bytes | None:
        inner = self.inner
        if inner is not None and self.inbound:
            result = inner(packet)
            if result is None:
                return None
            packet = result
        if self.red[packet[1]]:
            rewritten = bytearray(packet)
            if not renumber_red_blocks_untrusted(rewritten, len(rewritten), self.table):
                self.malformed.value += 1
                return None
            rewritten[1] = self.table[packet[1]]
            packet = bytes(rewritten)
        else:
            packet = b"".join((packet[:1], bytes((self.table[packet[1]],)), packet[2:]))
        if inner is not None and not self.inbound:
            return inner(packet)
        return packet

    def in_buffer(self, buffer: bytearray) -> BufferStep | None:
        inner = self.inner
        inner_step = _buffer_step(inner, buffer)
        if inner is not None and inner_step is None:
            return None  # ``inner`` works on bytes only: so does this
        return _RedRenumberStep(
            self.table, self.red, self.malformed, buffer, inner_step, self.inbound
        ).run


class _RedRenumberStep:
    """:meth:`_RenumberedRed.in_buffer`'s step: as :class:`_RenumberStep`, and a RED packet's
    block headers through the table too (-1: it does not parse, counted)."""

    def __init__(
        self,
        table: bytes,
        red: bytes,
        malformed: _Count,
        buffer: bytearray,
        inner: BufferStep | None,
        inbound: bool,
    ) -> None:
        self.table = table
        self.red = red
        self.malformed = malformed
        self.buffer = buffer
        self.inner = inner
        self.inbound = inbound

    def run(self, size: int) -> int:
        inner = self.inner
        buffer = self.buffer
        if inner is not None and self.inbound:
            size = inner(size)
            if size < 0:
                return size
        if self.red[buffer[1]] and not renumber_red_blocks_untrusted(buffer, size, self.table):
            self.malformed.value += 1
            return -1
        buffer[1] = self.table[buffer[1]]
        if inner is not None and not self.inbound:
            return inner(size)
        return size


def transcode_untrusted(packet: bytearray, size: int, transcoding: G711Transcoding) -> bool:
    """Transcode the plain RTP packet ``packet[:size]`` in place when its payload type is
    ``transcoding.payload_type`` (G.711, :mod:`~gateway.core.media.g711`): the payload octets
    through the sample table and the payload type to ``transcoding.to_payload_type``, the
    marker bit kept. Any other packet is left as it is. False: a packet of that payload type
    whose header does not parse (drop it).

    The payload starts after the RTP header (RFC 3550 §5.1: 12 octets, 4 per CSRC, an
    extension of 4 + 4 * its length octets) and ends before the padding (P bit, its count in
    the last octet), which is not audio. Nothing is read at or past ``size``."""
    if size < 12 or size > len(packet):
        return False
    second = packet[1]
    if second & 0x7F != transcoding.payload_type:
        return True
    first = packet[0]
    end = size
    if first & 0x20:  # RFC 3550 §5.1 P: the last octet counts the padding, itself included
        end -= packet[size - 1]
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # X: a 4-octet extension header, then its length in 32-bit words
        if offset + 4 > end:
            return False
        offset += 4 + 4 * ((packet[offset + 2] << 8) | packet[offset + 3])
    if offset > end:
        return False
    packet[offset:end] = packet[offset:end].translate(transcoding.table)
    packet[1] = (second & 0x80) | transcoding.to_payload_type
    return True


class _Transcoded:
    """A direction's RTP transform (``inner``, None: none) with G.711 transcoding on the plain
    packet (:func:`transcode_untrusted`): after ``inner`` when it is the inbound one (SRTP
    unprotect), before when it is the outbound one (SRTP protect), as the payload is
    encrypted and authenticated (RFC 3711 §3.1). Works in place when ``inner`` does (or is
    None). ``count`` counts the packets transcoded; a packet of the transcoded payload type
    whose header does not parse is dropped (the transform's drop). Only directions that
    transcode are built with it."""

    def __init__(
        self,
        transcoding: G711Transcoding,
        count: _Count,
        inner: Transform | None,
        *,
        inbound: bool,
    ) -> None:
        self.transcoding = transcoding
        self.count = count
        self.inner = inner
        self.inbound = inbound

    def __repr__(self) -> str:
        return f"_Transcoded({self.transcoding!r}, inner={self.inner!r}, inbound={self.inbound!r})"

    def __call__(self, packet: bytes) -> bytes | None:
        inner = self.inner
        if inner is not None and self.inbound:
            result = inner(packet)
            if result is None:
                return None
            packet = result
        if len(packet) >= 2 and packet[1] & 0x7F == self.transcoding.payload_type:
            rewritten = bytearray(packet)
            if not transcode_untrusted(rewritten, len(rewritten), self.transcoding):
                return None
            self.count.value += 1
            packet = bytes(rewritten)
        if inner is not None and not self.inbound:
            return inner(packet)
        return packet

    def in_buffer(self, buffer: bytearray) -> BufferStep | None:
        inner = self.inner
        inner_step = _buffer_step(inner, buffer)
        if inner is not None and inner_step is None:
            return None  # ``inner`` works on bytes only: so does this
        return _TranscodeStep(self.transcoding, self.count, buffer, inner_step, self.inbound).run


class _TranscodeStep:
    """:meth:`_Transcoded.in_buffer`'s step: :func:`transcode_untrusted` on the buffer, and
    the inner transform's own step after (inbound) or before (outbound) it."""

    def __init__(
        self,
        transcoding: G711Transcoding,
        count: _Count,
        buffer: bytearray,
        inner: BufferStep | None,
        inbound: bool,
    ) -> None:
        self.transcoding = transcoding
        self.payload_type = transcoding.payload_type
        self.count = count
        self.buffer = buffer
        self.inner = inner
        self.inbound = inbound

    def run(self, size: int) -> int:
        inner = self.inner
        buffer = self.buffer
        if inner is not None and self.inbound:
            size = inner(size)
            if size < 0:
                return size
        if size >= 2 and buffer[1] & 0x7F == self.payload_type:
            if not transcode_untrusted(buffer, size, self.transcoding):
                return -1
            self.count.value += 1
        if inner is not None and not self.inbound:
            return inner(size)
        return size


def _observed(transform_in: Transform | None, observer: RtcpObserver) -> Transform:
    """``transform_in`` (None: none), then ``observer`` on its result; the packet goes on
    unchanged. An observer that raises is logged, never drops the packet."""

    def observe(packet: bytes) -> bytes | None:
        if transform_in is not None:
            result = transform_in(packet)  # raising or None: counted as the transform's drop
            if result is None:
                return None
            packet = result
        try:
            observer(packet)
        except Exception:
            log_exception(logger, "an RTCP observer failed; the packet is forwarded")
        return packet

    return observe


def checked_receiver_event(value: tuple[int, int] | None) -> tuple[int, int] | None:
    """``value`` as :attr:`DirectionControl.receiver_telephone_event` keeps it: (-1, 0) for
    any "none". Raises :class:`LocalMediaError` for a payload type outside -1..127 or a
    telephone-event without a positive clock rate."""
    if value is None:
        return None
    payload_type, clock_rate = value
    if payload_type < -1 or payload_type > 127:
        raise LocalMediaError(f"telephone-event payload type {payload_type} is not 0..127")
    if payload_type < 0:
        return (-1, 0)
    if clock_rate <= 0:
        raise LocalMediaError(f"telephone-event clock rate {clock_rate} is not positive")
    return (payload_type, clock_rate)


class DtmfInterworking:
    """DTMF interworking on one direction of a stream, where one leg negotiated
    telephone-event (RFC 4733) and the other did not (docs/architecture.md "DTMF
    interworking"). Set it as :attr:`DirectionControl.dtmf`; a direction without one is built
    exactly as before and pays nothing.

    ``take_payload_type`` (the sending leg's telephone-event number; -1: none): its packets are
    not forwarded but handed, plain (after SRTP unprotect), to ``on_event``, which runs in the
    relay's loop and must not block (the call reads the digit and sends SIP INFO).
    ``inject_payload_type`` (the receiving leg's telephone-event number; -1: none) and
    ``inject_clock_rate``: :meth:`MediaStream.send_telephone_event` may add event packets
    (digits from SIP INFO) to this direction. Either way the direction rewrites sequence
    numbers so that the receiver sees one gapless sequence (RFC 3550 §5.1): minus the packets
    taken, plus the packets added; injected packets carry the SSRC of the media last relayed
    (RFC 4733 §2.1: events share the audio's SSRC and timing), ``ssrc`` before any.

    ``relayed_until_now``: the receiving leg heard the sending leg's events until this
    interworking (both legs had telephone-event; the receiver's re-answer left it out). An
    event already in progress then began towards the receiver, which plays it until its end
    (RFC 4733 §2.5.1.4, §2.5.2): if the first telephone-event packet after the change lacks
    the marker bit of an event's first packet (§2.5.1.2), it continues such an event, and that
    event's packets, its end packets with them, are relayed as before, not taken (its digit
    is not reported again). Audio first: no event was in progress (a sender sends an event's
    packets instead of the audio it replaces, §2.5.1.1).

    When this interworking is replaced or removed (:attr:`DirectionControl.dtmf`) while an
    event it injected has not ended, its end goes then: three end packets with the duration
    reached (:attr:`ended_at_change` counts them). What it took or injected moved the
    receiver's sequence numbers: the numbering goes on in the next interworking, or alone
    when none follows (the stream's SSRC is the same).

    ``red_payload_types``: the sending leg's RFC 2198 RED numbers (from its own SDP). RFC 4733
    §2.5.1.5 packs consecutive events into one packet only as RED blocks, and §2.6 lets a sender
    add RED redundancy to events: such events may never come as plain telephone-event packets.
    A direction that takes events and whose sender has RED reads each RED packet's
    telephone-event blocks (:func:`red_event_blocks_untrusted`) and hands each on as a plain
    event packet; a RED packet whose primary block is an event is taken like one.

    A plain class (mypyc compiles the relay); its counters are read by the session."""

    def __init__(
        self,
        *,
        take_payload_type: int = -1,
        on_event: Callable[[bytes], None] | None = None,
        inject_payload_type: int = -1,
        inject_clock_rate: int = 8000,
        ssrc: int = 0,
        red_payload_types: tuple[int, ...] = (),
        relayed_until_now: bool = False,
    ) -> None:
        self.take_payload_type = take_payload_type
        self.relayed_until_now = relayed_until_now and take_payload_type >= 0
        self.passing = b""  # timestamp and SSRC (RTP octets 4-11) of the event relayed on
        self.on_event = on_event
        self.red_payload_types = tuple(red_payload_types)
        # Second octet -> 1 for the sending leg's RED (RFC 2198), b"": it has none. Only with
        # both does the direction read RED packets for events (:class:`_DtmfInRed`).
        self.red = (
            red_octets(self.red_payload_types)
            if red_payload_types and take_payload_type >= 0
            else b""
        )
        self.inject_payload_type = inject_payload_type
        self.inject_clock_rate = inject_clock_rate
        self.protect: Transform | None = None  # the direction's rtp_out, set by the rebuild
        self.seq_offset = 0  # added to every relayed packet's sequence number
        self.last_seq = -1  # the last sequence number sent (relayed or injected); -1: none
        self.last_timestamp = 0
        self.last_ssrc = ssrc
        self.last_at = -1.0  # when the last relayed packet arrived; -1: none yet
        self.event_timestamp = 0  # of the event being injected
        self.event_started_at = -1.0  # when it began (relay clock); -1: none yet
        self.open_event = b""  # its last payload while its end has not gone; b"": none
        self.ended_at_change = 0  # end packets sent when this interworking was replaced
        self.passed = 0  # packets of an event in progress at the change, relayed on
        self.taken = 0
        self.injected = 0
        self.event_errors = 0
        self.red_ssrc = 0  # of the newest event read inside RED
        self.red_newest = -1  # its timestamp; -1: none yet

    def __repr__(self) -> str:
        return (
            f"DtmfInterworking(take={self.take_payload_type}, "
            f"inject={self.inject_payload_type}/{self.inject_clock_rate})"
        )

    def carry_on_from(self, old: DtmfInterworking) -> None:
        """Continue the numbering ``old`` gave the stream (a re-INVITE replaced it)."""
        self.seq_offset = old.seq_offset
        self.last_seq = old.last_seq
        self.last_timestamp = old.last_timestamp
        self.last_ssrc = old.last_ssrc
        self.last_at = old.last_at


class _DtmfIn:
    """A direction's inbound RTP transform (``inner``: SRTP unprotect, None: none) with DTMF
    interworking on the plain packet (:class:`DtmfInterworking`): telephone-event packets are
    taken (None: not forwarded), the others renumbered by the offset and remembered. Bytes path
    only: a direction with interworking is never relayed in place."""

    def __init__(
        self, state: DtmfInterworking, inner: Transform | None, clock: Callable[[], float]
    ) -> None:
        self.state = state
        self.inner = inner
        self.clock = clock

    def __repr__(self) -> str:
        return f"_DtmfIn({self.state!r}, inner={self.inner!r})"

    def __call__(self, packet: bytes) -> bytes | None:
        inner = self.inner
        if inner is not None:
            result = inner(packet)
            if result is None:
                return None
            packet = result
        state = self.state
        if packet[1] & 0x7F == state.take_payload_type:
            if _passes(state, packet):
                return _renumbered_event(state, packet)
            state.taken += 1
            state.seq_offset -= 1  # the receiver must not see it missing
            on_event = state.on_event
            if on_event is not None:
                try:
                    on_event(packet)
                except Exception:
                    state.event_errors += 1
                    if state.event_errors == 1:
                        log_exception(logger, "a DTMF event handler failed (further ones counted)")
            return None
        if state.relayed_until_now:
            state.relayed_until_now = False  # audio first: no event was in progress
        offset = state.seq_offset
        seq = (((packet[2] << 8) | packet[3]) + offset) & 0xFFFF
        state.last_seq = seq
        state.last_timestamp = int.from_bytes(packet[4:8], "big")
        state.last_ssrc = int.from_bytes(packet[8:12], "big")
        state.last_at = self.clock()
        if offset:
            packet = b"".join((packet[:2], bytes((seq >> 8, seq & 0xFF)), packet[4:]))
        return packet


def _renumbered_event(state: DtmfInterworking, packet: bytes) -> bytes:
    """An event ``packet`` relayed on (:func:`_passes`), numbered on as audio is; its
    timestamp (the event's start, RFC 4733 §2.5.1.1) is not the audio's clock, which an
    injected event starts from."""
    seq = (((packet[2] << 8) | packet[3]) + state.seq_offset) & 0xFFFF
    state.last_seq = seq
    if state.seq_offset:
        packet = b"".join((packet[:2], bytes((seq >> 8, seq & 0xFF)), packet[4:]))
    return packet


def _passes(state: DtmfInterworking, packet: bytes) -> bool:
    """Whether the telephone-event ``packet`` belongs to an event that began before the
    interworking and is relayed on (:class:`DtmfInterworking`, ``relayed_until_now``)."""
    if state.relayed_until_now:
        state.relayed_until_now = False  # the first event packet after the change decides
        if packet[1] & 0x80:
            return False  # RFC 4733 §2.5.1.2: an event's first packet; it begins now
        state.passing = packet[4:12]
    elif not state.passing or packet[4:12] != state.passing:
        return False
    state.passed += 1
    return True


MAX_RED_EVENT_BLOCKS = 8
"""At most this many telephone-event blocks of one RED packet are handed on (RFC 2198 allows a
header per 4 octets; a sender has no use for more than a few: the primary and two or three
earlier events or copies, RFC 4733 §2.5.1.5, §2.6)."""


def red_event_blocks_untrusted(
    packet: bytes, payload_type: int
) -> tuple[list[tuple[int, int, int]], bool] | None:
    """The blocks of payload type ``payload_type`` (telephone-event) in the RFC 2198 RED packet
    ``packet`` (plain RTP): (timestamp, start, end) of each, in header order (the primary's
    last), at most :data:`MAX_RED_EVENT_BLOCKS`, and whether the primary is one of them; None
    when the headers do not parse.

    RFC 2198 §3: after the RTP header (RFC 3550 §5.1, CSRCs and extension skipped) the block
    headers, each F bit + 7-bit payload type; with F set a 14-bit timestamp offset (the block's
    timestamp is the packet's minus it) and a 10-bit length follow, then another header; the
    last (F clear) is one octet, the primary's, whose block is the rest (RTP padding excluded).
    Bounded as :func:`renumber_red_blocks_untrusted`: nothing is read at or past the end."""
    size = len(packet)
    if size < 12:
        return None
    first = packet[0]
    end = size
    if first & 0x20:  # RFC 3550 §5.1 P: the last octet counts the padding, itself included
        end -= packet[size - 1]
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # X: a 4-octet extension header, then its length in 32-bit words
        if offset + 4 > end:
            return None
        offset += 4 + 4 * ((packet[offset + 2] << 8) | packet[offset + 3])
    if offset >= end:
        return None  # no block header at all: not RED as RFC 2198 §3 frames it
    timestamp = int.from_bytes(packet[4:8], "big")
    headers: list[tuple[int, int, int]] = []  # (payload type, timestamp, length; -1: primary)
    while True:
        if offset >= end:
            return None  # headers up to the end, none of them the last
        octet = packet[offset]
        if not octet & 0x80:
            headers.append((octet, timestamp, -1))
            offset += 1
            break
        if offset + 4 > end:
            return None
        back = (packet[offset + 1] << 6) | (packet[offset + 2] >> 2)
        length = ((packet[offset + 2] & 0x03) << 8) | packet[offset + 3]
        headers.append((octet & 0x7F, (timestamp - back) & 0xFFFFFFFF, length))
        offset += 4
    blocks: list[tuple[int, int, int]] = []
    primary = headers[-1][0] == payload_type
    room = MAX_RED_EVENT_BLOCKS - 1 if primary else MAX_RED_EVENT_BLOCKS  # the primary's kept
    for block_type, block_timestamp, length in headers:
        block_end = end if length < 0 else offset + length
        if block_end > end:
            return None
        if block_type == payload_type and (length < 0 or len(blocks) < room):
            blocks.append((block_timestamp, offset, block_end))
        offset = block_end
    return blocks, primary


class _DtmfInRed:
    """:class:`_DtmfIn` for a direction whose sender has RFC 2198 RED (``state.red``): RED
    packets are read for telephone-event blocks, each handed to ``state.on_event`` as the plain
    event packet it stands for (the RED packet's header with the event's payload type and the
    block's timestamp, the block as payload; earlier events first, as their headers come). A
    RED packet whose primary block is an event is taken (not forwarded: the receiver has no
    telephone-event), the others go on as :class:`_DtmfIn` sends them; so does a RED packet
    that does not parse (as without interworking). Only such directions are built with it."""

    def __init__(
        self, state: DtmfInterworking, inner: Transform | None, clock: Callable[[], float]
    ) -> None:
        self.state = state
        self.inner = inner
        self.plain = _DtmfIn(state, None, clock)

    def __repr__(self) -> str:
        return f"_DtmfInRed({self.state!r}, inner={self.inner!r})"

    def __call__(self, packet: bytes) -> bytes | None:
        inner = self.inner
        if inner is not None:
            result = inner(packet)
            if result is None:
                return None
            packet = result
        state = self.state
        if not state.red[packet[1]]:
            return self.plain(packet)
        event_type = state.take_payload_type
        found = red_event_blocks_untrusted(packet, event_type)
        if found is None or not found[0]:
            return self.plain(packet)
        blocks, primary = found
        on_event = state.on_event
        ssrc = int.from_bytes(packet[8:12], "big")
        if ssrc != state.red_ssrc:
            state.red_ssrc, state.red_newest = ssrc, -1
        if on_event is not None:
            # The RTP header of a plain event packet: version 2, no CSRC, extension or padding
            # (RFC 3550 §5.1), the RED packet's marker, sequence number and SSRC.
            second = (packet[1] & 0x80) | event_type
            for timestamp, start, block_end in blocks:
                newest = state.red_newest
                if newest >= 0 and 0 < ((newest - timestamp) & 0xFFFFFFFF) < 0x80000000:
                    # A copy of an event older than one already handed on (RFC 3550 §5.1:
                    # timestamps compared modulo 2**32): the detector read or ended it, and
                    # would take it for a new event that ends the current one.
                    continue
                state.red_newest = timestamp
                event = b"".join(
                    (
                        bytes((0x80, second)),
                        packet[2:4],
                        timestamp.to_bytes(4, "big"),
                        packet[8:12],
                        packet[start:block_end],
                    )
                )
                try:
                    on_event(event)
                except Exception:
                    state.event_errors += 1
                    if state.event_errors == 1:
                        log_exception(logger, "a DTMF event handler failed (further ones counted)")
        if not primary:
            return self.plain(packet)  # audio with an earlier event as redundancy
        state.taken += 1
        state.seq_offset -= 1  # the receiver must not see it missing
        return None


async def _send_end_copies(control: DirectionControl, ended: DtmfInterworking) -> None:
    """The relay's task for the end copies of the event ``ended`` injected, which a change
    of interworking left on ``control`` (:meth:`DirectionControl._end_injected_event`): one
    every :data:`UPDATE_INTERVAL` (RFC 4733 §2.5.1.4), until none is left, one cannot go, or
    they went at once (a new event began: :meth:`DirectionControl._flush_end_copies`)."""
    while True:
        await trio.sleep(UPDATE_INTERVAL)
        pending = control._end_copies
        if pending is None or pending[0] is not ended:
            return
        try:
            sent = control._send_end_copy()
        except Exception:  # never the relay's nursery: it would stop every call's media
            control._end_copies = None
            log_exception(logger, "sending the end of an injected DTMF event failed")
            return
        if not sent:
            return


async def _play_tone(stream: MediaStream, control: DirectionControl, player: TonePlayer) -> None:
    """The relay's task for one tone (:meth:`MediaStream.play_tone`): the packets due every
    20 ms, until the tone is stopped or replaced, or the stream closes or turns to T.38."""
    source = stream.a if control is stream.a_to_b else stream.b
    while True:
        relay = stream._relay
        if relay is None or control._tone is not player or stream._opaque:
            return
        await trio.sleep(max(0.0, player.next_due() - relay._clock()))
        relay = stream._relay
        if relay is None or control._tone is not player or stream._opaque:
            return
        if stream in relay._stale:  # settings changed since the last poll round: apply them
            relay._stale.discard(stream)
            stream._rebuild()
        packets = player.due(relay._clock())
        if control._blocked:
            continue  # no keys for the receiving leg yet: its time passes, nothing goes
        try:
            _send_tone(source._rtp.rtp, control._transforms.rtp_out, packets)
        except Exception:  # never the relay's nursery: it would stop every call's media
            control._tone = None
            stream._changed()
            log_exception(logger, "playing a tone failed")
            return


def _send_tone(route: _Route, protect: Transform | None, packets: list[bytes]) -> None:
    """Send a tone's ``packets`` on ``route`` (the direction's RTP route: its destination and
    socket), each protected with ``protect`` (the receiving leg's SRTP, None: plain). A packet
    the transform refuses or the socket fails is counted as a relayed one would be."""
    destination = route.destination
    if destination is None:
        route.dropped_no_destination += len(packets)
        return
    for packet in packets:
        if protect is not None:
            protected = protect(packet)
            if protected is None:
                route.dropped_transform += 1
                continue
            packet = protected
        if _send_on(route, packet, destination):
            route.packets += 1
            route.bytes += len(packet)


def _send_on(route: _Route, packet: bytes, destination: Address) -> bool:
    """Send a packet the relay made itself (an injected DTMF event, a tone's) on ``route``,
    from its socket to ``destination``; False, counted as ``dropped_send_error``, when the
    socket refused it. The per-packet loop keeps its own inlined copy of these lines."""
    try:
        send = route.send
        if send is not None:
            send(packet)
        else:
            route.sendto(packet, destination)
    except OSError:
        route.dropped_send_error += 1
        return False
    return True


def _send_event(
    state: DtmfInterworking,
    route: _Route,
    payload: bytes,
    *,
    marker: bool,
    payload_type: int = -1,
    timestamp: int = -1,
) -> bool:
    """Send one injected RFC 4733 event packet of ``state`` on ``route`` (the direction's RTP
    route): the next sequence number, the event's timestamp, the SSRC of the media last
    relayed, protected with ``state.protect``. ``payload_type`` and ``timestamp`` (-1: the
    state's): an event another interworking began (its end copies after a change). False
    when it could not go."""
    destination = route.destination
    if destination is None:
        return False
    seq = (state.last_seq + 1) & 0xFFFF
    if payload_type < 0:
        payload_type = state.inject_payload_type
    if timestamp < 0:
        timestamp = state.event_timestamp
    header = bytes((0x80, (0x80 if marker else 0) | payload_type))
    packet = b"".join(
        (
            header,
            seq.to_bytes(2, "big"),
            timestamp.to_bytes(4, "big"),
            state.last_ssrc.to_bytes(4, "big"),
            payload,
        )
    )
    protect = state.protect
    if protect is not None:
        try:
            protected = protect(packet)
        except Exception:
            log_exception(logger, "protecting an injected DTMF event failed")
            return False
        if protected is None:
            return False
        packet = protected
    if not _send_on(route, packet, destination):
        return False
    state.last_seq = seq
    state.seq_offset += 1  # later relayed packets follow the injected one
    state.injected += 1
    route.packets += 1
    route.bytes += len(packet)
    return True


def _configure(
    route: _Route,
    out: _Endpoint,
    destination: Address | None,
    transform_in: Transform | None,
    transform_out: Transform | None,
    taps: tuple[Tap, ...],
    buffer: bytearray | None,
) -> None:
    """Set ``route`` to send from ``out``'s socket to ``destination``, through the transforms."""
    route.sendto = out.sock.sendto
    route.destination = destination
    route.send = out.sock.send if out.connected and out.source == destination else None
    route.transform_in = transform_in
    route.transform_out = transform_out
    route.plain = transform_in is None and transform_out is None and not taps
    route.step_in = _buffer_step(transform_in, buffer)
    route.step_out = _buffer_step(transform_out, buffer)
    route.step_fused = False
    # Taps get bytes, so a tapped route takes the bytes path (taps are rare: recording).
    route.in_place = (
        not route.plain
        and not taps
        and (transform_in is None or route.step_in is not None)
        and (transform_out is None or route.step_out is not None)
    )
    if route.in_place and route.step_in is not None and route.step_out is not None:
        # Both in place (SRTP->SRTP): one call for the two, if the first can run the second.
        then = getattr(transform_in, "in_buffer_then", None)
        fused: BufferStep | None = then(transform_out, buffer) if then is not None else None
        if fused is not None:
            route.step_in, route.step_out, route.step_fused = fused, None, True


def _buffer_step(transform: Transform | None, buffer: bytearray | None) -> BufferStep | None:
    """The transform's in-place form on ``buffer``, if it offers one (see :data:`Transform`)."""
    in_buffer = getattr(transform, "in_buffer", None)
    if in_buffer is None or buffer is None:
        return None
    step: BufferStep | None = in_buffer(buffer)
    return step


class MediaRelay:
    """Relays every open :class:`MediaStream` from one trio task (:meth:`serve`). Linux only.

    ``allocator`` gives the port pairs. ``relatch_after`` (seconds, None = never) lets a socket
    latch a new source once the latched one has been silent that long (a phone that moved or a NAT
    binding that changed). ``clock`` is trio's clock by default, so ``last_activity`` and
    :meth:`idle_streams` compare with ``trio.current_time()``.
    """

    def __init__(
        self,
        allocator: PortAllocator,
        *,
        relatch_after: float | None = None,
        clock: Callable[[], float] = trio.current_time,
        max_sockets_per_round: int = 128,
        max_rounds_per_wakeup: int = 8,
    ) -> None:
        if max_sockets_per_round < 1 or max_rounds_per_wakeup < 1:
            raise LocalMediaError("the per-wake-up limits must be at least 1")
        self.allocator = allocator
        self._relatch_after = relatch_after
        self._clock = clock
        self._max_sockets = max_sockets_per_round
        self._max_rounds = max_rounds_per_wakeup
        self._epoll = select.epoll()
        # Indexed by descriptor: one array load per packet where a dict costs a probe of its
        # index and its entries (two cache misses at thousands of sockets).
        self._endpoints: list[_Endpoint | None] = []
        # The RTP sockets of opaque streams (T.38 UDPTL), by descriptor: None in _endpoints.
        self._opaque_endpoints: list[_Endpoint | None] = []
        self._streams: set[MediaStream] = set()
        self._stale: set[MediaStream] = set()  # changed since their last rebuild
        self._backlogged: set[_Endpoint] = set()  # with datagrams read at connect, not relayed
        # Never resized: in-place transforms hold C pointers into it.
        self._buffer = bytearray(_RECEIVE_BUFFER_SIZE + TRANSFORM_ROOM)
        self._view = memoryview(self._buffer)
        self._wakeups = 0
        self._serving = False
        self._closed = False
        # While serving: where timed sends run (the end copies of an event a change of DTMF
        # interworking ended, DirectionControl._end_injected_event), off the packet path.
        self._nursery: trio.Nursery | None = None

    def sizes(self) -> dict[str, int]:
        """Entries of the relay's tables, for leak hunting (``StatusView.tables``): its
        streams and the port pairs its allocator lent (each pair's sockets are among the
        process's open file descriptors)."""
        return {"media_streams": len(self._streams), "media_port_pairs": self.allocator.in_use}

    @property
    def carries_opaque(self) -> bool:
        """True: streams can relay opaque datagrams (T.38 UDPTL, :meth:`MediaStream.set_opaque`)."""
        return True

    @property
    def interworks_dtmf(self) -> bool:
        """True: directions take DTMF interworking (:attr:`DirectionControl.dtmf`)."""
        return True

    async def applied(self) -> None:
        """Return once every change made to the streams so far is in effect: at once, since
        they are made in this process, before the relay's task reads the next packet
        (:meth:`gateway.core.media.relay_api.Relay.applied`)."""

    @property
    def counters_pushed(self) -> bool:
        """False: the streams' counters are this process's own, always of now."""
        return False

    async def final_counters(self) -> bool:
        """True at once: the streams' counters are this process's own
        (:meth:`gateway.core.media.relay_api.Relay.final_counters`)."""
        return True

    @property
    def counters_missing(self) -> Mapping[int, str]:
        """Empty: no counter is ever missing (:meth:`final_counters` is always complete)."""
        return {}

    def session_closed(self) -> None:
        """Nothing to drop: this relay holds no call's callbacks
        (:meth:`gateway.core.media.relay_api.Relay.session_closed`)."""

    def open_stream(self) -> MediaStream:
        """Allocate a port pair for each leg and start relaying between them.

        Raises :class:`~gateway.core.media.errors.PortsExhausted` (answer 503) when the range is
        full; nothing stays allocated then.
        """
        if self._closed:
            raise LocalMediaError("the media relay is closed")
        a_ports = self.allocator.allocate()
        try:
            b_ports = self.allocator.allocate()
        except BaseException:
            a_ports.close()
            raise
        stream = MediaStream(self, a_ports, b_ports, self._clock())
        self._streams.add(stream)
        try:
            for ep in stream._all_endpoints():
                if ep.fd >= len(self._endpoints):
                    self._endpoints.extend([None] * (ep.fd + 1 - len(self._endpoints)))
                self._epoll.register(ep.fd, select.EPOLLIN)
                self._endpoints[ep.fd] = ep
        except BaseException:
            stream.close()
            raise
        return stream

    @property
    def streams(self) -> frozenset[MediaStream]:
        return frozenset(self._streams)

    def idle_streams(self, now: float, timeout: float) -> list[MediaStream]:
        """Open streams that received nothing from either leg during ``timeout`` seconds
        before ``now``.

        Cost: one pass over the open streams; the B2BUA calls it every few seconds and ends
        those calls.
        """
        return [s for s in self._streams if now - s.last_activity >= timeout]

    def statistics(self) -> RelayStatistics:
        directions = [d.statistics() for s in self._streams for d in (s.a_to_b, s.b_to_a)]
        return RelayStatistics(
            streams=len(self._streams),
            wakeups=self._wakeups,
            packets=sum(d.packets + d.udptl_packets for d in directions),
            dropped=sum(d.dropped for d in directions),
        )

    def close(self) -> None:
        """Close every open stream (releasing their ports) and the relay's epoll."""
        if self._closed:
            return
        self._closed = True
        try:
            for stream in list(self._streams):
                stream.close()
        finally:
            if self._serving:
                # Wakes serve() with ClosedResourceError, on which it returns.
                trio.lowlevel.notify_closing(self._epoll.fileno())
            self._epoll.close()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Relay packets until cancelled or :meth:`close` is called; then close the relay (all
        streams, all ports).

        Start it with ``await nursery.start(relay.serve)``. Only one ``serve`` may run at a time.
        """
        if self._serving or self._closed:
            raise LocalMediaError("the media relay is already serving or closed")
        self._serving = True
        epoll_fd = self._epoll.fileno()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                try:
                    while not self._closed:
                        try:
                            if self._backlogged:
                                # Datagrams read at a connect wait for no epoll report: go on
                                # serving them after letting other tasks run.
                                await trio.lowlevel.checkpoint()
                            else:
                                await trio.lowlevel.wait_readable(epoll_fd)
                        except trio.ClosedResourceError:  # close() was called
                            return
                        self._wakeups += 1
                        self._relay_ready(self._clock())
                finally:
                    self._nursery = None
                    nursery.cancel_scope.cancel()  # timed sends of a closed relay: none
        finally:
            self._serving = False
            self.close()

    def _relay_ready(self, now: float) -> None:
        """Relay what the ready sockets hold: the per-packet hot path.

        Each poll round reads one datagram from each ready socket, and rounds repeat until epoll
        reports nothing or the round limit is reached. Reading once per readiness report, instead of
        draining until ``BlockingIOError``, saves an exception (about 1 us) per socket and wake-up
        at telephony rates, where a socket rarely holds more than one packet.
        """
        poll = self._epoll.poll
        max_sockets = self._max_sockets
        endpoints = self._endpoints
        opaque_endpoints = self._opaque_endpoints
        buffer = self._buffer
        view = self._view
        for _ in repeat(None, self._max_rounds):
            if self._closed:  # by a tap or transform
                return
            if self._stale:
                self._rebuild_stale()
            events = poll(0, max_sockets)
            if self._backlogged:
                events += self._backlog_events()
            if not events:
                return
            for fd, _mask in events:
                ep = endpoints[fd]
                if ep is None:
                    # An opaque stream's socket (T.38), kept apart so that RTP pays nothing for
                    # it; or one closed by a tap or transform earlier in this round.
                    opaque = opaque_endpoints[fd] if fd < len(opaque_endpoints) else None
                    if opaque is not None:
                        self._relay_opaque(opaque, now)
                    continue
                # Bound methods kept in slots: read as attributes (a specialised slot load) and
                # then called; ``ep.recvfrom_into(...)`` would look them up as methods, which
                # CPython 3.11 cannot specialise for a slot and resolves through the type.
                try:
                    if ep.only_from_source:
                        # Connected to the latched source: no address to build and check.
                        receive_connected = ep.recv_connected
                        size = receive_connected(buffer)
                        source: Any = ep.source
                    elif ep.backlog:
                        # Read at connect, older than anything still queued: anyone's.
                        data, source = ep.backlog.pop(0)
                        size = len(data)
                        buffer[:size] = data
                        if not ep.backlog:
                            ep.only_from_source = ep.connected
                    else:
                        receive = ep.recvfrom_into
                        size, source = receive(buffer)
                except BlockingIOError:
                    continue
                except OSError:  # also the peer's ICMP errors, on a connected socket
                    ep.receive_errors += 1
                    continue
                route = ep.rtcp if ep.rtcp_octets[buffer[1]] else ep.rtp
                if size < route.min_length or buffer[0] & VERSION_MASK != VERSION_BITS:
                    # Not RTP/RTCP: to the socket's handler (the call's handshakes), if any.
                    if ep.hands_on and size and buffer[0] & VERSION_MASK != VERSION_BITS:
                        self._hand_on(ep, bytes(view[:size]), source, now)
                    else:
                        ep.dropped_malformed += 1
                    continue
                if source != ep.source and not self._latch(ep, source, now):
                    continue
                ep.last_received = now
                if ep.blocked:
                    ep.dropped_blocked += 1
                    continue
                destination = route.destination
                if destination is None:
                    route.dropped_no_destination += 1
                    continue
                if route.plain:
                    packet: Any = view[:size]
                elif route.in_place:
                    # Receive, unprotect, protect and send from the same memory: no copies.
                    step = route.step_in
                    if step is not None:
                        try:
                            size = step(size)
                        except Exception:
                            size = _step_failed(route, _blame_in(route))
                    step = route.step_out
                    if step is not None and size >= 0:
                        try:
                            size = step(size)
                        except Exception:
                            size = _step_failed(route, route.transform_out)
                    if size < 0:
                        route.dropped_transform += 1
                        continue
                    packet = view[:size]
                else:
                    packet = _transform(ep, route, bytes(view[:size]))
                    if packet is None:
                        continue
                send = route.send
                try:
                    if send is not None:
                        send(packet)
                    else:
                        sendto = route.sendto
                        sendto(packet, destination)
                except OSError:
                    route.dropped_send_error += 1
                    continue
                route.packets += 1
                route.bytes += len(packet)

    def _relay_opaque(self, ep: _Endpoint, now: float) -> None:
        """Relay one datagram of an opaque stream (T.38 UDPTL): latched like RTP, never parsed,
        transformed nor handed to a key exchange; taps get a copy."""
        buffer = self._buffer
        try:
            if ep.only_from_source:
                receive_connected = ep.recv_connected
                size = receive_connected(buffer)
                source: Any = ep.source
            elif ep.backlog:
                data, source = ep.backlog.pop(0)
                size = len(data)
                buffer[:size] = data
                if not ep.backlog:
                    ep.only_from_source = ep.connected
            else:
                receive = ep.recvfrom_into
                size, source = receive(buffer)
        except BlockingIOError:
            return
        except OSError:
            ep.receive_errors += 1
            return
        if size == 0 or size > MAX_OPAQUE_DATAGRAM:
            ep.dropped_malformed += 1
            return
        if source != ep.source and not self._latch(ep, source, now):
            return
        ep.last_received = now
        if ep.blocked:
            ep.dropped_blocked += 1
            return
        route = ep.rtp
        destination = route.destination
        if destination is None:
            route.dropped_no_destination += 1
            return
        packet = self._view[:size]
        if ep.taps:
            _tap_all(ep, bytes(packet))
        send = route.send
        try:
            if send is not None:
                send(packet)
            else:
                sendto = route.sendto
                sendto(packet, destination)
        except OSError:
            route.dropped_send_error += 1
            return
        ep.udptl_packets += 1  # not RTP: a fax call must not read as one that had audio
        ep.udptl_bytes += size

    def _set_opaque(self, stream: MediaStream, opaque: bool) -> None:
        """Move ``stream``'s RTP sockets to the opaque table (``opaque``) or back."""
        source, target = (
            (self._endpoints, self._opaque_endpoints)
            if opaque
            else (self._opaque_endpoints, self._endpoints)
        )
        for ep in (stream.a._rtp, stream.b._rtp):
            if ep.fd >= len(target):
                target.extend([None] * (ep.fd + 1 - len(target)))
            if ep.fd < len(source) and source[ep.fd] is ep:
                source[ep.fd] = None
            target[ep.fd] = ep

    def _rebuild_stale(self) -> None:
        stale, self._stale = self._stale, set()
        for stream in stale:
            stream._rebuild()

    def _backlog_events(self) -> list[tuple[int, int]]:
        """One more datagram from each backlog per round, as if epoll had reported its socket."""
        self._backlogged = {ep for ep in self._backlogged if ep.backlog}
        return [(ep.fd, 0) for ep in self._backlogged]

    def _hand_on(self, ep: _Endpoint, packet: bytes, source: Address, now: float) -> None:
        """A datagram for a key exchange: to the socket's handler, if from the side's peer.
        STUN on a socket with an ICE handler goes there from any source (RFC 7983: 0..3)."""
        ice = ep.ice
        if ice is not None and packet[0] < 4:
            self._ice_check(ep, ice, packet, source, now)
            return
        if ep.non_rtp is None:  # an ICE socket without a key exchange: nothing takes it
            ep.dropped_malformed += 1
            return
        if source != ep.source:
            if (_has_plaintext_alert(packet) or _is_zrtp_error(packet)) and not (
                _from_sdp_address(ep, source)
            ):
                # An unauthenticated DTLS alert (epoch 0, RFC 6347 §4.1.2.7 lets such records
                # be discarded) or ZRTP Error (no MAC, RFC 6189 §5.9) from anyone but the
                # latched peer or its SDP address would end the handshake and the call, and
                # latch the socket to its sender: dropped, never answered (an ErrorACK, §5.10,
                # acknowledges an Error the exchange took). The peer's own comes from one of
                # those two, so a genuine refusal still ends at once (RFC 6189 §4.7).
                ep.dropped_unlatched_source += 1
                return
            if ep.source is not None and ep.ice is None and _unaddressed(ep):
                # Our offer waits for its answer, and each fork it went to (RFC 3261 §16.7) may
                # start its handshake as it rings (RFC 5763 §5, a=setup:active; baresip does):
                # they share this socket, and the one that answers may not be the first that
                # sent. Handed on with its source, latching nothing: the call's handshake
                # task keeps each source's apart and feeds the answering fork's
                # (handshakes.py). The latch was not connected either (_latch). Its address
                # is remembered: the answer's among them, the latched fork lost (set_remote).
                rival = source[:2]
                if rival not in ep.rivals and len(ep.rivals) < _RIVAL_SOURCES:
                    ep.rivals += (rival,)
            elif ep.sdp_address_only and not ep.keyed and _not_from_sdp_address(ep, source):
                # Its key exchange takes only the SDP address before keys ([plugins.dtls]
                # sdp_address_only): handed on, latching nothing, for the handshake task to
                # refuse and say so (the log, the call's end reason): refused here, a peer
                # behind a NAT would only be seen to time out.
                pass
            elif _zrtp_beside_unproven_latch(ep, packet, source):
                # A ZRTP datagram while another source holds the latch before keys, not
                # connected (it is not the SDP address: a phone behind a NAT, or a stranger
                # first at the port): handed on, latching nothing. The ZRTP engine tells the
                # peer by its Hello, which must match the peer's a=zrtp-hash (RFC 6189 §8.1),
                # and the handshake task gives that source the latch (StreamSide.latch_peer):
                # a stranger first at the port no longer keeps a phone behind a NAT out.
                pass
            elif _dtls_beside_unproven_latch(ep, packet, source):
                # The same for DTLS, whose engine runs a handshake per source: the one whose
                # certificate matches the peer's a=fingerprint (RFC 5763 §5) is the peer, and
                # takes the latch (StreamSide.latch_peer).
                pass
            elif _dtls_for_another_phone(ep, packet):
                # The callee's engine keeps other phones' handshakes until a 2xx confirms the
                # answer in force (our offer may have been forked): handed on, latching
                # nothing, keys or not (session 52).
                pass
            elif not self._latch(ep, source, now):
                return
        handler = ep.non_rtp
        if handler is None:  # the latch's rebuild cannot clear it, but stay safe
            return
        try:
            handler(packet, source)
        except Exception:
            # Must not stop the relay for every other call; counted like a failing tap.
            if not ep.tap_errors:
                log_exception(logger, "a non-RTP packet handler failed (logged once per socket)")
            ep.tap_errors += 1

    def _ice_check(
        self, ep: _Endpoint, ice: IceHandler, packet: bytes, source: Address, now: float
    ) -> None:
        """Answer a connectivity check; a valid one may select its source (module docstring)."""
        try:
            response, result = ice(packet, source)
        except Exception:
            if not ep.tap_errors:
                log_exception(logger, "an ICE handler failed (logged once per socket)")
            ep.tap_errors += 1
            return
        if response is not None:
            try:
                ep.sock.sendto(response, source)
            except OSError:
                ep.receive_errors += 1
        if not result:
            return  # answered with an error, or dropped: media does not move
        if source == ep.source:
            ep.last_received = now  # consent checks (RFC 7675) keep a quiet leg alive
        elif result == ICE_NOMINATED or ep.source is None:
            _select(ep, source, now)

    def _latch(self, ep: _Endpoint, source: Address, now: float) -> bool:
        """A packet from ``source`` is not from the latched source: latch it, or drop it."""
        if ep.ice is not None:
            # ICE leg: only a check selects a source (an unauthenticated one never does).
            ep.dropped_unlatched_source += 1
            return False
        if ep.source is not None and _takes_over(ep, source):
            # The leg's SDP address speaks on a handshake socket another source latched before
            # keys: "the SDP address first, another source only until the SDP address speaks"
            # (docs/media_security.md, "Forged handshakes"). Nothing in the other's handshake
            # records was authenticated (RFC 5763 §5); the handshake task starts the port's
            # handshake afresh for this one (handshakes.py). Still not connected: the other's
            # later datagrams are read and counted ``unlatched_source`` until keys connect it.
            ep.source = source
            ep.latched_at = now
            if ep.stream is not None:
                ep.stream._rebuild()
            return True
        if ep.sdp_address_only and not ep.keyed and _not_from_sdp_address(ep, source):
            # A key exchange that takes only the SDP address before its first packet (the
            # deployment has no peers behind NAT: [plugins.dtls] sdp_address_only).
            ep.dropped_unlatched_source += 1
            return False
        if ep.source is not None and (
            self._relatch_after is None or now - ep.last_received < self._relatch_after
        ):
            ep.dropped_unlatched_source += 1
            return False
        if source == ep.previous_source and now < ep.previous_until:
            ep.dropped_unlatched_source += 1
            return False
        # Never connected here: without re-latching only an unlatched socket gets this far.
        ep.source = source
        ep.latched_at = now
        ep.proven_peer = False
        if self._relatch_after is None and not (
            ep.non_rtp is not None
            and (_unaddressed(ep) or (not ep.keyed and _not_from_sdp_address(ep, source)))
        ):
            # Not a handshake socket still waiting for its leg's answer: connected, the kernel
            # would refuse the other forks' handshakes (_hand_on); the answer's address
            # unlatches it and the next packet latches and connects it. Nor one latched before
            # keys by a source other than its leg's SDP address (a phone behind a NAT, or a
            # stranger): the SDP address may still take it over (_takes_over), and keys
            # connect it (MediaStream._connect_keyed).
            self._connect(ep, source)
        if ep.stream is not None:
            ep.stream._rebuild()
        return True

    def _connect(self, ep: _Endpoint, source: Address) -> None:
        """Connect the socket to its new latched source: only the source can reach it now, and the
        relay reads and sends without addresses (see udp_association). Not when re-latching is
        on: the kernel would refuse the datagrams that re-latch; nor while the socket's key
        exchange keeps other phones' handshakes (``other_phones``): the kernel would refuse
        theirs (keys connect it once that ends, :meth:`MediaStream._connect_keyed`). Datagrams
        queued before come
        from anyone, and the kernel keeps them: they are read now into the endpoint's backlog,
        relayed from there (source checked) before anything that arrives later. Reading them
        now rather than when epoll next reports the socket makes the switch to recv_into
        independent of load: a relay that is behind may not find the queue empty for long."""
        if ep.other_phones:
            return
        try:
            ep.sock.connect(source)
        except OSError:
            return  # stays unconnected: slower, not wrong
        ep.connected = True
        backlog = ep.backlog or []
        receive = ep.sock.recvfrom
        for _ in range(_MOST_DATAGRAMS_READ_AT_CONNECT):
            try:
                backlog.append(receive(_RECEIVE_BUFFER_SIZE))
            except BlockingIOError:
                break
            except OSError:  # an ICMP error the peer's host just sent: reported once
                ep.receive_errors += 1
        else:
            # Still not empty (a huge receive buffer, or a flood): give the connection up, this
            # socket stays on the checked path until it latches again. What was read is relayed.
            _disconnect(ep)
        if backlog:
            ep.backlog = backlog
            self._backlogged.add(ep)  # once, also when it had a backlog already
        else:
            ep.only_from_source = True

    def _forget(self, stream: MediaStream) -> None:
        self._streams.discard(stream)
        self._stale.discard(stream)
        for ep in stream._all_endpoints():
            ep.connected = ep.only_from_source = False  # its socket is about to close
            ep.backlog = None
            self._backlogged.discard(ep)
            # The identity check keeps a reused descriptor number of another stream registered
            # (should someone have closed this stream's PortPair directly).
            for table in (self._endpoints, self._opaque_endpoints):
                if ep.fd < len(table) and table[ep.fd] is ep:
                    table[ep.fd] = None
                    # try, not contextlib.suppress: no context manager's three Python calls for
                    # each of a call's four sockets.
                    try:  # noqa: SIM105
                        self._epoll.unregister(ep.fd)
                    except (OSError, ValueError):  # the epoll is closed already
                        pass


def _transform(ep: _Endpoint, route: _Route, packet: bytes) -> bytes | None:
    """Inbound transform, taps, outbound transform; None when the packet is dropped (counted)."""
    if route.transform_in is not None:
        packet_in = _apply(route, route.transform_in, packet)
        if packet_in is None:
            return None
        packet = packet_in
    if ep.taps:  # a call nobody taps pays no call here
        _tap_all(ep, packet)
    if route.transform_out is not None:
        return _apply(route, route.transform_out, packet)
    return packet


def _tap_all(ep: _Endpoint, packet: bytes) -> None:
    """Every tap of the socket's direction gets ``packet``; one that raises is counted."""
    for tap in ep.taps:
        try:
            tap(ep.direction, packet)
        except Exception:
            ep.tap_errors += 1
            if ep.tap_errors == 1:
                log_exception(logger, "media tap %r failed (further ones only counted)", tap)


def _blame_in(route: _Route) -> object:
    """What to name when step_in raises: its transform, or both when it runs both."""
    if route.step_fused:
        return (route.transform_in, route.transform_out)
    return route.transform_in


def _step_failed(route: _Route, transform: object) -> int:
    """An in-place step raised: counted and logged as :func:`_apply` does; the packet is dropped."""
    route.transform_errors += 1
    if route.transform_errors == 1:
        log_exception(logger, "media transform %r failed (further ones only counted)", transform)
    return -1


def _apply(route: _Route, transform: Transform, packet: bytes) -> bytes | None:
    # A failing transform must not stop the relay for every other call: count it, log the first.
    try:
        result = transform(packet)
    except Exception:
        route.transform_errors += 1
        if route.transform_errors == 1:
            log_exception(
                logger, "media transform %r failed (further ones only counted)", transform
            )
        result = None
    if result is None:
        route.dropped_transform += 1
    return result
