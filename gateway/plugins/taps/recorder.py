"""The ``recorder`` media tap: records calls to files, decrypted, one file per speaker.

Theory of operation. For each answered call it is configured to record (``[plugins.recorder]``:
every call, or those of listed accounts and trunks), the core hands the sink a copy of every
packet the relay forwards, after SRTP was removed (gateway/core/media/taps.py). The sink queues
it (bounded: a full queue drops and counts, the relay never waits) and its own task writes it:

- ``format = "wav"``: for each stream, what the caller sent and what the callee sent, each into
  a file of its own (``<call>-<stream>-caller.<ext>``, ``...-callee.<ext>``), by codec:

  * G.711 (PCMU, PCMA: static payload types 0 and 8, RFC 3551) decoded to linear PCM, a mono
    8 kHz 16-bit WAV file;
  * G.722 (payload type 9, or a dynamic one named G722) decoded by libg722 (g722_libg722.py,
    installed with the gateway since session 55; ``g722_decoder`` may choose spandsp,
    g722_spandsp.py, or g722.py, pure Python), one decoder per source, reset on a new
    SSRC or a re-base, into a mono 16 kHz 16-bit WAV file: the audio is 16 kHz although its
    RTP clock is 8 kHz (RFC 3551 §4.5.2);
  * G.729 (payload type 18, or a dynamic one named G729; Annex A's bitstream is the same, and
    Annex B's comfort noise frames are decoded as noise) decoded by bcg729
    (gateway/core/media/g729.py: Debian's ``libbcg729-0``, when it is installed; since session
    56), one decoder per source as for G.722, into a mono 8 kHz 16-bit WAV file; without the
    library its packets are counted as another codec, as before, and the recorder says so as
    it starts;
  * AMR and AMR-WB (dynamic payload types named ``AMR/8000`` and ``AMR-WB/16000``, packed
    bandwidth-efficient or octet-aligned as the stream's a=fmtp says, RFC 4867 §4.3, §4.4)
    decoded by opencore-amr (gateway/core/media/amr.py: Debian's ``libopencore-amrnb0`` and
    ``libopencore-amrwb0``, when installed; since session 62), every frame of a packet (speech,
    comfort noise, NO_DATA's concealment) 20 ms of a mono 8 or 16 kHz 16-bit WAV file, one
    decoder per source as for G.722; without the library, or for a stream whose fmtp asks for
    CRCs, robust sorting or interleaving, counted as another codec;
  * GSM full rate (payload type 3, or a dynamic one named GSM: RFC 3551 §4.5.8) decoded by
    libgsm (gateway/core/media/gsm.py: Debian's ``libgsm1``, when installed; since session 63),
    one decoder per source as for G.722, into a mono 8 kHz 16-bit WAV file; without the library
    counted as another codec;
  * Opus (a dynamic payload type, named ``opus/48000/2`` by the SDP: the sink reads the call's
    rtpmap attributes from ``TappedCall.media`` and ``streams_changed``) not decoded: its packets
    go into an Ogg Opus file (``.opus``, RFC 7845, oggopus.py) as they came.

  Each packet is placed by its RTP timestamp; a gap (silence suppression, hold, loss) is written
  as silence (WAV) or as Opus packets of empty frames that the player conceals (RFC 7845 §4.1),
  so every file runs on the call's clock from its first packet and a call's files play side by
  side (``sox -M``). A new SSRC or a timestamp far from the clock (a transfer, a re-INVITE)
  re-bases on the clock; a source faster than real time is not written more than
  ``REBASE_AFTER`` ahead of it. A re-INVITE that switches a direction to a codec of another
  kind moves it to its file of that kind (``...-caller-2.wav``: see :class:`WavRecording`).
  Late packets (behind what is written) are dropped and counted, and so are Opus packets whose
  framing is broken, G.729 payloads of a length it does not have, GSM payloads that are not
  whole 33-octet frames with their signature and AMR payloads whose table of contents does not
  add up (no decoder can decode them; counted malformed); RTCP, comfort noise (RFC 3389) and
  telephone events are not audio; other codecs (iLBC, G.726 ...) are
  counted by name in the end-of-call log line, not written (use ``pcap`` for them). Decoding
  runs in the sink's task, not the relay's, per 20 ms packet (benchmarks/recorder_decode.py):
  G.722 about 10 us by libg722 or spandsp and 0.8-1.1 ms in Python, G.729 about 12 us by
  bcg729, AMR about 30 us and AMR-WB about 60 us by opencore-amr (the payload read and its
  frames decoded), GSM about 5 us by libgsm, G.711 and Opus a few microseconds.
- ``format = "pcap"``: every packet of the call as it was forwarded, in one pcap file
  (``<call>.pcap``) with made-up IPv4/UDP headers (caller 192.0.2.1, callee 192.0.2.2, ports
  40000 + 2 * stream): any codec, for Wireshark's RTP player or ``tshark``.

Files go to ``<directory>/<YYYY-MM-DD>/`` (the UTC date the call was answered), with mode
0600: they hold the conversation. When the call ends the files are completed (WAV sizes written
into their headers, the Ogg stream's last page flagged) and a line is logged with what was
written, what was dropped and which other codecs were not written. Writes go
through Python's buffered files from the sink's task; a disk that fails ends that recording
(logged), never the call.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import attrs

from gateway.core.config import NAMES_TRUNKS
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import TappedCall, TappedMedia
from gateway.core.media import amr
from gateway.core.media.amr import AmrDecoder
from gateway.core.media.g729 import Bcg729Decoder, G729PayloadError, load_bcg729
from gateway.core.media.gsm import GsmDecoder, GsmPayloadError, load_libgsm
from gateway.plugins.taps.g722 import G722Decoder
from gateway.plugins.taps.g722_libg722 import LibG722Decoder
from gateway.plugins.taps.g722_spandsp import SpandspG722Decoder, load_spandsp
from gateway.plugins.taps.oggopus import OggOpusWriter, concealment, opus_samples_untrusted
from gateway.plugins.taps.queue import CopyQueue
from gateway.plugins.taps.selection import NOTHING_SELECTED, CallSelection

if TYPE_CHECKING:
    from gateway.core.interfaces import MediaTap, TapSink
    from gateway.core.plugins import Registry

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000
"""Of the G.711 files (and of the RTP clock of G.711 and G.722, RFC 3551 §4.5.2 and §4.5.14)."""
PCMU, PCMA, G722, COMFORT_NOISE = 0, 8, 9, 13  # RFC 3551 static payload types
STATIC_CODECS = {
    PCMU: "pcmu",
    PCMA: "pcma",
    G722: "g722",
    COMFORT_NOISE: "cn",
    3: "gsm",
    18: "g729",
}
"""RFC 3551 §6's static payload types the recorder names (lower case, as codecs_of does)."""
NOT_AUDIO = frozenset({"cn", "telephone-event"})
"""Comfort noise (RFC 3389: the gap it stands for is written as silence) and DTMF events (RFC
4733): not audio to write, nor to count as another codec."""
REBASE_AFTER = 5.0
"""Seconds between where a packet's timestamp puts it and where the clock says it belongs
beyond which the direction is re-based on the clock (a new source behind the same SSRC)."""


