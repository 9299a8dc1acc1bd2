"""Keeping registered phones behind NAT reachable: OPTIONS to their contacts, and contacts that
stopped answering taken out.

Theory of operation. A phone behind NAT registers over UDP from the NAT's public address; the
gateway reaches it for a call through that address (``routing.destination_for``), which works
only while the NAT keeps the phone's mapping. NATs drop idle UDP mappings after 30 s to a few
minutes (RFC 4787 §4.3 asks for at least 2 minutes, many keep less), much sooner than a phone
re-registers, and a call to it then never arrives. Many NATs refresh a mapping only on traffic
from the inside (RFC 4787 REQ-6), so the gateway sends an OPTIONS (RFC 3261 §11): the phone's
answer is that traffic. This is Kamailio nathelper's SIP pings (``natping_interval``,
``sipping_method = "OPTIONS"``) and FreeSWITCH's ``nat-options-ping``.

Which contacts: UDP bindings whose REGISTER came from an address other than the contact's own
host and port (the NAT rewrote it), kept here as REGISTERs are accepted (and read from the store
at start-up for those registered over our own listeners). Every ``interval`` each is sent one
OPTIONS, spread evenly over the interval. Any final response counts as alive, even 404 or 405
from a phone that does not implement OPTIONS; our own 408 (no answer within 64*T1, after the
transaction's retransmissions) or 503 (could not send) does not. After ``MAX_FAILURES`` in a
row the binding is removed from the store (logged): a call to the account then fails at once
with 480 instead of ringing a phone that is gone for Timer B's 32 s.

The store is written only for such a removal; the list of contacts lives in memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import trio

from gateway.core.calls.routing import ContactTarget, UnroutableTarget, destination_for
from gateway.core.ids import IdSource
from gateway.core.logs import log_exception
from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.headers import NameAddr
from gateway.core.sip.message import Headers, Request
from gateway.core.sip.uri import SipUri, redact_password
from gateway.core.store.errors import StoreBusy
from gateway.core.store.interface import Binding, Store
from gateway.core.transport.flows import format_host_port

if TYPE_CHECKING:
    from gateway.core.endpoint import SipEndpoint

log = logging.getLogger(__name__)

MAX_FAILURES = 3
"""Keepalives in a row without an answer after which a contact is taken out."""

MAX_CONCURRENT = 256
"""OPTIONS waiting for their answer at once; more contacts just take longer to go round."""

# Our own answers for a request that got none (RFC 3261 §8.1.3.1): a timeout, a transport error.
_NO_ANSWER = frozenset({408, 503})

BindingKey = tuple[str, str]  # (AOR, binding key)


def is_behind_nat(binding: Binding) -> bool:
    """Whether ``binding`` is a UDP contact registered from another address than its own: a
    NAT rewrote the source (RFC 3581's case), so only the NAT's mapping leads back to it."""
    if binding.flow.transport != "udp" or binding.path:
        return False  # a stream keeps its own connection; a Path leads through a proxy
    try:
        uri = parse_uri_untrusted(binding.contact)
    except RemoteSipError:
        return False
    if not isinstance(uri, SipUri):
        return False
    host = uri.host[1:-1] if uri.host.startswith("[") else uri.host
    contact = format_host_port(host, uri.port or 5060)
    return contact != binding.flow.remote


class NatKeepalive:
    """Sends the OPTIONS (see the module docstring). ``interval`` seconds between two OPTIONS
    to one contact; ``endpoint`` sends them; ``store`` is where a dead contact is removed."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        store: Store,
        ids: IdSource,
        *,
        interval: float,
        t1: float,
        user_agent: str,
        clock: Callable[[], float],
    ) -> None:
        self.endpoint = endpoint
        self.store = store
        self.ids = ids
        self.interval = interval
        self.answer_limit = min(interval, 64 * t1)
        self.user_agent = user_agent
        self.clock = clock
        # By AOR, then binding key: a REGISTER replaces one AOR's entries without a scan.
        self.by_aor: dict[str, dict[str, Binding]] = {}
        self.failures: dict[BindingKey, int] = {}
        self.removed = 0  # contacts taken out since start

    @property
    def contacts(self) -> dict[BindingKey, Binding]:
        """Every contact kept alive, by (AOR, binding key)."""
        return {(aor, key): b for aor, found in self.by_aor.items() for key, b in found.items()}

    def registered(self, aor: str, bindings: Iterable[Binding]) -> None:
        """A REGISTER for ``aor`` was accepted: ``bindings`` are all its bindings now. Their
        count of unanswered keepalives starts again (a phone behind a NAT that lost its
        mapping registers again from a new one)."""
        for key in self.by_aor.pop(aor, {}):
            self.failures.pop((aor, key), None)
        natted = {b.key: b for b in bindings if is_behind_nat(b)}
        if natted:
            self.by_aor[aor] = natted

    def load(self, bindings: Iterable[Binding]) -> None:
        """Contacts registered before a restart (from the store)."""
        for binding in bindings:
            if is_behind_nat(binding):
                self.by_aor.setdefault(binding.aor, {})[binding.key] = binding

    def _current(self, key: BindingKey) -> Binding | None:
        return self.by_aor.get(key[0], {}).get(key[1])

    def _forget(self, key: BindingKey) -> None:
        found = self.by_aor.get(key[0])
        if found is not None:
            found.pop(key[1], None)
            if not found:
                del self.by_aor[key[0]]
        self.failures.pop(key, None)

    async def run(self) -> None:
        limit = trio.Semaphore(MAX_CONCURRENT)
        async with trio.open_nursery() as nursery:
            while True:
                round_start = trio.current_time()
                now = self.clock()
                due = list(self.contacts.items())
                for key, binding in due:
                    if binding.expires_at <= now:
                        self._forget(key)  # expired (the store's housekeeping removes it)
                due = [(key, binding) for key, binding in due if binding.expires_at > now]
                gap = self.interval / max(len(due), 1)
                for index, (key, binding) in enumerate(due):
                    await trio.sleep_until(round_start + index * gap)
                    if self._current(key) is not binding:
                        continue  # re-registered or gone meanwhile
                    await limit.acquire()
                    nursery.start_soon(self._ping_and_release, limit, key, binding)
                await trio.sleep_until(round_start + self.interval)

    async def _ping_and_release(
        self, limit: trio.Semaphore, key: BindingKey, binding: Binding
    ) -> None:
        try:
            answered = await self.ping(binding)
        except Exception:
            log_exception(log, "keepalive to %s failed", redact_password(binding.contact))
            answered = True  # a bug of ours is no reason to take the phone out
        finally:
            limit.release()
        try:
            self._count(key, binding, answered)
        except Exception:  # the store failing otherwise than busy: the gateway goes on
            log_exception(
                log, "keepalive bookkeeping for %s failed", redact_password(binding.contact)
            )

    async def ping(self, binding: Binding) -> bool:
        """One OPTIONS to ``binding``'s contact through its NAT: whether it was answered."""
        try:
            destination = destination_for(
                ContactTarget(uri=binding.contact, account=binding.account, binding=binding)
            )
            request = self._options(binding, destination.transport)
            client = await self.endpoint.send_request(
                request, transport=destination.transport, address=destination.address
            )
        except (OSError, UnroutableTarget):
            return False
        try:
            with trio.move_on_after(self.answer_limit):
                async for response in client.responses:
                    if response.status >= 200:
                        return response.status not in _NO_ANSWER
            return False
        finally:
            client.forward_to(None)

    def _count(self, key: BindingKey, binding: Binding, answered: bool) -> None:
        if self._current(key) is not binding:
            return  # registered again while the OPTIONS was out: that one counts afresh
        if answered:
            self.failures.pop(key, None)
            return
        failures = self.failures.get(key, 0) + 1
        if failures < MAX_FAILURES:
            self.failures[key] = failures
            return
        try:
            # Only the registration we pinged: a newer REGISTER (through another node of a
            # shared store, say) replaced it with another Call-ID or CSeq, and is not ours to
            # remove.
            stored = {b.key: b for b in self.store.registrations_for(binding.aor)}.get(binding.key)
            if stored is not None and (stored.call_id, stored.cseq) == (
                binding.call_id,
                binding.cseq,
            ):
                self.store.remove_binding(binding.aor, binding.key)
        except StoreBusy as exc:
            self.failures[key] = failures  # tried again after the next failure
            log.warning("dead contact %s kept for now: %s", redact_password(binding.contact), exc)
            return
        self._forget(key)
        if stored is None or (stored.call_id, stored.cseq) != (binding.call_id, binding.cseq):
            return  # registered anew elsewhere: nothing of ours to remove
        self.removed += 1
        log.warning(
            "registration of %s at %s removed: no answer to %d keepalives (OPTIONS) in a row",
            redact_password(binding.aor),
            redact_password(binding.contact),
            failures,
        )

    def _options(self, binding: Binding, transport: str) -> Request:
        target = parse_uri_untrusted(binding.contact)
        our_host, our_port = self.endpoint.local_address(transport)
        ours = SipUri(
            "sip", f"[{our_host}]" if ":" in our_host else our_host, user="voipgw", port=our_port
        )
        headers = Headers.of(
            [
                ("Max-Forwards", "70"),
                ("From", str(NameAddr(ours).with_tag(self.ids.new_tag()))),
                ("To", binding.aor if binding.aor.startswith("<") else f"<{binding.aor}>"),
                ("Call-ID", self.ids.new_call_id()),
                ("CSeq", "1 OPTIONS"),
                ("User-Agent", self.user_agent),
            ]
        )
        return Request("OPTIONS", target, headers)
