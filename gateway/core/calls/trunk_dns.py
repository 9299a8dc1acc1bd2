"""Trunks named by DNS (RFC 3263): where a trunk whose ``address`` is a host name is sent to.

Theory of operation. A trunk written ``TRANSPORT:NAME:PORT`` is reached at the A/AAAA
addresses of NAME on PORT (RFC 3263 §4.2: an explicit port means no SRV); one written
``TRANSPORT:NAME`` at the targets of NAME's SRV records for its transport (``_sip._udp``,
``_sip._tcp``, ``_sips._tcp`` for TLS), each at its addresses, and when NAME has no SRV records
at NAME's own addresses on 5060 (5061 for TLS). One written ``NAME`` alone lets the DNS choose
the transport (§4.1, :func:`naptr_choices`): NAME's NAPTR records for the services we can use
(``SIP+D2U``, ``SIP+D2T``, ``SIPS+D2T``: the transports enabled with a listener), the lowest
order, by preference, each leading to the SRV records its replacement names; without NAPTR
records the SRV records of each of those transports (udp, tcp, tls: RFC 3263 leaves the order
to the client); without either, NAME's addresses on UDP 5060 (the first usable transport when
UDP is not). The targets of every NAPTR record (or transport) go one after the other: the
second is where a call goes when the first's targets all failed (§4.3). :func:`resolve` does
one such resolution through a :class:`Resolver` (:class:`DnsPythonResolver` in production, a
fake in tests).

Resolution is off the call path. :class:`TrunkTargets` resolves every named trunk at start-up
(bounded by ``[dns] timeout``: a trunk that does not resolve by then is down, logged, and the
gateway starts without it) and again before the answer's TTL runs out (90 % of it, clamped to
``[dns] min_ttl`` ... ``max_ttl``). When the DNS fails, the last good answer is kept (RFC 3263
does not say to drop a target that worked because the DNS is out for a while) and the name is
asked again every ``retry_interval``; a name that keeps failing is logged as a dependency that
keeps failing is (gateway/core/failure_log.py): once at WARNING with the reason and what calls
do meanwhile, a summary every 300 s, one INFO line when it resolves again. A call only reads
the cached answer: no DNS query, and for a trunk with one target per priority no work beyond a
tuple returned.

Each call orders the targets (RFC 2782): by priority, and within a priority by a weighted
random draw, each SRV target followed by its addresses in the order the DNS gave them;
at most ``[dns] max_targets`` of them are tried (the call's RFC 3263 §4.3 failover,
gateway/core/calls/call.py). The weights are drawn per call, not per resolution, so that a
carrier's weights spread this gateway's calls as they would spread many clients'.

Requests the gateway sends a named trunk outside calls read the same cache: OPTIONS probes and
REGISTER (:func:`next_hop`), a MESSAGE (routed as a call, one alternate per target) and the
voicemail trunk's message-summary SUBSCRIBE (subscriptions.py, the targets in turn).
:meth:`TrunkTargets.status` tells an operator (``voipgw trunks``) what the last answer was, when
it came and when the name is asked next.

Other SIP targets the gateway opens sessions to are named the same way: a SIPREC recorder's URI
with a host name (:func:`named_uri_address`: RFC 3263 §4.1/§4.2 read from the URI) is kept
resolved by a :class:`TrunkTargets` of its own (``named``), and the session tries its targets
in turn (gateway/core/calls/outbound.py).

Names in a trunk dialog's Contact or Record-Route are never looked up: a leg's in-dialog
requests go to the address its INVITE went to (or came from), over its flow (leg.py, and
docs/configuration.md "Trunks named by DNS" says why).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from gateway.core.config import DnsSection, TrunkAddress, TrunkConfig, dns_server
from gateway.core.failure_log import FailureLog
from gateway.core.logs import log_exception
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.uri import SipUri, redact_password
from gateway.core.transport.flows import format_host_port

log = logging.getLogger(__name__)

# Bounds on what one answer may hold (DNS answers are the network's): SRV records per name and
# addresses per host name beyond these are ignored.
MAX_SRV_RECORDS = 16
MAX_ADDRESSES = 8
MAX_NAPTR_RECORDS = 16
# RFC 3263 §4.2: the SRV service of each transport, and the port without SRV records.
SRV_SERVICES = {"udp": "_sip._udp", "tcp": "_sip._tcp", "tls": "_sips._tcp"}
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
# RFC 3263 §4.1: the NAPTR service of each transport (RFC 3263 §10 registers these three).
NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}
# RFC 3263 §4.1 without NAPTR records: the transports whose SRV records are asked for, in this
# order (the RFC leaves it to the client; Kamailio's default preference is the same).
TRANSPORT_ORDER = ("udp", "tcp", "tls")
REFRESH_SHARE = 0.9  # of the TTL: resolve again before the cached answer expires


class DnsError(Exception):
    """The DNS did not answer (timeout, SERVFAIL, no server reachable). A name that does not
    exist or has no records of the type is an empty answer, not this."""


@attrs.frozen
class SrvRecord:
    """One SRV record (RFC 2782). ``target`` is a host name without the trailing dot."""

    priority: int
    weight: int
    port: int
    target: str


@attrs.frozen
class NaptrRecord:
    """One NAPTR record (RFC 3403 §4.1). ``replacement`` is a domain name without the trailing
    dot (``""`` for the root, "no replacement")."""

    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


@attrs.frozen
class TrunkHop:
    """One place a trunk's requests can go: transport, IP address, port."""

    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport}:{format_host_port(self.host, self.port)}"