# -- G.711 (ITU-T G.711) to 16-bit linear ---------------------------------------------------------


def _ulaw(byte: int) -> int:
    u = ~byte & 0xFF
    exponent, mantissa = (u >> 4) & 0x07, u & 0x0F
    sample = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return -sample if u & 0x80 else sample


def _alaw(byte: int) -> int:
    a = byte ^ 0x55
    exponent, mantissa = (a >> 4) & 0x07, a & 0x0F
    # Segment 0 is linear; the others double per segment (G.711 table 2).
    sample = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return sample if a & 0x80 else -sample


def _table(decode: Any) -> tuple[bytes, ...]:
    return tuple(struct.pack("<h", decode(byte)) for byte in range(256))


_LINEAR = {PCMU: _table(_ulaw), PCMA: _table(_alaw)}


def g711_to_linear(payload_type: int, payload: bytes) -> bytes:
    """16-bit little-endian PCM for a PCMU or PCMA payload."""
    table = _LINEAR[payload_type]
    return b"".join([table[byte] for byte in payload])


# -- RTP (RFC 3550 §5.1) --------------------------------------------------------------------------


@attrs.frozen
class RtpFields:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def rtp_fields(packet: bytes) -> RtpFields | None:
    """The fields of a plain RTP packet; None for RTCP (RFC 5761 §4) or a malformed packet."""
    if len(packet) < 12 or packet[0] >> 6 != 2 or 192 <= packet[1] <= 223:
        return None
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:  # header extension
        if len(packet) < offset + 4:
            return None
        offset += 4 + 4 * int.from_bytes(packet[offset + 2 : offset + 4], "big")
    end = len(packet)
    if packet[0] & 0x20 and end > offset:  # padding: the last octet says how much
        end -= packet[-1]
    if end < offset:
        return None
    sequence, timestamp, ssrc = struct.unpack_from("!HII", packet, 2)
    return RtpFields(packet[1] & 0x7F, sequence, timestamp, ssrc, packet[offset:end])


# -- WAV ------------------------------------------------------------------------------------------


