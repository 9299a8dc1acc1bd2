"""SIP transactions: the four state machines of RFC 3261 §17 as amended by RFC 6026, and a table
that routes messages to them.

Theory of operation
===================

A transaction is one request and its responses (RFC 3261 §17). Each side of it is a small state
machine; there are four:

- INVITE client (§17.1.1 as amended by RFC 6026): Calling -> Proceeding -> Completed | Accepted.
  A non-2xx final response is ACKed here, by the transaction (§17.1.1.3), and Completed absorbs its
  retransmissions (re-sending the ACK) for Timer D. A 2xx moves to Accepted (RFC 6026), where every
  2xx - retransmissions and other forks' answers - is passed up for the TU to ACK itself
  (§13.2.2.4), until Timer M.
- INVITE server (§17.2.1 as amended by RFC 6026): Proceeding -> Completed -> Confirmed, or
  Proceeding -> Accepted. Completed retransmits a non-2xx final response (Timer G) until the ACK
  (then Confirmed, Timer I) or Timer H. Accepted absorbs INVITE retransmissions while the TU
  retransmits its 2xx (§13.3.1.4), until Timer L; this is RFC 6026's fix for RFC 3261 treating a
  retransmitted INVITE as a new request.
- non-INVITE client (§17.1.2): Trying -> Proceeding -> Completed; Timer E retransmits (doubling up
  to T2), Timer F times out, Timer K absorbs response retransmissions.
- non-INVITE server (§17.2.2): Trying -> Proceeding -> Completed; Completed answers request
  retransmissions with the final response until Timer J.

Every machine is one transition table below, ``(state, input) -> (next state, effects)``
(STYLE.md habit 2; h2's ``_transitions`` shape). Inputs are the events of the RFC figures: a
response or request received, a response the TU passes down, a timer firing, a transport error.
Effects are what the figures write after the slash: send or re-send, pass up, report. A pair that
is not in a table is a protocol error: the machine moves to Terminated and raises
:class:`TransactionStateError`. Every message or error the network can produce is in the tables
for every live state (absorbed when the RFC is silent, e.g. a late 1xx after the final response),
so a protocol error always means the TU misused the transaction.

Timers (RFC 3261 Table 4; L and M from RFC 6026) are deadlines kept per transaction. Each state
lists the timers allowed to run in it; leaving a state cancels the others, entering one arms its
own.
Retransmission timers (A, E, G) run only on unreliable transports; the wait timers D, I, J and K
are zero on reliable transports, which means moving on at once (§17.1.1.2, §17.1.2.2, §17.2.1,
§17.2.2). B, F, H, L and M are 64*T1 everywhere. A client INVITE's Proceeding has no timer of its
own; once the TU sends a CANCEL for it (through the table), a 64*T1 wait bounds it (§9.1), so a
peer that never sends the final response cannot keep the transaction for ever. It then lingers
in Given up, a state of ours (the RFC destroys the transaction), for Timer M: a 2xx coming after
all still goes up to be ACKed and BYEd by the TU (§13.2.2.4, §15), and a non-2xx is ACKed here
(§17.1.1.3), or the callee re-sends it until its Timer H.

A non-INVITE server transaction's Trying and Proceeding have no timer either: a TU that never
answers (a bug) would keep it, and its table entries, for ever. The table bounds them
(:attr:`TransactionTimers.unanswered`, three times 64*T1: the client gave up at its Timer F,
64*T1, and a TU relaying the request waits at most its own client transaction's 64*T1, twice
after a challenge): past it, it feeds the transaction Input.UNANSWERED, which reports
:class:`TransactionUnanswered` and ends it; a response the TU passes down later is discarded.
The bound is kept by the table, in the order the requests came, not as a timer of the machine:
nearly every request is answered at once, and a timer would leave a superseded entry in the
timer heap, holding its transaction, for three times 64*T1. An INVITE server transaction gets
no such bound: a call may ring for as long as provisional responses come (§13.3.1.1), and its
owner, the call, answers it on every way out (calls/manager.py).

Everything is sans-IO: methods take ``now`` and return lists of outputs - messages to send
(:class:`SendRequest`, :class:`SendResponse`, and :class:`ResendResponse` once the transport has
handed back a final response's bytes) and events for the TU - and
``get_timer()``/``handle_timer(now=)`` expose the clock (aioquic's shape). Matching messages to
transactions (§17.1.3, §17.2.3, with the RFC 2543 fallback) is :class:`TransactionTable`'s job.
"""

from __future__ import annotations

import collections
import enum
import functools
import hashlib
import heapq
import itertools
from collections.abc import Callable, Mapping
from typing import ClassVar, NoReturn, Self

import attrs

from gateway.core.sip.errors import LocalSipError, RemoteSipError, SipParseError
from gateway.core.sip.message import Headers, Request, Response, make_response
from gateway.core.sip.via import Hop, has_rfc3261_branch

__all__ = [
    "KEY_BRANCH",
    "KEY_LEGACY",
    "KEY_METHOD",
    "KEY_SENT_BY",
    "MERGED_REASON",
    "AckReceived",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "Effect",
    "Input",
    "MergeKey",
    "Output",
    "RequestReceived",
    "ResendResponse",
    "ResponseReceived",
    "SendRequest",
    "SendResponse",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "ServerTransaction",
    "State",
    "Transaction",
    "TransactionKey",
    "TransactionLimitReached",
    "TransactionStateError",
    "TransactionTable",
    "TransactionTerminated",
    "TransactionTimeout",
    "TransactionTimers",
    "TransactionUnanswered",
    "TransportFailed",
    "UnmatchedResponse",
    "build_ack",
    "client_key",
    "key_text",
    "merge_key",
    "server_key",
    "trying",
]


# --- configuration and errors ------------------------------------------------------------------


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be positive")


@attrs.frozen
class TransactionTimers:
    """Timer base values in seconds (RFC 3261 §17.1.1.1 and Table 4).

    ``t1`` is the round-trip estimate, ``t2`` the cap of non-INVITE retransmission intervals,
    ``t4`` how long a message may stay in the network. ``timer_d`` is Timer D on unreliable
    transports (">32s", long enough to absorb every retransmission of a final response).
    """

    t1: float = attrs.field(default=0.5, validator=_positive)
    t2: float = attrs.field(default=4.0, validator=_positive)
    t4: float = attrs.field(default=5.0, validator=_positive)
    timer_d: float = attrs.field(default=32.0, validator=_positive)

    @property
    def timeout(self) -> float:
        """64*T1: Timers B, F, H, J (unreliable), L and M."""
        return 64 * self.t1

    @property
    def unanswered(self) -> float:
        """3*64*T1: how long a non-INVITE server transaction may wait for the TU's final
        response before the table gives up on it (a TU bug; see the module docstring)."""
        return 3 * self.timeout


class TransactionStateError(LocalSipError):
    """An input the transaction's state table does not allow; the transaction is now Terminated.

    Network events are always allowed, so this is raised only for TU misuse: a response passed
    down after the final one (other than the RFC's allowed cases), a timer input that is not
    running, or any input to a Terminated transaction.

    :class:`TransactionTable` forgets the transaction before raising this, and no
    :class:`TransactionTerminated` follows (the call returns no outputs): a TU keeping entries
    of its own per transaction drops them where it catches this (``transaction`` names it).
    """

    transaction: Transaction | None = None


class TransactionLimitReached(RemoteSipError):
    """Too many server transactions are alive; answer the new request 503 statelessly."""

    def __init__(self) -> None:
        super().__init__("too many transactions", status=503)


# --- states, inputs, effects -------------------------------------------------------------------


class State(enum.Enum):
    """Transaction states (RFC 3261 §17 figures 5-8; RFC 6026 adds Accepted)."""

    # Members are singletons compared by identity; Enum's own __hash__ is Python code that hashes
    # the name, and every step hashes a state or input a few times (the table, the timer sets).
    __hash__ = object.__hash__

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    ACCEPTED = "Accepted"
    # Ours, not the RFC's: a client INVITE 64*T1 after its CANCEL with no final response
    # (§9.1 "considered cancelled"), lingering for Timer M (see the table).
    GIVEN_UP = "Given up"
    TERMINATED = "Terminated"


# States that only wait for a timer, absorbing or passing up what arrives (a client INVITE's
# Completed re-sends the ACK it already built): none re-sends the request. (Terminated keeps
# it: the TU's 408/503 for Timer B/F or a transport error is built from it; so does Given up,
# which ACKs a late non-2xx too.)
_WAIT_STATES = frozenset({State.COMPLETED, State.CONFIRMED, State.ACCEPTED})
# Server states that re-send nothing: there the last response is let go too.
_RESPONSE_LET_GO = frozenset({State.CONFIRMED, State.ACCEPTED})


