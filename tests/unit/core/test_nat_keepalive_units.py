"""Which registered contacts are behind a NAT (gateway/core/nat_keepalive.py is_behind_nat) and
how the keepalive list follows REGISTERs, without a network."""

from __future__ import annotations

import attrs
import pytest

from gateway.core.nat_keepalive import NatKeepalive, is_behind_nat
from gateway.core.store.errors import StoreBusy
from gateway.core.store.interface import Binding, BindingFlow


def binding(
    contact: str, remote: str, *, transport: str = "udp", path: tuple[str, ...] = ()
) -> Binding:
    return Binding(
        aor="sip:bob@example.com",
        key=contact,
        account="bob",
        contact=contact,
        expires_at=1e12,
        call_id="c",
        cseq=1,
        flow=BindingFlow(transport, "192.0.2.1:5060", remote),
        path=path,
    )


@pytest.mark.parametrize(
    ("contact", "remote", "transport", "path", "behind"),
    [
        ("sip:bob@10.0.0.7:5060", "203.0.113.9:40112", "udp", (), True),  # NAT rewrote the source
        ("sip:bob@10.0.0.7", "203.0.113.9:5060", "udp", (), True),  # host differs, default port
        ("sip:bob@203.0.113.9:5062", "203.0.113.9:5062", "udp", (), False),  # public phone
        ("sip:bob@203.0.113.9", "203.0.113.9:5060", "udp", (), False),  # 5060 implied
        ("sip:bob@[2001:db8::7]:5060", "[2001:db8::7]:5060", "udp", (), False),
        ("sip:bob@[2001:db8::7]", "[2001:db8::9]:5060", "udp", (), True),
        ("sip:bob@10.0.0.7:5060", "203.0.113.9:40112", "tcp", (), False),  # its connection
        ("sip:bob@10.0.0.7:5060", "203.0.113.9:40112", "udp", ("<sip:edge;lr>",), False),
        ("tel:+4930123", "203.0.113.9:40112", "udp", (), False),
        ("sip:bob@10.0.0.7:notaport", "203.0.113.9:40112", "udp", (), False),
    ],
)
def test_behind_nat(
    contact: str, remote: str, transport: str, path: tuple[str, ...], behind: bool
) -> None:
    assert is_behind_nat(binding(contact, remote, transport=transport, path=path)) is behind


def test_the_list_follows_each_register_of_an_aor() -> None:
    keepalive = NatKeepalive(
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        interval=30,
        t1=0.5,
        user_agent="voipgw",
        clock=lambda: 0.0,
    )
    natted = binding("sip:bob@10.0.0.7:5060", "203.0.113.9:40112")
    public = binding("sip:bob@203.0.113.9:5062", "203.0.113.9:5062")
    keepalive.registered("sip:bob@example.com", [natted, public])
    assert list(keepalive.contacts.values()) == [natted]
    keepalive.registered("sip:bob@example.com", [])  # unregistered
    assert keepalive.contacts == {}
    keepalive.load([natted, public])
    assert list(keepalive.contacts) == [("sip:bob@example.com", natted.key)]
    assert keepalive.answer_limit == 30  # below 64*T1 = 32 s


class FakeStore:
    """What NatKeepalive asks of the store: the AOR's bindings, and a removal."""

    def __init__(self, *bindings: Binding) -> None:
        self.bindings = list(bindings)
        self.removed: list[tuple[str, str]] = []

    def registrations_for(self, aor: str) -> tuple[Binding, ...]:
        return tuple(b for b in self.bindings if b.aor == aor)

    def remove_binding(self, aor: str, key: str) -> bool:
        self.removed.append((aor, key))
        return True


def keepalive_with(store: FakeStore) -> NatKeepalive:
    return NatKeepalive(
        None,  # type: ignore[arg-type]
        store,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        interval=30,
        t1=0.5,
        user_agent="voipgw",
        clock=lambda: 0.0,
    )


def test_a_phone_that_registers_again_is_not_removed_for_its_old_mappings_silence() -> None:
    old = binding("sip:bob@10.0.0.7:5060", "203.0.113.9:40112")
    store = FakeStore(old)
    keepalive = keepalive_with(store)
    keepalive.registered(old.aor, [old])
    key = (old.aor, old.key)
    keepalive._count(key, old, answered=False)
    keepalive._count(key, old, answered=False)
    assert keepalive.failures == {key: 2}
    # The NAT lost the mapping; the phone registers again from a new one (same key).
    new = attrs.evolve(old, cseq=2, flow=BindingFlow("udp", "192.0.2.1:5060", "203.0.113.9:40999"))
    store.bindings = [new]
    keepalive.registered(new.aor, [new])
    assert keepalive.failures == {}
    keepalive._count(key, old, answered=False)  # the OPTIONS still out to the old mapping
    assert store.removed == [] and keepalive.contacts == {key: new}


def test_a_binding_another_node_registered_anew_is_not_removed() -> None:
    pinged = binding("sip:bob@10.0.0.7:5060", "203.0.113.9:40112")
    store = FakeStore(attrs.evolve(pinged, call_id="other-node", cseq=7))
    keepalive = keepalive_with(store)
    keepalive.registered(pinged.aor, [pinged])
    key = (pinged.aor, pinged.key)
    for _ in range(3):
        keepalive._count(key, pinged, answered=False)
    assert store.removed == [] and keepalive.removed == 0
    assert keepalive.contacts == {} and keepalive.failures == {}  # no longer ours to ping


def test_a_dead_contact_kept_for_a_busy_store_is_logged_without_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # RFC 3261 §19.1.1 deprecates a password in a URI; a phone may still register one.
    dead = binding("sip:bob:s3cret-pw@10.0.0.7:5060", "203.0.113.9:40112")

    class BusyStore(FakeStore):
        def remove_binding(self, aor: str, key: str) -> bool:
            raise StoreBusy("voipgw.sqlite3: another process held the write lock")

    keepalive = keepalive_with(BusyStore(dead))
    keepalive.registered(dead.aor, [dead])
    for _ in range(3):
        keepalive._count((dead.aor, dead.key), dead, answered=False)
    assert "dead contact sip:bob:***@10.0.0.7:5060 kept for now" in caplog.text
    assert "s3cret-pw" not in caplog.text
