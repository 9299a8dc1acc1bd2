"""``voipgw --help`` lists the names an option takes: exactly those its check accepts (cli.py)."""

from __future__ import annotations

import logging
import re
import typing
from pathlib import Path

import pytest

from gateway.core import cli
from gateway.core.config import GatewayConfig, GatewaySection, embedded_defaults, from_toml
from gateway.core.media.policy import all_policies
from gateway.core.plugins import load_plugins


def help_of(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv, "--help"] if "--help" not in argv else list(argv))
    assert exited.value.code == 0
    return capsys.readouterr().out


def listed(help_text: str, option: str) -> list[str]:
    """The names listed (``- NAME: words``, one a line) under ``option`` in a help text."""
    found = re.search(rf"^  {re.escape(option)}(?= |$)", help_text, re.MULTILINE)
    assert found is not None, help_text
    start = found.start()
    block = []
    for line in help_text[start:].splitlines()[1:]:
        if re.match(r"  -", line):  # the next option
            break
        block.append(line)
    names = re.findall(r"^\s+- ([^\s:]+): \S", "\n".join(block), re.MULTILINE)
    first = help_text[start:].splitlines()[0]  # a short option's list may start on its line
    return re.findall(r"- ([^\s:]+): \S", first) + names


def accepted(config: GatewayConfig) -> list[str]:
    """What ``--media-policy`` accepts under ``config`` (cli._check_media_policy)."""
    return list(all_policies(load_plugins(config).media_policies.items()))


@pytest.mark.parametrize("action", ["add", "set"])
def test_media_policy_help_lists_exactly_the_accepted_names(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    monkeypatch.setenv("COLUMNS", "60")  # narrow: wrapped lines must not hide or break a name
    names = listed(help_of(capsys, "accounts", action), "--media-policy NAME")
    assert names == accepted(embedded_defaults())
    assert "best-effort" in names and "mikey" not in names  # mikey is not enabled by default
    for name in names:
        cli._check_media_policy(name, embedded_defaults())  # each is accepted


def test_media_policy_help_after_config_lists_what_its_plugins_register(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[plugins]\nenable = ["udp", "tcp", "tls", "sdes", "dtls", "mikey"]\n')
    names = listed(
        help_of(capsys, "accounts", "add", "--config", str(path), "--help"),
        "--media-policy NAME",
    )
    assert "mikey" in names
    assert names == accepted(from_toml(path))


def test_media_policy_help_with_an_unreadable_config_lists_the_defaults_and_says_why(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.toml"
    text = help_of(capsys, "accounts", "set", "--config", str(missing), "--help")
    assert listed(text, "--media-policy NAME") == accepted(embedded_defaults())
    assert "(the embedded defaults' names:" in text and "missing.toml" in text


@pytest.mark.parametrize("enable", [None, ["udp", "tls", "ws", "wss"]])
def test_listen_help_lists_exactly_the_transports_a_listener_may_name(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    enable: list[str] | None,
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    if enable is None:
        config, argv = embedded_defaults(), ["run"]
    else:
        path = tmp_path / "gw.toml"
        path.write_text(f"[plugins]\nenable = {enable!r}\n".replace("'", '"'))
        config, argv = from_toml(path), ["run", "--config", str(path), "--help"]
    names = listed(help_of(capsys, *argv), "--listen TRANSPORT:HOST:PORT")
    # What Gateway.transport_for checks a listener's transport against.
    assert names == load_plugins(config).transports.names()
    assert names == (["udp", "tcp", "tls"] if enable is None else enable)


def test_log_level_help_lists_exactly_the_levels_the_config_takes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    levels = typing.get_args(typing.get_type_hints(GatewaySection)["log_level"])
    assert listed(help_of(capsys, "run"), "--log-level LEVEL") == list(levels)


@pytest.mark.parametrize(
    "argv",
    [
        ["accounts", "add", "--help", "--config", "{path}"],
        ["accounts", "add", "-h", "--config={path}"],
        ["accounts", "add", "alice", "--help", "--password", "pw", "--config", "{path}"],
        ["accounts", "set", "--help", "--conf", "{path}"],  # argparse's abbreviation
        ["accounts", "set", "--config", "{missing}", "--help", "--config", "{path}"],  # the last
    ],
)
def test_media_policy_help_reads_a_config_given_after_help(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    # Operators' scripts put flags anywhere: `--config` honoured wherever it is, as argparse
    # honours it for every other purpose (the last one given wins).
    path = tmp_path / "gw.toml"
    path.write_text('[plugins]\nenable = ["udp", "tcp", "tls", "sdes", "dtls", "mikey"]\n')
    missing = tmp_path / "missing.toml"
    argv = [arg.format(path=path, missing=missing) for arg in argv]
    text = help_of(capsys, *argv)
    assert listed(text, "--media-policy NAME") == accepted(from_toml(path))
    assert "mikey" in listed(text, "--media-policy NAME")
    assert "embedded defaults" not in text


def test_listen_help_reads_a_config_given_after_help(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "gw.toml"
    path.write_text('[plugins]\nenable = ["udp", "tls", "ws", "wss"]\n')
    names = listed(
        help_of(capsys, "run", "--help", "--config", str(path)), "--listen TRANSPORT:HOST:PORT"
    )
    assert names == ["udp", "tls", "ws", "wss"]


def test_a_config_after_help_that_is_the_value_of_another_option_is_not_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # `--display-name --config` is argparse's usage error, never a config path; a `--config`
    # after `--` is a positional argument: neither is read for the help.
    text = help_of(capsys, "accounts", "add", "--help", "--", "--config", str(tmp_path / "x"))
    assert listed(text, "--media-policy NAME") == accepted(embedded_defaults())
    assert "embedded defaults" not in text


class _Transport:
    def __init__(self, reliable: bool, secure: bool) -> None:
        self.reliable = reliable
        self.secure = secure


class _SecureRaises:
    """A third-party transport whose ``secure`` property has a bug."""

    reliable = True

    @property
    def secure(self) -> bool:
        raise AttributeError("a plugin's bug: secret=hunter2")


def test_listen_help_lists_a_transport_whose_reliable_or_secure_raises_as_not_known(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``run --help`` read each transport's ``reliable`` and ``secure`` unguarded: a
    third-party transport's bug there ended the help in a traceback (session 42's note). Now
    listed as not known, the others as ever, said once at WARNING without the error's text."""
    from gateway.core.cli import listen_help

    caplog.set_level(logging.WARNING, logger="gateway")
    text = listen_help(
        [
            ("udp", _Transport(False, False)),
            ("odd", _SecureRaises()),
            ("tls", _Transport(True, True)),
        ]
    )
    assert text.endswith(
        "\n- udp: datagrams, not encrypted"
        "\n- odd: not known: the plugin raised AttributeError"
        "\n- tls: connections, encrypted (TLS)"
    )
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said == [
        (
            logging.WARNING,
            "the transport plugin odd raised reading its reliable/secure: listed in --listen's"
            " help as not known",
        )
    ]
    assert "hunter2" not in caplog.text
