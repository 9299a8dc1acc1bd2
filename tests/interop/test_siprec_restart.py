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

from tests.interop.harness import LOOPBACK, GatewayProcess, SippUas
from tests.interop.sipp_calls import ACCOUNTS, inbound_trunk, register, trunk_call
from tests.interop.siprec_invites import invites_received

pytestmark = pytest.mark.interop

IDS = re.compile(r'(?:session_id|participant_id|stream_id)="([^"]+)"')


def test_after_the_srs_answers_481_a_new_recording_session_takes_the_call(
    tmp_path: Path,
) -> None:
    with SippUas("calls/uas_siprec_srs_restarting.xml", workdir=tmp_path / "srs", calls=2) as srs:
        extra = inbound_trunk() + (
            "[plugins.siprec]\n"
            f'srs = "sip:srs@{srs.address}"\n'
            'trunks = ["pbx"]\n'
            f'media_address = "{LOOPBACK}"\n'
        )
        with GatewayProcess(
            tmp_path / "gw",
            accounts=ACCOUNTS,
            settings={"plugins": {"enable": ["udp", "tcp", "siprec"]}},
            extra_toml=extra,
        ) as gw:
            alice = SippUas("calls/uas_answer_reinvite.xml", workdir=tmp_path / "alice")
            register(gw, tmp_path, "udp", alice.port)
            with alice:
                caller = trunk_call("calls/uac_hold_resume.xml", gw, tmp_path, call_duration_ms=500)
                caller.check()
                alice.wait(timeout=10).check()
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
