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
   failed, A gets the best final response (§16.7 step 6). CANCEL from A cancels every B leg and
   answers 487; a 2xx crossing our CANCEL is ACKed and BYEd (the CANCEL/200 race);
3. established: BYE from either side ends the call (BYE to the other side); re-INVITE is relayed
   with its SDP rewritten (hold/resume), one at a time (491 while one is pending, §14.1); other
   in-dialog requests are relayed; the media inactivity timer ends the call with a stated reason
   (``[media] hold_timeout`` instead of ``inactivity_timeout`` while no stream is sendrecv).
   A relayed re-INVITE that the other leg answers 408 or 481, or leaves without a final response
   for 64*T1 (its INVITE transaction has no timer once a provisional came), ends the call: §14.1
   says a UAC terminates the dialog then, and the requester, answered 408, would do the same.

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
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import attrs
import trio

from gateway.core.calls import identity
from gateway.core.calls.base import ALLOW, _first_final_or_late_2xx, _sdp, log
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
    ReplacedEvent,
    RequestEvent,
    ResponseEvent,
    _warning,
)
from gateway.core.calls.forwarding import CallForwarding
from gateway.core.calls.leg import ALeg, BLeg, Leg, Side
from gateway.core.calls.location import carries_location
from gateway.core.calls.picked_up import CallPickedUp
from gateway.core.calls.reinvites import CallReinvites
from gateway.core.calls.ringing import ANSWERED_ELSEWHERE, CallRinging
from gateway.core.calls.routing import TrunkHopTarget, over_tls_only
from gateway.core.calls.rtcp_capture import RtcpToCaptures
from gateway.core.calls.targets import best_failure, without_other_hops
from gateway.core.calls.transfer import Transfer
from gateway.core.interfaces import Caller, CallEvent, RouteDecision, RouteTarget
from gateway.core.logs import log_exception
from gateway.core.media.dtmf import is_dtmf_info
from gateway.core.media.errors import PortsExhausted
from gateway.core.media.keying import CallKeying
from gateway.core.sdp.body import UnsupportedBody, read_body
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip.dialog import (
    DialogState,
    OutOfOrderRequest,
    glare_wait,
    require_contact,
    uas_dialog_id,
)
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Request, Response, default_reason, make_response
from gateway.core.sip.refer import (
    SIPFRAG,
    Replaces,
    parse_refer,
    sipfrag,
    subscription_state,
    wants_subscription,
)
from gateway.core.sip.session_timer import IntervalTooSmall, allows_update
from gateway.core.sip.transaction import State, TransactionStateError
from gateway.core.sip.uri import Uri

# Requests relayed as they are inside an established call; anything else gets 501.
RELAYED_IN_DIALOG = frozenset({"INFO", "OPTIONS", "MESSAGE", "NOTIFY"})
# How long an attended transfer to a trunk's call waits for the consultation call to hand its
# trunk leg over (one turn of that call's task; it answers at once unless it is ending).
HAND_OVER_WAIT = 2.0
# How many times our own re-INVITE (a transfer's) is sent again after a 491 (RFC 3261 §14.1:
# the other side's re-INVITE crossed it); a device that keeps refusing fails the transfer.
GLARE_RETRIES = 3


