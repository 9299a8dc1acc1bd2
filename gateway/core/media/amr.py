"""AMR (narrowband) by opencore-amr (Debian's ``libopencore-amrnb0``, C, Apache-2.0) through
ctypes, and its RTP payload format (RFC 4867): the ringing tone's encoder, and a decoder to
check what it makes. Sans-IO.

Why. A transferee on a line that takes AMR alone (a mobile operator's trunk, a softphone
narrowed to the codec of the handsets it talks to) heard silence while the transfer's target
rang: the gateway encoded its ringing tone in no codec that line takes. opencore-amr is the
3GPP reference code (TS 26.073) packaged for Linux; baresip's, FFmpeg's and GStreamer's AMR
link it, and Debian installs it with baresip. Without it AMR is no tone codec. Since session 62.

The codec (3GPP TS 26.071, TS 26.101): 8000 samples a second in 20 ms frames, one of eight
modes from 4.75 to 12.2 kbit/s. The tone goes in mode 7, 12.2 kbit/s (244 bits a frame), the
one GSM's EFR shares and the one every AMR decoder takes whatever it asks for; a receiver whose
``mode-set`` leaves 12.2 out is not sent it (below). No DTX: the cadence's gaps go as encoded
silence, as a sender that never sends SID frames does.

RTP (RFC 4867 §4): the clock is 8000 Hz, a packet here carries one frame, and the payload is
packed in one of two ways the receiver's ``a=fmtp`` chooses:

- bandwidth-efficient (§4.3, the default): a 4-bit CMR, then the 6-bit table of contents entry
  (F, FT, Q), then the frame's bits, all without padding until the end of the payload;
- octet-aligned (§4.4, ``octet-align=1``): the CMR in the first octet, the table of contents
  entry in the second (F, FT, Q, two padding bits), then the frame's bits padded to an octet.

opencore-amr reads and writes frames in the storage format of §5.3: one header octet laid out
as an octet-aligned table of contents entry (0, FT, Q, 0, 0), then the frame's bits in the
order §4.3.2 and §4.4.2 send them, padded to an octet. So an octet-aligned payload is the CMR
octet and the storage frame; a bandwidth-efficient one is the same bits shifted by two.

Left out, so that a line asking for them gets no AMR tone (the next tone codec it lists, or
none): ``crc=1``, ``robust-sorting=1`` and ``interleaving`` (§8.1: octet-aligned variants for
lossy radio links, whose receivers expect CRCs or frame blocks we do not make), more than one
channel (``AMR/8000/2``: the tone is mono), and a ``mode-set`` without mode 7 (§8.1: a
receiver that lists the modes it takes must not be sent others).
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
"""AMR's sampling rate and its RTP clock rate (RFC 4867 §4.1)."""
FRAME_SAMPLES = 160
"""Samples in one 20 ms frame."""
TONE_MODE = 7
"""The mode the tone goes in: 12.2 kbit/s (TS 26.101 Table 1a, frame type 7)."""
SPEECH_BITS = (95, 103, 118, 134, 148, 159, 204, 244)
"""The bits of a speech frame in each mode, 0 (4.75 kbit/s) to 7 (12.2), RFC 4867 §3.6."""
NO_MODE_REQUEST = 15
"""The CMR that asks for no particular mode (RFC 4867 §4.3.1)."""
QUALITY_BIT = 0x04
"""The Q bit of a storage header or octet-aligned table of contents entry: a sound frame."""
MAX_FRAME_OCTETS = 32
"""The longest storage frame: the header and 244 bits (31 octets)."""


class AmrError(RuntimeError):
    """opencore-amr refused a call, or a payload is not what this module makes."""


