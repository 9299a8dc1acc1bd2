"""AMR and AMR-WB through ctypes (Debian's ``libopencore-amrnb0``, ``libvo-amrwbenc0`` and
``libopencore-amrwb0``, C, Apache-2.0), and their RTP payload format (RFC 4867): the ringing
tone's encoders, and decoders to check what they make. Sans-IO.

Why. A transferee on a line that takes AMR or AMR-WB alone (a mobile operator's trunk, a
softphone narrowed to the codec of the handsets it talks to, an HD voice line) heard silence
while the transfer's target rang: the gateway encoded its ringing tone in no codec that line
takes. opencore-amr is the 3GPP reference code (TS 26.073, TS 26.173's decoder) packaged for
Linux, and vo-amrwbenc the AMR-WB encoder beside it; baresip's, FFmpeg's and GStreamer's AMR
link them, and Debian installs them with baresip. Without the encoder a codec is no tone
codec. Since session 62.

The codecs (3GPP TS 26.071 and 26.101, TS 26.171 and 26.201): 20 ms frames in one of eight
modes from 4.75 to 12.2 kbit/s at 8000 samples a second (AMR), or nine from 6.60 to 23.85
kbit/s at 16000 (AMR-WB). The tone goes in AMR's mode 7 (12.2 kbit/s, the one GSM's EFR shares)
and AMR-WB's mode 2 (12.65 kbit/s, in the mode-set of every VoLTE line, GSMA IR.92); a
receiver whose ``mode-set`` leaves that mode out is not sent it (below). No DTX: the cadence's
gaps go as encoded silence, as a sender that never sends SID frames does.

RTP (RFC 4867 §4): the clock is the sampling rate (§4.1: 8000 for AMR, 16000 for AMR-WB), a
packet here carries one frame, and the payload is packed in one of two ways the receiver's
``a=fmtp`` chooses:

- bandwidth-efficient (§4.3, the default): a 4-bit CMR, then the 6-bit table of contents entry
  (F, FT, Q), then the frame's bits, all without padding until the end of the payload;
- octet-aligned (§4.4, ``octet-align=1``): the CMR in the first octet, the table of contents
  entry in the second (F, FT, Q, two padding bits), then the frame's bits padded to an octet.

Both libraries read and write frames in the storage format of §5.3: one header octet laid out
as an octet-aligned table of contents entry (0, FT, Q, 0, 0), then the frame's bits in the
order §4.3.2 and §4.4.2 send them, padded to an octet. So an octet-aligned payload is the CMR
octet and the storage frame; a bandwidth-efficient one is the same bits shifted by two.

Left out, so that a line asking for them gets no AMR tone (the next tone codec it lists, or
none): ``crc=1``, ``robust-sorting=1`` and ``interleaving`` (§8.1: octet-aligned variants for
lossy radio links, whose receivers expect CRCs or frame blocks we do not make), more than one
channel (``AMR/8000/2``: the tone is mono), and a ``mode-set`` without the tone's mode (§8.1:
a receiver that lists the modes it takes must not be sent others).
"""

from __future__ import annotations

import array
import ctypes
import ctypes.util
import functools
import sys
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import attrs

NO_MODE_REQUEST = 15
"""The CMR that asks for no particular mode (RFC 4867 §4.3.1)."""
QUALITY_BIT = 0x04
"""The Q bit of a storage header or octet-aligned table of contents entry: a sound frame."""


