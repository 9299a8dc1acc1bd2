"""SIPREC with SRTP towards the recorder (``[plugins.siprec] media_security = "sdes"``) through
the B2BUA: the SRS is a SIP agent on the in-memory network reached over the ``tls`` stand-in
(memory datagrams whose flows are secure: what the core checks before it sends keys); the call's
RTP and the copies run on real 127.0.0.1 sockets, in virtual time. An independent libsrtp
binding (pylibsrtp's own Session) decrypts what the SRS receives.

- the recording session offers RTP/SAVP with a key per stream, over TLS only; the SRS answers
  with its own crypto lines; every copy it receives decrypts, under the key our offer gave for
  its label, to exactly the packet the call carried, and none is in clear; a hold re-INVITEs
  it with the same crypto lines and the copies after it still decrypt under the same keys;
- an SRS that answers plain RTP/AVP (no crypto line) gets a BYE, nothing in clear, and the
  call goes on unrecorded;
- a re-INVITE whose next hop is not TLS (an SRS Contact without ``transport=tls``) is not sent;
- an INVITE to a ``sips:`` SRS carries a ``sips:`` Contact (RFC 3261 §12.1.1);
- after a 481 the new recording session is offered fresh keys, and the copies go on under them.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pylibsrtp
import pytest
import trio

from gateway.core.ids import SeededIds
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.sdes import parse_crypto_untrusted
from gateway.plugins.taps.siprec import srs_sdp
from gateway.testing.sip_agent import simple_sdp
from tests.component.calls.b2bua_env import GW, eventually
from tests.component.calls.dtls_phone import bind
from tests.component.calls.siprec_calls import rtp
from tests.component.calls.siprec_srtp_calls import (
    CALLEE_PORT,
    CALLER_PORT,
    GW_TLS,
    SRS_KEYS,
    SRS_PORT,
    TlsSrs,
    answered_call,
    srtp_answer,
    srtp_env,
)


def checkers(offer: SessionDescription) -> list[pylibsrtp.Session]:
    """What the SRS decrypts each label with: the key our offer gave it (RFC 4568 §5.1.2)."""
    sessions = []
    for media in offer.media:
        ours = parse_crypto_untrusted(media.attributes.values("crypto")[0])
        assert ours.suite == "AES_CM_128_HMAC_SHA1_80"
        policy = pylibsrtp.Policy(
            key=ours.keys[0].key_salt,
            ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
            srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        )
        sessions.append(pylibsrtp.Session(policy))
    return sessions


async def exchange(
    to_caller_side: tuple[str, int], to_callee_side: tuple[str, int], seqs: range
) -> dict[str, list[bytes]]:
    """Send ``seqs`` both ways through the call; what the SRS's two ports receive."""
    got: dict[str, list[bytes]] = {"caller": [], "callee": []}
    with (
        await bind(CALLER_PORT) as caller,
        await bind(CALLEE_PORT) as callee,
        await bind(SRS_PORT) as srs_caller,
        await bind(SRS_PORT + 2) as srs_callee,
    ):
        for seq in seqs:
            await caller.sendto(rtp(seq, 0x11, 0x1111), to_caller_side)
            await callee.sendto(rtp(seq, 0x22, 0x2222), to_callee_side)
            await trio.sleep(0.02)
        for name, sock in (("caller", srs_caller), ("callee", srs_callee)):
            with trio.move_on_after(2):
                while len(got[name]) < len(seqs):
                    data, _ = await sock.recvfrom(2048)
                    got[name].append(data)
    return got


