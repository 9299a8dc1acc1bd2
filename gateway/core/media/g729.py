"""G.729 by bcg729 (Debian's ``libbcg729-0``, C, GPL-3.0+) through ctypes: the recorder's
decoder and the ringing tone's encoder. Sans-IO.

Why. G.729 (ITU-T G.729 and its Annex A, 8 kbit/s) is what low-bandwidth trunks and branch
offices still use. A recording of such a call was a pcap only (the WAV format counted its
packets as another codec and wrote nothing), and a transferee on a G.729-only line heard
silence while the transfer's target rang. bcg729 is the codec linphone (mediastreamer2),
rtpengine and Wireshark link; Debian installs it with any of them. Without it (the README's
set-up installs none of them) both stay as they were, and the recorder says so as it starts.
Since session 56. bcg729 is GPL-3.0-or-later: voipgw (Apache-2.0) does not ship it, only
loads it at run time where the operator installed it.

The payload (RFC 3551 §4.5.6): zero or more 10-octet frames (10 ms, 80 samples each), then at
most one 2-octet Annex B SID frame (comfort noise: the encoder's description of the background
while the speaker is silent; the decoder makes 10 ms of noise from it). Any other length is not
G.729: it is refused (:class:`G729PayloadError`), never half-decoded. The encoder here runs
without Annex B's voice activity detection: every frame is a 10-octet one, which a receiver
that said ``annexb=no`` (RFC 4856 §2.1.9) takes too.
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import functools
import sys
import weakref
from collections.abc import Sequence
from typing import Any

SAMPLE_RATE = 8000
FRAME_OCTETS = 10
SID_OCTETS = 2
FRAME_SAMPLES = 80


class G729PayloadError(ValueError):
    """A payload whose length is not 10 octets a frame and at most one 2-octet SID frame."""


class Bcg729:
    """The library's functions (bcg729/decoder.h, bcg729/encoder.h), typed for ctypes."""

    def __init__(self, lib: Any, name: str) -> None:
        self.name = name
        lib.initBcg729DecoderChannel.restype = ctypes.c_void_p
        lib.initBcg729DecoderChannel.argtypes = []
        lib.closeBcg729DecoderChannel.restype = None
        lib.closeBcg729DecoderChannel.argtypes = [ctypes.c_void_p]
        lib.bcg729Decoder.restype = None
        lib.bcg729Decoder.argtypes = [
            ctypes.c_void_p,  # the channel
            ctypes.c_char_p,  # bitStream
            ctypes.c_uint8,  # bitStreamLength
            ctypes.c_uint8,  # frameErasureFlag
            ctypes.c_uint8,  # SIDFrameFlag
            ctypes.c_uint8,  # rfc3389PayloadFlag
            ctypes.c_void_p,  # signal: 80 int16
        ]
        lib.initBcg729EncoderChannel.restype = ctypes.c_void_p
        lib.initBcg729EncoderChannel.argtypes = [ctypes.c_uint8]  # enableVAD
        lib.closeBcg729EncoderChannel.restype = None
        lib.closeBcg729EncoderChannel.argtypes = [ctypes.c_void_p]
        lib.bcg729Encoder.restype = None
        lib.bcg729Encoder.argtypes = [
            ctypes.c_void_p,  # the channel
            ctypes.c_void_p,  # inputFrame: 80 int16
            ctypes.c_void_p,  # bitStream: up to 10 octets
            ctypes.c_void_p,  # bitStreamLength: uint8 out
        ]
        self.lib = lib


@functools.cache
def load_bcg729() -> Bcg729 | None:
    """bcg729, or None when the library (or its functions) cannot be loaded. Once per process."""
    name = ctypes.util.find_library("bcg729")
    if name is None:
        return None
    try:
        return Bcg729(ctypes.CDLL(name), name)
    except (OSError, AttributeError):
        return None