class WavTrack:
    """A mono 16-bit WAV file written front to back; ``close`` writes the sizes."""

    def __init__(self, path: Path, rate: int = SAMPLE_RATE) -> None:
        self.path = path
        self.rate = rate
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._file.write(self._header(0))
        self.samples = 0

    def _header(self, data_bytes: int) -> bytes:
        return (
            b"RIFF"
            + struct.pack("<I", 36 + data_bytes)
            + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, self.rate, self.rate * 2, 2, 16)
            + b"data"
            + struct.pack("<I", data_bytes)
        )

    def silence(self, samples: int) -> None:
        chunk = bytes(2 * self.rate)
        while samples > 0:
            count = min(samples, self.rate)
            self._file.write(chunk[: 2 * count])
            self.samples += count
            samples -= count

    def write(self, pcm: bytes) -> None:
        self._file.write(pcm)
        self.samples += len(pcm) // 2

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.seek(0)
        self._file.write(self._header(2 * self.samples))
        self._file.close()


def codecs_of(media: Sequence[TappedMedia]) -> dict[str, dict[int, str]]:
    """Each stream's dynamic payload types by encoding name, lower case (``"opus"``, ``"g722"``,
    ``"telephone-event"``), from the SDP's rtpmap attributes (RFC 4566 §6: ``PT name/rate``).
    AMR and AMR-WB are named with their packing, which the stream's a=fmtp says (RFC 4867
    §8.1): ``"amr"`` (bandwidth-efficient), ``"amr octet-aligned"``, or, for what the recorder
    does not read, ``"amr with crc, robust sorting or interleaving"`` (counted, not written)."""
    codecs: dict[str, dict[int, str]] = {}
    for stream in media:
        names: dict[int, str] = {}
        for rtpmap in stream.rtpmaps:
            number, _, encoding = rtpmap.partition(" ")
            if number.isdigit() and 96 <= int(number) <= 127:  # RFC 3551 §6: dynamic range
                name = encoding.split("/", 1)[0].strip().lower()
                if name in ("amr", "amr-wb"):
                    name = _amr_name(name, _fmtp_of(stream, number))
                names[int(number)] = name
        codecs[str(stream.index)] = names
    return codecs


def _fmtp_of(stream: TappedMedia, number: str) -> str | None:
    """The parameters of ``stream``'s a=fmtp for payload type ``number``, or None."""
    for fmtp in stream.fmtps:
        format_, _, parameters = fmtp.partition(" ")
        if format_ == number:
            return parameters
    return None


def _amr_name(name: str, fmtp: str | None) -> str:
    packing = amr.payload_packing(fmtp)
    if packing == "bandwidth-efficient":
        return name
    if packing == "octet-aligned":
        return f"{name} octet-aligned"
    return f"{name} with crc, robust sorting or interleaving"


# The kinds of file, by encoding name: G.711 and G.722 decoded into WAV (8 and 16 kHz), Opus
# packets into Ogg Opus. A speaker gets one file of each kind it uses (see WavRecording).
_KINDS = {
    "pcmu": "g711",
    "pcma": "g711",
    "g722": "g722",
    "g729": "g729",
    "g729a": "g729",  # Annex A's name in some devices' rtpmap: the same bitstream
    "gsm": "gsm",
    "opus": "opus",
    "amr": "amr",
    "amr octet-aligned": "amr",
    "amr-wb": "amr-wb",
    "amr-wb octet-aligned": "amr-wb",
}
_AMR_CODECS = {"amr": amr.AMR, "amr-wb": amr.AMR_WB}
"""The AMR kinds' codecs (RFC 4867): decoded into 8 and 16 kHz WAV files."""

NewG722Decoder = Callable[[], "G722Decoder | SpandspG722Decoder | LibG722Decoder"]
G722_DECODERS = ("auto", "libg722", "spandsp", "python")
"""``[plugins.recorder] g722_decoder``'s values (:func:`g722_decoder_factory`)."""
"""Makes the decoder of one G.722 source (each follows one encoder's state)."""
NewG729Decoder = Callable[[], Bcg729Decoder]
"""Makes the decoder of one G.729 source (a recorder has none where bcg729 is not installed:
:func:`g729_decoder_factory`)."""
NewGsmDecoder = Callable[[], GsmDecoder]
"""Makes the decoder of one GSM source (a recorder has none where libgsm is not installed:
:func:`gsm_decoder_factory`)."""
NewFramedDecoders = Mapping[str, Callable[[], "Bcg729Decoder | GsmDecoder"]]
"""Make the decoder of one G.729 or GSM source, by kind (``"g729"``, ``"gsm"``): codecs whose
payload is whole frames back to back, each decoded into 8 kHz samples. Only the kinds whose
library is installed (:func:`framed_decoder_factories`)."""
_FRAMED_KINDS = frozenset({"g729", "gsm"})
NewAmrDecoders = Mapping[str, Callable[[], AmrDecoder]]
"""Make the decoder of one AMR or AMR-WB source, by kind (``"amr"``, ``"amr-wb"``): only the
kinds whose decoder is installed (:func:`amr_decoder_factories`)."""


