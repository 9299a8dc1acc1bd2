"""Media worker processes seen from the SIP process: their supervision and their streams' proxies.

Theory of operation
-------------------
With ``[media] workers = N`` (N >= 2) the media relay runs in N worker processes
(:mod:`gateway.core.media.worker`), the way rtpengine splits its control thread from its media
threads, but as processes so that each has its own interpreter lock. :class:`WorkerPool`:

- splits ``[media] ports`` into N disjoint slices (:func:`split_ports`) and starts one worker per
  slice (``python -m gateway.core.media.worker``), each with one end of a Unix socketpair as its
  control channel (:mod:`gateway.core.media.worker_protocol`); a worker binds only its slice.
  At start-up all N are started at once and waited for together (each has ``[media]
  worker_ready_timeout`` to be ready); those that fail are one start-up error naming each;
- hands out :class:`RemoteStream` proxies with the interface the in-process relay gives a call
  (:mod:`gateway.core.media.relay_api`): ``set_remote``, ``blocked``, ``statistics()``,
  ``last_activity``, DTLS datagrams in (``set_non_rtp_handler``) and out (``send``), ``close``;
  keys go as values (:meth:`RemoteStream.apply_keys`) and the worker builds the SRTP contexts;
  T.38 fax (``set_opaque``) and taps (``set_tap``: the worker sends copies of what it forwards,
  T.38 datagrams with the source they came from) run in the worker's relay as in-process.
  Every call on a proxy is synchronous and only queues a message: a call never waits for a
  worker, except once per answer (:meth:`CallRelay.applied`, below);
- picks the worker of a call when its first stream opens: the one with the fewest open streams.
  Every stream costs about the same (one call's RTP at a codec's packet rate), the count is known
  here without asking the workers, and it never lags behind a burst of new calls the way a CPU
  reading would. The call's later streams go to the same worker while it has ports;
- needs no round trip to open a stream: each worker keeps a reserve of port pairs it has already
  bound and reports them (``PairsReady``); opening a stream takes two of them here and tells the
  worker which (``Open``). So the ports written into the SDP are already bound, and a worker out
  of reserve (or of ports) is skipped; none left anywhere is ``PortsExhausted`` (503). The
  reserve (64 pairs, 32 streams per worker) is topped up within a round trip, so only a burst of
  more new streams than that within about a millisecond (several at a busy worker) meets a 503;
- opens each stream blocked in both directions: in-process, a call's keying runs in the same
  synchronous step as the opening, but a worker could see a packet between the two messages;
- watches each worker: end of file on its channel (it exited, crashed or was killed) ends the
  calls it carried with the reason ``media worker exited`` (the call sends BYE with that Reason),
  logs it and starts a new worker on the same slice; the other workers' calls go on;
- checks each new worker's protocol version (worker_protocol's "Protocol version": the
  package on disk may have been upgraded since this process started, and a restarted worker
  runs what is on disk): a worker of another version exits at once, and its slot is not
  started again (it would fail the same way until the service restarts): one ERROR says so and
  what to do, and new calls go to the other workers as when a worker is being restarted (none
  left: ``PortsExhausted``, 503). At start-up it is a start-up error. A worker that exits with
  status 2 (argparse's usage error) before its first message did not understand its command
  line, a worker of another release too (an older one does not know ``--protocol-version``):
  the same, with its own ERROR;
- keeps each slot's state (:data:`WORKER_STATES`) and its restarts by reason
  (:data:`RESTART_REASONS`) for the metrics (:meth:`WorkerPool.worker_states`,
  :meth:`WorkerPool.worker_restarts`);
- on shutdown (cancellation) closes every channel, on which the workers exit, and kills any
  that has not exited within :data:`STOP_GRACE` seconds: no worker outlives the gateway. A worker
  also exits when the SIP process dies, since its channel then reads end of file. A channel that
  closes (exit, channel error, shutdown: :attr:`WorkerPool.stopping`) wakes at once whoever
  awaits that worker's ``Pong`` (a call's final counters), without waiting for the process.

Counters and activity are pushed by the workers (``Stats``: once per second for a stream that
received something, every 5 s for one whose counters changed otherwise), so ``last_activity``
is at most about a second old and ``statistics()`` a few seconds. A call's record, written as
the call ends, would miss the last second of its packets: the call's end first asks for its
streams' counters (:meth:`CallRelay.final_counters`: ``SendStats``, answered with a ``Stats``
never dropped, then a ``sync``; bounded by its caller). ``sync(worker)`` is a barrier (a
``Ping``/``Pong`` round trip) for tests and benchmarks, and for calls: a call that applied an
answer awaits :meth:`CallRelay.applied` (a ``sync`` of its streams' workers) before its ACK
lets the callee send and its 2xx lets the caller send. Without it the callee's first packets,
sent the moment our ACK arrived, could reach the worker before the answer's messages and be
dropped (the stream was still blocked), which the in-process relay, whose changes take effect
at once, never does.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import math
import os
import socket
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import trio

import gateway
from gateway.core.config import PortRange
from gateway.core.logs import log_exception, transport_error_text
from gateway.core.media.errors import LocalMediaError, PortsExhausted
from gateway.core.media.g711 import G711Transcoding
from gateway.core.media.ice import IceLiteResponder
from gateway.core.media.ports import rtp_ports
from gateway.core.media.relay import (
    Direction,
    DirectionStatistics,
    DtmfInterworking,
    NonRtpHandler,
    RtcpObserver,
    Tap,
    checked_receiver_event,
    payload_type_table,
    red_octets,
)
from gateway.core.media.relay_api import (
    COUNTERS_NO_ANSWER,
    COUNTERS_POOL_STOPPED,
    COUNTERS_STREAM_FAILED,
    COUNTERS_WORKER_EXITED,
)
from gateway.core.media.srtp import SrtpStatistics
from gateway.core.media.tones import Tone
from gateway.core.media.worker_protocol import (
    PROTOCOL_VERSION,
    RECEIVER_EVENT_NOT_TOLD,
    ChannelError,
    Close,
    Datagram,
    DtmfEvent,
    FrameReader,
    LatchPeer,
    Message,
    Open,
    PairsReady,
    Ping,
    PlayTone,
    Pong,
    ProtocolMismatch,
    Rtcp,
    SendDatagram,
    SendDtmf,
    SendStats,
    SetBlocked,
    SetDtls,
    SetDtmf,
    SetIce,
    SetKeys,
    SetOpaque,
    SetPayloadTypes,
    SetReceiverEvent,
    SetRedPayloadTypes,
    SetRemote,
    SetRtcpWatch,
    SetTap,
    SetTranscoding,
    SocketAddress,
    Stats,
    StreamFailed,
    Tables,
    Tapped,
    TappedDatagram,
    check_hello,
    encode,
    socket_address,
)

if TYPE_CHECKING:
    from gateway.core.media.keying import StreamKeys

log = logging.getLogger(__name__)

WORKER_EXITED = "media worker exited"
"""The reason given to the calls of a worker that exited."""

STOP_GRACE = 2.0
"""Seconds a worker gets to exit after its channel closed, before it is killed."""

RESTART_DELAY = 0.5
"""Seconds between a worker's exit and its replacement (no busy loop if it keeps crashing)."""

MAX_RESTART_DELAY = 30.0
"""The longest wait before a restart: the delay doubles while a worker keeps dying young."""

STABLE_RUN = 60.0
"""A worker that ran this long was healthy: its next restart waits only ``RESTART_DELAY``."""

READY_WITHIN = 60.0
"""Seconds a started worker has to send its Hello and first ``PairsReady`` unless the pool is
given another limit (``[media] worker_ready_timeout``); past this it is stopped as hung (a
start-up error, or restarted with back-off). Generous: a loaded machine takes tens of seconds to
start a Python process that imports the media stack (> 30 s seen at load 12)."""

EXIT_USAGE = 2
"""The exit status of a Python program whose command line argparse refused (and of the
interpreter's own usage errors): from a worker that exits with it before its first message, a
command line it did not understand, i.e. a worker of another voipgw version (one from before
``--protocol-version``, which it does not know)."""

