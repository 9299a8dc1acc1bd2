from __future__ import annotations

from pathlib import Path

import pytest

from gateway.core import config as cfg
from gateway.core.config import ConfigError, ListenSpec, PortRange


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "voipgw.toml"
    path.write_text(text)
    return path


def test_embedded_defaults_match_the_documented_ones() -> None:
    config = cfg.embedded_defaults()
    assert config.sip.listen is None
    assert config.listen == ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060", "tls:127.0.0.1:5061")
    only_udp = cfg.from_mapping({"plugins": {"enable": ["udp"]}})
    assert only_udp.listen == ("udp:127.0.0.1:5060",)
    assert config.media.address == "127.0.0.1"
    assert config.media_ports == PortRange(30000, 30999)
    assert config.gateway.state_dir == "./voipgw-state"
    assert config.gateway.realm == "voipgw.local"
    assert config.plugins.enable == ("udp", "tcp", "tls", "sdes", "dtls")


def test_full_file_is_structured(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[gateway]
state_dir = "/var/lib/voipgw"
domains = ["example.net"]
[sip]
listen = ["udp:[::1]:5070"]
t1 = 1
[media]
ports = "40000-40099"
[plugins]
enable = ["udp"]
[plugins.udp]
receive_buffer = 4096
""",
    )
    config = cfg.from_toml(path)
    assert config.source == str(path)
    assert config.gateway.domains == ("example.net",)
    assert config.sip.t1 == 1.0 and isinstance(config.sip.t1, float)
    assert config.listen_specs == (ListenSpec("udp", "::1", 5070),)
    assert config.plugin_tables == {"udp": {"receive_buffer": 4096}}


@pytest.mark.parametrize(
    ("text", "table", "key", "words"),
    [
        ("[sip]\nlisten = 'udp:127.0.0.1:5060'\n", "sip", "listen", "list of strings"),
        ("[sip]\nt1 = 'fast'\n", "sip", "t1", "expected a number"),
        ("[sip]\nlistne = []\n", "sip", "listne", "unknown key"),
        ("[sip]\nlisten = ['udp:127.0.0.1:70000']\n", "sip", "listen", "0-65535"),
        ("[sip]\nlisten = ['udp:example.com:5060']\n", "sip", "listen", "IP address"),
        ("[media]\nports = '5-6'\n", "media", "ports", "LOW < HIGH"),
        # Even RTP ports 40002 and 40004, but 40005 for the second RTCP is outside.
        ("[media]\nports = '40001-40004'\n", "media", "ports", "fewer than two"),
        ("[media]\naddress = 'localhost'\n", "media", "address", "IP address"),
        ("[gateway]\ngc_thresholds = [700, 10]\n", "gateway", "gc_thresholds", "three integers"),
        ("[gateway]\nlog_level = 'loud'\n", "gateway", "log_level", "one of"),
        ("[gateway]\ndrain_timeout = -1\n", "gateway", "drain_timeout", "0 (stop at once)"),
        ("[gateway]\ndrain_timeout = 1e6\n", "gateway", "drain_timeout", "to 86400 seconds"),
        ("[gateway]\ndrain_timeout = 'long'\n", "gateway", "drain_timeout", "a number"),
        ("[plugins]\nenable = ['udp', 'udp']\n", "plugins", "enable", "more than once"),
        ("[plugins]\nenable = ['udp']\n[plugins.tcp]\n", "plugins.tcp", None, "not in"),
        ("[bogus]\n", "bogus", None, "unknown table"),
        ("[sip]\nmax_headers = true\n", "sip", "max_headers", "an integer"),
        ("[sip]\nmax_headers = 0\n", "sip", "max_headers", "from 64 to 10000"),
        ("[sip]\nmax_headers = 20000\n", "sip", "max_headers", "from 64 to 10000"),
        ("[sip]\nmax_message_size = 0\n", "sip", "max_message_size", "from 1500 to 1048576"),
        ("[sip]\nmax_message_size = 2e6\n", "sip", "max_message_size", "an integer"),
        ("[sip]\nmax_message_size = 2000000\n", "sip", "max_message_size", "to 1048576"),
        ("[sip]\noverload_queue_delay = 0.6\n", "sip", "overload_queue_delay", "from 0"),
        ("[sip]\noverload_queue_delay = -1\n", "sip", "overload_queue_delay", "from 0"),
        ("[sip]\noverload_retry_after = -5\n", "sip", "overload_retry_after", "0 (no"),
        ("[sip]\noverload_retry_after = 1.5\n", "sip", "overload_retry_after", "an integer"),
        ("[sip]\nring_timeout = 0\n", "sip", "ring_timeout", "positive number of seconds"),
        ("[media]\nhold_timeout = 0\n", "media", "hold_timeout", "positive number"),
        ("[sip]\nmin_se = 60\n", "sip", "min_se", "from 90 (RFC 4028"),
        ("[sip]\nsession_expires = 60\n", "sip", "session_expires", "from min_se (90)"),
        ("[sip]\nmin_se = 600\nsession_expires = 300\n", "sip", "session_expires", "(600)"),
        ("[sip]\nsession_expires = 1e9\n", "sip", "session_expires", "an integer"),
        ("[sip]\nsession_expires = 99999999\n", "sip", "session_expires", "to 604800"),
        ('[sip]\ndrop_user_agents = ["sipcli", ""]\n', "sip", "drop_user_agents", "non-empty"),
        ('[sip]\ndrop_user_agents = ["  "]\n', "sip", "drop_user_agents", "non-empty"),
        ('[sip]\ndrop_user_agents = "sipcli"\n', "sip", "drop_user_agents", "list"),
        ("[gateway]\nauth_max_failures = 0\n", "gateway", "auth_max_failures", "positive"),
        ("[gateway]\nauth_failure_window = 0\n", "gateway", "auth_failure_window", "got 0"),
        ("[gateway]\nauth_failure_window = 1e6\n", "gateway", "auth_failure_window", "86400"),
        ("[gateway]\nauth_block_time = -1\n", "gateway", "auth_block_time", "from 0"),
        ("[gateway]\nauth_block_time = 1e6\n", "gateway", "auth_block_time", "86400, got 1e+06"),
        ("[gateway]\nauth_block_time = nan\n", "gateway", "auth_block_time", "finite"),
        ("[gateway]\nauth_ipv6_prefix_length = 47\n", "gateway", "auth_ipv6_prefix_length", "48"),
        ("[gateway]\nauth_ipv6_prefix_length = 129\n", "gateway", "auth_ipv6_prefix_length", "129"),
        (
            "[gateway]\nauth_ipv6_prefix_length = 64.0\n",
            "gateway",
            "auth_ipv6_prefix_length",
            "int",
        ),
        (
            '[gateway]\nauth_ipv6_prefix_length = "64"\n',
            "gateway",
            "auth_ipv6_prefix_length",
            "int",
        ),
        ('[gateway]\nauth_proxies = ["192.0.2.1/24"]\n', "gateway", "auth_proxies", "CIDRs"),
        ('[gateway]\nauth_proxies = ["proxy.example"]\n', "gateway", "auth_proxies", "CIDRs"),
        ('[gateway]\nauth_proxies = "192.0.2.1"\n', "gateway", "auth_proxies", "list"),
        ('[gateway]\nauth_proxies = ["0.0.0.0/0"]\n', "gateway", "auth_proxies", "/8 at most"),
        ('[gateway]\nauth_proxies = ["2000::/3"]\n', "gateway", "auth_proxies", "/32 at most"),
        ("[gateway]\npsap_callback_window = -1\n", "gateway", "psap_callback_window", "from 0"),
        ("[gateway]\npsap_callback_window = 1e6\n", "gateway", "psap_callback_window", "86400"),
    ],
)
def test_errors_name_file_table_and_key(
    tmp_path: Path, text: str, table: str, key: str | None, words: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        cfg.from_toml(path)
    err = info.value
    assert err.file == str(path)
    assert err.table == table
    assert err.key == key
    assert words in str(err)
    assert str(path) in str(err) and f"[{table}]" in str(err)


def test_unreadable_and_invalid_toml_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        cfg.from_toml(tmp_path / "missing.toml")
    path = write(tmp_path, "[sip\n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        cfg.from_toml(path)
    assert str(path) in str(info.value)


def test_overrides_replace_keys_and_are_validated() -> None:
    config = cfg.with_overrides(
        cfg.embedded_defaults(), {"sip": {"listen": ("tcp:127.0.0.1:0",)}}, origin="command line"
    )
    assert config.sip.listen == ("tcp:127.0.0.1:0",)
    assert config.media.address == "127.0.0.1"
    with pytest.raises(ConfigError, match="command line: \\[media\\] ports"):
        cfg.with_overrides(config, {"media": {"ports": "9-8"}}, origin="command line")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("udp:127.0.0.1:5060", ListenSpec("udp", "127.0.0.1", 5060)),
        ("TLS:[::1]:5061", ListenSpec("tls", "::1", 5061)),
        ("tcp:0.0.0.0:0", ListenSpec("tcp", "0.0.0.0", 0)),
    ],
)
def test_listen_spec_round_trip(text: str, expected: ListenSpec) -> None:
    spec = ListenSpec.parse(text)
    assert spec == expected
    assert ListenSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("text", ["udp", "udp:127.0.0.1", "udp:[::1]5060", ":1.2.3.4:5"])
def test_listen_spec_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        ListenSpec.parse(text)


@pytest.mark.parametrize("text", ["40000-40003", "40001-40005"])
def test_a_port_range_with_two_rtp_rtcp_pairs_is_enough(text: str) -> None:
    assert str(PortRange.parse(text)) == text


def test_scanner_user_agents_and_failure_limit_defaults(tmp_path: Path) -> None:
    config = cfg.from_toml(write(tmp_path, ""))
    assert "friendly-scanner" in config.sip.drop_user_agents  # sipvicious' svmap/svwar/svcrack
    assert (config.gateway.auth_max_failures, config.gateway.auth_failure_window) == (5, 60.0)
    text = (
        "[sip]\ndrop_user_agents = []\n[gateway]\nauth_max_failures = 3\nauth_failure_window = 5\n"
    )
    config = cfg.from_toml(write(tmp_path, text))
    assert config.sip.drop_user_agents == ()
    assert (config.gateway.auth_max_failures, config.gateway.auth_failure_window) == (3, 5.0)


def test_auth_ipv6_prefix_length_defaults_to_one_address(tmp_path: Path) -> None:
    # 128: each IPv6 address counted apart, as before the key; 48 to 128 taken as written.
    assert cfg.from_toml(write(tmp_path, "")).gateway.auth_ipv6_prefix_length == 128
    for length in (48, 56, 64, 128):
        config = cfg.from_toml(write(tmp_path, f"[gateway]\nauth_ipv6_prefix_length = {length}\n"))
        assert config.gateway.auth_ipv6_prefix_length == length


def test_auth_proxies_default_to_none(tmp_path: Path) -> None:
    assert cfg.from_toml(write(tmp_path, "")).gateway.auth_proxies == ()
    text = '[gateway]\nauth_proxies = ["192.0.2.1", "2001:db8::/64"]\n'
    assert cfg.from_toml(write(tmp_path, text)).gateway.auth_proxies == (
        "192.0.2.1",
        "2001:db8::/64",
    )


def test_auth_block_time_defaults_to_no_ban(
    tmp_path: Path,
) -> None:
    # 0: blocked only while the failures lie in the window, as before the key existed (phones
    # behind a shared NAT see no longer blocks after an upgrade).
    assert cfg.from_toml(write(tmp_path, "")).gateway.auth_block_time == 0.0
    for text, seconds in (("0", 0.0), ("600", 600.0), ("86400", 86400.0), ("0.5", 0.5)):
        config = cfg.from_toml(write(tmp_path, f"[gateway]\nauth_block_time = {text}\n"))
        assert config.gateway.auth_block_time == seconds


@pytest.mark.parametrize("value", ["Strict", "strict ", "rfc5057", 1, True])
def test_in_dialog_failures_takes_lenient_or_strict_only_and_names_its_key(value: object) -> None:
    """``[sip] in_dialog_failures``: a bad value is refused naming the file, table and key (a
    typo must not leave the operator believing RFC 5057's table is applied); default lenient."""
    assert cfg.from_mapping({}).sip.in_dialog_failures == "lenient"
    assert cfg.from_mapping({"sip": {"in_dialog_failures": "strict"}}).sip.in_dialog_failures == (
        "strict"
    )
    with pytest.raises(
        ConfigError,
        match=r"^f\.toml: \[sip\] in_dialog_failures: expected one of 'lenient', 'strict', got ",
    ):
        cfg.from_mapping({"sip": {"in_dialog_failures": value}}, file="f.toml")
