"""Who the call rings, and the INVITEs it sends them.

The targets routing gave (RFC 3261 §16.6-style forking: an INVITE to each in parallel), each
counted against its trunk's or account's limits, of a secure call only those reached over TLS
(RFC 5630 §3.1.3), and the alternates tried one at a time when every leg of an attempt failed
with a failover status (RFC 3263 §4.3). Each target gets a leg with its media security and an
INVITE of ours: From and P-Asserted-Identity as the caller is shown there (RFC 3323 privacy,
RFC 3325), numbers written in a trunk's numbering plan, identity headers of the caller-identity
services (RFC 8224), who diverted the call (RFC 5806 Diversion, RFC 7044 History-Info), the
caller's location where the trunk's policy passes it (RFC 6442), the session timer we ask for
(RFC 4028). When no target answered, the caller gets the best final response (§16.7 step 6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import attrs
import trio

from gateway.core.calls import identity
from gateway.core.calls.base import ALLOW, MAX_REASONS, SDP, log, wants_privacy
from gateway.core.calls.leg import BLeg, Side
from gateway.core.calls.location_updates import CallLocationUpdates
from gateway.core.calls.media_keys import CallMediaKeys
from gateway.core.calls.numbering import read_number
from gateway.core.calls.psap_callback import PRIORITY_VALUE as PSAP_CALLBACK
from gateway.core.calls.redirect import (
    carried_diversion_untrusted,
    diversion_values,
    history_info_values,
)
from gateway.core.calls.routing import (
    ContactTarget,
    UnroutableTarget,
    account_number_on_trunk,
    alternates_after,
    destination_for,
    dial_string,
    other_hops_left,
    over_tls_only,
)
from gateway.core.interfaces import RouteTarget
from gateway.core.logs import transport_error_text
from gateway.core.media.security import CodecsRefused, MediaSecurityRefused
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip.dialog import SIPS_NOT_ALLOWED, is_sips
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.grammar import parse_name_addr_untrusted, parse_uri_untrusted
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Request, Response, make_response
from gateway.core.sip.uri import SipUri, Uri, redact_password
from gateway.core.transport.flows import TLS_TRANSPORTS

if TYPE_CHECKING:
    from gateway.core.calls.call import Call

# Enum members read at run time, as module names: on CPython 3.11 a member read from its
# class goes through EnumType's __getattr__ hook, ~900 instructions (docs/benchmarks.md,
# sessions 44 and 45).
_S_B = Side.B


# RFC 3323 §4.1.1.3: the From of a caller who asked for privacy.
ANONYMOUS_URI = SipUri("sip", "anonymous.invalid", user="anonymous")


class CallTargets(CallLocationUpdates, CallMediaKeys):
    """The call's targets, their legs and our INVITEs to them (the module's docstring)."""

    async def _check_identity(self, invite: Request) -> None:
        """Check the caller's identity on a trunk's INVITE (STIR/SHAKEN, calls/identity.py):
        refused when the check says so (RFC 8224 §6.2.2), else its verdict goes on to the
        phones with the caller's number."""
        trunk = self.config.trunk(self.caller.name or "")
        outcome = (
            None if trunk is None else await identity.checked(cast("Call", self), trunk, invite)
        )
        if outcome is None:
            return
        if outcome.reject is not None:
            status, reason = outcome.reject
            await self._reject_a(status, reason, outcome.described)
        self.caller_parameters = outcome.caller_parameters

    async def _over_tls_only(
        self, targets: Sequence[RouteTarget], alternates: Sequence[RouteTarget]
    ) -> tuple[tuple[RouteTarget, ...], tuple[RouteTarget, ...]]:
        """The targets and alternates of a secure call that are reached over TLS (RFC 5630
        §3.1.3: TLS on every hop, the callee's too; forking rings only those), the first
        alternate moved up when no target is left; 480 with warn-code 380 "SIPS Not Allowed"
        (RFC 5630 §5.3) when none is."""
        kept, kept_alternates = over_tls_only(targets), over_tls_only(alternates)
        left_out = len(targets) + len(alternates) - len(kept) - len(kept_alternates)
        if left_out:
            log.info("call %s: SIPS: %d target(s) not reached over TLS left out", self.id, left_out)
        if not kept and kept_alternates:
            kept, kept_alternates = kept_alternates[:1], kept_alternates[1:]
        if not kept:
            reason = "Temporarily Unavailable (no device or trunk reached over TLS for SIPS)"
            await self._reject_a(480, reason, None, extra=[SIPS_NOT_ALLOWED])
        return kept, kept_alternates

    def _count_target(self, target: RouteTarget) -> str | None:
        """Count this call against the trunk or account ``target`` belongs to; why not when
        that is at its ``max_calls`` or, for a trunk, its ``max_cps`` (CallLimits.take)."""
        limits = self.manager.limits
        if target.trunk is not None:
            key = ("trunk", target.trunk)
            why = limits.take(self, key, now=trio.current_time(), count_refusal=False)
            if why is None:
                return None
            if self.psap_callback or (
                self.a.invite is not None
                and self.caller is not None
                and self.manager.is_emergency_call(self.a.invite, self.caller)
            ):
                return limits.take(self, key, exempt=True)
            return limits.refuse(key, why)
        if target.account is not None:
            key = ("account", target.account)
            why = limits.take(self, key, count_refusal=False)
            if why is not None and self.psap_callback:
                log.warning(
                    "call %s: PSAP callback to %s past its call limit (RFC 7090)",
                    self.id,
                    target.account,
                )
                return limits.take(self, key, exempt=True)
            return None if why is None else limits.refuse(key, why)
        return None

    def _release_uncalled(self, targets: Sequence[RouteTarget]) -> None:
        """Give back what :meth:`_count_target` counted for those of ``targets`` that no leg
        of the call is ringing or up on: their media policy refused the offer, making it
        failed, or the URI is unusable (_call_target). The call goes on with its other
        branches, and held the trunk's (or account's) channel until it ended. A key counts
        once per call: one another branch of the same trunk or account rings on stays."""
        live = {_limit_key(leg.target) for leg in self.b_legs if not leg.finished}
        for target in targets:
            key = _limit_key(target)
            if key is not None and key not in live:
                self.manager.limits.release_one(self, key)

    def _next_alternate(self) -> RouteTarget | None:
        """The next alternate whose trunk or account has room for the call (counted), or
        None when none is left."""
        while self._alternates:
            target = self._alternates.pop(0)
            why = self._count_target(target)
            if why is None:
                return target
            log.info(
                "call %s: not failing over to %s: at its %s",
                self.id,
                redact_password(str(target.uri)),
                why,
            )
        return None

    async def _call_target(
        self, target: RouteTarget, offer: SessionDescription | None
    ) -> str | None:
        """Send an INVITE to ``target`` (without SDP for a late offer: ``offer`` None); the
        reason when its media policy refuses the call."""
        invite_a = self.a.invite
        assert invite_a is not None and self.caller is not None
        made = self._new_b_leg(target, _S_B, late_offer=offer is None)
        if made is None:
            return None
        leg, uri = made
        assert leg.security is not None
        if offer is not None:
            try:
                offer = leg.security.make_offer(offer)
            except (MediaSecurityRefused, CodecsRefused) as err:
                # This target's own leg refuses the offer (its policy, its phone's codecs):
                # not a fault of the caller's SDP, and the other targets ring on.
                log.info(
                    "call %s: not calling %s: %s",
                    self.id,
                    redact_password(str(target.uri)),
                    err.reason,
                )
                return err.reason
            except Exception as exc:
                # Our bug or a key-exchange plugin's (said which, logged once): that target's
                # failure, not the call's. Its branch is dropped and the others ring on, as a
                # proxy's failed branch leaves the rest of its forking alone (RFC 3261 §16.7);
                # with no target left the call fails on the best failure (_fail_a).
                failure = self._answer_failed(exc, "caller's offer", ends_call=False)
                log.warning(
                    "call %s: not calling %s: %s",
                    self.id,
                    redact_password(str(target.uri)),
                    failure.reason,
                )
                self._offer_failures.append(failure)
                return None
        trunk = self._leg_trunk(leg)
        if trunk is not None and trunk.response_timeout > 0:
            # Armed before the INVITE goes: its first response may be handled (and disarm it,
            # _forward) before the send returns.
            leg.response_deadline = trio.current_time() + trunk.response_timeout
        request = self._b_invite(uri, leg, offer, invite_a)
        if trunk is not None and self.manager.caller_identity:
            request = identity.signed(cast("Call", self), trunk, request)  # RFC 8224 §4.1: Identity
        if self.location is not None:
            request = self._with_location(leg, request, self.location)
        await self._send_b_invite(leg, request)
        return None

    def _new_b_leg(
        self, target: RouteTarget, side: Side, *, late_offer: bool
    ) -> tuple[BLeg, Uri] | None:
        """A leg to call ``target`` on (a callee on side B, or a transfer's target on the
        transferor's side), with its media security, and the Request-URI; None (logged) when
        the target is not a usable SIP URI."""
        try:
            uri = parse_uri_untrusted(target.uri)
            destination = destination_for(target)
        except (RemoteSipError, UnroutableTarget) as err:
            log.warning(
                "call %s: cannot call %s: %s", self.id, redact_password(str(target.uri)), err
            )
            return None
        transport, flow = destination.transport, destination.flow
        kind, name = ("account", target.account) if target.account else ("trunk", target.trunk)
        dialed = uri.user if isinstance(uri, SipUri) else None
        # RFC 3261 §8.1.1.8: a SIPS Request-URI (or first Route) needs a SIPS Contact; a secure
        # call's TLS legs get one too, so that the callee's requests come back over TLS.
        sips = transport in TLS_TRANSPORTS and (self.secure or is_sips(uri) or _sips_path(target))
        leg = BLeg(
            side=side,
            flow=flow,
            transport=transport,
            address=destination.address,
            contact=self.endpoint.our_contact(transport, sips=sips),
            target=target,
            peer_kind=kind,
            peer_name=name,
            shown_as=target.account or dialed or "anonymous",
            late_offer=late_offer,
        )
        # A registered phone is known by the User-Agent its REGISTER carried (devices.py).
        binding = target.binding if isinstance(target, ContactTarget) else None
        leg.security = self.manager.leg_security(
            cast("Call", self),
            side,
            kind=kind,
            name=name,
            flow=flow,
            transport=transport,
            device=self.manager.device_of_binding(binding) if binding is not None else None,
        )
        return leg, uri

    async def _send_b_invite(self, leg: BLeg, request: Request) -> None:
        """Send our INVITE to ``leg``; its responses come into this call's events."""
        self.b_legs.append(leg)
        # A callee answering DTLS-SRTP active may begin its handshakes as soon as it has our
        # offer (RFC 5763 §5; baresip does as it rings): their sockets take its datagrams
        # from now on, not from the handshake task's first round after the INVITE went. Once
        # the leg is among b_legs: before, the task did not see it (a failover's, a redirect's
        # or a forward's callee was not hooked before its answer).
        self._drive_handshakes()
        from_tag = request.from_.tag
        assert from_tag is not None
        self.manager.register_leg(cast("Call", self), leg.side, request.call_id, from_tag)
        try:
            client = await self.endpoint.send_request(
                request, transport=leg.transport, address=leg.address, flow=leg.flow
            )
        except OSError as exc:
            log.warning(
                "call %s: cannot reach %s: %s",
                self.id,
                redact_password(str(request.uri)),
                transport_error_text(exc),
            )
            leg.final = make_response(request, 503, "Service Unavailable")
            target = leg.target
            if target is not None and target.trunk is not None and not other_hops_left(target):
                self.manager.trunk_failed(
                    target.trunk, f"cannot send to it: {transport_error_text(exc)}"
                )
            return
        leg.flow = client.flow
        leg.invite = client.request
        client.trunk = leg.peer_name if leg.peer_kind == "trunk" else None  # see its BYE
        self._forward(client, leg)

    def _b_invite(
        self, uri: Uri, leg: BLeg, offer: SessionDescription | None, invite_a: Request
    ) -> Request:
        user = self._calling_user(leg, invite_a)
        display = invite_a.from_.display_name
        trunk = leg.target.trunk if leg.target is not None else None
        if trunk is not None and self.caller.kind == "account":
            self.manager.emergency_call_presented(invite_a, trunk, user)
        # RFC 7090: a phone told of a PSAP callback lets it ring through do-not-disturb. Only
        # to our phones, and only for a callback we recognised (the caller's own marking is
        # never copied).
        priority = (
            [("Priority", PSAP_CALLBACK)]
            if self.psap_callback and leg.target is not None and leg.target.account is not None
            else []
        )
        diversion = self._diversion_headers(leg, uri) if self._diverted else []
        return self._new_invite(
            uri,
            leg,
            offer,
            self._identity(leg, user, display, privacy=wants_privacy(invite_a))
            + priority
            + diversion,
            max_forwards=(invite_a.max_forwards or 70) - 1,
        )

    def _identity(
        self, leg: BLeg, user: str, display: str | None, *, privacy: bool
    ) -> list[tuple[str, str]]:
        """From (and, towards a trunk, P-Asserted-Identity) of our INVITE to ``leg`` for a
        caller presented as ``user``: the From that goes first, then the others."""
        from_uri = self.endpoint.our_uri(leg.transport, user)
        identity: list[tuple[str, str]] = []
        if leg.target is not None and leg.target.trunk is not None:
            # RFC 3325 §9.1: a trunk is in our trust domain, and carriers want the caller's
            # number asserted, all the more when the caller asked for privacy.
            identity.append(("P-Asserted-Identity", str(NameAddr(from_uri))))
        from_ = NameAddr(from_uri, display_name=display)
        if privacy:
            # RFC 3323 §4.1.1.3: the anonymous From; the trunk keeps the identity, withheld.
            from_ = NameAddr(ANONYMOUS_URI, display_name='"Anonymous"')
            identity += [("Privacy", "id")] if identity else []
        from_ = from_.with_tag(self.manager.gateway.ids.new_tag())
        return [("From", str(from_)), *identity]

    def _new_invite(
        self,
        uri: Uri,
        leg: BLeg,
        offer: SessionDescription | None,
        identity: Sequence[tuple[str, str]],
        *,
        max_forwards: int = 70,
    ) -> Request:
        """Our INVITE to ``leg`` (a callee, or a transfer's target): ``identity`` starts with
        its From; without ``offer``, a late offer."""
        ids = self.manager.gateway.ids
        from_, *others = identity
        # RFC 3327 §5.3: a contact registered with a Path is reached through it, the Path
        # values as Route headers in their order (the first is where the INVITE is sent,
        # routing.destination_for): a load balancer in front of several nodes finds the
        # phone's flow from them.
        binding = leg.target.binding if isinstance(leg.target, ContactTarget) else None
        route = [("Route", hop) for hop in binding.path] if binding is not None else []
        headers = Headers.of(
            [
                ("Max-Forwards", str(max_forwards)),
                *route,
                from_,
                ("To", str(self._b_to(uri, leg))),
                ("Call-ID", ids.new_call_id()),
                ("CSeq", "1 INVITE"),
                ("Contact", str(leg.contact)),
                *others,
                ("Allow", ALLOW),
                # RFC 3262: reliable 1xx from the callee are PRACKed by us (_prack_b); not with
                # a late offer, where one could carry an offer for A to answer.
                ("Supported", "timer" if offer is None else "100rel, timer"),
                *self._refresh_headers(leg),
                ("User-Agent", self.config.sip.user_agent),
            ]
        )
        request = Request("INVITE", uri, headers)
        return request if offer is None else request.with_body(serialize_sdp(offer), SDP)

    def _calling_user(self, leg: BLeg, invite_a: Request) -> str:
        """Who calls, as the user part of the B leg's From: a trunk's caller as the trunk sent
        it, its number read as E.164 by the trunk's numbering plan (a carrier's national
        ``0301234567`` reaches a phone as ``+49301234567``, which it can call back from
        anywhere); an account by its name, or towards a trunk by its number there (the first
        of the trunk's ``dids`` that reaches the account, else the trunk's ``caller_id``), as
        carriers accept only their own numbers. A number towards a trunk is written in the
        trunk's ``number_format``."""
        caller_from = invite_a.from_
        if self.caller.kind != "account" or self.caller.name is None:
            user = caller_from.uri.user if isinstance(caller_from.uri, SipUri) else None
            if not user:
                return "anonymous"
            caller_trunk = self.config.trunk(self.caller.name or "")
            if self.caller.kind == "trunk" and caller_trunk is not None:
                user = read_number(self.manager.plan_of(caller_trunk), user)
            user = self._written_for_leg(leg, user)
            if self.caller_parameters and leg.target is not None and leg.target.account:
                # ATIS-1000074 §5.3.1: the verdict as a tel URI parameter of the number.
                user += "".join(f";{name}={value}" for name, value in self.caller_parameters)
            return user
        return self._account_number(leg, self.caller.name)

    def _account_number(self, leg: BLeg, account: str) -> str:
        """How ``account`` calls out on ``leg``: towards a trunk by its number there, else by
        its name."""
        trunk = self._leg_trunk(leg)
        if trunk is None:
            return account
        number = account_number_on_trunk(trunk, account, self.manager.plan_of(trunk))
        return account if number is None else number

    def _written_for_leg(self, leg: BLeg, number: str) -> str:
        """``number`` as ``leg`` takes it: for a trunk, an E.164 number in its
        ``number_format``; anything else as it is."""
        trunk = self._leg_trunk(leg)
        if trunk is None:
            return number
        return self.manager.plan_of(trunk).written_as(number, trunk.number_format)

    def _b_to(self, uri: Uri, leg: BLeg) -> NameAddr:
        """To of a B leg: the callee's address-of-record for a registered user (the
        Request-URI is the contact, RFC 3261 §10.2.1), else the Request-URI itself."""
        account = leg.target.account if leg.target is not None else None
        if account is not None:
            return NameAddr(self.endpoint.our_uri(leg.transport, account))
        if isinstance(uri, SipUri):
            return NameAddr(attrs.evolve(uri, params=(), headers=()))
        return NameAddr(uri)

    def _carry_diversion(self, invite: Request) -> None:
        """A trunk's call that arrives diverted (RFC 5806 Diversion, RFC 7044 History-Info):
        who diverted it goes on to the phones (they show "forwarded from"), its number read
        as E.164 by the trunk's numbering plan, as the caller's is."""
        carried = carried_diversion_untrusted(invite.headers)
        directory = self.manager.gateway.directory
        if carried is None or directory is None:
            return
        if dial_string(carried.party) is not None:
            party = directory.to_e164(carried.party, trunk=self.caller.name)
            carried = attrs.evolve(carried, party=party)
        self._diverted = (carried,)

    def _diversion_headers(self, leg: BLeg, uri: Uri) -> list[tuple[str, str]]:
        """Who diverted the call, for our INVITE to ``leg``: ``Diversion`` (RFC 5806) or
        ``History-Info`` (RFC 7044) as its trunk's ``diversion`` says, ``Diversion`` to a
        phone. A diverting account is shown by its number on the trunk (the DID the carrier
        knows it by: carriers take a caller ID that is not ours when it says who forwarded)."""
        trunk = self._leg_trunk(leg)
        policy = trunk.diversion if trunk is not None else "diversion"
        if policy == "none":
            return []
        parties = []
        for diverted in self._diverted:
            party = diverted.party
            if diverted.account:
                party = self._account_number(leg, party)
            elif dial_string(party) is not None:
                party = self._written_for_leg(leg, party)
            parties.append((str(self.endpoint.our_uri(leg.transport, party)), diverted))
        if policy == "history-info":
            return [("History-Info", value) for value in history_info_values(parties, str(uri))]
        return [("Diversion", value) for value in diversion_values(parties)]

    async def _fail_a(self) -> None:
        finals = [outcome for leg in self.b_legs if (outcome := leg.final or leg.given_up)]
        if not finals and self._offer_failures:
            # No target answered anything: the first target whose offer failed says why (the
            # 500 with its Warning it would have got alone), before a policy's refusal, since
            # that target might have taken the call.
            failure = self._offer_failures[0]
            self.end_reason = failure.reason
            await self._reject_a(failure.status, failure.phrase, failure.warning)
        if not finals and self._refusals:
            # No target could be offered the call: their media policies refused it.
            await self._reject_a(488, "Not Acceptable Here", self._refusals[0])
        status, reason = best_failure(finals)
        to_user = any(leg.target is not None and leg.target.account for leg in self.b_legs)
        if to_user and status in (408, 503):
            # A registered device that does not answer at all is "unreachable" (issue #3).
            # A phone that redirected (3xx) was reached, though: when every phone rung did,
            # what failed is the call forwarded by the gateway (redirect.py), which the
            # reason says; its target is not named (the callee's forward is its own business).
            status, reason = 480, self._unavailable_reason(status)
        # The callee's own Reason (RFC 3326: a Q.850 cause from the PSTN) goes with its status.
        chosen = next((f for f in finals if (f.status, f.reason) == (status, reason)), None)
        reasons = chosen.headers.get_all("Reason")[:MAX_REASONS] if chosen is not None else ()
        extra = [("Reason", r) for r in reasons]
        if chosen is not None and self.location is not None:
            # RFC 6442 §4.3: the trunk's verdict on the location (a 424's above all) is the
            # phone's to act on, where the location went to that trunk.
            located = [leg for leg in self.b_legs if leg.location_passed and leg.final is chosen]
            if located:
                extra += self._geolocation_errors(located[0], chosen)
        await self._reject_a(status, reason, None, extra=extra)

    def _unavailable_reason(self, status: int) -> str:
        """The 480's reason when a call to a user ends in 408 or 503 (``status``): a device
        that did not answer, or, where every phone rung redirected, the forwarded call's
        failure (the statuses its legs got)."""
        redirects = self._redirects
        if redirects is None or not redirects.legs:
            return "Temporarily Unavailable (registered device unreachable)"
        for leg in self.b_legs:
            outcome = leg.final or leg.given_up
            if leg.target is None or not leg.target.account or leg in redirects.legs:
                continue
            if outcome is None or not 300 <= outcome.status < 400:
                return "Temporarily Unavailable (registered device unreachable)"
        statuses = sorted(
            {
                str(outcome.status)
                for leg in redirects.legs
                if (outcome := leg.final or leg.given_up)
            }
        )
        failed = ", ".join(statuses) or str(status)
        return f"Temporarily Unavailable (the forwarded call failed: {failed})"


