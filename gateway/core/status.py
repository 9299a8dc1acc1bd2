"""What a running gateway tells monitoring services (``interfaces.GatewayStatus``).

Two parts. :class:`CallStatistics` is counted by the call manager as calls start, are answered
and end; it exists only while a service watches (``gateway_register_services``), so a gateway
without one does no per-call work for it. :class:`StatusView` answers a service's questions by
reading the counters the core keeps anyway (the endpoint's, the call limits', the relay
streams') when asked: the walk over live calls happens at a scrape, never per packet.

Media and SRTP totals must not go backwards when calls end (a Prometheus counter that drops is
read as a restart): ended calls' final counters are added to a running sum, and a scrape adds
the live calls' counters to it.
"""

from __future__ import annotations

import bisect
import collections
import inspect
import itertools
import logging
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from gateway import __version__
from gateway.core.c_heap import c_heap_figures
from gateway.core.interfaces import (
    CallCounts,
    CallRecordRetention,
    Histogram,
    LoadedCertificate,
    MediaCounts,
    MediaWorkerCounts,
    SessionTargetDns,
    SipCounts,
    TrunkCounts,
)
from gateway.core.ip import ip_facts, ip_literal
from gateway.core.logs import log_exception
from gateway.core.media.relay import DROP_REASONS
from gateway.core.media.remote_relay import WORKER_STATES
from gateway.core.media.session import DTMF_COUNTS
from gateway.core.sip.uri import redact_password

if TYPE_CHECKING:
    from gateway.core.calls.call import Call
    from gateway.core.gateway import Gateway

log = logging.getLogger(__name__)

_Figures = TypeVar("_Figures")
_Row = tuple[Any, ...]

# From the INVITE to the answer: a human answers within seconds to a minute (the default ring
# timeout is 180 s), an IVR or voicemail in under a second.
SETUP_BUCKETS = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)

# The estimated MOS of a leg (1..4.5, gateway/core/media/quality.py): 4.3 and above is
# "very satisfied" in G.107 Annex B's table, below 3.6 "many users dissatisfied".
MOS_BUCKETS = (1.5, 2.0, 2.5, 3.0, 3.3, 3.6, 3.8, 4.0, 4.2, 4.3, 4.4)
# Interarrival jitter (RFC 3550 §6.4.1): a jitter buffer absorbs tens of ms.
JITTER_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5)

MEDIA_WALK_CHUNK = 200
"""Live calls :meth:`StatusView.media_in_steps` walks between two checkpoints: about 2-3 ms of
the event loop in pure Python (docs/benchmarks.md, "Periodic work at scale")."""

OUTCOMES = ("answered", "cancelled", "no_answer", "rejected", "transferred", "error")

PLUGIN_COUNTERS_MAX = 64
"""Counters a plugin's optional ``counters()`` may give (docs/plugin_hooks.md: "few and
fixed"); each is a time series of ``voipgw_plugin_counters_total``. One that gives more (a
name per call, per address: a plugin's bug) or a name twice (two series of one name, which
Prometheus takes as a broken scrape) is left out whole, as a ``counters()`` that raises is."""


def end_outcome(reason: str | None, *, answered: bool) -> str:
    """The bounded class of a call's end reason (``Call.end_reason``), one of
    :data:`OUTCOMES`: the reason itself carries addresses and free text (cardinality)."""
    text = reason or ""
    if text.startswith(("network error", "internal error")):
        return "error"
    if answered:
        return "answered"
    if text.startswith("cancelled by caller"):
        return "cancelled"
    if text.startswith("no answer within"):
        return "no_answer"
    if text.startswith(("replaced by a transfer", "transferred")):
        return "transferred"
    return "rejected"


_DROP_KEYS = tuple(
    (f"dropped_{reason}", f"a_to_b_dropped_{reason}", f"b_to_a_dropped_{reason}")
    for reason in DROP_REASONS
)
"""Per reason: MediaTotals' field, and the media summary's key of each direction."""


