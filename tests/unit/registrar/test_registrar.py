"""Registrar binding logic (RFC 3261 §10.3) over hand-built REGISTER requests."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.registrar import (
    RegisterResult,
    Registrar,
    RegistrarPolicy,
    binding_key,
    canonical_aor,
)
from gateway.core.sip.errors import LocalSipError
from gateway.core.sip.grammar import parse_name_addr_untrusted, parse_uri_untrusted
from gateway.core.sip.message import Headers, Request
from gateway.core.sip.uri import SipUri
from gateway.core.store.interface import Account, BindingFlow
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import FlowKey

NOW = 1_750_000_000.0
AOR = "sip:alice@127.0.0.1:5060"
FLOW = FlowKey("udp", ("127.0.0.1", 5060), ("127.0.0.1", 40000))
POLICY = RegistrarPolicy(
    local_domains=frozenset({"127.0.0.1:5060", "voip.example.com", "[::1]:5060"}),
    min_expires=60,
    max_expires=7200,
    default_expires=3600,
    max_bindings=3,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore.open(tmp_path)
    s.accounts_add("alice", "pw", "voipgw.local")
    s.accounts_add("bob", "pw", "voipgw.local")
    yield s
    s.close()


@pytest.fixture
def registrar(store: SqliteStore) -> Registrar:
    tags = itertools.count(1)
    return Registrar(store, POLICY, new_tag=lambda: f"tag{next(tags)}")


def alice(store: SqliteStore) -> Account:
    account = store.get_account("alice")
    assert account is not None
    return account


def register(
    *contacts: str,
    expires: str | None = None,
    call_id: str = "reg-1@192.0.2.1",
    cseq: int = 1,
    to: str = f"<{AOR}>",
    uri: str = "sip:127.0.0.1:5060",
    extra: tuple[tuple[str, str], ...] = (),
) -> Request:
    fields = [
        ("Via", "SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK-reg;rport"),
        ("Max-Forwards", "70"),
        ("From", f"<{AOR}>;tag=from1"),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} REGISTER"),
        *(("Contact", c) for c in contacts),
        *extra,
    ]
    if expires is not None:
        fields.append(("Expires", expires))
    return Request("REGISTER", parse_uri_untrusted(uri), Headers.of(fields))


def handle(
    registrar: Registrar,
    store: SqliteStore,
    request: Request,
    *,
    now: float = NOW,
    account: Account | None = None,
) -> RegisterResult:
    return registrar.handle_register(request, account=account or alice(store), flow=FLOW, now=now)


def listed(result: RegisterResult) -> dict[str, dict[str, str | None]]:
    """The 200 OK's Contact values by URI, with their parameters."""
    out: dict[str, dict[str, str | None]] = {}
    for value in result.response.headers.get_all("Contact"):
        contact = parse_name_addr_untrusted(value)
        out[str(contact.uri)] = dict(contact.params)
    return out


# -- adding and listing -------------------------------------------------------------------


def test_first_register_adds_a_binding(registrar: Registrar, store: SqliteStore) -> None:
    result = handle(registrar, store, register("<sip:alice@192.0.2.1:5062>"))
    assert result.response.status == 200
    assert result.aor == AOR
    assert listed(result) == {"sip:alice@192.0.2.1:5062": {"expires": "3600"}}
    assert result.response.to.tag == "tag1"
    assert result.response.call_id == "reg-1@192.0.2.1"
    assert result.response.headers.get("Date") == "Sun, 15 Jun 2025 15:06:40 GMT"
    (added,) = result.added
    assert result.refreshed == () and result.removed == ()
    assert result.changed
    assert added.account == "alice"
    assert added.expires_at == NOW + 3600
    assert (added.call_id, added.cseq) == ("reg-1@192.0.2.1", 1)
    assert added.flow == BindingFlow("udp", "127.0.0.1:5060", "127.0.0.1:40000")
    assert store.registrations_for(AOR) == (added,)
    assert result.bindings == (added,)


def test_ipv6_flow_text(registrar: Registrar, store: SqliteStore) -> None:
    flow = FlowKey("tcp", ("::1", 5060), ("::1", 40001))
    result = registrar.handle_register(
        register("<sip:alice@[::1]:5062;transport=tcp>", to="<sip:alice@[::1]:5060>"),
        account=alice(store),
        flow=flow,
        now=NOW,
    )
    assert result.response.status == 200
    assert result.added[0].flow == BindingFlow("tcp", "[::1]:5060", "[::1]:40001")


