"""Opus packets, as received in RTP, into an Ogg Opus file (RFC 7845), undecoded.

Theory of operation. An Ogg stream (RFC 3533) is a run of pages, each carrying up to 255
"lacing values" that cut its data into packets (a packet of n octets takes n // 255 values of
255 and one of n % 255; one longer than a page continues on the next, flagged 0x01). Every page
has a CRC-32 (polynomial 0x04C11DB7, not reflected, initial value 0, over the page with the CRC
field zero: RFC 3533 §6) and a granule position: for Opus the number of 48 kHz samples up to the
end of the last packet completed on it (RFC 7845 §4), -1 when none completes there. The file is
the identification header (``OpusHead``, alone on the first page, flagged beginning of stream),
the comment header (``OpusTags``, on the next), then the audio packets exactly as they came in
RTP (RFC 7587 §4.2: one Opus packet per RTP payload); the last page is flagged end of stream.

A packet's duration comes from its TOC byte and frame count (RFC 6716 §3.1-§3.2), read by
:func:`opus_samples_untrusted`, which also refuses a packet that breaks RFC 6716 §3.4's framing
rules (R1-R7): a decoder cannot decode one (``opusinfo`` warns of an invalid packet, ``opusdec``
skips it, and the file's time shifts by its duration), so such a packet is never written and its
time is concealed like a gap (the bits inside well-framed frames may be anything: the decoder
decodes any bits). A gap (silence suppression, loss, hold) is filled as RFC 7845 §4.1
says a muxer of a real-time stream should: with packets whose frames are empty (zero octets: RFC
6716 §3.2.1, the decoder conceals the loss, fading to silence, as the receiving phone did), of
the previous packet's mode and bandwidth, so the file stays on the call's clock. A granule
position that jumps over the gap would be shorter, but tools do not take it as silence: opus-tools
0.2's ``opusinfo`` warns "sample count behind granule" and its ``opusdec`` plays the packets back
to back (tried: a 2 s stream with a 0.4 s gap decodes to 1.6 s), so the speakers' files would
drift apart. Filled, both accept the file without a warning and decode it to its full length
(tests/unit/taps/test_oggopus.py). A filler costs 2 octets per 120 ms.

The header says one channel: an Opus decoder set to mono decodes stereo packets too (each
packet's TOC says which it is, RFC 6716 §3.1, and RFC 7587 lets one stream carry both), and a
call's recording is one speaker. The packets come from
a stream already running, not from an encoder's start: the pre-skip (RFC 7845 §4.2) discards
concealment written for it, so the file's time 0 is the recording's (:data:`PRE_SKIP`).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import IO

VENDOR = b"voipgw recorder"
FLUSH_SAMPLES = 48000
"""48 kHz samples of audio (1 s) after which a page is written, so a file cut short (the process
killed) loses at most that much."""
PRE_SKIP = 960
"""Samples the decoder discards at the start (RFC 7845 §4.2), 48 kHz: 20 ms of concealment
written first (so the file's audio starts at its time 0). Not 0: opusinfo warns of an
"implausibly low preskip" under 2.5 ms; and a multiple of 2.5 ms, as concealment is."""
MAX_SAMPLES = 5760
"""120 ms at 48 kHz: the longest an Opus packet may last (RFC 6716 §3.2.5, R5)."""

_FRAME_SAMPLES = tuple(
    # The TOC's configuration number (its top five bits) -> frame duration in 48 kHz samples
    # (RFC 6716 §3.1, Table 2): SILK 10/20/40/60 ms (0-11), Hybrid 10/20 ms (12-15), CELT
    # 2.5/5/10/20 ms (16-31).
    (480, 960, 1920, 2880)[config % 4]
    if config < 12
    else (480, 960)[config % 2]
    if config < 16
    else (120, 240, 480, 960)[config % 4]
    for config in range(32)
)
_MAX_FRAME = 1275  # octets (RFC 6716 §3.2.1, R2)


def _frame_length(packet: bytes, offset: int) -> tuple[int, int] | None:
    """A frame length coded at ``offset`` (RFC 6716 §3.2.1: one octet below 252, else two):
    (length, octets used), None past the end."""
    if offset >= len(packet):
        return None
    first = packet[offset]
    if first < 252:
        return first, 1
    if offset + 1 >= len(packet):
        return None
    return first + 4 * packet[offset + 1], 2


def opus_samples_untrusted(packet: bytes) -> int | None:
    """The duration of an Opus packet in 48 kHz samples, or None when its framing breaks a rule
    of RFC 6716 §3.4 (R1-R7)."""
    if not packet:
        return None  # R1
    toc = packet[0]
    frame = _FRAME_SAMPLES[toc >> 3]
    code = toc & 0x03
    rest = len(packet) - 1
    if code == 0:
        return frame if rest <= _MAX_FRAME else None  # R2
    if code == 1:
        return 2 * frame if rest % 2 == 0 and rest // 2 <= _MAX_FRAME else None  # R3
    if code == 2:
        coded = _frame_length(packet, 1)
        if coded is None:
            return None  # R4
        length, used = coded
        second = rest - used - length
        return 2 * frame if 0 <= second <= _MAX_FRAME else None  # R4
    # Code 3: a frame count octet (VBR flag, padding flag, count M), R5-R7.
    if rest < 1:
        return None
    count_octet = packet[1]
    count = count_octet & 0x3F
    if count == 0 or count * frame > MAX_SAMPLES:
        return None  # R5
    offset = 2
    padding = 0
    if count_octet & 0x40:  # padding: octets of 255 mean 254 and another octet follows
        while True:
            if offset >= len(packet):
                return None
            value = packet[offset]
            offset += 1
            padding += 254 if value == 255 else value
            if value != 255:
                break
    available = len(packet) - offset - padding
    if available < 0:
        return None
    if count_octet & 0x80:  # VBR: M - 1 coded lengths, the last frame takes what is left
        for _ in range(count - 1):
            coded = _frame_length(packet, offset)
            if coded is None:
                return None
            length, used = coded
            if length > _MAX_FRAME:
                return None
            offset += used
            available -= used + length
            if available < 0:
                return None  # R7
        return count * frame if available <= _MAX_FRAME else None
    if available % count or available // count > _MAX_FRAME:
        return None  # R6
    return count * frame


def concealment(samples: int, previous_toc: int | None) -> list[tuple[bytes, int]]:
    """Packets of empty frames lasting ``samples`` (rounded down to 2.5 ms), for a gap: code 3
    packets of up to 120 ms in the previous packet's configuration (RFC 7845 §4.1), then CELT
    fullband frames (2.5 to 20 ms) for what that configuration's frames cannot fill."""
    packets: list[tuple[bytes, int]] = []
    configurations = [] if previous_toc is None else [previous_toc & 0xFC]
    configurations += [0xF8, 0xF0, 0xE8, 0xE0]  # CELT FB 20, 10, 5, 2.5 ms, mono, code 0
    for toc in configurations:
        frame = _FRAME_SAMPLES[toc >> 3]
        per_packet = MAX_SAMPLES // frame
        while samples >= frame:
            count = min(per_packet, samples // frame)
            # Code 3, CBR, no padding, ``count`` frames of zero octets (RFC 6716 §3.2.5).
            packets.append((bytes([toc | 0x03, count]), count * frame))
            samples -= count * frame
    return packets


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc_table()


def ogg_crc(data: bytes) -> int:
    """The Ogg page checksum (RFC 3533 §6)."""
    crc = 0
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


class OggOpusWriter:
    """One Ogg Opus file written front to back: ``write`` each packet with its duration (48 kHz
    samples), ``close`` writes the last page (end of stream)."""

    def __init__(self, path: Path, *, serial: int) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._serial = serial
        self._sequence = 0
        self.samples = -PRE_SKIP
        """48 kHz samples of audio written (after the pre-skip): the granule position of the
        last packet is this plus PRE_SKIP (RFC 7845 §4)."""
        self._lacing: list[int] = []
        self._data: list[bytes] = []
        self._granule = -1  # of the last packet completed on the page being filled
        self._page_samples = 0
        self._continued = False
        # RFC 7845 §5.1: version 1, 1 channel, pre-skip 0, 48 kHz input, gain 0, family 0.
        head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, PRE_SKIP, 48000, 0, 0)
        self._page([len(head)], head, granule=0, flags=0x02)
        # RFC 7845 §5.2: the vendor string and no user comments; alone on its page (§3).
        tags = b"OpusTags" + struct.pack("<I", len(VENDOR)) + VENDOR + struct.pack("<I", 0)
        self._page(_lacing_values(len(tags)), tags, granule=0, flags=0)
        # What the pre-skip discards: concealment, so the file's audio starts at its time 0.
        for packet, samples in concealment(PRE_SKIP, None):
            self.write(packet, samples)

    def write(self, packet: bytes, samples: int) -> None:
        """Add one packet lasting ``samples`` (48 kHz)."""
        values = _lacing_values(len(packet))
        # A page is written when the next packet would not fit on it (or it holds a second of
        # audio), not as soon as it is full: the last page, flagged at ``close``, then always
        # has a packet.
        if len(self._lacing) + len(values) > 255 or self._page_samples >= FLUSH_SAMPLES:
            self._flush()
        self.samples += samples
        offset = 0
        while True:
            room = 255 - len(self._lacing)
            taken = values[:room]
            self._lacing += taken
            size = sum(taken)
            self._data.append(packet[offset : offset + size])
            offset += size
            values = values[room:]
            if not values:
                break
            self._flush(continues=True)  # the packet goes on on the next page
        self._granule = self.samples + PRE_SKIP
        self._page_samples += samples

    def close(self) -> None:
        if self._file.closed:
            return
        self._flush(last=True)
        self._file.close()

    def _flush(self, *, continues: bool = False, last: bool = False) -> None:
        if not self._lacing and not last:
            return
        flags = (0x01 if self._continued else 0) | (0x04 if last else 0)
        granule = self._granule if self._granule >= 0 or not last else self.samples + PRE_SKIP
        self._page(self._lacing, b"".join(self._data), granule=granule, flags=flags)
        self._lacing, self._data = [], []
        self._granule, self._page_samples = -1, 0
        self._continued = continues

    def _page(self, lacing: list[int], data: bytes, *, granule: int, flags: int) -> None:
        header = struct.pack(
            "<4sBBqIIIB", b"OggS", 0, flags, granule, self._serial, self._sequence, 0, len(lacing)
        )
        page = header + bytes(lacing) + data
        crc = ogg_crc(page)
        self._file.write(page[:22] + struct.pack("<I", crc) + page[26:])
        self._sequence += 1


def _lacing_values(length: int) -> list[int]:
    """RFC 3533 §5: 255 for each full 255 octets, then the rest (0 when it divides evenly)."""
    return [255] * (length // 255) + [length % 255]
