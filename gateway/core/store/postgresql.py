"""PostgreSQL store: the accounts and registrations several gateway nodes share.

Several nodes behind a SIP load balancer (ARCHITECTURE.md "Scale") read and write one database;
each keeps what every call reads (accounts, an account's bindings, an AOR's bindings) in memory,
because the store is called from the event loop that also relays media and a query is a network
round trip. Theory of operation:

- Coherence. Triggers on ``accounts``, ``account_credentials``, ``account_certificates`` and
  ``registrations`` send ``NOTIFY voipgw_store`` with what changed (PostgreSQL docs, NOTIFY:
  delivered after the transaction commits, to every listening session, the writer's included).
  A background thread with a connection of its own LISTENs and drops the cached entries a
  notification names. A store's own writes drop theirs at once, so the node that took a REGISTER
  reads its own bindings back (the notifications of its own connection, told by the sender's
  process id, are then skipped); other nodes see the change within the notification's latency.
- A read that raced a notification is not kept: each drop advances an epoch, and an entry read
  from the database is cached only if the epoch is what it was before the read.
- No listener, no cache. While the listening connection is down (the server restarted, a
  ``pg_terminate_backend``, a server gone from the network, which TCP keepalives find within
  about eight seconds) the cache is emptied
  and every read goes to the database, until the thread is listening again (it retries every
  second) and has emptied the cache once more: changes made in between were never notified.
  A listener that stays down is logged as a dependency that keeps failing is
  (gateway/core/failure_log.py, :attr:`PostgresStore.listener_failures`): one WARNING with the
  reason, a summary every 300 s of the reconnections that failed, one INFO when it is back.
- Bounded waits. Every statement runs under ``statement_timeout`` (server side: a lock wait or a
  slow query is cancelled and rolled back), TCP keepalives and ``tcp_user_timeout`` bound a
  wait on a server that vanished from the network, and a lost connection is not reopened on the
  caller's thread: the call fails at once with :class:`StoreUnavailable` (a REGISTER is answered
  503, as for a busy SQLite store) and the background thread reconnects. A server that stops
  answering while its kernel still acknowledges (a stopped process, a stalled pooler or proxy)
  enforces no statement_timeout and is seen by no keepalive: a watchdog thread
  (:class:`_Watchdog`) cuts a connection whose wait for an answer passes statement_timeout +
  :data:`WATCHDOG_MARGIN`, the store's and the listener's alike. The CLI, which has no
  thread, connects when it is called. :meth:`PostgresStore.close` takes at most
  :data:`CLOSE_WAIT` in all, the server answering or not: it waits that long for an index
  build it cancels (libpq's cancel request, before libpq 17, is a blocking connect), the
  listener thread (which may be reconnecting) and a statement another thread has in
  progress, whose socket it then shuts down.
- Call limits (migration 2, :class:`PostgresCallLimits`). A trunk's or account's
  ``max_calls`` holds for every node: a row per call held against a limited key, taken by one
  function call that locks the key, counts and inserts, so two nodes cannot both take the last;
  a heartbeat row per node, whose holds stop counting once it is not seen for
  :data:`NODE_TIMEOUT`. What a node does when this does not answer is the call manager's
  (``gateway/core/calls/limits.py``: it counts alone). Each running instance writes a random
  id with its heartbeat (migration 3), so two processes given one ``[store] node`` name are
  found out: at start-up (the gateway refuses to start) or by a heartbeat. An account change
  heard of sets a flag the call limits read without a round trip (a ``max_calls`` raised from
  0 makes the calls already up count). The heartbeat's statement also counts the live nodes,
  for ``[store] max_cps_scope = "cluster"`` (each node paces its share of a trunk's
  ``max_cps``).
- PSAP callbacks (migration 4). The numbers our emergency calls presented, each until its
  callback window ends on the server's clock: written when an emergency call leaves through a
  trunk, read only for a trunk's INVITE marked ``Priority: psap-callback`` that this node does
  not know of (``gateway/core/calls/psap_callback.py``), so a callback is recognised on any node.
- Presence publications (migration 5, RFC 3903). Each phone's publication under its current
  entity tag, written by the node that took the PUBLISH (one function call: one round trip),
  read in bulk by every node for the accounts its presence subscriptions watch, and by entity
  tag's account when a refresh reaches a node that does not know the tag
  (``gateway/core/calls/presence.py``). Not cached, never notified: nodes poll.
- Call record retention (migration 6). Every node's housekeeping deletes the records older than
  ``[store] call_record_days`` in slices (:meth:`PostgresStore.expire_call_records`), any node's
  rows; a row another node is deleting is skipped (SKIP LOCKED), so two nodes' passes neither
  wait for each other nor delete a row twice. Its index is built outside the migrations, by
  ``CREATE INDEX CONCURRENTLY`` (:meth:`PostgresStore._build_indexes`): built inside
  migration 6's transaction it held a SHARE lock on call_records, so every node's call record
  saves waited for the build (1.5 s a million records, benchmarks/pg_retention_index.py), and
  a table of some tens of millions of records passed the migration's 60 s timeout at every
  start.
- Records by Call-ID (``voipgw calls --call-id``): a range of ids, which the UNIQUE index on
  call_id answers in a database ordered by code point ("C", "POSIX", the builtin provider's
  C.UTF-8). In any other the range is compared in "C", which that index cannot answer: an
  index on ``call_id COLLATE "C"`` (:data:`CALL_ID_INDEX`) is built there as the retention
  index is (the same node, lock and thread; session 42), and until it is the newest records
  are looked among first, then the whole table.
- Schema. Ordered migrations recorded in ``schema_version``, applied under an advisory lock so
  nodes starting together migrate once; a database written by a newer voipgw is refused, and
  every refusal or failed migration names the versions and says what to do (a rolling upgrade:
  docs/configuration.md ``[store]``). A database already at this version is only read at
  start-up (no DDL, no lock): nodes may run as a role that only reads and writes the tables,
  their owner migrating with ``voipgw migrate-store`` (docs/configuration.md, "The roles of a
  PostgreSQL store").

psycopg (3.2 or later, ``pip install 'voipgw[postgresql]'``) is imported here only, when a
PostgreSQL store is opened: a SQLite install never needs it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import attrs

from gateway.core.auth.algorithms import DigestAlgorithm
from gateway.core.failure_log import FailureLog
from gateway.core.logs import log_exception
from gateway.core.store import accounts as rules
from gateway.core.store.errors import (
    AccountExists,
    AccountNotFound,
    CallRecordExists,
    CallRecordNotFound,
    InvalidValue,
    SchemaError,
    StoreBusy,
    StoreError,
    StoreIndexing,
    StoreUnavailable,
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
    Hold,
    LimitKey,
    SharedCallLimits,
    Store,
    StoredPublication,
    call_id_range,
)

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "voipgw_store"

DEFAULT_CONNECT_TIMEOUT = 5
"""Seconds to open a connection (libpq ``connect_timeout``: whole seconds, at least 2)."""

DEFAULT_STATEMENT_TIMEOUT = 5.0
"""Seconds a statement may run or wait for a lock, unless ``open`` is told otherwise (the CLI's
wait; the gateway uses ``[store] statement_timeout``)."""

RECONNECT_INTERVAL = 1.0
"""Seconds between attempts to reopen a lost connection (the listener's and the store's)."""

LISTENER_POLL = 0.25
"""Longest the listener thread waits for a notification before it looks at its other work."""

CANCEL_WAIT = 2.0
"""Longest :meth:`PostgresStore.close` waits for an index build it cancels to stop (a cancel
the server answers takes milliseconds)."""

CLOSE_WAIT = CANCEL_WAIT
"""Longest :meth:`PostgresStore.close` takes in all: the index build's cancel, the listener
thread and a statement another thread has in progress share this one bound."""

WATCHDOG_MARGIN = 1.0
"""Seconds past ``statement_timeout`` a wait for the server's answer (a statement, a BEGIN or
COMMIT, the listener's LISTEN) may last before the store's watchdog cuts its connection: the
server cancels a statement at ``statement_timeout`` and answers at once, so a wait this much
longer is a server (or a pooler or proxy on the way) that stopped answering while its kernel
still acknowledges (see :class:`_Watchdog`)."""

MIGRATION_STATEMENT_TIMEOUT = "60s"
"""Migrations run at start-up, before anything is relayed, and may wait for another node's."""

ACCOUNT_CACHE_ENTRIES = 4096
"""Accounts (and unknown names) kept in memory, and as many accounts' and AORs' bindings."""

MIGRATION_REMEDY = (
    "fix the cause; a role that may not create or alter tables needs the database's owner to "
    "apply it (`voipgw migrate-store --config FILE` with a config whose [store] dsn names the "
    "owner) or the privilege granted"
)
"""What a failed migration's error tells the operator to do."""

MIGRATION_PRIVILEGE_REMEDY = (
    "this node's role may not change the schema (a migration creates and alters tables and"
    " functions: it needs CREATE on the schema and to own voipgw's tables, as the role that"
    " created them does); run `voipgw migrate-store --config FILE` with a config whose [store]"
    " dsn names that role (the database's owner), then grant the node's role what it uses"
    " (docs/configuration.md, 'The roles of a PostgreSQL store')"
)
"""What a migration refused for want of a privilege tells the operator to do: the nodes may
run as a role that only reads and writes the tables (they then never migrate)."""

# pg_advisory_xact_lock key of schema migrations: "voip" in ASCII.
_MIGRATION_LOCK = 0x766F6970
# pg_advisory_lock (session) key of the retention index's build: one node builds it.
_INDEX_LOCK = _MIGRATION_LOCK + 1

RETENTION_INDEX = "call_records_kept_by"
"""What call record retention deletes by (expire_call_records, oldest_call_record): the end,
or the start of a record without one; the queries name the same expression."""
CALL_ID_INDEX = "call_records_call_id_c"
"""The ids of the records in "C" order (``call_id COLLATE "C"``), which answers
:meth:`PostgresStore.call_records_of_call_id` (``voipgw calls --call-id``) in a database whose
collation is not code point order; built there as the retention index is (session 42: before,
docs/operations.md told the operator to build it by hand, under this name). Not built in a
database that orders by code point: the UNIQUE index on call_id answers there."""
CALL_ID_NEWEST_FIRST = 1000
"""Records (at least the limit asked) :meth:`PostgresStore.call_records_of_call_id` looks among
first, the newest, in a database not collated "C", before it reads the whole table: the call
asked about is usually recent, and before session 41 ``voipgw calls --call-id`` looked at these
only; a big table read whole may pass the CLI's statement_timeout."""
INLINE_INDEX_BYTES = 64 * 1024 * 1024
"""A call_records table up to this size (about 60,000 records) gets its retention index while
the store opens (a tenth of a second or so, within statement_timeout); a bigger one in a thread,
while the node serves, as does a small one whose build waited past statement_timeout for an
older transaction."""
INDEX_BUILD_SECONDS_PER_MILLION = 1.6
"""Seconds ``CREATE INDEX CONCURRENTLY`` of either index takes per million call records
(benchmarks/pg_retention_index.py and pg_call_id_index.py: 1.5-1.6 s on 2 vCPUs, PostgreSQL
15, quiet), for the estimate :meth:`PostgresStore.build_indexes` says before it builds."""
INDEX_BUILD_POLL = 1.0
"""Seconds between looks at another session's build of the retention index, waited for."""
INDEX_WAIT_PROGRESS = 30.0
"""Seconds between two progress lines (INFO) of :meth:`PostgresStore.build_indexes`
waiting for another session's build (``voipgw migrate-store``)."""
_CREATE_RETENTION_INDEX = (
    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {RETENTION_INDEX}"
    " ON call_records ((COALESCE(ended_at, started_at)))"
)
_CREATE_CALL_ID_INDEX = (
    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {CALL_ID_INDEX}"
    ' ON call_records ((call_id COLLATE "C"))'
)
_WITHOUT_CALL_ID_INDEX = "`voipgw calls --call-id` reads the newest records, then the whole table"
_NOT_OWNER = (
    f"this node's role may not build the index {RETENTION_INDEX} (only the owner of call_records"
    " may index it): call records are not deleted until the owner runs, outside a transaction,"
    f" {_CREATE_RETENTION_INDEX}, or grants the owning role to this one"
    " (docs/configuration.md, 'Upgrading the nodes')"
)
"""The truth, and the remedy, for a node whose role does not own call_records: no start of
such a node ever builds the index, so none says the next one will."""
_CALL_ID_NOT_OWNER = (
    f"this node's role may not build the index {CALL_ID_INDEX} (only the owner of call_records"
    f" may index it): {_WITHOUT_CALL_ID_INDEX} (seconds on millions of records), until the"
    " owner runs `voipgw migrate-store`, or, outside a transaction,"
    f" {_CREATE_CALL_ID_INDEX} (docs/operations.md, 'Calls and log lines')"
)


@attrs.frozen
class _Index:
    """An index of call_records built outside the migrations, concurrently, by one node
    (:meth:`PostgresStore._build_indexes`), and what its build's log lines say of it."""

    name: str
    create: str
    meanwhile: str
    """Said as its build starts: what goes on, and what waits for it."""
    once_built: str
    """Said when another session's build is left to: what it brings once built."""
    failed: str
    """Said after a failed build: what is not done until a later build."""
    failed_level: int
    """The level of a failed build's line: ERROR when something is not done without it (old
    records not deleted), WARNING when something is only slower."""
    not_owner: str
    """Said (at ``failed_level``) when this node's role may not build it."""


RETENTION = _Index(
    RETENTION_INDEX,
    _CREATE_RETENTION_INDEX,
    "call records are saved meanwhile; old ones are deleted once it is built",
    "old call records are deleted once it is built",
    "call records are not deleted until a node's next start builds it",
    logging.ERROR,
    _NOT_OWNER,
)
CALL_ID = _Index(
    CALL_ID_INDEX,
    _CREATE_CALL_ID_INDEX,
    f"call records are saved meanwhile; {_WITHOUT_CALL_ID_INDEX} until it is built",
    "`voipgw calls --call-id` reads through it once it is built",
    f"{_WITHOUT_CALL_ID_INDEX} until a node's next start builds it",
    logging.WARNING,
    _CALL_ID_NOT_OWNER,
)

# TCP settings libpq applies unless the DSN sets them (PostgreSQL docs §34.1.2): a server that
# stops answering is found within seconds (5 + 3 x 1) rather than the kernel's two hours. The
# listener's connection relies on them: it runs no query once it listens, because only recent
# psycopg releases keep a notification that arrives during a query for notifies() to return.
_KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "1",
    "keepalives_count": "3",
}

Migration = tuple[int, tuple[str, ...]]

