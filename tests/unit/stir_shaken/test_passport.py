"""PASSporT (RFC 8225) and the SHAKEN Identity header (RFC 8224, RFC 8588): canonical JSON,
the JWS compact form, ES256 raw signatures, the untrusted parser's bounds and refusals, the
claims checks and the verstat each outcome gives."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.plugins.stir_shaken.passport import (
    MAX_IDENTITY_HEADER,
    Claims,
    PassportError,
    b64url,
    b64url_decode_untrusted,
    canonical_json,
    canonical_tn,
    check_claims,
    der_signature,
    identity_header,
    parse_identity_untrusted,
    raw_signature,
    sign_passport,
    verify_signature,
    verstat,
)
from gateway.testing.sti_pki import make_identity, read_identity

X5U = "https://cert.example.org/passport.cer"
NOW = 1_443_208_345
KEY = ec.generate_private_key(ec.SECP256R1())
CLAIMS = Claims(attest="A", orig="12155551212", dest=("12155551213",), iat=NOW, origid="id-1")


def test_canonical_json_is_rfc_8225_section_9_known_answer() -> None:
    # RFC 8225 Appendix A (and erratum 5985): the example payload, keys sorted, no whitespace.
    payload = {
        "orig": {"tn": "12155551212"},
        "iat": 1443208345,
        "dest": {"uri": ["sip:alice@example.com"]},
    }
    assert canonical_json(payload) == (
        b'{"dest":{"uri":["sip:alice@example.com"]},"iat":1443208345,"orig":{"tn":"12155551212"}}'
    )
    assert b64url(canonical_json(payload)) == (
        "eyJkZXN0Ijp7InVyaSI6WyJzaXA6YWxpY2VAZXhhbXBsZS5jb20iXX0sImlhdCI6MTQ0MzIwODM0NSwib3JpZyI6"
        "eyJ0biI6IjEyMTU1NTUxMjEyIn19"
    )


def test_es256_raw_signature_known_answer_rfc_7515_a3() -> None:
    # RFC 7515 Appendix A.3: an ES256 JWS and its P-256 key; JOSE signatures are r || s.
    def num(text: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")

    key = ec.EllipticCurvePublicNumbers(
        num("f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU"),
        num("x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"),
        ec.SECP256R1(),
    ).public_key()
    signing_input = (
        b"eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFt"
        b"cGxlLmNvbS9pc19yb290Ijp0cnVlfQ"
    )
    raw = b64url_decode_untrusted(
        "DtEhU3ljbEg8L38VWAfUAqOyKAM6-Xx-F4GawxaepmXFCgfTjDxw5djxLa8ISlSApmWQxfKTUJqPP3-Kg6NU1Q", 64
    )
    key.verify(der_signature(raw), signing_input, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        key.verify(der_signature(raw), signing_input + b"x", ec.ECDSA(hashes.SHA256()))


def test_raw_and_der_signatures_round_trip() -> None:
    der = KEY.sign(b"data", ec.ECDSA(hashes.SHA256()))
    raw = raw_signature(der)
    assert len(raw) == 64
    KEY.public_key().verify(der_signature(raw), b"data", ec.ECDSA(hashes.SHA256()))
    with pytest.raises(PassportError):
        der_signature(raw[:63])


def test_signed_passport_is_a_compact_jws_an_independent_verifier_reads() -> None:
    jws = sign_passport(CLAIMS, X5U, KEY)
    header = identity_header(jws, X5U)
    assert header.endswith(f";info=<{X5U}>;alg=ES256;ppt=shaken")
    jose, claims = read_identity(header, KEY.public_key())
    assert jose == {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U}
    assert claims == {
        "attest": "A",
        "dest": {"tn": ["12155551213"]},
        "iat": NOW,
        "orig": {"tn": "12155551212"},
        "origid": "id-1",
    }
    # Canonical: the encoded parts are exactly the sorted, whitespace-free JSON.
    header_b64, payload_b64, _ = jws.split(".")
    assert b64url_decode_untrusted(payload_b64, 2048) == canonical_json(CLAIMS.payload())
    assert b" " not in b64url_decode_untrusted(header_b64, 512)


def test_round_trip_sign_parse_verify() -> None:
    passport = parse_identity_untrusted(identity_header(sign_passport(CLAIMS, X5U, KEY), X5U))
    assert passport.claims == CLAIMS
    assert passport.x5u == X5U
    verify_signature(passport, KEY.public_key())
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(PassportError) as caught:
        verify_signature(passport, other)
    assert (caught.value.outcome, caught.value.status) == ("bad_signature", 438)


def test_a_header_made_elsewhere_parses_and_verifies() -> None:
    value = make_identity(KEY, X5U, orig="12155551212", dest="12155551213", iat=NOW)
    passport = parse_identity_untrusted(value)
    verify_signature(passport, KEY.public_key())
    check_claims(passport, calling=("+12155551212",), called="+1 215 555 1213", now=NOW + 5)


def test_canonical_tn_drops_plus_and_separators() -> None:
    assert canonical_tn("+1 (215) 555-1212") == "12155551212"
    assert canonical_tn("+4930123456") == "4930123456"


def refused(value: str) -> PassportError:
    with pytest.raises(PassportError) as caught:
        parse_identity_untrusted(value)
    return caught.value


def test_parser_bounds_and_refusals() -> None:
    good = make_identity(KEY, X5U, orig="1", dest="2", iat=NOW)
    jws = good.split(";", 1)[0]
    assert refused("x" * (MAX_IDENTITY_HEADER + 1)).reason == "Identity header too long"
    assert refused("abc").outcome == "malformed"
    assert refused("a..b").outcome == "malformed"
    assert refused(f"{jws};info=<{X5U}>;alg=RS256").status == 437
    assert refused(f"{jws};info=<{X5U}>;ppt=div").outcome == "unsupported"
    assert refused(f"{jws};info={X5U}").outcome == "malformed"
    assert refused(f"{jws};info=<https://other.example/x.pem>").outcome == "malformed"
    # An info URL holding ";" is read whole (and must still be the x5u).
    assert refused(f"{jws};info=<{X5U};v=1>;alg=ES256").reason == "info and x5u differ"
    # A payload past its ceiling is refused before it is decoded.
    header_b64 = jws.split(".")[0]
    assert refused(f"{header_b64}.{'A' * 4000}.{'A' * 86}").outcome == "invalid"
    # Not JSON, not an object, a wrong signature length.
    assert refused(f"{header_b64}.{b64url(b'not json')}.{'A' * 86}").outcome == "malformed"
    assert refused(f"{header_b64}.{b64url(b'[1]')}.{'A' * 86}").outcome == "malformed"
    assert refused(f"{jws[:-4]}").outcome == "malformed"


def test_deeply_nested_json_is_malformed_not_a_recursion_error() -> None:
    # Found by tests/unit/fuzz: 2000 "[" fit MAX_PAYLOAD and made json.loads raise RecursionError.
    header_b64 = make_identity(KEY, X5U, orig="1", dest="2", iat=NOW).split(".")[0]
    assert refused(f"{header_b64}.{b64url(b'[' * 2000)}.{'A' * 86}").outcome == "malformed"


def header_with(jose: dict[str, object]) -> str:
    return make_identity(KEY, X5U, orig="1", dest="2", iat=NOW, header=jose)


def test_header_claims_are_checked() -> None:
    base = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U}
    assert refused(header_with({**base, "alg": "ES384"})).status == 437
    assert refused(header_with({**base, "ppt": "div"})).outcome == "unsupported"
    http = refused(header_with({**base, "x5u": "http://cert.example.org/x.pem"}).split(";")[0])
    assert (http.outcome, http.status) == ("bad_info", 436)


@pytest.mark.parametrize(
    "payload",
    [
        {"attest": "D"},
        {"orig": {"tn": "+1215"}},
        {"orig": {}},
        {"dest": {"tn": []}},
        {"dest": {"tn": ["1"] * 17}},
        {"iat": "1443208345"},
        {"iat": True},
        {"origid": ""},
    ],
)
def test_bad_payloads_are_malformed(payload: dict[str, object]) -> None:
    claims = {**CLAIMS.payload(), **payload}
    jose = b64url(canonical_json({"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": X5U}))
    value = f"{jose}.{b64url(json.dumps(claims).encode())}.{'A' * 86}"
    assert refused(value).outcome == "malformed"


def test_claims_freshness_and_numbers() -> None:
    passport = parse_identity_untrusted(identity_header(sign_passport(CLAIMS, X5U, KEY), X5U))
    calling, called = ("+12155551212",), "+12155551213"
    check_claims(passport, calling=calling, called=called, now=NOW + 60)
    with pytest.raises(PassportError) as stale:
        check_claims(passport, calling=calling, called=called, now=NOW + 61)
    assert (stale.value.outcome, stale.value.status) == ("stale", 403)
    check_claims(passport, calling=calling, called=called, now=NOW + 100, freshness=120)
    # orig may be the P-Asserted-Identity number rather than the From's.
    check_claims(passport, calling=("anonymous", "+12155551212"), called=called, now=NOW)
    for numbers, number in (
        (("+12155550000",), called),
        (calling, "+12155550000"),
        (calling, None),
    ):
        with pytest.raises(PassportError) as wrong:
            check_claims(passport, calling=numbers, called=number, now=NOW)
        assert wrong.value.outcome == "wrong_number"


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        ("passed", "TN-Validation-Passed"),
        ("passed_revocation_unknown", "TN-Validation-Passed"),
        ("no_identity", "No-TN-Validation"),
        ("unsupported", "No-TN-Validation"),
        ("stale", "TN-Validation-Failed"),
        ("bad_signature", "TN-Validation-Failed"),
        ("untrusted", "TN-Validation-Failed"),
        ("bad_info", "TN-Validation-Failed"),
        ("wrong_number", "TN-Validation-Failed"),
        ("malformed", "TN-Validation-Failed"),
        ("revoked", "TN-Validation-Failed"),
        ("revocation_unknown", "TN-Validation-Failed"),
    ],
)
def test_verstat_of_each_outcome(outcome: str, expected: str) -> None:
    assert verstat(outcome) == expected


@pytest.mark.parametrize(
    "x5u",
    ["https://[::1/x.pem", "https://certs.example:99999/x.pem", "https:///x.pem", "https://"],
)
def test_an_x5u_naming_no_host_is_bad_info(x5u: str) -> None:
    """An x5u the URL parser refuses (an unclosed IPv6 bracket, a port out of range) or
    that names no host: refused as bad info (436) when the header is read. On main it passed,
    and urlsplit's ValueError came out of the verification service: a traceback logged for
    each such call ("a caller-identity service failed to check")."""
    base = {"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": x5u}
    error = refused(header_with(base).split(";")[0])
    assert (error.reason, error.outcome, error.status) == (
        "x5u names no host to fetch from",
        "bad_info",
        436,
    )
