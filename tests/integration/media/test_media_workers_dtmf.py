"""DTMF interworking in a media worker (SetDtmf, SendDtmf, DtmfEvent): the worker's relay takes
the RFC 4733 leg's telephone-event packets (after SRTP unprotect) and copies them to the SIP
process, closes the gap they leave, and injects the events the SIP process times, in the
receiving leg's SSRC and sequence, protected with that leg's keys. Two real worker processes on
127.0.0.1 (PORTS, tests/port_blocks.py); the phones bind ephemeral ports."""

from __future__ import annotations

import contextlib
import itertools
import struct
from collections.abc import AsyncIterator

import attrs
import pylibsrtp
import pytest
import trio

from gateway.core.config import PortRange
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.dtmf import END_TIMEOUT, UPDATE_INTERVAL, Digit, event_payload
from gateway.core.media.keying import StreamKeys
from gateway.core.media.relay import DtmfInterworking
from gateway.core.media.remote_relay import WorkerPool
from gateway.core.media.session import MediaSession
from gateway.core.media.worker_protocol import DTMF_COPIES_PER_SECOND
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.integration.media.phone_sockets import (
    ADDRESS,
    EphemeralPhone,
    ephemeral_phones,
    eventually,
)
from tests.integration.media.relay_fixtures import (
    GATEWAY_KEY_TO_B,
    PHONE_B_KEY,
    SUITE,
    connected,
    worker_pool_fixture,
)
from tests.port_blocks import ModuleBlock

PORTS = ModuleBlock(40, parse=PortRange.parse)


pool = worker_pool_fixture(PORTS)


def packet(sequence: int, payload_type: int, ssrc: int, payload: bytes, **kw: int) -> bytes:
    second = payload_type | (0x80 if kw.get("marker") else 0)
    timestamp = kw.get("timestamp", 160 * sequence)
    return struct.pack("!BBHII", 0x80, second, sequence, timestamp, ssrc) + payload


def fields(data: bytes) -> tuple[bool, int, int, int, int]:
    second, sequence, timestamp, ssrc = struct.unpack("!xBHII", data[:12])
    return bool(second & 0x80), second & 0x7F, sequence, timestamp, ssrc


