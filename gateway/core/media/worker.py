"""A media worker process: one in-process relay on a slice of the port range, driven over a channel.

Started by :class:`gateway.core.media.remote_relay.WorkerPool` as
``python -m gateway.core.media.worker --fd N --protocol-version V --address IP --ports LOW-HIGH
...`` with one end of a Unix socketpair as descriptor N (the control channel,
:mod:`gateway.core.media.worker_protocol`).

Before anything else it compares V with its own protocol version (the package may have been
upgraded on disk since the SIP process started, worker_protocol's "Protocol version"): on a
mismatch it logs one ERROR naming both and the remedy (restart the service), sends its ``Hello``
(nothing else) and exits with status ``EXIT_PROTOCOL_MISMATCH`` (78), having bound no port.
Otherwise its first message is ``Hello`` too, then ``PairsReady``.

Theory of operation
-------------------
The worker runs the same :class:`~gateway.core.media.relay.MediaRelay` as a single-process
gateway (one trio task owning an epoll; its hot path is unchanged), plus:

- a reserve of port pairs bound ahead of time (:class:`ReservedPorts`), reported to the SIP
  process with ``PairsReady`` and topped up after every ``Open`` and ``Close``: the SIP process
  writes those ports into SDP before the worker has even heard of the stream;
- the control task, which applies each message to its stream: ``SetRemote``, ``SetBlocked``,
  ``SetKeys`` (SRTP contexts built here by :class:`~gateway.core.media.keying.StreamSrtp`, the
  same code the in-process relay uses), ``SetDtls`` (DTLS datagrams from a leg's peer go back as
  ``Datagram``), ``SendDatagram``, ``SetIce`` (ICE-lite: the worker answers the leg's
  connectivity checks itself, gateway/core/media/ice.py), ``SetTap``, ``SetOpaque`` (T.38 fax:
  the stream relays UDPTL
  datagrams as they are, :meth:`~gateway.core.media.relay.MediaStream.set_opaque`),
  ``SetPayloadTypes`` (a direction's RTP payload type renumbering) and ``SetRedPayloadTypes``
  (the RFC 2198 RED payload types whose blocks it rewrites too), ``SetDtmf`` and
  ``SendDtmf`` (DTMF interworking: a direction's taken telephone-event packets go back as
  ``DtmfEvent``, bounded; events injected as the SIP process times them), ``SetReceiverEvent``
  (the receiving leg's telephone-event in force, for the delayed end copies of an event a
  change ended), ``SetTranscoding``
  (a direction's G.711 A-law <-> mu-law transcoding), ``PlayTone`` (a tone the worker plays
  to one leg in place of the other's media, paced by its own relay: a transferee's ringing
  tone), ``Close``, ``SendStats`` (the stream's
  counters now, in a ``Stats`` never dropped: the SIP process asks before a call's record).
  A request it cannot honour ends the stream's call
  (``StreamFailed`` with the reason); keys never appear in that reason;
- a statistics task that pushes each stream's counters and idle time once per
  ``--stats-interval`` while the stream receives (``Stats``).

It exits when its channel reaches end of file: the SIP process closed it (shutdown) or died.
An exception nothing handled (a bug) is logged as the SIP process logs one
(:func:`gateway.core.logs.log_exception`: without the text of what plugin code raised) and the
worker exits 1.
SIGINT is ignored, so a Ctrl-C in a terminal stops the SIP process, which then stops its workers.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

import trio

from gateway.core.c_heap import c_heap_figures
from gateway.core.config import PortRange
from gateway.core.logs import (
    LineFormatter,
    log_exception,
    show_plugin_exception_text,
    transport_error_text,
)
from gateway.core.media.errors import LocalMediaError, PortsExhausted
from gateway.core.media.g711 import G711Transcoding, Law
from gateway.core.media.ice import IceCredentials, IceLiteResponder
from gateway.core.media.keying import StreamKeys, StreamSrtp
from gateway.core.media.ports import PortAllocator, PortPair
from gateway.core.media.relay import (
    Address,
    Direction,
    DirectionControl,
    DirectionStatistics,
    DtmfInterworking,
    MediaRelay,
    MediaStream,
    NonRtpHandler,
    RtcpObserver,
    Tap,
)
from gateway.core.media.srtp import SrtpStatistics
from gateway.core.media.tones import RINGBACK_PLANS, Tone, ToneCodec, prepare_tone_frames
from gateway.core.media.worker_protocol import (
    DTMF_COPIES_PER_SECOND,
    EXIT_PROTOCOL_MISMATCH,
    MAX_DTMF_COPY,
    MAX_RTCP_COPY,
    PROTOCOL_VERSION,
    RECEIVER_EVENT_NOT_TOLD,
    RTCP_COPY_INTERVAL,
    ChannelError,
    Close,
    Datagram,
    DtmfEvent,
    FrameReader,
    Hello,
    LatchPeer,
    Message,
    Open,
    PairsReady,
    Ping,
    PlayTone,
    Pong,
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
    Stats,
    StreamFailed,
    Tables,
    Tapped,
    TappedDatagram,
    encode,
    socket_address,
    version_text,
)

# Its module's name, not __name__: run as ``python -m gateway.core.media.worker`` (as the pool
# starts it) this module is ``__main__``, and its lines would name that logger, which neither an
# operator's logging config nor docs/operations.md's log lines table knows.
log = logging.getLogger("gateway.core.media.worker")

RESERVE_PAIRS = 64
"""Port pairs kept bound ahead of time (32 streams): enough for a burst of new calls between two
``PairsReady`` reports, which follow every ``Open`` within one control round."""

FULL_EVERY = 5
"""Every this many statistics intervals, streams without activity are checked for changed
counters too (a full pass costs a statistics() per stream, so it is not done every time)."""

OUT_BUFFER_LIMIT = 4 * 1024 * 1024
"""Octets queued towards the SIP process; past this, DTLS datagrams and statistics are dropped
(and counted) instead of queued: the SIP process is not reading."""


_Counters = tuple[
    DirectionStatistics, DirectionStatistics, SrtpStatistics | None, SrtpStatistics | None
]
"""A stream's counters as ``Stats`` carries them."""


