"""A live call's quality now, as ``voipgw calls`` asks the running gateway for it: the control
socket (gateway/core/control.py, a real Unix socket in the state directory) answers with each
leg's latest RTCP figures and how old they are, while phones on real sockets (127.0.0.1) send
RTCP through the call (signalling on the in-memory network, virtual time).

- before any RTCP a leg is null; a report shows at once (no wait for a call record's save);
- 40 s without RTCP from a leg: its figures are 40 s old and worded STALE;
- a phone whose RTCP goes on without report blocks receives no media: worded so;
- with ``[media] rtcp_quality = false`` the socket answers, with no call in it;
- a request that is not one is answered with an error, and the socket serves on.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import trio

from gateway.core.cli import describe_live_quality
from gateway.core.control import socket_path
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, start_b2bua
from tests.component.calls.dtls_phone import bind
from tests.component.calls.rtcp_reports import (
    receiver_report,
    rtcp_port,
    sender_report,
)
from tests.port_blocks import port_bases

CALLER_PORT, CALLEE_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)


async def ask(path: Path, request: bytes = b'{"query": "live_quality"}\n') -> dict[str, Any]:
    """What ``voipgw calls`` asks (control.ask), from trio: a blocking client in a thread would
    let the virtual clock jump while it waits."""
    stream = await trio.open_unix_socket(str(path))
    data = b""
    async with stream:
        await stream.send_all(request)
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    answer = json.loads(data)
    assert isinstance(answer, dict)
    return answer


async def test_a_live_calls_quality_now_and_its_age(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    path = socket_path(env.gateway.state_dir)
    assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert await ask(path) == {"calls": {}}

    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    answered = parse_sdp_untrusted(final.body).media[0]
    assert env.gateway.calls is not None
    [live_call] = env.gateway.calls.calls
    record_id = live_call.record_id
    # Up, no RTCP yet: both legs there, with nothing to show.
    assert await ask(path) == {"calls": {record_id: {"a": None, "b": None}}}
    assert describe_live_quality(None) == "no RTCP from its phone yet"

    caller_rtcp, callee_rtcp = await bind(CALLER_PORT + 1), await bind(CALLEE_PORT + 1)
    to_a = ("127.0.0.1", rtcp_port(answered))  # the gateway's RTCP port facing the caller
    to_b = ("127.0.0.1", rtcp_port(offered))
    try:
        await callee_rtcp.sendto(sender_report(0xB, packets=250), to_b)
        with trio.fail_after(2):
            await caller_rtcp.recv(2048)
        await trio.sleep(0.5)
        await caller_rtcp.sendto(receiver_report(0xA, 0xB, dlsr=0.5), to_a)
        with trio.fail_after(2):
            await callee_rtcp.recv(2048)

        now = (await ask(path))["calls"][record_id]
        caller, callee = now["a"], now["b"]
        assert caller["fraction_lost"] == round(2 / 256, 4) and caller["lost"] == 5
        assert caller["jitter_ms"] == 12.0 and 0 <= caller["rtt_ms"] < 200
        assert 4.3 < caller["mos"] < 4.4
        assert caller["last_report_age"] == 0.0 and caller["last_rtcp_age"] == 0.0
        # The callee's SR had no report block: RTCP half a second old, no report.
        assert callee["packets"] == 250 and callee["mos"] is None
        assert callee["last_report_age"] is None and 0.5 <= callee["last_rtcp_age"] < 1
        words = describe_live_quality(caller)
        assert words.startswith("0.8 % lost (5 packets lost in all), jitter 12 ms, RTT ")
        assert words.endswith("MOS 4.3; last report 0 s ago")
        assert describe_live_quality(callee).startswith(
            "no reports in its RTCP, its phone sent 250 packets; last RTCP "
        )

        # Nothing from either phone for 40 s: the same figures, 40 s old, stale.
        await trio.sleep(40)
        later = (await ask(path))["calls"][record_id]
        assert later["a"]["fraction_lost"] == caller["fraction_lost"]
        assert 40 <= later["a"]["last_report_age"] < 41
        assert describe_live_quality(later["a"]).endswith(
            "; last report 40 s ago (STALE: no RTCP from its phone since)"
        )
        assert 40.5 <= later["b"]["last_rtcp_age"] < 41.5
        assert describe_live_quality(later["b"]).endswith(
            " s ago (STALE: no RTCP from its phone since)"
        )

        # The caller's phone sends RTCP again, without a report block: it hears nothing.
        await caller_rtcp.sendto(sender_report(0xA, packets=900), to_a)
        with trio.fail_after(2):
            await callee_rtcp.recv(2048)
        hearing_nothing = (await ask(path))["calls"][record_id]["a"]
        assert hearing_nothing["last_rtcp_age"] == 0.0
        assert describe_live_quality(hearing_nothing).endswith(
            "; last report 40 s ago (STALE: its phone's RTCP since, 0 s ago, has no report: "
            "it receives no media)"
        )
    finally:
        caller_rtcp.close()
        callee_rtcp.close()

    # Not a request: an error answer, and the socket serves the next client.
    assert "error" in await ask(path, b"live_quality\n")
    assert "error" in await ask(path, b'{"query": "everything"}\n')
    assert record_id in (await ask(path))["calls"]
    assert (await call.bye()).status == 200


async def test_without_rtcp_quality_the_socket_answers_with_no_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, alice_auto=None, media_table={"rtcp_quality": False}
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    assert (await call.final()).status == 200
    assert env.gateway.calls is not None and len(env.gateway.calls.calls) == 1
    [live_call] = env.gateway.calls.calls
    assert live_call.media is not None and live_call.media.quality is None  # nothing read
    assert await ask(socket_path(env.gateway.state_dir)) == {"calls": {}}
    assert (await call.bye()).status == 200
