"""Values the loader accepted though the gateway could not work with them (the config fuzzer's
leftovers, docs/configuration.md): refused naming the file, table, key, the value and the range
allowed, or, for values an earlier version ran with that do nothing or harm (a ``domains``
entry that is no host, a DID that is no number, an X1 port of 0, a MIKEY key for a trunk no
``[[trunks]]`` has), errors of ``voipgw check-config`` (exit 2) and warnings of ``voipgw run``
(``Gateway.value_errors``, as ``name_errors``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core import cli
from gateway.core import config as config_mod
from gateway.core import gateway as gateway_mod
from gateway.core.config import (
    ConfigError,
    directory_problem,
    from_mapping,
    user_name,
    value_warnings,
    with_overrides,
)
from gateway.core.gateway import Gateway
from gateway.core.plugins import load_plugins


def refused(data: dict[str, Any]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        from_mapping(data, file="voipgw.toml")
    return caught.value


@pytest.mark.parametrize(
    ("table", "key", "value", "words"),
    [
        ("sip", "t1", 1e300, "t1: expected seconds from 0.01 to 4 (the round-trip estimate"),
        ("sip", "t1", 1e-9, "t1: expected seconds from 0.01 to 4"),
        ("sip", "t2", 0.1, "t2: expected seconds from t1 (0.5) to 60"),
        ("sip", "t2", 1e300, "t2: expected seconds from t1 (0.5) to 60"),
        ("sip", "t4", 1e300, "t4: expected seconds above 0, at most 60"),
        # Zero or negative timers said "expected a positive number of seconds" without the value.
        ("sip", "t1", 0.0, "t1: expected a positive number of seconds"),
        ("sip", "t2", -1.0, "t2: expected a positive number of seconds"),
        ("sip", "t4", 0.0, "t4: expected a positive number of seconds"),
        ("sip", "t4", -0.5, "t4: expected a positive number of seconds"),
        ("gateway", "auth_failure_window", 0.0, "auth_failure_window: expected seconds above 0"),
        ("dns", "timeout", 5e-5, "timeout: expected a positive number of seconds, at least"),
        ("sip", "ring_timeout", 1e-9, "ring_timeout: expected a positive number of seconds, at"),
        ("media", "inactivity_timeout", 1e-9, "inactivity_timeout: expected a positive number"),
        ("media", "inactivity_timeout", 0.9, "inactivity_timeout: expected a positive number"),
        ("media", "hold_timeout", 9.5, "hold_timeout: expected a positive number of seconds, at"),
        ("media", "worker_ready_timeout", 1.0, "worker_ready_timeout: expected seconds from 5 (a"),
        ("media", "worker_ready_timeout", 1e300, "worker_ready_timeout: expected seconds from 5"),
        ("media", "address", "0.0.0.0", "address: expected the unicast address phones send"),
        ("media", "address", "::", "address: expected the unicast address phones send media"),
        ("media", "address", "ff02::1", "address: expected the unicast address phones send"),
    ],
)
def test_a_value_out_of_its_bounds_is_refused_with_the_value_and_the_range(
    table: str, key: str, value: object, words: str
) -> None:
    error = refused({table: {key: value}})
    assert (error.file, error.table, error.key) == ("voipgw.toml", table, key)
    assert str(error).startswith(f"voipgw.toml: [{table}] {words}"), str(error)
    shown = f"{value:g}" if isinstance(value, float) else repr(value)
    assert str(error).endswith(f"got {shown}"), str(error)


@pytest.mark.parametrize(
    "sip",
    [
        {"t1": 0.01, "t2": 0.01, "t4": 0.001},
        {"t4": 1e-9},  # Timers I and K as on TCP (0): retransmissions arriving later are strays
        {"t1": 4.0, "t2": 60.0, "t4": 60.0},
        {"t1": 0.02},  # the interop tests' fast retransmissions
        {"ring_timeout": 1.0},
    ],
)
def test_the_bounds_themselves_are_accepted(sip: dict[str, float]) -> None:
    config = from_mapping({"sip": sip, "media": {"inactivity_timeout": 1, "hold_timeout": 10}})
    assert config.sip.t1 == sip.get("t1", 0.5)


def test_a_trunk_response_timeout_too_short_for_any_answer_is_refused() -> None:
    trunk = {"name": "carrier", "address": "udp:192.0.2.10:5060"}
    error = refused({"trunks": [{**trunk, "response_timeout": 1e-9}]})
    assert (error.table, error.key) == ("trunks.carrier", "response_timeout")
    assert "expected 0 (Timer B) or seconds from 0.2" in error.message
    assert (
        "expected 0 (Timer B) or seconds from 0.2"
        in refused({"trunks": [{**trunk, "response_timeout": 0.19}]}).message
    )
    # A trunk on a LAN answers its 100 in milliseconds: fast failover there must stay possible.
    for fine in (0, 0.2, 0.3, 0.5, 4):
        from_mapping({"trunks": [{**trunk, "response_timeout": fine}]})


def test_the_media_address_from_the_command_line_is_checked_too() -> None:
    with pytest.raises(ConfigError) as caught:
        with_overrides(from_mapping({}), {"media": {"address": "0.0.0.0"}}, origin="command line")
    assert str(caught.value).startswith("command line: [media] address: expected the unicast")


@pytest.mark.parametrize(
    "domain", ["localhost", "voip.example.com", "voip.example.com.", "192.0.2.1", "[::1]", "::1"]
)
def test_host_names_and_addresses_are_domains(domain: str) -> None:
    assert value_warnings(from_mapping({"gateway": {"domains": [domain, "x.example:5060"]}})) == []


@pytest.mark.parametrize("domain", ["not a host", "sip:example.com", "alice@example.com", "-x.y"])
def test_a_domain_that_is_no_host_name_is_an_error_for_check_config(domain: str) -> None:
    config = from_mapping({"gateway": {"domains": ["ok.example", domain]}}, file="voipgw.toml")
    (error,) = value_warnings(config)
    assert (error.table, error.key) == ("gateway", "domains")
    assert error.message.startswith("expected host names or IP addresses (RFC 3261 §25.1")
    assert f"got {domain!r}: no request names it" in error.message


def test_a_did_that_is_no_number_is_an_error_for_check_config() -> None:
    dids = {"+49 30 123-456": "alice", "*86": "vm", "0301234;phone-context=+49": "bob"}
    trunk = {"name": "carrier", "address": "udp:192.0.2.10:5060", "dids": dids}
    assert value_warnings(from_mapping({"trunks": [trunk]})) == []
    trunk["dids"] = {**dids, "alice": "alice"}
    (error,) = value_warnings(from_mapping({"trunks": [trunk]}, file="voipgw.toml"))
    assert str(error).startswith(
        'voipgw.toml: [trunks.carrier] dids: expected numbers ("+" and digits, "*" or "#";'
    )
    assert "got 'alice': calls out through the trunk would present it" in str(error)


def test_a_state_dir_that_cannot_be_created_is_said_before_run_fails(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert directory_problem(tmp_path) is None
    assert directory_problem(tmp_path / "new" / "deeper") is None  # run creates it
    assert directory_problem(a_file) == f"{a_file} is not a directory"
    assert directory_problem(a_file / "state") == (
        f"{a_file / 'state'} cannot be created: {a_file} is not a directory"
    )
    assert "longer than 255 bytes" in str(directory_problem(tmp_path / ("x" * 256)))


def test_a_state_dir_through_a_link_to_nothing_is_said_before_run_fails(tmp_path: Path) -> None:
    """/var/lib/voipgw a symbolic link to a volume not mounted yet: run's mkdir stopped it with
    a bare "[Errno 17] File exists" that named no key."""
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "not-mounted" / "voipgw")
    for state_dir in (link, link / "state"):
        with pytest.raises(FileExistsError):
            state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # what run does
        assert directory_problem(state_dir) == (
            f"{state_dir} cannot be created: {link} is a symbolic link to "
            f"{tmp_path / 'not-mounted' / 'voipgw'}, which does not exist"
        )


def gateway_of(tmp_path: Path, **tables: Any) -> Gateway:
    data = {
        "gateway": {"state_dir": str(tmp_path / "state")},
        "sip": {"listen": ["udp:127.0.0.1:0"]},
        "plugins": {"enable": ["udp"]},
    }
    for name, table in tables.items():
        data[name] = {**data.get(name, {}), **table}
    config = from_mapping(data, file=str(tmp_path / "voipgw.toml"))
    return Gateway(config, load_plugins(config))


def test_check_refuses_a_state_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    built = gateway_of(tmp_path, gateway={"state_dir": str(tmp_path / "file" / "state")})
    with pytest.raises(ConfigError) as caught:
        built.check()
    assert (caught.value.table, caught.value.key) == ("gateway", "state_dir")
    assert caught.value.message.endswith(
        f"cannot be created: {tmp_path / 'file'} is not a directory"
    )


def test_run_says_them_as_warnings_and_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gateway upgraded with such a value keeps carrying calls: serve() warns and goes on
    to open its store (where this test stops it)."""
    built = gateway_of(tmp_path, gateway={"domains": ["pbx_1.local"]})

    class Opened(Exception):
        pass

    def open_store(*args: object, **kwargs: object) -> None:
        raise Opened

    monkeypatch.setattr(gateway_mod, "open_store", open_store)
    caplog.set_level(logging.WARNING)
    with pytest.raises(Opened):
        trio.run(built.serve)
    said = [(r.levelno, r.getMessage()) for r in caplog.records if "pbx_1" in r.getMessage()]
    assert said == [
        (
            logging.WARNING,
            f"configuration: {tmp_path / 'voipgw.toml'}: [gateway] domains: expected host names "
            "or IP addresses (RFC 3261 §25.1 hostport: letters, digits, inner hyphens and dots; "
            "an optional :PORT), got 'pbx_1.local': no request names it",
        )
    ]


