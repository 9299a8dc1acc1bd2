"""Session timers (RFC 4028) on each leg of a call, each on its own.

Our 200 to A states A's timer (its interval kept or lowered, the refresher by §9 Table 2), every
INVITE we send asks for ours (§7.1, §7.4), and a leg's timer restarts with each 2xx to a
re-INVITE or UPDATE on it (§7.2). A leg whose device was to refresh and did not ends the call
(BYE on both legs, Reason cause 408); a leg we refresh gets an UPDATE without a body at half its
interval (§10, RFC 3311), only if its device allows UPDATE (a re-INVITE's answer could re-key the
media). The timers themselves are sans-IO: ``gateway.core.sip.session_timer``.
"""

from __future__ import annotations

import math
from typing import Literal

import trio

from gateway.core.calls.base import CallBase, log
from gateway.core.calls.events import InDialogRequest, RequestEvent
from gateway.core.calls.leg import BLeg, Leg
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.session_timer import (
    UAC,
    UAS,
    IntervalTooSmall,
    LegTimer,
    UasAnswer,
    allows_update,
    answer_as_uas,
    expires_in_2xx,
    leg_timer,
    min_se_of_422,
    request_headers,
    supports_timer,
)


class CallSessionTimers(CallBase):
    """RFC 4028 session timers on each leg (the module's docstring)."""

    def _timer_of(self, request: Request, leg: Leg) -> UasAnswer | IntervalTooSmall:
        """The session timer our 2xx to ``request`` (an INVITE, re-INVITE or UPDATE from
        ``leg``) states (§9); raises RemoteSipError for an unreadable one."""
        sip = self.config.sip
        can_refresh = leg.allows_update or allows_update(request.headers)
        return answer_as_uas(
            request.headers, wanted=sip.session_expires, min_se=sip.min_se, can_refresh=can_refresh
        )

    async def _session_timer_of(self, event: RequestEvent) -> UasAnswer | None:
        """:meth:`_timer_of` for a request inside the call; None when it was refused for its
        session interval (400 unreadable, 422 too small)."""
        request = event.request
        try:
            timer = self._timer_of(request, self._leg(event.side))
        except RemoteSipError as err:
            refusal = make_response(request, 400, f"Bad Request ({err.reason})")
            await self.endpoint.respond(event.transaction, refusal)
            return None
        if isinstance(timer, IntervalTooSmall):
            refusal = make_response(request, 422, extra=[("Min-SE", str(timer.min_se))])
            await self.endpoint.respond(event.transaction, refusal)
            return None
        return timer

    async def _reinvite_with_repeated_offer(
        self, leg: Leg, side: Literal["a", "b"], offer: SessionDescription, purpose: str
    ) -> InDialogRequest | None:
        """Our re-INVITE on ``leg`` with ``offer`` (its security's keyed form of the media
        session's :meth:`MediaSession.repeat_offer` for ``side``), tagged ``purpose``, asking
        for our session timer (RFC 4028 §7.4); None when it cannot be sent: the leg's security
        and the session take the offer back, so the next SDP there has the version after the
        last one sent (RFC 3264 §8). Every re-INVITE the gateway makes of its own (a
        transfer's join, a forked callee's re-key, a recording indication) goes this way."""
        assert leg.security is not None and self.media is not None
        tag = InDialogRequest(purpose, leg.side)
        sent = await self._send_in_dialog(
            leg,
            "INVITE",
            body=serialize_sdp(offer),
            tag=tag,
            extra=[("Supported", "timer"), *self._refresh_headers(leg)],
        )
        if sent is None:
            leg.security.withdraw_offer()
            self.media.withdraw_repeated_offer(side)
            return None
        return tag

    def _refresh_headers(self, leg: Leg) -> list[tuple[str, str]]:
        """What our INVITE or re-INVITE to ``leg`` asks of session timers (§7.1, §7.4; beside
        Supported: timer): the interval of the leg's timer (or a longer one a 422 asked for, or
        the one we ask for), with its refresher kept. A callee is asked to refresh
        (refresher=uas): we refresh only with UPDATE, and do not know yet whether it allows
        that."""
        timer, sip = leg.session_timer, self.config.sip
        if timer is None:
            seconds, refresher = sip.session_expires, UAS
        else:
            seconds, refresher = max(timer.seconds, timer.asked), UAC if timer.we_refresh else UAS
        if not seconds:
            return []
        return request_headers(seconds, refresher=refresher, min_se=sip.min_se)

    def _started(self, answer: UasAnswer) -> LegTimer | None:
        """The timer our 2xx stating ``answer`` starts on its leg (we are that request's UAS)."""
        return leg_timer(answer.expires, we_are_uac=False, now=trio.current_time())

    def _start_session_timers(self, b_leg: BLeg, response: Response) -> None:
        """The call is answered: A's timer from our 2xx, B's from its 2xx."""
        b_leg.allows_update = allows_update(response.headers)
        b_leg.session_timer = self._refreshed_by_2xx(b_leg, response)
        self.a.session_timer = self._started(self._a_timer)

    def _refreshed_by_2xx(self, leg: Leg, response: Response) -> LegTimer | None:
        """The timer a 2xx to our INVITE, re-INVITE or UPDATE on ``leg`` leaves (§7.2): the one
        its Session-Expires states, none without one. A peer that knows no session timers
        (no Supported: timer) says nothing either way: a timer of ours on that leg goes on,
        refreshed by this 2xx."""
        now = trio.current_time()
        expires = expires_in_2xx(response.headers)
        current = leg.session_timer
        if expires is None and current is not None and not supports_timer(response.headers):
            return LegTimer(current.seconds, current.we_refresh, now)
        timer = leg_timer(expires, we_are_uac=True, now=now)
        if timer is not None and timer.we_refresh and not leg.allows_update:
            log.info(
                "call %s: the %s leg leaves the session refreshes to us but does not allow "
                "UPDATE: no session timer on that leg",
                self.id,
                leg.side.value.upper(),
            )
            return None
        return timer

    def _session_timer_due(self) -> float:
        return min(
            (
                leg.session_timer.due
                for leg in (self.a, self.b)
                if leg is not None and leg.session_timer is not None
            ),
            default=math.inf,
        )

    async def _session_timers_due(self, now: float) -> None:
        """Refresh a leg whose refresh is due (UPDATE at half the interval, §10); end the call
        when a leg's session has expired: the peer did not refresh it (BYE at the expiry less
        min(32 s, a third of the interval)) or our UPDATE could not be sent to it until then."""
        for leg in (self.a, self.b):
            timer = leg.session_timer if leg is not None else None
            if leg is None or timer is None or now < timer.due:
                continue
            side = leg.side.value.upper()
            if not timer.we_refresh:
                await self._hang_up(
                    f"session timer: the {side} leg did not refresh its session "
                    f"within {timer.seconds} s (RFC 4028)",
                    cause=408,
                )
            if now >= timer.expires_at:
                await self._hang_up(
                    f"session timer: the {side} leg could not be reached to refresh its "
                    f"session for {timer.seconds} s (RFC 4028)",
                    cause=408,
                )
            await self._refresh(leg, timer)

    async def _refresh(self, leg: Leg, timer: LegTimer) -> None:
        """Refresh ``leg``'s session with an UPDATE without a body (RFC 4028 §7.4, RFC 3311):
        nothing about the media changes, so nothing needs relaying."""
        timer.refreshing = True
        fields = [("Supported", "timer"), *self._refresh_headers(leg)]
        tag = InDialogRequest("refresh", leg.side)
        client = await self._send_in_dialog(leg, "UPDATE", tag=tag, extra=fields)
        if client is None:
            timer.refresh_failed(trio.current_time())

    async def _refresh_answered(self, tag: InDialogRequest, response: Response) -> None:
        """The answer to our refreshing UPDATE (RFC 4028 §7.2-§7.4, §10): a 2xx sets the leg's
        new timer; a 422 has us ask again for its Min-SE at once; an answer that ends the
        session (RFC 4028 §10: 408 or no answer, 481 the dialog gone at the device) ends the
        call. Any other answer (404, 480, 501 from a device that listed UPDATE after all, 491,
        500) still shows the device is there: the timer restarts, so a call is never ended for
        a refresh the device merely declined."""
        leg = self._leg(tag.side)
        timer = leg.session_timer
        if timer is None or not timer.refreshing:
            return  # the leg's timer was replaced meanwhile (a re-INVITE refreshed it)
        now = trio.current_time()
        min_se = min_se_of_422(response.headers) if response.status == 422 else None
        if response.is_success:
            leg.session_timer = self._refreshed_by_2xx(leg, response)
        elif min_se is not None and min_se > max(timer.seconds, timer.asked):
            timer.asked = min_se
            timer.refreshing = False
            timer.refresh_at = now
        elif self._ends_session("UPDATE", response.status):
            # RFC 4028 §10: 408 or no answer, 481: the leg's session is gone.
            what = f"session refresh of the {tag.side.value.upper()} leg"
            await self._session_lost(tag.side, "UPDATE", response, what=what)
        else:
            log.info(
                "call %s: session refresh of the %s leg answered %d %s; the device is there",
                self.id,
                tag.side.value.upper(),
                response.status,
                response.reason,
            )
            leg.session_timer = LegTimer(timer.seconds, timer.we_refresh, now, asked=timer.asked)
