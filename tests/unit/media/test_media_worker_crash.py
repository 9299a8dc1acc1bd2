"""A media worker stopped by an exception nothing handled (a bug) logs it as the SIP process
logs one (gateway/core/logs.py: frames and types, not the text of what plugin code raised) and
exits 1, rather than letting the interpreter print it whole on its stderr."""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.core.logs import WITHHELD, show_plugin_exception_text
from gateway.core.media import worker as worker_mod
from gateway.core.media.worker_protocol import PROTOCOL_VERSION

SECRET = "a2V5IG1hdGVyaWFsIG9mIGEgbGVn"  # stands for a leg's SRTP key in a tap's exception

PLUGIN: dict[str, Any] = {"__name__": "voipgw_tap_plugin.sink"}
exec(  # frames of a plugin's module, as a tap's code would raise in the worker
    compile(
        f"async def run():\n    raise ValueError('cannot copy key {SECRET}')\n",
        "<voipgw_tap_plugin>",
        "exec",
    ),
    PLUGIN,
)


class CrashingWorker:
    def __init__(self, *args: object) -> None:
        self.run = PLUGIN["run"]


@pytest.fixture
def channel(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    # main() ignores SIGINT and SIGHUP for its process: not for the test run's.
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    monkeypatch.setattr(worker_mod, "Worker", CrashingWorker)
    ours, theirs = socket.socketpair()
    yield theirs
    ours.close()
    theirs.close()
    show_plugin_exception_text(False)


def run_worker(channel: socket.socket, *flags: str) -> int:
    fd = channel.detach()  # main() wraps it in a socket of its own
    address = ["--address", "127.0.0.1", "--ports", "40000-40009"]
    version = ["--protocol-version", str(PROTOCOL_VERSION)]
    return worker_mod.main(["--fd", str(fd), *version, "--index", "3", *address, *flags])


def test_an_unhandled_exception_is_logged_without_plugin_text_and_exits_1(
    channel: socket.socket, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.ERROR)
    assert run_worker(channel) == 1
    (record,) = caplog.records
    assert record.getMessage() == "media worker 3 stopped on an unexpected error"
    assert record.exc_info is None and record.exc_text is not None
    assert f"ValueError: {WITHHELD}" in record.exc_text
    assert 'File "<voipgw_tap_plugin>", line 2, in run' in record.exc_text
    assert SECRET not in caplog.text and SECRET not in "".join(capsys.readouterr())


def test_the_operator_may_show_the_text(
    channel: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    assert run_worker(channel, "--plugin-exception-text") == 1
    assert f"ValueError: cannot copy key {SECRET}" in caplog.text
