"""SIP events (RFC 6665) for the relayed message-waiting subscriptions: the header parsers and
one subscription's state table.

Theory of operation. The gateway relays a phone's ``message-summary`` subscription (RFC 3842)
to the voicemail trunk as a B2BUA (gateway/core/calls/subscriptions.py): it is the notifier
towards the phone and the subscriber towards the trunk, and keeps one :class:`SubscriptionState`
per relayed subscription, as each side's RFC 6665 state machine would:

* ``pending`` — our SUBSCRIBE is out to the trunk, no 2xx and no NOTIFY yet (§4.1.2.1). A 2xx
  or a NOTIFY (which may overtake the 2xx, §4.1.2.4) makes it ``active``; a final failure
  ends it.
* ``active`` — the subscription exists at both sides until ``expires_at``. A 2xx to a
  refresh moves ``expires_at`` (§4.1.2.2); a NOTIFY with ``Subscription-State: active`` or
  ``pending`` and an ``expires`` parameter does too, never past what was granted (§4.1.3);
  an unsubscribe (``Expires: 0``) leaves it waiting for the final NOTIFY (§4.1.2.3) for at
  most :data:`FINAL_NOTIFY_WAIT`.
* ``terminated`` — absorbing: a NOTIFY with ``Subscription-State: terminated`` (§4.1.3), no
  refresh by ``expires_at`` (§4.1.2.2, §4.2.2), a 481 or a timeout of a request in either
  dialog (§4.1.2.2, §4.2.2: the dialog is gone), the gateway stopping.

Anything not in :data:`TRANSITIONS` is a protocol error: the subscription ends. Only the
``message-summary`` package is relayed; ``dialog`` (RFC 4235) the gateway notifies itself, with
the same table (its ``ACCEPTED`` is our own 2xx), and so ``presence`` (RFC 3856) when the
operator turns the presence service on (``[presence] allow``); any other event package gets 489
Bad Event with ``Allow-Events: message-summary, dialog`` (``, presence`` with the service on)
(§4.2.2.2 ... §7.2).

Sans-IO: strings and ``now`` in, states out. Header values come from the network: the parsers
are named ``*_untrusted``, bounded, and raise :class:`RemoteSipError` 400 with a reason.
"""

from __future__ import annotations

import enum
import re

import attrs

from gateway.core.sip.errors import RemoteSipError

MESSAGE_SUMMARY = "message-summary"
"""The event package relayed to the voicemail trunk (RFC 3842 §3)."""
DIALOG = "dialog"
"""The event package the gateway notifies itself for its accounts' calls (RFC 4235 §3,
gateway/core/calls/dialog_events.py)."""
PRESENCE = "presence"
"""The event package the gateway notifies itself for its accounts' presence when ``[presence]
allow`` is not ``"none"`` (RFC 3856 §6, gateway/core/sip/presence.py)."""
ALLOW_EVENTS = f"{MESSAGE_SUMMARY}, {DIALOG}"
"""What ``Allow-Events`` lists (RFC 6665 §8.2.2): the packages a SUBSCRIBE may name."""
ALLOW_EVENTS_WITH_PRESENCE = f"{ALLOW_EVENTS}, {PRESENCE}"
"""``Allow-Events`` while the presence service is on."""

MIN_EXPIRES = 60
"""The shortest subscription accepted: a shorter Expires (other than 0) gets 423 Interval Too
Brief with this as Min-Expires (RFC 6665 §4.2.1.1)."""
MAX_EXPIRES = 3600
"""The longest subscription granted: a longer Expires is lowered to this (RFC 6665 §4.2.1.1
lets the notifier shorten it; it says so in the 2xx's Expires)."""
DEFAULT_EXPIRES = 3600
"""Expires of a SUBSCRIBE without one: the package's default (RFC 6665 §4.1.2.1, §7.2;
RFC 3842 §4.3 suggests an hour)."""
FINAL_NOTIFY_WAIT = 32.0
"""After an unsubscribe (or a fetch, Expires: 0), how long the final NOTIFY is waited for
(64*T1: the notifier's NOTIFY transaction would have timed out by then)."""

_MAX_HEADER = 512
_TOKEN = re.compile(r"[A-Za-z0-9.!%*_+`'~-]+")
_DIGITS = re.compile(r"[0-9]{1,10}")
_MAX_DELTA = 2**32 - 1  # RFC 3261 §20.19: delta-seconds fit 32 bits


