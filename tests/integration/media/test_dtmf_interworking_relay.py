"""DTMF interworking in the relay (DirectionControl.dtmf): a direction from the RFC 4733 leg
takes its telephone-event packets (not forwarded, handed on plain) and closes the sequence
gap they leave; a direction towards it injects event packets that continue the sequence and
SSRC the receiver hears, protected with its leg's SRTP keys like every other packet. A
direction without interworking is built as before.

Real UDP sockets on 127.0.0.1: the relay allocates from RELAY_PORTS, the phones from PHONE_PORTS
(blocks of this process, tests/port_blocks.py).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

import pytest
import trio

from gateway.core.config import PortRange
from gateway.core.media import relay as relay_module
from gateway.core.media.dtmf import UPDATE_INTERVAL, event_payload
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.relay import DirectionControl, DtmfInterworking, MediaStream
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
    # Interworking off: events are relayed again, numbered on from what Bob heard (the two
    # taken packets moved his sequence; going back would repeat numbers he had: RFC 3711
    # §3.3.2 replays on an SRTP leg).
    stream.a_to_b.dtmf = None
    await alice.send(rtp(5, 101, event_payload(1, end=False, duration=1)), port)
    assert fields((await bob.receive())[1])[1:3] == (101, 3)
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


# -- across a change of the interworking (a re-INVITE, a re-key answer) ------------------------


@pytest.mark.parametrize(("a_suite", "b_suite"), SUITES)
async def test_the_sequence_offset_is_kept_across_add_remove_add(
    stream: MediaStream, phones: tuple[Phone, Phone], a_suite: str | None, b_suite: str | None
) -> None:
    """Injected events moved the numbers Alice hears up by two; when the interworking is
    removed (her re-answer dropped telephone-event) and added again, her stream goes on by one
    a packet (RFC 3550 §5.1). Going back to Bob's own numbers repeats numbers she had: her
    SRTP context drops them as replays (RFC 3711 §3.3.2; the phone's unprotect raises)."""
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=a_suite, b_suite=b_suite)
    port = stream.b.ports.rtp_port
    heard: list[int] = []

    async def audio(sequence: int) -> None:
        await bob.send(rtp(sequence, 8, ssrc=0xB0B), port)
        _, plain = await alice.receive()
        assert fields(plain)[1] == 8
        heard.append(fields(plain)[2])

    def inject() -> DtmfInterworking:
        state = DtmfInterworking(inject_payload_type=101, inject_clock_rate=8000, ssrc=1)
        stream.b_to_a.dtmf = state
        return state

    inject()
    await audio(100)
    start, end = event_payload(4, end=False, duration=160), event_payload(4, end=True, duration=320)
    assert stream.send_telephone_event("b_to_a", start, marker=True, start=True)
    assert stream.send_telephone_event("b_to_a", end, marker=False, start=False)
    assert [fields((await alice.receive())[1])[2] for _ in range(2)] == [101, 102]
    await audio(101)
    stream.b_to_a.dtmf = None  # removed
    await audio(102)
    await audio(103)
    again = inject()  # added again
    await audio(104)
    assert stream.send_telephone_event("b_to_a", start, marker=True, start=True)
    assert fields((await alice.receive())[1])[1:3] == (101, 107)
    assert again.seq_offset == 3
    await audio(105)
    assert heard == [100, 103, 104, 105, 106, 108]
    assert stream.b_to_a.statistics().dropped_transform == 0


async def test_packets_taken_keep_the_receivers_numbering_once_the_interworking_ends(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite="AES_CM_128_HMAC_SHA1_80")
    port = stream.a.ports.rtp_port
    stream.a_to_b.dtmf = DtmfInterworking(take_payload_type=101)
    await alice.send(rtp(1, 0), port)
    await alice.send(rtp(2, 101, event_payload(1, end=True, duration=160), marker=1), port)
    await alice.send(rtp(3, 0), port)
    assert [fields((await bob.receive())[1])[2] for _ in range(2)] == [1, 2]
    stream.a_to_b.dtmf = None
    await alice.send(rtp(4, 0), port)
    assert fields((await bob.receive())[1])[2] == 3  # not 4: no gap in what Bob hears
    route = stream.a._rtp.rtp  # type: ignore[attr-defined]
    assert type(route.transform_in).__name__ == "_DtmfIn"  # renumbering only, for good


