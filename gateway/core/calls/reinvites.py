"""Requests inside an established call: re-INVITE and UPDATE relayed, others passed on.

A re-INVITE is relayed with its SDP rewritten through both legs' security (hold/resume), one at
a time (491 while one is pending, RFC 3261 §14.1); one without SDP is relayed as a late offer
(§14.1, §13.2.1: its 2xx's offer goes to the requester, whose ACK brings the answer). A relayed
re-INVITE or request whose answer ends the other leg's session (RFC 3261 §12.2.1.2: 481 or
408, sip/usages.py), or a re-INVITE left without a final response for 64*T1, ends the call (§14.1,
``CallBase._session_lost``); 491, 488 or 500 keep it. An UPDATE (RFC 3311) is a session
refresh answered on its own leg (RFC 4028 §10), relayed as a re-INVITE when it carries an offer
(that re-INVITE's 408, the leg's or our Timer B's, reaches the UPDATE's requester as 504, or
not at all past its Timer F: RFC 4320 §4.2, SipEndpoint.respond), and turned into an UPDATE of
ours when it brings only a new location (RFC 6442). INFO, OPTIONS, MESSAGE and NOTIFY are
relayed as they are (503 while the other side is a transferor that hung up, its target not in
yet); anything else gets 501.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from gateway.core.calls.base import ACCEPT_BODIES, SDP, log, sdp_body
from gateway.core.calls.events import (
    AnswerFailure,
    CancelEvent,
    InDialogRequest,
    LocatedRequest,
    RequestEvent,
    warning_header,
)
from gateway.core.calls.leg import Leg, Side
from gateway.core.calls.location import carries_location, location_body, location_headers
from gateway.core.calls.recording_indication import CallRecordingIndication
from gateway.core.logs import transport_error_text
from gateway.core.media.errors import PortsExhausted
from gateway.core.sdp.body import UnsupportedBody, read_body
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip.dialog import DialogState
from gateway.core.sip.message import Request, Response, cancel_for, make_response
from gateway.core.sip.transaction import ServerTransaction, State


class CallReinvites(CallRecordingIndication):
    """Re-INVITE, UPDATE and other requests inside the call (the module's docstring)."""

    if TYPE_CHECKING:
        # CallTransfers' (transferring.py), whose class derives from this one. Declared for
        # the type checker only.
        def _ringing_tone_after_change(self) -> None: ...

    async def _reinvite(self, event: RequestEvent) -> None:
        request = event.request
        # 491 (RFC 3261 §14.2) for one crossing an offer of ours in progress: a relayed
        # re-INVITE, or a transfer's with the target's offer to the transferee (for the
        # transferee that is §14.2 to the letter; for the transferor, the media session has
        # that offer in progress, RFC 3264 §4: one at a time). Not for the rest of a transfer
        # with an answered target: its offer waits for this one (``deferred``) as it waits
        # for any re-INVITE in progress, and so do a join and a retry after glare. Unless the
        # transferor has hung up: relayed to its ended dialog, the re-INVITE would get 481 and
        # end the call (§14.1); the target takes its place in a moment, so 491 and try again.
        transfer = self._transfer
        transfer_busy = transfer is not None and (
            transfer.reinvite is not None
            or transfer.join_offer is not None  # our offer to a joined carrier (session 52)
            or transfer.join_resume is not None  # and the transferee's resume after it
            or (transfer.answered is not None and transfer.transferor_left)
        )
        if self._offer_in_progress() or transfer_busy:
            await self.endpoint.respond(event.transaction, make_response(request, 491))
            return
        timer = await self._session_timer_of(event)
        if timer is None:
            return  # refused for its session interval
        self._reinvite_timer = timer
        assert self.media is not None
        try:
            # Without SDP (a late offer, §14.1) the other leg's 2xx makes the offer.
            sdp, location_parts = read_body(request.content_type, request.body, request.headers)
            location = (
                self._location_update(event.side, request, location_parts)
                if carries_location(request, location_parts)
                else None
            )
            offer = self._reoffer(event.side, parse_sdp_untrusted(sdp)) if sdp else None
            self._note_recordpref(self._leg(event.side), sdp)
        except SdpError as err:
            # Refused here (by the requester's or the other leg's security): nothing went to
            # the other leg, whose next SDP has the version after its last one (RFC 3264 §8).
            self.media.withdraw_offer()
            unsupported = isinstance(err, UnsupportedBody)
            refusal = make_response(
                request,
                415 if unsupported else 488,
                extra=[
                    ("Warning", warning_header(err.reason)),
                    *([ACCEPT_BODIES] if unsupported else []),
                ],
            )
            await self.endpoint.respond(event.transaction, refusal)
            self._peer_offer_refused(event.side)
            return
        except PortsExhausted:
            await self.endpoint.respond(
                event.transaction,
                make_response(
                    request, 503, extra=[("Warning", warning_header("no free media ports"))]
                ),
            )
            self._peer_offer_refused(event.side)
            return
        except Exception as exc:
            # Our bug or a key-exchange plugin's, taking the offer or making ours for the other
            # leg: the request gets its final response now (left to the catch-all it would get
            # none, and its sender would time out), then the call ends as for an answer to a
            # re-INVITE that cannot be applied (_answer_failed).
            failure = self._answer_failed(exc, f"offer in {request.method}")
            # Answered first: should abandoning the offer raise too (a second bug), the
            # request still has its stated 500, and the catch-all in run() ends the call.
            await self.endpoint.respond(event.transaction, failure.response_to(request))
            self.media.abandon_offer()
            await self._hang_up(failure.reason, cause=failure.status)
        other = self._leg(event.side.other)
        self._pending_reinvite = (event.side, event.transaction, request)
        if location is not None and not self._passes_location(other, location):
            location = None
        sent = (
            InDialogRequest("reinvite", event.side.other)
            if location is None
            else LocatedRequest("reinvite", event.side.other, location_to=other)
        )
        body = serialize_sdp(offer) if offer is not None else b""
        content_type: str | None = SDP
        extra = [("Supported", "timer"), *self._refresh_headers(other)]
        if location is not None:
            extra += location_headers(location)
            ids = self.manager.gateway.ids
            located = location_body(location, body, lambda: ids.token_hex(8))
            if located is not None:
                body, content_type = located
        reinvite = await self._send_in_dialog(
            other,
            "INVITE",
            body=body,
            tag=sent,
            extra=extra,
            content_type=content_type,
        )
        if reinvite is None:
            # Not sent: neither the session's SDP nor the leg's keys and o= version took it.
            if offer is not None:
                other_security = other.security
                assert other_security is not None
                other_security.withdraw_offer()
            self.media.withdraw_offer()
            self._pending_reinvite = None
            await self.endpoint.respond(event.transaction, make_response(request, 503))
            self._peer_offer_refused(event.side)
            return
        self._reinvite_sent = sent
        self._reinvite_deadline = trio.current_time() + 64 * self.config.sip.t1

    async def _reinvite_cancelled(self, event: CancelEvent) -> None:
        """The requester CANCELled the re-INVITE we are relaying (a CANCEL of the call's first
        INVITE comes too late here, RFC 3261 §9.2): CANCEL ours on the other leg, whose 487
        (or a 2xx that crossed it) reaches the requester through the usual path. Before a
        provisional response came there is nothing to CANCEL yet (§9.1): its answer, or 64*T1,
        decides."""
        pending, sent = self._pending_reinvite, self._reinvite_sent
        if pending is None or sent is None or event.transaction is not pending[1]:
            return
        await self._cancel_relayed(sent)

    async def _cancel_relayed(self, sent: InDialogRequest) -> None:
        """CANCEL the re-INVITE we relayed, if it may be (RFC 3261 §9.1: after a provisional
        response, before the final one)."""
        client = sent.client
        if client is not None and client.transaction.state is State.PROCEEDING:
            await self._send_on(self._leg(sent.side), cancel_for(client.request))

    async def _reinvite_timed_out(self) -> None:
        """64*T1 and no final response to the re-INVITE we relayed: CANCEL it if a provisional
        came (RFC 3261 §9.1; without one its Timer B ends it as 408), answer the requester 504
        and end the call (§14.1), BYE on both legs."""
        sent, pending = self._reinvite_sent, self._pending_reinvite
        self._reinvite_sent, self._pending_reinvite = None, None
        self._reinvite_deadline = math.inf
        if sent is None or pending is None:
            return
        assert self.media is not None
        self.media.abandon_offer()
        await self._cancel_relayed(sent)
        _, transaction, request = pending
        seconds = 64 * self.config.sip.t1
        # 504, not 408 (_lost_answer): our BYE, not the requester, ends its side (RFC 5057
        # §5.1 would have it end its dialog on a 408, crossing that BYE).
        warning = f"the {sent.side.value.upper()} leg gave no final response in {seconds:g} s"
        timeout = make_response(request, 504, extra=[("Warning", warning_header(warning))])
        await self.endpoint.respond(transaction, timeout)
        await self._hang_up(
            f"re-INVITE to the {sent.side.value.upper()} leg got no final response in {seconds:g} s"
        )

    def _peer_offer_refused(self, side: Side) -> None:
        """The re-offer from ``side`` was answered with an error (RFC 3261 §14.1: the session
        in force stays): the negotiations its leg's security started for it are told
        (``LegSecurity.peer_offer_refused``; the dtls engine gives back a held handshake it
        took, docs/media_security.md). After the response went: a plugin that raises here
        (``KeyExchangeFailed``) ends the call, the requester answered first. The call's
        handshake task then reads its timers again: a held handshake given back is due at its
        own deadline, maybe at once, not at the later one the task waits for."""
        security = self._leg(side).security
        if security is not None:
            security.peer_offer_refused()
        if self.handshakes is not None:
            self.handshakes.poke()

    def _reoffer(self, side: Side, offer: SessionDescription) -> SessionDescription:
        """A re-offer from ``side``: through its security, the session, the other's security."""
        assert self.media is not None
        own = self._leg(side).security
        other = self._leg(side.other).security
        assert own is not None and other is not None
        plain = self.media.offer_from(side.value, own.take_offer(offer), dtmf_info=own.dtmf_info)
        offer_out = other.make_offer(plain)
        # Before the offer goes: the sockets of the offer's new DTLS associations and new
        # streams take their datagrams from now on (CallHandshakes.poke): the requester's if it
        # offered a=setup:active (it may start as it sends its offer, RFC 5763 §5), the other
        # leg's if it answers active (it may start before its answer reaches us).
        self._drive_handshakes()
        return offer_out

    async def _relay_request(self, event: RequestEvent) -> None:
        other = self._leg(event.side.other)
        request = event.request
        if other.dialog is None or other.dialog.state is DialogState.TERMINATED:
            # A transferor that hung up after its REFER (transfer.py: the transfer goes on
            # without it) until the target takes its place: nowhere to send it. 503, which ends
            # only this transaction (RFC 5057 §5.1), not 481, which would end the requester's
            # session; the call goes on.
            leg = other.side.value.upper()
            warning = warning_header(f"the {leg} leg hung up; a transfer is under way")
            refusal = make_response(request, 503, extra=[("Warning", warning)])
            await self.endpoint.respond(event.transaction, refusal)
            return
        extra = [
            (name, value)
            for name, value in request.headers.fields
            if name in ("Content-Type", "Event", "Subscription-State", "Info-Package")
        ]
        tag = InDialogRequest("relay", other.side, relayed=(event.transaction, request))
        sent = await self._send_in_dialog(
            other,
            request.method,
            body=request.body,
            extra=[e for e in extra if e[0] != "Content-Type"],
            content_type=request.content_type,
            tag=tag,
        )
        if sent is None:
            await self.endpoint.respond(event.transaction, make_response(request, 503))
            return
        self._relaying.add(tag)

    async def _reinvite_answered(
        self, answered_side: Side, response: Response, *, located: Leg | None = None
    ) -> None:
        """The final answer to the re-INVITE we relayed to ``answered_side`` (``located``: the
        leg the caller's location went to in it, RFC 6442)."""
        leg = self._leg(answered_side)
        if self._late_reinvite is not None and response.is_success:
            return  # its 2xx again: ACKed once the requester's ACK brings the answer
        if self._pending_reinvite is None:
            await self._resend_reinvite_ack(answered_side, response)
            return
        side, transaction, request = self._pending_reinvite
        self._pending_reinvite = None
        self._reinvite_sent, self._reinvite_deadline = None, math.inf
        assert leg.dialog is not None and self.media is not None
        # RFC 6442 §4.3: the trunk's word on a location update (a 2xx's too) is the caller's.
        errors = self._geolocation_errors(located, response) if located is not None else []
        if response.is_success and not sdp_body(request):  # (its body was read in _reinvite)
            await self._late_reinvite_offered(
                side, transaction, request, answered_side, response, errors
            )
        elif response.is_success:
            leg.session_timer = self._refreshed_by_2xx(leg, response)
            try:
                flow = await self._leg_flow(leg)
                via = self.endpoint.new_via(flow)  # OSError: no listener of its transport left
            except OSError as exc:
                # The leg took the offer but cannot be ACKed: the legs would disagree, so the
                # call ends (not kept, as a relay failing before the other leg took anything
                # is). The requester's re-INVITE gets its 503 first (RFC 3261 §21.5.4), even
                # should abandoning the offer raise.
                warning = warning_header(f"the {answered_side.value.upper()} leg cannot be reached")
                refusal = make_response(request, 503, extra=[("Warning", warning)])
                await self.endpoint.respond(transaction, refusal)
                self.media.abandon_offer()
                await self._hang_up(f"signalling failed: {transport_error_text(exc)}")
            ack = leg.dialog.create_ack(response.cseq.number, via=via)
            self._reinvite_acks[answered_side] = ack
            self._note_recordpref(leg, sdp_body(response))
            try:
                answering = leg.security
                offering = self._leg(side).security
                assert answering is not None and offering is not None
                plain = self.media.answer_from(
                    answered_side.value,
                    answering.take_answer(parse_sdp_untrusted(sdp_body(response))),
                    rtcp_mux_offered=answering.offers_rtcp_mux,
                )
                answer = offering.make_answer(plain)
                self.media.settle()
                self._apply_keys(self.b)
                self._ringing_tone_after_change()
                # A new DTLS association (RFC 8842 §5) starts with our answer: our
                # ClientHello of it follows our 2xx (RFC 5763 §5); one kept goes on.
                self._hold_answer(side)
                # The answer's keys, addresses and payload numbers are in the relay (and its
                # media workers) before a peer may send under them: the answerer, a cautious
                # one, once our ACK ends its transaction (RFC 3261 §13.2.2.4), the offerer once
                # our 2xx brings it the answer (RFC 3264 §8). Packets before would meet the old
                # keys (SRTP authentication fails: dropped) or go to the old address.
                await self.media.applied()
            except Exception as exc:
                # The answering leg already uses its new SDP; the legs would disagree from now
                # on, so the call cannot go on (RFC 3264 §8: a 2xx answer cannot be refused).
                # §13.2.2.4: its 2xx is still ACKed, then BYEd.
                failure = self._answer_failed(exc, "answer to re-INVITE")
                await self.endpoint.send_ack(ack, flow)
                # Answered before the offer is abandoned: its transaction is no longer the
                # call's (_pending_reinvite), so nothing would answer it should that raise.
                rejection = failure.response_to(request)
                await self.endpoint.respond(transaction, rejection)
                self.media.abandon_offer()
                await self._hang_up(failure.reason, cause=failure.status)
            await self.endpoint.send_ack(ack, flow)
            ok = make_response(
                request,
                200,
                to_tag=None,
                extra=[
                    ("Contact", str(self._leg(side).contact)),
                    *self._reinvite_timer.headers(),
                    *errors,
                ],
                body=serialize_sdp(answer),
                content_type=SDP,
            )
            self._leg(side).session_timer = self._started(self._reinvite_timer)
            if request.method == "INVITE":  # (a 2xx to UPDATE is its transaction's to resend)
                self._start_2xx_retransmission(side, ok)  # before sending: see _b_answered
            await self.endpoint.respond(transaction, ok)
            self._answer_went(side)
        else:
            self.media.abandon_offer()
            if leg.security is not None:
                leg.security.offer_refused()  # sent: its o= version stays taken (RFC 3264 §8)
            if self._ends_session("INVITE", response.status):
                # RFC 3261 §12.2.1.2: the leg's session is gone (481) or
                # it did not answer (408, also our own on Timer B): the call ends, the
                # requester answered without ending its dialog by itself (_lost_answer), the
                # trunk's word on its location with it (RFC 6442 §4.3), and then BYEd
                # (_session_lost).
                refused = self._lost_answer(request, answered_side, response, errors)
                await self.endpoint.respond(transaction, refused)
                self._peer_offer_refused(side)
                what = f"re-INVITE to the {answered_side.value.upper()} leg"
                await self._session_lost(answered_side, "INVITE", response, what=what)
                return  # a transferor's: the call goes on (_session_lost)
            refused = make_response(request, response.status, response.reason, extra=errors)
            await self.endpoint.respond(transaction, refused)
            self._peer_offer_refused(side)

    async def _resend_reinvite_ack(self, side: Side, response: Response) -> None:
        """A 2xx to a re-INVITE of ours on ``side``'s leg that we ACKed already: our ACK was
        lost, send it again (RFC 3261 §13.2.2.4)."""
        last = self._reinvite_acks.get(side)
        if response.is_success and last is not None and last.cseq.number == response.cseq.number:
            leg = self._leg(side)
            try:
                flow = await self._leg_flow(leg)
            except OSError as exc:
                log.info("call %s: cannot resend ACK: %s", self.id, transport_error_text(exc))
                return
            await self.endpoint.send_ack(last, flow)

    async def _late_reinvite_offered(
        self,
        side: Side,
        transaction: ServerTransaction,
        request: Request,
        answered_side: Side,
        response: Response,
        errors: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Our re-INVITE without SDP was answered 2xx with an offer: relay that offer to the
        requester in our 2xx (with ``errors``, the Geolocation-Error of a location update),
        and keep the answered 2xx un-ACKed until the requester's ACK brings the answer
        (:meth:`_late_reinvite_answered`; §13.2.1, §14.1)."""
        assert self.media is not None
        answering = self._leg(answered_side).security
        requester = self._leg(side).security
        assert answering is not None and requester is not None
        self._late_reinvite = (answered_side, response)
        answering_leg = self._leg(answered_side)
        answering_leg.session_timer = self._refreshed_by_2xx(answering_leg, response)
        try:
            sdp = sdp_body(response)
            if not sdp:
                raise SdpError("2xx without SDP offer to our re-INVITE without SDP")
            self._note_recordpref(answering_leg, sdp)
            plain = self.media.offer_from(
                answered_side.value,
                answering.take_offer(parse_sdp_untrusted(sdp)),
                dtmf_info=answering.dtmf_info,
            )
            offer = requester.make_offer(plain)
        except Exception as exc:
            if isinstance(exc, PortsExhausted):
                # The node is full, not the offer bad: 503 with the Warning (RFC 3261
                # §21.5.4), as everywhere else ports run out, without Retry-After
                # (docs/configuration.md). The answering leg holds a session the requester
                # cannot get, so the call ends all the same.
                failure = AnswerFailure(
                    503, "Service Unavailable", "no free media ports", "no free media ports"
                )
            else:
                failure = self._answer_failed(exc, "offer in the 2xx to a re-INVITE")
            # Answered before the offer is abandoned, which might raise too: nothing else would
            # answer it (_pending_reinvite is cleared).
            refusal = failure.response_to(request)
            await self.endpoint.respond(transaction, refusal)
            self.media.abandon_offer()
            # The 2xx is ACKed with an answer refusing its offer first (_bye, §13.2.2.4).
            await self._hang_up(failure.reason, cause=failure.status)
        ok = make_response(
            request,
            200,
            to_tag=None,
            extra=[
                ("Contact", str(self._leg(side).contact)),
                *self._reinvite_timer.headers(),
                *errors,
            ],
            body=serialize_sdp(offer),
            content_type=SDP,
        )
        self._leg(side).session_timer = self._started(self._reinvite_timer)
        self._answer_in_ack = side  # set before sending: see _b_answered
        self._start_2xx_retransmission(side, ok)
        await self.endpoint.respond(transaction, ok)

    async def _late_reinvite_answered(self, ack: Request) -> None:
        """The requester's ACK brought its answer to the offer of a late re-INVITE: ACK the
        leg that offered, with the answer. Without a usable one, §13.2.2.4: that leg's ACK
        rejects its offer (:meth:`_ack_late_reinvite`) and the call ends."""
        assert self._late_reinvite is not None and self.media is not None
        answered_side, _ = self._late_reinvite
        requester = self._leg(answered_side.other).security
        answering = self._leg(answered_side).security
        assert requester is not None and answering is not None
        try:
            sdp = sdp_body(ack)
            if not sdp:
                raise SdpError("ACK without the SDP answer to our offer")
            self._note_recordpref(self._leg(answered_side.other), sdp)
            plain = self.media.answer_from(
                answered_side.other.value,
                requester.take_answer(parse_sdp_untrusted(sdp)),
                rtcp_mux_offered=requester.offers_rtcp_mux,
            )
            answer = answering.make_answer(plain)
            self.media.settle()
            self._apply_keys(self.b)
            self._ringing_tone_after_change()
            self._hold_answer(answered_side)  # our ClientHello follows the ACK (RFC 5763 §5)
            # The offering leg may send under the new SDP once our ACK brings it the answer
            # (RFC 3264 §8): the relay (and its media workers) carries that answer first.
            await self.media.applied()
        except Exception as exc:
            side = answered_side.other.value.upper()
            failure = self._answer_failed(exc, f"answer in {side}'s ACK")
            self.media.abandon_offer()
            # The offering leg's 2xx is ACKed with an answer refusing its offer (_bye).
            await self._hang_up(failure.reason, cause=failure.status)
        await self._ack_late_reinvite(serialize_sdp(answer))
        self._answer_went(answered_side)

    def _offer_in_progress(self) -> bool:
        return (
            self._pending_reinvite is not None
            or self._late_reinvite is not None
            or self._fork_rekey is not None  # our re-key of a forked callee (fork_rekey.py)
            or self._indication is not None  # our recording indication (recording_indication.py)
        )

    async def _update(self, event: RequestEvent) -> None:
        """UPDATE (RFC 3311). Without a body it is a session refresh (RFC 4028 §10), answered on
        its own leg: 200 with the leg's new timer. With an offer in an established call it is
        relayed as a re-INVITE is (:meth:`_reinvite`); before the call is answered its offer
        gets 488 and the early session stays as it was (§5.2)."""
        request = event.request
        try:
            sdp, location_parts = read_body(request.content_type, request.body, request.headers)
        except SdpError as err:
            unsupported = isinstance(err, UnsupportedBody)
            refusal = make_response(
                request,
                415 if unsupported else 400,
                None if unsupported else f"Bad Request ({err.reason})",
                extra=[ACCEPT_BODIES] if unsupported else [],
            )
            await self.endpoint.respond(event.transaction, refusal)
            return
        offered = bool(sdp)
        if offered and self.state == "answered":
            # A media change: relayed as a re-INVITE (every device takes one), whose answer
            # comes back in our 200 to the UPDATE; 491 while another offer is pending (§5.2).
            await self._reinvite(event)
            return
        if offered:
            # (Refused, it conveys no location either: RFC 3311 §5.2, nothing changes.)
            warning = warning_header("an early UPDATE's offer is not relayed")
            refusal = make_response(request, 488, extra=[("Warning", warning)])
            await self.endpoint.respond(event.transaction, refusal)
            return
        # RFC 6442 §4.1: the caller's location, updated without an offer (a refresh of the
        # session too, once there is one). One look-up of two headers for an UPDATE without.
        location = (
            self._location_update(event.side, request, location_parts)
            if carries_location(request, location_parts)
            else None
        )
        if self.state != "answered":
            # An early dialog's UPDATE (a B leg still ringing, or A before its ACK): there is
            # no session to refresh yet.
            if location is not None and await self._location_to_early_legs(event, location):
                return  # answered with the callee's answer
            contact = self.endpoint.our_contact(event.flow.transport)
            await self.endpoint.respond(
                event.transaction, make_response(request, 200, extra=[("Contact", str(contact))])
            )
            return
        timer = await self._session_timer_of(event)
        if timer is None:
            return
        if location is not None and await self._location_to_b(event, location, timer):
            return  # answered with the other leg's answer
        leg = self._leg(event.side)
        ok = make_response(request, 200, extra=[("Contact", str(leg.contact)), *timer.headers()])
        await self.endpoint.respond(event.transaction, ok)
        leg.session_timer = self._started(timer)