class Input(enum.Enum):
    """What can happen to a transaction."""

    __hash__ = object.__hash__  # identity, as State

    # From the transport layer.
    RESPONSE_1XX = "1xx received"
    RESPONSE_2XX = "2xx received"
    RESPONSE_3XX_6XX = "300-699 received"
    REQUEST = "request retransmission received"
    ACK = "ACK received"
    TRANSPORT_ERROR = "transport error"
    # From the TU.
    SEND_1XX = "1xx from TU"
    SEND_2XX = "2xx from TU"
    SEND_3XX_6XX = "300-699 from TU"
    # Timers (RFC 3261 Table 4; L and M from RFC 6026).
    TIMER_A = "Timer A"
    TIMER_B = "Timer B"
    TIMER_D = "Timer D"
    TIMER_E = "Timer E"
    TIMER_F = "Timer F"
    TIMER_G = "Timer G"
    TIMER_H = "Timer H"
    TIMER_I = "Timer I"
    TIMER_J = "Timer J"
    TIMER_K = "Timer K"
    TIMER_L = "Timer L"
    TIMER_M = "Timer M"
    # RFC 3261 §9.1: 64*T1 after the TU CANCELled a Proceeding INVITE, the transaction is
    # considered cancelled and destroyed if no final response came. (Not the proxy's Timer C.)
    TIMER_CANCEL = "64*T1 after CANCEL"
    # Ours, from the table: a non-INVITE server transaction the TU has not answered finally
    # for TransactionTimers.unanswered (a bug in the TU), ended so that nothing is kept for ever.
    UNANSWERED = "no final response from the TU in time"
    # Ours, from the TU: it gives a non-INVITE request up without a final response, the
    # client's Timer F having run out (RFC 4320 §4.2: no 408 for a non-INVITE; an element that
    # cannot respond before the transaction expires sends no final response at all).
    GIVEN_UP = "given up by the TU without a final response"


_MESSAGE_INPUTS = frozenset(
    {
        Input.RESPONSE_1XX,
        Input.RESPONSE_2XX,
        Input.RESPONSE_3XX_6XX,
        Input.REQUEST,
        Input.ACK,
        Input.SEND_1XX,
        Input.SEND_2XX,
        Input.SEND_3XX_6XX,
    }
)
_TIMER_INPUTS = frozenset(i for i in Input if i.name.startswith("TIMER_"))
# Running timers are kept by name (Input.TIMER_A.name == "TIMER_A"): a dict of strings and floats
# is one the cyclic garbage collector never tracks, and a transaction keeps one for up to 64*T1.
_TIMER_BY_NAME = {i.name: i for i in _TIMER_INPUTS}
_NAME_OF_TIMER = {i: i.name for i in _TIMER_INPUTS}  # a dict look-up, not Enum's name property
_RETRANSMIT_TIMERS = frozenset({Input.TIMER_A, Input.TIMER_E, Input.TIMER_G})


class Effect(enum.Enum):
    """What a transition does, in the words of the RFC figures."""

    __hash__ = object.__hash__  # identity, as State

    RESEND_REQUEST = "request re-sent"
    BACK_OFF_A = "Timer A doubled"  # §17.1.1.2: no cap; Timer B ends it
    BACK_OFF_E = "Timer E doubled, at most T2"  # §17.1.2.2 (Trying)
    E_AT_T2 = "Timer E set to T2"  # §17.1.2.2 (Proceeding)
    SEND_ACK = "ACK built and sent"  # §17.1.1.3
    RESEND_ACK = "ACK re-sent"
    PASS_RESPONSE = "response to TU"
    SEND_RESPONSE = "response sent"
    RESEND_RESPONSE = "last response re-sent"
    BACK_OFF_G = "Timer G doubled, at most T2"  # §17.2.1
    PASS_ACK = "ACK to TU"  # RFC 6026 (server Accepted)
    REPORT_TIMEOUT = "timeout to TU"
    REPORT_TRANSPORT_ERROR = "transport error to TU"
    REPORT_UNANSWERED = "unanswered request reported"
    GIVE_UP = "no final response will be sent"


# The members read at run time, as module names: on CPython 3.11 a member read from its enum
# class goes through EnumType's __getattr__ hook (slot_tp_getattr_hook), some 900 instructions
# against a few dozen for a module name, and a call's transactions read some 200 of them (docs/
# benchmarks.md, session 44). The tables and class declarations above and below keep the
# enum's own spelling: they are read once, at import.
_S_ACCEPTED = State.ACCEPTED
_S_CALLING = State.CALLING
_S_COMPLETED = State.COMPLETED
_S_CONFIRMED = State.CONFIRMED
_S_GIVEN_UP = State.GIVEN_UP
_S_PROCEEDING = State.PROCEEDING
_S_TERMINATED = State.TERMINATED
_S_TRYING = State.TRYING
_I_ACK = Input.ACK
_I_GIVEN_UP = Input.GIVEN_UP
_I_REQUEST = Input.REQUEST
_I_RESPONSE_1XX = Input.RESPONSE_1XX
_I_RESPONSE_2XX = Input.RESPONSE_2XX
_I_RESPONSE_3XX_6XX = Input.RESPONSE_3XX_6XX
_I_SEND_1XX = Input.SEND_1XX
_I_SEND_2XX = Input.SEND_2XX
_I_SEND_3XX_6XX = Input.SEND_3XX_6XX
_I_TIMER_A = Input.TIMER_A
_I_TIMER_B = Input.TIMER_B
_I_TIMER_CANCEL = Input.TIMER_CANCEL
_I_TIMER_D = Input.TIMER_D
_I_TIMER_E = Input.TIMER_E
_I_TIMER_F = Input.TIMER_F
_I_TIMER_G = Input.TIMER_G
_I_TIMER_H = Input.TIMER_H
_I_TIMER_I = Input.TIMER_I
_I_TIMER_J = Input.TIMER_J
_I_TIMER_K = Input.TIMER_K
_I_TIMER_L = Input.TIMER_L
_I_TIMER_M = Input.TIMER_M
_I_TRANSPORT_ERROR = Input.TRANSPORT_ERROR
_I_UNANSWERED = Input.UNANSWERED
_E_BACK_OFF_A = Effect.BACK_OFF_A
_E_BACK_OFF_E = Effect.BACK_OFF_E
_E_BACK_OFF_G = Effect.BACK_OFF_G
_E_E_AT_T2 = Effect.E_AT_T2
_E_GIVE_UP = Effect.GIVE_UP
_E_PASS_ACK = Effect.PASS_ACK
_E_PASS_RESPONSE = Effect.PASS_RESPONSE
_E_REPORT_TIMEOUT = Effect.REPORT_TIMEOUT
_E_REPORT_TRANSPORT_ERROR = Effect.REPORT_TRANSPORT_ERROR
_E_REPORT_UNANSWERED = Effect.REPORT_UNANSWERED
_E_RESEND_ACK = Effect.RESEND_ACK
_E_RESEND_REQUEST = Effect.RESEND_REQUEST
_E_RESEND_RESPONSE = Effect.RESEND_RESPONSE
_E_SEND_ACK = Effect.SEND_ACK
_E_SEND_RESPONSE = Effect.SEND_RESPONSE

_Table = Mapping[tuple[State, Input], tuple[State, tuple[Effect, ...]]]

S, I, E = State, Input, Effect  # noqa: E741 - short names keep the tables readable


