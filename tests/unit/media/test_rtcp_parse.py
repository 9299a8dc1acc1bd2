"""The RTCP reader: known answers from RFC 3550 §6.4 / RFC 3611 §4.7 layouts, and its bounds."""

from __future__ import annotations

import struct

import pytest

from gateway.core.media.rtcp import (
    MAX_PACKETS,
    ExtendedReport,
    OtherPacket,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SenderReport,
    VoipMetrics,
    parse_compound_untrusted,
    report_json,
)
from tests.unit.media.rtcp_packets import RR, SDES, SENDER_INFO, SR, header


def test_sender_report_known_answer():
    (sr,) = parse_compound_untrusted(SR)
    assert sr == SenderReport(
        ssrc=0x11111111,
        ntp_timestamp=(0xE8D4A510 << 32) | 0x80000000,
        rtp_timestamp=160_000,
        packet_count=500,
        octet_count=80_000,
        reports=(ReportBlock(0x22222222, 64, 12, 0x1_0005, 96, 0x12345678, 0x8000),),
    )
    # RFC 3550 §6.4.1: LSR is the middle 32 bits of the 64-bit NTP timestamp.
    assert sr.lsr == 0xA5108000


def test_compound_sr_sdes_and_rr_with_negative_cumulative_loss():
    packets = parse_compound_untrusted(RR + SDES)
    assert packets[0] == ReceiverReport(
        0x33333333, (ReportBlock(0x11111111, 3, -1, 70000, 800, 0, 0),)
    )
    assert packets[1] == OtherPacket(202)


def test_voip_metrics_block():
    metrics = struct.pack(
        "!IBBBBHHHHbbBBBBBBBBHHH",
        0x22222222, 13, 2, 0, 0, 0, 0, 48, 60, -20, -70, 30, 16, 88, 127, 41, 43, 0, 0, 40, 80, 200,
    )  # fmt: skip
    xr = header(0, 207, struct.pack("!I", 0x11111111) + struct.pack("!BBH", 7, 0, 8) + metrics)
    (report,) = parse_compound_untrusted(xr)
    assert report == ExtendedReport(
        0x11111111,
        (VoipMetrics(0x22222222, 13, 2, 48, 60, 88, 41, 43, 40, 80),),
    )


def test_padding_on_the_last_packet_only():
    padded = header(1, 201, RR[4:], padding=4)
    (rr,) = parse_compound_untrusted(SDES + padded)[1:]
    assert isinstance(rr, ReceiverReport)
    with pytest.raises(RtcpError, match="padding"):
        parse_compound_untrusted(padded + SDES)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter"),
        (b"\x80\xc9\x00", "shorter"),
        (b"\x40" + SR[1:], "version"),
        (SR + b"\x80", "trailing"),
        (SR[:-4], "past the datagram"),
        (header(2, 201, RR[4:]), "report count"),
        (header(0, 200, SENDER_INFO[:20]), "sender info"),
        (header(0, 201, b""), "SSRC"),
        (header(0, 207, struct.pack("!IBBH", 1, 7, 0, 2) + bytes(8)), "wrong length"),
        (header(0, 207, struct.pack("!IBBH", 1, 9, 0, 9)), "past its packet"),
        (header(0, 201, RR[4:8], padding=8)[:-1] + b"\x0d", "padding count"),
        (RR, None),
    ],
)
def test_malformed(data: bytes, why: str | None):
    if why is None:
        parse_compound_untrusted(data)  # the control case parses
        return
    with pytest.raises(RtcpError, match=why):
        parse_compound_untrusted(data)


def test_bad_padding_count():
    padded = bytearray(header(1, 201, RR[4:], padding=4))
    padded[-1] = 0
    with pytest.raises(RtcpError, match="padding count"):
        parse_compound_untrusted(bytes(padded))
    padded[-1] = 200
    with pytest.raises(RtcpError, match="padding count"):
        parse_compound_untrusted(bytes(padded))


def test_packet_count_bound():
    bye = header(0, 203, b"")
    parse_compound_untrusted(RR + bye * (MAX_PACKETS - 1))
    with pytest.raises(RtcpError, match="more than"):
        parse_compound_untrusted(RR + bye * MAX_PACKETS)


def test_report_json_has_homers_field_names():
    report = report_json(parse_compound_untrusted(SR + SDES))
    assert report == {
        "type": 200,
        "ssrc": 0x11111111,
        "report_count": 1,
        "sender_information": {
            "ntp_timestamp_sec": 0xE8D4A510,
            "ntp_timestamp_usec": 0x80000000,
            "rtp_timestamp": 160_000,
            "packets": 500,
            "octets": 80_000,
        },
        "report_blocks": [
            {
                "source_ssrc": 0x22222222,
                "fraction_lost": 64,
                "packets_lost": 12,
                "highest_seq_no": 0x1_0005,
                "ia_jitter": 96,
                "lsr": 0x12345678,
                "dlsr": 0x8000,
            }
        ],
    }
    assert report_json(parse_compound_untrusted(SDES)) is None