@attrs.frozen
class EventHeader:
    """An ``Event`` value (RFC 6665 §8.2.1): the package (lower case, templates included)
    and its ``id`` parameter."""

    package: str
    id: str | None = None


@attrs.frozen
class SubscriptionStateHeader:
    """A ``Subscription-State`` value (RFC 6665 §8.2.3)."""

    state: str
    """``active``, ``pending``, ``terminated`` or an extension value (lower case)."""
    expires: int | None = None
    reason: str | None = None
    retry_after: int | None = None


def _params(text: str, what: str) -> tuple[str, dict[str, str]]:
    """``value;name=v;flag`` as the value and its parameters (names lower case); ``what``
    names the header in the reason of a 400."""
    if len(text) > _MAX_HEADER:
        raise RemoteSipError(f"Bad Request ({what} header too long)", status=400)
    first, *rest = text.split(";")
    params: dict[str, str] = {}
    for item in rest[:16]:
        name, _, value = item.partition("=")
        name = name.strip().lower()
        if not _TOKEN.fullmatch(name):
            raise RemoteSipError(f"Bad Request (malformed {what} parameter)", status=400)
        params[name] = value.strip().strip('"')
    return first.strip(), params


def parse_event_untrusted(value: str | None) -> EventHeader:
    """The ``Event`` header of a SUBSCRIBE or NOTIFY; 400 when missing or malformed
    (RFC 6665 §8.2.1: ``event-type = event-package *( "." event-template )``)."""
    if value is None:
        raise RemoteSipError("Bad Request (missing Event header)", status=400)
    package, params = _params(value, "Event")
    if not _TOKEN.fullmatch(package):
        raise RemoteSipError("Bad Request (malformed Event header)", status=400)
    return EventHeader(package.lower(), params.get("id") or None)


def parse_subscription_state_untrusted(value: str | None) -> SubscriptionStateHeader:
    """The ``Subscription-State`` header of a NOTIFY; 400 when missing or malformed (RFC 6665
    §4.1.3: a NOTIFY must carry one)."""
    if value is None:
        raise RemoteSipError("Bad Request (missing Subscription-State header)", status=400)
    state, params = _params(value, "Subscription-State")
    if not _TOKEN.fullmatch(state):
        raise RemoteSipError("Bad Request (malformed Subscription-State header)", status=400)
    reason = params.get("reason")
    if reason is not None and not _TOKEN.fullmatch(reason):
        raise RemoteSipError("Bad Request (malformed Subscription-State reason)", status=400)
    return SubscriptionStateHeader(
        state.lower(),
        _delta(params.get("expires"), "Subscription-State expires"),
        reason.lower() if reason else None,
        _delta(params.get("retry-after"), "Subscription-State retry-after"),
    )


def parse_expires_untrusted(value: str | None, *, default: int = DEFAULT_EXPIRES) -> int:
    """The ``Expires`` header (RFC 3261 §20.19: delta-seconds); ``default`` when absent, 400
    when not a number."""
    if value is None:
        return default
    found = _delta(value.strip(), "Expires")
    assert found is not None
    return found


