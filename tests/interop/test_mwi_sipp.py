"""Message waiting through the gateway against sipp (RFC 3842, RFC 6665): one sipp is the
phone (alice, digest-authenticated), another on 127.0.0.2 the voicemail platform of a trunk
with ``voicemail = true``. The phone's SUBSCRIBE reaches the platform as the gateway's own, for
alice's DID there; the platform's NOTIFY reaches the phone with its summary; the phone's
unsubscribe reaches the platform, whose terminated NOTIFY reaches the phone. A phone that
reboots and subscribes again from the same Contact has its old subscription closed at the
platform, whose final NOTIFY for it is answered 200 and not relayed; when the platform refuses
that unsubscribe, its later NOTIFYs in the old subscription are answered 200 too.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, SippUas, free_port_pair, run_sipp_uac
from tests.interop.sipp_calls import ACCOUNTS, ALICE, DID, TRUNK_IP, inbound_trunk, register
from tests.interop.voicemail_trunks import voicemail_trunk

pytestmark = pytest.mark.interop


def test_a_phone_subscribes_to_its_mailbox_on_the_voicemail_trunk(tmp_path: Path) -> None:
    platform = SippUas("calls/uas_voicemail.xml", workdir=tmp_path, local_ip=TRUNK_IP)
    trunk = voicemail_trunk(platform.port)
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


def test_a_carrier_message_and_unsolicited_notify_reach_the_registered_phone(
    tmp_path: Path,
) -> None:
    alice = SippUas("calls/uas_message_or_notify.xml", workdir=tmp_path, calls=2)
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            run_sipp_uac(
                "calls/uac_message_and_notify.xml",
                gw.address,
                workdir=tmp_path,
                local_ip=TRUNK_IP,
                caller="+15550100",
                keys={"did": DID},
            ).check()
            received = alice.wait(timeout=10)
    received.check()
    (message,) = received.received("MESSAGE ")
    assert message.startswith(f"MESSAGE sip:alice@127.0.0.1:{alice.port}"), message
    assert "Hello from the carrier" in message and "Content-Type: text/plain" in message
    assert "From: <sip:+15550100@127.0.0.1:" in message
    (notify,) = received.received("NOTIFY ")
    assert "Messages-Waiting: yes" in notify and "Event: message-summary" in notify


def wait_for_first_notify(workdir: Path, timeout: float = 10.0) -> None:
    """Poll the phone's message trace until it has answered its first NOTIFY."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for trace in workdir.glob("sipp-*-uac-uac_subscribe_mwi_stop/messages.log"):
            text = trace.read_text(errors="replace")
            if "NOTIFY sip:" in text and text.count("SIP/2.0 200 OK") >= 2:
                return  # the gateway's 200 to the SUBSCRIBE, then sipp's to the NOTIFY
        time.sleep(0.05)
    raise AssertionError("the phone got no NOTIFY")


def test_a_gateway_stop_ends_the_subscription_at_the_phone_and_the_trunk(tmp_path: Path) -> None:
    """SIGTERM while alice is subscribed: her final NOTIFY is ``deactivated`` (RFC 6665 §4.2.2)
    and repeats the last summary (RFC 3842); the platform gets the unsubscribe and its own final
    NOTIFY is answered 200 (uas_voicemail.xml checks it), not 481."""
    platform = SippUas("calls/uas_voicemail.xml", workdir=tmp_path, local_ip=TRUNK_IP)
    with platform:
        gw = GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=voicemail_trunk(platform.port))
        with gw, ThreadPoolExecutor(max_workers=1) as pool:
            subscribed = pool.submit(
                run_sipp_uac,
                "calls/uac_subscribe_mwi_stop.xml",
                gw.address,
                workdir=tmp_path,
                service="alice",
                auth=ALICE,
                timeout=20,
            )
            wait_for_first_notify(tmp_path)
            assert gw.stop() == 0
            phone = subscribed.result(timeout=30)
        served = platform.wait(timeout=10)
    phone.check()
    served.check()  # its final NOTIFY was answered 200
    first, last = phone.received("NOTIFY ")
    assert "Subscription-State: active" in first
    assert "Subscription-State: terminated;reason=deactivated" in last
    assert "Voice-Message: 2/8 (0/2)" in last  # the summary the platform sent
    assert "Expires: 0" in served.received("SUBSCRIBE ")[-1]


