"""The relay renumbers RTP payload types per direction (DirectionControl.payload_types): the
second octet through a table, marker bit kept, RTCP untouched; on SRTP legs between unprotect and
protect, so the receiving phone authenticates the rewritten header (RFC 3711 §3.1). Taps see leg
A's numbers both ways. A direction without a renumbering is built as before (a plain route).

Real UDP sockets on 127.0.0.1: the relay allocates from RELAY_PORTS, the phones from PHONE_PORTS
(blocks of this process, tests/port_blocks.py).
"""

from __future__ import annotations

import struct

import pytest

from gateway.core.config import PortRange
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.relay import Direction, MediaStream
from tests.integration.media.phone_sockets import Phone, receiver_report
from tests.integration.media.relay_fixtures import SUITES, bridge, in_process_fixtures
from tests.port_blocks import ModuleBlock

RELAY_PORTS = ModuleBlock(100, parse=PortRange.parse)
PHONE_PORTS = ModuleBlock(100, parse=PortRange.parse)


def rtp(sequence: int, payload_type: int, *, marker: bool = False, ssrc: int = 0xA11CE) -> bytes:
    """RTP (RFC 3550 §5.1); a 4-octet payload, as an RFC 4733 event is."""
    second = payload_type | (0x80 if marker else 0)
    return struct.pack("!BBHII", 0x80, second, sequence, 160 * sequence, ssrc) + b"\x01\x0a\x00\xa0"


relay, stream, phones = in_process_fixtures(RELAY_PORTS, PHONE_PORTS)


def renumber_dtmf(stream: MediaStream) -> None:
    """The caller (A) numbers telephone-event 101, the picker (B) 96."""
    stream.a_to_b.payload_types = {101: 96}
    stream.b_to_a.payload_types = {96: 101}


@pytest.mark.parametrize(("a_suite", "b_suite"), SUITES)
async def test_each_direction_gets_the_receivers_numbers(
    stream: MediaStream, phones: tuple[Phone, Phone], a_suite: str | None, b_suite: str | None
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=a_suite, b_suite=b_suite)
    renumber_dtmf(stream)
    a_port, b_port = stream.a.ports.rtp_port, stream.b.ports.rtp_port
    # The event's first packet has the marker bit (RFC 4733 §2.5.1.2): it stays set.
    await alice.send(rtp(1, 101, marker=True), a_port)
    assert (await bob.receive())[1] == rtp(1, 96, marker=True)
    await alice.send(rtp(2, 101), a_port)
    assert (await bob.receive())[1] == rtp(2, 96)
    await alice.send(rtp(3, 0), a_port)  # PCMU: not renumbered
    assert (await bob.receive())[1] == rtp(3, 0)
    await bob.send(rtp(1, 96, marker=True, ssrc=0xB0B), b_port)
    assert (await alice.receive())[1] == rtp(1, 101, marker=True, ssrc=0xB0B)
    await bob.send(rtp(2, 101, ssrc=0xB0B), b_port)  # not B's number for anything: unchanged
    assert (await alice.receive())[1] == rtp(2, 101, ssrc=0xB0B)
    # RTCP has no payload type: its packet type 200-204 is not RTP's second octet to rewrite.
    await alice.send(receiver_report(), stream.a.ports.rtcp_port, rtcp=True)
    assert (await bob.receive(rtcp=True))[1] == receiver_report()
    assert stream.a_to_b.statistics().dropped_transform == 0
    assert stream.b_to_a.statistics().dropped_transform == 0


@pytest.mark.parametrize(("a_suite", "b_suite"), SUITES)
async def test_taps_see_leg_a_numbers_both_ways(
    stream: MediaStream, phones: tuple[Phone, Phone], a_suite: str | None, b_suite: str | None
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=a_suite, b_suite=b_suite)
    renumber_dtmf(stream)
    seen: list[tuple[Direction, bytes]] = []
    for control in (stream.a_to_b, stream.b_to_a):
        control.add_tap(lambda direction, packet: seen.append((direction, packet)))
    await alice.send(rtp(1, 101), stream.a.ports.rtp_port)
    assert (await bob.receive())[1] == rtp(1, 96)  # the tapped (bytes) path renumbers too
    await bob.send(rtp(1, 96, ssrc=0xB0B), stream.b.ports.rtp_port)
    assert (await alice.receive())[1] == rtp(1, 101, ssrc=0xB0B)
    assert seen == [(Direction.A_TO_B, rtp(1, 101)), (Direction.B_TO_A, rtp(1, 101, ssrc=0xB0B))]