def without_other_hops(alternates: list[RouteTarget], leg: BLeg) -> list[RouteTarget]:
    """``alternates`` after ``leg`` failed (:func:`~gateway.core.calls.routing.alternates_after`,
    RFC 3263 §4.3): a leg we gave up on (the trunk's ``response_timeout`` or Timer B) counts as
    no response, a 408."""
    final = leg.final.status if leg.final is not None else 0
    return alternates_after(alternates, leg.target, 408 if leg.given_up is not None else final)


NO_TIMELY_RESPONSE = (504, "Server Time-out (no response in time)")
"""A non-INVITE's answer when every target was left for want of a response (RFC 4320 §4.2:
never 408; RFC 3261 §21.5.5: no timely response from a server we accessed for it)."""


# The ranking of the callee failures the caller may get (best_failure; docs/architecture.md
# "The caller's answer when every callee failed"), best first, after any 6xx: RFC 3261 §16.7 step
# 6 prefers, within the lowest class, the responses that help the caller resubmit: of its
# list (401, 407, 415, 420, 484) only 484 is about what the caller sent (the number; a 415,
# 420 or challenge answers our INVITE to the callee, its body, Require and credentials ours),
# so 484 first; then the callee's own state that phones show (busy, away, no such user,
# refused); then any other 4xx, lowest first; a 408 last of all the 4xx: it says only that
# nobody answered in time, where a 488 or 487 from another fork says what happened.
PREFERRED_4XX = (484, 486, 480, 404, 403)