@attrs.frozen
class Resolution:
    """One resolution of a trunk's name: per priority (lowest first) its SRV targets, each a
    weight and the hops of its addresses; ``ttl`` the smallest TTL of the records used."""

    groups: tuple[tuple[tuple[int, tuple[TrunkHop, ...]], ...], ...]
    ttl: float

    @property
    def hops(self) -> tuple[TrunkHop, ...]:
        """Every hop, in priority order and as listed within a priority (no draw)."""
        return tuple(hop for group in self.groups for _, hops in group for hop in hops)

    def ordered(self, rng: random.Random, limit: int) -> tuple[TrunkHop, ...]:
        """The hops in the order a call tries them (RFC 2782 weighted order within each
        priority), at most ``limit``."""
        if all(len(group) == 1 for group in self.groups):
            return self.hops[:limit]  # nothing to draw: the common case costs a slice
        result: list[TrunkHop] = []
        for group in self.groups:
            for _, hops in weighted_order(group, rng):
                result.extend(hops)
        return tuple(result[:limit])


def weighted_order(
    entries: Sequence[tuple[int, tuple[TrunkHop, ...]]], rng: random.Random
) -> list[tuple[int, tuple[TrunkHop, ...]]]:
    """Entries of one priority (weight first) in RFC 2782's order: zero weights first, then
    repeatedly a random number in [0, sum of weights] picks the first entry whose running sum
    reaches it. A weight-0 entry is thus picked only when nothing else is left or by chance 0,
    which RFC 2782 wants ("a very small chance of being selected")."""
    left = sorted(entries, key=lambda entry: entry[0] != 0)  # stable: zeros first
    ordered = []
    while left:
        total = sum(weight for weight, _ in left)
        pick = rng.randint(0, total)
        running = 0
        for index, (weight, _) in enumerate(left):
            running += weight
            if running >= pick:
                ordered.append(left.pop(index))
                break
    return ordered


def refresh_in(ttl: float, dns: DnsSection) -> float:
    """Seconds until an answer with ``ttl`` is resolved again: before it expires, within
    ``min_ttl`` ... ``max_ttl`` (a TTL of 0 must not make a query loop, nor a week-long one
    keep a carrier's moved target)."""
    return min(max(ttl * REFRESH_SHARE, dns.min_ttl), dns.max_ttl)


def naptr_choices(
    records: Iterable[NaptrRecord], transports: Iterable[str]
) -> list[tuple[str, str]]:
    """The NAPTR records of a trunk's domain a client using ``transports`` follows (RFC 3263
    §4.1), as ``(transport, SRV name)`` in the order they are tried: only the SIP services of
    those transports (a client MUST NOT use a transport it does not support: TLS only with the
    TLS transport), flag ``S`` (the replacement is an SRV name; RFC 3263 uses no other) and no
    regular expression; of those the lowest order alone (RFC 3403 §4.1: "the client MUST NOT
    consider records with a different Order" once one matched), by preference. The first
    ``MAX_NAPTR_RECORDS`` records are read."""
    usable = frozenset(transports)
    matching = []
    for record in list(records)[:MAX_NAPTR_RECORDS]:
        transport = NAPTR_SERVICES.get(record.service.upper())
        if (
            transport in usable
            and record.flags.lower() == "s"
            and not record.regexp
            and record.replacement not in ("", ".")
        ):
            matching.append((record, transport))
    if not matching:
        return []
    lowest = min(record.order for record, _ in matching)
    chosen = sorted(
        ((record, transport) for record, transport in matching if record.order == lowest),
        key=lambda entry: entry[0].preference,  # stable: ties as the DNS listed them
    )
    return list(dict.fromkeys((transport, record.replacement) for record, transport in chosen))


