"""A real DTLS client restarting on the same address and port (RFC 6347 §4.2.8; session 44):
``openssl s_client -dtls1_2 -use_srtp`` keys the ``dtls`` engine (we are the DTLS server), is
killed, and a new s_client (a restarted softphone) handshakes again from the same outside port
of a fixed-port phone: its ClientHello on the established association is asked for our cookie
and runs on a candidate association, whose keys replace the old ones once its certificate
matched a=fingerprint. The keys are checked against what each s_client exported itself
(``-keymatexport EXTRACTOR-dtls_srtp``, RFC 5764 §4.2) and SRTP made with them is read both
ways; an s_client with another certificate from the same port changes nothing: held for a
re-offer naming its certificate (session 45), which a restarted softphone with a new key and
certificate then sends, and its held handshake completes as the new association. Real UDP on
127.0.0.1; the system's ``openssl`` (3.0 on Debian 12), a second OpenSSL than pyOpenSSL's.
"""

from __future__ import annotations

import datetime
import re
import select
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.core.interfaces import KeysReady, SrtpKeys
from gateway.core.media.srtp import SrtpSession
from gateway.plugins.keyexchange.dtls_certificates import DtlsIdentity, generate_identity
from gateway.plugins.keyexchange.dtls_srtp import (
    DtlsKeyExchange,
    DtlsNegotiation,
    Fingerprint,
    serialize_fingerprint,
    split_keying_material,
)
from tests.conftest import require_peer
from tests.interop.harness.processes import stop_process

pytestmark = pytest.mark.interop

SDP_ADDRESS = ("127.0.0.1", 9)
"""Where the phone's SDP would say it is: nobody (the fixed port sends from elsewhere)."""
SUITE = "AES_CM_128_HMAC_SHA1_80"
RTP = bytes([0x80, 0x00, 0x00, 0x07]) + bytes(4) + bytes.fromhex("1234abcd") + b"\xd5" * 160


