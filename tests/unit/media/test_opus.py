"""libopus through ctypes (gateway/core/media/opus.py): the ringing tone's encoder makes one
packet per 20 ms that libopus's own decoder turns back into the tone; what libopus refuses is
an error naming its reason, not a crash; an install without libopus has none."""

from __future__ import annotations

import ctypes.util
import itertools
import math
import struct

import pytest

from gateway.core.media import opus
from tests.conftest import missing


@pytest.fixture
def libopus() -> opus.LibOpus:
    found = opus.load_libopus()
    if found is None:
        missing("libopus is not installed (apt-get install libopus0)")
    return found


def tone(frequency: float, seconds: float, rate: int = 8000) -> list[int]:
    count = int(seconds * rate)
    return [round(8000 * math.sin(2 * math.pi * frequency * n / rate)) for n in range(count)]


def test_a_tone_encoded_decodes_to_the_same_frequency(libopus: opus.LibOpus) -> None:
    encoder = opus.OpusEncoder(libopus, 8000)
    packets = encoder.encode(tone(425.0, 1.0))
    assert len(packets) == 50  # 20 ms each
    assert all(0 < len(packet) <= 80 for packet in packets)  # narrowband at 12 kbit/s, VBR
    decoder = opus.OpusDecoder(libopus, 8000)
    pcm = b"".join(decoder.decode(packet) for packet in packets)
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    assert len(samples) == 8000
    settled = samples[800:]
    # Zero crossings of 425 Hz over 0.9 s: 2 x 425 x 0.9, within a few.
    crossings = sum(1 for a, b in itertools.pairwise(settled) if (a < 0) != (b < 0))
    assert crossings == pytest.approx(765, abs=6)
    assert max(map(abs, settled)) == pytest.approx(8000, rel=0.2)


def test_a_decoder_at_48000_hz_takes_what_the_8000_hz_encoder_made(
    libopus: opus.LibOpus,
) -> None:
    # RFC 7587 §4.1 and RFC 6716 §2: the bitstream does not depend on either end's rate; a
    # receiver decoding at 48 kHz gets 960 samples per 20 ms packet.
    packets = opus.OpusEncoder(libopus, 8000).encode(tone(440.0, 0.1))
    decoder = opus.OpusDecoder(libopus, 48000)
    assert [len(decoder.decode(packet)) // 2 for packet in packets] == [960] * 5


def test_samples_that_are_not_whole_frames_are_refused(libopus: opus.LibOpus) -> None:
    with pytest.raises(ValueError, match="159 samples: not a whole number of 20 ms frames"):
        opus.OpusEncoder(libopus, 8000).encode([0] * 159)


def test_a_packet_libopus_refuses_is_an_error_with_its_reason(libopus: opus.LibOpus) -> None:
    decoder = opus.OpusDecoder(libopus, 8000)
    # TOC code 3 (RFC 6716 §3.2.5) with no frame count octet: not a valid packet.
    with pytest.raises(opus.OpusError, match=r"libopus: decoding: corrupted stream \(-4\)"):
        decoder.decode(b"\x03")
    assert len(decoder.decode(opus.OpusEncoder(libopus, 8000).encode([0] * 160)[0])) == 320


def test_an_encoder_libopus_refuses_is_an_error_with_its_reason(libopus: opus.LibOpus) -> None:
    with pytest.raises(opus.OpusError, match=r"libopus: an encoder: invalid argument \(-1\)"):
        opus.OpusEncoder(libopus, 11025)  # not one of Opus's rates (RFC 6716 §2)


def test_without_libopus_there_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    opus.load_libopus.cache_clear()
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    try:
        assert opus.load_libopus() is None
    finally:
        opus.load_libopus.cache_clear()
