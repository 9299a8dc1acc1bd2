"""Store errors. All are local (the operator's or the gateway's request could not be done);
messages name the account or call, never a password or HA1."""

from __future__ import annotations


class StoreError(Exception):
    """Root of every store error."""


class InvalidValue(StoreError, ValueError):
    """A field value is not acceptable (bad account name, unknown field, empty password ...)."""


class AccountExists(StoreError):
    """``accounts_add`` for a name that already exists."""


class AccountNotFound(StoreError, LookupError):
    """The named account does not exist."""


class CallRecordExists(StoreError):
    """``call_record_insert`` for a call id that already has a record."""


class CallRecordNotFound(StoreError, LookupError):
    """``call_record_update`` for a call id without a record."""


class StoreBusy(StoreError):
    """Another process (``voipgw accounts ...``, an operator's ``sqlite3`` shell) held the store's
    write lock for longer than the store waits for it, or a PostgreSQL statement ran past its
    ``statement_timeout``: nothing was written; try again later."""


class StoreIndexing(StoreBusy):
    """What the request reads by is an index still being built (PostgreSQL's retention index
    after an upgrade: ``CREATE INDEX CONCURRENTLY``, minutes on a big table): an expected wait,
    not a failure; try again later. A :class:`StoreBusy`, so whatever answers a busy store
    answers this too."""


class StoreUnavailable(StoreBusy):
    """The PostgreSQL server cannot be reached, or the connection was lost: try again later
    (the store reconnects). A write whose connection was lost while it committed may have been
    made; every store write is safe to repeat. A :class:`StoreBusy`, so what answers a busy
    store (a REGISTER's 503, call records kept for the next save) answers this too."""


class SchemaError(StoreError):
    """The database was written by a newer voipgw, cannot be brought up to this one's schema,
    or is not a voipgw store."""


def newer_schema(where: str, current: int, latest: int) -> SchemaError:
    """The refusal of a database whose schema a newer voipgw wrote (a node not yet upgraded,
    in a rolling upgrade): what to do, with the versions. A schema is never migrated back."""
    from gateway import __version__

    return SchemaError(
        f"{where}: schema version {current} was written by a newer voipgw; this voipgw "
        f"({__version__}) understands schema versions up to {latest} and never changes a newer "
        f"one. Upgrade this node to the voipgw the other nodes run (one that knows schema "
        f"version {current}) and start it again; a schema is not migrated back"
    )


def migration_failed(
    where: str, current: int, latest: int, version: int, reason: str, remedy: str
) -> str:
    """Why a database of an older schema could not be brought up to this voipgw's, and what to
    do (``remedy``), with the versions."""
    from gateway import __version__

    return (
        f"{where}: cannot bring the schema up to date: it is at version {current}, this voipgw "
        f"({__version__}) needs version {latest}, and migration {version} failed: {reason}. "
        f"Nothing of that migration was kept: {remedy}, then start the node again"
    )
