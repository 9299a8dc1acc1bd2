"""DTLS-SRTP through the B2BUA (issue #6): signalling on the in-memory network, handshakes on
real 127.0.0.1 sockets between the gateway's relay and in-process phones built from the same
engine, in virtual time.

- a DTLS caller gets keys from the handshake and the call goes on;
- a wrong fingerprint, and a handshake that never completes, end the answered call with BYE,
  Reason cause 488 and the stated reason on both legs;
- a re-INVITE that keeps the association keeps the keys (no new handshake, RFC 8842 §5); one
  with a new tls-id runs a new handshake and the leg is re-keyed;
- a B leg we offer DTLS to (the account's policy is ``dtls``) and one of two forked B legs.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

import gateway.plugins.keyexchange.dtls_srtp as dtls_plugin
from gateway.core.ids import SeededIds
from gateway.core.interfaces import SrtpKeys
from gateway.core.media.handshakes import INTERNAL_ERROR_REASON
from gateway.core.media.srtp import SrtpSession
from gateway.core.sdp.model import MediaDescription, SessionDescription
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.dtls_srtp import (
    DEFAULT_HANDSHAKE_TIMEOUT,
    FINGERPRINT_MISMATCH_REASON,
    HANDSHAKE_TIMEOUT_REASON,
    DtlsKeyExchange,
    DtlsNegotiation,
)
from gateway.testing.network import Address
from gateway.testing.sip_agent import Call, Received, SipAgent
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    ALICE_PASSWORD,
    GW,
    B2bua,
    eventually,
    start_b2bua,
)
from tests.component.calls.dtls_callers import dtls_caller
from tests.component.calls.dtls_pairs import pairs
from tests.component.calls.dtls_phone import (
    OTHER_ID,
    PHONE_ID,
    PHONE_PORT,
    Phone,
    bind,
    dtls_sdp,
    is_client_hello,
    mirrored,
    wrong_fingerprint,
)
from tests.component.calls.redirect_phones import start_bob
from tests.component.calls.reinvite_answers import alice_answers_reinvites
from tests.component.calls.rtcp_reports import sender_report

ALICE2: Address = ("127.0.0.5", 5060)  # alice's second phone


async def with_dtls(nursery: trio.Nursery, tmp_path: Path, seed: int, **kwargs: object) -> B2bua:
    return await start_b2bua(
        nursery,
        tmp_path,
        seed,
        plugins=[("dtls", dtls_plugin)],
        **kwargs,  # type: ignore[arg-type]
    )


def a_leg_keys(env: B2bua) -> SrtpKeys | None:
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.a.security is not None
    return gateway_call.a.security.keys(0)


async def phones(
    nursery: trio.Nursery, negotiation: DtlsNegotiation, port: int, gateway_port: int
) -> tuple[Phone, Phone]:
    """A callee's DTLS phone on ``port`` and the handshake of its RTCP port on ``port`` + 1,
    both running, towards the gateway's RTP and RTCP ports (RFC 3605 default: RTP + 1)."""
    rtcp = negotiation.rtcp_component()
    assert rtcp is not None  # the answerer knows its role at once
    phone = Phone(negotiation, await bind(port), ("127.0.0.1", gateway_port))
    rtcp_phone = Phone(rtcp, await bind(port + 1), ("127.0.0.1", gateway_port + 1))
    nursery.start_soon(phone.run)
    nursery.start_soon(rtcp_phone.run)
    return phone, rtcp_phone


async def assert_b_leg_keyed(env: B2bua, phone: Phone, rtcp_phone: Phone) -> None:
    """The answering B leg holds the keys of both its handshakes, mirrored."""
    with trio.fail_after(30):
        await phone.keyed.wait()
        await rtcp_phone.keyed.wait()
    assert phone.keys is not None and rtcp_phone.keys is not None
    assert phone.failure is None and rtcp_phone.failure is None
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    security = gateway_call.b.security if gateway_call.b is not None else None
    assert security is not None
    await eventually(lambda: security.rtcp_keys(0) is not None)
    assert security.keys(0) == mirrored(phone.keys)
    assert security.rtcp_keys(0) == mirrored(rtcp_phone.keys)


async def answer_after_its_early_client_hellos(
    env: B2bua, nursery: trio.Nursery, call: Call, leg: Call, *, rtcp_mux_checked: bool = True
) -> None:
    """The callee ``leg`` (the DTLS client, without rtcp-mux) starts both ports' handshakes
    before it answers 200: neither ClientHello is lost (no retransmission, nothing dropped as
    malformed) and both ports are keyed once it answered."""
    offer = parse_sdp_untrusted(leg.invite.body)
    offered = offer.media[0]
    if rtcp_mux_checked:
        assert not offered.rtcp_mux
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).answer(
        pairs(offer, offered), suites=[], secure_signalling=False
    )
    assert negotiation is not None and negotiation.dtls_role == "client"
    phone, rtcp_phone = await phones(nursery, negotiation, PHONE_PORT, offered.port)
    await eventually(lambda: rtcp_phone.negotiation.statistics().datagrams_sent >= 1)  # type: ignore[attr-defined]
    await trio.sleep(0.2)  # the ClientHellos reached the gateway; the answer comes later
    await leg.answer(200, sdp=dtls_sdp(negotiation, rtcp_mux=False))
    assert (await call.final()).status == 200
    await assert_b_leg_keyed(env, phone, rtcp_phone)
    for engine in (phone.negotiation, rtcp_phone.negotiation):
        assert engine.statistics().retransmissions == 0  # type: ignore[attr-defined]
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    assert stream.b_to_a.statistics().dropped_malformed == 0
    # Both came from its SDP address: never asked for a cookie (session 41), although they
    # were kept while our answer was on its way and fed after it.
    (dtls,) = [e for n, e in env.gateway.plugins.key_exchanges.items() if n == "dtls"]
    assert dict(dtls.counters())["hello_verify_requests"] == 0


def assert_ended_with(reason: str, byes: Sequence[object]) -> None:
    for bye in byes:
        header = bye.request.headers.get("Reason") or ""  # type: ignore[attr-defined]
        assert "cause=488" in header
        assert reason in header


async def test_a_dtls_caller_gets_keys_from_the_handshake_and_the_call_goes_on(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env)
    phone = caller.phone
    with trio.fail_after(30):
        await phone.keyed.wait()
    assert phone.failure is None and phone.keys is not None
    await eventually(lambda: a_leg_keys(env) is not None)
    assert a_leg_keys(env) == mirrored(phone.keys)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    record = gateway_call.security_record()["a"]["streams"][0]
    assert record["key_exchange"] == "dtls"
    assert record["peer_certificate_sha256"] == PHONE_ID.sha256_hex()
    assert "rtcp_port_keyed" not in record  # rtcp-mux: SRTCP shares the RTP port's keys
    # Still up well after the handshake timeout would have struck.
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == []


