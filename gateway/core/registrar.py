"""Registrar: REGISTER processing and bindings (RFC 3261 §10.3), sans-IO apart from the store.

Theory of operation. The caller has already authenticated the REGISTER (digest, RFC 3261 §22)
and hands over the parsed request, the authenticated account, the flow it arrived on and ``now``
(wall-clock seconds: bindings outlive the process). :meth:`Registrar.handle_register` walks the
steps of RFC 3261 §10.3 and returns the response plus what changed:

1. the Request-URI must name a domain we serve (404 otherwise; we do not proxy REGISTER);
2. Require may only ask for extensions we support (420 with Unsupported; §8.2.2.3);
3. authentication was done by the caller;
4. the authenticated account may register only its own AOR (403, §10.3 step 6);
5. the To URI, reduced to its canonical form, is the address-of-record (§10.3 step 5);
6. ``Contact: *`` with ``Expires: 0`` removes every binding, anything else with ``*`` is a 400;
7. each Contact is added, refreshed or removed. Its expiry is its ``expires`` parameter, else the
   Expires header, else our default; a non-zero expiry below ``min_expires`` answers 423 with
   Min-Expires (§10.3 step 7, §20.23); above ``max_expires`` it is clamped. For an existing
   binding with the same Call-ID, the CSeq must be higher than the stored one or the whole
   request fails (§10.3 step 7: out-of-order or replayed REGISTERs); a different Call-ID (a
   rebooted UA) simply replaces the binding. All updates commit together or not at all;
8. the 200 OK lists every current binding with its remaining ``expires`` (§10.3 step 8).

A binding is identified within its AOR by ``+sip.instance`` (with ``reg-id`` if present) when
the UA sends one (RFC 5626 §6, RFC 5627), else by the canonical contact URI: RFC 3261 §19.1.4
comparison approximated by a canonical string (scheme and host lower-cased, escapes decoded,
parameters sorted), which errs on the side of treating contacts with different parameters as
different bindings.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Iterable
from typing import TypeVar
from urllib.parse import unquote

import attrs

from gateway.core.sip.dialog import SIPS_NOT_ALLOWED
from gateway.core.sip.errors import LocalSipError, RemoteSipError
from gateway.core.sip.grammar import parse_uint_untrusted, split_list_untrusted
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.uri import SipUri, Uri
from gateway.core.store.interface import Account, Binding, BindingFlow, Store
from gateway.core.transport.flows import TLS_TRANSPORTS, FlowKey, format_address, format_host_port

MAX_DELTA_SECONDS = 2**32 - 1  # RFC 3261 §20.19 delta-seconds
SUPPORTED_EXTENSIONS = frozenset({"path"})  # RFC 3327: the Path vector is stored and echoed

_T = TypeVar("_T")
_DEFAULT_PORTS = {"sip": 5060, "sips": 5061}
# RFC 3261 §25.1: qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )
_QVALUE = re.compile(r"(?:0(?:\.\d{0,3})?|1(?:\.0{0,3})?)")


@attrs.frozen
class RegistrarPolicy:
    """What the registrar accepts.

    ``local_domains`` are the names REGISTER may use: configured domains and the gateway's own
    listener addresses, each ``host`` (any port) or ``host:port`` (that port; a URI without a
    port matches when the port is the scheme's default). IPv6 hosts are written in brackets.
    ``max_bindings`` bounds the contacts of one AOR (a REGISTER that would exceed it gets 403).
    """

    local_domains: frozenset[str]
    min_expires: int = 60
    max_expires: int = 7200
    default_expires: int = 3600
    max_bindings: int = 10

    def __attrs_post_init__(self) -> None:
        if not 0 < self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need 0 < min_expires <= default_expires <= max_expires")
        if self.max_bindings < 1:
            raise ValueError("max_bindings must be at least 1")

    def is_local(self, uri: SipUri) -> bool:
        """Whether ``uri``'s host (and port) is one of ours."""
        host = uri.host.lower()
        scheme = uri.scheme.lower()
        for domain in self.local_domains:
            want_host, want_port = _split_domain(domain.lower())
            if want_host != host:
                continue
            if want_port is None or want_port == uri.port:
                return True
            if uri.port is None and want_port == _DEFAULT_PORTS.get(scheme):
                return True
        return False


def _split_domain(domain: str) -> tuple[str, int | None]:
    if domain.startswith("["):
        end = domain.find("]")
        rest = domain[end + 1 :]
        port = rest[1:] if rest.startswith(":") else ""
        return domain[: end + 1], int(port) if port.isdigit() else None
    host, sep, port = domain.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return domain, None


@attrs.frozen
class RegisterResult:
    """The response to send and what the REGISTER did.

    ``aor`` is None when the request was refused before its AOR was known. ``bindings`` are the
    AOR's bindings after the request (those listed in a 200 OK).
    """

    response: Response
    aor: str | None = None
    added: tuple[Binding, ...] = ()
    refreshed: tuple[Binding, ...] = ()
    removed: tuple[Binding, ...] = ()
    bindings: tuple[Binding, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.added or self.refreshed or self.removed)


class _Refusal(Exception):
    """Internal: stop processing and answer ``status`` (never escapes this module)."""

    def __init__(
        self, status: int, reason: str | None = None, extra: tuple[tuple[str, str], ...] = ()
    ) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


@attrs.frozen
class _Wanted:
    """One Contact of the request, checked."""

    key: str
    contact: str
    expires: int
    q: float | None
    instance: str | None
    reg_id: int | None
    sips: bool = False


class Registrar:
    """Applies REGISTER requests to the bindings in ``store``.

    ``new_tag()`` returns a fresh To tag for each response (RFC 3261 §8.2.6.2), from the
    gateway's identifier source.
    """

    def __init__(self, store: Store, policy: RegistrarPolicy, *, new_tag: Callable[[], str]):
        self.store = store
        self.policy = policy
        self._new_tag = new_tag

    def handle_register(
        self,
        request: Request,
        *,
        account: Account,
        flow: FlowKey | BindingFlow,
        now: float,
    ) -> RegisterResult:
        """Process an authenticated REGISTER from ``account`` received over ``flow``.

        Never raises for the peer's mistakes: they become 4xx responses. Store errors propagate
        (the caller answers 500).
        """
        if request.method != "REGISTER":
            raise LocalSipError(f"handle_register given a {request.method} request")
        aor: str | None = None
        try:
            aor = self._check_target(request, account)
            return self._apply(request, aor, account, _binding_flow(flow), now)
        except _Refusal as refusal:
            response = make_response(
                request,
                refusal.status,
                refusal.reason,
                to_tag=self._to_tag(request),
                extra=refusal.extra,
            )
            return RegisterResult(response, aor)

    # -- steps --------------------------------------------------------------------------------

    def serves(self, uri: object) -> bool:
        """Step 1: whether a REGISTER's Request-URI is a domain we serve (else 404). Asked
        before authentication too (gateway/core/registration.py), as §10.3 orders it."""
        return isinstance(uri, SipUri) and self.policy.is_local(uri)

    def _check_target(self, request: Request, account: Account) -> str:
        # Step 1: is the Request-URI a domain we serve?
        if not self.serves(request.uri):
            raise _Refusal(404, "Domain Not Served Here")
        # Step 2: Require (RFC 3261 §8.2.2.3).
        required = _option_tags(request.headers.get_all("Require"))
        unsupported = [tag for tag in required if tag.lower() not in SUPPORTED_EXTENSIONS]
        if unsupported:
            raise _Refusal(420, None, (("Unsupported", ", ".join(unsupported)),))
        # Step 5: the address-of-record, from To.
        to = _remote(lambda: request.to)
        if not isinstance(to.uri, SipUri) or to.uri.user is None:
            raise _Refusal(404, "Not Found")
        if not self.policy.is_local(to.uri):
            raise _Refusal(404, "Not Found")
        # Step 6: may this account register this AOR? Only its own, and only when enabled.
        if unquote(to.uri.user) != account.name or not account.enabled:
            raise _Refusal(403, "Forbidden")
        return canonical_aor(to.uri)

    def _apply(
        self, request: Request, aor: str, account: Account, flow: BindingFlow, now: float
    ) -> RegisterResult:
        call_id = _remote(lambda: request.call_id)
        cseq = _remote(lambda: request.cseq).number
        contacts = _remote(lambda: request.contacts)
        expires_header = _expires_header(request)
        stored = self.store.registrations_for(aor)
        live = {b.key: b for b in stored if b.expires_at > now}
        expired_keys = [b.key for b in stored if b.expires_at <= now]

        upserts: list[Binding] = []
        removed: list[Binding] = []
        added: list[Binding] = []
        refreshed: list[Binding] = []

        if any(c.wildcard for c in contacts):
            # Step 6: "*" must stand alone, with Expires: 0 (RFC 3261 §10.2.2).
            if len(contacts) != 1 or expires_header != 0:
                raise _Refusal(400, "Contact * Needs Expires 0 And No Other Contact")
            for binding in live.values():
                _check_order(binding, call_id, cseq)
            removed = list(live.values())
        elif contacts:
            wanted = self._wanted(contacts, expires_header)
            path = tuple(request.headers.get_all("Path"))
            user_agent = request.headers.get("User-Agent")
            for want in wanted:
                existing = live.get(want.key)
                if existing is not None:
                    _check_order(existing, call_id, cseq)
                if want.expires == 0:
                    if existing is not None:
                        removed.append(existing)
                    continue
                if want.sips and flow.transport not in TLS_TRANSPORTS:
                    # RFC 5630 §3.1.3: a sips: Contact asks for requests to it over TLS on every
                    # hop, and this REGISTER carried it over a hop without: binding it would
                    # hold out a promise its own registration broke. Removing one over such a
                    # hop is let be (nothing is sent to a removed binding).
                    raise _Refusal(
                        480,
                        "Temporarily Unavailable (a sips: Contact needs TLS on every hop)",
                        (SIPS_NOT_ALLOWED,),
                    )
                binding = Binding(
                    aor=aor,
                    key=want.key,
                    account=account.name,
                    contact=want.contact,
                    expires_at=now + want.expires,
                    call_id=call_id,
                    cseq=cseq,
                    flow=flow,
                    q=want.q,
                    instance=want.instance,
                    reg_id=want.reg_id,
                    user_agent=user_agent,
                    path=path,
                    updated_at=now,
                )
                upserts.append(binding)
                (refreshed if existing is not None else added).append(binding)
            remaining = (set(live) - {b.key for b in removed}) | {b.key for b in upserts}
            if len(remaining) > self.policy.max_bindings:
                raise _Refusal(403, "Too Many Registrations")

        removals = [*expired_keys, *(b.key for b in removed)]
        if upserts or removals:
            self.store.apply_binding_changes(aor, upserts, removals)
        current = self.store.registrations_for(aor, now=now)
        return RegisterResult(
            self._ok(request, current, now),
            aor,
            added=tuple(added),
            refreshed=tuple(refreshed),
            removed=tuple(removed),
            bindings=current,
        )

    def _wanted(self, contacts: Iterable[NameAddr], expires_header: int | None) -> list[_Wanted]:
        by_key: dict[str, _Wanted] = {}
        too_brief = False
        for contact in contacts:
            if contact.uri is None:
                raise _Refusal(400, "Bad Contact")
            expires = _delta(contact.param("expires"), "expires")
            if expires is None:
                expires = expires_header
            if expires is None:
                expires = self.policy.default_expires
            if 0 < expires < self.policy.min_expires:
                too_brief = True
            expires = min(expires, self.policy.max_expires)
            instance = _unquote_param(contact.param("+sip.instance"))
            reg_id = _delta(contact.param("reg-id"), "reg-id")
            want = _Wanted(
                key=binding_key(contact.uri, instance, reg_id),
                contact=str(contact.uri),
                expires=expires,
                q=_qvalue(contact.param("q")),
                instance=instance,
                reg_id=reg_id,
                sips=type(contact.uri) is SipUri
                and contact.uri.scheme != "sip"  # one string comparison for a sip: Contact
                and contact.uri.secure,
            )
            by_key[want.key] = want  # a later Contact for the same binding wins
            if len(by_key) > self.policy.max_bindings:
                raise _Refusal(403, "Too Many Registrations")
        if too_brief:
            # RFC 3261 §10.3 step 7: reject the whole request, telling the shortest we accept.
            raise _Refusal(423, None, (("Min-Expires", str(self.policy.min_expires)),))
        return list(by_key.values())

    def _ok(self, request: Request, bindings: Iterable[Binding], now: float) -> Response:
        extra: list[tuple[str, str]] = [
            ("Contact", _contact_value(binding, now)) for binding in bindings
        ]
        # RFC 3327 §5.3: a registrar that stores Path returns it when the UA supports path.
        supported = {tag.lower() for tag in _option_tags(request.headers.get_all("Supported"))}
        if "path" in supported:
            extra.extend(("Path", value) for value in request.headers.get_all("Path"))
        # RFC 3261 §10.3 step 8: SHOULD include Date (UAs use it to set their clocks).
        extra.append(("Date", email.utils.formatdate(now, usegmt=True)))
        return make_response(request, 200, to_tag=self._to_tag(request), extra=extra)

    def _to_tag(self, request: Request) -> str | None:
        try:
            has_tag = request.to.tag is not None
        except RemoteSipError:
            return None  # make_response copies To as it is; nothing to tag
        return None if has_tag else self._new_tag()


# -- canonical forms --------------------------------------------------------------------------


def canonical_aor(uri: SipUri) -> str:
    """The AOR index of a To URI (RFC 3261 §10.3 step 5): URI parameters and headers removed,
    escapes decoded, scheme and host lower-cased (the user part stays case-sensitive)."""
    user = unquote(uri.user) if uri.user is not None else None
    return _sip_text(uri.scheme.lower(), user, uri.host.lower(), uri.port)


def binding_key(uri: Uri, instance: str | None = None, reg_id: int | None = None) -> str:
    """The key of a binding within its AOR (see the module docstring)."""
    if instance is not None:
        key = "instance:" + instance.lower()
        return key if reg_id is None else f"{key};reg-id={reg_id}"
    if not isinstance(uri, SipUri):
        return str(uri).lower()
    user = unquote(uri.user) if uri.user is not None else None
    if user is not None and uri.password is not None:
        user += ":" + unquote(uri.password)
    text = _sip_text(uri.scheme.lower(), user, uri.host.lower(), uri.port)
    params = sorted(
        (unquote(name).lower(), None if value is None else unquote(value).lower())
        for name, value in uri.params
    )
    text += "".join(f";{n}" if v is None else f";{n}={v}" for n, v in params)
    headers = sorted((unquote(name).lower(), unquote(value)) for name, value in uri.headers)
    if headers:
        text += "?" + "&".join(f"{n}={v}" for n, v in headers)
    return text


def _sip_text(scheme: str, user: str | None, host: str, port: int | None) -> str:
    userinfo = f"{user}@" if user is not None else ""
    return f"{scheme}:{userinfo}{format_host_port(host, port)}"


# -- small parsers ----------------------------------------------------------------------------


def _remote(get: Callable[[], _T]) -> _T:
    """Run a typed accessor of the request; the peer's malformed header becomes a 400."""
    try:
        return get()
    except RemoteSipError as exc:
        raise _Refusal(exc.status or 400, exc.reason) from exc


def _expires_header(request: Request) -> int | None:
    value = request.headers.get("Expires")
    if value is None:
        return None
    return _delta(value, "Expires")


def _delta(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_uint_untrusted(value, name, MAX_DELTA_SECONDS)
    except RemoteSipError as exc:
        raise _Refusal(400, exc.reason) from exc


def _qvalue(value: str | None) -> float | None:
    if value is None:
        return None
    if not _QVALUE.fullmatch(value):
        raise _Refusal(400, "bad q: not a qvalue between 0 and 1")
    return float(value)


def _unquote_param(value: str | None) -> str | None:
    # Header parameter values keep their quotes (grammar.py); +sip.instance is a quoted string.
    if value is None:
        return None
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return value


def _option_tags(values: Iterable[str]) -> list[str]:
    tags: list[str] = []
    for value in values:
        try:
            tags.extend(split_list_untrusted(value))
        except RemoteSipError as exc:
            raise _Refusal(400, exc.reason) from exc
    return tags


def _check_order(binding: Binding, call_id: str, cseq: int) -> None:
    # RFC 3261 §10.3 step 7: same Call-ID needs a higher CSeq, or the request fails.
    if binding.call_id == call_id and cseq <= binding.cseq:
        raise _Refusal(400, "CSeq Out Of Order")


def _binding_flow(flow: FlowKey | BindingFlow) -> BindingFlow:
    if isinstance(flow, BindingFlow):
        return flow
    return BindingFlow(flow.transport, format_address(flow.local), format_address(flow.remote))


def _contact_value(binding: Binding, now: float) -> str:
    value = f"<{binding.contact}>"
    if binding.q is not None:
        value += f";q={_format_q(binding.q)}"
    value += f";expires={binding.remaining(now)}"
    if binding.instance is not None:
        escaped = binding.instance.replace("\\", "\\\\").replace('"', '\\"')
        value += f';+sip.instance="{escaped}"'
    if binding.reg_id is not None:
        value += f";reg-id={binding.reg_id}"
    return value


def _format_q(q: float) -> str:
    text = f"{q:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text
