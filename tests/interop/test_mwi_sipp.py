"""Message waiting through the gateway against sipp (RFC 3842, RFC 6665): one sipp is the
phone (alice, digest-authenticated), another on 127.0.0.2 the voicemail platform of a trunk
with ``voicemail = true``. The phone's SUBSCRIBE reaches the platform as the gateway's own, for
alice's DID there; the platform's NOTIFY reaches the phone with its summary; the phone's
unsubscribe reaches the platform, whose terminated NOTIFY reaches the phone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, SippUas, run_sipp_uac
from tests.interop.test_calls_sipp import ACCOUNTS, ALICE, DID, TRUNK_IP

pytestmark = pytest.mark.interop


def test_a_phone_subscribes_to_its_mailbox_on_the_voicemail_trunk(tmp_path: Path) -> None:
    platform = SippUas("calls/uas_voicemail.xml", workdir=tmp_path, local_ip=TRUNK_IP)
    trunk = (
        "[[trunks]]\n"
        'name = "voicemail"\n'
        f'address = "udp:{TRUNK_IP}:{platform.port}"\n'
        f'allowed_sources = ["{TRUNK_IP}"]\n'
        "voicemail = true\n"
        f'dids = {{"{DID}" = "alice"}}\n'
    )
    with platform:
        with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=trunk) as gw:
            phone = run_sipp_uac(
                "calls/uac_subscribe_mwi.xml",
                gw.address,
                workdir=tmp_path,
                service="alice",
                auth=ALICE,
            )
            phone.check()
            gw.wait_for_log(r"subscription of alice to message-summary on trunk voicemail")
        served = platform.wait(timeout=10)
    served.check()
    subscribe, unsubscribe = served.received("SUBSCRIBE ")
    assert subscribe.startswith(f"SUBSCRIBE sip:{DID}@{TRUNK_IP}:{platform.port}"), subscribe
    assert "Event: message-summary" in subscribe and "Expires: 600" in subscribe
    assert "alice" not in subscribe.split("\n", 1)[0]
    assert "Expires: 0" in unsubscribe
    first, last = phone.received("NOTIFY ")
    assert first.startswith("NOTIFY sip:alice@127.0.0.1:"), first
    assert "Messages-Waiting: yes" in first and "Voice-Message: 2/8 (0/2)" in first
    assert "Content-Type: application/simple-message-summary" in first
    assert "Subscription-State: terminated;reason=timeout" in last
