"""The gateway's client side of digest (answering a trunk's 401/407), checked against the
gateway's own server side and against the RFC 2069 formula."""

from __future__ import annotations

import pytest

from gateway.core.auth.algorithms import DigestAlgorithm, compute_ha1, compute_response
from gateway.core.auth.client import authorize, parse_challenge_untrusted, usable_challenge
from gateway.core.auth.credentials import parse_credentials_untrusted
from gateway.core.auth.digest import Authenticated, AuthKind, DigestAuthenticator, DigestConfig
from gateway.core.sip.message import Headers, Request, make_response
from gateway.core.sip.uri import SipUri

PASSWORD = "trunk-secret-9"


def invite() -> Request:
    headers = Headers.of(
        [
            ("Via", "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK1"),
            ("From", "<sip:gw@127.0.0.1>;tag=1"),
            ("To", "<sip:+4930123@carrier.test>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 INVITE"),
            ("Max-Forwards", "70"),
        ]
    )
    return Request("INVITE", SipUri("sip", "carrier.test", user="+4930123"), headers)


@pytest.mark.parametrize(
    ("kind", "algorithms"),
    [
        (AuthKind.PROXY, ("SHA-256", "MD5")),
        (AuthKind.WWW, ("MD5",)),
        (AuthKind.WWW, ("SHA-512-256",)),
    ],
)
def test_the_answer_verifies_with_a_digest_server(
    kind: AuthKind, algorithms: tuple[str, ...]
) -> None:
    chosen = tuple(DigestAlgorithm(token) for token in algorithms)
    server = DigestAuthenticator(
        DigestConfig(realm="carrier.test", algorithms=chosen),
        secret=b"k" * 32,
        entropy=lambda n: b"e" * n,
    )
    request = invite()
    challenge = server.challenge(kind, now=10.0)
    response = make_response(request, kind.status, extra=challenge.response_headers())
    answered = authorize(request, response, username="gw", password=PASSWORD, cnonce="c0ffee")
    assert answered is not None
    outcome = server.authenticate(
        answered.headers.get_all(kind.credentials_header),
        kind=kind,
        method="INVITE",
        request_uri=str(answered.uri),
        now=11.0,
        lookup=lambda user, realm, algorithm: compute_ha1(algorithm, user, realm, PASSWORD),
    )
    assert outcome == Authenticated("gw", "carrier.test", chosen[0], "auth")
    # The other header is not set: a 407 is answered in Proxy-Authorization only.
    other = "Authorization" if kind is AuthKind.PROXY else "Proxy-Authorization"
    assert answered.headers.get(other) is None


def test_a_challenge_without_qop_is_answered_the_rfc_2069_way() -> None:
    request = invite()
    response = make_response(
        request,
        401,
        extra=[("WWW-Authenticate", 'Digest realm="pbx", nonce="abc123", opaque="o-1"')],
    )
    answered = authorize(request, response, username="gw", password=PASSWORD, cnonce="c0ffee")
    assert answered is not None
    credentials = parse_credentials_untrusted(answered.headers.get("Authorization") or "")
    assert credentials is not None
    assert credentials.qop is None and credentials.cnonce is None
    assert credentials.opaque == "o-1"
    ha1 = compute_ha1(DigestAlgorithm.MD5, "gw", "pbx", PASSWORD)
    assert credentials.response == compute_response(
        DigestAlgorithm.MD5, ha1, method="INVITE", uri=str(request.uri), nonce="abc123"
    )


def test_the_first_challenge_we_can_answer_is_taken() -> None:
    request = invite()
    response = make_response(
        request,
        407,
        extra=[
            ("Proxy-Authenticate", 'Basic realm="x"'),
            ("Proxy-Authenticate", 'Digest realm="c", nonce="n1", algorithm=SHA-256-sess'),
            ("Proxy-Authenticate", 'Digest realm="c", nonce="n2", qop="auth-int"'),
            ("Proxy-Authenticate", 'Digest realm="c", nonce="n3", algorithm=SHA-256, qop="auth"'),
        ],
    )
    challenge = usable_challenge(response)
    assert challenge is not None and challenge.nonce == "n3"
    assert challenge.algorithm is DigestAlgorithm.SHA_256 and challenge.qop_auth


@pytest.mark.parametrize(
    "value",
    [
        "Basic realm=x",
        "Digest nonce=n",  # no realm
        'Digest realm="r", nonce=""',
        'Digest realm="r", nonce="n", algorithm=AKAv1-MD5',
        'Digest realm="r", nonce="n", qop="auth-int"',
        'Digest realm="r" nonce="n"',  # no comma
        'Digest realm="r", nonce="n", realm="s"',  # repeated
        'Digest realm="' + "r" * 5000 + '", nonce="n"',
    ],
)
def test_challenges_we_cannot_answer_give_none(value: str) -> None:
    assert parse_challenge_untrusted(value) is None
    response = make_response(invite(), 401, extra=[("WWW-Authenticate", value)])
    assert authorize(invite(), response, username="gw", password=PASSWORD, cnonce="c") is None
