"""parse_credentials_untrusted: the RFC examples, lenient spellings, and bounded rejection."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.auth.credentials import (
    DigestCredentials,
    MalformedCredentials,
    parse_credentials_untrusted,
    quote,
)

RFC7616_SHA256 = (
    'Digest username="Mufasa",\r\n'
    '       realm="http-auth@example.org",\r\n'
    '       uri="/dir/index.html",\r\n'
    "       algorithm=SHA-256,\r\n"
    '       nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n'
    "       nc=00000001,\r\n"
    '       cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",\r\n'
    "       qop=auth,\r\n"
    '       response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",\r\n'
    '       opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)

SIP_REGISTER = (
    'Digest username="alice", realm="voipgw.local", nonce="abc", uri="sip:127.0.0.1:5060", '
    'response="0123456789abcdef0123456789abcdef", algorithm=MD5, cnonce="xyz", qop=auth, '
    "nc=0000000a"
)


def parse(value: str) -> DigestCredentials:
    result = parse_credentials_untrusted(value)
    assert result is not None
    return result


def test_rfc7616_example() -> None:
    c = parse(RFC7616_SHA256)
    assert c.username == "Mufasa"
    assert c.realm == "http-auth@example.org"
    assert c.uri == "/dir/index.html"
    assert c.algorithm == "SHA-256"
    assert c.nonce == "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
    assert c.nc == "00000001"
    assert c.nc_value == 1
    assert c.cnonce == "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
    assert c.qop == "auth"
    assert c.response == "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    assert c.opaque == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
    assert c.userhash is False


def test_sip_register_credentials() -> None:
    c = parse(SIP_REGISTER)
    assert (c.username, c.realm, c.uri, c.nc, c.nc_value) == (
        "alice",
        "voipgw.local",
        "sip:127.0.0.1:5060",
        "0000000a",
        10,
    )


def test_repr_hides_the_response() -> None:
    c = parse(SIP_REGISTER)
    assert "0123456789abcdef" not in repr(c)
    assert "alice" in repr(c)


@pytest.mark.parametrize(
    "value",
    [
        'digest username = "alice" ,realm= "voipgw.local",nonce="abc" , uri="sip:x",response="r"',
        'DIGEST\tusername="alice",,realm="voipgw.local",nonce="abc",uri="sip:x",response="r",',
        'Digest username=alice, realm="voipgw.local", nonce=abc, uri=sip:x, response=r',
    ],
)
def test_lenient_whitespace_case_and_tokens(value: str) -> None:
    c = parse(value)
    assert (c.username, c.realm, c.nonce, c.uri, c.response) == (
        "alice",
        "voipgw.local",
        "abc",
        "sip:x",
        "r",
    )
    assert c.qop is None and c.nc is None and c.nc_value is None


def test_quoted_qop_and_algorithm_are_accepted() -> None:
    c = parse(SIP_REGISTER.replace("qop=auth", 'qop="auth"').replace("=MD5", '="MD5"'))
    assert c.qop == "auth"
    assert c.algorithm == "MD5"


def test_escapes_in_quoted_strings() -> None:
    c = parse(r'Digest username="a\"b\\c", realm="r,=x", nonce="n", uri="u", response="r"')
    assert c.username == 'a"b\\c'
    assert c.realm == "r,=x"


def test_quote_round_trips() -> None:
    value = 'He said "hi" \\ bye'
    c = parse(f'Digest username={quote(value)}, realm="r", nonce="n", uri="u", response="x"')
    assert c.username == value


def test_unknown_parameters_are_kept_and_ignored() -> None:
    c = parse(SIP_REGISTER + ', foo="bar", baz=1')
    assert ("foo", "bar") in c.params
    assert ("baz", "1") in c.params


def test_other_schemes_are_not_digest() -> None:
    assert parse_credentials_untrusted("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==") is None
    # RFC 4475 §3.3.7 regaut01 uses an unknown scheme.
    assert parse_credentials_untrusted("NoOneKnowsThisScheme opaque-data=here") is None


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "missing auth scheme"),
        ('Digest username="alice", realm="r", nonce="n", uri="u"', "missing response"),
        ('Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth', "cnonce"),
        (
            'Digest username="a", username="b", realm="r", nonce="n", uri="u", response="x"',
            "repeated",
        ),
        ('Digest realm="r", username="a, nonce=n', "unterminated"),
        ('Digest username="a" realm="r"', "expected ','"),
        ("Digest username", "has no value"),
        ("Digest username=, realm=r", "empty or invalid"),
        ('Digest username="a\x01", realm="r", nonce="n", uri="u", response="x"', "control"),
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth, '
            'cnonce="c", nc=123456789',
            "nc",
        ),
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth, '
            'cnonce="c", nc=0000000g',
            "nc",
        ),
        (
            'Digest username="a", realm="r", nonce="n", uri="u", response="x", userhash=maybe',
            "userhash",
        ),
        ('Digest username="a\\', "escape"),
        ("Digest=x", "whitespace"),
        ("Digest =x", "parameter name"),
    ],
)
def test_malformed(value: str, fragment: str) -> None:
    with pytest.raises(MalformedCredentials) as info:
        parse_credentials_untrusted(value)
    assert fragment in str(info.value)
    assert info.value.status == 400


def test_limits() -> None:
    with pytest.raises(MalformedCredentials, match="longer than"):
        parse_credentials_untrusted(SIP_REGISTER, max_length=len(SIP_REGISTER) - 1)
    assert parse_credentials_untrusted(SIP_REGISTER, max_length=len(SIP_REGISTER)) is not None
    many = SIP_REGISTER + "".join(f", x{i}=1" for i in range(30))
    with pytest.raises(MalformedCredentials, match="more than 32"):
        parse_credentials_untrusted(many)


def test_errors_never_echo_the_value() -> None:
    secretish = "hunter2-response-value"
    value = f'Digest username="a", response="{secretish}", response="{secretish}"'
    with pytest.raises(MalformedCredentials) as info:
        parse_credentials_untrusted(value)
    assert secretish not in str(info.value)
    assert secretish not in repr(info.value)


@given(st.text(max_size=300))
def test_arbitrary_text_never_raises_anything_else(value: str) -> None:
    try:
        result = parse_credentials_untrusted("Digest " + value)
    except MalformedCredentials:
        return
    assert result is None or isinstance(result, DigestCredentials)


_printable = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"),
    min_size=1,
    max_size=40,
)


@given(username=_printable, realm=_printable, nonce=_printable, uri=_printable)
def test_quoted_values_round_trip(username: str, realm: str, nonce: str, uri: str) -> None:
    value = (
        f"Digest username={quote(username)}, realm={quote(realm)}, nonce={quote(nonce)}, "
        f'uri={quote(uri)}, response="00"'
    )
    c = parse(value)
    assert (c.username, c.realm, c.nonce, c.uri) == (username, realm, nonce, uri)
