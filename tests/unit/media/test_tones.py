"""The ringing tones the gateway plays itself (gateway/core/media/tones.py): each plan's frames
are its frequencies at its level, on and off by its cadence, in either G.711 law, the same as a
sine computed sample by sample over the whole burst; TonePlayer paces RTP packets of a stream
of its own from float time."""

from __future__ import annotations

import math

import pytest

from gateway.core.media.g711 import Law, alaw2lin, lin2alaw, lin2ulaw, ulaw2lin
from gateway.core.media.tones import (
    FRAME_SAMPLES,
    FRAME_SECONDS,
    MAX_CATCH_UP,
    RINGBACK_PLANS,
    SAMPLE_RATE,
    Tone,
    TonePlayer,
    tone_frames,
)
from gateway.core.media.worker_protocol import TONE_PLANS

DECODE = {Law.PCMU: ulaw2lin, Law.PCMA: alaw2lin}
ENCODE = {Law.PCMU: lin2ulaw, Law.PCMA: lin2alaw}


def goertzel_power(samples: list[int], frequency: float) -> float:
    """The power of ``frequency`` in ``samples`` (the Goertzel algorithm), per sample squared."""
    coefficient = 2.0 * math.cos(2.0 * math.pi * frequency / SAMPLE_RATE)
    s1 = s2 = 0.0
    for sample in samples:
        s1, s2 = sample + coefficient * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - coefficient * s1 * s2) / len(samples) ** 2


def decoded(frames: tuple[bytes, ...] | list[bytes], law: Law) -> list[int]:
    return [DECODE[law](octet) for frame in frames for octet in frame]


@pytest.mark.parametrize("law", list(Law))
@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_plans_frames_follow_its_cadence_with_its_frequencies_on_and_silence_off(
    name: str, law: Law
) -> None:
    plan = RINGBACK_PLANS[name]
    frames = tone_frames(name, law)
    assert len(frames) == round(sum(plan.cadence) / FRAME_SECONDS)
    assert all(len(frame) == FRAME_SAMPLES for frame in frames)
    silence = bytes([ENCODE[law](0)]) * FRAME_SAMPLES
    start = 0
    for index, seconds in enumerate(plan.cadence):
        count = round(seconds / FRAME_SECONDS)
        part = frames[start : start + count]
        start += count
        if index % 2:
            assert set(part) == {silence}
            continue
        samples = decoded(part, law)
        heard = [goertzel_power(samples, frequency) for frequency in plan.frequencies]
        off_tone = goertzel_power(samples, 1000.0)
        assert min(heard) > 1000 * max(off_tone, 1.0)
        # Each frequency at the plan's level (dBm0; a full-scale sine is +3.14 dBm0):
        # a sine of amplitude A has Goertzel power A^2 / 4 per sample squared.
        expected = 32767.0 * 10 ** ((plan.level_dbm0 - 3.14) / 20)
        for power in heard:
            assert 2 * math.sqrt(power) == pytest.approx(expected, rel=0.06)


@pytest.mark.parametrize("name", sorted(RINGBACK_PLANS))
def test_a_burst_is_the_sine_computed_sample_by_sample_across_frames(name: str) -> None:
    # The frames repeat a short unit; that must be the same as computing every sample of the
    # burst, or the joins would click.
    plan = RINGBACK_PLANS[name]
    frames = tone_frames(name, Law.PCMU)
    burst = b"".join(frames[: round(plan.cadence[0] / FRAME_SECONDS)])
    amplitude = 32767.0 * 10 ** ((plan.level_dbm0 - 3.14) / 20)
    direct = bytes(
        lin2ulaw(
            round(
                amplitude
                * sum(math.sin(2 * math.pi * f * n / SAMPLE_RATE) for f in plan.frequencies)
            )
        )
        for n in range(len(burst))
    )
    differing = sum(1 for a, b in zip(burst, direct, strict=True) if a != b)
    assert differing <= len(burst) // 1000  # float rounding of a sample now and then


def test_the_frames_are_computed_once_per_process() -> None:
    assert tone_frames("us", Law.PCMA) is tone_frames("us", Law.PCMA)


def test_every_plan_crosses_to_a_media_worker() -> None:
    assert set(RINGBACK_PLANS) <= set(TONE_PLANS)
    assert TONE_PLANS[0] == ""  # stop


@pytest.mark.parametrize(
    ("plan", "payload_type", "error"),
    [("ca", 0, "no tone plan 'ca'"), ("us", 128, "payload type 128"), ("eu", -1, "payload type")],
)
def test_a_tone_needs_a_known_plan_and_a_payload_type(
    plan: str, payload_type: int, error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        Tone(plan, Law.PCMU, payload_type)


def header(packet: bytes) -> tuple[int, int, int, int, int]:
    """(marker, payload type, sequence, timestamp, SSRC)."""
    return (
        packet[1] >> 7,
        packet[1] & 0x7F,
        int.from_bytes(packet[2:4], "big"),
        int.from_bytes(packet[4:8], "big"),
        int.from_bytes(packet[8:12], "big"),
    )


def test_a_player_sends_one_packet_per_20_ms_of_a_new_stream() -> None:
    tone = Tone("eu", Law.PCMA, 8)
    player = TonePlayer(tone, ssrc=0x1234ABCD, sequence=65534, timestamp=2**32 - 160, now=10.0)
    assert player.next_due() == 10.0
    [first] = player.due(10.0)
    assert first[0] == 0x80  # RTP version 2, no padding, extension or CSRC
    assert header(first) == (1, 8, 65534, 2**32 - 160, 0x1234ABCD)
    assert first[12:] == tone_frames("eu", Law.PCMA)[0]
    assert player.due(10.019) == []
    assert player.next_due() == pytest.approx(10.02)
    [second] = player.due(10.02)
    assert header(second) == (0, 8, 65535, 0, 0x1234ABCD)  # timestamp wraps (RFC 3550 §5.1)
    now = 10.02
    packets = []
    for _ in range(300):  # float steps of 0.02 stay on time
        now += FRAME_SECONDS
        packets += player.due(now)
    assert len(packets) == 300
    assert [header(p)[2] for p in packets] == [n & 0xFFFF for n in range(65536, 65836)]
    assert [header(p)[3] for p in packets] == [160 * n for n in range(1, 301)]
    assert {header(p)[0] for p in packets} == {0}
    # The cadence repeats: 250 frames of eu's 5 s, then from its start again.
    frames = tone_frames("eu", Law.PCMA)
    assert [p[12:] for p in packets] == [frames[n % 250] for n in range(2, 302)]
    assert player.packets == 302 and player.skipped == 0


def test_a_player_held_up_skips_what_it_cannot_send_in_time() -> None:
    player = TonePlayer(Tone("us", Law.PCMU, 0), ssrc=1, sequence=0, timestamp=0, now=0.0)
    assert len(player.due(0.0)) == 1
    late = player.due(0.2)  # frames 1..10 were due: the last MAX_CATCH_UP go
    assert len(late) == MAX_CATCH_UP
    assert [header(p)[2] for p in late] == [1, 2, 3]  # no gap in the sequence (not a loss)
    assert [header(p)[3] for p in late] == [160 * 8, 160 * 9, 160 * 10]  # time went by
    assert player.skipped == 10 - MAX_CATCH_UP
    assert player.next_due() == pytest.approx(0.22)
    assert player.due(0.21) == []
