"""RFC 4733 telephone-event inside RFC 2198 RED on a direction that interworks DTMF
(gateway/core/media/relay.py ``red_event_blocks_untrusted``, ``_DtmfInRed``): RFC 4733 §2.5.1.5
packs consecutive events into one packet only as RED blocks, and §2.6 lets a sender add RED
redundancy to its events, so a leg's events may never come as plain telephone-event packets.
Each event block is handed on as the plain event packet it stands for; a RED packet whose
primary is an event is taken, audio RED goes on. Known answers built by hand from RFC 2198 §3's
layout (F bit + 7-bit block PT; with F: 14-bit timestamp offset, 10-bit block length) and RFC
4733 §2.3's payload (event, E bit + volume, 16-bit duration)."""

from __future__ import annotations

import pytest

from gateway.core.media.dtmf import Digit, EventDetector, event_payload
from gateway.core.media.relay import (
    MAX_RED_EVENT_BLOCKS,
    DtmfInterworking,
    _DtmfInRed,
    red_event_blocks_untrusted,
)

# RTP header (RFC 3550 §5.1): V=2, PT 100 (RED), sequence 7, timestamp 4000, SSRC 0xa11ce.
HEADER = bytes.fromhex("80 64 0007 00000fa0 000a11ce")
EVENT_5_END = bytes.fromhex("05 8a 0320")  # digit 5, E, volume 10, duration 800
EVENT_7 = bytes.fromhex("07 0a 0190")  # digit 7, volume 10, duration 400


def plain(timestamp: int, payload: bytes, *, sequence: int = 7, second: int = 101) -> bytes:
    """The plain telephone-event packet (PT 101) a block stands for."""
    return (
        bytes((0x80, second))
        + sequence.to_bytes(2, "big")
        + timestamp.to_bytes(4, "big")
        + bytes.fromhex("000a11ce")
        + payload
    )


# Two events packed (RFC 4733 §2.5.1.5): digit 5 ended 800 ticks ago as a redundant block
# (F=1, PT 101 = 0xe5, offset 800 and length 4: 800 << 10 | 4 = 0x0c8004), digit 7 primary.
PACKED = HEADER + bytes.fromhex("e5 0c8004 65") + EVENT_5_END + EVENT_7
# Audio (PCMU 0) primary with the ended digit 5 as redundancy: forwarded, the event read.
AUDIO_WITH_EVENT = HEADER + bytes.fromhex("e5 0c8004 00") + EVENT_5_END + b"\xff" * 4


def test_the_event_blocks_and_their_timestamps() -> None:
    found = red_event_blocks_untrusted(PACKED, 101)
    assert found == ([(4000 - 800, 17, 21), (4000, 21, 25)], True)
    assert red_event_blocks_untrusted(AUDIO_WITH_EVENT, 101) == ([(3200, 17, 21)], False)
    # Only the primary, one 1-octet header (RFC 2198 §3).
    assert red_event_blocks_untrusted(HEADER + b"\x65" + EVENT_7, 101) == ([(4000, 13, 17)], True)
    # Opus alone: no event block.
    assert red_event_blocks_untrusted(HEADER + b"\x6f" + b"\x01\x02", 101) == ([], False)


def test_timestamps_wrap_and_csrcs_extension_padding_are_skipped() -> None:
    # CC=1, X and P (0xb1): a CSRC, a one-word extension, then RED, then 2 octets of padding.
    header = bytes.fromhex("b1 64 0007 00000100 000a11ce 55667788 bede0001 ef000000")
    packet = header + bytes.fromhex("e5 0c8004 65") + EVENT_5_END + EVENT_7 + b"\x00\x02"
    start = len(header) + 5
    assert red_event_blocks_untrusted(packet, 101) == (
        [((0x100 - 800) & 0xFFFFFFFF, start, start + 4), (0x100, start + 4, start + 8)],
        True,
    )


