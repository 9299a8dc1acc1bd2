"""A media worker started by a SIP process of another protocol version (the package was upgraded,
or downgraded, on disk while the gateway ran: gateway/core/media/worker_protocol.py, "Protocol
version") says so once, naming both versions and the remedy, sends its Hello and nothing else,
binds no port and exits with EXIT_PROTOCOL_MISMATCH; one of the same version goes on to serve."""

from __future__ import annotations

import logging
import signal
import socket
from collections.abc import Iterator

import pytest

from gateway.core.media import worker as worker_mod
from gateway.core.media.worker_protocol import (
    EXIT_PROTOCOL_MISMATCH,
    PROTOCOL_VERSION,
    FrameReader,
    Hello,
    Message,
)

ADDRESS = ["--address", "127.0.0.1", "--ports", "40000-40009"]


class ServingWorker:
    """Stands for the worker proper: records that it was made (a port would be bound)."""

    made: list[tuple[object, ...]] = []

    def __init__(self, *args: object) -> None:
        ServingWorker.made.append(args)

    async def run(self) -> None:
        return None


@pytest.fixture
def channel(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[socket.socket, socket.socket]]:
    # main() ignores SIGINT and SIGHUP for its process: not for the test run's.
    monkeypatch.setattr(signal, "signal", lambda *args: None)
    monkeypatch.setattr(worker_mod, "Worker", ServingWorker)
    ServingWorker.made.clear()
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def received(ours: socket.socket) -> list[Message]:
    """What the worker sent before it closed its end (the test's own end is still open)."""
    ours.settimeout(5)
    data = b""
    while chunk := ours.recv(4096):
        data += chunk
    return FrameReader().feed(data)


def mismatch_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize(
    "theirs",
    [
        str(PROTOCOL_VERSION + 1),  # the SIP process is newer than the package on disk
        str(PROTOCOL_VERSION - 1),  # older: the package was upgraded under it
    ],
)
def test_a_sip_process_of_another_version_gets_a_hello_and_the_exit_status(
    channel: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture, theirs: str
) -> None:
    ours, worker_end = channel
    fd = worker_end.detach()  # main() wraps it in a socket of its own
    argv = ["--fd", str(fd), "--protocol-version", theirs, "--index", "2", *ADDRESS]
    assert worker_mod.main(argv) == EXIT_PROTOCOL_MISMATCH == 78
    assert received(ours) == [Hello(PROTOCOL_VERSION)]
    assert ServingWorker.made == []  # no port bound, no message read
    (line,) = mismatch_lines(caplog)
    assert line == (
        f"media worker 2: the installed voipgw speaks media worker protocol version "
        f"{PROTOCOL_VERSION}, the gateway process that started this worker {theirs}: the voipgw "
        "package was upgraded (or changed) while the gateway ran; restart the service (e.g. "
        "systemctl restart voipgw) to run the installed version on both sides. Exiting"
    )


def test_a_sip_process_from_before_versions_gets_no_hello(
    channel: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    """It passes no --protocol-version and would read a Hello as a bad frame: it gets the exit
    status only, and the operator the worker's line."""
    ours, worker_end = channel
    fd = worker_end.detach()
    assert worker_mod.main(["--fd", str(fd), "--index", "0", *ADDRESS]) == EXIT_PROTOCOL_MISMATCH
    assert received(ours) == []
    assert ServingWorker.made == []
    (line,) = mismatch_lines(caplog)
    assert "the gateway process that started this worker none (a voipgw from before" in line
    assert "restart the service" in line


def test_options_this_worker_does_not_know_do_not_hide_the_mismatch(
    channel: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    """A newer SIP process may pass options this worker never heard of: the operator still reads
    the versions, not argparse's usage error."""
    ours, worker_end = channel
    fd = worker_end.detach()
    newer = str(PROTOCOL_VERSION + 1)
    argv = ["--fd", str(fd), "--protocol-version", newer, "--media-cores", "4", *ADDRESS]
    assert worker_mod.main(argv) == EXIT_PROTOCOL_MISMATCH
    assert received(ours) == [Hello(PROTOCOL_VERSION)]
    (line,) = mismatch_lines(caplog)
    assert f"the gateway process that started this worker {newer}:" in line


def test_a_sip_process_of_this_version_is_served(
    channel: tuple[socket.socket, socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    _, worker_end = channel
    fd = worker_end.detach()
    argv = ["--fd", str(fd), "--protocol-version", str(PROTOCOL_VERSION), *ADDRESS]
    assert worker_mod.main(argv) == 0
    assert len(ServingWorker.made) == 1
    assert mismatch_lines(caplog) == []


def test_help_is_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        worker_mod.main(["--help"])
    assert exited.value.code == 0
    assert "--protocol-version PROTOCOL_VERSION" in capsys.readouterr().out
