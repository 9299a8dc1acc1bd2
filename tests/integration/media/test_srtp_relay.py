"""The relay bridges RTP<->SRTP and SRTP<->SRTP between legs, with SrtpSession transforms.

Real UDP sockets on 127.0.0.1: the relay allocates from RELAY_PORTS, the phones from PHONE_PORTS
(blocks of this process, tests/port_blocks.py); the phones and :func:`bridge`, which keys them, are
phone_sockets.py's and relay_fixtures.py's. Nothing waits a fixed time: a test waits for a packet
(``fail_after`` bounds it) or polls a counter (:func:`until`); a packet that must not arrive is
shown by a counted drop followed by a marker packet that must be the first thing to arrive.
"""

from __future__ import annotations

import pytest

from gateway.core.config import PortRange
from gateway.core.media.relay import MediaStream
from gateway.core.media.srtp import SUITES
from tests.integration.media.phone_sockets import Phone, receiver_report, rtp, until
from tests.integration.media.relay_fixtures import bridge, in_process_fixtures
from tests.port_blocks import ModuleBlock

RELAY_PORTS = ModuleBlock(100, parse=PortRange.parse)
PHONE_PORTS = ModuleBlock(100, parse=PortRange.parse)


relay, stream, phones = in_process_fixtures(RELAY_PORTS, PHONE_PORTS)


def tag_length(suite: str) -> int:
    return SUITES[suite].rtp_tag_length


# -- RTP <-> SRTP -------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ["AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"])
async def test_plain_rtp_on_a_becomes_srtp_on_b_and_back(
    stream: MediaStream, phones: tuple[Phone, Phone], suite: str
) -> None:
    alice, bob = phones
    _, leg_b = bridge(stream, alice, bob, a_suite=None, b_suite=suite)
    assert leg_b is not None
    for sequence in range(1, 4):
        await alice.send(rtp(sequence), stream.a.ports.rtp_port)
        wire, plain = await bob.receive()
        assert plain == rtp(sequence)  # pylibsrtp decrypts and authenticates it
        assert wire[:12] == rtp(sequence)[:12] and wire[12:172] != rtp(sequence)[12:]
        assert len(wire) == 172 + tag_length(suite)
    await bob.send(rtp(50, ssrc=0xB0B), stream.b.ports.rtp_port)
    wire, _ = await alice.receive()
    assert wire == rtp(50, ssrc=0xB0B)  # plain on leg A
    # RTCP: an RR from alice leaves as SRTCP (80-bit tag even for _32), and back.
    await alice.send(receiver_report(), stream.a.ports.rtcp_port, rtcp=True)
    wire, plain = await bob.receive(rtcp=True)
    assert plain == receiver_report()
    assert len(wire) == len(receiver_report()) + 4 + 10
    await bob.send(receiver_report(0xB0B), stream.b.ports.rtcp_port, rtcp=True)
    assert (await alice.receive(rtcp=True))[0] == receiver_report(0xB0B)
    assert leg_b.statistics().protected == 4
    assert leg_b.statistics().unprotected == 2


# -- SRTP (suite X) <-> SRTP (suite Y) ----------------------------------------------------------


@pytest.mark.parametrize(
    ("a_suite", "b_suite"),
    [
        ("AES_256_CM_HMAC_SHA1_80", "AEAD_AES_256_GCM"),  # the linphone <-> baresip case
        ("AES_256_CM_HMAC_SHA1_32", "AES_CM_128_HMAC_SHA1_80"),
        ("AEAD_AES_128_GCM", "AES_CM_128_HMAC_SHA1_32"),
    ],
)
async def test_srtp_is_re_keyed_between_legs_with_different_suites(
    stream: MediaStream, phones: tuple[Phone, Phone], a_suite: str, b_suite: str
) -> None:
    alice, bob = phones
    leg_a, leg_b = bridge(stream, alice, bob, a_suite=a_suite, b_suite=b_suite)
    assert leg_a is not None and leg_b is not None
    for sequence in (65534, 65535, 0, 1):  # across the wrap: each leg keeps its own ROC
        sent = await alice.send(rtp(sequence), stream.a.ports.rtp_port)
        wire, plain = await bob.receive()
        assert plain == rtp(sequence)
        assert len(sent) == 172 + tag_length(a_suite)
        assert len(wire) == 172 + tag_length(b_suite)
        assert wire[12:] != sent[12:]  # decrypted with A's keys, encrypted again with B's
    for sequence in range(3):
        await bob.send(rtp(sequence, ssrc=0xB0B), stream.b.ports.rtp_port)
        assert (await alice.receive())[1] == rtp(sequence, ssrc=0xB0B)
    await alice.send(receiver_report(), stream.a.ports.rtcp_port, rtcp=True)
    assert (await bob.receive(rtcp=True))[1] == receiver_report()
    await bob.send(receiver_report(0xB0B), stream.b.ports.rtcp_port, rtcp=True)
    assert (await alice.receive(rtcp=True))[1] == receiver_report(0xB0B)
    assert (leg_a.statistics().unprotected, leg_a.statistics().protected) == (5, 4)
    assert (leg_b.statistics().unprotected, leg_b.statistics().protected) == (4, 5)
    assert leg_a.statistics().dropped == leg_b.statistics().dropped == 0