class _Track:
    """One file of one speaker, and where its source's RTP timestamps put samples in it."""

    def __init__(
        self,
        path: Path,
        kind: str,
        new_g722: NewG722Decoder,
        new_framed: NewFramedDecoders,
        new_amr: NewAmrDecoders,
    ) -> None:
        self.kind = kind
        self.writer: WavTrack | OggOpusWriter
        self.g722: G722Decoder | SpandspG722Decoder | LibG722Decoder | None = None
        self.framed: Bcg729Decoder | GsmDecoder | None = None
        """G.729's or GSM's decoder: payloads of whole frames into an 8 kHz file."""
        self.amr: AmrDecoder | None = None
        self.previous_toc: int | None = None  # Opus: the last packet's, for concealment
        if kind == "opus":
            # RFC 7587 §4.1: the RTP clock of Opus is 48 kHz, whatever the audio's bandwidth.
            self.writer = OggOpusWriter(path, serial=zlib.crc32(path.name.encode()))
            self.rate, self.per_tick = 48000, 1
        elif kind == "g722":
            # RFC 3551 §4.5.2: 16 kHz audio, but the RTP clock runs at 8 kHz.
            self.writer = WavTrack(path, 16000)
            self.rate, self.per_tick = 16000, 2
            self.g722 = new_g722()
        elif kind in _AMR_CODECS:
            # RFC 4867 §4.1: the RTP clock is the sampling rate, AMR's 8 kHz or AMR-WB's 16.
            self.amr = new_amr[kind]()  # WavRecording.add: no track without a decoder
            self.writer = WavTrack(path, self.amr.codec.sample_rate)
            self.rate, self.per_tick = self.amr.codec.sample_rate, 1
        else:
            self.writer = WavTrack(path, SAMPLE_RATE)
            self.rate, self.per_tick = SAMPLE_RATE, 1
            if kind in _FRAMED_KINDS:
                self.framed = new_framed[kind]()  # WavRecording.add: no track without one
        self.ssrc = -1
        self.base_timestamp = 0
        self.base_position = 0

    @property
    def written(self) -> int:
        return self.writer.samples

    def place(self, fields: RtpFields, seconds: float) -> int:
        """Where (in the file's samples) this packet starts: by its RTP timestamp from the
        source's first packet, or by the call's clock (``seconds`` since its first packet) for
        a new source, or one whose timestamps left the clock (a new source behind the same SSRC,
        a re-INVITE): a re-base, which also resets the source's decoder (it must follow
        one encoder). -1 (late) when a re-base would put it more than REBASE_AFTER ahead of the
        clock: a source sending faster than real time (a flood of new SSRCs) is not written, so
        neither a file nor the decoding (G.722's costs CPU) outruns the call."""
        by_clock = round(seconds * self.rate)
        offset = (fields.timestamp - self.base_timestamp + 2**31) % 2**32 - 2**31
        position = self.base_position + offset * self.per_tick
        limit = REBASE_AFTER * self.rate
        if fields.ssrc != self.ssrc or abs(position - by_clock) > limit:
            if self.written - by_clock > limit:
                return -1
            self.ssrc, self.base_timestamp = fields.ssrc, fields.timestamp
            self.base_position = position = max(by_clock, self.written)
            if self.g722 is not None:
                self.g722.reset()
            if self.framed is not None:
                self.framed.reset()
            if self.amr is not None:
                self.amr.reset()
        return position

    def write(self, position: int, name: str, payload: bytes, counts: RecordingCounts) -> None:
        """The payload at ``position`` (not behind what is written: see ``place``); a gap
        before it is silence (WAV) or concealment (Ogg Opus, RFC 7845 §4.1)."""
        writer = self.writer
        if isinstance(writer, OggOpusWriter):
            samples = opus_samples_untrusted(payload)
            if samples is None:
                counts.malformed += 1
                return
            for filler, duration in concealment(position - writer.samples, self.previous_toc):
                writer.write(filler, duration)
            writer.write(payload, samples)
            self.previous_toc = payload[0]
            return
        if self.framed is not None:
            try:
                pcm = self.framed.decode(payload)
            except (G729PayloadError, GsmPayloadError):
                counts.malformed += 1  # its time is silence, as a gap's
                return
            writer.silence(position - writer.samples)
            writer.write(pcm)
            return
        if self.amr is not None:
            aligned = name.endswith("octet-aligned")
            frames = amr.frames_untrusted(self.amr.codec, payload, octet_aligned=aligned)
            if frames is None:
                counts.malformed += 1  # its time is silence, as a gap's
                return
            writer.silence(position - writer.samples)
            for frame in frames:  # each 20 ms: speech, comfort noise or concealment
                writer.write(self.amr.decode(frame))
            return
        writer.silence(position - writer.samples)
        if self.g722 is not None:
            writer.write(self.g722.decode(payload))
        else:
            writer.write(g711_to_linear(PCMU if name == "pcmu" else PCMA, payload))

    def close(self) -> None:
        self.writer.close()


