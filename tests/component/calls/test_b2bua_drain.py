"""The gateway's drain (``[gateway] drain_timeout``, Gateway.drain): a graceful stop for an
upgrade. New calls, OPTIONS and every other new request outside a dialog get 503 (a trunk's
proxy tries its next gateway, its health checks take this one out, phones register elsewhere),
an emergency call is still served, calls in progress go on (subscriptions end at once,
``deactivated``: the phones subscribe again on another node), calls are waited for; those
left when the time runs out are ended with BYE and ``Reason: SIP;cause=503``, but for
emergency calls, which are waited for still.

Set-up as b2bua_env.py: trunk "carrier" (+1 numbers and 112) at 127.0.0.2, alice registered.
"""

from __future__ import annotations

from pathlib import Path

import trio

from gateway.core.sip.message import Request, Response
from tests.component.calls.b2bua_env import (
    ALICE_DID,
    GW,
    eventually,
    next_within,
    start_b2bua,
)
from tests.component.calls.b2bua_scenarios import assert_no_media_ports_held
from tests.component.calls.drain_steps import start_drain
from tests.component.calls.mwi_subscriptions import (
    SUMMARY,
    SUMMARY_TYPE,
    Voicemail,
    subscribe_request,
    subscribed,
)
from tests.component.calls.trunk_registrar import registering_carrier

CARRIER = {"prefixes": ["+1", "112"]}
EVENT = ("Event", "message-summary")


def reason_of(bye: Request) -> str:
    return bye.headers.get("Reason") or ""


async def test_a_drain_refuses_new_calls_and_waits_for_those_in_progress(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier=CARRIER)
    first = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await first.final()).status == 200
    drained = await start_drain(nursery, env, timeout=3600)

    second = await env.trunk.invite(env.did_uri(ALICE_DID))
    refused = await second.final()
    assert (refused.status, refused.reason) == (503, "Service Unavailable (shutting down)")
    assert refused.headers.get("Retry-After") is None  # this call only: the next gateway
    assert len(env.alice.requests("INVITE")) == 1  # nothing set up for it
    probe = await env.trunk.send(env.trunk.new_request("OPTIONS", "sip:127.0.0.1:5060"))
    assert (await probe.final()).status == 503  # RFC 3261 §11.2: as an INVITE now

    # An emergency call is served all the same, and waited for.
    emergency = await env.alice.invite("sip:112@127.0.0.1:5060")
    assert (await emergency.final()).status == 407
    await emergency.authenticate()
    assert (await emergency.final()).status == 200
    # The call in progress goes on: in-dialog requests are served.
    assert (await first.reinvite(env.trunk.offer_sdp())).status == 200
    assert (await first.bye()).status == 200
    await trio.sleep(60)
    assert not drained.is_set()  # the emergency call is still up
    assert (await emergency.bye()).status == 200
    with trio.fail_after(5):
        await drained.wait()
    assert env.calls == 0
    assert_no_media_ports_held(env)
    # Nothing ended by the gateway: the BYEs that reached either side were relayed ones.
    byes = env.trunk.requests("BYE") + env.alice.requests("BYE")
    assert len(byes) == 2 and not any("cause=503" in reason_of(bye) for bye in byes)


async def test_calls_left_when_the_drain_runs_out_are_ended_on_both_legs(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier=CARRIER)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    started = trio.current_time()
    await env.gateway.drain(30)
    assert 30 <= trio.current_time() - started < 33
    assert env.calls == 0
    await eventually(lambda: env.trunk.requests("BYE") and env.alice.requests("BYE"))
    (to_trunk,) = env.trunk.requests("BYE")
    (to_alice,) = env.alice.requests("BYE")
    for bye in (to_trunk, to_alice):
        assert "cause=503" in reason_of(bye) and "gateway shutting down" in reason_of(bye)
    [record] = env.gateway.store.call_records_recent()  # type: ignore[union-attr]
    assert record.end_reason is not None and "gateway shutting down" in record.end_reason
    assert_no_media_ports_held(env)


async def test_an_emergency_call_outlasts_the_drain_timeout(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A planned stop must not cut a call to an emergency number: when the time runs out the
    other calls are ended, and the drain waits on for the emergency call."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier=CARRIER)
    ordinary = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await ordinary.final()).status == 200
    emergency = await env.alice.invite("sip:112@127.0.0.1:5060")
    assert (await emergency.final()).status == 407
    await emergency.authenticate()
    assert (await emergency.final()).status == 200
    drained = await start_drain(nursery, env, timeout=30)
    await trio.sleep(35)
    assert env.calls == 1 and not drained.is_set()  # the ordinary call ended at 30 s
    (bye,) = env.trunk.requests("BYE")
    assert bye.call_id == ordinary.dialog.call_id and "cause=503" in reason_of(bye)
    await trio.sleep(600)
    assert not drained.is_set()  # still waiting for the emergency call
    assert (await emergency.bye()).status == 200
    with trio.fail_after(5):
        await drained.wait()
    assert env.calls == 0
    assert len(env.trunk.requests("BYE")) == 2  # the second one relayed: nothing ended by us
    assert "cause=503" not in reason_of(env.trunk.requests("BYE")[1])


async def test_a_call_still_ringing_when_the_drain_runs_out_is_refused_503(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier=CARRIER, alice_auto=None)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    ringing = await env.alice.next_call()
    await ringing.ring()
    await call.exchange.wait_for(lambda response: response.status == 180)
    await env.gateway.drain(10)
    final = await call.final()
    assert final.status == 503
    assert len(env.alice.requests("CANCEL")) == 1
    assert env.calls == 0


