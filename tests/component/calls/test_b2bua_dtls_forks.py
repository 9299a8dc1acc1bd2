"""DTLS-SRTP when a call forks (RFC 3261 §16.7, parallel forking to an account's two phones):
signalling on the in-memory network, handshakes on real 127.0.0.1 sockets between the gateway's
relay and in-process phones, in virtual time (docs/media_security.md, "Forked callees").

Both phones answer our offer ``a=setup:active`` (RFC 5763 §5) and start both ports' handshakes
as they ring, before either answers; they share the gateway's B sockets. Whichever answers, its
ClientHellos sent while both rang reach its handshake: no retransmission is needed, and the
other fork's never reach it (its certificate would fail the fingerprint check and end the call).
"""

from __future__ import annotations

import functools
import struct
from pathlib import Path

import pytest
import trio

import gateway.plugins.keyexchange.dtls_srtp as dtls_plugin
from gateway.core.calls.call import Call as GatewayCall
from gateway.core.media.security import LegSecurity
from gateway.core.media.srtp import SrtpSession
from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.plugins.keyexchange.dtls_certificates import DtlsIdentity
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange
from gateway.testing.sip_agent import Call
from tests.component.calls.b2bua_env import ALICE_DID, B2bua, eventually, start_b2bua
from tests.component.calls.b2bua_scenarios import second_phone
from tests.component.calls.dtls_pairs import pairs
from tests.component.calls.dtls_phone import (
    OTHER_ID,
    PHONE_ID,
    PHONE_PORT,
    Phone,
    bind,
    dtls_sdp,
    mirrored,
    wrong_fingerprint,
)


async def two_ringing_forks(
    nursery: trio.Nursery, tmp_path: Path, seed: int
) -> tuple[B2bua, Call, list[Call]]:
    env = await start_b2bua(
        nursery, tmp_path, seed, plugins=[("dtls", dtls_plugin)], alice_auto=None
    )
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="dtls")
    alice2 = await second_phone(env, nursery, seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    forks = [await env.alice.next_call(), await alice2.next_call()]
    for fork in forks:
        await fork.ring()
    return env, call, forks


async def start_phones(
    nursery: trio.Nursery, fork: Call, port: int, identity: DtlsIdentity = PHONE_ID
) -> tuple[Phone, Phone, bytes]:
    """Fork ``fork``'s phone (the DTLS client, no rtcp-mux) on ``port`` and ``port`` + 1, its
    handshakes begun towards the gateway's B ports; and the answer it will send. The phone's
    certificate is ``identity``'s."""
    offer = parse_sdp_untrusted(fork.invite.body)
    offered = offer.media[0]
    assert not offered.rtcp_mux
    negotiation = DtlsKeyExchange(identity=lambda: identity).answer(
        pairs(offer, offered), suites=[], secure_signalling=False
    )
    assert negotiation is not None and negotiation.dtls_role == "client"
    rtcp = negotiation.rtcp_component()
    assert rtcp is not None
    phone = Phone(negotiation, await bind(port), ("127.0.0.1", offered.port))
    rtcp_phone = Phone(rtcp, await bind(port + 1), ("127.0.0.1", offered.port + 1))
    nursery.start_soon(phone.run)
    nursery.start_soon(rtcp_phone.run)
    await eventually(lambda: rtcp_phone.negotiation.statistics().datagrams_sent >= 1)  # type: ignore[attr-defined]
    await trio.sleep(0.2)  # its ClientHellos reached the gateway
    return phone, rtcp_phone, dtls_sdp(negotiation, port=port, rtcp_mux=False)


async def forked_by_a_proxy(
    nursery: trio.Nursery, tmp_path: Path, seed: int
) -> tuple[B2bua, Call, Call]:
    """The trunk calls alice, whose policy is dtls: one B leg, which a proxy downstream forks
    (the test answers it under two To tags, RFC 3261 §12.1.2). The env, the trunk's call and
    the B leg at alice's agent."""
    env = await start_b2bua(
        nursery, tmp_path, seed, plugins=[("dtls", dtls_plugin)], alice_auto=None
    )
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="dtls")
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    return env, call, await env.alice.next_call()