async def test_the_copies_are_srtp_under_the_keys_the_offer_gave_and_a_hold_keeps_them(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    env, srs = await srtp_env(nursery, tmp_path, voipgw_seed)
    call, to_caller_side, to_callee_side = await answered_call(env)
    recording = await srs.next_call()
    assert recording.incoming is not None and recording.incoming.source == GW_TLS  # over TLS
    invite = recording.invite
    offer = parse_sdp_untrusted(srs_sdp(invite.headers.get("Content-Type"), invite.body))
    assert [m.proto for m in offer.media] == ["RTP/SAVP", "RTP/SAVP"]
    assert [len(m.attributes.values("crypto")) for m in offer.media] == [1, 1]
    await recording.answer(200, sdp=srtp_answer(offer))
    await srs.next_request("ACK", timeout=5)

    to_srs = checkers(offer)
    got = await exchange(to_caller_side, to_callee_side, range(10))
    for name, byte, ssrc, checker in (
        ("caller", 0x11, 0x1111, to_srs[0]),
        ("callee", 0x22, 0x2222, to_srs[1]),
    ):
        assert len(got[name]) == 10, name
        assert all(bytes([byte]) * 16 not in packet for packet in got[name])  # never in clear
        assert [checker.unprotect(p) for p in got[name]] == [rtp(s, byte, ssrc) for s in range(10)]

    # A hold re-INVITEs the SRS with the same crypto lines (RFC 4568 §7.1.4): same keys.
    held = simple_sdp("127.0.0.1", CALLER_PORT, direction="sendonly")
    assert (await call.reinvite(held)).status == 200  # type: ignore[attr-defined]
    update = await srs.next_request("INVITE", timeout=10)
    assert update.source == GW_TLS
    reoffer = parse_sdp_untrusted(update.request.body)
    assert [m.attributes.values("crypto") for m in reoffer.media] == [
        m.attributes.values("crypto") for m in offer.media
    ]
    await srs.respond(update, 200, body=srtp_answer(reoffer), content_type="application/sdp")
    resumed = simple_sdp("127.0.0.1", CALLER_PORT, direction="sendrecv", version=3)
    assert (await call.reinvite(resumed)).status == 200  # type: ignore[attr-defined]
    update = await srs.next_request("INVITE", timeout=10)
    await srs.respond(update, 200, body=srtp_answer(reoffer), content_type="application/sdp")
    await trio.sleep(1)
    later = await exchange(to_caller_side, to_callee_side, range(10, 15))
    # The same contexts on both sides go on: the checker decrypts with its state kept.
    assert [to_srs[0].unprotect(p) for p in later["caller"]] == [
        rtp(s, 0x11, 0x1111) for s in range(10, 15)
    ]

    # No key in the call's record (it names the tap) nor in any log line.
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    record = json.dumps(gateway_call.security_record(), default=str)
    assert "siprec" in record
    keys = [m.attributes.values("crypto")[0].split("inline:")[1] for m in offer.media]
    keys += [base64.b64encode(key).decode() for key in SRS_KEYS]
    await call.bye()  # type: ignore[attr-defined]
    bye = await srs.next_request("BYE", timeout=10)
    assert bye.source == GW_TLS
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: "over SRTP" in caplog.text)
    assert not any(key[:20] in record or key[:20] in caplog.text for key in keys)


