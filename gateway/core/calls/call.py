"""One B2BUA call: the A leg that called us, the B legs we ring, and the media between them.

Theory of operation. Every call is one trio task (:meth:`Call.run`) fed by one bounded event
channel: requests and ACKs the endpoint matched to the call's dialogs, a CANCEL of its INVITE, and
the responses of the requests it sent (each client request gets a small forwarding task). Handling
every event in that one task keeps the call a plain sequential state machine, with no locks:

1. set-up: who is calling (a trunk by source address, else an account by digest, 407), where the
   call goes (``gateway_route_call`` hook, then the core's routing), the media session (SDP of
   each leg rewritten so all media flows through the relay), then an INVITE to every target in
   parallel (RFC 3261 §16.6-style forking done by a UAC core);
2. ringing: 1xx from B is relayed to A with our own To tag (early media when it carries SDP,
   DTMF interworking included: its INFO go in the early dialog, docs/architecture.md);
   no final answer within ``[sip] ring_timeout`` of the last provisional response (or of the
   INVITEs, if none came; Timer C, RFC 3261 §16.6 step 11, §16.7 step 2) CANCELs
   every B leg and answers A 408, so a callee that rings forever, or whose 2xx we cannot read,
   does not hold the call and its ports until the caller gives up;
   the first 2xx wins: it is ACKed (§13.2.2.4), the other B legs are CANCELled, and A gets its
   200 with the rewritten answer; a 2xx from any other leg is ACKed and BYEd. When every B leg has
   failed, A gets the best final response (§16.7 step 6, targets.best_failure). CANCEL from A
   cancels every B leg and answers 487; a 2xx crossing our CANCEL is ACKed and BYEd (the
   CANCEL/200 race);
3. established: BYE from either side ends the call (BYE to the other side); re-INVITE is relayed
   with its SDP rewritten (hold/resume), one at a time (491 while one is pending, §14.1); other
   in-dialog requests are relayed; the media inactivity timer ends the call with a stated reason
   (``[media] hold_timeout`` instead of ``inactivity_timeout`` while no stream is sendrecv).
   A relayed re-INVITE that the other leg leaves without a final response for 64*T1 (its INVITE
   transaction has no timer once a provisional came) ends the call (§14.1), and so does any
   in-dialog request whose answer says the leg's session is gone (RFC 3261 §12.2.1.2,
   sip/usages.py: 481, 408 or none; with ``[sip] in_dialog_failures = "strict"`` RFC 5057
   §5.1's other endings too): the requester gets 500 or 504 and a BYE saying why, the leg that
   lost its dialog no BYE (docs/architecture.md "In-dialog failures: what ends a call").

A late offer (an INVITE without SDP, §13.2.1, as PBXs and carriers send with "delayed offer")
turns the exchange around: the B legs get INVITEs without SDP, the winning 2xx brings the offer,
our 200 to A carries it (through both legs' security, as any offer), A's ACK brings the answer
and our ACK to B carries it. B's 2xx is ACKed only then; a 2xx that carries an offer and that we
BYE (a losing fork, A's ACK missing for 64*T1 or without a usable answer) is ACKed with an answer
rejecting every stream first (§13.2.2.4). A re-INVITE without SDP is relayed the same way. SDP
in a 1xx to an INVITE without SDP is ignored: only a reliable 1xx (RFC 3262) may offer.

A caller that requires reliable provisional responses (``Require: 100rel``, RFC 3262) gets each
1xx with an RSeq, one unacknowledged at a time, re-sent until its PRACK (200; no PRACK for 64*T1:
500 and the callee CANCELled). Each leg negotiates on its own: callees are told we support
reliable 1xx (not with a late offer, where one could carry an offer), and we PRACK theirs
ourselves in their early dialog; A gets ordinary 1xx unless it required reliable ones. A callee
whose reliable 1xx carried the answer may send its 2xx without SDP (RFC 3262 §5): the 2xx
confirms that answer, and A's 200 carries the SDP our 183 gave A, A having PRACKed it or not.

Session timers (RFC 4028, ``gateway.core.sip.session_timer``) run on each leg on its own: our
200 to A states A's (its interval kept or lowered, the refresher by §9 Table 2), every INVITE we
send asks for ours, and a leg's timer restarts with each 2xx to a re-INVITE or UPDATE on it. A
leg whose device was to refresh and did not ends the call (BYE on both legs, Reason cause 408);
a leg we refresh gets an UPDATE without a body at half its interval, only if its device allows
UPDATE (a re-INVITE's answer could re-key the media). An UPDATE from a device is answered on its
own leg when it is a refresh (200 with its timer); one with an offer is relayed as a re-INVITE.

Why a call or its ringing ends crosses to the other leg (RFC 3326 ``Reason``): the other side's
own Reason in our BYE (a carrier's Q.850 cause), the caller's in our CANCEL, the callee's with
its failure response, and "Call completed elsewhere" in the CANCEL of devices that rang while
another answered (phones then show no missed call).

Transfers (RFC 3515 REFER from an account's device, ``gateway.core.calls.transfer``) are
carried out here rather than passed on: 202 and NOTIFYs to the transferor, the target called
without SDP as a call the transferor places (or, attended, its device in the consultation call
with a Replaces, RFC 3891), its offer taken to the transferee in a re-INVITE, and the target's
leg taking over the transferor's side, media ports and all. The dialogs of a call are told apart
by their Call-ID: a departed transferor's requests (its BYE) are answered apart from its side's
current leg. A REFER from a trunk's leg gets 403.

Call forwarding (redirect.py): a callee's 300, 301, 302 or 305 (a phone's; a trunk's with its
``follow_redirects``) is followed in the ringing state, its Contacts one at a time in q order
(RFC 3261 §8.1.3.4), each one's user part routed as a call the redirecting account places (a
trunk's: as the caller's), never sent to the Contact's host; the new legs join the attempt, as
a fork would, and our INVITEs say who diverted the call (RFC 5806 Diversion, RFC 7044
History-Info). A redirect not followed leaves its 3xx as the leg's answer: 480 to the caller.
A followed one asks the taps deciding at the start again with the forwarded-to party
(``CallManager.reached``): a forward to an interception target is intercepted from then on.
A forward that fails with 408 or 5xx gives a caller of a user 480 saying the forwarded call
failed (not "registered device unreachable": the phone answered).

Bodies: the SDP is the body (application/sdp) or one part of a multipart/mixed body, as PSTN
gateways speaking SIP-I or SIP-T send it beside their ISUP (``gateway.core.sdp.body``); each leg
gets a plain SDP of ours. A body we cannot read is refused 415 with ``Accept: application/sdp,
multipart/mixed, application/pidf+xml``; a lone ``application/pidf+xml`` is a location without
SDP (RFC 8262 §3: named by the request's Content-ID), as a multipart of it alone would be.
A caller's location (RFC 6442: Geolocation, a PIDF-LO part) goes on to a trunk whose policy
allows it, in a multipart body of ours (``gateway.core.calls.location``), and so does a new one
in the caller's re-INVITE or UPDATE: an UPDATE with an offer is relayed as a re-INVITE, one
without becomes an UPDATE of ours to the trunk (before the answer in its early dialog), whose
answer is the caller's, waited for at most the trunk's ``response_timeout`` (else
LOCATION_UPDATE_WAIT): past it the caller gets 200 and the trunk's late answer is absorbed
(a Geolocation-Error in it recorded, not relayed). A caller's UPDATE while our 2xx waits for
its PRACK (RFC 3262 §3: the trunk has answered) goes in the trunk's confirmed dialog.
A Geolocation-Error in the trunk's answer to anything that carried the location (a 2xx's
too) goes on in ours to the caller (§4.3) and into the call record.

A trunk with ``username``/``password`` may challenge any request we send it, not only the
INVITE: a 401/407 to our re-INVITE, relayed request or BYE is answered once, in the same request
with the dialog's next CSeq and the credentials (RFC 3261 §22.2, §8.1.3.5). For the BYE this
matters most: a carrier that never gets an accepted BYE keeps the call up, and bills it, until
its own timers end it. The BYE is seen through after the call has ended, by a task of the call
manager.

Our 2xx to an INVITE is retransmitted by us until the ACK comes (§13.3.1.4: T1 doubling to T2,
give up after 64*T1 and send BYE); the INVITE server transaction only absorbs retransmitted
INVITEs (RFC 6026).

A call is a failure boundary: an exception inside it ends this call (500 or BYE on each leg, a
logged reason) and nothing else.

The call is one class composed of one class per concern, each in its own module (the state
they share and the primitives they all use are ``base.py``'s :class:`CallBase`); this module
is the call's task and its states: set-up, ringing, waiting for A's PRACK or ACK, established,
and the dispatch of each event to the concern that handles it. ``events.py``: what the task
receives; ``targets.py``: who is rung and our INVITEs; ``forwarding.py``: 3xx followed;
``ringing.py``: 1xx, PRACK, ringing's end; ``answer.py``: the 2xx both ways, late offer;
``picked_up.py``: a pickup; ``reinvites.py``: re-INVITE, UPDATE and relayed requests;
``transferring.py``: REFER; ``session_timers.py``: RFC 4028; ``location_updates.py``: RFC 6442;
``dtmf_info.py``: INFO and RFC 4733; ``media_keys.py``: keys, handshakes, taps.
"""

