"""Transfers the call carries out (RFC 3515 REFER; transfer.py has the Transfer record).

A REFER from an account's device (a trunk's gets 403) is answered 202 and followed by NOTIFYs to
the transferor (§2.4.4-2.4.5; none when RFC 4488 asked for none); the target is called without
SDP as a call the transferor places, or, attended, its device in the consultation call with a
Replaces (RFC 3891), or that call's trunk leg handed over (carriers take no Replaces); the
target's offer goes to the transferee in a re-INVITE (again after a 491, §14.1), and the
target's leg takes over the transferor's side, media ports and all. Referred-By says who asked
(RFC 3892). The dialogs of a call are told apart by their Call-ID: a departed transferor's
requests are answered apart from its side's current leg, and it is BYEd if it does not hang up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import attrs
import trio

from gateway.core.calls import identity
from gateway.core.calls.base import log, sdp_body
from gateway.core.calls.events import (
    CallEnded,
    HandOverEvent,
    InDialogRequest,
    ReplacedEvent,
    RequestEvent,
    warning_header,
)
from gateway.core.calls.leg import ALeg, BLeg, Leg, Side
from gateway.core.calls.reinvites import CallReinvites
from gateway.core.calls.ringing import ANSWERED_ELSEWHERE, CallRinging
from gateway.core.calls.routing import over_tls_only
from gateway.core.calls.targets import CallTargets, best_failure, without_other_hops
from gateway.core.calls.transfer import Transfer
from gateway.core.interfaces import Caller, RouteTarget
from gateway.core.logs import log_exception, transport_error_text
from gateway.core.media.errors import PortsExhausted
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import Direction
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip.dialog import DialogState, glare_wait
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.events import parse_event_untrusted, parse_expires_untrusted
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Request, Response, default_reason, make_response
from gateway.core.sip.refer import (
    SIPFRAG,
    SUBSCRIPTION_SECONDS,
    Replaces,
    parse_refer,
    sipfrag,
    subscription_state,
    wants_subscription,
)
from gateway.core.sip.session_timer import allows_update
from gateway.core.sip.uri import Uri, redact_password

if TYPE_CHECKING:
    from gateway.core.calls.call import Call


_SENDRECV = Direction.SENDRECV

# How long an attended transfer to a trunk's call waits for the consultation call to hand its
# trunk leg over (one turn of that call's task; it answers at once unless it is ending).
HAND_OVER_WAIT = 2.0
# How many times our own re-INVITE (a transfer's) is sent again after a 491 (RFC 3261 §14.1:
# the other side's re-INVITE crossed it); a device that keeps refusing fails the transfer.
GLARE_RETRIES = 3


class CallTransfers(CallReinvites, CallRinging, CallTargets):
    """Transfers by REFER (the module's docstring)."""

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
            refused = make_response(request, status, extra=[("Warning", warning_header(why))])
            await self.endpoint.respond(event.transaction, refused)
            return
        transfer = Transfer(
            transferor=transferor,
            refer_cseq=request.cseq.number,
            notify=wants_subscription(request.headers),
            # Shown only (logs, the call record, events): a Refer-To may carry a password.
            target=redact_password(str(refer_to.uri)),
            subscribed_until=trio.current_time() + SUBSCRIPTION_SECONDS,
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
            redact_password(transfer.target),  # redacted when made; the scan checks it here
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
        event = HandOverEvent(taker=cast("Call", self), side=transfer.side, give=give)
        other.post(event)
        with trio.move_on_after(HAND_OVER_WAIT):
            await event.done.wait()
        leg = event.leg
        if leg is None or leg.dialog is None:
            return 481, "Call/Transaction Does Not Exist"
        transfer.replaces = replaces
        transfer.answered = leg
        transfer.joined_sent = event.sent
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

    async def _ack_joined_leg_again(self, tag: InDialogRequest, response: Response) -> None:
        """A joined carrier leg's 2xx to our re-INVITE again, once that leg took its place in
        the call: our ACK again (RFC 3261 §13.2.2.4)."""
        current = self._leg(tag.side)
        if (
            isinstance(current, BLeg)
            and current.ack is not None
            and response.is_success
            and current.ack.cseq.number == response.cseq.number
        ):
            await self._resend_ack(current)

    async def _joined_leg_answered(self, tag: InDialogRequest, response: Response) -> None:
        """The final response to our re-INVITE without SDP to a taken-over trunk leg: a 2xx
        brings its offer for the transferee; a refusal fails the transfer (and ends that leg:
        its consultation call is over already)."""
        transfer = self._transfer
        if transfer is None or transfer.join is not tag:
            await self._ack_joined_leg_again(tag, response)
            return
        leg = transfer.answered
        assert leg is not None
        transfer.join, transfer.deadline = None, math.inf
        if response.status == 491 and self._again_after_glare(transfer, "join", leg):
            return
        if not response.is_success:
            if not self._ends_session("INVITE", response.status) and response.status not in (
                401,
                407,
            ):
                # A carrier that takes no re-INVITE without SDP (488, 400, 500 ...): offer it
                # the call's media ourselves.
                failure = await self._join_with_our_offer(transfer, leg, response)
                if failure is None:
                    return
            await self._end_transfer(response.status, response.reason)
            return
        leg.final, leg.ack = response, None  # ACKed with the transferee's answer
        if self._offer_in_progress():
            transfer.deferred = True
            return
        await self._offer_target_to_transferee()

    async def _join_with_our_offer(
        self, transfer: Transfer, leg: BLeg, refusal: Response | None
    ) -> tuple[int, str] | None:
        """The carrier refused our re-INVITE without SDP (``refusal``; None: its 491 sent
        again), as some carriers refuse every late offer: re-INVITE it with an offer of our
        own instead, the SDP last sent on the transferor's side under the o= line of the
        consultation call's SDP in that dialog, one version on (``MediaSession.repeat_offer``:
        the call's media as the transferee has it, on the ports the carrier takes over, in the
        carrier's session as it knows it), every line in use sendrecv and listing only the codec
        in use (the carrier chose among its own codecs with the consultation call; among the
        call's it could choose one the transferee does not send), through the carrier leg's
        keys. Its answer must keep the codec in use (:meth:`_joined_leg_took_offer`): the
        transferee's session does not change, but for being taken off hold
        (:meth:`_resume_transferee`). None when sent; else the failure to report (an offer of
        the call's in progress, or ours could not be made or sent)."""
        assert self.media is not None and leg.security is not None
        side: Literal["a", "b"] = "a" if transfer.side is Side.A else "b"
        if refusal is not None:
            log.info(
                "call %s: the carrier leg refused our re-INVITE without SDP (%d %s): "
                "offering it the call's media",
                self.id,
                refusal.status,
                refusal.reason,
            )
        plain = None
        try:
            # Un-held: the transferor held the transferee while it consulted (RFC 3264 §8.4);
            # the o= line the consultation call's SDP had in that dialog, one version on (§8).
            plain = self.media.repeat_offer(
                side,
                direction=_SENDRECV,
                dialog_sent=transfer.joined_sent,
                keep_codec_in_use=True,
            )
            offer = leg.security.make_offer(plain)
        except Exception as exc:
            if plain is not None:
                self.media.withdraw_repeated_offer(side)  # not sent: its o= version is free
            log.info(
                "call %s: cannot offer the carrier leg the call's media (%s)",
                self.id,
                type(exc).__name__,  # never the text: a key exchange's may hold keys
            )
            return (refusal.status, refusal.reason) if refusal else (500, "Server Internal Error")
        tag = await self._reinvite_with_repeated_offer(leg, side, offer, "join-offer")
        if tag is None:
            return 503, "Service Unavailable"
        transfer.join_offer = tag
        transfer.deadline = trio.current_time() + 64 * self.config.sip.t1
        return None

    async def _joined_leg_took_offer(self, tag: InDialogRequest, response: Response) -> None:
        """The carrier's final response to our re-INVITE with our offer
        (:meth:`_join_with_our_offer`). A 2xx whose answer keeps the codec in use
        (``MediaSession.answer_to_repeated_offer``) joins it: ACKed, the carrier's leg takes
        the transferor's place, and the transferee, if held, is taken off hold before the
        transfer completes (:meth:`_resume_transferee`). An answer
        that does not fit fails the transfer (ACKed, then BYEd, RFC 3261 §13.2.2.4), as does a
        refusal (the session stays as it was, §14.1)."""
        transfer = self._transfer
        if transfer is None or transfer.join_offer is not tag:
            await self._ack_joined_leg_again(tag, response)
            return
        leg = transfer.answered
        assert leg is not None and leg.security is not None and self.media is not None
        assert leg.dialog is not None
        side: Literal["a", "b"] = "a" if transfer.side is Side.A else "b"
        transfer.join_offer, transfer.deadline = None, math.inf
        if not response.is_success:
            # Sent: its o= version stays taken (RFC 3264 §8).
            leg.security.offer_refused()
            self.media.repeated_offer_refused(side)
            if response.status == 491 and self._again_after_glare(transfer, "join-offer", leg):
                return
            await self._end_transfer(response.status, response.reason)
            return
        leg.final, leg.ack = response, None
        try:
            plain = leg.security.take_answer(parse_sdp_untrusted(sdp_body(response)))
            self.media.answer_to_repeated_offer(
                side, plain, rtcp_mux_offered=leg.security.offers_rtcp_mux
            )
            self._note_recordpref(leg, sdp_body(response))
            self.media.settle()
            self._take_over(transfer)
            # The carrier may send under its answer once our ACK reaches it: the relay (and
            # its media workers) carries the answer and its keys first.
            await self.media.applied()
        except Exception as exc:
            # A 2xx's answer cannot be refused (RFC 3264 §8): ACKed, then BYEd with the
            # transfer's failure (_end_transfer); the transferee's session never changed.
            failure = self._answer_failed(exc, "the carrier leg's answer to our offer")
            self.media.repeated_offer_refused(side)
            await self._ack_b(leg, leg.dialog, response)
            await self._end_transfer(failure.status, failure.phrase)
            return
        await self._ack_b(leg, leg.dialog, response)
        if not await self._resume_transferee(transfer):
            await self._complete_transfer()

    async def _resume_transferee(self, transfer: Transfer) -> bool:
        """A carrier joined with our offer (:meth:`_joined_leg_took_offer`): the transferee,
        which the transferor held while it consulted, gets no offer of the carrier's that
        would take it off hold, so we re-INVITE it ourselves with the SDP last sent to it,
        sendrecv (RFC 3264 §8.4), as the transferor's phone would have. True when sent (the
        transfer completes with its answer, :meth:`_transferee_resumed`); False when it is not
        held, or the re-INVITE could not be made or sent (it stays as it is)."""
        assert self.media is not None
        transferee = self._leg(transfer.side.other)
        side: Literal["a", "b"] = "b" if transfer.side is Side.A else "a"
        last = self.media.last_sent(side)
        if transferee.security is None or last is None:
            return False
        if all(m.port == 0 or last.effective_direction(m) is _SENDRECV for m in last.media):
            return False
        plain = None
        try:
            plain = self.media.repeat_offer(side, direction=_SENDRECV)
            offer = transferee.security.make_offer(plain)
        except Exception as exc:
            if plain is not None:
                self.media.withdraw_repeated_offer(side)
            log.info(
                "call %s: cannot take the %s leg off hold (%s)",
                self.id,
                side.upper(),
                type(exc).__name__,  # never the text: a key exchange's may hold keys
            )
            return False
        tag = await self._reinvite_with_repeated_offer(transferee, side, offer, "join-resume")
        if tag is None:
            return False
        transfer.join_resume = tag
        transfer.deadline = trio.current_time() + 64 * self.config.sip.t1
        return True

    async def _transferee_resumed(self, tag: InDialogRequest, response: Response) -> None:
        """The transferee's final response to our re-INVITE taking it off hold
        (:meth:`_resume_transferee`): the carrier is joined either way, so the transfer
        completes; a refusal leaves the transferee as it was (RFC 3261 §14.1), said in the
        log, and one that says its dialog is gone ends the call (:meth:`_session_lost`)."""
        transfer = self._transfer
        if transfer is None or transfer.join_resume is not tag:
            await self._resend_reinvite_ack(tag.side, response)
            return
        assert self.media is not None
        transfer.join_resume, transfer.deadline = None, math.inf
        transferee = self._leg(tag.side)
        assert transferee.security is not None and transferee.dialog is not None
        side: Literal["a", "b"] = "a" if tag.side is Side.A else "b"
        if not response.is_success:
            transferee.security.offer_refused()
            self.media.repeated_offer_refused(side)
            log.info(
                "call %s: the %s leg refused to be taken off hold: %d %s",
                self.id,
                side.upper(),
                response.status,
                response.reason,
            )
            await self._complete_transfer()
            what = f"re-INVITE to the {side.upper()} leg"
            await self._session_lost(tag.side, "INVITE", response, what=what)
            return
        transferee.session_timer = self._refreshed_by_2xx(transferee, response)
        try:
            flow = await self._leg_flow(transferee)
            via = self.endpoint.new_via(flow)  # OSError: no listener of its transport left
        except OSError as exc:
            await self._complete_transfer()
            await self._hang_up(f"signalling failed: {transport_error_text(exc)}")
        ack = transferee.dialog.create_ack(response.cseq.number, via=via)
        self._reinvite_acks[tag.side] = ack
        try:
            plain = transferee.security.take_answer(parse_sdp_untrusted(sdp_body(response)))
            self._note_recordpref(transferee, sdp_body(response))
            self.media.answer_to_repeated_offer(
                side, plain, rtcp_mux_offered=transferee.security.offers_rtcp_mux
            )
            self._apply_keys(self.b)
            await self.media.applied()
        except Exception as exc:
            # A 2xx's answer cannot be refused (RFC 3264 §8): ACK, then BYE (§13.2.2.4).
            failure = self._answer_failed(exc, "answer to re-INVITE")
            await self.endpoint.send_ack(ack, flow)
            await self._complete_transfer()
            await self._hang_up(failure.reason, cause=failure.status)
        await self.endpoint.send_ack(ack, flow)
        await self._complete_transfer()

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
        elif purpose == "join-offer":
            assert transfer.answered is not None
            failure = await self._join_with_our_offer(transfer, transfer.answered, None)
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
        event.sent = self.media.last_sent(event.give.value) if self.media is not None else None
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
            request = identity.signed(cast("Call", self), trunk, request, for_account=account)
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
            if response.status == 100:
                # Posted only for a leg whose CANCEL waits for it (RFC 3261 §9.1).
                if leg.cancel_wanted and not leg.cancelled:
                    await self._cancel_b(leg)
                return
            if not await self._prack_b(leg, response):
                return
            leg.provisional_seen = True
            if leg.cancel_wanted and not leg.cancelled:
                await self._cancel_b(leg)
            elif calling:
                assert transfer is not None
                transfer.deadline = trio.current_time() + self.config.sip.ring_timeout
                self._ring_transferee(transfer)
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

    def _ring_transferee(self, transfer: Transfer) -> None:
        """A device of the target rings (its first 1xx but 100): the transferee hears the
        ringing tone ``[media] ringback_tone`` in place of the transferor's media, until the
        target answers or the transfer fails (:mod:`gateway.core.media.tones`: its dialog is
        confirmed, no 180 of the target can reach it, RFC 3261 §13.2.2.4). Once per transfer;
        where it cannot play (a held leg that said inactive, no G.711) the log says why, and
        it waits for a re-INVITE that changes that (:meth:`_ringing_tone_after_change`)."""
        plan = self.config.media.ringback_tone
        if transfer.ringing_tone is not None or self.media is None or plan == "none":
            return
        side = transfer.side.other
        why_not = self.media.play_ringback(side.value, plan)
        transfer.ringing_tone = "playing" if why_not is None else "waiting"
        if why_not is None:
            log.info(
                "call %s: ringing tone (%s) to the %s leg while the transfer target rings",
                self.id,
                plan,
                side.value.upper(),
            )
        else:
            log.info(
                "call %s: no ringing tone to the %s leg: %s", self.id, side.value.upper(), why_not
            )

    def _ringing_tone_after_change(self) -> None:
        """A relayed re-INVITE's exchange settled: while the target rings, the transfer's
        ringing tone follows the transferee's SDP in force (:meth:`MediaSession.replan_ringback`).
        Playing, it plays again, as a new RTP stream, in the law and number a new offer or
        answer gives; or it stops where that SDP says the transferee receives nothing (a hold
        that says inactive, RFC 3264 §6.1) or takes no G.711 any more, the transferor's media
        relayed to it again. Stopped so, or never started so, it starts once that SDP lets it
        (the transferee resumed)."""
        transfer = self._transfer
        if transfer is None or self.media is None:
            return
        side = transfer.side.other
        if transfer.ringing_tone == "waiting":
            plan = self.config.media.ringback_tone
            if self.media.play_ringback(side.value, plan) is None:
                transfer.ringing_tone = "playing"
                log.info(
                    "call %s: ringing tone (%s) to the %s leg now: its SDP changed",
                    self.id,
                    plan,
                    side.value.upper(),
                )
            return
        if transfer.ringing_tone != "playing":
            return
        changed, why_not = self.media.replan_ringback()
        if not changed:
            return
        leg = side.value.upper()
        if why_not is None:
            log.info("call %s: ringing tone to the %s leg again: its SDP changed", self.id, leg)
        else:
            transfer.ringing_tone = "waiting"
            log.info("call %s: ringing tone to the %s leg stopped: %s", self.id, leg, why_not)

    def _stop_ringing_tone(self, transfer: Transfer, why: str) -> None:
        """The transfer's ringing tone, if it plays, stops: the transferee hears what the
        other side sends again (the target's media once its re-INVITE is through, or the
        transferor's if the transfer failed)."""
        playing = transfer.ringing_tone == "playing"
        if transfer.ringing_tone is not None:
            transfer.ringing_tone = "over"  # the target rings no more
        if not playing or self.media is None:
            return
        if self.media.stop_tone():
            side = transfer.side.other.value.upper()
            log.info("call %s: ringing tone to the %s leg stopped: %s", self.id, side, why)

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
        self._stop_ringing_tone(transfer, "the target answered")
        # Its SDP (our ACK's answer, the re-INVITEs to come) tells it the recording's state
        # only if it is recording-aware itself (RFC 7866 §6.1), whatever the transferor was.
        self._note_record_aware(leg, response, transfer.side)
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
            sdp = sdp_body(leg.final)
            if not sdp:
                raise SdpError("2xx without SDP offer to our INVITE without SDP")
            # The target's dialog is its own (RFC 3264 §8 counts m= lines per dialog): a
            # phone without video takes a video call's transfer, its video line removed. A
            # joined carrier's dialog had the consultation call's SDP of ours: our answer
            # there goes on from its o= line.
            plain = self.media.offer_from(
                transfer.side.value,
                leg.security.take_offer(parse_sdp_untrusted(sdp)),
                dtmf_info=leg.security.dtmf_info,
                new_dialog=True,
                dialog_sent=transfer.joined_sent,
            )
            offer = transferee.security.make_offer(plain)
        except (SdpError, PortsExhausted) as err:
            # Nothing went to the transferee: its next SDP has the version after its last one
            # (RFC 3264 §8).
            self.media.withdraw_offer()
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
            # Not sent: neither the session's SDP nor the transferee's keys and o= version
            # took it.
            transferee.security.withdraw_offer()
            self.media.withdraw_offer()
            await self._end_transfer(503, "Service Unavailable")
            return
        transfer.reinvite = tag
        transfer.deadline = trio.current_time() + 64 * self.config.sip.t1

    async def _transferee_answered(self, tag: InDialogRequest, response: Response) -> None:
        """The transferee's final response to the re-INVITE with the target's offer: a 2xx
        completes the transfer (its answer goes to the target in our ACK); a refusal fails
        it and the call goes on as before (408 or 481, more with ``[sip] in_dialog_failures =
        "strict"``: the transferee is gone, the call ends, :meth:`_session_lost`)."""
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
            if transferee.security is not None:
                # Sent: its o= version stays taken (RFC 3264 §8).
                transferee.security.offer_refused()
            if response.status == 491 and self._again_after_glare(transfer, "transfer", transferee):
                return
            await self._end_transfer(response.status, response.reason)
            # The transferee's session is gone (481, 408; RFC 5057 §5.1's other endings with
            # in_dialog_failures = "strict"): the call ends as after any in-dialog request so
            # answered, with the status as the BYE's cause and no BYE into a dialog the
            # transferee said it no longer has (_session_lost).
            what = f"re-INVITE to the {side} leg"
            await self._session_lost(tag.side, "INVITE", response, what=what)
            return
        assert transferee.dialog is not None and transferee.security is not None
        assert leg.security is not None and leg.dialog is not None and leg.final is not None
        try:
            flow = await self._leg_flow(transferee)
            via = self.endpoint.new_via(flow)  # OSError: no listener of its transport left
        except OSError as exc:
            # Nothing we received is in hand (the REFER has its 202; the transferor hears of
            # the failure in a NOTIFY). The transferee took the target's offer but cannot be
            # ACKed: it ends its dialog after 64*T1 (RFC 3261 §13.3.1.4) and the legs would
            # disagree, so the transfer fails and the call ends; the target's 2xx is ACKed
            # and BYEd with the rest (_end_transfer). The transferor's NOTIFY and the target's
            # ACK go first, even should abandoning the offer raise (the catch-all in run()
            # would end the call without them).
            log.info("call %s: cannot ACK the transferee: %s", self.id, transport_error_text(exc))
            await self._end_transfer(503, "Service Unavailable", call_ends=True)
            self.media.abandon_offer()
            await self._hang_up(f"signalling failed: {transport_error_text(exc)}")
        ack = transferee.dialog.create_ack(response.cseq.number, via=via)
        self._reinvite_acks[tag.side] = ack
        transferee.session_timer = self._refreshed_by_2xx(transferee, response)
        legs = self.a, self.b  # the transferor's among them until _take_over
        try:
            plain = self.media.answer_from(
                tag.side.value,
                transferee.security.take_answer(parse_sdp_untrusted(sdp_body(response))),
                rtcp_mux_offered=transferee.security.offers_rtcp_mux,
            )
            self._note_recordpref(transferee, sdp_body(response))
            answer = leg.security.make_answer(plain)
            self.media.settle()
            self._take_over(transfer)
            # The target's leg offered in its 2xx; our answer goes in our ACK: our ClientHello
            # follows it (RFC 5763 §5).
            self._hold_answer(transfer.side)
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
        self._answer_went(transfer.side)
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
        # The party now on that side is told (or not) by what it says itself (RFC 7866 §6.1),
        # and its preference is its own (§7.2): none stated is no preference, not the
        # transferor's.
        party = self._leg(transfer.side)
        self._note_record_aware(party, leg.final, transfer.side)
        self._note_recordpref(party, sdp_body(leg.final), replacing=departing.recordpref)
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
        self._stop_ringing_tone(transfer, f"the transfer failed ({status})")
        for leg in transfer.legs:
            if leg.final is None:
                await self._cancel_b(leg)
        if transfer.answered is not None:
            await self._bye(transfer.answered, f"transfer failed: {status} {reason}")
        if transfer.moved_count is not None:
            self.manager.limits.release_one(self, transfer.moved_count)  # that leg is gone
        self._record_transfer(transfer, status, reason)
        if transfer.answered is not None:  # the transferor's side is its own again
            self._indicate_to(self._leg(transfer.side), transfer.side)
        if transfer.transferor_left and not call_ends:
            await self._hang_up(f"transfer to {transfer.target} failed: {status} {reason}")
        await self._notify(transfer, status, reason)

    def _record_transfer(self, transfer: Transfer, status: int, reason: str) -> None:
        log.info(
            "call %s: transfer of the %s leg to %s: %d %s",
            self.id,
            transfer.side.value.upper(),
            redact_password(transfer.target),  # redacted when made; the scan checks it here
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
        # `voipgw calls` reads the live call's record: save it again, with the transfer and
        # the legs the call has now (docs/transfers.md), not only once the call ends.
        self.manager.security_changed(cast("Call", self))
        # For observers (CDR writers, billing): who left, who came in, or why not.
        side = transfer.side.value.upper()
        if status == 200:
            self.manager.event(
                cast("Call", self), "transferred", f"{side} leg to {transfer.target}"
            )
        else:
            self.manager.event(
                cast("Call", self), "transfer-failed", f"{side} leg: {status} {reason}"
            )

    async def _notify(self, transfer: Transfer, status: int, reason: str) -> None:
        """Tell the transferor how the transfer fares (RFC 3515 §2.4.4-2.4.5): a NOTIFY in its
        dialog per new status, the last one (final) ending the implicit subscription. Not when
        it asked for none (RFC 4488) or has hung up."""
        leg = transfer.transferor
        if not transfer.notify or transfer.transferor_left or leg.dialog is None:
            return
        if leg.dialog.state is DialogState.TERMINATED or status <= transfer.notified:
            return
        transfer.notified, transfer.notified_reason = status, reason
        left = math.ceil(transfer.subscribed_until - trio.current_time())
        state = subscription_state(status >= 200, expires=max(left, 1))
        await self._send_transfer_notify(transfer, state)

    async def _send_transfer_notify(self, transfer: Transfer, state: str) -> None:
        """A NOTIFY of the transfer's latest status (:attr:`Transfer.notified`) to the
        transferor, with Subscription-State ``state``."""
        leg = transfer.transferor
        await self._send_in_dialog(
            leg,
            "NOTIFY",
            body=sipfrag(transfer.notified, transfer.notified_reason),
            content_type=SIPFRAG,
            tag=InDialogRequest("notify", leg.side),
            extra=[
                ("Event", f"refer;id={transfer.refer_cseq}"),
                ("Subscription-State", state),
            ],
            forward=False,  # nothing waits for its answer
        )

    async def _refer_subscribe(self, event: RequestEvent) -> None:
        """A SUBSCRIBE in a leg's dialog: the transferor refreshing the implicit subscription
        of its REFER (RFC 3515 §2.4.4; RFC 6665 §4.1.2.2: before it runs out, which our
        NOTIFYs say, SUBSCRIPTION_SECONDS, while a target may ring for ``[sip] ring_timeout``)
        or ending it (``Expires: 0``, §4.1.2.3). 200 with the Expires granted (at most
        SUBSCRIPTION_SECONDS), then a NOTIFY with the transfer's latest status (§4.2.1.2: a
        notifier that accepts a SUBSCRIBE sends one); an ended subscription's says
        ``terminated`` and no NOTIFY follows it, while the transfer goes on (ending the
        subscription ends nothing of the referenced request). 489 Bad Event (with
        ``Allow-Events: refer``) for another package; 481 when no transfer of that leg's is in
        progress with its subscription (done, refused NOTIFYs with ``Refer-Sub: false``, or
        another REFER's ``id``). Before session 51: 501, and a transferor that refreshed as
        it should while the target rang past a minute was told its subscription was gone."""
        request = event.request
        transferor = self._leg(event.side)
        try:
            package = parse_event_untrusted(request.headers.get("Event"))
            asked = parse_expires_untrusted(
                request.headers.get("Expires"), default=SUBSCRIPTION_SECONDS
            )
        except RemoteSipError as err:
            refused = make_response(request, err.status or 400, err.reason)
            await self.endpoint.respond(event.transaction, refused)
            return
        if package.package != "refer":
            refused = make_response(request, 489, extra=[("Allow-Events", "refer")])
            await self.endpoint.respond(event.transaction, refused)
            return
        transfer = self._transfer
        if (
            transfer is None
            or transfer.transferor is not transferor
            or not transfer.notify
            or (package.id is not None and package.id != str(transfer.refer_cseq))
        ):
            await self.endpoint.respond(event.transaction, make_response(request, 481))
            return
        granted = min(asked, SUBSCRIPTION_SECONDS)
        extra = [("Expires", str(granted)), ("Contact", str(transferor.contact))]
        await self.endpoint.respond(event.transaction, make_response(request, 200, extra=extra))
        if granted == 0:
            transfer.notify = False  # no NOTIFY after the one that ends it
            state = "terminated"
        else:
            transfer.subscribed_until = trio.current_time() + granted
            state = subscription_state(False, expires=granted)
        log.info(
            "call %s: the %s leg %s its subscription to the transfer's progress",
            self.id,
            event.side.value.upper(),
            "ended" if granted == 0 else f"refreshed ({granted} s)",
        )
        await self._send_transfer_notify(transfer, state)

    def _transfer_due(self) -> float:
        """When a transfer's target has rung or its re-INVITE waited long enough, one of its
        devices behind a trunk has not responded for the trunk's ``response_timeout``, or a
        departed transferor is to be BYEd."""
        due = min((at for _, at in self._departed), default=math.inf)
        transfer = self._transfer
        if transfer is None:
            return due
        if self._notifies(transfer):
            due = min(due, transfer.subscribed_until)
        if transfer.answered is None:
            due = min(due, min((leg.response_deadline for leg in transfer.legs), default=due))
        return min(due, transfer.deadline, transfer.glare_retry_at)

    async def _transfer_timers(self, now: float) -> None:
        for departed in [d for d in self._departed if d[1] <= now]:
            self._departed.remove(departed)
            await self._bye(departed[0], "call transferred")
        transfer = self._transfer
        if transfer is not None and self._notifies(transfer) and now >= transfer.subscribed_until:
            await self._subscription_expired(transfer)
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
        if transfer.join_resume is not None:
            # Our re-INVITE taking the transferee off hold got no final response: the carrier
            # is joined all the same (as refused, §14.1).
            resumed: Literal["a", "b"] = "a" if transfer.join_resume.side is Side.A else "b"
            transferee = self._leg(transfer.join_resume.side)
            transfer.join_resume = None
            assert self.media is not None
            if transferee.security is not None:
                transferee.security.offer_refused()
            self.media.repeated_offer_refused(resumed)
            await self._complete_transfer()
            return
        if transfer.reinvite is None:  # the target's devices rang for [sip] ring_timeout
            carrier = transfer.answered
            if transfer.join_offer is not None and carrier and carrier.security is not None:
                # Our offer to a joined carrier got no final response: as refused (§14.1).
                assert self.media is not None
                carrier.security.offer_refused()
                self.media.repeated_offer_refused("a" if transfer.side is Side.A else "b")
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

    def _notifies(self, transfer: Transfer) -> bool:
        """Whether the transferor's subscription to the transfer's progress is still on: it
        asked for one (RFC 4488), has not ended it or hung up, and its dialog is up."""
        leg = transfer.transferor
        return (
            transfer.notify
            and not transfer.transferor_left
            and leg.dialog is not None
            and leg.dialog.state is not DialogState.TERMINATED
        )

    async def _subscription_expired(self, transfer: Transfer) -> None:
        """The transferor did not refresh its subscription in time (RFC 6665 §4.1.2.2; it
        runs SUBSCRIPTION_SECONDS from the REFER or the last refreshing SUBSCRIBE): a last
        NOTIFY with the latest status says ``terminated;reason=timeout`` (§4.2.2), and none
        follows it; the transfer goes on (ending the subscription ends nothing of the
        referenced request, RFC 3515 §2.4.4). Before session 52 the NOTIFYs went on until the
        final one, minutes after the subscription had run out."""
        transfer.notify = False
        log.info(
            "call %s: the %s leg's subscription to the transfer's progress ran out",
            self.id,
            transfer.side.value.upper(),
        )
        await self._send_transfer_notify(transfer, "terminated;reason=timeout")

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

    def _transfer_leftovers(self) -> bool:
        """Whether :meth:`_bye_transfer_leftovers` has a leg to BYE or a transfer to drop."""
        return bool(self._departed) or self._transfer is not None

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
