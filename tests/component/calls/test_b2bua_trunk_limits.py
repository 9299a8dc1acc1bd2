"""A trunk's ``max_calls``: calls in progress through it, both ways together, at most.

Past the limit a call from the trunk gets 503 (its proxy tries its next route) and a call to it
is not sent (503 to the caller, a Warning naming the trunk); the count falls as calls end, by
any path. Before, nothing bounded the calls through a trunk: a carrier with 30 channels refused
the 31st itself, after the gateway had set it up.

Set-up as b2bua_env.py: trunk "carrier" (+1 numbers) at 127.0.0.2 calls alice's DID; here it
may carry one call at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.hookspecs import hookimpl
from gateway.core.ids import SeededIds
from gateway.core.interfaces import RouteDecision, RouteTarget
from gateway.core.media.security import MediaSecurityRefused
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.answer_error_checks import fail_next
from tests.component.calls.b2bua_env import ALICE_DID, GW, eventually, start_b2bua
from tests.component.calls.b2bua_scenarios import assert_no_media_ports_held
from tests.component.calls.offer_error_checks import plugin_bug
from tests.component.calls.trunk_auth_calls import PBX, PBX_TRUNK

ONE_CALL = {"max_calls": 1}


async def test_a_trunk_at_its_limit_gets_503_for_its_next_call_until_one_ends(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier=ONE_CALL)
    first = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await first.final()).status == 200
    second = await env.trunk.invite(env.did_uri(ALICE_DID))
    refused = await second.final()
    assert (refused.status, refused.reason) == (503, "Service Unavailable (trunk call limit)")
    assert len(env.alice.requests("INVITE")) == 1  # nothing set up for it
    assert (await first.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    third = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await third.final()).status == 200
    assert (await third.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert env.gateway.calls.limits.in_progress == {}


async def test_a_call_to_a_trunk_at_its_limit_is_not_sent(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier=ONE_CALL)
    # The trunk's own call in counts against it: alice's call out finds it full.
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await incoming.final()).status == 200
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    refused = await call.final()
    assert refused.status == 503
    assert "trunk carrier is at its call limit" in (refused.headers.get("Warning") or "")
    assert len(env.trunk.requests("INVITE")) == 0  # (the trunk's received INVITEs: none)
    assert (await incoming.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    # A refused set-up holds nothing: the next one goes out.
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert env.gateway.calls.limits.in_progress == {}
    assert_no_media_ports_held(env)


async def test_an_account_at_its_limit_is_busy_to_callers_and_refused_its_own_calls(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    store = env.gateway.store
    assert store is not None
    store.accounts_set("alice", max_calls=1)  # `voipgw accounts set alice --max-calls 1`
    first = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await first.final()).status == 200
    # A second call to her: busy (her one call is in progress), and she is not rung.
    second = await env.trunk.invite(env.did_uri(ALICE_DID))
    busy = await second.final()
    assert (busy.status, busy.reason) == (486, "Busy Here (account call limit)")
    assert "account alice is at its call limit" in (busy.headers.get("Warning") or "")
    assert len(env.alice.requests("INVITE")) == 1
    # A call of her own meanwhile: refused once she is identified (after the 407).
    own = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await own.final()).status == 407
    await own.authenticate()
    refused = await own.final()
    assert (refused.status, refused.reason) == (403, "Forbidden (account call limit)")
    assert env.trunk.requests("INVITE") == []
    # Her call ends: both ways are open again.
    assert (await first.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert env.gateway.calls.limits.in_progress == {}
    again = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await again.final()).status == 200
    assert (await again.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_calls_to_a_trunk_are_paced_by_its_max_cps(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier={"max_cps": 1})
    statuses = []
    for _ in range(2):  # at once: the second is past the trunk's one call a second
        call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
        assert (await call.final()).status == 407
        await call.authenticate()
        final = await call.final()
        statuses.append(final.status)
        if final.status == 200:
            assert (await call.bye()).status == 200
        else:
            assert final.reason == "Service Unavailable (trunk call rate)"
            assert "trunk carrier is at its call rate" in (final.headers.get("Warning") or "")
    assert statuses == [200, 503]
    assert len(env.trunk.requests("INVITE")) == 1
    await trio.sleep(1)  # a second later the trunk takes another
    call = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert env.gateway.calls.limits.in_progress == {}


FORKED_NUMBER = "+4930555"


class CarrierAndPbx:
    """Rings FORKED_NUMBER on both trunks at once: the carrier first, the pbx."""

    @hookimpl
    def gateway_route_call(self, request: Any, caller: Any, directory: Any) -> Any:
        if getattr(request.uri, "user", None) != FORKED_NUMBER:
            return None
        return RouteDecision(
            targets=(
                RouteTarget(f"sip:{FORKED_NUMBER}@127.0.0.2", trunk="carrier"),
                RouteTarget(f"sip:{FORKED_NUMBER}@127.0.0.4", trunk="pbx"),
            )
        )


def policy_refusal() -> Exception:
    return MediaSecurityRefused("SRTP required")


@pytest.mark.parametrize("failure", [plugin_bug, policy_refusal], ids=["offer fails", "refused"])
async def test_a_forked_trunk_target_not_called_gives_its_channel_back_at_once(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    failure: Callable[[], Exception],
) -> None:
    """A call forked to the carrier and the pbx; the carrier's branch is dropped before its
    INVITE (making the offer raised, or its media policy refused it) and the pbx answers. The
    call counted against the carrier until it ended: with max_calls = 1 the carrier was full
    of a call it never carried, and alice's next call to it got 503."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier=ONE_CALL,
        extra_trunks=[PBX_TRUNK],
        plugins=(("carrier-and-pbx", CarrierAndPbx()),),
    )
    pbx = SipAgent(env.network, PBX, ids=SeededIds(voipgw_seed + 4), proxy=GW, media_port=40010)
    await nursery.start(pbx.serve)
    limits = env.gateway.calls.limits
    fail_next(monkeypatch, "make_offer", error=failure)()  # the carrier's, the first

    forked = await env.alice.invite(f"sip:{FORKED_NUMBER}@127.0.0.1:5060")
    assert (await forked.final()).status == 407
    await forked.authenticate()
    assert (await forked.final()).status == 200  # the pbx answered
    assert env.trunk.requests("INVITE") == []  # the carrier's branch was dropped
    assert limits.in_progress.get(("trunk", "pbx")) == 1
    assert ("trunk", "carrier") not in limits.in_progress
    # The carrier has its one channel for another call meanwhile.
    other = await env.alice.invite("sip:+15551234@127.0.0.1:5060")
    assert (await other.final()).status == 407
    await other.authenticate()
    assert (await other.final()).status == 200
    assert (await other.bye()).status == 200
    assert (await forked.bye()).status == 200
    await eventually(lambda: env.calls == 0)
    assert limits.in_progress == {}