def check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(["check-config", str(path)])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_config_refuses_a_warned_value_with_exit_2_and_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\ndomains = ["a b", "ok.example"]\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0"]\n[plugins]\nenable = ["udp"]\n'
        '[[trunks]]\nname = "carrier"\naddress = "udp:192.0.2.10:5060"\n'
        'dids = {"alice" = "alice"}\n'
    )
    code, out, err = check_config(path, capsys)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err.splitlines() == [
        f"voipgw: configuration error: {path}: [gateway] domains: expected host names or IP "
        "addresses (RFC 3261 §25.1 hostport: letters, digits, inner hyphens and dots; an "
        "optional :PORT), got 'a b': no request names it",
        f"voipgw: configuration error: {path}: [trunks.carrier] dids: expected numbers "
        '("+" and digits, "*" or "#"; separators " -.()" are read), got \'alice\': calls out '
        "through the trunk would present it as their caller ID",
    ]


def test_check_config_refuses_a_value_out_of_bounds_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "voipgw.toml"
    path.write_text('[plugins]\nenable = ["udp"]\n[sip]\nt1 = 1e300\n')
    code, out, err = check_config(path, capsys)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err == (
        f"voipgw: configuration error: {path}: [sip] t1: expected seconds from 0.01 to 4 (the "
        "round-trip estimate, RFC 3261 §17.1.1.1; Timers B and F are 64*T1), got 1e+300\n"
    )


