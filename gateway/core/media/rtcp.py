"""RTCP reports, read (never written): sender and receiver reports and XR VoIP metrics.

Theory of operation
-------------------
A phone sends RTCP about once every five seconds per stream (RFC 3550 §6.2). A compound packet
(RFC 3550 §6.1) is a run of RTCP packets back to back, each with its own 4-octet header::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|    RC   |      PT       |             length            |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

``length`` counts 32-bit words minus one. :func:`parse_compound_untrusted` reads:

- SR (PT 200, RFC 3550 §6.4.1): the sender's SSRC, its NTP and RTP timestamps, packet and octet
  counts, then RC report blocks;
- RR (PT 201, §6.4.2): the reporter's SSRC, then RC report blocks;
- a report block (24 octets): the SSRC it is about, fraction lost (8 bits, /256), cumulative
  packets lost (24 bits, signed), extended highest sequence number, interarrival jitter (in RTP
  timestamp units), LSR (the middle 32 bits of the NTP timestamp of the last SR received from
  that source) and DLSR (the delay since, in 1/65536 s);
- XR (PT 207, RFC 3611 §2) VoIP metrics blocks (BT 7, §4.7): loss and discard rates, round-trip
  and end-system delay, R factor and MOS as the phone estimates them. Other XR blocks are
  skipped.

Every other packet type (SDES, BYE, APP, feedback) is skipped by its length. The checks are those
of RFC 3550 Appendix A.2: version 2 throughout, lengths that add up to the datagram exactly,
padding (the P bit) only on the last packet. Reduced-size RTCP (RFC 5506) is accepted: the first
packet need not be an SR or RR. Limits: :data:`MAX_PACKETS` packets per compound, 31 report
blocks per packet (the 5-bit RC), :data:`MAX_XR_BLOCKS` XR blocks per XR packet.

Parse plain RTCP only: with SRTCP the relay hands over the packet after unprotecting it (RFC 3711
§3.4); encrypted bytes would parse as noise. Malformed packets raise :class:`RtcpError`; the
relay forwards them unchanged all the same (it reads RTCP, it does not police it).
"""

from __future__ import annotations

import struct

import attrs

SR = 200
RR = 201
SDES = 202
BYE = 203
XR = 207
"""RTCP packet types (RFC 3550 §12.1; XR: RFC 3611 §5)."""

VOIP_METRICS = 7
"""XR block type of the VoIP metrics report block (RFC 3611 §4.7)."""

MAX_PACKETS = 32
"""Most RTCP packets read from one compound packet (a phone sends two or three: SR/RR, SDES,
maybe XR or BYE)."""

MAX_XR_BLOCKS = 16
"""Most XR report blocks read from one XR packet."""

UNAVAILABLE = 127
"""RFC 3611 §4.7.5/§4.7.6: an R factor or MOS of 127 means "unavailable"."""

_HEADER = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IIIIII")  # SSRC, NTP msw, NTP lsw, RTP timestamp, packets, octets
_REPORT_BLOCK = struct.Struct("!IB3sIIII")
_VOIP_METRICS = struct.Struct("!IBBBBHHHHbbBBBBBBBBHHH")


class RtcpError(ValueError):
    """The peer's RTCP is malformed (a remote error: counted, the packet is still relayed)."""


@attrs.frozen
class ReportBlock:
    """What the reporter received from ``ssrc`` (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int
    """Packets lost since the previous report, as a fraction of 256."""
    cumulative_lost: int
    """Packets lost since reception began (signed: duplicates can make it negative)."""
    highest_sequence: int
    jitter: int
    """Interarrival jitter, in RTP timestamp units of the stream (RFC 3550 §6.4.1, A.8)."""
    lsr: int
    """The middle 32 bits of the NTP timestamp of the last SR from ``ssrc``; 0: none yet."""
    dlsr: int
    """Delay since that SR was received, in units of 1/65536 s."""


@attrs.frozen
class SenderReport:
    """PT 200: the sender's own counters, and its report blocks as a receiver."""

    ssrc: int
    ntp_timestamp: int
    """64-bit NTP timestamp (RFC 3550 §4): seconds since 1900 in the high 32 bits."""
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...]

    @property
    def lsr(self) -> int:
        """The middle 32 bits of the NTP timestamp: what an answering report block's LSR holds."""
        return (self.ntp_timestamp >> 16) & 0xFFFFFFFF


