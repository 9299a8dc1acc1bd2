"""The RFC 3261 section 9.1 give-up wait after a CANCEL, of the in-memory late 2xx tests: moved
here from test_b2bua_late_2xx_after_cancel.py so that no test module imports another."""

from __future__ import annotations

from tests.component.calls.b2bua_env import (
    T1,
)

GIVE_UP = 64 * T1 + 1.0  # the §9.1 wait after the CANCEL