@attrs.frozen
class AmrCodec:
    """What tells AMR and AMR-WB apart here (RFC 4867 §3.6, §4.1)."""

    name: str
    """The RTP encoding name (RFC 4867 §8.1, §8.2)."""
    sample_rate: int
    """The sampling rate, and the RTP clock rate."""
    speech_bits: tuple[int, ...]
    """The bits of a speech frame in each mode, from mode 0 (RFC 4867 §3.6)."""
    tone_mode: int
    """The mode the ringing tone goes in."""
    sid_bits: int
    """The bits of its comfort noise (SID) frame, whose frame type follows the last mode's."""

    @property
    def frame_samples(self) -> int:
        """Samples in one 20 ms frame."""
        return self.sample_rate // 50

    def storage_octets(self, mode: int) -> int:
        """The octets of a storage frame of ``mode``: the header and the bits padded."""
        return 1 + (self.speech_bits[mode] + 7) // 8

    def frame_bits(self, frame_type: int) -> int | None:
        """The bits a frame of ``frame_type`` carries (RFC 4867 §3.6, §4.3.2): a mode's speech,
        SID's comfort noise, none for NO_DATA (15); None for the reserved types."""
        if frame_type < len(self.speech_bits):
            return self.speech_bits[frame_type]
        if frame_type == len(self.speech_bits):
            return self.sid_bits
        return 0 if frame_type == NO_DATA else None


NO_DATA = 15
"""The frame type of a frame that was not sent (RFC 4867 §4.3.2: lost, or DTX's silence)."""
AMR = AmrCodec("AMR", 8000, (95, 103, 118, 134, 148, 159, 204, 244), 7, 39)
"""AMR (narrowband): the tone at 12.2 kbit/s (TS 26.101 Table 1a, frame type 7); SID is 8."""
AMR_WB = AmrCodec("AMR-WB", 16000, (132, 177, 253, 285, 317, 365, 397, 461, 477), 2, 40)
"""AMR-WB: the tone at 12.65 kbit/s (TS 26.201 Table 1a, frame type 2); SID is 9."""
MAX_FRAMES = 16
"""The most frames :func:`frames_untrusted` takes from one payload: 320 ms, past any ptime a
phone sends (RFC 4867 §8.1's maxptime is usually 240)."""


class AmrError(RuntimeError):
    """A library refused a call, or a payload is not what this module makes."""


@attrs.frozen
class AmrEncoderLibrary:
    """One codec's encoder functions, typed for ctypes: ``create()`` a state, ``encode(state,
    mode, speech, out)`` one frame into a storage frame (its length), ``destroy(state)``."""

    codec: AmrCodec
    name: str
    create: Callable[[], int | None]
    encode: Callable[[int, int, Any, Any], int]
    destroy: Callable[[int], None]


@attrs.frozen
class AmrDecoderLibrary:
    """One codec's decoder functions, typed for ctypes: ``create()`` a state, ``decode(state,
    frame, pcm)`` one storage frame into a frame of samples, ``destroy(state)``."""

    codec: AmrCodec
    name: str
    create: Callable[[], int | None]
    decode: Callable[[int, bytes, Any], None]
    destroy: Callable[[int], None]


def _typed(lib: Any, name: str, restype: Any, *argtypes: Any) -> Any:
    function = getattr(lib, name)
    function.restype = restype
    function.argtypes = list(argtypes)
    return function


@functools.cache
def load_encoder(codec: AmrCodec) -> AmrEncoderLibrary | None:
    """``codec``'s encoder (opencore-amrnb's interf_enc.h for AMR, vo-amrwbenc's enc_if.h for
    AMR-WB), or None when the library (or its functions) cannot be loaded. Once per process."""
    name = ctypes.util.find_library("opencore-amrnb" if codec == AMR else "vo-amrwbenc")
    if name is None:
        return None
    pointer, integer = ctypes.c_void_p, ctypes.c_int
    try:
        lib = ctypes.CDLL(name)
        if codec == AMR:
            init = _typed(lib, "Encoder_Interface_init", pointer, integer)
            # (state, enum Mode, speech, out, forceSpeech)
            encode = _typed(
                lib,
                "Encoder_Interface_Encode",
                integer,
                pointer,
                integer,
                pointer,
                pointer,
                integer,
            )
            destroy = _typed(lib, "Encoder_Interface_exit", None, pointer)
            return AmrEncoderLibrary(
                codec,
                name,
                lambda: init(0),  # no DTX
                lambda state, mode, speech, out: encode(state, mode, speech, out, 0),
                destroy,
            )
        init = _typed(lib, "E_IF_init", pointer)
        # (state, mode, speech, out, dtx)
        encode = _typed(lib, "E_IF_encode", integer, pointer, integer, pointer, pointer, integer)
        destroy = _typed(lib, "E_IF_exit", None, pointer)
        return AmrEncoderLibrary(
            codec,
            name,
            init,
            lambda state, mode, speech, out: encode(state, mode, speech, out, 0),  # no DTX
            destroy,
        )
    except (OSError, AttributeError):
        return None


