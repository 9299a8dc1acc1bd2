"""SIPREC through the B2BUA (the ``siprec`` tap, RFC 7866): the recorder (SRS) is a SIP agent on
the in-memory network; the call's RTP and the copies the gateway sends the SRS run on real
127.0.0.1 sockets, in virtual time.

- a recorded call opens a recording session: INVITE with Require: siprec, a +sip.src Contact,
  a multipart body with an SDP of two sendonly labelled streams and the RFC 7865 metadata; each
  direction's packets reach the SRS port its answer gave for that label; the call's end BYEs it;
- an SRS that refuses leaves the call going, unrecorded;
- an SRS that hangs up stops the copies, and the call goes on.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import trio

import gateway.plugins.taps.siprec as siprec_plugin
from gateway.core.ids import SeededIds
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps.siprec import srs_sdp
from gateway.testing.sip_agent import AutoAnswer, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import ALICE_DID, GW, B2bua, eventually, start_b2bua
from tests.component.calls.dtls_phone import bind

SRS = ("127.0.0.9", 5060)
CALLER_PORT, CALLEE_PORT, SRS_PORT = 24700, 24710, 24720  # outside the relay's MEDIA_PORTS


def rtp(seq: int, byte: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, ssrc) + bytes([byte]) * 160


def srs_answer(
    labels: tuple[str, str] = ("1", "2"), ports: tuple[int, int] = (SRS_PORT, SRS_PORT + 2)
) -> bytes:
    """The SRS's SDP answer: recvonly, the labels in reverse order (matched by label)."""
    lines = ["v=0", "o=srs 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0"]
    for label, port in reversed(list(zip(labels, ports, strict=True))):
        lines += [f"m=audio {port} RTP/AVP 0", f"a=label:{label}", "a=recvonly"]
    return ("\r\n".join(lines) + "\r\n").encode()


async def siprec_env(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    *,
    alice_auto: AutoAnswer | None = None,
    **table: object,
) -> tuple[B2bua, SipAgent]:
    env = await start_b2bua(
        nursery,
        tmp_path,
        seed,
        plugins=[("siprec", siprec_plugin)],
        plugin_tables={
            "enable": ["siprec"],
            "siprec": {"srs": "sip:srs@127.0.0.9:5060", "trunks": ["carrier"], **table},
        },
        alice_auto=alice_auto,
    )
    # The recorder answers as each test says (auto=None), never by itself.
    srs = SipAgent(env.network, SRS, ids=SeededIds(seed + 9), user="srs", proxy=GW, auto=None)
    await nursery.start(srs.serve)
    return env, srs


async def answered_call(env: B2bua) -> tuple[object, tuple[str, int], tuple[str, int]]:
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    leg_b = await env.alice.next_call()
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    await leg_b.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    answered = parse_sdp_untrusted(final.body).media[0]
    return call, ("127.0.0.1", answered.port), ("127.0.0.1", offered.port)


async def test_a_recorded_call_is_sent_to_the_srs_stream_by_stream(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed)
    call, to_caller_side, to_callee_side = await answered_call(env)
    recording = await srs.next_call()
    invite = recording.invite
    assert invite.headers.get("Require") == "siprec"
    assert "+sip.src" in (invite.headers.get("Contact") or "")
    content_type = invite.headers.get("Content-Type") or ""
    assert content_type.startswith("multipart/mixed;boundary=")
    body = invite.body.decode()
    assert "Content-Type: application/rs-metadata+xml" in body
    assert "Content-Disposition: recording-session" in body
    assert '<nameID aor="sip:' in body and "<datamode>complete</datamode>" in body
    assert len(re.findall(r"<send>", body)) == 2 and len(re.findall(r"<recv>", body)) == 2
    offer = parse_sdp_untrusted(srs_sdp(content_type, invite.body))
    assert [m.attributes.get("label") for m in offer.media] == ["1", "2"]
    assert all(m.attributes.has("sendonly") and m.formats[0] == "0" for m in offer.media)
    await recording.answer(200, sdp=srs_answer())

    with (
        await bind(CALLER_PORT) as caller,
        await bind(CALLEE_PORT) as callee,
        await bind(SRS_PORT) as srs_caller,
        await bind(SRS_PORT + 2) as srs_callee,
    ):
        for seq in range(10):
            await caller.sendto(rtp(seq, 0x11, 0x1111), to_caller_side)
            await callee.sendto(rtp(seq, 0x22, 0x2222), to_callee_side)
            await trio.sleep(0.02)
        got: dict[str, list[bytes]] = {"caller": [], "callee": []}
        for name, sock in (("caller", srs_caller), ("callee", srs_callee)):
            with trio.move_on_after(2):
                while len(got[name]) < 10:
                    data, _ = await sock.recvfrom(2048)
                    got[name].append(data)
    assert got["caller"] == [rtp(seq, 0x11, 0x1111) for seq in range(10)]
    assert got["callee"] == [rtp(seq, 0x22, 0x2222) for seq in range(10)]

    await call.bye()  # type: ignore[attr-defined]
    bye = await srs.next_request("BYE", timeout=10)
    assert bye.request.call_id == invite.call_id
    await eventually(lambda: env.calls == 0)


