"""Call forwarding by redirect: a callee's 3xx followed (redirect.py reads and writes it).

A callee's 300, 301, 302 or 305 (a phone's; a trunk's with its ``follow_redirects``) is followed
in the ringing state, its Contacts one at a time in q order (RFC 3261 §8.1.3.4), each one's user
part routed as a call the redirecting account places (a trunk's: as the caller's), never sent to
the Contact's host; the new legs join the attempt, as a fork would, and our INVITEs say who
diverted the call (RFC 5806 Diversion, RFC 7044 History-Info). Loops, emergency numbers, the
call's own caller and more than ``[sip] max_redirects`` are refused; a redirect not followed
leaves its 3xx as the leg's answer. A followed one asks the taps deciding at the start again with
the forwarded-to party (``CallManager.reached``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import attrs
import trio

from gateway.core.calls.base import log
from gateway.core.calls.leg import BLeg
from gateway.core.calls.redirect import (
    FOLLOWED_STATUSES,
    Diverted,
    RedirectContact,
    redirect_contacts_untrusted,
    redirect_reason,
)
from gateway.core.calls.routing import called_user, dial_string, over_tls_only
from gateway.core.calls.targets import CallTargets
from gateway.core.interfaces import Caller
from gateway.core.logs import log_exception
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Request, Response, default_reason
from gateway.core.sip.uri import SipUri, TelUri, Uri

if TYPE_CHECKING:
    from gateway.core.calls.call import Call


# Entries of one call's record about its redirects, at most (a phone answering 3xx to each).
MAX_REDIRECT_RECORDS = 16


class CallForwarding(CallTargets):
    """Call forwarding by a callee's 3xx (the module's docstring)."""

    async def _redirected(self, leg: BLeg, response: Response) -> None:
        """A callee's 3xx: its Contacts are tried in q order (:meth:`_follow_redirect`), each
        routed by its user part as a call the redirecting account places (a trunk's 3xx, with
        ``follow_redirects``: as the caller's); the leg's 3xx stays its final response, so
        when nothing is followed the caller gets 480 (best_failure)."""
        target = leg.target
        if target is None or self.manager.gateway.directory is None:
            return
        state = self._redirects
        if state is None:
            state = self._redirects = self._new_redirects()
        by = target.account or f"trunk {target.trunk}"
        entry: dict[str, object] = {"by": by, "status": response.status}
        if response.status not in FOLLOWED_STATUSES:
            return self._redirect_refused(entry, "380 names a service, not a target")
        if target.account is not None:
            authority = Caller(kind="account", name=target.account, flow=leg.flow)
            diverting = target.account
            state.tried.update(self._account_keys(target.account))  # a forward to oneself
        else:
            trunk = self._leg_trunk(leg)
            if trunk is None or not trunk.follow_redirects:
                return self._redirect_refused(entry, "the trunk's follow_redirects is off")
            if self.caller.kind != "account" or self.caller.name is None:
                return self._redirect_refused(entry, "only an account's call is forwarded")
            # The number the caller dialled diverted: the call goes on with the caller's own
            # authority (a trunk's redirect is no account's).
            authority = self.caller
            diverting = state.dialled
        if state.followed >= self.config.sip.max_redirects:
            why = f"at most {self.config.sip.max_redirects} redirections per call"
            return self._redirect_refused(entry, why)
        contacts = redirect_contacts_untrusted(response)
        if not contacts:
            return self._redirect_refused(entry, "no usable Contact")
        state.followed += 1
        diverted = Diverted(
            party=diverting,
            reason=redirect_reason(response, contacts[0].uri),
            status=response.status,
            account=target.account is not None,
        )
        # The newest 3xx's Contacts first; those of an earlier one after them.
        chain = (*self._diverted, diverted)
        state.pending[:0] = [(contact, authority, chain, entry) for contact in contacts]
        await self._follow_redirect()  # none followed: the caller gets 480 (best_failure)

    async def _follow_redirect(self) -> bool:
        """Call the next Contact of the 3xx redirections still to try (RFC 3261 §8.1.3.4:
        one at a time, highest q first); whether one now rings."""
        state = self._redirects
        assert state is not None
        while state.pending:
            contact, authority, chain, entry = state.pending.pop(0)
            entry = {**entry, "reason": chain[-1].reason, "to": _shown_user(contact.user)}
            why = self._redirect_refusal(contact, state)
            if why is None:
                why = await self._call_redirect_target(contact, authority, chain, entry)
            if why is None:
                return True
            self._redirect_refused(entry, why)
        return False

    def _redirect_refusal(self, contact: RedirectContact, state: Redirects) -> str | None:
        """Why ``contact`` of a 3xx is not followed, before it is routed; None to route it."""
        user = contact.user
        if user is None:
            return "no user part to route"
        directory = self.manager.gateway.directory
        if directory is None:
            return "no routing"
        host = contact.uri.host_port() if isinstance(contact.uri, SipUri) else None
        if (
            host is not None
            and self.config.sip.foreign_redirects == "refuse"
            and not directory.is_local_domain(host)
        ):
            return "it names another domain ([sip] foreign_redirects)"
        number = dial_string(user)
        if number is not None and directory.plan_of(None).is_emergency(number):
            # An emergency call is routed by the caller's own dial: a forward to 112 would
            # reach the PSAP with the wrong caller, location and callback number (the
            # forwarding phone's, or nobody's), and the PSAP could not call the caller back.
            return "an emergency number is never reached by a redirect"
        key = directory.to_e164(user)
        if key in state.caller_keys:
            return "it is the call's own caller"
        if key in state.tried:
            return "a loop: that target was tried in this call already"
        state.tried.add(key)
        return None

    async def _call_redirect_target(
        self,
        contact: RedirectContact,
        authority: Caller,
        chain: tuple[Diverted, ...],
        entry: dict[str, object],
    ) -> str | None:
        """Route ``contact``'s user part as a call ``authority`` places (its routing, plugins
        and limits, as if it had dialled it) and ring the targets; why not when none rings."""
        state = self._redirects
        assert state is not None and contact.user is not None
        uri: Uri = contact.uri
        if not isinstance(uri, TelUri):
            # Never the Contact's host: only its user part, as a number dialled to us.
            uri = self.endpoint.our_uri(self.a.transport, contact.user)
        who = NameAddr(self.endpoint.our_uri(self.a.transport, authority.name or "anonymous"))
        routed = Request(
            "INVITE",
            uri,
            Headers.of(
                [
                    ("From", str(who.with_tag(self.manager.gateway.ids.new_tag()))),
                    ("To", str(NameAddr(uri))),
                    ("Call-ID", self.id),
                    ("CSeq", "1 INVITE"),
                ]
            ),
        )
        try:
            decision = self.manager.route(routed, authority)
        except Exception:  # a routing plugin's bug fails this forward, not the call
            log_exception(log, "call %s: routing a redirect target failed", self.id)
            return "routing failed"
        if not decision.targets:
            status = decision.reject_status or 404
            return f"{status} {decision.reject_reason or default_reason(status)}"
        targets, alternates = decision.targets, decision.alternates
        if self.secure:  # RFC 5630 §3.1.3: TLS on every hop, a forward's too
            targets, alternates = over_tls_only(targets), over_tls_only(alternates)
            if not targets and alternates:
                targets, alternates = alternates[:1], alternates[1:]
            if not targets:
                return "not reached over TLS (SIPS)"
        directory = self.manager.gateway.directory
        assert directory is not None  # _redirected checked
        dialled = directory.to_e164(contact.user)
        for target in targets:
            account = target.account
            if account is not None and account in state.caller_keys:
                return "it is the call's own caller"
            if account is not None and account != dialled and account in state.tried:
                return "a loop: that account was rung in this call already"
        counted = [(target, self._count_target(target)) for target in targets]
        ringing = [target for target, why in counted if why is None]
        self._alternates = list(alternates)
        if not ringing and (alternate := self._next_alternate()) is not None:
            ringing = [alternate]
        if not ringing:
            first, why = counted[0]
            return f"{first.trunk or first.account} is at its {why}"
        # Taps deciding at the start learn whom the call reaches now (lawful intercept of the
        # forwarded-to party); before the INVITEs, so their dialogs are copied from the first.
        self.manager.reached(cast("Call", self), ringing, str(uri))
        earlier = self._diverted
        self._diverted = chain
        before = len(self.b_legs)
        for target in ringing:
            refusal = await self._call_target(target, self._offer_b)
            if refusal is not None:
                self._refusals.append(refusal)
        self._release_uncalled(ringing)
        called = self.b_legs[before:]
        if not any(not leg.finished for leg in called):
            self._diverted = earlier
            return "the target could not be called"
        state.tried.update(target.account for target in ringing if target.account)
        state.legs.extend(called)
        self._attempt = [leg for leg in self._attempt if not leg.finished] + called
        self._ring_deadline = trio.current_time() + self.config.sip.ring_timeout
        via = [(target.trunk and f"trunk {target.trunk}") or target.account for target in ringing]
        entry["via"] = ", ".join(str(name) for name in via)
        state.records.append(entry)
        log.info(
            "call %s: forwarded by %s (%s, %s) to %s via %s",
            self.id,
            entry["by"],
            entry["status"],
            entry["reason"],
            entry["to"],
            entry["via"],
        )
        return None

    def _redirect_refused(self, entry: dict[str, object], why: str) -> None:
        log.info(
            "call %s: redirect by %s (%s) to %s not followed: %s",
            self.id,
            entry["by"],
            entry["status"],
            entry.get("to", "-"),
            why,
        )
        assert self._redirects is not None
        if len(self._redirects.records) < MAX_REDIRECT_RECORDS:
            self._redirects.records.append({**entry, "refused": why})

    def _new_redirects(self) -> Redirects:
        """The forwarding state of the call, made at its first 3xx: the targets it tried (the
        number dialled, the accounts rung, whoever diverted it before) and its own caller."""
        directory = self.manager.gateway.directory
        invite = self.a.invite
        assert directory is not None and invite is not None
        caller_trunk = self.caller.name if self.caller.kind == "trunk" else None
        user = called_user(invite.uri) or ""
        dialled = directory.to_e164(user, trunk=caller_trunk) if user else ""
        state = Redirects(dialled=dialled)
        state.tried.add(dialled)
        state.tried.update(
            leg.target.account for leg in self.b_legs if leg.target and leg.target.account
        )
        state.tried.update(diverted.party for diverted in self._diverted)
        if self.caller.kind == "account" and self.caller.name is not None:
            state.caller_keys.update(self._account_keys(self.caller.name))
        elif caller_trunk is not None:
            from_user = invite.from_.uri.user if isinstance(invite.from_.uri, SipUri) else None
            if from_user:
                state.caller_keys.add(directory.to_e164(from_user, trunk=caller_trunk))
        state.caller_keys.discard("")
        return state

    def _account_keys(self, account: str) -> set[str]:
        """``account`` and its numbers (the trunks' DIDs that reach it) as E.164."""
        directory = self.manager.gateway.directory
        assert directory is not None
        keys = {account}
        for trunk in self.config.trunks:
            for number, owner in trunk.dids.items():
                if owner == account:
                    keys.add(directory.to_e164(number, trunk=trunk.name))
        return keys


@attrs.define
class Redirects:
    """A call's forwarding by redirect (redirect.py): the number its caller dialled (as
    E.164), how many 3xx it followed, the targets it tried and its caller's own (both as
    E.164 or account names: a loop and a recursion into the caller are refused), the
    Contacts still to try (each with the authority it is routed with, the diversions it
    carries and its record entry), and the record entries."""

    dialled: str
    followed: int = 0
    tried: set[str] = attrs.field(factory=set)
    caller_keys: set[str] = attrs.field(factory=set)
    pending: list[tuple[RedirectContact, Caller, tuple[Diverted, ...], dict[str, object]]] = (
        attrs.field(factory=list)
    )
    records: list[dict[str, object]] = attrs.field(factory=list)
    legs: list[BLeg] = attrs.field(factory=list)
    """The legs the forwards rang: their failure is the forward's, not the phone's."""


def _shown_user(user: str | None) -> str:
    return user if user is not None else "(no user part)"