@attrs.frozen
class ReceiverReport:
    """PT 201: report blocks of a participant that sends no media (or too little to report)."""

    ssrc: int
    reports: tuple[ReportBlock, ...]


@attrs.frozen
class VoipMetrics:
    """An XR VoIP metrics block (RFC 3611 §4.7): the reporter's view of the stream from ``ssrc``.

    Rates are fractions of 256; delays in ms; R factor 0..100 and MOS in tenths (10..50), each
    :data:`UNAVAILABLE` (127) when the reporter does not compute it."""

    ssrc: int
    loss_rate: int
    discard_rate: int
    round_trip_delay: int
    end_system_delay: int
    r_factor: int
    mos_lq: int
    mos_cq: int
    jb_nominal: int
    jb_maximum: int


@attrs.frozen
class OtherPacket:
    """A packet this module does not read (SDES, BYE, APP, feedback, ...): its type only."""

    packet_type: int


@attrs.frozen
class ExtendedReport:
    """PT 207: the VoIP metrics blocks among its report blocks (others are skipped)."""

    ssrc: int
    voip_metrics: tuple[VoipMetrics, ...]


RtcpPacket = SenderReport | ReceiverReport | ExtendedReport | OtherPacket


def parse_compound_untrusted(data: bytes, *, max_packets: int = MAX_PACKETS) -> list[RtcpPacket]:
    """The packets of one compound RTCP datagram (plain, never SRTCP). Raises :class:`RtcpError`
    when it does not follow RFC 3550 Appendix A.2 or holds more than ``max_packets`` packets."""
    packets: list[RtcpPacket] = []
    offset = 0
    end = len(data)
    if end < _HEADER.size:
        raise RtcpError("shorter than an RTCP header")
    while offset < end:
        if len(packets) >= max_packets:
            raise RtcpError(f"more than {max_packets} packets in one compound packet")
        if end - offset < _HEADER.size:
            raise RtcpError("trailing octets after the last packet")
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        if first >> 6 != 2:
            raise RtcpError("not RTCP version 2")
        length = (words + 1) * 4
        if offset + length > end:
            raise RtcpError("a packet's length runs past the datagram")
        body_end = offset + length
        if first & 0x20:
            # RFC 3550 §6.4.1, A.2: only the last packet of a compound may be padded; its last
            # octet counts the padding octets, itself included.
            if body_end != end:
                raise RtcpError("padding on a packet that is not the last")
            padding = data[end - 1]
            if padding == 0 or padding > length - _HEADER.size:
                raise RtcpError("bad padding count")
            body_end -= padding
        count = first & 0x1F
        start = offset + _HEADER.size
        if packet_type == SR:
            packets.append(_sender_report(data, start, body_end, count))
        elif packet_type == RR:
            packets.append(_receiver_report(data, start, body_end, count))
        elif packet_type == XR:
            packets.append(_extended_report(data, start, body_end))
        else:
            packets.append(OtherPacket(packet_type))
        offset += length
    return packets


def _report_blocks(data: bytes, start: int, end: int, count: int) -> tuple[ReportBlock, ...]:
    if start + count * _REPORT_BLOCK.size > end:
        raise RtcpError("report count larger than the packet")
    blocks = []
    for index in range(count):
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(
            data, start + index * _REPORT_BLOCK.size
        )
        # RFC 3550 §6.4.1: the cumulative number of packets lost is a signed 24-bit integer.
        cumulative = int.from_bytes(lost, "big", signed=True)
        blocks.append(ReportBlock(ssrc, fraction, cumulative, highest, jitter, lsr, dlsr))
    return tuple(blocks)


