"""The first packets after an answer: a callee sends the moment our ACK reaches it, a caller
the moment our 2xx does, and none of those packets may be lost, in process or in a media worker.

Four calls per relay (the callee's law the caller's or the other one, transcoded; the
callee's leg plain or SRTP), each run as the B2BUA does (gateway/core/calls/call.py): the
caller's offer opens the stream and points side A at the caller, the stream is keyed blocked
(no callee yet), the callee's answer points side B at it and sets the transcoding it needs,
the keys unblock the stream; then the call awaits :meth:`MediaSession.applied`, after which
it sends the ACK. Then both phones send :data:`PACKETS` packets each at once, from their
plain sockets, with no scheduling point between the answer and the first packet: the
hardest timing a real peer could give. Every packet must arrive, in its receiver's law.

In process the answer takes effect as it is made; a media worker gets it over its channel,
so :meth:`~gateway.core.media.remote_relay.CallRelay.applied` waits for the worker to confirm
(a ``Ping``/``Pong`` round trip). The packets are then read with this process's trio loop
blocked (:func:`heard`), so no message still queued here can reach the worker: without that
wait none of the answer's messages has crossed, and the worker drops every packet (the
stream is still blocked). The same holds for a re-INVITE that re-keys SRTP: the callee's first
packet under its new keys must find them in the worker (the old ones fail its authentication).

Real UDP on 127.0.0.1: the in-process relay allocates from RELAY_PORTS, the two workers from
WORKER_PORTS, the phones from PHONE_PORTS (blocks of this process, tests/port_blocks.py).
"""

from __future__ import annotations

import select
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pylibsrtp
import pytest
import trio

from gateway.core.config import PortRange
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.g711 import ALAW_TO_ULAW, ULAW_TO_ALAW
from gateway.core.media.keying import StreamKeys, StreamSrtp
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay, MediaStream
from gateway.core.media.relay_api import Relay
from gateway.core.media.remote_relay import RemoteStream, WorkerPool
from gateway.core.media.session import MediaSession
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from tests.integration.media.phone_sockets import ADDRESS, Phone, master_key
from tests.integration.media.relay_fixtures import process_gone
from tests.port_blocks import ModuleBlock

RELAY_PORTS = ModuleBlock(20, parse=PortRange.parse)
WORKER_PORTS = ModuleBlock(40, parse=PortRange.parse)
PHONE_PORTS = ModuleBlock(20, parse=PortRange.parse)
SUITE = "AES_CM_128_HMAC_SHA1_80"
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
TIMEOUT = 5.0
PACKETS = 5
SAMPLES = bytes(range(0, 256, 2)) + bytes(range(1, 256, 8))  # 160 octets: 20 ms
PCMU, PCMA = 0, 8
CALLER_SSRC, CALLEE_SSRC = 0xCA11E4, 0xCA11EE


def rtp(sequence: int, payload_type: int, ssrc: int, payload: bytes = SAMPLES) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type, sequence, 160 * sequence, ssrc) + payload


def sdp(port: int, payload_type: int) -> SessionDescription:
    name = {PCMU: "PCMU", PCMA: "PCMA"}[payload_type]
    text = (
        f"v=0\no=phone {port} 1 IN IP4 {ADDRESS}\ns=-\nc=IN IP4 {ADDRESS}\nt=0 0\n"
        f"m=audio {port} RTP/AVP {payload_type}\na=rtpmap:{payload_type} {name}/8000\n"
    )
    return parse_sdp_untrusted(text.replace("\n", "\r\n").encode())


def port_in(sent: SessionDescription) -> int:
    """The relay port the SDP we sent a leg names (as its phone reads it off the wire)."""
    return parse_sdp_untrusted(serialize_sdp(sent)).media[0].port


# Not relay_fixtures.py's relay_fixture and worker_pool_fixture, on purpose: one fixture
# parametrized over both kinds of relay, so each test runs against each, and yielding what a
# call holds (a Relay: the pool's for_call(), not the pool).
@pytest.fixture(params=["in-process", "media-workers"])
async def relay(request: pytest.FixtureRequest, nursery: trio.Nursery) -> AsyncIterator[Relay]:
    if request.param == "in-process":
        local = MediaRelay(PortAllocator(ADDRESS, RELAY_PORTS.get()))
        await nursery.start(local.serve)
        yield local
        local.close()
        assert local.allocator.in_use == 0
        return
    pool = WorkerPool(ADDRESS, WORKER_PORTS.get(), 2, stats_interval=0.05, restart_delay=0.05)
    async with trio.open_nursery() as workers:
        await workers.start(pool.serve)
        yield pool.for_call()
        pids = set(pool.worker_pids())
        workers.cancel_scope.cancel()
    assert all(process_gone(pid) for pid in pids if pid is not None)


