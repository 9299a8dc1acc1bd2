"""Dialogs (RFC 3261 §12): the peer-to-peer state between two user agents.

A dialog is identified by Call-ID, local tag and remote tag (§12) and carries what in-dialog
requests need: local and remote URI, local and remote CSeq, the remote target (Contact) and the
route set (Record-Route). A B2BUA has one dialog per leg and copies none of this between legs.

- Creation: :meth:`Dialog.create_uac` from our request and a 101-299 response with a To tag
  (§12.1.2: route set = Record-Route *reversed*), :meth:`Dialog.create_uas` from a request and
  the 101-299 response we answer it with (§12.1.1: route set = Record-Route in order).
- State: Early (created by a 1xx) becomes Confirmed with a 2xx; an early dialog ends with a
  non-2xx final response to its INVITE (§12.3, §13.2.2.4).
- Requests we send: :meth:`Dialog.create_request` (§12.2.1.1: CSeq + 1, loose or strict routing)
  and :meth:`Dialog.create_ack` for a 2xx (§13.2.2.4).
- Requests we receive: :meth:`Dialog.receive_request` checks CSeq order (§12.2.2: lower ->
  500) and refreshes the remote target from Contact on target refresh requests.
- Responses: :meth:`Dialog.receive_response` / :meth:`Dialog.send_response` move the state and
  refresh the remote target on 2xx to a target refresh request (§12.2.1.2).
- Security: a dialog is ``secure`` when the request that made it had a SIPS Request-URI and
  came or went over TLS (§12.1.1, §12.1.2): its requests travel over TLS only (RFC 5630
  §3.1.3). :func:`contact_must_be_sips` says when our Contact must be a SIPS URI.

This module holds values and rules only; Via, branches and transactions are the caller's
(:mod:`gateway.core.sip.via`, :mod:`gateway.core.sip.transaction`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from gateway.core.sip.errors import LocalSipError, RemoteSipError
from gateway.core.sip.grammar import via_text
from gateway.core.sip.headers import NameAddr, Via
from gateway.core.sip.message import Headers, Request, Response
from gateway.core.sip.uri import SipUri, Uri, remove_param

__all__ = [
    "SIPS_NOT_ALLOWED",
    "TARGET_REFRESH_METHODS",
    "Dialog",
    "DialogId",
    "DialogState",
    "OutOfOrderRequest",
    "contact_must_be_sips",
    "creates_dialog",
    "is_sips",
    "uac_dialog_id",
    "uas_dialog_id",
]

TARGET_REFRESH_METHODS: frozenset[str] = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY"})
"""Requests whose Contact replaces the remote target: re-INVITE (RFC 3261 §12.2), UPDATE
(RFC 3311), SUBSCRIBE and NOTIFY (RFC 6665)."""

_MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: below 2**31


class OutOfOrderRequest(RemoteSipError):
    """An in-dialog request with a CSeq lower than the last one (RFC 3261 §12.2.2): answer 500."""

    def __init__(self) -> None:
        super().__init__("CSeq out of order", status=500)


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


# The members read at run time, as module names: on CPython 3.11 a member read from its enum
# class goes through EnumType's __getattr__ hook, some 900 instructions against a few dozen for
# a module name, and a call's dialogs read 15 (docs/benchmarks.md, sessions 44 and 45).
_D_EARLY = DialogState.EARLY
_D_CONFIRMED = DialogState.CONFIRMED
_D_TERMINATED = DialogState.TERMINATED


@attrs.frozen
class DialogId:
    """Call-ID, local tag and remote tag (RFC 3261 §12). A remote tag is None when an RFC 2543
    peer sent none (§12.1.1, §12.1.2: "considered null")."""

    call_id: str
    local_tag: str
    remote_tag: str | None


def uac_dialog_id(response: Response) -> DialogId:
    """The id, as we see it, of the dialog a response to our request belongs to:
    local tag from From, remote tag from To."""
    local_tag = response.from_.tag
    if local_tag is None:
        raise LocalSipError("response to our request has no From tag")
    return DialogId(response.call_id, local_tag, response.to.tag)


def uas_dialog_id(request: Request) -> DialogId | None:
    """The id, as we see it, of the dialog a received request belongs to (local tag from To,
    remote from From); None for a request outside any dialog (no To tag)."""
    local_tag = request.to.tag
    if local_tag is None:
        return None
    return DialogId(request.call_id, local_tag, request.from_.tag)


def glare_wait(owns_call_id: bool, draw: int) -> float:
    """Seconds to wait before trying again a re-INVITE that got 491 Request Pending (RFC 3261
    §14.1): 2.1 to 4 s for the owner of the dialog's Call-ID, 0 to 2 s for the other side, in
    units of 10 ms, so that the two UAs whose re-INVITEs crossed do not cross again.
    ``draw``: any random non-negative integer."""
    if owns_call_id:
        return (210 + draw % 191) / 100
    return (draw % 201) / 100


def creates_dialog(response: Response) -> bool:
    """True for a response that creates a dialog (RFC 3261 §12.1): a 2xx (with or without To tag,
    §12.1.2 RFC 2543 compatibility) or a 101-199 with a To tag (an early dialog)."""
    if 200 <= response.status <= 299:
        return True
    return 101 <= response.status <= 199 and response.to.tag is not None


@attrs.define(eq=False)
class Dialog:
    """One dialog (RFC 3261 §12). Create with :meth:`create_uac` or :meth:`create_uas`.

    ``local_uri`` and ``remote_uri`` are the From/To values without tag (display names kept);
    ``route_set`` is in the order Route headers of our requests use; ``local_seq`` is None until
    we send a request in a UAS-created dialog, ``remote_seq`` until the peer sends one in a
    UAC-created dialog.
    """

    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: NameAddr
    remote_uri: NameAddr
    remote_target: Uri
    route_set: tuple[NameAddr, ...]
    local_seq: int | None
    remote_seq: int | None
    secure: bool
    state: DialogState
    # Whether we chose the Call-ID (we sent the request that made the dialog): RFC 3261 §14.1
    # has the owner wait longer before re-trying a re-INVITE that met glare (491).
    owns_call_id: bool = False

    @property
    def id(self) -> DialogId:
        return DialogId(self.call_id, self.local_tag, self.remote_tag)

    # -- creation --

    @classmethod
    def create_uac(cls, request: Request, response: Response, *, over_tls: bool = False) -> Dialog:
        """The dialog our ``request`` and a dialog-creating ``response`` to it make (§12.1.2).

        Route set: the response's Record-Route reversed. Remote target: the response's Contact;
        if a (broken) peer sent none, the Request-URI, so that the dialog can still be ACKed and
        ended. ``over_tls``: the request was sent over TLS (with a SIPS Request-URI the dialog is
        secure).
        """
        if not creates_dialog(response):
            raise LocalSipError("response does not create a dialog")
        local_tag = request.from_.tag
        if local_tag is None:
            raise LocalSipError("our request has no From tag")
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=response.to.tag,
            local_uri=_without_tag(request.from_),
            remote_uri=_without_tag(request.to),
            remote_target=_contact_uri(response) or request.uri,
            route_set=tuple(reversed(response.record_routes)),
            local_seq=request.cseq.number,
            remote_seq=None,
            secure=over_tls and _is_sips(request.uri),
            state=_D_EARLY if response.status < 200 else _D_CONFIRMED,
            owns_call_id=True,
        )

    @classmethod
    def from_our_2xx(cls, response: Response) -> Dialog | None:
        """The dialog a 2xx to one of our INVITEs makes, read from the 2xx alone (its From is
        ours, its To the peer's): for ACKing a 2xx whose owner has gone (§13.2.2.4: every 2xx
        is ACKed). None without the tags or a Contact to send the ACK to."""
        local_tag, target = response.from_.tag, _contact_uri(response)
        if local_tag is None or response.to.tag is None or target is None:
            return None
        return cls(
            call_id=response.call_id,
            local_tag=local_tag,
            remote_tag=response.to.tag,
            local_uri=_without_tag(response.from_),
            remote_uri=_without_tag(response.to),
            remote_target=target,
            route_set=tuple(reversed(response.record_routes)),
            local_seq=response.cseq.number,
            remote_seq=None,
            secure=False,
            state=_D_CONFIRMED,
            owns_call_id=True,
        )

    @classmethod
    def create_uas(cls, request: Request, response: Response, *, over_tls: bool = False) -> Dialog:
        """The dialog a received ``request`` and our dialog-creating ``response`` make (§12.1.1).

        ``response`` carries our To tag. Route set: the request's Record-Route in order. Remote
        target: the request's Contact; a request without one raises :class:`RemoteSipError`
        (400: §8.1.1.8 requires it in a dialog-creating request). ``over_tls``: the request came
        over TLS.
        """
        if not creates_dialog(response) or response.cseq.method != request.method:
            raise LocalSipError("response does not create a dialog for this request")
        local_tag = response.to.tag
        if local_tag is None:
            raise LocalSipError("a dialog-creating response needs our To tag")
        target = require_contact(request)
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag,
            local_uri=_without_tag(request.to),
            remote_uri=_without_tag(request.from_),
            remote_target=target,
            route_set=request.record_routes,
            local_seq=None,
            remote_seq=request.cseq.number,
            secure=over_tls and _is_sips(request.uri),
            state=_D_EARLY if response.status < 200 else _D_CONFIRMED,
        )

    # -- what we receive --

    def receive_request(self, request: Request) -> None:
        """A request the peer sent in this dialog (RFC 3261 §12.2.2).

        Raises :class:`OutOfOrderRequest` (500) for a CSeq lower than the last one, and
        :class:`RemoteSipError` 481 if the dialog is terminated. ACK and CANCEL reuse the CSeq of
        their INVITE and are not ordered. A target refresh request with a Contact replaces the
        remote target.
        """
        self._check_request_ids(request)
        if self.state is _D_TERMINATED:
            raise RemoteSipError("Call/Transaction Does Not Exist", status=481)
        if request.method in ("ACK", "CANCEL"):
            return
        number = request.cseq.number
        if self.remote_seq is not None and number < self.remote_seq:
            raise OutOfOrderRequest()
        self.remote_seq = number
        if request.method in TARGET_REFRESH_METHODS:
            self._refresh_target(request)

    def receive_response(self, response: Response) -> None:
        """A response to a request we sent in this dialog (including the one that created it).

        INVITE: a 2xx confirms an early dialog and recomputes its route set (§13.2.2.4); a
        non-2xx final response ends an early dialog (§12.3). A 2xx to a target refresh request
        (or any 1xx in an early dialog) with a Contact replaces the remote target (§12.2.1.2).
        481 and 408 end the dialog (§12.2.1.2); any final response to BYE ends it (§15.1.1).
        """
        self._check_response_ids(response)
        if self.state is _D_TERMINATED:
            return
        method = response.cseq.method
        status = response.status
        if method == "INVITE" and status < 200:
            if self.state is _D_EARLY:
                self._refresh_target(response)
        elif method == "INVITE" and status < 300:
            if self.state is _D_EARLY:
                self.state = _D_CONFIRMED
                self.route_set = tuple(reversed(response.record_routes))
            self._refresh_target(response)
        elif method == "INVITE" and self.state is _D_EARLY:
            self.state = _D_TERMINATED
        elif 200 <= status < 300 and method in TARGET_REFRESH_METHODS:
            self._refresh_target(response)
        if status in (408, 481) and method != "CANCEL":
            self.state = _D_TERMINATED
        if method == "BYE" and status >= 200:
            self.state = _D_TERMINATED

    # -- what we send --

    def send_response(self, response: Response) -> None:
        """A response we send to a request received in this dialog (including the creating
        one): 2xx to INVITE confirms, a non-2xx final to the INVITE of an early dialog ends it
        (§12.3), 2xx to BYE ends the dialog (§15.1.2)."""
        if self.state is _D_TERMINATED:
            return
        method = response.cseq.method
        status = response.status
        if method == "INVITE" and 200 <= status < 300:
            self.state = _D_CONFIRMED
            return
        rejected_early = method == "INVITE" and status >= 300 and self.state is _D_EARLY
        bye_accepted = method == "BYE" and 200 <= status < 300
        if rejected_early or bye_accepted:
            self.state = _D_TERMINATED

    def create_request(
        self,
        method: str,
        *,
        via: Via,
        contact: NameAddr | None = None,
        max_forwards: int = 70,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """A new request in this dialog (RFC 3261 §12.2.1.1), with the next local CSeq.

        ``via`` is our Via with a fresh branch (:func:`via.make_via`, :func:`via.new_branch`).
        Pass ``contact`` (our own reachable URI) on target refresh requests. ACK for a 2xx is
        :meth:`create_ack`; CANCEL is built from the INVITE it cancels (§9.1), not here.
        """
        if method in ("ACK", "CANCEL"):
            raise LocalSipError(f"{method} is not built with create_request")
        if self.state is _D_TERMINATED:
            raise LocalSipError("the dialog is terminated")
        number = self.take_cseq()
        return self._build(method, number, via, contact, max_forwards, extra, body, content_type)

    def take_cseq(self) -> int:
        """The next local CSeq number: for :meth:`create_request`, and for a request sent again
        in this dialog as a new transaction, one retried with credentials after a 401/407 (RFC
        3261 §22.2, §8.1.3.5). Allowed once the dialog is terminated too, for the BYE that
        terminated it."""
        # §12.2.1.1: increment by one; an empty local CSeq starts anywhere below 2**31 (§8.1.1.5).
        number = 1 if self.local_seq is None else self.local_seq + 1
        if number > _MAX_CSEQ:
            raise LocalSipError("local CSeq exhausted")
        self.local_seq = number
        return number

    def create_ack(
        self,
        invite_cseq: int,
        *,
        via: Via,
        max_forwards: int = 70,
        extra: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
    ) -> Request:
        """The ACK for a 2xx to the INVITE with CSeq number ``invite_cseq`` (RFC 3261 §13.2.2.4):
        built like any in-dialog request, but with the INVITE's CSeq number and a new branch.
        Allowed in every state: a 2xx must be ACKed even when we then send BYE."""
        return self._build("ACK", invite_cseq, via, None, max_forwards, extra, body, content_type)

    def terminate(self) -> None:
        """End the dialog (BYE sent or timed out, the session torn down)."""
        self.state = _D_TERMINATED

    # -- helpers --

    def next_hop_uri(self) -> Uri:
        """Where in-dialog requests go first (RFC 3261 §8.1.2, RFC 3263): the first route if
        there is a route set, else the remote target."""
        if self.route_set and self.route_set[0].uri is not None:
            return self.route_set[0].uri
        return self.remote_target

    def _request_target(self) -> tuple[Uri, tuple[str, ...]]:
        """Request-URI and Route values (RFC 3261 §12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, ()
        first = self.route_set[0].uri
        routes = tuple(str(route) for route in self.route_set)
        if isinstance(first, SipUri) and first.lr:
            return self.remote_target, routes  # loose routing (RFC 3261 default, §16.12)
        if first is None:
            raise LocalSipError("route set entry without a URI")
        # Strict router (RFC 2543): its URI becomes the Request-URI, minus what a Request-URI
        # may not carry (§19.1.1: the method parameter and headers), and the remote target goes
        # last in Route.
        if isinstance(first, SipUri):
            first = attrs.evolve(first, params=remove_param(first.params, "method"), headers=())
        return first, (*routes[1:], str(NameAddr(self.remote_target)))

    def _build(
        self,
        method: str,
        number: int,
        via: Via,
        contact: NameAddr | None,
        max_forwards: int,
        extra: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
    ) -> Request:
        uri, routes = self._request_target()
        to = (
            self.remote_uri
            if self.remote_tag is None
            else self.remote_uri.with_tag(self.remote_tag)
        )
        fields: list[tuple[str, str]] = [
            ("Via", via_text(via)),
            ("Max-Forwards", str(max_forwards)),
        ]
        fields += [("Route", route) for route in routes]
        fields += [
            ("From", str(self.local_uri.with_tag(self.local_tag))),
            ("To", str(to)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{number} {method}"),
        ]
        if contact is not None:
            fields.append(("Contact", str(contact)))
        fields += extra
        if content_type is not None:
            fields.append(("Content-Type", content_type))
        return Request(method=method, uri=uri, headers=Headers.of(fields), body=body)

    def _refresh_target(self, message: Request | Response) -> None:
        uri = _contact_uri(message)
        if uri is not None:
            self.remote_target = uri

    def holds_request(self, request: Request) -> bool:
        """Whether a received ``request`` is in this dialog: its Call-ID, To tag (ours) and
        From tag (the peer's) are the dialog's (RFC 3261 §12.2.2). The same test as comparing
        :func:`uas_dialog_id` with :attr:`id`, without building the two ids (every in-dialog
        request is checked by its call and again here)."""
        return (
            request.call_id == self.call_id
            and request.to.tag == self.local_tag
            and request.from_.tag == self.remote_tag
        )

    def _check_request_ids(self, request: Request) -> None:
        if not self.holds_request(request):
            raise LocalSipError("request does not belong to this dialog")

    def _check_response_ids(self, response: Response) -> None:
        if uac_dialog_id(response) != self.id:
            raise LocalSipError("response does not belong to this dialog")


def _without_tag(name_addr: NameAddr) -> NameAddr:
    return name_addr.with_params(remove_param(name_addr.params, "tag"))


def require_contact(request: Request) -> Uri:
    """The remote target of a dialog-creating ``request``: its Contact URI. A request without
    one raises :class:`RemoteSipError` 400 (RFC 3261 §8.1.1.8: a request that can create a
    dialog must carry exactly one SIP or SIPS Contact); a B2BUA checks it before calling anyone,
    not when the callee answers."""
    target = _contact_uri(request)
    if target is None:
        raise RemoteSipError("missing Contact in a dialog-creating request", status=400)
    return target


def _contact_uri(message: Request | Response) -> Uri | None:
    contacts = message.contacts
    if not contacts or contacts[0].uri is None:
        return None
    return contacts[0].uri


# RFC 5630 §5.3 and its warn-code 380 (IANA "SIPS Not Allowed"): a SIPS request this gateway
# cannot honour with TLS on every hop is answered 480 Temporarily Unavailable with it.
SIPS_NOT_ALLOWED = ("Warning", '380 voipgw "SIPS Not Allowed"')


def _is_sips(uri: Uri) -> bool:
    return isinstance(uri, SipUri) and uri.secure


def is_sips(uri: Uri | None) -> bool:
    """Whether ``uri`` is a SIPS URI: its request is to travel over TLS on every hop
    (RFC 5630 §3.1.3, RFC 3261 §26.2.2)."""
    return uri is not None and _is_sips(uri)


def contact_must_be_sips(request: Request) -> bool:
    """Whether our Contact in a response that creates a dialog with ``request`` must be a SIPS
    URI (RFC 3261 §12.1.1): the request had a SIPS Request-URI, or a SIPS top Record-Route,
    or (with no Record-Route) a SIPS Contact. Only asked for requests that came over TLS."""
    if _is_sips(request.uri):
        return True
    try:
        routes = request.record_routes
        return is_sips(routes[0].uri) if routes else is_sips(_contact_uri(request))
    except RemoteSipError:
        return False  # a malformed header: answered 400 by whoever reads the dialog from it
