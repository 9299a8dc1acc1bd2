"""Call forwarding by redirect: a callee's 3xx followed, and who diverted the call told onward.

Theory of operation. Desk phones forward calls ("always", "busy", "no answer") by answering our
INVITE ``302 Moved Temporarily`` with the new target in ``Contact`` (RFC 3261 §8.1.3.4, §21.3).
The call (:mod:`gateway.core.calls.forwarding`) follows 300, 301, 302 and 305 from a phone's leg (a
trunk's only with ``[[trunks]] follow_redirects``); 380 Alternative Service describes a service,
not a target, and is never followed. The Contacts are taken in q-value order (RFC 3261 §16.6
step 1, §8.1.3.4), one at a time. Only the user part of each is used: it is routed by the
gateway's own routing as a call the redirecting account places, and the host named in the
Contact is never sent to (a phone could otherwise make the gateway send calls anywhere at the
operator's cost).

Who diverted the call goes with the new INVITE (RFC 5806 ``Diversion``, RFC 7044
``History-Info``), as each trunk's ``diversion`` policy says; phones always get ``Diversion``
(they show "forwarded from"). A trunk's call that arrives diverted already is read here too
(:func:`carried_diversion_untrusted`), bounded, so that its phone shows who forwarded it.

Everything here is sans-IO and synchronous: parsing and building header values.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal
from urllib.parse import unquote

import attrs

from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.grammar import parse_name_addr_untrusted, split_list_untrusted
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Response
from gateway.core.sip.uri import SipUri, TelUri, Uri, get_param

DiversionPolicy = Literal["diversion", "history-info", "none"]

# RFC 3261 §21.3: the redirections that name a target to try; 380 names a service (not followed).
FOLLOWED_STATUSES = frozenset({300, 301, 302, 305})
# Contacts of one 3xx considered at most (a phone names one; a flood is cut here).
MAX_REDIRECT_CONTACTS = 8
# A Contact's user part longer than this is no number or account name of ours.
MAX_USER_LENGTH = 64
# Incoming Diversion / History-Info: fields read at most, characters of one field, entries of a
# History-Info list (RFC 7044 lets it grow with every hop; we want one entry of it).
MAX_DIVERSION_FIELDS = 4
MAX_DIVERSION_LENGTH = 512
MAX_HISTORY_ENTRIES = 16
# Diversion entries we send at most (newest first); older ones are left out.
MAX_DIVERSIONS_SENT = 6

# RFC 5806 §4 diversion-reason values we send and accept; anything else reads "unknown".
DIVERSION_REASONS = frozenset(
    {
        "unknown",
        "user-busy",
        "no-answer",
        "unavailable",
        "unconditional",
        "time-of-day",
        "do-not-disturb",
        "deflection",
        "follow-me",
        "out-of-service",
        "away",
    }
)
# RFC 4458 §3 cause values (History-Info's ``cause`` URI parameter, RFC 7044 §4.2) for each
# diversion reason, and back; reasons RFC 4458 has no cause for go as 302 (unconditional).
_CAUSE_OF_REASON = {
    "unconditional": 302,
    "user-busy": 486,
    "no-answer": 408,
    "unavailable": 503,
    "deflection": 480,
    "unknown": 404,
}
_REASON_OF_CAUSE = {
    302: "unconditional",
    486: "user-busy",
    408: "no-answer",
    480: "deflection",
    487: "deflection",
    503: "unavailable",
    404: "unknown",
}
# A RFC 3326 Reason a phone may put in its 3xx: the SIP cause of the forwarding condition.
_REASON_CAUSE = re.compile(r"^\s*SIP\s*;(?:.*;)?\s*cause\s*=\s*(\d{3})", re.IGNORECASE)
_SAFE_USER = re.compile(rf"[A-Za-z0-9+*#._~!'()-]{{1,{MAX_USER_LENGTH}}}")


@attrs.frozen
class Diverted:
    """One diversion of a call: who diverted it (``party``: an account name when ``account``,
    else a number as E.164 or a dial string), why (an RFC 5806 reason) and the 3xx status that
    did it (0 for one a trunk's INVITE carried)."""

    party: str
    reason: str = "unconditional"
    status: int = 0
    account: bool = False

    @property
    def cause(self) -> int:
        """The RFC 4458 cause of :attr:`reason`."""
        return _CAUSE_OF_REASON.get(self.reason, 302)


@attrs.frozen
class RedirectContact:
    """A Contact of a 3xx as we follow it: its URI, the user part that is routed, its q."""

    uri: Uri
    user: str | None
    q: float


def redirect_contacts_untrusted(
    response: Response, *, limit: int = MAX_REDIRECT_CONTACTS
) -> list[RedirectContact]:
    """The Contacts of a 3xx ``response``, highest q first, in the order given among equal q
    (RFC 3261 §8.1.3.4; a Contact without q counts as 1.0). At most ``limit`` are read;
    elements that do not parse, and ones with a q outside 0..1, are left out."""
    contacts: list[RedirectContact] = []
    for value in response.headers.get_all("Contact")[:limit]:
        try:
            elements = split_list_untrusted(value)
        except RemoteSipError:
            continue
        for element in elements:
            if len(contacts) >= limit:
                break
            try:
                named = parse_name_addr_untrusted(element)
            except RemoteSipError:
                continue
            if named.uri is None or named.wildcard:
                continue
            q = _q_value(named.param("q"))
            if q is None:
                continue
            contacts.append(RedirectContact(uri=named.uri, user=uri_user(named.uri), q=q))
    return sorted(contacts, key=lambda contact: -contact.q)  # stable: ties keep their order


def _q_value(text: str | None) -> float | None:
    if text is None:
        return 1.0
    try:
        q = float(text)
    except ValueError:
        return None
    return q if 0.0 <= q <= 1.0 else None


def uri_user(uri: Uri) -> str | None:
    """The user part that a redirect to ``uri`` routes: a SIP URI's user (decoded, without
    user parameters), a tel URI's number; None when there is none or it is not plain text."""
    if isinstance(uri, SipUri):
        user = uri.user
    elif isinstance(uri, TelUri):
        user = uri.number
    else:
        return None
    if not user:
        return None
    user = unquote(user).partition(";")[0]
    return user if _SAFE_USER.fullmatch(user) else None


def redirect_reason(response: Response, contact: Uri) -> str:
    """Why a phone redirected, as an RFC 5806 reason: a ``Diversion`` in its 3xx (Cisco, SPA),
    the RFC 4458 ``cause`` of the Contact, a ``Reason: SIP;cause=`` (RFC 3326); else
    "unconditional" (a phone says nothing when it forwards always)."""
    diversion = response.headers.get("Diversion")
    if diversion is not None and len(diversion) <= MAX_DIVERSION_LENGTH:
        reason = _diversion_entry(diversion)
        if reason is not None and reason.reason != "unknown":
            return reason.reason
    cause = get_param(contact.params, "cause") if isinstance(contact, SipUri) else None
    if cause is not None and cause.isdigit() and int(cause) in _REASON_OF_CAUSE:
        return _REASON_OF_CAUSE[int(cause)]
    for value in response.headers.get_all("Reason")[:MAX_DIVERSION_FIELDS]:
        match = _REASON_CAUSE.match(value)
        if match is not None:
            status = int(match.group(1))
            if status == 486:
                return "user-busy"
            if status in (408, 480):
                return "no-answer"
    return "unconditional"


# -- headers we send ------------------------------------------------------------------------


def diversion_values(parties: Sequence[tuple[str, Diverted]]) -> list[str]:
    """``Diversion`` values (RFC 5806 §4) for the diversions of a call, oldest first in
    ``parties`` (each with the URI its party is shown as): newest first, each with its reason
    and counter (how many diversions the call had by then), at most
    :data:`MAX_DIVERSIONS_SENT`."""
    values = [
        f"<{uri}>;reason={diverted.reason};counter={count}"
        for count, (uri, diverted) in enumerate(parties, start=1)
    ]
    return values[::-1][:MAX_DIVERSIONS_SENT]


def history_info_values(parties: Sequence[tuple[str, Diverted]], target: str) -> list[str]:
    """``History-Info`` entries (RFC 7044) for the diversions of a call, oldest first in
    ``parties``, ending with ``target``: each diverting party's entry carries the SIP status it
    redirected with (an escaped ``Reason``, §9.3); each entry reached by a diversion carries
    that diversion's RFC 4458 ``cause`` in its URI and ``mp`` naming the entry it was
    retargeted from (§9.4: a redirect, the Request-URI replaced)."""
    parties = list(parties)[-MAX_DIVERSIONS_SENT:]
    entries: list[str] = []
    index, parent, cause = "1", "", 0
    for uri, diverted in parties:
        shown = f"{uri};cause={cause}" if parent else uri
        entry = f"<{shown}?Reason=SIP%3Bcause%3D{diverted.status or diverted.cause}>;index={index}"
        entries.append(f"{entry};mp={parent}" if parent else entry)
        parent, index, cause = index, f"{index}.1", diverted.cause
    entries.append(f"<{target};cause={cause or 302}>;index={index};mp={parent or '1'}")
    return entries


# -- headers we receive -----------------------------------------------------------------------


def carried_diversion_untrusted(headers: Headers) -> Diverted | None:
    """The latest diversion a trunk's INVITE says the call had: the top ``Diversion`` entry
    (RFC 5806), else the ``History-Info`` entry the last one was retargeted from (RFC 7044
    §9.4 ``mp``, else the one before it) with the last one's RFC 4458 ``cause``; None when
    there is none or it does not parse. Bounded: :data:`MAX_DIVERSION_FIELDS` fields of at
    most :data:`MAX_DIVERSION_LENGTH` characters, :data:`MAX_HISTORY_ENTRIES` entries."""
    for value in headers.get_all("Diversion")[:1]:
        if len(value) <= MAX_DIVERSION_LENGTH:
            return _diversion_entry(value)
        return None
    entries: list[NameAddr] = []
    for value in headers.get_all("History-Info")[:MAX_DIVERSION_FIELDS]:
        if len(value) > MAX_DIVERSION_LENGTH:
            return None
        try:
            elements = split_list_untrusted(value)
        except RemoteSipError:
            return None
        for element in elements:
            if len(entries) >= MAX_HISTORY_ENTRIES:
                break
            try:
                entries.append(parse_name_addr_untrusted(element))
            except RemoteSipError:
                return None
    if len(entries) < 2:
        return None
    last = entries[-1]
    parent = last.param("mp")
    diverting = next((e for e in entries if parent and e.param("index") == parent), entries[-2])
    if diverting.uri is None or last.uri is None:
        return None
    party = uri_user(diverting.uri)
    if party is None:
        return None
    cause = get_param(last.uri.params, "cause") if isinstance(last.uri, SipUri) else None
    reason = "unknown"
    if cause is not None and cause.isdigit():
        reason = _REASON_OF_CAUSE.get(int(cause), "unknown")
    return Diverted(party=party, reason=reason)


def _diversion_entry(value: str) -> Diverted | None:
    """The first entry of one ``Diversion`` field (RFC 5806 §4), or None."""
    try:
        elements = split_list_untrusted(value)
        named = parse_name_addr_untrusted(elements[0]) if elements else None
    except RemoteSipError:
        return None
    if named is None or named.uri is None:
        return None
    party = uri_user(named.uri)
    if party is None:
        return None
    reason = (named.param("reason") or "unknown").strip('"').lower()
    return Diverted(party=party, reason=reason if reason in DIVERSION_REASONS else "unknown")
