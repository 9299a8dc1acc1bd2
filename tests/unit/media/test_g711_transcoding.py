"""G.711 A-law <-> mu-law transcoding (gateway/core/media/g711.py, relay.py): the reference
functions against the known answers of ITU-T G.711 as the spec lists them, the 256-octet
tables built from them, and the relay's per-packet step on real RTP packets (CSRCs, header
extension, padding, marker bit; other payload types untouched; malformed headers dropped) on
the bytes path and in place, around an inner step standing in for SRTP."""

from __future__ import annotations

import struct

import attrs
import pytest

from gateway.core.media.g711 import (
    ALAW_TO_ULAW,
    ULAW_TO_ALAW,
    G711Transcoding,
    Law,
    alaw2lin,
    lin2alaw,
    lin2ulaw,
    ulaw2lin,
)
from gateway.core.media.relay import _Count, _Transcoded, transcode_untrusted

# 16-bit linear -> mu-law, A-law (the spec's vectors).
VECTORS = [
    (0, 0xFF, 0xD5),
    (-1, 0x7E, 0x55),
    (8, 0xFE, 0xD5),
    (100, 0xF2, 0xD3),
    (-100, 0x72, 0x53),
    (1000, 0xCE, 0xFA),
    (-1000, 0x4E, 0x7A),
    (4096, 0xAF, 0x85),
    (8159, 0x9F, 0x8A),
    (32767, 0x80, 0xAA),
    (-32768, 0x00, 0x2A),
]
ULAW_DECODED = [(0xFF, 0), (0x7F, 0), (0x80, 32124), (0x00, -32124)]
ALAW_DECODED = [(0xD5, 8), (0x55, -8), (0xAA, 32256), (0x2A, -32256)]

PCMU_TO_PCMA = G711Transcoding(Law.PCMU, 0, 8)
PCMA_TO_PCMU = G711Transcoding(Law.PCMA, 8, 0)


@pytest.mark.parametrize(("linear", "ulaw", "alaw"), VECTORS)
def test_encoders_give_the_known_answers(linear: int, ulaw: int, alaw: int) -> None:
    assert lin2ulaw(linear) == ulaw
    assert lin2alaw(linear) == alaw


def test_decoders_give_the_known_answers() -> None:
    assert [(octet, ulaw2lin(octet)) for octet, _ in ULAW_DECODED] == ULAW_DECODED
    assert [(octet, alaw2lin(octet)) for octet, _ in ALAW_DECODED] == ALAW_DECODED


def test_each_law_decodes_and_encodes_back_to_itself() -> None:
    assert bytes(lin2ulaw(ulaw2lin(octet)) for octet in range(256)).replace(
        b"\x7f", b"\xff"
    ) == bytes(range(256)).replace(b"\x7f", b"\xff")  # mu-law has two zeros (+0 and -0)
    assert bytes(lin2alaw(alaw2lin(octet)) for octet in range(256)) == bytes(range(256))


def test_tables_are_the_reference_functions_through_linear() -> None:
    assert len(ULAW_TO_ALAW) == len(ALAW_TO_ULAW) == 256
    for octet in range(256):
        assert ULAW_TO_ALAW[octet] == lin2alaw(ulaw2lin(octet))
        assert ALAW_TO_ULAW[octet] == lin2ulaw(alaw2lin(octet))
    # Silence: mu-law 0xFF (0) -> A-law 0xD5 (+8), A-law 0xD5 (+8) -> mu-law 0xFE (+8).
    assert (ULAW_TO_ALAW[0xFF], ALAW_TO_ULAW[0xD5]) == (0xD5, 0xFE)
    # The extremes keep their sign and stay the loudest code.
    assert (ULAW_TO_ALAW[0x80], ULAW_TO_ALAW[0x00]) == (0xAA, 0x2A)
    assert (ALAW_TO_ULAW[0xAA], ALAW_TO_ULAW[0x2A]) == (0x80, 0x00)


