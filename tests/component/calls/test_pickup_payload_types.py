"""Call pickup where the caller and the picker number telephone-event differently (101 and 96):
each is answered with its own numbers (RFC 3264 §6.1), so the relay renumbers RTP payload types
per direction and DTMF (RFC 4733) reaches each phone with the number its own SDP gave it, both
ways; audio (PCMU, static 0) passes as it is. Plain RTP on both legs, and a DTLS-SRTP picker
(renumbered between unprotect and protect: the picker authenticates the header it gets).
In-memory signalling, virtual time; RTP on real 127.0.0.1 sockets through the relay."""

from __future__ import annotations

import struct
from pathlib import Path

import trio

import gateway.plugins.keyexchange.dtls_srtp as dtls_plugin
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.srtp import SrtpSession
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange
from gateway.testing.sip_agent import AutoAnswer, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    B2bua,
    assert_media_via_gateway,
    eventually,
)
from tests.component.calls.dialog_event_watch import next_doc, start, watch
from tests.component.calls.dtls_pairs import pairs
from tests.component.calls.dtls_phone import PHONE_ID, Phone, bind
from tests.component.calls.pickup_calls import PICKUP, early_dialog, pick_up, replaces_of
from tests.component.calls.pickup_sdp import BOB_PORT, CALLER_PORT, bob_sdp

CALLER_DTMF, BOB_DTMF = 101, 96


def rtp(sequence: int, payload_type: int, ssrc: int, *, marker: bool = False) -> bytes:
    """RTP (RFC 3550 §5.1): with a DTMF payload type, an RFC 4733 §2.3 event (digit 5)."""
    second = payload_type | (0x80 if marker else 0)
    payload = b"\x05\x0a\x00\xa0" if payload_type != 0 else b"\xd5" * 160
    return struct.pack("!BBHII", 0x80, second, sequence, 160 * sequence, ssrc) + payload


def dtmf_numbers(sd: SessionDescription) -> list[str]:
    return [v.split()[0] for v in sd.media[0].attributes.values("rtpmap") if "telephone" in v]


async def picked_up_call(
    env: B2bua, bob: SipAgent, body: bytes
) -> tuple[SessionDescription, SessionDescription]:
    """The carrier calls alice (telephone-event 101), bob picks the ringing call up with
    ``body``: (our 200 to the caller, our 200 to bob)."""
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)  # she lets it ring
    incoming = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT)
    )
    await env.alice.next_call()
    dialog = await early_dialog(bob)
    picked = await pick_up(bob, replaces_of(dialog), sdp=body)
    to_bob = await picked.final()
    assert to_bob.status == 200, to_bob.reason
    to_caller = await incoming.final()
    assert to_caller.status == 200, to_caller.reason
    assert_media_via_gateway(to_caller.body)
    return parse_sdp_untrusted(to_caller.body), parse_sdp_untrusted(to_bob.body)


async def test_dtmf_reaches_each_phone_with_its_own_payload_type(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    to_caller, to_bob = await picked_up_call(env, bob, bob_sdp())
    # Each phone is answered in its own numbers.
    assert dtmf_numbers(to_caller) == [str(CALLER_DTMF)]
    assert dtmf_numbers(to_bob) == [str(BOB_DTMF)]
    caller_sock, bob_sock = await bind(CALLER_PORT), await bind(BOB_PORT)
    with caller_sock, bob_sock:
        caller_to = ("127.0.0.1", to_caller.media[0].port)
        bob_to = ("127.0.0.1", to_bob.media[0].port)
        # Each latches its socket with audio first (symmetric RTP), then presses a key.
        await caller_sock.sendto(rtp(1, 0, 0x11), caller_to)
        await bob_sock.sendto(rtp(1, 0, 0x22), bob_to)
        with trio.fail_after(2):
            assert await bob_sock.recv(2048) == rtp(1, 0, 0x11)
            assert await caller_sock.recv(2048) == rtp(1, 0, 0x22)
            await caller_sock.sendto(rtp(2, CALLER_DTMF, 0x11, marker=True), caller_to)
            assert await bob_sock.recv(2048) == rtp(2, BOB_DTMF, 0x11, marker=True)
            await bob_sock.sendto(rtp(2, BOB_DTMF, 0x22, marker=True), bob_to)
            assert await caller_sock.recv(2048) == rtp(2, CALLER_DTMF, 0x22, marker=True)
            await bob_sock.sendto(rtp(3, BOB_DTMF, 0x22), bob_to)
            assert await caller_sock.recv(2048) == rtp(3, CALLER_DTMF, 0x22)
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    assert call.media is not None
    (stream,) = call.media.streams
    assert stream.a_to_b.payload_types == {CALLER_DTMF: BOB_DTMF}
    assert stream.b_to_a.payload_types == {BOB_DTMF: CALLER_DTMF}


async def test_a_dtls_srtp_picker_gets_renumbered_dtmf_it_can_authenticate(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(
        nursery, tmp_path, voipgw_seed, groups=[PICKUP], plugins=[("dtls", dtls_plugin)]
    )
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(
        suites=[], secure_signalling=False
    )
    to_caller, to_bob = await picked_up_call(env, bob, bob_sdp(dtls=negotiation))
    media = to_bob.media[0]
    assert media.proto == "UDP/TLS/RTP/SAVP"
    assert dtmf_numbers(to_caller) == [str(CALLER_DTMF)]
    assert dtmf_numbers(to_bob) == [str(BOB_DTMF)]
    negotiation.remote_sdp_attributes(pairs(to_bob, media))
    phone = Phone(negotiation, await bind(BOB_PORT), ("127.0.0.1", media.port))
    nursery.start_soon(phone.run)
    with trio.fail_after(30):
        await phone.keyed.wait()
    assert phone.keys is not None and phone.failure is None
    srtp = SrtpSession(SrtpKeys(phone.keys.suite, phone.keys.local_key, phone.keys.remote_key))
    caller_sock = await bind(CALLER_PORT)
    with caller_sock:
        caller_to = ("127.0.0.1", to_caller.media[0].port)
        # Bob's keys reach the relay through the call's task: send until one gets through.
        with trio.fail_after(5):
            with trio.move_on_after(4) as waiting:
                while True:
                    await phone.sock.sendto(srtp.protect_rtp(rtp(1, BOB_DTMF, 0x22)), phone.gateway)
                    with trio.move_on_after(0.1):
                        received = await caller_sock.recv(2048)
                        break
            assert not waiting.cancelled_caught
        assert received[:1] == b"\x80" and received[1] == CALLER_DTMF
        assert received[8:] == rtp(1, CALLER_DTMF, 0x22)[8:]
        # The caller presses a key: bob authenticates what the relay renumbered and protected.
        await caller_sock.sendto(rtp(5, CALLER_DTMF, 0x11, marker=True), caller_to)
        await eventually(lambda: bool(phone.media))
    plain = srtp.unprotect_rtp(phone.media[-1])
    assert plain == rtp(5, BOB_DTMF, 0x11, marker=True)
