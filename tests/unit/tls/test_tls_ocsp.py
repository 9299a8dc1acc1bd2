"""OCSP (RFC 6960) answers checked before a certificate is trusted: status, signer (the issuer,
or a delegated responder with id-kp-OCSPSigning), CertID, time window; the HTTP framing of the
answer; the responder URL; the ``[plugins.tls] ocsp*`` keys. Responses are built with
cryptography's OCSPResponseBuilder."""

from __future__ import annotations

import datetime
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from gateway.core.config import ConfigError, from_mapping
from gateway.core.plugins import Registry, load_plugins
from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import _tls_handshakes
from gateway.plugins.metrics.exposition import Exposition
from gateway.plugins.transports.ocsp import (
    OcspError,
    _expected_total,
    certificate_status_untrusted,
    find_issuer,
    ocsp_request,
    parse_http_response_untrusted,
    parse_http_url,
    responder_url,
)
from gateway.plugins.transports.tls import TlsConfig, TlsTransport
from tests.interop.harness.pki import Issued, TestCa, TestPki

NOW = datetime.datetime.now(datetime.UTC).replace(microsecond=0)


@pytest.fixture
def pki(tmp_path: Path) -> TestPki:
    return TestPki(tmp_path / "pki")


@pytest.fixture
def vendor(pki: TestPki) -> TestCa:
    return pki.ca("Phone Vendor Factory CA")


@pytest.fixture
def phone(vendor: TestCa) -> Issued:
    return vendor.issue("0004f2000001", ocsp_url="http://127.0.0.1:8080/ocsp")


def response(
    phone: Issued,
    ca: TestCa,
    *,
    status: ocsp.OCSPCertStatus = ocsp.OCSPCertStatus.GOOD,
    signer: Issued | None = None,
    this_update: datetime.timedelta = datetime.timedelta(minutes=-5),
    next_update: datetime.timedelta | None = datetime.timedelta(hours=1),
    about: Issued | None = None,
    by_hash: bool = False,
) -> bytes:
    """A DER OCSP response about ``about`` (default ``phone``), signed by the CA (or by
    ``signer``, included in the response)."""
    subject = about or phone
    builder = ocsp.OCSPResponseBuilder().add_response(
        cert=subject.x509,
        issuer=ca.issued.x509,
        algorithm=hashes.SHA1(),
        cert_status=status,
        this_update=NOW + this_update,
        next_update=None if next_update is None else NOW + next_update,
        revocation_time=NOW - datetime.timedelta(days=1)
        if status == ocsp.OCSPCertStatus.REVOKED
        else None,
        revocation_reason=None,
    )
    encoding = ocsp.OCSPResponderEncoding.HASH if by_hash else ocsp.OCSPResponderEncoding.NAME
    if signer is None:
        builder = builder.responder_id(encoding, ca.issued.x509)
        key = ca.private_key
    else:
        builder = builder.responder_id(encoding, signer.x509).certificates([signer.x509])
        key = serialization.load_pem_private_key(signer.key.read_bytes(), None)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def check(data: bytes, phone: Issued, ca: TestCa, *, now: datetime.datetime = NOW) -> str:
    answer = certificate_status_untrusted(
        data, certificate=phone.x509, issuer=ca.issued.x509, now=now.timestamp()
    )
    return answer.status


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (ocsp.OCSPCertStatus.GOOD, "good"),
        (ocsp.OCSPCertStatus.REVOKED, "revoked"),
        (ocsp.OCSPCertStatus.UNKNOWN, "unknown"),
    ],
)
def test_the_status_of_an_answer_signed_by_the_issuer(
    phone: Issued, vendor: TestCa, status: ocsp.OCSPCertStatus, expected: str
) -> None:
    assert check(response(phone, vendor, status=status), phone, vendor) == expected
    assert check(response(phone, vendor, status=status, by_hash=True), phone, vendor) == expected


def test_the_answer_keeps_its_time_window(phone: Issued, vendor: TestCa) -> None:
    answer = certificate_status_untrusted(
        response(phone, vendor),
        certificate=phone.x509,
        issuer=vendor.issued.x509,
        now=NOW.timestamp(),
    )
    assert answer.this_update == (NOW - datetime.timedelta(minutes=5)).timestamp()
    assert answer.next_update == (NOW + datetime.timedelta(hours=1)).timestamp()
    no_next = certificate_status_untrusted(
        response(phone, vendor, next_update=None),
        certificate=phone.x509,
        issuer=vendor.issued.x509,
        now=NOW.timestamp(),
    )
    assert no_next.next_update is None and no_next.status == "good"


