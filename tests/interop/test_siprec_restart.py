"""SIPREC (RFC 7866) with a recorder that restarts mid-call: sipp as the SRS.

A trunk (sipp, ``calls/uac_hold_resume.xml``) calls alice (sipp) through the gateway, holds and
resumes; the call is recorded to a sipp SRS (``scenarios/calls/uas_siprec_srs_restarting.xml``)
that answers the hold's re-INVITE 481 (it lost the recording session). The gateway opens a new
recording session (a new Call-ID) whose metadata names the same communication session,
participants and streams; the later updates, the final snapshot and the BYE go to it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.harness import SippUas
from tests.interop.siprec_invites import invites_received
from tests.interop.siprec_sipp import recorded_call, recording_gateway

pytestmark = pytest.mark.interop

IDS = re.compile(r'(?:session_id|participant_id|stream_id)="([^"]+)"')


def test_after_the_srs_answers_481_a_new_recording_session_takes_the_call(
    tmp_path: Path,
) -> None:
    with SippUas("calls/uas_siprec_srs_restarting.xml", workdir=tmp_path / "srs", calls=2) as srs:
        # The SRS forgets the session on purpose (481): the gateway says so and opens another.
        allowed = [r"the SRS answered an update 481", r"recording goes on in a new recording"]
        with recording_gateway(tmp_path, srs, allowed_warnings=allowed) as gw:
            recorded_call(
                gw,
                tmp_path,
                alice="calls/uas_answer_reinvite.xml",
                caller="calls/uac_hold_resume.xml",
                call_duration_ms=500,
            )
            gw.wait_for_log(r"SIPREC: call \S+: \d+ packets, \d+ sent to the SRS")
            log = gw.log_text()
        answered = srs.wait(timeout=10)
    answered.check()  # two calls: the 481, then the new session to its BYE

    invites = [text for _, text in invites_received(answered)]
    call_ids = [re.search(r"^Call-ID: (.+)$", text, re.M)[1] for text in invites]  # type: ignore[index]
    first, lost = invites[:2]
    assert "a=inactive" in lost and call_ids[1] == call_ids[0]  # the hold, answered 481
    reopened = invites[2]
    assert call_ids[2] != call_ids[0] and ";tag=" not in re.search(r"^To: .+$", reopened, re.M)[0]  # type: ignore[index]
    assert "Require: siprec" in reopened
    assert set(IDS.findall(reopened)) == set(IDS.findall(first))  # the same CS, parties, streams
    assert all(call_id == call_ids[2] for call_id in call_ids[3:])  # resume, final snapshot
    assert "recording goes on in a new recording session" in log