async def test_without_an_offset_the_ended_interworking_leaves_the_plain_route(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    stream.a_to_b.dtmf = DtmfInterworking(take_payload_type=101)
    await alice.send(rtp(1, 0), stream.a.ports.rtp_port)
    await bob.receive()
    stream.a_to_b.dtmf = None  # nothing taken: nothing to carry
    await alice.send(rtp(2, 0), stream.a.ports.rtp_port)
    assert fields((await bob.receive())[1])[2] == 2
    assert stream.a._rtp.rtp.plain  # type: ignore[attr-defined]


@pytest.mark.parametrize("replaced", [False, True])
@pytest.mark.parametrize(("a_suite", "b_suite"), SUITES[:2])
async def test_an_event_being_injected_is_ended_when_the_interworking_changes(
    stream: MediaStream,
    phones: tuple[Phone, Phone],
    a_suite: str | None,
    b_suite: str | None,
    replaced: bool,
) -> None:
    """Bob's INFO digit 7 is being sent to Alice as events (start and one update gone) when
    the interworking is removed or replaced: its end goes to her then, RFC 4733 §2.5.1.4's
    final packet three times (E bit, volume 10, the duration reached, the event's timestamp,
    on in the sequence), not never (she would play 7 until her own timeout, §2.5.2.2)."""
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=a_suite, b_suite=b_suite)
    old = DtmfInterworking(inject_payload_type=101, inject_clock_rate=8000, ssrc=1)
    stream.b_to_a.dtmf = old
    await bob.send(rtp(10, 8, ssrc=0xB0B), stream.b.ports.rtp_port)
    await alice.receive()
    assert stream.send_telephone_event(
        "b_to_a", event_payload(7, end=False, duration=400), marker=True, start=True
    )
    assert stream.send_telephone_event(
        "b_to_a", event_payload(7, end=False, duration=800), marker=False, start=False
    )
    _, first = await alice.receive()
    await alice.receive()
    timestamp = fields(first)[3]
    new = DtmfInterworking(inject_payload_type=101, inject_clock_rate=8000) if replaced else None
    stream.b_to_a.dtmf = new
    ends = [(await alice.receive())[1] for _ in range(3)]
    for sequence, plain in enumerate(ends, start=13):
        assert fields(plain) == (False, 101, sequence, timestamp, 0xB0B)
        assert plain[12:14] == bytes((7, 0x80 | 10))  # digit 7, E, volume 10 (§2.3)
        assert int.from_bytes(plain[14:16], "big") >= 800  # the duration reached
    assert ends[0][4:] == ends[1][4:] == ends[2][4:]  # §2.5.1.4: the same final packet
    assert old.ended_at_change == 3 and old.open_event == b""
    # The rest of that digit cannot go under the new interworking (no timestamp of its own).
    late = event_payload(7, end=True, duration=1280)
    assert not stream.send_telephone_event("b_to_a", late, marker=False, start=False)
    await bob.send(rtp(11, 8, ssrc=0xB0B), stream.b.ports.rtp_port)
    assert fields((await alice.receive())[1])[1:3] == (8, 16)


