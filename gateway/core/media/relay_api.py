"""What a call needs from the media relay, whether its streams live in this process or in a worker.

:class:`~gateway.core.media.session.MediaSession`, :class:`~gateway.core.media.keying.CallKeying`
and :class:`~gateway.core.media.handshakes.CallHandshakes` drive streams through these
Protocols. Two implementations: the in-process relay (:mod:`gateway.core.media.relay`,
``[media] workers = 1``) and the proxies of a media worker's streams
(:mod:`gateway.core.media.remote_relay`, ``workers >= 2``). Keys are the one difference: an
in-process stream takes transform callables, a worker's stream takes the keys themselves (see
:mod:`gateway.core.media.keying`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from gateway.core.media.g711 import G711Transcoding
from gateway.core.media.relay import (
    Address,
    DirectionStatistics,
    DtmfInterworking,
    NonRtpHandler,
    RtcpObserver,
)
from gateway.core.media.tones import Tone

COUNTERS_NO_ANSWER = "no answer"
"""Why a worker's counters are missing from a call's final counters
(:attr:`Relay.counters_missing`): it was asked and had not answered when the caller gave up
(:data:`gateway.core.media.session.FINAL_COUNTERS_WAIT`): stuck, or too loaded."""

COUNTERS_WORKER_EXITED = "worker exited"
"""A worker's counters are missing: it exited (or its channel failed) before it answered."""

COUNTERS_POOL_STOPPED = "stopped with the gateway"
"""A worker's counters are missing: the pool stopped (the gateway shutting down) and closed its
channel."""

COUNTERS_STREAM_FAILED = "stream failed"
"""A worker's counters are missing: it failed one of the call's streams (``StreamFailed``), which
it answers no more for."""


class LocalPorts(Protocol):
    """The local port pair of a stream side, as advertised in that leg's SDP."""

    @property
    def rtp_port(self) -> int: ...

    @property
    def rtcp_port(self) -> int: ...


class HasAddress(Protocol):
    @property
    def address(self) -> str: ...


class RelaySide(Protocol):
    """The half of a stream facing one leg (:class:`gateway.core.media.relay.StreamSide`)."""

    @property
    def ports(self) -> LocalPorts: ...

    def set_remote(
        self,
        rtp: tuple[str, int] | None,
        *,
        rtcp: tuple[str, int] | None = None,
        rtcp_mux: bool = False,
    ) -> None: ...

    @property
    def rtcp_mux(self) -> bool: ...

    def set_non_rtp_handler(
        self,
        handler: NonRtpHandler | None,
        *,
        rtcp: bool = False,
        sdp_address_only: bool = False,
        proves_peer: bool = False,
        handshake_per_source: bool = False,
        other_phones: bool = False,
    ) -> None: ...

    def send(
        self, packet: bytes, *, rtcp: bool = False, copy_to_sdp_address: bool = True
    ) -> bool: ...

    def send_to(
        self, packet: bytes, destination: tuple[Any, ...], *, rtcp: bool = False
    ) -> bool: ...

    def latch_peer(self, source: tuple[Any, ...], *, rtcp: bool = False, now: float) -> None: ...


class RelayDirection(Protocol):
    """One direction of a stream (:class:`gateway.core.media.relay.DirectionControl`)."""

    @property
    def blocked(self) -> bool: ...

    @blocked.setter
    def blocked(self, value: bool) -> None: ...

    @property
    def rtcp_observer(self) -> RtcpObserver | None: ...

    @rtcp_observer.setter
    def rtcp_observer(self, value: RtcpObserver | None) -> None: ...

    @property
    def payload_types(self) -> dict[int, int]:
        """RTP payload types renumbered in this direction (sent -> expected by the receiver;
        :attr:`gateway.core.media.relay.DirectionControl.payload_types`); empty: none."""
        ...

    @payload_types.setter
    def payload_types(self, value: dict[int, int]) -> None: ...

    @property
    def red_payload_types(self) -> tuple[int, ...]:
        """The sending leg's RFC 2198 RED payload types, whose blocks a renumbering rewrites
        too (:attr:`gateway.core.media.relay.DirectionControl.red_payload_types`)."""
        ...

    @red_payload_types.setter
    def red_payload_types(self, value: tuple[int, ...]) -> None: ...

    @property
    def transcoding(self) -> G711Transcoding | None:
        """G.711 A-law <-> mu-law transcoding on this direction (:attr:`gateway.core.media.
        relay.DirectionControl.transcoding`); None: none."""
        ...

    @transcoding.setter
    def transcoding(self, value: G711Transcoding | None) -> None: ...

    @property
    def dtmf(self) -> DtmfInterworking | None:
        """DTMF interworking on this direction (:attr:`gateway.core.media.relay.
        DirectionControl.dtmf`); only a relay that :attr:`Relay.interworks_dtmf` takes one."""
        ...

    @dtmf.setter
    def dtmf(self, value: DtmfInterworking | None) -> None: ...

    @property
    def receiver_telephone_event(self) -> tuple[int, int] | None:
        """(payload type, clock rate) of the receiving leg's telephone-event in force, (-1, 0):
        none, None: not told (:attr:`gateway.core.media.relay.DirectionControl.
        receiver_telephone_event`)."""
        ...

    @receiver_telephone_event.setter
    def receiver_telephone_event(self, value: tuple[int, int] | None) -> None: ...

    def statistics(self) -> DirectionStatistics: ...

    def totals(self) -> tuple[int, int, int]:
        """``statistics()``'s ``packets``, ``rtp_bytes + rtcp_bytes`` and ``dropped``: what the
        media session's summary reads, without building the statistics."""
        ...

    def dropped_by_reason(self) -> tuple[int, int, int, int, int, int]:
        """``statistics().dropped_by_reason``: the drops by reason, in the order of
        :data:`gateway.core.media.relay.DROP_REASONS`, without building the statistics."""
        ...


