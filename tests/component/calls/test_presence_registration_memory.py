"""Presence from registration (``[presence] from_registration``, on by default) and the end of
subscriptions when the gateway drains or stops, on the in-memory network in virtual time: bob
(a phone at 127.0.0.4) watches alice, whose phone (127.0.0.3) registers and never PUBLISHes
unless a test says so."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import trio

from gateway.core.calls.presence import REGISTRATION_POLL
from gateway.core.ids import SeededIds
from gateway.core.sip.dialog import Dialog
from gateway.core.store.interface import Binding, BindingFlow
from gateway.testing.sip_agent import AutoAnswer, SipAgent
from tests.component.calls.b2bua_env import (
    ALICE,
    ALICE_DID,
    GW,
    B2bua,
    eventually,
    next_within,
)
from tests.component.calls.presence_subscriptions import (
    basic,
    next_document,
    pidf,
    publish,
    start,
    subscribe,
    subscribe_request,
)

DEAD: tuple[str, int] = ("127.0.0.5", 5060)
ALICE_AOR = "sip:alice@127.0.0.1:5060"


def gateway_tuple(document: ET.Element) -> bool:
    """Whether the document is the gateway's own (one tuple ``gw``), not a phone's."""
    return [t.get("id") for t in document.iter("{urn:ietf:params:xml:ns:pidf}tuple")] == ["gw"]


def presence_count(env: B2bua) -> int:
    assert env.gateway.dialog_events is not None
    return env.gateway.dialog_events.presence_subscriptions


async def test_registered_is_open_unregistered_closed_publication_wins(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, from_registration=None)
    await subscribe(bob)
    # alice registered (b2bua_env) and published nothing: open, the gateway's document.
    _, document = await next_document(bob)
    assert basic(document) == ["open"] and gateway_tuple(document)
    # A refresh of her registration changes nothing a watcher sees: no NOTIFY.
    assert (await env.alice.register()).status == 200
    assert await next_within(bob, "NOTIFY", 5) is None
    # Her un-REGISTER (Expires: 0) takes her last binding: closed.
    assert (await env.alice.register(expires=0)).status == 200
    _, document = await next_document(bob)
    assert basic(document) == ["closed"] and gateway_tuple(document)
    assert (await env.alice.register()).status == 200
    _, document = await next_document(bob)
    assert basic(document) == ["open"]

    # Her phone's own word wins while it is valid: closed although registered.
    published = await publish(env.alice, pidf("closed", note="do not disturb"))
    assert published.status == 200
    notify, _ = await next_document(bob)
    assert notify.body == pidf("closed", note="do not disturb")
    # Registration changes under a valid publication: nothing to tell.
    assert (await env.alice.register(expires=0)).status == 200
    assert (await env.alice.register()).status == 200
    assert await next_within(bob, "NOTIFY", 5) is None
    # The publication removed: back to what her registration says.
    removed = await publish(env.alice, None, etag=published.headers.get("SIP-ETag"), expires=0)
    assert removed.status == 200
    _, document = await next_document(bob)
    assert basic(document) == ["open"] and gateway_tuple(document)


async def test_binding_expiry_closes_at_its_time(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, from_registration=None)
    registration = env.gateway.registration
    assert registration is not None
    # Bindings are stamped with the registrar's wall clock: made to follow virtual time.
    offset = time.time() - trio.current_time()
    registration.clock = lambda: offset + trio.current_time()
    assert (await env.alice.register(expires=60)).status == 200  # replaces her binding
    registered = trio.current_time()
    await subscribe(bob, expires=600)
    _, document = await next_document(bob)
    assert basic(document) == ["open"]
    # Not refreshed: closed when the binding runs out, not a poll later.
    _, document = await next_document(bob, timeout=120)
    assert 59.9 <= trio.current_time() - registered < 61  # stamped as the REGISTER came
    assert basic(document) == ["closed"]


async def test_the_store_seen_by_a_poll_other_node_or_cli(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A binding another node of the cluster writes to the shared store (or removes: its
    un-REGISTER, ``voipgw accounts remove``, a revoked certificate) reaches this node's watchers
    within :data:`REGISTRATION_POLL` seconds."""
    env, bob = await start(nursery, tmp_path, voipgw_seed, from_registration=None)
    store = env.gateway.store
    assert store is not None
    (binding,) = store.bindings_for_account("alice", now=time.time())
    store.remove_binding(binding.aor, binding.key)  # as another node would: not told here
    await subscribe(bob)
    _, document = await next_document(bob)
    assert basic(document) == ["closed"]  # looked up at the first subscription

    elsewhere = Binding(
        aor=ALICE_AOR,
        key="sip:alice@192.0.2.7:5060",
        account="alice",
        contact="sip:alice@192.0.2.7:5060",
        expires_at=time.time() + 600,
        call_id="other-node",
        cseq=1,
        flow=BindingFlow("udp", "192.0.2.1:5060", "192.0.2.7:5060"),
    )
    store.upsert_binding(elsewhere)
    written = trio.current_time()
    _, document = await next_document(bob, timeout=2 * REGISTRATION_POLL)
    assert trio.current_time() - written <= REGISTRATION_POLL + 1
    assert basic(document) == ["open"]
    store.remove_binding(elsewhere.aor, elsewhere.key)
    written = trio.current_time()
    _, document = await next_document(bob, timeout=2 * REGISTRATION_POLL)
    assert trio.current_time() - written <= REGISTRATION_POLL + 1
    assert basic(document) == ["closed"]
    # The last watcher gone (the gateway stops), the account is no longer followed.
    assert env.gateway.dialog_events is not None
    assert env.gateway.dialog_events.registrations is not None
    assert "alice" in env.gateway.dialog_events.registrations
    await env.gateway.before_stop()
    await eventually(lambda: presence_count(env) == 0)
    assert "alice" not in env.gateway.dialog_events.registrations