@attrs.define
class _Speaker:
    """One direction of one stream: its files (one per kind, in the order they were made) and
    the one its last packet went to."""

    name: str
    tracks: dict[str, _Track] = attrs.Factory(dict)
    current: str = ""


@attrs.define
class RecordingCounts:
    packets: int = 0
    dropped: int = 0
    """Packets the queue had no room for."""
    late: int = 0
    """Packets behind what was already written (reordered, duplicated)."""
    malformed: int = 0
    """Opus packets whose framing breaks RFC 6716 §3.4, G.729 payloads of a length RFC 3551
    §4.5.6 does not allow, GSM payloads that are not RFC 3551 §4.5.8's frames, AMR payloads
    whose table of contents RFC 4867 §4.3 or §4.4 cannot read: no decoder can decode them, so
    they are left out (their time is concealed or silent like a gap's)."""
    other: dict[str, int] = attrs.Factory(dict)
    """Audio in codecs the WAV format does not write, by name (WAV only)."""


class WavRecording:
    """The files of one call: for each stream and direction, one per kind of codec it used,
    each made at its first packet.

    A speaker's first file is ``<call>-<stream>-<caller|callee>.<wav|opus>``. When a re-INVITE
    switches the codec to one of another kind (G.711 to G.722, G.722 to Opus ...), the current
    file is left and the packets go to the speaker's file of that kind, made at the switch with
    a numbered suffix (``-2``, ``-3``: so at most three files per speaker); a switch back goes
    on in the earlier file. Every file is on the call's clock from its first packet (the switch
    re-bases on the clock; what came before in the other file is silence), so the files of a
    speaker can be overlaid as they are. PCMU and PCMA share one 8 kHz file.
    """

    def __init__(
        self,
        directory: Path,
        call_id: str,
        codecs: Mapping[str, Mapping[int, str]] | None = None,
        new_g722: NewG722Decoder = G722Decoder,
        new_framed: NewFramedDecoders | None = None,
        new_amr: NewAmrDecoders | None = None,
    ) -> None:
        self._directory = directory
        self._call_id = call_id
        self._codecs = {} if codecs is None else codecs
        self._new_g722 = new_g722
        self._new_framed = {} if new_framed is None else new_framed
        self._new_amr = {} if new_amr is None else new_amr
        self._speakers: dict[tuple[str, str], _Speaker] = {}
        self._zero: float | None = None
        self.counts = RecordingCounts()

    @property
    def files(self) -> list[Path]:
        return [
            track.writer.path
            for speaker in self._speakers.values()
            for track in speaker.tracks.values()
        ]

    def add(self, stream_id: str, direction: str, packet: bytes, now: float) -> None:
        self.counts.packets += 1
        fields = rtp_fields(packet)
        if fields is None:
            return  # RTCP, or not RTP
        pt = fields.payload_type
        name = self._codecs.get(stream_id, {}).get(pt) or STATIC_CODECS.get(pt, f"pt{pt}")
        kind = _KINDS.get(name)
        if (kind in _FRAMED_KINDS and kind not in self._new_framed) or (
            kind in _AMR_CODECS and kind not in self._new_amr
        ):
            kind = None  # no decoder installed: counted as another codec
        if kind is None:
            if name not in NOT_AUDIO:
                self.counts.other[name] = self.counts.other.get(name, 0) + 1
            return
        if not fields.payload:
            return
        if self._zero is None:
            self._zero = now
        key = (stream_id, direction)
        speaker = self._speakers.get(key)
        if speaker is None:
            who = "caller" if direction == "a_to_b" else "callee"
            speaker = self._speakers[key] = _Speaker(f"{self._call_id}-{stream_id}-{who}")
        track = speaker.tracks.get(kind)
        if track is None:
            suffix = f"-{len(speaker.tracks) + 1}" if speaker.tracks else ""
            extension = "opus" if kind == "opus" else "wav"
            path = self._directory / f"{speaker.name}{suffix}.{extension}"
            track = speaker.tracks[kind] = _Track(
                path, kind, self._new_g722, self._new_framed, self._new_amr
            )
        if speaker.current != kind:
            speaker.current = kind
            track.ssrc = -1  # a switch of codec: re-based on the clock (place)
        position = track.place(fields, now - self._zero)
        if position < track.written:
            self.counts.late += 1
            return
        track.write(position, name, fields.payload, self.counts)

    def close(self) -> None:
        for speaker in self._speakers.values():
            for track in speaker.tracks.values():
                track.close()