async def test_a_worker_takes_and_injects_events_over_srtp(pool: WorkerPool) -> None:
    assert pool.interworks_dtmf
    a, b = await ephemeral_phones(2)
    stream = pool.open_stream()
    await connected(pool, stream, a, b)
    # Leg B has telephone-event 96 and SRTP; leg A does INFO (plain RTP).
    b_keys = SrtpKeys(SUITE, local_key=GATEWAY_KEY_TO_B, remote_key=PHONE_B_KEY)
    stream.apply_keys(StreamKeys(None, b_keys, blocked=False))
    taken: list[bytes] = []
    stream.b_to_a.dtmf = DtmfInterworking(take_payload_type=96, on_event=taken.append)
    stream.a_to_b.dtmf = DtmfInterworking(inject_payload_type=96, inject_clock_rate=8000, ssrc=5)
    await pool.sync(stream.worker)
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    b_receives = pylibsrtp.Session(
        pylibsrtp.Policy(GATEWAY_KEY_TO_B, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
    )
    b_sends = pylibsrtp.Session(
        pylibsrtp.Policy(PHONE_B_KEY, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    )
    audio = b"\xd5" * 160

    # B -> A: audio, an event (taken, copied to us plain), audio numbered on without a gap.
    await b.send(b_sends.protect(packet(1, 0, 0xB0B, audio)), stream.b.ports.rtp_port)
    assert fields((await a.receive())[0])[1:3] == (0, 1)
    event = packet(2, 96, 0xB0B, event_payload(3, end=True, duration=800), marker=1)
    await b.send(b_sends.protect(event), stream.b.ports.rtp_port)
    await b.send(b_sends.protect(packet(3, 0, 0xB0B, audio)), stream.b.ports.rtp_port)
    assert fields((await a.receive())[0])[1:3] == (0, 2)
    await eventually(lambda: taken == [event], "the event copied to the SIP process")
    assert stream.b_to_a.dtmf is not None and stream.b_to_a.dtmf.taken == 1
    await eventually(lambda: stream.b_to_a.statistics().rtp_packets == 2, "counters pushed")
    assert stream.b_to_a.statistics().dropped_transform == 0

    # A -> B: A's audio, then an injected event in A's SSRC and sequence, SRTP-protected.
    await a.send(packet(40, 0, 0xA11CE, audio), stream.a.ports.rtp_port)
    wire, _ = await b.receive()
    assert fields(b_receives.unprotect(wire))[2] == 40
    start = event_payload(9, end=False, duration=400)
    assert stream.send_telephone_event("a_to_b", start, marker=True, start=True)
    wire, _ = await b.receive()
    plain = b_receives.unprotect(wire)
    marker, payload_type, sequence, timestamp, ssrc = fields(plain)
    assert (marker, payload_type, sequence, ssrc) == (True, 96, 41, 0xA11CE)
    assert 6400 <= timestamp < 6400 + 8000
    assert plain[12:] == start
    await a.send(packet(41, 0, 0xA11CE, audio), stream.a.ports.rtp_port)
    wire, _ = await b.receive()
    assert fields(b_receives.unprotect(wire))[2] == 42  # after the injected one
    assert not stream.send_telephone_event("b_to_a", start, marker=True, start=True)

    # Off again: B's events are relayed as they come, numbered on from what A heard (the
    # event taken moved A's sequence by one: kept, not back to B's numbers).
    stream.b_to_a.dtmf = None
    await pool.sync(stream.worker)
    await b.send(b_sends.protect(packet(4, 96, 0xB0B, start)), stream.b.ports.rtp_port)
    assert fields((await a.receive())[0])[1:3] == (96, 3)


async def test_a_flood_of_events_is_copied_within_bounds(pool: WorkerPool) -> None:
    a, b = await ephemeral_phones(2)
    stream = pool.open_stream()
    await connected(pool, stream, a, b)
    taken: list[bytes] = []
    stream.a_to_b.dtmf = DtmfInterworking(take_payload_type=101, on_event=taken.append)
    await pool.sync(stream.worker)
    flood = 3 * DTMF_COPIES_PER_SECOND
    for n in range(flood):
        await a.send(
            packet(n, 101, 1, event_payload(1, end=True, duration=8)), stream.a.ports.rtp_port
        )
    await eventually(
        lambda: (
            stream.a_to_b.statistics().dropped_transform == 0
            and len(taken) >= DTMF_COPIES_PER_SECOND
        ),
        "copies arrived",
    )
    await pool.sync(stream.worker)
    # Sent within well under a second: one second's worth copied, the rest only taken.
    assert DTMF_COPIES_PER_SECOND <= len(taken) < flood


async def test_a_workers_event_whose_end_packets_are_lost_ends_on_the_sip_process_timer(
    pool: WorkerPool,
) -> None:
    """The worker copies the events it takes (DtmfEvent); the SIP process's session reads
    them with its own clock and ends the one whose end packets never came on its timer."""
    a, b = await ephemeral_phones(2)
    session = MediaSession(
        pool.for_call(), media_address=ADDRESS, dtmf_interworking=True, clock=trio.current_time
    )
    head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    caller = "m=audio {} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    callee = "m=audio {} RTP/AVP 0\r\n"
    session.offer_from("a", parse_sdp_untrusted((head + caller.format(a.address[1])).encode()))
    session.answer_from("b", parse_sdp_untrusted((head + callee.format(b.address[1])).encode()))
    session.settle()
    heard: list[tuple[str, Digit]] = []
    armed = trio.Event()
    session.on_dtmf_digit = lambda side, digit: heard.append((side, digit))
    session.on_dtmf_timer = armed.set
    (stream,) = session.streams
    stream.a_to_b.blocked = stream.b_to_a.blocked = False  # the call's keying does this
    await pool.sync(stream.worker)
    try:
        started = trio.current_time()
        for n, duration in enumerate((400, 800, 1200)):  # no end packet ever comes
            payload = event_payload(6, end=False, duration=duration)
            press = packet(n + 1, 101, 0xA, payload, timestamp=8000)  # one event
            await a.send(press, stream.a.ports.rtp_port)
            await trio.sleep(0.05)
        sent_over_ms = (trio.current_time() - started) * 1000
        with trio.fail_after(5):
            await armed.wait()
        take = stream.a_to_b.dtmf
        assert take is not None
        await eventually(lambda: take.taken == 3, "the copies read")
        timer = session.dtmf_timer()
        assert timer is not None and timer <= trio.current_time() + END_TIMEOUT
        assert heard == []
        await trio.sleep_until(timer)
        session.dtmf_timeout(trio.current_time())
        # The longest duration seen (150 ms), or the packets' span if longer (real time: on a
        # loaded machine the sends alone take longer than their 100 ms of sleeps), and never
        # the END_TIMEOUT waited for an end packet on top of it.
        ((side, digit),) = heard
        assert side == "a" and digit.digit == "6"
        assert 150 <= digit.duration_ms < max(200, sent_over_ms + END_TIMEOUT * 1000 / 2)
        assert session.dtmf_timeouts == 1 and session.dtmf_timer() is None
    finally:
        session.close()


async def test_a_worker_reads_events_inside_red(pool: WorkerPool) -> None:
    # SetDtmf carries the sending leg's RED numbers (RFC 4733 §2.5.1.5: events packed as RFC
    # 2198 blocks): the worker takes the RED packet and copies the event it holds, plain.
    a, b = await ephemeral_phones(2)
    stream = pool.open_stream()
    await connected(pool, stream, a, b)
    stream.apply_keys(StreamKeys(None, None, blocked=False))
    taken: list[bytes] = []
    stream.b_to_a.dtmf = DtmfInterworking(
        take_payload_type=96, on_event=taken.append, red_payload_types=(100,)
    )
    await pool.sync(stream.worker)
    audio = b"\xd5" * 160
    await b.send(packet(1, 0, 0xB0B, audio), stream.b.ports.rtp_port)
    assert fields((await a.receive())[0])[1:3] == (0, 1)
    end = event_payload(3, end=True, duration=800)
    await b.send(packet(2, 100, 0xB0B, b"\x60" + end), stream.b.ports.rtp_port)  # primary only
    await b.send(packet(3, 0, 0xB0B, audio), stream.b.ports.rtp_port)
    assert fields((await a.receive())[0])[1:3] == (0, 2)  # no RED, no gap
    await eventually(lambda: taken == [packet(2, 96, 0xB0B, end)], "the event copied plain")


async def test_a_worker_applies_the_re_plans_of_a_call(pool: WorkerPool) -> None:
    """The DTMF plan changes twice mid-call through a MediaSession on a worker (SetDtmf):
    B's answer to our re-key leaves telephone-event out (A's events go to B as INFO from then
    on, but the event in progress goes on to B to its end), then B re-offers with it (relayed
    again: the event being injected towards A is ended by three end packets, and A's stream
    keeps its numbering). Each step is checked on the wire: the worker must apply it."""
    a, b = await ephemeral_phones(2)
    session = MediaSession(
        pool.for_call(), media_address=ADDRESS, dtmf_interworking=True, clock=trio.current_time
    )
    head = "v=0\r\no=- 1 {} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    events = "m=audio {} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    audio_only = "m=audio {} RTP/AVP 0\r\n"

    def sdp(version: int, media: str, phone: EphemeralPhone) -> SessionDescription:
        text = head.format(version) + media.format(phone.address[1])
        return parse_sdp_untrusted(text.encode())

    session.offer_from("a", sdp(1, events, a))
    session.answer_from("b", sdp(1, events, b))
    session.settle()
    assert session.dtmf is None  # both have telephone-event: relayed as it comes
    heard: list[tuple[str, Digit]] = []
    session.on_dtmf_digit = lambda side, digit: heard.append((side, digit))
    (stream,) = session.streams
    stream.a_to_b.blocked = stream.b_to_a.blocked = False  # the call's keying does this
    await pool.sync(stream.worker)
    to_b, to_a = stream.a.ports.rtp_port, stream.b.ports.rtp_port
    try:
        # A's digit 4 begins, relayed to B.
        first = packet(1, 101, 0xA, event_payload(4, end=False, duration=160), timestamp=800)
        await a.send(first, to_b)
        assert (await b.receive())[0] == first
        # B's re-key answer leaves telephone-event out: A's events become INFO to B.
        session.repeat_offer("b")
        session.answer_to_repeated_offer("b", sdp(2, audio_only, b))
        assert session.dtmf is not None and session.dtmf.info_side == "b"
        await pool.sync(stream.worker)
        ending = [packet(2, 101, 0xA, event_payload(4, end=False, duration=320), timestamp=800)]
        end = event_payload(4, end=True, duration=480)
        ending += [packet(n, 101, 0xA, end, timestamp=800) for n in (3, 4, 5)]
        for sent in ending:
            await a.send(sent, to_b)
            assert (await b.receive())[0] == sent  # the event in progress goes on to B
        # A's next digit is taken by the worker and read here; B hears only audio, no gap.
        press = packet(6, 101, 0xA, event_payload(8, end=True, duration=800), marker=1)
        await a.send(press, to_b)
        await a.send(packet(7, 0, 0xA, b"\xff" * 160), to_b)
        assert fields((await b.receive())[0])[1:3] == (0, 6)
        await eventually(lambda: heard == [("a", Digit("8", 100))], "the digit read")
        # B's INFO digit 2 is being injected towards A when B re-offers with telephone-event.
        await b.send(packet(50, 0, 0xB, b"\xff" * 160), to_a)
        assert fields((await a.receive())[0])[1:3] == (0, 50)
        start = event_payload(2, end=False, duration=400)
        assert session.send_dtmf_event(start, marker=True, start=True)
        marker, payload_type, sequence, timestamp, ssrc = fields((await a.receive())[0])
        assert (marker, payload_type, sequence, ssrc) == (True, 101, 51, 0xB)
        session.offer_from("b", sdp(3, events, b))
        session.answer_from("a", sdp(2, events, a))
        session.settle()
        assert session.dtmf is None
        arrived = []
        for n in (52, 53, 54):  # RFC 4733 §2.5.1.4: the final packet, three times
            plain = (await a.receive())[0]
            arrived.append(trio.current_time())
            assert fields(plain) == (False, 101, n, timestamp, 0xB)
            assert plain[12:14] == bytes((2, 0x80 | 10))
            assert int.from_bytes(plain[14:16], "big") >= 400
        # "at the interval used by the source for updates": the worker's relay spaces them.
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrived)]
        assert min(gaps) >= UPDATE_INTERVAL * 0.6, gaps
        # A's stream is numbered on (its four injected packets kept): not back to B's 51.
        await b.send(packet(51, 0, 0xB, b"\xff" * 160), to_a)
        assert fields((await a.receive())[0])[1:3] == (0, 55)
        # And B's stream keeps the one taken: A's audio 8 reaches it as 7.
        await a.send(packet(8, 0, 0xA, b"\xff" * 160), to_b)
        assert fields((await b.receive())[0])[1:3] == (0, 7)
        # The worker's counts reach the call record (Stats): its end packets are injected
        # packets the SIP process never sent, the four of 4 relayed on at the first change.
        expected = {
            "taken": 1,
            "injected": 4,
            "ended_at_change": 3,
            "passed": 4,
            "end_copies_dropped": 0,
        }
        await eventually(lambda: session.dtmf_statistics() == expected, "the worker's counts")
    finally:
        session.close()


