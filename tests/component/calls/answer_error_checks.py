"""The injected answer failure and the log check (logged once, no secret) of the answer error
tests: moved here from test_b2bua_answer_errors.py so that no test module imports another."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from gateway.core.media.security import LegSecurity

SECRET = "c2VjcmV0LWtleS1tYXRlcmlhbA"  # stands for key material in the exception's text


def fail_next(
    monkeypatch: pytest.MonkeyPatch,
    method: str = "read_answer",
    error: Callable[[], Exception] = lambda: RuntimeError(f"a bug holding {SECRET}"),
) -> Callable[[], None]:
    """Make the next call of LegSecurity's ``method`` (in whichever call comes first) raise
    ``error()`` (RuntimeError) once it is armed; every other call of it works as before."""
    armed: list[bool] = []
    real = getattr(LegSecurity, method)

    def failing(self: LegSecurity, *args: Any, **kwargs: Any) -> Any:
        if armed:
            armed.clear()
            raise error()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(LegSecurity, method, failing)
    return lambda: armed.append(True)


def assert_logged_once_and_nothing_secret(caplog: pytest.LogCaptureFixture, reason: str) -> None:
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    # One ERROR, with its traceback rendered by the core (gateway/core/logs.py), not the
    # exception itself, whose text a formatter would print.
    assert len(errors) == 1 and errors[0].exc_info is None
    assert (errors[0].exc_text or "").startswith("Traceback (most recent call last):")
    assert reason in errors[0].getMessage()
    ended = [r.getMessage() for r in caplog.records if " ended: " in r.getMessage()]
    assert any(reason in message for message in ended)
    # The exception's text (raised in a plugin's stand-in here) is in no line, traceback or not.
    assert SECRET not in caplog.text
