"""The store interface: accounts, registrations (bindings), call records, the numbers PSAP
callbacks may call and presence publications.

Values are frozen attrs classes; the :class:`Store` protocol is what the core calls. SQLite
(:mod:`gateway.core.store.sqlite`) is the default; PostgreSQL
(:mod:`gateway.core.store.postgresql`) implements the same protocol so several nodes can share
accounts, registrations and presence publications, and count call limits together
(:class:`SharedCallLimits`; ARCHITECTURE.md "Scale"); ``[store]`` chooses
(:mod:`gateway.core.store.backends`).

The API is synchronous: SQLite answers in microseconds, PostgreSQL serves the reads every call
makes from memory and bounds every statement, and the trio core may call it directly or through
``trio.to_thread.run_sync``. Implementations must be safe to call from one thread at a time in
any thread.

Secrets: accounts hold no password, only per-(realm, algorithm) HA1 values (RFC 7616 §3.4.2,
RFC 8760 §3), which are password-equivalent and therefore kept out of every repr and message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from gateway.core.auth.algorithms import DigestAlgorithm

DEFAULT_MEDIA_POLICY = "best-effort"

EXPIRE_CHUNK = 100
"""Bindings the gateway's housekeeping expires per :meth:`Store.expire_bindings` call."""

CALL_RECORD_CHUNK = 1000
"""Call records one :meth:`Store.expire_call_records` call deletes at most: the retention's
housekeeping deletes in slices with a pause between (gateway/core/calls/records.py)."""

MAX_BULK_ACCOUNTS = 500
"""Most account names one :meth:`Store.binding_expiries` call takes: SQLite binds each as a
parameter (its limit is 32766 since 3.32, 999 before). The poll asks 250 at a time: 1-3 ms of
the event loop a query (docs/benchmarks.md, "Periodic work at scale")."""


@attrs.frozen
class Credential:
    """HA1 for one (realm, algorithm). ``ha1`` is lower-case hex and never shown in a repr."""

    realm: str
    algorithm: DigestAlgorithm
    ha1: str = attrs.field(repr=False)


@attrs.frozen
class CertificateMatch:
    """A TLS client certificate the account may present: ``kind`` is ``"fingerprint"`` (a
    SHA-256 fingerprint, hex) or ``"subject"`` (a subject or subjectAltName to match)."""

    kind: str
    value: str


CERTIFICATE_MATCH_KINDS = ("fingerprint", "subject")


@attrs.frozen
class Account:
    """A SIP user of the gateway. ``name`` is the user part of its address-of-record and the
    digest username."""

    name: str
    display_name: str | None = None
    enabled: bool = True
    media_policy: str = DEFAULT_MEDIA_POLICY
    require_tls: bool = False
    max_calls: int = 0  # calls in progress from or to the account at once; 0: no limit
    credentials: tuple[Credential, ...] = ()
    certificate_matches: tuple[CertificateMatch, ...] = ()
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def realms(self) -> tuple[str, ...]:
        """The realms the account has credentials for, in first-seen order."""
        return tuple(dict.fromkeys(c.realm for c in self.credentials))

    def ha1_for(self, realm: str, algorithm: DigestAlgorithm) -> str | None:
        """The stored HA1 for ``realm`` and ``algorithm``, or None."""
        for credential in self.credentials:
            if credential.realm == realm and credential.algorithm is algorithm:
                return credential.ha1
        return None


@attrs.frozen
class BindingFlow:
    """The flow a REGISTER arrived over, as text: transport name, local and remote address
    (``"udp"``, ``"127.0.0.1:5060"``, ``"127.0.0.1:40000"``; IPv6 in brackets)."""

    transport: str
    local: str
    remote: str


@attrs.frozen
class Binding:
    """One registered contact of an address-of-record (RFC 3261 §10.3).

    ``aor`` is the canonical address-of-record; ``key`` identifies the binding within it (the
    canonical contact URI, or the ``+sip.instance``/``reg-id`` pair, see the registrar);
    ``contact`` is the contact URI as the UA sent it. ``expires_at`` is absolute (the same
    clock as the ``now`` the registrar is given). ``call_id``/``cseq`` are those of the REGISTER
    that last touched the binding (RFC 3261 §10.3 step 7). ``path`` is the RFC 3327 Path vector.
    """

    aor: str
    key: str
    account: str
    contact: str
    expires_at: float
    call_id: str
    cseq: int
    flow: BindingFlow
    q: float | None = None
    instance: str | None = None
    reg_id: int | None = None
    user_agent: str | None = None
    path: tuple[str, ...] = ()
    updated_at: float = 0.0

    def remaining(self, now: float) -> int:
        """Whole seconds left before expiry (never negative), for a Contact ``expires``."""
        return max(0, round(self.expires_at - now))


