"""Known-answer tests for the digest hash functions, HA1 and the response formula."""

from __future__ import annotations

import hashlib

import pytest

from gateway.core.auth import algorithms
from gateway.core.auth.algorithms import DigestAlgorithm, compute_ha1, compute_response

# RFC 7616 §3.9.1 (errata 4495: "Circle of Life", lower-case "of").
RFC7616_USER = "Mufasa"
RFC7616_PASSWORD = "Circle of Life"
RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (
            DigestAlgorithm.SHA_256,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
        ),
        (DigestAlgorithm.MD5, "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1(algorithm: DigestAlgorithm, expected: str) -> None:
    ha1 = compute_ha1(algorithm, RFC7616_USER, RFC7616_REALM, RFC7616_PASSWORD)
    response = compute_response(
        algorithm,
        ha1,
        method="GET",
        uri="/dir/index.html",
        nonce=RFC7616_NONCE,
        qop="auth",
        nc="00000001",
        cnonce=RFC7616_CNONCE,
    )
    assert response == expected


def test_rfc2617_section_3_5_md5() -> None:
    # RFC 2617 §3.5 uses "Circle Of Life" with a capital O.
    ha1 = compute_ha1(DigestAlgorithm.MD5, "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = compute_response(
        DigestAlgorithm.MD5,
        ha1,
        method="GET",
        uri="/dir/index.html",
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


def test_rfc7616_section_3_9_2_sha512_256_with_errata_4897() -> None:
    # The RFC's printed response was computed with a pre-standard SHA-512/256; errata 4897 gives
    # the value for the FIPS 180-4 function. (We do not support userhash; the response does not
    # depend on it.)
    ha1 = compute_ha1(
        DigestAlgorithm.SHA_512_256, "J\u00e4s\u00f8n Doe", "api@example.org", "Secret, or not?"
    )
    response = compute_response(
        DigestAlgorithm.SHA_512_256,
        ha1,
        method="GET",
        uri="/doe.json",
        nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK",
        qop="auth",
        nc="00000001",
        cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v",
    )
    assert response == "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"


SHA512_256_ABC = "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23"  # FIPS 180-4


def test_sha512_256_is_not_truncated_sha512() -> None:
    assert DigestAlgorithm.SHA_512_256.hexdigest(b"abc") == SHA512_256_ABC
    assert hashlib.sha512(b"abc").hexdigest()[:64] != SHA512_256_ABC


def test_sha512_256_falls_back_to_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(algorithms.hashlib, "algorithms_available", set())
    assert algorithms._sha512_256_hex(b"abc") == SHA512_256_ABC


def test_rfc2069_response_has_no_nc_or_cnonce() -> None:
    ha1 = compute_ha1(DigestAlgorithm.MD5, "u", "r", "p")
    ha2 = hashlib.md5(b"REGISTER:sip:r").hexdigest()
    expected = hashlib.md5(f"{ha1}:n:{ha2}".encode()).hexdigest()
    assert compute_response(
        DigestAlgorithm.MD5, ha1, method="REGISTER", uri="sip:r", nonce="n"
    ) == (expected)


def test_qop_without_nc_is_a_local_error() -> None:
    with pytest.raises(ValueError):
        compute_response(DigestAlgorithm.MD5, "x", method="M", uri="u", nonce="n", qop="auth")


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("MD5", DigestAlgorithm.MD5),
        ("md5", DigestAlgorithm.MD5),
        ("sha-256", DigestAlgorithm.SHA_256),
        ("SHA-512-256", DigestAlgorithm.SHA_512_256),
        ("MD5-sess", None),
        ("SHA-1", None),
        ("", None),
    ],
)
def test_algorithm_tokens(token: str, expected: DigestAlgorithm | None) -> None:
    assert DigestAlgorithm.from_token(token) is expected


def test_non_ascii_password_is_utf8() -> None:
    ha1 = compute_ha1(DigestAlgorithm.SHA_256, "u", "r", "p\u00e4ss")
    assert ha1 == hashlib.sha256("u:r:p\u00e4ss".encode()).hexdigest()