# RFC 3261 §17.1.1.2 figure 5, as RFC 6026 redraws it (Accepted, Timer M).
_CLIENT_INVITE: _Table = {
    (S.CALLING, I.TIMER_A): (S.CALLING, (E.RESEND_REQUEST, E.BACK_OFF_A)),
    (S.CALLING, I.TIMER_B): (S.TERMINATED, (E.REPORT_TIMEOUT,)),
    (S.CALLING, I.RESPONSE_1XX): (S.PROCEEDING, (E.PASS_RESPONSE,)),
    (S.CALLING, I.RESPONSE_2XX): (S.ACCEPTED, (E.PASS_RESPONSE,)),
    (S.CALLING, I.RESPONSE_3XX_6XX): (S.COMPLETED, (E.PASS_RESPONSE, E.SEND_ACK)),
    (S.CALLING, I.TRANSPORT_ERROR): (S.TERMINATED, (E.REPORT_TRANSPORT_ERROR,)),
    (S.PROCEEDING, I.RESPONSE_1XX): (S.PROCEEDING, (E.PASS_RESPONSE,)),
    (S.PROCEEDING, I.RESPONSE_2XX): (S.ACCEPTED, (E.PASS_RESPONSE,)),
    (S.PROCEEDING, I.RESPONSE_3XX_6XX): (S.COMPLETED, (E.PASS_RESPONSE, E.SEND_ACK)),
    # Proceeding has no timer; a dead connection would leave the TU waiting for ever.
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (E.REPORT_TRANSPORT_ERROR,)),
    # Nor one that never answers, even its CANCEL: §9.1 bounds the wait once CANCEL is sent.
    # The TU hears of a timeout; the callee may still answer. Destroyed at once (as §9.1 has
    # it), the transaction would leave its answer to the transport, which drops it as stray
    # (RFC 6026 §8.10), and the callee re-sends it for 64*T1. Given up keeps it until Timer M.
    (S.PROCEEDING, I.TIMER_CANCEL): (S.GIVEN_UP, (E.REPORT_TIMEOUT,)),
    (S.COMPLETED, I.RESPONSE_3XX_6XX): (S.COMPLETED, (E.RESEND_ACK,)),
    (S.COMPLETED, I.RESPONSE_1XX): (S.COMPLETED, ()),  # late, reordered: absorb
    # A 2xx racing a downstream non-2xx (forking): the TU must ACK and BYE it (§13.2.2.4).
    (S.COMPLETED, I.RESPONSE_2XX): (S.COMPLETED, (E.PASS_RESPONSE,)),
    (S.COMPLETED, I.TIMER_D): (S.TERMINATED, ()),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (E.REPORT_TRANSPORT_ERROR,)),
    # RFC 6026: every 2xx goes up (the TU ACKs each); nothing else matters any more.
    (S.ACCEPTED, I.RESPONSE_2XX): (S.ACCEPTED, (E.PASS_RESPONSE,)),
    (S.ACCEPTED, I.RESPONSE_1XX): (S.ACCEPTED, ()),
    (S.ACCEPTED, I.RESPONSE_3XX_6XX): (S.ACCEPTED, ()),
    (S.ACCEPTED, I.TIMER_M): (S.TERMINATED, ()),
    # The transaction sends nothing in Accepted (the 2xx ACK is the TU's), so nothing can fail.
    (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, ()),
    # A session after all: every 2xx goes up (each is ACKed, the dialog BYEd once: §13.2.2.4,
    # §15), retransmissions and other forks' answers alike, as in Accepted.
    (S.GIVEN_UP, I.RESPONSE_2XX): (S.GIVEN_UP, (E.PASS_RESPONSE,)),
    # A refusal after all: ACKed, each retransmission too (§17.1.1.3; Completed's job, but a
    # 2xx of another fork may follow and is still a session nobody holds), never passed up:
    # the TU had its timeout as final response.
    (S.GIVEN_UP, I.RESPONSE_3XX_6XX): (S.GIVEN_UP, (E.SEND_ACK,)),
    (S.GIVEN_UP, I.RESPONSE_1XX): (S.GIVEN_UP, ()),
    (S.GIVEN_UP, I.TIMER_M): (S.TERMINATED, ()),
    # The TU knows the outcome; a lost ACK is re-sent on the next retransmission.
    (S.GIVEN_UP, I.TRANSPORT_ERROR): (S.GIVEN_UP, ()),
}

# RFC 3261 §17.1.2.2 figure 6.
_CLIENT_NON_INVITE: _Table = {
    (S.TRYING, I.TIMER_E): (S.TRYING, (E.RESEND_REQUEST, E.BACK_OFF_E)),
    (S.TRYING, I.TIMER_F): (S.TERMINATED, (E.REPORT_TIMEOUT,)),
    (S.TRYING, I.RESPONSE_1XX): (S.PROCEEDING, (E.PASS_RESPONSE,)),
    (S.TRYING, I.RESPONSE_2XX): (S.COMPLETED, (E.PASS_RESPONSE,)),
    (S.TRYING, I.RESPONSE_3XX_6XX): (S.COMPLETED, (E.PASS_RESPONSE,)),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TERMINATED, (E.REPORT_TRANSPORT_ERROR,)),
    (S.PROCEEDING, I.TIMER_E): (S.PROCEEDING, (E.RESEND_REQUEST, E.E_AT_T2)),
    (S.PROCEEDING, I.TIMER_F): (S.TERMINATED, (E.REPORT_TIMEOUT,)),
    (S.PROCEEDING, I.RESPONSE_1XX): (S.PROCEEDING, (E.PASS_RESPONSE,)),
    (S.PROCEEDING, I.RESPONSE_2XX): (S.COMPLETED, (E.PASS_RESPONSE,)),
    (S.PROCEEDING, I.RESPONSE_3XX_6XX): (S.COMPLETED, (E.PASS_RESPONSE,)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (E.REPORT_TRANSPORT_ERROR,)),
    # Completed buffers response retransmissions until Timer K.
    (S.COMPLETED, I.RESPONSE_1XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.RESPONSE_2XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.RESPONSE_3XX_6XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.TIMER_K): (S.TERMINATED, ()),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.COMPLETED, ()),  # nothing is being sent
}

# RFC 3261 §17.2.1 figure 7, as RFC 6026 redraws it (Accepted, Timer L).
_SERVER_INVITE: _Table = {
    # Re-send the last provisional response, if the TU (or we: 100 Trying) sent one.
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (E.RESEND_RESPONSE,)),
    (S.PROCEEDING, I.ACK): (S.PROCEEDING, ()),  # nothing to acknowledge yet: absorb
    (S.PROCEEDING, I.SEND_1XX): (S.PROCEEDING, (E.SEND_RESPONSE,)),
    (S.PROCEEDING, I.SEND_2XX): (S.ACCEPTED, (E.SEND_RESPONSE,)),
    (S.PROCEEDING, I.SEND_3XX_6XX): (S.COMPLETED, (E.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (E.REPORT_TRANSPORT_ERROR,)),
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, (E.RESEND_RESPONSE,)),
    (S.COMPLETED, I.ACK): (S.CONFIRMED, ()),
    (S.COMPLETED, I.TIMER_G): (S.COMPLETED, (E.RESEND_RESPONSE, E.BACK_OFF_G)),
    (S.COMPLETED, I.TIMER_H): (S.TERMINATED, (E.REPORT_TIMEOUT,)),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (E.REPORT_TRANSPORT_ERROR,)),
    # Confirmed absorbs ACKs triggered by our retransmissions until Timer I.
    (S.CONFIRMED, I.REQUEST): (S.CONFIRMED, ()),
    (S.CONFIRMED, I.ACK): (S.CONFIRMED, ()),
    (S.CONFIRMED, I.TIMER_I): (S.TERMINATED, ()),
    (S.CONFIRMED, I.TRANSPORT_ERROR): (S.CONFIRMED, ()),  # nothing is being sent
    # RFC 6026: absorb INVITE retransmissions; the TU retransmits its 2xx through us.
    (S.ACCEPTED, I.REQUEST): (S.ACCEPTED, ()),
    (S.ACCEPTED, I.ACK): (S.ACCEPTED, (E.PASS_ACK,)),
    (S.ACCEPTED, I.SEND_2XX): (S.ACCEPTED, (E.SEND_RESPONSE,)),
    (S.ACCEPTED, I.TIMER_L): (S.TERMINATED, ()),
    (S.ACCEPTED, I.TRANSPORT_ERROR): (S.ACCEPTED, (E.REPORT_TRANSPORT_ERROR,)),
}

# RFC 3261 §17.2.2 figure 8, and the table's bound on a TU that never answers (UNANSWERED).
_SERVER_NON_INVITE: _Table = {
    (S.TRYING, I.REQUEST): (S.TRYING, ()),  # retransmissions are discarded in Trying
    (S.TRYING, I.UNANSWERED): (S.TERMINATED, (E.REPORT_UNANSWERED,)),
    (S.PROCEEDING, I.UNANSWERED): (S.TERMINATED, (E.REPORT_UNANSWERED,)),
    (S.TRYING, I.GIVEN_UP): (S.TERMINATED, (E.GIVE_UP,)),
    (S.PROCEEDING, I.GIVEN_UP): (S.TERMINATED, (E.GIVE_UP,)),
    (S.TRYING, I.SEND_1XX): (S.PROCEEDING, (E.SEND_RESPONSE,)),
    (S.TRYING, I.SEND_2XX): (S.COMPLETED, (E.SEND_RESPONSE,)),
    (S.TRYING, I.SEND_3XX_6XX): (S.COMPLETED, (E.SEND_RESPONSE,)),
    (S.TRYING, I.TRANSPORT_ERROR): (S.TRYING, ()),  # nothing was sent yet
    (S.PROCEEDING, I.REQUEST): (S.PROCEEDING, (E.RESEND_RESPONSE,)),
    (S.PROCEEDING, I.SEND_1XX): (S.PROCEEDING, (E.SEND_RESPONSE,)),
    (S.PROCEEDING, I.SEND_2XX): (S.COMPLETED, (E.SEND_RESPONSE,)),
    (S.PROCEEDING, I.SEND_3XX_6XX): (S.COMPLETED, (E.SEND_RESPONSE,)),
    (S.PROCEEDING, I.TRANSPORT_ERROR): (S.TERMINATED, (E.REPORT_TRANSPORT_ERROR,)),
    (S.COMPLETED, I.REQUEST): (S.COMPLETED, (E.RESEND_RESPONSE,)),
    # "Any other final responses passed by the TU ... MUST be discarded" (§17.2.2).
    (S.COMPLETED, I.SEND_2XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.SEND_3XX_6XX): (S.COMPLETED, ()),
    (S.COMPLETED, I.TIMER_J): (S.TERMINATED, ()),
    (S.COMPLETED, I.TRANSPORT_ERROR): (S.TERMINATED, (E.REPORT_TRANSPORT_ERROR,)),
}