@attrs.frozen
class StoredPublication:
    """One phone's presence publication (RFC 3903) as every node sharing the store sees it:
    the account it is for, its current entity tag (a new one on every success, §6 step 7, so
    an entity tag names one version of the publication), when it expires and when its
    document was last published or modified (wall-clock seconds, the registrar's clock), the
    document's overall status (gateway/core/sip/presence.py ``Pidf``) and the document. The
    document is the user's presence, personal data: never in a repr."""

    account: str
    etag: str
    expires_at: float
    published_at: float
    open: bool
    definite: bool
    body: bytes = attrs.field(repr=False)


@attrs.frozen
class CallRecord:
    """A call detail record. ``security_json`` is the per-leg security record as JSON text
    (a later issue fills it); :attr:`security` decodes it."""

    call_id: str
    from_uri: str
    to_uri: str
    started_at: float
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    security_json: str = "{}"

    @property
    def security(self) -> Any:
        return json.loads(self.security_json)


class _Unset:
    """Marker for "leave this field as it is" in updates."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


LimitKey = tuple[str, str]  # ("trunk" | "account", name), as gateway/core/calls/limits.py
Hold = tuple[int, LimitKey]  # (a call's hold number on this node, the key it holds)


class SharedCallLimits(Protocol):
    """``max_calls`` counted for every node sharing the store (PostgreSQL): each call a node
    counts against a limited trunk or account is a hold row the others see (docs/architecture.md
    "Scale"). The call manager's :class:`~gateway.core.calls.limits.CallLimits` uses it for keys
    with a limit only; every method is one or two round trips and raises :class:`StoreError`
    when the database does not answer within ``statement_timeout``."""

    heartbeat_interval: float
    """Seconds between :meth:`beat` calls: a node not seen for a few of them is taken for dead
    and its holds no longer count."""

    instance: str
    """This running instance's random id, written with its heartbeat."""

    live_nodes: int
    """The nodes whose heartbeat the server saw within the time after which a node is taken
    for dead, this one included, as counted by the last :meth:`start` or :meth:`beat` it
    answered (by the heartbeat's own statement: no round trip of its own); 1 before. With
    ``[store] max_cps_scope = "cluster"`` each node paces its share of a trunk's ``max_cps``."""

    def other_instance(self) -> tuple[str, object] | None:
        """A heartbeat under this node's name written by another instance and seen within the
        time after which a node is taken for dead: (its instance id, when the server stamped
        it; compared only for a change), else None. Its previous run, killed moments ago, or
        another process given the same name: a live one's stamp moves within a beat or two."""
        ...

    def limits_changed(self) -> bool:
        """Whether a key's ``max_calls`` may have changed since the last ask (an account's,
        changed through ``voipgw accounts set``): the heartbeat then looks for calls counted
        in memory against a key that has a limit now. Costs no round trip."""
        ...

    def start(self) -> None:
        """This node starts: drop the holds its previous run left (it was killed, its calls
        ended with it) and say it is alive, as this instance."""
        ...

    def take(self, hold: int, key: LimitKey, limit: int, *, exempt: bool = False) -> bool:
        """Hold one of ``key``'s ``limit`` calls in progress for this node's ``hold`` if one is
        free across the cluster, atomically (two nodes cannot both take the last); True when
        held. ``exempt`` (an emergency call): held whatever the count."""
        ...

    def release(self, holds: Sequence[Hold]) -> None:
        """Give these holds of this node back (those it does not have: nothing happens)."""
        ...

    def beat(self, add: Sequence[Hold] = (), remove: Sequence[Hold] = ()) -> str | None:
        """Say this node is alive, and in the same transaction write the holds it counted in
        memory only while the database was out of reach (``add``) and drop those whose release
        did not reach it (``remove``). Returns the id of another instance that wrote this
        node's heartbeat since this one's last beat (another process with the same name),
        else None."""
        ...

    def stop(self) -> None:
        """This node stops: its holds and this instance's heartbeat go."""
        ...