class LibAmrNb:
    """The library's functions (opencore-amrnb/interf_enc.h, interf_dec.h), typed for ctypes."""

    def __init__(self, lib: Any, name: str) -> None:
        self.name = name
        lib.Encoder_Interface_init.restype = ctypes.c_void_p
        lib.Encoder_Interface_init.argtypes = [ctypes.c_int]  # dtx
        lib.Encoder_Interface_exit.restype = None
        lib.Encoder_Interface_exit.argtypes = [ctypes.c_void_p]
        lib.Encoder_Interface_Encode.restype = ctypes.c_int
        lib.Encoder_Interface_Encode.argtypes = [
            ctypes.c_void_p,  # state
            ctypes.c_int,  # enum Mode
            ctypes.c_void_p,  # speech: 160 int16
            ctypes.c_void_p,  # out: the storage frame
            ctypes.c_int,  # forceSpeech
        ]
        lib.Decoder_Interface_init.restype = ctypes.c_void_p
        lib.Decoder_Interface_init.argtypes = []
        lib.Decoder_Interface_exit.restype = None
        lib.Decoder_Interface_exit.argtypes = [ctypes.c_void_p]
        lib.Decoder_Interface_Decode.restype = None
        lib.Decoder_Interface_Decode.argtypes = [
            ctypes.c_void_p,  # state
            ctypes.c_char_p,  # in: the storage frame
            ctypes.c_void_p,  # out: 160 int16
            ctypes.c_int,  # bfi (bad frame indication)
        ]
        self.lib = lib


@functools.cache
def load_amrnb() -> LibAmrNb | None:
    """opencore-amrnb, or None when the library (or its functions) cannot be loaded. Once per
    process."""
    name = ctypes.util.find_library("opencore-amrnb")
    if name is None:
        return None
    try:
        return LibAmrNb(ctypes.CDLL(name), name)
    except (OSError, AttributeError):
        return None


class AmrEncoder:
    """Encodes one source's 8 kHz mono samples in ``mode``, a storage frame (RFC 4867 §5.3)
    per 20 ms, keeping the encoder's state from call to call. No DTX."""

    def __init__(self, amr: LibAmrNb, mode: int = TONE_MODE) -> None:
        if not 0 <= mode < len(SPEECH_BITS):
            raise ValueError(f"AMR mode {mode} is not one of 0-7")
        self._lib = amr.lib
        self.mode = mode
        state: int | None = self._lib.Encoder_Interface_init(0)
        if not state:
            raise AmrError("opencore-amrnb: no encoder")
        self._state = state
        weakref.finalize(self, self._lib.Encoder_Interface_exit, state)
        self._input = (ctypes.c_int16 * FRAME_SAMPLES)()
        self._output = (ctypes.c_uint8 * MAX_FRAME_OCTETS)()

    def encode(self, samples: Sequence[int]) -> list[bytes]:
        """``samples`` (a whole number of 20 ms frames) as one storage frame per frame."""
        if len(samples) % FRAME_SAMPLES:
            raise ValueError(f"{len(samples)} samples: not a whole number of 20 ms frames")
        expected = 1 + (SPEECH_BITS[self.mode] + 7) // 8
        frames = []
        for start in range(0, len(samples), FRAME_SAMPLES):
            self._input[:] = list(samples[start : start + FRAME_SAMPLES])
            length = self._lib.Encoder_Interface_Encode(
                self._state, self.mode, self._input, self._output, 0
            )
            if length != expected:
                raise AmrError(f"opencore-amrnb: a frame of {length} octets, not {expected}")
            frames.append(bytes(self._output[:length]))
        return frames


class AmrDecoder:
    """Decodes one source's storage frames, in order, to 16-bit PCM at 8 kHz."""

    def __init__(self, amr: LibAmrNb) -> None:
        self._lib = amr.lib
        state: int | None = self._lib.Decoder_Interface_init()
        if not state:
            raise AmrError("opencore-amrnb: no decoder")
        self._state = state
        weakref.finalize(self, self._lib.Decoder_Interface_exit, state)
        self._pcm = (ctypes.c_int16 * FRAME_SAMPLES)()

    def decode(self, frame: bytes) -> bytes:
        """16-bit little-endian PCM, 160 samples. Raises :class:`AmrError` for a frame that is
        not a whole speech frame of its mode (the library would read past it)."""
        mode = _speech_mode(frame[0] if frame else 0xFF)
        if len(frame) != 1 + (SPEECH_BITS[mode] + 7) // 8:
            raise AmrError(f"a storage frame of {len(frame)} octets is not one of mode {mode}")
        self._lib.Decoder_Interface_Decode(self._state, frame, self._pcm, 0)
        pcm = array.array("h", self._pcm)
        if sys.byteorder == "big":  # host order from the library; WAV is little-endian
            pcm.byteswap()
        return pcm.tobytes()


