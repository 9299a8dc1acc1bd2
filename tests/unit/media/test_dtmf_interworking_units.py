"""DTMF interworking, sans-IO: RFC 4733 event detection and generation, INFO bodies."""

from __future__ import annotations

import pytest

from gateway.core.media.dtmf import (
    END_PACKETS,
    END_TIMEOUT,
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


def _updates(detector: EventDetector, event: int, timestamp: int, count: int, at: float) -> float:
    """Feed ``count`` updates of ``event`` every 50 ms from ``at`` (160 ms, then + 400 units
    each), checking that none ends it; the time of the last."""
    for n in range(count):
        packet = rtp(n, timestamp, event_payload(event, end=False, duration=1280 + 400 * n))
        assert detector.feed(packet, now=at + 0.05 * n) == []
    return at + 0.05 * (count - 1)


def test_detector_ends_an_event_whose_end_packets_were_all_lost_on_timeout() -> None:
    detector = EventDetector(8000)
    assert detector.get_timer() is None
    last = _updates(detector, 5, 4000, 3, at=10.0)  # durations 1280, 1680, 2080
    assert detector.get_timer() == pytest.approx(last + END_TIMEOUT)
    assert detector.handle_timer(now=last + END_TIMEOUT - 0.001) == []  # not yet
    # RFC 4733 §2.5.2.2: no packet any more; the digit with the longest duration seen (260 ms).
    assert detector.handle_timer(now=last + END_TIMEOUT) == [Digit("5", 260)]
    assert detector.timed_out == 1
    assert detector.get_timer() is None
    assert detector.handle_timer(now=last + 5) == []  # once
    # Its end packets arriving late after all: still once.
    for _ in range(END_PACKETS):
        late = rtp(9, 4000, event_payload(5, end=True, duration=2400))
        assert detector.feed(late, now=last + 1) == []
    # A late update of it too; the next event is read as usual.
    assert detector.feed(rtp(3, 4000, event_payload(5, end=False, duration=2480)), now=12) == []
    assert detector.feed(rtp(10, 9000, event_payload(7, end=True, duration=800)), now=13) == [
        Digit("7", 100)
    ]


def test_detector_timeout_estimates_from_arrival_when_durations_say_less() -> None:
    detector = EventDetector(8000)
    # A sender whose updates all say duration 0 (seen in the wild): 0.3 s of packets.
    for n in range(7):
        packet = rtp(n, 100, event_payload(3, end=False, duration=0), marker=n == 0)
        detector.feed(packet, now=1.0 + 0.05 * n)
    assert detector.handle_timer(now=1.3 + END_TIMEOUT) == [Digit("3", 300)]


def test_detector_timer_restarts_with_every_packet_and_only_with_times() -> None:
    detector = EventDetector(8000, end_timeout=0.2)
    detector.feed(rtp(1, 50, event_payload(1, end=False, duration=400)), now=1.0)
    detector.feed(rtp(2, 50, event_payload(1, end=False, duration=800)), now=1.15)
    assert detector.handle_timer(now=1.2) == []  # 0.2 s after the first, not the last
    assert detector.get_timer() == pytest.approx(1.35)
    assert detector.feed(rtp(3, 50, event_payload(1, end=True, duration=960)), now=1.3) == [
        Digit("1", 120)
    ]
    assert detector.get_timer() is None  # ended by its end packet: nothing to time out
    untimed = EventDetector(8000)
    untimed.feed(rtp(1, 50, event_payload(1, end=False, duration=400)))
    assert untimed.get_timer() is None
    with pytest.raises(ValueError):
        EventDetector(8000, end_timeout=0)


def test_detector_an_older_event_of_the_same_source_is_not_read_again() -> None:
    detector = EventDetector(8000)
    assert detector.feed(rtp(5, 0xFFFFFF00, event_payload(4, end=True, duration=800))) == [
        Digit("4", 100)
    ]
    # Timestamps wrap (RFC 3550 §5.1): 0x10 comes after 0xFFFFFF00; 0xFFFFF000 before it.
    assert detector.feed(rtp(6, 0xFFFFF000, event_payload(2, end=True, duration=800))) == []
    assert detector.feed(rtp(7, 0x10, event_payload(6, end=True, duration=800))) == [
        Digit("6", 100)
    ]
    # Another source (a fork's 200 after another's early media) starts afresh.
    other = bytearray(rtp(1, 0x5, event_payload(8, end=True, duration=800)))  # "older"
    other[8:12] = (0x12345678).to_bytes(4, "big")
    assert detector.feed(bytes(other)) == [Digit("8", 100)]


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


def test_a_bad_signal_is_not_echoed_in_the_answer() -> None:
    """A peer that puts several digits in one Signal (a whole PIN or card number) is answered
    400 with ``reason`` as its phrase, which the SIP trace logs as the answer's first line
    (docs/operations.md "DTMF digits and the log": no digit there); so the reason says what
    is wrong, not what was sent."""
    with pytest.raises(DtmfError) as caught:
        parse_dtmf_info_untrusted("application/dtmf-relay", b"Signal=4111111111111111\r\n")
    assert "4111" not in caught.value.reason and "4111" not in str(caught.value)
    assert caught.value.reason == "DTMF signal is not a digit (16 characters)"


def test_a_bad_duration_is_not_echoed_in_the_answer() -> None:
    """A ``Duration=`` that is no number (a card number misplaced by a broken IVR peer) is
    answered 400 with a reason that says its length, not its text (docs/operations.md "DTMF
    digits and the log")."""
    with pytest.raises(DtmfError) as caught:
        parse_dtmf_info_untrusted(
            "application/dtmf-relay", b"Signal=5\r\nDuration=4111-1111-1111-1111\r\n"
        )
    assert "4111" not in caught.value.reason and "4111" not in str(caught.value)
    assert caught.value.reason == "DTMF duration is not a number (19 characters)"


def test_no_reason_of_a_bad_info_body_quotes_the_body() -> None:
    """Every 400 reason of the INFO path says what is wrong without the body's text."""
    secret = b"4111111111111111"
    for body in (
        b"Signal=" + secret + b"\r\n",
        b"Signal=5\r\nDuration=" + secret + b"\r\n",
        b"Signal=5\r\nDuration=x" + secret + b"\r\n",
        b"Duration=160\r\n" + secret,
        b"Signal=5\r\n" + secret * 20,
        secret + b"\xff",
    ):
        with pytest.raises(DtmfError) as caught:
            parse_dtmf_info_untrusted("application/dtmf-relay", body)
        assert "4111" not in caught.value.reason, body
    with pytest.raises(DtmfError) as caught:
        parse_dtmf_info_untrusted("application/dtmf", secret)
    assert "4111" not in caught.value.reason


def test_not_dtmf_content_types() -> None:
    assert not is_dtmf_info(None)
    assert not is_dtmf_info("application/sdp")
    assert not is_dtmf_info("application/media_control+xml")


def test_dtmf_relay_body() -> None:
    assert dtmf_relay_body(Digit("5", 160)) == b"Signal=5\r\nDuration=160\r\n"
