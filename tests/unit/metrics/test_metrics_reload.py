"""The metrics exporter's certificate reload (SIGHUP), without sockets, and the two metric
families it feeds: ``voipgw_certificate_reloads_total`` and
``voipgw_tls_certificate_expiry_time_seconds``."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import ssl
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.core.interfaces import LoadedCertificate, ReloadError
from gateway.plugins.metrics import MetricsConfig, MetricsExporter
from gateway.plugins.metrics.collect import _certificates
from gateway.plugins.metrics.exposition import Exposition
from gateway.plugins.metrics.server import MetricsServer
from tests.interop.harness.pki import Issued, TestCa, TestPki


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestPki(tmp_path / "pki").ca("Metrics CA")


def install(issued: Issued, directory: Path) -> tuple[Path, Path]:
    certificate, key = directory / "metrics.crt", directory / "metrics.key"
    shutil.copyfile(issued.certificate, certificate)
    shutil.copyfile(issued.key, key)
    key.chmod(0o600)
    return certificate, key


def served(context: ssl.SSLContext) -> str:
    """The SHA-256 fingerprint of the certificate a new connection on ``context`` gets: a
    handshake in memory with a client that checks nothing."""
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server)
    server = context.wrap_bio(to_server, to_client, server_side=True)
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
    der = client.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def exporter_for(certificate: Path, key: Path, client_ca: Path | None = None) -> MetricsExporter:
    config = MetricsConfig(
        tls_certificate=str(certificate),
        tls_private_key=str(key),
        tls_client_ca=None if client_ca is None else str(client_ca),
    )
    exporter = MetricsExporter(config)

    # What run() sets up, without its socket.
    async def render() -> bytes:
        return b""

    exporter.server = MetricsServer(
        render, path="/metrics", server="voipgw/test", ssl_context=config.ssl_context()
    )
    return exporter


def test_plain_http_has_nothing_to_reload() -> None:
    exporter = MetricsExporter(MetricsConfig())
    assert exporter.reload_certificates() == ()
    assert exporter.loaded_certificates() == ()


def test_a_reload_serves_new_connections_the_new_certificate(ca: TestCa, tmp_path: Path) -> None:
    a, b = ca.issue("metrics-a"), ca.issue("metrics-b")
    certificate, key = install(a, tmp_path)
    exporter = exporter_for(certificate, key)
    assert exporter.server is not None
    old = exporter.server.ssl_context
    assert old is not None and served(old) == a.fingerprint

    install(b, tmp_path)
    loaded = exporter.reload_certificates()

    assert [c.sha256_fingerprint for c in loaded] == [b.fingerprint]
    assert exporter.loaded_certificates() == loaded
    assert exporter.server.ssl_context is not old
    assert served(exporter.server.ssl_context) == b.fingerprint
    assert served(old) == a.fingerprint


@pytest.mark.parametrize("breakage", ["mismatched key", "empty client CA", "missing certificate"])
def test_a_bad_replacement_keeps_the_context_and_names_key_and_file(
    ca: TestCa, tmp_path: Path, breakage: str
) -> None:
    a, b = ca.issue("metrics-a"), ca.issue("metrics-b")
    certificate, key = install(a, tmp_path)
    client_ca = tmp_path / "prometheus-ca.pem"
    shutil.copyfile(ca.certificate, client_ca)
    exporter = exporter_for(certificate, key, client_ca)
    assert exporter.server is not None
    old = exporter.server.ssl_context

    install(b, tmp_path)
    if breakage == "mismatched key":
        shutil.copyfile(a.key, key)
        expected = f"tls_private_key: {key}: not the private key of {certificate}"
    elif breakage == "empty client CA":
        client_ca.write_text("")
        expected = f"tls_client_ca: {client_ca} holds no PEM certificate"
    else:
        certificate.unlink()
        expected = f"tls_certificate: cannot read {certificate}"

    with pytest.raises(ReloadError) as caught:
        exporter.reload_certificates()

    assert str(caught.value).startswith(expected), str(caught.value)
    for line in a.key.read_text().splitlines() + b.key.read_text().splitlines():
        if "-----" not in line:
            assert line not in str(caught.value)
    assert exporter.server.ssl_context is old
    assert exporter.loaded_certificates() == ()  # run() never ran: nothing was served yet


def certificate(not_after: float) -> LoadedCertificate:
    return LoadedCertificate("/x.crt", "CN=x", "00" * 32, not_before=0.0, not_after=not_after)


def test_reloads_and_expiry_are_shown_per_plugin() -> None:
    status = SimpleNamespace(
        certificate_reloads=lambda: (
            ("tls", "reloaded", 2),
            ("tls", "failed", 1),
            ("metrics", "reloaded", 0),
            ("metrics", "failed", 0),
        ),
        tls_certificates=lambda: (
            ("tls", certificate(1_800_000_000.0)),
            ("tls", certificate(1_790_000_000.0)),
            ("metrics", certificate(1_795_000_000.5)),
        ),
    )
    out = Exposition()
    _certificates(out, status)  # type: ignore[arg-type]
    text = out.render().decode()
    assert "# TYPE voipgw_certificate_reloads_total counter\n" in text
    assert 'voipgw_certificate_reloads_total{plugin="tls",outcome="reloaded"} 2\n' in text
    assert 'voipgw_certificate_reloads_total{plugin="tls",outcome="failed"} 1\n' in text
    assert 'voipgw_certificate_reloads_total{plugin="metrics",outcome="failed"} 0\n' in text
    assert "# TYPE voipgw_tls_certificate_expiry_time_seconds gauge\n" in text
    # The earliest of a plugin's certificates.
    assert 'voipgw_tls_certificate_expiry_time_seconds{plugin="tls"} 1790000000.0\n' in text
    assert 'voipgw_tls_certificate_expiry_time_seconds{plugin="metrics"} 1795000000.5\n' in text


def test_without_certificate_holders_there_is_no_family() -> None:
    status = SimpleNamespace(certificate_reloads=lambda: (), tls_certificates=lambda: ())
    out = Exposition()
    _certificates(out, status)  # type: ignore[arg-type]
    assert out.render() == b""
