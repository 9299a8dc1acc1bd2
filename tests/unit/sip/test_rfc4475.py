"""RFC 4475 torture tests at the parser layer: every message, its verdict, and exact values.

Each message is fed to :func:`parse_message_untrusted` as one UDP datagram. Valid messages
(§3.1.1) must parse with every header right; invalid ones (§3.1.2) must raise with the status RFC
4475 asks for (400 naming the defect, 505, or discard for responses). §3.2-§3.4 messages are
syntactically valid or carry defects the parser already sees; the comments say which layer gives
the rest of the RFC 4475 answer.
"""

from __future__ import annotations

import hashlib

import pytest

from gateway.core.sip.errors import SipParseError
from gateway.core.sip.grammar import unquote
from gateway.core.sip.message import Request, Response
from gateway.core.sip.parser import parse_message_untrusted, salvage_request_headers
from gateway.core.sip.uri import AbsoluteUri, SipUri
from tests.unit.sip.rfc4475_messages import MESSAGES

# shared/specs/sip-robustness.md §1: size and SHA-256 prefix of each RFC 4475 Appendix A file.
CATALOGUE: dict[str, tuple[str, int, str]] = {
    "wsinv": ("3.1.1.1", 1001, "d6f6cdee99cd0a1f"),
    "intmeth": ("3.1.1.2", 641, "b957a8292c1c0a98"),
    "esc01": ("3.1.1.3", 543, "be3a316d4ce5f69c"),
    "escnull": ("3.1.1.4", 359, "263fe2ecd12a5ccb"),
    "esc02": ("3.1.1.5", 439, "9a9c59449f00327b"),
    "lwsdisp": ("3.1.1.6", 255, "d1b36b6316c12824"),
    "longreq": ("3.1.1.7", 3515, "185739292bc67676"),
    "dblreq": ("3.1.1.8", 750, "a6be48426565c2a7"),
    "semiuri": ("3.1.1.9", 380, "87bbaed6b4b354db"),
    "transports": ("3.1.1.10", 503, "33b4553a3b941812"),
    "mpart01": ("3.1.1.11", 1290, "92147c8e24997bac"),
    "unreason": ("3.1.1.12", 526, "4f939d6ebf4817ee"),
    "noreason": ("3.1.1.13", 274, "07e11e470a69fffa"),
    "badinv01": ("3.1.2.1", 472, "9ee2b88f2e0b5a9e"),
    "clerr": ("3.1.2.2", 498, "d9da629086a38df4"),
    "ncl": ("3.1.2.3", 486, "7ea6538edc1f054f"),
    "scalar02": ("3.1.2.4", 476, "53158177326568e9"),
    "scalarlg": ("3.1.2.5", 385, "0957eca31737e359"),
    "quotbal": ("3.1.2.6", 485, "e61978a2ea359fc6"),
    "ltgtruri": ("3.1.2.7", 452, "bcacb2dc17610e8c"),
    "lwsruri": ("3.1.2.8", 541, "3e22ceeca585ad23"),
    "lwsstart": ("3.1.2.9", 506, "f884e5626c6c5b12"),
    "trws": ("3.1.2.10", 327, "64ae20694026e28c"),
    "escruri": ("3.1.2.11", 550, "c3cf30af13a9d107"),
    "baddate": ("3.1.2.12", 532, "1208a6e3e0c8a8c3"),
    "regbadct": ("3.1.2.13", 307, "575d27530275814c"),
    "badaspec": ("3.1.2.14", 346, "f8f6e2f4247287b0"),
    "baddn": ("3.1.2.15", 333, "4768517cb1c40f60"),
    "badvers": ("3.1.2.16", 291, "037d702d19e934bf"),
    "mismatch01": ("3.1.2.17", 236, "a2c285636e451e75"),
    "mismatch02": ("3.1.2.18", 449, "01b287f9a9c492f7"),
    "bigcode": ("3.1.2.19", 332, "f79450070975da54"),
    "badbranch": ("3.2.1", 262, "cb049c727f16b5ec"),
    "insuf": ("3.3.1", 304, "1e3efd9f3b238c63"),
    "unkscm": ("3.3.2", 291, "81be1a6a566c7ab5"),
    "novelsc": ("3.3.3", 277, "9a50a7343fcf685e"),
    "unksm2": ("3.3.4", 282, "f6914409ced613ef"),
    "bext01": ("3.3.5", 381, "57181987c02c4f57"),
    "invut": ("3.3.6", 391, "9b39e824947df46f"),
    "regaut01": ("3.3.7", 304, "885ba0488872cfc0"),
    "multi01": ("3.3.8", 643, "d156ab12105b4bfd"),
    "mcl01": ("3.3.9", 382, "887191619bf003b7"),
    "bcast": ("3.3.10", 516, "073637c635971991"),
    "zeromf": ("3.3.11", 272, "50954ef47acca4f9"),
    "cparam01": ("3.3.12", 321, "dfa6b5cdb289adc6"),
    "cparam02": ("3.3.13", 311, "e93574215bd1d804"),
    "regescrt": ("3.3.14", 302, "dab4087c133348b0"),
    "sdp01": ("3.3.15", 494, "497c5f1ced6c7b57"),
    "inv2543": ("3.4.1", 445, "76fac8afe22dee49"),
}


