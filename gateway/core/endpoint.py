"""The SIP endpoint: the trio adapter between transports and the sans-IO SIP layer.

One task reads the bounded inbound queue (``Gateway.deliver``), parses each message as untrusted
input and answers what the gateway itself answers: malformed requests get 400 (or 505/416/513)
with a reason phrase naming the defect, malformed responses are dropped (RFC 3261 §18.1.2), and
OPTIONS addressed to the gateway get 200 (RFC 3261 §11.2). Nothing a peer sends can end this task:
an unexpected exception while handling one message is logged with the flow and counted, and the
next message is served.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol, cast

import attrs
import trio

from gateway.core.auth.client import authorize
from gateway.core.calls.limits import CallRate
from gateway.core.inbound import InboundHooks, inbound_hooks
from gateway.core.interfaces import (
    DeviceProfile,
    LegInfo,
    OutboundMessage,
    RtcpCapture,
    SipCapture,
)
from gateway.core.logs import log_exception, transport_error_text
from gateway.core.media.session import ORIGIN_USERNAME
from gateway.core.plugins import HookFailures, raising_plugin, who
from gateway.core.sdp.body import SDP, sdp_of
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.offer_answer import refusing_answer
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sdp.serializer import serialize_sdp
from gateway.core.sip import grammar
from gateway.core.sip.dialog import SIPS_NOT_ALLOWED, Dialog, contact_must_be_sips
from gateway.core.sip.errors import LocalSipError, RemoteSipError, SipError
from gateway.core.sip.events import ALLOW_EVENTS
from gateway.core.sip.headers import NameAddr, Via
from gateway.core.sip.message import Headers, Request, Response, default_reason, make_response
from gateway.core.sip.overload import QueueDelayLimit
from gateway.core.sip.parser import parse_message_untrusted, salvage_request_headers
from gateway.core.sip.scanners import UserAgentFilter
from gateway.core.sip.serializer import serialize_message
from gateway.core.sip.transaction import (
    AckReceived,
    ClientInviteTransaction,
    ClientTransaction,
    Output,
    RequestReceived,
    ResendResponse,
    ResponseReceived,
    SendRequest,
    SendResponse,
    ServerTransaction,
    Transaction,
    TransactionKey,
    TransactionLimitReached,
    TransactionStateError,
    TransactionTable,
    TransactionTerminated,
    TransactionTimeout,
    TransactionTimers,
    TransactionUnanswered,
    TransportFailed,
    UnmatchedResponse,
    key_text,
)
from gateway.core.sip.uri import SipUri, redact_password
from gateway.core.sip.via import (
    Hop,
    has_rfc3261_branch,
    make_via,
    new_branch,
    response_target,
    stamp_received,
    stamp_request,
)
from gateway.core.transport.flows import Address, Flow, format_address
from gateway.core.transport.inbound import InboundQueue

if TYPE_CHECKING:
    from gateway.core.config import TrunkConfig
    from gateway.core.gateway import Gateway
    from gateway.core.media.taps import CallTaps

log = logging.getLogger(__name__)

# What `log_level = "debug"` shows of each SIP message received and sent (_trace): its first
# line, Call-ID and CSeq, bounded; never another header (Authorization holds a digest answer).
# A line ends in CRLF or, from a sender that ignores RFC 3261 §7.5, in LF or CR alone: the trace
# comes before the parser, and must show no more of such a message.
_TRACE_CALL_ID = re.compile(rb"\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]{0,100})", re.IGNORECASE)
_TRACE_CSEQ = re.compile(rb"\ncseq[ \t]*:[ \t]*([^\r\n]{0,60})", re.IGNORECASE)
_TRACE_LINE = 200
# How much of the first line the password is looked for in, before it is cut to _TRACE_LINE:
# a cut before the "@" would leave the password unrecognised (redact_password needs the "@").
_TRACE_REDACTED = 4096


class LegOf(Protocol):
    """The call manager's ``leg_of``: the leg a message goes to, or comes from."""

    def __call__(
        self, message: Request | Response, flow: Flow, *, inbound: bool = False
    ) -> LegInfo | None: ...


NOT_SENT = object()
"""What :meth:`SipEndpoint._outbound` returns for a message a raising hook stopped."""


ALLOWED_METHODS = (
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "OPTIONS",
    "REGISTER",
    "SUBSCRIBE",
    "NOTIFY",
    "MESSAGE",
)
# What every Allow we send outside a dialog lists (RFC 3261 §20.5: the 405's and OPTIONS'
# alike): PUBLISH too while [presence] allow takes it (RFC 3903), see SipEndpoint.allow.
ALLOW = ", ".join(ALLOWED_METHODS)
ALLOW_WITH_PUBLISH = f"{ALLOW}, PUBLISH"
# RFC 3262 (100rel): a caller that requires reliable 1xx responses gets them; RFC 4028 (timer):
# session timers on each leg (calls/session_timers.py).
SUPPORTED_EXTENSIONS: tuple[str, ...] = ("100rel", "timer")
# RFC 3891: INVITEs with Replaces are call pickups (calls/pickup.py) while a
# [[dialog_watch_groups]] group has pickup = true; a phone may require the extension then.
PICKUP_EXTENSIONS = (*SUPPORTED_EXTENSIONS, "replaces")

# RFC 3261 §18.1.1: requests larger than this go over TCP when the path MTU is unknown.
UDP_SIZE_LIMIT = 1300
# The largest UDP payload over IPv4: 65535 minus the 20-byte IP and 8-byte UDP headers (RFC 768;
# IPv6 allows 20 bytes more, not counted). sendto() of a larger datagram fails with EMSGSIZE.
MAX_UDP_PAYLOAD = 65_507
# What the gateway's answers add to the fields a response echoes (Via, From, To, Call-ID, CSeq,
# RFC 3261 §8.2.6.2): status line, To tag, Contact, Allow, Supported, a digest challenge, an SDP
# answer. A UDP request whose 513 would leave less room than this is refused before any work is
# done for it (SipEndpoint._answerable_over_udp). A smaller request is not measured: what a
# response echoes is part of the request (plus Via's received and rport, a To tag: a few dozen
# bytes, within the allowance).
RESPONSE_ALLOWANCE = 8_192
ANSWERABLE_UDP_REQUEST = MAX_UDP_PAYLOAD - RESPONSE_ALLOWANCE
# Refusals and drops of such requests are logged at most this often (s), with their counts.
TOO_LARGE_LOG_INTERVAL = 1.0

# Server transactions alive at once; past it new requests get a stateless 503. A server
# transaction outlives its request by 64*T1 = 32 s (Timer J for BYE, RFC 6026 Timer L for an
# answered INVITE; a challenged INVITE by Timer I, T4 = 5 s, after its ACK): 600 calls/s keeps
# about 600 * (32 + 32 + 5) = 41,400 alive. The table's own default (10,000) capped a steady load
# near 150 calls/s.
MAX_SERVER_TRANSACTIONS = 65_536

# Responses one client transaction may queue for its owner; a transaction sees a handful.
CLIENT_RESPONSE_QUEUE = 32

# Sessions (To tags) of one INVITE that the endpoint or its owner BYEs once each, answered
# after the §9.1 give-up (ClientRequest._first_late_answer) or after another dialog's 2xx
# (ClientRequest._another_dialog): a fork or two in practice; past it, their 2xx are only
# ACKed, so a callee inventing tags cannot make us open a BYE transaction per 2xx.
MAX_LATE_ANSWERS = 8
# Dialogs (To tags) of one INVITE whose highest CSeq sent the endpoint keeps (PRACK, UPDATE,
# INFO in early dialogs: ClientRequest._note_cseq); past it, the highest over them all.
MAX_DIALOG_CSEQS = 16
# Why the endpoint BYEs a session nobody holds (RFC 3326 Reason, in the call's BYE style,
# calls/base.py Call._bye; cause 200 as the call's own BYE of a fork answering too late; a
# trunk with a PSTN interworking gets Q.850 cause 16 "normal call clearing" beside it).
GIVEN_UP = "answered after the call was given up"
ANSWERED_ELSEWHERE = "call completed elsewhere"
ALREADY_FAILED = "call already failed"
Q850_NORMAL_CLEARING = 16
# Tasks ACKing and BYEing sessions nobody holds at once (SipEndpoint._off_task). That work may
# have to connect again (the INVITE's TCP or TLS connection has closed: up to connect_timeout
# plus a handshake), so it runs beside the endpoint's task, never in it; past the bound (a flood
# of forged 2xx) the 2xx is dropped with a log line: its callee re-sends it (RFC 3261 §13.3.1.4).
MAX_ORPHAN_TASKS = 64
# Such drops are logged at most this often (s), with the count since the last line.
ORPHAN_DROP_LOG_INTERVAL = 60.0

# Requests refused when they waited too long (gateway/core/sip/overload.py): those that start
# new work, a call, a registration, a subscription or a relayed message. Dialog requests (BYE,
# re-INVITE), ACK, CANCEL and OPTIONS are always served: they end or keep up calls already
# accepted, or cost less to answer than to refuse.
SHED_METHODS = frozenset({"INVITE", "REGISTER", "SUBSCRIBE", "MESSAGE", "PUBLISH"})
# Requests outside a dialog that the subscription, message and presence layers answer.
NON_CALL_METHODS = frozenset({"SUBSCRIBE", "NOTIFY", "MESSAGE", "PUBLISH"})
# Requests outside a dialog that the SIPS check of _dispatch leaves alone: INVITE is checked by
# CallManager.invite (an emergency call goes on); ACK and CANCEL follow their INVITE.
SIPS_CHECKED_ELSEWHERE = frozenset({"INVITE", "ACK", "CANCEL"})
# Overload refusals are logged at most this often (s), with the count since the last line.
OVERLOAD_LOG_INTERVAL = 1.0
# Requests dropped for a scanner's User-Agent ([sip] drop_user_agents) are logged at most this
# often (s), with the count since the last line: a scan sends thousands.
SCANNER_LOG_INTERVAL = 60.0
# How much of a dropped request's User-Agent (the scanner's own text) goes into that line.
SCANNER_LOG_USER_AGENT = 64
# What a draining gateway (Gateway.drain) still serves outside a dialog: an INVITE goes on to the
# call layer, which refuses it but to an emergency number; an ACK and a CANCEL belong to an INVITE
# transaction already under way. Every other request outside a dialog starts work on this node
# (a registration, a subscription, a relayed message, a probe's "up") and gets 503, so that the
# phone or proxy takes it to another node (RFC 3263 §4.3); requests within dialogs are served.
SERVED_WHILE_DRAINING = frozenset({"INVITE", "ACK", "CANCEL"})
# New INVITEs to an emergency number that overload control lets through regardless, per second
# (a token bucket with a second's burst). Overload refuses whoever comes late; a call to 112 must
# not be one of them, while the bound keeps a flood of INVITEs to 112 from switching the
# protection off. Far above what a provider's subscribers dial at once.
EMERGENCY_PASSES_PER_SECOND = 10.0
# Server transactions an emergency call's requests may still create past MAX_SERVER_TRANSACTIONS:
# the passes above, each challenged (two INVITEs) and ended (a BYE), alive 64*T1 = 32 s each.
EMERGENCY_TRANSACTIONS = 1024


