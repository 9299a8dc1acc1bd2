"""Opus by libopus (Debian's ``libopus0``, C, BSD-3-Clause) through ctypes: the ringing tone's
encoder, and a decoder to check what it makes. Sans-IO.

Why. A transferee on a line that takes Opus alone (a softphone or a WebRTC client whose
administrator narrowed its codecs to Opus, RFC 7874 §3 makes it one of WebRTC's two
mandatory codecs) heard silence while the transfer's target rang: the gateway encoded its
ringing tone in no codec that line takes. libopus is the reference implementation (RFC 6716
§A is its code); every softphone, browser and media server links it, and Debian installs it
with any of them. Without it Opus is no tone codec, as before. Since session 57.

RTP (RFC 7587): the clock is 48000 Hz whatever rate the encoder samples at (§4.1: "for all
modes of Opus and all sampling rates"), so 20 ms of audio steps the timestamp by 960; the
rtpmap says ``opus/48000/2`` always (§7), a mono stream is sent as it is and every decoder
takes it (§3.4). The tone here is encoded at 8 kHz (its frequencies are below 500 Hz, and the
cadence is the one the G.711 frames are made from), narrowband, with variable bit rate up to
:data:`TONE_BIT_RATE`: under the lowest ``maxaveragebitrate`` a receiver is likely to set
(RFC 7587 §6.1 allows 6000 to 510000).
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

RTP_CLOCK_RATE = 48000
"""The RTP clock of every Opus stream (RFC 7587 §4.1)."""
APPLICATION_VOIP = 2048
"""``OPUS_APPLICATION_VOIP`` (opus_defines.h): tuned for speech intelligibility."""
SET_BITRATE = 4002
"""``OPUS_SET_BITRATE_REQUEST`` (opus_defines.h)."""
SET_MAX_BANDWIDTH = 4004
"""``OPUS_SET_MAX_BANDWIDTH_REQUEST`` (opus_defines.h)."""
BANDWIDTH_NARROWBAND = 1101
"""``OPUS_BANDWIDTH_NARROWBAND``: 4 kHz of audio bandwidth."""
TONE_BIT_RATE = 12000
"""The encoder's bit rate for the tone: a narrowband tone needs less."""
MAX_PACKET_OCTETS = 1275
"""The longest Opus frame (RFC 6716 §3.2.1)."""
MAX_FRAME_SAMPLES_48K = 5760
"""The most samples one packet decodes to at 48 kHz (120 ms, RFC 6716 §2.1.4)."""


class OpusError(RuntimeError):
    """libopus refused a call (its error code and ``opus_strerror`` in the message)."""


class LibOpus:
    """The library's functions (opus/opus.h), typed for ctypes."""

    def __init__(self, lib: Any, name: str) -> None:
        self.name = name
        lib.opus_encoder_create.restype = ctypes.c_void_p
        lib.opus_encoder_create.argtypes = [
            ctypes.c_int32,  # Fs
            ctypes.c_int,  # channels
            ctypes.c_int,  # application
            ctypes.POINTER(ctypes.c_int),  # error
        ]
        lib.opus_encoder_destroy.restype = None
        lib.opus_encoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_encode.restype = ctypes.c_int32
        lib.opus_encode.argtypes = [
            ctypes.c_void_p,  # st
            ctypes.c_void_p,  # pcm: frame_size int16 per channel
            ctypes.c_int,  # frame_size
            ctypes.c_void_p,  # data
            ctypes.c_int32,  # max_data_bytes
        ]
        # opus_encoder_ctl is variadic: no argtypes; each call passes ctypes values.
        lib.opus_encoder_ctl.restype = ctypes.c_int
        lib.opus_decoder_create.restype = ctypes.c_void_p
        lib.opus_decoder_create.argtypes = [
            ctypes.c_int32,  # Fs
            ctypes.c_int,  # channels
            ctypes.POINTER(ctypes.c_int),  # error
        ]
        lib.opus_decoder_destroy.restype = None
        lib.opus_decoder_destroy.argtypes = [ctypes.c_void_p]
        lib.opus_decode.restype = ctypes.c_int
        lib.opus_decode.argtypes = [
            ctypes.c_void_p,  # st
            ctypes.c_char_p,  # data
            ctypes.c_int32,  # len
            ctypes.c_void_p,  # pcm
            ctypes.c_int,  # frame_size
            ctypes.c_int,  # decode_fec
        ]
        lib.opus_strerror.restype = ctypes.c_char_p
        lib.opus_strerror.argtypes = [ctypes.c_int]
        self.lib = lib

    def error(self, what: str, code: int) -> OpusError:
        reason = self.lib.opus_strerror(code) or b"unknown error"
        return OpusError(f"libopus: {what}: {reason.decode('ascii', 'replace')} ({code})")


