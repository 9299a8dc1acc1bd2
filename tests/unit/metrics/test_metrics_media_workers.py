"""The media worker families (``[media] workers >= 2``): how many workers are in each state, how
often they were restarted, by reason, and each worker's streams, resident memory and internal
tables, as the pool counts them (docs/metrics.md)."""

from __future__ import annotations

import types

from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import _media_workers
from gateway.plugins.metrics.exposition import Exposition


def scraped(media_workers: object) -> str:
    view = StatusView(types.SimpleNamespace(media_workers=media_workers), CallStatistics())  # type: ignore[arg-type]
    out = Exposition()
    _media_workers(out, view)
    return out.render().decode()


def test_the_relay_in_the_gateways_process_has_no_worker_family() -> None:
    view = StatusView(types.SimpleNamespace(media_workers=None), CallStatistics())  # type: ignore[arg-type]
    assert view.media_workers() is None
    assert "voipgw_media_worker" not in scraped(None)


def test_every_state_and_reason_is_a_series_zero_included() -> None:
    pool = types.SimpleNamespace(
        worker_states=lambda: ["running", "stopped", "running", "restarting"],
        worker_restarts=lambda: {"exited": 3, "not_ready": 1, "channel_error": 0, "not_started": 0},
        worker_streams=lambda: [12, 0, 7, 0],
        worker_resident_bytes=lambda: [52_428_800, None, 50_331_648, None],
        worker_tables=lambda: [
            (("media_streams", 12), ("worker_streams", 12), ("trio_tasks", 9)),
            (),
            (("media_streams", 7),),
            (),
        ],
    )
    lines = [line for line in scraped(pool).splitlines() if not line.startswith("#")]
    assert lines == [
        'voipgw_media_workers{state="running"} 2',
        'voipgw_media_workers{state="starting"} 0',
        'voipgw_media_workers{state="restarting"} 1',
        'voipgw_media_workers{state="stopped"} 1',
        'voipgw_media_worker_restarts_total{reason="exited"} 3',
        'voipgw_media_worker_restarts_total{reason="not_ready"} 1',
        'voipgw_media_worker_restarts_total{reason="channel_error"} 0',
        'voipgw_media_worker_restarts_total{reason="not_started"} 0',
        'voipgw_media_worker_streams{worker="0"} 12',
        'voipgw_media_worker_streams{worker="1"} 0',
        'voipgw_media_worker_streams{worker="2"} 7',
        'voipgw_media_worker_streams{worker="3"} 0',
        # None: the slot has no process (restarting, stopped): no series rather than a 0.
        'voipgw_media_worker_resident_bytes{worker="0"} 52428800',
        'voipgw_media_worker_resident_bytes{worker="2"} 50331648',
        # As each worker last reported them; none from a worker that is not running.
        'voipgw_media_worker_internal_entries{worker="0",table="media_streams"} 12',
        'voipgw_media_worker_internal_entries{worker="0",table="worker_streams"} 12',
        'voipgw_media_worker_internal_entries{worker="0",table="trio_tasks"} 9',
        'voipgw_media_worker_internal_entries{worker="2",table="media_streams"} 7',
    ]
    assert "# TYPE voipgw_media_workers gauge" in scraped(pool)
    assert "# TYPE voipgw_media_worker_internal_entries gauge" in scraped(pool)
    assert "# TYPE voipgw_media_worker_restarts_total counter" in scraped(pool)
    assert "# TYPE voipgw_media_worker_resident_bytes gauge" in scraped(pool)