SDP_HEAD = "v=0\r\no=- 1 {} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
MEDIA_LINES = {
    "events": "m=audio {} RTP/AVP 0 {pt}\r\na=rtpmap:{pt} telephone-event/8000\r\n",
    "audio_only": "m=audio {} RTP/AVP 0\r\n",
    "t38": "m=image {} udptl t38\r\na=T38FaxRateManagement:transferredTCF\r\n",
}


def phone_sdp(version: int, media: str, phone: EphemeralPhone, pt: int = 101) -> SessionDescription:
    """A phone's SDP of one m= line (a MEDIA_LINES key) at its own port."""
    text = SDP_HEAD.format(version) + MEDIA_LINES[media].format(phone.address[1], pt=pt)
    return parse_sdp_untrusted(text.encode())


@attrs.define
class Injecting:
    """A call through a worker whose A leg has telephone-event 101 and B leg does INFO, while
    B's digit is being injected towards A (its start sent, at ``timestamp``)."""

    session: MediaSession
    a: EphemeralPhone
    b: EphemeralPhone
    to_a: int  # the gateway's port B sends to
    timestamp: int


@contextlib.asynccontextmanager
async def injecting_a_digit(pool: WorkerPool) -> AsyncIterator[Injecting]:
    a, b = await ephemeral_phones(2)
    session = MediaSession(
        pool.for_call(), media_address=ADDRESS, dtmf_interworking=True, clock=trio.current_time
    )
    session.offer_from("a", phone_sdp(1, "events", a))
    session.answer_from("b", phone_sdp(1, "audio_only", b))
    session.settle()
    assert session.dtmf is not None and session.dtmf.payload_type == 101
    (stream,) = session.streams
    stream.a_to_b.blocked = stream.b_to_a.blocked = False  # the call's keying does this
    await pool.sync(stream.worker)
    to_a = stream.b.ports.rtp_port
    try:
        await b.send(packet(50, 0, 0xB, b"\xff" * 160), to_a)
        assert fields((await a.receive())[0])[1:3] == (0, 50)
        start = event_payload(2, end=False, duration=400)
        assert session.send_dtmf_event(start, marker=True, start=True)
        timestamp = fields((await a.receive())[0])[3]
        yield Injecting(session, a, b, to_a, timestamp)
    finally:
        session.close()


