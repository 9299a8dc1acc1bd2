"""``[plugins.tls] crl_files`` without sockets: the checks a CRL file must pass at start-up (a
config error naming file, table and key) and on reload (refused, the previous CRLs kept), the
loud log lines for an out-of-date CRL, and the two metric families."""

from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.core.config import ConfigError, from_mapping
from gateway.core.interfaces import ReloadError
from gateway.core.plugins import Registry, load_plugins
from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import _tls_handshakes
from gateway.plugins.metrics.exposition import Exposition, format_value
from gateway.plugins.transports.revocation import CertificateId, RevokedSerials, load_crl
from gateway.plugins.transports.tls import TlsConfig, TlsTransport
from tests.interop.harness.pki import TestCa, TestPki

TLS_LOG = "gateway.plugins.transports.tls"
DAY = datetime.timedelta(days=1)


def load(tls: dict[str, Any]) -> TlsConfig:
    config = from_mapping(
        {
            "sip": {"listen": ["tls:127.0.0.1:5061"]},
            "plugins": {"enable": ["udp", "tcp", "tls"], "tls": tls},
        },
        file="gw.toml",
    )
    tls_config = load_plugins(config).configs["tls"]
    assert isinstance(tls_config, TlsConfig)
    return tls_config


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


@pytest.fixture
def vendor(pki: TestPki) -> TestCa:
    return pki.ca("Vendor Factory CA")


def config_error(tls: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tls)
    message = str(caught.value)
    assert message.startswith("gw.toml: [plugins.tls] crl_files: ")
    return message


def test_pem_and_der_crls_signed_by_a_bundle_ca_load(
    tmp_path: Path, pki: TestPki, vendor: TestCa
) -> None:
    phone = vendor.issue("phone", hosts=[])
    pem = vendor.crl(tmp_path / "vendor.crl", revoked=[phone])
    der = vendor.crl(tmp_path / "vendor.der", der=True)
    bundle = str(vendor.certificate)
    config = load({"ca_bundles": [bundle], "crl_files": [str(pem)]})
    assert config.crl_files == (str(pem),)
    (loaded,) = TlsTransport(config).loaded_crls()
    assert (loaded.path, loaded.issuer, loaded.revoked) == (str(pem), "CN=Vendor Factory CA", 1)
    assert loaded.next_update == pytest.approx(time.time() + 7 * 86400 - 3600, abs=60)
    (loaded,) = TlsTransport(load({"ca_bundles": [bundle], "crl_files": [str(der)]})).loaded_crls()
    assert loaded.revoked == 0
    assert TlsTransport(load({})).loaded_crls() == ()  # the default: no revocation checking


def test_a_crl_needs_its_ca_in_ca_bundles(tmp_path: Path, pki: TestPki, vendor: TestCa) -> None:
    crl = vendor.crl(tmp_path / "vendor.crl")
    message = config_error({"crl_files": [str(crl)]})
    assert "signed by a CA certificate in ca_bundles; list the CA there" in message

    other = pki.ca("Another CA")
    message = config_error({"ca_bundles": [str(other.certificate)], "crl_files": [str(crl)]})
    assert message.endswith(
        f"{crl}: the CRL of CN=Vendor Factory CA is not signed by a CA certificate in ca_bundles"
    )


