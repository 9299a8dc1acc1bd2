"""What a scrape shows: the gateway's status view (``interfaces.GatewayStatus``) as Prometheus
metric families. docs/metrics.md lists each one.

Names follow Prometheus' naming practices (prometheus.io, "Metric and label naming"): the
``voipgw_`` prefix, base units in the name (``_seconds``, ``_bytes``), ``_total`` on counters,
``_info`` for a constant 1 carrying labels. Labels take values from small fixed sets (an
outcome, a key exchange's name, a configured trunk's name): never a call's id, a user or an
address, which would make a new time series per call.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import attrs

from gateway.core.failure_log import FailureLog
from gateway.core.interfaces import GatewayStatus, MediaCounts
from gateway.core.store.errors import StoreIndexing
from gateway.plugins.metrics.exposition import Exposition

if TYPE_CHECKING:
    from gateway.plugins.metrics.server import ServerStatistics

log = logging.getLogger(__name__)


def _oldest_failures() -> FailureLog:
    return FailureLog(
        log,
        "metrics: the store",
        "look-ups of the oldest call record",
        "voipgw_call_records_oldest_time_seconds is left out of scrapes until it answers",
    )


@attrs.define
class ScrapeLog:
    """What one exporter's scrapes log across scrapes (one per metrics server): the store
    failing the look-up of the oldest call record, logged once and summarized (a scrape every
    15 s would log a WARNING each), and its retention index being built, an expected wait
    after an upgrade, said once at INFO."""

    oldest: FailureLog = attrs.field(factory=_oldest_failures)
    indexing: bool = False
    """Whether the last look-up found the store's index being built."""


async def render_in_steps(
    status: GatewayStatus,
    server: ServerStatistics | None = None,
    *,
    scrape_log: ScrapeLog | None = None,
) -> bytes:
    """:func:`render`, with the walk over the live calls' media counters done a few hundred
    calls at a time (``GatewayStatus.media_in_steps``): what a scrape runs, so that it never
    holds the event loop, which relays media, for long at 10 000 calls."""
    media = await status.media_in_steps()
    return render(status, server, media=media, scrape_log=scrape_log)


def render(
    status: GatewayStatus,
    server: ServerStatistics | None = None,
    *,
    media: MediaCounts | None = None,
    scrape_log: ScrapeLog | None = None,
) -> bytes:
    """One scrape's exposition. Reads the view once per family group; a store that cannot
    answer leaves its family out (logged) rather than failing the whole scrape. ``server``
    adds the exporter's own TLS and authentication failures, when it has them configured;
    ``media``: the media counters already read (else read here, in one walk);
    ``scrape_log``: the exporter's, so that a failure lasting over scrapes is logged once
    (else this scrape's own)."""
    out = Exposition()
    _process(out, status)
    _calls(out, status)
    _registrations(out, status)
    _call_records(out, status, ScrapeLog() if scrape_log is None else scrape_log)
    _sip(out, status)
    _media(out, status.media() if media is None else media)
    _media_workers(out, status)
    key_exchange_counters = _key_exchanges(out, status)
    _trunks(out, status)
    _session_targets(out, status)
    _caller_identity(out, status)
    _caller_identity_refetches(out, status)
    _recording(out, status)
    _certificates(out, status)
    _tls_handshakes(out, status)
    _tables(out, status)
    _plugin_counters(out, status, key_exchange_counters)
    _plugin_figures_failures(out, status)  # last: this scrape's reads of plugins counted
    if server is not None:
        _exporter(out, server)
    return out.render()


def _exporter(out: Exposition, server: ServerStatistics) -> None:
    if server.tls:
        out.family(
            "voipgw_metrics_tls_handshake_failures_total",
            "counter",
            "TLS handshakes with the metrics exporter that failed (old TLS version, no client "
            "certificate or one the CA did not sign, plain HTTP, a client gone).",
        )
        out.sample(server.tls_handshake_failures)
    if server.auth:
        out.family(
            "voipgw_metrics_auth_failures_total",
            "counter",
            "Requests to the metrics exporter refused with 401, by reason: missing (no "
            "credentials), malformed (not Basic), invalid (unknown user or wrong password).",
        )
        for reason, count in server.auth_failures:
            out.sample(count, [("reason", reason)])


def _process(out: Exposition, status: GatewayStatus) -> None:
    out.family("voipgw_build_info", "gauge", "The running voipgw's version, as a label; always 1.")
    out.sample(1, [("version", status.version)])
    out.family(
        "voipgw_start_time_seconds", "gauge", "When the gateway started, seconds since the epoch."
    )
    out.sample(status.started_at)