def test_user_agent_and_contact_params_are_kept(registrar: Registrar, store: SqliteStore) -> None:
    instance = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"
    request = register(
        f'<sip:alice@192.0.2.1:5062>;q=0.5;+sip.instance="{instance}";reg-id=1',
        extra=(("User-Agent", "Phone/1.0"),),
    )
    result = handle(registrar, store, request)
    (added,) = result.added
    assert (added.q, added.instance, added.reg_id, added.user_agent) == (
        0.5,
        instance,
        1,
        "Phone/1.0",
    )
    assert listed(result) == {
        "sip:alice@192.0.2.1:5062": {
            "q": "0.5",
            "expires": "3600",
            "+sip.instance": f'"{instance}"',
            "reg-id": "1",
        }
    }


def test_several_contacts_listed_by_q(registrar: Registrar, store: SqliteStore) -> None:
    result = handle(
        registrar,
        store,
        register("<sip:a@192.0.2.1>;q=0.1", "<sip:b@192.0.2.2>;q=0.9", "<sip:c@192.0.2.3>"),
    )
    assert len(result.added) == 3
    values = result.response.headers.get_all("Contact")
    assert [parse_name_addr_untrusted(v).uri for v in values] == [
        parse_uri_untrusted(u) for u in ("sip:c@192.0.2.3", "sip:b@192.0.2.2", "sip:a@192.0.2.1")
    ]


def test_fetch_without_contact_lists_remaining_time(
    registrar: Registrar, store: SqliteStore
) -> None:
    handle(registrar, store, register("<sip:alice@192.0.2.1:5062>"))
    result = handle(registrar, store, register(cseq=2), now=NOW + 600)
    assert result.response.status == 200
    assert not result.changed
    assert listed(result) == {"sip:alice@192.0.2.1:5062": {"expires": "3000"}}


# -- expiry ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("contact", "header", "expected"),
    [
        ("<sip:a@192.0.2.1>;expires=120", "1800", 120),  # the parameter wins (§10.2.1.1)
        ("<sip:a@192.0.2.1>", "1800", 1800),
        ("<sip:a@192.0.2.1>", None, 3600),
        ("<sip:a@192.0.2.1>;expires=86400", None, 7200),  # clamped to max_expires
        ("<sip:a@192.0.2.1>;expires=4294967295", None, 7200),
        ("<sip:a@192.0.2.1>;expires=60", None, 60),
    ],
)
def test_expiry_sources(
    registrar: Registrar, store: SqliteStore, contact: str, header: str | None, expected: int
) -> None:
    result = handle(registrar, store, register(contact, expires=header))
    assert result.response.status == 200, result.response.reason
    assert result.added[0].expires_at == NOW + expected
    assert listed(result)["sip:a@192.0.2.1"]["expires"] == str(expected)


@pytest.mark.parametrize(
    ("contacts", "header"),
    [
        (("<sip:a@192.0.2.1>;expires=30",), None),
        (("<sip:a@192.0.2.1>",), "59"),
        (("<sip:a@192.0.2.1>;expires=3600", "<sip:b@192.0.2.2>;expires=1"), None),
    ],
)
def test_interval_too_brief(
    registrar: Registrar, store: SqliteStore, contacts: tuple[str, ...], header: str | None
) -> None:
    result = handle(registrar, store, register(*contacts, expires=header))
    assert result.response.status == 423
    assert result.response.reason == "Interval Too Brief"
    assert result.response.headers.get("Min-Expires") == "60"
    assert not result.changed
    assert store.registrations_for(AOR) == ()  # nothing committed, not even the good contact


def test_expired_bindings_are_purged_and_not_listed(
    registrar: Registrar, store: SqliteStore
) -> None:
    handle(registrar, store, register("<sip:a@192.0.2.1>;expires=60"))
    result = handle(
        registrar, store, register("<sip:b@192.0.2.2>", cseq=2, call_id="other"), now=NOW + 61
    )
    assert list(listed(result)) == ["sip:b@192.0.2.2"]
    assert [b.contact for b in store.registrations_for(AOR)] == ["sip:b@192.0.2.2"]


# -- refresh, ordering, removal -------------------------------------------------------------


def test_refresh_with_higher_cseq(registrar: Registrar, store: SqliteStore) -> None:
    handle(registrar, store, register("<sip:a@192.0.2.1>"))
    result = handle(registrar, store, register("<sip:a@192.0.2.1>", cseq=2), now=NOW + 100)
    assert result.response.status == 200
    assert result.added == ()
    (refreshed,) = result.refreshed
    assert refreshed.expires_at == NOW + 100 + 3600
    assert refreshed.cseq == 2
    assert len(store.registrations_for(AOR)) == 1