async def early_phone_keyed(
    env: B2bua, leg_b: Call, early: Phone, early_rtcp: Phone, early_answer: bytes
) -> tuple[GatewayCall, LegSecurity]:
    """The early phone's 183 (another To tag, RFC 3261 §12.1.2) answering with ``early_answer``
    taken, its handshakes done on both ports, and the B leg keyed by them: the gateway's call
    and the B leg's security."""
    leg_b.local_tag = "fork-2"  # the early phone's dialog
    await env.alice.respond(leg_b.incoming, 183, body=early_answer)  # type: ignore[arg-type]
    with trio.fail_after(30):
        await early.keyed.wait()
        await early_rtcp.keyed.wait()
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    security = gateway_call.b_legs[0].security
    assert security is not None and early.keys is not None
    keys = mirrored(early.keys)
    await eventually(lambda: security.keys(0) == keys)
    return gateway_call, security


async def keyed_within_its_first_resend(
    security: LegSecurity, phone: Phone, rtcp_phone: Phone, *, within: float = 1.5
) -> None:
    """The phone that answered after another's early answer is keyed, both ports, by its
    first resend (1 s, RFC 6347 §4.2.4.1) at the latest, ``within`` seconds, and the leg
    holds its keys."""
    with trio.fail_after(within):
        await phone.keyed.wait()
        await rtcp_phone.keyed.wait()
    assert phone.failure is None and rtcp_phone.failure is None
    assert phone.keys is not None and rtcp_phone.keys is not None
    await eventually(lambda: security.rtcp_keys(0) is not None)
    assert security.keys(0) == mirrored(phone.keys)
    assert security.rtcp_keys(0) == mirrored(rtcp_phone.keys)


async def keyed_by_the_client_hellos_of_its_200(
    security: LegSecurity, phone: Phone, rtcp_phone: Phone
) -> None:
    """The phone that answered after another's early answer is keyed, both ports, by the
    ClientHellos it sent before its 200 reached us (the early phone's negotiation kept them
    for another phone's answer, session 52): well within its first resend (1 s, RFC 6347
    §4.2.4.1), none needed. Before, it was keyed at that resend."""
    await keyed_within_its_first_resend(security, phone, rtcp_phone, within=0.5)
    for engine in (phone.negotiation, rtcp_phone.negotiation):
        assert engine.statistics().retransmissions == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("answering", [0, 1], ids=["first-to-send-answers", "second-answers"])
async def test_the_answering_forks_early_client_hellos_key_it_whichever_fork_it_is(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    answering: int,
) -> None:
    env, call, forks = await two_ringing_forks(nursery, tmp_path, voipgw_seed)
    offers = [parse_sdp_untrusted(fork.invite.body) for fork in forks]
    # Our one offer's media address went to both: the forks share the gateway's B sockets.
    assert offers[0].media[0].port == offers[1].media[0].port
    started = [
        await start_phones(nursery, forks[0], PHONE_PORT),
        await start_phones(nursery, forks[1], PHONE_PORT + 2),
    ]
    phone, rtcp_phone, answer = started[answering]
    await forks[answering].answer(200, sdp=answer)
    assert (await call.final()).status == 200

    with trio.fail_after(30):
        await phone.keyed.wait()
        await rtcp_phone.keyed.wait()
    assert phone.failure is None and rtcp_phone.failure is None
    # The ClientHellos it sent while both rang were its handshake's start: none was lost
    # (before: the second fork's were refused by the socket the first one's latched, and
    # neither fork's was kept while both rang; the answering fork waited for its resend, 1 s
    # or, after a long ringing, many).
    for engine in (phone.negotiation, rtcp_phone.negotiation):
        assert engine.statistics().retransmissions == 0  # type: ignore[attr-defined]
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    security = gateway_call.b.security if gateway_call.b is not None else None
    assert security is not None
    await eventually(lambda: security.rtcp_keys(0) is not None)
    assert security.keys(0) is not None
    # The other fork's datagrams were a fork's media (blocked), never malformed nor fed.
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    assert stream.b_to_a.statistics().dropped_malformed == 0
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_a_fork_answering_after_another_forks_early_answer_is_keyed_by_its_early_hellos(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
) -> None:
    """The first fork's 183 carries its answer (early media), then the second fork answers
    with its 200 (RFC 3261 §12.1.2: each fork's 1xx makes an early dialog of its own). The
    second fork's ClientHellos, sent as it rang, before the 183, start its handshake: they
    are kept until the final answer decides, not dropped at the early one (its handshake
    waited for its resend then: 1 s, doubling, tens of seconds after a long ringing)."""
    env, call, forks = await two_ringing_forks(nursery, tmp_path, voipgw_seed)
    early = await start_phones(nursery, forks[0], PHONE_PORT)
    phone, rtcp_phone, answer = await start_phones(nursery, forks[1], PHONE_PORT + 2)
    await forks[0].agent.respond(forks[0].incoming, 183, body=early[2])  # type: ignore[arg-type]
    await trio.sleep(0.05)  # the gateway took the early answer (its handshake began)
    await forks[1].answer(200, sdp=answer)
    assert (await call.final()).status == 200

    with trio.fail_after(30):
        await phone.keyed.wait()
        await rtcp_phone.keyed.wait()
    assert phone.failure is None and rtcp_phone.failure is None
    for engine in (phone.negotiation, rtcp_phone.negotiation):
        assert engine.statistics().retransmissions == 0  # type: ignore[attr-defined]
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.b is not None and gateway_call.b.security is not None
    security = gateway_call.b.security
    await eventually(lambda: security.rtcp_keys(0) is not None)
    assert security.keys(0) is not None
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


