"""Call pickup from a busy lamp field through ``voipgw run`` against sipp (RFC 4235 dialog
package, RFC 3891 Replaces): bob's phone (a sipp, digest-authenticated) watches alice in a group
with ``pickup = true``; a trunk (sipp on 127.0.0.2) calls her DID and alice's phone (a sipp)
rings and never answers; bob's phone builds a Replaces from the early dialog's call-id and tags
in the NOTIFY and picks the call up. The scenarios check what each peer gets with regexps (the
Reason of alice's CANCEL, the relay's SDP in bob's 200); here the traces are read as well.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.interop.dialog_event_bodies import NS, body_of
from tests.interop.harness import GatewayProcess, SippUas, run_sipp_uac
from tests.interop.pickup_sipp import PICKUP, _until_ringing
from tests.interop.sipp_calls import (
    ACCOUNTS,
    BOB,
    header,
    inbound_trunk,
    register,
    trunk_call,
)

pytestmark = pytest.mark.interop


@pytest.mark.parametrize(
    "trunk_scenario",
    [
        "uac_call.xml",
        # A delayed offer (RFC 3261 §13.2.1): our 200 carries bob's offer, the trunk's ACK
        # the answer, and bob's phone gets its 200 after that.
        "uac_call_late_offer.xml",
    ],
)
def test_a_phone_picks_up_a_watched_accounts_ringing_call(
    tmp_path: Path, trunk_scenario: str
) -> None:
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk() + PICKUP) as gw:
        alice = SippUas("calls/uas_ring_until_answered_elsewhere.xml", workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        with alice, ThreadPoolExecutor(max_workers=1) as pool:
            picking = pool.submit(
                run_sipp_uac,
                "calls/uac_subscribe_dialog_pickup.xml",
                gw.address,
                workdir=tmp_path,
                service="alice",
                caller="bob",
                auth=BOB,
                timeout=30,
            )
            gw.wait_for_log(r"bob watches the calls of alice for 600 s")
            caller = trunk_call(trunk_scenario, gw, tmp_path, call_duration_ms=300)
            caller.check()
            rang = alice.wait(timeout=10)
            rang.check()
            picker = picking.result(timeout=60)
        picker.check()
        gw.wait_for_log(r"bob picks up the call ringing alice")

    # The NOTIFY bob's phone built its Replaces from names alice's phone's dialog with us.
    early = body_of(picker.received("NOTIFY ")[1]).find(f"{NS}dialog")
    assert early is not None and early.findtext(f"{NS}state") == "early"
    (invite,) = rang.received("INVITE ")
    assert early.get("call-id") == header(invite, "Call-ID")
    assert f"tag={early.get('remote-tag')}" in header(invite, "From")
    ringing = [m for m in rang.sent("SIP/2.0 180") if m]
    assert f"tag={early.get('local-tag')}" in header(ringing[0], "To")
    # Bob's second INVITE (the first was challenged) carried that Replaces, and got 200.
    pickups = picker.sent("INVITE ")
    assert len(pickups) == 2
    assert header(pickups[1], "Replaces") == (
        f"{early.get('call-id')};to-tag={early.get('remote-tag')};"
        f"from-tag={early.get('local-tag')};early-only"
    )
    # The caller was answered, by bob's phone through the relay: not at bob's own media port.
    answers = [m for m in caller.received("SIP/2.0 200 ") if "INVITE" in header(m, "CSeq")]
    assert answers and "m=audio " in answers[0]
    assert f"m=audio {picker.media_port} " not in answers[0]
    assert f"m=audio {rang.media_port} " not in answers[0]
    # Alice's phone never answered: its only 200 is the CANCEL's.
    assert [header(m, "CSeq").split()[1] for m in rang.sent("SIP/2.0 200 ")] == ["CANCEL"]
    # Alice's phone was CANCELled, told the call was completed elsewhere.
    (cancel,) = rang.received("CANCEL ")
    assert header(cancel, "Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    # The trunk's BYE reached bob's phone.
    (bye,) = picker.received("BYE ")
    assert header(bye, "Call-ID") == header(pickups[1], "Call-ID")


@pytest.mark.parametrize("code", ["*8", "**alice"])
def test_a_phone_without_blf_picks_up_by_dialling_a_feature_code(tmp_path: Path, code: str) -> None:
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk() + PICKUP) as gw:
        alice = SippUas("calls/uas_ring_until_answered_elsewhere.xml", workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        with alice, ThreadPoolExecutor(max_workers=1) as pool:
            calling = pool.submit(
                trunk_call, "uac_call.xml", gw, tmp_path, call_duration_ms=300, timeout=30
            )
            _until_ringing(alice)
            picker = run_sipp_uac(
                "calls/uac_dial_pickup_code.xml",
                gw.address,
                workdir=tmp_path,
                service=code,
                caller="bob",
                auth=BOB,
                timeout=30,
            )
            caller = calling.result(timeout=60)
            rang = alice.wait(timeout=10)
        picker.check()
        caller.check()
        rang.check()
        gw.wait_for_log(r"bob picks up the call ringing alice")

    # The caller was answered by bob's phone through the relay.
    answers = [m for m in caller.received("SIP/2.0 200 ") if "INVITE" in header(m, "CSeq")]
    assert answers and "m=audio " in answers[0]
    assert f"m=audio {picker.media_port} " not in answers[0]
    # Alice's phone was CANCELled, told the call was completed elsewhere; it never answered.
    (cancel,) = rang.received("CANCEL ")
    assert header(cancel, "Reason") == 'SIP;cause=200;text="Call completed elsewhere"'
    assert [header(m, "CSeq").split()[1] for m in rang.sent("SIP/2.0 200 ")] == ["CANCEL"]
    # Bob dialled the code (no Replaces) and the trunk's BYE reached him.
    invites = picker.sent("INVITE ")
    assert len(invites) == 2 and invites[1].startswith(f"INVITE sip:{code}@")
    assert "Replaces" not in invites[1]
    (bye,) = picker.received("BYE ")
    assert header(bye, "Call-ID") == header(invites[1], "Call-ID")