async def test_an_engine_without_tls_id_is_said_once_per_gateway_through_its_calls(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A third-party engine without ``tls_id`` (here the dtls engine with it taken away) is
    said in the log once per engine type and gateway: each call's handshakes note it in the
    gateway's set (its CallManager's), not in a set of the call's own, which would say it again
    on every call. The call goes on (a new engine object taken for a new association)."""
    monkeypatch.delattr(DtlsNegotiation, "tls_id")
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    assert env.gateway.calls is not None
    with caplog.at_level(logging.WARNING, logger="gateway.core.media.handshakes"):
        caller = await dtls_caller(nursery, env)
        with trio.fail_after(30):
            await caller.phone.keyed.wait()
    assert caller.phone.failure is None
    assert env.gateway.calls.unnamed_engines == {DtlsNegotiation}
    warned = [r.getMessage() for r in caplog.records if "has no tls_id" in r.getMessage()]
    assert len(warned) == 1 and "DtlsNegotiation has no tls_id" in warned[0], warned


async def test_a_wrong_fingerprint_ends_the_call_with_the_reason_and_no_media(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, fingerprint=wrong_fingerprint())
    bye_a = await env.trunk.next_request("BYE", timeout=30)
    bye_b = await env.alice.next_request("BYE", timeout=5)
    assert_ended_with(FINGERPRINT_MISMATCH_REASON, [bye_a, bye_b])
    assert caller.phone.keys is None
    assert caller.phone.media == []


async def test_a_handshake_that_never_completes_ends_the_call_after_the_timeout(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    # The phone's socket is there but nobody answers the gateway's ClientHello.
    caller = await dtls_caller(nursery, env, run_phone=False)
    with caller.phone.sock:
        bye_a = await env.trunk.next_request("BYE", timeout=DEFAULT_HANDSHAKE_TIMEOUT + 10)
        bye_b = await env.alice.next_request("BYE", timeout=5)
    assert_ended_with(HANDSHAKE_TIMEOUT_REASON, [bye_a, bye_b])
    # The timer runs from the answer (when our DTLS role became known), not from the INVITE.
    waited = bye_a.at - caller.answered_at
    assert DEFAULT_HANDSHAKE_TIMEOUT <= waited < DEFAULT_HANDSHAKE_TIMEOUT + 2
    await eventually(lambda: env.calls == 0)


async def test_re_invites_keep_the_association_or_rekey_with_a_new_tls_id(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env)
    phone = caller.phone
    with trio.fail_after(30):
        await phone.keyed.wait()
    await eventually(lambda: a_leg_keys(env) is not None)
    first_keys = a_leg_keys(env)
    # Counted in ClientHellos, not datagrams: the phone's socket is a real one, so on a loaded
    # machine the autojump clock can pass the gateway's retransmission timer while the phone's
    # answer is still in the kernel, and that retransmitted last flight may still be queued here.
    hellos = phone.client_hellos
    assert hellos >= 1

    # Same tls-id and fingerprint (the phone keeps its role): RFC 8842 §5, no new handshake.
    kept = caller.exchange.offer(suites=[], secure_signalling=False, previous=phone.negotiation)
    ok = await caller.call.reinvite(dtls_sdp(kept))
    assert ok.status == 200
    answer = parse_sdp_untrusted(ok.body)
    media = answer.media[0]
    for name in ("fingerprint", "tls-id"):
        assert media.attributes.get(name) == caller.answer.attributes.get(name)
    assert media.attributes.get("setup") == "active"  # our role stays client
    kept.remote_sdp_attributes(pairs(answer, media))
    phone.negotiation = kept
    await trio.sleep(5)
    assert phone.client_hellos == hellos
    assert a_leg_keys(env) == first_keys

    # A new tls-id (and a=setup:actpass): a new association, a new handshake, new keys.
    fresh = caller.exchange.offer(
        suites=[], secure_signalling=False, previous=phone.negotiation, rekey=True
    )
    phone.negotiation = fresh
    ok = await caller.call.reinvite(dtls_sdp(fresh))
    assert ok.status == 200
    answer = parse_sdp_untrusted(ok.body)
    media = answer.media[0]
    assert media.attributes.get("tls-id") != caller.answer.attributes.get("tls-id")
    fresh.remote_sdp_attributes(pairs(answer, media))
    await eventually(lambda: phone.keys is not None and phone.keys != mirrored(first_keys))
    assert phone.keys is not None
    await eventually(lambda: a_leg_keys(env) == mirrored(phone.keys))
    assert phone.client_hellos > hellos
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_callee_whose_policy_is_dtls_is_offered_dtls_and_keyed_by_its_handshake(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_dtls(nursery, tmp_path, voipgw_seed, alice_auto=None)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="dtls")
    call = await env.trunk.invite(env.did_uri(ALICE_DID))  # plain RTP from the trunk
    leg_b = await env.alice.next_call()
    offer = parse_sdp_untrusted(leg_b.invite.body)
    offered = offer.media[0]
    # Our offer (RFC 5763 §5): UDP/TLS/RTP/SAVP, a=setup:actpass, our fingerprint, no a=crypto.
    assert offered.proto == "UDP/TLS/RTP/SAVP"
    assert offered.attributes.get("setup") == "actpass"
    assert offered.attributes.has("fingerprint") and offered.attributes.has("tls-id")
    assert not offered.crypto
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).answer(
        pairs(offer, offered), suites=[], secure_signalling=False
    )
    assert negotiation is not None and negotiation.dtls_role == "client"
    # The trunk offered no rtcp-mux, so neither do we (RFC 5761 §5.1.1): the RTCP ports run
    # a handshake of their own (RFC 5764 §4.1).
    assert not offered.rtcp_mux
    phone, rtcp_phone = await phones(nursery, negotiation, PHONE_PORT, offered.port)
    await leg_b.answer(200, sdp=dtls_sdp(negotiation, rtcp_mux=False))
    final = await call.final()
    assert final.status == 200
    trunk_media = parse_sdp_untrusted(final.body).media[0]
    assert trunk_media.proto == "RTP/AVP" and not trunk_media.attributes.has("fingerprint")

    await assert_b_leg_keyed(env, phone, rtcp_phone)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    record = gateway_call.security_record()["b"]["streams"][0]
    assert record["key_exchange"] == "dtls" and record["dtls_role"] == "server"
    assert record["rtcp_port_keyed"] is True
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_callees_rtcp_port_client_hello_before_its_answer_is_not_lost(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # A callee answering a=setup:active (the DTLS client) without rtcp-mux starts both ports'
    # handshakes before its answer reaches us (baresip does as it rings). The RTP port's
    # ClientHello waits in the engine for the answer; the RTCP port's has no handshake to go to
    # until then (our role is not known). It was dropped as malformed: the callee resent it a
    # second later (RFC 6347 §4.2.4.1) and SRTCP was dropped both ways in between.
    env = await with_dtls(nursery, tmp_path, voipgw_seed, alice_auto=None)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="dtls")
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_b = await env.alice.next_call()
    await answer_after_its_early_client_hellos(env, nursery, call, leg_b)


async def test_a_redirected_callees_rtcp_port_client_hello_before_its_answer_is_not_lost(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # As above, for the callee a 302 sends the call to: the first leg (alice's, finished by its
    # 302) stays among the call's B legs, and the handshake sockets of the one now ringing were
    # hooked only while a single B leg had ever been called: its early RTCP ClientHello was
    # dropped as malformed, as before the fix above (the same holds for a trunk's failover).
    env = await with_dtls(nursery, tmp_path, voipgw_seed, alice_auto=None)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("bob", media_policy="dtls")
    bob = await start_bob(env, nursery, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg_a = await env.alice.next_call()
    assert leg_a.incoming is not None
    await env.alice.respond(leg_a.incoming, 302, extra=[("Contact", "<sip:bob@127.0.0.1>")])
    leg_b = await bob.next_call()
    await answer_after_its_early_client_hellos(env, nursery, call, leg_b)


async def test_the_last_ringing_forks_rtcp_port_client_hello_before_its_answer_is_not_lost(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # Two forks ring; one declines (486). The other is now the only leg our offer may be
    # answered by: its early RTCP ClientHello is held as a lone callee's is (above), not dropped
    # as malformed because its sockets were hooked only while a single B leg had been called.
    env = await with_dtls(nursery, tmp_path, voipgw_seed, alice_auto=None)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="dtls")
    alice2 = SipAgent(
        env.network,
        ALICE2,
        ids=SeededIds(voipgw_seed + 3),
        user="alice",
        password=ALICE_PASSWORD,
        proxy=GW,
        auto=None,
        media_port=30010,
    )
    await nursery.start(alice2.serve)
    assert (await alice2.register()).status == 200
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg1 = await env.alice.next_call()
    leg2 = await alice2.next_call()
    await leg2.answer(486)
    await trio.sleep(0.1)  # the 486 reached the gateway
    await answer_after_its_early_client_hellos(env, nursery, call, leg1, rtcp_mux_checked=False)


async def test_of_two_forked_dtls_callees_the_one_that_answers_is_keyed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await with_dtls(nursery, tmp_path, voipgw_seed, alice_auto=None)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="dtls")
    alice2 = SipAgent(
        env.network,
        ALICE2,
        ids=SeededIds(voipgw_seed + 3),
        user="alice",
        password=ALICE_PASSWORD,
        proxy=GW,
        auto=None,
        media_port=30010,
    )
    await nursery.start(alice2.serve)
    assert (await alice2.register()).status == 200
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    leg1 = await env.alice.next_call()
    leg2 = await alice2.next_call()
    offers = [parse_sdp_untrusted(leg.invite.body) for leg in (leg1, leg2)]
    # Each fork is a leg of its own with a DTLS offer of its own (RFC 8842: its own tls-id).
    tls_ids = {sd.media[0].attributes.get("tls-id") for sd in offers}
    assert len(tls_ids) == 2 and None not in tls_ids

    # The first phone rings, the second answers; the first is CANCELled (RFC 3261 §9.1: once
    # it has sent a provisional response) and never shakes hands.
    await leg1.ring()
    offer = offers[1]
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).answer(
        pairs(offer, offer.media[0]), suites=[], secure_signalling=False
    )
    assert negotiation is not None
    port = PHONE_PORT + 2
    phone, rtcp_phone = await phones(nursery, negotiation, port, offer.media[0].port)
    await leg2.answer(200, sdp=dtls_sdp(negotiation, port=port, rtcp_mux=False))
    assert (await call.final()).status == 200
    await env.alice.next_request("CANCEL", timeout=5)
    await assert_b_leg_keyed(env, phone, rtcp_phone)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and alice2.requests("BYE") == []


async def test_a_late_offer_callee_that_offers_dtls_is_answered_in_our_ack_and_keyed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The trunk's INVITE has no SDP (RFC 3261 §13.2.1); alice's phone, policy ``dtls``, offers
    DTLS-SRTP in its 200. Our ACK answers it (RFC 5763 §5: a=setup:active to its actpass, our
    fingerprint) and the handshake keys the B leg; the trunk gets and answers a plain offer."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed, alice_auto=None)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="dtls")
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    leg_b = await env.alice.next_call()
    assert leg_b.invite.body == b""
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(
        suites=[], secure_signalling=False
    )
    sock = await bind()
    await leg_b.answer(200, sdp=dtls_sdp(negotiation))
    final = await call.final()
    assert final.status == 200
    offer_a = parse_sdp_untrusted(final.body).media[0]
    assert offer_a.proto == "RTP/AVP" and not offer_a.attributes.has("fingerprint")

    ack = (await env.alice.next_request("ACK")).request
    answer = parse_sdp_untrusted(ack.body)
    answered = answer.media[0]
    assert answered.proto == "UDP/TLS/RTP/SAVP"
    assert answered.attributes.get("setup") == "active"  # we are the DTLS client
    assert answered.attributes.has("fingerprint") and answered.rtcp_mux
    negotiation.remote_sdp_attributes(pairs(answer, answered))
    phone = Phone(negotiation, sock, ("127.0.0.1", answered.port))
    nursery.start_soon(phone.run)
    with trio.fail_after(30):
        await phone.keyed.wait()
    assert phone.failure is None and phone.keys is not None
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    security = gateway_call.b.security if gateway_call.b is not None else None
    assert security is not None
    await eventually(lambda: security.keys(0) is not None)
    assert security.keys(0) == mirrored(phone.keys)
    record = gateway_call.security_record()["b"]["streams"][0]
    assert record["key_exchange"] == "dtls" and record["dtls_role"] == "client"
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_late_offer_caller_whose_policy_is_dtls_is_offered_dtls_in_our_200(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Alice (policy ``dtls``) calls the trunk with an INVITE without SDP: the trunk's plain
    offer reaches her as a DTLS-SRTP offer in our 200 (a=setup:actpass, our fingerprint), she
    answers in her ACK, shakes hands as the client, and her leg is keyed by it."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="dtls")
    offered_to_alice: list[tuple[DtlsNegotiation, int]] = []

    def answer(offer_body: bytes) -> bytes:
        offer = parse_sdp_untrusted(offer_body)
        offered = offer.media[0]
        assert offered.proto == "UDP/TLS/RTP/SAVP"
        assert offered.attributes.get("setup") == "actpass"
        negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).answer(
            pairs(offer, offered), suites=[], secure_signalling=False
        )
        assert negotiation is not None and negotiation.dtls_role == "client"
        # The trunk offered no rtcp-mux, so neither did we: RTCP has a handshake of its own.
        assert not offered.rtcp_mux
        offered_to_alice.append((negotiation, offered.port))
        return dtls_sdp(negotiation, rtcp_mux=False)

    call = await env.alice.invite("sip:+15550123@127.0.0.1:5060", sdp=b"")
    call.ack_answer = answer
    if (await call.final()).status == 407:
        await call.authenticate()
    assert (await call.final()).status == 200
    (trunk_leg,) = [r.request for r in env.trunk.received if r.request.method == "INVITE"]
    assert trunk_leg.body == b""  # the trunk got no offer either: it made one, plain RTP
    ((negotiation, gateway_port),) = offered_to_alice
    phone, rtcp_phone = await phones(nursery, negotiation, PHONE_PORT, gateway_port)
    with trio.fail_after(30):
        await phone.keyed.wait()
        await rtcp_phone.keyed.wait()
    assert phone.keys is not None and rtcp_phone.keys is not None
    assert phone.failure is None and rtcp_phone.failure is None
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    security = gateway_call.a.security
    assert security is not None
    await eventually(lambda: security.rtcp_keys(0) is not None)
    assert security.keys(0) == mirrored(phone.keys)
    assert security.rtcp_keys(0) == mirrored(rtcp_phone.keys)
    record = gateway_call.security_record()["a"]["streams"][0]
    assert record["key_exchange"] == "dtls" and record["dtls_role"] == "server"
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_key_exchange_that_raises_ends_only_its_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A bug in a key-exchange engine, set off by a datagram from the network: the gateway's
    # negotiations (it answers the phone's offer) raise on every datagram; the phone's do not.
    original = DtlsNegotiation.receive_packet

    def buggy(self: DtlsNegotiation, packet: bytes, *, now: float) -> None:
        if self.role == "answerer":
            raise RuntimeError("engine bug")
        original(self, packet, now=now)

    def buggy_from(self: DtlsNegotiation, packet: bytes, *, source: Any, now: float) -> None:
        buggy(self, packet, now=now)  # the handshake task hands the source on (session 40)

    monkeypatch.setattr(DtlsNegotiation, "receive_packet", buggy)
    monkeypatch.setattr(DtlsNegotiation, "receive_packet_from", buggy_from)
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    await dtls_caller(nursery, env)
    bye_a = await env.trunk.next_request("BYE", timeout=30)
    bye_b = await env.alice.next_request("BYE", timeout=5)
    assert_ended_with(INTERNAL_ERROR_REASON, [bye_a, bye_b])
    await eventually(lambda: env.calls == 0)
    # The gateway goes on: the next call is answered.
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200


async def test_a_call_transferred_to_a_dtls_device_is_keyed_by_its_own_handshake(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """alice (plain RTP) transfers the trunk's call to bob, whose policy is ``dtls``. The
    transfer calls bob without SDP; his phone offers DTLS-SRTP in its 200, the trunk gets a
    plain re-offer, and our ACK answers bob with our fingerprint: the handshake keys the leg
    that took alice's place, and the call goes on (REFER, RFC 3515; RFC 5763 §5)."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("bob", media_policy="dtls")
    bob = SipAgent(
        env.network,
        ("127.0.0.4", 5060),
        ids=SeededIds(voipgw_seed + 3),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        auto=None,
    )
    await nursery.start(bob.serve)
    assert (await bob.register()).status == 200
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    alice_leg = await env.alice.next_call()
    refer = await alice_leg.request("REFER", extra=[("Refer-To", "<sip:bob@127.0.0.1:5060>")])
    assert (await refer.final()).status == 202

    bob_leg = await bob.next_call()
    assert bob_leg.invite.body == b""
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(
        suites=[], secure_signalling=False
    )
    sock = await bind()
    await bob_leg.answer(200, sdp=dtls_sdp(negotiation))
    reinvite = (await env.trunk.next_request("INVITE")).request
    offer_to_trunk = parse_sdp_untrusted(reinvite.body).media[0]
    assert offer_to_trunk.proto == "RTP/AVP" and not offer_to_trunk.attributes.has("fingerprint")
    ack = (await bob.next_request("ACK")).request
    answer = parse_sdp_untrusted(ack.body)
    answered = answer.media[0]
    assert answered.proto == "UDP/TLS/RTP/SAVP"
    assert answered.attributes.get("setup") == "active"
    negotiation.remote_sdp_attributes(pairs(answer, answered))
    phone = Phone(negotiation, sock, ("127.0.0.1", answered.port))
    nursery.start_soon(phone.run)
    with trio.fail_after(30):
        await phone.keyed.wait()
    assert phone.failure is None and phone.keys is not None
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.b is not None and gateway_call.b.peer_name == "bob"
    security = gateway_call.b.security
    assert security is not None
    await eventually(lambda: security.keys(0) is not None)
    assert security.keys(0) == mirrored(phone.keys)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and bob.requests("BYE") == []


