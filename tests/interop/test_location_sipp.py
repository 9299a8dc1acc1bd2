"""Location conveyance (RFC 6442) through ``voipgw run`` between sipp peers: a phone's emergency
call with its PIDF-LO reaches the emergency trunk with Geolocation and the part as it was sent.

The phone (sipp, account alice) calls 112 with ``Geolocation: <cid:...>``,
``Geolocation-Routing: yes`` and a multipart/mixed body of its SDP and a PIDF-LO part marked
handling=required (calls/uac_call_location_auth.xml); the trunk serving 112 (sipp,
calls/uas_answer_location.xml) fails its run unless its INVITE has the header, the routing
header, and a multipart body of the gateway's with the SDP first and the PIDF-LO part with its
Content-Type, Content-ID, Content-Disposition and position. Updates follow the same way, in a
re-INVITE and in an UPDATE (whose trunk answers with a Geolocation-Error the phone must get).
Each scenario is also run against a
plain counterpart without the gateway, so that both are shown to work and the trunk's checks to
fail when location is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, SippUas, run_sipp_uac
from tests.interop.location_trunks import emergency_trunk
from tests.interop.scenario_credentials import CREDENTIALS
from tests.interop.sipp_calls import ACCOUNTS, account_call

pytestmark = pytest.mark.interop

POSITION = "52.5200 13.4050"  # in the phone's PIDF-LO: must never reach the gateway's log


def test_a_phones_emergency_call_brings_its_location_to_the_trunk(tmp_path: Path) -> None:
    with SippUas("calls/uas_answer_location.xml", workdir=tmp_path) as trunk:
        toml = emergency_trunk(trunk)
        with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=toml) as gw:
            caller = account_call("calls/uac_call_location_auth.xml", gw, tmp_path, service="112")
            caller.check()  # no 415: the location part is handling=required
            answered = trunk.wait(timeout=10)
            answered.check()  # Geolocation, Geolocation-Routing and the part arrived
            calls = gw.cli_until(
                lambda out: "caller location conveyed" in out, "calls", "--recent", "5"
            )
            log = gw.log_text()

    (invite,) = answered.received("INVITE ")
    assert "Geolocation: <cid:target123@sipp.example.com>" in invite
    assert "caller location conveyed by value, passed to emergency" in calls
    assert "location (by value (<target123@sipp.example.com>" in log
    assert "passed to emergency" in log
    # A caller's location is personal data: neither the log nor the record holds it.
    assert POSITION not in log and POSITION not in calls
    assert "Traceback" not in log


def test_an_emergency_callers_new_location_reaches_the_trunk(tmp_path: Path) -> None:
    """The caller moves during the call: its re-INVITE's new location (another Content-ID and
    position) reaches the trunk in the gateway's re-INVITE, Geolocation and part both."""
    with SippUas("calls/uas_answer_location_moved.xml", workdir=tmp_path) as trunk:
        toml = emergency_trunk(trunk)
        with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=toml) as gw:
            caller = account_call(
                "calls/uac_call_location_moved_auth.xml", gw, tmp_path, service="112"
            )
            caller.check()
            answered = trunk.wait(timeout=10)
            answered.check()
            calls = gw.cli_until(lambda out: "updated 1 time" in out, "calls", "--recent", "5")
            log = gw.log_text()

    _, moved = answered.received("INVITE ")
    assert "Geolocation: <cid:moved456@sipp.example.com>" in moved, moved
    assert "Content-ID: <moved456@sipp.example.com>" in moved
    assert "52.5210 13.4060" in moved and "52.5200 13.4050" not in moved
    assert "Content-Type: multipart/mixed;boundary=voipgw-" in moved
    assert "passed to emergency, updated 1 time(s) during the call" in calls
    assert "location update (by value (<moved456@sipp.example.com>" in log
    assert "52.5210" not in log and "Traceback" not in log


def test_an_update_brings_the_new_location_and_the_trunks_geolocation_error_back(
    tmp_path: Path,
) -> None:
    """The caller moves and says so in an UPDATE without an offer (RFC 6442 §4.1): the trunk
    gets an UPDATE of the gateway's with the new Geolocation and the part alone; the trunk
    takes it with a Geolocation-Error 100 on its 200, which the caller's scenario requires on
    the gateway's 200 (§4.3); the call record lists the code."""
    with SippUas("calls/uas_answer_location_update.xml", workdir=tmp_path) as trunk:
        toml = emergency_trunk(trunk)
        with GatewayProcess(
            tmp_path,
            accounts=ACCOUNTS,
            extra_toml=toml,
            # The trunk's scenario answers with a Geolocation-Error on purpose (RFC 6442 §4.3).
            allowed_warnings=[r"emergency answered 200 with Geolocation-Error 100"],
        ) as gw:
            caller = account_call(
                "calls/uac_call_location_update_auth.xml", gw, tmp_path, service="112"
            )
            caller.check()  # the 200 to its UPDATE had the trunk's Geolocation-Error
            answered = trunk.wait(timeout=10)
            answered.check()
            calls = gw.cli_until(lambda out: "Geolocation-Error" in out, "calls", "--recent", "5")
            log = gw.log_text()

    (update,) = answered.received("UPDATE ")
    assert "Geolocation: <cid:moved456@sipp.example.com>" in update, update
    assert "Content-ID: <moved456@sipp.example.com>" in update
    assert "52.5210 13.4060" in update and "application/sdp" not in update
    assert "Session-Expires:" in update  # it refreshes the trunk's session too
    assert "updated 1 time(s) during the call, Geolocation-Error 100 from emergency (200)" in calls
    assert "52.5210" not in log and "Traceback" not in log


def test_the_location_phone_against_a_challenging_uas(tmp_path: Path) -> None:
    with SippUas("uas_auth_answer.xml", workdir=tmp_path, keys=CREDENTIALS) as callee:
        caller = run_sipp_uac(
            "calls/uac_call_location_auth.xml",
            callee.address,
            workdir=tmp_path,
            service="112",
            caller="alice",
            auth=("alice", "s3cret"),
        )
        caller.check()
        callee.wait(timeout=10).check()
    first, second = caller.sent("INVITE ")
    for invite in (first, second):
        assert "Geolocation: <cid:target123@sipp.example.com>" in invite
        assert "Content-ID: <target123@sipp.example.com>" in invite
        assert POSITION in invite
    assert 'Authorization: Digest username="alice"' in second


def test_the_location_trunk_fails_without_location(tmp_path: Path) -> None:
    """A multipart INVITE without Geolocation or PIDF-LO (a SIP-I call) fails the trunk."""
    with SippUas("calls/uas_answer_location.xml", workdir=tmp_path, timeout=5) as callee:
        run_sipp_uac(
            "calls/uac_call_sip_i.xml",
            callee.address,
            workdir=tmp_path,
            service="112",
            call_duration_ms=100,
            timeout=4,
        )
        answered = callee.wait(timeout=10)
    assert not answered.ok
    assert "Geolocation" in answered.error_log.read_text()
