"""What a failure response to a request inside a dialog ends (RFC 5057 §5.1, §5.2). Sans-IO.

Theory of operation. A dialog carries one or more usages: the invite usage (the session, with
the requests that travel in it: re-INVITE, UPDATE, INFO, PRACK, BYE, in-dialog MESSAGE and
OPTIONS) and a subscription usage per SUBSCRIBE or REFER (its NOTIFYs). RFC 3261 §12.2.1.2 had
a 481 or 408 end the whole dialog; RFC 5057 §5.1 refines that, response by response, into
three outcomes, kept here as one table:

- ``TRANSACTION``: the request failed, nothing else (400, 401/407, 403, 406, 412-415, 420-429,
  486-488, 491, 493, 494, 5xx but 502, 3xx, 6xx but 604). Re-INVITE glare (491) and a refused
  offer (488, 500) are here: the session goes on as it was (§14.1).
- ``USAGE``: the usage the request belongs to is over, other usages of the dialog are not:
  481 (the peer lost it), 408 and a transaction timeout (§5.2: "the same effect as a real
  transaction timeout"), 480, and 405 or 489 to the request that holds a usage (INVITE,
  SUBSCRIBE, NOTIFY; 489 to SUBSCRIBE and NOTIFY only).
- ``DIALOG``: the dialog and every usage of it are over, its remote target or route set being
  broken: 404, 410, 416, 482, 484 (not to a REFER: a PBX answers 484 to a Refer-To it cannot
  dial), 485, 502, 604.

483 is left a ``TRANSACTION`` failure: §5.1 has the agent retry with a larger Max-Forwards
before it ends anything (and the dialog only if it does not; the strict reading below, whose
gateway retries nothing, ends it).

Which usage a request belongs to (:func:`usage_of`): NOTIFY, SUBSCRIBE and REFER a
subscription's (RFC 6665, RFC 3515 §2.4.4), everything else the invite usage. A B2BUA's call is
the invite usage of each leg's dialog, so :func:`ends_session` is what ends a call; and
:func:`dialog_lost` tells whether the peer that answered has no dialog left to send a BYE in
(481, or the whole dialog broken), the BYE then going only to the call's other side.

:func:`ends_session`, what makes the gateway end a call, is narrower than the table: only 481
and 408 (or no answer) to a request of the invite usage, RFC 3261 §12.2.1.2's pair (the peer
has no dialog, or is not there; RFC 4028 §10 says the same of a session refresh). RFC 3261
§14.1, a standard where RFC 5057 is informational, keeps the session as it was after any other
non-2xx to a re-INVITE, and deployed agents give the table's other statuses for reasons of their
own that say nothing about the session: Asterisk's res_pjsip_messaging answers an in-dialog
MESSAGE 404 whenever its session has no channel; an INFO of a package a peer does not take
should get 469 or 415 (RFC 6086 §4.2.2), but a 404 or 480 from an older stack means no more than
that; FreeSWITCH ends a call after a failed re-INVITE on 408 and 481 only (a relayed 500 once
tore down established calls). Those answers pass on to the requester, whose dialog it is to end
if it so reads them: a gateway ending the call for them would cut calls that work, for no gain.
The table stays for :func:`dialog_lost` (whether the answering peer still needs a BYE) and for
anything that must know what a peer has given up.

``strict`` (``[sip] in_dialog_failures = "strict"``) is the operator's choice of the table over
that leniency, for networks whose agents send its statuses only when they mean them: every
``USAGE`` or ``DIALOG`` outcome of a request of the invite usage ends the call, and so does 483
(§5.1: "if the request isn't retried with an increased Max-Forwards", which the gateway never
does, the dialog is destroyed, as for 482: :func:`dialog_lost` then counts it, and the peer that
answered gets no BYE along a route that ran out of hops).
"""

from __future__ import annotations

import enum


class Effect(enum.Enum):
    """What a final response to a request inside a dialog ends (RFC 5057 §5.1)."""

    TRANSACTION = "transaction"
    USAGE = "usage"
    DIALOG = "dialog"


# RFC 5057 §5.1: the responses that destroy the dialog and all of its usages.
DIALOG_ENDING = frozenset({404, 410, 416, 482, 484, 485, 502, 604})
# ... that end the usage the request belongs to, whatever its method.
USAGE_ENDING = frozenset({408, 480, 481})
# ... that end it only when the request is the one that holds the usage.
USAGE_ENDING_FOR = {
    405: frozenset({"INVITE", "SUBSCRIBE", "NOTIFY"}),
    489: frozenset({"SUBSCRIBE", "NOTIFY"}),
}
SUBSCRIPTION_METHODS = frozenset({"SUBSCRIBE", "NOTIFY", "REFER"})
# RFC 3261 §12.2.1.2: the answers to a request of the session that end it (ends_session).
SESSION_GONE = frozenset({408, 481})


def response_effect(method: str, status: int) -> Effect:
    """What a final ``status`` to an in-dialog ``method`` request ends (the module's table). A
    transaction timeout counts as 408 (RFC 3261 §8.1.3.1, RFC 5057 §5.2)."""
    if status < 400:
        return Effect.TRANSACTION
    if status in DIALOG_ENDING and not (status == 484 and method == "REFER"):
        return Effect.DIALOG
    if status in USAGE_ENDING or method in USAGE_ENDING_FOR.get(status, ()):
        return Effect.USAGE
    return Effect.TRANSACTION


def usage_of(method: str) -> str:
    """The usage an in-dialog request belongs to: "subscription" or "invite"."""
    return "subscription" if method in SUBSCRIPTION_METHODS else "invite"


def ends_session(method: str, status: int, *, strict: bool = False) -> bool:
    """Whether ``status`` to ``method`` makes the gateway end the call, the invite usage: 481 or
    408 (a transaction timeout counts as 408) to a request of that usage (a re-INVITE, UPDATE,
    PRACK, INFO, MESSAGE or OPTIONS; never a NOTIFY or REFER, a subscription's). The module's
    docstring says why the table's other endings do not; ``strict``: they do too (and 483)."""
    if usage_of(method) != "invite":
        return False
    if status in SESSION_GONE:
        return True
    return strict and (status == 483 or response_effect(method, status) is not Effect.TRANSACTION)


def dialog_lost(method: str, status: int, *, strict: bool = False) -> bool:
    """Whether the peer that answered ``status`` holds no dialog a BYE could end: it said so
    (481), or the dialog's target or route is broken (``DIALOG``). A 408, a timeout or a 480
    leave a peer that may still be there: it gets the BYE (RFC 3261 §15). ``strict``: a 483
    too, which ends the call only then (:func:`ends_session`): §5.1 destroys the dialog as for
    482 when the request is not retried with a larger Max-Forwards, and a BYE along the same
    route would run out of hops the same way."""
    if strict and status == 483:
        return True
    return status == 481 or response_effect(method, status) is Effect.DIALOG