@functools.cache
def load_decoder(codec: AmrCodec) -> AmrDecoderLibrary | None:
    """``codec``'s decoder (opencore-amrnb's interf_dec.h, opencore-amrwb's dec_if.h), or None
    when the library (or its functions) cannot be loaded. Once per process."""
    name = ctypes.util.find_library("opencore-amrnb" if codec == AMR else "opencore-amrwb")
    if name is None:
        return None
    prefix = "Decoder_Interface_" if codec == AMR else "D_IF_"
    pointer = ctypes.c_void_p
    try:
        lib = ctypes.CDLL(name)
        init = _typed(lib, prefix + "init", pointer)
        # (state, in, out, bfi: the bad frame indication)
        decode = _typed(
            lib,
            prefix + ("Decode" if codec == AMR else "decode"),
            None,
            pointer,
            ctypes.c_char_p,
            pointer,
            ctypes.c_int,
        )
        destroy = _typed(lib, prefix + "exit", None, pointer)
    except (OSError, AttributeError):
        return None
    return AmrDecoderLibrary(
        codec, name, init, lambda state, frame, pcm: decode(state, frame, pcm, 0), destroy
    )


class AmrEncoder:
    """Encodes one source's mono samples at the codec's rate in ``mode`` (its tone mode by
    default), a storage frame (RFC 4867 §5.3) per 20 ms, keeping the encoder's state from call
    to call. No DTX."""

    def __init__(self, library: AmrEncoderLibrary, mode: int | None = None) -> None:
        codec = library.codec
        self.mode = codec.tone_mode if mode is None else mode
        if not 0 <= self.mode < len(codec.speech_bits):
            raise ValueError(
                f"{codec.name} mode {self.mode} is not one of 0-{len(codec.speech_bits) - 1}"
            )
        self.codec = codec
        self._library = library
        state = library.create()
        if not state:
            raise AmrError(f"{library.name}: no encoder")
        self._state = state
        weakref.finalize(self, library.destroy, state)
        self._input = (ctypes.c_int16 * codec.frame_samples)()
        self._output = (ctypes.c_uint8 * codec.storage_octets(len(codec.speech_bits) - 1))()

    def encode(self, samples: Sequence[int]) -> list[bytes]:
        """``samples`` (a whole number of 20 ms frames) as one storage frame per frame."""
        size = self.codec.frame_samples
        if len(samples) % size:
            raise ValueError(f"{len(samples)} samples: not a whole number of 20 ms frames")
        expected = self.codec.storage_octets(self.mode)
        frames = []
        for start in range(0, len(samples), size):
            self._input[:] = list(samples[start : start + size])
            length = self._library.encode(self._state, self.mode, self._input, self._output)
            if length != expected:
                raise AmrError(f"{self._library.name}: a frame of {length} octets, not {expected}")
            frames.append(bytes(self._output[:length]))
        return frames


