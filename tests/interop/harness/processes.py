"""Starting and stopping the peer processes of an interop test.

Every process is started here so that each one dies with the test run: it gets SIGKILL from the
kernel when the pytest process dies (prctl PR_SET_PDEATHSIG), and the context managers that own
them stop them on the way out of every test, failed or not.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


# Looked up once, in the parent: dlopen in the child between fork and exec takes the dynamic
# loader's lock, which another thread of the parent may have held at the fork (a deadlock).
_prctl = ctypes.CDLL(None, use_errno=True).prctl


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """A ``preexec_fn``: the kernel sends the child ``sig`` when the thread that started it
    dies, however it dies (prctl PR_SET_PDEATHSIG; Linux only, which is where the peers run).

    Every child started in a session of its own needs it: a signal to the test run's process
    group (``timeout``, a cancelled CI job) does not reach it, and a pytest killed alone leaves
    every child running. ``functools.partial(die_with_parent, signal.SIGINT)`` for a child that
    stops what it started itself on Ctrl-C (a benchmark script, a pytest); SIGINT is then set to
    its default first, as a terminal's foreground command has it (a run started in the
    background ignores it, and the child would inherit that).
    """
    # Runs in the child between fork and exec.
    if sig == signal.SIGINT:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    _prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)


def start_process(
    args: Sequence[str],
    *,
    log: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    stdout: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``args`` with stdin from /dev/null and stdout and stderr appended to ``log``, or
    stdout written to the file ``stdout`` (a program's output, e.g. dumpcap's pcap) if given."""
    with log.open("ab") as log_file, (stdout or Path(os.devnull)).open("wb") as out_file:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log_file if stdout is None else out_file,
            stderr=subprocess.STDOUT if stdout is None else log_file,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            preexec_fn=die_with_parent,
        )


def children_of(pid: int) -> list[int]:
    """The processes ``pid`` started and has not reaped, from any of its threads (a subprocess
    may be spawned from a worker thread); empty once ``pid`` is gone."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return []
    children: list[int] = []
    for task in tasks:
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue  # the thread ended meanwhile
    return sorted(children)


def process_gone(pid: int) -> bool:
    """True when ``pid`` has exited (reaped, or a zombie waiting for its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def stop_process(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 10.0
) -> int:
    """Send ``sig`` unless it has exited, wait ``timeout`` s, then SIGKILL; the exit code.

    A process killed after the timeout reports its negative signal number (-9).
    """
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def tail(path: Path, lines: int = 80) -> str:
    """The last ``lines`` lines of a text file, or a note that it does not exist."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])
