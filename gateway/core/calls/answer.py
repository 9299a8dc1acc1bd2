"""The answer: a callee's 2xx, and our 2xx to the caller.

The first 2xx wins: it is ACKed (RFC 3261 §13.2.2.4), the other B legs are CANCELled ("Call
completed elsewhere", RFC 3326) and A gets its 200 with the rewritten answer, re-sent until its
ACK; after a reliable 1xx with SDP only once A has PRACKed it (RFC 3262 §3). A callee whose
reliable 1xx carried the answer may send its 2xx without SDP (RFC 3262 §5): A's 200 carries the
SDP our 183 gave A. With a late offer (§13.2.1: A's INVITE without SDP) the callee's 2xx brings
the offer, our 200 to A carries it on, and A's ACK brings the answer for B's ACK.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import trio

from gateway.core.calls.base import sdp_body
from gateway.core.calls.events import warning_header
from gateway.core.calls.fork_rekey import CallForkRekey
from gateway.core.calls.leg import BLeg, Side
from gateway.core.calls.recording_indication import CallRecordingIndication
from gateway.core.calls.ringing import ANSWERED_ELSEWHERE
from gateway.core.media.errors import PortsExhausted
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip.dialog import Dialog, DialogState
from gateway.core.sip.message import Request, Response
from gateway.core.transport.flows import TLS_TRANSPORTS

if TYPE_CHECKING:
    from gateway.core.calls.call import Call

# Enum members read at run time, as module names: on CPython 3.11 a member read from its
# class goes through EnumType's __getattr__ hook, ~900 instructions (docs/benchmarks.md,
# sessions 44 and 45).
_S_A = Side.A
_S_B = Side.B
_D_EARLY = DialogState.EARLY


class CallAnswer(CallForkRekey, CallRecordingIndication):
    """A callee's 2xx and ours to the caller, late offer included (the module's docstring)."""

    if TYPE_CHECKING:
        # Call's state while our 2xx waits for A's PRACK (call.py): _answer_a enters it, and the
        # events it handles lead back here. Declared for the type checker only.
        async def _awaiting_prack(self) -> None: ...

    async def _answer_a_failure(self, reason: str) -> None:
        """A final error to A's INVITE if nothing answered it yet (the call ended while our 2xx
        waited for a PRACK): 480, the callee having gone, unless a 487 or 500 went already."""
        assert self.a.transaction is not None
        if self.a.transaction.final_status is None:
            warning = [("Warning", warning_header(reason))]
            await self._respond_a(self._a_response(480, "Temporarily Unavailable", extra=warning))

    async def _b_answered(self, leg: BLeg, response: Response) -> None:
        if self.late_offer:
            await self._b_offered(leg, response)
            return
        dialog = self._confirmed_dialog(leg, response)
        if self.b is not None or self.state != "ringing" or leg.given_up is not None:
            # Another leg won, or A cancelled: the CANCEL/200 race (RFC 3261 §9.1, §15); or
            # this leg was given up for want of a response and the call went to another trunk.
            await self._ack_b(leg, dialog, response)
            leg.dialog = dialog
            await self._bye(leg, "call completed elsewhere")
            return
        assert self.media is not None
        try:
            sdp = sdp_body(response)
            if sdp:
                answer = parse_sdp_untrusted(sdp)
                tag = response.to.tag or ""
                body = serialize_sdp(self._answer_via(leg, answer, tag, final=True))
            else:
                body = self._answer_taken_in_1xx(leg, response)
            leg.dialog = dialog
            self.b = leg
            if leg.security is not None:
                # No other phone's answer to our offer is taken from now on (RFC 3261
                # §13.2.2.4): the dtls engine drops what it kept for one (our offer may have
                # been forked downstream, §16.7), and the relay connects the keyed sockets.
                leg.security.answer_confirmed()
                if self.handshakes is not None:
                    self.handshakes.poke()
            self._start_session_timers(leg, response)
            self._note_record_aware(leg, response)
            self._note_answer_recordpref(leg, response)
            if not sdp:
                # The answer of a reliable 1xx (RFC 3262 §5), applied then or just now. A 2xx
                # with SDP was applied, keys included, by _answer_via above: nothing since
                # changed the legs' security or the streams, so keying again set the same
                # transforms and block flags (a third application per call).
                self._apply_keys(leg)
            # The callee may send its first packet the moment our ACK reaches it (sipp,
            # carriers' announcements do): the relay must carry its answer by then. In process
            # it does already; a media worker has it once the messages above crossed its
            # channel.
            await self.media.applied()
        except Exception as exc:
            failure = self._answer_failed(exc, "answer")
            # The record says what failed ("bad SDP answer: ..." for the callee's SDP), as the
            # BYE's Reason does, not the 488 that tells the caller (docs/architecture.md).
            self.end_reason = failure.reason
            await self._ack_b(leg, dialog, response)  # RFC 3261 §13.2.2.4: ACK, then BYE
            leg.dialog = dialog
            await self._bye(leg, failure.reason, cause=failure.status)
            await self._reject_a(failure.status, failure.phrase, failure.warning)
        await self._ack_b(leg, dialog, response)
        for other in self.b_legs:
            if other is not leg and other.final is None:
                await self._cancel_b(other, ANSWERED_ELSEWHERE)
        extra = self._a_timer.headers()
        if leg.location_passed:
            extra = [*extra, *self._geolocation_errors(leg, response)]  # RFC 6442 §4.3
        await self._answer_a(self._a_response(200, body=body, extra=extra))
        # Another forked phone's early media was keyed with our SDES keys: this one gets new
        # keys of ours (fork_rekey.py).
        await self._rekey_fork(leg, response)

    def _answer_taken_in_1xx(self, leg: BLeg, response: Response) -> bytes:
        """Our SDP for A when the callee's 2xx has none: the answer to our offer came in a
        reliable 1xx of the same early dialog (RFC 3262 §5; RFC 3261 §13.2.1 allows no new
        answer in the 2xx), which the 2xx confirms. A gets it in our 200 as our 183 gave it,
        byte for byte: a caller that PRACKed that 183 already has this answer (an identical
        copy is no new offer or answer), one that got it unreliably has none yet (RFC 3261
        §13.2.1: the 2xx must carry it). Raises SdpError when no reliable 1xx answered."""
        answers = leg.answers_in_1xx
        answer = answers.get(response.to.tag or "") if answers is not None else None
        if answer is None:
            raise SdpError("2xx without SDP answer")
        early = self._early_answer
        if early is not None and early[0] is leg and early[1].to.tag == response.to.tag:
            return self._early_sdp_a  # the answer the media session holds: nothing to redo
        # Another early dialog's SDP (a fork's 183) came since: the relay goes back to the one
        # this 2xx confirms, as when a 2xx repeats its answer.
        return serialize_sdp(self._answer_via(leg, answer, response.to.tag or "", final=True))

    async def _answer_a(self, ok: Response) -> None:
        """Send the caller our 2xx (a callee answered, or a phone picked the call up): its
        dialog, the 2xx retransmitted until its ACK, the call answered."""
        assert self.media is not None and self.a.invite is not None
        over_tls = self.a.transport in TLS_TRANSPORTS
        early = self._a_early
        if early is not None and early.state is _D_EARLY:
            # A DTMF INFO went to A in our early dialog: the 2xx confirms that dialog, whose
            # CSeq goes on from it (RFC 3261 §12.2.1.1).
            early.send_response(ok)
            self.a.dialog = early
        else:
            self.a.dialog = Dialog.create_uas(self.a.invite, ok, over_tls=over_tls)
        if self._unacked_1xx is not None and self._unacked_1xx[0].body:
            await self._awaiting_prack()  # RFC 3262 §3: not before that 1xx's PRACK
        self._stop_reliable_1xx()
        # Timed before it is sent: its ACK is taken from the endpoint's task as soon as it
        # arrives (ack_received), even while this task still waits to send.
        self._start_2xx_retransmission(_S_A, ok)
        await self._respond_a(ok)
        self.media.settle()
        self.a.answered = True
        self.answered_at = trio.current_time()
        self.state = "answered"
        self.manager.event(cast("Call", self), "answered", None)
        self._start_taps()

    async def _b_offered(self, leg: BLeg, response: Response) -> None:
        """B leg ``leg`` answered our INVITE without SDP; its 2xx carries the offer. The first
        such 2xx wins: A gets our 200 with the offer rewritten for its leg, and B's ACK waits
        for A's answer, which comes in A's ACK (:meth:`_awaiting_answer`)."""
        leg.dialog = self._confirmed_dialog(leg, response)
        if self.b is not None or self.state != "ringing" or leg.given_up is not None:
            await self._bye(leg, "call completed elsewhere")  # ACKed first, see _bye
            return
        assert self.media is not None and leg.security is not None
        assert self.a.security is not None
        try:
            sdp = sdp_body(response)
            if not sdp:
                raise SdpError("2xx without SDP offer to our INVITE without SDP")
            plain = self.media.offer_from(
                _S_B.value,
                leg.security.take_offer(parse_sdp_untrusted(sdp)),
                dtmf_info=leg.security.dtmf_info,
            )
            offer_a = self.a.security.make_offer(plain)
        except PortsExhausted:
            await self._bye(leg, "no free media ports")
            await self._reject_a(503, "Service Unavailable", "no free media ports")
        except Exception as exc:
            failure = self._answer_failed(exc, "offer")
            self.end_reason = failure.reason  # "bad SDP offer: ...", as for an answer
            await self._bye(leg, failure.reason, cause=failure.status)  # ACKed first
            await self._reject_a(failure.status, failure.phrase, failure.warning)
        self.b = leg
        self._start_session_timers(leg, response)
        self._note_record_aware(leg, response)
        self._note_answer_recordpref(leg, response)
        self._apply_keys(leg)  # no media before keys: block where a policy needs them
        for other in self.b_legs:
            if other is not leg and other.final is None:
                await self._cancel_b(other, ANSWERED_ELSEWHERE)
        errors = self._geolocation_errors(leg, response) if leg.location_passed else []
        await self._offer_in_2xx_to_a(offer_a, errors)

    async def _offer_in_2xx_to_a(
        self, offer_a: SessionDescription, extra: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Our 200 to A carries ``offer_a`` (A's INVITE had none), and ``extra`` fields; A's
        ACK brings the answer (:meth:`_awaiting_answer`)."""
        fields = self._a_timer.headers()
        if extra:
            fields = [*fields, *extra]
        ok = self._a_response(200, body=serialize_sdp(offer_a), extra=fields)
        self._stop_reliable_1xx()
        over_tls = self.a.transport in TLS_TRANSPORTS
        self.a.dialog = Dialog.create_uas(self.a.invite, ok, over_tls=over_tls)  # type: ignore[arg-type]
        # Set before the 200 goes out: its ACK may arrive while this task still waits to send.
        self.state = "offered"
        self._answer_in_ack = _S_A
        self._start_2xx_retransmission(_S_A, ok)
        await self._respond_a(ok)
        self.a.answered = True  # a 2xx went to A: from here on the call ends with BYE

    def _answer_in_ack_of_a(self, ack: Request) -> SessionDescription:
        """The answer A's ACK brings to the offer in our 2xx, through A's keys and the relay,
        plain, for the other leg. Raises :class:`SdpError` for an ACK without a usable one."""
        assert self.media is not None and self.a.security is not None
        sdp = sdp_body(ack)
        if not sdp:
            raise SdpError("ACK without the SDP answer to our offer")
        self._note_recordpref(self.a, sdp)
        return self.media.answer_from(
            _S_A.value,
            self.a.security.take_answer(parse_sdp_untrusted(sdp)),
            rtcp_mux_offered=self.a.security.offers_rtcp_mux,
        )