def _calls(out: Exposition, status: GatewayStatus) -> None:
    calls = status.calls()
    out.family("voipgw_calls_in_progress", "gauge", "Calls in progress (set up or being set up).")
    out.sample(calls.in_progress)
    out.family("voipgw_calls_started_total", "counter", "Calls started: INVITEs accepted as calls.")
    out.sample(calls.started)
    out.family("voipgw_calls_answered_total", "counter", "Calls answered (a 2xx to the caller).")
    out.sample(calls.answered)
    out.family(
        "voipgw_calls_ended_total",
        "counter",
        "Calls ended, by outcome: answered, cancelled, no_answer, rejected, transferred, error.",
    )
    for outcome, count in calls.ended:
        out.sample(count, [("outcome", outcome)])
    out.family(
        "voipgw_draining",
        "gauge",
        "1 while the gateway stops gracefully ([gateway] drain_timeout): new calls get 503.",
    )
    out.sample(1 if calls.draining else 0)
    if calls.node_name_conflicts is not None:
        out.family(
            "voipgw_store_node_name_conflicts_total",
            "counter",
            "Heartbeats of this node that found another running process's under its [store] "
            "node name (two nodes with one name: each miscounts the other's calls).",
        )
        out.sample(calls.node_name_conflicts)
    if calls.live_nodes is not None:
        out.family(
            "voipgw_store_live_nodes",
            "gauge",
            "Nodes sharing the store whose heartbeat was seen within 10 s, this one included,"
            " as its last heartbeat counted.",
        )
        out.sample(calls.live_nodes)
    if calls.psap_callbacks_from_store is not None:
        out.family(
            "voipgw_psap_callbacks_from_store_total",
            "counter",
            "PSAP callbacks (RFC 7090) recognised from the store only: to a number another"
            " node's emergency call, or this node's before a restart, presented.",
        )
        out.sample(calls.psap_callbacks_from_store)
    if calls.psap_callback_store_failures is not None:
        out.family(
            "voipgw_psap_callback_store_failures_total",
            "counter",
            "Writes and reads of the numbers PSAP callbacks may call that the store failed or"
            " did not answer in time (this node's memory answered alone).",
        )
        out.sample(calls.psap_callback_store_failures)
    out.family(
        "voipgw_call_setup_seconds",
        "histogram",
        "Time from a call's INVITE to its answer, of answered calls.",
    )
    out.histogram(calls.setup_seconds)


def _registrations(out: Exposition, status: GatewayStatus) -> None:
    try:
        bindings = status.registrations()
    except Exception as exc:
        log.warning("metrics: registrations left out of this scrape: %s", exc)
        return
    out.family(
        "voipgw_registration_bindings", "gauge", "Unexpired registration bindings (contacts)."
    )
    out.sample(bindings)


def _call_records(out: Exposition, status: GatewayStatus, scrape_log: ScrapeLog) -> None:
    retention = status.call_record_retention()
    if retention.days > 0:
        out.family(
            "voipgw_call_record_retention_seconds",
            "gauge",
            "How long call records are kept ([store] call_record_days), in seconds.",
        )
        out.sample(retention.days * 86400)
        out.family(
            "voipgw_call_records_expired_total",
            "counter",
            "Call records this node's retention deleted (older than [store] call_record_days).",
        )
        out.sample(retention.expired)
        out.family(
            "voipgw_call_record_retention_failures_total",
            "counter",
            "Retention passes (every 30 s) a store failure ended; the next pass retries.",
        )
        out.sample(retention.failed_passes)
    try:
        oldest = status.oldest_call_record()
    except StoreIndexing as exc:
        # Read without its index, the oldest record would be a scan of the whole table.
        if not scrape_log.indexing:
            scrape_log.indexing = True
            log.info(
                "metrics: voipgw_call_records_oldest_time_seconds left out of scrapes while"
                " the store's index is built: %s",
                exc,
            )
        return
    except Exception as exc:
        scrape_log.oldest.failed(str(exc), now=time.time())
        return
    scrape_log.indexing = False
    scrape_log.oldest.answered(now=time.time())
    if oldest is not None:
        out.family(
            "voipgw_call_records_oldest_time_seconds",
            "gauge",
            "When the oldest call record kept ended (started, if it has not), seconds since "
            "the epoch.",
        )
        out.sample(oldest)