_STREAM_REQUESTS = (
    SetRemote,
    SetBlocked,
    SetKeys,
    SetDtls,
    SetIce,
    SendDatagram,
    LatchPeer,
    SetTap,
    SetOpaque,
    SetRtcpWatch,
    SetPayloadTypes,
    SetRedPayloadTypes,
    SetTranscoding,
    SetDtmf,
    SetReceiverEvent,
    SendDtmf,
    SendStats,
    PlayTone,
    Close,
)


class ReservedPorts(PortAllocator):
    """A :class:`PortAllocator` that binds pairs ahead of time (:meth:`refill`) and hands the
    relay exactly the pairs the SIP process named (:meth:`claim`, then ``allocate``)."""

    def __init__(self, address: str, ports: PortRange) -> None:
        super().__init__(address, ports)
        self._reserve: dict[int, PortPair] = {}
        self._claimed: list[PortPair] = []

    def refill(self, target: int = RESERVE_PAIRS) -> tuple[int, ...]:
        """Bind pairs until ``target`` are in reserve or the slice is used up; returns the RTP
        ports of the pairs bound now."""
        bound: list[int] = []
        while len(self._reserve) < target and self.available:
            try:
                pair = super().allocate()
            except PortsExhausted:  # the rest is held by other processes
                break
            self._reserve[pair.rtp_port] = pair
            bound.append(pair.rtp_port)
        return tuple(bound)

    def claim(self, *rtp_ports: int) -> None:
        """The next ``allocate`` calls return these reserved pairs, in this order."""
        missing = [port for port in rtp_ports if port not in self._reserve]
        if missing:
            raise LocalMediaError(f"port pair(s) {missing} are not in the worker's reserve")
        self._claimed = [self._reserve.pop(port) for port in rtp_ports]

    def allocate(self) -> PortPair:
        if not self._claimed:
            raise LocalMediaError("no claimed port pair (the SIP process names every pair)")
        return self._claimed.pop(0)

    @property
    def reserved(self) -> int:
        """Pairs bound and kept for the SIP process's next ``Open`` (claimed ones included)."""
        return len(self._reserve) + len(self._claimed)

    def close(self) -> None:
        for pair in self._reserve.values():
            pair.close()
        self._reserve.clear()


