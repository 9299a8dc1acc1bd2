"""The call's media: answers applied through each leg's security, keys, handshakes, taps.

An SDP answer from a leg goes through its security (SDES, RFC 4568; DTLS-SRTP, RFC 5763), the
media session and the other leg's security before it reaches the other side; the keys each leg
negotiated are applied to the relay; a DTLS-SRTP handshake on the media path is driven by a task
of the call, whose failure ends the call with a stated reason (issue #6); the taps (recording,
lawful interception) start once the call is answered. An answer that cannot be applied ends the
call as RFC 3261 §13.2.2.4 has a UAC do (ACK the 2xx, then BYE). The call's security record
(ARCHITECTURE.md "Security state is data") says what each leg negotiated.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

import trio

from gateway.core.calls.base import CallBase, log
from gateway.core.calls.events import AnswerFailure, CallEnded, EndCallEvent, KeyFailureEvent
from gateway.core.calls.leg import BLeg, Side
from gateway.core.calls.routing import ContactTarget, TrunkHopTarget
from gateway.core.logs import log_exception
from gateway.core.media.handshakes import CallHandshakes
from gateway.core.media.security import KeyExchangeFailed, LegSecurity
from gateway.core.media.taps import CallTaps, tapped_media
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import SessionDescription

if TYPE_CHECKING:
    from gateway.core.calls.call import Call

# Enum members read at run time, as module names: on CPython 3.11 a member read from its
# class goes through EnumType's __getattr__ hook, ~900 instructions (docs/benchmarks.md,
# sessions 44 and 45).
_S_A = Side.A
_S_B = Side.B


MAX_SDP_KEYED_TAGS = 8
"""The early dialogs' To tags a B leg remembers as keyed by our SDP keys
(``BLeg.sdp_keyed_tags``): any two tell whether a 2xx comes from another phone than one of
them (CallForkRekey); more only make the log's count of them exact."""


