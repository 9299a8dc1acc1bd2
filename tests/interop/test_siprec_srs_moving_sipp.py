"""SIPREC (RFC 7866) with a recorder that moves the recording and asks for a metadata snapshot:
sipp as the SRS (``scenarios/calls/uas_siprec_srs_moving.xml``).

A trunk (sipp) calls alice (sipp) through the gateway; the recorded call's SRS re-offers other
ports by UPDATE (RFC 3264 §8), which the gateway answers with its labels and sendonly and
follows (its log says both streams now go there), then asks for a metadata snapshot (an UPDATE
with ``application/rs-metadata-request``), answered 200 and followed by a re-INVITE with the
complete metadata. The copies' arrival at the new ports, SDES re-offers and the 488 to an offer
that cannot be answered are at component depth
(tests/component/calls/test_b2bua_siprec_srs_offers.py): sipp neither checks RTP per port nor
speaks SRTP here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import SippUas
from tests.interop.siprec_sipp import recorded_call, recording_gateway

pytestmark = pytest.mark.interop


def test_an_srs_moving_the_recording_and_asking_for_a_snapshot_is_followed(
    tmp_path: Path,
) -> None:
    with SippUas(
        "calls/uas_siprec_srs_moving.xml", workdir=tmp_path / "srs", media_port_count=8
    ) as srs:
        with recording_gateway(tmp_path, srs) as gw:
            recorded_call(
                gw, tmp_path, alice="uas_answer.xml", caller="uac_call.xml", call_duration_ms=2000
            )
            gw.wait_for_log(r"SIPREC: call \S+: the SRS's new offer taken, 2 of 2 streams")
            gw.wait_for_log(r"SIPREC: call \S+: the SRS asked for a metadata snapshot")
            gw.wait_for_log(r"SIPREC: call \S+: \d+ packets, \d+ sent to the SRS")
        answered = srs.wait(timeout=10)
    answered.check()  # its checks passed: the Accept, our answer's sendonly, the snapshot
    messages = answered.messages()
    assert "488 Not Acceptable" not in messages and "415 Unsupported" not in messages
