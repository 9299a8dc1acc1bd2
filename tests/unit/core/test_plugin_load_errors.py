"""A plugin that fails to load: the operator learns which (entry-point name, module,
distribution), the exception's type and the file and line it was raised at, on the
``voipgw: plugin error:`` line, but not the exception's text, which may hold a key or a password,
unless ``[gateway] log_plugin_exception_text`` or ``--plugin-exception-text`` asks for it.

The plugins are real distributions (a ``.dist-info`` beside the module, on ``sys.path``), found
and imported through their entry points as an installed plugin is."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.core import cli
from gateway.core.config import ConfigError, from_mapping
from gateway.core.logs import WITHHELD, show_plugin_exception_text
from gateway.core.plugins import SHOW_TEXT_HINT, PluginError, load_plugins

SECRET = "cGx1Z2luIGtleSBtYXRlcmlhbA"  # stands for a key in a plugin's exception


@pytest.fixture(autouse=True)
def withheld() -> object:
    show_plugin_exception_text(False)
    yield
    show_plugin_exception_text(False)


def install(site: Path, module: str, source: str) -> Path:
    """A distribution ``module`` 1.0 whose entry point ``module`` (group voipgw.plugins) is
    the module ``module`` with ``source``; returns the module's file."""
    path = site / f"{module}.py"
    path.write_text(textwrap.dedent(source))
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[voipgw.plugins]\n{module} = {module}\n")
    return path


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    for name in [n for n in sys.modules if n.startswith("leaky_")]:
        del sys.modules[name]


LEAKS_AT_IMPORT = f"""\
    KEY = "{SECRET}"

    raise ValueError(f"cannot read key {{KEY}}")
"""


def test_an_import_error_names_the_plugin_its_module_type_and_line_not_its_text(
    site: Path,
) -> None:
    path = install(site, "leaky_import", LEAKS_AT_IMPORT)
    with pytest.raises(PluginError) as failed:
        load_plugins(from_mapping({"plugins": {"enable": ["udp", "leaky_import"]}}))
    message = str(failed.value)
    assert SECRET not in message
    assert message == (
        "plugin 'leaky_import' (leaky_import from leaky_import 1.0) failed to import: "
        f"ValueError at {path}:3: {WITHHELD} {SHOW_TEXT_HINT}"
    )


def test_a_missing_module_is_named(site: Path) -> None:
    path = install(site, "leaky_deps", "import os\nimport acme_phone_sdk_not_installed\n")
    with pytest.raises(PluginError) as failed:
        load_plugins(from_mapping({"plugins": {"enable": ["leaky_deps"]}}))
    assert (
        f"failed to import: ModuleNotFoundError at {path}:2 "
        "(no module named 'acme_phone_sdk_not_installed'): "
    ) in str(failed.value)


def test_a_syntax_error_names_its_own_line_and_says_the_compilers_words(site: Path) -> None:
    # Raised by Python's compiler, no frame of the plugin's: its text is Python's (the source
    # line it quotes, exc.text, is not part of it).
    path = install(site, "leaky_syntax", f'KEY = "{SECRET}"; KEY +\n')
    with pytest.raises(PluginError) as failed:
        load_plugins(from_mapping({"plugins": {"enable": ["leaky_syntax"]}}))
    assert str(failed.value).endswith(
        f"failed to import: SyntaxError at {path}:1: invalid syntax (leaky_syntax.py, line 1)"
    )


def test_a_registration_or_config_hook_that_raises_is_named_the_same_way(site: Path) -> None:
    for hook in ("gateway_register_transports(registry)", "gateway_plugin_config()"):
        name = f"leaky_{hook.partition('(')[0][8:]}"
        path = install(
            site,
            name,
            f"""\
            from gateway.core.hookspecs import hookimpl

            @hookimpl
            def {hook}:
                raise RuntimeError("{SECRET}")
            """,
        )
        with pytest.raises(PluginError) as failed:
            load_plugins(from_mapping({"plugins": {"enable": [name]}}))
        assert str(failed.value) == (
            f"plugin {name!r} failed in {hook.partition('(')[0]}: "
            f"RuntimeError at {path}:5: {WITHHELD} {SHOW_TEXT_HINT}"
        )


