"""Location conveyance (RFC 6442): a phone's location passed on to the trunk of its call.

Theory of operation. A phone that knows where it is (an MLTS phone under Kari's Law / RAY
BAUM's Act, an NG911/NG112 client) puts its location in its INVITE (RFC 6442 §4.1):

- ``Geolocation: <cid:target123@example.com>`` names a body part by its Content-ID (RFC 2392):
  location *by value*, a PIDF-LO document (``application/pidf+xml``, RFC 4119 / RFC 5491) in a
  ``multipart/mixed`` body beside the SDP;
- ``Geolocation: <https://lis.example.com/loc/1>`` (or ``sips:``/``sip:``/``pres:``): location
  *by reference*, which the emergency network dereferences itself; only the header goes on;
- ``Geolocation-Routing: yes|no`` (§4.2) says whether the location may be used to route.

The gateway is a B2BUA, not an ESRP: it does not read the PIDF-LO, it only carries it. When the
INVITE carries location (:func:`offered_location`, once per call, only when the INVITE has one
of the headers or a location part: a call without location pays one header lookup), each B leg
is decided on its own by policy (:func:`passes`): towards a trunk by the trunk's ``location``
(``"emergency"``, the default: only calls to ``[numbering] emergency_numbers``; ``"all"``;
``"never"``); towards a phone (an account) never, since a phone has no use for another's location
and it is personal data. Where it passes (:func:`with_location`), leg B's INVITE gets the
Geolocation values as received (a ``cid:`` keeps its Content-ID: the part goes with it),
Geolocation-Routing, and a ``multipart/mixed`` body of ours: our SDP first, then each referenced
location part byte for byte (Content-Type, Content-ID, Content-Disposition included). Where it
does not, header and part are dropped, logged at info without contents.

Errors (RFC 6442 §4.3, §5): a Geolocation naming a ``cid:`` that is no location part of the body,
a location part that is not PIDF-LO XML, or more location than we carry, is answered 424 Bad
Location Information with ``Geolocation-Error: 100`` ("Cannot Process Location"); the phone may
try again without it. A Geolocation header that does not parse is 400. A location part marked
``handling=required`` is honoured in both cases (RFC 5621 §3.2 asks for 415 only for a part the
UAS does not understand; we understand it and apply our privacy policy to it), so an emergency
call is never refused for it.

Updates (RFC 6442 §4.1 has Geolocation in re-INVITE and UPDATE as well): a caller's new
location is checked the same way and passed by the same policy (the call's
``Call._location_update``); one that fails the checks is left out rather than refused. An UPDATE
without an offer carries it alone (:func:`location_body` without SDP), whether it came in a
multipart body or as the request's whole body (a lone PIDF-LO its Content-ID header field names,
RFC 8262 §3; ``gateway.core.sdp.body``). The caller's UPDATE waits for the trunk's answer to
ours for a bounded time only (``Call._bound_location_wait``): it is its session refresh too.
A Geolocation-Error (§4.3) may come on any response to a request that carried location, a
2xx included; it goes back to the caller on our counterpart response
(:func:`geolocation_errors`), and the call record keeps its code only
(:func:`location_error_code_untrusted`).

A location is personal data: its contents are never logged or recorded, only that one was
conveyed (by value or by reference), its size and its Content-ID.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Literal
from urllib.parse import unquote

import attrs

from gateway.core.sdp.body import SDP, BodyPart
from gateway.core.sip.errors import SipParseError
from gateway.core.sip.grammar import split_list_untrusted
from gateway.core.sip.message import Request, Response

log = logging.getLogger(__name__)

LocationPolicy = Literal["emergency", "all", "never"]
LOCATION_POLICIES: tuple[LocationPolicy, ...] = ("emergency", "all", "never")

MAX_LOCATIONS = 3
"""Location values in Geolocation, and location parts in the body, that one INVITE may carry
(RFC 6442 §3.2 expects one; a few more are tolerated, past them 424)."""
MAX_LOCATION_SIZE = 16384
"""Bytes of one location part (a PIDF-LO is a few KB; past it 424)."""
MAX_LOCATION_URI = 1024  # characters of one Geolocation URI (past it 400)
MAX_ROUTING = 64  # characters of the Geolocation-Routing value

CANNOT_PROCESS = '100 ;code="Cannot Process Location"'  # RFC 6442 §4.3, the generic error

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:")
_URI_CHARS = re.compile(r"[!-;=?-~]+")  # printable, no space, "<" or ">" (RFC 3986 §2)
_PARAMS = re.compile(r'(\s*;\s*[!#$%&\'*+.0-9A-Z^_`a-z|~\-]+(\s*=\s*("[^"\\]*"|[^;"\s]+))?)*\s*')
_TOKEN = re.compile(r"[!#$%&'*+.0-9A-Z^_`a-z|~\-]+")
_XML_START = re.compile(rb"\s*(<\?xml[^>]*\?>\s*)?<([A-Za-z_][\w.\-]*:)?presence[\s>/]")


class LocationError(Exception):
    """Location we cannot pass on: ``status`` to answer (400 malformed, 424 Bad Location
    Information), ``reason`` for the response and the logs (never location contents)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def extra_headers(self) -> list[tuple[str, str]]:
        """Geolocation-Error for a 424 (RFC 6442 §4.3)."""
        return [("Geolocation-Error", CANNOT_PROCESS)] if self.status == 424 else []


