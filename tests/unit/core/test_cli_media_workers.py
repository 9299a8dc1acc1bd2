"""``voipgw media-workers``: each media worker slot of the running gateway, asked over the control
socket (``media_workers``, gateway/core/control.py), in plain words or as JSON. The command runs
against a real Unix socket answered by a thread with ``control.respond``; the pool's own
description (``WorkerPool.describe_workers``) is read from an unserved pool whose slots are set
as supervision sets them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from gateway.core import cli
from gateway.core.config import PortRange
from gateway.core.control import SOCKET_NAME, respond
from gateway.core.media import remote_relay
from gateway.core.media.remote_relay import RESTART_REASONS, WorkerPool

RUNNING = {
    "index": 0,
    "ports": "40000-40499",
    "state": "running",
    "pid": 4242,
    "streams": 3,
    "ready_pairs": 64,
    "starts": 1,
    "restarts": dict.fromkeys(RESTART_REASONS, 0),
    "last_ended": None,
    "stopped": None,
    "running_for": 11_100.0,
    "resident_bytes": 54_840_115,  # 52.3 MiB
}


def _slot(**changed: object) -> dict[str, object]:
    return {**RUNNING, **changed}


@pytest.fixture
def answering(tmp_path: Path) -> Iterator[tuple[str, list[Mapping[str, object]]]]:
    """A state directory whose control socket answers each request with the next of the
    answers the test appends (a thread stands in for the gateway's control server)."""
    answers: list[Mapping[str, object]] = []
    asked: list[str] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / SOCKET_NAME))
    server.listen()
    server.settimeout(10)

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                request = connection.recv(1024)
                connection.sendall(respond(request, lambda q: (asked.append(q), answers.pop(0))[1]))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield str(tmp_path), answers
    server.shutdown(socket.SHUT_RDWR)  # wakes the thread's accept (Linux); close alone does not
    server.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert all(query == "media_workers" for query in asked)


def _run(capsys: pytest.CaptureFixture[str], state: str, *flags: str) -> tuple[int, str, str]:
    code = cli.main(["media-workers", "--state-dir", state, *flags])
    out, err = capsys.readouterr()
    return code, out, err


