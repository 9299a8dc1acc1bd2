"""The tls transport on real sockets on 127.0.0.1: a Gateway in-process with a TLS listener on
port 0, clients built on the stdlib ssl module (trio.SSLStream), and TLS servers standing in for
trunks.

Listener side: OPTIONS over TLS, the generated certificate, what a flow records about client
certificates in each mode, mutual mode accepting a CA-signed client certificate and refusing none
and an untrusted one, TLS 1.1 and CBC suites refused, the handshake timeout and the per-source
limit, and a log line for each failed handshake. Trunk side (open_flow): verification of the
chain and the name, SNI, connection reuse, and our certificate in mutual mode.
"""

from __future__ import annotations

import logging
import ssl
import stat
from contextlib import suppress
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.plugins.transports.tls import TlsHandshakeError
from tests.integration.tls.tls_peers import (
    LOOPBACK,
    TLS_LOG,
    client_context,
    connect,
    failures,
    options_over,
    refused,
    running_gateway,
    tls_flows,
    tls_port,
    tls_transport,
    trunk_server,
)
from tests.interop.harness.pki import Issued, TestCa, TestPki


@attrs.frozen
class Pki:
    ca: TestCa
    phone: Issued  # signed by the CA: a device with a factory certificate
    rogue: Issued  # self-signed: nobody vouches for it
    other_ca_phone: Issued  # signed by a CA the gateway does not trust
    trunk: Issued  # signed by the CA, names 127.0.0.1 and trunk.example
    wrong_name: Issued  # signed by the CA, names only 127.0.0.2 and elsewhere.example


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    test_pki = TestPki(tmp_path_factory.mktemp("pki"))
    ca = test_pki.ca("Phone Vendor Factory CA")
    other = test_pki.ca("Some Other CA")
    return Pki(
        ca=ca,
        phone=ca.issue("0004f2aabbcc", hosts=["0004f2aabbcc.phones.example"]),
        rogue=test_pki.self_signed("rogue"),
        other_ca_phone=other.issue("0004f2ddeeff", hosts=[]),
        trunk=ca.issue("trunk", hosts=["127.0.0.1", "trunk.example"]),
        wrong_name=ca.issue("elsewhere", hosts=["127.0.0.2", "elsewhere.example"]),
    )


# --------------------------------------------------------------------------------------------
# Listener


async def test_options_over_tls_with_the_generated_certificate(tmp_path: Path) -> None:
    async with running_gateway(tmp_path / "state", {}) as gateway:
        generated = tmp_path / "state" / "tls" / "gateway.crt"
        # The client verifies the gateway: chain = the self-signed certificate, name = 127.0.0.1.
        stream = await connect(tls_port(gateway), client_context(trust=generated))
        async with stream:
            response = await options_over(stream)
            assert response.status == 200
            assert response.top_via.transport.upper() == "TLS"
            (flow,) = tls_flows(gateway)
            assert flow.secure and flow.reliable
            assert flow.peer_certificate is None  # asked for, none sent: fine in server-only
    key = tmp_path / "state" / "tls" / "gateway.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


async def test_server_only_records_an_unverified_self_signed_client_certificate(
    tmp_path: Path, pki: Pki
) -> None:
    # No CA configured at all: the certificate is still accepted and its fingerprint recorded,
    # so device binding by fingerprint works (issue #4 item 3).
    async with running_gateway(tmp_path / "state", {"mode": "server-only"}) as gateway:
        stream = await connect(tls_port(gateway), client_context(certificate=pki.rogue))
        async with stream:
            assert (await options_over(stream)).status == 200
            (flow,) = tls_flows(gateway)
            assert flow.peer_certificate is not None
            assert flow.peer_certificate.sha256_fingerprint == pki.rogue.fingerprint
            assert flow.peer_certificate.subject == "CN=rogue"
            assert flow.peer_certificate.verified is False
            assert flow.peer_certificate.server_name is None  # the phone opened it


async def test_server_only_marks_a_client_certificate_from_a_configured_ca_verified(
    tmp_path: Path, pki: Pki
) -> None:
    tls = {"mode": "server-only", "ca_bundles": [str(pki.ca.certificate)]}
    async with running_gateway(tmp_path / "state", tls) as gateway:
        stream = await connect(tls_port(gateway), client_context(certificate=pki.phone))
        async with stream:
            assert (await options_over(stream)).status == 200
            (flow,) = tls_flows(gateway)
            certificate = flow.peer_certificate
            assert certificate is not None
            assert certificate.verified is True
            assert certificate.subject == "CN=0004f2aabbcc"
            assert certificate.issuer == "CN=Phone Vendor Factory CA"
            assert certificate.subject_alt_names == ("0004f2aabbcc.phones.example",)
            assert certificate.server_name is None  # a client certificate


