"""A direction's totals (``DirectionControl.totals``, read by the media session's summary and
close) and its drops by reason (``DirectionControl.dropped_by_reason``, for the call record and
the metrics) are what its full statistics say, whatever its counters hold."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.config import PortRange
from gateway.core.media.ports import PortAllocator
from gateway.core.media.relay import DROP_REASONS, DirectionControl, MediaRelay, MediaStream
from tests.port_blocks import ModuleBlock

ROUTE_COUNTERS = (
    "packets",
    "bytes",
    "dropped_transform",
    "dropped_send_error",
    "dropped_no_destination",
    "transform_errors",
)
ENDPOINT_COUNTERS = (
    "dropped_unlatched_source",
    "dropped_blocked",
    "dropped_malformed",
    "tap_errors",
    "receive_errors",
)
COUNT = st.integers(0, 10**9)
PORTS = ModuleBlock(4)  # this module's (tests/port_blocks.py), while it runs


@pytest.fixture(scope="module")
def stream() -> Iterator[MediaStream]:
    relay = MediaRelay(PortAllocator("127.0.0.1", PortRange.parse(PORTS.text())), clock=float)
    stream = relay.open_stream()
    yield stream
    relay.close()


def _as_statistics_say(control: DirectionControl) -> tuple[int, int, int]:
    stats = control.statistics()
    return stats.packets, stats.rtp_bytes + stats.rtcp_bytes, stats.dropped


@settings(max_examples=200)
@given(
    routes=st.lists(st.lists(COUNT, min_size=6, max_size=6), min_size=4, max_size=4),
    endpoints=st.lists(st.lists(COUNT, min_size=5, max_size=5), min_size=2, max_size=2),
    dtmf_taken_before=COUNT,
    red_malformed=COUNT,
    direction=st.sampled_from(["a_to_b", "b_to_a"]),
)
def test_totals_are_the_statistics_sums(
    stream: MediaStream,
    routes: list[list[int]],
    endpoints: list[list[int]],
    dtmf_taken_before: int,
    red_malformed: int,
    direction: str,
) -> None:
    control = stream.a_to_b if direction == "a_to_b" else stream.b_to_a
    rtp_ep, rtcp_ep = control._endpoints
    for route, values in zip(
        (rtp_ep.rtp, rtp_ep.rtcp, rtcp_ep.rtp, rtcp_ep.rtcp), routes, strict=True
    ):
        for name, value in zip(ROUTE_COUNTERS, values, strict=True):
            setattr(route, name, value)
    for endpoint, values in zip((rtp_ep, rtcp_ep), endpoints, strict=True):
        for name, value in zip(ENDPOINT_COUNTERS, values, strict=True):
            setattr(endpoint, name, value)
    control._dtmf_taken_before = dtmf_taken_before
    control._red_malformed.value = red_malformed
    assert control.totals() == _as_statistics_say(control)
    by_reason = control.dropped_by_reason()
    stats = control.statistics()
    assert by_reason == stats.dropped_by_reason
    assert sum(by_reason) == stats.dropped
    assert len(by_reason) == len(DROP_REASONS)
    named = dict(zip(DROP_REASONS, by_reason, strict=True))
    assert named["unlatched_source"] == stats.dropped_unlatched_source
    assert named["blocked"] == stats.dropped_blocked
    assert named["srtp_refused"] == stats.dropped_transform
    assert named["malformed"] == stats.dropped_malformed
    assert named["no_destination"] == stats.dropped_no_destination
    assert named["send_failed"] == stats.dropped_send_error


def test_totals_of_a_new_stream_are_zero(stream: MediaStream) -> None:
    for control in (stream.a_to_b, stream.b_to_a):
        control._dtmf_taken_before = 0
        control._red_malformed.value = 0
        for endpoint in control._endpoints:
            for route in (endpoint.rtp, endpoint.rtcp):
                for name in ROUTE_COUNTERS:
                    setattr(route, name, 0)
            for name in ENDPOINT_COUNTERS:
                setattr(endpoint, name, 0)
        assert control.totals() == (0, 0, 0) == _as_statistics_say(control)
        assert control.dropped_by_reason() == (0,) * len(DROP_REASONS)
