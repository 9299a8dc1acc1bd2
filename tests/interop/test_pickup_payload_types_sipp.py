"""Call pickup between phones that number telephone-event differently, through ``voipgw run``
against sipp: the calling trunk (sipp on 127.0.0.2) numbers it 101, bob's phone (sipp) 96. Bob
picks up the call ringing alice (RFC 3891 Replaces, as tests/interop/test_pickup_sipp.py); each
is answered in its own numbers (RFC 3264 §6.1, checked by the scenarios), and each replays a
pcap of audio and a key press (RFC 4733) with sipp's play_pcap_audio. A capture of the relay's
ports, decoded by tshark, shows that each phone got the other's packets with its own numbers:
the relay renumbered telephone-event per direction, and left PCMU (0) as it was.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.interop.harness import (
    LOOPBACK,
    Capture,
    GatewayProcess,
    SippUas,
    rtp_packets,
    run_sipp_uac,
    udp_filter,
)
from tests.interop.pickup_key_press import AUDIO_PACKETS, EVENT_PACKETS, key_press
from tests.interop.pickup_sipp import PICKUP
from tests.interop.sipp_calls import ACCOUNTS, BOB, DID, TRUNK_IP, inbound_trunk, register
from tests.interop.t38_pcaps import pcap_of

pytestmark = pytest.mark.interop

TRUNK_SSRC, BOB_SSRC = 0x7A0C0101, 0xB0B00096


def arrived(packets: list[dict[str, str]], ssrc: int, port: int) -> list[tuple[int, str]]:
    """(payload type, marker) of each packet of ``ssrc`` the relay sent to ``port``."""
    return [
        (int(p["payload_type"]), p["marker"])
        for p in packets
        if int(p["ssrc"], 16) == ssrc and int(p["dstport"]) == port and p["src"] == LOOPBACK
    ]


def expected(payload_type: int) -> list[tuple[int, str]]:
    markers = ["1"] + ["0"] * (EVENT_PACKETS - 1)  # rtp.marker, as rtp_packets gives it
    return [(0, "0")] * AUDIO_PACKETS + [(payload_type, m) for m in markers]


def test_dtmf_reaches_each_phone_with_its_own_telephone_event_number(tmp_path: Path) -> None:
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk() + PICKUP) as gw:
        alice = SippUas("calls/uas_ring_until_answered_elsewhere.xml", workdir=tmp_path)
        register(gw, tmp_path, "udp", alice.port)
        media = udp_filter(gw.media_ports)
        with (
            alice,
            Capture(tmp_path / "dtmf.pcap", media) as capture,
            ThreadPoolExecutor(max_workers=1) as pool,
        ):
            picking = pool.submit(
                run_sipp_uac,
                "calls/uac_subscribe_dialog_pickup_dtmf.xml",
                gw.address,
                workdir=tmp_path,
                service="alice",
                caller="bob",
                auth=BOB,
                timeout=30,
                files={"dtmf96.pcap": pcap_of(key_press(96, BOB_SSRC))},
            )
            gw.wait_for_log(r"bob watches the calls of alice for 600 s")
            # The trunk, as test_calls_sipp.trunk_call, with its pcap; it holds the call long
            # enough for both key presses (9 packets, 20 ms apart) to cross the relay.
            caller = run_sipp_uac(
                "calls/uac_call_dtmf.xml",
                gw.address,
                workdir=tmp_path,
                service=DID,
                caller="+4940777",
                local_ip=TRUNK_IP,
                call_duration_ms=1500,
                files={"dtmf101.pcap": pcap_of(key_press(101, TRUNK_SSRC))},
            )
            caller.check()  # answered with telephone-event 101
            alice.wait(timeout=10).check()
            picker = picking.result(timeout=60)
            picker.check()  # answered with telephone-event 96
            capture.stop()
        gw.wait_for_log(r"bob picks up the call ringing alice")
        log = gw.log_text()

    low, high = gw.media_ports
    packets = rtp_packets(capture.path, [*range(low, high + 1)])
    # The trunk's key press reached bob's phone as 96, bob's reached the trunk as 101.
    assert arrived(packets, TRUNK_SSRC, picker.media_port) == expected(96)
    assert arrived(packets, BOB_SSRC, caller.media_port) == expected(101)
    assert "payload types renumbered" in log
    assert "Traceback" not in log
