"""The dialog event package watcher and documents of the in-memory dialog event tests: moved here
from test_dialog_events_memory.py so that no test module imports another."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from gateway.core.ids import SeededIds
from gateway.core.sip.dialog import Dialog
from gateway.core.sip.message import Request
from gateway.testing.sip_agent import AutoAnswer, SipAgent
from tests.component.calls.b2bua_env import (
    GW,
    B2bua,
    start_b2bua,
)

NS = "{urn:ietf:params:xml:ns:dialog-info}"
BOB: tuple[str, int] = ("127.0.0.4", 5060)
OFFICE = {"name": "office", "accounts": ["alice", "bob"]}


@attrs.frozen
class Doc:
    version: int
    entity: str
    dialogs: tuple[tuple[str, str, str], ...]  # (id, direction, state)
    identities: tuple[str, ...]


def doc(request: Request) -> Doc:
    assert request.content_type == "application/dialog-info+xml"
    root = ET.fromstring(request.body)
    assert root.tag == f"{NS}dialog-info" and root.get("state") == "full"
    dialogs = tuple(
        (d.get("id") or "", d.get("direction") or "", d.findtext(f"{NS}state") or "")
        for d in root.findall(f"{NS}dialog")
    )
    identities = tuple(i.text or "" for i in root.iter(f"{NS}identity"))
    return Doc(int(root.get("version") or "-1"), root.get("entity") or "", dialogs, identities)


async def start(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    groups: Sequence[Mapping[str, Any]] = (OFFICE,),
    **kwargs: Any,
) -> tuple[B2bua, SipAgent]:
    env = await start_b2bua(nursery, tmp_path, seed, dialog_watch_groups=groups, **kwargs)
    bob = SipAgent(
        env.network,
        BOB,
        ids=SeededIds(seed + 3),
        user="bob",
        password="bob-password-1",
        proxy=GW,
        auto=AutoAnswer(ring=True, status=None),
        media_port=31000,
    )
    await nursery.start(bob.serve)
    assert (await bob.register()).status == 200
    return env, bob


def subscribe_request(
    phone: SipAgent, target: str = "alice", *, expires: int = 600, event: str = "dialog"
) -> Request:
    return phone.new_request(
        "SUBSCRIBE",
        f"sip:{target}@127.0.0.1:5060",
        extra=[
            ("Event", event),
            ("Expires", str(expires)),
            ("Accept", "application/dialog-info+xml"),
        ],
    )


async def watch(phone: SipAgent, target: str = "alice", *, expires: int = 600) -> Dialog:
    sent, final = await phone.send_authenticated(subscribe_request(phone, target, expires=expires))
    assert final.status == 200, final.reason
    assert final.headers.get("Expires") == str(expires)
    dialog = Dialog.create_uac(sent, final)
    phone.add_dialog(dialog)
    return dialog


async def next_doc(phone: SipAgent, timeout: float = 10) -> tuple[Request, Doc]:
    notify = (await phone.next_request("NOTIFY", timeout=timeout)).request
    return notify, doc(notify)
