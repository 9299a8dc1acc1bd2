"""The MIKEY replay journal on disk: what :class:`~gateway.plugins.keyexchange.mikey.replay.
ReplayCache` saw, kept across restarts (RFC 3830 §5.4).

One SQLite file, ``<state_dir>/mikey/replay.sqlite`` (mode 0600), as the other stores: a row per
accepted psk or dh-hmac message (the SHA-256 digest of the message, never the message, and its
T), per authenticated message we sent, and per cache scope its floor. Rows leave once their T is
older than the clock skew, so the file holds at most a window's worth of messages: a cache
whose entries expire deletes its scope's old rows (one statement, as before); every
``sweep_every`` seconds of the clock that statement instead deletes the old rows of *every*
scope and the floors below the window (a floor under the window refuses nothing the skew check
takes), and so does the first read after a start. Without the sweep the rows of an account or
trunk that stopped using MIKEY stayed until it came back: with many accounts coming and going,
the file grew without bound. No statement is added per message.

Writes go through at once (a message accepted and not yet written would be a replay the next
process takes), to a write-ahead log with synchronous=NORMAL as the gateway's own store: no
fsync per message in the event loop, and a commit outlives the process, not a power cut. A
write that fails is logged and the cache goes on in memory: the call is not failed for it; a
read that fails at start raises ``OSError`` to the cache, which then refuses every message that
could be a replay for a while (see the cache's docstring); a file SQLite finds corrupt is then
renamed ``replay.sqlite.corrupt-<UTC time>`` and a new journal started, so only this start pays.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path

from gateway.core.store.sqlite import create_private_file

log = logging.getLogger(__name__)

__all__ = ["DIRECTORY", "FILE", "ReplayStore"]

DIRECTORY = "mikey"
FILE = "replay.sqlite"

# How long a write waits for another process's lock (a second gateway on the same state_dir,
# an operator's sqlite3 shell) before it fails and is logged: the event loop waits that long.
# As the gateway's own store (gateway/core/store/sqlite.py); the cache in memory goes on.
BUSY_TIMEOUT = 0.05

SWEEP_EVERY = 300.0
"""Seconds (of the caches' clock, MIKEY's T) between sweeps of every scope's expired rows."""


