"""SIPREC through the B2BUA (the ``siprec`` tap, RFC 7866): the recorder (SRS) is a SIP agent on
the in-memory network; the call's RTP and the copies the gateway sends the SRS run on real
127.0.0.1 sockets, in virtual time.

- a recorded call opens a recording session: INVITE with Require: siprec, a +sip.src Contact,
  a multipart body with an SDP of two sendonly labelled streams and the RFC 7865 metadata; each
  direction's packets reach the SRS port its answer gave for that label; the call's end BYEs it;
- an SRS that refuses leaves the call going, unrecorded;
- an SRS that hangs up stops the copies, and the call goes on;
- a blind transfer re-INVITEs the SRS with metadata naming the new party (RFC 7866 §9), the
  one who left disassociated, every id kept (also when the SRS refuses the first re-INVITE:
  the resend carries it); the copies go on; the final snapshot at the call's end keeps the
  time the transferred party left.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio

from gateway.core.ids import SeededIds
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.taps.siprec import NAMESPACE, srs_sdp
from gateway.testing.sip_agent import AutoAnswer, SipAgent, simple_sdp
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    RING_AND_ANSWER,
    eventually,
)
from tests.component.calls.dtls_phone import bind
from tests.component.calls.siprec_calls import (
    CALLEE_PORT,
    CALLER_PORT,
    NS,
    SRS_PORT,
    answered_call,
    metadata_of,
    participants_of,
    rtp,
    siprec_env,
    srs_answer,
)
from tests.port_blocks import port_bases


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


async def test_an_update_the_srs_answers_491_is_sent_again_after_rfc_3261_s_wait(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The SRS's own re-INVITE crossed ours (glare): it answers 491. We chose the recording
    # session's Call-ID, so ours goes again 2.1-4 s later (§14.1), with the streams as they are.
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed, alice_auto=AutoAnswer())
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    assert (await call.final()).status == 200
    recording = await srs.next_call()
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)

    held = simple_sdp("127.0.0.1", CALLER_PORT, direction="sendonly")
    assert (await call.reinvite(held)).status == 200  # type: ignore[attr-defined]
    first = await srs.next_request("INVITE", timeout=10)
    refused_at = trio.current_time()
    await srs.respond(first, 491)
    again = await srs.next_request("INVITE", timeout=10)
    assert 2.1 <= trio.current_time() - refused_at <= 4.05
    assert again.request.call_id == recording.invite.call_id
    assert again.request.cseq.number > first.request.cseq.number
    offer = parse_sdp_untrusted(again.request.body)
    assert [m.attributes.direction().value for m in offer.media] == ["inactive", "inactive"]
    await srs.respond(again, 200, body=srs_answer(), content_type="application/sdp")
    await call.bye()  # type: ignore[attr-defined]
    await srs.next_request("BYE", timeout=10)


(BOB_MEDIA_PORT,) = port_bases(1)  # bound on 127.0.0.4


@pytest.mark.parametrize("refused_first", [False, True], ids=["taken", "refused-first"])
async def test_a_blind_transfer_re_invites_the_srs_with_the_new_party_and_the_copies_go_on(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    refused_first: bool,
) -> None:
    env, srs = await siprec_env(nursery, tmp_path, voipgw_seed)
    bob = SipAgent(
        env.network,
        ("127.0.0.4", 5060),
        ids=SeededIds(voipgw_seed + 3),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        auto=RING_AND_ANSWER,
        media_port=BOB_MEDIA_PORT,
    )
    await nursery.start(bob.serve)
    assert (await bob.register()).status == 200
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=simple_sdp("127.0.0.1", CALLER_PORT))
    alice_leg = await env.alice.next_call()
    port_to_alice = parse_sdp_untrusted(alice_leg.invite.body).media[0].port
    await alice_leg.answer(200, sdp=simple_sdp("127.0.0.1", CALLEE_PORT))
    final = await call.final()
    assert final.status == 200
    to_caller_side = ("127.0.0.1", parse_sdp_untrusted(final.body).media[0].port)
    await env.alice.next_request("ACK")

    recording = await srs.next_call()
    first = metadata_of(recording.invite.body)
    (session_id,) = [s.get("session_id") for s in first.findall("r:session", NS)]
    stream_ids = {
        s.findtext("r:label", namespaces=NS): s.get("stream_id")
        for s in first.findall("r:stream", NS)
    }
    before = participants_of(first)
    assert len(before) == 2 and "sip:bob@" not in str(before.values())
    await recording.answer(200, sdp=srs_answer())
    await srs.next_request("ACK", timeout=5)

    # alice (the callee) transfers the caller to bob, blind (RFC 3515), and hangs up.
    exchange = await alice_leg.request("REFER", extra=[("Refer-To", "<sip:bob@127.0.0.1:5060>")])
    assert (await exchange.final()).status == 202
    while sipfrag(await env.alice.next_request("NOTIFY", timeout=30)) != "SIP/2.0 200 OK":
        pass
    assert (await alice_leg.bye()).status == 200

    # The SRS hears of it in its recording dialog: a re-INVITE with the metadata again (one
    # for the streams alone, if bob's answer changed them, may come first). An SRS that
    # refuses the first one (500) gets the metadata all the same, in the resend.
    update = None
    for attempt in range(4):
        received = await srs.next_request("INVITE", timeout=10)
        assert received.request.call_id == recording.invite.call_id
        if refused_first and attempt == 0:
            await srs.respond(received, 500)
            continue
        await srs.respond(received, 200, body=srs_answer(), content_type="application/sdp")
        if b"<recording" in received.request.body:
            update = received.request
            break
    assert update is not None
    content_type = update.headers.get("Content-Type") or ""
    assert content_type.startswith("multipart/mixed;boundary=")
    offer = parse_sdp_untrusted(srs_sdp(content_type, update.body))
    assert [m.attributes.get("label") for m in offer.media] == ["1", "2"]
    assert all(m.attributes.has("sendonly") for m in offer.media)
    root = metadata_of(update.body)
    assert root.tag == f"{{{NAMESPACE}}}recording"
    assert [s.get("session_id") for s in root.findall("r:session", NS)] == [session_id]
    assert {
        s.findtext("r:label", namespaces=NS): s.get("stream_id")
        for s in root.findall("r:stream", NS)
    } == stream_ids
    # A party left, the communication session goes on (RFC 7865 §6.3): the start-time it had,
    # no stop-time yet.
    started = first.findtext("r:session/r:start-time", namespaces=NS)
    assert started is not None
    assert root.findtext("r:session/r:start-time", namespaces=NS) == started
    assert root.find("r:session/r:stop-time", NS) is None
    after = participants_of(root)
    assert {k: v for k, v in after.items() if k in before} == before  # ids and aors kept
    (bob_id,) = [k for k in after if k not in before]
    assert str(after[bob_id]).startswith("sip:bob@")
    caller_id, alice_id = before  # in the order the first metadata gave them: caller, callee
    assert str(before[caller_id]).startswith("sip:+1")  # the trunk's caller
    left = {
        a.get("participant_id"): a.findtext("r:disassociate-time", namespaces=NS)
        for a in root.findall("r:participantsessionassoc", NS)
    }
    assert left[caller_id] is None and left[bob_id] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", left[alice_id] or "")
    relations = {
        a.get("participant_id"): (
            [e.text for e in a.findall("r:send", NS)],
            [e.text for e in a.findall("r:recv", NS)],
        )
        for a in root.findall("r:participantstreamassoc", NS)
    }
    # alice's stream association stays, ended when she left (RFC 7865 §6.8: the SRS learns
    # when she stopped sending); bob's starts then.
    assert relations == {
        caller_id: ([stream_ids["1"]], [stream_ids["2"]]),
        alice_id: ([stream_ids["2"]], [stream_ids["1"]]),
        bob_id: ([stream_ids["2"]], [stream_ids["1"]]),
    }
    assert stream_times(root) == session_times(root)
    assert stream_times(root)[bob_id][0] == left[alice_id]

    # The copies go on: the caller's and now bob's packets reach the SRS, each in its stream.
    bob_sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await bob_sock.bind(("127.0.0.4", BOB_MEDIA_PORT))
    with (
        bob_sock,
        await bind(CALLER_PORT) as caller,
        await bind(SRS_PORT) as srs_caller,
        await bind(SRS_PORT + 2) as srs_callee,
    ):
        for seq in range(10):
            await caller.sendto(rtp(seq, 0x11, 0x1111), to_caller_side)
            await bob_sock.sendto(rtp(seq, 0x33, 0x3333), ("127.0.0.1", port_to_alice))
            await trio.sleep(0.02)
        got: dict[str, list[bytes]] = {"caller": [], "bob": []}
        for name, sock in (("caller", srs_caller), ("bob", srs_callee)):
            with trio.move_on_after(2):
                while len(got[name]) < 10:
                    data, _ = await sock.recvfrom(2048)
                    got[name].append(data)
    assert got["caller"] == [rtp(seq, 0x11, 0x1111) for seq in range(10)]
    assert got["bob"] == [rtp(seq, 0x33, 0x3333) for seq in range(10)]

    # The call's end: the final snapshot keeps every id, alice's time of leaving too, and
    # disassociates the caller and bob; then the BYE.
    await call.bye()  # type: ignore[attr-defined]
    final = await srs.next_request("INVITE", timeout=10)
    await srs.respond(final, 200, body=srs_answer(), content_type="application/sdp")
    ended_root = metadata_of(final.request.body)
    assert participants_of(ended_root) == after
    ended = {
        a.get("participant_id"): a.findtext("r:disassociate-time", namespaces=NS)
        for a in ended_root.findall("r:participantsessionassoc", NS)
    }
    assert ended[alice_id] == left[alice_id] and ended[caller_id] and ended[bob_id], ended
    # Every stream association ended too, each when its party left.
    assert {k: v[1] for k, v in stream_times(ended_root).items()} == ended
    assert stream_times(ended_root) == session_times(ended_root)
    # The call stopped when the caller and bob were disassociated; it started when it did.
    assert ended_root.findtext("r:session/r:start-time", namespaces=NS) == started
    assert ended_root.findtext("r:session/r:stop-time", namespaces=NS) == ended[bob_id]
    bye = await srs.next_request("BYE", timeout=10)
    assert bye.request.call_id == recording.invite.call_id
    await eventually(lambda: env.calls == 0)


def _times(root: ET.Element, path: str) -> dict[str | None, tuple[str | None, str | None]]:
    return {
        a.get("participant_id"): (
            a.findtext("r:associate-time", namespaces=NS),
            a.findtext("r:disassociate-time", namespaces=NS),
        )
        for a in root.findall(path, NS)
    }


def session_times(root: ET.Element) -> dict[str | None, tuple[str | None, str | None]]:
    """Each participant's (associate-time, disassociate-time) in the communication session."""
    return _times(root, "r:participantsessionassoc")


def stream_times(root: ET.Element) -> dict[str | None, tuple[str | None, str | None]]:
    """Each participant's (associate-time, disassociate-time) with the streams."""
    return _times(root, "r:participantstreamassoc")


def sipfrag(notify: object) -> str:
    return notify.request.body.decode().strip()  # type: ignore[attr-defined]
