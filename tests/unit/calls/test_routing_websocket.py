"""Contacts registered over WebSocket (RFC 7118 §5): reachable only over their connection.

A browser's Contact names a random ``.invalid`` host; while its connection is open a call goes
down it, once it is closed the binding is skipped (the next contact rings, or the account has
no registered device and the caller gets 480) and nothing is sent towards ``.invalid``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.calls.routing import (
    ContactTarget,
    Destination,
    GatewayDirectory,
    UnroutableTarget,
    _destination_of_uri,
    destination_for,
)
from gateway.core.store.interface import Binding, BindingFlow
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import Flow, FlowKey, FlowTable

NOW = 1_750_000_000.0
LISTENER = ("127.0.0.1", 7443)
BROWSER = ("198.51.100.20", 52000)
WS_CONTACT = "sip:alice@df7jal23ls0d.invalid;transport=ws"
UDP_CONTACT = "sip:alice@198.51.100.30:5060"


async def _send(data: bytes) -> None:
    raise AssertionError("routing never sends")


def binding(contact: str, flow: BindingFlow) -> Binding:
    return Binding(
        aor="sip:alice@127.0.0.1",
        key=contact,
        account="alice",
        contact=contact,
        expires_at=NOW + 600,
        call_id=f"reg-{contact}",
        cseq=1,
        flow=flow,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore.open(tmp_path)
    s.accounts_add("alice", "pw", "voipgw.local")
    s.upsert_binding(
        binding(WS_CONTACT, BindingFlow("wss", "127.0.0.1:7443", "198.51.100.20:52000"))
    )
    yield s
    s.close()


def directory(store: SqliteStore, flows: FlowTable) -> GatewayDirectory:
    return GatewayDirectory(store, flows, (), frozenset({"127.0.0.1"}), now=lambda: NOW)


def test_an_open_websocket_carries_the_call(store: SqliteStore) -> None:
    flows = FlowTable()
    flow = Flow(FlowKey("wss", LISTENER, BROWSER), _send, reliable=True, secure=True)
    flows.add(flow)
    (target,) = directory(store, flows).contacts("alice")
    assert target.flow is flow
    assert destination_for(target) == Destination("wss", *BROWSER, flow)


def test_a_closed_websocket_leaves_no_target(store: SqliteStore) -> None:
    assert directory(store, FlowTable()).contacts("alice") == ()


def test_other_contacts_still_ring_when_the_websocket_is_gone(store: SqliteStore) -> None:
    store.upsert_binding(
        binding(UDP_CONTACT, BindingFlow("udp", "127.0.0.1:5060", "198.51.100.30:5060"))
    )
    targets = directory(store, FlowTable()).contacts("alice")
    assert [t.uri for t in targets] == [UDP_CONTACT]
    assert all(isinstance(t, ContactTarget) for t in targets)


def test_sips_goes_with_wss_and_is_refused_over_ws() -> None:
    # RFC 7118 §5 with RFC 5630: sips means TLS all the way, which wss is and ws is not.
    assert _destination_of_uri("sips:alice@192.0.2.1:7443;transport=wss").transport == "wss"
    with pytest.raises(UnroutableTarget):
        _destination_of_uri("sips:alice@192.0.2.1:5066;transport=ws")
