"""ZRTP through the B2BUA: signalling on the in-memory network, the ZRTP exchange on real
127.0.0.1 sockets between the gateway's relay and an in-process phone built from the same
engine (with a ZID of its own), in virtual time.

- a ZRTP caller: answered in RTP/AVP with our a=zrtp-hash, keyed by the exchange, the SAS in
  the call record; the callee sees nothing of ZRTP;
- a callee offered ZRTP next to nothing else (UDP signalling: no SDES), who answers with
  a=zrtp-hash, and one who answers without it (cleartext, no ZRTP packet sent to it);
- a phone that never speaks ZRTP ends the answered call with the stated reason;
- a re-INVITE from the same phone keeps the exchange and its keys;
- a proxy downstream forks our offer: another phone's 200 after a taken early answer is keyed by
  its own exchange, also when one of the two answered in clear (best effort);
- a callee with audio and video: one DH exchange, the other stream keyed in Multistream mode
  from its session key (RFC 6189 §4.4.3), one SAS for the leg;
- forged messages before keys (docs/media_security.md, "Forged handshakes"): a stranger's Error
  or Hello, first at the port or not, ends nothing; the peer is the source whose Hello matched
  its a=zrtp-hash, and without a readable one the SDP address restarts the exchange.
"""

from __future__ import annotations

import select
from pathlib import Path

import attrs
import pytest
import trio

import gateway.plugins.keyexchange.zrtp as zrtp_plugin
from gateway.core.interfaces import SrtpKeys
from gateway.core.sdp.model import MediaDescription, SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.zrtp import ZrtpKeyExchange
from gateway.plugins.keyexchange.zrtp.engine import ZrtpNegotiation
from gateway.plugins.keyexchange.zrtp.packets import (
    COMMIT,
    ERROR_ACK,
    HELLO,
    HELLO_ACK,
    encode_error,
    frame,
    is_zrtp_packet,
    message,
)
from gateway.testing.sip_agent import Call
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually, start_b2bua
from tests.component.calls.b2bua_scenarios import second_phone
from tests.component.calls.dtls_phone import PHONE_PORT, Phone, bind, mirrored
from tests.component.calls.zrtp_pairs import forged_hello, pairs, phone_exchange, zrtp_sdp


async def with_zrtp(nursery: trio.Nursery, tmp_path: Path, seed: int, **kwargs: object) -> B2bua:
    return await start_b2bua(
        nursery,
        tmp_path,
        seed,
        plugins=[("zrtp", zrtp_plugin)],
        **kwargs,  # type: ignore[arg-type]
    )


def gateway_stream(env: B2bua, side: str) -> dict[str, object]:
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    streams = gateway_call.security_record()[side]["streams"]
    assert isinstance(streams, list)
    return dict(streams[0])


def leg_keys(env: B2bua, side: str) -> SrtpKeys | None:
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    leg = gateway_call.a if side == "a" else gateway_call.b
    assert leg is not None and leg.security is not None
    return leg.security.keys(0)


async def b_leg_keyed_by(env: B2bua, phone: Phone) -> None:
    """The phone that answered is keyed by its exchange, and the B leg holds its keys and its
    SAS."""
    with trio.fail_after(10):
        await phone.keyed.wait()
    assert phone.keys is not None and phone.failure is None
    await eventually(lambda: leg_keys(env, "b") == mirrored(phone.keys))  # type: ignore[arg-type]
    record = gateway_stream(env, "b")
    assert isinstance(phone.negotiation, ZrtpNegotiation)
    assert record["key_exchange"] == "zrtp" and record["zrtp_sas"] == phone.negotiation.sas


@attrs.define
class ZrtpCaller:
    phone: Phone
    negotiation: ZrtpNegotiation
    answer: MediaDescription
    call: object


async def zrtp_caller(
    nursery: trio.Nursery, env: B2bua, *, run_phone: bool = True, zrtp_hash: str | None = None
) -> ZrtpCaller:
    """The trunk calls alice from a ZRTP phone; alice answers at once. ``zrtp_hash``: the
    value of the phone's a=zrtp-hash instead of its Hello's."""
    negotiation = phone_exchange().offer(suites=[], secure_signalling=False)
    sdp = zrtp_sdp(negotiation, zrtp_hash=zrtp_hash)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=sdp)
    final = await call.final()
    assert final.status == 200, final.reason
    answer = parse_sdp_untrusted(final.body)
    media = answer.media[0]
    assert media.proto == "RTP/AVP"
    assert (media.attributes.get("zrtp-hash") or "").startswith("1.10 ")
    assert not media.crypto
    negotiation.remote_sdp_attributes(pairs(answer, media))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    # The callee's leg is keyed on its own: the phone's Hello hash is not forwarded (the
    # gateway offers the callee ZRTP with a Hello of its own).
    (phone_hash,) = (v for n, v in negotiation.local_sdp_attributes() if n == "zrtp-hash")
    assert phone_hash is not None and phone_hash.encode() not in leg_b.incoming.request.body
    phone = Phone(negotiation, await bind(), ("127.0.0.1", media.port))
    if run_phone:
        nursery.start_soon(phone.run)
    return ZrtpCaller(phone, negotiation, media, call)