def data(name: str) -> bytes:
    return MESSAGES[name][1]


def request(name: str) -> Request:
    msg = parse_message_untrusted(data(name))
    assert isinstance(msg, Request)
    return msg


def response(name: str) -> Response:
    msg = parse_message_untrusted(data(name))
    assert isinstance(msg, Response)
    return msg


def rejection(name: str) -> SipParseError:
    with pytest.raises(SipParseError) as info:
        parse_message_untrusted(data(name))
    return info.value


# --- the bytes are RFC 4475's ---------------------------------------------------------------


def test_catalogue_is_complete() -> None:
    assert len(CATALOGUE) == 49
    assert set(MESSAGES) == set(CATALOGUE)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_bytes_match_the_published_digest(name: str) -> None:
    section, size, prefix = CATALOGUE[name]
    assert MESSAGES[name][0] == section
    assert len(data(name)) == size
    assert hashlib.sha256(data(name)).hexdigest()[:16] == prefix


# --- §3.1.1 valid messages: parse, with every header right ---------------------------------

VALID = [name for name, (section, _, _) in CATALOGUE.items() if section.startswith("3.1.1.")]


@pytest.mark.parametrize("name", VALID)
def test_valid_message_parses(name: str) -> None:
    msg = parse_message_untrusted(data(name))
    # The typed accessors must all work on an accepted message.
    assert msg.vias
    assert msg.from_.uri is not None
    assert msg.to.uri is not None
    assert msg.call_id
    assert msg.cseq.number >= 0
    msg.contacts  # noqa: B018 -- must not raise
    msg.routes  # noqa: B018


def test_wsinv_short_tortuous_invite() -> None:
    msg = request("wsinv")
    assert msg.method == "INVITE"
    assert msg.uri == SipUri(
        "sip", "chair-dnrc.example.com", user="vivekg", params=(("unknownparam", None),)
    )
    # To: addr-spec over a folded line, tag with LWS around "=".
    assert msg.to.display_name is None
    assert msg.to.tag == "1918181833n"
    assert msg.to.uri == SipUri("sip", "chair-dnrc.example.com", user="vivekg")
    # From: quoted display name ending in an escaped backslash and an escaped quote.
    assert msg.from_.display_name == '"J Rosenberg \\\\\\""'
    assert unquote(msg.from_.display_name) == 'J Rosenberg \\"'
    assert msg.from_.tag == "98asjd8"
    assert msg.max_forwards == 68
    assert msg.call_id == "wsinv.ndaksdj@192.0.2.1"
    assert (msg.cseq.number, msg.cseq.method) == (9, "INVITE")
    # One Via header, then "v:" with two comma-separated, folded values.
    vias = msg.vias
    assert len(vias) == 3
    assert [(v.protocol, v.transport, v.host, v.branch) for v in vias] == [
        ("SIP/2.0", "UDP", "192.0.2.2", "390skdjuw"),
        ("SIP/2.0", "TCP", "spindle.example.com", "z9hG4bK9ikj8"),
        ("SIP/2.0", "UDP", "192.168.255.111", "z9hG4bK30239"),
    ]
    assert msg.headers.get("Subject") == ""  # "s :" with an empty value
    assert msg.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert msg.headers.get("UnknownHeaderWithUnusualValue") == ";;,,;;,;"
    (route,) = msg.routes
    assert isinstance(route.uri, SipUri) and route.uri.lr
    assert route.uri.params == (("lr", None), ("unknownwith", "value"), ("unknown-no-value", None))
    (contact,) = msg.contacts
    assert contact.display_name == '"Quoted string \\"\\""'
    assert contact.params == (("newparam", "newvalue"), ("secondparam", None), ("q", "0.33"))
    assert msg.headers.get("Content-Length") == "150"
    assert msg.content_type == "application/sdp"
    assert len(msg.body) == 150
    assert msg.body.startswith(b"v=0\r\n") and msg.body.endswith(b"a=rtpmap:31 LPC\r\n")


