"""GSM full rate through libgsm: a payload's 33-octet frames (RFC 3551 §4.5.8) read from its
length and each frame's 0xD signature, anything else refused before anything is decoded; the
encoder and decoder the ringing tone and the recorder use."""

from __future__ import annotations

import math
import struct

import pytest

from gateway.core.media import gsm
from gateway.core.media.gsm import GsmDecoder, GsmEncoder, GsmPayloadError, gsm_frames_untrusted
from tests.conftest import missing


def libgsm() -> gsm.LibGsm:
    found = gsm.load_libgsm()
    if found is None:
        missing("libgsm is not installed (apt-get install libgsm1)")
    return found


def frame(fill: int) -> bytes:
    return bytes([0xD0 | (fill & 0x0F)]) + bytes([fill]) * 32


def test_a_payload_is_read_as_its_33_octet_frames() -> None:
    payload = frame(1) + frame(2) + frame(3)
    assert gsm_frames_untrusted(payload) == [frame(1), frame(2), frame(3)]
    assert gsm_frames_untrusted(frame(0)) == [frame(0)]


@pytest.mark.parametrize("length", [0, 1, 32, 34, 65, 67])
def test_any_other_length_is_not_gsm(length: int) -> None:
    with pytest.raises(GsmPayloadError, match=f"a GSM payload of {length} octets"):
        gsm_frames_untrusted(b"\xd0" * length)


def test_a_frame_without_the_signature_is_not_gsm() -> None:
    # The signature is the high four bits of the frame's first octet (RFC 3551 §4.5.8).
    with pytest.raises(GsmPayloadError, match="GSM frame 2 of 3 has no 0xD signature"):
        gsm_frames_untrusted(frame(1) + b"\x0d" + bytes(32) + frame(3))


def sine(frequency: float, amplitude: float, count: int) -> list[int]:
    return [round(amplitude * math.sin(2 * math.pi * frequency * n / 8000)) for n in range(count)]


def goertzel_amplitude(samples: list[int], frequency: float) -> float:
    k = 2 * math.cos(2 * math.pi * frequency / 8000)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    power = (s1 * s1 + s2 * s2 - k * s1 * s2) / len(samples) ** 2
    return 2 * math.sqrt(power)


def test_a_sine_through_the_encoder_and_decoder_comes_back_at_its_frequency_and_level() -> None:
    library = libgsm()
    frames = GsmEncoder(library).encode_frames(sine(1000.0, 8000.0, 8000))  # 1 s
    assert len(frames) == 50 and {len(f) for f in frames} == {33}
    assert {f[0] >> 4 for f in frames} == {0xD}
    # Two frames a packet (RFC 3551 §4.5.8 lets a packet carry several): one decode call.
    decoder = GsmDecoder(library)
    pcm = b"".join(decoder.decode(frames[i] + frames[i + 1]) for i in range(0, 50, 2))
    samples = list(struct.unpack(f"<{len(pcm) // 2}h", pcm))
    assert len(samples) == 8000
    settled = samples[800:]  # past the codec's first 100 ms
    assert goertzel_amplitude(settled, 1000.0) == pytest.approx(8000.0, rel=0.12)  # within 1 dB
    assert goertzel_amplitude(settled, 1000.0) > 30 * goertzel_amplitude(settled, 1700.0)


def test_reset_decodes_as_a_new_decoder_would() -> None:
    library = libgsm()
    frames = GsmEncoder(library).encode_frames(sine(440.0, 6000.0, 1600))
    new = GsmDecoder(library)
    fresh = b"".join(new.decode(f) for f in frames[5:])
    used = GsmDecoder(library)
    for f in frames[:5]:
        used.decode(f)
    carried_on = b"".join(used.decode(f) for f in frames[5:])
    used.reset()
    after_reset = b"".join(used.decode(f) for f in frames[5:])
    assert carried_on != fresh  # the decoder's state carries from frame to frame
    assert after_reset == fresh


def test_a_payload_that_is_not_gsm_decodes_nothing_and_leaves_the_decoder_as_it_was() -> None:
    library = libgsm()
    frames = GsmEncoder(library).encode_frames(sine(440.0, 6000.0, 640))
    decoder, twin = GsmDecoder(library), GsmDecoder(library)
    with pytest.raises(GsmPayloadError):
        decoder.decode(frames[0] + b"\x00" * 33)  # its first frame is never decoded either
    assert [decoder.decode(f) for f in frames] == [twin.decode(f) for f in frames]


def test_the_encoder_takes_whole_frames_only() -> None:
    with pytest.raises(ValueError, match="159 samples: not a whole number of GSM frames"):
        GsmEncoder(libgsm()).encode_frames([0] * 159)
