"""The recording indication (RFC 7866 §6.1, §7.1.1) towards a recording-aware phone: sipp as the
phone and as the SRS.

A trunk (sipp) calls alice (sipp, ``scenarios/calls/uas_answer_record_aware.xml``: its 200 says
``Supported: record-aware``) through the gateway, which records the call to a sipp SRS
(``calls/uas_siprec_srs_pausing.xml``, which answers every re-INVITE). Once the SRS has answered,
alice gets a re-INVITE whose SDP says ``a=record:on`` (her scenario checks it and answers it);
the call then ends as usual, and the log says the party was told.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import SippUas
from tests.interop.siprec_sipp import recorded_call, recording_gateway

pytestmark = pytest.mark.interop


def test_a_record_aware_phone_is_re_invited_with_a_record_on(tmp_path: Path) -> None:
    with SippUas("calls/uas_siprec_srs_pausing.xml", workdir=tmp_path / "srs") as srs:
        with recording_gateway(tmp_path, srs) as gw:
            recorded_call(
                gw,
                tmp_path,
                alice="calls/uas_answer_record_aware.xml",
                caller="uac_call.xml",
                call_duration_ms=3000,
            )
            gw.wait_for_log(r"telling the B leg's recording-aware party a=record:on")
            gw.wait_for_log(r"SIPREC: call \S+: \d+ packets, \d+ sent to the SRS")
        srs.wait(timeout=10).check()


def test_a_caller_turning_record_aware_in_its_re_invites_is_told_in_our_answers(
    tmp_path: Path,
) -> None:
    """The trunk (sipp, ``calls/uac_call_turning_record_aware.xml``) says ``record-aware`` and
    ``a=recordpref:off`` only in its hold and resume re-INVITEs, once the call is recorded:
    the gateway's 200 to each says ``a=record:on`` (the scenario checks it), and the log says
    the party turned aware and stated its preference."""
    with SippUas("calls/uas_siprec_srs_pausing.xml", workdir=tmp_path / "srs") as srs:
        with recording_gateway(tmp_path, srs) as gw:
            recorded_call(
                gw,
                tmp_path,
                alice="calls/uas_answer_reinvite.xml",
                caller="calls/uac_call_turning_record_aware.xml",
                call_duration_ms=1500,
            )
            gw.wait_for_log(r"the A leg's party now says it is recording-aware")
            gw.wait_for_log(r"the calling party's recording preference is off")
        srs.wait(timeout=10).check()
