"""RFC 2198 RED through a payload type renumbering (gateway/core/media/relay.py): the block
headers inside a RED packet carry payload types of their own (RFC 2198 §3), rewritten with the
direction's table by ``renumber_red_blocks_untrusted``, on the bytes path and in place; a RED
packet whose headers do not parse is dropped and counted. Known answers built by hand from §3's
layout (F bit + 7-bit block PT; with F: 14-bit timestamp offset, 10-bit block length)."""

from __future__ import annotations

import pytest

from gateway.core.media.errors import LocalMediaError
from gateway.core.media.relay import (
    _Count,
    _RenumberedRed,
    payload_type_table,
    red_octets,
    renumber_red_blocks_untrusted,
)

# The browser numbers Opus 111 and RED 63; the phone Opus 109 and RED 121.
TABLE = payload_type_table({111: 109, 63: 121})
RED = red_octets((63,))
assert TABLE is not None

# RTP header (RFC 3550 §5.1): V=2, PT 63 (RED), sequence 1, timestamp 960, SSRC 0x11223344.
HEADER = bytes.fromhex("80 3f 0001 000003c0 11223344")
# One redundant block: F=1, PT 111 (0xef), offset 960 and length 3 (960 << 10 | 3 = 0x0f0003);
# then the primary's header: F=0, PT 111 (0x6f). Then the blocks: 3 octets, then 4.
PAYLOAD = bytes.fromhex("ef 0f0003 6f aabbcc 01020304")
# The same in the phone's numbers: RED 121 (0x79), F=1 PT 109 (0xed), F=0 PT 109 (0x6d).
PHONE_HEADER = bytes.fromhex("80 79 0001 000003c0 11223344")
PHONE_PAYLOAD = bytes.fromhex("ed 0f0003 6d aabbcc 01020304")


def rewritten(packet: bytes) -> tuple[bool, bytes]:
    buffer = bytearray(packet)
    return renumber_red_blocks_untrusted(buffer, len(buffer), TABLE), bytes(buffer)


def test_block_payload_types_follow_the_table_and_f_bits_stay() -> None:
    assert rewritten(HEADER + PAYLOAD) == (True, HEADER + PHONE_PAYLOAD)  # header: not its job


def test_only_the_primary_block() -> None:
    # RFC 2198 §3: a packet may carry the primary alone (one 1-octet header).
    assert rewritten(HEADER + bytes.fromhex("6f 0102")) == (True, HEADER + bytes.fromhex("6d 0102"))


def test_two_redundant_blocks_of_different_codecs() -> None:
    # PCMU (0, not renumbered) 2 octets at offset 320, Opus 111 1 octet at offset 160, primary.
    payload = bytes.fromhex("80 050002 ef 028001 6f 1111 22 33")
    expected = bytes.fromhex("80 050002 ed 028001 6d 1111 22 33")
    assert rewritten(HEADER + payload) == (True, HEADER + expected)


def test_csrcs_an_extension_and_padding_are_skipped() -> None:
    # CC=1 and X and P set (0xb1): one CSRC, a one-word extension, then RED, then 2 octets of
    # padding whose last octet counts them (RFC 3550 §5.1, §5.3.1).
    header = bytes.fromhex("b1 3f 0001 000003c0 11223344 55667788 bede0001 ef000000")
    padding = bytes.fromhex("0002")
    ok, packet = rewritten(header + PAYLOAD + padding)
    assert ok
    # The extension's 0xef is not a block header: only the payload's change.
    assert packet == header + PHONE_PAYLOAD + padding


