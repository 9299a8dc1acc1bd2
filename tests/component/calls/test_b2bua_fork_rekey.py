"""A proxy downstream forks our INVITE (RFC 3261 §16.7): our one SDES offer, and our key, reach
every phone it rings. When the relay's stream was keyed by one phone's early answer (183 with
SDP) and the 2xx comes from another early dialog (§12.1.2), the gateway re-INVITEs the phone
that answered with new keys of its own once the dialog is confirmed (docs/media_security.md
"Forked SDES callees"): before session 41 the relay went on protecting for that phone with the
context our key had with the first, at its ROC (a phone starting our key at ROC 0 authenticated
nothing past the early media's sequence wrap), and the phone that lost held our key.

In virtual time on the in-memory network, its flows marked secure (SDES needs TLS; the memory
transport stands in). alice's agent is the forking proxy's phones: its first To tag the phone
of the early media, a second one (set by hand) the phone that answers. The SRTP transforms the
relay uses are called directly, with bytes, and checked against phones' SrtpSessions: which
key, which roll-over counter.

With best effort one forked phone may answer in clear and another with SDES, either first
(docs/media_security.md "Forked SDES callees"): the leg is keyed as the phone that answers
200 answered, whatever the early answer was.
"""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import pytest
import trio

import gateway.plugins.keyexchange.sdes as sdes_plugin
from gateway.core.calls.call import Call as GatewayCall
from gateway.core.calls.media_keys import MAX_SDP_KEYED_TAGS
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.dtmf import event_payload
from gateway.core.media.srtp import SrtpSession
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.core.sip.message import Request
from gateway.testing.sip_agent import Call, simple_sdp
from tests.component.calls.b2bua_env import ALICE, ALICE_DID, B2bua, eventually, start_b2bua
from tests.component.calls.dtls_phone import bind
from tests.component.calls.dtmf_calls import rtp as dtmf_rtp
from tests.component.calls.secure_signalling import tls_signalling  # noqa: F401 (the fixture)
from tests.component.calls.transfer_calls import BOB_URI, bob_phone, eventually_notify, refer
from tests.port_blocks import port_bases

SUITE = "AES_CM_128_HMAC_SHA1_80"
SSRC = 0x0DDBA11
ACROSS_THE_WRAP = [65533, 65534, 65535, 0, 1]  # the ROC is 1 from sequence 0 on
EARLY_PHONE_KEY = bytes(range(30))
ANSWERING_PHONE_KEY = bytes(range(100, 130))
ANSWERING_PHONE_NEW_KEY = bytes(range(200, 230))
ANSWERING_TAG = "fork-2"


def rtp(sequence: int) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence, 160 * sequence, SSRC) + b"\xff" * 160


def offered(sdp: bytes) -> tuple[str, bytes]:
    """The tag and key (with salt) of our offer's a=crypto line of :data:`SUITE` (RFC 4568
    §9.1; our offers list every suite of the policy, strongest first)."""
    (media,) = parse_sdp_untrusted(sdp).media
    for name, value in media.attributes:
        if name == "crypto" and value is not None and value.split()[1] == SUITE:
            tag, _, inline = value.split()[:3]
            return tag, base64.b64decode(inline.removeprefix("inline:").split("|")[0])
    raise AssertionError(f"no a=crypto line of {SUITE} in {sdp!r}")


def crypto_key(sdp: bytes) -> bytes:
    return offered(sdp)[1]


def phone_answer(
    offer: bytes, port: int, key: bytes, *, version: int = 1, formats: tuple[str, ...] = ("0",)
) -> bytes:
    """A forked phone's answer to our best-effort SDES ``offer`` (RTP/AVP with a=crypto, RFC
    8643), on its line of :data:`SUITE`."""
    inline = base64.b64encode(key).decode()
    return simple_sdp(ALICE[0], port, version=version, formats=formats) + (
        f"a=crypto:{offered(offer)[0]} {SUITE} inline:{inline}\r\n".encode()
    )


async def with_sdes(nursery: trio.Nursery, tmp_path: Path, seed: int) -> B2bua:
    return await start_b2bua(
        nursery, tmp_path, seed, plugins=[("sdes", sdes_plugin)], alice_auto=None
    )


def relay_transforms(env: B2bua) -> Any:
    """The relay stream's direction towards alice's leg (B): its SRTP transforms."""
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    assert call.media is not None
    (stream,) = call.media.streams
    return stream.a_to_b.transforms


def gateway_call_of(env: B2bua) -> GatewayCall:
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    return gateway_call


def answering_from_another_dialog(env: B2bua, leg_b: Call) -> None:
    """alice's agent answers as the forking proxy's other phone: the To tag
    :data:`ANSWERING_TAG` (another early dialog, RFC 3261 §12.1.2)."""
    leg_b.local_tag = ANSWERING_TAG
    env.alice._by_dialog[(leg_b.call_id, ANSWERING_TAG)] = leg_b


def assert_relay_keyed_for(env: B2bua, phone_key: bytes, offered_key: bytes) -> None:
    """The relay protects what goes to the phone with our offer's key and takes the phone's
    packets under ``phone_key``: bytes through its SRTP transforms, both ways."""
    phone = SrtpSession(SrtpKeys(SUITE, phone_key, offered_key))
    assert phone.unprotect_rtp(relay_transforms(env).rtp_out(rtp(1))) == rtp(1)
    (stream,) = gateway_call_of(env).media.streams
    assert stream.b_to_a.transforms.rtp_in(phone.protect_rtp(rtp(2))) == rtp(2)
    phone.close()


def assert_relay_in_clear(env: B2bua) -> None:
    """The B leg's line is plain RTP both ways, and its record says so."""
    transforms = relay_transforms(env)
    assert transforms.rtp_out is None and transforms.rtcp_out is None
    (stream,) = gateway_call_of(env).media.streams
    assert stream.b_to_a.transforms.rtp_in is None
    record = gateway_call_of(env).security_record()["b"]
    assert record["streams"][0]["key_exchange"] == "none"


async def forked_call(
    env: B2bua,
    *,
    early_media_across_a_wrap: bool = True,
    trunk_sdp: bytes | None = None,
    answer_formats: tuple[str, ...] = ("0",),
) -> tuple[Call, Call, bytes]:
    """trunk -> alice through a forking proxy: the first phone's 183 keys the relay (and our
    early media to it crosses a sequence wrap: ROC 1), then another phone answers 200 in its
    own early dialog (with ``answer_formats``). The trunk offers ``trunk_sdp`` (default: its
    own, PCMU, PCMA, telephone-event). Returns (leg A, alice's INVITE, our offer's key)."""
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=trunk_sdp)
    leg_b = await env.alice.next_call()
    offered_key = crypto_key(leg_b.invite.body)
    await env.alice.respond(
        leg_b.incoming, 183, body=phone_answer(leg_b.invite.body, 30000, EARLY_PHONE_KEY)
    )  # type: ignore[arg-type]
    await call.exchange.wait_for(lambda r: r.status == 183)  # type: ignore[union-attr]
    if early_media_across_a_wrap:
        early_phone = SrtpSession(SrtpKeys(SUITE, EARLY_PHONE_KEY, offered_key))
        for sequence in ACROSS_THE_WRAP:
            sent = relay_transforms(env).rtp_out(rtp(sequence))
            assert early_phone.unprotect_rtp(sent) == rtp(sequence)
        early_phone.close()
    # The other phone answers in an early dialog of its own (another To tag, RFC 3261 §12.1.2).
    answering_from_another_dialog(env, leg_b)
    answer = phone_answer(leg_b.invite.body, 30002, ANSWERING_PHONE_KEY, formats=answer_formats)
    await leg_b.answer(200, sdp=answer)
    final = await call.final()
    assert final.status == 200, final.reason
    await env.alice.next_request("ACK")
    return call, leg_b, offered_key


