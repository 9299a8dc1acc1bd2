"""The relay's test for a ZRTP Error (RFC 6189 §5.9), which it drops from a source that is
neither the latched one nor the leg's SDP address before keys (docs/media_security.md, "Forged
Errors"): it must take every Error the ZRTP plugin would act on and nothing else, since what it
takes from a stranger is dropped and what it misses ends the call."""

from __future__ import annotations

import pytest

from gateway.core.media.relay import _is_zrtp, _is_zrtp_error
from gateway.plugins.keyexchange.zrtp import packets


def test_an_error_as_the_zrtp_plugin_frames_it_is_one() -> None:
    packet = packets.frame(7, 0x1234_5678, packets.encode_error(0x61))
    assert _is_zrtp_error(packet)
    # ... and the plugin reads the same datagram as an Error: the two agree on the layout.
    assert packets.parse_packet_untrusted(packet).message_type == packets.ERROR


def test_an_error_laid_out_by_hand_from_rfc_6189_figure_2_is_one() -> None:
    """§5 Figure 2: 0x10, a 16-bit sequence number, the magic cookie "ZRTP", the SSRC; then
    the message: preamble 0x505a, its length in words, the type block "Error   " (§5.9: length 4
    words, the error code); CRC. The relay reads the type block at bytes 16..24."""
    header = b"\x10\x00\x00\x01" + b"ZRTP" + b"\x00\x00\x00\x01"
    message = b"\x50\x5a\x00\x04" + b"Error   " + b"\x00\x00\x00\x61"
    assert _is_zrtp_error(header + message + b"\x00\x00\x00\x00")


@pytest.mark.parametrize(
    "message_type",
    [
        packets.HELLO,
        packets.HELLO_ACK,
        packets.COMMIT,
        packets.DH_PART1,
        packets.CONFIRM1,
        packets.ERROR_ACK,
        packets.PING,
    ],
)
def test_other_zrtp_messages_are_not(message_type: bytes) -> None:
    assert not _is_zrtp_error(packets.frame(1, 1, packets.message(message_type, b"\x00" * 8)))


def test_an_error_type_block_without_zrtp_s_framing_is_not() -> None:
    error = packets.frame(1, 1, packets.encode_error(0x61))
    # RTP (first byte 0x80) and a DTLS record (20..63) with the same bytes after the first.
    assert not _is_zrtp_error(b"\x80" + error[1:])
    assert not _is_zrtp_error(b"\x16" + error[1:])
    # The magic cookie missing (RFC 7983 §7 demultiplexes by it and the first byte).
    assert not _is_zrtp_error(error[:4] + b"ZRTQ" + error[8:])


@pytest.mark.parametrize("length", [1, 4, 8, 16, 23])
def test_a_truncated_datagram_is_not(length: int) -> None:
    assert not _is_zrtp_error(packets.frame(1, 1, packets.encode_error(0x61))[:length])


@pytest.mark.parametrize(
    "message_type",
    [packets.HELLO, packets.HELLO_ACK, packets.COMMIT, packets.ERROR, packets.PING],
)
def test_every_zrtp_message_is_zrtp(message_type: bytes) -> None:
    """What the relay hands on beside a latch no Hello proved (docs/media_security.md,
    "Forged handshakes"): any ZRTP packet, by its first byte and cookie (RFC 7983, RFC 6189
    §5), whatever its message."""
    assert _is_zrtp(packets.frame(1, 1, packets.message(message_type, b"\x00" * 8)))


def test_rtp_dtls_and_a_missing_cookie_are_not_zrtp() -> None:
    hello = packets.frame(1, 1, packets.message(packets.HELLO, b"\x00" * 8))
    assert not _is_zrtp(b"\x80" + hello[1:])
    assert not _is_zrtp(b"\x16" + hello[1:])
    assert not _is_zrtp(hello[:4] + b"ZRTQ" + hello[8:])
    assert not _is_zrtp(hello[:7])