def g729_frames_untrusted(payload: bytes) -> list[tuple[bytes, bool]]:
    """The frames of a G.729 payload in order, each with whether it is a SID frame (RFC 3551
    §4.5.6). Raises :class:`G729PayloadError` for any other length."""
    voice, rest = divmod(len(payload), FRAME_OCTETS)
    if rest not in (0, SID_OCTETS):
        raise G729PayloadError(f"a G.729 payload of {len(payload)} octets")
    frames = [(payload[i * FRAME_OCTETS : (i + 1) * FRAME_OCTETS], False) for i in range(voice)]
    if rest:
        frames.append((payload[-SID_OCTETS:], True))
    return frames


class Bcg729Decoder:
    """Decodes the G.729 payloads of one source, in order (the decoder follows one encoder's
    state, as the recorder's G.722 decoders do: ``decode`` and ``reset``)."""

    def __init__(self, bcg729: Bcg729) -> None:
        self._lib = bcg729.lib
        self._signal = (ctypes.c_int16 * FRAME_SAMPLES)()
        self._open_channel()

    def _open_channel(self) -> None:
        channel: int | None = self._lib.initBcg729DecoderChannel()
        if not channel:
            raise MemoryError("bcg729 could not make a G.729 decoder")
        self._channel = channel
        # The C state goes with us, or at reset(): once either way (a finalizer runs once).
        self._close = weakref.finalize(self, self._lib.closeBcg729DecoderChannel, channel)

    def reset(self) -> None:
        """A new decoder, for a new source (a new SSRC, a re-base): bcg729 has no reset."""
        self._close()
        self._open_channel()

    def decode(self, payload: bytes) -> bytes:
        """16-bit little-endian PCM at 8 kHz: 80 samples per frame (a SID frame's comfort
        noise too). Raises :class:`G729PayloadError` before decoding anything of a payload that
        is not G.729 (:func:`g729_frames_untrusted`)."""
        frames = g729_frames_untrusted(payload)
        pcm = array.array("h")
        for frame, sid in frames:
            self._lib.bcg729Decoder(self._channel, frame, len(frame), 0, int(sid), 0, self._signal)
            pcm.frombytes(bytes(self._signal))
        if sys.byteorder == "big":  # bcg729 writes host order; WAV is little-endian
            pcm.byteswap()
        return pcm.tobytes()


class Bcg729Encoder:
    """Encodes one source's 8 kHz samples, 80 at a time, into 10-octet frames, keeping the
    encoder's state from call to call. ``vad`` turns on Annex B's voice activity detection (a
    frame is then 10 octets, a 2-octet SID frame or none); the ringing tone's encoder has it
    off, so that ``annexb=no`` receivers take every frame."""

    def __init__(self, bcg729: Bcg729, *, vad: bool = False) -> None:
        self._lib = bcg729.lib
        channel: int | None = self._lib.initBcg729EncoderChannel(int(vad))
        if not channel:
            raise MemoryError("bcg729 could not make a G.729 encoder")
        self._channel = channel
        weakref.finalize(self, self._lib.closeBcg729EncoderChannel, channel)
        self._input = (ctypes.c_int16 * FRAME_SAMPLES)()
        self._output = (ctypes.c_uint8 * FRAME_OCTETS)()
        self._length = ctypes.c_uint8()

    def encode(self, samples: Sequence[int]) -> bytes:
        """``samples`` (a whole number of 80) as their frames back to back."""
        return b"".join(self.encode_frames(samples))

    def encode_frames(self, samples: Sequence[int]) -> list[bytes]:
        """``samples`` (a whole number of 80) as one frame per 10 ms, in order (with ``vad``, a
        frame not sent is empty)."""
        if len(samples) % FRAME_SAMPLES:
            raise ValueError(f"{len(samples)} samples: not a whole number of G.729 frames")
        frames = []
        for start in range(0, len(samples), FRAME_SAMPLES):
            self._input[:] = list(samples[start : start + FRAME_SAMPLES])
            self._lib.bcg729Encoder(
                self._channel, self._input, self._output, ctypes.byref(self._length)
            )
            frames.append(bytes(self._output)[: self._length.value])
        return frames
