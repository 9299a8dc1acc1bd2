"""The recording indication towards recording-aware parties (RFC 7866 §6.1, §7).

A party whose INVITE (the caller) or 2xx to ours (the callee) says ``Supported: record-aware``
(RFC 7866 §6.1, the option tag's IANA entry §11.1.2) can show its user whether the call is
recorded; a later re-INVITE or UPDATE of its, or its 2xx to ours, that lists its extensions
adds or drops it (:meth:`CallRecordingIndication._record_aware_restated`). Once a recording
of the call (a tap whose sink reports it: SIPREC, ``indicate_recording`` of
``interfaces.TappedCall``) has started, every SDP the gateway sends such a party carries
``a=record:on``, ``paused`` or ``off`` on each stream in use (§7.1.1; ``MediaSession``
writes it, relayed offers and answers included), and each change of the recording's state is
sent to it in a re-INVITE of ours (§7.1.1: the SRC tells the parties of a change by a new
offer) carrying the SDP last sent there with that one line changed and the next o= version
(RFC 3264 §8), the keys kept (RFC 4568 §7.1.4: nothing but the indication changes).

What it says follows the recording's real state (the sink's word): ``on`` once the recorder has
answered and copies go to it, ``paused`` from an operator's pause until the recorder took the
resume, ``off`` when the recording ended or failed for good (the recorder hung up, or none
could be reached again). Nothing is said before the recording first starts (a party is never
told ``off`` of a recording that never was), nor to a party that did not say record-aware: its
SDP is byte for byte what it always was.

A lawful interception never shows: it is no recording (RFC 7866 §1 leaves it out of scope) and
must not be seen (ETSI TS 103 221). Its sink is made at the call's start, where no tap is given
``indicate_recording``, and a covert sink's report is dropped here all the same; so neither its
presence nor its timing changes a byte of what the parties see.

Bounded. The sinks' reports are coalesced into one event of the call (:meth:`recording_indicated`
posts one while none is queued) and the call reads the states as they are when it handles it.
One indication re-INVITE at a time, to one leg at a time, each going with the state as it is
then (a pause and its resume in between cancel out: nothing is sent); the next no sooner than
:data:`INDICATION_INTERVAL` after the last one's answer, so a storm of pauses and resumes costs
each aware leg at most one re-INVITE per interval, and the last state always gets through.
While any other offer/answer exchange may be in progress the indication waits and looks again
(:meth:`CallRecordingIndication._exchange_in_progress`, one check for every kind: the media
session's offer, any INVITE or UPDATE transaction of that party's dialog still unanswered, ours
or its own, from the moment it arrives; our 2xx not yet ACKed; RFC 3261 §14.1, RFC 3311 §5.1-5.2,
RFC 3264 §4): that exchange's own SDP to an aware party carries the indication already.

Its failure is a notice's: RFC 3261 §14.1, a refusal (488, 500, 501 ...) leaves the session as
it was and the call goes on (logged at INFO; the same state is not offered again, the next
change is); 491 (the party's re-INVITE crossed ours) goes again after §14.1's wait, at most
:data:`INDICATION_GLARE_RETRIES` times; 408 or 481 (with ``[sip] in_dialog_failures = "strict"``
RFC 5057 §5.1's other endings too) end the call as for any re-INVITE whose dialog is gone
(``CallBase._session_lost``); no final response in 64*T1 after a provisional one: CANCEL
(§9.1). While ours is out, an offer from either leg gets 491 (§14.2).

``a=recordpref`` (§7.2: on, off, pause, nopreference) a party sends is a preference: the SRC
decides. The core reads it from each SDP of a party's that it takes (its INVITE, 2xx and early
answers, re-INVITEs, UPDATEs and their answers, the answer in its ACK to a late offer; never a
PRACK's: the gateway offers in no reliable 1xx), logs each new value at INFO, keeps it on the
leg (the call record's ``recordpref``, ``voipgw calls``) and tells the call's recording sinks
that have ``recordpref_changed``; what a recording does with it is its own
(``[plugins.siprec] recordpref``), and one that pauses or resumes for it is counted and listed
as a pause (``CallMediaKeys._tell_recordpref``). It goes on to the other party as any
attribute, as before.

Always a re-INVITE, also to a party that allows UPDATE (RFC 7866 §7.1.1 would take either):
RFC 3311 §5.1 recommends a re-INVITE in a confirmed dialog, every phone takes one, and phones
that list UPDATE take an offer in it unevenly there; an UPDATE would save one ACK.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, cast

import trio

from gateway.core.calls.base import log, sdp_body
from gateway.core.calls.events import InDialogRequest, RecordingIndicationEvent
from gateway.core.calls.leg import BLeg, Leg, Side
from gateway.core.calls.location_updates import CallLocationUpdates
from gateway.core.calls.media_keys import CallMediaKeys
from gateway.core.logs import transport_error_text
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.dialog import DialogState, glare_wait
from gateway.core.sip.message import Request, Response, cancel_for
from gateway.core.sip.transaction import State

if TYPE_CHECKING:
    from gateway.core.calls.call import Call
    from gateway.core.sip.message import Headers

RECORD_AWARE = "record-aware"
"""RFC 7866 §6.1's option tag of a UA that can show whether it is recorded."""

