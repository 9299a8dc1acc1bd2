"""The events a call's task receives, and what its handlers pass around.

:meth:`Call.post <gateway.core.calls.base.CallBase.post>` feeds them into the call's one bounded
event queue (call.py's theory of operation): requests the endpoint matched to the call's
dialogs, a CANCEL of its INVITE or of a re-INVITE it relays (RFC 3261 §9.2), the responses to the
requests it sent (told apart by their tag, an :class:`InDialogRequest` for those sent in a
dialog), and what other tasks tell it: an RFC 4733 digit heard, a DTLS-SRTP key exchange that
failed, the gateway ending the call, A's ACK carrying an answer (RFC 3261 §13.2.1), another call's
transfer taking over its ringing target or one of its legs (RFC 3891), a phone picking it up.
Frozen values (STYLE.md habit 3), except the two that carry an ``Event`` to fire.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from gateway.core.calls.leg import BLeg, Leg, Side
from gateway.core.interfaces import Caller
from gateway.core.media.dtmf import Digit
from gateway.core.sdp.model import SessionDescription
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.session_timer import UasAnswer
from gateway.core.sip.transaction import ServerTransaction
from gateway.core.transport.flows import Flow

if TYPE_CHECKING:
    from gateway.core.calls.call import Call
    from gateway.core.endpoint import ClientRequest
    from gateway.core.media.session import DtmfPlan


@attrs.frozen
class RequestEvent:
    side: Side
    transaction: ServerTransaction
    request: Request
    flow: Flow


@attrs.frozen
class CancelEvent:
    """A CANCEL of ``transaction``: the call's INVITE, or a re-INVITE it is relaying."""

    request: Request
    transaction: ServerTransaction | None = None


@attrs.frozen
class ResponseEvent:
    """A response to a request this call sent; ``tag`` says which request it answers."""

    tag: object
    response: Response


@attrs.define(eq=False)
class InDialogRequest:
    """A request this call sent in an established dialog (the tag its responses come back with):
    a relayed request (``relayed``: the server transaction and request it answers), our
    re-INVITE or our BYE. ``sent`` is what went out, for a retry with a trunk's credentials (once:
    ``challenged``)."""

    # "relay" | "reinvite" | "bye" | "refresh" (our UPDATE, RFC 4028) | "transfer" (our
    # re-INVITE to a transferee with its target's offer) | "notify" (a transfer's progress) |
    # "join" (our re-INVITE without SDP to a trunk leg taken over by an attended transfer) |
    # "join-offer" (our re-INVITE with our offer to that leg, when it refused the one without) |
    # "join-resume" (then our re-INVITE taking the held transferee off hold) |
    # "location" (our UPDATE with the caller's new location, RFC 6442, answering ``relayed``) |
    # "fork-rekey" (our re-INVITE with new SDES keys to a forked callee, fork_rekey.py) |
    # "record-indication" (our re-INVITE telling a recording-aware party whether the call is
    # recorded, recording_indication.py)
    purpose: str
    side: Side  # the leg it was sent on
    relayed: tuple[ServerTransaction, Request] | None = None
    sent: Request | None = None
    challenged: bool = False
    client: ClientRequest | None = None  # the client transaction of ``sent``


@attrs.define(eq=False)
class LocatedRequest(InDialogRequest):
    """A request of ours that carried the caller's location (RFC 6442) to ``location_to``: a
    Geolocation-Error in its answer is the caller's to know (§4.3), and the call record's. A
    subclass, so that the requests of calls without location carry nothing more."""

    location_to: Leg | None = None
    # A "location" UPDATE in a confirmed dialog: the session timer our 2xx to the caller's
    # UPDATE states (RFC 4028 §10); None in an early dialog, which has no session yet.
    answer_timer: UasAnswer | None = None
    # A "location" UPDATE in the confirmed dialog of a callee that answered before the call
    # is up (our 2xx to the caller waits for its PRACK or its ACK): a 2xx refreshes that leg.
    refreshes: bool = False
    # A "location" UPDATE's bounded wait (:meth:`Call._bound_location_wait`): the scope of its
    # timer task (cancelled by the answer), and the 408 of ours that task posts, as the
    # response event that stops the caller's wait (told from a trunk's own 408 by identity).
    wait: float = 0.0
    wait_scope: trio.CancelScope | None = None
    overdue: Response | None = None


@attrs.frozen
class DtmfDigitEvent:
    """Leg ``side`` sent a digit as RFC 4733 events (read in the relay's loop) while the call
    interworks DTMF: for the other leg, as SIP INFO (docs/architecture.md "DTMF
    interworking"). ``plan``: the interworking it was heard under (the call's at the time),
    whose INFO leg it goes to even if a change ended that plan meanwhile (an event the
    change cut is reported then, RFC 4733 §2.5.2). ``party``: that INFO leg's party when the
    digit was heard; a party that took its place since (a transfer, another fork's answer)
    never gets it."""

    side: str
    digit: Digit
    plan: DtmfPlan | None = None
    party: Leg | None = None