# -- pcap -----------------------------------------------------------------------------------------

_LINKTYPE_RAW = 101  # raw IPv4/IPv6 packets


class PcapRecording:
    """Every packet of one call in a pcap file, as the caller -> callee conversation between
    192.0.2.1 and 192.0.2.2 (documentation addresses, RFC 5737), UDP port 40000 + 2 * stream."""

    def __init__(self, directory: Path, call_id: str) -> None:
        self.path = directory / f"{call_id}.pcap"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        # Global header (microsecond timestamps), snap length 65535.
        self._file.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, _LINKTYPE_RAW))
        self._started = time.time()
        self._zero: float | None = None
        self.counts = RecordingCounts()

    @property
    def files(self) -> list[Path]:
        return [self.path]

    def add(self, stream_id: str, direction: str, packet: bytes, now: float) -> None:
        self.counts.packets += 1
        if self._zero is None:
            self._zero = now
        caller, callee = b"\xc0\x00\x02\x01", b"\xc0\x00\x02\x02"
        source, destination = (caller, callee) if direction == "a_to_b" else (callee, caller)
        port = 40000 + 2 * int(stream_id)
        udp = struct.pack("!HHHH", port, port, 8 + len(packet), 0) + packet
        header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0)
        header += source + destination
        checksum = _ip_checksum(header)
        header = header[:10] + struct.pack("!H", checksum) + header[12:]
        at = self._started + (now - self._zero)
        seconds = int(at)
        frame = header + udp
        self._file.write(
            struct.pack("<IIII", seconds, int((at - seconds) * 1e6), len(frame), len(frame))
        )
        self._file.write(frame)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def _ip_checksum(header: bytes) -> int:
    total = sum(int.from_bytes(header[i : i + 2], "big") for i in range(0, len(header), 2))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


# -- the sink -------------------------------------------------------------------------------------


FREE_SPACE_EVERY = 500
"""Packets written between two looks at the disk's free space (about 5 s of one stream)."""


class _DiskLow(Exception):
    """The recordings' disk is nearly full: the recording stops."""


class RecordingSink:
    """``interfaces.TapSink`` of one call: a bounded queue and the task that writes it."""

    def __init__(
        self,
        call: TappedCall,
        directory: Path,
        file_format: str,
        queue: int,
        *,
        min_free: int = 0,
        free_space: Callable[[Path], int] = lambda path: shutil.disk_usage(path).free,
        new_g722: NewG722Decoder = G722Decoder,
        new_framed: NewFramedDecoders | None = None,
        new_amr: NewAmrDecoders | None = None,
    ) -> None:
        self.call = call
        self._new_g722 = new_g722
        self._new_framed = new_framed
        self._new_amr = new_amr
        self._directory = directory
        self._format = file_format
        self._queue = CopyQueue(queue)
        self._min_free = min_free
        self._free_space = free_space
        self.recording: WavRecording | PcapRecording | None = None
        # Which dynamic payload type is which codec, per stream (Opus has no static one).
        self._codecs = codecs_of(call.media)
        self._paused = False
        self.paused_packets = 0
        """Packets not written while the recording was paused on request."""

    def streams_changed(self, media: tuple[TappedMedia, ...]) -> None:
        """A re-INVITE changed the streams (``interfaces.TapSink``): learn its payload types.
        Added to, not replaced: packets of the old offer may still be queued."""
        for stream_id, names in codecs_of(media).items():
            self._codecs.setdefault(stream_id, {}).update(names)

    def packet(self, stream_id: str, direction: str, rtp: bytes, *, now: float) -> None:
        if self._paused:
            self.paused_packets += 1  # PCI DSS: nothing of a paused call is written
            return
        self._queue.put(stream_id, direction, rtp, now)

    def set_paused(self, paused: bool, *, by: str) -> None:
        """An operator paused or resumed the recording (``interfaces.TapSink``; the core logs
        who): packets meanwhile are not written, a gap in the file (silence in a WAV file, by
        the RTP timestamps of the packets after it; concealment in Ogg Opus; a time gap in a
        pcap)."""
        self._paused = paused

    def close(self) -> None:
        self._queue.close()

    @property
    def dropped(self) -> int:
        return self._queue.dropped

    async def run(self) -> None:
        recording: WavRecording | PcapRecording | None = None
        try:
            async with self._queue.receive:
                async for stream_id, direction, rtp, now in self._queue.receive:
                    if recording is None:
                        self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
                        self._check_free_space()
                        recording = self._open()
                        self.recording = recording
                    elif recording.counts.packets % FREE_SPACE_EVERY == 0:
                        self._check_free_space()
                    recording.add(stream_id, direction, rtp, now)
        except (OSError, _DiskLow) as exc:
            log.error("recording of call %s stopped: %s", self.call.call_id, exc)
        finally:
            if recording is not None:
                recording.counts.dropped = self.dropped
                recording.close()
                self._report(recording)

    def _check_free_space(self) -> None:
        """Keep ``min_free_mb`` free on the recordings' disk: a full disk stops the gateway's
        own state (call records, the registrar) from being written."""
        if not self._min_free:
            return
        free = self._free_space(self._directory)
        if free < self._min_free:
            raise _DiskLow(
                f"{free // 2**20} MiB free on {self._directory}, under [plugins.recorder] "
                f"min_free_mb ({self._min_free // 2**20})"
            )

    def _open(self) -> WavRecording | PcapRecording:
        if self._format == "pcap":
            return PcapRecording(self._directory, self.call.call_id)
        return WavRecording(
            self._directory,
            self.call.call_id,
            self._codecs,
            self._new_g722,
            self._new_framed,
            self._new_amr,
        )

    def _report(self, recording: WavRecording | PcapRecording) -> None:
        counts = recording.counts
        names = ", ".join(str(path) for path in recording.files) or "no file (no audio)"
        other = ", ".join(f"{count} {name}" for name, count in sorted(counts.other.items()))
        log.info(
            "recording of call %s: %s (%d packets; %d dropped, %d late, %d malformed%s)",
            self.call.call_id,
            names,
            counts.packets,
            counts.dropped,
            counts.late,
            counts.malformed,
            f"; not written, other codecs: {other}" if other else "",
        )


