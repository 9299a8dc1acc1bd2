"""SIPS on the B2BUA (RFC 3261 §26.2.2, RFC 5630): a caller that asks for a ``sips:`` URI over
TLS is put through over TLS on every hop, or not at all.

The gateway listens on UDP 5060 and on the ``tls`` stand-in at 5061 (memory datagrams whose
flows are marked secure: what is checked is which flow the core picks, not TLS itself). alice
registers over UDP; bob and a second phone of alice ("alice-tls") over the stand-in.

- a ``sips:`` INVITE that came over UDP: 480 with warn-code 380, nobody rung, no challenge;
- bob over TLS calls ``sips:alice`` with alice only over UDP: 480 with 380, alice not rung;
- with alice also over TLS, only that phone rings (forking to TLS contacts only), and both legs
  have ``sips:`` Contacts; the BYE reaches alice-tls over TLS;
- an emergency call is never refused for it;
- a secure call's transfer to a number only a UDP trunk serves fails (NOTIFY 480), and a
  phone on UDP that dials the pickup code for it gets 480 with 380;
- bob over TLS calls a number over the UDP trunk with ``sip:``: it goes (TLS was hop by hop
  only), with a ``sip:`` Contact; with ``sips:``, the UDP trunk is left out and a TLS trunk
  serving the same prefix takes the call.
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.ids import SeededIds
from gateway.core.sip.message import Response
from gateway.testing.sip_agent import AutoAnswer, Call, SipAgent
from tests.component.calls.b2bua_env import (
    GW,
    REALM,
    next_within,
    start_b2bua,
)
from tests.component.calls.sips_phones import (
    ALICE_TLS,
    BOB,
    CAROL,
    GW_TLS,
    OUR_SIPS_CONTACT,
    TLS_TRUNK,
    assert_sips_not_allowed,
    sips_env,
    tls_phone,
)


async def final_after_challenge(call: Call) -> Response:
    """The final response to a phone's INVITE, once it answered the digest challenge."""
    final = await call.final()
    assert final.status == 407, final.reason
    await call.authenticate()
    return await call.final()


