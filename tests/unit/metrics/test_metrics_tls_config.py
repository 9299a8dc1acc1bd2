"""The exporter's TLS keys: files that cannot be used are config errors naming the file, the
table and the key, never key bytes; the context they make refuses old TLS."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from gateway.core.config import ConfigError, structure
from gateway.plugins.metrics import MetricsConfig
from tests.interop.harness.pki import Issued, TestCa, TestPki


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestPki(tmp_path / "pki").ca("Metrics CA")


@pytest.fixture
def server(ca: TestCa) -> Issued:
    return ca.issue("gateway")


def metrics_config(**table: object) -> MetricsConfig:
    return structure(MetricsConfig, table, file="gw.toml", table_name="plugins.metrics")


def refused(**table: object) -> str:
    with pytest.raises(ConfigError) as caught:
        metrics_config(**table)
    message = str(caught.value)
    assert message.startswith("gw.toml: [plugins.metrics]"), message
    return message


def test_a_usable_pair_makes_a_tls_1_2_plus_context(server: Issued, ca: TestCa) -> None:
    config = metrics_config(
        tls_certificate=str(server.certificate), tls_private_key=str(server.key)
    )
    context = config.ssl_context()
    assert context is not None
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_NONE
    assert context.options & ssl.OP_NO_COMPRESSION and context.options & ssl.OP_NO_RENEGOTIATION
    names = {cipher["name"] for cipher in context.get_ciphers()}
    assert not any("CBC" in name or name.endswith("-SHA") for name in names), names
    mutual = metrics_config(
        tls_certificate=str(server.certificate),
        tls_private_key=str(server.key),
        tls_client_ca=str(ca.certificate),
    ).ssl_context()
    assert mutual is not None and mutual.verify_mode == ssl.CERT_REQUIRED
    assert metrics_config().ssl_context() is None


def test_certificate_and_key_go_together(server: Issued, ca: TestCa) -> None:
    assert "tls_private_key: tls_certificate and tls_private_key go together" in refused(
        tls_certificate=str(server.certificate)
    )
    assert "tls_certificate: tls_certificate and tls_private_key go together" in refused(
        tls_private_key=str(server.key)
    )
    assert "tls_client_ca: client certificates need TLS" in refused(
        tls_client_ca=str(ca.certificate)
    )


def test_a_missing_certificate_file_is_named(server: Issued, tmp_path: Path) -> None:
    missing = tmp_path / "nope.crt"
    message = refused(tls_certificate=str(missing), tls_private_key=str(server.key))
    assert f"tls_certificate: cannot read {missing}: No such file or directory" in message


def test_a_certificate_file_without_pem_is_named(server: Issued, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.crt"
    garbage.write_text("not a certificate\n")
    message = refused(tls_certificate=str(garbage), tls_private_key=str(server.key))
    assert f"tls_certificate: {garbage} holds no PEM certificate" in message


def test_a_key_that_is_not_the_certificates_is_named_without_its_bytes(
    server: Issued, ca: TestCa
) -> None:
    other = ca.issue("other")
    message = refused(tls_certificate=str(server.certificate), tls_private_key=str(other.key))
    assert f"tls_private_key: {other.key}: not the private key of {server.certificate}" in message
    assert "key values mismatch" in message.lower()
    key_text = other.key.read_text()
    body = "".join(key_text.splitlines()[1:-1])
    assert body[:24] not in message and "PRIVATE KEY" not in message


def test_a_key_file_that_is_a_certificate_or_missing_is_named(
    server: Issued, tmp_path: Path
) -> None:
    message = refused(
        tls_certificate=str(server.certificate), tls_private_key=str(server.certificate)
    )
    assert f"tls_private_key: {server.certificate}: not the private key of" in message
    missing = tmp_path / "gone.key"
    message = refused(tls_certificate=str(server.certificate), tls_private_key=str(missing))
    assert f"tls_private_key: cannot read {missing}: No such file or directory" in message


def test_an_unreadable_key_is_named(server: Issued, tmp_path: Path) -> None:
    # A directory cannot be read as a file, even by root (CI runs as root: chmod 0 would not do).
    directory = tmp_path / "key.pem"
    directory.mkdir()
    message = refused(tls_certificate=str(server.certificate), tls_private_key=str(directory))
    assert f"tls_private_key: cannot read {directory}: Is a directory" in message


def test_an_encrypted_key_is_refused_without_asking_for_a_passphrase(
    server: Issued, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(server.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    message = refused(tls_certificate=str(server.certificate), tls_private_key=str(encrypted))
    assert f"tls_private_key: {encrypted}: the key is encrypted" in message


def test_a_bad_client_ca_is_named(server: Issued, tmp_path: Path) -> None:
    pair = {"tls_certificate": str(server.certificate), "tls_private_key": str(server.key)}
    missing = tmp_path / "ca.crt"
    assert f"tls_client_ca: cannot read {missing}" in refused(**pair, tls_client_ca=str(missing))
    assert f"tls_client_ca: {server.key} holds no PEM certificate" in refused(
        **pair, tls_client_ca=str(server.key)
    )