del S, I, E


# --- outputs -----------------------------------------------------------------------------------


@attrs.frozen
class SendRequest:
    """Pass ``request`` to the transport, to ``transaction.peer``."""

    transaction: ClientTransaction
    request: Request
    retransmission: bool = False


@attrs.frozen
class SendResponse:
    """Pass ``response`` to the transport (RFC 3261 §18.2.2: see :func:`via.response_target`)."""

    transaction: ServerTransaction
    response: Response
    retransmission: bool = False


@attrs.frozen
class ResendResponse:
    """Pass ``data`` to the transport again: the final response as it was sent, which the
    transport handed back (:meth:`ServerTransaction.sent_as`). A retransmitted request is
    answered with the response already sent (RFC 3261 §17.2.1, §17.2.2), so the bytes are all
    that is kept for Timers G and J."""

    transaction: ServerTransaction
    data: bytes


@attrs.frozen
class ResponseReceived:
    """TU event: a response for the TU's client transaction."""

    transaction: ClientTransaction
    response: Response


@attrs.frozen
class RequestReceived:
    """TU event: a new request; answer it with ``send_response`` on ``transaction``."""

    transaction: ServerTransaction
    request: Request


@attrs.frozen
class AckReceived:
    """TU event: an ACK for a 2xx (RFC 3261 §13.3.1.4, §17.2.3).

    ``transaction`` is None when the ACK matched no transaction - the normal case, since the ACK
    for a 2xx has its own branch - or the INVITE server transaction in Accepted that it matched
    (RFC 6026). Either way it belongs to the dialog.
    """

    transaction: ServerTransaction | None
    request: Request


@attrs.frozen
class TransactionTimeout:
    """TU event: Timer B or F (no final response; act as if 408) or H (no ACK came)."""

    transaction: Transaction
    timer: str


@attrs.frozen
class TransportFailed:
    """TU event: the transport could not send a message of this transaction (§17.1.4, §17.2.4)."""

    transaction: Transaction


@attrs.frozen
class TransactionUnanswered:
    """The TU did not answer a non-INVITE request finally within
    :attr:`TransactionTimers.unanswered` (a bug in the TU): the transaction ends now
    (:class:`TransactionTerminated` follows), and a response passed down later is discarded."""

    transaction: ServerTransaction


@attrs.frozen
class TransactionTerminated:
    """The transaction reached Terminated; forget it."""

    transaction: Transaction


@attrs.frozen
class UnmatchedResponse:
    """A response that matches no client transaction.

    RFC 6026, amending RFC 3261 §18.1.2: an element other than a stateless proxy silently
    discards it; it is reported so the TU can log and count it. (Stray 2xx retransmissions are
    matched by the INVITE client transaction's Accepted state for 64*T1 and do not end up here.)
    """

    response: Response


Output = (
    SendRequest
    | SendResponse
    | ResendResponse
    | ResponseReceived
    | RequestReceived
    | AckReceived
    | TransactionTimeout
    | TransportFailed
    | TransactionTerminated
    | TransactionUnanswered
    | UnmatchedResponse
)


# --- transaction keys (RFC 3261 §17.1.3, §17.2.3) ----------------------------------------------


TransactionKey = tuple[str, str | None, str | None, tuple[str, ...] | None]
"""What identifies a transaction when matching messages to it: (method, branch, sent-by,
legacy), read through :data:`KEY_METHOD` ... :data:`KEY_LEGACY`.

Client side (§17.1.3): the top Via branch and the CSeq method (CANCEL shares the INVITE's
branch but is its own transaction): ``(method, branch, None, None)``. Server side (§17.2.3):
branch, sent-by and method, with ACK counted as INVITE: ``(method, branch, sent_by, None)``; or,
when the branch is not an RFC 3261 one, the RFC 2543 fields: ``(method, None, None, legacy)``.
Branches are tokens and compare case-insensitively (§7.3.1), so they are kept lower-cased.

A plain tuple of strings, not a named tuple: every message looks its transaction up by key a
few times (a tuple display is built in a few instructions, a named tuple's ``__new__`` with
keywords is a Python call), and the cyclic collector stops tracking a tuple of strings at its
first collection but walks a named tuple for as long as it lives (up to 64*T1, Timers J, L, M;
docs/benchmarks.md "Session 37 (task steps)").
"""

KEY_METHOD = 0
KEY_BRANCH = 1
KEY_SENT_BY = 2
KEY_LEGACY = 3


def client_key(message: Request | Response) -> TransactionKey | None:
    """Key of the client transaction a response (or our own request) belongs to; None without a
    branch, which can match none of ours (§17.1.3)."""
    branch = message.top_via.branch
    if branch is None:
        return None
    return (message.cseq.method, branch.lower(), None, None)


def server_key(request: Request) -> TransactionKey:
    """Key of the server transaction a request belongs to (§17.2.3); ACK maps to its INVITE."""
    return _server_key(request, "INVITE" if request.method == "ACK" else request.method)


MergeKey = tuple[str, str, int, str]
"""(Call-ID, From tag, CSeq number, method): what RFC 3261 §8.2.2.2 compares."""

MERGED_REASON = "Loop Detected (merged request)"
"""The reason phrase of the 482 answering a merged request (§8.2.2.2)."""


def merge_key(request: Request) -> MergeKey | None:
    """The merged-request key of a new request outside a dialog (RFC 3261 §8.2.2.2), or None for
    a request the check does not cover: one in a dialog (To tag), an ACK (it is matched to its
    INVITE's transaction, §17.2.3) and a CANCEL (hop by hop, and it shares its INVITE's Call-ID,
    From tag and CSeq number by design, §9.1)."""
    method = request.method
    if method == "ACK" or method == "CANCEL" or request.to.tag is not None:
        return None
    cseq = request.cseq
    return (request.call_id, request.from_.tag or "", cseq.number, method)


