"""The call manager: the endpoint's transaction user for calls.

It creates a :class:`~gateway.core.calls.call.Call` per new INVITE, runs each in its own task (the
call's failure boundary), finds the call an in-dialog request, ACK or CANCEL belongs to, and hands
calls what they need from the rest of the gateway (routing, authentication, media sessions).
"""

from __future__ import annotations

import collections
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs
import trio

from gateway.core.auth.digest import Authenticated, AuthKind
from gateway.core.auth.proxied_source import RelayedHop, relayed_hops
from gateway.core.calls.call import Call
from gateway.core.calls.events import CancelEvent, PickUpEvent, RequestEvent
from gateway.core.calls.leg import ALeg, BLeg, Leg, Side
from gateway.core.calls.limits import NO_LIMIT, CallLimits, Key, Limit
from gateway.core.calls.outbound import OutboundSessions
from gateway.core.calls.pickup import (
    NO_CALL_TO_PICK_UP,
    NOT_ALLOWED,
    dialled_pickup,
    parse_pickup_replaces_untrusted,
    ringing_call_to_pick_up,
    ringing_leg_to_pick_up,
)
from gateway.core.calls.psap_callback import PsapCallbacks, marked_as_callback
from gateway.core.calls.records import CallRecordBook
from gateway.core.calls.routing import called_user, dial_string
from gateway.core.calls.timers import CallTimers
from gateway.core.devices import narrowed_for_device
from gateway.core.interfaces import (
    Caller,
    CallerAuth,
    CallerIdentity,
    CallEvent,
    DeviceProfile,
    IdentityOutcome,
    LegInfo,
    MediaPolicy,
    MediaTap,
    RouteDecision,
    RouteTarget,
    TappedCall,
    TapSink,
)
from gateway.core.logs import log_exception
from gateway.core.media.policy import (
    BUILTIN_POLICIES,
    DEFAULT_POLICY,
    UnknownPolicy,
    effective,
    resolve,
)
from gateway.core.media.security import LegSecurity
from gateway.core.media.taps import CallTaps, copy_sip, tapped_media
from gateway.core.plugins import (
    HookFailures,
    PluginHookError,
    raising_plugin,
    separate_implementations,
    who,
)
from gateway.core.sip.dialog import SIPS_NOT_ALLOWED
from gateway.core.sip.errors import SipError
from gateway.core.sip.grammar import parse_name_addr_untrusted, split_list_untrusted
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.serializer import serialize_message
from gateway.core.sip.transaction import ServerTransaction, TransactionStateError
from gateway.core.sip.uri import SipUri, redact_password
from gateway.core.transport.flows import TLS_TRANSPORTS, Flow

if TYPE_CHECKING:
    from gateway.core.calls.base import CallBase
    from gateway.core.calls.dialog_events import DialogEvents
    from gateway.core.calls.numbering import NumberingPlan
    from gateway.core.config import TrunkConfig
    from gateway.core.gateway import Gateway
    from gateway.core.media.session import MediaSession
    from gateway.core.store.interface import Binding

# Enum members read at run time, as module names: on CPython 3.11 a member read from its
# class goes through EnumType's __getattr__ hook, ~900 instructions (docs/benchmarks.md,
# sessions 44 and 45).
_S_A = Side.A

log = logging.getLogger(__name__)

PICKUP_WAIT = 4.0
"""How long a pickup INVITE waits for the ringing call to take it (its task answers at once
unless it has just been answered or ended); then 481."""

DialogKey = tuple[str, str]  # (Call-ID, our tag) — how requests from either leg find their call

CHILD_STOP_TIMEOUT = 5.0
"""How long a call's end waits for its cancelled child tasks to return (seconds). A child returns
at once when cancelled unless it is inside a shielded section. None of today's children has one
(the handshakes, RFC 4733 timers and digits send UDP datagrams without waiting; the location
UPDATE's bound only sleeps): this is a bound for one that would, so that no peer can keep the
call, its media ports and its place in the call limits for ever. Past it the end goes on
without the child (WARNING naming the call and the tasks); the child stays cancelled in the
manager's nursery and returns when its shielded work does, finding the call's media closed
(MediaSession sends nothing once closed, so never on ports another call holds by then)."""


class CallChildren:
    """The child tasks of one call (the DTLS-SRTP handshakes, RFC 4733 event timers, digits from
    INFO sent as events, location-UPDATE waits), which few calls have: created with the first
    one (:meth:`CallManager.start_child`). They run in the manager's nursery, which outlives the
    call, each in a cancel scope of its own; a plain call opens no nursery of its own (a trio
    nursery cost ~95,000 instructions a call, docs/benchmarks.md "Session 35 (nursery)") and trio
    cannot open one around the call's code already running when a child starts.

    The call's failure boundary (STYLE.md habit 6) as its nursery kept it: a child that raises
    cancels ``boundary``, the cancel scope around the call's states, and Call.run ends the call
    as for its own failure, saying why ("internal error: ..."); nothing leaves for the manager's
    nursery. The call's end cancels every child and waits for them (:meth:`stop`) before its
    media closes."""

    __slots__ = ("_boundary", "_call_id", "_done", "_left", "_scopes", "failure", "reported")

    def __init__(self, boundary: trio.CancelScope, call_id: str) -> None:
        self._boundary = boundary
        self._call_id = call_id
        self._scopes: dict[trio.CancelScope, str] = {}  # each running child's, and its name
        self._done: trio.Event | None = None  # set when the last child has returned, once stopping
        self._left = False  # the call's end stopped waiting for them (CHILD_STOP_TIMEOUT)
        self.failure: Exception | None = None
        """The first exception a child raised, until the call's end has logged it."""
        self.reported = False
        """Call.run has logged :attr:`failure` and ended the call for it."""

    def start(
        self, nursery: trio.Nursery, async_fn: Callable[..., Awaitable[object]], *args: object
    ) -> None:
        scope = trio.CancelScope()
        self._scopes[scope] = getattr(async_fn, "__qualname__", repr(async_fn))
        nursery.start_soon(self._run, scope, async_fn, args, name=async_fn)

    async def _run(
        self,
        scope: trio.CancelScope,
        async_fn: Callable[..., Awaitable[object]],
        args: tuple[object, ...],
    ) -> None:
        try:
            with scope:
                await async_fn(*args)
        except Exception as exc:
            # A bug in the core or a plugin, maybe set off by the network: it ends this call
            # (Call.run logs it), never the manager's nursery, the gateway or another call.
            if self._left:
                # The call ended without it (stop): nobody reads failure any more.
                log_exception(log, "call %s: a child task left at its end failed", self._call_id)
                return
            if self.failure is None:
                self.failure = exc
            else:
                # Another child's (one raised while cancelled, after the first): the first ends
                # the call with its reason, this one still gets its traceback in the log, as a
                # nursery's ExceptionGroup kept both.
                log_exception(log, "call %s: another child task failed", self._call_id)
            self._boundary.cancel()
        finally:
            self._scopes.pop(scope, None)
            if not self._scopes and self._done is not None:
                self._done.set()

    async def stop(self) -> None:
        """Cancel every child and wait until each has returned (the call is ending; a nursery
        would wait for them the same way, whatever cancels the call's task meanwhile), at most
        :data:`CHILD_STOP_TIMEOUT`: a child stuck in shielded work is left, said at WARNING."""
        if not self._scopes:
            return
        for scope in self._scopes:
            scope.cancel()
        self._done = trio.Event()
        with trio.CancelScope(shield=True), trio.move_on_after(CHILD_STOP_TIMEOUT):
            await self._done.wait()
        if self._scopes:
            self._left = True
            log.warning(
                "call %s: %d child task(s) still running %g s after they were cancelled at the "
                "call's end (%s): the call ends without them",
                self._call_id,
                len(self._scopes),
                CHILD_STOP_TIMEOUT,
                ", ".join(sorted(self._scopes.values())),
            )


