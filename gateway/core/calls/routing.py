"""Routing: who a request comes from (trunks by source address) and where a new call goes.

Theory of operation. A new INVITE has a :class:`~gateway.core.interfaces.Caller` (a trunk
recognised by source address, an account authenticated by digest, or nobody yet). The
``gateway_route_call`` hook runs first (``firstresult``: a plugin may ring any targets or reject);
when every plugin defers, :func:`default_route` decides from the Request-URI's user part (or the
number of a ``tel:`` URI):

* from a trunk: the trunk's ``dids`` map (the called number and the map's numbers compared as
  E.164 where the trunk's numbering plan reads them so), else an account named like the user.
  A trunk never
  reaches another trunk (no transit: it would let anyone who can reach one trunk call out over
  another at our cost);
* from an account: an account named like the user, else the enabled trunk (not down: OPTIONS
  probing, :mod:`~gateway.core.calls.trunk_health`) with the longest number prefix matching
  the number read as E.164 by ``[numbering]`` (:mod:`~gateway.core.calls.numbering`; only dial
  strings go to trunks, so a mistyped user name is a 404 rather than a call to the carrier),
  written as the trunk wants numbers; the other trunks serving the number (longest prefix
  first, then as listed) are its alternates, tried one by one when a trunk fails with one of
  ``[sip] failover_statuses``;
* from nobody: 403. The B2BUA challenges before it routes, so this is a bug guard.

A caller that asked for a SIPS URI over TLS (the call's ``secure``, RFC 5630 §3.1.3) is put
through only to the targets :func:`over_tls_only` keeps: TLS on every hop, or 480 (the call
does that, not the routing, so that a routing plugin's targets are held to it too).

An account is rung on every unexpired registered contact at once (RFC 3261 §16.6-style forking by
the B2BUA); an account without one answers 480 (RFC 3261 §21.4.18), nothing matching 404, and
a number only disabled or down trunks serve 503. The host part of the Request-URI is not
consulted: the gateway forwards to no other domain, so the user part alone decides.

A registered contact is reached over the flow its REGISTER arrived on while that flow is open:
that is the only way through a NAT (RFC 5626 §5.3 idea; RFC 3261 §18.2.2 for the reverse
direction). :func:`destination_for` says where a target goes when that flow is gone.

Everything here is synchronous; the store is the only I/O (microseconds for SQLite).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from urllib.parse import unquote

import attrs

from gateway.core.calls.numbering import NumberingPlan, read_number
from gateway.core.calls.trunk_dns import TrunkHop, TrunkTargets
from gateway.core.config import DEFAULT_ROUTE_PREFIXES, IPNetwork, TrunkConfig, trunk_numbering
from gateway.core.interfaces import Caller, RouteDecision, RouteTarget
from gateway.core.ip import ip_literal
from gateway.core.logs import shown_text
from gateway.core.plugins import PluginHookError, raising_plugin
from gateway.core.registrar import RegistrarPolicy
from gateway.core.sip.dialog import Dialog
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.grammar import parse_name_addr_untrusted, parse_uri_untrusted
from gateway.core.sip.message import Request
from gateway.core.sip.uri import SipUri, TelUri, Uri, get_param
from gateway.core.store.interface import Binding, Store
from gateway.core.transport.flows import TLS_TRANSPORTS, Address, Flow, FlowKey, FlowTable

log = logging.getLogger(__name__)

# RFC 3263 §4.2: the default port of a transport when the URI names none.
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
# Transports where "sending to the address a request came from" reaches the sender again through
# its NAT binding. For stream transports the peer's source port is ephemeral and nothing listens
# on it: only the open connection reaches it.
DATAGRAM_TRANSPORTS = frozenset({"udp"})
# Transports whose clients can be reached only over the connection they opened: a WebSocket
# client's Contact names a random ".invalid" host (RFC 7118 §5, RFC 6761 §6.4) and it listens
# nowhere. A binding registered over one is unusable once its connection is gone.
CONNECTION_ONLY_TRANSPORTS = frozenset({"ws", "wss"})
# RFC 3966 §5.1.1 visual separators, ignored when a user part is read as a number (and the
# blanks some peers put there, as the numbering plans read them too).
_VISUAL_SEPARATORS = re.compile(r"[-.()\s]")
_DIAL_STRING = re.compile(r"\+?[0-9*#]+")
_SHOWN_MAX = 40


class RoutingError(Exception):
    """A routing plugin answered something that is not a usable decision (a bug in the plugin).
    The call ends with ``sip_status``."""

    sip_status = 500


class UnroutableTarget(Exception):
    """A target names no place we can send to (not a SIP URI, a bad URI, sips over UDP).
    ``reason`` is safe to log; the leg fails with ``sip_status``."""

    def __init__(self, reason: str, sip_status: int = 502) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sip_status = sip_status


# -- trunks by source address -------------------------------------------------------------------


class TrunkMatcher:
    """Recognises the trunk a request comes from by its source IP address (``allowed_sources``;
    for a trunk named by DNS without them, the addresses its name resolves to, kept by
    :meth:`set_resolved` as they change).

    Only enabled trunks match. When networks of several trunks contain the address, the most
    specific one (longest network prefix) wins, then the trunk listed first. Whether the match
    counts as authentication is the trunk's ``auth_by_source``: the caller checks it.

    Single addresses (/32, /128: every trunk's default, and every resolved address) are one
    dictionary look-up per request; only wider networks are scanned, most specific first.
    """

    def __init__(self, trunks: Iterable[TrunkConfig]) -> None:
        self._trunks = [trunk for trunk in trunks if trunk.enabled]
        self._resolved: dict[str, tuple[str, ...]] = {}
        self._index()

    def set_resolved(self, trunk: str, addresses: Iterable[str]) -> None:
        """``trunk`` (named by DNS, without ``allowed_sources``) now resolves to
        ``addresses``: requests from them are its (trunk_dns.TrunkTargets.on_change)."""
        self._resolved[trunk] = tuple(addresses)
        self._index()

    def _index(self) -> None:
        exact: dict[ipaddress.IPv4Address | ipaddress.IPv6Address, TrunkConfig] = {}
        networks: list[tuple[IPNetwork, TrunkConfig]] = []
        for trunk in self._trunks:
            sources: Iterable[IPNetwork] = trunk.source_networks
            if trunk.allowed_sources is None and trunk.name in self._resolved:
                sources = [ipaddress.ip_network(a) for a in self._resolved[trunk.name]]
            for network in sources:
                if network.num_addresses == 1:
                    exact.setdefault(network.network_address, trunk)  # the first listed wins
                else:
                    networks.append((network, trunk))
        # Most specific first; the sort is stable, so ties stay in the order listed.
        networks.sort(key=lambda entry: -entry[0].prefixlen)
        self._exact, self._networks = exact, networks

    def identify(self, source_ip: str) -> TrunkConfig | None:
        """The trunk whose ``allowed_sources`` contain ``source_ip``, or None (also for text
        that is not an IP address)."""
        address = _ip_address(source_ip)
        if address is None:
            return None
        trunk = self._exact.get(address)
        if trunk is not None:
            return trunk  # a single address is as specific as a match gets
        for network, trunk in self._networks:
            if address.version == network.version and address in network:
                return trunk
        return None


def identify_trunk(trunks: Iterable[TrunkConfig], source_ip: str) -> TrunkConfig | None:
    """The enabled trunk a request from ``source_ip`` comes from (see :class:`TrunkMatcher`)."""
    return TrunkMatcher(trunks).identify(source_ip)


def _ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ip_literal(text)
    except ValueError:
        return None
    # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; match them as IPv4.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# -- numbers ------------------------------------------------------------------------------------


def dial_string(text: str) -> str | None:
    """``text`` as a number (``+``, digits, ``*``, ``#``) with RFC 3966 visual separators and
    telephone-subscriber parameters (``;phone-context=...``, RFC 3261 §19.1.6) removed, or None
    when it is not a number (a user name like ``alice``)."""
    number = _VISUAL_SEPARATORS.sub("", text.split(";", 1)[0])
    return number if _DIAL_STRING.fullmatch(number) else None


def longest_prefix_trunk(trunks: Iterable[TrunkConfig], number: str) -> TrunkConfig | None:
    """The trunk among ``trunks`` (enabled or not: filter first) with the longest prefix that
    ``number`` starts with; ``""``/``"*"`` match every number with length 0. Ties go to the
    trunk listed first."""
    best: tuple[int, TrunkConfig] | None = None
    for trunk in trunks:
        for prefix in trunk.prefixes:
            length = 0 if prefix in DEFAULT_ROUTE_PREFIXES else len(prefix)
            if (length == 0 or number.startswith(prefix)) and (best is None or length > best[0]):
                best = (length, trunk)
    return None if best is None else best[1]


def trunks_by_prefix(trunks: Iterable[TrunkConfig], number: str) -> list[TrunkConfig]:
    """The trunks among ``trunks`` with a prefix that ``number`` starts with, each once at its
    longest such prefix, longest first; ties in the order listed (the sort is stable)."""
    matched: list[tuple[int, TrunkConfig]] = []
    for trunk in trunks:
        lengths = [
            0 if prefix in DEFAULT_ROUTE_PREFIXES else len(prefix)
            for prefix in trunk.prefixes
            if prefix in DEFAULT_ROUTE_PREFIXES or number.startswith(prefix)
        ]
        if lengths:
            matched.append((max(lengths), trunk))
    matched.sort(key=lambda entry: -entry[0])
    return [trunk for _, trunk in matched]


def called_user(uri: Uri) -> str | None:
    """The user a Request-URI calls: a SIP URI's user part with escapes decoded (RFC 3261
    §19.1.2), a tel URI's number; None when there is none."""
    if isinstance(uri, SipUri):
        return unquote(uri.user) if uri.user else None
    if isinstance(uri, TelUri):
        return uri.number or None
    return None


# -- where targets go ---------------------------------------------------------------------------


@attrs.frozen
class ContactTarget(RouteTarget):
    """A :class:`RouteTarget` for a registered contact, carrying its binding: the flow the
    REGISTER came over (the NAT's public address), its Path (RFC 3327) and instance."""

    binding: Binding = attrs.field(kw_only=True)


@attrs.frozen
class TrunkHopTarget(RouteTarget):
    """A :class:`RouteTarget` for one target of a trunk named by DNS (RFC 3263): its Request-URI
    names the trunk's domain, ``hop`` is the address the request goes to, ``index`` its place in
    this call's order (0: the first), ``last`` whether it is the last the call tries, and
    ``server_name`` the domain a TLS certificate must name (RFC 5922 §4)."""

    hop: TrunkHop = attrs.field(kw_only=True)
    index: int = attrs.field(kw_only=True)
    last: bool = attrs.field(kw_only=True)
    server_name: str = attrs.field(kw_only=True)


SERVER_FAILURES = (408, 503)
"""RFC 3263 §4.3: the statuses that are one server's failure, not its trunk's answer: no
response (408, our own for a timeout too) and 503 (a transport error is our 503 as well)."""


def other_hops_left(target: RouteTarget | None) -> bool:
    """Whether ``target`` is a target of a trunk named by DNS with others after it: its
    failure is one server's, not the trunk's (RFC 3263 §4.3: the request tries the next), and
    does not mark the trunk down."""
    return isinstance(target, TrunkHopTarget) and not target.last


def alternates_after(
    alternates: Sequence[RouteTarget], failed: RouteTarget | None, status: int
) -> list[RouteTarget]:
    """``alternates`` after a request to ``failed`` ended in ``status``: without the other
    targets of its trunk when ``failed`` is a target of a trunk named by DNS and ``status`` is
    not a :data:`SERVER_FAILURES` one. RFC 3263 §4.3: a transport error, no response or a 503
    sends the request to the trunk's next target; any other failure (500, 502, 504 ...) is the
    trunk's answer, and the request goes on to the next trunk. Calls, blind transfers and
    MESSAGE all follow this rule."""
    if not isinstance(failed, TrunkHopTarget) or status in SERVER_FAILURES:
        return list(alternates)
    return [
        alternate
        for alternate in alternates
        if not (isinstance(alternate, TrunkHopTarget) and alternate.trunk == failed.trunk)
    ]


@attrs.frozen
class Destination:
    """Where to send a request: a transport name and address, and the open flow to use when
    there is one (then ``host``/``port`` are its remote address). ``host`` is an IP address
    without brackets, or a host name the caller must resolve (RFC 3263)."""

    transport: str
    host: str
    port: int
    flow: Flow | None = attrs.field(default=None, eq=False)

    @property
    def address(self) -> Address:
        return (self.host, self.port)


def destination_for(target: RouteTarget) -> Destination:
    """Where a request to ``target`` goes:

    1. for a registered contact with a Path, the first Path hop (RFC 3327 §5.3: the Path is the
       route set of requests to the contact), over the REGISTER's flow when that leads there;
    2. the target's flow while it is open (a registered contact behind NAT);
    3. for a contact registered over a datagram transport from an address other than the
       contact's own host:port (a NAT rewrote it), that source address, over that transport:
       the NAT binding the REGISTERs keep open leads back to the UA (RFC 3581 idea);
    4. the target URI: its ``transport`` parameter (``sips:`` means TLS, else UDP) and port
       (5060, or 5061 for TLS; RFC 3263 §4.2).

    Raises :class:`UnroutableTarget` when the URI is not a usable SIP URI.
    """
    if isinstance(target, TrunkHopTarget):
        resolved = target.hop  # resolved off the call path (trunk_dns.py)
        return Destination(resolved.transport, resolved.host, resolved.port)
    flow = target.flow
    live = flow if flow is not None and not flow.closed else None
    if isinstance(target, ContactTarget) and target.binding.path:
        # RFC 3327 §5.3: the Path is the way to the contact, whatever flow the REGISTER came
        # over; that flow still carries the request when it leads to the first hop.
        hop = _destination_of_path(target.binding.path[0])
        if live is not None and (live.transport, live.remote) == (hop.transport, hop.address):
            return Destination(live.transport, hop.host, hop.port, live)
        return hop
    if live is not None:
        host, port = live.remote
        return Destination(live.transport, host, port, live)
    uri_destination = _destination_of_uri(target.uri)
    if isinstance(target, ContactTarget):
        binding = target.binding
        transport = binding.flow.transport
        remote = _parse_address(binding.flow.remote)
        if (
            transport in DATAGRAM_TRANSPORTS
            and remote is not None
            and remote != uri_destination.address
        ):
            return Destination(transport, remote[0], remote[1])
    return uri_destination


RECONNECTING_TRANSPORTS = frozenset({"tcp", "tls"})
"""Transports whose legs a new connection can reach when theirs is gone: WebSocket clients
(browsers) take no connections, and UDP has none to lose."""


def reconnect_destination(
    transport: str,
    address: Address,
    *,
    trunk: Destination | None,
    next_hop: Uri | None,
) -> tuple[str, Address]:
    """Where a new connection goes to the party of a leg over ``transport`` from ``address``
    whose connection, one the party opened, is closed: that connection came from a port of
    the party's choosing, which takes no connections.

    ``trunk``: for the caller's leg of a trunk call, the trunk's address (the leg's outbound
    proxy, as for calls to it; a TLS certificate is then checked against the trunk's name),
    used when it is over the leg's transport. Else ``next_hop``, the dialog's first
    Record-Route or its Contact (RFC 3261 §12.2.1.1), when it is an IP address over the leg's
    transport: a name is not looked up on the call path, and a leg keeps its transport (a
    secure dialog its TLS, RFC 5630 §3.1.3). Otherwise ``(transport, address)`` as given."""
    where = (transport, address)
    if transport not in RECONNECTING_TRANSPORTS:
        return where
    if trunk is not None and trunk.transport == transport:
        return transport, trunk.address
    if next_hop is None:
        return where
    try:
        hop = destination_for(RouteTarget(str(next_hop)))
        ip_literal(hop.host)
    except (UnroutableTarget, ValueError):
        return where
    return (transport, hop.address) if hop.transport == transport else where


def subscriber_destination(flow: Flow, dialog: Dialog) -> Destination:
    """Where a NOTIFY in a subscription's ``dialog`` goes: over ``flow``, the one the
    subscriber's latest request came on (the way through its NAT); once that is a closed
    connection (an edge proxy's, closed after its idle lifetime), over a new one to the
    dialog's next hop (:func:`reconnect_destination`), not to the port the closed one came
    from."""
    if flow.closed and flow.reliable:
        transport, (host, port) = reconnect_destination(
            flow.transport, flow.remote, trunk=None, next_hop=dialog.next_hop_uri()
        )
        return Destination(transport, host, port)
    return Destination(flow.transport, flow.remote[0], flow.remote[1], flow)


def over_tls_only(targets: Iterable[RouteTarget]) -> tuple[RouteTarget, ...]:
    """The targets among ``targets`` that :func:`destination_for` reaches over TLS (``tls``,
    or ``wss``, which is TLS all the way, RFC 7118 §5), in order: where a call whose caller
    asked for a SIPS URI may go (RFC 5630 §3.1.3: TLS on every hop, the last one to the callee
    too). A contact registered over UDP, TCP or WS is left out, whatever its URI says; so is a
    trunk reached without TLS. A target that cannot be sent to at all is left out too."""
    kept = []
    for target in targets:
        try:
            transport = destination_for(target).transport
        except UnroutableTarget:
            continue
        if transport in TLS_TRANSPORTS:
            kept.append(target)
    return tuple(kept)


def _destination_of_uri(text: str) -> Destination:
    try:
        uri = parse_uri_untrusted(text)
    except RemoteSipError as err:
        raise UnroutableTarget(f"bad target URI: {err.reason}") from None
    if not isinstance(uri, SipUri):
        raise UnroutableTarget(f"cannot send to a {type(uri).__name__} target", 416)
    transport = uri.transport or ("tls" if uri.secure else "udp")
    if uri.secure:
        # RFC 5630 §3.1.3: sips with transport=tcp means TLS over TCP; sips over UDP is not TLS.
        # RFC 7118 §5: sips goes with WSS, which is TLS all the way too.
        if transport not in ("tcp", "tls", "wss"):
            raise UnroutableTarget(f"sips URI over {transport}", 416)
        transport = "wss" if transport == "wss" else "tls"
    host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
    port = uri.port if uri.port is not None else DEFAULT_PORTS.get(transport, 5060)
    return Destination(transport, host, port)


def _destination_of_path(text: str) -> Destination:
    try:
        hop = parse_name_addr_untrusted(text)
    except RemoteSipError as err:
        raise UnroutableTarget(f"bad Path entry: {err.reason}") from None
    if hop.uri is None:
        raise UnroutableTarget("bad Path entry: no URI")
    return _destination_of_uri(str(hop.uri))


def _parse_address(text: str) -> Address | None:
    """``"127.0.0.1:5060"`` or ``"[::1]:5060"`` (a BindingFlow field) as an Address."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            return None
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            return None
    if not host or not port_text.isdigit() or not 0 < int(port_text) <= 65535:
        return None
    return (host, int(port_text))


# -- the directory ------------------------------------------------------------------------------


class GatewayDirectory:
    """The core's :class:`~gateway.core.interfaces.Directory`: accounts and registrations from
    the store, live flows from the flow table, trunks from the configuration.

    ``local_domains`` are the names that count as ours (as for the registrar: ``host`` or
    ``host:port``, IPv6 in brackets); ``now`` is the wall clock the registrar stamps bindings with.
    ``numbering`` is ``[numbering]``: how accounts dial, and each trunk's plan unless it sets
    its own keys.
    """

    def __init__(
        self,
        store: Store,
        flows: FlowTable,
        trunks: Sequence[TrunkConfig],
        local_domains: frozenset[str],
        now: Callable[[], float],
        numbering: NumberingPlan | None = None,
        trunk_up: Callable[[str], bool] | None = None,
        trunk_targets: TrunkTargets | None = None,
    ) -> None:
        self.store = store
        # The cached targets of the trunks named by DNS (trunk_dns.py); None: no such trunk.
        self.dns_targets = trunk_targets
        self.flows = flows
        self.trunks = tuple(trunks)
        self._by_name = {trunk.name: trunk for trunk in self.trunks}
        self.now = now
        self.local_domains = local_domains
        self._domains = RegistrarPolicy(local_domains=local_domains)
        self.trunk_up = trunk_up if trunk_up is not None else (lambda name: True)
        self.numbering = numbering if numbering is not None else NumberingPlan()
        self._trunk_plans = {t.name: trunk_numbering(self.numbering, t) for t in self.trunks}
        # Each trunk's dids with their numbers read as E.164 by its plan, so "030 123456" from
        # the carrier finds a DID written "+4930123456" and the other way round.
        self._e164_dids = {
            t.name: {self.to_e164(number, trunk=t.name): owner for number, owner in t.dids.items()}
            for t in self.trunks
        }

    def is_local_domain(self, host: str) -> bool:
        """Whether ``host`` (``name``, ``name:port``, ``[v6]:port``) is one of our domains; a name
        without a port matches a domain listed with the default port 5060."""
        name, port = host, None
        if host.startswith("["):
            end = host.find("]")
            if end == -1:
                return False
            name, rest = host[: end + 1], host[end + 1 :]
            if rest:
                if not rest.startswith(":") or not rest[1:].isdigit():
                    return False
                port = int(rest[1:])
        elif host.count(":") == 1:
            name, _, port_text = host.partition(":")
            if not port_text.isdigit():
                return False
            port = int(port_text)
        elif ":" in host:
            name = f"[{host}]"  # a bare IPv6 address
        return self._domains.is_local(SipUri(scheme="sip", host=name, port=port))

    def account_exists(self, name: str) -> bool:
        """Whether ``name`` is an enabled account (a disabled one takes no calls)."""
        account = self.store.get_account(name)
        return account is not None and account.enabled

    def contacts(self, account: str) -> tuple[ContactTarget, ...]:
        """One target per unexpired binding of an enabled ``account`` (highest q first), with the
        flow the binding registered over while it is open."""
        if not self.account_exists(account):
            return ()
        return self._contacts_of(account)

    def _contacts_of(self, account: str) -> tuple[ContactTarget, ...]:
        """:meth:`contacts` of an account the caller has just found enabled."""
        bindings = self.store.bindings_for_account(account, now=self.now())
        targets = []
        for binding in bindings:
            flow = self._live_flow(binding)
            if flow is None and binding.flow.transport in CONNECTION_ONLY_TRANSPORTS:
                # Its WebSocket is closed: nothing reaches that contact until it registers
                # again over a new one (the next contact rings, or the caller gets 480).
                continue
            targets.append(
                ContactTarget(uri=binding.contact, flow=flow, account=account, binding=binding)
            )
        return tuple(targets)

    def _live_flow(self, binding: Binding) -> Flow | None:
        local = _parse_address(binding.flow.local)
        remote = _parse_address(binding.flow.remote)
        if local is None or remote is None:
            return None
        flow = self.flows.get(FlowKey(binding.flow.transport, local, remote))
        return None if flow is None or flow.closed else flow

    def trunk(self, name: str) -> TrunkConfig | None:
        """The trunk called ``name`` (enabled or not)."""
        return self._by_name.get(name)

    def trunk_for_number(self, number: str) -> str | None:
        """The enabled trunk, not down, with the longest prefix matching ``number``, by name
        (the first of :meth:`trunks_for_number`)."""
        trunks = self.trunks_for_number(number)
        return trunks[0] if trunks else None

    def trunks_for_number(self, number: str) -> tuple[str, ...]:
        """Every enabled trunk that serves ``number`` and is not down, by name: longest
        matching prefix first, then as listed; the first takes the call, the others are its
        failover order."""
        return tuple(
            trunk.name
            for trunk in trunks_by_prefix((t for t in self.trunks if t.enabled), number)
            if self.trunk_up(trunk.name)
        )

    def trunk_hop(self, trunk: str) -> Destination | None:
        """Where a new connection to ``trunk`` goes: its address, or for a trunk named by DNS
        its first target in this call's order (RFC 3263 §4.3); None for a trunk we do not know
        or whose name has not resolved. What a call the trunk sent us over a connection of its
        own reaches it by once that connection is closed: the connection came from a port of
        the trunk's choosing, which takes no connections."""
        config = self.trunk(trunk)
        if config is None:
            return None
        parts = config.address_parts
        if parts.is_name:
            targets = self.dns_targets
            hops = targets.hops(trunk, 1) if targets is not None and trunk in targets else ()
            return Destination(hops[0].transport, hops[0].host, hops[0].port) if hops else None
        assert parts.port is not None  # TRANSPORT:IP:PORT, its port required (config.py)
        return Destination(parts.transport, parts.host, parts.port)

    def trunk_resolved(self, trunk: str) -> bool:
        """Whether ``trunk`` has targets: True for a trunk with an address, for one named by
        DNS whether its name has resolved (trunk_dns.py)."""
        targets = self.dns_targets
        return targets is None or trunk not in targets or targets.resolution(trunk) is not None

    def plan_of(self, trunk: str | None) -> NumberingPlan:
        """The numbering plan of the trunk called ``trunk``; ``[numbering]`` for None (how our
        accounts dial) or a trunk we do not know."""
        if trunk is None:
            return self.numbering
        return self._trunk_plans.get(trunk, self.numbering)

    def to_e164(self, number: str, *, trunk: str | None = None) -> str:
        """``number`` (a user part or tel number: separators and a ``phone-context`` are read)
        as E.164 by the numbering plan of ``trunk`` (None: ``[numbering]``, how our accounts
        dial), or as a dial string where the plan cannot read it (a short code, no plan), or
        unchanged when it is not a number at all (a user name)."""
        return read_number(self.plan_of(trunk), number)

    def written_for(self, trunk: str, number: str) -> str:
        """An E.164 ``number`` as the trunk called ``trunk`` wants it (its ``number_format``,
        by its numbering plan); anything else, or for a trunk we do not know, unchanged."""
        config = self.trunk(trunk)
        if config is None:
            return number
        return self.plan_of(trunk).written_as(number, config.number_format)

    def trunk_target(self, trunk: str, number: str) -> RouteTarget | None:
        """The target for calling ``number`` over the enabled trunk ``trunk``:
        ``sip:NUMBER@HOST:PORT;transport=T``, an E.164 number written in the trunk's
        ``number_format`` (by its numbering plan), then ``strip_prefix`` and ``add_prefix``.
        None for an unknown or disabled trunk, or a number that is not a dial string or is
        empty after stripping. For a trunk named by DNS, its first target in this call's order
        (:meth:`trunk_targets` gives them all); None while its name has not resolved."""
        found = self._trunk_request_uri(trunk, number)
        if found is None:
            return None
        config, uri = found
        targets = self.dns_targets
        if targets is not None and trunk in targets:
            hops = self._hop_targets(config, uri, limit=1)
            return hops[0] if hops else None
        return RouteTarget(uri=uri, trunk=config.name)

    def trunk_targets(self, trunk: str, number: str) -> tuple[RouteTarget, ...]:
        """Every target :meth:`trunk_target` could give, in this call's order: for a trunk
        named by DNS one per resolved target (RFC 3263 §4.3: tried one after another; at most
        ``[dns] max_targets``, each a ``TrunkHopTarget`` with its ``hop``), else the one
        target; empty where :meth:`trunk_target` is None. Asking again draws the RFC 2782
        weights again."""
        targets = self.dns_targets
        if targets is None or trunk not in targets:
            target = self.trunk_target(trunk, number)
            return () if target is None else (target,)
        found = self._trunk_request_uri(trunk, number)
        if found is None:
            return ()
        return self._hop_targets(*found)

    def _trunk_request_uri(self, trunk: str, number: str) -> tuple[TrunkConfig, str] | None:
        config = self.trunk(trunk)
        number_text = dial_string(number)
        if config is None or not config.enabled or number_text is None:
            return None
        if self.plan_of(trunk).is_short_code(number_text):
            # An emergency or service number goes as dialled: strip_prefix and add_prefix
            # are for subscriber numbers (a prefix meant for +49... would turn 112 into 12).
            sent = number_text
        else:
            number_text = self.written_for(trunk, number_text)
            sent = config.add_prefix + number_text[config.strip_prefix :]
        if not sent or sent == "+":
            return None
        return config, trunk_uri(config, sent)

    def _hop_targets(
        self, config: TrunkConfig, uri: str, limit: int | None = None
    ) -> tuple[TrunkHopTarget, ...]:
        assert self.dns_targets is not None
        hops = self.dns_targets.hops(config.name, limit)
        name = config.address_parts.host
        return tuple(
            TrunkHopTarget(
                uri=uri,
                trunk=config.name,
                hop=hop,
                index=index,
                last=index == len(hops) - 1,
                server_name=name,
            )
            for index, hop in enumerate(hops)
        )

    def account_number(
        self, trunk: TrunkConfig, account: str, *, caller_id: bool = True
    ) -> str | None:
        """How ``account`` is known on ``trunk`` (see :func:`account_number_on_trunk`)."""
        return account_number_on_trunk(trunk, account, self.plan_of(trunk.name), caller_id)

    def did_account(self, trunk: str, number: str) -> str | None:
        """The account the trunk's ``dids`` map ``number`` to (compared as a dial string, so
        ``+49-30-123`` finds ``+4930123``, and as E.164 by the trunk's numbering plan, so
        ``030123`` finds ``+4930123``), or None."""
        config = self.trunk(trunk)
        if config is None:
            return None
        account = config.dids.get(number)
        if account is None and (normalized := dial_string(number)) is not None:
            account = config.dids.get(normalized)
        if account is None:
            account = self._e164_dids[trunk].get(self.to_e164(number, trunk=trunk))
        return account


def trunk_uri(trunk: TrunkConfig, user: str) -> str:
    """``sip:USER@HOST:PORT;transport=T`` at ``trunk``'s address; for a trunk named by DNS
    ``sip:USER@NAME[:PORT];transport=T``, the name (and a port only when the address has one:
    RFC 3263 §4.2, a URI with a port is not looked up by SRV); for one whose transport the
    DNS chooses ``sip:USER@NAME`` (§4.1: a URI without transport and port is what a NAPTR
    look-up starts from)."""
    spec = trunk.address_parts
    # "#" is not allowed unescaped in a SIP user part (RFC 3261 §25.1 user-unreserved).
    user = user.replace("#", "%23")
    if spec.transport:  # every form but a bare domain: a truth test per call, no more
        port = "" if spec.port is None else f":{spec.port}"
        return f"sip:{user}@{spec.uri_host}{port};transport={spec.transport}"
    return f"sip:{user}@{spec.host}"


def account_number_on_trunk(
    trunk: TrunkConfig, account: str, plan: NumberingPlan, caller_id: bool = True
) -> str | None:
    """How ``account`` is known on ``trunk``: the first of the trunk's ``dids`` that reaches
    it (else, with ``caller_id``, the trunk's ``caller_id``), read as E.164 by the trunk's
    numbering ``plan`` and written in its ``number_format``; None when there is neither. What
    a call from the account to the trunk presents (From, P-Asserted-Identity), and the
    mailbox a voicemail trunk knows it by."""
    numbers = [number for number, owner in trunk.dids.items() if owner == account]
    number = numbers[0] if numbers else (trunk.caller_id if caller_id else None)
    if number is None:
        return None
    return plan.written_as(read_number(plan, number), trunk.number_format)


# -- decisions ----------------------------------------------------------------------------------


def default_route(request: Request, caller: Caller, directory: GatewayDirectory) -> RouteDecision:
    """The core's routing when no ``gateway_route_call`` plugin decides (see the module
    docstring for the rules and the answers)."""
    if caller.kind not in ("trunk", "account") or caller.name is None:
        return RouteDecision.reject(403, "Forbidden: caller not identified")
    user = called_user(request.uri)
    if user is None:
        if isinstance(request.uri, SipUri | TelUri):
            return RouteDecision.reject(404, "Not Found: no user part in the Request-URI")
        return RouteDecision.reject(416, "Unsupported URI Scheme")
    number = dial_string(user)

    if caller.kind == "trunk":
        trunk = directory.trunk(caller.name)
        if trunk is not None and trunk.register and user == trunk.registered_contact_user:
            # A call to the Contact we registered with the trunk: the number is in
            # P-Called-Party-ID (RFC 3455 §4.2) or To (trunk_registration.py).
            user = called_number_of(request) or user
        account = directory.did_account(caller.name, user)
        if account is not None and not directory.account_exists(account):
            log.warning(
                "trunk %s: DID %s maps to account %s, which does not exist or is disabled",
                caller.name,
                _shown(user),
                _shown(account),
            )
            account = None
        if account is None and directory.account_exists(user):
            account = user
        if account is None:
            return RouteDecision.reject(404, f"Not Found: no account or DID for {_shown(user)}")
        return _ring_account(directory, account)

    if directory.account_exists(user):
        return _ring_account(directory, user)
    if number is not None:
        number = directory.to_e164(_with_phone_context(request.uri, user))
        if directory.dns_targets is None:
            targets = [
                target
                for trunk in directory.trunks_for_number(number)
                if (target := directory.trunk_target(trunk, number)) is not None
            ]
        else:
            # Trunks named by DNS: each of their targets in turn, before the next trunk.
            targets = [
                target
                for trunk in directory.trunks_for_number(number)
                for target in directory.trunk_targets(trunk, number)
            ]
        if targets:
            return RouteDecision(targets=(targets[0],), alternates=tuple(targets[1:]))
        for trunk in trunks_by_prefix(directory.trunks, number):
            if trunk.enabled and directory.trunk_up(trunk.name):
                continue  # it serves the number, which it cannot be sent (stripped to nothing)
            why = "disabled" if not trunk.enabled else "down (not answering OPTIONS)"
            if trunk.enabled and not directory.trunk_resolved(trunk.name):
                why = "down (its name does not resolve)"
            return RouteDecision.reject(
                503,
                f"Service Unavailable: no trunk serves {_shown(number)} "
                f"(trunk {_shown(trunk.name)} is {why})",
            )
    return RouteDecision.reject(404, f"Not Found: no user or trunk route for {_shown(user)}")


def called_number_of(request: Request) -> str | None:
    """The user called, as a registering trunk's INVITE to our Contact says it: the user of
    P-Called-Party-ID (RFC 3455 §4.2), else of To; None when neither has one."""
    values = request.headers.get_all("P-Called-Party-ID")
    for value in values[:1]:
        try:
            named = parse_name_addr_untrusted(value)
        except RemoteSipError:
            continue
        if named.uri is not None and (user := called_user(named.uri)):
            return user
    return called_user(request.to.uri) if request.to.uri is not None else None


def _with_phone_context(uri: Uri, user: str) -> str:
    """``user`` with the ``phone-context`` of a tel URI, which keeps it among the URI's
    parameters rather than in the number (a SIP URI's user part carries its own)."""
    if isinstance(uri, TelUri):
        context = get_param(uri.params, "phone-context")
        if context:
            return f"{user};phone-context={context}"
    return user


def _ring_account(directory: GatewayDirectory, account: str) -> RouteDecision:
    # Every caller of this checked account_exists(account) a moment ago: one look-up is enough.
    targets = directory._contacts_of(account)
    if not targets:
        return RouteDecision.reject(
            480, f"Temporarily Unavailable: {_shown(account)} has no registered device"
        )
    return RouteDecision(targets=targets)


def route_call(
    hook: Any, request: Request, caller: Caller, directory: GatewayDirectory
) -> RouteDecision:
    """Ask the ``gateway_route_call`` hook (``hook`` is the plugin manager's ``pm.hook``), then
    :func:`default_route`. A plugin's exception ends the call: raised as
    :class:`~gateway.core.plugins.PluginHookError`, which names the plugin (pluggy's hook call
    does not); a plugin answer that is not a usable :class:`RouteDecision` raises
    :class:`RoutingError`."""
    try:
        decision = hook.gateway_route_call(request=request, caller=caller, directory=directory)
    except Exception as exc:
        plugin = raising_plugin(hook.gateway_route_call, exc)
        raise PluginHookError(plugin, "gateway_route_call", exc) from exc
    if decision is None:
        return default_route(request, caller, directory)
    if not isinstance(decision, RouteDecision):
        raise RoutingError(
            f"gateway_route_call returned {type(decision).__name__}, "
            "expected a RouteDecision or None"
        )
    if decision.reject_status is not None:
        if not 300 <= decision.reject_status <= 699 or decision.targets:
            raise RoutingError(
                f"gateway_route_call rejected with status {decision.reject_status} "
                f"and {len(decision.targets)} targets; expected 300-699 and no targets"
            )
    elif not decision.targets:
        raise RoutingError("gateway_route_call returned a decision with no targets and no reject")
    if decision.alternates and not decision.targets:
        raise RoutingError("gateway_route_call returned alternates without targets")
    return decision


def _shown(text: str) -> str:
    """``text`` fit for a reason phrase or a log line: it may come from the network (a decoded
    user part can hold CR LF), so anything but printable ASCII becomes "?" and it is cut short."""
    return shown_text(text, _SHOWN_MAX)
