"""T.38 fax (the relay's opaque mode) in media worker processes (``[media] workers >= 2``), on
real loopback sockets: what test_opaque_relay.py shows of the in-process relay, through the
control channel (``SetOpaque``, ``TappedDatagram``).

Two real workers relay on 127.0.0.1 in PORTS (a worker without its process, for its outbox, in
OUTBOX_PORTS: blocks of this process, tests/port_blocks.py); the phones bind ephemeral ports.
Nothing sleeps a fixed time: every wait polls under a bound, and a drop is shown by a counter the
worker pushes. Every process started is stopped (checked).
"""

from __future__ import annotations

import logging
import os
import signal
import socket

import pylibsrtp
import pytest
import trio

from gateway.core.config import PortRange
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.keying import StreamKeys
from gateway.core.media.relay import MAX_OPAQUE_DATAGRAM, Direction
from gateway.core.media.remote_relay import WORKER_EXITED, RemoteStream, WorkerPool
from gateway.core.media.session import MediaSession
from gateway.core.media.taps import CallTaps
from gateway.core.media.worker import OUT_BUFFER_LIMIT, Worker
from gateway.core.media.worker_protocol import (
    FrameReader,
    Open,
    SetOpaque,
    SetTap,
    Tapped,
    TappedDatagram,
)
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.integration.media.phone_sockets import (
    ADDRESS,
    TRICKY,
    EphemeralPhone,
    ephemeral_phones,
    eventually,
    rtp,
    udptl,
)
from tests.integration.media.relay_fixtures import (
    GATEWAY_KEY_TO_B,
    PHONE_B_KEY,
    SUITE,
    AudioSink,
    FaxSink,
    worker_pool_fixture,
)
from tests.port_blocks import ModuleBlock

PORTS = ModuleBlock(40, parse=PortRange.parse)
OUTBOX_PORTS = ModuleBlock(20, parse=PortRange.parse)


pool = worker_pool_fixture(PORTS)


async def fax_stream(pool: WorkerPool, alice: EphemeralPhone, bob: EphemeralPhone) -> RemoteStream:
    """A worker stream switched to T.38 in the session's order: the mode, then the remotes,
    then keying's unblocking; one barrier at the end (the worker applies them in order)."""
    stream = pool.open_stream()
    stream.set_opaque(True)
    stream.a.set_remote(alice.address)
    stream.b.set_remote(bob.address)
    stream.a_to_b.blocked = False
    stream.b_to_a.blocked = False
    await pool.sync(stream.worker)
    return stream


async def test_datagrams_are_relayed_byte_identical_both_ways_and_counted(
    pool: WorkerPool,
) -> None:
    alice, bob = await ephemeral_phones(2)
    stream = await fax_stream(pool, alice, bob)
    assert stream.opaque
    for datagram in TRICKY:  # first octets of RTP version 2, DTLS, STUN ranges; 3 octets
        await alice.send(datagram, stream.a.ports.rtp_port)
        assert await bob.receive() == (datagram, (ADDRESS, stream.b.ports.rtp_port))
        await bob.send(datagram[::-1], stream.b.ports.rtp_port)
        assert await alice.receive() == (datagram[::-1], (ADDRESS, stream.a.ports.rtp_port))
    await eventually(
        lambda: (
            stream.a_to_b.statistics().udptl_packets == len(TRICKY)
            and stream.b_to_a.statistics().udptl_packets == len(TRICKY)
        ),
        "counters pushed",
    )
    # Counted apart from RTP across the worker channel too.
    assert stream.a_to_b.statistics().udptl_bytes == sum(len(d) for d in TRICKY)
    assert stream.a_to_b.statistics().rtp_packets == 0 == stream.b_to_a.statistics().rtp_bytes
    assert stream.a_to_b.statistics().dropped == 0
    assert stream.b_to_a.statistics().dropped == 0


