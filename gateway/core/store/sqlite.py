"""SQLite store: one file ``voipgw.sqlite3`` in the state directory.

It holds accounts, registrations, call records, the numbers PSAP callbacks may call
(migration 3), so that a callback after a restart is still one, and presence publications
(migration 4), so that a restart keeps them. Migration 5 indexes the time call records are
kept by (``[store] call_record_days``, :meth:`SqliteStore.expire_call_records`).

Deleted rows free their pages inside the file, and later writes reuse them: a store whose
records are deleted as fast as they are written stops growing, without VACUUM. ``auto_vacuum``
is left at SQLite's default (NONE): the file does not shrink by itself; ``VACUUM`` (offline,
it rewrites the file) gives freed pages back to the file system.

WAL journal (readers do not block the writer), foreign keys on, ``synchronous=NORMAL`` (durable
across process crashes; a power cut may lose the last transactions, never corrupt). The schema is
built by ordered migrations recorded in ``schema_version``; opening a store applies the missing
ones, each in its own transaction, and refuses a file written by a newer voipgw.

One connection per store, guarded by a lock, so the store may be called from any thread but runs
one statement sequence at a time. The gateway calls it from its event loop, the thread that also
relays media (without ``[media] workers``), so the gateway opens it with two settings the CLI does
not need (``SqliteStore.open``):

- ``busy_timeout``: how long a write waits for another process's write lock (``voipgw accounts``
  holds it for milliseconds; an operator's ``sqlite3`` shell inside ``BEGIN`` for as long as it
  likes) before it fails with :class:`~gateway.core.store.errors.StoreBusy`. The CLI waits 5 s;
  the gateway 50 ms, so a lock held for long does not stall every call (call records are kept
  and saved later, a REGISTER is answered 503 with Retry-After).
- ``checkpoint_interval``: SQLite copies the write-ahead log into the database file (a
  checkpoint, https://sqlite.org/wal.html#ckpt) at the commit that finds the log past 1000 pages,
  and that commit pays for the copy and its ``fsync``: 5-7 ms on a cloud VM's disk, more on a busy
  one, every second or two at a few hundred calls per second. With an interval the store's own
  connection never checkpoints; a thread with a second connection does, every ``interval``
  seconds (``PRAGMA wal_checkpoint(PASSIVE)``: it never waits for, nor blocks, a reader or writer;
  SQLite releases the interpreter lock while it works).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.core.auth.algorithms import DigestAlgorithm
from gateway.core.store import accounts as rules
from gateway.core.store.errors import (
    AccountExists,
    AccountNotFound,
    CallRecordExists,
    CallRecordNotFound,
    InvalidValue,
    SchemaError,
    StoreBusy,
    migration_failed,
    newer_schema,
)
from gateway.core.store.interface import (
    DEFAULT_MEDIA_POLICY,
    MAX_BULK_ACCOUNTS,
    UNSET,
    Account,
    Binding,
    BindingFlow,
    CallRecord,
    CertificateMatch,
    Credential,
    SharedCallLimits,
    Store,
    StoredPublication,
    call_id_range,
)

log = logging.getLogger(__name__)

DB_FILENAME = "voipgw.sqlite3"

DEFAULT_BUSY_TIMEOUT = 5.0
"""Seconds a write waits for another process's write lock, unless ``open`` is told otherwise."""

Migration = tuple[int, tuple[str, ...]]