class RelayStream(Protocol):
    """One relayed media stream (:class:`gateway.core.media.relay.MediaStream`)."""

    @property
    def a(self) -> RelaySide: ...

    @property
    def b(self) -> RelaySide: ...

    @property
    def a_to_b(self) -> RelayDirection: ...

    @property
    def b_to_a(self) -> RelayDirection: ...

    @property
    def closed(self) -> bool: ...

    @property
    def last_activity(self) -> float: ...

    @property
    def opaque(self) -> bool:
        """Whether the stream relays T.38 UDPTL datagrams as they are, not RTP."""
        ...

    def set_opaque(self, opaque: bool) -> None:
        """Relay opaque datagrams (T.38) or RTP (:meth:`gateway.core.media.relay.MediaStream.
        set_opaque`); only a relay that :attr:`Relay.carries_opaque` can turn it on."""
        ...

    def send_telephone_event(
        self, direction: str, payload: bytes, *, marker: bool, start: bool
    ) -> bool:
        """Inject one RFC 4733 event packet (:meth:`gateway.core.media.relay.MediaStream.
        send_telephone_event`); False when it cannot go."""
        ...

    def play_tone(self, direction: str, tone: Tone | None) -> bool:
        """Play ``tone`` to the leg ``direction`` sends to, in place of the other leg's media
        that way, or stop (None) (:meth:`gateway.core.media.relay.MediaStream.play_tone`);
        False when it cannot play."""
        ...

    def close(self, on_final_counters: Callable[[], None] | None = None) -> None:
        """Stop relaying and release the ports. ``on_final_counters``: called once if the
        stream's counters change with its close (a media worker sends its last ones then,
        :meth:`gateway.core.media.remote_relay.RemoteStream.close`); the in-process relay's are
        final at close and never call it."""
        ...


class Relay(Protocol):
    """Opens streams (:class:`gateway.core.media.relay.MediaRelay`)."""

    @property
    def allocator(self) -> HasAddress: ...

    @property
    def carries_opaque(self) -> bool:
        """Whether its streams can relay T.38 UDPTL datagrams (:meth:`RelayStream.set_opaque`)."""
        ...

    @property
    def interworks_dtmf(self) -> bool:
        """Whether its streams take DTMF interworking (:attr:`RelayDirection.dtmf`): the
        in-process relay and the media workers both do (docs/architecture.md "DTMF
        interworking"); a relay that does not leaves DTMF as it comes."""
        ...

    def open_stream(self) -> RelayStream: ...

    async def applied(self) -> None:
        """Return once every change made to the streams so far (remote addresses, keys and
        block flags, transcoding, renumbering, ...) applies to the next packet that arrives.
        A call awaits it before it lets a peer send: before the ACK of the callee's 2xx and
        our 2xx to the caller, since a callee may send its first packet as soon as our ACK
        reaches it. The in-process relay returns at once; a media worker's streams take a
        round trip over its channel (:meth:`gateway.core.media.remote_relay.CallRelay.applied`)."""
        ...

    @property
    def counters_pushed(self) -> bool:
        """Whether its streams' counters are pushed to this process from elsewhere (media
        workers), so that a call's end awaits :meth:`final_counters`; False for the
        in-process relay, whose counters are always those of now: its calls skip the wait
        and its cancel scope (docs/architecture.md "A call's final counters")."""
        ...

    async def final_counters(self) -> bool:
        """Return once the counters of the open streams (``statistics()``, ``totals()``,
        ``srtp_statistics()``) are those of now: a call awaits it before it writes its record
        and its metrics. True when they are; False when some could not be brought up to date
        (they are the last known). The in-process relay's are at once (True); a media worker's
        take a round trip (:meth:`gateway.core.media.remote_relay.CallRelay.final_counters`),
        and the caller bounds the wait."""
        ...

    @property
    def counters_missing(self) -> Mapping[int, str]:
        """Why the last :meth:`final_counters` could not bring some counters up to date, by
        media worker index, one of :data:`COUNTERS_NO_ANSWER` (asked, and not answered when
        the caller gave up), :data:`COUNTERS_WORKER_EXITED`, :data:`COUNTERS_POOL_STOPPED`,
        :data:`COUNTERS_STREAM_FAILED`. Empty when
        they all were, and always for the in-process relay. Read for the call's
        ``media-counters-partial`` line (docs/operations.md)."""
        ...

    def session_closed(self) -> None:
        """The call's media session closed (its streams too), after its final counters: a
        relay of one call drops what it holds of the call: ``on_lost``, a bound method of the
        call, and the closed streams, whose sides and directions still hold the call's
        handlers (the session holds the relay: kept, either is a cycle, and with media
        workers every call was cyclic garbage). The in-process relay serves every call and
        holds none of them."""
        ...


__all__ = [
    "COUNTERS_NO_ANSWER",
    "COUNTERS_POOL_STOPPED",
    "COUNTERS_STREAM_FAILED",
    "COUNTERS_WORKER_EXITED",
    "Address",
    "HasAddress",
    "LocalPorts",
    "Relay",
    "RelayDirection",
    "RelaySide",
    "RelayStream",
]