MIGRATIONS: tuple[Migration, ...] = (
    (
        1,
        (
            """CREATE TABLE accounts (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                display_name TEXT,
                enabled BOOLEAN NOT NULL DEFAULT TRUE,
                media_policy TEXT NOT NULL DEFAULT 'best-effort',
                require_tls BOOLEAN NOT NULL DEFAULT FALSE,
                max_calls INTEGER NOT NULL DEFAULT 0,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            # HA1 per (realm, algorithm), RFC 8760 §3. No password column, ever.
            """CREATE TABLE account_credentials (
                account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                realm TEXT NOT NULL,
                algorithm TEXT NOT NULL,
                ha1 TEXT NOT NULL,
                PRIMARY KEY (account_id, realm, algorithm)
            )""",
            """CREATE TABLE account_certificates (
                account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                kind TEXT NOT NULL CHECK (kind IN ('fingerprint', 'subject')),
                value TEXT NOT NULL,
                PRIMARY KEY (account_id, kind, value)
            )""",
            """CREATE TABLE registrations (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                account_id BIGINT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                aor TEXT NOT NULL,
                binding_key TEXT NOT NULL,
                contact TEXT NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                q DOUBLE PRECISION,
                call_id TEXT NOT NULL,
                cseq BIGINT NOT NULL,
                instance TEXT,
                reg_id BIGINT,
                transport TEXT NOT NULL,
                local_addr TEXT NOT NULL,
                remote_addr TEXT NOT NULL,
                user_agent TEXT,
                path TEXT NOT NULL DEFAULT '[]',
                updated_at DOUBLE PRECISION NOT NULL,
                UNIQUE (aor, binding_key)
            )""",
            "CREATE INDEX registrations_expires_at ON registrations (expires_at)",
            "CREATE INDEX registrations_account ON registrations (account_id)",
            # json (not jsonb) keeps the text as written and refuses text that is not JSON.
            """CREATE TABLE call_records (
                id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                call_id TEXT NOT NULL UNIQUE,
                from_uri TEXT NOT NULL,
                to_uri TEXT NOT NULL,
                started_at DOUBLE PRECISION NOT NULL,
                answered_at DOUBLE PRECISION,
                ended_at DOUBLE PRECISION,
                end_reason TEXT,
                security JSON NOT NULL DEFAULT '{}',
                node TEXT NOT NULL DEFAULT ''
            )""",
            "CREATE INDEX call_records_started_at ON call_records (started_at)",
            # A starting node ends the calls its previous run left up, and only those.
            "CREATE INDEX call_records_unfinished ON call_records (node) WHERE ended_at IS NULL",
            # Notifications (see the module's docstring). A payload is at most 8000 bytes
            # (PostgreSQL docs, NOTIFY): a longer one would fail the writer's transaction, so it
            # becomes "*", which drops every node's whole cache.
            """CREATE FUNCTION voipgw_notify(payload TEXT) RETURNS VOID LANGUAGE plpgsql AS $$
            BEGIN
                IF octet_length(payload) > 7900 THEN
                    payload := '*';
                END IF;
                PERFORM pg_notify('voipgw_store', payload);
            END $$""",
            # "a" + account name: the account, its credentials or certificates changed.
            """CREATE FUNCTION voipgw_account_changed() RETURNS TRIGGER LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP IN ('UPDATE', 'DELETE') THEN
                    PERFORM voipgw_notify('a' || OLD.name);
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    PERFORM voipgw_notify('a' || NEW.name);
                END IF;
                RETURN NULL;
            END $$""",
            # A deleted account's rows go by ON DELETE CASCADE after the account row: the
            # lookup finds nothing, and the account's own notification covers them.
            """CREATE FUNCTION voipgw_account_detail_changed() RETURNS TRIGGER
            LANGUAGE plpgsql AS $$
            DECLARE
                found TEXT;
            BEGIN
                IF TG_OP IN ('UPDATE', 'DELETE') THEN
                    SELECT name INTO found FROM accounts WHERE id = OLD.account_id;
                    IF found IS NOT NULL THEN
                        PERFORM voipgw_notify('a' || found);
                    END IF;
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    SELECT name INTO found FROM accounts WHERE id = NEW.account_id;
                    IF found IS NOT NULL THEN
                        PERFORM voipgw_notify('a' || found);
                    END IF;
                END IF;
                RETURN NULL;
            END $$""",
            # "b" + account name (empty once the account is gone) + newline + AOR. Account
            # names hold no newline (accounts.check_name).
            """CREATE FUNCTION voipgw_registration_changed() RETURNS TRIGGER
            LANGUAGE plpgsql AS $$
            BEGIN
                IF TG_OP IN ('UPDATE', 'DELETE') THEN
                    PERFORM voipgw_notify('b' || COALESCE(
                        (SELECT name FROM accounts WHERE id = OLD.account_id), '')
                        || E'\\n' || OLD.aor);
                END IF;
                IF TG_OP IN ('INSERT', 'UPDATE') THEN
                    PERFORM voipgw_notify('b' || COALESCE(
                        (SELECT name FROM accounts WHERE id = NEW.account_id), '')
                        || E'\\n' || NEW.aor);
                END IF;
                RETURN NULL;
            END $$""",
            """CREATE FUNCTION voipgw_table_truncated() RETURNS TRIGGER LANGUAGE plpgsql AS $$
            BEGIN
                PERFORM voipgw_notify('*');
                RETURN NULL;
            END $$""",
            """CREATE TRIGGER accounts_notify AFTER INSERT OR UPDATE OR DELETE ON accounts
            FOR EACH ROW EXECUTE FUNCTION voipgw_account_changed()""",
            """CREATE TRIGGER account_credentials_notify
            AFTER INSERT OR UPDATE OR DELETE ON account_credentials
            FOR EACH ROW EXECUTE FUNCTION voipgw_account_detail_changed()""",
            """CREATE TRIGGER account_certificates_notify
            AFTER INSERT OR UPDATE OR DELETE ON account_certificates
            FOR EACH ROW EXECUTE FUNCTION voipgw_account_detail_changed()""",
            """CREATE TRIGGER registrations_notify
            AFTER INSERT OR UPDATE OR DELETE ON registrations
            FOR EACH ROW EXECUTE FUNCTION voipgw_registration_changed()""",
            *(
                f"""CREATE TRIGGER {table}_truncate_notify AFTER TRUNCATE ON {table}
                FOR EACH STATEMENT EXECUTE FUNCTION voipgw_table_truncated()"""
                for table in (
                    "accounts",
                    "account_credentials",
                    "account_certificates",
                    "registrations",
                )
            ),
        ),
    ),
    (
        2,
        (
            # max_calls counted for the cluster (docs/architecture.md "Scale"): a row per call a
            # node counts against a limited trunk or account ("call" numbers the node's calls),
            # and each node's heartbeat, on the server's clock (the nodes' may disagree).
            """CREATE TABLE call_limit_holds (
                node TEXT NOT NULL,
                call BIGINT NOT NULL,
                kind TEXT NOT NULL,
                name TEXT NOT NULL,
                PRIMARY KEY (node, call, kind, name)
            )""",
            "CREATE INDEX call_limit_holds_key ON call_limit_holds (kind, name)",
            """CREATE TABLE call_limit_nodes (
                node TEXT PRIMARY KEY,
                seen_at TIMESTAMPTZ NOT NULL
            )""",
            # One statement, so one round trip, from a node in autocommit: its own transaction.
            # The advisory lock (one per key; released at commit, after the insert is visible)
            # makes takers of one key wait for each other, and the count after it sees every
            # hold committed before it was granted: a VOLATILE function's statements each take
            # a fresh snapshot under READ COMMITTED (PostgreSQL docs §38.7), whereas a single
            # statement would count from a snapshot taken before it waited. Holds of nodes not
            # seen for node_timeout seconds (killed) do not count; this node's always do.
            """CREATE FUNCTION voipgw_take_call_slot(
                taker TEXT, hold BIGINT, key_kind TEXT, key_name TEXT, max_calls INTEGER,
                exempt BOOLEAN, node_timeout DOUBLE PRECISION
            ) RETURNS BOOLEAN LANGUAGE plpgsql VOLATILE AS $$
            DECLARE
                held BIGINT;
            BEGIN
                PERFORM pg_advisory_xact_lock(1987012972, hashtext(key_kind || ':' || key_name));
                IF NOT exempt THEN
                    SELECT COUNT(*) INTO held FROM call_limit_holds h
                    WHERE h.kind = key_kind AND h.name = key_name
                    AND (h.node = taker OR EXISTS (
                        SELECT 1 FROM call_limit_nodes n WHERE n.node = h.node
                        AND n.seen_at > clock_timestamp() - make_interval(secs => node_timeout)));
                    IF held >= max_calls THEN
                        RETURN FALSE;
                    END IF;
                END IF;
                INSERT INTO call_limit_holds (node, call, kind, name)
                VALUES (taker, hold, key_kind, key_name) ON CONFLICT DO NOTHING;
                RETURN TRUE;
            END $$""",
        ),
    ),
    (
        3,
        (
            # Which running instance of a node wrote its heartbeat (a random id per start), so
            # two processes given one [store] node name are found out (PostgresCallLimits).
            # Nodes of schema 2 still running keep working: their upserts leave it as it is.
            "ALTER TABLE call_limit_nodes ADD COLUMN instance TEXT NOT NULL DEFAULT ''",
        ),
    ),
    (
        4,
        (
            # The numbers our emergency calls presented, each until its PSAP callback window
            # ends, on the server's clock: a callback that the carrier sends to any node, or to
            # one restarted since, is recognised (gateway/core/calls/psap_callback.py).
            """CREATE TABLE psap_callbacks (
                number TEXT PRIMARY KEY,
                until TIMESTAMPTZ NOT NULL
            )""",
            "CREATE INDEX psap_callbacks_until ON psap_callbacks (until)",
            # One round trip from a node in autocommit (its own transaction): keep the number,
            # drop those whose window is over and, past most, those whose window ends first.
            # Rows another node is deleting at the same moment are skipped (SKIP LOCKED, as
            # expire_bindings does), so two nodes' clean-ups neither wait for nor deadlock with
            # each other; what one skips, the next write deletes.
            """CREATE FUNCTION voipgw_psap_number_presented(
                presented TEXT, window_seconds DOUBLE PRECISION, most INTEGER
            ) RETURNS VOID LANGUAGE plpgsql VOLATILE AS $$
            BEGIN
                INSERT INTO psap_callbacks (number, until)
                VALUES (presented, clock_timestamp() + make_interval(secs => window_seconds))
                ON CONFLICT (number) DO UPDATE SET until = excluded.until;
                DELETE FROM psap_callbacks WHERE number IN (
                    SELECT number FROM psap_callbacks WHERE until <= clock_timestamp()
                    FOR UPDATE SKIP LOCKED);
                DELETE FROM psap_callbacks WHERE number IN (
                    SELECT number FROM psap_callbacks ORDER BY until DESC OFFSET most
                    FOR UPDATE SKIP LOCKED);
            END $$""",
        ),
    ),
    (
        5,
        (
            # Presence publications (RFC 3903) under their current entity tags, so that every
            # node's watchers see them and a refresh by entity tag works on any node
            # (gateway/core/calls/presence.py). Times are the writing node's wall clock, as
            # for registrations. Bounded by the writer: a few per account.
            """CREATE TABLE presence_publications (
                etag TEXT PRIMARY KEY,
                account TEXT NOT NULL,
                expires_at DOUBLE PRECISION NOT NULL,
                published_at DOUBLE PRECISION NOT NULL,
                is_open BOOLEAN NOT NULL,
                definite BOOLEAN NOT NULL,
                body BYTEA NOT NULL
            )""",
            "CREATE INDEX presence_publications_account ON presence_publications (account)",
            "CREATE INDEX presence_publications_expires_at ON presence_publications (expires_at)",
            # One PUBLISH's outcome in one round trip (Store.publication_save). Rows another
            # node is deleting at the same moment are skipped (SKIP LOCKED, as for the PSAP
            # numbers): what one skips, the next write or housekeeping deletes.
            # The version a PUBLISH named (replaced) is deleted first: of two nodes racing
            # on one entity tag the second waits for the first's row lock, then finds it
            # gone and writes nothing (FALSE: 412, RFC 3903 §6 step 2).
            """CREATE FUNCTION voipgw_presence_publication_save(
                acct TEXT, replaced TEXT, dropped TEXT[], new_etag TEXT,
                expires DOUBLE PRECISION, published DOUBLE PRECISION, opened BOOLEAN,
                definite_status BOOLEAN, document BYTEA, now DOUBLE PRECISION, most INTEGER
            ) RETURNS BOOLEAN LANGUAGE plpgsql VOLATILE AS $$
            BEGIN
                IF replaced IS NOT NULL THEN
                    DELETE FROM presence_publications
                    WHERE etag = replaced AND account = acct;
                    IF NOT FOUND THEN
                        RETURN FALSE;
                    END IF;
                END IF;
                DELETE FROM presence_publications WHERE etag = ANY(dropped);
                IF new_etag IS NOT NULL THEN
                    INSERT INTO presence_publications
                        (etag, account, expires_at, published_at, is_open, definite, body)
                    VALUES (new_etag, acct, expires, published, opened, definite_status,
                        document)
                    ON CONFLICT (etag) DO UPDATE SET account = excluded.account,
                        expires_at = excluded.expires_at, published_at = excluded.published_at,
                        is_open = excluded.is_open, definite = excluded.definite,
                        body = excluded.body;
                END IF;
                DELETE FROM presence_publications WHERE etag IN (
                    SELECT etag FROM presence_publications
                    WHERE account = acct AND expires_at <= now FOR UPDATE SKIP LOCKED);
                DELETE FROM presence_publications WHERE etag IN (
                    SELECT etag FROM presence_publications WHERE account = acct
                    ORDER BY expires_at DESC OFFSET most FOR UPDATE SKIP LOCKED);
                RETURN TRUE;
            END $$""",
        ),
    ),
    # Call record retention's index (expire_call_records), which this version stands for, is
    # built after the migrations, concurrently (_build_indexes: no statement here, as
    # CREATE INDEX CONCURRENTLY cannot run in a transaction). Databases that went to 6 with
    # the index built in this transaction (before 2026-11-30) keep it: it is the same index.
    # A node whose role may only read and write the tables applies it (it only inserts into
    # schema_version, which that role may), and that is safe: it changes no table, function or
    # grant, so the database is the same whoever recorded it, and older nodes refuse it from
    # their next start either way; the index is the owner's whatever the version (the node
    # says so at ERROR, its retention fails until then, and `voipgw migrate-store` as the owner
    # builds it on a database already at 6). Docs: configuration.md, "The roles of a
    # PostgreSQL store".
    (6, ()),
)

HEARTBEAT_INTERVAL = 2.0
"""Seconds between a node's heartbeats (``call_limit_nodes``), sent by the call manager."""

NODE_TIMEOUT = 10.0
"""A node not seen for this long (five heartbeats) is taken for dead: its holds stop counting
against the cluster's limits (its calls ended with it)."""


def _check_migrations(migrations: Sequence[Migration]) -> None:
    versions = [version for version, _ in migrations]
    if not versions or versions != list(range(1, len(versions) + 1)):
        raise ValueError("migrations must be numbered 1, 2, 3 ... in order")


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(
            "the PostgreSQL store needs psycopg: pip install 'voipgw[postgresql]'"
        ) from exc
    return psycopg


class _Watchdog:
    """Bounds every wait of a watched connection for the server's answer: past its bound
    (``statement_timeout`` + :data:`WATCHDOG_MARGIN`) the connection's socket is shut down
    (:func:`_abort`), so the wait ends at once with the connection lost, the call fails with
    :class:`StoreUnavailable` and the listener thread reconnects when the server answers.

    Why: ``statement_timeout`` is the server's own, and TCP keepalives and ``tcp_user_timeout``
    end a wait only on a host that stopped acknowledging. A server process stopped (SIGSTOP, a
    paused VM), a pooler that stalls or a proxy that holds the connection without forwarding
    leaves the kernel acknowledging: the wait lasted until the server answered again, and the
    store is called from the gateway's event loop, so every call on the node froze with it.

    One thread per store, started with the first watched connection. The hot path is two
    attribute writes and a clock read per wait (:class:`_WatchedConnection` stamps when it
    began): no lock, no wake-up. The thread sleeps until the earliest bound of a wait in
    progress, or one bound when none is (a wait that begins meanwhile ends its bound later
    than that), so an idle store wakes it once every few seconds."""

    def __init__(self, description: str, bound: float) -> None:
        self._description = description
        self.bound = bound
        self._lock = threading.Lock()  # the set: connections are added from several threads
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._told_unseen = False  # "waits for the server are not watched" said
        self.cuts = 0
        """Connections cut for a wait past its bound (read by the tests)."""

    def watch(self, connection: Any, bound: float | None = None) -> None:
        """Watch ``connection`` (a :class:`_WatchedConnection`) until it is collected."""
        connection.watch_bound = self.bound if bound is None else bound
        with self._lock:
            self._watched.add(connection)
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="postgresql store watchdog", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        """Stop the thread (not waited for: it ends at its next look, at once)."""
        self._stopping.set()

    def unseen(self, version: str) -> None:
        """Say, once, that a watched connection's statement did not wait in
        ``Connection.wait`` (:func:`_watched_connection`): this psycopg waits elsewhere, so no
        wait is bounded, and a server that stops answering holds the event loop again."""
        if self._told_unseen:
            return
        self._told_unseen = True
        log.warning(
            "PostgreSQL %s: the store's watchdog cannot work, waits for the server are not"
            " watched: psycopg %s does not wait in Connection.wait, so a server that stops"
            " answering (a stopped process, a stalled pooler or proxy) holds the store's calls"
            " until it answers; use psycopg 3.2 or 3.3",
            self._description,
            version,
        )

    def _run(self) -> None:
        try:
            while True:
                now = time.monotonic()
                wake = now + self.bound
                with self._lock:
                    watched = list(self._watched)
                for db in watched:
                    since, bound = db.watch_since, db.watch_bound
                    if since is None or bound is None:
                        continue
                    if now - since >= bound:
                        self._cut(db, since, bound)
                    else:
                        wake = min(wake, since + bound)
                del watched  # a connection dropped meanwhile is collected
                if self._stopping.wait(max(0.0, wake - time.monotonic())):
                    return
        except Exception:
            # A bug: waits are bounded only by the server again (as before the watchdog).
            log_exception(log, "store watchdog thread failed: waits for the server unbounded")

    def _cut(self, db: Any, since: float, bound: float) -> None:
        # Only if that same wait is still in progress once the descriptor is duplicated: a
        # wait that ended meanwhile may have had its connection closed, and the number reused.
        if _abort(db, unless=lambda: db.watch_since != since, first=lambda: self._mark(db)):
            log.debug(
                "PostgreSQL %s: no answer within %g s: connection cut", self._description, bound
            )

    def _mark(self, db: Any) -> None:
        # Before the shutdown, not after: the waiting thread wakes at the shutdown and reads
        # watch_cut as it makes its error, while this thread may not run again for a while
        # (the shutdown and close give up the GIL): marked after, its error and WARNING said
        # only "server closed the connection unexpectedly", and cuts could still read 0.
        self.cuts += 1
        db.watch_cut = True


_connection_classes: dict[int, Any] = {}


def _watched_connection(pg: Any) -> Any:
    """psycopg's Connection, stamping when each wait for the server begins (for
    :class:`_Watchdog`). ``Connection.wait`` is where psycopg waits for every answer: a
    statement's, a transaction's BEGIN and COMMIT, a notification's (psycopg 3.2 to 3.3)."""
    found = _connection_classes.get(id(pg))
    if found is not None:
        return found

    class _WatchedConnection(pg.Connection):  # type: ignore[misc]
        watch_since: float | None = None  # monotonic: when the wait in progress began
        watch_bound: float | None = None  # None: not watched
        watch_cut = False  # the watchdog cut it

        def wait(self, *args: Any, **kwargs: Any) -> Any:
            self.watch_since = time.monotonic()
            try:
                return super().wait(*args, **kwargs)
            finally:
                self.watch_since = None

    _connection_classes[id(pg)] = _WatchedConnection
    return _WatchedConnection


def check_dsn(dsn: str) -> None:
    """Raise :class:`InvalidValue` unless libpq can parse ``dsn`` (it is not connected to)."""
    _Server(dsn, None, DEFAULT_CONNECT_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT)


class _Server:
    """How to reach the server: the DSN with our connection settings, and what may be said
    about it. The password (in the DSN or from ``password``) never leaves this object except
    to libpq."""

    def __init__(
        self,
        dsn: str,
        password: str | None,
        connect_timeout: int,
        statement_timeout: float,
    ) -> None:
        pg = _import_psycopg()
        try:
            params = pg.conninfo.conninfo_to_dict(dsn)
        except pg.ProgrammingError:
            # libpq's message quotes the DSN, password included: say only that it is bad.
            raise InvalidValue("dsn is not a libpq connection string or URI") from None
        self._secrets = [s for s in (params.get("password"), password) if s]
        if password is not None:
            params["password"] = password
        for key, value in _KEEPALIVES.items():
            params.setdefault(key, value)
        # A request sent to a server that does not acknowledge it (gone from the network) is
        # given up after this long: TCP_USER_TIMEOUT, libpq tcp_user_timeout in milliseconds.
        params.setdefault("tcp_user_timeout", str(round((statement_timeout + 1.0) * 1000)))
        params["connect_timeout"] = str(connect_timeout)
        params.setdefault("application_name", "voipgw")
        self._params = params
        self.statement_timeout = statement_timeout
        self._connection_class = _watched_connection(pg)
        shown = [
            f"{key}={params[key]}"
            for key in ("host", "hostaddr", "port", "dbname", "user")
            if params.get(key)
        ]
        self.description = " ".join(shown) or "(libpq defaults)"
        self.watchdog = _Watchdog(self.description, statement_timeout + WATCHDOG_MARGIN)

    def scrub(self, text: str) -> str:
        """``text`` with the password replaced (libpq does not quote it, but a DSN might)."""
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text

    def say(self, exc: BaseException) -> str:
        """What may be said of a psycopg error: its first line, without the password. The
        lines after it (DETAIL, CONTEXT) may quote a row, and a row may hold an HA1."""
        lines = str(exc).strip().splitlines()
        return self.scrub(lines[0].strip() if lines else type(exc).__name__)

    def connect(self, *, listener: bool = False, purpose: str = "") -> psycopg.Connection[Any]:
        """A new autocommit connection with ``statement_timeout`` set. Raises
        :class:`StoreUnavailable` (message without the password). ``purpose`` (or
        ``listener``) is added to its application_name (pg_stat_activity shows it). Its waits
        for the server are bounded by the watchdog, but an index build's (minutes)."""
        pg = _import_psycopg()
        params = dict(self._params)
        if listener:
            purpose = "listener"
        watched = True
        if purpose:
            params["application_name"] = f"{params['application_name']} {purpose}"[:63]
            if purpose == "index build":
                # A build sends one statement and waits minutes for its answer.
                params.pop("tcp_user_timeout", None)
                watched = False
        try:
            # The connection itself is bounded by connect_timeout (psycopg's, the whole
            # handshake); the watchdog bounds what follows, this set_config included.
            connection: psycopg.Connection[Any] = self._connection_class.connect(
                autocommit=True, **params
            )
        except pg.Error as exc:
            raise StoreUnavailable(
                f"PostgreSQL {self.description}: cannot connect: {self.say(exc)}"
            ) from None
        if watched:
            self.watchdog.watch(connection)
            # Connection.wait is not documented: a psycopg whose statements wait elsewhere
            # leaves this stamp (never due: the watchdog skips it), and is said, not silent.
            connection.watch_since = math.inf  # type: ignore[attr-defined]
        try:
            connection.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                (f"{round(self.statement_timeout * 1000)}ms",),
            )
        except pg.Error as exc:
            connection.close()
            raise StoreUnavailable(f"PostgreSQL {self.description}: {self.say(exc)}") from None
        if watched and connection.watch_since == math.inf:  # type: ignore[attr-defined]
            connection.watch_since = None  # type: ignore[attr-defined]
            self.watchdog.unseen(getattr(pg, "__version__", "?"))
        return connection


_MISSING: Any = object()


class PostgresCallLimits:
    """``max_calls`` counted for the cluster in ``call_limit_holds`` (migration 2): the
    :class:`~gateway.core.store.interface.SharedCallLimits` of a :class:`PostgresStore`. Called
    on the event loop through the store's connection, under its ``statement_timeout``.

    Each instance (one start of one process) has a random ``instance`` id, written with its
    heartbeat (migration 3): a heartbeat under this node's name from another instance is either
    this node's previous run (killed moments ago: its row stays as it left it) or another
    process given the same ``[store] node``, which would drop this node's holds and count them
    as its own. The gateway tells them apart at start-up (:meth:`other_instance`, asked twice a
    beat or two apart: only a live process's heartbeat moves) and :meth:`beat` reports one
    found while running."""

    heartbeat_interval = HEARTBEAT_INTERVAL

    def __init__(self, store: PostgresStore, node_timeout: float = NODE_TIMEOUT) -> None:
        self._store = store
        self.node_timeout = node_timeout
        self.instance = secrets.token_hex(8)
        self.live_nodes = 1

    def other_instance(self) -> tuple[str, object] | None:
        with self._store._session() as db:
            row = db.execute(
                "SELECT instance, seen_at FROM call_limit_nodes WHERE node = %s"
                " AND instance <> %s AND seen_at > clock_timestamp() - make_interval(secs => %s)",
                (self._store.node, self.instance, self.node_timeout),
            ).fetchone()
        return None if row is None else (str(row[0]), row[1])

    def limits_changed(self) -> bool:
        # Accounts only: a trunk's max_calls is read from the config file, at start-up.
        return self._store._take_accounts_changed()

    def start(self) -> None:
        with self._store._session(transaction=True) as db:
            db.execute("DELETE FROM call_limit_holds WHERE node = %s", (self._store.node,))
            _, self.live_nodes = _beat(db, self._store.node, self.instance, self.node_timeout)

    def take(self, hold: int, key: LimitKey, limit: int, *, exempt: bool = False) -> bool:
        with self._store._session() as db:
            row = db.execute(
                "SELECT voipgw_take_call_slot(%s, %s, %s, %s, %s, %s, %s)",
                (self._store.node, hold, key[0], key[1], limit, exempt, self.node_timeout),
            ).fetchone()
        return bool(row and row[0])

    def release(self, holds: Sequence[Hold]) -> None:
        if holds:
            with self._store._session() as db:
                _delete_holds(db, self._store.node, holds)

    def beat(self, add: Sequence[Hold] = (), remove: Sequence[Hold] = ()) -> str | None:
        node = self._store.node
        with self._store._session(transaction=bool(add or remove)) as db:
            if remove:
                _delete_holds(db, node, remove)
            if add:
                calls, kinds, names = _hold_arrays(add)
                db.execute(
                    "INSERT INTO call_limit_holds (node, call, kind, name)"
                    " SELECT %s, * FROM unnest(%s::bigint[], %s::text[], %s::text[])"
                    " ON CONFLICT DO NOTHING",
                    (node, calls, kinds, names),
                )
            before, live = _beat(db, node, self.instance, self.node_timeout)
        self.live_nodes = live  # once committed: a beat rolled back counted nothing
        return before if before and before != self.instance else None

    def stop(self) -> None:
        with self._store._session(transaction=True) as db:
            db.execute("DELETE FROM call_limit_holds WHERE node = %s", (self._store.node,))
            # Only its own heartbeat: one of another process given the same name stays.
            db.execute(
                "DELETE FROM call_limit_nodes WHERE node = %s AND instance = %s",
                (self._store.node, self.instance),
            )


def _beat(
    db: psycopg.Connection[Any], node: str, instance: str, node_timeout: float
) -> tuple[str | None, int]:
    """Upsert ``node``'s heartbeat as ``instance``'s; the instance that wrote it before (None:
    no row) and the live nodes, this one and those seen within ``node_timeout`` (as a take
    counts their holds), both read in the same statement's snapshot: one round trip."""
    row = db.execute(
        "WITH before AS (SELECT instance FROM call_limit_nodes WHERE node = %s)"
        " INSERT INTO call_limit_nodes (node, seen_at, instance)"
        " VALUES (%s, clock_timestamp(), %s)"
        " ON CONFLICT (node) DO UPDATE SET seen_at = excluded.seen_at,"
        " instance = excluded.instance"
        " RETURNING (SELECT instance FROM before),"
        " (SELECT COUNT(*) FROM call_limit_nodes WHERE node <> %s"
        " AND seen_at > clock_timestamp() - make_interval(secs => %s))",
        (node, node, instance, node, node_timeout),
    ).fetchone()
    if row is None:
        return None, 1
    return (None if row[0] is None else str(row[0])), 1 + int(row[1])


def _hold_arrays(holds: Sequence[Hold]) -> tuple[list[int], list[str], list[str]]:
    return [h for h, _ in holds], [k[0] for _, k in holds], [k[1] for _, k in holds]


def _delete_holds(db: psycopg.Connection[Any], node: str, holds: Sequence[Hold]) -> None:
    calls, kinds, names = _hold_arrays(holds)
    db.execute(
        "DELETE FROM call_limit_holds WHERE node = %s AND (call, kind, name) IN"
        " (SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[]))",
        (node, calls, kinds, names),
    )


class PostgresStore:
    """A :class:`~gateway.core.store.interface.Store` in PostgreSQL. Use :meth:`open`."""

    def __init__(
        self,
        server: _Server,
        connection: psycopg.Connection[Any],
        clock: Callable[[], float],
        *,
        listen: bool,
        node: str,
        call_id_index: bool = True,
    ) -> None:
        self._pg = _import_psycopg()
        self.node = node
        # [store] call_id_index: whether this node builds CALL_ID_INDEX where the collation
        # is not code point order (False: never built here, one already there left alone).
        self._call_id_index = call_id_index
        self._server = server
        self._db: psycopg.Connection[Any] | None = connection
        self._own_pid = connection.info.backend_pid  # its notifications are its own writes
        self._clock = clock
        self._lock = threading.Lock()  # the store's connection: one statement sequence at once
        self._reconnect_at = 0.0  # monotonic; the CLI's next connection attempt
        # The cache, guarded by its own lock so the listener never waits for a query.
        self._cache_lock = threading.Lock()
        self._listening = False
        self._epoch = 0
        self._accounts: dict[str, Account | None] = {}
        self._absent: dict[str, None] = {}  # names looked up that no account has
        self._bindings: dict[str, tuple[Binding, ...]] = {}  # by account name
        self._registrations: dict[str, tuple[Binding, ...]] = {}  # by AOR
        # An account changed (or may have: the cache was emptied) since the call limits last
        # asked: its max_calls may have gone from 0 to a limit (PostgresCallLimits).
        self._accounts_changed = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # Whether the database's collation orders text by code point (None: not asked yet).
        self._ids_in_code_point_order: bool | None = None
        # The indexes built outside the migrations (retention's, and the Call-ID one in a
        # database not ordered by code point) known valid, by name (asked again until they
        # are), and the thread that builds them with its connection, cancelled by close().
        self._indexed: set[str] = set()
        # CALL_ID_INDEX there invalid beside a valid hand-built one (_stale_call_id_index):
        # dropped by the holder of the build's advisory lock (_drop_stale_call_id_index).
        self._call_id_leftover = False
        self.call_id_read_whole: str | None = None
        """Why the last :meth:`call_records_of_call_id` read without an index on call_id in
        "C" order (the newest records, then, if the call was not among them, the whole
        table), said by ``voipgw calls --call-id``; None when an index answered."""
        # This node's role may not build the retention index (not call_records' owner): its
        # retention fails, saying so, until the owner builds it (_wait_for_retention_index).
        self._index_refused = False
        self._builder: threading.Thread | None = None
        self._builder_db: psycopg.Connection[Any] | None = None
        # Whose build the last attempt left the index to (None: no other session's).
        self.index_left_to: str | None = None
        """What :meth:`build_indexes` found building an index in another session (and waited
        for, if told to), when it returned False for that reason; else None."""
        self._builder_lock = threading.Lock()
        self._index_building = RETENTION_INDEX  # the builder's index, for close()'s lines
        self._told_built_elsewhere = False  # "another node builds the index" said
        self.listener_failures = FailureLog(
            log,
            f"store listener (PostgreSQL {server.description})",
            "connection attempts",
            "cache off until it is back (every account and registration read goes to the "
            f"database); reconnecting every {RECONNECT_INTERVAL:g} s",
        )
        """The listener's outage (lost, then each reconnection that fails): logged once,
        summarized every 300 s, once more when it listens again; the listener thread's only."""
        self.call_limits = PostgresCallLimits(self)
        if listen:
            self._thread = threading.Thread(
                target=self._listen, name="postgresql store listener", daemon=True
            )
            self._thread.start()

    @classmethod
    def open(
        cls,
        dsn: str,
        *,
        password: str | None = None,
        connect_timeout: int = DEFAULT_CONNECT_TIMEOUT,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        listen: bool = True,
        node: str = "",
        clock: Callable[[], float] = time.time,
        migrations: Sequence[Migration] = MIGRATIONS,
        call_id_index: bool = True,
    ) -> PostgresStore:
        """Connect to the database ``dsn`` (a libpq connection string or URI; ``password``,
        if given, replaces one in it) and bring its schema up to date.

        ``connect_timeout``: whole seconds to open a connection (libpq: at least 2).
        ``statement_timeout``: seconds any statement may take, lock waits included, before it
        is cancelled and the call raises :class:`StoreBusy`. ``listen``: keep the cache
        coherent through LISTEN/NOTIFY with a background thread, which also reopens a lost
        connection (the gateway); False: no thread, no cache, reconnect when called (the CLI).
        ``node``: the name call records this store writes carry, so a node ends only its own
        unfinished calls at start-up (:meth:`call_records_end_unfinished`).
        Call record retention's index (and, in a database not ordered by code point, the
        Call-ID one: :data:`CALL_ID_INDEX`), when the database lacks it or has an invalid one,
        is built here when call_records is small (:data:`INLINE_INDEX_BYTES`: a new database),
        else, with ``listen``, in a thread of its own (:meth:`_build_indexes`); the CLI leaves
        a big table's to the nodes. ``call_id_index`` False (``[store] call_id_index``): the
        Call-ID one is never built, nor dropped; with ``listen``, said at INFO (at WARNING for
        an invalid one, which costs every save its upkeep for nothing).
        Raises :class:`StoreUnavailable` when the server cannot be reached,
        :class:`SchemaError` for a database of a newer voipgw or one we may not change."""
        if isinstance(connect_timeout, bool) or not isinstance(connect_timeout, int):
            raise ValueError("connect_timeout must be whole seconds")
        if connect_timeout < 2:
            raise ValueError("connect_timeout must be at least 2 s (libpq's least)")
        if not round(statement_timeout * 1000) >= 1:
            # Set in whole milliseconds (_Server.connect): 0 ms is no timeout to PostgreSQL.
            raise ValueError("statement_timeout must be at least 1 ms (0 ms is no timeout)")
        _check_migrations(migrations)
        server = _Server(dsn, password, connect_timeout, statement_timeout)
        try:
            connection = server.connect()
        except BaseException:
            server.watchdog.stop()  # started with the connection (its set_config failed)
            raise
        try:
            _migrate(connection, server, migrations, clock)
        except BaseException:
            connection.close()
            # No store will close it: left running, it woke every bound for the process's life.
            server.watchdog.stop()
            raise
        store = cls(
            server, connection, clock, listen=listen, node=node, call_id_index=call_id_index
        )
        if len(migrations) >= 6:
            try:
                store._start_index_build(background=listen)
                if listen and not call_id_index:
                    store._say_call_id_index_off()
            except BaseException:
                store.close()
                raise
        return store

    def __repr__(self) -> str:
        return f"<PostgresStore {self._server.description}>"

    def close(self) -> None:
        """Stop the store's threads and close its connection, within :data:`CLOSE_WAIT` even
        when the server stops answering (its host dropping packets, its processes stopped, a
        firewall or proxy holding the connection open without forwarding): the gateway's stop
        must end before systemd's stop timeout kills it, and the call records it has not
        written with it. Each wait shares one deadline:

        - the index build's cancel (:meth:`_stop_index_build`);
        - the listener thread, which may be opening a connection for itself and then for the
          store (``connect_timeout`` each, and a connection that opened but whose first
          statement gets no answer has no bound at all): not waited for past the deadline. A
          daemon thread, it closes what it opens once it sees the store stopping;
        - a statement another thread has in progress on the store's connection, which holds
          the store's lock for as long as the server does not answer (statement_timeout is
          the server's; keepalives and tcp_user_timeout see only a host that stopped
          acknowledging, not a process stopped or a proxy that stopped forwarding). Past the
          deadline its socket is shut down: libpq finds the connection lost at once, the call
          fails with :class:`StoreUnavailable` (its records are kept for a save that will not
          come: the gateway counts them as not kept) and drops the connection itself.

        libpq's PQfinish is not waited for: psycopg opens every connection in libpq's
        nonblocking mode (psycopg/generators.py ``connect``), so the Terminate message is
        queued, not waited for, and the socket closed at once.

        What was not waited for is said in one WARNING."""
        deadline = time.monotonic() + CLOSE_WAIT
        self._stopping.set()
        self._server.watchdog.stop()  # close() bounds its own waits
        self._stop_index_build(deadline)
        not_waited: list[str] = []
        if self._thread is not None:
            self._thread.join(_left(deadline))
            if self._thread.is_alive():
                not_waited.append("the listener thread (opening a connection)")
        if self._lock.acquire(timeout=_left(deadline)):
            try:
                if self._db is not None:
                    self._db.close()
                    self._db = None
            finally:
                self._lock.release()
        else:
            db = self._db
            if db is not None and _abort(db):
                not_waited.append(
                    "a statement in progress (its connection shut down: the call fails)"
                )
        if not_waited:
            log.warning(
                "PostgreSQL %s: the store closed within %g s without waiting for %s: the"
                " server does not answer?",
                self._server.description,
                CLOSE_WAIT,
                " nor ".join(not_waited),
            )

    def _stop_index_build(self, deadline: float) -> None:
        """Cancel a build in progress and wait for it to stop, at most :data:`CANCEL_WAIT`
        (and not past ``deadline``, close()'s).

        An index build stops at a cancel (a step it had not begun then, at its check of
        _stopping): it leaves an invalid index, which the next start builds again. The cancel
        is a connection of its own (libpq's cancel request). Before libpq 17 it is made
        blocking, without connect_timeout (psycopg's ``cancel_safe`` falls back to
        ``PQcancel``; its ``timeout`` bounds only libpq 17's), so a server whose host drops
        packets held close(), and the gateway's shutdown, for the kernel's connect retries
        (about two minutes on Linux): it runs in a thread of its own, which close() does not
        wait for past the bound (a daemon thread; the process may end meanwhile)."""
        builder = self._builder
        if builder is None or not builder.is_alive():
            return
        canceller = threading.Thread(
            target=self._cancel_index_build,
            args=(builder,),
            name="postgresql index build cancel",
            daemon=True,
        )
        canceller.start()
        deadline = min(deadline, time.monotonic() + CANCEL_WAIT)
        # Until the build stops, or its cancel failed (said by the canceller), or time is up.
        while builder.is_alive() and canceller.is_alive() and time.monotonic() < deadline:
            builder.join(0.05)
        if builder.is_alive() and canceller.is_alive():
            log.warning(
                "PostgreSQL %s: the build of the index %s was not stopped within %g s (its"
                " cancel request waits for the server: out of reach?): not waited for; the"
                " next start builds it if it is left invalid",
                self._server.description,
                self._index_building,
                CANCEL_WAIT,
            )

    def _cancel_index_build(self, builder: threading.Thread) -> None:
        """Cancel the build until it stops (one sent before its next statement began would
        find nothing to cancel), or until a cancel fails."""
        while builder.is_alive():
            with self._builder_lock:  # its connection is not closed meanwhile
                if self._builder_db is not None:
                    try:
                        self._builder_db.cancel_safe(timeout=CANCEL_WAIT)
                    except self._pg.Error as exc:
                        # With the server out of reach the cancel fails, and the build with
                        # its connection. Not waited for; the store closes all the same.
                        log.warning(
                            "PostgreSQL %s: cannot cancel the build of the index %s (the next"
                            " start builds it if it is left invalid): %s",
                            self._server.description,
                            self._index_building,
                            self._server.say(exc),
                        )
                        return
            builder.join(0.1)

    def shared_call_limits(self) -> SharedCallLimits | None:
        """Counted for every node in ``call_limit_holds``: see :class:`PostgresCallLimits`."""
        return self.call_limits

    def schema_version(self) -> int:
        with self._session() as db:
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0) if row else 0

    @property
    def listening(self) -> bool:
        """Whether the cache is in use (the listener connection is up)."""
        return self._listening

    # -- the connection ---------------------------------------------------------------------

    @contextmanager
    def _session(self, *, transaction: bool = False) -> Iterator[psycopg.Connection[Any]]:
        """The store's connection, in a transaction if asked. psycopg's errors become store
        errors; a broken connection is dropped (and reopened: see :meth:`_connection`)."""
        with self._lock:
            db = self._connection()
            try:
                if transaction:
                    with db.transaction():
                        yield db
                else:
                    yield db
            except self._pg.Error as exc:
                raise self._store_error(db, exc) from None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._db is not None:
            return self._db
        if self._thread is not None:
            # The event loop must not wait for a connect: the listener thread reconnects.
            raise StoreUnavailable(
                f"PostgreSQL {self._server.description}: not connected (reconnecting); "
                "nothing was read or written"
            )
        now = time.monotonic()
        if now < self._reconnect_at:
            raise StoreUnavailable(
                f"PostgreSQL {self._server.description}: not connected; nothing was read or written"
            )
        self._reconnect_at = now + RECONNECT_INTERVAL
        self._db = self._server.connect()
        self._own_pid = self._db.info.backend_pid
        return self._db

    def _store_error(self, db: psycopg.Connection[Any], exc: Exception) -> StoreError:
        errors = self._pg.errors
        message = self._server.say(exc)
        where = f"PostgreSQL {self._server.description}"
        if isinstance(exc, errors.QueryCanceled | errors.LockNotAvailable):
            return StoreBusy(
                f"{where}: no answer within statement_timeout "
                f"({self._server.statement_timeout:g} s); nothing was written"
            )
        if isinstance(exc, errors.SerializationFailure | errors.DeadlockDetected):
            return StoreBusy(f"{where}: {message}; nothing was written")
        if getattr(db, "watch_cut", False):
            message = (
                f"no answer within {self._server.watchdog.bound:g} s (statement_timeout"
                f" + {WATCHDOG_MARGIN:g} s): connection cut (the server, or a pooler or proxy"
                " on the way, stopped answering?)"
            )
        if db.broken or db.closed:
            self._drop_connection(db)
            log.warning("%s: connection lost: %s", where, message)
            return StoreUnavailable(
                f"{where}: connection lost ({message}); the change may not have been made"
            )
        if isinstance(exc, self._pg.OperationalError):
            return StoreUnavailable(f"{where}: {message}")
        return StoreError(f"{where}: {message}")

    def _drop_connection(self, db: psycopg.Connection[Any]) -> None:
        if self._db is db:
            self._db = None
        db.close()

    # -- the cache --------------------------------------------------------------------------

    def _cached(self, table: dict[str, Any], key: str) -> tuple[Any, int]:
        """The cached value (or :data:`_MISSING`) and the epoch to fill it under."""
        with self._cache_lock:
            if not self._listening:
                return _MISSING, -1
            return table.get(key, _MISSING), self._epoch

    def _fill(self, table: dict[str, Any], key: str, value: Any, epoch: int) -> None:
        with self._cache_lock:
            if not self._listening or epoch != self._epoch:
                return  # a notification came in while it was read: it may be stale
            if table is self._accounts and value is None:
                # A name nobody has: kept apart, so names sent from the network (a REGISTER's
                # username) fill only this table, not push real accounts out of the other.
                table = self._absent
            if len(table) >= ACCOUNT_CACHE_ENTRIES:
                table.clear()
            table[key] = value

    def _forget_account(self, name: str) -> None:
        with self._cache_lock:
            self._epoch += 1
            self._accounts_changed = True
            self._accounts.pop(name, None)
            self._absent.pop(name, None)
            self._bindings.pop(name, None)
            # Its registrations by AOR (gone with the account, if it was removed).
            stale = [
                aor
                for aor, bindings in self._registrations.items()
                if any(b.account == name for b in bindings)
            ]
            for aor in stale:
                del self._registrations[aor]

    def _take_accounts_changed(self) -> bool:
        """Whether an account changed since the last call (see ``_accounts_changed``)."""
        with self._cache_lock:
            changed, self._accounts_changed = self._accounts_changed, False
        return changed

    def _forget_bindings(self, aor: str, accounts: Iterable[str]) -> None:
        with self._cache_lock:
            self._epoch += 1
            self._registrations.pop(aor, None)
            for name in accounts:
                self._bindings.pop(name, None)

    def _forget_all(self) -> None:
        with self._cache_lock:
            self._epoch += 1
            self._accounts_changed = True
            self._accounts.clear()
            self._absent.clear()
            self._bindings.clear()
            self._registrations.clear()

    def _notified(self, payload: str) -> None:
        """Drop what a notification names (payloads: the triggers of migration 1)."""
        kind, body = payload[:1], payload[1:]
        if kind == "a" and body:
            self._forget_account(body)
        elif kind == "b" and "\n" in body:
            name, _, aor = body.partition("\n")
            if name:
                self._forget_bindings(aor, [name])
            else:  # the account went first (ON DELETE CASCADE): whose, we cannot tell
                with self._cache_lock:
                    self._epoch += 1
                    self._registrations.pop(aor, None)
                    self._bindings.clear()
        else:
            self._forget_all()

    def _set_listening(self, listening: bool) -> None:
        # Either way the cache starts empty: going down, nothing more will be notified; coming
        # up, changes made while down never were.
        with self._cache_lock:
            self._listening = listening
            self._epoch += 1
            self._accounts_changed = True
            self._accounts.clear()
            self._absent.clear()
            self._bindings.clear()
            self._registrations.clear()

    # -- the listener thread ----------------------------------------------------------------

    def _listen(self) -> None:
        try:
            self._listen_until_stopped()
        except Exception:
            # A bug: the cache stays off (correct, slower) and lost connections stay lost.
            log_exception(log, "store listener thread failed: cache off, no reconnection")

    def _listen_until_stopped(self) -> None:
        pg = self._pg
        failures = self.listener_failures
        listener: psycopg.Connection[Any] | None = None
        retry_at = 0.0
        try:
            while not self._stopping.is_set():
                now = time.monotonic()
                if listener is None and now >= retry_at:
                    retry_at = now + RECONNECT_INTERVAL
                    try:
                        listener = self._server.connect(listener=True)
                        listener.execute(f"LISTEN {CHANNEL}")
                    except (StoreError, pg.Error) as exc:
                        if listener is not None:
                            listener.close()
                            listener = None
                        failures.failed(self._server.say(exc), now=self._clock())
                    else:
                        self._set_listening(True)
                        failures.answered(
                            now=self._clock(),
                            outcome="cache on (emptied first: changes made meanwhile were "
                            "never notified)",
                        )
                self._reconnect_store()
                if listener is None:
                    self._stopping.wait(LISTENER_POLL)
                    continue
                try:
                    for notification in listener.notifies(timeout=LISTENER_POLL):
                        if notification.pid != self._own_pid:
                            self._notified(notification.payload)
                except pg.Error as exc:
                    self._set_listening(False)
                    failures.failed(f"connection lost: {self._server.say(exc)}", now=self._clock())
                    listener.close()
                    listener = None
                    retry_at = time.monotonic() + RECONNECT_INTERVAL
        finally:
            self._set_listening(False)
            if listener is not None:
                listener.close()

    def _reconnect_store(self) -> None:
        """Reopen the store's connection if a call found it lost, at most once a second (not
        once the store is closing: close() does not wait for a connect)."""
        if self._stopping.is_set():
            return
        if self._db is not None or time.monotonic() < self._reconnect_at:
            return
        self._reconnect_at = time.monotonic() + RECONNECT_INTERVAL
        try:
            connection = self._server.connect()
        except StoreUnavailable:
            return  # said when the connection was lost; tried again in a second
        with self._lock:
            # Not once the store is closing: close() has closed (or is closing) the last one.
            if self._db is None and not self._stopping.is_set():
                self._db = connection
                self._own_pid = connection.info.backend_pid
                log.info("PostgreSQL %s: connected again", self._server.description)
                return
        connection.close()

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
        try:
            with self._session(transaction=True) as db:
                try:
                    row = db.execute(
                        "INSERT INTO accounts (name, display_name, enabled, media_policy,"
                        " require_tls, max_calls, created_at, updated_at)"
                        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                        (
                            name,
                            fields["display_name"],
                            fields["enabled"],
                            fields["media_policy"],
                            fields["require_tls"],
                            fields["max_calls"],
                            now,
                            now,
                        ),
                    ).fetchone()
                except self._pg.errors.UniqueViolation:
                    raise AccountExists(f"account {name!r} already exists") from None
                assert row is not None
                _insert_credentials(db, row[0], credentials)
                account = _load_account(db, name)
        finally:
            self._forget_account(name)
        assert account is not None
        return account

    def accounts_list(self) -> tuple[Account, ...]:
        with self._session() as db:
            names = [row[0] for row in db.execute("SELECT name FROM accounts ORDER BY name")]
            loaded = [_load_account(db, name) for name in names]
        return tuple(account for account in loaded if account is not None)

    def get_account(self, name: str) -> Account | None:
        """The account, from memory while the listener is up (see the module's docstring)."""
        cached, epoch = self._cached(self._accounts, name)
        if cached is _MISSING:
            cached, epoch = self._cached(self._absent, name)
        if cached is not _MISSING:
            return cast(Account | None, cached)
        with self._session() as db:
            account = _load_account(db, name)
        self._fill(self._accounts, name, account, epoch)
        return account

    def accounts_set(self, name: str, **fields: Any) -> Account:
        """Change account fields; see :meth:`Store.accounts_set`."""
        checked = rules.check_fields(fields)
        now = self._clock()
        try:
            with self._session(transaction=True) as db:
                account_id = _account_id(db, name)
                columns = {
                    key: value
                    for key, value in checked.items()
                    if key
                    in ("display_name", "enabled", "media_policy", "require_tls", "max_calls")
                }
                columns["updated_at"] = now
                assignments = ", ".join(f"{column} = %s" for column in columns)
                db.execute(
                    f"UPDATE accounts SET {assignments} WHERE id = %s",
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
                                " WHERE account_id = %s ORDER BY realm",
                                (account_id,),
                            )
                        ]
                    db.execute(
                        "DELETE FROM account_credentials WHERE account_id = %s", (account_id,)
                    )
                    credentials = rules.derive_credentials(name, checked["password"], realms)
                    _insert_credentials(db, account_id, credentials)
                if "certificate_matches" in checked:
                    db.execute(
                        "DELETE FROM account_certificates WHERE account_id = %s", (account_id,)
                    )
                    with db.cursor() as cursor:
                        cursor.executemany(
                            "INSERT INTO account_certificates (account_id, kind, value)"
                            " VALUES (%s, %s, %s)",
                            [(account_id, m.kind, m.value) for m in checked["certificate_matches"]],
                        )
                account = _load_account(db, name)
        finally:
            self._forget_account(name)
        assert account is not None
        return account

    def accounts_remove(self, name: str) -> None:
        try:
            with self._session(transaction=True) as db:
                account_id = _account_id(db, name)
                db.execute("DELETE FROM accounts WHERE id = %s", (account_id,))
        finally:
            self._forget_account(name)

    # -- registrations ----------------------------------------------------------------------

    def registrations_for(self, aor: str, *, now: float | None = None) -> tuple[Binding, ...]:
        """Bindings of ``aor``, best first, from memory under the rule of :meth:`get_account`."""
        cached, epoch = self._cached(self._registrations, aor)
        if cached is not _MISSING:
            return _unexpired(cached, now)
        with self._session() as db:
            bindings = _select_bindings(db, "r.aor = %s", (aor,))
        self._fill(self._registrations, aor, bindings, epoch)
        return _unexpired(bindings, now)

    def bindings_for_account(
        self, account: str, *, now: float | None = None
    ) -> tuple[Binding, ...]:
        """The account's bindings (unexpired at ``now`` if given), best first; from memory
        under the rule of :meth:`get_account`."""
        cached, epoch = self._cached(self._bindings, account)
        if cached is not _MISSING:
            return _unexpired(cached, now)
        with self._session() as db:
            bindings = _select_bindings(db, "a.name = %s", (account,))
        self._fill(self._bindings, account, bindings, epoch)
        return _unexpired(bindings, now)

    def binding_expiries(self, accounts: Sequence[str], *, now: float) -> dict[str, list[float]]:
        """See :meth:`Store.binding_expiries`: one round trip (the names as one array
        parameter), the cache neither read nor filled."""
        names = list(dict.fromkeys(accounts))
        if len(names) > MAX_BULK_ACCOUNTS:
            raise ValueError(f"at most {MAX_BULK_ACCOUNTS} accounts a call, not {len(names)}")
        found: dict[str, list[float]] = {name: [] for name in names}
        if not names:
            return found
        with self._session() as db:
            rows = db.execute(
                "SELECT a.name, r.expires_at FROM accounts a"
                " JOIN registrations r ON r.account_id = a.id"
                " WHERE a.name = ANY(%s) AND r.expires_at > %s",
                (names, now),
            ).fetchall()
        for name, expires_at in rows:
            found[name].append(expires_at)
        return found

    def upsert_binding(self, binding: Binding) -> None:
        self.apply_binding_changes(binding.aor, [binding], ())

    def remove_binding(self, aor: str, key: str) -> bool:
        removed: list[str] = []
        try:
            with self._session(transaction=True) as db:
                rows = db.execute(
                    "DELETE FROM registrations r USING accounts a"
                    " WHERE a.id = r.account_id AND r.aor = %s AND r.binding_key = %s"
                    " RETURNING a.name",
                    (aor, key),
                ).fetchall()
                removed = [row[0] for row in rows]
        finally:
            self._forget_bindings(aor, removed)
        return bool(removed)

    def apply_binding_changes(
        self, aor: str, upserts: Sequence[Binding], removals: Iterable[str]
    ) -> None:
        for binding in upserts:
            if binding.aor != aor:
                raise InvalidValue("every upserted binding must belong to the given AOR")
        keys = list(removals)
        touched = {binding.account for binding in upserts}
        try:
            with self._session(transaction=True) as db:
                # Whose bindings of this AOR there were: their cached lists change too.
                touched.update(
                    row[0]
                    for row in db.execute(
                        "SELECT DISTINCT a.name FROM registrations r"
                        " JOIN accounts a ON a.id = r.account_id WHERE r.aor = %s",
                        (aor,),
                    )
                )
                if keys:
                    db.execute(
                        "DELETE FROM registrations WHERE aor = %s AND binding_key = ANY(%s)",
                        (aor, keys),
                    )
                for binding in upserts:
                    _upsert(db, binding)
        finally:
            self._forget_bindings(aor, touched)

    def expire_bindings(self, now: float, *, most: int | None = None) -> tuple[Binding, ...]:
        if most is not None and most < 1:
            raise ValueError("most must be at least 1")
        expired: tuple[Binding, ...] = ()
        try:
            with self._session() as db:
                # Every node expires: each row is deleted by the first node to lock it, and
                # the others skip it rather than wait for that node's clean-up (SKIP LOCKED).
                # LIMIT NULL is no limit (PostgreSQL docs, SELECT: LIMIT ALL).
                rows = db.execute(
                    "DELETE FROM registrations r USING accounts a WHERE a.id = r.account_id"
                    " AND r.id IN (SELECT id FROM registrations WHERE expires_at <= %s"
                    " ORDER BY expires_at, id LIMIT %s"
                    f" FOR UPDATE SKIP LOCKED) RETURNING {_BINDING_COLUMNS}",
                    (now, most),
                ).fetchall()
                expired = tuple(_binding(row) for row in rows)
        finally:
            for binding in expired:
                self._forget_bindings(binding.aor, [binding.account])
        return expired

    def count_bindings(self, now: float) -> int:
        """Unexpired bindings of every node (what a monitoring scrape asks; not cached)."""
        with self._session() as db:
            row = db.execute(
                "SELECT COUNT(*) FROM registrations WHERE expires_at > %s", (now,)
            ).fetchone()
        return int(row[0]) if row is not None else 0

    # -- call records -----------------------------------------------------------------------

    def call_record_insert(self, record: CallRecord) -> None:
        _check_json(record.security_json)
        with self._session(transaction=True) as db:
            try:
                db.execute(_INSERT_CALL_RECORD, _call_record_values(record, self.node))
            except self._pg.errors.UniqueViolation:
                raise CallRecordExists(f"call {record.call_id!r} already has a record") from None

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
        with self._session(transaction=True) as db:
            if columns:
                assignments = ", ".join(f"{column} = %s" for column in columns)
                db.execute(
                    f"UPDATE call_records SET {assignments} WHERE call_id = %s",
                    (*columns.values(), call_id),
                )
            record = _load_call_record(db, call_id)
        if record is None:
            raise CallRecordNotFound(f"no record for call {call_id!r}")
        return record

    def call_records_save(self, records: Sequence[CallRecord]) -> None:
        if not records:
            return
        with self._session(transaction=True) as db, db.cursor() as cursor:
            try:
                cursor.executemany(
                    _INSERT_CALL_RECORD
                    + " ON CONFLICT (call_id) DO UPDATE SET from_uri = excluded.from_uri,"
                    " to_uri = excluded.to_uri, started_at = excluded.started_at,"
                    " answered_at = excluded.answered_at, ended_at = excluded.ended_at,"
                    " end_reason = excluded.end_reason, security = excluded.security",
                    [_call_record_values(record, self.node) for record in records],
                )
            except self._pg.errors.InvalidTextRepresentation:
                # The json column refuses a record that is not JSON: the batch rolls back.
                raise InvalidValue("security_json is not valid JSON") from None

    def call_records_end_unfinished(self, ended_at: float, reason: str) -> int:
        with self._session() as db:
            cursor = db.execute(
                "UPDATE call_records SET ended_at = %s, end_reason = %s"
                " WHERE ended_at IS NULL AND node = %s",
                (ended_at, reason, self.node),
            )
            return int(cursor.rowcount)

    def call_record_get(self, call_id: str) -> CallRecord | None:
        with self._session() as db:
            return _load_call_record(db, call_id)

    def call_records_recent(self, limit: int = 100) -> tuple[CallRecord, ...]:
        with self._session() as db:
            rows = db.execute(
                f"SELECT {_CALL_COLUMNS} FROM call_records ORDER BY started_at DESC, id DESC"
                " LIMIT %s",
                (max(0, limit),),
            ).fetchall()
        return tuple(_call_record(row) for row in rows)

    def call_records_of_call_id(self, call_id: str, limit: int = 100) -> tuple[CallRecord, ...]:
        first, beyond = call_id_range(call_id)
        wanted = (call_id, first, beyond, len(first) + 1, max(0, limit))
        self.call_id_read_whole = None
        with self._session() as db:
            if self._ids_in_code_point_order is None:
                self._ids_in_code_point_order = _collates_in_code_point_order(db)
            # A range of ids is the Call-ID's records only in code point order ("C"): in a
            # database's linguistic collation (en_US, ICU) "X;tag" need not sort between "X;"
            # and "X<" (glibc's en_US ignores punctuation at first: "X;z" sorts after "X<"),
            # and a record would be missed. A database collated "C" reads the range through
            # the UNIQUE index on call_id.
            if self._ids_in_code_point_order:
                rows = db.execute(_call_id_query(collated=False), wanted).fetchall()
                return tuple(_call_record(row) for row in rows)
            # Any other compares in "C", which that index (of the database's collation) cannot
            # answer, but CALL_ID_INDEX can, once a node (or the operator) has built it.
            if CALL_ID_INDEX not in self._indexed and _call_id_index_valid(db) is True:
                self._indexed.add(CALL_ID_INDEX)
            if CALL_ID_INDEX in self._indexed:
                rows = db.execute(_call_id_query(collated=True), wanted).fetchall()
                return tuple(_call_record(row) for row in rows)
            # Until then: the newest records first (the started_at index: where the call asked
            # about usually is, and all that was looked at before session 41), the whole table
            # only when none of them is the call, which statement_timeout may end on a big
            # table (docs/operations.md).
            newest = max(limit, CALL_ID_NEWEST_FIRST)
            self.call_id_read_whole = (
                "[store] call_id_index = false"
                if not self._call_id_index
                else "not built yet: the nodes build it"
            )
            rows = db.execute(
                _call_id_query(collated=True, newest=True), (newest, *wanted)
            ).fetchall()
        if rows:
            return tuple(_call_record(row) for row in rows)
        try:
            with self._session() as db:
                rows = db.execute(_call_id_query(collated=True), wanted).fetchall()
        except StoreBusy as exc:
            raise type(exc)(
                f"{exc}; none of the newest {newest} call records has Call-ID {call_id}, and"
                " the older ones are read whole under this database's collation, which is not"
                f' "C", until the index {CALL_ID_INDEX} on call_id COLLATE "C" is built'
                + (
                    " (the nodes build it; docs/operations.md)"
                    if self._call_id_index
                    else " (by hand: [store] call_id_index = false, so no node builds it;"
                    " docs/operations.md)"
                )
            ) from None
        return tuple(_call_record(row) for row in rows)

    def expire_call_records(self, before: float, *, most: int) -> int:
        if most < 1:
            raise ValueError("most must be at least 1")
        self._wait_for_retention_index()
        with self._session() as db:
            # Every node deletes, any node's records; a row another node is deleting is
            # skipped rather than waited for, and deleted by whichever gets it.
            cursor = db.execute(
                "DELETE FROM call_records WHERE id IN (SELECT id FROM call_records"
                " WHERE COALESCE(ended_at, started_at) < %s"
                " ORDER BY COALESCE(ended_at, started_at) LIMIT %s FOR UPDATE SKIP LOCKED)",
                (before, most),
            )
            return int(cursor.rowcount)

    def oldest_call_record(self) -> float | None:
        self._wait_for_retention_index()
        with self._session() as db:
            # The first entry of migration 6's index: no record read.
            row = db.execute(
                "SELECT COALESCE(ended_at, started_at) FROM call_records"
                " ORDER BY COALESCE(ended_at, started_at) LIMIT 1"
            ).fetchone()
        return None if row is None else float(row[0])

    def _wait_for_retention_index(self) -> None:
        """Raise :class:`StoreIndexing` while the retention index is not built (or is invalid):
        without it, each delete or look-up of the oldest record reads the whole table, on the
        event loop, and fails its statement_timeout on a big one. Asked of the database (one
        catalog look-up) until it is there: another node, or the operator, may be building
        it. :class:`StoreError` instead when this node's role may not build it: nothing will
        unless the owner does, a failure to say, not a wait."""
        if RETENTION_INDEX in self._indexed:
            return
        with self._session() as db:
            if _index_valid(db) is True:
                self._indexed.add(RETENTION_INDEX)
                return
            refused = _in_schema(db, _NOT_OWNER) if self._index_refused else None
        if refused is not None:
            raise StoreError(f"PostgreSQL {self._server.description}: {refused}")
        raise StoreIndexing(
            f"PostgreSQL {self._server.description}: the index {RETENTION_INDEX} is being"
            " built (CREATE INDEX CONCURRENTLY, by the first node to start with it missing"
            " or invalid); call records are deleted once it is"
        )

    def _wanted_indexes(self, db: psycopg.Connection[Any] | None = None) -> tuple[_Index, ...]:
        """The indexes this database should have beyond the migrations': retention's, and the
        Call-ID one unless the database orders text by code point (asked first, if not yet:
        over ``db``, the caller's session, else over one of its own)."""
        if self._ids_in_code_point_order is None:
            if db is None:
                with self._session() as own:
                    self._ids_in_code_point_order = _collates_in_code_point_order(own)
            else:
                self._ids_in_code_point_order = _collates_in_code_point_order(db)
        if self._ids_in_code_point_order or not self._call_id_index:
            return (RETENTION,)
        return (RETENTION, CALL_ID)

    def _say_call_id_index_off(self) -> None:
        """Say, at a node's start with ``[store] call_id_index = false`` in a database not
        ordered by code point, what it leaves: an index on call_id COLLATE "C" already there
        is left alone (valid: ``voipgw calls --call-id`` reads through it, every save keeps
        it up; invalid: every save keeps it up and it answers nothing), and without a valid
        one ``voipgw calls --call-id`` reads the newest records, then the whole table."""
        with self._session() as db:
            if self._ids_in_code_point_order is None:
                self._ids_in_code_point_order = _collates_in_code_point_order(db)
            if self._ids_in_code_point_order:
                return  # the UNIQUE index on call_id answers: nothing is left out
            indexes = _call_id_indexes(db)
            building = _being_built(db) if any(not ok for _, ok in indexes) else set()
            qualified = {name: _on_call_records(db, name) for name, _ in indexes}
            owner = _call_records_owner(db)
        where = f"PostgreSQL {self._server.description}: [store] call_id_index = false"
        # Every valid one is named, each with the statement that drops it: the operator who
        # built a second by hand (or kept ours beside one) pays every save's upkeep of both.
        for name in [name for name, ok in indexes if ok]:
            log.info(
                '%s: the index %s on call_id COLLATE "C" is there and left alone'
                " (`voipgw calls --call-id` reads through it; every call record save keeps it"
                " up: DROP INDEX CONCURRENTLY %s drops it)",
                where,
                name,
                qualified[name],
            )
        if not any(ok for _, ok in indexes):
            log.info(
                "%s: the index %s is not built: %s (seconds on millions of records;"
                " docs/operations.md, 'Calls and log lines')",
                where,
                CALL_ID_INDEX,
                _WITHOUT_CALL_ID_INDEX,
            )
        for name in [name for name, ok in indexes if not ok]:
            if name in building:
                # An operator's CREATE INDEX CONCURRENTLY: invalid until it is done, not a
                # leftover; said, not warned of (it is what the operator asked for).
                log.info(
                    '%s: the index %s on call_id COLLATE "C" is being built by another session'
                    " (CREATE INDEX CONCURRENTLY in progress) and left to it",
                    where,
                    name,
                )
                continue
            # Said at each start while it is there (no node drops it with the key false), so
            # with what ends it: the statement, and the role that may run it.
            log.warning(
                '%s: the index %s on call_id COLLATE "C" is there invalid (an interrupted'
                " build) and left alone: it answers nothing, but every call record save keeps"
                " it up; DROP INDEX CONCURRENTLY %s drops it (run as %s, the owner of"
                " call_records, outside a transaction)",
                where,
                name,
                qualified[name],
                owner,
            )

    @property
    def stale_call_id_index(self) -> bool:
        """Whether :data:`CALL_ID_INDEX` was last seen invalid beside a valid index on call_id
        COLLATE "C" of another name and is not dropped yet (:meth:`_drop_stale_call_id_index`;
        ``voipgw migrate-store`` says so when interrupted)."""
        return self._call_id_leftover

    def wanted_indexes(self) -> list[str]:
        """The names of the indexes :meth:`build_indexes` builds in this database, in order."""
        return [index.name for index in self._wanted_indexes()]

    def missing_indexes(self, *, ask: bool = True) -> list[str]:
        """The names of the indexes :meth:`build_indexes` builds that are not known valid,
        each asked of the database again (one catalog look-up), unless not to ``ask``."""
        if ask:
            with self._session() as db:
                self._look_at_indexes(db)
        return [name for name in self.wanted_indexes() if name not in self._indexed]

    def _look_at_indexes(self, db: psycopg.Connection[Any]) -> None:
        """Note the wanted indexes ``db`` shows valid (another node, or the operator, may have
        built them since)."""
        wanted = self._wanted_indexes(db)
        for index in wanted:
            if index.name not in self._indexed and _valid(db, index) is True:
                self._indexed.add(index.name)
        self._call_id_leftover = CALL_ID in wanted and _stale_call_id_index(_call_id_indexes(db))

    def build_indexes(self, *, wait: float = 0.0) -> bool:
        """Build call record retention's index, and in a database not ordered by code point
        the Call-ID one (:data:`CALL_ID_INDEX`), now, in the caller's thread, whatever the
        table's size, and wait for them (``voipgw migrate-store``: run as the owner of
        call_records, it builds the indexes nodes whose role does not own the table cannot).

        Another session's build in progress (a node's, holding the build's advisory lock, or
        a ``CREATE INDEX CONCURRENTLY`` run by hand) is waited for up to ``wait`` seconds,
        looked at every :data:`INDEX_BUILD_POLL` (a progress line at INFO every
        :data:`INDEX_WAIT_PROGRESS`); once it is over, an index it left valid is taken, one it
        left invalid (it failed, or was cancelled) or none is built here. Only while the
        retention index is missing: another session's build of the Call-ID index alone is not
        waited for (that session finishes it; the index only speeds ``voipgw calls
        --call-id``, and an upgrade script must not wait minutes for it). True once every one
        is valid; False when one is not (:meth:`missing_indexes` names them;
        :attr:`index_left_to` names the build left to, when that is why; a build that failed
        or a role that may not build it: logged)."""
        deadline = time.monotonic() + max(0.0, wait)
        where = f"PostgreSQL {self._server.description}"
        said_at: float | None = None
        started = time.monotonic()
        while True:
            self.index_left_to = None
            if self.missing_indexes() or self._call_id_leftover:
                self._build_indexes(deadline=deadline)
            missing = self.missing_indexes()
            if RETENTION_INDEX not in missing or self.index_left_to is None:
                return not missing
            if time.monotonic() >= deadline:
                return False
            # Left to another session's build: wait for it to end, then look again (built by
            # it, or to build here).
            while self._index_built_elsewhere():
                now = time.monotonic()
                if now >= deadline:
                    return False
                if said_at is None:
                    said_at = now
                    log.info(
                        "%s: waiting up to %g s for %s to end", where, wait, self.index_left_to
                    )
                elif now - said_at >= INDEX_WAIT_PROGRESS:
                    said_at = now
                    log.info(
                        "%s: still waiting for %s (%.0f s so far, at most %g s)",
                        where,
                        self.index_left_to,
                        now - started,
                        wait,
                    )
                time.sleep(min(INDEX_BUILD_POLL, _left(deadline)))
            if said_at is not None:
                log.info("%s: %s is over: looking at the index again", where, self.index_left_to)

    def _index_built_elsewhere(self) -> bool:
        """Whether another session holds the build's advisory lock (a node building the index)
        or builds an index on call_records (:func:`_index_build_running`)."""
        with self._session() as db:
            # pg_locks shows a bigint advisory key as classid (high half), objid (low half)
            # and objsubid 1 (PostgreSQL docs, pg_locks).
            row = db.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND classid = %s AND objid = %s AND objsubid = 1 AND pid <> pg_backend_pid()",
                (_INDEX_LOCK >> 32, _INDEX_LOCK & 0xFFFFFFFF),
            ).fetchone()
            return bool(row and int(row[0]) > 0) or _index_build_running(db)

    def _start_index_build(self, *, background: bool) -> None:
        with self._session() as db:
            self._look_at_indexes(db)
            row = db.execute("SELECT pg_relation_size('call_records')").fetchone()
        # Nothing to build, and no invalid leftover of ours to drop (_build_indexes).
        if not self._call_id_leftover and all(
            index.name in self._indexed for index in self._wanted_indexes()
        ):
            return
        # A small table's while the store opens, bounded: CREATE INDEX CONCURRENTLY waits for
        # every older transaction of the database (one idle in a transaction, a pg_dump),
        # which must not hold the start. Out of time, it goes to the thread as a big one's.
        small = row is not None and int(row[0]) <= INLINE_INDEX_BYTES
        if small and self._build_indexes(bounded=True):
            return
        if not background:
            return
        self._builder = threading.Thread(
            target=self._build_indexes, name="postgresql index build", daemon=True
        )
        self._builder.start()

    def _build_indexes(self, *, bounded: bool = False, deadline: float | None = None) -> bool:
        """Build the indexes of :meth:`_wanted_indexes` the database lacks (or has invalid),
        one after the other, with ``CREATE INDEX CONCURRENTLY`` (PostgreSQL docs, "Building
        Indexes Concurrently"): writers do not wait for it, so the nodes' saves go on; it may
        take minutes on tens of millions of records, so no statement_timeout, and the node
        serves meanwhile (retention waits: :meth:`_wait_for_retention_index`; a look-up by
        Call-ID reads as without the index: :meth:`call_records_of_call_id`).

        One node builds them: the holder of a session advisory lock, which a start's bounded
        build tries for (not waits for) and a node's background build waits for; the others
        find them built then. Only the holder looks at an existing index
        (:meth:`_build_index`): an index being built concurrently shows as invalid, so another
        node dropping it would undo a build in progress.

        ``bounded`` (a small table's, while the store opens): under ``statement_timeout``, as
        the build also waits for every transaction of the database older than it (PostgreSQL
        docs, "Building Indexes Concurrently"), which may be one left open for hours; False
        when it ran out (the invalid index it leaves is dropped by the next build) or another
        session's build or advisory lock is to be waited for (by the background build), else
        True. The background build waits for the advisory lock (looked at every
        :data:`INDEX_BUILD_POLL`) and then looks at the indexes: built by the holder, they are
        taken; left invalid or missing (the holder was a start's bounded try, which gives up
        at statement_timeout), they are built here.

        ``deadline`` (:meth:`build_indexes`, which waits itself, saying so): another
        session's build is not waited for here; :attr:`index_left_to` names it."""
        to_build = [index for index in self._wanted_indexes() if index.name not in self._indexed]
        if not to_build and not self._call_id_leftover:
            return True
        # What the lines about the lock name, as before session 42 (the Call-ID index when
        # only its invalid leftover is to drop).
        failing = to_build[0] if to_build else CALL_ID
        first = failing.name
        where = f"PostgreSQL {self._server.description}"
        try:
            db = self._server.connect(purpose="index build")
        except StoreError as exc:
            log.warning(
                "%s: the index %s is not built (the next start tries): %s", where, first, exc
            )
            return True
        with self._builder_lock:
            if self._stopping.is_set():
                db.close()
                return True
            self._builder_db = db
        try:
            if not bounded:
                db.execute("SET statement_timeout = 0")
            row = db.execute("SELECT pg_try_advisory_lock(%s)", (_INDEX_LOCK,)).fetchone()
            if row is None or not row[0]:
                # Once per store: migrate-store tries at the store's opening and again at its
                # build, and the line said twice read as two nodes building.
                if not self._told_built_elsewhere:
                    self._told_built_elsewhere = True
                    log.info("%s: another node builds the index %s", where, first)
                self.index_left_to = (
                    f"another node's build of the index {first} (it holds the build's"
                    " advisory lock)"
                )
                if bounded:
                    return False  # the background build waits for the holder
                if deadline is not None:
                    return True
                # A node's background build waits for the lock instead of leaving the index
                # to its holder: that may be no node's background build but a start's bounded
                # try (another node's, a voipgw command's) or this node's own just closed (its
                # backend not yet gone), each giving up at statement_timeout while an older
                # transaction is open, after which no node built the index until a restart.
                while not self._stopping.wait(INDEX_BUILD_POLL):
                    row = db.execute("SELECT pg_try_advisory_lock(%s)", (_INDEX_LOCK,)).fetchone()
                    if row is not None and row[0]:
                        break
                else:
                    return True
                self.index_left_to = None
            if self._call_id_leftover:
                done = self._drop_stale_call_id_index(db, bounded=bounded)
                if done is not None:
                    return done
            for index in to_build:
                done = self._build_index(db, index, bounded=bounded, deadline=deadline)
                if done is not None:
                    return done
                if db.broken or self._stopping.is_set():
                    return True  # said by _build_index; the next start builds what is left
        except self._pg.Error as exc:
            # The lock's statements (not an index's build: _build_index says its own).
            if self._stopping.is_set():
                log.info(
                    "%s: building the index %s stopped with the store; the next start builds it",
                    where,
                    first,
                )
            else:
                log.log(
                    failing.failed_level,
                    "%s: building the index %s failed: %s; %s",
                    where,
                    first,
                    self._server.say(exc),
                    failing.failed,
                )
        finally:
            with self._builder_lock:
                self._builder_db = None
            db.close()  # the advisory lock goes with the session
        return True

    def _say_build_estimate(self, db: psycopg.Connection[Any], index: _Index) -> None:
        """Say (INFO) how big call_records is and about how long building ``index`` takes,
        before :meth:`build_indexes` (``voipgw migrate-store``) builds it in the foreground,
        whatever the table's size (session 43's decision: the operator started the run to
        bring the database up to date, ``CONCURRENTLY`` holds no node's saves, and Ctrl-C stops
        it cleanly, the nodes' next start building it; left to the nodes, one of them would
        build it in a thread anyway). The records are the planner's estimate
        (pg_class.reltuples: no count of the table), else about 1 KiB each."""
        row = db.execute(
            "SELECT GREATEST(reltuples, 0)::bigint, pg_table_size(oid) FROM pg_class"
            " WHERE oid = to_regclass('call_records')"
        ).fetchone()
        records, size = (0, 0) if row is None else (int(row[0]), int(row[1]))
        if records == 0:
            records = size // 1024  # never analysed: about 1 KiB a record
        seconds = max(1.0, records / 1e6 * INDEX_BUILD_SECONDS_PER_MILLION)
        log.info(
            "PostgreSQL %s: the index %s is built here, in the foreground, over call_records"
            " (about %s records, %s MiB): about %.0f s at %g s a million records on 2 vCPUs"
            " (docs/benchmarks.md), longer under load or while older transactions stay open;"
            " the nodes serve and save meanwhile; Ctrl-C stops it and a node's next start"
            " builds it",
            self._server.description,
            index.name,
            f"{records:,}",
            f"{size / 2**20:,.0f}",
            seconds,
            INDEX_BUILD_SECONDS_PER_MILLION,
        )

    def _drop_stale_call_id_index(
        self, db: psycopg.Connection[Any], *, bounded: bool
    ) -> bool | None:
        """Drop :data:`CALL_ID_INDEX` left invalid beside a valid index on call_id COLLATE "C"
        of another name (:func:`_stale_call_id_index`), over ``db``, which holds the build's
        advisory lock, so no node's build of it is under way; an operator's ``CREATE INDEX
        CONCURRENTLY`` of that name, which takes no advisory lock and shows as invalid until
        done, is left to finish (:func:`_index_build_running`). ``DROP INDEX CONCURRENTLY``:
        the saves do not wait for it, but it waits for the transactions open on the table.
        None when done (dropped, or nothing to drop, or failed: said), else what
        :meth:`_build_indexes` returns now (False: ``bounded`` and out of time, left to the
        node's background build; True: stopping)."""
        pg = self._pg
        where = f"PostgreSQL {self._server.description}"
        indexes = _call_id_indexes(db)
        if not _stale_call_id_index(indexes):
            self._call_id_leftover = False
            return None
        if _index_build_running(db):
            log.info(
                "%s: the index %s is invalid beside a valid one, but another session builds an"
                " index on call_records (CREATE INDEX CONCURRENTLY run by hand?): left to it;"
                " the next start drops it if it is still invalid",
                where,
                CALL_ID_INDEX,
            )
            return None
        valid = next(name for name, ok in indexes if ok)
        # Said as dropped once it is (a WARNING saying so before the DROP stood in the log
        # when statement_timeout ended it, or it failed): INFO meanwhile, as the DROP waits
        # for the transactions open on call_records, which may be long.
        log.info(
            "%s: dropping the index %s concurrently (invalid beside the valid index %s;"
            " it waits for the transactions open on call_records to end)",
            where,
            CALL_ID_INDEX,
            valid,
        )
        # Asked before the DROP: its failure may be the session's end (the server restarted,
        # the watchdog cutting it), over which the failure's line could then ask nothing.
        dropped_by = _on_call_records(db, CALL_ID_INDEX)
        owner = _call_records_owner(db)
        try:
            db.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {dropped_by}")
        except pg.Error as exc:
            if bounded and isinstance(exc, pg.errors.QueryCanceled):
                log.info(
                    "%s: the index %s not dropped within statement_timeout (it waits for older"
                    " transactions of the database to end): left to a node's background build",
                    where,
                    CALL_ID_INDEX,
                )
                return False
            if self._stopping.is_set():
                return True
            if isinstance(exc, pg.errors.InsufficientPrivilege):
                # Only the owner may drop it: no start of this node will, and this is said at
                # each (once), so with what ends it.
                log.warning(
                    "%s: the index %s is invalid (an interrupted build left it) beside the"
                    ' valid index %s on call_id COLLATE "C" and this node\'s role may not drop'
                    " it (it answers nothing, but every call record save keeps it up): run, as"
                    " %s, the owner of call_records, outside a transaction: DROP INDEX"
                    " CONCURRENTLY %s",
                    where,
                    CALL_ID_INDEX,
                    valid,
                    owner,
                    dropped_by,
                )
                return None
            log.warning(
                "%s: dropping the index %s failed: %s; the next start tries again (or, as the"
                " owner of call_records (%s), outside a transaction: DROP INDEX CONCURRENTLY"
                " %s)",
                where,
                CALL_ID_INDEX,
                self._server.say(exc),
                owner,
                dropped_by,
            )
            return None
        log.warning(
            "%s: the index %s is invalid (an interrupted build left it) beside the valid index"
            ' %s on call_id COLLATE "C", which answers in its place: dropped (it answered'
            " nothing, and every call record save kept it up)",
            where,
            CALL_ID_INDEX,
            valid,
        )
        self._call_id_leftover = False
        return None

    def _build_index(
        self,
        db: psycopg.Connection[Any],
        index: _Index,
        *,
        bounded: bool,
        deadline: float | None,
    ) -> bool | None:
        """Build ``index`` over ``db``, which holds the build's advisory lock: None when it is
        built, or its build failed (said: the next index is built all the same), else what
        :meth:`_build_indexes` returns now (True: stopping, or left to another session with a
        ``deadline``; False: ``bounded`` and out of time or left to another session).

        An interrupted build (the node stopped or killed, the server restarted) leaves an
        invalid index, which ``IF NOT EXISTS`` would keep: it is dropped (``DROP INDEX
        CONCURRENTLY``) and built again, unless another session is building an index on
        call_records (:func:`_index_build_running`): an operator's hand-run ``CREATE INDEX
        CONCURRENTLY`` takes no advisory lock. That build is waited for, and its index dropped
        and built again if it failed. A role that does not own call_records may not build it:
        said with the remedy (retention then fails saying so: :meth:`_wait_for_retention_index`)."""
        pg = self._pg
        where = f"PostgreSQL {self._server.description}"
        self._index_building = index.name
        try:
            valid = _valid(db, index)
            if valid is True:
                self._indexed.add(index.name)
                return None
            if valid is False and _index_build_running(db):
                # An operator's CREATE INDEX CONCURRENTLY (as the docs suggest) takes no
                # advisory lock: its index is invalid until it is done, as an interrupted
                # build's is. Dropped, that build would be undone: waited for (a start's
                # bounded build leaves the wait to the background one), then looked at again,
                # so that one which failed (an invalid index again) is built here.
                log.info(
                    "%s: the index %s is being built by another session (CREATE INDEX"
                    " CONCURRENTLY run by hand?): left to it%s; %s",
                    where,
                    index.name,
                    "" if bounded else ", built here if it fails",
                    index.once_built,
                )
                if bounded:
                    return False
                if deadline is not None:
                    self.index_left_to = (
                        "another session's build of an index on call_records (CREATE INDEX"
                        " CONCURRENTLY run by hand?)"
                    )
                    return True
                while _index_build_running(db):
                    if self._stopping.wait(INDEX_BUILD_POLL):
                        return True
                valid = _valid(db, index)
                if valid is True:
                    self._indexed.add(index.name)
                    return None
            if valid is False:
                log.warning(
                    "%s: the index %s is invalid (an interrupted build left it): dropped and"
                    " built again",
                    where,
                    index.name,
                )
                # Each was found in call_records' schema (_call_id_indexes, _index_valid):
                # dropped there, not wherever the search_path first finds its name.
                db.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {_on_call_records(db, index.name)}")
            if self._stopping.is_set():
                return True
            if deadline is not None:
                self._say_build_estimate(db, index)
            log.info(
                "%s: building the index %s concurrently (%s)", where, index.name, index.meanwhile
            )
            started = time.monotonic()
            db.execute(index.create)
            if _valid(db, index) is not True:
                # IF NOT EXISTS kept an index of that name on something else (made by hand).
                log.warning(
                    "%s: an index named %s is there, but not the one voipgw builds under that"
                    " name (%s): drop or rename it; %s",
                    where,
                    index.name,
                    _in_schema(db, index.create),
                    index.failed,
                )
                return None
            self._indexed.add(index.name)
            log.info(
                "%s: the index %s built in %.1f s", where, index.name, time.monotonic() - started
            )
        except pg.Error as exc:
            if bounded and isinstance(exc, pg.errors.QueryCanceled):
                log.info(
                    "%s: the index %s not built within statement_timeout (it waits for older"
                    " transactions of the database to end): left to a node's background build"
                    " (or build it by hand: docs/configuration.md, 'Upgrading the nodes')",
                    where,
                    index.name,
                )
                return False
            if self._stopping.is_set():
                log.info(
                    "%s: building the index %s stopped with the store; the next start builds it",
                    where,
                    index.name,
                )
                return True
            if isinstance(exc, pg.errors.InsufficientPrivilege):
                if index is RETENTION:
                    self._index_refused = True
                log.log(
                    index.failed_level,
                    "%s: %s: %s",
                    where,
                    _in_schema(db, index.not_owner),
                    self._server.say(exc),
                )
            else:
                log.log(
                    index.failed_level,
                    "%s: building the index %s failed: %s; %s",
                    where,
                    index.name,
                    self._server.say(exc),
                    index.failed,
                )
        return None

    # -- PSAP callbacks (migration 4) -------------------------------------------------------

    def psap_number_presented(self, number: str, window: float, most: int) -> None:
        with self._session() as db:
            db.execute(
                "SELECT voipgw_psap_number_presented(%s, %s, %s)", (number, window, max(0, most))
            )

    def psap_number_remaining(self, number: str) -> float | None:
        with self._session() as db:
            row = db.execute(
                "SELECT EXTRACT(EPOCH FROM until - clock_timestamp())::float8"
                " FROM psap_callbacks WHERE number = %s AND until > clock_timestamp()",
                (number,),
            ).fetchone()
        return None if row is None else max(0.0, float(row[0]))

    # -- presence publications (migration 5) ----------------------------------------------

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
        p = publication
        with self._session() as db:
            row = db.execute(
                "SELECT voipgw_presence_publication_save("
                "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    account,
                    replaces,
                    list(dropped),
                    p.etag if p else None,
                    p.expires_at if p else None,
                    p.published_at if p else None,
                    p.open if p else None,
                    p.definite if p else None,
                    p.body if p else None,
                    now,
                    max(0, most),
                ),
            ).fetchone()
        return bool(row and row[0])

    def publications_of(
        self, accounts: Sequence[str], *, now: float
    ) -> dict[str, list[StoredPublication]]:
        """See :meth:`Store.publications_of`: one round trip (the names as one array)."""
        names = list(dict.fromkeys(accounts))
        if len(names) > MAX_BULK_ACCOUNTS:
            raise ValueError(f"at most {MAX_BULK_ACCOUNTS} accounts a call, not {len(names)}")
        found: dict[str, list[StoredPublication]] = {name: [] for name in names}
        if not names:
            return found
        with self._session() as db:
            rows = db.execute(
                "SELECT account, etag, expires_at, published_at, is_open, definite, body"
                " FROM presence_publications WHERE account = ANY(%s) AND expires_at > %s",
                (names, now),
            ).fetchall()
        for account, etag, expires_at, published_at, is_open, definite, body in rows:
            found[account].append(
                StoredPublication(
                    account, etag, expires_at, published_at, is_open, definite, bytes(body)
                )
            )
        return found

    def expire_publications(self, now: float, *, most: int) -> int:
        if most < 1:
            raise ValueError("most must be at least 1")
        with self._session() as db:
            # Every node expires them; a row another node is deleting is skipped.
            cursor = db.execute(
                "DELETE FROM presence_publications WHERE etag IN (SELECT etag"
                " FROM presence_publications WHERE expires_at <= %s ORDER BY expires_at"
                " LIMIT %s FOR UPDATE SKIP LOCKED)",
                (now, most),
            )
            return cursor.rowcount