class CallManager:
    def __init__(self, gateway: Gateway, nursery: trio.Nursery, *, max_calls: int = 10_000) -> None:
        self.gateway = gateway
        self.endpoint = gateway.endpoint
        self._nursery = nursery
        self.max_calls = max_calls
        self.calls: set[Call] = set()
        self.timers = CallTimers()
        """The call tasks' timed waits (timers.py), served by one task of this nursery."""
        nursery.start_soon(self.timers.run, name="call timers")
        # Set when a call ends while someone waits for calls to end (the gateway's stop).
        self._call_left: trio.Event | None = None
        # Calls in progress per trunk and account, and the calls sent to each trunk per second.
        # With a store shared by several nodes, keys with a max_calls are counted for them all.
        shared = gateway.store.shared_call_limits() if gateway.store is not None else None
        self.limits = CallLimits(
            self._limit_of,
            shared,
            cluster_cps=gateway.config.store.max_cps_scope == "cluster",
        )
        self.psap_callbacks = PsapCallbacks(
            gateway.config.gateway.psap_callback_window, gateway.store
        )
        """The numbers our emergency calls presented lately (RFC 7090 callbacks to them), in
        memory and in the store (another node's, or this one's before a restart)."""
        if shared is not None:
            nursery.start_soon(self._beat, shared.heartbeat_interval)
        self.statistics = gateway.call_statistics
        """Call counters for monitoring services; None (nothing counted) without one."""
        self._observer_failures = HookFailures(log, time.monotonic)
        self.unnamed_engines: set[type] = set()
        """Media-path engine types without a usable ``tls_id`` already said in the log, once
        per type by this gateway (gateway/core/media/handshakes.py ``_association``)."""
        self._observers = separate_implementations(
            gateway.plugins.implemented("gateway_call_event")
        )
        """The ``gateway_call_event`` observers, each called on its own: independent, one
        that raises keeps no other from an event (pluggy's call stops at the first)."""
        self._by_dialog: dict[DialogKey, tuple[Call, Side]] = {}
        self._by_invite: dict[ServerTransaction, Call] = {}
        # What each call put in the two maps, so forgetting a call costs its own entries, not a
        # scan of every live call's (ten thousand calls, hundreds ending per second).
        self._keys_of: dict[Call, tuple[ServerTransaction, list[DialogKey]]] = {}
        # gateway_outbound_message hooks see the leg of the call each message goes to.
        self.endpoint.leg_of = self.leg_of
        self.dialog_events: DialogEvents | None = None
        """The dialog (BLF) notifier, told of call events while it watches any account."""
        self.pickup_enabled = any(group.pickup for group in gateway.config.dialog_watch_groups)
        """Some group allows call pickup: accounts' INVITEs with Replaces, and to the
        ``[feature_codes]`` of pickup, are looked at."""
        self.outbound = OutboundSessions(
            gateway.endpoint,
            gateway.ids,
            gateway.config.sip.user_agent,
            nursery,
            targets=gateway.session_targets,
        )
        """Sessions plugins open (SIPREC recording sessions): their in-dialog requests."""
        self._start_taps = [
            (name, tap)
            for name, tap in gateway.plugins.media_taps.items()
            if callable(getattr(tap, "sink_for_call_start", None))
        ]
        """Taps that decide when a call starts (lawful intercept): asked for every new call."""
        self._numbers_of: dict[str, list[str]] | None = None
        # Calls that failed on a trunk and went on to the next one serving the number.
        self.failovers: collections.Counter[str] = collections.Counter()
        for name, tap in self._start_taps:
            bind = getattr(tap, "bind_calls_in_progress", None)
            if callable(bind):
                bind(functools.partial(self._ask_again, name, tap))
        store = gateway.store
        self.caller_identity: list[CallerIdentity] = list(gateway.plugins.caller_identity)
        """Caller-identity services (STIR/SHAKEN, calls/identity.py); empty: never asked."""
        self.identity_outcomes: collections.Counter[str] = collections.Counter()
        self.recording_pauses = {
            "pause": 0,
            "resume": 0,
            "preference_pause": 0,
            "preference_resume": 0,
        }
        """Pauses and resumes of recordings since the start (metrics): on request, and for
        the parties' preferences (``preference_*``, RFC 7866 §7.2)."""
        self.recordings_paused: set[Call] = set()
        """The live calls whose recording is paused now, on request or for a preference
        (metrics: one left paused)."""
        self.records = None if store is None else CallRecordBook(store)
        """Call detail records; the gateway saves what is left when it stops."""
        if self.records is not None:
            nursery.start_soon(self.records.run)
        # What every leg's security is made of, fixed while the gateway runs (plugins register
        # their key exchanges and policies at start; nothing reloads them): the enabled key
        # exchanges by name, and each registered policy limited to them (policy.effective),
        # made at its first leg instead of at every leg.
        self._key_exchanges = dict(gateway.plugins.key_exchanges.items())
        self._effective_policies: dict[str, MediaPolicy] = {}

    async def _run_call(self, call: Call) -> None:
        """A call's task. Call.run ends its call on any failure (its child tasks' too,
        :class:`CallChildren`), but a failure while it ends itself (a BYE that cannot be sent
        while it aborts) would otherwise leave this nursery, cancelling every other call and
        the gateway with it: it ends this call only (STYLE.md habit 6). Call.run's cleanup
        (``finally``: the record, the media, forgetting the call) has run by then."""
        try:
            await call.run()
        except Exception:
            log_exception(log, "call %s: failed while ending; other calls go on", call.id)
        # The caller's INVITE is the call's to answer, and Call.run does on every way out; a
        # failure while it ended (its abort failing too) may have left it without a final
        # response. The call is gone, so nobody else will answer: 500 now (RFC 3261 §21.5.1),
        # or the caller waits for ever (an INVITE server transaction has no timer in
        # Proceeding, §17.2.1) and the transaction and its entries stay.
        transaction, invite = call.a.transaction, call.a.invite
        if (
            transaction is not None
            and invite is not None
            and transaction.final_status is None
            and not transaction.terminated
        ):
            self.endpoint.statistics.internal_errors += 1
            log.error("internal error: call %s ended with its caller's INVITE unanswered", call.id)
            await self.endpoint.answer_internal_error(transaction, invite)

    async def _beat(self, interval: float) -> None:
        """This node's heartbeat for the cluster's call limits (CallLimits.beat): a node not
        heard from for a few intervals is taken for dead and its calls stop counting."""
        while True:
            await trio.sleep(interval)
            self.limits.beat()

    def sizes(self) -> dict[str, int]:
        """Entries of the manager's tables and its call limits', for leak hunting
        (``StatusView.tables``): each returns to its idle size once the calls have ended."""
        return {
            "calls": len(self.calls),
            "call_dialogs": len(self._by_dialog),
            "call_invites": len(self._by_invite),
            "call_keys": len(self._keys_of),
            "call_timers": len(self.timers),
            **self.limits.sizes(),
        }

    def start_child(
        self, call: CallBase, async_fn: Callable[..., Awaitable[object]], *args: object
    ) -> bool:
        """Start a child task of ``call`` (:class:`CallChildren`), while the call's task runs:
        False, and nothing started, before and once it has ended (its children are stopped)."""
        boundary = call._boundary
        if boundary is None:
            return False
        children = call._children
        if children is None:
            children = call._children = CallChildren(boundary, call.id)
        children.start(self._nursery, async_fn, *args)
        return True

    def start_soon(self, async_fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run what a call leaves behind when it ends (seeing its BYE through a trunk's
        challenge) in the manager's nursery, which lives as long as the gateway."""
        self._nursery.start_soon(async_fn, *args)

    def _refuse(self, transaction: ServerTransaction, refusal: Response) -> None:
        """Answer an INVITE that becomes no call (a limit, a challenge, a pickup refused)
        from a task of the manager's nursery, the gateway's top one (:meth:`_send_refusal`)."""
        self._nursery.start_soon(self._send_refusal, transaction, refusal)

    async def _send_refusal(self, transaction: ServerTransaction, refusal: Response) -> None:
        """:meth:`_refuse`'s task. The transaction is the one the endpoint just made for the
        INVITE and nothing else answers it, but one that no longer takes a response (answered
        or ended before this task ran) makes Endpoint.respond raise TransactionStateError,
        which in this nursery would stop the gateway, every call with it. Nothing is owed
        then (RFC 3261 §17.2): said at DEBUG, as CallBase._refuse_request does."""
        try:
            await self.endpoint.respond(transaction, refusal)
        except TransactionStateError:
            log.debug(
                "INVITE %s: %d %s not sent: answered already",
                refusal.headers.get("Call-ID"),
                refusal.status,
                refusal.reason,
            )

    # -- CallLayer (called from the endpoint's task) --------------------------------------------

    def invite(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None:
        if (
            (len(self.calls) >= self.max_calls or self.gateway.draining)
            and not self.calls_emergency_number(request)
            and not self.is_psap_callback(request, flow)
        ):
            reason = "shutting down" if self.gateway.draining else "call limit reached"
            self._refuse(
                transaction, make_response(request, 503, f"Service Unavailable ({reason})")
            )
            return
        uri = request.uri
        if (
            type(uri) is SipUri
            and uri.scheme != "sip"  # one string comparison for every sip: call
            and uri.secure
            and not flow.secure
            and not self.calls_emergency_number(request)
        ):
            self._refuse_sips_over_clear(transaction, request, flow)
            return
        caller = self.identify_caller(request, flow)
        if isinstance(caller, Response):
            # A digest challenge (or a refusal) is not a call: answered from here, without a
            # call task. Every account's call starts with one (RFC 3261 §22.3), so at hundreds
            # of calls per second this is half of all INVITEs.
            self._refuse(transaction, caller)
            return
        if self.pickup_enabled:
            replaces = request.headers.get("Replaces")
            if replaces is not None:
                self._pick_up(transaction, request, flow, caller, replaces)
                return
            if caller.kind == "account" and self._dialled_pickup(
                transaction, request, flow, caller
            ):
                return
        # One header look-up per trunk INVITE; the rest only for one marked psap-callback.
        psap_callback = (
            caller.kind == "trunk"
            and "Priority" in request.headers
            and self.is_psap_callback(request, flow)
        )
        counted = (caller.kind, caller.name) if caller.name is not None else None
        if counted is not None:
            # Counted before the call exists (by its transaction, handed over to it below).
            why = self.limits.take(transaction, counted, count_refusal=False)
            if why is not None and (psap_callback or self.is_emergency_call(request, caller)):
                why = self.limits.take(transaction, counted, exempt=True)
            if why is not None:
                self.limits.refuse(counted, why)
                # A trunk past its channels: 503, its proxy tries its next route. An account
                # past its own limit: 403, nothing else would get it through.
                status, reason = (
                    (503, "Service Unavailable (trunk call limit)")
                    if caller.kind == "trunk"
                    else (403, "Forbidden (account call limit)")
                )
                refusal = make_response(request, status, reason)
                self._refuse(transaction, refusal)
                return
        try:
            call = Call(self, transaction, request, flow, caller)
        except BaseException:
            # Counted above, held by the transaction: no call will release it, and the
            # endpoint answers this INVITE 500. Given back, or the trunk or account has one
            # call fewer (and the cluster's count one more) until the gateway restarts.
            if counted is not None:
                self.limits.release(transaction)
            raise
        call.psap_callback = psap_callback
        if counted is not None:
            self.limits.hand_over(transaction, call)
        self.calls.add(call)
        self._by_invite[transaction] = call
        key = (request.call_id, call.a.local_tag)
        self._by_dialog[key] = (call, _S_A)
        self._keys_of[call] = (transaction, [key])
        if self._start_taps:
            try:
                # Kept for a tap that decides once the call is routed (it gets this INVITE
                # first).
                data = self.endpoint.handling_bytes
                if data is not None:
                    call.invite_copy = (data, flow.transport, flow.remote, flow.local, time.time())
                self._tap_from_start(call, request, caller)
            except BaseException:
                # No call task will run: the endpoint answers the INVITE (a layer that raises
                # has not taken the request), and nothing of the call may stay.
                self.forget(call)
                raise
        # Last: once the call's task is started, the call owns the transaction.
        self._nursery.start_soon(self._run_call, call, name=f"call {request.call_id}")

    def _refuse_sips_over_clear(
        self, transaction: ServerTransaction, request: Request, flow: Flow
    ) -> None:
        """An INVITE to a SIPS URI that came over a hop without TLS: the promise SIPS makes,
        TLS on every hop (RFC 3261 §26.2.2, RFC 5630 §3.1.3), is already broken on its way
        here, and putting it through would tell the caller its call is secured. Refused with
        480 and warn-code 380 "SIPS Not Allowed" (RFC 5630 §5.3), before any challenge: not
        416 Unsupported URI Scheme (RFC 3261 §21.4.14), which says the scheme is unknown here,
        whereas a SIPS call over TLS goes through. An emergency call is never refused for it
        (CallManager.invite): it goes on as a call without that promise. The same answer for a
        pickup over a hop without TLS of a call whose caller asked for SIPS: the picker would
        take the call in clear."""
        log.info(
            "INVITE from %s over %s refused: SIPS needs TLS on every hop",
            flow.remote[0],
            flow.transport,
        )
        refusal = make_response(
            request,
            480,
            "Temporarily Unavailable (SIPS needs TLS on every hop)",
            extra=[SIPS_NOT_ALLOWED],
        )
        self._refuse(transaction, refusal)

    def _pick_up(
        self,
        transaction: ServerTransaction,
        request: Request,
        flow: Flow,
        caller: Caller,
        value: str,
    ) -> None:
        """An INVITE with Replaces (RFC 3891) while some group allows pickup: the ringing call
        it names takes it (pickup.py), or it is refused (a trunk's: 403, only accounts pick
        up). It is no call of its own: the picker joins the call it picks up."""
        watching = self.dialog_events
        try:
            replaces = parse_pickup_replaces_untrusted(value)
        except SipError as err:
            refusal = make_response(request, 400, f"Bad Request ({err})")
            self._refuse(transaction, refusal)
            return
        named = self.find_dialog(replaces.call_id, replaces.to_tag)
        found: BLeg | tuple[int, str] = NOT_ALLOWED
        if watching is not None and caller.kind == "account" and caller.name is not None:
            found = ringing_leg_to_pick_up(watching.rules, caller.name, replaces, named)
        if isinstance(found, tuple) or named is None:
            status, reason = found if isinstance(found, tuple) else NOT_ALLOWED
            log.info("pickup by %s refused: %d %s", caller.name, status, reason)
            refusal = make_response(request, status, reason)
            self._refuse(transaction, refusal)
            return
        if named[0].secure and not flow.secure:
            self._refuse_sips_over_clear(transaction, request, flow)
            return
        event = PickUpEvent(transaction, request, flow, caller, found)
        named[0].post(event)
        self._nursery.start_soon(self._pickup_taken_or_481, event)

    def _dialled_pickup(
        self, transaction: ServerTransaction, request: Request, flow: Flow, caller: Caller
    ) -> bool:
        """An account dialled a pickup feature code (``[feature_codes]``, pickup.py): the call
        it names takes the INVITE as one with Replaces (True), or it is refused here (True);
        False for any other number, which is routed."""
        codes = self.gateway.config.feature_codes
        user = called_user(request.uri)
        account = dialled_pickup(codes.pickup, codes.directed_pickup, user) if user else None
        if account is None:
            return False
        watching = self.dialog_events
        found: tuple[Call, BLeg] | tuple[int, str] = NOT_ALLOWED
        if watching is not None and caller.name is not None:
            found = ringing_call_to_pick_up(watching.rules, caller.name, account, self.calls)
        if isinstance(found[0], int):
            status, reason = found
            log.info("pickup by %s (dialled %s) refused: %d %s", caller.name, user, status, reason)
            refusal = make_response(request, status, reason)
            self._refuse(transaction, refusal)
            return True
        call, leg = found
        if call.secure and not flow.secure:
            self._refuse_sips_over_clear(transaction, request, flow)
            return True
        event = PickUpEvent(transaction, request, flow, caller, leg, dialled=True)
        call.post(event)
        self._nursery.start_soon(self._pickup_taken_or_481, event)
        return True

    async def _pickup_taken_or_481(self, event: PickUpEvent) -> None:
        """A pickup the ringing call did not answer in :data:`PICKUP_WAIT` (it ended meanwhile
        and dropped the event): 481, as for a dialog that no longer exists (480 "no call to
        pick up" for a dialled one)."""
        with trio.move_on_after(PICKUP_WAIT):
            await event.done.wait()
            return
        event.done.set()
        status, reason = NO_CALL_TO_PICK_UP if event.dialled else (481, None)
        try:
            await self.endpoint.respond(
                event.transaction, make_response(event.request, status, reason)
            )
        except TransactionStateError:
            log.debug("pickup INVITE %s answered already", event.request.call_id)

    async def until_no_calls(self) -> None:
        """Return once no call is in progress (the gateway's drain)."""
        while self.calls:
            await self._until_a_call_leaves()

    async def until_ended(self, calls: Collection[Call]) -> None:
        """Return once every call of ``calls`` has ended (the gateway's stop)."""
        while not self.calls.isdisjoint(calls):
            await self._until_a_call_leaves()

    async def _until_a_call_leaves(self) -> None:
        if self._call_left is None:
            self._call_left = trio.Event()
        await self._call_left.wait()

    @property
    def lookup_entries(self) -> int:
        """Entries in the maps that find a request's call: zero once every call has ended."""
        return len(self._by_dialog) + len(self._by_invite) + len(self._keys_of)

    def identify_caller(self, invite: Request, flow: Flow) -> Caller | Response:
        """Who calls: a trunk recognised by its source address, else an account by its digest
        credentials; else the 407 challenge (or 403) to answer the INVITE with."""
        devices = self.gateway.devices
        source = flow.remote[0]
        trunk = self.trunk_for_source(source)
        if trunk is not None:
            device = devices.of_request(invite, flow) if devices.active else None
            auth = _source_auth(source)
            return Caller(kind="trunk", name=trunk, flow=flow, device=device, auth=auth)
        outcome = self.authenticate(invite, flow, AuthKind.PROXY)
        if isinstance(outcome, Response):
            return outcome
        device = devices.of_request(invite, flow) if devices.active else None
        # How it authenticated, for the call record (fraud investigations): never a secret.
        auth = _digest_auth(
            outcome.realm, outcome.algorithm.value, outcome.qop, outcome.device_certificate
        )
        return Caller(kind="account", name=outcome.username, flow=flow, device=device, auth=auth)

    def calls_emergency_number(self, invite: Request) -> bool:
        """Whether ``invite``'s Request-URI dials one of ``[numbering] emergency_numbers``,
        whoever sends it (asked only when something would refuse it: the gateway's own call
        cap here, its overload control in the endpoint)."""
        directory = self.gateway.directory
        user = called_user(invite.uri)
        number = dial_string(user) if user is not None else None
        if directory is None or number is None:
            return False
        return directory.plan_of(None).is_emergency(number)

    def is_psap_callback(self, invite: Request, flow: Flow) -> bool:
        """Whether ``invite`` is an emergency service calling back (RFC 7090,
        calls/psap_callback.py): from a trunk, marked ``Priority: psap-callback``, to a number
        an emergency call of ours presented within ``[gateway] psap_callback_window`` (this
        node's, in memory; another node's or a previous run's, in the store). Asked only for
        marked INVITEs from trunks and where a limit would refuse an INVITE."""
        if not marked_as_callback(invite.headers.get("Priority")):
            return False
        trunk = self.trunk_for_source(flow.remote[0])
        directory = self.gateway.directory
        user = called_user(invite.uri)
        number = dial_string(user) if user is not None else None
        if trunk is None or directory is None or number is None:
            return False
        called = directory.to_e164(number, trunk=trunk)
        if self.psap_callbacks.called_back(called, trio.current_time()):
            log.warning(
                "PSAP callback from trunk %s to %s: served like an emergency call "
                "(RFC 7090; call limits, drain and overload control do not apply)",
                trunk,
                called,
            )
            return True
        log.info(
            "INVITE from trunk %s to %s marked psap-callback, but no emergency call presented "
            "that number in the last %g s: an ordinary call",
            trunk,
            called,
            self.psap_callbacks.window,
        )
        return False

    def emergency_call_presented(self, invite: Request, trunk: str, user: str) -> None:
        """An account's call ``invite`` goes to ``trunk`` presenting ``user`` as the calling
        number: if it calls an emergency number, callbacks to that number are recognised for a
        while (RFC 7090), on every node sharing the store. Asked once per leg to a trunk of an
        account's call."""
        directory = self.gateway.directory
        if (
            self.psap_callbacks.window <= 0
            or directory is None
            or not self.calls_emergency_number(invite)
        ):
            return
        number = directory.to_e164(user, trunk=trunk)
        self.psap_callbacks.emergency_call_presented(number, trio.current_time())
        log.info(
            "emergency call presented %s on trunk %s: a PSAP callback to it is recognised for %g s",
            number,
            trunk,
            self.psap_callbacks.window,
        )

    def in_emergency_dialog(self, request: Request) -> bool:
        """Whether ``request`` (with a To tag) is in a dialog of a call whose caller dialed an
        emergency number, or of a PSAP callback. Asked only past the transaction limit."""
        found = self._find(request)
        if found is None:
            return False
        if found[0].psap_callback:
            return True
        invite = found[0].a.invite  # the caller's (the transferee's after a transfer)
        return invite is not None and self.calls_emergency_number(invite)

    def is_emergency_call(self, invite: Request, caller: Caller) -> bool:
        """Whether an account's INVITE calls one of ``[numbering] emergency_numbers``: such a
        call is exempt from call limits (asked only when a limit would refuse it)."""
        if caller.kind != "account":
            return False
        emergency = self.calls_emergency_number(invite)
        if emergency:
            log.warning(
                "emergency call from %s to %s: call limits do not apply",
                caller.name,
                redact_password(str(invite.uri)),
            )
        return emergency

    def plan_of(self, trunk: TrunkConfig) -> NumberingPlan:
        """``trunk``'s numbering plan, made once (the directory keeps them)."""
        directory = self.gateway.directory
        if directory is not None:
            return directory.plan_of(trunk.name)
        return self.gateway.config.numbering_of(trunk)

    def trunk_failed(self, trunk: str, why: str) -> None:
        """A call got nothing from ``trunk``: down until its probes are answered again
        (a trunk without probes is never marked down)."""
        self.gateway.trunk_health.failed(trunk, why)

    def device_of_binding(self, binding: Binding) -> DeviceProfile | None:
        """The profile of a registered phone, by the User-Agent of its REGISTER."""
        devices = self.gateway.devices
        return devices.of_user_agent(binding.user_agent) if devices.active else None

    def in_dialog(self, transaction: ServerTransaction, request: Request, flow: Flow) -> bool:
        found = self._find(request)
        if found is None:
            return self.outbound.in_dialog(transaction, request, flow)
        call, side = found
        call.post(RequestEvent(side, transaction, request, flow))
        return True

    def knows_dialog(self, request: Request) -> bool:
        """Whether ``request`` (with a To tag) is in a dialog of a call or of a plugin's
        session, without handing it to them: an OPTIONS in a dialog is answered by the
        endpoint, 481 when this says no (RFC 3261 §12.2.2)."""
        key = (request.call_id, request.to.tag or "")
        return key in self._by_dialog or self.outbound.knows_dialog(key)

    def cancel(self, invite: ServerTransaction, request: Request) -> None:
        call = self._by_invite.get(invite)
        if call is None:
            # Not a call's first INVITE: perhaps a re-INVITE it is relaying (found by dialog).
            found = self._find(request)
            call = found[0] if found is not None else None
        if call is not None:
            call.cancel_received(CancelEvent(request, invite))

    def ack(self, request: Request, flow: Flow) -> None:
        found = self._find(request)
        if found is not None:
            call, side = found
            call.ack_received(side, request)
        else:
            self.outbound.ack(request)  # perhaps for a plugin's session (its far end's re-INVITE)

    def _find(self, request: Request) -> tuple[Call, Side] | None:
        tag = request.to.tag
        if tag is None:
            return None
        found = self._by_dialog.get((request.call_id, tag))
        if found is not None:
            return found
        return None

    # -- for calls ------------------------------------------------------------------------------

    def register_leg(self, call: Call, side: Side, call_id: str, local_tag: str) -> None:
        """Requests in the dialog with ``call_id`` and our ``local_tag`` go to ``call`` as
        ``side``'s (a B leg; a transfer's new leg on either side)."""
        key = (call_id, local_tag)
        self._by_dialog[key] = (call, side)
        self._keys_of[call][1].append(key)
        if call.taps is not None and call.taps.wants_sip:
            self._copy_sip(call.taps, (call_id, local_tag), side)

    def find_dialog(self, call_id: str, local_tag: str) -> tuple[Call, Side] | None:
        """The call and side whose dialog has ``call_id`` and our ``local_tag`` (the dialog a
        Replaces names, RFC 3891 §3)."""
        return self._by_dialog.get((call_id, local_tag))

    def leg_of(
        self, message: Request | Response, flow: Flow, *, inbound: bool = False
    ) -> LegInfo | None:
        """The leg a message we send belongs to (``OutboundMessage.leg``), or with ``inbound``
        the leg a message we received came from (``InboundMessage.leg``): found by its Call-ID
        and our tag in the dialog (a request's From tag, a response's To tag; the other way
        round for one we received), among that side's legs the one ``flow`` reaches where the
        call forked. None outside calls (a REGISTER's 401, OPTIONS, a 100 Trying without our
        tag yet, a new call's INVITE) and where it is not known.

        A transfer keeps the side's key with more than one party behind it: the target's leg,
        once it took the transferor's place, is the side's leg (an A leg made of it: the same
        party, counted once) and the transferor's dialog is still ours to finish (its NOTIFYs,
        the answer to its BYE). A leg of another dialog than the message's (its Call-ID) is
        not the one the message goes to."""
        ours_in_from = isinstance(message, Request) is not inbound
        tag = message.from_.tag if ours_in_from else message.to.tag
        found = self._by_dialog.get((message.call_id, tag)) if tag is not None else None
        if found is None:
            return None
        call, side = found
        infos: dict[int, Leg] = {}
        for leg in (call.a, *call.b_legs, *([call.b] if call.b is not None else [])):
            if leg.side is not side or leg.security is None or leg.security.leg is None:
                continue
            call_id = _call_id_of(leg)
            if call_id is None or call_id == message.call_id:
                infos[id(leg.security.leg)] = leg
        if len(infos) > 1:  # forked B legs share our From tag: the one on this flow
            infos = {
                key: leg
                for key, leg in infos.items()
                if leg.flow is flow or leg.address == flow.remote
            }
        if len(infos) != 1:
            return None
        (leg,) = infos.values()
        assert leg.security is not None
        return leg.security.leg

    def _limit_of(self, key: Key) -> Limit:
        kind, name = key
        if kind == "trunk":
            trunk = self.gateway.config.trunk(name)
            return NO_LIMIT if trunk is None else Limit(trunk.max_calls, trunk.max_cps)
        if kind == "account" and self.gateway.store is not None:
            account = self.gateway.store.get_account(name)  # cached: no query per call
            return NO_LIMIT if account is None else Limit(account.max_calls)
        return NO_LIMIT

    def forget(self, call: Call) -> None:
        self.limits.release(call)
        self.calls.discard(call)
        self.recordings_paused.discard(call)
        if self._call_left is not None:
            self._call_left.set()
            self._call_left = None
        if call.taps is not None:
            sip_taps = self.endpoint.sip_taps
            for key in call.taps.sip_dialogs:
                found = sip_taps.get(key)
                if found is not None and found[0] is call.taps:  # not a later call's
                    del sip_taps[key]
        keys = self._keys_of.pop(call, None)
        if keys is None:
            return
        transaction, dialog_keys = keys
        self._by_invite.pop(transaction, None)
        for key in dialog_keys:
            if self._by_dialog.get(key, (None,))[0] is call:
                del self._by_dialog[key]

    def authenticate(
        self, request: Request, flow: Flow, kind: AuthKind
    ) -> Authenticated | Response:
        registration = self.gateway.registration
        assert registration is not None
        return registration.authenticate(request, flow, kind)

    def relayed_by(self, request: Request, flow: Flow) -> tuple[RelayedHop, ...]:
        """How ``request`` reached the listed edge proxies it came through (none: it came
        straight from its sender, or [gateway] auth_proxies lists nobody)."""
        registration = self.gateway.registration
        if registration is None:
            return ()
        return relayed_hops(request, flow.remote, registration.auth_proxies)

    def trunk_for_source(self, address: str) -> str | None:
        return self.gateway.trunk_for_source(address)

    def route(self, request: Request, caller: Caller) -> RouteDecision:
        return self.gateway.route(request, caller)

    def leg_security(
        self,
        call: Call,
        side: Side,
        *,
        kind: str,
        name: str | None,
        flow: Flow | None,
        transport: str | None = None,
        device: DeviceProfile | None = None,
    ) -> LegSecurity:
        """The media security of one leg: its policy (hook, else the account's or trunk's
        configured one, or for one left at the default the device profile's) limited to what
        ``device`` takes and to the enabled key exchanges (gateway/core/devices.py)."""
        gateway = self.gateway
        configured: str | None = None
        offer_feedback = gateway.config.media.offer_rtcp_feedback
        # DTMF by SIP INFO only, as the trunk or the device profile declares it.
        dtmf_info = device is not None and device.dtmf == "info"
        if kind == "account" and name is not None and gateway.store is not None:
            account = gateway.store.get_account(name)
            configured = account.media_policy if account is not None else None
        elif kind == "trunk" and name is not None:
            trunk = gateway.config.trunk(name)
            configured = trunk.media_policy if trunk is not None else None
            if trunk is not None and trunk.offer_rtcp_feedback is not None:
                offer_feedback = trunk.offer_rtcp_feedback
            if trunk is not None and trunk.dtmf == "info":
                dtmf_info = True
        if device is not None and device.media_policy and configured in (None, DEFAULT_POLICY):
            configured = device.media_policy  # only over best-effort: never weakens another
        secure = flow.secure if flow is not None else transport in TLS_TRANSPORTS
        leg = LegInfo(
            call_id=call.id,
            side=side.value,
            kind=kind,
            name=name,
            secure_signalling=secure,
            device=device,
            configured_policy=configured,
        )
        hook = gateway.plugins.implemented("gateway_media_security_policy")
        answer = None
        if hook is not None:
            try:
                answer = hook(leg=leg)
            except Exception as exc:
                # Ends the call, as any plugin's bug on its path; named (pluggy does not).
                plugin = raising_plugin(hook, exc)
                raise PluginHookError(plugin, "gateway_media_security_policy", exc) from exc
        try:
            policy = resolve(configured, gateway.media_policies, hook_answer=answer)
        except UnknownPolicy as exc:
            # A typo in an account's policy must not silently downgrade it: refuse media.
            log.error("call %s: %s; refusing cleartext on that leg", call.id, exc)
            policy = BUILTIN_POLICIES["encrypted-only"]
        return LegSecurity(
            side=side.value,
            policy=self._effective_policy(narrowed_for_device(policy, device)),
            secure_signalling=secure,
            key_exchanges=self._key_exchanges,
            signalling=flow.transport if flow is not None else (transport or "udp"),
            offer_feedback=offer_feedback,
            leg=leg,  # for key exchanges keyed per account or trunk (mikey's PSK modes)
            failures=None if self.statistics is None else self.statistics.key_exchange_failures,
            dtmf_info=dtmf_info,
            codecs=device.codecs if device is not None else None,
        )

    def _effective_policy(self, policy: MediaPolicy) -> MediaPolicy:
        """``policy`` limited to the enabled key exchanges: once per registered policy, per
        leg for one a device profile narrowed or the hook made (not the registered object)."""
        if self.gateway.media_policies.get(policy.name) is not policy:
            return effective(policy, self._key_exchanges)
        limited = self._effective_policies.get(policy.name)
        if limited is None:
            limited = self._effective_policies[policy.name] = effective(policy, self._key_exchanges)
        return limited

    def new_media_session(self, on_lost: Callable[[str], None] | None = None) -> MediaSession:
        return self.gateway.new_media_session(on_lost)

    def event(
        self,
        call: Call,
        kind: str,
        reason: str | None,
        *,
        security: Mapping[str, object] | None = None,
    ) -> None:
        """A call's ``kind`` ("started", "answered", "ended") for its record, dialog watchers
        and statistics; ``security``: its security record at its end, if the call made it
        already (else made here when the record needs it)."""
        self._record(call, kind, reason, security)
        watching = self.dialog_events
        if watching is not None and watching.watched:  # nobody watched: a truth test per event
            try:
                watching.call_changed(call, kind)
            except Exception:
                log_exception(log, "dialog notifier failed (call %s)", call.id)
        statistics = self.statistics
        if statistics is not None:
            statistics.event(call, kind, reason, trio.current_time())
        if not self._observers:
            return
        event = CallEvent(kind=kind, call_id=call.id, at=trio.current_time(), reason=reason)
        given = {"event": event}
        for plugin, observer, by_position, by_name in self._observers:
            try:
                # As pluggy passes them (plugins.Implementation): an observer written for
                # pluggy's call gets the event as it did.
                if by_position is None or by_name is None:
                    observer(**given)
                elif by_name:
                    observer(
                        *[given[name] for name in by_position],
                        **{name: given[name] for name in by_name if name in given},
                    )
                else:  # the usual observer, `def gateway_call_event(self, event)`
                    observer(*[given[name] for name in by_position])
            except Exception as exc:
                # Named as the decision hooks' failures are, and at most once a minute per
                # plugin: an observer failing on every event would flood.
                if plugin is None:  # through pluggy (a hook wrapper): its traceback says
                    plugin = raising_plugin(observer, exc)
                self._observer_failures.failed(
                    plugin,
                    exc,
                    "%s: gateway_call_event observer raised %s on %s (call %s); the call goes on%s",
                    who(plugin),
                    type(exc).__name__,
                    kind,
                    call.id,
                )

    def _tap_from_start(self, call: Call, invite: Request, caller: Caller) -> None:
        """Ask the taps that decide at a call's start (lawful intercept) for sinks; with any,
        the call has its :class:`CallTaps` from now on and the endpoint copies the SIP of its
        dialogs to them, this INVITE first."""
        deciders = [
            (name, tap.sink_for_call_start)
            for name, tap in self._start_taps
            if getattr(tap, "wants_calls", True)
        ]
        if not deciders:
            return  # an interception tap with no task: nothing to build per call
        sinks = self._sinks_for(deciders, self._tapped_at_start(call, invite, caller), call)
        if not sinks:
            return
        call.taps = CallTaps(call.id, None, sinks, clock=trio.current_time)
        if call.taps.wants_sip:
            self._copy_a_leg(call.taps, call, invite)

    def _tapped_at_start(self, call: Call, invite: Request, caller: Caller) -> TappedCall:
        """What a tap deciding at a call's start is told: its caller's INVITE's identities,
        and their numbers read as E.164 (a carrier's national ``030123456`` is the target
        ``+4930123456``): a trunk's From and P-Asserted-Identity by the trunk's numbering plan,
        the number called by the caller's."""
        asserted = _asserted_uris(invite)
        trunk = caller.name if caller.kind == "trunk" else None
        if caller.kind == "account":
            caller_uris = self._account_uris(caller.name)
        else:
            caller_uris = self._e164_uris((str(invite.from_.uri), *asserted), trunk)
        return TappedCall(
            call_id=call.record_id,
            from_uri=str(invite.from_.uri),
            to_uri=str(invite.uri),
            caller_kind=caller.kind,
            caller_name=caller.name,
            callee_kind="",
            callee_name=None,
            sessions=self.outbound,
            to_header_uri=str(invite.to.uri),
            asserted_uris=asserted,
            caller_uris=caller_uris,
            callee_uris=self._e164_uris((str(invite.uri), str(invite.to.uri)), trunk),
        )

    def _e164_uris(self, uris: Sequence[str], trunk: str | None) -> tuple[str, ...]:
        """``tel:`` URIs of the numbers in ``uris`` (SIP user parts, tel numbers) that the
        numbering plan of ``trunk`` (None: ``[numbering]``) reads as E.164 differently from
        how they are written; the rest add nothing."""
        directory = self.gateway.directory
        if directory is None:
            return ()
        found: list[str] = []
        for text in uris:
            written = _number_of(text)
            if written is None:
                continue
            number = directory.to_e164(written, trunk=trunk)
            if number.startswith("+") and number != written and f"tel:{number}" not in found:
                found.append(f"tel:{number}")
        return tuple(found)

    def _account_uris(self, account: str | None) -> tuple[str, ...]:
        """An account's identities as the gateway knows them: its address of record in each
        local domain, and the numbers the trunks deliver to it."""
        if account is None:
            return ()
        directory = self.gateway.directory
        domains = directory.local_domains if directory is not None else frozenset()
        uris = [f"sip:{account}@{domain}" for domain in sorted(domains)]
        if self._numbers_of is None:  # the trunks' dids by account, once (config is fixed)
            self._numbers_of = {}
            for trunk in self.gateway.config.trunks:
                for number, owner in trunk.dids.items():
                    # As E.164 too where the trunk's plan reads the DID so: a target
                    # "+4930123456" is the account a carrier reaches as "030123456".
                    numbers = self._numbers_of.setdefault(owner, [])
                    e164 = directory.to_e164(number, trunk=trunk.name) if directory else number
                    numbers += [n for n in dict.fromkeys((number, e164)) if n not in numbers]
        uris += [f"tel:{number}" for number in self._numbers_of.get(account, ())]
        return tuple(uris)

    def routed(self, call: Call, targets: Sequence[RouteTarget]) -> None:
        """The call is routed: taps deciding at the start that have not taken it are asked
        again with the accounts it goes to (a DID reaching an account whose address of record
        the INVITE does not carry). A sink made now gets the caller's INVITE first."""
        invite, caller = call.a.invite, call.caller
        copy, call.invite_copy = call.invite_copy, None  # kept until now, not for the call
        accounts = [target.account for target in targets if target.account is not None]
        if not accounts or invite is None or caller is None:
            return
        deciders = [
            (name, tap.sink_for_call_start)
            for name, tap in self._start_taps
            if getattr(tap, "wants_calls", True)
        ]
        if not deciders:
            return
        at_start = self._tapped_at_start(call, invite, caller)
        callee_uris = tuple(uri for account in accounts for uri in self._account_uris(account))
        tapped = attrs.evolve(
            at_start,
            callee_kind="account",
            callee_name=accounts[0],
            callee_uris=at_start.callee_uris + callee_uris,
        )
        sinks = self._sinks_for(deciders, tapped, call)
        if not sinks:
            return
        if call.taps is None:
            call.taps = CallTaps(call.id, call.media, sinks, clock=trio.current_time)
        else:
            call.taps.add(sinks)
        if copy is not None:  # to the new sinks only (earlier ones had it as it came)
            data, transport, source, destination, at = copy
            copy_sip(
                sinks,
                data,
                leg="a",
                inbound=True,
                transport=transport,
                source=source,
                destination=destination,
                at=at,
            )
        if call.taps.wants_sip:
            self._copy_a_leg(call.taps, call, invite)
        call.taps.attach()

    def reached(self, call: Call, targets: Sequence[RouteTarget], uri: str | None) -> None:
        """The call reaches ``targets`` after its first routing: a callee's 3xx followed to
        ``uri`` (the URI routed: the Contact's user part as a number or name dialled to us),
        or a failover to an account (``uri`` None). Taps deciding at the start are asked
        again, the new callee among its callee_uris: a call forwarded to an interception
        target is intercepted from here on (the forwarded-to party is the callee now, as if
        it had been dialled). A tap already on the call adds to its sink
        (``sink_for_call_start`` returns None then); a sink made now gets the caller's INVITE
        first, then the SIP of the call's dialogs and its media. Only redirected and failed
        over calls get here: nothing per call for the others."""
        invite, caller = call.a.invite, call.caller
        if invite is None or caller is None or call not in self._keys_of:
            return
        deciders = [
            (name, tap.sink_for_call_start)
            for name, tap in self._start_taps
            if getattr(tap, "wants_calls", True)
        ]
        if not deciders:
            return
        accounts = [target.account for target in targets if target.account is not None]
        reached = [uri, *self._e164_uris((uri,), None)] if uri is not None else []
        reached += [found for account in accounts for found in self._account_uris(account)]
        if not reached:
            return  # a failover to another trunk: the number is the one asked about before
        first = targets[0]
        at_start = self._tapped_at_start(call, invite, caller)
        tapped = attrs.evolve(
            at_start,
            callee_kind="account" if first.account is not None else "trunk",
            callee_name=first.account if first.account is not None else first.trunk,
            callee_uris=at_start.callee_uris + tuple(dict.fromkeys(reached)),
        )
        sinks = self._sinks_for(deciders, tapped, call)
        if not sinks:
            return
        if call.taps is None:
            call.taps = CallTaps(call.id, call.media, sinks, clock=trio.current_time)
        else:
            call.taps.add(sinks)
        # The INVITE as it came is not kept past routed() (bytes held for the call's length,
        # for every call, to serve the few redirected ones): the new sinks get it as we parsed
        # it (every header field in order, the body as it was; RFC 3261 §7.3.1 white space
        # normalised), stamped with when it arrived.
        flow = call.a.flow
        if flow is not None:
            copy_sip(
                sinks,
                serialize_message(invite),
                leg="a",
                inbound=True,
                transport=flow.transport,
                source=flow.remote,
                destination=flow.local,
                at=time.time() - (trio.current_time() - call.started_at),
            )
        if call.taps.wants_sip:
            self._copy_a_leg(call.taps, call, invite)
            for key in self._keys_of[call][1]:  # the legs rung so far (the one that 3xx'd)
                found = self._by_dialog.get(key)
                if found is not None and found[0] is call:
                    self._copy_sip(call.taps, key, found[1])
        call.taps.attach()

    def _ask_again(self, name: str, tap: MediaTap) -> None:
        """A tap deciding at a call's start has new targets (a task activated): ask it again
        about every call in progress. A call it now wants gets the sink from this moment on,
        with the SIP of all its dialogs and its media (nothing of what went before)."""
        decide = tap.sink_for_call_start  # type: ignore[attr-defined]
        for call in list(self.calls):
            invite, caller = call.a.invite, call.caller
            if invite is None or caller is None or call not in self._keys_of:
                continue
            tapped = self._tapped_at_start(call, invite, caller)
            sinks = self._sinks_for([(name, decide)], tapped, call)
            if not sinks:
                continue
            if call.taps is None:
                call.taps = CallTaps(call.id, call.media, sinks, clock=trio.current_time)
            else:
                call.taps.add(sinks)
            if call.taps.wants_sip:
                self._copy_a_leg(call.taps, call, invite)
                for key in self._keys_of[call][1]:
                    found = self._by_dialog.get(key)
                    if found is not None and found[0] is call:
                        self._copy_sip(call.taps, key, found[1])
            call.taps.attach()

    def _copy_a_leg(self, taps: CallTaps, call: Call, invite: Request) -> None:
        """The caller's dialog: by our tag, and by the caller's From tag for the messages of
        its INVITE transaction that carry no tag of ours (the INVITE, 100 Trying, CANCEL)."""
        self._copy_sip(taps, (invite.call_id, call.a.local_tag), _S_A)
        self._copy_sip(taps, (invite.call_id, invite.from_.tag), _S_A)

    def _copy_sip(self, taps: CallTaps, key: tuple[str, str | None], side: Side) -> None:
        """The endpoint copies every SIP message of the dialog ``key`` (Call-ID, tag) to
        ``taps``."""
        taps.sip_dialogs.add(key)
        self.endpoint.sip_taps[key] = (taps, side.value)

    def tap_sinks(self, call: Call) -> list[tuple[str, TapSink]]:
        """The sinks the registered media taps want for ``call`` (now answered); each sink's
        task is started here, in the manager's nursery, which outlives the call. Taps that
        decided at the call's start are not asked again."""
        invite = call.a.invite
        taps = self.gateway.plugins.media_taps.items()
        if not taps or invite is None or call.caller is None:
            return []  # the usual case: nothing to build per call
        b_leg = call.b
        tapped = TappedCall(
            call_id=call.record_id,
            from_uri=str(invite.from_.uri),
            to_uri=str(invite.uri),
            caller_kind=call.caller.kind,
            caller_name=call.caller.name,
            callee_kind=b_leg.peer_kind if b_leg is not None else "",
            callee_name=b_leg.peer_name if b_leg is not None else None,
            media=tapped_media(
                call.media.last_sent(_S_A.value) if call.media is not None else None
            ),
            sessions=self.outbound,
            answered_by=_picker_uri(call),
        )
        deciders = [
            (name, tap.sink_for_call)
            for name, tap in taps
            if not callable(getattr(tap, "sink_for_call_start", None))
        ]
        return self._sinks_for(deciders, tapped, call, indicate=True)

    def _sinks_for(
        self,
        deciders: list[tuple[str, Callable[[TappedCall], TapSink | None]]],
        tapped: TappedCall,
        call: Call,
        *,
        indicate: bool = False,
    ) -> list[tuple[str, TapSink]]:
        """``indicate``: each tap's TappedCall may tell the recording-aware parties of its
        recording (``indicate_recording``): the taps asked at the answer only, never those
        deciding at the start (lawful interception, which must never show)."""
        sinks: list[tuple[str, TapSink]] = []
        for name, decide in deciders:
            told = (
                attrs.evolve(
                    tapped, indicate_recording=functools.partial(call.recording_indicated, name)
                )
                if indicate
                else tapped
            )
            try:
                sink = decide(told)
            except Exception:
                log_exception(log, "media tap %s failed to decide on a call", name)
                continue
            if sink is not None:
                self.start_soon(_run_sink, name, sink)
                sinks.append((name, sink))
        return sinks

    def identity_outcome(self, call: Call, outcome: IdentityOutcome) -> None:
        """A caller-identity service signed or checked ``call``: counted by outcome (metrics)
        and kept for the call's record."""
        self.identity_outcomes[outcome.outcome] += 1
        call.identity.append(outcome)

    def pause_recording(self, call_id: str, paused: bool, *, by: str) -> dict[str, object]:
        """Pause (``paused``) or resume the recordings of the live call ``call_id`` (its
        record id, ``Call-ID;tag``, or its SIP Call-ID) on ``by``'s request (the control
        socket's ``recording``, ``voipgw recording pause|resume``): the recording taps stop
        sending copies (SIPREC re-INVITEs its recorder with the streams a=inactive, RFC 7866
        §7.1.1) until resumed; an interception is never paused (``CallTaps.recordings``).
        Logged at INFO with who asked, kept in the call's record. A call not answered yet,
        whose recording has not started, keeps the pause for the recordings that start at its
        answer (:meth:`_pause_before_recording`) where a tap may record it. Raises ControlError
        for a call that is not live here, one that is not recorded, a SIP Call-ID that names
        more than one call."""
        from gateway.core.control import ControlError

        found = [
            call
            for call in self.calls
            if call_id in (call.record_id, call.id) and call.caller is not None
        ]
        if not found:
            raise ControlError(f"no live call {call_id!r} on this gateway")
        if len(found) > 1:
            ids = ", ".join(sorted(call.record_id for call in found))
            raise ControlError(f"{call_id!r} names {len(found)} calls, give one of: {ids}")
        call = found[0]
        taps = call.taps
        action = "pause" if paused else "resume"
        if (taps is None or not taps.recordings()) and not call.taps_decided and self._records():
            return self._pause_before_recording(call, paused, by=by)
        if taps is None or not taps.recordings():
            log.info(
                "call %s: recording %s asked by %s: the call is not recorded",
                call.id,
                action,
                by,
            )
            raise ControlError(f"call {call.record_id} is not recorded: nothing to {action}")
        names, changed = taps.pause_recording(paused, by=by, at=time.time())
        if changed:
            self.recording_pauses[action] += 1
            if paused or taps.paused_by_preference():
                self.recordings_paused.add(call)  # (a resume leaves one paused for a preference)
            else:
                self.recordings_paused.discard(call)
            log.info(
                "call %s: recording %s by %s (%s)",
                call.id,
                "paused" if paused else "resumed",
                by,
                ", ".join(names),
            )
            self.security_changed(call)
        answer: dict[str, object] = {
            "call_id": call.record_id,
            "paused": taps.paused,
            "changed": changed,
            "recordings": names,
        }
        held = taps.paused_by_preference()
        if held:  # still paused for a party's a=recordpref, whatever the operator asked
            answer["paused_by_preference"] = held
        return answer

    def recording_paused_for_preference(self, call: Call, paused: bool) -> None:
        """A recording of ``call`` paused (``paused``) or resumed for its parties' recording
        preferences (RFC 7866 §7.2, ``[plugins.siprec] recordpref = "pause"``): counted beside
        the pauses on request (``preference_pause``, ``preference_resume``), and the call is in
        the paused gauge while it is paused for either."""
        self.recording_pauses["preference_pause" if paused else "preference_resume"] += 1
        taps = call.taps
        if paused or (taps is not None and taps.paused):
            self.recordings_paused.add(call)
        else:
            self.recordings_paused.discard(call)
        self.security_changed(call)

    def _records(self) -> bool:
        """Whether a media tap that decides at a call's answer, and is not covert, is
        registered: one that may record the calls being set up."""
        return any(
            not callable(getattr(tap, "sink_for_call_start", None))
            and not getattr(tap, "covert", False)
            for _, tap in self.gateway.plugins.media_taps.items()
        )

    def _pause_before_recording(self, call: Call, paused: bool, *, by: str) -> dict[str, object]:
        """A pause (resume) of a call whose recording has not started (it is not answered
        yet): kept on the call and applied to the recordings that start at its answer
        (:meth:`recording_started`), so that an agent who pauses at once for card digits has
        none of them recorded; a resume drops it. Counted, and the call is in the paused gauge,
        from now: the pause was asked and taken (a call that ends unanswered, or that no
        recording takes, leaves the gauge then)."""
        changed = (call.pause_before_recording is not None) != paused
        if changed:
            call.pause_before_recording = (by, time.time()) if paused else None
            action = "pause" if paused else "resume"
            self.recording_pauses[action] += 1
            if paused:
                self.recordings_paused.add(call)
            else:
                self.recordings_paused.discard(call)
            log.info(
                "call %s: recording %s by %s before its recording started: %s",
                call.id,
                "paused" if paused else "resumed",
                by,
                "a recording that starts starts paused" if paused else "no pause kept",
            )
        return {
            "call_id": call.record_id,
            "paused": paused,
            "changed": changed,
            "recordings": [],
            "pending": True,
        }

    def recording_started(self, call: Call) -> None:
        """The call is answered and its taps that decide then were asked, with a pause asked
        before (:meth:`_pause_before_recording`): the recordings that started are paused now,
        before any packet reaches them, logged as any pause (who asked, when it was asked in
        the call's record); with none, the call is not recorded and leaves the paused gauge."""
        pending, call.pause_before_recording = call.pause_before_recording, None
        if pending is None:
            return
        by, at = pending
        taps = call.taps
        if taps is None or not taps.recordings():
            self.recordings_paused.discard(call)
            # The lines of a pause asked after the answer (docs/operations.md), as it applies.
            log.info(
                "call %s: recording %s asked by %s: the call is not recorded", call.id, "pause", by
            )
            return
        names, _ = taps.pause_recording(True, by=by, at=at)
        log.info("call %s: recording %s by %s (%s)", call.id, "paused", by, ", ".join(names))
        self.security_changed(call)

    def security_changed(self, call: Call) -> None:
        """The call's live record changed after its answer (its media got keys, a transfer was
        done or failed): ``voipgw calls`` should show it."""
        if self.records is not None and call.caller is not None:
            self.records.security_changed(call.record_id)

    def _record(
        self, call: Call, kind: str, reason: str | None, security: Mapping[str, object] | None
    ) -> None:
        """Keep the call detail record (saved in batches by :attr:`records`)."""
        records = self.records
        if records is None or call.caller is None:
            return  # a digest challenge is not a call
        if kind == "started":
            invite = call.a.invite
            assert invite is not None
            records.started(call.record_id, str(invite.from_.uri), str(invite.uri))
        elif kind == "answered":
            records.answered(call.record_id, call)
        elif kind == "ended":
            if security is None:
                security = call.security_record()
            records.ended(call.record_id, reason or "normal clearing", security)


def _call_id_of(leg: Leg) -> str | None:
    """The Call-ID of ``leg``'s dialog, or of the INVITE that makes it; None before either."""
    if leg.dialog is not None:
        return leg.dialog.id.call_id
    invite = leg.invite if isinstance(leg, ALeg | BLeg) else None
    return None if invite is None else invite.call_id


async def _run_sink(name: str, sink: TapSink) -> None:
    """A tap sink's task: its failure is logged, never the gateway's end."""
    try:
        await sink.run()
    except Exception:
        log_exception(log, "media tap %s stopped with an error", name)


def _picker_uri(call: Call) -> str:
    """The URI of the phone that picked ``call`` up (its dialog's remote URI: the picker's
    From, RFC 3261 §12.1.1), "" for a call answered where it was sent: a recorder's metadata
    names who is on the call (RFC 7865 participant), not the phone that only rang."""
    leg = call.b
    if call.picked_up is None or leg is None or leg.dialog is None:
        return ""
    uri = leg.dialog.remote_uri.uri
    return "" if uri is None else str(uri)


def _number_of(uri: str) -> str | None:
    """The user part of a ``sip:``/``sips:`` URI or the number of a ``tel:`` URI (text as it
    is, with its parameters), or None."""
    scheme, colon, rest = uri.partition(":")
    if not colon:
        return None
    scheme = scheme.lower()
    if scheme == "tel":
        return rest or None
    if scheme in ("sip", "sips"):
        user, at, _ = rest.rpartition("@")
        return user if at and user else None
    return None


def _asserted_uris(invite: Request) -> tuple[str, ...]:
    """The URIs of the INVITE's P-Asserted-Identity headers (RFC 3325 §9.1); a value that does
    not parse is left out (it identifies nobody)."""
    uris: list[str] = []
    for value in invite.headers.get_all("P-Asserted-Identity"):
        try:
            for item in split_list_untrusted(value):
                uris.append(str(parse_name_addr_untrusted(item).uri))
        except SipError:
            continue
    return tuple(uris)


# How callers authenticated (the call record's "auth"): a few distinct values (realms,
# algorithms, trunk addresses) made once each, not per call.
@functools.lru_cache(maxsize=256)
def _digest_auth(
    realm: str, algorithm: str, qop: str | None, device_certificate: bool
) -> CallerAuth:
    return CallerAuth(
        "digest", realm=realm, algorithm=algorithm, qop=qop, device_certificate=device_certificate
    )


@functools.lru_cache(maxsize=256)
def _source_auth(source: str) -> CallerAuth:
    return CallerAuth("source", source=source)