def _server_key(request: Request, method: str) -> TransactionKey:
    via = request.top_via
    branch = via.branch
    if branch is not None and has_rfc3261_branch(via):
        return (method, branch.lower(), via.sent_by().lower(), None)
    # RFC 2543 peers, and RFC 4475 §3.2.1's branch that is only the magic cookie: match on
    # Request-URI, From tag, Call-ID, CSeq number and top Via, plus the To tag for non-INVITE
    # (for INVITE the ACK carries our tag, which is checked separately).
    to_tag = "" if method == "INVITE" else (request.to.tag or "")
    legacy = (
        str(request.uri),
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.number),
        via.sent_by().lower(),
        branch or "",
        to_tag,
    )
    return (method, None, None, legacy)


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response to ``invite`` (RFC 3261 §17.1.1.3).

    Same Request-URI, Call-ID, From and CSeq number as the INVITE, CSeq method ACK, the To of the
    response (with its tag), a single Via equal to the INVITE's top Via (same branch) and the
    INVITE's Route header fields.
    """
    fields: list[tuple[str, str]] = [
        ("Via", _header(invite, "Via")),
        ("Max-Forwards", invite.headers.get("Max-Forwards") or "70"),
    ]
    fields += [("Route", route) for route in invite.headers.get_all("Route")]
    fields += [
        ("To", _header(response, "To")),
        ("From", _header(invite, "From")),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.number} ACK"),
    ]
    return Request(method="ACK", uri=invite.uri, headers=Headers(tuple(fields)))


def _header(message: Request | Response, name: str) -> str:
    value = message.headers.get(name)
    if value is None:
        raise LocalSipError(f"message has no {name} header")
    return value


# --- the machines ------------------------------------------------------------------------------


class Transaction:
    """Shared engine of the four machines: table lookup, effects and timers.

    Create one with the subclasses' ``start()``. The methods named after RFC events
    (``receive_response``, ``send_response`` ...) feed :meth:`process_input`, which is public so
    that tests can drive every (state, input) pair.
    """

    # Slots: a transaction outlives its call by up to 64*T1 (Timers J, L, M) and the cyclic GC
    # walks every live one on each full collection; a __dict__ each would double that work.
    __slots__ = (
        "_deadlines",
        "_intervals",
        "_zero_timers",
        "key",
        "method",
        "peer",
        "reliable",
        "request",
        "state",
        "timers",
    )

    TABLE: ClassVar[_Table]
    INITIAL_STATE: ClassVar[State]
    STATE_TIMERS: ClassVar[Mapping[State, frozenset[Input]]]
    """Timers allowed to keep running in each state; entering a state cancels all others."""

    def __init__(
        self,
        request: Request,
        *,
        peer: Hop,
        timers: TransactionTimers,
        key: TransactionKey | None = None,
    ) -> None:
        # The request, until the transaction reaches a wait state (_WAIT_STATES), where nothing
        # re-sends it: a transaction outlives its call by up to 64*T1 and need not keep an
        # INVITE and its SDP alive for that long.
        self.request: Request | None = request
        self.method = request.method
        self.peer = peer
        self.reliable = peer.reliable
        self.timers = timers
        self.state = self.INITIAL_STATE
        # The table passes the key it has just computed to look the request up (a Via and a
        # CSeq read, a few dozen Python calls), rather than have it computed again.
        self.key = self._make_key() if key is None else key
        self._deadlines: dict[str, float] = {}  # timer name -> when it fires
        # Empty containers the collector does not track: most transactions spend their life
        # (up to 64*T1) in a wait state, where these stay empty.
        self._zero_timers: tuple[Input, ...] = ()
        self._intervals: dict[Input, float] = {}  # retransmission timers' current intervals

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.state.value}>"

    @property
    def terminated(self) -> bool:
        return self.state is _S_TERMINATED

    @property
    def running_timers(self) -> frozenset[Input]:
        """The timers currently armed (Input.TIMER_A ...)."""
        return frozenset(_TIMER_BY_NAME[name] for name in self._deadlines)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next be called, or None."""
        return min(self._deadlines.values(), default=None)

    def handle_timer(self, *, now: float) -> list[Output]:
        """Fire every timer due at ``now``, earliest first (a timeout before a retransmission)."""
        outputs: list[Output] = []
        while not self.terminated:
            due = [
                (deadline, _TIMER_BY_NAME[name] in _RETRANSMIT_TIMERS, name)
                for name, deadline in self._deadlines.items()
                if deadline <= now
            ]
            if not due:
                break
            outputs += self.process_input(_TIMER_BY_NAME[min(due)[2]], now=now)
        return outputs

    def transport_error(self, *, now: float) -> list[Output]:
        """The transport failed to send one of this transaction's messages."""
        return self.process_input(_I_TRANSPORT_ERROR, now=now)

    def process_input(
        self, event: Input, *, now: float, message: Request | Response | None = None
    ) -> list[Output]:
        """Apply one input to the state table; message inputs carry their ``message``.

        Raises :class:`TransactionStateError`, after moving to Terminated, when the table has no
        entry for (state, input), or when a timer input names a timer that is not running.
        """
        if (event in _MESSAGE_INPUTS) != (message is not None):
            raise LocalSipError(f"{event.value}: message missing or not expected")
        if event in _TIMER_INPUTS and _NAME_OF_TIMER[event] not in self._deadlines:
            self._protocol_error(event, now)  # a timer that is not running cannot fire
        outputs: list[Output] = []
        self._step(event, now, message, outputs)
        # Zero-length timers (D, I, J, K on reliable transports) mean "move on at once".
        while self._zero_timers and not self.terminated:
            timer, self._zero_timers = self._zero_timers[0], self._zero_timers[1:]
            self._step(timer, now, None, outputs)
        return outputs

    # -- engine --

    def _make_key(self) -> TransactionKey:
        raise NotImplementedError

    def _entry_timers(self, state: State) -> list[tuple[Input, float]]:
        raise NotImplementedError

    def _start_timers(self, now: float) -> None:
        for timer, delay in self._entry_timers(self.state):
            self._arm(timer, delay, now)

    def _step(
        self, event: Input, now: float, message: Request | Response | None, out: list[Output]
    ) -> None:
        entry = self.TABLE.get((self.state, event))
        if entry is None:
            self._protocol_error(event, now)
        # A timer input means that timer has fired.
        name = _NAME_OF_TIMER.get(event)
        if name is not None:
            self._deadlines.pop(name, None)
        next_state, effects = entry
        for effect in effects:
            self._apply(effect, event, message, now, out)
        if next_state is not self.state:
            self._enter(next_state, now, out)

    def _protocol_error(self, event: Input, now: float) -> NoReturn:
        previous = self.state
        self._enter(_S_TERMINATED, now, [])
        raise TransactionStateError(f"{event.value} not allowed in {previous.value}")

    def _enter(self, state: State, now: float, out: list[Output]) -> None:
        self.state = state
        if state in _WAIT_STATES:
            self.request = None
        allowed = self.STATE_TIMERS.get(state, frozenset())
        self._deadlines = {
            name: d for name, d in self._deadlines.items() if _TIMER_BY_NAME[name] in allowed
        }
        if self._zero_timers:
            self._zero_timers = tuple(t for t in self._zero_timers if t in allowed)
        if self._intervals and not allowed & _RETRANSMIT_TIMERS:
            self._intervals = {}
        if state is _S_TERMINATED:
            out.append(TransactionTerminated(self))
            return
        self._start_timers(now)

    def _arm(self, timer: Input, delay: float, now: float) -> None:
        if timer in _RETRANSMIT_TIMERS:
            self._intervals[timer] = delay
        if delay <= 0:
            self._zero_timers += (timer,)
        else:
            self._deadlines[_NAME_OF_TIMER[timer]] = now + delay

    def _wait(self, delay: float) -> float:
        """Timers D, I, J, K: ``delay`` on unreliable transports, zero on reliable ones."""
        return 0.0 if self.reliable else delay

    def _apply(
        self,
        effect: Effect,
        event: Input,
        message: Request | Response | None,
        now: float,
        out: list[Output],
    ) -> None:
        if effect is _E_REPORT_TIMEOUT:
            out.append(TransactionTimeout(self, event.name.removeprefix("TIMER_")))
        elif effect is _E_REPORT_TRANSPORT_ERROR:
            out.append(TransportFailed(self))
        else:  # pragma: no cover - every table effect is handled by a subclass
            raise AssertionError(f"unhandled effect {effect}")

    def _back_off(self, timer: Input, interval: float, now: float) -> None:
        self._intervals[timer] = interval
        self._deadlines[_NAME_OF_TIMER[timer]] = now + interval


class ClientTransaction(Transaction):
    """The client side: sends the request, passes responses up (RFC 3261 §17.1)."""

    __slots__ = ("_ack",)

    def __init__(
        self,
        request: Request,
        *,
        peer: Hop,
        timers: TransactionTimers,
        key: TransactionKey | None = None,
    ) -> None:
        super().__init__(request, peer=peer, timers=timers, key=key)
        self._ack: Request | None = None

    @classmethod
    def start(
        cls,
        request: Request,
        *,
        peer: Hop,
        now: float,
        timers: TransactionTimers | None = None,
        key: TransactionKey | None = None,
    ) -> tuple[Self, list[Output]]:
        """Create the transaction for ``request`` (which carries our Via with a fresh branch)
        and send it to ``peer``. ``key``: its :func:`client_key`, when the caller has it."""
        txn = cls(request, peer=peer, timers=timers or TransactionTimers(), key=key)
        txn._start_timers(now)
        return txn, [SendRequest(txn, request)]

    @property
    def ack(self) -> Request | None:
        """The ACK this INVITE transaction built for a non-2xx final response, if any."""
        return self._ack

    def receive_response(self, response: Response, *, now: float) -> list[Output]:
        """A response matched to this transaction by :func:`client_key`."""
        return self.process_input(_received(response.status), now=now, message=response)

    def _make_key(self) -> TransactionKey:
        assert self.request is not None  # made at creation
        key = client_key(self.request)
        if key is None:
            raise LocalSipError("a client transaction needs a Via branch (RFC 3261 §8.1.1.7)")
        return key

    def _apply(
        self,
        effect: Effect,
        event: Input,
        message: Request | Response | None,
        now: float,
        out: list[Output],
    ) -> None:
        t = self.timers
        if effect is _E_RESEND_REQUEST:
            assert self.request is not None  # only Calling, Trying and Proceeding re-send it
            out.append(SendRequest(self, self.request, retransmission=True))
        elif effect is _E_BACK_OFF_A:
            self._back_off(_I_TIMER_A, self._intervals[_I_TIMER_A] * 2, now)
        elif effect is _E_BACK_OFF_E:
            self._back_off(_I_TIMER_E, min(self._intervals[_I_TIMER_E] * 2, t.t2), now)
        elif effect is _E_E_AT_T2:
            self._back_off(_I_TIMER_E, t.t2, now)
        elif effect is _E_SEND_ACK:
            assert self.request is not None  # leaving Calling or Proceeding, or Given up
            ack = build_ack(self.request, _response(message))
            # Given up ACKs each copy of a late non-2xx: the same ACK again is a retransmission.
            out.append(SendRequest(self, ack, retransmission=ack == self._ack))
            self._ack = ack
        elif effect is _E_RESEND_ACK:
            assert self._ack is not None
            out.append(SendRequest(self, self._ack, retransmission=True))
        elif effect is _E_PASS_RESPONSE:
            out.append(ResponseReceived(self, _response(message)))
        else:
            super()._apply(effect, event, message, now, out)


