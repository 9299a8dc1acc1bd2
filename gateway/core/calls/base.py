"""What one call is, and the primitives every part of it uses.

The call (call.py) is split by concern, each a class in its own module that the class
:class:`~gateway.core.calls.call.Call` composes; this one holds the state of them all, set in
:meth:`CallBase.__init__` (the legs, the media session, the timers, each concern's own), and what
every concern does with it:

- the event queue, fed from the endpoint's task (:meth:`CallBase.post`, bounded: STYLE.md
  habit 7) and read by the call's task between its timed waits (:meth:`CallBase._next_event`);
- answering the caller's INVITE (with a Q.850 cause in the Reason to a trunk with a PSTN
  interworking, RFC 3326, RFC 3398);
- sending a request in a dialog (RFC 3261 §12.2.1.1) and answering a trunk's challenge to it
  once, in the same request with the dialog's next CSeq (§22.2, §8.1.3.5), our BYE's included;
- ACK (§13.2.2.4, with an answer rejecting every stream for a 2xx we BYE at once, RFC 3264 §6),
  CANCEL (§9.1) and BYE saying why (RFC 3326), the call's end and what is left to do after it
  (B legs drained, re-INVITEs of ours CANCELled);
- our 2xx to an INVITE re-sent until its ACK (§13.3.1.4) and our reliable 1xx until its PRACK
  (RFC 3262 §3).

Every module of the call logs as ``gateway.core.calls.call``, as the one module did.
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

import trio

from gateway.core.auth.client import authorize
from gateway.core.calls.events import (
    AckEvent,
    AnswerFailure,
    CallEnded,
    CallEventInput,
    CancelEvent,
    EndCallEvent,
    InDialogRequest,
    PickUpEvent,
    RequestEvent,
    ResponseEvent,
    quoted,
    warning_header,
)
from gateway.core.calls.leg import ALeg, BLeg, Leg, Side
from gateway.core.calls.location import Location
from gateway.core.calls.redirect import Diverted
from gateway.core.calls.routing import reconnect_destination
from gateway.core.calls.transfer import Transfer
from gateway.core.interfaces import Caller, IdentityOutcome, RouteTarget
from gateway.core.logs import transport_error_text
from gateway.core.media.handshakes import CallHandshakes
from gateway.core.media.keying import CallKeying
from gateway.core.media.session import ORIGIN_USERNAME
from gateway.core.media.taps import CallTaps
from gateway.core.sdp.body import ACCEPTED_BODY_TYPES, sdp_of
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.offer_answer import refusing_answer
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip.dialog import Dialog, DialogState, contact_must_be_sips, is_sips
from gateway.core.sip.message import Request, Response, cancel_for, make_response
from gateway.core.sip.session_timer import UasAnswer
from gateway.core.sip.transaction import (
    ClientInviteTransaction,
    ServerTransaction,
    State,
    TransactionStateError,
)
from gateway.core.sip.uri import SipUri
from gateway.core.sip.usages import dialog_lost, ends_session
from gateway.core.transport.flows import TLS_TRANSPORTS, Address, Flow

if TYPE_CHECKING:
    from gateway.core.calls.dtmf_info import DtmfWork
    from gateway.core.calls.forwarding import Redirects
    from gateway.core.calls.manager import CallChildren, CallManager
    from gateway.core.calls.timers import Entry
    from gateway.core.config import TrunkConfig
    from gateway.core.endpoint import ClientRequest
    from gateway.core.media.session import MediaSession

# Enum members read at run time, as module names: on CPython 3.11 a member read from its
# class goes through EnumType's __getattr__ hook, ~900 instructions (docs/benchmarks.md,
# sessions 44 and 45).
_S_A = Side.A
_D_EARLY = DialogState.EARLY
_S_PROCEEDING = State.PROCEEDING

# The call's logger, whichever of its modules logs: operators' settings and filters name it.
log = logging.getLogger("gateway.core.calls.call")

SDP = "application/sdp"
# What a 415 lists (RFC 3261 §21.4.13): SDP alone, or in a multipart/mixed body beside location
# parts (RFC 5621 §3.2 asks for multipart/mixed to be listed when it is taken).
ACCEPT_BODIES = ("Accept", ACCEPTED_BODY_TYPES)
# Requests queued for one call before more get 503 (a flood from a peer), and room for every
# event: responses to what the call sent come in as well and must not be lost to a flood of
# requests (a relayed request's answer dropped would leave its requester without one).
EVENT_QUEUE = 64
EVENT_ROOM = 1024
# The methods of a dialog that may carry an offer, whose transactions each leg follows while
# they are unanswered (Leg.exchanges: RFC 3261 §14.1, RFC 3311 §5.1).
OFFER_METHODS = frozenset({"INVITE", "UPDATE"})
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, MESSAGE, NOTIFY, PRACK, UPDATE, REFER, SUBSCRIBE"
# A peer's Reason values we carry to the other leg, at most (the parser bounds headers anyway).
MAX_REASONS = 4
# The ISUP release cause of a hang-up (Q.850 16, "normal call clearing": RFC 3398 §7.2.4.1 turns
# a release with it into BYE), in the BYEs we send a trunk with a PSTN interworking.
Q850_NORMAL_CLEARING = 16


class CallBase:
    """A call's state and the primitives every concern of it uses (the module's docstring)."""

    picked_up: dict[str, str | None] | None = None
    """Set when a BLF key picked the call up (who, from whom it rang): the call record says
    so. A class default, not set per call: only a picked-up call has its own."""
    _location_errors: list[dict[str, object]] | None = None
    """The Geolocation-Errors (RFC 6442 §4.3) trunks answered the caller's location with: who,
    in what status, which code. A class default: only a call that got one has its own."""
    _diverted: tuple[Diverted, ...] = ()
    """Who diverted the call, oldest first (a trunk's INVITE said so, our callees redirected
    it; redirect.py): our INVITEs say so. A class default: only a diverted call has its own."""
    _redirects: Redirects | None = None
    """Call forwarding by redirect (3xx) in this call, made at its first 3xx."""
    _handshakes_refused = False
    """The handshake task could not start (the call is ending): not tried again at the next
    SDP change (CallMediaKeys._drive_handshakes). A class default: only such a call sets it."""

    def __init__(
        self,
        manager: CallManager,
        transaction: ServerTransaction,
        invite: Request,
        flow: Flow,
        caller: Caller,
    ) -> None:
        self.manager = manager
        self.endpoint = manager.endpoint
        gateway = manager.gateway
        self.config = gateway.config
        self.id = invite.call_id
        self.started_at = trio.current_time()
        # The caller asked for a SIPS URI over TLS: the dialog with it is secure (RFC 3261
        # §12.1.1) and the call goes on over TLS on every hop (RFC 5630 §3.1.3), or not at all.
        # A sips: INVITE over another transport never gets here (CallManager.invite).
        self.secure = flow.secure and is_sips(invite.uri)
        self.a = ALeg(
            side=_S_A,
            flow=flow,
            transport=flow.transport,
            address=flow.remote,
            contact=self.endpoint.our_contact(
                flow.transport,
                # RFC 3261 §12.1.1: SIPS Request-URI, top Record-Route or Contact: a sips:
                # Contact in our answers (over WSS sips:...;transport=wss, RFC 7118 §9.2).
                sips=flow.secure and contact_must_be_sips(invite),
            ),
            invite=invite,
            transaction=transaction,
            local_tag=gateway.ids.new_tag(),
            peer_kind=caller.kind,
            peer_name=caller.name,
            auth=caller.auth,
            relayed_by=manager.relayed_by(invite, flow),
            shown_as=_shown_caller(invite, caller),
            private=wants_privacy(invite),
        )
        # Call-ID alone is not unique: a caller retries with the same one after a failure.
        self.record_id = f"{self.id};{self.a.local_tag}"
        self.b_legs: list[BLeg] = []
        self.b: BLeg | None = None  # the leg that answered
        self.caller = caller  # identified before the call exists (CallManager.invite)
        self.psap_callback = False
        """An emergency service calling back (RFC 7090, calls/psap_callback.py), set by the
        manager: served like an emergency call, and phones are told (``Priority``)."""
        self.media: MediaSession | None = None
        self.keying: CallKeying | None = None
        self.taps: CallTaps | None = None
        self.taps_decided = False
        """The taps that decide at the answer (recordings) have been asked (_start_taps)."""
        self.pause_before_recording: tuple[str, float] | None = None
        """A recording pause asked before the call's recording could start (who, when: the
        control socket's ``recording``): applied to the recordings that start at its answer."""
        self.invite_copy: tuple[bytes, str, Address, Address, float] | None = None
        """The caller's INVITE as received (bytes, transport, source, destination, Unix time),
        kept from its arrival to its routing, only while taps decide at the start (lawful
        intercept)."""
        self.handshakes: CallHandshakes | None = None  # started with the first DTLS stream
        # Sides our answer is made to but not sent yet, when the handshake task does not exist
        # yet (CallMediaKeys._hold_answer): it holds them from its start.
        self._answers_unsent: set[str] = set()
        self._keyed_b: BLeg | None = None  # the B leg whose keys are applied
        self.state = "new"
        # The gateway ends the call while it is still being set up (state "new": its task reads
        # no events yet): the end asked for, and the scope of the set-up's wait for a remote
        # server (a STIR/SHAKEN certificate) that the end cuts short.
        self._end_in_setup: EndCallEvent | None = None
        self._setup_wait: trio.CancelScope | None = None
        self._cancel_in_setup: CancelEvent | None = None  # the caller's CANCEL meanwhile
        # A's INVITE had no SDP (RFC 3261 §13.2.1, "late offer"): B's 2xx brings the offer, our
        # 2xx to A carries it on, and A's ACK brings the answer we put in B's ACK.
        self.late_offer = False
        self.answered_at = 0.0
        self.end_reason: str | None = None
        # The event queue (:meth:`post`, :meth:`_next_event`): a FIFO with one consumer, the
        # call's task, parked with wait_task_rescheduled and woken by post itself, as the
        # endpoint's inbound queue (transport/inbound.py); a trio memory channel did the same at
        # the cost of its state machine and a WouldBlock raised and caught per empty receive.
        self._events: collections.deque[CallEventInput] = collections.deque()
        self._events_closed = False  # the call has ended: post refuses
        self._waiter: trio.lowlevel.Task | None = None  # the call's task, parked for an event
        self._queued_requests = 0
        # The call's child tasks (CallManager.start_child): started while _boundary, the cancel
        # scope around the call's states, is set (the call's task runs), in the manager's nursery.
        self._boundary: trio.CancelScope | None = None
        self._children: CallChildren | None = None
        # Client requests whose responses come into the event queue; detached at the end.
        self._forwarded: list[ClientRequest] = []
        self._pending_reinvite: tuple[Side, ServerTransaction, Request] | None = None
        # A pickup of a late-offer call: the picker's INVITE, answered once A's ACK brings the
        # answer to the picker's offer (:meth:`_answer_picker`), and its session timer.
        self._pickup_waiting: tuple[PickUpEvent, UasAnswer] | None = None
        # The re-INVITE we relayed for it, and when we stop waiting for its final response.
        self._reinvite_sent: InDialogRequest | None = None
        self._reinvite_deadline = math.inf
        # Our re-key re-INVITE to a forked callee (fork_rekey.py) in progress, when it is tried
        # again after a 491 (RFC 3261 §14.1), and how often it was.
        self._fork_rekey: InDialogRequest | None = None
        self._fork_rekey_leg: BLeg | None = None  # the leg it re-keys (a transfer may replace B)
        self._fork_rekey_again_at = math.inf
        self._fork_rekey_deadline = math.inf  # 64*T1: CANCEL it if it rings on (RFC 3261 §9.1)
        self._fork_rekey_tries = 0
        # What became of it, for the B leg's security record ("fork_rekey"); None: not needed.
        self._fork_rekey_outcome: str | None = None
        # The recording indication (recording_indication.py): each recording tap's state as
        # its sink last said, whether an event to read them is queued, our re-INVITE telling a
        # recording-aware party (None: none out), when to look again, its 64*T1 deadline, its
        # 491 retries, and the earliest the next may go (one per INDICATION_INTERVAL).
        self._recording_states: dict[str, str] = {}
        self._indication_posted = False
        self._indication: InDialogRequest | None = None
        self._indication_again_at = math.inf
        self._indication_deadline = math.inf
        self._indication_glare_tries = 0
        self._indication_glare_side: Side | None = None  # the leg a 491 made us offer again
        self._indication_not_before = -math.inf
        self._ring_deadline = math.inf  # Timer C, set when the B legs are called
        # Serial failover (RouteDecision.alternates): the trunks still to try, the offer each
        # gets, and the legs of the attempt in progress (the routed targets, then one each).
        self._alternates: list[RouteTarget] = []
        self._offer_b: SessionDescription | None = None
        self._attempt: list[BLeg] = []
        self._refusals: list[str] = []  # why targets' media policies refused the offer
        # Targets not called because making their offer raised (_call_target): each target's
        # failure, the caller's answer when no target got to answer at all (_fail_a).
        self._offer_failures: list[AnswerFailure] = []
        self._relaying: set[InDialogRequest] = set()  # relayed requests not answered yet
        self._retransmit_at: dict[Side, tuple[float, float, Response, float]] = {}
        # The timed wait the task is parked in (_next_event): its entry in the call timers' heap
        # (timers.py; still set, its call None, once it fired and until the task resumes) and
        # the deadline it was asked for, besides the retransmissions.
        self._wait_timer: Entry | None = None
        self._wait_deadline = math.inf
        self._reinvite_acks: dict[Side, Request] = {}
        # RFC 3262 on the A leg, when the caller requires it (Require: 100rel): our provisional
        # responses are sent reliably, one unacknowledged at a time, re-sent until its PRACK.
        self.a_reliable_1xx = False
        self._rseq = 0  # the RSeq of the last reliable provisional response sent
        # The unacknowledged reliable 1xx: (response, when due again, interval, when to give up).
        self._unacked_1xx: tuple[Response, float, float, float] | None = None
        self._held_1xx: Response | None = None  # a later 1xx, sent once the current one is PRACKed
        # A re-INVITE without SDP (late offer, RFC 3261 §14.1) whose 2xx brought an offer: the
        # side that answered and its 2xx, not ACKed until the requester's ACK brings the answer.
        self._late_reinvite: tuple[Side, Response] | None = None
        # The leg whose ACK carries the answer to an offer we put in our 2xx (late offer).
        self._answer_in_ack: Side | None = None
        # RFC 4028: the session timer our 2xx to A's INVITE states, and our 2xx to the re-INVITE
        # being relayed (the requester's leg runs it once that 2xx goes out).
        self._a_timer = UasAnswer(None, require=False)
        self._reinvite_timer = UasAnswer(None, require=False)
        # Transfers (RFC 3515, transfer.py): the one in progress; the B legs of every transfer's
        # INVITEs (their responses are the transfer's business); the dialogs of transferors that
        # left the call, each with when we BYE it if it has not hung up by then; and what each
        # transfer came to, for the call record.
        self._transfer: Transfer | None = None
        self._transfer_legs: set[BLeg] = set()
        self._departed: list[tuple[Leg, float]] = []
        self.transfers: list[dict[str, object]] = []
        # Trunks the call left for the next one serving the number, with the answer that made
        # it (the call record's "failovers": which carrier failed, for the operator's records).
        self.failovers: list[dict[str, object]] = []
        # RFC 6442: the location A's INVITE conveys (location.py), whether the call is to an
        # emergency number (the trunks' default policy), and where it went, for the record.
        self.location: Location | None = None
        self._location_emergency = False
        self._location_to: list[str] = []  # trunks it went to
        self._location_dropped: list[str] = []  # where policy kept it from going
        self._location_updates = 0  # re-INVITEs that brought a new location to a trunk
        # Caller identity (STIR/SHAKEN, calls/identity.py): what was signed or verified, and
        # the parameters (verstat) a verified trunk caller's number carries towards phones.
        self.identity: list[IdentityOutcome] = []
        self.caller_parameters: tuple[tuple[str, str], ...] = ()
        # DTMF interworking (docs/architecture.md "DTMF interworking"), made when the media
        # session first decides on one: digits waiting for their INFO (one INFO in flight at a
        # time, so they arrive in order), digits from INFO waiting to be sent as events, and
        # the counts for the call record.
        self._dtmf: DtmfWork | None = None
        # Early media (RFC 3261 §13.2.1, RFC 3960): the B leg and the 1xx whose SDP answer the
        # media session holds now (the latest wins, as for the session), whose early dialog
        # takes the DTMF INFO before the answer, and the SDP our 183 to A carried for it; our
        # early dialog with A, made only when a DTMF INFO goes there; the wake-up of the task
        # that times out DTMF events whose end packets were lost (started with the first event).
        self._early_answer: tuple[BLeg, Response] | None = None
        self._early_sdp_a = b""
        self._a_early: Dialog | None = None
        self._dtmf_wake: trio.Event | None = None
        # The request of the event the task is handling (set by _next_event): if a bug or a
        # network error ends the call meanwhile, the catch-all in run() answers it 500 or 503
        # (:meth:`_answer_handled`).
        self._handling: RequestEvent | PickUpEvent | None = None

    # -- feeding events (from the endpoint's task) -------------------------------------------------

    def post(self, event: CallEventInput) -> bool:
        """Queue ``event`` for the call's task; False when it was dropped (the call has ended,
        or its queue is full), so that a poster that posts once until handled can post again."""
        request = isinstance(event, RequestEvent)
        events = self._events
        if self._events_closed:
            # The call has ended (Call.run's end): what reaches it now crossed its end (a
            # media worker's or a handshake's callback, a pickup or transfer of the call):
            # nobody handles it, and that is no flood, so said at DEBUG. A request gets what
            # the endpoint answers a dialog that no longer exists (RFC 3261 §12.2.2).
            log.debug("call %s: %s after the call ended, dropped", self.id, type(event).__name__)
            if isinstance(event, RequestEvent):
                refusal = make_response(event.request, 481, "Call Has Ended")
                self.manager.start_soon(self._refuse_request, event.transaction, refusal)
            return False
        if len(events) >= EVENT_ROOM or (request and self._queued_requests >= EVENT_QUEUE):
            # A call this flooded is misbehaving anyway. A request is answered all the same:
            # UDP peers retransmit a request, but not once its transaction has seen 100 Trying.
            log.warning("call %s: event queue full, dropping %s", self.id, type(event).__name__)
            if isinstance(event, RequestEvent):
                refusal = make_response(event.request, 503, "Service Unavailable (call busy)")
                self.manager.start_soon(self._refuse_request, event.transaction, refusal)
            return False
        events.append(event)
        if request:
            self._queued_requests += 1
            if isinstance(event, RequestEvent) and event.request.method in OFFER_METHODS:
                # In progress from its arrival, before the task reads it: a re-INVITE of ours
                # sent meanwhile would cross it (RFC 3261 §14.1).
                leg = self.a if event.side is _S_A else self.b
                if leg is not None:
                    leg.exchange_started(event.transaction)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if self._wait_timer is not None:
                self.manager.timers.drop(self)  # the event ends the wait before its time
            trio.lowlevel.reschedule(waiter)
        return True

    async def _refuse_request(self, transaction: ServerTransaction, refusal: Response) -> None:
        """:meth:`post`'s answer to a request it cannot queue, a task of the manager's nursery,
        which is the gateway's top one. The transaction is the one the endpoint just made for
        the request, and nothing else answers it, so this should never fail; but one that no
        longer took a response (answered or ended before this task ran) would raise
        TransactionStateError there and stop the gateway. Nothing is owed then (RFC 3261
        §17.2): said at DEBUG."""
        try:
            await self.endpoint.respond(transaction, refusal)
        except TransactionStateError:
            log.debug("call %s: %s answered already", self.id, refusal.cseq.method)

    def ack_received(self, side: Side, ack: Request) -> None:
        """The ACK for our 2xx on ``side``'s leg: stop re-sending that 2xx (RFC 3261 §13.3.1.4).

        Called from the endpoint's task, not posted as an event: all it does is forget a timer,
        and waking this call's task for it cost as much as the rest of handling the ACK. An ACK
        whose CSeq is not the 2xx's (a late copy of an earlier INVITE's) changes nothing.
        """
        pending = self._retransmit_at.get(side)
        if pending is None or pending[2].cseq.number != ack.cseq.number:
            return
        del self._retransmit_at[side]
        if side is self._answer_in_ack:
            self._answer_in_ack = None
            self.post(AckEvent(ack))  # it carries the answer to our offer: the task's work
            return
        entry = self._wait_timer
        if entry is not None and entry[2] is not None:
            # Parked in a timed wait that has not fired: it lasts until the next
            # retransmission left, if any, or the deadline the task asked for.
            wake = min(self._wait_deadline, self._next_retransmission())
            if wake != entry[0]:
                timers = self.manager.timers
                timers.drop(self)
                if wake != math.inf:
                    timers.add(self, wake)

    def end_by_gateway(self, reason: str) -> None:
        """End the call, the gateway's doing (its drain ran out): the call task ends it."""
        log.info("call %s: ended by the gateway: %s", self.id, reason)
        event = EndCallEvent(reason)
        self.post(event)
        if self.state == "new":
            # Still being set up: its task reads events only once its INVITEs went out, which
            # may be after the gateway stopped waiting. It answers A 503 before ringing anyone,
            # at once if it waits for a certificate server.
            self._end_in_setup = event
            if self._setup_wait is not None:
                self._setup_wait.cancel()

    def cancel_received(self, event: CancelEvent) -> None:
        """A CANCEL of the caller's INVITE or of a re-INVITE the call relays (the endpoint
        answered it 200 already, RFC 3261 §9.2): the call task handles it. While the call is
        still being set up its task reads no events, and may be waiting for a remote server
        (a STIR/SHAKEN certificate, up to fetch_timeout): that wait is cut short, and the
        caller gets 487 before anyone is rung."""
        self.post(event)
        if self.state == "new" and (
            event.transaction is None or event.transaction is self.a.transaction
        ):
            self._cancel_in_setup = event
            if self._setup_wait is not None:
                self._setup_wait.cancel()

    # -- the task's next event ---------------------------------------------------------------------

    async def _next_event(self, deadline: float = math.inf) -> CallEventInput | None:
        self._handling = None  # the previous event's handling is over
        wake = min(deadline, self._next_retransmission())
        events = self._events
        if events:
            # A checkpoint, as a memory channel's receive was: the call yields between events
            # and its cancellation is seen. A deadline already past comes first, as it did.
            overdue = wake != math.inf and trio.current_time() >= wake
            await trio.lowlevel.checkpoint()
            if overdue:
                await self._retransmit_2xx()
                return None
        elif wake == math.inf:
            # Nothing timed: no cancel scope to set up. post() appends, then wakes us.
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_wait)
        else:
            # Timed: an entry in the call timers' heap (timers.py), not a cancel scope of our
            # own (~58,000 instructions each, three waits a call). Their task wakes us at
            # `wake` and leaves the entry fired; post() drops it as it wakes us with an event.
            self._wait_deadline = deadline
            self.manager.timers.add(self, wake)
            self._waiter = trio.lowlevel.current_task()
            await trio.lowlevel.wait_task_rescheduled(self._abort_wait)
            if self._wait_timer is not None:
                self._wait_timer = None
                await self._retransmit_2xx()
                return None
        event = events.popleft()
        if isinstance(event, RequestEvent):
            self._queued_requests -= 1
        self._handling = event if isinstance(event, (RequestEvent, PickUpEvent)) else None
        return event

    def _abort_wait(self, _: object) -> trio.lowlevel.Abort:
        # Cancelled while parked in _next_event (the call's end, or a scope around its work).
        self._waiter = None
        if self._wait_timer is not None:
            self.manager.timers.drop(self)
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake_timed_out(self) -> None:
        # The call timers' task: the timed wait's time has come (its entry stays, fired).
        waiter = self._waiter
        assert waiter is not None
        self._waiter = None
        trio.lowlevel.reschedule(waiter)

    # -- legs and dialogs --------------------------------------------------------------------------

    def _leg(self, side: Side) -> Leg:
        if side is _S_A:
            return self.a
        assert self.b is not None
        return self.b

    def _leg_trunk(self, leg: BLeg) -> TrunkConfig | None:
        trunk_name = leg.target.trunk if leg.target is not None else None
        return self.config.trunk(trunk_name) if trunk_name is not None else None

    def _of_our_invite(self, leg: BLeg, response: Response) -> bool:
        """False for a response to B's INVITE whose Call-ID or From tag is not the INVITE's: it
        matched our client transaction by its Via branch only (RFC 3261 §17.1.3) and belongs
        to no dialog of ours (§12.1.2), early or confirmed. Dropped, as a stray response."""
        invite = leg.invite
        if invite is None or (
            response.call_id == invite.call_id and response.from_.tag == invite.from_.tag
        ):
            return True
        log.info("call %s: a %d of another dialog dropped", self.id, response.status)
        return False

    def _confirmed_dialog(self, leg: BLeg, response: Response) -> Dialog:
        """The dialog a callee's 2xx confirms (RFC 3261 §13.2.2.4): the early one we PRACKed
        in, whose CSeq has moved on with the PRACKs, or a new one."""
        early = leg.early_dialogs.get(response.to.tag or "")
        if early is not None and early.state is _D_EARLY:
            early.receive_response(response)
            return early
        assert leg.invite is not None
        return Dialog.create_uac(leg.invite, response, over_tls=leg.transport in TLS_TRANSPORTS)

    # -- answering the caller's INVITE -------------------------------------------------------------

    def _a_response(
        self,
        status: int,
        reason: str | None = None,
        *,
        body: bytes = b"",
        extra: Sequence[tuple[str, str]] = (),
    ) -> Response:
        invite = self.a.invite
        assert invite is not None
        fields = list(extra)
        if status >= 300:
            given = [value for name, value in fields if name == "Reason"]
            fields += [("Reason", v) for v in self._with_q850(self.a, given, status)[len(given) :]]
        if 100 < status < 300:
            fields.append(("Contact", str(self.a.contact)))
            # RFC 3261 §12.1.1: a UAS copies Record-Route into dialog-creating responses.
            fields.extend(("Record-Route", rr) for rr in invite.headers.get_all("Record-Route"))
            fields.append(("Allow", ALLOW))
        return make_response(
            invite,
            status,
            reason,
            to_tag=self.a.local_tag,
            extra=fields,
            body=body,
            content_type=SDP if body else None,
        )

    async def _respond_a(self, response: Response) -> None:
        assert self.a.transaction is not None
        await self.endpoint.respond(self.a.transaction, response)
        if response.body:
            # Our SDP answer (a 183's, a 200's) went to A: A's handshakes may start now, never
            # ahead of it (CallAnswer._answer_via holds them; docs/architecture.md).
            self._answer_went(_S_A)

    def _hold_answer(self, side: Side) -> None:
        """Our SDP answer to ``side`` is made, not sent yet: the handshakes of the associations
        it starts wait for it (:meth:`CallHandshakes.hold`; docs/architecture.md, "DTLS: our
        answer before our ClientHello"). Call before the next checkpoint after making it."""
        if self.handshakes is not None:
            self.handshakes.hold(side.value)
        else:
            self._answers_unsent.add(side.value)

    def _answer_went(self, side: Side) -> None:
        """Our SDP answer to ``side`` was sent (a response's body, an ACK's)."""
        self._answers_unsent.discard(side.value)
        if self.handshakes is not None:
            self.handshakes.release(side.value)

    async def _reject_a(
        self,
        status: int,
        reason: str,
        warning: str | None,
        *,
        accept_bodies: bool = False,
        extra: Sequence[tuple[str, str]] = (),
    ) -> NoReturn:
        extra = [*extra, *([("Warning", warning_header(warning))] if warning else [])]
        if accept_bodies:
            extra.append(ACCEPT_BODIES)  # what a 415 must list (RFC 3261 §21.4.13)
        self._stop_reliable_1xx()
        await self._respond_a(self._a_response(status, reason, extra=extra))
        detail = f" ({warning})" if warning and warning != reason else ""
        raise CallEnded(f"{status} {reason}{detail}")

    def _stop_reliable_1xx(self) -> None:
        """A final response goes to A: no 1xx is re-sent or sent after it (RFC 3262 §3 allows
        any final response before the PRACK but a 2xx after a 1xx with SDP, _awaiting_prack);
        a late PRACK still gets its 200 (_prack)."""
        self._unacked_1xx = None
        self._held_1xx = None

    # -- requests we send --------------------------------------------------------------------------

    def _forward(self, client: ClientRequest, tag: object) -> None:
        """Pass every response of ``client`` into this call's event queue until the call
        ends (straight from the endpoint's task: no channel and task per request)."""

        def forward(response: Response) -> None:
            # A 100 only stops the request's retransmissions (RFC 3261 §17.1.1.2, §17.1.2.2),
            # which the transaction has done, and shows a trunk is there (response_timeout);
            # no other state of the call waits for one, so the call task is not woken for it.
            if isinstance(tag, BLeg):
                tag.response_deadline = math.inf
                if response.status == 100:
                    # RFC 3261 §9.1: any provisional response, 100 included, allows the
                    # CANCEL; a callee that never sends more must still be cancelled. The call
                    # task is woken for it only when a CANCEL is waiting for it.
                    tag.trying_seen = True
                    if not (tag.cancel_wanted and not tag.cancelled and tag.final is None):
                        return
            elif response.status == 100:
                return
            self.post(ResponseEvent(tag, response))

        client.forward_to(forward)
        self._forwarded.append(client)

    async def _leg_flow(self, leg: Leg) -> Flow:
        """The flow to ``leg``'s party (OSError when there is none to be had): the one the leg
        was set up on while it is open; once that connection is closed, a new one to where
        the party takes connections (:meth:`_reconnect_to`)."""
        flow = leg.flow
        if flow is not None and flow.closed and flow.reliable:
            return await self.endpoint.flow_to(*self._reconnect_to(leg))
        return await self.endpoint.flow_to(leg.transport, leg.address, flow)

    def _reconnect_to(self, leg: Leg) -> tuple[str, Address]:
        """Where a new connection to ``leg``'s party goes once its connection is closed (our
        ``idle_timeout``, or the party's: kamailio closes idle connections after two minutes
        by default, long before many calls end): :func:`reconnect_destination`. A B leg to a
        trunk goes back to the trunk target that took its INVITE, its address."""
        if leg.peer_kind == "trunk" and leg.side is not _S_A:
            return leg.transport, leg.address
        directory = self.manager.gateway.directory
        trunk = (
            directory.trunk_hop(leg.peer_name)
            if leg.peer_kind == "trunk" and leg.peer_name is not None and directory is not None
            else None
        )
        next_hop = leg.dialog.next_hop_uri() if leg.dialog is not None else None
        return reconnect_destination(leg.transport, leg.address, trunk=trunk, next_hop=next_hop)

    async def _send_in_dialog(
        self,
        leg: Leg,
        method: str,
        *,
        body: bytes = b"",
        tag: object,
        extra: Sequence[tuple[str, str]] = (),
        content_type: str | None = SDP,
        forward: bool = True,
        dialog: Dialog | None = None,
    ) -> ClientRequest | None:
        """Send a new request in ``leg``'s dialog (or in ``dialog``: an early one of the leg);
        its responses come into this call's events with ``tag`` (unless ``forward`` is false:
        the caller reads them itself)."""
        dialog = dialog or leg.dialog
        assert dialog is not None
        try:
            flow = await self._leg_flow(leg)
            via = self.endpoint.new_via(flow)  # OSError: no listener of its transport left
        except OSError as exc:
            # Not sent: the caller answers the request in hand 503 (RFC 3261 §21.5.4) and the
            # call goes on, or gives up what it was sending.
            log.info(
                "call %s: cannot reach %s leg: %s",
                self.id,
                leg.side.value,
                transport_error_text(exc),
            )
            return None
        if dialog.secure and not flow.secure:
            # RFC 5630 §3.1.3: a secure dialog's requests go over TLS only. A leg keeps the
            # transport it was set up on, so this is a guard against a bug, never a fallback.
            log.error("call %s: not sending %s of a SIPS dialog without TLS", self.id, method)
            return None
        leg.flow = flow
        request = dialog.create_request(
            method,
            via=via,
            # Target refresh requests carry our Contact (RFC 3261 §12.2.1.1, RFC 3311 §5.1).
            # NOTIFY too: RFC 6665 makes it a target refresh request of its subscription.
            contact=leg.contact if method in ("INVITE", "UPDATE", "NOTIFY") else None,
            extra=extra,
            body=body,
            content_type=content_type if body else None,
        )
        if isinstance(tag, InDialogRequest):
            tag.sent = request
        client = await self._send_on(leg, request, flow)
        if isinstance(tag, InDialogRequest):
            tag.client = client
        if client is not None and method in OFFER_METHODS:
            leg.exchange_started(client.transaction)
        if client is not None and forward:
            self._forward(client, tag)
        return client

    async def _send_on(
        self, leg: Leg, request: Request, flow: Flow | None = None
    ) -> ClientRequest | None:
        """``request`` through a new client transaction over ``flow`` (by default ``leg``'s);
        None (logged) when it cannot be sent."""
        try:
            if flow is None:
                flow = await self._leg_flow(leg)
            client = await self.endpoint.send_request(
                request, transport=flow.transport, address=flow.remote, flow=flow
            )
        except OSError as exc:
            log.info(
                "call %s: cannot send %s: %s", self.id, request.method, transport_error_text(exc)
            )
            return None
        leg.flow = client.flow
        return client

    # -- a trunk's challenges to requests inside a dialog (RFC 3261 §22.2) -------------------------

    def _with_q850(self, leg: Leg, reasons: Sequence[str], status: int) -> list[str]:
        """``reasons`` (Reason values) for what we send ``leg``, with a Q.850 cause added when
        its trunk has a PSTN interworking (``[[trunks]] interworking``) and none is there: the
        cause the interworking maps ``status`` to (a failure response, RFC 6432; a BYE we send
        for a reason of ours), 16 "normal call clearing" for a hang-up (``status`` 200)."""
        name = leg.peer_name if leg.peer_kind == "trunk" else None
        trunk = self.config.trunk(name) if name is not None else None
        if trunk is None or not trunk.interworking:
            return list(reasons)
        if any(value.lstrip().upper().startswith("Q.850") for value in reasons):
            return list(reasons)  # the other side's own cause goes on as it came
        interworking = self.manager.gateway.plugins.interworking.get(trunk.interworking)
        if interworking is None:
            return list(reasons)
        cause = Q850_NORMAL_CLEARING if status == 200 else interworking.q850_for_sip_status(status)
        return list(reasons) if cause is None else [*reasons, f"Q.850;cause={cause}"]

    def _trunk_credentials(self, leg: Leg) -> TrunkConfig | None:
        """The trunk at the other end of ``leg`` if it has credentials for us to answer its
        challenges with: the trunk we called (B leg) or the trunk that called us (A leg)."""
        name = leg.peer_name if leg.peer_kind == "trunk" else None
        trunk = self.config.trunk(name) if name is not None else None
        if trunk is None or trunk.username is None or trunk.password is None:
            return None
        return trunk

    def _with_credentials(
        self, sent: Request, cseq: int, challenge: Response, trunk: TrunkConfig
    ) -> Request | None:
        """``sent`` again as a new transaction (RFC 3261 §22.2): CSeq ``cseq``, no Via (the
        endpoint adds one with a new branch), credentials answering ``challenge``. None when the
        challenge holds nothing we can answer (logged)."""
        assert trunk.username is not None and trunk.password is not None
        retry = sent.with_headers(sent.headers.remove("Via").set("CSeq", f"{cseq} {sent.method}"))
        answered = authorize(
            retry,
            challenge,
            username=trunk.username,
            password=trunk.password,
            cnonce=self.manager.gateway.ids.token_hex(8),
        )
        if answered is None:
            log.info(
                "call %s: trunk %s sent %d to our %s with no challenge we can answer",
                self.id,
                trunk.name,
                challenge.status,
                sent.method,
            )
        return answered

    async def _answer_in_dialog_challenge(self, tag: InDialogRequest, challenge: Response) -> bool:
        """A 401/407 to our re-INVITE or relayed request: send it again with the trunk's
        credentials, once; its responses come back with the same ``tag``. False when we do not
        (no credentials, already answered once, a challenge we cannot answer)."""
        leg = self._leg(tag.side)
        trunk = self._trunk_credentials(leg)
        if trunk is None or tag.challenged or tag.sent is None or leg.dialog is None:
            return False
        retry = self._with_credentials(tag.sent, leg.dialog.take_cseq(), challenge, trunk)
        if retry is None:
            return False
        tag.challenged = True
        client = await self._send_on(leg, retry)
        if client is None:
            return False
        log.info(
            "call %s: answered trunk %s's %d challenge to %s",
            self.id,
            trunk.name,
            challenge.status,
            retry.method,
        )
        tag.sent, tag.client = client.request, client
        self._forward(client, tag)
        return True

    async def _see_bye_through(
        self, leg: Leg, client: ClientRequest, sent: Request, trunk: TrunkConfig
    ) -> None:
        """Our BYE to a trunk that holds our credentials: wait for its final response (at most
        Timer F, 64*T1) and answer one 401/407 with the credentials, so that the trunk ends the
        call too. Runs in the call manager's nursery: the call has ended by now."""
        final = await _final_response(client)
        if final is None or final.status not in (401, 407):
            return
        assert leg.dialog is not None
        retry = self._with_credentials(sent, leg.dialog.take_cseq(), final, trunk)
        if retry is None:
            return
        again = await self._send_on(leg, retry)
        if again is None:
            return
        final = await _final_response(again)
        if final is not None and final.is_success:
            log.info("call %s: answered trunk %s's challenge to our BYE", self.id, trunk.name)
        else:
            log.warning(
                "call %s: trunk %s refused our BYE with credentials (%s); it may still count "
                "the call as up",
                self.id,
                trunk.name,
                f"{final.status} {final.reason}" if final is not None else "no answer",
            )

    # -- ACK, CANCEL, BYE: the end of a call -------------------------------------------------------

    def _refusing_answer(self, leg: Leg, offer: Response) -> bytes:
        """An answer that rejects every stream of the offer in ``offer`` (a 2xx to our INVITE
        without SDP), for the ACK of a 2xx we will BYE at once (RFC 3261 §13.2.2.4: the ACK
        must carry a valid answer; RFC 3264 §6: port 0 rejects a stream). Empty when the offer
        is unreadable: there is no valid answer to it."""
        try:
            offered = parse_sdp_untrusted(sdp_body(offer))
        except SdpError:
            return b""
        host, _ = self.endpoint.local_address(leg.transport)
        return serialize_sdp(refusing_answer(offered, username=ORIGIN_USERNAME, address=host))

    async def _ack_b(
        self, leg: BLeg, dialog: Dialog, response: Response, *, body: bytes | None = None
    ) -> None:
        """ACK B's 2xx. In a late-offer call the 2xx carried an offer and the ACK must carry an
        answer: ``body``, or by default one rejecting every stream (a 2xx we BYE at once)."""
        try:
            flow = await self._leg_flow(leg)
            via = self.endpoint.new_via(flow)  # OSError: no listener of its transport left
        except OSError as exc:
            # As an ACK lost on the way: the callee re-sends its 2xx, then gives up and ends
            # its dialog itself (RFC 3261 §13.3.1.4). Nothing we received is in hand, and the
            # call's own next request on that leg (our BYE, a relayed re-INVITE) says whether
            # the leg is still reachable; the rest of the call is not ended for a lost ACK.
            log.info("call %s: cannot send ACK: %s", self.id, transport_error_text(exc))
            return
        if body is None:
            body = self._refusing_answer(leg, response) if leg.late_offer else b""
        ack = dialog.create_ack(
            response.cseq.number,
            via=via,
            body=body,
            content_type=SDP if body else None,
        )
        leg.ack = ack
        await self.endpoint.send_ack(ack, flow)

    async def _resend_ack(self, leg: BLeg) -> None:
        # Only a copy of the 2xx of this leg's dialog comes here: a 2xx of another dialog to
        # the same INVITE (a forking proxy downstream, RFC 3261 §16.7) is ACKed in its own
        # dialog and BYEd by the endpoint, never passed up (ClientRequest._another_dialog).
        assert leg.ack is not None
        try:
            flow = await self._leg_flow(leg)
        except OSError as exc:
            log.info("call %s: cannot resend ACK: %s", self.id, transport_error_text(exc))
            return
        await self.endpoint.send_ack(leg.ack, flow)

    async def _ack_late_reinvite(self, body: bytes | None = None) -> None:
        """ACK the 2xx of a late re-INVITE with ``body``, by default an answer rejecting its
        offer (a 2xx we are about to BYE, §13.2.2.4)."""
        assert self._late_reinvite is not None
        answered_side, response = self._late_reinvite
        self._late_reinvite = None
        leg = self._leg(answered_side)
        assert leg.dialog is not None
        refusing = body is None
        if body is None:
            body = self._refusing_answer(leg, response)
        try:
            flow = await self._leg_flow(leg)
            via = self.endpoint.new_via(flow)  # OSError: no listener of its transport left
        except OSError as exc:
            # Nothing we received is in hand (the requester's ACK gets no answer). An ACK
            # refusing the offer goes before a BYE (_bye): lost, as the BYE will be, it changes
            # nothing. An ACK carrying the answer, though: the requester has its answer in
            # effect, the offering leg never gets one and ends its dialog after 64*T1 (RFC 3261
            # §13.3.1.4); the legs disagree, so the call ends now, saying why.
            log.info("call %s: cannot send ACK: %s", self.id, transport_error_text(exc))
            if refusing:
                return
            await self._hang_up(f"signalling failed: {transport_error_text(exc)}")
        ack = leg.dialog.create_ack(
            response.cseq.number,
            via=via,
            body=body,
            content_type=SDP if body else None,
        )
        self._reinvite_acks[answered_side] = ack
        await self.endpoint.send_ack(ack, flow)

    async def _cancel_b(self, leg: BLeg, reasons: Sequence[str] = ()) -> None:
        """CANCEL an unanswered B leg (RFC 3261 §9.1): only after a provisional response. The
        CANCEL says why in ``reasons`` (Reason header values, RFC 3326), those of the first
        call to want it."""
        if not leg.cancel_wanted:
            leg.cancel_reasons = tuple(reasons[:MAX_REASONS])
        leg.cancel_wanted = True
        if leg.cancelled or leg.final is not None or leg.invite is None:
            return
        if not (leg.provisional_seen or leg.trying_seen):
            return  # sent when the first 1xx arrives (_b_response)
        cancel = cancel_for(leg.invite, leg.cancel_reasons)
        leg.cancelled = True
        try:
            client = await self.endpoint.send_request(
                cancel, transport=leg.transport, address=leg.address, flow=leg.flow
            )
        except OSError as exc:
            log.info("call %s: cannot send CANCEL: %s", self.id, transport_error_text(exc))
            return
        self._forward(client, "cancel")

    async def _bye(
        self, leg: Leg, reason: str, *, cause: int = 200, reasons: Sequence[str] = ()
    ) -> None:
        """BYE on ``leg`` saying why (RFC 3326): the other side's own Reason values when it hung
        up with some (``reasons``: a Q.850 cause from the PSTN, say), else ours."""
        if leg.dialog is None or leg.dialog.state.value == "terminated":
            return
        # A late offer's 2xx not ACKed yet: ACK it first, rejecting its offer (§13.2.2.4).
        if isinstance(leg, BLeg) and leg.ack is None and leg.final is not None:
            await self._ack_b(leg, leg.dialog, leg.final)
        if self._late_reinvite is not None and self._late_reinvite[0] is leg.side:
            await self._ack_late_reinvite()
        trunk = self._trunk_credentials(leg)
        tag = InDialogRequest("bye", leg.side)
        values = list(reasons[:MAX_REASONS]) or [f'SIP;cause={cause};text="{quoted(reason)}"']
        client = await self._send_in_dialog(
            leg,
            "BYE",
            tag=tag,
            extra=[("Reason", value) for value in self._with_q850(leg, values, cause)],
            forward=trunk is None,  # nothing of the call waits for a BYE's response
        )
        leg.dialog.terminate()
        if client is not None and trunk is not None and tag.sent is not None:
            self.manager.start_soon(self._see_bye_through, leg, client, tag.sent, trunk)

    async def _hang_up(self, reason: str, *, cause: int = 200) -> None:
        self.end_reason = reason
        await self._bye(self.a, reason, cause=cause)
        if self.b is not None:
            await self._bye(self.b, reason, cause=cause)
        raise CallEnded(reason)

    def _strict_failures(self) -> bool:
        """Whether this call reads failed in-dialog requests by RFC 5057 §5.1's whole table
        (``[sip] in_dialog_failures = "strict"``). Never an emergency call (to one of
        ``[numbering] emergency_numbers``, or a PSAP's callback), which a drain or a revoked
        certificate does not cut either (gateway.py ``_is_emergency``): an emergency network's
        404 or 502 to the caller's location update (an ESRP whose location server failed)
        must not end it; a 481 or 408, the dialog gone (RFC 3261 §12.2.1.2), still does. Asked
        only when a request failed."""
        if self.config.sip.in_dialog_failures != "strict":
            return False
        invite = self.a.invite
        emergency = invite is not None and (
            self.psap_callback or self.manager.calls_emergency_number(invite)
        )
        return not emergency

    def _ends_session(self, method: str, status: int) -> bool:
        """Whether ``status`` to our in-dialog ``method`` ends the call: ``ends_session``, read
        strictly (RFC 5057 §5.1's whole table) when ``[sip] in_dialog_failures`` says so
        (:meth:`_strict_failures`)."""
        return ends_session(method, status, strict=self._strict_failures())

    def _lost_answer(
        self,
        request: Request,
        side: Side,
        response: Response,
        errors: Sequence[tuple[str, str]] = (),
    ) -> Response:
        """Our answer to ``request``, relayed to ``side``'s leg, when that leg's ``response``
        ends the session (:meth:`_ends_session`; :meth:`_session_lost` follows). Not the leg's
        status itself, which would end the requester's own dialog too (RFC 5057 §5.1: a 481,
        a 408, a 404 ...): our BYE ends it, saying why, and would meet a dialog already gone.
        A timeout (408, the leg's or our Timer F's) is 504 (RFC 3261 §21.5.5; RFC 4320 §4.2:
        never 408 to a non-INVITE), anything else 500; a Warning names the leg's answer.
        ``errors``: the Geolocation-Error fields of that answer when ``request`` carried the
        requester's location (RFC 6442 §4.3: they concern the location it sent, and are its
        to act on, however the request ended)."""
        status = 504 if response.status == 408 else 500
        leg = side.value.upper()
        warning = warning_header(f"the {leg} leg answered {response.status} {response.reason}")
        return make_response(request, status, extra=[("Warning", warning), *errors])

    async def _session_lost(
        self, side: Side, method: str, response: Response, *, what: str | None = None
    ) -> None:
        """End the call if ``response`` of ``side``'s leg to our in-dialog ``method`` ended
        that leg's session (:meth:`_ends_session`: 481, 408 or no answer, RFC 3261 §12.2.1.2;
        with ``[sip] in_dialog_failures = "strict"`` RFC 5057 §5.1's other endings too). The
        side still up gets a BYE saying why (RFC 3326); the answering leg gets one too unless
        it holds no dialog any more (481, a broken target or route: the BYE would only fail
        the same way). Any other failure (491, 488, 500, 501 ...) ends nothing: the call goes
        on. ``what`` names the request in the
        stated reason (the log's "ended" line, the call record).

        A transferor's session lost while its transfer is under way (RFC 3515: it may drop
        its dialog after the 202; its BYE may cross our request) ends only its leg, as its
        BYE would (``Call._in_dialog``): the transfer goes on, and ends the call if it fails.
        Returns then, which the callers heed."""
        if not self._ends_session(method, response.status):
            return
        leg = self._leg(side)
        what = what or f"{method} to the {side.value.upper()} leg"
        reason = f"{what} answered {response.status} {response.reason}"
        lost = dialog_lost(method, response.status, strict=self._strict_failures())
        transfer = self._transfer
        if transfer is not None and transfer.transferor is leg:
            if lost and leg.dialog is not None:
                leg.dialog.terminate()
            else:
                await self._bye(leg, reason, cause=response.status)  # a 408: it may be there
            transfer.transferor_left = True
            leg.session_timer = None
            log.info("call %s: %s; the transfer goes on without the transferor", self.id, reason)
            return
        if lost and leg.dialog is not None:
            leg.dialog.terminate()  # no BYE into a dialog the peer no longer has
            reason += ": its dialog is gone"
        await self._hang_up(reason, cause=response.status)

    async def _end_by_gateway(self, event: EndCallEvent) -> None:
        """End the call (its media gone, the gateway stopping): BYE on both legs with
        ``Reason: SIP;cause=503`` (RFC 3326) once answered, else CANCEL the B legs and answer A
        503 with the reason."""
        if self.state in ("answered", "offered"):
            await self._hang_up(event.reason, cause=503)
        for leg in self.b_legs:
            if leg.final is None:
                await self._cancel_b(leg)
        await self._reject_a(503, "Service Unavailable", event.reason)

    async def _abort(self, status: int, reason: str) -> None:
        if self.a.answered:
            await self._bye(self.a, reason)
        elif self.a.transaction is not None:
            try:
                await self._respond_a(self._a_response(status, reason))
            except Exception:  # the transaction may already be final
                log.debug("call %s: could not answer A while aborting", self.id)
        for leg in self.b_legs:
            if leg is self.b:
                await self._bye(leg, reason)
            elif leg.final is None:
                await self._cancel_b(leg)

    async def _cancel_pending_reinvites(self) -> None:
        """CANCEL every re-INVITE of ours still waiting for its final response (RFC 3261 §9.1).
        A peer should answer it 487 once our BYE came (§15.1.2), but one that never does would
        keep its INVITE client transaction, which has no timer in Proceeding, for ever; the
        CANCEL bounds it to 64*T1 (transaction.py). First INVITEs of B legs are
        _drain_b_legs' business."""
        for client in self._forwarded:
            request = reinvite_to_cancel(client)
            if request is None:
                continue
            flow = client.flow
            try:
                await self.endpoint.send_request(
                    cancel_for(request), transport=flow.transport, address=flow.remote, flow=flow
                )
            except OSError as exc:
                log.info(
                    "call %s: cannot CANCEL a re-INVITE: %s", self.id, transport_error_text(exc)
                )

    def _b_legs_pending(self) -> bool:
        """A B leg without a final response to its INVITE: :meth:`_drain_b_legs` waits for it."""
        return any(leg.final is None and leg.invite is not None for leg in self.b_legs)

    async def _drain_b_legs(self) -> None:
        """After the end: keep handling B responses so a 2xx crossing our CANCEL is ACKed and
        BYEd (RFC 3261 §9.1 race) until every B leg has a final response."""
        # The call is over: no B leg may ring on. Most endings CANCELled theirs already; one that
        # fails on the first 2xx's SDP had not (RFC 3261 §9.1: sent once a 1xx came).
        for leg in self.b_legs:
            if leg.final is None and leg.invite is not None:
                await self._cancel_b(leg)
        while self._b_legs_pending():
            event = await self._next_event()
            if isinstance(event, ResponseEvent) and isinstance(event.tag, BLeg):
                leg, response = event.tag, event.response
                if not self._of_our_invite(leg, response):
                    continue
                if response.is_success and leg.final is not None and leg.ack is not None:
                    await self._resend_ack(leg)  # RFC 3261 §13.2.2.4
                elif response.status >= 200 and first_final_or_late_2xx(leg.final, response):
                    leg.final = response
                    if response.is_success and leg is not self.b:
                        dialog = self._confirmed_dialog(leg, response)
                        await self._ack_b(leg, dialog, response)
                        leg.dialog = dialog
                        await self._bye(leg, "call already ended")
                elif 100 <= response.status < 200 and leg.cancel_wanted:
                    leg.provisional_seen = True
                    await self._cancel_b(leg)
            elif isinstance(event, RequestEvent):
                await self.endpoint.respond(event.transaction, make_response(event.request, 481))

    # -- our 2xx and reliable 1xx re-sent (RFC 3261 §13.3.1.4, RFC 3262 §3) ------------------------

    def _start_2xx_retransmission(self, side: Side, response: Response) -> None:
        t1 = self.config.sip.t1
        now = trio.current_time()
        self._retransmit_at[side] = (now + t1, t1, response, now + 64 * t1)

    def _next_retransmission(self) -> float:
        """When a 2xx or a reliable 1xx is due again, or its 64*T1 without an ACK or a PRACK
        are over."""
        times = [min(due, give_up) for due, _, _, give_up in self._retransmit_at.values()]
        if self._unacked_1xx is not None:
            _, due, _, give_up = self._unacked_1xx
            times.append(min(due, give_up))
        return min(times, default=math.inf)

    async def _retransmit_reliable_1xx(self, now: float) -> None:
        """Re-send the unacknowledged reliable 1xx at T1, 2*T1, 4*T1 ... (RFC 3262 §3, over
        UDP); no PRACK within 64*T1: A's INVITE is refused with a 5xx, as §3 asks."""
        if self._unacked_1xx is None:
            return
        response, due, interval, give_up = self._unacked_1xx
        if now >= give_up:
            await self._reject_a(
                500, "Server Internal Error", "no PRACK for our reliable provisional response"
            )
        if due > now:
            return
        flow = self.a.flow
        if flow is not None and not flow.reliable:
            await self.endpoint.send_response(response, flow)
        if self._unacked_1xx is not None and self._unacked_1xx[0] is response:  # no PRACK yet
            self._unacked_1xx = (response, now + 2 * interval, 2 * interval, give_up)

    async def _retransmit_2xx(self) -> None:
        now = trio.current_time()
        await self._retransmit_reliable_1xx(now)
        for side, (due, interval, response, give_up) in list(self._retransmit_at.items()):
            if now >= give_up:
                del self._retransmit_at[side]
                # §13.3.1.4: no ACK within 64*T1: the session is not established; end it. A
                # line of its own at WARNING (the transaction layer's Timer H for a failure
                # response stays at DEBUG, endpoint.py): here a call the phone may think is up
                # ends, mostly because our 2xx or its ACK does not get through (a NAT, a
                # firewall, a Contact or Record-Route that does not lead back to us).
                log.warning(
                    "call %s: no ACK from the %s leg for our 2xx within %g s (64*T1, RFC 3261 "
                    "§13.3.1.4): ending the call",
                    self.id,
                    side.value.upper(),
                    64 * self.config.sip.t1,
                )
                await self._hang_up(f"no ACK from {side.value.upper()} leg")
            if due > now:
                continue
            leg = self._leg(side)
            if leg.flow is not None and not leg.flow.reliable:
                await self.endpoint.send_response(response, leg.flow)
                if side not in self._retransmit_at:
                    continue  # its ACK arrived while the send waited (ack_received)
            interval = min(interval * 2, self.config.sip.t2)
            self._retransmit_at[side] = (now + interval, interval, response, give_up)


