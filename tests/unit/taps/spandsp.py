"""Loading spandsp for the G.722 tests: moved here from test_g722.py so that no test module imports
another."""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any

from tests.conftest import missing


class Spandsp:
    """spandsp's g722_encode/g722_decode (spandsp/g722.h), one fresh state per call."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        for name in ("g722_encode_init", "g722_decode_init"):
            getattr(lib, name).restype = ctypes.c_void_p
            getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.g722_encode.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        lib.g722_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        lib.g722_encode_free.argtypes = [ctypes.c_void_p]
        lib.g722_decode_free.argtypes = [ctypes.c_void_p]

    def encode(self, samples: list[int]) -> bytes:
        state = self._lib.g722_encode_init(None, 64000, 0)
        pcm = (ctypes.c_int16 * len(samples))(*samples)
        out = ctypes.create_string_buffer(len(samples))
        count = self._lib.g722_encode(state, out, pcm, len(samples))
        self._lib.g722_encode_free(state)
        return out.raw[:count]

    def decode(self, octets: bytes) -> list[int]:
        state = self._lib.g722_decode_init(None, 64000, 0)
        out = (ctypes.c_int16 * (2 * len(octets)))()
        count = self._lib.g722_decode(state, out, octets, len(octets))
        self._lib.g722_decode_free(state)
        return list(out[:count])


def load_spandsp() -> Spandsp:
    """spandsp's G.722 codec; skips (locally) or fails (CI) without libspandsp2."""
    name = ctypes.util.find_library("spandsp")
    if name is None:
        missing("libspandsp is not installed (apt-get install libspandsp2)")
    return Spandsp(ctypes.CDLL(name))
