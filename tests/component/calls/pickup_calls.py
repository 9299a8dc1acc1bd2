"""The ringing calls, pickup and checks of the in-memory call pickup tests: moved here from
test_pickup_dialog_ids_memory.py so that no test module imports another."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

import trio

from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.message import Response
from gateway.testing.sip_agent import AutoAnswer, SipAgent, simple_sdp
from gateway.testing.sip_agent import Call as SipCall
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    B2bua,
)
from tests.component.calls.dialog_event_watch import NS, next_doc, watch
from tests.component.calls.dtls_phone import bind
from tests.component.calls.recorder_calls import rtp
from tests.port_blocks import port_bases

PICKUP = {"name": "office", "accounts": ["alice", "bob"], "pickup": True}


async def early_dialog(bob: object) -> ET.Element:
    """The first <dialog> in state early that bob is told of."""
    while True:
        notify, _ = await next_doc(bob)  # type: ignore[arg-type]
        for dialog in ET.fromstring(notify.body).findall(f"{NS}dialog"):
            if dialog.findtext(f"{NS}state") == "early":
                return dialog


CALLER_PORT, BOB_PORT = port_bases(2)  # this process's own ports (tests/port_blocks.py)


def replaces_of(dialog: ET.Element, *, early_only: bool = True) -> str:
    """What Yealink and Poly phones send (RFC 3891 §6.1 from RFC 4235 §4.1)."""
    flag = ";early-only" if early_only else ""
    return (
        f"{dialog.get('call-id')};to-tag={dialog.get('remote-tag')};"
        f"from-tag={dialog.get('local-tag')}{flag}"
    )


async def pick_up(
    bob: SipAgent,
    replaces: str,
    *,
    sdp: bytes | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> SipCall:
    call = await bob.invite(
        "sip:alice@127.0.0.1:5060", sdp=sdp, extra=[("Replaces", replaces), *extra]
    )
    await call.exchange.wait_for(lambda r: r.status == 407)  # type: ignore[union-attr]
    await call.authenticate()
    return call


async def assert_rtp_between_caller_and_bob(to_caller: Response, to_bob: Response) -> None:
    """RTP flows both ways between the caller (at CALLER_PORT) and bob's phone (at BOB_PORT)
    through the relay ports our 200s gave each."""
    caller_sock, bob_sock = await bind(CALLER_PORT), await bind(BOB_PORT)
    with caller_sock, bob_sock:
        caller_to = ("127.0.0.1", parse_sdp_untrusted(to_caller.body).media[0].port)
        bob_to = ("127.0.0.1", parse_sdp_untrusted(to_bob.body).media[0].port)
        for seq in range(3):
            await caller_sock.sendto(rtp(seq, 0x11, 0x1111), caller_to)
            await bob_sock.sendto(rtp(seq, 0x22, 0x2222), bob_to)
            await trio.sleep(0.02)
        with trio.fail_after(2):
            at_bob = await bob_sock.recv(2048)
            at_caller = await caller_sock.recv(2048)
        assert at_bob[12:] == bytes([0x11]) * 160
        assert at_caller[12:] == bytes([0x22]) * 160


async def ringing_alice(env: B2bua, bob: SipAgent) -> tuple[SipCall, SipCall, ET.Element]:
    """The carrier calls alice, her phone rings; bob watches: (caller's call, alice's ringing
    call, the early <dialog> bob was told of)."""
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT)
    )
    ringing = await env.alice.next_call()
    dialog = await early_dialog(bob)
    return incoming, ringing, dialog