async def test_a_strangers_client_hello_before_the_callers_first_packet_costs_it_nothing(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """docs/media_security.md, "Forged handshakes": the caller's SDP gave its address; a
    stranger's ClientHello reaches the caller leg's port before the caller's first packet.
    Before, it latched and connected the port (the kernel then refused the caller) and went to
    our engine, the DTLS client here, which ended the call ("unexpected message"). Now the
    stranger latches the port without connecting it, the caller's first datagram takes it
    over, the caller is keyed, and the stranger's later datagrams are counted."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, run_phone=False)  # its socket queues our hello
    forged = DtlsKeyExchange(identity=lambda: OTHER_ID).offer(suites=[], secure_signalling=False)
    client = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        forged.local_sdp_attributes(), suites=[], secure_signalling=False
    )
    assert client is not None and client.dtls_role == "client"
    gateway_port = ("127.0.0.1", caller.answer.port)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    with closed_on_failure(caller.phone), await bind(PHONE_PORT + 4) as stranger:
        for datagram in client.packets_to_send(now=trio.current_time()):
            await stranger.sendto(datagram, gateway_port)
        await eventually(lambda: stream.a.rtp_source == ("127.0.0.1", PHONE_PORT + 4))
        # Our ClientHello went before the phone's socket was bound: its resends go to the
        # latched stranger and to the SDP address too (a peer waiting for our ClientHello
        # never speaks first to take the port over).
        nursery.start_soon(caller.phone.run)
        with trio.fail_after(30):
            await caller.phone.keyed.wait()
        assert caller.phone.failure is None and caller.phone.keys is not None
        await eventually(lambda: a_leg_keys(env) is not None)
        assert a_leg_keys(env) == mirrored(caller.phone.keys)
        assert stream.a.rtp_source == ("127.0.0.1", PHONE_PORT)
        await stranger.sendto(b"\x16\xfe\xfd" + bytes(20), gateway_port)
        await eventually(lambda: stream.a_to_b.statistics().dropped_unlatched_source >= 1)
        assert stream.a._rtp.connected  # keyed: the kernel refuses the stranger from now on
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == []


def readable(sock: trio.socket.SocketType) -> bool:
    """Whether a datagram waits in ``sock`` (asked of the kernel, not of trio's clock: with
    the autojump clock a timed receive would move the gateway's retransmission timers)."""
    return bool(select.select([sock], [], [], 0)[0])


@contextlib.contextmanager
def closed_on_failure(phone: Phone) -> Iterator[None]:
    """Close the socket of a phone not run yet (run_phone=False) when the test fails before
    it runs: left open, it held PHONE_PORT and the next test could not bind it."""
    try:
        yield
    except BaseException:
        phone.sock.close()
        raise


async def strangers_client_hello(
    gateway_port: tuple[str, int], *, returns_cookie: bool = False
) -> trio.socket.SocketType:
    """A stranger's ClientHello (a DTLS client with a certificate of its own) to
    ``gateway_port``, from PHONE_PORT + 4: its socket, still open. With ``returns_cookie`` it
    takes our HelloVerifyRequest (RFC 6347 §4.2.1: since session 41 a source other than the
    SDP address is asked for a cookie) and sends its ClientHello again with our cookie: a
    stranger that receives at its address."""
    forged = DtlsKeyExchange(identity=lambda: OTHER_ID).offer(suites=[], secure_signalling=False)
    client = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        forged.local_sdp_attributes(), suites=[], secure_signalling=False
    )
    assert client is not None and client.dtls_role == "client"
    stranger = await bind(PHONE_PORT + 4)
    for datagram in client.packets_to_send(now=trio.current_time()):
        await stranger.sendto(datagram, gateway_port)
    if returns_cookie:
        with trio.fail_after(5):
            request, _ = await stranger.recvfrom(2048)
        assert request[0] == 22 and request[13] == 3  # our HelloVerifyRequest
        client.receive_packet(request, now=trio.current_time())
        for datagram in client.packets_to_send(now=trio.current_time()):
            await stranger.sendto(datagram, gateway_port)
    return stranger


async def test_our_server_flight_to_a_strangers_client_hello_never_reaches_the_caller(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """docs/media_security.md, "Forged handshakes": the caller offers a=setup:active, so we
    are the DTLS server (RFC 4145 §4.1). A stranger's ClientHello reaches the caller leg's
    port first and our engine answers it: that flight goes to the stranger alone. Copied to
    the caller's SDP address too (session 36), it waited in the caller's socket, was taken by
    the caller's handshake as our answer to its own ClientHello, and our right answer after
    the restart was ignored: both ends failed. Now the caller's ClientHello takes the port
    over and gets a handshake of its own (session 40: one per source; session 37 started the
    port's handshake afresh for it), and the caller is keyed."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, run_phone=False, setup="active")
    assert caller.phone.negotiation.dtls_role == "client"  # type: ignore[attr-defined]
    gateway_port = ("127.0.0.1", caller.answer.port)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    with (
        closed_on_failure(caller.phone),
        caplog.at_level(logging.INFO, logger="gateway.core.media.handshakes"),
        await strangers_client_hello(gateway_port, returns_cookie=True) as stranger,
    ):
        with trio.fail_after(5):
            flight, _ = await stranger.recvfrom(2048)
        assert flight[0] == 22 and flight[13] == 2  # our ServerHello, to the stranger
        assert stream.a.rtp_source == ("127.0.0.1", PHONE_PORT + 4)
        # A copy goes right after the stranger's datagram (StreamSide.send): none came.
        assert not readable(caller.phone.sock)
        nursery.start_soon(caller.phone.run)
        with trio.fail_after(30):
            await caller.phone.keyed.wait()
    assert caller.phone.failure is None and caller.phone.keys is not None
    await eventually(lambda: a_leg_keys(env) is not None)
    assert a_leg_keys(env) == mirrored(caller.phone.keys)
    assert stream.a.rtp_source == ("127.0.0.1", PHONE_PORT)
    # Nothing to start afresh: the stranger's handshake is its own.
    assert not any("handshake started afresh" in r.getMessage() for r in caplog.records)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == []


ZRTP_SHAPED = bytes([0x10, 0, 0, 1]) + b"ZRTP" + bytes(4) + b"PZ\x00\x03Ping    " + bytes(16)
"""A datagram a stranger can send to any port: RFC 7983's ZRTP range (first byte 16..19) and
the "ZRTP" cookie (RFC 6189 §5), a Ping's header."""


class StrangerBeforeEachDatagram:
    """The caller's socket, whose every datagram to the gateway follows one of ZRTP_SHAPED
    from ``stranger`` (taken in by the gateway first: the autojump clock moves on only once
    every task waits)."""

    def __init__(
        self,
        sock: trio.socket.SocketType,
        stranger: trio.socket.SocketType,
        gateway_port: tuple[str, int],
    ) -> None:
        self._sock, self._stranger, self._gateway_port = sock, stranger, gateway_port

    def __enter__(self) -> trio.socket.SocketType:
        return self._sock.__enter__()

    def __exit__(self, *exc_info: object) -> None:
        self._sock.__exit__(*exc_info)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    async def sendto(self, data: bytes, address: tuple[str, int]) -> int:
        await self._stranger.sendto(ZRTP_SHAPED, self._gateway_port)
        await trio.sleep(0.005)
        return await self._sock.sendto(data, address)


async def test_a_strangers_zrtp_shaped_datagrams_after_the_takeover_do_not_restart_our_server(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As above (we are the DTLS server, a stranger's ClientHello reached the port first, the
    caller's took the port over with a handshake of its own), and the stranger sends a
    datagram shaped as ZRTP before each of the caller's. Handed to the handshake task beside
    the caller's latch (session 39's relay, for the ZRTP engine), each made the caller's next
    datagram restart our association (session 37's restart): the caller was never keyed.
    Dropped by the relay (``unlatched_source``) as before session 39: the caller is keyed, and
    nothing is started afresh (session 40: a handshake per source)."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, run_phone=False, setup="active")
    gateway_port = ("127.0.0.1", caller.answer.port)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    with (
        closed_on_failure(caller.phone),
        caplog.at_level(logging.INFO, logger="gateway.core.media.handshakes"),
        await strangers_client_hello(gateway_port) as stranger,
    ):
        with trio.fail_after(5):
            await stranger.recvfrom(2048)  # our ServerHello, to the stranger
        caller.phone.sock = StrangerBeforeEachDatagram(  # type: ignore[assignment]
            caller.phone.sock, stranger, gateway_port
        )
        nursery.start_soon(caller.phone.run)
        with trio.fail_after(30):
            await caller.phone.keyed.wait()
    assert caller.phone.failure is None and caller.phone.keys is not None
    await eventually(lambda: a_leg_keys(env) is not None)
    assert a_leg_keys(env) == mirrored(caller.phone.keys)
    assert stream.a.rtp_source == ("127.0.0.1", PHONE_PORT)
    assert stream.a_to_b.statistics().dropped_unlatched_source >= 1
    restarts = [r for r in caplog.records if "handshake started afresh" in r.getMessage()]
    assert restarts == []


async def test_our_client_hello_reaches_the_callers_sdp_address_while_a_stranger_holds_the_port(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Kept (session 36): as DTLS client (the caller offered actpass, we answered active) our
    ClientHello goes to the latched stranger and to the caller's SDP address too, since a peer
    waiting for our ClientHello never speaks first to take the port over."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, run_phone=False)
    gateway_port = ("127.0.0.1", caller.answer.port)
    while readable(caller.phone.sock):  # our first ClientHello, if the socket was bound in time
        await caller.phone.sock.recvfrom(2048)
    with closed_on_failure(caller.phone), await strangers_client_hello(gateway_port) as stranger:
        with trio.fail_after(5):  # our retransmission (1 s, RFC 6347 §4.2.4.1), to the stranger
            while not is_client_hello((await stranger.recvfrom(2048))[0]):
                pass
        assert readable(caller.phone.sock)  # ... and a copy of it to the caller
        copy, source = await caller.phone.sock.recvfrom(2048, socket.MSG_PEEK)
        assert is_client_hello(copy) and source == gateway_port
        nursery.start_soon(caller.phone.run)
        with trio.fail_after(30):
            await caller.phone.keyed.wait()
    assert caller.phone.failure is None and caller.phone.keys is not None
    await eventually(lambda: a_leg_keys(env) is not None)
    assert a_leg_keys(env) == mirrored(caller.phone.keys)


async def test_a_peer_restarting_its_dtls_client_on_a_kept_association_is_rekeyed(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 6347 §4.2.8 (session 44; docs/media_security.md, "A new ClientHello on a kept
    association"): we are the DTLS server of an established association; the caller
    re-INVITEs with the same tls-id and fingerprint, which keeps the association (RFC 8842
    §5), and restarts its side (a fresh ClientHello, epoch 0, message_seq 0, a new random).
    It is asked for our cookie, then its handshake runs on a candidate association while the
    old keys stay the leg's; once it completed with the certificate a=fingerprint names, its
    keys are the leg's, said at INFO and in the call's record. Before session 44 our old last
    flight was sent again and the caller's new handshake timed out, its media lost one way."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, setup="active")
    phone = caller.phone
    with trio.fail_after(30):
        await phone.keyed.wait()
    await eventually(lambda: a_leg_keys(env) is not None)
    first_keys = a_leg_keys(env)
    assert first_keys is not None and phone.keys is not None
    assert first_keys == mirrored(phone.keys)

    kept = caller.exchange.offer(suites=[], secure_signalling=False, previous=phone.negotiation)
    ok = await caller.call.reinvite(dtls_sdp(kept, setup="active"))
    assert ok.status == 200
    answer = parse_sdp_untrusted(ok.body)
    media = answer.media[0]
    for name in ("fingerprint", "tls-id"):
        assert media.attributes.get(name) == caller.answer.attributes.get(name)
    assert media.attributes.get("setup") == "passive"  # the association is kept
    restarted = DtlsKeyExchange(identity=lambda: PHONE_ID).answer(
        pairs(answer, media), suites=[], secure_signalling=False
    )
    assert restarted is not None and restarted.dtls_role == "client"
    phone.negotiation = restarted  # the phone's loop drives it from the gateway's next datagram
    phone.keys, phone.keyed = None, trio.Event()
    with caplog.at_level(logging.INFO, logger="gateway.core.media.handshakes"):
        for datagram in restarted.packets_to_send(now=trio.current_time()):
            await phone.sock.sendto(datagram, phone.gateway)
        with trio.fail_after(10):
            await phone.keyed.wait()
        assert phone.failure is None and phone.keys is not None
        await eventually(lambda: a_leg_keys(env) == mirrored(phone.keys))  # type: ignore[arg-type]
    assert a_leg_keys(env) != first_keys
    said = [r.getMessage() for r in caplog.records if "re-keyed by the peer" in r.getMessage()]
    assert said == [
        "leg a stream 0 RTP port: re-keyed by the peer's new DTLS handshake from "
        f"127.0.0.1:{PHONE_PORT} (RFC 6347 §4.2.8; 1 time(s) in this call): new SRTP "
        "contexts both ways"
    ]
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    record = gateway_call.security_record()["a"]["streams"][0]
    assert record["dtls_rekeyed_by_peer"] == "1"
    assert record["peer_certificate_sha256"] == PHONE_ID.sha256_hex()
    await trio.sleep(DEFAULT_HANDSHAKE_TIMEOUT + 5)
    assert a_leg_keys(env) == mirrored(phone.keys)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_restart_with_another_certificate_on_a_kept_association_changes_nothing(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A new handshake from the caller's own address and port (someone on its path, who can
    return our cookie) with a certificate a=fingerprint does not name: its candidate fails the
    check (RFC 5763 §5; held for a re-offer naming it since session 45, none comes) and is
    dropped at its timeout, logged once; the leg keeps its keys and the call goes on (no BYE,
    no record change)."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, setup="active")
    phone = caller.phone
    with trio.fail_after(30):
        await phone.keyed.wait()
    await eventually(lambda: a_leg_keys(env) is not None)
    first_keys = a_leg_keys(env)
    attributes = [(a[0], a[1]) for a in caller.answer.attributes]  # ours: passive, our print
    forger = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        attributes, suites=[], secure_signalling=False
    )
    assert forger is not None and forger.dtls_role == "client"
    phone.negotiation = forger
    phone.keys, phone.keyed = None, trio.Event()
    with caplog.at_level(logging.WARNING):
        for datagram in forger.packets_to_send(now=trio.current_time()):
            await phone.sock.sendto(datagram, phone.gateway)
        await trio.sleep(DEFAULT_HANDSHAKE_TIMEOUT + 5)
    assert phone.keys is None and phone.failure is not None
    assert a_leg_keys(env) == first_keys
    warnings = [
        r.getMessage() for r in caplog.records if "established association" in r.getMessage()
    ]
    assert len(warnings) == 1 and "DTLS fingerprint mismatch" in warnings[0], warnings
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert "dtls_rekeyed_by_peer" not in gateway_call.security_record()["a"]["streams"][0]
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_restart_with_a_new_certificate_before_its_reinvite_is_keyed_by_it(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Session 45 (docs/media_security.md, "A new ClientHello on a kept association"): the
    caller regenerated its certificate (a browser's new RTCPeerConnection certificate, RFC
    8842 §5: a new association) and restarts its DTLS client on the same port before its
    re-INVITE with the new a=fingerprint reaches us. Its candidate presents a certificate the
    SDP in force does not name: held, not alerted; the re-INVITE names it, our answer keeps
    us its server (a=setup:passive, a new a=tls-id) and the held handshake completes as the
    leg's new association. Before, our alert ended the caller's handshake and the re-INVITE's
    association waited for a ClientHello the caller never sent again."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, setup="active")
    phone = caller.phone
    with trio.fail_after(30):
        await phone.keyed.wait()
    await eventually(lambda: a_leg_keys(env) is not None)
    first_keys = a_leg_keys(env)
    attributes = [(a[0], a[1]) for a in caller.answer.attributes]  # ours: passive, our print
    renewed = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        attributes, suites=[], secure_signalling=False
    )
    assert renewed is not None and renewed.dtls_role == "client"
    phone.negotiation = renewed
    phone.keys, phone.keyed = None, trio.Event()
    with caplog.at_level(logging.INFO):
        for datagram in renewed.packets_to_send(now=trio.current_time()):
            await phone.sock.sendto(datagram, phone.gateway)
        await eventually(
            lambda: any("held until a re-offer" in r.getMessage() for r in caplog.records)
        )
        assert phone.keys is None and phone.failure is None  # no alert came
        assert a_leg_keys(env) == first_keys
        reoffer = DtlsKeyExchange(identity=lambda: OTHER_ID).offer(
            suites=[], secure_signalling=False
        )
        ok = await caller.call.reinvite(dtls_sdp(reoffer, setup="actpass"))
        assert ok.status == 200
        media = parse_sdp_untrusted(ok.body).media[0]
        assert media.attributes.get("setup") == "passive"
        assert media.attributes.get("tls-id") != caller.answer.attributes.get("tls-id")
        assert media.attributes.get("fingerprint") == caller.answer.attributes.get("fingerprint")
        with trio.fail_after(10):
            await phone.keyed.wait()
    assert phone.failure is None and phone.keys is not None
    await eventually(lambda: a_leg_keys(env) == mirrored(phone.keys))  # type: ignore[arg-type]
    assert a_leg_keys(env) != first_keys
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    record = gateway_call.security_record()["a"]["streams"][0]
    assert record["peer_certificate_sha256"] == OTHER_ID.sha256_hex()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    await trio.sleep(DEFAULT_HANDSHAKE_TIMEOUT + 5)
    assert a_leg_keys(env) == mirrored(phone.keys)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_refused_reinvite_naming_the_new_certificate_leaves_the_call_as_it_was(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Session 46: the caller restarts with a new certificate (held), and its re-INVITE naming
    it is refused by the callee (488, RFC 3261 §14.1). The call goes back to the session it
    had: its keys stay, no BYE, and the held handshake fails at its timeout, said once
    (dtls-restart-failed) and counted. Before, the refused re-offer took the held handshake
    away with it: nothing was said or counted, and the restart vanished."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, setup="active")
    phone = caller.phone
    with trio.fail_after(30):
        await phone.keyed.wait()
    await eventually(lambda: a_leg_keys(env) is not None)
    first_keys = a_leg_keys(env)
    attributes = [(a[0], a[1]) for a in caller.answer.attributes]
    renewed = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        attributes, suites=[], secure_signalling=False
    )
    assert renewed is not None
    phone.negotiation = renewed
    phone.keys, phone.keyed = None, trio.Event()
    with caplog.at_level(logging.INFO):
        for datagram in renewed.packets_to_send(now=trio.current_time()):
            await phone.sock.sendto(datagram, phone.gateway)
        await eventually(
            lambda: any("held until a re-offer" in r.getMessage() for r in caplog.records)
        )

        async def refuse(received: Received) -> None:
            await env.alice.respond(received, 488)

        alice_answers_reinvites(env, refuse)
        reoffer = DtlsKeyExchange(identity=lambda: OTHER_ID).offer(
            suites=[], secure_signalling=False
        )
        refused = await caller.call.reinvite(dtls_sdp(reoffer, setup="actpass"))
        assert refused.status == 488
        await eventually(
            lambda: any("the re-offer naming it took it" in r.getMessage() for r in caplog.records),
            timeout=DEFAULT_HANDSHAKE_TIMEOUT + 10,
        )
    assert phone.keys is None and a_leg_keys(env) == first_keys
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "keys are kept" in warnings[0], warnings
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.security_record()["a"]["streams"][0]["peer_certificate_sha256"] != (
        OTHER_ID.sha256_hex()
    )
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_late_refused_reinvite_gives_the_held_handshake_no_more_time(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Session 50: the caller restarts with a new certificate (held), re-INVITEs naming it 17 s
    later, and the callee refuses that re-INVITE (488) only after the held handshake's own
    deadline (handshake_timeout from its first datagram) passed: while the re-offer waited
    its deadline moved (session 46), and the refusal puts it back, so it fails as the 488
    goes, saying the re-offer was refused. Before, the engine was never told of the refusal
    and the held handshake lived on for up to twice handshake_timeout."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, setup="active")
    phone = caller.phone
    with trio.fail_after(30):
        await phone.keyed.wait()
    await eventually(lambda: a_leg_keys(env) is not None)
    first_keys = a_leg_keys(env)
    attributes = [(a[0], a[1]) for a in caller.answer.attributes]
    renewed = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        attributes, suites=[], secure_signalling=False
    )
    assert renewed is not None
    phone.negotiation = renewed
    phone.keys, phone.keyed = None, trio.Event()
    failed_words = "the re-offer naming it took it, and was refused)"
    with caplog.at_level(logging.INFO):
        for datagram in renewed.packets_to_send(now=trio.current_time()):
            await phone.sock.sendto(datagram, phone.gateway)
        await eventually(
            lambda: any("held until a re-offer" in r.getMessage() for r in caplog.records)
        )
        held_at = trio.current_time()
        alive_when_refused: list[bool] = []

        async def refuse_late(received: Received) -> None:
            await trio.sleep_until(held_at + DEFAULT_HANDSHAKE_TIMEOUT + 3)
            alive_when_refused.append(
                not any(failed_words in r.getMessage() for r in caplog.records)
            )
            await env.alice.respond(received, 488)

        alice_answers_reinvites(env, refuse_late)
        await trio.sleep(DEFAULT_HANDSHAKE_TIMEOUT - 3)
        reoffer = DtlsKeyExchange(identity=lambda: OTHER_ID).offer(
            suites=[], secure_signalling=False
        )
        refused = await caller.call.reinvite(dtls_sdp(reoffer, setup="actpass"))
        assert refused.status == 488
        assert alive_when_refused == [True]  # past its own deadline while the re-offer waited
        await eventually(lambda: any(failed_words in r.getMessage() for r in caplog.records))
        assert trio.current_time() < held_at + DEFAULT_HANDSHAKE_TIMEOUT + 4
    assert phone.keys is None and a_leg_keys(env) == first_keys
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "keys are kept" in warnings[0], warnings
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_reinvite_naming_the_held_certificate_as_passive_is_refused_saying_why(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Session 46: the caller restarted with a new certificate (held: its ClientHello makes it
    the DTLS client), then re-INVITEs naming it with a=setup:passive, which would make us the
    client (RFC 5763 §5). Refused with 488 naming the conflict, the call goes on under the
    keys it had, no BYE, and the held handshake's failure says the re-offer was refused.
    Before, the re-offer's fresh association sent our ClientHello to a phone that never
    answered it, and the held handshake failed saying no re-offer naming it had come."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, setup="active")
    phone = caller.phone
    with trio.fail_after(30):
        await phone.keyed.wait()
    await eventually(lambda: a_leg_keys(env) is not None)
    first_keys = a_leg_keys(env)
    attributes = [(a[0], a[1]) for a in caller.answer.attributes]
    renewed = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        attributes, suites=[], secure_signalling=False
    )
    assert renewed is not None
    phone.negotiation = renewed
    phone.keys, phone.keyed = None, trio.Event()
    with caplog.at_level(logging.INFO):
        for datagram in renewed.packets_to_send(now=trio.current_time()):
            await phone.sock.sendto(datagram, phone.gateway)
        await eventually(
            lambda: any("held until a re-offer" in r.getMessage() for r in caplog.records)
        )
        reoffer = DtlsKeyExchange(identity=lambda: OTHER_ID).offer(
            suites=[], secure_signalling=False
        )
        refused = await caller.call.reinvite(dtls_sdp(reoffer, setup="passive"))
        assert refused.status == 488
        assert "a=setup:passive" in (refused.headers.get("Warning") or ""), refused.headers
        await eventually(
            lambda: any(
                "the re-offer naming it was refused" in r.getMessage() for r in caplog.records
            ),
            timeout=DEFAULT_HANDSHAKE_TIMEOUT + 10,
        )
    assert phone.keys is None and a_leg_keys(env) == first_keys
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "keys are kept" in r.getMessage()
    ]
    assert len(warnings) == 1 and "a=setup:passive" in warnings[0], warnings
    # Said when the 488 went too (session 48, dtls-restart-refused), once.
    refusals = [r.getMessage() for r in caplog.records if "was refused (488)" in r.getMessage()]
    assert len(refusals) == 1 and "a=setup:passive" in refusals[0], refusals
    assert not any("none came" in r.getMessage() for r in caplog.records)
    assert env.alice.requests("INVITE")[1:] == []  # the other leg was not asked
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_restart_with_a_new_certificate_without_rtcp_mux_takes_both_ports(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Session 46: a caller without rtcp-mux (RFC 5764 §4.1: a handshake per port) restarts
    both ports with a new certificate before its re-INVITE naming it: both are held, and the
    re-offer takes both, keying RTP and RTCP. Before, the RTCP port got a fresh handshake that
    waited for a ClientHello the caller had already sent, and the call ended with a BYE at
    handshake_timeout."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(
        suites=[], secure_signalling=False
    )
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=dtls_sdp(negotiation, setup="active", rtcp_mux=False)
    )
    final = await call.final()
    assert final.status == 200, final.reason
    answer = parse_sdp_untrusted(final.body)
    media = answer.media[0]
    assert not media.rtcp_mux
    negotiation.remote_sdp_attributes(pairs(answer, media))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    phone, rtcp_phone = await phones(nursery, negotiation, PHONE_PORT, media.port)
    with trio.fail_after(30):
        await phone.keyed.wait()
        await rtcp_phone.keyed.wait()
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    security = gateway_call.a.security
    await eventually(lambda: security.rtcp_keys(0) is not None and security.keys(0) is not None)
    first = (security.keys(0), security.rtcp_keys(0))
    renewed = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        [(a[0], a[1]) for a in media.attributes], suites=[], secure_signalling=False
    )
    assert renewed is not None and renewed.dtls_role == "client"
    renewed_rtcp = renewed.rtcp_component()
    assert renewed_rtcp is not None
    with caplog.at_level(logging.INFO):
        for engine, held in ((phone, renewed), (rtcp_phone, renewed_rtcp)):
            engine.negotiation = held
            engine.keys, engine.keyed = None, trio.Event()
            for datagram in held.packets_to_send(now=trio.current_time()):
                await engine.sock.sendto(datagram, engine.gateway)
        await eventually(
            lambda: (
                len([r for r in caplog.records if "held until a re-offer" in r.getMessage()]) == 2
            )
        )
        reoffer = DtlsKeyExchange(identity=lambda: OTHER_ID).offer(
            suites=[], secure_signalling=False
        )
        ok = await call.reinvite(dtls_sdp(reoffer, setup="actpass", rtcp_mux=False))
        assert ok.status == 200
        with trio.fail_after(10):
            await phone.keyed.wait()
            await rtcp_phone.keyed.wait()
    assert phone.keys is not None and rtcp_phone.keys is not None
    await eventually(lambda: security.keys(0) == mirrored(phone.keys))  # type: ignore[arg-type]
    await eventually(lambda: security.rtcp_keys(0) == mirrored(rtcp_phone.keys))  # type: ignore[arg-type]
    assert (security.keys(0), security.rtcp_keys(0)) != first
    await trio.sleep(DEFAULT_HANDSHAKE_TIMEOUT + 5)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


@attrs.define
class LateReinvite:
    """A call from a caller without rtcp-mux (RFC 5764 §4.1: a DTLS handshake per port), keyed
    on both ports, with the caller's renewed certificate ready for both ports, and a
    re-INVITE naming it (:meth:`reinvite`) that alice answers only once :attr:`answer_now`
    is set."""

    env: B2bua
    call: Call
    media: MediaDescription
    offer_b: SessionDescription
    phone: Phone
    rtcp_phone: Phone
    gateway_call: Any
    security: Any
    renewed: DtlsNegotiation
    renewed_rtcp: DtlsNegotiation
    reinvite_came: trio.Event = attrs.Factory(trio.Event)
    answer_now: trio.Event = attrs.Factory(trio.Event)
    statuses: list[int] = attrs.Factory(list)

    async def answer_late(self, received: Received) -> None:
        self.reinvite_came.set()
        await self.answer_now.wait()
        alice = self.env.alice
        await alice.respond(received, 200, body=alice.answer_sdp(received.request.body))

    async def reinvite(self) -> None:
        reoffer = DtlsKeyExchange(identity=lambda: OTHER_ID).offer(
            suites=[], secure_signalling=False
        )
        response = await self.call.reinvite(dtls_sdp(reoffer, setup="actpass", rtcp_mux=False))
        self.statuses.append(response.status)

    async def restart_rtp_port(self) -> None:
        """The caller's RTP port restarts with the renewed certificate (held: no re-offer
        names it yet)."""
        phone = self.phone
        phone.negotiation, phone.keys, phone.keyed = self.renewed, None, trio.Event()
        for datagram in self.renewed.packets_to_send(now=trio.current_time()):
            await phone.sock.sendto(datagram, phone.gateway)

    async def answered_and_keyed(self) -> None:
        """Let alice answer the re-INVITE; both ports keyed by the renewed certificate."""
        self.answer_now.set()
        await eventually(lambda: self.statuses == [200])
        with trio.fail_after(10):
            await self.phone.keyed.wait()
            await self.rtcp_phone.keyed.wait()


async def late_reinvite(
    nursery: trio.Nursery, tmp_path: Path, seed: int, **env_kwargs: object
) -> LateReinvite:
    env = await with_dtls(nursery, tmp_path, seed, **env_kwargs)
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(
        suites=[], secure_signalling=False
    )
    call = await env.trunk.invite(
        env.did_uri(ALICE_DID), sdp=dtls_sdp(negotiation, setup="active", rtcp_mux=False)
    )
    final = await call.final()
    assert final.status == 200, final.reason
    answer = parse_sdp_untrusted(final.body)
    media = answer.media[0]
    assert not media.rtcp_mux
    negotiation.remote_sdp_attributes(pairs(answer, media))
    leg_b = await env.alice.next_call()
    assert leg_b.incoming is not None
    offer_b = parse_sdp_untrusted(leg_b.incoming.request.body)
    phone, rtcp_phone = await phones(nursery, negotiation, PHONE_PORT, media.port)
    with trio.fail_after(30):
        await phone.keyed.wait()
        await rtcp_phone.keyed.wait()
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    security = gateway_call.a.security
    assert security is not None
    await eventually(lambda: security.rtcp_keys(0) is not None)
    renewed = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        [(a[0], a[1]) for a in media.attributes], suites=[], secure_signalling=False
    )
    assert renewed is not None and renewed.dtls_role == "client"
    renewed_rtcp = renewed.rtcp_component()
    assert renewed_rtcp is not None
    late = LateReinvite(
        env, call, media, offer_b, phone, rtcp_phone, gateway_call, security, renewed, renewed_rtcp
    )
    alice_answers_reinvites(env, late.answer_late)
    return late


async def assert_restarts_taken_and_the_call_goes_on(
    env: B2bua, caplog: pytest.LogCaptureFixture, restarts: int
) -> None:
    """``restarts`` held and adopted, none failed; the call outlives the handshake timeout
    with no BYE and no WARNING."""
    (dtls,) = [e for n, e in env.gateway.plugins.key_exchanges.items() if n == "dtls"]
    counters = dict(dtls.counters())
    assert (counters["peer_restarts_held"], counters["peer_restarts_adopted"]) == (
        restarts,
        restarts,
    )
    assert counters["peer_restarts_failed"] == 0
    await trio.sleep(DEFAULT_HANDSHAKE_TIMEOUT + 5)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_an_rtcp_restart_arriving_while_the_reinvite_waits_is_taken_and_keys_srtcp(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Session 50: a caller without rtcp-mux (RFC 5764 §4.1: a handshake per port) restarts
    its RTP port with a new certificate (held), re-INVITEs naming it, and restarts its RTCP
    port only while that re-INVITE waits for the callee's answer (late). Once the callee
    answers, the re-offer's new association keys both ports with the new certificate, the
    call goes on, and SRTCP flows both ways under the RTCP port's new keys, the old ones
    refused. Through the call's handshake task the late RTCP restart is not held where the
    session in force is: its datagrams are kept for the re-offer's new association and begin
    its RTCP port's handshake (the engine's late take, session 46, is tested sans-IO in
    test_dtls_restart.py)."""
    alice_port = PHONE_PORT + 8  # alice's RTP; her RTCP on + 1 (RFC 3605 default)
    late = await late_reinvite(nursery, tmp_path, voipgw_seed, alice_media_port=alice_port)
    phone, rtcp_phone, security = late.phone, late.rtcp_phone, late.security
    old_rtcp_keys = rtcp_phone.keys
    assert old_rtcp_keys is not None and security.rtcp_keys(0) == mirrored(old_rtcp_keys)

    def held_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "held until a re-offer" in r.getMessage()]

    with caplog.at_level(logging.INFO):
        await late.restart_rtp_port()
        await eventually(lambda: len(held_lines()) == 1)  # the RTP port's restart
        nursery.start_soon(late.reinvite)
        with trio.fail_after(10):
            await late.reinvite_came.wait()
        # Late: the RTCP port restarts while the re-INVITE waits for the callee.
        rtcp_phone.negotiation, rtcp_phone.keys = late.renewed_rtcp, None
        rtcp_phone.keyed = trio.Event()
        for datagram in late.renewed_rtcp.packets_to_send(now=trio.current_time()):
            await rtcp_phone.sock.sendto(datagram, rtcp_phone.gateway)
        # Virtual time (autojump): its flights go back and forth on their retransmission
        # timers while the answer is still pending.
        await trio.sleep(3)
        assert late.statuses == [] and rtcp_phone.failure is None
        await late.answered_and_keyed()
    new_rtcp_keys = rtcp_phone.keys
    assert phone.keys is not None and new_rtcp_keys is not None
    assert phone.failure is None and rtcp_phone.failure is None
    await eventually(lambda: security.keys(0) == mirrored(phone.keys))  # type: ignore[arg-type]
    await eventually(lambda: security.rtcp_keys(0) == mirrored(new_rtcp_keys))
    assert new_rtcp_keys != old_rtcp_keys

    # SRTCP both ways under the RTCP port's new keys (RFC 5764 §4.1): the caller's sender
    # report reaches alice's RTCP port in the clear; hers reaches the caller, which only the
    # new keys open; one under the old keys is dropped.
    (stream,) = late.gateway_call.media.streams
    gateway_rtcp_b = late.offer_b.media[0].port + 1
    alice_rtcp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await alice_rtcp.bind(("127.0.0.3", alice_port + 1))
    with alice_rtcp:
        caller_srtcp = SrtpSession(new_rtcp_keys)
        old_srtcp = SrtpSession(old_rtcp_keys)
        report = sender_report(0x1111, 5)
        dropped = stream.a_to_b.statistics().dropped_transform
        stale = old_srtcp.protect_rtcp(sender_report(0x1111, 4))
        protected = caller_srtcp.protect_rtcp(report)
        assert stale is not None and protected is not None
        await rtcp_phone.sock.sendto(stale, rtcp_phone.gateway)
        await rtcp_phone.sock.sendto(protected, rtcp_phone.gateway)
        with trio.fail_after(5):
            data, _ = await alice_rtcp.recvfrom(2048)
        assert data == report
        await eventually(lambda: stream.a_to_b.statistics().dropped_transform == dropped + 1)
        alice_report = sender_report(0x2222, 7)
        await alice_rtcp.sendto(alice_report, ("127.0.0.1", gateway_rtcp_b))
        await eventually(lambda: bool(rtcp_phone.media))
        (srtcp,) = rtcp_phone.media
        assert srtcp != alice_report
        assert SrtpSession(new_rtcp_keys).unprotect_rtcp(srtcp) == alice_report
        assert old_srtcp.unprotect_rtcp(srtcp) is None
    # Only the RTP port's restart was held (and taken): the RTCP port's late one was kept by
    # the call's handshake task for the re-offer's new association (epoch 0 records while
    # our answer is pending, handshakes.py) and began its RTCP port's handshake there.
    assert len(held_lines()) == 1
    await assert_restarts_taken_and_the_call_goes_on(late.env, caplog, restarts=1)


@attrs.define
class HeldBack:
    """A phone's DTLS engine whose datagrams after its first ``passed`` ClientHellos are kept
    back until :attr:`release` (a flight the network delays)."""

    negotiation: DtlsNegotiation
    passed: int = 2
    release: bool = False
    kept: list[bytes] = attrs.Factory(list)

    def packets_to_send(self, *, now: float) -> list[bytes]:
        out = []
        for datagram in self.negotiation.packets_to_send(now=now):
            if self.passed and is_client_hello(datagram):
                self.passed -= 1
                out.append(datagram)
            else:
                self.kept.append(datagram)
        if self.release:
            out, self.kept = out + self.kept, []
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.negotiation, name)


async def test_an_rtcp_restart_begun_before_the_reinvite_and_finished_after_it_is_taken(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Session 50: a caller without rtcp-mux restarts both ports with a new certificate and
    re-INVITEs naming it at once. The RTP port's Certificate reached us before the re-INVITE
    (held), the RTCP port's restart had only begun (its ClientHello returned our cookie and got
    our server flight): the rest of that flight comes while the re-INVITE waits for the
    callee, and the call's handshake task keeps it for the re-offer's new association. Handed
    to the new RTCP port's negotiation after our answer, it goes on to the restart under way
    at the previous one, is held there, and is taken: both ports keyed by the new certificate,
    the call goes on. Before, the new RTCP port's fresh handshake waited for a ClientHello the
    caller had sent to the other, and the call ended at handshake_timeout ("DTLS handshake
    timed out (RTCP port)", BYE on both legs)."""
    late = await late_reinvite(nursery, tmp_path, voipgw_seed)
    phone, rtcp_phone, security = late.phone, late.rtcp_phone, late.security
    first_rtcp_keys = security.rtcp_keys(0)
    with caplog.at_level(logging.INFO):
        await late.restart_rtp_port()
        # The RTCP port's ClientHellos (the first, the one returning our cookie) go; the
        # rest of its flight (Certificate ... Finished) waits until the re-INVITE is in.
        held = HeldBack(late.renewed_rtcp)
        rtcp_phone.negotiation = held  # type: ignore[assignment]
        rtcp_phone.keys, rtcp_phone.keyed = None, trio.Event()
        for datagram in held.packets_to_send(now=trio.current_time()):
            await rtcp_phone.sock.sendto(datagram, rtcp_phone.gateway)
        await eventually(lambda: bool(held.kept))
        nursery.start_soon(late.reinvite)
        with trio.fail_after(10):
            await late.reinvite_came.wait()
        held.release = True  # at its next retransmission, while the re-INVITE waits
        # Virtual time (autojump): that retransmission timer fires while the answer is
        # still pending.
        await trio.sleep(3)
        assert late.statuses == []
        await late.answered_and_keyed()
    assert phone.keys is not None and rtcp_phone.keys is not None
    assert phone.failure is None and rtcp_phone.failure is None
    await eventually(lambda: security.keys(0) == mirrored(phone.keys))  # type: ignore[arg-type]
    await eventually(lambda: security.rtcp_keys(0) == mirrored(rtcp_phone.keys))  # type: ignore[arg-type]
    assert security.rtcp_keys(0) != first_rtcp_keys
    await assert_restarts_taken_and_the_call_goes_on(late.env, caplog, restarts=2)


async def test_a_reinvite_refused_by_the_other_leg_keeps_the_restart_under_way(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
) -> None:
    """Session 45: the caller restarts its DTLS client (RFC 6347 §4.2.8) and, while its new
    handshake is under way, re-INVITEs keeping the association (a session refresh); the
    callee refuses the relayed re-INVITE (488), so the call goes back to the session it had
    (RFC 3261 §14.1), and the caller's next flight must still reach the candidate. Session 44
    moved the candidate to the re-offer's negotiation, which the refusal dropped: the
    caller's handshake then went unanswered until it gave up."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, setup="active")
    phone = caller.phone
    with trio.fail_after(30):
        await phone.keyed.wait()
    await eventually(lambda: a_leg_keys(env) is not None)
    first_keys = a_leg_keys(env)
    attributes = [(a[0], a[1]) for a in caller.answer.attributes]
    restarted = DtlsKeyExchange(identity=lambda: PHONE_ID).answer(
        attributes, suites=[], secure_signalling=False
    )
    assert restarted is not None
    # The re-INVITE keeps the association: the tls-id and fingerprint of the one in force.
    kept = caller.exchange.offer(suites=[], secure_signalling=False, previous=phone.negotiation)
    held = HeldBack(restarted)
    phone.negotiation = held  # type: ignore[assignment]
    phone.keys, phone.keyed = None, trio.Event()
    for datagram in held.packets_to_send(now=trio.current_time()):
        await phone.sock.sendto(datagram, phone.gateway)
    await eventually(lambda: bool(held.kept))  # the candidate answered; its flight 5 waits

    async def refuse(received: Received) -> None:
        await env.alice.respond(received, 488)

    alice_answers_reinvites(env, refuse)
    refused = await caller.call.reinvite(dtls_sdp(kept, setup="active"))
    assert refused.status == 488
    held.release = True
    with trio.fail_after(10):
        await phone.keyed.wait()
    assert phone.failure is None and phone.keys is not None
    await eventually(lambda: a_leg_keys(env) == mirrored(phone.keys))  # type: ignore[arg-type]
    assert a_leg_keys(env) != first_keys
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_call_whose_handshake_task_cannot_start_ends_saying_why(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The handshake task cannot start (``start_child`` False: the call's task is not in its
    states, as at its end): nothing would ever key the DTLS caller's leg, nor time its
    handshake out, so the call ends as for a failed handshake: 488 to the caller with why
    (before the answer), the callee cancelled or sent BYE; it was answered 200 and stayed up
    without media for ever."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    manager = env.gateway.calls
    assert manager is not None
    start_child = manager.start_child

    def no_handshakes(owner: object, async_fn: Any, *args: object) -> bool:
        if getattr(async_fn, "__qualname__", "") == "CallHandshakes.run":
            return False
        return start_child(owner, async_fn, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(manager, "start_child", no_handshakes)
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(
        suites=[], secure_signalling=False
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=dtls_sdp(negotiation))
    final = await call.final()
    assert final.status == 488
    warning = final.headers.get("Warning") or ""
    assert "media-path key exchange (DTLS-SRTP, ZRTP) could not start" in warning, warning
    await eventually(lambda: env.calls == 0)


# A fatal handshake_failure alert in clear (RFC 6347 §4.1: type 21, DTLS 1.2, epoch 0, seq 0,
# length 2; RFC 5246 §7.2: level 2, description 40): anyone can send it.
PLAINTEXT_ALERT = bytes([21, 0xFE, 0xFD, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 2, 40])


async def test_a_strangers_plaintext_alert_before_keys_is_ignored_and_the_caller_is_keyed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """docs/media_security.md, "Forged handshakes": the caller's SDP gave its address; a
    stranger's fatal alert of epoch 0 (nothing authenticates it, RFC 6347 §4.1.2.7) reaches
    the caller leg's port before the caller's first packet: the relay drops it (counted
    ``unlatched_source``, latching nothing), our handshake goes on and the caller is keyed."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, run_phone=False)
    gateway_port = ("127.0.0.1", caller.answer.port)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    with closed_on_failure(caller.phone), await bind(PHONE_PORT + 4) as stranger:
        await stranger.sendto(PLAINTEXT_ALERT, gateway_port)
        await eventually(lambda: stream.a_to_b.statistics().dropped_unlatched_source >= 1)
        assert stream.a.rtp_source is None
        nursery.start_soon(caller.phone.run)
        with trio.fail_after(30):
            await caller.phone.keyed.wait()
    assert caller.phone.failure is None and caller.phone.keys is not None
    await eventually(lambda: a_leg_keys(env) is not None)
    assert a_leg_keys(env) == mirrored(caller.phone.keys)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == []


async def test_a_handshake_task_that_cannot_start_is_tried_and_said_once(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Once the handshake task could not start (``start_child`` False: the call is ending),
    the call's later SDP changes (the caller's offer applied, our INVITE to the callee, the
    callee's answer) do not try it again: one try, one line, one 488. Each tried and logged
    "key exchange on leg a failed" again, and queued one more end of the call each."""
    caplog.set_level(logging.INFO, logger="gateway.core.calls.call")
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    manager = env.gateway.calls
    assert manager is not None
    start_child = manager.start_child
    tried: list[str] = []

    def no_handshakes(owner: object, async_fn: Any, *args: object) -> bool:
        if getattr(async_fn, "__qualname__", "") == "CallHandshakes.run":
            tried.append("handshakes")
            return False
        return start_child(owner, async_fn, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(manager, "start_child", no_handshakes)
    negotiation = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(
        suites=[], secure_signalling=False
    )
    call = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=dtls_sdp(negotiation))
    assert (await call.final()).status == 488
    await eventually(lambda: env.calls == 0)
    assert tried == ["handshakes"]
    said = [r for r in caplog.records if "key exchange on leg a failed" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]


async def test_a_caller_behind_a_nat_is_keyed_when_a_strangers_client_hello_came_first(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """docs/media_security.md, "Forged handshakes": the caller offers a=setup:active (we are
    the DTLS server) and is behind a NAT: it sends from another address than its SDP gave,
    so it cannot take the port over as the SDP address does. A stranger's ClientHello reached
    the port first and latched it (not connected). The caller's ClientHello gets a handshake
    of its own; its certificate matches its a=fingerprint (RFC 5763 §5), which gives it the
    latch, and its keys are the leg's. Before, its datagrams were dropped (counted
    ``unlatched_source``) and the call ended at the handshake timeout."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, run_phone=False, setup="active")
    caller.phone.sock.close()
    gateway_port = ("127.0.0.1", caller.answer.port)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    natted = await bind(PHONE_PORT + 6)
    phone = Phone(caller.phone.negotiation, natted, gateway_port)
    with await strangers_client_hello(gateway_port) as stranger:
        try:
            with trio.fail_after(5):
                await stranger.recvfrom(2048)  # our HelloVerifyRequest, to the stranger
            assert stream.a.rtp_source == ("127.0.0.1", PHONE_PORT + 4)
            nursery.start_soon(phone.run)
        except BaseException:
            natted.close()
            raise
        with trio.fail_after(10):
            await phone.keyed.wait()
        assert phone.failure is None and phone.keys is not None
        await eventually(lambda: a_leg_keys(env) is not None)
        assert a_leg_keys(env) == mirrored(phone.keys)
        assert stream.a.rtp_source == ("127.0.0.1", PHONE_PORT + 6)
        await stranger.sendto(b"\x16\xfe\xfd" + bytes(20), gateway_port)
        await eventually(lambda: stream.a_to_b.statistics().dropped_unlatched_source >= 1)
        assert stream.a._rtp.connected  # keyed: the kernel refuses the stranger from now on
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_strangers_whole_handshake_with_its_own_certificate_ends_nothing(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """As above, and the stranger completes its handshake with a certificate of its own before
    the caller (behind a NAT) speaks: it fails the fingerprint check, which ends that source's
    handshake only (before, the one association failed and the call ended, "DTLS fingerprint
    mismatch"); its later ClientHellos are dropped, and the caller is keyed."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, run_phone=False, setup="active")
    caller.phone.sock.close()
    gateway_port = ("127.0.0.1", caller.answer.port)
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    forged = DtlsKeyExchange(identity=lambda: OTHER_ID).offer(suites=[], secure_signalling=False)
    client = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        forged.local_sdp_attributes(), suites=[], secure_signalling=False
    )
    assert client is not None
    natted = await bind(PHONE_PORT + 6)
    phone = Phone(caller.phone.negotiation, natted, gateway_port)
    with await bind(PHONE_PORT + 4) as stranger_sock:
        try:
            stranger = Phone(client, stranger_sock, gateway_port)
            nursery.start_soon(stranger._loop)
            with trio.fail_after(30):
                await eventually(lambda: stranger.failure is not None or stranger.keys is not None)
            # It finished its side; our check of its certificate failed it (our alert).
            await trio.sleep(1)
            assert env.trunk.requests("BYE") == []
            nursery.start_soon(phone.run)
        except BaseException:
            natted.close()
            raise
        with trio.fail_after(10):
            await phone.keyed.wait()
    assert phone.failure is None and phone.keys is not None
    await eventually(lambda: a_leg_keys(env) is not None)
    assert a_leg_keys(env) == mirrored(phone.keys)
    assert stream.a.rtp_source == ("127.0.0.1", PHONE_PORT + 6)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_caller_behind_a_nat_is_keyed_through_a_flood_of_spoofed_client_hellos(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """docs/media_security.md, "Cookies for other sources" (session 41): the caller offers
    a=setup:active (we are the DTLS server) and is behind a NAT. ClientHellos from ever new
    sources that never return our cookie (as from spoofed addresses: here sockets closed at
    once) reach its port 50 times a second, before and while it handshakes. Each gets a
    60-octet HelloVerifyRequest and nothing else; the caller returns its cookie and is keyed.
    Before, each new source took a handshake (a signature) from the port's bucket (8, then
    one a second), and the caller's ClientHellos found it empty: the call ended at the
    handshake timeout."""
    env = await with_dtls(nursery, tmp_path, voipgw_seed)
    caller = await dtls_caller(nursery, env, run_phone=False, setup="active")
    caller.phone.sock.close()
    gateway_port = ("127.0.0.1", caller.answer.port)
    forged = DtlsKeyExchange(identity=lambda: OTHER_ID).offer(suites=[], secure_signalling=False)
    client = DtlsKeyExchange(identity=lambda: OTHER_ID).answer(
        forged.local_sdp_attributes(), suites=[], secure_signalling=False
    )
    assert client is not None
    (hello,) = client.packets_to_send(now=trio.current_time())
    flooding = trio.Event()
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while not flooding.is_set():
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spoofed:
                await spoofed.bind(("127.0.0.1", 0))
                await spoofed.sendto(hello, gateway_port)
            sent += 1
            await trio.sleep(0.02)

    nursery.start_soon(flood)
    await trio.sleep(2)  # the bucket is long empty
    natted = await bind(PHONE_PORT + 6)
    phone = Phone(caller.phone.negotiation, natted, gateway_port)
    nursery.start_soon(phone.run)
    try:
        with trio.fail_after(10):
            await phone.keyed.wait()
    finally:
        flooding.set()
    assert phone.failure is None and phone.keys is not None
    await eventually(lambda: a_leg_keys(env) is not None)
    assert a_leg_keys(env) == mirrored(phone.keys)
    assert sent >= 100
    (dtls,) = [e for n, e in env.gateway.plugins.key_exchanges.items() if n == "dtls"]
    counted = dict(dtls.counters())
    assert counted["hello_verify_requests"] >= sent  # the flood's, and the caller's first
    assert counted["rate_limited"] == 0
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []
