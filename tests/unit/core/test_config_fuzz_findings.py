"""What the configuration fuzzer (tests/unit/fuzz/test_fuzz_config.py) found, one plain test
each: every one of these was a traceback, a bare Python error, an error naming no key, or a
value accepted that the gateway could not run with."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest

from gateway.core import config as cfg
from gateway.core.config import ConfigError
from gateway.core.gateway import Gateway
from gateway.core.plugins import load_plugins
from tests.interop.harness.pki import TestPki


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "voipgw.toml"
    if isinstance(text, str):
        text = text.encode()
    path.write_bytes(text)
    return path


def check(path: Path) -> None:
    """What ``voipgw check-config`` runs."""
    config = cfg.from_toml(path)
    Gateway(config, load_plugins(config)).check()


@pytest.mark.parametrize("value", ['"udp"', '["udp"]', "3"])
def test_plugins_that_is_not_a_table_names_it(tmp_path: Path, value: str) -> None:
    # Was: a bare TypeError or ValueError from dict() (a traceback from check-config).
    path = write(tmp_path, f"plugins = {value}\n")
    with pytest.raises(ConfigError) as caught:
        cfg.from_toml(path)
    assert caught.value.table == "plugins"
    assert str(caught.value) == f"{path}: [plugins]: expected a table: [plugins] enable = [...]"


def test_a_plugin_tables_own_checks_name_their_key(tmp_path: Path) -> None:
    # Was: "[plugins.tls]: peers: expected IP:PORT ..." with no key (ConfigError.key None).
    path = write(
        tmp_path,
        '[plugins]\nenable = ["tls"]\n[plugins.tls]\npeers = {"192.0.2.20" = "sip.example"}\n',
    )
    config = cfg.from_toml(path)
    with pytest.raises(ConfigError) as caught:
        load_plugins(config)
    assert (caught.value.table, caught.value.key) == ("plugins.tls", "peers")
    assert str(caught.value).startswith(f"{path}: [plugins.tls] peers: expected IP:PORT")


def test_keys_checked_together_are_named_together() -> None:
    # The intercept plugin's "report_certificate, report_private_key, report_ca: cannot be
    # loaded ..." named no key.
    @attrs.frozen
    class Table:
        a: str = ""
        b: str = ""

        def __attrs_post_init__(self) -> None:
            raise ValueError("a, b: cannot be loaded")

    with pytest.raises(ConfigError) as caught:
        cfg.structure(Table, {}, file="gw.toml", table_name="plugins.x")
    assert caught.value.key == "a, b"
    assert str(caught.value) == "gw.toml: [plugins.x] a, b: cannot be loaded"


def test_bytes_that_are_not_utf8_name_their_line_and_column(tmp_path: Path) -> None:
    # Was: "not UTF-8 text", with nothing to find it by.
    path = write(tmp_path, b'[sip]\nuser_agent = "caf\xe9"\n')
    with pytest.raises(ConfigError) as caught:
        cfg.from_toml(path)
    assert str(caught.value) == f"{path}: not UTF-8 text (at line 2, column 18)"


@pytest.mark.parametrize("key", ["t1", "t2", "t4"])
@pytest.mark.parametrize("value", ["0", "-1", "-0.5"])
def test_sip_timers_must_be_positive(tmp_path: Path, key: str, value: str) -> None:
    # Was: a bare "t1 must be positive" ValueError from the transaction layer (a traceback).
    path = write(tmp_path, f'[plugins]\nenable = ["udp"]\n[sip]\n{key} = {value}\n')
    with pytest.raises(ConfigError) as caught:
        check(path)
    assert (caught.value.table, caught.value.key) == ("sip", key)
    assert caught.value.message == f"expected a positive number of seconds, got {float(value):g}"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("sip", "t1"),
        ("sip", "ring_timeout"),
        ("media", "inactivity_timeout"),
        ("media", "hold_timeout"),
        ("media", "worker_ready_timeout"),
        ("plugins.tcp", "idle_timeout"),
    ],
)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_nan_and_inf_are_refused(tmp_path: Path, table: str, key: str, value: str) -> None:
    # Was: NaN accepted for ring_timeout and the media timeouts (every "x <= 0" check passes
    # it), and a NaN t1 a bare ValueError.
    enable = '[plugins]\nenable = ["udp", "tcp"]\n'
    path = write(tmp_path, f"{enable}[{table}]\n{key} = {value}\n")
    with pytest.raises(ConfigError) as caught:
        check(path)
    assert (caught.value.table, caught.value.key) == (table, key)
    assert caught.value.message == f"expected a finite number, got {float(value)!r}"


def test_a_nul_character_is_refused_naming_the_key(tmp_path: Path) -> None:
    # Was: "[plugins.metrics]: embedded null byte" (os.stat's ValueError), naming no key.
    path = write(
        tmp_path,
        '[plugins]\nenable = ["udp", "metrics"]\n[plugins.metrics]\n'
        'tls_certificate = "a\\u0000b"\ntls_private_key = "k"\n',
    )
    config = cfg.from_toml(path)
    with pytest.raises(ConfigError) as caught:
        load_plugins(config)
    assert (caught.value.table, caught.value.key) == ("plugins.metrics", "tls_certificate")
    assert caught.value.message == "expected text without NUL characters"


@pytest.mark.parametrize("plugin", ["tls", "wss"])
@pytest.mark.parametrize("key", ["certificate", "private_key"])
def test_a_certificate_file_that_is_not_there_is_a_config_error(
    tmp_path: Path, plugin: str, key: str
) -> None:
    # Was: "plugin error: plugin 'tls' failed in gateway_register_transports: ...
    # CertificateError at .../tls.py:771: . does not exist or is not a file": no file, table or
    # key, and for "" the directory ".".
    issued = TestPki(tmp_path / "pki").ca("CA").issue("server")
    files = {"certificate": str(issued.certificate), "private_key": str(issued.key)}
    for value, said in (
        ("", "expected the path of a PEM file, got ''"),
        (str(tmp_path / "gone.pem"), f"{tmp_path / 'gone.pem'} does not exist"),
    ):
        table = {**files, key: value}
        lines = "".join(f'{k} = "{v}"\n' for k, v in table.items())
        path = write(tmp_path, f'[plugins]\nenable = ["{plugin}"]\n[plugins.{plugin}]\n{lines}')
        with pytest.raises(ConfigError) as caught:
            load_plugins(cfg.from_toml(path))
        assert (caught.value.table, caught.value.key) == (f"plugins.{plugin}", key)
        assert caught.value.message.startswith(said)


@pytest.mark.parametrize(
    ("table", "line", "key", "said"),
    [
        # str.isdigit() took ARABIC-INDIC digits: "udp:127.0.0.1:\u0663" listened on port 3.
        ("sip", 'listen = ["udp:127.0.0.1:\\u0663"]', "listen", "port must be 0-65535"),
        (
            "media",
            'ports = "\\u0663\\u0663\\u0663\\u0663\\u0663-40000"',
            "ports",
            "expected LOW-HIGH",
        ),
        ("dns", 'servers = ["127.0.0.1:\\u0665\\u0663"]', "servers", "expected a port 1-65535"),
        # SUPERSCRIPT TWO: int()'s bare "invalid literal for int() with base 10".
        ("sip", 'listen = ["udp:127.0.0.1:\\u00b2"]', "listen", "port must be 0-65535"),
    ],
)
def test_ports_are_ascii_digits(tmp_path: Path, table: str, line: str, key: str, said: str) -> None:
    path = write(tmp_path, f'[plugins]\nenable = ["udp"]\n[{table}]\n{line}\n')
    with pytest.raises(ConfigError) as caught:
        cfg.from_toml(path)
    assert (caught.value.table, caught.value.key) == (table, key)
    assert caught.value.message.startswith(said)


def test_a_listener_listed_twice_is_refused(tmp_path: Path) -> None:
    # Was accepted: the second bind failed at start-up, with the first listener already up.
    path = write(
        tmp_path,
        '[plugins]\nenable = ["udp"]\n[sip]\nlisten = ["udp:[::1]:5060", "udp:[0:0::1]:5060"]\n',
    )
    with pytest.raises(ConfigError) as caught:
        cfg.from_toml(path)
    assert str(caught.value) == f"{path}: [sip] listen: lists udp:[0:0::1]:5060 more than once"
    # Port 0 (the system chooses) twice is two listeners.
    twice_any = (
        '[plugins]\nenable = ["udp"]\n[sip]\nlisten = ["udp:127.0.0.1:0", "udp:127.0.0.1:0"]\n'
    )
    assert len(cfg.from_toml(write(tmp_path, twice_any)).listen_specs) == 2


@pytest.mark.parametrize(
    ("table", "line", "key"),
    [
        # Was accepted: a CR LF in user_agent wrote a header of its own into every message.
        ("sip", 'user_agent = "voipgw\\r\\nX-Injected: 1"', "user_agent"),
        ("sip", 'user_agent = ""', "user_agent"),
        # A '"' ended the realm's quoted-string in every challenge (RFC 3261 §25.1).
        ("gateway", 'realm = "a\\"b"', "realm"),
        ("gateway", 'realm = "a\\\\"', "realm"),
        ("gateway", 'realm = "a\\tb"', "realm"),
    ],
)
def test_header_text_is_printable(tmp_path: Path, table: str, line: str, key: str) -> None:
    path = write(tmp_path, f"[{table}]\n{line}\n")
    with pytest.raises(ConfigError) as caught:
        cfg.from_toml(path)
    assert (caught.value.table, caught.value.key) == (table, key)
    fine = write(tmp_path, '[sip]\nuser_agent = "voipgw/1.0 (Linux; ünï)"\n')
    assert cfg.from_toml(fine).sip.user_agent == "voipgw/1.0 (Linux; ünï)"


def test_an_error_is_one_line_whatever_the_value_held(tmp_path: Path) -> None:
    # Was: "[plugins.intercept] delivery_private_key: no such file: a<CR><LF>X-Injected: 1",
    # an error of two lines (and a forged second line in a log).
    error = ConfigError("gw.toml", "plugins.intercept", "x1_ca", "no such file: a\r\nX: 1\tü")
    assert str(error) == "gw.toml: [plugins.intercept] x1_ca: no such file: a\\r\\nX: 1\\tü"


@pytest.mark.parametrize(
    ("table", "key", "lines"),
    [
        ("plugins.tls", "certificate", 'certificate = "LONG"\nprivate_key = "LONG"\n'),
        (
            "plugins.intercept",
            "x1_certificate",
            'x1_certificate = "LONG"\nx1_private_key = "LONG"\nx1_ca = "LONG"\n'
            "delivery_tls = false\n",
        ),
        ("plugins.mikey", "psk_file", 'psk_file = "LONG"\n'),
    ],
)
def test_a_path_too_long_is_a_config_error(
    tmp_path: Path, table: str, key: str, lines: str
) -> None:
    # Was: a bare OSError "[Errno 36] File name too long" (Path.is_file raises it on Python
    # 3.11), and for psk_file "[plugins.mikey]: psk_file PATH: ..." naming no key.
    plugin = table.partition(".")[2]
    text = f'[plugins]\nenable = ["udp", "{plugin}"]\n[{table}]\n' + lines
    with pytest.raises(ConfigError) as caught:
        check(write(tmp_path, text.replace("LONG", "x" * 300)))
    assert (caught.value.table, caught.value.key) == (table, key)


def test_a_state_dir_too_long_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    # Was: Path.exists() raising OSError "[Errno 36] File name too long" out of check(); then
    # accepted, and `voipgw run` failed creating it with an error that named no key.
    path = write(tmp_path, f'[plugins]\nenable = ["udp"]\n[gateway]\nstate_dir = "{"x" * 300}"\n')
    with pytest.raises(ConfigError, match="longer than 255 bytes") as caught:
        check(path)
    assert (caught.value.table, caught.value.key) == ("gateway", "state_dir")


def test_the_intercept_plugins_state_dir_too_long_is_a_config_error(tmp_path: Path) -> None:
    # Was (session 63's longer fuzzing, VOIPGW_FUZZ_SEED=6301): "plugin 'intercept' failed in
    # gateway_register_media_taps: OSError at .../intercept/tasks.py" with its text withheld:
    # the tap looked for its task file with Path.exists(), which raises "File name too long"
    # on Python 3.11 before check() could name the key.
    ca = TestPki(tmp_path / "pki").ca("CA")
    server = ca.issue("server")
    table = {
        "x1_listen": "127.0.0.1:8443",
        "x1_certificate": str(server.certificate),
        "x1_private_key": str(server.key),
        "x1_ca": str(ca.certificate),
        "ne_identifier": "node-1",
        "admf_identifiers": ["admf-1"],
        "delivery_tls": False,
        "state_dir": str(tmp_path / ("x" * 300)),
    }
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())
    path = write(
        tmp_path, f'[plugins]\nenable = ["udp", "intercept"]\n[plugins.intercept]\n{lines}'
    )
    with pytest.raises(ConfigError, match="longer than 255 bytes") as caught:
        check(path)
    assert (caught.value.table, caught.value.key) == ("plugins.intercept", "state_dir")


def test_toml_that_ends_inside_an_open_array_names_the_last_line(tmp_path: Path) -> None:
    # Was (session 63's longer fuzzing): "not valid TOML: Invalid value (at end of document)",
    # with no line to look at in a file of 144 lines.
    path = write(tmp_path, '[sip]\nuser_agent = "gw"\n\n[media]\nports = [1,\n\n')
    with pytest.raises(ConfigError) as caught:
        cfg.from_toml(path)
    assert str(caught.value) == (
        f"{path}: not valid TOML: Invalid value (at end of document, after line 5)"
    )


def test_a_trunk_named_with_a_control_character_is_named_by_its_index(tmp_path: Path) -> None:
    # Was (session 63's longer fuzzing, seed 6302): "[trunks.a\x00b] name: expected text
    # without NUL characters": a table no editor finds. By its place in the file instead.
    path = write(
        tmp_path,
        '[[trunks]]\nname = "carrier"\naddress = "udp:192.0.2.1:5060"\n'
        '[[trunks]]\nname = "a\\u0000b"\naddress = "udp:192.0.2.2:5060"\n',
    )
    with pytest.raises(ConfigError) as caught:
        cfg.from_toml(path)
    assert (caught.value.table, caught.value.key) == ("trunks[1]", "name")
    assert str(caught.value) == f"{path}: [trunks[1]] name: expected text without NUL characters"
