"""``voipgw recording pause|resume CALL-ID``: asks the running gateway over its control socket
(the ``recording`` query, gateway/core/control.py) to pause or resume a call's recordings. The
command runs against a real Unix socket answered by a thread with ``control.respond``; what the
gateway does with it is tested in tests/component/calls/test_b2bua_recording_pause.py."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from gateway.core import cli
from gateway.core.control import SOCKET_NAME, ControlError, respond

Answer = Callable[[Mapping[str, str]], Mapping[str, object]]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, list[Answer], list[dict[str, object]]]]:
    """A state directory whose control socket answers each request with the next of the
    functions the test appends, called with the request's arguments; the requests as sent."""
    answers: list[Answer] = []
    requests: list[dict[str, object]] = []
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / SOCKET_NAME))
    server.listen()
    server.settimeout(10)

    def answer(query: str, arguments: Mapping[str, str] | None = None) -> Mapping[str, object]:
        assert query == "recording" and arguments is not None
        return answers.pop(0)(arguments)

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                request = connection.recv(1024)
                requests.append(json.loads(request))
                connection.sendall(respond(request, answer))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield str(tmp_path), answers, requests
    server.shutdown(socket.SHUT_RDWR)  # wakes the thread's accept (Linux); close alone does not
    server.close()
    thread.join(timeout=10)
    assert not thread.is_alive()


def _run(capsys: pytest.CaptureFixture[str], state: str, *words: str) -> tuple[int, str, str]:
    code = cli.main(["recording", *words, "--state-dir", state])
    out, err = capsys.readouterr()
    return code, out, err


def _paused(paused: bool, changed: bool = True) -> Answer:
    return lambda arguments: {
        "call_id": "a84b4c76e66710@pc33;9a81c01a",
        "paused": paused,
        "changed": changed,
        "recordings": ["siprec", "recorder"],
    }