# -- helpers ---------------------------------------------------------------------------------


def _seconds(interval: str) -> float:
    """Seconds of a PostgreSQL interval written in seconds (``"60s"``)."""
    return float(interval.removesuffix("s"))


def _left(deadline: float) -> float:
    """Seconds until ``deadline`` (monotonic), not below 0."""
    return max(0.0, deadline - time.monotonic())


def _abort(
    db: psycopg.Connection[Any],
    unless: Callable[[], bool] | None = None,
    first: Callable[[], None] | None = None,
) -> bool:
    """Shut the socket of ``db`` down, which another thread is using (a statement waiting for
    a server that does not answer): its wait ends at once, libpq finding the connection lost.
    Only the socket is touched (a dup of its descriptor), never libpq's connection, which is
    not safe to use from two threads. False when it has no socket any more, or when
    ``unless()`` is true once the descriptor is duplicated (the dup then names the socket as
    it was when ``unless`` was asked: the watchdog's wait ended meanwhile). ``first()`` is
    called just before the shutdown: what the woken thread is to find must be there already."""
    try:
        fd = db.pgconn.socket
    except Exception:  # closed meanwhile: the statement ended and its thread dropped it
        return False
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    if unless is not None and unless():
        sock.close()
        return False
    if first is not None:
        first()
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # not connected any more: nothing to wake
    finally:
        sock.close()  # the dup only; libpq closes its own
    return True


