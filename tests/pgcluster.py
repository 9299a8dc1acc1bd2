"""A throwaway PostgreSQL cluster for the store tests, from the distribution's binaries.

Debian's ``postgresql`` package puts ``initdb`` and ``pg_ctl`` in /usr/lib/postgresql/VERSION/bin
(not on PATH). PostgreSQL refuses to run as root, so as root (CI) the cluster is made and run as
the ``postgres`` user the package creates; as anyone else, as that user. It listens on 127.0.0.1
on a port of this process's block (:func:`free_port`; password authentication, as a gateway node
would connect) and on a Unix socket in its own directory (trust, for the tests' administrative
connection). Durability is switched off: the cluster is deleted at the end of the session.

The server outlives the process that started it: ``pg_ctl start`` daemonizes it (a session of
its own, not our child), so a pytest killed before its session ends (SIGKILL, ``timeout -s
KILL``, a cancelled CI job) never stops it, and it held its port and directory for hours. Each
cluster therefore has a watcher from the moment its directory exists: a small process in a
session of its own (a signal to pytest's process group spares it) that blocks reading a pipe
whose write end only this process holds. Any end of this process closes that end (the kernel
closes a dead process's descriptors), and on EOF the watcher stops the server (``pg_ctl stop -m
immediate``) and deletes the directory. ``PR_SET_PDEATHSIG`` cannot do it: it reaches only a
direct child, and is cleared when runuser changes to the ``postgres`` user.

A ``postmaster.pid`` is believed only while the process it names runs in the cluster's data
directory (the postmaster's working directory: :func:`postmaster_of`). A server killed outright
(SIGKILL, the OOM killer) leaves the file behind, and its pid goes to another process in time: on
a machine where several test runs (helpers, developers) each run clusters as ``postgres``,
possibly another run's server or backend. ``pg_ctl stop`` would signal that process, and a
``pg_ctl start`` in the reused directory (a test that stops and starts its cluster) refuses to
start beside it. So the watcher stops nothing for a stale file, :meth:`Cluster.stop` stops
nothing for one, and :meth:`Cluster.start` deletes one first.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import select
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from tests.port_blocks import PortLease

SUPERUSER = "postgres"
STORE_USER = "voipgw"
# Settings for speed only: nothing in a test cluster needs to survive a crash.
FAST = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
# The watcher (module docstring): argv is the cluster's directory, its data directory and the
# command that stops its server. os.read returns b"" at EOF only: nothing ever writes the pipe.
WATCHER = """
import os, shutil, subprocess, sys
root, data, stop = sys.argv[1], sys.argv[2], sys.argv[3:]
while os.read(0, 64):
    pass
try:  # the server of this directory only: a stale file's pid may be anyone's (postmaster_of)
    with open(os.path.join(data, "postmaster.pid")) as lock:
        pid = int(lock.readline())
    ours = os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(data)
except (OSError, ValueError):
    ours = False
if ours:
    subprocess.run(stop, cwd=root, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
shutil.rmtree(root, ignore_errors=True)
"""


def postmaster_of(data: Path) -> int | None:
    """The pid of the server running in the data directory ``data``, or None: the pid its
    ``postmaster.pid`` names, if that process's working directory is ``data`` (the postmaster
    changes to its data directory at start). A file left by a killed server names a pid that
    is gone or now another process's (module docstring)."""
    try:
        with (data / "postmaster.pid").open() as lock:
            pid = int(lock.readline())
        running_in = os.readlink(f"/proc/{pid}/cwd")
    except (OSError, ValueError):
        return None
    return pid if running_in == os.path.realpath(data) else None


