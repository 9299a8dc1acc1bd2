"""What the configuration fuzzer (tests/unit/fuzz/test_fuzz_config.py) found, one plain test
each: every one of these was a traceback, a bare Python error, an error naming no key, or a
value accepted that the gateway could not run with."""

from __future__ import annotations

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
    assert caught.value.message == "expected a positive number of seconds"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ("sip", "t1"),
        ("sip", "ring_timeout"),
        ("media", "inactivity_timeout"),
        ("media", "hold_timeout"),
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
