"""What the core keeps for monitoring services (gateway/core/status.py and the counters it
reads), and the metrics plugin's configuration, without a running gateway."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.core.calls.limits import NO_LIMIT, CallLimits, Limit
from gateway.core.interfaces import MediaCounts, SrtpKeys
from gateway.core.media.keying import StreamKeys, StreamSrtp
from gateway.core.media.session import DTMF_COUNTS
from gateway.core.media.srtp import SrtpSession
from gateway.core.status import SETUP_BUCKETS, CallStatistics, MediaTotals, end_outcome
from gateway.core.store.interface import Binding, BindingFlow
from gateway.core.store.sqlite import SqliteStore
from gateway.plugins.metrics import MetricsConfig, collect
from gateway.plugins.metrics.exposition import Exposition

SUITE = "AES_CM_128_HMAC_SHA1_80"


class FakeCall:
    """A call as the statistics see it (hashed by identity, as a Call is): no media yet."""

    media = None
    keying = None


def call() -> Any:
    return FakeCall()


@pytest.mark.parametrize(
    ("reason", "answered", "outcome"),
    [
        (None, True, "answered"),
        ("BYE from A leg", True, "answered"),
        ("network error: [Errno 111] Connection refused", True, "error"),
        ("internal error: KeyError", False, "error"),
        ("cancelled by caller", False, "cancelled"),
        ("no answer within 180 s", False, "no_answer"),
        ("486 Busy Here", False, "rejected"),
        ("404 Not Found (no route)", False, "rejected"),
        ("replaced by a transfer", False, "transferred"),
        ("transferred: the target joined the transferred call", False, "transferred"),
        ("transferred: the target joined the transferred call", True, "answered"),
    ],
)
def test_end_reasons_fall_in_a_few_outcomes(
    reason: str | None, answered: bool, outcome: str
) -> None:
    assert end_outcome(reason, answered=answered) == outcome


def test_calls_are_counted_as_they_start_answer_and_end() -> None:
    stats = CallStatistics()
    answered, refused, cancelled = call(), call(), call()
    for c in (answered, refused, cancelled):
        stats.event(c, "started", None, 100.0)
    stats.event(answered, "ringing", None, 100.2)
    stats.event(answered, "answered", None, 100.5)  # 0.5 s: in the 0.5 bucket (le: inclusive)
    stats.event(answered, "answered", None, 107.0)  # answered again (a transfer): once only
    stats.event(refused, "ended", "486 Busy Here", 101.0)
    stats.event(cancelled, "ended", "cancelled by caller", 103.0)
    stats.event(answered, "ended", "BYE from B leg", 160.0)
    assert (stats.started, stats.answered) == (3, 1)
    assert stats.ended == {"answered": 1, "rejected": 1, "cancelled": 1}
    histogram = stats.setup_histogram()
    assert histogram.bounds == SETUP_BUCKETS
    assert histogram.counts == (1,) * len(SETUP_BUCKETS)
    assert (histogram.count, histogram.total) == (1, 0.5)
    # Nothing is left of the ended calls.
    assert stats._live == {}


def test_setup_times_fill_cumulative_buckets_and_past_the_last_only_inf() -> None:
    stats = CallStatistics()
    for seconds in (0.2, 0.7, 3.0, 3.0, 500.0):
        c = call()
        stats.event(c, "started", None, 0.0)
        stats.event(c, "answered", None, seconds)
    histogram = stats.setup_histogram()
    by_bound = dict(zip(histogram.bounds, histogram.counts, strict=True))
    assert by_bound[0.5] == 1
    assert by_bound[1.0] == 2
    assert by_bound[2.0] == 2
    assert by_bound[5.0] == 4
    assert by_bound[120.0] == 4
    assert histogram.count == 5
    assert histogram.total == pytest.approx(506.9)


def test_an_end_never_seen_starting_counts_as_not_answered() -> None:
    stats = CallStatistics()
    stats.event(call(), "ended", "500 Server Internal Error", 1.0)
    assert stats.ended == {"rejected": 1}
    assert stats.started == 0


def test_srtp_counters_of_a_stream_survive_a_rekey() -> None:
    ours, theirs = bytes(range(30)), bytes(range(30, 60))
    first = SrtpKeys(SUITE, local_key=ours, remote_key=theirs)
    second = SrtpKeys(SUITE, local_key=theirs, remote_key=ours)
    stream: Any = SimpleNamespace(a_to_b=SimpleNamespace(), b_to_a=SimpleNamespace())
    srtp = StreamSrtp()
    srtp.apply(stream, StreamKeys(a=first, b=None, blocked=False))
    phone = SrtpSession(SrtpKeys(SUITE, local_key=theirs, remote_key=ours))
    packet = bytes([0x80, 0, 0, 1]) + bytes(8) + b"\xd5" * 160
    protected = phone.protect_rtp(packet)
    assert protected is not None
    forged = protected[:-1] + bytes([protected[-1] ^ 1])
    assert stream.a_to_b.transforms.rtp_in(forged) is None
    assert srtp.statistics()["a"].auth_failures == 1
    srtp.apply(stream, StreamKeys(a=second, b=None, blocked=False))  # new keys, new session
    assert srtp.statistics()["a"].auth_failures == 1
    assert stream.a_to_b.transforms.rtp_in(forged) is None
    assert srtp.statistics()["a"].auth_failures == 2
    srtp.close()
    phone.close()


def test_a_fax_calls_udptl_datagrams_are_summed_apart_from_rtp() -> None:
    """A call record's ``*_udptl_*`` figures (a call that went T.38) go to the UDPTL totals,
    not to the packets (RTP and RTCP); a call without them adds nothing there."""
    media = {
        "streams": 1,
        "a_to_b_packets": 3,
        "a_to_b_bytes": 30,
        "a_to_b_dropped": 0,
        "b_to_a_packets": 4,
        "b_to_a_bytes": 40,
        "b_to_a_dropped": 1,
        "last_activity": 1.0,
    }
    fax = {
        **media,
        "a_to_b_udptl_packets": 5,
        "a_to_b_udptl_bytes": 500,
        "b_to_a_udptl_packets": 6,
        "b_to_a_udptl_bytes": 600,
    }
    totals = MediaTotals()
    for figures in (media, fax):
        session = SimpleNamespace(statistics=lambda f=figures: f, quality=None)
        assert totals.add_call(SimpleNamespace(media=session, keying=None)) == 1  # type: ignore[arg-type]
    assert (totals.packets, totals.bytes, totals.dropped) == (14, 140, 2)
    assert (totals.udptl_packets, totals.udptl_bytes) == (11, 1100)


def test_a_transcoding_calls_packets_are_summed() -> None:
    """A call record's ``*_transcoded_packets`` (G.711 transcoding) go to their own total; a
    call without them adds nothing there."""
    media = dict.fromkeys(("a_to_b_bytes", "b_to_a_bytes", "a_to_b_dropped", "b_to_a_dropped"), 0)
    media.update(streams=1, a_to_b_packets=3, b_to_a_packets=4)
    transcoded = {**media, "a_to_b_transcoded_packets": 2, "b_to_a_transcoded_packets": 4}
    totals = MediaTotals()
    for figures in (media, transcoded):
        session = SimpleNamespace(statistics=lambda f=figures: f, quality=None)
        totals.add_call(SimpleNamespace(media=session, keying=None))  # type: ignore[arg-type]
    assert (totals.packets, totals.transcoded_packets) == (14, 6)


def test_a_dtmf_interworking_calls_event_packets_are_summed_and_exported() -> None:
    """A call record's ``dtmf_*`` (DTMF interworking's event packets, every plan the call had)
    go to their own totals and out as voipgw_media_dtmf_event_packets_total by action, the
    end packets of digits a change cut short among them; a call without them adds nothing."""
    media = dict.fromkeys(("a_to_b_bytes", "b_to_a_bytes", "a_to_b_dropped", "b_to_a_dropped"), 0)
    media.update(streams=1, a_to_b_packets=3, b_to_a_packets=4)
    dtmf = {**media, "dtmf_taken": 5, "dtmf_injected": 7, "dtmf_ended_at_change": 3}
    dtmf["dtmf_passed"] = 2
    totals = MediaTotals()
    for figures in (media, dtmf, dtmf):
        session = SimpleNamespace(statistics=lambda f=figures: f, quality=None)
        totals.add_call(SimpleNamespace(media=session, keying=None))  # type: ignore[arg-type]
    assert (totals.dtmf_taken, totals.dtmf_injected) == (10, 14)
    assert (totals.dtmf_ended_at_change, totals.dtmf_passed) == (6, 4)
    ended = MediaTotals()
    ended.add(totals)
    assert ended.dtmf_ended_at_change == 6
    out = Exposition()
    counts = MediaCounts(
        streams=0,
        packets=0,
        bytes=0,
        dropped=0,
        srtp_auth_failures=0,
        srtp_replays=0,
        dtmf_event_packets=(
            ("taken", 10),
            ("injected", 14),
            ("ended_at_change", 6),
            ("passed", 4),
        ),
    )
    collect._media(out, counts)
    text = out.render().decode()
    assert "# TYPE voipgw_media_dtmf_event_packets_total counter" in text
    assert 'voipgw_media_dtmf_event_packets_total{action="ended_at_change"} 6' in text
    assert 'voipgw_media_dtmf_event_packets_total{action="taken"} 10' in text


def test_every_dtmf_count_of_the_call_record_is_a_metric_action() -> None:
    """voipgw_media_dtmf_event_packets_total has an action for each of the call records'
    ``dtmf.packets`` (DTMF_COUNTS), ``end_copies_dropped`` among them (docs/architecture.md:
    "the same packets, summed over calls"), summed and taken away like the others."""
    media = dict.fromkeys(("a_to_b_bytes", "b_to_a_bytes", "a_to_b_dropped", "b_to_a_dropped"), 0)
    media.update(streams=1, a_to_b_packets=3, b_to_a_packets=4)
    dtmf = {**media, **{f"dtmf_{action}": 1 for action in DTMF_COUNTS}}
    dtmf["dtmf_end_copies_dropped"] = 2
    totals = MediaTotals()
    for figures in (media, dtmf, dtmf):
        session = SimpleNamespace(statistics=lambda f=figures: f, quality=None)
        totals.add_call(SimpleNamespace(media=session, keying=None))  # type: ignore[arg-type]
    ended = MediaTotals()
    ended.add(totals)
    ended.add(totals, -1)
    ended.add(totals)
    exported = ended.dtmf_event_packets()
    assert [action for action, _ in exported] == list(DTMF_COUNTS)
    assert dict(exported)["end_copies_dropped"] == 4
    assert dict(exported)["taken"] == 2
    out = Exposition()
    counts = MediaCounts(
        streams=0,
        packets=0,
        bytes=0,
        dropped=0,
        srtp_auth_failures=0,
        srtp_replays=0,
        dtmf_event_packets=exported,
    )
    collect._media(out, counts)
    text = out.render().decode()
    assert 'voipgw_media_dtmf_event_packets_total{action="end_copies_dropped"} 4' in text


def test_call_limits_count_their_refusals_by_key_and_why() -> None:
    trunk = ("trunk", "carrier")
    limits = CallLimits(lambda key: Limit(max_calls=1, max_cps=1.0) if key == trunk else NO_LIMIT)
    assert limits.take(object(), trunk, now=0.0) is None
    assert limits.take(object(), trunk, now=0.0) == "call limit"
    assert limits.refused == {(trunk, "call limit"): 1}
    assert limits.refuse(trunk, "call limit") == "call limit"
    assert limits.refused[(trunk, "call limit")] == 2


def test_the_call_rate_refusal_is_counted_apart() -> None:
    trunk = ("trunk", "carrier")
    limits = CallLimits(lambda key: Limit(max_cps=1.0))
    assert limits.take(object(), trunk, now=0.0) is None
    assert limits.take(object(), trunk, now=0.1) == "call rate"
    assert limits.refused == {(trunk, "call rate"): 1}


def test_the_store_counts_unexpired_bindings(tmp_path: Path) -> None:
    store = SqliteStore.open(tmp_path / "state")
    try:
        store.accounts_add("alice", "a password", "voipgw.local")
        assert store.count_bindings(1000.0) == 0
        flow = BindingFlow("udp", "127.0.0.1:5060", "192.0.2.1:5062")
        for key, expires in (("sip:a@192.0.2.1", 1500.0), ("sip:b@192.0.2.2", 900.0)):
            store.upsert_binding(
                Binding(
                    aor="sip:alice@voipgw.local",
                    key=key,
                    account="alice",
                    contact=key,
                    expires_at=expires,
                    call_id="c",
                    cseq=1,
                    flow=flow,
                )
            )
        assert store.count_bindings(1000.0) == 1
        assert store.count_bindings(800.0) == 2
        assert store.count_bindings(1500.0) == 0
    finally:
        store.close()


@pytest.mark.parametrize(
    ("listen", "address"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:9100", ("0.0.0.0", 9100)),
        ("[::1]:9464", ("::1", 9464)),
        ("[::]:0", ("::", 0)),
    ],
)
def test_listen_is_an_ip_literal_and_a_port(listen: str, address: tuple[str, int]) -> None:
    assert MetricsConfig(listen=listen).address == address


@pytest.mark.parametrize(
    "listen", ["localhost:9464", "::1:9464", "[127.0.0.1]:9464", "127.0.0.1", "127.0.0.1:70000"]
)
def test_a_listen_that_is_not_address_and_port_is_refused(listen: str) -> None:
    with pytest.raises(ValueError, match="listen: expected ADDRESS:PORT"):
        MetricsConfig(listen=listen)


@pytest.mark.parametrize("path", ["metrics", "/metrics?x=1", "/me trics", ""])
def test_a_path_must_be_absolute_and_plain(path: str) -> None:
    with pytest.raises(ValueError, match="path: expected an absolute path"):
        MetricsConfig(path=path)


def test_drops_are_summed_by_reason_and_add_up_to_the_total() -> None:
    """A call record's ``*_dropped_<reason>`` figures (only the reasons that dropped any) go to
    their reason's total, both directions summed; the reasons add up to ``dropped``, and a
    sum taken away (a walked call that ended meanwhile) takes its reasons away too."""
    media = dict.fromkeys(("a_to_b_packets", "b_to_a_packets", "a_to_b_bytes", "b_to_a_bytes"), 0)
    clean = {**media, "streams": 1, "a_to_b_dropped": 0, "b_to_a_dropped": 0}
    dropping = {
        **media,
        "streams": 1,
        "a_to_b_dropped": 3,
        "a_to_b_dropped_srtp_refused": 1,
        "a_to_b_dropped_blocked": 2,
        "b_to_a_dropped": 21,
        "b_to_a_dropped_blocked": 2,
        "b_to_a_dropped_unlatched_source": 3,
        "b_to_a_dropped_malformed": 4,
        "b_to_a_dropped_no_destination": 5,
        "b_to_a_dropped_send_failed": 7,
    }
    totals = MediaTotals()
    for figures in (clean, dropping):
        session = SimpleNamespace(statistics=lambda f=figures: f, quality=None)
        totals.add_call(SimpleNamespace(media=session, keying=None))  # type: ignore[arg-type]
    by_reason = totals.dropped_by_reason()
    assert by_reason == (
        ("unlatched_source", 3),
        ("blocked", 4),
        ("srtp_refused", 1),
        ("malformed", 4),
        ("no_destination", 5),
        ("send_failed", 7),
    )
    assert sum(count for _, count in by_reason) == totals.dropped == 24
    copy = MediaTotals()
    copy.add(totals)
    copy.add(totals, -1)
    assert copy.dropped_by_reason() == tuple((reason, 0) for reason, _ in by_reason)
    assert totals.dropped_by_reason() == by_reason  # the sum added is left alone
