"""A PSAP callback (RFC 7090) through ``voipgw run`` between sipp peers.

A phone (sipp, account alice) calls 112; the emergency trunk (sipp on 127.0.0.1, serving 112,
recognising nobody) answers and gets alice's DID as the calling number. The emergency service
then calls back from its carrier (sipp on 127.0.0.2, the inbound trunk "pbx") with
``Priority: psap-callback`` (calls/uac_call_psap_callback.xml): the gateway takes it for the
callback of that emergency call and alice's phone gets the marking, which it would not for an
ordinary call (the gateway never copies a caller's Priority: components test that and the
limits a callback gets past).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, SippUas, run_sipp_uac
from tests.interop.sipp_calls import (
    ACCOUNTS,
    DID,
    TRUNK_IP,
    account_call,
    header,
    inbound_trunk,
    register,
)

pytestmark = pytest.mark.interop


def emergency_trunk(trunk: SippUas) -> str:
    """The trunk for 112; alice is known there by her DID."""
    return (
        "[[trunks]]\n"
        'name = "emergency"\n'
        f'address = "{trunk.config_address}"\n'
        'prefixes = ["112"]\n'
        "allowed_sources = []\n"
        f'dids = {{"{DID}" = "alice"}}\n'
    )


def test_the_emergency_services_callback_reaches_the_phone_marked(tmp_path: Path) -> None:
    alice = SippUas("uas_answer.xml", workdir=tmp_path)
    with (
        SippUas("uas_answer.xml", workdir=tmp_path) as psap,
        GatewayProcess(
            tmp_path,
            accounts=ACCOUNTS,
            extra_toml=emergency_trunk(psap) + inbound_trunk(),
            # The callback the test makes is said at WARNING (it bypasses the call limits).
            allowed_warnings=[r"PSAP callback from trunk pbx to \S+: served like an emergency"],
        ) as gw,
    ):
        account_call("uac_call_auth.xml", gw, tmp_path, service="112").check()
        (emergency_invite,) = psap.wait(timeout=10).received("INVITE ")
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            run_sipp_uac(
                "calls/uac_call_psap_callback.xml",
                gw.address,
                workdir=tmp_path,
                service=DID,
                caller="112",
                local_ip=TRUNK_IP,
            ).check()
            (phone_invite,) = alice.wait(timeout=10).received("INVITE ")
        log = gw.log_text()

    assert header(emergency_invite, "From").startswith(f"<sip:{DID}@"), emergency_invite
    assert header(phone_invite, "Priority") == "psap-callback", phone_invite
    assert f"emergency call presented {DID} on trunk emergency" in log
    assert f"PSAP callback from trunk pbx to {DID}: served like an emergency call" in log
    assert "Traceback" not in log
