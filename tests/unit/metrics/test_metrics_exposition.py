"""The Prometheus text exposition format 0.0.4 as the metrics plugin writes it: HELP and TYPE
lines, escaping, value spelling, histograms (cumulative buckets, ``+Inf``, ``_sum``,
``_count``), and the rules it refuses to break."""

from __future__ import annotations

import math

import pytest

from gateway.core.interfaces import Histogram
from gateway.plugins.metrics.exposition import (
    Exposition,
    ExpositionError,
    escape_help,
    escape_label_value,
    format_value,
)


def test_a_counter_and_a_gauge_with_help_type_and_labels() -> None:
    out = Exposition()
    out.family("voipgw_calls_ended_total", "counter", "Calls ended.")
    out.sample(3, [("outcome", "answered")])
    out.sample(0, [("outcome", "error")])
    out.family("voipgw_calls_in_progress", "gauge", "Calls in progress.")
    out.sample(7)
    assert out.render() == (
        b"# HELP voipgw_calls_ended_total Calls ended.\n"
        b"# TYPE voipgw_calls_ended_total counter\n"
        b'voipgw_calls_ended_total{outcome="answered"} 3\n'
        b'voipgw_calls_ended_total{outcome="error"} 0\n'
        b"# HELP voipgw_calls_in_progress Calls in progress.\n"
        b"# TYPE voipgw_calls_in_progress gauge\n"
        b"voipgw_calls_in_progress 7\n"
    )


def test_label_values_escape_backslash_quote_and_line_feed_and_keep_utf8() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'
    out = Exposition()
    out.family("voipgw_trunk_calls_in_progress", "gauge", "x")
    out.sample(1, [("trunk", 'Köln "A"\\n\n')])
    assert b'{trunk="K\xc3\xb6ln \\"A\\"\\\\n\\n"} 1\n' in out.render()


def test_help_escapes_backslash_and_line_feed_but_not_quotes() -> None:
    assert escape_help('one\\two\nthree "q"') == 'one\\\\two\\nthree "q"'


def test_values_are_spelled_as_prometheus_reads_them() -> None:
    assert format_value(12) == "12"
    assert format_value(0.25) == "0.25"
    assert format_value(1.0) == "1.0"
    assert format_value(1e-7) == "1e-07"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    with pytest.raises(ExpositionError):
        format_value(True)


def test_a_histogram_has_cumulative_buckets_an_inf_bucket_sum_and_count() -> None:
    out = Exposition()
    out.family("voipgw_call_setup_seconds", "histogram", "Set-up time.")
    out.histogram(Histogram(bounds=(0.5, 1.0, 5.0), counts=(1, 1, 4), count=6, total=21.5))
    assert out.render() == (
        b"# HELP voipgw_call_setup_seconds Set-up time.\n"
        b"# TYPE voipgw_call_setup_seconds histogram\n"
        b'voipgw_call_setup_seconds_bucket{le="0.5"} 1\n'
        b'voipgw_call_setup_seconds_bucket{le="1.0"} 1\n'
        b'voipgw_call_setup_seconds_bucket{le="5.0"} 4\n'
        b'voipgw_call_setup_seconds_bucket{le="+Inf"} 6\n'
        b"voipgw_call_setup_seconds_sum 21.5\n"
        b"voipgw_call_setup_seconds_count 6\n"
    )


def test_a_histograms_own_labels_come_before_le() -> None:
    out = Exposition()
    out.family("x_seconds", "histogram", "h")
    out.histogram(Histogram((1.0,), (0,), 0, 0.0), [("trunk", "t")])
    assert b'x_seconds_bucket{trunk="t",le="1.0"} 0\n' in out.render()
    assert b'x_seconds_count{trunk="t"} 0\n' in out.render()


@pytest.mark.parametrize(
    "histogram",
    [
        Histogram((1.0, 2.0), (2, 1), 3, 1.0),  # not cumulative
        Histogram((2.0, 1.0), (1, 2), 3, 1.0),  # bounds out of order
        Histogram((1.0,), (1, 2), 3, 1.0),  # a count too many
        Histogram((1.0,), (4,), 3, 1.0),  # a bucket above the total count
    ],
)
def test_a_histogram_that_is_not_cumulative_is_refused(histogram: Histogram) -> None:
    out = Exposition()
    out.family("x_seconds", "histogram", "h")
    with pytest.raises(ExpositionError):
        out.histogram(histogram)


def test_rules_of_names_types_and_order_are_enforced() -> None:
    out = Exposition()
    with pytest.raises(ExpositionError):
        out.family("voipgw-calls", "gauge", "a hyphen")
    with pytest.raises(ExpositionError):
        out.family("__reserved", "gauge", "Prometheus' own")
    with pytest.raises(ExpositionError):
        out.family("voipgw_calls", "counter", "a counter without _total")
    with pytest.raises(ExpositionError):
        out.family("voipgw_x", "summary", "not written here")
    with pytest.raises(ExpositionError):
        out.sample(1)  # no family yet
    out.family("voipgw_x_total", "counter", "x")
    with pytest.raises(ExpositionError):
        out.sample(-1)  # counters do not go down
    with pytest.raises(ExpositionError):
        out.sample(1, [("bad-label", "v")])
    with pytest.raises(ExpositionError):
        out.family("voipgw_x_total", "counter", "given twice")
    out.family("x_seconds", "histogram", "h")
    with pytest.raises(ExpositionError):
        out.histogram(Histogram((1.0,), (0,), 0, 0.0), [("le", "1")])


def test_nothing_renders_as_nothing_and_everything_else_ends_in_a_line_feed() -> None:
    assert Exposition().render() == b""
    out = Exposition()
    out.family("x", "gauge", "")
    out.sample(0)
    assert out.render().endswith(b"x 0\n")