async def test_oversize_is_dropped_and_latching_follows_the_real_source(
    pool: WorkerPool,
) -> None:
    alice, bob, natted = await ephemeral_phones(3)
    stream = await fax_stream(pool, alice, bob)
    await alice.send(b"\x80" * (MAX_OPAQUE_DATAGRAM + 1), stream.a.ports.rtp_port)
    await eventually(lambda: stream.a_to_b.statistics().dropped_malformed == 1, "oversize")
    # Bob's SDP says one port, his datagrams come from another (a NAT): the reply goes there.
    await natted.send(udptl(1, b"\x01"), stream.b.ports.rtp_port)
    await alice.send(b"\x80" * MAX_OPAQUE_DATAGRAM, stream.a.ports.rtp_port)  # the largest
    assert await natted.receive() == (
        b"\x80" * MAX_OPAQUE_DATAGRAM,
        (ADDRESS, stream.b.ports.rtp_port),
    )
    assert await alice.receive() == (udptl(1, b"\x01"), (ADDRESS, stream.a.ports.rtp_port))


async def test_tap_copies_say_fax_or_rtp_by_what_the_worker_forwarded(pool: WorkerPool) -> None:
    alice, bob = await ephemeral_phones(2)
    stream = await fax_stream(pool, alice, bob)
    stream.set_opaque(False)
    copies: list[tuple[str, bytes]] = []
    faxes: list[tuple[str, bytes, tuple[str, int] | None]] = []
    stream.set_tap(
        lambda direction, packet: copies.append((direction.value, packet)),
        lambda direction, datagram, source: faxes.append((direction.value, datagram, source)),
    )
    await pool.sync(stream.worker)
    await alice.send(rtp(1), stream.a.ports.rtp_port)
    await bob.receive()
    stream.set_opaque(True)
    await pool.sync(stream.worker)
    await alice.send(udptl(0x8001, b"\x06"), stream.a.ports.rtp_port)
    await bob.receive()
    await bob.send(udptl(0x8002, b"\x07"), stream.b.ports.rtp_port)
    await alice.receive()
    await eventually(lambda: len(faxes) == 2, "both fax copies")
    assert copies == [("a_to_b", rtp(1))]
    assert faxes == [
        ("a_to_b", udptl(0x8001, b"\x06"), alice.address),
        ("b_to_a", udptl(0x8002, b"\x07"), bob.address),
    ]
    # Without a datagram tap the copies go to the packet tap; None stops both.
    only_packets: list[bytes] = []
    stream.set_tap(lambda direction, packet: only_packets.append(packet))
    await pool.sync(stream.worker)
    await alice.send(udptl(3, b"\x08"), stream.a.ports.rtp_port)
    await bob.receive()
    await eventually(lambda: only_packets == [udptl(3, b"\x08")], "the copy as a packet")
    stream.set_tap(None)
    await pool.sync(stream.worker)
    await alice.send(udptl(4, b"\x09"), stream.a.ports.rtp_port)
    await bob.receive()
    await pool.sync(stream.worker)
    assert len(faxes) == 2 and len(copies) == 1 and len(only_packets) == 1


async def test_call_taps_give_a_workers_fax_to_sinks_that_take_datagrams(
    pool: WorkerPool, caplog: pytest.LogCaptureFixture
) -> None:
    """As test_opaque_relay's in-process test: the interception gets each datagram with the
    address it came from and our port it arrived on; the recorder misses it, logged once."""
    alice, bob = await ephemeral_phones(2)
    session = MediaSession(pool.for_call(), media_address=ADDRESS)
    fax = "m=image {} udptl t38\r\na=T38FaxVersion:0\r\n"
    head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    session.offer_from("a", parse_sdp_untrusted((head + fax.format(alice.address[1])).encode()))
    session.answer_from("b", parse_sdp_untrusted((head + fax.format(bob.address[1])).encode()))
    session.settle()
    (stream,) = session.streams
    assert isinstance(stream, RemoteStream) and stream.opaque
    stream.a_to_b.blocked = stream.b_to_a.blocked = False  # the call's keying does this
    recorder, interception = AudioSink(), FaxSink()
    taps = CallTaps(
        "call-1", session, [("recorder", recorder), ("intercept", interception)], clock=lambda: 0.0
    )
    taps.attach()
    await pool.sync(stream.worker)
    try:
        with caplog.at_level(logging.INFO, logger="gateway.core.media.taps"):
            for sequence in (0x8001, 0x8002):
                await alice.send(udptl(sequence, b"\x06"), stream.a.ports.rtp_port)
                assert (await bob.receive())[0] == udptl(sequence, b"\x06")
            await eventually(lambda: len(interception.datagrams) == 2, "both copies")
        assert interception.datagrams == [
            (
                "0",
                "a_to_b",
                udptl(sequence, b"\x06"),
                alice.address,
                (ADDRESS, stream.a.ports.rtp_port),
            )
            for sequence in (0x8001, 0x8002)
        ]
        assert recorder.packets == [] and interception.packets == []
        assert caplog.text.count("T.38 fax is not recorded by recorder") == 1
        assert "intercept" not in caplog.text
    finally:
        taps.close()
        session.close()


