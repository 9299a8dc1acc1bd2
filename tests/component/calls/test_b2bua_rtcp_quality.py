"""Call quality from the legs' RTCP on a running B2BUA: phones on real sockets (127.0.0.1) send
RTP and RTCP SR/RR through a call (signalling on the in-memory network, virtual time).

- every RTCP datagram is relayed exactly as it came, a malformed one too (and counted);
- the call record holds each leg's figures (loss, jitter, RTT to the gateway, MOS), and
  ``voipgw calls`` words them;
- the metrics exporter counts RTCP read and malformed, and observes the legs' MOS and jitter
  when the call ends;
- the ``hep`` agent sends each SR/RR as HEP protocol type 5 to a collector (a socket here),
  with the JSON Homer reads and the leg's Call-ID.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import trio

import gateway.plugins.metrics as metrics_plugin
from gateway.core.cli import describe_quality
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps import hep as hep_plugin
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, eventually, start_b2bua
from tests.component.calls.dtls_phone import bind
from tests.component.calls.metrics_scrape import scrape
from tests.component.calls.recorder_calls import rtp
from tests.component.calls.rtcp_reports import receiver_report, rtcp_port, sender_report
from tests.port_blocks import port_bases
from tests.unit.taps.hep_chunks import chunks

CALLER_PORT, CALLEE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)


async def test_rtcp_reports_reach_the_record_metrics_and_homer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    collector = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await collector.bind(("127.0.0.1", 0))
    collector_port = collector.getsockname()[1]
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("metrics", metrics_plugin), ("hep", hep_plugin)],
        plugin_tables={
            "enable": ["metrics", "hep"],
            "metrics": {"listen": "127.0.0.1:0"},
            "hep": {"collector": f"udp:127.0.0.1:{collector_port}"},
        },
        alice_auto=None,
    )
    exporter = env.gateway.plugins.services.get("metrics")
    assert exporter is not None and exporter.server is not None
    address = exporter.server.address
    assert address is not None

    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    answered = parse_sdp_untrusted(final.body).media[0]
    sockets = [await bind(port) for port in (CALLER_PORT, CALLER_PORT + 1)]
    sockets += [await bind(port) for port in (CALLEE_PORT, CALLEE_PORT + 1)]
    caller, caller_rtcp, callee, callee_rtcp = sockets
    to_a = ("127.0.0.1", rtcp_port(answered))  # the gateway's RTCP port facing the caller
    to_b = ("127.0.0.1", rtcp_port(offered))
    try:
        for seq in range(5):
            await caller.sendto(rtp(seq, 0x00, 0xA), ("127.0.0.1", answered.port))
            await callee.sendto(rtp(seq, 0x80, 0xB), ("127.0.0.1", offered.port))
            await trio.sleep(0.02)

        # The callee's SR reaches the caller as it was sent.
        sr = sender_report(0xB, packets=250)
        await callee_rtcp.sendto(sr, to_b)
        with trio.fail_after(2):
            assert await caller_rtcp.recv(2048) == sr
        # The caller holds it 0.5 s and answers: its RR reaches the callee unchanged.
        await trio.sleep(0.5)
        rr = receiver_report(0xA, 0xB, dlsr=0.5)
        await caller_rtcp.sendto(rr, to_a)
        with trio.fail_after(2):
            assert await callee_rtcp.recv(2048) == rr
        # Malformed RTCP (its length runs past the datagram) is still relayed unchanged.
        bad = b"\x81\xc9\x00\x10" + bytes(12)
        await caller_rtcp.sendto(bad, to_a)
        with trio.fail_after(2):
            assert await callee_rtcp.recv(2048) == bad

        during = await scrape(address)
        assert during["voipgw_rtcp_reports_total"] == 2
        assert during["voipgw_rtcp_malformed_total"] == 1
        assert during["voipgw_call_mos_count"] == 0  # observed when the call ends

        assert (await call.bye()).status == 200
        await eventually(lambda: env.calls == 0)
    finally:
        for sock in sockets:
            sock.close()

    after = await scrape(address)
    assert after["voipgw_rtcp_reports_total"] == 2
    # Only the caller's phone sent report blocks: one leg observed.
    assert after["voipgw_call_mos_count"] == 1
    assert after['voipgw_call_mos_bucket{le="4.3"}'] == 0
    assert after['voipgw_call_mos_bucket{le="4.4"}'] == 1  # 0.8 % lost, 12 ms jitter: 4.35
    assert after['voipgw_call_jitter_seconds_bucket{le="0.01"}'] == 0
    assert after['voipgw_call_jitter_seconds_bucket{le="0.02"}'] == 1

    store = env.gateway.store
    assert store is not None
    await eventually(lambda: [r.ended_at for r in store.call_records_recent()] != [None])
    [record] = store.call_records_recent()
    quality = record.security["quality"]
    caller_leg, callee_leg = quality["a"], quality["b"]
    assert caller_leg["fraction_lost"] == round(2 / 256, 4)
    assert caller_leg["lost"] == 5
    assert caller_leg["jitter_ms"] == 12.0
    assert caller_leg["rtcp_packets"] == 1 and caller_leg["rtcp_malformed"] == 1
    # RTT between the gateway and the caller: SR through us, 0.5 s held, RR back; loopback is
    # instant, and virtual time moves only when every task waits (a few timer ticks at most).
    assert 0 <= caller_leg["rtt_ms"] < 200
    assert 4.3 < caller_leg["mos"] < 4.4
    assert callee_leg["packets"] == 250
    assert callee_leg["mos"] is None  # its SR had no report blocks
    words = describe_quality(caller_leg)
    assert words.startswith("0.8 % lost (5 packets lost in all), jitter 12 ms, RTT ")
    assert "MOS 4.3" in words and "1 malformed RTCP packets" in words

    # HEP: the SR and the RR as type 5, each with its leg's Call-ID; SIP as type 1.
    reports = []
    with trio.move_on_after(1):
        while len(reports) < 2:
            found = chunks(await collector.recv(65536))
            if found[0x0B] == bytes([5]):
                reports.append(found)
    collector.close()
    assert len(reports) == 2
    sr_hep, rr_hep = sorted(reports, key=lambda c: json.loads(c[0x0F])["type"])
    assert json.loads(sr_hep[0x0F])["sender_information"]["packets"] == 250
    assert sr_hep[0x11] == leg_b.call_id.encode()
    assert struct.unpack("!H", sr_hep[0x07])[0] == CALLEE_PORT + 1  # from the callee's RTCP port
    assert struct.unpack("!H", sr_hep[0x08])[0] == to_b[1]
    rr_json = json.loads(rr_hep[0x0F])
    assert rr_json["type"] == 201 and rr_json["ssrc"] == 0xA
    assert rr_json["report_blocks"][0]["fraction_lost"] == 2
    assert rr_json["report_blocks"][0]["ia_jitter"] == 96
    assert rr_hep[0x11] == call.call_id.encode()
