"""PSAP callbacks (RFC 7090, gateway/core/calls/psap_callback.py): the marking, and the numbers
an emergency call presented, each for the window after the call."""

from __future__ import annotations

import pytest

from gateway.core.calls import psap_callback
from gateway.core.calls.psap_callback import PsapCallbacks, marked_as_callback


@pytest.mark.parametrize(
    ("value", "marked"),
    [
        ("psap-callback", True),
        ("PSAP-Callback", True),  # a token: any case
        (" psap-callback ", True),
        ("emergency", False),
        ("urgent", False),
        ("psap-callback-x", False),
        ("", False),
        (None, False),
    ],
)
def test_the_priority_value_marks_a_callback(value: str | None, marked: bool) -> None:
    assert marked_as_callback(value) is marked


def test_a_number_is_called_back_only_within_the_window() -> None:
    callbacks = PsapCallbacks(window=1800.0)
    callbacks.emergency_call_presented("+4930123456", now=100.0)
    assert callbacks.called_back("+4930123456", now=100.0)
    assert callbacks.called_back("+4930123456", now=1899.9)
    assert not callbacks.called_back("+4930999", now=200.0)  # another number
    assert not callbacks.called_back("+4930123456", now=1900.0)
    assert len(callbacks) == 0  # the expired number is forgotten when asked


def test_a_second_emergency_call_restarts_the_window() -> None:
    callbacks = PsapCallbacks(window=60.0)
    callbacks.emergency_call_presented("+15551234", now=0.0)
    callbacks.emergency_call_presented("+15551234", now=50.0)
    assert callbacks.called_back("+15551234", now=100.0)
    assert not callbacks.called_back("+15551234", now=110.0)


def test_a_window_of_zero_keeps_nothing() -> None:
    callbacks = PsapCallbacks(window=0.0)
    callbacks.emergency_call_presented("+4930123456", now=0.0)
    assert len(callbacks) == 0
    assert not callbacks.called_back("+4930123456", now=0.0)


def test_memory_is_bounded_and_the_oldest_numbers_go_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(psap_callback, "MAX_NUMBERS", 3)
    callbacks = PsapCallbacks(window=1000.0)
    for n in range(5):
        callbacks.emergency_call_presented(f"+1555000{n}", now=float(n))
    assert len(callbacks) == 3
    assert not callbacks.called_back("+15550000", now=10.0)
    assert not callbacks.called_back("+15550001", now=10.0)
    assert all(callbacks.called_back(f"+1555000{n}", now=10.0) for n in (2, 3, 4))