@attrs.define
class MediaTotals:
    """Running sums of calls' media counters, added to in place (no allocation per call)."""

    packets: int = 0
    bytes: int = 0
    dropped: int = 0
    srtp_auth_failures: int = 0
    srtp_replays: int = 0
    rtcp_reports: int = 0
    rtcp_malformed: int = 0
    udptl_packets: int = 0
    udptl_bytes: int = 0
    transcoded_packets: int = 0
    # DTMF interworking's event packets (gateway.core.media.session.DTMF_COUNTS).
    dtmf_taken: int = 0
    dtmf_injected: int = 0
    dtmf_ended_at_change: int = 0
    dtmf_passed: int = 0
    dtmf_end_copies_dropped: int = 0
    # ``dropped`` by reason (gateway.core.media.relay.DROP_REASONS): ints, not a list, so that
    # attrs.evolve makes a copy that adding to leaves the original alone.
    dropped_unlatched_source: int = 0
    dropped_blocked: int = 0
    dropped_srtp_refused: int = 0
    dropped_malformed: int = 0
    dropped_no_destination: int = 0
    dropped_send_failed: int = 0

    def dropped_by_reason(self) -> tuple[tuple[str, int], ...]:
        """``dropped`` split by reason, in DROP_REASONS order."""
        return tuple((reason, getattr(self, f"dropped_{reason}")) for reason in DROP_REASONS)

    def dtmf_event_packets(self) -> tuple[tuple[str, int], ...]:
        """DTMF interworking's event packets by action, in DTMF_COUNTS order: every count the
        call records' ``dtmf.packets`` have, so that the metric sums what the records say."""
        return tuple((action, getattr(self, f"dtmf_{action}")) for action in DTMF_COUNTS)

    def add_call(self, call: Call) -> int:
        """Add ``call``'s counters so far (closed streams and replaced SRTP sessions
        included); how many streams it has open."""
        streams = 0
        if call.media is not None:
            stats = call.media.statistics()
            streams = int(stats["streams"] or 0)
            self.packets += int(stats["a_to_b_packets"] or 0) + int(stats["b_to_a_packets"] or 0)
            self.bytes += int(stats["a_to_b_bytes"] or 0) + int(stats["b_to_a_bytes"] or 0)
            dropped = int(stats["a_to_b_dropped"] or 0) + int(stats["b_to_a_dropped"] or 0)
            self.dropped += dropped
            if dropped:  # why, as the summary says it (only the reasons that dropped any)
                for name, a_to_b, b_to_a in _DROP_KEYS:
                    count = int(stats.get(a_to_b) or 0) + int(stats.get(b_to_a) or 0)
                    if count:
                        setattr(self, name, getattr(self, name) + count)
            if "a_to_b_udptl_packets" in stats:  # a call that had fax (T.38): not RTP
                self.udptl_packets += int(stats["a_to_b_udptl_packets"] or 0)
                self.udptl_packets += int(stats["b_to_a_udptl_packets"] or 0)
                self.udptl_bytes += int(stats["a_to_b_udptl_bytes"] or 0)
                self.udptl_bytes += int(stats["b_to_a_udptl_bytes"] or 0)
            if "a_to_b_transcoded_packets" in stats:  # a call that transcoded G.711
                self.transcoded_packets += int(stats["a_to_b_transcoded_packets"] or 0)
                self.transcoded_packets += int(stats["b_to_a_transcoded_packets"] or 0)
            if "dtmf_taken" in stats:  # a call that interworked DTMF
                for action in DTMF_COUNTS:
                    name = f"dtmf_{action}"
                    setattr(self, name, getattr(self, name) + int(stats.get(name) or 0))
            quality = call.media.quality
            if quality is not None:
                for figures in quality.legs.values():
                    self.rtcp_reports += figures.rtcp_packets
                    self.rtcp_malformed += figures.malformed
        if call.keying is not None:
            for leg in call.keying.statistics().values():
                self.srtp_auth_failures += leg["auth_failures"]
                self.srtp_replays += leg["replays"]
        return streams

    def add(self, other: MediaTotals, sign: int = 1) -> None:
        """Add (``sign`` -1: take away) another sum's counters."""
        self.packets += sign * other.packets
        self.bytes += sign * other.bytes
        self.dropped += sign * other.dropped
        self.dropped_unlatched_source += sign * other.dropped_unlatched_source
        self.dropped_blocked += sign * other.dropped_blocked
        self.dropped_srtp_refused += sign * other.dropped_srtp_refused
        self.dropped_malformed += sign * other.dropped_malformed
        self.dropped_no_destination += sign * other.dropped_no_destination
        self.dropped_send_failed += sign * other.dropped_send_failed
        self.srtp_auth_failures += sign * other.srtp_auth_failures
        self.srtp_replays += sign * other.srtp_replays
        self.rtcp_reports += sign * other.rtcp_reports
        self.rtcp_malformed += sign * other.rtcp_malformed
        self.udptl_packets += sign * other.udptl_packets
        self.udptl_bytes += sign * other.udptl_bytes
        self.transcoded_packets += sign * other.transcoded_packets
        self.dtmf_taken += sign * other.dtmf_taken
        self.dtmf_injected += sign * other.dtmf_injected
        self.dtmf_ended_at_change += sign * other.dtmf_ended_at_change
        self.dtmf_passed += sign * other.dtmf_passed
        self.dtmf_end_copies_dropped += sign * other.dtmf_end_copies_dropped


