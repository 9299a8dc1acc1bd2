"""X2/X3 PDUs (TS 103 221-2 §5) byte by byte, and the stream reader's framing and bounds."""

from __future__ import annotations

import struct
import uuid

import pytest

from gateway.plugins.taps.intercept import pdu

XID = uuid.UUID("11111111-2222-3333-4444-555555555555")


def test_an_x2_sip_pdu_has_the_fixed_header_attributes_then_the_payload() -> None:
    message = b"INVITE sip:bob@example.com SIP/2.0\r\n\r\n"
    encoded = pdu.encode_pdu(
        pdu.Pdu(
            pdu.X2,
            pdu.FORMAT_SIP,
            pdu.FROM_TARGET,
            XID,
            0x0102030405060708,
            (pdu.sequence_attribute(7), pdu.timestamp_attribute(1700000000.25)),
            message,
            version=5,
        )
    )
    attributes = (
        bytes.fromhex("0008 0004 00000007")  # sequence number 7
        + bytes.fromhex("0009 0008 6553f100 0ee6b280")  # 1700000000 s, 250000000 ns
    )
    assert encoded[:2] == b"\x00\x05"  # version
    assert encoded[2:4] == b"\x00\x01"  # X2
    assert struct.unpack("!I", encoded[4:8])[0] == 40 + len(attributes)
    assert struct.unpack("!I", encoded[8:12])[0] == len(message)
    assert encoded[12:14] == b"\x00\x09"  # SIP message
    assert encoded[14:16] == b"\x00\x03"  # sent from the target
    assert encoded[16:32] == XID.bytes
    assert encoded[32:40] == bytes.fromhex("0102030405060708")
    assert encoded[40 : 40 + len(attributes)] == attributes
    assert encoded[40 + len(attributes) :] == message


def test_addresses_ports_and_protocol_are_attributes_10_to_16() -> None:
    found = dict(pdu.address_attributes(("192.0.2.1", 5060), ("198.51.100.7", 5080), 17))
    assert found == {
        pdu.SOURCE_IPV4: bytes([192, 0, 2, 1]),
        pdu.DESTINATION_IPV4: bytes([198, 51, 100, 7]),
        pdu.SOURCE_PORT: b"\x13\xc4",
        pdu.DESTINATION_PORT: b"\x13\xd8",
        pdu.IP_PROTOCOL: b"\x11",
    }
    v6 = dict(pdu.address_attributes(("::1", 1), ("2001:db8::2", 2), 6))
    assert v6[pdu.SOURCE_IPV6] == bytes(15) + b"\x01"
    assert v6[pdu.DESTINATION_IPV6][:4] == bytes.fromhex("20010db8")


def test_a_keepalive_and_its_acknowledgement_carry_only_the_sequence_number() -> None:
    ping = pdu.keepalive(9, version=5)
    ack = pdu.keepalive(9, version=5, acknowledgement=True)
    # 40 + one 8-octet attribute, OpenLI's acknowledgement is exactly 48 octets.
    assert len(ping) == len(ack) == 48
    assert ping[2:4] == b"\x00\x03" and ack[2:4] == b"\x00\x04"
    assert ping[8:32] == bytes(24)  # no payload, format 0, direction 0, nil XID
    decoded = pdu.decode_pdu(ack)
    assert decoded.pdu_type == pdu.KEEPALIVE_ACK
    assert decoded.sequence == 9


def test_the_reader_reassembles_pdus_split_and_joined_anyhow() -> None:
    pdus = [
        pdu.Pdu(
            pdu.X3,
            pdu.FORMAT_RTP,
            pdu.TO_TARGET,
            XID,
            n,
            (pdu.sequence_attribute(n),),
            bytes([n]) * (n * 37),
        )
        for n in range(1, 6)
    ]
    stream = b"".join(pdu.encode_pdu(p) for p in pdus)
    for size in (1, 7, 40, 41, 1000):
        reader = pdu.PduReader()
        got: list[pdu.Pdu] = []
        for offset in range(0, len(stream), size):
            got += reader.feed(stream[offset : offset + size])
        assert got == pdus
        assert reader.buffered == 0


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (struct.pack("!HHII", 5, 1, 39, 0), "header length 39"),
        (struct.pack("!HHII", 5, 1, 70_000, 0), "header length 70000"),
        (struct.pack("!HHII", 5, 1, 40, 2_000_000), "payload length 2000000"),
    ],
)
def test_the_reader_refuses_lengths_outside_its_bounds(header: bytes, reason: str) -> None:
    with pytest.raises(pdu.PduError, match=reason):
        pdu.PduReader().feed(header + bytes(28))


def test_an_attribute_running_past_the_header_is_refused() -> None:
    data = (
        struct.pack("!HHIIHH16sQ", 5, 1, 46, 0, 9, 2, XID.bytes, 0)
        + struct.pack("!HH", 8, 4)
        + b"\x00\x00"
    )
    with pytest.raises(pdu.PduError, match="attribute 8 runs past"):
        pdu.decode_pdu(data)


def test_a_payload_larger_than_the_limit_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="too large"):
        pdu.encode_pdu(
            pdu.Pdu(pdu.X3, pdu.FORMAT_RTP, 1, XID, 0, (), bytes(pdu.MAX_PAYLOAD_LENGTH + 1))
        )


def test_the_per_packet_encoder_makes_the_same_octets_as_the_general_one() -> None:
    """encode_copy (every intercepted packet and message) against encode_pdu (the tested
    layout): the same PDU, byte for byte, and the reader gives it back."""
    more = (
        *pdu.address_attributes(("192.0.2.1", 5060), ("198.51.100.7", 5080), 6),
        (pdu.MATCHED_TARGET, b"sip:alice@example.com"),
    )
    packet = bytes(range(172))
    fast = pdu.encode_copy(
        pdu.X3,
        pdu.FORMAT_RTP,
        pdu.TO_TARGET,
        XID.bytes,
        99,
        0x1_0000_0005,  # wraps to 5, as sequence_attribute does
        1700000000.123456789,
        pdu.encode_attributes(more),
        packet,
        5,
    )
    general = pdu.encode_pdu(
        pdu.Pdu(
            pdu.X3,
            pdu.FORMAT_RTP,
            pdu.TO_TARGET,
            XID,
            99,
            (pdu.sequence_attribute(5), pdu.timestamp_attribute(1700000000.123456789), *more),
            packet,
            version=5,
        )
    )
    assert fast == general
    decoded = pdu.decode_pdu(fast)
    assert decoded.sequence == 5 and decoded.payload == packet
    assert decoded.attribute(pdu.MATCHED_TARGET) == b"sip:alice@example.com"