def test_a_crl_naming_a_bundle_ca_but_signed_by_another_key_is_refused(
    tmp_path: Path, pki: TestPki, vendor: TestCa
) -> None:
    impostor = TestPki(tmp_path / "impostor").ca("Vendor Factory CA")  # same name, other key
    crl = impostor.crl(tmp_path / "forged.crl")
    message = config_error({"ca_bundles": [str(vendor.certificate)], "crl_files": [str(crl)]})
    assert "is not signed by a CA certificate in ca_bundles" in message


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read it: No such file or directory"),
        (b"not a CRL at all", "holds no PEM or DER CRL"),
        (b"-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n", "holds no PEM or DER CRL"),
    ],
)
def test_unreadable_crl_files_are_config_errors_naming_the_file(
    tmp_path: Path, vendor: TestCa, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "broken.crl"
    if content is not None:
        path.write_bytes(content)
    message = config_error({"ca_bundles": [str(vendor.certificate)], "crl_files": [str(path)]})
    assert message.endswith(f"{path}: {expected}")


def test_delta_ca_only_crls_a_ca_without_crl_sign_and_a_file_listed_twice_are_refused(
    tmp_path: Path, pki: TestPki, vendor: TestCa
) -> None:
    bundle = str(vendor.certificate)
    delta = vendor.crl(tmp_path / "delta.crl", delta=True)
    message = config_error({"ca_bundles": [bundle], "crl_files": [str(delta)]})
    assert "a delta CRL (RFC 5280 §5.2.4); give the complete CRL" in message

    of_cas = vendor.crl(tmp_path / "cas.crl", only_ca_certificates=True)
    message = config_error({"ca_bundles": [bundle], "crl_files": [str(of_cas)]})
    assert "the CRL lists CA certificates only (RFC 5280 §5.2.5)" in message

    no_crl_sign = pki.ca("Signs No CRLs", crl_sign=False)
    crl = no_crl_sign.crl(tmp_path / "nocrlsign.crl")
    message = config_error({"ca_bundles": [str(no_crl_sign.certificate)], "crl_files": [str(crl)]})
    assert "keyUsage without cRLSign" in message

    good = vendor.crl(tmp_path / "vendor.crl")
    message = config_error({"ca_bundles": [bundle], "crl_files": [str(good), str(good)]})
    assert message.endswith("lists a file more than once")


def test_an_expired_crl_at_start_up_is_loaded_and_logged_as_an_error(
    tmp_path: Path, pki: TestPki, vendor: TestCa, caplog: pytest.LogCaptureFixture
) -> None:
    # Started anyway (UDP phones and emergency calls go on), failing closed for that CA's
    # certificates, and said at ERROR: never silently.
    expired = vendor.crl(
        tmp_path / "vendor.crl", this_update=pki.now - 8 * DAY, next_update=7 * DAY
    )
    other = pki.ca("Other Vendor CA")
    bundles = (str(vendor.certificate), str(other.certificate))
    with caplog.at_level(logging.INFO, logger=TLS_LOG):
        transport = TlsTransport(TlsConfig(ca_bundles=bundles, crl_files=(str(expired),)))
    assert len(transport.loaded_crls()) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert f"{expired}: the CRL of CN=Vendor Factory CA expired on" in errors[0]
    assert "every handshake with a certificate of that CA fails" in errors[0]
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any("no CRL in crl_files for the CA CN=Other Vendor CA" in m for m in infos)
    assert not any("CA CN=Vendor Factory CA" in m and "no CRL" in m for m in infos)


def test_a_crl_nobody_refreshed_is_warned_of_before_and_when_it_expires(
    tmp_path: Path, pki: TestPki, vendor: TestCa, caplog: pytest.LogCaptureFixture
) -> None:
    crl = vendor.crl(tmp_path / "vendor.crl", this_update=pki.now - 3 * DAY, next_update=8 * DAY)
    tls = TlsConfig(ca_bundles=(str(vendor.certificate),), crl_files=(str(crl),))
    with caplog.at_level(logging.INFO, logger=TLS_LOG):
        transport = TlsTransport(tls)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    (loaded,) = transport.loaded_crls()
    assert loaded.stale_at == pytest.approx(loaded.next_update - 2 * 86400)

    caplog.clear()
    transport._crl_events_due(loaded.stale_at - 1)
    assert not caplog.records
    transport._crl_events_due(loaded.stale_at + 1)
    transport._crl_events_due(loaded.stale_at + 2)  # once
    (warning,) = [r for r in caplog.records if r.name == TLS_LOG]
    assert warning.levelno == logging.WARNING
    assert "has not been refreshed" in warning.getMessage()

    caplog.clear()
    transport._crl_events_due(loaded.next_update)
    (error,) = [r for r in caplog.records if r.name == TLS_LOG]
    assert error.levelno == logging.ERROR
    assert "the CRL of CN=Vendor Factory CA expired on" in error.getMessage()
    assert transport._crl_events == []


def test_a_reload_reads_the_crls_again_and_refuses_an_out_of_date_or_unsigned_one(
    tmp_path: Path, pki: TestPki, vendor: TestCa
) -> None:
    phone = vendor.issue("phone", hosts=[])
    crl = vendor.crl(tmp_path / "vendor.crl")
    transport = TlsTransport(
        load({"ca_bundles": [str(vendor.certificate)], "crl_files": [str(crl)]})
    )
    (before,) = transport.loaded_crls()
    assert before.revoked == 0

    vendor.crl(crl, revoked=[phone])
    transport.reload_certificates()
    (after,) = transport.loaded_crls()
    assert after.revoked == 1

    # An old file copied over the current one: refused, the current one kept.
    vendor.crl(crl, this_update=pki.now - 10 * DAY, next_update=7 * DAY)
    with pytest.raises(ReloadError) as caught:
        transport.reload_certificates()
    assert str(caught.value).startswith(f"[plugins.tls] crl_files: {crl}: the CRL of CN=Vendor")
    assert "expired on" in str(caught.value)
    assert transport.loaded_crls() == (after,)

    vendor.crl(crl, this_update=pki.now + DAY)  # issued "tomorrow": a clock is wrong
    with pytest.raises(ReloadError, match=r"is not valid before .* \(check the clock\)"):
        transport.reload_certificates()

    TestPki(tmp_path / "impostor").ca("Vendor Factory CA").crl(crl)
    with pytest.raises(ReloadError, match="not signed by a CA certificate in ca_bundles"):
        transport.reload_certificates()
    assert transport.loaded_crls() == (after,)


def test_the_metric_families(tmp_path: Path, vendor: TestCa) -> None:
    crl = vendor.crl(tmp_path / "vendor.crl")
    tls = TlsTransport(load({"ca_bundles": [str(vendor.certificate)], "crl_files": [str(crl)]}))
    tls.handshake_failures["revoked"] += 2
    registry: Registry[object] = Registry("transport")
    registry.add("udp", SimpleNamespace())
    registry.add("tls", tls)
    gateway = SimpleNamespace(plugins=SimpleNamespace(transports=registry))
    status = StatusView(gateway, CallStatistics())  # type: ignore[arg-type]
    out = Exposition()
    _tls_handshakes(out, status)
    text = out.render().decode()
    assert 'voipgw_tls_handshake_failures_total{transport="tls",reason="revoked"} 2\n' in text
    assert 'voipgw_tls_handshake_failures_total{transport="tls",reason="crl"} 0\n' in text
    assert 'voipgw_tls_handshake_failures_total{transport="tls",reason="other"} 0\n' in text
    assert 'voipgw_tls_connections_revoked_total{transport="tls"} 0\n' in text
    (loaded,) = tls.loaded_crls()
    gauge = f'voipgw_tls_crl_next_update_time_seconds{{transport="tls",file="{crl}"}} '
    assert f"{gauge}{format_value(loaded.next_update)}\n" in text

    without = TlsTransport(load({}))
    registry = Registry("transport")
    registry.add("tls", without)
    gateway = SimpleNamespace(plugins=SimpleNamespace(transports=registry))
    out = Exposition()
    _tls_handshakes(out, StatusView(gateway, CallStatistics()))  # type: ignore[arg-type]
    text = out.render().decode()
    assert "voipgw_tls_handshake_failures_total" in text
    assert "voipgw_tls_crl_next_update_time_seconds" not in text  # no crl_files: no family


def test_open_connections_are_matched_by_issuer_name_and_serial(
    tmp_path: Path, pki: TestPki, vendor: TestCa
) -> None:
    # What a reload checks each open connection's certificate with (the connection kept only
    # its issuer Name, DER, and serial number from the handshake).
    stolen, good = vendor.issue("0004f2000002", hosts=[]), vendor.issue("0004f2000001", hosts=[])
    other = pki.ca("Second Vendor CA")
    crl = load_crl(vendor.crl(tmp_path / "v.crl", revoked=[stolen]), [vendor.issued.x509])
    revoked = RevokedSerials([crl])
    assert revoked.revokes(CertificateId.of(stolen.x509))
    assert not revoked.revokes(CertificateId.of(good.x509))
    # The same serial from another CA (no CRL loaded for it): not this CRL's certificate.
    same_serial = CertificateId(other.issued.x509.subject.public_bytes(), stolen.x509.serial_number)
    assert not revoked.revokes(same_serial)
    assert not RevokedSerials([]).revokes(CertificateId.of(stolen.x509))