from __future__ import annotations

import logging
import math

import trio

from gateway.core.calls.base import (
    ALLOW,
    OFFER_METHODS,
    first_final_or_late_2xx,
    log,
    reinvite_to_cancel,
)
from gateway.core.calls.dtmf_info import CallDtmfInfo
from gateway.core.calls.events import (
    AckEvent,
    CallEnded,
    CancelEvent,
    DtmfDigitEvent,
    EndCallEvent,
    HandOverEvent,
    InDialogRequest,
    KeyFailureEvent,
    LocatedRequest,
    PickUpEvent,
    RecordingIndicationEvent,
    ReplacedEvent,
    RequestEvent,
    ResponseEvent,
)
from gateway.core.calls.forwarding import CallForwarding
from gateway.core.calls.leg import BLeg, Side
from gateway.core.calls.location import carries_location
from gateway.core.calls.picked_up import CallPickedUp
from gateway.core.calls.protection import describe_leg
from gateway.core.calls.routing import TrunkHopTarget
from gateway.core.calls.rtcp_capture import RtcpToCaptures
from gateway.core.calls.targets import without_other_hops
from gateway.core.calls.transferring import CallTransfers
from gateway.core.logs import log_exception, transport_error_text
from gateway.core.media.dtmf import is_dtmf_info
from gateway.core.media.errors import PortsExhausted
from gateway.core.media.keying import CallKeying
from gateway.core.plugins import PluginHookError
from gateway.core.sdp.body import UnsupportedBody, read_body
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip.dialog import OutOfOrderRequest, require_contact
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.message import Request, Response, default_reason, make_response
from gateway.core.sip.session_timer import IntervalTooSmall, allows_update
from gateway.core.sip.transaction import State, TransactionStateError

# Enum members read at run time, as module names: on CPython 3.11 a member read from its
# class goes through EnumType's __getattr__ hook, ~900 instructions (docs/benchmarks.md,
# sessions 44 and 45).
_S_A = Side.A
_S_B = Side.B
_S_TRYING = State.TRYING
_S_PROCEEDING = State.PROCEEDING

# Requests relayed as they are inside an established call; anything else gets 501.
RELAYED_IN_DIALOG = frozenset({"INFO", "OPTIONS", "MESSAGE", "NOTIFY"})


