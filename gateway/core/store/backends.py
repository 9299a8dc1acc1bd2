"""Opening the store that ``[store]`` names: SQLite (the default) or PostgreSQL.

Only :mod:`gateway.core.store.postgresql` imports psycopg, and only once PostgreSQL is chosen.

The gateway opens it to be called from its event loop (short waits, a cache kept coherent by a
listener thread); the CLI opens it for one command (longer waits, no thread). Configuration
mistakes are :class:`~gateway.core.config.ConfigError` naming the file, ``[store]`` and the key.
"""

from __future__ import annotations

import importlib.util
import socket
import stat
from pathlib import Path

from gateway.core.config import ConfigError, GatewayConfig, unentered_problem, unreadable_here
from gateway.core.store.errors import InvalidValue
from gateway.core.store.interface import Store

# SQLite, opened by the gateway: a write waits at most this long for another process's lock
# (then StoreBusy), and no commit checkpoints the write-ahead log; a thread does, this often
# (gateway/core/store/sqlite.py).
SQLITE_GATEWAY_BUSY_TIMEOUT = 0.05
SQLITE_CHECKPOINT_INTERVAL = 1.0

# PostgreSQL, opened by the CLI: it waits as long as the CLI waits for SQLite's lock.
CLI_STATEMENT_TIMEOUT = 5.0


def check_store(config: GatewayConfig) -> None:
    """What ``voipgw check-config`` verifies of ``[store]`` without connecting: psycopg is
    installed, the DSN parses, the password file is readable and private."""
    if config.store.backend != "postgresql":
        return
    if importlib.util.find_spec("psycopg") is None:
        raise ConfigError(
            config.source,
            "store",
            "backend",
            '"postgresql" needs psycopg, which is not installed: '
            "pip install 'voipgw[postgresql]'",
        )
    from gateway.core.store.postgresql import check_dsn

    try:
        check_dsn(config.store.dsn)
    except InvalidValue:
        # libpq's message quotes the string, password and all: name the key only.
        raise ConfigError(
            config.source, "store", "dsn", "not a libpq connection string or URI"
        ) from None
    _read_password(config)


def _read_password(config: GatewayConfig) -> str | None:
    """The first line of ``password_file``, or None without one. Like libpq's own password
    file (PostgreSQL docs §34.16), one that others may read is refused."""
    name = config.store.password_file
    if not name:
        return None
    path = Path(name)

    def fail(message: str) -> ConfigError:
        return ConfigError(config.source, "store", "password_file", f"{path}: {message}")

    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            raise fail("not a regular file")
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise fail("group or others may read it: chmod 600")
        # voipgw check-config run as another user than the service's: a warning naming the
        # user, the key and the file (config.reading_as_checker); `voipgw run` refuses it.
        if unreadable_here(path, "password_file", file=config.source, table="store"):
            return None
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        unreached = unentered_problem(path)
        if unreached is not None:
            # stat(2) failing with EACCES: a directory on the way this user may not enter.
            raise ConfigError(config.source, "store", "password_file", unreached) from None
        raise fail(f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise fail("not UTF-8 text") from None
    if not lines or not lines[0]:
        raise fail("empty: expected the password on its first line")
    return lines[0]


def node_name(config: GatewayConfig) -> str:
    """``[store] node``, else this host's name and the first SIP listener: stable across
    restarts, distinct for two nodes on one host."""
    if config.store.node:
        return config.store.node
    first = config.listen[0] if config.listen else ""
    return f"{socket.gethostname()} {first}".strip()


def open_store(config: GatewayConfig, *, gateway: bool, state_dir: str | None = None) -> Store:
    """Open the configured store. ``gateway``: for the event loop of ``voipgw run`` (short
    waits; PostgreSQL keeps a cache and a listener thread), else for one CLI command.
    ``state_dir`` replaces ``[gateway] state_dir`` (SQLite only)."""
    store = config.store
    if store.backend == "sqlite":
        from gateway.core.store.sqlite import SqliteStore

        directory = state_dir or config.gateway.state_dir
        if gateway:
            return SqliteStore.open(
                directory,
                busy_timeout=SQLITE_GATEWAY_BUSY_TIMEOUT,
                checkpoint_interval=SQLITE_CHECKPOINT_INTERVAL,
            )
        return SqliteStore.open(directory)
    check_store(config)
    from gateway.core.store.postgresql import PostgresStore

    try:
        return PostgresStore.open(
            store.dsn,
            password=_read_password(config),
            connect_timeout=store.connect_timeout,
            statement_timeout=(
                store.statement_timeout
                if gateway
                else max(store.statement_timeout, CLI_STATEMENT_TIMEOUT)
            ),
            listen=gateway,
            node=node_name(config),
            call_id_index=store.call_id_index,
        )
    except InvalidValue as exc:
        raise ConfigError(config.source, "store", "dsn", str(exc)) from None
