"""The G.722 decoder against a reference implementation: Debian's libspandsp2 (ITU-T G.722,
64 kbit/s mode) through ctypes encodes a signal and decodes it; ours must decode the same octets
to the same samples. Locally a missing libspandsp2 skips; in CI (VOIPGW_REQUIRE_PEERS=1) it
fails."""

from __future__ import annotations

import math
import random
import struct
from collections.abc import Iterator

import pytest

from gateway.plugins.taps import g722_spandsp
from gateway.plugins.taps.g722 import G722Decoder
from gateway.plugins.taps.g722_libg722 import LibG722Decoder
from tests.unit.taps.spandsp import Spandsp, load_spandsp


@pytest.fixture(scope="module")
def spandsp() -> Iterator[Spandsp]:
    yield load_spandsp()


def ours(octets: bytes, decoder: G722Decoder | None = None) -> list[int]:
    pcm = (decoder or G722Decoder()).decode(octets)
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))


def tones(seconds: float) -> list[int]:
    """16 kHz speech-band test signal: 300 Hz and 1 kHz, and 6 kHz for the higher band."""
    return [
        int(
            8000 * math.sin(2 * math.pi * 300 * i / 16000)
            + 6000 * math.sin(2 * math.pi * 1000 * i / 16000)
            + 3000 * math.sin(2 * math.pi * 6000 * i / 16000)
        )
        for i in range(int(16000 * seconds))
    ]


def test_a_signal_encoded_by_spandsp_decodes_to_spandsps_samples(spandsp: Spandsp) -> None:
    signal = tones(1.0)
    octets = spandsp.encode(signal)
    assert len(octets) == 8000  # one octet per sample pair: 64 kbit/s
    decoded = ours(octets)
    assert decoded == spandsp.decode(octets)
    # And it is the signal (a codec's delay later), not just the same noise: the transmit and
    # receive QMFs together delay by 22 samples; the error is small against the signal's power.
    delay = 22
    error = sum((d - s) ** 2 for d, s in zip(decoded[delay:], signal, strict=False))
    power = sum(s * s for s in signal)
    assert error < 0.01 * power


def test_every_code_decodes_as_spandsp_does_but_saturates_where_it_wraps(
    spandsp: Spandsp,
) -> None:
    """Random octets use every code of both bands (the tables' every entry) and drive the
    output to full scale. spandsp 0.0.6 truncates the QMF's sum to 16 bits there (a full-scale
    click), where G.722's receive part limits it; elsewhere the samples are identical."""
    octets = random.Random(722).randbytes(16000)
    theirs, decoded = spandsp.decode(octets), ours(octets)
    assert len(decoded) == len(theirs) == 32000
    clipped = 0
    for mine, reference in zip(decoded, theirs, strict=True):
        if mine != reference:
            # Saturated here, wrapped around (to the other sign) there.
            assert mine in (-32768, 32767) and (mine < 0) != (reference < 0)
            clipped += 1
    assert clipped < len(decoded) // 10


def test_the_state_carries_across_payloads_and_reset_starts_afresh(spandsp: Spandsp) -> None:
    octets = spandsp.encode(tones(0.2))
    decoder = G722Decoder()
    pieces = [ours(octets[i : i + 160], decoder) for i in range(0, len(octets), 160)]
    whole = spandsp.decode(octets)
    assert [sample for piece in pieces for sample in piece] == whole
    decoder.reset()
    assert ours(octets[:160], decoder) == whole[:320]
    assert ours(b"", decoder) == []


def test_the_recorders_spandsp_decoder_gives_the_python_decoders_samples(
    spandsp: Spandsp,
) -> None:
    """The decoder the recorder uses when libspandsp2 is there: the same samples as ours below
    full scale, the state carried across payloads, reset for a new source."""
    library = g722_spandsp.load_spandsp()
    assert library is not None  # the fixture found it
    octets = spandsp.encode(tones(0.5))
    in_c = g722_spandsp.SpandspG722Decoder(library)
    pcm = b"".join(in_c.decode(octets[i : i + 160]) for i in range(0, len(octets), 160))
    assert pcm == G722Decoder().decode(octets)
    in_c.reset()
    assert in_c.decode(octets[:160]) == G722Decoder().decode(octets[:160])
    assert in_c.decode(b"") == b""


def test_the_recorders_libg722_decoder_gives_the_python_decoders_samples(
    spandsp: Spandsp,
) -> None:
    """The recorder's decoder since session 55 (libg722, g722_libg722.py): the Python
    decoder's samples, speech-like input and every code (random octets) alike, full scale
    included, where spandsp wraps (the test above) and both saturate; the state carried across
    payloads, reset for a new source."""
    octets = spandsp.encode(tones(0.5))
    noise = random.Random(722).randbytes(16000)
    for payloads in (octets, noise):
        in_c = LibG722Decoder()
        pcm = b"".join(in_c.decode(payloads[i : i + 160]) for i in range(0, len(payloads), 160))
        assert pcm == G722Decoder().decode(payloads)
    assert min(ours(noise)) == -32768 and max(ours(noise)) == 32767  # it did saturate
    in_c.reset()
    assert in_c.decode(noise[:160]) == G722Decoder().decode(noise[:160])
    assert in_c.decode(b"") == b""