# Each plugin table's own (the table as the smallest file that enables it needs it).
PLUGIN_TABLES: dict[str, dict[str, Any]] = {
    "siprec": {"srs": "sip:srs@192.0.2.5", "all_calls": True},
}


def plugin_config(plugin: str, table: dict[str, Any]) -> object:
    config = from_mapping(
        {"plugins": {"enable": [plugin], plugin: {**PLUGIN_TABLES.get(plugin, {}), **table}}},
        file="voipgw.toml",
    )
    return load_plugins(config).configs[plugin]


@pytest.mark.parametrize(
    ("plugin", "key", "value", "words"),
    [
        ("tcp", "idle_timeout", 1e-9, "idle_timeout: expected a positive number of seconds, at "),
        ("tcp", "idle_timeout", 0.4, "idle_timeout: expected a positive number of seconds, at "),
        ("tcp", "connect_timeout", 0.0, "connect_timeout: expected a positive number"),
        ("tls", "idle_timeout", 1e-9, "idle_timeout: expected a positive number of seconds, at "),
        ("tls", "handshake_timeout", 1e-9, "handshake_timeout: expected a positive number of "),
        ("ws", "handshake_timeout", 1e-9, "handshake_timeout: expected a positive number of "),
        ("ws", "ping_interval", 1e-9, "ping_interval: expected a positive number of seconds, "),
        ("tls", "handshake_timeout", 5e-5, "handshake_timeout: expected a positive number of "),
        ("tcp", "connect_timeout", 1e-9, "connect_timeout: expected a positive number of "),
        ("tcp", "connect_timeout", 5e-6, "connect_timeout: expected a positive number of "),
        ("tls", "connect_timeout", 1e-9, "connect_timeout: expected a positive number of "),
        ("tls", "connect_timeout", 5e-5, "connect_timeout: expected a positive number of "),
        ("ws", "handshake_timeout", 5e-6, "handshake_timeout: expected a positive number of "),
        ("wss", "handshake_timeout", 5e-5, "handshake_timeout: expected a positive number of "),
        ("dtls", "handshake_timeout", 5e-5, "handshake_timeout: expected a positive number of "),
        ("zrtp", "handshake_timeout", 5e-5, "handshake_timeout: expected a positive number of "),
        ("mikey", "max_clock_skew", 0.0, "max_clock_skew: expected a positive number of "),
        ("mikey", "max_clock_skew", 5e-6, "max_clock_skew: expected a positive number of "),
        ("stir_shaken", "fetch_timeout", 5e-5, "fetch_timeout: expected a positive number of "),
        ("stir_shaken", "freshness", 0.4, "freshness: expected a positive number of seconds, "),
        ("stir_shaken", "certificate_cache", 0.0, "certificate_cache: expected a positive "),
        ("wss", "ping_interval", 0.5, "ping_interval: expected a positive number of seconds, "),
        ("wss", "handshake_timeout", 1e-9, "handshake_timeout: expected a positive number of "),
        ("dtls", "handshake_timeout", 1e-9, "handshake_timeout: expected a positive number of "),
        ("zrtp", "handshake_timeout", 1e-9, "handshake_timeout: expected a positive number of "),
        ("mikey", "max_clock_skew", 1e-9, "max_clock_skew: expected a positive number of "),
        ("siprec", "bye_timeout", 1e-9, "bye_timeout: expected a positive number of seconds, at"),
        ("siprec", "bye_timeout", -5.0, "bye_timeout: expected a positive number of seconds, at"),
        ("stir_shaken", "fetch_timeout", 1e-9, "fetch_timeout: expected a positive number of "),
        ("stir_shaken", "freshness", 1e-9, "freshness: expected a positive number of seconds, "),
    ],
)
def test_a_plugin_duration_that_ends_everything_at_once_is_refused(
    plugin: str, key: str, value: float, words: str
) -> None:
    """1e-9 s passed "a positive number": every connection, handshake, recording session's
    BYE or certificate fetch then failed at once (or pinged in a busy loop)."""
    with pytest.raises(ConfigError) as caught:
        plugin_config(plugin, {key: value})
    error = caught.value
    assert (error.file, error.table, error.key) == ("voipgw.toml", f"plugins.{plugin}", key)
    assert str(error).startswith(f"voipgw.toml: [plugins.{plugin}] {words}"), str(error)
    assert str(error).endswith(f"got {value:g}"), str(error)