def test_intmeth_wide_range_of_valid_characters() -> None:
    msg = request("intmeth")
    method = "!interesting-Method0123456789_*+`.%indeed'~"
    assert msg.method == method
    assert msg.cseq.method == method
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert msg.uri.password == "&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    assert msg.uri.host == "example.com"
    assert msg.top_via.branch == "z9hG4bK-.!%66*_+`'~"
    # Quoted-pairs may escape BEL, NUL and DEL.
    assert msg.to.display_name == '"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7f"'
    assert unquote(msg.to.display_name) == "BEL:\x07 NUL:\x00 DEL:\x7f"
    assert msg.from_.display_name == "token1~` token2'+_ token3*%!.-"
    assert msg.from_.param("fromParam''~+*_!.-%") == '"работающий"'
    assert msg.from_.tag == "_token~1'+`*%!-."
    assert msg.call_id == "intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{"
    assert msg.max_forwards == 255
    assert msg.headers.get("extensionHeader-!.%*+_`'~") == "\ufeff大停電"
    assert msg.body == b""


def test_esc01_escaped_uris_are_kept_escaped() -> None:
    msg = request("esc01")
    assert isinstance(msg.uri, SipUri)
    assert msg.uri.user == "sips%3Auser%40example.com"
    assert msg.uri.host == "example.net"
    assert isinstance(msg.to.uri, SipUri) and msg.to.uri.user == "%75se%72"
    assert isinstance(msg.from_.uri, SipUri) and msg.from_.uri.user == "I%20have%20spaces"
    assert msg.call_id == "esc01.239409asdfakjkn23onasd0-3234"  # compact "i"
    assert msg.content_type == "application/sdp"  # compact "C"
    (contact,) = msg.contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.user == "cal%6Cer"
    assert contact.uri.params == (("%6C%72", None), ("n%61me", "v%61lue%25%34%31"))
    assert len(msg.body) == 150


def test_escnull_escaped_nulls() -> None:
    msg = request("escnull")
    assert isinstance(msg.to.uri, SipUri) and msg.to.uri.user == "null-%00-null"
    assert isinstance(msg.from_.uri, SipUri) and msg.from_.uri.user == "null-%00-null"
    users = [c.uri.user for c in msg.contacts if isinstance(c.uri, SipUri)]
    assert users == ["%00", "%00%00"]
    assert msg.headers.get("Content-Length") == "0"  # "L:0"


def test_esc02_percent_that_is_not_an_escape() -> None:
    msg = request("esc02")
    assert msg.method == "RE%47IST%45R"  # not REGISTER: methods are compared as written
    assert msg.cseq.method == "RE%47IST%45R"
    assert msg.to.display_name == '"%Z%45"'
    assert msg.top_via.branch == "z9hG4bK209%fzsnel234"
    # "C%6Fntact" is an unknown header, not a Contact.
    assert [c.uri for c in msg.contacts] == [
        SipUri("sip", "host1.example.com", user="alias1"),
        SipUri("sip", "host3.example.com", user="alias3"),
    ]
    assert msg.headers.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_lwsdisp_no_lws_before_laquot() -> None:
    msg = request("lwsdisp")
    assert msg.from_.display_name == "caller"
    assert msg.from_.tag == "323"
    assert msg.from_.uri == SipUri("sip", "example.com", user="caller")


def test_longreq_long_values_and_many_vias() -> None:
    msg = request("longreq")
    vias = msg.vias
    assert len(vias) == 34
    assert vias[0].host == "sip33.example.com"
    assert vias[32].host == "sip1.example.com"
    assert vias[33].received == "192.0.2.5"
    assert vias[33].branch == "very" + "long" * 50 + "branchvalue"
    assert msg.to.display_name == ('"I have a user name of ' + "extreme" * 10 + ' proportion"')
    assert isinstance(msg.to.uri, SipUri) and msg.to.uri.port == 6000
    assert msg.from_.tag is not None and len(msg.from_.tag) > 150
    assert msg.call_id.startswith("longreq.one") and msg.call_id.endswith("longcallid")
    assert len(msg.body) == 150


