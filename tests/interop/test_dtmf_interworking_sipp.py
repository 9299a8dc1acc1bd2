"""DTMF interworking through ``voipgw run`` against sipp: the calling trunk (sipp on 127.0.0.2)
offers telephone-event 101 and replays a key press (5) as RFC 4733 events from a pcap; alice's
phone (sipp, calls/uas_answer_info_dtmf.xml) answers with PCMU only, as a PBX that does SIP
INFO only. The trunk's answer must keep telephone-event 101 (its scenario checks); alice must
get one INFO ``application/dtmf-relay`` with ``Signal=5`` (her scenario checks it with a
regular expression) and never the event packets; her own INFO (Signal=7) must be answered 200
and reach the trunk as RFC 4733 events, read off a capture by tshark (rtpevent): the marker on
the first, one timestamp, the E bit on the last three, her audio's SSRC, sequence numbers on
from her audio's. With ``[media] workers = 2`` the same happens in a media worker.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.interop.dtmf_digits import assert_digits_crossed
from tests.interop.harness import (
    Capture,
    GatewayProcess,
    SippUas,
    rtp_packets,
    run_sipp_uac,
    udp_filter,
)
from tests.interop.pickup_key_press import key_press
from tests.interop.sipp_calls import ACCOUNTS, DID, TRUNK_IP, inbound_trunk, register
from tests.interop.t38_pcaps import pcap_of

pytestmark = pytest.mark.interop

TRUNK_SSRC, ALICE_SSRC = 0x7A0C0101, 0xA11CE000
ALICE_AUDIO = 5


def alice_audio() -> list[bytes]:
    return [
        struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, ALICE_SSRC) + b"\xff" * 160
        for seq in range(ALICE_AUDIO)
    ]


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "media-workers"])
def test_rfc4733_and_sip_info_digits_cross_between_the_legs(tmp_path: Path, workers: int) -> None:
    with GatewayProcess(
        tmp_path,
        accounts=ACCOUNTS,
        extra_toml=inbound_trunk(),
        settings={"media": {"workers": workers}},
    ) as gw:
        alice = SippUas("calls/uas_answer_info_dtmf.xml", workdir=tmp_path, timeout=20)
        (alice.rundir / "alice_audio.pcap").write_bytes(pcap_of(alice_audio()))
        register(gw, tmp_path, "udp", alice.port)
        with alice, Capture(tmp_path / "dtmf.pcap", udp_filter(gw.media_ports)) as capture:
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
            caller.check()  # answered with telephone-event 101 although alice has none
            answered = alice.wait(timeout=15)
            answered.check()  # got the INFO with Signal=5, her INFO answered 200
            capture.stop()
        log = gw.log_text()

    (info,) = answered.received("INFO ")
    low, high = gw.media_ports
    ports = [*range(low, high + 1), caller.media_port, answered.media_port]
    # The trunk's digit reached alice as INFO, her INFO digit the trunk as events.
    assert_digits_crossed(
        capture.path,
        ports,
        info,
        info_port=answered.media_port,
        event_ssrc=TRUNK_SSRC,
        events_port=caller.media_port,
        info_ssrc=ALICE_SSRC,
    )
    assert "DTMF interworking, leg a RFC 4733 (payload type 101/8000), leg b SIP INFO" in log
    assert "Traceback" not in log


def test_a_key_press_in_early_media_reaches_an_info_ivr_before_it_answers(
    tmp_path: Path,
) -> None:
    """Early media (RFC 3960): alice (calls/uas_early_media_info_dtmf.xml) answers the trunk's
    call with a 183 whose SDP has no telephone-event and wants the digit before her 200; the
    trunk (calls/uac_call_dtmf_early.xml) checks that the 183 it got keeps telephone-event 101
    and presses 5 at once. Her scenario checks the INFO came in her early dialog (her To tag)
    with Signal=5 before she answered; the capture shows she never got the event packets."""
    with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=inbound_trunk()) as gw:
        alice = SippUas("calls/uas_early_media_info_dtmf.xml", workdir=tmp_path, timeout=20)
        (alice.rundir / "alice_audio.pcap").write_bytes(pcap_of(alice_audio()))
        register(gw, tmp_path, "udp", alice.port)
        with alice, Capture(tmp_path / "early.pcap", udp_filter(gw.media_ports)) as capture:
            caller = run_sipp_uac(
                "calls/uac_call_dtmf_early.xml",
                gw.address,
                workdir=tmp_path,
                service=DID,
                caller="+4940777",
                local_ip=TRUNK_IP,
                call_duration_ms=300,
                files={"dtmf101.pcap": pcap_of(key_press(101, TRUNK_SSRC))},
            )
            caller.check()  # a 183 keeping telephone-event 101, then the 200
            answered = alice.wait(timeout=15)
            answered.check()  # the INFO (Signal=5) in her early dialog, before her 200
            capture.stop()
        log = gw.log_text()

    (info,) = answered.received("INFO ")
    assert "Content-Length: 23\n\nSignal=5\nDuration=80\n" in info.replace("\r\n", "\n")
    # Her messages in order: the 183, the INFO's 200, then her 200 to the INVITE.
    statuses = [
        m.split()[1] + " " + m.split("CSeq:")[1].split()[1] for m in answered.sent("SIP/2.0 ")
    ]
    assert statuses[:4] == ["100 INVITE", "183 INVITE", "200 INFO", "200 INVITE"]
    low, high = gw.media_ports
    ports = [*range(low, high + 1), caller.media_port, answered.media_port]
    to_alice = [
        int(p["payload_type"])
        for p in rtp_packets(capture.path, ports)
        if int(p["dstport"]) == answered.media_port and int(p["ssrc"], 16) == TRUNK_SSRC
    ]
    assert to_alice and set(to_alice) == {0}  # the audio, never the events
    assert "DTMF interworking, leg a RFC 4733 (payload type 101/8000), leg b SIP INFO" in log
    assert "Traceback" not in log