@pytest.mark.parametrize(
    ("plugin", "table"),
    [
        ("tcp", {"idle_timeout": 0.5, "connect_timeout": 0.05}),
        ("tcp", {"connect_timeout": 1e-5}),
        ("tls", {"idle_timeout": 0.5, "handshake_timeout": 0.5}),
        ("tls", {"handshake_timeout": 1e-4, "connect_timeout": 1e-4}),
        ("ws", {"handshake_timeout": 0.5, "ping_interval": 1.0, "idle_timeout": 1.5}),
        ("ws", {"handshake_timeout": 1e-5}),
        ("wss", {"handshake_timeout": 0.5, "ping_interval": 1.0, "idle_timeout": 1.5}),
        ("wss", {"handshake_timeout": 1e-4}),
        ("dtls", {"handshake_timeout": 1.0}),
        ("dtls", {"handshake_timeout": 1e-4}),
        ("zrtp", {"handshake_timeout": 1.0}),
        ("zrtp", {"handshake_timeout": 1e-4}),
        ("mikey", {"max_clock_skew": 1.0}),
        ("mikey", {"max_clock_skew": 1e-5}),
        ("siprec", {"bye_timeout": 0.5}),
        ("stir_shaken", {"fetch_timeout": 1.0, "freshness": 1.0, "certificate_cache": 1.0}),
        ("stir_shaken", {"fetch_timeout": 1e-4, "freshness": 0.5, "certificate_cache": 1e-9}),
    ],
)
def test_the_plugin_bounds_themselves_are_accepted(plugin: str, table: dict[str, float]) -> None:
    config = plugin_config(plugin, table)
    assert all(getattr(config, key) == value for key, value in table.items())