async def test_registered_under_another_address_of_record_stays_open(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """An account is registered while any of its bindings lives, whatever the AOR (another of
    our domains): un-REGISTERing one AOR leaves it open."""
    env, bob = await start(nursery, tmp_path, voipgw_seed, from_registration=None)
    store = env.gateway.store
    assert store is not None
    other = Binding(
        aor="sip:alice@voip.example",
        key="sip:alice@192.0.2.8:5060",
        account="alice",
        contact="sip:alice@192.0.2.8:5060",
        expires_at=time.time() + 600,
        call_id="desk-phone",
        cseq=1,
        flow=BindingFlow("udp", "127.0.0.1:5060", "192.0.2.8:5060"),
    )
    store.upsert_binding(other)
    await subscribe(bob)
    _, document = await next_document(bob)
    assert basic(document) == ["open"]
    assert (await env.alice.register(expires=0)).status == 200
    assert await next_within(bob, "NOTIFY", 2 * REGISTRATION_POLL) is None
    store.remove_binding(other.aor, other.key)
    _, document = await next_document(bob, timeout=2 * REGISTRATION_POLL)
    assert basic(document) == ["closed"]


async def test_a_revoked_certificate_closes_at_once(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The bindings over a flow whose certificate a reloaded CRL revoked are removed; the
    watchers are told then, not at the next look at the store."""
    env, bob = await start(nursery, tmp_path, voipgw_seed, from_registration=None)
    await subscribe(bob)
    _, document = await next_document(bob)
    assert basic(document) == ["open"]
    flow = env.gateway.flows.find("udp", ALICE)
    assert flow is not None
    revoked = trio.current_time()
    await env.gateway.flow_revoked(flow, "certificate revoked")
    _, document = await next_document(bob, timeout=REGISTRATION_POLL)
    assert trio.current_time() - revoked < 0.5
    assert basic(document) == ["closed"]


async def test_off_registration_is_not_looked_at(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, from_registration=False)
    assert env.gateway.dialog_events is not None
    assert env.gateway.dialog_events.registrations is None
    await subscribe(bob)
    _, document = await next_document(bob)
    assert basic(document) == ["closed"]  # registered, but that is not presence here


async def test_drain_ends_subscriptions_deactivated_bounded(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A drain ends presence and BLF subscriptions at once, with ``deactivated`` (RFC 6665
    §4.2.2: subscribe again at once, which reaches another node), while a call goes on; a
    subscriber that answers nothing does not hold the others, nor the drain, past 2 s."""
    env, bob = await start(nursery, tmp_path, voipgw_seed, from_registration=None)
    dead = SipAgent(
        env.network,
        DEAD,
        ids=SeededIds(voipgw_seed + 9),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        auto=AutoAnswer(ring=True, status=None),
        media_port=31002,
    )
    await nursery.start(dead.serve)
    await subscribe(bob)
    await next_document(bob)
    await subscribe(dead)
    await next_document(dead)
    dialog_watch = bob.new_request(
        "SUBSCRIBE", ALICE_AOR, extra=[("Event", "dialog"), ("Expires", "600")]
    )
    sent, final = await bob.send_authenticated(dialog_watch)
    assert final.status == 200
    bob.add_dialog(Dialog.create_uac(sent, final))
    await bob.next_request("NOTIFY")
    call = await env.trunk.invite(env.did_uri(ALICE_DID))
    assert (await call.final()).status == 200
    await bob.next_request("NOTIFY")  # the call, confirmed, on the BLF
    env.network.set_link(GW, DEAD, drop=1.0)  # the dead phone hears nothing more

    draining = trio.Event()

    async def drain() -> None:
        await env.gateway.drain(3600)
        draining.set()

    started = trio.current_time()
    nursery.start_soon(drain)
    finals: dict[str | None, str | None] = {}
    for _ in range(2):
        notify = (await bob.next_request("NOTIFY", timeout=3)).request
        finals[notify.headers.get("Event")] = notify.headers.get("Subscription-State")
    assert finals == {
        "presence": "terminated;reason=deactivated",
        "dialog": "terminated;reason=deactivated",
    }
    assert trio.current_time() - started < 1
    # Bounded: 2 s for the dead phone's NOTIFY, then they are gone; the call goes on.
    await eventually(lambda: presence_count(env) == 0, timeout=3)
    assert trio.current_time() - started <= 2.5
    assert env.calls == 1 and not draining.is_set()
    assert env.gateway.dialog_events is not None and len(env.gateway.dialog_events) == 0
    again = (await bob.send_authenticated(subscribe_request(bob)))[1]
    assert again.status == 503
    await call.bye()
    with trio.fail_after(5):
        await draining.wait()
