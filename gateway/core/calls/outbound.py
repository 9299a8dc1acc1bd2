"""INVITE sessions the gateway opens for a plugin (a SIPREC recording session, RFC 7866).

Theory of operation. A tap that sends a call's media somewhere over SIP (an SRS) must not speak
SIP by itself: it asks :class:`OutboundSessions` (``interfaces.OutboundSessionHost``, lent to it
with the call) to open one. :meth:`OutboundSessions.open_session` sends the INVITE with the
plugin's body through the endpoint's client transactions (retransmission, Timer B), waits for the
final response (1xx are passed over), ACKs a 2xx (RFC 3261 §13.2.2.4) and returns the session,
whose dialog is registered so the far end's in-dialog requests reach it: its BYE is answered
200 and sets ``ended``; its re-INVITE or UPDATE is a session refresh (RFC 4028), answered 200
with the session timer. What such a request carries (a new offer, RFC 3264 §8, or a body of the
plugin's protocol) is the plugin's to read (``on_request``: its answer, or a refusal that leaves
the session as it was); without a reader, and for a re-INVITE without an offer (RFC 3261 §14.2),
the answer or offer is the SDP in force: that of our last offer it took, or of the plugin's last
answer. The answer to such an offer comes in the ACK (§13.2.2.4) and goes to the plugin's
``on_ack_answer``; an ACK cannot be refused, so one that is missing or unusable is logged and
the session stays as it was (no BYE: our offer was the SDP already in force). Until the far end
ACKs our 2xx to its re-INVITE, our own re-INVITE waits (§14.1). Any other request gets 501.
:meth:`OutboundSession.close` sends BYE (once).

Session timers (RFC 4028) reuse the call legs' sans-IO rules (``sip/session_timer.py``):
``open_session(session_expires=)`` offers one with us refreshing (§7.1), a 422 is asked again
once at its Min-SE (§7.3), and each 2xx, ours or the far end's, sets ``timer``. The plugin acts
on ``timer.due``: it refreshes (:meth:`OutboundSession.refresh`, an UPDATE without a body, where
the far end allows UPDATE; else :meth:`OutboundSession.update`, whose re-INVITE refreshes too),
or ends the session the far end stopped refreshing. Where no timer runs,
:meth:`OutboundSession.probe` (an OPTIONS in the dialog, RFC 3261 §11) tells whether the far
end is still there.

A plugin that stops waiting for an answer (it is cancelled: its own timeout, or its call ended)
leaves the INVITE or re-INVITE to :meth:`OutboundSessions._abandoned`: CANCEL once a provisional
response came (RFC 3261 §9.1), and a 2xx that comes anyway ACKed (§13.2.2.4) and, for a new
session nobody holds, ended with BYE (§15). A failure response, a timeout or an
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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from gateway.core.calls.routing import Destination, UnroutableTarget, destination_for
from gateway.core.interfaces import RouteTarget, SessionAnswer
from gateway.core.logs import log_exception, transport_error_text
from gateway.core.sip.dialog import Dialog, is_sips
from gateway.core.sip.errors import RemoteSipError, SipError
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Request, Response, cancel_for, make_response
from gateway.core.sip.session_timer import (
    MIN_INTERVAL,
    UAC,
    UAS,
    IntervalTooSmall,
    LegTimer,
    allows_update,
    answer_as_uas,
    expires_in_2xx,
    leg_timer,
    min_se_of_422,
    request_headers,
    supports_timer,
)
from gateway.core.sip.transaction import State, key_text
from gateway.core.sip.uri import redact_password
from gateway.core.transport.flows import TLS_TRANSPORTS, Flow, format_host_port

if TYPE_CHECKING:
    from gateway.core.calls.trunk_dns import TrunkTargets
    from gateway.core.endpoint import ClientRequest, SipEndpoint
    from gateway.core.ids import IdSource
    from gateway.core.sip.transaction import ServerTransaction
    from gateway.core.sip.uri import Uri

log = logging.getLogger(__name__)


class SessionRefused(Exception):
    """The session could not be opened; ``str`` says why (status and reason, or the error)."""


class ServerFailed(SessionRefused):
    """The session could not be opened at one target for the server's failure: a transport
    error, no answer, 408 or 503 (RFC 3263 §4.3: the next target of a name is tried)."""


class OutboundSession:
    """One INVITE dialog we opened: the far end's answer, its session timer, and its end."""

    def __init__(
        self,
        owner: OutboundSessions,
        dialog: Dialog,
        flow: Flow,
        answer: Response,
        contact: NameAddr,
        *,
        session_expires: int = 0,
        min_se: int = MIN_INTERVAL,
        sdp: bytes = b"",
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
        self.session_expires = session_expires
        """The session interval we ask for (RFC 4028); 0: none, only the far end's honoured."""
        self.min_se = min_se
        """The least interval we accept, raised by a 422's Min-SE (RFC 4028 §7.3)."""
        self.timer: LegTimer | None = None
        """The session timer in force (RFC 4028): when we refresh, or when the far end had to;
        None without one. Set by the 2xx of each INVITE, re-INVITE or UPDATE either side sends."""
        self.allows_update = allows_update(answer.headers)
        """The far end listed UPDATE in its Allow (RFC 3311): a refresh need not re-offer."""
        self.on_request: Callable[[str, str | None, bytes], SessionAnswer] | None = None
        """The plugin's reader of the far end's re-INVITE or UPDATE with a body
        (``interfaces.OutboundSession.on_request``); None: our last SDP answers an offer."""
        self.on_ack_answer: Callable[[str | None, bytes], None] | None = None
        """The plugin's reader of the answer in the far end's ACK, where our 2xx to its
        re-INVITE without an offer offered (``interfaces.OutboundSession.on_ack_answer``)."""
        # The CSeq of the far end's re-INVITE whose 2xx carries our offer: its ACK carries the
        # answer (RFC 3261 §14.2, §13.2.2.4). None when no such ACK is awaited.
        self._offered_in_2xx: int | None = None
        self._sdp = sdp
        self._offering = False  # our re-INVITE is out, not answered yet
        # Set once the far end ACKed our 2xx to its re-INVITE; None when none is waiting.
        self._awaiting_ack: trio.Event | None = None
        # Set once our answer to the far end's last request went out.
        self._responding: trio.Event | None = None
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
        self._drop_handlers()
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
            log.info("session %s: BYE not sent: %s", self.call_id, transport_error_text(exc))

    async def update(
        self, body: bytes, content_type: str, *, secure_only: bool = False, sdp: bytes = b""
    ) -> int | None:
        """A re-INVITE with a new offer (RFC 3261 §14.1); the far end's final status (its 2xx
        ACKed, its body then in ``answer_body``), or None when the session is over or the
        request could not be sent (with ``secure_only``: not over TLS). ``sdp``: the offer's
        SDP (the body's, or its part), what the far end's own re-INVITE is answered with once
        this one is taken. Asks for the session timer and refreshes it (RFC 4028 §7.4).
        Waits first (at most 64*T1) for the ACK of our 2xx to a re-INVITE of the far end: no
        new INVITE transaction while one is in progress either way (RFC 3261 §14.1)."""
        self._offering = True
        try:
            with trio.move_on_after(64 * self._owner.endpoint.gateway.config.sip.t1):
                for pending in (self._responding, self._awaiting_ack):
                    if pending is not None:
                        await pending.wait()
            status = await self._request("INVITE", body, content_type, secure_only)
        finally:
            self._offering = False
        if status is not None and 200 <= status < 300 and sdp:
            self._sdp = sdp
        return status

    async def refresh(self) -> int | None:
        """A session refresh without a new offer (RFC 4028 §10): an UPDATE without a body
        (RFC 3311), for a far end that allows it (``allows_update``; otherwise refresh with
        :meth:`update`). The far end's final status, or None as :meth:`update`."""
        return await self._request("UPDATE", b"", None, False)

    async def probe(self) -> int | None:
        """An OPTIONS in the dialog (RFC 3261 §11), to learn whether the far end still has the
        session where no session timer runs: its final status (any, even 405 or 501, says it
        is there; a 481 that it lost the dialog, which is then over as for a re-INVITE), or
        None without one (Timer F: it is gone). Not a session refresh (RFC 4028 §10)."""
        return await self._request("OPTIONS", b"", None, False)

    async def _request(
        self, method: str, body: bytes, content_type: str | None, secure_only: bool
    ) -> int | None:
        if self._closed or self.ended.is_set():
            return None
        endpoint = self._owner.endpoint
        raised = False  # RFC 4028 §7.3: a 422 is answered by asking again once, at its Min-SE
        try:
            while True:
                flow = await self._owner._dialog_flow(self._dialog, self._flow)
                if secure_only and not flow.secure:
                    log.warning(
                        "session %s: re-INVITE not sent: it carries keys and its next hop (%s) "
                        "is not TLS (RFC 4568 §8.3)",
                        self.call_id,
                        flow.transport,
                    )
                    return None
                request = self._dialog.create_request(
                    method,
                    via=endpoint.new_via(flow),
                    contact=self._contact,
                    extra=self._timer_headers() if method != "OPTIONS" else (),
                    body=body,
                    content_type=content_type,
                )
                client = await endpoint.send_request(
                    request, transport=flow.transport, address=flow.remote, flow=flow
                )
                final = await self._owner._final(client, None, self)
                if final is None:
                    return None
                if final.status == 422 and not raised and self._ask_longer(final):
                    raised = True
                    continue
                break
            self.retry_after = retry_after_untrusted(final.headers.get("Retry-After"))
            if final.status == 481:
                # RFC 5057 §5.1: a 481 to a request in the dialog says the far end has no such
                # dialog (it restarted, or it dropped it): the dialog, and its session, are over
                # without a BYE.
                self._far_end_gone()
                return final.status
            if method == "OPTIONS":
                return final.status  # RFC 4028: no refresh (nor a failed one)
            if final.is_success:
                self._refreshed(final)
                if method == "INVITE":
                    self.answer_body = final.body
                    self.answer_type = final.headers.get("Content-Type")
                    ack = self._dialog.create_ack(final.cseq.number, via=endpoint.new_via(flow))
                    await endpoint.send_ack(ack, flow)
            else:
                self._refresh_failed()
            return final.status
        except OSError as exc:
            log.info("session %s: %s not sent: %s", self.call_id, method, transport_error_text(exc))
            if method != "OPTIONS":
                self._refresh_failed()
            return None

    # -- session timers (RFC 4028), with the call legs' sans-IO rules (sip/session_timer.py) --

    def _timer_headers(self) -> list[tuple[str, str]]:
        """What our INVITE, re-INVITE or UPDATE says of the session timer (RFC 4028 §7.1,
        §7.4): the interval in force and who refreshes it, kept (``refresher`` is relative to
        this transaction, in which we are the UAC); before there is one, the interval we ask
        for with us refreshing (we can, with re-INVITE or UPDATE)."""
        timer = self.timer
        if timer is not None:
            seconds, refresher = max(timer.seconds, timer.asked), UAC if timer.we_refresh else UAS
        elif self.session_expires:
            seconds, refresher = max(self.session_expires, self.min_se), UAC
        else:
            return []
        return [
            ("Supported", "timer"),
            *request_headers(seconds, refresher=refresher, min_se=self.min_se),
        ]

    def _ask_longer(self, refusal: Response) -> bool:
        """A 422 to our request (RFC 4028 §7.3): ask again for its Min-SE when that is more
        than we asked for; False when it is not (the 422 is then the answer)."""
        min_se = min_se_of_422(refusal.headers)
        timer = self.timer
        asked = max(timer.seconds, timer.asked) if timer is not None else self.session_expires
        if min_se is None or min_se <= asked:
            return False
        self.min_se = min_se
        if timer is not None:
            timer.asked = min_se
        else:
            self.session_expires = min_se
        log.info(
            "session %s: the far end asked for a session interval of %d s", self.call_id, min_se
        )
        return True

    def _refreshed(self, final: Response) -> None:
        """The 2xx to our request sets the timer (RFC 4028 §7.2): its Session-Expires, with
        us refreshing when it says uac; none when it has none, except that a far end that does
        not know the extension and answered a refresh keeps the interval going (§7.4)."""
        if final.headers.get("Allow") is not None:
            self.allows_update = allows_update(final.headers)
        now = trio.current_time()
        expires = expires_in_2xx(final.headers)
        current = self.timer
        if expires is None and current is not None and not supports_timer(final.headers):
            self.timer = LegTimer(current.seconds, current.we_refresh, now)
            return
        self.timer = leg_timer(expires, we_are_uac=True, now=now)

    def _refresh_failed(self) -> None:
        """A request failed while our refresh was due: try again halfway to the expiry."""
        timer, now = self.timer, trio.current_time()
        if timer is not None and timer.we_refresh and now >= timer.refresh_at:
            timer.refresh_failed(now)

    # -- the far end's requests ---------------------------------------------------------------

    def _far_end_request(self, request: Request) -> Response:
        method = request.method
        if method == "BYE":
            self._far_end_gone()
            return make_response(request, 200)
        if method not in ("INVITE", "UPDATE"):
            return make_response(request, 501, "Not Implemented")
        try:
            self._dialog.receive_request(request)
        except SipError as exc:
            return make_response(request, getattr(exc, "status", None) or 500)
        return self._answer_refresh(request)

    def _answer_refresh(self, request: Request) -> Response:
        """The far end's re-INVITE or UPDATE (RFC 4028 §9: a session refresh, its own or one
        it asks us to take over). Its session timer is answered by the call legs' rules. A
        body goes to the plugin's ``on_request`` (its answer, or its refusal: then neither the
        session nor the timer changed); without one, an offer gets our session as it stands,
        the SDP of our last offer it took (RFC 3264 §8). A re-INVITE without an offer (RFC
        3261 §14.2) gets the SDP in force as our offer in the 2xx."""
        try:
            timer = answer_as_uas(
                request.headers, wanted=self.session_expires, min_se=self.min_se, can_refresh=True
            )
        except RemoteSipError as exc:
            return make_response(request, exc.status or 400, str(exc)[:80])
        if isinstance(timer, IntervalTooSmall):
            return make_response(
                request, 422, "Session Interval Too Small", extra=[("Min-SE", str(timer.min_se))]
            )
        offers = request.method == "INVITE" or bool(request.body)
        if offers and self._offering:
            # RFC 3261 §14.2, RFC 3311 §5.2: our own offer is out; the SRS tries again later.
            return make_response(request, 491, "Request Pending")
        body, content_type = b"", None
        handler = self.on_request
        if request.body and handler is not None:
            # The plugin reads what the body carries (an offer, RFC 3264 §6; a request of its
            # own protocol); a refusal leaves the session, and the timer, as they were.
            try:
                answer = handler(request.method, request.headers.get("Content-Type"), request.body)
            except Exception:
                log_exception(
                    log, "session %s: the plugin failed on a %s", self.call_id, request.method
                )
                return make_response(request, 500, "Server Internal Error")
            if not 200 <= answer.status < 300:
                return make_response(
                    request, answer.status, answer.reason or None, extra=list(answer.headers)
                )
            body, content_type = answer.body, answer.content_type
            if body and content_type == "application/sdp":
                self._sdp = body  # RFC 3264 §8: the session as it now stands
            offers = request.method == "INVITE" and not body  # §14.2: its 2xx then offers
        if offers and not body:
            if not self._sdp:
                return make_response(request, 488, "Not Acceptable Here")
            body, content_type = self._sdp, "application/sdp"
            # RFC 3261 §14.2: our 2xx offers, the far end's ACK answers.
            self._offered_in_2xx = request.cseq.number
        # A refresh taken: the timer runs from now, with whoever §9 made the refresher.
        self.timer = leg_timer(timer.expires, we_are_uac=False, now=trio.current_time())
        return make_response(
            request,
            200,
            extra=[("Contact", str(self._contact)), *timer.headers()],
            body=body,
            content_type=content_type if body else None,
        )

    def _ack_answer(self, ack: Request) -> None:
        """The far end's ACK of our 2xx that offered (RFC 3261 §14.2): its body is the answer
        (§13.2.2.4: it MUST carry one), for the plugin to follow (``on_ack_answer``). An ACK
        cannot be refused (§17.2.1): an answer missing or unusable is logged by whoever reads
        it and the session stays as it stood. We do not BYE for it: the §14.2 BYE is the
        offerer's answer to an offer *it* cannot take, and our offer was the SDP already in
        force, so the media as it flowed before is still what both ends agreed."""
        self._offered_in_2xx = None
        if not ack.body:
            log.warning(
                "session %s: the ACK of our 2xx that offered has no answer (RFC 3261 §13.2.2.4); "
                "the session stays as it was",
                self.call_id,
            )
            return
        handler = self.on_ack_answer
        if handler is None:
            return
        try:
            handler(ack.headers.get("Content-Type"), ack.body)
        except Exception:
            log_exception(
                log, "session %s: the plugin failed on the answer in an ACK", self.call_id
            )

    def _far_end_gone(self) -> None:
        self._closed = True
        self._dialog.terminate()
        self.ended.set()
        self._owner._forget(self)
        self._drop_handlers()

    def _drop_handlers(self) -> None:
        """A session that ended (closed by us, or by the far end's BYE) takes no more
        requests. Its handlers are its plugin's bound methods (a SIPREC sink's), and the
        plugin holds the session: let go of them, so that the plugin, and the call its
        TappedCall names, are freed by reference counting."""
        self.on_request = None
        self.on_ack_answer = None


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


ABANDON_WAIT = 32.0
"""How long an INVITE or re-INVITE whose owner stopped waiting is followed (64*T1, Timer B's
span): for the provisional response that lets us CANCEL it, and for a 2xx that crossed the
CANCEL, which is ACKed (and for a new session, BYEd)."""


class OutboundSessions:
    """Opens sessions for plugins and routes their in-dialog requests. ``nursery`` runs what
    goes on after a plugin stopped waiting (the CANCEL of an INVITE it gave up, the ACK of a
    2xx that came late)."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        ids: IdSource,
        user_agent: str,
        nursery: trio.Nursery,
        *,
        targets: TrunkTargets | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.targets = targets
        """The targets of the session URIs named by DNS, kept resolved off the call path
        (the gateway's, for the URIs the media taps declare: ``MediaTap.sip_targets``)."""
        self._ids = ids
        self._user_agent = user_agent
        self._nursery = nursery
        self._by_dialog: dict[tuple[str, str], OutboundSession] = {}
        # Our 2xx to a far end's re-INVITE, re-sent over UDP until its ACK (by Call-ID, CSeq).
        self._unacked: dict[tuple[str, int], trio.Event] = {}

    async def open_session(
        self,
        target: str,
        *,
        body: bytes,
        content_type: str,
        headers: Sequence[tuple[str, str]] = (),
        contact_parameters: Sequence[str] = (),
        secure_only: bool = False,
        session_expires: int = 0,
        sdp: bytes = b"",
    ) -> OutboundSession:
        """INVITE ``target`` (a SIP URI; its ``transport`` parameter and port say how) with
        ``body``; the session once the far end answered 2xx. ``headers`` are added (e.g.
        ``Require: siprec``), ``contact_parameters`` go on our Contact (``+sip.src``, RFC 7866
        §6.1.1). ``secure_only``: the body carries keys, send it over TLS or not at all.
        ``session_expires``: ask for a session timer of that many seconds with us refreshing
        (RFC 4028 §7.1; 0: none); a 422 is answered by asking again for its Min-SE (§7.3).
        ``sdp``: the offer's SDP, what a re-INVITE of the far end is answered with.
        A ``target`` whose host is a name kept resolved (``targets``) goes to its cached
        targets in turn, the next after a transport error, no answer, 408 or 503 (RFC 3263
        §4.3), as calls to trunks do; no DNS query is made here.
        Raises :class:`SessionRefused`."""
        shown = redact_password(target)  # a recorder's URI may carry a password: never logged
        try:
            uri = parse_uri_untrusted(target)
            destinations = self._destinations(target)
        except (RemoteSipError, UnroutableTarget) as exc:
            raise SessionRefused(f"{shown} is not a usable SIP URI ({exc})") from None
        for number, destination in enumerate(destinations, 1):
            try:
                return await self._open_at(
                    target,
                    uri,
                    destination,
                    body=body,
                    content_type=content_type,
                    headers=headers,
                    contact_parameters=contact_parameters,
                    secure_only=secure_only,
                    session_expires=session_expires,
                    sdp=sdp,
                )
            except ServerFailed as exc:
                if number == len(destinations):
                    raise
                log.info(
                    "session to %s: target %s:%s failed (%s); trying the next",
                    shown,
                    destination.transport,
                    format_host_port(destination.host, destination.port),
                    exc,
                )
        raise AssertionError("no destination")  # _destinations returns one at least

    def _destinations(self, target: str) -> list[Destination]:
        """Where a session to ``target`` may go, in order: its cached DNS targets when its
        host is a name kept resolved, else the one its URI says (routing.destination_for)."""
        targets = self.targets
        if targets is not None and target in targets:
            hops = targets.hops(target)
            if not hops:
                raise UnroutableTarget("its host name has not resolved")
            return [Destination(hop.transport, hop.host, hop.port) for hop in hops]
        return [destination_for(RouteTarget(target))]

    async def _open_at(
        self,
        target: str,
        uri: Uri,
        destination: Destination,
        *,
        body: bytes,
        content_type: str,
        headers: Sequence[tuple[str, str]],
        contact_parameters: Sequence[str],
        secure_only: bool,
        session_expires: int,
        sdp: bytes,
    ) -> OutboundSession:
        """:meth:`open_session` at one ``destination``; :class:`ServerFailed` when the next
        target should be tried."""
        shown = redact_password(target)
        endpoint = self.endpoint
        try:
            flow = await endpoint.flow_to(
                destination.transport, (destination.host, destination.port), destination.flow
            )
        except OSError as exc:
            raise ServerFailed(f"cannot reach {shown}: {transport_error_text(exc)}") from None
        if secure_only and not flow.secure:
            raise SessionRefused(
                f"{shown} is reached over {flow.transport}, not TLS: the offer carries keys "
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
        min_se = MIN_INTERVAL
        asked_again = False
        timer_fields: list[tuple[str, str]] = []
        if session_expires:
            # RFC 4028 §7.1: we support the extension and offer to refresh (refresher=uac):
            # a recording session that never changes is still found dead within the interval.
            timer_fields = [
                ("Supported", "timer"),
                *request_headers(session_expires, refresher=UAC, min_se=min_se),
            ]
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
                    *timer_fields,
                    ("User-Agent", self._user_agent),
                ]
            ),
        ).with_body(body, content_type)
        while True:
            try:
                client = await endpoint.send_request(
                    request, transport=flow.transport, address=flow.remote, flow=flow
                )
            except OSError as exc:
                raise ServerFailed(f"cannot send to {shown}: {transport_error_text(exc)}") from None
            sent = client.request
            final = await self._final(client, sent, None)
            if final is None:
                raise ServerFailed(f"no answer from {shown}")
            raised = min_se_of_422(final.headers) if final.status == 422 else None
            if raised is None or raised <= session_expires or asked_again:
                break
            asked_again = True
            # RFC 4028 §7.3: the far end wants a longer interval; ask again, once, for its
            # Min-SE: the same Call-ID, From and To, CSeq + 1, a new transaction.
            min_se = session_expires = raised
            request = request.with_headers(
                request.headers.set("CSeq", "2 INVITE")
                .set("Session-Expires", f"{raised};refresher={UAC}")
                .set("Min-SE", str(raised))
            )
            log.info("session to %s: it asked for a session interval of %d s", shown, raised)
        if not final.is_success:
            # RFC 3263 §4.3: a 503 (and a 408, as calls to trunks take it) is the server's.
            failed = ServerFailed if final.status in (408, 503) else SessionRefused
            raise failed(f"{shown} answered {final.status} {final.reason}")
        dialog = Dialog.create_uac(sent, final, over_tls=flow.transport in TLS_TRANSPORTS)
        # Registered before the ACK goes: the far end may BYE as soon as it has it.
        session = OutboundSession(
            self,
            dialog,
            client.flow,
            final,
            contact,
            session_expires=session_expires,
            min_se=min_se,
            sdp=sdp,
        )
        session.timer = leg_timer(
            expires_in_2xx(final.headers), we_are_uac=True, now=trio.current_time()
        )
        self._by_dialog[(dialog.id.call_id, dialog.id.local_tag)] = session
        try:
            ack_flow = await self._dialog_flow(dialog, client.flow)
            session._flow = ack_flow
            ack = dialog.create_ack(final.cseq.number, via=endpoint.new_via(ack_flow))
            await endpoint.send_ack(ack, ack_flow)
        except OSError as exc:
            self._forget(session)
            raise SessionRefused(
                f"cannot ACK {shown}'s answer: {transport_error_text(exc)}"
            ) from None
        except trio.Cancelled:
            # The owner gave up while we were ACKing: the session is answered, so it still
            # gets its ACK and a BYE (RFC 3261 §15), not left to run out on the far end.
            self._nursery.start_soon(self._ack_and_bye, session, final)
            raise
        return session

    async def _final(
        self, client: ClientRequest, invite: Request | None, session: OutboundSession | None
    ) -> Response | None:
        """The final response to ``client``'s request, or None when its transaction ended
        without one. An owner that stops waiting (cancelled: a timeout, or the call ended)
        leaves an INVITE (``invite``: a new session's) or re-INVITE (``session``'s) to
        :meth:`_abandoned`, which CANCELs it and ACKs a 2xx that comes anyway."""
        final: Response | None = None
        try:
            async for response in client.responses:
                if response.status >= 200:
                    final = response
                    break
        except trio.Cancelled:
            if client.request.method == "INVITE":
                self._nursery.start_soon(self._abandoned, client, invite, session)
            else:
                client.forward_to(None)  # RFC 3261 §9.1: only an INVITE is CANCELled
            raise
        return final

    async def _abandoned(
        self, client: ClientRequest, invite: Request | None, session: OutboundSession | None
    ) -> None:
        """An INVITE whose owner stopped waiting for its answer: CANCEL it once a provisional
        response says the far end has it (RFC 3261 §9.1: never before one); a 2xx that comes
        all the same is ACKed (§13.2.2.4) and, for a new session nobody will use, BYEd at once
        (§15: a 2xx that crosses the CANCEL makes a session to end). Within ABANDON_WAIT; a
        2xx retransmission after that is ACKed by the endpoint (its owner has gone)."""
        endpoint = self.endpoint
        flow = client.flow
        cancelled = False
        with trio.move_on_after(ABANDON_WAIT):
            try:
                if client.transaction.state is State.PROCEEDING:
                    await endpoint.send_request(
                        cancel_for(client.request),
                        transport=flow.transport,
                        address=flow.remote,
                        flow=flow,
                    )
                    cancelled = True
                async for response in client.responses:
                    if response.status < 200:
                        if not cancelled:
                            await endpoint.send_request(
                                cancel_for(client.request),
                                transport=flow.transport,
                                address=flow.remote,
                                flow=flow,
                            )
                            cancelled = True
                        continue
                    if not response.is_success:
                        break  # the 487 (or any refusal): its transaction ACKs it (§17.1.1.3)
                    if session is not None:
                        # A re-INVITE's 2xx: the far end took the offer after all; ACK it.
                        ack = session._dialog.create_ack(
                            response.cseq.number, via=endpoint.new_via(flow)
                        )
                        await endpoint.send_ack(ack, flow)
                    elif invite is not None:
                        await self._ack_and_bye_answer(invite, response, flow)
                    break
            except OSError as exc:
                log.info(
                    "abandoned INVITE %s: %s",
                    key_text(client.transaction.key),
                    transport_error_text(exc),
                )
        client.forward_to(None)

    async def _ack_and_bye_answer(self, invite: Request, answer: Response, flow: Flow) -> None:
        """ACK and BYE a 2xx to a new session's INVITE its owner gave up (RFC 3261 §15)."""
        dialog = Dialog.create_uac(invite, answer, over_tls=flow.transport in TLS_TRANSPORTS)
        session = OutboundSession(self, dialog, flow, answer, NameAddr(invite.uri))
        await self._ack_and_bye(session, answer)

    async def _ack_and_bye(self, session: OutboundSession, answer: Response) -> None:
        endpoint = self.endpoint
        with trio.move_on_after(ABANDON_WAIT):
            try:
                flow = await self._dialog_flow(session._dialog, session._flow)
                ack = session._dialog.create_ack(answer.cseq.number, via=endpoint.new_via(flow))
                await endpoint.send_ack(ack, flow)
                session._flow = flow
            except OSError as exc:
                log.info("session %s: ACK not sent: %s", session.call_id, transport_error_text(exc))
            log.info("session %s: answered after its owner gave up; ended (BYE)", session.call_id)
            await session.close()

    def knows_dialog(self, key: tuple[str, str]) -> bool:
        """Whether (Call-ID, our tag) ``key`` is the dialog of one of our sessions."""
        return key in self._by_dialog

    def in_dialog(self, transaction: ServerTransaction, request: Request, flow: Flow) -> bool:
        """Answer a far end's request in one of our sessions (through ``transaction``); False
        when it is not one. A 2xx to its re-INVITE is re-sent over ``flow``, when that is UDP,
        until the ACK. The plugin's next re-INVITE goes after this answer (a snapshot the far
        end asked for follows our 200, not the other way round)."""
        tag = request.to.tag
        if tag is None:
            return False
        session = self._by_dialog.get((request.call_id, tag))
        if session is None:
            return False
        answer = session._far_end_request(request)
        session._responding = sent = trio.Event()
        self._nursery.start_soon(self._respond, transaction, answer, sent)
        if request.method == "INVITE" and answer.is_success:
            # Until its ACK our next re-INVITE waits (RFC 3261 §14.1), and over UDP the 2xx is
            # re-sent (§13.3.1.4).
            key = (request.call_id, request.cseq.number)
            self._unacked[key] = session._awaiting_ack = acked = trio.Event()
            self._nursery.start_soon(
                self._retransmit_2xx, answer, flow, key, acked, not flow.reliable
            )
        return True

    async def _respond(
        self, transaction: ServerTransaction, answer: Response, sent: trio.Event
    ) -> None:
        try:
            await self.endpoint.respond(transaction, answer)
        finally:
            sent.set()

    def ack(self, request: Request) -> bool:
        """The ACK of our 2xx to a far end's re-INVITE: stop re-sending it. False when it is
        not one of ours."""
        acked = self._unacked.pop((request.call_id, request.cseq.number), None)
        if acked is None:
            return False
        acked.set()
        tag = request.to.tag
        session = self._by_dialog.get((request.call_id, tag)) if tag is not None else None
        if session is not None and session._offered_in_2xx == request.cseq.number:
            session._ack_answer(request)
        return True

    async def _retransmit_2xx(
        self, answer: Response, flow: Flow, key: tuple[str, int], acked: trio.Event, resend: bool
    ) -> None:
        """RFC 3261 §13.3.1.4: the UAS core re-sends its 2xx at T1, doubling up to T2, until
        the ACK comes or 64*T1 has passed (then the far end has given up on it). ``resend``
        False (a reliable flow): only waits for the ACK, for as long."""
        sip = self.endpoint.gateway.config.sip
        interval = sip.t1 if resend else 64 * sip.t1
        give_up = trio.current_time() + 64 * sip.t1
        try:
            while trio.current_time() < give_up:
                with trio.move_on_after(interval):
                    await acked.wait()
                    return
                if not resend:
                    break
                try:
                    await self.endpoint.send_response(answer, flow)
                except OSError as exc:
                    log.info("session %s: 2xx not re-sent: %s", key[0], transport_error_text(exc))
                    return
                interval = min(interval * 2, sip.t2)
            log.info("session %s: no ACK for our 2xx to its re-INVITE", key[0])
        finally:
            acked.set()  # nothing waits for it any more
            if self._unacked.get(key) is acked:
                del self._unacked[key]

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
                log.info(
                    "session %s: its remote target is unreachable (%s)",
                    dialog.id,
                    transport_error_text(exc),
                )
        return await self.endpoint.flow_to(opened.transport, opened.remote, opened)

    def _forget(self, session: OutboundSession) -> None:
        key = (session._dialog.id.call_id, session._dialog.id.local_tag)
        if self._by_dialog.get(key) is session:
            del self._by_dialog[key]