# Values the loader refused before this version though they work on a LAN or a test bench:
# allowed now, and said (errors of check-config, warnings of run) with what they cost.
WARNED_PLUGIN_VALUES = [
    ("tls", "handshake_timeout", 0.1, "handshake_timeout: 0.1 s works only for peers on the"),
    ("ws", "handshake_timeout", 0.1, "handshake_timeout: 0.1 s works only for browsers on"),
    ("wss", "handshake_timeout", 0.1, "handshake_timeout: 0.1 s works only for browsers on"),
    ("wss", "handshake_timeout", 1e-4, "handshake_timeout: 0.0001 s works only for browsers"),
    ("dtls", "handshake_timeout", 0.05, "handshake_timeout: 0.05 s works only for peers on"),
    ("zrtp", "handshake_timeout", 0.5, "handshake_timeout: 0.5 s works only for peers on the"),
    ("mikey", "max_clock_skew", 0.01, "max_clock_skew: 0.01 s works only for peers on the host"),
    ("stir_shaken", "fetch_timeout", 0.2, "fetch_timeout: 0.2 s works only with a certificate"),
    ("stir_shaken", "freshness", 0.5, "freshness: 0.5 s refuses a share of the calls at random"),
]


def test_a_tiny_certificate_cache_is_a_choice_not_a_warning(tmp_path: Path) -> None:
    """certificate_cache has no 0: a tiny one is how an operator keeps no certificate (every
    verified call fetches it again), which earlier releases took without a word. An error of
    check-config (exit 2) would fail the deployment pipelines of those who chose it; and the
    repository's Cache-Control max-age never keeps a certificate longer than this."""
    assert plugin_config("stir_shaken", {"certificate_cache": 0.5}).config_warnings() == []
    built = gateway_of(
        tmp_path,
        plugins={"enable": ["udp", "stir_shaken"], "stir_shaken": {"certificate_cache": 1e-3}},
    )
    built.check()
    assert built.check_errors == []


@pytest.mark.parametrize(("plugin", "key", "value", "words"), WARNED_PLUGIN_VALUES)
def test_a_plugin_value_that_works_only_on_a_lan_is_allowed_and_said(
    tmp_path: Path, plugin: str, key: str, value: float, words: str
) -> None:
    config = plugin_config(plugin, {key: value})
    assert getattr(config, key) == value
    warnings = config.config_warnings()  # type: ignore[attr-defined]
    assert [w for w in warnings if w.startswith(f"{key}: ")] == [
        next(w for w in warnings if w.startswith(words))
    ]
    # Through the gateway: an error of check-config and a warning of run (check_errors).
    built = gateway_of(tmp_path, plugins={"enable": ["udp", plugin], plugin: {key: value}})
    built.check()
    errors = [e for e in built.check_errors if (e.table, e.key) == (f"plugins.{plugin}", key)]
    assert len(errors) == 1
    assert str(errors[0]).startswith(f"{tmp_path / 'voipgw.toml'}: [plugins.{plugin}] {words}")
    # From the old floor (what the loader refused below before) on, nothing is said.
    old_floor = 0.5 if plugin in ("tls", "ws", "wss") else 1.0
    quiet = plugin_config(plugin, {key: old_floor}).config_warnings()  # type: ignore[attr-defined]
    assert [w for w in quiet if w.startswith(f"{key}: ")] == []


@pytest.mark.parametrize(
    ("table", "key", "value", "words"),
    [
        ("dns", "timeout", 0.1, "0.1 s works only with a resolver on the host or the LAN"),
        ("gateway", "auth_failure_window", 0.5, "0.5 s lets a password guesser 10 guesses a "),
        # 1e-9 turned the password-guessing limit off without a word. Earlier releases loaded
        # it, and it is the only way to turn the limit off (a gateway behind a proxy): said,
        # never refused at load, so an upgraded gateway still starts.
        ("gateway", "auth_failure_window", 1e-9, "1e-09 s is shorter than the gateway takes"),
        ("gateway", "auth_failure_window", 5e-6, "5e-06 s is shorter than the gateway takes to"),
    ],
)
def test_a_core_value_that_works_only_on_a_lan_is_allowed_and_said(
    table: str, key: str, value: float, words: str
) -> None:
    config = from_mapping({table: {key: value}}, file="voipgw.toml")
    (error,) = value_warnings(config)
    assert (error.table, error.key) == (table, key)
    assert error.message.startswith(words), error.message
    assert value_warnings(from_mapping({table: {key: 1.0}})) == []
    assert value_warnings(from_mapping({})) == []