def heard(phone: Phone, count: int, *, frozen: bool) -> Awaitable[list[bytes]]:
    """The next ``count`` packets on ``phone``'s RTP socket, as they came on the wire, or
    fewer when no more arrive within TIMEOUT seconds. ``frozen``: read them blocking this
    process's trio loop, so nothing the SIP side still has queued reaches a media worker
    meanwhile: the worker relays by what :meth:`MediaSession.applied` confirmed. (The
    in-process relay runs in this loop, so it is read without blocking it.)"""

    async def reading() -> list[bytes]:
        packets: list[bytes] = []
        with trio.move_on_after(TIMEOUT):
            while len(packets) < count:
                packets.append(await phone.receive_wire())
        return packets

    async def blocking() -> list[bytes]:
        sock, packets = phone.pair.rtp_socket, []
        deadline = time.monotonic() + TIMEOUT
        while len(packets) < count and (left := deadline - time.monotonic()) > 0:
            if select.select([sock], [], [], left)[0]:
                packets.append(sock.recv(65536))
        return packets

    return blocking() if frozen else reading()


async def first_packets(
    session: MediaSession, callee_law: int, srtp: bool, *, frozen: bool
) -> tuple[list[bytes], list[bytes]]:
    """One call's media from the offer to the first packets (see the module docstring):
    what the caller heard, what the callee heard (plain)."""
    allocator = PortAllocator(ADDRESS, PHONE_PORTS.get())
    pairs = [allocator.allocate(), allocator.allocate()]
    caller, callee = Phone(pairs[0]), Phone(pairs[1])
    srtp_state = StreamSrtp()
    try:
        to_callee = session.offer_from("a", sdp(caller.pair.rtp_port, PCMU))
        (stream,) = session.streams
        assert isinstance(stream, MediaStream | RemoteStream)
        key(stream, srtp_state, StreamKeys(None, None, blocked=True))  # no callee yet
        callee_keys = None
        unprotect: Callable[[bytes], bytes] = bytes
        if srtp:  # the callee's leg keyed as SDES would (RFC 4568)
            ours, theirs = master_key(SUITE, 3), master_key(SUITE, 4)
            callee.use_srtp(SUITE, key=theirs, peer_key=ours)
            callee_keys = SrtpKeys(SUITE, local_key=ours, remote_key=theirs)
            unprotect = pylibsrtp.Session(
                pylibsrtp.Policy(ours, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=PROFILE)
            ).unprotect
        to_caller = session.answer_from("b", sdp(callee.pair.rtp_port, callee_law))
        assert (session.transcoding is not None) == (callee_law != PCMU)
        key(stream, srtp_state, StreamKeys(None, callee_keys, blocked=False))
        await session.applied()  # what the call awaits before its ACK
        # Our ACK reached the callee, our 200 the caller: both send at once, with no
        # scheduling point in between (plain sockets; the relay's task runs only after).
        caller_to, callee_to = (ADDRESS, port_in(to_caller)), (ADDRESS, port_in(to_callee))
        for sequence in range(PACKETS):
            callee.pair.rtp_socket.sendto(
                callee.protect(rtp(sequence, callee_law, CALLEE_SSRC)), callee_to
            )
            caller.pair.rtp_socket.sendto(rtp(sequence, PCMU, CALLER_SSRC), caller_to)
        by_caller = await heard(caller, PACKETS, frozen=frozen)
        by_callee = [unprotect(wire) for wire in await heard(callee, PACKETS, frozen=frozen)]
        return by_caller, by_callee
    finally:
        session.close()
        srtp_state.close()
        for pair in pairs:
            pair.close()


def key(stream: MediaStream | RemoteStream, srtp: StreamSrtp, keys: StreamKeys) -> None:
    """What CallKeying.apply does with one stream's keys, in process or in its worker."""
    if isinstance(stream, MediaStream):
        srtp.apply(stream, keys)
    else:
        stream.apply_keys(keys)