class Store(Protocol):
    """Everything the core keeps across restarts. Errors are :class:`StoreError` subclasses."""

    def shared_call_limits(self) -> SharedCallLimits | None:
        """How ``max_calls`` is counted across nodes sharing this store; None: each node
        counts its own calls, in memory (SQLite: one node)."""
        ...

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
        """Create an account with HA1s for ``realm`` and every algorithm; the password itself is
        not kept. Raises AccountExists or InvalidValue."""
        ...

    def accounts_list(self) -> tuple[Account, ...]:
        """Every account, by name."""
        ...

    def get_account(self, name: str) -> Account | None:
        """The account called ``name`` or None."""
        ...

    def accounts_set(self, name: str, **fields: Any) -> Account:
        """Change fields of an account: ``display_name``, ``enabled``, ``media_policy``,
        ``require_tls``, ``max_calls``, ``certificate_matches`` (replaces the set), and
        ``password`` (recomputes the HA1s for every realm the account has, or for ``realm`` alone
        if given — then the account's credentials are for that realm only). Raises
        AccountNotFound or InvalidValue."""
        ...

    def accounts_remove(self, name: str) -> None:
        """Delete an account, its credentials and its bindings. Raises AccountNotFound."""
        ...

    # -- registrations ----------------------------------------------------------------------

    def registrations_for(self, aor: str, *, now: float | None = None) -> tuple[Binding, ...]:
        """Bindings of ``aor`` (highest q first); with ``now``, only unexpired ones."""
        ...

    def bindings_for_account(
        self, account: str, *, now: float | None = None
    ) -> tuple[Binding, ...]:
        """Bindings of every AOR of ``account`` (highest q first); with ``now``, unexpired."""
        ...

    def binding_expiries(self, accounts: Sequence[str], *, now: float) -> dict[str, list[float]]:
        """When the bindings of each of ``accounts`` unexpired at ``now`` expire, every name
        given a key (``[]``: none, or no such account), read in one query: what presence from
        registration polls for its watched accounts (gateway/core/calls/presence.py). Not from
        the cache: the poll is there to see what other nodes and processes wrote, and its
        thousands of names would push the accounts calls read out of it. At most
        :data:`MAX_BULK_ACCOUNTS` names a call (``ValueError`` past it): callers ask in chunks,
        so one call holds the event loop for a bounded time."""
        ...

    def upsert_binding(self, binding: Binding) -> None:
        """Insert or replace the binding (aor, key). Raises AccountNotFound."""
        ...

    def remove_binding(self, aor: str, key: str) -> bool:
        """Delete one binding; False if there was none."""
        ...

    def apply_binding_changes(
        self, aor: str, upserts: Sequence[Binding], removals: Iterable[str]
    ) -> None:
        """Remove the bindings of ``aor`` whose keys are in ``removals`` and upsert ``upserts``,
        all or nothing (RFC 3261 §10.3 step 7: a REGISTER's updates commit together)."""
        ...

    def expire_bindings(self, now: float, *, most: int | None = None) -> tuple[Binding, ...]:
        """Delete every binding with ``expires_at <= now`` (with ``most``: at most that many,
        the earliest first) and return them. The gateway's housekeeping asks
        :data:`EXPIRE_CHUNK` at a time with a checkpoint between: 10 000 bindings expired at
        once (a gateway back after an outage longer than the registrations) took 80 ms on
        SQLite and 500 ms on PostgreSQL in one call (docs/benchmarks.md)."""
        ...

    def count_bindings(self, now: float) -> int:
        """How many bindings are unexpired at ``now`` (monitoring: asked at a scrape)."""
        ...

    # -- call records -----------------------------------------------------------------------

    def call_record_insert(self, record: CallRecord) -> None:
        """Add a record. Raises CallRecordExists."""
        ...

    def call_record_update(
        self,
        call_id: str,
        *,
        answered_at: float | None = UNSET,
        ended_at: float | None = UNSET,
        end_reason: str | None = UNSET,
        security: Mapping[str, Any] = UNSET,
    ) -> CallRecord:
        """Set the given fields (others unchanged) and return the record. Raises
        CallRecordNotFound."""
        ...

    def call_records_save(self, records: Sequence[CallRecord]) -> None:
        """Insert each record, or replace the record with its ``call_id``, all in one
        transaction (the call manager saves its changed records in batches)."""
        ...

    def call_record_get(self, call_id: str) -> CallRecord | None: ...

    def call_records_recent(self, limit: int = 100) -> tuple[CallRecord, ...]:
        """The most recently started records, newest first."""
        ...

    def call_records_of_call_id(self, call_id: str, limit: int = 100) -> tuple[CallRecord, ...]:
        """The records of the calls with the SIP Call-ID ``call_id`` (a record's id is the
        Call-ID and the caller leg's tag, ``Call-ID;tag``: what comes before its last ``;``),
        and the record whose id is ``call_id``, newest first, at most ``limit``; among every
        record the store keeps, read through the index on the id (``voipgw calls --call-id``),
        not only the newest. :func:`call_id_range` gives the ids' range."""
        ...

    def call_records_end_unfinished(self, ended_at: float, reason: str) -> int:
        """End the records of calls a previous run of this node left without an end (it was
        killed): they ended when it did. How many. Nodes sharing a store (PostgreSQL) each end
        only their own, never calls another node has up."""
        ...

    def expire_call_records(self, before: float, *, most: int) -> int:
        """Delete at most ``most`` records older than ``before`` (wall-clock seconds): those
        that ended before it, and those without an end that started before it (a call still up
        after the whole retention window, or one a killed node left: a live call's record is
        written again by its next save). The oldest first; how many went. Several nodes
        sharing the store (PostgreSQL) may each call it at once: a row another node is
        deleting is skipped, never waited for. An index on ``COALESCE(ended_at, started_at)``
        answers it without reading the records it keeps."""
        ...

    def oldest_call_record(self) -> float | None:
        """When the oldest record kept ended (started, for one without an end), wall-clock
        seconds; None when there is none. What retention deletes by, read through the same
        index, so cheap at any size (monitoring: asked at a scrape)."""
        ...

    # -- PSAP callbacks (RFC 7090, gateway/core/calls/psap_callback.py) -------------------

    def psap_number_presented(self, number: str, window: float, most: int) -> None:
        """An emergency call presented ``number``: keep it until ``window`` seconds from now
        (the store's clock: the server's for PostgreSQL, so nodes whose clocks disagree agree
        on it), a second call restarting the window. Drops the numbers whose window is over,
        and past ``most`` numbers those whose window ends first: the table stays bounded."""
        ...

    def psap_number_remaining(self, number: str) -> float | None:
        """Seconds left in ``number``'s window (as presented by any node sharing the store,
        or by this one before a restart); None when it has none."""
        ...

    # -- presence publications (RFC 3903, gateway/core/calls/presence.py) ----------------

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
        """One PUBLISH's outcome on a node, in one transaction. ``replaces``: the entity tag
        of the version of ``account``'s publication that the PUBLISH named (its SIP-If-Match,
        a refresh, modification or removal): when the store no longer has it (another node
        refreshed, modified or removed it first: RFC 3903 §6 step 2) nothing is written and
        the answer is False. Otherwise it goes, and so do those in ``dropped`` (one the node
        replaced with a new publication); ``publication`` is kept, replacing any with its
        entity tag; and of ``account``'s publications those expired at ``now`` go, and past
        ``most`` those that expire first (an account keeps ``most`` across the cluster as on
        one node). True."""
        ...

    def publications_of(
        self, accounts: Sequence[str], *, now: float
    ) -> dict[str, list[StoredPublication]]:
        """The publications of each of ``accounts`` unexpired at ``now``, every name given a
        key (``[]``: none), in one query: what a node polls for the accounts its presence
        subscriptions watch. Never cached. At most :data:`MAX_BULK_ACCOUNTS` names a call
        (``ValueError`` past it)."""
        ...

    def expire_publications(self, now: float, *, most: int) -> int:
        """Delete at most ``most`` publications expired at ``now`` (the earliest first); how
        many went. Each node's housekeeping asks in chunks, as for bindings."""
        ...

    def close(self) -> None: ...


def call_id_range(call_id: str) -> tuple[str, str]:
    """The ids of the records of SIP Call-ID ``call_id`` (``Call-ID;tag``) are those that
    start with ``call_id;``: in code point order (SQLite's BINARY collation, PostgreSQL's "C"),
    those from ``call_id;`` up to, not including, ``call_id<`` (``<`` is the code point after
    ``;``), a range an index on the id answers. A Call-ID holding a ``;`` of its own is told
    apart by the query: the rest, the tag, holds none (ours never do)."""
    return f"{call_id};", f"{call_id}<"