class ClientInviteTransaction(ClientTransaction):
    """INVITE client transaction (RFC 3261 §17.1.1 as amended by RFC 6026)."""

    __slots__ = ()

    TABLE = _CLIENT_INVITE
    INITIAL_STATE = State.CALLING
    STATE_TIMERS = {
        State.CALLING: frozenset({Input.TIMER_A, Input.TIMER_B}),
        State.PROCEEDING: frozenset({Input.TIMER_CANCEL}),  # armed by cancel_sent() only
        State.COMPLETED: frozenset({Input.TIMER_D}),
        State.ACCEPTED: frozenset({Input.TIMER_M}),
        State.GIVEN_UP: frozenset({Input.TIMER_M}),  # Accepted's wait, for the same stragglers
    }

    def _entry_timers(self, state: State) -> list[tuple[Input, float]]:
        t = self.timers
        if state is _S_CALLING:
            timers = [(_I_TIMER_B, t.timeout)]
            return timers if self.reliable else [(_I_TIMER_A, t.t1), *timers]
        if state is _S_COMPLETED:
            return [(_I_TIMER_D, self._wait(t.timer_d))]
        if state is _S_ACCEPTED or state is _S_GIVEN_UP:
            return [(_I_TIMER_M, t.timeout)]
        return []

    @property
    def given_up(self) -> bool:
        """No final response came within 64*T1 of our CANCEL (§9.1): the TU was told of a
        timeout, and a 2xx coming now is a session nobody holds. The request is kept until
        Timer M (Given up is no wait state): the TU's 408 (RFC 3261 §8.1.3.1) and the ACK of a
        late non-2xx (§17.1.1.3) are built from it."""
        return self.state is _S_GIVEN_UP

    @property
    def cancelled(self) -> bool:
        """A CANCEL was sent for it while in Proceeding (:meth:`cancel_sent`)."""
        return _NAME_OF_TIMER[_I_TIMER_CANCEL] in self._deadlines

    def cancel_sent(self, *, now: float) -> None:
        """The TU sent a CANCEL for this INVITE. RFC 3261 §9.1: if no final response comes
        within 64*T1, the transaction is considered cancelled (reported as a timeout, like
        Timer B), and destroyed after Timer M in Given up, where a late 2xx still goes up and
        a late non-2xx is ACKed. Without this a peer that sent a provisional response and then
        ignores the CANCEL keeps the transaction, and its request, for ever: Proceeding has no
        timer of its own. Outside Proceeding there is nothing to bound (Calling has Timer B;
        the final response has come otherwise)."""
        if self.state is _S_PROCEEDING and _NAME_OF_TIMER[_I_TIMER_CANCEL] not in self._deadlines:
            self._arm(_I_TIMER_CANCEL, self.timers.timeout, now)


class ClientNonInviteTransaction(ClientTransaction):
    """Non-INVITE client transaction (RFC 3261 §17.1.2)."""

    __slots__ = ()

    TABLE = _CLIENT_NON_INVITE
    INITIAL_STATE = State.TRYING
    STATE_TIMERS = {
        State.TRYING: frozenset({Input.TIMER_E, Input.TIMER_F}),
        State.PROCEEDING: frozenset({Input.TIMER_E, Input.TIMER_F}),
        State.COMPLETED: frozenset({Input.TIMER_K}),
    }

    def _entry_timers(self, state: State) -> list[tuple[Input, float]]:
        t = self.timers
        if state is _S_TRYING:
            timers = [(_I_TIMER_F, t.timeout)]
            return timers if self.reliable else [(_I_TIMER_E, t.t1), *timers]
        if state is _S_COMPLETED:
            return [(_I_TIMER_K, self._wait(t.t4))]
        return []  # Proceeding keeps E and F running


class ServerTransaction(Transaction):
    """The server side: passes the request up, sends the TU's responses (RFC 3261 §17.2)."""

    __slots__ = (
        "_final_to_tag",
        "_last_response",
        "_last_sent",
        "final_status",
        "merge_key",
        "unanswered",
    )

    def __init__(
        self,
        request: Request,
        *,
        peer: Hop,
        timers: TransactionTimers,
        key: TransactionKey | None = None,
    ) -> None:
        super().__init__(request, peer=peer, timers=timers, key=key)
        # Kept while a state can re-send it (Proceeding, Completed); Accepted and Confirmed
        # re-send nothing (the TU re-sends its 2xx), so there it is let go like the request.
        self._last_response: Response | None = None
        # Or, once the transport has sent the final response, the bytes it sent (sent_as).
        self._last_sent: bytes | None = None
        self.final_status: int | None = None  # the status of the final response sent
        self._final_to_tag: str | None = None  # RFC 2543 ACK matching only (_ack_matches)
        # Its entry in the table's merged-request index (RFC 3261 §8.2.2.2), removed with it.
        self.merge_key: MergeKey | None = None
        # Ended by Input.UNANSWERED: the TU never answered (ServerNonInviteTransaction).
        self.unanswered = False

    @classmethod
    def start(
        cls,
        request: Request,
        *,
        peer: Hop,
        now: float,
        timers: TransactionTimers | None = None,
        key: TransactionKey | None = None,
    ) -> tuple[Self, list[Output]]:
        """Create the transaction for a new request received from ``peer`` (its source).
        ``key``: its :func:`server_key`, when the caller has it."""
        txn = cls(request, peer=peer, timers=timers or TransactionTimers(), key=key)
        txn._start_timers(now)
        return txn, [RequestReceived(txn, request)]

    @property
    def last_response(self) -> Response | None:
        """The last response sent, while request retransmissions are answered with it (None in
        Accepted and Confirmed, and once :meth:`sent_as` has its bytes instead)."""
        return self._last_response

    def sent_as(self, response: Response, data: bytes) -> bool:
        """The transport sent ``response``, this transaction's final response, as ``data``:
        from now on a retransmitted request is answered with ``data`` (:class:`ResendResponse`)
        and the Response is let go. Whether it was kept: nothing changes for a response that
        is not the one kept (a provisional one, a 2xx to an INVITE, which the TU re-sends
        itself).

        Why: a completed non-INVITE transaction lives 64*T1 (Timer J, 32 s on UDP) after its
        answer, every call's BYE's 200 among them, and a Response is some two dozen objects
        the cyclic collector walks (its Headers and their fields), where bytes are one object
        it never walks (docs/benchmarks.md, session 71)."""
        if self.final_status is None or response is not self._last_response:
            return False
        self._last_response = None
        self._last_sent = data
        return True

    @property
    def final_to_tag(self) -> str | None:
        """The To tag of the final response sent, kept for RFC 2543 ACK matching (§17.2.3)."""
        return self._final_to_tag

    def receive_request(self, request: Request, *, now: float) -> list[Output]:
        """A retransmission of the request, or (INVITE) its ACK, matched by :func:`server_key`."""
        if request.method == "ACK":
            return self.process_input(_I_ACK, now=now, message=request)
        return self.process_input(_I_REQUEST, now=now, message=request)

    def send_response(self, response: Response, *, now: float) -> list[Output]:
        """The TU's response to the request (built with ``message.make_response``)."""
        if response.cseq.method != self.method:
            raise LocalSipError("response CSeq method differs from the transaction's request")
        if self.unanswered:
            # Given up on (Input.UNANSWERED), long after its client's Timer F: an answer now
            # reaches nobody, and the TU that comes with it at last has no misuse to hear of.
            return []
        return self.process_input(_sent(response.status), now=now, message=response)

    def _make_key(self) -> TransactionKey:
        assert self.request is not None  # made at creation
        return server_key(self.request)

    def _enter(self, state: State, now: float, out: list[Output]) -> None:
        super()._enter(state, now, out)
        if state in _RESPONSE_LET_GO:
            self._last_response = None
            self._last_sent = None

    def _apply(
        self,
        effect: Effect,
        event: Input,
        message: Request | Response | None,
        now: float,
        out: list[Output],
    ) -> None:
        if effect is _E_SEND_RESPONSE:
            response = _response(message)
            if response.status >= 200 and self.final_status is None:
                self.final_status = response.status
                if self.key[KEY_LEGACY] is not None:
                    self._final_to_tag = response.to.tag
            if self.state is not _S_ACCEPTED:
                self._last_response = response
            out.append(SendResponse(self, response))
        elif effect is _E_RESEND_RESPONSE:
            if self._last_response is not None:
                out.append(SendResponse(self, self._last_response, retransmission=True))
            elif self._last_sent is not None:
                out.append(ResendResponse(self, self._last_sent))
        elif effect is _E_BACK_OFF_G:
            interval = min(self._intervals[_I_TIMER_G] * 2, self.timers.t2)
            self._back_off(_I_TIMER_G, interval, now)
        elif effect is _E_PASS_ACK:
            out.append(AckReceived(self, _request(message)))
        elif effect is _E_REPORT_UNANSWERED:
            self.unanswered = True
            out.append(TransactionUnanswered(self))
        elif effect is _E_GIVE_UP:
            self.unanswered = True  # a response passed down later is discarded as above
        else:
            super()._apply(effect, event, message, now, out)


