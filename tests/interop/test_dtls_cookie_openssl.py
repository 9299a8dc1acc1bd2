"""A real DTLS client, ``openssl s_client -dtls1_2 -use_srtp``, through the ``dtls`` engine's
cookie exchange (RFC 6347 §4.2.1; docs/media_security.md, "Cookies for other sources") over
real UDP on 127.0.0.1.

The engine is the DTLS server of a stream whose peer's SDP address is elsewhere, so the
client's address is "another source" (a phone behind a NAT): its first ClientHello gets our
stateless HelloVerifyRequest, and the ClientHello it sends again with the cookie starts the
handshake, which keys the stream with the profile the client offered. A second OpenSSL than the
pyOpenSSL one the engine runs on (the system's ``openssl``, 3.0 on Debian 12) reads our
HelloVerifyRequest, written without OpenSSL.
"""

from __future__ import annotations

import datetime
import select
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.core.interfaces import KeysReady
from gateway.plugins.keyexchange.dtls_certificates import generate_identity
from gateway.plugins.keyexchange.dtls_srtp import (
    DtlsKeyExchange,
    DtlsNegotiation,
    Fingerprint,
    serialize_fingerprint,
)
from tests.conftest import require_peer
from tests.interop.harness.processes import stop_process

pytestmark = pytest.mark.interop

SDP_ADDRESS = ("127.0.0.1", 9)
"""Where the client's SDP would say it is: not where s_client sends from."""


class RebindingNat:
    """A NAT on 127.0.0.1 that gives its one client another outside port after the client's
    first datagram (a binding that changed between its two ClientHellos: a NAT that timed
    the binding out, or a phone that moved between its links, on the same public host)."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.inside.bind(("127.0.0.1", 0))
        self.outside = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
        for sock in self.outside:
            sock.bind(("127.0.0.1", 0))
        self.outside_ports = [sock.getsockname()[1] for sock in self.outside]
        self.client: tuple[str, int] | None = None
        self.forwarded = 0

    @property
    def address(self) -> tuple[str, int]:
        return self.inside.getsockname()[:2]

    def pump(self) -> None:
        ready = select.select([self.inside, *self.outside], [], [], 0)[0]
        for sock in ready:
            data, source = sock.recvfrom(65536)
            if sock is self.inside:
                self.client = source
                # The first datagram out of the first port, every later one the second.
                self.outside[min(self.forwarded, 1)].sendto(data, self.server)
                self.forwarded += 1
            elif self.client is not None:
                self.inside.sendto(data, self.client)

    def close(self) -> None:
        for sock in (self.inside, *self.outside):
            sock.close()


def serve(
    ours: DtlsNegotiation,
    sock: socket.socket,
    deadline: float,
    received: list[bytes],
    nat: RebindingNat | None = None,
) -> list[object]:
    """Move datagrams between the socket and the engine until it has keys or the deadline:
    what the engine addresses goes to that source (a HelloVerifyRequest, our flights); what
    came is put in ``received``. ``nat``: the client's datagrams pass through it."""
    while time.monotonic() < deadline:
        if nat is not None:
            nat.pump()
        now = time.monotonic()
        timer = ours.get_timer()
        longest = 0.005 if nat is not None else 0.05
        wait = longest if timer is None else max(0.0, min(longest, timer - now))
        if select.select([sock], [], [], wait)[0]:
            data, source = sock.recvfrom(65536)
            received.append(data)
            ours.receive_packet_from(data, source=source, now=time.monotonic())
        timer = ours.get_timer()
        if timer is not None and timer <= time.monotonic():
            ours.handle_timer(now=time.monotonic())
        for datagram in ours.packets_to_send(now=time.monotonic()):
            sock.sendto(datagram, SDP_ADDRESS)  # nobody there: the SDP address's copy
        for datagram, destination in ours.addressed_packets_to_send(now=time.monotonic()):
            sock.sendto(datagram, destination[:2])
        events = []
        while (event := ours.next_event()) is not None:
            events.append(event)
        if events:
            return events
    return []


def test_openssl_s_client_returns_our_cookie_and_is_keyed(tmp_path: Path) -> None:
    output, _ = keyed_through_our_cookie(tmp_path, [])
    # s_client -msg dumps each record it read ("<<<"): our HelloVerifyRequest's handshake
    # header (type 3, length 35: version and a 32-octet cookie) among them.
    assert "<<< " in output and "03 00 00 23 00 00 00 00 00 00 00 23" in output, output[-3000:]


