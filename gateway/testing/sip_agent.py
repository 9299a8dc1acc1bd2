"""A scripted SIP user agent for component tests: a phone, a trunk or a PBX on a MemoryNetwork.

It is built from the gateway's own sans-IO pieces, so it behaves like a careful UA on a lossy
network: a :class:`~gateway.core.sip.transaction.TransactionTable` retransmits its requests and
final responses and absorbs duplicates (RFC 3261 §17), dialogs come from
:mod:`gateway.core.sip.dialog`, digest answers from :mod:`gateway.core.auth.algorithms`. Its UA
core adds what RFC 3261 leaves to the TU: it ACKs every 2xx it receives (§13.2.2.4, also
retransmitted ones) and retransmits its own 2xx to an INVITE until the ACK arrives (§13.3.1.4).

What the agent does by itself:

- new INVITE: 100 Trying (the transaction), then what :class:`AutoAnswer` says (180, then 200
  with an SDP answer, or another status; ``auto=None`` leaves answering to the test);
- CANCEL of a pending INVITE: 200 to the CANCEL and 487 to the INVITE (§9.2);
- in-dialog BYE: 200 (§15.1.2); re-INVITE: 200 with an SDP answer whose direction mirrors the
  offer (sendonly -> recvonly, RFC 3264 §6.1) unless ``auto=None``; other in-dialog requests and
  OPTIONS: 200; a request for an unknown dialog: 481.

Every request it receives (ACKs for 2xx included) is kept in :attr:`SipAgent.received`;
:meth:`SipAgent.next_request` waits for the next one of a method. Waits take a ``timeout`` in
seconds of trio's clock, so under ``autojump_clock`` a test never hangs::

    alice = SipAgent(network, ("127.0.0.3", 5060), ids=SeededIds(1), user="alice",
                     password="wonderland", proxy=("127.0.0.1", 5060))
    await nursery.start(alice.serve)
    assert (await alice.register()).status == 200
    call = await alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200      # the agent has ACKed it
    assert (await call.bye()).status == 200

One UDP socket, no DNS: addresses are IP literals. Forked 2xx answers with different To tags
(a proxy in between) are not modelled: every 2xx of one INVITE is taken for the same dialog.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Sequence

import attrs
import trio

from gateway.core.auth.client import authorize
from gateway.core.ids import IdSource
from gateway.core.sdp.body import sdp_of
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.model import Direction
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.dialog import Dialog, DialogState, require_contact
from gateway.core.sip.errors import LocalSipError, SipError
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.headers import NameAddr, Via
from gateway.core.sip.message import Headers, Request, Response, make_response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.sip.serializer import serialize_message
from gateway.core.sip.transaction import (
    AckReceived,
    Output,
    RequestReceived,
    ResponseReceived,
    SendRequest,
    SendResponse,
    ServerTransaction,
    Transaction,
    TransactionTable,
    TransactionTerminated,
    TransactionTimeout,
    TransactionTimers,
    TransportFailed,
)
from gateway.core.sip.uri import SipUri
from gateway.core.sip.via import Hop, make_via, new_branch, response_target, stamp_request
from gateway.core.transport.flows import format_host_port
from gateway.testing.network import Address, MemoryNetwork

log = logging.getLogger(__name__)

SDP = "application/sdp"
#: Default ``timeout`` of every wait, in seconds of trio's clock: longer than Timer B/F (32 s).
DEFAULT_TIMEOUT = 64.0


# -- SDP ---------------------------------------------------------------------------------------


def simple_sdp(
    address: str,
    port: int,
    *,
    direction: str = "sendrecv",
    session_id: int = 1,
    version: int = 1,
    formats: Sequence[str] = ("0", "8", "101"),
) -> bytes:
    """One audio stream at ``address``:``port`` (PCMU, PCMA, telephone-event), as a phone
    offers or answers it (RFC 3264 §5)."""
    names = {
        "0": "PCMU/8000",
        "8": "PCMA/8000",
        "9": "G722/8000",
        "101": "telephone-event/8000",
        "111": "opus/48000/2",
    }
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN IP4 {address}",
        "s=-",
        f"c=IN IP4 {address}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {' '.join(formats)}",
        *(f"a=rtpmap:{pt} {names[pt]}" for pt in formats if pt in names),
        *(["a=fmtp:101 0-16"] if "101" in formats else []),
        f"a={direction}",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def sdp_direction(body: bytes) -> Direction:
    """The direction of the first m= line of an SDP body (RFC 8866 §6.7; default sendrecv)."""
    sd = parse_sdp_untrusted(body)
    return sd.effective_direction(sd.media[0])


def sdp_connection(body: bytes) -> tuple[str, int]:
    """Where the first m= line of an SDP body wants its media: (c= address, m= port)."""
    sd = parse_sdp_untrusted(body)
    connection = sd.effective_connection(sd.media[0])
    assert connection is not None, "SDP without c= line"
    return connection.address, sd.media[0].port


# -- what the agent keeps ----------------------------------------------------------------------


@attrs.frozen
class AutoAnswer:
    """How the agent answers a new INVITE without the test's help: a 180 when ``ring``, then
    after ``delay`` seconds the final ``status`` (2xx with an SDP answer), or nothing more when
    ``status`` is None."""

    ring: bool = True
    status: int | None = 200
    delay: float = 0.0


class Exchange:
    """One request the agent sent through a client transaction, and every response to it in
    arrival order. A transaction timeout or transport failure shows up as a locally made 408 or
    503 response (RFC 3261 §8.1.3.1), so waiting for a final response always ends."""

    def __init__(self, request: Request, destination: Address, call: Call | None) -> None:
        self.request = request
        self.destination = destination
        self.call = call
        self.responses: list[Response] = []
        self.timed_out = False
        self._changed = trio.Event()

    @property
    def statuses(self) -> list[int]:
        return [response.status for response in self.responses]

    async def wait_for(
        self, accept: Callable[[Response], bool], *, timeout: float = DEFAULT_TIMEOUT
    ) -> Response:
        """The first response (received so far or later) that ``accept`` takes."""
        with trio.fail_after(timeout):
            while True:
                for response in self.responses:
                    if accept(response):
                        return response
                await self._changed.wait()

    async def final(self, *, timeout: float = DEFAULT_TIMEOUT) -> Response:
        """The first final response."""
        return await self.wait_for(lambda r: r.status >= 200, timeout=timeout)

    def _add(self, response: Response) -> None:
        self.responses.append(response)
        self._changed.set()
        self._changed = trio.Event()


@attrs.define(eq=False)
class Received:
    """A request the agent received: when, from where, and the server transaction it opened
    (None for an ACK of a 2xx, which has none, RFC 3261 §17.1.1.3)."""

    request: Request
    source: Address
    at: float
    transaction: ServerTransaction | None
    call: Call | None = None
    taken: bool = False


class Call:
    """One INVITE dialog of the agent, as caller (``outgoing``) or callee.

    A caller's call has ``exchange`` (the current INVITE and its responses); a callee's has
    ``incoming`` (the INVITE received). ``dialog`` exists once a 2xx was sent or received.
    """

    def __init__(
        self,
        agent: SipAgent,
        invite: Request,
        *,
        local_tag: str,
        exchange: Exchange | None = None,
        incoming: Received | None = None,
    ) -> None:
        self.agent = agent
        self.invite = invite
        self.local_tag = local_tag
        self.exchange = exchange
        self.incoming = incoming
        self.dialog: Dialog | None = None
        self._acks: dict[int, Request] = {}
        # A caller's INVITE without SDP gets the offer in the 2xx and answers it in the ACK
        # (RFC 3261 §13.2.1): None answers with answer_sdp(offer); bytes send those (b"": none);
        # a function makes the answer from the offer (a DTLS answer needs the offer's keys).
        self.ack_answer: bytes | Callable[[bytes], bytes] | None = None
        # A caller's reliable provisional responses (RFC 3262): PRACKed unless send_prack is
        # false; the early dialog they make, the last RSeq seen and the PRACKs sent. (A
        # callee's early dialog is the one its first 1xx with our To tag made: requests in it,
        # an UPDATE say, are answered before the call is.)
        self.send_prack = True
        self.early_dialog: Dialog | None = None
        self.last_rseq = 0
        self.pracks: list[Exchange] = []

    @property
    def outgoing(self) -> bool:
        return self.incoming is None

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    # -- as caller ----------------------------------------------------------------------------

    async def final(self, *, timeout: float = DEFAULT_TIMEOUT) -> Response:
        """The final response to the current INVITE (a 2xx is ACKed already)."""
        assert self.exchange is not None, "not an outgoing call"
        return await self.exchange.final(timeout=timeout)

    async def authenticate(self) -> None:
        """Send the INVITE again with credentials for the 401/407 it got (RFC 3261 §22.2:
        same Call-ID and From tag, CSeq + 1, new branch)."""
        assert self.exchange is not None, "not an outgoing call"
        challenges = [r for r in self.exchange.responses if r.status in (401, 407)]
        if not challenges:
            raise LocalSipError("the INVITE was not challenged")
        challenge, request = challenges[-1], self.exchange.request
        headers = request.headers.remove("Via").remove("Proxy-Authorization")
        headers = headers.remove("Authorization")
        headers = headers.set("CSeq", f"{request.cseq.number + 1} INVITE")
        request = self.agent.authorize(request.with_headers(headers), challenge)
        self.exchange = await self.agent.send(request, self.exchange.destination, call=self)
        self.invite = self.exchange.request

    async def cancel(
        self, invite_exchange: Exchange | None = None, *, extra: Iterable[tuple[str, str]] = ()
    ) -> Exchange:
        """CANCEL the INVITE (RFC 3261 §9.1: same Via branch, From, To, Call-ID and CSeq
        number), or the re-INVITE of ``invite_exchange``, with ``extra`` headers (a Reason, say);
        returns the CANCEL's exchange. The INVITE's 487 arrives on :meth:`final` (a
        re-INVITE's on its exchange)."""
        exchange = invite_exchange or self.exchange
        assert exchange is not None, "not an outgoing call"
        invite = exchange.request
        fields = [
            ("Via", invite.headers.get("Via") or ""),
            ("Max-Forwards", "70"),
            *(("Route", route) for route in invite.headers.get_all("Route")),
            ("From", invite.headers.get("From") or ""),
            ("To", invite.headers.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} CANCEL"),
            *extra,
        ]
        cancel = Request("CANCEL", invite.uri, Headers.of(fields))
        return await self.agent.send(cancel, exchange.destination)

    # -- in the dialog ------------------------------------------------------------------------

    async def bye(self, *, timeout: float = DEFAULT_TIMEOUT) -> Response:
        """Send BYE in the dialog and return its final response (RFC 3261 §15.1.1)."""
        exchange = await self.request("BYE")
        response = await exchange.final(timeout=timeout)
        assert self.dialog is not None
        self.dialog.terminate()
        return response

    async def reinvite(self, sdp: bytes, *, timeout: float = DEFAULT_TIMEOUT) -> Response:
        """Send a re-INVITE with ``sdp`` (RFC 3261 §14.1; b"": none, a late offer) and return its
        final response; a 2xx is ACKed by the agent (with an answer if the 2xx offered)."""
        exchange = await self.request("INVITE", body=sdp, content_type=SDP if sdp else None)
        return await exchange.final(timeout=timeout)

    async def request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Exchange:
        """Send any request in the dialog (RFC 3261 §12.2.1.1) to its next hop."""
        if self.dialog is None:
            raise LocalSipError("the call has no dialog yet")
        request = self.dialog.create_request(
            method,
            via=self.agent.new_via(),
            contact=self.agent.contact if method == "INVITE" else None,
            extra=extra,
            body=body,
            content_type=content_type,
        )
        return await self.agent.send(request, _next_hop(self.dialog), call=self)

    async def early_request(
        self,
        method: str,
        *,
        body: bytes = b"",
        content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Exchange:
        """Send a request (an UPDATE, RFC 3311 §5.1) in the early dialog of the latest 1xx
        with a To tag to our INVITE (RFC 3261 §12.1.2: reliable or not, it makes one); a 2xx
        of that dialog confirms it, its CSeq going on."""
        assert self.exchange is not None, "not an outgoing call"
        ringing = [r for r in self.exchange.responses if 100 < r.status < 200 and r.to.tag]
        if not ringing:
            raise LocalSipError("the call has no early dialog yet")
        latest, early = ringing[-1], self.early_dialog
        if early is None or early.remote_tag != latest.to.tag:
            early = self.early_dialog = Dialog.create_uac(self.exchange.request, latest)
        request = early.create_request(
            method,
            via=self.agent.new_via(),
            contact=self.agent.contact if method in ("INVITE", "UPDATE") else None,
            extra=extra,
            body=body,
            content_type=content_type,
        )
        return await self.agent.send(request, _next_hop(early), call=self)

    # -- as callee ----------------------------------------------------------------------------

    async def ring(self, status: int = 180) -> None:
        """Send a provisional response to the INVITE."""
        assert self.incoming is not None, "not an incoming call"
        await self.agent.respond(self.incoming, status)

    async def answer(
        self, status: int = 200, *, sdp: bytes | None = None, reason: str | None = None
    ) -> None:
        """Send the final response: a 2xx with ``sdp`` (default: an answer to the offer) is
        retransmitted until the ACK comes; another status is the transaction's business."""
        assert self.incoming is not None, "not an incoming call"
        if self.answered is not None:
            raise LocalSipError(f"the INVITE is already answered ({self.answered})")
        body = b""
        if 200 <= status < 300 and sdp is not None:
            body = sdp
        elif 200 <= status < 300:
            # An INVITE without SDP is a late offer: our 2xx makes the offer (§13.2.1).
            offer = _sdp_in(self.invite)
            body = self.agent.answer_sdp(offer) if offer else self.agent.offer_sdp()
        await self.agent.respond(self.incoming, status, reason=reason, body=body)

    @property
    def answered(self) -> int | None:
        """The final status we sent to the incoming INVITE, or None."""
        txn = self.incoming.transaction if self.incoming is not None else None
        return txn.final_status if txn is not None else None


@attrs.define
class _Pending2xx:
    """Our 2xx to an INVITE, retransmitted until its ACK (RFC 3261 §13.3.1.4)."""

    response: Response
    destination: Address
    due: float
    interval: float
    give_up: float


class SipAgent:
    """A scripted SIP UA bound to ``address`` on ``network``; run :meth:`serve` in a nursery.

    ``ids`` makes its tags, branches and Call-IDs (deterministic with ``SeededIds``). ``user``
    and ``password`` are its account (digest answers); ``domain`` is the host part of its
    address-of-record (default: ``proxy``, else its own address). New requests go to ``proxy``
    unless told otherwise; in-dialog requests follow the dialog. ``auto`` says how new INVITEs
    are answered (None: by the test). ``media_port`` is what its SDP advertises.
    ``contact_address`` is what its Contact says instead of its own address (a phone behind a
    NAT writes its private address there; its requests come from ``address``, the NAT's).

    :attr:`in_dialog`, when a test sets it, sees every in-dialog request first (after the
    dialog's CSeq check) and returns True when it answered the request itself (a trunk that
    challenges BYE, say); the default answers follow when it returns False.
    :attr:`out_of_dialog` does the same for requests outside a dialog other than INVITE and
    CANCEL (a registrar answering REGISTER, say); by default OPTIONS gets 200, the rest 501.
    """

    def __init__(
        self,
        network: MemoryNetwork,
        address: Address,
        *,
        ids: IdSource,
        user: str = "agent",
        password: str | None = None,
        domain: str | None = None,
        proxy: Address | None = None,
        auto: AutoAnswer | None = AutoAnswer(),
        media_port: int = 20000,
        timers: TransactionTimers | None = None,
        contact_address: Address | None = None,
    ) -> None:
        self.network = network
        self.address = address
        # What our Contact says: our address, or (a phone behind NAT) the private one.
        self.contact_address = contact_address or address
        self.ids = ids
        self.user = user
        self.password = password
        self.proxy = proxy
        self.domain = domain or "{}:{}".format(*(proxy or address))
        self.auto = auto
        self.media_port = media_port
        self.timers = timers or TransactionTimers()
        self.socket = network.bind(address)
        self.transactions = TransactionTable(timers=self.timers)
        self.received: list[Received] = []
        self.calls: list[Call] = []
        #: Our 2xx responses to INVITEs that no ACK came for within 64*T1 (RFC 3261 §13.3.1.4).
        self.never_acked: list[Response] = []
        self.in_dialog: Callable[[Received], Awaitable[bool]] | None = None
        self.out_of_dialog: Callable[[Received], Awaitable[bool]] | None = None
        self._by_dialog: dict[tuple[str, str], Call] = {}  # (Call-ID, our tag)
        #: Dialogs other than calls' (subscriptions, RFC 6665), by (Call-ID, our tag): their
        #: requests pass the CSeq check, then :attr:`in_dialog`, else get 200.
        self.dialogs: dict[tuple[str, str], Dialog] = {}
        #: SUBSCRIBEs we sent outside a dialog, by (Call-ID, our tag), until their dialog is
        #: added: a NOTIFY that overtakes the 2xx (or the test's :meth:`add_dialog` after it)
        #: creates the dialog (RFC 6665 §4.1.2.4), which the test then replaces with its own.
        self.subscribing: dict[tuple[str, str], Request] = {}
        self._by_invite: dict[ServerTransaction, Call] = {}
        self._exchanges: dict[Transaction, Exchange] = {}
        self._pending_2xx: dict[tuple[str, str, int], _Pending2xx] = {}
        self._received_changed = trio.Event()
        self._wakeup = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._sdp_version = 0
        self._register_call_id = ids.new_call_id()
        self._register_cseq = 0

    def __repr__(self) -> str:
        return f"<SipAgent {self.user} {self.address[0]}:{self.address[1]}>"

    @property
    def contact(self) -> NameAddr:
        host, port = self.contact_address
        # An IPv6 address in brackets, as a URI writes it (RFC 3261 §25.1 IPv6reference).
        return NameAddr(SipUri("sip", format_host_port(host), user=self.user, port=port))

    @property
    def aor(self) -> NameAddr:
        """Our address-of-record ``sip:user@domain``."""
        uri = parse_uri_untrusted(f"sip:{self.user}@{self.domain}")
        return NameAddr(uri)

    def new_via(self) -> Via:
        host, port = self.address
        return make_via(
            "UDP", format_host_port(host), port, branch=new_branch(lambda: self.ids.token_hex(8))
        )

    # -- running ------------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Receive and run timers until cancelled; closes the socket at the end."""
        with self.socket:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._run_timers)
                task_status.started()
                while True:
                    data, source = await self.socket.recvfrom()
                    await self._handle(data, source)

    async def _run_timers(self) -> None:
        while True:
            # No checkpoint between the new event and the wait: no kick is lost.
            self._wakeup = trio.Event()
            timer = self.transactions.get_timer()
            deadline = min(
                math.inf if timer is None else timer,
                min((p.due for p in self._pending_2xx.values()), default=math.inf),
            )
            with trio.move_on_at(deadline):
                await self._wakeup.wait()
            now = trio.current_time()
            timer = self.transactions.get_timer()
            if timer is not None and timer <= now:
                await self._act(self.transactions.handle_timer(now=now))
            await self._retransmit_2xx(now)

    def _kick(self) -> None:
        self._wakeup.set()

    async def _handle(self, data: bytes, source: Address) -> None:
        now = trio.current_time()
        try:
            message = parse_message_untrusted(data)
            if isinstance(message, Response):
                await self._act(self.transactions.receive_response(message, now=now))
                return
            hop = Hop("UDP", *source)
            request = stamp_request(message, hop)
            await self._act(self.transactions.receive_request(request, source=hop, now=now), source)
        except SipError as err:
            log.info("%r: ignoring a message from %s: %s", self, source, err)

    async def _act(self, outputs: list[Output], source: Address | None = None) -> None:
        for output in outputs:
            if isinstance(output, SendRequest):
                peer = output.transaction.peer
                await self._send_raw(output.request, (peer.host, peer.port))
            elif isinstance(output, SendResponse):
                await self._send_raw(output.response, _response_destination(output.response))
            elif isinstance(output, ResponseReceived):
                exchange = self._exchanges.get(output.transaction)
                if exchange is not None:
                    await self._on_response(exchange, output.response)
            elif isinstance(output, RequestReceived):
                assert source is not None
                await self._on_request(output.transaction, output.request, source)
            elif isinstance(output, AckReceived):
                assert source is not None
                self._on_ack(output.request, source)
            elif isinstance(output, TransactionTimeout | TransportFailed):
                exchange = self._exchanges.get(output.transaction)
                if exchange is not None:
                    exchange.timed_out = isinstance(output, TransactionTimeout)
                    status = 408 if exchange.timed_out else 503
                    exchange._add(make_response(exchange.request, status))
            elif isinstance(output, TransactionTerminated):
                self._exchanges.pop(output.transaction, None)
        self._kick()

    async def _send_raw(self, message: Request | Response, destination: Address) -> None:
        await self.socket.sendto(serialize_message(message), destination)

    # -- sending ------------------------------------------------------------------------------

    async def send(
        self, request: Request, destination: Address | None = None, *, call: Call | None = None
    ) -> Exchange:
        """Send ``request`` through a new client transaction (our Via is added unless it has
        one, as a CANCEL does) to ``destination`` (default: the proxy)."""
        destination = destination or self.proxy
        if destination is None:
            raise LocalSipError("no destination and no proxy")
        if request.headers.get("Via") is None:
            request = request.with_headers(request.headers.prepend("Via", str(self.new_via())))
        txn, outputs = self.transactions.send_request(
            request, peer=Hop("UDP", *destination), now=trio.current_time()
        )
        exchange = Exchange(request, destination, call)
        self._exchanges[txn] = exchange
        if request.method == "SUBSCRIBE" and request.to.tag is None and request.from_.tag:
            self.subscribing[(request.call_id, request.from_.tag)] = request
        await self._act(outputs)
        return exchange

    def new_request(
        self,
        method: str,
        uri: str,
        *,
        to: NameAddr | None = None,
        call_id: str | None = None,
        cseq: int = 1,
        from_tag: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A request outside any dialog from our address-of-record (RFC 3261 §8.1.1); the Via
        is added when it is sent."""
        target = parse_uri_untrusted(uri)
        if to is None:
            to = NameAddr(attrs.evolve(target, params=()) if isinstance(target, SipUri) else target)
        fields = [
            ("Max-Forwards", "70"),
            ("From", str(self.aor.with_tag(from_tag or self.ids.new_tag()))),
            ("To", str(to)),
            ("Call-ID", call_id or self.ids.new_call_id()),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", str(self.contact)),
            ("User-Agent", f"voipgw-test-agent/{self.user}"),
            *extra,
        ]
        request = Request(method, target, Headers.of(fields))
        return request.with_body(body, content_type) if body else request

    async def invite(
        self,
        uri: str,
        *,
        destination: Address | None = None,
        sdp: bytes | None = None,
        content_type: str = SDP,
        extra: Iterable[tuple[str, str]] = (),
        to: NameAddr | None = None,
    ) -> Call:
        """Send an INVITE for ``uri`` with ``sdp`` (default: our offer; any body of
        ``content_type``) and return the call. ``to``: a To other than ``uri`` (a carrier
        calling a registered Contact names the number called there)."""
        tag = self.ids.new_tag()
        body = sdp if sdp is not None else self.offer_sdp()
        request = self.new_request(
            "INVITE", uri, to=to, from_tag=tag, extra=extra, body=body, content_type=content_type
        )
        call = Call(self, request, local_tag=tag)
        self._add_call(call)
        call.exchange = await self.send(request, destination, call=call)
        call.invite = call.exchange.request
        return call

    async def register(
        self,
        registrar: Address | None = None,
        *,
        expires: int = 600,
        extra: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """REGISTER our contact for our address-of-record, answering one digest challenge
        (RFC 3261 §10.2, §22.2); returns the final response. ``extra`` headers go in too (a
        Path an edge proxy added, RFC 3327)."""
        challenge: Response | None = None
        while True:
            self._register_cseq += 1
            aor = self.aor
            request = self.new_request(
                "REGISTER",
                f"sip:{self.domain}",
                to=aor,
                call_id=self._register_call_id,
                cseq=self._register_cseq,
                extra=[("Expires", str(expires)), *extra],
            )
            if challenge is not None:
                request = self.authorize(request, challenge)
            response = await (await self.send(request, registrar)).final()
            if response.status in (401, 407) and challenge is None and self.password:
                challenge = response
                continue
            return response

    def add_dialog(self, dialog: Dialog) -> None:
        """Take the requests of ``dialog`` (a subscription's, made by the test)."""
        key = (dialog.call_id, dialog.local_tag)
        self.dialogs[key] = dialog
        self.subscribing.pop(key, None)  # its dialog exists: a NOTIFY no longer creates one

    async def send_authenticated(
        self, request: Request, destination: Address | None = None
    ) -> tuple[Request, Response]:
        """Send ``request`` outside a dialog and answer one 401/407 challenge with our
        credentials (RFC 3261 §22.2: the same request with CSeq + 1 and a new branch);
        returns the request as last sent and its final response."""
        response = await (await self.send(request, destination)).final()
        if response.status in (401, 407) and self.password is not None:
            retry = request.with_headers(
                request.headers.remove("Via").set(
                    "CSeq", f"{request.cseq.number + 1} {request.method}"
                )
            )
            request = self.authorize(retry, response)
            response = await (await self.send(request, destination)).final()
        return request, response

    def authorize(self, request: Request, challenge: Response) -> Request:
        """``request`` with digest credentials answering ``challenge`` (a 401 or 407), the
        gateway's own client side (:func:`gateway.core.auth.client.authorize`)."""
        if self.password is None:
            raise LocalSipError("the agent has no password")
        answered = authorize(
            request,
            challenge,
            username=self.user,
            password=self.password,
            cnonce=self.ids.token_hex(8),
        )
        if answered is None:
            raise LocalSipError("no challenge the agent can answer")
        return answered

    # -- answering ----------------------------------------------------------------------------

    async def respond(
        self,
        received: Received,
        status: int,
        *,
        reason: str | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        extra: Iterable[tuple[str, str]] = (),
        contact: NameAddr | bool = True,
    ) -> Response:
        """Answer a received request through its transaction (a ``body`` is SDP unless
        ``content_type`` says otherwise). A 101-299 response to an INVITE carries our Contact
        (``contact``: another one, or False for none, as a later 1xx of an early dialog may
        omit it) and our To tag; a 2xx to an INVITE creates or refreshes the dialog and is
        retransmitted until the ACK comes (RFC 3261 §13.3.1.4)."""
        request, txn = received.request, received.transaction
        if txn is None:
            raise LocalSipError("an ACK is not answered")
        call = received.call
        fields = list(extra)
        if request.method == "INVITE" and 100 < status < 300 and contact is not False:
            fields.append(("Contact", str(self.contact if contact is True else contact)))
        response = make_response(
            request,
            status,
            reason,
            to_tag=call.local_tag if call is not None else self.ids.new_tag(),
            extra=fields,
            body=body,
            content_type=content_type or (SDP if body else None),
        )
        if (
            call is not None
            and call.incoming is received
            and 100 < status < 200
            and call.early_dialog is None
        ):
            call.early_dialog = Dialog.create_uas(request, response)  # RFC 3261 §12.1.1
        if call is not None and request.method == "INVITE" and 200 <= status < 300:
            if call.dialog is None:
                call.dialog = Dialog.create_uas(request, response)
            call.dialog.send_response(response)
            now = trio.current_time()
            key = (request.call_id, call.local_tag, request.cseq.number)
            self._pending_2xx[key] = _Pending2xx(
                response,
                _response_destination(response),
                due=now + self.timers.t1,
                interval=self.timers.t1,
                give_up=now + self.timers.timeout,
            )
        await self._act(self.transactions.send_response(txn, response, now=trio.current_time()))
        return response

    async def _on_request(self, txn: ServerTransaction, request: Request, source: Address) -> None:
        received = Received(request, source, trio.current_time(), txn)
        try:
            await self._answer_request(received)
        finally:
            # Recorded once the automatic answers are out, so a test that waited for the
            # request sees them done.
            self._record(received)

    async def _answer_request(self, received: Received) -> None:
        request, txn = received.request, received.transaction
        assert txn is not None
        method = request.method
        if method == "CANCEL":
            # RFC 3261 §9.2: 200 for the CANCEL; the INVITE, if still pending, ends with 487.
            invite = self.transactions.find_cancel_target(request)
            await self.respond(received, 481 if invite is None else 200)
            call = self._by_invite.get(invite) if invite is not None else None
            if call is not None and call.incoming is not None and call.answered is None:
                await self.respond(call.incoming, 487)
            return
        if request.to.tag is not None:
            call = self._by_dialog.get((request.call_id, request.to.tag))
            other = self.dialogs.get((request.call_id, request.to.tag))
            if call is None and other is None and method == "NOTIFY":
                other = self._notified_early(request)
            if (call is None or call.dialog is None) and other is not None:
                try:
                    other.receive_request(request)
                except SipError as err:
                    await self.respond(received, getattr(err, "status", None) or 500)
                    return
                if self.in_dialog is not None and await self.in_dialog(received):
                    return
                await self.respond(received, 200)
                return
            # A callee's early dialog takes requests before the answer (RFC 3311 §5.1).
            dialog = (
                None
                if call is None
                else call.dialog or (None if call.outgoing else call.early_dialog)
            )
            if call is None or dialog is None:
                await self.respond(received, 481)
                return
            received.call = call
            try:
                dialog.receive_request(request)
            except SipError as err:
                await self.respond(received, getattr(err, "status", None) or 500)
                return
            if self.in_dialog is not None and await self.in_dialog(received):
                return
            if method == "INVITE":
                if self.auto is not None:  # without SDP (late offer) our 2xx offers
                    # The SDP part of a multipart re-INVITE (a caller's location update).
                    offer = _sdp_in(request)
                    body = self.answer_sdp(offer) if offer else self.offer_sdp()
                    await self.respond(received, 200, body=body)
                return
            if method == "BYE":
                dialog.terminate()
            await self.respond(received, 200)
            return
        if method == "INVITE":
            call = Call(self, request, local_tag=self.ids.new_tag(), incoming=received)
            received.call = call
            self._add_call(call)
            self._by_invite[txn] = call
            if self.auto is not None:
                assert self._nursery is not None
                self._nursery.start_soon(self._auto_answer, call, self.auto)
            return
        if self.out_of_dialog is not None and await self.out_of_dialog(received):
            return
        await self.respond(received, 200 if method == "OPTIONS" else 501)

    def _notified_early(self, notify: Request) -> Dialog | None:
        """The subscription dialog a NOTIFY before the SUBSCRIBE's 2xx creates (RFC 6665
        §4.1.2.4): its From tag, Contact and Record-Route; None when we sent no such SUBSCRIBE."""
        sent = self.subscribing.get((notify.call_id, notify.to.tag or ""))
        if sent is None or notify.from_.tag is None:
            return None
        try:
            target = require_contact(notify)
        except SipError:
            return None
        dialog = Dialog(
            call_id=sent.call_id,
            local_tag=notify.to.tag or "",
            remote_tag=notify.from_.tag,
            local_uri=sent.from_.with_params(()),
            remote_uri=sent.to,
            remote_target=target,
            route_set=notify.record_routes,
            local_seq=sent.cseq.number,
            remote_seq=None,
            secure=False,
            state=DialogState.CONFIRMED,
        )
        self.add_dialog(dialog)
        return dialog

    async def _auto_answer(self, call: Call, auto: AutoAnswer) -> None:
        if auto.ring and call.answered is None:
            await call.ring()
        if auto.delay:
            await trio.sleep(auto.delay)
        if auto.status is not None and call.answered is None:
            await call.answer(auto.status)

    def _on_ack(self, request: Request, source: Address) -> None:
        self._record(Received(request, source, trio.current_time(), None))
        tag = request.to.tag or ""
        self._pending_2xx.pop((request.call_id, tag, request.cseq.number), None)

    async def _retransmit_2xx(self, now: float) -> None:
        for key, pending in list(self._pending_2xx.items()):
            if pending.due > now:
                continue
            if now >= pending.give_up:
                # RFC 3261 §13.3.1.4: no ACK within 64*T1; a real UA would now send BYE.
                log.info("%r: no ACK for our 2xx in %s", self, key[0])
                del self._pending_2xx[key]
                self.never_acked.append(pending.response)
                continue
            await self._send_raw(pending.response, pending.destination)
            pending.interval = min(pending.interval * 2, self.timers.t2)
            pending.due = now + pending.interval

    async def _on_response(self, exchange: Exchange, response: Response) -> None:
        exchange._add(response)
        call = exchange.call
        if call is None or exchange.request.method != "INVITE":
            return
        if 100 < response.status < 200 and response.headers.get("RSeq") is not None:
            await self._prack(call, exchange, response)
            return
        if not response.is_success:
            return
        # RFC 3261 §13.2.2.4: the UA core ACKs every 2xx, retransmissions included. A dialog
        # made early by a reliable 1xx is the one the 2xx confirms (its CSeq went on with PRACK).
        early = call.early_dialog
        if call.dialog is None and early is not None and early.remote_tag == response.to.tag:
            call.dialog = early
        if call.dialog is None:
            call.dialog = Dialog.create_uac(exchange.request, response)
        else:
            call.dialog.receive_response(response)
        number = response.cseq.number
        ack = call._acks.get(number)
        if ack is None:
            body = b""
            if response.body and not _sdp_in(exchange.request):  # the 2xx offers: answer it
                answer = call.ack_answer
                if answer is None:
                    body = self.answer_sdp(response.body)
                else:
                    body = answer(response.body) if callable(answer) else answer
            ack = call.dialog.create_ack(
                number, via=self.new_via(), body=body, content_type=SDP if body else None
            )
            call._acks[number] = ack
        await self._send_raw(ack, _next_hop(call.dialog))

    async def _prack(self, call: Call, exchange: Exchange, response: Response) -> None:
        """PRACK a reliable provisional response (RFC 3262 §4) in the early dialog it makes;
        a retransmission (an RSeq not above the last) is discarded: the PRACK's own client
        transaction is what makes it reliable."""
        rseq_text = response.headers.get("RSeq") or ""
        if not rseq_text.isdigit() or int(rseq_text) <= call.last_rseq:
            return
        call.last_rseq = int(rseq_text)
        if not call.send_prack:
            return
        early = call.early_dialog
        if early is None or early.remote_tag != response.to.tag:
            early = call.early_dialog = Dialog.create_uac(exchange.request, response)
        else:
            early.receive_response(response)
        prack = early.create_request(
            "PRACK",
            via=self.new_via(),
            extra=[("RAck", f"{rseq_text} {response.cseq.number} INVITE")],
        )
        call.pracks.append(await self.send(prack, _next_hop(early), call=call))

    # -- SDP ----------------------------------------------------------------------------------

    def offer_sdp(self, *, direction: str = "sendrecv") -> bytes:
        """Our SDP offer (a new o= version each time, RFC 3264 §8)."""
        self._sdp_version += 1
        return simple_sdp(
            self.address[0], self.media_port, direction=direction, version=self._sdp_version
        )

    def answer_sdp(self, offer: bytes) -> bytes:
        """An answer to ``offer``: its codecs we know, the mirrored direction (RFC 3264 §6.1)."""
        try:
            sd = parse_sdp_untrusted(offer)
            direction = sd.effective_direction(sd.media[0]).reversed()
            formats = [f for f in sd.media[0].formats if f in ("0", "8", "101")] or ["0"]
        except (SdpError, IndexError):
            direction, formats = Direction.SENDRECV, ["0"]
        self._sdp_version += 1
        return simple_sdp(
            self.address[0],
            self.media_port,
            direction=direction.value,
            version=self._sdp_version,
            formats=formats,
        )

    # -- what happened ------------------------------------------------------------------------

    def _add_call(self, call: Call) -> None:
        self.calls.append(call)
        self._by_dialog[(call.call_id, call.local_tag)] = call

    def _record(self, received: Received) -> None:
        self.received.append(received)
        self._received_changed.set()
        self._received_changed = trio.Event()

    async def next_request(self, method: str, *, timeout: float = DEFAULT_TIMEOUT) -> Received:
        """The oldest received ``method`` request not returned before (waits for one)."""
        with trio.fail_after(timeout):
            while True:
                for received in self.received:
                    if received.request.method == method and not received.taken:
                        received.taken = True
                        return received
                await self._received_changed.wait()

    async def next_call(self, *, timeout: float = DEFAULT_TIMEOUT) -> Call:
        """The next new incoming call (an INVITE without To tag)."""
        with trio.fail_after(timeout):
            while True:
                for received in self.received:
                    call = received.call
                    if call is not None and call.incoming is received and not received.taken:
                        received.taken = True
                        return call
                await self._received_changed.wait()

    @property
    def awaiting_ack(self) -> list[Response]:
        """Our 2xx responses to INVITEs still retransmitted because no ACK came yet."""
        return [pending.response for pending in self._pending_2xx.values()]

    def requests(self, method: str) -> list[Request]:
        """Every received request of ``method``, in arrival order."""
        return [r.request for r in self.received if r.request.method == method]


def _sdp_in(message: Request) -> bytes:
    """The SDP ``message`` carries, alone or as a multipart part (RFC 5621); a body the gateway's
    reader refuses is returned whole, for the agent to treat as a (bad) offer."""
    try:
        return sdp_of(message.content_type, message.body)
    except SdpError:
        return message.body


def _response_destination(response: Response) -> Address:
    """RFC 3261 §18.2.2 / RFC 3581 §4 for a datagram transport."""
    target = response_target(response.top_via)
    return (target.host, target.port or 5060)


def _next_hop(dialog: Dialog) -> Address:
    uri = dialog.next_hop_uri()
    if not isinstance(uri, SipUri):
        raise LocalSipError(f"cannot send to {uri}")
    host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
    return (host, uri.port or 5060)
