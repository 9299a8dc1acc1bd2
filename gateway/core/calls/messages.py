"""Out-of-dialog MESSAGE (RFC 3428) and unsolicited message-summary NOTIFY, relayed B2BUA-style.

Theory of operation. A MESSAGE is routed exactly like an INVITE: the caller is identified as for a
call (a trunk by source address, else an account by its digest credentials: 407, RFC 3261 §22.3),
then the routing hook and :func:`~gateway.core.calls.routing.default_route` decide (accounts to
accounts, accounts to trunks by number, trunks' DIDs to accounts; never trunk to trunk). Each target
gets a new request of ours (new Call-ID and From tag, the caller presented as a call would present
it, the body and Content-Type unchanged). An account's registered contacts get it in parallel,
through the flow or Path of their registration, and the first 2xx goes back to the sender (RFC 3428
§7 allows 200 and 202); when none accepts, the best failure does
(:func:`~gateway.core.calls.targets.best_failure`), after the route's alternates were tried one at a
time on a ``[sip] failover_statuses`` failure, as a call tries them: a trunk named by DNS has one
alternate per cached target (RFC 3263 §4.3), the next after a 503, no response or a transport error,
the next trunk after any other failure (:func:`~gateway.core.calls.routing.alternates_after`), and a
trunk that gives no response at all within its ``response_timeout`` is left (our 408,
:data:`NO_RESPONSE`) whatever the failover statuses say. That 408 is the relay's own mark (RFC 3261
§8.1.3.1: a timeout is treated as 408), never the sender's answer: RFC 4320 §4.2 forbids a 408 to a
non-INVITE, so when every target was left so, the sender, still within its Timer F, gets ``504
Server Time-out`` (RFC 3261 §21.5.5: no timely response from a server we accessed for it), and any
other failure is chosen over a timeout (``best_failure(non_invite=True)``). A MESSAGE the trunk
never got (a transport error) or never answered (that 408) marks a probed trunk down as a call's
INVITE does (its last DNS target only). A non-INVITE cannot be cancelled (RFC 3261 §9.1): the other
contacts' answers are awaited and dropped. The whole relay has 64*T1, the sender's own wait (Timer
F): then the attempts under way are given up and the sender gets no final response (RFC 4320 §4.2:
no 408 to a non-INVITE, which could only arrive after the sender's Timer F;
:meth:`Messages._answered`).

Size (RFC 3428 §7): the page-mode body is at most :data:`MAX_BODY`, and a request we would have
to send over UDP must stay under the path limit the endpoint keeps (``UDP_SIZE_LIMIT``, RFC 3261
§18.1.1): a contact registered over UDP (its flow is fixed, no TCP to switch to) or a UDP trunk
when TCP is not enabled get no such request; a sender whose request fits none of its targets
gets 513 Message Too Large (:func:`best_answer`). ``[sip] max_message_size`` is something else:
the largest message the gateway reads at all (65535 bytes by default), whatever the transport.

An unsolicited NOTIFY (``Event: message-summary`` without a subscription, as Asterisk, FreeSWITCH
and carrier voicemail send it) is accepted from a trunk only (``allowed_sources`` with
``auth_by_source``, as its INVITEs), for a number of the trunk's ``dids`` in the Request-URI or
To; it goes to every registered contact of that account as a MESSAGE goes, 200 back when one
accepts. Anyone else gets 403, an unknown number 404, nothing is forwarded.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import trio

from gateway.core.auth.client import authorize
from gateway.core.calls.numbering import read_number
from gateway.core.calls.routing import (
    ContactTarget,
    Destination,
    RoutingError,
    UnroutableTarget,
    alternates_after,
    called_user,
    destination_for,
    other_hops_left,
    over_tls_only,
)
from gateway.core.calls.targets import best_failure
from gateway.core.interfaces import Caller, RouteTarget
from gateway.core.logs import log_exception, transport_error_text
from gateway.core.sip.dialog import SIPS_NOT_ALLOWED, is_sips
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.events import (
    ALLOW_EVENTS,
    MESSAGE_SUMMARY,
    parse_event_untrusted,
    parse_subscription_state_untrusted,
)
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Request, Response, make_response
from gateway.core.sip.serializer import serialize_message
from gateway.core.sip.transaction import ServerTransaction
from gateway.core.sip.uri import SipUri, redact_password
from gateway.core.transport.flows import Flow

if TYPE_CHECKING:
    from gateway.core.config import TrunkConfig
    from gateway.core.endpoint import SipEndpoint
    from gateway.core.gateway import Gateway

log = logging.getLogger(__name__)

MAX_BODY = 16_384
"""The largest MESSAGE or NOTIFY body relayed (bytes); larger gets 513 (RFC 3428 §7: page mode
is for short messages; a session, MSRP, carries the rest)."""
MAX_NOTIFY_BODY = 4_096
"""The largest message-summary body relayed (RFC 3842 §5: a few lines of counts)."""
NO_RESPONSE = "Request Timeout (no response from the trunk)"
"""The reason of our 408 when a trunk's ``response_timeout`` passed without any response (the
relay's mark for failover and trunk health; the sender gets 504, :func:`best_answer`)."""
# What our Via adds to a request, counted when judging whether it fits a UDP datagram.
_VIA_ALLOWANCE = 100