@attrs.frozen
class Location:
    """The location an INVITE conveys, checked, ready to be passed on or dropped."""

    values: tuple[str, ...]  # Geolocation values as received, one per location
    routing: str | None  # Geolocation-Routing value
    parts: tuple[BodyPart, ...]  # the location parts the cid: values name, in their order
    by_reference: bool  # a Geolocation value other than cid:
    # Location parts no Geolocation value names: not passed on (RFC 6442 §4.1 has every
    # location body referenced; an unreferenced one is no location we can vouch for).
    unreferenced: int = 0

    @property
    def conveyed(self) -> str:
        """How: "by value", "by reference", both, "routing only" (Geolocation-Routing alone,
        §4.2: permission for location added downstream), or "none" (only unreferenced
        parts)."""
        kinds = [
            kind
            for kind, present in (("by value", self.parts), ("by reference", self.by_reference))
            if present
        ]
        if not kinds:
            return "routing only" if self.routing is not None else "none"
        return " and ".join(kinds)

    def described(self) -> str:
        """For the logs: how, sizes and Content-IDs; never the contents."""
        parts = ", ".join(f"<{part.content_id}> {len(part.content)} bytes" for part in self.parts)
        unreferenced = f", {self.unreferenced} unreferenced part(s) left out" * bool(
            self.unreferenced
        )
        return f"{self.conveyed}{f' ({parts})' if parts else ''}{unreferenced}"


def carries_location(invite: Request, parts: Sequence[BodyPart]) -> bool:
    """Whether ``invite`` (whose body has location ``parts``) conveys location: the cheap test
    every INVITE takes."""
    headers = invite.headers
    return bool(
        parts
        or headers.get("Geolocation") is not None
        or headers.get("Geolocation-Routing") is not None
    )