class Resolver(Protocol):
    """What :func:`resolve` asks. Each raises :class:`DnsError` when the DNS does not answer;
    a name without such records is ``([], ttl)``."""

    async def naptr(self, name: str) -> tuple[list[NaptrRecord], float]: ...

    async def srv(self, name: str) -> tuple[list[SrvRecord], float]: ...

    async def addresses(self, name: str) -> tuple[list[str], float]:
        """A then AAAA addresses of ``name``."""
        ...


async def resolve(
    address: TrunkAddress, resolver: Resolver, transports: Iterable[str] = TRANSPORT_ORDER
) -> Resolution:
    """Resolve a named trunk address (RFC 3263 §4.2; for a bare name §4.1 first, over the
    usable ``transports``). Raises :class:`DnsError` when the DNS failed or the name leads to
    no address at all."""
    if address.by_naptr:
        return await _resolve_naptr(address.host, resolver, transports)
    transport, name = address.transport, address.host
    if address.port is not None:
        found, ttl = await resolver.addresses(name)
        hops = _hops(transport, found, address.port)
        if not hops:
            raise DnsError(f"{name} has no A or AAAA record")
        return Resolution(groups=(((0, hops),),), ttl=ttl)
    service = f"{SRV_SERVICES[transport]}.{name}"
    records, ttl = await resolver.srv(service)
    records = records[:MAX_SRV_RECORDS]
    if len(records) == 1 and records[0].target in ("", "."):
        # RFC 2782: a lone target "." says the service is decidedly not available there.
        raise DnsError(f"{service}: the service is not offered (SRV .)")
    if not records:
        # RFC 3263 §4.2: no SRV records: the name's own addresses at the transport's port.
        found, ttl = await resolver.addresses(name)
        hops = _hops(transport, found, DEFAULT_PORTS[transport])
        if not hops:
            raise DnsError(f"{name} has no SRV, A or AAAA record")
        return Resolution(groups=(((0, hops),),), ttl=ttl)
    return await _srv_targets(transport, service, records, ttl, resolver)


async def _srv_targets(
    transport: str, service: str, records: list[SrvRecord], ttl: float, resolver: Resolver
) -> Resolution:
    """The SRV ``records`` of ``service`` (at most MAX_SRV_RECORDS, not a lone ".") with
    their targets' addresses, by priority."""
    by_priority: dict[int, list[tuple[int, tuple[TrunkHop, ...]]]] = {}
    failures = []
    for record in sorted(records, key=lambda r: r.priority):
        try:
            found, address_ttl = await resolver.addresses(record.target)
        except DnsError as exc:
            failures.append(str(exc))  # another target may do: RFC 3263 §4.3 tries the next
            continue
        hops = _hops(transport, found, record.port)
        if hops:
            ttl = min(ttl, address_ttl)
            by_priority.setdefault(record.priority, []).append((record.weight, hops))
    if not by_priority:
        why = "; ".join(failures) or "no A or AAAA record"
        raise DnsError(f"no target of {service} resolves ({why})")
    return Resolution(groups=tuple(tuple(group) for group in by_priority.values()), ttl=ttl)


