"""Mutation fuzzing of the binary media-path parsers: RTP, RTCP, STUN, ZRTP, MIKEY, DTLS records.

Each parser sees its seeds and their seeded mutations (tests/unit/fuzz/mutator.py); the only
outcomes allowed are a result or the parser's declared error. ``VOIPGW_FUZZ_EXAMPLES`` raises the
count for a long campaign (docs/testing.md).
"""

from __future__ import annotations

import struct

from gateway.core.media import amr, gsm, rtcp, stun
from gateway.core.media.errors import RtpParseError
from gateway.core.media.rtp import parse_rtcp_header_untrusted, parse_rtp_header_untrusted
from gateway.plugins.keyexchange.dtls_srtp import dtls_records_valid_untrusted
from gateway.plugins.keyexchange.mikey import payloads as mikey
from gateway.plugins.keyexchange.zrtp import packets as zrtp
from gateway.plugins.taps.oggopus import opus_samples_untrusted
from tests.unit.fuzz.mutator import fuzz
from tests.unit.keyexchange.mikey_vectors import KEY, SALT, section7_message
from tests.unit.keyexchange.zrtp_vectors import EXCHANGE
from tests.unit.media.rtcp_packets import RR, SDES, SR
from tests.unit.media.stun_vectors import RFC5769_REQUEST, RFC5769_RESPONSE

RTP = (
    struct.pack("!BBHII", 0x80, 0, 1, 160, 0x11223344) + bytes(160),
    # CSRC, extension (RFC 8285 one-byte), padding
    struct.pack("!BBHIII", 0xB1, 0x60, 2, 320, 1, 2)
    + struct.pack("!HH", 0xBEDE, 1)
    + b"\x10\x01\x00\x00"
    + bytes(20)
    + b"\x00\x00\x00\x04",
)
XR_VOIP = struct.pack("!BBHI", 0x80, 207, 10, 0x11111111) + struct.pack("!BBH", 7, 0, 8) + bytes(32)


def test_rtp_and_rtcp_headers() -> None:
    fuzz("rtp header", parse_rtp_header_untrusted, RTP, (RtpParseError,))
    fuzz("rtcp header", parse_rtcp_header_untrusted, (SR, RR + SDES), (RtpParseError,))


def test_rtcp_compound_packets_and_their_report() -> None:
    def parse(data: bytes) -> None:
        rtcp.report_json(rtcp.parse_compound_untrusted(data))

    fuzz("rtcp compound", parse, (SR + SDES, RR + SDES, SR + XR_VOIP, RR), (rtcp.RtcpError,))


def test_stun_messages_and_their_attributes() -> None:
    seeds = (
        RFC5769_REQUEST,
        RFC5769_RESPONSE,
        RFC5769_REQUEST[:-8],  # without FINGERPRINT, so mutations are not all caught by the CRC
        RFC5769_RESPONSE[:-8],
    )

    def parse(data: bytes) -> None:
        if len(data) >= 4 and data[2:4] != b"\0\0":
            # Keep the length field right for most inputs, to get past the header check.
            data = data[:2] + struct.pack("!H", min(max(len(data) - 20, 0), 0xFFFF)) + data[4:]
        message = stun.parse_stun_untrusted(data)
        stun.integrity_ok(message, b"VOkJxbRl1RmTxUk/WvJxBt")
        for kind in (stun.XOR_MAPPED_ADDRESS,):
            value = message.get(kind)
            if value is not None:
                stun.parse_xor_address_untrusted(value, message.transaction_id)
        value = message.get(stun.ERROR_CODE)
        if value is not None:
            stun.parse_error_code_untrusted(value)

    fuzz("stun", parse, seeds, (stun.StunError,))


def _zrtp_message(name: str) -> bytes:
    for label, packet, *_ in EXCHANGE:
        if label == name:
            return zrtp.parse_packet_untrusted(packet).message
    raise KeyError(name)


