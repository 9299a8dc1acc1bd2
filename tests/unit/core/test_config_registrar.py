"""``[registrar]``: the expiries the registrar grants and the contacts an account may hold, read
and bounded; a wrong value names the file, the table, the key, the range and the value."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from gateway.core.config import ConfigError, from_mapping
from gateway.core.registrar import RegistrarPolicy


def refused(table: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        from_mapping({"registrar": table}, file="voipgw.toml")
    return caught.value


def test_the_defaults_are_what_the_registrar_granted_before_the_table() -> None:
    section = from_mapping({}, file="voipgw.toml").registrar
    policy = RegistrarPolicy(local_domains=frozenset())
    assert (section.min_expires, section.default, section.max_expires, section.max_bindings) == (
        policy.min_expires,
        policy.default_expires,
        policy.max_expires,
        policy.max_bindings,
    )
    assert (policy.min_expires, policy.default_expires, policy.max_expires) == (60, 3600, 7200)
    assert policy.max_bindings == 10


def test_values_in_range_are_taken() -> None:
    table = {"min_expires": 30, "default_expires": 600, "max_expires": 86400, "max_bindings": 3}
    section = from_mapping({"registrar": table}).registrar
    assert attrs.asdict(section) == table
    assert section.default == 600
    # One value for all three: every phone gets exactly that expiry.
    same = {"min_expires": 300, "default_expires": 300, "max_expires": 300}
    assert from_mapping({"registrar": same}).registrar.default == 300


@pytest.mark.parametrize(
    ("table", "default"),
    [
        ({"max_expires": 1800}, 1800),  # an hour would be more than the most granted
        ({"min_expires": 7200, "max_expires": 86400}, 7200),  # and less than the least
        ({"max_expires": 86400}, 3600),
    ],
)
def test_an_unwritten_default_expires_is_an_hour_within_the_bounds(
    table: dict[str, int], default: int
) -> None:
    section = from_mapping({"registrar": table}).registrar
    assert section.default_expires is None
    assert section.default == default


@pytest.mark.parametrize(
    ("table", "key", "words"),
    [
        ({"min_expires": 0}, "min_expires", "min_expires: expected 1 to 604800 s (a week), got 0"),
        ({"max_expires": 604801}, "max_expires", "expected 1 to 604800 s (a week), got 604801"),
        ({"default_expires": -5}, "default_expires", "expected 1 to 604800 s (a week), got -5"),
        (
            {"min_expires": 600, "max_expires": 300},
            "min_expires",
            "min_expires: expected at most max_expires (300), got 600",
        ),
        (
            {"default_expires": 30},
            "default_expires",
            "default_expires: expected from min_expires (60) to max_expires (7200), got 30",
        ),
        ({"max_bindings": 0}, "max_bindings", "max_bindings: expected 1 to 10000, got 0"),
        ({"max_bindings": 10001}, "max_bindings", "expected 1 to 10000, got 10001"),
        ({"max_expires": "1h"}, "max_expires", "expected an integer"),
        ({"maximum": 3600}, "maximum", "unknown key"),
    ],
)
def test_a_wrong_value_names_the_file_table_and_key(
    table: dict[str, Any], key: str | None, words: str
) -> None:
    error = refused(table)
    assert (error.file, error.table, error.key) == ("voipgw.toml", "registrar", key)
    assert words in str(error), str(error)
    assert str(error).startswith("voipgw.toml: [registrar]"), str(error)


def test_a_registrar_that_is_no_table_is_refused() -> None:
    error = refused(3600)  # type: ignore[arg-type]
    assert (error.table, error.key) == ("registrar", None)
    assert "expected a table" in str(error)
