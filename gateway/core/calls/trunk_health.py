"""Which trunks are up: OPTIONS probes (RFC 3261 §11) to the trunks with an
``options_interval``, and what their calls show, decide whether routing offers a trunk at all.

Theory of operation. A trunk with ``options_interval`` is sent an OPTIONS that often (a new
transaction each time, the next one ``options_interval`` after the last was sent). Any final
response but 408 and 503 says its SIP stack is alive, even 404 or 405 from a carrier that does
not implement OPTIONS: the trunk is up. No final response within the interval (or 64*T1, the
transaction's own limit), a 408, a 503 (RFC 3261 §21.5.4: overloaded or in maintenance) or a
transport failure (our locally made 408 and 503), twice in a row, marks it down: routing skips
it (the next trunk serving the number gets its calls) until a probe is answered again. A call
that gets no response at all from a probed trunk (its ``response_timeout`` passed, or we could
not send to it) marks it down at once, so the calls after it do not wait out the same timeout;
the probes bring it back.
A trunk without probes is never marked down: nothing would bring it back. Every change is
logged once, with the reason.

This is Kamailio dispatcher's probing (``ds_ping_interval``, inactive destinations skipped) for
the B2BUA's trunks. :class:`TrunkHealth` is the state (synchronous, no I/O), :class:`TrunkProber`
the task that sends the probes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import trio

from gateway.core.calls.trunk_dns import TrunkHop, TrunkTargets, next_hop
from gateway.core.ids import IdSource
from gateway.core.logs import log_exception, transport_error_text
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Request
from gateway.core.sip.uri import SipUri

if TYPE_CHECKING:
    from gateway.core.config import TrunkConfig
    from gateway.core.endpoint import SipEndpoint

log = logging.getLogger(__name__)

# Finals that say the trunk cannot take calls now: a timeout (ours or a proxy's) and 503.
DOWN_STATUSES = frozenset({408, 503})
PROBES_MISSED = 2  # unanswered probes in a row that make a trunk down


class TrunkHealth:
    """Up or down, per trunk. Only ``probed`` trunks can be down."""

    def __init__(self, probed: Iterable[str]) -> None:
        self._probed = frozenset(probed)
        self._down: dict[str, str] = {}
        self._missed: dict[str, int] = {}  # probes in a row without an answer
        self._unresolved: set[str] = set()  # named by DNS, not resolved yet (trunk_dns.py)

    def is_up(self, trunk: str) -> bool:
        return trunk not in self._down

    @property
    def down(self) -> Mapping[str, str]:
        """The trunks that are down, with why."""
        return dict(self._down)

    def answered(self, trunk: str) -> None:
        """A probe of ``trunk`` was answered: up (logged when it was down)."""
        self._missed.pop(trunk, None)
        if trunk in self._unresolved:
            return  # cannot happen (nothing to probe before it resolves); stays down
        why = self._down.pop(trunk, None)
        if why is not None:
            log.warning("trunk %s is up again (it answered OPTIONS)", trunk)

    def probe_failed(self, trunk: str, why: str, *, needed: int = PROBES_MISSED) -> None:
        """A probe of ``trunk`` went unanswered: down at the ``needed``-th in a row (one lost
        UDP exchange is no dead trunk; Kamailio's ``ds_probing_threshold``). A trunk named by
        DNS needs one per target (TrunkProber: each goes to the next target)."""
        missed = self._missed.get(trunk, 0) + 1
        self._missed[trunk] = missed
        if missed >= needed:
            self.failed(trunk, f"{why} ({missed} probes in a row)")

    def unresolved(self, trunk: str, why: str) -> None:
        """``trunk`` is named by DNS and its name has not resolved yet: down until
        :meth:`resolved` (gateway/core/calls/trunk_dns.py logs why), probed or not."""
        self._unresolved.add(trunk)
        self._down[trunk] = why

    def resolved(self, trunk: str) -> None:
        """``trunk``'s name resolves: up, unless it was down for another reason."""
        if trunk in self._unresolved:
            self._unresolved.discard(trunk)
            self._down.pop(trunk, None)

    def failed(self, trunk: str, why: str) -> None:
        """``trunk`` did not answer a call (or enough probes): down (logged when it was up).
        Ignored for a trunk without probes, which nothing would bring back."""
        if trunk not in self._probed or trunk in self._down:
            return
        self._down[trunk] = why
        log.warning("trunk %s is down: %s; its calls go to the next trunk", trunk, why)


class TrunkProber:
    """Sends each probed trunk its OPTIONS, ``options_interval`` apart, and tells ``health``
    what came back. ``endpoint`` sends them through client transactions."""

    def __init__(
        self,
        trunks: Iterable[TrunkConfig],
        health: TrunkHealth,
        endpoint: SipEndpoint,
        ids: IdSource,
        *,
        t1: float,
        user_agent: str,
        targets: TrunkTargets | None = None,
    ) -> None:
        self.trunks = tuple(t for t in trunks if t.enabled and t.options_interval > 0)
        # Trunks named by DNS: their cached targets, and which one each probes next.
        self.targets = targets
        self._turn: dict[str, int] = {}
        self.health = health
        self.endpoint = endpoint
        self.ids = ids
        self.transaction_limit = 64 * t1  # Timer F: the OPTIONS transaction gives up by then
        self.user_agent = user_agent

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for trunk in self.trunks:
                nursery.start_soon(self._probe_forever, trunk, name=f"OPTIONS to {trunk.name}")

    async def _probe_forever(self, trunk: TrunkConfig) -> None:
        while True:
            sent_at = trio.current_time()
            try:
                why = await self.probe(trunk)
            except Exception:
                # A bug here must not stop the gateway or leave a trunk unprobed for good.
                log_exception(log, "OPTIONS probe of trunk %s failed", trunk.name)
                why = None
            if why is None:
                self.health.answered(trunk.name)
            else:
                _, targets = self._hop_to_probe(trunk)
                self._turn[trunk.name] = self._turn.get(trunk.name, 0) + 1
                needed = max(PROBES_MISSED, targets)
                self.health.probe_failed(trunk.name, why, needed=needed)
            await trio.sleep_until(sent_at + trunk.options_interval)

    def _hop_to_probe(self, trunk: TrunkConfig) -> tuple[TrunkHop | None, int]:
        """Where the next probe of ``trunk`` goes, and how many targets it has. A trunk named
        by DNS is probed at one target at a time, the first by priority until it fails to
        answer, then the next (RFC 3263 §4.3's order): one OPTIONS per interval whatever the
        number of targets, and the trunk is down only when each target missed one in a row."""
        targets = self.targets
        resolution = targets.resolution(trunk.name) if targets is not None else None
        count = len(resolution.hops) if resolution is not None else 1
        return next_hop(trunk, targets, self._turn.get(trunk.name, 0)), count

    async def probe(self, trunk: TrunkConfig) -> str | None:
        """One OPTIONS to ``trunk``: None when it answered, else why it counts as down."""
        hop, _ = self._hop_to_probe(trunk)
        if hop is None:
            return "its name has not resolved"
        timeout = min(trunk.options_interval, self.transaction_limit)
        try:
            request = self._options(trunk, hop.transport)  # no listener for it: OSError too
            client = await self.endpoint.send_request(
                request, transport=hop.transport, address=(hop.host, hop.port)
            )
        except OSError as exc:
            return f"cannot send OPTIONS: {transport_error_text(exc)}"
        try:
            with trio.move_on_after(timeout):
                async for response in client.responses:
                    if response.status < 200:
                        continue
                    if response.status in DOWN_STATUSES:
                        return f"OPTIONS answered {response.status} {response.reason}"
                    return None
            return f"no answer to OPTIONS within {timeout:g} s"
        finally:
            client.forward_to(None)  # later responses (retransmissions) are not ours to read

    def _options(self, trunk: TrunkConfig, transport: str) -> Request:
        """The OPTIONS probe of ``trunk``, sent over ``transport`` (the target's: for a trunk
        whose transport the DNS chooses, the NAPTR record's; its URI then names none)."""
        spec = trunk.address_parts  # a named trunk's name: the domain, without its targets
        target = SipUri("sip", spec.uri_host, port=spec.port)
        if spec.transport and spec.transport != "udp":
            target = target.with_param("transport", spec.transport)
        our_host, our_port = self.endpoint.local_address(transport)
        ours = SipUri(
            "sip", f"[{our_host}]" if ":" in our_host else our_host, user="voipgw", port=our_port
        )
        headers = Headers.of(
            [
                ("Max-Forwards", "70"),
                ("From", str(NameAddr(ours).with_tag(self.ids.new_tag()))),
                ("To", str(NameAddr(target))),
                ("Call-ID", self.ids.new_call_id()),
                ("CSeq", "1 OPTIONS"),
                ("User-Agent", self.user_agent),
            ]
        )
        return Request("OPTIONS", target, headers)
