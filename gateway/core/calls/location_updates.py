"""A caller's location (RFC 6442) carried to the trunks whose policy allows it.

At set-up the location A's INVITE conveys (Geolocation, a PIDF-LO part: ``location.py``) is
checked (400 or 424 for one we cannot pass on) and put in our INVITE to a trunk whose
``location`` policy passes it, in a multipart body of ours (RFC 5621). A new location in the
caller's re-INVITE or UPDATE (§4.1) goes on too: an UPDATE with an offer is relayed as a
re-INVITE; one without becomes an UPDATE of ours to the trunk (RFC 3311 §5.1; before the answer
in its early dialog), whose answer is the caller's, waited for at most the trunk's
``response_timeout`` (else LOCATION_UPDATE_WAIT): past it the caller gets 200 and the trunk's
late answer is absorbed. A Geolocation-Error in a trunk's answer to anything that carried the
location goes on in ours to the caller (§4.3) and into the call record.
"""

from __future__ import annotations

from collections.abc import Sequence

import trio

from gateway.core.calls.base import log
from gateway.core.calls.events import LocatedRequest, RequestEvent, ResponseEvent
from gateway.core.calls.leg import MAX_EARLY_DIALOGS, ALeg, BLeg, Leg, Side
from gateway.core.calls.location import (
    Location,
    LocationError,
    geolocation_errors,
    location_body,
    location_error_code_untrusted,
    location_headers,
    offered_location,
    passes,
    with_location,
)
from gateway.core.calls.session_timers import CallSessionTimers
from gateway.core.sdp.body import BodyPart
from gateway.core.sip.dialog import Dialog, DialogState
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.session_timer import UasAnswer
from gateway.core.transport.flows import TLS_TRANSPORTS

# Geolocation-Errors one call's record keeps, at most (a trunk may repeat one in every 1xx).
MAX_LOCATION_ERRORS = 8
# Answers to our location UPDATE that say nothing about the location, only that it did not get
# there (the trunk takes no UPDATE, a challenge we could not answer, our session interval too
# small for it, RFC 4028 §6): the caller's UPDATE is answered as if it had brought none, rather
# than failed for the trunk's reasons (a 422 without the caller's Min-SE would mislead it).
LOCATION_NOT_DELIVERED = frozenset({401, 405, 407, 422, 501})
# How long the caller's UPDATE waits for the trunk's answer to our location UPDATE when the
# trunk sets no ``response_timeout`` (which bounds it otherwise), in seconds. Never longer than
# half of 64*T1: the caller's UPDATE is its session refresh too (RFC 4028 §10), and a phone
# whose refresh gets no answer in 64*T1 tears the call down. Past it the caller gets 200, as
# for a trunk that takes no UPDATE (LOCATION_NOT_DELIVERED); the trunk's late answer is
# absorbed. Carriers answer within milliseconds; a few seconds finds a silent one.
LOCATION_UPDATE_WAIT = 4.0