def test_a_round_trip_keeps_sign_and_errs_by_at_most_a_sixteenth() -> None:
    # G.711's quantisation error is about 1/16 of the level at most (both laws: 4-bit
    # mantissa); a round trip through the other law adds no more than one such step.
    changed = 0
    for octet in range(256):
        value = alaw2lin(octet)
        back = alaw2lin(ULAW_TO_ALAW[ALAW_TO_ULAW[octet]])
        assert (back > 0) == (value > 0)
        assert 16 * abs(back - value) <= abs(value)
        changed += back != value
    assert changed == 16  # A -> mu -> A is exact but for 16 codes, each one step off
    for octet in range(256):
        value = ulaw2lin(octet)
        back = ulaw2lin(ALAW_TO_ULAW[ULAW_TO_ALAW[octet]])
        assert (back >= 0) == (value >= 0) or value == 0
        # mu-law is finer than A-law near zero (steps of 8 against 16): 8 more there.
        assert 16 * abs(back - value) <= abs(value) + 128
    # Once through, a second round trip changes nothing more.
    once = bytes(ULAW_TO_ALAW[ALAW_TO_ULAW[octet]] for octet in range(256))
    assert bytes(ULAW_TO_ALAW[ALAW_TO_ULAW[octet]] for octet in once) == once


def test_transcoding_values() -> None:
    assert PCMU_TO_PCMA.table is ULAW_TO_ALAW
    assert PCMA_TO_PCMU.table is ALAW_TO_ULAW
    assert PCMU_TO_PCMA.describe() == "PCMU <-> PCMA transcoded"
    assert PCMA_TO_PCMU.describe() == "PCMA <-> PCMU transcoded"
    for bad in (-1, 128):
        with pytest.raises(ValueError):
            G711Transcoding(Law.PCMU, bad, 8)
        with pytest.raises(ValueError):
            G711Transcoding(Law.PCMU, 0, bad)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        PCMU_TO_PCMA.payload_type = 1  # type: ignore[misc]


SAMPLES = bytes(range(256)) + bytes(range(0, 256, 4))


def rtp(payload_type: int, payload: bytes, *, marker: bool = False, first: int = 0x80) -> bytes:
    second = payload_type | (0x80 if marker else 0)
    return struct.pack("!BBHII", first, second, 7, 1120, 0x11223344) + payload


def transcoded(packet: bytes, transcoding: G711Transcoding) -> tuple[bool, bytes]:
    buffer = bytearray(packet) + bytearray(16)  # the relay's buffer is longer than the packet
    return transcode_untrusted(buffer, len(packet), transcoding), bytes(buffer[: len(packet)])


def test_a_pcmu_packet_becomes_pcma() -> None:
    packet = rtp(0, SAMPLES, marker=True)
    assert transcoded(packet, PCMU_TO_PCMA) == (
        True,
        rtp(8, SAMPLES.translate(ULAW_TO_ALAW), marker=True),
    )
    assert transcoded(rtp(8, SAMPLES), PCMA_TO_PCMU) == (
        True,
        rtp(0, SAMPLES.translate(ALAW_TO_ULAW)),
    )


def test_dynamic_numbers_are_honoured() -> None:
    # A leg may name PCMA with another number only in theory; the numbers are the legs' own.
    assert transcoded(rtp(0, b"\xff"), G711Transcoding(Law.PCMU, 0, 99)) == (True, rtp(99, b"\xd5"))


@pytest.mark.parametrize("payload_type", [8, 13, 101, 127])
def test_other_payload_types_pass_unchanged(payload_type: int) -> None:
    # telephone-event and comfort noise (RFC 3389: 13) are not audio samples of the law.
    packet = rtp(payload_type, b"\x01\x0a\x00\xa0")
    assert transcoded(packet, PCMU_TO_PCMA) == (True, packet)


def test_csrcs_an_extension_and_padding_are_not_audio() -> None:
    # CC=1, X and P (0xb1): one CSRC, a one-word extension, the samples, 2 octets of padding.
    header = bytes.fromhex("b1 00 0007 00000460 11223344 55667788 bede0001 ffffffff")
    padding = bytes.fromhex("ff02")
    ok, packet = transcoded(header + b"\xff\xff\x00" + padding, PCMU_TO_PCMA)
    assert ok
    assert packet == bytes.fromhex("b1 08") + header[2:] + b"\xd5\xd5\x2a" + padding