async def _resolve_naptr(name: str, resolver: Resolver, transports: Iterable[str]) -> Resolution:
    """RFC 3263 §4.1 for a domain without transport or port: NAPTR, else SRV per usable
    transport, else A/AAAA on UDP (or the first usable transport) at its default port. The
    targets of each NAPTR record (or transport) follow those of the one before."""
    usable = [transport for transport in TRANSPORT_ORDER if transport in set(transports)]
    if not usable:
        raise DnsError(f"{name}: no transport to choose from (udp, tcp or tls)")
    records, ttl = await resolver.naptr(name)
    if records:
        choices = naptr_choices(records, usable)
        if not choices:
            # §4.1: a domain with NAPTR records but none for us is not reached by SRV guesses.
            offered = ", ".join(sorted({record.service for record in records})) or "none"
            raise DnsError(
                f"{name}: no NAPTR record for a transport we use ({', '.join(usable)}); "
                f"it offers {offered}"
            )
    else:
        # §4.1: no NAPTR records: the SRV records of each transport we support.
        choices = [(transport, f"{SRV_SERVICES[transport]}.{name}") for transport in usable]
    groups: list[tuple[tuple[int, tuple[TrunkHop, ...]], ...]] = []
    ttls = [ttl] if records else []  # an empty answer's TTL says nothing of the targets
    failures = []
    for transport, service in choices:
        try:
            srv_records, srv_ttl = await resolver.srv(service)
            srv_records = srv_records[:MAX_SRV_RECORDS]
            if not srv_records or (len(srv_records) == 1 and srv_records[0].target in ("", ".")):
                failures.append(f"{service}: no SRV target")
                continue
            found = await _srv_targets(transport, service, srv_records, srv_ttl, resolver)
        except DnsError as exc:
            failures.append(str(exc))  # the next record's targets may do (§4.3)
            continue
        groups.extend(found.groups)
        ttls.append(found.ttl)
    if groups:
        return Resolution(groups=tuple(groups), ttl=min(ttls))
    if records:
        raise DnsError(f"no NAPTR target of {name} resolves ({'; '.join(failures)})")
    # §4.1: neither NAPTR nor SRV records: the domain's own addresses, UDP for a sip URI.
    transport = "udp" if "udp" in usable else usable[0]
    found_addresses, ttl = await resolver.addresses(name)
    hops = _hops(transport, found_addresses, DEFAULT_PORTS[transport])
    if not hops:
        raise DnsError(f"{name} has no NAPTR, SRV, A or AAAA record")
    return Resolution(groups=(((0, hops),),), ttl=ttl)


def _hops(transport: str, addresses: Iterable[str], port: int) -> tuple[TrunkHop, ...]:
    unique = list(dict.fromkeys(addresses))[:MAX_ADDRESSES]
    return tuple(TrunkHop(transport, host, port) for host in unique)


