"""Session timers (RFC 4028): how long a dialog's session lives without a refresh, and who
refreshes it. Sans-IO: header values in, decisions and deadlines (float time) out.

A session refresh is a re-INVITE or UPDATE. Its request may carry ``Session-Expires: <s>``
(with ``refresher=uac|uas``, relative to that request's transaction) and ``Min-SE: <s>``; the
answering UAS picks the interval and the refresher and states them in its 2xx (§9, Table 2):

    UAC supports timer   refresher in request   refresher in the 2xx
    no                   (none)                 uas
    yes                  (none)                 uac or uas (the UAS chooses)
    yes                  uac                    uac
    yes                  uas                    uas

The refresher refreshes at half the interval (§10); the other side, having heard nothing by
the expiry less min(32 s, a third of the interval), ends the session with BYE. Neither value
may be below 90 s (§4, §5); an interval below the UAS's minimum from a UAC that supports the
extension is refused 422 with the UAS's Min-SE (§9), and raised instead when the UAC does not
(errata 1687: a 422 would only fail the call).

A B2BUA runs this on each leg on its own: on the caller's leg as the UAS of its INVITE, on a
callee's leg as the UAC. The gateway refreshes only with UPDATE without a body (RFC 3311),
which changes no media: it takes the refresher's part only on a leg whose peer allows UPDATE,
and otherwise leaves that leg without a timer rather than refresh with a re-INVITE whose answer
could re-key the media.
"""

from __future__ import annotations

import math

import attrs

from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.message import Headers

MIN_INTERVAL = 90  # RFC 4028 §4, §5: neither Session-Expires nor Min-SE below 90 s
MAX_INTERVAL = 86_400 * 7  # a week: anything longer is no timer at all, and bounds the arithmetic
UAC = "uac"
UAS = "uas"


@attrs.frozen
class SessionExpires:
    """A Session-Expires value: the interval and, when stated, who refreshes (§4)."""

    seconds: int
    refresher: str | None = None

    def __str__(self) -> str:
        return f"{self.seconds};refresher={self.refresher}" if self.refresher else str(self.seconds)


def parse_session_expires(value: str) -> SessionExpires:
    """``delta-seconds *(;se-params)`` (§4; compact form x). Unknown parameters are ignored; a
    refresher other than uac/uas, or a value that is not delta-seconds, is a 400."""
    delta, *params = (part.strip() for part in value.split(";"))
    seconds = _delta_seconds(delta, "Session-Expires")
    refresher = None
    for param in params:
        name, _, param_value = param.partition("=")
        if name.strip().lower() != "refresher":
            continue
        refresher = param_value.strip().lower()
        if refresher not in (UAC, UAS):
            raise RemoteSipError(f"Session-Expires refresher {param_value.strip()!r}", status=400)
    if seconds < 1:
        raise RemoteSipError("Session-Expires of 0", status=400)
    return SessionExpires(seconds, refresher)


def parse_min_se(value: str) -> int:
    """``Min-SE: delta-seconds *(;generic-param)`` (§5)."""
    return _delta_seconds(value.split(";")[0].strip(), "Min-SE")


def _delta_seconds(text: str, header: str) -> int:
    # RFC 3261 §25.1 delta-seconds is 1*DIGIT; more than 10 digits is no sensible interval.
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise RemoteSipError(f"{header} is not a number of seconds", status=400)
    return min(int(text), MAX_INTERVAL)


def supports_timer(headers: Headers) -> bool:
    """Whether the sender says it supports session timers (Supported or Require: timer)."""
    return headers.lists_option_tag("timer")


def allows_update(headers: Headers) -> bool:
    """Whether the sender's Allow lists UPDATE (RFC 3311): our refresh needs it."""
    return any(
        method.strip().upper() == "UPDATE"
        for value in headers.get_all("Allow")
        for method in value.split(",")
    )


# -- the UAS: answering an INVITE, re-INVITE or UPDATE (§9) -------------------------------------


@attrs.frozen
class IntervalTooSmall:
    """Refuse the request 422 Session Interval Too Small with ``Min-SE: min_se`` (§9)."""

    min_se: int


@attrs.frozen
class UasAnswer:
    """What our 2xx says: ``expires`` (None: no session timer on this dialog) and whether it
    carries Require: timer (§9: a UAC that supports the extension must process the answer)."""

    expires: SessionExpires | None
    require: bool

    def headers(self) -> list[tuple[str, str]]:
        if self.expires is None:
            return []
        fields = [("Session-Expires", str(self.expires))]
        if self.require:
            fields.append(("Require", "timer"))
        return fields

    @property
    def we_refresh(self) -> bool:
        return self.expires is not None and self.expires.refresher == UAS