def test_a_pause_and_a_resume_say_who_asked_and_what_the_call_is_now(
    gateway: tuple[str, list[Answer], list[dict[str, object]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    state, answers, requests = gateway
    answers += [_paused(True), _paused(True, changed=False), _paused(False)]
    code, out, err = _run(capsys, state, "pause", "a84b4c76e66710@pc33", "--by", "agent 7")
    assert (code, err) == (0, "")
    assert out == "call a84b4c76e66710@pc33;9a81c01a: paused (siprec, recorder)\n"
    code, out, _ = _run(capsys, state, "pause", "a84b4c76e66710@pc33", "--by", "agent 7")
    assert (code, out) == (
        0,
        "call a84b4c76e66710@pc33;9a81c01a: paused (already) (siprec, recorder)\n",
    )
    code, out, _ = _run(capsys, state, "resume", "a84b4c76e66710@pc33;9a81c01a", "--by", "sup")
    assert (code, out) == (0, "call a84b4c76e66710@pc33;9a81c01a: recorded (siprec, recorder)\n")
    assert requests == [
        {
            "query": "recording",
            "action": "pause",
            "call_id": "a84b4c76e66710@pc33",
            "by": "agent 7",
        },
        {
            "query": "recording",
            "action": "pause",
            "call_id": "a84b4c76e66710@pc33",
            "by": "agent 7",
        },
        {
            "query": "recording",
            "action": "resume",
            "call_id": "a84b4c76e66710@pc33;9a81c01a",
            "by": "sup",
        },
    ]


def _pending(paused: bool, changed: bool = True) -> Answer:
    return lambda arguments: {
        "call_id": "a84b4c76e66710@pc33;9a81c01a",
        "paused": paused,
        "changed": changed,
        "recordings": [],
        "pending": True,
    }


def test_a_pause_before_the_recording_starts_says_it_is_kept(
    gateway: tuple[str, list[Answer], list[dict[str, object]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    state, answers, _ = gateway
    answers += [_pending(True), _pending(True, changed=False), _pending(False)]
    call = "call a84b4c76e66710@pc33;9a81c01a"
    code, out, err = _run(capsys, state, "pause", "a84b4c76e66710@pc33", "--by", "agent 7")
    assert (code, out, err) == (0, f"{call}: paused (not recording yet: it starts paused)\n", "")
    code, out, _ = _run(capsys, state, "pause", "a84b4c76e66710@pc33", "--by", "agent 7")
    assert (code, out) == (0, f"{call}: paused (already; not recording yet: it starts paused)\n")
    code, out, _ = _run(capsys, state, "resume", "a84b4c76e66710@pc33", "--by", "agent 7")
    assert (code, out) == (0, f"{call}: recorded (not recording yet: no pause kept)\n")


def test_without_by_the_user_running_the_command_asks(
    gateway: tuple[str, list[Answer], list[dict[str, object]]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state, answers, requests = gateway
    monkeypatch.setenv("SUDO_USER", "carol")  # `sudo -u voipgw voipgw recording ...`
    answers.append(_paused(True))
    assert _run(capsys, state, "pause", "c1")[0] == 0
    assert requests[0]["by"] == "carol"


def test_a_refusal_is_exit_1_with_the_gateways_reason_and_json_is_the_answer(
    gateway: tuple[str, list[Answer], list[dict[str, object]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    state, answers, _ = gateway

    def not_recorded(arguments: Mapping[str, str]) -> Mapping[str, object]:
        raise ControlError(f"call {arguments['call_id']} is not recorded: nothing to pause")

    answers += [not_recorded, _paused(True)]
    code, out, err = _run(capsys, state, "pause", "c1", "--by", "a")
    assert (code, out) == (1, "")
    assert err == (
        "voipgw: recording pause: the gateway answered: call c1 is not recorded: nothing to pause\n"
    )
    code, out, _ = _run(capsys, state, "pause", "c1", "--by", "a", "--json")
    assert code == 0 and json.loads(out)["paused"] is True


def test_no_gateway_is_exit_1_and_a_bad_by_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _run(capsys, str(tmp_path), "pause", "c1", "--by", "a")
    assert (code, out) == (1, "")
    assert "no gateway running here" in err
    code, _, err = _run(capsys, str(tmp_path), "pause", "c1", "--by", "a\nforged log line")
    assert code == 2 and "--by must be 1 to 64 printable characters" in err


def test_the_control_protocol_refuses_a_recording_request_it_cannot_take() -> None:
    def never(query: str, arguments: Mapping[str, str] | None = None) -> Mapping[str, object]:
        raise AssertionError("not asked")

    for request, reason in (
        ({"action": "stop", "call_id": "c1", "by": "a"}, '"action" must be one of pause, resume'),
        ({"action": "pause", "by": "a"}, '"call_id" must be a call id of 1 to 256'),
        ({"action": "pause", "call_id": "c1", "by": "x" * 65}, '"by" must say who asks'),
        ({"action": "pause", "call_id": "c1", "by": "a\r\nb"}, '"by" must say who asks'),
        ({"action": "pause", "call_id": "c\n1", "by": "a"}, '"call_id" has characters'),
    ):
        data = json.dumps({"query": "recording", **request}).encode() + b"\n"
        error = json.loads(respond(data, never))["error"]
        assert reason in error, (request, error)


def test_voipgw_calls_shows_when_and_by_whom_a_recording_was_paused() -> None:
    line = cli.describe_taps(
        {
            "names": ["siprec"],
            "untapped_streams": [],
            "paused": True,
            "pause_count": 2,
            "pauses": [
                {
                    "paused_at": 1_700_000_000,
                    "paused_by": "agent 7",
                    "resumed_at": 1_700_000_042,
                    "resumed_by": "agent 7",
                },
                {"paused_at": 1_700_000_100, "paused_by": "sup"},
            ],
        }
    )
    assert line == (
        "media copied to: siprec; recording paused 2023-11-14 22:13:20 UTC by agent 7, "
        "resumed 2023-11-14 22:14:02 UTC by agent 7; recording paused 2023-11-14 22:15:00 "
        "UTC by sup (paused now)"
    )


def test_a_resume_while_a_partys_preference_holds_the_pause_says_so(
    gateway: tuple[str, list[Answer], list[dict[str, object]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """[plugins.siprec] recordpref = "pause": the operator's resume is taken, but the
    recording stays paused while a party prefers it (RFC 7866 §7.2): not "recorded"."""
    state, answers, _ = gateway
    answers.append(
        lambda arguments: {
            "call_id": "a84b4c76e66710@pc33;9a81c01a",
            "paused": False,
            "changed": True,
            "recordings": ["siprec"],
            "paused_by_preference": ["siprec"],
        }
    )
    code, out, _ = _run(capsys, state, "resume", "a84b4c76e66710@pc33", "--by", "sup")
    assert (code, out) == (
        0,
        "call a84b4c76e66710@pc33;9a81c01a: resumed, but still paused for a party's recording"
        " preference (siprec)\n",
    )
