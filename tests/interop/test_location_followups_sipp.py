"""Location conveyance (RFC 6442) loose ends through ``voipgw run`` between sipp peers.

- The caller (sipp, account alice, calls/uac_call_location_lone_update_auth.xml) calls 112 with
  its location, then moves and sends an UPDATE whose whole body is the new PIDF-LO (no
  multipart), named by its Content-ID header field (RFC 8262 §3): the trunk
  (calls/uas_answer_location_update.xml) gets an UPDATE of the gateway's with it, as for the
  multipart form, and its 200's Geolocation-Error reaches the caller.
- The same caller against a trunk that answers the gateway's UPDATE only 1.5 s late
  (calls/uas_answer_location_update_late.xml, over TCP: one UPDATE, no retransmissions), with
  ``response_timeout = 1``: the caller's UPDATE is answered 200 after about 1 s, without a
  Geolocation-Error; the trunk's late 200 is absorbed; the call goes on and ends with the
  caller's BYE, and the call record says the trunk did not answer in time.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, SippUas, run_sipp_uac
from tests.interop.location_trunks import emergency_trunk
from tests.interop.sipp_calls import ACCOUNTS, ALICE

pytestmark = pytest.mark.interop

CALLER = "calls/uac_call_location_lone_update_auth.xml"


def test_a_location_only_update_reaches_the_trunk_and_its_answer_the_caller(
    tmp_path: Path,
) -> None:
    with SippUas("calls/uas_answer_location_update.xml", workdir=tmp_path) as trunk:
        toml = emergency_trunk(trunk)
        with GatewayProcess(
            tmp_path,
            accounts=ACCOUNTS,
            extra_toml=toml,
            # The trunk's scenario answers with a Geolocation-Error on purpose (RFC 6442 §4.3).
            allowed_warnings=[r"emergency answered 200 with Geolocation-Error 100"],
        ) as gw:
            caller = run_sipp_uac(
                CALLER, gw.address, workdir=tmp_path, service="112", caller=ALICE[0], auth=ALICE
            )
            caller.check()  # no 415 for the lone PIDF-LO
            answered = trunk.wait(timeout=10)
            answered.check()
            calls = gw.cli_until(lambda out: "Geolocation-Error" in out, "calls", "--recent", "5")
            log = gw.log_text()

    (update,) = answered.received("UPDATE ")
    assert "Geolocation: <cid:moved456@sipp.example.com>" in update, update
    assert "Content-Type: multipart/mixed;boundary=voipgw-" in update
    # The lone body became a part of the gateway's multipart body, its Content-ID with it.
    assert "Content-ID: <moved456@sipp.example.com>" in update
    assert "Content-Type: application/pidf+xml" in update
    assert "52.5210 13.4060" in update and "application/sdp" not in update
    (ok,) = [m for m in caller.received("SIP/2.0 200") if "CSeq: 3 UPDATE" in m]
    assert 'Geolocation-Error: 100 ;code="Cannot Process Location"' in ok
    assert "updated 1 time(s) during the call, Geolocation-Error 100 from emergency (200)" in calls
    assert "52.5210" not in log and "Traceback" not in log


def test_a_trunk_slow_to_answer_the_location_update_leaves_the_caller_answered(
    tmp_path: Path,
) -> None:
    with SippUas(
        "calls/uas_answer_location_update_late.xml", workdir=tmp_path, transport="tcp"
    ) as trunk:
        toml = emergency_trunk(trunk) + "response_timeout = 1\n"
        with GatewayProcess(
            tmp_path,
            accounts=ACCOUNTS,
            extra_toml=toml,
            # The trunk answers the location UPDATE late on purpose.
            allowed_warnings=[r"location update not delivered to emergency \(Request Timeout"],
        ) as gw:
            # The caller hangs up 2.5 s after its UPDATE's 200: after the trunk's late 200.
            caller = run_sipp_uac(
                CALLER,
                gw.address,
                workdir=tmp_path,
                service="112",
                caller=ALICE[0],
                auth=ALICE,
                call_duration_ms=2500,
            )
            caller.check()
            answered = trunk.wait(timeout=10)
            answered.check()  # its late 200 was sent, and the BYE came after it
            calls = gw.cli_until(lambda out: "unanswered" in out, "calls", "--recent", "5")
            log = gw.log_text()

    (ok,) = [m for m in caller.received("SIP/2.0 200") if "CSeq: 3 UPDATE" in m]
    assert "Geolocation-Error" not in ok
    waited = "location update not delivered to emergency (Request Timeout (no answer within 1 s))"
    assert waited in log
    assert "late answer to the location update on the B leg absorbed (200 OK)" in log
    assert "location update unanswered by emergency after 1 s (not delivered)" in calls
    assert "ended (BYE from A leg)" in calls
    assert "52.5210" not in log and "Traceback" not in log
