"""DTMF interworking in the relay (DirectionControl.dtmf): a direction from the RFC 4733 leg
takes its telephone-event packets (not forwarded, handed on plain) and closes the sequence
gap they leave; a direction towards it injects event packets that continue the sequence and
SSRC the receiver hears, protected with its leg's SRTP keys like every other packet. A
direction without interworking is built as before.

Real UDP sockets on 127.0.0.1: the relay allocates from RELAY_PORTS, the phones from PHONE_PORTS
(blocks of this process, tests/port_blocks.py).
"""

from __future__ import annotations

import struct

import pytest

from gateway.core.config import PortRange
from gateway.core.media.dtmf import event_payload
from gateway.core.media.relay import DtmfInterworking, MediaStream
from tests.integration.media.phone_sockets import Phone
from tests.integration.media.relay_fixtures import SUITES, bridge, in_process_fixtures
from tests.port_blocks import ModuleBlock

RELAY_PORTS = ModuleBlock(100, parse=PortRange.parse)
PHONE_PORTS = ModuleBlock(100, parse=PortRange.parse)


def rtp(sequence: int, payload_type: int, payload: bytes = b"\xff" * 20, **kw: int) -> bytes:
    ssrc = kw.get("ssrc", 0xA11CE)
    timestamp = kw.get("timestamp", 160 * sequence)
    second = payload_type | (0x80 if kw.get("marker") else 0)
    return struct.pack("!BBHII", 0x80, second, sequence, timestamp, ssrc) + payload


def fields(packet: bytes) -> tuple[bool, int, int, int, int]:
    """(marker, payload type, sequence, timestamp, SSRC) of a plain RTP packet."""
    second, sequence, timestamp, ssrc = struct.unpack("!xBHII", packet[:12])
    return bool(second & 0x80), second & 0x7F, sequence, timestamp, ssrc


relay, stream, phones = in_process_fixtures(RELAY_PORTS, PHONE_PORTS)


@pytest.mark.parametrize(("a_suite", "b_suite"), SUITES)
async def test_events_from_the_rfc4733_leg_are_taken_and_the_gap_closed(
    stream: MediaStream, phones: tuple[Phone, Phone], a_suite: str | None, b_suite: str | None
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=a_suite, b_suite=b_suite)
    taken: list[bytes] = []
    stream.a_to_b.dtmf = DtmfInterworking(take_payload_type=101, on_event=taken.append)
    port = stream.a.ports.rtp_port
    await alice.send(rtp(1, 0), port)
    assert fields((await bob.receive())[1])[2] == 1
    event = rtp(2, 101, event_payload(5, end=False, duration=400), marker=1, timestamp=320)
    await alice.send(event, port)
    await alice.send(rtp(3, 101, event_payload(5, end=True, duration=800), timestamp=320), port)
    await alice.send(rtp(4, 0), port)
    # The next packet Bob hears is the audio, numbered on from 1: no gap, no event.
    assert (await bob.receive())[1] == rtp(2, 0, timestamp=640)
    assert taken[0] == event  # plain: after SRTP unprotect
    assert len(taken) == 2
    statistics = stream.a_to_b.statistics()
    assert statistics.dropped_transform == 0  # taken for INFO, not lost
    assert stream.a_to_b.dtmf is not None and stream.a_to_b.dtmf.taken == 2
    # Interworking off: the direction relays as it did before (seq as sent).
    stream.a_to_b.dtmf = None
    await alice.send(rtp(5, 101, event_payload(1, end=False, duration=1)), port)
    assert fields((await bob.receive())[1])[1:3] == (101, 5)
    assert stream.a_to_b.statistics().dropped_transform == 0


@pytest.mark.parametrize(("a_suite", "b_suite"), SUITES)
async def test_injected_events_continue_the_stream_towards_the_rfc4733_leg(
    stream: MediaStream, phones: tuple[Phone, Phone], a_suite: str | None, b_suite: str | None
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=a_suite, b_suite=b_suite)
    # Alice (leg A) has telephone-event 101; Bob's digits come as INFO and go to her as events.
    stream.b_to_a.dtmf = DtmfInterworking(
        inject_payload_type=101, inject_clock_rate=8000, ssrc=0x5EED
    )
    port = stream.b.ports.rtp_port
    await bob.send(rtp(100, 8, ssrc=0xB0B), port)
    assert fields((await alice.receive())[1])[2] == 100
    start = event_payload(7, end=False, duration=400)
    assert stream.send_telephone_event("b_to_a", start, marker=True, start=True)
    wire, plain = await alice.receive()
    marker, payload_type, sequence, timestamp, ssrc = fields(plain)
    assert (marker, payload_type, sequence, ssrc) == (True, 101, 101, 0xB0B)
    assert 16000 <= timestamp < 16000 + 8000  # the audio's clock, advanced to now
    assert plain[12:] == start
    if a_suite is not None:
        assert wire != plain  # protected with leg A's keys (the phone unprotected it)
    end = event_payload(7, end=True, duration=1280)
    assert stream.send_telephone_event("b_to_a", end, marker=False, start=False)
    _, plain = await alice.receive()
    assert fields(plain) == (False, 101, 102, timestamp, 0xB0B)
    # Bob's audio goes on after the two injected packets.
    await bob.send(rtp(101, 8, ssrc=0xB0B), port)
    assert fields((await alice.receive())[1])[1:3] == (8, 103)
    assert stream.b_to_a.dtmf is not None and stream.b_to_a.dtmf.injected == 2
    # The other direction injects nothing.
    assert not stream.send_telephone_event("a_to_b", start, marker=True, start=True)