# -- tampered and replayed packets ----------------------------------------------------------------


def flip(packet: bytes, index: int) -> bytes:
    return packet[:index] + bytes([packet[index] ^ 0x04]) + packet[index + 1 :]


async def test_tampered_and_replayed_srtp_is_dropped_and_counted(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    alice, bob = phones
    leg_a, _ = bridge(
        stream, alice, bob, a_suite="AES_256_CM_HMAC_SHA1_80", b_suite="AEAD_AES_128_GCM"
    )
    assert leg_a is not None
    port = stream.a.ports.rtp_port
    first = alice.protect(rtp(1))
    # Tampered payload, tampered tag: never forwarded.
    await alice.send_wire(flip(first, 40), port)
    await alice.send_wire(flip(first, len(first) - 1), port)
    await until(lambda: stream.a_to_b.statistics().dropped_transform == 2)
    assert leg_a.statistics().auth_failures == 2
    # The genuine packet still passes, and is the first thing bob hears.
    await alice.send_wire(first, port)
    assert (await bob.receive())[1] == rtp(1)
    # Replayed: dropped and counted; the next packet is the next thing bob hears.
    await alice.send_wire(first, port)
    await until(lambda: stream.a_to_b.statistics().dropped_transform == 3)
    assert leg_a.statistics().replays == 1
    await alice.send(rtp(2), port)
    assert (await bob.receive())[1] == rtp(2)
    # SRTCP alike. libsrtp checks the replay list before the tag (RFC 3711 §3.3.2: the cheap
    # check first), so a tampered copy of a packet already seen counts as a replay; tamper with
    # a fresh one.
    rtcp_port = stream.a.ports.rtcp_port
    report = await alice.send(receiver_report(), rtcp_port, rtcp=True)
    assert (await bob.receive(rtcp=True))[1] == receiver_report()
    await alice.send_wire(report, rtcp_port, rtcp=True)
    fresh = alice.protect_rtcp(receiver_report())
    await alice.send_wire(flip(fresh, 10), rtcp_port, rtcp=True)
    await until(lambda: stream.a_to_b.statistics().dropped_transform == 5)
    assert (leg_a.statistics().replays, leg_a.statistics().auth_failures) == (2, 3)
    await alice.send_wire(fresh, rtcp_port, rtcp=True)
    assert (await bob.receive(rtcp=True))[1] == receiver_report()
    statistics = stream.a_to_b.statistics()
    assert (statistics.rtp_packets, statistics.rtcp_packets) == (2, 2)


async def test_plain_rtp_sent_to_an_srtp_leg_is_never_forwarded(
    stream: MediaStream, phones: tuple[Phone, Phone]
) -> None:
    # A peer (or attacker) sending cleartext on a leg that negotiated SRTP gets nothing through.
    alice, bob = phones
    leg_a, _ = bridge(stream, alice, bob, a_suite="AES_CM_128_HMAC_SHA1_80", b_suite=None)
    assert leg_a is not None
    await alice.send_wire(rtp(1), stream.a.ports.rtp_port)
    await until(lambda: stream.a_to_b.statistics().dropped_transform == 1)
    assert leg_a.statistics().auth_failures == 1
    await alice.send(rtp(2), stream.a.ports.rtp_port)
    assert (await bob.receive())[0] == rtp(2)