async def test_a_drain_removes_the_registrations_with_carriers_at_once(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """So that they stop sending calls, rather than get 503s until the registration expires."""
    env, registrar = await registering_carrier(nursery, tmp_path, voipgw_seed)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    accepted = len(registrar.accepted)
    drained = await start_drain(nursery, env, timeout=3600)
    await eventually(lambda: len(registrar.accepted) == accepted + 1)
    assert registrar.accepted[-1].headers.get("Expires") == "0"
    assert not drained.is_set()
    assert (await call.bye()).status == 200
    with trio.fail_after(5):
        await drained.wait()


def assert_refused_draining(response: Response) -> None:
    assert (response.status, response.reason) == (503, "Service Unavailable (shutting down)")
    # As for a new INVITE: this request only, so that a phone or proxy with another server for
    # our domain (DNS SRV, a backup registrar) tries it at once (RFC 3263 §4.3).
    assert response.headers.get("Retry-After") is None


async def test_a_drain_refuses_every_new_request_outside_a_dialog_and_serves_dialogs(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Phones and trunks are to move to another node: a new registration, subscription,
    message, notification or probe gets 503; the calls this node holds go on, and a phone may
    still remove its registration; its subscriptions end at once, ``deactivated`` (RFC 6665
    §4.2.2: subscribe again at once, which reaches another node)."""
    env = await start_b2bua(
        nursery, tmp_path, voipgw_seed, carrier={"voicemail": True, **CARRIER}, alice_auto=None
    )
    voicemail = Voicemail(env.trunk)
    subscription = await subscribed(env, voicemail)
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    ringing = await env.alice.next_call()
    await ringing.ring()
    await call.exchange.wait_for(lambda response: response.status == 180)
    refused_before = env.gateway.endpoint.statistics.rejected_draining
    drained = await start_drain(nursery, env, timeout=3600)
    # The message-summary subscription ends: alice is told, the voicemail trunk unsubscribed.
    ended = (await env.alice.next_request("NOTIFY")).request
    assert ended.headers.get("Subscription-State") == "terminated;reason=deactivated"
    await eventually(lambda: len(voicemail.subscribes) == 2)
    assert voicemail.subscribes[-1].headers.get("Expires") == "0"

    # A re-REGISTER: 503 before any challenge, and the binding is not refreshed.
    assert_refused_draining(await env.alice.register())
    # New requests outside dialogs, from the phone and from the trunk.
    new_subscribe = subscribe_request(env.alice)
    message = env.alice.new_request(
        "MESSAGE", "sip:bob@127.0.0.1:5060", body=b"hi", content_type="text/plain"
    )
    publish = env.alice.new_request("PUBLISH", "sip:alice@127.0.0.1:5060", extra=[EVENT])
    notify = env.trunk.new_request(
        "NOTIFY",
        env.did_uri(ALICE_DID),
        extra=[EVENT, ("Subscription-State", "active")],
        body=SUMMARY,
        content_type=SUMMARY_TYPE,
    )
    refer = env.trunk.new_request("REFER", env.did_uri(ALICE_DID), extra=[("Refer-To", "<sip:x>")])
    probe = env.trunk.new_request("OPTIONS", "sip:127.0.0.1:5060")
    for agent, request in [
        (env.alice, new_subscribe),
        (env.alice, message),
        (env.alice, publish),
        (env.trunk, notify),
        (env.trunk, refer),
        (env.trunk, probe),
    ]:
        assert_refused_draining(await (await agent.send(request)).final())
    assert await next_within(env.alice, "NOTIFY", 1) is None  # the trunk's NOTIFY went nowhere
    assert len(voicemail.subscribes) == 2  # no new subscription reached the voicemail trunk
    assert env.gateway.endpoint.statistics.rejected_draining == refused_before + 7

    # The subscription is gone at the phone: its refresh finds nothing. The trunk's side waits
    # for its final NOTIFY (RFC 6665 §4.1.2.3): its NOTIFYs until then are answered 200, not
    # relayed (alice has had her final one); after the final one, nothing is left (481).
    refresh = subscription.create_request(
        "SUBSCRIBE",
        via=env.alice.new_via(),
        contact=env.alice.contact,
        extra=[EVENT, ("Expires", "900")],
    )
    assert (await (await env.alice.send(refresh, GW)).final()).status == 481
    assert (await voicemail.notify()).status == 200
    assert (await voicemail.notify("terminated;reason=timeout")).status == 200
    assert await next_within(env.alice, "NOTIFY", 1) is None
    assert (await voicemail.notify()).status == 481

    # The call still ringing: its CANCEL is served (200, then 487 to the INVITE).
    cancelled = await call.cancel()
    assert (await cancelled.final()).status == 200
    assert (await call.final()).status == 487

    # Removing the registration is served (digest first), so that no node calls it later.
    assert (await env.alice.register(expires=0)).status == 200
    assert not env.gateway.store.registrations_for(  # type: ignore[union-attr]
        "sip:alice@127.0.0.1:5060"
    )
    with trio.fail_after(5):
        await drained.wait()  # the subscription is no call: nothing else to wait for


async def test_an_emergency_callers_re_register_is_refused_during_the_drain(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Its call goes on (it lives in its dialog, not the registration); the phone is to
    register with another node, where a callback can reach it once this one stops."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, carrier=CARRIER)
    emergency = await env.alice.invite("sip:112@127.0.0.1:5060")
    assert (await emergency.final()).status == 407
    await emergency.authenticate()
    assert (await emergency.final()).status == 200
    drained = await start_drain(nursery, env, timeout=10)
    assert_refused_draining(await env.alice.register())
    await trio.sleep(60)
    assert env.calls == 1 and not drained.is_set()
    assert (await emergency.reinvite(env.alice.offer_sdp())).status == 200
    assert (await emergency.bye()).status == 200
    with trio.fail_after(5):
        await drained.wait()