def _tables(out: Exposition, status: GatewayStatus) -> None:
    out.family(
        "voipgw_internal_entries",
        "gauge",
        "Entries of the gateway's internal tables and caches, by table (calls, "
        "sip_server_transactions, flows, media_port_pairs, trio_tasks, ...): each returns to its "
        "idle size once calls end, or stops at its bound; one that keeps growing is a leak.",
    )
    for table, entries in status.tables():
        out.sample(entries, [("table", table)])


def _plugin_figures_failures(out: Exposition, status: GatewayStatus) -> None:
    out.family(
        "voipgw_plugin_figures_failures_total",
        "counter",
        "Reads of a plugin's own figures that raised (a bug in the plugin), by kind, plugin "
        "and figures: that plugin's rows are left out of the scrape, the rest is answered.",
    )
    for kind, plugin, figures, count in status.plugin_figures_failures():
        out.sample(count, [("kind", kind), ("plugin", plugin), ("figures", figures)])


def _sip(out: Exposition, status: GatewayStatus) -> None:
    sip = status.sip()
    out.family("voipgw_sip_messages_received_total", "counter", "SIP messages received.")
    out.sample(sip.received)
    out.family("voipgw_sip_messages_sent_total", "counter", "SIP messages sent.")
    out.sample(sip.sent)
    out.family(
        "voipgw_sip_requests_rejected_total",
        "counter",
        "SIP requests refused statelessly: overload (503 to a new INVITE or REGISTER that "
        "waited too long), malformed (400), or too_large (a UDP request whose answer would not "
        "fit a datagram: 513, or dropped when not even that fits).",
    )
    out.sample(sip.rejected_overload, [("reason", "overload")])
    out.sample(sip.rejected_malformed, [("reason", "malformed")])
    out.sample(sip.rejected_too_large, [("reason", "too_large")])
    out.family(
        "voipgw_sip_requests_dropped_total",
        "counter",
        "SIP requests dropped without an answer: user_agent (a scanner's User-Agent, "
        "[sip] drop_user_agents).",
    )
    out.sample(sip.dropped_user_agent, [("reason", "user_agent")])
    out.family(
        "voipgw_sip_auth_failures_total",
        "counter",
        "Failed digest authentications: a wrong password or an unknown user.",
    )
    out.sample(sip.auth_failures)
    out.family(
        "voipgw_sip_auth_blocked_total",
        "counter",
        "Requests refused with 403 because their source address had too many failed "
        "authentications ([gateway] auth_max_failures).",
    )
    out.sample(sip.auth_blocked)
    out.family(
        "voipgw_sip_auth_banned_sources",
        "gauge",
        "Source addresses (or IPv6 prefixes, [gateway] auth_ipv6_prefix_length) banned now for "
        "too many failed authentications ([gateway] auth_block_time).",
    )
    out.sample(sip.auth_banned_sources)
    out.family(
        "voipgw_sip_emergency_overload_passes_total",
        "counter",
        "New INVITEs to an emergency number that overload control served although they waited "
        "too long (at most 10 a second).",
    )
    out.sample(sip.emergency_overload_passes)
    out.family(
        "voipgw_sip_requests_merged_total",
        "counter",
        "New requests answered 482 Loop Detected as merged (RFC 3261 section 8.2.2.2): a request "
        "that reached the gateway a second time along another path.",
    )
    out.sample(sip.merged_requests)
    out.family(
        "voipgw_sip_internal_errors_total",
        "counter",
        "Internal errors (bugs) of the SIP endpoint, each logged with its traceback: a request "
        "whose handler failed (answered 500), one never answered, a message not sent.",
    )
    out.sample(sip.internal_errors)
    out.family(
        "voipgw_sip_inbound_hook_refused_total",
        "counter",
        "Changes of gateway_inbound_message hooks dropped (a hook that raised or broke a rule); "
        "the message went on unchanged. Each plugin's are logged at most once a minute.",
    )
    out.sample(sip.inbound_hook_refused)
    out.family(
        "voipgw_sip_inbound_dropped_total",
        "counter",
        "SIP messages dropped because the inbound queue was full.",
    )
    out.sample(sip.dropped_queue_full)
    out.family(
        "voipgw_sip_udp_receive_dropped_total",
        "counter",
        "SIP datagrams the kernel dropped at the gateway's UDP sockets, their receive buffers "
        "full: a UDP backlog past [plugins.udp] receive_buffer.",
    )
    out.sample(sip.udp_receive_dropped)
    out.family(
        "voipgw_sip_connections",
        "gauge",
        "Open SIP connections (phones, trunks, browsers) by transport: tcp, tls, ws, wss.",
    )
    for transport, count in sip.connections:
        out.sample(count, [("transport", transport)])
    out.family(
        "voipgw_subscriptions",
        "gauge",
        "Subscriptions by event package: message-summary relayed to the voicemail trunk, "
        "dialog (busy lamp fields) and presence notified by the gateway.",
    )
    out.sample(sip.subscriptions, [("package", "message-summary")])
    out.sample(sip.dialog_subscriptions, [("package", "dialog")])
    out.sample(sip.presence_subscriptions, [("package", "presence")])
    out.family(
        "voipgw_presence_publications",
        "gauge",
        "Presence publications (PUBLISH, RFC 3903) the gateway keeps for its accounts.",
    )
    out.sample(sip.presence_publications)
    out.family(
        "voipgw_subscriptions_refused_total",
        "counter",
        "New subscriptions refused for the per-account or total limit, by event package.",
    )
    out.sample(sip.subscriptions_refused, [("package", "message-summary")])
    out.sample(sip.dialog_subscriptions_refused, [("package", "dialog")])
    out.family(
        "voipgw_sip_messages_relayed_total",
        "counter",
        "Out-of-dialog MESSAGE and unsolicited NOTIFY requests a target accepted.",
    )
    out.sample(sip.messages_relayed)
    if sip.nat_keepalive_contacts is not None:
        out.family(
            "voipgw_nat_keepalive_contacts",
            "gauge",
            "Phones registered from behind a NAT that get keepalive OPTIONS.",
        )
        out.sample(sip.nat_keepalive_contacts)
        out.family(
            "voipgw_nat_keepalive_removed_total",
            "counter",
            "Registrations removed because their phone stopped answering keepalives.",
        )
        out.sample(sip.nat_keepalive_removed)