class CallStatistics:
    """Call counters kept by the call manager while a monitoring service runs."""

    def __init__(self) -> None:
        self.started = 0
        self.answered = 0
        self.ended: collections.Counter[str] = collections.Counter()
        self.setup_counts = [0] * len(SETUP_BUCKETS)  # per bucket, not yet cumulative
        self.setup_count = 0
        self.setup_total = 0.0
        self.ended_media = MediaTotals()
        self.key_exchange_failures: collections.Counter[str] = collections.Counter()
        self.mos = _Buckets(MOS_BUCKETS)
        self.jitter = _Buckets(JITTER_BUCKETS)
        # Live calls: when each started, None once answered. Entries leave when calls end, so
        # this holds at most the calls in progress.
        self._live: dict[object, float | None] = {}

    def event(self, call: Call, kind: str, reason: str | None, now: float) -> None:
        """A call event (``CallManager.event``), ``now`` on trio's clock."""
        if kind == "started":
            self.started += 1
            self._live[call] = now
        elif kind == "answered":
            started = self._live.get(call)
            if started is None:
                return  # answered again (a transfer's new leg) or never seen starting
            self._live[call] = None
            self.answered += 1
            self._observe_setup(now - started)
        elif kind == "ended":
            answered = call in self._live and self._live.pop(call) is None
            self.ended[end_outcome(reason, answered=answered)] += 1
            # Called before the call's streams close: their final counters.
            self.ended_media.add_call(call)
            quality = call.media.quality if call.media is not None else None
            if quality is not None:
                for leg in quality.legs.values():
                    if leg.worst_mos is not None:
                        self.mos.observe(leg.worst_mos)
                    if leg.worst_jitter_ms is not None:
                        self.jitter.observe(leg.worst_jitter_ms / 1000)

    def _observe_setup(self, seconds: float) -> None:
        index = bisect.bisect_left(SETUP_BUCKETS, seconds)  # le: a bound is inclusive
        if index < len(SETUP_BUCKETS):
            self.setup_counts[index] += 1
        self.setup_count += 1
        self.setup_total += seconds

    def setup_histogram(self) -> Histogram:
        cumulative: list[int] = []
        running = 0
        for count in self.setup_counts:
            running += count
            cumulative.append(running)
        return Histogram(SETUP_BUCKETS, tuple(cumulative), self.setup_count, self.setup_total)