@pytest.mark.parametrize("replaced", [False, True])
async def test_the_end_copies_of_an_event_ended_at_a_change_are_spaced(
    stream: MediaStream, phones: tuple[Phone, Phone], replaced: bool
) -> None:
    """RFC 4733 §2.5.1.4: the final packet is sent three times "at the interval used by the
    source for updates" (50 ms), so that one burst of loss does not take all three. The first
    goes at the change, the other two from the relay's task, numbered on in the stream the
    relayed audio continues: Bob's audio sent at the change reaches Alice between them, and
    every number comes once, in order (RFC 3550 §5.1)."""
    alice, bob = phones
    bridge(stream, alice, bob, a_suite="AES_CM_128_HMAC_SHA1_80", b_suite=None)
    old = DtmfInterworking(inject_payload_type=101, inject_clock_rate=8000, ssrc=1)
    stream.b_to_a.dtmf = old
    await bob.send(rtp(10, 8, ssrc=0xB0B), stream.b.ports.rtp_port)
    await alice.receive()
    assert stream.send_telephone_event(
        "b_to_a", event_payload(7, end=False, duration=400), marker=True, start=True
    )
    timestamp = fields((await alice.receive())[1])[3]
    new = DtmfInterworking(inject_payload_type=101, inject_clock_rate=8000) if replaced else None
    stream.b_to_a.dtmf = new
    ends: list[tuple[float, bytes]] = [(trio.current_time(), (await alice.receive())[1])]
    await bob.send(rtp(11, 8, ssrc=0xB0B), stream.b.ports.rtp_port)  # audio, at the change
    heard = []
    for _ in range(3):
        plain = (await alice.receive())[1]
        heard.append((trio.current_time(), plain))
    audio = [plain for _, plain in heard if fields(plain)[1] == 8]
    assert len(audio) == 1 and fields(audio[0])[2] == 13  # before the copies still to go
    ends += [(at, plain) for at, plain in heard if fields(plain)[1] == 101]
    assert len(ends) == 3
    for sequence, (_, plain) in zip((12, 14, 15), ends, strict=True):
        assert fields(plain) == (False, 101, sequence, timestamp, 0xB0B)
        assert plain[12:14] == bytes((7, 0x80 | 10))
    assert ends[0][1][12:] == ends[1][1][12:] == ends[2][1][12:]  # the same final packet
    # Spaced by the update interval, not back to back (the relay's sleeps last at least it).
    gaps = [later - earlier for (earlier, _), (later, _) in itertools.pairwise(ends)]
    assert min(gaps) >= UPDATE_INTERVAL * 0.6, gaps
    assert old.ended_at_change == 3
    assert stream.b_to_a.dtmf_counts()[2] == 3
    await bob.send(rtp(12, 8, ssrc=0xB0B), stream.b.ports.rtp_port)
    assert fields((await alice.receive())[1])[1:3] == (8, 16)


async def end_copies_after_a_change(
    stream: MediaStream,
    phones: tuple[Phone, Phone],
    change: Callable[[DirectionControl], None],
    copies_payload_type: int | None,
    *,
    told: tuple[int, int] | None = None,
) -> None:
    """Bob's INFO digit is being injected towards Alice (telephone-event 101/8000, the receiver
    ``told`` so or not) when ``change`` changes the direction's plan: the first end copy goes
    at once under 101; the two delayed ones under ``copies_payload_type``, or, None, dropped
    and counted; the audio after them numbered on either way."""
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    stream.b_to_a.dtmf = DtmfInterworking(inject_payload_type=101, inject_clock_rate=8000)
    if told is not None:
        stream.b_to_a.receiver_telephone_event = told
    await bob.send(rtp(10, 8, ssrc=0xB0B), stream.b.ports.rtp_port)
    await alice.receive()
    assert stream.send_telephone_event(
        "b_to_a", event_payload(7, end=False, duration=400), marker=True, start=True
    )
    timestamp = fields((await alice.receive())[1])[3]
    change(stream.b_to_a)
    assert fields((await alice.receive())[1]) == (False, 101, 12, timestamp, 0xB0B)
    with trio.fail_after(5):  # both delayed copies sent or dropped (polled: a sleep proves nothing)
        while stream.b_to_a._end_copies is not None:  # the relay's task has run out
            await trio.sleep(UPDATE_INTERVAL / 5)
    await bob.send(rtp(11, 8, ssrc=0xB0B), stream.b.ports.rtp_port)
    heard = []
    while True:
        plain = (await alice.receive())[1]
        if fields(plain)[1] == 8:
            break
        heard.append(plain)
    statistics = stream.b_to_a.statistics()
    if copies_payload_type is None:
        assert heard == []
        assert statistics.dtmf_end_copies_dropped == 2
        assert statistics.dtmf_ended_at_change == 1
        assert fields(plain)[2] == 13  # numbered on after the one copy sent
    else:
        assert [fields(p) for p in heard] == [
            (False, copies_payload_type, sequence, timestamp, 0xB0B) for sequence in (13, 14)
        ]
        assert all(p[12:14] == bytes((7, 0x80 | 10)) for p in heard)
        assert statistics.dtmf_end_copies_dropped == 0
        assert statistics.dtmf_ended_at_change == 3
        assert fields(plain)[2] == 15