@pytest.mark.parametrize("cseq", [1, 0])
def test_same_call_id_without_higher_cseq_fails(
    registrar: Registrar, store: SqliteStore, cseq: int
) -> None:
    handle(registrar, store, register("<sip:a@192.0.2.1>", cseq=1))
    before = store.registrations_for(AOR)
    result = handle(registrar, store, register("<sip:a@192.0.2.1>;expires=0", cseq=cseq))
    assert result.response.status == 400
    assert result.response.reason == "CSeq Out Of Order"
    assert store.registrations_for(AOR) == before


def test_new_call_id_replaces_regardless_of_cseq(registrar: Registrar, store: SqliteStore) -> None:
    handle(registrar, store, register("<sip:a@192.0.2.1>", cseq=50))
    result = handle(registrar, store, register("<sip:a@192.0.2.1>", cseq=1, call_id="rebooted"))
    assert result.response.status == 200
    (refreshed,) = result.refreshed
    assert (refreshed.call_id, refreshed.cseq) == ("rebooted", 1)


def test_unregister_one_contact(registrar: Registrar, store: SqliteStore) -> None:
    handle(registrar, store, register("<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"))
    result = handle(registrar, store, register("<sip:a@192.0.2.1>;expires=0", cseq=2))
    assert result.response.status == 200
    assert [b.contact for b in result.removed] == ["sip:a@192.0.2.1"]
    assert list(listed(result)) == ["sip:b@192.0.2.2"]


def test_unregister_with_expires_header(registrar: Registrar, store: SqliteStore) -> None:
    handle(registrar, store, register("<sip:a@192.0.2.1>"))
    result = handle(registrar, store, register("<sip:a@192.0.2.1>", cseq=2, expires="0"))
    assert [b.contact for b in result.removed] == ["sip:a@192.0.2.1"]
    assert result.response.headers.get_all("Contact") == ()


def test_unregister_unknown_contact_is_harmless(registrar: Registrar, store: SqliteStore) -> None:
    result = handle(registrar, store, register("<sip:zz@192.0.2.9>;expires=0"))
    assert result.response.status == 200
    assert not result.changed


def test_wildcard_removes_everything(registrar: Registrar, store: SqliteStore) -> None:
    handle(registrar, store, register("<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"))
    handle(registrar, store, register("<sip:c@192.0.2.3>", call_id="other-phone", cseq=9))
    result = handle(registrar, store, register("*", expires="0", cseq=2))
    assert result.response.status == 200
    assert len(result.removed) == 3
    assert result.response.headers.get_all("Contact") == ()
    assert store.registrations_for(AOR) == ()


@pytest.mark.parametrize(
    ("contacts", "expires"),
    [(("*",), None), (("*",), "3600"), (("*", "<sip:a@192.0.2.1>"), "0")],
)
def test_bad_wildcards(
    registrar: Registrar, store: SqliteStore, contacts: tuple[str, ...], expires: str | None
) -> None:
    handle(registrar, store, register("<sip:a@192.0.2.1>"))
    result = handle(registrar, store, register(*contacts, expires=expires, cseq=2))
    assert result.response.status == 400
    assert len(store.registrations_for(AOR)) == 1


def test_wildcard_respects_cseq_order(registrar: Registrar, store: SqliteStore) -> None:
    handle(registrar, store, register("<sip:a@192.0.2.1>", cseq=5))
    result = handle(registrar, store, register("*", expires="0", cseq=5))
    assert result.response.status == 400
    assert len(store.registrations_for(AOR)) == 1


# -- binding identity -----------------------------------------------------------------------


def test_equivalent_contact_uris_are_one_binding(registrar: Registrar, store: SqliteStore) -> None:
    handle(registrar, store, register("<sip:Alice@HOST.example:5062;Transport=UDP>"))
    result = handle(
        registrar, store, register("<sip:%41lice@host.example:5062;transport=udp>", cseq=2)
    )
    assert len(result.refreshed) == 1 and result.added == ()
    # The user part is case-sensitive (RFC 3261 §19.1.4): a different binding.
    result = handle(registrar, store, register("<sip:alice@host.example:5062>", cseq=3))
    assert len(result.added) == 1


def test_instance_id_identifies_the_binding(registrar: Registrar, store: SqliteStore) -> None:
    instance = '+sip.instance="<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'
    handle(registrar, store, register(f"<sip:alice@192.0.2.1:5062>;{instance}"))
    # The phone moved (new IP, new Call-ID after reboot): same instance, same binding.
    result = handle(
        registrar, store, register(f"<sip:alice@198.51.100.7:5062>;{instance}", call_id="new")
    )
    assert result.added == () and len(result.refreshed) == 1
    (only,) = store.registrations_for(AOR)
    assert only.contact == "sip:alice@198.51.100.7:5062"