def _migrate(
    db: psycopg.Connection[Any],
    server: _Server,
    migrations: Sequence[Migration],
    clock: Callable[[], float],
) -> None:
    pg = _import_psycopg()
    latest = len(migrations)
    where = f"PostgreSQL {server.description}"
    found: int | None = None  # the version the database had before this node migrated it
    current = version = 0
    try:
        # A database at this version (every start but an upgrade's) is only read: no DDL, no
        # lock, so a role that may only use the tables starts. PostgreSQL checks CREATE on the
        # schema before IF NOT EXISTS looks for the table: CREATE TABLE IF NOT EXISTS
        # schema_version, run at each start, refused such a role on an up-to-date database.
        current = _schema_version(db)
        if current > latest:
            raise newer_schema(where, current, latest)
        if current == latest:
            return
        if getattr(db, "watch_bound", None) is not None:
            # A migration's statements run under MIGRATION_STATEMENT_TIMEOUT: watched to match.
            bound = _seconds(MIGRATION_STATEMENT_TIMEOUT) + WATCHDOG_MARGIN
            db.watch_bound = bound  # type: ignore[attr-defined]
        for version, statements in migrations:
            with db.transaction():
                db.execute(f"SET LOCAL statement_timeout = '{MIGRATION_STATEMENT_TIMEOUT}'")
                # Nodes starting together: one migrates, the others wait and find it done.
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                if not _has_schema_version(db):
                    db.execute(
                        "CREATE TABLE schema_version"
                        " (version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
                    )
                current = _schema_version(db)
                if found is None:
                    found = current
                if current > latest:
                    raise newer_schema(where, current, latest)
                if version > current:
                    for statement in statements:
                        db.execute(statement)
                    db.execute(
                        "INSERT INTO schema_version (version, applied_at) VALUES (%s, %s)",
                        (version, clock()),
                    )
    except pg.Error as exc:
        message = server.say(exc)
        if db.broken or db.closed:
            raise StoreUnavailable(f"{where}: connection lost while migrating: {message}") from None
        remedy = MIGRATION_REMEDY
        if isinstance(exc, pg.errors.InsufficientPrivilege):
            remedy = MIGRATION_PRIVILEGE_REMEDY
        raise SchemaError(
            migration_failed(where, current, latest, version, message, remedy)
        ) from None
    finally:
        if getattr(db, "watch_bound", None) is not None:
            db.watch_bound = server.watchdog.bound  # type: ignore[attr-defined]
    if found and found < latest:
        # A rolling upgrade: nodes of the older voipgw still running go on, but refuse this
        # database at their next start (newer_schema says so to them).
        log.warning(
            "%s: schema migrated from version %d to %d: a node of an older voipgw refuses it "
            "from its next start; upgrade each before restarting it",
            where,
            found,
            latest,
        )