def test_a_packet_without_samples_passes() -> None:
    assert transcoded(rtp(0, b""), PCMU_TO_PCMA) == (True, rtp(8, b""))


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(rtp(0, b"", first=0x8F), id="csrcs-past-the-end"),
        pytest.param(rtp(0, b"\xbe\xde", first=0x90), id="extension-header-cut"),
        pytest.param(rtp(0, b"\xbe\xde\x00\x05\x00", first=0x90), id="extension-past-the-end"),
        pytest.param(rtp(0, b"\xff\x40", first=0xA0), id="padding-longer-than-packet"),
        pytest.param(rtp(0, b"")[:11], id="shorter-than-a-header"),
    ],
)
def test_malformed_packets_of_the_law_do_not_parse(packet: bytes) -> None:
    assert transcoded(packet, PCMU_TO_PCMA)[0] is False


def test_the_size_given_bounds_the_parse() -> None:
    buffer = bytearray(rtp(0, b"\xff\xff"))
    assert transcode_untrusted(buffer, len(buffer) + 1, PCMU_TO_PCMA) is False
    assert transcode_untrusted(buffer, len(buffer) - 1, PCMU_TO_PCMA) is True
    assert buffer[-2:] == b"\xd5\xff"  # the octet past ``size`` is not the packet's


def test_the_bytes_path_counts_and_drops() -> None:
    count = _Count()
    transform = _Transcoded(PCMU_TO_PCMA, count, None, inbound=False)
    assert transform(rtp(0, SAMPLES)) == rtp(8, SAMPLES.translate(ULAW_TO_ALAW))
    assert transform(rtp(101, b"\x01\x0a\x00\xa0")) == rtp(101, b"\x01\x0a\x00\xa0")
    assert transform(rtp(0, b"", first=0x8F)) is None
    assert count.value == 1


class Inner:
    """Stands in for SRTP: notes the packet it sees, drops a packet whose first octet is 0."""

    def __init__(self) -> None:
        self.calls: list[bytes] = []

    def __call__(self, packet: bytes) -> bytes | None:
        self.calls.append(packet)
        return None if packet[0] == 0 else packet

    def in_buffer(self, buffer: bytearray) -> object:
        def step(size: int) -> int:
            self.calls.append(bytes(buffer[:size]))
            return -1 if buffer[0] == 0 else size

        return step


@pytest.mark.parametrize("inbound", [True, False])
def test_in_place_and_bytes_around_an_inner_step(inbound: bool) -> None:
    pcmu, pcma = rtp(0, SAMPLES), rtp(8, SAMPLES.translate(ULAW_TO_ALAW))
    # Unprotect sees the sender's law, protect the receiver's (RFC 3711 §3.1).
    expected_calls = [pcmu if inbound else pcma]
    inner = Inner()
    count = _Count()
    assert _Transcoded(PCMU_TO_PCMA, count, inner, inbound=inbound)(pcmu) == pcma
    assert inner.calls == expected_calls
    buffer = bytearray(2048)
    inner = Inner()
    step = _Transcoded(PCMU_TO_PCMA, count, inner, inbound=inbound).in_buffer(buffer)
    assert step is not None
    buffer[: len(pcmu)] = pcmu
    assert step(len(pcmu)) == len(pcmu)
    assert bytes(buffer[: len(pcmu)]) == pcma
    assert inner.calls == expected_calls
    assert count.value == 2
    # The inner step's drop is kept; a malformed packet never reaches protect.
    dropped = b"\x00" + pcmu[1:]
    buffer[: len(dropped)] = dropped
    assert step(len(dropped)) == -1
    bad = rtp(0, b"", first=0x8F)
    buffer[: len(bad)] = bad
    assert step(len(bad)) == -1
    assert len(inner.calls) == (3 if inbound else 2)
    # Outbound, the packet protect dropped had been transcoded already: counted.
    assert count.value == (2 if inbound else 3)


def test_a_bytes_only_inner_keeps_the_bytes_path() -> None:
    step = _Transcoded(PCMU_TO_PCMA, _Count(), lambda packet: packet, inbound=True).in_buffer(
        bytearray(64)
    )
    assert step is None
    assert _Transcoded(PCMU_TO_PCMA, _Count(), None, inbound=True).in_buffer(bytearray(64))