@pytest.mark.parametrize("answering", [0, 1], ids=["first-to-send-answers", "second-answers"])
async def test_a_fork_behind_a_nat_that_answers_is_keyed_by_its_resends(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    answering: int,
) -> None:
    """The answering fork's SDP gives another port than it sends from (a NAT): which source
    was which fork is not known, so its ClientHellos sent while both rang are not fed, and its
    handshake begins at its resend (RFC 6347 §4.2.4.1). That resend must reach its handshake:
    it was dropped as a losing fork's (every resend), the handshake timed out and the call
    ended. Also when it was the first to send, which latched B's sockets while both rang: it
    was kept out 3 s from the answer as a losing fork (PREVIOUS_SOURCE_QUARANTINE), its resends
    at 1 s and 3 s refused, and keyed only by the third (6.5 s after the answer)."""
    env, call, forks = await two_ringing_forks(nursery, tmp_path, voipgw_seed)
    started = [
        await start_phones(nursery, forks[0], PHONE_PORT),
        await start_phones(nursery, forks[1], PHONE_PORT + 2),
    ]
    phone, rtcp_phone, answer = started[answering]
    port = PHONE_PORT + 2 * answering
    # m= (RTCP implied at its port + 1, RFC 3605 §2.1): neither is where the phone sends from.
    natted = answer.replace(f"m=audio {port} ".encode(), b"m=audio 40000 ")
    assert natted != answer
    async with trio.open_nursery() as answering_nursery:
        answering_nursery.start_soon(functools.partial(forks[answering].answer, 200, sdp=natted))
        await trio.sleep(0.01)
        for loser in started[1 - answering][:2]:
            loser.negotiation = Silent()  # our CANCEL reached it: no more resends
    assert (await call.final()).status == 200

    with trio.fail_after(30):
        await phone.keyed.wait()
        await rtcp_phone.keyed.wait()
    assert phone.failure is None and rtcp_phone.failure is None
    for engine in (phone.negotiation, rtcp_phone.negotiation):
        assert engine.statistics().retransmissions == 1  # type: ignore[attr-defined]
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


class Silent:
    """A losing fork's phone once our CANCEL reached it: its handshake sends nothing more."""

    def packets_to_send(self, *, now: float) -> list[bytes]:
        return []

    def next_event(self) -> None:
        return None

    def get_timer(self) -> None:
        return None

    def handle_timer(self, *, now: float) -> None:
        pass

    def claims_packet(self, first_byte: int, packet: bytes) -> bool:
        return False