RECORD_STATES = ("on", "paused", "off")
"""``a=record`` values (RFC 7866 §7.1.1), also what a sink reports."""

RECORDPREF_VALUES = frozenset({"on", "off", "pause", "nopreference"})
"""``a=recordpref`` values (RFC 7866 §7.2); anything else is read as no preference."""

INDICATION_GLARE_RETRIES = 2
"""How often an indication re-INVITE is sent again after a 491 (RFC 3261 §14.1)."""

INDICATION_INTERVAL = 2.0
"""Seconds from one indication re-INVITE's answer to the next one's sending, at least: a storm
of pauses and resumes is at most one re-INVITE per aware leg this often, the latest state."""

OFFER_BUSY_WAIT = 0.5
"""Seconds to look again when another offer of the call was in progress (it may carry the
indication itself)."""


def says_record_aware(headers: Headers) -> bool:
    """Whether a request or response's Supported (or Require) lists ``record-aware``."""
    return headers.lists_option_tag(RECORD_AWARE)


def states_record_aware(headers: Headers) -> bool | None:
    """Whether a later request or response of a party says it is recording-aware: its
    Supported lists every extension it supports (RFC 3261 §20.37); None without one (it
    states nothing either way: many a 2xx to a session refresh carries none, or only
    ``Require: timer``, which lists what it requires, not all it supports)."""
    if RECORD_AWARE in headers.option_tags("Require"):
        return True
    if not headers.get_all("Supported"):
        return None
    return RECORD_AWARE in headers.option_tags("Supported")


def recordpref_of(body: bytes) -> str | None:
    """The ``a=recordpref`` value an SDP body states (RFC 7866 §7.2, session or media level:
    the last one), lower case; an unknown value counts as ``nopreference``; None: none. Read
    without parsing the SDP again (almost every body has none: one search)."""
    if b"a=recordpref:" not in body:
        return None
    found: str | None = None
    for line in body.splitlines():
        if line.startswith(b"a=recordpref:"):
            value = line[len(b"a=recordpref:") :].strip().decode("ascii", "replace").lower()
            found = value if value in RECORDPREF_VALUES else "nopreference"
    return found


