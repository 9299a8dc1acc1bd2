"""A re-INVITE's new SRTP keys on real sockets, in process and in a media worker
(``[media] workers`` 0 and > 0): a direction whose master key stays keeps its roll-over counter
(RFC 4568 §7.1.4, RFC 3711 §3.3.1) after the sequence numbers wrapped.

The callee's leg is SRTP, the caller's plain. Both phones send across the wrap (65534 .. 1,
ROC 1 from 0 on), then the stream is re-keyed twice as the B2BUA would after an answer, waiting
for :meth:`MediaSession.applied` each time: first only the callee's MKI changes (same key),
then the callee takes a new key while the re-offer kept ours. The callee's phone (pylibsrtp,
independent of gateway.core.media.srtp) never restarts a context under a key it keeps, so every
packet after a re-key authenticates only if the gateway's context went on too.

Real UDP on 127.0.0.1: the in-process relay from RELAY_PORTS, the workers from WORKER_PORTS,
the phones from PHONE_PORTS (blocks of this process, tests/port_blocks.py).
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator

import pylibsrtp
import pytest
import trio

from gateway.core.config import PortRange
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.keying import StreamKeys, StreamSrtp
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import MediaRelay, MediaStream
from gateway.core.media.relay_api import Relay
from gateway.core.media.remote_relay import RemoteStream, WorkerPool
from gateway.core.media.session import MediaSession
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from tests.integration.media.phone_sockets import ADDRESS, WORKER_TIMEOUT, Phone, master_key
from tests.integration.media.relay_fixtures import process_gone
from tests.port_blocks import ModuleBlock

RELAY_PORTS = ModuleBlock(10, parse=PortRange.parse)
WORKER_PORTS = ModuleBlock(20, parse=PortRange.parse)
PHONE_PORTS = ModuleBlock(10, parse=PortRange.parse)
SUITE = "AES_CM_128_HMAC_SHA1_80"
PROFILE = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
TAG = 10
CALLER_SSRC, CALLEE_SSRC = 0xCA11E4, 0xCA11EE


@pytest.fixture(params=["in-process", "media-workers"])
async def relay(request: pytest.FixtureRequest, nursery: trio.Nursery) -> AsyncIterator[Relay]:
    if request.param == "in-process":
        local = MediaRelay(PortAllocator(ADDRESS, RELAY_PORTS.get()))
        await nursery.start(local.serve)
        yield local
        local.close()
        assert local.allocator.in_use == 0
        return
    pool = WorkerPool(ADDRESS, WORKER_PORTS.get(), 1, stats_interval=0.05, restart_delay=0.05)
    async with trio.open_nursery() as workers:
        await workers.start(pool.serve)
        yield pool.for_call()
        pids = set(pool.worker_pids())
        workers.cancel_scope.cancel()
    assert all(process_gone(pid) for pid in pids if pid is not None)


def rtp(sequence: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence, 160 * sequence, ssrc) + b"\xd5" * 160


def sdp(port: int) -> SessionDescription:
    text = (
        f"v=0\no=phone {port} 1 IN IP4 {ADDRESS}\ns=-\nc=IN IP4 {ADDRESS}\nt=0 0\n"
        f"m=audio {port} RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
    )
    return parse_sdp_untrusted(text.replace("\n", "\r\n").encode())


def session_of(key: bytes, direction: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(pylibsrtp.Policy(key, direction, srtp_profile=PROFILE))


async def test_a_rekey_keeps_the_roll_over_counter_of_each_key_kept(relay: Relay) -> None:
    allocator = PortAllocator(ADDRESS, PHONE_PORTS.get())
    pairs = [allocator.allocate(), allocator.allocate()]
    caller, callee = Phone(pairs[0]), Phone(pairs[1])
    session = MediaSession(relay, media_address=ADDRESS)
    srtp = StreamSrtp()
    ours, theirs, theirs_new = master_key(SUITE, 3), master_key(SUITE, 4), master_key(SUITE, 5)
    # The callee's phone: what it sends under its key (with an MKI), what it reads under ours.
    callee_sends = session_of(theirs, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    callee_reads = session_of(ours, pylibsrtp.Policy.SSRC_ANY_INBOUND)
    try:
        to_callee = session.offer_from("a", sdp(caller.pair.rtp_port))
        (stream,) = session.streams
        assert isinstance(stream, MediaStream | RemoteStream)
        to_caller = session.answer_from("b", sdp(callee.pair.rtp_port))
        caller_to = (ADDRESS, parse_sdp_untrusted(serialize_sdp(to_caller)).media[0].port)
        callee_to = (ADDRESS, parse_sdp_untrusted(serialize_sdp(to_callee)).media[0].port)

        async def rekey(keys: SrtpKeys) -> None:
            if isinstance(stream, MediaStream):
                srtp.apply(stream, StreamKeys(None, keys, blocked=False))
            else:
                stream.apply_keys(StreamKeys(None, keys, blocked=False))
            session.settle()
            await session.applied()

        async def both_ways(sequences: list[int], mki: bytes | None) -> None:
            """Each phone sends one packet per sequence number; each must hear the other's."""
            for sequence in sequences:
                packet = callee_sends.protect(rtp(sequence, CALLEE_SSRC))
                if mki is not None:  # RFC 3711 §3.1: the MKI just before the tag
                    packet = packet[:-TAG] + mki + packet[-TAG:]
                callee.pair.rtp_socket.sendto(packet, callee_to)
                caller.pair.rtp_socket.sendto(rtp(sequence, CALLER_SSRC), caller_to)
                with trio.fail_after(WORKER_TIMEOUT):
                    assert await caller.receive_wire() == rtp(sequence, CALLEE_SSRC)
                    heard = callee_reads.unprotect(await callee.receive_wire())
                assert heard == rtp(sequence, CALLER_SSRC)

        await rekey(SrtpKeys(SUITE, local_key=ours, remote_key=theirs, remote_mki=b"\x01"))
        await both_ways([65534, 65535, 0, 1], b"\x01")
        # A re-INVITE whose answer changes only the callee's MKI: its key, its ROC go on.
        await rekey(SrtpKeys(SUITE, local_key=ours, remote_key=theirs, remote_mki=b"\x02"))
        await both_ways([2, 3], b"\x02")
        # Our re-offer kept our key, the callee answered with a new one of its own: it starts
        # a new context for it (ROC 0, sequence numbers going on); ours must go on at ROC 1.
        callee_sends = session_of(theirs_new, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        await rekey(SrtpKeys(SUITE, local_key=ours, remote_key=theirs_new))
        await both_ways([4, 5], None)
    finally:
        session.close()
        srtp.close()
        for pair in pairs:
            pair.close()


async def test_keys_back_after_a_plain_stretch_go_on_at_their_roll_over_counter(
    relay: Relay,
) -> None:
    """A re-INVITE takes the callee's leg to plain RTP/AVP, a later one back to RTP/SAVP with
    the same keys (docs/media_security.md, "A stream that goes plain and back"): the phone's
    contexts went on (ROC 1), so must the gateway's, in process and in a media worker. Before
    session 41 the gateway started them again at ROC 0 (the phone authenticated nothing of
    ours, nor we its packets, and our key protected indices already used)."""
    allocator = PortAllocator(ADDRESS, PHONE_PORTS.get())
    pairs = [allocator.allocate(), allocator.allocate()]
    caller, callee = Phone(pairs[0]), Phone(pairs[1])
    session = MediaSession(relay, media_address=ADDRESS)
    srtp = StreamSrtp()
    ours, theirs = master_key(SUITE, 6), master_key(SUITE, 7)
    callee_sends = session_of(theirs, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    callee_reads = session_of(ours, pylibsrtp.Policy.SSRC_ANY_INBOUND)
    try:
        to_callee = session.offer_from("a", sdp(caller.pair.rtp_port))
        (stream,) = session.streams
        assert isinstance(stream, MediaStream | RemoteStream)
        to_caller = session.answer_from("b", sdp(callee.pair.rtp_port))
        caller_to = (ADDRESS, parse_sdp_untrusted(serialize_sdp(to_caller)).media[0].port)
        callee_to = (ADDRESS, parse_sdp_untrusted(serialize_sdp(to_callee)).media[0].port)

        async def rekey(keys: SrtpKeys | None) -> None:
            if isinstance(stream, MediaStream):
                srtp.apply(stream, StreamKeys(None, keys, blocked=False))
            else:
                stream.apply_keys(StreamKeys(None, keys, blocked=False))
            session.settle()
            await session.applied()

        async def both_ways(sequences: list[int], *, plain: bool = False) -> None:
            for sequence in sequences:
                packet = rtp(sequence, CALLEE_SSRC)
                callee.pair.rtp_socket.sendto(
                    packet if plain else callee_sends.protect(packet), callee_to
                )
                caller.pair.rtp_socket.sendto(rtp(sequence, CALLER_SSRC), caller_to)
                with trio.fail_after(WORKER_TIMEOUT):
                    assert await caller.receive_wire() == rtp(sequence, CALLEE_SSRC)
                    heard = await callee.receive_wire()
                if not plain:
                    heard = callee_reads.unprotect(heard)
                assert heard == rtp(sequence, CALLER_SSRC)

        keys = SrtpKeys(SUITE, local_key=ours, remote_key=theirs)
        await rekey(keys)
        await both_ways([65534, 65535, 0, 1])
        await rekey(None)  # RTP/AVP: the phone sends and reads plain RTP meanwhile
        await both_ways([2], plain=True)
        await rekey(keys)  # back to RTP/SAVP, the same a=crypto keys both ways
        await both_ways([3, 4])
    finally:
        session.close()
        srtp.close()
        for pair in pairs:
            pair.close()


async def test_a_key_of_ours_whose_context_was_freed_is_refused(relay: Relay) -> None:
    """Both keys change at every re-key (a phone re-keying each re-INVITE) until the parked
    contexts' bound frees the one our first key protected with; should that key come back,
    a new context would protect the same (key, SSRC, index) again (RFC 3711 §9.1). It is
    refused, in process (the apply raises, the stream blocked) and in a media worker (the
    stream fails, which ends the call), where before session 42 both started it again at
    ROC 0 and the callee got our first packets' ciphertext again."""
    allocator = PortAllocator(ADDRESS, PHONE_PORTS.get())
    pairs = [allocator.allocate(), allocator.allocate()]
    caller, callee = Phone(pairs[0]), Phone(pairs[1])
    session = MediaSession(relay, media_address=ADDRESS)
    srtp = StreamSrtp()
    first = SrtpKeys(SUITE, local_key=master_key(SUITE, 8), remote_key=master_key(SUITE, 9))
    try:
        session.offer_from("a", sdp(caller.pair.rtp_port))
        (stream,) = session.streams
        assert isinstance(stream, MediaStream | RemoteStream)
        to_caller = session.answer_from("b", sdp(callee.pair.rtp_port))
        caller_to = (ADDRESS, parse_sdp_untrusted(serialize_sdp(to_caller)).media[0].port)

        async def rekey(keys: SrtpKeys) -> None:
            if isinstance(stream, MediaStream):
                srtp.apply(stream, StreamKeys(None, keys, blocked=False))
            else:
                stream.apply_keys(StreamKeys(None, keys, blocked=False))
            session.settle()
            await session.applied()

        await rekey(first)
        callee_reads = session_of(first.local_key, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        for sequence in (65534, 65535, 0, 1):
            caller.pair.rtp_socket.sendto(rtp(sequence, CALLER_SSRC), caller_to)
            with trio.fail_after(WORKER_TIMEOUT):
                heard = callee_reads.unprotect(await callee.receive_wire())
            assert heard == rtp(sequence, CALLER_SSRC)
        for seed in range(10, 20, 2):  # five re-keys: our first key's context is freed
            keys = SrtpKeys(SUITE, master_key(SUITE, seed), master_key(SUITE, seed + 1))
            await rekey(keys)
        if isinstance(stream, MediaStream):
            with pytest.raises(LocalMediaError, match="packet indices again"):
                await rekey(first)
            assert stream.b_to_a.blocked
        else:
            await rekey(first)
            with trio.fail_after(WORKER_TIMEOUT):
                while stream.failure is None:
                    await trio.sleep(0.01)  # the worker's StreamFailed is on its way
            assert "packet indices again" in stream.failure
    finally:
        session.close()
        srtp.close()
        for pair in pairs:
            pair.close()
