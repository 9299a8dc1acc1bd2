"""SrtpTransform in place on a relay buffer (in_buffer, in_buffer_then) against calling the
transforms with bytes: the same packets out, the same drops, the same counters.

Each test builds two identical gateway sessions (same keys): one is driven through the bytes
path, the other through the in-place path, with the same packets, including tampered ones,
replays, an SSRC beyond the limit and a packet too long for the buffer. SRTP protection is
deterministic for given keys and packet, so outputs compare byte for byte.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.interfaces import SrtpKeys
from gateway.core.media.relay import TRANSFORM_ROOM
from gateway.core.media.srtp import (
    PYTHON_SUITES,
    SUITES,
    SUPPORTED_SUITES,
    TRAILER_ROOM,
    SrtpSession,
    SrtpStatistics,
)

LIBSRTP_SUITES = [name for name in SUPPORTED_SUITES if name not in PYTHON_SUITES]
BUFFER = 2048  # what the tests' relay buffer holds before TRANSFORM_ROOM


def key_for(name: str, seed: int) -> bytes:
    return bytes((seed * 31 + i * 5 + 3) & 0xFF for i in range(SUITES[name].key_salt_length))


def keys(name: str, ours: int, theirs: int) -> SrtpKeys:
    return SrtpKeys(name, local_key=key_for(name, ours), remote_key=key_for(name, theirs))


def rtp(sequence: int, ssrc: int = 0x1234ABCD, size: int = 160) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence & 0xFFFF, 160 * sequence, ssrc) + bytes(
        (sequence + i) & 0xFF for i in range(size)
    )


def rtcp_rr(ssrc: int = 0x1234ABCD) -> bytes:
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + struct.pack("!IIIIII", 7, 0, 1, 2, 3, 4)


def run_in(step: object, buffer: bytearray, packet: bytes) -> bytes | None:
    """What the relay does: the packet at the start of its buffer, the step, the result."""
    assert callable(step)
    buffer[: len(packet)] = packet
    size = step(len(packet))
    return None if size < 0 else bytes(buffer[:size])


def phone_traffic(name: str) -> list[bytes]:
    """What a phone sends under key 2 (the gateway's remote key): in order, a replay, a
    tampered tag, a second SSRC, a third SSRC (over a limit of 2), an oversized packet."""
    phone = SrtpSession(keys(name, 2, 1))
    packets = [phone.protect_rtp(rtp(n)) for n in range(5)]
    assert all(p is not None for p in packets)
    out = [p for p in packets if p is not None]
    out.append(out[2])  # replay
    fresh = phone.protect_rtp(rtp(5))
    assert fresh is not None
    tampered = bytearray(fresh)
    tampered[-1] ^= 1
    out.append(bytes(tampered))
    for ssrc in (0x2222, 0x3333):
        packet = phone.protect_rtp(rtp(9, ssrc=ssrc))
        assert packet is not None
        out.append(packet)
    big = phone.protect_rtp(rtp(10, size=BUFFER))  # longer than the buffer's packet room
    assert big is not None
    out.append(big)
    out.append(b"\x80\x00")  # too short for an SSRC
    return out


@pytest.mark.parametrize("name", LIBSRTP_SUITES)
def test_unprotect_in_place_matches_the_bytes_path(name: str) -> None:
    by_call = SrtpSession(keys(name, 1, 2), max_ssrcs=2)
    in_place = SrtpSession(keys(name, 1, 2), max_ssrcs=2)
    buffer = bytearray(BUFFER + TRANSFORM_ROOM)
    step = in_place.unprotect_rtp.in_buffer(buffer)
    assert step is not None
    results = []
    for packet in phone_traffic(name):
        if len(packet) > BUFFER:
            continue  # longer than the relay's buffer room: the next test
        expected = by_call.unprotect_rtp(packet)
        assert run_in(step, buffer, packet) == expected
        results.append(expected is not None)
    # 5 in order; a replay, a tampered tag; SSRC 2 of 2; SSRC 3 and a stub over the limit.
    assert results == [True] * 5 + [False, False, True, False, False]
    assert by_call.statistics() == in_place.statistics()
    assert in_place.statistics() == SrtpStatistics(
        protected=0, unprotected=6, auth_failures=1, replays=1, ssrc_limit=2, other_errors=0
    )


@pytest.mark.parametrize("name", LIBSRTP_SUITES)
def test_a_packet_longer_than_the_buffer_room_is_dropped_as_other(name: str) -> None:
    session = SrtpSession(keys(name, 1, 2))
    buffer = bytearray(200 + TRAILER_ROOM)
    step = session.protect_rtp.in_buffer(buffer)
    assert step is not None
    assert step(201) == -1
    assert session.statistics().other_errors == 1
    assert run_in(step, buffer, rtp(1, size=188)) is not None  # 200 octets: fits


@pytest.mark.parametrize(
    "a_name,b_name",
    [
        ("AES_CM_128_HMAC_SHA1_80", "AEAD_AES_128_GCM"),
        ("AEAD_AES_256_GCM", "AES_256_CM_HMAC_SHA1_32"),
    ],
)
def test_unprotect_then_protect_in_one_call_matches_two_calls(a_name: str, b_name: str) -> None:
    # Leg A's session unprotects what phone A sends, leg B's protects it towards phone B.
    a_calls, b_calls = SrtpSession(keys(a_name, 1, 2), max_ssrcs=2), SrtpSession(keys(b_name, 3, 4))
    a_fused, b_fused = SrtpSession(keys(a_name, 1, 2), max_ssrcs=2), SrtpSession(keys(b_name, 3, 4))
    buffer = bytearray(BUFFER + TRANSFORM_ROOM)
    both = a_fused.unprotect_rtp.in_buffer_then(b_fused.protect_rtp, buffer)
    assert both is not None
    forwarded = 0
    for packet in phone_traffic(a_name):
        if len(packet) > BUFFER:
            continue
        plain = a_calls.unprotect_rtp(packet)
        expected = b_calls.protect_rtp(plain) if plain is not None else None
        got = run_in(both, buffer, packet)
        assert got == expected
        forwarded += got is not None
    assert forwarded == 6
    assert a_calls.statistics() == a_fused.statistics()
    assert b_calls.statistics() == b_fused.statistics()


def test_fusing_needs_two_libsrtp_transforms_of_the_same_packet_kind() -> None:
    a = SrtpSession(keys("AES_CM_128_HMAC_SHA1_80", 1, 2))
    b = SrtpSession(keys("AEAD_AES_128_GCM", 3, 4))
    buffer = bytearray(BUFFER + TRANSFORM_ROOM)
    assert a.unprotect_rtp.in_buffer_then(b.protect_rtcp, buffer) is None  # RTP then RTCP
    assert a.unprotect_rtp.in_buffer_then(lambda p: p, buffer) is None
    assert a.unprotect_rtcp.in_buffer_then(b.protect_rtcp, buffer) is not None


def test_srtcp_in_place_matches_the_bytes_path() -> None:
    name = "AES_CM_128_HMAC_SHA1_80"
    phone = SrtpSession(keys(name, 2, 1))
    by_call, in_place = SrtpSession(keys(name, 1, 2)), SrtpSession(keys(name, 1, 2))
    buffer = bytearray(BUFFER + TRANSFORM_ROOM)
    step = in_place.unprotect_rtcp.in_buffer(buffer)
    for _ in range(3):
        srtcp = phone.protect_rtcp(rtcp_rr())
        assert srtcp is not None
        assert run_in(step, buffer, srtcp) == by_call.unprotect_rtcp(srtcp) == rtcp_rr()


@pytest.mark.parametrize("name", sorted(PYTHON_SUITES))
def test_python_suites_do_not_work_in_place(name: str) -> None:
    session = SrtpSession(keys(name, 1, 2))
    buffer = bytearray(BUFFER + TRANSFORM_ROOM)
    assert session.protect_rtp.in_buffer(buffer) is None
    other = SrtpSession(keys("AES_CM_128_HMAC_SHA1_80", 1, 2))
    assert session.unprotect_rtp.in_buffer_then(other.protect_rtp, buffer) is None


def test_a_closed_session_drops_in_place_too() -> None:
    session = SrtpSession(keys("AEAD_AES_128_GCM", 1, 2))
    buffer = bytearray(BUFFER + TRANSFORM_ROOM)
    step = session.protect_rtp.in_buffer(buffer)
    assert run_in(step, buffer, rtp(1)) is not None
    session.close()
    assert run_in(step, buffer, rtp(2)) is None
    assert session.statistics().other_errors == 1


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_untrusted_bytes_in_place_never_raise_and_match_the_bytes_path(data: bytes) -> None:
    name = "AES_CM_128_HMAC_SHA1_32"
    by_call, in_place = SrtpSession(keys(name, 1, 2)), SrtpSession(keys(name, 1, 2))
    buffer = bytearray(BUFFER + TRANSFORM_ROOM)
    step = in_place.unprotect_rtp.in_buffer(buffer)
    assert run_in(step, buffer, data) == by_call.unprotect_rtp(data)
    assert by_call.statistics() == in_place.statistics()