def test_dblreq_ignores_octets_after_content_length() -> None:
    msg = request("dblreq")
    assert msg.method == "REGISTER"
    assert msg.body == b""
    assert msg.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert b"INVITE sip:joe@example.com" in data("dblreq")  # the ignored second request


def test_semiuri_semicolon_in_user_part() -> None:
    msg = request("semiuri")
    assert msg.uri == SipUri("sip", "example.com", user="user;par=u%40example.net")
    assert msg.headers.get_all("Accept") == (
        "application/sdp",
        "application/pkcs7-mime",
        "multipart/mixed",
        "multipart/signed",
        "message/sip",
        "message/sipfrag",
    )


def test_transports_unknown_transport_tokens() -> None:
    msg = request("transports")
    assert [v.transport for v in msg.vias] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    assert msg.call_id == "transports.kijh4akdnaqjkwendsasfdj"


def test_mpart01_binary_body_with_bare_lf() -> None:
    raw = data("mpart01")
    msg = request("mpart01")
    assert msg.method == "MESSAGE"
    assert len(msg.body) == 553
    assert msg.body == raw[raw.index(b"\r\n\r\n") + 4 :]
    assert msg.body.startswith(b"--7a9cbec02ceef655\r\nContent-Type: text/plain\r\n")
    assert msg.body.endswith(b"--7a9cbec02ceef655--\r\n")
    bare_lf = [i for i, b in enumerate(msg.body) if b == 0x0A and msg.body[i - 1] != 0x0D]
    assert bare_lf  # the binary part contains LF octets that are not line ends
    assert msg.content_type == "multipart/mixed;boundary=7a9cbec02ceef655"
    assert msg.top_via.has_rport and msg.top_via.port == 5070


def test_unreason_utf8_reason_phrase() -> None:
    msg = response("unreason")
    assert msg.status == 200
    assert msg.reason == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert len(msg.body) == 154


def test_noreason_empty_reason_phrase() -> None:
    msg = response("noreason")
    assert msg.status == 100
    assert msg.reason == ""
    assert msg.to.tag == "902jndnke3"


# --- §3.1.2 invalid messages: 400 naming the defect, 505, or discard -----------------------

INVALID: list[tuple[str, int | None, str]] = [
    ("badinv01", 400, "bad Via: empty element"),  # ";;,;,," in Via; Contact ";;;;"
    ("clerr", 400, "Content-Length larger than the message body"),
    ("ncl", 400, "bad Content-Length"),  # -999
    ("scalar02", 400, "bad CSeq: sequence number must be below 2**31"),
    ("scalarlg", None, "bad CSeq"),  # a response: discard
    ("quotbal", 400, "bad To: unterminated quoted string"),
    ("ltgtruri", 400, "bad Request-URI"),  # <> around the Request-URI
    ("lwsruri", 400, "whitespace inside the Request-URI"),
    ("lwsstart", 400, "extra whitespace in the Request-Line"),
    ("trws", 400, "whitespace at the end of the Request-Line"),
    ("escruri", 400, "Request-URI must not contain headers"),
    ("regbadct", 400, "bad Contact: URI with '?' or ',' must be enclosed in '<>'"),
    ("badaspec", 400, "bad To: whitespace inside a URI"),
    ("baddn", 400, "bad From: display name is neither a token list nor a quoted string"),
    ("badvers", 505, "SIP version not supported"),
    ("mismatch01", 400, "CSeq method does not match the Request-Line"),
    ("mismatch02", 400, "CSeq method does not match the Request-Line"),
    ("bigcode", None, "status code must be 100..699"),  # a response: discard
]


@pytest.mark.parametrize(("name", "status", "reason"), INVALID)
def test_invalid_message_is_rejected(name: str, status: int | None, reason: str) -> None:
    err = rejection(name)
    assert err.status == status
    assert err.discard is (status is None)
    assert err.reason.startswith(reason)
    assert "\r" not in err.reason and "\n" not in err.reason


