"""STUN codec (gateway/core/media/stun.py) against RFC 5769's test vectors, and its bounds."""

from __future__ import annotations

import binascii
import struct

import pytest

from gateway.core.media import stun
from tests.unit.media.stun_vectors import RFC5769_REQUEST, RFC5769_RESPONSE

PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TRANSACTION_ID = bytes.fromhex("b7e7a701bc34d686fa87dfae")


def test_the_rfc5769_request_parses_and_its_integrity_and_fingerprint_check() -> None:
    message = stun.parse_stun_untrusted(RFC5769_REQUEST)
    assert message.message_type == stun.BINDING_REQUEST
    assert message.transaction_id == TRANSACTION_ID
    assert message.get(stun.USERNAME) == b"evtj:h6vY"
    assert message.get(stun.SOFTWARE) == b"STUN test client"
    assert message.get(stun.PRIORITY) == bytes.fromhex("6e0001ff")
    assert message.get(stun.ICE_CONTROLLED) == bytes.fromhex("932ff9b151263b36")
    assert message.has_fingerprint
    assert stun.integrity_ok(message, PASSWORD)
    assert not stun.integrity_ok(message, b"another password")


def test_the_rfc5769_response_parses_with_its_mapped_address() -> None:
    message = stun.parse_stun_untrusted(RFC5769_RESPONSE)
    assert message.message_type == stun.BINDING_SUCCESS
    assert stun.integrity_ok(message, PASSWORD)
    value = message.get(stun.XOR_MAPPED_ADDRESS)
    assert value is not None
    assert stun.parse_xor_address_untrusted(value, TRANSACTION_ID) == ("192.0.2.1", 32853)


def test_encoding_matches_the_rfc5769_response() -> None:
    """Our encoder pads with zeros where RFC 5769 pads SOFTWARE with a space (padding may be
    anything, RFC 8489 §14), so its MAC differs; the rest is the vector's, and it verifies."""
    mapped = stun.xor_address("192.0.2.1", 32853, TRANSACTION_ID)
    encoded = stun.encode_stun(
        stun.BINDING_SUCCESS,
        TRANSACTION_ID,
        [(stun.SOFTWARE, b"test vector"), (stun.XOR_MAPPED_ADDRESS, mapped)],
        integrity_key=PASSWORD,
    )
    assert len(encoded) == len(RFC5769_RESPONSE)
    assert encoded[:20] == RFC5769_RESPONSE[:20]
    assert encoded[20:35] == RFC5769_RESPONSE[20:35]  # SOFTWARE up to its padding
    assert encoded[36:48] == RFC5769_RESPONSE[36:48]  # XOR-MAPPED-ADDRESS
    parsed = stun.parse_stun_untrusted(encoded)
    assert parsed.has_fingerprint
    assert stun.integrity_ok(parsed, PASSWORD)
    # With the vector's padding our MAC and FINGERPRINT are the vector's.
    with_space = bytearray(encoded)
    with_space[35] = 0x20
    assert stun.integrity_ok(stun.parse_stun_untrusted(RFC5769_RESPONSE), PASSWORD)
    assert bytes(with_space[:48]) == RFC5769_RESPONSE[:48]


def test_an_ipv6_mapped_address_goes_both_ways() -> None:
    value = stun.xor_address("2001:db8:1234:5678:11:2233:4455:6677", 32853, TRANSACTION_ID)
    assert len(value) == 20
    assert stun.parse_xor_address_untrusted(value, TRANSACTION_ID) == (
        "2001:db8:1234:5678:11:2233:4455:6677",
        32853,
    )


def test_a_changed_octet_fails_the_fingerprint() -> None:
    tampered = bytearray(RFC5769_REQUEST)
    tampered[30] ^= 0x01  # inside SOFTWARE
    with pytest.raises(stun.StunError, match="FINGERPRINT"):
        stun.parse_stun_untrusted(bytes(tampered))


