"""A paused SIPREC recording with SRTP towards the recorder (``media_security = "sdes"``): the
pause re-INVITEs the SRS with its streams a=inactive and the same keys; the resume re-INVITEs
it sendonly with fresh keys (RFC 4568 §7.1.4), so that the SRTP index of the copies starts
afresh although the phones' sequence numbers went on (here by 40,000 across their wrap: under
the old context libsrtp's index guess, RFC 3711 §3.3.1, takes such packets for old ones and
refuses them); the resumed copies decrypt under the new keys. The SRS is a SIP agent over the
``tls`` stand-in, the media on real 127.0.0.1 sockets, in virtual time."""

from __future__ import annotations

import json

import pylibsrtp
import trio

from gateway.core.control import respond
from gateway.core.sdp.model import SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.sdes import parse_crypto_untrusted
from gateway.plugins.taps.siprec import srs_sdp
from gateway.testing.sip_agent import Received
from tests.component.calls.b2bua_env import B2bua, eventually
from tests.component.calls.dtls_phone import bind
from tests.component.calls.siprec_calls import rtp
from tests.component.calls.siprec_srtp_calls import (
    CALLER_PORT,
    SRS_PORT,
    TlsSrs,
    answered_call,
    srtp_answer,
    srtp_env,
)


def offer_of(request: Received) -> SessionDescription:
    headers = request.request.headers
    return parse_sdp_untrusted(srs_sdp(headers.get("Content-Type"), request.request.body))


def checker(offer: SessionDescription) -> pylibsrtp.Session:
    """What the SRS decrypts the caller's copies (label 1) with: the key our offer gave."""
    ours = parse_crypto_untrusted(offer.media[0].attributes.values("crypto")[0])
    policy = pylibsrtp.Policy(
        key=ours.keys[0].key_salt,
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    )
    return pylibsrtp.Session(policy)


async def caller_copies(to_caller_side: tuple[str, int], seqs: list[int]) -> list[bytes]:
    """Send ``seqs`` from the caller through the call; what the SRS's label-1 port gets."""
    got: list[bytes] = []
    with await bind(CALLER_PORT) as caller, await bind(SRS_PORT) as srs_caller:
        for seq in seqs:
            await caller.sendto(rtp(seq, 0x11, 0x1111), to_caller_side)
            await trio.sleep(0.02)
        with trio.move_on_after(2):
            while len(got) < len(seqs):
                got.append((await srs_caller.recvfrom(2048))[0])
    return got


def ask(env: B2bua, action: str, call_id: str) -> dict[str, object]:
    request = json.dumps({"query": "recording", "action": action, "call_id": call_id, "by": "a"})
    answer = json.loads(respond(request.encode() + b"\n", env.gateway.control_answer))
    assert isinstance(answer, dict)
    return answer