class CallLayer(Protocol):
    """The transaction user for calls (the B2BUA): what the endpoint hands it."""

    def invite(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None:
        """A new INVITE outside any dialog; the 100 Trying is already sent."""

    def in_dialog(self, transaction: ServerTransaction, request: Request, flow: Flow) -> bool:
        """A request with a To tag; False when no dialog matches (the endpoint answers 481)."""

    def knows_dialog(self, request: Request) -> bool:
        """Whether a request with a To tag is in a dialog of a call (not handed over)."""

    def cancel(self, invite: ServerTransaction, request: Request) -> None:
        """A CANCEL matched an INVITE server transaction (the CANCEL is answered 200 already)."""

    def ack(self, request: Request, flow: Flow) -> None:
        """An ACK for a 2xx (its own transaction, RFC 3261 §17.1.1.3)."""

    def calls_emergency_number(self, invite: Request) -> bool:
        """Whether a new INVITE dials an emergency number (``[numbering] emergency_numbers``)."""

    def in_emergency_dialog(self, request: Request) -> bool:
        """Whether a request with a To tag belongs to a call to an emergency number."""

    def is_psap_callback(self, invite: Request, flow: Flow) -> bool:
        """Whether a new INVITE is an emergency service calling back (RFC 7090)."""


class SubscriptionLayer(Protocol):
    """The transaction user for message-summary subscriptions (calls/subscriptions.py)."""

    def subscribe(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None:
        """A SUBSCRIBE outside any dialog."""

    def in_dialog(self, transaction: ServerTransaction, request: Request, flow: Flow) -> bool:
        """A request with a To tag no call took; False when no subscription has it either."""

    def knows_dialog(self, request: Request) -> bool:
        """Whether a request with a To tag is in a subscription's dialog (not handed over)."""


class PublishLayer(Protocol):
    """The transaction user for PUBLISH of presence (calls/presence.py)."""

    def publish(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None: ...


class MessageLayer(Protocol):
    """The transaction user for out-of-dialog MESSAGE and NOTIFY (calls/messages.py)."""

    def message(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None: ...

    def notify(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None: ...


class ClientRequest:
    """A request we sent through a client transaction: its responses arrive on ``responses``,
    or, once the owner calls :meth:`forward_to`, in calls of its sink.

    Transaction timeout (Timer B/F) and transport failure arrive as locally made 408 and 503
    responses (RFC 3261 §8.1.3.1), so the owner has one thing to wait for. The channel closes
    when the transaction terminates; a sink is then no longer called.

    The channel is made on first use: an owner with a sink (a call forwarding responses into
    its own event queue) needs neither the channel nor a task reading it, and the client
    transaction of an answered INVITE lives 64*T1 after the call (Timer M, RFC 6026).
    """

    __slots__ = (
        "_answered",
        "_call_id",
        "_closed",
        "_cseq_highest",
        "_cseq_sent",
        "_dialog",
        "_from",
        "_held",
        "_late_answers",
        "_late_offer",
        "_orphan_bye",
        "_receive",
        "_send",
        "_sent_early_answered",
        "_sink",
        "flow",
        "transaction",
        "trunk",
    )

    def __init__(self, transaction: ClientTransaction, flow: Flow) -> None:
        self.transaction = transaction
        self.flow = flow
        self._send: trio.MemorySendChannel[Response] | None = None
        self._receive: trio.MemoryReceiveChannel[Response] | None = None
        self._sink: Callable[[Response], None] | None = None
        self._closed = False
        # The request, when its final response came while the endpoint was still sending it
        # (SipEndpoint.send_request): the transaction let it go before its owner could read it.
        self._sent_early_answered: Request | None = None
        # To tags (at most MAX_LATE_ANSWERS) as tuples, not frozensets: a ClientRequest lives as
        # long as its transaction (64*T1 after an answered INVITE: RFC 6026 Timer M), and the
        # cyclic collector walks every frozenset, an empty one too, while a tuple of strings is
        # untracked at its first collection. Two fresh frozensets each were four of the ~17
        # objects a plain call left for the collector to walk for 32 s.
        self._late_answers: tuple[str, ...] = ()  # _first_late_answer, _another_dialog
        # An INVITE outside a dialog, which 2xx can answer from several dialogs
        # (_another_dialog); the first 2xx's To tag is its owner's dialog. Its Call-ID and
        # From are kept as sent, unparsed (an answered INVITE's transaction lets its request
        # go): the From tag is read once something of its dialogs comes (_dialog_of).
        request = transaction.request
        self._call_id: str | None = None
        self._from = ""
        self._dialog: tuple[str, str | None] | None = None
        # Without SDP (RFC 3261 §13.2.1): its 2xx offers, and an ACK must answer
        # (_ack_orphan_2xx).
        self._late_offer = False
        if request is not None and request.method == "INVITE":
            headers = request.headers
            if _without_tag(headers.get("To")):
                self._call_id = headers.get("Call-ID") or ""
                self._from = headers.get("From") or ""
                self._late_offer = not request.body
        self._answered: str | None = None
        # Dialogs (To tags) whose 2xx the owner ACKed, so holds (_nobodys_answer): a 2xx
        # handed to the owner may still go unread (queued behind a refusal the call ended on).
        self._held: tuple[str, ...] = ()
        # The highest CSeq we sent in each dialog of this INVITE (To tag) and over them all,
        # for our BYE of a session nobody holds (_ack_orphan_2xx, SipEndpoint._note_cseq).
        self._cseq_sent: dict[str, int] | None = None
        self._cseq_highest = 0
        self.trunk: str | None = None
        """The trunk (``[[trunks]] name``) this INVITE went to, named by its owner: the
        endpoint's BYE of a session nobody holds answers its challenges with the trunk's
        credentials and carries a Q.850 cause for its interworking, as a call's BYE does."""
        self._orphan_bye: _OrphanBye | None = None  # this is such a BYE

    @property
    def _dialog_of(self) -> tuple[str, str | None] | None:
        """The Call-ID and From tag of an INVITE outside a dialog (None for any other
        request), read from its From once, when first asked (a 2xx, a request in one of its
        dialogs): not for every INVITE sent."""
        call_id = self._call_id
        if call_id is None:
            return None
        dialog = self._dialog
        if dialog is None:
            dialog = self._dialog = (call_id, grammar.parse_name_addr_untrusted(self._from).tag)
        return dialog

    @property
    def request(self) -> Request:
        """The request sent; kept by its transaction until a final response (RFC 3261 §17.1),
        and here for good when that response came before the send returned."""
        request = self.transaction.request or self._sent_early_answered
        if request is None:
            raise LocalSipError("the transaction has completed and no longer keeps its request")
        return request

    @property
    def responses(self) -> trio.MemoryReceiveChannel[Response]:
        """The responses, in order; the channel ends when the transaction terminates."""
        return self._channel()[1]

    def forward_to(self, sink: Callable[[Response], None] | None) -> None:
        """Call ``sink`` with every response from now on (those already queued first, in
        order), from the endpoint's task; it must not block. None stops forwarding: later
        responses are dropped."""
        if self._receive is not None:
            while sink is not None:
                try:
                    sink(self._receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            self._receive.close()
        self._sink = sink if not self._closed else None
        if sink is None:
            self._closed = True

    def _channel(
        self,
    ) -> tuple[trio.MemorySendChannel[Response], trio.MemoryReceiveChannel[Response]]:
        if self._send is None or self._receive is None:
            # Not open_memory_channel[Response](...): the subscripted alias's call costs more
            # (typing's __call__ and a caught AttributeError); the attributes are typed.
            self._send, self._receive = trio.open_memory_channel(CLIENT_RESPONSE_QUEUE)
            if self._closed:
                self._send.close()
        return self._send, self._receive

    def _deliver(self, response: Response) -> bool:
        """Hand ``response`` to the owner; False when nobody takes it any more."""
        sink = self._sink
        if sink is not None:
            sink(response)
            return True
        if self._closed:
            log.debug("dropping response %d: its owner is not reading", response.status)
            return False
        try:
            self._channel()[0].send_nowait(response)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            # The owner stopped listening (its call ended) or is flooded: nothing to deliver to.
            log.debug("dropping response %d: its owner is not reading", response.status)
            return False
        return True

    def _first_late_answer(self, response: Response, *, delivered: bool) -> bool:
        """Whether ``response`` is the first 2xx of its dialog (To tag) after the INVITE was
        given up 64*T1 past its CANCEL (RFC 3261 §9.1) that nobody holds: hung up (BYE, §15)
        by the endpoint. One ``delivered`` to the owner is its to take; the owner holds that
        dialog once it ACKs a 2xx of it (:meth:`_owner_acked`), as for
        :meth:`_nobodys_answer`: one handed over but never read (the call ended first) gets
        no ACK, so the callee re-sends it (§13.3.1.4) and a copy finding nobody is BYEd here.
        A copy of a 2xx BYEd already (our ACK was lost) is ACKed again (§13.2.2.4), never
        BYEd again: one BYE per dialog, whose own client transaction re-sends it."""
        txn = self.transaction
        if delivered or not (response.is_success and isinstance(txn, ClientInviteTransaction)):
            return False
        if not txn.given_up:
            return False
        tag = response.to.tag or ""
        return tag not in self._held and self._bye_once(tag)

    def _another_dialog(self, response: Response) -> bool | None:
        """Whether ``response`` is a 2xx of another dialog than the first 2xx's, to an INVITE
        outside a dialog: a forking proxy downstream whose targets both answered (RFC 3261
        §13.2.2.4, §16.7 "multiple 2xx"). The owner took the first dialog and never takes
        another, so the endpoint ACKs each copy of such a 2xx in its own dialog (its To tag,
        Contact, Route set) and BYEs the session (§15): True for the first 2xx of that
        dialog, False for a copy of it (our ACK was lost: ACKed again, never BYEd again) or
        one past :data:`MAX_LATE_ANSWERS` dialogs (ACKed only). None for a response the
        owner takes: anything else, the first dialog's 2xx and its copies among them, and a
        2xx of another Call-ID or From tag, which matched the transaction by its branch only
        and is no dialog of ours (§12.1.2; the owner drops it)."""
        dialog_of = self._dialog_of
        if dialog_of is None or not response.is_success:
            return None
        if (response.call_id, response.from_.tag) != dialog_of:
            return None
        tag = response.to.tag or ""
        if self._answered is None:
            self._answered = tag
        if tag == self._answered:
            return None
        return self._bye_once(tag)

    def _bye_once(self, tag: str) -> bool:
        """The rule :meth:`_first_late_answer`, :meth:`_another_dialog` and
        :meth:`_nobodys_answer` share for a 2xx that is the endpoint's to end: True (and the
        dialog noted) for the first 2xx of the dialog with To tag ``tag``;
        False for a copy of it (our ACK was lost: ACKed again, never BYEd again, one BYE per
        dialog) and for a dialog past :data:`MAX_LATE_ANSWERS` (ACKed only)."""
        late = self._late_answers
        if tag in late or len(late) >= MAX_LATE_ANSWERS:
            return False
        self._late_answers = (*late, tag)
        return True

    def _nobodys_answer(self, response: Response, *, delivered: bool) -> bool:
        """Whether ``response``, a 2xx of the first dialog to answer an INVITE outside a
        dialog (:meth:`_another_dialog`), is the first 2xx of a session nobody holds: its
        owner has gone and never ACKed a 2xx of it (a fork's 2xx racing another fork's
        refusal: coming after the call failed on that refusal and stopped listening, or
        queued behind it, so that the call ended without reading it). That session is ours
        to BYE (RFC 3261 §15), once. Being handed the 2xx is not holding it; ACKing it is
        (§13.2.2.4: the UAC core ACKs every 2xx it takes, :meth:`SipEndpoint.send_ack`): a
        copy of a 2xx the owner ACKed is its business (its call BYEs or BYEd the dialog), as
        is a re-INVITE's 2xx. The callee re-sends an unACKed 2xx (§13.3.1.4), so a 2xx the
        owner dropped unread comes again, finding nobody."""
        if self._dialog_of is None or not response.is_success or delivered:
            return False
        if (response.call_id, response.from_.tag) != self._dialog_of:
            return False
        tag = response.to.tag or ""
        return tag not in self._held and self._bye_once(tag)

    def _owner_acked(self, tag: str) -> None:
        """The owner ACKed a 2xx of the dialog with To tag ``tag``: it holds that session."""
        if tag not in self._held and len(self._held) < MAX_LATE_ANSWERS:
            self._held = (*self._held, tag)

    def _note_cseq(self, tag: str, cseq: int) -> None:
        """Note ``cseq``, of a request we sent in the dialog with To tag ``tag`` of this INVITE
        (a PRACK, RFC 3262; an UPDATE or INFO in an early dialog)."""
        sent = self._cseq_sent
        if sent is None:
            sent = self._cseq_sent = {}
        if tag in sent or len(sent) < MAX_DIALOG_CSEQS:
            sent[tag] = max(sent.get(tag, 0), cseq)
        self._cseq_highest = max(self._cseq_highest, cseq)

    def _next_cseq(self, response: Response) -> int:
        """The CSeq of our BYE in the dialog of ``response``, a 2xx to this INVITE: one above
        the highest we sent in it (RFC 3261 §12.2.1.1). The dialog began early if we PRACKed
        a reliable 1xx of it (RFC 3262 §4): the PRACKs took the numbers after the INVITE's,
        and a callee answers a BYE numbered below them 500 (§12.2.2) and keeps the session.
        A dialog past MAX_DIALOG_CSEQS: one above the highest over all, which §12.2.2 has
        the callee accept (a UAS SHOULD take CSeq gaps)."""
        sent = self._cseq_sent or {}
        tag = response.to.tag or ""
        if tag in sent:
            highest = sent[tag]
        elif len(sent) >= MAX_DIALOG_CSEQS:
            highest = self._cseq_highest  # perhaps one of the dialogs not kept
        else:
            highest = 0
        return max(highest, response.cseq.number) + 1

    def _close(self) -> None:
        self._closed = True
        self._sink = None
        if self._send is not None:
            self._send.close()


@attrs.frozen
class _OrphanBye:
    """A BYE of a session nobody holds (SipEndpoint._ack_orphan_2xx): the request as sent,
    the trunk whose credentials answer a challenge to it (RFC 3261 §22.2), and whether this
    is already the BYE sent again with them (one retry)."""

    sent: Request
    trunk: TrunkConfig | None
    retried: bool = False


@attrs.define
class EndpointStatistics:
    received: int = 0
    rejected_malformed: int = 0
    rejected_overload: int = 0
    rejected_draining: int = 0
    # UDP requests whose answer would not fit a datagram: answered 513 or, when not even the
    # 513 fits, dropped (SipEndpoint._answerable_over_udp).
    rejected_too_large: int = 0
    dropped_too_large: int = 0
    emergency_overload_passes: int = 0
    # Requests dropped unanswered for a scanner's User-Agent ([sip] drop_user_agents).
    dropped_user_agent: int = 0
    dropped_malformed_responses: int = 0
    dropped_unmatched_responses: int = 0
    internal_errors: int = 0
    sent: int = 0
    send_errors: int = 0


class SipEndpoint:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.statistics = EndpointStatistics()
        sip = gateway.config.sip
        self.extensions = (
            PICKUP_EXTENSIONS
            if any(group.pickup for group in gateway.config.dialog_watch_groups)
            else SUPPORTED_EXTENSIONS
        )
        """The option tags a request may require (RFC 3261 §8.2.2.3) and OPTIONS lists."""
        self.overload = QueueDelayLimit(
            sip.overload_queue_delay, credentials_limit=max(sip.overload_queue_delay, sip.t1)
        )
        self._overload_logged_at = -math.inf
        self._emergency_passes = CallRate(EMERGENCY_PASSES_PER_SECOND)
        self._refused_since_log = 0
        self._too_large_logged_at = -math.inf
        self._too_large_since_log = (0, 0)  # (answered 513, dropped)
        self.inbound_hooks = inbound_hooks(
            gateway.plugins.pm,
            max_size=sip.max_message_size,
            max_headers=sip.max_headers,
            clock=time.monotonic,
        )
        """The ``gateway_inbound_message`` implementations (gateway/core/inbound.py); None
        while no plugin has one, and then a message costs one test of that None."""
        self._outbound_failures = HookFailures(log, time.monotonic)
        self.user_agents = UserAgentFilter(sip.drop_user_agents) if sip.drop_user_agents else None
        """Scanners' User-Agents, whose requests are dropped (None: drop none)."""
        self._scanner_logged_at = -math.inf
        self._scanners_since_log = 0
        self.transactions = TransactionTable(
            timers=TransactionTimers(t1=sip.t1, t2=sip.t2, t4=sip.t4),
            max_server_transactions=MAX_SERVER_TRANSACTIONS,
        )
        # The flow each server transaction's request arrived over: its responses go back there.
        self._server_flows: dict[Transaction, Flow] = {}
        self._client_requests: dict[Transaction, ClientRequest] = {}
        # Our INVITEs outside a dialog by Call-ID, whose dialogs' CSeqs the requests we send in
        # them (PRACKs) move on (ClientRequest._note_cseq) and whose 2xx the owner ACKs
        # (send_ack). By Call-ID alone, so that a request of another Call-ID (most) is looked up
        # without reading its From and To; its From tag is then compared. The gateway makes a
        # Call-ID per INVITE outside a dialog; one sent again with credentials (RFC 3261
        # §22.2, the same Call-ID and From tag) takes its predecessor's place, as before.
        self._invites: dict[str, ClientRequest] = {}
        # The endpoint task's wait for the next message; calls that start transactions from
        # their own tasks pull its deadline in so the new transaction's timers fire on time.
        self._wait: trio.CancelScope | None = None
        # Where the ACKs and BYEs of sessions nobody holds run (_off_task), while run() runs.
        self._orphan_nursery: trio.Nursery | None = None
        self._orphan_tasks = 0
        self._orphan_drop_logged_at = -math.inf
        self._orphans_dropped_since_log = 0
        self.calls: CallLayer | None = None
        self.subscriptions: SubscriptionLayer | None = None
        self.messages: MessageLayer | None = None
        self.presence: PublishLayer | None = None
        """Set while ``[presence] allow`` is not "none"; PUBLISH is 405 otherwise, as before."""
        # A DEBUG line per SIP message in and out (_trace): asked of logging once, as the level
        # is set before the gateway starts and never changes while it runs (voipgw run), so
        # each message costs an attribute read, not a logger look-up.
        self.trace_messages = log.isEnabledFor(logging.DEBUG)
        self.captures: tuple[SipCapture, ...] = tuple(
            capture for _, capture in gateway.plugins.sip_captures.items()
        ) + tuple(
            # A media tap may be a capture agent too (interception reports REGISTERs).
            tap
            for _, tap in gateway.plugins.media_taps.items()
            if callable(getattr(tap, "message", None))
        )
        """Capture agents (HEP): a copy of every message in and out (empty: no cost)."""
        self.rtcp_captures: tuple[RtcpCapture, ...] = tuple(
            cast("RtcpCapture", capture)
            for capture in self.captures
            if getattr(capture, "rtcp_enabled", False)
        )
        """Capture agents that take calls' RTCP reports too (``rtcp_report``: HEP type 5)."""
        self.handling_bytes: bytes | None = None
        """The bytes of the request being handled (a new call's INVITE, while it is made)."""
        self.leg_of: LegOf | None = None
        """The call leg a message we send goes to (``inbound=True``: comes from), for
        ``gateway_outbound_message`` (``OutboundMessage.leg``) and ``gateway_inbound_message``
        (``InboundMessage.leg``); set by the call manager, asked only while a plugin implements
        one of those hooks."""
        self.sip_taps: dict[tuple[str, str | None], tuple[CallTaps, str]] = {}
        """(Call-ID, tag) -> the call's taps that want its SIP (an interception) and the leg
        ("a", "b") of that dialog: each message in and out is copied to them (empty: no cost).
        The tag is ours in the dialog (a message carries it as From or To tag), or the caller's
        From tag for the A leg's INVITE transaction: a Call-ID alone is not a dialog (a fork
        reaching us twice, a phone reusing one), and another call's messages must not reach
        these taps."""

    def sizes(self) -> dict[str, int]:
        """Entries of the endpoint's tables and its transaction table's, for leak hunting
        (``StatusView.tables``)."""
        return {
            **self.transactions.sizes(),
            "sip_server_flows": len(self._server_flows),
            "sip_client_requests": len(self._client_requests),
            "sip_taps": len(self.sip_taps),
        }

    async def run(
        self,
        inbound: InboundQueue,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve inbound messages and transaction timers from one task, so the sans-IO
        transaction table is never touched concurrently (the UDP sockets are read in this task
        too: gateway/core/transport/inbound.py). The ACKs and BYEs of sessions nobody
        holds, which may have to connect first, run in tasks of a nursery of its own
        (:meth:`_off_task`)."""
        async with trio.open_nursery() as nursery:
            self._orphan_nursery = nursery
            try:
                await self._serve(inbound, task_status)
            finally:
                self._orphan_nursery = None
                inbound.close()

    async def _serve(self, inbound: InboundQueue, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()
        # The clock itself: trio.current_time() reaches it through two more Python calls, and
        # this loop reads the time after every message.
        clock = trio.lowlevel.current_clock()
        # The listeners are bound before the rest of the start (a port taken stops it at once),
        # which can take seconds: trunks named by DNS resolved (up to [dns] timeout), media
        # workers started. What came meanwhile waited for the start, not behind a backlog of
        # ours: overload control (sip/overload.py) counts its wait from here. Before, every
        # phone's REGISTER in that window got 503 "overloaded" and a WARNING said so.
        serving_since = clock.current_time()
        transactions = self.transactions
        while True:
            # One cancel scope for every wait until a transaction timer falls due, not one per
            # message: its deadline is the next timer's while the task waits and infinite while
            # it works, so a deadline never cancels a message half handled. A timer that falls
            # due cancels the scope (trio cannot take a cancellation back): it ends, the timers
            # run, and the next scope begins.
            with trio.CancelScope() as wait:
                taken_without_yield = 0
                while True:
                    try:
                        item = inbound.take()
                    except Exception:
                        # take() reads the UDP sockets in this task: a bug in a datagram
                        # transport's read, a flow's creation or a delivery raises here, and
                        # must not end the endpoint for every call (STYLE.md habit 6). The
                        # datagram is lost; the wait below is a checkpoint while sources are
                        # ready, so a bug that repeats does not hold other tasks up.
                        self.statistics.internal_errors += 1
                        log_exception(log, "internal error reading a datagram socket")
                        item = None
                    if item is None:
                        taken_without_yield = 0
                        deadline = transactions.get_timer()
                        if deadline is not None:
                            wait.deadline = deadline
                        self._wait = wait
                        try:
                            await inbound.wait()
                        finally:
                            self._wait = None
                        if wait.deadline != math.inf:
                            wait.deadline = math.inf
                        if wait.cancel_called:
                            # The deadline passed as a message woke the task: the message
                            # waits for the next scope (a checkpoint in this one would raise).
                            break
                        continue
                    # A message already queued is taken without a wait; every 16th lets the
                    # call tasks run, so a burst does not hold them up.
                    taken_without_yield += 1
                    if taken_without_yield % 16 == 0:
                        await trio.lowlevel.checkpoint()
                    data, flow, arrived = item
                    self.statistics.received += 1
                    waited = clock.current_time() - max(arrived, serving_since)
                    await self._guarded(self.handle(data, flow, waited=waited), flow)
                    now = clock.current_time()
                    deadline = transactions.get_timer()
                    if deadline is not None and deadline <= now:
                        await self._guarded(self._act(transactions.handle_timer(now=now)), None)
            now = clock.current_time()
            deadline = transactions.get_timer()
            if deadline is not None and deadline <= now:
                await self._guarded(self._act(transactions.handle_timer(now=now)), None)

    async def _guarded(self, work: Awaitable[None], flow: Flow | None) -> None:
        try:
            await work
        except Exception:
            # A bug, not the peer's fault; keep serving everyone else (STYLE.md habit 6).
            self.statistics.internal_errors += 1
            log_exception(
                log, "internal error handling SIP from %s", flow.key if flow else "timers"
            )

    async def _off_task(self, work: Callable[[], Awaitable[None]]) -> None:
        """Run ``work`` (an ACK or BYE of a session nobody holds) in a task of the endpoint's
        own nursery: it may open a connection first (:meth:`flow_to`, up to connect_timeout
        and a TLS handshake), and the endpoint's task serves every call. At most
        :data:`MAX_ORPHAN_TASKS` at once; past it the work is dropped with a log line. Run
        here when the endpoint is not running (a test driving :meth:`handle`)."""
        nursery = self._orphan_nursery
        if nursery is None:
            await work()
            return
        if self._orphan_tasks >= MAX_ORPHAN_TASKS:
            self._orphans_dropped_since_log += 1
            now = trio.current_time()
            if now - self._orphan_drop_logged_at >= ORPHAN_DROP_LOG_INTERVAL:
                log.warning(
                    "%d ACK or BYE of a session nobody holds dropped: %d already under way",
                    self._orphans_dropped_since_log,
                    MAX_ORPHAN_TASKS,
                )
                self._orphan_drop_logged_at = now
                self._orphans_dropped_since_log = 0
            return
        self._orphan_tasks += 1
        nursery.start_soon(self._orphan_task, work)

    async def _orphan_task(self, work: Callable[[], Awaitable[None]]) -> None:
        try:
            await work()
        except Exception:
            # A bug; the endpoint and every call go on (STYLE.md habit 6).
            self.statistics.internal_errors += 1
            log_exception(log, "internal error acknowledging a session nobody holds")
        finally:
            self._orphan_tasks -= 1

    def flow_closed(self, flow: Flow) -> None:
        log.debug("flow closed: %s", flow.key)

    # -- inbound ------------------------------------------------------------------------------

    async def handle(self, data: bytes, flow: Flow, *, waited: float = 0.0) -> None:
        """One message from ``flow``, which waited ``waited`` seconds since it arrived."""
        if self.captures:
            self._capture(data, flow.transport, flow.remote, flow.local)
        if self.trace_messages:  # before parsing: an unparsable one is traced too
            log.debug("SIP in %s: %s", flow.key, _trace(data))
        config = self.gateway.config.sip
        try:
            message = parse_message_untrusted(
                data, max_size=config.max_message_size, max_headers=config.max_headers
            )
        except RemoteSipError as err:
            await self._reject_unparsable(data, flow, err)
            return
        now = trio.current_time()
        if isinstance(message, Response):
            if self.sip_taps:  # before what it causes (the ACK of a non-2xx final response)
                self._copy_to_call(message, data, flow.transport, flow.remote, flow.local, True)
            hooks = self.inbound_hooks
            if hooks is not None:
                fixed = self._inbound(hooks, message, flow)
                assert isinstance(fixed, Response)  # the hooks keep a response a response
                message = fixed
            await self._act(self.transactions.receive_response(message, now=now))
            return
        user_agents = self.user_agents
        if user_agents is not None:
            user_agent = message.headers.get("User-Agent")
            if (
                user_agent is not None
                and user_agents.matches(user_agent)
                and not self.gateway.is_trunk_address(flow.remote[0])
            ):
                self._drop_scanner(message, user_agent, flow, now)
                return
        # RFC 3261 §18.2.1 / RFC 3581: remember where the request really came from.
        hop = _hop(flow)
        request = stamp_request(message, hop)
        if (
            len(data) > ANSWERABLE_UDP_REQUEST
            and not flow.reliable
            and not await self._answerable_over_udp(request, len(data), flow, now)
        ):
            return
        if (
            request.method in SHED_METHODS
            and request.to.tag is None
            and self.overload.too_late(waited, credentials=_has_credentials(request))
            and not self.transactions.has_server_transaction(request)
            and not self._emergency_passes_overload(request, flow, now)
        ):
            await self._refuse_overloaded(request, flow, waited, now)
            return
        hooks = self.inbound_hooks
        if hooks is not None:
            # After the checks above, which must stay cheap, and before the transaction layer:
            # gateway/core/inbound.py.
            fixed = self._inbound(hooks, request, flow)
            assert isinstance(fixed, Request)  # the hooks keep a request a request
            request = fixed
        try:
            outputs = self.transactions.receive_request(request, source=hop, now=now)
        except TransactionLimitReached as err:
            if not self._emergency_passes_limit(request, flow, now):
                log.warning("transaction limit reached: answering %s statelessly", flow.key)
                await self.send_response(
                    make_response(request, err.status or 503, err.reason, to_tag=self._tag()),
                    flow,
                )
                return
            outputs = self.transactions.receive_request(
                request, source=hop, now=now, beyond_limit=EMERGENCY_TRANSACTIONS
            )
        if self.sip_taps:
            self._copy_to_call(request, data, flow.transport, flow.remote, flow.local, True)
        # A new call's INVITE is copied once dispatch has made the call (and its taps), before
        # anything is sent for it: _dispatch reads this.
        self.handling_bytes = data
        try:
            await self._act(outputs, flow)
        finally:
            self.handling_bytes = None

    def _inbound(
        self, hooks: InboundHooks, message: Request | Response, flow: Flow
    ) -> Request | Response:
        """``message`` as the ``gateway_inbound_message`` hooks leave it, with the leg it came
        from and its device when known."""
        leg = self.leg_of(message, flow, inbound=True) if self.leg_of is not None else None
        device: DeviceProfile | None = None
        if leg is not None:
            device = leg.device
        elif isinstance(message, Request):
            device = self.gateway.devices.of_user_agent(message.headers.get("User-Agent"))
        return hooks.apply(message, flow, leg=leg, device=device)

    def _emergency_passes_limit(self, request: Request, flow: Flow, now: float) -> bool:
        """Whether a request past ``MAX_SERVER_TRANSACTIONS`` is served all the same, within
        :data:`EMERGENCY_TRANSACTIONS` more: a new INVITE to an emergency number (within
        :data:`EMERGENCY_PASSES_PER_SECOND`, as past overload control), or a request in the
        dialog of an emergency call already up (its BYE must reach the other side)."""
        calls = self.calls
        if calls is None or request.method == "ACK":
            return False
        if request.to.tag is not None:
            if not calls.in_emergency_dialog(request):
                return False
            self.statistics.emergency_overload_passes += 1
            return True
        return self._emergency_passes_overload(request, flow, now)

    def _emergency_passes_overload(self, request: Request, flow: Flow, now: float) -> bool:
        """Whether a late new ``request`` is served all the same: an INVITE to an emergency
        number or a PSAP callback (RFC 7090), within :data:`EMERGENCY_PASSES_PER_SECOND`. It is
        still authenticated and routed like any call (a 407 first for an account, as for any
        INVITE)."""
        calls = self.calls
        if request.method != "INVITE" or calls is None:
            return False
        if not (calls.calls_emergency_number(request) or calls.is_psap_callback(request, flow)):
            return False
        if not self._emergency_passes.allow(now):
            return False
        self.statistics.emergency_overload_passes += 1
        log.warning(
            "SIP overloaded: serving a late emergency INVITE from %s all the same",
            format_address(flow.remote),
        )
        return True

    async def _refuse_overloaded(
        self, request: Request, flow: Flow, waited: float, now: float
    ) -> None:
        """A new INVITE or REGISTER that waited too long: a stateless 503 (RFC 3261 §21.5.4),
        with no transaction, no call and no authentication, so refusing costs far less than
        serving. A retransmission of a request already being served is not refused (the caller
        checks). Without Retry-After (the default) the client treats it as a 500 for this
        request only; with it, a proxy stops sending anything to the gateway for that long
        (§21.5.4), which RFC 6357 §5 warns turns a slight overload into all-or-nothing."""
        self.statistics.rejected_overload += 1
        self._refused_since_log += 1
        if now - self._overload_logged_at >= OVERLOAD_LOG_INTERVAL:
            log.warning(
                "SIP overloaded: refused %d new INVITE/REGISTER with 503 since the last such "
                "line (%d in all); this one waited %.0f ms to be read, the limit is %.0f ms "
                "([sip] overload_queue_delay; T1 for a request with credentials)",
                self._refused_since_log,
                self.statistics.rejected_overload,
                waited * 1000,
                self.overload.limit * 1000,
            )
            self._overload_logged_at = now
            self._refused_since_log = 0
        retry_after = self.gateway.config.sip.overload_retry_after
        extra = [("Retry-After", str(retry_after))] if retry_after else []
        response = make_response(
            request,
            503,
            "Service Unavailable (overloaded)",
            to_tag=self._tag(),
            extra=extra,
        )
        await self.send_response(response, flow)

    def _drop_scanner(self, request: Request, user_agent: str, flow: Flow, now: float) -> None:
        """A request from a scanner (its User-Agent in ``[sip] drop_user_agents``): no answer,
        no transaction, no authentication (gateway/core/sip/scanners.py). Counted, and logged
        at most every :data:`SCANNER_LOG_INTERVAL` seconds with the count since the last line."""
        self.statistics.dropped_user_agent += 1
        self._scanners_since_log += 1
        if now - self._scanner_logged_at >= SCANNER_LOG_INTERVAL:
            log.info(
                "dropped %d request(s) from SIP scanners ([sip] drop_user_agents) since the "
                "last such line; this one: %s from %s, User-Agent %r",
                self._scanners_since_log,
                request.method,
                format_address(flow.remote),
                user_agent[:SCANNER_LOG_USER_AGENT],
            )
            self._scanner_logged_at = now
            self._scanners_since_log = 0

    async def _answerable_over_udp(
        self, request: Request, received: int, flow: Flow, now: float
    ) -> bool:
        """Whether a large request (``received`` bytes) that came in a UDP datagram is served.
        Its answers echo its Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2) and go back
        over UDP (§18.2.2); one that does not fit a datagram cannot be sent at all (EMSGSIZE).
        Served when its 513 leaves :data:`RESPONSE_ALLOWANCE` for what our answers add (the
        request was large for its body or for fields no response echoes). Otherwise it is
        refused before any work is done for it (a call would ring its callee and never reach
        its caller): with a stateless ``513 Message Too Large`` (§21.5.14) when that fits, else
        dropped, since no answer can reach the sender. An ACK gets no answer: always served."""
        if request.method == "ACK":
            return True
        refusal = make_response(
            request,
            513,
            "Message Too Large (its answer would not fit a UDP datagram)",
            to_tag=None if request.to.tag else self._tag(),
        )
        size = len(serialize_message(refusal))
        if size + RESPONSE_ALLOWANCE <= MAX_UDP_PAYLOAD:
            return True
        answered, dropped = self._too_large_since_log
        if size <= MAX_UDP_PAYLOAD:
            self.statistics.rejected_too_large += 1
            answered += 1
        else:
            self.statistics.dropped_too_large += 1
            dropped += 1
        self._too_large_since_log = (answered, dropped)
        if now - self._too_large_logged_at >= TOO_LARGE_LOG_INTERVAL:
            log.info(
                "UDP requests whose answers would not fit a datagram: %d refused with 513, %d "
                "dropped (not even a 513 fits) since the last such line; this one: %s from %s, "
                "%d bytes, its 513 %d bytes",
                answered,
                dropped,
                request.method,
                format_address(flow.remote),
                received,
                size,
            )
            self._too_large_logged_at = now
            self._too_large_since_log = (0, 0)
        if size <= MAX_UDP_PAYLOAD:
            await self.send_response(refusal, flow)
        return False

    def _timers_changed(self) -> None:
        # Only a wait in progress (the run task between two messages) needs the new deadline:
        # when the run task itself acts, it reads the deadline again after the message, so the
        # table's heap is not asked (about a dozen times per call).
        wait = self._wait
        if wait is None:
            return
        deadline = self.transactions.get_timer()
        if deadline is not None and deadline < wait.deadline:
            wait.deadline = deadline

    async def _act(self, outputs: list[Output], arrival: Flow | None = None) -> None:
        """Carry out what the transaction layer asked for, in order."""
        self._timers_changed()
        for output in outputs:
            try:
                await self._act_one(output, arrival)
            except Exception:
                # One bad output (a bug) must not drop the others: their retransmissions and
                # TransactionTerminated bookkeeping still have to happen.
                self.statistics.internal_errors += 1
                log_exception(log, "internal error acting on %s", type(output).__name__)

    async def _act_one(self, output: Output, arrival: Flow | None) -> None:
        if isinstance(output, RequestReceived):
            assert arrival is not None
            self._server_flows[output.transaction] = arrival
            try:
                await self._dispatch(output.transaction, output.request, arrival)
            except Exception:
                # Nobody took the request (a layer that raises has not: each hands it over as
                # its last step, _dispatch). Answered here, or its transaction, which has no
                # timer in Trying or Proceeding, and its entries would wait for the table's
                # bound (non-INVITE) or for ever (INVITE) while the client retransmits.
                await self.answer_internal_error(output.transaction, output.request)
                raise  # logged and counted by _act, as every other internal error
        elif isinstance(output, SendResponse):
            flow = self._server_flows.get(output.transaction)
            if flow is None and arrival is not None:
                # A transaction that answers by itself (a merged request's 482, RFC 3261
                # §8.2.2.2) never passed its request up: its flow is kept here, so that Timer
                # G's re-sends of that final response go out too (dropped at its end).
                flow = self._server_flows[output.transaction] = arrival
            if flow is not None:
                sent = await self._send_response(output.response, flow)
                # Not for a transaction that ended while the send waited (_forget ran): its
                # entry would stay for good.
                if (
                    sent is not None
                    and not output.retransmission
                    and output.transaction in self._server_flows
                ):
                    data, sent_over = sent
                    if output.transaction.sent_as(output.response, data):
                        # Its retransmissions (ResendResponse) go where it went.
                        self._server_flows[output.transaction] = sent_over
        elif isinstance(output, ResendResponse):
            flow = self._server_flows.get(output.transaction)
            if flow is not None:
                await self._resend_response(output.data, flow)
        elif isinstance(output, SendRequest):
            client = self._client_requests.get(output.transaction)
            if client is not None:
                await self._send_on(output.request, client.flow, output.transaction)
        elif isinstance(output, ResponseReceived):
            client = self._client_requests.get(output.transaction)
            if client is not None and client._orphan_bye is not None:
                await self._orphan_bye_answered(client, client._orphan_bye, output.response)
            elif client is not None:
                another = client._another_dialog(output.response)
                if another is not None:
                    # Another fork's session, which the owner never takes: ours to ACK and BYE.
                    why = ANSWERED_ELSEWHERE if another else None
                    await self._off_task(
                        functools.partial(
                            self._ack_orphan_2xx, output.response, client, hang_up=why
                        )
                    )
                    return
                delivered = client._deliver(output.response)
                if delivered or not (
                    output.response.is_success
                    and isinstance(client.transaction, ClientInviteTransaction)
                ):
                    # Only a 2xx to an INVITE is ACKed (RFC 3261 §13.2.2.4, §17.1.2: a
                    # non-INVITE's response never is) or BYEd here. Most undelivered
                    # responses are the 200 to a call's own BYE, which comes after the
                    # call ended: a task started for it would do nothing.
                    return
                first_late = client._first_late_answer(output.response, delivered=False)
                nobodys = client._nobodys_answer(output.response, delivered=False)
                why = GIVEN_UP if first_late else ALREADY_FAILED if nobodys else None
                await self._off_task(
                    functools.partial(self._ack_orphan_2xx, output.response, client, hang_up=why)
                )
        elif isinstance(output, AckReceived):
            if self.calls is not None and arrival is not None:
                self.calls.ack(output.request, arrival)
        elif isinstance(output, TransactionTimeout | TransportFailed):
            self._fail_client(output)
        elif isinstance(output, TransactionTerminated):
            self._forget(output.transaction)
        elif isinstance(output, TransactionUnanswered):
            # The table gave up on a request no TU answered (a bug): counted and logged as the
            # other internal errors (with no traceback: nothing raised).
            self.statistics.internal_errors += 1
            request = output.transaction.request
            log.error(
                "internal error: %s %s was never answered; its transaction is dropped",
                output.transaction.method,
                request.call_id if request is not None else "",
            )
        elif isinstance(output, UnmatchedResponse):
            self.statistics.dropped_unmatched_responses += 1
            log.debug("dropping unmatched response %d", output.response.status)

    def _forget(self, transaction: Transaction) -> None:
        """Drop the endpoint's entries for a transaction the table has forgotten (it
        terminated, or a TU's misuse ended it: TransactionStateError)."""
        self._server_flows.pop(transaction, None)
        client = self._client_requests.pop(transaction, None)
        if client is not None:
            client._close()
            call_id = client._call_id
            if call_id is not None and self._invites.get(call_id) is client:
                del self._invites[call_id]

    async def answer_internal_error(self, transaction: ServerTransaction, request: Request) -> bool:
        """Answer ``request`` 500 (RFC 3261 §21.5.1) when the code handling it failed before
        anyone took it, or when its owner (a call) has gone without a final response: else
        its sender retransmits until its Timer F or B, and the transaction and its entries
        stay. A bare status line: no Reason, no text of the failure (which may name what it
        failed on). Nothing when it has a final response, or has ended, already. True when
        the 500 went to the transaction."""
        if transaction.final_status is not None or transaction.terminated:
            return False
        try:
            await self.respond(transaction, self._response(request, 500))
        except Exception:
            # A failure of its own (the request's state does not allow one after all) must
            # not hide the first: logged, and the table's bound (non-INVITE) ends it.
            self.statistics.internal_errors += 1
            log_exception(log, "internal error answering %s with 500", request.method)
            return False
        return True

    def _fail_client(self, output: TransactionTimeout | TransportFailed) -> None:
        client = self._client_requests.get(output.transaction)
        if client is None:
            if isinstance(output, TransactionTimeout) and output.timer == "H":
                # RFC 3261 §17.2.1: no ACK for our failure response (a 401/407, 404 ...)
                # within 64*T1. Routine for scanners (svwar never ACKs its INVITEs' 407s,
                # one per extension tried), so not worth a line each at INFO.
                if log.isEnabledFor(logging.DEBUG):
                    log.debug("transaction %s: no ACK (Timer H)", key_text(output.transaction.key))
                return
            log.info("transaction %s: %s", key_text(output.transaction.key), type(output).__name__)
            return
        if client.transaction.request is None:
            # A completed transaction (its ACK could not be re-sent): the TU has its final
            # response already.
            log.info("transaction %s: %s", key_text(output.transaction.key), type(output).__name__)
            return
        # RFC 3261 §8.1.3.1: a timeout is treated as 408, a transport error as 503.
        status = 408 if isinstance(output, TransactionTimeout) else 503
        if client._orphan_bye is not None:
            log.info("our BYE of a session nobody holds failed: %s", type(output).__name__)
            return
        client._deliver(make_response(client.request, status))

    async def _dispatch(self, txn: ServerTransaction, request: Request, flow: Flow) -> None:
        if (
            self.gateway.draining
            and request.to.tag is None
            and request.method not in SERVED_WHILE_DRAINING
            and not _only_removes_bindings(request)
        ):
            await self.respond(txn, self._refuse_draining(request))
            return
        uri = request.uri
        if (
            type(uri) is SipUri
            and uri.scheme != "sip"  # one string comparison for every sip: request
            and uri.secure
            and not flow.secure
            and request.method not in SIPS_CHECKED_ELSEWHERE
            and request.to.tag is None
        ):
            await self.respond(txn, self._refuse_sips_over_clear(request, flow))
            return
        calls = self.calls
        if (
            calls is not None
            and request.method == "OPTIONS"
            and request.to.tag is not None
            and not calls.knows_dialog(request)
            and not (self.subscriptions is not None and self.subscriptions.knows_dialog(request))
        ):
            # RFC 3261 §12.2.2: an OPTIONS in a dialog we do not know (a call that ended, a
            # restart) is 481, as any other request there. Carriers' SBCs send these to learn
            # whether a call is still up: a 200 would keep a dead call billed. One in a dialog
            # we know is ours to answer, as outside any (respond_locally).
            await self.respond(txn, self._response(request, 481))
            return
        if calls is not None and request.method not in ("REGISTER", "OPTIONS"):
            if request.method == "CANCEL":
                # Before the dialog check: a CANCEL of a re-INVITE carries the dialog's To tag
                # but belongs to the re-INVITE's transaction, not to the dialog (RFC 3261 §9.2).
                target = self.transactions.find_cancel_target(request)
                # RFC 3261 §9.2: answer the CANCEL itself at once; 481 when nothing matches.
                await self.respond(txn, self._response(request, 481 if target is None else 200))
                if target is not None:
                    calls.cancel(target, request)
                return
            if request.to.tag is not None:
                if not calls.in_dialog(txn, request, flow) and not (
                    self.subscriptions is not None
                    and self.subscriptions.in_dialog(txn, request, flow)
                ):
                    await self.respond(txn, self._response(request, 481))
                return
            if request.method in NON_CALL_METHODS and (
                request.method != "PUBLISH" or self.presence is not None
            ):
                refusal = self._precheck(request)
                if refusal is not None:
                    await self.respond(txn, refusal)
                elif request.method == "SUBSCRIBE" and self.subscriptions is not None:
                    self.subscriptions.subscribe(txn, request, flow)
                elif request.method == "NOTIFY" and self.messages is not None:
                    self.messages.notify(txn, request, flow)
                elif request.method == "MESSAGE" and self.messages is not None:
                    self.messages.message(txn, request, flow)
                elif request.method == "PUBLISH" and self.presence is not None:
                    self.presence.publish(txn, request, flow)
                else:
                    await self.respond(txn, self._response(request, 503))
                return
            if request.method == "INVITE":
                refusal = self._precheck(request)
                if refusal is not None:
                    await self.respond(txn, refusal)
                else:
                    calls.invite(txn, request, flow)
                    data = self.handling_bytes
                    if data is not None and self.sip_taps:
                        self._copy_invite_to_call(request, data, flow)
                return
        await self.respond(txn, self.respond_locally(request, flow))

    def _copy_invite_to_call(self, request: Request, data: bytes, flow: Flow) -> None:
        """A new call's INVITE for its taps, once the call has it: a failure here is no
        failure of _dispatch (whose exceptions mean nobody took the request, and get a 500
        from the endpoint: the call answers this one)."""
        try:
            self._copy_to_call(request, data, flow.transport, flow.remote, flow.local, True)
        except Exception:
            self.statistics.internal_errors += 1
            log_exception(log, "internal error copying an INVITE to its call's taps")

    def _refuse_draining(self, request: Request) -> Response:
        """A new request outside any dialog while the gateway drains (Gateway.drain): 503, as a
        new INVITE gets. Without Retry-After, as for that INVITE: the client treats it as a 500
        for this request only (RFC 3261 §21.5.4), and one that knows another server for our
        domain (DNS SRV, a backup registrar) tries it at once (RFC 3263 §4.3). A Retry-After
        would keep a phone whose only registrar this is, and a proxy's health check (§11.2: an
        OPTIONS gets what an INVITE would), away from the node for that long after its
        restart."""
        self.statistics.rejected_draining += 1
        return self._response(request, 503, "Service Unavailable (shutting down)")

    def _refuse_sips_over_clear(self, request: Request, flow: Flow) -> Response:
        """A request outside a dialog to a SIPS URI (SUBSCRIBE, MESSAGE, OPTIONS, REFER,
        REGISTER, ...) that came over a hop without TLS: SIPS asks for TLS on every hop up to
        the domain's server (RFC 3261 §26.2.2, RFC 5630 §3.1.3), and the hop to us broke that.
        Answered as the INVITE is (CallManager): 480 with warn-code 380 "SIPS Not Allowed"
        (RFC 5630 §5.3), before any challenge, relaying or registering."""
        log.info(
            "%s from %s over %s refused: SIPS needs TLS on every hop",
            request.method,
            flow.remote[0],
            flow.transport,
        )
        return self._response(
            request,
            480,
            "Temporarily Unavailable (SIPS needs TLS on every hop)",
            extra=[SIPS_NOT_ALLOWED],
        )

    def _precheck(self, request: Request) -> Response | None:
        if request.max_forwards == 0:
            return self._response(request, 483)
        unsupported = _unsupported_extensions(request.headers, self.extensions)
        if unsupported:
            return self._response(request, 420, extra=[("Unsupported", ", ".join(unsupported))])
        return None

    async def respond(self, transaction: ServerTransaction, response: Response) -> None:
        """Send ``response`` through its server transaction (it retransmits as needed).

        Raises :class:`TransactionStateError` when the transaction does not allow it (a
        response after the final one): the table has forgotten the transaction then, without
        a TransactionTerminated, and so does the endpoint here.

        RFC 4320 §4.2: a transaction-stateful element MUST NOT send 408 to a non-INVITE
        request. Whoever made it (a relayed request's other side answered 408, or its client
        transaction timed out: RFC 3261 §8.1.3.1's 408 of ours), a 408 for a non-INVITE
        becomes, while its sender still waits (its Timer F, 64*T1, runs from when the request
        came), ``504 Server Time-out`` (RFC 3261 §21.5.5: no timely response from a server
        accessed on the request's behalf), and after that nothing at all: the transaction is
        given up (:meth:`give_up`), as the RFC says of an element that cannot respond before
        the transaction expires."""
        now = trio.current_time()
        if response.status == 408 and transaction.method != "INVITE":
            arrived = self.transactions.received_at(transaction)
            method, call_id = transaction.method, response.headers.get("Call-ID")
            if arrived is not None and now - arrived >= self.transactions.timers.timeout:
                log.info("%s %s: 408 after the sender's 64*T1: none sent", method, call_id)
                await self.give_up(transaction)
                return
            log.debug("%s %s: 408 answered as 504 (RFC 4320 §4.2)", method, call_id)
            reason = default_reason(504)
            response = Response(504, reason, response.headers, response.body, response.version)
        try:
            outputs = self.transactions.send_response(transaction, response, now=now)
        except TransactionStateError:
            self._forget(transaction)
            raise
        await self._act(outputs)

    async def give_up(self, transaction: ServerTransaction) -> None:
        """End a non-INVITE ``transaction`` without a final response: its client's Timer F
        ran out before the TU had one, and RFC 4320 §4.2 forbids the 408 (it could only
        arrive after the client gave up). Neither answered nor a bug: counted nowhere."""
        await self._act(self.transactions.give_up(transaction, now=trio.current_time()))

    # -- client side --------------------------------------------------------------------------

    async def send_request(
        self, request: Request, *, transport: str, address: Address, flow: Flow | None = None
    ) -> ClientRequest:
        """Send a request (without Via: we add ours) through a new client transaction to
        ``address`` over ``transport``, reusing ``flow`` when it is still open. Raises OSError
        when no flow can be had."""
        if flow is None and transport == "udp" and self._too_big_for_udp(request):
            # RFC 3261 §18.1.1: above 1300 bytes (path MTU unknown) a request goes over a
            # congestion-controlled transport; fall back to UDP when TCP cannot connect.
            try:
                flow = await self.flow_to("tcp", address, None)
            except OSError as exc:
                log.info(
                    "large %s to %s over UDP: TCP failed (%s)",
                    request.method,
                    format_address(address),
                    transport_error_text(exc),
                )
        flow = await self.flow_to(transport, address, flow)
        request = self._with_our_via(request, flow)
        now = trio.current_time()
        txn, outputs = self.transactions.send_request(request, peer=_hop(flow), now=now)
        client = ClientRequest(txn, flow)
        self._client_requests[txn] = client
        if client._call_id is not None:
            self._invites[client._call_id] = client
        elif self._invites:
            invite = self._invites.get(request.call_id)
            if invite is not None:
                tag = self._in_dialog_of(invite, request)
                if tag is not None:
                    invite._note_cseq(tag, request.cseq.number)
        await self._act(outputs)
        if txn.request is None:
            # Answered during the send (a peer on a fast connection answers before our write
            # returns, and the endpoint's task takes the response meanwhile): the owner reads
            # the request as sent right after this returns (its CSeq, a retry with
            # credentials). Kept only then: otherwise the transaction holds it, and lets it go
            # at the final response, not when the transaction ends (Timer K's T4 for a
            # non-INVITE, Timer D's 32 s or Timer M's 64*T1 for an INVITE; RFC 3261 §17.1,
            # RFC 6026 §8.4).
            client._sent_early_answered = request
        return client

    @staticmethod
    def _in_dialog_of(invite: ClientRequest, request: Request) -> str | None:
        """The To tag of ``request`` (of ``invite``'s Call-ID) when it belongs to a dialog of
        ``invite`` (its From tag too), else None."""
        to_tag = request.to.tag
        if to_tag is None:
            return None
        dialog = invite._dialog_of
        if dialog is None or request.from_.tag != dialog[1]:
            return None
        return to_tag

    def _too_big_for_udp(self, request: Request) -> bool:
        if "tcp" not in self.gateway.plugins.transports:
            return False
        # Our Via adds well under 100 bytes; count it so the limit holds for what is sent.
        return len(serialize_message(request)) + 100 > UDP_SIZE_LIMIT

    async def _ack_orphan_2xx(
        self, response: Response, client: ClientRequest, *, hang_up: str | None
    ) -> None:
        """A 2xx to an INVITE of ours whose owner has gone (a re-INVITE answered after a BYE
        ended its call, a fork answering after the call's drain), or of a dialog the owner
        never takes (another fork's, :meth:`ClientRequest._another_dialog`): the UAC core
        still ACKs it (RFC 3261 §13.2.2.4), or the peer re-sends it for 64*T1. A dialog the
        owner had gets no BYE here; its call sent one. With ``hang_up``, the first 2xx of a
        session nobody holds is BYEd too (§15), or the callee stays in a call with nobody:
        one answered after we gave its INVITE up (64*T1 after our CANCEL, §9.1,
        :meth:`ClientRequest._first_late_answer`), whose owner was told of a timeout and
        will never end it, another fork's, or the first 2xx of an INVITE whose owner had
        gone without ACKing a 2xx of that dialog (:meth:`ClientRequest._nobodys_answer`).
        (Not a re-INVITE's: its dialog is its owner's.) The 2xx to an INVITE without SDP
        carries an offer, and the ACK must carry the answer (§13.2.2.4, RFC 3264 §4): one rejecting
        every stream, before the BYE.

        ``hang_up`` says why, in the BYE's Reason (RFC 3326), as a call's BYE does
        (Call._bye): the callee, often a trunk, takes its CDR and the PSTN's cause from it.
        The BYE's CSeq follows the highest we sent in that dialog (a PRACK of its reliable
        1xx, :meth:`ClientRequest._next_cseq`); a trunk's challenge to it is answered with the
        trunk's credentials, once (:meth:`_orphan_bye_answered`).

        Runs beside the endpoint's task (:meth:`_off_task`): a closed TCP or TLS flow is
        opened again first, which may take connect_timeout. The ACK goes before the BYE."""
        if not response.is_success or response.cseq.method != "INVITE":
            return
        dialog = Dialog.from_our_2xx(response)
        if dialog is None:
            return
        try:
            flow = await self.flow_to(client.flow.transport, client.flow.remote, client.flow)
            body = self._refusing_answer(response, flow.transport) if client._late_offer else b""
            ack = dialog.create_ack(
                response.cseq.number,
                via=self.new_via(flow),
                body=body,
                content_type=SDP if body else None,
            )
            await self._send_on(self._with_our_via(ack, flow), flow, None)  # not the owner's
            if hang_up is not None and client._dialog_of is not None:
                trunk = self.gateway.config.trunk(client.trunk) if client.trunk else None
                dialog.local_seq = client._next_cseq(response) - 1  # create_request adds one
                reasons = self._bye_reasons(hang_up, trunk)
                bye = dialog.create_request(
                    "BYE", via=self.new_via(flow), extra=[("Reason", r) for r in reasons]
                )
                sent = await self.send_request(
                    bye, transport=flow.transport, address=flow.remote, flow=flow
                )
                sent._orphan_bye = _OrphanBye(sent.request, trunk)
        except OSError as exc:
            log.info("cannot ACK or BYE a 2xx nobody holds: %s", transport_error_text(exc))

    def _bye_reasons(self, why: str, trunk: TrunkConfig | None) -> list[str]:
        """The Reason values (RFC 3326) of our BYE of a session nobody holds: SIP cause 200
        saying ``why``, and Q.850 cause 16 "normal call clearing" where the callee is a trunk
        with a PSTN interworking (``[[trunks]] interworking``), as Call._with_q850 adds to a
        call's BYE (RFC 6432)."""
        reasons = [f'SIP;cause=200;text="{why}"']
        interworking = trunk.interworking if trunk is not None else None
        if interworking and self.gateway.plugins.interworking.get(interworking) is not None:
            reasons.append(f"Q.850;cause={Q850_NORMAL_CLEARING}")
        return reasons

    async def _orphan_bye_answered(
        self, client: ClientRequest, bye: _OrphanBye, response: Response
    ) -> None:
        """A response to our BYE of a session nobody holds, taken here (nobody else reads
        it; the transaction ends on its own, Timer K). A 401/407 from a trunk with our
        credentials gets the BYE again with them (RFC 3261 §22.2), once, as a call's BYE does
        (Call._see_bye_through): else the trunk counts the call as up until its own timers."""
        if not response.is_final:
            return
        trunk = bye.trunk
        if response.is_success:
            if bye.retried and trunk is not None:
                log.info("answered trunk %s's challenge to our BYE", trunk.name)
            return
        if (
            response.status in (401, 407)
            and trunk is not None
            and trunk.username is not None
            and trunk.password is not None
            and not bye.retried
        ):
            await self._off_task(
                functools.partial(self._bye_with_credentials, client, bye, trunk, response)
            )
            return
        if bye.retried and trunk is not None:
            log.warning(
                "trunk %s refused our BYE with credentials (%d %s); it may still count the "
                "call as up",
                trunk.name,
                response.status,
                response.reason,
            )
            return
        log.info(
            "our BYE of a session nobody holds refused: %d %s%s",
            response.status,
            response.reason,
            f" (trunk {trunk.name}: it may still count the call as up)" if trunk else "",
        )

    async def _bye_with_credentials(
        self, client: ClientRequest, bye: _OrphanBye, trunk: TrunkConfig, challenge: Response
    ) -> None:
        """``bye`` again as a new transaction (RFC 3261 §22.2, §8.1.3.5): the next CSeq of its
        dialog, no Via (ours is added with a new branch), credentials answering ``challenge``."""
        assert trunk.username is not None and trunk.password is not None
        sent = bye.sent
        number = sent.cseq.number + 1
        retry = sent.with_headers(sent.headers.remove("Via").set("CSeq", f"{number} BYE"))
        answered = authorize(
            retry,
            challenge,
            username=trunk.username,
            password=trunk.password,
            cnonce=self.gateway.ids.token_hex(8),
        )
        if answered is None:
            log.info(
                "trunk %s sent %d to our BYE with no challenge we can answer",
                trunk.name,
                challenge.status,
            )
            return
        flow = client.flow
        try:
            again = await self.send_request(
                answered, transport=flow.transport, address=flow.remote, flow=flow
            )
        except OSError as exc:
            log.info(
                "cannot send our BYE again with trunk %s's credentials: %s",
                trunk.name,
                transport_error_text(exc),
            )
            return
        again._orphan_bye = _OrphanBye(again.request, trunk, retried=True)

    def _refusing_answer(self, response: Response, transport: str) -> bytes:
        """Our answer rejecting every stream the 2xx ``response`` offers (RFC 3264 §6), the
        origin ours on ``transport``; empty when the offer is unreadable (no valid answer)."""
        try:
            offer = parse_sdp_untrusted(sdp_of(response.content_type, response.body))
        except SdpError:
            return b""
        host, _ = self.local_address(transport)
        return serialize_sdp(refusing_answer(offer, username=ORIGIN_USERNAME, address=host))

    async def send_ack(self, ack: Request, flow: Flow) -> None:
        """Send the ACK for a 2xx: its own one-message transaction (RFC 3261 §13.2.2.4). The
        ACK of a 2xx to one of our INVITEs outside a dialog says its owner holds that dialog:
        the endpoint never BYEs it (ClientRequest._nobodys_answer)."""
        if self._invites:
            invite = self._invites.get(ack.call_id)
            if invite is not None:
                tag = self._in_dialog_of(invite, ack)
                if tag is not None:
                    invite._owner_acked(tag)
        await self._send_on(self._with_our_via(ack, flow), flow, None)

    async def flow_to(self, transport: str, address: Address, flow: Flow | None = None) -> Flow:
        if flow is not None and not flow.closed:
            return flow
        plugin = self.gateway.plugins.transports.get(transport)
        if plugin is None:
            raise OSError(f"transport {transport!r} is not enabled")
        opened: Flow = await plugin.open_flow(address, self.gateway)
        return opened

    def local_address(self, transport: str) -> Address:
        """The listener address of ``transport`` (what Via and Contact advertise)."""
        for listener in self.gateway.listeners:
            if listener.transport == transport:
                return listener.address
        raise OSError(f"no {transport} listener")

    def our_uri(self, transport: str, user: str) -> SipUri:
        """``sip:user@`` our listener address on ``transport``."""
        host, port = self.local_address(transport)
        return SipUri("sip", f"[{host}]" if ":" in host else host, user=user, port=port)

    def our_contact(self, transport: str, *, sips: bool = False) -> NameAddr:
        """Our Contact on ``transport`` (``;transport=`` where it is not UDP); with ``sips``
        (a TLS or WSS leg of a secure dialog, RFC 3261 §8.1.1.8 and §12.1.1) a ``sips:`` URI:
        at our TLS listener without a transport parameter (RFC 5630 §3.1.3: ``sips`` means
        TLS over TCP; ``transport=tls`` is deprecated), at our WSS listener with
        ``;transport=wss`` (RFC 7118 §5.2.2 and §9.2: a SIPS path may cross a secure
        WebSocket, and only the parameter says it is one)."""
        uri = self.our_uri(transport, "voipgw")
        if sips:
            uri = attrs.evolve(uri, scheme="sips")
            return NameAddr(uri.with_param("transport", "wss") if transport == "wss" else uri)
        return NameAddr(uri.with_param("transport", transport) if transport != "udp" else uri)

    def contact_answering(self, request: Request, flow: Flow) -> NameAddr:
        """Our Contact in a response that makes a dialog with ``request``, which came over
        ``flow``: ``sips:`` where RFC 3261 §12.1.1 requires it (only over TLS or WSS: a SIPS
        request over another hop is refused before it gets here)."""
        return self.our_contact(flow.transport, sips=flow.secure and contact_must_be_sips(request))

    def new_via(self, flow: Flow) -> Via:
        """Our Via for a new request over ``flow``: listener address, fresh branch, rport."""
        return self.new_via_for(flow.transport)

    def new_via_for(self, transport: str) -> Via:
        """Our Via for a new request over ``transport``: listener address, fresh branch,
        rport."""
        host, port = self.local_address(transport)
        return make_via(
            transport.upper(),
            f"[{host}]" if ":" in host else host,
            port,
            branch=new_branch(lambda: self.gateway.ids.token_hex(10)),
        )

    def _with_our_via(self, request: Request, flow: Flow) -> Request:
        """Add our Via unless the request carries one already (a CANCEL reuses its INVITE's,
        RFC 3261 §9.1; dialog requests are built with one)."""
        if request.headers.get("Via") is not None:
            return request
        via = grammar.via_text(self.new_via(flow))
        return request.with_headers(request.headers.prepend("Via", via))

    async def _send_on(
        self, message: Request, flow: Flow, transaction: ClientTransaction | None
    ) -> None:
        final = self._outbound(message, flow)
        if final is NOT_SENT:
            return  # a raising hook's; as a message lost on the way (transactions re-send)
        if not isinstance(final, Request):
            raise SipError("a gateway_outbound_message hook replaced a request with a non-request")
        try:
            data = serialize_message(final)
            await self._send_bytes(data, flow)
            self.statistics.sent += 1
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.statistics.send_errors += 1
            log.info("cannot send %s to %s: %s", final.method, flow.key, transport_error_text(exc))
            if transaction is not None:
                await self._act(
                    self.transactions.transport_error(transaction, now=trio.current_time())
                )
            return
        if self.sip_taps:
            self._copy_to_call(final, data, flow.transport, flow.local, flow.remote, False)

    async def _reject_unparsable(self, data: bytes, flow: Flow, err: RemoteSipError) -> None:
        source = format_address(flow.remote)
        if err.status is None:
            self.statistics.dropped_malformed_responses += 1
            log.info("dropping malformed response from %s: %s", source, err.reason)
            return
        self.statistics.rejected_malformed += 1
        if data.lstrip(b"\r\n").startswith(b"ACK "):
            # Nothing answers an ACK (RFC 3261 §8.2.7: a stateless UAS, as we are here, ignores
            # them); a 400 would be a response the sender has no transaction to read.
            log.info("dropping malformed ACK from %s: %s", source, err.reason)
            return
        headers = salvage_request_headers(data)
        if headers is None or headers.get("Via") is None:
            log.info(
                "dropping malformed request from %s (no Via to answer): %s", source, err.reason
            )
            return
        top = grammar.parse_via_untrusted(headers.get("Via") or "")
        cseq = _cseq_of_request_line(data, headers.get("CSeq"))
        if cseq and self._serving(cseq, top):
            # A server transaction of ours has the branch, sent-by and method the answer would
            # carry (§17.2.3): this is a damaged copy of its request, or a forgery of one, and
            # an answer would end its client's transaction while we still serve it. None is
            # safe: dropped (counted as malformed above).
            log.info(
                "dropping malformed request from %s (an answer would end a transaction we "
                "serve): %s",
                source,
                err.reason,
            )
            return
        if cseq:
            headers = headers.set("CSeq", cseq)
        log.info("rejecting malformed request from %s with %d: %s", source, err.status, err.reason)
        headers = headers.set(
            "Via", str(stamp_received(top, _hop(flow))), *headers.get_all("Via")[1:]
        )
        response = Response(status=err.status, reason=_reason_phrase(err.reason), headers=headers)
        if (
            len(data) > ANSWERABLE_UDP_REQUEST
            and not flow.reliable
            and len(serialize_message(response)) > MAX_UDP_PAYLOAD
        ):
            # The salvaged Via stack alone can fill a datagram: no answer can be sent.
            self.statistics.dropped_too_large += 1
            log.info("not answering it: a %d would not fit a UDP datagram", err.status)
            return
        await self.send_response(response, flow)

    def _serving(self, cseq: str, top: Via) -> bool:
        """Whether a server transaction of ours has the branch and sent-by of ``top`` and the
        method of ``cseq`` (RFC 3261 §17.2.3): an answer with them would reach its client."""
        branch = top.branch
        if branch is None or not has_rfc3261_branch(top):
            return False
        method = cseq.rpartition(" ")[2]
        key: TransactionKey = (method, branch.lower(), top.sent_by().lower(), None)
        return self.transactions.has_server_transaction_key(key)

    def respond_locally(self, request: Request, flow: Flow) -> Response:
        """The gateway's own answer to a request no call handles (the transaction sends it)."""
        max_forwards = request.max_forwards
        if max_forwards == 0 and request.method != "OPTIONS":
            # RFC 3261 §16.3 step 2 / RFC 4475 §3.3.11: OPTIONS may be answered locally.
            return self._response(request, 483)
        unsupported = _unsupported_extensions(request.headers, self.extensions)
        if unsupported and request.method != "CANCEL":
            # RFC 3261 §8.2.2.3
            return self._response(request, 420, extra=[("Unsupported", ", ".join(unsupported))])
        if request.method == "OPTIONS":
            # While draining, _dispatch answers an OPTIONS outside a dialog 503 (RFC 3261 §11.2:
            # the status an INVITE would get).
            return self._response(request, 200, extra=self._capabilities())
        if request.method == "CANCEL":
            # RFC 3261 §9.2: 481 when no INVITE transaction matches; INVITEs are answered at
            # once here, so a matching CANCEL finds nothing left to cancel.
            target = self.transactions.find_cancel_target(request)
            return self._response(request, 481 if target is None else 200)
        if request.method == "REGISTER" and self.gateway.registration is not None:
            return self.gateway.registration.handle(request, flow)
        if request.method not in ALLOWED_METHODS:
            return self._response(request, 405, extra=[("Allow", self.allow)])
        return self._response(request, 501, "Not Implemented Yet In This Gateway")

    @property
    def allow(self) -> str:
        """The methods we take outside a dialog (RFC 3261 §20.5), one list for the 405 and
        OPTIONS (§11.2) alike: PUBLISH only while the presence service takes it."""
        return ALLOW_WITH_PUBLISH if self.presence is not None else ALLOW

    def _capabilities(self) -> list[tuple[str, str]]:
        events = self.gateway.dialog_events
        return [
            ("Allow", self.allow),
            ("Allow-Events", events.allow_events if events is not None else ALLOW_EVENTS),
            ("Accept", "application/sdp"),
            ("Supported", ", ".join(self.extensions)),
            ("Server", self.gateway.config.sip.user_agent),
        ]

    # -- outbound -----------------------------------------------------------------------------

    def _response(
        self,
        request: Request,
        status: int,
        reason: str | None = None,
        *,
        extra: list[tuple[str, str]] | None = None,
    ) -> Response:
        to_tag = None if request.to.tag else self._tag()
        return make_response(request, status, reason, to_tag=to_tag, extra=extra or ())

    def _tag(self) -> str:
        return self.gateway.ids.new_tag()

    async def send_response(self, response: Response, flow: Flow) -> None:
        """Send ``response`` where RFC 3261 §18.2.2 and RFC 3581 say: over the request's
        connection on reliable transports, else to received/rport (or the sent-by)."""
        await self._send_response(response, flow)

    async def _send_response(self, response: Response, flow: Flow) -> tuple[bytes, Flow] | None:
        """:meth:`send_response`, returning the bytes sent and the flow they went over, for
        its transaction to re-send; None when nothing was sent, and when an interception
        copied it (so that its retransmissions are copied too, which needs the message)."""
        try:
            flow = await self._response_flow(response, flow)
        except OSError as exc:
            self.statistics.send_errors += 1
            log.info(
                "cannot route %d for %s: %s", response.status, flow.key, transport_error_text(exc)
            )
            return None
        message = self._outbound(response, flow)
        if message is NOT_SENT:
            return None  # a raising hook's; as a message lost on the way
        if not isinstance(message, Request | Response):
            raise SipError(
                "a gateway_outbound_message hook replaced the message with a non-message"
            )
        try:
            data = serialize_message(message)
            await self._send_bytes(data, flow)
            self.statistics.sent += 1
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.statistics.send_errors += 1
            log.info(
                "cannot send %d to %s: %s", response.status, flow.key, transport_error_text(exc)
            )
            return None
        if self.sip_taps and self._copy_to_call(
            message, data, flow.transport, flow.local, flow.remote, False
        ):
            return None
        return data, flow

    async def _resend_response(self, data: bytes, flow: Flow) -> None:
        """A final response again, as the bytes first sent (:class:`ResendResponse`): the
        outbound hooks saw it then, and capture agents see each copy (:meth:`_send_bytes`)."""
        try:
            await self._send_bytes(data, flow)
            self.statistics.sent += 1
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.statistics.send_errors += 1
            log.info("cannot re-send a response to %s: %s", flow.key, transport_error_text(exc))

    async def _send_bytes(self, data: bytes, flow: Flow) -> None:
        await flow.send(data)
        if self.captures:
            self._capture(data, flow.transport, flow.local, flow.remote)
        if self.trace_messages:
            log.debug("SIP out %s: %s", flow.key, _trace(data))

    def _capture(self, data: bytes, transport: str, source: Address, destination: Address) -> None:
        """A copy for each capture agent; one that fails (a plugin bug) never fails SIP."""
        at = time.time()
        for capture in self.captures:
            try:
                capture.message(
                    data, transport=transport, source=source, destination=destination, at=at
                )
            except Exception:
                log_exception(log, "SIP capture %s failed", getattr(capture, "name", capture))

    def _copy_to_call(
        self,
        message: Request | Response,
        data: bytes,
        transport: str,
        source: Address,
        destination: Address,
        inbound: bool,
    ) -> bool:
        """A copy of a message on a tapped call's dialog for its taps (an interception).
        Whether it was on one."""
        dialogs, call_id = self.sip_taps, message.call_id
        to_tag = message.to.tag
        found = dialogs.get((call_id, to_tag)) if to_tag is not None else None
        if found is None:
            found = dialogs.get((call_id, message.from_.tag))
        if found is None:
            return False
        taps, leg = found
        taps.sip_message(
            data,
            leg=leg,
            inbound=inbound,
            transport=transport,
            source=source,
            destination=destination,
            at=time.time(),
        )
        return True

    def _outbound(self, message: Request | Response, flow: Flow) -> object:
        """``message`` as the ``gateway_outbound_message`` hooks leave it (they may replace it);
        the hook is not called at all when no plugin implements it. :data:`NOT_SENT` when a
        hook raised (not None: a hook that sets ``outbound.message = None`` put a non-message
        there, a SipError as any other): the message is not sent, which is counted as an
        internal error and logged naming the plugin, at most once a minute per plugin
        (:class:`~gateway.core.plugins.HookFailures`: a hook raising on every message must not
        flood the log). Whoever sends it (a
        transaction, a call re-sending its 2xx or its ACK) goes on as after a message lost on
        the way: a plugin's bug fails no call by itself (STYLE.md habit 6)."""
        hook = self.gateway.plugins.implemented("gateway_outbound_message")
        if hook is None:
            return message
        leg = self.leg_of(message, flow) if self.leg_of is not None else None
        outbound = OutboundMessage(message=message, flow=flow, leg=leg)
        try:
            hook(outbound=outbound)
        except Exception as exc:
            # pluggy does not say whose hook it was; the traceback's frames do.
            self.statistics.internal_errors += 1
            plugin = raising_plugin(hook, exc)
            what = (
                message.method
                if isinstance(message, Request)
                else f"{message.status} to {message.cseq.method}"
            )
            self._outbound_failures.failed(
                plugin,
                exc,
                "%s: gateway_outbound_message raised %s on %s for %s; not sent%s",
                who(plugin),
                type(exc).__name__,
                what,
                flow.key,
            )
            return NOT_SENT
        return outbound.message

    async def _response_flow(self, response: Response, arrival: Flow) -> Flow:
        target = response_target(response.top_via)
        if target.reuse_connection and not arrival.closed:
            return arrival
        if target.port is None:
            raise OSError(f"sent-by {target.host} needs DNS SRV, which this gateway does not do")
        destination = (target.host, target.port)
        if destination == arrival.remote and not arrival.closed:
            return arrival
        transport = self.gateway.plugins.transports.get(arrival.transport)
        if transport is None:
            raise OSError(f"transport {arrival.transport!r} is not enabled")
        flow: Flow = await transport.open_flow(destination, self.gateway)
        return flow


def _has_credentials(request: Request) -> bool:
    headers = request.headers
    return (
        headers.get("Proxy-Authorization") is not None or headers.get("Authorization") is not None
    )


def _only_removes_bindings(request: Request) -> bool:
    """Whether a REGISTER only removes bindings (``Contact: *``, or every Contact with expiry
    0, RFC 3261 §10.2.2): served while draining, since it ends state here rather than starting
    any, and a binding left behind would be called by other nodes sharing the store."""
    if request.method != "REGISTER":
        return False
    header = request.headers.get("Expires")
    try:
        contacts = request.contacts
    except SipError:
        return False
    if not contacts:
        return False  # a query (§10.2.3): refused with the rest
    for contact in contacts:
        if contact.wildcard:
            continue  # "Contact: *" removes every binding (with Expires: 0: the registrar checks)
        expires = contact.param("expires") or header
        if expires is None or expires.strip() != "0":
            return False
    return True


def _without_tag(to: str | None) -> bool:
    """Whether a request's To (its text) has no tag (RFC 3261 §8.1.1.2: a request outside a
    dialog); parsed only when the text holds "tag" at all (a re-INVITE's does)."""
    if to is None:
        return False
    return "tag" not in to.lower() or grammar.parse_name_addr_untrusted(to).tag is None


def _hop(flow: Flow) -> Hop:
    return _shared_hop(flow.transport, flow.remote[0], flow.remote[1])


@functools.lru_cache(maxsize=4096)
def _shared_hop(transport: str, host: str, port: int) -> Hop:
    """One Hop per peer address, shared: every transaction keeps its peer for up to 64*T1, and
    a trunk or phone sends many (Hop is frozen)."""
    return Hop(transport, host, port)


def _cseq_of_request_line(data: bytes, cseq: str | None) -> str:
    """The CSeq for our answer to a request the parser rejected, whose salvaged CSeq is
    ``cseq``: "" when none was salvaged, its number with the Request-Line's method when the
    two methods differ, else ``cseq`` as it is (its method is the Request-Line's, or the
    Request-Line's cannot be read: the CSeq is then the best account of the sender's
    transaction).

    A client matches a response to its transaction by the top Via's branch and the CSeq method
    (RFC 3261 §17.1.3). A request whose CSeq method is not its Request-Line's (§8.1.1.7,
    §20.16: they MUST match; RFC 4475 §3.1.2.17) answered with its CSeq copied, as §8.2.6.2
    has it, would match the sender's transaction of that other method and branch: a CANCEL
    carrying ``CSeq: 1 INVITE`` and its INVITE's branch, forged from the caller's address,
    would end the caller's INVITE with our 400. Its own transaction is the Request-Line
    method's, so the 400 carries that: it matches no transaction of another method."""
    if cseq is None:
        return ""
    try:
        parsed = grammar.parse_cseq_untrusted(cseq)
    except SipError:  # salvage_request_headers keeps a CSeq only when it parses
        return cseq
    line = data.lstrip(b"\r\n").split(b"\r\n", 1)[0]
    method = line.split(b" ", 1)[0].decode("ascii", "replace")
    if not grammar.is_token(method) or parsed.method == method:
        return cseq
    return f"{parsed.number} {method}"


def _reason_phrase(reason: str) -> str:
    """A reason phrase is one line of text (RFC 3261 §25.1 Reason-Phrase)."""
    return " ".join(reason.split())[:200] or "Bad Request"


def _unsupported_extensions(headers: Headers, supported: tuple[str, ...]) -> list[str]:
    required: list[str] = []
    for value in headers.get_all("Require"):
        required.extend(part.strip() for part in value.split(",") if part.strip())
    return [ext for ext in required if ext not in supported]


def _trace(data: bytes) -> str:
    """A SIP message in one DEBUG line: its first line, Call-ID, CSeq and size, e.g. ``INVITE
    sip:bob@example.com SIP/2.0 (Call-ID a84b4c76e66710, CSeq 1 INVITE, 812 bytes)``. Only
    these: no other header is shown (``Authorization`` holds a digest answer, ``Identity`` a
    signature), and no body (SDES keys); a password in the Request-URI is withheld. Bounded,
    and anything unprintable shown as ``?``, as the bytes are the network's (a line of the log
    must stay one line)."""
    size = len(data)
    data = data.lstrip(b"\r\n")  # RFC 3261 §7.5: CRLFs before the start line are ignored
    end = data.find(b"\r\n\r\n")
    if end < 0:
        end = data.find(b"\n\n")
    head = data if end < 0 else data[: end + 1]
    first = head.split(b"\n", 1)[0].split(b"\r", 1)[0][:_TRACE_REDACTED]
    call_id = _TRACE_CALL_ID.search(head)
    cseq = _TRACE_CSEQ.search(head)
    parts = [
        f"Call-ID {_printable(call_id.group(1)) if call_id else '(none)'}",
        f"CSeq {_printable(cseq.group(1)) if cseq else '(none)'}",
        f"{size} bytes",
    ]
    # RFC 3261 §19.1.1: a Request-URI may carry "user:password@" (NOT RECOMMENDED, but sent):
    # withheld before the line is cut, which could fall between the password and its "@".
    return f"{redact_password(_printable(first))[:_TRACE_LINE]} ({', '.join(parts)})"


def _printable(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return "".join(c if c.isprintable() else "?" for c in text)
