"""Ogg Opus files from RTP's Opus packets: the Ogg paging (RFC 3533: lacing, continuation, CRC)
read back by a reader of its own, RFC 6716's framing rules for a packet's duration, gap
concealment (RFC 7845 §4.1), and real files checked by real tools: Opus packets from Debian's
libopus (ctypes) written with a gap, then ``opusinfo`` (opus-tools) must accept the file without
a warning and ``opusdec`` must decode it to exactly the stream's length. Locally a missing
peer skips; in CI (VOIPGW_REQUIRE_PEERS=1) it fails."""

from __future__ import annotations

import math
import random
import struct
import subprocess
import wave
from pathlib import Path

import pytest

from gateway.core.media import opus
from gateway.plugins.taps.oggopus import (
    MAX_SAMPLES,
    PRE_SKIP,
    OggOpusWriter,
    concealment,
    ogg_crc,
    opus_samples_untrusted,
)
from tests.conftest import missing, require_peer
from tests.unit.taps.ogg_reader import read_ogg


def test_the_crc_is_rfc_3533s() -> None:
    # CRC-32/POSIX (the same polynomial, unreflected, initial value 0) checks "123456789" as
    # 0x765E7680 after its final inversion; Ogg's has no inversion.
    assert ogg_crc(b"123456789") == 0x765E7680 ^ 0xFFFFFFFF
    assert ogg_crc(b"") == 0


def test_packets_of_every_size_are_laced_and_continued_across_pages(tmp_path: Path) -> None:
    path = tmp_path / "laced.opus"
    writer = OggOpusWriter(path, serial=77)
    sizes = [1, 254, 255, 256, 510, 70000, 3] + [2] * 300  # 70000: 275 lacing values
    sent = [bytes([size % 251]) * size for size in sizes]
    for packet in sent:
        writer.write(packet, 960)
    writer.close()
    pages, packets = read_ogg(path.read_bytes())
    assert packets[0][:8] == b"OpusHead" and packets[1][:8] == b"OpusTags"
    assert packets[2:] == [b"\xfb\x01", *sent]  # 20 ms of concealment for the pre-skip
    assert all(len(page.lacing) <= 255 for page in pages)
    assert [page.sequence for page in pages] == list(range(len(pages)))
    assert {page.serial for page in pages} == {77}
    assert pages[0].flags == 0x02 and pages[-1].flags & 0x04
    assert sum(1 for page in pages if page.flags & 0x04) == 1
    assert pages[-1].granule == PRE_SKIP + 960 * len(sent)  # RFC 7845 §4: pre-skip included
    assert writer.samples == 960 * len(sent)
    # A page on which no packet ends has granule position -1 (RFC 3533 §6).
    assert any(page.granule == -1 for page in pages)
    head = packets[0]
    version, channels, pre_skip, rate, gain, family = struct.unpack("<BBHIhB", head[8:])
    assert (version, channels, pre_skip, rate, gain, family) == (1, 1, PRE_SKIP, 48000, 0, 0)


@pytest.mark.parametrize(
    ("packet", "samples"),
    [
        (b"\x08" + bytes(30), 960),  # SILK NB 20 ms, code 0
        (b"\x78" + bytes(30), 960),  # Hybrid FB 20 ms
        (b"\xe0" + bytes(10), 120),  # CELT FB 2.5 ms
        (b"\x19" + bytes(40), 2 * 2880),  # SILK WB 60 ms, code 1: two equal frames
        (b"\xfa\x05" + bytes(5 + 9), 2 * 960),  # CELT 20 ms, code 2: 5 then 9 octets
        (b"\xfb\x03" + bytes(30), 3 * 960),  # code 3 CBR, 3 frames of 10 octets
        (b"\xfb\x83\x04\x07" + bytes(4 + 7 + 2), 3 * 960),  # code 3 VBR
        (b"\xfb\x42\x03" + bytes(8) + bytes(3), 2 * 960),  # code 3 CBR, 3 octets of padding
        (b"\xf8", 960),  # a frame of zero octets: loss concealment (RFC 6716 §3.2.1)
        (b"\x08" + bytes(1276), None),  # R2: a frame over 1275 octets
        (b"", None),  # R1
        (b"\x19" + bytes(41), None),  # R3: code 1 with an odd number of octets
        (b"\xfa", None),  # R4: code 2 without its length
        (b"\xfa\x0a" + bytes(5), None),  # R4: the first frame longer than the packet
        (b"\xfb", None),  # R5: code 3 without its count
        (b"\xfb\x00", None),  # R5: zero frames
        (b"\x1b\x03" + bytes(3), None),  # R5: 3 x 60 ms is over 120 ms
        (b"\xfb\x03" + bytes(31), None),  # R6: 31 octets for 3 equal frames
        (b"\xfb\x83\x10\x10" + bytes(10), None),  # R7: the coded lengths exceed the packet
        (b"\xfb\x42\xff\xff", None),  # padding running off the end
    ],
)
def test_a_packets_duration_and_rfc_6716s_framing_rules(packet: bytes, samples: int) -> None:
    assert opus_samples_untrusted(packet) == samples


