"""The dialog event package's sans-IO parts (gateway/core/sip/dialog_info.py): the RFC 4235 body,
the coalescing of one subscription's documents and its version counter, who may watch whom; and
the call state mapping of gateway/core/calls/dialog_events.py on stand-in calls."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import attrs
import pytest

from gateway.core.calls import dialog_events
from gateway.core.sip.dialog_info import (
    MAX_DIALOGS,
    MAX_WAITING,
    DialogEntry,
    DialogIds,
    Direction,
    Notifications,
    Party,
    Phase,
    WatchRules,
    dialog_info_body,
    full_state,
)

NS = "{urn:ietf:params:xml:ns:dialog-info}"
ALICE = Party("sip:alice@example.com", "Alice")
CALLER = Party("sip:+15550100@example.com", 'Bob "the <builder>" & Co')


def entry(id: str = "d1", phase: Phase = Phase.EARLY, **kwargs: Any) -> DialogEntry:
    return DialogEntry(id, phase, kwargs.pop("direction", Direction.RECIPIENT), **kwargs)


def parse(body: bytes) -> ET.Element:
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    return ET.fromstring(body)


def test_body_is_rfc4235_full_state() -> None:
    body = dialog_info_body(
        "sip:alice@example.com",
        3,
        [
            entry(local=ALICE, remote=CALLER),
            entry("d2", Phase.CONFIRMED, direction=Direction.INITIATOR),
        ],
        show_parties=True,
    )
    root = parse(body)
    assert root.tag == f"{NS}dialog-info"
    assert root.attrib == {"version": "3", "state": "full", "entity": "sip:alice@example.com"}
    first, second = root.findall(f"{NS}dialog")
    assert first.attrib == {"id": "d1", "direction": "recipient"}
    # RFC 4235 §4.1: <state> first, then <local> and <remote> (§4.1.6).
    assert [child.tag for child in first] == [f"{NS}state", f"{NS}local", f"{NS}remote"]
    assert first.findtext(f"{NS}state") == "early"
    remote = first.find(f"{NS}remote/{NS}identity")
    assert remote is not None and remote.text == CALLER.uri
    assert remote.get("display") == CALLER.display  # escaped on the wire, intact when read
    assert b"<builder>" not in body and b"&amp;" in body
    assert second.findtext(f"{NS}state") == "confirmed"
    assert second.get("direction") == "initiator"


def test_without_show_parties_no_identity_leaves() -> None:
    body = dialog_info_body(
        "sip:alice@example.com", 0, [entry(local=ALICE, remote=CALLER)], show_parties=False
    )
    (dialog,) = parse(body).findall(f"{NS}dialog")
    assert [child.tag for child in dialog] == [f"{NS}state"]
    assert b"15550100" not in body and b"Alice" not in body


def test_empty_state_and_characters_xml_cannot_carry() -> None:
    assert parse(dialog_info_body("sip:a@b", 0, [], show_parties=True)).findall(f"{NS}dialog") == []
    nasty = Party("sip:x@example.com", "bell\x07 \x00nul \ud800 ok")
    body = dialog_info_body("sip:a@b", 0, [entry(remote=nasty)], show_parties=True)
    identity = parse(body).find(f".//{NS}remote/{NS}identity")
    assert identity is not None and identity.get("display") == "bell nul  ok"
    long = Party("sip:x@example.com", "x" * 5000)
    body = dialog_info_body("sip:a@b", 0, [entry(remote=long)], show_parties=True)
    assert len(body) < 1000


def test_version_counts_every_document_from_zero() -> None:
    queue = Notifications()
    assert queue.take() is None
    queue.push(())
    queue.push((entry(),))
    assert queue.take() == (0, ())
    assert queue.take() == (1, (entry(),))
    assert queue.take() is None
    queue.push(())
    taken = queue.take()
    assert taken is not None and taken[0] == 2


def test_coalescing_keeps_every_state_a_lamp_shows() -> None:
    queue = Notifications()
    early = (entry(phase=Phase.EARLY),)
    early_with_parties = (entry(phase=Phase.EARLY, remote=CALLER),)
    confirmed = (entry(phase=Phase.CONFIRMED),)
    queue.push(early)
    queue.push(early_with_parties)  # the same states: replaces the waiting one
    queue.push(confirmed)  # a new state: waits behind it
    assert queue.waiting == [early_with_parties, confirmed]
    for n in range(MAX_WAITING * 2):
        queue.push((entry(f"x{n}", Phase.TRYING),))
    assert len(queue.waiting) == MAX_WAITING  # bounded: the newest replaces the last
    assert queue.waiting[-1] == (entry(f"x{MAX_WAITING * 2 - 1}", Phase.TRYING),)


def test_full_state_is_bounded_ringing_first() -> None:
    entries = [entry(f"c{n}", Phase.CONFIRMED) for n in range(MAX_DIALOGS + 3)]
    entries.insert(2, entry("ringing", Phase.EARLY))
    kept = full_state(entries)
    assert len(kept) == MAX_DIALOGS
    assert kept[0].id == "ringing"  # oldest first, the ringing one kept
    assert [e.id for e in kept[1:]] == [f"c{n}" for n in range(4, MAX_DIALOGS + 3)]
    assert full_state(entries[:3]) == tuple(entries[:3])


def test_watch_rules_default_deny() -> None:
    rules = WatchRules.of([(("alice", "bob"), False), (("bob", "carol"), True)])
    assert rules.may_watch("alice", "bob") is False  # allowed, no identities
    assert rules.may_watch("bob", "carol") is True  # allowed, identities
    assert rules.may_watch("alice", "carol") is None  # no group in common
    assert rules.may_watch("dave", "alice") is None
    assert rules.may_watch("dave", "dave") is True  # one's own calls
    both = WatchRules.of([(("alice", "bob"), False), (("alice", "bob"), True)])
    assert both.may_watch("alice", "bob") is True  # any shared group with show_parties


def test_pickup_rules_default_deny() -> None:
    rules = WatchRules.of(
        [(("alice", "bob"), False), (("bob", "carol"), False)], pickup=[("bob", "carol")]
    )
    assert rules.may_pick_up("bob", "carol") and rules.may_pick_up("carol", "bob")
    assert not rules.may_pick_up("alice", "bob")  # watching is not picking up
    assert not rules.may_pick_up("bob", "alice")
    assert rules.may_pick_up("carol", "carol")  # its own call on another phone
    assert not rules.may_pick_up("alice", "alice")  # in no pickup group
    assert not WatchRules.of([(("alice", "bob"), True)]).pickup


IDS = DialogIds("b-leg-call-id@gw", local_tag="phone-tag", remote_tag="our-tag")


def test_pickup_body_carries_the_ringing_dialog() -> None:
    entries = [entry(ids=IDS), entry("d2", Phase.CONFIRMED, ids=IDS)]
    root = parse(
        dialog_info_body("sip:alice@example.com", 0, entries, show_parties=False, pickup=True)
    )
    ringing, answered = root.findall(f"{NS}dialog")
    # RFC 4235 §4.1: the attributes a phone builds its Replaces (RFC 3891) from.
    assert ringing.attrib == {
        "id": "d1",
        "call-id": "b-leg-call-id@gw",
        "local-tag": "phone-tag",
        "remote-tag": "our-tag",
        "direction": "recipient",
    }
    assert answered.attrib == {"id": "d2", "direction": "recipient"}  # only ringing calls
    outgoing = entry(direction=Direction.INITIATOR, ids=IDS)
    body = dialog_info_body("sip:a@b", 0, [outgoing], show_parties=True, pickup=True)
    assert b"call-id" not in body  # the account calls: nothing to pick up


def test_no_pickup_no_call_id_or_tags() -> None:
    body = dialog_info_body("sip:alice@example.com", 0, [entry(ids=IDS)], show_parties=True)
    assert parse(body).find(f"{NS}dialog").attrib == {"id": "d1", "direction": "recipient"}  # type: ignore[union-attr]
    assert b"b-leg-call-id" not in body and b"phone-tag" not in body and b"our-tag" not in body


# -- the call states (dialog_events._phase) on stand-ins ---------------------------------------


@attrs.define
class FakeLeg:
    peer_name: str
    peer_kind: str = "account"
    provisional_seen: bool = False
    finished: bool = False
    invite: Any = None


@attrs.define
class FakeA:
    peer_name: str | None = "alice"
    peer_kind: str = "account"
    invite: Any = None


@attrs.define
class FakeCall:
    a: FakeA = attrs.field(factory=FakeA)
    b_legs: list[FakeLeg] = attrs.field(factory=list)
    b: FakeLeg | None = None
    state: str = "new"


def phase(call: FakeCall, account: str, direction: Direction, kind: str | None) -> Phase:
    return dialog_events._phase(call, account, direction, kind)  # type: ignore[arg-type]


def test_caller_states() -> None:
    call = FakeCall()
    assert phase(call, "alice", Direction.INITIATOR, "started") is Phase.TRYING
    call.b_legs.append(FakeLeg("bob", provisional_seen=True))
    assert phase(call, "alice", Direction.INITIATOR, "ringing") is Phase.EARLY
    call.state, call.b = "answered", call.b_legs[0]
    assert phase(call, "alice", Direction.INITIATOR, "answered") is Phase.CONFIRMED


@pytest.mark.parametrize(
    ("legs", "answered_by", "expected"),
    [
        ([FakeLeg("bob")], None, Phase.TRYING),
        ([FakeLeg("bob", provisional_seen=True)], None, Phase.EARLY),
        ([FakeLeg("bob", provisional_seen=True, finished=True)], None, Phase.TERMINATED),
        ([FakeLeg("bob"), FakeLeg("bob", provisional_seen=True)], None, Phase.EARLY),
        ([FakeLeg("bob")], 0, Phase.CONFIRMED),
        ([FakeLeg("bob"), FakeLeg("carol")], 1, Phase.TERMINATED),  # answered elsewhere
    ],
)
def test_callee_states(legs: list[FakeLeg], answered_by: int | None, expected: Phase) -> None:
    call = FakeCall(b_legs=legs)
    if answered_by is not None:
        call.b, call.state = legs[answered_by], "answered"
    assert phase(call, "bob", Direction.RECIPIENT, "ringing") is expected


def test_parties_involved() -> None:
    call = FakeCall(b_legs=[FakeLeg("bob"), FakeLeg("bob"), FakeLeg("pstn", peer_kind="trunk")])
    found = dialog_events._involved(call)  # type: ignore[arg-type]
    assert found == [("alice", Direction.INITIATOR), ("bob", Direction.RECIPIENT)]
