"""PUBLISH of presence (RFC 3903, RFC 3856 §6) by the gateway's own accounts: the trio adapter of
:class:`gateway.core.sip.presence.Publications`.

Theory of operation. With ``[presence] allow`` other than ``"none"``, the endpoint hands every
PUBLISH outside a dialog here. The publisher is authenticated as for its calls (407, RFC 3261
§22.3) and must be an account publishing for itself: the Request-URI (RFC 3903 §4.1: the
address of record whose state it publishes) names it in one of our domains, else 403; the
document's ``entity`` too (gateway/core/sip/presence.py). ``Event`` must be ``presence`` (489
with ``Allow-Events: presence`` otherwise, RFC 3903 §6 step 1), a body ``application/pidf+xml``
(415 with ``Accept`` otherwise, §6 step 4). The publication itself (entity tags, 412, 423,
Expires, composition) is the sans-IO table's; a change of what an account's watchers see wakes
their subscriptions in the dialog-event notifier (gateway/core/calls/dialog_events.py), which
owns the table. :meth:`Presence.run` forgets publications that were not refreshed in time (RFC
3903 §6) and tells their watchers.

Presence from registration (``[presence] from_registration``, on by default): most desk
phones never PUBLISH, so an account that has no valid publication is ``open`` while it has a
live registration binding and ``closed`` once its last one goes, as FreeSWITCH and Asterisk
show it. Only watched accounts are followed (the table of
:class:`gateway.core.sip.presence.Registrations`, kept by the notifier): a REGISTER this node
handles tells :meth:`Presence.registered` (for an account nobody watches: a truth test and a
dict lookup), a removal for a revoked certificate :meth:`Presence.bindings_changed`; the
binding's expiry wakes :meth:`Presence.follow_store`, which looks the account up in the
store again (a refresh another node took), and every :data:`REGISTRATION_POLL` seconds it looks
every watched account up (a registration or removal on another node sharing the store,
``voipgw accounts remove``, a binding removed for a dead NAT flow): :data:`POLL_CHUNK` accounts
per store query (``Store.binding_expiries``, one round trip on PostgreSQL), with a checkpoint
between two chunks, so a poll of 20 000 accounts never holds the event loop for more than a
millisecond or two at a time.
Watchers get a NOTIFY only when the account goes from registered to not or back, and only
while no publication of its hides it.

Publications are the cluster's, as Kamailio's presence module shares them through its
database: the node's memory (the sans-IO table) is the fast path, and the store
(``Store.publication_save``, ``presence_publications``) holds each publication under its
current entity tag for the other nodes, and for this node after a restart:

* Each successful PUBLISH is written before it is answered, in the event loop, as a REGISTER's
  bindings are (the store's API is synchronous and one thread at a time: no write can be left
  to another thread safely): one statement sequence on SQLite, one round trip on PostgreSQL. A
  write that fails leaves the publication on this node alone (its next refresh here writes it
  again): the PUBLISH is answered all the same, and this node's watchers see it at once either
  way. A store that is down is logged per outage (``DialogEvents.store_failures``, every read
  and write of presence: a WARNING at the first failure, a summary every 300 s, an INFO when it
  answers again), not per PUBLISH or poll.
* A PUBLISH whose SIP-If-Match this node does not know (the phone's refresh reached another node
  than the one that took its first PUBLISH) loads the account's publications from the store
  first (one query, for a tag missing from memory only), so it is 412 only when no node knows
  the tag.
* Watchers on every node: the periodic look at the store (every :data:`REGISTRATION_POLL`
  seconds, :data:`POLL_CHUNK` watched accounts a query) also reads their publications
  (``Store.publications_of``: one more bulk query a chunk, none per NOTIFY) and reconciles the
  node's memory with them (:meth:`~gateway.core.sip.presence.Publications.reconcile`): watchers
  get a NOTIFY when the document they see changed. An account's first watcher on a node loads
  its publications at once.
* Expiry: each node forgets a publication at its expiry time; one the store holds is looked up
  there first (another node may have refreshed it under a tag this node has not polled yet).
  The store's expired rows are deleted by every node's housekeeping (and an account's by its
  next PUBLISH).

Subscriptions (presence and BLF) stay the node's own, in memory; registrations are the store's.
Nothing here runs for calls.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import trio

from gateway.core.calls.routing import called_user
from gateway.core.logs import log_exception
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.events import PRESENCE, parse_event_untrusted, parse_expires_untrusted
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.presence import (
    CONTENT_TYPE,
    MAX_ETAG,
    MAX_PER_ACCOUNT,
    Published,
    Refused,
    Registrations,
    parse_pidf_untrusted,
)
from gateway.core.sip.transaction import ServerTransaction
from gateway.core.sip.uri import SipUri
from gateway.core.store.errors import StoreError
from gateway.core.store.interface import Binding, StoredPublication
from gateway.core.transport.flows import Flow

if TYPE_CHECKING:
    from gateway.core.calls.dialog_events import DialogEvents
    from gateway.core.gateway import Gateway

log = logging.getLogger(__name__)

REGISTRATION_POLL = 5.0
"""Seconds between two looks at the watched accounts' registrations in the store: how late a
watcher learns of a registration made, or removed, elsewhere (another node, the CLI)."""
POLL_CHUNK = 250
"""Accounts looked up in one store query, and handled, between two checkpoints of a poll
(other tasks, media among them, run in between): a slice of about 1 ms on SQLite, 3 ms on a
PostgreSQL one round trip away (docs/benchmarks.md, "Periodic work at scale"). At most
:data:`~gateway.core.store.interface.MAX_BULK_ACCOUNTS`."""


class Presence:
    """The endpoint's transaction user for PUBLISH."""

    def __init__(self, gateway: Gateway, nursery: trio.Nursery, notifier: DialogEvents) -> None:
        self.gateway = gateway
        self.endpoint = gateway.endpoint
        self.notifier = notifier
        self.publications = notifier.publications
        self._nursery = nursery
        self._timer_changed = trio.Event()
        self._registrations_changed = trio.Event()

    def publish(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None:
        """A PUBLISH outside any dialog."""
        self._nursery.start_soon(self._answer, transaction, request, flow)

    async def _answer(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None:
        try:
            response = self._handle(request, flow)
        except Exception:
            log_exception(log, "internal error on PUBLISH %s", request.call_id)
            response = make_response(request, 500, "Server Internal Error")
        if response.to.tag is None:  # RFC 3261 §8.2.6.2
            to = response.to.with_tag(self.gateway.ids.new_tag())
            response = response.with_headers(response.headers.set("To", str(to)))
        await self.endpoint.respond(transaction, response)

    def _handle(self, request: Request, flow: Flow) -> Response:
        try:
            event = parse_event_untrusted(request.headers.get("Event"))
            expires = parse_expires_untrusted(request.headers.get("Expires"))
        except RemoteSipError as err:
            return make_response(request, err.status or 400, err.reason)
        if event.package != PRESENCE:
            # RFC 3903 §6 step 1: the ESC handles the packages it knows, 489 for the others.
            return make_response(request, 489, extra=[("Allow-Events", PRESENCE)])
        calls = self.gateway.calls
        assert calls is not None
        caller = calls.identify_caller(request, flow)
        if isinstance(caller, Response):
            return caller
        if caller.kind != "account" or caller.name is None:
            return make_response(request, 403, "Forbidden (publications are for accounts)")
        account = caller.name
        if not self._own_address(request.uri, account):
            return make_response(request, 403, "Forbidden (only the account's own presence)")
        document = None
        if request.body:
            content_type = (request.content_type or "").split(";")[0].strip().lower()
            if content_type != CONTENT_TYPE:
                return make_response(request, 415, extra=[("Accept", CONTENT_TYPE)])
            try:
                document = parse_pidf_untrusted(request.body, account=account)
            except RemoteSipError as err:
                return make_response(request, err.status or 400, err.reason)
        if_match = request.headers.get("SIP-If-Match")
        now = trio.current_time()
        if (
            if_match is not None
            and len(if_match) <= MAX_ETAG
            and self.publications.find(account, if_match, now=now) is None
        ):
            # RFC 3903 §6 step 2 across the cluster: a tag another node gave (the phone's
            # refresh reached another node) is in the store. Only for a tag not in memory.
            self.notifier.load_publications([account])
        outcome = self.publications.publish(
            account,
            if_match=if_match,
            expires=expires,  # an hour when absent (RFC 3903 §4.1 lets the ESC choose)
            document=document,
            new_etag=self.gateway.ids.token_hex(8),
            now=now,
        )
        if isinstance(outcome, Refused):
            extra = []
            if outcome.min_expires is not None:
                extra.append(("Min-Expires", str(outcome.min_expires)))
            return make_response(request, outcome.status, outcome.reason, extra=extra)
        self._timer_changed.set()
        if not self._save(account, outcome):
            # RFC 3903 §6 step 2: another node refreshed, modified or removed that version
            # first (this node had not polled it yet). What the store has now, then 412.
            log.info("presence publication of %s superseded on another node", account)
            self.notifier.load_publications([account])
            return make_response(request, 412)
        if outcome.changed:
            self.notifier.presence_changed(account)
        fields = [("Expires", str(outcome.expires))]
        if outcome.etag is not None:
            fields.insert(0, ("SIP-ETag", outcome.etag))  # RFC 3903 §11.3.1
        log.debug("presence of %s published for %d s", account, outcome.expires)
        return make_response(request, 200, extra=fields)

    def _save(self, account: str, outcome: Published) -> bool:
        """Write a PUBLISH's outcome to the store, for the other nodes (module docstring);
        False when the version it named was superseded on another node first (412)."""
        store = self.gateway.store
        if store is None:
            return True
        publication = outcome.publication
        replaces = None  # the saved version a refresh, modification or removal named
        if publication is not None and publication.saved_etag != publication.etag:
            replaces = publication.saved_etag
        elif publication is None and outcome.dropped:
            replaces = outcome.dropped[0].saved_etag  # a removal drops the one it named
        row = None
        wall = self.notifier.wall_clock()
        offset = wall - trio.current_time()  # the table runs on trio's clock, the store on wall
        if publication is not None:
            document = publication.document
            row = StoredPublication(
                account,
                publication.etag,
                publication.expires_at + offset,
                publication.published_at + offset,
                document.open,
                document.definite,
                document.body,
            )
        if row is None and replaces is None:
            return True
        failures = self.notifier.store_failures
        try:
            # One a new publication replaced here for the per-account bound is not deleted
            # (no ``dropped``): this node's memory of an account nobody watches here may hold
            # versions other nodes superseded or removed (it polls only watched accounts), so
            # its choice could drop a live publication; the store keeps the account's
            # latest-expiring ``most`` itself, the same rule applied to what it really holds.
            saved = store.publication_save(
                account, row, replaces=replaces, now=wall, most=MAX_PER_ACCOUNT
            )
        except StoreError as exc:
            # Logged once while the store is down, then summarized (failure_log.py).
            why = f"presence publication of {account} kept on this node only: {exc}"
            failures.failed(why, now=wall)
            if publication is not None:
                # A refresh the store did not take: its row of the version before runs out at
                # that version's expiry, which the poll must not take for "gone elsewhere".
                publication.unsaved = True
            return True
        failures.answered(now=wall)
        if publication is not None:
            publication.unsaved = False  # saved, or superseded: the store is right again
            if saved:
                publication.saved_etag = publication.etag
        return saved

    def _own_address(self, uri: object, account: str) -> bool:
        """Whether a PUBLISH's Request-URI is ``account``'s address in one of our domains."""
        directory = self.gateway.directory
        if not isinstance(uri, SipUri) or directory is None:
            return False
        host = uri.host_port()
        return directory.is_local_domain(host) and called_user(uri) == account

    def publications_changed(self) -> None:
        """Publications came from the store: :meth:`run` looks at their expiries."""
        self._timer_changed.set()

    async def run(self) -> None:
        """Forget publications nobody refreshed (RFC 3903 §6); their watchers are told."""
        while True:
            due = self.publications.due(now=trio.current_time())
            for start in range(0, len(due), POLL_CHUNK):
                if start:
                    await trio.lowlevel.checkpoint()
                # Refreshed on another node under a tag not polled yet? (False: the store
                # does not answer, they are forgotten as they would be on one node.)
                self.notifier.load_publications(due[start : start + POLL_CHUNK])
            for account in self.publications.handle_timer(now=trio.current_time()):
                log.debug("a presence publication of %s expired", account)
                self.notifier.presence_changed(account)
            self._timer_changed = trio.Event()
            deadline = self.publications.get_timer()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._timer_changed.wait()

    # -- presence from registration ([presence] from_registration) ------------------------------

    def registered(self, aor: str, bindings: tuple[Binding, ...]) -> None:
        """A REGISTER of ``aor`` accepted on this node; ``bindings`` are that AOR's bindings
        now (none: it unregistered). A truth test and a dict lookup for an account nobody
        watches."""
        registrations = self.notifier.registrations
        if not registrations:
            return
        # The registrar's AOR is sip:USER@HOST with USER the account's name, unescaped
        # (gateway/core/registrar.py: canonical_aor; an account registers only its own).
        account = bindings[0].account if bindings else aor[aor.find(":") + 1 : aor.rfind("@")]
        if account in registrations:
            # All its bindings, not this AOR's: it may be registered under another of our
            # domains too (the store has just been written: its cache was refilled or dropped).
            self.bindings_changed(account)
            self._registrations_changed.set()

    def bindings_changed(self, account: str) -> None:
        """Bindings of ``account`` were added or removed (a REGISTER, a revoked certificate):
        looked up again at once when someone watches it."""
        registrations = self.notifier.registrations
        if registrations is None or account not in registrations:
            return
        expiries = self.notifier.binding_expiries(account)
        if expiries is not None:
            self.notifier.registration_changed(account, expiries)

    async def follow_store(self) -> None:
        """Keep the watched accounts' registration state and publications as the store has
        them: look an account's bindings up when its last one runs out (refreshed elsewhere,
        or gone), and every watched account's bindings and publications every
        :data:`REGISTRATION_POLL` seconds (what other nodes and the CLI wrote)."""
        registrations = self.notifier.registrations
        # The watched accounts: those whose registration state is kept, with it.
        watched = registrations if registrations is not None else self.notifier.presence_watched
        next_poll = trio.current_time() + REGISTRATION_POLL
        while True:
            wall = self.notifier.wall_clock()
            polling = trio.current_time() >= next_poll
            if polling:
                next_poll = trio.current_time() + REGISTRATION_POLL
                accounts = list(watched)
            else:
                accounts = registrations.due(now=wall) if registrations is not None else []
            for start in range(0, len(accounts), POLL_CHUNK):
                if start:
                    await trio.lowlevel.checkpoint()
                # Those whose last watcher left meanwhile (at a checkpoint) are not asked for.
                chunk = [a for a in accounts[start : start + POLL_CHUNK] if a in watched]
                if chunk and polling:
                    self.notifier.load_publications(chunk)  # one query, NOTIFYs on changes
                if chunk and registrations is not None:
                    self._follow_bindings(registrations, chunk, wall)
            self._registrations_changed = trio.Event()
            deadline = next_poll
            expiry = registrations.get_timer() if registrations is not None else None
            if expiry is not None:
                # Binding expiries are wall-clock seconds; trio sleeps on its own clock.
                wait = max(expiry - self.notifier.wall_clock(), 0.0)
                deadline = min(deadline, trio.current_time() + wait)
            with trio.move_on_at(deadline):
                await self._registrations_changed.wait()

    def _follow_bindings(self, registrations: Registrations, chunk: list[str], wall: float) -> None:
        """The bindings of ``chunk`` (watched accounts) from the store, in one query."""
        found = self.notifier.binding_expiries_of(chunk)
        for account in chunk:
            expiries = found.get(account) if found is not None else None
            if expiries is None:
                registrations.postpone(account, wall + REGISTRATION_POLL)
                continue
            try:
                self.notifier.registration_changed(account, expiries)
            except Exception:  # a bug: logged, the others go on, the gateway too
                log_exception(log, "presence of %s from its registration", account)
                registrations.postpone(account, wall + REGISTRATION_POLL)