def _media(out: Exposition, media: MediaCounts) -> None:
    out.family("voipgw_media_streams", "gauge", "Media relay streams open.")
    out.sample(media.streams)
    out.family(
        "voipgw_media_relayed_packets_total",
        "counter",
        "RTP and RTCP packets relayed, both directions.",
    )
    out.sample(media.packets)
    out.family(
        "voipgw_media_relayed_bytes_total",
        "counter",
        "RTP and RTCP bytes relayed (UDP payload), both directions.",
    )
    out.sample(media.bytes)
    out.family(
        "voipgw_media_relayed_udptl_packets_total",
        "counter",
        "T.38 fax (UDPTL) datagrams relayed, both directions; not RTP, not in the packets above.",
    )
    out.sample(media.udptl_packets)
    out.family(
        "voipgw_media_relayed_udptl_bytes_total",
        "counter",
        "T.38 fax (UDPTL) bytes relayed (UDP payload), both directions.",
    )
    out.sample(media.udptl_bytes)
    out.family(
        "voipgw_media_transcoded_packets_total",
        "counter",
        "RTP packets converted between G.711 A-law and mu-law, both directions.",
    )
    out.sample(media.transcoded_packets)
    if media.dtmf_event_packets:
        out.family(
            "voipgw_media_dtmf_event_packets_total",
            "counter",
            "RFC 4733 event packets of DTMF interworking: taken for SIP INFO, injected from it, "
            "end packets sent when a change ended an injected event, relayed on at a change, "
            "end copies dropped at a change.",
        )
        for action, count in media.dtmf_event_packets:
            out.sample(count, [("action", action)])
    out.family(
        "voipgw_media_dropped_packets_total",
        "counter",
        "Media packets dropped: unlatched source, blocked (no keys), SRTP failure, malformed, "
        "no destination, send error.",
    )
    out.sample(media.dropped)
    out.family(
        "voipgw_media_dropped_packets_by_reason_total",
        "counter",
        "The media packets dropped above, by reason: unlatched_source, blocked (no answer or "
        "no keys yet), srtp_refused, malformed, no_destination, send_failed.",
    )
    for reason, count in media.dropped_by_reason:
        out.sample(count, [("reason", reason)])
    out.family(
        "voipgw_srtp_auth_failures_total",
        "counter",
        "SRTP and SRTCP packets whose authentication tag did not verify (RFC 3711 3.3.2).",
    )
    out.sample(media.srtp_auth_failures)
    out.family(
        "voipgw_srtp_replays_total",
        "counter",
        "SRTP and SRTCP packets refused as replays (RFC 3711 3.3.2).",
    )
    out.sample(media.srtp_replays)
    out.family(
        "voipgw_rtcp_reports_total",
        "counter",
        "RTCP datagrams from the legs read for call quality (RFC 3550 6.4), after SRTCP.",
    )
    out.sample(media.rtcp_reports)
    out.family(
        "voipgw_rtcp_malformed_total",
        "counter",
        "RTCP datagrams that could not be read for call quality (relayed unchanged).",
    )
    out.sample(media.rtcp_malformed)
    if media.call_mos is not None:
        out.family(
            "voipgw_call_mos",
            "histogram",
            "Per leg of an ended call whose phone sent RTCP reports: the lowest estimated MOS.",
        )
        out.histogram(media.call_mos)
    if media.call_jitter_seconds is not None:
        out.family(
            "voipgw_call_jitter_seconds",
            "histogram",
            "Per leg of an ended call whose phone sent RTCP reports: the highest jitter it "
            "reported.",
        )
        out.histogram(media.call_jitter_seconds)


