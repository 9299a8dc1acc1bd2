"""Call forwarding by redirect (gateway/core/calls/redirect.py) through the B2BUA: the carrier
calls alice's DID, alice's phone answers 302 with a number the carrier serves (+1...).

- the forwarded INVITE goes to the carrier with the original caller's From and a Diversion
  naming alice's number there; a Contact at a foreign host is routed by its user part only
  (nothing goes to that host), or refused by ``[sip] foreign_redirects``;
- Contacts are tried in q order; a loop (alice's own DID), 112 and the call's own caller are
  refused and the caller gets 480; ``[sip] max_redirects`` bounds a chain (alice -> bob -> ...);
- a forwarded call that fails (the carrier's 503; a registered phone that never answers, whose
  INVITE times out: 408) gives the caller 480 saying the forwarded call failed, not that
  alice's phone (which answered 302) was unreachable;
- a forwarded call is a call the forwarding account places: alice stays counted against her
  ``max_calls`` while it lasts (busy to a second caller, her own call refused);
- a trunk's 302 is followed only with ``follow_redirects``; History-Info by trunk policy; a
  carrier's Diversion reaches the phone.

Set-up as b2bua_env.py (alice registered, carrier at 127.0.0.2, DIDs +4930123456 alice and
+4930999 bob), in virtual time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from gateway.core.cli import describe_redirect
from gateway.testing.sip_agent import AutoAnswer, Call
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    TRUNK,
    B2bua,
    eventually,
    sent,
    start_b2bua,
)
from tests.component.calls.redirect_phones import BOB, start_bob

FORWARD_TO = "+15557777"


async def env_with(nursery: trio.Nursery, tmp_path: Path, seed: int, **knobs: Any) -> B2bua:
    env = await start_b2bua(nursery, tmp_path, seed, alice_auto=None, **knobs)
    env.trunk.auto = AutoAnswer(ring=True, status=200)  # the forwarded call's callee
    return env


async def carrier_calls_alice(env: B2bua, extra: list[tuple[str, str]] | None = None) -> Call:
    return await env.trunk.invite(env.did_uri(ALICE_DID), extra=extra or [])


async def alice_redirects(env: B2bua, *contacts: str, status: int = 302) -> Call:
    leg = await env.alice.next_call()
    assert leg.incoming is not None
    await env.alice.respond(leg.incoming, status, extra=[("Contact", c) for c in contacts])
    return leg


def forwarded_invites(env: B2bua) -> list[Any]:
    """The INVITEs the carrier got from the gateway (the call it made itself is not one)."""
    return env.trunk.requests("INVITE")


def gateway_call(env: B2bua) -> Any:
    assert env.gateway.calls is not None
    (call,) = env.gateway.calls.calls
    return call


async def ended_record(env: B2bua) -> dict[str, Any]:
    """The security record of the call that just ended, once the store has it."""
    store = env.gateway.store
    assert store is not None
    await eventually(lambda: env.calls == 0)
    await eventually(lambda: any(r.ended_at for r in store.call_records_recent(1)))
    (record,) = store.call_records_recent(1)
    return record.security or {}


async def test_a_phones_302_goes_to_the_trunk_with_diversion_and_the_callers_from(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed)
    call = await carrier_calls_alice(env)
    await alice_redirects(env, f"<sip:{FORWARD_TO}@127.0.0.3>")
    final = await call.final()
    assert final.status == 200, final.reason
    (invite,) = forwarded_invites(env)
    assert invite.uri.user == FORWARD_TO
    assert invite.from_.uri.user == "+15550100"  # the original caller, not alice
    # alice's number on the carrier, why, and how many diversions (RFC 5806 §4).
    assert invite.headers.get_all("Diversion") == (
        f"<sip:{ALICE_DID}@127.0.0.1:5060>;reason=unconditional;counter=1",
    )
    record = gateway_call(env).security_record()
    (entry,) = record["redirects"]
    assert entry == {
        "by": "alice",
        "status": 302,
        "reason": "unconditional",
        "to": FORWARD_TO,
        "via": "trunk carrier",
    }
    assert describe_redirect(entry) == (
        f"forwarded by alice (302, unconditional) to {FORWARD_TO}: taken by trunk carrier"
    )
    assert gateway_call(env).b.target.trunk == "carrier"
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_phones_busy_forward_says_user_busy(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed)
    call = await carrier_calls_alice(env)
    leg = await env.alice.next_call()
    assert leg.incoming is not None
    contact = ("Contact", f"<sip:{FORWARD_TO}@127.0.0.3>")
    await env.alice.respond(leg.incoming, 302, extra=[contact, ("Reason", "SIP;cause=486")])
    assert (await call.final()).status == 200
    (invite,) = forwarded_invites(env)
    assert "reason=user-busy" in invite.headers.get("Diversion")


async def test_a_redirect_to_a_foreign_host_is_routed_by_its_user_part(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed)
    call = await carrier_calls_alice(env)
    await alice_redirects(env, f"<sip:{FORWARD_TO}@192.0.2.66:5060>")
    assert (await call.final()).status == 200
    (invite,) = forwarded_invites(env)
    assert invite.uri.user == FORWARD_TO and invite.uri.host == "127.0.0.2"
    assert not [d for d in env.network.capture if d.dst[0] == "192.0.2.66"]


async def test_foreign_redirects_refuse_gives_the_caller_480(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed, sip={"foreign_redirects": "refuse"})
    call = await carrier_calls_alice(env)
    await alice_redirects(env, f"<sip:{FORWARD_TO}@evil.example>")
    final = await call.final()
    assert final.status == 480
    assert forwarded_invites(env) == []
    (entry,) = (await ended_record(env))["redirects"]
    assert "another domain" in entry["refused"]


async def test_contacts_are_tried_in_q_order(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed)
    call = await carrier_calls_alice(env)
    await alice_redirects(
        env, "<sip:+15550001@127.0.0.3>;q=0.1", f"<sip:{FORWARD_TO}@127.0.0.3>;q=0.9"
    )
    assert (await call.final()).status == 200
    (invite,) = forwarded_invites(env)
    assert invite.uri.user == FORWARD_TO


async def test_the_next_contact_rings_when_the_first_fails(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed)
    env.trunk.auto = None
    call = await carrier_calls_alice(env)
    await alice_redirects(
        env, "<sip:+15550001@x.invalid>;q=1", f"<sip:{FORWARD_TO}@x.invalid>;q=0.5"
    )
    first = await env.trunk.next_call()
    assert first.incoming is not None and first.invite.uri.user == "+15550001"
    await env.trunk.respond(first.incoming, 486)
    second = await env.trunk.next_call()
    assert second.invite.uri.user == FORWARD_TO
    await second.answer()
    assert (await call.final()).status == 200


async def test_a_forward_that_fails_says_so_not_that_the_phone_was_unreachable(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed)
    env.trunk.auto = None
    call = await carrier_calls_alice(env)
    await alice_redirects(env, f"<sip:{FORWARD_TO}@127.0.0.3>")
    forwarded = await env.trunk.next_call()
    assert forwarded.incoming is not None
    await env.trunk.respond(forwarded.incoming, 503)
    final = await call.final()
    # alice's phone answered (302): it was reached; what failed is the forwarded call.
    assert final.status == 480
    assert "unreachable" not in final.reason
    assert final.reason == "Temporarily Unavailable (the forwarded call failed: 503)"
    await eventually(lambda: env.calls == 0)


async def test_a_redirect_loop_is_stopped(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed)
    call = await carrier_calls_alice(env)
    # alice's own DID, alice by name: both are alice again.
    await alice_redirects(env, f"<sip:{ALICE_DID}@127.0.0.1>", "<sip:alice@127.0.0.1>")
    final = await call.final()
    assert final.status == 480
    assert "redirection not followed" in final.reason
    assert forwarded_invites(env) == []
    assert len(env.alice.requests("INVITE")) == 1  # never rung again
    refusals = [entry["refused"] for entry in (await ended_record(env))["redirects"]]
    assert len(refusals) == 2 and all("loop" in why for why in refusals)


async def test_a_redirect_to_112_is_refused(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed, carrier={"prefixes": ["+1", "1"]})
    call = await carrier_calls_alice(env)
    await alice_redirects(env, "<sip:112@127.0.0.3>")
    assert (await call.final()).status == 480
    assert forwarded_invites(env) == []
    (entry,) = (await ended_record(env))["redirects"]
    assert "emergency" in entry["refused"]


async def test_a_redirect_back_to_the_caller_is_refused(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed)
    call = await carrier_calls_alice(env)
    await alice_redirects(env, "<sip:+15550100@127.0.0.3>")  # the carrier's caller
    assert (await call.final()).status == 480
    assert forwarded_invites(env) == []
    (entry,) = (await ended_record(env))["redirects"]
    assert "own caller" in entry["refused"]


async def test_a_chain_of_forwards_lists_every_diversion(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed)
    bob = await start_bob(env, nursery, voipgw_seed)
    call = await carrier_calls_alice(env)
    await alice_redirects(env, "<sip:bob@127.0.0.1>")
    at_bob = await bob.next_call()
    # The phone shows who forwarded the call to it.
    assert at_bob.invite.headers.get_all("Diversion") == (
        "<sip:alice@127.0.0.1:5060>;reason=unconditional;counter=1",
    )
    assert at_bob.incoming is not None
    await bob.respond(at_bob.incoming, 302, extra=[("Contact", f"<sip:{FORWARD_TO}@127.0.0.4>")])
    assert (await call.final()).status == 200
    (invite,) = forwarded_invites(env)
    assert invite.headers.get_all("Diversion") == (
        "<sip:+4930999@127.0.0.1:5060>;reason=unconditional;counter=2",
        f"<sip:{ALICE_DID}@127.0.0.1:5060>;reason=unconditional;counter=1",
    )


async def test_max_redirects_bounds_a_chain(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed, sip={"max_redirects": 1})
    bob = await start_bob(env, nursery, voipgw_seed)
    call = await carrier_calls_alice(env)
    await alice_redirects(env, "<sip:bob@127.0.0.1>")
    at_bob = await bob.next_call()
    assert at_bob.incoming is not None
    await bob.respond(at_bob.incoming, 302, extra=[("Contact", f"<sip:{FORWARD_TO}@127.0.0.4>")])
    assert (await call.final()).status == 480
    assert forwarded_invites(env) == []
    entries = (await ended_record(env))["redirects"]
    assert entries[0]["via"] == "bob"
    assert "at most 1 redirections" in entries[1]["refused"]


async def test_380_is_not_followed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed)
    call = await carrier_calls_alice(env)
    await alice_redirects(env, f"<sip:{FORWARD_TO}@127.0.0.3>", status=380)
    assert (await call.final()).status == 480
    assert forwarded_invites(env) == []


async def test_history_info_by_trunk_policy(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed, carrier={"diversion": "history-info"})
    call = await carrier_calls_alice(env)
    await alice_redirects(env, f"<sip:{FORWARD_TO}@127.0.0.3>")
    assert (await call.final()).status == 200
    (invite,) = forwarded_invites(env)
    assert "Diversion" not in invite.headers
    assert invite.headers.get_all("History-Info") == (
        f"<sip:{ALICE_DID}@127.0.0.1:5060?Reason=SIP%3Bcause%3D302>;index=1",
        f"<{invite.uri};cause=302>;index=1.1;mp=1",
    )


async def test_a_carriers_diversion_reaches_the_phone(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed)
    env.alice.auto = AutoAnswer(ring=True, status=200)
    diversion = ("Diversion", "<sip:+15550199@127.0.0.2>;reason=no-answer;counter=1")
    call = await carrier_calls_alice(env, [diversion])
    assert (await call.final()).status == 200
    (invite,) = env.alice.requests("INVITE")
    assert invite.headers.get_all("Diversion") == (
        "<sip:+15550199@127.0.0.1:5060>;reason=no-answer;counter=1",
    )


async def test_a_trunks_302_is_followed_only_with_follow_redirects(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed)
    env.trunk.auto = AutoAnswer(ring=False, status=None)
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    first = await env.trunk.next_call()
    assert first.incoming is not None
    await env.trunk.respond(first.incoming, 302, extra=[("Contact", "<sip:+15558888@127.0.0.2>")])
    final = await call.final()
    assert final.status == 480, final.reason  # not 503: the callee is elsewhere
    assert len(forwarded_invites(env)) == 1


async def test_a_trunks_302_with_follow_redirects(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await env_with(nursery, tmp_path, voipgw_seed, carrier={"follow_redirects": True})
    env.trunk.auto = None
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    first = await env.trunk.next_call()
    assert first.incoming is not None
    await env.trunk.respond(first.incoming, 302, extra=[("Contact", "<sip:+15558888@127.0.0.2>")])
    second = await env.trunk.next_call()
    assert second.invite.uri.user == "+15558888"
    assert second.invite.headers.get_all("Diversion") == (
        "<sip:+15551234@127.0.0.1:5060>;reason=unconditional;counter=1",
    )
    await second.answer()
    assert (await call.final()).status == 200
    assert TRUNK == ("127.0.0.2", 5060)


# -- edge cases: a forward to a phone that never answers; whose call limit a forward counts ----


async def test_a_forward_to_a_registered_phone_that_never_answers_says_the_forward_failed(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """alice forwards to bob, who is registered but gone (nothing reaches his phone, nothing
    comes back): our INVITE to him times out (Timer B, 64*T1: the 408 of RFC 3261
    §17.1.1.2). The caller gets 480 saying the forwarded call failed with 408, not that a
    registered device was unreachable: alice's phone answered (302)."""
    env = await env_with(nursery, tmp_path, voipgw_seed)
    bob = await start_bob(env, nursery, voipgw_seed)
    env.network.set_link(GW, BOB, drop=1.0)  # bob's phone is registered, and unreachable
    call = await carrier_calls_alice(env)
    started = trio.current_time()
    await alice_redirects(env, "<sip:bob@127.0.0.1>")
    final = await call.final(timeout=64 * 0.5 + 10)
    assert final.status == 480
    assert final.reason == "Temporarily Unavailable (the forwarded call failed: 408)"
    assert 64 * 0.5 <= trio.current_time() - started < 64 * 0.5 + 2  # Timer B, T1 = 0.5 s
    tried = sent(env.network.capture, GW, BOB, b"INVITE ")
    assert len(tried) >= 6  # re-sent at T1, 2*T1, ... (Timer A), never answered
    assert bob.requests("INVITE") == []
    (entry,) = (await ended_record(env))["redirects"]
    assert entry["via"] == "bob"
    assert forwarded_invites(env) == []


