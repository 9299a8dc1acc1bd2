"""The gateway's messages to systemd (gateway/core/systemd_notify.py, sd_notify(3)), received
on a real AF_UNIX datagram socket where systemd's would be: a path, or a name in the abstract
namespace (``@...``). The whole gateway under ``voipgw run`` is
tests/integration/test_systemd_notify_voipgw_run.py."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from gateway.core.systemd_notify import SystemdNotifier


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[socket.socket]:
    """systemd's end: a datagram socket bound at ``tmp_path / "notify"``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.settimeout(5)
        yield sock


def test_without_notify_socket_nothing_is_sent_and_nothing_fails() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    notifier.ready("ready: udp:127.0.0.1:5060")  # no socket to send to: no error


def test_each_state_is_one_datagram_of_newline_separated_fields(
    tmp_path: Path, manager: socket.socket
) -> None:
    environ = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "PATH": "/usr/bin"}
    notifier = SystemdNotifier(environ)
    assert environ == {"PATH": "/usr/bin"}  # taken out: the workers must not inherit it
    notifier.ready("ready: udp:127.0.0.1:5060")
    assert manager.recv(4096) == b"READY=1\nSTATUS=ready: udp:127.0.0.1:5060"
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    notifier.reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    fields = manager.recv(4096).decode().split("\n")
    assert fields[0] == "RELOADING=1" and fields[2] == "STATUS=reloading"
    name, _, usec = fields[1].partition("=")
    assert name == "MONOTONIC_USEC" and before <= int(usec) <= after
    notifier.stopping("draining, up to 300 s")
    assert manager.recv(4096) == b"STOPPING=1\nSTATUS=draining, up to 300 s"
    notifier.status("x")
    assert manager.recv(4096) == b"STATUS=x"


def test_a_socket_in_the_abstract_namespace() -> None:
    name = f"voipgw-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready("ready")
        assert sock.recv(4096) == b"READY=1\nSTATUS=ready"


def test_the_watchdog_interval_is_half_of_watchdog_usec_for_this_process_only() -> None:
    ours = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": ""}
    assert SystemdNotifier(dict(ours)).watchdog_interval == 15.0
    ours["WATCHDOG_PID"] = str(os.getpid())
    assert SystemdNotifier(dict(ours)).watchdog_interval == 15.0
    # Inherited from a parent that systemd watched: not ours to answer (sd_watchdog_enabled(3)).
    assert SystemdNotifier({**ours, "WATCHDOG_PID": "1"}).watchdog_interval is None
    for value in ("0", "-5", "soon", ""):
        assert SystemdNotifier({**ours, "WATCHDOG_USEC": value}).watchdog_interval is None


async def test_the_watchdog_pings_from_the_event_loop_every_interval(
    tmp_path: Path, manager: socket.socket, autojump_clock: trio.testing.MockClock
) -> None:
    notifier = SystemdNotifier(
        {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"}
    )
    with trio.move_on_after(0.9):
        await notifier.run_watchdog()  # at 0, 0.2, 0.4, 0.6 and 0.8 s
    manager.setblocking(False)
    pings = []
    while True:
        try:
            pings.append(manager.recv(4096))
        except BlockingIOError:
            break
    assert pings == [b"WATCHDOG=1"] * 5


async def test_no_watchdog_asked_for_is_no_ping(tmp_path: Path, manager: socket.socket) -> None:
    await SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify")}).run_watchdog()  # returns
    manager.setblocking(False)
    with pytest.raises(BlockingIOError):
        manager.recv(4096)


def test_a_manager_out_of_reach_is_said_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    with caplog.at_level(logging.WARNING):
        notifier.ready("ready")
        notifier.send("WATCHDOG=1")
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.core.systemd_notify"]
    assert lines == [
        "systemd: cannot notify on NOTIFY_SOCKET (No such file or directory): "
        "the unit's state may lag"
    ]


def test_a_notify_socket_that_is_no_path_is_said_and_not_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        notifier = SystemdNotifier({"NOTIFY_SOCKET": "relative/notify"})
    assert not notifier.enabled
    assert "systemd: NOTIFY_SOCKET 'relative/notify' is not a socket path" in caplog.text