WORKER_STATES = ("running", "starting", "restarting", "stopped")
"""What a worker slot is doing (:meth:`WorkerPool.worker_states`): ``running`` (ready, takes new
calls), ``starting`` (a process started, not yet ready), ``restarting`` (its process ended, the
next waits out the back-off), ``stopped`` (not started again until the service restarts)."""

RESTART_REASONS = ("exited", "not_ready", "channel_error", "not_started")
"""Why a worker was restarted (:meth:`WorkerPool.worker_restarts`): ``exited`` (its process
ended: a crash, a kill; its channel read end of file, or a reset when it died with messages
unread), ``not_ready`` (not ready within the limit: hung at start), ``channel_error`` (it sent
a frame that is no message, or did not read what it was sent: this process stopped it),
``not_started`` (its process or channel could not be made at all: out of file descriptors or
memory, or the interpreter gone after an upgrade; tried again with back-off)."""


def next_restart_delay(previous: float | None, ran_for: float, first: float) -> float:
    """Seconds to wait before restarting a worker that exited after ``ran_for`` seconds.

    A worker that keeps dying soon after its start (a bad port slice, a crash on every packet)
    is restarted after ``first``, then twice as long each time, up to :data:`MAX_RESTART_DELAY`,
    so a crash loop neither burns a core nor floods the log; one that ran for
    :data:`STABLE_RUN` seconds starts over from ``first``."""
    if previous is None or ran_for >= STABLE_RUN:
        return first
    return min(previous * 2, MAX_RESTART_DELAY)


APPLIED_WAIT = 1.0
"""Seconds a call waits for its worker to confirm that it applied an answer
(:meth:`CallRelay.applied`) before it sends its ACK anyway: a round trip takes well under a
millisecond; a worker that takes this long is stuck, and its calls would not be relayed either."""

_COUNTERS_MISSING_RANK = {
    COUNTERS_STREAM_FAILED: 0,
    COUNTERS_NO_ANSWER: 1,
    COUNTERS_WORKER_EXITED: 2,
    COUNTERS_POOL_STOPPED: 3,
}
"""One reason per worker: the one that took the most of its counters (a channel closed takes
all its streams', a failed stream only its own)."""

SEND_BUFFER_LIMIT = 16 * 1024 * 1024
"""Octets queued towards a worker that does not read; past this it is declared dead."""

_NO_COUNTS = DirectionStatistics(*(0 for _ in attrs.fields(DirectionStatistics)))

DatagramTap = Callable[[Direction, bytes, tuple[str, int] | None], None]
"""Called with every datagram a worker's opaque stream (T.38 UDPTL) forwarded in a direction,
and the source latched on the sending leg's socket (None before one is): a copy the worker sent
(``TappedDatagram``), as :data:`gateway.core.media.relay.Tap` is for RTP."""


def split_ports(ports: PortRange, workers: int) -> list[PortRange]:
    """``ports`` as ``workers`` disjoint slices of whole RTP/RTCP pairs, as even as can be.

    Raises :class:`LocalMediaError` when a slice would hold fewer than two pairs (one stream)."""
    pairs = list(rtp_ports(ports))
    if workers < 1 or len(pairs) < 2 * workers:
        raise LocalMediaError(
            f"media ports {ports} hold {len(pairs)} pairs: too few for {workers} workers "
            "(each needs at least 2)"
        )
    slices = []
    start = 0
    for index in range(workers):
        size = len(pairs) // workers + (1 if index < len(pairs) % workers else 0)
        first, last = pairs[start], pairs[start + size - 1]
        slices.append(PortRange(first, last + 1))
        start += size
    return slices


@attrs.frozen
class RemotePorts:
    """A worker's port pair as the SIP side knows it: numbers only (the sockets are there)."""

    address: str
    rtp_port: int

    @property
    def rtcp_port(self) -> int:
        return self.rtp_port + 1


@attrs.frozen
class _Address:
    address: str


def _checked_remote(address: tuple[str, int] | None, version: int) -> tuple[str, int] | None:
    """What ``StreamSide.set_remote`` refuses, refused here already (its caller is in this
    process): host names, ports out of range, the other address family."""
    if address is None:
        return None
    host, port = address
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise LocalMediaError(f"remote media host {host!r} is not an IP address") from None
    if not 0 < port < 65536:
        raise LocalMediaError(f"remote media port {port} is out of range")
    if ip.version != version:
        raise LocalMediaError(f"remote media address {host} is not of the relay's address family")
    return (str(ip), port)