def test_a_packet_without_payload_names_no_block() -> None:
    padding_only = bytes.fromhex("a0 3f 0001 000003c0 11223344 00000004")
    assert rewritten(padding_only) == (True, padding_only)
    assert rewritten(HEADER) == (True, HEADER)


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(HEADER + bytes.fromhex("ef 0f0003"), id="no-last-header"),
        pytest.param(HEADER + bytes.fromhex("ef 0f"), id="header-cut-short"),
        pytest.param(HEADER + bytes.fromhex("ef 0f03ff 6f aabb"), id="block-longer-than-packet"),
        pytest.param(HEADER + bytes.fromhex("ef 0f0003 6f aabb"), id="primary-header-past-blocks"),
        pytest.param(bytes.fromhex("8f") + HEADER[1:] + PAYLOAD, id="csrcs-past-the-end"),
        pytest.param(bytes.fromhex("90") + HEADER[1:] + bytes.fromhex("bede"), id="ext-cut"),
        pytest.param(
            bytes.fromhex("90") + HEADER[1:] + bytes.fromhex("bede ffff") + PAYLOAD, id="ext-long"
        ),
        pytest.param(bytes.fromhex("a0") + HEADER[1:] + PAYLOAD[:-1] + b"\xff", id="padding-long"),
        pytest.param(HEADER[:11], id="shorter-than-rtp"),
    ],
)
def test_malformed_red_does_not_parse(packet: bytes) -> None:
    assert not rewritten(packet)[0]


def test_the_size_given_bounds_the_parse() -> None:
    # The relay's receive buffer holds more than the packet: what lies past it is never read.
    buffer = bytearray(HEADER + bytes.fromhex("ef 0f0003") + bytes.fromhex("6f aabbcc 01"))
    assert not renumber_red_blocks_untrusted(buffer, len(HEADER) + 4, TABLE)
    assert not renumber_red_blocks_untrusted(buffer, len(buffer) + 1, TABLE)


def test_red_octets_marks_red_with_or_without_the_marker_bit() -> None:
    assert RED[63] == RED[63 | 0x80] == 1
    assert sum(RED) == 2
    with pytest.raises(LocalMediaError):
        red_octets((128,))


# -- the transform: bytes path and in place --------------------------------------------------


def test_the_bytes_path_rewrites_red_and_other_packets() -> None:
    count = _Count()
    transform = _RenumberedRed(TABLE, RED, count, None, inbound=True)
    assert transform(HEADER + PAYLOAD) == PHONE_HEADER + PHONE_PAYLOAD
    marked = bytes([0x80, 0x80 | 63]) + HEADER[2:]  # marker bit kept on RED's own number
    assert transform(marked + PAYLOAD) == bytes([0x80, 0x80 | 121]) + HEADER[2:] + PHONE_PAYLOAD
    # Opus on its own: the second octet only (its payload is no block header).
    opus = bytes([0x80, 111]) + HEADER[2:] + PAYLOAD
    assert transform(opus) == bytes([0x80, 109]) + HEADER[2:] + PAYLOAD
    assert transform(HEADER + bytes.fromhex("ef 0f0003")) is None
    assert count.value == 1


def test_in_place_with_an_inner_step_on_each_side() -> None:
    buffer = bytearray(2048)
    calls: list[bytes] = []

    class Inner:
        """Stands in for SRTP: notes the packet it sees, adds nothing."""

        def __call__(self, packet: bytes) -> bytes:
            return packet

        def in_buffer(self, buffer: bytearray) -> object:
            def step(size: int) -> int:
                calls.append(bytes(buffer[:size]))
                return size

            return step

    for inbound in (True, False):
        calls.clear()
        count = _Count()
        step = _RenumberedRed(TABLE, RED, count, Inner(), inbound=inbound).in_buffer(buffer)
        assert step is not None
        packet = HEADER + PAYLOAD
        buffer[: len(packet)] = packet
        assert step(len(packet)) == len(packet)
        assert bytes(buffer[: len(packet)]) == PHONE_HEADER + PHONE_PAYLOAD
        # Unprotect sees the sender's numbers, protect the receiver's (RFC 3711 §3.1).
        assert calls == [HEADER + PAYLOAD if inbound else PHONE_HEADER + PHONE_PAYLOAD]
        bad = HEADER + bytes.fromhex("ef 0f0003")
        buffer[: len(bad)] = bad
        assert step(len(bad)) == -1
        assert count.value == 1
        # Dropped before protect: the outbound inner step never saw the malformed packet.
        assert len(calls) == (2 if inbound else 1)