async def test_encryption_only_accepts_any_client(tmp_path: Path, pki: Pki) -> None:
    async with running_gateway(tmp_path / "state", {"mode": "encryption-only"}) as gateway:
        for certificate in (None, pki.rogue):
            stream = await connect(tls_port(gateway), client_context(certificate=certificate))
            async with stream:
                assert (await options_over(stream)).status == 200


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
async def test_mutual_accepts_a_ca_signed_client_and_refuses_none_and_untrusted(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture, maximum: ssl.TLSVersion
) -> None:
    caplog.set_level(logging.INFO, logger=TLS_LOG)
    tls = {"mode": "mutual", "ca_bundles": [str(pki.ca.certificate)]}
    async with running_gateway(tmp_path / "state", tls) as gateway:
        port = tls_port(gateway)
        stream = await connect(port, client_context(certificate=pki.phone, maximum=maximum))
        async with stream:
            assert (await options_over(stream)).status == 200
            (flow,) = tls_flows(gateway)
            assert flow.peer_certificate is not None and flow.peer_certificate.verified
        assert not failures(caplog)

        assert await refused(port, client_context(maximum=maximum))
        assert await refused(port, client_context(certificate=pki.rogue, maximum=maximum))
        assert await refused(port, client_context(certificate=pki.other_ca_phone, maximum=maximum))
        await trio.testing.wait_all_tasks_blocked()
    logged = failures(caplog)
    assert len(logged) == 3, logged
    none, rogue, other = logged
    assert "handshake from 127.0.0.1:" in none and "(mutual mode)" in none
    assert "peer did not return a certificate" in none and "peer certificate: none" in none
    assert "certificate verify failed" in rogue and "self-signed certificate" in rogue
    assert "peer certificate: CN=rogue" in rogue
    assert "unable to get local issuer certificate" in other
    assert "CN=0004f2ddeeff" in other


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
async def test_tls_1_1_and_cbc_suites_are_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TLS_LOG)
    async with running_gateway(tmp_path / "state", {}) as gateway:
        port = tls_port(gateway)
        old = client_context(maximum=ssl.TLSVersion.TLSv1_1)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client really offer TLS 1.1
        assert await refused(port, old)

        cbc = client_context(maximum=ssl.TLSVersion.TLSv1_2)
        cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384")
        assert await refused(port, cbc)

        # The same client with an AEAD suite gets in: the refusal was about CBC.
        gcm = client_context(maximum=ssl.TLSVersion.TLSv1_2)
        gcm.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
        stream = await connect(port, gcm)
        async with stream:
            assert (await options_over(stream)).status == 200
            assert stream.cipher() is not None
            assert stream.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256"  # type: ignore[index]
        await trio.testing.wait_all_tasks_blocked()
    version, cipher = failures(caplog)
    assert "unsupported protocol" in version
    assert "no shared cipher" in cipher


async def test_a_silent_connection_is_closed_after_the_handshake_timeout(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TLS_LOG)
    # The least allowed (a TLS handshake is two round trips, RFC 8446 §2).
    async with running_gateway(tmp_path / "state", {"handshake_timeout": 0.5}) as gateway:
        tcp = await trio.open_tcp_stream(LOOPBACK, tls_port(gateway))
        async with tcp:
            with trio.fail_after(10):
                with suppress(trio.BrokenResourceError):  # EOF or RST: closed either way
                    assert await tcp.receive_some(100) == b""
        await trio.testing.wait_all_tasks_blocked()
    (logged,) = failures(caplog)
    assert "no handshake within 0.5 s" in logged


async def test_connections_beyond_the_per_source_limit_are_closed(tmp_path: Path) -> None:
    tls = {"max_connections_per_source": 2, "handshake_timeout": 60.0}
    async with running_gateway(tmp_path / "state", tls) as gateway:
        port = tls_port(gateway)
        # Two connections that never start their handshake still count against the limit.
        idle = [await trio.open_tcp_stream(LOOPBACK, port) for _ in range(2)]
        try:
            assert await refused(port, client_context())
            assert len(tls_flows(gateway)) == 0
        finally:
            for stream in idle:
                await stream.aclose()
        # Once they are gone a new client gets in.
        await trio.testing.wait_all_tasks_blocked()
        stream = await connect(port, client_context())
        async with stream:
            assert (await options_over(stream)).status == 200


# --------------------------------------------------------------------------------------------
# Towards trunks (open_flow)


