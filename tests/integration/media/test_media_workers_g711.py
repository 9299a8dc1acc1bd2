"""G.711 transcoding in a media worker (SetTranscoding): the worker's relay converts a PCMU
leg's samples for a PCMA leg and back, between SRTP unprotect and protect; its transcoded
packets come back in the pushed statistics; off again, packets pass unchanged. Two real
worker processes on 127.0.0.1 (PORTS, tests/port_blocks.py); the phones bind ephemeral
ports."""

from __future__ import annotations

import struct

import pylibsrtp

from gateway.core.config import PortRange
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW, G711Transcoding, Law
from gateway.core.media.keying import StreamKeys
from gateway.core.media.remote_relay import WorkerPool
from tests.integration.media.phone_sockets import ephemeral_phones, eventually
from tests.integration.media.relay_fixtures import (
    GATEWAY_KEY_TO_B,
    PHONE_B_KEY,
    SUITE,
    connected,
    worker_pool_fixture,
)
from tests.port_blocks import ModuleBlock

PORTS = ModuleBlock(40, parse=PortRange.parse)
SAMPLES = bytes(range(0, 256, 2)) + bytes(range(1, 256, 8))  # 160 octets: 20 ms


pool = worker_pool_fixture(PORTS)


def rtp(sequence: int, payload_type: int, ssrc: int, payload: bytes) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type, sequence, 160 * sequence, ssrc) + payload


async def test_a_worker_transcodes_both_ways_over_srtp(pool: WorkerPool) -> None:
    a, b = await ephemeral_phones(2)
    stream = pool.open_stream()
    await connected(pool, stream, a, b)
    # Leg A: PCMU, plain RTP; leg B: PCMA, SRTP.
    b_keys = SrtpKeys(SUITE, local_key=GATEWAY_KEY_TO_B, remote_key=PHONE_B_KEY)
    stream.apply_keys(StreamKeys(None, b_keys, blocked=False))
    stream.a_to_b.transcoding = G711Transcoding(Law.PCMU, 0, 8)
    stream.b_to_a.transcoding = G711Transcoding(Law.PCMA, 8, 0)
    await pool.sync(stream.worker)
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    b_receives = pylibsrtp.Session(
        pylibsrtp.Policy(GATEWAY_KEY_TO_B, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
    )
    b_sends = pylibsrtp.Session(
        pylibsrtp.Policy(PHONE_B_KEY, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    )
    await a.send(rtp(1, 0, 0xA11CE, SAMPLES), stream.a.ports.rtp_port)
    wire, _ = await b.receive()
    assert b_receives.unprotect(wire) == rtp(1, 8, 0xA11CE, SAMPLES.translate(ULAW_TO_ALAW))
    await b.send(b_sends.protect(rtp(1, 8, 0xB0B, SAMPLES)), stream.b.ports.rtp_port)
    assert (await a.receive())[0] == rtp(1, 0, 0xB0B, SAMPLES.translate(ALAW_TO_ULAW))
    await eventually(
        lambda: (
            stream.a_to_b.statistics().transcoded_packets == 1
            and stream.b_to_a.statistics().transcoded_packets == 1
        ),
        "transcoded packets counted",
    )
    # Off again: PCMU goes through as it is (a re-INVITE found a shared law).
    stream.a_to_b.transcoding = None
    await pool.sync(stream.worker)
    await a.send(rtp(2, 0, 0xA11CE, SAMPLES), stream.a.ports.rtp_port)
    wire, _ = await b.receive()
    assert b_receives.unprotect(wire) == rtp(2, 0, 0xA11CE, SAMPLES)
    assert stream.a_to_b.transcoding is None
    # Converting in the sender's number, the renumbering carrying it to the receiver's (a leg
    # B whose telephone-event 96 is the number leg A gives its law, transcoding.py): the
    # worker runs the two in the relay's order, conversion first.
    stream.b_to_a.transcoding = G711Transcoding(Law.PCMA, 8, 8)
    stream.b_to_a.payload_types = {96: 101, 8: 96}
    await pool.sync(stream.worker)
    await b.send(b_sends.protect(rtp(2, 8, 0xB0B, SAMPLES)), stream.b.ports.rtp_port)
    assert (await a.receive())[0] == rtp(2, 96, 0xB0B, SAMPLES.translate(ALAW_TO_ULAW))
    await b.send(b_sends.protect(rtp(3, 96, 0xB0B, b"\x01\x0a\x00\xa0")), stream.b.ports.rtp_port)
    assert (await a.receive())[0] == rtp(3, 101, 0xB0B, b"\x01\x0a\x00\xa0")