class CallLocationUpdates(CallSessionTimers):
    """The caller's RFC 6442 location carried on (the module's docstring)."""

    async def _take_location(self, invite: Request, parts: Sequence[BodyPart]) -> None:
        """Check the location ``invite`` conveys (RFC 6442, location.py): 400 or 424 for one we
        cannot pass on; else keep it for the B legs."""
        try:
            self.location = offered_location(invite, parts)
        except LocationError as err:
            phrase = "Bad Location Information" if err.status == 424 else "Bad Request"
            reason = f"{phrase} ({err.reason})"
            await self._reject_a(err.status, reason, err.reason, extra=err.extra_headers())
        if self.location.conveyed == "none":
            log.info("call %s: location part not named by Geolocation left out", self.id)
            self.location = None  # RFC 6442 §4.1: no location conveyed
            return
        self._location_emergency = (
            self.caller.kind == "account" and self.manager.calls_emergency_number(invite)
        )

    def _location_update(
        self, side: Side, request: Request, parts: Sequence[BodyPart]
    ) -> Location | None:
        """The location a re-INVITE or UPDATE from ``side`` conveys (RFC 6442 §4.1 lists both:
        a location that changed during the call, as an emergency caller moves, also before the
        answer), checked as at set-up; None for none, for the callee's (only the caller's
        location is ever passed on, as at set-up), and for one that fails the checks: unlike a
        first INVITE's, it is left out and the request goes on, since refusing it (424) would
        also refuse the hold, codec change or session refresh it carries, in what may be an
        emergency call."""
        method = "re-INVITE" if request.method == "INVITE" else request.method
        if side is not Side.A:
            log.info("call %s: location in the callee's %s not passed on", self.id, method)
            return None
        try:
            location = offered_location(request, parts)
        except LocationError as err:
            log.warning(
                "call %s: location update in a %s left out (%s)", self.id, method, err.reason
            )
            return None
        if location.conveyed == "none":
            log.info("call %s: location part not named by Geolocation left out", self.id)
            return None
        self.location = location  # the call's record shows how it was last conveyed
        return location

    def _passes_location(self, leg: Leg, location: Location) -> bool:
        """Whether a location update goes in our re-INVITE to ``leg``: the policy of its trunk
        (``location``) for this call, as at set-up; never to a phone. Logged and recorded."""
        trunk = self._leg_trunk(leg) if isinstance(leg, BLeg) else None
        invite = self.a.invite
        emergency = (
            self.caller.kind == "account"
            and invite is not None
            and self.manager.calls_emergency_number(invite)
        )
        to = trunk.name if trunk is not None else "the other leg"
        if not passes(trunk.location if trunk else None, emergency=emergency):
            log.info(
                "call %s: location update (%s) not passed to %s", self.id, location.described(), to
            )
            if to not in self._location_dropped:
                self._location_dropped.append(to)
            return False
        log.info("call %s: location update (%s) passed to %s", self.id, location.described(), to)
        if to not in self._location_to:
            self._location_to.append(to)
        self._location_updates += 1
        return True

    def _geolocation_errors(
        self, leg: Leg, response: Response, *, relayed: bool = True
    ) -> list[tuple[str, str]]:
        """The Geolocation-Error fields of ``leg``'s ``response`` to a request of ours that
        carried the caller's location, for our response to the caller (RFC 6442 §4.3: the
        error concerns the location the caller sent, and is the caller's to act on, by sending
        it again or another); each code noted in the call record and logged once. ``relayed``
        False: the caller's request was answered without them (the log says so)."""
        errors = geolocation_errors(response)
        if not errors:
            return errors
        trunk = self._leg_trunk(leg) if isinstance(leg, BLeg) else None
        name = trunk.name if trunk is not None else leg.shown_as
        noted = self._location_errors
        if noted is None:
            noted = self._location_errors = []
        for _, value in errors:
            code = location_error_code_untrusted(value) or "unreadable"
            entry: dict[str, object] = {"from": name, "status": response.status, "code": code}
            if entry in noted or len(noted) >= MAX_LOCATION_ERRORS:
                continue
            noted.append(entry)
            log.warning(
                "call %s: %s answered %d with Geolocation-Error %s (RFC 6442 §4.3); %s",
                self.id,
                name,
                response.status,
                code,
                "relayed to the caller" if relayed else "not relayed: the caller had its answer",
            )
        return errors

    def _room_for_early_dialog(self, leg: BLeg, response: Response) -> bool:
        """Whether ``leg`` may keep one more early dialog (:data:`MAX_EARLY_DIALOGS`, for the
        To tag of ``response``). The first time it may not is said at INFO, once per leg: a
        callee sending 1xx under ever new tags is not logged once per 1xx."""
        if len(leg.early_dialogs) < MAX_EARLY_DIALOGS:
            return True
        if not leg.early_dialogs_full:
            leg.early_dialogs_full = True
            log.info(
                "call %s: %s sent a %d under a new To tag past %d early dialogs: none kept for "
                "it (not PRACKed, no UPDATE or INFO into it; RFC 3261 §12.1.2, RFC 3262 §3)",
                self.id,
                leg.shown_as,
                response.status,
                MAX_EARLY_DIALOGS,
            )
        return False

    def _early_dialog(self, leg: BLeg, response: Response) -> Dialog | None:
        """Our early dialog with ``leg``'s callee that its 1xx ``response`` made (RFC 3261
        §12.1.2, §13.2.2.4: an unreliable 1xx with a To tag makes one too), kept where the 2xx
        finds it so that our requests in it continue its CSeq; None once it has ended."""
        tag = response.to.tag
        if tag is None or leg.invite is None:
            return None
        dialog = leg.early_dialogs.get(tag)
        if dialog is None:
            if not self._room_for_early_dialog(leg, response):
                return None
            over_tls = leg.transport in TLS_TRANSPORTS
            dialog = Dialog.create_uac(leg.invite, response, over_tls=over_tls)
            leg.early_dialogs[tag] = dialog
        return None if dialog.state is DialogState.TERMINATED else dialog

    def _location_update_parts(
        self, location: Location
    ) -> tuple[list[tuple[str, str]], bytes, str | None]:
        """What our UPDATE without an offer carries of ``location``: its Geolocation fields
        and, by value, a multipart/mixed body of the location parts alone (RFC 5621 §3.1);
        by reference no body."""
        ids = self.manager.gateway.ids
        located = location_body(location, b"", lambda: ids.token_hex(8))
        body, content_type = located if located is not None else (b"", None)
        return location_headers(location), body, content_type

    async def _location_to_b(
        self, event: RequestEvent, location: Location, timer: UasAnswer
    ) -> bool:
        """The caller's UPDATE without an offer brought a new location (RFC 6442 §4.1 lists
        UPDATE; RFC 3311 §5.1: an UPDATE need not carry an offer): relay it in an UPDATE of
        ours to the other leg where its trunk's policy passes it and it takes UPDATE (its Allow
        lists it, or it sent none, RFC 3261 §20.5). The caller's UPDATE gets that leg's answer
        (:meth:`_location_update_answered`); our UPDATE refreshes that leg's session too, as
        the caller's does its own (RFC 4028 §10). False: nothing sent, the caller's UPDATE is
        the session refresh it also is."""
        other = self._leg(event.side.other)
        if other.dialog is None or not allows(other, "UPDATE"):
            log.warning(
                "call %s: location update not passed on: the %s leg does not allow UPDATE",
                self.id,
                other.side.value.upper(),
            )
            return False
        if not self._passes_location(other, location):
            return False
        headers, body, content_type = self._location_update_parts(location)
        tag = LocatedRequest(
            "location",
            other.side,
            relayed=(event.transaction, event.request),
            location_to=other,
            answer_timer=timer,
        )
        if not self._bound_location_wait(tag):
            return False
        sent = await self._send_in_dialog(
            other,
            "UPDATE",
            body=body,
            content_type=content_type,
            tag=tag,
            extra=[("Supported", "timer"), *self._refresh_headers(other), *headers],
        )
        if sent is None:
            self._unbound_location_wait(tag)
            return False
        return True

    async def _location_to_early_legs(self, event: RequestEvent, location: Location) -> bool:
        """The caller's UPDATE in its early dialog brought a new location (an emergency
        caller's location often changes before the answer): an UPDATE of ours with it in the
        early dialog of each callee still ringing (its latest 1xx's) where the policy passes it
        and the 1xx does not leave UPDATE out of its Allow (RFC 3311 §5.1: UPDATE is allowed
        in an early dialog; without an offer it needs no reliable 1xx). The caller's UPDATE
        gets the first answer (:meth:`_location_update_answered`). Later INVITEs of the call
        (failover) carry it as well (``self.location``). A callee that has answered before the
        call is up (our 2xx waits for the PRACK of a reliable 1xx with SDP, RFC 3262 §3, or the
        caller has our 2xx with an offer and not yet ACKed it) gets it in its confirmed dialog,
        as a session refresh of that leg too (RFC 4028 §10). False: none sent."""
        sent = False
        for leg in self.b_legs:
            response = leg.last_provisional
            dialog = leg.dialog if leg is self.b else None
            answered = dialog is not None and dialog.state is DialogState.CONFIRMED
            if not answered and (leg.finished or leg.cancel_wanted or response is None):
                continue
            if not allows(leg, "UPDATE", response):
                log.warning(
                    "call %s: location update not passed on: %s does not allow UPDATE",
                    self.id,
                    leg.shown_as,
                )
                continue
            if not self._passes_location(leg, location):
                continue
            headers, body, content_type = self._location_update_parts(location)
            if answered:
                headers = [("Supported", "timer"), *self._refresh_headers(leg), *headers]
            else:
                assert response is not None
                dialog = self._early_dialog(leg, response)
                if dialog is None:
                    continue
            tag = LocatedRequest(
                "location",
                leg.side,
                relayed=(event.transaction, event.request),
                location_to=leg,
                refreshes=answered,
            )
            if not self._bound_location_wait(tag):
                break  # the call is ending: no callee gets it now
            client = await self._send_in_dialog(
                leg,
                "UPDATE",
                body=body,
                content_type=content_type,
                tag=tag,
                extra=headers,
                dialog=dialog,
            )
            if client is None:
                self._unbound_location_wait(tag)
            else:
                sent = True
        return sent

    def _bound_location_wait(self, tag: LocatedRequest) -> bool:
        """Bound how long the caller's UPDATE waits for the answer to our location UPDATE
        ``tag``, before it is sent: the trunk's ``response_timeout``, else
        LOCATION_UPDATE_WAIT, at most 32*T1 (half of Timer F, RFC 3261 §17.1.2.2). A task of
        the call's (only calls whose caller updates its location have one) posts our 408 then
        (``tag.overdue``), unless the answer came first and cancelled it. False when that task
        cannot start (the call's task is not in its states: the call is ending): the UPDATE is
        not sent, and the caller's UPDATE is answered as one whose location was not passed on
        rather than left waiting for an answer nobody bounds."""
        leg = tag.location_to
        trunk = self._leg_trunk(leg) if isinstance(leg, BLeg) else None
        wait = LOCATION_UPDATE_WAIT
        if trunk is not None and trunk.response_timeout > 0:
            wait = trunk.response_timeout
        tag.wait = min(wait, 32 * self.config.sip.t1)
        tag.wait_scope = trio.CancelScope()
        if self.manager.start_child(self, self._location_update_overdue, tag):
            return True
        tag.wait_scope = None
        name = trunk.name if trunk is not None else leg.shown_as if leg is not None else "?"
        log.info("call %s: location update not passed on to %s: the call is ending", self.id, name)
        return False

    @staticmethod
    def _unbound_location_wait(tag: LocatedRequest) -> None:
        """Our location UPDATE ``tag`` was not sent after all: its bounded wait ends."""
        if tag.wait_scope is not None:
            tag.wait_scope.cancel()

    async def _location_update_overdue(self, tag: LocatedRequest) -> None:
        assert tag.wait_scope is not None
        with tag.wait_scope:
            await trio.sleep(tag.wait)
            # Seen by the call's task as the UPDATE's answer (_location_update_answered).
            tag.overdue = Response(408, f"Request Timeout (no answer within {tag.wait:g} s)")
            self.post(ResponseEvent(tag, tag.overdue))

    async def _location_update_answered(self, tag: LocatedRequest, response: Response) -> None:
        """The final answer to our UPDATE with the caller's location: the caller's UPDATE
        gets its counterpart, with the Geolocation-Error it carries (RFC 6442 §4.3), once (the
        first of several early dialogs answers it). A 2xx refreshes both legs' sessions in a
        confirmed dialog (RFC 4028 §10). An answer that says only that the location did not get
        there (LOCATION_NOT_DELIVERED; in an early dialog also 408 and 481, which end only
        that callee's early dialog) answers the caller's UPDATE as if it had brought none:
        200, logged. In a confirmed dialog 408 and 481 end the call, as for a re-INVITE (RFC
        3261 §12.2.1.2: that leg's dialog is gone; ``_ends_session``), the caller's UPDATE
        answered 500/504 with the Geolocation-Error (``_lost_answer``).

        No answer within the bounded wait (``tag.overdue``, :meth:`_bound_location_wait`) is
        not delivered either: 200 to the caller, the call kept, the trunk noted in the call
        record's location errors. Its answer when it comes (or Timer F's 408) is absorbed: the
        caller has had its answer; a 2xx still refreshes that leg's session."""
        assert tag.relayed is not None and tag.location_to is not None
        transaction, request = tag.relayed
        overdue = response is tag.overdue
        if not overdue and tag.wait_scope is not None:
            tag.wait_scope.cancel()
        timer = tag.answer_timer
        if transaction.final_status is not None:
            # Another early dialog's answer went to the caller, or we stopped waiting: a
            # Geolocation-Error in this answer is noted, not relayed.
            if not overdue:
                self._geolocation_errors(tag.location_to, response, relayed=False)
                if tag.overdue is not None:
                    self._late_location_answer(tag, response)
            return
        caller = self._leg(tag.side.other)
        status = response.status
        errors: list[tuple[str, str]] = []
        if overdue:
            self._location_update_unanswered(tag, response)
            status = 200
        elif status in LOCATION_NOT_DELIVERED or (timer is None and status in (408, 481)):
            log.warning(
                "call %s: location update not delivered to the %s leg (%d %s)",
                self.id,
                tag.side.value.upper(),
                status,
                response.reason,
            )
            self._geolocation_errors(tag.location_to, response, relayed=False)
            status = 200
        else:
            errors = self._geolocation_errors(tag.location_to, response)
        if status >= 300:
            if timer is not None and self._ends_session("UPDATE", status):
                # A confirmed dialog whose session the answer ended (408, 481; more with
                # in_dialog_failures = "strict"): the caller's UPDATE is answered and the call
                # ended as for any relayed request (500/504, never the trunk's 481, which would
                # end the caller's dialog under our BYE), the Geolocation-Error with it (§4.3).
                answer = self._lost_answer(request, tag.side, response, errors)
                await self.endpoint.respond(transaction, answer)
                what = f"location UPDATE to the {tag.side.value.upper()} leg"
                await self._session_lost(tag.side, "UPDATE", response, what=what)
                return
            await self.endpoint.respond(
                transaction, make_response(request, status, response.reason, extra=errors)
            )
            return
        fields = [("Contact", str(caller.contact)), *errors]
        if timer is not None:
            fields += timer.headers()
        if (timer is not None or tag.refreshes) and response.is_success:
            leg = tag.location_to
            leg.session_timer = self._refreshed_by_2xx(leg, response)
        await self.endpoint.respond(transaction, make_response(request, 200, extra=fields))
        if timer is not None:
            caller.session_timer = self._started(timer)

    def _location_update_unanswered(self, tag: LocatedRequest, overdue: Response) -> None:
        """Our location UPDATE ``tag`` had no answer within its bounded wait: logged, and noted
        in the call record's location errors (the trunk, and how long it was given)."""
        leg = tag.location_to
        assert leg is not None
        trunk = self._leg_trunk(leg) if isinstance(leg, BLeg) else None
        name = trunk.name if trunk is not None else leg.shown_as
        log.warning(
            "call %s: location update not delivered to %s (%s); the caller's UPDATE answered 200",
            self.id,
            name,
            overdue.reason,
        )
        noted = self._location_errors
        if noted is None:
            noted = self._location_errors = []
        entry: dict[str, object] = {"from": name, "unanswered_after": tag.wait}
        if entry not in noted and len(noted) < MAX_LOCATION_ERRORS:
            noted.append(entry)

    def _late_location_answer(self, tag: LocatedRequest, response: Response) -> None:
        """The trunk's answer to our location UPDATE ``tag`` after the caller's UPDATE was
        answered without it (its bounded wait ran out): absorbed, logged; a Geolocation-Error
        in it went into the call record only (:meth:`_geolocation_errors`). A 2xx in a
        confirmed dialog refreshed that leg's session all the same (RFC 4028 §10)."""
        leg = tag.location_to
        assert leg is not None
        log.info(
            "call %s: late answer to the location update on the %s leg absorbed (%d %s)",
            self.id,
            tag.side.value.upper(),
            response.status,
            response.reason,
        )
        dialog = leg.dialog
        live = dialog is not None and dialog.state is not DialogState.TERMINATED
        refreshes = tag.answer_timer is not None or tag.refreshes
        if refreshes and response.is_success and live:
            leg.session_timer = self._refreshed_by_2xx(leg, response)

    def _with_location(self, leg: BLeg, request: Request, location: Location) -> Request:
        """``request`` to ``leg`` with the caller's location where the policy passes it (a
        trunk's ``location``; never to a phone), else as it is (the location dropped)."""
        trunk = self._leg_trunk(leg)
        to = trunk.name if trunk is not None else leg.shown_as
        if not passes(trunk.location if trunk else None, emergency=self._location_emergency):
            log.info("call %s: location (%s) not passed to %s", self.id, location.described(), to)
            self._location_dropped.append(to)
            return request
        log.info("call %s: location (%s) passed to %s", self.id, location.described(), to)
        self._location_to.append(to)
        leg.location_passed = True
        ids = self.manager.gateway.ids
        return with_location(request, location, request.body, lambda: ids.token_hex(8))


def allows(leg: Leg, method: str, early: Response | None = None) -> bool:
    """Whether the leg's device allows ``method``: its Allow header (from its INVITE, or its
    2xx; before the answer the 1xx of ``early``) lists it. No Allow at all says nothing (RFC
    3261 §20.5): then the request is sent."""
    message: Request | Response | None = None
    if isinstance(leg, ALeg):
        message = leg.invite
    elif isinstance(leg, BLeg):
        message = leg.final or early
    if message is None:
        return True
    allowed = message.headers.get_all("Allow")
    if not allowed:
        return True
    return any(m.strip().upper() == method for value in allowed for m in value.split(","))
