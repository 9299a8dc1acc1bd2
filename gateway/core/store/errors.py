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


class StoreUnavailable(StoreBusy):
    """The PostgreSQL server cannot be reached, or the connection was lost: try again later
    (the store reconnects). A write whose connection was lost while it committed may have been
    made; every store write is safe to repeat. A :class:`StoreBusy`, so what answers a busy
    store (a REGISTER's 503, call records kept for the next save) answers this too."""


class SchemaError(StoreError):
    """The database was written by a newer voipgw, or is not a voipgw store."""
