"""PSAP callbacks (RFC 7090): the emergency service calling back a caller whose call dropped.

A call taker whose emergency call was cut off calls the caller back on the number the call
presented. Treated as an ordinary call, that callback could meet a full gateway, a draining node,
an account or trunk at its ``max_calls``, or a caller-identity check that refuses unsigned calls.
RFC 7090 marks it with ``Priority: psap-callback`` so that such policies let it through. Its
security considerations warn that the marking alone proves nothing (anyone can write a header):
a provider gives the treatment only to a marked call that comes from where callbacks come from
and only for a while after an emergency call was made (the "reasonable time" of RFC 6881's
callback guidance), removes the marking otherwise, and treats the call as an ordinary one.

Here that means all three: the INVITE comes from a configured trunk (our trust domain, as for
P-Asserted-Identity), carries ``Priority: psap-callback``, and calls a number that one of our
accounts presented on an emergency call (``[numbering] emergency_numbers``) through a trunk
within the last ``[gateway] psap_callback_window`` seconds. Such a call is served like the
emergency call it follows (past the call limits, the drain and overload control) and reaches
the phone with the marking, so that the phone can skip do-not-disturb. A marked INVITE that
fails a condition is an ordinary call, and its marking goes no further (each leg's INVITE is
the gateway's own: nothing is copied from the caller's but what the B2BUA chooses).

The numbers are kept per node, in memory: a callback that reaches another node of a cluster,
or this node after a restart, is an ordinary call.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

PRIORITY_VALUE = "psap-callback"  # RFC 7090's value of the Priority header (RFC 3261 §20.26)
MAX_NUMBERS = 10_000
"""Numbers remembered at once. Emergency calls are rare; past this, the oldest are dropped
first (a flood of calls to 112 cannot grow memory)."""


def marked_as_callback(priority: str | None) -> bool:
    """Whether a Priority header value is ``psap-callback`` (a token: case-insensitive)."""
    return priority is not None and priority.strip().lower() == PRIORITY_VALUE


class PsapCallbacks:
    """The numbers our emergency calls presented, each until ``window`` seconds after the call
    (``0``: none kept, no call is a callback)."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._until: dict[str, float] = {}

    def emergency_call_presented(self, number: str, now: float) -> None:
        """An emergency call left through a trunk presenting ``number`` (as E.164 where the
        numbering plan reads it): callbacks to it qualify until ``now + window``."""
        if self.window <= 0 or not number:
            return
        self._until.pop(number, None)  # re-inserted last: the dict stays ordered by expiry
        self._until[number] = now + self.window
        while len(self._until) > MAX_NUMBERS:
            del self._until[next(iter(self._until))]

    def called_back(self, number: str, now: float) -> bool:
        """Whether ``number`` presented an emergency call less than ``window`` seconds ago."""
        until = self._until.get(number)
        if until is None:
            return False
        if now >= until:
            del self._until[number]
            return False
        return True

    def __len__(self) -> int:
        return len(self._until)
