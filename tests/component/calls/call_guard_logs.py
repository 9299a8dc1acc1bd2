"""The call-ended log lines of the in-memory call guard tests: moved here from
test_b2bua_call_guards.py so that no test module imports another."""

from __future__ import annotations

import pytest


def ended_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if " ended: " in r.getMessage()]
