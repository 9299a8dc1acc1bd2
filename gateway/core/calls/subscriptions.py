"""Message-waiting subscriptions (RFC 3842 ``message-summary``, RFC 6665) relayed to the
voicemail trunk, B2BUA-style.

Theory of operation. A registered phone subscribes to its own mailbox (``SUBSCRIBE`` with
``Event: message-summary``, its address of record or any URI in our domains as the target). The
gateway authenticates the account as for a call (407, RFC 3261 §22.3) and sends its own
SUBSCRIBE to the trunk with ``voicemail = true``: new Call-ID and tags, the Request-URI and To
user the account's number on that trunk (the first of the trunk's ``dids`` reaching the account,
in the trunk's ``number_format``: how the trunk's calls reach the account, the other way
round), the From as a call of the account to that trunk presents it, the trunk's digest
challenges answered with its credentials. A voicemail trunk named by DNS gets it at its cached
targets (trunk_dns.py: no DNS query here, 503 while its name has not resolved), the next after
a transport error, no response within the trunk's ``response_timeout`` or a 503 (RFC 3263
§4.3), the same subscription with the next CSeq; the target that took it gets the dialog's
requests (its Contact is not looked up). A SUBSCRIBE that the last target (the only one, for a
trunk not named by DNS) never got or never answered marks a probed trunk down, as a call's
INVITE and a MESSAGE do. Expires is bounded (:mod:`gateway.core.sip.events`:
423 below a minute, at most an hour). The trunk's final response goes back to the phone; with a
2xx both dialogs exist (RFC 6665 §4.1.2.1, RFC 3261 §12.1):

* the trunk's NOTIFYs (in its dialog, possibly before its 2xx, §4.1.2.4) go to the phone in
  the phone's dialog, over the flow its SUBSCRIBE came on (the way through its NAT), with
  Subscription-State and the ``application/simple-message-summary`` body as they came (at
  most ``messages.MAX_NOTIFY_BODY`` bytes); the phone's answer goes back to the trunk;
* the phone's refreshes and ``Expires: 0`` unsubscribes go to the trunk in the trunk's dialog,
  the answer back to the phone (§4.1.2.2, §4.1.2.3);
* the subscription ends (both sides forgotten) on ``Subscription-State: terminated`` (§4.1.3),
  on expiry without a refresh (the phone then gets ``terminated;reason=timeout``, §4.2.2), on a
  481 or a timeout of either dialog's requests (§4.1.2.2, §4.2.2), and when the gateway drains
  or stops: the phone gets our final NOTIFY, ``terminated;reason=deactivated`` (§4.2.2: subscribe
  again at once, which reaches another node or this one restarted) with the last message
  summary the trunk sent (RFC 3842: the state is the NOTIFY's body, a final NOTIFY included;
  none when the trunk sent none), and the trunk an unsubscribe (``Expires: 0``, §4.1.2.3),
  both at once. The trunk's side is kept until its final NOTIFY (``terminated``), answered 200
  and not relayed (the phone has had ours), or the stop's deadline.

Bounds: :data:`MAX_SUBSCRIPTIONS` in all (503 past it) and :data:`MAX_PER_ACCOUNT` per
account (403 past it); a phone that subscribes again from the same Contact (it rebooted)
replaces its old subscription, which ends as at a stop but without a NOTIFY to the phone (it
forgot that dialog): unsubscribed at the trunk, and kept while it exists there (RFC 6665
§4.1.2.3, §4.2.2: a NOTIFY is 481 only once the subscription is gone), every NOTIFY of the
trunk's answered 200 and not relayed until its final one (``terminated``) or its expiry: after
a 2xx to the unsubscribe :data:`FINAL_NOTIFY_WAIT`, after a refusal (not 481 or 408, which end
it at once, §4.1.2.2) the expiry last granted. It no longer counts against the account
meanwhile (at most :data:`MAX_CLOSING_PER_ACCOUNT` of an account are kept so; past it the
oldest is forgotten); a stop waits for the unsubscribes under way as for its own. One whose
SUBSCRIBE the trunk has not answered yet closes the same way: its NOTIFYs answered 200, and
unsubscribed as soon as the trunk's 2xx comes (the phone's old SUBSCRIBE then gets 481). Other
event packages get 489 with ``Allow-Events: message-summary, dialog``. ``Event: dialog``
SUBSCRIBEs (and ``Event: presence`` ones while ``[presence] allow`` is not ``"none"``) and
their dialogs go to the gateway's own notifier (gateway/core/calls/dialog_events.py). The
state of each subscription is the sans-IO table of
:class:`gateway.core.sip.events.SubscriptionState`; this module is its trio adapter (sending,
timers).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from gateway.core.calls.messages import MAX_NOTIFY_BODY, NO_RESPONSE, send_and_wait
from gateway.core.calls.routing import (
    SERVER_FAILURES,
    Destination,
    UnroutableTarget,
    called_user,
    destination_for,
    subscriber_destination,
    trunk_uri,
)
from gateway.core.calls.targets import NO_TIMELY_RESPONSE
from gateway.core.interfaces import RouteTarget
from gateway.core.logs import log_exception, transport_error_text
from gateway.core.sip.dialog import (
    SIPS_NOT_ALLOWED,
    Dialog,
    DialogState,
    is_sips,
    require_contact,
)
from gateway.core.sip.errors import LocalSipError, RemoteSipError
from gateway.core.sip.events import (
    ALLOW_EVENTS,
    DIALOG,
    FINAL_NOTIFY_WAIT,
    MESSAGE_SUMMARY,
    PRESENCE,
    STOPPING,
    Input,
    IntervalTooBrief,
    SubscriptionState,
    bounded_expires,
    parse_event_untrusted,
    parse_expires_untrusted,
    parse_subscription_state_untrusted,
    terminated_value,
)
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Request, Response, make_response
from gateway.core.sip.transaction import ServerTransaction
from gateway.core.sip.uri import SipUri, redact_password, remove_param
from gateway.core.transport.flows import TLS_TRANSPORTS, Flow, format_host_port

if TYPE_CHECKING:
    from gateway.core.config import TrunkConfig
    from gateway.core.gateway import Gateway

log = logging.getLogger(__name__)

MAX_SUBSCRIPTIONS = 10_000
"""Relayed subscriptions at once; a new one past it gets 503."""
MAX_PER_ACCOUNT = 8
"""Relayed subscriptions of one account at once (a phone or two, a line each); past it 403."""
MAX_CLOSING_PER_ACCOUNT = MAX_PER_ACCOUNT
"""Replaced subscriptions of one account waiting for their trunk's final NOTIFY: past it the
oldest is forgotten at once (its final NOTIFY then gets 481), so an account re-subscribing fast
from one Contact cannot fill :data:`MAX_SUBSCRIPTIONS` with closing ones."""
ACCEPT = "application/simple-message-summary"  # RFC 3842 §4.1

DialogKey = tuple[str, str]  # (Call-ID, our tag)


@attrs.define(eq=False)
class Subscription:
    """One relayed subscription: the phone's dialog (we are its notifier) and the trunk's
    (we are its subscriber)."""

    account: str
    trunk: TrunkConfig
    state: SubscriptionState
    event: str
    """The phone's Event value, which our NOTIFYs to it repeat (RFC 6665 §8.2.1, id included)."""
    phone_subscribe: Request
    phone_flow: Flow
    phone_tag: str
    trunk_request: Request
    trunk_destination: Destination
    """Where the trunk's SUBSCRIBE went, and its dialog's requests go (the target that took
    it, for a trunk named by DNS: names in its Contact are not looked up)."""
    trunk_alternates: list[Destination] = attrs.field(factory=list)
    """The trunk's other DNS targets, tried in turn while the SUBSCRIBE finds no server."""
    phone_dialog: Dialog | None = None
    trunk_dialog: Dialog | None = None
    answered: trio.Event = attrs.field(factory=trio.Event)
    """Set once the phone has its final response (its dialog exists when that was a 2xx)."""
    ended: trio.Event = attrs.field(factory=trio.Event)
    """Set once the subscription is forgotten (ended, expired, unsubscribed)."""
    since: float = attrs.field(factory=time.time)
    summary: tuple[bytes, str | None] | None = None
    """The last message-summary body the trunk sent, and its Content-Type (RFC 3842)."""
    closing: bool = False
    """Ended at the phone (the gateway stops, or the phone subscribed again from the same
    Contact), unsubscribed at the trunk, whose NOTIFYs are answered until its final one; no
    longer counted against the account's :data:`MAX_PER_ACCOUNT`."""
    replaced: bool = False
    """Replaced by a SUBSCRIBE from the same Contact (closing): kept, its trunk's NOTIFYs
    answered 200, until the trunk's final NOTIFY or its expiry (RFC 6665 §4.1.2.3, §4.2.2).
    One replaced while its SUBSCRIBE to the trunk was unanswered is unsubscribed on its 2xx."""
    closed: trio.Event = attrs.field(factory=trio.Event)
    """Set once nothing of ours is under way for it at the trunk: forgotten, or a replaced one
    whose unsubscribe the trunk refused, kept until its expiry. What a stop waits for."""

    @property
    def phone_key(self) -> DialogKey:
        return (self.phone_subscribe.call_id, self.phone_tag)

    @property
    def trunk_key(self) -> DialogKey:
        tag = self.trunk_request.from_.tag
        assert tag is not None
        return (self.trunk_request.call_id, tag)

    @property
    def contact(self) -> str:
        contacts = self.phone_subscribe.contacts
        return str(contacts[0].uri) if contacts else ""