class Recorder:
    """The ``recorder`` media tap (``interfaces.MediaTap``)."""

    name = "recorder"

    def __init__(self, config: RecorderConfig) -> None:
        self.config = config
        self.new_g722 = g722_decoder_factory(config.g722_decoder)
        self.new_framed = framed_decoder_factories() if config.format == "wav" else {}
        self.new_amr = amr_decoder_factories() if config.format == "wav" else {}

    def sink_for_call(self, call: TappedCall) -> RecordingSink | None:
        if not self.config.selection.wants(call):
            return None
        day = time.strftime("%Y-%m-%d", time.gmtime())
        return RecordingSink(
            call,
            self.config.root / day,
            self.config.format,
            self.config.queue,
            min_free=self.config.min_free_mb * 2**20,
            new_g722=self.new_g722,
            new_framed=self.new_framed,
            new_amr=self.new_amr,
        )


def g722_decoder_factory(choice: str) -> NewG722Decoder:
    """What makes each G.722 source's decoder, by ``[plugins.recorder] g722_decoder``:
    ``"auto"`` and ``"libg722"`` libg722, installed with the gateway (g722_libg722.py says
    why; before session 55 ``"auto"`` was spandsp when it loaded, else the Python decoder);
    ``"spandsp"`` spandsp (without it a config error: RecorderConfig); ``"python"`` the
    Python decoder."""
    if choice == "python":
        return G722Decoder
    if choice == "spandsp":
        spandsp = load_spandsp()
        if spandsp is None:  # RecorderConfig checked it was there: it went meanwhile
            raise ValueError('g722_decoder: "spandsp", but libspandsp cannot be loaded')
        log.info("recorder: G.722 decoded by spandsp (%s)", spandsp.name)
        return lambda: SpandspG722Decoder(spandsp)
    log.info("recorder: G.722 decoded by libg722")
    return LibG722Decoder


def framed_decoder_factories() -> dict[str, Callable[[], Bcg729Decoder | GsmDecoder]]:
    """What makes each G.729 and GSM source's decoder, by kind: only those whose library is
    installed (each said once, as the recorder starts)."""
    factories: dict[str, Callable[[], Bcg729Decoder | GsmDecoder]] = {}
    new_g729 = g729_decoder_factory()
    if new_g729 is not None:
        factories["g729"] = new_g729
    new_gsm = gsm_decoder_factory()
    if new_gsm is not None:
        factories["gsm"] = new_gsm
    return factories


def g729_decoder_factory() -> NewG729Decoder | None:
    """What makes each G.729 source's decoder: bcg729 where it is installed
    (gateway/core/media/g729.py), else None, and G.729 is counted, not written. Said once, as
    the recorder starts."""
    bcg729 = load_bcg729()
    if bcg729 is None:
        log.info(  # an install without it is not a fault: most see no G.729
            "recorder: G.729 is not decoded (libbcg729 not found; Debian: apt-get install "
            'libbcg729-0): its packets are counted, not written (format = "pcap" keeps them)'
        )
        return None
    log.info("recorder: G.729 decoded by bcg729 (%s)", bcg729.name)
    return lambda: Bcg729Decoder(bcg729)


