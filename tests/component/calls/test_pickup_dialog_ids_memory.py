"""Call pickup from busy lamp fields, the notifier's half: with ``pickup`` in a
``[[dialog_watch_groups]]`` group, the early dialog of a call ringing alice carries the Call-ID
and tags of the gateway's dialog with her ringing phone, as her phone sees it (RFC 4235 §4.1),
from which a BLF phone builds its ``Replaces`` (RFC 3891). In-memory network, virtual time."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import trio

from gateway.testing.sip_agent import AutoAnswer
from tests.component.calls.b2bua_env import ALICE_DID, eventually
from tests.component.calls.test_dialog_events_memory import NS, next_doc, start, watch

PICKUP = {"name": "office", "accounts": ["alice", "bob"], "pickup": True}


async def early_dialog(bob: object) -> ET.Element:
    """The first <dialog> in state early that bob is told of."""
    while True:
        notify, _ = await next_doc(bob)  # type: ignore[arg-type]
        for dialog in ET.fromstring(notify.body).findall(f"{NS}dialog"):
            if dialog.findtext(f"{NS}state") == "early":
                return dialog


async def test_pickup_group_gets_the_ringing_phones_dialog(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=[PICKUP])
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)  # she lets it ring
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID))
    ringing = await env.alice.next_call()
    await incoming.exchange.wait_for(lambda r: r.status == 180)
    dialog = await early_dialog(bob)
    # Alice's phone's view of its dialog with us: its own tag is local, ours remote.
    assert dialog.get("call-id") == ringing.call_id
    assert dialog.get("local-tag") == ringing.local_tag
    assert dialog.get("remote-tag") == ringing.invite.from_.tag
    assert dialog.get("direction") == "recipient"
    # Not the caller's dialog with us (a different Call-ID on each leg of the B2BUA).
    assert dialog.get("call-id") != incoming.call_id
    # RFC 4235 §4.1 schema order: id, call-id, local-tag, remote-tag, direction.
    assert list(dialog.keys()) == ["id", "call-id", "local-tag", "remote-tag", "direction"]
    # Once answered, the tags are gone: only a ringing call can be picked up.
    await ringing.answer()
    while True:
        notify, found = await next_doc(bob)
        if any(state == "confirmed" for _, _, state in found.dialogs):
            break
    assert b"call-id" not in notify.body and b"local-tag" not in notify.body
    await incoming.bye()
    await eventually(lambda: env.calls == 0)


async def test_watch_group_without_pickup_gets_no_ids(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    # bob watches alice in a group without pickup; bob is also in a pickup group with carol:
    # only the group he shares with alice counts.
    groups = [
        {"name": "office", "accounts": ["alice", "bob"], "show_parties": True},
        {"name": "desk", "accounts": ["bob", "carol"], "pickup": True},
    ]
    env, bob = await start(nursery, tmp_path, voipgw_seed, groups=groups)
    await watch(bob)
    await next_doc(bob)
    env.alice.auto = AutoAnswer(ring=True, status=None)
    incoming = await env.trunk.invite(env.did_uri(ALICE_DID))
    ringing = await env.alice.next_call()
    dialog = await early_dialog(bob)
    assert dialog.get("call-id") is None and dialog.get("local-tag") is None
    assert dialog.get("remote-tag") is None and dialog.get("direction") == "recipient"
    notify_bytes = ET.tostring(dialog)
    assert ringing.call_id.encode() not in notify_bytes
    assert ringing.local_tag.encode() not in notify_bytes
    await incoming.cancel()
    await eventually(lambda: env.calls == 0)
