"""SIPREC (RFC 7866) paused and resumed by the operator's command: sipp as the SRS.

A trunk (sipp) calls alice (sipp) through the gateway for a few seconds; the call is recorded to
a sipp SRS (``scenarios/calls/uas_siprec_srs_pausing.xml``, which answers every re-INVITE).
Meanwhile ``voipgw recording pause SIP-CALL-ID --by interop`` and then ``resume``, run as an
operator would against the running gateway's control socket: the SRS gets a re-INVITE with both
streams ``a=inactive`` and no metadata (RFC 7866 §7.1.1), then one with both ``a=sendonly``,
then the final snapshot and the BYE; the log and ``voipgw calls`` say who paused and resumed.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from tests.interop.harness import SippUas
from tests.interop.siprec_invites import invites_received
from tests.interop.siprec_sipp import recorded_call, recording_gateway

pytestmark = pytest.mark.interop


def test_a_recording_paused_and_resumed_by_the_command_re_invites_the_srs(
    tmp_path: Path,
) -> None:
    failures: list[BaseException] = []

    with SippUas("calls/uas_siprec_srs_pausing.xml", workdir=tmp_path / "srs") as srs:
        with recording_gateway(tmp_path, srs) as gw:

            def call() -> None:
                try:
                    recorded_call(
                        gw,
                        tmp_path,
                        alice="uas_answer.xml",
                        caller="uac_call.xml",
                        call_duration_ms=8000,
                    )
                except BaseException as exc:  # re-raised in the test's thread
                    failures.append(exc)

            caller = threading.Thread(target=call, daemon=True)
            caller.start()
            try:
                out = gw.cli_until(
                    lambda text: any(
                        c["answered_at"] and "siprec" in json.dumps(c["security"])
                        for c in json.loads(text)
                    ),
                    "calls",
                    "--json",
                )
                (live,) = json.loads(out)
                call_id = live["sip_call_id"]
                paused = gw.cli("recording", "pause", call_id, "--by", "interop")
                assert paused.stdout == f"call {live['call_id']}: paused (siprec)\n"
                gw.wait_for_log(r"recording paused by interop \(siprec\)")
                shown = gw.cli_until(lambda text: "(paused now)" in text, "calls")
                assert "recording paused" in shown and "by interop" in shown, shown
                resumed = gw.cli("recording", "resume", call_id, "--by", "interop")
                assert resumed.stdout == f"call {live['call_id']}: recorded (siprec)\n"
                gw.wait_for_log(r"recording resumed by interop \(siprec\)")
            finally:
                caller.join(timeout=30)
            assert not failures, failures
            gw.wait_for_log(r"SIPREC: call \S+: \d+ packets, \d+ sent to the SRS")
        answered = srs.wait(timeout=10)
    answered.check()  # every re-INVITE answered, then the BYE

    invites = [text for _, text in invites_received(answered)]
    assert len(invites) == 4, [text.split("\n", 1)[0] for text in invites]
    _, pause, resume, final = invites
    assert re.findall(r"^a=(sendonly|inactive)$", pause, re.M) == ["inactive", "inactive"]
    assert "rs-metadata" not in pause  # RFC 7866 §7.1.1: the metadata does not change
    assert re.findall(r"^a=(sendonly|inactive)$", resume, re.M) == ["sendonly", "sendonly"]
    assert "</sessionrecordingassoc>" in final  # the final snapshot, then the BYE
