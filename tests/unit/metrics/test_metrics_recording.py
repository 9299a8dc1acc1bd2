"""``voipgw_recording_update_failures_total``: the recording-session updates the media taps gave
up (SIPREC), summed over the taps that count them; ``voipgw_recording_pauses_total`` and
``voipgw_recordings_paused``: recordings paused on request (``voipgw recording pause``), with a
recording tap only; without sockets."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.core.plugins import Registry
from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import _recording
from gateway.plugins.metrics.exposition import Exposition


def view(*taps: tuple[str, object], calls: object = None) -> StatusView:
    registry: Registry[object] = Registry("media tap")
    for name, tap in taps:
        registry.add(name, tap)
    gateway = SimpleNamespace(plugins=SimpleNamespace(media_taps=registry), calls=calls)
    return StatusView(gateway, CallStatistics())  # type: ignore[arg-type]


def test_the_taps_counts_are_summed_by_reason_and_others_are_passed_over() -> None:
    siprec = SimpleNamespace(update_failures={"refused": 2, "no_answer": 0, "session_gone": 1})
    another = SimpleNamespace(update_failures={"refused": 1})
    recorder = SimpleNamespace()  # counts nothing of the kind
    covert = SimpleNamespace(update_failures={"refused": 7}, covert=True)
    status = view(("siprec", siprec), ("other", another), ("recorder", recorder), ("li", covert))
    assert status.recording_update_failures() == (
        ("no_answer", 0),
        ("refused", 3),
        ("session_gone", 1),
    )
    out = Exposition()
    _recording(out, status)
    text = out.render().decode()
    assert "# TYPE voipgw_recording_update_failures_total counter\n" in text
    assert 'voipgw_recording_update_failures_total{reason="refused"} 3\n' in text
    assert 'voipgw_recording_update_failures_total{reason="no_answer"} 0\n' in text
    assert 'voipgw_recording_update_failures_total{reason="session_gone"} 1\n' in text


def test_without_a_tap_that_counts_them_there_is_no_family() -> None:
    status = view(("recorder", SimpleNamespace()))
    assert status.recording_update_failures() == ()
    out = Exposition()
    _recording(out, status)
    assert out.render() == b""


def test_pauses_are_counted_by_action_with_the_calls_paused_now_where_something_records() -> None:
    calls = SimpleNamespace(
        recording_pauses={"pause": 3, "resume": 2}, recordings_paused={object()}
    )
    out = Exposition()
    _recording(out, view(("recorder", SimpleNamespace()), calls=calls))
    text = out.render().decode()
    assert "# TYPE voipgw_recording_pauses_total counter\n" in text
    assert 'voipgw_recording_pauses_total{action="pause"} 3\n' in text
    assert 'voipgw_recording_pauses_total{action="resume"} 2\n' in text
    assert "# TYPE voipgw_recordings_paused gauge\nvoipgw_recordings_paused 1\n" in text
    # An interception alone records nothing an operator may pause: no family.
    out = Exposition()
    _recording(out, view(("li", SimpleNamespace(covert=True)), calls=calls))
    assert out.render() == b""


def test_streams_left_out_of_recordings_are_summed_by_reason_where_a_tap_counts_them() -> None:
    siprec = SimpleNamespace(streams_unrecorded={"no_port": 2, "too_many_lines": 0})
    covert = SimpleNamespace(streams_unrecorded={"no_port": 5}, covert=True)
    status = view(("siprec", siprec), ("recorder", SimpleNamespace()), ("li", covert))
    assert status.recording_streams_unrecorded() == (("no_port", 2), ("too_many_lines", 0))
    out = Exposition()
    _recording(out, status)
    text = out.render().decode()
    assert "# TYPE voipgw_recording_streams_unrecorded_total counter\n" in text
    assert 'voipgw_recording_streams_unrecorded_total{reason="no_port"} 2\n' in text
    assert 'voipgw_recording_streams_unrecorded_total{reason="too_many_lines"} 0\n' in text
    out = Exposition()
    _recording(out, view(("recorder", SimpleNamespace())))
    assert out.render() == b""