MIGRATIONS: tuple[Migration, ...] = (
    (
        1,
        (
            """CREATE TABLE accounts (
                id INTEGER PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                display_name TEXT,
                enabled INTEGER NOT NULL DEFAULT 1,
                media_policy TEXT NOT NULL DEFAULT 'best-effort',
                require_tls INTEGER NOT NULL DEFAULT 0,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )""",
            # HA1 per (realm, algorithm), RFC 8760 §3. No password column, ever.
            """CREATE TABLE account_credentials (
                account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                realm TEXT NOT NULL,
                algorithm TEXT NOT NULL,
                ha1 TEXT NOT NULL,
                PRIMARY KEY (account_id, realm, algorithm)
            )""",
            """CREATE TABLE account_certificates (
                account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                kind TEXT NOT NULL CHECK (kind IN ('fingerprint', 'subject')),
                value TEXT NOT NULL,
                PRIMARY KEY (account_id, kind, value)
            )""",
            """CREATE TABLE registrations (
                id INTEGER PRIMARY KEY,
                account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                aor TEXT NOT NULL,
                binding_key TEXT NOT NULL,
                contact TEXT NOT NULL,
                expires_at REAL NOT NULL,
                q REAL,
                call_id TEXT NOT NULL,
                cseq INTEGER NOT NULL,
                instance TEXT,
                reg_id INTEGER,
                transport TEXT NOT NULL,
                local_addr TEXT NOT NULL,
                remote_addr TEXT NOT NULL,
                user_agent TEXT,
                path TEXT NOT NULL DEFAULT '[]',
                updated_at REAL NOT NULL,
                UNIQUE (aor, binding_key)
            )""",
            "CREATE INDEX registrations_expires_at ON registrations (expires_at)",
            "CREATE INDEX registrations_account ON registrations (account_id)",
            """CREATE TABLE call_records (
                id INTEGER PRIMARY KEY,
                call_id TEXT NOT NULL UNIQUE,
                from_uri TEXT NOT NULL,
                to_uri TEXT NOT NULL,
                started_at REAL NOT NULL,
                answered_at REAL,
                ended_at REAL,
                end_reason TEXT,
                security TEXT NOT NULL DEFAULT '{}'
            )""",
            "CREATE INDEX call_records_started_at ON call_records (started_at)",
        ),
    ),
    (2, ("ALTER TABLE accounts ADD COLUMN max_calls INTEGER NOT NULL DEFAULT 0",)),
    (
        3,
        (
            # The numbers our emergency calls presented, each until its PSAP callback window
            # ends (wall-clock seconds): a callback after a restart is still recognised
            # (gateway/core/calls/psap_callback.py). Bounded by the writer.
            """CREATE TABLE psap_callbacks (
                number TEXT PRIMARY KEY,
                until REAL NOT NULL
            )""",
            "CREATE INDEX psap_callbacks_until ON psap_callbacks (until)",
        ),
    ),
    (
        4,
        (
            # Presence publications (RFC 3903), each under its current entity tag, until it
            # expires (wall-clock seconds): a node restarted finds them (gateway/core/calls/
            # presence.py). Bounded by the writer: a few per account.
            """CREATE TABLE presence_publications (
                etag TEXT PRIMARY KEY,
                account TEXT NOT NULL,
                expires_at REAL NOT NULL,
                published_at REAL NOT NULL,
                is_open INTEGER NOT NULL,
                definite INTEGER NOT NULL,
                body BLOB NOT NULL
            )""",
            "CREATE INDEX presence_publications_account ON presence_publications (account)",
            "CREATE INDEX presence_publications_expires_at ON presence_publications (expires_at)",
        ),
    ),
    (
        5,
        (
            # What call record retention deletes by (expire_call_records): the end, or the
            # start of a record without one. The query names the same expression.
            "CREATE INDEX call_records_kept_by ON call_records (COALESCE(ended_at, started_at))",
        ),
    ),
)


def create_private_file(path: Path) -> None:
    """Create the SQLite database file ``path``, empty and mode 0600, when it does not exist,
    before SQLite does (SQLite would make it 0644, less the umask: readable by every local
    user, and it holds secrets: HA1s, ZRTP retained secrets, interception targets).

    A file that exists is not opened (O_EXCL): closing any descriptor of a file drops every
    POSIX lock this process holds on it, those of a SQLite connection to it too, and another
    connection of this process (two gateways in one process, a second store object) may hold
    them; another process could then write the database under it
    (https://www.sqlite.org/howtocorrupt.html §2.2)."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except FileExistsError:
        if os.path.exists(path):
            return
        # A symbolic link to a file not made yet (O_EXCL does not follow it): made through
        # it, as SQLite would, 0600. No descriptor of a file that did not exist is held.
        descriptor = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(descriptor)


def _check_migrations(migrations: Sequence[Migration]) -> None:
    versions = [version for version, _ in migrations]
    if not versions or versions != list(range(1, len(versions) + 1)):
        raise ValueError("migrations must be numbered 1, 2, 3 ... in order")


ACCOUNT_CACHE_ENTRIES = 4096
"""Accounts (and unknown names) :meth:`SqliteStore.get_account` keeps in memory, and as many
accounts' bindings for :meth:`SqliteStore.bindings_for_account`."""

CACHE_RECHECK_SECONDS = 0.01
"""How long the account cache is used before SQLite is asked again whether another connection
has written (``PRAGMA data_version`` takes the file's read lock: about a fiftieth of a call's
CPU when asked at each of the three reads a call makes within the same millisecond or two).
A change by ``voipgw accounts`` is seen at most this much later (its process has not even
exited by then); this connection's own writes at once."""