class CallMediaKeys(CallBase):
    """Answers applied, keys, DTLS handshakes and taps of the call's media (the module's
    docstring)."""

    def _answer_via(
        self, leg: BLeg, answer: SessionDescription, tag: str, *, final: bool = False
    ) -> SessionDescription:
        """B leg ``leg`` answered our offer in its dialog (early or confirmed) of To tag ``tag``:
        its keys, the relay, and our answer for A. ``final``: the answer of its 2xx."""
        assert self.media is not None and leg.security is not None
        assert self.a.security is not None
        # A 2xx from another early dialog than the early answer in force: a proxy downstream
        # forked our offer and another phone answered (RFC 3261 §12.1.2). Its handshake on the
        # media path is its own (RFC 5763 §5): LegSecurity.read_answer begins it afresh.
        early = self._early_answer
        another_phone = (
            final and early is not None and early[0] is leg and (early[1].to.tag or "") != tag
        )
        # Each step all or nothing, the leg's keys in force only once the relay took the
        # answer too: an early answer refused there (a fork's 183 whose second line cannot be
        # relayed, CallRinging ignores it) leaves the early media as it was.
        read = leg.security.read_answer(answer, final=final, another_phone=another_phone)
        plain = self.media.answer_from(
            _S_B.value, read.plain, rtcp_mux_offered=leg.security.offers_rtcp_mux
        )
        leg.security.apply_answer(read)
        if leg.security.keys_handed_out_in_sdp():
            # This dialog's phone holds the keys our offer handed out (CallForkRekey).
            if leg.sdp_keyed_tags is None:
                leg.sdp_keyed_tags = set()
            # Bounded: a callee's stream of 183s under ever new To tags must not grow it while
            # the call rings. Two tags already decide (one of them is not the 2xx's).
            if len(leg.sdp_keyed_tags) < MAX_SDP_KEYED_TAGS:
                leg.sdp_keyed_tags.add(tag)
        answer_a = self.a.security.make_answer(plain)
        self._apply_keys(leg)
        # A's handshake, ours to start when we answered active (RFC 5763 §5), waits until this
        # answer (our fingerprint) went to A: _respond_a releases it. A ClientHello ahead of
        # our 200 was ignored by the caller (baresip) and resent 1 s later (RFC 6347
        # §4.2.4.1), clipping a second of the call; with media workers it always came first,
        # while our 200 waited for MediaSession.applied().
        self._hold_answer(_S_A)
        return answer_a

    def _answer_failed(self, exc: Exception, what: str, *, ends_call: bool = True) -> AnswerFailure:
        """Applying SDP a leg sent in its 2xx (or the ACK answering our offer) raised ``exc``.
        The caller ACKs that 2xx all the same (RFC 3261 §13.2.2.4: a UAC ACKs every 2xx, then
        may BYE) and ends the call with what this says. Bad SDP from the peer (an
        :class:`SdpError`, a key exchange refusing its keys among them) is a stated failure,
        488; anything else is a bug of ours or of a key-exchange plugin (a media worker's
        channel gone counts too): 500, logged once here with its traceback, the record saying
        what failed. Never the exception's text in what is sent: it might hold keys. The call
        ending meanwhile (CallEnded) is no failure to apply: it goes on up. The same rule for
        the offer of a request we received (the caller's INVITE, a picker's, a re-INVITE or
        UPDATE, ``what`` saying which): its caller answers that request with ``status`` at
        once, then ends the call. ``ends_call`` false: the failure of one target of several
        (:meth:`_call_target`), logged, but not the call's end reason (yet)."""
        if isinstance(exc, CallEnded):
            raise exc
        if isinstance(exc, SdpError):
            return AnswerFailure(
                488, "Not Acceptable Here", exc.reason, f"bad SDP {what}: {exc.reason}"
            )
        if isinstance(exc, KeyExchangeFailed):
            reason = f"key exchange failed: {exc.reason}"
            log_exception(log, "call %s: %s (applying the %s)", self.id, reason, what, exc=exc)
            failure = AnswerFailure(500, "Server Internal Error", "key exchange failed", reason)
        else:
            reason = f"internal error applying the {what} ({type(exc).__name__})"
            log_exception(log, "call %s: %s", self.id, reason, exc=exc)
            failure = AnswerFailure(
                500, "Server Internal Error", f"internal error applying the {what}", reason
            )
        if ends_call:
            self.end_reason = failure.reason
        return failure

    def _apply_keys(self, b_leg: BLeg | None) -> None:
        assert self.keying is not None
        self._keyed_b = b_leg
        self.keying.apply(self.a.security, b_leg.security if b_leg is not None else None)
        if self.taps is not None:
            self.taps.attach()  # streams a re-INVITE added
        self._drive_handshakes()

    def _start_taps(self) -> None:
        """The call is answered: the media taps (recording, interception) that want it get
        copies of its media from now on (gateway/core/media/taps.py). A pause asked before
        (``pause_before_recording``) applies to the recordings that start, before any packet
        reaches them."""
        assert self.media is not None
        self.taps_decided = True
        sinks = self.manager.tap_sinks(cast("Call", self))
        if sinks:
            if self.taps is not None:  # taps that decided at the start are there already
                self.taps.add(sinks)
            else:
                media = tapped_media(self.media.last_sent(_S_A.value))
                self.taps = CallTaps(
                    self.id, self.media, sinks, clock=trio.current_time, media=media
                )
        if self.pause_before_recording is not None:
            self.manager.recording_started(cast("Call", self))
        if sinks:
            assert self.taps is not None
            self.taps.attach()
            for leg in (self.a, self.b):  # stated before the recordings started (RFC 7866 §7.2)
                if leg is not None and leg.recordpref is not None:
                    self._tell_recordpref(leg.side, leg.recordpref)

    def _tell_recordpref(self, side: Side, preference: str) -> None:
        """The call's recordings hear of a party's recording preference (RFC 7866 §7.2); one
        that pauses or resumes for it is counted and listed as a pause (CallManager
        .recording_paused_for_preference, the record's pauses)."""
        if self.taps is None:
            return
        held = self.taps.recordpref_changed(side.value, preference, at=time.time())
        if held is not None:
            self.manager.recording_paused_for_preference(cast("Call", self), held)

    def _drive_handshakes(self) -> None:
        """Start the handshake task at the first stream keyed on the media path (DTLS-SRTP),
        and tell it when the SDP changed. Once it could not start (the call is ending), never
        again: each later SDP change of the ending call would try, fail and say so once more."""
        if self._handshakes_refused:
            return
        if self.handshakes is None:
            if not self._negotiates_on_media_path():
                return
            assert self.media is not None
            self.handshakes = CallHandshakes(
                self.media,
                self._handshake_legs,
                on_keys=self._handshake_keys,
                on_failure=self._handshake_failed,
                forks=self._handshake_forks,
                unnamed_engines=self.manager.unnamed_engines,
            )
            if not self.manager.start_child(self, self.handshakes.run):
                self._handshakes_not_started()
                return
            for side in self._answers_unsent:
                self.handshakes.hold(side)
            self._answers_unsent.clear()
        self.handshakes.poke()

    def _negotiates_on_media_path(self) -> bool:
        """Whether a leg (A, or any B leg called) has a stream keyed on the media path."""
        security = self.a.security
        if security is not None and security.negotiates_on_media_path():
            return True
        for leg in self.b_legs:
            security = leg.security
            if security is not None and security.negotiates_on_media_path():
                return True
        return False

    def _handshakes_not_started(self) -> None:
        """The handshake task could not start (the call's task is not in its states: the call
        is ending). Without it no leg keyed on the media path gets keys and its handshake
        timer never runs, so the call would stay up with no media for ever: it ends as for a
        failed handshake (488 before the answer, else BYE with Reason cause 488), saying why."""
        self.handshakes = None
        self._handshakes_refused = True
        reason = "media-path key exchange (DTLS-SRTP, ZRTP) could not start: the call is ending"
        if self._events_closed:
            log.info("call %s: %s", self.id, reason)
            return
        self._handshake_failed("a", reason)

    def _handshake_legs(self) -> dict[str, LegSecurity | None]:
        b_leg = self.b or self._keyed_b
        if b_leg is None:
            # Our offer's answerer may start the handshake early: the one leg still ringing.
            # Legs that finished (a 302, a trunk's failure before its failover) stay in b_legs.
            ringing = [leg for leg in self.b_legs if not leg.finished]
            if len(ringing) == 1:
                b_leg = ringing[0]
        return {"a": self.a.security, "b": b_leg.security if b_leg is not None else None}

    def _handshake_forks(self) -> list[LegSecurity]:
        """Until a final answer chose B (several forks ring, RFC 3261 §16.7): the securities of
        the ringing forks, whose handshakes' datagrams the task keeps apart by source until
        one answers (handshakes.py). Also once a fork's 183 gave its answer early (it is the
        handshakes' B leg then): another fork's 200 may still win (RFC 3261 §12.1.2), and
        its datagrams are kept for that answer."""
        if self.b:
            return []
        return [
            leg.security for leg in self.b_legs if not leg.finished and leg.security is not None
        ]

    def _handshake_keys(self) -> None:
        """A handshake gave a stream its keys: re-apply them (unblocks the stream)."""
        assert self.keying is not None
        b_leg = self.b or self._keyed_b
        self.keying.apply(self.a.security, b_leg.security if b_leg is not None else None)
        self.manager.security_changed(cast("Call", self))

    def _handshake_failed(self, side: str, reason: str) -> None:
        """A handshake failed: nothing flows any more; the call task ends the call."""
        assert self.keying is not None
        self.keying.block_all()
        log.info("call %s: key exchange on leg %s failed: %s", self.id, side, reason)
        self.post(KeyFailureEvent(side, reason))

    async def _key_exchange_failed(self, event: KeyFailureEvent) -> None:
        """End the call for a failed media-path key exchange: 488 with the reason as Warning
        before the answer, else BYE on both legs with ``Reason: SIP;cause=488`` (RFC 3326)."""
        if self.state in ("answered", "offered"):
            await self._hang_up(event.reason, cause=488)
        for leg in self.b_legs:
            if leg.final is None:
                await self._cancel_b(leg)
        await self._reject_a(488, "Not Acceptable Here", event.reason)

    def _media_lost(self, reason: str) -> None:
        """The media session's streams stopped (a media worker exited): the call task ends it."""
        log.warning("call %s: media lost: %s", self.id, reason)
        self.post(EndCallEvent(reason))

    def _up_with(self, leg: BLeg) -> None:
        """A's ACK completed the offer/answer with ``leg``: its keys apply and the call is up
        (recorded answered, its taps started)."""
        assert self.media is not None
        self._apply_keys(leg)
        self.media.settle()
        self.answered_at = trio.current_time()
        self.state = "answered"
        self.manager.event(cast("Call", self), "answered", None)
        self._start_taps()

    def security_record(self) -> dict[str, object]:
        """What each leg negotiated (ARCHITECTURE.md "Security state is data"): signalling
        transport and peer certificate, key exchange, suite, who holds the keys."""
        record: dict[str, object] = {}
        for label, leg in (("a", self.a), ("b", self.b)):
            if leg is None or leg.security is None:
                continue
            entry: dict[str, object] = dict(leg.security.record())
            certificate = leg.flow.peer_certificate if leg.flow is not None else None
            entry["peer_certificate"] = (
                None
                if certificate is None
                else {
                    "subject": certificate.subject,
                    "issuer": certificate.issuer,
                    "verified": certificate.verified,
                    "sha256": certificate.sha256_fingerprint,
                }
            )
            entry["peer"] = (
                f"{leg.transport}:{leg.address[0]}:{leg.address[1]}" if leg.address else None
            )
            # Who the leg is with (an account's phone, a trunk), and for TLS who opened the
            # connection: the peer's certificate is a client certificate on one it opened, the
            # server's, checked against a name, on one we opened (protection.py says which).
            entry["peer_kind"] = leg.peer_kind or None
            entry["peer_name"] = leg.peer_name
            # How it proved who it is (null: a leg we called): never a secret (CallerAuth).
            entry["auth"] = leg.auth.record() if leg.auth is not None else None
            if leg.relayed_by:
                # Through listed edge proxies: each one's hop, the nearest first (protection.py
                # says the phone's own transport, which the leg's does not).
                entry["relayed_by"] = [hop.record() for hop in leg.relayed_by]
            if leg.flow is not None and leg.flow.secure:
                server_name = certificate.server_name if certificate is not None else None
                entry["tls"] = {
                    "opened_by": "peer" if server_name is None else "gateway",
                    "server_name": server_name,
                }
            target = leg.target if isinstance(leg, BLeg) else None
            if isinstance(target, TrunkHopTarget):
                # A trunk named by DNS: its name, and which of its targets took the call.
                entry["dns"] = {
                    "name": target.server_name,
                    "target": str(target.hop),
                    "attempt": target.index + 1,
                }
            if isinstance(target, ContactTarget) and target.binding.path:
                # A phone registered through edge proxies (RFC 3327 Path): our INVITE went
                # to the first of them; their hops to the phone are not ours to see.
                entry["registered_path"] = list(target.binding.path)
            # RFC 7866: a recording-aware party (§6.1) and its recording preference (§7.2).
            if leg.record_aware:
                entry["record_aware"] = True
            if leg.recordpref is not None:
                entry["recordpref"] = leg.recordpref
            record[label] = entry
        b_record = record.get("b")
        if (
            self._fork_rekey_outcome is not None
            and self.b is self._fork_rekey_leg
            and isinstance(b_record, dict)
        ):
            # Our SDES key keyed another forked phone's early media (fork_rekey.py): "re-keyed"
            # once this leg's phone took new keys of ours, else why not. Only while B is that
            # phone's leg: a transfer target in its place was never concerned.
            b_record["fork_rekey"] = self._fork_rekey_outcome
        if self.keying is not None:
            srtp = self.keying.statistics()
            for label, counters in srtp.items():
                leg_record = record.get(label)
                if isinstance(leg_record, dict):
                    leg_record["srtp"] = counters
        if self.media is not None:
            record["media"] = self.media.statistics()
            transcoding = self.media.transcoding_record()
            if transcoding is not None:  # G.711 A-law <-> mu-law (docs/architecture.md)
                record["transcoding"] = transcoding
            if self.media.quality is not None:
                # Per leg, what its phone's RTCP reports said (gateway/core/media/quality.py).
                quality = self.media.quality.record()
                if quality:
                    record["quality"] = quality
        if self.transfers:
            record["transfers"] = list(self.transfers)
        if self.picked_up is not None:
            record["picked_up"] = dict(self.picked_up)
        if self.failovers:
            record["failovers"] = list(self.failovers)
        if self._redirects is not None and self._redirects.records:
            record["redirects"] = [dict(entry) for entry in self._redirects.records]
        if self.taps is not None and self.taps.names:
            record["taps"] = self.taps.record()
        if self.media is not None:
            # What each recording-aware party was last told (a=record, recording_indication.py).
            told = {
                leg.side.value: self.media.recording_indication(leg.side.value)
                for leg in (self.a, self.b)
                if leg is not None and leg.record_aware
            }
            told = {side: said for side, said in told.items() if said is not None}
            if told:
                record["recording_indication"] = told
        if self.identity:
            record["caller_identity"] = [outcome.described for outcome in self.identity]
        if self._dtmf is not None:
            record["dtmf"] = self._dtmf.record(self.media)
        if self.location is not None:  # how and where to; never the contents (RFC 6442 §7)
            location: dict[str, object] = {
                "conveyed": self.location.conveyed,
                "passed_to": list(self._location_to),
                "dropped_for": list(self._location_dropped),
            }
            if self._location_updates:
                location["updates"] = self._location_updates
            if self._location_errors:
                location["errors"] = [dict(entry) for entry in self._location_errors]
            record["location"] = location
        return record
