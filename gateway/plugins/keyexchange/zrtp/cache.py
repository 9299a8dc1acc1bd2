"""The ZRTP retained-secret cache (RFC 6189 §4.9, §4.6.1): key continuity with each phone.

After a good exchange both sides keep a retained secret, rs1 (and the one before, rs2), under the
other side's ZID. The next exchange with the same phone mixes the secret they share into its
keys (§4.3): a man in the middle of the first call would have to be in the middle of every later
one as well, and a phone that had its user compare the SAS once keeps showing the call as
verified. A cached rs1 that the phone does not share is a *cache mismatch*, which the call's
record reports as a possible man in the middle.

Kept in one SQLite file, ``<state_dir>/zrtp/cache.sqlite`` (mode 0600: the secrets protect later
calls' keys), one row per phone ZID. A ZID is 96 random bits the phone chose (§4.9); the table
grows by one small row per phone that ever spoke ZRTP with the gateway, and rows past their
expiry are removed when next looked up.

The cache never fails a call: a store that cannot be read or written is logged and the exchange
goes on as if the phone were new. Secrets never appear in a ``repr``, a log line or an error.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import attrs

from gateway.core.store.sqlite import create_private_file

log = logging.getLogger(__name__)

FILE = "cache.sqlite"
FOREVER = 0xFFFFFFFF
"""The cache expiration interval meaning "keep it indefinitely" (§4.9; what we send)."""


@attrs.frozen(repr=False)
class CachedSecrets:
    """What we keep of one phone: its retained secrets (rs2 may be absent)."""

    rs1: bytes
    rs2: bytes | None

    def __repr__(self) -> str:
        return "CachedSecrets(<redacted>)"


class SecretCache:
    """Retained secrets by peer ZID in the SQLite file at ``path`` (":memory:" for tests)."""

    def __init__(self, path: Path | str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._db: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"<SecretCache {self.path}>"

    def lookup(self, zid: bytes) -> CachedSecrets | None:
        """The secrets kept for ``zid``, or None (unknown, expired, or the store failed)."""
        try:
            db = self._open()
            row = db.execute("SELECT rs1, rs2, expires FROM peers WHERE zid = ?", (zid.hex(),))
            found = row.fetchone()
            if found is None:
                return None
            rs1, rs2, expires = found
            if expires is not None and expires <= self._clock():
                with db:
                    db.execute("DELETE FROM peers WHERE zid = ?", (zid.hex(),))
                return None
            return CachedSecrets(bytes(rs1), bytes(rs2) if rs2 is not None else None)
        except (sqlite3.Error, OSError) as exc:
            log.warning("ZRTP secret cache %s not read: %s", self.path, exc)
            return None

    def store(self, zid: bytes, rs1: bytes, *, rs2: bytes | None, expires_in: int) -> None:
        """Keep ``rs1`` (and ``rs2``) for ``zid`` for ``expires_in`` seconds (FOREVER: no
        expiry; 0: keep nothing and forget what was kept, §4.9)."""
        try:
            db = self._open()
            with db:
                if expires_in == 0:
                    db.execute("DELETE FROM peers WHERE zid = ?", (zid.hex(),))
                    return
                expires = None if expires_in >= FOREVER else self._clock() + expires_in
                db.execute(
                    "INSERT OR REPLACE INTO peers (zid, rs1, rs2, expires, updated) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (zid.hex(), rs1, rs2, expires, self._clock()),
                )
        except (sqlite3.Error, OSError) as exc:
            log.warning("ZRTP secret cache %s not written: %s", self.path, exc)

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _open(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created private before SQLite writes a secret into it.
            create_private_file(self.path)
        db = sqlite3.connect(str(self.path), timeout=1.0)
        with db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS peers (zid TEXT PRIMARY KEY, rs1 BLOB NOT NULL, "
                "rs2 BLOB, expires REAL, updated REAL NOT NULL)"
            )
        self._db = db
        return db