def test_random_packets_never_raise() -> None:
    rng = random.Random(6716)
    for _ in range(5000):
        samples = opus_samples_untrusted(rng.randbytes(rng.randrange(0, 40)))
        assert samples is None or 120 <= samples <= MAX_SAMPLES


@pytest.mark.parametrize(
    ("gap", "previous", "written"),
    [
        (960, 0x08, 960),  # one 20 ms SILK frame
        (48000, 0x7A, 48000),  # a second: 120 ms packets of the previous (hybrid) config
        (1200, 0x08, 1200),  # 20 ms SILK + 5 ms CELT
        (1000, None, 960),  # not a multiple of 2.5 ms: the rest is dropped
        (100, 0xF8, 0),
    ],
)
def test_gaps_are_concealed_with_empty_frames(gap: int, previous: int | None, written: int) -> None:
    packets = concealment(gap, previous)
    assert sum(samples for _, samples in packets) == written
    for packet, samples in packets:
        assert opus_samples_untrusted(packet) == samples
        assert packet[1] & 0xC0 == 0 and len(packet) == 2  # CBR, no padding: frames of 0 octets
    if previous is not None and packets:
        assert packets[0][0][0] & 0xFC == previous & 0xFC  # the previous packet's mode first


def _libopus_packets(seconds: float) -> list[bytes]:
    """20 ms Opus packets of a 440 Hz tone from libopus (mono, 48 kHz, VoIP application, its
    own bit rate and bandwidth)."""
    libopus = opus.load_libopus()
    if libopus is None:
        missing("libopus is not installed (apt-get install libopus0)")
    encoder = opus.OpusEncoder(libopus, 48000, bit_rate=None, max_bandwidth=None)
    count = int(seconds * 48000)
    return encoder.encode(
        [int(8000 * math.sin(2 * math.pi * 440 * n / 48000)) for n in range(count)]
    )


def test_opusinfo_and_opusdec_accept_a_file_with_a_concealed_gap(tmp_path: Path) -> None:
    opusinfo, opusdec = require_peer("opusinfo"), require_peer("opusdec")
    packets = _libopus_packets(2.0)
    path = tmp_path / "call.opus"
    writer = OggOpusWriter(path, serial=1)
    previous: int | None = None
    for index, packet in enumerate(packets):
        if 40 <= index < 60:
            continue  # 400 ms lost (or silence suppressed): concealed when the next one comes
        if index == 60:
            for filler, samples in concealment(20 * 960, previous):
                writer.write(filler, samples)
        samples = opus_samples_untrusted(packet)
        assert samples == 960
        writer.write(packet, samples)
        previous = packet[0]
    writer.close()

    info = subprocess.run(
        [opusinfo, str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert info.returncode == 0, info.stdout + info.stderr
    text = (info.stdout + info.stderr).lower()
    assert "warning" not in text and "error" not in text, text
    assert "playback length: 0m:02.000s" in text, text

    decoded = tmp_path / "call.wav"
    result = subprocess.run(
        [opusdec, "--quiet", "--rate", "48000", str(path), str(decoded)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0 and "warning" not in result.stderr.lower(), result.stderr
    with wave.open(str(decoded)) as wav:
        assert wav.getframerate() == 48000 and wav.getnchannels() == 1
        assert wav.getnframes() == 2 * 48000  # the gap kept: still on the call's clock
        frames = wav.readframes(wav.getnframes())
    pcm = struct.unpack(f"<{len(frames) // 2}h", frames)

    def power(start: float, end: float) -> float:
        chunk = pcm[int(start * 48000) : int(end * 48000)]
        return sum(sample * sample for sample in chunk) / len(chunk)

    # The tone before and after; in the gap (0.8-1.2 s) the concealment fades to silence. How
    # fast is the decoder's: libopus 1.3 (Debian 12) is under 1 % of the tone's power from 1.0 s,
    # 1.5 (Debian 13) from 1.1 s, so the gap's last 100 ms are what both must have silent.
    assert power(0.3, 0.7) > 1e6 and power(1.3, 1.7) > 1e6
    assert power(1.1, 1.2) < 0.01 * power(0.3, 0.7)
