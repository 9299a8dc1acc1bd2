"""Test tones made and measured with sox, to prove audio went through a call in each direction.

    tone_wav(tmp_path / "a.wav", 1000)         # what A sends (baresip's aufile source)
    ...                                         # the call
    assert abs(dominant_frequency(b_heard) - 1000) < 5

G.711 at 8000 Hz keeps a sine's frequency exact, so a 1000 Hz tone sent by one side is the
strongest component of what the other side records, whatever the codec noise and the silence
at the edges of the recording.
"""

from __future__ import annotations

import math
import re
import struct
import subprocess
import wave
from collections import defaultdict
from pathlib import Path

import attrs

from tests.conftest import require_peer

#: G.711 sample rate (RFC 3551 §4.5.14).
G711_RATE = 8000


def _sox(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [require_peer("sox"), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"sox {' '.join(args)} failed:\n{result.stderr}")
    return result


def tone_wav(
    path: Path, frequency: float, seconds: float = 30.0, *, rate: int = G711_RATE, channels: int = 1
) -> Path:
    """A sine WAV (16-bit signed, half scale, ``channels`` alike) at ``path``; returns ``path``.

    baresip's aufile source ends the call when the file ends, so the default is longer than
    any test call.
    """
    _sox(
        "-n",
        "-r",
        str(rate),
        "-c",
        str(channels),
        "-b",
        "16",
        "-e",
        "signed-integer",
        str(path),
        "synth",
        f"{seconds:g}",
        "sine",
        f"{frequency:g}",
        "vol",
        "0.5",
    )
    return path


def tone_ulaw(path: Path, frequency: float, seconds: float = 2.0) -> Path:
    """A raw PCMU (u-law, 8000 Hz, mono, no header) sine for sipp's rtp_stream; returns ``path``.

    Each 20 ms RTP packet carries 160 bytes, so ``seconds`` s make 50 * seconds packets.
    """
    _sox(
        "-n",
        "-r",
        str(G711_RATE),
        "-c",
        "1",
        "-e",
        "u-law",
        "-t",
        "raw",
        str(path),
        "synth",
        f"{seconds:g}",
        "sine",
        f"{frequency:g}",
        "vol",
        "0.5",
    )
    return path


def g711_wav(payload: bytes, path: Path, *, payload_type: int = 0) -> Path:
    """Decode raw G.711 (``payload_type`` 0 PCMU or 8 PCMA, RFC 3551 §4.5.14) into a 16-bit
    mono WAV at ``path`` for ``analyse_tone``; returns ``path``. ``payload`` is what
    ``rtp_payloads`` returns for that payload type.
    """
    encodings = {0: "ul", 8: "al"}
    if payload_type not in encodings:
        raise ValueError(f"payload type {payload_type} is not G.711")
    raw = path.with_suffix(f".{encodings[payload_type]}")
    raw.write_bytes(payload)
    _sox(
        *("-t", encodings[payload_type], "-r", str(G711_RATE), "-c", "1", str(raw)),
        *("-b", "16", "-e", "signed-integer", str(path)),
    )
    return path


@attrs.frozen
class ToneReport:
    """What a recording holds: its strongest frequency and how much of the power is there."""

    #: The strongest frequency in Hz: the peak FFT bin (rate/4096 wide, 1.95 Hz at 8 kHz),
    #: refined between its neighbours.
    dominant_frequency: float
    #: Share (0..1) of the total power within ``tolerance`` Hz of the dominant frequency.
    power_share: float
    #: RMS amplitude, 0..1 of full scale; silence is near 0, a half-scale sine 0.35.
    rms: float
    seconds: float


_FREQ_LINE = re.compile(r"^\s*(\d+\.\d+)\s+(\d+(?:\.\d+)?(?:e[-+]?\d+)?)\s*$")
_RMS_LINE = re.compile(r"^RMS\s+amplitude:\s+([0-9.]+)", re.MULTILINE)


def analyse_tone(path: Path, *, tolerance: float = 10.0) -> ToneReport:
    """Measure a WAV with ``sox FILE -n stat -freq`` (power per frequency per 4096 samples).

    The spectra of all windows are summed, so silence at the start or end only adds noise.
    Raises ValueError for a recording with no power at all (silence or no samples).
    """
    with wave.open(str(path)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    stderr = _sox(str(path), "-n", "stat", "-freq").stderr
    power: dict[float, float] = defaultdict(float)
    for line in stderr.splitlines():
        if match := _FREQ_LINE.match(line):
            power[float(match[1])] += float(match[2])
    audible = {freq: p for freq, p in power.items() if freq >= 20.0}  # skip DC and hum
    total = sum(audible.values())
    if not audible or total <= 0:
        raise ValueError(f"{path}: no audio ({seconds:.2f} s)")
    peak = max(audible, key=lambda freq: audible[freq])
    near = sum(p for freq, p in audible.items() if abs(freq - peak) <= tolerance)
    rms_match = _RMS_LINE.search(stderr)
    rms = float(rms_match[1]) if rms_match else 0.0
    return ToneReport(_interpolate_peak(sorted(power.items()), peak), near / total, rms, seconds)


def _interpolate_peak(spectrum: list[tuple[float, float]], peak: float) -> float:
    # A sine between two bins spreads over both: a parabola through the log power of the peak
    # bin and its neighbours puts the frequency within a fraction of a bin.
    index = next(i for i, (freq, _) in enumerate(spectrum) if freq == peak)
    if not 0 < index < len(spectrum) - 1:
        return peak
    left, centre, right = (math.log(max(p, 1e-12)) for _, p in spectrum[index - 1 : index + 2])
    curvature = left - 2 * centre + right
    if curvature >= 0:
        return peak
    width = spectrum[index + 1][0] - peak
    return peak + width * 0.5 * (left - right) / curvature


def dominant_frequency(path: Path) -> float:
    """The strongest frequency in a WAV, in Hz (see ``analyse_tone``)."""
    return analyse_tone(path).dominant_frequency


def tone_share_per_window(path: Path, frequency: float, window: float = 0.1) -> list[float]:
    """For each ``window`` seconds of the WAV at ``path`` (its first channel) that is not quiet
    (its RMS at least a tenth of the loudest window's), the share of its power at
    ``frequency`` (Goertzel), in order. What a phone decoded and recorded across a whole call
    also holds its decoder's transients where one RTP stream gives way to another (a new SSRC,
    another encoder's state), which can outweigh a second of tone in one ``analyse_tone`` sum;
    a window at a time, the tone's windows show it whole."""
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        channels = wav.getnchannels()
        data = wav.readframes(wav.getnframes())  # a header written early may promise more
    count = len(data) // (2 * channels) * channels
    samples = struct.unpack(f"<{count}h", data[: 2 * count])[::channels]  # the first channel
    count = len(samples)
    size = round(rate * window)
    windows = [samples[i : i + size] for i in range(0, count - size + 1, size)]
    energies = [sum(s * s for s in part) / size for part in windows]
    if not energies or max(energies) == 0:
        return []
    coefficient = 2.0 * math.cos(2.0 * math.pi * frequency / rate)
    shares = []
    for part, energy in zip(windows, energies, strict=True):
        if energy < max(energies) / 100:  # RMS under a tenth of the loudest
            continue
        s1 = s2 = 0.0
        for sample in part:
            s1, s2 = sample + coefficient * s1 - s2, s1
        power = (s1 * s1 + s2 * s2 - coefficient * s1 * s2) / size**2
        shares.append(2 * power / energy)  # a sine of amplitude A: power A²/4, energy A²/2
    return shares
