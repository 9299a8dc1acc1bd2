"""The text the gateway puts in a quoted-string of its own (Warning, Reason text=)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.core.calls.events import quoted, warning_header


def test_control_characters_quotes_and_backslashes_never_reach_the_quoted_string() -> None:
    text = 'peer said "no"\x00 over\x1b[31m \\there\x7f\r\nVia: forged'
    made = quoted(text)
    assert made == "peer said 'no' over [31m there Via: forged"
    assert not any(ord(char) < 0x20 or ord(char) == 0x7F for char in made)


def test_the_warning_header_stays_one_valid_header_value() -> None:
    header = warning_header("cannot send: \x00\x01 ECONNREFUSED")
    assert header == '399 voipgw "cannot send: ECONNREFUSED"'


def test_a_long_text_is_cut_at_300_characters() -> None:
    assert len(quoted("x" * 1000)) == 300
    assert quoted("x" * 1000).endswith("...")


def _quoted_by_every_character(text: str) -> str:
    """What quoted made of every text before its shortcut for a text already fit (session 35)."""
    cleaned = " ".join(
        "".join(" " if ord(char) < 0x20 or ord(char) == 0x7F else char for char in text)
        .replace("\\", "")
        .replace('"', "'")
        .split()
    )
    return cleaned if len(cleaned) <= 300 else cleaned[:297] + "..."


def test_the_shortcut_for_a_fit_text_changes_no_text() -> None:
    # The shortcut takes a printable text for one without control characters whose only
    # whitespace (what str.split splits on: str.isspace) is the space: true of every code point.
    for point in range(0x110000):
        char = chr(point)
        if char.isprintable() and char != " ":
            assert not char.isspace() and point >= 0x20 and point != 0x7F, hex(point)
    for text in (
        "BYE from A leg",
        "a  b",
        " a",
        "a ",
        "",
        "a\u00a0b",
        "a\u3000b",
        "a\u0085b",
        "a\u2028b",
        "x" * 300,
        "x" * 301,
        "\u00e9" * 301,
        'say "hi"',
        "back\\slash",
    ):
        assert quoted(text) == _quoted_by_every_character(text), repr(text)


@given(st.text(max_size=400))
def test_quoted_is_what_it_was_for_any_text(text: str) -> None:
    assert quoted(text) == _quoted_by_every_character(text)
