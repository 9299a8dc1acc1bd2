"""The ``zrtp`` plugin: its entry point, ``[plugins.zrtp]``, what it registers, the ZID made at
first use and kept (RFC 6189 §4.9), and the sans-IO rule for its modules."""

from __future__ import annotations

import ast
import random
import re
import tomllib
from pathlib import Path

import pytest

from gateway.core.config import ConfigError, from_mapping
from gateway.core.plugins import load_plugins
from gateway.plugins.keyexchange import zrtp
from gateway.plugins.keyexchange.zrtp import (
    LocalZrtpError,
    ZidStore,
    ZrtpConfig,
    ZrtpKeyExchange,
)
from gateway.plugins.keyexchange.zrtp import packets as p

ROOT = Path(__file__).parents[3]


def load(tmp_path: Path, **table: object) -> ZrtpKeyExchange:
    plugins_table: dict[str, object] = {"enable": ["zrtp"]}
    plugins_table["zrtp"] = {"state_dir": str(tmp_path), **table}
    config = from_mapping({"plugins": plugins_table})
    plugins = load_plugins(config, extra=[("zrtp", zrtp)], installed={})
    exchange = plugins.key_exchanges.get("zrtp")
    assert isinstance(exchange, ZrtpKeyExchange)
    assert plugins.registered_by("zrtp") == {"key_exchanges": ["zrtp"]}
    return exchange


def first_hello(exchange: ZrtpKeyExchange) -> p.Hello:
    offer = exchange.offer(suites=(), secure_signalling=False)
    offer.remote_sdp_attributes([("zrtp-hash", "1.10 " + "00" * 32)])
    (packet,) = offer.packets_to_send(now=0.0)
    return p.parse_hello_untrusted(p.parse_packet_untrusted(packet).message)


# -- registration ---------------------------------------------------------------------------------


def test_entry_point_is_declared_like_any_plugin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry_points = project["project"]["entry-points"]["voipgw.plugins"]
    assert entry_points["zrtp"] == "gateway.plugins.keyexchange.zrtp"


def test_registers_a_media_path_exchange_with_the_defaults(tmp_path: Path) -> None:
    exchange = load(tmp_path)
    assert exchange.name == "zrtp" and exchange.media_path is True
    assert exchange.profile == "rtp" and exchange.sdp_attribute == "zrtp-hash"
    assert exchange.key_agreements == ("X255", "DH3k")
    assert exchange.ciphers == ("AES1", "AES3")
    assert exchange.auth_tags == ("HS80", "HS32")
    assert exchange.sas_types == ("B32 ", "B256")  # as in the messages
    assert exchange.timing.handshake_timeout == 20.0
    assert ZrtpConfig().state_dir == "./voipgw-state"


def test_the_table_sets_what_the_hello_offers(tmp_path: Path) -> None:
    exchange = load(
        tmp_path,
        key_agreements=["DH2k", "EC25"],
        ciphers=["AES3"],
        auth_tags=["HS32"],
        sas_types=["B256"],
        handshake_timeout=7.5,
    )
    assert exchange.timing.handshake_timeout == 7.5
    hello = first_hello(exchange)
    assert hello.key_agreements == ("DH2k", "EC25", "Mult")  # Mult always, last (§4.4.3)
    assert hello.ciphers == ("AES3",) and hello.auth_tags == ("HS32",)
    assert hello.sas_types == ("B256",)


def test_the_zid_is_made_at_first_use_not_at_start_up(tmp_path: Path) -> None:
    exchange = load(tmp_path)
    assert not (tmp_path / "zrtp").exists()  # voipgw check-config writes nothing
    hello = first_hello(exchange)
    text = (tmp_path / "zrtp" / "zid").read_text()
    assert re.fullmatch(r"[0-9a-f]{24}\n", text)
    assert hello.zid == bytes.fromhex(text)
    assert first_hello(load(tmp_path)).zid == hello.zid  # a restart keeps it


