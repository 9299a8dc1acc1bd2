"""Whether another process could take the POSIX lock SQLite takes on a file: shared by the
start-up checks' tests and the private database files' tests, which both check that a file this
process holds keeps its locks (closing any descriptor of a file drops every POSIX lock the
process holds on it, https://www.sqlite.org/howtocorrupt.html §2.2)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def locked_for_others(path: Path) -> bool:
    """Whether another process is refused a POSIX write lock of ``path`` (F_SETLK), the lock
    SQLite takes: a forked child tries."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 2
        try:
            with open(path, "r+b") as file:
                fcntl.lockf(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            status = 1
        except OSError:
            status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) in (0, 1)
    return os.WEXITSTATUS(status) == 0