class Call(CallTransfers, CallPickedUp, CallForwarding, CallDtmfInfo):
    """One B2BUA call (the module's docstring): its task and states, each event handed to the
    concern that handles it. Every concern is a class this one derives from, in the order of
    what calls what (``CallBase`` holds the state of them all)."""

    # -- the task ----------------------------------------------------------------------------------

    async def run(self) -> None:
        # The call's failure boundary (STYLE.md habit 6): a child task's exception cancels the
        # call's states here and ends the call as its own would (CallChildren, manager.py).
        boundary = self._boundary = trio.CancelScope()
        try:
            with boundary:
                try:
                    await self._setup()
                    if self.state == "answered":
                        await self._established()
                except CallEnded as ended:
                    self.end_reason = self.end_reason or str(ended)
                except OSError as exc:
                    # Most likely a leg that could not be reached when we had to send on it (a
                    # TCP or TLS peer that closed its connection, a transport refusing the
                    # send): the network's doing. The call ends, saying so; the other leg gets
                    # BYE. The traceback stays in the log for an OSError of another origin.
                    # The request in hand (the other leg's, whose forwarding failed) gets 503
                    # at once, as a transport failure is reported to a client (RFC 3261
                    # §8.1.3.1), rather than nothing until its sender's Timer B or F.
                    # The OSError's text is the network's reason, which the operator needs
                    # (the transports raising it are plugins, so exception_text would withhold
                    # it) and which the record and the "ended" line carry anyway: shown, as
                    # every line naming a network error does (architecture.md "Logged
                    # exceptions"); the traceback's rendering still withholds it.
                    self.end_reason = f"network error: {transport_error_text(exc)}"
                    log_exception(
                        log, "call %s: %s", self.id, self.end_reason, level=logging.WARNING
                    )
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await self._answer_handled(503, "Service Unavailable (network error)")
                        await self._abort(503, "Service Unavailable (network error)")
                except Exception as exc:
                    # A bug in the core or a plugin: end this call only (STYLE.md habit 6).
                    log_exception(log, "call %s failed", self.id)
                    # A plugin's hook that raised is named (PluginHookError's text is ours).
                    what = str(exc) if isinstance(exc, PluginHookError) else type(exc).__name__
                    self.end_reason = f"internal error: {what}"
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await self._answer_handled()
                        await self._abort(500, "Server Internal Error")
            if boundary.cancelled_caught:
                await self._child_failed()
            # Unanswered B legs still need their CANCEL (sent once they ring) and a 2xx
            # that crosses it needs ACK and BYE: wait for every B leg's final response, at
            # most as long as an INVITE transaction lives (64*T1, Timer B). Most calls end
            # with none of that work left and skip the cancel scope (_end_work_left).
            if self._end_work_left():
                with trio.move_on_after(self.config.sip.t1 * 64):
                    await self._cancel_pending_reinvites()
                    await self._bye_transfer_leftovers()
                    await self._drain_b_legs()
        finally:
            # The call's end stops its children before anything they use (the media) closes.
            self._boundary = None
            children = self._children
            if children is not None:
                await children.stop()
                if children.failure is not None and not children.reported:
                    self._child_failure_logged(children.failure)
                # Logged: its traceback holds the child's frames, which hold the children and
                # the call, a cycle only the collector would free (test_b2bua_call_freed.py).
                children.failure = None
            # Later responses (2xx retransmissions while Timer M runs) find nobody: dropped.
            for client in self._forwarded:
                client.forward_to(None)
            self._forwarded.clear()
            if self.keying is not None:
                self.keying.block_all()
            if self.media is not None:
                # A media worker's counters are pushed about once a second: brought up to date
                # (a round trip, bounded) before the record and the metrics read them. The
                # BYE was answered and sent before this; a stuck worker's are said partial.
                # Shielded from a shutdown's cancellation and bounded inside; in process at
                # once, without a cancel scope.
                await self.media.final_counters()
                why = self.media.counters_partial_why
                if why is not None and self.media.counters_partial_at_stop:
                    # Every call still up at a shutdown has them: no alert, one INFO each.
                    log.info(
                        "call %s: media counters partial (the gateway is stopping: the last "
                        "second of packets may be missing from its record and metrics)",
                        self.id,
                    )
                elif why is not None:
                    # Once per call, before its "ended" line: the record's and the metrics'
                    # counters of this call lack up to about a second of packets, and why.
                    log.warning(
                        "call %s: media counters partial (the last second of packets may be "
                        "missing from its record and metrics): %s",
                        self.id,
                        why,
                    )
            # Recorded before the streams close, so the record keeps their final counters.
            # One security record (it reads every stream's counters) for the call record and
            # the protection line; none for a digest challenge nobody logs or records.
            wanted = self.caller is not None or self._protection_logged()
            security = self.security_record() if wanted else None
            self.manager.event(self, "ended", self.end_reason, security=security)
            self._log_protection(security)
            if self.taps is not None:
                self.taps.close()
            if self.keying is not None:
                self.keying.close()
            if self.media is not None:
                self.media.close()
            self.manager.forget(self)  # from here on the endpoint answers our dialogs 481
            self._events_closed = True
            log.info("call %s ended: %s", self.id, self.end_reason or "normal clearing")
            if (
                self._relaying
                or self._pending_reinvite is not None
                or self._queued_requests
                or self._pickup_waiting is not None
            ):
                with trio.CancelScope(shield=True), trio.move_on_after(self.config.sip.t1):
                    await self._refuse_queued_requests()

    async def _child_failed(self) -> None:
        """A child task raised while the call was in its states (CallChildren cancelled them):
        the call ends as for a failure of its own, the request in hand answered 500 and each
        leg sent BYE or CANCEL (the except clauses of :meth:`run`)."""
        assert self._children is not None and self._children.failure is not None
        self._child_failure_logged(self._children.failure)
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await self._answer_handled()
            await self._abort(500, "Server Internal Error")

    def _child_failure_logged(self, exc: Exception) -> None:
        """Log a child's exception as the call's failure and make it the call's end reason."""
        assert self._children is not None
        self._children.reported = True
        log_exception(log, "call %s failed", self.id, exc=exc)
        what = str(exc) if isinstance(exc, PluginHookError) else type(exc).__name__
        self.end_reason = f"internal error: {what}"

    def _end_work_left(self) -> bool:
        """Whether the call's end has anything to send or wait for: a re-INVITE of ours to
        CANCEL (:meth:`_cancel_pending_reinvites`), a leg a transfer left (:meth:
        `_bye_transfer_leftovers`), a B leg without its final response (:meth:`_drain_b_legs`).
        A plain call has none, and skips the cancel scope around that work (~0.7 % of its
        instructions, docs/benchmarks.md "Session 31")."""
        return (
            any(reinvite_to_cancel(client) is not None for client in self._forwarded)
            or self._transfer_leftovers()
            or self._b_legs_pending()
        )

    def _protection_logged(self) -> bool:
        return self.b is not None and self.a.answered and log.isEnabledFor(logging.INFO)

    def _log_protection(self, record: dict[str, object] | None) -> None:
        """How each leg of an answered call was protected, in the words of ``voipgw calls``,
        once, as it ends (the line before "call ... ended"): keys from a handshake on the
        media path (DTLS-SRTP, ZRTP) and a ZRTP SAS come after the answer, so only the end
        knows them all. An operator reading the log alone sees a call that went out or came in
        unencrypted. Never a key (protection.py)."""
        if record is None or not self._protection_logged():
            return
        legs = [
            f"{name}: {describe_leg(leg)}"
            for name, leg in (("caller leg", record.get("a")), ("callee leg", record.get("b")))
            if isinstance(leg, dict)
        ]
        if legs:
            log.info("call %s protection: %s", self.id, "; ".join(legs))

    async def _answer_handled(
        self, status: int = 500, reason: str = "Server Internal Error"
    ) -> None:
        """The call failed while handling a request (an in-dialog one, or a picker's INVITE):
        it gets ``status`` now (500 for a bug, RFC 3261 §21.5.1; 503 for a network error,
        §8.1.3.1) rather than nothing, which would leave its sender retransmitting until its
        Timer B or F. A transaction already answered finally is left alone: a response after
        the final one is not allowed (§17.2)."""
        event, self._handling = self._handling, None
        if event is None:
            return
        if isinstance(event, PickUpEvent):
            event.done.set()  # answered here: the manager does not answer it 481
        if event.transaction.state not in (_S_TRYING, _S_PROCEEDING):
            return
        try:
            await self.endpoint.respond(
                event.transaction, make_response(event.request, status, reason)
            )
        except TransactionStateError:  # answered in the meantime after all
            log.debug("call %s: %s answered already", self.id, event.request.method)

    async def _refuse_queued_requests(self) -> None:
        """Requests the call took but will not answer now that it has ended get 481, as they
        would a moment later from the endpoint (RFC 3261 §12.2.2): those still queued (a
        re-INVITE or INFO crossing a BYE), the re-INVITE and the requests relayed to the other
        leg whose answers will no longer come through. Left unanswered, a re-INVITE's server
        transaction would keep its requester waiting for ever."""
        unanswered = [tag.relayed for tag in self._relaying if tag.relayed is not None]
        self._relaying.clear()
        if self._pending_reinvite is not None:
            unanswered.append(self._pending_reinvite[1:])
            self._pending_reinvite = None
        if self._pickup_waiting is not None:  # the call ended before A's ACK came
            unanswered.append(
                (self._pickup_waiting[0].transaction, self._pickup_waiting[0].request)
            )
            self._pickup_waiting = None
        events = self._events
        while events:
            event = events.popleft()
            if isinstance(event, (RequestEvent, PickUpEvent)):
                unanswered.append((event.transaction, event.request))
        for transaction, request in unanswered:
            try:
                await self.endpoint.respond(
                    transaction, make_response(request, 481, "Call Has Ended")
                )
            except TransactionStateError:  # answered already after all
                log.debug("call %s: %s answered already", self.id, request.method)

    # -- set-up ------------------------------------------------------------------------------------

    async def _setup(self) -> None:
        invite = self.a.invite
        assert invite is not None and self.a.flow is not None
        caller = self.caller
        self.manager.event(self, "started", None)
        try:
            require_contact(invite)
        except RemoteSipError as err:
            await self._reject_a(400, f"Bad Request ({err.reason})", err.reason)
        offer: SessionDescription | None = None
        try:
            sdp, location_parts = read_body(invite.content_type, invite.body, invite.headers)
            if sdp:
                offer = parse_sdp_untrusted(sdp)
        except UnsupportedBody as err:
            await self._reject_a(415, "Unsupported Media Type", err.reason, accept_bodies=True)
        except SdpError as err:
            await self._reject_a(488, "Not Acceptable Here", err.reason)
        if carries_location(invite, location_parts):
            await self._take_location(invite, location_parts)
        self.late_offer = offer is None
        self.a_reliable_1xx = "100rel" in invite.headers.option_tags("Require")
        self.a.allows_update = allows_update(invite.headers)
        self._note_record_aware(self.a, invite)
        self._note_recordpref(self.a, invite.body)
        try:
            timer = self._timer_of(invite, self.a)
        except RemoteSipError as err:
            await self._reject_a(400, f"Bad Request ({err.reason})", err.reason)
        if isinstance(timer, IntervalTooSmall):
            await self._reject_a(
                422, "Session Interval Too Small", None, extra=[("Min-SE", str(timer.min_se))]
            )
        self._a_timer = timer
        if caller.kind == "trunk" and (
            "Diversion" in invite.headers or "History-Info" in invite.headers
        ):
            self._carry_diversion(invite)
        if (
            self.manager.caller_identity
            and caller.kind == "trunk"
            # A CANCEL (or the gateway's end) that came before this task got here found no
            # wait to cut short: not waited for at all, or the caller waits fetch_timeout.
            and self._cancel_in_setup is None
            and self._end_in_setup is None
        ):
            with trio.CancelScope() as self._setup_wait:
                await self._check_identity(invite)
            self._setup_wait = None
        if self._cancel_in_setup is not None:
            # The caller hung up before anyone was rung (RFC 3261 §9.2: 487 to its INVITE);
            # a certificate fetch it waited for goes on for the other calls that need it.
            await self._cancelled_by_a(self._cancel_in_setup.request)
        if self._end_in_setup is not None:
            # The gateway stops: nobody is rung for a call it would end at once. (From here to
            # the INVITEs nothing waits; an end asked for while they go is read when ringing.)
            await self._end_by_gateway(self._end_in_setup)
        decision = self.manager.route(invite, caller)
        if not decision.targets:
            status = decision.reject_status or 404
            reason = decision.reject_reason or default_reason(status)
            await self._reject_a(status, reason, reason)
        routed, alternates = decision.targets, decision.alternates
        if self.secure:
            routed, alternates = await self._over_tls_only(routed, alternates)
        # A trunk or account past its limits is not called: a carrier refuses calls past its
        # channels and its calls per second; an account with max_calls = 1 is busy on a call.
        counted = [(target, self._count_target(target)) for target in routed]
        targets = [target for target, why in counted if why is None]
        self._alternates = list(alternates)
        if not targets and (alternate := self._next_alternate()) is not None:
            targets = [alternate]  # the first trunk is at its limits: the next one
        if not targets:
            first, why = counted[0]
            if first.trunk is not None:
                warning = f"trunk {first.trunk} is at its {why}"
                await self._reject_a(503, f"Service Unavailable (trunk {why})", warning)
            warning = f"account {first.account} is at its {why}"
            await self._reject_a(486, f"Busy Here (account {why})", warning)
        self.manager.routed(self, targets)  # taps deciding at the start: whom it reaches
        self.a.security = self.manager.leg_security(
            self,
            _S_A,
            kind=caller.kind,
            name=caller.name,
            flow=self.a.flow,
            device=caller.device,
        )
        self.media = self.manager.new_media_session(self._media_lost)
        # G.711 transcoding as the trunks the call comes from or may go to set it, over
        # [media]'s (config.g711_transcoding_for): decided before the first offer.
        trunks = [target.trunk for target in (*targets, *self._alternates) if target.trunk]
        if caller.kind == "trunk" and caller.name is not None:
            trunks.append(caller.name)
        self.media.g711_transcoding = self.manager.gateway.config.g711_transcoding_for(trunks)
        self.media.on_dtmf_digit = self._dtmf_heard
        self.media.on_dtmf_timer = self._dtmf_timer_armed
        if self.media.quality is not None and self.endpoint.rtcp_captures:
            self.media.quality.listeners = (RtcpToCaptures(self, self.endpoint.rtcp_captures),)
        self.keying = CallKeying(self.media)
        if self.taps is not None:
            self.taps.use_session(self.media)  # taps from the start see early media too
        offer_b: SessionDescription | None = None  # a late offer: each B leg makes the offer
        if offer is not None:
            try:
                offer_b = self.media.offer_from(
                    _S_A.value,
                    self.a.security.take_offer(offer),
                    dtmf_info=self.a.security.dtmf_info,
                )
            except SdpError as err:
                await self._reject_a(488, "Not Acceptable Here", err.reason)
            except PortsExhausted:
                await self._reject_a(503, "Service Unavailable", "no free media ports")
            except Exception as exc:
                # Our bug or a key-exchange plugin's: 500 with a Warning, the record saying
                # which (as for a 2xx's SDP, _answer_failed), not the catch-all's bare 500.
                failure = self._answer_failed(exc, "caller's offer")
                await self._reject_a(failure.status, failure.phrase, failure.warning)
            self._apply_keys(None)  # no media before keys: block where a policy needs them
        self._offer_b = offer_b
        refusals: list[str] = []
        for target in targets:
            refusal = await self._call_target(target, offer_b)
            if refusal is not None:
                refusals.append(refusal)
        self._release_uncalled(targets)
        self._attempt = list(self.b_legs)
        self._refusals = refusals
        self._drive_handshakes()  # a B leg answering DTLS may shake hands before its answer
        if all([leg.finished for leg in self.b_legs]):  # a list: no generator to close
            # Nothing rings: the targets could not be sent to (a 503 of ours), their media
            # policies refused the offer or making it failed; the alternates may still take
            # the call.
            await self._fail_over_or_fail_a()
        self.state = "ringing"
        self._ring_deadline = trio.current_time() + self.config.sip.ring_timeout
        await self._ringing()
        if self.state == "offered":
            await self._awaiting_answer()

    # -- ringing -----------------------------------------------------------------------------------

    async def _ringing(self) -> None:
        while self.state == "ringing":
            overdue = min((leg.response_deadline for leg in self._attempt), default=math.inf)
            event = await self._next_event(min(self._ring_deadline, overdue))
            if trio.current_time() >= self._ring_deadline:
                await self._no_answer()
            if trio.current_time() >= overdue:
                await self._no_response()
                if self.state != "ringing":
                    return
            if isinstance(event, ResponseEvent) and isinstance(event.tag, BLeg):
                await self._b_response(event.tag, event.response)
            elif isinstance(event, CancelEvent):
                if event.transaction is None or event.transaction is self.a.transaction:
                    await self._cancelled_by_a(event.request)
            elif isinstance(event, RequestEvent):
                await self._early_request(event)
            elif isinstance(event, KeyFailureEvent):
                await self._key_exchange_failed(event)
            elif isinstance(event, EndCallEvent):
                await self._end_by_gateway(event)
            elif isinstance(event, ReplacedEvent):
                await self._replaced_by_transfer()
            elif isinstance(event, DtmfDigitEvent):
                await self._dtmf_to_info(event)  # early media (RFC 3960)
            elif isinstance(event, ResponseEvent):
                await self._early_response(event)
            elif isinstance(event, PickUpEvent):
                await self._picked_up(event)

    async def _b_response(self, leg: BLeg, response: Response) -> None:
        if not self._of_our_invite(leg, response):
            return
        if leg.final is not None:
            if response.is_success and leg.ack is not None:
                await self._resend_ack(leg)  # RFC 3261 §13.2.2.4
            return
        if response.status < 200:
            if response.status == 100:
                # Posted only for a leg whose CANCEL waits for a provisional response: a 100
                # allows it (RFC 3261 §9.1).
                if leg.cancel_wanted and not leg.cancelled:
                    await self._cancel_b(leg)
                return
            if not await self._prack_b(leg, response):
                return  # a reliable 1xx again, or out of order: already PRACKed, or never
            leg.provisional_seen = True
            leg.last_provisional = response
            if leg.cancel_wanted and not leg.cancelled:
                await self._cancel_b(leg)
                return
            # Timer C restarts with every provisional response (RFC 3261 §16.7 step 2): a
            # queue that keeps sending 183 while it plays its music is not given up.
            self._ring_deadline = trio.current_time() + self.config.sip.ring_timeout
            await self._relay_provisional(leg, response)
            return
        if await self._asked_again(leg, response):
            return
        leg.final = response
        if response.is_success:
            await self._b_answered(leg, response)
            return
        if 300 <= response.status < 400 and self.state == "ringing":
            await self._redirected(leg, response)
        if all(b.finished for b in self.b_legs) and self.state == "ringing":
            await self._fail_over_or_fail_a()

    async def _fail_over_or_fail_a(self) -> None:
        """Every B leg has failed: when each leg of the last attempt failed with one of
        ``[sip] failover_statuses`` (the trunk's trouble, not the callee's answer), call the
        next alternate (RouteDecision.alternates), one at a time; else, or with none left,
        give A the best failure."""
        failover = self.config.sip.failover_statuses
        while all(
            leg.given_up is not None  # our own timeout: always the trunk's trouble
            or (leg.final is not None and leg.final.status in failover)
            for leg in self._attempt  # none at all: every target refused the offer
        ):
            for leg in self._attempt:  # the call no longer occupies the failed trunk
                if leg.target is not None and leg.target.trunk is not None:
                    self.manager.limits.release_one(self, ("trunk", leg.target.trunk))
            if self._attempt:
                self._alternates = without_other_hops(self._alternates, self._attempt[-1])
            target = self._next_alternate()
            if target is None:
                break
            if self._attempt:
                failed = self._attempt[-1]
                outcome = failed.final or failed.given_up
                if failed.target is not None and failed.target.trunk is not None:
                    self.manager.failovers[failed.target.trunk] += 1
                    entry: dict[str, object] = {
                        "trunk": failed.target.trunk,
                        "status": outcome.status if outcome is not None else 0,
                        "reason": outcome.reason if outcome is not None else "",
                        "to": target.trunk,
                    }
                    # Trunks named by DNS: which of their targets failed, which is next.
                    if isinstance(failed.target, TrunkHopTarget):
                        entry["target"] = str(failed.target.hop)
                    if isinstance(target, TrunkHopTarget):
                        entry["to_target"] = str(target.hop)
                    self.failovers.append(entry)
                log.info(
                    "call %s: %s answered %d; failing over to trunk %s",
                    self.id,
                    failed.target.trunk if failed.target is not None else "the callee",
                    outcome.status if outcome is not None else 0,
                    target.trunk,
                )
            if target.account is not None:  # a trunk's alternate reaches the number asked about
                self.manager.reached(self, (target,), None)
            before = len(self.b_legs)
            refusal = await self._call_target(target, self._offer_b)
            if refusal is not None:
                self._refusals.append(refusal)
            called = self.b_legs[before:]
            if any(not leg.finished for leg in called):
                self._attempt = called
                self._ring_deadline = trio.current_time() + self.config.sip.ring_timeout
                return
            if called:
                self._attempt = called  # failed at once (unreachable): its 503 decides
            elif target.trunk is not None:
                # Not called at all (its media policy refuses the offer, making the offer
                # failed, a bad URI): the failure before it still stands, and the next
                # alternate is tried.
                self.manager.limits.release_one(self, ("trunk", target.trunk))
        if self._redirects is not None and await self._follow_redirect():
            return  # the next Contact of a 3xx rings (RFC 3261 §8.1.3.4: in q order)
        await self._fail_a()

    async def _no_response(self) -> None:
        """A leg of the attempt in progress has had no response at all (not even 100) for its
        trunk's ``response_timeout``: give it up as a 408 (RFC 3261 §9.1 allows no CANCEL
        before a provisional response; one comes later, it is CANCELled then) and let the
        call fail over."""
        now = trio.current_time()
        for leg in self._attempt:
            if leg.response_deadline <= now and not leg.finished:
                await self._give_up(leg)
        if all(b.finished for b in self.b_legs) and self.state == "ringing":
            await self._fail_over_or_fail_a()

    # -- our 2xx waits for A's PRACK (RFC 3262 §3) -------------------------------------------------

    async def _awaiting_prack(self) -> None:
        """The callee answered while our reliable 1xx with SDP awaits A's PRACK: RFC 3262 §3
        says our 2xx MUST NOT go before it. Wait for it (:meth:`_prack`); however the call ends
        meanwhile (A cancels: 487; the callee hangs up: 480; no PRACK in 64*T1: 500), the
        callee, who answered, gets BYE."""
        assert self.b is not None
        self._held_1xx = None  # no new 1xx once there is a final response
        try:
            while self._unacked_1xx is not None:
                event = await self._next_event()
                if isinstance(event, CancelEvent):
                    if event.transaction is None or event.transaction is self.a.transaction:
                        await self._cancelled_by_a(event.request)
                elif isinstance(event, RequestEvent) and event.request.method == "BYE":
                    # Either side hung up (A, with no 2xx yet, gets a final error, not a BYE).
                    bye = make_response(event.request, 200)
                    await self.endpoint.respond(event.transaction, bye)
                    self._leg(event.side).dialog.terminate()  # type: ignore[union-attr]
                    raise CallEnded(f"BYE from {event.side.value.upper()} leg")
                elif isinstance(event, RequestEvent):
                    await self._early_request(event)  # A's PRACK among them
                elif isinstance(event, ResponseEvent) and isinstance(event.tag, BLeg):
                    await self._b_response(event.tag, event.response)
                elif isinstance(event, ResponseEvent):
                    await self._early_response(event)
                elif isinstance(event, DtmfDigitEvent):
                    await self._dtmf_to_info(event)
                elif isinstance(event, KeyFailureEvent):
                    await self._key_exchange_failed(event)
                elif isinstance(event, EndCallEvent):
                    await self._end_by_gateway(event)
        except CallEnded as ended:
            if not self.a.answered and self.a.transaction is not None:
                with trio.CancelScope(shield=True):
                    await self._answer_a_failure(str(ended))
            await self._bye(self.b, str(ended))
            raise

    # -- late offer: our 2xx waits for A's ACK with the answer (RFC 3261 §13.2.1) ------------------

    async def _awaiting_answer(self) -> None:
        """Our 200 to A carries the offer; wait for A's ACK with the answer. Without it within
        64*T1 (the 2xx retransmissions give up, §13.3.1.4) the call ends with BYE on both legs,
        B's 2xx ACKed first (:meth:`_bye`)."""
        while self.state == "offered":
            event = await self._next_event()
            if isinstance(event, AckEvent):
                await self._a_answered(event.ack)
            elif isinstance(event, ResponseEvent) and isinstance(event.tag, BLeg):
                # B's own 2xx again (ACKed once A answers) or another leg's final response.
                await self._b_response(event.tag, event.response)
            elif isinstance(event, ResponseEvent) and isinstance(event.tag, LocatedRequest):
                await self._early_response(event)  # a location UPDATE's, sent while ringing
            elif isinstance(event, RequestEvent):
                if event.request.method == "BYE":
                    await self._in_dialog(event)
                else:
                    await self._early_request(event)
            elif isinstance(event, KeyFailureEvent):
                await self._key_exchange_failed(event)
            elif isinstance(event, EndCallEvent):
                await self._end_by_gateway(event)
            elif isinstance(event, PickUpEvent):
                await self._refuse_pickup(event)

    async def _a_answered(self, ack: Request) -> None:
        """A's ACK brought its answer to our offer: B gets its answer in our ACK, and the call
        is up. An ACK without a usable answer ends the call: §13.2.2.4 has the offerer ACK with
        a valid answer and then send BYE, which is what B gets (:meth:`_bye`)."""
        if self._pickup_waiting is not None:
            await self._answer_picker(ack)
            return
        leg = self.b
        assert leg is not None and leg.dialog is not None and leg.final is not None
        assert self.media is not None and leg.security is not None
        assert self.a.security is not None
        try:
            answer_b = leg.security.make_answer(self._answer_in_ack_of_a(ack))
            self._up_with(leg)
            # B offered in its 2xx; our answer goes in the ACK: when it makes us active (RFC
            # 5763 §5), our ClientHello follows the ACK, which carries our fingerprint.
            self._hold_answer(_S_B)
            # B, the offerer, may send as soon as our ACK brings it the answer: keys first.
            await self.media.applied()
        except Exception as exc:
            failure = self._answer_failed(exc, "answer in A's ACK")
            self.media.abandon_offer()
            self.state = "answered"
            # B's 2xx is ACKed with an answer refusing its offer, then BYEd (_bye).
            await self._hang_up(failure.reason, cause=failure.status)
        await self._ack_b(leg, leg.dialog, leg.final, body=serialize_sdp(answer_b))
        self._answer_went(_S_B)

    # -- requests and responses before the answer --------------------------------------------------

    async def _early_request(self, event: RequestEvent) -> None:
        # Before the call is answered only the B side can send in-dialog requests (on its early
        # dialog); nothing we relay yet. A's PRACK is ours to answer.
        if event.request.method == "PRACK" and event.side is _S_A:
            await self._prack(event)
            return
        if event.request.method == "UPDATE":
            await self._update(event)
            return
        if event.request.method == "INFO" and self._early_dtmf_info(event):
            await self._info_to_dtmf(event)  # RFC 6086 §4.2: INFO in the early dialog
            return
        response = make_response(event.request, 491 if event.request.method == "INVITE" else 501)
        await self.endpoint.respond(event.transaction, response)

    async def _early_response(self, event: ResponseEvent) -> None:
        """A response before the answer to a request we sent in a dialog: a DTMF INFO's
        (early media) is read, a location UPDATE's answers the caller's; others (BYE, CANCEL)
        need nothing."""
        tag = event.tag
        if not isinstance(tag, InDialogRequest) or event.response.status < 200:
            return
        if tag.purpose == "dtmf":
            await self._dtmf_info_answered(tag, event.response)
        elif tag.purpose == "location" and isinstance(tag, LocatedRequest):
            await self._location_update_answered(tag, event.response)

    # -- established -------------------------------------------------------------------------------

    async def _established(self) -> None:
        media = self.config.media
        check_every = max(0.5, min(5.0, min(media.inactivity_timeout, media.hold_timeout) / 4))
        next_check = trio.current_time() + check_every
        # Silence counts from the last packet, the answer, or the last change into or out of
        # hold: a call resumed after a long silent hold gets the whole inactivity timeout.
        held, silent_since = False, self.answered_at
        if self._indication_posted:  # a recording's state came before the call was up
            await self._recording_indication_changed()
        while True:
            transfer = self._transfer
            if transfer is not None and transfer.deferred and not self._offer_in_progress():
                await self._offer_target_to_transferee()
            wake = min(
                next_check,
                self._reinvite_deadline,
                self._session_timer_due(),
                self._transfer_due(),
                self._fork_rekey_again_at,
                self._fork_rekey_deadline,
                self._indication_again_at,
                self._indication_deadline,
            )
            event = await self._next_event(wake)
            now = trio.current_time()
            if now >= next_check and self.media is not None:
                next_check = now + check_every
                if self.media.on_hold != held:
                    held, silent_since = not held, now
                timeout = media.hold_timeout if held else media.inactivity_timeout
                last = self.media.last_activity
                if now - max(last or 0.0, silent_since) > timeout:
                    await self._hang_up(f"no media for {timeout:g} s{' on hold' if held else ''}")
            if now >= self._reinvite_deadline:
                await self._reinvite_timed_out()
            if now >= self._session_timer_due():
                await self._session_timers_due(now)
            if now >= self._transfer_due():
                await self._transfer_timers(now)
            if now >= self._fork_rekey_again_at:
                await self._send_fork_rekey()
            if now >= self._fork_rekey_deadline:
                await self._fork_rekey_timed_out()
            if now >= self._indication_again_at:
                await self._send_indication()
            if now >= self._indication_deadline:
                await self._indication_timed_out()
            if event is None:
                continue
            if isinstance(event, RequestEvent):
                await self._in_dialog(event)
            elif isinstance(event, ResponseEvent):
                await self._relayed_response(event)
            elif isinstance(event, CancelEvent):
                await self._reinvite_cancelled(event)
            elif isinstance(event, KeyFailureEvent):
                await self._key_exchange_failed(event)
            elif isinstance(event, DtmfDigitEvent):
                await self._dtmf_to_info(event)
            elif isinstance(event, EndCallEvent):
                await self._end_by_gateway(event)
            elif isinstance(event, AckEvent):
                await self._late_reinvite_answered(event.ack)
            elif isinstance(event, ReplacedEvent):
                # Answered before the transfer's word came: the transfer rings the target too.
                await self._hang_up("replaced by a transfer")
            elif isinstance(event, HandOverEvent):
                await self._hand_over(event)
            elif isinstance(event, RecordingIndicationEvent):
                await self._recording_indication_changed()
            elif isinstance(event, PickUpEvent):
                await self._refuse_pickup(event)

    async def _in_dialog(self, event: RequestEvent) -> None:
        leg = self._leg(event.side)
        request = event.request
        assert leg.dialog is not None
        if request.call_id != leg.dialog.call_id:
            await self._other_dialog_request(event)  # a departed transferor, or a new target
            return
        if not leg.dialog.holds_request(request):
            # Our To tag found the call but the From tag is not the leg's peer's: no dialog of
            # ours (RFC 3261 §12.2.2: 481), and no reason to end the call.
            await self.endpoint.respond(event.transaction, make_response(request, 481))
            return
        try:
            leg.dialog.receive_request(request)
        except OutOfOrderRequest as err:
            await self.endpoint.respond(event.transaction, make_response(request, 500, err.reason))
            return
        if request.method == "BYE":
            await self.endpoint.respond(event.transaction, make_response(request, 200))
            leg.dialog.terminate()
            if self._transfer is not None and self._transfer.transferor is leg:
                # Phones doing a "blind" transfer hang up right after the 202: the transfer
                # goes on without them (transfer.py).
                self._transfer.transferor_left = True
                leg.session_timer = None  # nothing to refresh or watch on its ended dialog
                log.info("call %s: the transferor hung up; the transfer goes on", self.id)
                return
            other = self._leg(event.side.other)
            why = f"BYE from {event.side.value.upper()} leg"
            await self._bye(other, why, reasons=request.headers.get_all("Reason"))
            raise CallEnded(why)
        if request.method in OFFER_METHODS:
            # Before it is handled: our answer to it then says the state, if it is to.
            self._record_aware_restated(leg, request)
        if request.method == "INVITE":
            await self._reinvite(event)
            return
        if request.method == "PRACK" and event.side is _S_A and self.a.invite is not None:
            await self._prack(event)  # a late one, after our 2xx (RFC 3262 §3)
            return
        if request.method == "UPDATE":
            await self._update(event)
            return
        if request.method == "REFER":
            await self._refer(event)
            return
        if request.method == "SUBSCRIBE":
            await self._refer_subscribe(event)  # the transferor's refresh of its REFER's
            return
        if (
            request.method == "INFO"
            and self.media is not None
            and self.media.dtmf is not None
            and self.media.dtmf.info_side == event.side.value
            and is_dtmf_info(request.content_type)
        ):
            await self._info_to_dtmf(event)
            return
        if request.method in RELAYED_IN_DIALOG:
            await self._relay_request(event)
            return
        await self.endpoint.respond(
            event.transaction, make_response(request, 501, extra=[("Allow", ALLOW)])
        )

    async def _relayed_response(self, event: ResponseEvent) -> None:
        tag = event.tag
        response = event.response
        if isinstance(tag, BLeg) and tag in self._transfer_legs:
            await self._target_response(tag, response)
            return
        if isinstance(tag, BLeg):
            if response.status < 200 and tag.cancel_wanted and not tag.cancelled:
                # A leg given up (another answered), ringing late: CANCEL it now. A 100 allows
                # it too (RFC 3261 §9.1; _forward posts one only for such a leg): a fork whose
                # 100 comes after the answer and never sends more would ring for ever.
                if response.status != 100:
                    tag.provisional_seen = True
                await self._cancel_b(tag)
                return
            if response.is_success and tag.final is not None and tag.ack is not None:
                # A retransmitted 2xx: our ACK was lost; the UAC core sends it again
                # (RFC 3261 §13.2.2.4).
                await self._resend_ack(tag)
                return
            if response.status >= 200 and first_final_or_late_2xx(tag.final, response):
                tag.final = response
                if response.is_success and tag is not self.b:
                    await self._b_answered(tag, response)  # a late fork answer: ACK + BYE
            return
        if not isinstance(tag, InDialogRequest) or response.status < 200 or tag.purpose == "bye":
            return
        sent, leg = tag.sent, self._leg_or_none(tag.side)
        if (
            response.is_success
            and sent is not None
            and sent.method in OFFER_METHODS
            and leg is not None
            and leg.dialog is not None
            and sent.call_id == leg.dialog.call_id  # (not a transfer's join of another dialog)
        ):
            self._record_aware_restated(leg, response)
        if response.status in (401, 407):
            if await self._answer_in_dialog_challenge(tag, response):
                return
            if tag.purpose != "location":  # (whose caller's UPDATE is not failed for it)
                # A challenge to a request we sent is ours to answer, never the other side's
                # (as for INVITE, best_failure): relayed without its challenge header it is
                # unanswerable.
                response = Response(
                    503, "Service Unavailable (trunk authentication)", response.headers
                )
        if tag.purpose == "relay" and tag.relayed is not None:
            self._relaying.discard(tag)
            transaction, request = tag.relayed
            if self._ends_session(request.method, response.status):
                # RFC 5057 §5.1: the other leg's session is gone (481, 408 or no answer ...):
                # the requester is answered, then the call ends (BYE, _session_lost).
                answer = self._lost_answer(request, tag.side, response)
                await self.endpoint.respond(transaction, answer)
                await self._session_lost(tag.side, request.method, response)
                return  # a transferor's: the call goes on (_session_lost)
            await self.endpoint.respond(
                transaction,
                make_response(
                    request,
                    response.status,
                    response.reason,
                    body=response.body,
                    content_type=response.content_type,
                ),
            )
        elif tag.purpose == "dtmf":
            await self._dtmf_info_answered(tag, response)
        elif tag.purpose == "reinvite":
            located = tag.location_to if isinstance(tag, LocatedRequest) else None
            await self._reinvite_answered(tag.side, response, located=located)
        elif tag.purpose == "location" and isinstance(tag, LocatedRequest):
            await self._location_update_answered(tag, response)
        elif tag.purpose == "refresh":
            await self._refresh_answered(tag, response)
        elif tag.purpose == "fork-rekey":
            await self._fork_rekey_answered(tag, response)
        elif tag.purpose == "record-indication":
            await self._indication_answered(tag, response)
        elif tag.purpose == "transfer":
            await self._transferee_answered(tag, response)
        elif tag.purpose == "join":
            await self._joined_leg_answered(tag, response)
        elif tag.purpose == "join-offer":
            await self._joined_leg_took_offer(tag, response)
        elif tag.purpose == "join-resume":
            await self._transferee_resumed(tag, response)
