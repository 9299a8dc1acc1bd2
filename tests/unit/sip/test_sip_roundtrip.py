"""Property tests: parse(serialize(m)) == m for generated URIs, header values and messages."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.sip.grammar import (
    TOKEN_CHARS,
    parse_name_addr_untrusted,
    parse_uri_untrusted,
    parse_via_untrusted,
    quote,
)
from gateway.core.sip.headers import MAGIC_COOKIE, CSeq, NameAddr, Via
from gateway.core.sip.message import Headers, Request, Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.serializer import serialize_message
from gateway.core.sip.uri import AbsoluteUri, SipUri, TelUri, Uri
from tests.unit.sip.rfc4475_messages import MESSAGES

# RFC 3261 §25.1 character classes, spelled out here independently of the grammar module.
ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
UNRESERVED = ALNUM + "-_.!~*'()"
USER = UNRESERVED + "&=+$,;?/"
PASSWORD = UNRESERVED + "&=+$,"
PARAM = UNRESERVED + "[]/:&+$"
HNV = UNRESERVED + "[]/?:+$"
URIC = UNRESERVED + ";/?:@&=+$,"
HEX = "0123456789abcdefABCDEF"

escape = st.tuples(st.sampled_from(HEX), st.sampled_from(HEX)).map(lambda t: "%" + "".join(t))


def escaped_text(chars: str, *, min_size: int = 1, max_size: int = 10) -> st.SearchStrategy[str]:
    piece = st.one_of(st.sampled_from(chars), escape)
    return st.lists(piece, min_size=min_size, max_size=max_size).map("".join)


token = st.text(alphabet=sorted(TOKEN_CHARS), min_size=1, max_size=12)
label = st.from_regex(r"[a-z]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=4).map(".".join)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6_reference = st.ip_addresses(v=6).map(lambda a: f"[{ipaddress.IPv6Address(a)}]")
host = st.one_of(hostname, ipv4, ipv6_reference)
port = st.one_of(st.none(), st.integers(0, 65535))


@st.composite
def sip_uris(draw: st.DrawFn, *, with_headers: bool = True) -> SipUri:
    user = draw(st.one_of(st.none(), escaped_text(USER)))
    password = draw(st.one_of(st.none(), escaped_text(PASSWORD, min_size=0))) if user else None
    params = draw(
        st.lists(
            st.tuples(escaped_text(PARAM), st.one_of(st.none(), escaped_text(PARAM))), max_size=4
        )
    )
    headers = (
        draw(
            st.lists(
                st.tuples(escaped_text(HNV), escaped_text(HNV, min_size=0)),
                max_size=3,
            )
        )
        if with_headers
        else []
    )
    return SipUri(
        scheme=draw(st.sampled_from(["sip", "sips", "SIP"])),
        host=draw(host),
        user=user,
        password=password,
        port=draw(port),
        params=tuple(params),
        headers=tuple(headers),
    )


@st.composite
def tel_uris(draw: st.DrawFn) -> TelUri:
    if draw(st.booleans()):
        number = "+" + draw(st.from_regex(r"[0-9][0-9().-]{0,14}", fullmatch=True))
    else:
        number = draw(st.from_regex(r"[0-9A-Fa-f*#][0-9A-Fa-f*#().-]{0,10}", fullmatch=True))
    names = st.from_regex(r"[A-Za-z0-9-]{1,10}", fullmatch=True)
    params = draw(st.lists(st.tuples(names, st.one_of(st.none(), escaped_text(PARAM))), max_size=3))
    return TelUri(number=number, params=tuple(params))


absolute_uris = st.builds(
    AbsoluteUri,
    scheme=st.from_regex(r"[a-z][a-z0-9+.-]{0,8}", fullmatch=True).filter(
        lambda s: s not in ("sip", "sips", "tel")
    ),
    opaque=escaped_text(URIC, max_size=20),
)
uris: st.SearchStrategy[Uri] = st.one_of(sip_uris(), tel_uris(), absolute_uris)

# Display names, parameter values and free text: any character but controls (RFC 3261 TEXT-UTF8).
free_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), max_size=20
)
quoted = free_text.map(quote)
gen_value = st.one_of(st.none(), token, quoted)
SPECIAL_VIA_PARAMS = {"branch", "received", "ttl", "maddr", "rport"}
header_params = st.lists(st.tuples(token, gen_value), max_size=4).map(tuple)


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params = draw(
        st.lists(
            st.tuples(token.filter(lambda n: n.lower() not in SPECIAL_VIA_PARAMS), gen_value),
            max_size=3,
        )
    )
    if draw(st.booleans()):
        params.insert(0, ("branch", MAGIC_COOKIE + draw(token)))
    if draw(st.booleans()):
        params.append(("received", draw(st.one_of(ipv4, st.ip_addresses(v=6).map(str)))))
    if draw(st.booleans()):
        params.append(("rport", draw(st.one_of(st.none(), st.integers(0, 65535).map(str)))))
    protocol = draw(st.one_of(st.just("SIP/2.0"), st.tuples(token, token).map("/".join)))
    return Via(
        transport=draw(token),
        host=draw(host),
        port=draw(port),
        params=tuple(params),
        protocol=protocol,
    )


display_names = st.one_of(st.none(), quoted, st.lists(token, min_size=1, max_size=3).map(" ".join))
name_addrs = st.builds(NameAddr, uri=uris, display_name=display_names, params=header_params)
wildcard = st.builds(NameAddr, uri=st.none(), params=header_params, wildcard=st.just(True))
call_ids = st.from_regex(r"[A-Za-z0-9.!%*_+`'~()<>:\\\"/\[\]?{}-]{1,20}(@[a-z0-9.]{1,20})?",
                         fullmatch=True)  # fmt: skip
extension_name = token.map(lambda t: "X-" + t)
extension_value = free_text.map(lambda t: t.strip(" \t"))


@st.composite
def header_fields(draw: st.DrawFn, method: str) -> Headers:
    via_stack = draw(st.lists(vias(), min_size=1, max_size=3))
    fields: list[tuple[str, str]] = [("Via", str(v)) for v in via_stack]
    fields.append(("From", str(draw(name_addrs))))
    fields.append(("To", str(draw(name_addrs))))
    fields.append(("Call-ID", draw(call_ids)))
    fields.append(("CSeq", str(CSeq(draw(st.integers(0, 2**31 - 1)), method))))
    if draw(st.booleans()):
        fields.append(("Max-Forwards", str(draw(st.integers(0, 255)))))
    for contact in draw(st.lists(name_addrs, max_size=2)):
        fields.append(("Contact", str(contact)))
    for route in draw(st.lists(name_addrs, max_size=2)):
        fields.append(("Record-Route", str(route)))
    for name, value in draw(st.lists(st.tuples(extension_name, extension_value), max_size=3)):
        fields.append((name, value))
    return Headers(tuple(draw(st.permutations(fields))))


@st.composite
def requests(draw: st.DrawFn) -> Request:
    method = draw(token)
    return Request(
        method=method,
        uri=draw(st.one_of(sip_uris(with_headers=False), tel_uris())),
        headers=draw(header_fields(method)),
        body=draw(st.binary(max_size=200)),
    )


@st.composite
def responses(draw: st.DrawFn) -> Response:
    return Response(
        status=draw(st.integers(100, 699)),
        reason=draw(free_text),
        headers=draw(header_fields(draw(token))),
        body=draw(st.binary(max_size=200)),
    )


def with_content_length(msg: Request | Response) -> Request | Response:
    """What the parser returns for ``msg``: the serializer always writes Content-Length."""
    return msg.with_headers(msg.headers.set("Content-Length", str(len(msg.body))))


# --- value round trips -----------------------------------------------------------------------


@given(uris)
def test_uri_round_trip(uri: Uri) -> None:
    assert parse_uri_untrusted(str(uri)) == uri


@given(vias())
def test_via_round_trip(via: Via) -> None:
    assert parse_via_untrusted(str(via)) == via


@given(st.one_of(name_addrs, wildcard))
def test_name_addr_round_trip(name_addr: NameAddr) -> None:
    assert parse_name_addr_untrusted(str(name_addr)) == name_addr


# --- message round trips ---------------------------------------------------------------------


@given(requests())
def test_request_round_trip(msg: Request) -> None:
    parsed = parse_message_untrusted(serialize_message(msg))
    assert parsed == with_content_length(msg)
    # The typed view agrees with the values the generator used.
    assert isinstance(parsed, Request)
    assert parsed.cseq.method == msg.method
    assert [str(v) for v in parsed.vias] == list(msg.headers.get_all("Via"))


@given(responses())
def test_response_round_trip(msg: Response) -> None:
    assert parse_message_untrusted(serialize_message(msg)) == with_content_length(msg)


@settings(max_examples=30)
@given(requests())
def test_serialization_is_stable(msg: Request) -> None:
    once = serialize_message(msg)
    assert serialize_message(parse_message_untrusted(once)) == once


def test_rfc4475_valid_messages_survive_a_round_trip() -> None:
    for name, (section, data) in MESSAGES.items():
        if not section.startswith("3.1.1."):
            continue
        msg = parse_message_untrusted(data)
        assert parse_message_untrusted(serialize_message(msg)) == with_content_length(msg), name
