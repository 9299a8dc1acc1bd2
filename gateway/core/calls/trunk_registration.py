"""Registering with a trunk: carriers that deliver calls only to a registered customer.

Theory of operation. A trunk with ``register = true`` is a carrier that identifies its customer
by a registration, as many SIP trunk offers for businesses do, rather than by the customer's IP
address: calls reach the gateway only while it is registered. The gateway keeps one
registration per such trunk (RFC 3261 §10.2): REGISTER to ``sip:<register_domain>``, address of
record ``sip:<username>@<register_domain>``, our Contact ``sip:<contact_user>@<our address>``
(``contact_user`` defaults to ``username``),
answering the trunk's digest challenge with ``username``/``password`` (RFC 3261 §22.2; once per
challenge: a second one for the same request means the credentials are wrong). One Call-ID and
an increasing CSeq for the life of the process (§10.2.4). The registrar's granted expiry (our
Contact's ``expires`` in the 200, else its Expires header, else what we asked) decides the
refresh: a minute before it runs out, or at half of it when it is short. A 423 (Interval Too
Brief) is answered once with its Min-Expires (§10.2.8). A failure (a refusal, no answer within
64*T1, a transport error) is logged and retried after 30 s, doubling to at most 10 minutes, as
RFC 5626 §4.5 backs off; registered again, the log says so. When the gateway stops
(Gateway.before_stop, before anything is cancelled), the registration is removed (Expires: 0,
the challenge answered), so the carrier stops sending calls at once; a gateway cancelled
without that (an embedding that does not call before_stop) still sends the removal on its way
out, unanswered.

The carrier's calls then come to our Contact: their Request-URI is
``sip:<contact_user>@<our address>``, and the number called is in the To header (or in
P-Called-Party-ID, RFC 3455 §4.2). Routing reads it there for a trunk that registers
(``routing.called_number_of``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import trio

from gateway.core.auth.client import authorize
from gateway.core.calls.trunk_dns import next_hop
from gateway.core.ids import IdSource
from gateway.core.logs import log_exception, transport_error_text
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.grammar import (
    parse_name_addr_untrusted,
    parse_uri_untrusted,
    split_list_untrusted,
)
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Request, Response
from gateway.core.sip.uri import SipUri, get_param
from gateway.core.transport.flows import format_host_port

if TYPE_CHECKING:
    from gateway.core.calls.trunk_dns import TrunkTargets
    from gateway.core.config import TrunkConfig
    from gateway.core.endpoint import SipEndpoint

log = logging.getLogger(__name__)

FIRST_RETRY = 30.0
MAX_RETRY = 600.0
REFRESH_MARGIN = 60.0  # refresh this long before the registration runs out ...
MIN_REFRESH = 0.5  # ... or at half of it, when it is shorter than two margins
UNREGISTER_TIMEOUT = 1.0  # how long stopping may take to send the removal


class TrunkRegistration:
    """The registration with one trunk (see the module docstring). ``registered`` says
    whether the last REGISTER succeeded, ``expires_at`` when it runs out (trio time)."""

    def __init__(
        self,
        trunk: TrunkConfig,
        endpoint: SipEndpoint,
        ids: IdSource,
        *,
        t1: float,
        user_agent: str,
        targets: TrunkTargets | None = None,
    ) -> None:
        assert trunk.username is not None and trunk.password is not None
        self.trunk = trunk
        # A trunk named by DNS registers at its first target by priority, and at the next
        # after a transport error, no answer or a 503 (RFC 3263 §4.3; trunk_dns.next_hop).
        self.targets = targets
        self._turn = 0
        self.endpoint = endpoint
        self.ids = ids
        self.answer_limit = 64 * t1 + 1.0  # the transaction gives up at 64*T1 (Timer F)
        self.user_agent = user_agent
        self.call_id = ids.new_call_id()
        self.from_tag = ids.new_tag()
        self.cseq = 0
        self.registered = False
        self.expires_at = 0.0
        self.failure: str | None = None
        # What we ask for: the configured expiry, or the registrar's Min-Expires once it asked
        # for more (RFC 3261 §10.2.8), so a refresh does not take a 423 first every time.
        self.expires = trunk.register_expires
        self.removed = False  # remove() was called: no registering any more

    async def run(self) -> None:
        """Keep the registration until cancelled, then remove it. Nothing the carrier sends,
        nor a bug here, ends the gateway: a failure is logged and retried."""
        retry = FIRST_RETRY
        try:
            while not self.removed:
                try:
                    granted, why = await self.register(self.expires)
                except Exception:
                    log_exception(log, "registration with trunk %s failed", self.trunk.name)
                    granted, why = None, "internal error (logged)"
                if granted is not None:
                    retry = FIRST_RETRY
                    self._succeeded(granted)
                    await trio.sleep(_refresh_after(granted))
                else:
                    self._failed(why or "no answer", retry)
                    await trio.sleep(retry)
                    retry = min(retry * 2, MAX_RETRY)
        finally:
            if self.registered:
                with trio.CancelScope(shield=True), trio.move_on_after(UNREGISTER_TIMEOUT):
                    await self._unregister()

    async def remove(self) -> None:
        """Remove the registration while the gateway still runs (its stop: Gateway.before_stop):
        REGISTER with Expires: 0, the carrier's challenge answered. Nothing more is sent
        after it."""
        self.removed = True
        if not self.registered:
            return
        self.registered = False
        try:
            granted, why = await self.register(0)
        except Exception:
            log_exception(log, "removing the registration with trunk %s failed", self.trunk.name)
            return
        if granted is None:
            log.warning("the registration with trunk %s was not removed: %s", self.trunk.name, why)
        else:
            log.info("registration with trunk %s removed", self.trunk.name)

    async def _unregister(self) -> None:
        """Expires: 0, sent and not waited for: the gateway is stopping and no longer reads
        responses. A registrar that challenges it keeps the registration until it runs out."""
        hop = next_hop(self.trunk, self.targets, self._turn)
        if hop is None:
            return
        try:
            client = await self.endpoint.send_request(
                self._register(0), transport=hop.transport, address=(hop.host, hop.port)
            )
        except OSError:
            return
        client.forward_to(None)

    def _succeeded(self, granted: int) -> None:
        if not self.registered:
            # A recovery pairs with the warning of the failure; the first success is news only.
            log.log(
                logging.WARNING if self.failure else logging.INFO,
                "registered with trunk %s for %d s%s",
                self.trunk.name,
                granted,
                f" (it had failed: {self.failure})" if self.failure else "",
            )
        self.registered, self.failure = True, None
        self.expires_at = trio.current_time() + granted

    def _failed(self, why: str, retry: float) -> None:
        if self.registered or self.failure != why:
            log.warning(
                "registration with trunk %s failed: %s; its calls to us stop until it "
                "succeeds (retrying in %g s)",
                self.trunk.name,
                why,
                retry,
            )
        self.registered, self.failure = False, why

    async def register(self, expires: int) -> tuple[int | None, str | None]:
        """One REGISTER asking for ``expires`` seconds (0: remove), with the challenge and a
        423 answered: the expiry granted, or None and why not."""
        try:
            request = self._register(expires)
        except OSError as exc:  # no listener for the trunk's transport
            return None, f"cannot register: {transport_error_text(exc)}"
        challenged = interval_raised = False
        while True:
            response = await self._send(request)
            if response is None:
                return None, f"no answer within {self.answer_limit:g} s"
            if response.status in (401, 407) and not challenged:
                challenged = True
                answered = authorize(
                    self._next(request),
                    response,
                    username=self.trunk.username or "",
                    password=self.trunk.password or "",
                    cnonce=self.ids.token_hex(8),
                )
                if answered is None:
                    return None, f"{response.status} with no challenge we can answer"
                request = answered
                continue
            if response.status == 423 and not interval_raised:
                minimum = _min_expires(response)
                if minimum is None or expires <= 0:
                    return None, "423 Interval Too Brief without a usable Min-Expires"
                interval_raised, expires = True, minimum
                self.expires = max(self.expires, minimum)
                retry = self._next(request)
                request = retry.with_headers(retry.headers.set("Expires", str(expires)))
                continue
            if 200 <= response.status < 300:
                if not expires:
                    return 0, None
                granted = self._granted(response, expires)
                if not granted:
                    # RFC 3261 §10.3: a 200 lists our binding with its expiry; without it, or
                    # with 0, the registrar did not keep us.
                    return None, "200 without our Contact (or with expires=0)"
                return granted, None
            return None, f"{response.status} {response.reason}"

    async def _send(self, request: Request) -> Response | None:
        response = await self._send_to_hop(request)
        if response is None or response.status in (408, 503):
            # No answer (our transaction's 408), a transport error (our 503) or a 503: a trunk
            # named by DNS is tried at its next target next time (RFC 3263 §4.3).
            self._turn += 1
        return response

    async def _send_to_hop(self, request: Request) -> Response | None:
        hop = next_hop(self.trunk, self.targets, self._turn)
        if hop is None:
            return Response(503, "cannot send: its name has not resolved")
        try:
            client = await self.endpoint.send_request(
                request, transport=hop.transport, address=(hop.host, hop.port)
            )
        except OSError as exc:
            return Response(503, f"cannot send: {transport_error_text(exc)}")
        try:
            with trio.move_on_after(self.answer_limit):
                async for response in client.responses:
                    if response.status >= 200:
                        return response
            return None
        finally:
            client.forward_to(None)

    def _register(self, expires: int) -> Request:
        trunk = self.trunk
        domain = trunk.register_domain or _address_host(trunk)
        spec = trunk.address_parts
        registrar = parse_uri_untrusted(f"sip:{domain}")  # checked with the configuration
        assert isinstance(registrar, SipUri)
        if spec.transport and spec.transport != "udp":
            registrar = registrar.with_param("transport", spec.transport)
        aor = f"<sip:{trunk.username}@{domain}>"
        headers = Headers.of(
            [
                ("Max-Forwards", "70"),
                ("From", f"{aor};tag={self.from_tag}"),
                ("To", aor),
                ("Call-ID", self.call_id),
                ("CSeq", f"{self._cseq()} REGISTER"),
                ("Contact", str(NameAddr(self.contact()))),
                ("Expires", str(expires)),
                ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, PRACK, INFO, REFER, NOTIFY"),
                ("User-Agent", self.user_agent),
            ]
        )
        return Request("REGISTER", registrar, headers)

    def contact(self) -> SipUri:
        """Our Contact: where the trunk sends its calls (on the transport we register over)."""
        transport = self._transport()
        host, port = self.endpoint.local_address(transport)
        uri = SipUri(
            "sip",
            f"[{host}]" if ":" in host else host,
            user=self.trunk.registered_contact_user,
            port=port,
        )
        return uri.with_param("transport", transport) if transport != "udp" else uri

    def _transport(self) -> str:
        """The transport of the trunk's address; for one whose transport the DNS chooses
        (NAPTR, RFC 3263 §4.1), that of the target the next REGISTER goes to."""
        transport = self.trunk.address_parts.transport
        if transport:
            return transport
        hop = next_hop(self.trunk, self.targets, self._turn)
        return hop.transport if hop is not None else "udp"

    def _next(self, request: Request) -> Request:
        """``request`` as a new transaction: the next CSeq, no Via (RFC 3261 §22.2)."""
        headers = request.headers.remove("Via").set("CSeq", f"{self._cseq()} REGISTER")
        return request.with_headers(headers)

    def _cseq(self) -> int:
        self.cseq += 1
        return self.cseq

    def _granted(self, response: Response, asked: int) -> int:
        """The expiry the registrar gave our Contact (RFC 3261 §10.2.4: the ``expires`` of our
        Contact in the 200, else the Expires header), at most what we asked (§10.3 step 7: a
        registrar may shorten it, not lengthen it); 0 when the 200 does not list our Contact
        with an expiry of its own and has no Expires header either: then what we asked."""
        ours = self.contact()
        listed = False
        for value in response.headers.get_all("Contact"):
            try:
                contacts = [parse_name_addr_untrusted(item) for item in split_list_untrusted(value)]
            except RemoteSipError:
                continue
            for contact in contacts:
                uri = contact.uri
                if (
                    isinstance(uri, SipUri)
                    and uri.user == ours.user
                    and uri.host.lower() == ours.host.lower()
                    and (uri.port or 5060) == (ours.port or 5060)
                ):
                    listed = True
                    expires = get_param(contact.params, "expires")
                    if expires is not None and expires.isdigit() and len(expires) <= 10:
                        return min(int(expires), asked)
        header = response.headers.get("Expires")
        if header is not None and header.strip().isdigit() and len(header.strip()) <= 10:
            return min(int(header.strip()), asked)
        # Registrars that list no Contact at all are common enough to take the 200 for what
        # we asked; one that lists other contacts but not ours did not register us.
        any_contact = bool(response.headers.get_all("Contact"))
        return asked if listed or not any_contact else 0


def _refresh_after(granted: int) -> float:
    if granted > 2 * REFRESH_MARGIN:
        return granted - REFRESH_MARGIN
    return max(granted * MIN_REFRESH, 1.0)


def _min_expires(response: Response) -> int | None:
    value = response.headers.get("Min-Expires")
    return int(value.strip()) if value is not None and value.strip().isdigit() else None


def _address_host(trunk: TrunkConfig) -> str:
    spec = trunk.address_parts
    # A name without a port is the SRV domain itself (RFC 3263 §4.2): no port written.
    return format_host_port(spec.uri_host, spec.port)


def registering(trunks: Iterable[TrunkConfig]) -> list[TrunkConfig]:
    """The enabled trunks that register."""
    return [t for t in trunks if t.enabled and t.register]