async def test_a_lone_callee_behind_a_nat_is_keyed_by_the_client_hello_it_sent_ringing(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
) -> None:
    """One phone rings (no fork), begins its handshakes as it rings and answers from behind a
    NAT: its SDP's port is not where it sends from. B's sockets cannot tell one callee from
    several forks before the answer, and kept the phone that latched them while it rang out
    for 3 s from the answer as a losing fork (PREVIOUS_SOURCE_QUARANTINE): its resends at
    1 s and 3 s were refused and its keys came with the third, 7 s after the answer. No sender
    was at the answer's address, so none lost: its first resend keyed it (session 39). Since
    session 40 (a handshake per source) our answer to the ClientHello it sent while ringing,
    kept, goes to the source it came from rather than to its SDP address (where nobody
    listens): that first ClientHello keys it, no resend needed."""
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, plugins=[("dtls", dtls_plugin)], alice_auto=None
    )
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", media_policy="dtls")
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    callee = await env.alice.next_call()
    await callee.ring()
    phone, rtcp_phone, answer = await start_phones(nursery, callee, PHONE_PORT)
    natted = answer.replace(f"m=audio {PHONE_PORT} ".encode(), b"m=audio 40000 ")
    assert natted != answer
    await callee.answer(200, sdp=natted)
    assert (await call.final()).status == 200

    with trio.fail_after(30):
        await phone.keyed.wait()
        await rtcp_phone.keyed.wait()
    assert phone.failure is None and rtcp_phone.failure is None
    for engine in (phone.negotiation, rtcp_phone.negotiation):
        assert engine.statistics().retransmissions == 0  # type: ignore[attr-defined]


