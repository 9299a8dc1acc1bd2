"""The key handshakes of one call that run on the media path (DTLS-SRTP), driven from one task.

Theory of operation. A key exchange with ``media_path`` (the ``dtls`` plugin) is a sans-IO engine:
it never touches a socket nor a clock. :class:`CallHandshakes` is the call's task that moves its
datagrams and time (RFC 5764 §5.1.2: DTLS shares the 5-tuple of RTP):

- the relay hands every DTLS datagram (RFC 7983: first byte 20..63) arriving on a leg's RTP
  socket to :meth:`CallHandshakes.deliver`, which puts it on a bounded memory channel (full:
  dropped and counted; DTLS retransmits);
- the task waits until the earliest ``get_timer()`` of the streams or a datagram, then for every
  stream: ``handle_timer(now=)`` when due, the datagram to its stream with ``receive_packet``,
  ``packets_to_send(now=)`` out of the leg's RTP socket to the leg's media address, and the
  events: ``KeysReady`` sets the stream's keys and calls ``on_keys`` (the call re-applies
  :class:`~gateway.core.media.keying.CallKeying`, which unblocks the stream);
  ``NegotiationFailed`` calls ``on_failure`` (the call ends: 488, or BYE with a Reason);
- which streams are driven is read afresh from each leg's
  :meth:`~gateway.core.media.security.LegSecurity.media_path_streams` on every round, so a
  re-INVITE's new negotiation is picked up; the call calls :meth:`poke` after SDP changes.

``now`` is ``trio.current_time()``: the virtual clock in component tests, so retransmission and
the handshake timeout are tested without sleeping.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping

import trio

from gateway.core.interfaces import KeysReady, NegotiationFailed
from gateway.core.media.relay_api import Address, RelaySide, RelayStream
from gateway.core.media.security import LegSecurity, StreamSecurity
from gateway.core.media.session import MediaSession

log = logging.getLogger(__name__)

QUEUE = 64
"""Datagrams waiting for the task; more are dropped (a handshake flight is a few datagrams)."""

_Item = tuple[str, int, bytes] | None  # (side, stream index, datagram), or None: look again


class CallHandshakes:
    """The media-path key exchanges of one call. ``legs()`` gives each side's ("a", "b")
    :class:`LegSecurity` (None while a side has none settled); ``on_keys()`` is called when a
    stream got keys; ``on_failure(side, reason)`` when a stream's handshake failed."""

    def __init__(
        self,
        session: MediaSession,
        legs: Callable[[], Mapping[str, LegSecurity | None]],
        *,
        on_keys: Callable[[], None],
        on_failure: Callable[[str, str], None],
    ) -> None:
        self._session = session
        self._legs = legs
        self._on_keys = on_keys
        self._on_failure = on_failure
        self._send, self._receive = trio.open_memory_channel[_Item](QUEUE)
        self._hooked: dict[tuple[str, int], RelayStream] = {}
        self.dropped = 0
        """Datagrams dropped because the queue was full."""

    # -- from the relay and the call --------------------------------------------------------------

    def deliver(self, side: str, index: int, packet: bytes) -> None:
        """A DTLS datagram from leg ``side``'s peer on stream ``index`` (the relay's hook)."""
        try:
            self._send.send_nowait((side, index, packet))
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.dropped += 1

    def poke(self) -> None:
        """The legs' SDP changed: look at the streams again (new negotiations, new streams)."""
        # A full queue wakes the task anyway.
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            self._send.send_nowait(None)

    # -- the task -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Drive the handshakes until cancelled (with the call's nursery)."""
        try:
            item: _Item = None
            while True:
                now = trio.current_time()
                self._round(item, now)
                item = None
                with trio.move_on_at(self._next_timer(now)):
                    item = await self._receive.receive()
        finally:
            self._unhook()
            self._send.close()

    def _round(self, item: _Item, now: float) -> None:
        keys_changed = False
        for side, streams in self._streams().items():
            for index, stream in streams.items():
                self._hook(side, index)
                negotiation = stream.negotiation
                if negotiation is None:
                    continue
                timer = negotiation.get_timer()
                if timer is not None and timer <= now:
                    negotiation.handle_timer(now=now)
                if item is not None and item[0] == side and item[1] == index:
                    negotiation.receive_packet(item[2], now=now)
                relay_side = self._side(side, index)
                for packet in negotiation.packets_to_send(now=now):
                    if relay_side is None or not relay_side.send(packet):
                        log.debug("DTLS datagram for leg %s stream %d not sent", side, index)
                keys_changed |= self._events(side, index, stream)
        if keys_changed:
            self._on_keys()

    def _events(self, side: str, index: int, stream: StreamSecurity) -> bool:
        assert stream.negotiation is not None
        changed = False
        while (event := stream.negotiation.next_event()) is not None:
            if isinstance(event, KeysReady):
                stream.keys = event.keys
                changed = True
            elif isinstance(event, NegotiationFailed):
                stream.keys = None
                stream.failure = event.reason
                self._on_failure(side, event.reason)
        return changed

    def _next_timer(self, now: float) -> float:
        deadline = math.inf
        for streams in self._streams().values():
            for stream in streams.values():
                timer = stream.negotiation.get_timer() if stream.negotiation else None
                if timer is not None:
                    deadline = min(deadline, timer)
        # A timer already due was handled in this round; never spin on one that stays due.
        return deadline if deadline > now else now + 0.001

    def _streams(self) -> dict[str, dict[int, StreamSecurity]]:
        found: dict[str, dict[int, StreamSecurity]] = {}
        for side, security in self._legs().items():
            if security is not None:
                found[side] = security.media_path_streams()
        return found

    # -- the relay's hooks ----------------------------------------------------------------------

    def _side(self, side: str, index: int) -> RelaySide | None:
        stream = self._session.stream_at(index)
        if stream is None:
            return None
        return stream.a if side == "a" else stream.b

    def _hook(self, side: str, index: int) -> None:
        stream = self._session.stream_at(index)
        if stream is None or self._hooked.get((side, index)) is stream:
            return
        relay_side = stream.a if side == "a" else stream.b

        def handler(packet: bytes, source: Address) -> None:
            self.deliver(side, index, packet)

        relay_side.set_non_rtp_handler(handler)
        self._hooked[(side, index)] = stream

    def _unhook(self) -> None:
        for (side, _), stream in self._hooked.items():
            if not stream.closed:
                (stream.a if side == "a" else stream.b).set_non_rtp_handler(None)
        self._hooked.clear()