class Call(CallReinvites, CallPickedUp, CallRinging, CallForwarding, CallDtmfInfo):
    """One B2BUA call (the module's docstring): its task and states, each event handed to the
    concern that handles it. Every concern is a class this one derives from, in the order of
    what calls what (``CallBase`` holds the state of them all)."""

    # -- the task ------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
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
                    self.end_reason = f"network error: {exc}"
                    log_exception(
                        log, "call %s: %s", self.id, self.end_reason, level=logging.WARNING
                    )
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await self._answer_handled(503, "Service Unavailable (network error)")
                        await self._abort(503, "Service Unavailable (network error)")
                except Exception as exc:
                    # A bug in the core or a plugin: end this call only (STYLE.md habit 6).
                    log_exception(log, "call %s failed", self.id)
                    self.end_reason = f"internal error: {type(exc).__name__}"
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await self._answer_handled()
                        await self._abort(500, "Server Internal Error")
                # Unanswered B legs still need their CANCEL (sent once they ring) and a 2xx
                # that crosses it needs ACK and BYE: wait for every B leg's final response, at
                # most as long as an INVITE transaction lives (64*T1, Timer B).
                with trio.move_on_after(self.config.sip.t1 * 64):
                    await self._cancel_pending_reinvites()
                    await self._bye_transfer_leftovers()
                    await self._drain_b_legs()
                nursery.cancel_scope.cancel()
        finally:
            # Later responses (2xx retransmissions while Timer M runs) find nobody: dropped.
            for client in self._forwarded:
                client.forward_to(None)
            self._forwarded.clear()
            if self.keying is not None:
                self.keying.block_all()
            # Recorded before the streams close, so the record keeps their final counters.
            self.manager.event(self, "ended", self.end_reason)
            if self.taps is not None:
                self.taps.close()
            if self.keying is not None:
                self.keying.close()
            if self.media is not None:
                self.media.close()
            self.manager.forget(self)  # from here on the endpoint answers our dialogs 481
            self._events_send.close()
            log.info("call %s ended: %s", self.id, self.end_reason or "normal clearing")
            if (
                self._relaying
                or self._pending_reinvite is not None
                or self._queued_requests
                or self._pickup_waiting is not None
            ):
                with trio.CancelScope(shield=True), trio.move_on_after(self.config.sip.t1):
                    await self._refuse_queued_requests()

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
        if event.transaction.state not in (State.TRYING, State.PROCEEDING):
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
        while True:
            try:
                event = self._events.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if isinstance(event, (RequestEvent, PickUpEvent)):
                unanswered.append((event.transaction, event.request))
        for transaction, request in unanswered:
            try:
                await self.endpoint.respond(
                    transaction, make_response(request, 481, "Call Has Ended")
                )
            except TransactionStateError:  # answered already after all
                log.debug("call %s: %s answered already", self.id, request.method)

    # -- set-up ---------------------------------------------------------------------------------

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
        if self.manager.caller_identity and caller.kind == "trunk":
            with trio.CancelScope() as self._setup_wait:
                await self._check_identity(invite)
            self._setup_wait = None
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
            Side.A,
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
                    Side.A.value,
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
        if all(leg.finished for leg in self.b_legs):
            # Nothing rings: the targets could not be sent to (a 503 of ours), their media
            # policies refused the offer or making it failed; the alternates may still take
            # the call.
            await self._fail_over_or_fail_a()
        self.state = "ringing"
        self._ring_deadline = trio.current_time() + self.config.sip.ring_timeout
        await self._ringing()
        if self.state == "offered":
            await self._awaiting_answer()

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

    # -- call forwarding by redirect (redirect.py) --------------------------------------------

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

    # -- reliable provisional responses to A (RFC 3262), when A requires them -------------------

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

    # -- late offer (RFC 3261 §13.2.1: an INVITE without SDP) -----------------------------------

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
            # B, the offerer, may send as soon as our ACK brings it the answer: keys first.
            await self.media.applied()
        except Exception as exc:
            failure = self._answer_failed(exc, "answer in A's ACK")
            self.media.abandon_offer()
            self.state = "answered"
            # B's 2xx is ACKed with an answer refusing its offer, then BYEd (_bye).
            await self._hang_up(failure.reason, cause=failure.status)
        await self._ack_b(leg, leg.dialog, leg.final, body=serialize_sdp(answer_b))

    async def _early_request(self, event: RequestEvent) -> None:
        # Before the call is answered only the B side can send in-dialog requests (on its early
        # dialog); nothing we relay yet. A's PRACK is ours to answer.
        if event.request.method == "PRACK" and event.side is Side.A:
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

    # -- established ----------------------------------------------------------------------------

    async def _established(self) -> None:
        media = self.config.media
        check_every = max(0.5, min(5.0, min(media.inactivity_timeout, media.hold_timeout) / 4))
        next_check = trio.current_time() + check_every
        # Silence counts from the last packet, the answer, or the last change into or out of
        # hold: a call resumed after a long silent hold gets the whole inactivity timeout.
        held, silent_since = False, self.answered_at
        while True:
            transfer = self._transfer
            if transfer is not None and transfer.deferred and not self._offer_in_progress():
                await self._offer_target_to_transferee()
            wake = min(
                next_check,
                self._reinvite_deadline,
                self._session_timer_due(),
                self._transfer_due(),
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
            elif isinstance(event, PickUpEvent):
                await self._refuse_pickup(event)

    async def _in_dialog(self, event: RequestEvent) -> None:
        leg = self._leg(event.side)
        request = event.request
        assert leg.dialog is not None
        if request.call_id != leg.dialog.call_id:
            await self._other_dialog_request(event)  # a departed transferor, or a new target
            return
        if uas_dialog_id(request) != leg.dialog.id:
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
        if request.method == "INVITE":
            await self._reinvite(event)
            return
        if request.method == "PRACK" and event.side is Side.A and self.a.invite is not None:
            await self._prack(event)  # a late one, after our 2xx (RFC 3262 §3)
            return
        if request.method == "UPDATE":
            await self._update(event)
            return
        if request.method == "REFER":
            await self._refer(event)
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

    # -- DTMF interworking (docs/architecture.md "DTMF interworking") --------------------------

    async def _relayed_response(self, event: ResponseEvent) -> None:
        tag = event.tag
        response = event.response
        if isinstance(tag, BLeg) and tag in self._transfer_legs:
            await self._target_response(tag, response)
            return
        if isinstance(tag, BLeg):
            if 100 < response.status < 200 and tag.cancel_wanted and not tag.cancelled:
                tag.provisional_seen = True  # a leg given up, ringing late: CANCEL it now
                await self._cancel_b(tag)
                return
            if response.is_success and tag.final is not None and tag.ack is not None:
                # A retransmitted 2xx: our ACK was lost; the UAC core sends it again
                # (RFC 3261 §13.2.2.4).
                await self._resend_ack(tag)
                return
            if response.status >= 200 and _first_final_or_late_2xx(tag.final, response):
                tag.final = response
                if response.is_success and tag is not self.b:
                    await self._b_answered(tag, response)  # a late fork answer: ACK + BYE
            return
        if not isinstance(tag, InDialogRequest) or response.status < 200 or tag.purpose == "bye":
            return
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
        elif tag.purpose == "transfer":
            await self._transferee_answered(tag, response)
        elif tag.purpose == "join":
            await self._joined_leg_answered(tag, response)

    # -- transfers (RFC 3515 REFER, RFC 3891 Replaces; transfer.py) ----------------------------

    async def _refer(self, event: RequestEvent) -> None:
        """A REFER in the established call: 202 and NOTIFYs, the target called, or a refusal
        that leaves the call as it is (403 from a trunk's leg, 491 while a transfer or a
        re-INVITE is in progress, 400/416/501 for a Refer-To we cannot follow)."""
        request = event.request
        transferor = self._leg(event.side)
        try:
            refusal = self._refer_refusal(transferor)
            refer_to = parse_refer(request.headers)
        except RemoteSipError as err:
            refusal = (err.status or 400, err.reason)
        if refusal is not None:
            status, why = refusal
            log.info("call %s: REFER from the %s leg refused: %s", self.id, event.side.value, why)
            refused = make_response(request, status, extra=[("Warning", _warning(why))])
            await self.endpoint.respond(event.transaction, refused)
            return
        transfer = Transfer(
            transferor=transferor,
            refer_cseq=request.cseq.number,
            notify=wants_subscription(request.headers),
            target=str(refer_to.uri),
        )
        self._transfer = transfer
        extra = [("Contact", str(transferor.contact))]
        if not transfer.notify:
            extra.append(("Refer-Sub", "false"))  # RFC 4488 §4
        await self.endpoint.respond(event.transaction, make_response(request, 202, extra=extra))
        kind = "attended" if refer_to.replaces is not None else "blind"
        log.info(
            "call %s: the %s leg transfers the call to %s (%s)",
            self.id,
            event.side.value.upper(),
            transfer.target,
            kind,
        )
        await self._notify(transfer, 100, "Trying")
        if refer_to.replaces is not None:
            failure = await self._call_replaced_dialog(refer_to.replaces)
        else:
            failure = await self._call_transfer_target(refer_to.uri)
        if failure is not None:
            await self._end_transfer(*failure)

    def _refer_refusal(self, transferor: Leg) -> tuple[int, str] | None:
        if transferor.peer_kind != "account":
            # A carrier's REFER would have us place calls for it; a PBX behind a trunk
            # transfers by itself when refused.
            return 403, "transfers are taken from accounts' devices only"
        if self._transfer is not None:
            return 491, "a transfer is in progress"
        if self._offer_in_progress():
            return 491, "a re-INVITE is in progress"
        return None

    async def _call_transfer_target(self, uri: Uri) -> tuple[int, str] | None:
        """A blind transfer: route ``uri`` as a call the transferor places and ring every
        target; the failure to report when none can be rung."""
        transfer = self._transfer
        assert transfer is not None
        transferor = transfer.transferor
        caller = Caller(kind="account", name=transferor.peer_name, flow=transferor.flow)
        who = self._referred_by(transferor)
        # What a routing plugin sees: the transferor calling the target.
        routed = Request(
            "INVITE",
            uri,
            Headers.of(
                [
                    ("From", str(who.with_tag(self.manager.gateway.ids.new_tag()))),
                    ("To", str(NameAddr(uri))),
                    ("Call-ID", self.id),
                    ("CSeq", "1 INVITE"),
                    ("Referred-By", str(who)),
                ]
            ),
        )
        try:
            decision = self.manager.route(routed, caller)
        except Exception:  # a routing plugin's bug fails this transfer, not the call
            log_exception(log, "call %s: routing the transfer target failed", self.id)
            return 500, "Server Internal Error"
        if not decision.targets:
            status = decision.reject_status or 404
            return status, decision.reject_reason or default_reason(status)
        routed_targets, alternates = decision.targets, decision.alternates
        if self.secure:
            # The caller asked for TLS on every hop (RFC 5630 §3.1.3): whoever it is put
            # through to by a transfer is reached over TLS too.
            routed_targets, alternates = over_tls_only(routed_targets), over_tls_only(alternates)
            if not routed_targets and alternates:
                routed_targets, alternates = alternates[:1], alternates[1:]
            if not routed_targets:
                log.info("call %s: SIPS: no transfer target reached over TLS", self.id)
                return 480, "Temporarily Unavailable"
        counted = [(target, self._count_target(target)) for target in routed_targets]
        targets = [target for target, why in counted if why is None]
        transfer.alternates = list(alternates)
        transfer.target_headers = (("Referred-By", str(who)),)
        if not targets and (alternate := self._next_transfer_alternate(transfer)) is not None:
            targets = [alternate]  # the first trunk is at its limits: the next one
        if not targets:
            first, why = counted[0]
            if first.trunk is not None:
                return 503, f"Service Unavailable (trunk {why})"
            return 486, f"Busy Here (account {why})"
        for target in targets:
            await self._invite_transfer_target(target, transfer.target_headers)
        return self._transfer_targets_failed()

    def _next_transfer_alternate(self, transfer: Transfer) -> RouteTarget | None:
        """The transfer's next alternate with room for the call (counted), or None."""
        while transfer.alternates:
            target = transfer.alternates.pop(0)
            if self._count_target(target) is None:
                return target
        return None

    async def _fail_over_transfer(self, transfer: Transfer) -> bool:
        """Every device of a blind transfer's target failed: when each failed with one of
        ``[sip] failover_statuses`` (a carrier's trouble), call the next trunk serving the
        number, as a call does (:meth:`_fail_over_or_fail_a`). Whether one now rings."""
        failover = self.config.sip.failover_statuses
        while all(
            leg.given_up is not None or (leg.final is not None and leg.final.status in failover)
            for leg in transfer.legs
        ):
            for leg in transfer.legs:
                if leg.target is not None and leg.target.trunk is not None:
                    self.manager.limits.release_one(self, ("trunk", leg.target.trunk))
            if transfer.legs:
                transfer.alternates = without_other_hops(transfer.alternates, transfer.legs[-1])
            target = self._next_transfer_alternate(transfer)
            if target is None:
                return False
            failed = transfer.legs[-1] if transfer.legs else None
            if failed is not None and failed.target is not None and failed.target.trunk:
                self.manager.failovers[failed.target.trunk] += 1
            log.info("call %s: transfer target failed; trying trunk %s", self.id, target.trunk)
            before = len(transfer.legs)
            await self._invite_transfer_target(target, transfer.target_headers)
            if any(not leg.finished for leg in transfer.legs[before:]):
                transfer.deadline = trio.current_time() + self.config.sip.ring_timeout
                return True
        return False

    async def _call_replaced_dialog(self, replaces: Replaces) -> tuple[int, str] | None:
        """An attended transfer: the Replaces names the transferor's dialog with us in another
        call (its consultation call). Its other leg's device is called with a Replaces for our
        dialog with it (RFC 3891 §3: it drops that call and takes ours). A trunk's call is not
        replaced: carriers do not take Replaces."""
        transfer = self._transfer
        assert transfer is not None
        found = self.manager.find_dialog(replaces.call_id, replaces.to_tag)
        other = found[0] if found is not None else None
        ringing = other is not None and other is not self and other.state == "ringing"
        if found is not None and other is not None and ringing and found[1] is Side.A:
            return await self._take_over_ringing(other, replaces)
        if found is None or other is None or other is self or other.state != "answered":
            return 481, "Call/Transaction Does Not Exist"
        consulting = other.a if found[1] is Side.A else other.b
        target_leg = other.b if found[1] is Side.A else other.a
        transferor = transfer.transferor
        if (
            consulting is None
            or consulting.dialog is None
            or consulting.dialog.remote_tag != replaces.from_tag
            or (consulting.peer_kind, consulting.peer_name)
            != (transferor.peer_kind, transferor.peer_name)
        ):
            # Only a dialog of the transferor's own account may be named.
            return 481, "Call/Transaction Does Not Exist"
        dialog = target_leg.dialog if target_leg is not None else None
        their_tag = dialog.remote_tag if dialog is not None else None
        if target_leg is None or dialog is None or their_tag is None:
            return 481, "Call/Transaction Does Not Exist"
        if target_leg.peer_kind != "account":
            return await self._join_consulted_leg(other, found[1].other, replaces)
        ours = Replaces(dialog.call_id, to_tag=their_tag, from_tag=dialog.local_tag)
        transfer.replaces = ours
        target = RouteTarget(
            uri=str(dialog.remote_target), flow=target_leg.flow, account=target_leg.peer_name
        )
        who = self._referred_by(transferor)
        extra = [("Referred-By", str(who)), ("Replaces", str(ours)), ("Require", "replaces")]
        await self._invite_transfer_target(target, extra)
        return self._transfer_targets_failed()

    async def _take_over_ringing(self, other: Call, replaces: Replaces) -> tuple[int, str] | None:
        """A semi-attended transfer: the transferor's consultation call, ``other``, still
        rings, and a device does not replace a dialog it has not answered (RFC 3891 §3). The
        target is called as in a blind transfer, at the address the transferor dialled, and
        the consultation call stops ringing it ("Call completed elsewhere": no missed call)
        and ends."""
        transfer = self._transfer
        assert transfer is not None
        consulting, transferor = other.a, transfer.transferor
        invite = consulting.invite
        if (
            invite is None
            or invite.from_.tag != replaces.from_tag
            or (consulting.peer_kind, consulting.peer_name)
            != (transferor.peer_kind, transferor.peer_name)
        ):
            return 481, "Call/Transaction Does Not Exist"  # not the transferor's own call
        other.post(ReplacedEvent())
        return await self._call_transfer_target(invite.uri)

    async def _join_consulted_leg(
        self, other: Call, give: Side, replaces: Replaces
    ) -> tuple[int, str] | None:
        """An attended transfer to a trunk's call: take the consultation call's trunk leg over
        (:meth:`_hand_over` there), then re-INVITE it without SDP: its 2xx brings the offer the
        transferee gets (:meth:`_joined_leg_answered`), as a target's 2xx does."""
        transfer = self._transfer
        assert transfer is not None
        event = HandOverEvent(taker=self, side=transfer.side, give=give)
        other.post(event)
        with trio.move_on_after(HAND_OVER_WAIT):
            await event.done.wait()
        leg = event.leg
        if leg is None or leg.dialog is None:
            return 481, "Call/Transaction Does Not Exist"
        transfer.replaces = replaces
        transfer.answered = leg
        self.b_legs.append(leg)  # BYEd with the call's other leftovers if the transfer fails
        if leg.peer_kind == "trunk" and leg.peer_name is not None:
            # The carrier's channel the consultation call held is this call's now: its count
            # moves here, whatever the trunk's max_calls says (exempt). It is no new channel,
            # and a refusal could only hang up a call the carrier already carries; the count
            # stays right because the consultation call gives its own back as it ends (it
            # may not have yet: for a moment the trunk counts one more).
            key = ("trunk", leg.peer_name)
            limits = self.manager.limits
            if not limits.counts(self, key):
                limits.take(self, key, exempt=True)
                transfer.moved_count = key
        return await self._send_join(transfer, leg)

    async def _send_join(self, transfer: Transfer, leg: BLeg) -> tuple[int, str] | None:
        """Our re-INVITE without SDP to the taken-over trunk leg (the failure to report when it
        cannot be sent)."""
        tag = InDialogRequest("join", leg.side)
        sent = await self._send_in_dialog(
            leg,
            "INVITE",
            tag=tag,
            extra=[("Supported", "timer"), *self._refresh_headers(leg)],
        )
        if sent is None:
            return 503, "Service Unavailable"
        transfer.join = tag
        transfer.deadline = trio.current_time() + 64 * self.config.sip.t1
        return None

    async def _joined_leg_answered(self, tag: InDialogRequest, response: Response) -> None:
        """The final response to our re-INVITE without SDP to a taken-over trunk leg: a 2xx
        brings its offer for the transferee; a refusal fails the transfer (and ends that leg:
        its consultation call is over already)."""
        transfer = self._transfer
        if transfer is None or transfer.join is not tag:
            current = self._leg(tag.side)  # its 2xx again, once the leg took its place
            if (
                isinstance(current, BLeg)
                and current.ack is not None
                and response.is_success
                and current.ack.cseq.number == response.cseq.number
            ):
                await self._resend_ack(current)
            return
        leg = transfer.answered
        assert leg is not None
        transfer.join, transfer.deadline = None, math.inf
        if response.status == 491 and self._again_after_glare(transfer, "join", leg):
            return
        if not response.is_success:
            await self._end_transfer(response.status, response.reason)
            return
        leg.final, leg.ack = response, None  # ACKed with the transferee's answer
        if self._offer_in_progress():
            transfer.deferred = True
            return
        await self._offer_target_to_transferee()

    def _again_after_glare(self, transfer: Transfer, purpose: str, leg: Leg) -> bool:
        """Our re-INVITE ``purpose`` on ``leg`` got 491: another re-INVITE crossed it. Send it
        again after RFC 3261 §14.1's wait (True), unless it has been tried GLARE_RETRIES times."""
        if transfer.glare_retries >= GLARE_RETRIES or leg.dialog is None:
            return False
        transfer.glare_retries += 1
        draw = int(self.manager.gateway.ids.token_hex(2), 16)
        wait = glare_wait(leg.dialog.owns_call_id, draw)
        transfer.glare_retry, transfer.glare_retry_at = purpose, trio.current_time() + wait
        log.info(
            "call %s: our re-INVITE to the %s leg crossed one of its own (491); again in %.2f s",
            self.id,
            leg.side.value.upper(),
            wait,
        )
        return True

    async def _again_after_glare_due(self, transfer: Transfer) -> None:
        """The re-INVITE that met glare, once more (a transfer's offer waits, as always, for
        an offer in progress meanwhile to end)."""
        purpose, transfer.glare_retry, transfer.glare_retry_at = transfer.glare_retry, "", math.inf
        if purpose == "join":
            assert transfer.answered is not None
            failure = await self._send_join(transfer, transfer.answered)
            if failure is not None:
                await self._end_transfer(*failure)
        elif self._offer_in_progress():
            transfer.deferred = True
        else:
            await self._offer_target_to_transferee()

    async def _hand_over(self, event: HandOverEvent) -> None:
        """Give our leg on side ``event.give`` (a trunk's) to another call's attended transfer
        and end: BYE to our other leg, the transferor, whose consultation this was; none to the
        leg handed over. A caller's leg (we answered its INVITE) goes as a :class:`BLeg` like
        any leg the taker calls: the dialog is what matters from now on."""
        given = self._leg(event.give) if self.b is not None else None
        if given is None or given.dialog is None or self._offer_in_progress() or self._transfer:
            event.done.set()  # not now: the taker's transfer fails 481
            return
        leg = given if isinstance(given, BLeg) else _as_b_leg(given)
        leg.side = event.side
        # Its requests go to the taker from now on (before we forget our dialogs at our end).
        dialog = given.dialog
        self.manager.register_leg(event.taker, event.side, dialog.call_id, dialog.local_tag)
        if given in self.b_legs:
            self.b_legs.remove(given)
        self._retransmit_at.pop(event.give, None)
        self._reinvite_acks.pop(event.give, None)
        event.leg = leg
        event.done.set()
        who = "callee" if event.give is Side.B else "caller"
        self.end_reason = f"transferred: the {who} joined the transferred call"
        await self._bye(self._leg(event.give.other), "call transferred")
        raise CallEnded(self.end_reason)

    def _referred_by(self, transferor: Leg) -> NameAddr:
        """Who asked for the transfer (RFC 3892 Referred-By), as we know it: the transferor's
        party at our address, not what its device wrote."""
        return NameAddr(self.endpoint.our_uri(transferor.transport, transferor.shown_as))

    async def _invite_transfer_target(
        self, target: RouteTarget, extra: Sequence[tuple[str, str]]
    ) -> None:
        """Call one of the transfer target's devices, without SDP: its 2xx offers, the
        transferee answers (transfer.py step 3). It sees the transferee calling, a trunk the
        transferor's account (carriers take only their own numbers as caller ID)."""
        transfer = self._transfer
        assert transfer is not None
        made = self._new_b_leg(target, transfer.side, late_offer=True)
        if made is None:
            return
        leg, uri = made
        transferee = self._leg(transfer.side.other)
        account: str | None = None
        if leg.peer_kind == "trunk":
            account = transfer.transferor.peer_name or "anonymous"
            user, private = self._account_number(leg, account), False
        else:
            user, private = transferee.shown_as, transferee.private
        presented = self._identity(leg, user, None, privacy=private)
        transfer.legs.append(leg)
        self._transfer_legs.add(leg)
        trunk = self._leg_trunk(leg)
        if trunk is not None and trunk.response_timeout > 0:  # armed before the send, as in _call_b
            leg.response_deadline = trio.current_time() + trunk.response_timeout
        request = self._new_invite(uri, leg, None, [*presented, *extra])
        if trunk is not None and account is not None and self.manager.caller_identity:
            # RFC 8224 §4.1, as for a call's own INVITE: it presents the transferor's number,
            # so it is signed as that account's call (attestation A for its own DID).
            request = identity.signed(self, trunk, request, for_account=account)
        await self._send_b_invite(leg, request)

    def _transfer_targets_failed(self) -> tuple[int, str] | None:
        """The failure to report once every device of the target has failed; while some
        still ring, None (they get ``[sip] ring_timeout``, as Timer C)."""
        transfer = self._transfer
        assert transfer is not None
        if any(not leg.finished for leg in transfer.legs):
            transfer.deadline = trio.current_time() + self.config.sip.ring_timeout
            return None
        return best_failure(
            [outcome for leg in transfer.legs if (outcome := leg.final or leg.given_up)]
        )

    async def _target_response(self, leg: BLeg, response: Response) -> None:
        """A response to our INVITE to a transfer target's device."""
        transfer = self._transfer
        calling = transfer is not None and transfer.still_calling(leg)
        if leg.final is not None:
            if response.is_success and leg.ack is not None:
                await self._resend_ack(leg)  # RFC 3261 §13.2.2.4
            return  # (its 2xx again before our ACK: ACKed once the transferee answers)
        if response.status < 200:
            if response.status == 100 or not await self._prack_b(leg, response):
                return
            leg.provisional_seen = True
            if leg.cancel_wanted and not leg.cancelled:
                await self._cancel_b(leg)
            elif calling:
                assert transfer is not None
                transfer.deadline = trio.current_time() + self.config.sip.ring_timeout
                await self._notify(transfer, response.status, response.reason)
            return
        if await self._asked_again(leg, response):
            return
        leg.final = response
        if response.is_success:
            await self._target_answered(leg, response)
        elif calling:
            failure = self._transfer_targets_failed()
            if failure is not None:
                assert transfer is not None
                if not await self._fail_over_transfer(transfer):
                    await self._end_transfer(*(self._transfer_targets_failed() or failure))

    async def _target_answered(self, leg: BLeg, response: Response) -> None:
        """A target's device answered with its offer: the first one is offered to the
        transferee (now, or once the re-INVITE in progress is over); any other is ACKed and
        BYEd, as is one that answers a transfer already over."""
        leg.dialog = self._confirmed_dialog(leg, response)
        transfer = self._transfer
        if transfer is None or not transfer.still_calling(leg):
            await self._bye(leg, "call completed elsewhere")  # ACKed first (§13.2.2.4)
            return
        transfer.answered = leg
        transfer.deadline = math.inf
        for other in transfer.legs:
            if other is not leg and other.final is None:
                await self._cancel_b(other, ANSWERED_ELSEWHERE)
        if self._offer_in_progress():
            transfer.deferred = True  # _established offers it once that is over
            return
        await self._offer_target_to_transferee()

    async def _offer_target_to_transferee(self) -> None:
        """The target's offer, through its leg's and the transferee's keys, in a re-INVITE to
        the transferee: a re-offer from the transferor's side, whose ports the target takes
        over (the relay sends there as soon as the offer is made, RFC 3264 §8.3.1)."""
        transfer = self._transfer
        assert transfer is not None and transfer.answered is not None and self.media is not None
        transfer.deferred = False
        leg = transfer.answered
        transferee = self._leg(transfer.side.other)
        assert leg.final is not None and leg.security is not None
        assert transferee.security is not None
        try:
            sdp = _sdp(leg.final)
            if not sdp:
                raise SdpError("2xx without SDP offer to our INVITE without SDP")
            plain = self.media.offer_from(
                transfer.side.value,
                leg.security.take_offer(parse_sdp_untrusted(sdp)),
                dtmf_info=leg.security.dtmf_info,
            )
            offer = transferee.security.make_offer(plain)
        except (SdpError, PortsExhausted) as err:
            self.media.abandon_offer()
            reason = err.reason if isinstance(err, SdpError) else "no free media ports"
            log.info("call %s: the transfer target's offer is unusable: %s", self.id, reason)
            await self._end_transfer(488, "Not Acceptable Here")  # ACKs and BYEs the target
            return
        except Exception as exc:
            # Not the target's fault: a bug. The target's 2xx is ACKed and BYEd (_end_transfer)
            # and, the media session's state being unknown, the call ends too.
            failure = self._answer_failed(exc, "transfer target's offer")
            self.media.abandon_offer()
            await self._end_transfer(failure.status, failure.phrase, call_ends=True)
            await self._hang_up(failure.reason, cause=failure.status)
        tag = InDialogRequest("transfer", transferee.side)
        sent = await self._send_in_dialog(
            transferee,
            "INVITE",
            body=serialize_sdp(offer),
            tag=tag,
            extra=[("Supported", "timer"), *self._refresh_headers(transferee)],
        )
        if sent is None:
            self.media.abandon_offer()
            await self._end_transfer(503, "Service Unavailable")
            return
        transfer.reinvite = tag
        transfer.deadline = trio.current_time() + 64 * self.config.sip.t1

    async def _transferee_answered(self, tag: InDialogRequest, response: Response) -> None:
        """The transferee's final response to the re-INVITE with the target's offer: a 2xx
        completes the transfer (its answer goes to the target in our ACK); a refusal fails
        it and the call goes on as before (408 or 481: the transferee is gone, it ends)."""
        transfer = self._transfer
        if transfer is None or transfer.reinvite is not tag:
            await self._resend_reinvite_ack(tag.side, response)
            return
        assert self.media is not None and transfer.answered is not None
        transfer.reinvite, transfer.deadline = None, math.inf
        leg = transfer.answered
        transferee = self._leg(tag.side)
        side = tag.side.value.upper()
        if not response.is_success:
            self.media.abandon_offer()
            if response.status == 491 and self._again_after_glare(transfer, "transfer", transferee):
                return
            await self._end_transfer(response.status, response.reason)
            if response.status in (408, 481):
                await self._hang_up(
                    f"re-INVITE to the {side} leg answered {response.status} {response.reason}"
                )
            return
        assert transferee.dialog is not None and transferee.security is not None
        assert leg.security is not None and leg.dialog is not None and leg.final is not None
        try:
            flow = await self.endpoint.flow_to(
                transferee.transport, transferee.address, transferee.flow
            )
            via = self.endpoint.new_via(flow)  # OSError: no listener of its transport left
        except OSError as exc:
            # Nothing we received is in hand (the REFER has its 202; the transferor hears of
            # the failure in a NOTIFY). The transferee took the target's offer but cannot be
            # ACKed: it ends its dialog after 64*T1 (RFC 3261 §13.3.1.4) and the legs would
            # disagree, so the transfer fails and the call ends; the target's 2xx is ACKed
            # and BYEd with the rest (_end_transfer). The transferor's NOTIFY and the target's
            # ACK go first, even should abandoning the offer raise (the catch-all in run()
            # would end the call without them).
            log.info("call %s: cannot ACK the transferee: %s", self.id, exc)
            await self._end_transfer(503, "Service Unavailable", call_ends=True)
            self.media.abandon_offer()
            await self._hang_up(f"signalling failed: {exc}")
        ack = transferee.dialog.create_ack(response.cseq.number, via=via)
        self._reinvite_acks[tag.side] = ack
        transferee.session_timer = self._refreshed_by_2xx(transferee, response)
        legs = self.a, self.b  # the transferor's among them until _take_over
        try:
            plain = self.media.answer_from(
                tag.side.value,
                transferee.security.take_answer(parse_sdp_untrusted(_sdp(response))),
                rtcp_mux_offered=transferee.security.offers_rtcp_mux,
            )
            answer = leg.security.make_answer(plain)
            self.media.settle()
            self._take_over(transfer)
            # The target, whose 2xx offered, may send once our ACK brings it the answer (RFC
            # 3264 §8), the transferee once we ACK its 2xx: the relay (and its media workers)
            # carries the answer and the target's keys first.
            await self.media.applied()
        except Exception as exc:
            # The transferee uses its new SDP already: the legs would disagree (RFC 3264 §8).
            # §13.2.2.4: its 2xx is still ACKed, then BYEd; the target's too (_end_transfer,
            # or _hang_up once it took the transferor's place).
            failure = self._answer_failed(exc, "answer to re-INVITE")
            self.a, self.b = legs  # the transferor is BYEd with the rest, not lost
            await self.endpoint.send_ack(ack, flow)
            self.media.abandon_offer()
            await self._end_transfer(failure.status, failure.phrase, call_ends=True)
            await self._hang_up(failure.reason, cause=failure.status)
        await self.endpoint.send_ack(ack, flow)
        await self._ack_b(leg, leg.dialog, leg.final, body=serialize_sdp(answer))
        await self._complete_transfer()

    def _take_over(self, transfer: Transfer) -> None:
        """The target's leg answered: it takes the transferor's place in the call, its keys
        applied."""
        assert transfer.answered is not None
        leg = transfer.answered
        assert leg.final is not None and leg.dialog is not None
        if transfer.side is Side.B:
            self.b = leg
        else:
            self.a = _as_a_leg(leg)
        self._apply_keys(self.b)

    async def _complete_transfer(self) -> None:
        """The target's leg has taken the transferor's place in the call (:meth:`_take_over`);
        the transferor hears "200 OK" and is left to hang up (BYEd by us after 64*T1 if it
        does not)."""
        transfer = self._transfer
        assert transfer is not None and transfer.answered is not None
        self._transfer = None
        leg, departing = transfer.answered, transfer.transferor
        assert leg.final is not None and leg.dialog is not None
        leg.allows_update = allows_update(leg.final.headers)
        leg.session_timer = self._refreshed_by_2xx(leg, leg.final)
        if self.taps is not None:
            # Another party on that side now: its URI, for a recorder's metadata (RFC 7865).
            joined = leg.dialog.remote_uri.uri
            self.taps.leg_replaced(transfer.side.value, "" if joined is None else str(joined))
        # What we keep per side for the transferor's dialog is over: our 2xx to it, our ACK.
        self._retransmit_at.pop(transfer.side, None)
        self._reinvite_acks.pop(transfer.side, None)
        departing.session_timer = None
        dialog = departing.dialog
        if dialog is not None and dialog.state is not DialogState.TERMINATED:
            self._departed.append((departing, trio.current_time() + 64 * self.config.sip.t1))
        self._record_transfer(transfer, 200, "OK")
        await self._notify(transfer, 200, "OK")

    async def _end_transfer(self, status: int, reason: str, *, call_ends: bool = False) -> None:
        """The transfer failed with ``status``: its devices still ringing are CANCELled, one
        that answered is BYEd, the transferor hears why; the call goes on, unless the
        transferor has hung up already. ``call_ends``: the caller ends the call next itself,
        with a reason of its own (_answer_failed), which the BYEs and the record must say."""
        transfer = self._transfer
        if transfer is None:
            return
        self._transfer = None
        for leg in transfer.legs:
            if leg.final is None:
                await self._cancel_b(leg)
        if transfer.answered is not None:
            await self._bye(transfer.answered, f"transfer failed: {status} {reason}")
        if transfer.moved_count is not None:
            self.manager.limits.release_one(self, transfer.moved_count)  # that leg is gone
        self._record_transfer(transfer, status, reason)
        if transfer.transferor_left and not call_ends:
            await self._hang_up(f"transfer to {transfer.target} failed: {status} {reason}")
        await self._notify(transfer, status, reason)

    def _record_transfer(self, transfer: Transfer, status: int, reason: str) -> None:
        log.info(
            "call %s: transfer of the %s leg to %s: %d %s",
            self.id,
            transfer.side.value.upper(),
            transfer.target,
            status,
            reason,
        )
        self.transfers.append(
            {
                "by": transfer.side.value,
                "to": transfer.target,
                "attended": transfer.replaces is not None,
                "status": status,
            }
        )
        # For observers (CDR writers, billing): who left, who came in, or why not.
        side = transfer.side.value.upper()
        if status == 200:
            self.manager.event(self, "transferred", f"{side} leg to {transfer.target}")
        else:
            self.manager.event(self, "transfer-failed", f"{side} leg: {status} {reason}")

    async def _notify(self, transfer: Transfer, status: int, reason: str) -> None:
        """Tell the transferor how the transfer fares (RFC 3515 §2.4.4-2.4.5): a NOTIFY in its
        dialog per new status, the last one (final) ending the implicit subscription. Not when
        it asked for none (RFC 4488) or has hung up."""
        leg = transfer.transferor
        if not transfer.notify or transfer.transferor_left or leg.dialog is None:
            return
        if leg.dialog.state is DialogState.TERMINATED or status <= transfer.notified:
            return
        transfer.notified = status
        await self._send_in_dialog(
            leg,
            "NOTIFY",
            body=sipfrag(status, reason),
            content_type=SIPFRAG,
            tag=InDialogRequest("notify", leg.side),
            extra=[
                ("Event", f"refer;id={transfer.refer_cseq}"),
                ("Subscription-State", subscription_state(status >= 200)),
            ],
            forward=False,  # nothing waits for its answer
        )

    def _transfer_due(self) -> float:
        """When a transfer's target has rung or its re-INVITE waited long enough, one of its
        devices behind a trunk has not responded for the trunk's ``response_timeout``, or a
        departed transferor is to be BYEd."""
        due = min((at for _, at in self._departed), default=math.inf)
        transfer = self._transfer
        if transfer is None:
            return due
        if transfer.answered is None:
            due = min(due, min((leg.response_deadline for leg in transfer.legs), default=due))
        return min(due, transfer.deadline, transfer.glare_retry_at)

    async def _transfer_timers(self, now: float) -> None:
        for departed in [d for d in self._departed if d[1] <= now]:
            self._departed.remove(departed)
            await self._bye(departed[0], "call transferred")
        transfer = self._transfer
        if transfer is not None and now >= transfer.glare_retry_at:
            await self._again_after_glare_due(transfer)
            return
        if transfer is not None and transfer.answered is None:
            silent = [leg for leg in transfer.legs if leg.response_deadline <= now]
            for leg in silent:
                await self._give_up(leg)
            if silent and all(leg.finished for leg in transfer.legs):
                failure = self._transfer_targets_failed()
                assert failure is not None
                if not await self._fail_over_transfer(transfer):
                    await self._end_transfer(*(self._transfer_targets_failed() or failure))
                return
        if transfer is None or now < transfer.deadline:
            return
        if transfer.reinvite is None:  # the target's devices rang for [sip] ring_timeout
            await self._end_transfer(408, "Request Timeout")
            return
        # As a relayed re-INVITE without a final response (_reinvite_timed_out).
        assert self.media is not None
        self.media.abandon_offer()
        await self._cancel_relayed(transfer.reinvite)
        side = transfer.reinvite.side.value.upper()
        await self._end_transfer(408, "Request Timeout")
        seconds = 64 * self.config.sip.t1
        await self._hang_up(f"re-INVITE to the {side} leg got no final response in {seconds:g} s")

    async def _other_dialog_request(self, event: RequestEvent) -> None:
        """A request in a dialog of this call that is not its leg's on that side: a departed
        transferor's (its BYE gets 200; anything else 481, the call went on without it), or a
        target's that answered but has not taken over yet (its BYE fails the transfer)."""
        request = event.request
        for departed in self._departed:
            dialog = departed[0].dialog
            if dialog is not None and dialog.call_id == request.call_id:
                status = 200 if request.method == "BYE" else 481
                await self.endpoint.respond(event.transaction, make_response(request, status))
                if request.method == "BYE":
                    dialog.terminate()
                    self._departed.remove(departed)
                return
        transfer = self._transfer
        target = transfer.answered if transfer is not None else None
        dialog = target.dialog if target is not None else None
        if transfer is None or dialog is None or dialog.call_id != request.call_id:
            await self.endpoint.respond(event.transaction, make_response(request, 481))
            return
        if request.method != "BYE":
            busy = make_response(request, 491 if request.method in ("INVITE", "UPDATE") else 500)
            await self.endpoint.respond(event.transaction, busy)
            return
        await self.endpoint.respond(event.transaction, make_response(request, 200))
        dialog.terminate()
        if transfer.reinvite is not None:
            # The transferee is being moved to media that is gone: nobody is left to talk to.
            await self._end_transfer(487, "Request Terminated")
            await self._hang_up("the transfer target hung up as it answered")
        await self._end_transfer(487, "Request Terminated")  # its offer was not made yet

    async def _bye_transfer_leftovers(self) -> None:
        """The call has ended: BYE a departed transferor that has not hung up, and a target
        that answered a transfer that did not complete."""
        reason = self.end_reason or "call ended"
        for departed, _ in self._departed:
            await self._bye(departed, reason)
        self._departed.clear()
        transfer, self._transfer = self._transfer, None
        if transfer is not None and transfer.answered is not None:
            await self._bye(transfer.answered, reason)


def _as_a_leg(leg: BLeg) -> ALeg:
    """A transfer target's leg taking over side A (its INVITE was ours, but the call's A leg is
    an ALeg: answered, nothing left of a caller's INVITE transaction)."""
    assert leg.dialog is not None
    return ALeg(**_leg_state(leg), local_tag=leg.dialog.local_tag, answered=True)


def _as_b_leg(leg: Leg) -> BLeg:
    """A caller's leg handed to another call (attended transfer to a trunk's call): the same
    dialog, flow, keys and timer, as a leg that call sends its requests on."""
    assert leg.dialog is not None
    target = RouteTarget(uri=str(leg.dialog.remote_target), trunk=leg.peer_name)
    return BLeg(**_leg_state(leg), target=target, late_offer=True)


def _leg_state(leg: Leg) -> dict[str, Any]:
    """What every leg has (:class:`Leg`'s fields), to carry a leg over into another kind."""
    return {field.name: getattr(leg, field.name) for field in attrs.fields(Leg)}


_ = RouteDecision, CallEvent  # re-exported types used by the manager
