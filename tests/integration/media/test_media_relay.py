"""The media relay on real UDP sockets on 127.0.0.1: two "phones" talk through one stream.

The relay allocates from RELAY_PORTS (tests of one small range use SMALL_PORTS) and the phones from
PHONE_PORTS: blocks of this process (tests/port_blocks.py), so neither other tests (of this run or
another) nor the ports the kernel picks for outgoing sockets meet them. Nothing waits a fixed time:
a test waits for a packet (``fail_after`` bounds it) or polls a counter (``until``). To show that a
packet was *not* forwarded, a test sends it, waits until the relay has counted the drop (or, on a
socket connected to its latched source, until the kernel has refused it), then sends a marker on
the same path: the marker must be the first thing to arrive. The phones and their packets are
phone_sockets.py's.
"""

from __future__ import annotations

import gc
import itertools
import logging
import socket
import struct
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio

from gateway.core.config import PortRange
from gateway.core.logs import WITHHELD
from gateway.core.media import relay as relay_module
from gateway.core.media.errors import LocalMediaError, PortsExhausted
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import (
    Direction,
    MediaRelay,
    MediaStream,
    Transforms,
)
from gateway.plugins.keyexchange.zrtp.packets import (
    HELLO,
    PING,
    encode_error,
    frame,
    message,
)
from tests.integration.media.phone_sockets import (
    ADDRESS,
    TIMEOUT,
    PlainPhone,
    can_bind,
    empty_receiver_report,
    rtp,
    until,
)
from tests.integration.media.relay_fixtures import make_phone_fixture
from tests.port_blocks import ModuleBlock

RELAY_PORTS = ModuleBlock(400, parse=PortRange.parse)
PHONE_PORTS = ModuleBlock(200, parse=PortRange.parse)
SMALL_PORTS = ModuleBlock(6, parse=PortRange.parse)  # three pairs: one stream and a half


class FakeClock:
    """The relay's clock, set by the test (the relay reads it once per wake-up)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


SO_MEMINFO = 55  # Linux <asm-generic/socket.h>; not in Python's socket module


def queued_octets(sock: socket.socket) -> int:
    """Kernel memory held by ``sock``'s receive queue: the first field of SO_MEMINFO
    (sk_rmem_alloc), which grows with every datagram queued."""
    meminfo = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 9 * 4)
    octets: int = struct.unpack("9I", meminfo)[0]
    return octets


async def queue_datagrams(
    relay_socket: socket.socket, sends: list[tuple[PlainPhone, bytes]]
) -> None:
    """Each phone sends its datagram to ``relay_socket`` of a relay that does not serve yet; each
    is in the socket's queue before the next is sent, so the relay finds them all, in order."""
    for phone, packet in sends:
        before = queued_octets(relay_socket)
        phone.pair.rtp_socket.sendto(packet, relay_socket.getsockname())
        await until(lambda before=before: queued_octets(relay_socket) > before)


async def serve_after_queueing(
    relay: MediaRelay,
    nursery: trio.Nursery,
    alice: PlainPhone,
    bob: PlainPhone,
    sends: list[tuple[PlainPhone, bytes]],
) -> MediaStream:
    """A stream from alice (leg A) to bob on ``relay``, which does not serve yet; ``sends`` wait
    in the queue of its A-side RTP socket when the relay starts serving."""
    stream = relay.open_stream()
    stream.a.set_remote(alice.rtp_address)
    stream.b.set_remote(bob.rtp_address)
    await queue_datagrams(stream.a.ports.rtp_socket, sends)
    await nursery.start(relay.serve)
    return stream


