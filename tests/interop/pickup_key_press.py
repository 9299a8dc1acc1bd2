"""The key press of the sipp pickup payload type tests: moved here from
test_pickup_payload_types_sipp.py so that no test module imports another."""

from __future__ import annotations

import struct

AUDIO_PACKETS, EVENT_PACKETS = 5, 4


def key_press(payload_type: int, ssrc: int) -> list[bytes]:
    """RTP of a phone pressing 5: PCMU audio, then RFC 4733 §2.5 event packets (the first with
    the marker bit, one timestamp for the whole event, the last with the E bit)."""
    packets = [
        struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, ssrc) + b"\xff" * 160
        for seq in range(AUDIO_PACKETS)
    ]
    start = 160 * AUDIO_PACKETS
    for n in range(EVENT_PACKETS):
        seq = AUDIO_PACKETS + n
        second = payload_type | (0x80 if n == 0 else 0)
        end = 0x80 if n == EVENT_PACKETS - 1 else 0
        event = struct.pack("!BBH", 5, end | 10, 160 * (n + 1))
        packets.append(struct.pack("!BBHII", 0x80, second, seq, start, ssrc) + event)
    return packets