async def test_a_workers_end_copies_take_the_renumbered_telephone_event(
    pool: WorkerPool,
) -> None:
    """A's re-offer renumbers telephone-event (101 -> 96, RFC 3264 §8.3.2) while B's INFO
    digit is being injected towards A: the worker sends the first end packet at the change,
    the two delayed copies under 96, the number in force towards A when each is due (as the
    in-process relay does: docs/architecture.md "When the plan changes mid-call")."""
    async with injecting_a_digit(pool) as call:
        session, a, b, timestamp = call.session, call.a, call.b, call.timestamp
        session.offer_from("a", phone_sdp(2, "events", a, pt=96))
        session.answer_from("b", phone_sdp(2, "audio_only", b))
        session.settle()
        assert session.dtmf is not None and session.dtmf.payload_type == 96
        ends = [fields((await a.receive())[0]) for _ in range(3)]
        assert ends == [
            (False, 101, 52, timestamp, 0xB),  # at the change, the number then in force
            (False, 96, 53, timestamp, 0xB),
            (False, 96, 54, timestamp, 0xB),
        ]
        await eventually(
            lambda: session.dtmf_statistics()["ended_at_change"] == 3, "the worker's counts"
        )
        assert session.dtmf_statistics()["end_copies_dropped"] == 0


