"""bcg729's G.729 encoder for the recorder's G.729 tests: frames as a G.729 phone sends them,
from a signal we know, with Annex B's voice activity detection if asked (the ringing tone's
encoder has it off)."""

from __future__ import annotations

import math

from gateway.core.media.g729 import Bcg729, Bcg729Encoder, load_bcg729
from tests.conftest import missing


def bcg729_or_missing() -> Bcg729:
    bcg729 = load_bcg729()
    if bcg729 is None:
        missing("libbcg729 is not installed (apt-get install libbcg729-0)")
    return bcg729


def g729_encode(bcg729: Bcg729, samples: list[int], *, vad: bool = False) -> list[bytes]:
    """Each 10 ms frame of ``samples`` (8 kHz) as bcg729 encodes it: 10 octets, or with ``vad``
    (Annex B) 2 for a SID frame and none for a frame not sent."""
    return Bcg729Encoder(bcg729, vad=vad).encode_frames(samples)


def tone(frequency: float, seconds: float, amplitude: int = 8000) -> list[int]:
    return [
        round(amplitude * math.sin(2 * math.pi * frequency * n / 8000))
        for n in range(round(8000 * seconds))
    ]


def power(samples: list[int], frequency: float) -> float:
    """The power of ``frequency`` in 8 kHz ``samples`` (Goertzel)."""
    coefficient = 2.0 * math.cos(2.0 * math.pi * frequency / 8000)
    s1 = s2 = 0.0
    for sample in samples:
        s1, s2 = sample + coefficient * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coefficient * s1 * s2
