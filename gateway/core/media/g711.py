"""G.711 A-law <-> mu-law transcoding between two legs of a call. Sans-IO.

Theory of operation
-------------------
Phones and US carriers often speak only PCMU (RTP payload type 0, mu-law), European PSTN
carriers only PCMA (payload type 8, A-law). Both are ITU-T G.711: 8000 samples a second, one
octet a sample (RFC 3551 §4.5.14), so a packet converts octet by octet. Its length, the RTP
timestamp and sequence number, and RTCP's octet counts (RFC 3550 §6.4.1) stay as they are:
only the payload octets and the payload type change.

The conversion tables go through 16-bit linear with the reference functions below (the
classic Sun ``g711.c`` segment tables, equal to Python's former ``audioop`` for every 16-bit
input): ``A -> linear -> mu`` and ``mu -> linear -> A``. These are the functions the spec
gives known answers for, so the tables are tested against published vectors; G.711's own
direct A/mu tables (its Tables 3 and 4) may differ from them by one step on a few codes, which
no listener hears. Each table is 256 octets, built once at import; a relay direction that
transcodes puts the payload through one with ``bytes.translate`` (:mod:`.relay`,
``_Transcoded``), and a direction that does not pays nothing.

Silence: mu-law 0xFF (0) becomes A-law 0xD5 (+8, the smallest A-law step), and A-law 0xD5
becomes mu-law 0xFE (+8): both inaudible.
"""

from __future__ import annotations

import enum

import attrs

SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)
"""mu-law segment ends on the 14-bit biased magnitude."""
SEG_AEND = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
"""A-law segment ends on the 13-bit magnitude."""

PCMU_PAYLOAD_TYPE = 0
PCMA_PAYLOAD_TYPE = 8
"""RFC 3551 §6 table 4: the static payload types of G.711 mu-law and A-law."""


class Law(enum.Enum):
    """A G.711 companding law, by its RTP encoding name (RFC 3551 §6)."""

    PCMU = "PCMU"
    PCMA = "PCMA"

    @property
    def other(self) -> Law:
        return Law.PCMA if self is Law.PCMU else Law.PCMU


def _seg(value: int, ends: tuple[int, ...]) -> int:
    for segment, end in enumerate(ends):
        if value <= end:
            return segment
    return 8


def lin2ulaw(pcm16: int) -> int:
    """A signed 16-bit sample -> its mu-law octet (ITU-T G.711, bias 33 on 14 bits)."""
    value = pcm16 >> 2  # to 14 bits (arithmetic shift)
    mask = 0x7F if value < 0 else 0xFF
    value = min(-value if value < 0 else value, 8159) + 33  # clip, add the bias
    segment = _seg(value, SEG_UEND)
    if segment >= 8:
        return 0x7F ^ mask
    return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask


def ulaw2lin(octet: int) -> int:
    """A mu-law octet -> its signed 16-bit sample."""
    u = ~octet & 0xFF  # mu-law octets are sent bit-inverted
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return 0x84 - t if u & 0x80 else t - 0x84


def lin2alaw(pcm16: int) -> int:
    """A signed 16-bit sample -> its A-law octet (ITU-T G.711, 13 bits, even bits inverted)."""
    value = pcm16 >> 3  # to 13 bits
    if value >= 0:
        mask = 0xD5
    else:
        mask, value = 0x55, -value - 1
    segment = _seg(value, SEG_AEND)
    if segment >= 8:
        return 0x7F ^ mask
    mantissa = (value >> (1 if segment < 2 else segment)) & 0x0F  # segments 0 and 1: one step
    return ((segment << 4) | mantissa) ^ mask


def alaw2lin(octet: int) -> int:
    """An A-law octet -> its signed 16-bit sample."""
    a = octet ^ 0x55
    t = (a & 0x0F) << 4
    segment = (a & 0x70) >> 4
    if segment == 0:
        t += 8
    elif segment == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (segment - 1)
    return t if a & 0x80 else -t


ULAW_TO_ALAW = bytes(lin2alaw(ulaw2lin(octet)) for octet in range(256))
"""mu-law octet -> A-law octet, through 16-bit linear (the module docstring says why)."""
ALAW_TO_ULAW = bytes(lin2ulaw(alaw2lin(octet)) for octet in range(256))
"""A-law octet -> mu-law octet, through 16-bit linear."""


def _payload_type(_instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not 0 <= value <= 127:
        raise ValueError(f"{attribute.name} {value} is out of range 0..127")


@attrs.frozen
class G711Transcoding:
    """One direction of a transcoded stream: RTP packets whose payload type is
    ``payload_type`` (the sending leg's number for ``law``) leave with their payload in the
    other law and ``to_payload_type`` (the receiving leg's number for it); the marker bit and
    everything else are kept. Other packets (telephone-event, comfort noise) pass unchanged."""

    law: Law
    payload_type: int = attrs.field(validator=_payload_type)
    to_payload_type: int = attrs.field(validator=_payload_type)

    @property
    def table(self) -> bytes:
        """The 256-octet sample table for ``bytes.translate``: ``law`` -> the other law."""
        return ULAW_TO_ALAW if self.law is Law.PCMU else ALAW_TO_ULAW

    def describe(self) -> str:
        """For the call record and ``voipgw calls``: e.g. ``PCMU <-> PCMA transcoded``."""
        return f"{self.law.value} <-> {self.law.other.value} transcoded"