class _Channel:
    """One worker's control channel: messages out through a bounded buffer flushed by a task,
    messages in through :class:`FrameReader`."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self._out = bytearray()
        self._wake = trio.Event()
        self._reader = FrameReader()
        self.closed = False
        self.overflowed = False
        """Closed here because the worker left SEND_BUFFER_LIMIT unread (a channel error), not
        because a write failed (the worker is gone: it exited)."""

    def send(self, message: Message) -> bool:
        """Queue ``message``; False when the channel is closed (the worker is gone)."""
        if self.closed:
            return False
        self._out += encode(message)
        if len(self._out) > SEND_BUFFER_LIMIT:
            log.error("media worker channel: %d octets unread; closing it", len(self._out))
            self.overflowed = True
            self.close()
            return False
        self._wake.set()
        return True

    async def write_loop(self) -> None:
        while not self.closed:
            if not self._out:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            try:
                sent = await self._sock.send(self._out)
            except (OSError, trio.ClosedResourceError) as exc:
                log.debug(
                    "media worker channel closed while writing: %s", transport_error_text(exc)
                )
                self.close()
                return
            del self._out[:sent]

    async def messages(self) -> list[Message]:
        """The next messages; an empty list at end of file (or once closed here)."""
        while True:
            try:
                data = await self._sock.recv(262144)
            except trio.ClosedResourceError:
                return []
            if not data:
                return []
            messages = self._reader.feed(data)
            if messages:
                return messages

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._sock.close()
            self._wake.set()


@attrs.define(eq=False)
class _Worker:
    """One worker slot: its port slice, and the process now serving it."""

    index: int
    ports: PortRange
    process: trio.Process | None = None
    channel: _Channel | None = None
    ready: deque[int] = attrs.Factory(deque)
    """RTP ports of pairs the worker has bound and not yet been asked to use."""
    streams: dict[int, RemoteStream] = attrs.Factory(dict)
    pongs: dict[int, trio.Event] = attrs.Factory(dict)
    starts: int = 0
    """Processes started for this slot (1 + restarts)."""
    stopped: str | None = None
    """Why the slot is no longer started (its worker speaks another protocol version, or did not
    understand its command line), or None."""
    ready_at: float | None = None
    """When the process now (or last) serving the slot became ready; None before it was."""
    state: str = "starting"
    """One of :data:`WORKER_STATES`."""
    ended: str = "exited"
    """How the process now (or last) serving the slot ended, one of :data:`RESTART_REASONS`."""
    restarts: dict[str, int] = attrs.Factory(lambda: dict.fromkeys(RESTART_REASONS, 0))
    """Restarts of the slot by reason (:data:`RESTART_REASONS`)."""
    tables: tuple[tuple[str, int], ...] = ()
    """The entries of the process's internal tables it last reported (:class:`Tables`, every
    few seconds); none before its first report."""

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _resident_bytes(pid: int | None) -> int | None:
    """The resident set of process ``pid`` (/proc/PID/statm's second field, in pages), or None
    when there is no such process (any more) or no /proc to read it from."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


@attrs.define(eq=False)
class _StreamLink:
    """What a stream's sides and directions need of it to tell its worker something: its id,
    its channel (None once closed) and the last keys sent (a block flag sent makes them stale).

    They hold this, not the stream: a side or direction that held its stream would make a
    reference cycle with it, and the stream holds its call's ``on_lost``, so every call would
    be left to the cyclic garbage collector (a full collection per minute of 300-590 ms at 80
    calls/s, each refusing the requests behind it as overload: docs/benchmarks.md "Soak")."""

    stream_id: int
    channel: _Channel | None
    keys_sent: StreamKeys | None = None

    def send(self, message: Message) -> bool:
        if self.channel is None:
            return False
        return self.channel.send(message)


@attrs.define(eq=False)
class RemoteSide:
    """A worker stream's side facing one leg (as :class:`~gateway.core.media.relay.StreamSide`)."""

    ports: RemotePorts
    _link: _StreamLink = attrs.field(repr=False)
    _name: str = attrs.field(repr=False)
    _rtcp_mux: bool = False
    _handlers: dict[bool, NonRtpHandler | None] = attrs.field(factory=dict, repr=False)
    _ice: dict[bool, IceLiteResponder | None] = attrs.field(factory=dict, repr=False)

    def set_remote(
        self,
        rtp: tuple[str, int] | None,
        *,
        rtcp: tuple[str, int] | None = None,
        rtcp_mux: bool = False,
    ) -> None:
        """As :meth:`gateway.core.media.relay.StreamSide.set_remote`; the worker applies it."""
        version = ipaddress.ip_address(self.ports.address).version
        remote_rtp = _checked_remote(rtp, version)
        remote_rtcp = _checked_remote(rtcp, version)
        self._rtcp_mux = rtcp_mux
        self._link.send(
            SetRemote(self._link.stream_id, self._name, remote_rtp, remote_rtcp, rtcp_mux)
        )

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
        """Datagrams that are not RTP/RTCP (RFC 7983: DTLS, ...) from this leg's peer on the RTP
        socket (``rtcp``: the RTCP socket) go to ``handler``, forwarded by the worker; as
        :meth:`gateway.core.media.relay.StreamSide.set_non_rtp_handler`, ``sdp_address_only``
        ``proves_peer``, ``handshake_per_source`` and ``other_phones`` included."""
        self._handlers[rtcp] = handler
        self._link.send(
            SetDtls(
                self._link.stream_id,
                self._name,
                rtcp,
                handler is not None,
                sdp_address_only,
                proves_peer,
                handshake_per_source,
                other_phones,
            )
        )

    def set_ice_handler(self, handler: IceLiteResponder | None, *, rtcp: bool = False) -> None:
        """As :meth:`gateway.core.media.relay.StreamSide.set_ice_handler`: the worker answers
        the checks with a responder of its own made from ``handler``'s credentials (they cross
        the channel as values, as SRTP keys do). The same responder again sends nothing."""
        if rtcp in self._ice and self._ice[rtcp] is handler:
            return
        self._ice[rtcp] = handler
        if handler is None:
            message = SetIce(self._link.stream_id, self._name, rtcp, False, "", "", "", "")
        else:
            local, remote = handler.local, handler.remote
            message = SetIce(
                self._link.stream_id,
                self._name,
                rtcp,
                True,
                local.ufrag,
                local.pwd,
                remote.ufrag if remote is not None else "",
                remote.pwd if remote is not None else "",
            )
        self._link.send(message)

    def send(self, packet: bytes, *, rtcp: bool = False, copy_to_sdp_address: bool = True) -> bool:
        """A key exchange's datagram to this leg's peer from the worker's RTP socket (``rtcp``:
        RTCP socket). True when queued (the worker sends it if the leg has an address, or, on an
        ICE leg, once a check selected one: :meth:`~gateway.core.media.relay.StreamSide.send`,
        which also says what ``copy_to_sdp_address`` does)."""
        return self._link.send(
            SendDatagram(self._link.stream_id, self._name, rtcp, packet, copy_to_sdp_address)
        )

    def send_to(self, packet: bytes, destination: tuple[Any, ...], *, rtcp: bool = False) -> bool:
        """The worker sends ``packet`` to ``destination``
        (:meth:`~gateway.core.media.relay.StreamSide.send_to`)."""
        return self._link.send(
            SendDatagram(
                self._link.stream_id,
                self._name,
                rtcp,
                packet,
                False,
                socket_address(destination),
            )
        )

    def latch_peer(self, source: tuple[Any, ...], *, rtcp: bool = False, now: float) -> None:
        """The worker's socket latches ``source``, proved to be this leg's peer before keys
        (:meth:`~gateway.core.media.relay.StreamSide.latch_peer`)."""
        self._link.send(LatchPeer(self._link.stream_id, self._name, rtcp, socket_address(source)))

    def _deliver(self, packet: bytes, source: SocketAddress | None, rtcp: bool) -> None:
        handler = self._handlers.get(rtcp)
        if handler is None:
            return
        try:
            handler(packet, source or ("", 0))
        except Exception:
            log_exception(log, "a non-RTP packet handler failed")


@attrs.define(eq=False)
class RemoteDirection:
    """One direction of a worker stream (as :class:`~gateway.core.media.relay.DirectionControl`)."""

    direction: Direction
    _link: _StreamLink = attrs.field(repr=False)
    _blocked: bool = True  # see WorkerPool.open_stream
    _counts: DirectionStatistics = attrs.field(default=_NO_COUNTS, repr=False)
    _rtcp_observer: RtcpObserver | None = attrs.field(default=None, repr=False)
    _payload_types: dict[int, int] = attrs.field(factory=dict, repr=False)
    _red_payload_types: tuple[int, ...] = attrs.field(default=(), repr=False)
    _dtmf: DtmfInterworking | None = attrs.field(default=None, repr=False)
    _transcoding: G711Transcoding | None = attrs.field(default=None, repr=False)
    _receiver_event: tuple[int, int] | None = attrs.field(default=None, repr=False)

    @property
    def blocked(self) -> bool:
        return self._blocked

    @blocked.setter
    def blocked(self, value: bool) -> None:
        self._blocked = value
        self._link.keys_sent = None  # the worker's flags are no longer the last SetKeys'
        self._link.send(SetBlocked(self._link.stream_id, self.direction.value, value))

    @property
    def rtcp_observer(self) -> RtcpObserver | None:
        """Gets the direction's RTCP, plain, as the worker copies it (``Rtcp`` messages: at most
        one every ``RTCP_COPY_INTERVAL`` seconds per direction, droppable when the channel is
        flooded)."""
        return self._rtcp_observer

    @rtcp_observer.setter
    def rtcp_observer(self, value: RtcpObserver | None) -> None:
        self._rtcp_observer = value
        self._link.send(SetRtcpWatch(self._link.stream_id, self.direction.value, value is not None))

    @property
    def payload_types(self) -> dict[int, int]:
        return dict(self._payload_types)

    @payload_types.setter
    def payload_types(self, value: dict[int, int]) -> None:
        payload_type_table(value)  # out of range: LocalMediaError here, not in the worker
        self._payload_types = dict(value)
        renumbered = tuple(sorted(value.items()))
        self._link.send(SetPayloadTypes(self._link.stream_id, self.direction.value, renumbered))

    @property
    def red_payload_types(self) -> tuple[int, ...]:
        return self._red_payload_types

    @red_payload_types.setter
    def red_payload_types(self, value: tuple[int, ...]) -> None:
        red_octets(value)  # out of range: LocalMediaError here, not in the worker
        self._red_payload_types = tuple(value)
        self._link.send(
            SetRedPayloadTypes(self._link.stream_id, self.direction.value, tuple(value))
        )

    @property
    def transcoding(self) -> G711Transcoding | None:
        """G.711 transcoding of this direction, done by the worker (``SetTranscoding``)."""
        return self._transcoding

    @transcoding.setter
    def transcoding(self, value: G711Transcoding | None) -> None:
        if value == self._transcoding:
            return
        self._transcoding = value
        if value is None:
            message = SetTranscoding(self._link.stream_id, self.direction.value, "", -1, -1)
        else:
            message = SetTranscoding(
                self._link.stream_id,
                self.direction.value,
                value.law.value,
                value.payload_type,
                value.to_payload_type,
            )
        self._link.send(message)

    @property
    def dtmf(self) -> DtmfInterworking | None:
        """DTMF interworking of this direction, done by the worker (``SetDtmf``): its taken
        event packets come back as ``DtmfEvent`` (bounded, droppable) to ``on_event`` here;
        ``taken`` and ``injected`` count what crossed the channel."""
        return self._dtmf

    @dtmf.setter
    def dtmf(self, value: DtmfInterworking | None) -> None:
        if value is self._dtmf:
            return
        self._dtmf = value
        if value is None:
            message = SetDtmf(self._link.stream_id, self.direction.value, -1, -1, 0, 0)
        else:
            message = SetDtmf(
                self._link.stream_id,
                self.direction.value,
                value.take_payload_type,
                value.inject_payload_type,
                value.inject_clock_rate,
                value.last_ssrc,
                value.red_payload_types,
                value.relayed_until_now,
            )
        self._link.send(message)

    @property
    def receiver_telephone_event(self) -> tuple[int, int] | None:
        """The receiving leg's telephone-event in force, for the worker's delayed DTMF end
        copies (``SetReceiverEvent``; :attr:`gateway.core.media.relay.DirectionControl.
        receiver_telephone_event`)."""
        return self._receiver_event

    @receiver_telephone_event.setter
    def receiver_telephone_event(self, value: tuple[int, int] | None) -> None:
        value = checked_receiver_event(value)  # out of range: LocalMediaError here
        if value == self._receiver_event:
            return
        self._receiver_event = value
        payload_type, clock_rate = (RECEIVER_EVENT_NOT_TOLD, 0) if value is None else value
        self._link.send(
            SetReceiverEvent(self._link.stream_id, self.direction.value, payload_type, clock_rate)
        )

    def _dtmf_event(self, packet: bytes) -> None:
        state = self._dtmf
        if state is None or state.on_event is None:
            return  # stopped; copies still in the channel
        state.taken += 1
        try:
            state.on_event(packet)
        except Exception:
            log_exception(log, "a DTMF event handler failed on a worker stream")

    def _rtcp(self, packet: bytes) -> None:
        observer = self._rtcp_observer
        if observer is None:
            return  # stopped; copies still in the channel
        try:
            observer(packet)
        except Exception:
            log_exception(log, "an RTCP observer failed on a worker stream")

    def statistics(self) -> DirectionStatistics:
        """The counters the worker last pushed (at most about a second old)."""
        return self._counts

    def totals(self) -> tuple[int, int, int]:
        counts = self._counts
        return counts.packets, counts.rtp_bytes + counts.rtcp_bytes, counts.dropped

    def dropped_by_reason(self) -> tuple[int, int, int, int, int, int]:
        """The drops by reason the worker last pushed (its counters travel whole, ``Stats``)."""
        return self._counts.dropped_by_reason


@attrs.define(eq=False, init=False)
class RemoteStream:
    """A media stream relayed by a worker process, as :class:`~gateway.core.media.relay.MediaStream`
    is by the in-process relay. Made by :meth:`WorkerPool.open_stream`."""

    id: int
    worker: int
    """Index of the worker slot relaying it."""
    a: RemoteSide
    b: RemoteSide
    a_to_b: RemoteDirection
    b_to_a: RemoteDirection
    failure: str | None
    """Why the stream stopped relaying (its worker exited, the worker refused a request)."""
    _link: _StreamLink = attrs.field(repr=False)
    _pool: WorkerPool = attrs.field(repr=False)
    _on_lost: Callable[[str], None] | None = attrs.field(repr=False)
    _last_activity: float = attrs.field(repr=False)
    _srtp: dict[str, SrtpStatistics] = attrs.field(repr=False)
    _tap: Tap | None = attrs.field(repr=False)
    _datagram_tap: DatagramTap | None = attrs.field(repr=False)
    _opaque: bool = attrs.field(repr=False)
    _on_final_counters: Callable[[], None] | None = attrs.field(repr=False)

    def __init__(
        self,
        pool: WorkerPool,
        worker: _Worker,
        stream_id: int,
        ports: tuple[RemotePorts, RemotePorts],
        on_lost: Callable[[str], None] | None,
    ) -> None:
        self.id = stream_id
        self.worker = worker.index
        link = _StreamLink(stream_id, worker.channel)
        self.a = RemoteSide(ports[0], link, "a")
        self.b = RemoteSide(ports[1], link, "b")
        self.a_to_b = RemoteDirection(Direction.A_TO_B, link)
        self.b_to_a = RemoteDirection(Direction.B_TO_A, link)
        self.failure = None
        self._link = link
        self._pool = pool
        self._on_lost = on_lost
        self._last_activity = trio.current_time()
        self._srtp = {}
        self._tap = None
        self._datagram_tap = None
        self._opaque = False
        self._on_final_counters = None

    @property
    def closed(self) -> bool:
        return self._link.channel is None

    @property
    def final_counters_pending(self) -> bool:
        """Closed with ``on_final_counters`` (:meth:`close`), whose counters have not come yet."""
        return self._on_final_counters is not None

    @property
    def last_activity(self) -> float:
        """When a packet last arrived from either leg (or when the stream was opened), as the
        worker last reported it."""
        return self._last_activity

    @property
    def opaque(self) -> bool:
        """Whether the stream relays datagrams as they are (T.38 UDPTL), not RTP/RTCP: the mode
        last set here (the worker applies it in the order it was set)."""
        return self._opaque

    def send_telephone_event(
        self, direction: str, payload: bytes, *, marker: bool, start: bool
    ) -> bool:
        """Ask the worker to inject one RFC 4733 event packet (``SendDtmf``; the worker's relay
        numbers and protects it as :meth:`gateway.core.media.relay.MediaStream.
        send_telephone_event` does). True once asked: whether it could go is the worker's."""
        control = self.a_to_b if direction == "a_to_b" else self.b_to_a
        state = control._dtmf
        if state is None or state.inject_payload_type < 0:
            return False
        if not self._send(SendDtmf(self.id, direction, marker, start, payload)):
            return False
        state.injected += 1
        return True

    def play_tone(self, direction: str, tone: Tone | None) -> bool:
        """Ask the worker to play ``tone`` to the leg ``direction`` sends to, or to stop (None)
        (``PlayTone``; its relay paces and protects the packets as :meth:`gateway.core.media.
        relay.MediaStream.play_tone` does). False when it cannot play: the stream is closed or
        relays T.38; True once asked."""
        if tone is None:
            message = PlayTone(self.id, direction, "", "", -1)
        elif self._opaque:
            return False
        else:
            message = PlayTone(self.id, direction, tone.plan, tone.codec.value, tone.payload_type)
        return self._send(message)

    def set_opaque(self, opaque: bool) -> None:
        """As :meth:`gateway.core.media.relay.MediaStream.set_opaque`; the worker applies it
        after every message queued before it (remote addresses, keys, taps), as the in-process
        relay would have. A closed stream or no change: nothing is sent."""
        if self._link.channel is None or opaque == self._opaque:
            return
        self._opaque = opaque
        self._send(SetOpaque(self.id, opaque))

    def apply_keys(self, keys: StreamKeys) -> None:
        """Each leg's SRTP keys and the block flag, to the worker, which builds the SRTP
        contexts (:class:`gateway.core.media.keying.StreamSrtp`). Not when the worker has
        these already (the last ``SetKeys``, no ``SetBlocked`` since): a call applies its keys
        at each step of its set-up (three times for a plain call), and the worker would take
        the same keys again for nothing (session 52)."""
        self.a_to_b._blocked = keys.blocked
        self.b_to_a._blocked = keys.blocked
        if keys == self._link.keys_sent:
            return
        self._link.keys_sent = keys
        self._send(
            SetKeys(
                self.id,
                keys.blocked,
                keys.a,
                keys.b,
                keys.a_separate_rtcp,
                keys.a_rtcp,
                keys.b_separate_rtcp,
                keys.b_rtcp,
            )
        )

    def set_tap(self, tap: Tap | None, datagrams: DatagramTap | None = None) -> None:
        """Call ``tap`` with every packet the worker forwards on this stream, decrypted (as the
        in-process relay's taps, :data:`gateway.core.media.relay.Tap`; the worker sends copies
        over the control channel and drops them, counted, when the channel is flooded), and
        ``datagrams`` with every T.38 datagram it forwards while the stream is opaque (with its
        source; without ``datagrams`` they go to ``tap``); None stops both."""
        self._tap = tap
        self._datagram_tap = datagrams if tap is not None else None
        self._send(SetTap(self.id, tap is not None))

    def _tapped(self, message: Tapped) -> None:
        tap = self._tap
        if tap is None:
            return  # stopped; copies still in the channel
        try:
            tap(Direction(message.direction), message.packet)
        except Exception:
            log_exception(log, "a media tap failed on a worker stream")

    def _tapped_datagram(self, message: TappedDatagram) -> None:
        # Which message it came in says what it is: a copy sent before a re-INVITE switched
        # the mode is still what it was when the worker forwarded it.
        datagrams, tap = self._datagram_tap, self._tap
        try:
            if datagrams is not None:
                datagrams(Direction(message.direction), message.packet, message.source)
            elif tap is not None:
                tap(Direction(message.direction), message.packet)
        except Exception:
            log_exception(log, "a media tap failed on a worker stream's T.38 datagram")

    def srtp_statistics(self) -> dict[str, SrtpStatistics]:
        """SRTP counters per leg with keys, as last pushed by the worker."""
        return dict(self._srtp)

    def request_statistics(self) -> bool:
        """Ask the worker for the stream's counters now (``SendStats``: a ``Stats`` it never
        drops); they are here once a :meth:`WorkerPool.sync` sent after this returns. False
        when they cannot come: the stream is closed, or its worker gone."""
        return self.failure is None and self._send(SendStats(self.id))

    def close(self, on_final_counters: Callable[[], None] | None = None) -> None:
        """Stop relaying and release the ports (in the worker). Closing twice is harmless.

        ``on_final_counters``: the worker sends the stream's counters as it closes it
        (``Close.final_counters``: up to a second newer than the last pushed, a stream a
        re-INVITE removed mid-call); they update this stream, then ``on_final_counters`` is
        called, once. Never called when they cannot come (the worker exits first): the
        counters stay the last pushed. A call's end asks for them before it closes
        (:meth:`CallRelay.final_counters`) and passes none.

        A closed stream no longer tells its call it was lost: ``on_lost`` (its CallRelay's,
        which holds this stream) is dropped, so the two make no reference cycle."""
        self._on_lost = None
        channel, self._link.channel = self._link.channel, None
        if channel is None:
            return
        if on_final_counters is not None and self.failure is None:
            if channel.send(Close(self.id, final_counters=True)):
                self._on_final_counters = on_final_counters  # _final_counters forgets it
                return
        else:
            channel.send(Close(self.id))
        self._pool._forget(self)

    def _final_counters(self, stats: Stats, now: float) -> None:
        """The counters the worker sent as it closed the stream (:meth:`close`)."""
        callback, self._on_final_counters = self._on_final_counters, None
        self._pool._forget(self)
        if callback is None:
            return
        self._update(stats, now)
        try:
            callback()
        except Exception:
            log_exception(log, "media stream %d: the final counters callback failed", self.id)

    def __enter__(self) -> RemoteStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, message: Message) -> bool:
        return self._link.send(message)

    def _update(self, stats: Stats, now: float) -> None:
        self.a_to_b._counts = stats.a_to_b
        self.b_to_a._counts = stats.b_to_a
        self._last_activity = max(self._last_activity, now - stats.idle)
        self._srtp = {
            side: srtp
            for side, srtp in (("a", stats.srtp_a), ("b", stats.srtp_b))
            if srtp is not None
        }

    def _lost(self, reason: str) -> None:
        """The worker stopped relaying this stream: tell the call (once)."""
        if self.failure is not None:
            return
        self.failure = reason
        if self._on_lost is not None:
            try:
                self._on_lost(reason)
            except Exception:
                log_exception(log, "media stream %d: the call's failure callback failed", self.id)


