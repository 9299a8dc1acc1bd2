"""Busy lamp fields: the gateway as notifier of the ``dialog`` event package (RFC 4235, RFC 6665)
for its own accounts.

Theory of operation. A phone's BLF key subscribes (``SUBSCRIBE``, ``Event: dialog``) to an
address of record in our domains. The gateway is the registrar and the B2BUA of every call of
its accounts, so it answers itself, as Kamailio's ``presence_dialoginfo`` or FreeSWITCH do for
theirs; no trunk is involved. The subscriber is authenticated as for its calls (407, RFC 3261
§22.3) and must be an account; the target must be an account it may watch by the operator's
``[[dialog_watch_groups]]`` (default deny: 403), checked before whether the target exists (404),
so that nobody learns another customer's account names by trying them. An account may always
watch itself. Expires is bounded as for message-summary (gateway/core/sip/events.py: 423 below a
minute, at most an hour); the 200 is followed by a NOTIFY with the account's full state (RFC
6665 §4.2.1.1), and one more on every change of its calls and on every refresh (§4.2.1.2).

Bodies (gateway/core/sip/dialog_info.py): one <dialog> per call of the watched account, its
state (``trying`` from the account's INVITE to the first 1xx it gets, ``early`` while it or its
callee rings, ``confirmed`` once answered, ``terminated`` when it ends, fails or is answered
elsewhere) and its direction, identities only with ``show_parties``. A call to the account is
first reported ringing: the call layer reports nothing between routing and the first 1xx. For a
watcher that may pick the call up (a group with ``pickup``), a ringing call to the account
also carries the Call-ID and tags of our early dialog with its ringing phone (RFC 4235 §4.1),
found on each event while it rings (a phone that still rings), only while some group allows
pickup.

Calls: the call manager passes each call event (started, ringing, answered, ended, transferred)
here only while some account is watched (:attr:`DialogEvents.watched` is not empty: a truth test
per event otherwise), and a call of accounts nobody watches then costs a dict lookup per party.
A transfer that takes an account out of a call ends its dialog there. The calls of a newly
watched account are found once, by a walk of the calls in progress.

NOTIFYs go in the subscription's dialog over the flow its latest request came on (the way back
through the phone's NAT), one at a time per subscription (a task each): changes made while one
is out are coalesced (:class:`~gateway.core.sip.dialog_info.Notifications`) without hiding a
call's early or confirmed. The subscription ends (final NOTIFY with ``Subscription-State:
terminated``, full state) on an unsubscribe (``Expires: 0``, reason ``timeout``), a fetch
(``Expires: 0`` in the first SUBSCRIBE, §4.4.3), expiry without a refresh (``timeout``, §4.2.2)
and when the gateway drains or stops (``deactivated``: subscribe again at once, which reaches
another node or this one restarted; at most the caller's 2 s waited for the answers); a 481 or
timeout of a NOTIFY ends it at once (§4.2.2). Bounds: :data:`MAX_SUBSCRIPTIONS` in all (503
past it), :data:`MAX_PER_ACCOUNT` per watching account (403); a phone subscribing again to the
same account from the same Contact (it rebooted) replaces its old subscription.

Presence (RFC 3856), while ``[presence] allow`` is not ``"none"``: a SUBSCRIBE with ``Event:
presence`` is the same kind of subscription (a :class:`Watch` with ``package`` ``presence``, the
same authentication, bounds, refresh, expiry and final NOTIFY), watching an account's
publications instead of its calls: who may watch whom is ``allow`` (``same-group``: the
``[[dialog_watch_groups]]`` groups, as for BLF; ``all-accounts``; oneself always). Its NOTIFYs
carry the account's current ``application/pidf+xml`` document
(:class:`~gateway.core.sip.presence.Publications`, kept here, filled by PUBLISH in
gateway/core/calls/presence.py); when it published nothing, the gateway's own: ``open`` while it
is registered (``[presence] from_registration``, :attr:`DialogEvents.registrations`, kept for
the watched accounts only), else a neutral ``closed``; sent again on each change
(:meth:`DialogEvents.presence_changed`). Presence watchers are kept apart from
:attr:`DialogEvents.watched`: calls never look at them. Subscriptions are this node's, in
memory, as the BLF's; publications are in memory too and shared through the store
(gateway/core/calls/presence.py): an account's first watcher on this node loads its
publications from the store (:meth:`DialogEvents.load_publications`, one query), as it looks
up its bindings.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from gateway.core.calls.leg import BLeg
from gateway.core.calls.messages import send_and_wait
from gateway.core.calls.routing import called_user, subscriber_destination
from gateway.core.failure_log import FailureLog
from gateway.core.logs import log_exception
from gateway.core.sip.dialog import Dialog, require_contact
from gateway.core.sip.dialog_info import (
    CONTENT_TYPE,
    DialogEntry,
    DialogIds,
    Direction,
    Notifications,
    Party,
    Phase,
    Snapshot,
    WatchRules,
    dialog_info_body,
    full_state,
)
from gateway.core.sip.errors import LocalSipError, RemoteSipError
from gateway.core.sip.events import (
    ALLOW_EVENTS,
    ALLOW_EVENTS_WITH_PRESENCE,
    DIALOG,
    PRESENCE,
    STOPPING,
    Input,
    IntervalTooBrief,
    SubscriptionState,
    bounded_expires,
    parse_event_untrusted,
    parse_expires_untrusted,
    terminated_value,
)
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.presence import CONTENT_TYPE as PIDF
from gateway.core.sip.presence import (
    Pidf,
    Publication,
    Publications,
    Registrations,
    closed_document,
    open_document,
)
from gateway.core.sip.transaction import ServerTransaction
from gateway.core.sip.uri import SipUri
from gateway.core.store.errors import StoreError
from gateway.core.store.interface import StoredPublication
from gateway.core.transport.flows import Flow

if TYPE_CHECKING:
    from gateway.core.calls.call import Call
    from gateway.core.gateway import Gateway

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 20_000
"""Dialog subscriptions at once; a new one past it gets 503."""
MAX_PER_ACCOUNT = 200
"""Dialog subscriptions of one watching account at once (a phone's BLF keys and expansion
modules, a key each); past it 403."""
DialogKey = tuple[str, str]  # (Call-ID, our tag)
Involved = tuple[str, Direction]  # (account, direction)


@attrs.define(eq=False)
class Watch:
    """One subscription: ``watcher``'s phone watching ``watched``'s calls; we are its
    notifier."""

    watcher: str
    watched: str
    entity: str
    """The URI the documents are about (RFC 4235 §4.1: the subscription's target)."""
    show_parties: bool
    pickup: bool
    """Whether the watcher may pick up the watched account's ringing calls: its documents
    carry their Call-ID and tags."""
    event: str
    """The SUBSCRIBE's Event value, repeated in our NOTIFYs (RFC 6665 §8.2.1, id included)."""
    subscribe: Request
    flow: Flow
    dialog: Dialog
    state: SubscriptionState
    package: str = DIALOG
    """``dialog`` (its calls) or ``presence`` (its publications)."""
    notifications: Notifications = attrs.field(factory=Notifications)
    final: str | None = None
    """Once the subscription is to end: the Subscription-State of its last NOTIFY."""
    changed: trio.Event = attrs.field(factory=trio.Event)
    """Set when the notifier task has something to do (a change, a refresh, the end)."""
    ended: trio.Event = attrs.field(factory=trio.Event)
    since: float = attrs.field(factory=time.time)

    @property
    def key(self) -> DialogKey:
        return (self.dialog.call_id, self.dialog.local_tag)

    @property
    def contact(self) -> str:
        contacts = self.subscribe.contacts
        return str(contacts[0].uri) if contacts else ""

    def wake(self) -> None:
        self.changed.set()


@attrs.define(eq=False)
class Tracked:
    """One call of a watched account, as its watchers see it."""

    id: str
    direction: Direction
    phase: Phase
    local: Party | None = None
    remote: Party | None = None
    ids: DialogIds | None = None

    def entry(self) -> DialogEntry:
        return DialogEntry(self.id, self.phase, self.direction, self.local, self.remote, self.ids)


@attrs.define(eq=False)
class Watched:
    """A watched account: its subscriptions and its calls in progress."""

    watches: list[Watch] = attrs.field(factory=list)
    calls: dict[tuple[Call, Direction], Tracked] = attrs.field(factory=dict)

    def snapshot(self) -> Snapshot:
        return full_state([tracked.entry() for tracked in self.calls.values()])


@attrs.frozen
class DialogSubscriptionInfo:
    """One dialog subscription as ``status``/metrics show it."""

    watcher: str
    watched: str
    contact: str
    expires_in: float


class DialogEvents:
    """The notifier of the ``dialog`` package: SUBSCRIBEs (from the message-summary layer,
    which hands over those with ``Event: dialog``) and call events (from the call manager)."""

    def __init__(self, gateway: Gateway, nursery: trio.Nursery) -> None:
        self.gateway = gateway
        self.endpoint = gateway.endpoint
        self._nursery = nursery
        self.rules = WatchRules.of(
            [(group.accounts, group.show_parties) for group in gateway.config.dialog_watch_groups],
            pickup=[group.accounts for group in gateway.config.dialog_watch_groups if group.pickup],
        )
        self.watched: dict[str, Watched] = {}
        """Accounts someone watches; empty, the call layer tells us nothing."""
        self.presence_allow = gateway.config.presence.allow
        self.allow_events = (
            ALLOW_EVENTS if self.presence_allow == "none" else ALLOW_EVENTS_WITH_PRESENCE
        )
        """What ``Allow-Events`` lists (RFC 6665 §8.2.2): presence only while it is on."""
        self.publications = Publications()
        """Every account's presence publications (PUBLISH: gateway/core/calls/presence.py)."""
        self.presence_watched: dict[str, list[Watch]] = {}
        """Accounts whose presence someone watches, and those subscriptions."""
        presence = gateway.config.presence
        self.registrations = (
            Registrations() if presence.allow != "none" and presence.from_registration else None
        )
        """Whether each account in :attr:`presence_watched` is registered (``[presence]
        from_registration``; None without it), kept by gateway/core/calls/presence.py."""
        self._by_dialog: dict[DialogKey, Watch] = {}
        self._per_account: dict[str, int] = {}
        self._involved: dict[Call, set[Involved]] = {}
        """The watched accounts each tracked call involves, and how."""
        self.refused = 0
        """New subscriptions refused for a limit, since the start."""
        self.store_failures = FailureLog(
            log,
            "the store (presence)",
            "reads and writes",
            "until it answers each node keeps the publications it took, and its watchers see "
            "what it knows",
        )
        """The presence service's reads and writes of the store (bindings, publications): a
        store that is down is logged once, summarized every 300 s, and once more when it
        answers again (gateway/core/failure_log.py), not once per PUBLISH and poll."""
        self._stopping = False

    def __len__(self) -> int:
        return len(self._by_dialog)

    @property
    def presence_subscriptions(self) -> int:
        """How many of them are presence subscriptions."""
        return sum(len(watches) for watches in self.presence_watched.values())

    def listing(self) -> list[DialogSubscriptionInfo]:
        """Every dialog subscription, for an operator."""
        now = trio.current_time()
        return [
            DialogSubscriptionInfo(w.watcher, w.watched, w.contact, w.state.expires_at - now)
            for w in self._by_dialog.values()
        ]

    # -- SUBSCRIBE ------------------------------------------------------------------------------

    def subscribe(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None:
        """A SUBSCRIBE outside any dialog with ``Event: dialog`` (or ``presence``, while the
        presence service is on)."""
        self._nursery.start_soon(self._answer_new, transaction, request, flow)

    async def _answer_new(
        self, transaction: ServerTransaction, request: Request, flow: Flow
    ) -> None:
        watch: Watch | None = None
        try:
            response, watch = self._new(request, flow)
        except Exception:
            log_exception(log, "internal error on SUBSCRIBE %s", request.call_id)
            response = make_response(request, 500, "Server Internal Error")
        if response.to.tag is None:  # RFC 3261 §8.2.6.2
            to = response.to.with_tag(self.gateway.ids.new_tag())
            response = response.with_headers(response.headers.set("To", str(to)))
        try:
            await self.endpoint.respond(transaction, response)
        finally:
            # The first NOTIFY follows the 2xx (a phone could not place one that overtook it).
            if watch is not None:
                self._nursery.start_soon(self._notifier, watch)

    def _new(self, request: Request, flow: Flow) -> tuple[Response, Watch | None]:
        try:
            # dialog or presence: the caller looked
            package = parse_event_untrusted(request.headers.get("Event")).package
            expires = parse_expires_untrusted(request.headers.get("Expires"))
            require_contact(request)
        except RemoteSipError as err:
            return make_response(request, err.status or 400, err.reason), None
        asked = bounded_expires(expires)
        if isinstance(asked, IntervalTooBrief):
            brief = make_response(request, 423, extra=[("Min-Expires", str(asked.min_expires))])
            return brief, None
        body_type = PIDF if package == PRESENCE else CONTENT_TYPE
        if not _accepts(request.headers.get_all("Accept"), body_type):
            # RFC 6665 §4.2.1.1 ... RFC 3261 §21.4.7: we send no other body type.
            return make_response(request, 406, extra=[("Accept", body_type)]), None
        calls = self.gateway.calls
        assert calls is not None
        caller = calls.identify_caller(request, flow)
        if isinstance(caller, Response):
            return caller, None
        if caller.kind != "account" or caller.name is None:
            return make_response(request, 403, "Forbidden (subscriptions are for accounts)"), None
        watcher = caller.name
        target = self._target(request.uri)
        if target is None:
            return make_response(request, 404, "Not Found (not an address of ours)"), None
        user, entity = target
        show_parties = (
            self.rules.may_watch(watcher, user)
            if package == DIALOG
            else self._may_watch_presence(watcher, user)
        )
        if show_parties is None:
            return make_response(request, 403, "Forbidden (not allowed to watch that)"), None
        store = self.gateway.store
        if store is None or store.get_account(user) is None:
            return make_response(request, 404, "Not Found (no such account)"), None
        if self._stopping:
            stopping = make_response(
                request, 503, "Service Unavailable (stopping)", extra=[("Retry-After", "30")]
            )
            return stopping, None
        self._replace_same_contact(watcher, user, request, package)
        if len(self._by_dialog) >= MAX_SUBSCRIPTIONS:
            self.refused += 1
            log.warning(
                "subscription limit (%d) reached: refusing %s's %s subscription",
                MAX_SUBSCRIPTIONS,
                watcher,
                package,
            )
            return make_response(request, 503, "Service Unavailable (subscription limit)"), None
        if self._per_account.get(watcher, 0) >= MAX_PER_ACCOUNT:
            self.refused += 1
            return make_response(request, 403, "Forbidden (account subscription limit)"), None
        response = make_response(
            request,
            200,
            to_tag=self.gateway.ids.new_tag(),
            extra=[
                ("Expires", str(asked)),
                # sips: where RFC 3261 §12.1.1 wants it (a BLF SUBSCRIBE to sips: over TLS):
                # the NOTIFYs then go over TLS only (Dialog.secure).
                ("Contact", str(self.endpoint.contact_answering(request, flow))),
                # RFC 3261 §12.1.1: the phone's route set is the Record-Route we echo.
                *[("Record-Route", rr) for rr in request.headers.get_all("Record-Route")],
            ],
        )
        now = trio.current_time()
        state = SubscriptionState.started(now=now)
        state.handle(Input.ACCEPTED, now=now, expires=asked)
        watch = Watch(
            watcher=watcher,
            watched=user,
            entity=entity,
            show_parties=show_parties,
            pickup=package == DIALOG and self.rules.may_pick_up(watcher, user),
            event=request.headers.get("Event") or package,
            subscribe=request,
            flow=flow,
            dialog=Dialog.create_uas(request, response, over_tls=flow.secure),
            state=state,
            package=package,
        )
        if asked == 0:
            watch.final = terminated_value("timeout")  # a fetch (RFC 6665 §4.4.3)
        self._add(watch)
        what = "calls" if package == DIALOG else "presence"
        log.info("%s watches the %s of %s for %d s", watcher, what, user, asked)
        return response, watch

    def _may_watch_presence(self, watcher: str, watched: str) -> bool | None:
        """``[presence] allow`` (None: refused; never identities, which PIDF has none of).
        Checked before the target is looked up, as for BLF: no probing of names."""
        if watcher == watched or self.presence_allow == "all-accounts":
            return False
        if (
            self.presence_allow == "same-group"
            and self.rules.may_watch(watcher, watched) is not None
        ):
            return False
        return None

    def _target(self, uri: object) -> tuple[str, str] | None:
        """The account name a SUBSCRIBE's Request-URI names in one of our domains, and the
        URI our documents are about (``sip:user@host``, its parameters left out)."""
        directory = self.gateway.directory
        if not isinstance(uri, SipUri) or directory is None:
            return None
        host = uri.host_port()
        user = called_user(uri)
        if not user or not directory.is_local_domain(host):
            return None
        return user, str(SipUri(uri.scheme, uri.host, user=uri.user, port=uri.port))

    def _replace_same_contact(
        self, watcher: str, watched: str, request: Request, package: str
    ) -> None:
        """A phone subscribing again to the same account from the Contact of a subscription
        it still has (it rebooted and forgot the old one): the old one is dropped without a
        NOTIFY, which the phone would answer 481 anyway."""
        contacts = request.contacts
        contact = str(contacts[0].uri) if contacts else None
        if package == PRESENCE:
            olds = list(self.presence_watched.get(watched, ()))
        else:
            found = self.watched.get(watched)
            olds = list(found.watches) if found is not None else []
        for old in olds:
            if old.watcher == watcher and old.contact == contact and old.final is None:
                log.info("%s subscription of %s to %s replaced", package, watcher, watched)
                self._forget(old)

    def _add(self, watch: Watch) -> None:
        self._by_dialog[watch.key] = watch
        self._per_account[watch.watcher] = self._per_account.get(watch.watcher, 0) + 1
        if watch.package == PRESENCE:
            if watch.watched not in self.presence_watched:
                # Its first watcher here: what other nodes (or this one's previous run)
                # published for it, once; then kept by PUBLISHes here and the poll.
                self.load_publications([watch.watched])
            self.presence_watched.setdefault(watch.watched, []).append(watch)
            registrations = self.registrations
            if registrations is not None and watch.watched not in registrations:
                # Its first watcher: looked up once; then kept by REGISTERs and the store.
                expiries = self.binding_expiries(watch.watched)
                registrations.watch(watch.watched, expiries or (), now=self.wall_clock())
            watch.notifications.push(())  # the document is read when the NOTIFY is built
            return
        watched = self.watched.get(watch.watched)
        if watched is None:
            watched = self.watched[watch.watched] = Watched()
            self._find_calls(watch.watched, watched)
        watched.watches.append(watch)
        watch.notifications.push(watched.snapshot())

    def _find_calls(self, account: str, watched: Watched) -> None:
        """The calls in progress of an account just watched (once: its later calls are
        reported as they change)."""
        calls = self.gateway.calls
        if calls is None:
            return
        for call in list(calls.calls):
            for involved in _involved(call):
                if involved[0] == account:
                    self._track(call, involved, watched, None)

    # -- requests in a subscription's dialog ------------------------------------------------------

    def knows_dialog(self, key: tuple[str, str]) -> bool:
        """Whether (Call-ID, our tag) ``key`` is the dialog of one of our dialog subscriptions."""
        return key in self._by_dialog

    def in_dialog(self, transaction: ServerTransaction, request: Request, flow: Flow) -> bool:
        """A request with a To tag; False when it is in none of our dialog subscriptions."""
        watch = self._by_dialog.get((request.call_id, request.to.tag or ""))
        if watch is None:
            return False
        watch.flow = flow  # its latest flow is the way back to it (a NAT rebinding)
        self._nursery.start_soon(self._answer_in_dialog, transaction, request, watch)
        return True

    async def _answer_in_dialog(
        self, transaction: ServerTransaction, request: Request, watch: Watch
    ) -> None:
        """Answer a refresh or unsubscribe, then tell the notifier task: the NOTIFY it sends
        (RFC 6665 §4.2.1.2, §4.2.1.4) follows our 2xx rather than overtaking it."""
        granted: int | None = None
        try:
            response, granted = self._refresh(watch, request)
        except Exception:
            log_exception(log, "internal error on %s %s", request.method, request.call_id)
            response = make_response(request, 500, "Server Internal Error")
        try:
            await self.endpoint.respond(transaction, response)
        finally:
            if granted == 0:
                watch.final = watch.final or terminated_value("timeout")
            elif granted is not None and watch.package == PRESENCE:
                watch.notifications.push(())
            elif granted is not None and (watched := self.watched.get(watch.watched)):
                watch.notifications.push(watched.snapshot())
            watch.wake()

    def _refresh(self, watch: Watch, request: Request) -> tuple[Response, int | None]:
        """The answer to a request in the subscription's dialog, and the Expires a refresh
        granted (0: unsubscribed; None: refused)."""
        if request.method != "SUBSCRIBE":
            return make_response(request, 405, extra=[("Allow", "SUBSCRIBE")]), None
        if watch.final is not None:
            return make_response(request, 481), None
        try:
            watch.dialog.receive_request(request)
            event = parse_event_untrusted(request.headers.get("Event"))
            expires = parse_expires_untrusted(request.headers.get("Expires"))
        except RemoteSipError as err:
            return make_response(request, err.status or 400, err.reason), None
        except LocalSipError:
            return make_response(request, 481), None
        if event.package != watch.package:
            return make_response(request, 489, extra=[("Allow-Events", self.allow_events)]), None
        asked = bounded_expires(expires)
        if isinstance(asked, IntervalTooBrief):
            brief = make_response(request, 423, extra=[("Min-Expires", str(asked.min_expires))])
            return brief, None
        now = trio.current_time()
        if asked == 0:
            # RFC 6665 §4.2.1.4 (§4.1.2.3): an unsubscribe; a final NOTIFY with the state.
            watch.state.handle(Input.UNSUBSCRIBED, now=now)
        else:
            watch.state.handle(Input.ACCEPTED, now=now, expires=asked)
        return make_response(request, 200, extra=[("Expires", str(asked))]), asked

    # -- NOTIFY -------------------------------------------------------------------------------

    async def _notifier(self, watch: Watch) -> None:
        """The subscription's task: its NOTIFYs one at a time, its expiry, its end."""
        try:
            while watch.final is None:
                taken = watch.notifications.take()
                if taken is not None:
                    if not await self._notify(watch, *taken, self._active(watch)):
                        return
                    continue
                watch.changed = trio.Event()
                with trio.move_on_at(watch.state.expires_at):
                    await watch.changed.wait()
                if watch.state.handle_timer(now=trio.current_time()):
                    log.info(
                        "%s subscription of %s to %s expired",
                        watch.package,
                        watch.watcher,
                        watch.watched,
                    )
                    watch.final = terminated_value("timeout")  # RFC 6665 §4.2.2
            if self._by_dialog.get(watch.key) is not watch:
                return  # replaced by the phone's new subscription: nobody to tell
            watched = self.watched.get(watch.watched) if watch.package == DIALOG else None
            watch.notifications.waiting.clear()
            watch.notifications.push(watched.snapshot() if watched is not None else ())
            taken = watch.notifications.take()
            assert taken is not None
            await self._notify(watch, *taken, watch.final)
        except Exception:
            log_exception(
                log,
                "%s subscription of %s to %s failed",
                watch.package,
                watch.watcher,
                watch.watched,
            )
        finally:
            self._forget(watch)

    def _active(self, watch: Watch) -> str:
        left = max(int(watch.state.expires_at - trio.current_time()), 0)
        return f"active;expires={left}"

    async def _notify(self, watch: Watch, version: int, snapshot: Snapshot, state: str) -> bool:
        """One NOTIFY over the flow the subscriber's latest request came on; False when the
        subscription is gone at its side (481, or a timeout: RFC 6665 §4.2.2)."""
        flow = watch.flow
        if watch.package == PRESENCE:
            # RFC 3856 §6.7: the current state, as published (or neutral: nothing was).
            body = self.presence_document(watch.watched, watch.entity)
            content_type = PIDF
        else:
            body = dialog_info_body(
                watch.entity,
                version,
                snapshot,
                show_parties=watch.show_parties,
                pickup=watch.pickup,
            )
            content_type = CONTENT_TYPE
        request = watch.dialog.create_request(
            "NOTIFY",
            via=self.endpoint.new_via_for(flow.transport),
            contact=self.endpoint.our_contact(flow.transport, sips=watch.dialog.secure),
            extra=[("Event", watch.event), ("Subscription-State", state)],
            body=body,
            content_type=content_type,
        )
        _, final = await send_and_wait(
            self.endpoint,
            request.with_headers(request.headers.remove("Via")),
            subscriber_destination(flow, watch.dialog),
            trunk=None,
            cnonce=lambda: self.gateway.ids.token_hex(8),
            next_cseq=watch.dialog.take_cseq,
        )
        if final.status in (408, 481):
            log.info(
                "%s subscription of %s to %s ended: NOTIFY answered %d",
                watch.package,
                watch.watcher,
                watch.watched,
                final.status,
            )
            watch.state.handle(Input.DIALOG_GONE, now=trio.current_time())
            return False
        return True

    # -- ending -------------------------------------------------------------------------------

    def _forget(self, watch: Watch) -> None:
        if self._by_dialog.get(watch.key) is not watch:
            return
        del self._by_dialog[watch.key]
        left = self._per_account.get(watch.watcher, 1) - 1
        if left > 0:
            self._per_account[watch.watcher] = left
        else:
            self._per_account.pop(watch.watcher, None)
        if watch.final is None:
            watch.final = terminated_value("noresource")  # its task ends without a NOTIFY
        watch.dialog.terminate()
        watch.wake()
        watch.ended.set()
        if watch.package == PRESENCE:
            watchers = self.presence_watched.get(watch.watched, [])
            if watch in watchers:
                watchers.remove(watch)
            if not watchers:
                self.presence_watched.pop(watch.watched, None)
                if self.registrations is not None:
                    self.registrations.forget(watch.watched)
            return
        watched = self.watched.get(watch.watched)
        if watched is None:
            return
        watched.watches.remove(watch)
        if not watched.watches:
            # Nobody watches the account any more: its calls stop being tracked.
            del self.watched[watch.watched]
            for call, direction in watched.calls:
                involved = self._involved.get(call)
                if involved is not None:
                    involved.discard((watch.watched, direction))
                    if not involved:
                        del self._involved[call]

    async def stop(self) -> None:
        """End every subscription (the gateway drains or stops): each gets its final NOTIFY,
        ``terminated;reason=deactivated``; returns when they have been answered or the
        caller's deadline passes (those not answered by then are forgotten)."""
        self._stopping = True  # new subscriptions get 503 from now on
        watches = list(self._by_dialog.values())
        if not watches:
            return
        log.info("ending %d dialog and presence subscription(s)", len(watches))
        for watch in watches:
            if watch.final is None:
                watch.state.handle(Input.STOPPED, now=trio.current_time())
                watch.final = STOPPING
            watch.wake()
        try:
            for watch in watches:
                await watch.ended.wait()
        finally:
            # The caller's deadline passed (a phone that answers nothing): forgotten now, its
            # NOTIFY transaction times out on its own.
            for watch in watches:
                self._forget(watch)

    # -- presence (from PUBLISH and its expiry, gateway/core/calls/presence.py) -----------------

    def presence_changed(self, account: str) -> None:
        """``account``'s document changed: each of its presence watchers gets a NOTIFY."""
        for watch in self.presence_watched.get(account, ()):
            watch.notifications.push(())
            watch.wake()

    def presence_document(self, account: str, entity: str) -> bytes:
        """What ``account``'s watchers see (RFC 3856 §6.7: the current state): its publication
        (a phone's own word wins while it is valid); else, with ``from_registration``, ``open``
        while it is registered; else the neutral ``closed``."""
        document = self.publications.document(account)
        if document is not None:
            return document.body
        if self.registrations is not None and self.registrations.is_open(account):
            return open_document(entity)
        return closed_document(entity)

    def registration_changed(self, account: str, expiries: Sequence[float]) -> None:
        """``account``'s live bindings expire at ``expiries`` (none: not registered); its
        watchers get a NOTIFY when that makes it open or closed and no publication of its
        hides the change (not on a refresh)."""
        registrations = self.registrations
        if registrations is None:
            return
        changed = registrations.update(account, expiries, now=self.wall_clock())
        if changed and self.publications.document(account) is None:
            log.debug("presence of %s from its registration: %s", account, bool(expiries))
            self.presence_changed(account)

    def wall_clock(self) -> float:
        """The clock bindings are stamped with (the registrar's)."""
        registration = self.gateway.registration
        return registration.clock() if registration is not None else time.time()

    def binding_expiries(self, account: str) -> list[float] | None:
        """When ``account``'s live bindings in the store expire; None when the store could
        not be read (logged)."""
        store = self.gateway.store
        if store is None:
            return None
        wall = self.wall_clock()
        try:
            bindings = store.bindings_for_account(account, now=wall)
        except StoreError as exc:
            self.store_failures.failed(
                f"registrations of {account} for its presence not read: {exc}", now=wall
            )
            return None
        self.store_failures.answered(now=wall)
        return [binding.expires_at for binding in bindings]

    def binding_expiries_of(self, accounts: Sequence[str]) -> dict[str, list[float]] | None:
        """:meth:`binding_expiries` of several accounts (at most
        :data:`~gateway.core.store.interface.MAX_BULK_ACCOUNTS`) in one store query; None when
        the store could not be read (logged)."""
        store = self.gateway.store
        if store is None:
            return None
        wall = self.wall_clock()
        try:
            found = store.binding_expiries(accounts, now=wall)
        except StoreError as exc:
            why = f"registrations of {len(accounts)} accounts for their presence not read: {exc}"
            self.store_failures.failed(why, now=wall)
            return None
        self.store_failures.answered(now=wall)
        return found

    def load_publications(self, accounts: Sequence[str]) -> bool:
        """Make the publications of ``accounts`` (at most
        :data:`~gateway.core.store.interface.MAX_BULK_ACCOUNTS`) what the store holds, in one
        query: those made, refreshed, modified or removed on other nodes; their watchers get a
        NOTIFY when the document they see changed. False when the store could not be read
        (logged: the node's memory answers alone meanwhile)."""
        store = self.gateway.store
        if store is None:
            return False
        wall = self.wall_clock()
        try:
            found = store.publications_of(accounts, now=wall)
        except StoreError as exc:
            why = f"presence publications of {len(accounts)} accounts not read: {exc}"
            self.store_failures.failed(why, now=wall)
            return False
        self.store_failures.answered(now=wall)
        now = trio.current_time()
        offset = now - wall  # stored times are wall-clock; the table runs on trio's clock
        taken = self.publications.taken
        for account in accounts:
            try:
                stored = [_publication(row, offset) for row in found.get(account, ())]
                if self.publications.reconcile(account, stored, now=now):
                    log.debug("presence of %s changed on another node", account)
                    self.presence_changed(account)
            except Exception:  # a bug: logged, the others go on, the gateway too
                log_exception(log, "presence publications of %s from the store", account)
        presence = self.gateway.presence
        if presence is not None and self.publications.taken != taken:
            presence.publications_changed()  # new expiries, each forgotten at its time
        return True

    # -- calls (from the call manager, while :attr:`watched` is not empty) ------------------------

    def call_changed(self, call: Call, kind: str) -> None:
        """A call event: the watched accounts it involves get a NOTIFY with the new state."""
        before = self._involved.get(call)
        watched_names = self.watched
        if (
            before is None
            and call.a.peer_name not in watched_names
            and not any(leg.peer_name in watched_names for leg in call.b_legs)
        ):
            return  # a call of accounts nobody watches: a lookup per party, nothing kept
        now_involved = _involved(call) if kind != "ended" else []
        changed: set[str] = set()
        for involved in now_involved:
            watched = self.watched.get(involved[0])
            if watched is not None:
                self._track(call, involved, watched, kind)
                changed.add(involved[0])
        for involved in before or ():
            if involved[0] in changed:
                continue
            # The call ended, or it no longer involves the account (a transfer moved it).
            watched = self.watched.get(involved[0])
            tracked = watched.calls.get((call, involved[1])) if watched is not None else None
            if watched is not None and tracked is not None:
                tracked.phase = Phase.TERMINATED
                changed.add(involved[0])
        for account in changed:
            watched = self.watched[account]
            snapshot = watched.snapshot()
            for watch in watched.watches:
                watch.notifications.push(snapshot)
                watch.wake()
            # A terminated dialog is told once, then forgotten (RFC 4235 §3.7.1).
            for key in [
                k for k, tracked in watched.calls.items() if tracked.phase is Phase.TERMINATED
            ]:
                del watched.calls[key]
                accounts = self._involved.get(key[0])
                if accounts is not None:
                    accounts.discard((account, key[1]))
                    if not accounts:
                        del self._involved[key[0]]

    def _track(self, call: Call, involved: Involved, watched: Watched, kind: str | None) -> None:
        account, direction = involved
        tracked = watched.calls.get((call, direction))
        if tracked is None:
            tracked = Tracked(self.gateway.ids.token_hex(8), direction, Phase.TRYING)
            watched.calls[(call, direction)] = tracked
            self._involved.setdefault(call, set()).add(involved)
        tracked.phase = _phase(call, account, direction, kind)
        if tracked.local is None:
            tracked.local, tracked.remote = _parties(call, account, direction)
        if (
            tracked.phase is Phase.EARLY
            and direction is Direction.RECIPIENT
            and self.rules.pickup  # no group allows pickup: nobody is shown them
        ):
            tracked.ids = _ringing_dialog(call, account)  # a phone that still rings


def _publication(row: StoredPublication, offset: float) -> Publication:
    """A stored publication on the table's clock (``offset``: trio's time minus wall time)."""
    document = Pidf(row.body, row.open, row.definite)
    return Publication(
        row.account,
        row.etag,
        document,
        row.expires_at + offset,
        row.published_at + offset,
        saved_etag=row.etag,
    )


def _involved(call: Call) -> list[Involved]:
    """The accounts a call involves and how: its caller, and the accounts it rings."""
    found: list[Involved] = []
    if call.a.peer_kind == "account" and call.a.peer_name is not None:
        found.append((call.a.peer_name, Direction.INITIATOR))
    for leg in call.b_legs:
        if leg.peer_kind == "account" and leg.peer_name is not None:
            involved = (leg.peer_name, Direction.RECIPIENT)
            if involved not in found:
                found.append(involved)
    return found


def _legs_to(call: Call, account: str) -> list[BLeg]:
    return [leg for leg in call.b_legs if leg.peer_kind == "account" and leg.peer_name == account]


def _phase(call: Call, account: str, direction: Direction, kind: str | None) -> Phase:
    """The account's dialog state in ``call`` (RFC 4235 §3.7.1), from what the call has
    seen; ``kind`` is the call event being reported (None: found by a walk)."""
    answered = call.state == "answered"
    if direction is Direction.INITIATOR:
        if answered:
            return Phase.CONFIRMED
        if kind == "ringing" or any(leg.provisional_seen for leg in call.b_legs):
            return Phase.EARLY  # our 1xx to the caller carries our tag: an early dialog
        return Phase.TRYING
    legs = _legs_to(call, account)
    if answered or call.b is not None:
        return Phase.CONFIRMED if call.b in legs else Phase.TERMINATED  # answered elsewhere
    if legs and all(leg.finished for leg in legs):
        return Phase.TERMINATED  # refused, busy, not answered
    if any(leg.provisional_seen for leg in legs):
        return Phase.EARLY
    return Phase.TRYING


def _ringing_dialog(call: Call, account: str) -> DialogIds | None:
    """Our early dialog with a phone of ``account`` that rings (the first one, when several
    do: picking up any of them takes the call), as that phone sees it (RFC 4235 §4.1)."""
    for leg in _legs_to(call, account):
        ringing = leg.last_provisional
        if ringing is None or leg.finished or leg.invite is None:
            continue
        phone_tag, our_tag = ringing.to.tag, leg.invite.from_.tag
        if phone_tag and our_tag:
            return DialogIds(leg.invite.call_id, local_tag=phone_tag, remote_tag=our_tag)
    return None


def _parties(call: Call, account: str, direction: Direction) -> tuple[Party | None, Party | None]:
    """(local, remote) identities of the account's dialog (RFC 4235 §4.1.6): what its own
    INVITE said when it called; what our INVITE to it said (the caller as presented to it,
    privacy applied) when called. None until that INVITE exists."""
    if direction is Direction.INITIATOR:
        invite = call.a.invite
        if invite is None:
            return None, None
        return _party(invite.from_), _party(invite.to)
    for leg in _legs_to(call, account):
        if leg.invite is not None:
            return _party(leg.invite.to), _party(leg.invite.from_)
    return None, None


def _party(name_addr: NameAddr) -> Party | None:
    uri = name_addr.uri
    if uri is None:
        return None
    display = name_addr.display_name
    if display is not None:
        display = display.strip()
        if len(display) >= 2 and display[0] == display[-1] == '"':
            display = display[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    if isinstance(uri, SipUri):
        uri = SipUri(uri.scheme, uri.host, user=uri.user, port=uri.port)  # no parameters
    return Party(str(uri), display or None)


def _accepts(accept: Sequence[str], body_type: str) -> bool:
    """Whether the SUBSCRIBE's Accept headers allow our body (none: the package's default,
    RFC 6665 §8.2.2 ... RFC 4235 §3.5, RFC 3856 §6.6)."""
    if not accept:
        return True
    types = {item.split(";")[0].strip().lower() for value in accept for item in value.split(",")}
    return bool(types & {body_type, "application/*", "*/*"})