def _media_workers(out: Exposition, status: GatewayStatus) -> None:
    workers = status.media_workers()
    if workers is None:
        return  # the relay runs in the gateway's process ([media] workers = 1): no family
    out.family(
        "voipgw_media_workers",
        "gauge",
        "Media worker processes ([media] workers) by state: running (takes new calls), "
        "starting (not ready yet), restarting (waiting out its back-off after it ended), "
        "stopped (not started again until the service restarts: another voipgw version).",
    )
    for state, count in workers.states:
        out.sample(count, [("state", state)])
    out.family(
        "voipgw_media_worker_restarts_total",
        "counter",
        "Media worker processes started again after one ended, by reason: exited (it crashed "
        "or was killed), not_ready (not ready within [media] worker_ready_timeout), "
        "channel_error (it sent a frame that is no message, or did not read its channel), "
        "not_started (its process could not be made: out of descriptors or memory).",
    )
    for reason, count in workers.restarts:
        out.sample(count, [("reason", reason)])
    out.family(
        "voipgw_media_worker_streams",
        "gauge",
        "Media streams each media worker relays now, by worker index (the SIP process gives a "
        "new call's streams to the least loaded).",
    )
    for index, streams in enumerate(workers.streams):
        out.sample(streams, [("worker", str(index))])
    out.family(
        "voipgw_media_worker_resident_bytes",
        "gauge",
        "Resident memory of each media worker's process now, by worker index; no series for a "
        "worker without a process (restarting, stopped).",
    )
    for index, resident in enumerate(workers.resident_bytes):
        if resident is not None:
            out.sample(resident, [("worker", str(index))])
    out.family(
        "voipgw_media_worker_internal_entries",
        "gauge",
        "Entries of each media worker's internal tables, by worker index and table, as the "
        "worker last reported them (every 5 s): as voipgw_internal_entries for the gateway's "
        "own, each returns to its idle size once calls end; one that keeps growing is a leak.",
    )
    for index, tables in enumerate(workers.tables):
        for table, entries in tables:
            out.sample(entries, [("worker", str(index)), ("table", table)])


def _key_exchanges(out: Exposition, status: GatewayStatus) -> tuple[tuple[str, str, int], ...]:
    """The key exchanges' families; what their ``counters()`` said (read once a scrape, also
    for :func:`_plugin_counters`)."""
    out.family(
        "voipgw_key_exchange_failures_total",
        "counter",
        "Key negotiations that failed, by key exchange (SDP keys unusable, DTLS or ZRTP "
        "handshake failed).",
    )
    for name, count in status.key_exchange_failures():
        out.sample(count, [("key_exchange", name)])
    counters = status.key_exchange_counters()
    _dtls(out, {counter: count for name, counter, count in counters if name == "dtls"})
    zrtp = {counter: count for name, counter, count in counters if name == "zrtp"}
    if not zrtp:
        return counters  # the zrtp plugin is not enabled
    out.family(
        "voipgw_zrtp_discarded_total",
        "counter",
        "ZRTP packets the exchanges dropped: bad CRC, malformed, out of place, not from the "
        "peer, and the Hellos counted in voipgw_zrtp_hello_mismatches_total.",
    )
    out.sample(zrtp.get("discarded", 0), [])
    out.family(
        "voipgw_zrtp_hello_mismatches_total",
        "counter",
        "ZRTP Hellos that did not match the a=zrtp-hash of the peer's SDP (RFC 6189 §8.1): "
        "forged, or a phone whose SDP and Hello disagree.",
    )
    out.sample(zrtp.get("hello_mismatches", 0), [])
    return counters


