"""Presence derived from registration, sans-IO: :class:`Registrations` (which watched account
has a live binding, and when to look again) and the gateway's own documents."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from gateway.core.config import ConfigError, from_mapping
from gateway.core.sip.events import STOPPING, parse_subscription_state_untrusted
from gateway.core.sip.presence import (
    Registrations,
    closed_document,
    open_document,
    parse_pidf_untrusted,
)

ENTITY = "sip:alice@example.com"


def test_only_watched_accounts_are_kept() -> None:
    table = Registrations()
    assert not table and "alice" not in table
    # An account nobody watches: a REGISTER of it changes nothing and is not kept.
    assert table.update("alice", [200.0], now=100.0) is False
    assert "alice" not in table and not table.is_open("alice")
    table.watch("alice", [200.0, 150.0], now=100.0)
    assert table and "alice" in table and table.is_open("alice")
    assert table.get_timer() == 200.0  # the latest binding: the account is open until then
    table.forget("alice")
    assert not table and table.get_timer() is None


def test_changes_only_between_open_and_closed() -> None:
    table = Registrations()
    table.watch("alice", [], now=100.0)
    assert not table.is_open("alice") and table.get_timer() is None
    assert table.update("alice", [160.0], now=100.0) is True  # registered
    assert table.update("alice", [260.0], now=150.0) is False  # a refresh: nothing to tell
    assert table.get_timer() == 260.0
    assert table.update("alice", [], now=170.0) is True  # unregistered
    assert table.update("alice", [], now=170.0) is False
    # Expiries already past count as none (a binding the store still lists at its expiry).
    assert table.update("alice", [170.0], now=170.0) is False
    assert not table.is_open("alice")


def test_due_at_expiry_and_postponed_on_a_store_error() -> None:
    table = Registrations()
    table.watch("alice", [160.0], now=100.0)
    table.watch("bob", [300.0], now=100.0)
    table.watch("carol", [], now=100.0)
    assert table.due(now=159.0) == []
    assert table.due(now=160.0) == ["alice"]  # looked up again: refreshed elsewhere, or gone
    table.postpone("alice", 170.0)  # the store could not say: asked again then
    assert table.due(now=160.0) == [] and table.get_timer() == 170.0
    assert table.is_open("alice")
    table.postpone("carol", 170.0)  # not registered: nothing to postpone
    assert not table.is_open("carol")
    assert sorted(table) == ["alice", "bob", "carol"]
    assert len(table) == 3


def test_gateway_documents_are_valid_pidf() -> None:
    for make, basic, is_open in ((open_document, "open", True), (closed_document, "closed", False)):
        body = make(ENTITY)
        root = ET.fromstring(body)
        assert root.get("entity") == ENTITY
        assert [b.text for b in root.iter("{urn:ietf:params:xml:ns:pidf}basic")] == [basic]
        parsed = parse_pidf_untrusted(body, account="alice")  # what a phone could publish
        assert parsed.open is is_open and parsed.definite


def test_stop_state_is_deactivated() -> None:
    # RFC 6665 §4.2.2: "deactivated" (subscribe again at once), no retry-after.
    parsed = parse_subscription_state_untrusted(STOPPING)
    assert parsed.state == "terminated" and parsed.reason == "deactivated"
    assert parsed.retry_after is None


def test_from_registration_config() -> None:
    assert from_mapping({}).presence.from_registration is True
    off = from_mapping({"presence": {"allow": "all-accounts", "from_registration": False}})
    assert off.presence.from_registration is False
    with pytest.raises(ConfigError) as raised:
        from_mapping({"presence": {"from_registration": "yes"}}, file="gw.toml")
    assert raised.value.table == "presence" and raised.value.key == "from_registration"
