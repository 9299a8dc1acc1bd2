"""The phones' side of the media tests: UDP sockets on 127.0.0.1 and what they send.

- :func:`udp_socket`, :func:`receive`: a bare socket, for tests that bind their own ports;
  :func:`can_bind`: whether a port is free again;
- :class:`Phone`: an RTP/RTCP port pair with SRTP of its own (pylibsrtp's, independent of
  gateway.core.media.srtp), as the in-process relay tests use it (tests/integration/media/
  relay_fixtures.py makes them in pairs and :func:`~relay_fixtures.bridge` keys them);
- :class:`PlainPhone`: a port pair without SRTP whose :meth:`~PlainPhone.receive` also says
  where a datagram came from (the relay's source port, latching);
- :class:`EphemeralPhone`: one socket on a port the kernel picks, for the media worker tests;
- :func:`rtp`, :func:`receiver_report`, :func:`empty_receiver_report`: the packets they send;
- :func:`until`, :func:`eventually`: polling under a bound, never a fixed wait.

Helpers only: no test is collected from this module.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

import pylibsrtp
import trio

from gateway.core.interfaces import SrtpKeys
from gateway.core.media.ports import PortPair
from gateway.core.media.srtp import SUITES, SrtpSession

ADDRESS = "127.0.0.1"
#: How long a phone waits for a packet the in-process relay forwards.
TIMEOUT = 5.0
#: The same through a media worker process: two processes on a shared machine (and a worker
#: that restarts) take longer than the relay in the test's own trio loop.
WORKER_TIMEOUT = 10.0

PROFILES = {
    "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
    "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    "AEAD_AES_256_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
}


def udp_socket() -> trio.socket.SocketType:
    """An unbound UDP socket for a phone (the test binds it to its port). No SO_REUSEADDR: a
    port another socket holds must fail the bind, not share its datagrams."""
    return trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


def can_bind(port: int) -> bool:
    """True when a UDP socket can take ``port`` on ADDRESS (nothing holds it any more)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((ADDRESS, port))
        except OSError:
            return False
        return True


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds; fail after 5 s."""
    with trio.fail_after(TIMEOUT):
        while not condition():
            await trio.sleep(0.005)


async def eventually(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` until it holds; fail after WORKER_TIMEOUT, saying ``what``. Not
    :func:`until`: what a media worker pushes (counters, copies) comes from another process."""
    with trio.fail_after(WORKER_TIMEOUT):
        while not predicate():
            await trio.sleep(0.01)
    assert predicate(), what


async def receive(sock: trio.socket.SocketType, within: float) -> bytes | None:
    """The next datagram on ``sock``, or None if none arrives within ``within`` seconds."""
    with trio.move_on_after(within):
        data, _ = await sock.recvfrom(2048)
        return data
    return None


def rtp(sequence: int, *, ssrc: int = 0x1234ABCD, payload: bytes = b"\xd5" * 160) -> bytes:
    """RTP, PCMU (RFC 3550 §5.1)."""
    return struct.pack("!BBHII", 0x80, 0, sequence, 160 * sequence, ssrc) + payload


def receiver_report(ssrc: int = 0x1234ABCD) -> bytes:
    """RTCP RR with one report block (RFC 3550 §6.4.2): octets after the SSRC for SRTCP to
    encrypt."""
    return struct.pack("!BBHI", 0x81, 201, 7, ssrc) + struct.pack("!6I", 9, 0, 1, 2, 3, 4)


def empty_receiver_report(ssrc: int = 0x1234ABCD) -> bytes:
    """RTCP RR without report blocks, the empty RR of RFC 3550 §6.4.2."""
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


def udptl(sequence: int, ifp: bytes) -> bytes:
    """A UDPTL packet (T.38 §9.1): sequence number, primary IFP (length-prefixed), then the
    error-recovery field (here: redundancy, no secondary IFPs)."""
    return struct.pack("!HB", sequence, len(ifp)) + ifp + b"\x00"


# Datagrams an RTP parser would misread: a first octet of RTP version 2 (sequence 0x80xx), a
# second octet in RTCP's packet-type range (RFC 5761 §4), one shorter than an RTP header, and
# first octets in the DTLS and STUN ranges (RFC 7983).
TRICKY = [
    udptl(0x8001, b"\x06\x00"),
    udptl(0x80C8, b"\xc0\x01" * 20),
    b"\x00\x01\x02",
    udptl(0x1400, b"\x01"),
    udptl(0x0001, b"\x00"),
]


def master_key(suite: str, seed: int) -> bytes:
    """A master key and salt of ``suite``'s length, different for each seed."""
    return bytes((seed * 29 + i * 13) & 0xFF for i in range(SUITES[suite].key_salt_length))


class Phone:
    """A UDP endpoint (RTP on an even port, RTCP on the next) with optional SRTP of its own.

    ``key`` protects what the phone sends, ``peer_key`` (the gateway's key on this leg) checks
    what it receives: the two directions of one SDES exchange (RFC 4568 §5). It protects and
    checks with pylibsrtp's own ``Session`` where pylibsrtp names the suite (independent of
    gateway.core.media.srtp), else with an SrtpSession of its own.
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


class PlainPhone:
    """A UDP endpoint with an RTP socket on an even port and RTCP on the next one, without
    SRTP; :meth:`receive` says where each datagram came from (the relay port it left by)."""

    def __init__(self, pair: PortPair) -> None:
        self.pair = pair
        self.rtp = trio.socket.from_stdlib_socket(pair.rtp_socket)
        self.rtcp = trio.socket.from_stdlib_socket(pair.rtcp_socket)

    @property
    def rtp_address(self) -> tuple[str, int]:
        return (ADDRESS, self.pair.rtp_port)

    @property
    def rtcp_address(self) -> tuple[str, int]:
        return (ADDRESS, self.pair.rtcp_port)

    async def send(self, packet: bytes, port: int, *, from_rtcp: bool = False) -> None:
        await (self.rtcp if from_rtcp else self.rtp).sendto(packet, (ADDRESS, port))

    async def receive(self, *, on_rtcp: bool = False) -> tuple[bytes, Any]:
        with trio.fail_after(TIMEOUT):
            return await (self.rtcp if on_rtcp else self.rtp).recvfrom(65536)


class EphemeralPhone:
    """A UDP socket on an ephemeral port (a media worker's tests need no port known before it
    binds); :meth:`receive` waits up to WORKER_TIMEOUT."""

    def __init__(self) -> None:
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    async def bind(self) -> EphemeralPhone:
        await self.sock.bind((ADDRESS, 0))
        return self

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()
        return (host, port)

    async def send(self, packet: bytes, port: int) -> None:
        await self.sock.sendto(packet, (ADDRESS, port))

    async def receive(self) -> tuple[bytes, tuple[str, int]]:
        with trio.fail_after(WORKER_TIMEOUT):
            data, source = await self.sock.recvfrom(65536)
        return bytes(data), source


async def ephemeral_phones(count: int) -> list[EphemeralPhone]:
    return [await EphemeralPhone().bind() for _ in range(count)]