async def test_a_zrtp_caller_is_keyed_by_the_exchange_and_its_sas_is_in_the_record(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_zrtp(nursery, tmp_path, voipgw_seed)
    caller = await zrtp_caller(nursery, env)
    with trio.fail_after(10):
        await caller.phone.keyed.wait()
    assert caller.phone.failure is None and caller.phone.keys is not None
    await eventually(lambda: leg_keys(env, "a") is not None)
    assert leg_keys(env, "a") == mirrored(caller.phone.keys)
    record = gateway_stream(env, "a")
    assert record["key_exchange"] == "zrtp" and record["encrypted"] is True
    assert record["zrtp_sas"] == caller.negotiation.sas and len(str(record["zrtp_sas"])) == 4
    assert record["zrtp_key_agreement"] == "X255"
    assert record["zrtp_peer_client"] == "voipgw"
    # Our ZID is kept for good: the same on the next run of the gateway.
    zid_file = tmp_path / "state" / "zrtp" / "zid"
    assert len(zid_file.read_text().strip()) == 24
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_callee_offered_zrtp_answers_with_it_and_is_keyed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_zrtp(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))  # plain RTP from the trunk
    leg_b = await env.alice.next_call()
    offer = parse_sdp_untrusted(leg_b.invite.body)
    offered = offer.media[0]
    # Best effort over UDP signalling: ZRTP in RTP/AVP, no SDES key in clear.
    assert offered.proto == "RTP/AVP" and not offered.crypto
    assert (offered.attributes.get("zrtp-hash") or "").startswith("1.10 ")
    negotiation = phone_exchange().answer(pairs(offer, offered), suites=[], secure_signalling=False)
    assert negotiation is not None
    phone = Phone(negotiation, await bind(), ("127.0.0.1", offered.port))
    nursery.start_soon(phone.run)
    await leg_b.answer(200, sdp=zrtp_sdp(negotiation))
    final = await call.final()
    assert final.status == 200
    # The trunk's leg is keyed on its own: the phone's Hello hash is not forwarded.
    (phone_hash,) = (v for n, v in negotiation.local_sdp_attributes() if n == "zrtp-hash")
    assert phone_hash is not None and phone_hash.encode() not in final.body
    with trio.fail_after(10):
        await phone.keyed.wait()
    assert phone.keys is not None
    await eventually(lambda: leg_keys(env, "b") is not None)
    assert leg_keys(env, "b") == mirrored(phone.keys)
    record = gateway_stream(env, "b")
    assert record["key_exchange"] == "zrtp" and record["zrtp_sas"] == negotiation.sas
    assert gateway_stream(env, "a")["key_exchange"] == "none"


async def zrtp_early_answer(
    nursery: trio.Nursery, env: B2bua, leg_b: Call, offer: SessionDescription
) -> Phone:
    """A proxy downstream forked our offer: one phone (a ZID of its own, To tag ``fork-2``)
    answers early with its a=zrtp-hash, and its exchange keys the early media, the B leg
    holding its keys. ``leg_b`` answers in its own dialog again after it."""
    offered = offer.media[0]
    early_engine = ZrtpKeyExchange(zid=lambda: b"\x02" * 12).answer(
        pairs(offer, offered), suites=[], secure_signalling=False
    )
    assert early_engine is not None
    early = Phone(early_engine, await bind(PHONE_PORT + 2), ("127.0.0.1", offered.port))
    nursery.start_soon(early.run)
    answering_tag = leg_b.local_tag
    leg_b.local_tag = "fork-2"
    await env.alice.respond(leg_b.incoming, 183, body=zrtp_sdp(early_engine, port=PHONE_PORT + 2))  # type: ignore[arg-type]
    with trio.fail_after(10):
        await early.keyed.wait()
    assert early.keys is not None
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    security = gateway_call.b_legs[0].security
    assert security is not None
    await eventually(lambda: security.keys(0) == mirrored(early.keys))  # type: ignore[arg-type]
    leg_b.local_tag = answering_tag
    return early