def reinvite_to_cancel(client: ClientRequest) -> Request | None:
    """The re-INVITE of ours that ``client`` still waits for a final response to, and that
    :meth:`CallBase._cancel_pending_reinvites` CANCELs at the call's end; None for any other."""
    txn = client.transaction
    if not isinstance(txn, ClientInviteTransaction) or txn.state is not _S_PROCEEDING:
        return None
    if txn.cancelled:  # a re-INVITE that timed out (_reinvite_timed_out)
        return None
    request = txn.request
    if request is None or request.to.tag is None:
        return None
    return request


def first_final_or_late_2xx(final: Response | None, response: Response) -> bool:
    """Whether final ``response`` to a B leg's INVITE is news: its first final response, or a
    2xx after a failure (RFC 3261 §13.2.2.4: ACKed and BYEd all the same): a callee answering
    after our give-up 64*T1 past its CANCEL (§9.1, the 408 made for it), or a fork's 2xx racing
    another fork's non-2xx."""
    return final is None or (response.is_success and not final.is_success)


async def _final_response(client: ClientRequest) -> Response | None:
    """The final response of ``client``'s transaction (a local 408 on timeout, 503 when the
    transport failed), or None if the channel ended without one."""
    async for response in client.responses:
        if response.is_final:
            return response
    return None


def wants_privacy(invite: Request) -> bool:
    """Whether the caller asked not to be identified (RFC 3323: ``Privacy`` other than none, or
    an anonymous From, as phones send for caller ID restriction)."""
    values = {
        token.strip().lower()
        for value in invite.headers.get_all("Privacy")
        for token in value.replace(",", ";").split(";")
    }
    if values - {"", "none"}:
        return True
    uri = invite.from_.uri
    return isinstance(uri, SipUri) and (
        (uri.user or "").lower() == "anonymous" or uri.host.lower() == "anonymous.invalid"
    )


def _shown_caller(invite: Request, caller: Caller) -> str:
    """How a caller is shown to others: an account by its name, a trunk's caller by the
    number in its From."""
    if caller.kind == "account" and caller.name is not None:
        return caller.name
    uri = invite.from_.uri
    return (uri.user if isinstance(uri, SipUri) else None) or "anonymous"


def sdp_body(message: Request | Response) -> bytes:
    """The SDP a message carries (its body, or the SDP part of a SIP-I/SIP-T multipart body),
    b"" for none; raises SdpError (UnsupportedBody: 415) for a body we cannot read."""
    return sdp_of(message.content_type, message.body)