class DnsPythonResolver:
    """:class:`Resolver` over dnspython's asynchronous resolver (trio backend). ``servers``
    (``[dns] servers``) replace /etc/resolv.conf's name servers; ``timeout`` bounds a query."""

    def __init__(self, servers: Sequence[str], timeout: float) -> None:
        import dns.asyncresolver
        import dns.nameserver

        self._resolver = dns.asyncresolver.Resolver(configure=not servers)
        if servers:
            self._resolver.nameservers = [
                dns.nameserver.Do53Nameserver(host, port)
                for host, port in (dns_server(server) for server in servers)
            ]
        self._resolver.lifetime = timeout

    async def naptr(self, name: str) -> tuple[list[NaptrRecord], float]:
        answer = await self._query(name, "NAPTR")
        if answer is None:
            return [], 0.0
        records = [
            NaptrRecord(
                int(rdata.order),
                int(rdata.preference),
                _text(rdata.flags),
                _text(rdata.service),
                _text(rdata.regexp),
                rdata.replacement.to_text(omit_final_dot=True).lower(),
            )
            for rdata in answer
        ]
        return records, float(answer.rrset.ttl) if answer.rrset is not None else 0.0

    async def srv(self, name: str) -> tuple[list[SrvRecord], float]:
        answer = await self._query(name, "SRV")
        if answer is None:
            return [], 0.0
        records = [
            SrvRecord(
                int(rdata.priority),
                int(rdata.weight),
                int(rdata.port),
                rdata.target.to_text(omit_final_dot=True).lower(),
            )
            for rdata in answer
        ]
        return records, float(answer.rrset.ttl) if answer.rrset is not None else 0.0

    async def addresses(self, name: str) -> tuple[list[str], float]:
        found: list[str] = []
        ttls: list[float] = []
        errors: list[DnsError] = []
        for rdtype in ("A", "AAAA"):
            try:
                answer = await self._query(name, rdtype)
            except DnsError as exc:
                errors.append(exc)
                continue
            if answer is not None:
                found.extend(rdata.to_text() for rdata in answer)
                if answer.rrset is not None:
                    ttls.append(float(answer.rrset.ttl))
        if not found and errors:
            raise errors[0]
        return found, min(ttls, default=0.0)

    async def _query(self, name: str, rdtype: str) -> Any:
        import dns.exception
        import dns.resolver

        try:
            return await self._resolver.resolve(name, rdtype, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as exc:
            raise DnsError(f"{name} {rdtype}: {exc}") from None


def _text(value: bytes | str) -> str:
    """A NAPTR character-string (bytes in dnspython) as text; bytes that are not ASCII make
    a value no record of ours matches."""
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return value


def named_uri_address(uri: str) -> TrunkAddress | None:
    """The DNS look-up a SIP URI with a host name asks for (RFC 3263 §4.1, §4.2), as a trunk
    address would: with a port, the name's A/AAAA records (over its ``transport`` parameter,
    else TLS for ``sips:``, else UDP); without a port but with a transport (or ``sips:``:
    TLS, §4.1), that transport's SRV records; with neither, NAPTR. None for a URI whose host
    is an IP address (nothing to resolve) or that is not a SIP URI."""
    try:
        parsed = parse_uri_untrusted(uri)
    except RemoteSipError:
        return None
    if not isinstance(parsed, SipUri) or parsed.host.startswith("["):
        return None
    host = parsed.host.lower().rstrip(".")
    if not any(c.isalpha() for c in host):
        return None  # an IPv4 address
    transport = parsed.transport or ("tls" if parsed.secure else "")
    if parsed.secure and transport == "tcp":
        transport = "tls"  # RFC 5630 §3.1.3: sips over TCP is TLS
    if transport not in ("", *SRV_SERVICES):
        return None  # ws, wss, sctp: no RFC 3263 look-up of ours
    if parsed.port is not None:
        return TrunkAddress(transport or "udp", host, parsed.port, True)
    return TrunkAddress(transport, host, None, True)


@attrs.frozen
class TrunkDnsStatus:
    """What an operator sees of one trunk named by DNS (``voipgw trunks``): the targets of its
    last good answer (empty before the first), when that answer came and when the name is
    asked next (trio clock, seconds), the answer's TTL, and why the last resolution failed
    (None when it did not)."""

    address: str
    targets: tuple[TrunkHop, ...]
    resolved_at: float | None
    next_at: float | None
    ttl: float | None
    error: str | None


class TrunkTargets:
    """The cached targets of the trunks named by DNS, kept resolved by :meth:`serve`.

    ``on_unresolved(trunk, why)`` / ``on_resolved(trunk)`` tell the trunk's health (down until
    its name resolves); ``on_change(trunk, resolution)`` is called with each new answer (the
    source addresses that recognise the trunk, the names TLS verifies). ``transports`` are
    those a trunk named without one may be reached over (RFC 3263 §4.1: the DNS chooses among
    them; the gateway passes the ones enabled with a listener). ``named`` adds other names
    (a recorder's URI: :func:`named_uri_address`), ``what`` says in the log what they are."""

    def __init__(
        self,
        trunks: Iterable[TrunkConfig],
        dns: DnsSection,
        resolver: Resolver,
        *,
        rng: random.Random,
        on_unresolved: Callable[[str, str], None],
        on_resolved: Callable[[str], None],
        on_change: Callable[[str, Resolution], None],
        transports: Iterable[str] = TRANSPORT_ORDER,
        named: Mapping[str, TrunkAddress] | None = None,
        what: str = "trunk",
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.named = {t.name: t.address_parts for t in trunks if t.enabled and t.by_name}
        self.named.update(named or {})
        self.what = what
        self.transports = tuple(t for t in TRANSPORT_ORDER if t in set(transports))
        self.dns = dns
        self.resolver = resolver
        self.rng = rng
        self.on_unresolved = on_unresolved
        self.on_resolved = on_resolved
        self.on_change = on_change
        self._resolved: dict[str, Resolution] = {}
        # For an operator (status()): when each name last resolved and is asked next, and why
        # its last resolution failed; written once per resolution, never read by calls.
        self._resolved_at: dict[str, float] = {}
        self._next_at: dict[str, float] = {}
        self._errors: dict[str, str] = {}
        self.wall_clock = wall_clock
        self.failures = {
            name: FailureLog(
                log,
                f"{what} {redact_password(name)}: the DNS of {address}",  # a URI's password
                "resolutions",
                "",  # said at the first failure: whether a last answer is kept
            )
            for name, address in self.named.items()
        }
        """Each name's resolutions that fail: logged once, summarized, once more when it
        resolves again (failure_log.py), rather than a line per retry."""

    def __contains__(self, trunk: str) -> bool:
        return trunk in self.named

    def hops(self, trunk: str, limit: int | None = None) -> tuple[TrunkHop, ...]:
        """The hops a call to ``trunk`` tries, in order, at most ``[dns] max_targets`` (or
        ``limit``); empty while it has not resolved."""
        resolution = self._resolved.get(trunk)
        if resolution is None:
            return ()
        most = self.dns.max_targets if limit is None else min(limit, self.dns.max_targets)
        return resolution.ordered(self.rng, most)

    def resolution(self, trunk: str) -> Resolution | None:
        return self._resolved.get(trunk)

    def status(self, trunk: str) -> TrunkDnsStatus | None:
        """How ``trunk``'s name stands, for an operator; None for a trunk not named by DNS."""
        address = self.named.get(trunk)
        if address is None:
            return None
        resolution = self._resolved.get(trunk)
        return TrunkDnsStatus(
            address=str(address),
            targets=resolution.hops if resolution is not None else (),
            resolved_at=self._resolved_at.get(trunk),
            next_at=self._next_at.get(trunk),
            ttl=resolution.ttl if resolution is not None else None,
            error=self._errors.get(trunk),
        )

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Resolve every named trunk once (at most ``timeout``, all at once), report started,
        then keep them resolved until cancelled."""
        async with trio.open_nursery() as nursery:
            first_rounds = []
            for name in self.named:
                done = trio.Event()
                first_rounds.append(done)
                nursery.start_soon(
                    self._keep_resolved, name, done, name=f"DNS of {self.what} {name}"
                )
            for done in first_rounds:
                await done.wait()
            task_status.started()

    async def _keep_resolved(self, name: str, first_round: trio.Event) -> None:
        address = self.named[name]
        while True:
            why = None
            resolution = None
            with trio.move_on_after(self.dns.timeout):
                try:
                    resolution = await resolve(address, self.resolver, self.transports)
                except DnsError as exc:
                    why = str(exc)
                except Exception:
                    # A bug here must not stop the gateway or leave a trunk unresolved for good.
                    log_exception(log, "resolving %s %s failed", self.what, redact_password(name))
                    why = "internal error (logged)"
            if resolution is None and why is None:
                why = f"no answer within {self.dns.timeout:g} s"
            now = trio.current_time()
            if resolution is not None:
                self._accept(name, address, resolution)
                wait = refresh_in(resolution.ttl, self.dns)
                self._resolved_at[name] = now
                self._errors.pop(name, None)
            else:
                assert why is not None
                self._failed(name, why)
                wait = self.dns.retry_interval
                self._errors[name] = why
            self._next_at[name] = now + wait
            first_round.set()
            await trio.sleep(wait)

    def _accept(self, name: str, address: TrunkAddress, resolution: Resolution) -> None:
        previous = self._resolved.get(name)
        self._resolved[name] = resolution
        shown = ", ".join(str(hop) for hop in resolution.hops)
        if previous is None:
            said = f"{address} resolves to {shown}"
        elif previous.hops != resolution.hops:
            said = f"{address} now resolves to {shown}"
        else:
            said = f"{address} resolves again (unchanged)"
        failures = self.failures[name]
        if failures.failing:
            failures.answered(now=self.wall_clock(), outcome=said)
        elif previous is None or previous.hops != resolution.hops:
            log.info("%s %s: %s", self.what, redact_password(name), said)
        if previous is None:
            self.on_resolved(name)
        if previous is None or previous.hops != resolution.hops:
            self.on_change(name, resolution)

    def _failed(self, name: str, why: str) -> None:
        failures = self.failures[name]
        if not failures.failing:
            # What happens meanwhile, said once in the first line (failure_log.py).
            address = self.named[name]
            if name in self._resolved:
                shown = ", ".join(str(hop) for hop in self._resolved[name].hops)
                failures.note = (
                    f"keeping its last answer ({shown}): calls and requests to the {self.what} go "
                    f"there until it resolves; asked again every {self.dns.retry_interval:g} s"
                )
            else:
                down = "the trunk is down" if self.what == "trunk" else "no session goes to it"
                failures.note = (
                    f"{down} until it resolves (asked again every {self.dns.retry_interval:g} s)"
                )
                self.on_unresolved(name, f"{address} does not resolve: {why}")
        failures.failed(why, now=self.wall_clock())


def next_hop(trunk: TrunkConfig, targets: TrunkTargets | None, turn: int = 0) -> TrunkHop | None:
    """Where a request to ``trunk`` outside a call goes (OPTIONS probes, REGISTER): its
    address, or for a trunk named by DNS its target number ``turn`` (by priority, round and
    round: the caller moves on when one fails, RFC 3263 §4.3); None while it has not
    resolved."""
    parts = trunk.address_parts
    if not parts.is_name:
        assert parts.port is not None
        return TrunkHop(parts.transport, parts.host, parts.port)
    resolution = targets.resolution(trunk.name) if targets is not None else None
    if resolution is None:
        return None
    hops = resolution.hops
    return hops[turn % len(hops)]
