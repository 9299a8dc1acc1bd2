"""DTMF interworking that begins mid key press, through ``voipgw run`` against sipp: the
calling trunk (sipp on 127.0.0.2, calls/uac_call_dtmf_replan.xml) offers telephone-event 101,
alice's phone (sipp, calls/uas_answer_events_then_info.xml) takes it, so the trunk's events
reach her as they come. The trunk replays a long press of 5 as RFC 4733 events from a pcap
and, 500 ms into it, re-INVITEs; alice answers with PCMU only (she does INFO from then on):
the interworking begins mid-event (docs/architecture.md "When the plan changes mid-call").

What alice gets must make sense to a receiver (RFC 4733 §2.5.1.4, §2.5.2; RFC 3550 §5.1): the
5 she began to hear goes on to her to its end (its three end packets, E bit, the event's
timestamp), and is not sent again as an INFO; the trunk's next press (9) comes as one INFO
(her scenario checks there is exactly that one) and never as events; and the sequence numbers
she hears go on by one a packet across the change, though the relay takes the 9's packets
out of her stream (never backwards, never a gap). Read off a capture by tshark. With
``[media] workers = 2`` the same happens in a media worker."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_peer
from tests.interop.dtmf_digits import events_to
from tests.interop.harness import (
    Capture,
    GatewayProcess,
    SippUas,
    rtp_packets,
    run_sipp_uac,
    udp_filter,
)
from tests.interop.sipp_calls import ACCOUNTS, DID, TRUNK_IP, inbound_trunk, register
from tests.interop.t38_pcaps import pcap_of

pytestmark = pytest.mark.interop

TRUNK_SSRC, ALICE_SSRC = 0x7A0C0202, 0xA11CE000
HELD_UPDATES = 60  # 5 held 1.22 s (20 ms a packet): the re-INVITE comes 500 ms in


def rtp(sequence: int, payload_type: int, timestamp: int, payload: bytes, *, marker: bool) -> bytes:
    second = payload_type | (0x80 if marker else 0)
    return struct.pack("!BBHII", 0x80, second, sequence, timestamp, TRUNK_SSRC) + payload


def key_presses() -> list[bytes]:
    """The trunk's RTP, 20 ms a packet (RFC 4733 §2.5: the first packet of an event with the
    marker bit, one timestamp for the event, the last three with the E bit and the final
    duration): 5 audio packets, 5 held (a start, updates, three ends), 10 audio packets,
    9 pressed briefly (a start, three ends), 10 audio packets."""
    packets: list[bytes] = []

    def audio(count: int) -> None:
        for _ in range(count):
            sequence = len(packets)
            packets.append(rtp(sequence, 0, 160 * sequence, b"\xff" * 160, marker=False))

    def press(digit: int, updates: int) -> None:
        start = 160 * len(packets)
        for n in range(updates + 1):
            event = struct.pack("!BBH", digit, 10, 160 * (n + 1))
            packets.append(rtp(len(packets), 101, start, event, marker=n == 0))
        for _ in range(3):
            event = struct.pack("!BBH", digit, 0x80 | 10, 160 * (updates + 2))
            packets.append(rtp(len(packets), 101, start, event, marker=False))

    audio(5)
    press(5, HELD_UPDATES)
    audio(10)
    press(9, 0)
    audio(10)
    return packets


def alice_audio() -> list[bytes]:
    return [
        struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, ALICE_SSRC) + b"\xff" * 160
        for seq in range(5)
    ]


def frames(pcap: Path, ports: list[int], sip_port: int, display_filter: str) -> list[int]:
    """The frame numbers of the packets ``display_filter`` matches (``ports`` read as RTP with
    telephone-event 101, ``sip_port`` as SIP)."""
    args = [require_peer("tshark"), "-n", "-r", str(pcap), "-d", f"udp.port=={sip_port},sip"]
    for port in ports:
        args += ["-d", f"udp.port=={port},rtp"]
    args += ["-o", "rtpevent.event_payload_type_value:101"]
    args += ["-Y", display_filter, "-T", "fields", "-e", "frame.number"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return [int(line) for line in result.stdout.split()]


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "media-workers"])
def test_an_event_held_across_the_start_of_the_interworking_ends_at_the_phone(
    tmp_path: Path, workers: int
) -> None:
    with GatewayProcess(
        tmp_path,
        accounts=ACCOUNTS,
        extra_toml=inbound_trunk(),
        settings={"media": {"workers": workers}},
    ) as gw:
        alice = SippUas("calls/uas_answer_events_then_info.xml", workdir=tmp_path, timeout=20)
        (alice.rundir / "alice_audio.pcap").write_bytes(pcap_of(alice_audio()))
        register(gw, tmp_path, "udp", alice.port)
        capture_filter = udp_filter(gw.media_ports, alice.port)
        with alice, Capture(tmp_path / "replan.pcap", capture_filter) as capture:
            caller = run_sipp_uac(
                "calls/uac_call_dtmf_replan.xml",
                gw.address,
                workdir=tmp_path,
                service=DID,
                caller="+4940777",
                local_ip=TRUNK_IP,
                call_duration_ms=2500,
                files={"dtmf_replan.pcap": pcap_of(key_presses())},
            )
            caller.check()  # the re-INVITE's 200 kept telephone-event 101 for it
            answered = alice.wait(timeout=15)
            answered.check()  # one INFO, Signal=9; her re-INVITE answer without 101
            capture.stop()
        log = gw.log_text()

    (info,) = answered.received("INFO ")
    assert "Signal=9" in info and "Signal=5" not in info
    low, high = gw.media_ports
    ports = [*range(low, high + 1), caller.media_port, answered.media_port]
    to_alice = [
        p
        for p in rtp_packets(capture.path, ports)
        if int(p["dstport"]) == answered.media_port and int(p["ssrc"], 16) == TRUNK_SSRC
    ]
    # RFC 3550 §5.1: one a packet, across the change and the four packets of 9 taken out.
    sequences = [int(p["seq"]) for p in to_alice]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), sequences
    events = events_to(capture.path, ports, answered.media_port)
    assert {e[4] for e in events} == {"5"}  # the 9 went as INFO only
    assert len({e[2] for e in events}) == 1  # one event, one timestamp
    assert [e[5] for e in events[-3:]] == ["1", "1", "1"]  # its end reached her
    assert events[-1][6] == str(160 * (HELD_UPDATES + 2))
    # The change came while 5 was held: packets of it reached her before and after alice's
    # answer to the re-INVITE (the second 200 to an INVITE she sent), its end among the after.
    answers = frames(
        capture.path,
        ports,
        alice.port,
        f"sip.Status-Code == 200 && sip.CSeq.method == INVITE && udp.srcport == {alice.port}",
    )
    assert len(answers) >= 2
    changed = answers[-1]
    held = frames(
        capture.path,
        ports,
        alice.port,
        f"rtpevent && udp.dstport == {answered.media_port} && rtpevent.event_id == 5",
    )
    assert held[0] < changed < held[-3]
    assert "DTMF interworking, leg a RFC 4733 (payload type 101/8000), leg b SIP INFO" in log
    assert "ended as its interworking changed" not in log
    assert "Traceback" not in log