class _Buckets:
    """Observations counted into buckets (as :meth:`CallStatistics.setup_histogram`)."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)  # per bucket, not yet cumulative
        self.count = 0
        self.total = 0.0

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.bounds, value)  # le: a bound is inclusive
        if index < len(self.bounds):
            self.counts[index] += 1
        self.count += 1
        self.total += value

    def histogram(self) -> Histogram:
        cumulative: list[int] = []
        running = 0
        for count in self.counts:
            running += count
            cumulative.append(running)
        return Histogram(self.bounds, tuple(cumulative), self.count, self.total)


class StatusView:
    """``interfaces.GatewayStatus`` over one gateway: what services are handed."""

    def __init__(self, gateway: Gateway, statistics: CallStatistics) -> None:
        self._gateway = gateway
        self._statistics = statistics
        self.version = __version__
        self.started_at = time.time()
        self._figures_failures: dict[tuple[str, str, str], int] = {}
        """Reads of a plugin's figures that raised, per (kind, plugin, figures)."""

    def _plugin_figures(
        self, kind: str, name: str, figures: str, read: Callable[[], _Figures]
    ) -> _Figures | None:
        """What ``read`` returns: a plugin's own figures (a key exchange's ``counters()``, a
        transport's ``loaded_crls()``...), read whole inside it; None when it raised. A
        plugin's bug then costs its own rows only, not the scrape (the metrics exporter
        answered 500 with nothing, for as long as the bug lasted). Counted
        (:meth:`plugin_figures_failures`) and said once per plugin and figures at WARNING,
        with the traceback (its text withheld, as any plugin code's): a scrape every 15 s
        would log it each time."""
        try:
            return read()
        except Exception as exc:
            key = (kind, name, figures)
            failed = self._figures_failures.get(key, 0)
            self._figures_failures[key] = failed + 1
            if not failed:
                log_exception(
                    log,
                    "status: the %s plugin %s raised reading its %s: left out of monitoring"
                    " until it answers (said once; counted in"
                    " voipgw_plugin_figures_failures_total)",
                    kind.replace("_", " "),
                    name,
                    figures,
                    exc=exc,
                    level=logging.WARNING,
                )
            return None

    def plugin_figures_failures(self) -> tuple[tuple[str, str, str, int], ...]:
        return tuple((*key, count) for key, count in sorted(self._figures_failures.items()))

    def calls(self) -> CallCounts:
        stats = self._statistics
        manager = self._gateway.calls
        return CallCounts(
            in_progress=len(manager.calls) if manager is not None else 0,
            started=stats.started,
            answered=stats.answered,
            ended=tuple((outcome, stats.ended[outcome]) for outcome in OUTCOMES),
            setup_seconds=stats.setup_histogram(),
            draining=self._gateway.draining,
            node_name_conflicts=(
                manager.limits.name_conflicts
                if manager is not None and manager.limits.shared is not None
                else None
            ),
            live_nodes=(
                manager.limits.live_nodes
                if manager is not None and manager.limits.shared is not None
                else None
            ),
            psap_callbacks_from_store=(
                manager.psap_callbacks.store_hits
                if manager is not None and manager.psap_callbacks.stored
                else None
            ),
            psap_callback_store_failures=(
                manager.psap_callbacks.store_failures
                if manager is not None and manager.psap_callbacks.stored
                else None
            ),
        )

    def media(self) -> MediaCounts:
        totals = attrs.evolve(self._statistics.ended_media)  # a copy, the live calls added
        streams = 0
        manager = self._gateway.calls
        for call in list(manager.calls) if manager is not None else ():
            streams += totals.add_call(call)
        return self._media_counts(totals, streams)

    async def media_in_steps(self) -> MediaCounts:
        """:meth:`media`, walking the live calls :data:`MEDIA_WALK_CHUNK` at a time with a
        checkpoint in between, so that a scrape at 10 000 calls does not hold the event loop
        (which relays media) for a hundred milliseconds (docs/benchmarks.md, "Periodic work at
        scale").

        Calls end while it walks. Each call visited is counted as it was then; at the end,
        without a checkpoint, the ended calls' sum is read, and the calls visited that ended
        since are taken out of the walk's sum (their final counters, no smaller, are in the
        ended sum). A call that ended before its visit is skipped (it is in the ended sum),
        one that started during the walk counts from the next scrape. So every call counts
        once, at a moment no earlier than in the previous scrape: counters never go back."""
        manager = self._gateway.calls
        calls = list(manager.calls) if manager is not None else []
        if manager is None or len(calls) <= MEDIA_WALK_CHUNK:
            return self.media()
        walked = MediaTotals()
        streams = 0
        visited: dict[Call, tuple[MediaTotals, int]] = {}
        for start in range(0, len(calls), MEDIA_WALK_CHUNK):
            if start:
                await trio.lowlevel.checkpoint()
            live = manager.calls
            for call in calls[start : start + MEDIA_WALK_CHUNK]:
                if call not in live:
                    continue  # ended since the walk began: in the ended calls' sum
                one = MediaTotals()
                opened = one.add_call(call)
                walked.add(one)
                streams += opened
                visited[call] = (one, opened)
        # No checkpoint from here to the return: the ended sum and the live set agree.
        for call in visited.keys() - manager.calls:  # visited, then ended: counted as ended
            one, opened = visited[call]
            walked.add(one, -1)
            streams -= opened
        walked.add(self._statistics.ended_media)
        return self._media_counts(walked, streams)

    def media_workers(self) -> MediaWorkerCounts | None:
        pool = self._gateway.media_workers
        if pool is None:
            return None
        states = pool.worker_states()
        return MediaWorkerCounts(
            states=tuple((state, states.count(state)) for state in WORKER_STATES),
            restarts=tuple(pool.worker_restarts().items()),
            streams=tuple(pool.worker_streams()),
            resident_bytes=tuple(pool.worker_resident_bytes()),
            tables=tuple(pool.worker_tables()),
        )

    def _media_counts(self, totals: MediaTotals, streams: int) -> MediaCounts:
        return MediaCounts(
            streams=streams,
            packets=totals.packets,
            bytes=totals.bytes,
            dropped=totals.dropped,
            dropped_by_reason=totals.dropped_by_reason(),
            srtp_auth_failures=totals.srtp_auth_failures,
            srtp_replays=totals.srtp_replays,
            rtcp_reports=totals.rtcp_reports,
            rtcp_malformed=totals.rtcp_malformed,
            call_mos=self._statistics.mos.histogram(),
            call_jitter_seconds=self._statistics.jitter.histogram(),
            udptl_packets=totals.udptl_packets,
            udptl_bytes=totals.udptl_bytes,
            transcoded_packets=totals.transcoded_packets,
            dtmf_event_packets=totals.dtmf_event_packets(),
        )

    def sip(self) -> SipCounts:
        endpoint = self._gateway.endpoint.statistics
        registration = self._gateway.registration
        return SipCounts(
            received=endpoint.received,
            sent=endpoint.sent,
            rejected_overload=endpoint.rejected_overload,
            rejected_malformed=endpoint.rejected_malformed,
            rejected_too_large=endpoint.rejected_too_large + endpoint.dropped_too_large,
            dropped_user_agent=endpoint.dropped_user_agent,
            auth_failures=registration.failed if registration is not None else 0,
            auth_blocked=registration.refused_blocked if registration is not None else 0,
            # Counted here, at the scrape, from the ban table: nothing per request.
            auth_banned_sources=(
                registration.failures.banned_now(now=registration.failure_clock())
                if registration is not None
                else 0
            ),
            dropped_queue_full=self._gateway.statistics.dropped_queue_full,
            udp_receive_dropped=self._gateway.datagram_receive_drops(),
            emergency_overload_passes=endpoint.emergency_overload_passes,
            merged_requests=self._gateway.endpoint.transactions.merged_requests,
            internal_errors=endpoint.internal_errors,
            inbound_hook_refused=(
                hooks.refused if (hooks := self._gateway.endpoint.inbound_hooks) is not None else 0
            ),
            nat_keepalive_contacts=(
                sum(len(found) for found in keepalive.by_aor.values())
                if (keepalive := self._gateway.nat_keepalive) is not None
                else None
            ),
            nat_keepalive_removed=keepalive.removed if keepalive is not None else 0,
            subscriptions=len(subs) if (subs := self._gateway.subscriptions) is not None else 0,
            subscriptions_refused=subs.refused if subs is not None else 0,
            messages_relayed=msgs.relayed if (msgs := self._gateway.messages) is not None else 0,
            dialog_subscriptions=(
                len(blf) - blf.presence_subscriptions
                if (blf := self._gateway.dialog_events) is not None
                else 0
            ),
            dialog_subscriptions_refused=blf.refused if blf is not None else 0,
            presence_subscriptions=blf.presence_subscriptions if blf is not None else 0,
            presence_publications=len(blf.publications) if blf is not None else 0,
            connections=self._connections(),
        )

    def _connections(self) -> tuple[tuple[str, int], ...]:
        open_now = self._gateway.flows.connections()
        found: list[tuple[str, int]] = []
        for name, transport in self._gateway.plugins.transports.items():
            # A third-party transport's ``reliable`` may be a property that raises: read
            # inside the guard, as its other figures are (a missing one is a datagram one).
            reliable = self._plugin_figures(
                "transport", name, "reliable", partial(_reliable, transport)
            )
            if reliable:
                found.append((name, open_now[name]))
        return tuple(found)

    def trunks(self) -> tuple[TrunkCounts, ...]:
        manager = self._gateway.calls
        found: list[TrunkCounts] = []
        for trunk in self._gateway.config.trunks:
            key = ("trunk", trunk.name)
            if manager is None:
                in_progress = refused_limit = refused_rate = counted_alone = 0
                paced_cps = trunk.max_cps
            else:
                limits = manager.limits
                in_progress = limits.in_progress[key]
                refused_limit = limits.refused[(key, "call limit")]
                refused_rate = limits.refused[(key, "call rate")]
                counted_alone = limits.counted_locally[key]
                paced_cps = limits.paced_cps(key)
            probed = trunk.enabled and trunk.options_interval > 0
            registration = self._gateway.trunk_registrations.get(trunk.name)
            named = self._gateway.trunk_targets
            dns = named.status(trunk.name) if named is not None else None
            resolved_at = None
            if dns is not None and dns.resolved_at is not None:
                resolved_at = time.time() + dns.resolved_at - trio.current_time()
            found.append(
                TrunkCounts(
                    trunk.name,
                    in_progress,
                    trunk.max_calls,
                    refused_limit,
                    refused_rate,
                    up=self._gateway.trunk_health.is_up(trunk.name) if probed else None,
                    registered=registration.registered if registration is not None else None,
                    failovers=manager.failovers[trunk.name] if manager is not None else 0,
                    counted_alone=counted_alone,
                    paced_cps=paced_cps,
                    dns_targets=len(dns.targets) if dns is not None else None,
                    dns_resolved_at=resolved_at,
                )
            )
        return tuple(found)

    def session_targets(self) -> tuple[SessionTargetDns, ...]:
        named = self._gateway.session_targets
        if named is None:
            return ()
        found = []
        for uri in named.named:
            dns = named.status(uri)
            assert dns is not None
            resolved_at = None
            if dns.resolved_at is not None:
                resolved_at = time.time() + dns.resolved_at - trio.current_time()
            # The metrics' ``uri`` label: a password in the URI is never shown.
            found.append(SessionTargetDns(redact_password(uri), len(dns.targets), resolved_at))
        return tuple(found)

    def registrations(self) -> int:
        store = self._gateway.store
        return 0 if store is None else store.count_bindings(time.time())

    def call_record_retention(self) -> CallRecordRetention:
        counts = self._gateway.call_record_retention
        return CallRecordRetention(
            days=self._gateway.config.store.call_record_days,
            expired=counts.expired,
            failed_passes=counts.failed_passes,
        )

    def oldest_call_record(self) -> float | None:
        store = self._gateway.store
        return None if store is None else store.oldest_call_record()

    def tables(self) -> tuple[tuple[str, int], ...]:
        """Entries of the gateway's internal tables and caches now, by name, for leak hunting
        (benchmarks/soak.py): call manager, call limits, SIP endpoint and transactions, flows,
        the media relay's streams and ports, tracked digest nonces, failing and banned sources,
        the IP literal caches, trio tasks, the interpreter's allocated memory blocks and the C
        allocator's bytes in use and free (:mod:`gateway.core.c_heap`). Each table returns to its
        idle size once the calls have ended, or stops at its bound (the caches)."""
        found: dict[str, int] = {}
        gateway = self._gateway
        if gateway.calls is not None:
            found.update(gateway.calls.sizes())
        found.update(gateway.endpoint.sizes())
        found.update(gateway.flows.sizes())
        if gateway.relay is not None:
            found.update(gateway.relay.sizes())
        registration = gateway.registration
        if registration is not None:
            found["digest_nonces_tracked"] = registration.authenticator.tracked_nonces
            found["auth_failure_sources"] = len(registration.failures)
            found["auth_banned_sources"] = registration.failures.banned
        found["ip_literal_cache"] = ip_literal.cache_info().currsize
        found["ip_facts_cache"] = ip_facts.cache_info().currsize
        found["trio_tasks"] = trio.lowlevel.current_statistics().tasks_living
        found["python_allocated_blocks"] = sys.getallocatedblocks()
        found.update(c_heap_figures())
        return tuple(found.items())

    def caller_identity(self) -> tuple[tuple[str, int], ...]:
        manager = self._gateway.calls
        outcomes = manager.identity_outcomes if manager is not None else {}
        return tuple(sorted(outcomes.items()))

    def caller_identity_refetches(self) -> tuple[tuple[str, int], ...]:
        totals: dict[str, int] = {}
        for name, service in self._gateway.plugins.caller_identity.items():

            def refetches(service: object = service) -> list[tuple[str, int]]:
                counts = getattr(service, "certificate_refetches", None)
                return [] if counts is None else [(str(r), int(n)) for r, n in counts.items()]

            found = self._plugin_figures(
                "caller_identity", name, "certificate_refetches", refetches
            )
            for result, count in found or ():
                totals[result] = totals.get(result, 0) + count
        return tuple(sorted(totals.items()))

    def recording_pauses(self) -> tuple[tuple[str, int], ...]:
        manager = self._gateway.calls
        taps = self._gateway.plugins.media_taps.items()
        if manager is None or all(getattr(tap, "covert", False) for _, tap in taps):
            return ()  # nothing that records (an interception is never paused)
        return tuple(sorted(manager.recording_pauses.items()))

    def recordings_paused(self) -> int:
        manager = self._gateway.calls
        return 0 if manager is None else len(manager.recordings_paused)

    def recording_update_failures(self) -> tuple[tuple[str, int], ...]:
        return self._recording_counts("update_failures")

    def recording_streams_unrecorded(self) -> tuple[tuple[str, int], ...]:
        return self._recording_counts("streams_unrecorded")

    def _recording_counts(self, figures: str) -> tuple[tuple[str, int], ...]:
        """A mapping of reason to count that media taps may have (``figures``), summed over
        the taps that are not covert; a tap whose read raises is left out (counted)."""
        totals: dict[str, int] = {}
        for name, tap in self._gateway.plugins.media_taps.items():

            def read(tap: object = tap) -> list[tuple[str, int]]:
                counts = getattr(tap, figures, None)
                if counts is None or getattr(tap, "covert", False):
                    return []
                return [(str(reason), int(count)) for reason, count in counts.items()]

            found = self._plugin_figures("media_tap", name, figures, read)
            for reason, count in found or ():
                totals[reason] = totals.get(reason, 0) + count
        return tuple(sorted(totals.items()))

    def key_exchange_failures(self) -> tuple[tuple[str, int], ...]:
        failures = self._statistics.key_exchange_failures
        names = sorted(set(self._gateway.plugins.key_exchanges.names()) | set(failures))
        return tuple((name, failures[name]) for name in names)

    def key_exchange_counters(self) -> tuple[tuple[str, str, int], ...]:
        found: list[tuple[str, str, int]] = []
        for name, exchange in sorted(self._gateway.plugins.key_exchanges.items()):
            # Looked up inside the guard too: a plugin's property or __getattr__ may raise.
            rows = self._plugin_figures("key_exchange", name, "counters", partial(_rows, exchange))
            found += [(name, str(counter), int(count)) for counter, count in rows or ()]
        return tuple(found)

    def media_tap_counters(self) -> tuple[tuple[str, str, int], ...]:
        found: list[tuple[str, str, int]] = []
        for name, tap in sorted(self._gateway.plugins.media_taps.items()):
            if getattr(tap, "covert", False):
                continue  # an interception tap: that it is configured must not show
            rows = self._plugin_figures("media_tap", name, "counters", partial(_rows, tap))
            found += [(name, str(counter), int(count)) for counter, count in rows or ()]
        return tuple(found)

    def certificate_reloads(self) -> tuple[tuple[str, str, int], ...]:
        return self._gateway.certificate_reloads.statistics()

    def tls_certificates(self) -> tuple[tuple[str, LoadedCertificate], ...]:
        return self._gateway.certificate_reloads.certificates(read=self._plugin_figures)

    def _transport_figures(self, figures: str, read: Callable[[Any], list[_Row]]) -> list[Any]:
        """Each transport's rows of ``figures``, its name first (:meth:`_plugin_figures`: one
        that raises costs its own rows only)."""
        found: list[_Row] = []
        for name, transport in self._gateway.plugins.transports.items():
            rows = self._plugin_figures("transport", name, figures, partial(read, transport))
            found += [(name, *row) for row in rows or ()]
        return found

    def tls_handshake_failures(self) -> tuple[tuple[str, str, int], ...]:
        def read(transport: object) -> list[_Row]:
            failures = getattr(transport, "handshake_failures", None)  # tls, wss
            return [] if failures is None else [(str(r), int(n)) for r, n in failures.items()]

        return tuple(self._transport_figures("handshake_failures", read))

    def tls_connections_revoked(self) -> tuple[tuple[str, int], ...]:
        def read(transport: object) -> list[_Row]:
            revoked = getattr(transport, "connections_revoked", None)  # tls, wss
            return [] if revoked is None else [(int(revoked),)]

        return tuple(self._transport_figures("connections_revoked", read))

    def tls_ocsp_queries(self) -> tuple[tuple[str, str, int], ...]:
        def read(transport: object) -> list[_Row]:
            checker = getattr(transport, "ocsp", None)  # tls with ocsp on
            if checker is None:
                return []
            return [(str(result), int(count)) for result, count in checker.queries.items()]

        return tuple(self._transport_figures("ocsp", read))

    def tls_ocsp_stapled(self) -> tuple[tuple[str, str, int], ...]:
        def read(transport: object) -> list[_Row]:
            checker = getattr(transport, "ocsp", None)  # tls with ocsp on
            if checker is None:
                return []
            return [(str(result), int(count)) for result, count in checker.stapled.items()]

        return tuple(self._transport_figures("ocsp", read))

    def tls_crls(self) -> tuple[tuple[str, str, float], ...]:
        def read(transport: object) -> list[_Row]:
            loaded_crls = getattr(transport, "loaded_crls", None)
            if loaded_crls is None:
                return []
            return [(str(crl.path), float(crl.next_update)) for crl in loaded_crls()]

        return tuple(self._transport_figures("loaded_crls", read))


