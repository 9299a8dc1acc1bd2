"""G.722 decoding by spandsp (Debian's ``libspandsp2``, C, LGPL-2.1) through ctypes.

Why. The pure-Python decoder (:mod:`.g722`) costs about 0.8 ms of CPU per 20 ms packet, in the
SIP process's event loop where the recorder's task runs: some 4 % of a core per recorded G.722
direction, so a few dozen recorded G.722 calls would take the core SIP needs. spandsp (the DSP
library FreeSWITCH and Asterisk use for G.722, fax and tones) decodes the same packet in a few
microseconds. Since session 55 the recorder decodes with libg722 (g722_libg722.py: installed
with the gateway, the same speed, saturating as G.722 says) unless ``[plugins.recorder]
g722_decoder = "spandsp"`` chooses this one; it is looked up once, when the recorder is
configured.

One difference: at full scale spandsp 0.0.6 wraps its 16-bit output where G.722 saturates (its
receive QMF casts without LIMIT), so clipped input gives a click where the Python decoder gives a
clipped sample; below full scale both give the same samples (tests/unit/taps/test_g722.py).
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import sys
import weakref
from typing import Any

MODE_64K = 64000  # G.722's 64 kbit/s mode: what RTP carries (RFC 3551 §4.5.2)


class Spandsp:
    """The library's G.722 decoder functions (spandsp/g722.h), typed for ctypes."""

    def __init__(self, lib: Any, name: str) -> None:
        self.name = name
        lib.g722_decode_init.restype = ctypes.c_void_p
        lib.g722_decode_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.g722_decode.restype = ctypes.c_int
        lib.g722_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.g722_decode_free.restype = ctypes.c_int
        lib.g722_decode_free.argtypes = [ctypes.c_void_p]
        self.lib = lib


def load_spandsp() -> Spandsp | None:
    """spandsp's G.722 decoder, or None when the library (or the functions) cannot be loaded."""
    name = ctypes.util.find_library("spandsp")
    if name is None:
        return None
    try:
        return Spandsp(ctypes.CDLL(name), name)
    except (OSError, AttributeError):
        return None


class SpandspG722Decoder:
    """Decodes the G.722 octets of one source, in order, as :class:`.g722.G722Decoder` does
    (the same ``decode`` and ``reset``), in C."""

    def __init__(self, spandsp: Spandsp) -> None:
        self._lib = spandsp.lib
        state = self._lib.g722_decode_init(None, MODE_64K, 0)
        if not state:
            raise MemoryError("spandsp could not make a G.722 decoder")
        self._state = state
        weakref.finalize(self, self._lib.g722_decode_free, state)  # the C state with us

    def reset(self) -> None:
        """Back to the initial state, for a new source (g722_decode_init on the same memory
        clears it)."""
        self._lib.g722_decode_init(self._state, MODE_64K, 0)

    def decode(self, octets: bytes) -> bytes:
        """16-bit little-endian PCM at 16 kHz: two samples per octet."""
        out = ctypes.create_string_buffer(4 * len(octets))
        count = self._lib.g722_decode(self._state, out, octets, len(octets))
        pcm = out.raw[: 2 * count]
        if sys.byteorder == "big":  # spandsp writes host order; WAV is little-endian
            samples = array.array("h", pcm)
            samples.byteswap()
            pcm = samples.tobytes()
        return pcm
