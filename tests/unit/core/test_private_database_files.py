"""The SQLite files the gateway and its plugins keep (the store, ZRTP's retained secrets,
MIKEY's replay journal, intercept's tasks) are created 0600 before SQLite opens them, and one
that exists is never opened and closed by that step: closing any descriptor of a file drops
every POSIX lock the process holds on it, a connection's of this process too
(https://www.sqlite.org/howtocorrupt.html §2.2)."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from gateway.core.store.sqlite import DB_FILENAME, SqliteStore, create_private_file
from gateway.plugins.keyexchange.mikey.replay_store import ReplayStore
from gateway.plugins.keyexchange.zrtp.cache import SecretCache
from gateway.plugins.taps.intercept.tasks import Provisioning
from tests.unit.core.file_locks import locked_for_others


class Closable(Protocol):
    def close(self) -> None: ...


def open_store(path: Path) -> Closable:
    return SqliteStore.open(path.parent)


def open_zrtp_cache(path: Path) -> Closable:
    cache = SecretCache(path)
    cache.lookup(b"\xbb" * 12)  # opened at its first use
    return cache


def open_mikey_journal(path: Path) -> Closable:
    journal = ReplayStore(path)
    journal.load("scope", since=0.0)  # opened at its first use
    return journal


def open_intercept_tasks(path: Path) -> Closable:
    return Provisioning(path)  # an existing file is loaded at once


OPENERS = [
    (DB_FILENAME, open_store),
    ("cache.sqlite", open_zrtp_cache),
    ("replay.sqlite", open_mikey_journal),
    ("tasks.sqlite", open_intercept_tasks),
]


@pytest.fixture
def no_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.parametrize(("name", "opener"), OPENERS)
def test_opening_keeps_the_locks_of_a_connection_of_this_process(
    tmp_path: Path, name: str, opener: Callable[[Path], Closable]
) -> None:
    """Another connection of this process (a second gateway in it, another object of the
    same file) is in a transaction; opening the file again must leave its locks (the file
    was opened with os.open to make it 0600 and closed, which took them away: another
    process could then write the database under the transaction, or in WAL mode take
    itself for the last connection and checkpoint and delete the -wal under it)."""
    path = tmp_path / "state" / name
    path.parent.mkdir()
    path.touch(0o600)  # an empty file is an empty database
    opener(path).close()  # its tables made
    holder = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        holder.execute("BEGIN")
        holder.execute("SELECT count(*) FROM sqlite_master")  # a SHARED lock of the file
        assert locked_for_others(path)
        opened = opener(path)
        try:
            assert locked_for_others(path)
        finally:
            opened.close()
        holder.execute("COMMIT")
    finally:
        holder.close()
    assert not locked_for_others(path)


@pytest.mark.parametrize(("name", "opener"), OPENERS[:3])
@pytest.mark.usefixtures("no_umask")
def test_a_missing_file_is_created_private(
    tmp_path: Path, name: str, opener: Callable[[Path], Closable]
) -> None:
    """Created 0600 whatever the umask (SQLite would make it 0644 less the umask). The
    intercept plugin makes its file at the first change: test_intercept_x1.py checks it."""
    path = tmp_path / "state" / name
    opener(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_create_private_file_leaves_an_existing_file_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "database"
    path.write_bytes(b"kept")
    path.chmod(0o640)
    create_private_file(path)
    assert path.read_bytes() == b"kept"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.usefixtures("no_umask")
def test_create_private_file_makes_the_file_a_dangling_link_names(tmp_path: Path) -> None:
    """state_dir/voipgw.sqlite3 a symbolic link to a file not made yet: O_EXCL refuses the
    link itself; the file is made through it, 0600, as it was before O_EXCL."""
    target = tmp_path / "elsewhere.sqlite3"
    link = tmp_path / "database"
    link.symlink_to(target)
    create_private_file(link)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