def failure_rank(status: int) -> tuple[int, int]:
    """Where a callee's final ``status`` ranks as the caller's answer (lower is better): 6xx,
    then the 4xx of :data:`PREFERRED_4XX` in that order, other 4xx by number, 408, then the
    rest (401/407, 3xx, 5xx), which :func:`best_failure` turns into 503 or 480."""
    # Kamailio's tm (t_pick_branch) ranks 6xx, 3xx, 4xx (401, 407, 415, 420, 484 first, then
    # by number: a 408 before a 488), 5xx; FreeSWITCH takes the first failed leg's cause. A
    # B2BUA's 401/407/415/420 are its own business, and a timeout the least informative.
    if 600 <= status < 700:
        return (0, 0)
    if status in PREFERRED_4XX:
        return (1, PREFERRED_4XX.index(status))
    if 400 <= status < 500 and status not in (401, 407, 408):
        return (2, status)
    if status == 408:
        return (3, 0)
    return (4, status)


def best_failure(finals: Sequence[Response], *, non_invite: bool = False) -> tuple[int, str]:
    """The final response to give A when every B leg failed (RFC 3261 §16.7 step 6, for a
    B2BUA; :func:`failure_rank`): a 6xx wins (the first); else the best-ranked 4xx, a 408
    (the lowest class, §16.7 step 6) only when no other 4xx came; else 503. Authentication
    challenges from a trunk are our problem, not the caller's (they ask for our credentials,
    so §16.7's aggregation of the challenges into one 401/407 does not apply): 503. A
    redirection not followed: 480.

    ``non_invite`` (a relayed MESSAGE or NOTIFY): a 408, a target's or our own for no
    response (a trunk's ``response_timeout``, Timer F), says only that the target did not
    answer in time and is never the answer (RFC 4320 §4.2: no 408 to a non-INVITE): any other
    failure is chosen over it, and when every target timed out the answer is
    :data:`NO_TIMELY_RESPONSE`."""
    if non_invite and finals:
        answered = [r for r in finals if r.status != 408]
        if not answered:
            return NO_TIMELY_RESPONSE
        finals = answered
    if not finals:
        return 480, "Temporarily Unavailable"
    best = min(finals, key=lambda r: failure_rank(r.status))  # (the first of equals)
    if all(r.status == 408 for r in finals):
        return 408, "Request Timeout"
    if failure_rank(best.status)[0] <= 3:
        return best.status, best.reason
    for response in finals:
        if response.status in (401, 407):
            return 503, "Service Unavailable (trunk asked us to authenticate)"
    if all(300 <= r.status < 400 for r in finals):
        # A redirection not followed (380, a trunk's without follow_redirects, one refused:
        # redirect.py): the callee is elsewhere, which is no server trouble of ours; 503
        # would send a carrier caller to its next route for a callee that will not answer.
        return 480, "Temporarily Unavailable (redirection not followed)"
    return 503, "Service Unavailable"


def _limit_key(target: RouteTarget | None) -> tuple[str, str] | None:
    """The call limit :meth:`Call._count_target` counts a call to ``target`` against: its
    trunk's, else its account's; None for neither."""
    if target is None:
        return None
    if target.trunk is not None:
        return ("trunk", target.trunk)
    if target.account is not None:
        return ("account", target.account)
    return None


def _sips_path(target: RouteTarget) -> bool:
    """Whether ``target`` is a contact registered with a Path whose first hop, our INVITE's
    first Route, is a SIPS URI (RFC 3261 §8.1.1.8)."""
    path = target.binding.path if isinstance(target, ContactTarget) else ()
    if not path:
        return False
    try:
        return is_sips(parse_name_addr_untrusted(path[0]).uri)
    except RemoteSipError:
        return False