def _sender_report(data: bytes, start: int, end: int, count: int) -> SenderReport:
    if start + _SENDER_INFO.size > end:
        raise RtcpError("SR shorter than its sender info")
    ssrc, msw, lsw, rtp_timestamp, packets, octets = _SENDER_INFO.unpack_from(data, start)
    reports = _report_blocks(data, start + _SENDER_INFO.size, end, count)
    return SenderReport(ssrc, (msw << 32) | lsw, rtp_timestamp, packets, octets, reports)


def _receiver_report(data: bytes, start: int, end: int, count: int) -> ReceiverReport:
    if start + 4 > end:
        raise RtcpError("RR without its SSRC")
    (ssrc,) = struct.unpack_from("!I", data, start)
    return ReceiverReport(ssrc, _report_blocks(data, start + 4, end, count))


def _extended_report(data: bytes, start: int, end: int) -> ExtendedReport:
    if start + 4 > end:
        raise RtcpError("XR without its SSRC")
    (ssrc,) = struct.unpack_from("!I", data, start)
    offset = start + 4
    metrics = []
    blocks = 0
    while offset < end:
        blocks += 1
        if blocks > MAX_XR_BLOCKS:
            raise RtcpError(f"more than {MAX_XR_BLOCKS} XR blocks")
        if end - offset < 4:
            raise RtcpError("truncated XR block header")
        block_type, _specific, words = _HEADER.unpack_from(data, offset)
        # RFC 3611 §3: block length in 32-bit words minus one, header included.
        length = (words + 1) * 4
        if offset + length > end:
            raise RtcpError("an XR block runs past its packet")
        if block_type == VOIP_METRICS:
            if length != 4 + _VOIP_METRICS.size:
                raise RtcpError("VoIP metrics block of the wrong length")
            fields = _VOIP_METRICS.unpack_from(data, offset + 4)
            metrics.append(
                VoipMetrics(
                    ssrc=fields[0],
                    loss_rate=fields[1],
                    discard_rate=fields[2],
                    round_trip_delay=fields[7],
                    end_system_delay=fields[8],
                    r_factor=fields[13],
                    mos_lq=fields[15],
                    mos_cq=fields[16],
                    jb_nominal=fields[19],
                    jb_maximum=fields[20],
                )
            )
        offset += length
    return ExtendedReport(ssrc, tuple(metrics))


def report_json(packets: list[RtcpPacket]) -> dict[str, object] | None:
    """The first SR or RR of a compound as the JSON object Homer's collector reads for HEP
    protocol type 5 (captagent's and heplify's field names: ``type``, ``ssrc``,
    ``report_count``, ``sender_information``, ``report_blocks`` with ``source_ssrc``,
    ``fraction_lost``, ``packets_lost``, ``highest_seq_no``, ``ia_jitter``, ``lsr``, ``dlsr``);
    None when the compound holds neither."""
    for packet in packets:
        if isinstance(packet, (SenderReport, ReceiverReport)):
            blocks = [
                {
                    "source_ssrc": block.ssrc,
                    "fraction_lost": block.fraction_lost,
                    "packets_lost": block.cumulative_lost,
                    "highest_seq_no": block.highest_sequence,
                    "ia_jitter": block.jitter,
                    "lsr": block.lsr,
                    "dlsr": block.dlsr,
                }
                for block in packet.reports
            ]
            report: dict[str, object] = {
                "type": SR if isinstance(packet, SenderReport) else RR,
                "ssrc": packet.ssrc,
                "report_count": len(blocks),
                "report_blocks": blocks,
            }
            if isinstance(packet, SenderReport):
                report["sender_information"] = {
                    "ntp_timestamp_sec": packet.ntp_timestamp >> 32,
                    "ntp_timestamp_usec": packet.ntp_timestamp & 0xFFFFFFFF,
                    "rtp_timestamp": packet.rtp_timestamp,
                    "packets": packet.packet_count,
                    "octets": packet.octet_count,
                }
            return report
    return None
