"""The relay bridges RTP<->SRTP and SRTP<->SRTP between legs, with SrtpSession transforms.

Real UDP sockets on 127.0.0.1: the relay allocates from RELAY_PORTS, the phones from PHONE_PORTS
(blocks of this process, tests/port_blocks.py). The phone on an SRTP leg protects and checks with
pylibsrtp's own ``Session`` where pylibsrtp names the suite (independent of
gateway.core.media.srtp), else with an SrtpSession of its own. Nothing waits a fixed time: a test
waits for a packet (``fail_after`` bounds it) or polls a counter with ``trio.sleep(0)``; a packet
that must not arrive is shown by a counted drop followed by a marker packet that must be the first
thing to arrive.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable, Iterator

import pylibsrtp
import pytest
import trio

from gateway.core.config import PortRange
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.ports import PortAllocator, PortPair
from gateway.core.media.relay import MediaRelay, MediaStream, Transforms
from gateway.core.media.srtp import SUITES, SrtpSession
from tests.port_blocks import port_block_text

ADDRESS = "127.0.0.1"
RELAY_PORTS = PortRange.parse(port_block_text(100))
PHONE_PORTS = PortRange.parse(port_block_text(100))
TIMEOUT = 5.0

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


def rtp(sequence: int, *, ssrc: int = 0x1234ABCD) -> bytes:
    """RTP, PCMU (RFC 3550 §5.1)."""
    return struct.pack("!BBHII", 0x80, 0, sequence, 160 * sequence, ssrc) + b"\xd5" * 160


def receiver_report(ssrc: int = 0x1234ABCD) -> bytes:
    """RTCP RR with one report block (RFC 3550 §6.4.2)."""
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + struct.pack("!6I", 9, 0, 1, 2, 3, 4)


def master_key(suite: str, seed: int) -> bytes:
    return bytes((seed * 29 + i * 13) & 0xFF for i in range(SUITES[suite].key_salt_length))


class Phone:
    """A UDP endpoint (RTP on an even port, RTCP on the next) with optional SRTP of its own.

    ``key`` protects what the phone sends, ``peer_key`` (the gateway's key on this leg) checks
    what it receives: the two directions of one SDES exchange (RFC 4568 §5).
    """

    def __init__(self, pair: PortPair) -> None:
        self.pair = pair
        self.rtp = trio.socket.from_stdlib_socket(pair.rtp_socket)
        self.rtcp = trio.socket.from_stdlib_socket(pair.rtcp_socket)
        self.suite: str | None = None
        self._protect: Callable[[bytes], bytes | None] = lambda p: p
        self._protect_rtcp: Callable[[bytes], bytes | None] = lambda p: p
        self._unprotect: Callable[[bytes], bytes | None] = lambda p: p
        self._unprotect_rtcp: Callable[[bytes], bytes | None] = lambda p: p

    def use_srtp(self, suite: str, *, key: bytes, peer_key: bytes) -> None:
        self.suite = suite
        profile = PROFILES.get(suite)
        if profile is None:  # pylibsrtp names no profile for it: an SrtpSession of our own
            session = SrtpSession(SrtpKeys(suite, local_key=key, remote_key=peer_key))
            self._protect, self._protect_rtcp = session.protect_rtp, session.protect_rtcp
            self._unprotect, self._unprotect_rtcp = session.unprotect_rtp, session.unprotect_rtcp
            return
        send = pylibsrtp.Session(
            pylibsrtp.Policy(key, pylibsrtp.Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)
        )
        receive = pylibsrtp.Session(
            pylibsrtp.Policy(peer_key, pylibsrtp.Policy.SSRC_ANY_INBOUND, srtp_profile=profile)
        )
        self._protect, self._protect_rtcp = send.protect, send.protect_rtcp
        self._unprotect, self._unprotect_rtcp = receive.unprotect, receive.unprotect_rtcp

    @property
    def rtp_address(self) -> tuple[str, int]:
        return (ADDRESS, self.pair.rtp_port)

    def protect(self, packet: bytes) -> bytes:
        protected = self._protect(packet)
        assert protected is not None
        return protected

    def protect_rtcp(self, packet: bytes) -> bytes:
        protected = self._protect_rtcp(packet)
        assert protected is not None
        return protected

    async def send_wire(self, packet: bytes, port: int, *, rtcp: bool = False) -> None:
        """Send bytes exactly as given (already protected, tampered or replayed)."""
        await (self.rtcp if rtcp else self.rtp).sendto(packet, (ADDRESS, port))

    async def send(self, packet: bytes, port: int, *, rtcp: bool = False) -> bytes:
        """Protect (on an SRTP leg) and send; returns what went on the wire."""
        wire = (self._protect_rtcp if rtcp else self._protect)(packet)
        assert wire is not None
        await self.send_wire(wire, port, rtcp=rtcp)
        return wire

    async def receive_wire(self, *, rtcp: bool = False) -> bytes:
        with trio.fail_after(TIMEOUT):
            data, _ = await (self.rtcp if rtcp else self.rtp).recvfrom(65536)
        return bytes(data)

    async def receive(self, *, rtcp: bool = False) -> tuple[bytes, bytes]:
        """The next packet as it came on the wire, and as the phone reads it (unprotected)."""
        wire = await self.receive_wire(rtcp=rtcp)
        if self.suite is None:
            return wire, wire
        try:
            plain = (self._unprotect_rtcp if rtcp else self._unprotect)(wire)
        except pylibsrtp.Error as error:
            raise AssertionError(
                f"the phone could not unprotect what it received: {error}"
            ) from None
        assert plain is not None
        return wire, plain


async def until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(TIMEOUT):
        while not condition():
            await trio.sleep(0)


@pytest.fixture
async def relay(nursery: trio.Nursery) -> AsyncIterator[MediaRelay]:
    relay = MediaRelay(PortAllocator(ADDRESS, RELAY_PORTS))
    await nursery.start(relay.serve)
    yield relay
    relay.close()
    assert relay.allocator.in_use == 0


@pytest.fixture
def stream(relay: MediaRelay) -> Iterator[MediaStream]:
    with relay.open_stream() as stream:
        yield stream


@pytest.fixture
def phones() -> Iterator[tuple[Phone, Phone]]:
    allocator = PortAllocator(ADDRESS, PHONE_PORTS)
    pairs = [allocator.allocate(), allocator.allocate()]
    yield Phone(pairs[0]), Phone(pairs[1])
    for pair in pairs:
        pair.close()


def bridge(
    stream: MediaStream,
    alice: Phone,
    bob: Phone,
    *,
    a_suite: str | None,
    b_suite: str | None,
) -> tuple[SrtpSession | None, SrtpSession | None]:
    """Key each leg independently (as SDES would) and wire the relay's transforms: what arrives
    from a leg is unprotected with that leg's session, what leaves to a leg is protected with
    that leg's session (ARCHITECTURE.md "Media path")."""
    sessions: list[SrtpSession | None] = []
    for seed, phone, suite in ((1, alice, a_suite), (3, bob, b_suite)):
        if suite is None:
            sessions.append(None)
            continue
        gateway_key, phone_key = master_key(suite, seed), master_key(suite, seed + 1)
        phone.use_srtp(suite, key=phone_key, peer_key=gateway_key)
        sessions.append(SrtpSession(SrtpKeys(suite, local_key=gateway_key, remote_key=phone_key)))
    leg_a, leg_b = sessions

    def transforms(inbound: SrtpSession | None, outbound: SrtpSession | None) -> Transforms:
        return Transforms(
            rtp_in=inbound.unprotect_rtp if inbound else None,
            rtcp_in=inbound.unprotect_rtcp if inbound else None,
            rtp_out=outbound.protect_rtp if outbound else None,
            rtcp_out=outbound.protect_rtcp if outbound else None,
        )

    stream.a_to_b.transforms = transforms(leg_a, leg_b)
    stream.b_to_a.transforms = transforms(leg_b, leg_a)
    stream.a.set_remote(alice.rtp_address)
    stream.b.set_remote(bob.rtp_address)
    return leg_a, leg_b


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