def answer_as_uas(
    headers: Headers, *, wanted: int, min_se: int, can_refresh: bool
) -> UasAnswer | IntervalTooSmall:
    """The session timer of our 2xx to a request with ``headers``. ``wanted``: the interval we
    would ask for (0: we ask for none and only honour the requester's); ``min_se``: the least
    we accept; ``can_refresh``: whether we may be the refresher (the peer allows UPDATE).
    Raises RemoteSipError (400) for an unreadable Session-Expires or Min-SE."""
    supported = supports_timer(headers)
    asked_value = headers.get("Session-Expires")  # or its compact form, x
    asked = parse_session_expires(asked_value) if asked_value is not None else None
    floor_value = headers.get("Min-SE")
    floor = max(parse_min_se(floor_value) if floor_value is not None else 0, MIN_INTERVAL)
    if asked is None:
        if not wanted:
            return UasAnswer(None, require=False)
        seconds = max(wanted, floor, min_se)
    elif asked.seconds < min_se and supported:
        return IntervalTooSmall(max(min_se, floor))
    else:
        # §9: the UAS may lower the interval, not below the request's Min-SE; one below ours
        # from a UAC that cannot take a 422 is raised to ours (errata 1687).
        seconds = max(min(asked.seconds, wanted or asked.seconds), floor, min_se)
    if not supported:
        refresher = UAS
    elif asked is not None and asked.refresher is not None:
        refresher = asked.refresher
    else:
        refresher = UAC  # the requester refreshes; we only watch
    if refresher == UAS and not can_refresh:
        return UasAnswer(None, require=False)
    return UasAnswer(SessionExpires(seconds, refresher), require=supported)


# -- the UAC: our INVITE, re-INVITE or UPDATE and its 2xx (§7) ----------------------------------


def request_headers(seconds: int, *, refresher: str, min_se: int) -> list[tuple[str, str]]:
    """What our refresh request (or INVITE) carries to ask for ``seconds`` (§7.1, §7.4)."""
    return [
        ("Session-Expires", str(SessionExpires(seconds, refresher))),
        ("Min-SE", str(min_se)),
    ]


def expires_in_2xx(headers: Headers) -> SessionExpires | None:
    """The session timer a 2xx to our request sets: its Session-Expires, None for none (§7.2:
    no session expiration). A 2xx cannot be refused, so an unreadable value counts as none, and
    a 2xx without a refresher parameter (§7.2 says the UAC then refreshes) as ``uac``."""
    value = headers.get("Session-Expires")
    if value is None:
        return None
    try:
        expires = parse_session_expires(value)
    except RemoteSipError:
        return None
    return expires if expires.refresher else SessionExpires(expires.seconds, UAC)


def min_se_of_422(headers: Headers) -> int | None:
    """The Min-SE of a 422 to our request, the least interval to ask again with (§7.3)."""
    value = headers.get("Min-SE")
    try:
        return max(parse_min_se(value), MIN_INTERVAL) if value is not None else None
    except RemoteSipError:
        return None


# -- one leg's timer ------------------------------------------------------------------------------


@attrs.define
class LegTimer:
    """A leg's running session timer from the last refresh at ``refreshed_at``: when we must
    refresh (``we_refresh``) or when, without a refresh from the peer, we give the session up."""

    seconds: int
    we_refresh: bool
    refreshed_at: float
    refreshing: bool = False  # our UPDATE is out and not answered yet
    asked: int = 0  # a longer interval a 422 to our refresh asked for (§7.3)
    # When we refresh next (§10: at half the interval; after a failed refresh, a retry).
    refresh_at: float = attrs.field()

    @refresh_at.default
    def _half_way(self) -> float:
        return self.refreshed_at + self.seconds / 2

    @property
    def expires_at(self) -> float:
        return self.refreshed_at + self.seconds

    @property
    def due(self) -> float:
        """When this leg's timer next needs the call's attention."""
        if not self.we_refresh:
            # §10: BYE before the expiry by the smaller of 32 s and a third of the interval.
            return self.expires_at - min(32.0, self.seconds / 3)
        if self.refreshing:
            return math.inf  # the UPDATE's answer (or its timeout, a 408) decides
        return min(self.refresh_at, self.expires_at)

    def refresh_failed(self, now: float) -> None:
        """Our refresh could not be sent (the device's connection is gone, say): try again
        halfway to the expiry, while there is time for it."""
        self.refreshing = False
        remaining = self.expires_at - now
        self.refresh_at = now + remaining / 2 if remaining > 8 else self.expires_at


def leg_timer(expires: SessionExpires | None, *, we_are_uac: bool, now: float) -> LegTimer | None:
    """The timer a successful refresh (or the first 2xx) leaves on a leg: who refreshes follows
    from the refresher and our role in that transaction."""
    if expires is None or expires.refresher is None:
        return None
    we_refresh = (expires.refresher == UAC) == we_are_uac
    return LegTimer(expires.seconds, we_refresh, now)