def _plugin_counters(
    out: Exposition, status: GatewayStatus, key_exchanges: tuple[tuple[str, str, int], ...]
) -> None:
    """Every plugin's optional ``counters()`` (a key exchange's, a media tap's), one family with
    the plugin as a label (session 42): a third-party plugin's figures reach Prometheus without
    a gateway change. zrtp's and dtls's are here too, besides their own families above, which
    keep their names."""
    rows = [("key_exchange", *row) for row in key_exchanges]
    rows += [("media_tap", *row) for row in status.media_tap_counters()]
    if not rows:
        return  # no enabled plugin keeps counters: no family
    out.family(
        "voipgw_plugin_counters_total",
        "counter",
        "What each plugin that keeps counters (its optional counters(): a key exchange's, a "
        "media tap's) has counted since the start, by kind, plugin and counter "
        "(docs/plugin_hooks.md).",
    )
    for kind, plugin, counter, count in rows:
        out.sample(count, [("kind", kind), ("plugin", plugin), ("counter", counter)])


def _dtls(out: Exposition, dtls: dict[str, int]) -> None:
    if not dtls:
        return  # the dtls plugin is not enabled
    out.family(
        "voipgw_dtls_hello_verify_requests_total",
        "counter",
        "HelloVerifyRequests sent (RFC 6347 4.2.1): ClientHellos from a source other than the "
        "peer's SDP address without our valid cookie, answered with a cookie and nothing else.",
    )
    out.sample(dtls.get("hello_verify_requests", 0), [])
    out.family(
        "voipgw_dtls_bad_cookies_total",
        "counter",
        "ClientHellos whose cookie was not ours for their source's host and this media port "
        "(forged, another host's or port's, or older than its secret's 60 to 120 s): answered "
        "with a new cookie, no handshake started.",
    )
    out.sample(dtls.get("bad_cookies", 0), [])
    out.family(
        "voipgw_dtls_rate_limited_total",
        "counter",
        "DTLS datagrams of new sources (their cookie returned) dropped because their port had "
        "started its most handshakes for new sources (8 at once, then one a second).",
    )
    out.sample(dtls.get("rate_limited", 0), [])
    out.family(
        "voipgw_dtls_client_hellos_dropped_total",
        "counter",
        "ClientHellos from sources with no handshake dropped without an answer, by reason: "
        "later_fragment (a fragment past the first, which carries the cookie), unreadable (ends "
        "before its cookie, or headers that disagree), cookie_out_of_sequence (our valid cookie "
        "with a message_seq other than 1: a client asked twice, its NAT moved it to another "
        "address between its ClientHellos, is not keyed from there; or a forger).",
    )
    for reason, counter in _DTLS_DROPPED_HELLOS:
        out.sample(dtls.get(counter, 0), [("reason", reason)])


_DTLS_DROPPED_HELLOS = (
    ("later_fragment", "later_fragments"),
    ("unreadable", "unreadable_hellos"),
    ("cookie_out_of_sequence", "cookies_out_of_sequence"),
)
"""voipgw_dtls_client_hellos_dropped_total's reasons and the dtls key exchange's counters."""


def _caller_identity(out: Exposition, status: GatewayStatus) -> None:
    outcomes = status.caller_identity()
    if not outcomes:
        return  # no STIR/SHAKEN: no family
    out.family(
        "voipgw_caller_identity_total",
        "counter",
        "Calls signed for trunks and trunks' calls whose caller identity was checked "
        "(STIR/SHAKEN), by outcome.",
    )
    for outcome, count in outcomes:
        out.sample(count, [("outcome", outcome)])


def _caller_identity_refetches(out: Exposition, status: GatewayStatus) -> None:
    refetches = status.caller_identity_refetches()
    if not refetches:
        return  # no STIR/SHAKEN: no family
    out.family(
        "voipgw_caller_identity_certificate_refetches_total",
        "counter",
        "STIR/SHAKEN certificates fetched again because a signature did not verify with the "
        "cached one, by result: replaced (the signer's new certificate), unchanged (the same "
        "certificate: a forgery or a signer's mistake), failed (not fetched, timed out or not "
        "trusted).",
    )
    for result, count in refetches:
        out.sample(count, [("result", result)])