async def test_every_first_packet_after_the_answer_arrives(relay: Relay) -> None:
    frozen = not isinstance(relay, MediaRelay)
    for callee_law in (PCMU, PCMA):  # same law, transcoded
        for srtp in (False, True):  # the callee's leg plain, SRTP
            session = MediaSession(relay, media_address=ADDRESS, g711_transcoding=True)
            by_caller, by_callee = await first_packets(session, callee_law, srtp, frozen=frozen)
            to_ulaw = ALAW_TO_ULAW if callee_law == PCMA else None
            to_alaw = ULAW_TO_ALAW if callee_law == PCMA else None
            case = f"callee law {callee_law}, {'SRTP' if srtp else 'RTP'}"
            assert by_caller == [
                rtp(n, PCMU, CALLEE_SSRC, SAMPLES.translate(to_ulaw)) for n in range(PACKETS)
            ], case
            assert by_callee == [
                rtp(n, callee_law, CALLER_SSRC, SAMPLES.translate(to_alaw)) for n in range(PACKETS)
            ], case


async def rekeyed_packets(
    session: MediaSession, *, frozen: bool
) -> tuple[list[bytes], list[bytes]]:
    """An SRTP call re-keyed by a re-INVITE (RFC 4568 §7.1.4: a new offer, new keys), as the
    B2BUA runs it: the answer and the callee's new keys applied, :meth:`MediaSession.applied`
    awaited before the ACK; then both phones send at once, the callee under its new keys.
    What the caller heard, what the callee heard (plain, under the new keys)."""
    allocator = PortAllocator(ADDRESS, PHONE_PORTS.get())
    pairs = [allocator.allocate(), allocator.allocate()]
    caller, callee = Phone(pairs[0]), Phone(pairs[1])
    srtp_state = StreamSrtp()
    try:
        to_callee = session.offer_from("a", sdp(caller.pair.rtp_port, PCMU))
        (stream,) = session.streams
        assert isinstance(stream, MediaStream | RemoteStream)
        ours, theirs = master_key(SUITE, 3), master_key(SUITE, 4)
        callee.use_srtp(SUITE, key=theirs, peer_key=ours)
        session.answer_from("b", sdp(callee.pair.rtp_port, PCMU))
        key(
            stream,
            srtp_state,
            StreamKeys(None, SrtpKeys(SUITE, local_key=ours, remote_key=theirs), blocked=False),
        )
        session.settle()
        await session.applied()
        # The re-INVITE: the same offer again, answered with new keys both ways.
        to_callee = session.offer_from("a", sdp(caller.pair.rtp_port, PCMU))
        ours, theirs = master_key(SUITE, 5), master_key(SUITE, 6)
        callee.use_srtp(SUITE, key=theirs, peer_key=ours)
        to_caller = session.answer_from("b", sdp(callee.pair.rtp_port, PCMU))
        key(
            stream,
            srtp_state,
            StreamKeys(None, SrtpKeys(SUITE, local_key=ours, remote_key=theirs), blocked=False),
        )
        session.settle()
        await session.applied()  # what the call awaits before the ACK (and the 2xx)
        unprotect = pylibsrtp.Session(
            pylibsrtp.Policy(ours, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=PROFILE)
        ).unprotect
        caller_to, callee_to = (ADDRESS, port_in(to_caller)), (ADDRESS, port_in(to_callee))
        for sequence in range(PACKETS):
            callee.pair.rtp_socket.sendto(
                callee.protect(rtp(sequence, PCMU, CALLEE_SSRC)), callee_to
            )
            caller.pair.rtp_socket.sendto(rtp(sequence, PCMU, CALLER_SSRC), caller_to)
        by_caller = await heard(caller, PACKETS, frozen=frozen)
        by_callee = [unprotect(wire) for wire in await heard(callee, PACKETS, frozen=frozen)]
        return by_caller, by_callee
    finally:
        session.close()
        srtp_state.close()
        for pair in pairs:
            pair.close()


async def test_every_first_packet_under_a_reinvites_new_keys_arrives(relay: Relay) -> None:
    session = MediaSession(relay, media_address=ADDRESS)
    frozen = not isinstance(relay, MediaRelay)
    by_caller, by_callee = await rekeyed_packets(session, frozen=frozen)
    assert by_caller == [rtp(n, PCMU, CALLEE_SSRC) for n in range(PACKETS)]
    assert by_callee == [rtp(n, PCMU, CALLER_SSRC) for n in range(PACKETS)]
