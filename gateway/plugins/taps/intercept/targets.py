"""Target identifiers (X1 ``targetIdentifier``) and how a call is matched against them.

A task names its targets by the identities a VoIP network signals: a SIP URI (``sipUri``), a
tel URI (``telUri``) or an E.164 number (``e164Number``). Each is reduced to a *match key*
when provisioned, and each identity the caller's INVITE carries is reduced the same way when a
call starts, so matching a call is a few set lookups whatever the number of tasks:

- SIP URI ``sip:alice@Example.COM:5061;transport=tls`` -> ``sip:alice@example.com`` (scheme sips
  counts as sip, the host is case-insensitive, port and parameters do not identify a person;
  the user part is compared as written, RFC 3261 §19.1.4);
- a number, from a tel URI, an ``e164Number`` or the user part of a SIP URI that is a number
  (``+49 30 123-456``, ``sip:+4930123456@gw;user=phone``) -> ``tel:4930123456``: digits only,
  visual separators (RFC 3966 §5.1.1) and the leading + dropped.

What this does not do: national or private numbering plans are not turned into E.164 (a target
``4930123456`` does not match a call to ``030123456``); provision the forms the network signals.

The caller's identities are, for an account, who the gateway authenticated (its address of
record in our domains and the numbers that reach it, ``TappedCall.caller_uris``), and for a
trunk the From and every P-Asserted-Identity URI (RFC 3325); the callee's are the Request-URI
and the To URI of the caller's INVITE and, once the call is routed, the accounts it reaches
(``TappedCall.callee_uris``). Which side matched decides the
direction of every PDU (what the target sent and what it was sent).
"""

from __future__ import annotations

import re

import attrs

from gateway.core.interfaces import TappedCall

KINDS = ("sipUri", "telUri", "e164Number")
_VISUAL = re.compile(r"[-.() ]")
_NUMBER = re.compile(r"\+?[0-9]{3,20}")


class TargetError(ValueError):
    """A target identifier we cannot match on; the text says why."""


@attrs.frozen
class TargetIdentifier:
    kind: str  # one of KINDS
    value: str

    @property
    def key(self) -> str:
        return match_key(self.kind, self.value)


def match_key(kind: str, value: str) -> str:
    """The key a target of ``kind`` is found by. Raises :class:`TargetError`."""
    value = value.strip()
    if kind == "sipUri":
        key = _sip_key(value)
        if key is None:
            raise TargetError(f"not a SIP URI with a user part: {value[:80]!r}")
        return key
    if kind == "telUri":
        if not value.lower().startswith("tel:"):
            raise TargetError(f"not a tel URI: {value[:80]!r}")
        number = _number_key(value[4:].split(";", 1)[0])
    elif kind == "e164Number":
        number = _number_key(value)
    else:
        raise TargetError(f"target identifier type {kind!r} is not supported here")
    if number is None:
        raise TargetError(f"not a number: {value[:80]!r}")
    return number


def _sip_key(uri: str) -> str | None:
    scheme, _, rest = uri.partition(":")
    if scheme.lower() not in ("sip", "sips") or "@" not in rest:
        return None
    user, _, hostport = rest.rpartition("@")
    user = user.split(";", 1)[0]  # RFC 3261 §25.1: user parameters do not name the user
    host = hostport.split(";", 1)[0].split("?", 1)[0]
    # A port does not name a person either; an IPv6 reference keeps its brackets.
    host = host[: host.find("]") + 1] if host.startswith("[") else host.split(":", 1)[0]
    if not user or not host:
        return None
    return f"sip:{user}@{host.lower()}"


def _number_key(text: str) -> str | None:
    digits = _VISUAL.sub("", text.strip())
    if not _NUMBER.fullmatch(digits):
        return None
    return "tel:" + digits.lstrip("+")


def uri_keys(uri: str) -> set[str]:
    """The match keys of one URI the network signalled (a SIP URI: itself and, when its user
    part is a number, that number; a tel URI: its number)."""
    keys: set[str] = set()
    lowered = uri.lower()
    if lowered.startswith("tel:"):
        number = _number_key(uri[4:].split(";", 1)[0])
        if number is not None:
            keys.add(number)
        return keys
    key = _sip_key(uri)
    if key is not None:
        keys.add(key)
        number = _number_key(key[4:].rpartition("@")[0])
        if number is not None:
            keys.add(number)
    return keys


def party_keys(call: TappedCall) -> tuple[set[str], set[str]]:
    """The match keys of the caller and of the callee of ``call``. An account's call is
    matched on who the gateway authenticated (``caller_uris``: its address of record, its
    numbers), never on the From or P-Asserted-Identity its phone wrote: a phone can withhold
    its identity (Privacy: id, an anonymous From) or claim somebody else's (RFC 3325 §9.1:
    an asserted identity from an untrusted peer means nothing). A trunk's call is matched on
    the From and P-Asserted-Identity the trusted network sent, and on their numbers as the
    trunk's numbering plan reads them (``caller_uris``: ``030123456`` from a German carrier is
    also ``+4930123456``)."""
    caller: set[str] = set()
    claimed = (
        call.caller_uris
        if call.caller_kind == "account"
        else (call.from_uri, *call.asserted_uris, *call.caller_uris)
    )
    for uri in claimed:
        caller |= uri_keys(uri)
    callee: set[str] = set()
    for uri in (call.to_uri, call.to_header_uri, *call.callee_uris):
        if uri:
            callee |= uri_keys(uri)
    return caller, callee
