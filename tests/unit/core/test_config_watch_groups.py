"""``[[dialog_watch_groups]]``: who may watch whose calls (busy lamp fields); errors name the
file, the table and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core import config as cfg
from gateway.core.config import ConfigError, DialogWatchGroup, FeatureCodes


def load(tmp_path: Path, text: str) -> cfg.GatewayConfig:
    path = tmp_path / "voipgw.toml"
    path.write_text(text)
    return cfg.from_toml(path)


def test_groups_are_structured(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[[dialog_watch_groups]]
name = "reception"
accounts = ["alice", "bob", "201"]
show_parties = true

[[dialog_watch_groups]]
name = "sales"
accounts = ["carol"]
pickup = true
""",
    )
    assert config.dialog_watch_groups == (
        DialogWatchGroup("reception", ("alice", "bob", "201"), show_parties=True),
        DialogWatchGroup("sales", ("carol",), pickup=True),
    )
    assert config.dialog_watch_groups[0].pickup is False  # default: no pickup
    assert cfg.embedded_defaults().dialog_watch_groups == ()  # default: nobody watches


@pytest.mark.parametrize(
    ("table", "key", "message", "where"),
    [
        (
            'name = "g"\naccounts = "alice"',
            "accounts",
            "a list of strings",
            "dialog_watch_groups.g",
        ),
        ('name = "g"', "accounts", "missing", "dialog_watch_groups.g"),
        ('name = "g"\naccounts = []', "accounts", "at least one", "dialog_watch_groups.g"),
        ('name = "g"\naccounts = ["a", "a"]', "accounts", "twice", "dialog_watch_groups.g"),
        ('name = "g"\naccounts = [" a"]', "accounts", "surrounding", "dialog_watch_groups.g"),
        (
            'name = "g"\naccounts = ["a"]\nshow_parties = "yes"',
            "show_parties",
            "true or false",
            "dialog_watch_groups.g",
        ),
        (
            'name = "g"\naccounts = ["a"]\npickup = 1',
            "pickup",
            "true or false",
            "dialog_watch_groups.g",
        ),
        (
            'name = "g"\naccounts = ["a"]\nshow_party = true',
            "show_party",
            "unknown key",
            "dialog_watch_groups.g",
        ),
        ('accounts = ["a"]', "name", "missing", "dialog_watch_groups[0]"),
        ('name = " "\naccounts = ["a"]', "name", "non-empty", "dialog_watch_groups[0]"),
    ],
)
def test_bad_groups_name_table_and_key(
    tmp_path: Path, table: str, key: str, message: str, where: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[[dialog_watch_groups]]\n{table}\n")
    assert info.value.table == where and info.value.key == key
    assert message in info.value.message
    assert info.value.file == str(tmp_path / "voipgw.toml")


def test_two_groups_with_one_name_and_a_plain_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(
            tmp_path,
            '[[dialog_watch_groups]]\nname = "g"\naccounts = ["a"]\n'
            '[[dialog_watch_groups]]\nname = "g"\naccounts = ["b"]\n',
        )
    assert info.value.key == "name" and "already" in info.value.message
    with pytest.raises(ConfigError) as info:
        load(tmp_path, '[dialog_watch_groups]\nname = "g"\n')
    assert info.value.table == "dialog_watch_groups" and "[[dialog_watch_groups]]" in str(
        info.value
    )


def test_feature_codes_default_and_set(tmp_path: Path) -> None:
    assert load(tmp_path, "").feature_codes == FeatureCodes("*8", "**")
    codes = load(tmp_path, '[feature_codes]\npickup = "#8"\ndirected_pickup = ""\n').feature_codes
    assert codes == FeatureCodes("#8", "")


@pytest.mark.parametrize(
    ("table", "key", "message"),
    [
        ('pickup = "8a"', "pickup", "0-9, * and #"),
        ('directed_pickup = "*12345678901234567"', "directed_pickup", "1 to 16"),
        ('pickup = "**"', "pickup", "must differ from directed_pickup"),
        ("pickup = 8", "pickup", "string"),
        ('pick_up = "*8"', "pick_up", "unknown key"),
    ],
)
def test_bad_feature_codes_name_table_and_key(
    tmp_path: Path, table: str, key: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, f"[feature_codes]\n{table}\n")
    assert info.value.table == "feature_codes" and info.value.key == key
    assert message in info.value.message