async def test_back_to_audio_with_srtp_keys_negotiated_afresh(pool: WorkerPool) -> None:
    alice, bob = await ephemeral_phones(2)
    stream = await fax_stream(pool, alice, bob)
    await alice.send(udptl(1, b"\x01"), stream.a.ports.rtp_port)
    await bob.receive()
    stream.set_opaque(False)
    b_keys = SrtpKeys(SUITE, local_key=GATEWAY_KEY_TO_B, remote_key=PHONE_B_KEY)
    stream.apply_keys(StreamKeys(None, b_keys, blocked=False))
    await pool.sync(stream.worker)
    assert not stream.opaque
    await alice.send(b"\x00\x01\x02", stream.a.ports.rtp_port)  # not RTP: dropped now
    await eventually(lambda: stream.a_to_b.statistics().dropped_malformed == 1, "dropped")
    await alice.send(rtp(2), stream.a.ports.rtp_port)
    protected, _ = await bob.receive()
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    b_receives = pylibsrtp.Session(
        pylibsrtp.Policy(GATEWAY_KEY_TO_B, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
    )
    assert protected != rtp(2)
    assert b_receives.unprotect(protected) == rtp(2)


async def test_a_worker_killed_mid_fax_ends_the_call_as_for_rtp(
    pool: WorkerPool, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = await ephemeral_phones(2)
    lost: list[str] = []
    stream = pool.for_call(lost.append).open_stream()
    stream.set_opaque(True)
    stream.a.set_remote(alice.address)
    stream.b.set_remote(bob.address)
    stream.a_to_b.blocked = stream.b_to_a.blocked = False
    await pool.sync(stream.worker)
    await alice.send(udptl(0x8001, b"\x06"), stream.a.ports.rtp_port)
    await bob.receive()
    pid = pool.worker_pids()[stream.worker]
    assert pid is not None
    with caplog.at_level(logging.ERROR, logger="gateway.core.media.remote_relay"):
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: bool(lost), "the call told")
    assert lost == [WORKER_EXITED]
    assert stream.failure == WORKER_EXITED and stream.closed
    stream.set_opaque(False)  # a re-INVITE on a lost stream: harmless, nothing sent
    assert stream.opaque
    stream.close()
    await eventually(lambda: pool.worker_starts()[stream.worker] == 2, "restarted")


async def test_a_workers_fax_copies_are_dropped_and_counted_when_its_channel_is_flooded() -> None:
    """The worker's side of a tapped opaque stream, without a process: its copies are
    ``TappedDatagram`` messages, queued like RTP copies and, past the outbox's bound, dropped
    and counted instead (the relay never waits for the SIP process)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        worker = Worker(trio.socket.from_stdlib_socket(ours), ADDRESS, OUTBOX_PORTS.get(), 1.0)
        try:
            a_port, b_port = worker.ports.refill()[:2]
            for message in (Open(1, a_port, b_port), SetOpaque(1, True), SetTap(1, True)):
                worker.handle(message)
            stream, _ = worker._streams[1]
            assert stream.opaque
            (copy,) = stream.a_to_b.taps
            outbox = worker.outbox
            outbox._out.clear()  # PairsReady
            copy(Direction.A_TO_B, udptl(0x8001, b"\x06"))
            assert FrameReader().feed(bytes(outbox._out)) == [
                TappedDatagram(1, "a_to_b", None, udptl(0x8001, b"\x06"))  # nothing latched yet
            ]
            outbox._out[:] = bytes(OUT_BUFFER_LIMIT + 1)
            copy(Direction.A_TO_B, udptl(0x8002, b"\x06"))
            assert (len(outbox._out), outbox.dropped) == (OUT_BUFFER_LIMIT + 1, 1)
            worker.handle(SetOpaque(1, False))  # back to audio: copies are RTP's again
            outbox._out.clear()
            copy(Direction.B_TO_A, rtp(1))
            assert FrameReader().feed(bytes(outbox._out)) == [Tapped(1, "b_to_a", rtp(1))]
        finally:
            worker.relay.close()
            worker.ports.close()