class CallRelay:
    """The pool as one call sees it (a :class:`~gateway.core.media.relay_api.Relay`): its
    streams stay on the worker of its first stream while that worker has ports, and
    ``on_lost(reason)`` is called once when one of them stops relaying."""

    def __init__(self, pool: WorkerPool, on_lost: Callable[[str], None] | None) -> None:
        self._pool = pool
        self._on_lost = on_lost
        self._told = False
        self._worker: int | None = None
        self._workers: set[int] = set()  # of every stream it opened
        # Open ones and those their worker lost (their counters stay partial), and those
        # closed since the last open.
        self._streams: list[RemoteStream] = []
        # Of the last final_counters(): why a worker's are missing, and the workers it had
        # asked that had not answered yet (all of them when the caller gave up on it).
        self._missing: dict[int, str] = {}
        self._unanswered: set[int] = set()

    @property
    def allocator(self) -> _Address:
        return self._pool.allocator

    @property
    def carries_opaque(self) -> bool:
        """True: a worker's streams relay T.38 UDPTL datagrams (:meth:`RemoteStream.set_opaque`,
        the worker's in-process relay does it)."""
        return True

    @property
    def interworks_dtmf(self) -> bool:
        """True: a worker's directions do DTMF interworking (``SetDtmf``, ``SendDtmf``,
        ``DtmfEvent``; docs/architecture.md "DTMF interworking")."""
        return True

    def open_stream(self) -> RemoteStream:
        stream = self._pool.open_stream(prefer=self._worker, on_lost=self._lost)
        self._worker = stream.worker
        self._workers.add(stream.worker)
        self._streams = [s for s in self._streams if _counted_at_end(s)]
        self._streams.append(stream)
        return stream

    @property
    def counters_pushed(self) -> bool:
        """True: a worker pushes its streams' counters about once a second (``Stats``)."""
        return True

    async def final_counters(self) -> bool:
        """Bring the counters of the call's open streams up to date (:meth:`gateway.core.media.
        relay_api.Relay.final_counters`): each stream's worker is asked for them
        (:meth:`RemoteStream.request_statistics`), then synced (:meth:`WorkerPool.sync`), so
        its answers are here when this returns. A worker pushes them about once a second by
        itself: read without this, a call's record missed the last second of its packets.
        False when some could not come (a worker exited or is not running, a stream failed):
        those counters are the last pushed. Not bounded here: a worker that does not answer
        is waited for until the caller gives up (:meth:`gateway.core.media.session.
        MediaSession.final_counters`)."""
        self._missing = {}
        asked: list[RemoteStream] = []
        closing: list[RemoteStream] = []  # closed mid-call, their final Stats on the way
        for stream in (s for s in self._streams if _counted_at_end(s)):
            if stream.final_counters_pending:
                closing.append(stream)
            elif stream.request_statistics():
                asked.append(stream)
            else:
                self._note_missing(stream.worker, self._pool._why_unasked(stream))
        workers = sorted({s.worker for s in (*asked, *closing)})
        self._unanswered = set(workers)
        for index in workers:
            try:
                await self._pool.sync(index)
            except LocalMediaError:
                # Not running, or its channel closed meanwhile (it exited: its calls hear
                # on_lost; or the pool is stopping): the wait is woken at once.
                self._note_missing(index, self._pool._why_gone())
            self._unanswered.discard(index)
        # A stream failed meanwhile (its StreamFailed was on the way when SendStats went, or
        # its worker restarted during another worker's sync) had no Stats before the Pong:
        # the worker answers nothing for a stream it no longer has.
        for stream in asked:
            if stream.failure is not None:
                self._note_missing(stream.worker, _failure_why(stream.failure))
        for stream in closing:
            if stream.failure is not None:  # its worker exited before sending them
                self._note_missing(stream.worker, _failure_why(stream.failure))
        return not self._missing

    @property
    def counters_missing(self) -> dict[int, str]:
        """Why the last :meth:`final_counters` could not bring some counters up to date, by
        worker index (:meth:`gateway.core.media.relay_api.Relay.counters_missing`): one of
        :data:`COUNTERS_NO_ANSWER` (a worker asked that had not answered when the caller gave
        up), :data:`COUNTERS_WORKER_EXITED`, :data:`COUNTERS_POOL_STOPPED`,
        :data:`COUNTERS_STREAM_FAILED`. Empty when they all were."""
        missing = dict.fromkeys(self._unanswered, COUNTERS_NO_ANSWER)
        for index, why in self._missing.items():
            if index not in missing or _outranks(why, missing[index]):
                missing[index] = why
        return dict(sorted(missing.items()))

    def _note_missing(self, worker: int, why: str) -> None:
        known = self._missing.get(worker)
        if known is None or _outranks(why, known):
            self._missing[worker] = why

    async def applied(self) -> None:
        """Return once the workers of the call's streams have applied every message sent so
        far (:meth:`WorkerPool.sync`, a round trip each): a proxy's setters only queue
        messages, and a packet that reaches a worker before the answer's ``SetRemote``,
        ``SetKeys`` and ``SetTranscoding`` is relayed by the state of before (blocked:
        dropped). The call awaits this before its ACK lets the callee send
        (:meth:`gateway.core.media.relay_api.Relay.applied`). A worker that exits meanwhile
        ends the call anyway (``on_lost``); one that does not answer within
        :data:`APPLIED_WAIT` seconds is not waited for longer: the call goes on."""
        for index in sorted(self._workers):
            with trio.move_on_after(APPLIED_WAIT) as waited:
                try:
                    await self._pool.sync(index)
                except LocalMediaError:
                    continue  # not running: its streams' calls hear on_lost
            if waited.cancelled_caught:
                log.warning(
                    "media worker %d applied no message within %g s; the call goes on",
                    index,
                    APPLIED_WAIT,
                )

    def session_closed(self) -> None:
        """The call's media session closed (:meth:`gateway.core.media.relay_api.Relay.
        session_closed`), after its final counters: ``on_lost`` (the call's) and the streams
        are dropped. The session holds this relay, and a closed stream's sides and directions
        still hold what the call hung on them (a DTLS datagram handler over the session, a
        quality observer): kept, either would be a cycle through the session and the call."""
        self._on_lost = None
        self._streams = []

    def _lost(self, reason: str) -> None:
        if not self._told:
            self._told = True
            if self._on_lost is not None:
                self._on_lost(reason)


