"""tests/pgcluster.py: a throwaway PostgreSQL server ends with the test process that started it,
however that process ends. ``pg_ctl start`` daemonizes the server, so a pytest killed before its
session's teardown (SIGKILL, ``timeout -s KILL``, a cancelled CI job) left it running for hours,
holding its port and directory (session 31 found three)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from pgcluster import Cluster

ROOT = Path(__file__).parents[2]
# The other process makes and starts a cluster as the session fixture does, says where it is
# and its server's pid (postmaster.pid's first line), and waits to be killed.
OTHER = (
    "import sys, pgcluster; cluster = pgcluster.Cluster(pgcluster.postgres_bindir()); "
    "cluster.initdb(); cluster.start(); "
    "pid = (cluster.data / 'postmaster.pid').read_text().split()[0]; "
    "print(cluster.root, pid, flush=True); sys.stdin.read()"
)


def _postgres_runs(pid: int) -> bool:
    # A zombie, or another program given the pid since, is no server of ours.
    try:
        return b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def test_a_cluster_ends_when_the_process_that_started_it_is_killed(
    postgres_cluster: Cluster,  # skips (or fails in CI) where PostgreSQL is not installed
) -> None:
    path = os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])
    other = subprocess.Popen(
        [sys.executable, "-c", OTHER],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": path},
    )
    assert other.stdout is not None
    line = other.stdout.readline().split()
    assert len(line) == 2, line  # it started its cluster
    root, pid = Path(line[0].decode()), int(line[1])
    try:
        assert _postgres_runs(pid) and root.is_dir()
        other.send_signal(signal.SIGKILL)  # no teardown of any kind runs
        assert other.wait(10) == -signal.SIGKILL
        deadline = time.monotonic() + 30
        while _postgres_runs(pid) or root.exists():
            assert time.monotonic() < deadline, (_postgres_runs(pid), root.exists())
            time.sleep(0.05)  # polls; asserts nothing on time
    finally:
        if _postgres_runs(pid):  # left behind: stopped here, not left to run for hours
            as_user = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
            pg_ctl = postgres_cluster.bindir / "pg_ctl"
            command = [*as_user, str(pg_ctl), "-D", str(root / "data"), "-m", "immediate", "stop"]
            subprocess.run(command, capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)
        other.stdout.close()
        assert other.stdin is not None
        other.stdin.close()