def test_a_short_window_with_a_ban_is_still_said_with_the_rate_the_ban_never_stops() -> None:
    """A ban begins only at auth_max_failures failures within auth_failure_window: a guesser
    spacing its guesses window / (auth_max_failures - 1) apart is never banned (8 a second at
    0.5 s and 5), so a ban does not make a short window harmless; with one failure enough for
    a ban the window decides nothing, and nothing is said."""
    gateway = {"auth_failure_window": 0.5, "auth_block_time": 600}
    (error,) = value_warnings(from_mapping({"gateway": gateway}))
    assert (error.table, error.key) == ("gateway", "auth_failure_window")
    assert error.message.startswith(
        "0.5 s lets a password guesser 8 guesses a second from one address (6.91e+05 a day) "
        "that auth_block_time never bans: a ban begins only at 5 failures within the window"
    ), error.message
    (error,) = value_warnings(from_mapping({"gateway": {**gateway, "auth_failure_window": 1e-9}}))
    assert error.message.startswith("1e-09 s is shorter than the gateway takes"), error.message
    one = {"auth_max_failures": 1, "auth_block_time": 600}
    for window in (0.5, 1e-9):
        config = from_mapping({"gateway": {**one, "auth_failure_window": window}})
        assert value_warnings(config) == []


@pytest.mark.parametrize("block_time", [0, 600])
def test_a_short_window_names_the_ipv6_prefix_a_guesser_is_counted_as(block_time: int) -> None:
    """With ``auth_ipv6_prefix_length`` below 128 one guesser is a whole IPv6 prefix, not one
    address: the short-window warning says so (it said "from one address")."""
    gateway = {
        "auth_failure_window": 0.5,
        "auth_block_time": block_time,
        "auth_ipv6_prefix_length": 64,
    }
    (error,) = value_warnings(from_mapping({"gateway": gateway}))
    assert (error.table, error.key) == ("gateway", "auth_failure_window")
    guesses = "8" if block_time else "10"
    assert error.message.startswith(
        f"0.5 s lets a password guesser {guesses} guesses a second from one IPv4 address or "
        "IPv6 /64 prefix ("
    ), error.message


def test_check_config_refuses_a_value_of_the_lan_band_and_run_would_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        '[plugins]\nenable = ["udp", "dtls"]\n[plugins.dtls]\nhandshake_timeout = 0.05\n'
        f'state_dir = "{tmp_path / "state"}"\n'
    )
    code, out, err = check_config(path, capsys)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err.startswith(
        f"voipgw: configuration error: {path}: [plugins.dtls] handshake_timeout: 0.05 s works "
        "only for peers on the host or the LAN"
    )


@pytest.mark.parametrize(
    ("table", "key", "value"),
    [
        ("gateway", "drain_timeout", -1.0),
        ("gateway", "auth_max_failures", 0),
        ("gateway", "psap_callback_window", -1.0),
        ("sip", "max_message_size", 10),
        ("sip", "max_headers", 3),
        ("sip", "overload_queue_delay", -1.0),
        ("sip", "overload_retry_after", -1),
        ("sip", "max_redirects", 99),
        ("sip", "min_se", 10),
        ("sip", "session_expires", 30),
        ("sip", "nat_keepalive_interval", 1.0),
        ("media", "workers", 0),
        ("media", "worker_ready_timeout", 0.0),
        ("store", "call_record_days", -1.0),
        ("dns", "min_ttl", 0.5),
        ("dns", "max_ttl", 1e6),
        ("dns", "retry_interval", 0.5),
        ("dns", "max_targets", 0),
    ],
)
def test_every_bound_error_shows_the_value_it_refused(table: str, key: str, value: object) -> None:
    error = refused({table: {key: value}})
    assert (error.table, error.key) == (table, key)
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    assert error.message.endswith(f"got {shown}"), error.message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_calls", -1),
        ("max_cps", -1.0),
        ("options_interval", 1.0),
        ("register_expires", 10),
    ],
)
def test_every_trunk_bound_error_shows_the_value_it_refused(key: str, value: object) -> None:
    trunk = {"name": "carrier", "address": "udp:192.0.2.10:5060", key: value}
    error = refused({"trunks": [trunk]})
    assert (error.table, error.key) == ("trunks.carrier", key)
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    assert error.message.endswith(f"got {shown}"), error.message


