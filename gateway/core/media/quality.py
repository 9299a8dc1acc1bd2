"""Call quality per leg, from the RTCP the legs' phones send (RFC 3550 §6.4), read in passing.

Theory of operation
-------------------
The relay forwards RTCP unchanged; for calls it observes (:class:`CallQuality`) it also hands each
plain RTCP datagram (after SRTCP unprotect, before any protect) to :meth:`CallQuality.observe`,
with the side it came from. RTCP is about one datagram per stream every five seconds, so this
costs nothing next to RTP, which is never looked at.

What the figures mean. Packets are relayed with their SSRCs, so a report block that leg A's phone
sends is about the media it receives from the far end, through us: its fraction lost, cumulative
lost and jitter are what **leg A hears** (loss on the whole B -> us -> A path). They are filed under
leg A ("caller leg: 0.4 % lost, jitter 12 ms"). ``packets`` is the packet count of the leg's own
SRs (what its phone says it sent).

Round-trip time (RFC 3550 §6.4.1): an SR from leg B passes through us on its way to A; we note when
it arrived and the middle 32 bits of its NTP timestamp (its LSR key). When A's report block
answers it (LSR = that key, DLSR = how long A held it), ``now - arrival - DLSR`` is the round trip
between **this gateway and phone A** (our forwarding of the SR, A's network both ways). Kept per
leg; the phones' own end-to-end RTT is not ours to see.

Jitter is converted from RTP timestamp units to ms with the stream's clock rate (from its SDP
rtpmap; 8000 Hz when unknown).

MOS, from a simplified ITU-T G.107 E-model as rtpengine, Homer and PingPlotter use it::

    effective latency  d = RTT + 2 * jitter + 10 ms           (all in ms)
    R = 93.2 - d / 40                   if d < 160 ms
    R = 93.2 - (d - 120) / 10           otherwise
    R = R - 2.5 * loss percent          (then clamped to 0..100)
    MOS = 1 + 0.035 R + 7e-6 R (R - 60) (100 - R)     (1.0 .. 4.5)

Limits: it knows no codec (G.107's equipment impairment Ie: G.711 with no loss scores 4.4
whatever the actual codec), treats loss as random (no burst model), uses the leg's RTT for the
delay (0 when the gateway could not measure one), and the jitter the phone reports rather than
its jitter buffer's discards. It ranks calls and legs; it is not a listening test. A phone's own
XR VoIP metrics MOS (RFC 3611 §4.7), when it sends one, is kept beside it as ``xr_mos``.

Live figures (``voipgw calls`` on a call that is up, :meth:`CallQuality.live`): each leg also
keeps when its last report block and its last RTCP arrived, two floats written per datagram
already read. A phone that stops sending RTCP leaves figures that only age; one whose RTCP goes on
without report blocks receives no media (RFC 3550 §6.4: a report block only for a source heard
since the last report), so its loss figures age too. The ages are worked out when asked, never
per packet.

Bounds: at most :data:`MAX_PENDING_SRS` SRs awaiting their answer per leg; counters are plain
ints; nothing grows with the length of the call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.core.logs import log_exception
from gateway.core.media.rtcp import (
    UNAVAILABLE,
    ExtendedReport,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    RtcpPacket,
    SenderReport,
    parse_compound_untrusted,
)
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import MediaDescription

log = logging.getLogger(__name__)

MAX_PENDING_SRS = 16
"""SRs remembered per leg for the RTT of the report block that answers them (a report answers
the latest SR it received, so a few suffice even with several streams)."""

DEFAULT_CLOCK_RATE = 8000

STALE_AFTER = 25.0
"""Seconds after which a leg's last report is stale: RFC 3550 §6.3.5 times a member out after
five reporting intervals (M = 5), and a two-party audio call reports every 5 s (§6.2's minimum)."""

RtcpListener = Callable[[str, int, bytes, list[RtcpPacket]], None]
"""Takes the side (``"a"``/``"b"``) an RTCP datagram came from, the index of its stream (m= line),
the plain datagram and its parsed packets (the HEP capture agent sends it to Homer). Must not
block; an exception is logged."""


def r_factor(rtt_ms: float, jitter_ms: float, loss_percent: float) -> float:
    """The simplified E-model's R (see the module docstring), 0..100."""
    effective = rtt_ms + 2 * jitter_ms + 10
    r = 93.2 - effective / 40 if effective < 160 else 93.2 - (effective - 120) / 10
    r -= 2.5 * loss_percent
    return min(100.0, max(0.0, r))


def mos_from_r(r: float) -> float:
    """ITU-T G.107 Annex B: R to the MOS estimate, 1.0 .. 4.5."""
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)


