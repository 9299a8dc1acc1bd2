"""A transferor that refreshes its REFER's implicit subscription while the target rings (RFC
3515 §2.4.4, RFC 6665 §4.1.2.2), with sipp on every side (docs/transfers.md):

- the trunk (sipp on 127.0.0.2, calls/uac_call_rtp_transferred.xml) calls alice's DID;
- alice (sipp, calls/uas_answer_refer_subscribe.xml) answers, transfers the call to a number
  the outbound trunk serves, takes the NOTIFYs of 100 and 180, then sends ``SUBSCRIBE`` with
  ``Event: refer;id=1`` and ``Expires: 120``: it must get 200 with ``Expires: 60`` and a
  NOTIFY of 180 Ringing with the subscription active, then the NOTIFY of the target's 200 OK,
  which ends it; then alice hangs up;
- the target (sipp, calls/uas_ring_pause_answer.xml) rings 3 s, then answers.

Before session 51 the SUBSCRIBE got 501 and the scenario failed there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, SippUas, run_sipp_uac, tone_ulaw
from tests.interop.sipp_calls import (
    ACCOUNTS,
    DID,
    TRUNK_IP,
    inbound_trunk,
    outbound_trunk,
    register,
)

pytestmark = pytest.mark.interop

TARGET_NUMBER = "+4989555"  # the outbound trunk's (+49), no account's


def test_a_transferor_refreshing_its_refer_subscription_is_told_the_transfer_to_its_end(
    tmp_path: Path,
) -> None:
    target = SippUas("calls/uas_ring_pause_answer.xml", workdir=tmp_path, call_duration_ms=3000)
    gw = GatewayProcess(
        tmp_path / "gw", accounts=ACCOUNTS, extra_toml=inbound_trunk() + outbound_trunk(target)
    )
    alice = SippUas(
        "calls/uas_answer_refer_subscribe.xml",
        workdir=tmp_path,
        call_duration_ms=500,  # the call before its REFER
        keys={"target": gw.uri(TARGET_NUMBER)},
    )
    tone = tone_ulaw(tmp_path / "tone.ulaw", 440.0, seconds=6.0)
    with target, gw:
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            caller = run_sipp_uac(
                "calls/uac_call_rtp_transferred.xml",
                gw.address,
                workdir=tmp_path,
                service=DID,
                caller="+4940777",
                local_ip=TRUNK_IP,
                rtp_file=tone,
                call_duration_ms=1000,
                timeout=30,
            )
            transferor = alice.wait(timeout=15)
        callee = target.wait(timeout=15)
        gw.wait_for_log(r"transfer of the B leg to \S+: 200 OK")
        log = gw.log_text()
    caller.check()  # answered, re-INVITEd with the target's media, hung up
    transferor.check()  # 202, NOTIFYs, the SUBSCRIBE's 200 (Expires: 60) and its NOTIFY
    callee.check()  # rang, answered, BYE from the caller's side
    assert "the B leg refreshed (60 s) its subscription to the transfer's progress" in log
    (subscribe,) = transferor.sent("SUBSCRIBE ")
    assert "Event: refer;id=1" in subscribe