class ReplayStore:
    """A :class:`~gateway.plugins.keyexchange.mikey.replay.ReplayJournal` in the SQLite file at
    ``path`` (":memory:" for tests), opened at its first use. ``sweep_every``: seconds between
    sweeps of the rows every scope left behind (see the module docstring)."""

    def __init__(self, path: Path | str, *, sweep_every: float = SWEEP_EVERY) -> None:
        self.path = path
        self.sweep_every = sweep_every
        self._swept: float | None = None
        """The cutoff of the last sweep (None: none yet in this process)."""
        self._db: sqlite3.Connection | None = None
        self._warned = False
        self._lost: str | None = None
        """Why what this journal held before is unknown (it was corrupt and set aside)."""

    def __repr__(self) -> str:
        return f"<ReplayStore {self.path}>"

    def load(self, scope: str, *, since: float) -> tuple[list[tuple[bytes, float, bool]], float]:
        if self._lost is not None:
            # Another scope's first use found the journal corrupt: this scope's rows went with
            # it, and the new journal's emptiness says nothing about before this process.
            raise OSError(self._lost)
        try:
            db = self._open()
            rows = db.execute(
                "SELECT digest, t, own FROM seen WHERE scope = ? AND t >= ?", (scope, since)
            ).fetchall()
            floor = db.execute("SELECT floor FROM floors WHERE scope = ?", (scope,)).fetchone()
        except (sqlite3.Error, OSError) as exc:
            log.error(
                "MIKEY replay journal %s not read (%s)%s: psk and dh-hmac messages stamped "
                "before now plus the clock skew are refused as possible replays",
                self.path,
                exc,
                self._set_aside(exc),
            )
            raise OSError(str(exc)) from None
        if self._swept is None:
            # The first read after a start: rows and floors every scope left behind while the
            # gateway was stopped, or by scopes no longer used, go now. After the read, which
            # sets a corrupt journal aside: a sweep first would fail on it and log that writes
            # fail until a restart, which the new journal then contradicts.
            self._sweep(since)
        entries = [(bytes(digest), float(t), bool(own)) for digest, t, own in rows]
        return entries, float(floor[0]) if floor is not None else float("-inf")

    def record(self, scope: str, digest: bytes, timestamp: float, *, own: bool) -> None:
        self._write(
            "INSERT OR REPLACE INTO seen (scope, digest, t, own) VALUES (?, ?, ?, ?)",
            (scope, digest, timestamp, int(own)),
        )

    def raise_floor(self, scope: str, floor: float) -> None:
        self._write(
            "INSERT INTO floors (scope, floor) VALUES (?, ?) "
            "ON CONFLICT (scope) DO UPDATE SET floor = max(floor, excluded.floor)",
            (scope, floor),
        )

    def forget_before(self, scope: str, timestamp: float) -> None:
        if self._swept is None or timestamp >= self._swept + self.sweep_every:
            self._sweep(timestamp)  # every scope's, in place of this scope's statement
        else:
            self._write("DELETE FROM seen WHERE scope = ? AND t < ?", (scope, timestamp))

    def _sweep(self, timestamp: float) -> None:
        """Delete every scope's rows with T before ``timestamp``, and floors below it."""
        self._swept = timestamp
        self._write(
            "DELETE FROM seen WHERE t < ?",
            (timestamp,),
            "DELETE FROM floors WHERE floor < ?",
        )

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _set_aside(self, exc: BaseException) -> str:
        """A journal SQLite says is corrupt or no database is renamed (with its -wal and -shm)
        and the next write starts a new one: left in place, it would fail every write and
        every start after this one, each refusing MIKEY for the window. The text for the log
        (empty when the file is left where it is)."""
        code = getattr(exc, "sqlite_errorcode", None)
        if not isinstance(self.path, Path) or code not in (
            sqlite3.SQLITE_CORRUPT,
            sqlite3.SQLITE_NOTADB,
        ):
            return ""
        self.close()
        aside = self.path.with_name(
            f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        )
        try:
            for suffix in ("-wal", "-shm", ""):  # the database last: a new one has no old log
                source = self.path.with_name(self.path.name + suffix)
                if source.exists():
                    os.replace(source, aside.with_name(aside.name + suffix))
        except OSError as rename:
            return f"; not set aside ({rename})"
        self._lost = f"{self.path} was corrupt, set aside as {aside.name}"
        return f"; set aside as {aside.name}, a new journal is started"

    def _write(self, statement: str, parameters: tuple[object, ...], *more: str) -> None:
        """``statement``, then each of ``more`` with the same parameters, in one transaction."""
        try:
            db = self._open()
            with db:
                for text in (statement, *more):
                    db.execute(text, parameters)
        except (sqlite3.Error, OSError) as exc:
            # The cache in memory still refuses replays until this process stops.
            if not self._warned:
                log.warning(
                    "MIKEY replay journal %s not written (%s): replays are refused until a "
                    "restart only (logged once)",
                    self.path,
                    exc,
                )
            self._warned = True

    def _open(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if isinstance(self.path, Path):
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            create_private_file(self.path)  # 0600 before a secret is written in it
        db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT)
        try:
            # Each accepted message is a commit made in the event loop, which relays media too:
            # in the default rollback journal with synchronous=FULL that is several fsyncs,
            # milliseconds each (tens on a busy disk). Write-ahead logging with
            # synchronous=NORMAL (https://sqlite.org/wal.html), as the gateway's own store, makes
            # a commit a write to the log: it survives the process (what a restart needs) and
            # may be lost only with the machine.
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            with db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS seen (scope TEXT NOT NULL, digest BLOB NOT NULL, "
                    "t REAL NOT NULL, own INTEGER NOT NULL, PRIMARY KEY (scope, digest, own))"
                )
                db.execute("CREATE INDEX IF NOT EXISTS seen_t ON seen (scope, t)")
                db.execute("CREATE TABLE IF NOT EXISTS floors (scope TEXT PRIMARY KEY, floor REAL)")
        except BaseException:
            # Not kept (the next use opens it again): closed now, not whenever it is collected.
            db.close()
            raise
        self._db = db
        return db