class TooLargeForUdp(Exception):
    """The request would go over UDP and does not fit the path limit: 513."""


def check_udp_size(endpoint: SipEndpoint, request: Request, destination: Destination) -> None:
    """Raise :class:`TooLargeForUdp` when ``request`` would be sent over UDP (a fixed UDP flow,
    or a UDP destination with no TCP to switch to) above the endpoint's UDP size limit
    (RFC 3261 §18.1.1, RFC 3428 §7)."""
    from gateway.core.endpoint import UDP_SIZE_LIMIT

    if destination.transport != "udp":
        return
    can_switch = destination.flow is None and "tcp" in endpoint.gateway.plugins.transports
    if can_switch:
        return
    if len(serialize_message(request)) + _VIA_ALLOWANCE > UDP_SIZE_LIMIT:
        raise TooLargeForUdp()


async def send_and_wait(
    endpoint: SipEndpoint,
    request: Request,
    destination: Destination,
    *,
    trunk: TrunkConfig | None,
    cnonce: Callable[[], str],
    next_cseq: Callable[[], int] | None = None,
    on_sent: Callable[[Request], None] | None = None,
    on_unsent: Callable[[OSError], None] | None = None,
    give_up_after: float = 0.0,
) -> tuple[Request, Response]:
    """Send ``request`` (no Via: the endpoint adds ours) to ``destination`` and wait for its
    final response. A 401/407 is answered once with ``trunk``'s credentials (RFC 3261 §22.2) in
    a new transaction with CSeq ``next_cseq()`` (default: one more). Returns the request as last
    sent and its final response; one that cannot be sent ends in a 503 of ours (``on_unsent``
    told why), a timeout in a 408 (RFC 3261 §8.1.3.1). ``give_up_after`` (a trunk's
    ``response_timeout``; 0: never): a transaction without any response at all, not even a
    1xx, by then ends in our 408 :data:`NO_RESPONSE` (its later responses are dropped), so
    that the next target is tried before the sender's own transaction runs out. These 408s
    are for the caller to rank (:func:`best_answer`), never to pass on to a non-INVITE's
    sender (RFC 4320 §4.2)."""
    answered_challenge = False
    while True:
        try:
            client = await endpoint.send_request(
                request,
                transport=destination.transport,
                address=destination.address,
                flow=destination.flow,
            )
        except OSError as exc:
            log.info(
                "cannot send %s to %s: %s",
                request.method,
                redact_password(str(request.uri)),
                transport_error_text(exc),
            )
            if on_unsent is not None:
                on_unsent(exc)
            return request, make_response(request, 503, "Service Unavailable")
        sent = client.request
        if on_sent is not None:
            on_sent(sent)
        final: Response | None = None
        with trio.move_on_after(give_up_after or math.inf) as waiting:
            async for response in client.responses:
                waiting.deadline = math.inf  # it answers: Timer F decides from now on
                if response.status >= 200:
                    final = response
                    break
        if final is None:
            if waiting.cancelled_caught:
                client.forward_to(None)  # a late answer is nobody's to read
                return sent, make_response(request, 408, NO_RESPONSE)
            return sent, make_response(request, 408, "Request Timeout")
        usable = trunk is not None and trunk.username is not None and trunk.password is not None
        if final.status not in (401, 407) or answered_challenge or not usable:
            return sent, final
        assert trunk is not None and trunk.username is not None and trunk.password is not None
        answered_challenge = True
        cseq = next_cseq() if next_cseq is not None else sent.cseq.number + 1
        retry = sent.with_headers(sent.headers.remove("Via").set("CSeq", f"{cseq} {sent.method}"))
        authorized = authorize(
            retry, final, username=trunk.username, password=trunk.password, cnonce=cnonce()
        )
        if authorized is None:
            log.info("trunk %s challenged our %s with nothing we answer", trunk.name, sent.method)
            return sent, final
        request = authorized


