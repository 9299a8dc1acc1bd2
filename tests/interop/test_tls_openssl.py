"""``openssl s_client`` against ``voipgw run`` with a TLS listener (issue #4 item 6).

Mutual mode with a phone vendor's CA: a CA-signed client certificate gets 200 to OPTIONS, no
certificate and an untrusted one are refused. TLS 1.1 and CBC suites are refused, each with a
positive control that shows the same client gets in once it offers something acceptable. The
gateway logs every refused handshake with the reason, the peer and the certificate subject.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.harness.openssl import s_client
from tests.interop.harness.pki import Issued, TestCa, TestPki
from tests.interop.harness.tls_gateway import TlsGatewayProcess
from tests.interop.openssl_options import options_request

pytestmark = pytest.mark.interop


class Certificates:
    def __init__(self, directory: Path) -> None:
        pki = TestPki(directory)
        self.ca: TestCa = pki.ca("Phone Vendor Factory CA")
        self.gateway: Issued = self.ca.issue("voipgw", hosts=["127.0.0.1", "localhost"])
        self.gateway_rsa: Issued = self.ca.issue("voipgw-rsa", rsa_key=True)
        self.phone: Issued = self.ca.issue("0004f2aabbcc")
        self.rogue: Issued = pki.self_signed("rogue")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def mutual_gateway(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates
) -> Iterator[TlsGatewayProcess]:
    tls = {
        "mode": "mutual",
        "certificate": str(certs.gateway.certificate),
        "private_key": str(certs.gateway.key),
        "ca_bundles": [str(certs.ca.certificate)],
        # s_client -ign_eof reads until the server closes: an idle second ends each probe.
        "idle_timeout": 1.0,
    }
    # The module's tests offer no certificate, an untrusted one, or an old protocol on purpose.
    refused = [r"tls: handshake from \S+ failed \(mutual mode\): "]
    with TlsGatewayProcess(
        tmp_path_factory.mktemp("gw-mutual"), tls=tls, allowed_warnings=refused
    ) as gateway:
        yield gateway


def refusals(gateway: TlsGatewayProcess) -> list[str]:
    return re.findall(r"tls: handshake from 127\.0\.0\.1:\d+ failed .*", gateway.log_text())


def test_mutual_accepts_a_client_certificate_signed_by_the_ca(
    tmp_path: Path, certs: Certificates, mutual_gateway: TlsGatewayProcess
) -> None:
    result = s_client(
        mutual_gateway.tls_address,
        workdir=tmp_path,
        certificate=certs.phone,
        trust=certs.ca.certificate,
        send=options_request(mutual_gateway.tls_port),
    )
    assert result.handshake_ok, result.describe()
    assert "Verify return code: 0 (ok)" in result.output, result.describe()
    assert "SIP/2.0 200" in result.output, result.describe()
    # The listener told the client which CAs it accepts (RFC 8446 §4.2.4). OpenSSL 3.0 prints
    # the name as "CN = ...", 3.5 (Debian 13) as "CN=...".
    accepted = r"Acceptable client certificate CA names\nCN ?= ?Phone Vendor Factory CA\n"
    assert re.search(accepted, result.output), result.describe()


def test_mutual_refuses_a_client_without_a_certificate(
    tmp_path: Path, certs: Certificates, mutual_gateway: TlsGatewayProcess
) -> None:
    before = len(refusals(mutual_gateway))
    result = s_client(
        mutual_gateway.tls_address,
        workdir=tmp_path,
        trust=certs.ca.certificate,
        send=options_request(mutual_gateway.tls_port),
    )
    assert "SIP/2.0" not in result.output, result.describe()
    assert "certificate required" in result.alerts, result.describe()
    mutual_gateway.wait_for_log(r"peer did not return a certificate.*; peer certificate: none")
    assert len(refusals(mutual_gateway)) == before + 1


def test_mutual_refuses_an_untrusted_client_certificate(
    tmp_path: Path, certs: Certificates, mutual_gateway: TlsGatewayProcess
) -> None:
    result = s_client(
        mutual_gateway.tls_address,
        workdir=tmp_path,
        certificate=certs.rogue,
        trust=certs.ca.certificate,
        send=options_request(mutual_gateway.tls_port),
    )
    assert "SIP/2.0" not in result.output, result.describe()
    assert "unknown ca" in result.alerts, result.describe()
    mutual_gateway.wait_for_log(
        r"failed \(mutual mode\): certificate verify failed "
        r"\[self-signed certificate \(depth 0\)\]; peer certificate: CN=rogue"
    )


def test_tls_1_1_is_refused(
    tmp_path: Path, certs: Certificates, mutual_gateway: TlsGatewayProcess
) -> None:
    # SECLEVEL=0 lets this OpenSSL client offer TLS 1.1 at all (Debian's default forbids it), so
    # the refusal comes from the gateway, as its log shows.
    result = s_client(
        mutual_gateway.tls_address,
        workdir=tmp_path,
        certificate=certs.phone,
        args=["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
    )
    assert not result.handshake_ok, result.describe()
    assert result.returncode != 0
    mutual_gateway.wait_for_log(r"failed \(mutual mode\): unsupported protocol")


@pytest.mark.parametrize(
    ("key", "cbc", "aead"),
    [
        ("rsa", "ECDHE-RSA-AES128-SHA", "ECDHE-RSA-AES128-GCM-SHA256"),
        ("ecdsa", "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES128-GCM-SHA256"),
    ],
)
def test_cbc_suites_are_refused(
    tmp_path: Path, certs: Certificates, key: str, cbc: str, aead: str
) -> None:
    server = certs.gateway_rsa if key == "rsa" else certs.gateway
    tls = {"certificate": str(server.certificate), "private_key": str(server.key)}
    # The CBC suite offered on purpose.
    allowed = [r"failed \(server-only mode\): no shared cipher"]
    with TlsGatewayProcess(tmp_path / "gw", tls=tls, allowed_warnings=allowed) as gateway:
        refused = s_client(gateway.tls_address, workdir=tmp_path, args=["-tls1_2", "-cipher", cbc])
        assert not refused.handshake_ok, refused.describe()
        gateway.wait_for_log(r"failed \(server-only mode\): no shared cipher")
        accepted = s_client(
            gateway.tls_address,
            workdir=tmp_path,
            trust=certs.ca.certificate,
            args=["-tls1_2", "-cipher", aead],
        )
        assert accepted.handshake_ok, accepted.describe()
        assert f"Cipher is {aead}" in accepted.output, accepted.describe()


def test_generated_certificate_serves_tls_1_3(tmp_path: Path) -> None:
    with TlsGatewayProcess(tmp_path / "gw", tls={"idle_timeout": 1.0}) as gateway:
        result = s_client(
            gateway.tls_address,
            workdir=tmp_path,
            trust=gateway.generated_certificate,  # pinned: the self-signed cert is its own CA
            send=options_request(gateway.tls_port),
        )
        assert "New, TLSv1.3, Cipher is TLS_" in result.output, result.describe()
        assert "Verify return code: 0 (ok)" in result.output, result.describe()
        assert "SIP/2.0 200" in result.output, result.describe()
        # OpenSSL 3.0 prints "ECDSA", 3.5 the TLS 1.3 scheme ("ecdsa_secp256r1_sha256").
        assert re.search(r"Peer signature type: (ECDSA|ecdsa_)", result.output), result.describe()