async def assert_refused_by_the_kernel(packet: bytes, port: int) -> None:
    """A stranger sends ``packet`` to the relay's ``port``: the socket there is connected to its
    latched source, so the kernel answers with ICMP port unreachable, which a connected UDP
    socket reports as ConnectionRefusedError (an unconnected one never would)."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        await stranger.bind((ADDRESS, 0))
        await stranger.connect((ADDRESS, port))
        await stranger.send(packet)
        with trio.fail_after(TIMEOUT), pytest.raises(ConnectionRefusedError):
            await stranger.recv(2048)


def local_ports(stream: MediaStream) -> list[int]:
    return [p for side in (stream.a, stream.b) for p in (side.ports.rtp_port, side.ports.rtcp_port)]


StartRelay = Callable[..., Awaitable[MediaRelay]]


# Not relay_fixtures.py's relay_fixture: a test here starts several relays, on other ranges,
# with other settings, or not serving yet; ``relay`` below is the first of them.
@pytest.fixture
async def start_relay(nursery: trio.Nursery) -> AsyncIterator[StartRelay]:
    relays: list[MediaRelay] = []

    async def start(
        *, ports: PortRange | None = None, serving: bool = True, **kwargs: Any
    ) -> MediaRelay:
        relay = MediaRelay(PortAllocator(ADDRESS, ports or RELAY_PORTS.get()), **kwargs)
        relays.append(relay)
        if serving:
            await nursery.start(relay.serve)
        return relay

    yield start
    for relay in relays:
        relay.close()
        assert relay.allocator.in_use == 0


make_phone = make_phone_fixture(PHONE_PORTS)


@pytest.fixture
async def relay(start_relay: StartRelay) -> MediaRelay:
    return await start_relay()


@pytest.fixture
def stream(relay: MediaRelay) -> Iterator[MediaStream]:
    with relay.open_stream() as stream:
        yield stream


@pytest.fixture
def alice(make_phone: Callable[[], PlainPhone]) -> PlainPhone:
    return make_phone()


@pytest.fixture
def bob(make_phone: Callable[[], PlainPhone]) -> PlainPhone:
    return make_phone()


@pytest.fixture
def connected(stream: MediaStream, alice: PlainPhone, bob: PlainPhone) -> MediaStream:
    """The stream with both SDP addresses known: alice on leg A, bob on leg B."""
    stream.a.set_remote(alice.rtp_address)
    stream.b.set_remote(bob.rtp_address)
    return stream


# -- forwarding ---------------------------------------------------------------------------------


async def test_rtp_flows_both_ways_unchanged(
    connected: MediaStream, alice: PlainPhone, bob: PlainPhone
):
    stream = connected
    for sequence in range(3):
        await alice.send(rtp(sequence), stream.a.ports.rtp_port)
        assert await bob.receive() == (rtp(sequence), (ADDRESS, stream.b.ports.rtp_port))
    await bob.send(rtp(7, ssrc=99), stream.b.ports.rtp_port)
    assert await alice.receive() == (rtp(7, ssrc=99), (ADDRESS, stream.a.ports.rtp_port))

    a_to_b, b_to_a = stream.a_to_b.statistics(), stream.b_to_a.statistics()
    assert (a_to_b.rtp_packets, a_to_b.rtp_bytes, a_to_b.dropped) == (3, 3 * 172, 0)
    assert (b_to_a.rtp_packets, b_to_a.rtp_bytes, b_to_a.dropped) == (1, 172, 0)
    assert stream.a.rtp_source == alice.rtp_address
    assert stream.b.rtp_source == bob.rtp_address


async def test_several_streams_and_changes_while_serving(
    relay: MediaRelay, make_phone: Callable[[], PlainPhone]
):
    streams = [relay.open_stream() for _ in range(6)]
    phones = [(make_phone(), make_phone()) for _ in streams]
    for stream, (a, b) in zip(streams, phones, strict=True):
        stream.a.set_remote(a.rtp_address)
        stream.b.set_remote(b.rtp_address)
    for stream in streams[::2]:
        stream.close()
    for index, (stream, (a, b)) in enumerate(zip(streams, phones, strict=True)):
        if stream.closed:
            continue
        await a.send(rtp(index), stream.a.ports.rtp_port)
        assert (await b.receive())[0] == rtp(index)
    assert relay.statistics().streams == 3
    assert relay.statistics().packets == 3
    for stream in streams:
        stream.close()
    assert relay.statistics().streams == 0


# -- symmetric latching -------------------------------------------------------------------------


async def test_latches_the_source_behind_a_nat_not_the_sdp_port(
    stream: MediaStream, make_phone: Callable[[], PlainPhone], bob: PlainPhone
):
    in_sdp, behind_nat = make_phone(), make_phone()  # the NAT maps alice's port to another one
    stream.a.set_remote(in_sdp.rtp_address)
    stream.b.set_remote(bob.rtp_address)

    await bob.send(rtp(1), stream.b.ports.rtp_port)
    assert (await in_sdp.receive())[0] == rtp(1)  # before latching: the SDP address

    await behind_nat.send(rtp(2), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(2)
    assert stream.a.rtp_source == behind_nat.rtp_address
    assert stream.a.rtp_destination == behind_nat.rtp_address

    await bob.send(rtp(3), stream.b.ports.rtp_port)
    assert (await behind_nat.receive())[0] == rtp(3)  # after latching: the real source


async def test_once_latched_a_stranger_is_refused_by_the_kernel(
    connected: MediaStream, alice: PlainPhone, bob: PlainPhone
):
    stream = connected
    await alice.send(rtp(1), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(1)

    await assert_refused_by_the_kernel(rtp(666, ssrc=666), stream.a.ports.rtp_port)
    await alice.send(rtp(2), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(2)
    assert stream.a.rtp_source == alice.rtp_address
    statistics = stream.a_to_b.statistics()
    assert (statistics.rtp_packets, statistics.dropped) == (2, 0)


async def test_a_strangers_datagram_queued_before_the_latch_is_dropped_and_counted(
    start_relay: StartRelay,
    nursery: trio.Nursery,
    alice: PlainPhone,
    bob: PlainPhone,
    make_phone: Callable[[], PlainPhone],
):
    # Connecting a socket does not purge its queue: what arrived before may be anyone's.
    relay, stranger = await start_relay(serving=False), make_phone()
    # Both wait in the relay's socket when it reads alice's datagram and latches her.
    sends = [(alice, rtp(1)), (stranger, rtp(666, ssrc=666))]
    stream = await serve_after_queueing(relay, nursery, alice, bob, sends)
    port = stream.a.ports.rtp_port
    assert (await bob.receive())[0] == rtp(1)
    await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 1)
    # Read into a backlog at the connect and relayed from there, checked; from now on the relay
    # reads without addresses (observable only in speed).
    assert stream.a._rtp.only_from_source
    await alice.send(rtp(2), port)
    assert (await bob.receive())[0] == rtp(2)
    await assert_refused_by_the_kernel(rtp(667, ssrc=666), port)
    await alice.send(rtp(3), port)
    assert (await bob.receive())[0] == rtp(3)
    assert stream.a_to_b.statistics().dropped_unlatched_source == 1


async def test_datagrams_queued_behind_the_latching_one_are_relayed_in_order(
    start_relay: StartRelay, nursery: trio.Nursery, alice: PlainPhone, bob: PlainPhone
):
    relay = await start_relay(serving=False)
    # All wait in the relay's socket when it latches alice.
    sends = [(alice, rtp(s)) for s in range(1, 5)]
    stream = await serve_after_queueing(relay, nursery, alice, bob, sends)
    port = stream.a.ports.rtp_port
    assert [(await bob.receive())[0] for _ in range(4)] == [rtp(s) for s in range(1, 5)]
    await alice.send(rtp(5), port)
    assert (await bob.receive())[0] == rtp(5)
    statistics = stream.a_to_b.statistics()
    assert (statistics.rtp_packets, statistics.dropped) == (5, 0)


async def test_a_backlog_longer_than_a_wake_up_is_served_without_more_traffic(
    start_relay: StartRelay, nursery: trio.Nursery, alice: PlainPhone, bob: PlainPhone
):
    # One round per wake-up: the relay reads the latching datagram, the connect reads the rest
    # into the backlog, and nothing else will ever make epoll report a socket.
    relay = await start_relay(serving=False, max_rounds_per_wakeup=1)
    await serve_after_queueing(relay, nursery, alice, bob, [(alice, rtp(s)) for s in range(1, 5)])
    assert [(await bob.receive())[0] for _ in range(4)] == [rtp(s) for s in range(1, 5)]


async def test_a_socket_that_holds_too_much_at_the_latch_stays_unconnected_and_checked(
    start_relay: StartRelay,
    nursery: trio.Nursery,
    alice: PlainPhone,
    bob: PlainPhone,
    make_phone: Callable[[], PlainPhone],
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(relay_module, "_MOST_DATAGRAMS_READ_AT_CONNECT", 2)
    relay, stranger = await start_relay(serving=False), make_phone()
    # The latching datagram, 2 read at the connect, 1 left over.
    sends = [(alice, rtp(s)) for s in range(1, 5)]
    stream = await serve_after_queueing(relay, nursery, alice, bob, sends)
    port = stream.a.ports.rtp_port
    assert [(await bob.receive())[0] for _ in range(4)] == [rtp(s) for s in range(1, 5)]
    assert stream.a.rtp_source == alice.rtp_address
    # Not connected: the relay reads the stranger's datagram, drops and counts it.
    await stranger.send(rtp(666, ssrc=666), port)
    await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 1)
    await alice.send(rtp(5), port)
    assert (await bob.receive())[0] == rtp(5)


async def test_relatch_after_the_latched_source_was_silent(
    start_relay: StartRelay, make_phone: Callable[[], PlainPhone]
):
    clock = FakeClock()
    relay = await start_relay(relatch_after=10.0, clock=clock)
    alice, moved, bob = make_phone(), make_phone(), make_phone()
    with relay.open_stream() as stream:
        stream.a.set_remote(alice.rtp_address)
        stream.b.set_remote(bob.rtp_address)
        await alice.send(rtp(1), stream.a.ports.rtp_port)
        assert (await bob.receive())[0] == rtp(1)

        clock.now = 9.0  # alice silent for 9 s: still latched
        await moved.send(rtp(2), stream.a.ports.rtp_port)
        await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 1)

        clock.now = 10.0  # silent for 10 s: the next source latches
        await moved.send(rtp(3), stream.a.ports.rtp_port)
        assert (await bob.receive())[0] == rtp(3)
        assert stream.a.rtp_source == moved.rtp_address
        await bob.send(rtp(4), stream.b.ports.rtp_port)
        assert (await moved.receive())[0] == rtp(4)


async def test_without_relatch_a_silent_source_stays_latched(
    start_relay: StartRelay, make_phone: Callable[[], PlainPhone]
):
    clock = FakeClock()
    relay = await start_relay(clock=clock)
    alice, bob = make_phone(), make_phone()
    with relay.open_stream() as stream:
        stream.a.set_remote(alice.rtp_address)
        stream.b.set_remote(bob.rtp_address)
        await alice.send(rtp(1), stream.a.ports.rtp_port)
        assert (await bob.receive())[0] == rtp(1)
        clock.now = 1e6
        await assert_refused_by_the_kernel(rtp(2), stream.a.ports.rtp_port)
        assert stream.a.rtp_source == alice.rtp_address
        await alice.send(rtp(3), stream.a.ports.rtp_port)
        assert (await bob.receive())[0] == rtp(3)


async def test_a_new_sdp_address_forgets_the_latch(
    connected: MediaStream, alice: PlainPhone, bob: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    stream = connected
    await alice.send(rtp(1), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(1)
    stream.a.set_remote(alice.rtp_address)  # a re-INVITE with the same address
    assert stream.a.rtp_source == alice.rtp_address

    moved = make_phone()
    stream.a.set_remote(moved.rtp_address)  # a re-INVITE from somewhere else
    assert stream.a.rtp_source is None
    await bob.send(rtp(2), stream.b.ports.rtp_port)
    assert (await moved.receive())[0] == rtp(2)
    # The socket connected to alice takes the new peer again and latches it.
    await moved.send(rtp(3), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(3)
    assert stream.a.rtp_source == moved.rtp_address
    await bob.send(rtp(4), stream.b.ports.rtp_port)
    assert (await moved.receive())[0] == rtp(4)


async def test_a_replaced_source_still_sending_cannot_take_the_socket_back_for_a_while(
    start_relay: StartRelay, make_phone: Callable[[], PlainPhone]
):
    # A transfer: the leg's peer changes from alice to carol while alice, who is leaving, still
    # sends (music on hold). Without the quarantine her next packet latched the socket again
    # and carol's media was refused for the rest of the call.
    clock = FakeClock()
    relay = await start_relay(clock=clock)
    alice, carol, bob = make_phone(), make_phone(), make_phone()
    with relay.open_stream() as stream:
        stream.a.set_remote(alice.rtp_address)
        stream.b.set_remote(bob.rtp_address)
        await alice.send(rtp(1), stream.a.ports.rtp_port)
        assert (await bob.receive())[0] == rtp(1)

        clock.now = 1.0
        stream.a.set_remote(carol.rtp_address)  # carol takes over leg A
        await alice.send(rtp(2), stream.a.ports.rtp_port)
        await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 1)
        assert stream.a.rtp_source is None
        await carol.send(rtp(3), stream.a.ports.rtp_port)
        assert (await bob.receive())[0] == rtp(3)
        assert stream.a.rtp_source == carol.rtp_address
        await bob.send(rtp(4), stream.b.ports.rtp_port)
        assert (await carol.receive())[0] == rtp(4)

        # A peer that keeps its source across a re-INVITE to a new address is kept out for
        # the quarantine only, not for good.
        clock.now = 2.0
        stream.a.set_remote(alice.rtp_address)
        await carol.send(rtp(5), stream.a.ports.rtp_port)
        await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 2)
        clock.now = 1.0 + relay_module.PREVIOUS_SOURCE_QUARANTINE  # 3 s after carol's rtp(3)
        await carol.send(rtp(6), stream.a.ports.rtp_port)
        assert (await bob.receive())[0] == rtp(6)
        assert stream.a.rtp_source == carol.rtp_address

        # Going back (a transfer that failed after the new peer's SDP) frees the old peer at
        # once: each change decides afresh.
        stream.a.set_remote(alice.rtp_address)  # carol latched: she is kept out now
        stream.a.set_remote(carol.rtp_address)  # back to carol, before alice sent anything
        await carol.send(rtp(7), stream.a.ports.rtp_port)
        assert (await bob.receive())[0] == rtp(7)


async def test_no_destination_until_sdp_or_latching_gives_one(
    stream: MediaStream, alice: PlainPhone, bob: PlainPhone
):
    stream.a.set_remote(alice.rtp_address)  # leg B has sent no SDP yet
    await alice.send(rtp(1), stream.a.ports.rtp_port)
    await until(lambda: stream.a_to_b.statistics().dropped_no_destination == 1)

    await bob.send(rtp(2), stream.b.ports.rtp_port)  # latching learns where bob is
    assert (await alice.receive())[0] == rtp(2)
    await alice.send(rtp(3), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(3)


async def test_old_style_hold_address_is_no_destination(stream: MediaStream) -> None:
    stream.b.set_remote(("0.0.0.0", 40000))  # RFC 3264 §8.4
    assert stream.b.rtp_destination is None
    assert stream.b.rtcp_destination is None


@pytest.mark.parametrize(
    ("address", "message"),
    [
        (("phone.example.com", 4000), "not an IP address"),
        (("::1", 4000), "address family"),
        ((ADDRESS, 0), "out of range"),
        ((ADDRESS, 70000), "out of range"),
    ],
)
async def test_sdp_addresses_are_checked(
    stream: MediaStream, address: tuple[str, int], message: str
) -> None:
    with pytest.raises(LocalMediaError, match=message):
        stream.a.set_remote(address)


# -- RTCP and rtcp-mux --------------------------------------------------------------------------


async def test_rtcp_mux_side_to_non_mux_side(
    stream: MediaStream, alice: PlainPhone, bob: PlainPhone
):
    stream.a.set_remote(alice.rtp_address, rtcp_mux=True)
    stream.b.set_remote(bob.rtp_address)  # RTCP implied at RTP port + 1 (RFC 3605 §2.1)

    await alice.send(empty_receiver_report(), stream.a.ports.rtp_port)  # RFC 5761: on the RTP port
    assert await bob.receive(on_rtcp=True) == (
        empty_receiver_report(),
        (ADDRESS, stream.b.ports.rtcp_port),
    )
    await alice.send(rtp(1), stream.a.ports.rtp_port)
    assert await bob.receive() == (rtp(1), (ADDRESS, stream.b.ports.rtp_port))

    await bob.send(empty_receiver_report(5), stream.b.ports.rtcp_port, from_rtcp=True)
    assert await alice.receive() == (empty_receiver_report(5), (ADDRESS, stream.a.ports.rtp_port))
    await bob.send(rtp(2), stream.b.ports.rtp_port)
    assert await alice.receive() == (rtp(2), (ADDRESS, stream.a.ports.rtp_port))

    for direction in (stream.a_to_b, stream.b_to_a):
        stats = direction.statistics()
        assert (stats.rtp_packets, stats.rtcp_packets, stats.rtcp_bytes) == (1, 1, 8)
    assert stream.b.rtcp_source == bob.rtcp_address


async def test_rtcp_to_an_explicit_a_rtcp_address(
    stream: MediaStream, alice: PlainPhone, bob: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    elsewhere = make_phone()
    stream.a.set_remote(alice.rtp_address, rtcp_mux=True)
    stream.b.set_remote(bob.rtp_address, rtcp=elsewhere.rtp_address)  # a=rtcp (RFC 3605)
    await alice.send(empty_receiver_report(), stream.a.ports.rtp_port)
    assert await elsewhere.receive() == (
        empty_receiver_report(),
        (ADDRESS, stream.b.ports.rtcp_port),
    )


async def test_rtcp_that_came_before_the_sdp_from_its_implied_address_is_not_kept_out(
    start_relay: StartRelay, make_phone: Callable[[], PlainPhone]
):
    # A callee's RTCP arrives before its answer reaches us (baresip sends an RTCP packet as its
    # stream starts, while it rings): it latches side B's RTCP socket, and is dropped (the
    # direction waits for the answer). Its answer then gives bob's RTP address, with RTCP
    # implied at RTP port + 1 (RFC 3605 §2.1): the latched source is bob himself, never a
    # previous peer for the quarantine. Before, his RTCP was refused for 3 s after the answer.
    clock = FakeClock()
    relay = await start_relay(clock=clock)
    alice, bob = make_phone(), make_phone()
    with relay.open_stream() as stream:
        stream.a.set_remote(alice.rtp_address)
        stream.b_to_a.blocked = True  # no answer yet
        await bob.send(empty_receiver_report(1), stream.b.ports.rtcp_port, from_rtcp=True)
        await until(lambda: stream.b_to_a.statistics().dropped_blocked == 1)
        assert stream.b.rtcp_source == bob.rtcp_address

        clock.now = 0.5
        stream.b.set_remote(bob.rtp_address)  # the answer
        stream.b_to_a.blocked = False
        await bob.send(empty_receiver_report(2), stream.b.ports.rtcp_port, from_rtcp=True)
        assert await alice.receive(on_rtcp=True) == (
            empty_receiver_report(2),
            (ADDRESS, stream.a.ports.rtcp_port),
        )
        assert stream.b_to_a.statistics().dropped_unlatched_source == 0
        assert stream.b.rtcp_source == bob.rtcp_address


async def test_rtcp_between_sides_without_mux(
    connected: MediaStream, alice: PlainPhone, bob: PlainPhone
):
    stream = connected
    await alice.send(empty_receiver_report(), stream.a.ports.rtcp_port, from_rtcp=True)
    assert await bob.receive(on_rtcp=True) == (
        empty_receiver_report(),
        (ADDRESS, stream.b.ports.rtcp_port),
    )
    # Without rtcp-mux the RTP port carries only RTP, whatever the second octet says.
    looks_like_rtcp = empty_receiver_report() + bytes(4)  # 12 octets: long enough for RTP
    await alice.send(looks_like_rtcp, stream.a.ports.rtp_port)
    assert await bob.receive() == (looks_like_rtcp, (ADDRESS, stream.b.ports.rtp_port))
    assert stream.a_to_b.statistics().rtcp_packets == 1
    assert stream.a_to_b.statistics().rtp_packets == 1


async def test_rtcp_mux_on_both_sides(stream: MediaStream, alice: PlainPhone, bob: PlainPhone):
    stream.a.set_remote(alice.rtp_address, rtcp_mux=True)
    stream.b.set_remote(bob.rtp_address, rtcp_mux=True)
    await alice.send(empty_receiver_report(), stream.a.ports.rtp_port)
    assert await bob.receive() == (empty_receiver_report(), (ADDRESS, stream.b.ports.rtp_port))
    assert stream.a_to_b.statistics().rtcp_packets == 1


async def test_an_rtcp_observer_sees_rtcp_only_and_rtp_routes_stay_as_they_were(
    stream: MediaStream, alice: PlainPhone, bob: PlainPhone
):
    """Call quality reads RTCP (RFC 5761 §4 muxed on the RTP port, and on its own port), after
    the inbound transform; RTP never reaches it and its routes are built as without it, and a
    raising observer never stops the packet."""
    stream.a.set_remote(alice.rtp_address, rtcp_mux=True)
    stream.b.set_remote(bob.rtp_address)
    stream.a_to_b.transforms = Transforms(rtcp_in=lambda p: p + b"<in>")
    await alice.send(rtp(0), stream.a.ports.rtp_port)  # latch
    await bob.receive()
    rtp_route = stream.a._rtp.rtp
    before = (rtp_route.plain, rtp_route.in_place, rtp_route.transform_in, rtp_route.step_in)
    seen: list[tuple[str, bytes]] = []

    def observe_b(packet: bytes) -> None:
        seen.append(("b", packet))
        raise RuntimeError("a bug in the observer")

    stream.a_to_b.rtcp_observer = lambda packet: seen.append(("a", packet))
    stream.b_to_a.rtcp_observer = observe_b
    await alice.send(rtp(1), stream.a.ports.rtp_port)
    assert await bob.receive() == (rtp(1), (ADDRESS, stream.b.ports.rtp_port))
    rtp_route = stream.a._rtp.rtp
    assert (rtp_route.plain, rtp_route.in_place, rtp_route.transform_in, rtp_route.step_in) == (
        before
    )
    await alice.send(empty_receiver_report(), stream.a.ports.rtp_port)  # muxed
    assert (await bob.receive(on_rtcp=True))[0] == empty_receiver_report() + b"<in>"
    await bob.send(empty_receiver_report(5), stream.b.ports.rtcp_port, from_rtcp=True)
    assert (await alice.receive())[0] == empty_receiver_report(5)  # forwarded though it raised
    assert seen == [("a", empty_receiver_report() + b"<in>"), ("b", empty_receiver_report(5))]

    stream.a_to_b.rtcp_observer = None
    await alice.send(empty_receiver_report(7), stream.a.ports.rtp_port)
    assert (await bob.receive(on_rtcp=True))[0] == empty_receiver_report(7) + b"<in>"
    assert len(seen) == 2
    assert stream.b_to_a.statistics().dropped == 0


# -- blocking, transforms, taps -----------------------------------------------------------------


async def test_a_blocked_direction_forwards_nothing(
    connected: MediaStream, alice: PlainPhone, bob: PlainPhone
):
    stream = connected
    stream.a_to_b.blocked = True
    await alice.send(rtp(1), stream.a.ports.rtp_port)
    await alice.send(empty_receiver_report(), stream.a.ports.rtcp_port, from_rtcp=True)
    await until(lambda: stream.a_to_b.statistics().dropped_blocked == 2)

    await bob.send(rtp(2), stream.b.ports.rtp_port)  # the other direction still flows
    assert (await alice.receive())[0] == rtp(2)

    stream.a_to_b.blocked = False
    await alice.send(rtp(3), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(3)
    stats = stream.a_to_b.statistics()
    assert (stats.rtp_packets, stats.rtcp_packets, stats.dropped) == (1, 0, 2)


async def test_changes_in_a_row_cost_one_rebuild_and_all_hold_for_the_next_packet(
    connected: MediaStream, alice: PlainPhone, bob: PlainPhone, monkeypatch: pytest.MonkeyPatch
):
    stream = connected
    rebuilds: list[MediaStream] = []
    rebuild = MediaStream._rebuild

    def counting_rebuild(self: MediaStream) -> None:
        rebuilds.append(self)
        rebuild(self)

    monkeypatch.setattr(MediaStream, "_rebuild", counting_rebuild)
    # What keying does when keys arrive: transforms and block flags of both directions.
    stream.a_to_b.blocked = True
    stream.a_to_b.transforms = Transforms(rtp_in=lambda p: p + b"<a>")
    stream.b_to_a.transforms = Transforms(rtp_in=lambda p: p + b"<b>")
    stream.a_to_b.blocked = False
    stream.b_to_a.blocked = False
    assert rebuilds == []  # nothing read a packet yet
    await alice.send(rtp(1), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(1) + b"<a>"
    # One for the five changes (and the SDP addresses before them), one for latching alice.
    assert rebuilds == [stream, stream]
    await bob.send(rtp(2), stream.b.ports.rtp_port)
    assert (await alice.receive())[0] == rtp(2) + b"<b>"
    assert rebuilds == [stream] * 3  # latching bob's source


async def test_a_new_stream_is_built_by_the_round_that_reads_its_first_packet(
    relay: MediaRelay, alice: PlainPhone, bob: PlainPhone, monkeypatch: pytest.MonkeyPatch
):
    """A stream opened, told both SDP addresses and keyed (as a call's set-up does at once) is
    built once, by the round that reads its first packet, not at its opening as well; one
    closed before any packet is never built (docs/benchmarks.md, "Session 41 (keying)")."""
    rebuilds: list[MediaStream] = []
    rebuild = MediaStream._rebuild

    def counting_rebuild(self: MediaStream) -> None:
        rebuilds.append(self)
        rebuild(self)

    monkeypatch.setattr(MediaStream, "_rebuild", counting_rebuild)
    with relay.open_stream() as unused:
        unused.a.set_remote(alice.rtp_address)
    assert rebuilds == []

    with relay.open_stream() as stream:
        stream.a.set_remote(alice.rtp_address)
        stream.b.set_remote(bob.rtp_address)
        stream.a_to_b.blocked = stream.b_to_a.blocked = False
        assert rebuilds == []
        await alice.send(rtp(1), stream.a.ports.rtp_port)
        assert await bob.receive() == (rtp(1), (ADDRESS, stream.b.ports.rtp_port))
        assert rebuilds == [stream, stream]  # the opening and the changes, then alice's latch
        # Routed as the stream's state says since its opening: b's sockets relay B -> A.
        await bob.send(rtp(2), stream.b.ports.rtp_port)
        assert await alice.receive() == (rtp(2), (ADDRESS, stream.a.ports.rtp_port))
        assert stream.b_to_a.statistics().rtp_packets == 1


async def test_transforms_apply_per_kind_and_none_drops(
    stream: MediaStream, alice: PlainPhone, bob: PlainPhone
):
    stream.a.set_remote(alice.rtp_address, rtcp_mux=True)
    stream.b.set_remote(bob.rtp_address, rtcp_mux=True)

    def rtp_in(packet: bytes) -> bytes | None:
        return None if packet.endswith(b"drop") else packet + b"<in>"

    stream.a_to_b.transforms = Transforms(
        rtp_in=rtp_in, rtp_out=lambda p: p + b"<out>", rtcp_out=lambda p: p + b"<rtcp>"
    )
    await alice.send(rtp(1, payload=b"drop"), stream.a.ports.rtp_port)
    await until(lambda: stream.a_to_b.statistics().dropped_transform == 1)
    await alice.send(rtp(2), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(2) + b"<in><out>"
    await alice.send(empty_receiver_report(), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == empty_receiver_report() + b"<rtcp>"

    await bob.send(rtp(3), stream.b.ports.rtp_port)  # the other direction has its own slots
    assert (await alice.receive())[0] == rtp(3)

    stats = stream.a_to_b.statistics()
    assert stats.rtp_bytes == len(rtp(2) + b"<in><out>")  # what was sent, not what arrived
    assert (stats.dropped_transform, stats.transform_errors) == (1, 0)


async def test_a_raising_transform_drops_counts_and_logs_once(
    connected: MediaStream, alice: PlainPhone, bob: PlainPhone, caplog: pytest.LogCaptureFixture
):
    stream = connected

    def broken(packet: bytes) -> bytes:
        raise RuntimeError("bug in a transform")

    stream.a_to_b.transforms = Transforms(rtp_in=broken)
    with caplog.at_level(logging.WARNING, logger="gateway.core.media.relay"):
        for sequence in range(3):
            await alice.send(rtp(sequence), stream.a.ports.rtp_port)
        await until(lambda: stream.a_to_b.statistics().transform_errors == 3)
    assert stream.a_to_b.statistics().dropped_transform == 3
    logged = [r for r in caplog.records if "media transform" in r.getMessage()]
    assert len(logged) == 1
    # Its traceback, the type but not the text of what the transform (plugin code) raised.
    assert f"\nRuntimeError: {WITHHELD}\n" in (logged[0].exc_text or "")
    assert "bug in a transform" not in caplog.text

    stream.a_to_b.transforms = Transforms()
    await alice.send(rtp(9), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(9)


async def test_taps_see_packets_between_the_transforms(
    connected: MediaStream, alice: PlainPhone, bob: PlainPhone
):
    stream = connected
    seen: list[tuple[Direction, bytes]] = []

    def tap(direction: Direction, packet: bytes) -> None:
        seen.append((direction, packet))

    def broken_tap(direction: Direction, packet: bytes) -> None:
        raise RuntimeError("bug in a tap")

    stream.a_to_b.transforms = Transforms(rtp_in=lambda p: p + b"<in>", rtp_out=lambda p: p[:-4])
    stream.a_to_b.add_tap(tap)
    stream.a_to_b.add_tap(broken_tap)
    stream.b_to_a.add_tap(tap)

    await alice.send(rtp(1), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(1)  # forwarded although a tap failed
    await bob.send(rtp(2), stream.b.ports.rtp_port)
    assert (await alice.receive())[0] == rtp(2)
    assert seen == [(Direction.A_TO_B, rtp(1) + b"<in>"), (Direction.B_TO_A, rtp(2))]
    assert stream.a_to_b.statistics().tap_errors == 1

    stream.a_to_b.remove_tap(tap)
    stream.a_to_b.remove_tap(broken_tap)
    assert stream.a_to_b.taps == ()
    await alice.send(rtp(3), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(3)
    assert len(seen) == 2


async def test_a_tap_may_close_its_stream_while_the_relay_serves(
    relay: MediaRelay, make_phone: Callable[[], PlainPhone]
):
    doomed, survivor = relay.open_stream(), relay.open_stream()
    phones = {s: (make_phone(), make_phone()) for s in (doomed, survivor)}
    for s, (a, b) in phones.items():
        s.a.set_remote(a.rtp_address)
        s.b.set_remote(b.rtp_address)
    doomed.a_to_b.add_tap(lambda direction, packet: doomed.close())

    a, _ = phones[doomed]
    await a.send(rtp(1), doomed.a.ports.rtp_port)
    await until(lambda: doomed.closed)
    assert doomed.a_to_b.statistics().dropped_send_error == 1  # its sockets closed under it

    a, b = phones[survivor]
    await a.send(rtp(2), survivor.a.ports.rtp_port)
    assert (await b.receive())[0] == rtp(2)
    assert relay.streams == frozenset({survivor})
    survivor.close()


async def test_malformed_packets_are_dropped_and_do_not_latch(
    connected: MediaStream, alice: PlainPhone, bob: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    stream, stranger = connected, make_phone()
    for packet in (b"\x40" + rtp(1)[1:], b"\x80\x00\x00", rtp(1)[:11], b""):
        await stranger.send(packet, stream.a.ports.rtp_port)
    await until(lambda: stream.a_to_b.statistics().dropped_malformed == 4)
    assert stream.a.rtp_source is None

    await alice.send(rtp(2), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(2)
    assert stream.a.rtp_source == alice.rtp_address


async def test_dtls_datagrams_go_to_the_handler_of_the_socket_they_arrive_on(
    connected: MediaStream, alice: PlainPhone
):
    # RFC 5764 §4.1: without rtcp-mux the RTCP port runs its own handshake, so each socket of a
    # side hands DTLS (RFC 7983: first byte 20..63) to its own handler and answers from itself.
    stream = connected
    on_rtp: list[tuple[bytes, Any]] = []
    on_rtcp: list[tuple[bytes, Any]] = []
    stream.a.set_non_rtp_handler(lambda packet, source: on_rtp.append((packet, source)))
    stream.a.set_non_rtp_handler(lambda packet, source: on_rtcp.append((packet, source)), rtcp=True)
    hello = b"\x16\xfe\xfd" + bytes(10)
    stun = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12)  # RFC 5389 Binding request
    # Everything that is not RTP/RTCP (RFC 7983) goes to the handler, which picks its range.
    await alice.send(stun, stream.a.ports.rtp_port)
    await alice.send(hello + b"rtp", stream.a.ports.rtp_port)
    await alice.send(hello + b"rtcp", stream.a.ports.rtcp_port, from_rtcp=True)
    await until(lambda: len(on_rtcp) == 1)
    await assert_refused_by_the_kernel(hello + b"stranger", stream.a.ports.rtcp_port)
    await alice.send(hello + b"marker", stream.a.ports.rtcp_port, from_rtcp=True)
    await until(lambda: len(on_rtcp) == 2)
    assert on_rtp == [(stun, alice.rtp_address), (hello + b"rtp", alice.rtp_address)]
    assert on_rtcp == [
        (hello + b"rtcp", alice.rtcp_address),
        (hello + b"marker", alice.rtcp_address),
    ]

    assert stream.a.send(b"to-rtcp", rtcp=True)
    assert await alice.receive(on_rtcp=True) == (b"to-rtcp", (ADDRESS, stream.a.ports.rtcp_port))
    assert stream.a.send(b"to-rtp")
    assert await alice.receive() == (b"to-rtp", (ADDRESS, stream.a.ports.rtp_port))

    # Without a handler the RTCP socket drops DTLS as malformed again.
    stream.a.set_non_rtp_handler(None, rtcp=True)
    await alice.send(hello + b"late", stream.a.ports.rtcp_port, from_rtcp=True)
    await until(lambda: stream.a_to_b.statistics().dropped_malformed == 1)
    assert len(on_rtcp) == 2


async def test_a_callees_handshake_socket_takes_every_forks_dtls_until_its_answer(
    relay: MediaRelay, alice: PlainPhone, bob: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # Our offer went to two forks (RFC 3261 §16.7), which share side B's sockets and each start
    # a handshake as they ring (RFC 5763 §5). Before an answer gave B an address, the first
    # source latches the socket but does not connect it, and the other fork's DTLS is handed on
    # with its source, neither refused nor latching: the call's handshake task keeps them apart
    # (handshakes.py). The answer's address unlatches; then it latches and connects as always.
    stream = relay.open_stream()
    stream.a.set_remote(alice.rtp_address)
    other = make_phone()
    taken: list[tuple[bytes, Any]] = []
    stream.b.set_non_rtp_handler(lambda packet, source: taken.append((packet, source)))
    hello = b"\x16\xfe\xfd" + bytes(10)
    port = stream.b.ports.rtp_port
    await bob.send(hello + b"first", port)
    await until(lambda: len(taken) == 1)
    await other.send(hello + b"second", port)
    await bob.send(rtp(1), port)  # the first fork's media as it rings
    await other.send(hello + b"again", port)
    await until(lambda: len(taken) == 3)
    assert taken == [
        (hello + b"first", bob.rtp_address),
        (hello + b"second", other.rtp_address),
        (hello + b"again", other.rtp_address),
    ]
    assert stream.b.rtp_source == bob.rtp_address
    assert not stream.b._rtp.connected
    assert stream.b_to_a.statistics().dropped_unlatched_source == 0

    stream.b.set_remote(other.rtp_address)  # the second fork answered
    await other.send(hello + b"answered", port)
    await until(lambda: len(taken) == 4)
    assert stream.b.rtp_source == other.rtp_address and stream.b._rtp.connected
    await assert_refused_by_the_kernel(hello + b"stranger", port)


async def test_a_losing_forks_resend_after_the_answer_does_not_take_the_answering_forks_socket(
    relay: MediaRelay, alice: PlainPhone, bob: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # Two forks began their handshakes as they rang; the first to send (bob) latched B's socket
    # unconnected, and bob answers. The other fork resends its ClientHello before our CANCEL
    # reaches it (RFC 6347 §4.2.4.1 timers): arriving between the answer and bob's next
    # datagram, it latched and connected the socket the answer had unlatched, the kernel then
    # refused bob's handshake, and the call's keys never came. The latched source is the
    # answer's own address: it stays latched, now connected.
    stream = relay.open_stream()
    stream.a.set_remote(alice.rtp_address)
    other = make_phone()
    taken: list[tuple[bytes, Any]] = []
    stream.b.set_non_rtp_handler(lambda packet, source: taken.append((packet, source)))
    hello = b"\x16\xfe\xfd" + bytes(10)
    port = stream.b.ports.rtp_port
    await bob.send(hello + b"first", port)
    await until(lambda: len(taken) == 1)
    await other.send(hello + b"second", port)
    await until(lambda: len(taken) == 2)

    stream.b.set_remote(bob.rtp_address)  # the first fork answered
    assert stream.b.rtp_source == bob.rtp_address and stream.b._rtp.connected
    await other.send(hello + b"resent", port)
    await bob.send(hello + b"answered", port)
    await until(lambda: len(taken) == 3)
    assert taken[2] == (hello + b"answered", bob.rtp_address)
    assert stream.b.rtp_source == bob.rtp_address


async def test_the_fork_that_latched_is_kept_out_after_another_forks_answer_after_long_ringing(
    start_relay: StartRelay, make_phone: Callable[[], PlainPhone]
):
    # The first fork to send (loser) latched B's handshake socket unconnected; after 30 s of
    # ringing the other fork (winner) answers. The answer makes the socket forget the loser and
    # keep it out for PREVIOUS_SOURCE_QUARANTINE, counted from when the loser was last heard:
    # its handshake datagrams never set that (only media does), so the quarantine had ended
    # with the stream's first 3 s, and the loser's resend before our CANCEL reached it latched
    # and connected the socket, refusing the winner's handshake. Kept out from the answer now.
    clock = FakeClock()
    relay = await start_relay(clock=clock)
    alice, loser, winner = make_phone(), make_phone(), make_phone()
    with relay.open_stream() as stream:
        stream.a.set_remote(alice.rtp_address)
        taken: list[tuple[bytes, Any]] = []
        stream.b.set_non_rtp_handler(lambda packet, source: taken.append((packet, source)))
        hello = b"\x16\xfe\xfd" + bytes(10)
        port = stream.b.ports.rtp_port
        clock.now = 30.0
        await loser.send(hello + b"loser", port)
        await until(lambda: len(taken) == 1)
        await winner.send(hello + b"winner", port)
        await until(lambda: len(taken) == 2)

        stream.b.set_remote(winner.rtp_address)  # the second fork answered
        await loser.send(hello + b"resent", port)
        await until(lambda: stream.b_to_a.statistics().dropped_unlatched_source == 1)
        await winner.send(hello + b"answered", port)
        await until(lambda: len(taken) == 3)
        assert taken[2] == (hello + b"answered", winner.rtp_address)
        assert stream.b.rtp_source == winner.rtp_address


async def test_the_fork_that_latched_is_not_kept_out_when_no_sender_is_at_the_answers_address(
    relay: MediaRelay, alice: PlainPhone, bob: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # Bob (the first to send, latched B's handshake socket) and another fork rang; bob answers
    # from behind a NAT: his SDP gives an address nobody sent from. Which fork lost is not
    # known, so none is kept out: bob's resend latches the socket at once (it was refused for
    # PREVIOUS_SOURCE_QUARANTINE, 3 s, as a losing fork's). Were the answer's address one of
    # the senders, the latched fork would be kept out (the test above).
    stream = relay.open_stream()
    stream.a.set_remote(alice.rtp_address)
    other = make_phone()
    taken: list[tuple[bytes, Any]] = []
    stream.b.set_non_rtp_handler(lambda packet, source: taken.append((packet, source)))
    hello = b"\x16\xfe\xfd" + bytes(10)
    port = stream.b.ports.rtp_port
    await bob.send(hello + b"first", port)
    await until(lambda: len(taken) == 1)
    await other.send(hello + b"second", port)
    await until(lambda: len(taken) == 2)

    stream.b.set_remote(("127.0.0.1", 40000))  # bob's answer, his private address
    await bob.send(hello + b"resent", port)
    await until(lambda: len(taken) == 3)
    assert taken[2] == (hello + b"resent", bob.rtp_address)
    assert stream.b.rtp_source == bob.rtp_address
    assert stream.b_to_a.statistics().dropped_unlatched_source == 0
    # Not the answer's address: latched but not connected until keys (the SDP address may
    # still take it over: the test of a stranger before the caller, below).
    assert not stream.b._rtp.connected
    stream.b_to_a.transforms = Transforms(rtp_in=lambda packet: packet)  # bob's keys
    await bob.send(hello + b"finished", port)
    await until(lambda: len(taken) == 4)
    assert stream.b._rtp.connected
    await assert_refused_by_the_kernel(hello + b"stranger", port)


async def test_a_fork_that_latched_with_its_ringing_media_is_kept_out_after_any_answer(
    relay: MediaRelay, alice: PlainPhone, bob: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # Bob latched B's handshake socket with media sent as he rang (50 a second until our
    # CANCEL reaches him); the other fork answers, sending nothing as it rang: no sender was
    # at the answer's address, and yet bob is kept out 3 s from his last media, as any
    # previous peer: his next packet must not latch and connect the socket before the
    # answering fork's ClientHello (the kernel would refuse that fork's handshake).
    stream = relay.open_stream()
    stream.a.set_remote(alice.rtp_address)
    stream.b.set_non_rtp_handler(lambda packet, source: None)
    port = stream.b.ports.rtp_port
    await bob.send(rtp(1), port)
    await until(lambda: stream.b.rtp_source == bob.rtp_address)
    other = make_phone()

    stream.b.set_remote(other.rtp_address)  # the other fork answered
    await bob.send(rtp(2), port)
    await until(lambda: stream.b_to_a.statistics().dropped_unlatched_source == 1)
    assert stream.b.rtp_source is None


async def test_a_late_offer_callers_handshake_socket_latches_and_connects_before_its_answer(
    relay: MediaRelay, alice: PlainPhone, bob: PlainPhone
):
    # A late offer (RFC 3261 §13.2.1): our offer went to the caller in our 200 and its ACK
    # brings the answer, so side A has no address while its handshake may begin. The caller is
    # one device, never forks sharing these sockets (those are the callee's, side B): its
    # first source latches and connects the socket as before, and a stranger's ClientHello is
    # refused by the kernel, never handed to the caller's DTLS engine, which nothing on the
    # handshake task keeps apart by source for side A.
    stream = relay.open_stream()
    stream.b.set_remote(bob.rtp_address)
    taken: list[tuple[bytes, Any]] = []
    stream.a.set_non_rtp_handler(lambda packet, source: taken.append((packet, source)))
    hello = b"\x16\xfe\xfd" + bytes(10)
    port = stream.a.ports.rtp_port
    await alice.send(hello + b"caller", port)
    await until(lambda: len(taken) == 1)
    assert stream.a.rtp_source == alice.rtp_address and stream.a._rtp.connected
    await assert_refused_by_the_kernel(hello + b"stranger", port)
    assert taken == [(hello + b"caller", alice.rtp_address)]


async def test_a_strangers_clienthello_before_the_callers_latches_until_the_caller_speaks(
    connected: MediaStream, alice: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # Alice's SDP gave her address; a stranger's ClientHello reaches her leg's port first
    # (nothing in a handshake of epoch 0 is authenticated, RFC 5763 §5). It latches the socket
    # without connecting it (alice might be behind a NAT, and it be hers), and alice's own
    # datagram takes the socket over: the stranger's later datagrams are counted, and never
    # handed on. Alice's keys connect the socket: the kernel refuses the others from then on,
    # and RTP reads and sends without addresses, as every established call's (#7).
    stream = connected
    stranger = make_phone()
    taken: list[tuple[bytes, Any]] = []
    stream.a.set_non_rtp_handler(lambda packet, source: taken.append((packet, source)))
    hello = b"\x16\xfe\xfd" + bytes(10)
    port = stream.a.ports.rtp_port
    await stranger.send(hello + b"forged", port)
    await until(lambda: len(taken) == 1)
    assert stream.a.rtp_source == stranger.rtp_address and not stream.a._rtp.connected
    # The handshake's datagrams go to the latched source, and to the SDP address too: a peer
    # that waits for our ClientHello never speaks first to take the socket over.
    assert stream.a.send(b"answer")
    assert await stranger.receive() == (b"answer", (ADDRESS, port))
    assert await alice.receive() == (b"answer", (ADDRESS, port))

    await alice.send(hello + b"caller", port)
    await until(lambda: len(taken) == 2)
    assert taken[1] == (hello + b"caller", alice.rtp_address)
    assert stream.a.rtp_source == alice.rtp_address and not stream.a._rtp.connected
    assert stream.a.send(b"to-alice")  # to alice alone now
    assert await alice.receive() == (b"to-alice", (ADDRESS, port))
    await stranger.send(hello + b"again", port)
    await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 1)
    assert len(taken) == 2

    stream.a_to_b.transforms = Transforms(rtp_in=lambda packet: packet)  # alice's keys
    await alice.send(rtp(1), port)
    await until(lambda: stream.a._rtp.connected)
    await assert_refused_by_the_kernel(hello + b"late", port)
    assert stream.a.rtp_source == alice.rtp_address


def zrtp_packet(kind: bytes, sequence: int = 1) -> bytes:
    """A ZRTP packet (RFC 6189 §5): what the relay hands on needs no valid CRC or MAC."""
    return frame(sequence, 0x5EED, message(kind, bytes(8)))


async def test_zrtp_beside_a_strangers_latch_is_handed_on_and_the_proven_peer_takes_the_latch(
    connected: MediaStream, alice: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # A stranger's ZRTP Hello latched alice's leg's port first (not connected: not her SDP
    # address). Alice is behind a NAT: her ZRTP datagrams, from another source, are handed on
    # with that source all the same, latching nothing (the ZRTP engine tells her by her Hello,
    # RFC 6189 §8.1); her RTP, a DTLS record and an Error (no MAC, §5.9) from there are not.
    # latch_peer (the engine proved her) gives her the latch for good, still unconnected; keys
    # connect it: the keyed path is the one every call takes (#7). Only for a key exchange
    # that proves its peer (proves_peer: a readable a=zrtp-hash; next test).
    stream = connected
    stranger, natted = make_phone(), make_phone()
    taken: list[tuple[bytes, Any]] = []
    stream.a.set_non_rtp_handler(
        lambda packet, source: taken.append((packet, source)), proves_peer=True
    )
    port = stream.a.ports.rtp_port
    await stranger.send(zrtp_packet(HELLO), port)
    await until(lambda: len(taken) == 1)
    assert stream.a.rtp_source == stranger.rtp_address and not stream.a._rtp.connected
    await natted.send(zrtp_packet(HELLO, 2), port)
    await until(lambda: len(taken) == 2)
    assert taken[1] == (zrtp_packet(HELLO, 2), natted.rtp_address)
    assert stream.a.rtp_source == stranger.rtp_address
    for packet in (rtp(1), b"\x16\xfe\xfd" + bytes(10), frame(3, 0x5EED, encode_error(0x61))):
        await natted.send(packet, port)
    await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 3)
    assert len(taken) == 2

    stream.a.latch_peer(natted.rtp_address, now=trio.current_time())
    assert stream.a.rtp_source == natted.rtp_address and not stream.a._rtp.connected
    assert stream.a.send(b"answer")  # to her, and to her SDP address as before keys
    assert await natted.receive() == (b"answer", (ADDRESS, port))
    assert await alice.receive() == (b"answer", (ADDRESS, port))
    # Proved: the stranger's ZRTP is no longer handed on, nor does the SDP address (anyone
    # can put it on a datagram) take the latch over.
    await stranger.send(zrtp_packet(HELLO, 4), port)
    await alice.send(zrtp_packet(HELLO, 5), port)
    await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 5)
    assert len(taken) == 2 and stream.a.rtp_source == natted.rtp_address

    stream.a_to_b.transforms = Transforms(rtp_in=lambda packet: packet)  # her keys
    await natted.send(rtp(2), port)
    await until(lambda: stream.a._rtp.connected)
    await assert_refused_by_the_kernel(zrtp_packet(HELLO, 5), port)
    assert stream.a.rtp_source == natted.rtp_address


async def test_zrtp_beside_a_natted_phones_latch_is_dropped_where_nothing_proves_the_peer(
    connected: MediaStream, alice: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # Session 40. Alice's SDP has no readable a=zrtp-hash: her exchange cannot tell her from a
    # stranger (proves_peer False), the first Hello it takes binds it. Alice is behind a NAT and
    # her RTP latched her leg's port first (not connected: not her SDP address). A stranger's
    # ZRTP Hello racing hers is dropped (unlatched_source), as before session 39: handed on
    # beside her latch, it bound the exchange and hers was ignored. Hers is handed on.
    stream = connected
    stranger, natted = make_phone(), make_phone()
    taken: list[tuple[bytes, Any]] = []
    stream.a.set_non_rtp_handler(lambda packet, source: taken.append((packet, source)))
    port = stream.a.ports.rtp_port
    await natted.send(rtp(1), port)
    await until(lambda: stream.a.rtp_source == natted.rtp_address)
    assert not stream.a._rtp.connected
    dropped = stream.a_to_b.statistics().dropped_unlatched_source
    await stranger.send(zrtp_packet(HELLO), port)
    await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == dropped + 1)
    await natted.send(zrtp_packet(HELLO, 2), port)
    await until(lambda: len(taken) == 1)
    assert taken == [(zrtp_packet(HELLO, 2), natted.rtp_address)]
    assert stream.a.rtp_source == natted.rtp_address


async def test_zrtp_is_not_handed_on_beside_a_latch_the_sdp_address_took_over(
    connected: MediaStream, alice: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # A stranger's datagram latched alice's leg's port first; her SDP address spoke and took
    # the latch over (still unconnected before keys; the handshake task restarted the port's
    # handshake). From then on the stranger's datagrams, ZRTP-shaped ones too, are dropped as
    # before session 39: were they handed on, each would make the handshake task restart the
    # exchange again at alice's next datagram (a DTLS server's association, or a ZRTP exchange
    # without a readable a=zrtp-hash), and the call would never key.
    stream = connected
    stranger = make_phone()
    taken: list[tuple[bytes, Any]] = []
    stream.a.set_non_rtp_handler(lambda packet, source: taken.append((packet, source)))
    port = stream.a.ports.rtp_port
    await stranger.send(zrtp_packet(HELLO), port)
    await until(lambda: len(taken) == 1)
    await alice.send(zrtp_packet(HELLO, 2), port)
    await until(lambda: len(taken) == 2)
    assert stream.a.rtp_source == alice.rtp_address and not stream.a._rtp.connected
    await stranger.send(zrtp_packet(PING, 3), port)
    await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 1)
    assert len(taken) == 2 and stream.a.rtp_source == alice.rtp_address


async def test_latch_peer_changes_nothing_on_a_connected_socket(
    connected: MediaStream, alice: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # The SDP address latched first and connected at once: nobody can take it, whatever a
    # key exchange says.
    stream = connected
    stream.a.set_non_rtp_handler(lambda packet, source: None)
    await alice.send(zrtp_packet(HELLO), stream.a.ports.rtp_port)
    await until(lambda: stream.a._rtp.connected)
    stream.a.latch_peer(make_phone().rtp_address, now=trio.current_time())
    assert stream.a.rtp_source == alice.rtp_address and stream.a._rtp.connected


async def test_a_peer_at_its_sdp_address_latches_and_connects_at_once_as_before(
    connected: MediaStream, alice: PlainPhone
):
    # The usual call: the first datagram comes from the SDP address, nobody can take the
    # socket over, so it is connected at once, before keys.
    stream = connected
    stream.a.set_non_rtp_handler(lambda packet, source: None)
    await alice.send(b"\x16\xfe\xfd" + bytes(10), stream.a.ports.rtp_port)
    await until(lambda: stream.a.rtp_source == alice.rtp_address)
    assert stream.a._rtp.connected


async def test_an_rtcp_port_without_its_own_keys_stays_unconnected_to_another_source(
    connected: MediaStream, alice: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # Without rtcp-mux the RTCP port has a handshake of its own (RFC 5764 §4.1): the RTP
    # port's keys do not connect it; its own do (keying's drop_until_keyed until then).
    stream = connected
    nat = make_phone()  # alice's RTCP from behind a NAT
    stream.a.set_non_rtp_handler(lambda packet, source: None, rtcp=True)
    port = stream.a.ports.rtcp_port
    await nat.send(b"\x16\xfe\xfd" + bytes(10), port, from_rtcp=True)
    await until(lambda: stream.a.rtcp_source == nat.rtcp_address)
    stream.a_to_b.transforms = Transforms(
        rtp_in=lambda packet: packet, rtcp_in=relay_module.drop_until_keyed
    )
    await nat.send(b"\x16\xfe\xfd" + bytes(11), port, from_rtcp=True)
    await until(lambda: not stream._relay._stale)  # type: ignore[union-attr]
    assert not stream.a._rtcp.connected
    stream.a_to_b.transforms = Transforms(
        rtp_in=lambda packet: packet, rtcp_in=lambda packet: packet
    )
    await nat.send(b"\x16\xfe\xfd" + bytes(12), port, from_rtcp=True)
    await until(lambda: stream.a._rtcp.connected)


async def test_sdp_address_only_takes_no_other_source_before_keys(
    connected: MediaStream, alice: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # A deployment without DTLS peers behind NAT ([plugins.dtls] sdp_address_only): another
    # source's handshake datagrams are handed on without latching (the handshake task refuses
    # them and says so) and its RTP is dropped; the SDP address latches and connects.
    stream = connected
    other = make_phone()
    taken: list[tuple[bytes, Any]] = []
    stream.a.set_non_rtp_handler(
        lambda packet, source: taken.append((packet, source)), sdp_address_only=True
    )
    hello = b"\x16\xfe\xfd" + bytes(10)
    port = stream.a.ports.rtp_port
    await other.send(hello + b"nat", port)
    await until(lambda: len(taken) == 1)
    await other.send(rtp(1), port)
    await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 1)
    assert stream.a.rtp_source is None
    await alice.send(hello + b"caller", port)
    await until(lambda: len(taken) == 2)
    assert stream.a.rtp_source == alice.rtp_address and stream.a._rtp.connected


async def test_short_rtcp_is_accepted_down_to_eight_octets(
    connected: MediaStream, alice: PlainPhone, bob: PlainPhone
):
    stream = connected
    await alice.send(empty_receiver_report()[:7], stream.a.ports.rtcp_port, from_rtcp=True)
    await until(lambda: stream.a_to_b.statistics().dropped_malformed == 1)
    await alice.send(empty_receiver_report(), stream.a.ports.rtcp_port, from_rtcp=True)
    assert (await bob.receive(on_rtcp=True))[0] == empty_receiver_report()


# -- inactivity ---------------------------------------------------------------------------------


async def test_idle_streams_are_those_without_recent_media(
    start_relay: StartRelay, make_phone: Callable[[], PlainPhone]
):
    clock = FakeClock()
    clock.now = 100.0
    relay = await start_relay(clock=clock)
    alice, bob = make_phone(), make_phone()
    with relay.open_stream() as talking, relay.open_stream() as silent:
        talking.a.set_remote(alice.rtp_address)
        talking.b.set_remote(bob.rtp_address)
        assert relay.idle_streams(100.0, 30.0) == []
        clock.now = 120.0
        await alice.send(rtp(1), talking.a.ports.rtp_port)
        assert (await bob.receive())[0] == rtp(1)

        assert talking.last_activity == 120.0
        assert silent.last_activity == 100.0
        assert relay.idle_streams(130.0, 30.0) == [silent]
        assert set(relay.idle_streams(150.0, 30.0)) == {talking, silent}
        assert talking.statistics().last_activity == 120.0


# -- ports --------------------------------------------------------------------------------------


async def test_closing_a_stream_releases_its_four_ports(relay: MediaRelay) -> None:
    stream = relay.open_stream()
    ports = local_ports(stream)
    assert len(set(ports)) == 4
    assert not any(can_bind(port) for port in ports)
    stream.close()
    stream.close()
    assert stream.closed
    assert all(can_bind(port) for port in ports)
    assert relay.allocator.in_use == 0


async def test_direction_statistics_add_up_every_counter_of_both_sockets(relay: MediaRelay) -> None:
    with relay.open_stream() as stream:
        # Distinct values on every counter of leg A's two sockets and their four routes, so a
        # counter added to the wrong field (or left out) shows.
        value = itertools.count(1)
        endpoints = (stream.a._rtp, stream.a._rtcp)
        for ep in endpoints:
            for name in ENDPOINT_COUNTERS:
                setattr(ep, name, next(value) * 1000)
            for route in (ep.rtp, ep.rtcp):
                for name in ROUTE_COUNTERS:
                    setattr(route, name, next(value))
        got = stream.a_to_b.statistics()
        routes = [route for ep in endpoints for route in (ep.rtp, ep.rtcp)]
        assert got.rtp_packets == sum(ep.rtp.packets for ep in endpoints)
        assert got.rtp_bytes == sum(ep.rtp.bytes for ep in endpoints)
        assert got.rtcp_packets == sum(ep.rtcp.packets for ep in endpoints)
        assert got.rtcp_bytes == sum(ep.rtcp.bytes for ep in endpoints)
        for name in ENDPOINT_COUNTERS:
            assert getattr(got, name) == sum(getattr(ep, name) for ep in endpoints), name
        for name in ROUTE_COUNTERS[2:]:
            assert getattr(got, name) == sum(getattr(r, name) for r in routes), name


ENDPOINT_COUNTERS = (
    "dropped_unlatched_source",
    "dropped_blocked",
    "dropped_malformed",
    "tap_errors",
    "receive_errors",
)
ROUTE_COUNTERS = (
    "packets",
    "bytes",
    "dropped_transform",
    "dropped_send_error",
    "dropped_no_destination",
    "transform_errors",
)


async def test_a_closed_stream_is_freed_without_the_cyclic_collector(
    relay: MediaRelay, alice: PlainPhone, bob: PlainPhone
):
    # Its endpoints and callbacks pointed back at it: reference cycles that only gc freed, so
    # every call left ~40 objects and four socket objects for the collector to walk.
    stream = relay.open_stream()
    stream.a.set_remote(alice.rtp_address)
    stream.b.set_remote(bob.rtp_address)
    await alice.send(rtp(1), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(1)
    freed = weakref.ref(stream)
    gc.disable()
    try:
        stream.close()
        del stream
        assert freed() is None
    finally:
        gc.enable()


async def test_ending_serve_closes_the_relay_and_releases_every_port() -> None:
    relay = MediaRelay(PortAllocator(ADDRESS, RELAY_PORTS.get()))
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve)
        streams = [relay.open_stream() for _ in range(3)]
        nursery.cancel_scope.cancel()
    assert all(stream.closed for stream in streams)
    assert all(can_bind(port) for stream in streams for port in local_ports(stream))
    with pytest.raises(LocalMediaError, match="closed"):
        relay.open_stream()


async def test_close_while_serving_ends_serve_quietly() -> None:
    relay = MediaRelay(PortAllocator(ADDRESS, RELAY_PORTS.get()))
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.serve)
            stream = relay.open_stream()
            relay.close()
    assert stream.closed
    assert relay.allocator.in_use == 0


async def test_exhausted_range_raises_503_and_keeps_nothing(start_relay: StartRelay) -> None:
    relay = await start_relay(ports=SMALL_PORTS.get())
    first = relay.open_stream()
    in_use = relay.allocator.in_use
    with pytest.raises(PortsExhausted) as info:
        relay.open_stream()
    assert info.value.sip_status == 503
    assert relay.allocator.in_use == in_use == 2
    assert relay.statistics().streams == 1
    first.close()
    assert relay.allocator.in_use == 0


async def test_on_ipv6_the_peer_whose_media_came_before_its_sdp_is_not_kept_out(
    start_relay: StartRelay,
):
    # As above, on an IPv6 relay: a socket latches the 4-tuple recvfrom gives, (host, port,
    # flowinfo, scope_id), which never equalled the SDP's (host, port): the callee itself was
    # taken for a previous peer, and its RTP and RTCP were refused for 3 s after its answer.
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    clock = FakeClock()
    relay = MediaRelay(PortAllocator("::1", RELAY_PORTS.get()), clock=clock)
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve)
        alice_rtp = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        bob_rtp = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        bob_rtcp = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        with alice_rtp, bob_rtp, bob_rtcp, relay.open_stream() as stream:
            await alice_rtp.bind(("::1", 0))
            await bob_rtp.bind(("::1", 0))
            bob_port = bob_rtp.getsockname()[1]
            try:
                await bob_rtcp.bind(("::1", bob_port + 1))
            except OSError:
                pytest.skip("RTP port + 1 taken")
            stream.a.set_remote(("::1", alice_rtp.getsockname()[1]))
            stream.b_to_a.blocked = True  # no answer yet
            await bob_rtp.sendto(rtp(1), ("::1", stream.b.ports.rtp_port))
            await bob_rtcp.sendto(empty_receiver_report(1), ("::1", stream.b.ports.rtcp_port))
            await until(lambda: stream.b_to_a.statistics().dropped_blocked == 2)

            clock.now = 0.5
            stream.b.set_remote(("::1", bob_port))  # the answer
            stream.b_to_a.blocked = False
            await bob_rtp.sendto(rtp(2), ("::1", stream.b.ports.rtp_port))
            await bob_rtcp.sendto(empty_receiver_report(2), ("::1", stream.b.ports.rtcp_port))
            with trio.fail_after(TIMEOUT):
                data, _ = await alice_rtp.recvfrom(2048)
            assert data == rtp(2)
            assert stream.b_to_a.statistics().dropped_unlatched_source == 0
        relay.close()
        nursery.cancel_scope.cancel()


async def test_an_answer_to_the_latched_stranger_is_not_copied_to_the_sdp_address(
    connected: MediaStream, alice: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # Our DTLS server flight answers the ClientHello of the source that latched the socket: a
    # copy to the SDP address would reach alice after her own ClientHello and be taken as our
    # answer to it (docs/media_security.md, "Forged handshakes"). The handshake task says so
    # with copy_to_sdp_address=False; what speaks first (our ClientHello) is still copied.
    stream = connected
    stranger = make_phone()
    stream.a.set_non_rtp_handler(lambda packet, source: None)
    port = stream.a.ports.rtp_port
    await stranger.send(b"\x16\xfe\xfd" + bytes(10), port)
    await until(lambda: stream.a.rtp_source == stranger.rtp_address)
    assert stream.a.send(b"server flight", copy_to_sdp_address=False)
    assert await stranger.receive() == (b"server flight", (ADDRESS, port))
    assert stream.a.send(b"client hello")
    assert await stranger.receive() == (b"client hello", (ADDRESS, port))
    assert await alice.receive() == (b"client hello", (ADDRESS, port))  # the first she got


CLIENT_HELLO = bytes([22, 0xFE, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0, 13, 1]) + bytes(12)
"""A DTLS handshake record of epoch 0 (RFC 6347 §4.1) holding a ClientHello's header: what the
relay hands on needs no valid body (the engine checks it)."""


async def test_dtls_beside_a_strangers_latch_goes_to_a_handshake_per_source_engine(
    connected: MediaStream, alice: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # docs/media_security.md, "A handshake per source": a stranger's ClientHello latched
    # alice's leg's port first (not connected: not her SDP address). Alice is behind a NAT:
    # with handshake_per_source (the dtls engine) her DTLS datagrams, from another source, are
    # handed on with that source, latching nothing; her RTP is not. send_to answers each source
    # alone; latch_peer (her certificate matched a=fingerprint) gives her the latch, and the
    # stranger's DTLS is no longer handed on. Keys connect the socket: the keyed path (#7).
    stream = connected
    stranger, natted = make_phone(), make_phone()
    taken: list[tuple[bytes, Any]] = []
    stream.a.set_non_rtp_handler(
        lambda packet, source: taken.append((packet, source)), handshake_per_source=True
    )
    port = stream.a.ports.rtp_port
    await stranger.send(CLIENT_HELLO, port)
    await until(lambda: len(taken) == 1)
    assert stream.a.rtp_source == stranger.rtp_address and not stream.a._rtp.connected
    await natted.send(CLIENT_HELLO + b"\x01", port)
    await until(lambda: len(taken) == 2)
    assert taken[1] == (CLIENT_HELLO + b"\x01", natted.rtp_address)
    assert stream.a.rtp_source == stranger.rtp_address
    await natted.send(rtp(1), port)
    await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 1)

    assert stream.a.send_to(b"\x16flight", natted.rtp_address)  # to her alone
    assert await natted.receive() == (b"\x16flight", (ADDRESS, port))
    stream.a.latch_peer(natted.rtp_address, now=trio.current_time())
    assert stream.a.rtp_source == natted.rtp_address and not stream.a._rtp.connected
    await stranger.send(CLIENT_HELLO, port)
    await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 2)
    assert len(taken) == 2

    stream.a_to_b.transforms = Transforms(rtp_in=lambda packet: packet)  # her keys
    await natted.send(rtp(2), port)
    await until(lambda: stream.a._rtp.connected)
    await assert_refused_by_the_kernel(CLIENT_HELLO, port)
    # Keyed and connected: send_to goes where the socket's traffic goes, whatever it is given.
    assert stream.a.send_to(b"\x16final", stranger.rtp_address)
    assert await natted.receive() == (b"\x16final", (ADDRESS, port))


async def test_while_another_phone_may_answer_a_keyed_socket_hands_its_dtls_on_unconnected(
    connected: MediaStream, alice: PlainPhone, make_phone: Callable[[], PlainPhone]
):
    # docs/media_security.md, "Forked callees" (session 52): our offer may have been forked,
    # and alice's early answer keyed the port. Another phone that answers sends its ClientHello
    # here before its 200 reaches us: with other_phones (the dtls engine keeps it for that
    # phone's answer) it is handed on with its source after keys too, latching nothing, and
    # the socket is not connected (the kernel would refuse it). Its RTP is not handed on. Once
    # a 2xx confirmed the answer (other_phones no longer), keys connect the socket (#7).
    stream = connected
    other = make_phone()
    taken: list[tuple[bytes, Any]] = []

    def handler(packet: bytes, source: Any) -> None:
        taken.append((packet, source))

    stream.a.set_non_rtp_handler(handler, handshake_per_source=True, other_phones=True)
    port = stream.a.ports.rtp_port
    await alice.send(CLIENT_HELLO, port)  # from her SDP address: latched, not connected
    await until(lambda: len(taken) == 1)
    stream.a_to_b.transforms = Transforms(rtp_in=lambda packet: packet)  # her keys
    await alice.send(rtp(1), port)
    await until(lambda: stream.a_to_b.statistics().rtp_packets == 1)
    assert stream.a._rtp.keyed and not stream.a._rtp.connected
    await other.send(CLIENT_HELLO + b"\x02", port)
    await until(lambda: len(taken) == 2)
    assert taken[1] == (CLIENT_HELLO + b"\x02", other.rtp_address)
    assert stream.a.rtp_source == alice.rtp_address
    await other.send(rtp(2), port)
    await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 1)
    assert stream.a.send_to(b"\x16request", other.rtp_address)  # our answer to its own
    assert await other.receive() == (b"\x16request", (ADDRESS, port))

    stream.a.set_non_rtp_handler(handler, handshake_per_source=True)  # a 2xx confirmed it
    await alice.send(rtp(3), port)
    await until(lambda: stream.a._rtp.connected)
    await assert_refused_by_the_kernel(CLIENT_HELLO, port)


async def test_without_handshake_per_source_a_third_sources_dtls_is_dropped_as_before(
    connected: MediaStream, make_phone: Callable[[], PlainPhone]
):
    stream = connected
    stranger, natted = make_phone(), make_phone()
    taken: list[tuple[bytes, Any]] = []
    stream.a.set_non_rtp_handler(lambda packet, source: taken.append((packet, source)))
    port = stream.a.ports.rtp_port
    await stranger.send(CLIENT_HELLO, port)
    await until(lambda: len(taken) == 1)
    await natted.send(CLIENT_HELLO, port)
    await until(lambda: stream.a_to_b.statistics().dropped_unlatched_source == 1)
    assert len(taken) == 1