@attrs.frozen
class Attempt:
    """One request to send to one target, with the trunk whose challenges it answers."""

    request: Request
    destination: Destination
    trunk: TrunkConfig | None = None
    target: RouteTarget | None = None


class Messages:
    """The endpoint's transaction user for out-of-dialog MESSAGE and unsolicited NOTIFY."""

    def __init__(self, gateway: Gateway, nursery: trio.Nursery) -> None:
        self.gateway = gateway
        self.endpoint = gateway.endpoint
        self._nursery = nursery
        self.relayed = 0
        """MESSAGE and NOTIFY requests relayed to at least one target, since the start."""

    # -- the endpoint's entry points -----------------------------------------------------------

    def message(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None:
        self._nursery.start_soon(self._answered, transaction, request, self._message(request, flow))

    def notify(self, transaction: ServerTransaction, request: Request, flow: Flow) -> None:
        self._nursery.start_soon(self._answered, transaction, request, self._notify(request, flow))

    async def _answered(
        self, transaction: ServerTransaction, request: Request, work: Awaitable[Response]
    ) -> None:
        """Run ``work`` and answer with what it returns; a bug is a 500, never the gateway's
        end (STYLE.md habit 6).

        At most 64*T1, the sender's own wait (Timer F, RFC 3261 §17.1.2.2), then no final
        response at all (RFC 4320 §4.2, which updates §16.7 step 6: no 408 to a non-INVITE;
        it could only reach the sender after its Timer F), the server transaction ended
        (:meth:`Endpoint.give_up`) and the attempts still under way cancelled (their client
        transactions end by their own timers): one target after another, each silent
        for its Timer F (a trunk without ``response_timeout``, the default), could go on for
        minutes, long after any answer could reach the sender, and past the endpoint's bound
        on a request nothing answers (TransactionTimers.unanswered), which takes a relay still
        working for a lost request and counts it an internal error. Kamailio's tm bounds a
        non-INVITE transaction so (``max_noninv_lifetime``)."""
        response: Response | None = None
        with trio.move_on_after(self.endpoint.transactions.timers.timeout):
            try:
                response = await work
            except Exception:
                log_exception(log, "internal error relaying %s %s", request.method, request.call_id)
                response = make_response(request, 500, "Server Internal Error")
        if response is None:
            log.info(
                "%s %s: no final answer within the sender's 64*T1: given up, none sent",
                request.method,
                request.call_id,
            )
            await self.endpoint.give_up(transaction)
            return
        if response.to.tag is None:  # RFC 3261 §8.2.6.2: a final response carries our tag
            to = response.to.with_tag(self.gateway.ids.new_tag())
            response = response.with_headers(response.headers.set("To", str(to)))
        await self.endpoint.respond(transaction, response)

    # -- MESSAGE -------------------------------------------------------------------------------

    async def _message(self, request: Request, flow: Flow) -> Response:
        if len(request.body) > MAX_BODY:
            return make_response(request, 513, f"Message Too Large (body over {MAX_BODY} bytes)")
        if request.body and request.content_type is None:
            return make_response(request, 400, "Bad Request (a body without Content-Type)")
        calls = self.gateway.calls
        assert calls is not None
        caller = calls.identify_caller(request, flow)
        if isinstance(caller, Response):
            return caller
        try:
            decision = calls.route(request, caller)
        except RoutingError as exc:
            log.error("MESSAGE %s: %s", request.call_id, exc)
            return make_response(request, 500, "Server Internal Error (routing)")
        if decision.reject_status is not None:
            return make_response(request, decision.reject_status, decision.reject_reason)
        targets, alternates = list(decision.targets), list(decision.alternates)
        if flow.secure and is_sips(request.uri):
            # RFC 5630 §3.1.3: a MESSAGE to a SIPS URI travels over TLS on every hop, the last
            # one to the recipient too: only contacts and trunks reached over TLS or WSS get it
            # (a sips: MESSAGE over another hop was refused by the endpoint).
            targets, alternates = list(over_tls_only(targets)), list(over_tls_only(alternates))
            if not targets and alternates:
                targets = [alternates.pop(0)]
            if not targets:
                reason = "Temporarily Unavailable (no device or trunk reached over TLS for SIPS)"
                return make_response(request, 480, reason, extra=[SIPS_NOT_ALLOWED])
        make = functools.partial(self._message_to, request, caller)
        made, finals = _usable(make, targets, request)
        winner, answered = await self.first_success(made)
        finals += answered
        last = list(finals)  # the last attempt's answers decide on failover, as for a call
        failover = self.gateway.config.sip.failover_statuses
        while (
            winner is None and alternates and last and all(_fails_over(f, failover) for f in last)
        ):
            if len(made) == 1 and len(last) == 1:
                # RFC 3263 §4.3: a trunk's next DNS target after its server's failure (503,
                # no response), else the next trunk (routing.alternates_after).
                alternates = alternates_after(alternates, made[0].target, last[0].status)
                if not alternates:
                    break
            tried, refused = _usable(make, alternates[:1], request)
            del alternates[0]
            winner, more = await self.first_success(tried)
            finals += refused + more
            if refused or more:
                made, last = tried, refused + more
            # else not sent at all (a bad URI): the failure before it stands, the next is tried
        if winner is not None:
            self.relayed += 1
            return make_response(request, winner.status, winner.reason)
        status, reason = best_answer(finals)
        return make_response(request, status, reason)

    def _message_to(self, request: Request, caller: Caller, target: RouteTarget) -> Attempt | None:
        """Our MESSAGE to ``target``; None (logged) when the target is not usable."""
        try:
            uri = parse_uri_untrusted(target.uri)
            destination = destination_for(target)
        except (RemoteSipError, UnroutableTarget) as exc:
            shown = redact_password(target.uri)  # a route plugin's or a contact's URI
            log.warning("MESSAGE %s: cannot send to %s: %s", request.call_id, shown, exc)
            return None
        config = self.gateway.config
        trunk = config.trunk(target.trunk) if target.trunk is not None else None
        from_uri = self.endpoint.our_uri(
            destination.transport, self._presented(caller, request, trunk)
        )
        identity: list[tuple[str, str]] = []
        if trunk is not None:
            identity.append(("P-Asserted-Identity", str(NameAddr(from_uri))))  # RFC 3325 §9.1
        display = request.from_.display_name
        from_ = NameAddr(from_uri, display_name=display).with_tag(self.gateway.ids.new_tag())
        if target.account is not None:
            to = NameAddr(self.endpoint.our_uri(destination.transport, target.account))
        elif isinstance(uri, SipUri):
            to = NameAddr(attrs.evolve(uri, params=(), headers=()))
        else:
            to = NameAddr(uri)
        fields = [
            ("Max-Forwards", str(max((request.max_forwards or 70) - 1, 1))),
            *_path_routes(target),
            ("From", str(from_)),
            ("To", str(to)),
            ("Call-ID", self.gateway.ids.new_call_id()),
            ("CSeq", "1 MESSAGE"),
            *identity,
            ("User-Agent", config.sip.user_agent),
        ]
        relayed = Request("MESSAGE", uri, Headers.of(fields))
        if request.body or request.content_type:
            relayed = relayed.with_body(request.body, request.content_type)
        check_udp_size(self.endpoint, relayed, destination)
        return Attempt(relayed, destination, trunk, target)

    def _presented(self, caller: Caller, request: Request, trunk: TrunkConfig | None) -> str:
        """Who sends, as our From's user part, as a call presents its caller: an account by
        its name, towards a trunk by its number there; a trunk's sender by the number it sent,
        read as E.164 by the trunk's plan (calls.call.Call._calling_user)."""
        calls = self.gateway.calls
        assert calls is not None and caller.name is not None
        if caller.kind == "account":
            if trunk is None or self.gateway.directory is None:
                return caller.name
            number = self.gateway.directory.account_number(trunk, caller.name)
            return caller.name if number is None else number
        user = request.from_.uri.user if isinstance(request.from_.uri, SipUri) else None
        caller_trunk = self.gateway.config.trunk(caller.name)
        if not user or caller_trunk is None:
            return "anonymous"
        return read_number(calls.plan_of(caller_trunk), user)

    # -- unsolicited NOTIFY --------------------------------------------------------------------

    async def _notify(self, request: Request, flow: Flow) -> Response:
        try:
            event = parse_event_untrusted(request.headers.get("Event"))
            state = request.headers.get("Subscription-State")
            if state is not None:
                parse_subscription_state_untrusted(state)
        except RemoteSipError as err:
            return make_response(request, err.status or 400, err.reason)
        if event.package != MESSAGE_SUMMARY:
            return make_response(
                request, 489, "Bad Event", to_tag=None, extra=[("Allow-Events", ALLOW_EVENTS)]
            )
        trunk_name = self.gateway.trunk_for_source(flow.remote[0])
        directory = self.gateway.directory
        if trunk_name is None or directory is None:
            return make_response(request, 403, "Forbidden (NOTIFY without a subscription)")
        if len(request.body) > MAX_NOTIFY_BODY:
            return make_response(request, 513, "Message Too Large (message-summary body)")
        account = self._notified_account(request, trunk_name)
        if account is None:
            return make_response(request, 404, "Not Found (no account for that number)")
        contacts = directory.contacts(account)
        if not contacts:
            return make_response(request, 480, "Temporarily Unavailable (no registered device)")
        made, finals = _usable(
            functools.partial(self._notify_to, request, account), contacts, request
        )
        winner, answered = await self.first_success(made)
        finals += answered
        if winner is not None:
            self.relayed += 1
            return make_response(request, 200)
        status, reason = best_answer(finals)
        return make_response(request, status, reason)

    def _notified_account(self, request: Request, trunk: str) -> str | None:
        """The account whose DID the Request-URI (else To) names, among ``trunk``'s ``dids``
        (compared as dial strings and as E.164, as calls from the trunk are)."""
        directory = self.gateway.directory
        assert directory is not None
        for uri in (request.uri, request.to.uri):
            user = called_user(uri) if uri is not None else None
            account = directory.did_account(trunk, user) if user else None
            if account is not None and directory.account_exists(account):
                return account
        return None

    def _notify_to(self, request: Request, account: str, target: ContactTarget) -> Attempt | None:
        try:
            uri = parse_uri_untrusted(target.uri)
            destination = destination_for(target)
        except (RemoteSipError, UnroutableTarget) as exc:
            shown = redact_password(target.uri)
            log.warning("NOTIFY for %s: cannot send to %s: %s", account, shown, exc)
            return None
        aor = NameAddr(self.endpoint.our_uri(destination.transport, account))
        fields = [
            ("Max-Forwards", "70"),
            *_path_routes(target),
            ("From", str(aor.with_tag(self.gateway.ids.new_tag()))),
            ("To", str(aor)),
            ("Call-ID", self.gateway.ids.new_call_id()),
            ("CSeq", "1 NOTIFY"),
            ("Contact", str(self.endpoint.our_contact(destination.transport))),
            ("Event", MESSAGE_SUMMARY),
            *[("Subscription-State", v) for v in request.headers.get_all("Subscription-State")],
            ("User-Agent", self.gateway.config.sip.user_agent),
        ]
        relayed = Request("NOTIFY", uri, Headers.of(fields))
        if request.body:
            relayed = relayed.with_body(request.body, request.content_type)
        check_udp_size(self.endpoint, relayed, destination)
        return Attempt(relayed, destination)

    # -- sending -------------------------------------------------------------------------------

    async def first_success(
        self, attempts: Sequence[Attempt]
    ) -> tuple[Response | None, list[Response]]:
        """Send every attempt at once; the first 2xx, else None and every final response.
        Those still running when a 2xx came finish in the background (a non-INVITE is not
        cancelled, RFC 3261 §9.1)."""
        if not attempts:
            return None, []
        send, receive = trio.open_memory_channel[Response](len(attempts))
        for attempt in attempts:
            self._nursery.start_soon(self._one, attempt, send.clone())
        send.close()
        finals: list[Response] = []
        async with receive:
            async for final in receive:
                if final.is_success:
                    return final, finals
                finals.append(final)
        return None, finals

    async def _one(self, attempt: Attempt, results: trio.MemorySendChannel[Response]) -> None:
        async with results:
            unsent: list[OSError] = []
            try:
                trunk = attempt.trunk
                _, final = await send_and_wait(
                    self.endpoint,
                    attempt.request,
                    attempt.destination,
                    trunk=trunk,
                    cnonce=lambda: self.gateway.ids.token_hex(8),
                    on_unsent=unsent.append,
                    # A silent trunk is left for its next target or trunk, as a call leaves it.
                    give_up_after=trunk.response_timeout if trunk is not None else 0.0,
                )
                if trunk is not None:
                    self._count_trunk_failure(trunk, attempt.target, final, unsent)
            except Exception:
                log_exception(log, "internal error sending %s", attempt.request.method)
                final = make_response(attempt.request, 500, "Server Internal Error")
            # After a 2xx was answered nobody waits for this one: the channel is closed.
            with contextlib.suppress(trio.BrokenResourceError, trio.WouldBlock):
                results.send_nowait(final)

    def _count_trunk_failure(
        self,
        trunk: TrunkConfig,
        target: RouteTarget | None,
        final: Response,
        unsent: Sequence[OSError],
    ) -> None:
        """A MESSAGE that ``trunk`` never got (a transport error) or never answered (its
        ``response_timeout``) marks it down exactly as a call's INVITE does (Call._give_up,
        Call._send_b_invite): through the same CallManager.trunk_failed, so the same log line
        and ``voipgw_trunk_up`` metric; a trunk without OPTIONS probes is never marked down, and
        a DNS target with others after it is one server's failure (RFC 3263 §4.3)."""
        if other_hops_left(target):
            return
        calls = self.gateway.calls
        assert calls is not None
        if unsent:
            calls.trunk_failed(trunk.name, f"cannot send to it: {transport_error_text(unsent[0])}")
        elif final.status == 408 and final.reason == NO_RESPONSE:
            why = f"no response to a MESSAGE within {trunk.response_timeout:g} s"
            calls.trunk_failed(trunk.name, why)


def _usable(
    make: Callable[[Any], Attempt | None], targets: Sequence[RouteTarget], request: Request
) -> tuple[list[Attempt], list[Response]]:
    """The attempts ``make`` makes for ``targets``, and a 513 for each target the request
    would not fit over UDP (RFC 3428 §7; :func:`best_answer` picks among them). A target that
    is not usable at all is left out."""
    attempts: list[Attempt] = []
    too_large: list[Response] = []
    for target in targets:
        try:
            attempt = make(target)
        except TooLargeForUdp:
            too_large.append(make_response(request, 513, "Message Too Large (for UDP)"))
            continue
        if attempt is not None:
            attempts.append(attempt)
    return attempts, too_large


def _fails_over(final: Response, failover: Sequence[int]) -> bool:
    """Whether ``final`` sends a MESSAGE on to its next alternate: one of ``[sip]
    failover_statuses``, or our own timeout (a trunk's ``response_timeout``), whatever they
    say, as for a call."""
    return final.status in failover or (final.status == 408 and final.reason == NO_RESPONSE)


def best_answer(finals: Sequence[Response]) -> tuple[int, str]:
    """The failure to answer a sender whose request no target accepted: 513 when it fitted
    none of them, else the best failure among those it was sent to (as for a call), never a
    408 (RFC 4320 §4.2): 504 when every target was left for want of a response
    (:data:`~gateway.core.calls.targets.NO_TIMELY_RESPONSE`)."""
    sent = [final for final in finals if final.status != 513]
    if finals and not sent:
        return 513, "Message Too Large (for UDP to the target)"
    return best_failure(sent, non_invite=True)


def _path_routes(target: RouteTarget) -> list[tuple[str, str]]:
    """RFC 3327 §5.3: a contact registered with a Path is reached through it."""
    if isinstance(target, ContactTarget):
        return [("Route", hop) for hop in target.binding.path]
    return []