def reinvites_to(env: B2bua, tag: str) -> list[Request]:
    return [
        r.request
        for r in env.alice.received
        if r.request.method == "INVITE" and r.request.to.tag == tag
    ]


async def test_a_forked_callee_answering_after_another_phones_early_media_is_rekeyed(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    env = await with_sdes(nursery, tmp_path, voipgw_seed)

    async def answer_reinvite(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        body = phone_answer(received.request.body, 30002, ANSWERING_PHONE_NEW_KEY, version=2)
        await env.alice.respond(received, 200, body=body)
        return True

    env.alice.in_dialog = answer_reinvite
    call, leg_b, offered_key = await forked_call(env)
    reinvite = (await env.alice.next_request("INVITE", timeout=5)).request
    await env.alice.next_request("ACK", timeout=5)
    # One re-INVITE, in the answering phone's dialog, with a new key of ours (RFC 4568
    # §7.1.4) and a new o= version (RFC 3264 §8).
    assert reinvite.to.tag == ANSWERING_TAG and reinvite.call_id == leg_b.call_id
    assert reinvites_to(env, ANSWERING_TAG) == [reinvite]
    new_key = crypto_key(reinvite.body)
    assert new_key != offered_key
    first = parse_sdp_untrusted(leg_b.invite.body).origin
    again = parse_sdp_untrusted(reinvite.body).origin
    assert again.session_version == first.session_version + 1
    assert again.session_id == first.session_id
    # The relay protects for the answering phone under the new key, from ROC 0: a phone
    # that starts it fresh authenticates our packets.
    answering_phone = SrtpSession(SrtpKeys(SUITE, ANSWERING_PHONE_NEW_KEY, new_key))
    for sequence in (2, 3):
        sent = relay_transforms(env).rtp_out(rtp(sequence))
        assert answering_phone.unprotect_rtp(sent) == rtp(sequence)
    # The early phone's key for our packets is of no use any more.
    early_phone = SrtpSession(SrtpKeys(SUITE, EARLY_PHONE_KEY, offered_key))
    assert early_phone.unprotect_rtp(relay_transforms(env).rtp_out(rtp(4))) is None
    # The phone's packets under its new key are taken.
    received = answering_phone.protect_rtp(rtp(7))
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    (stream,) = gateway_call.media.streams
    assert stream.b_to_a.transforms.rtp_in(received) == rtp(7)
    answering_phone.close()
    early_phone.close()
    # The leg's record says so (ARCHITECTURE.md "Security state is data").
    assert gateway_call.security_record()["b"]["fork_rekey"] == "re-keyed"
    assert (await call.bye()).status == 200


async def test_an_answer_from_the_early_medias_own_dialog_is_not_rekeyed(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """The usual call: the 183's phone answers (its own To tag): the context goes on with
    the phone that knows it, no re-INVITE."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    offered_key = crypto_key(leg_b.invite.body)
    await env.alice.respond(
        leg_b.incoming, 183, body=phone_answer(leg_b.invite.body, 30000, EARLY_PHONE_KEY)
    )  # type: ignore[arg-type]
    await call.exchange.wait_for(lambda r: r.status == 183)  # type: ignore[union-attr]
    phone = SrtpSession(SrtpKeys(SUITE, EARLY_PHONE_KEY, offered_key))
    for sequence in ACROSS_THE_WRAP:
        assert phone.unprotect_rtp(relay_transforms(env).rtp_out(rtp(sequence))) == rtp(sequence)
    await leg_b.answer(200, sdp=phone_answer(leg_b.invite.body, 30000, EARLY_PHONE_KEY))
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    await trio.sleep(10)
    assert env.alice.requests("INVITE") == [leg_b.invite]
    assert phone.unprotect_rtp(relay_transforms(env).rtp_out(rtp(2))) == rtp(2)  # ROC 1 on
    phone.close()
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert "fork_rekey" not in gateway_call.security_record()["b"]
    assert (await call.bye()).status == 200


@pytest.mark.parametrize("status", [488, 500, 501])
async def test_a_refused_rekey_keeps_the_call_and_its_keys(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
    status: int,
) -> None:
    """RFC 3261 §14.1: a re-INVITE refused leaves the session as it was: the call goes on
    under the keys the 2xx took."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)

    async def refuse(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        await env.alice.respond(received, status)
        return True

    env.alice.in_dialog = refuse
    call, _, offered_key = await forked_call(env, early_media_across_a_wrap=False)
    await env.alice.next_request("INVITE", timeout=5)
    await trio.sleep(10)
    assert len(reinvites_to(env, ANSWERING_TAG)) == 1
    assert env.alice.requests("BYE") == []
    phone = SrtpSession(SrtpKeys(SUITE, ANSWERING_PHONE_KEY, offered_key))
    assert phone.unprotect_rtp(relay_transforms(env).rtp_out(rtp(1))) == rtp(1)
    phone.close()
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    outcome = gateway_call.security_record()["b"]["fork_rekey"]
    assert outcome.startswith(f"refused: {status} ")
    assert (await call.bye()).status == 200


async def test_a_rekey_crossing_the_phones_own_reinvite_is_sent_again_after_the_wait(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """491 (RFC 3261 §14.1): again after 2.1-4 s (we own the dialog's Call-ID), then taken."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    answers = [491, 200]

    async def glare_then_take(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        status = answers.pop(0)
        body = (
            phone_answer(received.request.body, 30002, ANSWERING_PHONE_NEW_KEY, version=2)
            if status == 200
            else b""
        )
        await env.alice.respond(received, status, body=body)
        return True

    env.alice.in_dialog = glare_then_take
    call, _, offered_key = await forked_call(env, early_media_across_a_wrap=False)
    first = await env.alice.next_request("INVITE", timeout=5)
    second = await env.alice.next_request("INVITE", timeout=10)
    assert 2.1 <= second.at - first.at <= 4.2
    await env.alice.next_request("ACK", timeout=5)
    new_key = crypto_key(second.request.body)
    assert new_key != offered_key
    phone = SrtpSession(SrtpKeys(SUITE, ANSWERING_PHONE_NEW_KEY, new_key))
    assert phone.unprotect_rtp(relay_transforms(env).rtp_out(rtp(1))) == rtp(1)
    phone.close()
    assert (await call.bye()).status == 200


async def test_a_rekey_whose_dialog_is_gone_ends_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """481 to our re-key re-INVITE: the phone has no such dialog (RFC 3261 §12.2.1.2), the
    call ends as for any re-INVITE whose dialog is gone, the caller told why."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)

    async def gone(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        await env.alice.respond(received, 481)
        return True

    env.alice.in_dialog = gone
    await forked_call(env, early_media_across_a_wrap=False)
    bye = await env.trunk.next_request("BYE", timeout=5)
    reason = bye.request.headers.get("Reason") or ""
    assert "cause=481" in reason and "re-key re-INVITE to the B leg" in reason
    assert env.alice.requests("BYE") == []  # its dialog is gone: no BYE into it


async def test_an_offer_crossing_our_rekey_gets_491(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """One offer at a time (RFC 3264 §4, RFC 3261 §14.2): the caller's re-INVITE while our
    re-key waits for the phone's answer gets 491, and goes through afterwards."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    held: list[Any] = []

    async def hold_then_answer(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        if not held:
            held.append(received)  # our re-key: answered below
            return True
        await env.alice.respond(received, 200, body=env.alice.answer_sdp(received.request.body))
        return True

    env.alice.in_dialog = hold_then_answer
    call, _, _ = await forked_call(env, early_media_across_a_wrap=False)
    await env.alice.next_request("INVITE", timeout=5)
    assert (await call.reinvite(env.trunk.offer_sdp(direction="sendonly"))).status == 491
    rekey = held[0]
    body = phone_answer(rekey.request.body, 30002, ANSWERING_PHONE_NEW_KEY, version=2)
    await env.alice.respond(rekey, 200, body=body)
    await env.alice.next_request("ACK", timeout=5)
    assert (await call.reinvite(env.trunk.offer_sdp(direction="sendonly"))).status == 200
    assert (await call.bye()).status == 200


async def test_a_rekey_that_only_rings_is_cancelled_after_64_t1_and_the_call_goes_on(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """A phone that answers our re-key 180 and nothing more (an INVITE client transaction in
    Proceeding has no timer, RFC 3261 §17.1.1.2): CANCEL at 64*T1 (§9.1); its 487 leaves the
    session as it was (§14.1) and offers go through again."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    held: list[Any] = []

    async def ring_only(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        if not held:
            held.append(received)
            await env.alice.respond(received, 180)
            return True
        await env.alice.respond(received, 200, body=env.alice.answer_sdp(received.request.body))
        return True

    env.alice.in_dialog = ring_only
    call, _, offered_key = await forked_call(env, early_media_across_a_wrap=False)
    sent = await env.alice.next_request("INVITE", timeout=5)
    cancel = await env.alice.next_request("CANCEL", timeout=40)
    assert 32 <= cancel.at - sent.at <= 33
    assert cancel.request.headers.get("Via") == sent.request.headers.get("Via")
    await env.alice.respond(held[0], 487)
    await trio.sleep(1)
    assert env.alice.requests("BYE") == []
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.security_record()["b"]["fork_rekey"].startswith("refused: 487 ")
    phone = SrtpSession(SrtpKeys(SUITE, ANSWERING_PHONE_KEY, offered_key))
    assert phone.unprotect_rtp(relay_transforms(env).rtp_out(rtp(1))) == rtp(1)
    phone.close()
    assert (await call.reinvite(env.trunk.offer_sdp(direction="sendonly"))).status == 200
    assert (await call.bye()).status == 200


async def test_an_answer_to_our_rekey_rejecting_the_stream_is_acked_then_the_call_ends(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """A 2xx answer cannot be refused (RFC 3264 §8): the phone's answer rejecting the stream
    (port 0), which the relay cannot apply to one leg alone, is ACKed (RFC 3261 §13.2.2.4),
    then both legs get a BYE saying why (cause 488), once; nothing says "re-keyed"."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)

    async def reject(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        body = simple_sdp(ALICE[0], 0, version=2, formats=("0",))
        await env.alice.respond(received, 200, body=body)
        return True

    env.alice.in_dialog = reject
    await forked_call(env, early_media_across_a_wrap=False)
    rekey = await env.alice.next_request("INVITE", timeout=5)
    ack = await env.alice.next_request("ACK", timeout=5)
    assert ack.request.cseq.number == rekey.request.cseq.number
    bye_a = await env.trunk.next_request("BYE", timeout=5)
    bye_b = await env.alice.next_request("BYE", timeout=5)
    for bye in (bye_a, bye_b):
        assert "cause=488" in (bye.request.headers.get("Reason") or "")
    await trio.sleep(5)
    assert len(env.alice.requests("ACK")) == 2  # the call's 2xx and the re-key's, each once
    assert len(env.alice.requests("BYE")) == 1


async def test_a_transfer_target_taking_the_rekeyed_phones_place_has_no_fork_rekey_of_its_own(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """The record's ``fork_rekey`` says what became of the re-key of the phone that answered;
    once a transfer puts another party in its place, the B leg's record is that party's, which
    no re-key concerned (before session 41's review it showed the transferor's outcome)."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed)

    async def answer_reinvite(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        body = phone_answer(received.request.body, 30002, ANSWERING_PHONE_NEW_KEY, version=2)
        await env.alice.respond(received, 200, body=body)
        return True

    env.alice.in_dialog = answer_reinvite
    call, leg_b, _ = await forked_call(env, early_media_across_a_wrap=False)
    await env.alice.next_request("INVITE", timeout=5)
    await env.alice.next_request("ACK", timeout=5)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.security_record()["b"]["fork_rekey"] == "re-keyed"

    env.alice.in_dialog = None
    assert await refer(leg_b, BOB_URI) == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    record = gateway_call.security_record()["b"]
    assert record["peer_name"] == "bob"
    assert "fork_rekey" not in record
    assert (await leg_b.bye()).status == 200  # the transferor leaves, as it does
    assert (await bob.calls[0].bye()).status == 200
    assert (await env.trunk.next_request("BYE")).request.call_id == call.call_id


async def test_a_2xx_to_our_rekey_crossing_our_cancel_is_acked_and_taken(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """A 2xx that crosses our CANCEL of a re-key that only rang (RFC 3261 §9.1: the
    transaction was not over) is the phone's answer like any: ACKed, its keys applied, the
    call goes on re-keyed."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    held: list[Any] = []

    async def ring_only(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        held.append(received)
        await env.alice.respond(received, 180)
        return True

    env.alice.in_dialog = ring_only
    call, _, offered_key = await forked_call(env, early_media_across_a_wrap=False)
    sent = await env.alice.next_request("INVITE", timeout=5)
    await env.alice.next_request("CANCEL", timeout=40)
    body = phone_answer(sent.request.body, 30002, ANSWERING_PHONE_NEW_KEY, version=2)
    await env.alice.respond(held[0], 200, body=body)
    ack = await env.alice.next_request("ACK", timeout=5)
    assert ack.request.cseq.number == sent.request.cseq.number
    await trio.sleep(1)
    assert env.alice.requests("BYE") == []
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.security_record()["b"]["fork_rekey"] == "re-keyed"
    new_key = crypto_key(sent.request.body)
    assert new_key != offered_key
    phone = SrtpSession(SrtpKeys(SUITE, ANSWERING_PHONE_NEW_KEY, new_key))
    assert phone.unprotect_rtp(relay_transforms(env).rtp_out(rtp(1))) == rtp(1)
    phone.close()
    assert (await call.bye()).status == 200


async def test_many_forks_early_media_is_remembered_within_bounds_and_still_rekeyed(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """183s with SDP under ever new To tags (a proxy forking widely, or a callee misbehaving)
    keep at most MAX_SDP_KEYED_TAGS of them; the 2xx of a tag past that bound is re-keyed
    all the same."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)

    async def answer_reinvite(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        body = phone_answer(received.request.body, 30002, ANSWERING_PHONE_NEW_KEY, version=2)
        await env.alice.respond(received, 200, body=body)
        return True

    env.alice.in_dialog = answer_reinvite
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    offered_key = crypto_key(leg_b.invite.body)
    forks = 3 * MAX_SDP_KEYED_TAGS
    for fork in range(forks):
        leg_b.local_tag = f"fork-{fork}"
        body = phone_answer(leg_b.invite.body, 30000, EARLY_PHONE_KEY)
        await env.alice.respond(leg_b.incoming, 183, body=body)  # type: ignore[arg-type]
    await call.exchange.wait_for(  # type: ignore[union-attr]
        lambda r: r.status == 183 and len(call.exchange.responses) > forks  # type: ignore[union-attr]
    )
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    (b_leg,) = gateway_call.b_legs
    assert b_leg.sdp_keyed_tags is not None
    assert len(b_leg.sdp_keyed_tags) == MAX_SDP_KEYED_TAGS
    last = f"fork-{forks - 1}"
    assert last not in b_leg.sdp_keyed_tags
    env.alice._by_dialog[(leg_b.call_id, last)] = leg_b
    await leg_b.answer(200, sdp=phone_answer(leg_b.invite.body, 30002, ANSWERING_PHONE_KEY))
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    reinvite = (await env.alice.next_request("INVITE", timeout=5)).request
    assert reinvite.to.tag == last
    assert crypto_key(reinvite.body) != offered_key
    await env.alice.next_request("ACK", timeout=5)
    assert gateway_call.security_record()["b"]["fork_rekey"] == "re-keyed"
    assert (await call.bye()).status == 200


async def test_a_rekey_offer_that_cannot_be_made_skips_no_o_version(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The key exchange raises making our re-key offer (a plugin's bug): nothing is sent and
    the call goes on under its keys. The next SDP on the leg, the caller's re-INVITE relayed,
    has the version after the last one sent (RFC 3264 §8: one more than the previous SDP).
    Before session 42 the unsent re-offer's version was taken, and the next one skipped it."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    offer = sdes_plugin.SdesKeyExchange.offer

    def broken(self: Any, **kwargs: Any) -> Any:
        if kwargs.get("rekey"):
            raise RuntimeError("a plugin's bug")
        return offer(self, **kwargs)

    monkeypatch.setattr(sdes_plugin.SdesKeyExchange, "offer", broken)

    async def answer_reinvite(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        await env.alice.respond(received, 200, body=env.alice.answer_sdp(received.request.body))
        return True

    env.alice.in_dialog = answer_reinvite
    call, leg_b, offered_key = await forked_call(env, early_media_across_a_wrap=False)
    await trio.sleep(5)
    assert reinvites_to(env, ANSWERING_TAG) == []
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.security_record()["b"]["fork_rekey"].startswith("not sent: internal")
    assert (await call.reinvite(env.trunk.offer_sdp(direction="sendonly"))).status == 200
    (relayed,) = reinvites_to(env, ANSWERING_TAG)
    first = parse_sdp_untrusted(leg_b.invite.body).origin
    assert parse_sdp_untrusted(relayed.body).origin.session_version == first.session_version + 1
    assert crypto_key(relayed.body) == offered_key  # our key in force, repeated (§7.1.4)
    assert (await call.bye()).status == 200


async def test_an_answer_to_our_rekey_changing_the_codec_is_acked_then_the_call_ends(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """The phone's 2xx took PCMU; its answer to our re-key takes PCMA (RFC 3264 §6.1 lets it
    pick any offered codec). The caller's leg agreed on PCMU and the relay's payload numbers,
    transcoding and DTMF plan follow that agreement, which an answer on one leg cannot change
    (RFC 3264 §8.3.2): ACKed (RFC 3261 §13.2.2.4), then both legs get a BYE with cause 488
    saying why. Before session 42 the relay took its addresses and keys and went on as for
    PCMU; nothing said so."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)

    async def other_codec(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        body = phone_answer(
            received.request.body, 30002, ANSWERING_PHONE_NEW_KEY, version=2, formats=("8",)
        )
        await env.alice.respond(received, 200, body=body)
        return True

    env.alice.in_dialog = other_codec
    await forked_call(env, early_media_across_a_wrap=False)
    rekey = await env.alice.next_request("INVITE", timeout=5)
    ack = await env.alice.next_request("ACK", timeout=5)
    assert ack.request.cseq.number == rekey.request.cseq.number
    bye_a = await env.trunk.next_request("BYE", timeout=5)
    bye_b = await env.alice.next_request("BYE", timeout=5)
    for bye in (bye_a, bye_b):
        reason = bye.request.headers.get("Reason") or ""
        assert "cause=488" in reason and "changes the stream's codecs" in reason
        assert "the codec in use, 0 PCMU/8000, left out" in reason
    await trio.sleep(5)
    assert len(env.alice.requests("BYE")) == 1


def narrowing_to(env: B2bua, formats: tuple[str, ...]) -> Any:
    """alice's phone answers our re-key re-INVITE with only ``formats`` of its codecs."""

    async def narrowed(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        body = phone_answer(
            received.request.body, 30002, ANSWERING_PHONE_NEW_KEY, version=2, formats=formats
        )
        await env.alice.respond(received, 200, body=body)
        return True

    return narrowed


@pytest.mark.parametrize("kept", [("0", "101"), ("0",)])
async def test_an_answer_to_our_rekey_keeping_only_the_codec_in_use_is_taken(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
    kept: tuple[str, ...],
) -> None:
    """The phone's 2xx took PCMU, PCMA and telephone-event; its answer to our re-key lists
    only PCMU, the codec in use (and telephone-event, or not): RFC 3264 §6.1 lets it, and the
    caller still sends PCMU, which the phone still takes at 0. The call goes on re-keyed.
    Session 42 ended it (ACK, BYE both legs, cause 488)."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    env.alice.in_dialog = narrowing_to(env, kept)
    call, _, _ = await forked_call(
        env, early_media_across_a_wrap=False, answer_formats=("0", "8", "101")
    )
    rekey = await env.alice.next_request("INVITE", timeout=5)
    ack = await env.alice.next_request("ACK", timeout=5)
    assert ack.request.cseq.number == rekey.request.cseq.number
    await trio.sleep(5)
    assert env.alice.requests("BYE") == [] and env.trunk.requests("BYE") == []
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.security_record()["b"]["fork_rekey"] == "re-keyed"
    # The relay protects for the phone with the new key (RFC 4568 §7.1.4).
    phone = SrtpSession(SrtpKeys(SUITE, ANSWERING_PHONE_NEW_KEY, crypto_key(rekey.request.body)))
    assert phone.unprotect_rtp(relay_transforms(env).rtp_out(rtp(1))) == rtp(1)
    phone.close()
    assert (await call.bye()).status == 200


async def test_an_answer_to_our_rekey_adding_a_codec_the_caller_offered_is_taken(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """The phone's 2xx took PCMU and telephone-event of the caller's PCMU, PCMA and
    telephone-event; its answer to our re-key lists PCMA too (RFC 3264 §6.1: any of the
    offer's formats; §8.3.2). The caller offered PCMA, so it takes PCMA should the phone send
    it (RFC 3264 §5.1): the call goes on re-keyed. Sessions 42-44 ended it (ACK, BYE both
    legs, cause 488, "8 PCMA/8000 added")."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    env.alice.in_dialog = narrowing_to(env, ("0", "8", "101"))
    call, _, _ = await forked_call(
        env, early_media_across_a_wrap=False, answer_formats=("0", "101")
    )
    rekey = await env.alice.next_request("INVITE", timeout=5)
    ack = await env.alice.next_request("ACK", timeout=5)
    assert ack.request.cseq.number == rekey.request.cseq.number
    await trio.sleep(5)
    assert env.alice.requests("BYE") == [] and env.trunk.requests("BYE") == []
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.security_record()["b"]["fork_rekey"] == "re-keyed"
    phone = SrtpSession(SrtpKeys(SUITE, ANSWERING_PHONE_NEW_KEY, crypto_key(rekey.request.body)))
    assert phone.unprotect_rtp(relay_transforms(env).rtp_out(rtp(1))) == rtp(1)
    phone.close()
    assert (await call.bye()).status == 200


async def test_after_telephone_event_left_out_the_callers_digits_reach_the_phone_as_info(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """Both legs had telephone-event 101 (events relayed as they come); the phone's answer to
    our re-key leaves it out. From then on the caller's RFC 4733 events are taken off the
    stream and sent to the phone as SIP INFO (application/dtmf-relay), as for a phone that
    never had telephone-event (docs/architecture.md "DTMF interworking"); they never reach
    it as events. Session 42 ended the call."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    env.alice.in_dialog = narrowing_to(env, ("0",))
    (trunk_port,) = port_bases(1)
    call, _, _ = await forked_call(
        env,
        early_media_across_a_wrap=False,
        trunk_sdp=simple_sdp("127.0.0.1", trunk_port),
        answer_formats=("0", "8", "101"),
    )
    await env.alice.next_request("ACK", timeout=5)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    await eventually(lambda: gateway_call.security_record()["b"]["fork_rekey"] == "re-keyed")
    assert gateway_call.media is not None and gateway_call.media.dtmf is not None
    assert gateway_call.media.dtmf.info_side == "b"
    answer = parse_sdp_untrusted((await call.final()).body)
    relay = ("127.0.0.1", answer.media[0].port)
    trunk_sock = await bind(trunk_port)
    with trunk_sock:
        ssrc, ts = 0x7777, 320
        for sequence, end, duration in ((2, False, 0), (3, False, 800), (4, True, 1600)):
            payload = event_payload(5, end=end, duration=duration)
            packet = dtmf_rtp(sequence, 101, ssrc, payload, marker=sequence == 2, timestamp=ts)
            await trunk_sock.sendto(packet, relay)
        info = await env.alice.next_request("INFO", timeout=5)
    assert info.request.content_type == "application/dtmf-relay"
    assert info.request.body == b"Signal=5\r\nDuration=200\r\n"
    assert env.alice.requests("BYE") == []
    assert (await call.bye()).status == 200


async def test_a_transfer_targets_forks_never_share_our_key(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """A transfer target called through a forking proxy needs no re-key: its INVITE has no
    SDP and no 100rel (a late offer, transfer.py step 3), so no phone gets a key of ours
    before it answers, and our key goes only in the ACK of the first 2xx's dialog; another
    fork's 2xx, which offered a key of its own, is ACKed with every stream rejected (no key
    of ours) and BYEd. No re-INVITE follows to the target."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    bob = await bob_phone(env, nursery, voipgw_seed, auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await leg_b.answer(200, sdp=phone_answer(leg_b.invite.body, 30000, EARLY_PHONE_KEY))
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    assert (await refer(leg_b, BOB_URI)) == 202
    target = await bob.next_call()
    assert not target.invite.body
    assert "100rel" not in (target.invite.headers.get("Supported") or "")
    assert target.incoming is not None
    first_tag = target.local_tag
    for fork, port in ((first_tag, 50010), ("bob-fork-2", 50012)):
        target.local_tag = fork
        bob._by_dialog[(target.call_id, fork)] = target
        key = ANSWERING_PHONE_KEY if fork == first_tag else ANSWERING_PHONE_NEW_KEY
        inline = base64.b64encode(key).decode()
        offer = simple_sdp("127.0.0.4", port, formats=("0",)) + (
            f"a=crypto:1 {SUITE} inline:{inline}\r\n".encode()
        )
        await bob.respond(target.incoming, 200, body=offer)
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    acks = {ack.to.tag: ack for ack in bob.requests("ACK")}
    ours = crypto_key(acks[first_tag].body)
    assert ours not in (ANSWERING_PHONE_KEY, ANSWERING_PHONE_NEW_KEY)
    other = parse_sdp_untrusted(acks["bob-fork-2"].body)
    assert [m.port for m in other.media] == [0]
    assert b"a=crypto" not in acks["bob-fork-2"].body
    assert [r.to.tag for r in bob.requests("BYE")] == ["bob-fork-2"]
    await trio.sleep(10)
    assert [r for r in bob.requests("INVITE") if r.to.tag] == []
    assert (await leg_b.bye()).status == 200
    assert (await bob.calls[0].bye()).status == 200


async def test_a_rekey_offer_the_b_leg_cannot_be_sent_takes_no_o_version_nor_key(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The re-key re-INVITE cannot go (no flow to the B leg: ``_send_in_dialog`` says None):
    withdrawn from the media session and from the leg's security alike. The next SDP on the
    leg, the caller's re-INVITE relayed, has the version after the last one sent (RFC 3264
    §8) and repeats our key in force (RFC 4568 §7.1.4), not the unsent one's."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    real = GatewayCall._send_in_dialog
    unsent: list[bytes] = []

    async def rekey_unreachable(self: GatewayCall, leg: Any, method: str, **kwargs: Any) -> Any:
        if method == "INVITE" and not unsent and self.state == "answered":
            unsent.append(kwargs["body"])
            return None  # as _send_in_dialog says of a flow it cannot get (OSError)
        return await real(self, leg, method, **kwargs)

    async def answer_reinvite(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        await env.alice.respond(received, 200, body=env.alice.answer_sdp(received.request.body))
        return True

    monkeypatch.setattr(GatewayCall, "_send_in_dialog", rekey_unreachable)
    env.alice.in_dialog = answer_reinvite
    call, leg_b, offered_key = await forked_call(env, early_media_across_a_wrap=False)
    await trio.sleep(5)
    assert len(unsent) == 1 and crypto_key(unsent[0]) != offered_key  # made, never sent
    assert reinvites_to(env, ANSWERING_TAG) == []
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.security_record()["b"]["fork_rekey"] == (
        "not sent: the B leg cannot be reached"
    )
    assert (await call.reinvite(env.trunk.offer_sdp(direction="sendonly"))).status == 200
    (relayed,) = reinvites_to(env, ANSWERING_TAG)
    first = parse_sdp_untrusted(leg_b.invite.body).origin
    assert parse_sdp_untrusted(relayed.body).origin.session_version == first.session_version + 1
    assert crypto_key(relayed.body) == offered_key
    assert (await call.bye()).status == 200


async def test_the_answering_phones_recordpref_in_its_answer_to_the_rekey_is_read(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """The 2xx to our re-key re-INVITE is an SDP of the answering phone's like any: its
    a=recordpref (RFC 7866 §7.2) is read, the leg's preference from then on."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)

    async def answer_reinvite(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        body = phone_answer(received.request.body, 30002, ANSWERING_PHONE_NEW_KEY, version=2)
        body = body.replace(b"m=audio", b"a=recordpref:off\r\nm=audio", 1)
        await env.alice.respond(received, 200, body=body)
        return True

    env.alice.in_dialog = answer_reinvite
    call, _, _ = await forked_call(env)
    await env.alice.next_request("ACK", timeout=5)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    await eventually(lambda: gateway_call.b.recordpref == "off")
    assert gateway_call.security_record()["b"]["recordpref"] == "off"
    assert (await call.bye()).status == 200


def two_line_answer(
    offer: bytes, port: int, keys: tuple[bytes, bytes | None], *, host_name: bool = False
) -> bytes:
    """A phone's answer to our two-line best-effort SDES ``offer``: each line PCMU with its
    key of ``keys`` on our line of :data:`SUITE`; a second key of None answers that line
    RTP/SAVP without a=crypto (refused: RFC 3264 §6, RFC 4568 §7.1.2). ``host_name``: the
    second line's c= names a host (the relay resolves none: refused by the media session)."""
    lines = []
    for media in parse_sdp_untrusted(offer).media:
        for name, value in media.attributes:
            if name == "crypto" and value is not None and value.split()[1] == SUITE:
                lines.append(value.split()[0])
                break
    text = simple_sdp(ALICE[0], port, formats=("0",)).decode()
    for index, key in enumerate(keys):
        if index:
            proto = "RTP/AVP" if key is not None else "RTP/SAVP"
            text += f"m=audio {port + 2 * index} {proto} 0\r\n"
            if host_name:
                text += "c=IN IP4 phone2.example.net\r\n"
            text += "a=rtpmap:0 PCMU/8000\r\n"
        if key is not None:
            inline = base64.b64encode(key).decode()
            text += f"a=crypto:{lines[index]} {SUITE} inline:{inline}\r\n"
    return text.encode()


@pytest.mark.parametrize("refused_by", ["security", "media"])
async def test_another_forks_183_refused_at_its_second_line_changes_no_key(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
    refused_by: str,
) -> None:
    """Two streams; the first phone's 183 keys both. Another forked phone's 183 answers line 1
    with its own key and line 2 RTP/SAVP without keys (the leg's security refuses it), or
    with a host name in line 2's c= (the media session refuses it, after the leg's security
    read it): refused, so ignored (the caller gets a 180) and the early media stays the first
    phone's. The first phone's 183 was reliable, so
    its 200 carries no SDP (RFC 3262 §5) and the relay is keyed from the keys in force: the
    first phone's on both lines. Before session 45 the refused 183 had already put the other
    phone's key on line 1's stream in force (take_answer was not all or nothing), and the 200
    keyed the relay with it: the answering phone authenticated nothing of ours on line 1."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    (trunk_port,) = port_bases(1)
    two = simple_sdp("127.0.0.1", trunk_port, formats=("0",)) + (
        f"m=audio {trunk_port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n".encode()
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=two)
    leg_b = await env.alice.next_call()
    offer = leg_b.invite.body
    ours = [
        base64.b64decode(value.split()[2].removeprefix("inline:").split("|")[0])
        for media in parse_sdp_untrusted(offer).media
        for name, value in media.attributes
        if name == "crypto" and value is not None and value.split()[1] == SUITE
    ]
    assert len(ours) == 2
    early = two_line_answer(offer, 30000, (EARLY_PHONE_KEY, EARLY_PHONE_KEY))
    reliable = [("Require", "100rel"), ("RSeq", "1")]
    await env.alice.respond(
        leg_b.incoming,  # type: ignore[arg-type]
        183,
        body=early,
        extra=reliable,
    )
    await call.exchange.wait_for(lambda r: r.status == 183)  # type: ignore[union-attr]
    await eventually(lambda: any(r.request.method == "PRACK" for r in env.alice.received))
    early_tag = leg_b.local_tag
    leg_b.local_tag = ANSWERING_TAG
    if refused_by == "security":
        refused = two_line_answer(offer, 30010, (ANSWERING_PHONE_KEY, None))
    else:
        keys = (ANSWERING_PHONE_KEY, ANSWERING_PHONE_KEY)
        refused = two_line_answer(offer, 30010, keys, host_name=True)
    await env.alice.respond(leg_b.incoming, 183, body=refused)  # type: ignore[arg-type]
    await call.exchange.wait_for(lambda r: r.status == 180)  # type: ignore[union-attr]
    leg_b.local_tag = early_tag
    # RFC 3262 §5: the reliable 183's answer completed the exchange; the 2xx repeats none.
    await env.alice.respond(leg_b.incoming, 200)  # type: ignore[arg-type]
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    for index, stream in enumerate(gateway_call.media.streams):
        phone = SrtpSession(SrtpKeys(SUITE, EARLY_PHONE_KEY, ours[index]))
        assert phone.unprotect_rtp(stream.a_to_b.transforms.rtp_out(rtp(1))) == rtp(1)
        # The phone's packets, under its own key, are taken on both lines.
        assert stream.b_to_a.transforms.rtp_in(phone.protect_rtp(rtp(2))) == rtp(2)
        phone.close()
    assert (await call.bye()).status == 200


async def two_line_call(env: B2bua) -> tuple[Call, Call, list[bytes]]:
    """trunk -> alice, two audio lines, our best-effort SDES offer: (leg A, alice's INVITE,
    our offer's key of :data:`SUITE` on each line)."""
    (trunk_port,) = port_bases(1)
    two = simple_sdp("127.0.0.1", trunk_port, formats=("0",)) + (
        f"m=audio {trunk_port + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n".encode()
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=two)
    leg_b = await env.alice.next_call()
    ours = [
        base64.b64decode(value.split()[2].removeprefix("inline:").split("|")[0])
        for media in parse_sdp_untrusted(leg_b.invite.body).media
        for name, value in media.attributes
        if name == "crypto" and value is not None and value.split()[1] == SUITE
    ]
    assert len(ours) == 2
    return call, leg_b, ours


def without_the_check(monkeypatch: pytest.MonkeyPatch, plugin: str) -> None:
    """``plugin`` "without-check": the SDES negotiation as a key exchange plugin written
    before ``check_remote_sdp_attributes`` (docs/plugin_hooks.md) is."""
    if plugin == "without-check":
        monkeypatch.delattr(sdes_plugin.SdesNegotiation, "check_remote_sdp_attributes")


async def refused_not_silent(env: B2bua, call: Call, keys: list[bytes]) -> None:
    """The 2xx refused saying why (a plugin without the check): ACK and BYE to the phone, 488
    to the caller, no key in the reason."""
    assert (await call.final()).status == 488
    await env.alice.next_request("ACK", timeout=5)
    bye = await env.alice.next_request("BYE", timeout=5)
    reason = bye.request.headers.get("Reason") or ""
    assert "cause=488" in reason
    assert "m= line 2's sdes key exchange failed on an earlier answer" in reason
    for key in keys:
        assert base64.b64encode(key).decode()[:12] not in reason


def phones_packets_taken(
    env: B2bua, phone_key: bytes, ours: list[bytes], sequence: int = 2
) -> None:
    """The relay takes the phone's SRTP packet ``sequence`` under ``phone_key`` on both
    lines."""
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    for index, stream in enumerate(gateway_call.media.streams):
        phone = SrtpSession(SrtpKeys(SUITE, phone_key, ours[index]))
        sent = phone.protect_rtp(rtp(sequence))
        assert stream.b_to_a.transforms.rtp_in(sent) == rtp(sequence), index
        phone.close()


@pytest.mark.parametrize("plugin", ["with-check", "without-check"])
async def test_a_forks_200_after_another_forks_refused_183_is_keyed_with_its_own_keys(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    plugin: str,
) -> None:
    """Two streams. One forked phone's 183 answers line 2 with our own key copied back (a
    peer bug the SDES negotiation refuses, RFC 4568 §5.1.2): refused (the caller gets a 180).
    The other phone, which sent no early answer, answers 200 with good keys: taken, both
    lines keyed with its keys, both ways. The refused 183 bound nothing: the SDES negotiation
    only checked it (``check_remote_sdp_attributes``). Before session 46 it failed line 2's
    negotiation for the whole offer: the 200 was taken with line 2 silent (session 45), then
    refused (session 46's review), as it still is with a key exchange plugin without the
    check, saying why."""
    without_the_check(monkeypatch, plugin)
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    call, leg_b, ours = await two_line_call(env)
    offer = leg_b.invite.body
    answering_tag = leg_b.local_tag
    leg_b.local_tag = ANSWERING_TAG  # the other forked phone
    copying = two_line_answer(offer, 30010, (ANSWERING_PHONE_KEY, ours[1]))
    await env.alice.respond(leg_b.incoming, 183, body=copying)  # type: ignore[arg-type]
    await call.exchange.wait_for(lambda r: r.status == 180)  # type: ignore[union-attr]
    leg_b.local_tag = answering_tag
    good = two_line_answer(offer, 30000, (EARLY_PHONE_KEY, EARLY_PHONE_KEY))
    await env.alice.respond(leg_b.incoming, 200, body=good)  # type: ignore[arg-type]
    if plugin == "without-check":
        await refused_not_silent(env, call, [*ours, ANSWERING_PHONE_KEY, EARLY_PHONE_KEY])
        return
    final = await call.final()
    assert final.status == 200, final.reason
    await env.alice.next_request("ACK", timeout=5)
    phones_packets_taken(env, EARLY_PHONE_KEY, ours)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    for index, stream in enumerate(gateway_call.media.streams):
        phone = SrtpSession(SrtpKeys(SUITE, EARLY_PHONE_KEY, ours[index]))
        assert phone.unprotect_rtp(stream.a_to_b.transforms.rtp_out(rtp(1))) == rtp(1)
        phone.close()
    # No phone's early media was keyed by our keys: no re-key re-INVITE.
    await trio.sleep(5)
    assert reinvites_to(env, answering_tag) == []
    assert (await call.bye()).status == 200


@pytest.mark.parametrize("plugin", ["with-check", "without-check"])
async def test_a_third_forks_200_after_a_refused_183_is_keyed_with_its_own_keys(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    plugin: str,
) -> None:
    """Three forked phones, two streams. Phone 1's 183 keys both lines (early media); phone
    2's 183 copies our key back on line 2: refused; phone 3 answers 200 with keys of its own.
    Its packets are taken on both lines under its keys. Before session 46 line 2, whose
    negotiation phone 2's 183 had failed, kept phone 1's key: phone 3's SRTP failed to
    authenticate there, the line silent, nothing said. A plugin without the check cannot
    take phone 3's keys on line 2: that 200 is refused saying why, never taken with phone 1's
    keys."""
    without_the_check(monkeypatch, plugin)
    env = await with_sdes(nursery, tmp_path, voipgw_seed)

    async def refuse_reinvite(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        await env.alice.respond(received, 488)  # our re-key: the 200's keys stay in force
        return True

    env.alice.in_dialog = refuse_reinvite
    call, leg_b, ours = await two_line_call(env)
    offer = leg_b.invite.body
    early = two_line_answer(offer, 30000, (EARLY_PHONE_KEY, EARLY_PHONE_KEY))
    await env.alice.respond(leg_b.incoming, 183, body=early)  # type: ignore[arg-type]
    await call.exchange.wait_for(lambda r: r.status == 183)  # type: ignore[union-attr]
    leg_b.local_tag = ANSWERING_TAG
    copying = two_line_answer(offer, 30010, (ANSWERING_PHONE_KEY, ours[1]))
    await env.alice.respond(leg_b.incoming, 183, body=copying)  # type: ignore[arg-type]
    await call.exchange.wait_for(lambda r: r.status == 180)  # type: ignore[union-attr]
    third_tag = "fork-3"
    leg_b.local_tag = third_tag
    env.alice._by_dialog[(leg_b.call_id, third_tag)] = leg_b
    third = two_line_answer(offer, 30020, (ANSWERING_PHONE_NEW_KEY, ANSWERING_PHONE_NEW_KEY))
    await env.alice.respond(leg_b.incoming, 200, body=third)  # type: ignore[arg-type]
    if plugin == "without-check":
        await refused_not_silent(env, call, [*ours, ANSWERING_PHONE_NEW_KEY, EARLY_PHONE_KEY])
        return
    final = await call.final()
    assert final.status == 200, final.reason
    await env.alice.next_request("ACK", timeout=5)
    phones_packets_taken(env, ANSWERING_PHONE_NEW_KEY, ours)
    # Phone 1's early media was keyed by our keys: phone 3 is re-keyed (and refuses here).
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    await eventually(lambda: gateway_call.security_record()["b"].get("fork_rekey") != "pending")
    assert str(gateway_call.security_record()["b"].get("fork_rekey")).startswith("refused")
    phones_packets_taken(env, ANSWERING_PHONE_NEW_KEY, ours, sequence=3)
    assert (await call.bye()).status == 200


async def test_a_forked_callee_answering_with_sdes_after_another_phones_early_media_in_clear(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """One phone answers early in clear (its 183 has no a=crypto: best effort takes it, the
    early media is cleartext), then another phone answers 200 with a=crypto in its own early
    dialog: the relay protects for it with our offer's key and takes its packets under its
    key; the record says SDES. No re-key: no packet of ours went under our key to the early
    phone. Before session 53 the call stayed in clear, although the phone that answered had
    taken our key and sent its own (its SRTP was dropped, ours sent to it in clear)."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    offered_key = crypto_key(leg_b.invite.body)
    early_sdp = simple_sdp(ALICE[0], 30000)
    await env.alice.respond(leg_b.incoming, 183, body=early_sdp)  # type: ignore[arg-type]
    await call.exchange.wait_for(lambda r: r.status == 183)  # type: ignore[union-attr]
    assert relay_transforms(env).rtp_out is None  # cleartext early media
    answering_from_another_dialog(env, leg_b)
    await leg_b.answer(200, sdp=phone_answer(leg_b.invite.body, 30002, ANSWERING_PHONE_KEY))
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    await trio.sleep(10)  # virtual time: a re-key re-INVITE would have gone by now
    assert_relay_keyed_for(env, ANSWERING_PHONE_KEY, offered_key)
    assert env.alice.requests("INVITE") == [leg_b.invite]  # no re-key
    record = gateway_call_of(env).security_record()["b"]
    assert record["streams"][0]["key_exchange"] == "sdes"
    assert record["streams"][0]["encrypted"] is True
    assert "fork_rekey" not in record
    assert (await call.bye()).status == 200


async def test_a_forked_callee_answering_in_clear_after_another_phones_keyed_early_media(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """One phone's 183 with a=crypto keys the early media; another phone answers 200 in
    clear: the relay sends and takes plain RTP for it, and the record says cleartext. Before
    session 53 the early phone's keys stayed in force: the relay protected for a phone that
    expects RTP and dropped its RTP as failing authentication, a call up with no audio."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await env.alice.respond(
        leg_b.incoming, 183, body=phone_answer(leg_b.invite.body, 30000, EARLY_PHONE_KEY)
    )  # type: ignore[arg-type]
    await call.exchange.wait_for(lambda r: r.status == 183)  # type: ignore[union-attr]
    assert relay_transforms(env).rtp_out is not None  # the early media is keyed
    answering_from_another_dialog(env, leg_b)
    await leg_b.answer(200, sdp=simple_sdp(ALICE[0], 30002))
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    await trio.sleep(10)  # virtual time: a re-key re-INVITE or a BYE would have gone by now
    assert_relay_in_clear(env)
    assert gateway_call_of(env).security_record()["b"]["streams"][0]["encrypted"] is False
    assert env.alice.requests("INVITE") == [leg_b.invite] and env.alice.requests("BYE") == []
    assert (await call.bye()).status == 200


async def test_a_callee_whose_200_has_keys_after_its_own_183_in_clear_is_keyed(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """A PBX answers early in clear from its own media server (a 183 without a=crypto), then
    its phone answers: the 200, in the same dialog, has a=crypto (RFC 3261 §13.2.1 wants the
    two answers the same; the phone uses the 2xx's). The relay protects for it with our
    offer's key and takes its packets under its key. Before session 53 the call stayed in
    clear: the phone's SRTP reached the caller as RTP, ours went to it in clear."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    offered_key = crypto_key(leg_b.invite.body)
    await env.alice.respond(leg_b.incoming, 183, body=simple_sdp(ALICE[0], 30000))  # type: ignore[arg-type]
    await call.exchange.wait_for(lambda r: r.status == 183)  # type: ignore[union-attr]
    assert relay_transforms(env).rtp_out is None
    await leg_b.answer(200, sdp=phone_answer(leg_b.invite.body, 30002, ANSWERING_PHONE_KEY))
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    assert_relay_keyed_for(env, ANSWERING_PHONE_KEY, offered_key)
    assert gateway_call_of(env).security_record()["b"]["streams"][0]["key_exchange"] == "sdes"
    assert (await call.bye()).status == 200


async def test_a_callee_whose_answer_to_a_re_invite_is_in_clear_gets_plain_rtp(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """No fork: alice's phone answers our best-effort offer with a=crypto, then the trunk's
    re-INVITE reaches it as our re-offer (with keys of ours again) and it answers in clear (a
    PBX that moved the call to a device without SRTP; RFC 8643 lets an answer decline the
    keys). The relay sends it plain RTP and takes its RTP, the record says cleartext. Before
    session 53 the first answer's keys stayed in force: SRTP to a device that plays RTP."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)

    async def answer_in_clear(received: Any) -> bool:
        if received.request.method != "INVITE":
            return False
        await env.alice.respond(received, 200, body=simple_sdp(ALICE[0], 30000, version=2))
        return True

    env.alice.in_dialog = answer_in_clear
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    offered_key = crypto_key(leg_b.invite.body)
    await leg_b.answer(200, sdp=phone_answer(leg_b.invite.body, 30000, ANSWERING_PHONE_KEY))
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    assert_relay_keyed_for(env, ANSWERING_PHONE_KEY, offered_key)
    assert (await call.reinvite(env.trunk.offer_sdp())).status == 200
    reoffer = (await env.alice.next_request("INVITE")).request
    assert b"a=crypto:" in reoffer.body
    await env.alice.next_request("ACK")
    assert_relay_in_clear(env)
    assert (await call.bye()).status == 200


async def test_the_early_phone_answering_after_another_phones_183_in_clear_has_its_keys(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    tls_signalling: None,  # noqa: F811
) -> None:
    """Phone 1's 183 keys the early media, phone 2's 183 in clear takes the early media over,
    then phone 1 answers 200 repeating its 183: the relay protects for phone 1 with our
    offer's key and takes its packets under its key again. Before, the line was taken as
    SDES with no key at all: a call up with nothing relayed either way."""
    env = await with_sdes(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    offered_key = crypto_key(leg_b.invite.body)
    early_phone_tag = leg_b.local_tag
    phone1_sdp = phone_answer(leg_b.invite.body, 30000, EARLY_PHONE_KEY)
    await env.alice.respond(leg_b.incoming, 183, body=phone1_sdp)  # type: ignore[arg-type]
    first = await call.exchange.wait_for(lambda r: r.status == 183)  # type: ignore[union-attr]
    leg_b.local_tag = ANSWERING_TAG  # phone 2's early dialog, in clear
    await env.alice.respond(leg_b.incoming, 183, body=simple_sdp(ALICE[0], 30002))  # type: ignore[arg-type]
    await call.exchange.wait_for(lambda r: r.status == 183 and r is not first)  # type: ignore[union-attr]
    assert relay_transforms(env).rtp_out is None
    leg_b.local_tag = early_phone_tag
    await leg_b.answer(200, sdp=phone1_sdp)
    assert (await call.final()).status == 200
    await env.alice.next_request("ACK")
    assert_relay_keyed_for(env, EARLY_PHONE_KEY, offered_key)
    assert (await call.bye()).status == 200
