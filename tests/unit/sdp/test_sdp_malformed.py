"""Malformed or oversized session descriptions: each one an SdpError (488) naming the defect."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.sdp import grammar as sdp_grammar
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.grammar import is_digits, is_token
from gateway.core.sdp.model import parse_rtcp_untrusted
from gateway.core.sdp.parser import parse_sdp_untrusted
from tests.unit.sdp.sdp_samples import BARESIP_SDES, SDES_KEY_80, crlf

HEAD = "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nc=IN IP4 192.0.2.1\nt=0 0\n"
AUDIO = "m=audio 4000 RTP/AVP 0\n"
GOOD = HEAD + AUDIO


def reason_of(data: bytes | str, **limits: int) -> str:
    with pytest.raises(SdpError) as info:
        parse_sdp_untrusted(data, **limits)
    assert info.value.sip_status == 488
    assert str(info.value) == info.value.reason
    return info.value.reason


def test_the_good_base_parses() -> None:
    # Every case below is a small edit of this description, so each failure is the edit's.
    assert parse_sdp_untrusted(GOOD).media[0].port == 4000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Structure and order (RFC 8866 §5).
        (GOOD.replace("v=0\n", ""), "line 1: SDP must start with v="),
        ("o=- 1 1 IN IP4 192.0.2.1\nv=0\n", "line 1: SDP must start with v="),
        (GOOD.replace("v=0", "v=1"), "line 1: unsupported SDP version"),
        (GOOD.replace("o=- 1 1 IN IP4 192.0.2.1\n", ""), "missing o= line before m= line"),
        (GOOD.replace("t=0 0\n", ""), "missing t= line before m= line"),
        (HEAD.replace("t=0 0\n", ""), "missing t= line before end of SDP"),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\nm=audio 4000 RTP/AVP 0\ns=-\nt=0 0\n",
            "line 3: missing s= line before m= line",
        ),
        (GOOD.replace("s=-\n", "s=-\ns=again\n"), "line 4: duplicate s= line"),
        (GOOD.replace("v=0\n", "v=0\nv=0\n"), "line 2: duplicate v= line"),
        (
            "v=0\ns=-\no=- 1 1 IN IP4 192.0.2.1\nc=IN IP4 192.0.2.1\nt=0 0\n",
            "line 3: o= line out of order",
        ),
        (
            "v=0\no=- 1 1 IN IP4 192.0.2.1\ns=-\nt=0 0\nc=IN IP4 192.0.2.1\n",
            "line 5: c= line out of order",
        ),
        (HEAD + "a=sendrecv\nt=1 2\n", "line 7: t= line out of order"),
        (HEAD + "a=sendrecv\nr=1 2 3\n", "line 7: r= line out of order"),
        (HEAD + "z=1 -1h\nz=2 -1h\n", "line 7: z= line not after t= or r="),
        (GOOD + "a=sendrecv\ni=late title\n", "line 8: i= line out of order"),
        (GOOD + "i=one\ni=two\n", "line 8: duplicate i= line in media description"),
        (GOOD + "s=-\n", "line 7: s= line not allowed at media level"),
        (GOOD.replace("t=0 0\n", "t=0 0\nx=1\n"), "line 6: unknown line type"),
        (GOOD.replace("t=0 0\n", "t=0 0\nX=1\n"), "line 6: unknown line type"),
        (GOOD.replace("t=0 0\n", "t=0 0\n\n"), "line 6: empty line"),
        (GOOD.replace("s=-", "s -"), "line 3: not a <type>=<value> line"),
        (GOOD.replace("s=-", " s=-"), "line 3: not a <type>=<value> line"),
        (GOOD.replace("s=-", "s=a\rb"), "line 3: CR inside a line"),
        # Numbers and fields.
        (GOOD.replace("4000", "70000"), "line 6: m= port is out of range"),
        (GOOD.replace("4000", "abc"), "line 6: m= port is not a number"),
        (GOOD.replace("4000", "-1"), "line 6: m= port is not a number"),
        (GOOD.replace("4000", "\uff14\uff10"), "line 6: m= port is not a number"),  # fullwidth
        (GOOD.replace("4000", "4000/0"), "line 6: m= port count is out of range"),
        (GOOD.replace("RTP/AVP 0", "RTP/AVP x"), "line 6: m= payload type is not a number"),
        (GOOD.replace("RTP/AVP 0", "RTP/AVP 128"), "line 6: m= payload type is out of range"),
        (GOOD.replace("RTP/AVP 0", "RTP/XYZ 0"), "line 6: unsupported m= transport protocol"),
        (GOOD.replace("RTP/AVP 0\n", "RTP/AVP\n"), "line 6: m= line without formats"),
        (GOOD.replace("m=audio 4000 RTP/AVP 0", "m=audio 4000"), "line 6: m= needs"),
        (GOOD.replace("1 1 IN", "abc 1 IN"), "line 2: o= sess-id is not a number"),
        (GOOD.replace("1 1 IN", "1 1.5 IN"), "line 2: o= sess-version is not a number"),
        (GOOD.replace("1 1 IN", "1 " + "9" * 21 + " IN"), "o= sess-version is not a number"),
        (GOOD.replace("- 1 1 IN", "- 1 IN"), "line 2: o= needs 6 fields"),
        (GOOD.replace("t=0 0", "t=now 0"), "line 5: t= start time is not a number"),
        (GOOD.replace("t=0 0", "t=0"), "line 5: t= needs <start-time> <stop-time>"),
        (GOOD + "b=AS:fast\n", "line 7: b= bandwidth is not a number"),
        (GOOD + "b=AS64\n", "line 7: b= needs <bwtype>:<bandwidth>"),
        (GOOD + "a=\n", "line 7: bad attribute name"),
        (GOOD + "a=:value\n", "line 7: bad attribute name"),
        (GOOD + "a=bad name:1\n", "line 7: bad attribute name"),
        # Addresses (RFC 8866 §5.7).
        (GOOD.replace("c=IN IP4 192.0.2.1", "c=IN IP4"), "line 4: c= needs 3 fields"),
        (GOOD.replace("IP4 192.0.2.1\nt", "IP4 999.0.2.1\nt"), "line 4: c=: bad IPv4 address"),
        (
            GOOD.replace("IP4 192.0.2.1\nt", "IP4 2001:db8::1\nt"),
            "IPv6 address with address type IP4",
        ),
        (
            GOOD.replace("IP4 192.0.2.1\nt", "IP6 192.0.2.1\nt"),
            "IPv4 address with address type IP6",
        ),
        (GOOD.replace("IP4 192.0.2.1\nt", "IP6 2001:db8::g\nt"), "line 4: c=: bad IPv6 address"),
        (
            GOOD.replace("IP4 192.0.2.1\nt", "IP6 fe80::1%eth0\nt"),
            "line 4: c=: IPv6 address with a zone id",
        ),
        (GOOD.replace("IP4 192.0.2.1\nt", "IP4 bad_host!\nt"), "line 4: c=: bad host name"),
        (GOOD.replace("IP4 192.0.2.1\nt", "IP4 224.2.1.1/x\nt"), "line 4: c= TTL is not a number"),
        (
            GOOD.replace("IP4 192.0.2.1\nt", "IP4 224.2.1.1/300\nt"),
            "line 4: c= TTL is out of range",
        ),
        (GOOD.replace("IP4 192.0.2.1\nt", "IP4 224.2.1.1/1/2/3\nt"), "bad c= multicast suffix"),
        (GOOD.replace("IP4 192.0.2.1\nt", "IP6 ff1e::1/1/2\nt"), "line 4: bad c= multicast suffix"),
        (
            GOOD.replace("c=IN IP4 192.0.2.1\n", ""),
            "no c= line for m= line 1 (RFC 8866 §5.7)",
        ),
    ],
)
def test_malformed(text: str, expected: str) -> None:
    assert expected in reason_of(text)


def test_empty_and_blank_bodies() -> None:
    assert reason_of(b"") == "empty SDP"
    assert reason_of(b"\r\n\r\n") == "empty SDP"


def test_str_input_that_cannot_be_utf8() -> None:
    assert reason_of(GOOD.replace("s=-", "s=\ud800")) == "SDP text is not encodable as UTF-8"


def test_nul_byte() -> None:
    assert reason_of(GOOD.replace("s=-", "s=a\x00b").encode()) == "NUL byte in SDP"


def test_too_many_media() -> None:
    text = HEAD + AUDIO * 3
    assert parse_sdp_untrusted(text, max_media=3).media[2].port == 4000
    assert reason_of(text, max_media=2) == "line 8: more than 2 m= lines"


def test_too_many_attributes_counts_session_and_media_levels() -> None:
    text = HEAD + "a=x-one\n" + AUDIO + "a=x-two\na=x-three\n"
    assert len(parse_sdp_untrusted(text, max_attributes=3).media[0].attributes) == 2
    assert reason_of(text, max_attributes=2) == "line 9: more than 2 a= lines"


def test_overlong_line() -> None:
    text = GOOD + "a=x-long:" + "y" * 100 + "\n"
    assert parse_sdp_untrusted(text, max_line=109).media[0].attributes.get("x-long") == "y" * 100
    assert reason_of(text, max_line=108) == "line 7: line longer than 108 characters"


def test_oversized_body() -> None:
    wire = GOOD.encode()
    assert parse_sdp_untrusted(wire, max_size=len(wire)).media
    assert reason_of(wire, max_size=len(wire) - 1) == f"SDP larger than {len(wire) - 1} bytes"


def test_default_limits_refuse_a_flood() -> None:
    assert "more than 16 m= lines" in reason_of(HEAD + AUDIO * 17)
    assert "more than 256 a= lines" in reason_of(GOOD + "a=x\n" * 257)
    assert "longer than 4096" in reason_of(GOOD + "a=x:" + "y" * 4093 + "\n")
    assert "larger than 16384" in reason_of(GOOD + "a=x:yyyyyyyy\n" * 1300)


def test_reasons_never_echo_key_material() -> None:
    wire = crlf(BARESIP_SDES)
    for bad, limits in (
        (wire, {"max_line": 60}),
        (wire.replace(b"a=crypto", b"a=cr ypto"), {}),
        (wire.replace(b"a=crypto", b"q=crypto"), {}),
    ):
        reason = reason_of(bad, **limits)
        assert SDES_KEY_80 not in reason and "inline" not in reason


# --- the lexical checks ----------------------------------------------------------------------


@given(st.text(alphabet=st.characters(max_codepoint=0x2FF), max_size=6))
def test_token_and_digit_checks_match_their_character_sets(text: str) -> None:
    # The checks are compiled regexes; the RFC 8866 §9 character sets are the definition.
    assert is_token(text) == (bool(text) and all(ch in sdp_grammar._TOKEN_CHARS for ch in text))
    assert is_digits(text) == (bool(text) and all(ch in "0123456789" for ch in text))


@pytest.mark.parametrize("text", ["0", "²", "1\n", "", "a b", "PCMU", "x-y.z", "é"])
def test_token_and_digit_checks_on_edge_cases(text: str) -> None:
    assert is_token(text) == (bool(text) and all(ch in sdp_grammar._TOKEN_CHARS for ch in text))
    assert is_digits(text) == (text == "0")


def test_an_rtcp_address_with_a_zone_id() -> None:
    # The zone would choose the interface the relay sends RTCP from (RFC 8866 §9: none).
    with pytest.raises(SdpError, match="a=rtcp: IPv6 address with a zone id"):
        parse_rtcp_untrusted("5005 IN IP6 fe80::1%2")
    assert parse_rtcp_untrusted("5005 IN IP6 fe80::1").port == 5005