def test_key_helpers() -> None:
    uri = parse_uri_untrusted("sip:Bob%20B@Example.COM:5060;transport=TCP;lr?Subject=Hi")
    assert binding_key(uri) == "sip:Bob B@example.com:5060;lr;transport=tcp?subject=Hi"
    assert binding_key(uri, "<urn:uuid:ABC>", 2) == "instance:<urn:uuid:abc>;reg-id=2"
    assert binding_key(uri, "<urn:uuid:ABC>") == "instance:<urn:uuid:abc>"
    assert isinstance(uri, SipUri)
    assert canonical_aor(uri) == "sip:Bob B@example.com:5060"


def test_too_many_bindings(registrar: Registrar, store: SqliteStore) -> None:
    handle(registrar, store, register("<sip:a@192.0.2.1>", "<sip:b@192.0.2.2>"))
    result = handle(registrar, store, register("<sip:c@192.0.2.3>", "<sip:d@192.0.2.4>", cseq=2))
    assert result.response.status == 403
    assert len(store.registrations_for(AOR)) == 2
    # Replacing within the limit is fine.
    result = handle(
        registrar,
        store,
        register("<sip:a@192.0.2.1>;expires=0", "<sip:c@192.0.2.3>", cseq=3),
    )
    assert result.response.status == 200
    assert set(listed(result)) == {"sip:b@192.0.2.2", "sip:c@192.0.2.3"}


def test_too_many_contacts_in_one_request(registrar: Registrar, store: SqliteStore) -> None:
    contacts = [f"<sip:u{i}@192.0.2.{i}>" for i in range(1, 6)]
    result = handle(registrar, store, register(*contacts))
    assert result.response.status == 403
    assert store.registrations_for(AOR) == ()


# -- who may register what ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("to", "uri", "status"),
    [
        ("<sip:alice@elsewhere.example>", "sip:127.0.0.1:5060", 404),
        ("<sip:alice@127.0.0.1:5070>", "sip:127.0.0.1:5060", 404),
        (f"<{AOR}>", "sip:elsewhere.example", 404),
        (f"<{AOR}>", "tel:+15551234", 404),
        ("<sip:127.0.0.1:5060>", "sip:127.0.0.1:5060", 404),
        ("<tel:+15551234>", "sip:127.0.0.1:5060", 404),
        ("<sip:bob@127.0.0.1:5060>", "sip:127.0.0.1:5060", 403),
    ],
)
def test_target_checks(
    registrar: Registrar, store: SqliteStore, to: str, uri: str, status: int
) -> None:
    result = handle(registrar, store, register("<sip:a@192.0.2.1>", to=to, uri=uri))
    assert result.response.status == status
    assert store.bindings_for_account("alice") == ()
    assert store.bindings_for_account("bob") == ()


@pytest.mark.parametrize(
    "to",
    [
        "<sip:alice@127.0.0.1>",  # no port: the default 5060 matches "127.0.0.1:5060"
        "<sip:alice@VOIP.example.com:5080>",  # a bare domain matches any port
        '"Alice" <sip:alice@voip.example.com;user=phone>',
        "sip:%61lice@voip.example.com",
    ],
)
def test_local_to_forms(registrar: Registrar, store: SqliteStore, to: str) -> None:
    result = handle(registrar, store, register("<sip:a@192.0.2.1>", to=to))
    assert result.response.status == 200, result.response.reason


def test_aor_is_canonical(registrar: Registrar, store: SqliteStore) -> None:
    result = handle(
        registrar,
        store,
        register("<sip:a@192.0.2.1>", to="<sip:%61lice@VOIP.Example.com;user=phone>"),
    )
    assert result.aor == "sip:alice@voip.example.com"


def test_disabled_account_is_forbidden(registrar: Registrar, store: SqliteStore) -> None:
    disabled = store.accounts_set("alice", enabled=False)
    result = handle(registrar, store, register("<sip:a@192.0.2.1>"), account=disabled)
    assert result.response.status == 403


def test_other_account_may_not_register_alice(registrar: Registrar, store: SqliteStore) -> None:
    bob = store.get_account("bob")
    assert bob is not None
    result = handle(registrar, store, register("<sip:a@192.0.2.1>"), account=bob)
    assert result.response.status == 403
    assert result.response.to.tag is not None