@attrs.frozen
class KeyFailureEvent:
    """A key exchange on the media path (DTLS-SRTP) failed on leg ``side`` (from the handshake
    task): the call ends with ``reason`` (issue #6: no media, a stated reason)."""

    side: str
    reason: str


@attrs.frozen
class AckEvent:
    """A's ACK of our 2xx when that 2xx carried the offer (a late offer): the ACK brings the
    answer (RFC 3261 §13.2.1), which the call task must relay to B in B's ACK."""

    ack: Request


@attrs.frozen
class EndCallEvent:
    """The gateway ends the call (its media worker process exited, the gateway's drain ran
    out): with ``reason`` (BYE with a Reason once answered, 503 before)."""

    reason: str


@attrs.frozen
class ReplacedEvent:
    """Another call's transfer took over this call's ringing target (a semi-attended transfer:
    the transferor transferred while its consultation call still rang): stop ringing it
    ("Call completed elsewhere") and answer our caller, the transferor, 487."""


@attrs.define(eq=False)
class HandOverEvent:
    """Another call's attended transfer takes over this call's leg on side ``give`` (a
    trunk's: carriers take no Replaces): this call hands it to ``taker`` for its ``side`` and
    ends, BYE to its other leg (the transferor) only. ``leg`` is set and ``done`` fired once
    handed over; ``done`` without a leg: not now (the call is not simply established).
    ``sent``: the SDP (plain) this call last sent in that leg's dialog, whose o= line the
    taker's SDP there continues (RFC 3264 §8)."""

    taker: Call
    side: Side
    give: Side
    done: trio.Event = attrs.Factory(trio.Event)
    leg: BLeg | None = None
    sent: SessionDescription | None = None


@attrs.define(eq=False)
class PickUpEvent:
    """An account's phone picks this ringing call up (pickup.py): its INVITE with a
    ``Replaces`` naming our early dialog with ``leg``'s ringing phone. The call answers the
    INVITE (200, or a refusal when it is no longer ringing) and sets ``done``."""

    transaction: ServerTransaction
    request: Request
    flow: Flow
    caller: Caller
    leg: BLeg
    dialled: bool = False  # dialled as a feature code ([feature_codes]), not by Replaces
    done: trio.Event = attrs.Factory(trio.Event)


@attrs.frozen
class RecordingIndicationEvent:
    """A recording of the call changed its state (started, paused, resumed, ended): the
    recording-aware parties are to be told (recording_indication.py). Carries nothing: the call
    reads the states as they are when it handles it, so a storm of changes is one event."""


CallEventInput = (
    RequestEvent
    | CancelEvent
    | ResponseEvent
    | KeyFailureEvent
    | DtmfDigitEvent
    | EndCallEvent
    | AckEvent
    | ReplacedEvent
    | HandOverEvent
    | PickUpEvent
    | RecordingIndicationEvent
)


class CallEnded(Exception):
    """Internal: the call is over (reason for the logs and the call record)."""


@attrs.frozen
class AnswerFailure:
    """Why applying SDP from a leg's 2xx (or from the ACK answering ours) failed, and what the
    call sends for it (:meth:`Call._answer_failed`): ``status`` and ``phrase`` to a request
    still open, ``warning`` its Warning text, ``reason`` for the BYEs, the log and the record."""

    status: int
    phrase: str
    warning: str
    reason: str

    def response_to(self, request: Request) -> Response:
        """The final response to ``request`` saying this failure (its Warning, RFC 3261
        §20.43)."""
        return make_response(
            request, self.status, self.phrase, extra=[("Warning", warning_header(self.warning))]
        )


def warning_header(text: str | None) -> str:
    # RFC 3261 §20.43: 399 miscellaneous warning, agent = us.
    return f'399 voipgw "{quoted(text or "")}"'


def quoted(text: str) -> str:
    """``text`` made fit for a quoted-string of ours (a Warning's text, a Reason's text=):
    RFC 3261 §25.1's qdtext has no control characters, backslash or DQUOTE unescaped, so a
    text carrying a peer's or a transport's words (a NUL, an ESC) cannot make our header one
    the next hop refuses; at most 300 characters."""
    if (
        text.isprintable()
        and '"' not in text
        and "\\" not in text
        and "  " not in text
        and text[:1] != " "
        and text[-1:] != " "
        and len(text) <= 300
    ):
        # Already fit, as our own reasons are ("BYE from A leg", the end reason of every
        # call): returned as it is, the character-by-character pass below costing ~18,000
        # instructions for those 14 characters. A printable str has no control character
        # and no whitespace but the space (str.isprintable: Unicode's Cc, Zs but U+0020, Zl,
        # Zp ... are not printable), so the pass below would return it unchanged.
        return text
    cleaned = " ".join(
        "".join(" " if ord(char) < 0x20 or ord(char) == 0x7F else char for char in text)
        .replace("\\", "")
        .replace('"', "'")
        .split()
    )
    return cleaned if len(cleaned) <= 300 else cleaned[:297] + "..."
