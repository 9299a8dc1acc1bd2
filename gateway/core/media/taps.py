"""The taps of one call: copies of its decrypted media (and, for taps that ask, of its SIP) for
tap plugins (recording, lawful intercept), ARCHITECTURE.md "Media path": receive -> unprotect ->
taps -> protect -> send.

Theory of operation. Most taps decide when a call is answered: the call asks every registered
:class:`~gateway.core.interfaces.MediaTap` for a sink (``sink_for_call``). A tap with
``sink_for_call_start`` (lawful intercept) decides when the caller's INVITE becomes a call, so
its sink sees call attempts that never connect, early media and the signalling: the endpoint
hands :meth:`CallTaps.sip_message` a copy of every SIP message on a dialog of the call (the
call's Call-IDs are registered with it as its legs are made). Each sink's ``run`` goes to a
nursery that outlives the call, so a recording is finished after the call's task is gone.
:class:`CallTaps` puts one relay tap (:data:`gateway.core.media.relay.Tap`) on each direction of
each of the call's streams once it has any; the relay calls it with every packet it forwards,
after the sending leg's SRTP was removed and before the receiving leg's is applied, and the tap
hands the packet to every sink (``TapSink.packet`` never blocks: a sink that cannot keep up drops
and counts). Streams that appear later (a re-INVITE adding one) are tapped when the call applies
its keys again (:meth:`attach`). When the call ends, :meth:`close` takes the taps off and closes
the sinks.

What is forwarded is what is tapped: a direction blocked for want of keys forwards, and so taps,
nothing. A stream in a media worker process (``[media] workers``) is tapped by its worker, which
sends the copies over its control channel (worker_protocol ``SetTap``/``Tapped``; a T.38
datagram as ``TappedDatagram``, with the source it came from); a worker whose channel is flooded
drops copies (counted there) rather than slow its relay. A stream that cannot
be tapped at all would be listed in the call's record (``taps``: ``untapped_streams``) and
logged, so a recording known to be incomplete never looks complete.

Pausing (:meth:`CallTaps.pause_recording`, an operator's ``voipgw recording pause``): the sinks
that have ``set_paused`` (recordings: ``siprec``, ``recorder``) are told to stop and start again
(PCI DSS: no card digits recorded); the relay taps keep feeding every sink, and a paused one
drops what it gets. A covert sink is never paused, whatever it has: an interception must get
the whole call (ETSI TS 103 221-2; the warrant, not the operator, says what it gets). The call's
record keeps when and by whom each pause began and ended.

A covert sink (``covert = True``: an interception) is never named in the call's record or in
these log lines: whoever reads them must not learn of it.

T.38 fax (a stream in the relay's opaque mode, :mod:`gateway.core.media.t38`) is not RTP: its
UDPTL datagrams go only to sinks that take them (``datagram``, with the addresses they came from
and to: an interception delivers them as IP packets), never to ``packet``. A recording is of
audio: a sink without ``datagram`` does not get the fax period, and the call logs that once,
naming the (not covert) sinks that miss it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import attrs

from gateway.core.interfaces import TappedMedia, TapSink
from gateway.core.logs import log_exception
from gateway.core.media.relay import Direction, MediaStream, Tap
from gateway.core.media.remote_relay import DatagramTap, RemoteStream
from gateway.core.media.session import MediaSession
from gateway.core.sdp.model import SessionDescription
from gateway.core.transport.flows import Address

log = logging.getLogger(__name__)

MAX_PAUSES_KEPT = 20
"""The pauses of a call its record lists (the last ones; ``pause_count`` counts them all)."""


@attrs.define
class _Tapped:
    stream: MediaStream | RemoteStream
    taps: tuple[Tap, Tap]


class CallTaps:
    """The sinks of one call (``(tap name, sink)``) and the relay taps feeding them."""

    def __init__(
        self,
        call_id: str,
        session: MediaSession | None,
        sinks: Sequence[tuple[str, TapSink]],
        *,
        clock: Callable[[], float],
        media: tuple[TappedMedia, ...] = (),
    ) -> None:
        self._call_id = call_id
        self._session = session
        # One list for the life of the call: the relay taps iterate it, so sinks added at the
        # answer (a recorder) join those made at the start (an interception).
        self._sinks: list[tuple[str, TapSink]] = list(sinks)
        self._sip_sinks = [(name, sink) for name, sink in sinks if _wants_sip(sink)]
        self._clock = clock
        self._media = media  # as the sinks were last told (TappedCall.media at first)
        self._tapped: dict[int, _Tapped] = {}
        self._untapped: set[int] = set()
        self._closed = False
        self._names_at_close: tuple[str, ...] = ()
        self._fax_logged = False
        self._paused = False
        self._pauses: list[dict[str, object]] = []  # the last MAX_PAUSES_KEPT, for the record
        self._pause_count = 0
        # The entries of _pauses still open (not resumed): an operator's, and one for the
        # parties' preferences (RFC 7866 §7.2, a recording that pauses for them); they overlap.
        self._operator_pause: dict[str, object] | None = None
        self._preference_pause: dict[str, object] | None = None
        self.sip_dialogs: set[tuple[str, str | None]] = set()
        """The (Call-ID, tag) keys the endpoint copies SIP messages of to this call's sinks."""

    @property
    def names(self) -> tuple[str, ...]:
        """The taps that may be named (in the record, in logs): covert ones are left out."""
        if self._closed:
            return self._names_at_close
        return tuple(name for name, sink in self._sinks if not getattr(sink, "covert", False))

    @property
    def wants_sip(self) -> bool:
        return bool(self._sip_sinks) and not self._closed

    def use_session(self, session: MediaSession) -> None:
        """The call's media session, once it has one (taps made at the call's start come
        first)."""
        self._session = session

    def add(self, sinks: Sequence[tuple[str, TapSink]]) -> None:
        """Sinks made at the answer, next to those made at the start."""
        if self._closed:
            for name, sink in sinks:
                _close(self._call_id, name, sink)
            return
        if self._session is not None:
            # The sinks there already hear of the streams as they are now; the new ones were
            # just told them (TappedCall.media), so attach() has no change to announce.
            self._tell_changes(self._session)
        self._sinks.extend(sinks)
        self._sip_sinks.extend((name, sink) for name, sink in sinks if _wants_sip(sink))
        if self._paused and self._operator_pause is not None:
            # A recording that joins a paused call starts paused.
            by = str(self._operator_pause["paused_by"])
            for name, sink in sinks:
                if callable(getattr(sink, "set_paused", None)) and not getattr(
                    sink, "covert", False
                ):
                    try:
                        sink.set_paused(True, by=by)  # type: ignore[attr-defined]
                    except Exception:
                        log_exception(log, "media tap %s failed to pause", name)

    def leg_replaced(self, side: str, uri: str = "") -> None:
        """A transfer put another party, ``uri``, on ``side`` ("a", "b"): sinks that care hear
        of it, by ``leg_replaced(side)`` (an interception of the party who left) and by
        ``party_replaced(side, uri)`` (a SIPREC client, whose metadata names the parties)."""
        for name, sink in self._sinks:
            replaced = getattr(sink, "leg_replaced", None)
            joined = getattr(sink, "party_replaced", None)
            try:
                if replaced is not None:
                    replaced(side)
                if joined is not None:
                    joined(side, uri)
            except Exception:
                log_exception(log, "tap %s failed on a transfer", _shown(name, sink))

    def sip_message(
        self,
        data: bytes,
        *,
        leg: str,
        inbound: bool,
        transport: str,
        source: Address,
        destination: Address,
        at: float,
    ) -> None:
        """A SIP message on one of the call's dialogs, for the sinks that want them."""
        copy_sip(
            self._sip_sinks,
            data,
            leg=leg,
            inbound=inbound,
            transport=transport,
            source=source,
            destination=destination,
            at=at,
        )

    def attach(self) -> None:
        """Tap every stream of the call not tapped yet (idempotent), and tell the sinks that
        want to know when the streams changed (``streams_changed``: a hold, a resume)."""
        session = self._session
        if self._closed or not self._sinks or session is None:
            return
        self._tell_changes(session)
        for index, stream in enumerate(session.streams_by_index()):
            if stream is None:
                continue
            tapped = self._tapped.get(index)
            if tapped is not None and tapped.stream is stream:
                continue
            if isinstance(stream, MediaStream):
                tap = self._tap(str(index), stream, set())
                stream.a_to_b.add_tap(tap)
                stream.b_to_a.add_tap(tap)
            elif isinstance(stream, RemoteStream):
                failed: set[str] = set()
                tap = self._tap(str(index), None, failed)
                # Its worker sends the copies; T.38 datagrams with the source they came from.
                stream.set_tap(tap, self._worker_fax(str(index), stream, failed))
            else:
                if index not in self._untapped and self.names:
                    self._untapped.add(index)
                    log.warning(
                        "call %s: stream %d (%s) cannot be tapped by %s",
                        self._call_id,
                        index,
                        type(stream).__name__,
                        ", ".join(self.names),
                    )
                continue
            self._tapped[index] = _Tapped(stream, (tap, tap))

    def recordings(self) -> list[tuple[str, TapSink]]:
        """The sinks a pause applies to: those that have ``set_paused``, never a covert one
        (lawful interception is never paused)."""
        return [
            (name, sink)
            for name, sink in self._sinks
            if callable(getattr(sink, "set_paused", None)) and not getattr(sink, "covert", False)
        ]

    @property
    def paused(self) -> bool:
        return self._paused

    def paused_by_preference(self) -> list[str]:
        """The recordings that stay paused for a party's recording preference (RFC 7866
        §7.2; a sink's optional ``paused_by_preference``, ``[plugins.siprec] recordpref =
        "pause"``), whatever an operator's pause or resume said."""
        return [
            name
            for name, sink in self.recordings()
            if getattr(sink, "paused_by_preference", False) is True
        ]

    def may_indicate(self, name: str) -> bool:
        """Whether tap ``name``'s sink may tell the call's recording-aware parties of its
        recording (RFC 7866 §7.1.1): a sink of the call that is not covert (an interception
        never shows, whatever it says)."""
        return any(tap == name and not getattr(sink, "covert", False) for tap, sink in self._sinks)

    def recordpref_changed(self, side: str, preference: str, *, at: float) -> bool | None:
        """The party on ``side`` ("a", "b") stated a recording preference (RFC 7866 §7.2:
        ``a=recordpref``) at ``at`` (Unix time): the recordings (never a covert sink) that
        have ``recordpref_changed(side, preference)`` hear of it; what they do is theirs. When
        that paused (True) or resumed (False) a recording for the preferences
        (:meth:`paused_by_preference` became non-empty, or empty), the record lists it with
        the operators' pauses, ``paused_by`` the party's preference; else None."""
        if self._closed:
            return None
        held_before = bool(self.paused_by_preference())
        for name, sink in self.recordings():
            told = getattr(sink, "recordpref_changed", None)
            if told is None:
                continue
            try:
                told(side, preference)
            except Exception:
                log_exception(log, "media tap %s failed on a recording preference", name)
        held = bool(self.paused_by_preference())
        if held == held_before:
            return None
        stated = f"{'caller' if side == 'a' else 'callee'} a=recordpref:{preference}"
        if held:
            self._preference_pause = self._pause_entry(at, stated)
        elif self._preference_pause is not None:
            self._preference_pause.update(resumed_at=at, resumed_by=stated)
            self._preference_pause = None
        return held

    def _pause_entry(self, at: float, by: str) -> dict[str, object]:
        """A new pause in the record (the last MAX_PAUSES_KEPT are kept, all counted)."""
        entry: dict[str, object] = {"paused_at": at, "paused_by": by}
        self._pause_count += 1
        self._pauses.append(entry)
        del self._pauses[:-MAX_PAUSES_KEPT]
        return entry

    def pause_recording(self, paused: bool, *, by: str, at: float) -> tuple[list[str], bool]:
        """Pause (``paused``) or resume the call's recordings on ``by``'s request at ``at``
        (Unix time): each of :meth:`recordings` is told (``set_paused(paused, by=)``), and
        the record keeps the pause. The recordings' names and whether anything changed (a
        pause of a paused call changes nothing); no names: the call is not recorded."""
        recordings = self.recordings()
        names = [name for name, _ in recordings]
        if not recordings or self._closed or paused == self._paused:
            return names, False
        self._paused = paused
        if paused:
            self._operator_pause = self._pause_entry(at, by)
        elif self._operator_pause is not None:
            self._operator_pause.update(resumed_at=at, resumed_by=by)
            self._operator_pause = None
        for name, sink in recordings:
            try:
                sink.set_paused(paused, by=by)  # type: ignore[attr-defined]
            except Exception:
                log_exception(log, "media tap %s failed to pause or resume", name)
        return names, True

    def close(self) -> None:
        """The call ended: take the taps off its streams and close every sink."""
        if self._closed:
            return
        self._names_at_close = self.names
        self._closed = True
        for tapped in self._tapped.values():
            stream = tapped.stream
            if stream.closed:
                continue
            if isinstance(stream, MediaStream):
                stream.a_to_b.remove_tap(tapped.taps[0])
                stream.b_to_a.remove_tap(tapped.taps[1])
            else:
                stream.set_tap(None)
        self._tapped.clear()
        self._sip_sinks.clear()
        for name, sink in self._sinks:
            _close(self._call_id, name, sink)
        # A sink may hold the call (its TappedCall's indicate_recording is the call's bound
        # method), and the call holds this: let go of them, so that the call is freed by
        # reference counting once the sinks' tasks have written what they had queued.
        self._sinks.clear()

    def _tell_changes(self, session: MediaSession) -> None:
        media = tapped_media(session.last_sent("a"))
        if media == self._media:
            return
        self._media = media
        for name, sink in self._sinks:
            changed = getattr(sink, "streams_changed", None)
            if changed is None:
                continue
            try:
                changed(media)
            except Exception:
                log_exception(log, "a media tap failed on a change: %s", _shown(name, sink))

    def record(self) -> dict[str, object]:
        """What the call's security record says of its taps."""
        record: dict[str, object] = {
            "names": list(self.names),
            "untapped_streams": sorted(self._untapped),
        }
        if self._pauses:  # voipgw recording pause, a preference: when, by whom, resumed when
            record["paused"] = self._paused or self._preference_pause is not None
            record["pauses"] = [dict(pause) for pause in self._pauses]
            record["pause_count"] = self._pause_count
        return record

    def _tap(self, stream_id: str, stream: MediaStream | None, failed: set[str]) -> Tap:
        """The relay tap of stream ``stream_id``; ``stream`` when it is in this process (it may
        turn to T.38, whose datagrams go to ``_fax``; a worker sends those apart, see
        :meth:`_worker_fax`). ``failed``: the sinks already logged as failing on it."""
        sinks, clock = self._sinks, self._clock

        # Where each direction's datagrams arrive: the relay's port facing the sending leg.
        ours = (
            (stream.a.ports.rtp_socket.getsockname(), stream.b.ports.rtp_socket.getsockname())
            if stream is not None
            else None
        )

        def tap(direction: Direction, packet: bytes) -> None:
            now = clock()
            if stream is not None and ours is not None and stream.opaque:
                a_to_b = direction is Direction.A_TO_B
                source = (stream.a if a_to_b else stream.b).rtp_source
                destination = ours[0] if a_to_b else ours[1]
                self._fax(stream_id, direction, packet, now, failed, source, destination)
                return
            for name, sink in sinks:
                # One sink failing (a bug in a plugin) must not cost another its packets: a
                # recording and an interception are independent.
                try:
                    sink.packet(stream_id, direction.value, packet, now=now)
                except Exception:
                    if name not in failed:
                        failed.add(name)
                        log_exception(
                            log, "media tap %s failed (logged once per stream)", _shown(name, sink)
                        )

        return tap

    def _worker_fax(self, stream_id: str, stream: RemoteStream, failed: set[str]) -> DatagramTap:
        """Where a worker's copies of stream ``stream_id``'s T.38 datagrams go: ``_fax``, with
        the source the worker latched and our port that received them (the worker binds the
        address and ports the SIP process wrote into the SDP)."""
        clock = self._clock
        ours = (
            (stream.a.ports.address, stream.a.ports.rtp_port),
            (stream.b.ports.address, stream.b.ports.rtp_port),
        )

        def fax(direction: Direction, datagram: bytes, source: Address | None) -> None:
            destination = ours[0] if direction is Direction.A_TO_B else ours[1]
            self._fax(stream_id, direction, datagram, clock(), failed, source, destination)

        return fax

    def _fax(
        self,
        stream_id: str,
        direction: Direction,
        datagram: bytes,
        now: float,
        failed: set[str],
        source: Address | None,
        destination: Address,
    ) -> None:
        """A T.38 UDPTL datagram: to the sinks that take datagrams, with its addresses
        (``source``: the sending leg's latched source; ``destination``: our port facing it)."""
        missing: list[str] = []
        for name, sink in self._sinks:
            take = getattr(sink, "datagram", None)
            if take is None:
                missing.append(name)
                continue
            try:
                take(
                    stream_id,
                    direction.value,
                    datagram,
                    now=now,
                    source=source,
                    destination=destination,
                )
            except Exception:
                if name not in failed:
                    failed.add(name)
                    log_exception(log, "media tap %s failed on a T.38 datagram", _shown(name, sink))
        named = [
            name
            for name, sink in self._sinks
            if name in missing and not getattr(sink, "covert", False)
        ]
        if named and not self._fax_logged:
            self._fax_logged = True
            log.info(
                "call %s: its T.38 fax is not recorded by %s (they record audio only)",
                self._call_id,
                ", ".join(named),
            )