def test_check_config_as_another_user_warns_of_a_state_dir_only_its_permissions_forbid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator runs check-config as themselves before `systemctl reload`: /var/lib not
    writable by them says nothing of the service's user, so it is a warning naming the user
    who ran it, not an error (exit 0); `voipgw run` (the service) still refuses it."""
    state = tmp_path / "lib" / "voipgw"
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{state}"\n[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        '[plugins]\nenable = ["udp"]\n'
    )
    (tmp_path / "lib").mkdir()
    lib = tmp_path / "lib"
    real_access = config_mod.os.access
    monkeypatch.setattr(  # (root may write anywhere: the answer another user gets)
        config_mod.os, "access", lambda p, mode: False if Path(p) == lib else real_access(p, mode)
    )
    code, out, err = check_config(path, capsys)
    assert code == cli.EXIT_OK, err
    assert err == (
        f"voipgw: warning: {path}: [gateway] state_dir: {state} cannot be created: {lib} is "
        f"not writable by this user ({user_name()}), who runs check-config: the service's user "
        "may be allowed to; `voipgw run` as a user who is not refuses to start (check it as "
        "that user: sudo -u USER voipgw check-config FILE)\n"
    )
    assert out.endswith("OK (1 plugins: udp)\n")
    built = gateway_of(tmp_path, gateway={"state_dir": str(state)})
    with pytest.raises(ConfigError) as caught:
        built.check()  # as the service: voipgw run
    assert (caught.value.table, caught.value.key) == ("gateway", "state_dir")
    assert caught.value.message == (
        f"{state} cannot be created: {lib} is not writable by this user ({user_name()})"
    )
    # What no user could do stays an error of check-config: a file in the path.
    (tmp_path / "file").write_text("")
    path.write_text(path.read_text().replace(str(state), str(tmp_path / "file" / "state")))
    code, out, err = check_config(path, capsys)
    assert code != cli.EXIT_OK
    assert "is not a directory" in err


def test_a_state_dir_on_a_read_only_file_system_stays_an_error_of_check_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A parent on a read-only mount (a container's read-only root) is writable by no user,
    the service's and root included: check-config says so as an error (exit 2, as before the
    permission became the checking user's warning), not "the service's user may be allowed"."""
    state = tmp_path / "lib" / "voipgw"
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{state}"\n[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        '[plugins]\nenable = ["udp"]\n'
    )
    lib = tmp_path / "lib"
    lib.mkdir()
    real_access, real_statvfs = config_mod.os.access, config_mod.os.statvfs

    class ReadOnly:
        f_flag = config_mod.os.ST_RDONLY

    monkeypatch.setattr(  # what a read-only mount answers, root included (EROFS)
        config_mod.os, "access", lambda p, mode: False if Path(p) == lib else real_access(p, mode)
    )
    monkeypatch.setattr(
        config_mod.os, "statvfs", lambda p: ReadOnly() if Path(p) == lib else real_statvfs(p)
    )
    monkeypatch.setattr(config_mod, "mount_point", lambda p: Path("/srv"))
    code, out, err = check_config(path, capsys)
    assert (code, out) == (cli.EXIT_USAGE, "")
    assert err == (
        f"voipgw: configuration error: {path}: [gateway] state_dir: {state} cannot be created: "
        f"{lib} is on a read-only file system (mount /srv read-write)\n"
    )


def test_the_media_worker_ready_timeout_is_60_s_unless_set() -> None:
    assert from_mapping({}).media.worker_ready_timeout == 60.0
    for seconds in (5, 3600, 90.5):
        config = from_mapping({"media": {"worker_ready_timeout": seconds}})
        assert config.media.worker_ready_timeout == seconds
