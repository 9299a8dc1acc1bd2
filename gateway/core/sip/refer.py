"""Call transfer by REFER (RFC 3515), with Replaces (RFC 3891) and without a subscription (RFC
4488). Sans-IO: header values in, what to do out.

A transfer has three parties (RFC 5589 §2): the transferor sends REFER in its dialog, the
transferee is the party it talks to, the target is whom the transferee is to talk to instead.
The REFER names the target in ``Refer-To``; the recipient answers 202 and reports how its INVITE
to the target fares in NOTIFYs (``Event: refer``, a ``message/sipfrag`` body holding a status
line, §2.4.4-2.4.5), unless the REFER said ``Refer-Sub: false`` (RFC 4488).

A blind transfer names the target by its address; an attended (consultative) transfer names the
dialog the transferor holds with the target in a ``Replaces`` header inside the Refer-To URI
(``<sip:bob@host?Replaces=call-id%3Bto-tag%3D...%3Bfrom-tag%3D...>``), which the transferee
puts in its INVITE so the target swaps that dialog for the new one (RFC 5589 §7). The tags in a
Replaces value are as the recipient of the INVITE sees the dialog: ``to-tag`` is its own tag,
``from-tag`` its peer's (RFC 3891 §3).
"""

from __future__ import annotations

from urllib.parse import unquote

import attrs

from gateway.core.sip.errors import RemoteSipError, SipParseError
from gateway.core.sip.grammar import parse_name_addr_untrusted
from gateway.core.sip.message import Headers
from gateway.core.sip.uri import SipUri, TelUri, Uri

SIPFRAG = "message/sipfrag;version=2.0"
# How long the implicit subscription lasts when a REFER does not say (RFC 3515 §2.4.6 leaves it
# to the notifier); we end it with the transfer anyway, long before.
SUBSCRIPTION_SECONDS = 60


@attrs.frozen
class Replaces:
    """A dialog to replace (RFC 3891 §6.1): its Call-ID and tags, as the recipient of the INVITE
    that carries it sees them (``to_tag`` its own)."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    def __str__(self) -> str:
        early = ";early-only" if self.early_only else ""
        return f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}{early}"


@attrs.frozen
class ReferTo:
    """Where a REFER sends the transferee: the target's URI (without its headers) and, for an
    attended transfer, the dialog it replaces."""

    uri: Uri
    replaces: Replaces | None = None


def parse_refer(headers: Headers) -> ReferTo:
    """The transfer a REFER asks for (RFC 3515 §2.4.1: exactly one Refer-To). Raises
    RemoteSipError: 400 for no or several Refer-To, an unreadable one or an unreadable Replaces;
    416 for a target that is not a SIP, SIPS or TEL URI; 501 for a referred request other than
    INVITE (``method=`` in the URI: we transfer calls, nothing else)."""
    values = headers.get_all("Refer-To")
    if len(values) != 1:
        raise RemoteSipError(f"REFER needs exactly one Refer-To, not {len(values)}")
    try:
        target = parse_name_addr_untrusted(values[0])
    except SipParseError as err:
        raise RemoteSipError(f"unreadable Refer-To: {err.reason}") from err
    uri = target.uri
    if isinstance(uri, TelUri):
        return ReferTo(uri)
    if not isinstance(uri, SipUri):
        raise RemoteSipError("Refer-To is not a SIP, SIPS or TEL URI", 416)
    method = uri.param("method")
    if method is not None and method.upper() != "INVITE":
        raise RemoteSipError(f"REFER for a {method.upper()} request", 501)
    replaces: Replaces | None = None
    for name, value in uri.headers:
        if name.lower() == "replaces":
            replaces = parse_replaces(unquote(value))
    bare = attrs.evolve(uri, params=tuple(p for p in uri.params if p[0].lower() != "method"))
    return ReferTo(attrs.evolve(bare, headers=()), replaces)


def parse_replaces(value: str) -> Replaces:
    """``callid *(SEMI replaces-param)`` (RFC 3891 §6.1); both tags are required."""
    call_id, *params = (part.strip() for part in value.split(";"))
    tags: dict[str, str] = {}
    early_only = False
    for param in params:
        name, _, param_value = param.partition("=")
        name = name.strip().lower()
        if name in ("to-tag", "from-tag"):
            tags[name] = param_value.strip()
        elif name == "early-only":
            early_only = True
    if not call_id or not tags.get("to-tag") or not tags.get("from-tag"):
        raise RemoteSipError("unreadable Replaces in Refer-To (needs Call-ID, to-tag, from-tag)")
    return Replaces(call_id, tags["to-tag"], tags["from-tag"], early_only)


def wants_subscription(headers: Headers) -> bool:
    """False when the REFER asks for no NOTIFYs (``Refer-Sub: false``, RFC 4488 §4); we then
    answer with ``Refer-Sub: false`` and send none."""
    value = headers.get("Refer-Sub")
    return value is None or value.strip().lower() != "false"


def sipfrag(status: int, reason: str) -> bytes:
    """A NOTIFY body for a REFER: the status line of the referred INVITE's latest response
    (RFC 3515 §2.4.5; RFC 3420 message/sipfrag)."""
    safe = "".join(c if " " <= c <= "~" else "?" for c in reason)
    return f"SIP/2.0 {status} {safe}\r\n".encode("ascii")


def subscription_state(final: bool, *, expires: int = SUBSCRIPTION_SECONDS) -> str:
    """The Subscription-State of a NOTIFY for a REFER (RFC 3515 §2.4.7: the last one, after a
    final response, terminates the subscription)."""
    return "terminated;reason=noresource" if final else f"active;expires={expires}"
