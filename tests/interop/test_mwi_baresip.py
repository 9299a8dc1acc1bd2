"""Message waiting with a real phone: baresip (its ``mwi`` module subscribes to each registered
account's ``message-summary``, RFC 3842) registers as alice; sipp on 127.0.0.2 is the voicemail
platform of the trunk with ``voicemail = true``. baresip shows the platform's summary, and when
it quits, its unsubscribe reaches the platform, whose final NOTIFY reaches baresip. baresip
1.0.0 answers only MD5 digest challenges, so the gateway offers MD5 alone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, SippUas
from tests.interop.harness.baresip import Baresip
from tests.interop.sipp_calls import DID, TRUNK_IP
from tests.interop.voicemail_trunks import voicemail_trunk

pytestmark = pytest.mark.interop


def test_baresip_shows_the_voicemail_platforms_summary(tmp_path: Path) -> None:
    platform = SippUas("calls/uas_voicemail.xml", workdir=tmp_path, local_ip=TRUNK_IP)
    trunk = voicemail_trunk(platform.port)
    with platform:
        with GatewayProcess(
            tmp_path,
            accounts={"alice": "wonderland"},
            extra_toml=trunk,
            digest_algorithms=("MD5",),
        ) as gw:
            aor = f"sip:alice@127.0.0.1:{gw.port}"
            with Baresip(
                tmp_path, "alice", extra_config="module_app\t\tmwi.so\n", sip_trace=True
            ) as alice:
                alice.register(aor, "wonderland")
                alice.wait_for(r"----- MWI for sip:alice@127\.0\.0\.1:\d+ -----")
                shown = alice.output().split("----- MWI for", 1)[1]
                assert "Voice-Message: 2/8 (0/2)" in shown.split("\n\n", 1)[0]
            # baresip quit: its unsubscribe went through, the platform's final NOTIFY came back.
            notifies = [entry.message for entry in alice.sip_messages("NOTIFY ")]
            assert len(notifies) == 2, notifies
            assert "Subscription-State: active;expires=600" in notifies[0]
            assert "Subscription-State: terminated;reason=timeout" in notifies[1]
        served = platform.wait(timeout=10)
    served.check()
    subscribe, unsubscribe = served.received("SUBSCRIBE ")
    assert subscribe.startswith(f"SUBSCRIBE sip:{DID}@{TRUNK_IP}:{platform.port}"), subscribe
    assert "Expires: 0" in unsubscribe