@functools.cache
def load_libopus() -> LibOpus | None:
    """libopus, or None when the library (or its functions) cannot be loaded. Once per
    process."""
    name = ctypes.util.find_library("opus")
    if name is None:
        return None
    try:
        return LibOpus(ctypes.CDLL(name), name)
    except (OSError, AttributeError):
        return None


class OpusEncoder:
    """Encodes one source's mono samples at ``sample_rate``, 20 ms a packet, keeping the
    encoder's state from call to call: VBR, the VoIP application, by default narrowband at
    :data:`TONE_BIT_RATE` (the tone's settings; None: libopus's own choice)."""

    def __init__(
        self,
        opus: LibOpus,
        sample_rate: int,
        *,
        bit_rate: int | None = TONE_BIT_RATE,
        max_bandwidth: int | None = BANDWIDTH_NARROWBAND,
    ) -> None:
        self._opus = opus
        self._lib = opus.lib
        self.frame_samples = sample_rate // 50
        error = ctypes.c_int()
        state: int | None = self._lib.opus_encoder_create(
            sample_rate, 1, APPLICATION_VOIP, ctypes.byref(error)
        )
        if not state or error.value != 0:
            raise opus.error("an encoder", error.value)
        self._state = state
        weakref.finalize(self, self._lib.opus_encoder_destroy, state)
        for request, value in ((SET_BITRATE, bit_rate), (SET_MAX_BANDWIDTH, max_bandwidth)):
            if value is None:
                continue
            code = self._lib.opus_encoder_ctl(
                ctypes.c_void_p(state), ctypes.c_int(request), ctypes.c_int32(value)
            )
            if code != 0:
                raise opus.error(f"encoder setting {request}", code)
        self._input = (ctypes.c_int16 * self.frame_samples)()
        self._output = (ctypes.c_uint8 * MAX_PACKET_OCTETS)()

    def encode(self, samples: Sequence[int]) -> list[bytes]:
        """``samples`` (a whole number of 20 ms frames) as one Opus packet per frame."""
        frame = self.frame_samples
        if len(samples) % frame:
            raise ValueError(f"{len(samples)} samples: not a whole number of 20 ms frames")
        packets = []
        for start in range(0, len(samples), frame):
            self._input[:] = list(samples[start : start + frame])
            length = self._lib.opus_encode(
                self._state, self._input, frame, self._output, MAX_PACKET_OCTETS
            )
            if length < 0:
                raise self._opus.error("encoding", length)
            packets.append(bytes(self._output[:length]))
        return packets


class OpusDecoder:
    """Decodes one source's Opus packets, in order, to mono 16-bit PCM at ``sample_rate``."""

    def __init__(self, opus: LibOpus, sample_rate: int) -> None:
        self._opus = opus
        self._lib = opus.lib
        self._max_samples = MAX_FRAME_SAMPLES_48K * sample_rate // RTP_CLOCK_RATE
        error = ctypes.c_int()
        state: int | None = self._lib.opus_decoder_create(sample_rate, 1, ctypes.byref(error))
        if not state or error.value != 0:
            raise opus.error("a decoder", error.value)
        self._state = state
        weakref.finalize(self, self._lib.opus_decoder_destroy, state)
        self._pcm = (ctypes.c_int16 * self._max_samples)()

    def decode(self, packet: bytes) -> bytes:
        """16-bit little-endian PCM. Raises :class:`OpusError` for a packet libopus refuses."""
        samples = self._lib.opus_decode(
            self._state, packet, len(packet), self._pcm, self._max_samples, 0
        )
        if samples < 0:
            raise self._opus.error("decoding", samples)
        pcm = array.array("h", self._pcm[:samples])
        if sys.byteorder == "big":  # host order from libopus; WAV is little-endian
            pcm.byteswap()
        return pcm.tobytes()
