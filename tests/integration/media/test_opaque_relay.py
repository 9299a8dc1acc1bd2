"""The relay's opaque mode (T.38 fax over UDPTL) on real UDP sockets on 127.0.0.1.

The relay allocates from RELAY_PORTS, the phones (phone_sockets.py's) from PHONE_PORTS (blocks of
this process, tests/port_blocks.py). Nothing waits a fixed time; a drop is shown by a counter and
a marker sent after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from gateway.core.config import PortRange
from gateway.core.media.relay import (
    MAX_OPAQUE_DATAGRAM,
    Direction,
    MediaRelay,
    MediaStream,
    Transforms,
)
from gateway.core.media.session import MediaSession
from gateway.core.media.taps import CallTaps
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.integration.media.phone_sockets import ADDRESS, TRICKY, PlainPhone, rtp, udptl, until
from tests.integration.media.relay_fixtures import (
    AudioSink,
    FaxSink,
    make_phone_fixture,
    relay_fixture,
)
from tests.port_blocks import ModuleBlock

RELAY_PORTS = ModuleBlock(100, parse=PortRange.parse)
PHONE_PORTS = ModuleBlock(100, parse=PortRange.parse)


relay = relay_fixture(RELAY_PORTS)


make_phone = make_phone_fixture(PHONE_PORTS)


def fax_stream(relay: MediaRelay, alice: PlainPhone, bob: PlainPhone) -> MediaStream:
    stream = relay.open_stream()
    stream.a.set_remote(alice.rtp_address)
    stream.b.set_remote(bob.rtp_address)
    stream.set_opaque(True)
    return stream


async def test_datagrams_are_relayed_byte_identical_both_ways(
    relay: MediaRelay, make_phone: Callable[[], PlainPhone]
):
    alice, bob = make_phone(), make_phone()
    with fax_stream(relay, alice, bob) as stream:
        assert stream.opaque
        for datagram in TRICKY:
            await alice.send(datagram, stream.a.ports.rtp_port)
            received, source = await bob.receive()
            assert received == datagram
            assert source == ("127.0.0.1", stream.b.ports.rtp_port)
            await bob.send(datagram[::-1], stream.b.ports.rtp_port)
            received, _ = await alice.receive()
            assert received == datagram[::-1]
        stats = stream.a_to_b.statistics()
        # UDPTL is not RTP: counted apart (a fax call must not read as one that had audio).
        assert (stats.udptl_packets, stats.rtp_packets, stats.packets) == (len(TRICKY), 0, 0)
        assert stats.udptl_bytes == sum(len(d) for d in TRICKY) and stats.rtp_bytes == 0
        assert stats.dropped == 0
        assert relay.statistics().packets == 2 * len(TRICKY)  # (the batch size counts them)
        assert stream.a.rtp_source == alice.rtp_address  # latched like RTP


async def test_latching_follows_the_real_source(
    relay: MediaRelay, make_phone: Callable[[], PlainPhone]
):
    alice, bob, natted = make_phone(), make_phone(), make_phone()
    with fax_stream(relay, alice, bob) as stream:
        # Bob's SDP says one port, his datagrams come from another (a NAT): he gets the reply
        # where he really sends from.
        await natted.send(udptl(1, b"\x01"), stream.b.ports.rtp_port)
        await alice.send(udptl(2, b"\x02"), stream.a.ports.rtp_port)
        received, _ = await natted.receive()
        assert received == udptl(2, b"\x02")


async def test_no_transforms_taps_get_datagrams_and_oversize_is_dropped(
    relay: MediaRelay, make_phone: Callable[[], PlainPhone]
):
    alice, bob = make_phone(), make_phone()
    tapped: list[tuple[Direction, bytes]] = []

    def broken(packet: bytes) -> bytes | None:
        raise AssertionError("a transform ran on a UDPTL datagram")

    with fax_stream(relay, alice, bob) as stream:
        stream.a_to_b.transforms = Transforms(rtp_in=broken, rtp_out=broken)
        stream.a_to_b.add_tap(lambda direction, packet: tapped.append((direction, packet)))
        await alice.send(b"\x80" * (MAX_OPAQUE_DATAGRAM + 1), stream.a.ports.rtp_port)
        await until(lambda: stream.a_to_b.statistics().dropped_malformed == 1)
        await alice.send(udptl(7, b"\x07"), stream.a.ports.rtp_port)
        received, _ = await bob.receive()
        assert received == udptl(7, b"\x07")  # the first to arrive: the oversize one was not
        assert tapped == [(Direction.A_TO_B, udptl(7, b"\x07"))]
        assert stream.a_to_b.statistics().transform_errors == 0


async def test_rtcp_port_relays_nothing_and_rtp_comes_back_after_the_fax(
    relay: MediaRelay, make_phone: Callable[[], PlainPhone]
):
    alice, bob = make_phone(), make_phone()
    with fax_stream(relay, alice, bob) as stream:
        await alice.send(b"\x81\xc9\x00\x01abcd", stream.a.ports.rtcp_port, from_rtcp=True)
        await until(lambda: stream.a_to_b.statistics().dropped_no_destination == 1)

        stream.set_opaque(False)
        assert not stream.opaque
        await alice.send(b"\x00\x01\x02", stream.a.ports.rtp_port)  # not RTP any more
        await until(lambda: stream.a_to_b.statistics().dropped_malformed == 1)
        await alice.send(rtp(1), stream.a.ports.rtp_port)
        received, _ = await bob.receive()
        assert received == rtp(1)


async def test_closing_an_opaque_stream_releases_its_sockets(
    relay: MediaRelay, make_phone: Callable[[], PlainPhone]
):
    alice, bob = make_phone(), make_phone()
    stream = fax_stream(relay, alice, bob)
    fd = stream.a.ports.rtp_socket.fileno()
    stream.close()
    assert relay._opaque_endpoints[fd] is None


async def test_call_taps_give_fax_datagrams_only_to_sinks_that_take_them(
    relay: MediaRelay, make_phone: Callable[[], PlainPhone], caplog: pytest.LogCaptureFixture
):
    alice, bob = make_phone(), make_phone()
    session = MediaSession(relay, media_address=ADDRESS)
    fax = "m=image {} udptl t38\r\na=T38FaxVersion:0\r\n"
    head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    session.offer_from("a", parse_sdp_untrusted((head + fax.format(alice.pair.rtp_port)).encode()))
    session.answer_from("b", parse_sdp_untrusted((head + fax.format(bob.pair.rtp_port)).encode()))
    session.settle()
    (stream,) = session.streams
    assert isinstance(stream, MediaStream) and stream.opaque
    recorder, interception = AudioSink(), FaxSink()
    taps = CallTaps(
        "call-1", session, [("recorder", recorder), ("intercept", interception)], clock=lambda: 0.0
    )
    taps.attach()
    try:
        with caplog.at_level(logging.INFO, logger="gateway.core.media.taps"):
            for sequence in (0x8001, 0x8002):
                await alice.send(udptl(sequence, b"\x06"), stream.a.ports.rtp_port)
                received, _ = await bob.receive()
                assert received == udptl(sequence, b"\x06")
        assert interception.datagrams == [
            (
                "0",
                "a_to_b",
                udptl(sequence, b"\x06"),
                alice.rtp_address,
                ("127.0.0.1", stream.a.ports.rtp_port),
            )
            for sequence in (0x8001, 0x8002)
        ]
        assert recorder.packets == [] and interception.packets == []
        # Logged once per call, naming the recorder, never the covert interception.
        assert caplog.text.count("T.38 fax is not recorded by recorder") == 1
        assert "intercept" not in caplog.text
    finally:
        taps.close()
        session.close()
