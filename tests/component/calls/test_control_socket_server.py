"""The control socket's server (gateway/core/control_server.py) on real Unix sockets: a file left
by a gateway that was killed is replaced, one a running gateway answers on is left to it, the
file goes at stop, a client that sends nothing is let go, and more clients than it serves at
once are closed unanswered while the others are answered."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import trio

from gateway.core.control import MAX_PATH
from gateway.core.control_server import MAX_CONNECTIONS, REQUEST_TIMEOUT, serve_control

REQUEST = b'{"query": "live_quality"}\n'


def answer(query: str) -> dict[str, object]:
    return {"calls": {}, "query": query}


async def ask(path: Path) -> bytes:
    stream = await trio.open_unix_socket(str(path))
    data = b""
    async with stream:
        await stream.send_all(REQUEST)
        with trio.fail_after(5):
            while chunk := await stream.receive_some(4096):
                data += chunk
    return data


async def test_a_stale_socket_file_is_replaced_and_removed_at_stop(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    path = tmp_path / "state" / "control.sock"
    path.parent.mkdir()
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))
    left.close()  # the file stays, nobody listens: a killed gateway's
    async with trio.open_nursery() as nursery:
        assert await nursery.start(serve_control, path, answer) == path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert json.loads(await ask(path)) == {"calls": {}, "query": "live_quality"}
        nursery.cancel_scope.cancel()
    assert not path.exists()


async def test_a_socket_another_gateway_answers_on_is_left_to_it(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    path = tmp_path / "control.sock"
    async with trio.open_nursery() as nursery:
        assert await nursery.start(serve_control, path, answer) == path
        assert await nursery.start(serve_control, path, lambda q: {"second": True}) is None
        assert json.loads(await ask(path))["query"] == "live_quality"  # still the first's
        nursery.cancel_scope.cancel()
    too_long = tmp_path / ("x" * MAX_PATH) / "control.sock"
    async with trio.open_nursery() as nursery:
        assert await nursery.start(serve_control, too_long, answer) is None


async def test_silent_clients_are_let_go_and_extra_ones_closed_unanswered(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    path = tmp_path / "control.sock"
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_control, path, answer)
        silent = [await trio.open_unix_socket(str(path)) for _ in range(MAX_CONNECTIONS)]
        await trio.sleep(0.1)  # all accepted
        # Every slot is held: the next client gets the connection closed (its request unread:
        # a reset), no answer.
        try:
            unanswered = await ask(path)
        except trio.BrokenResourceError:
            unanswered = b""
        assert unanswered == b""
        # Past REQUEST_TIMEOUT the silent ones get an error answer and their slots come back.
        await trio.sleep(REQUEST_TIMEOUT)
        for stream in silent:
            data = b""
            while chunk := await stream.receive_some(4096):
                data += chunk
            assert "not ended by a newline" in json.loads(data)["error"]
            await stream.aclose()
        assert json.loads(await ask(path))["calls"] == {}
        nursery.cancel_scope.cancel()