def test_zrtp_packets_and_messages() -> None:
    # Mutate the message inside a correctly framed packet (right CRC), as an active attacker can.
    messages = [zrtp.parse_packet_untrusted(packet).message for _, packet, *_ in EXCHANGE]
    messages.append(zrtp.encode_error(0x61))
    messages.append(zrtp.message(b"Ping    ", b"1.10" + bytes(8)))

    def parse(data: bytes) -> None:
        packet = zrtp.parse_packet_untrusted(zrtp.frame(1, 0x12345678, data))
        kind = packet.message_type
        if kind == zrtp.HELLO:
            zrtp.parse_hello_untrusted(packet.message)
        elif kind == zrtp.COMMIT:
            zrtp.parse_commit_untrusted(packet.message)
        elif kind in (zrtp.DH_PART1, zrtp.DH_PART2):
            zrtp.parse_dh_part_untrusted(packet.message, kind)
        elif kind in (zrtp.CONFIRM1, zrtp.CONFIRM2):
            confirm = zrtp.parse_confirm_untrusted(packet.message, kind)
            zrtp.parse_confirm_plaintext_untrusted(confirm.encrypted)
        elif kind == zrtp.ERROR:
            zrtp.parse_error_untrusted(packet.message)
        elif kind == zrtp.PING:
            zrtp.parse_ping_untrusted(packet.message)

    fuzz("zrtp", parse, messages, (zrtp.ZrtpParseError,))
    framed = [packet for _, packet, *_ in EXCHANGE]
    fuzz("zrtp frame", zrtp.parse_packet_untrusted, framed, (zrtp.ZrtpParseError,))


def test_mikey_messages() -> None:
    def parse(data: bytes) -> None:
        message = mikey.parse_message_untrusted(data)
        for kemac in message.all(mikey.Kemac):
            mikey.parse_key_data_untrusted(kemac.encr_data)

    # The seed's TEK and salt, as bytes' repr or hex, never in an error's text.
    secrets = [repr(KEY)[2:14], KEY.hex()[:12], repr(SALT)[2:14], SALT.hex()[:12]]
    fuzz("mikey", parse, (section7_message(),), (mikey.MikeyError,), secrets=secrets)


def test_dtls_record_check() -> None:
    client_hello = (
        bytes.fromhex("16 fefd 0000 000000000000 0019")
        + bytes.fromhex("01 00000d 0000 000000 00000d")
        + bytes(13)
    )
    fuzz("dtls records", dtls_records_valid_untrusted, (client_hello, client_hello * 2), ())


def test_opus_packet_framing() -> None:
    # What the recorder reads of each Opus payload a phone sends (RFC 6716 §3.4): None, never
    # an error, for a packet that breaks the framing rules.
    seeds = (
        b"\xfc" + bytes(60),
        b"\x7d" + bytes(80),
        b"\x7e\x20" + bytes(70),
        b"\x7f\x83\x05" + bytes(40),
    )
    fuzz("opus framing", opus_samples_untrusted, seeds, ())


def test_amr_payloads() -> None:
    # What the recorder reads of each AMR or AMR-WB payload a phone sends (RFC 4867 §4.3,
    # §4.4): storage frames or None, never an error, whatever the octets; and every frame it
    # gives is one a decoder takes whole (its header's frame type and its length agree).
    tone = amr.octet_aligned_payload(bytes((7 << 3 | 4,)) + bytes(31))
    for codec in (amr.AMR, amr.AMR_WB):
        for octet_aligned in (False, True):

            def read(payload: bytes, codec: amr.AmrCodec = codec, aligned: bool = octet_aligned):
                frames = amr.frames_untrusted(codec, payload, octet_aligned=aligned)
                for frame in frames or ():
                    bits = codec.frame_bits((frame[0] >> 3) & 0x0F)
                    assert bits is not None and len(frame) == 1 + (bits + 7) // 8
                return frames

            seeds = (tone, tone[1:], b"\xf4" + bytes(40), b"\xf0\xbc\x3c" + bytes(62))
            fuzz(f"{codec.name} payloads", read, seeds, ())


def test_gsm_payloads() -> None:
    # What the recorder reads of each GSM payload a phone sends (RFC 3551 §4.5.8): whole
    # 33-octet frames with the 0xD signature, or GsmPayloadError; never another error.
    def read(payload: bytes) -> list[bytes]:
        frames = gsm.gsm_frames_untrusted(payload)
        assert all(len(frame) == 33 and frame[0] >> 4 == 0xD for frame in frames)
        return frames

    frame = b"\xd8" + bytes(32)
    fuzz("gsm payloads", read, (frame, frame * 2, frame * 3), (gsm.GsmPayloadError,))
