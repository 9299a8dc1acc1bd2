"""What the ``dtls`` engine's tests with sources share (test_dtls_sources.py,
test_dtls_cookies.py): our end and the peer's, strangers, and moving datagrams between them
with their sources."""

from __future__ import annotations

import datetime
import itertools
from collections.abc import Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.plugins.keyexchange.dtls_certificates import DtlsIdentity, generate_identity
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange, DtlsNegotiation

NOW = datetime.datetime(2026, 12, 2, tzinfo=datetime.UTC)
MONTH = datetime.timedelta(days=30)
US = generate_identity(now=NOW, max_age=MONTH)
PEER = generate_identity(now=NOW, max_age=MONTH)
STRANGER = generate_identity(now=NOW, max_age=MONTH)


def long_certificate_identity(names: int = 80) -> DtlsIdentity:
    """A self-signed certificate of about 3 KB (``names`` subjectAltName entries, as a phone
    provisioned with its many host names might carry): longer than the engine's MTU (1200), so
    its Certificate message goes in fragments across datagrams (RFC 6347 §4.2.3)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "a phone with a long certificate")])
    hosts = [x509.DNSName(f"phone-{n}.provisioning.example.net") for n in range(names)]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + MONTH)
        .add_extension(x509.SubjectAlternativeName(hosts), critical=False)
        .sign(key, hashes.SHA256())
    )
    return DtlsIdentity(certificate, key)


LONG = long_certificate_identity()
"""A certificate in three datagrams (:func:`long_certificate_identity`)."""

SDP_ADDRESS = ("127.0.0.1", 40000)
"""Where the peer's SDP says it is."""
NATTED = ("127.0.0.1", 51000)
"""Where the peer's datagrams come from: its NAT's address, which its SDP does not give."""
FIRST_STRANGER = ("127.0.0.1", 52000)

Address = tuple[str, int]


def exchange(identity: DtlsIdentity) -> DtlsKeyExchange:
    counter = itertools.count(1)
    return DtlsKeyExchange(
        identity=lambda: identity, random_bytes=lambda n: bytes([next(counter)]) * n
    )


def ours_and_peer(*, we_serve: bool) -> tuple[DtlsNegotiation, DtlsNegotiation]:
    """Our end and the peer's; ``we_serve``: we offered and the peer answered active (we are
    the DTLS server), else the peer offered actpass and we answered active (the client)."""
    offerer = exchange(US if we_serve else PEER).offer(suites=[], secure_signalling=True)
    answerer = exchange(PEER if we_serve else US).answer(
        offerer.local_sdp_attributes(), suites=[], secure_signalling=True
    )
    assert answerer is not None
    offerer.remote_sdp_attributes(answerer.local_sdp_attributes())
    return (offerer, answerer) if we_serve else (answerer, offerer)


def stranger_for(ours: DtlsNegotiation) -> DtlsNegotiation:
    """Someone who read our SDP and plays the peer's part with a certificate of its own."""
    if ours.dtls_role == "server":
        stranger = exchange(STRANGER).answer(
            ours.local_sdp_attributes(), suites=[], secure_signalling=True
        )
        assert stranger is not None
        return stranger
    stranger = exchange(STRANGER).offer(suites=[], secure_signalling=True)
    stranger.remote_sdp_attributes(
        [("setup", "active") if n == "setup" else (n, v) for n, v in ours.local_sdp_attributes()]
    )
    return stranger


def run(
    ours: DtlsNegotiation,
    others: Mapping[Address, DtlsNegotiation],
    *,
    usual: Sequence[Address] = (SDP_ADDRESS,),
    now: float = 0.0,
    order: Sequence[Address] | None = None,
) -> None:
    """Move datagrams until quiet: the others' to us with their source; ours addressed to that
    source, or (not addressed) the core's usual way, to ``usual`` (the latched source and the
    SDP address)."""
    for _ in range(60):
        moved = False
        for address in order or list(others):
            for datagram in others[address].packets_to_send(now=now):
                moved = True
                ours.receive_packet_from(datagram, source=address, now=now)
        for datagram in ours.packets_to_send(now=now):
            moved = True
            for address in usual:
                if address in others:
                    others[address].receive_packet(datagram, now=now)
        for datagram, address in ours.addressed_packets_to_send(now=now):
            moved = True
            if address in others:
                others[address].receive_packet(datagram, now=now)
        if not moved:
            return
    raise AssertionError("never quiet")


def events(negotiation: DtlsNegotiation) -> list[object]:
    out: list[object] = []
    while (event := negotiation.next_event()) is not None:
        out.append(event)
    return out


def send(sender: DtlsNegotiation, to: DtlsNegotiation, source: Address, now: float) -> None:
    for datagram in sender.packets_to_send(now=now):
        to.receive_packet_from(datagram, source=source, now=now)


def send_verified(
    sender: DtlsNegotiation, to: DtlsNegotiation, source: Address, now: float
) -> list[tuple[bytes, Address]]:
    """The sender's ClientHello, our HelloVerifyRequest back to it (RFC 6347 §4.2.1: a source
    other than the SDP address is asked for a cookie since session 41), and its ClientHello
    with our cookie; what else ``to`` sent meanwhile is returned."""
    send(sender, to, source, now)
    kept = []
    for datagram, address in to.addressed_packets_to_send(now=now):
        if address == source and datagram[_HANDSHAKE_TYPE] == _HELLO_VERIFY_REQUEST:
            sender.receive_packet(datagram, now=now)
        else:
            kept.append((datagram, address))
    send(sender, to, source, now)
    return kept


_HANDSHAKE_TYPE = 13  # after the record header, RFC 6347 §4.1
_HELLO_VERIFY_REQUEST = 3
