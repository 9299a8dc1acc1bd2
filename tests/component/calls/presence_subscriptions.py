"""The PIDF documents, PUBLISH and SUBSCRIBE steps of the in-memory presence tests: moved here from
test_presence_memory.py so that no test module imports another."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from gateway.core.ids import SeededIds
from gateway.core.sip.dialog import Dialog
from gateway.core.sip.message import Request, Response
from gateway.testing.sip_agent import AutoAnswer, SipAgent
from tests.component.calls.b2bua_env import GW, B2bua, start_b2bua

NS = "{urn:ietf:params:xml:ns:pidf}"
BOB: tuple[str, int] = ("127.0.0.4", 5060)
OFFICE = {"name": "office", "accounts": ["alice", "bob"]}
ALICE_URI = "sip:alice@127.0.0.1:5060"


def pidf(basic: str, entity: str = ALICE_URI, note: str = "") -> bytes:
    return (
        f'<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" entity="{entity}">'
        f'<tuple id="desk"><status><basic>{basic}</basic></status>'
        f"<note>{note}</note></tuple></presence>"
    ).encode()


async def start(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    *,
    allow: str = "same-group",
    groups: Sequence[Mapping[str, Any]] = (OFFICE,),
    from_registration: bool | None = False,
) -> tuple[B2bua, SipAgent]:
    """alice registered, bob registered and ready to subscribe. ``from_registration`` is off
    unless asked (these tests are about publications; None: the default, on)."""
    presence: dict[str, Any] = {"allow": allow}
    if from_registration is not None:
        presence["from_registration"] = from_registration
    env = await start_b2bua(nursery, tmp_path, seed, dialog_watch_groups=groups, presence=presence)
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


def subscribe_request(phone: SipAgent, target: str = "alice", *, expires: int = 600) -> Request:
    return phone.new_request(
        "SUBSCRIBE",
        f"sip:{target}@127.0.0.1:5060",
        extra=[
            ("Event", "presence"),
            ("Expires", str(expires)),
            ("Accept", "application/pidf+xml"),
        ],
    )


async def subscribe(phone: SipAgent, target: str = "alice", *, expires: int = 600) -> Dialog:
    sent, final = await phone.send_authenticated(subscribe_request(phone, target, expires=expires))
    assert final.status == 200, final.reason
    assert final.headers.get("Expires") == str(expires)
    dialog = Dialog.create_uac(sent, final)
    phone.add_dialog(dialog)
    return dialog


def publish_request(
    phone: SipAgent,
    body: bytes | None,
    *,
    etag: str | None = None,
    expires: int = 600,
    target: str = "alice",
    event: str = "presence",
    content_type: str = "application/pidf+xml",
) -> Request:
    extra = [("Event", event), ("Expires", str(expires))]
    if etag is not None:
        extra.append(("SIP-If-Match", etag))
    return phone.new_request(
        "PUBLISH",
        f"sip:{target}@127.0.0.1:5060",
        extra=extra,
        body=body or b"",
        content_type=content_type if body else None,
    )


async def publish(phone: SipAgent, body: bytes | None, **kwargs: Any) -> Response:
    return (await phone.send_authenticated(publish_request(phone, body, **kwargs)))[1]


async def next_document(phone: SipAgent, timeout: float = 10) -> tuple[Request, ET.Element]:
    notify = (await phone.next_request("NOTIFY", timeout=timeout)).request
    assert notify.headers.get("Event") == "presence"
    assert notify.content_type == "application/pidf+xml"
    return notify, ET.fromstring(notify.body)


def basic(document: ET.Element) -> list[str]:
    return [b.text or "" for b in document.iter(f"{NS}basic")]


def follow_virtual_time(env: B2bua) -> None:
    """Stamp bindings and stored publications with a wall clock that follows virtual time (in
    production both clocks advance together; the store keeps wall-clock expiries)."""
    registration = env.gateway.registration
    assert registration is not None
    offset = time.time() - trio.current_time()
    registration.clock = lambda: offset + trio.current_time()
