"""The text the gateway puts in a quoted-string of its own (Warning, Reason text=)."""

from __future__ import annotations

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