class CallRecordingIndication(CallLocationUpdates, CallMediaKeys):
    """The recording indication towards recording-aware parties (the module's docstring)."""

    if TYPE_CHECKING:
        # CallReinvites' (reinvites.py), whose class comes later in Call's bases.
        def _offer_in_progress(self) -> bool: ...

        async def _resend_reinvite_ack(self, side: Side, response: Response) -> None: ...

    # -- the recordings' states (from the sinks' tasks) --------------------------------------------

    def recording_indicated(self, tap: str, state: str) -> None:
        """The recording of tap ``tap`` is in ``state`` (``on``, ``paused``, ``off``): called by
        its sink (``TappedCall.indicate_recording``), from its own task. A covert sink's word
        is dropped (an interception is never shown)."""
        if state not in RECORD_STATES:
            return
        taps = self.taps
        if taps is None or not taps.may_indicate(tap):
            return
        said = self._recording_states.get(tap)
        if said == state or (said is None and state == "off"):
            return  # "off" of a recording that never started says nothing (RFC 7866 §7.1.1)
        self._recording_states[tap] = state
        if not self._indication_posted:
            # One event stands for every change until the call's task reads the states; one
            # the full queue dropped must not stop the next change from posting again.
            self._indication_posted = self.post(RecordingIndicationEvent())

    def _wanted_indication(self) -> str | None:
        """What the parties are to be told: ``on`` while any recording is on, else ``paused``
        while any is paused, else ``off`` once one has started; None before any did."""
        states = self._recording_states.values()
        for state in ("on", "paused"):
            if state in states:
                return state
        return "off" if states else None

    def _note_record_aware(
        self, leg: Leg, message: Request | Response, side: Side | None = None
    ) -> None:
        """``message`` (the party's INVITE or 2xx) says whether ``leg``'s party, on ``side``
        (default: the leg's), is recording-aware (RFC 7866 §6.1): the SDP we send on that
        side says the recording's state, or nothing (a transfer target that is not aware in
        place of one that was gets no a=record, its first SDP included)."""
        leg.record_aware = says_record_aware(message.headers)
        self._indicate_to(leg, side or leg.side)

    def _record_aware_restated(self, leg: Leg, message: Request | Response) -> None:
        """A later re-INVITE or UPDATE of ``leg``'s party, or its 2xx to ours, lists its
        extensions (:func:`states_record_aware`): one that adds ``record-aware`` is told the
        recording's state from now on (our answer to its request says it, else a re-INVITE
        of ours once no exchange is in progress), one that drops it is told nothing more (RFC
        7866 §6.1: what it supports is what it says; RFC 3261 §20.37)."""
        aware = states_record_aware(message.headers)
        if aware is None or aware == leg.record_aware:
            return
        leg.record_aware = aware
        log.info(
            "call %s: the %s leg's party %s recording-aware (Supported: record-aware, RFC 7866 "
            "§6.1)",
            self.id,
            leg.side.value.upper(),
            "now says it is" if aware else "no longer says it is",
        )
        self._indicate_to(leg, leg.side)
        if aware:
            self._indication_again_at = min(self._indication_again_at, trio.current_time())
        self.manager.security_changed(cast("Call", self))

    def _indicate_to(self, leg: Leg, side: Side) -> None:
        """The SDP we send on ``side`` says the recording's state where ``leg``, the party
        there, is recording-aware, else nothing (RFC 7866 §6.1)."""
        if self.media is not None:
            self.media.indicate_recording(
                side.value, self._wanted_indication() if leg.record_aware else None
            )

    def _note_recordpref(
        self, leg: Leg, body: bytes | None, *, replacing: str | None = None
    ) -> None:
        """Read ``a=recordpref`` from SDP ``leg``'s party sent (RFC 7866 §7.2): a new value is
        logged at INFO, kept on the leg (the record) and told to the recording sinks.
        ``replacing``: the preference of the party ``leg``'s took the place of (a transfer):
        one that states none has none, which the sinks hear of."""
        pref = recordpref_of(body) if body else None
        if pref is None and replacing not in (None, "nopreference"):
            self._tell_recordpref(leg.side, "nopreference")
            return
        if pref is None or pref == leg.recordpref:
            return
        leg.recordpref = pref
        log.info(
            "call %s: the %s party's recording preference is %s (a=recordpref, RFC 7866 §7.2)",
            self.id,
            "calling" if leg.side is Side.A else "called",
            pref,
        )
        self._tell_recordpref(leg.side, pref)

    def _note_answer_recordpref(self, leg: BLeg, response: Response) -> None:
        """Read ``a=recordpref`` from the 2xx that answered our INVITE on ``leg``. Until then
        the leg kept the last one any early answer stated; a proxy downstream may have forked
        (RFC 3261 §16.7), and the phone that answers, in its own early dialog (§12.1.2), has
        the preference it stated itself there, or none (RFC 7866 §7.2), not another phone's."""
        early, leg.early_recordprefs = leg.early_recordprefs, {}
        if early:
            own = early.get(response.to.tag or "")
            if own != leg.recordpref:
                leg.recordpref = own
                log.info(
                    "call %s: the called party's recording preference is %s (a=recordpref, "
                    "RFC 7866 §7.2)",
                    self.id,
                    own or "nopreference",
                )
                self._tell_recordpref(leg.side, own or "nopreference")
        self._note_recordpref(leg, sdp_body(response))

    # -- the call's task ---------------------------------------------------------------------------

    async def _recording_indication_changed(self) -> None:
        """The :class:`RecordingIndicationEvent`: the aware legs' SDP says the state from now
        on, and a re-INVITE tells the ones whose last SDP said another."""
        self._indication_posted = False
        wanted = self._wanted_indication()
        if self.media is None:
            return
        for side in (Side.A, Side.B):
            leg = self._leg_or_none(side)
            if leg is not None and leg.record_aware:
                self.media.indicate_recording(side.value, wanted)
        await self._send_indication()

    def _leg_or_none(self, side: Side) -> Leg | None:
        return self.a if side is Side.A else self.b

    def _indication_due_leg(self) -> Leg | None:
        """An aware leg, confirmed, whose last SDP says another state than it is to be told."""
        media = self.media
        if media is None or self.state != "answered":
            return None
        glare = self._indication_glare_side
        for side in (Side.A, Side.B):
            leg = self._leg_or_none(side)
            if (
                leg is not None
                and leg.record_aware
                and leg.security is not None
                and leg.dialog is not None
                and leg.dialog.state is DialogState.CONFIRMED
                and (side is glare or not media.recording_indicated(side.value))
            ):
                return leg
        return None

    def _exchange_in_progress(self, leg: Leg) -> bool:
        """Whether an offer/answer exchange may be in progress on ``leg``'s dialog, whoever
        started it and for whatever (a re-INVITE or UPDATE relayed or of ours, a session
        refresh, a fork re-key, a transfer, a location update, a late offer whose answer comes
        in an ACK): our re-INVITE waits for it. RFC 3261 §14.1: no INVITE while another is in
        progress on the dialog in either direction; RFC 3311 §5.1-5.2: no offer while one is
        unanswered; RFC 3264 §4: one offer at a time in the call's one media session."""
        media = self.media
        return (
            self._offer_in_progress()
            or (media is not None and media.offerer is not None)
            or leg.side in self._retransmit_at  # our 2xx to its INVITE, not ACKed yet
            or bool(leg.exchanges_in_progress())
        )

    async def _send_indication(self) -> None:
        """Our indication re-INVITE to the first aware leg that needs one, when none is out,
        no other offer is in progress and the interval since the last one's answer is over."""
        self._indication_again_at = math.inf
        if self._indication is not None or self.media is None:
            return  # its answer looks again
        leg = self._indication_due_leg()
        if leg is None:
            self._indication_glare_tries, self._indication_glare_side = 0, None
            return
        now = trio.current_time()
        if now < self._indication_not_before:
            self._indication_again_at = self._indication_not_before
            return
        if self._exchange_in_progress(leg):
            self._indication_again_at = now + OFFER_BUSY_WAIT  # it may carry the state itself
            return
        security = leg.security
        assert security is not None
        side = leg.side
        plain = None
        try:
            plain = self.media.repeat_offer(side.value)  # the indication written in
            offer = security.make_offer(plain)  # the keys in force kept (RFC 4568 §7.1.4)
        except Exception as exc:
            if plain is not None:
                self.media.withdraw_repeated_offer(side.value)
            # Never the exception's text: it may hold keys. The party stays untold.
            log.warning(
                "call %s: cannot make the recording indication offer for the %s leg (%s)",
                self.id,
                side.value.upper(),
                type(exc).__name__,
            )
            return
        tag = await self._reinvite_with_repeated_offer(leg, side.value, offer, "record-indication")
        if tag is None:
            return
        self._indication, self._indication_glare_side = tag, None
        self._indication_deadline = now + 64 * self.config.sip.t1
        log.info(
            "call %s: telling the %s leg's recording-aware party a=record:%s (re-INVITE, "
            "RFC 7866 §7.1.1)",
            self.id,
            side.value.upper(),
            self.media.recording_indication(side.value),
        )

    async def _indication_timed_out(self) -> None:
        """64*T1 and no final response to our indication re-INVITE after a provisional one:
        CANCEL it (RFC 3261 §9.1); Timer B answers 408 where nothing came."""
        self._indication_deadline = math.inf
        sent = self._indication
        client = sent.client if sent is not None else None
        if sent is None or client is None or client.transaction.state is not State.PROCEEDING:
            return
        leg = self._leg_or_none(sent.side)
        if leg is not None:
            await self._send_on(leg, cancel_for(client.request))

    async def _indication_answered(self, tag: InDialogRequest, response: Response) -> None:
        """The final response to our indication re-INVITE."""
        leg = self._leg_or_none(tag.side)
        if tag is not self._indication or leg is None or self.media is None:
            await self._resend_reinvite_ack(tag.side, response)
            return
        self._indication, self._indication_deadline = None, math.inf
        assert leg.security is not None and leg.dialog is not None
        if not response.is_success:
            # Sent and refused: its o= version stays taken (RFC 3264 §8), withdrawn by nothing
            # later; the keys in force stay those of the last answer (RFC 3261 §14.1).
            leg.security.offer_refused()
            self.media.repeated_offer_refused(tag.side.value)
            if response.status == 491 and self._indication_glare_tries < INDICATION_GLARE_RETRIES:
                # Its SDP counts as sent (the next has the version after it, RFC 3264 §8) but
                # the party never took it: that leg is offered again, the state as it is then.
                self._indication_glare_tries += 1
                self._indication_glare_side = tag.side
                draw = int(self.manager.gateway.ids.token_hex(2), 16)
                # Not before the wait, whatever wakes _send_indication meanwhile (a change of
                # the recording's state, a party turning aware, the busy poll): sent sooner,
                # it would cross the party's own retry again.
                self._indication_not_before = trio.current_time() + glare_wait(
                    leg.dialog.owns_call_id, draw
                )
                self._indication_again_at = self._indication_not_before
                return
            if self._ends_session("INVITE", response.status):
                await self._session_lost(
                    tag.side, "INVITE", response, what="recording indication re-INVITE"
                )
                return
            # RFC 3261 §14.1: the session stays as it was. A notice, not worth a call: this
            # state is not offered again (the refused offer counts as sent), the next is.
            log.info(
                "call %s: the %s leg answered our recording indication re-INVITE %d %s; the "
                "call goes on",
                self.id,
                tag.side.value.upper(),
                response.status,
                response.reason[:64],
            )
            self._indication_not_before = trio.current_time() + INDICATION_INTERVAL
            await self._send_indication()
            return
        self._indication_glare_tries = 0
        leg.session_timer = self._refreshed_by_2xx(leg, response)
        try:
            flow = await self._leg_flow(leg)
            via = self.endpoint.new_via(flow)
        except OSError as exc:
            await self._hang_up(f"signalling failed: {transport_error_text(exc)}")
        ack = leg.dialog.create_ack(response.cseq.number, via=via)
        self._reinvite_acks[tag.side] = ack
        body = sdp_body(response)
        try:
            plain = leg.security.take_answer(parse_sdp_untrusted(body))
            self.media.answer_to_repeated_offer(
                tag.side.value, plain, rtcp_mux_offered=leg.security.offers_rtcp_mux
            )
            self._apply_keys(self.b)
            await self.media.applied()
        except Exception as exc:
            # A 2xx answer cannot be refused (RFC 3264 §8): ACK, then BYE (§13.2.2.4).
            failure = self._answer_failed(exc, "answer to re-INVITE")
            await self.endpoint.send_ack(ack, flow)
            await self._hang_up(failure.reason, cause=failure.status)
        await self.endpoint.send_ack(ack, flow)
        self._note_recordpref(leg, body)
        self.manager.security_changed(cast("Call", self))
        self._indication_not_before = trio.current_time() + INDICATION_INTERVAL
        await self._send_indication()  # a state that came meanwhile, after the interval
