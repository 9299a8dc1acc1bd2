"""The accessors every layer reads a message through (call_id, cseq, top_via, from_, to) give
what Headers.get and the grammar's parsers give, whatever the field names' spelling and however
many fields there are: they read the name index by its key and ask the grammar's LRU caches
directly (docs/benchmarks.md, session 39), and a text too long for the caches is parsed every
time and never held."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.core.sip import grammar
from gateway.core.sip.errors import SipParseError
from gateway.core.sip.headers import NameAddr, Via
from gateway.core.sip.message import Headers, Request, Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.uri import SipUri, get_param

VIA = "SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds"
VIA_2 = "SIP/2.0/UDP 192.0.2.20:5060;branch=z9hG4bKnashds8"
FROM = '"Alice" <sip:alice@example.com>;tag=1928301774'
TO = "<sip:bob@example.com>"
CALL_ID = "a84b4c76e66710@192.0.2.10"
CSEQ = "314159 INVITE"

# accessor -> (field name, the grammar's parse of its first value or None for Call-ID)
ACCESSORS: dict[str, tuple[str, Callable[[str], object] | None]] = {
    "call_id": ("Call-ID", None),
    "cseq": ("CSeq", grammar.parse_cseq_untrusted),
    "top_via": ("Via", grammar.parse_via_untrusted),
    "from_": ("From", grammar.parse_name_addr_untrusted),
    "to": ("To", grammar.parse_name_addr_untrusted),
}


def _expected(headers: Headers, accessor: str) -> object:
    name, parse = ACCESSORS[accessor]
    value = headers.get(name)
    assert value is not None
    return value if parse is None else parse(value)


def _request(fields: tuple[tuple[str, str], ...]) -> Request:
    return Request("INVITE", SipUri(scheme="sip", user="bob", host="example.com"), Headers(fields))


def _response(fields: tuple[tuple[str, str], ...]) -> Response:
    return Response(200, "OK", Headers(fields))


PARSED = parse_message_untrusted(
    (
        "INVITE sip:bob@example.com SIP/2.0\r\n"
        f"v: {VIA}\r\nVia: {VIA_2}\r\nf: {FROM}\r\nt: {TO}\r\ni: {CALL_ID}\r\n"
        f"CSeq: {CSEQ}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    ).encode()
)

# Hand-built fields as code writes them: canonical, lower case, upper case, repeated.
SPELLINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "canonical": (("Via", VIA), ("From", FROM), ("To", TO), ("Call-ID", CALL_ID), ("CSeq", CSEQ)),
    "lower case": (("via", VIA), ("from", FROM), ("to", TO), ("call-id", CALL_ID), ("cseq", CSEQ)),
    "upper case": (("VIA", VIA), ("FROM", FROM), ("TO", TO), ("CALL-ID", CALL_ID), ("CSEQ", CSEQ)),
    "every field twice": (
        ("Via", VIA),
        ("Via", VIA_2),
        ("From", FROM),
        ("From", "<sip:mallory@example.net>;tag=2"),
        ("To", TO),
        ("To", "<sip:eve@example.net>"),
        ("Call-ID", CALL_ID),
        ("Call-ID", "other@192.0.2.99"),
        ("CSeq", CSEQ),
        ("CSeq", "1 BYE"),
    ),
}


@pytest.mark.parametrize("accessor", ACCESSORS)
def test_a_parsed_message_with_compact_names(accessor: str) -> None:
    assert getattr(PARSED, accessor) == _expected(PARSED.headers, accessor)
    assert PARSED.top_via.branch == "z9hG4bK776asdhds"  # the first of the two, not the second


@pytest.mark.parametrize("spelling", SPELLINGS)
@pytest.mark.parametrize("accessor", ACCESSORS)
@pytest.mark.parametrize("build", [_request, _response])
def test_hand_built_fields_the_first_value_whatever_the_spelling(
    build: Callable[[tuple[tuple[str, str], ...]], Request | Response], accessor: str, spelling: str
) -> None:
    message = build(SPELLINGS[spelling])
    assert getattr(message, accessor) == _expected(message.headers, accessor)
    # Before and after the name index is made by another look-up: the same answer.
    assert getattr(build(SPELLINGS[spelling]), accessor) == getattr(message, accessor)


@pytest.mark.parametrize("accessor", ACCESSORS)
def test_a_missing_field_is_named(accessor: str) -> None:
    name = ACCESSORS[accessor][0]
    fields = tuple((n, v) for n, v in SPELLINGS["canonical"] if n != name)
    with pytest.raises(SipParseError, match=f"^missing {name} header$"):
        getattr(_request(fields), accessor)
    with pytest.raises(SipParseError, match=f"^missing {name} header$"):
        getattr(Response(180, "Ringing"), accessor)


@pytest.mark.parametrize(
    ("accessor", "bad"),
    [("cseq", "x INVITE"), ("from_", "<sip:alice@example.com"), ("to", "sip:bob@exa mple.com")],
)
def test_a_malformed_value_raises_the_grammars_error_every_time(accessor: str, bad: str) -> None:
    name, parse = ACCESSORS[accessor]
    assert parse is not None
    with pytest.raises(SipParseError) as direct:
        parse(bad)
    fields = tuple((n, bad if n == name else v) for n, v in SPELLINGS["canonical"])
    for _ in range(2):  # no failure is cached
        with pytest.raises(SipParseError) as read:
            getattr(_request(fields), accessor)
        assert read.value.reason == direct.value.reason


@pytest.mark.parametrize(
    ("accessor", "cached", "long_value"),
    [
        ("cseq", grammar.parse_cseq_cached, "0" * 600 + "1 INVITE"),
        ("from_", grammar.parse_name_addr_cached, f"<sip:alice@example.com>;tag={'a' * 600}"),
        ("to", grammar.parse_name_addr_cached, f"<sip:bob@example.com>;x={'b' * 600}"),
    ],
)
def test_a_text_longer_than_the_cache_takes_is_parsed_and_not_held(
    accessor: str, cached: Callable[[str], object], long_value: str
) -> None:
    name, parse = ACCESSORS[accessor]
    assert parse is not None
    assert len(long_value) > grammar.PARSE_CACHE_MAX_TEXT
    fields = tuple((n, long_value if n == name else v) for n, v in SPELLINGS["canonical"])
    info = cached.cache_info  # type: ignore[attr-defined]
    held = info().currsize
    misses = info().misses
    value = getattr(_request(fields), accessor)
    assert value == parse(long_value)
    assert info().currsize == held
    assert info().misses == misses  # the cache was not asked


PARAMS: dict[str, tuple[tuple[str, str | None], ...]] = {
    "none": (),
    "lower case": (("rport", None), ("NAME", "x"), ("name", "first")),
    "mixed case first": (("Name", "first"), ("name", "second")),
    "upper case": (("NAME", "first"),),
    "a flag": (("name", None), ("name", "second")),
    "another parameter only": (("maddr", "192.0.2.1"), ("names", "x")),
}


def _renamed(
    params: tuple[tuple[str, str | None], ...], name: str
) -> tuple[tuple[str, str | None], ...]:
    spellings = {"name": name, "NAME": name.upper(), "Name": name.title(), "names": name + "s"}
    return tuple((spellings.get(key, key), value) for key, value in params)


@pytest.mark.parametrize("params", PARAMS)
def test_via_branch_and_name_addr_tag_are_get_params_answer(params: str) -> None:
    """Via.branch and NameAddr.tag read their parameters themselves (session 39): the first
    of the name in any case, None for a flag or none, another name that begins alike not."""
    branch_params = _renamed(PARAMS[params], "branch")
    tag_params = _renamed(PARAMS[params], "tag")
    via = Via("UDP", "192.0.2.10", 5060, branch_params)
    named = NameAddr(SipUri(scheme="sip", user="bob", host="example.com"), params=tag_params)
    assert via.branch == get_param(branch_params, "branch")
    assert named.tag == get_param(tag_params, "tag")