def _delta(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    if not _DIGITS.fullmatch(text):
        raise RemoteSipError(f"Bad Request (malformed {what})", status=400)
    return min(int(text), _MAX_DELTA)


@attrs.frozen
class IntervalTooBrief:
    """Answer 423 with ``Min-Expires: min_expires`` (RFC 6665 §4.2.1.1)."""

    min_expires: int = MIN_EXPIRES


def bounded_expires(requested: int) -> int | IntervalTooBrief:
    """The Expires to ask the trunk for: 0 as it is (an unsubscribe or a fetch, §4.1.2.3,
    §4.4.3), below :data:`MIN_EXPIRES` refused, above :data:`MAX_EXPIRES` lowered."""
    if requested == 0:
        return 0
    if requested < MIN_EXPIRES:
        return IntervalTooBrief()
    return min(requested, MAX_EXPIRES)


def terminated_value(reason: str, retry_after: int | None = None) -> str:
    """A ``Subscription-State: terminated`` value we send ourselves (RFC 6665 §4.1.3)."""
    value = f"terminated;reason={reason}"
    return value if retry_after is None else f"{value};retry-after={retry_after}"


STOPPING = terminated_value("deactivated")
"""The final Subscription-State of the subscriptions a gateway ends when it drains or stops.
RFC 6665 §4.2.2: ``deactivated`` is for "migration of subscriptions between nodes": the
subscriber SHOULD subscribe again at once, which reaches another node (a load balancer, DNS
SRV: a draining node answers new SUBSCRIBEs 503) or this one once restarted (after its own
retry schedule). ``probation`` would keep it away from a working node for its retry-after."""


# -- one relayed subscription ------------------------------------------------------------------


class State(enum.Enum):
    PENDING = "pending"
    ACTIVE = "active"
    TERMINATED = "terminated"


class Input(enum.Enum):
    ACCEPTED = "2xx to our SUBSCRIBE"
    REFUSED = "final failure to the initial SUBSCRIBE"
    REFRESH_REFUSED = "final failure (not 481/408) to a refresh"
    NOTIFY_ACTIVE = "NOTIFY active or pending"
    NOTIFY_TERMINATED = "NOTIFY terminated"
    UNSUBSCRIBED = "2xx to an unsubscribe"
    DIALOG_GONE = "481 or timeout in either dialog"
    EXPIRED = "expires_at passed"
    STOPPED = "the gateway stops"


TRANSITIONS: dict[tuple[State, Input], State] = {
    (State.PENDING, Input.ACCEPTED): State.ACTIVE,
    (State.PENDING, Input.NOTIFY_ACTIVE): State.ACTIVE,  # §4.1.2.4: NOTIFY before the 2xx
    (State.PENDING, Input.REFUSED): State.TERMINATED,
    (State.ACTIVE, Input.ACCEPTED): State.ACTIVE,  # a refresh
    (State.ACTIVE, Input.REFRESH_REFUSED): State.ACTIVE,  # §4.1.2.2: lasts until it expires
    (State.ACTIVE, Input.NOTIFY_ACTIVE): State.ACTIVE,
    (State.ACTIVE, Input.UNSUBSCRIBED): State.ACTIVE,  # until the final NOTIFY
    (State.ACTIVE, Input.NOTIFY_TERMINATED): State.TERMINATED,
    (State.PENDING, Input.NOTIFY_TERMINATED): State.TERMINATED,  # refused after all, or a fetch
}
"""(state, input) -> next state; anything else ends the subscription. DIALOG_GONE, EXPIRED
and STOPPED end it from every state."""


@attrs.define
class SubscriptionState:
    """The state of one relayed subscription and when it runs out (see the module docstring).
    ``expires_at`` is in the caller's clock (trio's); :meth:`started` makes one."""

    state: State
    expires_at: float
    granted: bool = False
    """Whether a 2xx has said how long the subscription lasts."""

    @classmethod
    def started(cls, *, now: float) -> SubscriptionState:
        """Our SUBSCRIBE is being sent: pending until its final response (which comes by
        Timer F, 64*T1, at the latest)."""
        return cls(State.PENDING, now + 2 * FINAL_NOTIFY_WAIT)

    @property
    def ended(self) -> bool:
        return self.state is State.TERMINATED

    def handle(self, event: Input, *, now: float, expires: int | None = None) -> State:
        """Apply ``event`` at ``now``; ``expires`` (s) is what a 2xx granted or what a
        NOTIFY's Subscription-State says is left."""
        if self.state is State.TERMINATED:
            return self.state
        self.state = TRANSITIONS.get((self.state, event), State.TERMINATED)
        if self.state is State.TERMINATED:
            return self.state
        if event is Input.ACCEPTED and expires is not None:
            # §4.1.2.1: the 2xx's Expires is the duration granted (0: a fetch, §4.4.3).
            self.expires_at = now + (expires if expires > 0 else FINAL_NOTIFY_WAIT)
            self.granted = True
        elif event is Input.NOTIFY_ACTIVE and expires is not None:
            # §4.1.3: the notifier may shorten it, never lengthen what the 2xx granted.
            until = now + expires
            self.expires_at = min(self.expires_at, until) if self.granted else until
        elif event is Input.UNSUBSCRIBED:
            self.expires_at = min(self.expires_at, now + FINAL_NOTIFY_WAIT)
        return self.state

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is due; None once terminated."""
        return None if self.ended else self.expires_at

    def handle_timer(self, *, now: float) -> bool:
        """Expire the subscription when ``expires_at`` passed; True when it ended now."""
        if self.ended or now < self.expires_at:
            return False
        self.handle(Input.EXPIRED, now=now)
        return True
