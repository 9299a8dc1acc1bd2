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

from pgcluster import Cluster, postmaster_of

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


def _runs_in(data: Path) -> bool:
    """Whether any process still runs in ``data`` (a postmaster or one of its backends)."""
    target = os.path.realpath(data)
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and os.readlink(entry / "cwd") == target:
                return True
        except OSError:
            continue
    return False


def _kill_server(cluster: Cluster) -> None:
    """The server killed outright, as the OOM killer does: its postmaster.pid stays."""
    pid = postmaster_of(cluster.data)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    # Gone, reaped too (a zombie's pid is taken yet), and its backends after it.
    while Path(f"/proc/{pid}").exists() or _runs_in(cluster.data):
        assert time.monotonic() < deadline
        time.sleep(0.05)  # polls; asserts nothing on time
    assert (cluster.data / "postmaster.pid").exists()


def _stale_file_naming(cluster: Cluster, pid: int) -> None:
    lock = cluster.data / "postmaster.pid"
    lines = lock.read_text().splitlines()
    lock.write_text("\n".join([str(pid), *lines[1:]]) + "\n")


def test_a_stale_postmaster_pid_naming_another_process_is_never_signalled(
    postgres_cluster: Cluster,  # skips (or fails in CI) where PostgreSQL is not installed
) -> None:
    # A killed server's pid went to another process of the same user: on a machine shared by
    # several test runs, another run's server or backend. pg_ctl would signal it.
    user = "postgres" if os.getuid() == 0 else None
    bystander = subprocess.Popen(["sleep", "120"], user=user)
    cluster = Cluster(postgres_cluster.bindir)
    try:
        cluster.initdb()
        cluster.start()
        _kill_server(cluster)
        _stale_file_naming(cluster, bystander.pid)
        assert postmaster_of(cluster.data) is None
        cluster.stop()  # nothing runs here: nothing is signalled
        assert bystander.poll() is None
        cluster.start()  # the reused directory starts, the stale file notwithstanding
        assert postmaster_of(cluster.data) not in (None, bystander.pid)
        assert cluster.admin("SELECT 1") == [(1,)]
        # The watcher, once the process that made the cluster is gone, with a stale file.
        _kill_server(cluster)
        _stale_file_naming(cluster, bystander.pid)
        os.close(cluster._alive)
        cluster._alive = -1
        assert cluster._watcher.wait(60) == 0
        assert bystander.poll() is None
        assert not cluster.root.exists()  # the directory is deleted all the same
    finally:
        bystander.kill()
        bystander.wait()
        cluster.destroy()