class ServerInviteTransaction(ServerTransaction):
    """INVITE server transaction (RFC 3261 §17.2.1 as amended by RFC 6026)."""

    __slots__ = ()

    TABLE = _SERVER_INVITE
    INITIAL_STATE = State.PROCEEDING
    STATE_TIMERS = {
        State.COMPLETED: frozenset({Input.TIMER_G, Input.TIMER_H}),
        State.CONFIRMED: frozenset({Input.TIMER_I}),
        State.ACCEPTED: frozenset({Input.TIMER_L}),
    }

    @classmethod
    def start(
        cls,
        request: Request,
        *,
        peer: Hop,
        now: float,
        timers: TransactionTimers | None = None,
        send_trying: bool = True,
        key: TransactionKey | None = None,
    ) -> tuple[Self, list[Output]]:
        """Create the transaction for a new INVITE. With ``send_trying`` it answers 100 Trying at
        once (§17.2.1: unless the TU will respond within 200 ms), which also stops the client's
        Timer A retransmissions."""
        txn, outputs = super().start(request, peer=peer, now=now, timers=timers, key=key)
        if send_trying:
            # Before the request goes up: a TU that answers at once (a 481 for a re-INVITE of
            # no dialog, a 420, a 503 while draining) would otherwise have its final response
            # go out ahead of the 100, which then followed it (no 1xx after the final: §17.2.1,
            # Completed sends only the final response again).
            outputs = txn.send_response(trying(request), now=now) + outputs
        return txn, outputs

    def _entry_timers(self, state: State) -> list[tuple[Input, float]]:
        t = self.timers
        if state is _S_COMPLETED:
            timers = [(_I_TIMER_H, t.timeout)]
            return timers if self.reliable else [(_I_TIMER_G, t.t1), *timers]
        if state is _S_CONFIRMED:
            return [(_I_TIMER_I, self._wait(t.t4))]
        if state is _S_ACCEPTED:
            return [(_I_TIMER_L, t.timeout)]
        return []


class ServerNonInviteTransaction(ServerTransaction):
    """Non-INVITE server transaction (RFC 3261 §17.2.2), CANCEL included (§9.2)."""

    __slots__ = ()

    TABLE = _SERVER_NON_INVITE
    INITIAL_STATE = State.TRYING
    STATE_TIMERS = {State.COMPLETED: frozenset({Input.TIMER_J})}

    def _entry_timers(self, state: State) -> list[tuple[Input, float]]:
        if state is _S_COMPLETED:
            return [(_I_TIMER_J, self._wait(self.timers.timeout))]
        return []


def trying(request: Request) -> Response:
    """100 Trying for ``request``: no To tag, Timestamp copied (RFC 3261 §8.2.6.1)."""
    timestamp = request.headers.get("Timestamp")
    extra = [("Timestamp", timestamp)] if timestamp is not None else []
    return make_response(request, 100, extra=extra)


def _received(status: int) -> Input:
    if 100 <= status <= 199:
        return _I_RESPONSE_1XX
    if 200 <= status <= 299:
        return _I_RESPONSE_2XX
    if 300 <= status <= 699:
        return _I_RESPONSE_3XX_6XX
    raise LocalSipError("status code out of range")


def _sent(status: int) -> Input:
    if 100 <= status <= 199:
        return _I_SEND_1XX
    if 200 <= status <= 299:
        return _I_SEND_2XX
    if 300 <= status <= 699:
        return _I_SEND_3XX_6XX
    raise LocalSipError("status code out of range")


def _response(message: Request | Response | None) -> Response:
    if not isinstance(message, Response):
        raise LocalSipError("this input needs a response")
    return message


def _request(message: Request | Response | None) -> Request:
    if not isinstance(message, Request):
        raise LocalSipError("this input needs a request")
    return message


# --- the table ---------------------------------------------------------------------------------


