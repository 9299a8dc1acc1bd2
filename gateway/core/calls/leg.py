"""Call legs: one SIP dialog of a B2BUA call, and where its requests go.

A B2BUA call has an A leg (we are the UAS: the caller's INVITE) and one B leg per target we ring
(we are the UAC). Each leg has its own Call-ID, tags and CSeq space; nothing dialog-scoped is
copied between legs (RFC 3261 §12, specs/sip-robustness.md §2). A leg sends its in-dialog requests
over the flow it was set up on, so a phone behind NAT is reached the way it reached us.
"""

from __future__ import annotations

import enum
import math

import attrs

from gateway.core.auth.proxied_source import RelayedHop
from gateway.core.interfaces import CallerAuth, RouteTarget
from gateway.core.media.security import LegSecurity
from gateway.core.sdp.model import SessionDescription
from gateway.core.sip.dialog import Dialog
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Request, Response
from gateway.core.sip.session_timer import LegTimer
from gateway.core.sip.transaction import ServerTransaction, State, Transaction
from gateway.core.transport.flows import Address, Flow


class Side(enum.Enum):
    A = "a"
    B = "b"

    @property
    def other(self) -> Side:
        return _S_B if self is _S_A else _S_A


# Enum members read at run time, as module names: on CPython 3.11 a member read from its
# class goes through EnumType's __getattr__ hook, ~900 instructions (docs/benchmarks.md,
# sessions 44 and 45).
_S_A = Side.A
_S_B = Side.B

_UNANSWERED = frozenset({State.CALLING, State.TRYING, State.PROCEEDING})
"""Transaction states before a final response (RFC 3261 §17)."""

MAX_EARLY_DIALOGS = 32
"""The early dialogs (RFC 3261 §12.1.2, one per To tag of the callee's 1xx) a B leg keeps:
those we PRACKed a reliable 1xx in (RFC 3262 §4), or sent an UPDATE or INFO into. A forking
proxy, or a callee sending 1xx under ever new To tags, must not grow them (nor the RSeqs and
answers kept per tag) for as long as the call rings. Past the bound a reliable 1xx of a new
tag is relayed as an unreliable one and not PRACKed (its UAS gives it up after 64*T1 and
rejects that fork's INVITE, RFC 3262 §3), and no UPDATE or INFO goes into a new one; the
dialogs kept are untouched. A phone whose reliable 1xx carried SDP may send no 2xx before
its PRACK (§3), so a fork past the bound cannot answer: the bound is what a proxy forks to,
Kamailio's limit of branches per transaction (32; 12 by default), not fewer."""


@attrs.define(eq=False)
class Leg:
    """One leg's signalling state."""

    side: Side
    flow: Flow | None
    transport: str
    address: Address
    contact: NameAddr
    dialog: Dialog | None = None
    security: LegSecurity | None = None
    # RFC 4028 on this leg's dialog: the running session timer (None: none), and whether the
    # peer allows UPDATE, the only request we refresh a session with.
    session_timer: LegTimer | None = None
    allows_update: bool = False
    # Who is at the other end: "account" or "trunk" and its name ("" and None: unknown). Whose
    # credentials answer a trunk's challenges, and whether the leg may transfer (REFER).
    peer_kind: str = ""
    peer_name: str | None = None
    # How the party authenticated to us, for a leg whose INVITE it sent (the caller's, a
    # picker's); None on a leg we called: it proved nothing to us (the call record's "auth").
    auth: CallerAuth | None = None
    # Behind listed edge proxies ([gateway] auth_proxies): how its INVITE reached them, the
    # nearest first (the call record's "relayed_by"): its own hop's transport, which ours
    # (kamailio's to us) does not say.
    relayed_by: tuple[RelayedHop, ...] = ()
    # How this party is shown to the others it talks to through us (a number or an account
    # name), and whether it asked for its identity to be withheld (RFC 3323): what a transfer
    # target sees calling when this party is transferred to it.
    shown_as: str = "anonymous"
    private: bool = False
    # RFC 7866 §6.1: the party said ``Supported: record-aware`` (its INVITE, or its 2xx to
    # ours): it is told whether the call is recorded (``a=record``, recording_indication.py).
    record_aware: bool = False
    # RFC 7866 §7.2: its last ``a=recordpref`` (on, off, pause, nopreference), None: none said.
    recordpref: str | None = None
    # RFC 3261 §14.1, RFC 3311 §5.1-5.2: the INVITE and UPDATE transactions of the leg's
    # dialog, ours and its party's, that had no final response when last looked at (those
    # answered since are dropped at the next look, so it holds a few at most).
    exchanges: tuple[Transaction, ...] = ()

    @property
    def established(self) -> bool:
        return self.dialog is not None

    def exchange_started(self, transaction: Transaction) -> None:
        """An INVITE or UPDATE ``transaction`` of the leg's dialog, ours or its party's, began."""
        self.exchanges = (*self.exchanges_in_progress(), transaction)

    def exchanges_in_progress(self) -> tuple[Transaction, ...]:
        """The leg's INVITE and UPDATE transactions still without a final response: while
        there is one, an offer may be in progress on its dialog, whoever made it (a re-INVITE,
        an UPDATE, a session refresh, a late offer, RFC 3261 §14.1, RFC 3311 §5.1)."""
        exchanges = self.exchanges
        if exchanges and any(t.state not in _UNANSWERED for t in exchanges):
            exchanges = self.exchanges = tuple(t for t in exchanges if t.state in _UNANSWERED)
        return exchanges


