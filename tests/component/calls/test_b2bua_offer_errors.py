"""A failure of ours (or of a key-exchange plugin: a bug, not the peer's bad SDP) while the
gateway, as UAS, makes its answer or offer for a request it received: the caller's INVITE, a
phone picking the call up (an INVITE with Replaces, RFC 3891), a re-INVITE or UPDATE toward us.
That request gets its final response at once (500 with a Warning), never a timeout or the
manager's late 481; the call ends saying why, the record naming the plugin; one ERROR line
with the traceback, nothing of the exception's text anywhere else. Other calls go on. The
2xx-side sites are test_b2bua_answer_errors.py. Signalling on the in-memory network, virtual
time."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

import gateway.plugins.keyexchange.dtls_srtp as dtls_plugin
from gateway.core.media.errors import LocalMediaError
from gateway.core.media.session import MediaSession
from gateway.plugins.keyexchange.dtls_srtp import DtlsKeyExchange, DtlsNegotiation
from gateway.testing.sip_agent import SDP, AutoAnswer, simple_sdp
from tests.component.calls.answer_error_checks import (
    SECRET,
    assert_logged_once_and_nothing_secret,
    fail_next,
)
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    answered_call,
    eventually,
    next_within,
    start_b2bua,
)
from tests.component.calls.dialog_event_watch import next_doc, start, watch
from tests.component.calls.dtls_phone import PHONE_ID
from tests.component.calls.offer_error_checks import PLUGIN_BUG, plugin_bug, warning_of
from tests.component.calls.pickup_calls import (
    BOB_PORT,
    PICKUP,
    early_dialog,
    pick_up,
    replaces_of,
    ringing_alice,
)
from tests.component.calls.pickup_sdp import bob_sdp


@pytest.mark.parametrize("step", ["take_offer", "make_answer"])
async def test_a_failure_answering_a_pickers_offer_answers_it_500_and_ends_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    step: str,
) -> None:
    """Bob picks up the call ringing alice, and taking his offer (or making our answer to it)
    raises: his INVITE gets 500 "key exchange failed" at once (not the manager's 481 once it
    gives up waiting), the caller 500 too, alice's ringing phone CANCEL."""
    caplog.set_level(logging.INFO, logger="gateway")
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    other, _ = await answered_call(env)  # a call in progress, not to be disturbed
    incoming, ringing, dialog = await ringing_alice(env, bob)
    fail_next(monkeypatch, step, error=plugin_bug)()

    picked = await pick_up(bob, replaces_of(dialog), sdp=simple_sdp("127.0.0.1", BOB_PORT))
    refused = await picked.final()
    assert (refused.status, warning_of(refused)) == (500, '399 voipgw "key exchange failed"')
    to_caller = await incoming.final()
    assert (to_caller.status, warning_of(to_caller)) == (500, '399 voipgw "key exchange failed"')
    cancel = (await env.alice.next_request("CANCEL", timeout=5)).request
    assert cancel.call_id == ringing.call_id
    await eventually(lambda: env.calls == 1)
    assert bob.requests("BYE") == []  # bob's phone got a final response: no dialog to end
    assert all(SECRET.encode() not in d.data for d in env.network.capture)
    assert_logged_once_and_nothing_secret(caplog, PLUGIN_BUG)

    assert (await other.bye()).status == 200  # the other call still works
    await eventually(lambda: env.calls == 0)


