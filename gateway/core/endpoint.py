"""The SIP endpoint: the trio adapter between transports and the sans-IO SIP layer.

One task reads the bounded inbound queue (``Gateway.deliver``), parses each message as untrusted
input and answers what the gateway itself answers: malformed requests get 400 (or 505/416/513)
with a reason phrase naming the defect, malformed responses are dropped (RFC 3261 §18.1.2), and
OPTIONS addressed to the gateway get 200 (RFC 3261 §11.2). Nothing a peer sends can end this task:
an unexpected exception while handling one message is logged with the flow and counted, and the
next message is served.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable
from typing import TYPE_CHECKING

import attrs
import trio

from gateway.core.interfaces import OutboundMessage
from gateway.core.sip import grammar
from gateway.core.sip.errors import RemoteSipError, SipError
from gateway.core.sip.message import Headers, Request, Response, make_response
from gateway.core.sip.parser import parse_message_untrusted, salvage_request_headers
from gateway.core.sip.serializer import serialize_message
from gateway.core.sip.transaction import (
    Output,
    RequestReceived,
    SendResponse,
    Transaction,
    TransactionLimitReached,
    TransactionTable,
    TransactionTerminated,
    TransactionTimeout,
    TransactionTimers,
    TransportFailed,
    UnmatchedResponse,
)
from gateway.core.sip.via import Hop, response_target, stamp_received, stamp_request
from gateway.core.transport.flows import Flow, format_address

if TYPE_CHECKING:
    from gateway.core.gateway import Gateway

log = logging.getLogger(__name__)

ALLOWED_METHODS = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER")
SUPPORTED_EXTENSIONS: tuple[str, ...] = ()


@attrs.define
class EndpointStatistics:
    received: int = 0
    rejected_malformed: int = 0
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
        self.transactions = TransactionTable(
            timers=TransactionTimers(t1=sip.t1, t2=sip.t2, t4=sip.t4)
        )
        # The flow each server transaction's request arrived over: its responses go back there.
        self._server_flows: dict[Transaction, Flow] = {}

    async def run(
        self,
        inbound: trio.MemoryReceiveChannel[tuple[bytes, Flow]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve inbound messages and transaction timers from one task, so the sans-IO
        transaction table is never touched concurrently."""
        task_status.started()
        while True:
            deadline = self.transactions.get_timer()
            item: tuple[bytes, Flow] | None = None
            with trio.move_on_at(math.inf if deadline is None else deadline):
                try:
                    item = await inbound.receive()
                except trio.EndOfChannel:
                    return
            if item is not None:
                data, flow = item
                self.statistics.received += 1
                await self._guarded(self.handle(data, flow), flow)
            now = trio.current_time()
            deadline = self.transactions.get_timer()
            if deadline is not None and deadline <= now:
                await self._guarded(self._act(self.transactions.handle_timer(now=now)), None)

    async def _guarded(self, work: Awaitable[None], flow: Flow | None) -> None:
        try:
            await work
        except Exception:
            # A bug, not the peer's fault; keep serving everyone else (STYLE.md habit 6).
            self.statistics.internal_errors += 1
            log.exception("internal error handling SIP from %s", flow.key if flow else "timers")

    def flow_closed(self, flow: Flow) -> None:
        log.debug("flow closed: %s", flow.key)

    # -- inbound ------------------------------------------------------------------------------

    async def handle(self, data: bytes, flow: Flow) -> None:
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
            await self._act(self.transactions.receive_response(message, now=now))
            return
        # RFC 3261 §18.2.1 / RFC 3581: remember where the request really came from.
        hop = _hop(flow)
        request = stamp_request(message, hop)
        try:
            outputs = self.transactions.receive_request(request, source=hop, now=now)
        except TransactionLimitReached as err:
            log.warning("transaction limit reached: answering %s statelessly", flow.key)
            await self.send_response(
                make_response(request, err.status or 503, err.reason, to_tag=self._tag()), flow
            )
            return
        await self._act(outputs, flow)

    async def _act(self, outputs: list[Output], arrival: Flow | None = None) -> None:
        """Carry out what the transaction layer asked for, in order."""
        for output in outputs:
            if isinstance(output, RequestReceived):
                assert arrival is not None
                self._server_flows[output.transaction] = arrival
                response = self.respond(output.request, arrival)
                await self._act(
                    self.transactions.send_response(
                        output.transaction, response, now=trio.current_time()
                    )
                )
            elif isinstance(output, SendResponse):
                flow = self._server_flows.get(output.transaction) or arrival
                if flow is not None:
                    await self.send_response(output.response, flow)
            elif isinstance(output, TransactionTerminated):
                self._server_flows.pop(output.transaction, None)
            elif isinstance(output, UnmatchedResponse):
                self.statistics.dropped_unmatched_responses += 1
                log.debug("dropping unmatched response %d", output.response.status)
            elif isinstance(output, TransactionTimeout | TransportFailed):
                log.info("transaction %s: %s", output.transaction.key, type(output).__name__)
            # AckReceived (ACK for a 2xx) and SendRequest belong to the call layer, which
            # sends no requests yet.

    async def _reject_unparsable(self, data: bytes, flow: Flow, err: RemoteSipError) -> None:
        source = format_address(flow.remote)
        if err.status is None:
            self.statistics.dropped_malformed_responses += 1
            log.info("dropping malformed response from %s: %s", source, err.reason)
            return
        self.statistics.rejected_malformed += 1
        headers = salvage_request_headers(data)
        if headers is None or headers.get("Via") is None:
            log.info(
                "dropping malformed request from %s (no Via to answer): %s", source, err.reason
            )
            return
        log.info("rejecting malformed request from %s with %d: %s", source, err.status, err.reason)
        top = grammar.parse_via_untrusted(headers.get("Via") or "")
        headers = headers.set(
            "Via", str(stamp_received(top, _hop(flow))), *headers.get_all("Via")[1:]
        )
        response = Response(status=err.status, reason=_reason_phrase(err.reason), headers=headers)
        await self.send_response(response, flow)

    def respond(self, request: Request, flow: Flow) -> Response:
        """The gateway's answer to a new request (the server transaction sends it)."""
        max_forwards = request.max_forwards
        if max_forwards == 0 and request.method != "OPTIONS":
            # RFC 3261 §16.3 step 2 / RFC 4475 §3.3.11: OPTIONS may be answered locally.
            return self._response(request, 483)
        unsupported = _unsupported_extensions(request.headers)
        if unsupported and request.method != "CANCEL":
            # RFC 3261 §8.2.2.3
            return self._response(request, 420, extra=[("Unsupported", ", ".join(unsupported))])
        if request.method == "OPTIONS":
            return self._response(request, 200, extra=self._capabilities())
        if request.method == "CANCEL":
            # RFC 3261 §9.2: 481 when no INVITE transaction matches; INVITEs are answered at
            # once here, so a matching CANCEL finds nothing left to cancel.
            target = self.transactions.find_cancel_target(request)
            return self._response(request, 481 if target is None else 200)
        if request.method == "REGISTER" and self.gateway.registration is not None:
            return self.gateway.registration.handle(request, flow)
        if request.method not in ALLOWED_METHODS:
            return self._response(request, 405, extra=[("Allow", ", ".join(ALLOWED_METHODS))])
        return self._response(request, 501, "Not Implemented Yet In This Gateway")

    def _capabilities(self) -> list[tuple[str, str]]:
        return [
            ("Allow", ", ".join(ALLOWED_METHODS)),
            ("Accept", "application/sdp"),
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
        try:
            flow = await self._response_flow(response, flow)
        except OSError as exc:
            self.statistics.send_errors += 1
            log.info("cannot route %d for %s: %s", response.status, flow.key, exc)
            return
        outbound = OutboundMessage(message=response, flow=flow)
        self.gateway.plugins.hook.gateway_outbound_message(outbound=outbound)
        message = outbound.message
        if not isinstance(message, Request | Response):
            raise SipError(
                "a gateway_outbound_message hook replaced the message with a non-message"
            )
        try:
            await flow.send(serialize_message(message))
            self.statistics.sent += 1
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.statistics.send_errors += 1
            log.info("cannot send %d to %s: %s", response.status, flow.key, exc)

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


def _hop(flow: Flow) -> Hop:
    return Hop(flow.transport, flow.remote[0], flow.remote[1])


def _reason_phrase(reason: str) -> str:
    """A reason phrase is one line of text (RFC 3261 §25.1 Reason-Phrase)."""
    return " ".join(reason.split())[:200] or "Bad Request"


def _unsupported_extensions(headers: Headers) -> list[str]:
    required: list[str] = []
    for value in headers.get_all("Require"):
        required.extend(part.strip() for part in value.split(",") if part.strip())
    return [ext for ext in required if ext not in SUPPORTED_EXTENSIONS]