def test_a_delegated_responder_with_ocsp_signing_is_taken(phone: Issued, vendor: TestCa) -> None:
    delegate = vendor.responder("vendor OCSP")
    assert check(response(phone, vendor, signer=delegate), phone, vendor) == "good"
    revoked = response(phone, vendor, signer=delegate, status=ocsp.OCSPCertStatus.REVOKED)
    assert check(revoked, phone, vendor) == "revoked"


def test_a_delegated_responder_without_the_eku_is_refused(phone: Issued, vendor: TestCa) -> None:
    # A certificate the CA issued for something else (here a TLS server) must not be able to
    # vouch for a phone (RFC 6960 §4.2.2.2).
    server = vendor.responder("vendor web server", ocsp_signing=False)
    with pytest.raises(OcspError, match="lacks id-kp-OCSPSigning"):
        check(response(phone, vendor, signer=server), phone, vendor)


def test_a_responder_of_another_ca_is_refused(pki: TestPki, phone: Issued, vendor: TestCa) -> None:
    other = pki.ca("Another CA")
    delegate = other.responder("other OCSP")
    with pytest.raises(OcspError, match="not issued by the issuer"):
        check(response(phone, vendor, signer=delegate), phone, vendor)


def test_an_answer_signed_by_another_key_is_refused(
    tmp_path: Path, phone: Issued, vendor: TestCa
) -> None:
    # A CA certificate of the same name with another key (what a forger can make): the answer
    # names the issuer as responder, but the signature is not the issuer's.
    forger = TestPki(tmp_path / "forger").ca("Phone Vendor Factory CA")
    forged = (
        ocsp.OCSPResponseBuilder()
        .add_response(
            cert=phone.x509,
            issuer=vendor.issued.x509,
            algorithm=hashes.SHA1(),
            cert_status=ocsp.OCSPCertStatus.GOOD,
            this_update=NOW,
            next_update=NOW + datetime.timedelta(hours=1),
            revocation_time=None,
            revocation_reason=None,
        )
        .responder_id(ocsp.OCSPResponderEncoding.NAME, forger.issued.x509)
        .sign(forger.private_key, hashes.SHA256())
        .public_bytes(serialization.Encoding.DER)
    )
    with pytest.raises(OcspError, match="does not verify with the issuer's key"):
        check(forged, phone, vendor)


def test_an_answer_about_another_certificate_is_refused(phone: Issued, vendor: TestCa) -> None:
    other_phone = vendor.issue("0004f2000002")
    with pytest.raises(OcspError, match="no matching CertID"):
        check(response(phone, vendor, about=other_phone), phone, vendor)


def test_a_stale_or_future_answer_is_refused_past_the_clock_skew(
    phone: Issued, vendor: TestCa
) -> None:
    stale = response(
        phone,
        vendor,
        this_update=datetime.timedelta(days=-2),
        next_update=datetime.timedelta(hours=-1),
    )
    with pytest.raises(OcspError, match="stale: its nextUpdate"):
        check(stale, phone, vendor)
    # Four minutes past nextUpdate is within the five minutes of skew.
    just_past = response(phone, vendor, next_update=datetime.timedelta(minutes=-4))
    assert check(just_past, phone, vendor) == "good"
    future = response(phone, vendor, this_update=datetime.timedelta(minutes=10))
    with pytest.raises(OcspError, match=r"thisUpdate .* is in the future"):
        check(future, phone, vendor)


def test_garbage_and_error_statuses_are_failures(phone: Issued, vendor: TestCa) -> None:
    with pytest.raises(OcspError, match="no OCSP response"):
        check(b"\x30\x03\x0a\x01", phone, vendor)
    with pytest.raises(OcspError, match="no OCSP response"):
        check(b"<html>busy</html>", phone, vendor)
    try_later = ocsp.OCSPResponseBuilder.build_unsuccessful(
        ocsp.OCSPResponseStatus.TRY_LATER
    ).public_bytes(serialization.Encoding.DER)
    with pytest.raises(OcspError, match="answered TRY_LATER"):
        check(try_later, phone, vendor)
    with pytest.raises(OcspError, match="larger than"):
        check(b"\x30" * 70000, phone, vendor)


def test_the_request_names_the_certificate_by_sha1_cert_id(phone: Issued, vendor: TestCa) -> None:
    request = ocsp.load_der_ocsp_request(ocsp_request(phone.x509, vendor.issued.x509))
    assert request.serial_number == phone.x509.serial_number
    assert isinstance(request.hash_algorithm, hashes.SHA1)
    assert list(request.extensions) == []  # no nonce


