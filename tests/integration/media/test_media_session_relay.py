"""Phones on real UDP sockets talk through the relay after MediaSession rewrote their SDP.

Each phone learns where to send only from the SDP the session produced for its leg, as a real
peer would. The relay allocates from RELAY_PORTS and the phones from PHONE_PORTS (blocks of this
process, tests/port_blocks.py). Nothing waits a fixed time: a
test waits for a packet (``fail_after`` bounds it) or polls a counter with ``trio.sleep(0)``; a
packet that must not arrive is shown by a counted drop followed by a marker that arrives first.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio

from gateway.core.config import PortRange
from gateway.core.media.ports import PortAllocator, PortPair
from gateway.core.media.relay import MediaRelay
from gateway.core.media.session import MediaSession
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from tests.integration.media.phone_sockets import (
    ADDRESS,
    TIMEOUT,
    can_bind,
    empty_receiver_report,
    rtp,
    until,
)
from tests.integration.media.relay_fixtures import relay_fixture
from tests.port_blocks import ModuleBlock

RELAY_PORTS = ModuleBlock(400, parse=PortRange.parse)
PHONE_PORTS = ModuleBlock(200, parse=PortRange.parse)


class Phone:
    """A UDP endpoint with RTP on an even port and RTCP on the next; it reads its peer's port
    from the SDP it is given, as a phone does (phone_sockets.py's phones are told the relay's
    port by the test instead)."""

    def __init__(self, pair: PortPair, *, rtcp_mux: bool = False) -> None:
        self.pair = pair
        self.rtcp_mux = rtcp_mux  # offers and accepts a=rtcp-mux (RFC 5761)
        self.rtp = trio.socket.from_stdlib_socket(pair.rtp_socket)
        self.rtcp = trio.socket.from_stdlib_socket(pair.rtcp_socket)
        self.remote_rtp = 0
        self.remote_rtcp = 0

    def sdp(self, *media: str, connection: str = ADDRESS, extra: str = "") -> SessionDescription:
        """This phone's SDP: an audio line on its own port unless ``media`` says otherwise."""
        lines = media or (f"m=audio {self.pair.rtp_port} RTP/AVP 0\na=rtpmap:0 PCMU/8000\n",)
        if self.rtcp_mux:
            extra = "a=rtcp-mux\n" + extra
        text = (
            f"v=0\no=phone {self.pair.rtp_port} 1 IN IP4 {ADDRESS}\ns=-\nc=IN IP4 {connection}\n"
            "t=0 0\n" + "".join(lines) + extra
        )
        # Over the wire and back, as the B2BUA will handle it.
        return parse_sdp_untrusted(text.replace("\n", "\r\n").encode())

    def learn(self, sd: SessionDescription, index: int = 0) -> None:
        """Take the relay's ports for this phone from the SDP the session sent it."""
        wire = parse_sdp_untrusted(serialize_sdp(sd))
        media = wire.media[index]
        connection = wire.effective_connection(media)
        assert connection is not None and connection.address == ADDRESS
        self.remote_rtp = media.port
        rtcp = media.rtcp
        muxed = media.rtcp_mux and self.rtcp_mux
        self.remote_rtcp = media.port if muxed else (rtcp.port if rtcp else media.port + 1)

    async def send_rtp(self, packet: bytes) -> None:
        await self.rtp.sendto(packet, (ADDRESS, self.remote_rtp))

    async def send_rtcp(self, packet: bytes) -> None:
        """From the RTCP socket to the relay's RTCP port, or both on RTP when muxing."""
        muxed = self.remote_rtcp == self.remote_rtp
        await (self.rtp if muxed else self.rtcp).sendto(packet, (ADDRESS, self.remote_rtcp))

    async def receive(self, *, on_rtcp: bool = False) -> tuple[bytes, Any]:
        with trio.fail_after(TIMEOUT):
            return await (self.rtcp if on_rtcp else self.rtp).recvfrom(65536)


relay = relay_fixture(RELAY_PORTS)


@pytest.fixture
def session(relay: MediaRelay) -> Iterator[MediaSession]:
    session = MediaSession(
        relay, media_address=ADDRESS, session_id_source=itertools.count(5000).__next__
    )
    yield session
    session.close()


