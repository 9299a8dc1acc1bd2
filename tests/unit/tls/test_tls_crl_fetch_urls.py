"""``[plugins.tls] crl_urls`` and ``crl_distribution_points`` without sockets: the URLs taken
from a certificate's CRL Distribution Points (RFC 5280 §4.2.1.13), the config checks (nothing
fetched), which of a file's and a fetched CRL of one CA wins, and what a fetched CRL must be."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.core.config import ConfigError, from_mapping
from gateway.core.plugins import load_plugins
from gateway.plugins.transports.certificates import CertificateError
from gateway.plugins.transports.crl_fetch import distribution_point_urls
from gateway.plugins.transports.revocation import check_crl_untrusted, load_crl, newer
from gateway.plugins.transports.tls import TlsConfig, TlsTransport
from tests.interop.harness.pki import TestCa, TestPki

DAY = datetime.timedelta(days=1)


@pytest.fixture
def vendor(tmp_path: Path) -> TestCa:
    return TestPki(tmp_path / "pki").ca("Vendor Factory CA")


def with_points(points: list[x509.DistributionPoint]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "phone")])
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now)
        .not_valid_after(now + DAY)
        .add_extension(x509.CRLDistributionPoints(points), critical=False)
        .sign(key, hashes.SHA256())
    )


def point(*urls: str, **kwargs: Any) -> x509.DistributionPoint:
    return x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier(url) for url in urls],
        relative_name=None,
        reasons=kwargs.get("reasons"),
        crl_issuer=kwargs.get("crl_issuer"),
    )


def test_the_http_urls_of_the_distribution_points_are_taken(vendor: TestCa) -> None:
    phone = vendor.issue("phone", hosts=[], crl_url="http://crl.vendor.example/factory.crl")
    assert distribution_point_urls(phone.x509) == ("http://crl.vendor.example/factory.crl",)
    assert distribution_point_urls(vendor.issue("bare", hosts=[]).x509) == ()


def test_ldap_https_partial_and_indirect_points_are_skipped() -> None:
    other_ca = [x509.DirectoryName(x509.Name([]))]
    certificate = with_points(
        [
            point("ldap://dir.example/cn=CA?certificateRevocationList", "https://x.example/a.crl"),
            point("http://x.example/keys.crl", reasons=frozenset({x509.ReasonFlags.superseded})),
            point("http://x.example/indirect.crl", crl_issuer=other_ca),
            point("http://x.example/full.crl", "http://x.example/full.crl", "http://bad host/"),
        ]
    )
    assert distribution_point_urls(certificate) == ("http://x.example/full.crl",)


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


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"crl_urls": ["ftp://crl.example/a.crl"]}, "crl_urls: expected an http:// URL"),
        (
            {"crl_urls": ["http://crl.example/a.crl", "http://crl.example/a.crl"]},
            "crl_urls: lists a URL more than once",
        ),
        ({"crl_urls": ["http://crl.example/a.crl"]}, "crl_urls: each fetched CRL must be signed"),
        ({"crl_distribution_points": True}, "crl_distribution_points: each fetched CRL must"),
    ],
)
def test_bad_fetch_settings_are_config_errors_naming_the_key(
    tls: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tls)
    assert str(caught.value).startswith(f"gw.toml: [plugins.tls] {message}")


def test_the_transport_fetches_nothing_before_it_serves(vendor: TestCa) -> None:
    # What check-config builds: the fetcher knows its URLs, no request is made.
    asked: list[str] = []

    async def get(url: str) -> bytes:
        asked.append(url)
        return b""

    config = load(
        {
            "ca_bundles": [str(vendor.certificate)],
            "crl_urls": ["http://crl.vendor.example/factory.crl"],
        }
    )
    transport = TlsTransport(config, crl_get=get)
    assert transport.crl_fetcher is not None
    assert transport.crl_fetcher.urls() == ("http://crl.vendor.example/factory.crl",)
    assert asked == [] and transport.loaded_crls() == ()
    assert TlsTransport(TlsConfig(ca_bundles=(str(vendor.certificate),))).crl_fetcher is None


def test_the_newer_crl_number_wins_else_the_later_this_update(
    vendor: TestCa, tmp_path: Path
) -> None:
    cas = [vendor.issued.x509]
    now = vendor.pki.now
    old = load_crl(vendor.crl(tmp_path / "a.crl", number=4, this_update=now), cas)
    new = load_crl(vendor.crl(tmp_path / "b.crl", number=5, this_update=now - DAY), cas)
    assert newer(new, old) and not newer(old, new)
    later = load_crl(vendor.crl(tmp_path / "c.crl", number=5, this_update=now), cas)
    assert newer(later, new) and not newer(new, later)
    assert not newer(later, later)


def test_a_fetched_crl_is_checked_as_a_file_is(vendor: TestCa, tmp_path: Path) -> None:
    cas = [vendor.issued.x509]
    url = "http://crl.vendor.example/factory.crl"
    good = vendor.crl(tmp_path / "good.crl", der=True, number=9).read_bytes()
    loaded = check_crl_untrusted(good, url, cas)
    assert (loaded.path, loaded.number, loaded.issuer) == (url, 9, "CN=Vendor Factory CA")
    delta = vendor.crl(tmp_path / "delta.crl", delta=True).read_bytes()
    with pytest.raises(CertificateError, match="a delta CRL"):
        check_crl_untrusted(delta, url, cas)
    with pytest.raises(CertificateError, match="holds no PEM or DER CRL"):
        check_crl_untrusted(b"<html>not found</html>", url, cas)
    other = TestPki(tmp_path / "other").ca("Vendor Factory CA")  # same name, another key
    forged = other.crl(tmp_path / "forged.crl").read_bytes()
    with pytest.raises(CertificateError, match="not signed by a CA certificate in ca_bundles"):
        check_crl_untrusted(forged, url, cas)