@pytest.mark.parametrize(
    ("a_again", "b_again", "copies_payload_type"),
    [
        # B's re-answer takes telephone-event too: both legs have it, relayed as it comes (no
        # interworking), and A's re-offer numbers it 96 (RFC 3264 §8.3.2).
        ("events", "events", 96),
        # A's re-offer leaves telephone-event out: A takes none any more.
        ("audio_only", "audio_only", None),
        # The line becomes T.38 (RFC 3264 §8.3.3: the same m= line, another media type).
        ("t38", "t38", None),
    ],
)
async def test_a_workers_end_copies_after_the_interworking_ended_take_the_receivers_number(
    pool: WorkerPool, a_again: str, b_again: str, copies_payload_type: int | None
) -> None:
    """A change that ends the interworking while B's INFO digit is being injected towards A:
    the first end packet goes at the change, the two delayed copies under the
    telephone-event A takes in the plan in force (``SetReceiverEvent``), or, when A takes
    none, they are dropped and counted (docs/architecture.md "When the plan changes
    mid-call")."""
    async with injecting_a_digit(pool) as call:
        session, a, b, timestamp = call.session, call.a, call.b, call.timestamp
        session.offer_from("a", phone_sdp(2, a_again, a, pt=96))
        session.answer_from("b", phone_sdp(2, b_again, b, pt=97))
        session.settle()
        assert session.dtmf is None
        # At the change, the number then in force.
        assert fields((await a.receive())[0]) == (False, 101, 52, timestamp, 0xB)
        if copies_payload_type is not None:
            ends = [fields((await a.receive())[0]) for _ in range(2)]
            assert ends == [(False, 96, n, timestamp, 0xB) for n in (53, 54)]
            await eventually(
                lambda: session.dtmf_statistics()["ended_at_change"] == 3, "the worker's counts"
            )
            assert session.dtmf_statistics()["end_copies_dropped"] == 0
            return
        await eventually(
            lambda: session.dtmf_statistics()["end_copies_dropped"] == 2, "the worker's counts"
        )
        assert session.dtmf_statistics()["ended_at_change"] == 1
        # Nothing else went to A: the next datagram it gets is B's.
        if a_again == "t38":
            await b.send(b"\x00\x01udptl", call.to_a)  # relayed as it is (SetOpaque)
            assert (await a.receive())[0] == b"\x00\x01udptl"
        else:
            await b.send(packet(51, 0, 0xB, b"\xff" * 160), call.to_a)
            assert fields((await a.receive())[0])[1:3] == (0, 53)  # after the one copy sent