def _speech_mode(header: int) -> int:
    """The mode of a storage header or table of contents entry whose frame type is a speech
    mode (0-7); :class:`AmrError` for SID, NO_DATA and the reserved types."""
    frame_type = (header >> 3) & 0x0F
    if frame_type >= len(SPEECH_BITS):
        raise AmrError(f"frame type {frame_type} is no speech frame")
    return frame_type


def octet_aligned_payload(frame: bytes) -> bytes:
    """The RTP payload (RFC 4867 §4.4) carrying storage ``frame`` alone: the CMR octet (no
    request, four reserved zero bits), then the table of contents entry, whose F bit (0: the
    last frame) and layout are the storage header's, then the speech octets as stored."""
    return bytes((NO_MODE_REQUEST << 4,)) + frame


def bandwidth_efficient_payload(frame: bytes) -> bytes:
    """The RTP payload (RFC 4867 §4.3) carrying storage ``frame`` alone: CMR (4 bits), the
    table of contents entry (F = 0, FT, Q: 6 bits), then the speech bits, zero-padded to an
    octet at the end."""
    mode = _speech_mode(frame[0])
    bits = SPEECH_BITS[mode]
    speech = int.from_bytes(frame[1:], "big") >> (8 * (len(frame) - 1) - bits)
    toc = (frame[0] >> 2) & 0x1F  # F (0), FT and Q: the header's top six bits
    total = 4 + 6 + bits
    octets = (total + 7) // 8
    value = (((NO_MODE_REQUEST << 6) | toc) << bits | speech) << (8 * octets - total)
    return value.to_bytes(octets, "big")


def storage_frame(payload: bytes, *, octet_aligned: bool) -> bytes:
    """The storage frame (RFC 4867 §5.3) of a payload that carries one speech frame, packed as
    :func:`octet_aligned_payload` or :func:`bandwidth_efficient_payload` pack it (any CMR):
    for checking what the gateway sends. :class:`AmrError` for another kind of payload."""
    if len(payload) < 2:
        raise AmrError(f"an AMR payload of {len(payload)} octets")
    if octet_aligned:
        frame = payload[1:]
        if frame[0] & 0x80:
            raise AmrError("more than one frame in the payload")
        mode = _speech_mode(frame[0])
        if len(frame) != 1 + (SPEECH_BITS[mode] + 7) // 8:
            raise AmrError(f"{len(frame) - 1} speech octets for mode {mode}")
        return bytes((frame[0] & 0x7C,)) + frame[1:]
    value = int.from_bytes(payload, "big")
    width = 8 * len(payload)
    toc = (value >> (width - 10)) & 0x3F
    if toc & 0x20:
        raise AmrError("more than one frame in the payload")
    mode = _speech_mode(toc << 2)
    bits = SPEECH_BITS[mode]
    if len(payload) != (10 + bits + 7) // 8:
        raise AmrError(f"{len(payload)} octets for one frame of mode {mode}")
    speech = (value >> (width - 10 - bits)) & ((1 << bits) - 1)
    speech_octets = (bits + 7) // 8
    return bytes((toc << 2,)) + (speech << (8 * speech_octets - bits)).to_bytes(
        speech_octets, "big"
    )


def tone_packing(fmtp: str | None) -> str | None:
    """How a receiver whose ``a=fmtp`` parameters are ``fmtp`` (None: none) takes a tone in
    mode 7, one frame a packet: ``"octet-aligned"`` or ``"bandwidth-efficient"``; None when it
    asks for what this module does not make (crc, robust sorting, interleaving, a mode-set
    without 7) or its parameters cannot be read. RFC 4867 §8.1: parameter
    names are case-insensitive, and each absent one has its default (bandwidth-efficient, any
    mode)."""
    parameters: dict[str, str] = {}
    for item in (fmtp or "").split(";"):
        name, _, value = item.strip().partition("=")
        if name:
            parameters[name.strip().lower()] = value.strip()
    try:
        if "interleaving" in parameters:
            return None
        if parameters.get("crc", "0") != "0" or parameters.get("robust-sorting", "0") != "0":
            return None
        modes = parameters.get("mode-set")
        if modes is not None and TONE_MODE not in {int(mode) for mode in modes.split(",")}:
            return None
        octet_align = parameters.get("octet-align", "0")
    except ValueError:
        return None
    if octet_align == "1":
        return "octet-aligned"
    if octet_align == "0":
        return "bandwidth-efficient"
    return None