@pytest.fixture
def make_phone() -> Iterator[Callable[..., Phone]]:
    allocator = PortAllocator(ADDRESS, PHONE_PORTS.get())
    pairs: list[PortPair] = []

    def make(*, rtcp_mux: bool = False) -> Phone:
        pairs.append(allocator.allocate())
        return Phone(pairs[-1], rtcp_mux=rtcp_mux)

    yield make
    for pair in pairs:
        pair.close()


async def test_rtp_and_rtcp_with_rtcp_mux_on_leg_a_only(
    session: MediaSession, make_phone: Callable[..., Phone]
):
    alice, bob = make_phone(rtcp_mux=True), make_phone()
    to_b = session.offer_to_b(alice.sdp())
    bob.learn(to_b)
    assert to_b.media[0].rtcp_mux  # offered on, as alice did
    to_a = session.answer_from_b(bob.sdp())  # bob does not mux
    alice.learn(to_a)
    session.settle()
    assert alice.remote_rtcp == alice.remote_rtp  # alice muxes with us
    assert bob.remote_rtcp == bob.remote_rtp + 1  # bob does not

    for sequence in range(3):
        await alice.send_rtp(rtp(sequence))
        assert await bob.receive() == (rtp(sequence), (ADDRESS, bob.remote_rtp))
    await bob.send_rtp(rtp(9, ssrc=7))
    assert await alice.receive() == (rtp(9, ssrc=7), (ADDRESS, alice.remote_rtp))

    # RTCP from alice's RTP port arrives on bob's RTCP port from our RTCP port, and back.
    await alice.send_rtcp(empty_receiver_report(0x1234ABCD))
    report, source = await bob.receive(on_rtcp=True)
    assert (report, source) == (empty_receiver_report(0x1234ABCD), (ADDRESS, bob.remote_rtcp))
    await bob.send_rtcp(empty_receiver_report(7))
    assert await alice.receive() == (empty_receiver_report(7), (ADDRESS, alice.remote_rtp))

    stats = session.statistics()
    assert (stats["a_to_b_packets"], stats["b_to_a_packets"]) == (4, 2)
    assert (stats["a_to_b_dropped"], stats["b_to_a_dropped"]) == (0, 0)


async def test_hold_with_null_address_then_resume_on_new_ports(
    session: MediaSession, make_phone: Callable[..., Phone]
):
    alice, bob = make_phone(), make_phone()
    bob.learn(session.offer_to_b(alice.sdp()))
    alice.learn(session.answer_from_b(bob.sdp()))
    session.settle()
    (stream,) = session.streams
    await alice.send_rtp(rtp(1))
    assert (await bob.receive())[0] == rtp(1)
    await bob.send_rtp(rtp(2))
    assert (await alice.receive())[0] == rtp(2)

    # Hold, RFC 2543 style: c=0.0.0.0 reaches bob; nothing goes to alice any more.
    hold = session.offer_to_b(alice.sdp(connection="0.0.0.0"))
    held = parse_sdp_untrusted(serialize_sdp(hold))
    connection = held.effective_connection(held.media[0])
    assert connection is not None and connection.address == "0.0.0.0"
    assert held.media[0].port == bob.remote_rtp  # same stream, same port
    session.answer_from_b(bob.sdp(extra="a=recvonly\n"))
    session.settle()
    dropped = stream.b_to_a.statistics().dropped_no_destination
    await bob.send_rtp(rtp(3))
    await until(lambda: stream.b_to_a.statistics().dropped_no_destination == dropped + 1)

    # Resume from another phone (new ports): media follows the new SDP address.
    alice2 = make_phone()
    resume = session.offer_to_b(alice2.sdp())
    assert resume.origin.session_version == hold.origin.session_version + 1
    assert resume.media[0].port == bob.remote_rtp
    alice2.learn(session.answer_from_b(bob.sdp()))
    session.settle()
    assert alice2.remote_rtp == alice.remote_rtp  # leg A's port did not change either
    await bob.send_rtp(rtp(4))
    assert await alice2.receive() == (rtp(4), (ADDRESS, alice2.remote_rtp))
    await alice2.send_rtp(rtp(5))
    assert await bob.receive() == (rtp(5), (ADDRESS, bob.remote_rtp))
    assert session.streams == (stream,)