@attrs.frozen
class SubscriptionInfo:
    """One subscription as ``status``/metrics show it."""

    account: str
    trunk: str
    state: str
    contact: str
    expires_in: float


class Subscriptions:
    """The endpoint's transaction user for SUBSCRIBE and in-dialog NOTIFY of subscriptions."""

    def __init__(self, gateway: Gateway, nursery: trio.Nursery) -> None:
        self.gateway = gateway
        self.endpoint = gateway.endpoint
        self._nursery = nursery
        self._by_phone: dict[DialogKey, Subscription] = {}
        self._by_trunk: dict[DialogKey, Subscription] = {}
        self._per_account: dict[str, int] = {}
        # The open (not closing) subscription of each account and phone Contact: a SUBSCRIBE
        # from that Contact again replaces it (_replace_same_contact), found without a scan of
        # up to MAX_SUBSCRIPTIONS. Entered in _to_trunk, removed in _forget and _start_closing.
        self._by_contact: dict[tuple[str, str], Subscription] = {}
        # Subscriptions ended at the phone and waiting for the trunk's final NOTIFY (closing).
        self._closing: set[Subscription] = set()
        # The replaced ones among them by account, oldest first (MAX_CLOSING_PER_ACCOUNT).
        self._replaced: dict[str, list[Subscription]] = {}
        self._timer_changed = trio.Event()
        self.refused = 0
        """New subscriptions refused for a limit, since the start."""
        self._stopping = False

    def __len__(self) -> int:
        return len(self._by_trunk) - len(self._closing)

    def listing(self) -> list[SubscriptionInfo]:
        """Every subscription, for an operator."""
        now = trio.current_time()
        return [
            SubscriptionInfo(
                s.account, s.trunk.name, s.state.state.value, s.contact, s.state.expires_at - now
            )
            for s in self._by_trunk.values()
            if not s.closing
        ]

    # -- the endpoint's entry points -----------------------------------------------------------

    def subscribe(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None:
        """A SUBSCRIBE outside any dialog; ``Event: dialog`` goes to the dialog notifier."""
        dialogs = self.gateway.dialog_events
        if dialogs is not None and _names_package(
            request.headers.get("Event"), DIALOG, PRESENCE if self.gateway.presence else DIALOG
        ):
            dialogs.subscribe(transaction, request, flow)
            return
        self._nursery.start_soon(self._guarded, transaction, request, self._new(request, flow))

    def knows_dialog(self, request: Request) -> bool:
        """Whether ``request`` (with a To tag) is in one of our subscriptions' dialogs, without
        handing it to them (an OPTIONS in a dialog, which the endpoint answers)."""
        key = (request.call_id, request.to.tag or "")
        if key in self._by_phone or key in self._by_trunk:
            return True
        dialogs = self.gateway.dialog_events
        return dialogs is not None and dialogs.knows_dialog(key)

    def in_dialog(self, transaction: ServerTransaction, request: Request, flow: Flow) -> bool:
        """A request with a To tag; False when it is in none of our subscriptions."""
        key = (request.call_id, request.to.tag or "")
        found = self._by_phone.get(key)
        if found is not None:
            # The phone's latest flow is the way back to it (a new connection, a NAT rebinding).
            found.phone_flow = flow
            work = self._from_phone(found, request)
        elif (found := self._by_trunk.get(key)) is not None:
            work = self._from_trunk(found, request)
        else:
            dialogs = self.gateway.dialog_events
            return dialogs is not None and dialogs.in_dialog(transaction, request, flow)
        self._nursery.start_soon(self._guarded, transaction, request, work)
        return True

    async def _guarded(
        self, transaction: ServerTransaction, request: Request, work: Awaitable[Response]
    ) -> None:
        """Answer ``request`` with what ``work`` returns; a bug is a 500 (STYLE.md habit 6).
        A new subscription's NOTIFYs to the phone wait until its 2xx is out (``answered``):
        the phone could not place a NOTIFY that overtook it."""
        try:
            response = await work
        except Exception:
            log_exception(log, "internal error on %s %s", request.method, request.call_id)
            response = make_response(request, 500, "Server Internal Error")
        if response.to.tag is None:  # RFC 3261 §8.2.6.2
            to = response.to.with_tag(self.gateway.ids.new_tag())
            response = response.with_headers(response.headers.set("To", str(to)))
        await self.endpoint.respond(transaction, response)
        if request.method == "SUBSCRIBE" and request.to.tag is None:
            answered = self._by_phone.get((request.call_id, response.to.tag or ""))
            if answered is not None:
                answered.answered.set()

    # -- a new subscription --------------------------------------------------------------------

    async def _new(self, request: Request, flow: Flow) -> Response:
        try:
            event = parse_event_untrusted(request.headers.get("Event"))
            expires = parse_expires_untrusted(request.headers.get("Expires"))
            require_contact(request)
        except RemoteSipError as err:
            return make_response(request, err.status or 400, err.reason)
        if event.package != MESSAGE_SUMMARY:
            # RFC 6665 §4.2.1.1, §8.2.2: what we accept goes in Allow-Events.
            dialogs = self.gateway.dialog_events
            allowed = dialogs.allow_events if dialogs is not None else ALLOW_EVENTS
            return make_response(request, 489, extra=[("Allow-Events", allowed)])
        asked = bounded_expires(expires)
        if isinstance(asked, IntervalTooBrief):
            return make_response(request, 423, extra=[("Min-Expires", str(asked.min_expires))])
        if self._stopping:
            return make_response(request, 503, "Service Unavailable (shutting down)")
        calls, directory = self.gateway.calls, self.gateway.directory
        assert calls is not None and directory is not None
        caller = calls.identify_caller(request, flow)
        if isinstance(caller, Response):
            return caller
        if caller.kind != "account" or caller.name is None:
            return make_response(request, 403, "Forbidden (subscriptions are for accounts)")
        account = caller.name
        trunk = self.gateway.config.voicemail_trunk
        if not self._own_mailbox(request, account, trunk):
            return make_response(request, 403, "Forbidden (only the account's own mailbox)")
        if trunk is None or not trunk.enabled:
            return make_response(request, 404, "Not Found (no voicemail service configured)")
        mailbox = directory.account_number(trunk, account, caller_id=False)
        if mailbox is None:
            return make_response(
                request, 404, f"Not Found (no mailbox number on trunk {trunk.name})"
            )
        destinations = self._trunk_destinations(trunk, mailbox)
        if flow.secure and is_sips(request.uri):
            # RFC 5630 §3.1.3: a SUBSCRIBE to a SIPS URI, and the NOTIFYs its dialog brings,
            # travel over TLS on every hop: the voicemail trunk's too (only its targets
            # reached over TLS, for a trunk named by DNS), or no subscription.
            secure = [d for d in destinations if d.transport in TLS_TRANSPORTS]
            if destinations and not secure:
                reason = "Temporarily Unavailable (voicemail not reached over TLS for SIPS)"
                return make_response(request, 480, reason, extra=[SIPS_NOT_ALLOWED])
            destinations = secure
        self._replace_same_contact(account, request)
        if len(self._by_trunk) >= MAX_SUBSCRIPTIONS:
            self.refused += 1
            log.warning("subscription limit (%d) reached: refusing %s", MAX_SUBSCRIPTIONS, account)
            return make_response(request, 503, "Service Unavailable (subscription limit)")
        if self._per_account.get(account, 0) >= MAX_PER_ACCOUNT:
            self.refused += 1
            return make_response(request, 403, "Forbidden (account subscription limit)")
        if not destinations:
            return make_response(request, 503, "Service Unavailable (voicemail unreachable)")
        subscription = self._to_trunk(request, flow, account, trunk, mailbox, asked, destinations)
        if subscription is None:
            return make_response(request, 503, "Service Unavailable (voicemail unreachable)")
        return await self._subscribe_trunk(subscription, asked)

    def _trunk_destinations(self, trunk: TrunkConfig, mailbox: str) -> list[Destination]:
        """Where our SUBSCRIBE to the voicemail ``trunk`` may go, in the order tried: for a
        trunk named by DNS its cached targets (trunk_dns.py: RFC 2782 order, at most ``[dns]
        max_targets``; none while its name has not resolved), no DNS query here; else its
        address. Empty (logged) when there is nowhere to send it."""
        targets = self.gateway.trunk_targets
        if targets is not None and trunk.name in targets:
            hops = targets.hops(trunk.name)
            if not hops:
                log.warning("voicemail trunk %s: its name has not resolved", trunk.name)
            return [Destination(hop.transport, hop.host, hop.port) for hop in hops]
        target = trunk_uri(trunk, mailbox)
        try:
            return [destination_for(RouteTarget(target, trunk=trunk.name))]
        except UnroutableTarget as exc:
            shown = redact_password(target)  # never a URI's password in the log
            log.warning("voicemail trunk %s: cannot send to %s: %s", trunk.name, shown, exc)
            return []

    def _own_mailbox(self, request: Request, account: str, trunk: TrunkConfig | None) -> bool:
        """Whether the SUBSCRIBE's target is in our domains and names the account (its
        name, or a number of the voicemail trunk's reaching it) or nobody in particular."""
        uri, directory = request.uri, self.gateway.directory
        assert directory is not None
        if not isinstance(uri, SipUri):
            return False
        host = uri.host_port()
        if not directory.is_local_domain(host):
            return False
        user = called_user(uri)
        if user is None or user == account:
            return True
        return trunk is not None and directory.did_account(trunk.name, user) == account

    def _replace_same_contact(self, account: str, request: Request) -> None:
        """A phone subscribing again from the Contact of a subscription it still has (it
        rebooted and forgot the old one): the old one ends as at a stop, without a NOTIFY to
        the phone (it no longer knows that dialog): unsubscribed at the trunk (RFC 6665
        §4.1.2.3), whose NOTIFYs are answered 200 and not relayed until its final one or its
        expiry, instead of a 481 for a subscription forgotten first. It no longer counts
        against the account's limit."""
        contacts = request.contacts
        contact = str(contacts[0].uri) if contacts else ""
        old = self._by_contact.get((account, contact))
        if old is None:
            return
        log.info(
            "subscription of %s from %s replaced by a new one", account, redact_password(contact)
        )
        # Its state table runs on (it is the trunk's subscription until that ends): the
        # unsubscribe's answer, the trunk's NOTIFYs and its expiry move it (_close_at_trunk).
        old.replaced = True
        replaced = self._replaced.get(account, [])
        while len(replaced) >= MAX_CLOSING_PER_ACCOUNT:
            # Replaced faster than trunks close them: they would hold the global limit.
            self._forget(replaced.pop(0))
            log.info(
                "subscription of %s replaced again: forgotten before its trunk's final NOTIFY",
                account,
            )
        self._replaced.setdefault(account, []).append(old)
        self._start_closing(old)
        if old.phone_dialog is not None:
            old.phone_dialog.terminate()
        if old.trunk_dialog is not None:
            self._nursery.start_soon(self._close_at_trunk, old)
        # else its SUBSCRIBE is unanswered: unsubscribed on its 2xx (_subscribe_trunk), and
        # its NOTIFYs meanwhile (§4.1.2.4) are answered 200 as a closing one's.

    def _to_trunk(
        self,
        request: Request,
        flow: Flow,
        account: str,
        trunk: TrunkConfig,
        mailbox: str,
        expires: int,
        destinations: Sequence[Destination],
    ) -> Subscription | None:
        """Our SUBSCRIBE to the voicemail trunk for ``account``'s ``mailbox``, to the first
        of ``destinations`` (the others kept for failover), registered so that the trunk's
        NOTIFYs find it even before its 2xx. The Request-URI and To name the trunk's address
        as a call's do (for a trunk named by DNS its domain, RFC 3263 §4.2), not the target."""
        directory, ids = self.gateway.directory, self.gateway.ids
        assert directory is not None
        target = trunk_uri(trunk, mailbox)
        try:
            uri = parse_uri_untrusted(target)
        except RemoteSipError as exc:
            shown = redact_password(target)  # never a URI's password in the log
            log.warning("voicemail trunk %s: cannot send to %s: %s", trunk.name, shown, exc)
            return None
        destination, *others = destinations
        presented = directory.account_number(trunk, account) or account
        from_ = NameAddr(self.endpoint.our_uri(destination.transport, presented))
        assert isinstance(uri, SipUri)
        to = NameAddr(attrs.evolve(uri, params=remove_param(uri.params, "transport")))
        fields = [
            ("Max-Forwards", str(max((request.max_forwards or 70) - 1, 1))),
            ("From", str(from_.with_tag(ids.new_tag()))),
            ("To", str(to)),
            ("Call-ID", ids.new_call_id()),
            ("CSeq", "1 SUBSCRIBE"),
            ("Contact", str(self.endpoint.our_contact(destination.transport))),
            ("Event", MESSAGE_SUMMARY),
            ("Expires", str(expires)),
            ("Accept", request.headers.get("Accept") or ACCEPT),
            ("User-Agent", self.gateway.config.sip.user_agent),
        ]
        sent = Request("SUBSCRIBE", uri, Headers.of(fields))
        subscription = Subscription(
            account=account,
            trunk=trunk,
            state=SubscriptionState.started(now=trio.current_time()),
            event=request.headers.get("Event") or MESSAGE_SUMMARY,
            phone_subscribe=request,
            phone_flow=flow,
            phone_tag=ids.new_tag(),
            trunk_request=sent,
            trunk_destination=destination,
            trunk_alternates=others,
        )
        self._by_trunk[subscription.trunk_key] = subscription
        self._by_phone[subscription.phone_key] = subscription
        self._by_contact[(account, subscription.contact)] = subscription
        self._per_account[account] = self._per_account.get(account, 0) + 1
        self._timer_changed.set()
        return subscription

    async def _subscribe_trunk(self, subscription: Subscription, expires: int) -> Response:
        request = subscription.phone_subscribe

        def sent(request: Request) -> None:
            subscription.trunk_request = request

        trunk = subscription.trunk
        while True:
            unsent: list[OSError] = []
            _, final = await send_and_wait(
                self.endpoint,
                subscription.trunk_request,
                subscription.trunk_destination,
                trunk=trunk,
                cnonce=lambda: self.gateway.ids.token_hex(8),
                on_sent=sent,
                on_unsent=unsent.append,
                # A silent target is left for the next before the phone's transaction ends.
                give_up_after=trunk.response_timeout,
            )
            if not self._fail_over(subscription, final):
                break
        self._count_trunk_failure(subscription, final, unsent)
        now = trio.current_time()
        # A 2xx after the subscription already ended (a fetch's terminated NOTIFY overtook
        # it, §4.4.3) still goes to the phone: that NOTIFY waits for it to be relayed.
        if not final.is_success:
            subscription.state.handle(Input.REFUSED, now=now)
            self._forget(subscription)
            subscription.answered.set()
            log.info(
                "subscription of %s refused by trunk %s: %d %s",
                subscription.account,
                subscription.trunk.name,
                final.status,
                final.reason,
            )
            return self._relayed_failure(request, final, subscription.phone_tag)
        if subscription.trunk_dialog is None:
            subscription.trunk_dialog = Dialog.create_uac(subscription.trunk_request, final)
        if subscription.replaced:
            # Replaced while the trunk had not answered: its 2xx made a subscription at the
            # trunk that nobody wants. Unsubscribed at once in the dialog the 2xx made (RFC
            # 6665 §4.1.2.3), closing as any replaced one (its NOTIFYs 200 until its final
            # one); the phone, which subscribed again, gets no dialog we do not know.
            if subscription.trunk_dialog.state is not DialogState.TERMINATED:
                # (Terminated: its final NOTIFY came first.) Forgotten already (past
                # MAX_CLOSING_PER_ACCOUNT, or expired): unsubscribed all the same.
                subscription.state.handle(
                    Input.ACCEPTED, now=now, expires=_expires_of(final, expires)
                )
                self._timer_changed.set()
                self._nursery.start_soon(self._close_at_trunk, subscription)
            return make_response(
                request,
                481,
                "Call/Transaction Does Not Exist (replaced by a newer subscription)",
                to_tag=subscription.phone_tag,
            )
        granted = _expires_of(final, expires)
        subscription.state.handle(Input.ACCEPTED, now=now, expires=granted)
        response = make_response(
            request,
            final.status,
            final.reason,
            to_tag=subscription.phone_tag,
            extra=[
                ("Expires", str(granted)),
                # sips: where RFC 3261 §12.1.1 wants it (a SUBSCRIBE to sips: over TLS).
                ("Contact", str(self.endpoint.contact_answering(request, subscription.phone_flow))),
                # RFC 3261 §12.1.1: the phone's route set is the Record-Route we echo.
                *[("Record-Route", rr) for rr in request.headers.get_all("Record-Route")],
            ],
        )
        subscription.phone_dialog = Dialog.create_uas(
            request, response, over_tls=subscription.phone_flow.secure
        )
        self._timer_changed.set()
        log.info(
            "subscription of %s to message-summary on trunk %s: %d s",
            subscription.account,
            subscription.trunk.name,
            granted,
        )
        return response

    def _fail_over(self, subscription: Subscription, final: Response) -> bool:
        """After ``final`` from the trunk's target, whether to send the SUBSCRIBE to its next
        target, and if so readied for it. RFC 3263 §4.3, as a call does: a transport error (our
        503), no response (our 408: ``response_timeout`` or Timer F) or a 503 is that server's
        failure; any other answer is the trunk's and goes to the phone. The request stays the
        same subscription (Call-ID, From tag: the NOTIFYs find it), with the next CSeq (RFC
        3261 §8.1.3.5 style: a new transaction of the same dialog-to-be, no stale credentials)
        and our From and Contact on the next target's transport."""
        if (
            final.status not in SERVER_FAILURES
            or not subscription.trunk_alternates
            or subscription.trunk_dialog is not None  # a NOTIFY made the dialog: it is there
            or subscription.state.ended
            or subscription.replaced  # nobody wants it any more
        ):
            return False
        failed = subscription.trunk_destination
        destination = subscription.trunk_alternates.pop(0)
        sent = subscription.trunk_request
        from_uri = sent.from_.uri
        assert isinstance(from_uri, SipUri) and from_uri.user is not None
        from_ = NameAddr(self.endpoint.our_uri(destination.transport, from_uri.user))
        tag = sent.from_.tag
        assert tag is not None
        headers = (
            sent.headers.remove("Via")
            .remove("Authorization")
            .remove("Proxy-Authorization")
            .set("From", str(from_.with_tag(tag)))
            .set("CSeq", f"{sent.cseq.number + 1} SUBSCRIBE")
            .set("Contact", str(self.endpoint.our_contact(destination.transport)))
        )
        subscription.trunk_request = sent.with_headers(headers)
        subscription.trunk_destination = destination
        log.info(
            "subscription of %s: voicemail trunk %s target %s:%s answered %d; trying %s:%s",
            subscription.account,
            subscription.trunk.name,
            failed.transport,
            format_host_port(failed.host, failed.port),
            final.status,
            destination.transport,
            format_host_port(destination.host, destination.port),
        )
        return True

    def _count_trunk_failure(
        self, subscription: Subscription, final: Response, unsent: Sequence[OSError]
    ) -> None:
        """A SUBSCRIBE that the voicemail trunk's last target never got (a transport error) or
        never answered (its ``response_timeout``) marks the trunk down as a call's INVITE and
        a MESSAGE do (messages.py ``_count_trunk_failure``): through CallManager.trunk_failed,
        so the same log line and ``voipgw_trunk_up``; a trunk without OPTIONS probes is never
        marked down. A target with others after it is one server's failure (RFC 3263 §4.3,
        routing.other_hops_left); a trunk that sent a NOTIFY (its dialog exists) is there."""
        if subscription.trunk_alternates or subscription.trunk_dialog is not None:
            return
        calls = self.gateway.calls
        assert calls is not None
        trunk = subscription.trunk
        if unsent:
            calls.trunk_failed(trunk.name, f"cannot send to it: {transport_error_text(unsent[0])}")
        elif final.status == 408 and final.reason == NO_RESPONSE:
            why = f"no response to a SUBSCRIBE within {trunk.response_timeout:g} s"
            calls.trunk_failed(trunk.name, why)

    def _relayed_failure(self, request: Request, final: Response, tag: str) -> Response:
        """The phone's answer for the trunk's failure: the same status and reason (a
        challenge is ours to answer: 503), with Min-Expires or Allow-Events where they say
        what to do next (RFC 6665 §4.1.2.1). A 408 (the trunk's, or ours for no response:
        ``response_timeout``, Timer F) is never a SUBSCRIBE's answer (RFC 4320 §4.2: no 408
        to a non-INVITE): 504 (targets.NO_TIMELY_RESPONSE)."""
        if final.status in (401, 407):
            return make_response(
                request, 503, "Service Unavailable (trunk asked us to authenticate)", to_tag=tag
            )
        if final.status == 408:
            status, reason = NO_TIMELY_RESPONSE
            return make_response(request, status, reason, to_tag=tag)
        kept = [
            (name, value)
            for name in ("Min-Expires", "Allow-Events", "Retry-After")
            for value in final.headers.get_all(name)
        ]
        return make_response(request, final.status, final.reason, to_tag=tag, extra=kept)

    # -- the phone's requests in its dialog ----------------------------------------------------

    async def _from_phone(self, subscription: Subscription, request: Request) -> Response:
        if request.method != "SUBSCRIBE":
            return make_response(request, 405, extra=[("Allow", "SUBSCRIBE, NOTIFY")])
        phone, trunk = subscription.phone_dialog, subscription.trunk_dialog
        if phone is None or trunk is None or subscription.state.ended:
            return make_response(request, 481)
        try:
            phone.receive_request(request)
            event = parse_event_untrusted(request.headers.get("Event"))
            expires = parse_expires_untrusted(request.headers.get("Expires"))
        except RemoteSipError as err:
            return make_response(request, err.status or 400, err.reason)
        except LocalSipError:
            return make_response(request, 481)
        if event.package != MESSAGE_SUMMARY:
            return make_response(request, 489, extra=[("Allow-Events", ALLOW_EVENTS)])
        asked = bounded_expires(expires)
        if isinstance(asked, IntervalTooBrief):
            return make_response(request, 423, extra=[("Min-Expires", str(asked.min_expires))])
        final = await self._in_trunk_dialog(
            subscription,
            "SUBSCRIBE",
            [("Event", MESSAGE_SUMMARY), ("Expires", str(asked)), ("Accept", ACCEPT)],
        )
        now = trio.current_time()
        if final.is_success:
            granted = _expires_of(final, asked)
            if granted == 0:
                subscription.state.handle(Input.UNSUBSCRIBED, now=now)
            else:
                subscription.state.handle(Input.ACCEPTED, now=now, expires=granted)
            self._timer_changed.set()
            return make_response(
                request, final.status, final.reason, extra=[("Expires", str(granted))]
            )
        if final.status in (408, 481):
            self._end(subscription, f"trunk answered {final.status} to a refresh")
            if final.status == 408:
                # Ended here: 481 tells the phone so (RFC 6665 §4.1.2.2: after any other
                # failure it would hold the subscription valid), and no 408 to a non-INVITE
                # (RFC 4320 §4.2).
                reason = "Call/Transaction Does Not Exist (the trunk did not answer the refresh)"
                return make_response(request, 481, reason)
        else:
            subscription.state.handle(Input.REFRESH_REFUSED, now=now)
        return self._relayed_failure(request, final, subscription.phone_tag)

    async def _in_trunk_dialog(
        self,
        subscription: Subscription,
        method: str,
        extra: Sequence[tuple[str, str]],
    ) -> Response:
        dialog = subscription.trunk_dialog
        assert dialog is not None
        destination = subscription.trunk_destination
        request = dialog.create_request(
            method,
            via=self.endpoint.new_via_for(destination.transport),
            contact=self.endpoint.our_contact(destination.transport),
            extra=extra,
        )
        _, final = await send_and_wait(
            self.endpoint,
            request.with_headers(request.headers.remove("Via")),
            destination,
            trunk=subscription.trunk,
            cnonce=lambda: self.gateway.ids.token_hex(8),
            next_cseq=dialog.take_cseq,
        )
        if final.from_.tag == dialog.local_tag and final.to.tag == dialog.remote_tag:
            dialog.receive_response(final)
        return final

    # -- the trunk's requests in its dialog ----------------------------------------------------

    async def _from_trunk(self, subscription: Subscription, request: Request) -> Response:
        if request.method != "NOTIFY":
            return make_response(request, 405, extra=[("Allow", "NOTIFY")])
        try:
            event = parse_event_untrusted(request.headers.get("Event"))
            state = parse_subscription_state_untrusted(request.headers.get("Subscription-State"))
            self._trunk_dialog_for(subscription, request).receive_request(request)
        except RemoteSipError as err:
            return make_response(request, err.status or 400, err.reason)
        except LocalSipError:
            return make_response(request, 481)  # a second fork's NOTIFY: not our dialog
        if event.package != MESSAGE_SUMMARY:
            return make_response(request, 489, extra=[("Allow-Events", ALLOW_EVENTS)])
        if len(request.body) > MAX_NOTIFY_BODY:
            return make_response(request, 513, "Message Too Large (message-summary body)")
        terminated = state.state == "terminated"
        if request.body:
            subscription.summary = (request.body, request.content_type)
        if subscription.closing:
            # RFC 6665 §4.1.2.3: the NOTIFYs after our unsubscribe, the final one (terminated)
            # last, are the trunk's to send and ours to answer 200 (§4.2.2: 481 is for a
            # subscription that no longer exists); the phone had its final NOTIFY, or forgot
            # the dialog (replaced). One that shortens the subscription moves its expiry.
            if terminated:
                self._forget(subscription)
            elif state.expires is not None:
                now = trio.current_time()
                subscription.state.handle(Input.NOTIFY_ACTIVE, now=now, expires=state.expires)
                self._timer_changed.set()
            return make_response(request, 200)
        now = trio.current_time()
        if terminated:
            subscription.state.handle(Input.NOTIFY_TERMINATED, now=now)
        else:
            subscription.state.handle(Input.NOTIFY_ACTIVE, now=now, expires=state.expires)
        self._timer_changed.set()
        with trio.move_on_after(FINAL_NOTIFY_WAIT):
            await subscription.answered.wait()
        phone = subscription.phone_dialog
        if phone is None or phone.state is DialogState.TERMINATED:
            if terminated or subscription.state.ended:
                self._forget(subscription)
            return make_response(request, 481)
        final = await self._notify_phone(
            subscription,
            request.headers.get("Subscription-State") or "active",
            request.body,
            request.content_type,
        )
        if terminated or subscription.state.ended:
            self._forget(subscription)
            log.info(
                "subscription of %s ended: the trunk sent %s",
                subscription.account,
                request.headers.get("Subscription-State"),
            )
        elif final.status in (408, 481):
            # RFC 6665 §4.2.2: a NOTIFY that fails so ends the subscription; the trunk, told
            # 481 (never 408 to a non-INVITE, RFC 4320 §4.2), removes its side.
            self._end(subscription, f"the phone answered NOTIFY with {final.status}")
            return make_response(request, 481)
        return make_response(request, final.status, final.reason)

    def _trunk_dialog_for(self, subscription: Subscription, notify: Request) -> Dialog:
        """The trunk's dialog; a NOTIFY before the 2xx creates it (RFC 6665 §4.1.2.4): the
        NOTIFY's From tag, Contact and Record-Route (in order: we are its UAS)."""
        if subscription.trunk_dialog is not None:
            return subscription.trunk_dialog
        sent = subscription.trunk_request
        our_tag = sent.from_.tag
        assert our_tag is not None
        dialog = Dialog(
            call_id=sent.call_id,
            local_tag=our_tag,
            remote_tag=notify.from_.tag,
            local_uri=sent.from_.with_params(remove_param(sent.from_.params, "tag")),
            remote_uri=sent.to,
            remote_target=require_contact(notify),
            route_set=notify.record_routes,
            local_seq=sent.cseq.number,
            remote_seq=None,
            secure=False,
            state=DialogState.CONFIRMED,
        )
        subscription.trunk_dialog = dialog
        return dialog

    async def _notify_phone(
        self,
        subscription: Subscription,
        state: str,
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Response:
        """A NOTIFY to the phone in its dialog, over the flow its SUBSCRIBE came on (once
        that is a closed connection, to the dialog's next hop: subscriber_destination)."""
        dialog = subscription.phone_dialog
        assert dialog is not None
        flow = subscription.phone_flow
        request = dialog.create_request(
            "NOTIFY",
            via=self.endpoint.new_via_for(flow.transport),
            contact=self.endpoint.our_contact(flow.transport, sips=dialog.secure),
            extra=[("Event", subscription.event), ("Subscription-State", state)],
            body=body,
            content_type=content_type if body else None,
        )
        _, final = await send_and_wait(
            self.endpoint,
            request.with_headers(request.headers.remove("Via")),
            subscriber_destination(flow, dialog),
            trunk=None,
            cnonce=lambda: self.gateway.ids.token_hex(8),
            next_cseq=dialog.take_cseq,
        )
        if final.status in (408, 481):
            dialog.terminate()
        return final

    # -- ending --------------------------------------------------------------------------------

    def _end(self, subscription: Subscription, why: str) -> None:
        subscription.state.handle(Input.DIALOG_GONE, now=trio.current_time())
        self._forget(subscription)
        log.info("subscription of %s ended: %s", subscription.account, why)

    def _forget(self, subscription: Subscription) -> None:
        if self._by_trunk.get(subscription.trunk_key) is subscription:
            del self._by_trunk[subscription.trunk_key]
            subscription.ended.set()
            subscription.closed.set()
            if subscription in self._closing:
                self._closing.discard(subscription)  # released when it started closing
                self._forget_replaced(subscription)
            else:
                self._release(subscription.account)
        if self._by_phone.get(subscription.phone_key) is subscription:
            del self._by_phone[subscription.phone_key]
        self._unindex_contact(subscription)
        for dialog in (subscription.phone_dialog, subscription.trunk_dialog):
            if dialog is not None:
                dialog.terminate()

    def _forget_replaced(self, subscription: Subscription) -> None:
        replaced = self._replaced.get(subscription.account)
        if replaced is not None and subscription in replaced:
            replaced.remove(subscription)  # MAX_CLOSING_PER_ACCOUNT entries at most
            if not replaced:
                del self._replaced[subscription.account]

    def _release(self, account: str) -> None:
        left = self._per_account.get(account, 1) - 1
        if left > 0:
            self._per_account[account] = left
        else:
            self._per_account.pop(account, None)

    def _start_closing(self, subscription: Subscription) -> None:
        """The phone's side ends now (its requests in that dialog get 481); the trunk's is
        kept, in ``_by_trunk``, for its NOTIFYs until :meth:`_close_at_trunk` forgets it. The
        account's slot is free at once: a rebooted phone's new subscription must not wait
        for its old one's final NOTIFY (MAX_SUBSCRIPTIONS still counts it: memory)."""
        subscription.closing = True
        self._closing.add(subscription)
        self._release(subscription.account)
        if self._by_phone.get(subscription.phone_key) is subscription:
            del self._by_phone[subscription.phone_key]
        self._unindex_contact(subscription)

    def _unindex_contact(self, subscription: Subscription) -> None:
        key = (subscription.account, subscription.contact)
        if self._by_contact.get(key) is subscription:
            del self._by_contact[key]

    async def run(self) -> None:
        """Expire subscriptions nobody refreshed (RFC 6665 §4.2.2): the phone gets
        ``terminated;reason=timeout``; the trunk's side has run out by itself."""
        while True:
            now = trio.current_time()
            for subscription in list(self._by_trunk.values()):
                if subscription.state.handle_timer(now=now):
                    self._forget(subscription)
                    if subscription.closing:
                        # A replaced one (§4.2.2): its trunk's NOTIFYs find nothing from now on.
                        log.info("replaced subscription of %s expired", subscription.account)
                        continue
                    log.info("subscription of %s expired", subscription.account)
                    if subscription.phone_dialog is not None:
                        subscription.phone_dialog.state = DialogState.CONFIRMED
                        self._nursery.start_soon(self._notify_expired, subscription)
            deadlines = [
                deadline
                for s in self._by_trunk.values()
                if (deadline := s.state.get_timer()) is not None
            ]
            self._timer_changed = trio.Event()
            with trio.move_on_at(min(deadlines, default=math.inf)):
                await self._timer_changed.wait()

    async def _notify_expired(self, subscription: Subscription) -> None:
        try:
            await self._notify_phone(subscription, terminated_value("timeout"))
        except Exception:
            log_exception(log, "notifying %s of its expired subscription", subscription.account)
        finally:
            if subscription.phone_dialog is not None:
                subscription.phone_dialog.terminate()

    async def stop(self) -> None:
        """End every subscription (the gateway drains or stops): the phone's final NOTIFY
        (``terminated;reason=deactivated``, RFC 6665 §4.2.2, with the last message summary)
        and the unsubscribe at the trunk (§4.1.2.3) go at once; the trunk's side is kept for
        its final NOTIFY, so that it is answered 200, not 481. Returns when all are answered
        and the trunks' final NOTIFYs came, or the caller's deadline passes (a phone or trunk
        that does not answer is not waited for beyond it)."""
        self._stopping = True  # new subscriptions get 503 from now on
        # Those closing already (replaced) had their phone's end; their trunk's is under way
        # (unsubscribe, final NOTIFY): waited for as the others', within the same deadline.
        replaced = [s for s in self._closing if not s.closed.is_set()]
        ending = [s for s in self._by_trunk.values() if not s.closing]
        if not ending and not replaced:
            return
        log.info("ending %d message-summary subscription(s)", len(ending))
        async with trio.open_nursery() as nursery:
            for subscription in replaced:
                nursery.start_soon(subscription.closed.wait)
            for subscription in ending:
                subscription.state.handle(Input.STOPPED, now=trio.current_time())
                if subscription.trunk_dialog is not None:
                    self._start_closing(subscription)
                    nursery.start_soon(self._close_at_trunk, subscription)
                else:
                    self._forget(subscription)
                if subscription.phone_dialog is not None:
                    subscription.phone_dialog.state = DialogState.CONFIRMED  # one NOTIFY more
                    nursery.start_soon(self._notify_stopped, subscription)

    async def _close_at_trunk(self, subscription: Subscription) -> None:
        """Unsubscribe at the trunk and wait for its final NOTIFY (answered 200 by
        :meth:`_from_trunk`), at most :data:`FINAL_NOTIFY_WAIT` or the stop's deadline; then
        forget the subscription. A replaced one whose unsubscribe the trunk refused (other
        than 481 or 408) still exists there (RFC 6665 §4.1.2.2: until its last known expiry):
        it is kept, its NOTIFYs answered 200, until its final NOTIFY or that expiry
        (:meth:`run`)."""
        kept = False
        try:
            final = await self._in_trunk_dialog(
                subscription, "SUBSCRIBE", [("Event", MESSAGE_SUMMARY), ("Expires", "0")]
            )
            now = trio.current_time()
            if final.is_success:
                # §4.1.2.3: the final NOTIFY is to come; a replaced one's timer says so too.
                subscription.state.handle(Input.UNSUBSCRIBED, now=now)
                self._timer_changed.set()
                with trio.move_on_after(FINAL_NOTIFY_WAIT):
                    await subscription.ended.wait()
            elif subscription.replaced and final.status not in (408, 481):
                subscription.state.handle(Input.REFRESH_REFUSED, now=now)
                kept = not subscription.state.ended
                if kept:
                    log.info(
                        "trunk %s answered %d to unsubscribing %s's replaced subscription: "
                        "its NOTIFYs answered until it expires in %.0f s",
                        subscription.trunk.name,
                        final.status,
                        subscription.account,
                        subscription.state.expires_at - now,
                    )
        except Exception:
            log_exception(
                log, "unsubscribing %s at trunk %s", subscription.account, subscription.trunk.name
            )
        finally:
            subscription.closed.set()
            if not kept:
                self._forget(subscription)

    async def _notify_stopped(self, subscription: Subscription) -> None:
        body, content_type = subscription.summary or (b"", None)
        try:
            await self._notify_phone(subscription, STOPPING, body, content_type)
        except Exception:
            log_exception(log, "notifying %s that its subscription ended", subscription.account)
        finally:
            if subscription.phone_dialog is not None:
                subscription.phone_dialog.terminate()


def _names_package(event: str | None, *packages: str) -> bool:
    """Whether an Event header names one of ``packages`` (a malformed one is ours to refuse)."""
    try:
        return parse_event_untrusted(event).package in packages
    except RemoteSipError:
        return False


def _expires_of(response: Response, asked: int) -> int:
    """The Expires a 2xx to SUBSCRIBE granted (RFC 6665 §4.2.1.1: it must say); what we asked
    for when it does not or says nonsense, and never more than that."""
    try:
        granted = parse_expires_untrusted(response.headers.get("Expires"), default=asked)
    except RemoteSipError:
        return asked
    return min(granted, asked) if asked else 0