def test_a_client_hello_fragmented_over_records_is_asked_for_a_cookie_too(
    tmp_path: Path,
) -> None:
    # A ClientHello longer than the path MTU goes in fragments (RFC 6347 §4.2.3): here a long
    # server name and a 256-octet MTU. Its first fragment carries the cookie; before the fix
    # such a ClientHello skipped the cookie (a forger's too: fragmenting was enough).
    name = "a" * 60 + "." + "b" * 60 + "." + "c" * 60 + ".example"
    _, received = keyed_through_our_cookie(tmp_path, ["-mtu", "256", "-servername", name])
    # ClientHellos (handshake type 1) whose first record holds less than the message.
    fragmented = [d for d in received if d[0] == 22 and d[13] == 1 and d[14:17] != d[22:25]]
    assert len(fragmented) >= 2  # the first, and the one with our cookie


def test_a_client_whose_nat_moves_it_to_another_port_between_its_client_hellos_is_keyed(
    tmp_path: Path,
) -> None:
    # Session 42: the cookie our HelloVerifyRequest gave at the first outside port comes back
    # from the second (the cookie covers the client's host, RFC 6347 §4.2.1's example), and
    # that port is keyed. Before, it was asked again, sent message_seq 2, and never keyed.
    output, _ = keyed_through_our_cookie(tmp_path, [], rebinding=True)
    assert "03 00 00 23 00 00 00 00 00 00 00 23" in output, output[-3000:]


def keyed_through_our_cookie(
    tmp_path: Path, options: list[str], *, rebinding: bool = False
) -> tuple[str, list[bytes]]:
    """s_client (with ``options``) asked for our cookie and keyed; its output and the
    datagrams it sent. ``rebinding``: through a :class:`RebindingNat`."""
    openssl = require_peer("openssl")
    now = datetime.datetime.now(datetime.UTC)
    ours_id = generate_identity(now=now, max_age=datetime.timedelta(days=1))
    client_id = generate_identity(now=now, max_age=datetime.timedelta(days=1))
    (tmp_path / "client.crt").write_bytes(
        client_id.certificate.public_bytes(serialization.Encoding.PEM)
    )
    (tmp_path / "client.key").write_bytes(
        client_id.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    exchange = DtlsKeyExchange(identity=lambda: ours_id)
    ours = exchange.offer(suites=[], secure_signalling=False)
    ours.remote_sdp_attributes(
        [
            ("fingerprint", serialize_fingerprint(Fingerprint("sha-256", client_id.digest()))),
            ("setup", "active"),  # the client is active: we are the DTLS server
        ]
    )
    assert ours.dtls_role == "server"
    received: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        nat = RebindingNat(("127.0.0.1", port)) if rebinding else None
        connect = nat.address if nat is not None else ("127.0.0.1", port)
        command = [
            openssl,
            "s_client",
            "-dtls1_2",
            "-connect",
            f"{connect[0]}:{connect[1]}",
            "-use_srtp",
            "SRTP_AES128_CM_SHA1_80",
            "-cert",
            str(tmp_path / "client.crt"),
            "-key",
            str(tmp_path / "client.key"),
            "-msg",
            *options,
        ]
        client = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            events = serve(ours, sock, time.monotonic() + 15.0, received, nat)
        finally:
            stop_process(client)
            if nat is not None:
                nat.close()
        output = client.stdout.read().decode("utf-8", "replace") if client.stdout else ""
    assert events and isinstance(events[0], KeysReady), output[-3000:]
    if nat is not None:
        # Asked at the first outside port, keyed at the second.
        assert ours.peer_source is not None
        assert ours.peer_source[1] == nat.outside_ports[1], (ours.peer_source, output[-3000:])
    assert events[0].keys.suite == "AES_CM_128_HMAC_SHA1_80"
    stats = ours.statistics()
    assert stats.hello_verify_requests == 1 and stats.bad_cookies == 0
    assert ours.peer_source is not None and ours.peer_source[1] != SDP_ADDRESS[1]
    assert dict(exchange.counters())["hello_verify_requests"] == 1
    return output, received
