"""No media before keys, on real sockets: a leg whose policy needs SRTP gets nothing forwarded until
its keys exist, then only SRTP; a cleartext leg gets RTP (ports of this process,
tests/port_blocks.py)."""

from __future__ import annotations

import os

import trio

from gateway.core.config import PortRange
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.keying import CallKeying
from gateway.core.media.relay import MediaRelay
from gateway.core.media.session import MediaSession
from gateway.core.media.srtp import SrtpSession
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.integration.media.keyed_legs import FakeLeg
from tests.integration.media.phone_sockets import (
    ADDRESS,
    receive,
    receiver_report,
    rtp,
    udp_socket,
    until,
)
from tests.integration.media.relay_fixtures import relay_fixture
from tests.port_blocks import ModuleBlock

RELAY_PORTS = ModuleBlock(100, parse=PortRange.parse)
A_PHONE = ModuleBlock(10)
B_PHONE = ModuleBlock(10)


def sdp_for(port: int) -> bytes:
    return (
        f"v=0\r\no=- 1 1 IN IP4 {ADDRESS}\r\ns=-\r\nc=IN IP4 {ADDRESS}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
    ).encode()


relay = relay_fixture(RELAY_PORTS)


async def test_srtp_leg_gets_nothing_before_keys_then_only_srtp(relay: MediaRelay) -> None:
    session = MediaSession(relay, media_address=ADDRESS)
    keying = CallKeying(session)
    srtp_leg, plain_leg = FakeLeg("sdes"), FakeLeg("best-effort")
    a_phone, b_phone = udp_socket(), udp_socket()
    with a_phone, b_phone:
        await a_phone.bind((ADDRESS, A_PHONE.first()))
        await b_phone.bind((ADDRESS, B_PHONE.first()))
        offer_b = session.offer_from("a", parse_sdp_untrusted(sdp_for(A_PHONE.first())))
        answer_a = session.answer_from("b", parse_sdp_untrusted(sdp_for(B_PHONE.first())))
        session.settle()
        a_port, b_port = answer_a.media[0].port, offer_b.media[0].port
        keying.apply(srtp_leg, plain_leg)

        # Before keys: B's RTP is not forwarded to A, not even in clear. Wait until the relay
        # has counted the drop (not a fixed time: on a loaded machine the packet could still be
        # queued when the keys arrive, and then be relayed as SRTP).
        stream = session.streams[0]
        await b_phone.sendto(rtp(1), (ADDRESS, b_port))
        await until(lambda: stream.b_to_a.statistics().dropped == 1)
        assert await receive(a_phone, 0.1) is None

        # Keys arrive: A now gets SRTP that only A's keys decrypt, and A's SRTP becomes RTP.
        ours, theirs = os.urandom(30), os.urandom(30)
        srtp_leg.fake_keys = SrtpKeys("AES_CM_128_HMAC_SHA1_80", ours, theirs)
        keying.apply(srtp_leg, plain_leg)
        a_side = SrtpSession(SrtpKeys("AES_CM_128_HMAC_SHA1_80", theirs, ours))
        await b_phone.sendto(rtp(2), (ADDRESS, b_port))
        with trio.fail_after(5):
            protected, _ = await a_phone.recvfrom(2048)
        assert protected != rtp(2)
        assert a_side.unprotect_rtp(protected) == rtp(2)

        sent = a_side.protect_rtp(rtp(3))
        assert sent is not None
        await a_phone.sendto(sent, (ADDRESS, a_port))
        with trio.fail_after(5):
            plain, _ = await b_phone.recvfrom(2048)
        assert plain == rtp(3)

        # A cleartext packet from A is dropped: it does not authenticate.
        await a_phone.sendto(rtp(4), (ADDRESS, a_port))
        await until(lambda: stream.a_to_b.statistics().dropped == 1)
        assert await receive(b_phone, 0.1) is None

        keying.block_all()
        await b_phone.sendto(rtp(5), (ADDRESS, b_port))
        await until(lambda: stream.b_to_a.statistics().dropped == 2)
        assert await receive(a_phone, 0.1) is None
        keying.close()
        session.close()


async def test_srtp_with_an_mki_on_both_legs_is_relayed_both_ways(
    relay: MediaRelay,
) -> None:
    """RFC 3711 §3.1, RFC 4568 §6.1 on real sockets: leg A's phone sends a 1-octet MKI and gets
    ours, leg B's sends a 4-octet one and gets none (receive-only); SRTP and SRTCP pass both
    ways through the relay, and a packet with another MKI is dropped."""
    session = MediaSession(relay, media_address=ADDRESS)
    keying = CallKeying(session)
    leg_a, leg_b = FakeLeg("sdes"), FakeLeg("sdes")
    suite = "AES_CM_128_HMAC_SHA1_80"
    a_ours, a_theirs, b_ours, b_theirs = (os.urandom(30) for _ in range(4))
    leg_a.fake_keys = SrtpKeys(suite, a_ours, a_theirs, local_mki=b"\x01", remote_mki=b"\x01")
    leg_b.fake_keys = SrtpKeys(suite, b_ours, b_theirs, remote_mki=bytes(3) + b"\x09")
    a_side = SrtpSession(SrtpKeys(suite, a_theirs, a_ours, local_mki=b"\x01", remote_mki=b"\x01"))
    b_side = SrtpSession(SrtpKeys(suite, b_theirs, b_ours, local_mki=bytes(3) + b"\x09"))
    a_phone, b_phone = udp_socket(), udp_socket()
    with a_phone, b_phone:
        await a_phone.bind((ADDRESS, A_PHONE.first()))
        await b_phone.bind((ADDRESS, B_PHONE.first()))
        offer_b = session.offer_from("a", parse_sdp_untrusted(sdp_for(A_PHONE.first())))
        answer_a = session.answer_from("b", parse_sdp_untrusted(sdp_for(B_PHONE.first())))
        session.settle()
        a_port, b_port = answer_a.media[0].port, offer_b.media[0].port
        keying.apply(leg_a, leg_b)
        stream = session.streams[0]

        for sequence, packet in ((1, rtp(1)), (2, receiver_report())):
            protect = a_side.protect_rtp if sequence == 1 else a_side.protect_rtcp
            sent = protect(packet)
            assert sent is not None
            await a_phone.sendto(sent, (ADDRESS, a_port))
            with trio.fail_after(5):
                received, _ = await b_phone.recvfrom(2048)
            unprotect = b_side.unprotect_rtp if sequence == 1 else b_side.unprotect_rtcp
            assert unprotect(received) == packet
            assert len(received) == len(packet) + (10 if sequence == 1 else 14)  # no MKI to B

        sent = b_side.protect_rtp(rtp(3, ssrc=0x55))
        assert sent is not None
        await b_phone.sendto(sent, (ADDRESS, b_port))
        with trio.fail_after(5):
            received, _ = await a_phone.recvfrom(2048)
        assert len(received) == len(rtp(3)) + 1 + 10 and received[-11] == 1  # our MKI to A
        assert a_side.unprotect_rtp(received) == rtp(3, ssrc=0x55)

        # Another MKI from A: dropped before libsrtp, counted, nothing reaches B.
        forged = a_side.protect_rtp(rtp(4))
        assert forged is not None
        await a_phone.sendto(forged[:-11] + b"\x02" + forged[-10:], (ADDRESS, a_port))
        await until(lambda: stream.a_to_b.statistics().dropped == 1)
        assert await receive(b_phone, 0.1) is None
        stats = keying.statistics()["a"]
        assert stats["dropped"] == 1 and stats["auth_failures"] == 0
        keying.close()
        session.close()