def parse_geolocation_untrusted(values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Each location of the Geolocation header fields ``values`` (RFC 6442 §4.1: ``<URI>`` and
    generic parameters, comma-separated) as (URI, the value as received). Raises
    :class:`LocationError` (400) for one that does not parse, 424 past ``MAX_LOCATIONS``."""
    locations: list[tuple[str, str]] = []
    for value in values:
        try:
            elements = split_list_untrusted(value)
        except SipParseError as err:
            raise LocationError(400, f"malformed Geolocation: {err}") from None
        for element in elements:
            if len(locations) == MAX_LOCATIONS:
                raise LocationError(424, f"more than {MAX_LOCATIONS} locations in Geolocation")
            if element[:1] != "<" or ">" not in element:
                raise LocationError(400, "malformed Geolocation: expected <URI>")
            uri, _, params = element[1:].partition(">")
            if not 0 < len(uri) <= MAX_LOCATION_URI or not _URI_CHARS.fullmatch(uri):
                raise LocationError(400, "malformed Geolocation: bad URI")
            if not _SCHEME.match(uri):
                raise LocationError(400, "malformed Geolocation: URI without a scheme")
            if not _PARAMS.fullmatch(params):
                raise LocationError(400, "malformed Geolocation: bad parameters")
            locations.append((uri, element))
    if not locations:
        raise LocationError(400, "malformed Geolocation: empty")
    return tuple(locations)


def offered_location(invite: Request, parts: Sequence[BodyPart]) -> Location:
    """The location ``invite`` conveys (its Geolocation, Geolocation-Routing and the location
    ``parts`` of its body), checked (RFC 6442 §4.1, §4.2, §5). Raises :class:`LocationError`."""
    headers = invite.headers
    geolocation = headers.get_all("Geolocation")
    routing_values = headers.get_all("Geolocation-Routing")
    routing: str | None = None
    if routing_values:
        routing = routing_values[0].strip()
        if len(routing_values) > 1 or len(routing) > MAX_ROUTING or not _TOKEN.fullmatch(routing):
            raise LocationError(400, "malformed Geolocation-Routing (RFC 6442 §4.2)")
    if len(parts) > MAX_LOCATIONS:
        raise LocationError(424, f"more than {MAX_LOCATIONS} location parts")
    locations = parse_geolocation_untrusted(geolocation) if geolocation else ()
    by_id = {part.content_id: part for part in parts if part.content_id is not None}
    referenced: list[BodyPart] = []
    by_reference = False
    for uri, _ in locations:
        if uri[:4].lower() != "cid:":
            by_reference = True  # RFC 6442 §3.3: dereferenced by the recipient
            continue
        part = by_id.get(unquote(uri[4:]))  # RFC 2392 §2: the cid URL is %-encoded
        if part is None:
            # RFC 6442 §4.3: the location named is not in the body.
            raise LocationError(424, "Geolocation names a cid: that is no location body part")
        if len(part.content) > MAX_LOCATION_SIZE:
            raise LocationError(424, f"location part larger than {MAX_LOCATION_SIZE} bytes")
        if not _XML_START.match(part.content):
            raise LocationError(424, "location part is not a PIDF-LO document")
        if part not in referenced:
            referenced.append(part)
    return Location(
        tuple(value for _, value in locations),
        routing,
        tuple(referenced),
        by_reference,
        unreferenced=len(parts) - len(referenced),
    )


def passes(policy: LocationPolicy | None, *, emergency: bool) -> bool:
    """Whether location goes to a B leg: a trunk's ``location`` ``policy`` (None: the leg
    is a phone, which never gets another's location) for a call that is (``emergency``) or is
    not to ``[numbering] emergency_numbers``."""
    if policy == "all":
        return True
    return policy == "emergency" and emergency


def with_location(
    request: Request, location: Location, sdp: bytes, new_token: Callable[[], str]
) -> Request:
    """Our INVITE ``request`` (its body ``sdp``, or none for a late offer) with ``location``:
    its Geolocation values and Geolocation-Routing, and a multipart/mixed body (RFC 5621 §3.1,
    RFC 2046 §5.1) of our SDP and the referenced location parts as received, delimited by a
    boundary of ours (``new_token``) that none of them contains."""
    headers = request.headers
    for name, value in location_headers(location):
        headers = headers.add(name, value)
    request = request.with_headers(headers)
    located = location_body(location, sdp, new_token)
    return request if located is None else request.with_body(*located)


def location_headers(location: Location) -> list[tuple[str, str]]:
    """The Geolocation and Geolocation-Routing header fields that convey ``location``."""
    headers = []
    if location.values:
        headers.append(("Geolocation", ", ".join(location.values)))
    if location.routing is not None:
        headers.append(("Geolocation-Routing", location.routing))
    return headers


def location_body(
    location: Location, sdp: bytes, new_token: Callable[[], str]
) -> tuple[bytes, str] | None:
    """The multipart/mixed body (and its Content-Type) of ``sdp`` (none: a late offer) and the
    location parts of ``location``; None when it has no parts (by reference: ``sdp`` alone)."""
    if not location.parts:
        return None
    pieces = [b"Content-Type: " + SDP.encode() + b"\r\n\r\n" + sdp] if sdp else []
    pieces += [part.raw for part in location.parts]
    token = f"voipgw-{new_token()}"
    boundary, attempt = token, 0
    while any(boundary.encode() in piece for piece in pieces):
        attempt += 1  # RFC 2046 §5.1.1: in no part (ends: the parts are finite)
        boundary = f"{token}-{attempt}"
    delimiter = b"--" + boundary.encode()
    body = b"".join(delimiter + b"\r\n" + piece + b"\r\n" for piece in pieces)
    body += delimiter + b"--\r\n"
    return body, f"multipart/mixed;boundary={boundary}"


def location_error_code_untrusted(value: str) -> str | None:
    """The code of one Geolocation-Error value (RFC 6442 §4.3: ``location-error-code`` is
    ``1*3DIGIT``, before any parameters; 100 to 300 are registered), None for a value without
    one. Only the code is kept for the call record, never the text a peer put beside it."""
    code = value.partition(";")[0].strip()
    return code if 0 < len(code) <= 3 and code.isascii() and code.isdigit() else None


def geolocation_errors(response: Response) -> list[tuple[str, str]]:
    """The Geolocation-Error fields of a trunk's ``response`` to relay to the phone (RFC 6442
    §4.3: the error concerns the location the phone sent), at most ``MAX_LOCATIONS``."""
    values = response.headers.get_all("Geolocation-Error")
    return [("Geolocation-Error", value) for value in values[:MAX_LOCATIONS]]
