"""A sipp call through ``voipgw run`` with ``[media] workers = 2``: RTP relayed by a worker.

The same call as test_calls_sipp.py's first test (a sipp account calls a sipp trunk, 2 s of
tone echoed back, UDP), against a gateway whose relay runs in two worker processes. The capture
shows the four hops through the gateway's ports with SSRC and sequence numbers kept; both of
the call's ports come from one worker's half of the range; the workers are children of the
gateway and are gone once it has stopped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.harness import (
    LOOPBACK,
    Capture,
    GatewayProcess,
    SippUas,
    rtp_packets,
    rtp_streams,
    run_sipp_uac,
    tone_ulaw,
    udp_filter,
)
from tests.interop.harness.processes import process_gone

pytestmark = pytest.mark.interop

ALICE = ("alice", "wonderland")
TRUNK_NUMBER = "+4989555"


def sdp_connection(message: str) -> tuple[str, int]:
    address = re.search(r"^c=IN IP4 (\S+)$", message, re.MULTILINE)
    port = re.search(r"^m=audio (\d+) ", message, re.MULTILINE)
    assert address is not None and port is not None, f"no SDP in:\n{message}"
    return address[1], int(port[1])


def children(pid: int) -> dict[int, str]:
    """The live child processes of ``pid`` and their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = cmdline
    return found


def test_a_call_with_two_media_workers_relays_rtp(tmp_path: Path) -> None:
    tone = tone_ulaw(tmp_path / "tone.ulaw", 1000, seconds=2)  # 100 packets of 20 ms
    trunk_toml = (
        "[[trunks]]\n"
        'name = "carrier"\n'
        'address = "{address}"\n'
        'prefixes = ["+49"]\n'
        "allowed_sources = []\n"
    )
    with SippUas("uas_answer.xml", workdir=tmp_path, transport="udp", rtp_echo=True) as trunk:
        gw = GatewayProcess(
            tmp_path,
            accounts=dict([ALICE]),
            settings={"media": {"workers": 2}},
            extra_toml=trunk_toml.format(address=trunk.config_address),
        )
        with gw:
            assert gw.process is not None
            workers = {
                pid: cmdline
                for pid, cmdline in children(gw.process.pid).items()
                if "gateway.core.media.worker" in cmdline
            }
            assert len(workers) == 2, children(gw.process.pid)
            media = udp_filter(gw.media_ports, trunk.media_port)
            with Capture(tmp_path / "call.pcap", media) as capture:
                caller = run_sipp_uac(
                    "calls/uac_call_auth_rtp.xml",
                    gw.address,
                    workdir=tmp_path,
                    transport="udp",
                    service=TRUNK_NUMBER,
                    caller=ALICE[0],
                    auth=ALICE,
                    rtp_file=tone,
                )
            caller.check()
            callee = trunk.wait(timeout=10)
            callee.check()
    assert gw.returncode == 0
    # Stopping the gateway stopped its workers.
    assert all(process_gone(pid) for pid in workers)

    (invite,) = callee.received("INVITE ")
    answer = next(m for m in caller.received("SIP/2.0 200") if "m=audio" in m)
    a_address, a_port = sdp_connection(answer)
    b_address, b_port = sdp_connection(invite)
    assert a_address == b_address == LOOPBACK
    low, high = gw.media_ports
    half = low + (high - low + 1) // 2
    # The call's stream lives on one worker: both legs' ports are in that worker's slice.
    assert (a_port < half) == (b_port < half), (a_port, b_port, gw.media_ports)
    assert low <= min(a_port, b_port) and max(a_port, b_port) <= high

    caller_media = (LOOPBACK, caller.media_port)
    trunk_media = (LOOPBACK, trunk.media_port)
    ports = [caller.media_port, trunk.media_port, *range(low, high + 1)]
    streams = rtp_streams(capture.path, ports)
    a_relay, b_relay = (LOOPBACK, a_port), (LOOPBACK, b_port)
    expected = {
        (caller_media, a_relay),
        (b_relay, trunk_media),
        (trunk_media, b_relay),
        (a_relay, caller_media),
    }
    assert set(streams) == expected, streams  # everything through the worker's ports
    sent = streams[(caller_media, a_relay)]
    assert 95 <= sent <= 100
    for flow in expected:
        assert abs(streams[flow] - sent) <= 3, streams
    packets = rtp_packets(capture.path, ports)
    hop_in = [(p["ssrc"], p["seq"]) for p in packets if int(p["srcport"]) == caller.media_port]
    hop_out = [(p["ssrc"], p["seq"]) for p in packets if int(p["dstport"]) == trunk.media_port]
    assert hop_in == hop_out
