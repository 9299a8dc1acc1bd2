"""``voipgw run`` stopped by an exception nothing handled (a bug): its traceback goes to the log
as every other the core logs (gateway/core/logs.py), without the text of plugin code's
exceptions, rather than printed whole by the interpreter."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.core import cli
from gateway.core import gateway as gateway_mod
from gateway.core.config import ConfigError
from gateway.core.logs import WITHHELD
from gateway.core.plugins import Registry

# What cmd_run reads of the plugins before the Gateway: the transports they registered.
NO_PLUGINS = SimpleNamespace(transports=Registry("transport"))
SECRET = "c2VjcmV0IGtleSBtYXRlcmlhbA=="  # stands for a key in a plugin's exception


def _plugin_raises() -> None:
    namespace: dict[str, Any] = {"__name__": "voipgw_phone_plugin.start"}
    exec(  # a frame of a plugin's module, as a plugin's start-up would raise
        compile(f"def start():\n    raise ValueError('bad key {SECRET}')\n", "<plugin>", "exec"),
        namespace,
    )
    namespace["start"]()


def test_an_unhandled_exception_is_logged_without_plugin_text(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.ERROR)
    monkeypatch.setattr(cli, "load_plugins", lambda config: NO_PLUGINS)
    monkeypatch.setattr(cli, "_tune_garbage_collector", lambda thresholds: None)
    monkeypatch.setattr(gateway_mod, "Gateway", lambda config, plugins: None)
    monkeypatch.setattr(gateway_mod, "run_until_signal", lambda gateway: _plugin_raises())
    assert cli.main(["run"]) == cli.EXIT_RUNTIME  # what an uncaught exception exits with
    assert SECRET not in caplog.text and SECRET not in "".join(capsys.readouterr())
    (record,) = caplog.records
    assert record.exc_text is not None
    assert f"ValueError: {WITHHELD}" in record.exc_text
    assert 'File "<plugin>", line 2, in start' in record.exc_text


def test_a_configuration_error_still_reaches_the_cli_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def mistaken(gateway: object) -> int:
        raise ConfigError("voipgw.toml", "store", "node", "taken by another node")

    monkeypatch.setattr(cli, "load_plugins", lambda config: NO_PLUGINS)
    monkeypatch.setattr(cli, "_tune_garbage_collector", lambda thresholds: None)
    monkeypatch.setattr(gateway_mod, "Gateway", lambda config, plugins: None)
    monkeypatch.setattr(gateway_mod, "run_until_signal", mistaken)
    assert cli.main(["run"]) == cli.EXIT_USAGE
    assert "configuration error" in capsys.readouterr().err


def test_other_commands_log_an_unhandled_exception_the_same_way(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    # check-config builds the gateway, which asks the plugins: one of them raises.
    caplog.set_level(logging.ERROR)
    config = tmp_path / "voipgw.toml"
    config.write_text("")
    monkeypatch.setattr(cli, "load_plugins", lambda config: NO_PLUGINS)
    monkeypatch.setattr(gateway_mod, "Gateway", lambda config, plugins: _plugin_raises())
    assert cli.main(["check-config", str(config)]) == cli.EXIT_RUNTIME
    assert SECRET not in caplog.text and SECRET not in "".join(capsys.readouterr())
    (record,) = caplog.records
    assert record.getMessage() == "voipgw check-config stopped on an unexpected error"
    assert f"ValueError: {WITHHELD}" in (record.exc_text or "")
