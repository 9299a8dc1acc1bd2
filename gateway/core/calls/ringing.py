"""The ringing state: the callees' provisional responses, and how ringing ends.

A callee's 1xx goes to A with our own To tag (early media when it carries SDP); to a caller that
requires them, reliably (RFC 3262: RSeq, one unacknowledged at a time, A's PRACK answered here).
We PRACK a callee's reliable 1xx ourselves in its early dialog (§4). A trunk's challenge to our
INVITE is answered once with its credentials (RFC 3261 §22.2), a callee's 422 once with its
Min-SE (RFC 4028 §7.3), each as a new INVITE transaction; a target that sends nothing within its
trunk's ``response_timeout`` counts as a 408. Ringing ends when Timer C fires (RFC 3261 §16.8:
408), the caller CANCELs (487, its Reason carried on, RFC 3326) or a transfer takes the ringing
target over.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import trio

from gateway.core.calls.base import log, sdp_body
from gateway.core.calls.events import CallEnded, RequestEvent
from gateway.core.calls.leg import MAX_EARLY_DIALOGS, BLeg, Leg
from gateway.core.calls.location_updates import CallLocationUpdates
from gateway.core.calls.media_keys import CallMediaKeys
from gateway.core.calls.recording_indication import recordpref_of
from gateway.core.calls.routing import other_hops_left
from gateway.core.logs import transport_error_text
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip.dialog import Dialog
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.session_timer import UAS, SessionExpires, min_se_of_422
from gateway.core.sip.uri import redact_password
from gateway.core.transport.flows import TLS_TRANSPORTS

if TYPE_CHECKING:
    from gateway.core.calls.call import Call


# RFC 3326: why a callee's ringing stops. Phones show no missed call for this one (RFC 3326 §2
# example; every common desk phone reads it), which is what parallel ringing needs.
ANSWERED_ELSEWHERE = ('SIP;cause=200;text="Call completed elsewhere"',)
# RFC 3262 §3: the first RSeq of a dialog is chosen at random in 1 .. 2**31 - 1.
RSEQ_FIRST_MAX = 2**31 - 1


class CallRinging(CallLocationUpdates, CallMediaKeys):
    """The callees' 1xx, PRACK both ways, and the end of ringing (the module's docstring)."""

    if TYPE_CHECKING:
        # CallRecordingIndication's (recording_indication.py), whose class comes later in
        # Call's bases. Declared for the type checker only.
        def _note_recordpref(
            self, leg: Leg, body: bytes | None, *, replacing: str | None = None
        ) -> None: ...

    async def _give_up(self, leg: BLeg) -> None:
        """Our INVITE to ``leg`` had no response within its trunk's ``response_timeout``: it
        counts as a 408 from now on, and the trunk as failing."""
        leg.response_deadline = math.inf
        trunk = leg.target.trunk if leg.target is not None else None
        assert leg.invite is not None
        leg.given_up = make_response(leg.invite, 408, "Request Timeout (no response)")
        log.info("call %s: no response from %s; giving it up", self.id, trunk or leg.address)
        if trunk is not None and not other_hops_left(leg.target):
            timeout = self._leg_trunk(leg).response_timeout  # type: ignore[union-attr]
            self.manager.trunk_failed(trunk, f"no response to an INVITE within {timeout:g} s")
        await self._cancel_b(leg)  # sent if a provisional response ever comes

    async def _asked_again(self, leg: BLeg, response: Response) -> bool:
        """Whether a final response to our INVITE to ``leg`` is answered by sending the INVITE
        again, amended: a trunk's challenge, a callee's 422 (once each)."""
        if response.status in (401, 407):
            return await self._answer_challenge(leg, response)
        if response.status == 422:
            return await self._ask_longer_interval(leg, response)
        return False

    async def _answer_challenge(self, leg: BLeg, response: Response) -> bool:
        """A trunk challenged our INVITE: send it again with the trunk's ``username`` and
        ``password`` (RFC 3261 §22.2: same Call-ID, From and To, CSeq + 1, a new transaction).
        Once per leg: a second challenge means the credentials are wrong, and that final
        response goes to the caller like any other. False when we do not answer it."""
        invite = leg.invite
        trunk = self._trunk_credentials(leg)
        if (
            trunk is None
            or invite is None
            or leg.credentials_sent
            or leg.cancel_wanted
            or not self._still_calling(leg)
        ):
            return False
        answered = self._with_credentials(invite, invite.cseq.number + 1, response, trunk)
        if answered is None:
            return False
        leg.credentials_sent = True
        if not await self._invite_again(leg, answered):
            return False
        log.info("call %s: answered trunk %s's %d challenge", self.id, trunk.name, response.status)
        return True

    async def _ask_longer_interval(self, leg: BLeg, response: Response) -> bool:
        """The callee refused our session interval as too small (422, RFC 4028 §7.3): send the
        INVITE again asking for its Min-SE (same Call-ID, From and To, CSeq + 1, a new
        transaction). Once per leg; False when we do not (the 422 then fails this leg)."""
        invite = leg.invite
        min_se = min_se_of_422(response.headers)
        if (
            invite is None
            or min_se is None
            or leg.interval_raised
            or leg.cancel_wanted
            or not self._still_calling(leg)
        ):
            return False
        headers = (
            invite.headers.remove("Via")
            .set("CSeq", f"{invite.cseq.number + 1} INVITE")
            .set("Session-Expires", str(SessionExpires(min_se, UAS)))
            .set("Min-SE", str(min_se))
        )
        leg.interval_raised = True
        if not await self._invite_again(leg, invite.with_headers(headers)):
            return False
        log.info("call %s: callee asked for a session interval of at least %d s", self.id, min_se)
        return True

    async def _invite_again(self, leg: BLeg, invite: Request) -> bool:
        """Send ``invite`` (our INVITE to ``leg`` amended) as a new transaction on the leg."""
        try:
            client = await self.endpoint.send_request(
                invite, transport=leg.transport, address=leg.address, flow=leg.flow
            )
        except OSError as exc:
            log.warning(
                "call %s: cannot reach %s again: %s",
                self.id,
                redact_password(str(invite.uri)),
                transport_error_text(exc),
            )
            return False
        leg.flow = client.flow
        leg.invite = client.request
        client.trunk = leg.peer_name if leg.peer_kind == "trunk" else None
        # CANCEL waits for a provisional response of the new INVITE, a 100 included (RFC 3261
        # §9.1): the first INVITE's do not count for this one.
        leg.provisional_seen = False
        leg.trying_seen = False
        self._forward(client, leg)
        return True

    def _still_calling(self, leg: BLeg) -> bool:
        """Whether our INVITE to ``leg`` is still wanted (a challenge or a 422 is answered):
        the call rings, or the transfer it belongs to has no answer yet."""
        if leg in self._transfer_legs:
            return self._transfer is not None and self._transfer.still_calling(leg)
        return self.state == "ringing"

    async def _prack_b(self, leg: BLeg, response: Response) -> bool:
        """PRACK a callee's reliable 1xx (``Require: 100rel`` with an RSeq, RFC 3262 §4) in its
        early dialog. We do, whatever A's leg does: A gets its own 1xx, reliable only if A
        required that. False for one to drop: the same RSeq again (our PRACK's transaction
        re-sends itself) or one out of order (§4: RSeq must be the last one plus one)."""
        if "100rel" not in response.headers.option_tags("Require"):
            early = leg.early_dialogs.get(response.to.tag or "") if leg.early_dialogs else None
            if early is not None:
                # RFC 3261 §12.1.2, §13.2.2.4: any 1xx of an early dialog with a Contact
                # moves its remote target, where our PRACKs and INFOs go; reliable or not.
                early.receive_response(response)
            return True
        rseq = parse_rseq(response.headers.get("RSeq"))
        tag = response.to.tag
        if rseq is None or tag is None or leg.invite is None:
            log.info("call %s: a reliable %d without an RSeq or To tag", self.id, response.status)
            return True  # relayed as an ordinary 1xx; nothing can acknowledge it
        dialog = leg.early_dialogs.get(tag)
        last = leg.last_rseq.get(tag)
        if last is not None and rseq != last + 1:
            return False
        if dialog is None:
            if not self._room_for_early_dialog(leg, response):
                # Past the bound (a forking proxy's many phones, or a callee inventing To
                # tags): relayed as an ordinary 1xx, its RSeq and answer not kept; the callee
                # gives up on it after 64*T1 (RFC 3262 §3).
                return True
            over_tls = leg.transport in TLS_TRANSPORTS
            dialog = Dialog.create_uac(leg.invite, response, over_tls=over_tls)
            leg.early_dialogs[tag] = dialog
        else:
            dialog.receive_response(response)  # its Contact may move the remote target
        leg.last_rseq[tag] = rseq
        try:
            flow = await self._leg_flow(leg)
            via = self.endpoint.new_via(flow)  # OSError: no listener of its transport left
        except OSError as exc:
            # As a PRACK lost on the way: the callee re-sends its 1xx, then gives up on its
            # own (RFC 3262 §3); nothing of ours is in hand to answer.
            log.info("call %s: cannot send PRACK: %s", self.id, transport_error_text(exc))
            return True
        rack = f"{rseq} {response.cseq.number} {response.cseq.method}"
        prack = dialog.create_request("PRACK", via=via, extra=[("RAck", rack)])
        await self._send_on(leg, prack, flow)  # nothing waits for its 200
        return True

    async def _relay_provisional(self, leg: BLeg, response: Response) -> None:
        assert self.media is not None
        body = b""
        try:
            sdp = sdp_body(response)
            if sdp and self.late_offer:
                # SDP in a 1xx to an INVITE without one would be an offer, which only a reliable
                # provisional response may carry (RFC 3261 §13.2.1, RFC 3262); we offer no 100rel.
                log.info(
                    "call %s: ignoring SDP in %d from B (late offer)", self.id, response.status
                )
            elif sdp and _not_kept(leg, response):
                # A reliable 1xx past MAX_EARLY_DIALOGS, never PRACKed: its answer is never
                # completed (RFC 3262 §5), the callee re-sends it until it gives up (§3: 64*T1,
                # then 5xx), and each copy would move the caller's early media to it (and back
                # from the fork it hears). Relayed as ringing, without it.
                log.debug(
                    "call %s: the answer in a %d past the early dialog bound is not taken",
                    self.id,
                    response.status,
                )
            elif sdp:
                answer = parse_sdp_untrusted(sdp)
                # An early answer states one too (RFC 7866 §7.2), that early dialog's phone's.
                self._note_recordpref(leg, sdp)
                stated, tag = recordpref_of(sdp), response.to.tag or ""
                prefs = leg.early_recordprefs
                if stated is not None and (tag in prefs or len(prefs) < MAX_EARLY_DIALOGS):
                    prefs[tag] = stated
                if _prack_sent(leg, response):
                    # RFC 3262 §5: an answer in a reliable 1xx completes the offer/answer
                    # exchange; the 2xx of its early dialog need not repeat it. Kept before it
                    # is taken as early media, and so also when refused there: another phone's
                    # answer (a proxy downstream forked our offer) with its own DTLS certificate
                    # or ZRTP Hello, which the early phone's exchange refuses, and which that
                    # phone's 2xx, confirming its dialog, takes with an exchange begun afresh
                    # for it (CallMediaKeys._answer_via; session 51: before, that 2xx failed
                    # "2xx without SDP answer"). A refused answer that is bad stays refused then.
                    answers = leg.answers_in_1xx
                    if answers is None:
                        answers = leg.answers_in_1xx = {}
                    answers[response.to.tag or ""] = answer
                body = serialize_sdp(self._answer_via(leg, answer, response.to.tag or ""))
                self._early_answer = (leg, response)  # early media: whose the caller hears
                self._early_sdp_a = body
        except SdpError as err:
            log.info("call %s: ignoring bad early SDP from B: %s", self.id, err.reason)
        status = 183 if body else 180
        extra = self._geolocation_errors(leg, response) if leg.location_passed else []
        await self._provisional_to_a(self._a_response(status, body=body, extra=extra))
        self.manager.event(cast("Call", self), "ringing", None)

    async def _provisional_to_a(self, response: Response) -> None:
        """Send a 1xx to A; reliably (Require: 100rel, RSeq) when A's INVITE required it. One
        reliable 1xx is unacknowledged at a time (RFC 3262 §3): a later one waits for the PRACK,
        the newest replacing any older one waiting."""
        if not self.a_reliable_1xx:
            await self._respond_a(response)
            return
        if self._unacked_1xx is not None:
            self._held_1xx = response
            return
        if self._rseq == 0:
            self._rseq = int(self.manager.gateway.ids.token_hex(4), 16) % RSEQ_FIRST_MAX + 1
        else:
            self._rseq += 1
        headers = response.headers.add("Require", "100rel").add("RSeq", str(self._rseq))
        reliable = response.with_headers(headers)
        t1 = self.config.sip.t1
        now = trio.current_time()
        self._unacked_1xx = (reliable, now + t1, t1, now + 64 * t1)  # _next_event wakes for it
        await self._respond_a(reliable)

    async def _prack(self, event: RequestEvent) -> None:
        """A's PRACK (RFC 3262 §3): 200 when its RAck names our last reliable 1xx (also once
        the call is answered), which then is no longer re-sent and lets a waiting 1xx go; 481
        for any other (§4: it acknowledges nothing we sent), 400 for an unreadable RAck."""
        request = event.request
        rack = parse_rack(request.headers.get("RAck"))
        invite = self.a.invite
        assert invite is not None
        if rack is None:
            await self.endpoint.respond(
                event.transaction, make_response(request, 400, "Bad Request (RAck)")
            )
            return
        expected = (self._rseq, invite.cseq.number, "INVITE")
        if self._rseq == 0 or rack != expected:
            await self.endpoint.respond(event.transaction, make_response(request, 481))
            return
        self._unacked_1xx = None
        await self.endpoint.respond(event.transaction, make_response(request, 200))
        held, self._held_1xx = self._held_1xx, None
        if held is not None and self.state == "ringing":
            await self._provisional_to_a(held)

    async def _no_answer(self) -> None:
        """Timer C fired (RFC 3261 §16.8: CANCEL the pending branches; 408 to the caller)."""
        timeout = self.config.sip.ring_timeout
        self.end_reason = f"no answer within {timeout:g} s"
        self.state = "cancelled"
        for leg in self.b_legs:
            if leg.final is None:
                await self._cancel_b(leg)
        await self._respond_a(self._a_response(408, "Request Timeout"))
        raise CallEnded(self.end_reason)

    async def _replaced_by_transfer(self) -> None:
        self.end_reason = "replaced by a transfer"
        self.state = "cancelled"
        for leg in self.b_legs:
            if leg.final is None:
                await self._cancel_b(leg, ANSWERED_ELSEWHERE)
        await self._respond_a(self._a_response(487))
        raise CallEnded(self.end_reason)

    async def _cancelled_by_a(self, cancel: Request) -> None:
        self.end_reason = "cancelled by caller"
        self.state = "cancelled"
        for leg in self.b_legs:
            if leg.final is None:
                await self._cancel_b(leg, cancel.headers.get_all("Reason"))
        await self._respond_a(self._a_response(487))
        raise CallEnded("cancelled by caller")


def parse_rack(value: str | None) -> tuple[int, int, str] | None:
    """RAck: response-num CSeq-num method (RFC 3262 §7.2); None when absent or malformed."""
    parts = (value or "").split()
    # isascii: str.isdigit() is true for "¹" too, which int() refuses (RFC 3262 §7.2: 1*DIGIT).
    if len(parts) != 3 or not all(p.isascii() and p.isdigit() and len(p) <= 10 for p in parts[:2]):
        return None
    return int(parts[0]), int(parts[1]), parts[2]


def parse_rseq(value: str | None) -> int | None:
    """RSeq: response-num, 1..2**32-1 (RFC 3262 §7.1); None when absent or malformed."""
    text = (value or "").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    number = int(text)
    return number if 1 <= number < 2**32 else None


def _not_kept(leg: BLeg, response: Response) -> bool:
    """Whether ``response``, a callee's reliable 1xx (RFC 3262), came under a To tag for which
    no early dialog was kept: past :data:`~gateway.core.calls.leg.MAX_EARLY_DIALOGS`, so
    never PRACKed (Call._prack_b)."""
    tag = response.to.tag
    return (
        tag is not None
        and leg.early_dialogs_full
        and tag not in leg.early_dialogs
        and "100rel" in response.headers.option_tags("Require")
        and parse_rseq(response.headers.get("RSeq")) is not None
    )


def _prack_sent(leg: BLeg, response: Response) -> bool:
    """Whether ``response``, a callee's 1xx, is a reliable one we PRACKed (Call._prack_b)."""
    tag = response.to.tag
    last = leg.last_rseq.get(tag) if tag is not None and leg.last_rseq else None
    return (
        last is not None
        and last == parse_rseq(response.headers.get("RSeq"))
        and "100rel" in response.headers.option_tags("Require")
    )