def _has_schema_version(db: psycopg.Connection[Any]) -> bool:
    """Whether the table schema_version exists (where the session's search_path finds it)."""
    row = db.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _schema_version(db: psycopg.Connection[Any]) -> int:
    """The version schema_version records; 0 for a database without it (a new one)."""
    if not _has_schema_version(db):
        return 0
    row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0] or 0) if row else 0


def _index_valid(db: psycopg.Connection[Any], name: str = RETENTION_INDEX) -> bool | None:
    """Whether the index ``name`` (the retention index's) is valid (pg_index.indisvalid: False
    while a concurrent build runs, or after one was interrupted); None when there is none.
    Looked up in the schema of the call_records the search_path finds, where CREATE INDEX puts
    it: by its bare name (to_regclass) it was the first of that name along the search_path,
    another schema's on another table with ``options=-c search_path=a,public``, taken for ours
    (valid: ours never built; invalid: ours, valid, dropped and built again). On call_records
    itself: one of that name on another table of its schema (by hand) is not ours, and was
    taken for it (valid: every delete reading the whole table; invalid: dropped as an
    interrupted build's); ``IF NOT EXISTS`` keeps it, and the build says so."""
    row = db.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE c.relname = %s AND i.indrelid = to_regclass('call_records')",
        (name,),
    ).fetchone()
    return None if row is None else bool(row[0])