async def test_another_phones_200_after_a_taken_early_answer_is_keyed_by_its_own_exchange(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A proxy downstream forks our one offer (one B leg, two To tags, RFC 3261 §12.1.2). One
    phone's 183 answers early: taken, its ZRTP exchange (bound to its a=zrtp-hash, RFC 6189
    §8.1) keys the early media. Then the other phone answers 200 with its own a=zrtp-hash:
    the line's exchange begins afresh for it, with the Hello our offer's a=zrtp-hash names,
    and keys the leg with that phone's keys. Before session 51 the 200 was "a repeated
    answer" to the early phone's exchange: the answering phone's Hellos were dropped (not the
    bound peer's), and the leg stayed keyed with the early phone's keys, which the phone that
    answered does not have: a call up with no audio, and no error said."""
    env = await with_zrtp(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    offer = parse_sdp_untrusted(leg_b.invite.body)
    offered = offer.media[0]
    await zrtp_early_answer(nursery, env, leg_b, offer)

    negotiation = phone_exchange().answer(pairs(offer, offered), suites=[], secure_signalling=False)
    assert negotiation is not None
    phone = Phone(negotiation, await bind(), ("127.0.0.1", offered.port))
    nursery.start_soon(phone.run)
    await leg_b.answer(200, sdp=zrtp_sdp(negotiation))
    final = await call.final()
    assert final.status == 200, final.reason
    await b_leg_keyed_by(env, phone)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_another_phones_zrtp_200_after_an_early_answer_in_clear_is_keyed_by_zrtp(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A proxy downstream forks our one offer. One phone's 183 answers in clear (no
    a=zrtp-hash: best effort takes it, the early media is cleartext), then the other phone
    answers 200 with its a=zrtp-hash: the line takes up the exchange our offer made and that
    phone's exchange keys the leg, its SAS in the record. Before session 53 the early answer
    had dropped the offer's exchange: the call stayed in clear with a phone that speaks ZRTP,
    was offered it and answered with it."""
    env = await with_zrtp(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    offer = parse_sdp_untrusted(leg_b.invite.body)
    offered = offer.media[0]
    answering_tag = leg_b.local_tag
    leg_b.local_tag = "fork-2"  # the early phone's dialog
    await env.alice.respond(leg_b.incoming, 183, body=zrtp_sdp(None, port=PHONE_PORT + 2))  # type: ignore[arg-type]
    await call.exchange.wait_for(lambda r: r.status == 183)  # type: ignore[union-attr]
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    early_security = gateway_call.b_legs[0].security
    assert early_security is not None
    assert early_security.record()["streams"][0]["key_exchange"] == "none"

    leg_b.local_tag = answering_tag
    negotiation = phone_exchange().answer(pairs(offer, offered), suites=[], secure_signalling=False)
    assert negotiation is not None
    phone = Phone(negotiation, await bind(), ("127.0.0.1", offered.port))
    nursery.start_soon(phone.run)
    await leg_b.answer(200, sdp=zrtp_sdp(negotiation))
    final = await call.final()
    assert final.status == 200, final.reason
    await b_leg_keyed_by(env, phone)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_another_phones_200_in_clear_after_a_zrtp_keyed_early_answer_is_cleartext(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The other way round: one phone's 183 with a=zrtp-hash, its exchange keying the early
    media; the other phone answers 200 in clear. The leg holds no key and says cleartext,
    and no ZRTP packet goes to the phone that answered. Before session 53 the early phone's
    keys stayed in force: SRTP sent to a phone that plays RTP, its RTP dropped."""
    env = await with_zrtp(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await zrtp_early_answer(nursery, env, leg_b, parse_sdp_untrusted(leg_b.invite.body))
    with await bind() as sock:
        await leg_b.answer(200, sdp=zrtp_sdp(None))
        final = await call.final()
        assert final.status == 200, final.reason
        await eventually(lambda: leg_keys(env, "b") is None)
        record = gateway_stream(env, "b")
        assert record["key_exchange"] == "none" and record["encrypted"] is False
        with trio.move_on_after(5):
            data, _ = await sock.recvfrom(2048)
            assert not is_zrtp_packet(data)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


@pytest.mark.parametrize("early_fork", [0, 1], ids=["first-phone-early", "second-phone-early"])
async def test_of_two_forked_zrtp_phones_the_one_that_answers_after_the_others_183_is_keyed(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    early_fork: int,
) -> None:
    """The gateway forks the call to alice's two registered ZRTP phones (RFC 3261 §16.7: the
    same B ports, each leg's offer with its own a=zrtp-hash). One phone's 183 answers early
    and its exchange keys the early media; the other phone answers 200 with its own
    a=zrtp-hash: its exchange keys the leg, with its keys and its SAS, and the call stays
    up."""
    env = await with_zrtp(nursery, tmp_path, voipgw_seed, alice_auto=None)
    alice2 = await second_phone(env, nursery, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    forks = [await env.alice.next_call(), await alice2.next_call()]
    for fork in forks:
        await fork.ring()
    phones = []
    for index, zid in enumerate((b"\x02" * 12, b"\x03" * 12)):
        offer = parse_sdp_untrusted(forks[index].invite.body)
        offered = offer.media[0]
        engine = ZrtpKeyExchange(zid=lambda zid=zid: zid).answer(
            pairs(offer, offered), suites=[], secure_signalling=False
        )
        assert engine is not None
        phone = Phone(engine, await bind(PHONE_PORT + 2 * index), ("127.0.0.1", offered.port))
        nursery.start_soon(phone.run)
        phones.append(phone)
    early, answering = phones[early_fork], phones[1 - early_fork]
    early_sdp = zrtp_sdp(early.negotiation, port=PHONE_PORT + 2 * early_fork)  # type: ignore[arg-type]
    await forks[early_fork].agent.respond(forks[early_fork].incoming, 183, body=early_sdp)  # type: ignore[arg-type]
    with trio.fail_after(10):
        await early.keyed.wait()
    answer = zrtp_sdp(answering.negotiation, port=PHONE_PORT + 2 * (1 - early_fork))  # type: ignore[arg-type]
    await forks[1 - early_fork].answer(200, sdp=answer)
    final = await call.final()
    assert final.status == 200, final.reason
    await b_leg_keyed_by(env, answering)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []
    assert alice2.requests("BYE") == []


async def test_a_callee_answering_without_zrtp_hash_gets_cleartext_and_no_zrtp_packet(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_zrtp(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    assert offered.attributes.has("zrtp-hash")
    sock = await bind()
    await leg_b.answer(200, sdp=zrtp_sdp(None))
    assert (await call.final()).status == 200
    record = gateway_stream(env, "b")
    assert record["key_exchange"] == "none" and record["encrypted"] is False
    # Nothing of ZRTP reaches the phone (the trunk sends no RTP either).
    with sock, trio.move_on_after(5):
        data, _ = await sock.recvfrom(2048)
        assert not is_zrtp_packet(data)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_zrtp_phone_that_never_answers_ends_the_call_with_the_reason(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_zrtp(nursery, tmp_path, voipgw_seed)
    caller = await zrtp_caller(nursery, env, run_phone=False)
    with caller.phone.sock:
        bye_a = await env.trunk.next_request("BYE", timeout=40)
        bye_b = await env.alice.next_request("BYE", timeout=5)
        # The gateway did send Hellos (first byte 0x10, "ZRTP" cookie) to the silent phone.
        data, _ = await caller.phone.sock.recvfrom(2048)
        assert is_zrtp_packet(data)
    for bye in (bye_a, bye_b):
        reason = bye.request.headers.get("Reason") or ""
        assert "cause=488" in reason and "no ZRTP Hello from the peer within 20 s" in reason
    await eventually(lambda: env.calls == 0)


async def test_a_re_invite_from_the_same_phone_keeps_the_exchange_and_the_keys(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_zrtp(nursery, tmp_path, voipgw_seed)
    caller = await zrtp_caller(nursery, env)
    with trio.fail_after(10):
        await caller.phone.keyed.wait()
    await eventually(lambda: leg_keys(env, "a") is not None)
    keys = leg_keys(env, "a")
    # Counted in messages of an exchange in progress, not in datagrams: as in the DTLS test,
    # the autojump clock can pass the gateway's Confirm2 timer while the phone's Conf2ACK is
    # still in the kernel on a loaded machine, and that retransmission be read after this.
    sent = caller.phone.zrtp_exchange_messages
    assert sent >= 2  # at least Hello and Commit or DHPart1
    response = await caller.call.reinvite(zrtp_sdp(caller.negotiation))  # type: ignore[attr-defined]
    assert response.status == 200
    media = parse_sdp_untrusted(response.body).media[0]
    assert media.attributes.get("zrtp-hash") == caller.answer.attributes.get("zrtp-hash")
    await trio.sleep(10)
    assert leg_keys(env, "a") == keys
    assert caller.phone.zrtp_exchange_messages == sent  # no second exchange
    assert env.trunk.requests("BYE") == []


@pytest.mark.parametrize("policy", ["rtp-only"])
async def test_a_leg_whose_policy_has_no_zrtp_answers_in_clear(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    policy: str,
) -> None:
    env = await with_zrtp(nursery, tmp_path, voipgw_seed, alice_auto=None)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy=policy)
    await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    offered = parse_sdp_untrusted(leg_b.invite.body).media[0]
    assert not offered.attributes.has("zrtp-hash") and not offered.crypto


def audio_video_sdp(
    audio_port: int,
    video_port: int,
    audio: ZrtpNegotiation | None = None,
    video: ZrtpNegotiation | None = None,
) -> bytes:
    """An offer or answer with an audio and a video stream, each with its a=zrtp-hash if given."""

    def hashes(negotiation: ZrtpNegotiation | None) -> str:
        attributes = negotiation.local_sdp_attributes() if negotiation else ()
        return "".join(f"a={name}:{value}\r\n" for name, value in attributes)

    return (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {audio_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp-mux\r\n"
        f"{hashes(audio)}"
        f"m=video {video_port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\n"
        f"{hashes(video)}"
    ).encode()


async def test_a_callees_video_stream_is_keyed_in_multistream_mode(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_zrtp(nursery, tmp_path, voipgw_seed, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=audio_video_sdp(30000, 30002))
    leg_b = await env.alice.next_call()
    offer = parse_sdp_untrusted(leg_b.invite.body)
    offered_audio, offered_video = offer.media
    assert offered_video.media == "video" and offered_video.attributes.has("zrtp-hash")
    # The phone: one ZRTP end, its two streams sharing a leg state as the gateway's do.
    exchange, state = phone_exchange(), {}
    audio, video = (
        exchange.answer(pairs(offer, m), suites=[], secure_signalling=False, leg_state=state)
        for m in (offered_audio, offered_video)
    )
    assert audio is not None and video is not None
    audio_phone = Phone(audio, await bind(), ("127.0.0.1", offered_audio.port))
    video_phone = Phone(video, await bind(PHONE_PORT + 2), ("127.0.0.1", offered_video.port))
    nursery.start_soon(audio_phone.run)
    nursery.start_soon(video_phone.run)
    await leg_b.answer(200, sdp=audio_video_sdp(PHONE_PORT, PHONE_PORT + 2, audio, video))
    assert (await call.final()).status == 200
    with trio.fail_after(20):
        await audio_phone.keyed.wait()
        await video_phone.keyed.wait()
    assert audio_phone.failure is None and video_phone.failure is None
    # The stream ready first runs the DH exchange (both start together here; linphone starts
    # its video only once audio is secure), the other is keyed from its ZRTPSess.
    agreements = [audio.zrtp_key_agreement, video.zrtp_key_agreement]
    assert sorted(agreements) == ["Mult", "X255"]
    sas = audio.sas if agreements[0] == "X255" else video.sas
    assert audio_phone.keys is not None and video_phone.keys is not None
    assert video_phone.keys.local_key not in (
        audio_phone.keys.local_key,
        audio_phone.keys.remote_key,
    )

    def keys_of(index: int) -> SrtpKeys | None:
        assert env.gateway.calls is not None
        (gateway_call,) = env.gateway.calls.calls
        assert gateway_call.b is not None and gateway_call.b.security is not None
        return gateway_call.b.security.keys(index)

    await eventually(lambda: keys_of(1) is not None)
    assert keys_of(0) == mirrored(audio_phone.keys)
    assert keys_of(1) == mirrored(video_phone.keys)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    streams = gateway_call.security_record()["b"]["streams"]
    assert [s["zrtp_key_agreement"] for s in streams] == agreements
    # One SAS for the leg (§4.5.2): the Multistream stream shows the DH stream's.
    assert streams[0]["zrtp_sas"] == streams[1]["zrtp_sas"] == sas and sas is not None
    assert audio.zrtp_sas == video.zrtp_sas == sas
    assert all(s["encrypted"] is True for s in streams)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


def _zrtp_error(code: int = 0x61) -> bytes:
    """A ZRTP Error packet (RFC 6189 §5.9): unauthenticated, anyone can send one."""
    return frame(1, 0x5EED, encode_error(code))


async def test_a_strangers_zrtp_error_before_keys_is_ignored_and_the_caller_is_keyed(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
) -> None:
    """docs/media_security.md, "Forged handshakes": the caller's SDP gave its address; a
    stranger's ZRTP Error (nothing in it is authenticated, RFC 6189 §5.9) reaches the caller
    leg's port before the caller's first packet. Before, it went to our engine, which sent
    ErrorACK and ended the call ("the peer's ZRTP endpoint sent Error 0x61 ..."). Now the
    relay drops it (counted ``unlatched_source``, latching nothing), no ErrorACK answers it,
    and the caller is keyed."""
    env = await with_zrtp(nursery, tmp_path, voipgw_seed)
    caller = await zrtp_caller(nursery, env, run_phone=False)
    gateway_port = ("127.0.0.1", caller.answer.port)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    with await bind(PHONE_PORT + 4) as stranger:
        try:
            await stranger.sendto(_zrtp_error(), gateway_port)
            await eventually(lambda: stream.a_to_b.statistics().dropped_unlatched_source >= 1)
            assert stream.a.rtp_source is None  # it latched nothing
            nursery.start_soon(caller.phone.run)
        except BaseException:
            caller.phone.sock.close()
            raise
        with trio.fail_after(10):
            await caller.phone.keyed.wait()
        assert caller.phone.failure is None and caller.phone.keys is not None
        # No ErrorACK (nor anything else) went to the stranger.
        assert not select.select([stranger], [], [], 0)[0]
    await eventually(lambda: leg_keys(env, "a") is not None)
    assert leg_keys(env, "a") == mirrored(caller.phone.keys)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


def _types(received: list[bytes]) -> list[bytes]:
    return [datagram[16:24] for datagram in received]


async def _received(sock: trio.socket.SocketType) -> list[bytes]:
    """What ``sock`` holds now, read without waiting."""
    found = []
    while select.select([sock], [], [], 0)[0]:
        found.append((await sock.recvfrom(2048))[0])
    return found


async def _send_phones_hello(
    caller: ZrtpCaller, sock: trio.socket.SocketType, gateway_port: tuple[str, int]
) -> None:
    """The phone's first Hello (the one its a=zrtp-hash names) from ``sock``, then wait for
    the gateway's HelloACK there: the gateway took it."""
    (hello,) = caller.negotiation.packets_to_send(now=trio.current_time())
    assert hello[16:24] == HELLO
    await sock.sendto(hello, gateway_port)
    with trio.fail_after(5):
        while True:
            data, _ = await sock.recvfrom(2048)
            if data[16:24] == HELLO_ACK:
                return


async def test_a_zrtp_error_from_the_callers_sdp_address_ends_the_call_once_its_hello_matched(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """RFC 6189 §5.9, §8.1: the caller's SDP binds its Hello (a=zrtp-hash), and the source
    whose Hello matched is the peer. Its Error is honoured: answered with ErrorACK, the call
    ends with the code it names. An Error before that Hello, even from the SDP address (which
    anyone can put on a datagram), is nobody's word: ignored, no ErrorACK, the call goes on
    (before, it ended the call)."""
    env = await with_zrtp(nursery, tmp_path, voipgw_seed)
    caller = await zrtp_caller(nursery, env, run_phone=False)
    gateway_port = ("127.0.0.1", caller.answer.port)
    with caller.phone.sock:
        await caller.phone.sock.sendto(_zrtp_error(), gateway_port)
        await trio.sleep(2)
        assert env.trunk.requests("BYE") == [] and env.calls == 1
        assert ERROR_ACK not in _types(await _received(caller.phone.sock))  # our Hellos only
        await _send_phones_hello(caller, caller.phone.sock, gateway_port)
        await caller.phone.sock.sendto(_zrtp_error(), gateway_port)
        bye_a = await env.trunk.next_request("BYE", timeout=10)
        bye_b = await env.alice.next_request("BYE", timeout=5)
        assert ERROR_ACK in _types(await _received(caller.phone.sock))
    for bye in (bye_a, bye_b):
        reason = bye.request.headers.get("Reason") or ""
        assert "cause=488" in reason and "the peer's ZRTP endpoint sent Error 0x61" in reason
    await eventually(lambda: env.calls == 0)


async def test_a_zrtp_error_from_a_phone_behind_a_nat_whose_hello_matched_ends_the_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A phone behind a NAT sends from another address than its SDP gave: its Hello, which
    matches its a=zrtp-hash, makes it the peer (RFC 6189 §8.1), and its Error is honoured
    (§4.7): answered with ErrorACK, the call ends with the code it names."""
    env = await with_zrtp(nursery, tmp_path, voipgw_seed)
    caller = await zrtp_caller(nursery, env, run_phone=False)
    gateway_port = ("127.0.0.1", caller.answer.port)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    with caller.phone.sock, await bind(PHONE_PORT + 4) as natted:
        await _send_phones_hello(caller, natted, gateway_port)
        assert stream.a.rtp_source == ("127.0.0.1", PHONE_PORT + 4)
        await natted.sendto(_zrtp_error(), gateway_port)
        bye_a = await env.trunk.next_request("BYE", timeout=10)
        assert ERROR_ACK in _types(await _received(natted))
    reason = bye_a.request.headers.get("Reason") or ""
    assert "cause=488" in reason and "the peer's ZRTP endpoint sent Error 0x61" in reason
    await eventually(lambda: env.calls == 0)


async def test_a_stranger_that_latched_the_port_first_cannot_end_the_call_and_the_caller_is_keyed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """docs/media_security.md, "Forged handshakes": a stranger's Hello reaches the caller leg's
    port before the caller's first packet and latches it (not connected: it is not the SDP
    address). Its Hello matches nothing (a=zrtp-hash, RFC 6189 §8.1), so it is not the peer,
    and its Error (no MAC, §5.9) ends nothing: before, it was honoured as a phone behind a
    NAT's, with ErrorACK, and the call ended. The caller then speaks from its SDP address,
    takes the port over and is keyed."""
    env = await with_zrtp(nursery, tmp_path, voipgw_seed)
    caller = await zrtp_caller(nursery, env, run_phone=False)
    gateway_port = ("127.0.0.1", caller.answer.port)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    with await bind(PHONE_PORT + 4) as stranger:
        try:
            await stranger.sendto(forged_hello(), gateway_port)
            await eventually(lambda: stream.a.rtp_source == ("127.0.0.1", PHONE_PORT + 4))
            await stranger.sendto(_zrtp_error(), gateway_port)
            await trio.sleep(2)
            assert env.trunk.requests("BYE") == [] and env.calls == 1
            nursery.start_soon(caller.phone.run)
        except BaseException:
            caller.phone.sock.close()
            raise
        with trio.fail_after(10):
            await caller.phone.keyed.wait()
        assert caller.phone.failure is None and caller.phone.keys is not None
        # The stranger held the port a while: it got our Hellos, never a HelloACK nor an
        # ErrorACK (nothing it sent was taken).
        sent = _types(await _received(stranger))
        assert HELLO in sent and HELLO_ACK not in sent and ERROR_ACK not in sent
    assert stream.a.rtp_source == ("127.0.0.1", PHONE_PORT)
    await eventually(lambda: leg_keys(env, "a") is not None)
    assert leg_keys(env, "a") == mirrored(caller.phone.keys)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_without_a_readable_zrtp_hash_the_sdp_address_restarts_the_exchange_a_stranger_began(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The caller's a=zrtp-hash cannot be read, so nothing binds its Hello (RFC 6189 §8.1): a
    stranger's Hello, the first to reach the port, was taken (HelloACK). When the caller's SDP
    address speaks, the exchange starts afresh with its Hello, as a DTLS server's handshake
    does (docs/media_security.md, "Forged handshakes"), and the caller is keyed. Before, the
    stranger's Hello bound the exchange, the caller's was ignored, and the call ended at the
    handshake timeout."""
    env = await with_zrtp(nursery, tmp_path, voipgw_seed)
    caller = await zrtp_caller(nursery, env, run_phone=False, zrtp_hash="1.10 unreadable")
    gateway_port = ("127.0.0.1", caller.answer.port)
    with await bind(PHONE_PORT + 4) as stranger:
        try:
            await stranger.sendto(forged_hello(), gateway_port)
            with trio.fail_after(5):
                while (await stranger.recvfrom(2048))[0][16:24] != HELLO_ACK:
                    pass
            nursery.start_soon(caller.phone.run)
        except BaseException:
            caller.phone.sock.close()
            raise
        with trio.fail_after(15):
            await caller.phone.keyed.wait()
    assert caller.phone.failure is None and caller.phone.keys is not None
    await eventually(lambda: leg_keys(env, "a") is not None)
    assert leg_keys(env, "a") == mirrored(caller.phone.keys)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_phone_behind_a_nat_is_keyed_when_a_stranger_latched_the_port_first(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A stranger's Hello latched the caller leg's port first (not connected: it is not the SDP
    address). The phone is behind a NAT: it sends from another address than its SDP gave, so
    it cannot take the port over as the SDP address does. Its ZRTP datagrams go to the
    exchange all the same; its Hello matches its a=zrtp-hash (RFC 6189 §8.1) and gives it the
    port's latch before our HelloACK goes, and it is keyed; the stranger's Error ends nothing.
    Before, the relay dropped the phone's datagrams (counted ``unlatched_source``) and the call
    ended at the handshake timeout, or at once on the stranger's Error."""
    env = await with_zrtp(nursery, tmp_path, voipgw_seed)
    caller = await zrtp_caller(nursery, env, run_phone=False)
    caller.phone.sock.close()
    gateway_port = ("127.0.0.1", caller.answer.port)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    natted = await bind(PHONE_PORT + 6)
    phone = Phone(caller.negotiation, natted, gateway_port)
    with await bind(PHONE_PORT + 4) as stranger:
        try:
            await stranger.sendto(forged_hello(), gateway_port)
            await eventually(lambda: stream.a.rtp_source == ("127.0.0.1", PHONE_PORT + 4))
            nursery.start_soon(phone.run)
        except BaseException:
            natted.close()
            raise
        await stranger.sendto(_zrtp_error(), gateway_port)
        with trio.fail_after(10):
            await phone.keyed.wait()
        assert phone.failure is None and phone.keys is not None
        await stranger.sendto(_zrtp_error(), gateway_port)
        sent = _types(await _received(stranger))
        assert HELLO_ACK not in sent and ERROR_ACK not in sent
    assert stream.a.rtp_source == ("127.0.0.1", PHONE_PORT + 6)
    await eventually(lambda: leg_keys(env, "a") is not None)
    assert leg_keys(env, "a") == mirrored(phone.keys)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


RTP = bytes([0x80, 0x00, 0x00, 0x01]) + bytes(8) + b"voice"
"""A phone's RTP packet (RFC 3550 §5.1), sent before its exchange is done: latches, dropped."""


async def test_without_a_readable_zrtp_hash_a_stranger_racing_a_natted_phone_is_dropped(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Session 40. The caller's a=zrtp-hash cannot be read, so nothing tells its Hello from a
    stranger's (RFC 6189 §8.1): the source that latched the port is taken for the phone, as
    before session 39. The phone is behind a NAT and its RTP latched the port first; a
    stranger's Hello follows, before the phone's. It is dropped by the relay
    (``unlatched_source``) and the phone is keyed. With session 39's relay it was handed to
    the exchange beside the phone's latch, bound it, and the call ended at the timeout."""
    env = await with_zrtp(nursery, tmp_path, voipgw_seed)
    caller = await zrtp_caller(nursery, env, run_phone=False, zrtp_hash="1.10 unreadable")
    caller.phone.sock.close()
    gateway_port = ("127.0.0.1", caller.answer.port)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    natted = await bind(PHONE_PORT + 6)
    phone = Phone(caller.negotiation, natted, gateway_port)
    with await bind(PHONE_PORT + 4) as stranger:
        try:
            await natted.sendto(RTP, gateway_port)
            await eventually(lambda: stream.a.rtp_source == ("127.0.0.1", PHONE_PORT + 6))
            dropped = stream.a_to_b.statistics().dropped_unlatched_source
            await stranger.sendto(forged_hello(), gateway_port)
            await eventually(
                lambda: stream.a_to_b.statistics().dropped_unlatched_source == dropped + 1
            )
            nursery.start_soon(phone.run)
        except BaseException:
            natted.close()
            raise
        with trio.fail_after(10):
            await phone.keyed.wait()
        assert phone.failure is None and phone.keys is not None
    await eventually(lambda: leg_keys(env, "a") is not None)
    assert leg_keys(env, "a") == mirrored(phone.keys)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_without_a_readable_zrtp_hash_our_answers_to_a_strangers_hello_stay_with_it(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Session 40. Nothing binds the caller's Hello (no readable a=zrtp-hash); a stranger's
    Hello reached the port first and was taken, its HelloACK too, and we committed to it. Our
    HelloACK and Commit answer the stranger only (``answers_only``): they are not copied to
    the caller's SDP address. Copied, the phone got a HelloACK for a Hello it never sent (§6:
    it stops its Hello's retransmissions) and a Commit whose H2 checks against our Hello
    (§9). The caller then speaks, the exchange starts afresh with the same Hello
    (docs/media_security.md: why the hash chain stays), and the caller is keyed. (Our first
    Hello, made in the same round as our HelloACK, went to the stranger only: the caller gets
    it when the exchange starts afresh.)"""
    env = await with_zrtp(nursery, tmp_path, voipgw_seed)
    caller = await zrtp_caller(nursery, env, run_phone=False, zrtp_hash="1.10 unreadable")
    gateway_port = ("127.0.0.1", caller.answer.port)
    with await bind(PHONE_PORT + 4) as stranger:
        try:
            await stranger.sendto(forged_hello(), gateway_port)
            await stranger.sendto(frame(2, 0xF0F0F0F0, message(HELLO_ACK)), gateway_port)
            with trio.fail_after(5):
                while (await stranger.recvfrom(2048))[0][16:24] != COMMIT:
                    pass
            at_sdp_address = _types(await _received(caller.phone.sock))
            assert HELLO_ACK not in at_sdp_address and COMMIT not in at_sdp_address
            nursery.start_soon(caller.phone.run)
        except BaseException:
            caller.phone.sock.close()
            raise
        with trio.fail_after(15):
            await caller.phone.keyed.wait()
    assert caller.phone.failure is None and caller.phone.keys is not None
    await eventually(lambda: leg_keys(env, "a") is not None)
    assert leg_keys(env, "a") == mirrored(caller.phone.keys)
