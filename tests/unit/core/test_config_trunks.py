"""``[[trunks]]``: structuring into TrunkConfig, validation, and errors naming table and key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import attrs
import pytest

from gateway.core import config as cfg
from gateway.core.config import ConfigError, ListenSpec, TrunkConfig


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "voipgw.toml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        cfg.from_toml(path)
    assert info.value.file == str(path)
    return info.value


FULL = """
[[trunks]]
name = "carrier"
address = "udp:192.0.2.10:5060"
prefixes = ["+49", "0"]
strip_prefix = 1
add_prefix = "+49"
allowed_sources = ["192.0.2.0/28", "2001:db8::1"]
auth_by_source = false
username = "voipgw"
password = "s3cret-pw"
dids = {"+4930123456" = "alice", "+4930123457" = "bob"}
media_policy = "srtp-required"
enabled = false

[[trunks]]
name = "pbx"
address = "tcp:[2001:db8::5]:5080"

[trunks.dids]
"100" = "carol"
"""


def test_full_trunk_tables_are_structured(tmp_path: Path) -> None:
    config = cfg.from_toml(write(tmp_path, FULL))
    carrier, pbx = config.trunks
    assert carrier == TrunkConfig(
        name="carrier",
        address="udp:192.0.2.10:5060",
        prefixes=("+49", "0"),
        strip_prefix=1,
        add_prefix="+49",
        allowed_sources=("192.0.2.0/28", "2001:db8::1"),
        auth_by_source=False,
        username="voipgw",
        password="s3cret-pw",
        dids={"+4930123456": "alice", "+4930123457": "bob"},
        media_policy="srtp-required",
        enabled=False,
    )
    assert carrier.address_spec == ListenSpec("udp", "192.0.2.10", 5060)
    assert carrier.source_networks == (
        ipaddress.ip_network("192.0.2.0/28"),
        ipaddress.ip_network("2001:db8::1/128"),
    )
    # [trunks.dids] written as a sub-table of the last [[trunks]] entry.
    assert dict(pbx.dids) == {"100": "carol"}
    assert pbx.address_spec == ListenSpec("tcp", "2001:db8::5", 5080)
    assert config.trunk("pbx") is pbx
    assert config.trunk("nobody") is None


def test_defaults_of_a_minimal_trunk() -> None:
    config = cfg.from_mapping({"trunks": [{"name": "t", "address": "udp:127.0.0.1:5070"}]})
    (trunk,) = config.trunks
    assert trunk.prefixes == ()
    assert trunk.strip_prefix == 0
    assert trunk.add_prefix == ""
    assert trunk.allowed_sources is None
    # Default allowed source: the host of the address.
    assert trunk.sources == ("127.0.0.1",)
    assert trunk.source_networks == (ipaddress.ip_network("127.0.0.1/32"),)
    assert trunk.auth_by_source is True
    assert trunk.username is None and trunk.password is None
    assert dict(trunk.dids) == {}
    assert trunk.media_policy == "best-effort"
    assert trunk.enabled is True
    assert trunk.is_default_route is False


def test_no_trunks_by_default() -> None:
    assert cfg.embedded_defaults().trunks == ()


def test_empty_allowed_sources_recognises_nobody() -> None:
    config = cfg.from_mapping(
        {"trunks": [{"name": "t", "address": "udp:127.0.0.1:5070", "allowed_sources": []}]}
    )
    assert config.trunks[0].sources == ()
    assert config.trunks[0].source_networks == ()


@pytest.mark.parametrize("prefix", ["", "*"])
def test_empty_or_star_prefix_is_the_default_route(prefix: str) -> None:
    trunk = TrunkConfig(name="t", address="udp:127.0.0.1:5070", prefixes=("+1", prefix))
    assert trunk.is_default_route


def test_dids_are_read_only() -> None:
    trunk = TrunkConfig(name="t", address="udp:127.0.0.1:5070", dids={"1": "alice"})
    with pytest.raises(TypeError):
        trunk.dids["2"] = "bob"  # type: ignore[index]


def test_password_is_not_in_the_repr(tmp_path: Path) -> None:
    config = cfg.from_toml(write(tmp_path, FULL))
    assert "s3cret-pw" not in repr(config.trunks[0])
    assert "s3cret-pw" not in repr(config)
    assert "voipgw" in repr(config.trunks[0])  # the username is not a secret


def test_a_mistyped_password_is_not_echoed(tmp_path: Path) -> None:
    err = load_error(
        tmp_path,
        '[[trunks]]\nname = "t"\naddress = "udp:127.0.0.1:5070"\nusername = "u"\n'
        "password = 918273645\n",
    )
    assert (err.table, err.key) == ("trunks.t", "password")
    assert "expected a string" in str(err)
    assert "918273645" not in str(err)


def test_trunks_can_be_hashed_and_compared() -> None:
    a = TrunkConfig(name="t", address="udp:127.0.0.1:5070", dids={"1": "alice"})
    b = TrunkConfig(name="t", address="udp:127.0.0.1:5070", dids={"1": "alice"})
    c = attrs.evolve(a, dids={"1": "bob"})
    assert a == b and hash(a) == hash(b)
    assert a != c


T = '[[trunks]]\nname = "t"\naddress = "udp:127.0.0.1:5070"\n'


@pytest.mark.parametrize(
    ("text", "table", "key", "words"),
    [
        ("trunks = 3\n", "trunks", None, "array of tables"),
        ("trunks = [3]\n", "trunks[0]", None, "expected a table"),
        ('[[trunks]]\naddress = "udp:127.0.0.1:5070"\n', "trunks[0]", "name", "missing"),
        (T + '[[trunks]]\nname = 5\naddress = "udp:1.2.3.4:5"\n', "trunks[1]", "name", "string"),
        ('[[trunks]]\nname = ""\naddress = "udp:1.2.3.4:5"\n', "trunks[0]", "name", "non-empty"),
        ('[[trunks]]\nname = "t"\n', "trunks.t", "address", "missing"),
        ('[[trunks]]\nname = "t"\naddress = "udp:1.2.3.999:5"\n', "trunks.t", "address", "IP"),
        # Host names (RFC 3263) must be names: two labels or more, no bad characters.
        ('[[trunks]]\nname = "t"\naddress = "udp:carrier:5"\n', "trunks.t", "address", "labels"),
        ('[[trunks]]\nname = "t"\naddress = "udp:a_b.example"\n', "trunks.t", "address", "labels"),
        ('[[trunks]]\nname = "t"\naddress = "udp:x.example:0"\n', "trunks.t", "address", "1-65535"),
        ('[[trunks]]\nname = "t"\naddress = "ws:x.example"\n', "trunks.t", "address", "udp, tcp"),
        # A name with a port but no transport; a bare name is fine (NAPTR, test_config_dns).
        ('[[trunks]]\nname = "t"\naddress = "x.example:5"\n', "trunks.t", "address", "NAPTR"),
        (
            '[[trunks]]\nname = "t"\naddress = "127.0.0.1:5070"\n',
            "trunks.t",
            "address",
            "TRANSPORT",
        ),
        ('[[trunks]]\nname = "t"\naddress = "1.2.3.4:1.2.3.4:5"\n', "trunks.t", "address", "name"),
        ('[[trunks]]\nname = "t"\naddress = "udp:127.0.0.1"\n', "trunks.t", "address", "expected"),
        ('[[trunks]]\nname = "t"\naddress = "udp:127.0.0.1:0"\n', "trunks.t", "address", "1-65535"),
        (T + "prefixes = '+49'\n", "trunks.t", "prefixes", "list of strings"),
        (T + "prefixes = ['49x']\n", "trunks.t", "prefixes", "digits"),
        (T + "strip_prefix = -1\n", "trunks.t", "strip_prefix", "0 or more"),
        (T + "strip_prefix = '1'\n", "trunks.t", "strip_prefix", "an integer"),
        (T + "add_prefix = 'abc'\n", "trunks.t", "add_prefix", "digits"),
        (T + "allowed_sources = ['10.0.0.1/24']\n", "trunks.t", "allowed_sources", "host bits"),
        (T + "allowed_sources = ['peer.example']\n", "trunks.t", "allowed_sources", "CIDRs"),
        (T + "allowed_sources = '10.0.0.1'\n", "trunks.t", "allowed_sources", "list of"),
        (T + "auth_by_source = 'yes'\n", "trunks.t", "auth_by_source", "true or false"),
        (T + "username = 'u'\n", "trunks.t", "password", "go together"),
        (T + "password = 'p'\n", "trunks.t", "username", "go together"),
        (T + "dids = ['alice']\n", "trunks.t", "dids", "a table of strings"),
        (T + "dids = {'+49' = 5}\n", "trunks.t", "dids", "entry '+49': expected a string"),
        (T + "dids = {'+49' = ''}\n", "trunks.t", "dids", "account name"),
        (T + "dids = {'' = 'alice'}\n", "trunks.t", "dids", "must not be empty"),
        (T + "caller_id = 'alice'\n", "trunks.t", "caller_id", "expected a number"),
        (T + "caller_id = ''\n", "trunks.t", "caller_id", "expected a number"),
        (T + "caller_id = 4930\n", "trunks.t", "caller_id", "expected a string"),
        (T + "max_calls = -1\n", "trunks.t", "max_calls", "0 (no limit)"),
        (T + "max_cps = -1\n", "trunks.t", "max_cps", "calls per second"),
        (T + "max_cps = 1e9\n", "trunks.t", "max_cps", "calls per second"),
        (T + "media_policy = ''\n", "trunks.t", "media_policy", "policy name"),
        (T + "enabled = 1\n", "trunks.t", "enabled", "true or false"),
        (T + "colour = 'red'\n", "trunks.t", "colour", "unknown key"),
        (T + T, "trunks.t", "name", "already called 't'"),
        (T + "voicemail = 'yes'\n", "trunks.t", "voicemail", "true or false"),
        (
            T + "voicemail = true\n" + T.replace('"t"', '"u"') + "voicemail = true\n",
            "trunks.u",
            "voicemail",
            "trunk 't' is the voicemail service already",
        ),
    ],
)
def test_errors_name_file_table_and_key(
    tmp_path: Path, text: str, table: str, key: str | None, words: str
) -> None:
    err = load_error(tmp_path, text)
    assert err.table == table
    assert err.key == key
    assert words in str(err)
    assert str(err).startswith(f"{tmp_path / 'voipgw.toml'}: [{table}]")


def test_unknown_table_message_lists_trunks(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[trunk]\n")
    assert err.table == "trunk"
    assert "trunks" in str(err)


def test_voicemail_trunk(tmp_path: Path) -> None:
    text = T + T.replace('"t"', '"vm"') + "voicemail = true\n"
    config = cfg.from_toml(write(tmp_path, text))
    assert config.voicemail_trunk is not None and config.voicemail_trunk.name == "vm"
    assert not config.trunks[0].voicemail
    assert cfg.from_toml(write(tmp_path, T)).voicemail_trunk is None


def test_dtmf_is_rfc4733_unless_declared_info(tmp_path: Path) -> None:
    config = cfg.from_toml(
        write(
            tmp_path,
            '[[trunks]]\nname = "pbx"\naddress = "udp:192.0.2.20:5060"\ndtmf = "info"\n'
            '[[trunks]]\nname = "carrier"\naddress = "udp:192.0.2.10:5060"\n',
        )
    )
    pbx, carrier = config.trunks
    assert (pbx.dtmf, carrier.dtmf) == ("info", "rfc4733")


def test_an_unknown_dtmf_mode_names_the_trunk_key(tmp_path: Path) -> None:
    error = load_error(
        tmp_path, '[[trunks]]\nname = "pbx"\naddress = "udp:192.0.2.20:5060"\ndtmf = "inband"\n'
    )
    assert "dtmf" in str(error) and "trunks" in str(error)
    assert "'rfc4733'" in str(error) and "'info'" in str(error)


G711_TRUNKS = (
    '[[trunks]]\nname = "eu"\naddress = "udp:192.0.2.30:5060"\ng711_transcoding = true\n'
    '[[trunks]]\nname = "never"\naddress = "udp:192.0.2.31:5060"\ng711_transcoding = false\n'
    '[[trunks]]\nname = "us"\naddress = "udp:192.0.2.32:5060"\n'
)


@pytest.mark.parametrize("media", [False, True])
def test_g711_transcoding_per_trunk_overrides_media(tmp_path: Path, media: bool) -> None:
    text = f"[media]\ng711_transcoding = {str(media).lower()}\n" + G711_TRUNKS
    config = cfg.from_toml(write(tmp_path, text))
    assert [t.g711_transcoding for t in config.trunks] == [True, False, None]
    assert config.media.g711_transcoding is media  # the global default, as it was
    assert config.g711_transcoding_for([]) is media  # account to account
    assert config.g711_transcoding_for(["us"]) is media
    assert config.g711_transcoding_for(["eu"]) is True
    assert config.g711_transcoding_for(["us", "eu"]) is True  # an alternate needs it
    assert config.g711_transcoding_for(["never"]) is False
    assert config.g711_transcoding_for(["eu", "never"]) is False  # false wins
    assert config.g711_transcoding_for(["gone"]) is media  # not a trunk (any more)


def test_a_bad_g711_transcoding_names_file_table_and_key(tmp_path: Path) -> None:
    error = load_error(
        tmp_path,
        '[[trunks]]\nname = "eu"\naddress = "udp:192.0.2.30:5060"\ng711_transcoding = "yes"\n',
    )
    assert (error.table, error.key) == ("trunks.eu", "g711_transcoding")
    assert "expected true or false" in str(error)
