"""RTP/RTCP header helpers (RFC 3550) and RTP/RTCP demultiplexing on one port (RFC 5761 §4)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.media.errors import RemoteMediaError, RtpParseError
from gateway.core.media.rtp import (
    RTCP_BY_SECOND_OCTET,
    RtcpHeader,
    RtpHeader,
    has_version_2,
    is_rtcp,
    parse_rtcp_header_untrusted,
    parse_rtp_header_untrusted,
)


def rtp_packet(
    *,
    payload_type: int = 0,
    marker: bool = False,
    sequence: int = 1,
    timestamp: int = 160,
    ssrc: int = 0x11223344,
    csrcs: tuple[int, ...] = (),
    extension_words: int | None = None,
    payload: bytes = b"\xd5" * 160,
    padding: int = 0,
) -> bytes:
    first = 0x80 | (0x20 if padding else 0) | (0x10 if extension_words is not None else 0)
    first |= len(csrcs)
    out = struct.pack(
        "!BBHII", first, (0x80 if marker else 0) | payload_type, sequence, timestamp, ssrc
    )
    out += b"".join(struct.pack("!I", c) for c in csrcs)
    if extension_words is not None:
        out += struct.pack("!HH", 0xBEDE, extension_words) + bytes(4 * extension_words)
    out += payload
    if padding:
        out += bytes(padding - 1) + bytes([padding])
    return out


def receiver_report(ssrc: int = 0xCAFEBABE) -> bytes:
    # RFC 3550 §6.4.2: RR with no report blocks, length field 1 (two 32-bit words).
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


# -- demultiplexing -----------------------------------------------------------------------------


@pytest.mark.parametrize("packet_type", [200, 201, 202, 203, 204, 205, 206, 207])
def test_rtcp_packet_types_are_rtcp_on_a_muxed_port(packet_type: int) -> None:
    assert is_rtcp(bytes([0x80, packet_type]) + bytes(6))


@pytest.mark.parametrize("payload_type", [0, 8, 9, 18, 96, 101, 111, 127])
@pytest.mark.parametrize("marker", [False, True])
def test_rtp_payload_types_are_rtp(payload_type: int, marker: bool) -> None:
    assert not is_rtcp(rtp_packet(payload_type=payload_type, marker=marker))


def test_table_marks_exactly_payload_types_64_to_95_with_or_without_marker() -> None:
    # RFC 5761 §4: the 7 bits after the marker bit in 64-95 mean RTCP (192-223 with the bit set).
    rtcp_octets = {octet for octet in range(256) if RTCP_BY_SECOND_OCTET[octet]}
    assert rtcp_octets == set(range(64, 96)) | set(range(192, 224))
    assert len(RTCP_BY_SECOND_OCTET) == 256


@pytest.mark.parametrize("packet", [b"", b"\x80"])
def test_too_short_to_tell_is_not_rtcp(packet: bytes) -> None:
    assert not is_rtcp(packet)


@pytest.mark.parametrize(
    ("first", "expected"), [(0x80, True), (0xBF, True), (0x40, False), (0xC0, False), (0x16, False)]
)
def test_version_2_check(first: int, expected: bool) -> None:
    assert has_version_2(bytes([first])) is expected


def test_version_check_on_empty_packet() -> None:
    assert not has_version_2(b"")


# -- RTP header ---------------------------------------------------------------------------------


def test_parse_plain_rtp_header() -> None:
    header = parse_rtp_header_untrusted(
        rtp_packet(payload_type=8, marker=True, sequence=65535, timestamp=2**32 - 1, ssrc=7)
    )
    assert header == RtpHeader(
        padding=False,
        extension=False,
        csrc_count=0,
        marker=True,
        payload_type=8,
        sequence_number=65535,
        timestamp=2**32 - 1,
        ssrc=7,
        header_length=12,
    )


def test_parse_rtp_header_with_csrcs_extension_and_padding() -> None:
    packet = rtp_packet(csrcs=(1, 2), extension_words=3, padding=4, payload=b"abcd")
    header = parse_rtp_header_untrusted(packet)
    assert header.csrc_count == 2
    assert header.extension
    assert header.padding
    assert header.header_length == 12 + 8 + 4 + 12
    assert packet[header.header_length : header.header_length + 4] == b"abcd"


def test_parse_accepts_memoryview_and_bytearray() -> None:
    packet = rtp_packet(sequence=42)
    assert parse_rtp_header_untrusted(memoryview(packet)).sequence_number == 42
    assert parse_rtp_header_untrusted(bytearray(packet)).sequence_number == 42


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        pytest.param(rtp_packet()[:11], "shorter than 12", id="short"),
        pytest.param(b"\x40" + rtp_packet()[1:], "version 1 is not 2", id="version"),
        pytest.param(rtp_packet(csrcs=(1, 2, 3), payload=b"")[:20], "CSRC list", id="csrc"),
        pytest.param(
            bytes([0x90]) + rtp_packet(payload=b"")[1:] + b"\xbe\xde", "extension", id="ext-cut"
        ),
        pytest.param(
            bytes([0x90]) + rtp_packet(payload=b"")[1:] + b"\xbe\xde\x00\x05",
            "extension",
            id="ext-length",
        ),
        pytest.param(
            bytes([0xA0]) + rtp_packet(payload=b"ab")[1:] + b"\x00", "padding count 0", id="pad-0"
        ),
        pytest.param(
            bytes([0xA0]) + rtp_packet(payload=b"ab")[1:] + b"\x09", "padding count 9", id="pad-9"
        ),
    ],
)
def test_malformed_rtp_is_a_remote_error(packet: bytes, reason: str) -> None:
    with pytest.raises(RtpParseError, match=reason) as info:
        parse_rtp_header_untrusted(packet)
    assert isinstance(info.value, RemoteMediaError)


def test_rtp_longer_than_the_limit_is_refused() -> None:
    packet = rtp_packet(payload=bytes(200))
    with pytest.raises(RtpParseError, match="exceeds the limit of 100"):
        parse_rtp_header_untrusted(packet, max_length=100)


@given(
    payload_type=st.integers(0, 127),
    marker=st.booleans(),
    sequence=st.integers(0, 65535),
    timestamp=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    csrcs=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    extension_words=st.none() | st.integers(0, 20),
    payload=st.binary(max_size=64),
    padding=st.integers(0, 255),
)
def test_parse_reads_back_what_was_built(
    payload_type: int,
    marker: bool,
    sequence: int,
    timestamp: int,
    ssrc: int,
    csrcs: tuple[int, ...],
    extension_words: int | None,
    payload: bytes,
    padding: int,
) -> None:
    packet = rtp_packet(
        payload_type=payload_type,
        marker=marker,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        csrcs=csrcs,
        extension_words=extension_words,
        payload=payload,
        padding=padding,
    )
    header = parse_rtp_header_untrusted(packet)
    assert (header.payload_type, header.marker) == (payload_type, marker)
    assert (header.sequence_number, header.timestamp, header.ssrc) == (sequence, timestamp, ssrc)
    assert header.csrc_count == len(csrcs)
    assert header.extension is (extension_words is not None)
    assert header.padding is (padding > 0)
    assert packet[header.header_length :].startswith(payload)


@given(st.binary(max_size=80))
def test_arbitrary_bytes_parse_or_raise_rtp_parse_error(data: bytes) -> None:
    for parse in (parse_rtp_header_untrusted, parse_rtcp_header_untrusted):
        try:
            header = parse(data)
        except RtpParseError:
            continue
        assert isinstance(header, RtpHeader | RtcpHeader)
        assert has_version_2(data)


# -- RTCP header --------------------------------------------------------------------------------


def test_parse_receiver_report_header() -> None:
    assert parse_rtcp_header_untrusted(receiver_report(0xCAFEBABE)) == RtcpHeader(
        padding=False, count=0, packet_type=201, length=8, ssrc=0xCAFEBABE
    )


def test_parse_first_packet_of_a_compound_packet() -> None:
    sender_report = struct.pack("!BBHI", 0x81, 200, 12, 5) + bytes(44)  # SR with one report block
    header = parse_rtcp_header_untrusted(sender_report + receiver_report())
    assert (header.packet_type, header.count, header.length, header.ssrc) == (200, 1, 52, 5)


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        pytest.param(receiver_report()[:7], "shorter than 8", id="short"),
        pytest.param(b"\x40" + receiver_report()[1:], "version", id="version"),
        pytest.param(rtp_packet(payload_type=0), "packet type 0 is not RTCP", id="rtp"),
        pytest.param(struct.pack("!BBHI", 0x80, 72, 1, 1), "type 72 is not RTCP", id="pt-72"),
        pytest.param(
            struct.pack("!BBHI", 0x80, 200, 6, 1),
            "length of 28 octets does not fit in 8",
            id="length",
        ),
    ],
)
def test_malformed_rtcp_is_a_remote_error(packet: bytes, reason: str) -> None:
    with pytest.raises(RtpParseError, match=reason):
        parse_rtcp_header_untrusted(packet)
