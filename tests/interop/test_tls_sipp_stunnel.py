"""sipp behind stunnel (../shared/peers.md §1.5) against ``voipgw run`` over TLS.

Debian's sipp has no TLS, so stunnel carries its TCP connection over TLS to the gateway's TLS
listener, verifying the gateway's certificate and presenting the phone's. In mutual mode with the
phone vendor's CA: OPTIONS and REGISTER (digest) succeed with a CA-signed certificate and the
binding is recorded on the TLS flow; with no certificate or an untrusted one the connection is
refused and sipp fails. With the account bound to one device certificate (issue #4 item 3), the
same account is refused with 403 when another CA-signed certificate presents its password, and
over UDP with the right password.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.harness import run_sipp_uac
from tests.interop.harness.pki import Issued, TestCa, TestPki
from tests.interop.harness.sipp import SCENARIOS, SippResult
from tests.interop.harness.stunnel import StunnelClient
from tests.interop.harness.tls_gateway import TlsGatewayProcess

pytestmark = pytest.mark.interop

ALICE = ("alice", "wonderland")


class Certificates:
    def __init__(self, directory: Path) -> None:
        pki = TestPki(directory)
        self.ca: TestCa = pki.ca("Phone Vendor Factory CA")
        self.gateway: Issued = self.ca.issue("voipgw", hosts=["127.0.0.1", "localhost"])
        self.phone: Issued = self.ca.issue("0004f2aabbcc")
        self.other_phone: Issued = self.ca.issue("0004f2ddeeff")
        self.rogue: Issued = pki.self_signed("rogue")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates
) -> Iterator[TlsGatewayProcess]:
    tls = {
        "mode": "mutual",
        "certificate": str(certs.gateway.certificate),
        "private_key": str(certs.gateway.key),
        "ca_bundles": [str(certs.ca.certificate)],
    }
    with TlsGatewayProcess(
        tmp_path_factory.mktemp("gw"),
        tls=tls,
        accounts={"alice": "wonderland", "bob": "builder"},
        settings={"gateway": {"log_level": "debug"}},
        # The module's tests connect without a trusted certificate, register alice from the
        # wrong phone and over udp on purpose.
        allowed_warnings=[
            r"tls: handshake from \S+ failed \(mutual mode\): ",
            r"REGISTER from \S+ for alice refused: ",
            r"authentication failed for user 'alice'",
        ],
    ) as gw:
        # alice may only register from the phone she was issued.
        gw.cli("accounts", "set", "alice", "--bind-cert", str(certs.phone.certificate))
        yield gw


def register_scenario(workdir: Path, *, status: int = 200, domain_port: int | None = None) -> Path:
    """register_auth.xml expecting ``status`` at the end; with ``domain_port``, the REGISTER
    names 127.0.0.1:``domain_port`` (the gateway's TLS listener, as a phone behind the tunnel
    would) instead of the address sipp sends to (the tunnel)."""
    text = (SCENARIOS / "register_auth.xml").read_text()
    assert text.count('<recv response="200"/>') == 1
    text = text.replace('<recv response="200"/>', f'<recv response="{status}"/>')
    if domain_port is not None:
        text = text.replace("[remote_port]", str(domain_port))
    path = workdir / f"register_auth_{status}_{domain_port}.xml"
    path.write_text(text)
    return path


def through_stunnel(
    scenario: str | Path,
    gateway: TlsGatewayProcess,
    certs: Certificates,
    workdir: Path,
    certificate: Issued | None,
    *,
    user: str = "alice",
    password: str = "wonderland",
) -> tuple[SippResult, str]:
    with StunnelClient(
        gateway.tls_address, workdir=workdir, trust=certs.ca.certificate, certificate=certificate
    ) as tunnel:
        result = run_sipp_uac(
            scenario,
            tunnel.address,
            workdir=workdir,
            transport="tcp",
            service=user,
            auth=(user, password),
            timeout=10,
        )
    return result, tunnel.output()


def test_options_over_tls_with_the_phone_certificate(
    tmp_path: Path, gateway: TlsGatewayProcess, certs: Certificates
) -> None:
    result, stunnel_log = through_stunnel("options.xml", gateway, certs, tmp_path, certs.phone)
    result.check()
    assert "Certificate accepted at depth=0: CN=voipgw" in stunnel_log, stunnel_log
    gateway.wait_for_log(rf"sha256 {certs.phone.fingerprint}")


def test_register_over_tls_with_the_bound_phone_certificate(
    tmp_path: Path, gateway: TlsGatewayProcess, certs: Certificates
) -> None:
    register = register_scenario(tmp_path, domain_port=gateway.tls_port)
    result, _ = through_stunnel(register, gateway, certs, tmp_path, certs.phone)
    result.check()
    gateway.wait_for_log(r"registered: 1 binding\(s\) for sip:alice@127\.0\.0\.1:\d+ via tls:")


@pytest.mark.parametrize("client", ["none", "rogue"])
def test_mutual_refuses_connections_without_a_trusted_certificate(
    tmp_path: Path, gateway: TlsGatewayProcess, certs: Certificates, client: str
) -> None:
    certificate = None if client == "none" else certs.rogue
    before = gateway.log_text().count("tls: handshake from")
    result, _ = through_stunnel("options.xml", gateway, certs, tmp_path, certificate)
    assert not result.ok, result.describe()
    assert not result.received("SIP/2.0 200")
    reason = "peer did not return a certificate" if certificate is None else "CN=rogue"
    gateway.wait_for_log(rf"tls: handshake from 127\.0\.0\.1:\d+ failed \(mutual mode\).*{reason}")
    assert gateway.log_text().count("tls: handshake from") > before


def test_bound_account_is_refused_with_another_phone_certificate(
    tmp_path: Path, gateway: TlsGatewayProcess, certs: Certificates
) -> None:
    forbidden = register_scenario(tmp_path, status=403, domain_port=gateway.tls_port)
    result, _ = through_stunnel(forbidden, gateway, certs, tmp_path, certs.other_phone)
    result.check()
    (response,) = result.received("SIP/2.0 403")
    assert "certificate is not bound to account alice" in response
    # bob has no binding: the same certificate registers him.
    result, _ = through_stunnel(
        register_scenario(tmp_path, domain_port=gateway.tls_port),
        gateway,
        certs,
        tmp_path,
        certs.other_phone,
        user="bob",
        password="builder",
    )
    result.check()


def test_bound_account_is_refused_over_udp_with_the_right_password(
    tmp_path: Path, gateway: TlsGatewayProcess
) -> None:
    result = run_sipp_uac(
        register_scenario(tmp_path, status=403),
        gateway.address,
        workdir=tmp_path,
        transport="udp",
        service="alice",
        auth=ALICE,
        timeout=10,
    )
    result.check()
    (response,) = result.received("SIP/2.0 403")
    assert "requires its device certificate" in response
