"""SIP-I / SIP-T bodies through the B2BUA: a PSTN gateway's INVITE or 2xx carries its SDP in a
multipart/mixed body beside the ISUP message it interworks (ITU-T Q.1912.5, RFC 3204, RFC 5621).

The gateway takes the SDP part, builds each leg's body anew (plain application/sdp: ISUP means
nothing to a SIP phone), and refuses with 415 and ``Accept`` (application/sdp, multipart/mixed,
PIDF-LO) a body it cannot honour: a part marked required that is not SDP, or another body type
(RFC 3261 §21.4.13).

Set-up as b2bua_env.py: trunk "carrier" at 127.0.0.2 calls alice's DID.
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_DID,
    assert_media_via_gateway,
    eventually,
    start_b2bua,
)
from tests.component.calls.b2bua_scenarios import assert_no_media_ports_held

BOUNDARY = "sip-i-boundary-7"
MIXED = f"multipart/mixed;boundary={BOUNDARY}"
# ISUP IAM / ANM octets as a SIP-I gateway would put them (binary, CR and LF octets included).
IAM = bytes([0x01, 0x10, 0x48, 0x00, 0x0A, 0x03, 0x0D, 0x0A, 0x02, 0x0A, 0x08, 0x83, 0x90])
ANM = bytes([0x09, 0x01, 0x11, 0x02, 0x0D, 0x0A, 0x00])


def sip_i_body(sdp: bytes, isup: bytes, *, handling: str = "optional") -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n".encode()
        + sdp
        + f"\r\n--{BOUNDARY}\r\nContent-Type: application/ISUP;version=itu-t92+\r\n"
        f"Content-Disposition: signal;handling={handling}\r\n\r\n".encode()
        + isup
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


async def test_a_sip_i_invite_is_called_through_with_its_sdp_and_without_its_isup(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    offer = simple_sdp("127.0.0.2", 40000, version=1)
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=sip_i_body(offer, IAM), content_type=MIXED
    )
    leg_b = await env.alice.next_call()
    # Alice's phone gets an SDP of ours, alone: no multipart, no ISUP octets.
    assert leg_b.invite.content_type == "application/sdp"
    assert_media_via_gateway(leg_b.invite.body)
    assert IAM not in leg_b.invite.body and b"ISUP" not in leg_b.invite.body

    # A PSTN-side callee answering the same way (SDP + ANM) is read too.
    answer = simple_sdp(ALICE[0], 30000, version=1)
    await env.alice.respond(
        leg_b.incoming,  # type: ignore[arg-type]
        200,
        body=sip_i_body(answer, ANM),
        content_type=MIXED,
    )
    final = await call.final()
    assert final.status == 200
    assert final.content_type == "application/sdp"
    assert_media_via_gateway(final.body)
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert_no_media_ports_held(env)


async def test_a_required_isup_part_or_a_body_we_do_not_read_is_415_with_accept(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    offer = simple_sdp("127.0.0.2", 40000, version=1)
    bodies = [
        (sip_i_body(offer, IAM, handling="required"), MIXED, "application/isup is required"),
        (b"hello", "text/plain", "unsupported body type text/plain"),
    ]
    for body, content_type, says in bodies:
        call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=body, content_type=content_type)
        final = await call.final()
        assert final.status == 415
        # RFC 3261 §21.4.13: what we take, multipart/mixed too (RFC 5621 §3.2).
        accepted = final.headers.get_all("Accept")
        assert accepted == ("application/sdp", "multipart/mixed", "application/pidf+xml")
        assert says in (final.headers.get("Warning") or "")
    await eventually(lambda: env.calls == 0)
    assert env.alice.requests("INVITE") == []
    assert_no_media_ports_held(env)


async def test_a_sip_i_invite_without_sdp_is_a_late_offer(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/ISUP;version=itu-t92+\r\n"
        "Content-Disposition: signal;handling=optional\r\n\r\n".encode()
        + IAM
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=body, content_type=MIXED)
    leg_b = await env.alice.next_call()
    assert leg_b.invite.body == b""  # no offer to relay: the callee makes it
    await leg_b.answer(sdp=simple_sdp(ALICE[0], 30000, version=1))
    final = await call.final()
    assert final.status == 200
    assert_media_via_gateway(final.body)
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
