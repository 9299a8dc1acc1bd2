"""INVITE sessions the gateway opens for a plugin (a SIPREC recording session, RFC 7866).

Theory of operation. A tap that sends a call's media somewhere over SIP (an SRS) must not speak
SIP by itself: it asks :class:`OutboundSessions` (``interfaces.OutboundSessionHost``, lent to it
with the call) to open one. :meth:`OutboundSessions.open_session` sends the INVITE with the
plugin's body through the endpoint's client transactions (retransmission, Timer B), waits for the
final response (1xx are passed over), ACKs a 2xx (RFC 3261 §13.2.2.4) and returns the session,
whose dialog is registered so the far end's in-dialog requests reach it: its BYE is answered
200 and sets ``ended``; any other request gets 501 (no re-INVITE from the far end is
understood). :meth:`OutboundSession.close` sends BYE (once). A failure response, a timeout or an
unreachable target raise :class:`SessionRefused` with a reason to log. A re-INVITE
(:meth:`OutboundSession.update`) returns the far end's status and keeps the Retry-After of a
refusal (``retry_after``); a 481 to it means the far end no longer knows the dialog, which is
then over without a BYE (RFC 5057 §5.1), as if the far end had sent one (``ended``).

The far end is trusted by address: a 401/407 challenge is a refusal (no credentials are kept
for it).

A body that carries keys (SDES a=crypto, RFC 4568 §8.3) may only go over TLS: with
``secure_only`` the INVITE and each re-INVITE are sent only over a secure flow; where the target
or the dialog's remote target leads elsewhere the request is not sent (a refusal, or None).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from gateway.core.calls.routing import UnroutableTarget, destination_for
from gateway.core.interfaces import RouteTarget
from gateway.core.sip.dialog import Dialog, is_sips
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Request, Response, make_response
from gateway.core.transport.flows import TLS_TRANSPORTS, Flow

if TYPE_CHECKING:
    from gateway.core.endpoint import SipEndpoint
    from gateway.core.ids import IdSource

log = logging.getLogger(__name__)


class SessionRefused(Exception):
    """The session could not be opened; ``str`` says why (status and reason, or the error)."""


class OutboundSession:
    """One INVITE dialog we opened: the far end's answer, and its end."""

    def __init__(
        self,
        owner: OutboundSessions,
        dialog: Dialog,
        flow: Flow,
        answer: Response,
        contact: NameAddr,
    ) -> None:
        self._owner = owner
        self._dialog = dialog
        self._flow = flow
        self._contact = contact
        self.answer_body = answer.body
        self.answer_type = answer.headers.get("Content-Type")
        self.ended = trio.Event()
        """Set when the far end sent BYE (or our BYE went out, or it answered a re-INVITE 481)."""
        self.retry_after: int | None = None
        """The Retry-After (seconds) of the far end's last refusal of a re-INVITE, if it sent
        one (RFC 3261 §20.33: a 500 or 503 may say when to try again)."""
        self._closed = False

    @property
    def call_id(self) -> str:
        return self._dialog.id.call_id

    async def close(self) -> None:
        """BYE, unless the far end ended the session already; waits for its final response
        (at most Timer F)."""
        if self._closed:
            return
        self._closed = True
        self._owner._forget(self)
        if self.ended.is_set():
            return
        self.ended.set()
        endpoint = self._owner.endpoint
        try:
            flow = await self._owner._dialog_flow(self._dialog, self._flow)
            bye = self._dialog.create_request("BYE", via=endpoint.new_via(flow))
            self._dialog.terminate()
            client = await endpoint.send_request(
                bye, transport=flow.transport, address=flow.remote, flow=flow
            )
            async for response in client.responses:
                if response.status >= 200:
                    break
        except OSError as exc:
            log.info("session %s: BYE not sent: %s", self.call_id, exc)

    async def update(
        self, body: bytes, content_type: str, *, secure_only: bool = False
    ) -> int | None:
        """A re-INVITE with a new offer (RFC 3261 §14.1); the far end's final status (its 2xx
        ACKed, its body then in ``answer_body``), or None when the session is over or the
        request could not be sent (with ``secure_only``: not over TLS)."""
        if self._closed or self.ended.is_set():
            return None
        endpoint = self._owner.endpoint
        try:
            flow = await self._owner._dialog_flow(self._dialog, self._flow)
            if secure_only and not flow.secure:
                log.warning(
                    "session %s: re-INVITE not sent: it carries keys and its next hop (%s) is "
                    "not TLS (RFC 4568 §8.3)",
                    self.call_id,
                    flow.transport,
                )
                return None
            reinvite = self._dialog.create_request(
                "INVITE",
                via=endpoint.new_via(flow),
                contact=self._contact,
                body=body,
                content_type=content_type,
            )
            client = await endpoint.send_request(
                reinvite, transport=flow.transport, address=flow.remote, flow=flow
            )
            final: Response | None = None
            async for response in client.responses:
                if response.status >= 200:
                    final = response
                    break
            if final is None:
                return None
            self.retry_after = retry_after_untrusted(final.headers.get("Retry-After"))
            if final.status == 481:
                # RFC 5057 §5.1: a 481 to a request in the dialog says the far end has no such
                # dialog (it restarted, or it dropped it): the dialog, and its session, are over
                # without a BYE.
                self._far_end_gone()
                return final.status
            if final.is_success:
                self.answer_body = final.body
                self.answer_type = final.headers.get("Content-Type")
                ack = self._dialog.create_ack(final.cseq.number, via=endpoint.new_via(flow))
                await endpoint.send_ack(ack, flow)
            return final.status
        except OSError as exc:
            log.info("session %s: re-INVITE not sent: %s", self.call_id, exc)
            return None

    def _far_end_request(self, request: Request) -> Response:
        if request.method == "BYE":
            self._far_end_gone()
            return make_response(request, 200)
        return make_response(request, 501, "Not Implemented")

    def _far_end_gone(self) -> None:
        self._closed = True
        self._dialog.terminate()
        self.ended.set()
        self._owner._forget(self)