def postgres_bindir() -> Path | None:
    """The newest installed server's binaries, or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=_version)
    return found[-1].parent if found else None


def _version(initdb: Path) -> float:
    try:
        return float(initdb.parent.parent.name)
    except ValueError:
        return 0.0


def free_port(lease: PortLease) -> int:
    """A port for a server that binds it only later: from this process's port block
    (tests/port_blocks.py), locked against other test runs and below the kernel's ephemeral
    range. The server binds it after initdb, seconds later (far more on a loaded machine); a
    port-0 probe's port lies in the ephemeral range, where any process's port-0 bind or outgoing
    connection could take it meanwhile and fail the cluster's start. One port of the unit the
    process holds, the next one (no even start: that skipped a port at every other call),
    leased: given back with ``lease`` (a cluster's once destroyed), its unit unlocked when
    nothing else of it is handed out."""
    return lease.block(1, even=False)[0]


class Cluster:
    """One cluster: :meth:`start`, :meth:`stop`, :meth:`destroy`; :meth:`create_database`
    gives each test a database of its own, owned by the unprivileged role ``voipgw``."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="voipgw-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self._ports = PortLease()
        self.port = free_port(self._ports)
        self.password = secrets.token_urlsafe(18)
        self._as_user: list[str] = []
        if os.getuid() == 0:
            # initdb and postgres refuse root (PostgreSQL docs §19.1): run them as postgres.
            account = pwd.getpwnam(SUPERUSER)
            os.chown(self.root, account.pw_uid, account.pw_gid)
            self._as_user = ["runuser", "-u", SUPERUSER, "--"]
        self.socket_dir.mkdir()
        if self._as_user:
            shutil.chown(self.socket_dir, SUPERUSER, SUPERUSER)
        self._databases = 0
        self._watcher, self._alive = self._watch()

    def _stop_command(self, mode: str) -> list[str]:
        return [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"]

    def _watch(self) -> tuple[subprocess.Popen[bytes], int]:
        """The watcher (module docstring) and the write end of its pipe, which no child of
        this process inherits (os.pipe's descriptors are not inheritable)."""
        read_end, write_end = os.pipe()
        try:
            watcher = subprocess.Popen(
                [
                    *(sys.executable, "-I", "-c", WATCHER, str(self.root), str(self.data)),
                    *(*self._as_user, *self._stop_command("immediate")),
                ],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd="/",
                start_new_session=True,
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        return watcher, write_end

    def _run(self, *command: str | Path) -> None:
        subprocess.run(
            [*self._as_user, *map(str, command)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.root,
        )

    def initdb(self) -> None:
        password_file = self.root / "pw"
        password_file.write_text(self.password + "\n")
        if self._as_user:
            shutil.chown(password_file, SUPERUSER, SUPERUSER)
        self._run(
            self.bindir / "initdb",
            "-D",
            self.data,
            "-U",
            SUPERUSER,
            "--pwfile",
            password_file,
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        password_file.unlink()

    def start(self) -> None:
        """Start and wait until it accepts connections (``pg_ctl -w`` polls for that). A
        ``postmaster.pid`` left by a server of this directory killed outright is deleted first
        (module docstring): postgres would refuse to start if its pid were another's now;
        so is its socket's lock file, in this cluster's own socket directory."""
        if postmaster_of(self.data) is None:
            (self.data / "postmaster.pid").unlink(missing_ok=True)
            for stale in self.socket_dir.glob(".s.PGSQL.*"):
                stale.unlink(missing_ok=True)
        options = f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} {FAST}"
        self._run(
            self.bindir / "pg_ctl",
            "-D",
            self.data,
            "-l",
            self.root / "server.log",
            "-o",
            options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        """Stop the server of this directory; nothing when none runs (a stale
        ``postmaster.pid`` names someone else's process: pg_ctl would signal it)."""
        if postmaster_of(self.data) is None:
            return
        self._run(*self._stop_command("fast"))

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
        self._ports.release()  # stopped: no server binds it any more
        if self._alive >= 0:
            os.close(self._alive)  # the watcher finds nothing left to do, and exits
            self._alive = -1
            try:
                self._watcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._watcher.kill()
                self._watcher.wait()

    def admin_dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"

    def dsn(self, dbname: str, *, with_password: bool = True) -> str:
        """What a gateway node would be configured with: TCP, role ``voipgw``, password."""
        dsn = f"host=127.0.0.1 port={self.port} user={STORE_USER} dbname={dbname}"
        return f"{dsn} password={self.password}" if with_password else dsn

    def store_table(self, dbname: str, directory: Path, node: str | None = None) -> dict[str, str]:
        """A node's ``[store]`` table for ``dbname``: the DSN without the password, which goes
        into a file of its own in ``directory`` (mode 0600, as the docs ask); ``node`` names
        the node when given."""
        password_file = directory / "db-password"
        if not password_file.exists():
            password_file.write_text(self.password + "\n")
            password_file.chmod(0o600)
        store = {
            "backend": "postgresql",
            "dsn": self.dsn(dbname, with_password=False),
            "password_file": str(password_file),
        }
        if node is not None:
            store["node"] = node
        return store

    def admin(self, sql: str, dbname: str = "postgres") -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(self.admin_dsn(dbname), autocommit=True) as conn:
            cursor = conn.execute(sql.encode())
            return cursor.fetchall() if cursor.description else []

    def create_role(self) -> None:
        self.admin(f"CREATE ROLE {STORE_USER} LOGIN PASSWORD '{self.password}'")

    def create_database(self) -> str:
        self._databases += 1
        name = f"store_{self._databases}"
        self.admin(f"CREATE DATABASE {name} OWNER {STORE_USER}")
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def terminate(self, dbname: str, application_name: str | None = None) -> int:
        """``pg_terminate_backend`` the store's sessions on ``dbname``; how many."""
        where = f"datname = '{dbname}' AND usename = '{STORE_USER}'"
        if application_name is not None:
            where += f" AND application_name = '{application_name}'"
        rows = self.admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {where}")
        return len(rows)


class StallingProxy:
    """A TCP proxy to the cluster that can stop answering as a server out of reach does, for
    the node's connections only (the cluster goes on serving the test's own). Forwarding, it
    copies bytes both ways; :meth:`stall` stops it reading anything, while its kernel still
    acknowledges what the node sends and answers its keepalives (as for a server process
    stopped, or a proxy or firewall that holds connections open without forwarding): neither
    keepalives nor tcp_user_timeout end a wait, only statement_timeout would, and that is the
    server's. A connection opened while stalled is accepted and never forwarded (libpq's
    connect then waits for connect_timeout). :meth:`cut` closes the connections there are
    (each end sees the other gone), as a restart of the server would. :meth:`resume` forwards
    again, as a server that answers again does (what it held unread is forwarded; the
    connections accepted while stalled are closed: libpq's connect fails and is retried)."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._pairs: dict[socket.socket, socket.socket] = {}
        self.held: list[socket.socket] = []  # accepted while stalled, never forwarded
        self._stall = threading.Event()
        self._stalled = threading.Event()  # its thread reads nothing any more
        self._resume = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stalling proxy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._server, selectors.EVENT_READ)
        while not self._closing.is_set():
            if self._stall.is_set() and not self._stalled.is_set():
                for sock in self._pairs:
                    selector.unregister(sock)
                self._stalled.set()
            if self._resume.is_set():
                for sock in self._pairs:
                    selector.register(sock, selectors.EVENT_READ)
                for sock in self.held:
                    sock.close()
                self.held.clear()
                self._stall.clear()
                self._stalled.clear()
                self._resume.clear()
            for key, _ in selector.select(0.05):
                sock = cast(socket.socket, key.fileobj)
                if sock is self._server:
                    client, _ = self._server.accept()
                    if self._stalled.is_set():
                        self.held.append(client)
                        continue
                    upstream = socket.create_connection(("127.0.0.1", self._target))
                    self._pairs[client], self._pairs[upstream] = upstream, client
                    selector.register(client, selectors.EVENT_READ)
                    selector.register(upstream, selectors.EVENT_READ)
                    continue
                if self._stalled.is_set() or sock not in self._pairs:
                    continue  # not read any more, or closed with its peer in this round
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                peer = self._pairs[sock]
                if data:
                    peer.sendall(data)
                    continue
                for end in (sock, peer):
                    selector.unregister(end)
                    self._pairs.pop(end, None)
                    end.close()
        selector.close()

    def stall(self) -> None:
        self._stall.set()
        _wait_until(self._stalled.is_set)

    def resume(self) -> None:
        """Forward again (see the class)."""
        assert self._stalled.is_set()
        self._resume.set()
        _wait_until(lambda: not self._resume.is_set())

    def unanswered(self) -> bool:
        """Whether the node sent something the stalled proxy has not read (a statement)."""
        readable, _, _ = select.select(list(self._pairs), [], [], 0)
        return bool(readable)

    def cut(self) -> None:
        """Close every forwarded connection (only while stalled: the thread reads none)."""
        assert self._stalled.is_set()
        for sock in list(self._pairs):
            sock.close()
        self._pairs.clear()

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        for sock in [*self._pairs, *self.held, self._server]:
            sock.close()


def _wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the deadline"
        time.sleep(0.005)