def _recording(out: Exposition, status: GatewayStatus) -> None:
    pauses = status.recording_pauses()
    if pauses:  # a recording tap (siprec, recorder ...): calls may be paused
        out.family(
            "voipgw_recording_pauses_total",
            "counter",
            "Recordings paused and resumed, by action: on request (voipgw recording "
            "pause|resume: pause, resume) and for the parties' recording preferences "
            "(preference_pause, preference_resume).",
        )
        for action, count in pauses:
            out.sample(count, [("action", action)])
        out.family(
            "voipgw_recordings_paused",
            "gauge",
            "Live calls whose recording is paused now (one left paused is not recorded).",
        )
        out.sample(status.recordings_paused(), [])
    failures = status.recording_update_failures()
    if failures:  # else no recording tap that counts them (siprec): no family
        out.family(
            "voipgw_recording_update_failures_total",
            "counter",
            "Updates of recording sessions (SIPREC re-INVITEs to the recorder) given up, by "
            "reason.",
        )
        for reason, count in failures:
            out.sample(count, [("reason", reason)])
    unrecorded = status.recording_streams_unrecorded()
    if unrecorded:
        out.family(
            "voipgw_recording_streams_unrecorded_total",
            "counter",
            "Streams of recorded calls left out of their recording (SIPREC), by reason: no "
            "local port for the copies, or the recording session's m= lines at their most.",
        )
        for reason, count in unrecorded:
            out.sample(count, [("reason", reason)])


def _certificates(out: Exposition, status: GatewayStatus) -> None:
    reloads = status.certificate_reloads()
    if not reloads:
        return  # no plugin serves TLS from files: no family
    out.family(
        "voipgw_certificate_reloads_total",
        "counter",
        "Certificate reloads (SIGHUP) by plugin and outcome: reloaded, or failed (the plugin "
        "kept its previous certificates; the log names the file and why).",
    )
    for plugin, outcome, count in reloads:
        out.sample(count, [("plugin", plugin), ("outcome", outcome)])
    expiry: dict[str, float] = {}
    for plugin, certificate in status.tls_certificates():
        expiry[plugin] = min(expiry.get(plugin, certificate.not_after), certificate.not_after)
    out.family(
        "voipgw_tls_certificate_expiry_time_seconds",
        "gauge",
        "When the certificate a plugin serves now expires (its not-after), seconds since the "
        "epoch; the earliest when it serves several.",
    )
    for plugin, not_after in expiry.items():
        out.sample(not_after, [("plugin", plugin)])


def _tls_handshakes(out: Exposition, status: GatewayStatus) -> None:
    failures = status.tls_handshake_failures()
    if failures:  # no tls or wss transport: no family
        out.family(
            "voipgw_tls_handshake_failures_total",
            "counter",
            "Failed TLS handshakes of SIP transports, by transport and reason: revoked (the "
            "peer's certificate is in a CRL of crl_files or its OCSP responder says revoked), "
            "crl (its CA's CRL could not be used, e.g. expired: fails closed), ocsp (with "
            "ocsp = hard-fail: no good OCSP answer), other.",
        )
        for transport, reason, count in failures:
            out.sample(count, [("transport", transport), ("reason", reason)])
    revoked = status.tls_connections_revoked()
    if revoked:
        out.family(
            "voipgw_tls_connections_revoked_total",
            "counter",
            "TLS connections of SIP transports closed because a reloaded CRL of crl_files or "
            "a renewed OCSP answer revoked the peer's certificate (a phone connected before it "
            "was revoked).",
        )
        for transport, count in revoked:
            out.sample(count, [("transport", transport)])
    queries = status.tls_ocsp_queries()
    if queries:  # ocsp off: no family
        out.family(
            "voipgw_tls_ocsp_queries_total",
            "counter",
            "OCSP queries to the responders of peers' certificates, by transport and result: "
            "good, revoked, unknown, failed (no answer in time, garbled, wrongly signed, stale). "
            "Answers from the cache are not queries.",
        )
        for transport, result, count in queries:
            out.sample(count, [("transport", transport), ("result", result)])
    stapled = status.tls_ocsp_stapled()
    if stapled:  # ocsp off: no family
        out.family(
            "voipgw_tls_ocsp_stapled_total",
            "counter",
            "OCSP answers trunks stapled to their TLS handshakes (RFC 6066 status_request), "
            "by transport and result: good, revoked, unknown (each used as a responder's "
            "answer, no query), invalid (failed a check: ignored, the responder is asked).",
        )
        for transport, result, count in stapled:
            out.sample(count, [("transport", transport), ("result", result)])
    crls = status.tls_crls()
    if crls:  # no crl_files: no family
        out.family(
            "voipgw_tls_crl_next_update_time_seconds",
            "gauge",
            "When each CRL of crl_files or fetched (crl_urls, crl_distribution_points; file is "
            "then its URL) reaches its nextUpdate, seconds since the epoch; from "
            "then on every handshake with a certificate of its CA fails until a new one is loaded.",
        )
        for transport, path, next_update in crls:
            out.sample(next_update, [("transport", transport), ("file", path)])