class _Outbox:
    """Messages to the SIP process: a bounded buffer flushed by one task."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock
        self._out = bytearray()
        self._wake = trio.Event()
        self.dropped = 0

    def send(self, message: Message, *, droppable: bool = False) -> None:
        if droppable and len(self._out) > OUT_BUFFER_LIMIT:
            self.dropped += 1
            return
        self._out += encode(message)
        self._wake.set()

    async def write_loop(self) -> None:
        """Flush until the channel fails (the SIP process is gone: returns)."""
        while True:
            if not self._out:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            try:
                sent = await self._sock.send(self._out)
            except OSError as exc:
                log.debug("control channel closed while writing: %s", transport_error_text(exc))
                return
            del self._out[:sent]


class Worker:
    """The worker's state: the relay, the reserve, the streams by the SIP process's ids."""

    def __init__(
        self, sock: trio.socket.SocketType, address: str, ports: PortRange, stats_interval: float
    ) -> None:
        self._sock = sock
        self.ports = ReservedPorts(address, ports)
        self.relay = MediaRelay(self.ports)
        self.outbox = _Outbox(sock)
        self._stats_interval = stats_interval
        self._streams: dict[int, tuple[MediaStream, StreamSrtp]] = {}
        self._taps: dict[int, list[tuple[DirectionControl, Tap]]] = {}
        # What was last reported per stream id: its last activity, and its counters.
        self._activity: dict[int, float] = {}
        self._counters: dict[int, _Counters] = {}

    async def run(self) -> None:
        """Serve until the channel ends."""
        self.outbox.send(Hello(PROTOCOL_VERSION))  # first, always (worker_protocol.check_hello)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.relay.serve)
                nursery.start_soon(self._until_done, self.outbox.write_loop, nursery.cancel_scope)
                ports = self.ports.refill()
                if not ports:
                    log.warning("no port pair of %s can be bound now", self.ports.ports)
                self.outbox.send(PairsReady(ports))
                nursery.start_soon(self._push_statistics)
                await self._control()
                nursery.cancel_scope.cancel()
        finally:
            for _, srtp in self._streams.values():
                srtp.close()
            self.relay.close()
            self.ports.close()

    @staticmethod
    async def _until_done(task: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
        await task()
        scope.cancel()

    async def _control(self) -> None:
        reader = FrameReader()
        while True:
            try:
                data = await self._sock.recv(262144)
            except ConnectionResetError:
                data = b""  # the SIP process closed with messages unread: the same as EOF
            except OSError as exc:
                log.error("control channel failed: %s", transport_error_text(exc))
                return
            if not data:
                log.debug("control channel closed: exiting")
                return
            try:
                messages = reader.feed(data)
            except ChannelError as exc:
                log.error("bad frame from the SIP process: %s; exiting", exc)
                return
            for message in messages:
                self.handle(message)

    def handle(self, message: Message) -> None:
        """Apply one message from the SIP process."""
        if isinstance(message, Open):
            self._open(message)
            return
        if isinstance(message, Ping):
            self.outbox.send(Pong(message.token))
            return
        if not isinstance(message, _STREAM_REQUESTS):
            log.error("the SIP process does not send %s; ignored", type(message).__name__)
            return
        entry = self._streams.get(message.stream)
        if entry is None:
            return  # failed to open, or already closed
        stream, srtp = entry
        try:
            if isinstance(message, SetRemote):
                side = stream.a if message.side == "a" else stream.b
                side.set_remote(message.rtp, rtcp=message.rtcp, rtcp_mux=message.rtcp_mux)
            elif isinstance(message, SetBlocked):
                control = stream.a_to_b if message.direction == "a_to_b" else stream.b_to_a
                control.blocked = message.blocked
            elif isinstance(message, SetKeys):
                srtp.apply(
                    stream,
                    StreamKeys(
                        message.a,
                        message.b,
                        message.blocked,
                        message.a_separate_rtcp,
                        message.a_rtcp,
                        message.b_separate_rtcp,
                        message.b_rtcp,
                    ),
                )
            elif isinstance(message, SetDtls):
                side = stream.a if message.side == "a" else stream.b
                handler = (
                    self._dtls_handler(message.stream, message.side, message.rtcp)
                    if message.enabled
                    else None
                )
                side.set_non_rtp_handler(
                    handler,
                    rtcp=message.rtcp,
                    sdp_address_only=message.sdp_address_only,
                    proves_peer=message.proves_peer,
                    handshake_per_source=message.handshake_per_source,
                    other_phones=message.other_phones,
                )
            elif isinstance(message, SetIce):
                side = stream.a if message.side == "a" else stream.b
                side.set_ice_handler(_responder(message), rtcp=message.rtcp)
            elif isinstance(message, SendDatagram):
                side = stream.a if message.side == "a" else stream.b
                if message.destination is not None:
                    side.send_to(message.packet, message.destination, rtcp=message.rtcp)
                else:
                    side.send(
                        message.packet,
                        rtcp=message.rtcp,
                        copy_to_sdp_address=message.copy_to_sdp_address,
                    )
            elif isinstance(message, LatchPeer):
                side = stream.a if message.side == "a" else stream.b
                if message.source is not None:
                    side.latch_peer(message.source, rtcp=message.rtcp, now=trio.current_time())
            elif isinstance(message, SetTap):
                self._set_tap(message.stream, stream, message.enabled)
            elif isinstance(message, SetOpaque):
                stream.set_opaque(message.opaque)
            elif isinstance(message, SetPayloadTypes):
                control = stream.a_to_b if message.direction == "a_to_b" else stream.b_to_a
                control.payload_types = dict(message.renumbered)
            elif isinstance(message, SetRedPayloadTypes):
                control = stream.a_to_b if message.direction == "a_to_b" else stream.b_to_a
                control.red_payload_types = message.red
            elif isinstance(message, SetTranscoding):
                control = stream.a_to_b if message.direction == "a_to_b" else stream.b_to_a
                control.transcoding = (
                    G711Transcoding(Law(message.law), message.payload_type, message.to_payload_type)
                    if message.law
                    else None
                )
            elif isinstance(message, SetDtmf):
                control = stream.a_to_b if message.direction == "a_to_b" else stream.b_to_a
                control.dtmf = self._dtmf(message)
            elif isinstance(message, SetReceiverEvent):
                control = stream.a_to_b if message.direction == "a_to_b" else stream.b_to_a
                control.receiver_telephone_event = (
                    None
                    if message.payload_type == RECEIVER_EVENT_NOT_TOLD
                    else (message.payload_type, message.clock_rate)
                )
            elif isinstance(message, SendDtmf):
                stream.send_telephone_event(
                    message.direction, message.payload, marker=message.marker, start=message.start
                )
            elif isinstance(message, PlayTone):
                tone = (
                    Tone(message.plan, ToneCodec(message.codec), message.payload_type)
                    if message.plan
                    else None
                )
                stream.play_tone(message.direction, tone)
            elif isinstance(message, SendStats):
                # The SIP process waits for it to write a call's record.
                self._send_counters_now(message.stream, stream, srtp)
            elif isinstance(message, SetRtcpWatch):
                control = stream.a_to_b if message.direction == "a_to_b" else stream.b_to_a
                control.rtcp_observer = (
                    self._rtcp_copier(message.stream, message.direction)
                    if message.enabled
                    else None
                )
            else:
                if message.final_counters:  # the SIP process adds them to the call's totals
                    self._send_counters_now(message.stream, stream, srtp)
                self._close(message.stream)
        except LocalMediaError as exc:
            # Our messages never contain key material (srtp.py's rule), so this can be sent.
            self.outbox.send(StreamFailed(message.stream, str(exc)))

    def _open(self, message: Open) -> None:
        try:
            self.ports.claim(message.a_port, message.b_port)
            stream = self.relay.open_stream()
        except LocalMediaError as exc:
            self.outbox.send(StreamFailed(message.stream, str(exc)))
            return
        # Blocked until the call's keying says otherwise (SetKeys or SetBlocked): in-process,
        # keying runs in the same step as the opening; here packets could come in between.
        stream.a_to_b.blocked = True
        stream.b_to_a.blocked = True
        self._streams[message.stream] = (stream, StreamSrtp())
        self._report_new_pairs()

    def _close(self, stream_id: int) -> None:
        stream, srtp = self._streams.pop(stream_id)
        self._taps.pop(stream_id, None)
        self._activity.pop(stream_id, None)
        self._counters.pop(stream_id, None)
        srtp.close()
        stream.close()
        self._report_new_pairs()

    def _report_new_pairs(self) -> None:
        ports = self.ports.refill()
        if ports:
            self.outbox.send(PairsReady(ports))

    def _set_tap(self, stream_id: int, stream: MediaStream, enabled: bool) -> None:
        """Copies of what ``stream`` forwards to the SIP process (its call's media taps), or
        none. Droppable like the handshake datagrams: a flooded channel loses copies, never
        the relay's time. A T.38 datagram of an opaque stream goes as ``TappedDatagram`` with
        the source latched on the sending leg's socket (the SIP process's taps give it to
        interception as an IP packet, taps.py ``_fax``)."""
        for control, attached in self._taps.pop(stream_id, ()):
            control.remove_tap(attached)
        if not enabled:
            return
        outbox = self.outbox

        def copy(direction: Direction, packet: bytes) -> None:
            if stream.opaque:
                # The relay latched this source before it called the tap.
                side = stream.a if direction is Direction.A_TO_B else stream.b
                source = side.rtp_source
                address = None if source is None else (str(source[0]), int(source[1]))
                message: Message = TappedDatagram(stream_id, direction.value, address, packet)
            else:
                message = Tapped(stream_id, direction.value, packet)
            outbox.send(message, droppable=True)

        stream.a_to_b.add_tap(copy)
        stream.b_to_a.add_tap(copy)
        self._taps[stream_id] = [(stream.a_to_b, copy), (stream.b_to_a, copy)]

    def _rtcp_copier(self, stream_id: int, direction: str) -> RtcpObserver:
        """Copies of a direction's plain RTCP to the SIP process (its call's quality), within
        the bounds of :class:`~gateway.core.media.worker_protocol.Rtcp`; droppable like the
        handshake datagrams."""
        outbox = self.outbox
        clock = trio.current_time
        last = [-RTCP_COPY_INTERVAL]

        def copy(packet: bytes) -> None:
            now = clock()
            if len(packet) > MAX_RTCP_COPY or now - last[0] < RTCP_COPY_INTERVAL:
                return
            last[0] = now
            outbox.send(Rtcp(stream_id, direction, packet), droppable=True)

        return copy

    def _dtmf(self, message: SetDtmf) -> DtmfInterworking | None:
        """The direction's DTMF interworking: taken event packets go to the SIP process as
        ``DtmfEvent`` (within :data:`MAX_DTMF_COPY` octets and :data:`DTMF_COPIES_PER_SECOND`,
        droppable); None when the message sets none."""
        take, inject = message.take_payload_type, message.inject_payload_type
        if take < 0 and inject < 0:
            return None
        outbox = self.outbox
        clock = trio.current_time
        stream_id, direction = message.stream, message.direction
        window = [0.0, 0]  # start of the current second, copies in it

        def copy(packet: bytes) -> None:
            now = clock()
            if now - window[0] >= 1.0:
                window[0], window[1] = now, 0
            if len(packet) > MAX_DTMF_COPY or window[1] >= DTMF_COPIES_PER_SECOND:
                return
            window[1] += 1
            outbox.send(DtmfEvent(stream_id, direction, packet), droppable=True)

        return DtmfInterworking(
            take_payload_type=take,
            on_event=copy if take >= 0 else None,
            inject_payload_type=inject,
            inject_clock_rate=message.clock_rate,
            ssrc=message.ssrc,
            red_payload_types=message.red,
            relayed_until_now=message.relayed,
        )

    def _dtls_handler(self, stream_id: int, side: str, rtcp: bool) -> NonRtpHandler:
        outbox = self.outbox

        def handler(packet: bytes, source: Address) -> None:
            # Whole (an IPv6 scope id too): the SIP process hands it back with LatchPeer.
            address = socket_address(source)
            outbox.send(Datagram(stream_id, side, rtcp, address, packet), droppable=True)

        return handler

    def sizes(self) -> dict[str, int]:
        """Entries of the worker's internal tables now (:class:`Tables`): the relay's streams
        and the port pairs they use, the worker's maps by stream id (streams, taps, last activity
        and counters reported), the pairs in reserve, the trio tasks alive, the interpreter's
        allocated memory blocks and the C allocator's bytes in use and free
        (:mod:`gateway.core.c_heap`). Once the calls have ended, each table is back to its idle
        size."""
        found = self.relay.sizes()
        # The relay's allocator counts every pair bound, the reserve included: the streams'.
        found["media_port_pairs"] -= self.ports.reserved
        found["worker_streams"] = len(self._streams)
        found["worker_taps"] = len(self._taps)
        found["worker_activity"] = len(self._activity)
        found["worker_counters"] = len(self._counters)
        found["reserved_port_pairs"] = self.ports.reserved
        found["trio_tasks"] = trio.lowlevel.current_statistics().tasks_living
        found["python_allocated_blocks"] = sys.getallocatedblocks()
        found.update(c_heap_figures())
        return found

    async def _push_statistics(self) -> None:
        """Every interval, report the streams that received something; every
        :data:`FULL_EVERY` intervals also those whose counters changed without activity (drops
        of packets that do not count as activity: malformed, from an unlatched source), and the
        worker's internal tables (:meth:`sizes`)."""
        for round_number in itertools.count(1):
            await trio.sleep(self._stats_interval)
            self._report_new_pairs()  # pairs other processes held may be free again
            full = round_number % FULL_EVERY == 0
            if full:
                self.outbox.send(Tables(tuple(self.sizes().items())), droppable=True)
            now = trio.current_time()
            for stream_id, (stream, srtp) in list(self._streams.items()):
                activity = stream.last_activity
                active = self._activity.get(stream_id) != activity
                if not active and not full:
                    continue
                counters = _counters(stream, srtp)
                if not active and self._counters.get(stream_id) == counters:
                    continue
                self._send_statistics(stream_id, stream, counters, now, droppable=True)

    def _send_counters_now(self, stream_id: int, stream: MediaStream, srtp: StreamSrtp) -> None:
        """The stream's counters now, in a ``Stats`` that is never dropped (``SendStats``,
        ``Close.final_counters``)."""
        counters = _counters(stream, srtp)
        self._send_statistics(stream_id, stream, counters, trio.current_time(), droppable=False)

    def _send_statistics(
        self,
        stream_id: int,
        stream: MediaStream,
        counters: _Counters,
        now: float,
        *,
        droppable: bool,
    ) -> None:
        """Send the stream's ``counters`` and idle time as ``Stats``; remembered as reported."""
        activity = stream.last_activity
        self._activity[stream_id] = activity
        self._counters[stream_id] = counters
        self.outbox.send(Stats(stream_id, max(0.0, now - activity), *counters), droppable=droppable)


