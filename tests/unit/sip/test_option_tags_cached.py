"""A message's option tags (Supported, Require) from one parse cached by the values
(docs/benchmarks.md, session 44) against the code it replaced, copied here: the same tags for
``Headers.option_tags``, and the same answers from ``supports_timer`` (RFC 4028 §7) and
``says_record_aware`` (RFC 7866 §6.1), for header sets built by code and parsed from the wire:
both headers, the compact form ``k``, names and tags in any case (RFC 3261 §7.3.1), several
fields, comma lists with blanks and empty elements, values past the cache's size bound, and the
same values asked again through another message."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.calls.recording_indication import says_record_aware
from gateway.core.sip import message
from gateway.core.sip.errors import SipParseError
from gateway.core.sip.grammar import PARSE_CACHE_ENTRIES, PARSE_CACHE_MAX_TEXT
from gateway.core.sip.message import OPTION_TAGS_CACHE_MAX_TAGS, Headers
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.session_timer import supports_timer


def _option_tags_before(headers: Headers, name: str) -> frozenset[str]:
    # Headers.option_tags before session 44, as it was.
    return frozenset(
        tag.strip().lower() for value in headers.get_all(name) for tag in value.split(",")
    ) - {""}


def _supports_timer_before(headers: Headers) -> bool:
    return "timer" in _option_tags_before(headers, "Supported") | _option_tags_before(
        headers, "Require"
    )


def _says_record_aware_before(headers: Headers) -> bool:
    return "record-aware" in _option_tags_before(
        headers, "Supported"
    ) or "record-aware" in _option_tags_before(headers, "Require")


_NAMES = ["Supported", "supported", "SUPPORTED", "k", "K", "Require", "require", "REQUIRE"]
_TAGS = [
    "timer",
    "Timer",
    "TIMER",
    "100rel",
    "record-aware",
    "Record-Aware",
    "replaces",
    "siprec",
    "timers",
    "record",
    "",
    " ",
]
# One field's value: tags joined by commas with blanks around them (an empty tag: ",,").
_VALUE = st.lists(
    st.tuples(st.sampled_from(_TAGS), st.sampled_from(["", " ", "  ", "\t"])),
    min_size=1,
    max_size=5,
).map(lambda parts: ",".join(f"{blank}{tag}{blank}" for tag, blank in parts))
_LONG = "x-" + "a" * PARSE_CACHE_MAX_TEXT  # past the cache's bound: parsed every time
_FIELDS = st.lists(
    st.tuples(
        st.sampled_from(_NAMES),
        st.one_of(_VALUE, _VALUE.map(lambda value: f"{value}, {_LONG}")),
    ),
    max_size=6,
)
_OTHER = [("Allow", "INVITE, ACK, BYE, UPDATE"), ("Unsupported", "timer"), ("Subject", "timer")]


def _request_bytes(fields: list[tuple[str, str]]) -> bytes:
    lines = [
        "INVITE sip:alice@example.com SIP/2.0",
        "Via: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-1",
        "From: <sip:bob@example.com>;tag=1",
        "To: <sip:alice@example.com>",
        "Call-ID: tags@example.com",
        "CSeq: 1 INVITE",
        "Max-Forwards: 70",
        *(f"{name}: {value}" for name, value in fields),
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _assert_as_before(headers: Headers) -> None:
    for name in ("Supported", "supported", "k", "Require", "REQUIRE"):
        assert headers.option_tags(name) == _option_tags_before(headers, name), name
    for tag in ("timer", "record-aware", "100rel", "replaces", ""):
        assert headers.lists_option_tag(tag) == (
            tag in _option_tags_before(headers, "Supported")
            or tag in _option_tags_before(headers, "Require")
        ), tag
    assert supports_timer(headers) == _supports_timer_before(headers)
    assert says_record_aware(headers) == _says_record_aware_before(headers)


@settings(max_examples=500, deadline=None)
@given(fields=_FIELDS, other=st.lists(st.sampled_from(_OTHER), max_size=2), order=st.randoms())
def test_option_tags_as_before(
    fields: list[tuple[str, str]], other: list[tuple[str, str]], order: object
) -> None:
    mixed = [*fields, *other]
    order.shuffle(mixed)  # type: ignore[attr-defined]
    # Built by code: a list stays one field with its commas.
    built = Headers.of(mixed)
    _assert_as_before(built)
    _assert_as_before(built)  # asked again: from the cache
    # Parsed from the wire: the parser splits each list into one field per element, and
    # refuses an empty element (so the lists go without theirs, as a real peer's do).
    sent = [(name, _without_empty(value)) for name, value in mixed]
    try:
        message = parse_message_untrusted(_request_bytes(sent))
    except SipParseError:
        return
    _assert_as_before(message.headers)
    # The same values in another message (the cache is shared between messages).
    _assert_as_before(parse_message_untrusted(_request_bytes(sent)).headers)


def _without_empty(value: str) -> str:
    return ",".join(part for part in value.split(",") if part.strip()) or value


def test_tags_of_one_message_are_not_another_messages() -> None:
    # The same values in another order, or one more field, are other keys: no stale answer.
    first = Headers.of([("Supported", "timer"), ("Supported", "100rel")])
    assert first.option_tags("Supported") == {"timer", "100rel"}
    assert Headers.of([("Supported", "100rel")]).option_tags("Supported") == {"100rel"}
    both = Headers.of([("Supported", "100rel"), ("Supported", "timer"), ("k", "Record-Aware")])
    assert both.option_tags("k") == {"100rel", "timer", "record-aware"}
    assert both.lists_option_tag("record-aware")
    assert not both.lists_option_tag("Record-Aware")  # the tag is asked in lower case
    assert Headers.of([("Require", "timer")]).lists_option_tag("timer")
    assert not Headers.of([("Unsupported", "timer")]).lists_option_tag("timer")
    assert Headers().option_tags("Supported") == frozenset()


def _cache_info() -> tuple[int, int]:
    info = message._option_tags_cached.cache_info()
    return info.currsize, info.misses


@pytest.mark.parametrize(
    "fields",
    [
        # Past the text bound, as the grammar's parse caches (PARSE_CACHE_MAX_TEXT).
        [("Supported", "timer, x-" + "a" * PARSE_CACHE_MAX_TEXT)],
        # Short, but more tags than a party lists: each is a string and a set slot held.
        [("Supported", f"t{n}") for n in range(OPTION_TAGS_CACHE_MAX_TAGS + 1)],
        # One field built by code with the commas in it counts its elements too.
        [("Supported", ",".join(f"t{n}" for n in range(OPTION_TAGS_CACHE_MAX_TAGS + 1)))],
        [("k", ",,,,"), ("Supported", "," * OPTION_TAGS_CACHE_MAX_TAGS)],
    ],
    ids=["long text", "many fields", "one field of many tags", "empty elements"],
)
def test_a_list_past_the_bounds_is_parsed_and_not_held(fields: list[tuple[str, str]]) -> None:
    headers = Headers.of(fields)
    held, misses = _cache_info()
    assert headers.option_tags("Supported") == _option_tags_before(headers, "Supported")
    assert _cache_info() == (held, misses)  # the cache was not asked


def _held_after(lists: list[list[str]]) -> int:
    """Bytes still allocated after each list was sent as a new INVITE's Supported and asked."""
    message._option_tags_cached.cache_clear()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for tags in lists:
            request = parse_message_untrusted(_request_bytes([("Supported", ",".join(tags))]))
            request.headers.lists_option_tag("timer")
            del request
        gc.collect()
        after = tracemalloc.take_snapshot()
        return sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
        message._option_tags_cached.cache_clear()