def check_config(
    site: Path, capsys: pytest.CaptureFixture[str], *flags: str, gateway: str = ""
) -> str:
    install(site, "leaky_cli", LEAKS_AT_IMPORT)
    config = site / "voipgw.toml"
    config.write_text(f'[plugins]\nenable = ["udp", "leaky_cli"]\n{gateway}')
    assert cli.main(["check-config", *flags, str(config)]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    return err


def test_the_cli_line_keeps_its_prefix_and_withholds_the_text(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = check_config(site, capsys)
    assert err.startswith("voipgw: plugin error: plugin 'leaky_cli' (leaky_cli from leaky_cli")
    assert f"ValueError at {site / 'leaky_cli.py'}:3: {WITHHELD}" in err
    assert SECRET not in err


@pytest.mark.parametrize(
    ("flags", "gateway"),
    [(("--plugin-exception-text",), ""), ((), "[gateway]\nlog_plugin_exception_text = true\n")],
)
def test_the_operator_may_ask_for_the_text(
    site: Path, capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], gateway: str
) -> None:
    err = check_config(site, capsys, *flags, gateway=gateway)
    assert f"ValueError at {site / 'leaky_cli.py'}:3: cannot read key {SECRET}\n" in err
    assert SHOW_TEXT_HINT not in err


def test_the_cores_errors_written_for_the_operator_keep_their_text(site: Path) -> None:
    # As at a reload (gateway/core/reload.py): a ReloadError (the TLS plugins' CertificateError
    # is one), a ConfigError or a PluginError names the file and the reason, never key bytes.
    for kind in ("ReloadError", "PluginError"):
        name = f"leaky_{kind.lower()}"
        module = "interfaces" if kind == "ReloadError" else "plugins"
        install(
            site,
            name,
            f"""\
            from gateway.core.hookspecs import hookimpl
            from gateway.core.{module} import {kind}

            @hookimpl
            def gateway_register_transports(registry):
                raise {kind}("/etc/voipgw/ca.key holds no PEM")
            """,
        )
        with pytest.raises(PluginError) as failed:
            load_plugins(from_mapping({"plugins": {"enable": [name]}}))
        assert str(failed.value).endswith("/etc/voipgw/ca.key holds no PEM")


def test_voipgw_plugins_lists_the_others_and_says_the_error_as_run_does(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `voipgw run` and `check-config` stop on the plugin (docs/plugin_hooks.md); `voipgw
    # plugins` says the same line and exit status, and still lists what the others register.
    install(site, "leaky_cli", LEAKS_AT_IMPORT)
    install(
        site,
        "leaky_config",
        """\
        from gateway.core.hookspecs import hookimpl

        @hookimpl
        def gateway_plugin_config():
            raise RuntimeError("no")
        """,
    )
    config = site / "voipgw.toml"
    config.write_text(
        '[plugins]\nenable = ["udp", "leaky_cli", "leaky_config"]\n'
        "[plugins.leaky_config]\nkey = 1\n"  # its table goes with it
    )
    assert cli.main(["plugins", "--config", str(config)]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows["udp"].split()[1] == "enabled" and "transports: udp" in rows["udp"]
    for name in ("leaky_cli", "leaky_config"):
        assert rows[name].split()[1:4] == ["FAILED", name, "1.0"]
        assert "(not loaded: see the plugin error below)" in rows[name]
    assert rows["tcp"].split()[1] == "disabled"
    lines = err.splitlines()
    assert lines[0] == (
        "voipgw: plugin error: plugin 'leaky_cli' (leaky_cli from leaky_cli 1.0) failed to "
        f"import: ValueError at {site / 'leaky_cli.py'}:3: {WITHHELD} {SHOW_TEXT_HINT}"
    )
    assert lines[1].startswith(
        "voipgw: plugin error: plugin 'leaky_config' failed in gateway_plugin_config: "
        "RuntimeError at "
    )
    assert len(lines) == 2 and SECRET not in out + err
    # What `run` and `check-config` say of it: the same line, and they stop there.
    config.write_text('[plugins]\nenable = ["udp", "leaky_cli"]\n')
    assert cli.main(["check-config", str(config)]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == err.splitlines(keepends=True)[0]
    assert cli.main(["run", "--config", str(config), "--state-dir", str(site)]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == err.splitlines(keepends=True)[0]


def test_voipgw_plugins_loads_each_plugin_once_and_names_a_configure_config_error(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A ConfigError a plugin raises in gateway_configure (a setting it refuses) names the
    # plugin, and the listing goes on without it; the others' hooks run once, however many
    # plugins fail (the listing loaded every plugin again after each failing one).
    calls = site / "calls.txt"
    install(
        site,
        "leaky_counted",
        f"""\
        from gateway.core.hookspecs import hookimpl

        @hookimpl
        def gateway_configure():
            with open({str(calls)!r}, "a") as out:
                out.write("configure\\n")
        """,
    )
    install(
        site,
        "leaky_refuses",
        """\
        from gateway.core.config import ConfigError
        from gateway.core.hookspecs import hookimpl

        @hookimpl
        def gateway_configure():
            raise ConfigError("/etc/voipgw/voipgw.toml", "plugins.leaky_refuses", "codes", "'*'")
        """,
    )
    install(
        site,
        "leaky_halfway",
        """\
        from gateway.core.hookspecs import hookimpl

        @hookimpl
        def gateway_register_transports(registry):
            registry.add("halfway", object())

        @hookimpl
        def gateway_register_device_profiles(registry):
            raise RuntimeError("no")
        """,
    )
    config = site / "voipgw.toml"
    config.write_text(
        '[plugins]\nenable = ["udp", "leaky_refuses", "leaky_halfway", "leaky_counted"]\n'
    )
    assert cli.main(["plugins", "--config", str(config)]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert rows["udp"].split()[1] == "enabled" and "transports: udp" in rows["udp"]
    assert rows["leaky_counted"].split()[1] == "enabled"
    for name in ("leaky_refuses", "leaky_halfway"):
        assert rows[name].split()[1] == "FAILED"
    # The plugin that refused a setting loaded: its row says what happened.
    assert rows["leaky_refuses"].endswith(REFUSED)
    assert rows["leaky_halfway"].endswith("(not loaded: see the plugin error below)")
    assert calls.read_text() == "configure\n"
    assert err.splitlines() == [
        "voipgw: configuration error: /etc/voipgw/voipgw.toml: "
        "[plugins.leaky_refuses] codes: '*' (plugin 'leaky_refuses')",
        "voipgw: plugin error: plugin 'leaky_halfway' failed in "
        f"gateway_register_device_profiles: RuntimeError at {site / 'leaky_halfway.py'}:9: "
        f"{WITHHELD} {SHOW_TEXT_HINT}",
    ]
    # What a plugin registered before it failed goes with it.
    failed: dict[str, PluginError] = {}
    loaded = load_plugins(
        from_mapping({"plugins": {"enable": ["udp", "leaky_halfway"]}}), failed=failed
    )
    assert list(failed) == ["leaky_halfway"]
    assert loaded.transports.names() == ["udp"] and loaded.names == ["udp"]
    # `run` and `check-config` stop on it, a configuration error naming the plugin.
    config.write_text('[plugins]\nenable = ["udp", "leaky_refuses"]\n')
    assert cli.main(["check-config", str(config)]) == cli.EXIT_USAGE
    stopped_on = capsys.readouterr().err
    assert stopped_on == (
        "voipgw: configuration error: /etc/voipgw/voipgw.toml: "
        "[plugins.leaky_refuses] codes: '*' (plugin 'leaky_refuses')\n"
    )
    # The listing says the line `run` and `check-config` stop on (docs/plugin_hooks.md).
    assert cli.main(["plugins", "--config", str(config)]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == stopped_on


def test_a_config_error_in_a_registration_hook_is_said_as_in_gateway_configure(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A setting a plugin refuses when it registers (a certificate file it cannot read) is a
    # configuration error with its own line, FILE: [TABLE] KEY: ..., as from
    # gateway_configure; it was "failed in gateway_register_...: ConfigError at FILE:LINE".
    install(
        site,
        "leaky_registers",
        """\
        from gateway.core.config import ConfigError
        from gateway.core.hookspecs import hookimpl

        @hookimpl
        def gateway_register_transports(registry):
            raise ConfigError("/etc/voipgw/voipgw.toml", "plugins.leaky_registers", "cert", "no")
        """,
    )
    line = "/etc/voipgw/voipgw.toml: [plugins.leaky_registers] cert: no (plugin 'leaky_registers')"
    with pytest.raises(ConfigError) as refused:
        load_plugins(from_mapping({"plugins": {"enable": ["udp", "leaky_registers"]}}))
    assert str(refused.value) == line
    assert isinstance(refused.value, PluginError) and refused.value.plugin == "leaky_registers"
    config = site / "voipgw.toml"
    config.write_text('[plugins]\nenable = ["udp", "leaky_registers"]\n')
    assert cli.main(["check-config", str(config)]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == f"voipgw: configuration error: {line}\n"
    assert cli.main(["plugins", "--config", str(config)]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    rows = {row.split()[0]: row for row in out.splitlines()[1:]}
    assert rows["leaky_registers"].split()[1] == "FAILED"
    assert rows["leaky_registers"].endswith(REFUSED)
    assert err == f"voipgw: configuration error: {line}\n"


REFUSED = "(its configuration refused: see the configuration error below)"


def test_a_config_error_raised_as_the_plugin_imports_is_said_as_a_configuration_error(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ConfigError a plugin's module raises while it imports (a setting it reads there) is
    the configuration error it is, with every configuration error's line and the plugin at its
    end, and ``voipgw plugins``' row sends the operator to it (session 43: it was "failed to
    import: ConfigError at FILE:LINE: ..." on a plugin error line, and the row said "(not
    loaded: see the plugin error below)")."""
    install(
        site,
        "leaky_imports_config",
        """\
        from gateway.core.config import ConfigError

        raise ConfigError("/etc/voipgw/voipgw.toml", "plugins.leaky_imports_config", "db", "no")
        """,
    )
    line = (
        "/etc/voipgw/voipgw.toml: [plugins.leaky_imports_config] db: no"
        " (plugin 'leaky_imports_config')"
    )
    with pytest.raises(ConfigError) as refused:
        load_plugins(from_mapping({"plugins": {"enable": ["udp", "leaky_imports_config"]}}))
    assert str(refused.value) == line
    assert isinstance(refused.value, PluginError)
    assert refused.value.plugin == "leaky_imports_config"
    config = site / "voipgw.toml"
    config.write_text('[plugins]\nenable = ["udp", "leaky_imports_config"]\n')
    assert cli.main(["check-config", str(config)]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == f"voipgw: configuration error: {line}\n"
    assert cli.main(["plugins", "--config", str(config)]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    rows = {row.split()[0]: row for row in out.splitlines()[1:]}
    assert rows["leaky_imports_config"].split()[1] == "FAILED"
    assert rows["leaky_imports_config"].endswith(REFUSED)
    assert rows["udp"].split()[1] == "enabled"
    assert err == f"voipgw: configuration error: {line}\n"


STRICT = """\
    import attrs
    from gateway.core.hookspecs import hookimpl

    @attrs.frozen
    class Settings:
        port: int = 5

    @hookimpl
    def gateway_plugin_config():
        return Settings
    """


def test_voipgw_plugins_lists_every_plugin_past_a_bad_plugin_table(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A [plugins.NAME] table its plugin refuses (an unknown key, a mistyped one, a table for
    # a plugin that takes none, a value where its table goes) stopped the listing; now that
    # plugin's row says so and the line run and check-config stop on follows, as for a
    # setting refused in gateway_configure.
    install(site, "leaky_strict", STRICT)
    install(site, "leaky_typed", STRICT)
    config = site / "voipgw.toml"
    tables = {
        "hep": "hep = 3\n",  # under [plugins]: first
        "leaky_strict": "[plugins.leaky_strict]\ncolour = 1\n",
        "leaky_typed": '[plugins.leaky_typed]\nport = "five"\n',
        "tcp": "[plugins.tcp]\nport = 1\n",
    }
    lines = []
    for name, table in tables.items():
        config.write_text(f'[plugins]\nenable = ["udp", "{name}"]\n{table}')
        assert cli.main(["check-config", str(config)]) == cli.EXIT_USAGE
        stopped_on = capsys.readouterr().err
        assert stopped_on.startswith(
            f"voipgw: configuration error: {config}: "
            + ("[plugins] hep: unknown key; known keys: enable" if name == "hep" else "")
            + ("" if name == "hep" else f"[plugins.{name}]")
        )
        lines.append(stopped_on)
    # The value where a plugin's table goes says so, after the line's old words.
    assert lines[0].endswith(
        "known keys: enable (the settings of plugin 'hep' go in its own table, [plugins.hep])\n"
    )
    config.write_text(
        '[plugins]\nenable = ["udp", "hep", "leaky_strict", "leaky_typed", "tcp"]\n'
        + "".join(tables.values())
    )
    assert cli.main(["plugins", "--config", str(config)]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    rows = {row.split()[0]: row for row in out.splitlines()[1:]}
    assert rows["udp"].split()[1] == "enabled" and "transports: udp" in rows["udp"]
    for name in tables:
        assert rows[name].split()[1] == "FAILED" and rows[name].endswith(REFUSED)
    assert rows["tls"].split()[1] == "disabled"
    assert err == "".join(lines)


def test_a_value_where_a_default_plugins_table_goes_is_that_plugins_error_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `enable` left out enables the defaults: `[plugins] tls = 3` alone is tls's settings
    # misplaced as much as with `enable` written. It stopped the listing, without the hint.
    config = tmp_path / "voipgw.toml"
    config.write_text(f'[gateway]\nstate_dir = "{tmp_path}"\n[plugins]\ntls = 3\n')
    line = (
        f"voipgw: configuration error: {config}: [plugins] tls: unknown key; known keys: "
        "enable (the settings of plugin 'tls' go in its own table, [plugins.tls])\n"
    )
    assert cli.main(["check-config", str(config)]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == line
    assert cli.main(["plugins", "--config", str(config)]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    rows = {row.split()[0]: row for row in out.splitlines()[1:]}
    assert rows["tls"].split()[1] == "FAILED" and rows["tls"].endswith(REFUSED)
    assert rows["udp"].split()[1] == "enabled" and "transports: udp" in rows["udp"]
    assert err == line


def test_a_plugin_named_enable_is_loaded_as_before(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `enable = ["udp", "enable"]` is the list of plugins, not a value misplaced where the
    # plugin "enable"'s table goes: a configuration that loaded that plugin still does.
    install(site, "leaky_enable", "")
    (site / "leaky_enable-1.0.dist-info" / "entry_points.txt").write_text(
        "[voipgw.plugins]\nenable = leaky_enable\n"
    )
    config = from_mapping({"plugins": {"enable": ["udp", "enable"]}})
    assert config.plugins.enable == ("udp", "enable")
    assert load_plugins(config).names == ["udp", "enable"]
    path = site / "voipgw.toml"
    path.write_text('[plugins]\nenable = ["udp", "enable"]\n')
    assert cli.main(["plugins", "--config", str(path)]) == cli.EXIT_OK
    rows = {row.split()[0]: row for row in capsys.readouterr().out.splitlines()[1:]}
    assert rows["enable"].split()[1] == "enabled"


def test_a_config_error_in_gateway_plugin_config_is_said_as_in_gateway_configure(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # As from a registration hook (hook_failed): it was "failed in gateway_plugin_config:
    # ConfigError at FILE:LINE".
    install(
        site,
        "leaky_declares",
        """\
        from gateway.core.config import ConfigError
        from gateway.core.hookspecs import hookimpl

        @hookimpl
        def gateway_plugin_config():
            raise ConfigError("/etc/voipgw/voipgw.toml", "plugins.leaky_declares", None, "no")
        """,
    )
    line = "/etc/voipgw/voipgw.toml: [plugins.leaky_declares]: no (plugin 'leaky_declares')"
    config = site / "voipgw.toml"
    config.write_text('[plugins]\nenable = ["udp", "leaky_declares"]\n')
    assert cli.main(["check-config", str(config)]) == cli.EXIT_USAGE
    assert capsys.readouterr().err == f"voipgw: configuration error: {line}\n"
    assert cli.main(["plugins", "--config", str(config)]) == cli.EXIT_USAGE
    out, err = capsys.readouterr()
    rows = {row.split()[0]: row for row in out.splitlines()[1:]}
    assert rows["leaky_declares"].split()[1] == "FAILED"
    assert rows["leaky_declares"].endswith(REFUSED)
    assert rows["udp"].split()[1] == "enabled"
    assert err == f"voipgw: configuration error: {line}\n"
