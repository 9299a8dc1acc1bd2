"""SIPREC (RFC 7866) with a recorder that runs the RFC 4028 session timer: sipp as the SRS.

A trunk (sipp) calls alice (sipp) through the gateway; the call is recorded to a sipp SRS
(``scenarios/calls/uas_siprec_srs_timer.xml``) that checks the recording INVITE offers a timer
with the gateway refreshing, answers taking the refresher's part itself, and refreshes at once
with an UPDATE, which the gateway answers 200 with the timer (before session 24: 501). The
refreshes the gateway sends, the expiry of an SRS that stops refreshing and a dead SRS are at
component depth (tests/component/calls/test_b2bua_siprec_timers.py): RFC 4028's least interval
is 90 s, too long for a real-time test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import SippUas
from tests.interop.siprec_sipp import recorded_call, recording_gateway

pytestmark = pytest.mark.interop


def test_the_srs_refreshing_the_recording_session_is_answered_with_the_timer(
    tmp_path: Path,
) -> None:
    with SippUas("calls/uas_siprec_srs_timer.xml", workdir=tmp_path / "srs") as srs:
        with recording_gateway(tmp_path, srs, "session_expires = 90\n") as gw:
            recorded_call(
                gw, tmp_path, alice="uas_answer.xml", caller="uac_call.xml", call_duration_ms=300
            )
            gw.wait_for_log(r"SIPREC: call \S+: \d+ packets, \d+ sent to the SRS")
        answered = srs.wait(timeout=10)
    answered.check()  # its checks passed: the INVITE's timer, the UPDATE's 200 with its own
    assert "501 Not Implemented" not in answered.messages()
