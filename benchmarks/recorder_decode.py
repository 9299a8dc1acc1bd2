"""Benchmark the recorder's decoding: microseconds per 20 ms RTP payload, per codec.

Run from the repository root::

    python benchmarks/recorder_decode.py
    python benchmarks/recorder_decode.py --packets 2000 --repeats 7

The ``recorder`` tap (``format = "wav"``) decodes what it records in its own task, not the
relay's, but one process records many calls: each recorded G.722 direction costs this figure 50
times a second. Rows: G.711 (PCMU, a table look-up per octet), G.722 (the pure-Python sub-band
ADPCM decoder, gateway/plugins/taps/g722.py; libg722, the recorder's default since session 55;
and spandsp when installed) on speech-like input (a 1 kHz tone with a
300 Hz one, encoded by Debian's libspandsp2 when it is installed) and on random octets (every
code, the worst case for the saturating paths), G.729 by bcg729 when installed (payloads of
two-tone speech-like input its own encoder made; session 56), AMR and AMR-WB by opencore-amr
when installed (the payloads read and decoded, of two tones the tone's encoders made; session
62), GSM by libgsm when installed (likewise; session 63), and Opus (not decoded: the Ogg
page writer's cost per packet). The figure is the best of ``--repeats`` runs of ``--packets``
payloads, one decoder across the run (as for one call), divided by the number of payloads; the
last column is how many recorded directions would fill one core.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import importlib.util
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

if importlib.util.find_spec("gateway") is None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.core.media import amr, gsm
from gateway.core.media.g729 import (
    FRAME_SAMPLES,
    Bcg729,
    Bcg729Decoder,
    Bcg729Encoder,
    load_bcg729,
)
from gateway.plugins.taps import g722 as g722_module
from gateway.plugins.taps.g722 import G722Decoder
from gateway.plugins.taps.g722_libg722 import LibG722Decoder
from gateway.plugins.taps.g722_spandsp import SpandspG722Decoder, load_spandsp
from gateway.plugins.taps.oggopus import OggOpusWriter
from gateway.plugins.taps.recorder import PCMU, g711_to_linear

OCTETS = 160  # 20 ms of G.711 or G.722 (one octet per 8 kHz tick)


def _speech_like_g722(packets: int) -> list[bytes] | None:
    """G.722 payloads of a two-tone signal, from spandsp's encoder; None without libspandsp2."""
    name = ctypes.util.find_library("spandsp")
    if name is None:
        return None
    lib = ctypes.CDLL(name)
    lib.g722_encode_init.restype = ctypes.c_void_p
    lib.g722_encode_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.g722_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
    lib.g722_encode_free.argtypes = [ctypes.c_void_p]
    count = 2 * OCTETS * packets
    pcm = (ctypes.c_int16 * count)(
        *(
            int(9000 * math.sin(2 * math.pi * 1000 * i / 16000))
            + int(6000 * math.sin(2 * math.pi * 300 * i / 16000))
            for i in range(count)
        )
    )
    state = lib.g722_encode_init(None, 64000, 0)
    out = ctypes.create_string_buffer(count)
    written = lib.g722_encode(state, out, pcm, count)
    lib.g722_encode_free(state)
    data = out.raw[:written]
    return [data[i : i + OCTETS] for i in range(0, written, OCTETS)]


def _speech_like_g729(bcg729: Bcg729, packets: int) -> list[bytes]:
    """20 ms G.729 payloads (two 10-octet frames) of a two-tone signal, from bcg729's encoder."""
    signal = [
        int(9000 * math.sin(2 * math.pi * 1000 * i / 8000))
        + int(6000 * math.sin(2 * math.pi * 300 * i / 8000))
        for i in range(2 * FRAME_SAMPLES * packets)
    ]
    octets = Bcg729Encoder(bcg729).encode(signal)
    return [octets[i : i + 20] for i in range(0, len(octets), 20)]


def _amr_run(codec: amr.AmrCodec, packets: int) -> Callable[[], None]:
    """What the recorder does with each of ``packets`` bandwidth-efficient payloads (RFC 4867
    §4.3) of a two-tone signal the tone's encoder made: read the frame, decode it."""
    encoder, decoder = amr.load_encoder(codec), amr.load_decoder(codec)
    assert encoder is not None and decoder is not None
    rate = codec.sample_rate
    signal = [
        int(9000 * math.sin(2 * math.pi * 1000 * i / rate))
        + int(6000 * math.sin(2 * math.pi * 300 * i / rate))
        for i in range(codec.frame_samples * packets)
    ]
    frames = amr.AmrEncoder(encoder).encode(signal)
    payloads = [amr.bandwidth_efficient_payload(codec, frame) for frame in frames]

    def run() -> None:
        decoding = amr.AmrDecoder(decoder)
        for payload in payloads:
            for frame in amr.frames_untrusted(codec, payload, octet_aligned=False) or ():
                decoding.decode(frame)

    return run