async def test_an_srs_answering_plain_rtp_gets_a_bye_and_the_call_goes_on_unrecorded(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    env, srs = await srtp_env(nursery, tmp_path, voipgw_seed)
    call, to_caller_side, to_callee_side = await answered_call(env)
    recording = await srs.next_call()
    invite = recording.invite
    offer = parse_sdp_untrusted(srs_sdp(invite.headers.get("Content-Type"), invite.body))
    await recording.answer(200, sdp=srtp_answer(offer, proto="RTP/AVP", crypto=False))
    bye = await srs.next_request("BYE", timeout=10)
    assert bye.request.call_id == invite.call_id
    got = await exchange(to_caller_side, to_callee_side, range(5))
    assert got == {"caller": [], "callee": []}  # nothing reaches the SRS, in clear or not
    assert env.calls == 1
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []
    assert "does not take SRTP" in caplog.text
    await call.bye()  # type: ignore[attr-defined]
    await eventually(lambda: env.calls == 0)
    assert len(srs.requests("BYE")) == 1  # ours, once


async def test_a_re_invite_with_keys_is_not_sent_where_the_dialog_leaves_tls(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    env, srs = await srtp_env(nursery, tmp_path, voipgw_seed)
    srs.tls_contact = False  # its Contact: sip:srs@127.0.0.9:5061, i.e. UDP
    call, _, _ = await answered_call(env)
    recording = await srs.next_call()
    invite = recording.invite
    offer = parse_sdp_untrusted(srs_sdp(invite.headers.get("Content-Type"), invite.body))
    await recording.answer(200, sdp=srtp_answer(offer))
    await srs.next_request("ACK", timeout=5)
    held = simple_sdp("127.0.0.1", CALLER_PORT, direction="sendonly")
    assert (await call.reinvite(held)).status == 200  # type: ignore[attr-defined]
    await eventually(lambda: "re-INVITE not sent" in caplog.text)
    assert "not TLS (RFC 4568 §8.3)" in caplog.text
    assert len(srs.requests("INVITE")) == 1  # the first one only
    await call.bye()  # type: ignore[attr-defined]
    await eventually(lambda: env.calls == 0)


async def test_the_srs_tried_next_is_offered_keys_of_its_own(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The SRS that refused has seen the keys it was offered: the next one gets fresh ones.
    env, srs = await srtp_env(
        nursery, tmp_path, voipgw_seed, fallbacks=["sips:srs@127.0.0.10:5061"]
    )
    spare = TlsSrs(
        env.network,
        ("127.0.0.10", 5061),
        ids=SeededIds(voipgw_seed + 10),
        user="srs",
        proxy=GW,
        auto=None,
    )
    await nursery.start(spare.serve)
    call, _, _ = await answered_call(env)
    refusing = await srs.next_call()
    await refusing.answer(503)
    recording = await spare.next_call()
    assert recording.incoming is not None and recording.incoming.source == GW_TLS
    # RFC 3261 §12.1.1: an INVITE to a sips: URI carries a sips: Contact; to sip:...;transport=tls
    # the Contact says transport=tls.
    assert (recording.invite.headers.get("Contact") or "").startswith("<sips:")
    assert "+sip.src" in (recording.invite.headers.get("Contact") or "")
    assert "transport=tls" in (refusing.invite.headers.get("Contact") or "")
    assert (refusing.invite.headers.get("Contact") or "").startswith("<sip:")

    def crypto(invite: object) -> list[str]:
        body = srs_sdp(invite.headers.get("Content-Type"), invite.body)  # type: ignore[attr-defined]
        return [v for m in parse_sdp_untrusted(body).media for v in m.attributes.values("crypto")]

    first, second = crypto(refusing.invite), crypto(recording.invite)
    assert len(first) == len(second) == 2
    assert set(first).isdisjoint(second)
    offer = parse_sdp_untrusted(
        srs_sdp(recording.invite.headers.get("Content-Type"), recording.invite.body)
    )
    await recording.answer(200, sdp=srtp_answer(offer))
    await call.bye()  # type: ignore[attr-defined]
    await spare.next_request("BYE", timeout=10)
    await eventually(lambda: env.calls == 0)


async def test_a_new_recording_session_after_a_481_is_keyed_afresh(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await srtp_env(nursery, tmp_path, voipgw_seed)
    call, to_caller_side, to_callee_side = await answered_call(env)
    recording = await srs.next_call()
    offer = parse_sdp_untrusted(
        srs_sdp(recording.invite.headers.get("Content-Type"), recording.invite.body)
    )
    await recording.answer(200, sdp=srtp_answer(offer))
    await srs.next_request("ACK", timeout=5)
    held = simple_sdp("127.0.0.1", CALLER_PORT, direction="sendonly")
    assert (await call.reinvite(held)).status == 200  # type: ignore[attr-defined]
    await srs.respond(await srs.next_request("INVITE", timeout=10), 481)
    again = await srs.next_call(timeout=5)
    assert again.incoming is not None and again.incoming.source == GW_TLS
    new_offer = parse_sdp_untrusted(
        srs_sdp(again.invite.headers.get("Content-Type"), again.invite.body)
    )
    old_lines = [v for m in offer.media for v in m.attributes.values("crypto")]
    new_lines = [v for m in new_offer.media for v in m.attributes.values("crypto")]
    assert len(new_lines) == 2 and set(old_lines).isdisjoint(new_lines)  # RFC 4568 §6.1
    await again.answer(200, sdp=srtp_answer(new_offer))
    await srs.next_request("ACK", timeout=5)
    resumed = simple_sdp("127.0.0.1", CALLER_PORT, direction="sendrecv", version=3)
    assert (await call.reinvite(resumed)).status == 200  # type: ignore[attr-defined]
    update = await srs.next_request("INVITE", timeout=10)
    assert update.request.call_id == again.invite.call_id
    reoffer = parse_sdp_untrusted(update.request.body)
    await srs.respond(update, 200, body=srtp_answer(reoffer), content_type="application/sdp")
    await trio.sleep(1)
    to_srs = checkers(new_offer)
    got = await exchange(to_caller_side, to_callee_side, range(20, 25))
    assert [to_srs[0].unprotect(p) for p in got["caller"]] == [
        rtp(s, 0x11, 0x1111) for s in range(20, 25)
    ]
    assert [to_srs[1].unprotect(p) for p in got["callee"]] == [
        rtp(s, 0x22, 0x2222) for s in range(20, 25)
    ]
    await call.bye()  # type: ignore[attr-defined]
    await eventually(lambda: env.calls == 0)
