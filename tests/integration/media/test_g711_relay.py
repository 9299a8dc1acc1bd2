"""The relay transcodes G.711 per direction (DirectionControl.transcoding): a PCMU phone and
a PCMA phone hear each other, the samples through the table and the payload type rewritten,
marker bit kept; telephone-event, comfort noise and RTCP pass unchanged; on SRTP legs between
unprotect and protect, so each phone authenticates what it gets (RFC 3711 §3.1). Taps see
leg A's law both ways. A direction without a transcoding is built as before.

Real UDP sockets on 127.0.0.1: the relay allocates from RELAY_PORTS, the phones from PHONE_PORTS
(blocks of this process, tests/port_blocks.py).
"""

from __future__ import annotations

import struct

import pytest

from gateway.core.config import PortRange
from gateway.core.media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW, G711Transcoding, Law
from gateway.core.media.relay import Direction, MediaStream
from tests.integration.media.phone_sockets import Phone, receiver_report
from tests.integration.media.relay_fixtures import SUITES, bridge, in_process_fixtures
from tests.port_blocks import ModuleBlock

RELAY_PORTS = ModuleBlock(100, parse=PortRange.parse)
PHONE_PORTS = ModuleBlock(100, parse=PortRange.parse)

SAMPLES = bytes(range(0, 256, 2)) + bytes(range(1, 256, 8))  # 160 octets: 20 ms
EVENT = b"\x01\x0a\x00\xa0"  # RFC 4733: digit 1, 160 samples


def rtp(sequence: int, payload_type: int, payload: bytes, *, marker: bool = False) -> bytes:
    second = payload_type | (0x80 if marker else 0)
    return struct.pack("!BBHII", 0x80, second, sequence, 160 * sequence, 0xA11CE) + payload


relay, stream, phones = in_process_fixtures(RELAY_PORTS, PHONE_PORTS)


def transcode(stream: MediaStream) -> None:
    """A (the caller) speaks PCMU 0, B (the carrier) PCMA 8."""
    stream.a_to_b.transcoding = G711Transcoding(Law.PCMU, 0, 8)
    stream.b_to_a.transcoding = G711Transcoding(Law.PCMA, 8, 0)


@pytest.mark.parametrize(("a_suite", "b_suite"), SUITES)
async def test_each_phone_hears_its_own_law(
    stream: MediaStream, phones: tuple[Phone, Phone], a_suite: str | None, b_suite: str | None
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=a_suite, b_suite=b_suite)
    transcode(stream)
    a_port, b_port = stream.a.ports.rtp_port, stream.b.ports.rtp_port
    await alice.send(rtp(1, 0, SAMPLES, marker=True), a_port)
    assert (await bob.receive())[1] == rtp(1, 8, SAMPLES.translate(ULAW_TO_ALAW), marker=True)
    await alice.send(rtp(2, 101, EVENT), a_port)  # telephone-event: unchanged
    assert (await bob.receive())[1] == rtp(2, 101, EVENT)
    await alice.send(rtp(3, 13, b"\x40"), a_port)  # RFC 3389 comfort noise: unchanged
    assert (await bob.receive())[1] == rtp(3, 13, b"\x40")
    await bob.send(rtp(1, 8, SAMPLES), b_port)
    assert (await alice.receive())[1] == rtp(1, 0, SAMPLES.translate(ALAW_TO_ULAW))
    # RTCP counts octets, which one octet a sample leaves as they were: passed as it is.
    await alice.send(receiver_report(), stream.a.ports.rtcp_port, rtcp=True)
    assert (await bob.receive(rtcp=True))[1] == receiver_report()
    a_to_b, b_to_a = stream.a_to_b.statistics(), stream.b_to_a.statistics()
    assert (a_to_b.transcoded_packets, a_to_b.rtp_packets, a_to_b.dropped) == (1, 3, 0)
    assert (b_to_a.transcoded_packets, b_to_a.rtp_packets, b_to_a.dropped) == (1, 1, 0)


async def test_taps_see_leg_a_law_both_ways(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite="AES_CM_128_HMAC_SHA1_80", b_suite=None)
    transcode(stream)
    seen: list[tuple[Direction, bytes]] = []
    for control in (stream.a_to_b, stream.b_to_a):
        control.add_tap(lambda direction, packet: seen.append((direction, packet)))
    await alice.send(rtp(1, 0, SAMPLES), stream.a.ports.rtp_port)
    assert (await bob.receive())[1] == rtp(1, 8, SAMPLES.translate(ULAW_TO_ALAW))
    await bob.send(rtp(1, 8, SAMPLES), stream.b.ports.rtp_port)
    assert (await alice.receive())[1] == rtp(1, 0, SAMPLES.translate(ALAW_TO_ULAW))
    assert seen == [
        (Direction.A_TO_B, rtp(1, 0, SAMPLES)),
        (Direction.B_TO_A, rtp(1, 0, SAMPLES.translate(ALAW_TO_ULAW))),
    ]


async def test_transcoding_with_renumbering_and_without_it_the_route_is_as_before(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    route = stream.a._rtp.rtp  # type: ignore[attr-defined]
    await alice.send(rtp(1, 0, SAMPLES), stream.a.ports.rtp_port)
    assert (await bob.receive())[1] == rtp(1, 0, SAMPLES)
    assert route.plain
    transcode(stream)
    stream.a_to_b.payload_types = {101: 96}  # DTMF renumbered as well (a picker's numbers)
    await alice.send(rtp(2, 0, SAMPLES), stream.a.ports.rtp_port)
    assert (await bob.receive())[1] == rtp(2, 8, SAMPLES.translate(ULAW_TO_ALAW))
    await alice.send(rtp(3, 101, EVENT), stream.a.ports.rtp_port)
    assert (await bob.receive())[1] == rtp(3, 96, EVENT)
    assert not route.plain and route.in_place
    stream.a_to_b.transcoding = None
    stream.a_to_b.payload_types = {}
    await alice.send(rtp(4, 0, SAMPLES), stream.a.ports.rtp_port)
    assert (await bob.receive())[1] == rtp(4, 0, SAMPLES)
    assert route.plain and route.step_in is None and route.step_out is None
    assert stream.a_to_b.statistics().transcoded_packets == 1  # kept across rebuilds