def _gsm_run(libgsm: gsm.LibGsm, packets: int) -> Callable[[], None]:
    """What the recorder does with each of ``packets`` 33-octet GSM payloads (RFC 3551 §4.5.8)
    of a two-tone signal libgsm's encoder made: check the frame, decode it."""
    signal = [
        int(9000 * math.sin(2 * math.pi * 1000 * i / 8000))
        + int(6000 * math.sin(2 * math.pi * 300 * i / 8000))
        for i in range(gsm.FRAME_SAMPLES * packets)
    ]
    payloads = gsm.GsmEncoder(libgsm).encode_frames(signal)

    def run() -> None:
        decoder = gsm.GsmDecoder(libgsm)
        for payload in payloads:
            decoder.decode(payload)

    return run


def _best(run: Callable[[], None], packets: int, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / packets * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packets", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    packets, repeats = args.packets, args.repeats
    rng = random.Random(7)
    g711 = [bytes(rng.randrange(256) for _ in range(OCTETS)) for _ in range(packets)]
    noise = [bytes(rng.randrange(256) for _ in range(OCTETS)) for _ in range(packets)]
    speech = _speech_like_g722(packets)

    spandsp = load_spandsp()

    def decode_g722(payloads: list[bytes], *, by: str = "python") -> Callable[[], None]:
        def run() -> None:
            decoder: G722Decoder | SpandspG722Decoder | LibG722Decoder
            if by == "spandsp" and spandsp is not None:
                decoder = SpandspG722Decoder(spandsp)
            elif by == "libg722":
                decoder = LibG722Decoder()
            else:
                decoder = G722Decoder()
            for payload in payloads:
                decoder.decode(payload)

        return run

    def g711_run() -> None:
        for payload in g711:
            g711_to_linear(PCMU, payload)

    opus = [b"\xfc" + bytes(rng.randrange(256) for _ in range(79)) for _ in range(packets)]
    directory = Path(tempfile.mkdtemp())

    def opus_run() -> None:
        writer = OggOpusWriter(directory / "bench.opus", serial=1)
        for payload in opus:
            writer.write(payload, 960)
        writer.close()

    compiled = not str(g722_module.__file__).endswith(".py")
    print(f"G.722 decoder: {'compiled (mypyc)' if compiled else 'pure Python'}")
    print(f"{'codec, input':<40} {'us/20 ms':>9} {'directions/core':>16}")
    rows: list[tuple[str, Callable[[], None]]] = [("G.711 PCMU -> 8 kHz PCM", g711_run)]
    if speech is not None:
        rows.append(("G.722 -> 16 kHz PCM, two tones", decode_g722(speech)))
    else:
        print("(no libspandsp2: G.722 on speech-like input not measured)")
    rows.append(("G.722 -> 16 kHz PCM, random octets", decode_g722(noise)))
    if speech is not None:
        rows.append(
            ("G.722 by libg722 (the default), two tones", decode_g722(speech, by="libg722"))
        )
    rows.append(("G.722 by libg722 (the default), random", decode_g722(noise, by="libg722")))
    if spandsp is not None:
        if speech is not None:
            rows.append(("G.722 by spandsp (ctypes), two tones", decode_g722(speech, by="spandsp")))
        rows.append(("G.722 by spandsp (ctypes), random", decode_g722(noise, by="spandsp")))
    bcg729 = load_bcg729()
    if bcg729 is not None:
        g729 = _speech_like_g729(bcg729, packets)

        def g729_run() -> None:
            decoder = Bcg729Decoder(bcg729)
            for payload in g729:
                decoder.decode(payload)

        rows.append(("G.729 by bcg729 -> 8 kHz PCM, two tones", g729_run))
    else:
        print("(no libbcg729: G.729 not measured)")
    for codec in (amr.AMR, amr.AMR_WB):
        encoder, decoder = amr.load_encoder(codec), amr.load_decoder(codec)
        if encoder is None or decoder is None:
            print(f"(no opencore-amr or vo-amrwbenc: {codec.name} not measured)")
            continue
        rows.append((f"{codec.name} by opencore-amr, two tones", _amr_run(codec, packets)))
    libgsm = gsm.load_libgsm()
    if libgsm is not None:
        rows.append(("GSM by libgsm -> 8 kHz PCM, two tones", _gsm_run(libgsm, packets)))
    else:
        print("(no libgsm: GSM not measured)")
    rows.append(("Opus -> Ogg pages (not decoded)", opus_run))
    for label, run in rows:
        micros = _best(run, packets, repeats)
        print(f"{label:<40} {micros:>9.1f} {20_000 / micros:>16.0f}")
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


if __name__ == "__main__":
    main()