class TransactionTable:
    """All live transactions of one SIP stack: creates them, routes messages to them (RFC 3261
    §17.1.3, §17.2.3, §18.1.2, §18.2.1) and multiplexes their timers. Sans-IO.

    The transport parses a datagram or frame, stamps the top Via of a request
    (:func:`via.stamp_request`) and hands it to :meth:`receive_request` or
    :meth:`receive_response`; the TU sends through :meth:`send_request` and :meth:`send_response`.
    Every method returns the outputs to act on, in order. Terminated transactions are dropped.
    Drive transactions through the table, not directly, or its timer schedule goes stale.

    ``max_server_transactions`` bounds the state a flood of new requests can create; past it
    :meth:`receive_request` raises :class:`TransactionLimitReached` (answer 503 statelessly).

    Merged requests (RFC 3261 §8.2.2.2): a new request outside a dialog whose Call-ID, From tag
    and CSeq (number and method) are those of a request another live server transaction serves
    - one request that reached us twice along two paths (a forking proxy), or a retransmission
    whose Via branch changed (an RFC 2543 copy, then an RFC 3261 one) - is answered 482 Loop
    Detected by a transaction of its own, and never passed up: the TU would make a second call
    of it. The index holds one entry per live server transaction outside a dialog and drops it
    with the transaction (at most 64*T1 after its final response), so it is bounded by
    ``max_server_transactions``. A retransmission of the same transaction matches that
    transaction first and never reaches the check.
    """

    def __init__(
        self,
        *,
        timers: TransactionTimers | None = None,
        send_trying: bool = True,
        max_server_transactions: int = 10_000,
    ) -> None:
        self.timers = timers or TransactionTimers()
        self._send_trying = send_trying
        self.max_server_transactions = max_server_transactions
        self._client: dict[TransactionKey, ClientTransaction] = {}
        self._server: dict[TransactionKey, ServerTransaction] = {}
        self._merging: dict[MergeKey, ServerTransaction] = {}  # RFC 3261 §8.2.2.2
        # Non-INVITE server transactions without a final response yet, oldest first, and when
        # each is given up (TransactionTimers.unanswered after its request: one delay for all,
        # so the order of arrival is the order of the deadlines). Ordered: first item, insertion
        # and removal anywhere are O(1).
        self._unanswered: collections.OrderedDict[ServerTransaction, float] = (
            collections.OrderedDict()
        )
        self.merged_requests = 0  # merged requests answered 482, since start
        # Heap entries are (deadline, sequence number) and a live entry's transaction is found
        # by its number in _timer_owner; an entry whose number is not there is stale. Tuples of
        # numbers only: the cyclic collector stops tracking them at their first collection,
        # where a (deadline, number, transaction) entry stayed tracked as long as it was in the
        # heap, up to 64*T1 (Timers J, L, M): one more object per transaction for every
        # collection to walk.
        self._heap: list[tuple[float, int]] = []
        self._timer_owner: dict[int, Transaction] = {}
        self._scheduled: dict[Transaction, tuple[float, int]] = {}  # its live heap entry
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._client) + len(self._server)

    def sizes(self) -> dict[str, int]:
        """Entries of each of the table's maps, for leak hunting (``StatusView.tables``,
        benchmarks/soak.py): the timer heap keeps superseded entries until their deadline
        passes, so it may be larger than the timers scheduled, but never grows with calls."""
        return {
            "sip_client_transactions": len(self._client),
            "sip_server_transactions": len(self._server),
            "sip_merged_request_index": len(self._merging),
            "sip_unanswered_requests": len(self._unanswered),
            "sip_transaction_timers": len(self._scheduled),
            "sip_transaction_timer_heap": len(self._heap),
        }

    # -- TU side --

    def send_request(
        self, request: Request, *, peer: Hop, now: float
    ) -> tuple[ClientTransaction, list[Output]]:
        """Start a client transaction for ``request`` towards ``peer``.

        ACK is never sent this way: the ACK for a non-2xx is the INVITE transaction's, and the
        ACK for a 2xx is sent by the TU straight to the transport (RFC 3261 §13.2.2.4, §17.1.1.3).
        """
        if request.method == "ACK":
            raise LocalSipError("ACK is not sent through a client transaction")
        cls: type[ClientTransaction] = (
            ClientInviteTransaction if request.method == "INVITE" else ClientNonInviteTransaction
        )
        key = client_key(request)
        if key is not None and key in self._client:
            raise LocalSipError("a client transaction with this branch and method exists")
        txn, outputs = cls.start(request, peer=peer, now=now, timers=self.timers, key=key)
        self._client[txn.key] = txn
        if request.method == "CANCEL" and key is not None:
            # The INVITE it cancels has the same branch (RFC 3261 §9.1): bound its wait.
            invite = self._client.get(("INVITE", *key[1:]))
            if isinstance(invite, ClientInviteTransaction):
                invite.cancel_sent(now=now)
                self._after(invite, [])
        return txn, self._after(txn, outputs)

    def send_response(
        self, transaction: ServerTransaction, response: Response, *, now: float
    ) -> list[Output]:
        """Pass the TU's response to ``transaction``."""
        outputs = self._run(transaction, lambda: transaction.send_response(response, now=now))
        if transaction.final_status is not None and self._unanswered:
            self._unanswered.pop(transaction, None)  # answered: no longer bounded
        return outputs

    def received_at(self, transaction: ServerTransaction) -> float | None:
        """When the request of ``transaction``, a non-INVITE the TU has not answered finally
        yet, arrived; None for any other (an INVITE, one answered or ended)."""
        bound = self._unanswered.get(transaction)
        return None if bound is None else bound - self.timers.unanswered

    def give_up(self, transaction: ServerTransaction, *, now: float) -> list[Output]:
        """The TU gives a non-INVITE request up without a final response (Input.GIVEN_UP:
        its client's Timer F ran out, RFC 4320 §4.2): the transaction ends now, reported as
        terminated only, not as unanswered (nothing is wrong with the TU)."""
        self._unanswered.pop(transaction, None)
        return self._run(
            transaction, functools.partial(transaction.process_input, _I_GIVEN_UP, now=now)
        )

    def transport_error(self, transaction: Transaction, *, now: float) -> list[Output]:
        """The transport could not send a message of ``transaction``."""
        return self._run(transaction, lambda: transaction.transport_error(now=now))

    def find_cancel_target(self, cancel: Request) -> ServerInviteTransaction | None:
        """The INVITE server transaction a CANCEL refers to (RFC 3261 §9.2: same matching, but
        with the INVITE method), if it is still alive."""
        txn = self._server.get(_server_key(cancel, "INVITE"))
        return txn if isinstance(txn, ServerInviteTransaction) else None

    # -- transport side --

    def receive_response(self, response: Response, *, now: float) -> list[Output]:
        """Route a parsed response to its client transaction (§17.1.3) or report it unmatched."""
        key = client_key(response)
        txn = self._client.get(key) if key is not None else None
        if txn is None:
            return [UnmatchedResponse(response)]
        return self._run(txn, lambda: txn.receive_response(response, now=now))

    def has_server_transaction(self, request: Request) -> bool:
        """Whether a server transaction already serves ``request`` (it is a retransmission)."""
        return server_key(request) in self._server

    def has_server_transaction_key(self, key: TransactionKey) -> bool:
        """Whether a server transaction with ``key`` is alive (a request too malformed to
        parse can be looked up by the fields salvaged from it)."""
        return key in self._server

    def receive_request(
        self, request: Request, *, source: Hop, now: float, beyond_limit: int = 0
    ) -> list[Output]:
        """Route a parsed request (top Via already stamped) to its server transaction (§17.2.3),
        creating one for a new request; an ACK that matches none is reported for the TU.

        ``beyond_limit``: how many transactions past ``max_server_transactions`` a new request
        the TU must serve all the same may still create (an emergency call's INVITE)."""
        key = server_key(request)
        txn = self._server.get(key)
        if request.method == "ACK":
            if txn is not None and _ack_matches(txn, request):
                return self._run(txn, lambda: txn.receive_request(request, now=now))
            return [AckReceived(None, request)]
        if txn is not None:
            return self._run(txn, lambda: txn.receive_request(request, now=now))
        if len(self._server) >= self.max_server_transactions + beyond_limit:
            raise TransactionLimitReached()
        merge = merge_key(request)
        merged = merge is not None and merge in self._merging
        outputs: list[Output]
        new: ServerTransaction
        if request.method == "INVITE":
            new, outputs = ServerInviteTransaction.start(
                request,
                peer=source,
                now=now,
                timers=self.timers,
                send_trying=self._send_trying and not merged,
                key=key,
            )
        else:
            new, outputs = ServerNonInviteTransaction.start(
                request, peer=source, now=now, timers=self.timers, key=key
            )
        self._server[new.key] = new  # equal to key; one object kept, not two
        if merged:
            # RFC 3261 §8.2.2.2: SHOULD answer 482. Its own transaction absorbs the request's
            # retransmissions (re-sending the 482) and, for an INVITE, takes the ACK.
            self.merged_requests += 1
            response = make_response(request, 482, MERGED_REASON, to_tag=_merged_tag(key))
            return self._after(new, new.send_response(response, now=now))
        if merge is not None:
            new.merge_key = merge
            self._merging[merge] = new
        if isinstance(new, ServerNonInviteTransaction):
            self._unanswered[new] = now + self.timers.unanswered
        return self._after(new, outputs)

    # -- timers --

    def get_timer(self) -> float | None:
        """The earliest deadline of any transaction, or None."""
        deadline = self._heap_timer()
        if self._unanswered:
            bound = next(iter(self._unanswered.values()))
            if deadline is None or bound < deadline:
                return bound
        return deadline

    def _heap_timer(self) -> float | None:
        # A live entry's transaction is always one the table holds: a transaction is scheduled
        # only by _after, which forgets instead a terminated one, and leaves the table only by
        # _forget, which unschedules it; a terminated transaction never leaves Terminated, so
        # the TU handing it back (send_response, give_up, transport_error) forgets it again
        # (tests/unit/sip/test_transaction_table.py::
        # test_every_scheduled_transaction_is_one_the_table_holds).
        heap = self._heap
        owners = self._timer_owner
        while heap:
            entry = heap[0]
            if entry[1] in owners:
                return entry[0]
            heapq.heappop(heap)  # superseded or unscheduled
        return None

    def handle_timer(self, *, now: float) -> list[Output]:
        """Fire every transaction timer due at ``now``, then give up on every non-INVITE
        request the TU has left unanswered for :attr:`TransactionTimers.unanswered`."""
        outputs: list[Output] = []
        while (deadline := self._heap_timer()) is not None and deadline <= now:
            _, sequence = heapq.heappop(self._heap)
            txn = self._timer_owner.pop(sequence)
            del self._scheduled[txn]
            outputs += self._run(txn, functools.partial(txn.handle_timer, now=now))
        unanswered = self._unanswered
        while unanswered:
            txn, bound = next(iter(unanswered.items()))
            if bound > now:
                break
            del unanswered[txn]
            outputs += self._run(txn, functools.partial(txn.process_input, _I_UNANSWERED, now=now))
        return outputs

    # -- bookkeeping --

    def _run(self, txn: Transaction, call: Callable[[], list[Output]]) -> list[Output]:
        try:
            outputs = call()
        except TransactionStateError as err:
            err.transaction = txn
            self._forget(txn)  # the TU's misuse ended it; the TU drops its own entries
            raise
        return self._after(txn, outputs)

    def _after(self, txn: Transaction, outputs: list[Output]) -> list[Output]:
        if txn.terminated:
            self._forget(txn)
            return outputs
        deadline = txn.get_timer()
        if deadline is None:
            self._unschedule(txn)
        else:
            entry = self._scheduled.get(txn)
            if entry is None or entry[0] != deadline:
                if entry is not None:
                    del self._timer_owner[entry[1]]  # its heap entry is stale from now on
                entry = (deadline, next(self._sequence))
                self._scheduled[txn] = entry
                self._timer_owner[entry[1]] = txn
                heapq.heappush(self._heap, entry)
        return outputs

    def _unschedule(self, txn: Transaction) -> None:
        entry = self._scheduled.pop(txn, None)
        if entry is not None:
            del self._timer_owner[entry[1]]

    def _forget(self, txn: Transaction) -> None:
        self._unschedule(txn)
        if isinstance(txn, ClientTransaction):
            if self._client.get(txn.key) is txn:
                del self._client[txn.key]
        elif self._server.get(txn.key) is txn:
            del self._server[txn.key]
            merge = txn.merge_key
            if merge is not None and self._merging.get(merge) is txn:
                del self._merging[merge]
            if self._unanswered:
                self._unanswered.pop(txn, None)  # a transport error, the TU's misuse


def key_text(key: TransactionKey) -> str:
    """The key as log lines show it: the text its named tuple's repr gave (sessions 1-36), so
    that the lines an operator's scripts match ("transaction TransactionKey(method='INVITE',
    ...): TransactionTimeout") read the same after the upgrade that made it a plain tuple."""
    method, branch, sent_by, legacy = key
    return (
        f"TransactionKey(method={method!r}, branch={branch!r}, sent_by={sent_by!r}, "
        f"legacy={legacy!r})"
    )


def _merged_tag(key: TransactionKey) -> str:
    """The To tag of a merged request's 482 (a final response needs one, §8.2.6.2): derived from
    its transaction key, so unique to it, without the TU's tag source."""
    # The same text as before the key became a plain tuple, so the tag of a 482 is too.
    return hashlib.blake2b(key_text(key).encode(), digest_size=8).hexdigest()


def _ack_matches(txn: ServerTransaction, ack: Request) -> bool:
    """RFC 2543 matching of an ACK also needs its To tag to be the one we answered with
    (§17.2.3); an RFC 3261 branch is enough on its own."""
    if txn.key[KEY_LEGACY] is None:
        return True
    if txn.final_status is None:
        return False
    try:
        return txn.final_to_tag == ack.to.tag
    except SipParseError:
        return False