async def test_rejected_video_is_closed_and_audio_flows(
    session: MediaSession, relay: MediaRelay, make_phone: Callable[..., Phone]
):
    alice, bob = make_phone(), make_phone()
    alice_video = make_phone()
    video = f"m=video {alice_video.pair.rtp_port} RTP/AVP 96\na=rtpmap:96 H264/90000\n"
    audio = f"m=audio {alice.pair.rtp_port} RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
    to_b = session.offer_to_b(alice.sdp(audio, video))
    bob.learn(to_b)
    assert relay.allocator.in_use == 4
    _, video_stream = session.streams
    sides = (video_stream.a, video_stream.b)
    video_ports = [p for side in sides for p in (side.ports.rtp_port, side.ports.rtcp_port)]

    bob_audio = f"m=audio {bob.pair.rtp_port} RTP/AVP 0\na=rtpmap:0 PCMU/8000\n"
    to_a = session.answer_from_b(bob.sdp(bob_audio, "m=video 0 RTP/AVP 96\n"))
    assert to_a.media[1].port == 0
    alice.learn(to_a)
    session.settle()
    assert video_stream.closed
    assert relay.allocator.in_use == 2
    assert all(can_bind(port) for port in video_ports)

    await alice.send_rtp(rtp(1))
    assert await bob.receive() == (rtp(1), (ADDRESS, bob.remote_rtp))
    await bob.send_rtp(rtp(2))
    assert await alice.receive() == (rtp(2), (ADDRESS, alice.remote_rtp))


async def test_early_media_from_one_fork_then_the_answer_of_another(
    session: MediaSession, make_phone: Callable[..., Phone]
):
    alice, announcer, bob = make_phone(), make_phone(), make_phone()
    to_b = session.offer_to_b(alice.sdp())
    announcer.learn(to_b)
    bob.learn(to_b)

    # 183 with the announcer's SDP: its media reaches alice.
    alice.learn(session.answer_from_b(announcer.sdp()))
    await announcer.send_rtp(rtp(1, ssrc=1))
    assert (await alice.receive())[0] == rtp(1, ssrc=1)

    # 200 from bob: the later answer wins; the announcer is no longer heard.
    final = session.answer_from_b(bob.sdp())
    session.settle()
    assert final.media[0].port == alice.remote_rtp
    await bob.send_rtp(rtp(2, ssrc=2))
    assert (await alice.receive())[0] == rtp(2, ssrc=2)
    # The socket is connected to bob now: the kernel refuses the announcer's datagram (had
    # the relay read it, it would reach alice before the marker).
    await announcer.send_rtp(rtp(3, ssrc=1))
    await bob.send_rtp(rtp(4, ssrc=2))
    assert (await alice.receive())[0] == rtp(4, ssrc=2)  # the marker comes first
    await alice.send_rtp(rtp(5))
    assert await bob.receive() == (rtp(5), (ADDRESS, bob.remote_rtp))


async def test_the_summary_says_why_each_direction_dropped_and_keeps_it_once_closed(
    session: MediaSession, make_phone: Callable[..., Phone]
):
    # The call record's media summary ("a_to_b_dropped" ...) and the metrics by reason read
    # these: each reason that dropped something, per direction, adding up to the drops.
    alice, bob = make_phone(), make_phone()
    to_b = session.offer_to_b(alice.sdp())
    bob.learn(to_b)
    stream = session.stream_at(0)
    assert stream is not None
    alice.remote_rtp = stream.a.ports.rtp_port  # early: she has no answer to read it from
    await alice.send_rtp(rtp(1))  # bob's address unknown yet: nowhere to go
    await until(lambda: stream.a_to_b.statistics().dropped_no_destination == 1)
    to_a = session.answer_from_b(bob.sdp())
    alice.learn(to_a)
    session.settle()
    await alice.send_rtp(rtp(2))
    assert (await bob.receive())[0] == rtp(2)  # alice latched
    await alice.send_rtp(b"\x80\x00\x00")  # not even an RTP header
    await until(lambda: stream.a_to_b.statistics().dropped_malformed == 1)
    stream.b_to_a.blocked = True  # as keying does while keys are missing
    await bob.send_rtp(rtp(4, ssrc=7))
    await until(lambda: stream.b_to_a.statistics().dropped_blocked == 1)

    expected = {
        "a_to_b_dropped": 2,
        "a_to_b_dropped_no_destination": 1,
        "a_to_b_dropped_malformed": 1,
        "b_to_a_dropped": 1,
        "b_to_a_dropped_blocked": 1,
    }
    stats = session.statistics()
    assert {key: value for key, value in stats.items() if "_dropped" in key} == expected
    session.close()  # the closed stream's drops stay in the call's summary
    stats = session.statistics()
    assert {key: value for key, value in stats.items() if "_dropped" in key} == expected