# -- [plugins.zrtp] -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"key_agreements": ["X448"]}, "key_agreements: unknown 'X448'"),
        ({"key_agreements": ["Mult"]}, "key_agreements: unknown 'Mult'"),
        ({"key_agreements": ["DH3k", "DH3k"]}, "key_agreements: a name is listed twice"),
        ({"key_agreements": []}, "key_agreements: expected at least one"),
        ({"key_agreements": ["X255", "DH3k"] * 4}, "key_agreements: "),
        ({"ciphers": ["AES2"]}, "ciphers: unknown 'AES2'"),
        ({"ciphers": []}, "ciphers: expected at least one"),
        ({"auth_tags": ["SK32"]}, "auth_tags: unknown 'SK32'"),
        ({"auth_tags": ["HS80", "HS80"]}, "auth_tags: a name is listed twice"),
        ({"sas_types": ["B32E"]}, "sas_types: unknown 'B32E'"),
        ({"sas_types": ["B32 "]}, "sas_types: unknown 'B32 '"),
        ({"handshake_timeout": 0}, "handshake_timeout: expected a positive number"),
        ({"handshake_timeout": -1.5}, "handshake_timeout: expected a positive number"),
    ],
)
def test_bad_settings_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as info:
        ZrtpConfig(**table)  # type: ignore[arg-type]
    assert str(info.value).startswith(message)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"key_agreements": ["E255"]}, "key_agreements: unknown 'E255'"),
        ({"handshake_timeout": 0}, "handshake_timeout: expected a positive number"),
        ({"colour": "blue"}, "unknown key"),
    ],
)
def test_bad_settings_name_the_table_and_key(
    tmp_path: Path, table: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=r"\[plugins\.zrtp\]") as info:
        load(tmp_path, **table)
    assert message in str(info.value)


def test_the_known_names_are_listed_in_the_error() -> None:
    with pytest.raises(ValueError, match="known: DH2k, X255, EC25, DH3k"):
        ZrtpConfig(key_agreements=("X25519",))


# -- the ZID (§4.9) -------------------------------------------------------------------------------


def test_the_zid_file_is_made_once_and_read_back(tmp_path: Path) -> None:
    directory = tmp_path / "zrtp"
    source = random.Random(4).randbytes
    store = ZrtpConfig(state_dir=str(tmp_path)).zid_store()
    assert store.directory == directory and store.path == directory / "zid"
    store = ZidStore(directory, random_bytes=source)
    assert not directory.exists()
    zid = store.current()
    assert zid == random.Random(4).randbytes(12)  # 96 bits from the injected source
    assert (directory / "zid").read_text() == zid.hex() + "\n"
    assert len(zid.hex()) == 24
    assert store.current() == zid
    assert sorted(x.name for x in directory.iterdir()) == ["zid"]  # no temporary left

    def no_randomness(n: int) -> bytes:
        raise AssertionError("a second store must read the ZID, not make one")

    assert ZidStore(directory, random_bytes=no_randomness).current() == zid


def test_an_uppercase_zid_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "zid").write_text("A1B2C3D4E5F60718293A4B5C\n")
    assert ZidStore(tmp_path).current() == bytes.fromhex("a1b2c3d4e5f60718293a4b5c")


@pytest.mark.parametrize(
    "content",
    ["", "a1b2c3d4e5f6", "a1b2c3d4e5f60718293a4b5c00", "g1b2c3d4e5f60718293a4b5c", "zid = 1"],
    ids=["empty", "short", "long", "not-hex", "not-a-zid"],
)
def test_a_malformed_zid_file_is_our_error_naming_the_path(tmp_path: Path, content: str) -> None:
    path = tmp_path / "zid"
    path.write_text(content)
    with pytest.raises(LocalZrtpError, match=re.escape(str(path))) as info:
        ZidStore(tmp_path).current()
    assert "24 hexadecimal digits" in str(info.value)
    assert path.read_text() == content  # never overwritten


def test_a_zid_file_that_is_not_text_is_our_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / "zid"
    path.write_bytes(b"\xff\xfe" * 12)
    with pytest.raises(LocalZrtpError, match=re.escape(str(path))):
        ZidStore(tmp_path).current()


def test_a_zid_path_that_is_a_directory_is_our_error(tmp_path: Path) -> None:
    (tmp_path / "zid").mkdir()
    with pytest.raises(LocalZrtpError, match=re.escape(str(tmp_path / "zid"))):
        ZidStore(tmp_path).current()


@pytest.mark.parametrize("bad", [bytes(12), b"\x01" * 11], ids=["all-zero", "short"])
def test_a_random_source_without_a_usable_zid_is_our_error(tmp_path: Path, bad: bytes) -> None:
    with pytest.raises(LocalZrtpError, match="random source"):
        ZidStore(tmp_path, random_bytes=lambda n: bad).current()
    assert not (tmp_path / "zid").exists()


# -- sans-IO --------------------------------------------------------------------------------------

FORBIDDEN = {"trio", "socket", "time", "random", "asyncio", "threading", "select", "secrets"}


@pytest.mark.parametrize(
    "module", ["engine.py", "packets.py", "crypto.py", "pgp_words.py", "__init__.py"]
)
def test_the_modules_import_no_io_framework_or_clock(module: str) -> None:
    # Time comes in as ``now`` and randomness as ``random_bytes`` (os.urandom by default).
    path = ROOT / "gateway" / "plugins" / "keyexchange" / "zrtp" / module
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert not roots & FORBIDDEN
