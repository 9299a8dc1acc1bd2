"""RAck and RSeq (RFC 3262 §7.1, §7.2) as the call reads them from a peer's PRACK / 1xx."""

from __future__ import annotations

import pytest

from gateway.core.calls.ringing import parse_rack, parse_rseq


def test_a_well_formed_rack_and_rseq_are_read() -> None:
    assert parse_rack("1 314159 INVITE") == (1, 314159, "INVITE")
    assert parse_rseq(" 4711 ") == 4711


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "1 314159",
        "1 314159 INVITE extra",
        "x 314159 INVITE",
        "1 12345678901 INVITE",
        # Found by tests/unit/fuzz: "¹" passes str.isdigit() and int() raised ValueError, which
        # ended the PRACK's handling as an internal error instead of a 400.
        "1 3\u00b94159 INVITE",
        "\u00b2 1 INVITE",
        "\uff11 1 INVITE",  # fullwidth: int() would read it as 1
    ],
)
def test_an_unreadable_rack_is_none(value: str | None) -> None:
    assert parse_rack(value) is None


@pytest.mark.parametrize("value", [None, "0", "4294967296", "-1", "1.5", "\u00b9", "\uff11"])
def test_an_unreadable_rseq_is_none(value: str | None) -> None:
    assert parse_rseq(value) is None
