"""PIDF documents from the network (RFC 3863) and the publication table of the presence
compositor (RFC 3903 §6), with float time."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from gateway.core.sip.errors import RemoteSipError
from gateway.core.sip.presence import (
    MAX_DOCUMENT,
    MAX_TUPLES,
    Pidf,
    Publication,
    Publications,
    Published,
    Refused,
    closed_document,
    parse_pidf_untrusted,
)


def pidf(basic: str = "open", entity: str = "sip:alice@example.com", tuples: int = 1) -> bytes:
    items = "".join(
        f'<tuple id="t{i}"><status><basic>{basic}</basic></status></tuple>' for i in range(tuples)
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="urn:ietf:params:xml:ns:pidf" '
        f'entity="{entity}">{items}</presence>'
    ).encode()


def test_a_document_is_kept_as_published_with_its_status() -> None:
    assert parse_pidf_untrusted(pidf(), account="alice") == Pidf(pidf(), True, True)
    assert not parse_pidf_untrusted(pidf("closed"), account="alice").open
    assert parse_pidf_untrusted(pidf(entity="pres:alice@example.com"), account="alice").open
    # Extensions (RPID) are carried; a tuple without <basic> says nothing about open.
    rpid = pidf().replace(b"<tuple", b'<note xml:lang="en">lunch</note><tuple', 1)
    assert parse_pidf_untrusted(rpid, account="alice").body == rpid
    bare = pidf().replace(b"<basic>open</basic>", b"")
    assert not parse_pidf_untrusted(bare, account="alice").open
    assert not parse_pidf_untrusted(bare, account="alice").definite
    # baresip 1.0 publishes "unknown" before a status is set: kept, not open, says nothing.
    unknown = parse_pidf_untrusted(pidf("unknown"), account="alice")
    assert not unknown.open and not unknown.definite


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<presence", "not well-formed"),
        (b"\xff\xfe", "not UTF-8"),
        (b"x" * (MAX_DOCUMENT + 1), f"over {MAX_DOCUMENT} octets"),
        (
            b'<!DOCTYPE p [<!ENTITY a "aaaa">]><presence xmlns="urn:ietf:params:xml:ns:pidf"/>',
            "a DTD is not accepted",
        ),
        (b"<presence/>", "not a PIDF presence document"),
        (pidf(tuples=MAX_TUPLES + 1), f"more than {MAX_TUPLES} tuples"),
        (pidf("Open!"), "malformed basic status"),
        (pidf().replace(b' id="t0"', b""), "without id or status"),
    ],
)
def test_bad_documents_are_400_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(RemoteSipError) as caught:
        parse_pidf_untrusted(body, account="alice")
    assert caught.value.status == 400 and reason in caught.value.reason


@pytest.mark.parametrize("entity", ["sip:bob@example.com", "alice", "sip:example.com", ""])
def test_an_account_publishes_for_itself_only(entity: str) -> None:
    with pytest.raises(RemoteSipError) as caught:
        parse_pidf_untrusted(pidf(entity=entity), account="alice")
    assert caught.value.status == 403


def test_the_neutral_document_is_closed() -> None:
    body = closed_document("sip:alice@example.com")
    assert not parse_pidf_untrusted(body, account="alice").open
    root = ET.fromstring(body)
    assert root.get("entity") == "sip:alice@example.com"


OPEN = Pidf(b"open", True)
CLOSED = Pidf(b"closed", False)


def publish(
    table: Publications,
    now: float,
    *,
    etag: str,
    if_match: str | None = None,
    expires: int = 600,
    document: Pidf | None = None,
    account: str = "alice",
) -> Published | Refused:
    return table.publish(
        account, if_match=if_match, expires=expires, document=document, new_etag=etag, now=now
    )


def test_initial_refresh_modify_remove() -> None:
    table = Publications()
    assert publish(table, 0.0, etag="e1", document=CLOSED) == Published("e1", 600, True)
    assert table.document("alice") is CLOSED
    # A refresh (no body): a new tag, the same document, nothing for watchers.
    assert publish(table, 100.5, etag="e2", if_match="e1") == Published("e2", 600, False)
    assert table.get_timer() == 700.5
    # The old tag no longer matches (RFC 3903 §6 step 7).
    assert publish(table, 101.0, etag="e3", if_match="e1", document=OPEN) == Refused(412)
    assert publish(table, 101.0, etag="e3", if_match="e2", document=OPEN) == Published(
        "e3", 600, True
    )
    assert table.document("alice") is OPEN
    assert publish(table, 102.0, etag="e4", if_match="e3", expires=0) == Published(None, 0, True)
    assert table.document("alice") is None and len(table) == 0 and table.get_timer() is None


def test_expires_bounds_and_bodiless_initial() -> None:
    table = Publications()
    assert publish(table, 0.0, etag="e1", document=OPEN, expires=30) == Refused(423, min_expires=60)
    assert publish(table, 0.0, etag="e1", document=OPEN, expires=99_999) == Published(
        "e1", 3600, True
    )
    refused = publish(table, 0.0, etag="e2")
    assert isinstance(refused, Refused) and refused.status == 400
    assert publish(table, 0.0, etag="e2", document=OPEN, expires=0) == Published(None, 0, False)
    assert len(table) == 1


def test_another_accounts_tag_and_an_expired_one_are_412() -> None:
    table = Publications()
    publish(table, 0.0, etag="e1", document=OPEN)
    assert publish(table, 1.0, etag="e2", if_match="e1", account="bob") == Refused(412)
    assert publish(table, 1.0, etag="e2", if_match="x" * 100) == Refused(412)
    # Not yet collected by the timer, but past its time: no match.
    assert publish(table, 600.0, etag="e2", if_match="e1") == Refused(412)
    assert table.handle_timer(now=599.9) == set()
    assert table.handle_timer(now=600.0) == {"alice"}
    assert table.document("alice") is None


def test_composition_the_latest_published_one_wins() -> None:
    table = Publications(max_per_account=2)
    publish(table, 0.0, etag="desk", document=OPEN)
    # A softphone set to closed later: closed shows (the user's latest action).
    assert publish(table, 1.0, etag="soft", document=CLOSED) == Published("soft", 600, True)
    assert table.document("alice") is CLOSED
    # The desk phone's refresh changes nothing; its modification does.
    assert publish(table, 2.0, etag="desk2", if_match="desk") == Published("desk2", 600, False)
    newer = Pidf(b"newer", True)
    assert publish(table, 3.0, etag="desk3", if_match="desk2", document=newer).changed
    assert table.document("alice") is newer
    # Past max_per_account the one expiring first (the softphone's, never refreshed) goes.
    publish(table, 4.0, etag="third", document=CLOSED)
    assert publish(table, 5.0, etag="x", if_match="soft") == Refused(412)
    assert len(table) == 2 and table.document("alice") is CLOSED
    # The newest expires first: the one before it shows again.
    publish(table, 6.0, etag="third2", if_match="third", expires=60)
    assert table.handle_timer(now=66.0) == {"alice"}
    assert table.document("alice") is newer


def test_a_document_saying_nothing_never_hides_one_that_does() -> None:
    # baresip 1.0 races itself: "unknown" at start and "open" on registering, either first.
    table = Publications()
    unknown = Pidf(b"unknown", False, definite=False)
    publish(table, 0.0, etag="a", document=OPEN)
    assert publish(table, 0.1, etag="b", document=unknown) == Published("b", 600, False)
    assert table.document("alice") is OPEN
    publish(table, 1.0, etag="c", if_match="a", document=CLOSED)
    assert table.document("alice") is CLOSED
    publish(table, 2.0, etag="d", if_match="c", expires=0)
    assert table.document("alice") is unknown  # only when nothing else is left


def test_the_total_is_bounded() -> None:
    table = Publications(limit=2)
    publish(table, 0.0, etag="a", document=OPEN, account="a")
    publish(table, 0.0, etag="b", document=OPEN, account="b")
    refused = publish(table, 0.0, etag="c", document=OPEN, account="c")
    assert isinstance(refused, Refused) and refused.status == 503


def stored(etag: str, document: Pidf = OPEN, expires_at: float = 600.0, at: float = 0.0) -> Any:
    """A publication as read from the shared store (saved under its own tag)."""
    return Publication("alice", etag, document, expires_at, at, saved_etag=etag)


def test_an_outcome_names_what_the_store_must_change() -> None:
    """The caller writes a PUBLISH's outcome to the shared store: the publication made or
    changed (its saved tag still the one the store has) and those dropped."""
    table = Publications(max_per_account=1)
    made = publish(table, 0.0, etag="e1", document=OPEN)
    assert isinstance(made, Published) and made.publication is not None
    assert made.publication.etag == "e1" and made.publication.saved_etag is None
    made.publication.saved_etag = "e1"  # the caller saved it
    refreshed = publish(table, 1.0, etag="e2", if_match="e1")
    assert isinstance(refreshed, Published) and refreshed.publication is made.publication
    assert (made.publication.etag, made.publication.saved_etag) == ("e2", "e1")
    replacing = publish(table, 2.0, etag="e3", document=CLOSED)  # past max_per_account
    assert isinstance(replacing, Published) and replacing.dropped == (made.publication,)
    removed = publish(table, 3.0, etag="e4", if_match="e3", expires=0)
    assert isinstance(removed, Published) and removed.publication is None
    assert [p.etag for p in removed.dropped] == ["e3"]


def test_reconcile_takes_what_other_nodes_published_and_keeps_what_it_could_not_save() -> None:
    table = Publications()
    # Another node's publication: taken; the document watchers see changed.
    assert table.reconcile("alice", [stored("a1", OPEN)], now=1.0)
    assert table.document("alice") is not None and table.document("alice").body == b"open"
    assert table.find("alice", "a1", now=1.0) is not None and table.taken == 1
    # The same again (the next poll): nothing changes.
    assert not table.reconcile("alice", [stored("a1", OPEN)], now=2.0)
    assert table.taken == 1
    # Refreshed there (a new tag, the same document): replaced, watchers see no change.
    assert not table.reconcile("alice", [stored("a2", Pidf(b"open", True), 900.0)], now=3.0)
    assert table.find("alice", "a1", now=3.0) is None
    assert table.find("alice", "a2", now=3.0) is not None
    # A publication of this node that the store could not take (saved_etag None) stays.
    local = publish(table, 4.0, etag="mine", document=CLOSED)
    assert isinstance(local, Published)
    assert table.document("alice") is CLOSED  # the latest published
    assert not table.reconcile("alice", [stored("a2", Pidf(b"open", True), 900.0)], now=5.0)
    assert table.find("alice", "mine", now=5.0) is not None
    # Removed there: gone here too, and the document changes to what is left.
    assert not table.reconcile("alice", [], now=6.0)  # CLOSED (mine) was and is shown
    assert table.find("alice", "a2", now=6.0) is None and len(table) == 1
    # Expired rows are not taken; more than max_per_account: those expiring first go.
    assert not table.reconcile("alice", [stored("old", OPEN, expires_at=6.0)], now=6.0)
    many = [stored(f"m{n}", OPEN, expires_at=100.0 + n, at=7.0) for n in range(5)]
    assert table.reconcile("alice", many, now=7.0)
    assert len(table) == 4 and table.find("alice", "mine", now=7.0) is not None  # at 604
    assert [table.find("alice", f"m{n}", now=7.0) is None for n in range(5)] == [
        True,
        True,
        False,
        False,
        False,
    ]


def test_reconcile_respects_the_table_limit_and_other_accounts() -> None:
    table = Publications(limit=1)
    publish(table, 0.0, etag="b1", document=OPEN, account="bob")
    assert not table.reconcile("alice", [stored("a1")], now=1.0)  # full: not taken
    assert table.document("alice") is None
    other = Publication("bob", "b9", OPEN, 600.0, 0.0, saved_etag="b9")
    assert not Publications().reconcile("alice", [other], now=1.0)  # not alice's


def test_due_names_the_accounts_whose_saved_publications_ran_out() -> None:
    table = Publications()
    table.reconcile("alice", [stored("a1", expires_at=10.0)], now=0.0)
    publish(table, 0.0, etag="b1", document=OPEN, account="bob", expires=60)  # not saved
    assert table.due(now=9.0) == []
    assert table.due(now=10.0) == ["alice"]
    assert table.due(now=100.0) == ["alice"]  # bob's was never saved: nothing to look up
