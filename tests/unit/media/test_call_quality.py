"""Call quality from RTCP: jitter in ms, RTT from LSR/DLSR, the E-model's R and MOS."""

from __future__ import annotations

import struct

import pytest

from gateway.core.cli import describe_live_quality, describe_quality
from gateway.core.media.quality import (
    MAX_PENDING_SRS,
    STALE_AFTER,
    CallQuality,
    mos_from_r,
    r_factor,
)


def rtcp(packet_type: int, body: bytes, count: int = 1) -> bytes:
    return struct.pack("!BBH", 0x80 | count, packet_type, len(body) // 4) + body


def sender_report(ssrc: int, ntp: int, packets: int) -> bytes:
    return rtcp(200, struct.pack("!IQIII", ssrc, ntp, 0, packets, packets * 160), count=0)


def receiver_report(ssrc: int, fraction: int, lost: int, jitter: int, lsr: int, dlsr: int):
    block = struct.pack("!IB", 0xB0B, fraction) + lost.to_bytes(3, "big", signed=True)
    return rtcp(201, struct.pack("!I", ssrc) + block + struct.pack("!IIII", 9, jitter, lsr, dlsr))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_e_model_known_values():
    # Nothing wrong: d = 10 ms, R = 93.2 - 0.25 = 92.95, MOS about 4.4 (G.711's best).
    assert r_factor(0, 0, 0) == pytest.approx(92.95)
    assert mos_from_r(92.95) == pytest.approx(4.41, abs=0.01)
    # 200 ms RTT, 20 ms jitter, 2 % loss: d = 250, R = 93.2 - 13 - 5 = 75.2.
    assert r_factor(200, 20, 2) == pytest.approx(75.2)
    assert mos_from_r(75.2) == pytest.approx(3.83, abs=0.01)  # 3.632 + 0.198
    # Clamped at both ends.
    assert r_factor(0, 0, 100) == 0.0
    assert mos_from_r(0) == 1.0
    assert mos_from_r(120) == 4.5


def test_report_block_of_a_leg_is_what_that_leg_receives():
    clock = Clock()
    quality = CallQuality(clock)
    # Leg A reports 64/256 = 25 % lost, 12 lost in all, jitter 96 units at 8 kHz = 12 ms.
    quality.observe("a", receiver_report(0xA, 64, 12, 96, 0, 0), 8000)
    leg = quality.legs["a"]
    assert (leg.fraction_lost, leg.lost, leg.jitter_ms) == (0.25, 12, 12.0)
    assert leg.rtt_ms is None
    assert leg.mos == pytest.approx(mos_from_r(r_factor(0, 12, 25)))
    assert quality.record().keys() == {"a"}
    # At 48 kHz (Opus) the same 96 units are 2 ms; the worst jitter stays 12 ms.
    quality.observe("a", receiver_report(0xA, 0, 12, 96, 0, 0), 48000)
    assert leg.jitter_ms == pytest.approx(2.0)
    assert leg.worst_jitter_ms == 12.0
    assert leg.worst_fraction_lost == 0.25
    assert leg.fraction_lost == 0
    assert leg.worst_mos is not None and leg.mos is not None and leg.worst_mos < leg.mos


def test_rtt_from_lsr_and_dlsr():
    """RFC 3550 §6.4.1: B's SR passes at t; A's report answering it arrives at t + 0.3 s and
    says A held the SR 0.25 s: 50 ms between us and A."""
    clock = Clock()
    quality = CallQuality(clock)
    ntp = (3_900_000_000 << 32) | 0x4000_0000
    quality.observe("b", sender_report(0xB, ntp, 250))
    assert quality.legs["b"].packets == 250
    clock.now += 0.3
    lsr = (ntp >> 16) & 0xFFFFFFFF
    quality.observe("a", receiver_report(0xA, 0, 0, 0, lsr, int(0.25 * 65536)))
    assert quality.legs["a"].rtt_ms == pytest.approx(50, abs=0.1)
    assert quality.legs["b"].rtt_ms is None
    # An LSR we never saw (an SR that went around us) gives no RTT.
    quality.observe("b", receiver_report(0xB, 0, 0, 0, 0xDEAD, 10))
    assert quality.legs["b"].rtt_ms is None


def test_pending_srs_are_bounded():
    clock = Clock()
    quality = CallQuality(clock)
    for n in range(MAX_PENDING_SRS + 5):
        quality.observe("b", sender_report(0xB, n << 16, n))
    assert len(quality._srs["b"]) == MAX_PENDING_SRS
    # The oldest went first: the first SR's answer finds nothing, the latest one's does.
    quality.observe("a", receiver_report(0xA, 0, 0, 0, 0, 0))
    quality.observe("a", receiver_report(0xA, 0, 0, 0, 1, 0))
    assert quality.legs["a"].rtt_ms is None
    quality.observe("a", receiver_report(0xA, 0, 0, 0, MAX_PENDING_SRS + 4, 0))
    assert quality.legs["a"].rtt_ms == 0.0


def test_malformed_is_counted_and_listeners_get_the_rest():
    quality = CallQuality(Clock())
    heard = []
    quality.listeners = (lambda side, index, packet, packets: heard.append((side, packet)),)
    quality.observe("b", b"\x80\xc9\x00\x07short")
    assert quality.legs["b"].malformed == 1
    assert quality.legs["b"].rtcp_packets == 0
    assert quality.record()["b"]["rtcp_malformed"] == 1
    assert heard == []
    good = receiver_report(0xB, 0, 0, 0, 0, 0)
    quality.observe("b", good)
    assert heard == [("b", good)]


def test_voipgw_calls_words_a_legs_figures():
    """The line ``voipgw calls`` prints per leg, from the record's figures."""
    quality = CallQuality(Clock())
    quality.observe("a", receiver_report(0xA, 1, 40, 400, 0, 0), 8000)  # 50 ms jitter
    quality.observe("a", receiver_report(0xA, 1, 41, 96, 0, 0), 8000)
    figures = quality.record()["a"]
    assert describe_quality(figures) == (
        "0.4 % lost (41 packets lost in all), jitter 12 ms (worst 50 ms), MOS 4.4 (worst 4.3)"
    )
    assert describe_quality({"rtcp_packets": 1, "packets": 9, "rtcp_malformed": 2}) == (
        "no reports in its RTCP, its phone sent 9 packets, 2 malformed RTCP packets"
    )


def test_live_figures_say_how_old_the_last_report_and_rtcp_are():
    """``voipgw calls`` on a live call: the latest figures and their ages in the clock's
    seconds; an SR without report blocks is RTCP but no report; a malformed datagram neither."""
    clock = Clock()
    quality = CallQuality(clock)
    assert quality.live(("a", "b")) == {"a": None, "b": None}
    quality.observe("a", receiver_report(0xA, 64, 12, 96, 0, 0), 8000)
    clock.now += 7.25
    quality.observe("a", sender_report(0xA, 1 << 32, 100))  # no report block
    quality.observe("a", b"\x80\xc9\x00\x07short")  # malformed: not RTCP that parsed
    clock.now += 3.0
    live = quality.live(("a", "b"))
    assert live["b"] is None
    leg = live["a"]
    assert leg is not None
    assert (leg["fraction_lost"], leg["lost"], leg["jitter_ms"]) == (0.25, 12, 12.0)
    assert leg["last_report_age"] == 10.2  # 10.25, to a tenth
    assert leg["last_rtcp_age"] == 3.0
    assert leg["mos"] == quality.record()["a"]["mos"]
    assert "last_report_age" not in quality.record()["a"]  # the call record keeps no ages
    assert quality.live(("a",)).keys() == {"a"}


def test_voipgw_calls_words_a_live_legs_age_and_staleness():
    figures = {"fraction_lost": 0.004, "lost": 12, "jitter_ms": 12.0, "rtt_ms": 48.0, "mos": 4.2}
    fresh = {**figures, "last_report_age": 3.4, "last_rtcp_age": 3.4}
    assert describe_live_quality(fresh) == (
        "0.4 % lost (12 packets lost in all), jitter 12 ms, RTT 48 ms, MOS 4.2; last report 3 s ago"
    )
    # Up to five reporting intervals (RFC 3550 §6.3.5) is not stale yet; past them it is.
    edge = {**figures, "last_report_age": STALE_AFTER, "last_rtcp_age": STALE_AFTER}
    assert describe_live_quality(edge).endswith("; last report 25 s ago")
    gone = {**figures, "last_report_age": 42.0, "last_rtcp_age": 42.0}
    assert describe_live_quality(gone).endswith(
        "; last report 42 s ago (STALE: no RTCP from its phone since)"
    )
    deaf = {**figures, "last_report_age": 42.0, "last_rtcp_age": 2.0}
    assert describe_live_quality(deaf).endswith(
        "; last report 42 s ago (STALE: its phone's RTCP since, 2 s ago, has no report: "
        "it receives no media)"
    )
    sender_only = {"packets": 9, "last_report_age": None, "last_rtcp_age": 4.0}
    assert describe_live_quality(sender_only) == (
        "no reports in its RTCP, its phone sent 9 packets; last RTCP 4 s ago"
    )
    assert describe_live_quality({**sender_only, "last_rtcp_age": 30.0}).endswith(
        "; last RTCP 30 s ago (STALE: no RTCP from its phone since)"
    )
    assert describe_live_quality(None) == "no RTCP from its phone yet"
