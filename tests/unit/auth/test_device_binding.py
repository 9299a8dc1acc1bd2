from __future__ import annotations

import pytest

from gateway.core.auth.device_binding import check_device, common_name
from gateway.core.store.interface import Account, CertificateMatch
from gateway.core.transport.flows import PeerCertificate

FP_X = "ab" * 32
FP_Y = "cd" * 32


def cert(
    fingerprint: str = FP_X,
    *,
    subject: str = "CN=00:15:65:aa:bb:cc,O=Acme",
    issuer: str = "CN=Acme Factory CA,O=Acme",
    verified: bool = True,
    sans: tuple[str, ...] = (),
) -> PeerCertificate:
    return PeerCertificate(fingerprint, subject, issuer, verified, sans)


def account(*matches: tuple[str, str], require_tls: bool = False) -> Account:
    return Account(
        name="alice",
        require_tls=require_tls,
        certificate_matches=tuple(CertificateMatch(k, v) for k, v in matches),
    )


def test_unbound_account_is_usable_anywhere() -> None:
    assert check_device(account(), secure=False, certificate=None) is None


def test_require_tls_refuses_plain_transports() -> None:
    refused = check_device(account(require_tls=True), secure=False, certificate=None)
    assert refused is not None and "TLS" in refused.reason
    assert check_device(account(require_tls=True), secure=True, certificate=None) is None


def test_fingerprint_binding() -> None:
    bound = account(("fingerprint", FP_X))
    assert check_device(bound, secure=True, certificate=cert(FP_X, verified=False)) is None
    other = check_device(bound, secure=True, certificate=cert(FP_Y))
    assert other is not None and "not bound" in other.reason
    none = check_device(bound, secure=False, certificate=None)
    assert none is not None and "requires its device certificate" in none.reason


@pytest.mark.parametrize(
    ("value", "presented", "ok"),
    [
        ("00:15:65:aa:bb:cc", cert(), True),
        ("00:15:65:aa:bb:cc|Acme Factory CA", cert(), True),
        ("00:15:65:aa:bb:cc|Other CA", cert(), False),
        ("00:15:65:aa:bb:cc", cert(verified=False), False),
        ("00:15:65:aa:bb:cd", cert(), False),
        ("phone7.example.net", cert(sans=("phone7.example.net",)), True),
    ],
)
def test_subject_binding(value: str, presented: PeerCertificate, ok: bool) -> None:
    result = check_device(account(("subject", value)), secure=True, certificate=presented)
    assert (result is None) is ok


def test_common_name_handles_escaped_commas() -> None:
    assert common_name("CN=Doe\\, John,O=Acme") == "Doe\\, John"
    assert common_name("O=Acme") == "O=Acme"