def test_each_worker_is_one_line_in_plain_words(
    answering: tuple[str, list[Mapping[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    state, answers = answering
    answers.append(
        {
            "address": "127.0.0.1",
            "workers": [
                RUNNING,
                _slot(
                    index=1,
                    ports="40500-40999",
                    state="restarting",
                    pid=None,
                    streams=0,
                    ready_pairs=0,
                    restarts={**RUNNING["restarts"], "exited": 2, "not_ready": 1},  # type: ignore[dict-item]
                    last_ended="not_ready",
                    running_for=None,
                    resident_bytes=None,
                ),
                _slot(index=2, state="starting", pid=4343, streams=0, ready_pairs=0, starts=2),
                _slot(
                    index=3,
                    state="stopped",
                    pid=None,
                    stopped="its worker speaks protocol version 3, this process 2",
                    running_for=None,
                    resident_bytes=None,
                ),
            ],
        }
    )
    code, out, err = _run(capsys, state)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "4 media workers on 127.0.0.1, 1 running",
        "worker 0  ports 40000-40499  running, pid 4242, for 3 h 5 min  streams 3  "
        "ready port pairs 64  restarts: none  memory 52.3 MiB",
        "worker 1  ports 40500-40999  restarting (its last process: not_ready)  streams 0  "
        "ready port pairs 0  restarts: exited 2, not_ready 1",
        "worker 2  ports 40000-40499  starting, pid 4343  streams 0  ready port pairs 0  "
        "restarts: none  memory 52.3 MiB",
        "worker 3  ports 40000-40499  stopped until the service restarts: its worker speaks "
        "protocol version 3, this process 2  streams 3  ready port pairs 64  restarts: none",
    ]


def test_json_is_the_gateways_answer_as_is(
    answering: tuple[str, list[Mapping[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    state, answers = answering
    answer = {"address": "::1", "workers": [RUNNING]}
    answers.append(answer)
    code, out, _ = _run(capsys, state, "--json")
    assert code == 0 and json.loads(out) == answer


def test_a_gateway_relaying_in_its_own_process_has_no_workers(
    answering: tuple[str, list[Mapping[str, object]]], capsys: pytest.CaptureFixture[str]
) -> None:
    state, answers = answering
    answers.append({"address": None, "workers": None})
    code, out, err = _run(capsys, state)
    assert (code, err) == (0, "")
    assert out == (
        "no media workers: the gateway relays media in its own process ([media] workers = 1)\n"
    )


def test_no_gateway_or_a_broken_answer_is_said_and_exits_1(
    tmp_path: Path,
    answering: tuple[str, list[Mapping[str, object]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = _run(capsys, str(tmp_path / "elsewhere"))
    assert (code, out) == (1, "")
    assert err.startswith("voipgw: media-workers: no gateway running here (")
    state, answers = answering
    answers.append({"workers": "many"})
    code, out, err = _run(capsys, state)
    assert (code, out) == (1, "")
    assert err == "voipgw: media-workers: the gateway's answer has no worker list\n"


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(0.4, "0 s"), (59.9, "59 s"), (60, "1 min"), (3599, "59 min"), (3600, "1 h 0 min"),
     (86_399, "23 h 59 min"), (86_400 * 2 + 3600 * 4 + 59, "2 d 4 h")],
)  # fmt: skip
def test_how_long_a_worker_has_run_is_shown_to_the_unit_that_matters(
    seconds: float, shown: str
) -> None:
    assert cli._duration(seconds) == shown


def test_the_pool_describes_each_slot_as_supervision_left_it() -> None:
    pool = WorkerPool("127.0.0.1", PortRange.parse("40000-40009"), 2)
    first, second = pool._workers
    described = pool.describe_workers(now=100.0)
    assert [(w["index"], w["ports"], w["state"]) for w in described] == [
        (0, str(pool.slices[0]), "starting"),
        (1, str(pool.slices[1]), "starting"),
    ]
    assert all(w["pid"] is None and w["running_for"] is None for w in described)
    assert all(w["resident_bytes"] is None for w in described)  # no process, no memory
    assert all(w["last_ended"] is None and w["stopped"] is None for w in described)

    # Slot 0 ran, died, and runs again since 40.0; slot 1's first process is being restarted.
    first.starts, first.state, first.ready_at = 2, "running", 40.0
    first.restarts["exited"] = 1
    first.ready.extend([40000, 40002, 40004])
    second.starts, second.state, second.ended = 1, "restarting", "channel_error"
    second.restarts["channel_error"] = 1
    running, restarting = pool.describe_workers(now=100.0)
    assert running["running_for"] == 60.0 and running["last_ended"] == "exited"
    assert running["restarts"] == {**dict.fromkeys(RESTART_REASONS, 0), "exited": 1}
    assert running["ready_pairs"] == 0  # no channel: nothing it bound can be handed out
    assert (restarting["last_ended"], restarting["running_for"]) == ("channel_error", None)

    # A stopped slot says why, not how its last process ended.
    second.state, second.stopped = "stopped", "it did not understand its command line"
    (_, stopped) = pool.describe_workers(now=100.0)
    assert (stopped["stopped"], stopped["last_ended"]) == (
        "it did not understand its command line",
        None,
    )
    # The description is a copy: the caller cannot change the pool's counts.
    running["restarts"]["exited"] = 99  # type: ignore[index]
    assert first.restarts["exited"] == 1


def test_a_workers_memory_is_its_processs_resident_set() -> None:
    """/proc/PID/statm's resident pages, in bytes: this process's agrees with what the kernel
    says in /proc/self/status (VmRSS, in KiB) to within what the process allocates between the
    two reads."""
    with open("/proc/self/status") as status:
        (vm_rss,) = [line for line in status if line.startswith("VmRSS:")]
    resident = remote_relay._resident_bytes(os.getpid())
    assert resident is not None
    assert abs(resident - int(vm_rss.split()[1]) * 1024) < 1048576
    assert remote_relay._resident_bytes(None) is None
    ended = subprocess.Popen(["true"])
    ended.wait()  # reaped: its pid names no process now
    assert remote_relay._resident_bytes(ended.pid) is None