async def test_without_a_renumbering_the_route_is_built_as_before(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    renumber_dtmf(stream)
    await alice.send(rtp(1, 101), stream.a.ports.rtp_port)
    assert (await bob.receive())[1] == rtp(1, 96)
    route = stream.a._rtp.rtp  # type: ignore[attr-defined]
    assert not route.plain and route.in_place  # one step on the receive buffer
    stream.a_to_b.payload_types = {}
    await alice.send(rtp(2, 101), stream.a.ports.rtp_port)
    assert (await bob.receive())[1] == rtp(2, 101)
    assert route.plain and route.step_in is None and route.step_out is None
    assert stream.a_to_b.payload_types == {}
    assert stream.b_to_a.payload_types == {96: 101}


async def test_srtp_to_srtp_is_not_fused_while_renumbering(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite="AES_CM_128_HMAC_SHA1_80", b_suite="AES_CM_128_HMAC_SHA1_80")
    await alice.send(rtp(1, 101), stream.a.ports.rtp_port)
    await bob.receive()
    route = stream.a._rtp.rtp  # type: ignore[attr-defined]
    assert route.step_fused  # unprotect and protect in one call, as before
    renumber_dtmf(stream)
    await alice.send(rtp(2, 101), stream.a.ports.rtp_port)
    assert (await bob.receive())[1] == rtp(2, 96)
    assert route.in_place and not route.step_fused


async def test_numbers_outside_0_127_are_refused(stream: MediaStream) -> None:
    with pytest.raises(LocalMediaError):
        stream.a_to_b.payload_types = {101: 128}
    with pytest.raises(LocalMediaError):
        stream.a_to_b.payload_types = {-1: 96}
    assert stream.a_to_b.payload_types == {}


# -- RFC 2198 RED: the blocks' payload types go through the same table -------------------------


def red(sequence: int, red_type: int, block_type: int, *, ssrc: int = 0xA11CE) -> bytes:
    """RED (RFC 2198 §3): one redundant block (F=1, offset 960, 3 octets), then the primary."""
    header = struct.pack("!BBHII", 0x80, red_type, sequence, 960 * sequence, ssrc)
    blocks = bytes([0x80 | block_type, 0x0F, 0x00, 0x03, block_type])
    return header + blocks + b"\xaa\xbb\xcc" + b"\x01\x02\x03\x04"


def renumber_red(stream: MediaStream) -> None:
    """A browser (A: Opus 111, RED 63) and a phone (B: Opus 109, RED 121)."""
    stream.a_to_b.payload_types = {111: 109, 63: 121}
    stream.a_to_b.red_payload_types = (63,)
    stream.b_to_a.payload_types = {109: 111, 121: 63}
    stream.b_to_a.red_payload_types = (121,)


@pytest.mark.parametrize(("a_suite", "b_suite"), SUITES)
async def test_red_blocks_arrive_in_the_receivers_numbers(
    stream: MediaStream, phones: tuple[Phone, Phone], a_suite: str | None, b_suite: str | None
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=a_suite, b_suite=b_suite)
    renumber_red(stream)
    a_port, b_port = stream.a.ports.rtp_port, stream.b.ports.rtp_port
    await alice.send(red(1, 63, 111), a_port)
    assert (await bob.receive())[1] == red(1, 121, 109)
    await bob.send(red(1, 121, 109, ssrc=0xB0B), b_port)
    assert (await alice.receive())[1] == red(1, 63, 111, ssrc=0xB0B)
    # A RED packet whose last block header is missing: dropped, counted as malformed.
    await alice.send(red(2, 63, 111)[:16], a_port)
    await alice.send(rtp(3, 111), a_port)  # plain Opus after it: the second octet only
    assert (await bob.receive())[1] == rtp(3, 109)
    stats = stream.a_to_b.statistics()
    assert (stats.dropped_malformed, stats.dropped_transform) == (1, 0)


async def test_red_through_a_tapped_direction(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    renumber_red(stream)
    seen: list[bytes] = []
    stream.b_to_a.add_tap(lambda _direction, packet: seen.append(packet))
    await bob.send(red(1, 121, 109, ssrc=0xB0B), stream.b.ports.rtp_port)
    assert (await alice.receive())[1] == red(1, 63, 111, ssrc=0xB0B)
    assert seen == [red(1, 63, 111, ssrc=0xB0B)]  # taps see leg A's numbers, blocks too


async def test_red_without_a_renumbering_changes_nothing(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    stream.a_to_b.red_payload_types = (63,)
    await alice.send(red(1, 63, 111), stream.a.ports.rtp_port)
    assert (await bob.receive())[1] == red(1, 63, 111)
    route = stream.a._rtp.rtp  # type: ignore[attr-defined]
    assert route.plain  # RED alone builds nothing: the direction renumbers nothing
    with pytest.raises(LocalMediaError):
        stream.a_to_b.red_payload_types = (128,)
    assert stream.a_to_b.red_payload_types == (63,)