async def test_a_real_plugins_bug_making_our_answer_to_a_picker_is_named(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not a stand-in this time: bob offers DTLS-SRTP, and the dtls plugin raises from
    local_sdp_attributes() while we make our answer (inside LegSecurity.make_answer, which
    used to say "internal error applying the ..."). The record names the plugin."""
    caplog.set_level(logging.INFO, logger="gateway")
    env, bob = await start(
        nursery, tmp_path, voipgw_seed, groups=[PICKUP], plugins=[("dtls", dtls_plugin)]
    )
    incoming, ringing, dialog = await ringing_alice(env, bob)
    phone = DtlsKeyExchange(identity=lambda: PHONE_ID).offer(suites=[], secure_signalling=False)
    offer = bob_sdp(dtls=phone)  # bob's own attributes, made before the plugin breaks

    def broken(self: DtlsNegotiation) -> list[tuple[str, str | None]]:
        raise ValueError(f"a bug holding {SECRET}")

    monkeypatch.setattr(DtlsNegotiation, "local_sdp_attributes", broken)
    picked = await pick_up(bob, replaces_of(dialog), sdp=offer)
    refused = await picked.final()
    assert (refused.status, warning_of(refused)) == (500, '399 voipgw "key exchange failed"')
    assert (await incoming.final()).status == 500
    assert (await env.alice.next_request("CANCEL", timeout=5)).request.call_id == ringing.call_id
    await eventually(lambda: env.calls == 0)
    assert all(SECRET.encode() not in d.data for d in env.network.capture)
    assert_logged_once_and_nothing_secret(
        caplog, "key exchange failed: the dtls key exchange raised ValueError"
    )


async def test_the_relay_failing_to_take_a_pickers_keys_answers_it_500_too(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Our answer to bob is made, but the relay does not take his keys (a media worker's
    round trip raising): bob's INVITE gets 500 all the same, the caller too."""
    caplog.set_level(logging.INFO, logger="gateway")
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    incoming, ringing, dialog = await ringing_alice(env, bob)

    async def applied(self: MediaSession) -> None:
        raise LocalMediaError(f"the relay lost {SECRET}")

    monkeypatch.setattr(MediaSession, "applied", applied)
    picked = await pick_up(bob, replaces_of(dialog), sdp=simple_sdp("127.0.0.1", BOB_PORT))
    refused = await picked.final()
    assert refused.status == 500
    assert warning_of(refused) == '399 voipgw "internal error applying the picker\'s offer"'
    assert (await incoming.final()).status == 500
    assert (await env.alice.next_request("CANCEL", timeout=5)).request.call_id == ringing.call_id
    await eventually(lambda: env.calls == 0)
    assert bob.requests("BYE") == []
    assert_logged_once_and_nothing_secret(
        caplog, "internal error applying the picker's offer (LocalMediaError)"
    )


async def test_a_failure_offering_a_pickers_offer_to_a_late_offer_caller_answers_it_500(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The caller made no offer (RFC 3261 §13.2.1): bob's offer goes to it in our 200, and
    making that offer raises. Bob's INVITE gets 500 at once; the caller, never answered,
    500; alice's phone CANCEL."""
    caplog.set_level(logging.INFO, logger="gateway")
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID), sdp=b"")
    ringing = await env.alice.next_call()
    dialog = await early_dialog(bob)
    fail_next(monkeypatch, "make_offer")()

    picked = await pick_up(bob, replaces_of(dialog), sdp=simple_sdp("127.0.0.1", BOB_PORT))
    refused = await picked.final()
    assert refused.status == 500
    assert warning_of(refused) == '399 voipgw "internal error applying the picker\'s offer"'
    to_caller = await incoming.final()
    assert to_caller.status == 500
    assert (await env.alice.next_request("CANCEL", timeout=5)).request.call_id == ringing.call_id
    await eventually(lambda: env.calls == 0)
    assert_logged_once_and_nothing_secret(
        caplog, "internal error applying the picker's offer (RuntimeError)"
    )


@pytest.mark.parametrize("method", ["INVITE", "UPDATE"])
@pytest.mark.parametrize("step", ["take_offer", "make_offer"])
async def test_a_failure_relaying_a_phones_offer_answers_it_500_and_ends_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    method: str,
    step: str,
) -> None:
    """A re-INVITE (or UPDATE) with an offer from an answered leg, and taking it (or making
    ours for the other leg) raises: the request gets 500 at once, left to the call's
    catch-all it got none; both legs BYE with the reason."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    other, _ = await answered_call(env)
    call, leg_b = await answered_call(env)
    fail_next(monkeypatch, step, error=plugin_bug)()

    hold = simple_sdp("127.0.0.3", 30000, version=2, direction="sendonly")
    exchange = await call.request(method, body=hold, content_type=SDP)
    refused = await exchange.final(timeout=5)
    assert (refused.status, warning_of(refused)) == (500, '399 voipgw "key exchange failed"')
    for agent, leg in ((env.trunk, call), (env.alice, leg_b)):
        bye = (await agent.next_request("BYE", timeout=5)).request
        assert bye.call_id == leg.call_id
        reason = bye.headers.get("Reason") or ""
        assert "cause=500" in reason and PLUGIN_BUG in reason
    assert await next_within(env.alice, "INVITE", 1) is None  # nothing was relayed
    await eventually(lambda: env.calls == 1)
    assert all(SECRET.encode() not in d.data for d in env.network.capture)
    assert_logged_once_and_nothing_secret(caplog, PLUGIN_BUG)

    assert (await other.bye()).status == 200
    await eventually(lambda: env.calls == 0)


@pytest.mark.parametrize("step", ["take_offer", "make_offer"])
async def test_a_failure_taking_the_callers_offer_answers_it_500_naming_the_plugin(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    step: str,
) -> None:
    """The caller's INVITE: taking its offer (or making our offer to the callee from it)
    raises. 500 with a Warning and the record naming the plugin, rather than the catch-all's
    bare 500 saying "internal error: KeyExchangeFailed"; the callee is never called."""
    caplog.set_level(logging.INFO, logger="gateway")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    other, _ = await answered_call(env)
    fail_next(monkeypatch, step, error=plugin_bug)()

    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    final = await call.final()
    assert (final.status, warning_of(final)) == (500, '399 voipgw "key exchange failed"')
    assert await next_within(env.alice, "INVITE", 1) is None
    await eventually(lambda: env.calls == 1)
    assert all(SECRET.encode() not in d.data for d in env.network.capture)
    assert_logged_once_and_nothing_secret(caplog, PLUGIN_BUG)

    assert (await other.bye()).status == 200
    await eventually(lambda: env.calls == 0)
