"""The parser's memoized o=, c=, b=, t= and m= values (session 36, #7): shared frozen values,
errors raised at every parse with their own line number, long texts never held, and the same
result with a warm cache as with a cold one."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.sdp import parser
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from tests.unit.sdp.sdp_samples import ALL_SAMPLES, SIPP_UAC, crlf

_VALUE_PARSERS = (
    parser._parse_origin,
    parser._parse_connection,
    parser._parse_bandwidth,
    parser._parse_time,
    parser._parse_media_line,
    parser._parse_media_transport,
)


def _clear_caches() -> None:
    for value_parser in _VALUE_PARSERS:
        value_parser.cached.cache_clear()


def test_repeated_lines_share_their_parsed_values() -> None:
    first = parse_sdp_untrusted(crlf(SIPP_UAC))
    second = parse_sdp_untrusted(crlf(SIPP_UAC))
    assert second == first
    assert second.origin is first.origin
    assert second.connection is first.connection
    assert second.times[0] is first.times[0]
    assert second.media[0].formats is first.media[0].formats


def test_a_bad_value_raises_at_every_parse_with_its_own_line_number() -> None:
    good = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    for extra, lineno in (("", 6), ("i=media\r\n", 7), ("", 6)):
        body = good + extra + "c=IN IP4 127.0.0.1/x\r\n"
        with pytest.raises(SdpError) as raised:
            parse_sdp_untrusted(body.encode())
        assert raised.value.reason == f"line {lineno}: c= TTL is not a number"
    # The same good c= text after the bad one parses (nothing of the failure was kept).
    assert parse_sdp_untrusted((good + "c=IN IP4 127.0.0.1\r\n").encode()).media[0].connections


def test_values_longer_than_the_cache_holds_are_parsed_every_time_and_not_kept() -> None:
    _clear_caches()
    username = "u" * parser._VALUE_CACHE_MAX_TEXT
    body = f"v=0\r\no={username} 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    first = parse_sdp_untrusted(body.encode())
    second = parse_sdp_untrusted(body.encode())
    assert first.origin.username == username
    assert second.origin == first.origin and second.origin is not first.origin
    assert parser._parse_origin.cached.cache_info().currsize == 0
    assert parser._parse_connection.cached.cache_info().currsize == 1


def test_a_value_of_exactly_the_longest_cached_length_is_kept_one_longer_is_not() -> None:
    # "up to 128 characters" (VALUE_CACHE_ENTRIES' docstring, docs/benchmarks.md): the boundary.
    rest = " 1 1 IN IP4 127.0.0.1"
    for length, kept in ((parser._VALUE_CACHE_MAX_TEXT, 1), (parser._VALUE_CACHE_MAX_TEXT + 1, 0)):
        _clear_caches()
        origin = "u" * (length - len(rest)) + rest
        assert len(origin) == length
        body = f"v=0\r\no={origin}\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        assert parse_sdp_untrusted(body.encode()).origin.username == origin.split()[0]
        assert parser._parse_origin.cached.cache_info().currsize == kept


def test_the_caches_are_bounded() -> None:
    _clear_caches()
    for port in range(parser.VALUE_CACHE_ENTRIES + 50):
        body = f"v=0\r\no=- {port} 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        parse_sdp_untrusted((body + f"m=audio {port} RTP/AVP 0\r\n").encode())
    for value_parser in _VALUE_PARSERS:
        assert value_parser.cached.cache_info().currsize <= parser.VALUE_CACHE_ENTRIES


def test_crlf_lf_and_a_last_cr_are_line_ends() -> None:
    sd = parse_sdp_untrusted(b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\ns=-\r\nt=0 0\r")
    assert sd.session_name == "-"
    assert sd.times[0].stop == 0


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        # A CR before a CRLF, or alone inside a line, is inside the line, reported there.
        (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\r\nt=0 0\r\n", "line 3: CR inside a line"),
        (b"v=0\no=- 1 1 IN IP4 127.0.0.1\ns=\rx\nt=0 0\n", "line 3: CR inside a line"),
        (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\r", "line 4: CR inside a line"),
    ],
)
def test_a_cr_inside_a_line(wire: bytes, reason: str) -> None:
    with pytest.raises(SdpError) as raised:
        parse_sdp_untrusted(wire)
    assert raised.value.reason == reason


def _outcome(wire: bytes) -> tuple[str, object]:
    try:
        sd = parse_sdp_untrusted(wire)
    except SdpError as exc:
        return ("error", exc.reason)
    return ("parsed", (sd, serialize_sdp(sd)))


_SAMPLE_LINES = sorted(
    {line for text in ALL_SAMPLES.values() for line in crlf(text).split(b"\r\n")}
)


@settings(max_examples=150, deadline=None)
@given(
    name=st.sampled_from(sorted(ALL_SAMPLES)),
    index=st.integers(min_value=0, max_value=40),
    replacement=st.sampled_from(_SAMPLE_LINES) | st.binary(max_size=40),
    line_end=st.sampled_from([b"\r\n", b"\n", b"\r\r\n", b"\r"]),
)
def test_a_warm_cache_gives_what_a_cold_one_gives(
    name: str, index: int, replacement: bytes, line_end: bytes
) -> None:
    # A sample with one line replaced by another sample's line or by random bytes, and one line
    # end changed: parsed with the caches empty, then again with them filled, the same model
    # and bytes, or the same error.
    lines = crlf(ALL_SAMPLES[name]).split(b"\r\n")
    if index < len(lines) - 1:
        lines[index] = replacement
    wire = b"\r\n".join(lines[:2]) + line_end + b"\r\n".join(lines[2:])
    _clear_caches()
    cold = _outcome(wire)
    assert _outcome(wire) == cold