@pytest.mark.parametrize(
    "packet",
    [
        HEADER,  # no block header
        HEADER + bytes.fromhex("e5 0c80"),  # a redundant header cut short
        HEADER + bytes.fromhex("e5 0c8004"),  # headers up to the end, none the last
        HEADER + bytes.fromhex("e5 0c8009 65") + EVENT_5_END,  # block longer than the packet
        bytes.fromhex("9f 64 0007"),  # shorter than an RTP header
        bytes.fromhex("90 64 0007 00000fa0 000a11ce bede"),  # extension header cut short
        bytes.fromhex("a0 64 0007 00000fa0 000a11ce 65 05 ff"),  # padding past the start
    ],
)
def test_malformed_red_does_not_parse(packet: bytes) -> None:
    assert red_event_blocks_untrusted(packet, 101) is None


def test_blocks_handed_on_are_bounded_and_keep_the_primary() -> None:
    headers = bytes.fromhex("e5 000004") * 12 + b"\x65"
    packet = HEADER + headers + EVENT_7 * 13
    found = red_event_blocks_untrusted(packet, 101)
    assert found is not None
    blocks, primary = found
    assert primary and len(blocks) == MAX_RED_EVENT_BLOCKS
    assert blocks[-1] == (4000, len(packet) - 4, len(packet))


def interworking(red: tuple[int, ...] = (100,)) -> tuple[DtmfInterworking, list[bytes]]:
    handed: list[bytes] = []
    state = DtmfInterworking(take_payload_type=101, on_event=handed.append, red_payload_types=red)
    return state, handed


def test_a_red_event_packet_is_taken_and_its_events_handed_on_plain() -> None:
    state, handed = interworking()
    transform = _DtmfInRed(state, None, lambda: 1.0)
    assert transform(PACKED) is None
    assert handed == [plain(3200, EVENT_5_END), plain(4000, EVENT_7)]
    assert (state.taken, state.seq_offset) == (1, -1)
    # The next audio packet closes the gap the taken one left (RFC 3550 §5.1).
    audio = bytes.fromhex("80 00 0008 00001040 000a11ce") + b"\xff" * 4
    assert transform(audio) == bytes.fromhex("80 00 0007 00001040 000a11ce") + b"\xff" * 4


def test_audio_red_with_an_event_as_redundancy_goes_on() -> None:
    state, handed = interworking()
    transform = _DtmfInRed(state, None, lambda: 1.0)
    assert transform(AUDIO_WITH_EVENT) == AUDIO_WITH_EVENT
    assert handed == [plain(3200, EVENT_5_END)] and state.taken == 0


def test_plain_events_malformed_red_and_other_payload_types_as_without_red() -> None:
    state, handed = interworking()
    transform = _DtmfInRed(state, None, lambda: 1.0)
    event = plain(8000, EVENT_7, sequence=9)
    assert transform(event) is None and handed == [event]
    malformed = HEADER + bytes.fromhex("e5 0c8004")
    assert transform(malformed) == bytes.fromhex("80 64 0006") + malformed[4:]  # renumbered
    assert state.taken == 1


def test_an_older_event_after_a_newer_one_is_not_handed_on() -> None:
    # Digit 5's end comes again as redundancy once digit 7 began: not read again (it would
    # end digit 7 in the detector and begin digit 5 anew).
    state, handed = interworking()
    transform = _DtmfInRed(state, None, lambda: 1.0)
    transform(HEADER + b"\x65" + EVENT_7)
    handed.clear()
    later = bytes.fromhex("80 64 0008 00000fa0 000a11ce")
    assert transform(later + bytes.fromhex("e5 0c8004 65") + EVENT_5_END + EVENT_7) is None
    assert handed == [plain(4000, EVENT_7, sequence=8)]


def test_the_detector_reads_packed_events_as_two_digits() -> None:
    state, handed = interworking()
    transform = _DtmfInRed(state, None, lambda: 1.0)
    detector = EventDetector(8000)
    end_7 = event_payload(7, end=True, duration=800, volume=10)
    second = bytes.fromhex("80 64 0008 00000fa0 000a11ce")
    transform(PACKED)
    transform(second + bytes.fromhex("e5 0c8004 65") + EVENT_5_END + end_7)
    digits = [d for packet in handed for d in detector.feed(packet)]
    assert digits == [Digit("5", 100), Digit("7", 100)]


def test_red_is_read_only_on_a_direction_that_takes_events_from_a_sender_with_red() -> None:
    assert interworking()[0].red
    assert not interworking(())[0].red
    injecting = DtmfInterworking(inject_payload_type=101, red_payload_types=(100,))
    assert not injecting.red