def test_the_issuer_is_found_by_name_and_signature(pki: TestPki, phone: Issued) -> None:
    vendor_certificate = x509.load_pem_x509_certificate(
        (pki.directory / "Phone_Vendor_Factory_CA.crt").read_bytes()
    )
    impostor = pki.ca("Phone Vendor Factory CA ")  # another name
    assert find_issuer(phone.x509, [impostor.issued.x509, vendor_certificate]) is not None
    assert find_issuer(phone.x509, [impostor.issued.x509]) is None
    rogue = pki.self_signed("rogue")
    assert find_issuer(rogue.x509, [vendor_certificate]) is None


def test_the_responder_url_comes_from_authority_information_access(
    phone: Issued, vendor: TestCa
) -> None:
    assert responder_url(phone.x509) == "http://127.0.0.1:8080/ocsp"
    assert responder_url(vendor.issue("no-aia").x509) is None
    assert responder_url(vendor.issue("https-only", ocsp_url="https://x.example/").x509) is None


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        ("http://ocsp.vendor.example", ("ocsp.vendor.example", 80, "/")),
        ("http://127.0.0.1:8080/ocsp", ("127.0.0.1", 8080, "/ocsp")),
        ("HTTP://[::1]:2560/a/b", ("::1", 2560, "/a/b")),
    ],
)
def test_responder_urls(url: str, parsed: tuple[str, int, str]) -> None:
    assert parse_http_url(url) == parsed


@pytest.mark.parametrize(
    "url",
    [
        "https://ocsp.example/",
        "ocsp.example",
        "http://",
        "http://a.example:0/",
        "http://a.example:http/",
        "http://user@a.example/",
        "http://a.example/\r\nX-Injected: 1",
        "http://a.example/ a",
        "http://[::1/",
    ],
)
def test_unusable_responder_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_http_url(url)