async def test_a_forwarded_call_counts_against_the_forwarding_accounts_max_calls(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A forwarded call is a call the forwarding account places (as FreeSWITCH and Asterisk
    count it, and a carrier bills it: the forward's leg out is the customer's call): alice,
    with max_calls 1, stays counted while the call she forwarded lasts. A second call to her
    is busy (486, she is not rung) and a call of her own is refused (403) until it ends;
    then she is rung again. The forward's trunk is counted too."""
    env = await env_with(nursery, tmp_path, voipgw_seed)
    store = env.gateway.store
    limits = env.gateway.calls.limits  # type: ignore[union-attr]
    assert store is not None
    store.accounts_set("alice", max_calls=1)
    call = await carrier_calls_alice(env)
    await alice_redirects(env, f"<sip:{FORWARD_TO}@127.0.0.3>")
    assert (await call.final()).status == 200
    assert limits.in_progress == {("account", "alice"): 1, ("trunk", "carrier"): 1}
    second = await carrier_calls_alice(env)
    busy = await second.final()
    assert (busy.status, busy.reason) == (486, "Busy Here (account call limit)")
    assert len(env.alice.requests("INVITE")) == 1  # not rung
    own = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await own.final()).status == 407
    await own.authenticate()
    refused = await own.final()
    assert (refused.status, refused.reason) == (403, "Forbidden (account call limit)")
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert limits.in_progress == {}
    again = await carrier_calls_alice(env)
    leg = await env.alice.next_call()
    assert len(env.alice.requests("INVITE")) == 2  # rung again
    await leg.answer()
    assert (await again.final()).status == 200
    assert (await again.bye()).status == 200
    await eventually(lambda: env.calls == 0)
