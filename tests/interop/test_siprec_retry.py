"""SIPREC (RFC 7866) with a recorder that is busy for a moment: sipp as the SRS.

A trunk (sipp, ``calls/uac_hold_resume.xml``) calls alice (sipp) through the gateway, holds and
resumes; the call is recorded to a sipp SRS (``scenarios/calls/uas_siprec_srs_refusing.xml``)
that answers the hold's re-INVITE 503 with ``Retry-After: 1`` and every later one 200. The
update goes again in the recording dialog, no sooner than the Retry-After (read from sipp's
message trace), nothing is given up, and the call's end brings the final snapshot, then the BYE.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.harness import SippUas
from tests.interop.siprec_invites import invites_received
from tests.interop.siprec_sipp import recorded_call, recording_gateway

pytestmark = pytest.mark.interop


def test_an_update_the_srs_refuses_503_goes_again_after_its_retry_after(tmp_path: Path) -> None:
    with SippUas("calls/uas_siprec_srs_refusing.xml", workdir=tmp_path / "srs") as srs:
        with recording_gateway(tmp_path, srs) as gw:
            # Held 1.5 s, then resumed for 1.5 s: the call outlasts the Retry-After (1 s) with
            # room for a loaded CI machine.
            recorded_call(
                gw,
                tmp_path,
                alice="calls/uas_answer_reinvite.xml",
                caller="calls/uac_hold_resume.xml",
                call_duration_ms=1500,
            )
            gw.wait_for_log(r"SIPREC: call \S+: \d+ packets, \d+ sent to the SRS")
            log = gw.log_text()
        answered = srs.wait(timeout=10)
    answered.check()  # the 503, then every re-INVITE answered, then the BYE

    invites = invites_received(answered)
    assert len(invites) >= 4, [text.split("\n", 1)[0] for _, text in invites]
    (_, opening), (refused_at, refused), (resent_at, resent) = invites[:3]
    assert "a=inactive" in refused  # the hold
    call_id = re.search(r"^Call-ID: (.+)$", opening, re.M)[1]  # type: ignore[index]
    assert f"Call-ID: {call_id}\n" in resent
    assert (resent_at - refused_at).total_seconds() >= 1.0  # Retry-After: 1
    # The last re-INVITE is the final snapshot: the recording's end in its metadata.
    final = invites[-1][1]
    assert re.search(
        r"<disassociate-time>[^<]+</disassociate-time>\s*</sessionrecordingassoc>", final
    )
    assert "given up" not in log and "refused an update" not in log