def test_a_rebooted_phones_old_subscription_is_closed_at_the_trunk(tmp_path: Path) -> None:
    """alice's phone subscribes, then reboots (its sipp ends without unsubscribing) and
    subscribes again from the same Contact (the same port): the old subscription is
    unsubscribed at the platform, whose final NOTIFY is answered 200 (uas_voicemail.xml checks
    it), not 481, and not relayed to the phone; the new one runs as usual."""
    platform = SippUas("calls/uas_voicemail.xml", workdir=tmp_path, local_ip=TRUNK_IP, calls=2)
    phone_port = free_port_pair()  # the phone's Contact, before and after its reboot
    with platform:
        trunk = voicemail_trunk(platform.port)
        with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=trunk) as gw:
            before = run_sipp_uac(
                "calls/uac_subscribe_mwi_reboot.xml",
                gw.address,
                workdir=tmp_path,
                service="alice",
                auth=ALICE,
                port=phone_port,
            )
            before.check()
            after = run_sipp_uac(
                "calls/uac_subscribe_mwi.xml",
                gw.address,
                workdir=tmp_path,
                service="alice",
                auth=ALICE,
                port=phone_port,
            )
            after.check()
            served = platform.wait(timeout=10)
            log = gw.log_text()
    served.check()  # both subscriptions' final NOTIFYs were answered 200
    assert f"subscription of alice from sip:alice@127.0.0.1:{phone_port}" in log
    assert "replaced by a new one" in log
    unsubscribes = [m for m in served.received("SUBSCRIBE ") if "Expires: 0" in m]
    assert len(unsubscribes) == 2  # the old one's at the reboot, the new one's by the phone
    # The rebooted phone had its new subscription's NOTIFYs only, not the old one's last.
    first, last = after.received("NOTIFY ")
    assert "Subscription-State: active" in first
    assert "Subscription-State: terminated;reason=timeout" in last


def test_a_replaced_subscription_the_platform_keeps_answers_its_late_notifies(
    tmp_path: Path,
) -> None:
    """As above, but the platform refuses the old subscription's unsubscribe (500): it still
    exists there (RFC 6665 §4.1.2.2), and the NOTIFYs it sends in it a second later, its
    final one included, are answered 200 (uas_voicemail_refusing_unsubscribe.xml checks it),
    not 481 (§4.2.2), and not relayed to the phone."""
    platform = SippUas(
        "calls/uas_voicemail_refusing_unsubscribe.xml",
        workdir=tmp_path,
        local_ip=TRUNK_IP,
        calls=2,
    )
    phone_port = free_port_pair()
    with platform:
        trunk = voicemail_trunk(platform.port)
        with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=trunk) as gw:
            before = run_sipp_uac(
                "calls/uac_subscribe_mwi_reboot.xml",
                gw.address,
                workdir=tmp_path,
                service="alice",
                auth=ALICE,
                port=phone_port,
            )
            before.check()
            after = run_sipp_uac(
                "calls/uac_subscribe_mwi.xml",
                gw.address,
                workdir=tmp_path,
                service="alice",
                auth=ALICE,
                port=phone_port,
            )
            after.check()
            served = platform.wait(timeout=10)
            log = gw.log_text()
    served.check()  # the old one's late NOTIFYs and the new one's final NOTIFY answered 200
    assert "answered 500 to unsubscribing alice's replaced subscription" in log
    assert [m for m in served.received("SIP/2.0 ") if m.startswith("SIP/2.0 481")] == []
    # The phone had its new subscription's NOTIFYs only, not the old one's late ones.
    first, last = after.received("NOTIFY ")
    assert "Messages-Waiting: yes" in first
    assert "Subscription-State: terminated;reason=timeout" in last