class LegQuality:
    """What one leg's phone reported (see the module docstring), latest and worst. Mutable,
    owned by a :class:`CallQuality`."""

    __slots__ = (
        "fraction_lost",
        "jitter_ms",
        "last_report",
        "last_rtcp",
        "lost",
        "malformed",
        "mos",
        "packets",
        "reports",
        "rtcp_packets",
        "rtt_ms",
        "worst_fraction_lost",
        "worst_jitter_ms",
        "worst_mos",
        "worst_rtt_ms",
        "xr_mos",
    )

    def __init__(self) -> None:
        self.rtcp_packets = 0  # RTCP datagrams from this leg that parsed
        self.malformed = 0  # and those that did not (relayed all the same)
        self.reports = 0  # report blocks read
        self.packets: int | None = None  # the leg's own SR packet count
        self.fraction_lost: float | None = None  # 0..1, latest report
        self.worst_fraction_lost: float | None = None
        self.lost: int | None = None  # cumulative, latest report
        self.jitter_ms: float | None = None
        self.worst_jitter_ms: float | None = None
        self.rtt_ms: float | None = None
        self.worst_rtt_ms: float | None = None
        self.mos: float | None = None
        self.worst_mos: float | None = None
        self.xr_mos: float | None = None
        self.last_report: float | None = None  # clock of the latest report block's arrival
        self.last_rtcp: float | None = None  # and of the latest RTCP that parsed

    def record(self) -> dict[str, object]:
        """The figures for the call record (JSON); rounded for people."""
        return {
            "rtcp_packets": self.rtcp_packets,
            "rtcp_malformed": self.malformed,
            "packets": self.packets,
            "lost": self.lost,
            "fraction_lost": _rounded(self.fraction_lost, 4),
            "worst_fraction_lost": _rounded(self.worst_fraction_lost, 4),
            "jitter_ms": _rounded(self.jitter_ms, 1),
            "worst_jitter_ms": _rounded(self.worst_jitter_ms, 1),
            "rtt_ms": _rounded(self.rtt_ms, 1),
            "worst_rtt_ms": _rounded(self.worst_rtt_ms, 1),
            "mos": _rounded(self.mos, 2),
            "worst_mos": _rounded(self.worst_mos, 2),
            "xr_mos": self.xr_mos,
        }

    def live(self, now: float) -> dict[str, object]:
        """:meth:`record`, and how many seconds before ``now`` (the clock's) the latest report
        block and the latest RTCP arrived (None: never), for a call that is up."""
        figures = self.record()
        figures["last_report_age"] = _age(self.last_report, now)
        figures["last_rtcp_age"] = _age(self.last_rtcp, now)
        return figures


def _age(then: float | None, now: float) -> float | None:
    return None if then is None else round(max(0.0, now - then), 1)


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


