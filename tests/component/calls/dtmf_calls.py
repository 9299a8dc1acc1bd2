"""The B2BUA call, audio and telephone-event RTP of the in-memory DTMF interworking tests: moved
here from test_dtmf_interworking_call.py so that no test module imports another."""

from __future__ import annotations

import struct

from gateway.core.calls.call import Call as GatewayCall
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.component.calls.b2bua_env import B2bua


def rtp(
    sequence: int,
    payload_type: int,
    ssrc: int,
    payload: bytes,
    *,
    marker: bool = False,
    timestamp: int | None = None,
) -> bytes:
    second = payload_type | (0x80 if marker else 0)
    ts = 160 * sequence if timestamp is None else timestamp
    return struct.pack("!BBHII", 0x80, second, sequence, ts, ssrc) + payload


def audio(sequence: int, ssrc: int) -> bytes:
    return rtp(sequence, 0, ssrc, b"\xd5" * 160)


def fields(packet: bytes) -> tuple[bool, int, int, int, int]:
    second, sequence, timestamp, ssrc = struct.unpack("!xBHII", packet[:12])
    return bool(second & 0x80), second & 0x7F, sequence, timestamp, ssrc


def telephone_events(body: bytes) -> list[str]:
    return [
        v
        for v in parse_sdp_untrusted(body).media[0].attributes.values("rtpmap")
        if "telephone-event" in v
    ]


def b2bua_call(env: B2bua) -> GatewayCall:
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    return call
