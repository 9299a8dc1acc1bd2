"""The trio side of the control socket (``control.py`` has the protocol and the client).

One task accepts on ``<state_dir>/control.sock``; each connection gets a task of its own that reads
one request line, answers it and closes. A socket file left by a gateway that was killed is
replaced; one that a running gateway answers on is left to it (this gateway then serves none,
with a warning). Nothing here may end the gateway: a failing connection is closed and logged.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

import trio

from gateway.core.control import MAX_PATH, MAX_REQUEST, respond
from gateway.core.logs import log_exception, transport_error_text

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 2.0
"""Seconds a client has to send its request line."""

SEND_TIMEOUT = 10.0
"""Seconds a client has to read the answer (the CLI reads at once)."""

MAX_CONNECTIONS = 8
"""Connections answered at once; more are closed unanswered."""

Answer = Callable[..., Mapping[str, object]]
"""``answer(query)``, or ``answer(query, arguments)`` for a query that takes arguments
(``control.respond``)."""


async def serve_control(
    path: Path,
    answer: Answer,
    *,
    task_status: trio.TaskStatus[Path | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer control requests on ``path`` with ``answer(query)`` until cancelled;
    ``task_status.started`` reports the path, or None when it could not be served (logged)."""
    listener = _bind(path)
    if listener is None:
        task_status.started(None)
        return
    bound = os.stat(path)
    open_connections = [0]
    try:
        async with listener, trio.open_nursery() as nursery:
            task_status.started(path)
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:  # EMFILE and kin: wait for descriptors to come back
                    log.warning("control socket: accept failed: %s", transport_error_text(exc))
                    await trio.sleep(0.1)
                    continue
                if open_connections[0] >= MAX_CONNECTIONS:
                    await stream.aclose()
                    continue
                open_connections[0] += 1
                nursery.start_soon(_handle, stream, answer, open_connections)
    finally:
        _unlink_if_ours(path, bound)


async def _handle(stream: trio.SocketStream, answer: Answer, open_connections: list[int]) -> None:
    try:
        async with stream:
            request = b""
            with trio.move_on_after(REQUEST_TIMEOUT):
                while b"\n" not in request and len(request) <= MAX_REQUEST:
                    chunk = await stream.receive_some(MAX_REQUEST + 1)
                    if not chunk:
                        break
                    request += chunk
            reply = respond(request, answer)
            with trio.move_on_after(SEND_TIMEOUT):
                await stream.send_all(reply)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the client went away: nothing to answer
    except Exception:
        log_exception(log, "control socket: a connection failed")
    finally:
        open_connections[0] -= 1


def _bind(path: Path) -> trio.SocketListener | None:
    """The listening socket at ``path``, or None (logged). Synchronous: a bind in the state
    directory is a local file operation (trio's own binds a Unix socket in a thread)."""
    if len(bytes(path)) > MAX_PATH:
        log.warning(
            "control socket not opened: %s is longer than a Unix socket path may be (%d "
            "octets); `voipgw calls` shows call quality as of each call's last change",
            path,
            MAX_PATH,
        )
        return None
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.is_socket() and _answers(path):
        log.warning(
            "control socket not opened: another gateway answers on %s (one state directory "
            "per gateway)",
            path,
        )
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.unlink(missing_ok=True)  # a socket file left by a gateway that was killed
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(MAX_CONNECTIONS)
    except OSError as exc:
        sock.close()
        log.warning("control socket not opened: %s: %s", path, transport_error_text(exc))
        return None
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


def _answers(path: Path) -> bool:
    """Whether a process listens on the socket file ``path`` (a connection refused: nobody)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)  # a listener with a full backlog says EAGAIN: alive
        try:
            probe.connect(str(path))
        except OSError as exc:
            return exc.errno not in (errno.ECONNREFUSED, errno.ENOENT)
    return True


def _unlink_if_ours(path: Path, bound: os.stat_result) -> None:
    """Remove the socket file at stop, unless another gateway has replaced it since."""
    try:
        now = os.stat(path)
        if stat.S_ISSOCK(now.st_mode) and (now.st_dev, now.st_ino) == (bound.st_dev, bound.st_ino):
            path.unlink()
    except OSError:
        pass