def _on_call_records(db: psycopg.Connection[Any], name: str) -> str:
    """``name`` (an index's) qualified with the schema of the call_records the search_path
    finds (to_regclass), where its indexes are, each part quoted as SQL needs (an index built
    by hand may be named "Calls C"): what DROP INDEX is given, and the log lines' advice, which
    the operator pastes into psql, whose search_path is not the node's. A DROP INDEX of the
    bare name takes the first relation of that name along the search_path, which may be
    another schema's, on another table (``options=-c search_path=a,public``)."""
    row = db.execute(
        "SELECT quote_ident(n.nspname) || '.' || quote_ident(%s) FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass('call_records')",
        (name,),
    ).fetchone()
    return name if row is None else str(row[0])


def _in_schema(db: psycopg.Connection[Any], advice: str) -> str:
    """``advice`` (one of this module's texts) with the ``CREATE INDEX ... ON call_records``
    it gives qualified with call_records' schema, quoted as SQL needs (:func:`_on_call_records`):
    the operator pastes it into psql, whose search_path is not the node's, and the bare table
    name there may be another schema's call_records (the index goes in its table's schema)."""
    return advice.replace(" ON call_records (", f" ON {_on_call_records(db, 'call_records')} (")


def _call_records_owner(db: psycopg.Connection[Any]) -> str:
    """The role owning call_records (only it may drop or build its indexes), quoted as SQL
    needs (``SET ROLE`` or ``psql -U`` takes it as it is shown)."""
    row = db.execute(
        "SELECT quote_ident(pg_get_userbyid(relowner)) FROM pg_class"
        " WHERE oid = to_regclass('call_records')"
    ).fetchone()
    return "the owner of call_records" if row is None else str(row[0])


