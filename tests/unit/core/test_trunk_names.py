"""Plugin keys that name trunks (stir_shaken ``sign_trunks`` and ``verify_trunks``, the
recorder's and SIPREC's ``trunks``) are looked up among the ``[[trunks]]`` tables: a misspelt
name signed, verified or recorded nothing, and nobody was told. ``Gateway.check`` collects one
error per unknown name (``voipgw check-config`` refuses the file with them; ``voipgw run`` says
them as warnings and starts: docs/configuration.md, "Names of trunks in plugin tables")."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core import gateway as gateway_mod
from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.plugins import load_plugins
from gateway.testing.sti_pki import make_pki


@pytest.fixture(scope="module")
def sti(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    anchors, key, _ = make_pki().write(tmp_path_factory.mktemp("sti"))
    return anchors, key


def tables(sti: tuple[Path, Path], tmp: Path) -> dict[str, dict[str, Any]]:
    """Each plugin's table as it would be without the key under test."""
    anchors, key = sti
    return {
        "recorder": {"directory": str(tmp), "accounts": ["alice"]},
        "siprec": {"srs": "sip:srs@192.0.2.50:5060", "accounts": ["alice"]},
        "stir_shaken": {
            "certificate_url": "https://cr.example/signer.pem",
            "private_key": str(key),
            "trust_anchors": str(anchors),
        },
    }


TRUNK = {"name": "carrier", "address": "udp:192.0.2.10:5060"}
KEYS = [
    ("recorder", "trunks"),
    ("siprec", "trunks"),
    ("stir_shaken", "sign_trunks"),
    ("stir_shaken", "verify_trunks"),
]


def checked(
    plugin: str, table: dict[str, Any], trunks: list[dict[str, Any]], state: Path
) -> Gateway:
    config = from_mapping(
        {
            "gateway": {"state_dir": str(state)},
            "sip": {"listen": ["udp:127.0.0.1:0"]},
            "plugins": {"enable": ["udp", plugin], plugin: table},
            "trunks": trunks,
        },
        file="voipgw.toml",
    )
    built = Gateway(config, load_plugins(config))
    built.check()  # no ConfigError: the names are for the caller to refuse or warn of
    return built


@pytest.mark.parametrize(("plugin", "key"), KEYS)
def test_each_key_naming_trunks_is_checked_against_the_trunks(
    plugin: str, key: str, sti: tuple[Path, Path], tmp_path: Path
) -> None:
    table = tables(sti, tmp_path)[plugin]
    misspelt = checked(plugin, {**table, key: ["carrier", "carier"]}, [TRUNK], tmp_path)
    assert [str(error) for error in misspelt.name_errors] == [
        f"voipgw.toml: [plugins.{plugin}] {key}: unknown trunk 'carier': no [[trunks]] table "
        "has that name, so this key does nothing for it; known: carrier"
    ]
    (error,) = misspelt.name_errors
    assert (error.file, error.table, error.key) == ("voipgw.toml", f"plugins.{plugin}", key)
    assert checked(plugin, {**table, key: ["carrier"]}, [TRUNK], tmp_path).name_errors == []


def test_every_unknown_name_is_an_error_and_a_disabled_trunk_is_known(
    sti: tuple[Path, Path], tmp_path: Path
) -> None:
    table = {**tables(sti, tmp_path)["stir_shaken"], "sign_trunks": ["a", "b", "spare"]}
    spare = {"name": "spare", "address": "udp:192.0.2.11:5060", "enabled": False}
    built = checked("stir_shaken", table, [TRUNK, spare], tmp_path)
    assert [(e.key, e.message.split(":")[0]) for e in built.name_errors] == [
        ("sign_trunks", "unknown trunk 'a'"),
        ("sign_trunks", "unknown trunk 'b'"),
    ]
    assert built.name_errors[0].message.endswith("known: carrier, spare")


def test_the_known_names_are_listed_only_when_few(sti: tuple[Path, Path], tmp_path: Path) -> None:
    table = {**tables(sti, tmp_path)["recorder"], "trunks": ["carier"]}
    (none,) = checked("recorder", table, [], tmp_path).name_errors
    assert none.message.endswith("known: none (no [[trunks]] table)")
    many = [{"name": f"t{i}", "address": f"udp:192.0.2.{i + 1}:5060"} for i in range(11)]
    (counted,) = checked("recorder", table, many, tmp_path).name_errors
    assert counted.message.endswith("known: 11 trunks")


def test_account_names_are_not_checked(sti: tuple[Path, Path], tmp_path: Path) -> None:
    """Accounts live in the store and change while the gateway runs: the file cannot say
    which exist (docs/configuration.md)."""
    table = {**tables(sti, tmp_path)["recorder"], "accounts": ["nobody"], "trunks": ["carrier"]}
    assert checked("recorder", table, [TRUNK], tmp_path).name_errors == []


def test_run_says_them_as_warnings_and_starts(
    sti: tuple[Path, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A gateway upgraded with such a name in its file keeps carrying calls: serve() warns and
    goes on to open its store (where this test stops it)."""
    table = {**tables(sti, tmp_path)["siprec"], "trunks": ["carier"]}
    built = checked("siprec", table, [TRUNK], tmp_path)

    class Opened(Exception):
        pass

    def open_store(*args: object, **kwargs: object) -> None:
        raise Opened

    monkeypatch.setattr(gateway_mod, "open_store", open_store)
    caplog.set_level(logging.WARNING)
    with pytest.raises(Opened):
        trio.run(built.serve)
    said = [
        (record.levelno, record.getMessage())
        for record in caplog.records
        if "carier" in record.getMessage()
    ]
    assert said == [
        (
            logging.WARNING,
            "configuration: voipgw.toml: [plugins.siprec] trunks: unknown trunk 'carier': no "
            "[[trunks]] table has that name, so this key does nothing for it; known: carrier",
        )
    ]


def test_the_mikey_psk_file_trunks_are_checked_against_the_trunks(tmp_path: Path) -> None:
    """The names of the pre-shared key file's ``[trunks]`` table: a misspelt one's key was
    never used (the trunk's calls went without it) and nobody was told."""
    psk = tmp_path / "psk.toml"
    psk.write_text(f'[accounts]\nalice = "{"11" * 16}"\n[trunks]\ncarrier = "{"22" * 16}"\n')
    psk.chmod(0o600)
    table = {"offer_modes": ["psk"], "psk_file": str(psk)}
    assert checked("mikey", table, [TRUNK], tmp_path).name_errors == []
    psk.write_text(f'[trunks]\ncarrier = "{"22" * 16}"\ncarier = "{"33" * 16}"\n')
    assert [str(error) for error in checked("mikey", table, [TRUNK], tmp_path).name_errors] == [
        "voipgw.toml: [plugins.mikey] psk_file: unknown trunk 'carier' (in the file it names): "
        "no [[trunks]] table has that name, so what the file holds for it is never used; "
        "known: carrier"
    ]
