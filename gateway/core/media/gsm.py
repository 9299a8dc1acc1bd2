"""GSM 06.10 full rate by libgsm (Debian's ``libgsm1``, C, ISC-style licence) through ctypes: the
recorder's decoder and the ringing tone's encoder. Sans-IO.

Why. GSM full rate (ETSI GSM 06.10, 13 kbit/s, RTP's static payload type 3) is what older PSTN
gateways, PBXes and analogue adapters still offer, and what some operators narrow a
low-bandwidth line to. A recording of such a call was a pcap only (the WAV format counted its
packets as another codec and wrote nothing), and a transferee on a GSM-only line heard silence
while the transfer's target rang. libgsm is the codec Asterisk, FreeSWITCH, baresip and sox
link; Debian installs it with baresip. Without it both stay as they were, and the recorder says
so as it starts. Since session 63.

The payload (RFC 3551 §4.5.8): one or more 33-octet frames, 20 ms (160 samples at 8 kHz) each;
a frame's first four bits are the signature 0xD, then 260 bits of parameters. Any other length,
or a frame without the signature, is not GSM: it is refused (:class:`GsmPayloadError`), never
half-decoded (libgsm would decode a frame's bits whatever they are, but refuses a wrong
signature).
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
FRAME_OCTETS = 33
FRAME_SAMPLES = 160
SIGNATURE = 0xD
"""The four bits every frame starts with (RFC 3551 §4.5.8, Table 3's ``0xD``)."""


class GsmPayloadError(ValueError):
    """A payload that is not a whole number of 33-octet frames, each with the signature."""


class LibGsm:
    """The library's functions (gsm.h), typed for ctypes."""

    def __init__(self, lib: Any, name: str) -> None:
        self.name = name
        lib.gsm_create.restype = ctypes.c_void_p
        lib.gsm_create.argtypes = []
        lib.gsm_destroy.restype = None
        lib.gsm_destroy.argtypes = [ctypes.c_void_p]
        lib.gsm_encode.restype = None
        lib.gsm_encode.argtypes = [
            ctypes.c_void_p,  # the state
            ctypes.c_void_p,  # source: 160 gsm_signal (int16)
            ctypes.c_void_p,  # c: a 33-octet gsm_frame
        ]
        lib.gsm_decode.restype = ctypes.c_int  # -1: not a GSM frame (its signature)
        lib.gsm_decode.argtypes = [
            ctypes.c_void_p,  # the state
            ctypes.c_char_p,  # c: a 33-octet gsm_frame
            ctypes.c_void_p,  # target: 160 gsm_signal
        ]
        self.lib = lib


@functools.cache
def load_libgsm() -> LibGsm | None:
    """libgsm, or None when the library (or its functions) cannot be loaded. Once per process."""
    name = ctypes.util.find_library("gsm")
    if name is None:
        return None
    try:
        return LibGsm(ctypes.CDLL(name), name)
    except (OSError, AttributeError):
        return None


def gsm_frames_untrusted(payload: bytes) -> list[bytes]:
    """The frames of a GSM payload in order (RFC 3551 §4.5.8). Raises :class:`GsmPayloadError`
    for an empty payload, a length that is not a whole number of frames, or a frame without the
    signature."""
    count, rest = divmod(len(payload), FRAME_OCTETS)
    if rest or not count:
        raise GsmPayloadError(f"a GSM payload of {len(payload)} octets")
    frames = [payload[i * FRAME_OCTETS : (i + 1) * FRAME_OCTETS] for i in range(count)]
    for index, frame in enumerate(frames):
        if frame[0] >> 4 != SIGNATURE:
            raise GsmPayloadError(f"GSM frame {index + 1} of {count} has no 0xD signature")
    return frames


class _State:
    """One libgsm state (an encoder's or a decoder's: libgsm uses the same for both), freed
    with its owner or at :meth:`renew`."""

    def __init__(self, libgsm: LibGsm) -> None:
        self._lib = libgsm.lib
        self._open()

    def _open(self) -> None:
        state: int | None = self._lib.gsm_create()
        if not state:
            raise MemoryError("libgsm could not make a GSM state")
        self.state = state
        # The C state goes with us, or at renew(): once either way (a finalizer runs once).
        self._close = weakref.finalize(self, self._lib.gsm_destroy, state)

    def renew(self) -> None:
        self._close()
        self._open()


class GsmDecoder:
    """Decodes the GSM payloads of one source, in order (the decoder follows one encoder's
    state, as the recorder's G.722 decoders do: ``decode`` and ``reset``)."""

    def __init__(self, libgsm: LibGsm) -> None:
        self._lib = libgsm.lib
        self._state = _State(libgsm)
        self._signal = (ctypes.c_int16 * FRAME_SAMPLES)()

    def reset(self) -> None:
        """A new decoder, for a new source (a new SSRC, a re-base): libgsm has no reset."""
        self._state.renew()

    def decode(self, payload: bytes) -> bytes:
        """16-bit little-endian PCM at 8 kHz: 160 samples per frame. Raises
        :class:`GsmPayloadError` before decoding anything of a payload that is not GSM
        (:func:`gsm_frames_untrusted`)."""
        frames = gsm_frames_untrusted(payload)
        pcm = array.array("h")
        for frame in frames:
            if self._lib.gsm_decode(self._state.state, frame, self._signal) != 0:
                # Checked above: only a libgsm of another interface gets here.
                raise GsmPayloadError("libgsm refused a frame with the 0xD signature")
            pcm.frombytes(bytes(self._signal))
        if sys.byteorder == "big":  # libgsm writes host order; WAV is little-endian
            pcm.byteswap()
        return pcm.tobytes()


class GsmEncoder:
    """Encodes one source's 8 kHz samples, 160 at a time, into 33-octet frames, keeping the
    encoder's state from call to call."""

    def __init__(self, libgsm: LibGsm) -> None:
        self._lib = libgsm.lib
        self._name = libgsm.name
        self._state = _State(libgsm)
        self._input = (ctypes.c_int16 * FRAME_SAMPLES)()
        self._output = (ctypes.c_uint8 * FRAME_OCTETS)()

    def encode_frames(self, samples: Sequence[int]) -> list[bytes]:
        """``samples`` (a whole number of 160) as one frame per 20 ms, in order."""
        if len(samples) % FRAME_SAMPLES:
            raise ValueError(f"{len(samples)} samples: not a whole number of GSM frames")
        frames = []
        for start in range(0, len(samples), FRAME_SAMPLES):
            self._input[:] = list(samples[start : start + FRAME_SAMPLES])
            self._lib.gsm_encode(self._state.state, self._input, self._output)
            frame = bytes(self._output)
            if frame[0] >> 4 != SIGNATURE:
                raise GsmPayloadError(f"libgsm ({self._name}) made a frame without 0xD")
            frames.append(frame)
        return frames