def _outranks(why: str, other: str) -> bool:
    return _COUNTERS_MISSING_RANK[why] > _COUNTERS_MISSING_RANK[other]


def _failure_why(failure: str) -> str:
    """A lost stream's reason (:attr:`RemoteStream.failure`) as a reason its counters are
    missing: its worker exited, or the worker failed that stream."""
    return COUNTERS_WORKER_EXITED if failure == WORKER_EXITED else COUNTERS_STREAM_FAILED


def _counted_at_end(stream: RemoteStream) -> bool:
    """Whether a call's :meth:`CallRelay.final_counters` asks for ``stream``'s counters: it is
    open, or its worker lost it (they cannot come: the call's are partial), or the call closed
    it mid-call and its final counters are on the way (:meth:`RemoteStream.close`: waited for
    with the worker's sync). Not one whose counters were final when the call closed it."""
    return not stream.closed or stream.failure is not None or stream.final_counters_pending


class WorkerPool:
    """``workers`` media worker processes relaying on ``address``, each on its slice of
    ``ports``. Run :meth:`serve` (``await nursery.start(pool.serve)``: returns once every worker
    is ready); open streams with :meth:`open_stream` or per call with :meth:`for_call`.
    ``ringback_tone``: ``[media] ringback_tone``, whose frames each worker makes as it starts.
    """

    def __init__(
        self,
        address: str,
        ports: PortRange,
        workers: int,
        *,
        log_level: str = "info",
        plugin_exception_text: bool = False,
        restart_delay: float = RESTART_DELAY,
        stats_interval: float = 1.0,
        ready_within: float = READY_WITHIN,
        ringback_tone: str = "none",
    ) -> None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise LocalMediaError(f"media address {address!r} is not an IP address") from None
        self.address = str(ip)
        self.slices = split_ports(ports, workers)
        self._workers = [_Worker(index, ports) for index, ports in enumerate(self.slices)]
        self._log_level = log_level
        self._plugin_exception_text = plugin_exception_text
        self._restart_delay = restart_delay
        self._stats_interval = stats_interval
        self._ready_within = ready_within
        self._ringback_tone = ringback_tone
        self._ids = itertools.count(1)
        self._serving = False
        self._stopping = False

    @property
    def stopping(self) -> bool:
        """Whether the pool is stopping or stopped (:meth:`serve` cancelled, the gateway
        shutting down, or failed): its workers' channels close and are not opened again, and a
        call's end asks them nothing more."""
        return self._stopping

    @property
    def allocator(self) -> _Address:
        """The address the workers bind (for :class:`~gateway.core.media.session.MediaSession`)."""
        return _Address(self.address)

    @property
    def carries_opaque(self) -> bool:
        """True: see :attr:`CallRelay.carries_opaque`."""
        return True

    @property
    def interworks_dtmf(self) -> bool:
        """True: see :attr:`CallRelay.interworks_dtmf`."""
        return True

    # -- what calls use ---------------------------------------------------------------------

    def for_call(self, on_lost: Callable[[str], None] | None = None) -> CallRelay:
        """The relay one call's :class:`~gateway.core.media.session.MediaSession` uses."""
        return CallRelay(self, on_lost)

    def open_stream(
        self, *, prefer: int | None = None, on_lost: Callable[[str], None] | None = None
    ) -> RemoteStream:
        """A new stream on worker ``prefer`` if it has two bound pairs ready, else on the ready
        worker with the fewest open streams. Raises :class:`PortsExhausted` (503) when no
        worker has two pairs ready.

        Unlike an in-process stream, it starts blocked in both directions until ``blocked`` is
        set or keys are applied: the call's keying runs right after opening, but the worker
        might see a packet before that message."""
        ready = [w for w in self._workers if w.channel is not None and len(w.ready) >= 2]
        if not ready:
            raise PortsExhausted(
                f"no free media port pair in any of the {len(self._workers)} media workers "
                f"({sum(len(w.streams) for w in self._workers)} streams open)"
            )
        chosen = next((w for w in ready if w.index == prefer), None)
        if chosen is None:
            chosen = min(ready, key=lambda w: len(w.streams))
        assert chosen.channel is not None
        stream_id = self._next_id()
        a_port, b_port = chosen.ready.popleft(), chosen.ready.popleft()
        stream = RemoteStream(
            self,
            chosen,
            stream_id,
            (RemotePorts(self.address, a_port), RemotePorts(self.address, b_port)),
            on_lost,
        )
        chosen.streams[stream_id] = stream
        chosen.channel.send(Open(stream_id, a_port, b_port))
        return stream

    @property
    def streams(self) -> frozenset[RemoteStream]:
        return frozenset(s for w in self._workers for s in w.streams.values())

    def worker_streams(self) -> list[int]:
        """Open streams per worker, by worker index."""
        return [len(w.streams) for w in self._workers]

    def worker_resident_bytes(self) -> list[int | None]:
        """Resident memory of each worker's process now, by worker index (None for a slot with
        no process, or one whose /proc entry cannot be read: it just ended)."""
        return [_resident_bytes(w.pid) for w in self._workers]

    def worker_tables(self) -> list[tuple[tuple[str, int], ...]]:
        """The entries of each running worker's internal tables as it last reported them
        (:class:`Tables`, every few seconds), by worker index; empty for a worker that is not
        running or has not reported yet."""
        return [w.tables if w.state == "running" else () for w in self._workers]

    def worker_ready(self) -> list[int]:
        """Bound port pairs ready for new streams, by worker index."""
        return [len(w.ready) if w.channel is not None else 0 for w in self._workers]

    def worker_pids(self) -> list[int | None]:
        """The process id serving each worker slot now (None while it is being restarted)."""
        return [w.pid for w in self._workers]

    def worker_starts(self) -> list[int]:
        """Processes started per worker slot (1 + its restarts)."""
        return [w.starts for w in self._workers]

    def worker_stopped(self) -> list[str | None]:
        """Why each worker slot is no longer started (its worker speaks another protocol
        version than this process, or did not understand its command line), None for a slot
        that runs or is being restarted."""
        return [w.stopped for w in self._workers]

    def worker_states(self) -> list[str]:
        """What each worker slot is doing, one of :data:`WORKER_STATES`, by worker index."""
        return [w.state for w in self._workers]

    def describe_workers(self, now: float) -> list[dict[str, object]]:
        """Each worker slot as ``voipgw media-workers`` shows it (the control socket's
        ``media_workers`` answer), by worker index: its port slice, state
        (:data:`WORKER_STATES`), process id, open streams, bound port pairs ready, processes
        started, restarts by reason, how its last process ended (once one has: one of
        :data:`RESTART_REASONS`), why it is stopped, for a running one the seconds since it
        became ready (``now``: the trio clock, as ``ready_at``), and its process's resident
        memory (None without one)."""
        described: list[dict[str, object]] = []
        for w in self._workers:
            one_ended = w.starts > 1 or w.state in ("restarting", "stopped")
            running_for = None
            if w.state == "running" and w.ready_at is not None:
                running_for = round(now - w.ready_at, 3)
            described.append(
                {
                    "index": w.index,
                    "ports": str(w.ports),
                    "state": w.state,
                    "pid": w.pid,
                    "streams": len(w.streams),
                    "ready_pairs": len(w.ready) if w.channel is not None else 0,
                    "resident_bytes": _resident_bytes(w.pid),
                    "starts": w.starts,
                    "restarts": dict(w.restarts),
                    "last_ended": w.ended if one_ended and w.stopped is None else None,
                    "stopped": w.stopped,
                    "running_for": running_for,
                }
            )
        return described

    def worker_restarts(self) -> dict[str, int]:
        """Restarts of every worker slot since the start, by reason (:data:`RESTART_REASONS`,
        each present): a process started again after one that ended. A slot stopped for good
        is no restart."""
        return {
            reason: sum(w.restarts[reason] for w in self._workers) for reason in RESTART_REASONS
        }

    async def sync(self, worker: int) -> None:
        """Return once worker ``worker`` has applied every message sent to it so far (a
        :class:`~gateway.core.media.worker_protocol.Ping` round trip). Raises
        :class:`LocalMediaError` when the worker is not running or exits meanwhile."""
        slot = self._workers[worker]
        if slot.channel is None:
            raise LocalMediaError(f"media worker {worker} is not running")
        token = self._next_id()
        done = slot.pongs[token] = trio.Event()
        slot.channel.send(Ping(token))
        try:
            await done.wait()
        finally:
            # Also when given up on (CallRelay.applied waits APPLIED_WAIT at most): a stuck
            # worker that answers late, or never, must not keep one event per answer for ever.
            answered = slot.pongs.pop(token, None) is not None
        if not answered:
            raise LocalMediaError(f"media worker {worker} exited")

    def _next_id(self) -> int:
        # Stream ids and ping tokens are u32 on the channel; after 2**32 they wrap around, long
        # after the stream that had the number closed.
        return next(self._ids) & 0xFFFFFFFF

    def _forget(self, stream: RemoteStream) -> None:
        self._workers[stream.worker].streams.pop(stream.id, None)

    def _why_gone(self) -> str:
        """Why a worker that was to be asked for counters cannot answer: its channel is closed
        or was never open (:data:`COUNTERS_POOL_STOPPED` while the pool stops)."""
        return COUNTERS_POOL_STOPPED if self._stopping else COUNTERS_WORKER_EXITED

    def _why_unasked(self, stream: RemoteStream) -> str:
        """Why ``stream``'s worker could not be asked for its counters
        (:meth:`RemoteStream.request_statistics` said no)."""
        if stream.failure is not None:
            return _failure_why(stream.failure)
        return self._why_gone()  # its channel closed; its on_lost, if any, still to come

    # -- supervision --------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every worker at once, report ready once all are, and keep them running until
        cancelled; then stop them all. Workers that exit (or are stopped) before they were first
        ready are a start-up error (:class:`LocalMediaError`, e.g. the media address is not
        local), raised once every worker is ready or has failed, naming each that failed."""
        if self._serving:
            raise LocalMediaError("the worker pool is already serving")
        self._serving = True
        not_started: list[tuple[int, LocalMediaError]] = []
        try:
            async with trio.open_nursery() as nursery:

                async def start(worker: _Worker) -> None:
                    try:
                        await nursery.start(self._supervise, worker)
                    except LocalMediaError as exc:
                        not_started.append((worker.index, exc))

                # All at once, not one after another: N workers slow to start (a loaded machine)
                # take one ready limit, not N. Each binds only its own slice (split_ports), and
                # no stream opens before this reports ready, so the order they become ready in
                # does not matter; each moves into ``nursery`` once ready.
                async with trio.open_nursery() as starting:
                    for worker in self._workers:
                        starting.start_soon(start, worker)
                if not_started:
                    # The workers that did start are stopped as this nursery cancels them.
                    raise _start_up_error(
                        sorted(not_started, key=lambda item: item[0]), len(self._workers)
                    )
                task_status.started()
        except BaseExceptionGroup as group:
            # A worker that could not start: say so plainly, not as a nursery's group.
            failed = group.subgroup(LocalMediaError)
            if failed is not None and failed.exceptions and len(group.exceptions) == 1:
                first = failed.exceptions[0]
                while isinstance(first, BaseExceptionGroup):
                    first = first.exceptions[0]
                raise first from None
            raise
        finally:
            self._stopping = True  # also for a slot that was restarting or stopped

    async def _supervise(
        self, worker: _Worker, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        first = True
        delay: float | None = None
        while True:
            returncode = await self._run_once(worker, task_status if first else None)
            first = False
            if worker.ended == "not_started":
                # Nothing ran, no stream was carried: back off as from a worker that died at
                # once. Said by _run_once with the system's error; the slot stays "restarting".
                delay = next_restart_delay(delay, 0.0, self._restart_delay)
                worker.state = "restarting"
                worker.restarts["not_started"] += 1
                await trio.sleep(delay)
                continue
            if worker.stopped is not None:
                worker.state = "stopped"
                # It would fail the same way on every start until the service restarts: say it
                # once, start it no more. Its calls ended when the worker before it exited.
                running = sum(w.channel is not None for w in self._workers)
                log.error(
                    "%s. Not restarting media worker %d: new calls go to the %d media worker(s) "
                    "running (none: 503)",
                    worker.stopped,
                    worker.index,
                    running,
                )
                await trio.sleep_forever()
            # How long it served: a worker that was never ready (hung for READY_WITHIN) did not
            # run, and backs off like one that crashed at once.
            ran_for = 0.0 if worker.ready_at is None else trio.current_time() - worker.ready_at
            delay = next_restart_delay(delay, ran_for, self._restart_delay)
            worker.state = "restarting"
            worker.restarts[worker.ended] += 1
            streams = list(worker.streams.values())
            worker.streams.clear()
            worker.ready.clear()
            log.error(
                "media worker %d (ports %s) exited (%s): ending its %d stream(s) with %r; "
                "restarting it in %g s",
                worker.index,
                worker.ports,
                _exit_text(returncode),
                len(streams),
                WORKER_EXITED,
                delay,
            )
            for stream in streams:
                if stream.closed:
                    # Closed mid-call, its final counters never came: the last pushed stay,
                    # partial (CallRelay.final_counters says so). The call is not told: it
                    # closed that stream.
                    stream._on_final_counters = None
                    stream.failure = WORKER_EXITED
                    continue
                stream._link.channel = None
                stream._lost(WORKER_EXITED)
            await trio.sleep(delay)

    async def _run_once(
        self, worker: _Worker, task_status: trio.TaskStatus[None] | None
    ) -> int | None:
        """Run one worker process until its channel ends; returns its exit code (None if it
        had to be killed). A worker that has not sent its Hello and first ``PairsReady`` within
        :data:`READY_WITHIN` seconds is stopped. Raises LocalMediaError when it ends (or is
        stopped) before its first ``PairsReady`` and ``task_status`` is given (start-up).

        At run time a process or channel that cannot be made (OSError: EMFILE under load,
        ENOMEM, the interpreter gone after an upgrade) is said and returns None with
        ``worker.ended`` "not_started", for :meth:`_supervise` to try again with back-off: it
        used to end the whole gateway, every call with it. At start-up it stays a start-up
        error."""
        try:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                worker.process = await trio.lowlevel.open_process(
                    self._command(worker, theirs.fileno()),
                    pass_fds=(theirs.fileno(),),
                    env=_worker_environment(),
                )
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
        except OSError as error:
            if task_status is not None:
                raise
            worker.process = None
            worker.ready_at = None
            worker.ended = "not_started"
            log.error(
                "media worker %d (ports %s) could not be started: %s: trying again with back-off "
                "(its slot carries no call meanwhile)",
                worker.index,
                worker.ports,
                transport_error_text(error),
            )
            return None
        worker.starts += 1
        worker.ready_at = None
        worker.tables = ()
        worker.state = "starting"
        worker.ended = "exited"
        channel = _Channel(trio.socket.from_stdlib_socket(ours))
        was_ready = False
        ready_within = self._ready_within
        said_hello = False
        mismatch: ProtocolMismatch | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(channel.write_loop)
                try:
                    # Until it is ready: a worker that hangs before its first messages would
                    # hang `voipgw run` at start-up, or leave its slot without calls for ever
                    # while its process lives. One scope for the whole loop, lifted once ready.
                    with trio.move_on_after(ready_within) as waiting:
                        while True:
                            messages = await channel.messages()
                            if not messages:
                                if channel.overflowed:  # by us: it left too much unread
                                    # (a failed write also closes it: a worker that died)
                                    worker.ended = "channel_error"
                                break
                            if not said_hello:
                                # Its first message, once per start: never per message.
                                check_hello(messages[0], PROTOCOL_VERSION)
                                said_hello = True
                                messages = messages[1:]
                            for message in messages:
                                self._handle(worker, message)
                            if not was_ready and any(isinstance(m, PairsReady) for m in messages):
                                # Ready even with no pair: ports held by other processes make
                                # calls fail with 503 (PortsExhausted), not the gateway hang.
                                was_ready = True
                                waiting.deadline = math.inf
                                worker.ready_at = trio.current_time()
                                worker.channel = channel
                                worker.state = "running"
                                if task_status is not None:
                                    task_status.started()
                    if waiting.cancelled_caught:
                        worker.ended = "not_ready"
                        log.error(
                            "media worker %d (ports %s) did not say it was ready within %g s: "
                            "stopping it (a machine too loaded to start it in time, or a worker "
                            "that hangs at start; its own log lines, if any, are above)",
                            worker.index,
                            worker.ports,
                            ready_within,
                        )
                except ProtocolMismatch as exc:
                    mismatch = exc
                except ChannelError as exc:
                    if said_hello:
                        worker.ended = "channel_error"
                        log.error("media worker %d sent a bad frame: %s", worker.index, exc)
                    else:
                        # Not even its Hello could be read, whose frame every version shares
                        # (worker_protocol's "Protocol version"): it is no worker of ours.
                        mismatch = ProtocolMismatch(None, PROTOCOL_VERSION)
                except OSError as exc:
                    # ECONNRESET: the worker died with messages of ours unread (a kill, a
                    # crash), which a Unix stream socket reports as a reset, not end of file.
                    log.error(
                        "media worker %d channel failed: %s",
                        worker.index,
                        transport_error_text(exc),
                    )
                nursery.cancel_scope.cancel()
        except BaseException:
            # Cancelled: the pool stops (the gateway shutting down); anything else ends it too.
            # Set before the waits below are woken, which read it (CallRelay.final_counters).
            self._stopping = True
            raise
        finally:
            worker.channel = None
            channel.close()
            # Wake whoever awaits this worker's Pong (a call's final counters, a call's
            # applied) now: sync() sees its token gone and raises. Not after the process has
            # exited (_stop: up to STOP_GRACE), nor never when the pool stops (supervision
            # ends here): each call's end would wait out FINAL_COUNTERS_WAIT.
            for event in worker.pongs.values():
                event.set()
            worker.pongs.clear()
            returncode = await _stop(worker.process)
            worker.process = None
        if mismatch is not None:
            worker.stopped = (
                f"media worker {worker.index} (ports {worker.ports}) speaks media worker protocol "
                f"version {mismatch.theirs_text}, this gateway process {mismatch.ours} "
                f"({_exit_text(returncode)}): the voipgw package was upgraded (or changed) while "
                "the gateway ran; restart the service (e.g. systemctl restart voipgw) to run the "
                "installed version"
            )
            if task_status is not None:
                raise LocalMediaError(worker.stopped)
            return returncode
        if returncode == EXIT_USAGE and not said_hello and not waiting.cancelled_caught:
            # Its command line refused before it said anything: a worker of another release (one
            # from before protocol versions stops on --protocol-version, an option it does not
            # know). It would fail the same way on every start: stopped, as on a mismatch.
            worker.stopped = (
                f"media worker {worker.index} (ports {worker.ports}) exited with status "
                f"{EXIT_USAGE} before its first message: the worker did not understand its "
                "command line: a different voipgw version? restart the service (e.g. systemctl "
                "restart voipgw) to run the installed version (the worker's usage error, if any, "
                "is above)"
            )
            if task_status is not None:
                raise LocalMediaError(worker.stopped)
            return returncode
        if waiting.cancelled_caught and task_status is not None:
            raise LocalMediaError(
                f"media worker {worker.index} (ports {worker.ports}) did not say it was ready "
                f"within {ready_within:g} s ({_exit_text(returncode)}); see the log above"
            )
        if not was_ready and task_status is not None:
            raise LocalMediaError(
                f"media worker {worker.index} (ports {worker.ports}) exited before it was ready "
                f"(exit code {returncode}); its error is in the log above"
            )
        return returncode

    def _command(self, worker: _Worker, fd: int) -> list[str]:
        return [
            sys.executable,
            "-m",
            "gateway.core.media.worker",
            "--fd",
            str(fd),
            "--protocol-version",
            str(PROTOCOL_VERSION),
            "--index",
            str(worker.index),
            "--address",
            self.address,
            "--ports",
            str(worker.ports),
            "--log-level",
            self._log_level,
            "--stats-interval",
            str(self._stats_interval),
            "--ringback-tone",
            self._ringback_tone,
            *(["--plugin-exception-text"] if self._plugin_exception_text else []),
        ]

    def _handle(self, worker: _Worker, message: Message) -> None:
        if isinstance(message, PairsReady):
            worker.ready.extend(message.ports)
            return
        if isinstance(message, Pong):
            pong = worker.pongs.get(message.token)
            if pong is not None:
                pong.set()
            return
        if isinstance(message, Tables):
            worker.tables = message.entries
            return
        if isinstance(
            message, Stats | Datagram | StreamFailed | Tapped | TappedDatagram | Rtcp | DtmfEvent
        ):
            stream = worker.streams.get(message.stream)
            if stream is None:
                return  # closed here meanwhile
            if stream.closed:  # closed here, its final counters to come (RemoteStream.close)
                if isinstance(message, Stats):
                    stream._final_counters(message, trio.current_time())
                return
            if isinstance(message, DtmfEvent):
                (stream.a_to_b if message.direction == "a_to_b" else stream.b_to_a)._dtmf_event(
                    message.packet
                )
            elif isinstance(message, Rtcp):
                (stream.a_to_b if message.direction == "a_to_b" else stream.b_to_a)._rtcp(
                    message.packet
                )
            elif isinstance(message, Tapped):
                stream._tapped(message)
            elif isinstance(message, TappedDatagram):
                stream._tapped_datagram(message)
            elif isinstance(message, Stats):
                stream._update(message, trio.current_time())
            elif isinstance(message, Datagram):
                (stream.a if message.side == "a" else stream.b)._deliver(
                    message.packet, message.source, message.rtcp
                )
            else:
                log.warning("media worker %d: %s", worker.index, message.reason)
                stream._lost(message.reason)
            return
        raise ChannelError(f"a worker does not send {type(message).__name__}")


def _start_up_error(failed: list[tuple[int, LocalMediaError]], workers: int) -> LocalMediaError:
    """One start-up error for the workers that failed to start, by index: the one's own error,
    or every one's, so that the operator fixes them all at once."""
    if len(failed) == 1:
        return failed[0][1]
    return LocalMediaError(
        f"{len(failed)} of {workers} media workers did not start: "
        + "; ".join(str(error) for _, error in failed)
    )


def _exit_text(returncode: int | None) -> str:
    """How a worker ended, as the log lines say it (None: it had to be killed)."""
    return f"exit code {returncode}" if returncode is not None else "channel closed"


async def _stop(process: trio.Process | None) -> int | None:
    """Wait for ``process`` (its channel is closed, so it is exiting), killing it after
    :data:`STOP_GRACE` seconds. Shielded: runs while the gateway shuts down."""
    if process is None:
        return None
    with trio.CancelScope(shield=True):
        with trio.move_on_after(STOP_GRACE):
            return await process.wait()
        log.warning("media worker pid %d did not exit: killing it", process.pid)
        process.kill()
        await process.wait()
    return None


def _worker_environment() -> dict[str, str]:
    """The environment of a worker: ours, with this ``gateway`` package importable (also when
    it runs from a source tree rather than an installed distribution)."""
    env = dict(os.environ)
    root = str(Path(gateway.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env
