"""Call quality from a real phone's RTCP: two baresip phones (which send RTCP SR with report
blocks, RFC 3550 §6.4, about every 5 s, on their own RTCP ports) call each other through the
gateway; a HEP collector (a socket here) gets their reports as HEP type 5 while the call runs,
``voipgw calls`` shows each leg's figures now while it runs (asked of the gateway over its
control socket), and the call record then holds each leg's figures, which ``voipgw calls`` words.

On loopback nothing is lost: what can fail is whether the gateway read the reports at all,
converted jitter with the stream's clock rate (PCMU, 8000 Hz), and matched a report's LSR with
the SR it answers (RFC 3550 §6.4.1) to measure the round trip to each phone.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.core.store.sqlite import SqliteStore
from tests.interop.harness import Baresip, GatewayProcess, tone_wav
from tests.interop.harness.ports import LOOPBACK
from tests.unit.taps.hep_chunks import chunks

REALM = "interop.voipgw.test"
PASSWORDS = {"alice": "wonderland-7f3a", "bob": "builder-c29e"}
# baresip's first RTCP comes at once, the next ones every 5 s; an RTT needs an SR one way and
# the report that answers it the other way (the third round at the latest).
RTCP_WAIT = 30.0


def _reports_until_answered(collector: socket.socket, deadline: float) -> list[dict[str, Any]]:
    """HEP type 5 reports (JSON, with the Call-ID they came with) until both legs have sent
    report blocks and one of them answered an SR (LSR set), or the deadline."""
    reports: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        try:
            packet = collector.recv(65536)
        except TimeoutError:
            continue
        found = chunks(packet)
        if found[0x0B] != bytes([5]):
            continue  # SIP
        report = json.loads(found[0x0F])
        report["call_id"] = found[0x11].decode()
        reports.append(report)
        with_blocks = {r["call_id"] for r in reports if r["report_blocks"]}
        answered = any(b["lsr"] for r in reports for b in r["report_blocks"])
        if len(with_blocks) == 2 and answered:
            break
    return reports


@pytest.mark.interop
def test_baresips_rtcp_reports_reach_homer_and_the_call_record(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as collector:
        collector.bind((LOOPBACK, 0))
        collector.settimeout(0.5)
        with (
            GatewayProcess(
                tmp_path,
                accounts=PASSWORDS,
                digest_algorithms=("MD5",),
                settings={
                    "gateway": {"realm": REALM},
                    "plugins": {"enable": ["udp", "tcp", "hep"]},
                },
                extra_toml=(
                    f'[plugins.hep]\ncollector = "udp:{LOOPBACK}:{collector.getsockname()[1]}"\n'
                ),
            ) as gw,
            Baresip(tmp_path, "alice", source=tone_wav(tmp_path / "a.wav", 1000, 60)) as alice,
            Baresip(tmp_path, "bob", source=tone_wav(tmp_path / "b.wav", 440, 60)) as bob,
        ):
            for phone in (alice, bob):
                phone.register(gw.uri(phone.name), PASSWORDS[phone.name])
            alice.dial(gw.uri("bob"))
            call = alice.wait_established()
            bob.wait_established()
            reports = _reports_until_answered(collector, time.monotonic() + RTCP_WAIT)
            # The same call, up: its quality now, from the running gateway (no extra call).
            live = gw.cli("calls")
            alice.hangup()
            alice.wait_closed()
            bob.wait_closed()
            out = gw.cli_until(lambda text: "ended" in text, "calls", "--recent", "1")
            store = SqliteStore.open(gw.state_dir)
            try:
                [record] = store.call_records_recent()
            finally:
                store.close()

    # HEP: each leg's reports carry that leg's Call-ID (alice's is the A leg's).
    call_ids = {r["call_id"] for r in reports if r["report_blocks"]}
    assert len(call_ids) == 2 and call["id"] in call_ids, reports
    assert {r["type"] for r in reports} <= {200, 201}
    assert all(b["fraction_lost"] == 0 for r in reports for b in r["report_blocks"])

    quality = record.security["quality"]
    for label in ("a", "b"):
        leg = quality[label]
        assert leg["rtcp_packets"] >= 1 and leg["rtcp_malformed"] == 0
        assert leg["fraction_lost"] == 0 and leg["lost"] == 0  # loopback loses nothing
        # baresip paces its packets by its audio clock: jitter of a few ms at most at 8 kHz.
        assert 0 <= leg["jitter_ms"] < 20
        assert 4.3 < leg["mos"] <= 4.5
        assert leg["packets"] > 0  # its SR's own count of what it sent
    rtts = [quality[label]["rtt_ms"] for label in ("a", "b")]
    measured = [rtt for rtt in rtts if rtt is not None]
    assert measured and all(0 <= rtt < 100 for rtt in measured), rtts  # loopback
    assert "note:" not in live.stderr, live.stderr  # the gateway answered
    now = [line.strip() for line in live.stdout.splitlines() if "quality now" in line]
    assert [line.split(":")[0] for line in now] == [
        "caller leg quality now (what it received)",
        "callee leg quality now (what it received)",
    ], live.stdout
    # Both phones' report blocks were read before the command ran: fresh figures, not stale.
    assert all("0.0 % lost (0 packets lost in all), jitter " in line for line in now), now
    fresh = re.compile(r"MOS 4\.\d.*; last report \d s ago$")
    assert all(fresh.search(line) for line in now), now
    words = [line.strip() for line in out.splitlines() if "quality (what it received)" in line]
    assert [line.split(":")[0] for line in words] == [
        "caller leg quality (what it received)",
        "callee leg quality (what it received)",
    ]
    assert all("0.0 % lost" in line and "MOS 4." in line for line in words), words