@attrs.define(eq=False)
class ALeg(Leg):
    """The caller's leg: its INVITE server transaction and the To tag we answer with."""

    invite: Request | None = None
    transaction: ServerTransaction | None = None
    local_tag: str = ""
    answered: bool = False
    # When our 2xx was last (re)sent and the next retransmission interval (RFC 3261 §13.3.1.4).
    pending_2xx: Response | None = None


@attrs.define(eq=False)
class BLeg(Leg):
    """A leg we called: the INVITE we sent, its responses, and whether it must be cancelled."""

    target: RouteTarget | None = None
    invite: Request | None = None
    final: Response | None = None
    provisional_seen: bool = False
    trying_seen: bool = False  # a 100 Trying: CANCEL allowed (RFC 3261 §9.1), not ringing
    # The callee's latest 1xx of the call's ringing (not a transfer's): its To tag is the
    # phone's tag in the early dialog a BLF watcher may pick up (dialog_events.py).
    last_provisional: Response | None = None
    cancel_wanted: bool = False
    cancel_reasons: tuple[str, ...] = ()  # the Reason values its CANCEL carries (RFC 3326)
    cancelled: bool = False
    # Early dialogs (by the callee's To tag) in which we PRACKed a reliable 1xx (RFC 3262 §4),
    # and the RSeq of the last one PRACKed in each: the 2xx confirms that dialog, whose CSeq has
    # moved on by the PRACKs.
    # At most MAX_EARLY_DIALOGS (CallRinging._prack_b, CallLocationUpdates._early_dialog).
    early_dialogs: dict[str, Dialog] = attrs.field(factory=dict)
    last_rseq: dict[str, int] = attrs.field(factory=dict)
    # Whether a 1xx under a To tag past that bound was turned away (said once, at INFO).
    early_dialogs_full: bool = False
    # The SDP answers to our offer that came in a reliable 1xx (RFC 3262 §5: the offer/answer
    # exchange is complete then), by the callee's To tag: a 2xx of that early dialog without
    # SDP confirms it (_b_answered). None until the first one: no work for other calls. Its
    # tags are those of early_dialogs we PRACKed in, so it is bounded with them.
    answers_in_1xx: dict[str, SessionDescription] | None = None
    # The To tags of the dialogs (early or confirmed) whose SDP answers were keyed with the
    # keys our offer handed out in SDP (SDES, MIKEY): a forking proxy gave our one offer, and
    # our key, to each; one that is not the confirmed dialog's means our key reached another
    # phone too (CallForkRekey). None until the first one: no work for other calls.
    sdp_keyed_tags: set[str] | None = None
    ack: Request | None = None  # our ACK for its 2xx, resent for every 2xx retransmission
    credentials_sent: bool = False  # a trunk's 401/407 was answered (once, RFC 3261 §22.2)
    interval_raised: bool = False  # a 422 was answered with a longer interval (once, RFC 4028 §7.3)
    # Our INVITE had no SDP (RFC 3261 §13.2.1): its 2xx offers and our ACK must answer.
    late_offer: bool = False
    # When the leg is given up for want of any response (its trunk's response_timeout; inf:
    # never, or a response came), and the 408 it counts as once it was: the call went on to
    # another trunk, and the leg's real final response, if one comes, is only cleaned up after
    # (a 1xx CANCELled, a 2xx ACKed and BYEd).
    response_deadline: float = math.inf
    given_up: Response | None = None
    # The a=recordpref each early dialog's early answer stated (RFC 7866 §7.2), by the callee's
    # To tag, until the 2xx: a proxy downstream may fork (RFC 3261 §16.7), and the phone that
    # answers has its own preference, not another's (CallRecordingIndication
    # ._note_answer_recordpref). At most MAX_EARLY_DIALOGS tags.
    early_recordprefs: dict[str, str] = attrs.field(factory=dict)
    # The caller's location went in our INVITE (RFC 6442, location.py): a Geolocation-Error
    # in its responses is relayed to the caller (§4.3).
    location_passed: bool = False

    @property
    def finished(self) -> bool:
        """Whether the leg has its outcome: a final response, or given up."""
        return self.final is not None or self.given_up is not None
