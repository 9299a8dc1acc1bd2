"""An in-process DTLS-SRTP (or ZRTP) phone for the component tests of the call core: the
gateway's own sans-IO engine on a real 127.0.0.1 socket, driven in trio's (virtual) time."""

from __future__ import annotations

import datetime
import math
import socket

import attrs
import trio

from gateway.core.interfaces import KeyNegotiation, KeysReady, NegotiationFailed, SrtpKeys
from gateway.plugins.keyexchange.dtls_certificates import generate_identity
from gateway.plugins.keyexchange.dtls_srtp import DtlsNegotiation
from tests.port_blocks import port_bases

(PHONE_PORT,) = port_bases(1)  # real sockets, this process's own (tests/port_blocks.py)
NOW = datetime.datetime.now(datetime.UTC)
PHONE_ID = generate_identity(now=NOW, max_age=datetime.timedelta(days=30))
OTHER_ID = generate_identity(now=NOW, max_age=datetime.timedelta(days=30))


def dtls_sdp(
    negotiation: DtlsNegotiation,
    *,
    port: int = PHONE_PORT,
    fingerprint: str | None = None,
    rtcp_mux: bool = True,
    setup: str | None = None,
) -> bytes:
    """An offer or answer for ``negotiation``'s stream at ``port`` (RTCP on ``port`` + 1
    without ``rtcp_mux``); ``fingerprint`` replaces the true one, ``setup`` its a=setup (an
    offerer's ``active``: our answer is ``passive`` and the phone, which left the role open,
    takes the one that answer leaves it, RFC 4145 §4.1)."""
    ours = dict(negotiation.local_sdp_attributes())
    mux = "a=rtcp-mux\r\n" if rtcp_mux else ""
    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} UDP/TLS/RTP/SAVP 0\r\na=rtpmap:0 PCMU/8000\r\n{mux}"
        f"a=fingerprint:{fingerprint or ours['fingerprint']}\r\n"
        f"a=setup:{setup or ours['setup']}\r\na=tls-id:{ours['tls-id']}\r\n"
    ).encode()


def is_client_hello(datagram: bytes) -> bool:
    """Whether a DTLS datagram starts with a ClientHello: a handshake record (content type 22)
    of epoch 0 whose first message is of type 1 (RFC 6347 §4.1 and §4.2.2). A new association
    always begins so; its other flights (and their retransmissions, which may still be queued
    when a test looks) are not counted."""
    return (
        len(datagram) > 13 and datagram[0] == 22 and datagram[3:5] == b"\0\0" and datagram[13] == 1
    )


#: ZRTP messages (RFC 6189 §5.2 to §5.5) that only an exchange in progress sends: a new one
#: would send them again. Confirm1, Confirm2 and Conf2ACK are left out: a retransmission of the
#: last of them may still be queued when a test looks (see :func:`is_client_hello`).
ZRTP_EXCHANGE_MESSAGES = (b"Hello   ", b"Commit  ", b"DHPart1 ", b"DHPart2 ")


def is_zrtp_exchange_message(datagram: bytes) -> bool:
    """Whether a datagram is a ZRTP packet (cookie at octet 4, §5) carrying one of
    :data:`ZRTP_EXCHANGE_MESSAGES` (type block after the 12-octet header and the preamble and
    length, §5.1)."""
    return datagram[4:8] == b"ZRTP" and datagram[16:24] in ZRTP_EXCHANGE_MESSAGES


def mirrored(keys: SrtpKeys) -> SrtpKeys:
    """The keys as the other end of the association holds them (the gateway's of the phone's)."""
    return attrs.evolve(keys, local_key=keys.remote_key, remote_key=keys.local_key)


def wrong_fingerprint() -> str:
    """A well-formed a=fingerprint of another certificate than the phone presents."""
    return "sha-256 " + ":".join(f"{b:02X}" for b in OTHER_ID.digest("sha-256"))


async def bind(port: int = PHONE_PORT) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", port))
    return sock


@attrs.define
class Phone:
    """The phone's media loop: DTLS (or ZRTP) into its engine (``negotiation`` may be replaced,
    e.g. by a re-offer's), everything else recorded in ``media``."""

    negotiation: KeyNegotiation
    sock: trio.socket.SocketType
    gateway: tuple[str, int]
    keys: SrtpKeys | None = None
    failure: str | None = None
    media: list[bytes] = attrs.Factory(list)
    dtls_received: int = 0
    client_hellos: int = 0  # handshakes begun toward the phone (counts retransmissions too)
    zrtp_exchange_messages: int = 0  # the same for ZRTP (is_zrtp_exchange_message)
    keyed: trio.Event = attrs.Factory(trio.Event)

    async def run(self) -> None:
        with self.sock:  # closed when the test's nursery is cancelled
            await self._loop()

    async def _loop(self) -> None:
        while True:
            now = trio.current_time()
            for datagram in self.negotiation.packets_to_send(now=now):
                await self.sock.sendto(datagram, self.gateway)
            while (event := self.negotiation.next_event()) is not None:
                if isinstance(event, KeysReady):
                    self.keys = event.keys
                    self.keyed.set()
                elif isinstance(event, NegotiationFailed):
                    self.failure = event.reason
            timer = self.negotiation.get_timer()
            with trio.move_on_at(math.inf if timer is None else timer):
                data, _ = await self.sock.recvfrom(2048)
                if data and self.negotiation.claims_packet(data[0], data):
                    self.dtls_received += 1
                    self.client_hellos += is_client_hello(data)
                    self.zrtp_exchange_messages += is_zrtp_exchange_message(data)
                    self.negotiation.receive_packet(data, now=trio.current_time())
                else:
                    self.media.append(data)
                continue
            self.negotiation.handle_timer(now=trio.current_time())
