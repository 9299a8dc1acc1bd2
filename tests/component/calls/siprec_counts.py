"""The counted SRS of the in-memory SIPREC reopen tests: moved here from
test_b2bua_siprec_reopen.py so that no test module imports another."""

from __future__ import annotations

from tests.component.calls.siprec_recorded_calls import (
    scrape,
)


def counted(env: object, reason: str, count: int) -> bool:
    line = f'voipgw_recording_update_failures_total{{reason="{reason}"}} {count}\n'
    return line in scrape(env)  # type: ignore[arg-type]
