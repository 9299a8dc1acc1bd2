"""A ringing call picked up by an account's phone (pickup.py says who may pick up what).

The picker's INVITE with a ``Replaces`` naming our early dialog with a ringing phone (RFC 3891
§3), or dialled as a feature code: the picker takes the place of a callee that answered, the
phones that rang are CANCELled as answered elsewhere. Its offer and our offer to the ringing
phones are each answered with the other; a caller that made no offer (§13.2.1, delayed offer)
gets the picker's offer in our 200 and the picker its answer once A's ACK brings it. A call no
longer ringing refuses the picker (486, 481, or 480 for a dialled pickup).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn, cast

from gateway.core.calls.answer import CallAnswer
from gateway.core.calls.base import ALLOW, SDP, log, wants_privacy
from gateway.core.calls.events import PickUpEvent, warning_header
from gateway.core.calls.leg import BLeg, Side
from gateway.core.calls.pickup import NO_CALL_TO_PICK_UP
from gateway.core.calls.ringing import ANSWERED_ELSEWHERE
from gateway.core.media.errors import PortsExhausted
from gateway.core.sdp.body import UnsupportedBody, read_body
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.offer_answer import answer_with
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip.dialog import Dialog, contact_must_be_sips, require_contact
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.session_timer import IntervalTooSmall, UasAnswer, allows_update
from gateway.core.sip.transaction import TransactionStateError
from gateway.core.transport.flows import TLS_TRANSPORTS

if TYPE_CHECKING:
    from gateway.core.calls.call import Call


class CallPickedUp(CallAnswer):
    """The call picked up by an account's phone (the module's docstring)."""

    async def _picked_up(self, event: PickUpEvent) -> None:
        """An account's phone picks up this ringing call (pickup.py): it takes the place of a
        callee that answered. Its INVITE's offer and our offer to the ringing phones are
        each answered with the other (:func:`answer_with`): the caller gets our 200 with the
        answer through its leg's keys, as for any callee's answer; the picker's phone gets
        our 200 with the relay's side B, through keys of its own leg. The phones that rang get
        CANCEL with "Call completed elsewhere" (RFC 3326; RFC 3891 §3: we initiated those
        early dialogs, so we end them with CANCEL). A caller that made no offer gets the
        picker's (:meth:`_picked_up_offering`)."""
        request, flow = event.request, event.flow
        picked = event.leg
        offer_b = self._offer_b
        if self.state != "ringing" or self.b is not None or picked.finished:
            await self._refuse_pickup(event)
            return
        try:
            # Its Contact is the remote target of the dialog our 200 makes (RFC 3261 §12.1.1):
            # an INVITE without one is refused as A's would be (§8.1.1.8), and the call rings on.
            require_contact(request)
        except RemoteSipError as err:
            bad = make_response(request, 400, f"Bad Request ({err.reason})")
            await self._answer_pickup(event, bad)
            return
        assert self.media is not None and self.a.security is not None
        name = event.caller.name
        picker = BLeg(
            side=Side.B,
            flow=flow,
            transport=flow.transport,
            address=flow.remote,
            # The picker joins the caller's call: of a secure one (or asking with sips:
            # itself, RFC 3261 §12.1.1) over TLS, as a callee would have been, so our Contact
            # is sips: for its requests to come back over TLS too (RFC 5630 §3.1.3). A picker
            # off TLS never gets here for a secure call (CallManager refuses it).
            contact=self.endpoint.our_contact(
                flow.transport,
                sips=flow.secure and (self.secure or contact_must_be_sips(request)),
            ),
            peer_kind="account",
            peer_name=name,
            auth=event.caller.auth,  # its own INVITE's credentials
            relayed_by=self.manager.relayed_by(request, flow),
            shown_as=name or "anonymous",
            private=wants_privacy(request),
        )
        picker.security = self.manager.leg_security(
            cast("Call", self),
            Side.B,
            kind="account",
            name=name,
            flow=flow,
            device=event.caller.device,
        )
        # The picker's leg is one we answer, as A's: its session timer is what our 2xx states
        # (RFC 4028 §9), refused 400 or 422 as on A's INVITE.
        picker.allows_update = allows_update(request.headers)
        self._note_record_aware(picker, request)
        try:
            timer = self._timer_of(request, picker)
        except RemoteSipError as err:
            await self._answer_pickup(
                event, make_response(request, 400, f"Bad Request ({err.reason})")
            )
            return
        if isinstance(timer, IntervalTooSmall):
            too_small = make_response(request, 422, extra=[("Min-SE", str(timer.min_se))])
            await self._answer_pickup(event, too_small)
            return
        # The call moves from the ringing account to the picker's: counted against the
        # picker's max_calls (a phone at its limit is busy for this call as for any), and no
        # longer against the account whose phone rang. Taken before the media session changes.
        ringing = picked.target.account if picked.target is not None else None
        moving_to = ("account", name) if name is not None and name != ringing else None
        if moving_to is not None:
            why = self.manager.limits.take(self, moving_to)
            if why is not None:
                log.info("call %s: pickup by %s refused: at its %s", self.id, name, why)
                busy = make_response(request, 486, f"Busy Here (account {why})")
                await self._answer_pickup(event, busy)
                return
        if offer_b is None:
            await self._picked_up_offering(event, picker, timer, moving_to, ringing)
            return
        try:
            offer = self._pickers_offer(picker, request)
            # On a browser's leg our offer would have had a=rtcp-mux whatever the caller's
            # said: the picker's leg muxes on its own, the caller's stays as it is.
            offered_here = picker.security.as_offered_here(offer_b)
            plain_to_picker = answer_with(offer, offered_here)
            to_picker = picker.security.make_answer(plain_to_picker)
            # The caller's answer has the caller's numbers (RFC 3264 §6.1), the picker's its
            # own: where they differ (telephone-event 101 and 96) the relay renumbers.
            answer_a = self.a.security.make_answer(
                self.media.answer_from(
                    Side.B.value,
                    answer_with(offered_here, offer),
                    numbering=offer,
                    rtcp_mux_offered=picker.security.offers_rtcp_mux,
                )
            )
            # What the picker's leg was told: later offers on it keep its numbers and o= line.
            self.media.sent_elsewhere(Side.B.value, plain_to_picker)
            # Both answers start associations (RFC 5763 §5) whose ClientHellos, ours when we
            # answered active, must follow them: released as our 200s go.
            self._hold_answer(Side.B)
            self._hold_answer(Side.A)
        except (SdpError, UnsupportedBody, PortsExhausted) as err:
            await self._refuse_picker(event, picker, err, moving_to)
            return
        except Exception as exc:
            await self._pickup_failed(event, exc)
        if moving_to is not None and ringing is not None:
            self.manager.limits.release_one(self, ("account", ringing))
        ok = self._picker_ok(picker, request, timer, to_picker)
        try:
            await self._picker_joins(picker, picked)
        except Exception as exc:  # the relay failing to take the picker's keys
            await self._pickup_failed(event, exc)
        self._start_2xx_retransmission(Side.B, ok)  # until its ACK (RFC 3261 §13.3.1.4)
        await self._answer_pickup(event, ok)
        self._answer_went(Side.B)
        picker.session_timer = self._started(timer)
        self.a.session_timer = self._started(self._a_timer)
        await self._answer_a(
            self._a_response(200, body=serialize_sdp(answer_a), extra=self._a_timer.headers())
        )

    def _picker_ok(
        self, picker: BLeg, request: Request, timer: UasAnswer, answer: SessionDescription
    ) -> Response:
        """Our 200 to the picker's INVITE with ``answer``, and the picker's leg's dialog it
        makes, known to the manager from now on."""
        fields = [("Contact", str(picker.contact)), ("Allow", ALLOW), *timer.headers()]
        fields.extend(("Record-Route", rr) for rr in request.headers.get_all("Record-Route"))
        ok = make_response(
            request,
            200,
            to_tag=self.manager.gateway.ids.new_tag(),
            extra=fields,
            body=serialize_sdp(answer),
            content_type=SDP,
        )
        over_tls = picker.transport in TLS_TRANSPORTS
        picker.dialog = Dialog.create_uas(request, ok, over_tls=over_tls)
        # Its INVITE came to us: no final response of its own (one would be ACKed, _bye), and
        # nothing to wait for at the end (_drain_b_legs), as a caller's leg handed over.
        self.manager.register_leg(
            cast("Call", self), Side.B, request.call_id, picker.dialog.local_tag
        )
        return ok

    async def _picker_joins(self, picker: BLeg, picked: BLeg) -> None:
        """``picker`` is the call's callee now: the record says so, its keys apply, and the
        phones that rang are CANCELled, answered elsewhere."""
        log.info(
            "call %s: %s picks up the call ringing %s", self.id, picker.peer_name, picked.peer_name
        )
        self.b_legs.append(picker)
        self.b = picker
        self.picked_up = {"by": picker.peer_name, "ringing": picked.peer_name}
        self._apply_keys(picker)
        assert self.media is not None
        await self.media.applied()  # before our 200 lets the picker send
        for other in self.b_legs:
            if other is not picker and other.final is None:
                await self._cancel_b(other, ANSWERED_ELSEWHERE)

    async def _picked_up_offering(
        self,
        event: PickUpEvent,
        picker: BLeg,
        timer: UasAnswer,
        moving_to: tuple[str, str] | None,
        ringing: str | None,
    ) -> None:
        """A pickup of a call whose caller made no offer (RFC 3261 §13.2.1, a carrier's
        delayed offer): the picker's offer goes to the caller in our 200, as a callee's offer
        in its 2xx would (:meth:`_b_offered`), and the picker gets our 200 with the answer A's
        ACK brings (:meth:`_answer_picker`)."""
        assert self.media is not None and self.a.security is not None
        assert picker.security is not None
        request = event.request
        try:
            offer = self._pickers_offer(picker, request)
            offer_a = self.a.security.make_offer(
                self.media.offer_from(Side.B.value, offer, dtmf_info=picker.security.dtmf_info)
            )
        except (SdpError, UnsupportedBody, PortsExhausted) as err:
            await self._refuse_picker(event, picker, err, moving_to)
            return
        except Exception as exc:
            await self._pickup_failed(event, exc)
        if moving_to is not None and ringing is not None:
            self.manager.limits.release_one(self, ("account", ringing))
        event.done.set()  # taken: the manager does not answer it 481
        try:
            await self._picker_joins(picker, event.leg)
        except Exception as exc:
            await self._pickup_failed(event, exc)
        self._pickup_waiting = (event, timer)
        self.a.session_timer = self._started(self._a_timer)
        await self._offer_in_2xx_to_a(offer_a)

    def _pickers_offer(self, picker: BLeg, request: Request) -> SessionDescription:
        """The offer in the picker's INVITE, through its leg's key exchange; SdpError (or
        UnsupportedBody) when it has none we can take."""
        assert picker.security is not None
        sdp, _ = read_body(request.content_type, request.body)
        if not sdp:
            raise SdpError("an INVITE picking up a call needs an SDP offer")
        offer = picker.security.take_offer(parse_sdp_untrusted(sdp))
        self._note_recordpref(picker, sdp)
        return offer

    async def _refuse_picker(
        self,
        event: PickUpEvent,
        picker: BLeg,
        err: SdpError | PortsExhausted,
        moving_to: tuple[str, str] | None,
    ) -> None:
        """The picker's bad SDP (488), or no media ports left (503: the node is full, RFC
        3261 §21.5.4, as for a caller's INVITE): refused, the account it was to count against
        freed, and the call rings on. Neither is a bug to end the call for (_pickup_failed)."""
        reason = err.reason if isinstance(err, SdpError) else "no free media ports"
        log.info("call %s: pickup by %s refused: %s", self.id, picker.peer_name, reason)
        if moving_to is not None:
            self.manager.limits.release_one(self, moving_to)
        status, phrase = (
            (503, "Service Unavailable")
            if isinstance(err, PortsExhausted)
            else (488, "Not Acceptable Here")
        )
        refusal = make_response(
            event.request, status, phrase, extra=[("Warning", warning_header(reason))]
        )
        await self._answer_pickup(event, refusal)

    async def _answer_picker(self, ack: Request) -> None:
        """A's ACK brought the answer to the picker's offer (:meth:`_picked_up_offering`): the
        picker's INVITE gets our 200 with it, and the call is up. An ACK without a usable
        answer ends the call; the picker gets 488."""
        assert self._pickup_waiting is not None and self.b is not None
        assert self.media is not None and self.a.security is not None
        event, timer = self._pickup_waiting
        picker, request = self.b, event.request
        assert picker.security is not None
        try:
            to_picker = picker.security.make_answer(self._answer_in_ack_of_a(ack))
            self._hold_answer(Side.B)  # our ClientHello follows our 200 (RFC 5763 §5)
        except Exception as exc:
            failure = self._answer_failed(exc, "answer in A's ACK")
            self._pickup_waiting = None
            self.state = "answered"
            # Answered before the offer is abandoned, which might raise too: nothing else
            # would answer the picker (_pickup_waiting is cleared).
            refusal = failure.response_to(request)
            await self._answer_pickup(event, refusal)
            self.media.abandon_offer()
            await self._hang_up(failure.reason, cause=failure.status)
        self._pickup_waiting = None
        ok = self._picker_ok(picker, request, timer, to_picker)
        picker.session_timer = self._started(timer)
        # The picker may send as soon as our 200 reaches it: its keys and the relay first.
        self._up_with(picker)
        await self.media.applied()
        self._start_2xx_retransmission(Side.B, ok)  # until its ACK (RFC 3261 §13.3.1.4)
        await self._answer_pickup(event, ok)
        self._answer_went(Side.B)

    async def _refuse_pickup(self, event: PickUpEvent) -> None:
        """The call is no longer ringing: 486 when the phone it named answered (RFC 3891 §3),
        else 481; 480 "no call to pick up" for a dialled pickup (the phone named no dialog)."""
        if event.dialled:
            status, reason = NO_CALL_TO_PICK_UP
        elif self.b is event.leg:
            status, reason = 486, "Busy Here (answered already)"
        else:
            status, reason = 481, None
        await self._answer_pickup(event, make_response(event.request, status, reason))

    async def _pickup_failed(self, event: PickUpEvent, exc: Exception) -> NoReturn:
        """Making our answer or offer for a phone picking the call up (or the relay taking
        its keys) raised ``exc``: not its bad SDP, which is refused 488 while the call rings
        on, but a bug of ours or of a key-exchange plugin (:meth:`_answer_failed` logs it once
        and says which). The picker's INVITE gets 500 with a Warning at once, rather than the
        manager's 481 once it gives up waiting; the call ends, the caller getting 500 too and
        the phones that rang CANCEL (:meth:`_drain_b_legs`)."""
        failure = self._answer_failed(exc, "picker's offer")
        await self._answer_pickup(event, failure.response_to(event.request))
        await self._reject_a(failure.status, failure.phrase, failure.warning)

    async def _answer_pickup(self, event: PickUpEvent, response: Response) -> None:
        event.done.set()
        try:
            await self.endpoint.respond(event.transaction, response)
        except TransactionStateError:  # answered already (the manager gave up waiting)
            log.debug("call %s: pickup INVITE answered already", self.id)
