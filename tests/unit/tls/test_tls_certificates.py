"""The generated certificate (once, owner-only key), peer identities, name checks, and the
protocol settings every TLS context gets (versions, cipher suites, options)."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import stat
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from OpenSSL import SSL

from gateway.plugins.transports.certificates import (
    CertificatePaths,
    default_hosts,
    ensure_self_signed,
    fingerprint,
    load_certificates,
    matches_name,
    peer_identity,
)
from gateway.plugins.transports.tls import (
    TLS12_CIPHERS,
    TlsError,
    TlsStream,
    client_context,
    server_context,
)
from tests.interop.harness.pki import TestPki

NOW = datetime.datetime(2026, 11, 28, 12, 0, tzinfo=datetime.UTC)


# --------------------------------------------------------------------------------------------
# The generated certificate


def test_generated_certificate_is_ecdsa_p256_with_the_listener_names(tmp_path: Path) -> None:
    paths, created = ensure_self_signed(tmp_path / "tls", default_hosts("192.0.2.7"), now=NOW)
    assert created
    (certificate,) = load_certificates(paths.certificate)
    public_key = certificate.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("192.0.2.7"),
    ]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert certificate.subject == certificate.issuer  # self-signed
    assert certificate.not_valid_before_utc <= NOW < certificate.not_valid_after_utc
    basic = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is False


def test_wildcard_listener_is_not_put_in_the_certificate() -> None:
    assert default_hosts("0.0.0.0") == ["127.0.0.1", "localhost"]
    assert default_hosts("::") == ["127.0.0.1", "localhost"]
    assert default_hosts("::1") == ["127.0.0.1", "::1", "localhost"]


def test_generation_happens_once_and_the_key_is_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "state" / "tls"
    first, created = ensure_self_signed(directory, ["127.0.0.1"], now=NOW)
    assert created
    assert stat.S_IMODE(first.private_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    pinned = fingerprint(load_certificates(first.certificate)[0])
    key_bytes = first.private_key.read_bytes()

    again, created_again = ensure_self_signed(directory, ["127.0.0.1", "192.0.2.9"], now=NOW)
    assert again == first
    assert not created_again
    assert fingerprint(load_certificates(again.certificate)[0]) == pinned
    assert again.private_key.read_bytes() == key_bytes
    assert sorted(p.name for p in directory.iterdir()) == ["gateway.crt", "gateway.key"]


def test_a_certificate_without_its_key_is_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    first, _ = ensure_self_signed(directory, ["127.0.0.1"], now=NOW)
    old = fingerprint(load_certificates(first.certificate)[0])
    first.private_key.unlink()
    second, created = ensure_self_signed(directory, ["127.0.0.1"], now=NOW)
    assert created
    assert fingerprint(load_certificates(second.certificate)[0]) != old
    # The pair belongs together: a server context accepts it.
    server_context(second, "server-only", ())


# --------------------------------------------------------------------------------------------
# Identities and names


def test_peer_identity(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    issued = pki.ca("Factory CA").issue(
        "0004f2aabbcc", hosts=["phone.example", "192.0.2.5", "sip:alice@example.com"]
    )
    identity = peer_identity(issued.x509, verified=True)
    assert identity.sha256_fingerprint == issued.fingerprint
    assert len(identity.sha256_fingerprint) == 64
    assert identity.sha256_fingerprint == identity.sha256_fingerprint.lower()
    assert identity.subject == "CN=0004f2aabbcc"
    assert identity.issuer == "CN=Factory CA"
    assert identity.verified is True
    assert identity.subject_alt_names == ("phone.example", "192.0.2.5", "sip:alice@example.com")


@pytest.mark.parametrize(
    ("hosts", "name", "expected"),
    [
        (["127.0.0.1"], "127.0.0.1", True),
        (["127.0.0.1"], "127.0.0.2", False),
        (["::1"], "0:0::1", True),
        (["::1"], "[::1]", True),
        (["trunk.example"], "trunk.example", True),
        (["trunk.example"], "TRUNK.example.", True),
        (["trunk.example"], "other.example", False),
        (["*.carrier.example"], "sip.carrier.example", True),
        (["*.carrier.example"], "a.sip.carrier.example", False),  # one label only
        (["*.carrier.example"], "carrier.example", False),
        (["*.example"], "carrier.example", False),  # too broad: refused
        (["s*.carrier.example"], "sip.carrier.example", False),  # partial wildcards refused
        (["sip:carrier.example"], "carrier.example", True),  # RFC 5922 §7.1
        (["sip:alice@carrier.example"], "carrier.example", False),  # a user part is not a domain
        (["trunk.example"], "127.0.0.1", False),  # an IP needs an iPAddress entry
        ([], "trunk", False),  # CN=trunk is never consulted
    ],
)
def test_matches_name(tmp_path: Path, hosts: list[str], name: str, expected: bool) -> None:
    issued = TestPki(tmp_path).ca("CA").issue("trunk", hosts=hosts)
    assert matches_name(issued.x509, name) is expected


# --------------------------------------------------------------------------------------------
# Protocol settings


@pytest.fixture
def files(tmp_path: Path) -> tuple[CertificatePaths, Path]:
    pki = TestPki(tmp_path)
    ca = pki.ca("CA")
    server = ca.issue("server")
    return CertificatePaths(server.certificate, server.key), ca.certificate


def test_cipher_suites_are_aead_with_forward_secrecy_only(
    files: tuple[CertificatePaths, Path],
) -> None:
    paths, ca = files
    for context in (
        server_context(paths, "server-only", ()),
        client_context("server-only", verify=True, ca_bundles=(ca,), system_cas=False, paths=None),
    ):
        suites = SSL.Connection(context, None).get_cipher_list()
        tls13 = [s for s in suites if s.startswith("TLS_")]
        tls12 = [s for s in suites if not s.startswith("TLS_")]
        assert sorted(tls13) == [
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256",
        ]
        assert tls12 == TLS12_CIPHERS.split(":")
        for suite in tls12:
            assert suite.startswith("ECDHE-"), suite  # forward secrecy (RFC 9325 §4.1)
            assert "GCM" in suite or "CHACHA20-POLY1305" in suite, suite  # AEAD (§4.2)


def test_context_options(files: tuple[CertificatePaths, Path]) -> None:
    options = server_context(files[0], "server-only", ()).set_options(0)
    for option in (SSL.OP_NO_COMPRESSION, SSL.OP_NO_RENEGOTIATION, SSL.OP_NO_TICKET):
        assert options & option


async def _handshake(server: SSL.Context, client: SSL.Context) -> tuple[TlsStream, TlsStream]:
    client_transport, server_transport = trio.testing.memory_stream_pair()
    client_tls = TlsStream(client_transport, SSL.Connection(client, None), server_side=False)
    server_tls = TlsStream(server_transport, SSL.Connection(server, None), server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_tls.do_handshake)
        nursery.start_soon(server_tls.do_handshake)
    return client_tls, server_tls


async def _server_refusal(server: SSL.Context, client: SSL.Context) -> str | None:
    """The server's reason for refusing the client's handshake (None: it completed)."""
    client_transport, server_transport = trio.testing.memory_stream_pair()
    client_tls = TlsStream(client_transport, SSL.Connection(client, None), server_side=False)
    server_tls = TlsStream(server_transport, SSL.Connection(server, None), server_side=True)
    reason: str | None = None

    async def client_side() -> None:
        with contextlib.suppress(TlsError, trio.BrokenResourceError):
            await client_tls.do_handshake()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(client_side)
        try:
            await server_tls.do_handshake()
        except TlsError as exc:
            reason = str(exc)
    await trio.aclose_forcefully(server_tls)
    await trio.aclose_forcefully(client_tls)
    return reason


def _lax_client(*, version: int, ciphers: bytes = b"ALL:@SECLEVEL=0") -> SSL.Context:
    client = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client.set_min_proto_version(SSL.TLS1_VERSION)
    client.set_max_proto_version(version)
    client.set_cipher_list(ciphers)
    return client


async def test_tls_1_1_is_refused_and_1_2_and_1_3_are_accepted(
    files: tuple[CertificatePaths, Path],
) -> None:
    server = server_context(files[0], "server-only", ())
    assert await _server_refusal(server, _lax_client(version=SSL.TLS1_1_VERSION)) == (
        "unsupported protocol"
    )
    for version, name in ((SSL.TLS1_2_VERSION, "TLSv1.2"), (SSL.TLS1_3_VERSION, "TLSv1.3")):
        client_tls, server_tls = await _handshake(server, _lax_client(version=version))
        assert server_tls.connection.get_protocol_version_name() == name
        await client_tls.aclose()
        await server_tls.aclose()


@pytest.mark.parametrize(
    "suite",
    ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA384", "AES128-GCM-SHA256", "AES128-SHA"],
)
async def test_tls_1_2_suites_without_aead_or_forward_secrecy_are_refused(
    files: tuple[CertificatePaths, Path], suite: str
) -> None:
    server = server_context(files[0], "server-only", ())
    client = _lax_client(version=SSL.TLS1_2_VERSION, ciphers=suite.encode() + b":@SECLEVEL=0")
    assert await _server_refusal(server, client) == "no shared cipher"
    # The same client offering an AEAD suite with ECDHE gets in.
    good = _lax_client(version=SSL.TLS1_2_VERSION, ciphers=b"ECDHE-ECDSA-AES128-GCM-SHA256")
    assert await _server_refusal(server, good) is None
