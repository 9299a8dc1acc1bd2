"""DTMF interworking between SIP INFO and RFC 4733 events (docs/architecture.md).

When the media session decides one leg speaks telephone-event and the other does not, digits
heard as RFC 4733 events go to the other leg as INFO (application/dtmf-relay, RFC 6086 §4.2: in
the INVITE dialog usage, early or confirmed), one in flight at a time so that they arrive in
order, only if its device allows INFO; an INFO digit from that leg is answered here and sent on as
RFC 4733 events (§2.5), after any digit still being sent. An event whose end packets are all lost
is ended at its timer (RFC 4733 §2.5.2.2). Before the answer the INFO go in the early dialog whose
media the call relays (early media, RFC 3960).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import attrs
import trio

from gateway.core.calls.base import log
from gateway.core.calls.events import DtmfDigitEvent, InDialogRequest, RequestEvent
from gateway.core.calls.leg import Leg, Side
from gateway.core.calls.location_updates import CallLocationUpdates, allows
from gateway.core.media.dtmf import (
    DTMF_RELAY,
    Digit,
    DtmfError,
    dtmf_relay_body,
    event_packets,
    is_dtmf_info,
    parse_dtmf_info_untrusted,
)
from gateway.core.media.session import DtmfPlan
from gateway.core.sip.dialog import Dialog, DialogState
from gateway.core.sip.message import Response, make_response
from gateway.core.transport.flows import TLS_TRANSPORTS

if TYPE_CHECKING:
    from gateway.core.media.session import MediaSession


_DTMF_QUEUE = 64
"""Digits from INFO waiting to be sent as events; more are dropped (counted): at about 0.2 s
a digit, a longer queue would play digits long after the caller pressed them."""
_DTMF_PAUSE = 0.05
"""Seconds between two digits sent as events."""


class CallDtmfInfo(CallLocationUpdates):
    """DTMF interworking, INFO to RFC 4733 and back (the module's docstring)."""

    def _dtmf_heard(self, side: str, digit: Digit) -> None:
        """The media session read a digit of ``side``'s RFC 4733 events (in the relay's loop)."""
        plan = self.media.dtmf if self.media is not None else None
        party = None if plan is None else self._dtmf_party(plan.info_side)
        self.post(DtmfDigitEvent(side, digit, plan, party))

    def _dtmf_party(self, side: str) -> Leg | None:
        """The leg on ``side`` now, whose party a digit pressed now is for: before the answer
        on B, the leg whose early media the call relays. A leg that takes its place later (a
        transfer's target, :meth:`_take_over`; another fork) is another party: a digit
        pressed for this one (a PIN keyed to an IVR) must never reach it."""
        if side == Side.A.value:
            return self.a
        if self.b is not None:
            return self.b
        early = self._early_answer
        return None if early is None else early[0]

    def _dtmf_work(self) -> DtmfWork:
        if self._dtmf is None:
            self._dtmf = DtmfWork()
        return self._dtmf

    async def _dtmf_to_info(self, event: DtmfDigitEvent) -> None:
        """A digit from the RFC 4733 leg: one INFO on the other leg's dialog (confirmed, or
        the early dialog of early media), in order (the next once the previous is answered),
        if that leg's device allows INFO."""
        plan = event.plan
        if plan is None or plan.rfc4733_side != event.side:
            return  # heard outside an interworking (nothing to carry)
        work = self._dtmf_work()
        target = self._dtmf_info_target(plan)
        if target is None or target[0] is not event.party:
            work.info_failed += 1  # no dialog to send it in, or another party there now
            if target is not None:
                self._dtmf_party_left(plan.info_side)
            return
        if not _allows_info(target[0], self._early_response_of(target[0])):
            work.not_carried += 1
            if work.not_carried == 1:
                log.warning(
                    "call %s: the %s leg negotiated no telephone-event and does not allow "
                    "INFO: DTMF digits from the %s leg cannot be carried",
                    self.id,
                    plan.info_side.upper(),
                    plan.rfc4733_side.upper(),
                )
            return
        work.infos.append((event.digit, plan, event.party))
        await self._send_dtmf_info(work)

    def _early_response_of(self, leg: Leg) -> Response | None:
        """The 1xx whose early dialog with ``leg`` takes our requests before the answer."""
        early = self._early_answer
        if early is not None and early[0] is leg and leg.dialog is None:
            return early[1]
        return None

    def _dtmf_info_target(self, plan: DtmfPlan) -> tuple[Leg, Dialog] | None:
        """The leg and dialog a DTMF INFO goes to (RFC 6086 §4.2: in the INVITE dialog
        usage, early or confirmed): the INFO leg's confirmed dialog; before the answer, the
        early dialog of the media the call relays (B: the 1xx whose SDP answer is in use; A:
        ours, made at the first INFO from our 1xx's To tag). None: none (the early dialog
        ended, or no 1xx went to A yet)."""
        if plan.info_side == Side.A.value:
            a = self.a
            if a.dialog is not None:
                return (a, a.dialog) if a.dialog.state is not DialogState.TERMINATED else None
            if self.state != "ringing" or a.invite is None or self._early_answer is None:
                return None
            if self._a_early is None:
                # Our early dialog with A (RFC 3261 §12.1.1): the one our 1xx with SDP made.
                ringing = self._a_response(183)
                over_tls = a.transport in TLS_TRANSPORTS
                self._a_early = Dialog.create_uas(a.invite, ringing, over_tls=over_tls)
            return a, self._a_early
        if self.b is not None:
            dialog = self.b.dialog
            if dialog is None or dialog.state is DialogState.TERMINATED:
                return None
            return self.b, dialog
        early = self._early_answer
        if early is None or self.state != "ringing":
            return None
        leg, response = early
        if leg.finished or leg.cancel_wanted:
            return None
        dialog = self._early_dialog(leg, response)
        return None if dialog is None else (leg, dialog)

    async def _send_dtmf_info(self, work: DtmfWork) -> None:
        """Send the next digit waiting for its INFO (RFC 6086 §4.2: in the INVITE dialog
        usage, early or confirmed), unless one is in flight in that dialog. One in flight in
        a dialog the call left (another fork answered) no longer holds the queue: its answer
        is not waited for."""
        while work.infos:
            # The INFO leg of the plan the digit was heard under: a change since (RFC 4733
            # events left out of a re-answer) does not take back a digit already pressed.
            _, plan, party = work.infos[0]
            target = self._dtmf_info_target(plan)
            if target is None or target[0] is not party:
                work.info_failed += 1  # its dialog ended, or another party is there now
                work.infos.popleft()
                if target is not None:
                    self._dtmf_party_left(plan.info_side)
                continue
            leg, dialog = target
            if work.info_in_flight is not None:
                if work.info_dialog is dialog:
                    return  # sent on its answer (_dtmf_info_answered)
                work.info_in_flight = None
            digit, _, _ = work.infos.popleft()
            tag = InDialogRequest("dtmf", leg.side)
            sent = await self._send_in_dialog(
                leg,
                "INFO",
                body=dtmf_relay_body(digit),
                content_type=DTMF_RELAY,
                tag=tag,
                dialog=dialog,
            )
            if sent is not None:
                work.info_in_flight = tag
                work.info_dialog = dialog
                work.to_info += 1
                return
            work.info_failed += 1

    def _dtmf_party_left(self, side: str) -> None:
        """A digit for the party that was on ``side`` when it was pressed is not sent: another
        party is there now. Not the digit itself (it may be a PIN)."""
        log.info(
            "call %s: a DTMF digit pressed while another party was on the %s leg is not sent "
            "to the party there now",
            self.id,
            side.upper(),
        )

    async def _dtmf_info_answered(self, tag: InDialogRequest, response: Response) -> None:
        work = self._dtmf
        if work is None or work.info_in_flight is not tag:
            return
        work.info_in_flight = None
        if not response.is_success:
            work.info_failed += 1
            log.info(
                "call %s: the %s leg answered a DTMF INFO %d %s",
                self.id,
                tag.side.value.upper(),
                response.status,
                response.reason,
            )
            if self.state == "answered":
                # RFC 5057 §5.1: an INFO travels in the invite usage; a 481 or 408 (or no
                # answer) to it says the leg's session is gone. (In an early dialog the
                # INVITE's own answer decides.)
                what = f"DTMF INFO to the {tag.side.value.upper()} leg"
                await self._session_lost(tag.side, "INFO", response, what=what)
        if work.infos:
            await self._send_dtmf_info(work)

    def _dtmf_timer_armed(self) -> None:
        """An RFC 4733 event began (in the relay's loop): wake the task that ends it if its
        end packets never come (RFC 4733 §2.5.2.2), started with the call's first event."""
        if self._dtmf_wake is None:
            if not self.manager.start_child(self, self._dtmf_timeouts):
                return
            self._dtmf_wake = trio.Event()
        self._dtmf_wake.set()

    async def _dtmf_timeouts(self) -> None:
        """End, at its timer, each RFC 4733 event whose end packets were all lost: its digit
        goes on as if they had come (once: :meth:`MediaSession.dtmf_timeout`). Sleeps while
        no event is unfinished."""
        media = self.media
        while media is not None and not media.closed:
            self._dtmf_wake = trio.Event()
            timer = media.dtmf_timer()
            if timer is None:
                await self._dtmf_wake.wait()
                continue
            await trio.sleep_until(timer)
            media.dtmf_timeout(trio.current_time())

    async def _info_to_dtmf(self, event: RequestEvent) -> None:
        """An INFO digit from the leg without telephone-event: answered here (200, or 400 for
        a body that is no digit), never relayed; its digit goes to the other leg as RFC 4733
        events, after any digit still being sent."""
        request = event.request
        try:
            digit = parse_dtmf_info_untrusted(request.content_type or "", request.body)
        except DtmfError as err:
            await self.endpoint.respond(
                event.transaction, make_response(request, 400, f"Bad Request ({err.reason})")
            )
            return
        await self.endpoint.respond(event.transaction, make_response(request, 200))
        work = self._dtmf_work()
        if len(work.events) >= _DTMF_QUEUE:
            work.events_dropped += 1  # a flood of INFOs: the digits would arrive too late
            return
        # The party on the RFC 4733 leg now is the one the digit is for (_dtmf_party).
        work.events.append(
            (digit, self._dtmf_party(Side.B.value if event.side is Side.A else Side.A.value))
        )
        if not work.injecting and self.manager.start_child(self, self._inject_dtmf, work):
            work.injecting = True

    async def _inject_dtmf(self, work: DtmfWork) -> None:
        """Send the digits from INFO as RFC 4733 events, one after the other, each timed as
        :func:`~gateway.core.media.dtmf.event_packets` plans (marker on the first, one
        timestamp, updates every 50 ms, three end packets: RFC 4733 §2.5), with a pause
        between digits (a new event takes a new timestamp, §2.5.1.2)."""
        try:
            while work.events and self.media is not None:
                digit, party = work.events.popleft()
                plan = self.media.dtmf
                if plan is None:
                    work.events_dropped += 1
                    continue
                if self._dtmf_party(plan.rfc4733_side) is not party:
                    work.events_dropped += 1
                    self._dtmf_party_left(plan.rfc4733_side)
                    continue
                started = trio.current_time()
                sent = 0
                for index, packet in enumerate(event_packets(digit, clock_rate=plan.clock_rate)):
                    await trio.sleep_until(started + packet.at)
                    if self.media is None or self.media.dtmf is not plan:
                        break  # the plan changed mid-digit: the relay ended the event then
                    if self.media.send_dtmf_event(
                        packet.payload, marker=packet.marker, start=index == 0
                    ):
                        sent += 1
                if sent:
                    work.to_rfc4733 += 1
                else:
                    work.events_dropped += 1
                await trio.sleep(_DTMF_PAUSE)
        finally:
            work.injecting = False

    def _early_dtmf_info(self, event: RequestEvent) -> bool:
        """Whether a request before the answer is a DTMF INFO to interwork: from the leg
        without telephone-event of the plan the early media made, in the early dialog whose
        media the call relays (for B, the one whose 1xx brought the answer in use)."""
        request = event.request
        plan = self.media.dtmf if self.media is not None else None
        if plan is None or plan.info_side != event.side.value:
            return False
        if not is_dtmf_info(request.content_type):
            return False
        if event.side is Side.B:
            early = self._early_answer
            invite = early[0].invite if early is not None else None
            if early is None or invite is None:
                return False
            if request.call_id != invite.call_id or request.from_.tag != early[1].to.tag:
                return False  # another fork's early dialog: not the media the call relays
        return True


@attrs.define
class DtmfWork:
    """A call's DTMF interworking in progress (:meth:`Call._dtmf_to_info`,
    :meth:`Call._info_to_dtmf`) and its counts for the call record."""

    # Each digit with the plan it was heard under and the INFO leg's party then.
    infos: deque[tuple[Digit, DtmfPlan, Leg | None]] = attrs.Factory(deque)
    info_in_flight: InDialogRequest | None = None
    info_dialog: Dialog | None = None  # the dialog the INFO in flight went in
    events: deque[tuple[Digit, Leg | None]] = attrs.Factory(deque)  # and the party it is for
    injecting: bool = False
    to_info: int = 0
    info_failed: int = 0
    not_carried: int = 0
    to_rfc4733: int = 0
    events_dropped: int = 0

    def record(self, media: MediaSession | None) -> dict[str, object]:
        record: dict[str, object] = {
            "digits_to_info": self.to_info,
            "digits_to_rfc4733": self.to_rfc4733,
        }
        plan = media.dtmf if media is not None else None
        if plan is not None:
            record["rfc4733_leg"] = plan.rfc4733_side
            record["info_leg"] = plan.info_side
        packets = media.dtmf_statistics() if media is not None else {}
        if packets or plan is not None:
            # Every interworking of the call's (a plan that ended mid-call too).
            record["packets"] = packets
        if self.not_carried:
            record["not_carried"] = self.not_carried
            record["why"] = "the INFO leg does not allow INFO"
        if self.info_failed:
            record["info_failed"] = self.info_failed
        if self.events_dropped:
            record["events_dropped"] = self.events_dropped
        if media is not None and media.dtmf_timeouts:
            record["ended_by_timeout"] = media.dtmf_timeouts
        return record


def _allows_info(leg: Leg, early: Response | None = None) -> bool:
    """Whether the leg's device allows INFO (:func:`allows`)."""
    return allows(leg, "INFO", early)