class AmrDecoder:
    """Decodes one source's storage frames, in order, to 16-bit PCM at the codec's rate."""

    def __init__(self, library: AmrDecoderLibrary) -> None:
        self.codec = library.codec
        self._library = library
        state = library.create()
        if not state:
            raise AmrError(f"{library.name}: no decoder")
        self._state = state
        self._finalizer = weakref.finalize(self, library.destroy, state)
        self._pcm = (ctypes.c_int16 * self.codec.frame_samples)()

    def decode(self, frame: bytes) -> bytes:
        """16-bit little-endian PCM, one 20 ms frame: speech, comfort noise (SID) or, for
        NO_DATA, the decoder's concealment. Raises :class:`AmrError` for a frame that is not
        whole (the library would read past it) or of a reserved type."""
        frame_type = (frame[0] >> 3) & 0x0F if frame else -1
        bits = self.codec.frame_bits(frame_type) if frame else None
        if bits is None or len(frame) != 1 + (bits + 7) // 8:
            raise AmrError(f"a storage frame of {len(frame)} octets, frame type {frame_type}")
        self._library.decode(self._state, frame, self._pcm)
        pcm = array.array("h", self._pcm)
        if sys.byteorder == "big":  # host order from the library; WAV is little-endian
            pcm.byteswap()
        return pcm.tobytes()

    def reset(self) -> None:
        """Start again from a fresh state: a new source (the decoder must follow one encoder)."""
        self._finalizer()
        state = self._library.create()
        if not state:
            raise AmrError(f"{self._library.name}: no decoder")
        self._state = state
        self._finalizer = weakref.finalize(self, self._library.destroy, state)


def _speech_mode(codec: AmrCodec, header: int) -> int:
    """The mode of a storage header or table of contents entry whose frame type is one of
    ``codec``'s speech modes; :class:`AmrError` for SID, NO_DATA and the reserved types."""
    frame_type = (header >> 3) & 0x0F
    if frame_type >= len(codec.speech_bits):
        raise AmrError(f"frame type {frame_type} is no {codec.name} speech frame")
    return frame_type


def octet_aligned_payload(frame: bytes) -> bytes:
    """The RTP payload (RFC 4867 §4.4) carrying storage ``frame`` alone: the CMR octet (no
    request, four reserved zero bits), then the table of contents entry, whose F bit (0: the
    last frame) and layout are the storage header's, then the speech octets as stored."""
    return bytes((NO_MODE_REQUEST << 4,)) + frame


def bandwidth_efficient_payload(codec: AmrCodec, frame: bytes) -> bytes:
    """The RTP payload (RFC 4867 §4.3) carrying ``codec``'s storage ``frame`` alone: CMR (4
    bits), the table of contents entry (F = 0, FT, Q: 6 bits), then the speech bits,
    zero-padded to an octet at the end."""
    bits = codec.speech_bits[_speech_mode(codec, frame[0])]
    speech = int.from_bytes(frame[1:], "big") >> (8 * (len(frame) - 1) - bits)
    toc = (frame[0] >> 2) & 0x1F  # F (0), FT and Q: the header's top six bits
    total = 4 + 6 + bits
    octets = (total + 7) // 8
    value = (((NO_MODE_REQUEST << 6) | toc) << bits | speech) << (8 * octets - total)
    return value.to_bytes(octets, "big")


def storage_frame(codec: AmrCodec, payload: bytes, *, octet_aligned: bool) -> bytes:
    """The storage frame (RFC 4867 §5.3) of a ``codec`` payload that carries one speech frame,
    packed as :func:`octet_aligned_payload` or :func:`bandwidth_efficient_payload` pack it (any
    CMR): for checking what the gateway sends. :class:`AmrError` for another kind of payload."""
    frames = frames_untrusted(codec, payload, octet_aligned=octet_aligned)
    if frames is None:
        packing = "octet-aligned" if octet_aligned else "bandwidth-efficient"
        raise AmrError(f"{len(payload)} octets are no {packing} {codec.name} payload")
    if len(frames) != 1:
        raise AmrError(f"{len(frames)} frames in the payload, not one")
    _speech_mode(codec, frames[0][0])
    return frames[0]