class CallQuality:
    """The RTCP figures of one call's two legs (``a``: the caller, ``b``: the callee).

    ``clock`` gives seconds (the relay's clock). :meth:`observer` makes the callable a stream
    direction hands each RTCP datagram to."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        # Made at a leg's first RTCP: a call without RTCP pays for no more than this object.
        self.legs: dict[str, LegQuality] = {}
        # Per sending leg: LSR key of its SRs -> when the SR passed through us.
        self._srs: dict[str, dict[int, float]] = {}
        self._media: dict[int, MediaDescription] = {}
        self.listeners: tuple[RtcpListener, ...] = ()

    def set_media(self, index: int, media: MediaDescription) -> None:
        """The m= line of stream ``index`` (its first format's clock rate converts jitter).
        Only kept: read when that stream's RTCP arrives, so a call without RTCP parses nothing."""
        self._media[index] = media

    def clock_rate(self, index: int) -> int:
        """The RTP clock rate of stream ``index``'s first format (RFC 3551 static payload types,
        else its a=rtpmap), or :data:`DEFAULT_CLOCK_RATE`."""
        media = self._media.get(index)
        if media is None or not media.formats:
            return DEFAULT_CLOCK_RATE
        try:
            rtpmap = media.rtpmap(int(media.formats[0]))
        except (SdpError, ValueError):
            return DEFAULT_CLOCK_RATE
        if rtpmap is None or rtpmap.clock_rate <= 0:
            return DEFAULT_CLOCK_RATE
        return rtpmap.clock_rate

    def observer(self, side: str, index: int) -> Callable[[bytes], None]:
        """The observer (:data:`gateway.core.media.relay.RtcpObserver`) of RTCP arriving from
        ``side``'s leg on stream ``index``."""

        def observe(packet: bytes) -> None:
            self.observe(side, packet, self.clock_rate(index), index)

        return observe

    def observe(
        self, side: str, packet: bytes, clock_rate: int = DEFAULT_CLOCK_RATE, index: int = 0
    ) -> None:
        """One plain RTCP datagram from ``side``'s leg on stream ``index``. Never raises: a
        malformed one is counted."""
        leg = self.legs.get(side)
        if leg is None:
            leg = self.legs[side] = LegQuality()
            self._srs[side] = {}
        try:
            packets = parse_compound_untrusted(packet)
        except RtcpError:
            leg.malformed += 1
            return
        leg.rtcp_packets += 1
        now = self._clock()
        leg.last_rtcp = now
        answered = self._srs.get("b" if side == "a" else "a", {})
        for rtcp in packets:
            if isinstance(rtcp, SenderReport):
                leg.packets = rtcp.packet_count
                pending = self._srs[side]
                if len(pending) >= MAX_PENDING_SRS:
                    del pending[next(iter(pending))]  # the oldest (dicts keep insertion order)
                pending[rtcp.lsr] = now
                self._reports(leg, rtcp.reports, answered, now, clock_rate)
            elif isinstance(rtcp, ReceiverReport):
                self._reports(leg, rtcp.reports, answered, now, clock_rate)
            elif isinstance(rtcp, ExtendedReport):
                for metrics in rtcp.voip_metrics:
                    if metrics.mos_lq != UNAVAILABLE and 10 <= metrics.mos_lq <= 50:
                        leg.xr_mos = metrics.mos_lq / 10
        for listener in self.listeners:
            try:
                listener(side, index, packet, packets)
            except Exception:
                log_exception(log, "an RTCP listener failed")

    def _reports(
        self,
        leg: LegQuality,
        reports: tuple[ReportBlock, ...],
        answered: dict[int, float],
        now: float,
        clock_rate: int,
    ) -> None:
        for block in reports:
            leg.reports += 1
            leg.last_report = now
            fraction = block.fraction_lost / 256
            jitter_ms = block.jitter * 1000 / (clock_rate or DEFAULT_CLOCK_RATE)
            leg.fraction_lost = fraction
            leg.lost = block.cumulative_lost
            leg.jitter_ms = jitter_ms
            leg.worst_fraction_lost = _most(leg.worst_fraction_lost, fraction)
            leg.worst_jitter_ms = _most(leg.worst_jitter_ms, jitter_ms)
            # RFC 3550 §6.4.1: RTT = arrival of the report - LSR's SR - DLSR. Here the SR's
            # arrival at the gateway stands in for its sending, so this is our RTT to the leg.
            sent = answered.get(block.lsr) if block.lsr else None
            if sent is not None:
                rtt_ms = (now - sent - block.dlsr / 65536) * 1000
                # DLSR counts in 1/65536 s and the phone's clock is not ours: a hair below 0
                # is 0; well below is a report of another SR with the same LSR, ignored.
                if rtt_ms > -1:
                    rtt_ms = max(0.0, rtt_ms)
                    leg.rtt_ms = rtt_ms
                    leg.worst_rtt_ms = _most(leg.worst_rtt_ms, rtt_ms)
            mos = mos_from_r(r_factor(leg.rtt_ms or 0.0, jitter_ms, fraction * 100))
            leg.mos = mos
            leg.worst_mos = mos if leg.worst_mos is None else min(leg.worst_mos, mos)

    def record(self) -> dict[str, dict[str, object]]:
        """Per leg, the figures of :meth:`LegQuality.record`; legs whose phone sent no RTCP are
        left out."""
        return {side: self.legs[side].record() for side in ("a", "b") if side in self.legs}

    def live(self, sides: tuple[str, ...]) -> dict[str, dict[str, object] | None]:
        """Per leg of ``sides`` (those the call has), the figures of :meth:`LegQuality.live` as
        of now; None for a leg whose phone has sent no RTCP yet."""
        now = self._clock()
        return {side: self.legs[side].live(now) if side in self.legs else None for side in sides}


def _most(worst: float | None, value: float) -> float:
    return value if worst is None or value > worst else worst