async def test_trunk_with_a_certificate_for_its_address_is_verified_and_reused(
    tmp_path: Path, pki: Pki
) -> None:
    async with trunk_server(pki.trunk) as trunk:
        tls = {"ca_bundles": [str(pki.ca.certificate)], "system_ca_for_trunks": False}
        async with running_gateway(tmp_path / "state", tls) as gateway:
            remote = (LOOPBACK, trunk.port)
            flow = await tls_transport(gateway).open_flow(remote, gateway)
            assert flow.secure
            assert flow.peer_certificate is not None
            assert flow.peer_certificate.verified
            assert flow.peer_certificate.sha256_fingerprint == pki.trunk.fingerprint
            assert flow.peer_certificate.server_name == "127.0.0.1"  # what it had to name
            again = await tls_transport(gateway).open_flow(remote, gateway)
            assert again is flow
            assert trunk.handshakes == 1
            assert trunk.server_names == [None]  # no SNI for an IP address (RFC 6066 §3)
            assert trunk.client_certificates == [None]  # server-only: we present none


async def test_trunk_whose_certificate_does_not_match_its_name_is_refused(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=TLS_LOG)
    async with trunk_server(pki.wrong_name) as trunk:
        tls = {"ca_bundles": [str(pki.ca.certificate)], "system_ca_for_trunks": False}
        async with running_gateway(tmp_path / "state", tls) as gateway:
            with pytest.raises(TlsHandshakeError, match=r"does not name 127\.0\.0\.1"):
                await tls_transport(gateway).open_flow((LOOPBACK, trunk.port), gateway)
            assert tls_flows(gateway) == []
    (logged,) = failures(caplog)
    assert f"handshake to 127.0.0.1:{trunk.port} failed (server-only mode)" in logged
    assert "IP:127.0.0.2" in logged and "CN=elsewhere" in logged


async def test_trunk_name_from_peers_is_checked_and_sent_as_sni(tmp_path: Path, pki: Pki) -> None:
    async with trunk_server(pki.trunk) as trunk, trunk_server(pki.wrong_name) as wrong:
        tls = {
            "ca_bundles": [str(pki.ca.certificate)],
            "system_ca_for_trunks": False,
            "peers": {
                f"127.0.0.1:{trunk.port}": "trunk.example",
                f"127.0.0.1:{wrong.port}": "trunk.example",
            },
        }
        async with running_gateway(tmp_path / "state", tls) as gateway:
            flow = await tls_transport(gateway).open_flow((LOOPBACK, trunk.port), gateway)
            assert flow.peer_certificate is not None and flow.peer_certificate.verified
            assert flow.peer_certificate.server_name == "trunk.example"
            assert trunk.server_names == ["trunk.example"]
            with pytest.raises(TlsHandshakeError, match=r"does not name trunk\.example"):
                await tls_transport(gateway).open_flow((LOOPBACK, wrong.port), gateway)


async def test_trunk_with_an_untrusted_certificate_is_refused_unless_encryption_only(
    tmp_path: Path, pki: Pki
) -> None:
    rogue_trunk = pki.rogue  # self-signed, names 127.0.0.1
    async with trunk_server(rogue_trunk) as trunk, trunk_server(rogue_trunk) as lax:
        tls = {
            "ca_bundles": [str(pki.ca.certificate)],
            "system_ca_for_trunks": False,
            "peer_modes": {f"127.0.0.1:{lax.port}": "encryption-only"},
        }
        async with running_gateway(tmp_path / "state", tls) as gateway:
            transport = tls_transport(gateway)
            with pytest.raises(TlsHandshakeError, match="self-signed certificate"):
                await transport.open_flow((LOOPBACK, trunk.port), gateway)
            flow = await transport.open_flow((LOOPBACK, lax.port), gateway)
            assert flow.secure
            assert flow.peer_certificate is not None
            assert flow.peer_certificate.verified is False
            assert flow.peer_certificate.server_name == "127.0.0.1"  # not verified for it


async def test_mutual_trunk_gets_our_certificate(tmp_path: Path, pki: Pki) -> None:
    ours = pki.ca.issue("gateway-node-1")
    async with trunk_server(pki.trunk, require_client_ca=pki.ca.certificate) as trunk:
        tls = {
            "certificate": str(ours.certificate),
            "private_key": str(ours.key),
            "ca_bundles": [str(pki.ca.certificate)],
            "system_ca_for_trunks": False,
            "peer_modes": {f"127.0.0.1:{trunk.port}": "mutual"},
        }
        async with running_gateway(tmp_path / "state", tls) as gateway:
            flow = await tls_transport(gateway).open_flow((LOOPBACK, trunk.port), gateway)
            assert flow.peer_certificate is not None and flow.peer_certificate.verified
            # The server sees our certificate once the TLS 1.3 client flight has arrived.
            await flow.send(b"\r\n\r\n")
            await trio.testing.wait_all_tasks_blocked()
            assert trunk.client_certificates == [ours.x509.public_bytes(Encoding.DER)]
        assert not (tmp_path / "state" / "tls").exists()  # configured: nothing generated