class SqliteStore:
    """The default :class:`~gateway.core.store.interface.Store`. Use :meth:`open`."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: Path,
        clock: Callable[[], float],
        monotonic: Callable[[], float] = time.monotonic,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> None:
        self._db = connection
        self.path = path
        self._busy_timeout = busy_timeout
        self._checkpointer: _Checkpointer | None = None
        self._clock = clock
        self._monotonic = monotonic
        self._lock = threading.Lock()
        # Accounts and their bindings as last read, valid while PRAGMA data_version (which
        # changes when another connection commits, e.g. ``voipgw accounts`` in another
        # process) stays the same and this connection changes no account or registration.
        # Unknown names are kept too (None; no bindings). Every call reads both.
        self._accounts: dict[str, Account | None] = {}
        self._bindings: dict[str, tuple[Binding, ...]] = {}
        self._cache_version: int | None = None
        self._cache_checked_until = -math.inf  # monotonic time; see CACHE_RECHECK_SECONDS

    @classmethod
    def open(
        cls,
        state_dir: str | os.PathLike[str],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        migrations: Sequence[Migration] = MIGRATIONS,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
        checkpoint_interval: float | None = None,
    ) -> SqliteStore:
        """Open (creating if needed) ``<state_dir>/voipgw.sqlite3`` and bring its schema up to
        date. The directory is created 0700 and the file 0600: it holds HA1s. ``clock`` gives
        the created/updated timestamps, ``monotonic`` times the account cache.

        ``busy_timeout``: seconds a write waits for another process's write lock before it
        raises :class:`StoreBusy`. ``checkpoint_interval``: None, SQLite checkpoints at a commit
        as usual; seconds, a background thread does, that often, and commits never do (see the
        module's docstring)."""
        if busy_timeout < 0:
            raise ValueError("busy_timeout must not be negative")
        if checkpoint_interval is not None and not checkpoint_interval > 0:
            raise ValueError("checkpoint_interval must be positive")
        _check_migrations(migrations)
        directory = Path(state_dir)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / DB_FILENAME
        # Create the file ourselves so it never exists with looser permissions; SQLite gives
        # the -wal and -shm files the same mode.
        create_private_file(path)
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            # Migrations may wait for a running CLI as long as the CLI would: at start-up the
            # gateway relays nothing yet.
            connection.execute(f"PRAGMA busy_timeout = {round(DEFAULT_BUSY_TIMEOUT * 1000)}")
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise SchemaError(f"{path}: cannot switch to WAL journal mode")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA foreign_keys = ON")
            _migrate(connection, path, migrations, clock)
            connection.execute(f"PRAGMA busy_timeout = {round(busy_timeout * 1000)}")
            if checkpoint_interval is not None:
                connection.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.DatabaseError as exc:
            connection.close()
            raise SchemaError(f"{path}: not a usable voipgw store ({exc})") from exc
        except BaseException:
            connection.close()
            raise
        store = cls(connection, path, clock, monotonic, busy_timeout)
        if checkpoint_interval is not None:
            try:
                store._checkpointer = _Checkpointer(path, checkpoint_interval)
            except BaseException:
                connection.close()
                raise
        return store

    def __repr__(self) -> str:
        return f"<SqliteStore {str(self.path)!r}>"

    def shared_call_limits(self) -> SharedCallLimits | None:
        """None: one node, whose calls are counted in memory (CallLimits)."""
        return None

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._lock:
            self._db.close()

    def schema_version(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    @contextmanager
    def _transaction(self, *, changes_accounts: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction; ``changes_accounts=False`` for writes that touch neither
        accounts nor registrations (call records), which keep the cache."""
        with self._lock:
            if changes_accounts:
                self._forget_cached()
            try:
                # In WAL mode only BEGIN IMMEDIATE waits for the write lock: once it has it,
                # nothing later in the transaction can find the store busy.
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                raise StoreBusy(
                    f"{self.path}: another process held the write lock for longer than "
                    f"{self._busy_timeout:g} s; nothing was written"
                ) from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._db

    def _forget_cached(self) -> None:
        self._accounts.clear()
        self._bindings.clear()

    def _check_cache(self, db: sqlite3.Connection) -> None:
        """Drop the cache when another connection has committed since it was filled (asked at
        most every :data:`CACHE_RECHECK_SECONDS`)."""
        now = self._monotonic()
        if now < self._cache_checked_until:
            return
        self._cache_checked_until = now + CACHE_RECHECK_SECONDS
        version = db.execute("PRAGMA data_version").fetchone()[0]
        if version != self._cache_version:
            self._forget_cached()
            self._cache_version = version

    # -- accounts ---------------------------------------------------------------------------

    def accounts_add(
        self,
        name: str,
        password: str,
        realm: str,
        *,
        display_name: str | None = None,
        enabled: bool = True,
        media_policy: str = DEFAULT_MEDIA_POLICY,
        require_tls: bool = False,
        max_calls: int = 0,
    ) -> Account:
        """Create an account with HA1s for ``realm`` and every algorithm."""
        rules.check_name(name)
        rules.check_password(password)
        rules.check_realm(realm)
        fields = rules.check_fields(
            {
                "display_name": display_name,
                "enabled": enabled,
                "media_policy": media_policy,
                "require_tls": require_tls,
                "max_calls": max_calls,
            }
        )
        now = self._clock()
        credentials = rules.derive_credentials(name, password, [realm])
        with self._transaction() as db:
            try:
                cursor = db.execute(
                    "INSERT INTO accounts (name, display_name, enabled, media_policy,"
                    " require_tls, max_calls, created_at, updated_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        fields["display_name"],
                        int(fields["enabled"]),
                        fields["media_policy"],
                        int(fields["require_tls"]),
                        fields["max_calls"],
                        now,
                        now,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                raise AccountExists(f"account {name!r} already exists") from exc
            account_id = cursor.lastrowid
            _insert_credentials(db, account_id, credentials)
            account = _load_account(db, name)
        assert account is not None
        return account

    def accounts_list(self) -> tuple[Account, ...]:
        with self._read() as db:
            names = [row[0] for row in db.execute("SELECT name FROM accounts ORDER BY name")]
            loaded = [_load_account(db, name) for name in names]
        return tuple(account for account in loaded if account is not None)

    def get_account(self, name: str) -> Account | None:
        """The account, from memory while nobody wrote to the store since it was read: every
        call looks up one or two accounts, three queries each."""
        with self._lock:  # what _read() does, without a generator: asked several times a call
            db = self._db
            self._check_cache(db)
            try:
                return self._accounts[name]
            except KeyError:
                pass
            account = _load_account(db, name)
            if len(self._accounts) >= ACCOUNT_CACHE_ENTRIES:  # names from the network
                self._accounts.clear()
            self._accounts[name] = account
            return account

    def accounts_set(self, name: str, **fields: Any) -> Account:
        """Change account fields; see :meth:`Store.accounts_set`."""
        checked = rules.check_fields(fields)
        now = self._clock()
        with self._transaction() as db:
            account_id = _account_id(db, name)
            columns = {
                key: (int(value) if isinstance(value, bool) else value)
                for key, value in checked.items()
                if key in ("display_name", "enabled", "media_policy", "require_tls", "max_calls")
            }
            columns["updated_at"] = now
            assignments = ", ".join(f"{column} = ?" for column in columns)
            db.execute(
                f"UPDATE accounts SET {assignments} WHERE id = ?",
                (*columns.values(), account_id),
            )
            if "password" in checked:
                if "realm" in checked:
                    realms = [checked["realm"]]
                else:
                    realms = [
                        row[0]
                        for row in db.execute(
                            "SELECT DISTINCT realm FROM account_credentials"
                            " WHERE account_id = ? ORDER BY realm",
                            (account_id,),
                        )
                    ]
                db.execute("DELETE FROM account_credentials WHERE account_id = ?", (account_id,))
                credentials = rules.derive_credentials(name, checked["password"], realms)
                _insert_credentials(db, account_id, credentials)
            if "certificate_matches" in checked:
                db.execute("DELETE FROM account_certificates WHERE account_id = ?", (account_id,))
                db.executemany(
                    "INSERT INTO account_certificates (account_id, kind, value) VALUES (?, ?, ?)",
                    [(account_id, m.kind, m.value) for m in checked["certificate_matches"]],
                )
            account = _load_account(db, name)
        assert account is not None
        return account

    def accounts_remove(self, name: str) -> None:
        with self._transaction() as db:
            account_id = _account_id(db, name)
            db.execute("DELETE FROM accounts WHERE id = ?", (account_id,))

    # -- registrations ----------------------------------------------------------------------

    def registrations_for(self, aor: str, *, now: float | None = None) -> tuple[Binding, ...]:
        with self._read() as db:
            return _select_bindings(db, "r.aor = ?", (aor,), now)

    def bindings_for_account(
        self, account: str, *, now: float | None = None
    ) -> tuple[Binding, ...]:
        """The account's bindings (unexpired at ``now`` if given), best first; from memory
        under the same rule as :meth:`get_account`."""
        with self._lock:  # as in get_account
            db = self._db
            self._check_cache(db)
            bindings = self._bindings.get(account)
            if bindings is None:
                bindings = _select_bindings(db, "a.name = ?", (account,), None)
                if len(self._bindings) >= ACCOUNT_CACHE_ENTRIES:
                    self._bindings.clear()
                self._bindings[account] = bindings
        if now is None:
            return bindings
        # Filtering keeps the order: expiry is not the first sort key, but dropping rows
        # from an ordered list leaves the rest in order.
        return tuple(binding for binding in bindings if binding.expires_at > now)

    def binding_expiries(self, accounts: Sequence[str], *, now: float) -> dict[str, list[float]]:
        """See :meth:`Store.binding_expiries`: one query, the cache neither read nor filled."""
        names = _bulk_names(accounts)
        found: dict[str, list[float]] = {name: [] for name in names}
        if not names:
            return found
        marks = ", ".join("?" * len(names))
        with self._read() as db:
            rows = db.execute(
                "SELECT a.name, r.expires_at FROM accounts a"
                " JOIN registrations r ON r.account_id = a.id"
                f" WHERE a.name IN ({marks}) AND r.expires_at > ?",
                (*names, now),
            ).fetchall()
        for name, expires_at in rows:
            found[name].append(expires_at)
        return found

    def upsert_binding(self, binding: Binding) -> None:
        self.apply_binding_changes(binding.aor, [binding], ())

    def remove_binding(self, aor: str, key: str) -> bool:
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM registrations WHERE aor = ? AND binding_key = ?", (aor, key)
            )
            return cursor.rowcount > 0

    def apply_binding_changes(
        self, aor: str, upserts: Sequence[Binding], removals: Iterable[str]
    ) -> None:
        for binding in upserts:
            if binding.aor != aor:
                raise InvalidValue("every upserted binding must belong to the given AOR")
        keys = list(removals)
        with self._transaction() as db:
            db.executemany(
                "DELETE FROM registrations WHERE aor = ? AND binding_key = ?",
                [(aor, key) for key in keys],
            )
            for binding in upserts:
                _upsert(db, binding, _account_id(db, binding.account))

    def expire_bindings(self, now: float, *, most: int | None = None) -> tuple[Binding, ...]:
        if most is None:
            with self._transaction() as db:
                expired = _select_bindings(db, "r.expires_at <= ?", (now,), None)
                db.execute("DELETE FROM registrations WHERE expires_at <= ?", (now,))
            return expired
        if most < 1:
            raise ValueError("most must be at least 1")
        # The earliest first, ties by id: the same rows for the read and the delete, which
        # one write transaction keeps apart from every other writer.
        earliest = (
            "SELECT id FROM registrations WHERE expires_at <= ? ORDER BY expires_at, id LIMIT ?"
        )
        with self._transaction() as db:
            expired = _select_bindings(db, f"r.id IN ({earliest})", (now, most), None)
            db.execute(f"DELETE FROM registrations WHERE id IN ({earliest})", (now, most))
        return expired

    def count_bindings(self, now: float) -> int:
        with self._read() as db:
            # The index on expires_at answers it without reading the rows.
            row = db.execute(
                "SELECT COUNT(*) FROM registrations WHERE expires_at > ?", (now,)
            ).fetchone()
        return int(row[0])

    # -- call records -----------------------------------------------------------------------

    def call_record_insert(self, record: CallRecord) -> None:
        _check_json(record.security_json)
        with self._transaction(changes_accounts=False) as db:
            try:
                db.execute(_INSERT_CALL_RECORD, _call_record_values(record))
            except sqlite3.IntegrityError as exc:
                raise CallRecordExists(f"call {record.call_id!r} already has a record") from exc

    def call_record_update(
        self,
        call_id: str,
        *,
        answered_at: float | None = UNSET,
        ended_at: float | None = UNSET,
        end_reason: str | None = UNSET,
        security: Mapping[str, Any] = UNSET,
    ) -> CallRecord:
        columns: dict[str, Any] = {}
        if answered_at is not UNSET:
            columns["answered_at"] = answered_at
        if ended_at is not UNSET:
            columns["ended_at"] = ended_at
        if end_reason is not UNSET:
            columns["end_reason"] = end_reason
        if security is not UNSET:
            try:
                columns["security"] = json.dumps(security, sort_keys=True)
            except (TypeError, ValueError) as exc:
                raise InvalidValue("security record is not JSON-serializable") from exc
        with self._transaction(changes_accounts=False) as db:
            if columns:
                assignments = ", ".join(f"{column} = ?" for column in columns)
                db.execute(
                    f"UPDATE call_records SET {assignments} WHERE call_id = ?",
                    (*columns.values(), call_id),
                )
            record = _load_call_record(db, call_id)
        if record is None:
            raise CallRecordNotFound(f"no record for call {call_id!r}")
        return record

    def call_records_save(self, records: Sequence[CallRecord]) -> None:
        if not records:
            return
        with self._transaction(changes_accounts=False) as db:
            db.executemany(
                _INSERT_CALL_RECORD
                + " ON CONFLICT (call_id) DO UPDATE SET from_uri = excluded.from_uri,"
                " to_uri = excluded.to_uri, started_at = excluded.started_at,"
                " answered_at = excluded.answered_at, ended_at = excluded.ended_at,"
                " end_reason = excluded.end_reason, security = excluded.security",
                [_call_record_values(record) for record in records],
            )
            # SQLite checks the batch's JSON in one statement (json.loads of every record cost
            # more than the save); a bad one rolls the whole batch back.
            invalid = db.execute(
                "SELECT 1 FROM call_records WHERE call_id IN (SELECT value FROM json_each(?))"
                " AND NOT json_valid(security) LIMIT 1",
                (json.dumps([record.call_id for record in records]),),
            ).fetchone()
            if invalid is not None:
                raise InvalidValue("security_json is not valid JSON")

    def call_record_get(self, call_id: str) -> CallRecord | None:
        with self._read() as db:
            return _load_call_record(db, call_id)

    def call_records_recent(self, limit: int = 100) -> tuple[CallRecord, ...]:
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_CALL_COLUMNS} FROM call_records ORDER BY started_at DESC, id DESC"
                " LIMIT ?",
                (max(0, limit),),
            ).fetchall()
        return tuple(_call_record(row) for row in rows)

    def call_records_of_call_id(self, call_id: str, limit: int = 100) -> tuple[CallRecord, ...]:
        first, beyond = call_id_range(call_id)
        with self._read() as db:
            # Both arms read the UNIQUE index on call_id (BINARY: code point order); the tag,
            # after the Call-ID's ";", holds no ";".
            rows = db.execute(
                f"SELECT {_CALL_COLUMNS} FROM call_records WHERE call_id = ?"
                " OR (call_id >= ? AND call_id < ? AND instr(substr(call_id, ?), ';') = 0)"
                " ORDER BY started_at DESC, id DESC LIMIT ?",
                (call_id, first, beyond, len(first) + 1, max(0, limit)),
            ).fetchall()
        return tuple(_call_record(row) for row in rows)

    def call_records_end_unfinished(self, ended_at: float, reason: str) -> int:
        with self._transaction(changes_accounts=False) as db:
            cursor = db.execute(
                "UPDATE call_records SET ended_at = ?, end_reason = ? WHERE ended_at IS NULL",
                (ended_at, reason),
            )
            return cursor.rowcount

    def expire_call_records(self, before: float, *, most: int) -> int:
        if most < 1:
            raise ValueError("most must be at least 1")
        with self._transaction(changes_accounts=False) as db:
            cursor = db.execute(
                "DELETE FROM call_records WHERE id IN (SELECT id FROM call_records"
                " WHERE COALESCE(ended_at, started_at) < ?"
                " ORDER BY COALESCE(ended_at, started_at) LIMIT ?)",
                (before, most),
            )
            return cursor.rowcount

    def oldest_call_record(self) -> float | None:
        with self._read() as db:
            # The first entry of migration 5's index: no record read.
            row = db.execute(
                "SELECT COALESCE(ended_at, started_at) FROM call_records"
                " ORDER BY COALESCE(ended_at, started_at) LIMIT 1"
            ).fetchone()
        return None if row is None else float(row[0])

    # -- PSAP callbacks ---------------------------------------------------------------------

    def psap_number_presented(self, number: str, window: float, most: int) -> None:
        now = self._clock()
        with self._transaction(changes_accounts=False) as db:
            db.execute(
                "INSERT INTO psap_callbacks (number, until) VALUES (?, ?)"
                " ON CONFLICT (number) DO UPDATE SET until = excluded.until",
                (number, now + window),
            )
            db.execute("DELETE FROM psap_callbacks WHERE until <= ?", (now,))
            # Past ``most``, the numbers whose window ends first go (the index on until).
            db.execute(
                "DELETE FROM psap_callbacks WHERE number IN (SELECT number FROM psap_callbacks"
                " ORDER BY until DESC LIMIT -1 OFFSET ?)",
                (max(0, most),),
            )

    def psap_number_remaining(self, number: str) -> float | None:
        with self._read() as db:
            row = db.execute(
                "SELECT until FROM psap_callbacks WHERE number = ?", (number,)
            ).fetchone()
        if row is None:
            return None
        left = float(row[0]) - self._clock()
        return left if left > 0 else None

    # -- presence publications (migration 4) ----------------------------------------------

    def publication_save(
        self,
        account: str,
        publication: StoredPublication | None,
        *,
        replaces: str | None,
        dropped: Sequence[str] = (),
        now: float,
        most: int,
    ) -> bool:
        if publication is not None and publication.account != account:
            raise InvalidValue("a publication saved under another account")
        with self._transaction(changes_accounts=False) as db:
            if replaces is not None:
                cursor = db.execute(
                    "DELETE FROM presence_publications WHERE etag = ? AND account = ?",
                    (replaces, account),
                )
                if cursor.rowcount == 0:
                    return False  # superseded elsewhere: nothing written
            db.executemany(
                "DELETE FROM presence_publications WHERE etag = ?", [(etag,) for etag in dropped]
            )
            if publication is not None:
                db.execute(
                    "INSERT INTO presence_publications (etag, account, expires_at, published_at,"
                    " is_open, definite, body) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (etag) DO UPDATE SET account = excluded.account,"
                    " expires_at = excluded.expires_at, published_at = excluded.published_at,"
                    " is_open = excluded.is_open, definite = excluded.definite,"
                    " body = excluded.body",
                    _publication_values(publication),
                )
            # The account's expired ones, then past ``most`` those expiring first.
            db.execute(
                "DELETE FROM presence_publications WHERE account = ? AND expires_at <= ?",
                (account, now),
            )
            db.execute(
                "DELETE FROM presence_publications WHERE etag IN (SELECT etag"
                " FROM presence_publications WHERE account = ?"
                " ORDER BY expires_at DESC LIMIT -1 OFFSET ?)",
                (account, max(0, most)),
            )
        return True

    def publications_of(
        self, accounts: Sequence[str], *, now: float
    ) -> dict[str, list[StoredPublication]]:
        names = _bulk_names(accounts)
        found: dict[str, list[StoredPublication]] = {name: [] for name in names}
        if not names:
            return found
        marks = ", ".join("?" * len(names))
        with self._read() as db:
            rows = db.execute(
                f"SELECT {_PUBLICATION_COLUMNS} FROM presence_publications"
                f" WHERE account IN ({marks}) AND expires_at > ?",
                (*names, now),
            ).fetchall()
        for row in rows:
            publication = _publication(row)
            found[publication.account].append(publication)
        return found

    def expire_publications(self, now: float, *, most: int) -> int:
        if most < 1:
            raise ValueError("most must be at least 1")
        with self._transaction(changes_accounts=False) as db:
            cursor = db.execute(
                "DELETE FROM presence_publications WHERE etag IN (SELECT etag"
                " FROM presence_publications WHERE expires_at <= ? ORDER BY expires_at LIMIT ?)",
                (now, most),
            )
            return cursor.rowcount


class _Checkpointer:
    """Checkpoints the store's write-ahead log every ``interval`` seconds from a thread of its own,
    with a connection of its own, until stopped. PASSIVE copies what no reader still needs and
    returns: it takes no lock a commit of the store's connection waits for."""

    def __init__(self, path: Path, interval: float) -> None:
        self._interval = interval
        self._stopping = threading.Event()
        self._connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._thread = threading.Thread(
            target=self._run, name=f"sqlite checkpoints of {path.name}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        failing = False
        try:
            while not self._stopping.wait(self._interval):
                try:
                    self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error as exc:
                    # The log keeps growing until a checkpoint succeeds; say so once.
                    if not failing:
                        log.warning("checkpointing the store's write-ahead log failed: %s", exc)
                    failing = True
                else:
                    failing = False
        finally:
            self._connection.close()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()


# -- helpers ---------------------------------------------------------------------------------


def _migrate(
    db: sqlite3.Connection,
    path: Path,
    migrations: Sequence[Migration],
    clock: Callable[[], float],
) -> None:
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
    )
    latest = len(migrations)
    for version, statements in migrations:
        # Re-read the version inside the write transaction: another process may be migrating
        # the same file right now.
        db.execute("BEGIN IMMEDIATE")
        try:
            current = int(db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
            if current > latest:
                raise newer_schema(str(path), current, latest)
            if version > current:
                for statement in statements:
                    try:
                        db.execute(statement)
                    except sqlite3.DatabaseError as exc:
                        raise SchemaError(
                            migration_failed(
                                str(path),
                                current,
                                latest,
                                version,
                                str(exc),
                                "fix the cause (a full disk, a file this user may not write)",
                            )
                        ) from exc
                db.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, clock()),
                )
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


_PUBLICATION_COLUMNS = "account, etag, expires_at, published_at, is_open, definite, body"


def _publication_values(publication: StoredPublication) -> tuple[Any, ...]:
    return (
        publication.etag,
        publication.account,
        publication.expires_at,
        publication.published_at,
        int(publication.open),
        int(publication.definite),
        publication.body,
    )


def _publication(row: tuple[Any, ...]) -> StoredPublication:
    account, etag, expires_at, published_at, is_open, definite, body = row
    return StoredPublication(
        account,
        etag,
        float(expires_at),
        float(published_at),
        bool(is_open),
        bool(definite),
        bytes(body),
    )


def _account_id(db: sqlite3.Connection, name: str) -> int:
    row = db.execute("SELECT id FROM accounts WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise AccountNotFound(f"no account {name!r}")
    return int(row[0])


def _insert_credentials(
    db: sqlite3.Connection, account_id: int | None, credentials: Iterable[Credential]
) -> None:
    db.executemany(
        "INSERT INTO account_credentials (account_id, realm, algorithm, ha1) VALUES (?, ?, ?, ?)",
        [(account_id, c.realm, c.algorithm.value, c.ha1) for c in credentials],
    )


def _load_account(db: sqlite3.Connection, name: str) -> Account | None:
    row = db.execute(
        "SELECT id, name, display_name, enabled, media_policy, require_tls, created_at,"
        " updated_at, max_calls FROM accounts WHERE name = ?",
        (name,),
    ).fetchone()
    if row is None:
        return None
    account_id = row[0]
    credentials = []
    for realm, token, ha1 in db.execute(
        "SELECT realm, algorithm, ha1 FROM account_credentials WHERE account_id = ?"
        " ORDER BY realm, algorithm",
        (account_id,),
    ):
        algorithm = DigestAlgorithm.from_token(token)
        if algorithm is not None:  # an algorithm a newer voipgw added: not usable here
            credentials.append(Credential(realm, algorithm, ha1))
    matches = tuple(
        CertificateMatch(kind, value)
        for kind, value in db.execute(
            "SELECT kind, value FROM account_certificates WHERE account_id = ?"
            " ORDER BY kind, value",
            (account_id,),
        )
    )
    return Account(
        name=row[1],
        display_name=row[2],
        enabled=bool(row[3]),
        media_policy=row[4],
        require_tls=bool(row[5]),
        max_calls=row[8],
        credentials=tuple(credentials),
        certificate_matches=matches,
        created_at=row[6],
        updated_at=row[7],
    )


_BINDING_COLUMNS = (
    "r.aor, r.binding_key, a.name, r.contact, r.expires_at, r.call_id, r.cseq, r.transport,"
    " r.local_addr, r.remote_addr, r.q, r.instance, r.reg_id, r.user_agent, r.path, r.updated_at"
)


def _bulk_names(accounts: Sequence[str]) -> list[str]:
    """The distinct names of a :meth:`SqliteStore.binding_expiries` call, bounded."""
    names = list(dict.fromkeys(accounts))
    if len(names) > MAX_BULK_ACCOUNTS:
        raise ValueError(f"at most {MAX_BULK_ACCOUNTS} accounts a call, not {len(names)}")
    return names


def _select_bindings(
    db: sqlite3.Connection, where: str, args: tuple[Any, ...], now: float | None
) -> tuple[Binding, ...]:
    query = (
        f"SELECT {_BINDING_COLUMNS} FROM registrations r JOIN accounts a ON a.id = r.account_id"
        f" WHERE {where}"
    )
    if now is not None:
        query += " AND r.expires_at > ?"
        args = (*args, now)
    # RFC 3261 §10.2.1.2 / §16.6: contacts are tried in decreasing q (no q counts as 1.0).
    query += " ORDER BY COALESCE(r.q, 1.0) DESC, r.expires_at DESC, r.id"
    return tuple(_binding(row) for row in db.execute(query, args))


def _binding(row: sqlite3.Row | tuple[Any, ...]) -> Binding:
    return Binding(
        aor=row[0],
        key=row[1],
        account=row[2],
        contact=row[3],
        expires_at=row[4],
        call_id=row[5],
        cseq=row[6],
        flow=BindingFlow(row[7], row[8], row[9]),
        q=row[10],
        instance=row[11],
        reg_id=row[12],
        user_agent=row[13],
        path=tuple(json.loads(row[14])),
        updated_at=row[15],
    )


def _upsert(db: sqlite3.Connection, binding: Binding, account_id: int) -> None:
    db.execute(
        "INSERT INTO registrations (account_id, aor, binding_key, contact, expires_at, q,"
        " call_id, cseq, instance, reg_id, transport, local_addr, remote_addr, user_agent, path,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (aor, binding_key) DO UPDATE SET account_id = excluded.account_id,"
        " contact = excluded.contact, expires_at = excluded.expires_at, q = excluded.q,"
        " call_id = excluded.call_id, cseq = excluded.cseq, instance = excluded.instance,"
        " reg_id = excluded.reg_id, transport = excluded.transport,"
        " local_addr = excluded.local_addr, remote_addr = excluded.remote_addr,"
        " user_agent = excluded.user_agent, path = excluded.path,"
        " updated_at = excluded.updated_at",
        (
            account_id,
            binding.aor,
            binding.key,
            binding.contact,
            binding.expires_at,
            binding.q,
            binding.call_id,
            binding.cseq,
            binding.instance,
            binding.reg_id,
            binding.flow.transport,
            binding.flow.local,
            binding.flow.remote,
            binding.user_agent,
            json.dumps(list(binding.path)),
            binding.updated_at,
        ),
    )


_CALL_COLUMNS = "call_id, from_uri, to_uri, started_at, answered_at, ended_at, end_reason, security"


_INSERT_CALL_RECORD = (
    "INSERT INTO call_records (call_id, from_uri, to_uri, started_at, answered_at, ended_at,"
    " end_reason, security) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _call_record_values(record: CallRecord) -> tuple[Any, ...]:
    """The values of :data:`_INSERT_CALL_RECORD` for ``record``."""
    return (
        record.call_id,
        record.from_uri,
        record.to_uri,
        record.started_at,
        record.answered_at,
        record.ended_at,
        record.end_reason,
        record.security_json,
    )


def _load_call_record(db: sqlite3.Connection, call_id: str) -> CallRecord | None:
    row = db.execute(
        f"SELECT {_CALL_COLUMNS} FROM call_records WHERE call_id = ?", (call_id,)
    ).fetchone()
    return None if row is None else _call_record(row)


def _call_record(row: tuple[Any, ...]) -> CallRecord:
    return CallRecord(
        call_id=row[0],
        from_uri=row[1],
        to_uri=row[2],
        started_at=row[3],
        answered_at=row[4],
        ended_at=row[5],
        end_reason=row[6],
        security_json=row[7],
    )


def _check_json(text: str) -> None:
    try:
        json.loads(text)
    except ValueError as exc:
        raise InvalidValue("security_json is not valid JSON") from exc


if TYPE_CHECKING:  # mypy checks that SqliteStore implements the Store protocol
    _conforms: type[Store] = SqliteStore