async def test_injection_before_any_media_uses_its_own_ssrc(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    stream.b_to_a.dtmf = DtmfInterworking(inject_payload_type=96, inject_clock_rate=48000, ssrc=7)
    assert stream.send_telephone_event(
        "b_to_a", event_payload(1, end=True, duration=1), marker=True, start=True
    )
    _, plain = await alice.receive()
    assert fields(plain)[0:3] == (True, 96, 0) and fields(plain)[4] == 7


async def test_blocked_direction_injects_nothing(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    stream.b_to_a.dtmf = DtmfInterworking(inject_payload_type=101)
    stream.b_to_a.blocked = True  # no keys yet on a leg that requires them
    assert not stream.send_telephone_event("b_to_a", b"\x01\x0a\x00\x00", marker=True, start=True)


async def test_without_interworking_the_route_is_built_as_before(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    await alice.send(rtp(1, 101), stream.a.ports.rtp_port)
    await bob.receive()
    route = stream.a._rtp.rtp  # type: ignore[attr-defined]
    assert route.plain
    stream.a_to_b.dtmf = DtmfInterworking(take_payload_type=101)
    await alice.send(rtp(2, 0), stream.a.ports.rtp_port)
    await bob.receive()
    assert not route.plain and not route.in_place  # its own (bytes) path
    stream.a_to_b.dtmf = None
    await alice.send(rtp(3, 0), stream.a.ports.rtp_port)
    await bob.receive()
    assert route.plain


@pytest.mark.parametrize(("a_suite", "b_suite"), SUITES[:2])
async def test_events_inside_red_are_taken_and_handed_on_plain(
    stream: MediaStream, phones: tuple[Phone, Phone], a_suite: str | None, b_suite: str | None
) -> None:
    # RFC 4733 §2.5.1.5: two events packed as RFC 2198 RED blocks (RED 100: digit 5 ended 160
    # ticks earlier as a redundant block, digit 7 primary). The RED packet is taken, each
    # event handed on as the plain telephone-event packet it stands for; audio goes on.
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=a_suite, b_suite=b_suite)
    taken: list[bytes] = []
    stream.a_to_b.dtmf = DtmfInterworking(
        take_payload_type=101, on_event=taken.append, red_payload_types=(100,)
    )
    port = stream.a.ports.rtp_port
    await alice.send(rtp(1, 0), port)
    assert fields((await bob.receive())[1])[2] == 1
    route = stream.a._rtp.rtp  # type: ignore[attr-defined]
    assert type(route.transform_in).__name__ == "_DtmfInRed"
    end_5 = event_payload(5, end=True, duration=160)
    start_7 = event_payload(7, end=False, duration=160)
    blocks = bytes((0x80 | 101,)) + (160 << 10 | 4).to_bytes(3, "big") + bytes((101,))
    await alice.send(rtp(2, 100, blocks + end_5 + start_7, timestamp=480), port)
    await alice.send(rtp(3, 0, timestamp=640), port)
    assert (await bob.receive())[1] == rtp(2, 0, timestamp=640)
    assert taken == [
        rtp(2, 101, end_5, timestamp=320),
        rtp(2, 101, start_7, timestamp=480),
    ]
    assert stream.a_to_b.dtmf is not None and stream.a_to_b.dtmf.taken == 1
    assert stream.a_to_b.statistics().dropped_transform == 0
    # Without RED numbers the direction is built with the plain transform.
    stream.a_to_b.dtmf = DtmfInterworking(take_payload_type=101, on_event=taken.append)
    await alice.send(rtp(4, 0, timestamp=800), port)
    await bob.receive()
    assert type(route.transform_in).__name__ == "_DtmfIn"
