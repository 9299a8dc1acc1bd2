"""The interception tasks and delivery destinations X1 provisioned, kept across restarts.

A *task* (X1 ``taskDetails``: XID, target identifiers, delivery type, destination ids) says whom to
intercept and where its X2 (signalling) and X3 (content) go; a *destination* (X1
``destinationDetails``: DID, address and port, delivery type) is one mediation function's
address. An interception that silently ends because the gateway restarted is a failed warrant,
so both are written to ``<state_dir>/intercept/tasks.sqlite`` (created 0600 in a 0700
directory: the targets are confidential) before X1 is answered, and read back at start-up.

Matching a call is a lookup of each identity of its INVITE in a key -> tasks index
(:mod:`~gateway.plugins.taps.intercept.targets`), so it costs the same with one task or ten
thousand, and nothing at all while there are none.

Rules kept here, each answered to the ADMF as an error naming the object: a task needs at least
one target and one destination, and its destinations must exist; a destination a task uses
cannot be removed; an XID or DID is created once.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import uuid
from pathlib import Path

import attrs

from gateway.core.interfaces import TappedCall
from gateway.core.store.sqlite import create_private_file
from gateway.plugins.taps.intercept.targets import TargetIdentifier, party_keys, uri_keys

DELIVERY_TYPES = ("X2Only", "X3Only", "X2andX3")


class ProvisioningError(Exception):
    """A request X1 must refuse; ``str()`` is the description sent back, ``code`` the TS 103
    221-1 table 6.7-3 error code naming why (None: the request's generic failure code, such as
    3000 for an ActivateTask the store refused)."""

    def __init__(self, description: str, code: int | None = None) -> None:
        super().__init__(description)
        self.code = code


# The codes of TS 103 221-1 table 6.7-3 that these rules answer (see x1.py for the table's
# source): the ADMF tells "the XID I named is not there" from "something failed" by them.
XID_EXISTS = 2010
XID_UNKNOWN = 2020
DID_EXISTS = 2030
DID_UNKNOWN = 2040
DESTINATION_IN_USE = 7010
DESTINATIONS_IN_USE = 8010


@attrs.frozen
class Destination:
    did: uuid.UUID
    address: tuple[str, int]
    delivery_type: str = "X2andX3"
    friendly_name: str = ""

    def carries(self, kind: str) -> bool:
        """Whether this destination takes ``kind`` ("X2" or "X3")."""
        return self.delivery_type == "X2andX3" or self.delivery_type == f"{kind}Only"


@attrs.frozen
class Task:
    xid: uuid.UUID
    targets: tuple[TargetIdentifier, ...]
    delivery_type: str
    dids: tuple[uuid.UUID, ...]

    def delivers(self, kind: str) -> bool:
        return self.delivery_type == "X2andX3" or self.delivery_type == f"{kind}Only"


@attrs.frozen
class Match:
    """A task a call matched, the side its target is on ("a": the caller, "b": the callee) and
    the identifier that matched (sent as the Matched Target Identifier)."""

    task: Task
    side: str
    target: TargetIdentifier


class Provisioning:
    """Tasks and destinations, persisted in ``path`` (None: in memory only, for tests)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.tasks: dict[uuid.UUID, Task] = {}
        self.destinations: dict[uuid.UUID, Destination] = {}
        self._by_key: dict[str, set[uuid.UUID]] = {}
        self._db: sqlite3.Connection | None = None
        self.generation = 0
        """Counts changes to the destinations: the delivery links follow it."""
        self.task_generation = 0
        """Counts tasks activated or modified: calls in progress are matched again."""
        # os.path: False for a name too long, which check() then names as [plugins.intercept]
        # state_dir's; Path.exists raises OSError (Python 3.11) before check() could.
        if path is not None and os.path.exists(path):
            self._load()  # a missing file is made at the first change: check-config writes nothing

    # -- matching -------------------------------------------------------------------------------

    def matches(self, call: TappedCall) -> list[Match]:
        if not self._by_key:
            return []
        caller, callee = party_keys(call)
        found: list[Match] = []
        for side, keys in (("a", caller), ("b", callee)):
            for key in keys:
                for xid in self._by_key.get(key, ()):
                    task = self.tasks[xid]
                    target = next(t for t in task.targets if t.key == key)
                    if not any(m.task.xid == xid and m.side == side for m in found):
                        found.append(Match(task, side, target))
        return found

    def matches_uri(self, uri: str) -> list[Match]:
        """The tasks whose target ``uri`` names (a REGISTER's address of record): side "a",
        the target being the one who sends it."""
        if not self._by_key:
            return []
        found: list[Match] = []
        for key in uri_keys(uri):
            for xid in self._by_key.get(key, ()):
                task = self.tasks[xid]
                if not any(m.task.xid == xid for m in found):
                    found.append(Match(task, "a", next(t for t in task.targets if t.key == key)))
        return found

    # -- X1 operations --------------------------------------------------------------------------

    def activate(self, task: Task) -> None:
        if task.xid in self.tasks:
            raise ProvisioningError(f"task {task.xid} exists already", XID_EXISTS)
        self._check_task(task)
        self._put_task(task)

    def modify(self, task: Task) -> None:
        if task.xid not in self.tasks:
            raise ProvisioningError(f"no task {task.xid}", XID_UNKNOWN)
        self._check_task(task)
        self._put_task(task)  # one row replaced: the old task stays if the store refuses

    def deactivate(self, xid: uuid.UUID) -> None:
        if xid not in self.tasks:
            raise ProvisioningError(f"no task {xid}", XID_UNKNOWN)
        self._drop_task(xid)

    def deactivate_all(self) -> None:
        for xid in list(self.tasks):
            self._drop_task(xid)

    def create_destination(self, destination: Destination) -> None:
        if destination.did in self.destinations:
            raise ProvisioningError(f"destination {destination.did} exists already", DID_EXISTS)
        self._put_destination(destination)

    def modify_destination(self, destination: Destination) -> None:
        if destination.did not in self.destinations:
            raise ProvisioningError(f"no destination {destination.did}", DID_UNKNOWN)
        self._put_destination(destination)

    def remove_destination(self, did: uuid.UUID) -> None:
        if did not in self.destinations:
            raise ProvisioningError(f"no destination {did}", DID_UNKNOWN)
        users = [str(task.xid) for task in self.tasks.values() if did in task.dids]
        if users:
            raise ProvisioningError(
                f"destination {did} is in use by task {users[0]}", DESTINATION_IN_USE
            )
        self._delete("destinations", "did", did)
        del self.destinations[did]
        self.generation += 1

    def remove_all_destinations(self) -> None:
        if self.tasks:
            raise ProvisioningError(
                "destinations are in use by tasks: deactivate them first", DESTINATIONS_IN_USE
            )
        for did in list(self.destinations):
            self.remove_destination(did)

    def _check_task(self, task: Task) -> None:
        if not task.targets:
            raise ProvisioningError(f"task {task.xid} has no target identifier")
        if not task.dids:
            raise ProvisioningError(f"task {task.xid} has no destination")
        for did in task.dids:
            if did not in self.destinations:
                raise ProvisioningError(f"task {task.xid}: no destination {did}", DID_UNKNOWN)
        if task.delivery_type not in DELIVERY_TYPES:
            raise ProvisioningError(f"task {task.xid}: delivery type {task.delivery_type!r}")

    # The store first, then memory: a change the store refused (a full disk) is refused to the
    # ADMF and changes nothing here either.

    def _put_task(self, task: Task) -> None:
        self._save("tasks", "xid", task.xid, _task_json(task))
        if task.xid in self.tasks:
            self._unindex(self.tasks[task.xid])
        self.task_generation += 1
        self.tasks[task.xid] = task
        for target in task.targets:
            self._by_key.setdefault(target.key, set()).add(task.xid)

    def _drop_task(self, xid: uuid.UUID) -> None:
        self._delete("tasks", "xid", xid)
        self._unindex(self.tasks.pop(xid))

    def _unindex(self, task: Task) -> None:
        for target in task.targets:
            xids = self._by_key.get(target.key)
            if xids is not None:
                xids.discard(task.xid)
                if not xids:
                    del self._by_key[target.key]

    def _put_destination(self, destination: Destination) -> None:
        self._save("destinations", "did", destination.did, _destination_json(destination))
        self.destinations[destination.did] = destination
        self.generation += 1

    # -- persistence ----------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection | None:
        if self.path is None:
            return None
        if self._db is None:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            create_private_file(self.path)  # 0600 before a secret is written in it
            db = sqlite3.connect(str(self.path), timeout=1.0)
            with db:
                db.execute("CREATE TABLE IF NOT EXISTS tasks (xid TEXT PRIMARY KEY, body TEXT)")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS destinations (did TEXT PRIMARY KEY, body TEXT)"
                )
            self._db = db
        return self._db

    def _save(self, table: str, key: str, ident: uuid.UUID, body: str) -> None:
        db = self._open()
        if db is None:
            return
        try:
            with db:
                db.execute(
                    f"INSERT OR REPLACE INTO {table} ({key}, body) VALUES (?, ?)",
                    (str(ident), body),
                )
        except sqlite3.Error as exc:
            # Not acknowledged to the ADMF as done when it would not survive a restart.
            raise ProvisioningError(f"cannot store it: {exc}") from exc

    def _delete(self, table: str, key: str, ident: uuid.UUID) -> None:
        db = self._open()
        if db is None:
            return
        try:
            with db:
                db.execute(f"DELETE FROM {table} WHERE {key} = ?", (str(ident),))
        except sqlite3.Error as exc:
            raise ProvisioningError(f"cannot store it: {exc}") from exc

    def _load(self) -> None:
        db = self._open()
        assert db is not None
        for (body,) in db.execute("SELECT body FROM destinations"):
            destination = _destination_from_json(body)
            self.destinations[destination.did] = destination
        for (body,) in db.execute("SELECT body FROM tasks"):
            task = _task_from_json(body)
            self.tasks[task.xid] = task
            for target in task.targets:
                self._by_key.setdefault(target.key, set()).add(task.xid)
        self.generation += 1

    def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None


def _task_json(task: Task) -> str:
    return json.dumps(
        {
            "xid": str(task.xid),
            "targets": [[t.kind, t.value] for t in task.targets],
            "delivery_type": task.delivery_type,
            "dids": [str(did) for did in task.dids],
        }
    )


def _task_from_json(body: str) -> Task:
    data = json.loads(body)
    return Task(
        uuid.UUID(data["xid"]),
        tuple(TargetIdentifier(kind, value) for kind, value in data["targets"]),
        data["delivery_type"],
        tuple(uuid.UUID(did) for did in data["dids"]),
    )


def _destination_json(destination: Destination) -> str:
    return json.dumps(
        {
            "did": str(destination.did),
            "address": list(destination.address),
            "delivery_type": destination.delivery_type,
            "friendly_name": destination.friendly_name,
        }
    )


def _destination_from_json(body: str) -> Destination:
    data = json.loads(body)
    host, port = data["address"]
    return Destination(
        uuid.UUID(data["did"]), (host, int(port)), data["delivery_type"], data["friendly_name"]
    )
