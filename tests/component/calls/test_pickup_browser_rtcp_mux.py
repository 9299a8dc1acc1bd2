"""Call pickup by a browser (its signalling SIP over WebSocket, RFC 7118: here the memory ``ws``
stand-in) of a call whose caller did not offer a=rtcp-mux. Chrome refuses an answer without
rtcp-mux (JSEP's rtcpMuxPolicy "require", RFC 8829 §4.1.1), and the relay terminates media
per leg, so the picker's leg muxes on its own: our 200 to it has a=rtcp-mux, RTCP from its RTP
port reaches the caller's RTCP port and back, and the caller's leg is as before. A SIP phone
picking up (UDP) is answered as before: rtcp-mux only when the caller offered it. In-memory
signalling, virtual time; RTP and RTCP on real 127.0.0.1 sockets through the relay."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import trio

from gateway.core.ids import SeededIds
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import AutoAnswer, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, GW, B2bua
from tests.component.calls.dialog_event_watch import next_doc, start, watch
from tests.component.calls.dtls_phone import bind
from tests.component.calls.pickup_calls import (
    PICKUP,
    early_dialog,
    pick_up,
    replaces_of,
)
from tests.port_blocks import port_bases

CALLER_PORT, PICKER_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)
GW_WS = (GW[0], 5062)
BROWSER = ("127.0.0.5", 5060)


def picker_sdp() -> bytes:
    """The picker offers rtcp-mux (a browser always does, RFC 8834 §5.1.1)."""
    return simple_sdp("127.0.0.1", PICKER_PORT, formats=("0",)) + b"a=rtcp-mux\r\n"


def rtp(seq: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, ssrc) + b"\xd5" * 160


def rtcp(ssrc: int) -> bytes:
    return struct.pack("!BBHI", 0x80, 200, 6, ssrc) + bytes(20)  # an SR (RFC 3550 §6.4.1)


async def picked_up(
    env: B2bua, bob: SipAgent, picker: SipAgent
) -> tuple[SessionDescription, SessionDescription]:
    """The carrier calls alice without rtcp-mux; ``picker`` (bob's) picks the ringing call up
    from what ``bob`` is told: (our 200 to the caller, our 200 to the picker)."""
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)  # she lets it ring
    caller_offer = simple_sdp("127.0.0.1", CALLER_PORT, formats=("0",))
    assert b"rtcp-mux" not in caller_offer
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=caller_offer)
    await env.alice.next_call()
    picking = await pick_up(picker, replaces_of(await early_dialog(bob)), sdp=picker_sdp())
    to_picker = await picking.final()
    assert to_picker.status == 200, to_picker.reason
    to_caller = await incoming.final()
    assert to_caller.status == 200, to_caller.reason
    return parse_sdp_untrusted(to_caller.body), parse_sdp_untrusted(to_picker.body)


@pytest.mark.parametrize("transport", ["ws", "udp"])
async def test_a_browser_picking_up_gets_rtcp_mux_whatever_the_caller_offered(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    transport: str,
) -> None:
    env, bob = await start(
        nursery,
        tmp_path,
        voipgw_seed,
        groups=[PICKUP],
        sip={"listen": ["udp:127.0.0.1:5060", f"ws:{GW_WS[0]}:{GW_WS[1]}"]},
        ws_stand_in=True,
    )
    # bob's browser: the same account, its INVITE over ws (or, for comparison, a SIP phone's
    # over UDP).
    picker = SipAgent(
        env.network,
        BROWSER,
        ids=SeededIds(voipgw_seed + 5),
        user="bob",
        password="bob-password-1",
        proxy=GW_WS if transport == "ws" else GW,
        auto=None,
    )
    await nursery.start(picker.serve)
    to_caller, to_picker = await picked_up(env, bob, picker)
    (theirs,) = to_caller.media
    (ours,) = to_picker.media
    # The caller's leg is as it was: it offered no rtcp-mux, it gets none.
    assert not theirs.rtcp_mux and theirs.attributes.get("rtcp") is not None
    if transport == "udp":
        # A SIP phone: rtcp-mux on both legs or neither, as before.
        assert not ours.rtcp_mux
        return
    assert ours.rtcp_mux and ours.attributes.get("rtcp") is None
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    assert call.media is not None
    (stream,) = call.media.streams
    # RTP each way first (symmetric latching), then RTCP: the picker's on its RTP port goes to
    # the caller's RTCP port (its a=rtcp default, port + 1), and back (RFC 5761 §5.1.3).
    caller_sock, caller_rtcp, picker_sock = (
        await bind(CALLER_PORT),
        await bind(CALLER_PORT + 1),
        await bind(PICKER_PORT),
    )
    with caller_sock, caller_rtcp, picker_sock:
        to_a = ("127.0.0.1", theirs.port)
        to_a_rtcp = ("127.0.0.1", int(str(theirs.attributes.get("rtcp")).split()[0]))
        to_b = ("127.0.0.1", ours.port)
        with trio.fail_after(2):
            await caller_sock.sendto(rtp(1, 0x11), to_a)
            await picker_sock.sendto(rtp(1, 0x22), to_b)
            assert await picker_sock.recv(2048) == rtp(1, 0x11)
            assert await caller_sock.recv(2048) == rtp(1, 0x22)
            await picker_sock.sendto(rtcp(0x22), to_b)
            assert await caller_rtcp.recv(2048) == rtcp(0x22)
            await caller_rtcp.sendto(rtcp(0x11), to_a_rtcp)
            assert await picker_sock.recv(2048) == rtcp(0x11)
    assert stream.b.rtcp_mux and not stream.a.rtcp_mux