@pytest.mark.parametrize(
    ("new", "copies_payload_type"),
    [
        # A re-answer renumbers telephone-event towards Alice (RFC 3264 §8.3.2): 96 now.
        ((96, 8000, -1), 96),
        # Alice has telephone-event no more: the interworking now takes Bob's, injects none.
        ((-1, 8000, 101), None),
        # telephone-event/16000 now: the event's timestamp and duration count 8 kHz units.
        ((101, 16000, -1), None),
    ],
)
async def test_the_end_copies_take_the_telephone_event_number_in_force(
    stream: MediaStream,
    phones: tuple[Phone, Phone],
    new: tuple[int, int, int],
    copies_payload_type: int | None,
) -> None:
    """The delayed end copies of an event a change cut short go under the telephone-event
    number the new interworking sends to Alice when each is due, not the old one, which the
    new plan may give another codec; with no telephone-event towards her at the old clock
    rate they are dropped, and counted (docs/architecture.md "When the plan changes
    mid-call")."""
    inject, rate, take = new

    def change(control: DirectionControl) -> None:
        control.dtmf = DtmfInterworking(
            inject_payload_type=inject, inject_clock_rate=rate, take_payload_type=take
        )

    await end_copies_after_a_change(stream, phones, change, copies_payload_type)


@pytest.mark.parametrize(
    ("receiver", "copies_payload_type"),
    [
        # The change ended the interworking and renumbered telephone-event towards Alice
        # (RFC 3264 §8.3.2: both legs have it now, relayed as it comes): 96.
        ((96, 8000), 96),
        # Alice takes telephone-event no more (her re-offer left it out, or the line is T.38).
        ((-1, 0), None),
        # telephone-event/16000 now: the event's timestamp and duration count 8 kHz units.
        ((101, 16000), None),
        # Not told (the session tells every DTMF line's streams): the event's own number.
        (None, 101),
    ],
)
async def test_the_end_copies_after_the_interworking_ended_take_the_receivers_number(
    stream: MediaStream,
    phones: tuple[Phone, Phone],
    receiver: tuple[int, int] | None,
    copies_payload_type: int | None,
) -> None:
    """A change that ends the interworking altogether leaves no interworking to number the
    delayed end copies: they take the telephone-event the receiver takes in the plan in
    force (DirectionControl.receiver_telephone_event), or are dropped and counted when it
    takes none, or at another clock rate (docs/architecture.md "When the plan changes
    mid-call")."""

    def change(control: DirectionControl) -> None:
        control.dtmf = None
        control.receiver_telephone_event = receiver

    await end_copies_after_a_change(stream, phones, change, copies_payload_type, told=(101, 8000))


async def test_a_receivers_telephone_event_out_of_range_is_refused(stream: MediaStream) -> None:
    """The session's own numbers, checked where they are set (a worker gets only valid
    ones): -1 and any clock rate are "none", kept as (-1, 0)."""
    control = stream.a_to_b
    for bad in [(128, 8000), (-2, 0), (101, 0)]:
        with pytest.raises(LocalMediaError):
            control.receiver_telephone_event = bad
        assert control.receiver_telephone_event is None  # unchanged
    control.receiver_telephone_event = (-1, 8000)
    assert control.receiver_telephone_event == (-1, 0)
    control.receiver_telephone_event = (0, 8000)
    assert control.receiver_telephone_event == (0, 8000)