async def test_a_sips_invite_over_udp_is_refused_before_any_challenge(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await sips_env(nursery, tmp_path, voipgw_seed)
    call = await env.alice.invite("sips:bob@127.0.0.1:5061")  # over UDP, to GW
    final = await call.final()
    assert_sips_not_allowed(final)
    assert call.exchange is not None and 407 not in call.exchange.statuses
    assert await next_within(bob, "INVITE", 5) is None
    assert env.calls == 0
    # The same call with sip: goes through to bob (over TLS, since that is where he is).
    plain = await env.alice.invite("sip:bob@127.0.0.1:5060")
    assert (await final_after_challenge(plain)).status == 200
    rung = await bob.next_call()
    assert rung.incoming is not None and rung.incoming.source == GW_TLS


async def test_sips_to_an_account_only_over_udp_is_480_with_warning_380(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await sips_env(nursery, tmp_path, voipgw_seed)
    call = await bob.invite("sips:alice@127.0.0.1:5061")
    assert_sips_not_allowed(await final_after_challenge(call))
    assert await next_within(env.alice, "INVITE", 5) is None


async def test_sips_rings_only_the_contacts_reached_over_tls_with_sips_contacts(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await sips_env(nursery, tmp_path, voipgw_seed)
    alice_tls = await tls_phone(env, nursery, ALICE_TLS, "alice", "wonderland-42", voipgw_seed + 6)
    call = await bob.invite("sips:alice@127.0.0.1:5061")
    final = await final_after_challenge(call)
    rung = await alice_tls.next_call()
    assert rung.incoming is not None and rung.incoming.source == GW_TLS
    # RFC 3261 §8.1.1.8 / RFC 5630: our Contact on a secure call's TLS leg is sips:.
    assert rung.invite.headers.get("Contact") == OUR_SIPS_CONTACT
    assert final.status == 200, final.reason
    # RFC 3261 §12.1.1: the request had a sips Request-URI, so the 2xx's Contact is sips:.
    assert final.headers.get("Contact") == OUR_SIPS_CONTACT
    await alice_tls.next_request("ACK")
    assert await next_within(env.alice, "INVITE", 3) is None  # the UDP phone never rang
    await call.request("BYE")
    bye = await alice_tls.next_request("BYE")
    assert bye.source == GW_TLS  # the secure dialog's requests stay on TLS


async def test_a_tls_phone_calling_sip_reaches_the_udp_trunk(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await sips_env(nursery, tmp_path, voipgw_seed)
    call = await bob.invite("sip:+15551234@127.0.0.1:5061")
    final = await final_after_challenge(call)
    rung = await env.trunk.next_call()
    assert rung.incoming is not None and rung.incoming.source == GW
    assert rung.invite.headers.get("Contact") == "<sip:voipgw@127.0.0.1:5060>"
    assert final.status == 200, final.reason
    assert final.headers.get("Contact") == "<sip:voipgw@127.0.0.1:5061;transport=tls>"


async def test_sips_to_a_number_leaves_the_udp_trunk_out_for_a_tls_one(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await sips_env(nursery, tmp_path, voipgw_seed)
    tls_trunk = SipAgent(env.network, TLS_TRUNK, ids=SeededIds(voipgw_seed + 7), user="tt")
    await nursery.start(tls_trunk.serve)
    call = await bob.invite("sips:+15551234@127.0.0.1:5061")
    assert (await final_after_challenge(call)).status == 200
    rung = await tls_trunk.next_call()
    assert rung.incoming is not None and rung.incoming.source == GW_TLS
    assert rung.invite.headers.get("Contact") == OUR_SIPS_CONTACT
    assert await next_within(env.trunk, "INVITE", 3) is None


async def test_an_emergency_call_to_a_sips_uri_over_udp_is_not_refused(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, _ = await sips_env(nursery, tmp_path, voipgw_seed)
    call = await env.alice.invite("sips:112@127.0.0.1:5061")  # a broken phone, over UDP
    # Not refused for its scheme: it goes on to be authenticated and routed like any call.
    assert (await call.final()).status == 407


async def test_a_secure_call_is_not_transferred_to_a_target_without_tls(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await sips_env(nursery, tmp_path, voipgw_seed, tls_trunk=False)
    await tls_phone(env, nursery, ALICE_TLS, "alice", "wonderland-42", voipgw_seed + 6)
    call = await bob.invite("sips:alice@127.0.0.1:5061")
    assert (await final_after_challenge(call)).status == 200
    exchange = await call.request("REFER", extra=[("Refer-To", "<sip:+15550123@127.0.0.1>")])
    assert (await exchange.final()).status == 202
    while True:
        notify = (await bob.next_request("NOTIFY")).request
        if b"SIP/2.0 1" not in notify.body:
            break
    assert notify.body.startswith(b"SIP/2.0 480")
    assert await next_within(env.trunk, "INVITE", 3) is None


async def test_a_secure_call_is_not_picked_up_over_udp(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    ring_only = AutoAnswer(ring=True, status=None)
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        sip={"listen": ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]},
        tls_stand_in=True,
        alice_auto=ring_only,
        dialog_watch_groups=[{"name": "office", "accounts": ["alice", "bob"], "pickup": True}],
    )
    assert env.gateway.store is not None
    env.gateway.store.accounts_add("carol", "carol-password-1", REALM)
    alice_tls = await tls_phone(env, nursery, ALICE_TLS, "alice", "wonderland-42", voipgw_seed + 6)
    alice_tls.auto = ring_only
    carol = await tls_phone(env, nursery, CAROL, "carol", "carol-password-1", voipgw_seed + 7)
    bob = SipAgent(  # over UDP
        env.network,
        BOB,
        ids=SeededIds(voipgw_seed + 5),
        user="bob",
        password="bob-password-1",
        proxy=GW,
    )
    await nursery.start(bob.serve)
    assert (await bob.register()).status == 200
    incoming = await carol.invite("sips:alice@127.0.0.1:5061")
    assert (await incoming.final()).status == 407
    await incoming.authenticate()
    await alice_tls.next_call()  # ringing, over TLS
    pickup = await bob.invite("sip:*8@127.0.0.1:5060")
    assert_sips_not_allowed(await final_after_challenge(pickup))
    assert await next_within(alice_tls, "CANCEL", 3) is None  # still ringing