def _counters(stream: MediaStream, srtp: StreamSrtp) -> _Counters:
    """A stream's counters as ``Stats`` carries them: each direction's, each leg's SRTP."""
    sides = srtp.statistics()
    return (stream.a_to_b.statistics(), stream.b_to_a.statistics(), sides.get("a"), sides.get("b"))


def _responder(message: SetIce) -> IceLiteResponder | None:
    """The worker's own ICE-lite responder for the credentials the SIP process sent."""
    if not message.enabled:
        return None
    remote = (
        IceCredentials(message.remote_ufrag, message.remote_pwd) if message.remote_ufrag else None
    )
    return IceLiteResponder(IceCredentials(message.local_ufrag, message.local_pwd), remote)


def _first_arguments(argv: list[str] | None) -> argparse.Namespace:
    """``--fd``, ``--index``, ``--log-level`` and ``--protocol-version``, read before the rest:
    a SIP process of another version may pass options this worker does not know, and must
    still be told why this worker cannot serve it rather than argparse's usage error."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--fd")
    parser.add_argument("--index", default="0")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--protocol-version")
    first, _ = parser.parse_known_args(argv)
    return first


def _refuse_protocol(first: argparse.Namespace) -> int:
    """The SIP process that started this worker speaks another protocol version: say so on
    stderr (its log), tell it with a ``Hello`` if it reads one (it gave its version), exit."""
    log.error(
        "media worker %s: the installed voipgw speaks media worker protocol version %d, the "
        "gateway process that started this worker %s: the voipgw package was upgraded (or "
        "changed) while the gateway ran; restart the service (e.g. systemctl restart voipgw) to "
        "run the installed version on both sides. Exiting",
        first.index,
        PROTOCOL_VERSION,
        version_text(first.protocol_version),
    )
    if first.fd is not None and first.fd.isdigit():
        try:
            with socket.socket(fileno=int(first.fd)) as channel:
                # A SIP process from before versions (no --protocol-version) reads no Hello: it
                # would log a "bad frame" on top; it sees the exit status instead.
                if first.protocol_version is not None:
                    channel.sendall(encode(Hello(PROTOCOL_VERSION)))
        except OSError as exc:
            log.debug("cannot send the Hello: %s", transport_error_text(exc))
    return EXIT_PROTOCOL_MISMATCH


def _log_to_stderr(index: str, level: str) -> None:
    handler = logging.StreamHandler()
    # "%(asctime)s %(levelname)s media-worker-N %(name)s: %(message)s"
    handler.setFormatter(LineFormatter(f"media-worker-{index}"))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def _parser() -> argparse.ArgumentParser:
    """The worker's command line. It is half of what a SIP process of one release and a worker
    of another share (the messages are the other half): a change to it bumps PROTOCOL_VERSION
    (worker_protocol's "Protocol version"; pinned by tests/unit/media/test_worker_protocol.py)."""
    parser = argparse.ArgumentParser(prog="python -m gateway.core.media.worker")
    parser.add_argument("--fd", type=int, required=True, help="the control channel's descriptor")
    parser.add_argument(
        "--protocol-version",
        type=int,
        required=True,
        help="the SIP process's (worker_protocol.PROTOCOL_VERSION): this worker exits with "
        f"status {EXIT_PROTOCOL_MISMATCH} when it is not its own",
    )
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--address", required=True)
    parser.add_argument("--ports", required=True, help="LOW-HIGH: this worker's slice")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--stats-interval", type=float, default=1.0)
    parser.add_argument(
        "--ringback-tone",
        choices=("none", *RINGBACK_PLANS),
        default="none",
        help="([media] ringback_tone) the plan whose frames to make before relaying",
    )
    parser.add_argument(
        "--plugin-exception-text", action="store_true", help="([gateway] log_plugin_exception_text)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    first = _first_arguments(argv)
    asks_help = any(word in ("-h", "--help") for word in (sys.argv[1:] if argv is None else argv))
    if first.protocol_version != str(PROTOCOL_VERSION) and not asks_help:
        # Checked once per start, before a port is bound or a message read: never per message.
        _log_to_stderr(first.index, "error")
        return _refuse_protocol(first)
    args = _parser().parse_args(argv)
    # A worker lives as long as its channel: the SIP process closes it as it stops (after its
    # drain), and the kernel closes it if that process dies. Signals meant for the SIP process
    # reach the workers too, and must not end them and the calls they relay: Ctrl-C's SIGINT
    # (the terminal's process group); SIGTERM, which systemd's stop sends to every process of
    # the service at once (KillMode=control-group, its default; and kill -TERM -PGID), so that
    # a worker dying of it cut the calls `[gateway] drain_timeout` waits for (session 63); and
    # SIGHUP, which asks the SIP process to reload its certificates (a terminal's hangup too).
    for ignored in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(ignored, signal.SIG_IGN)
    _log_to_stderr(str(args.index), args.log_level)
    show_plugin_exception_text(args.plugin_exception_text)
    # Before any call's media waits on the loop for them.
    for encoding, why in prepare_tone_frames(args.ringback_tone).items():
        log.warning(
            "transfer ringing tone: its %s frames could not be made (%s): never played in %s"
            " by this worker; a line that takes no other tone codec hears the transferor's"
            " media while a transfer's target rings",
            encoding,
            why,
            encoding,
        )

    async def serve() -> None:
        worker = Worker(
            trio.socket.from_stdlib_socket(socket.socket(fileno=args.fd)),
            args.address,
            PortRange.parse(args.ports),
            args.stats_interval,
        )
        await worker.run()

    try:
        trio.run(serve)
    except Exception:
        # A bug nothing handled: its traceback through log_exception like every other, not
        # printed whole by the interpreter, which would show the text of an exception raised in
        # plugin code. The SIP process sees the exit code, ends this worker's calls and starts
        # it again (remote_relay.WorkerPool._supervise).
        log_exception(log, "media worker %d stopped on an unexpected error", args.index)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