def _being_built(db: psycopg.Connection[Any]) -> set[str]:
    """The names of call_records' invalid indexes another session is building (CREATE INDEX
    CONCURRENTLY in progress, PostgreSQL 12 and later), not left by an interrupted build.
    pg_stat_progress_create_index names the index (index_relid) only to a role that may see
    the building backend's row (its own, or with pg_read_all_stats); to another, with a build
    on call_records running (:func:`_index_build_running`), the one not yet ready
    (pg_index.indisready false: the build's first phase, which an interrupted build's
    leftover of a later phase is not) is taken for it."""
    if not _index_build_running(db):
        return set()
    rows = db.execute(
        "SELECT c.relname, i.indisready, EXISTS (SELECT 1 FROM pg_stat_progress_create_index p"
        " WHERE p.index_relid = i.indexrelid AND p.pid <> pg_backend_pid())"
        " FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = to_regclass('call_records') AND NOT i.indisvalid"
    ).fetchall()
    named = {str(name) for name, _, shown in rows if shown}
    return named or {str(name) for name, ready, _ in rows if not ready}


def _call_id_indexes(db: psycopg.Connection[Any]) -> list[tuple[str, bool]]:
    """The indexes that answer call_id in "C" order, whatever their names, each with whether it
    is valid (pg_index.indisvalid: False while a concurrent build runs, or after one was
    interrupted). PostgreSQL keeps ``(call_id COLLATE "C")`` as an index on the column with the
    "C" collation (pg_index.indcollation), not as an expression: a plain btree on call_id
    alone, whole (no predicate), in pg_catalog's "C"."""
    rows = db.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am a ON a.oid = c.relam"
        " WHERE i.indrelid = to_regclass('call_records') AND i.indnatts = 1"
        " AND i.indpred IS NULL AND i.indexprs IS NULL AND a.amname = 'btree'"
        " AND i.indkey[0] = (SELECT attnum FROM pg_attribute"
        " WHERE attrelid = i.indrelid AND attname = 'call_id')"
        " AND i.indcollation[0] = (SELECT oid FROM pg_collation"
        " WHERE collname = 'C' AND collnamespace = 'pg_catalog'::regnamespace)"
        " ORDER BY c.relname"
    ).fetchall()
    return [(str(name), bool(valid)) for name, valid in rows]