# -- extensions and malformed input ---------------------------------------------------------


def test_unsupported_require(registrar: Registrar, store: SqliteStore) -> None:
    request = register("<sip:a@192.0.2.1>", extra=(("Require", "path, gruu"),))
    result = handle(registrar, store, request)
    assert result.response.status == 420
    assert result.response.headers.get("Unsupported") == "gruu"


def test_path_is_stored_and_echoed_when_supported(registrar: Registrar, store: SqliteStore) -> None:
    path = (("Path", "<sip:edge1.example;lr>"), ("Path", "<sip:edge2.example;lr>"))
    request = register(
        "<sip:a@192.0.2.1>", extra=(*path, ("Supported", "path"), ("Require", "path"))
    )
    result = handle(registrar, store, request)
    assert result.response.status == 200
    assert result.added[0].path == ("<sip:edge1.example;lr>", "<sip:edge2.example;lr>")
    assert result.response.headers.get_all("Path") == (
        "<sip:edge1.example;lr>",
        "<sip:edge2.example;lr>",
    )
    result = handle(registrar, store, register("<sip:b@192.0.2.2>", cseq=2, extra=path))
    assert result.response.headers.get_all("Path") == ()


@pytest.mark.parametrize(
    ("contact", "expires"),
    [
        ("<sip:a@192.0.2.1>;q=2", None),
        ("<sip:a@192.0.2.1>;q=0.1234", None),
        ("<sip:a@192.0.2.1>;expires=soon", None),
        ("<sip:a@192.0.2.1>;expires=4294967296", None),  # RFC 4475 §3.1.2.4: out of range
        ("<sip:a@192.0.2.1>", "-1"),
        ("<sip:a@192.0.2.1", None),
        ("<sip:a@192.0.2.1>;reg-id=x", None),
    ],
)
def test_malformed_values_are_400(
    registrar: Registrar, store: SqliteStore, contact: str, expires: str | None
) -> None:
    result = handle(registrar, store, register(contact, expires=expires))
    assert result.response.status == 400
    assert store.registrations_for(AOR) == ()


def test_to_tag_kept_when_present(registrar: Registrar, store: SqliteStore) -> None:
    result = handle(registrar, store, register("<sip:a@192.0.2.1>", to=f"<{AOR}>;tag=keep"))
    assert result.response.to.tag == "keep"


def test_not_a_register_is_our_bug(registrar: Registrar, store: SqliteStore) -> None:
    request = Request("OPTIONS", parse_uri_untrusted("sip:127.0.0.1:5060"))
    with pytest.raises(LocalSipError):
        handle(registrar, store, request)


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        RegistrarPolicy(frozenset(), min_expires=0)
    with pytest.raises(ValueError):
        RegistrarPolicy(frozenset(), min_expires=100, default_expires=50)
    with pytest.raises(ValueError):
        RegistrarPolicy(frozenset(), max_bindings=0)


# -- sips: Contacts (RFC 5630 §3.1.3) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("transport", "status"), [("udp", 480), ("tcp", 480), ("ws", 480), ("tls", 200), ("wss", 200)]
)
def test_a_sips_contact_is_bound_only_over_tls_or_wss(
    registrar: Registrar, store: SqliteStore, transport: str, status: int
) -> None:
    flow = FlowKey(transport, ("127.0.0.1", 5061), ("127.0.0.1", 40000))
    request = register("<sips:alice@192.0.2.1:5061>", "<sip:alice@192.0.2.1:5062>")
    result = registrar.handle_register(request, account=alice(store), flow=flow, now=NOW)
    assert result.response.status == status
    if status == 480:
        assert result.response.headers.get("Warning") == '380 voipgw "SIPS Not Allowed"'
        # Nothing bound, not even the request's sip: Contact: the request is refused whole.
        assert not store.registrations_for(AOR)
    else:
        assert set(listed(result)) == {"sips:alice@192.0.2.1:5061", "sip:alice@192.0.2.1:5062"}


def test_a_sips_contact_is_removed_over_any_transport(
    registrar: Registrar, store: SqliteStore
) -> None:
    tls = FlowKey("tls", ("127.0.0.1", 5061), ("127.0.0.1", 40000))
    added = register("<sips:alice@192.0.2.1:5061>")
    assert registrar.handle_register(added, account=alice(store), flow=tls, now=NOW).added
    # Removing it over UDP sends nothing to it: not refused.
    removal = register("<sips:alice@192.0.2.1:5061>;expires=0", cseq=2)
    result = handle(registrar, store, removal)
    assert result.response.status == 200
    assert not store.registrations_for(AOR)
