"""A forked callee's answer re-keyed: our SDES key handed to one phone only.

A proxy downstream that forks our INVITE (RFC 3261 §16.7) gives our one offer, and with it the
SRTP key our offer hands out in SDP (SDES, RFC 4568; MIKEY), to every phone it rings. When a
phone's early answer (a 183 with SDP) keyed the B leg's relay stream and the 2xx then comes
from another early dialog (RFC 3261 §12.1.2: another phone), the relay sends to that phone
with the context our key had with the first: at the ROC it reached there (RFC 3711 §3.3.1),
while the answering phone starts our key at ROC 0 and authenticates nothing of ours once the
early media passed a sequence wrap; and the phone that lost, having our key, could read what we
send the one that won. So, once that dialog is confirmed (our ACK sent), the gateway sends it
one re-INVITE offering what it offered before with new keys of ours (``offer(rekey=True)``,
RFC 4568 §7.1.4; a new o= version, RFC 3264 §8): a new key, a new context at ROC 0, held by
that phone alone.

Only then: an answer from the dialog whose early media the relay carried needs nothing (the
context goes on with the phone that knows it), nor one of a fork that only rang (no packet of
ours went under the key to any phone, though every forked phone got the offer: SDES through a
forking proxy cannot avoid that). Keys agreed on the media path (DTLS-SRTP, ZRTP)
are per association with each phone (the relay keeps the forks' handshakes apart) and are
never re-offered here. Nor is a transfer target's leg: it is called without SDP or 100rel (a
late offer), so our key goes only in the ACK of the one dialog whose 2xx we took. A
re-INVITE, not an UPDATE: the dialog is confirmed, every phone takes a re-INVITE, and an
UPDATE (RFC 3311) would gain nothing.

Its failure is RFC 3261 §14.1's: a refusal (488, 501, 500 ...) keeps the session as it was (the
call goes on under the old keys, logged at INFO); 491 (the phone's own re-INVITE crossed ours)
is tried again after §14.1's wait, at most :data:`REKEY_GLARE_RETRIES` times; a 408 or 481 ends
the call as for any re-INVITE whose dialog is gone (``CallBase._session_lost``). While ours is
in progress, a re-INVITE or UPDATE offer from either leg gets 491 (§14.2).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import trio

from gateway.core.calls.base import log, sdp_body
from gateway.core.calls.events import InDialogRequest
from gateway.core.calls.leg import BLeg, Leg, Side
from gateway.core.calls.location_updates import CallLocationUpdates
from gateway.core.calls.media_keys import CallMediaKeys
from gateway.core.logs import transport_error_text
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.dialog import DialogState, glare_wait
from gateway.core.sip.message import Response, cancel_for
from gateway.core.sip.transaction import State

if TYPE_CHECKING:
    from gateway.core.calls.call import Call

REKEY_GLARE_RETRIES = 2
"""How often our re-key re-INVITE is sent again after a 491 (RFC 3261 §14.1) before the call
goes on under the old keys."""


class CallForkRekey(CallLocationUpdates, CallMediaKeys):
    """The re-key of a forked callee's answer (the module's docstring)."""

    if TYPE_CHECKING:
        # CallReinvites' (reinvites.py), whose class comes later in Call's bases. Declared
        # for the type checker only.
        def _offer_in_progress(self) -> bool: ...

        async def _resend_reinvite_ack(self, side: Side, response: Response) -> None: ...

        # CallRecordingIndication's (recording_indication.py), likewise.
        def _note_recordpref(
            self, leg: Leg, body: bytes | None, *, replacing: str | None = None
        ) -> None: ...

    def _needs_fork_rekey(self, leg: BLeg, response: Response) -> bool:
        """Whether the B leg's keys handed out in SDP keyed another early dialog's answer than
        the one ``response`` (the leg's 2xx) confirms."""
        tags = leg.sdp_keyed_tags
        if not tags or leg.security is None or not leg.security.keys_handed_out_in_sdp():
            return False
        return bool(tags - {response.to.tag or ""})

    async def _rekey_fork(self, leg: BLeg, response: Response) -> None:
        """Called once the 2xx of ``leg`` is ACKed and the call answered: re-key the B leg if a
        phone of another early dialog had our keys (the module's docstring)."""
        if not self._needs_fork_rekey(leg, response):
            return
        others = sorted((leg.sdp_keyed_tags or set()) - {response.to.tag or ""})
        log.info(
            "call %s: the B leg's answer came from another forked phone than the early media "
            "keyed by our SDP keys (%d other early dialog(s)): re-INVITE with new keys of ours "
            "(RFC 4568 §7.1.4, RFC 3711 §9.1)",
            self.id,
            len(others),
        )
        self._fork_rekey_tries = 0
        self._fork_rekey_leg = leg
        self._fork_rekey_outcome = "pending"
        await self._send_fork_rekey()

    async def _send_fork_rekey(self) -> None:
        """Our re-INVITE to B: the SDP last sent there, a new o= version, new keys of ours
        where the key exchange hands them out in SDP."""
        leg = self.b
        self._fork_rekey_again_at = math.inf
        if (
            leg is None
            or leg is not self._fork_rekey_leg  # B is another party now (a transfer)
            or leg.security is None
            or self.media is None
            or leg.dialog is None
            or leg.dialog.state is not DialogState.CONFIRMED
            or self.state != "answered"
        ):
            return
        if self._offer_in_progress():
            # Another offer goes first (one at a time, RFC 3264 §4): ours after §14.1's wait.
            if not self._fork_rekey_later(leg):
                self._fork_rekey_outcome = "not sent: other offers kept crossing it"
            return
        plain = None
        try:
            plain = self.media.repeat_offer(Side.B.value)
            offer = leg.security.make_offer(plain, rekey=True)
        except Exception as exc:
            if plain is not None:
                # Not sent: the next offer on the leg has the version after the last SDP
                # sent there, not one more (RFC 3264 §8).
                self.media.withdraw_repeated_offer(Side.B.value)
            # A plugin's bug or ours: the call goes on under the keys it has, as after a
            # refused re-INVITE (RFC 3261 §14.1). Never the exception's text: it may hold keys.
            log.warning(
                "call %s: cannot make the re-key offer for the B leg (%s): its keys stay",
                self.id,
                type(exc).__name__,
            )
            self._fork_rekey_outcome = f"not sent: internal error ({type(exc).__name__})"
            return
        tag = await self._reinvite_with_repeated_offer(leg, Side.B.value, offer, "fork-rekey")
        if tag is not None:
            self._fork_rekey = tag
            self._fork_rekey_deadline = trio.current_time() + 64 * self.config.sip.t1
        else:
            self._fork_rekey_outcome = "not sent: the B leg cannot be reached"

    def _fork_rekey_later(self, leg: BLeg) -> bool:
        """Try our re-key again after RFC 3261 §14.1's wait (True), unless it has been tried
        :data:`REKEY_GLARE_RETRIES` times already."""
        if self._fork_rekey_tries >= REKEY_GLARE_RETRIES or leg.dialog is None:
            return False
        self._fork_rekey_tries += 1
        draw = int(self.manager.gateway.ids.token_hex(2), 16)
        wait = glare_wait(leg.dialog.owns_call_id, draw)
        self._fork_rekey_again_at = trio.current_time() + wait
        return True

    async def _fork_rekey_timed_out(self) -> None:
        """64*T1 and no final response to our re-key (a phone that answered 1xx and nothing
        more: an INVITE client transaction in Proceeding has no timer, RFC 3261 §17.1.1.2):
        CANCEL it (§9.1); its 487, or a 2xx that crossed the CANCEL, comes as any final
        response does. Without a provisional response Timer B answers 408 on its own."""
        self._fork_rekey_deadline = math.inf
        sent = self._fork_rekey
        client = sent.client if sent is not None else None
        if (
            self.b is not None
            and client is not None
            and client.transaction.state is State.PROCEEDING
        ):
            log.info(
                "call %s: no final response to our re-key re-INVITE to the B leg in %g s: CANCEL",
                self.id,
                64 * self.config.sip.t1,
            )
            await self._send_on(self.b, cancel_for(client.request))

    async def _fork_rekey_answered(self, tag: InDialogRequest, response: Response) -> None:
        """The B leg's final response to our re-key re-INVITE."""
        leg = self.b
        if tag is not self._fork_rekey or leg is None or leg is not self._fork_rekey_leg:
            await self._resend_reinvite_ack(tag.side, response)
            return
        self._fork_rekey, self._fork_rekey_deadline = None, math.inf
        assert self.media is not None and leg.security is not None and leg.dialog is not None
        if not response.is_success:
            if response.status == 491 and self._fork_rekey_later(leg):
                log.info(
                    "call %s: our re-key re-INVITE to the B leg crossed one of its own (491); "
                    "again in %.2f s",
                    self.id,
                    self._fork_rekey_again_at - trio.current_time(),
                )
                return
            self._fork_rekey_outcome = f"refused: {response.status} {response.reason[:64]}"
            # Sent: its o= version stays taken (RFC 3264 §8), withdrawn by nothing later.
            leg.security.offer_refused()
            self.media.repeated_offer_refused(Side.B.value)
            if self._ends_session("INVITE", response.status):
                await self._session_lost(
                    Side.B, "INVITE", response, what="re-key re-INVITE to the B leg"
                )
                return
            # RFC 3261 §14.1: the session stays as it was, its keys too.
            log.info(
                "call %s: the B leg answered our re-key re-INVITE %d %s: its SRTP keys stay "
                "those its answer took (another forked phone had them too)",
                self.id,
                response.status,
                response.reason,
            )
            return
        leg.session_timer = self._refreshed_by_2xx(leg, response)
        try:
            flow = await self._leg_flow(leg)
            via = self.endpoint.new_via(flow)  # OSError: no listener of its transport left
        except OSError as exc:
            # The phone took our new keys but cannot be ACKed: it ends its dialog after 64*T1
            # (RFC 3261 §13.3.1.4) and the legs disagree now, so the call ends.
            await self._hang_up(f"signalling failed: {transport_error_text(exc)}")
        ack = leg.dialog.create_ack(response.cseq.number, via=via)
        self._reinvite_acks[Side.B] = ack
        try:
            plain = leg.security.take_answer(parse_sdp_untrusted(sdp_body(response)))
            self._note_recordpref(leg, sdp_body(response))
            self.media.answer_to_repeated_offer(
                Side.B.value, plain, rtcp_mux_offered=leg.security.offers_rtcp_mux
            )
            self._apply_keys(leg)
            # The new keys are in the relay (and its media workers) before the phone, once our
            # ACK ends its transaction, may send under them (as for any re-INVITE's answer).
            await self.media.applied()
        except Exception as exc:
            # A 2xx answer cannot be refused (RFC 3264 §8): ACK, then BYE (§13.2.2.4).
            failure = self._answer_failed(exc, "answer to re-INVITE")
            await self.endpoint.send_ack(ack, flow)
            await self._hang_up(failure.reason, cause=failure.status)
        await self.endpoint.send_ack(ack, flow)
        self._fork_rekey_outcome = "re-keyed"
        self.manager.security_changed(cast("Call", self))
        log.info("call %s: the B leg re-keyed: our SRTP key is its phone's alone", self.id)