def _call_id_index_valid(db: psycopg.Connection[Any]) -> bool | None:
    """Whether an index answers call_id in "C" order (:data:`CALL_ID_INDEX`): True when a
    valid one does, whatever its name (one an operator built by hand under another, as
    docs/operations.md allowed before session 42, is taken: a second would cost every save its
    upkeep for nothing); else False when ours is there invalid (a build in progress or
    interrupted); None when there is none (:func:`_call_id_indexes`)."""
    return _call_id_state(_call_id_indexes(db))


def _call_id_state(indexes: Sequence[tuple[str, bool]]) -> bool | None:
    """:func:`_call_id_index_valid` of :func:`_call_id_indexes`' answer."""
    if any(valid for _, valid in indexes):
        return True
    if any(name == CALL_ID_INDEX for name, _ in indexes):
        return False
    return None


def _stale_call_id_index(indexes: Sequence[tuple[str, bool]]) -> bool:
    """Whether ours (:data:`CALL_ID_INDEX`) is there invalid beside a valid one of another name
    (built by hand): an interrupted build's leftover, which answers no query but costs every
    save its upkeep (PostgreSQL docs, "Building Indexes Concurrently": an invalid index is
    still updated), and which no build drops, the valid one being taken."""
    return (CALL_ID_INDEX, False) in indexes and any(valid for _, valid in indexes)


def _valid(db: psycopg.Connection[Any], index: _Index) -> bool | None:
    """Whether ``index`` is there and valid (True), there invalid (False) or not (None)."""
    return _call_id_index_valid(db) if index is CALL_ID else _index_valid(db, index.name)


def _call_id_query(*, collated: bool, newest: bool = False) -> str:
    """:meth:`PostgresStore.call_records_of_call_id`'s statement: ``collated``, the range of
    ids compared in "C" (a database whose collation is another); ``newest``, among the newest
    records only, as many as its first parameter (through the index on started_at)."""
    ids = 'call_id COLLATE "C"' if collated else "call_id"
    table = (
        "(SELECT * FROM call_records ORDER BY started_at DESC, id DESC LIMIT %s) AS newest"
        if newest
        else "call_records"
    )
    return (
        f"SELECT {_CALL_COLUMNS} FROM {table} WHERE call_id = %s"
        f" OR ({ids} >= %s AND {ids} < %s AND strpos(substr(call_id, %s), ';') = 0)"
        " ORDER BY started_at DESC, id DESC LIMIT %s"
    )


def _collates_in_code_point_order(db: psycopg.Connection[Any]) -> bool:
    """Whether the database's default collation (call_records' columns have no other) orders
    text by code point, as PostgreSQL guarantees it does: its "C" and "POSIX" (libc provider:
    PostgreSQL compares bytes, never asking the C library), the builtin provider's "C" and
    "C.UTF-8" (PostgreSQL 17: "sorts by Unicode code point", memcmp on UTF-8) and
    "PG_UNICODE_FAST" (PostgreSQL 18, the same order). An ICU collation (``datlocprovider``
    'i', PostgreSQL 15 and later) never does, whatever ``datcollate`` says. A libc "C.UTF-8"
    (or "C.utf8") is not taken for one (session 42's decision): PostgreSQL sorts it with the
    C library's strcoll, whose order is the library's (glibc 2.35 and later order it by code
    point; the distributions' earlier C.UTF-8 patches and other C libraries are their own),
    and PostgreSQL neither knows nor guarantees which; such a database gets the index on
    ``call_id COLLATE "C"`` (:data:`CALL_ID_INDEX`), which answers by code point whatever the
    library."""
    row = db.execute(
        "SELECT to_jsonb(d) FROM pg_database d WHERE datname = current_database()"
    ).fetchone()
    if row is None:
        return False
    database = row[0] if isinstance(row[0], dict) else json.loads(row[0])
    provider = database.get("datlocprovider", "c")  # before 15: libc only
    if provider == "c":
        return database.get("datcollate") in ("C", "POSIX")
    if provider == "b":
        return database.get("datlocale") in ("C", "C.UTF-8", "C.UTF8", "PG_UNICODE_FAST")
    return False


def _index_build_running(db: psycopg.Connection[Any]) -> bool:
    """Whether another session of this database is building an index on call_records
    (PostgreSQL 12 and later), which may be the retention index. pg_stat_progress_create_index
    shows every session's build, but hides which table another role's is on (unless this role
    has pg_read_all_stats); pg_locks, which every role sees whole, shows the lock such a build
    holds on its table (SHARE UPDATE EXCLUSIVE concurrently, else SHARE). An unrelated build
    (another table, another role's) is not one: taken for one, it left an interrupted build's
    invalid index alone until the node's next start. False before PostgreSQL 12, which cannot
    tell."""
    if db.info.server_version < 120000:
        return False
    row = db.execute(
        "SELECT count(*) FROM pg_stat_progress_create_index p JOIN pg_locks l ON l.pid = p.pid"
        " WHERE p.datid = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND p.pid <> pg_backend_pid() AND l.locktype = 'relation' AND l.granted"
        " AND l.database = p.datid AND l.relation = to_regclass('call_records')"
        " AND l.mode IN ('ShareUpdateExclusiveLock', 'ShareLock')"
    ).fetchone()
    return row is not None and int(row[0]) > 0


def _account_id(db: psycopg.Connection[Any], name: str) -> int:
    row = db.execute("SELECT id FROM accounts WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise AccountNotFound(f"no account {name!r}")
    return int(row[0])


def _insert_credentials(
    db: psycopg.Connection[Any], account_id: int, credentials: Iterable[Credential]
) -> None:
    with db.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO account_credentials (account_id, realm, algorithm, ha1)"
            " VALUES (%s, %s, %s, %s)",
            [(account_id, c.realm, c.algorithm.value, c.ha1) for c in credentials],
        )


def _load_account(db: psycopg.Connection[Any], name: str) -> Account | None:
    row = db.execute(
        "SELECT id, name, display_name, enabled, media_policy, require_tls, created_at,"
        " updated_at, max_calls FROM accounts WHERE name = %s",
        (name,),
    ).fetchone()
    if row is None:
        return None
    account_id = row[0]
    credentials = []
    for realm, token, ha1 in db.execute(
        "SELECT realm, algorithm, ha1 FROM account_credentials WHERE account_id = %s"
        ' ORDER BY realm COLLATE "C", algorithm COLLATE "C"',
        (account_id,),
    ):
        algorithm = DigestAlgorithm.from_token(token)
        if algorithm is not None:  # an algorithm a newer voipgw added: not usable here
            credentials.append(Credential(realm, algorithm, ha1))
    matches = tuple(
        CertificateMatch(kind, value)
        for kind, value in db.execute(
            "SELECT kind, value FROM account_certificates WHERE account_id = %s"
            ' ORDER BY kind COLLATE "C", value COLLATE "C"',
            (account_id,),
        )
    )
    return Account(
        name=row[1],
        display_name=row[2],
        enabled=row[3],
        media_policy=row[4],
        require_tls=row[5],
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


def _select_bindings(
    db: psycopg.Connection[Any], where: str, args: tuple[Any, ...]
) -> tuple[Binding, ...]:
    # RFC 3261 §10.2.1.2 / §16.6: contacts are tried in decreasing q (no q counts as 1.0).
    query = (
        f"SELECT {_BINDING_COLUMNS} FROM registrations r JOIN accounts a ON a.id = r.account_id"
        f" WHERE {where} ORDER BY COALESCE(r.q, 1.0) DESC, r.expires_at DESC, r.id"
    )
    return tuple(_binding(row) for row in db.execute(query, args))


def _unexpired(bindings: tuple[Binding, ...], now: float | None) -> tuple[Binding, ...]:
    if now is None:
        return bindings
    # Dropping rows from an ordered list leaves the rest in order.
    return tuple(binding for binding in bindings if binding.expires_at > now)


def _binding(row: tuple[Any, ...]) -> Binding:
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


def _upsert(db: psycopg.Connection[Any], binding: Binding) -> None:
    """Insert or replace the binding, looking its account up in the same statement."""
    cursor = db.execute(
        "INSERT INTO registrations (account_id, aor, binding_key, contact, expires_at, q,"
        " call_id, cseq, instance, reg_id, transport, local_addr, remote_addr, user_agent, path,"
        " updated_at) SELECT id, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
        " FROM accounts WHERE name = %s"
        " ON CONFLICT (aor, binding_key) DO UPDATE SET account_id = excluded.account_id,"
        " contact = excluded.contact, expires_at = excluded.expires_at, q = excluded.q,"
        " call_id = excluded.call_id, cseq = excluded.cseq, instance = excluded.instance,"
        " reg_id = excluded.reg_id, transport = excluded.transport,"
        " local_addr = excluded.local_addr, remote_addr = excluded.remote_addr,"
        " user_agent = excluded.user_agent, path = excluded.path,"
        " updated_at = excluded.updated_at",
        (
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
            binding.account,
        ),
    )
    if cursor.rowcount == 0:
        raise AccountNotFound(f"no account {binding.account!r}")


_CALL_COLUMNS = (
    "call_id, from_uri, to_uri, started_at, answered_at, ended_at, end_reason, security::text"
)

_INSERT_CALL_RECORD = (
    "INSERT INTO call_records (call_id, from_uri, to_uri, started_at, answered_at, ended_at,"
    " end_reason, security, node) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)


def _call_record_values(record: CallRecord, node: str) -> tuple[Any, ...]:
    return (
        record.call_id,
        record.from_uri,
        record.to_uri,
        record.started_at,
        record.answered_at,
        record.ended_at,
        record.end_reason,
        record.security_json,
        node,
    )


def _load_call_record(db: psycopg.Connection[Any], call_id: str) -> CallRecord | None:
    row = db.execute(
        f"SELECT {_CALL_COLUMNS} FROM call_records WHERE call_id = %s", (call_id,)
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


if TYPE_CHECKING:  # mypy checks that PostgresStore implements the Store protocol
    _conforms: type[Store] = PostgresStore