async def test_a_forks_refused_183_binds_nothing_for_the_phone_that_answers(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
) -> None:
    """A proxy downstream forks our one offer (one B leg, two To tags, RFC 3261 §12.1.2).
    The other phone's 183 (its own certificate) names a host in c=, which the relay resolves
    none of: the media session refuses it after the leg's security read it, so it is ignored
    (the caller gets no 183). The phone that rang answers 200 with its own certificate: taken,
    and its handshake keys the call. Before session 46 the refused 183 had bound the line's
    DTLS negotiation to its fingerprint: the 200 failed with "a second answer changes the
    DTLS parameters", 488 to the caller and BYE to the phone that answered."""
    env, call, leg_b = await forked_by_a_proxy(nursery, tmp_path, voipgw_seed)
    await leg_b.ring()
    phone, rtcp_phone, answer = await start_phones(nursery, leg_b, PHONE_PORT)
    refused = dtls_sdp(
        phone.negotiation,  # type: ignore[arg-type]
        port=PHONE_PORT + 2,
        fingerprint=wrong_fingerprint(),  # the other phone's certificate
        rtcp_mux=False,
    ).replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 phone2.example.net")
    answering_tag = leg_b.local_tag
    leg_b.local_tag = "fork-2"  # the other phone's early dialog
    await env.alice.respond(leg_b.incoming, 183, body=refused)  # type: ignore[arg-type]
    await trio.sleep(0.05)
    leg_b.local_tag = answering_tag
    assert call.exchange is not None
    assert 183 not in [r.status for r in call.exchange.responses]
    await leg_b.answer(200, sdp=answer)
    final = await call.final()
    assert final.status == 200, final.reason

    with trio.fail_after(30):
        await phone.keyed.wait()
        await rtcp_phone.keyed.wait()
    assert phone.failure is None and rtcp_phone.failure is None
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.b is not None and gateway_call.b.security is not None
    security = gateway_call.b.security
    await eventually(lambda: security.rtcp_keys(0) is not None)
    assert security.keys(0) is not None
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_another_phones_200_after_a_taken_early_answer_is_keyed_by_its_own_handshake(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
) -> None:
    """A proxy downstream forks our one offer (one B leg, two To tags, RFC 3261 §12.1.2). One
    phone's 183 answers early with its own certificate: taken, its handshake keys the early
    media. Then the other phone answers 200 with its certificate: another phone, another
    association (RFC 5763 §5), begun afresh for it with what our offer said (our certificate,
    a=setup, a=tls-id), the early phone's keys no longer in force. Before session 51 the 200
    failed with "a second answer changes the DTLS parameters": 488 to the caller, BYE to the
    phone that answered."""
    env, call, leg_b = await forked_by_a_proxy(nursery, tmp_path, voipgw_seed)
    await leg_b.ring()
    early, early_rtcp, early_answer = await start_phones(
        nursery, leg_b, PHONE_PORT + 2, identity=OTHER_ID
    )
    answering_tag = leg_b.local_tag
    gateway_call, security = await early_phone_keyed(env, leg_b, early, early_rtcp, early_answer)

    leg_b.local_tag = answering_tag
    phone, rtcp_phone, answer = await start_phones(nursery, leg_b, PHONE_PORT)
    await leg_b.answer(200, sdp=answer)
    final = await call.final()
    assert final.status == 200, final.reason
    await keyed_by_the_client_hellos_of_its_200(security, phone, rtcp_phone)
    record = gateway_call.security_record()["b"]["streams"][0]
    assert record["peer_certificate_sha256"] == PHONE_ID.sha256_hex()
    assert gateway_call.media is not None
    assert gateway_call.media.peer_address(0, "b") == ("127.0.0.1", PHONE_PORT)

    # The answering phone's SRTP is relayed; the early phone's, under its keys, is not.
    (stream,) = gateway_call.media.streams
    relayed = stream.b_to_a.statistics().rtp_packets
    packets = [struct.pack("!BBHII", 0x80, 0, n, 160 * n, 0x1234ABCD) + bytes(160) for n in (1, 2)]
    with SrtpSession(phone.keys) as srtp, SrtpSession(early.keys) as early_srtp:
        protected = [srtp.protect_rtp(packet) for packet in packets]
        stale = early_srtp.protect_rtp(packets[0])
    assert None not in protected and stale is not None
    await phone.sock.sendto(protected[0], phone.gateway)
    await eventually(lambda: stream.b_to_a.statistics().rtp_packets == relayed + 1)
    await early.sock.sendto(stale, early.gateway)
    await phone.sock.sendto(protected[1], phone.gateway)  # after the early phone's, in order
    await eventually(lambda: stream.b_to_a.statistics().rtp_packets >= relayed + 2)
    assert stream.b_to_a.statistics().rtp_packets == relayed + 2
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_both_phones_hellos_before_any_answer_key_the_early_phone_then_the_answering_one(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
) -> None:
    """A proxy downstream forks our one offer (one B leg, two To tags) and both phones begin
    their handshakes as they ring, before either answer has reached us (RFC 5763 §5). One
    phone's 183 then answers early, the other phone's 200 finally. Each phone's ClientHellos
    go to its own handshake: the early phone's keys the early media, the answering phone's
    keys the call, no resend needed. Before session 55 both phones' were kept without their
    sources and all fed to the early phone's handshake at its 183: that handshake failed
    ("decrypt error"), which ended the call."""
    env, call, leg_b = await forked_by_a_proxy(nursery, tmp_path, voipgw_seed)
    await leg_b.ring()
    early, early_rtcp, early_answer = await start_phones(
        nursery, leg_b, PHONE_PORT + 2, identity=OTHER_ID
    )
    phone, rtcp_phone, answer = await start_phones(nursery, leg_b, PHONE_PORT)
    answering_tag = leg_b.local_tag
    gateway_call, security = await early_phone_keyed(env, leg_b, early, early_rtcp, early_answer)
    for engine in (early.negotiation, early_rtcp.negotiation):
        assert engine.statistics().retransmissions == 0  # type: ignore[attr-defined]

    leg_b.local_tag = answering_tag
    await leg_b.answer(200, sdp=answer)
    final = await call.final()
    assert final.status == 200, final.reason
    await keyed_by_the_client_hellos_of_its_200(security, phone, rtcp_phone)
    record = gateway_call.security_record()["b"]["streams"][0]
    assert record["peer_certificate_sha256"] == PHONE_ID.sha256_hex()
    await trio.sleep(30)  # virtual time, past handshake_timeout (20 s): the call goes on
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_another_phones_answer_in_a_reliable_183_is_taken_by_its_bare_200(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
) -> None:
    """The same fork with 100rel (RFC 3262): each phone answers in a reliable 183, which we
    PRACK, and the phone that answers sends its 200 without SDP (§5: its 183's answer
    completed the offer/answer exchange of its early dialog). The early phone's answer is
    taken first; the other phone's, with its own certificate, is refused as early media (the
    early media stays with the first phone), but kept for its dialog: its bare 200 takes it,
    another phone's answer, keyed by its own handshake. Before session 51 that 200 failed with
    "2xx without SDP answer": 488 to the caller, BYE to the phone that answered."""
    env, call, leg_b = await forked_by_a_proxy(nursery, tmp_path, voipgw_seed)
    assert leg_b.incoming is not None
    early, early_rtcp, early_answer = await start_phones(
        nursery, leg_b, PHONE_PORT + 2, identity=OTHER_ID
    )
    reliable = [("Require", "100rel"), ("RSeq", "1")]
    answering_tag = leg_b.local_tag
    leg_b.local_tag = "fork-2"  # the early phone's dialog
    await env.alice.respond(leg_b.incoming, 183, body=early_answer, extra=reliable)
    await env.alice.next_request("PRACK")
    with trio.fail_after(30):
        await early.keyed.wait()
        await early_rtcp.keyed.wait()

    leg_b.local_tag = answering_tag
    phone, rtcp_phone, answer = await start_phones(nursery, leg_b, PHONE_PORT)
    await env.alice.respond(leg_b.incoming, 183, body=answer, extra=reliable)
    assert (await env.alice.next_request("PRACK")).request.to.tag == answering_tag
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    security = gateway_call.b_legs[0].security
    assert security is not None
    assert early.keys is not None
    assert security.keys(0) == mirrored(early.keys)  # the early media stays with the first
    await env.alice.respond(leg_b.incoming, 200)  # no SDP: its 183's answer stands
    final = await call.final()
    assert final.status == 200, final.reason
    await keyed_by_the_client_hellos_of_its_200(security, phone, rtcp_phone)
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []


async def test_the_client_hellos_another_phone_sends_with_its_200_key_it_at_once(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
) -> None:
    """A proxy downstream forks our one offer (one B leg, two To tags, RFC 3261 §12.1.2); one
    phone's 183 is taken and its handshake keys the early media. The other phone answers
    a=setup:active and sends its ClientHellos (RTP and RTCP ports) as it sends its 200: they
    come straight to the gateway's B ports, which the early phone's keys hold, ahead of the
    200 (which a proxy delays). The early phone's negotiation keeps them, and the relay hands
    them to it while no 2xx confirmed the early answer (its sockets not connected to the
    early phone meanwhile); the 200 hands them to the answering phone's own association (RFC
    5763 §5). Keyed at the 200, no resend needed; before session 52 the kernel refused them
    at the early phone's connected sockets and the phone was keyed at its first resend, 1 s
    of the call's audio lost. Once the 200 confirmed the answer, the sockets are connected
    to the answering phone again."""
    env, call, leg_b = await forked_by_a_proxy(nursery, tmp_path, voipgw_seed)
    await leg_b.ring()
    early, early_rtcp, early_answer = await start_phones(
        nursery, leg_b, PHONE_PORT + 2, identity=OTHER_ID
    )
    answering_tag = leg_b.local_tag
    gateway_call, security = await early_phone_keyed(env, leg_b, early, early_rtcp, early_answer)
    assert gateway_call.media is not None
    (stream,) = gateway_call.media.streams
    await eventually(lambda: security.rtcp_keys(0) is not None)
    # Keyed by the early phone, whose sockets are not connected to it: another phone may
    # still answer (the early phone latched them from its SDP address, which connected them
    # at once before session 52).
    for socket in (stream.b._rtp, stream.b._rtcp):
        assert socket.other_phones and not socket.connected
        assert socket.source == ("127.0.0.1", PHONE_PORT + 2 + (socket is stream.b._rtcp))
    await trio.sleep(5)  # the other phone rings a while

    leg_b.local_tag = answering_tag
    phone, rtcp_phone, answer = await start_phones(nursery, leg_b, PHONE_PORT)
    answered_at = trio.current_time()
    await leg_b.answer(200, sdp=answer)
    final = await call.final()
    assert final.status == 200, final.reason
    await keyed_by_the_client_hellos_of_its_200(security, phone, rtcp_phone)
    assert trio.current_time() - answered_at < 0.5
    record = gateway_call.security_record()["b"]["streams"][0]
    assert record["peer_certificate_sha256"] == PHONE_ID.sha256_hex()
    assert early.failure is None and early.dtls_received == early_rtcp.dtls_received == 2
    # The 200 confirmed the answer: keys connect the answering phone's sockets (the kernel
    # refuses everyone else's datagrams again, as on every keyed call).
    await eventually(lambda: stream.b._rtp.connected and stream.b._rtcp.connected)
    assert not stream.b._rtp.other_phones and not stream.b._rtcp.other_phones
    await trio.sleep(30)
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []
