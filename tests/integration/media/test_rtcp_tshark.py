"""The RTCP reader against Wireshark's dissector: one compound packet (SR with two report blocks,
one with a negative cumulative loss, and an XR VoIP metrics block, RFC 3550 §6.4.1, RFC 3611
§4.7) written to a pcap with text2pcap and decoded by tshark; both must read the same values."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from gateway.core.media.rtcp import ExtendedReport, SenderReport, parse_compound_untrusted
from tests.conftest import require_peer
from tests.unit.media.rtcp_packets import SENDER_INFO, block, header

FIELDS = (
    "rtcp.senderssrc",
    "rtcp.sender.packetcount",
    "rtcp.ssrc.identifier",
    "rtcp.ssrc.fraction",
    "rtcp.ssrc.cum_nr",
    "rtcp.ssrc.ext_high",
    "rtcp.ssrc.jitter",
    "rtcp.ssrc.lsr",
    "rtcp.ssrc.dlsr",
    "rtcp.xr.voipmetrics.rtdelay",
    "rtcp.xr.voipmetrics.rfactor",
    "rtcp.xr.voipmetrics.moslq",
    "rtcp.xr.voipmetrics.jbnominal",
)


def compound() -> bytes:
    blocks = block(0x22222222, 64, 12, 0x1_0005, 96, 0x12345678, 0x8000)
    blocks += block(0x33333333, 3, -2, 70000, 800, 0, 0)
    sr = header(2, 200, SENDER_INFO + blocks)
    metrics = struct.pack(
        "!IBBBBHHHHbbBBBBBBBBHHH",
        0x22222222, 13, 2, 0, 0, 0, 0, 48, 60, -20, -70, 30, 16, 88, 127, 41, 43, 0, 0, 40, 80, 200,
    )  # fmt: skip
    xr = header(0, 207, struct.pack("!IBBH", 0x11111111, 7, 0, 8) + metrics)
    return sr + xr


def test_tshark_reads_what_we_read(tmp_path: Path) -> None:
    tshark = require_peer("tshark")
    text2pcap = require_peer("text2pcap")
    data = compound()
    (tmp_path / "hex.txt").write_text("0000 " + data.hex(" ") + "\n")
    pcap = tmp_path / "rtcp.pcap"
    subprocess.run(
        [text2pcap, "-q", "-u", "5000,5001", str(tmp_path / "hex.txt"), str(pcap)], check=True
    )
    fields = [arg for field in FIELDS for arg in ("-e", field)]
    decoded = subprocess.run(
        [
            tshark,
            "-r",
            str(pcap),
            "-d",
            "udp.port==5001,rtcp",
            "-T",
            "fields",
            "-E",
            "separator=;",
            *fields,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    theirs = dict(zip(FIELDS, (value.split(",") for value in decoded.split(";")), strict=True))

    sr, xr = parse_compound_untrusted(data)
    assert isinstance(sr, SenderReport) and isinstance(xr, ExtendedReport)
    [metrics] = xr.voip_metrics
    assert int(theirs["rtcp.senderssrc"][0], 16) == sr.ssrc
    assert int(theirs["rtcp.sender.packetcount"][0]) == sr.packet_count
    # tshark lists the XR block's source SSRC and loss rate with the report blocks' fields.
    assert [int(v, 16) for v in theirs["rtcp.ssrc.identifier"]] == [
        *(b.ssrc for b in sr.reports),
        metrics.ssrc,
    ]
    assert [int(v) for v in theirs["rtcp.ssrc.fraction"]] == [
        *(b.fraction_lost for b in sr.reports),
        metrics.loss_rate,
    ]
    assert [int(v) for v in theirs["rtcp.ssrc.cum_nr"]] == [b.cumulative_lost for b in sr.reports]
    assert [int(v) for v in theirs["rtcp.ssrc.ext_high"]] == [
        b.highest_sequence for b in sr.reports
    ]
    assert [int(v) for v in theirs["rtcp.ssrc.jitter"]] == [b.jitter for b in sr.reports]
    assert [int(v) for v in theirs["rtcp.ssrc.lsr"]] == [b.lsr for b in sr.reports]
    assert [int(v) for v in theirs["rtcp.ssrc.dlsr"]] == [b.dlsr for b in sr.reports]
    assert int(theirs["rtcp.xr.voipmetrics.rtdelay"][0]) == metrics.round_trip_delay
    assert int(theirs["rtcp.xr.voipmetrics.rfactor"][0]) == metrics.r_factor
    assert float(theirs["rtcp.xr.voipmetrics.moslq"][0]) == metrics.mos_lq / 10
    assert int(theirs["rtcp.xr.voipmetrics.jbnominal"][0]) == metrics.jb_nominal