def frames_untrusted(codec: AmrCodec, payload: bytes, *, octet_aligned: bool) -> list[bytes] | None:
    """The frames of a ``codec`` payload from the network (RFC 4867 §4.3 or §4.4, as the
    session's ``octet-align`` says; without CRCs, robust sorting or interleaving), as storage
    frames (§5.3) in order: speech, SID and NO_DATA alike, for a decoder. None when the
    payload is not one: a reserved frame type, a table of contents without its last entry
    (F = 0) within :data:`MAX_FRAMES`, or other than the octets its entries fill (and pad).
    The CMR, a request to our encoder, is ignored: the recorder encodes nothing."""
    value = int.from_bytes(payload, "big")
    width = 8 * len(payload)
    position = 8 if octet_aligned else 4  # past the CMR (and, octet-aligned, its 4 R bits)
    entries: list[tuple[int, int]] = []  # (frame type, Q)
    while True:
        if len(entries) == MAX_FRAMES or position + 6 > width:
            return None
        entry = (value >> (width - position - 6)) & 0x3F  # F, FT, Q
        position += 8 if octet_aligned else 6  # octet-aligned: two padding bits follow
        entries.append(((entry >> 1) & 0x0F, entry & 1))
        if not entry & 0x20:
            break
    frames = []
    for frame_type, quality in entries:
        bits = codec.frame_bits(frame_type)
        if bits is None or position + bits > width:
            return None
        speech = (value >> (width - position - bits)) & ((1 << bits) - 1)
        position += (bits + 7) // 8 * 8 if octet_aligned else bits
        octets = (bits + 7) // 8
        header = frame_type << 3 | (QUALITY_BIT if quality else 0)
        frames.append(bytes((header,)) + (speech << (8 * octets - bits)).to_bytes(octets, "big"))
    if octet_aligned and position != width:
        return None  # §4.4.2: nothing follows the last frame's padding
    if width - position >= 8:
        return None  # §4.3.2: padding only up to the next octet
    return frames


def payload_packing(fmtp: str | None) -> str | None:
    """How a session whose ``a=fmtp`` parameters are ``fmtp`` (None: none) packs AMR or AMR-WB
    payloads: ``"octet-aligned"`` or ``"bandwidth-efficient"``; None for what
    :func:`frames_untrusted` cannot read (crc, robust sorting, interleaving) or parameters that
    cannot be read. RFC 4867 §8.1: parameter names are case-insensitive, and each absent one
    has its default (bandwidth-efficient)."""
    parameters = _fmtp_parameters(fmtp)
    if "interleaving" in parameters:
        return None
    if parameters.get("crc", "0") != "0" or parameters.get("robust-sorting", "0") != "0":
        return None
    octet_align = parameters.get("octet-align", "0")
    if octet_align == "1":
        return "octet-aligned"
    if octet_align == "0":
        return "bandwidth-efficient"
    return None


def _fmtp_parameters(fmtp: str | None) -> dict[str, str]:
    parameters: dict[str, str] = {}
    for item in (fmtp or "").split(";"):
        name, _, value = item.strip().partition("=")
        if name:
            parameters[name.strip().lower()] = value.strip()
    return parameters


def tone_packing(codec: AmrCodec, fmtp: str | None) -> str | None:
    """How a receiver of ``codec`` whose ``a=fmtp`` parameters are ``fmtp`` (None: none) takes
    a tone in the codec's tone mode, one frame a packet: ``"octet-aligned"`` or
    ``"bandwidth-efficient"``; None when it asks for what this module does not make (crc,
    robust sorting, interleaving, a mode-set without the tone's mode) or its parameters cannot
    be read. RFC 4867 §8.1: parameter names are case-insensitive, and each absent one has its
    default (bandwidth-efficient, any mode)."""
    modes = _fmtp_parameters(fmtp).get("mode-set")
    try:
        if modes is not None and codec.tone_mode not in {int(mode) for mode in modes.split(",")}:
            return None
    except ValueError:
        return None
    return payload_packing(fmtp)