def test_a_changed_octet_fails_the_integrity_when_the_fingerprint_is_recomputed() -> None:
    # The request without its FINGERPRINT, USERNAME changed, and a correct FINGERPRINT again:
    # only MESSAGE-INTEGRITY can tell.
    body = bytearray(RFC5769_REQUEST[:-8])
    body[body.index(b"evtj")] = ord("E")
    forged = stun.parse_stun_untrusted(_with_fingerprint(bytes(body)))
    assert forged.get(stun.USERNAME) == b"Evtj:h6vY"
    assert not stun.integrity_ok(forged, PASSWORD)
    assert stun.integrity_ok(
        stun.parse_stun_untrusted(_with_fingerprint(RFC5769_REQUEST[:-8])), PASSWORD
    )


def _with_fingerprint(message: bytes) -> bytes:
    """``message`` (a whole STUN message without FINGERPRINT) with a correct one appended."""
    length = len(message) - stun.HEADER_LENGTH + 8
    head = message[:2] + length.to_bytes(2, "big") + message[4:]
    crc = (binascii.crc32(head) ^ 0x5354554E) & 0xFFFFFFFF
    return head + struct.pack("!HHI", stun.FINGERPRINT, 4, crc)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "shorter than its header"),
        (RFC5769_REQUEST[:19], "shorter than its header"),
        (b"\xc0" + RFC5769_REQUEST[1:], "top two bits"),
        (RFC5769_REQUEST[:4] + b"\x00\x00\x00\x00" + RFC5769_REQUEST[8:], "magic cookie"),
        (RFC5769_REQUEST[:-4], "does not match the datagram"),
        (RFC5769_REQUEST + b"\x00" * 4, "does not match the datagram"),
        (RFC5769_REQUEST[:2] + b"\x00\x05" + RFC5769_REQUEST[4:25], "does not match"),
        (bytes(1281), "longer than 1280"),
    ],
)
def test_malformed_datagrams_are_refused(data: bytes, why: str) -> None:
    with pytest.raises(stun.StunError, match=why):
        stun.parse_stun_untrusted(data)


def test_an_attribute_running_past_the_end_is_refused() -> None:
    header = bytes.fromhex("000100082112a442") + TRANSACTION_ID
    with pytest.raises(stun.StunError, match="runs past the end"):
        stun.parse_stun_untrusted(header + bytes.fromhex("0006001061626364"))


def test_too_many_attributes_are_refused() -> None:
    attributes = [(0x8022, b"x")] * 5
    message = stun.encode_stun(stun.BINDING_REQUEST, TRANSACTION_ID, attributes, fingerprint=False)
    with pytest.raises(stun.StunError, match="more than 4"):
        stun.parse_stun_untrusted(message, max_attributes=4)
    assert len(stun.parse_stun_untrusted(message).attributes) == 5


def test_attributes_after_message_integrity_are_ignored_but_fingerprint() -> None:
    message = stun.encode_stun(
        stun.BINDING_REQUEST,
        TRANSACTION_ID,
        [(stun.USERNAME, b"a:b")],
        integrity_key=b"k",
        fingerprint=False,
    )
    # RFC 8489 §14.5: an attribute after MESSAGE-INTEGRITY (here SOFTWARE) is ignored.
    body = message + bytes.fromhex("8022000461626364")
    parsed = stun.parse_stun_untrusted(_with_fingerprint(body))
    assert parsed.has_fingerprint
    assert not parsed.has(stun.SOFTWARE)
    assert stun.integrity_ok(parsed, b"k")


def test_a_fingerprint_not_last_is_refused() -> None:
    message = stun.encode_stun(stun.BINDING_REQUEST, TRANSACTION_ID, [])
    extra = message + bytes.fromhex("8022000461626364")
    fixed = extra[:2] + (len(extra) - 20).to_bytes(2, "big") + extra[4:]
    with pytest.raises(stun.StunError):
        stun.parse_stun_untrusted(fixed)


def test_error_codes_encode_class_and_number() -> None:
    value = stun.error_code(487, "Role Conflict")
    assert value[:4] == bytes([0, 0, 4, 87])
    assert stun.parse_error_code_untrusted(value) == 487
    with pytest.raises(stun.StunError):
        stun.parse_error_code_untrusted(b"\x00\x00\x09\x00")


def test_looks_like_stun_wants_the_first_octet_and_the_cookie() -> None:
    assert stun.looks_like_stun(RFC5769_REQUEST)
    assert not stun.looks_like_stun(b"\x80" + RFC5769_REQUEST[1:])
    assert not stun.looks_like_stun(RFC5769_REQUEST[:4] + bytes(16))