def _trunks(out: Exposition, status: GatewayStatus) -> None:
    trunks = status.trunks()
    out.family("voipgw_trunk_calls_in_progress", "gauge", "Calls in progress through a trunk.")
    for trunk in trunks:
        out.sample(trunk.calls_in_progress, [("trunk", trunk.name)])
    out.family("voipgw_trunk_max_calls", "gauge", "A trunk's max_calls, for trunks that have one.")
    for trunk in trunks:
        if trunk.max_calls:
            out.sample(trunk.max_calls, [("trunk", trunk.name)])
    out.family(
        "voipgw_trunk_paced_cps",
        "gauge",
        "New calls a second this node sends to a trunk at most, for trunks with a max_cps: it,"
        ' or this node\'s share of it ([store] max_cps_scope = "cluster").',
    )
    for trunk in trunks:
        if trunk.paced_cps:
            out.sample(trunk.paced_cps, [("trunk", trunk.name)])
    out.family(
        "voipgw_trunk_calls_refused_total",
        "counter",
        "Calls to or from a trunk refused at its max_calls or (calls to it) its max_cps.",
    )
    for trunk in trunks:
        out.sample(trunk.refused_call_limit, [("trunk", trunk.name), ("limit", "max_calls")])
        out.sample(trunk.refused_call_rate, [("trunk", trunk.name), ("limit", "max_cps")])
    out.family(
        "voipgw_trunk_calls_counted_alone_total",
        "counter",
        "Calls this node counted against a trunk's max_calls alone: the shared store did not"
        " answer.",
    )
    for trunk in trunks:
        if trunk.max_calls:
            out.sample(trunk.counted_alone, [("trunk", trunk.name)])
    out.family(
        "voipgw_trunk_up",
        "gauge",
        "1 while a probed trunk answers its OPTIONS, 0 while routing skips it (options_interval).",
    )
    for trunk in trunks:
        if trunk.up is not None:
            out.sample(int(trunk.up), [("trunk", trunk.name)])
    out.family(
        "voipgw_trunk_registered",
        "gauge",
        "1 while the gateway is registered with a trunk that takes a registration, else 0.",
    )
    for trunk in trunks:
        if trunk.registered is not None:
            out.sample(int(trunk.registered), [("trunk", trunk.name)])
    out.family(
        "voipgw_trunk_failovers_total",
        "counter",
        "Calls that failed on a trunk (a failover status, no response) and went to the next.",
    )
    for trunk in trunks:
        out.sample(trunk.failovers, [("trunk", trunk.name)])
    out.family(
        "voipgw_trunk_dns_targets",
        "gauge",
        "For a trunk named by DNS: the targets its name's last answer gave (0: not resolved).",
    )
    for trunk in trunks:
        if trunk.dns_targets is not None:
            out.sample(trunk.dns_targets, [("trunk", trunk.name)])
    out.family(
        "voipgw_trunk_dns_resolved_time_seconds",
        "gauge",
        "For a trunk named by DNS: when its name last resolved, seconds since the epoch.",
    )
    for trunk in trunks:
        if trunk.dns_resolved_at is not None:
            out.sample(trunk.dns_resolved_at, [("trunk", trunk.name)])


def _session_targets(out: Exposition, status: GatewayStatus) -> None:
    # Families of their own, not a label value of the trunk families: a recorder is no trunk,
    # and dashboards summing or alerting on voipgw_trunk_dns_targets stay about trunks.
    named = status.session_targets()
    if not named:  # no recorder named by DNS: no family
        return
    out.family(
        "voipgw_session_target_dns_targets",
        "gauge",
        "For a SIP URI the gateway opens sessions to whose host is a name (a SIPREC "
        "recorder's): the targets its name's last answer gave (0: not resolved).",
    )
    for target in named:
        out.sample(target.dns_targets, [("uri", target.uri)])
    out.family(
        "voipgw_session_target_dns_resolved_time_seconds",
        "gauge",
        "For a session target named by DNS: when its name last resolved, seconds since the epoch.",
    )
    for target in named:
        if target.dns_resolved_at is not None:
            out.sample(target.dns_resolved_at, [("uri", target.uri)])
