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
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_peer
from tests.interop.harness import (
    LOOPBACK,
    Capture,
    GatewayProcess,
    SippUas,
    rtp_packets,
    run_sipp_uac,
    udp_filter,
)
from tests.interop.sipp_calls import ACCOUNTS, DID, TRUNK_IP, inbound_trunk, register
from tests.interop.t38_pcaps import pcap_of
from tests.interop.test_pickup_payload_types_sipp import key_press

pytestmark = pytest.mark.interop

TRUNK_SSRC, ALICE_SSRC = 0x7A0C0101, 0xA11CE000
ALICE_AUDIO = 5


def alice_audio() -> list[bytes]:
    return [
        struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, ALICE_SSRC) + b"\xff" * 160
        for seq in range(ALICE_AUDIO)
    ]


def events_to(pcap: Path, ports: list[int], port: int) -> list[list[str]]:
    """RFC 4733 packets (payload type 101) the relay sent to ``port``: marker, seq, timestamp,
    SSRC, event, end bit, duration, as tshark's rtpevent decodes them."""
    args = [require_peer("tshark"), "-n", "-r", str(pcap)]
    for p in ports:
        args += ["-d", f"udp.port=={p},rtp"]
    args += ["-o", "rtpevent.event_payload_type_value:101"]
    args += ["-Y", f"rtpevent && udp.dstport == {port} && ip.src == {LOOPBACK}", "-T", "fields"]
    for field in (
        "rtp.marker",
        "rtp.seq",
        "rtp.timestamp",
        "rtp.ssrc",
        "rtpevent.event_id",
        "rtpevent.end_of_event",
        "rtpevent.duration",
    ):
        args += ["-e", field]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [line.split("\t") for line in result.stdout.splitlines() if line]


def assert_digits_crossed(
    pcap: Path,
    ports: list[int],
    info: str,
    *,
    info_port: int,
    event_ssrc: int,
    events_port: int,
    info_ssrc: int,
) -> None:
    """Both ways of one call's interworking, as the captures and traces saw it: the RFC 4733
    side's key press (digit 5, 80 ms, SSRC ``event_ssrc``) reached the INFO side (its media at
    ``info_port``) as one ``info`` (Signal=5, Duration=80) and as none of its event packets,
    only its audio (payload type 0); the INFO side's digit 7 reached the RFC 4733 side (media at
    ``events_port``) as events in the INFO side's own stream (SSRC ``info_ssrc``): a start and
    three ends (RFC 4733 §2.5), sequence numbers on from its five audio packets, one
    timestamp, 100 ms."""
    # 640 units at 8000 Hz; the trace shows lines with LF, the length counts CRLF ones.
    assert "Content-Length: 23\n\nSignal=5\nDuration=80\n" in info.replace("\r\n", "\n")
    to_info_side = [
        p
        for p in rtp_packets(pcap, ports)
        if int(p["dstport"]) == info_port and int(p["ssrc"], 16) == event_ssrc
    ]
    # (With workers the first audio packet may meet a stream its worker has not unblocked yet.)
    payload_types = [int(p["payload_type"]) for p in to_info_side]
    assert payload_types and set(payload_types) == {0}
    events = events_to(pcap, ports, events_port)
    assert [e[0] for e in events] == ["1", "0", "0", "0"]  # a start, three ends (100 ms)
    assert [int(e[1]) for e in events] == [5, 6, 7, 8]  # on from its audio (0..4)
    assert len({e[2] for e in events}) == 1  # one timestamp for the event
    assert {int(e[3], 16) for e in events} == {info_ssrc}
    assert {e[4] for e in events} == {"7"}
    assert [e[5] for e in events] == ["0", "1", "1", "1"]
    assert events[-1][6] == "800"


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