def test_every_invalid_section_has_a_verdict() -> None:
    invalid = {n for n, (s, _, _) in CATALOGUE.items() if s.startswith("3.1.2.")}
    # baddate is the one §3.1.2 message the parser accepts (see below).
    assert invalid == {name for name, _, _ in INVALID} | {"baddate"}


def test_baddate_is_accepted() -> None:
    # RFC 4475 §3.1.2.12: "EST" is not a valid Date time zone, and an element may accept the
    # message anyway. A gateway never interprets Date, so the parser keeps the value as written.
    msg = request("baddate")
    assert msg.headers.get("Date") == "Fri, 01 Jan 2010 16:00:00 EST"
    assert len(msg.body) == 150


@pytest.mark.parametrize(
    "name", [name for name, status, _ in INVALID if status is not None] + ["insuf", "unkscm"]
)
def test_rejected_requests_can_still_be_answered(name: str) -> None:
    # RFC 3261 §8.2.6: the 400/505/416 reply needs the Via stack, From, To, Call-ID and CSeq.
    salvaged = salvage_request_headers(data(name))
    assert salvaged is not None
    assert salvaged.get("Via") is not None
    assert salvaged.get("Call-ID") is not None or name == "insuf"  # insuf has no Call-ID


def test_salvage_keeps_only_fields_that_parse() -> None:
    salvaged = salvage_request_headers(data("scalar02"))
    assert salvaged is not None
    assert salvaged.get("CSeq") is None  # 36893488147419103232 is out of range
    assert salvaged.get("From") == "<sip:user@example.com>;tag=239232jh3"
    assert salvaged.get_all("Via") == ("SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3",)
    # badinv01's only Via has broken parameters: the sent-by is kept so the 400 can be routed.
    badinv01 = salvage_request_headers(data("badinv01"))
    assert badinv01 is not None
    assert badinv01.get_all("Via") == ("SIP/2.0/UDP 192.0.2.15",)
    quotbal = salvage_request_headers(data("quotbal"))
    assert quotbal is not None and quotbal.get("To") is None
    assert quotbal.get("CSeq") == "8 INVITE"


@pytest.mark.parametrize("name", ["scalarlg", "bigcode", "unreason"])
def test_nothing_is_salvaged_from_responses(name: str) -> None:
    assert salvage_request_headers(data(name)) is None


# --- §3.2 transaction layer, §3.3 application layer, §3.4 backward compatibility -----------


def test_badbranch_parses() -> None:
    # §3.2.1: branch is exactly the magic cookie. Parsing is fine; the transaction layer must
    # still match it (it is an RFC 3261 branch with an empty identifier).
    msg = request("badbranch")
    assert msg.top_via.branch == "z9hG4bK"


def test_insuf_missing_required_headers_is_400() -> None:
    # §3.3.1 asks for 400; the parser checks the mandatory headers, so it answers here.
    err = rejection("insuf")
    assert (err.status, err.reason) == (400, "missing From header")


@pytest.mark.parametrize("name", ["unkscm", "novelsc"])
def test_unsupported_request_uri_scheme_is_416(name: str) -> None:
    # §3.3.2 (unknown scheme) and §3.3.3 (soap.beep, known elsewhere but not served by a SIP
    # gateway): the parser answers 416 for any Request-URI that is not sip, sips or tel.
    err = rejection(name)
    assert (err.status, err.reason) == (416, "Unsupported URI Scheme")


def test_unksm2_unknown_schemes_in_header_fields_parse() -> None:
    # §3.3.4: non-SIP URIs in To/From/Contact are legal; what a registrar does with a
    # "name:" Contact is the UAS core's decision.
    msg = request("unksm2")
    assert msg.to.uri == AbsoluteUri("isbn", "2983792873")
    assert msg.from_.uri == AbsoluteUri("http", "//www.example.com")
    assert msg.from_.tag == "3234233"
    assert [c.uri for c in msg.contacts] == [AbsoluteUri("name", "John_Smith")]


def test_bext01_unknown_extensions_parse() -> None:
    # §3.3.5: the UAS core answers 420 with Unsupported listing the Require option-tags
    # (a proxy looks at Proxy-Require). The parser splits them.
    msg = request("bext01")
    assert msg.headers.get_all("Require") == ("nothingSupportsThis", "nothingSupportsThisEither")
    assert msg.headers.get_all("Proxy-Require") == (
        "noProxiesSupportThis",
        "norDoAnyProxiesSupportThis",
    )