class FixedPortPhone:
    """The phone's one media port (``outside``): whichever s_client runs sends through it, so
    a restarted client comes from the same address and port, as a softphone with a fixed
    RTP port does."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.inside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.inside.bind(("127.0.0.1", 0))
        self.outside = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.outside.bind(("127.0.0.1", 0))
        self.client: tuple[str, int] | None = None
        self.media: list[bytes] = []

    @property
    def address(self) -> tuple[str, int]:
        return self.inside.getsockname()[:2]

    def pump(self) -> None:
        for sock in select.select([self.inside, self.outside], [], [], 0)[0]:
            data, source = sock.recvfrom(65536)
            if sock is self.inside:
                self.client = source
                self.outside.sendto(data, self.server)
            elif data[:1] and data[0] >= 128:
                self.media.append(data)  # SRTP for the phone: the test reads it
            elif self.client is not None:
                self.inside.sendto(data, self.client)

    def close(self) -> None:
        self.inside.close()
        self.outside.close()


def pem_files(tmp_path: Path, name: str, identity: DtlsIdentity) -> list[str]:
    certificate, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    certificate.write_bytes(identity.certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        identity.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ["-cert", str(certificate), "-key", str(key)]


def serve(
    ours: DtlsNegotiation, sock: socket.socket, phone: FixedPortPhone, until: float
) -> list[object]:
    """Move datagrams between the engine and the phone until an event or ``until``."""
    while time.monotonic() < until:
        phone.pump()
        if select.select([sock], [], [], 0.005)[0]:
            data, source = sock.recvfrom(65536)
            ours.receive_packet_from(data, source=source, now=time.monotonic())
        timer = ours.get_timer()
        if timer is not None and timer <= time.monotonic():
            ours.handle_timer(now=time.monotonic())
        for datagram in ours.packets_to_send(now=time.monotonic()):
            sock.sendto(datagram, phone.outside.getsockname()[:2])
        for datagram, destination in ours.addressed_packets_to_send(now=time.monotonic()):
            sock.sendto(datagram, destination[:2])
        events = []
        while (event := ours.next_event()) is not None:
            events.append(event)
        if events:
            return events
    return []


def run_client(
    openssl: str,
    ours: DtlsNegotiation,
    sock: socket.socket,
    phone: FixedPortPhone,
    identity_files: list[str],
) -> tuple[list[object], str]:
    """One s_client through the phone's port: the engine's events and the client's output
    (killed afterwards, as a softphone that is restarted)."""
    command = [
        openssl,
        "s_client",
        "-dtls1_2",
        "-connect",
        f"{phone.address[0]}:{phone.address[1]}",
        "-use_srtp",
        "SRTP_AES128_CM_SHA1_80",
        "-keymatexport",
        "EXTRACTOR-dtls_srtp",
        "-keymatexportlen",
        "60",
        *identity_files,
    ]
    client = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        events = serve(ours, sock, phone, time.monotonic() + 15.0)
        # Our last flight to it, and its own output, before it goes.
        serve(ours, sock, phone, time.monotonic() + 0.3)
    finally:
        stop_process(client)
    output = client.stdout.read().decode("utf-8", "replace") if client.stdout else ""
    return events, output


def exported(output: str) -> bytes:
    """The keying material s_client exported (``Keying material: <hex>``)."""
    (hex_text,) = re.findall(r"Keying material: ([0-9A-Fa-f]+)", output)
    return bytes.fromhex(hex_text)


def client_keys(output: str) -> SrtpKeys:
    """The keys as s_client (the DTLS client) holds them (RFC 5764 §4.2)."""
    client, server = split_keying_material(exported(output), SUITE)
    return SrtpKeys(SUITE, local_key=client, remote_key=server)


def readable_both_ways(ours: SrtpKeys, theirs: SrtpKeys) -> None:
    gateway, phone = SrtpSession(ours), SrtpSession(theirs)
    to_phone = gateway.protect_rtp(RTP)
    assert to_phone is not None and to_phone != RTP
    assert phone.unprotect_rtp(to_phone) == RTP
    from_phone = phone.protect_rtp(RTP)
    assert from_phone is not None and gateway.unprotect_rtp(from_phone) == RTP


def established(tmp_path: Path) -> tuple[str, DtlsNegotiation, DtlsIdentity, list[str]]:
    openssl = require_peer("openssl")
    now = datetime.datetime.now(datetime.UTC)
    ours_id = generate_identity(now=now, max_age=datetime.timedelta(days=1))
    phone_id = generate_identity(now=now, max_age=datetime.timedelta(days=1))
    ours = DtlsKeyExchange(identity=lambda: ours_id).offer(suites=[], secure_signalling=False)
    ours.remote_sdp_attributes(
        [
            ("fingerprint", serialize_fingerprint(Fingerprint("sha-256", phone_id.digest()))),
            ("setup", "active"),  # the phone is active: we are the DTLS server
        ]
    )
    assert ours.dtls_role == "server"
    return openssl, ours, phone_id, pem_files(tmp_path, "phone", phone_id)


def test_a_restarted_openssl_client_on_the_same_port_rekeys_the_association(
    tmp_path: Path,
) -> None:
    openssl, ours, _, files = established(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        phone = FixedPortPhone(sock.getsockname()[:2])
        try:
            events, output = run_client(openssl, ours, sock, phone, files)
            assert events and isinstance(events[0], KeysReady), output[-3000:]
            first = ours.keys
            assert first is not None and first.suite == SUITE
            assert (first.remote_key, first.local_key) == (
                client_keys(output).local_key,
                client_keys(output).remote_key,
            )
            readable_both_ways(first, client_keys(output))
            # The softphone restarts: a new s_client, the same outside port.
            events, output = run_client(openssl, ours, sock, phone, files)
        finally:
            phone.close()
    assert events and isinstance(events[0], KeysReady), output[-3000:]
    second = ours.keys
    assert second is not None and second == events[0].keys and second != first
    restarted = client_keys(output)
    assert (second.remote_key, second.local_key) == (restarted.local_key, restarted.remote_key)
    readable_both_ways(second, restarted)
    stats = ours.statistics()
    # Asked for our cookie twice: the first handshake (not the SDP address) and the restart.
    assert stats.hello_verify_requests == 2 and stats.peer_rekeys == 1
    assert ours.peer_rekeys == 1 and ours.state == "established"


def test_a_restart_from_the_same_port_with_another_certificate_changes_nothing(
    tmp_path: Path,
) -> None:
    openssl, ours, _, files = established(tmp_path)
    other = generate_identity(
        now=datetime.datetime.now(datetime.UTC), max_age=datetime.timedelta(days=1)
    )
    forged = pem_files(tmp_path, "other", other)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        phone = FixedPortPhone(sock.getsockname()[:2])
        try:
            events, output = run_client(openssl, ours, sock, phone, files)
            assert events and isinstance(events[0], KeysReady), output[-3000:]
            first = ours.keys
            assert first is not None
            events, output = run_client(openssl, ours, sock, phone, forged)
        finally:
            phone.close()
    assert events == [], events  # no KeysReady, no NegotiationFailed: the call goes on
    assert ours.keys == first and ours.state == "established" and ours.failure is None
    stats = ours.statistics()
    # Its certificate, read before OpenSSL saw it, is not the one a=fingerprint names: held
    # for a re-offer naming it (session 45), never our ChangeCipherSpec and Finished, and no
    # alert either (test_dtls_restart.py, test_a_forged_restart_never_gets_our_finished,
    # checks the records); it fails at handshake_timeout.
    assert stats.peer_restarts == 1 and stats.peer_restarts_held == 1
    assert stats.peer_rekeys == 0 and stats.peer_restarts_failed == 0
    assert "SSL alert number" not in output, output[-3000:]
    if "Keying material" in output:
        # s_client prints its session and exporter at exit even so: a master secret of its own
        # half-done handshake, never a key of ours.
        forger = client_keys(output)
        assert forger.remote_key != first.local_key and forger.local_key != first.remote_key


def test_a_failed_restart_does_not_end_the_phones_association(tmp_path: Path) -> None:
    # A forger on the phone's path (it receives there: it returns the cookie) restarts from
    # the phone's port with a certificate of its own. What we send its candidate, our flight
    # and at last our alert, all of epoch 0 (RFC 6347 §4.1), reaches the real phone too, whose
    # association is of epoch 1: OpenSSL discards them (§4.1.2.7). The phone's association
    # and ours go on: its data after that still reaches our association.
    openssl, ours, _, files = established(tmp_path)
    other = generate_identity(
        now=datetime.datetime.now(datetime.UTC), max_age=datetime.timedelta(days=1)
    )
    forger = DtlsKeyExchange(identity=lambda: other).answer(
        ours.local_sdp_attributes(), suites=[], secure_signalling=False
    )
    assert forger is not None and forger.dtls_role == "client"
    # -nbio: a phone's socket does not block; s_client's own, blocking, waits in recvfrom
    # after OpenSSL discarded a record of the wrong epoch, and never reads its stdin again.
    command = [openssl, "s_client", "-dtls1_2", "-nbio", "-use_srtp", "SRTP_AES128_CM_SHA1_80"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        phone = FixedPortPhone(sock.getsockname()[:2])
        address = f"{phone.address[0]}:{phone.address[1]}"
        client = subprocess.Popen(
            [*command, "-connect", address, *files],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            events = serve(ours, sock, phone, time.monotonic() + 15.0)
            assert events and isinstance(events[0], KeysReady)
            first = ours.keys
            serve(ours, sock, phone, time.monotonic() + 0.3)  # our last flight to it
            until = time.monotonic() + 15.0
            while ours.statistics().peer_restarts_held == 0 and time.monotonic() < until:
                for datagram in forger.packets_to_send(now=time.monotonic()):
                    phone.outside.sendto(datagram, sock.getsockname()[:2])
                if select.select([sock], [], [], 0.005)[0]:
                    data, source = sock.recvfrom(65536)
                    ours.receive_packet_from(data, source=source, now=time.monotonic())
                for datagram, destination in ours.addressed_packets_to_send(now=time.monotonic()):
                    sock.sendto(datagram, destination[:2])
                while select.select([phone.outside], [], [], 0)[0]:
                    data, _ = phone.outside.recvfrom(65536)
                    forger.receive_packet(data, now=time.monotonic())
                    assert phone.client is not None
                    phone.inside.sendto(data, phone.client)  # the real phone reads it too
            # Held (session 45: a re-offer may yet name its certificate); what we sent its
            # candidate, our flight of epoch 0, reached the real phone too.
            assert ours.statistics().peer_restarts_held == 1 and ours.keys == first
            received = ours.statistics().datagrams_received
            assert client.stdin is not None
            client.stdin.write(b"still here\n")
            client.stdin.flush()  # application data of epoch 1 on its association
            until = time.monotonic() + 10.0
            while ours.statistics().datagrams_received == received and time.monotonic() < until:
                serve(ours, sock, phone, time.monotonic() + 0.05)
        finally:
            stop_process(client)
            phone.close()
    output = client.stdout.read().decode("utf-8", "replace") if client.stdout else ""
    assert "alert" not in output.lower(), output[-3000:]
    assert ours.keys == first and ours.state == "established" and ours.failure is None


def test_a_restart_with_a_new_certificate_before_the_reoffer_completes_by_it(
    tmp_path: Path,
) -> None:
    # A softphone restarted with a new key and certificate (RFC 8842 §5: a new association)
    # handshakes again through its fixed port before its re-INVITE with the new a=fingerprint
    # reaches us. Its candidate is held, not alerted (session 45); the re-offer naming its
    # certificate takes the held handshake as its new association: s_client, still waiting
    # for our Finished, completes, and its exported keys are the leg's.
    openssl, ours, _, files = established(tmp_path)
    renewed = generate_identity(
        now=datetime.datetime.now(datetime.UTC), max_age=datetime.timedelta(days=1)
    )
    renewed_files = pem_files(tmp_path, "renewed", renewed)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        phone = FixedPortPhone(sock.getsockname()[:2])
        try:
            events, output = run_client(openssl, ours, sock, phone, files)
            assert events and isinstance(events[0], KeysReady), output[-3000:]
            first = ours.keys
            command = [
                openssl,
                "s_client",
                "-dtls1_2",
                "-connect",
                f"{phone.address[0]}:{phone.address[1]}",
                "-use_srtp",
                "SRTP_AES128_CM_SHA1_80",
                "-keymatexport",
                "EXTRACTOR-dtls_srtp",
                "-keymatexportlen",
                "60",
                *renewed_files,
            ]
            client = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            try:
                until = time.monotonic() + 15.0
                while ours.statistics().peer_restarts_held == 0 and time.monotonic() < until:
                    assert serve(ours, sock, phone, time.monotonic() + 0.05) == []
                assert ours.statistics().peer_restarts_held == 1 and ours.keys == first
                # The re-INVITE: the new fingerprint, a new tls-id, a=setup:actpass.
                fingerprint = Fingerprint("sha-256", renewed.digest())
                answered = DtlsKeyExchange(identity=lambda: renewed).answer(
                    [
                        ("fingerprint", serialize_fingerprint(fingerprint)),
                        ("setup", "actpass"),
                        ("tls-id", "bmV3LWFzc29jaWF0aW9uLW9mLXRoZS1waG9uZQ"),
                    ],
                    suites=[],
                    secure_signalling=False,
                    previous=ours,
                )
                assert answered is not None and answered.dtls_role == "server"
                ours_attributes = dict(answered.local_sdp_attributes())
                assert ours_attributes["setup"] == "passive"
                # Our certificate is the one the phone checked: the held handshake's.
                assert (
                    ours_attributes["fingerprint"]
                    == dict(ours.local_sdp_attributes())["fingerprint"]
                )
                events = serve(answered, sock, phone, time.monotonic() + 15.0)
                serve(answered, sock, phone, time.monotonic() + 0.3)  # our last flight to it
            finally:
                stop_process(client)
            output = client.stdout.read().decode("utf-8", "replace") if client.stdout else ""
        finally:
            phone.close()
    assert events and isinstance(events[0], KeysReady), output[-3000:]
    second = answered.keys
    assert second is not None and second == events[0].keys and second != first
    restarted = client_keys(output)
    assert (second.remote_key, second.local_key) == (restarted.local_key, restarted.remote_key)
    readable_both_ways(second, restarted)
    assert answered.statistics().peer_restarts_adopted == 1
    assert "SSL alert number" not in output, output[-3000:]