def gsm_decoder_factory() -> NewGsmDecoder | None:
    """What makes each GSM source's decoder: libgsm where it is installed
    (gateway/core/media/gsm.py), else None, and GSM is counted, not written. Said once, as the
    recorder starts."""
    libgsm = load_libgsm()
    if libgsm is None:
        log.info(  # an install without it is not a fault: most see no GSM
            "recorder: GSM is not decoded (libgsm not found; Debian: apt-get install libgsm1):"
            ' its packets are counted, not written (format = "pcap" keeps them)'
        )
        return None
    log.info("recorder: GSM decoded by libgsm (%s)", libgsm.name)
    return functools.partial(GsmDecoder, libgsm)


def amr_decoder_factories() -> dict[str, Callable[[], AmrDecoder]]:
    """What makes each AMR and AMR-WB source's decoder, by kind: opencore-amr's where it is
    installed (gateway/core/media/amr.py), and a codec without its decoder is counted, not
    written. Said once, as the recorder starts."""
    factories: dict[str, Callable[[], AmrDecoder]] = {}
    for kind, codec in _AMR_CODECS.items():
        library = amr.load_decoder(codec)
        if library is None:
            package = "libopencore-amrnb0" if codec == amr.AMR else "libopencore-amrwb0"
            log.info(  # an install without it is not a fault: most see no AMR
                "recorder: %s is not decoded (%s not found; Debian: apt-get install %s): its"
                ' packets are counted, not written (format = "pcap" keeps them)',
                codec.name,
                "opencore-amr" if codec == amr.AMR else "opencore-amrwb",
                package,
            )
            continue
        log.info("recorder: %s decoded by opencore-amr (%s)", codec.name, library.name)
        factories[kind] = functools.partial(AmrDecoder, library)
    return factories


# -- plugin configuration and registration (entry point ``recorder``) -----------------------------


@attrs.frozen
class RecorderConfig:
    """``[plugins.recorder]``. See docs/configuration.md."""

    state_dir: str = "./voipgw-state"
    directory: str = ""
    all_calls: bool = False
    accounts: tuple[str, ...] = ()
    trunks: tuple[str, ...] = attrs.field(default=(), metadata=NAMES_TRUNKS)
    format: str = "wav"
    queue: int = 2000
    min_free_mb: int = 1024
    g722_decoder: str = "auto"

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        if self.format not in ("wav", "pcap"):
            raise ValueError(f'format: expected "wav" or "pcap", not {self.format!r}')
        if not 10 <= self.queue <= 1_000_000:
            raise ValueError(f"queue: expected 10 to 1000000 packets, got {self.queue}")
        if self.g722_decoder not in G722_DECODERS:
            raise ValueError(
                'g722_decoder: expected "auto", "libg722", "spandsp" or "python", not '
                f"{self.g722_decoder!r}"
            )
        if self.g722_decoder == "spandsp" and load_spandsp() is None:
            raise ValueError(
                'g722_decoder: "spandsp", but libspandsp cannot be loaded '
                "(apt-get install libspandsp2)"
            )
        if self.min_free_mb < 0:
            raise ValueError(f"min_free_mb: expected 0 (no limit) or more, got {self.min_free_mb}")
        if self.selection.empty:
            raise ValueError(NOTHING_SELECTED)

    @property
    def selection(self) -> CallSelection:
        return CallSelection(self.all_calls, self.accounts, self.trunks)

    def written_directories(self) -> list[tuple[str, Path, str, tuple[str, ...]]]:
        """What ``voipgw check-config`` and ``run`` check this user may write (Gateway.check):
        ``(key, directory, what, files)``. Each recording is a new file."""
        key = "directory" if self.directory else "state_dir"
        return [(key, self.root, "the recordings (recorder plugin)", ())]

    @property
    def root(self) -> Path:
        return Path(self.directory) if self.directory else Path(self.state_dir) / "recordings"


@hookimpl
def gateway_plugin_config() -> type:
    return RecorderConfig


@hookimpl
def gateway_register_media_taps(registry: Registry[Any], config: RecorderConfig | None) -> None:
    """Register the ``recorder`` tap (its table names the calls to record: there is no
    default, so an enabled recorder without one is a configuration error)."""
    if config is not None:
        registry.add(Recorder.name, Recorder(config))


if TYPE_CHECKING:

    def _conforms(tap: Recorder, sink: RecordingSink) -> None:
        _tap: MediaTap = tap
        _sink: TapSink = sink
