"""Caller identity on trunk calls: what the call hands the ``CallerIdentity`` services that
plugins register (``gateway_register_caller_identity``; STIR/SHAKEN, RFC 8224 and RFC 8588).

Two points of a call ask them, and only while one is registered (the call manager keeps the
list; an empty list is one truth test per call):

- our INVITE to a trunk, built: ``sign`` may add headers (``Identity``, RFC 8224 §4.1). The
  numbers are read from the INVITE as the trunk gets it (P-Asserted-Identity, else From; the
  Request-URI) by the trunk's numbering plan, so they are what the trunk compares the signature
  with (RFC 8224 §8.3 canonical form is the plugin's business);
- an INVITE from a trunk, before routing: ``check`` may return a check the call's task awaits
  (it fetches certificates). Its outcome may refuse the call (RFC 8224 §6.2.2: 438 ...) and
  gives tel URI parameters for the caller's number towards the phones (``verstat``,
  ATIS-1000074 §5.3.1). The check is told whether the call is an emergency call
  (``TrunkCall.emergency``), which no outcome may refuse: a refusal returned for one is dropped
  here, whatever the plugin. A service that raises is logged and the call goes on unsigned or
  unverified: caller identity is never worth a failed call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from gateway.core.calls.numbering import read_number
from gateway.core.interfaces import IdentityOutcome, TrunkCall
from gateway.core.logs import log_exception
from gateway.core.sip.errors import SipError
from gateway.core.sip.grammar import parse_name_addr_untrusted, split_list_untrusted
from gateway.core.sip.message import Request
from gateway.core.sip.uri import SipUri, TelUri, Uri

if TYPE_CHECKING:
    from gateway.core.calls.call import Call
    from gateway.core.config import TrunkConfig

log = logging.getLogger(__name__)

# P-Asserted-Identity values read from a trunk's INVITE, at most (RFC 3325 §9.1 allows two: a
# SIP and a tel URI).
MAX_ASSERTED = 2


def signed(
    call: Call, trunk: TrunkConfig, request: Request, *, for_account: str | None = None
) -> Request:
    """``request``, our INVITE to ``trunk``, with the headers the caller-identity services add
    (none: as it is). It presents the call's caller, or ``for_account``: the account whose
    number a transfer's INVITE presents (the transferor's, whoever the transferee is)."""
    caller = call.caller
    kind, name = ("account", for_account) if for_account is not None else (caller.kind, caller.name)
    plan = call.manager.plan_of(trunk)
    asserted = _numbers(request, plan_reader=lambda user: read_number(plan, user))
    presented = asserted[1:2] or asserted[:1]  # P-Asserted-Identity, else From
    own = False
    if kind == "account" and presented:
        dids = [number for number, owner in trunk.dids.items() if owner == name]
        own = presented[0] in {read_number(plan, number) for number in dids}
    info = TrunkCall(
        call_id=call.id,
        trunk=trunk.name,
        caller_kind=kind,
        caller_name=name,
        calling=tuple(presented),
        called=_called(request.uri, lambda user: read_number(plan, user)),
        own_number=own,
        at=time.time(),
        received_identity=(
            call.a.invite.headers.get_all("Identity")
            if kind == "trunk" and call.a.invite is not None
            else ()
        ),
    )
    headers: list[tuple[str, str]] = []
    for service in call.manager.caller_identity:
        try:
            outcome = service.sign(info)
        except Exception:
            log_exception(log, "call %s: a caller-identity service failed to sign", call.id)
            continue
        if outcome is not None:
            headers += outcome.headers
            call.manager.identity_outcome(call, outcome)
    if not headers:
        return request
    extended = request.headers
    for name, value in headers:
        extended = extended.add(name, value)
    return request.with_headers(extended)


async def checked(call: Call, trunk: TrunkConfig, request: Request) -> IdentityOutcome | None:
    """The outcome of the caller-identity check of ``request``, the INVITE ``trunk`` sent us;
    None when no service checks this trunk's calls."""
    plan = call.manager.plan_of(trunk)
    info = TrunkCall(
        call_id=call.id,
        trunk=trunk.name,
        caller_kind="trunk",
        caller_name=trunk.name,
        calling=tuple(_numbers(request, plan_reader=lambda user: read_number(plan, user))),
        called=_called(request.uri, lambda user: read_number(plan, user)),
        at=time.time(),
        emergency=call.manager.calls_emergency_number(request),
        psap_callback=call.psap_callback,
    )
    for service in call.manager.caller_identity:
        try:
            check = service.check(info, request)
            outcome = None if check is None else await check.run()
        except Exception:
            log_exception(log, "call %s: a caller-identity service failed to check", call.id)
            continue
        if (
            outcome is not None
            and outcome.reject is not None
            and (info.emergency or info.psap_callback)
        ):
            log.warning(
                "call %s: %s is not refused for its caller identity (%d %s)",
                call.id,
                "an emergency call" if info.emergency else "a PSAP callback",
                *outcome.reject,
            )
            outcome = attrs.evolve(outcome, reject=None)
        if outcome is not None:
            call.manager.identity_outcome(call, outcome)
            return outcome
    return None


def _numbers(request: Request, *, plan_reader: Callable[[str], str]) -> list[str]:
    """The From's number, then those of the P-Asserted-Identity headers, read by the trunk's
    plan (``plan_reader``); a URI without a user part is left out."""
    numbers: list[str] = []
    from_user = _user_of(request.from_.uri)
    numbers.append(plan_reader(from_user) if from_user else "")
    asserted = 0
    for value in request.headers.get_all("P-Asserted-Identity"):
        try:
            items = split_list_untrusted(value)
            for item in items:
                user = _user_of(parse_name_addr_untrusted(item).uri)
                if user and asserted < MAX_ASSERTED:
                    numbers.append(plan_reader(user))
                    asserted += 1
        except SipError:
            continue  # identifies nobody
    return numbers


def _called(uri: Uri, plan_reader: Callable[[str], str]) -> str | None:
    user = _user_of(uri)
    return plan_reader(user) if user else None


def _user_of(uri: Uri | None) -> str | None:
    if isinstance(uri, SipUri):
        return uri.user or None
    if isinstance(uri, TelUri):
        return uri.number or None
    return None