async def test_the_resume_of_a_paused_srtp_recording_is_keyed_afresh(
    nursery: trio.Nursery, tmp_path: object, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, srs = await srtp_env(nursery, tmp_path, voipgw_seed)  # type: ignore[arg-type]
    call, to_caller_side, _ = await answered_call(env)
    recording = await srs.next_call()
    invite = recording.invite
    offer = parse_sdp_untrusted(srs_sdp(invite.headers.get("Content-Type"), invite.body))
    await recording.answer(200, sdp=srtp_answer(offer))
    await srs.next_request("ACK", timeout=5)
    first = checker(offer)
    before = list(range(60_000, 60_005))
    got = await caller_copies(to_caller_side, before)
    assert [first.unprotect(p) for p in got] == [rtp(s, 0x11, 0x1111) for s in before]

    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert ask(env, "pause", gateway_call.id)["paused"] is True
    paused = await srs.next_request("INVITE", timeout=10)
    pause_offer = offer_of(paused)
    assert [m.attributes.direction().value for m in pause_offer.media] == ["inactive"] * 2  # type: ignore[union-attr]
    # The pause itself keeps the keys (RFC 4568 §7.1.4): nothing is sent under them meanwhile.
    assert [m.attributes.values("crypto") for m in pause_offer.media] == [
        m.attributes.values("crypto") for m in offer.media
    ]
    await srs.respond(paused, 200, body=srtp_answer(pause_offer), content_type="application/sdp")
    during = [(60_005 + step) % 65_536 for step in range(0, 40_000, 8_000)]
    assert await caller_copies(to_caller_side, during) == []

    assert ask(env, "resume", gateway_call.id)["paused"] is False
    resumed = await srs.next_request("INVITE", timeout=10)
    resume_offer = offer_of(resumed)
    assert [m.attributes.direction().value for m in resume_offer.media] == ["sendonly"] * 2  # type: ignore[union-attr]
    fresh = [m.attributes.values("crypto") for m in resume_offer.media]
    assert all(
        new != old
        for new, old in zip(
            fresh, [m.attributes.values("crypto") for m in offer.media], strict=True
        )
    )
    await srs.respond(resumed, 200, body=srtp_answer(resume_offer), content_type="application/sdp")
    await trio.sleep(1)
    # The phones' sequence numbers moved on by 40,000 while paused, past their wrap.
    seqs = [(60_005 + 40_000 + n) % 65_536 for n in range(5)]
    second = checker(resume_offer)
    got = await caller_copies(to_caller_side, seqs)
    assert [second.unprotect(p) for p in got] == [rtp(s, 0x11, 0x1111) for s in seqs]
    await call.bye()  # type: ignore[attr-defined]


async def paused_srtp_recording(
    nursery: trio.Nursery, tmp_path: object, seed: int
) -> tuple[B2bua, TlsSrs, object, tuple[str, int], object, SessionDescription]:
    """A recorded SRTP call, paused and the pause answered: the env, the SRS, the call, where
    the caller sends, the recording (the SRS's side of it) and the first offer."""
    env, srs = await srtp_env(nursery, tmp_path, seed)  # type: ignore[arg-type]
    call, to_caller_side, _ = await answered_call(env)
    recording = await srs.next_call()
    invite = recording.invite
    offer = parse_sdp_untrusted(srs_sdp(invite.headers.get("Content-Type"), invite.body))
    await recording.answer(200, sdp=srtp_answer(offer))
    await srs.next_request("ACK", timeout=5)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert ask(env, "pause", gateway_call.id)["paused"] is True
    paused = await srs.next_request("INVITE", timeout=10)
    await srs.respond(
        paused, 200, body=srtp_answer(offer_of(paused)), content_type="application/sdp"
    )
    await srs.next_request("ACK", timeout=5)
    return env, srs, call, to_caller_side, recording, offer


async def test_the_resumed_copies_wait_for_the_srs_to_answer_the_fresh_keys(
    nursery: trio.Nursery, tmp_path: object, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Under the old context, past 2^15 sequence numbers of pause, the SRS refuses them (RFC
    # 3711 §3.3.1); it has not the new keys until it answers: nothing goes meanwhile.
    env, srs, call, to_caller_side, _, _ = await paused_srtp_recording(
        nursery, tmp_path, voipgw_seed
    )
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert ask(env, "resume", gateway_call.id)["paused"] is False
    resumed = await srs.next_request("INVITE", timeout=10)
    waiting = [(60_000 + 40_000 + n) % 65_536 for n in range(5)]
    assert await caller_copies(to_caller_side, waiting) == []  # the SRS has not answered
    resume_offer = offer_of(resumed)
    await srs.respond(resumed, 200, body=srtp_answer(resume_offer), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    await trio.sleep(1)  # virtual time: the answer taken
    seqs = [(60_000 + 40_005 + n) % 65_536 for n in range(5)]
    got = await caller_copies(to_caller_side, seqs)
    second = checker(resume_offer)
    assert [second.unprotect(p) for p in got] == [rtp(s, 0x11, 0x1111) for s in seqs]
    await call.bye()  # type: ignore[attr-defined]


async def test_an_srs_offer_while_the_resume_waits_is_answered_inactive_and_the_resume_sent_again(
    nursery: trio.Nursery, tmp_path: object, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # The SRS refuses the resume's re-INVITE (488: given up at once), then offers of its own
    # (a recording moved): it last took the streams inactive, and our answer could only
    # repeat the old keys, so it is answered inactive, and the resume with fresh keys follows.
    env, srs, call, to_caller_side, recording, offer = await paused_srtp_recording(
        nursery, tmp_path, voipgw_seed
    )
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert ask(env, "resume", gateway_call.id)["paused"] is False
    await srs.respond(await srs.next_request("INVITE", timeout=10), 488)
    # The refusal taken and the resume given up before the SRS offers: while our re-INVITE is
    # out its offer would get 491 (RFC 3261 §14.1), whichever task trio runs first.
    (tap,) = [tap for _, tap in env.gateway.plugins.media_taps.items()]
    await eventually(lambda: tap.update_failures["refused"] == 1)  # type: ignore[attr-defined]
    exchange = await recording.request(  # type: ignore[attr-defined]
        "INVITE", body=srtp_answer(offer), content_type="application/sdp"
    )
    answer = await exchange.final()
    assert answer.status == 200
    ours = parse_sdp_untrusted(answer.body)
    assert [m.attributes.direction().value for m in ours.media] == ["inactive"] * 2  # type: ignore[union-attr]
    assert await caller_copies(to_caller_side, [1, 2, 3]) == []
    again = await srs.next_request("INVITE", timeout=10)
    again_offer = offer_of(again)
    assert [m.attributes.direction().value for m in again_offer.media] == ["sendonly"] * 2  # type: ignore[union-attr]
    assert [m.attributes.values("crypto") for m in again_offer.media] != [
        m.attributes.values("crypto") for m in offer.media
    ]
    await srs.respond(again, 200, body=srtp_answer(again_offer), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    await trio.sleep(1)
    got = await caller_copies(to_caller_side, [4, 5, 6])
    fresh = checker(again_offer)
    assert [fresh.unprotect(p) for p in got] == [rtp(s, 0x11, 0x1111) for s in (4, 5, 6)]
    await call.bye()  # type: ignore[attr-defined]


async def test_an_srs_answer_in_its_ack_while_the_resume_waits_sends_the_resume_again(
    nursery: trio.Nursery, tmp_path: object, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # As an SRS offer does, a re-INVITE without one (our 2xx offers the SDP in force, its ACK
    # answers, RFC 3261 §14.2) shows the SRS is there: the given-up resume goes at once, not
    # at the next minute's retry.
    env, srs, call, to_caller_side, recording, _ = await paused_srtp_recording(
        nursery, tmp_path, voipgw_seed
    )
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert ask(env, "resume", gateway_call.id)["paused"] is False
    await srs.respond(await srs.next_request("INVITE", timeout=10), 488)
    (tap,) = [tap for _, tap in env.gateway.plugins.media_taps.items()]
    await eventually(lambda: tap.update_failures["refused"] == 1)  # type: ignore[attr-defined]
    recording.ack_answer = lambda offered: srtp_answer(  # type: ignore[attr-defined]
        parse_sdp_untrusted(offered)
    )
    ours = await recording.reinvite(b"")  # type: ignore[attr-defined]
    assert ours.status == 200
    in_force = parse_sdp_untrusted(ours.body)
    assert [m.attributes.direction().value for m in in_force.media] == ["inactive"] * 2  # type: ignore[union-attr]
    again = await srs.next_request("INVITE", timeout=10)  # the retry would come after 60 s
    again_offer = offer_of(again)
    assert [m.attributes.direction().value for m in again_offer.media] == ["sendonly"] * 2  # type: ignore[union-attr]
    await srs.respond(again, 200, body=srtp_answer(again_offer), content_type="application/sdp")
    await srs.next_request("ACK", timeout=5)
    await trio.sleep(1)
    got = await caller_copies(to_caller_side, [4, 5, 6])
    fresh = checker(again_offer)
    assert [fresh.unprotect(p) for p in got] == [rtp(s, 0x11, 0x1111) for s in (4, 5, 6)]
    await call.bye()  # type: ignore[attr-defined]