@pytest.mark.parametrize(
    ("tags", "width"),
    [
        (PARSE_CACHE_MAX_TEXT // 3, 2),
        (OPTION_TAGS_CACHE_MAX_TAGS, PARSE_CACHE_MAX_TEXT // OPTION_TAGS_CACHE_MAX_TAGS - 1),
    ],
    ids=["many short tags", "the most tags of the longest the cache takes"],
)
def test_a_peers_new_lists_hold_a_few_mb_at_most(tags: int, width: int) -> None:
    # A peer sending a new list in every message (a few thousand INVITEs at line rate) fills
    # the cache; an entry holds its key's strings, its tags' and a set, so the bounds keep the
    # whole as small as the grammar's caches (a few MB, grammar.py): 170 tags of two characters
    # a list held 27 MB (session 44's review).
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    pairs = [a + b for a in alphabet for b in alphabet]  # 1,296: list n's first tag is pairs[n]
    lists = [
        [pairs[(n + 7 * i) % len(pairs)].rjust(width, "t") for i in range(tags)]
        for n in range(PARSE_CACHE_ENTRIES)
    ]
    # Each within the text bound (its values and their separators), each list another key.
    assert all(len(tags) + sum(map(len, tags)) <= PARSE_CACHE_MAX_TEXT for tags in lists)
    assert len({tuple(tags) for tags in lists}) == len(lists)
    held = _held_after(lists)
    assert held < 5_000_000, held