def test_http_responses() -> None:
    ok = b"HTTP/1.0 200 OK\r\nContent-type: application/ocsp-response\r\nContent-Length: 3\r\n\r\n"
    assert parse_http_response_untrusted(ok + b"abc", complete=False) == b"abc"
    assert parse_http_response_untrusted(ok + b"ab", complete=False) is None
    assert parse_http_response_untrusted(ok[:20], complete=False) is None
    no_length = b"HTTP/1.0 200 OK\r\n\r\nabcd"
    assert parse_http_response_untrusted(no_length, complete=False) is None
    assert parse_http_response_untrusted(no_length, complete=True) == b"abcd"
    for bad, message in [
        (ok + b"ab", "before the whole body"),
        (ok[:20], "inside its header"),
        (b"HTTP/1.0 404 Not Found\r\n\r\n", "answered HTTP 404"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "did not answer with HTTP"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc", "Transfer-Encoding"),
        (b"HTTP/1.0 200 OK\r\nContent-Length: -1\r\n\r\n", "not a number"),
        (b"HTTP/1.0 200 OK\r\nbroken\r\n\r\n", "malformed"),
    ]:
        with pytest.raises(OcspError, match=message):
            parse_http_response_untrusted(bad, complete=True)


def test_repeated_content_lengths_must_agree() -> None:
    # RFC 9112 §6.3 item 5: conflicting values make the length unknowable (the parser used the
    # last and the read loop the first, so each could stop at a different body end).
    head = b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\nContent-Length: %s\r\n\r\nabcdef"
    with pytest.raises(OcspError, match="conflicting Content-Length"):
        parse_http_response_untrusted(head % b"6", complete=True)
    with pytest.raises(OcspError, match="conflicting Content-Length"):
        parse_http_response_untrusted(head % b"6", complete=False)
    assert parse_http_response_untrusted(head % b"3", complete=False) == b"abc"
    assert parse_http_response_untrusted(head % b"03", complete=False) == b"abc"
    received = bytearray(head % b"3")
    assert _expected_total(received, "the responder") == received.find(b"\r\n\r\n") + 4 + 3


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


def test_ocsp_is_off_by_default_and_the_keys_load(vendor: TestCa) -> None:
    default = load({})
    assert (default.ocsp, default.ocsp_timeout, default.ocsp_responder) == ("off", 3.0, None)
    config = load(
        {
            "ca_bundles": [str(vendor.certificate)],
            "ocsp": "hard-fail",
            "ocsp_timeout": 1.5,
            "ocsp_responder": "http://ocsp.vendor.example/",
        }
    )
    assert (config.ocsp, config.ocsp_timeout) == ("hard-fail", 1.5)
    assert config.ocsp_responder == "http://ocsp.vendor.example/"
    assert not default.ocsp_stapling and TlsTransport(default).own_staple is None
    stapling = load({"ocsp_stapling": True})  # independent of ocsp
    assert stapling.ocsp_stapling and TlsTransport(stapling).own_staple is not None


@pytest.mark.parametrize(
    ("table", "with_ca", "message"),
    [
        ({"ocsp": "strict"}, True, "[plugins.tls] ocsp: expected one of 'off'"),
        ({"ocsp": "soft-fail"}, False, "[plugins.tls] ca_bundles: an OCSP request names"),
        ({"ocsp_timeout": 0}, True, "[plugins.tls] ocsp_timeout: expected a number of seconds"),
        ({"ocsp_timeout": 120}, True, "[plugins.tls] ocsp_timeout: expected a number of"),
        ({"ocsp_responder": "http://x.example/"}, True, "ocsp_responder: set ocsp to"),
        ({"ocsp_stapling": "yes"}, True, "[plugins.tls] ocsp_stapling"),
        (
            {"ocsp": "soft-fail", "ocsp_timeout": 10.0},
            True,
            "[plugins.tls] ocsp_timeout: must be below connect_timeout (10 s)",
        ),
        (
            {"ocsp": "hard-fail", "ocsp_timeout": 5.0, "connect_timeout": 4.0},
            True,
            "[plugins.tls] ocsp_timeout: must be below connect_timeout (4 s)",
        ),
        (
            {"ocsp": "soft-fail", "ocsp_responder": "https://x.example/"},
            True,
            "[plugins.tls] ocsp_responder: expected an http:// URL",
        ),
    ],
)
def test_bad_ocsp_keys_are_config_errors_naming_file_table_and_key(
    vendor: TestCa, table: dict[str, Any], with_ca: bool, message: str
) -> None:
    if with_ca:
        table = {**table, "ca_bundles": [str(vendor.certificate)]}
    with pytest.raises(ConfigError) as caught:
        load(table)
    assert "gw.toml" in str(caught.value)
    assert message in str(caught.value)


def tls_metrics(transport: TlsTransport) -> str:
    registry: Registry[object] = Registry("transport")
    registry.add("tls", transport)
    gateway = SimpleNamespace(plugins=SimpleNamespace(transports=registry))
    out = Exposition()
    _tls_handshakes(out, StatusView(gateway, CallStatistics()))  # type: ignore[arg-type]
    return out.render().decode()


def test_the_metric_families(vendor: TestCa) -> None:
    tls = TlsTransport(load({"ca_bundles": [str(vendor.certificate)], "ocsp": "hard-fail"}))
    assert tls.ocsp is not None
    tls.ocsp.queries["failed"] += 3
    tls.handshake_failures["ocsp"] += 2
    tls.ocsp.stapled["invalid"] += 4
    text = tls_metrics(tls)
    assert 'voipgw_tls_ocsp_stapled_total{transport="tls",result="invalid"} 4\n' in text
    assert 'voipgw_tls_ocsp_stapled_total{transport="tls",result="good"} 0\n' in text
    assert 'voipgw_tls_ocsp_queries_total{transport="tls",result="failed"} 3\n' in text
    assert 'voipgw_tls_ocsp_queries_total{transport="tls",result="good"} 0\n' in text
    assert 'voipgw_tls_handshake_failures_total{transport="tls",reason="ocsp"} 2\n' in text
    # Off (the default): no family, no "ocsp" reason, no checker.
    off = TlsTransport(load({}))
    assert off.ocsp is None
    text = tls_metrics(off)
    assert "voipgw_tls_ocsp_queries_total" not in text
    assert "voipgw_tls_ocsp_stapled_total" not in text
    assert 'reason="ocsp"' not in text


def test_a_staple_that_fails_a_check_is_logged_once_per_server(
    vendor: TestCa, phone: Issued, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.plugins.transports.tls")
    tls = TlsTransport(load({"ca_bundles": [str(vendor.certificate)], "ocsp": "soft-fail"}))
    assert tls.ocsp is not None
    target = tls.ocsp.target(phone.x509, vendor.issued.x509)
    assert target is not None
    for remote in [("192.0.2.1", 5061), ("192.0.2.1", 5061), ("192.0.2.2", 5061)]:
        tls._use_stapled(target, b"garbage", remote)
    levels = [r.levelno for r in caplog.records if "stapled is ignored" in r.getMessage()]
    assert levels == [logging.INFO, logging.DEBUG, logging.INFO]
    assert tls.ocsp.stapled["invalid"] == 3