async def test_an_srs_that_refuses_leaves_the_call_going_unrecorded(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed)
    call, _, _ = await answered_call(env)
    recording = await srs.next_call()
    await recording.answer(488)
    await trio.sleep(30)
    assert env.calls == 1  # still up
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []
    await call.bye()  # type: ignore[attr-defined]
    await eventually(lambda: env.calls == 0)
    assert srs.requests("BYE") == []


async def test_an_srs_that_hangs_up_stops_the_copies_and_the_call_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed)
    call, to_caller_side, _ = await answered_call(env)
    recording = await srs.next_call()
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)  # RFC 3261 §15: no BYE before the ACK
    bye = await recording.bye()
    assert bye.status == 200
    with await bind(CALLER_PORT) as caller, await bind(SRS_PORT) as srs_caller:
        for seq in range(5):
            await caller.sendto(rtp(seq, 0x11, 0x1111), to_caller_side)
            await trio.sleep(0.02)
        with trio.move_on_after(2) as waited:
            await srs_caller.recvfrom(2048)
        assert waited.cancelled_caught  # nothing more reaches the SRS
    assert env.calls == 1
    await call.bye()  # type: ignore[attr-defined]
    await eventually(lambda: env.calls == 0)
    assert len(srs.requests("BYE")) == 0  # no second BYE from us


async def test_a_refusing_srs_is_followed_by_the_next_one(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await siprec_env(
        nursery, tmp_path, voipgw_seed, fallbacks=["sip:srs@127.0.0.10:5060"]
    )
    spare = SipAgent(
        env.network,
        ("127.0.0.10", 5060),
        ids=SeededIds(voipgw_seed + 10),
        user="srs",
        proxy=GW,
        auto=None,
    )
    await nursery.start(spare.serve)
    call, _, _ = await answered_call(env)
    await (await srs.next_call()).answer(503)
    recording = await spare.next_call()
    assert recording.invite.headers.get("Require") == "siprec"
    await recording.answer(200, sdp=srs_answer())
    await call.bye()  # type: ignore[attr-defined]
    bye = await spare.next_request("BYE", timeout=10)
    assert bye.request.call_id == recording.invite.call_id
    assert srs.requests("BYE") == []


async def test_a_hold_and_a_resume_re_invite_the_srs(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # alice's phone answers by itself: the call, and the re-INVITEs the holds relay to it.
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    assert (await call.final()).status == 200
    recording = await srs.next_call()
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)

    async def srs_directions() -> list[str]:
        update = await srs.next_request("INVITE", timeout=10)
        assert update.request.call_id == recording.invite.call_id  # in the recording dialog
        await srs.respond(update, 200, body=srs_answer(), content_type="application/sdp")
        offer = parse_sdp_untrusted(update.request.body)
        return [m.attributes.direction().value for m in offer.media]  # type: ignore[union-attr]

    held = simple_sdp("127.0.0.1", CALLER_PORT, direction="sendonly")
    assert (await call.reinvite(held)).status == 200  # type: ignore[attr-defined]
    assert await srs_directions() == ["inactive", "inactive"]
    resumed = simple_sdp("127.0.0.1", CALLER_PORT, direction="sendrecv", version=3)
    assert (await call.reinvite(resumed)).status == 200  # type: ignore[attr-defined]
    assert await srs_directions() == ["sendonly", "sendonly"]
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("BYE", timeout=10)