MAX_RETRY_AFTER_DIGITS = 10


def retry_after_untrusted(value: str | None) -> int | None:
    """The delta-seconds of a Retry-After header (RFC 3261 §20.33: ``delta-seconds [ comment ]
    *( SEMI retry-param )``), or None when there is none or it is not that."""
    if value is None:
        return None
    digits = value.strip().split(";", 1)[0].split("(", 1)[0].strip()
    if not digits.isascii() or not digits.isdigit() or len(digits) > MAX_RETRY_AFTER_DIGITS:
        return None
    return int(digits)


class OutboundSessions:
    """Opens sessions for plugins and routes their in-dialog requests."""

    def __init__(self, endpoint: SipEndpoint, ids: IdSource, user_agent: str) -> None:
        self.endpoint = endpoint
        self._ids = ids
        self._user_agent = user_agent
        self._by_dialog: dict[tuple[str, str], OutboundSession] = {}

    async def open_session(
        self,
        target: str,
        *,
        body: bytes,
        content_type: str,
        headers: Sequence[tuple[str, str]] = (),
        contact_parameters: Sequence[str] = (),
        secure_only: bool = False,
    ) -> OutboundSession:
        """INVITE ``target`` (a SIP URI; its ``transport`` parameter and port say how) with
        ``body``; the session once the far end answered 2xx. ``headers`` are added (e.g.
        ``Require: siprec``), ``contact_parameters`` go on our Contact (``+sip.src``, RFC 7866
        §6.1.1). ``secure_only``: the body carries keys, send it over TLS or not at all.
        Raises :class:`SessionRefused`."""
        try:
            uri = parse_uri_untrusted(target)
            destination = destination_for(RouteTarget(target))
        except (RemoteSipError, UnroutableTarget) as exc:
            raise SessionRefused(f"{target} is not a usable SIP URI ({exc})") from None
        endpoint = self.endpoint
        try:
            flow = await endpoint.flow_to(
                destination.transport, (destination.host, destination.port), destination.flow
            )
        except OSError as exc:
            raise SessionRefused(f"cannot reach {target}: {exc}") from None
        if secure_only and not flow.secure:
            raise SessionRefused(
                f"{target} is reached over {flow.transport}, not TLS: the offer carries keys "
                "(RFC 4568 §8.3)"
            )
        our_uri = endpoint.our_uri(flow.transport, "voipgw")
        # RFC 3261 §12.1.1 (§8.1.1.8): a request to a sips: URI that makes a dialog carries a
        # sips: Contact, so the far end's requests in the dialog come back over TLS too.
        # Over TLS only (a WSS flow keeps its transport=wss Contact, as the call legs do).
        sips = flow.transport == "tls" and is_sips(uri)
        contact = endpoint.our_contact(flow.transport, sips=sips)
        for parameter in contact_parameters:
            contact = contact.with_param(parameter)
        request = Request(
            "INVITE",
            uri,
            Headers.of(
                [
                    ("Max-Forwards", "70"),
                    ("From", f"{NameAddr(our_uri)};tag={self._ids.new_tag()}"),
                    ("To", str(NameAddr(uri))),
                    ("Call-ID", self._ids.new_call_id()),
                    ("CSeq", "1 INVITE"),
                    ("Contact", str(contact)),
                    *headers,
                    ("User-Agent", self._user_agent),
                ]
            ),
        ).with_body(body, content_type)
        try:
            client = await endpoint.send_request(
                request, transport=flow.transport, address=flow.remote, flow=flow
            )
        except OSError as exc:
            raise SessionRefused(f"cannot send to {target}: {exc}") from None
        sent = client.request
        final: Response | None = None
        async for response in client.responses:
            if response.status >= 200:
                final = response
                break
        if final is None:
            raise SessionRefused(f"no answer from {target}")
        if not final.is_success:
            raise SessionRefused(f"{target} answered {final.status} {final.reason}")
        dialog = Dialog.create_uac(sent, final, over_tls=flow.transport in TLS_TRANSPORTS)
        # Registered before the ACK goes: the far end may BYE as soon as it has it.
        session = OutboundSession(self, dialog, client.flow, final, contact)
        self._by_dialog[(dialog.id.call_id, dialog.id.local_tag)] = session
        try:
            ack_flow = await self._dialog_flow(dialog, client.flow)
            session._flow = ack_flow
            ack = dialog.create_ack(final.cseq.number, via=endpoint.new_via(ack_flow))
            await endpoint.send_ack(ack, ack_flow)
        except OSError as exc:
            self._forget(session)
            raise SessionRefused(f"cannot ACK {target}'s answer: {exc}") from None
        return session

    def in_dialog(self, request: Request) -> Response | None:
        """The answer to a far end's request in one of our sessions; None when it is not one."""
        tag = request.to.tag
        if tag is None:
            return None
        session = self._by_dialog.get((request.call_id, tag))
        if session is None:
            return None
        return session._far_end_request(request)

    async def _dialog_flow(self, dialog: Dialog, opened: Flow) -> Flow:
        """Where the dialog's requests (the 2xx's ACK, BYE) go: its remote target or first
        route (RFC 3261 §12.2.1.1), over ``opened`` when that is where it leads."""
        try:
            destination = destination_for(RouteTarget(str(dialog.next_hop_uri())))
        except UnroutableTarget:
            return opened
        address = (destination.host, destination.port)
        if destination.transport != opened.transport or address != opened.remote:
            try:
                return await self.endpoint.flow_to(destination.transport, address)
            except OSError as exc:
                # A Contact we cannot reach (a host name, another transport): where the
                # INVITE went is where the session was answered from.
                log.info("session %s: its remote target is unreachable (%s)", dialog.id, exc)
        return await self.endpoint.flow_to(opened.transport, opened.remote, opened)

    def _forget(self, session: OutboundSession) -> None:
        key = (session._dialog.id.call_id, session._dialog.id.local_tag)
        if self._by_dialog.get(key) is session:
            del self._by_dialog[key]