async def test_the_end_copies_still_to_go_are_dropped_when_the_source_changes(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    """A re-INVITE that changes the plan is often a transfer: the new party's media (a new
    SSRC, RFC 3550 §8) may reach the relay before the delayed end copies go. Sent then, they
    would carry the new source's SSRC and numbers with the old event's timestamp: to the
    receiver an end packet of an event that source never began, which many play as a digit
    of their own (a second, ghost press). The first copy went with the old source; the rest
    are dropped."""
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    stream.b_to_a.dtmf = DtmfInterworking(inject_payload_type=101, inject_clock_rate=8000)
    await bob.send(rtp(10, 8, ssrc=0xB0B), stream.b.ports.rtp_port)
    await alice.receive()
    assert stream.send_telephone_event(
        "b_to_a", event_payload(7, end=False, duration=400), marker=True, start=True
    )
    await alice.receive()
    stream.b_to_a.dtmf = DtmfInterworking(inject_payload_type=101, inject_clock_rate=8000)
    assert fields((await alice.receive())[1])[1::3] == (101, 0xB0B)  # the first end copy
    await bob.send(rtp(500, 8, ssrc=0xCAFE), stream.b.ports.rtp_port)  # the new party
    assert fields((await alice.receive())[1])[1::3] == (8, 0xCAFE)
    with trio.fail_after(5):
        while stream.b_to_a._end_copies is not None:  # the relay's task has run out
            await trio.sleep(UPDATE_INTERVAL / 5)
    await bob.send(rtp(501, 8, ssrc=0xCAFE), stream.b.ports.rtp_port)
    assert fields((await alice.receive())[1])[1::3] == (8, 0xCAFE)  # no end copy before it
    assert stream.b_to_a.dtmf_counts()[2] == 1


@pytest.mark.skipif(
    relay_module.COMPILED, reason="a mypyc-compiled class cannot be patched to fail"
)
async def test_a_failure_sending_an_end_copy_leaves_the_relay_serving(
    stream: MediaStream,
    phones: tuple[Phone, Phone],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The end copies go from a task of the relay's nursery: a bug there must cost the rest
    of that digit's end, logged, never the relay (every call's media)."""
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    stream.b_to_a.dtmf = DtmfInterworking(inject_payload_type=101, inject_clock_rate=8000)
    await bob.send(rtp(10, 8, ssrc=0xB0B), stream.b.ports.rtp_port)
    await alice.receive()
    assert stream.send_telephone_event(
        "b_to_a", event_payload(7, end=False, duration=400), marker=True, start=True
    )
    await alice.receive()

    def broken() -> bool:
        raise RuntimeError("a bug")

    monkeypatch.setattr(stream.b_to_a, "_send_end_copy", broken)
    stream.b_to_a.dtmf = None
    assert fields((await alice.receive())[1])[1] == 101  # the first copy, at the change
    with trio.fail_after(5):  # the task ran and failed (polled: a sleep proves nothing)
        while "sending the end of an injected DTMF event failed" not in caplog.text:
            await trio.sleep(UPDATE_INTERVAL / 5)
    assert stream.b_to_a._end_copies is None
    await bob.send(rtp(11, 8, ssrc=0xB0B), stream.b.ports.rtp_port)
    assert fields((await alice.receive())[1])[1:3] == (8, 13)  # still relaying, numbered on


async def test_an_injected_event_that_ended_is_not_ended_again(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    old = DtmfInterworking(inject_payload_type=101, inject_clock_rate=8000, ssrc=1)
    stream.b_to_a.dtmf = old
    assert stream.send_telephone_event(
        "b_to_a", event_payload(3, end=True, duration=320), marker=True, start=True
    )
    await alice.receive()
    stream.b_to_a.dtmf = None
    await bob.send(rtp(5, 8, ssrc=0xB0B), stream.b.ports.rtp_port)
    _, plain = await alice.receive()
    assert fields(plain)[1] == 8  # the audio: no end packets before it
    assert old.ended_at_change == 0


@pytest.mark.parametrize(("a_suite", "b_suite"), SUITES[:2])
async def test_an_event_relayed_when_the_interworking_begins_is_relayed_to_its_end(
    stream: MediaStream, phones: tuple[Phone, Phone], a_suite: str | None, b_suite: str | None
) -> None:
    """Both legs had telephone-event: Alice's digit 5 began towards Bob (its first packet,
    marker bit, relayed). Then Bob's re-answer leaves telephone-event out: Alice's events are
    taken for INFO from now on, but this one's later packets, its three end packets with
    them, still go to Bob (he plays 5 until its end, RFC 4733 §2.5.2), and it is not read as
    a digit (he had it). Her next event is taken."""
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=a_suite, b_suite=b_suite)
    port = stream.a.ports.rtp_port
    await alice.send(rtp(1, 0), port)
    await bob.receive()
    first = rtp(2, 101, event_payload(5, end=False, duration=160), marker=1, timestamp=320)
    await alice.send(first, port)
    assert (await bob.receive())[1] == first
    taken: list[bytes] = []
    state = DtmfInterworking(take_payload_type=101, on_event=taken.append, relayed_until_now=True)
    stream.a_to_b.dtmf = state
    rest = [rtp(3, 101, event_payload(5, end=False, duration=320), timestamp=320)]
    end = event_payload(5, end=True, duration=480)
    rest += [rtp(n, 101, end, timestamp=320) for n in (4, 5, 6)]
    for packet in rest:
        await alice.send(packet, port)
        assert (await bob.receive())[1] == packet  # relayed as it came
    assert taken == [] and state.passed == 4
    following = rtp(7, 101, event_payload(9, end=True, duration=160), marker=1, timestamp=960)
    await alice.send(following, port)
    await alice.send(rtp(8, 0, timestamp=1120), port)
    assert fields((await bob.receive())[1])[1:3] == (0, 7)  # the event taken, no gap
    assert taken == [following]


async def test_audio_first_means_no_event_was_in_progress(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    # A sender sends an event's packets in place of audio (RFC 4733 §2.5.1.1): audio after the
    # change says none was going on; a later event packet without the marker bit (its first
    # lost) is taken, as for any interworking.
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=None, b_suite=None)
    taken: list[bytes] = []
    stream.a_to_b.dtmf = DtmfInterworking(
        take_payload_type=101, on_event=taken.append, relayed_until_now=True
    )
    port = stream.a.ports.rtp_port
    await alice.send(rtp(1, 0), port)
    await bob.receive()
    late_start = rtp(2, 101, event_payload(5, end=False, duration=320), timestamp=160)
    await alice.send(late_start, port)
    await alice.send(rtp(3, 0, timestamp=480), port)
    assert fields((await bob.receive())[1])[1:3] == (0, 2)
    assert taken == [late_start]


@pytest.mark.parametrize(("a_suite", "b_suite"), SUITES)
async def test_a_kept_offset_wraps_the_sequence_with_the_receivers_roc(
    stream: MediaStream, phones: tuple[Phone, Phone], a_suite: str | None, b_suite: str | None
) -> None:
    """Near the wrap (RFC 3711 §3.3.1): injected events moved the numbers Alice hears up by
    two, so her stream wraps two packets before Bob's does, across add -> remove -> add of the
    interworking. The relay's SRTP context towards her must move its ROC where the numbers it
    sends wrap, as her receiver (pylibsrtp, independent of ours) estimates it: every packet
    unprotects, and the numbers go on by one through 65535 -> 0 (not back)."""
    alice, bob = phones
    bridge(stream, alice, bob, a_suite=a_suite, b_suite=b_suite)
    port = stream.b.ports.rtp_port
    heard: list[int] = []

    async def audio(sequence: int) -> None:
        await bob.send(rtp(sequence, 8, ssrc=0xB0B, timestamp=160 * sequence), port)
        _, plain = await alice.receive()
        assert fields(plain)[1] == 8
        heard.append(fields(plain)[2])

    async def digit() -> None:
        start = event_payload(4, end=False, duration=160)
        end = event_payload(4, end=True, duration=320)
        assert stream.send_telephone_event("b_to_a", start, marker=True, start=True)
        assert stream.send_telephone_event("b_to_a", end, marker=False, start=False)
        for _ in range(2):
            heard.append(fields((await alice.receive())[1])[2])

    def inject() -> None:
        stream.b_to_a.dtmf = DtmfInterworking(
            inject_payload_type=101, inject_clock_rate=8000, ssrc=1
        )

    inject()
    await audio(65529)
    await digit()  # 65530, 65531: Bob's numbers are two behind from here
    stream.b_to_a.dtmf = None
    for sequence in (65530, 65531, 65532, 65533, 65534):  # 65532 .. 65535, 0: wraps first
        await audio(sequence)
    inject()
    await audio(65535)  # 1
    await digit()  # 2, 3
    stream.b_to_a.dtmf = None
    for sequence in range(6):  # Bob wraps now; Alice hears 4 .. 9
        await audio(sequence)
    expected = [(65529 + n) & 0xFFFF for n in range(len(heard))]
    assert heard == expected
    assert stream.b_to_a.statistics().dropped_transform == 0