def _reliable(transport: object) -> bool:
    """Whether a transport carries connections (its ``reliable``; absent: datagrams). Absent
    means not found without running it (``inspect.getattr_static``: an attribute, a class
    attribute, a property), or, for a transport that makes its attributes in
    ``__getattr__``, that one raising AttributeError. ``getattr(..., False)`` also took an
    AttributeError raised inside a ``reliable`` property (a bug of the plugin; Python names
    the attribute in it all the same) for "datagrams", hiding it and the transport's
    connection rows; it now goes to :meth:`GatewayStatus._plugin_figures`, which says it
    once and counts it."""
    try:
        inspect.getattr_static(transport, "reliable")
    except AttributeError:
        if getattr(type(transport), "__getattr__", None) is None:
            return False
        try:
            return bool(transport.reliable)  # type: ignore[attr-defined]
        except AttributeError:
            return False
    return bool(transport.reliable)  # type: ignore[attr-defined]


def _rows(plugin: object) -> list[tuple[str, int]]:
    """A key exchange's or a media tap's optional ``counters()``, read whole: (counter, count)
    pairs."""
    counters = getattr(plugin, "counters", None)
    if counters is None:
        return []
    # One past the bound read at most: a plugin's bug must not cost the scrape its memory.
    rows = [
        (str(counter), int(count))
        for counter, count in itertools.islice(counters(), PLUGIN_COUNTERS_MAX + 1)
    ]
    if len(rows) > PLUGIN_COUNTERS_MAX:
        raise ValueError(f"counters() gave more than {PLUGIN_COUNTERS_MAX} counters")
    if len({counter for counter, _ in rows}) < len(rows):
        raise ValueError("counters() gave a counter's name twice")
    return rows
