"""DTMF interworking, sans-IO: RFC 4733 event detection and generation, INFO bodies."""

from __future__ import annotations

import pytest

from gateway.core.media.dtmf import (
    END_PACKETS,
    UPDATE_INTERVAL,
    Digit,
    DtmfError,
    EventDetector,
    dtmf_relay_body,
    event_packets,
    event_payload,
    is_dtmf_info,
    parse_dtmf_info_untrusted,
    parse_event_untrusted,
)

# The first packet of /usr/share/sip-tester/dtmf_2833_5.pcap (digit 5, PT 101, seq 8155,
# timestamp 43200, marker set, duration 0), and its end packet (E bit, duration 2240 = 280 ms).
SIPP_5_START = bytes.fromhex("80e51fdb0000a8c00e05384e050a0000")
SIPP_5_END = bytes.fromhex("80651fe20000a8c00e05384e058a08c0")


def rtp(seq: int, timestamp: int, payload: bytes, *, marker: bool = False, pt: int = 101) -> bytes:
    return (
        bytes((0x80, (0x80 if marker else 0) | pt))
        + seq.to_bytes(2, "big")
        + timestamp.to_bytes(4, "big")
        + (0x0E05384E).to_bytes(4, "big")
        + payload
    )


def test_parse_known_answer_event() -> None:
    event = parse_event_untrusted(SIPP_5_START[12:])
    assert (event.event, event.end, event.volume, event.duration) == (5, False, 10, 0)
    end = parse_event_untrusted(SIPP_5_END[12:])
    assert (end.event, end.end, end.duration) == (5, True, 2240)


def test_short_payload_is_refused() -> None:
    with pytest.raises(DtmfError):
        parse_event_untrusted(b"\x05\x0a\x00")


def test_detector_reads_one_digit_per_event_and_ignores_end_copies() -> None:
    detector = EventDetector(8000)
    digits = [detector.feed(SIPP_5_START)]
    for n, duration in enumerate((320, 640, 960)):
        digits.append(
            detector.feed(rtp(8156 + n, 43200, event_payload(5, end=False, duration=duration)))
        )
    for _ in range(END_PACKETS):
        digits.append(detector.feed(SIPP_5_END))
    assert [d for found in digits for d in found] == [Digit("5", 280)]


def test_detector_new_event_ends_one_whose_end_packets_were_lost() -> None:
    detector = EventDetector(8000)
    assert detector.feed(rtp(1, 1000, event_payload(1, end=False, duration=800), marker=True)) == []
    # All three end packets of "1" lost; "2" begins with a new timestamp.
    found = detector.feed(rtp(2, 3000, event_payload(2, end=False, duration=400), marker=True))
    assert found == [Digit("1", 100)]
    assert detector.feed(rtp(3, 3000, event_payload(2, end=True, duration=1600))) == [
        Digit("2", 200)
    ]


def test_detector_counts_malformed_and_skips_non_digits() -> None:
    detector = EventDetector(8000)
    assert detector.feed(b"\x80\xe5\x00") == []
    assert detector.feed(rtp(1, 5, b"\x05")) == []
    assert detector.malformed == 2
    # Flash-hook (event 16) is no digit: INFO does not carry it.
    assert detector.feed(rtp(2, 9, event_payload(16, end=True, duration=800))) == []


def test_detector_clock_rate_48000() -> None:
    detector = EventDetector(48000)
    found = detector.feed(rtp(1, 7, event_payload(11, end=True, duration=9600)))
    assert found == [Digit("#", 200)]


def test_event_packets_follow_rfc4733_section_2_5() -> None:
    packets = event_packets(Digit("5", 160), clock_rate=8000)
    events = [parse_event_untrusted(p.payload) for p in packets]
    assert [p.marker for p in packets] == [True, False, False, False, False, False]
    assert [e.end for e in events] == [False, False, False, True, True, True]
    assert [e.duration for e in events] == [400, 800, 1200, 1280, 1280, 1280]
    assert {e.event for e in events} == {5}
    assert [round(p.at, 3) for p in packets] == [0.0, 0.05, 0.1, 0.16, 0.18, 0.2]
    assert packets[1].at - packets[0].at == pytest.approx(UPDATE_INTERVAL)


def test_short_digit_is_one_start_and_end() -> None:
    packets = event_packets(Digit("*", 40), clock_rate=8000)
    assert len(packets) == END_PACKETS
    assert packets[0].marker and not packets[1].marker
    assert parse_event_untrusted(packets[0].payload) == parse_event_untrusted(
        event_payload(10, end=True, duration=320)
    )


def test_generated_digit_is_detected_back() -> None:
    packets = event_packets(Digit("D", 250), clock_rate=16000)
    detector = EventDetector(16000)
    found = [
        d
        for n, p in enumerate(packets)
        for d in detector.feed(rtp(n, 555, p.payload, marker=p.marker))
    ]
    assert found == [Digit("D", 250)]


@pytest.mark.parametrize(
    ("content_type", "body", "digit"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", Digit("5", 160)),
        ("Application/DTMF-Relay", b"signal= #\nduration = 250\n", Digit("#", 250)),
        ("application/dtmf-relay", b"Signal=10\r\n", Digit("*", 160)),
        ("application/dtmf-relay", b"Signal=a\r\nDuration=99999\r\n", Digit("A", 5000)),
        ("application/dtmf-relay", b"Signal=1\r\nDuration=1\r\n", Digit("1", 40)),
        ("application/dtmf", b"7", Digit("7", 160)),
        ("application/dtmf;charset=x", b"9\r\n", Digit("9", 160)),
    ],
)
def test_info_bodies(content_type: str, body: bytes, digit: Digit) -> None:
    assert is_dtmf_info(content_type)
    assert parse_dtmf_info_untrusted(content_type, body) == digit


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/dtmf-relay", b"Duration=160\r\n"),
        ("application/dtmf-relay", b"Signal=55\r\n"),
        ("application/dtmf-relay", b"Signal=5\r\nDuration=-3\r\n"),
        ("application/dtmf-relay", b"Signal=\xff\r\n"),
        ("application/dtmf-relay", b"Signal=5\r\n" + b"x" * 300),
        ("application/dtmf", b""),
        ("application/sdp", b"5"),
    ],
)
def test_bad_info_bodies(content_type: str, body: bytes) -> None:
    with pytest.raises(DtmfError):
        parse_dtmf_info_untrusted(content_type, body)


def test_not_dtmf_content_types() -> None:
    assert not is_dtmf_info(None)
    assert not is_dtmf_info("application/sdp")
    assert not is_dtmf_info("application/media_control+xml")


def test_dtmf_relay_body() -> None:
    assert dtmf_relay_body(Digit("5", 160)) == b"Signal=5\r\nDuration=160\r\n"
