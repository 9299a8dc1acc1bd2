"""Media worker processes (``[media] workers >= 2``) on real loopback sockets.

A WorkerPool with two real worker processes relays on 127.0.0.1 in PORTS, 40 ports (worker 0: the
first 20, worker 1: the rest; a block of this process, tests/port_blocks.py, so no other socket
takes one and the counts of bound pairs are exact); the phones bind ephemeral ports. SRTP keys are
set through the control channel and checked with pylibsrtp on the receiving phone. Nothing sleeps a
fixed time: every wait polls under a ``trio.fail_after`` bound. Every process started is stopped by
the end of its test (checked).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pylibsrtp
import pytest
import trio

from gateway.core.c_heap import c_heap_figures
from gateway.core.config import PortRange
from gateway.core.interfaces import SrtpKeys
from gateway.core.media import remote_relay, stun
from gateway.core.media.errors import LocalMediaError, PortsExhausted
from gateway.core.media.ice import IceCredentials, IceLiteResponder
from gateway.core.media.keying import StreamKeys
from gateway.core.media.ports import rtp_ports
from gateway.core.media.remote_relay import WORKER_EXITED, RemoteStream, WorkerPool
from gateway.core.media.worker_protocol import (
    EXIT_PROTOCOL_MISMATCH,
    PROTOCOL_VERSION,
    Hello,
    PairsReady,
    encode,
)
from gateway.plugins.keyexchange.zrtp.packets import HELLO, HELLO_ACK, frame, message
from tests.integration.media.phone_sockets import (
    ADDRESS,
    WORKER_TIMEOUT,
    EphemeralPhone,
    ephemeral_phones,
    eventually,
    rtp,
)
from tests.integration.media.relay_fixtures import (
    GATEWAY_KEY_TO_B,
    PHONE_B_KEY,
    SUITE,
    connected,
    process_gone,
    worker_pool_fixture,
)
from tests.port_blocks import ModuleBlock

PORTS = ModuleBlock(40, parse=PortRange.parse)


def range_low() -> int:
    """The first port of PORTS."""
    return PORTS.get().low


def small() -> PortRange:
    return PortRange(range_low(), range_low() + 7)  # 2 pairs per worker: 1 stream each


ROOT = Path(__file__).parents[3]


pool = worker_pool_fixture(PORTS)


async def relayed(
    stream: RemoteStream, a: EphemeralPhone, b: EphemeralPhone, sequence: int
) -> None:
    """One RTP packet each way arrives unchanged (SSRC, sequence number, payload)."""
    await a.send(rtp(sequence), stream.a.ports.rtp_port)
    data, source = await b.receive()
    assert data == rtp(sequence)
    assert source == (ADDRESS, stream.b.ports.rtp_port)
    await b.send(rtp(sequence, ssrc=0x99), stream.b.ports.rtp_port)
    data, source = await a.receive()
    assert data == rtp(sequence, ssrc=0x99)
    assert source == (ADDRESS, stream.a.ports.rtp_port)


async def test_streams_go_to_the_least_loaded_worker_with_ports_of_its_slice(
    pool: WorkerPool,
) -> None:
    slices = [set(rtp_ports(part)) for part in pool.slices]
    assert pool.slices == [
        PortRange(range_low(), range_low() + 19),
        PortRange(range_low() + 20, range_low() + 39),
    ]
    streams = [pool.open_stream() for _ in range(4)]
    assert [s.worker for s in streams] == [0, 1, 0, 1]
    for stream in streams:
        for side in (stream.a, stream.b):
            assert side.ports.rtp_port in slices[stream.worker]
            assert side.ports.rtcp_port == side.ports.rtp_port + 1
    assert pool.worker_ready() == [6, 6]  # of 10 pairs each
    streams[0].close()
    streams[2].close()
    assert pool.worker_streams() == [0, 2]
    # The worker binds the released pairs again and reports them.
    await eventually(lambda: pool.worker_ready() == [10, 6], "pairs back in reserve")
    assert pool.open_stream().worker == 0  # [1, 2]
    # A call's later streams stay on its first stream's worker.
    call = pool.for_call()
    assert call.open_stream().worker == 0  # [2, 2]
    assert pool.open_stream().worker == 0  # a tie goes to the first: [3, 2]
    assert call.open_stream().worker == 0  # pinned, though worker 1 has fewer: [4, 2]
    assert pool.worker_streams() == [4, 2]


async def test_each_worker_relays_rtp_and_pushes_its_counters(pool: WorkerPool) -> None:
    a0, b0, a1, b1 = await ephemeral_phones(4)
    s0, s1 = pool.open_stream(), pool.open_stream()
    assert (s0.worker, s1.worker) == (0, 1)
    # A new worker stream forwards nothing until the call's keying unblocks it.
    await connected(pool, s0, a0, b0, blocked=True)
    await a0.send(rtp(0), s0.a.ports.rtp_port)
    await eventually(lambda: s0.a_to_b.statistics().dropped_blocked == 1, "blocked at first")
    # The reason travels with the worker's counters (for the call record and the metrics).
    assert s0.a_to_b.dropped_by_reason() == (0, 1, 0, 0, 0, 0)
    assert s0.a_to_b.totals()[2] == 1
    await connected(pool, s0, a0, b0)
    await connected(pool, s1, a1, b1)
    for sequence in range(1, 4):
        await relayed(s0, a0, b0, sequence)
        await relayed(s1, a1, b1, sequence)
    for stream in (s0, s1):
        await eventually(
            lambda s=stream: (
                s.a_to_b.statistics().rtp_packets == 3  # type: ignore[misc]
                and s.b_to_a.statistics().rtp_packets == 3
            ),
            "counters pushed",
        )
        assert stream.a_to_b.statistics().rtp_bytes == 3 * len(rtp(1))
        assert stream.last_activity > 0
    s0.close()
    assert s0.closed
    await eventually(lambda: len(pool.worker_streams()) == 2, "")
    assert pool.worker_streams() == [0, 1]


PER_STREAM_TABLES = (
    "media_streams",
    "media_port_pairs",
    "worker_streams",
    "worker_taps",
    "worker_activity",
    "worker_counters",
)


def tables_of(pool: WorkerPool, worker: int) -> dict[str, int]:
    return dict(pool.worker_tables()[worker])


async def test_each_worker_reports_its_tables_which_drain_when_its_streams_close(
    pool: WorkerPool,
) -> None:
    """What ``voipgw_media_worker_internal_entries`` shows: each worker's own tables, pushed
    every FULL_EVERY statistics intervals, back to their idle size once its streams closed."""
    await eventually(lambda: all(pool.worker_tables()), "both workers reported")
    idle = tables_of(pool, 0)
    assert set(idle) == {
        *PER_STREAM_TABLES,
        "reserved_port_pairs",
        "trio_tasks",
        "python_allocated_blocks",
        *c_heap_figures(),  # malloc_in_use_bytes and malloc_free_bytes, with glibc
    }
    assert [idle[name] for name in PER_STREAM_TABLES] == [0] * len(PER_STREAM_TABLES)
    assert idle["reserved_port_pairs"] == 10  # its slice's 20 ports, all bound ahead
    assert idle["trio_tasks"] > 0 and idle["python_allocated_blocks"] > 10_000
    if c_heap_figures():
        # An interpreter with libsrtp and OpenSSL loaded holds megabytes of malloc's memory.
        assert idle["malloc_in_use_bytes"] > 1_000_000 and idle["malloc_free_bytes"] > 0

    a, b = await ephemeral_phones(2)
    stream = pool.open_stream()
    assert stream.worker == 0
    stream.set_tap(lambda *_: None)
    await connected(pool, stream, a, b)
    await relayed(stream, a, b, 1)
    await eventually(
        # Its two legs' port pairs; the rest of the slice still bound ahead.
        lambda: [tables_of(pool, 0)[name] for name in PER_STREAM_TABLES] == [1, 2, 1, 1, 1, 1],
        "worker 0's tables hold its stream",
    )
    assert tables_of(pool, 0)["reserved_port_pairs"] == 8
    assert [tables_of(pool, 1)[name] for name in PER_STREAM_TABLES] == [0] * 6

    stream.close()
    await eventually(
        lambda: [tables_of(pool, 0)[name] for name in PER_STREAM_TABLES] == [0] * 6,
        "worker 0's tables drained",
    )
    await eventually(
        lambda: tables_of(pool, 0)["reserved_port_pairs"] == 10, "its pairs bound again ahead"
    )


async def test_rtp_to_srtp_with_keys_sent_over_the_channel(pool: WorkerPool) -> None:
    """Leg A plain RTP, leg B SDES-SRTP: the worker protects A->B and unprotects B->A with
    contexts it built from the keys the SIP side sent."""
    a, b = await ephemeral_phones(2)
    pool.open_stream()  # worker 0 busy: the SRTP stream goes to worker 1
    stream = pool.open_stream()
    assert stream.worker == 1
    await connected(pool, stream, a, b, blocked=True)
    assert stream.a_to_b.blocked and stream.b_to_a.blocked
    b_keys = SrtpKeys(SUITE, local_key=GATEWAY_KEY_TO_B, remote_key=PHONE_B_KEY)

    # No media before keys: blocked, counted, nothing reaches B.
    stream.apply_keys(StreamKeys(None, b_keys, blocked=True))
    await pool.sync(stream.worker)
    await a.send(rtp(1), stream.a.ports.rtp_port)
    await eventually(lambda: stream.a_to_b.statistics().dropped_blocked == 1, "blocked drop")

    stream.apply_keys(StreamKeys(None, b_keys, blocked=False))
    assert not stream.a_to_b.blocked and not stream.b_to_a.blocked
    await pool.sync(stream.worker)  # applied before the next packet arrives
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    b_receives = pylibsrtp.Session(
        pylibsrtp.Policy(GATEWAY_KEY_TO_B, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
    )
    b_sends = pylibsrtp.Session(
        pylibsrtp.Policy(PHONE_B_KEY, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    )
    payload = bytes(range(160))
    for sequence in range(2, 6):
        await a.send(rtp(sequence, payload=payload), stream.a.ports.rtp_port)
        wire, _ = await b.receive()
        assert wire != rtp(sequence, payload=payload)  # encrypted and tagged
        assert len(wire) == len(rtp(sequence)) + 10  # 80-bit tag (RFC 3711 §4.2)
        assert b_receives.unprotect(wire) == rtp(sequence, payload=payload)
        await b.send(
            b_sends.protect(rtp(sequence, ssrc=7, payload=payload)), stream.b.ports.rtp_port
        )
        plain, _ = await a.receive()
        assert plain == rtp(sequence, ssrc=7, payload=payload)

    await eventually(
        lambda: (
            stream.srtp_statistics().get("b") is not None
            and stream.srtp_statistics()["b"].protected == 4
            and stream.srtp_statistics()["b"].unprotected == 4
        ),
        "SRTP counters pushed",
    )
    assert "a" not in stream.srtp_statistics()  # leg A is plain RTP


async def test_new_keys_on_a_keyed_stream_replace_the_workers_contexts_both_ways(
    pool: WorkerPool,
) -> None:
    """A leg re-keyed mid-call without any SDP (the dtls engine's KeysReady for the phone's new
    handshake on the same address, RFC 6347 §4.2.8; session 44): the keys cross the channel
    and the worker builds new contexts both ways. SRTP under the new keys goes through at
    once, the sequence going on; the phone's SRTP under the old keys is dropped."""
    a, b = await ephemeral_phones(2)
    stream = pool.open_stream()
    await connected(pool, stream, a, b, blocked=True)
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    old_to_b, old_from_b = GATEWAY_KEY_TO_B, PHONE_B_KEY
    new_to_b, new_from_b = bytes(range(30)), bytes(range(30, 60))
    payload = bytes(range(160))

    async def both_ways(to_b: bytes, from_b: bytes, sequences: range) -> None:
        b_receives = pylibsrtp.Session(
            pylibsrtp.Policy(to_b, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        )
        b_sends = pylibsrtp.Session(
            pylibsrtp.Policy(from_b, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        )
        for sequence in sequences:
            await a.send(rtp(sequence, payload=payload), stream.a.ports.rtp_port)
            wire, _ = await b.receive()
            assert b_receives.unprotect(wire) == rtp(sequence, payload=payload)
            sent = rtp(sequence, ssrc=7, payload=payload)
            await b.send(b_sends.protect(sent), stream.b.ports.rtp_port)
            plain, _ = await a.receive()
            assert plain == sent

    stream.apply_keys(
        StreamKeys(None, SrtpKeys(SUITE, local_key=old_to_b, remote_key=old_from_b), False)
    )
    await pool.sync(stream.worker)
    await both_ways(old_to_b, old_from_b, range(1, 4))
    stream.apply_keys(
        StreamKeys(None, SrtpKeys(SUITE, local_key=new_to_b, remote_key=new_from_b), False)
    )
    await pool.sync(stream.worker)
    await both_ways(new_to_b, new_from_b, range(4, 7))
    stale = pylibsrtp.Session(
        pylibsrtp.Policy(old_from_b, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    )
    await b.send(stale.protect(rtp(9, ssrc=8, payload=payload)), stream.b.ports.rtp_port)
    await eventually(lambda: stream.b_to_a.statistics().dropped_transform == 1, "stale dropped")


async def test_payload_types_are_renumbered_by_the_worker_between_unprotect_and_protect(
    pool: WorkerPool,
) -> None:
    """SetPayloadTypes: a worker's stream renumbers like the in-process relay (telephone-event
    101 on leg A, 96 on leg B), on the plain packet: phone B authenticates the new header."""
    a, b = await ephemeral_phones(2)
    stream = pool.open_stream()
    await connected(pool, stream, a, b)
    b_keys = SrtpKeys(SUITE, local_key=GATEWAY_KEY_TO_B, remote_key=PHONE_B_KEY)
    stream.apply_keys(StreamKeys(None, b_keys, blocked=False))
    stream.a_to_b.payload_types = {101: 96}
    stream.b_to_a.payload_types = {96: 101}
    assert stream.a_to_b.payload_types == {101: 96}
    await pool.sync(stream.worker)
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    b_receives = pylibsrtp.Session(
        pylibsrtp.Policy(GATEWAY_KEY_TO_B, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
    )
    b_sends = pylibsrtp.Session(
        pylibsrtp.Policy(PHONE_B_KEY, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    )

    def event(sequence: int, payload_type: int, ssrc: int = 0x1234ABCD) -> bytes:
        header = struct.pack("!BBHII", 0x80, 0x80 | payload_type, sequence, 8000, ssrc)
        return header + b"\x05\x0a\x00\xa0"  # RFC 4733 §2.3: event 5, marker bit set

    await a.send(event(1, 101), stream.a.ports.rtp_port)
    wire, _ = await b.receive()
    assert b_receives.unprotect(wire) == event(1, 96)
    await b.send(b_sends.protect(event(1, 96, ssrc=7)), stream.b.ports.rtp_port)
    assert (await a.receive())[0] == event(1, 101, ssrc=7)
    # Back to none: packets keep their numbers again.
    stream.a_to_b.payload_types = {}
    await pool.sync(stream.worker)
    await a.send(event(2, 101), stream.a.ports.rtp_port)
    wire, _ = await b.receive()
    assert b_receives.unprotect(wire) == event(2, 101)
    with pytest.raises(LocalMediaError):
        stream.b_to_a.payload_types = {96: 200}


async def test_red_blocks_are_renumbered_by_the_worker(pool: WorkerPool) -> None:
    """SetRedPayloadTypes: the worker rewrites the block payload types of leg A's RFC 2198 RED
    (63, Opus 111) into leg B's numbers (121, Opus 109); a malformed one is counted."""
    a, b = await ephemeral_phones(2)
    stream = pool.open_stream()
    await connected(pool, stream, a, b)
    stream.apply_keys(StreamKeys(None, None, blocked=False))
    stream.a_to_b.payload_types = {111: 109, 63: 121}
    stream.a_to_b.red_payload_types = (63,)
    assert stream.a_to_b.red_payload_types == (63,)
    await pool.sync(stream.worker)

    def red(red_type: int, block_type: int) -> bytes:
        header = struct.pack("!BBHII", 0x80, red_type, 1, 960, 0x1234ABCD)
        # RFC 2198 §3: F=1 header (offset 960, 3 octets), the primary's 1-octet header, blocks.
        return header + bytes([0x80 | block_type, 0x0F, 0x00, 0x03, block_type]) + bytes(7)

    await a.send(red(63, 111), stream.a.ports.rtp_port)
    assert (await b.receive())[0] == red(121, 109)
    await a.send(red(63, 111)[:14], stream.a.ports.rtp_port)  # a block header cut short
    await eventually(lambda: stream.a_to_b.statistics().dropped_malformed == 1, "counted")
    with pytest.raises(LocalMediaError):
        stream.a_to_b.red_payload_types = (200,)


async def test_unusable_keys_end_the_stream_with_a_reason_that_names_no_key(
    pool: WorkerPool,
) -> None:
    lost: list[str] = []
    stream = pool.for_call(lost.append).open_stream()
    bad = SrtpKeys(SUITE, local_key=GATEWAY_KEY_TO_B[:7], remote_key=PHONE_B_KEY)
    stream.apply_keys(StreamKeys(bad, None, blocked=False))
    await eventually(lambda: bool(lost), "failure reported")
    assert "needs a 30-octet local key and salt, got 7 octets" in lost[0]
    assert GATEWAY_KEY_TO_B[:7].hex() not in lost[0]


async def test_dtls_datagrams_cross_the_channel_both_ways(pool: WorkerPool) -> None:
    a, b = await ephemeral_phones(2)
    stream = pool.open_stream()
    await connected(pool, stream, a, b)
    received: list[tuple[bytes, tuple[str, int]]] = []
    stream.a.set_non_rtp_handler(lambda packet, source: received.append((packet, source)))
    await pool.sync(stream.worker)
    hello = b"\x16\xfe\xfd" + bytes(range(60))  # RFC 7983: first byte 20..63 is DTLS
    await a.send(hello, stream.a.ports.rtp_port)
    await eventually(lambda: bool(received), "datagram forwarded")
    assert received == [(hello, a.address)]
    assert stream.a.send(b"\x16\xfe\xfd answer")
    data, source = await a.receive()
    assert (data, source) == (b"\x16\xfe\xfd answer", (ADDRESS, stream.a.ports.rtp_port))
    stream.a.set_non_rtp_handler(None)
    await pool.sync(stream.worker)
    await a.send(hello, stream.a.ports.rtp_port)
    await eventually(lambda: stream.a_to_b.statistics().dropped_malformed == 1, "dropped again")
    assert len(received) == 1


async def test_a_worker_copies_to_the_sdp_address_only_what_the_sip_process_lets_it(
    pool: WorkerPool,
) -> None:
    # SendDatagram carries StreamSide.send's copy_to_sdp_address: our DTLS server flight,
    # answering the ClientHello of a source other than the SDP address that latched the
    # socket, goes to that source alone (docs/media_security.md, "Forged handshakes").
    a, b, stranger = await ephemeral_phones(3)
    stream = pool.open_stream()
    await connected(pool, stream, a, b)
    received: list[tuple[bytes, tuple[str, int]]] = []
    stream.a.set_non_rtp_handler(lambda packet, source: received.append((packet, source)))
    await pool.sync(stream.worker)
    await stranger.send(b"\x16\xfe\xfd" + bytes(10), stream.a.ports.rtp_port)
    await eventually(lambda: bool(received), "the stranger's datagram latched and handed on")
    assert stream.a.send(b"\x16 server flight", copy_to_sdp_address=False)
    own = (ADDRESS, stream.a.ports.rtp_port)
    assert await stranger.receive() == (b"\x16 server flight", own)
    assert stream.a.send(b"\x16 client hello")
    assert await stranger.receive() == (b"\x16 client hello", own)
    assert await a.receive() == (b"\x16 client hello", own)  # the first a got


async def test_a_worker_answers_ice_checks_and_sends_media_to_the_nominated_source(
    pool: WorkerPool,
) -> None:
    """ICE-lite on a worker's stream (gateway/core/media/ice.py): the credentials cross the
    channel; the worker answers the checks and moves leg A's media to the nominated source."""
    a, b, other = await ephemeral_phones(3)
    stream = pool.open_stream()
    await connected(pool, stream, a, b)
    local = IceCredentials("gw01", "gatewaypassword0123456789")
    remote = IceCredentials("peer", "peerpassword0123456789")
    stream.a.set_ice_handler(IceLiteResponder(local, remote))
    await pool.sync(stream.worker)

    def check(tid: bytes, *, nominate: bool = False, pwd: str = local.pwd) -> bytes:
        attributes = [(stun.USERNAME, b"gw01:peer"), (stun.ICE_CONTROLLING, bytes(8))]
        if nominate:
            attributes.append((stun.USE_CANDIDATE, b""))
        return stun.encode_stun(stun.BINDING_REQUEST, tid, attributes, integrity_key=pwd.encode())

    await other.send(check(b"wrong-passwd", pwd="x" * 24), stream.a.ports.rtp_port)
    data, _ = await other.receive()
    assert stun.parse_stun_untrusted(data).message_type == stun.BINDING_ERROR
    await other.send(check(b"nominate-001", nominate=True), stream.a.ports.rtp_port)
    data, source = await other.receive()
    response = stun.parse_stun_untrusted(data)
    assert response.message_type == stun.BINDING_SUCCESS
    assert stun.integrity_ok(response, local.pwd.encode())
    assert source == (ADDRESS, stream.a.ports.rtp_port)
    # B's media now goes to the nominated source, not to A's SDP address.
    await b.send(rtp(1), stream.b.ports.rtp_port)
    data, _ = await other.receive()
    assert data == rtp(1)
    # ... and A's own SDP address may not take it back by sending (nobody checked it).
    await a.send(rtp(2), stream.a.ports.rtp_port)
    await other.send(rtp(3), stream.a.ports.rtp_port)
    data, _ = await b.receive()
    assert data == rtp(3)
    await eventually(
        lambda: stream.a_to_b.statistics().dropped_unlatched_source >= 1, "a's RTP dropped"
    )
    stream.a.set_ice_handler(None)
    await pool.sync(stream.worker)


async def test_a_tapped_stream_sends_decrypted_copies_over_the_channel(pool: WorkerPool) -> None:
    """A call's media taps (recording) on a worker stream: leg B is SDES-SRTP; the copies the
    SIP process gets are the plain packets, both directions, until the tap is removed."""
    a, b = await ephemeral_phones(2)
    stream = pool.open_stream()
    await connected(pool, stream, a, b, blocked=True)
    b_keys = SrtpKeys(SUITE, local_key=GATEWAY_KEY_TO_B, remote_key=PHONE_B_KEY)
    stream.apply_keys(StreamKeys(None, b_keys, blocked=False))
    copies: list[tuple[str, bytes]] = []
    stream.set_tap(lambda direction, packet: copies.append((direction.value, packet)))
    await pool.sync(stream.worker)
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    b_sends = pylibsrtp.Session(
        pylibsrtp.Policy(PHONE_B_KEY, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    )
    await a.send(rtp(1, payload=b"\x11" * 160), stream.a.ports.rtp_port)
    await b.receive()
    await b.send(b_sends.protect(rtp(1, ssrc=7, payload=b"\x22" * 160)), stream.b.ports.rtp_port)
    await a.receive()
    await eventually(lambda: len(copies) == 2, "both copies")
    assert sorted(copies) == [
        ("a_to_b", rtp(1, payload=b"\x11" * 160)),
        ("b_to_a", rtp(1, ssrc=7, payload=b"\x22" * 160)),  # decrypted
    ]
    stream.set_tap(None)
    await pool.sync(stream.worker)
    await a.send(rtp(2), stream.a.ports.rtp_port)
    await b.receive()
    await pool.sync(stream.worker)
    assert len(copies) == 2


async def test_dtls_and_separate_srtcp_keys_on_the_rtcp_port(pool: WorkerPool) -> None:
    """A DTLS leg without rtcp-mux (RFC 5764 §4.1): datagrams on its RTCP port cross the
    channel, and its RTCP is dropped until the RTCP port's own keys arrive, then unprotected
    with them (not with the RTP keys)."""
    a, a_rtcp, b, b_rtcp = await ephemeral_phones(4)
    stream = pool.open_stream()
    stream.a.set_remote(a.address, rtcp=a_rtcp.address)
    stream.b.set_remote(b.address, rtcp=b_rtcp.address)
    received: list[tuple[str, bytes, tuple[str, int]]] = []
    stream.a.set_non_rtp_handler(lambda p, s: received.append(("rtp", p, s)))
    stream.a.set_non_rtp_handler(lambda p, s: received.append(("rtcp", p, s)), rtcp=True)
    a_keys = SrtpKeys(SUITE, local_key=GATEWAY_KEY_TO_B, remote_key=PHONE_B_KEY)
    rtcp_keys = SrtpKeys(SUITE, local_key=PHONE_B_KEY, remote_key=GATEWAY_KEY_TO_B)
    stream.apply_keys(StreamKeys(a_keys, None, False, a_separate_rtcp=True, a_rtcp=None))
    await pool.sync(stream.worker)

    hello = b"\x16\xfe\xfd" + bytes(range(40))
    await a_rtcp.send(hello, stream.a.ports.rtcp_port)
    await eventually(lambda: bool(received), "datagram forwarded")
    assert received == [("rtcp", hello, a_rtcp.address)]
    assert stream.a.send(b"\x16 answer", rtcp=True)
    assert await a_rtcp.receive() == (b"\x16 answer", (ADDRESS, stream.a.ports.rtcp_port))

    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    report = struct.pack("!BBHI", 0x81, 201, 7, 0x1234ABCD) + struct.pack("!6I", 9, 0, 1, 2, 3, 4)
    # Under the RTP port's keys, before the RTCP port has its own: dropped, never forwarded.
    rtp_sender = pylibsrtp.Session(
        pylibsrtp.Policy(PHONE_B_KEY, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    )
    await a_rtcp.send(rtp_sender.protect_rtcp(report), stream.a.ports.rtcp_port)
    await eventually(lambda: stream.a_to_b.statistics().dropped_transform == 1, "dropped")

    stream.apply_keys(StreamKeys(a_keys, None, False, a_separate_rtcp=True, a_rtcp=rtcp_keys))
    await pool.sync(stream.worker)
    rtcp_sender = pylibsrtp.Session(
        pylibsrtp.Policy(GATEWAY_KEY_TO_B, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    )
    await a_rtcp.send(rtcp_sender.protect_rtcp(report), stream.a.ports.rtcp_port)
    data, source = await b_rtcp.receive()
    assert (data, source) == (report, (ADDRESS, stream.b.ports.rtcp_port))  # plain RTCP to B
    assert len(received) == 1


async def test_rtcp_reaches_the_sip_process_plain_and_bounded_in_rate(pool: WorkerPool) -> None:
    """Call quality with workers: each direction's RTCP is copied to the SIP process's observer,
    plain (leg B's SRTCP unprotected, on its RTP port with rtcp-mux: RFC 5761 §4), while the
    packet itself is relayed as before; a second report within RTCP_COPY_INTERVAL is relayed
    but not copied (a flooding peer cannot flood the channel)."""
    a, a_rtcp, b = await ephemeral_phones(3)
    stream = pool.open_stream()
    stream.a.set_remote(a.address, rtcp=a_rtcp.address)
    stream.b.set_remote(b.address, rtcp_mux=True)
    b_keys = SrtpKeys(SUITE, local_key=GATEWAY_KEY_TO_B, remote_key=PHONE_B_KEY)
    stream.apply_keys(StreamKeys(None, b_keys, blocked=False))
    seen: list[tuple[str, bytes]] = []
    stream.a_to_b.rtcp_observer = lambda packet: seen.append(("a", packet))
    stream.b_to_a.rtcp_observer = lambda packet: seen.append(("b", packet))
    await pool.sync(stream.worker)

    report = struct.pack("!BBHI", 0x81, 201, 7, 0xB) + struct.pack("!6I", 9, 0, 1, 96, 3, 4)
    profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
    b_sends = pylibsrtp.Session(
        pylibsrtp.Policy(PHONE_B_KEY, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
    )
    b_receives = pylibsrtp.Session(
        pylibsrtp.Policy(GATEWAY_KEY_TO_B, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
    )
    await b.send(b_sends.protect_rtcp(report), stream.b.ports.rtp_port)
    assert await a_rtcp.receive() == (report, (ADDRESS, stream.a.ports.rtcp_port))
    a_report = report.replace(struct.pack("!I", 0xB), struct.pack("!I", 0xA), 1)
    for _ in range(2):  # back to back: the second is relayed, not copied
        await a_rtcp.send(a_report, stream.a.ports.rtcp_port)
        data, _source = await b.receive()
        assert b_receives.unprotect_rtcp(data) == a_report  # SRTCP to B, on its RTP port
    await eventually(lambda: len(seen) == 2, "both directions copied")
    await pool.sync(stream.worker)
    assert sorted(seen) == [("a", a_report), ("b", report)]

    stream.a_to_b.rtcp_observer = None
    await trio.sleep(0.25)  # past the copy interval
    await a_rtcp.send(a_report, stream.a.ports.rtcp_port)
    await b.receive()
    await pool.sync(stream.worker)
    assert len(seen) == 2  # stopped


async def test_a_killed_worker_ends_its_calls_and_is_restarted(
    pool: WorkerPool, caplog: pytest.LogCaptureFixture
) -> None:
    a0, b0, a1, b1, a2, b2 = await ephemeral_phones(6)
    lost: dict[int, list[str]] = {0: [], 1: []}
    s0 = pool.for_call(lost[0].append).open_stream()
    s1 = pool.for_call(lost[1].append).open_stream()
    assert (s0.worker, s1.worker) == (0, 1)
    await connected(pool, s0, a0, b0)
    await connected(pool, s1, a1, b1)
    await relayed(s0, a0, b0, 1)
    await relayed(s1, a1, b1, 1)
    pid0, pid1 = pool.worker_pids()
    assert pid0 is not None and pid1 is not None
    assert pool.worker_states() == ["running", "running"]
    assert pool.worker_restarts() == {
        "exited": 0,
        "not_ready": 0,
        "channel_error": 0,
        "not_started": 0,
    }

    await eventually(lambda: tables_of(pool, 0).get("worker_streams") == 1, "s0 reported")
    with caplog.at_level(logging.ERROR, logger="gateway.core.media.remote_relay"):
        os.kill(pid0, signal.SIGKILL)
        await eventually(lambda: bool(lost[0]), "the dead worker's call told")
    assert lost == {0: [WORKER_EXITED], 1: []}
    assert s0.failure == WORKER_EXITED and s0.closed
    assert s1.failure is None and not s1.closed
    assert any(
        "media worker 0" in r.message and "exited" in r.message and "1 stream" in r.message
        for r in caplog.records
    )
    # The other worker's call goes on.
    await relayed(s1, a1, b1, 2)

    await eventually(lambda: pool.worker_starts() == [2, 1], "worker 0 restarted")
    await eventually(lambda: pool.worker_pids()[0] not in (None, pid0), "new process")
    assert pool.worker_pids()[1] == pid1
    assert process_gone(pid0)
    await eventually(lambda: pool.worker_ready()[0] == 10, "worker 0 ready again")
    # The new process's tables, never its predecessor's (which held s0's stream).
    await eventually(lambda: bool(pool.worker_tables()[0]), "worker 0 reported again")
    assert tables_of(pool, 0)["worker_streams"] == 0
    # What the metrics show (voipgw_media_workers, voipgw_media_worker_restarts_total).
    assert pool.worker_states() == ["running", "running"]
    assert pool.worker_restarts() == {
        "exited": 1,
        "not_ready": 0,
        "channel_error": 0,
        "not_started": 0,
    }
    s2 = pool.open_stream(prefer=0)
    assert s2.worker == 0
    await connected(pool, s2, a2, b2)
    await relayed(s2, a2, b2, 1)
    s0.close()  # closing a lost stream is harmless
    assert pool.worker_streams() == [1, 1]


async def test_a_restarted_worker_of_another_protocol_version_is_said_once_and_not_restarted(
    pool: WorkerPool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """The package upgraded on disk under a running gateway: this (SIP) process keeps the
    protocol version it started with, a worker it starts again runs the installed one. Here the
    process is made the older one (its PROTOCOL_VERSION, which it puts on the worker's command
    line and expects in its Hello) and the real worker is the code on disk."""
    a0, b0, a1, b1 = await ephemeral_phones(4)
    lost: list[str] = []
    s0 = pool.for_call(lost.append).open_stream()
    s1 = pool.open_stream()
    assert (s0.worker, s1.worker) == (0, 1)
    await connected(pool, s0, a0, b0)
    await connected(pool, s1, a1, b1)
    old = PROTOCOL_VERSION - 1
    monkeypatch.setattr(remote_relay, "PROTOCOL_VERSION", old)
    pid0 = pool.worker_pids()[0]
    assert pid0 is not None

    with caplog.at_level(logging.ERROR, logger="gateway.core.media.remote_relay"):
        os.kill(pid0, signal.SIGKILL)  # the crash that makes it start a worker again
        await eventually(lambda: pool.worker_stopped()[0] is not None, "worker 0 given up")
        # No crash loop: at this pool's restart delay (0.05 s, doubling) a loop would have
        # started it again well within this second.
        with trio.move_on_after(1.0):
            while pool.worker_starts()[0] == 2:
                await trio.sleep(0.01)
    assert lost == [WORKER_EXITED]  # its calls ended as when any worker exits
    assert pool.worker_starts() == [2, 1]
    assert pool.worker_pids()[0] is None and pool.worker_ready()[0] == 0
    # The crash was a restart; the slot given up is no restart, and shows as stopped.
    assert pool.worker_states() == ["stopped", "running"]
    assert pool.worker_restarts() == {
        "exited": 1,
        "not_ready": 0,
        "channel_error": 0,
        "not_started": 0,
    }
    said = [r.getMessage() for r in caplog.records if "protocol version" in r.getMessage()]
    assert said == [
        f"media worker 0 (ports {pool.slices[0]}) speaks media worker protocol version "
        f"{PROTOCOL_VERSION}, this gateway process {old} (exit code {EXIT_PROTOCOL_MISMATCH}): "
        "the voipgw package was upgraded (or changed) while the gateway ran; restart the service "
        "(e.g. systemctl restart voipgw) to run the installed version. Not restarting media "
        "worker 0: new calls go to the 1 media worker(s) running (none: 503)"
    ]
    assert pool.worker_stopped()[0] == said[0].split(". Not restarting")[0]
    # The worker said it too, on its stderr (the service's log).
    (line,) = [line for line in capfd.readouterr().err.splitlines() if "protocol" in line]
    assert " ERROR media-worker-0 " in line
    assert line.endswith(
        f": media worker 0: the installed voipgw speaks media worker protocol version "
        f"{PROTOCOL_VERSION}, the gateway process that started this worker {old}: the voipgw "
        "package was upgraded (or changed) while the gateway ran; restart the service (e.g. "
        "systemctl restart voipgw) to run the installed version on both sides. Exiting"
    )
    # New calls go to the other worker, whose call goes on.
    assert pool.for_call().open_stream().worker == 1
    await relayed(s1, a1, b1, 1)

    # The last worker too: none left, a new call is refused (503), as while workers restart.
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="gateway.core.media.remote_relay"):
        pid1 = pool.worker_pids()[1]
        assert pid1 is not None
        os.kill(pid1, signal.SIGKILL)
        await eventually(lambda: pool.worker_stopped()[1] is not None, "worker 1 given up")
    assert any("new calls go to the 0 media worker(s) running" in r.message for r in caplog.records)
    with pytest.raises(PortsExhausted):
        pool.open_stream()


async def test_a_worker_of_another_protocol_version_fails_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At start-up (the package changed between the SIP process's imports and its workers'):
    a start-up error that says what to do, rather than a gateway half up."""
    newer = PROTOCOL_VERSION + 1  # this process newer than the package on disk: the other way
    monkeypatch.setattr(remote_relay, "PROTOCOL_VERSION", newer)
    pool = WorkerPool(ADDRESS, PORTS.get(), 2)
    with pytest.raises(ExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(WORKER_TIMEOUT):
                await nursery.start(pool.serve)
    assert caught.group_contains(
        LocalMediaError,
        match=rf"^2 of 2 media workers did not start: media worker 0 \(ports \S+\) speaks media "
        rf"worker protocol version {PROTOCOL_VERSION}, this gateway process {newer} \(exit code "
        r"78\): the voipgw package was upgraded \(or changed\) while the gateway ran; restart "
        r"the service .*; media worker 1 \(ports \S+\) speaks media worker protocol version",
        depth=1,
    )
    assert pool.worker_pids() == [None, None]


# What a worker of another release would send first if it broke the promise that Hello and its
# framing never change: written by a stand-in process on the channel, which then exits 78.
FOREIGN_FIRST_FRAME = """
import os, sys
os.write(int(sys.argv[1]), bytes.fromhex(sys.argv[2]))
sys.exit(78)
"""


@pytest.mark.parametrize(
    "first_frame",
    [
        "00000007 00 00000002 0001",  # a type 0 (Hello) of another layout: unreadable here
        "00000007 14 0002 7530 7532",  # a readable message, but no Hello (PairsReady)
    ],
)
async def test_a_worker_whose_first_message_is_no_hello_is_a_mismatch_of_unknown_version(
    monkeypatch: pytest.MonkeyPatch, first_frame: str
) -> None:
    """Not 'a bad frame' and restarts for ever, nor 'a voipgw from before protocol versions'
    (that one sends nothing: it stops on --protocol-version, an option it does not know)."""
    frame = first_frame.replace(" ", "")
    monkeypatch.setattr(
        WorkerPool,
        "_command",
        lambda self, worker, fd: [sys.executable, "-c", FOREIGN_FIRST_FRAME, str(fd), frame],
    )
    pool = WorkerPool(ADDRESS, PORTS.get(), 2)
    with pytest.raises(ExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(WORKER_TIMEOUT):
                await nursery.start(pool.serve)
    assert caught.group_contains(
        LocalMediaError,
        match=r"^2 of 2 media workers did not start: media worker 0 \(ports \S+\) speaks media "
        r"worker protocol version unknown \(its first message is no Hello this process can "
        rf"read\), this gateway process {PROTOCOL_VERSION} \(exit code 78\): the voipgw package "
        r"was upgraded \(or changed\) while the gateway ran; restart the service",
        depth=1,
    )
    assert pool.worker_pids() == [None, None]


# A worker that hangs before its first message (an import stuck on a dead NFS mount, a machine
# swapping): it never writes to the channel, nor reads it, until killed.
SILENT_WORKER = "import time; time.sleep(3600)"


def silent_workers(monkeypatch: pytest.MonkeyPatch, pool: WorkerPool | None = None) -> None:
    """Workers started from now on are SILENT_WORKER; they get 0.2 s to exit once their channel
    is closed (2 s) before they are killed; ``pool``'s get 0.5 s to be ready (``ready_within``,
    ``[media] worker_ready_timeout``: 60 s; a new pool is given it)."""
    monkeypatch.setattr(
        WorkerPool, "_command", lambda self, worker, fd: [sys.executable, "-c", SILENT_WORKER]
    )
    monkeypatch.setattr(remote_relay, "STOP_GRACE", 0.2)
    if pool is not None:
        monkeypatch.setattr(pool, "_ready_within", 0.5)


async def test_a_worker_that_never_says_it_is_ready_fails_start_up(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not `voipgw run` hanging with no log line: one ERROR each, the processes killed, one
    start-up error that names every worker that failed (all started at once, each waited for
    up to the limit), not only the first."""
    silent_workers(monkeypatch)
    pool = WorkerPool(ADDRESS, PORTS.get(), 2, ready_within=0.5)
    with (
        caplog.at_level(logging.ERROR, logger="gateway.core.media.remote_relay"),
        pytest.raises(ExceptionGroup) as caught,
    ):
        async with trio.open_nursery() as nursery:
            with trio.fail_after(WORKER_TIMEOUT):
                await nursery.start(pool.serve)
    assert caught.group_contains(
        LocalMediaError,
        match=r"^2 of 2 media workers did not start: "
        r"media worker 0 \(ports \S+\) did not say it was ready within 0.5 s "
        r"\(channel closed\); see the log above; "
        r"media worker 1 \(ports \S+\) did not say it was ready within 0.5 s "
        r"\(channel closed\); see the log above$",
        depth=1,
    )
    said = sorted(r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
    assert said == [
        f"media worker {index} (ports {pool.slices[index]}) did not say it was ready within "
        "0.5 s: stopping it (a machine too loaded to start it in time, or a worker that hangs "
        "at start; its own log lines, if any, are above)"
        for index in (0, 1)
    ]
    assert pool.worker_pids() == [None, None]
    assert pool.worker_starts() == [1, 1]


async def test_a_restarted_worker_that_never_says_it_is_ready_is_restarted_with_back_off(
    pool: WorkerPool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not a slot that carries no call for as long as the hung process lives: it is stopped,
    said, and started again (waiting longer each time, as after a crash) until a worker is
    ready."""
    a, b = await ephemeral_phones(2)
    pid0 = pool.worker_pids()[0]
    assert pid0 is not None
    silent_workers(monkeypatch, pool)
    with caplog.at_level(logging.ERROR, logger="gateway.core.media.remote_relay"):
        os.kill(pid0, signal.SIGKILL)
        await eventually(lambda: pool.worker_starts()[0] >= 4, "the silent worker restarted")
    # The metrics' view: the crash, then restarts of workers that were never ready.
    restarts = pool.worker_restarts()
    assert restarts["exited"] == 1 and restarts["not_ready"] >= 2, restarts
    assert restarts["channel_error"] == 0
    assert pool.worker_states()[1] == "running"
    assert pool.worker_states()[0] in ("starting", "restarting")
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    hung = (
        f"media worker 0 (ports {pool.slices[0]}) did not say it was ready within 0.5 s: "
        "stopping it (a machine too loaded to start it in time, or a worker that hangs at "
        "start; its own log lines, if any, are above)"
    )
    assert said[1:5] == [
        hung,
        f"media worker 0 (ports {pool.slices[0]}) exited (channel closed): ending its 0 "
        f"stream(s) with {WORKER_EXITED!r}; restarting it in 0.1 s",
        hung,
        f"media worker 0 (ports {pool.slices[0]}) exited (channel closed): ending its 0 "
        f"stream(s) with {WORKER_EXITED!r}; restarting it in 0.2 s",
    ]
    assert pool.worker_stopped() == [None, None]
    assert pool.worker_ready()[0] == 0

    monkeypatch.undo()  # the real worker again: the slot carries calls again
    await eventually(lambda: pool.worker_ready()[0] == 10, "worker 0 ready again")
    stream = pool.open_stream(prefer=0)
    assert stream.worker == 0
    await connected(pool, stream, a, b)
    await relayed(stream, a, b, 1)


# A stand-in worker that says it is ready (a Hello, then PairsReady) only once every worker of
# its pool has been started: each leaves a file named after its index in a directory and polls
# it for the others'. It then reads its channel until the pool closes it.
WAITING_WORKER = """
import os, sys, time
fd, index, workers, directory, frames = sys.argv[1:]
open(os.path.join(directory, index), "w").close()
while len(os.listdir(directory)) < int(workers):
    time.sleep(0.01)
os.write(int(fd), bytes.fromhex(frames))
while os.read(int(fd), 65536):
    pass
"""


async def test_workers_are_started_at_once_not_one_after_another(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """N workers slow to start (a loaded machine) cost one ready limit at start-up, not N: a
    pool that waited for each worker before it started the next would never see these ready."""

    def command(self: WorkerPool, worker: remote_relay._Worker, fd: int) -> list[str]:
        frames = encode(Hello(PROTOCOL_VERSION)) + encode(PairsReady((worker.ports.low,)))
        arguments = [str(fd), str(worker.index), "3", str(tmp_path), frames.hex()]
        return [sys.executable, "-I", "-c", WAITING_WORKER, *arguments]

    monkeypatch.setattr(WorkerPool, "_command", command)
    pool = WorkerPool(ADDRESS, PORTS.get(), 3, ready_within=WORKER_TIMEOUT)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(2 * WORKER_TIMEOUT):
            await nursery.start(pool.serve)
        assert pool.worker_states() == ["running", "running", "running"]
        assert pool.worker_starts() == [1, 1, 1]
        assert sorted(path.name for path in tmp_path.iterdir()) == ["0", "1", "2"]
        pids = pool.worker_pids()
        nursery.cancel_scope.cancel()
    assert pool.worker_pids() == [None, None, None]
    assert all(process_gone(pid) for pid in pids if pid is not None)


# A stand-in worker that says it is ready, answers the first thing it reads (the test's Ping)
# with a frame of no message type (0xEE), and reads its channel until the pool closes it.
BAD_FRAME_WORKER = """
import os, sys
fd = int(sys.argv[1])
os.write(fd, bytes.fromhex(sys.argv[2]))
os.read(fd, 65536)
os.write(fd, bytes.fromhex("00000001ee"))
while os.read(fd, 65536):
    pass
"""


async def test_a_worker_that_sends_a_bad_frame_is_restarted_as_a_channel_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def command(self: WorkerPool, worker: remote_relay._Worker, fd: int) -> list[str]:
        frames = encode(Hello(PROTOCOL_VERSION)) + encode(PairsReady((worker.ports.low,)))
        return [sys.executable, "-I", "-c", BAD_FRAME_WORKER, str(fd), frames.hex()]

    monkeypatch.setattr(WorkerPool, "_command", command)
    pool = WorkerPool(ADDRESS, PORTS.get(), 1, restart_delay=0.05)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WORKER_TIMEOUT):
            await nursery.start(pool.serve)
        with pytest.raises(LocalMediaError, match="media worker 0 exited"):
            await pool.sync(0)  # answered with the bad frame: the channel is closed
        await eventually(lambda: pool.worker_restarts()["channel_error"] == 1, "counted")
        assert pool.worker_restarts() == {
            "exited": 0,
            "not_ready": 0,
            "channel_error": 1,
            "not_started": 0,
        }
        nursery.cancel_scope.cancel()
    assert pool.worker_pids() == [None]


def ready_stand_in(program: str) -> Callable[[WorkerPool, remote_relay._Worker, int], list[str]]:
    """A ``WorkerPool._command`` that starts the Python ``program`` as every worker, given its
    channel's descriptor and the hex of a Hello and a PairsReady (what a worker says when ready)."""

    def command(self: WorkerPool, worker: remote_relay._Worker, fd: int) -> list[str]:
        frames = encode(Hello(PROTOCOL_VERSION)) + encode(PairsReady((worker.ports.low,)))
        return [sys.executable, "-I", "-c", program, str(fd), frames.hex()]

    return command


# A stand-in worker that says it is ready and never reads its channel.
DEAF_WORKER = """
import os, sys, time
os.write(int(sys.argv[1]), bytes.fromhex(sys.argv[2]))
time.sleep(3600)
"""


class _BrokenPipe:
    """A channel's socket whose writes fail as a write to a worker that has just died does."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self._sock = sock

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    async def send(self, data: bytes) -> int:
        raise BrokenPipeError(32, "Broken pipe")


async def test_a_write_to_a_worker_that_is_gone_counts_its_restart_as_exited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker that died while the pool wrote to it is a worker that exited (a crash, the OOM
    killer), not a channel error (a bad frame, 16 MiB it did not read): which of the two the
    pool sees first, the failed write (EPIPE) or the end of file, is a race; here the write."""
    monkeypatch.setattr(WorkerPool, "_command", ready_stand_in(DEAF_WORKER))
    monkeypatch.setattr(remote_relay, "STOP_GRACE", 0.2)
    pool = WorkerPool(ADDRESS, PORTS.get(), 1, restart_delay=0.05)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WORKER_TIMEOUT):
            await nursery.start(pool.serve)
        channel = pool._workers[0].channel
        assert channel is not None
        channel._sock = _BrokenPipe(channel._sock)  # type: ignore[assignment]
        with pytest.raises(LocalMediaError, match="media worker 0 exited"):
            await pool.sync(0)  # the Ping's write fails: the channel is closed
        await eventually(lambda: pool.worker_starts() == [2], "restarted")
        assert pool.worker_restarts() == {
            "exited": 1,
            "not_ready": 0,
            "channel_error": 0,
            "not_started": 0,
        }
        nursery.cancel_scope.cancel()
    assert pool.worker_pids() == [None]


async def test_a_worker_that_does_not_read_its_channel_is_restarted_as_a_channel_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past SEND_BUFFER_LIMIT unread (16 MiB; here a few octets) the pool closes the channel and
    stops the worker: a channel error."""
    monkeypatch.setattr(WorkerPool, "_command", ready_stand_in(DEAF_WORKER))
    monkeypatch.setattr(remote_relay, "STOP_GRACE", 0.2)
    pool = WorkerPool(ADDRESS, PORTS.get(), 1, restart_delay=0.05)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WORKER_TIMEOUT):
            await nursery.start(pool.serve)
        monkeypatch.setattr(remote_relay, "SEND_BUFFER_LIMIT", 4)
        with pytest.raises(LocalMediaError, match="media worker 0 exited"):
            await pool.sync(0)  # its Ping is more than the limit: the channel is closed
        await eventually(lambda: pool.worker_starts() == [2], "restarted")
        assert pool.worker_restarts() == {
            "exited": 0,
            "not_ready": 0,
            "channel_error": 1,
            "not_started": 0,
        }
        nursery.cancel_scope.cancel()
    assert pool.worker_pids() == [None]


# A stand-in worker that says it is ready and exits 2 on the first thing it reads.
EXIT_2_WHEN_READY_WORKER = """
import os, sys
fd = int(sys.argv[1])
os.write(fd, bytes.fromhex(sys.argv[2]))
os.read(fd, 65536)
sys.exit(2)
"""


async def test_a_worker_that_exits_2_after_it_was_ready_is_restarted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Status 2 is taken for a refused command line only before the worker's first message: a
    worker that said it was ready understood its command line, and its exit is a crash."""
    monkeypatch.setattr(WorkerPool, "_command", ready_stand_in(EXIT_2_WHEN_READY_WORKER))
    pool = WorkerPool(ADDRESS, PORTS.get(), 1, restart_delay=0.05)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WORKER_TIMEOUT):
            await nursery.start(pool.serve)
        with pytest.raises(LocalMediaError, match="media worker 0 exited"):
            await pool.sync(0)  # read, not answered: it exits 2
        # The sync is woken as the channel closes (session 48), before the slot is restarting.
        await eventually(
            lambda: pool.worker_starts() == [2] and pool.worker_states() == ["running"],
            "running again",
        )
        assert pool.worker_stopped() == [None]
        assert pool.worker_restarts() == {
            "exited": 1,
            "not_ready": 0,
            "channel_error": 0,
            "not_started": 0,
        }
        nursery.cancel_scope.cancel()
    assert pool.worker_pids() == [None]


# A worker of a release that does not know an option the pool passes (one from before
# --protocol-version): argparse refuses its command line, on stderr, and it exits 2 before it
# has said anything on its channel.
OLD_WORKER = """
import argparse
parser = argparse.ArgumentParser(prog="python -m gateway.core.media.worker")
for option in ("--fd", "--index", "--address", "--ports", "--log-level", "--stats-interval"):
    parser.add_argument(option)
parser.parse_args()
"""


def old_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers started from now on are OLD_WORKER, given the pool's real command line."""
    real = WorkerPool._command

    def command(self: WorkerPool, worker: remote_relay._Worker, fd: int) -> list[str]:
        python, _, _, *options = real(self, worker, fd)  # python -m gateway.core.media.worker
        return [python, "-c", OLD_WORKER, *options]

    monkeypatch.setattr(WorkerPool, "_command", command)


def refused_command_line(pool: WorkerPool, index: int) -> str:
    """What the pool says of worker ``index`` when it exited 2 before its first message."""
    return (
        f"media worker {index} (ports {pool.slices[index]}) exited with status 2 before its "
        "first message: the worker did not understand its command line: a different voipgw "
        "version? restart the service (e.g. systemctl restart voipgw) to run the installed "
        "version (the worker's usage error, if any, is above)"
    )


async def test_a_worker_that_does_not_understand_its_command_line_fails_start_up(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    old_workers(monkeypatch)
    pool = WorkerPool(ADDRESS, PORTS.get(), 2)
    with pytest.raises(ExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(WORKER_TIMEOUT):
                await nursery.start(pool.serve)
    (error,) = caught.value.exceptions
    assert isinstance(error, LocalMediaError)
    assert str(error) == (
        "2 of 2 media workers did not start: "
        f"{refused_command_line(pool, 0)}; {refused_command_line(pool, 1)}"
    )
    assert pool.worker_pids() == [None, None]
    assert "unrecognized arguments: --protocol-version" in capfd.readouterr().err


async def test_a_worker_that_fails_start_up_stops_the_workers_that_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Started at once, one worker fails (an old worker's usage error, at once) while the other
    is still starting: the start-up error is the one's own text, as before the workers started
    at once, once the other is ready; that one is then stopped and every process reaped."""
    real = WorkerPool._command

    def command(self: WorkerPool, worker: remote_relay._Worker, fd: int) -> list[str]:
        python, _, _, *options = real(self, worker, fd)  # python -m gateway.core.media.worker
        return [python, "-c", OLD_WORKER, *options] if worker.index == 1 else real(self, worker, fd)

    started: list[trio.Process] = []
    open_process = trio.lowlevel.open_process

    async def recorded(*args: Any, **kwargs: Any) -> trio.Process:
        process = await open_process(*args, **kwargs)
        started.append(process)
        return process

    monkeypatch.setattr(WorkerPool, "_command", command)
    monkeypatch.setattr(trio.lowlevel, "open_process", recorded)
    pool = WorkerPool(ADDRESS, PORTS.get(), 2)
    with pytest.raises(ExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(WORKER_TIMEOUT):
                await nursery.start(pool.serve)
    (error,) = caught.value.exceptions
    assert isinstance(error, LocalMediaError)
    assert str(error) == refused_command_line(pool, 1)
    assert pool._workers[0].ready_at is not None  # worker 0 was ready before it was stopped
    assert pool.worker_starts() == [1, 1]
    assert pool.worker_pids() == [None, None]
    assert len(started) == 2
    assert all(process.returncode is not None for process in started)  # reaped


async def test_a_restarted_worker_that_does_not_understand_its_command_line_is_not_restarted(
    pool: WorkerPool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A downgrade under a running gateway (the package on disk older than this process): the
    worker started again exits 2 on --protocol-version, and was restarted with back-off for
    ever. Said once, as a protocol mismatch is, and not started again."""
    a1, b1 = await ephemeral_phones(2)
    lost: list[str] = []
    s0 = pool.for_call(lost.append).open_stream()
    s1 = pool.open_stream()
    await connected(pool, s1, a1, b1)
    pid0 = pool.worker_pids()[0]
    assert pid0 is not None and s0.worker == 0
    old_workers(monkeypatch)
    with caplog.at_level(logging.ERROR, logger="gateway.core.media.remote_relay"):
        os.kill(pid0, signal.SIGKILL)
        await eventually(lambda: pool.worker_stopped()[0] is not None, "worker 0 given up")
        # No restart loop: at this pool's restart delay (0.05 s, doubling) a loop would have
        # started it again well within this second.
        with trio.move_on_after(1.0):
            while pool.worker_starts()[0] == 2:
                await trio.sleep(0.01)
    assert lost == [WORKER_EXITED]
    assert pool.worker_starts() == [2, 1]
    assert pool.worker_stopped()[0] == refused_command_line(pool, 0)
    said = [r.getMessage() for r in caplog.records if "command line" in r.getMessage()]
    assert said == [
        f"{refused_command_line(pool, 0)}. Not restarting media worker 0: new calls go to the 1 "
        "media worker(s) running (none: 503)"
    ]
    assert pool.worker_states() == ["stopped", "running"]
    assert pool.worker_restarts() == {
        "exited": 1,
        "not_ready": 0,
        "channel_error": 0,
        "not_started": 0,
    }
    assert pool.for_call().open_stream().worker == 1
    await relayed(s1, a1, b1, 1)


async def test_a_worker_that_cannot_be_started_again_is_tried_again_not_the_gateways_end(
    pool: WorkerPool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A restart whose process cannot be made (OSError: out of file descriptors, the interpreter
    gone after an upgrade) went through _supervise into serve's nursery and ended the whole
    gateway, every call with it. Now said, tried again with back-off, and the slot comes back
    once a process can be made; the other worker's calls are untouched."""
    a1, b1 = await ephemeral_phones(2)
    s0 = pool.open_stream()
    s1 = pool.open_stream()
    await connected(pool, s1, a1, b1)
    pid0 = pool.worker_pids()[0]
    assert pid0 is not None and s0.worker == 0 and s1.worker == 1
    real = WorkerPool._command

    def missing(self: WorkerPool, worker: remote_relay._Worker, fd: int) -> list[str]:
        return ["/nonexistent/voipgw-python", *real(self, worker, fd)[1:]]

    monkeypatch.setattr(WorkerPool, "_command", missing)
    with caplog.at_level(logging.ERROR, logger="gateway.core.media.remote_relay"):
        os.kill(pid0, signal.SIGKILL)
        await eventually(lambda: pool.worker_restarts()["not_started"] >= 2, "tried again")
    assert pool.worker_states()[0] == "restarting"
    said = [r.getMessage() for r in caplog.records if "could not be started" in r.getMessage()]
    assert said and said[0].startswith(
        f"media worker 0 (ports {pool.slices[0]}) could not be started: "
        "ENOENT (No such file or directory)"
    )
    assert said[0].endswith(": trying again with back-off (its slot carries no call meanwhile)")
    assert pool.for_call().open_stream().worker == 1
    await relayed(s1, a1, b1, 1)
    monkeypatch.setattr(WorkerPool, "_command", real)
    await eventually(lambda: pool.worker_states()[0] == "running", "worker 0 back")
    assert pool.worker_stopped() == [None, None]


def test_a_worker_run_as_a_module_logs_under_its_module_name() -> None:
    """Run as ``python -m`` (as the pool starts it) the worker's module is ``__main__``: its
    lines named that logger, which operators' logging config and docs/operations.md's log
    lines (worker-protocol-refused) do not know."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.core.media.worker", "--index", "3"],
        capture_output=True,
        text=True,
        timeout=WORKER_TIMEOUT,
        env=remote_relay._worker_environment(),
    )
    assert result.returncode == EXIT_PROTOCOL_MISMATCH
    (line,) = result.stderr.splitlines()
    assert " ERROR media-worker-3 gateway.core.media.worker: media worker 3: the installed " in line


async def test_ports_exhausted_when_no_worker_has_pairs() -> None:
    pool = WorkerPool(ADDRESS, small(), 2)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.serve)
        assert {pool.open_stream().worker, pool.open_stream().worker} == {0, 1}
        with pytest.raises(PortsExhausted, match="no free media port pair in any of the 2"):
            pool.open_stream()
        nursery.cancel_scope.cancel()


async def test_shutdown_stops_every_worker() -> None:
    pool = WorkerPool(ADDRESS, PORTS.get(), 3)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.serve)
        pids = pool.worker_pids()
        pool.open_stream()
        assert len(set(pids)) == 3 and None not in pids
        nursery.cancel_scope.cancel()
    assert pool.worker_pids() == [None, None, None]
    assert all(process_gone(pid) for pid in pids if pid is not None)


async def test_a_worker_that_cannot_bind_fails_start_up() -> None:
    pool = WorkerPool("192.0.2.1", PORTS.get(), 2)  # TEST-NET-1: not an address of this host
    with pytest.raises(ExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(WORKER_TIMEOUT):
                await nursery.start(pool.serve)
    assert caught.group_contains(
        LocalMediaError,
        match=r"^2 of 2 media workers did not start: media worker 0 .* exited before it was "
        r"ready .*; media worker 1 .* exited before it was ready",
        depth=1,
    )
    assert pool.worker_pids() == [None, None]


def test_workers_exit_when_the_sip_process_is_killed(tmp_path: Path) -> None:
    """No orphans even when the SIP process cannot stop its workers: they read end of file on
    their channel and exit."""
    script = tmp_path / "sip_process.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, trio
            sys.path.insert(0, {str(ROOT)!r})
            from gateway.core.config import PortRange
            from gateway.core.media.remote_relay import WorkerPool

            async def main():
                pool = WorkerPool("127.0.0.1", PortRange({range_low()}, {PORTS.get().high}), 2)
                async with trio.open_nursery() as nursery:
                    await nursery.start(pool.serve)
                    print(*pool.worker_pids(), flush=True)
                    await trio.sleep_forever()

            trio.run(main)
            """
        )
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2 and all(not process_gone(pid) for pid in pids)
    finally:
        parent.kill()
        parent.wait(WORKER_TIMEOUT)

    async def wait_gone() -> None:
        await eventually(lambda: all(process_gone(pid) for pid in pids), "workers exited")

    trio.run(wait_gone)


async def test_ports_held_by_another_process_mean_503_until_they_are_free() -> None:
    """A worker that can bind none of its slice still starts (the gateway must not hang); calls
    get PortsExhausted (503) until the ports are free, then the worker binds them."""
    held = []
    for port in range(small().low, small().high + 1):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((ADDRESS, port))
        held.append(sock)
    pool = WorkerPool(ADDRESS, small(), 2, stats_interval=0.05)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(WORKER_TIMEOUT):
                await nursery.start(pool.serve)
            assert pool.worker_ready() == [0, 0]
            with pytest.raises(PortsExhausted):
                pool.open_stream()
            for sock in held:
                sock.close()
            await eventually(lambda: pool.worker_ready() == [2, 2], "bound once free")
            assert {pool.open_stream().worker, pool.open_stream().worker} == {0, 1}
            nursery.cancel_scope.cancel()
    finally:
        for sock in held:
            sock.close()


def zrtp_packet(kind: bytes, sequence: int = 1) -> bytes:
    """A ZRTP packet (RFC 6189 §5): what the relay hands on needs no valid CRC or MAC."""
    return frame(sequence, 0x5EED, message(kind, bytes(8)))


async def test_a_worker_hands_on_zrtp_beside_a_strangers_latch_and_latches_the_proven_peer(
    pool: WorkerPool,
) -> None:
    # docs/media_security.md, "Forged handshakes": a stranger's ZRTP datagram latched the
    # socket first (not connected: not the SDP address); a phone behind a NAT's ZRTP datagrams
    # are handed on all the same, latching nothing, and LatchPeer (its Hello matched the
    # phone's a=zrtp-hash in the SIP process) gives it the latch: our datagrams go to it.
    a, b, stranger, natted = await ephemeral_phones(4)
    stream = pool.open_stream()
    await connected(pool, stream, a, b)
    received: list[tuple[bytes, tuple[str, int]]] = []
    stream.a.set_non_rtp_handler(
        lambda packet, source: received.append((packet, source)), proves_peer=True
    )
    await pool.sync(stream.worker)
    await stranger.send(zrtp_packet(HELLO), stream.a.ports.rtp_port)
    await eventually(lambda: len(received) == 1, "the stranger's Hello latched and handed on")
    await natted.send(zrtp_packet(HELLO, 2), stream.a.ports.rtp_port)
    await eventually(lambda: len(received) == 2, "the phone's Hello handed on")
    assert received[1] == (zrtp_packet(HELLO, 2), natted.address)
    stream.a.latch_peer(natted.address, now=trio.current_time())
    await pool.sync(stream.worker)
    own = (ADDRESS, stream.a.ports.rtp_port)
    assert stream.a.send(zrtp_packet(HELLO_ACK))
    assert await natted.receive() == (zrtp_packet(HELLO_ACK), own)


async def _ipv6_phone() -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    await sock.bind(("::1", 0))
    return sock


async def test_a_worker_hands_on_and_latches_an_ipv6_source_whole() -> None:
    """Session 40: Datagram and LatchPeer carry the whole address the worker's socket gave
    (host, port, flow info, scope id): the proven peer latched through the channel is the
    address the relay sends to, its scope id too, which a link-local peer (RFC 4007 §6) needs.
    On ::1 the scope id is 0; a non-zero one is checked at the message level
    (tests/unit/media/test_worker_protocol.py)."""
    pool = WorkerPool("::1", PORTS.get(), 1, stats_interval=0.05)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WORKER_TIMEOUT):
            await nursery.start(pool.serve)
        a, b, stranger, natted = [await _ipv6_phone() for _ in range(4)]
        with a, b, stranger, natted:
            stream = pool.open_stream()
            stream.a.set_remote(a.getsockname()[:2])
            stream.b.set_remote(b.getsockname()[:2])
            received: list[tuple[bytes, tuple[Any, ...]]] = []
            stream.a.set_non_rtp_handler(
                lambda packet, source: received.append((packet, source)), proves_peer=True
            )
            await pool.sync(stream.worker)
            port = ("::1", stream.a.ports.rtp_port)
            await stranger.sendto(zrtp_packet(HELLO), port)
            await eventually(lambda: len(received) == 1, "the stranger's Hello handed on")
            assert received[0][1] == stranger.getsockname()  # ("::1", port, 0, 0)
            await natted.sendto(zrtp_packet(HELLO, 2), port)
            await eventually(lambda: len(received) == 2, "the phone's Hello handed on")
            source = received[1][1]
            assert source == natted.getsockname() and len(source) == 4
            stream.a.latch_peer(source, now=trio.current_time())
            await pool.sync(stream.worker)
            assert stream.a.send(zrtp_packet(HELLO_ACK))
            with trio.fail_after(WORKER_TIMEOUT):
                data, sender = await natted.recvfrom(2048)
            assert data == zrtp_packet(HELLO_ACK) and sender[:2] == port
        nursery.cancel_scope.cancel()
    assert pool.worker_pids() == [None]


async def test_a_worker_hands_dtls_to_a_handshake_per_source_and_answers_each_source(
    pool: WorkerPool,
) -> None:
    # docs/media_security.md, "A handshake per source", through a media worker (protocol 4:
    # SetDtls's handshake_per_source, SendDatagram's destination): a stranger's ClientHello
    # latched the socket first; a phone behind a NAT's is handed on all the same, our answer
    # goes to it alone, and LatchPeer (its certificate matched) gives it the latch.
    a, b, stranger, natted = await ephemeral_phones(4)
    stream = pool.open_stream()
    await connected(pool, stream, a, b)
    received: list[tuple[bytes, tuple[str, int]]] = []
    stream.a.set_non_rtp_handler(
        lambda packet, source: received.append((packet, source)), handshake_per_source=True
    )
    await pool.sync(stream.worker)
    hello = bytes([22, 0xFE, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 13, 1]) + bytes(12)
    await stranger.send(hello, stream.a.ports.rtp_port)
    await eventually(lambda: len(received) == 1, "the stranger's ClientHello handed on")
    await natted.send(hello + b"\x01", stream.a.ports.rtp_port)
    await eventually(lambda: len(received) == 2, "the phone's ClientHello handed on")
    assert received[1] == (hello + b"\x01", natted.address)
    own = (ADDRESS, stream.a.ports.rtp_port)
    assert stream.a.send_to(b"\x16flight", natted.address)
    assert await natted.receive() == (b"\x16flight", own)
    stream.a.latch_peer(natted.address, now=trio.current_time())
    await pool.sync(stream.worker)
    assert stream.a.send(b"\x16next")
    assert await natted.receive() == (b"\x16next", own)
