"""The end of an injected digit that a change of plan cuts short, through ``voipgw run``
against sipp: the calling trunk (sipp on 127.0.0.2, calls/uac_call_dtmf_replan.xml) offers
telephone-event 101; alice's phone (sipp, calls/uas_answer_info_then_events.xml) answers
with PCMU only and presses a long 7 by SIP INFO (2 s), which the gateway sends to the trunk
as RFC 4733 events. 500 ms after its ACK the trunk re-INVITEs and alice answers with
telephone-event: both legs have it, the interworking ends mid-digit, and the gateway ends the
7 at the trunk with its final packet three times (docs/architecture.md "When the plan changes
mid-call").

RFC 4733 §2.5.1.4: the final packet is sent three times "at the interval used by the source
for updates" (50 ms, the interval of the updates the gateway sent before it), so that one
burst of loss does not take all three. Read off a capture by tshark: the three end packets of
the 7 (E bit, the event's timestamp), each about 50 ms after the one before, not back to
back; the trunk's sequence numbers on by one across them. With ``[media] workers = 2`` the
same happens in a media worker."""

from __future__ import annotations

import itertools
import struct
from pathlib import Path

import pytest

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

TRUNK_SSRC, ALICE_SSRC = 0x7A0C0303, 0xA11CE000
UPDATE_INTERVAL = 0.05  # the gateway's (gateway/core/media/dtmf.py), as Asterisk's and FreeSWITCH's


def trunk_audio() -> list[bytes]:
    """1.6 s of the trunk's PCMU, 20 ms a packet: the call's media while alice presses 7."""
    return [
        struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, TRUNK_SSRC) + b"\xff" * 160
        for seq in range(80)
    ]


def alice_audio() -> list[bytes]:
    return [
        struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, ALICE_SSRC) + b"\xff" * 160
        for seq in range(5)
    ]


@pytest.mark.parametrize("workers", [1, 2], ids=["in-process", "media-workers"])
def test_the_end_of_a_digit_cut_by_a_change_is_sent_three_times_spaced(
    tmp_path: Path, workers: int
) -> None:
    with GatewayProcess(
        tmp_path,
        accounts=ACCOUNTS,
        extra_toml=inbound_trunk(),
        settings={"media": {"workers": workers}},
    ) as gw:
        alice = SippUas("calls/uas_answer_info_then_events.xml", workdir=tmp_path, timeout=20)
        (alice.rundir / "alice_audio.pcap").write_bytes(pcap_of(alice_audio()))
        register(gw, tmp_path, "udp", alice.port)
        capture_filter = udp_filter(gw.media_ports, alice.port)
        with alice, Capture(tmp_path / "ends.pcap", capture_filter) as capture:
            caller = run_sipp_uac(
                "calls/uac_call_dtmf_replan.xml",
                gw.address,
                workdir=tmp_path,
                service=DID,
                caller="+4940777",
                local_ip=TRUNK_IP,
                call_duration_ms=2500,
                files={"dtmf_replan.pcap": pcap_of(trunk_audio())},
            )
            caller.check()  # its 200s kept telephone-event 101
            answered = alice.wait(timeout=15)
            answered.check()  # her INFO answered 200, the re-INVITE answered with 101
            capture.stop()
        log = gw.log_text()

    low, high = gw.media_ports
    ports = [*range(low, high + 1), caller.media_port, answered.media_port]
    events = events_to(capture.path, ports, caller.media_port, extra=("frame.time_relative",))
    sevens = [e for e in events if e[4] == "7"]
    assert sevens, "the 7 never reached the trunk as events"
    assert len({e[2] for e in sevens}) == 1  # one event, one timestamp
    assert int(sevens[0][0]) == 1  # its first packet with the marker (RFC 4733 §2.5.1.2)
    ends = [e for e in sevens if e[5] == "1"]
    assert len(ends) == 3, ends  # the final packet three times, no more
    assert sevens[-3:] == ends  # nothing of it after its end
    assert len({e[6] for e in ends}) == 1  # the same final packet: the duration reached
    assert int(ends[0][6]) < 2000 * 8  # cut short by the change, before 2 s
    times = [float(e[7]) for e in ends]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    # "at the interval used by the source for updates" (RFC 4733 §2.5.1.4): about 50 ms.
    assert min(gaps) >= UPDATE_INTERVAL * 0.6, gaps
    assert max(gaps) <= UPDATE_INTERVAL * 6, gaps  # not left to a later event
    # RFC 3550 §5.1: the trunk hears alice's SSRC numbered on by one, events and audio alike.
    to_trunk = [
        p
        for p in rtp_packets(capture.path, ports)
        if int(p["dstport"]) == caller.media_port and int(p["ssrc"], 16) == ALICE_SSRC
    ]
    sequences = [int(p["seq"]) for p in to_trunk]
    assert sequences == list(range(sequences[0], sequences[0] + len(sequences))), sequences
    assert "DTMF interworking ended, leg a RFC 4733 (payload type 101/8000), leg b SIP INFO" in log
    assert "Traceback" not in log