def copy_sip(
    sinks: Sequence[tuple[str, TapSink]],
    data: bytes,
    *,
    leg: str,
    inbound: bool,
    transport: str,
    source: Address,
    destination: Address,
    at: float,
) -> None:
    """A SIP message for each of ``sinks`` that takes SIP; one that fails (a plugin's bug) is
    logged and costs the others nothing, nor the call."""
    for name, sink in sinks:
        if not _wants_sip(sink):
            continue
        try:
            sink.sip_message(  # type: ignore[attr-defined]
                data,
                leg=leg,
                inbound=inbound,
                transport=transport,
                source=source,
                destination=destination,
                at=at,
            )
        except Exception:
            log_exception(log, "tap %s failed on a SIP message", _shown(name, sink))


def _wants_sip(sink: TapSink) -> bool:
    return callable(getattr(sink, "sip_message", None))


def _close(call_id: str, name: str, sink: TapSink) -> None:
    try:
        sink.close()
    except Exception:
        log_exception(log, "media tap %s failed to close", _shown(name, sink))


def _shown(name: str, sink: TapSink) -> str:
    """How a log line names a tap: a covert one is not named (and no call id goes with it)."""
    return "(unnamed)" if getattr(sink, "covert", False) else name


def tapped_media(sdp: SessionDescription | None) -> tuple[TappedMedia, ...]:
    """The call's streams as the plain session negotiated them (what we last sent the caller):
    what a tap is told of them."""
    if sdp is None:
        return ()
    return tuple(
        TappedMedia(
            index,
            media.media,
            tuple(media.formats),
            tuple(media.attributes.values("rtpmap")),
            tuple(media.attributes.values("fmtp")),
            sdp.effective_direction(media).value,
        )
        for index, media in enumerate(sdp.media)
        if media.port != 0
    )
