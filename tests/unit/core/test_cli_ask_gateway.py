"""The commands that ask the running gateway over its control socket (``voipgw trunks``,
``voipgw media-workers``, ``voipgw calls``' live quality) share one way to ask
(``cli.ask_gateway``): what each prints and its exit status are pinned here, byte for byte, when
the gateway answers, when none runs, when it refuses the query and when its answer is broken
(session 41: the same on main before the helper and after). A thread on a real Unix socket
stands in for the gateway's control server and answers the bytes the test gives."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core import cli
from gateway.core.control import SOCKET_NAME
from gateway.core.store.interface import CallRecord
from gateway.core.store.sqlite import SqliteStore

TRUNKS = {
    "trunks": [
        {
            "name": "carrier",
            "address": "sip:127.0.0.1:5070",
            "enabled": True,
            "up": False,
            "down_reason": "no answer to OPTIONS",
            "registered": True,
        }
    ],
    "session_targets": [],
}
NO_WORKERS = {"workers": None, "address": None}
LIVE = "live@127.0.0.1;t1"
QUALITY = {"calls": {LIVE: {"a": None}}}
REFUSAL = {"error": "unknown query"}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, list[bytes]]]:
    """A state directory (with a store holding one live call) whose control socket answers
    each request with the next of the answers the test appends, then closes."""
    state = tmp_path / "s"
    store = SqliteStore.open(state)
    try:
        store.call_record_insert(CallRecord(LIVE, "sip:alice@gw", "sip:bob@gw", 1.0))
    finally:
        store.close()
    answers: list[bytes] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(state / SOCKET_NAME))
    server.listen()

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.recv(1024)
                connection.sendall(answers.pop(0))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield str(state), answers
    server.shutdown(socket.SHUT_RDWR)  # wakes the thread's accept (Linux); close alone does not
    server.close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _answer(value: object) -> bytes:
    return json.dumps(value).encode() + b"\n"


@pytest.mark.parametrize(
    ("argv", "answer", "expected"),
    [
        (
            ["trunks"],
            TRUNKS,
            (0, "carrier  sip:127.0.0.1:5070  [down (no answer to OPTIONS), registered]\n", ""),
        ),
        (
            ["trunks", "--json"],
            TRUNKS,
            (0, json.dumps(TRUNKS["trunks"], indent=2) + "\n", ""),
        ),
        (
            ["trunks"],
            {"trunks": None},
            (1, "", "voipgw: trunks: the gateway's answer has no trunk list\n"),
        ),
        (
            ["media-workers"],
            NO_WORKERS,
            (
                0,
                "no media workers: the gateway relays media in its own process ([media] "
                "workers = 1)\n",
                "",
            ),
        ),
        (
            ["media-workers", "--json"],
            NO_WORKERS,
            (0, json.dumps(NO_WORKERS, indent=2) + "\n", ""),
        ),
        (
            ["calls"],
            QUALITY,
            (
                0,
                f"{LIVE}  sip:alice@gw -> sip:bob@gw  [live]\n"
                "  caller leg quality now (what it received): no RTCP from its phone yet\n",
                "",
            ),
        ),
    ],
    ids=[
        "trunks",
        "trunks-json",
        "trunks-no-list",
        "media-workers",
        "media-workers-json",
        "calls",
    ],
)
def test_what_each_command_prints_when_the_gateway_answers(
    gateway: tuple[str, list[bytes]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    answer: object,
    expected: tuple[int, str, str],
) -> None:
    state, answers = gateway
    answers.append(_answer(answer))
    assert _run(capsys, *argv, "--state-dir", state) == expected


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (_answer(REFUSAL), "the gateway answered: unknown query"),
        (b"<html>\n", "the gateway's answer is not JSON"),
        (_answer([1]), "the gateway's answer is not a JSON object"),
    ],
    ids=["refused", "not-json", "not-an-object"],
)
def test_what_each_command_prints_when_the_gateway_refuses(
    gateway: tuple[str, list[bytes]],
    capsys: pytest.CaptureFixture[str],
    reply: bytes,
    why: str,
) -> None:
    state, answers = gateway
    answers += [reply] * 3
    assert _run(capsys, "trunks", "--state-dir", state) == (1, "", f"voipgw: trunks: {why}\n")
    assert _run(capsys, "media-workers", "--state-dir", state) == (
        1,
        "",
        f"voipgw: media-workers: {why}\n",
    )
    assert _run(capsys, "calls", "--state-dir", state) == (
        0,
        f"{LIVE}  sip:alice@gw -> sip:bob@gw  [live]\n",
        f"note: live call quality not available ({why}): shown as of each call's last change\n",
    )


def test_what_each_command_prints_when_no_gateway_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "s"
    store = SqliteStore.open(state)
    try:
        store.call_record_insert(CallRecord(LIVE, "sip:alice@gw", "sip:bob@gw", 1.0))
    finally:
        store.close()
    path = state / SOCKET_NAME
    why = f"no gateway running here ({path} does not exist)"
    assert _run(capsys, "trunks", "--state-dir", str(state)) == (1, "", f"voipgw: trunks: {why}\n")
    assert _run(capsys, "media-workers", "--state-dir", str(state)) == (
        1,
        "",
        f"voipgw: media-workers: {why}\n",
    )
    assert _run(capsys, "calls", "--state-dir", str(state)) == (
        0,
        f"{LIVE}  sip:alice@gw -> sip:bob@gw  [live]\n",
        f"note: live call quality not available ({why}): shown as of each call's last change\n",
    )
    # A socket file no gateway listens on (one that was killed).
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.close()
    why = f"no gateway answers on {path}"
    assert _run(capsys, "trunks", "--state-dir", str(state)) == (1, "", f"voipgw: trunks: {why}\n")
    assert _run(capsys, "media-workers", "--state-dir", str(state)) == (
        1,
        "",
        f"voipgw: media-workers: {why}\n",
    )
