"""Stream framing (RFC 3261 §18.3) and CRLF keep-alives (RFC 5626 §4.4.1)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.sip.errors import LocalSipError, MessageTooLarge, SipParseError
from gateway.core.sip.framing import (
    KEEPALIVE_PING,
    KEEPALIVE_PONG,
    KeepAlivePing,
    StreamFramer,
)


def message(body: bytes = b"", *, length_header: str = "Content-Length: {n}") -> bytes:
    head = (
        "OPTIONS sip:gw@example.net SIP/2.0\r\n"
        "Via: SIP/2.0/TCP client.example.com;branch=z9hG4bK776asdhds\r\n"
        "Call-ID: a84b4c76e66710\r\n"
        "CSeq: 1 OPTIONS\r\n"
        f"{length_header.format(n=len(body))}\r\n"
        "\r\n"
    )
    return head.encode() + body


def drain(framer: StreamFramer) -> list[bytes | KeepAlivePing]:
    out: list[bytes | KeepAlivePing] = []
    while (frame := framer.next_frame()) is not None:
        out.append(frame)
    return out


def feed(framer: StreamFramer, *chunks: bytes) -> list[bytes | KeepAlivePing]:
    out: list[bytes | KeepAlivePing] = []
    for chunk in chunks:
        framer.receive_data(chunk)
        out.extend(drain(framer))
    return out


# --- cutting messages -----------------------------------------------------------------------


def test_one_complete_message() -> None:
    msg = message(b"v=0\r\n")
    assert feed(StreamFramer(), msg) == [msg]


def test_empty_framer_has_nothing() -> None:
    assert StreamFramer().next_frame() is None


def test_message_split_byte_by_byte() -> None:
    msg = message(b"hello world")
    framer = StreamFramer()
    frames = feed(framer, *(msg[i : i + 1] for i in range(len(msg))))
    assert frames == [msg]


def test_coalesced_messages_in_one_chunk() -> None:
    first, second, third = message(b"a"), message(b""), message(b"ccc")
    assert feed(StreamFramer(), first + second + third) == [first, second, third]


def test_partial_second_message_waits() -> None:
    first, second = message(b"one"), message(b"two")
    framer = StreamFramer()
    assert feed(framer, first + second[:10]) == [first]
    assert feed(framer, second[10:]) == [second]


def test_body_may_contain_an_empty_line() -> None:
    body = b"--b\r\n\r\n\r\n\r\nINVITE sip:x SIP/2.0\r\n\r\n"
    msg = message(body)
    assert feed(StreamFramer(), msg + msg) == [msg, msg]


def test_body_cut_by_content_length_not_by_chunk() -> None:
    msg = message(b"0123456789")
    framer = StreamFramer()
    assert feed(framer, msg[:-1]) == []
    assert feed(framer, msg[-1:]) == [msg]


@pytest.mark.parametrize(
    "header",
    [
        "Content-Length: {n}",
        "content-length: {n}",
        "CONTENT-LENGTH:{n}",
        "Content-Length  :   {n}   ",
        "Content-Length:\t{n}",
        "l: {n}",
        "L:{n}",
        "Content-Length:\r\n   {n}",  # folded (RFC 3261 §7.3.1)
        "Content-Length:\r\n\t\r\n {n}",
        "Content-Length: 0000{n}",
    ],
)
def test_content_length_spellings(header: str) -> None:
    msg = message(b"12345", length_header=header)
    assert feed(StreamFramer(), msg + msg) == [msg, msg]


def test_header_named_like_content_length_is_not_content_length() -> None:
    msg = message(b"xy", length_header="Content-Length: {n}\r\nX-Content-Length: 99\r\nll: 7")
    assert feed(StreamFramer(), msg) == [msg]


def test_equal_duplicate_content_lengths_are_unambiguous() -> None:
    msg = message(b"abc", length_header="Content-Length: {n}\r\nl: {n}")
    assert feed(StreamFramer(), msg) == [msg]


def test_content_length_in_the_start_line_is_ignored() -> None:
    msg = b"l: 99 sip:x SIP/2.0\r\nContent-Length: 2\r\n\r\nok"
    assert feed(StreamFramer(), msg) == [msg]


# --- keep-alives and leading CRLFs -----------------------------------------------------------


def test_double_crlf_is_a_ping() -> None:
    assert feed(StreamFramer(), KEEPALIVE_PING) == [KeepAlivePing()]


def test_ping_split_across_chunks() -> None:
    framer = StreamFramer()
    assert feed(framer, b"\r") == []
    assert feed(framer, b"\n") == []
    assert feed(framer, b"\r") == []
    assert feed(framer, b"\n") == [KeepAlivePing()]


def test_single_crlf_pong_is_consumed_silently() -> None:
    framer = StreamFramer()
    msg = message(b"x")
    assert feed(framer, KEEPALIVE_PONG) == []
    assert feed(framer, msg) == [msg]


def test_leading_crlf_before_message_is_ignored() -> None:
    msg = message(b"")
    assert feed(StreamFramer(), b"\r\n" + msg) == [msg]


def test_pings_between_messages() -> None:
    msg = message(b"z")
    frames = feed(StreamFramer(), msg + KEEPALIVE_PING + msg + KEEPALIVE_PING + KEEPALIVE_PING)
    assert frames == [msg, KeepAlivePing(), msg, KeepAlivePing(), KeepAlivePing()]


def test_three_crlfs_are_one_ping_and_one_ignored() -> None:
    msg = message(b"")
    assert feed(StreamFramer(), b"\r\n\r\n\r\n" + msg) == [KeepAlivePing(), msg]


def test_ping_answered_only_once_it_is_complete() -> None:
    framer = StreamFramer()
    assert feed(framer, b"\r\n\r") == []
    assert feed(framer, b"\n") == [KeepAlivePing()]


def test_bare_cr_between_messages_is_fatal() -> None:
    framer = StreamFramer()
    framer.receive_data(b"\rX")
    with pytest.raises(SipParseError):
        framer.next_frame()


@pytest.mark.parametrize("garbage", [b"\x00INVITE", b" INVITE", b"\nINVITE", b"\xffabc"])
def test_bytes_that_cannot_start_a_message_are_fatal(garbage: bytes) -> None:
    framer = StreamFramer()
    framer.receive_data(garbage)
    with pytest.raises(SipParseError, match="out of step"):
        framer.next_frame()


# --- errors and limits --------------------------------------------------------------------------


def test_missing_content_length_is_an_error_on_a_stream() -> None:
    framer = StreamFramer()
    framer.receive_data(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: a\r\n\r\n")
    with pytest.raises(SipParseError, match="missing Content-Length") as info:
        framer.next_frame()
    assert info.value.status == 400


@pytest.mark.parametrize("value", ["-5", "abc", "5 5", "", "0x10", "+3", "5;x"])
def test_malformed_content_length_is_an_error(value: str) -> None:
    framer = StreamFramer()
    framer.receive_data(message(b"", length_header="Content-Length: " + value))
    with pytest.raises(SipParseError, match="malformed Content-Length"):
        framer.next_frame()


def test_conflicting_content_lengths_are_an_error() -> None:
    # RFC 4475 §3.3.9 (mcl01): on a datagram a 400; on a stream the boundary is lost.
    framer = StreamFramer()
    framer.receive_data(message(b"abc", length_header="Content-Length: 3\r\nl: 4"))
    with pytest.raises(SipParseError, match="conflicting"):
        framer.next_frame()


def test_error_is_fatal_and_sticky() -> None:
    framer = StreamFramer()
    framer.receive_data(b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    with pytest.raises(SipParseError) as first:
        framer.next_frame()
    assert framer.broken
    with pytest.raises(SipParseError) as again:
        framer.next_frame()
    assert again.value is first.value
    with pytest.raises(SipParseError):
        framer.receive_data(message(b""))


def test_huge_content_length_is_too_large() -> None:
    framer = StreamFramer()
    framer.receive_data(message(b"", length_header="Content-Length: 99999999999999999999999999"))
    with pytest.raises(MessageTooLarge) as info:
        framer.next_frame()
    assert info.value.status == 513


def test_content_length_over_body_limit_fails_before_the_body_arrives() -> None:
    framer = StreamFramer(max_body_size=100)
    framer.receive_data(message(b"", length_header="Content-Length: 101"))
    with pytest.raises(MessageTooLarge, match="Content-Length"):
        framer.next_frame()


def test_body_at_the_limit_is_accepted() -> None:
    msg = message(b"b" * 100)
    assert feed(StreamFramer(max_body_size=100), msg) == [msg]


def test_message_over_total_limit() -> None:
    msg = message(b"b" * 100)
    framer = StreamFramer(max_message_size=len(msg) - 1)
    framer.receive_data(msg[:-100])
    with pytest.raises(MessageTooLarge, match="message longer"):
        framer.next_frame()


def test_message_at_total_limit_is_accepted() -> None:
    msg = message(b"b" * 100)
    assert feed(StreamFramer(max_message_size=len(msg)), msg) == [msg]


def test_endless_header_block_fails_at_the_limit_byte_by_byte() -> None:
    framer = StreamFramer(max_header_size=64)
    for _ in range(63):
        framer.receive_data(b"A")
        assert framer.next_frame() is None
    framer.receive_data(b"A")
    with pytest.raises(MessageTooLarge, match="header block"):
        framer.next_frame()


def test_header_block_exactly_at_the_limit_is_accepted() -> None:
    msg = message(b"")
    assert feed(StreamFramer(max_header_size=len(msg)), msg) == [msg]
    framer = StreamFramer(max_header_size=len(msg) - 1)
    framer.receive_data(msg)
    with pytest.raises(MessageTooLarge):
        framer.next_frame()


def test_feeding_without_draining_is_refused() -> None:
    msg = message(b"")
    framer = StreamFramer(max_message_size=len(msg) * 2)
    framer.receive_data(msg)
    framer.receive_data(msg)
    with pytest.raises(LocalSipError, match="drained"):
        framer.receive_data(msg)
    assert not framer.broken  # our bug, not the peer's: the stream is still usable
    assert drain(framer) == [msg, msg]


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        StreamFramer(max_body_size=0)


# --- property: arbitrary chunking --------------------------------------------------------------

_NAMES = st.sampled_from(["Content-Length", "content-length", "CONTENT-LENGTH", "l", "L"])
_SPACING = st.sampled_from(["", " ", "  ", "\t", "\r\n ", " \r\n\t"])


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    body = draw(st.binary(max_size=300))
    name = draw(_NAMES)
    before = draw(st.sampled_from(["", " ", "\t "]))
    after = draw(_SPACING)
    header = f"{name}{before}:{after}{len(body)}"
    extra = draw(st.lists(st.sampled_from(["Subject: hi", "X-Folded: a\r\n b", "k: 100rel"])))
    lines = ["MESSAGE sip:user@example.com SIP/2.0", *extra, header]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@given(
    items=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5), messages()), min_size=1, max_size=6
    ),
    trailing_crlfs=st.integers(min_value=0, max_value=5),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=40),
)
def test_any_chunking_yields_exactly_the_messages(
    items: list[tuple[int, bytes]], trailing_crlfs: int, cuts: list[int]
) -> None:
    stream = b""
    expected: list[bytes | KeepAlivePing] = []
    for crlfs, msg in items:
        # n CRLFs between messages are n // 2 pings; an odd one out is a pong / leading CRLF.
        stream += b"\r\n" * crlfs + msg
        expected += [KeepAlivePing()] * (crlfs // 2) + [msg]
    stream += b"\r\n" * trailing_crlfs
    expected += [KeepAlivePing()] * (trailing_crlfs // 2)

    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    chunks = [stream[a:b] for a, b in itertools.pairwise(points)]
    assert feed(StreamFramer(), *chunks) == expected