def test_invut_unknown_content_type_parses() -> None:
    # §3.3.6: the UAS core answers 415 with Accept.
    msg = request("invut")
    assert msg.content_type == "application/unknownformat"
    assert msg.body == b'<audio>\r\n <pcmu port="443"/>\r\n</audio>\r\n'


def test_regaut01_unknown_authorization_scheme_parses() -> None:
    # §3.3.7: the registrar ignores the unknown credentials and challenges (401); not parser work.
    msg = request("regaut01")
    assert msg.headers.get("Authorization") == "NoOneKnowsThisScheme opaque-data=here"


def test_multi01_repeated_single_value_headers_is_400() -> None:
    # §3.3.8 asks for 400; the parser rejects repeated single-value headers itself.
    err = rejection("multi01")
    assert (err.status, err.reason) == (400, "multiple From headers")


def test_mcl01_multiple_content_length_is_400() -> None:
    # §3.3.9: the body length cannot be known; the parser rejects it.
    err = rejection("mcl01")
    assert (err.status, err.reason) == (400, "multiple Content-Length headers")


def test_bcast_broadcast_via_parses() -> None:
    # §3.3.10: the response is well-formed; whoever forwards it (transaction/transport layer)
    # must not send to the broadcast sent-by of the second Via.
    msg = response("bcast")
    assert [v.host for v in msg.vias] == ["192.0.2.198", "255.255.255.255"]


def test_zeromf_max_forwards_zero_parses() -> None:
    # §3.3.11: the UAS core answers 483 (or handles OPTIONS itself); the parser reports 0.
    assert request("zeromf").max_forwards == 0


def test_cparam01_addr_spec_parameter_belongs_to_the_header() -> None:
    # §3.3.12: without <>, ";unknownparam" is a Contact parameter (RFC 3261 §20.10).
    (contact,) = request("cparam01").contacts
    assert contact.uri == SipUri("sip", "gw1.example.net", user="+19725552222")
    assert contact.params == (("unknownparam", None),)


def test_cparam02_bracketed_parameter_belongs_to_the_uri() -> None:
    # §3.3.13: inside <>, ";unknownparam" is a URI parameter.
    (contact,) = request("cparam02").contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.params == (("unknownparam", None),)
    assert contact.params == ()


def test_regescrt_escaped_header_in_contact_uri_parses() -> None:
    # §3.3.14: legal inside <>; the registrar decides whether to keep or strip the header.
    (contact,) = request("regescrt").contacts
    assert isinstance(contact.uri, SipUri)
    assert contact.uri.headers == (("Route", "%3Csip:sip.example.com%3E"),)


def test_sdp01_unacceptable_accept_parses() -> None:
    # §3.3.15: the UAS core answers 406 (it cannot answer in text/nobodyKnowsThis).
    msg = request("sdp01")
    assert msg.headers.get_all("Accept") == ("text/nobodyKnowsThis",)


def test_inv2543_rfc2543_request_parses() -> None:
    # §3.4.1: no branch cookie, no From tag, no Max-Forwards, no Content-Length. The body is the
    # rest of the datagram; ";user=phone" after an addr-spec is a To parameter (RFC 3261 §20.10).
    msg = request("inv2543")
    assert msg.top_via.branch is None
    assert not msg.top_via.rfc3261_branch
    assert msg.from_.tag is None
    assert msg.max_forwards is None
    assert msg.to.uri == SipUri("sip", "ss1.example.net", user="+16505552222")
    assert msg.to.params == (("user", "phone"),)
    assert msg.headers.get("Content-Length") is None
    raw = data("inv2543")
    assert msg.body == raw[raw.index(b"\r\n\r\n") + 4 :]
    assert len(msg.body) == 105


def test_every_message_has_a_verdict_test() -> None:
    # Guard against a message silently losing its verdict when this file is edited.
    covered = set(VALID) | {name for name, _, _ in INVALID} | {"baddate"}
    covered |= {
        "badbranch", "insuf", "unkscm", "novelsc", "unksm2", "bext01", "invut", "regaut01",
        "multi01", "mcl01", "bcast", "zeromf", "cparam01", "cparam02", "regescrt", "sdp01",
        "inv2543",
    }  # fmt: skip
    assert covered == set(CATALOGUE)
