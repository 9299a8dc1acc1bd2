"""Routing: trunks by source, the directory over a real SQLite store and flow table, the core's
default routing and its answers, the gateway_route_call hook, and where targets are sent."""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.core.calls.routing import (
    ContactTarget,
    Destination,
    GatewayDirectory,
    RoutingError,
    TrunkMatcher,
    UnroutableTarget,
    called_user,
    default_route,
    destination_for,
    dial_string,
    identify_trunk,
    longest_prefix_trunk,
    over_tls_only,
    route_call,
)
from gateway.core.config import TrunkConfig
from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import Caller, Directory, RouteDecision, RouteTarget
from gateway.core.plugins import PluginHookError, new_plugin_manager
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.message import Request
from gateway.core.store.interface import Binding, BindingFlow
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import Flow, FlowKey, FlowTable

NOW = 1_750_000_000.0
DOMAINS = frozenset({"127.0.0.1:5060", "voip.example.com", "[::1]:5060"})

CARRIER = TrunkConfig(
    name="carrier",
    address="udp:192.0.2.10:5060",
    prefixes=("+49",),
    allowed_sources=("192.0.2.0/28",),
    dids={"+4930123456": "alice", "+4930123457": "bob", "+4930999": "ghost"},
)
MOBILE = TrunkConfig(
    name="mobile",
    address="tcp:192.0.2.20:5080",
    prefixes=("+4915", "+4917"),
    strip_prefix=3,
    add_prefix="0",
)
FALLBACK = TrunkConfig(name="fallback", address="tls:[2001:db8::9]:5061", prefixes=("*",))
US = TrunkConfig(name="us", address="udp:198.51.100.1:5060", prefixes=("+1",), enabled=False)
TRUNKS = (CARRIER, MOBILE, FALLBACK, US)


async def _send(data: bytes) -> None:
    raise AssertionError("routing never sends")


def make_flow(transport: str, local: tuple[str, int], remote: tuple[str, int]) -> Flow:
    return Flow(FlowKey(transport, local, remote), _send, reliable=transport != "udp")


def binding(
    account: str,
    contact: str,
    flow: BindingFlow,
    *,
    key: str | None = None,
    expires_at: float = NOW + 600,
    path: tuple[str, ...] = (),
) -> Binding:
    return Binding(
        aor=f"sip:{account}@voip.example.com",
        key=key or contact,
        account=account,
        contact=contact,
        expires_at=expires_at,
        call_id=f"reg-{key or contact}",
        cseq=1,
        flow=flow,
        path=path,
    )


# alice registered twice: over UDP through a NAT (the flow is live), and over TCP (the
# connection is gone). An expired binding must never be rung.
ALICE_NAT_FLOW = BindingFlow("udp", "127.0.0.1:5060", "203.0.113.7:40000")
ALICE_NAT = binding("alice", "sip:alice@10.0.0.5:5060", ALICE_NAT_FLOW)
ALICE_TCP = binding(
    "alice",
    "sip:alice@198.51.100.20:5070;transport=tcp",
    BindingFlow("tcp", "127.0.0.1:5060", "198.51.100.20:51234"),
)
ALICE_EXPIRED = binding(
    "alice", "sip:alice@10.0.0.9", ALICE_NAT_FLOW, key="old", expires_at=NOW - 1
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore.open(tmp_path)
    s.accounts_add("alice", "pw", "voipgw.local")
    s.accounts_add("bob", "pw", "voipgw.local")  # no registered device
    s.accounts_add("carol", "pw", "voipgw.local", enabled=False)
    for b in (ALICE_NAT, ALICE_TCP, ALICE_EXPIRED):
        s.upsert_binding(b)
    s.upsert_binding(binding("carol", "sip:carol@10.0.0.7", ALICE_NAT_FLOW))
    yield s
    s.close()


@pytest.fixture
def flows() -> FlowTable:
    table = FlowTable()
    table.add(make_flow("udp", ("127.0.0.1", 5060), ("203.0.113.7", 40000)))
    # Another peer's flow on the same listener must not be mistaken for alice's.
    table.add(make_flow("udp", ("127.0.0.1", 5060), ("203.0.113.8", 40000)))
    return table


MakeDirectory = Callable[..., GatewayDirectory]


@pytest.fixture
def make_directory(store: SqliteStore, flows: FlowTable) -> MakeDirectory:
    def make(trunks: tuple[TrunkConfig, ...] = TRUNKS) -> GatewayDirectory:
        return GatewayDirectory(store, flows, trunks, DOMAINS, now=lambda: NOW)

    return make


@pytest.fixture
def directory(make_directory: MakeDirectory) -> GatewayDirectory:
    return make_directory()


def invite(uri: str) -> Request:
    return Request(method="INVITE", uri=parse_uri_untrusted(uri))


ACCOUNT = Caller(kind="account", name="bob")
FROM_CARRIER = Caller(kind="trunk", name="carrier")


# -- trunks by source address ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("192.0.2.3", "carrier"),  # inside carrier's /28
        ("192.0.2.20", "mobile"),  # the default source: the host of the address
        ("192.0.2.21", None),
        ("[2001:db8::9]", "fallback"),  # brackets are accepted
        ("2001:db8::9", "fallback"),
        ("::ffff:192.0.2.3", "carrier"),  # an IPv4 peer on a dual-stack socket
        ("198.51.100.1", None),  # us is disabled
        ("not-an-ip", None),
        ("", None),
    ],
)
def test_identify_trunk_by_source(source: str, expected: str | None) -> None:
    trunk = identify_trunk(TRUNKS, source)
    assert (trunk.name if trunk else None) == expected


def test_most_specific_source_network_wins_whatever_the_order() -> None:
    wide = TrunkConfig(name="wide", address="udp:10.0.0.1:5060", allowed_sources=("10.0.0.0/8",))
    narrow = TrunkConfig(
        name="narrow", address="udp:10.1.2.3:5060", allowed_sources=("10.1.0.0/16",)
    )
    for order in ((wide, narrow), (narrow, wide)):
        matcher = TrunkMatcher(order)
        assert matcher.identify("10.1.9.9") is narrow
        assert matcher.identify("10.2.0.1") is wide


def test_equally_specific_sources_go_to_the_trunk_listed_first() -> None:
    a = TrunkConfig(name="a", address="udp:10.0.0.1:5060", allowed_sources=("10.0.0.0/24",))
    b = TrunkConfig(name="b", address="udp:10.0.0.2:5060", allowed_sources=("10.0.0.0/24",))
    assert identify_trunk((a, b), "10.0.0.77") is a
    assert identify_trunk((b, a), "10.0.0.77") is b


def test_empty_allowed_sources_match_nothing() -> None:
    trunk = TrunkConfig(name="out", address="udp:10.0.0.1:5060", allowed_sources=())
    assert identify_trunk((trunk,), "10.0.0.1") is None


# -- numbers ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+4930123456", "+4930123456"),
        ("+49-30-(123).456", "+4930123456"),
        ("0301234;phone-context=+49", "0301234"),
        ("*21#", "*21#"),
        ("alice", None),
        ("john.doe", None),
        ("+", None),
        ("", None),
        ("49 30", "4930"),  # blanks, as some peers write them (%20): ignored like separators
    ],
)
def test_dial_string(text: str, expected: str | None) -> None:
    assert dial_string(text) == expected


def test_longest_prefix_wins_and_ties_go_to_the_first_listed() -> None:
    assert longest_prefix_trunk(TRUNKS, "+4915112345") is MOBILE
    assert longest_prefix_trunk(TRUNKS, "+4930123") is CARRIER
    assert longest_prefix_trunk(TRUNKS, "+33123") is FALLBACK
    # longest_prefix_trunk does not filter: the disabled trunk is the longest match here.
    assert longest_prefix_trunk(TRUNKS, "+1555") is US
    assert longest_prefix_trunk((CARRIER, MOBILE), "+33123") is None
    empty = TrunkConfig(name="empty", address="udp:10.0.0.1:5060", prefixes=("",))
    assert longest_prefix_trunk((empty, FALLBACK), "+33") is empty
    assert longest_prefix_trunk((FALLBACK, empty), "+33") is FALLBACK


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:alice@voip.example.com", "alice"),
        ("sip:al%69ce@voip.example.com", "alice"),
        ("sip:+49-30-1234@voip.example.com;user=phone", "+49-30-1234"),
        ("tel:+4930123456", "+4930123456"),
        ("sip:voip.example.com", None),
    ],
)
def test_called_user(uri: str, expected: str | None) -> None:
    assert called_user(parse_uri_untrusted(uri)) == expected


# -- the directory ----------------------------------------------------------------------------


def test_gateway_directory_satisfies_the_protocol(directory: GatewayDirectory) -> None:
    seen: Directory = directory  # mypy checks the structural type
    assert seen.account_exists("alice")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("voip.example.com", True),
        ("VOIP.example.com:5099", True),  # a domain listed without a port matches any port
        ("127.0.0.1:5060", True),
        ("127.0.0.1", True),  # no port: the default 5060
        ("127.0.0.1:5070", False),
        ("[::1]:5060", True),
        ("::1", True),
        ("[::1]:5080", False),
        ("other.example.com", False),
        ("127.0.0.1:x", False),
        ("[::1", False),
        ("[::1]5060", False),
        ("[::1]:", False),
    ],
)
def test_is_local_domain(directory: GatewayDirectory, host: str, expected: bool) -> None:
    assert directory.is_local_domain(host) is expected


def test_account_exists_only_for_enabled_accounts(directory: GatewayDirectory) -> None:
    assert directory.account_exists("alice")
    assert directory.account_exists("bob")
    assert not directory.account_exists("carol")  # disabled
    assert not directory.account_exists("ghost")


def test_contacts_reuse_the_live_flow_they_registered_over(
    directory: GatewayDirectory, flows: FlowTable
) -> None:
    nat, tcp = directory.contacts("alice")
    assert isinstance(nat, ContactTarget)
    assert nat.uri == "sip:alice@10.0.0.5:5060"
    assert nat.account == "alice"
    assert nat.binding == ALICE_NAT
    live = flows.get(FlowKey("udp", ("127.0.0.1", 5060), ("203.0.113.7", 40000)))
    assert live is not None and nat.flow is live
    # The TCP connection is gone: no flow, the contact URI is what remains.
    assert tcp.uri == ALICE_TCP.contact
    assert tcp.flow is None
    assert tcp.binding == ALICE_TCP


def test_contacts_skip_a_closed_flow(directory: GatewayDirectory, flows: FlowTable) -> None:
    live = flows.get(FlowKey("udp", ("127.0.0.1", 5060), ("203.0.113.7", 40000)))
    assert live is not None
    live.closed = True
    assert [t.flow for t in directory.contacts("alice")] == [None, None]


def test_contacts_of_accounts_without_bindings_or_disabled_or_unknown(
    directory: GatewayDirectory,
) -> None:
    assert directory.contacts("bob") == ()
    assert directory.contacts("carol") == ()  # registered, but disabled
    assert directory.contacts("ghost") == ()


def test_contacts_expire_with_the_clock(
    store: SqliteStore, flows: FlowTable, directory: GatewayDirectory
) -> None:
    assert len(directory.contacts("alice")) == 2
    later = GatewayDirectory(store, flows, TRUNKS, DOMAINS, now=lambda: NOW + 601)
    assert later.contacts("alice") == ()


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+4930123", "carrier"),
        ("+4915112345", "mobile"),
        ("+4917", "mobile"),
        ("+33123", "fallback"),
        ("+1555", "fallback"),  # us serves +1 but is disabled: the default route takes it
    ],
)
def test_trunk_for_number(directory: GatewayDirectory, number: str, expected: str) -> None:
    assert directory.trunk_for_number(number) == expected


def test_trunk_for_number_without_a_match(make_directory: MakeDirectory) -> None:
    assert make_directory((CARRIER, US)).trunk_for_number("+1555") is None


@pytest.mark.parametrize(
    ("trunk", "number", "uri"),
    [
        ("carrier", "+4930123", "sip:+4930123@192.0.2.10:5060;transport=udp"),
        ("mobile", "+4915112345", "sip:015112345@192.0.2.20:5080;transport=tcp"),
        ("fallback", "*21#", "sip:*21%23@[2001:db8::9]:5061;transport=tls"),
        ("carrier", "+49-30-123", "sip:+4930123@192.0.2.10:5060;transport=udp"),
    ],
)
def test_trunk_target(directory: GatewayDirectory, trunk: str, number: str, uri: str) -> None:
    target = directory.trunk_target(trunk, number)
    assert target == RouteTarget(uri=uri, trunk=trunk)
    parse_uri_untrusted(target.uri)  # what we send is a valid SIP URI


@pytest.mark.parametrize(
    ("trunk", "number"),
    [
        ("us", "+1555"),  # disabled
        ("nowhere", "+1555"),  # unknown
        ("carrier", "alice"),  # not a number
    ],
)
def test_trunk_target_refused(directory: GatewayDirectory, trunk: str, number: str) -> None:
    assert directory.trunk_target(trunk, number) is None


def test_trunk_target_refuses_a_number_stripped_to_nothing(
    make_directory: MakeDirectory,
) -> None:
    strip = TrunkConfig(name="s", address="udp:10.0.0.1:5060", prefixes=("*",), strip_prefix=4)
    plus = TrunkConfig(name="p", address="udp:10.0.0.1:5060", strip_prefix=3, add_prefix="+")
    directory = make_directory((strip, plus))
    assert directory.trunk_target("s", "+49") is None
    assert directory.trunk_target("p", "+49") is None  # only the "+" would be left
    target = directory.trunk_target("s", "+4912")
    assert target is not None and target.uri.startswith("sip:2@")


def test_did_account(directory: GatewayDirectory) -> None:
    assert directory.did_account("carrier", "+4930123456") == "alice"
    assert directory.did_account("carrier", "+49-30-123456") == "alice"
    assert directory.did_account("carrier", "+4930000000") is None
    assert directory.did_account("mobile", "+4930123456") is None
    assert directory.did_account("nowhere", "+4930123456") is None


# -- default routing --------------------------------------------------------------------------


def test_trunk_call_to_a_did_rings_every_registered_contact(
    directory: GatewayDirectory,
) -> None:
    decision = default_route(invite("sip:+4930123456@127.0.0.1"), FROM_CARRIER, directory)
    assert decision.reject_status is None
    assert [t.uri for t in decision.targets] == [ALICE_NAT.contact, ALICE_TCP.contact]
    assert all(t.account == "alice" for t in decision.targets)


def test_trunk_call_to_a_did_as_tel_uri(directory: GatewayDirectory) -> None:
    decision = default_route(invite("tel:+49-30-123456"), FROM_CARRIER, directory)
    assert len(decision.targets) == 2


def test_trunk_call_by_account_name(directory: GatewayDirectory) -> None:
    decision = default_route(invite("sip:alice@127.0.0.1"), FROM_CARRIER, directory)
    assert [t.account for t in decision.targets] == ["alice", "alice"]


def test_trunk_call_to_a_did_of_an_unregistered_account_is_480(
    directory: GatewayDirectory,
) -> None:
    decision = default_route(invite("sip:+4930123457@127.0.0.1"), FROM_CARRIER, directory)
    assert decision == RouteDecision.reject(
        480, "Temporarily Unavailable: bob has no registered device"
    )


def test_trunk_call_to_a_did_of_a_missing_account_is_404_and_logged(
    directory: GatewayDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="gateway.core.calls.routing"):
        decision = default_route(invite("sip:+4930999@127.0.0.1"), FROM_CARRIER, directory)
    assert decision == RouteDecision.reject(404, "Not Found: no account or DID for +4930999")
    assert "DID +4930999 maps to account ghost" in caplog.text


@pytest.mark.parametrize("user", ["+4930000000", "carol", "nobody"])
def test_trunk_call_to_nothing_is_404(directory: GatewayDirectory, user: str) -> None:
    decision = default_route(invite(f"sip:{user}@127.0.0.1"), FROM_CARRIER, directory)
    assert decision == RouteDecision.reject(404, f"Not Found: no account or DID for {user}")


def test_a_trunk_never_reaches_another_trunk(directory: GatewayDirectory) -> None:
    # +4915... is served by the mobile trunk, but calls from a trunk only reach accounts.
    decision = default_route(invite("sip:+4915112345@127.0.0.1"), FROM_CARRIER, directory)
    assert decision.reject_status == 404
    assert decision.targets == ()


def test_account_call_to_a_registered_account(directory: GatewayDirectory) -> None:
    decision = default_route(invite("sip:alice@voip.example.com"), ACCOUNT, directory)
    assert len(decision.targets) == 2
    assert decision.targets[0].flow is not None  # the NAT flow


def test_account_call_to_an_unregistered_account_is_480(directory: GatewayDirectory) -> None:
    decision = default_route(invite("sip:bob@voip.example.com"), ACCOUNT, directory)
    assert decision == RouteDecision.reject(
        480, "Temporarily Unavailable: bob has no registered device"
    )


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:+4930123@voip.example.com", "sip:+4930123@192.0.2.10:5060;transport=udp"),
        ("sip:+4915112345@voip.example.com", "sip:015112345@192.0.2.20:5080;transport=tcp"),
        ("tel:+49-171-555", "sip:0171555@192.0.2.20:5080;transport=tcp"),
        (
            "sip:+4930123;phone-context=x@voip.example.com",
            "sip:+4930123@192.0.2.10:5060;transport=udp",
        ),
        ("sip:0033123@voip.example.com", "sip:0033123@[2001:db8::9]:5061;transport=tls"),
    ],
)
def test_account_call_to_a_number_goes_to_the_longest_prefix_trunk(
    directory: GatewayDirectory, uri: str, expected: str
) -> None:
    decision = default_route(invite(uri), ACCOUNT, directory)
    assert [t.uri for t in decision.targets] == [expected]
    assert decision.reject_status is None


def test_account_name_wins_over_a_default_trunk(
    store: SqliteStore, directory: GatewayDirectory
) -> None:
    store.accounts_add("1000", "pw", "voipgw.local")
    store.upsert_binding(binding("1000", "sip:1000@10.0.0.11", ALICE_NAT_FLOW))
    decision = default_route(invite("sip:1000@voip.example.com"), ACCOUNT, directory)
    assert [(t.account, t.trunk) for t in decision.targets] == [("1000", None)]


def test_account_call_to_a_number_only_a_disabled_trunk_serves_is_503(
    make_directory: MakeDirectory,
) -> None:
    directory = make_directory((CARRIER, US))
    decision = default_route(invite("sip:+15551234@voip.example.com"), ACCOUNT, directory)
    assert decision == RouteDecision.reject(
        503, "Service Unavailable: no trunk serves +15551234 (trunk us is disabled)"
    )


def test_account_call_to_a_number_no_trunk_serves_is_404(make_directory: MakeDirectory) -> None:
    directory = make_directory((CARRIER, US))
    decision = default_route(invite("sip:+33123@voip.example.com"), ACCOUNT, directory)
    assert decision == RouteDecision.reject(404, "Not Found: no user or trunk route for +33123")


@pytest.mark.parametrize("user", ["nobody", "carol", "john.doe"])
def test_account_call_to_a_name_nobody_has_is_404_even_with_a_default_trunk(
    directory: GatewayDirectory, user: str
) -> None:
    decision = default_route(invite(f"sip:{user}@voip.example.com"), ACCOUNT, directory)
    assert decision == RouteDecision.reject(404, f"Not Found: no user or trunk route for {user}")


@pytest.mark.parametrize(
    "caller",
    [
        Caller(kind="unknown", name=None),
        Caller(kind="unknown", name="alice"),
        Caller(kind="account", name=None),
        Caller(kind="trunk", name=None),
    ],
)
def test_unidentified_caller_is_403(directory: GatewayDirectory, caller: Caller) -> None:
    decision = default_route(invite("sip:alice@voip.example.com"), caller, directory)
    assert decision == RouteDecision.reject(403, "Forbidden: caller not identified")


def test_request_uri_without_user_is_404(directory: GatewayDirectory) -> None:
    decision = default_route(invite("sip:voip.example.com"), ACCOUNT, directory)
    assert decision == RouteDecision.reject(404, "Not Found: no user part in the Request-URI")


def test_other_uri_schemes_are_416(directory: GatewayDirectory) -> None:
    decision = default_route(invite("urn:service:sos"), ACCOUNT, directory)
    assert decision.reject_status == 416


def test_reason_phrases_never_carry_control_characters_or_long_input(
    directory: GatewayDirectory,
) -> None:
    decision = default_route(invite("sip:ev%0d%0aVia%3a%20x@127.0.0.1"), ACCOUNT, directory)
    assert decision.reject_reason == "Not Found: no user or trunk route for ev??Via: x"
    decision = default_route(invite(f"sip:{'x' * 200}@127.0.0.1"), ACCOUNT, directory)
    assert decision.reject_reason is not None
    assert decision.reject_reason.endswith("x...")
    assert len(decision.reject_reason) < 100


# -- the gateway_route_call hook --------------------------------------------------------------


class FixedRoute:
    """A routing plugin that answers ``answer`` and records what it was given."""

    def __init__(self, answer: object) -> None:
        self.answer = answer
        self.seen: list[tuple[Request, Caller, Directory]] = []

    @hookimpl
    def gateway_route_call(self, request: Request, caller: Caller, directory: Directory) -> object:
        self.seen.append((request, caller, directory))
        return self.answer


def hook_with(*plugins: object) -> object:
    pm = new_plugin_manager()
    for plugin in plugins:
        pm.register(plugin)
    return pm.hook


def test_a_plugin_decision_overrides_the_default(directory: GatewayDirectory) -> None:
    decision = RouteDecision(targets=(RouteTarget(uri="sip:ivr@192.0.2.50"),))
    plugin = FixedRoute(decision)
    request = invite("sip:alice@voip.example.com")
    assert route_call(hook_with(plugin), request, ACCOUNT, directory) is decision
    assert plugin.seen == [(request, ACCOUNT, directory)]


def test_a_plugin_may_reject(directory: GatewayDirectory) -> None:
    reject = RouteDecision.reject(486, "Busy Here: do not disturb")
    hook = hook_with(FixedRoute(reject))
    assert route_call(hook, invite("sip:alice@x"), ACCOUNT, directory) is reject


def test_the_last_registered_plugin_answers_first(directory: GatewayDirectory) -> None:
    first = RouteDecision.reject(486, "Busy Here")
    second = RouteDecision.reject(603, "Decline")
    hook = hook_with(FixedRoute(first), FixedRoute(second))
    assert route_call(hook, invite("sip:alice@x"), ACCOUNT, directory) is second


def test_plugins_that_defer_fall_back_to_the_default(directory: GatewayDirectory) -> None:
    plugin = FixedRoute(None)
    decision = route_call(hook_with(plugin), invite("sip:bob@x"), ACCOUNT, directory)
    assert decision == RouteDecision.reject(
        480, "Temporarily Unavailable: bob has no registered device"
    )
    assert len(plugin.seen) == 1
    assert route_call(hook_with(), invite("sip:bob@x"), ACCOUNT, directory) == decision


@pytest.mark.parametrize(
    "answer",
    [
        "sip:alice@x",
        RouteDecision(),
        RouteDecision.reject(200, "OK"),
        RouteDecision(targets=(RouteTarget(uri="sip:a@x"),), reject_status=486),
    ],
)
def test_unusable_plugin_answers_raise(directory: GatewayDirectory, answer: object) -> None:
    with pytest.raises(RoutingError) as info:
        route_call(hook_with(FixedRoute(answer)), invite("sip:alice@x"), ACCOUNT, directory)
    assert info.value.sip_status == 500
    assert "gateway_route_call" in str(info.value)


def _lookup(table: dict[str, str], key: str) -> str:
    return table[key]  # a frame below the hook's own: still the plugin's


class Broken:
    @hookimpl
    def gateway_route_call(self) -> None:
        _lookup({}, "boom")


class Deferring:
    @hookimpl
    def gateway_route_call(self) -> None:
        return None


def test_a_plugin_exception_ends_the_call_naming_the_plugin(directory: GatewayDirectory) -> None:
    pm = new_plugin_manager()
    pm.register(Deferring(), name="first-router")
    pm.register(Broken(), name="acme-router")
    pm.register(Deferring(), name="last-router")  # asked first, defers to acme-router
    with pytest.raises(PluginHookError) as info:
        route_call(pm.hook, invite("sip:alice@x"), ACCOUNT, directory)
    assert str(info.value) == "plugin 'acme-router' raised KeyError in gateway_route_call"
    assert info.value.plugin == "acme-router" and info.value.hook == "gateway_route_call"
    assert isinstance(info.value.__cause__, KeyError)  # its traceback: the plugin's frames


def test_a_module_plugins_exception_is_named_too(directory: GatewayDirectory) -> None:
    module = types.ModuleType("acme_router")

    @hookimpl
    def gateway_route_call(request: Request) -> None:
        raise ValueError("nope")

    module.gateway_route_call = gateway_route_call  # type: ignore[attr-defined]
    pm = new_plugin_manager()
    pm.register(module, name="acme-module")
    with pytest.raises(PluginHookError, match="plugin 'acme-module' raised ValueError"):
        route_call(pm.hook, invite("sip:alice@x"), ACCOUNT, directory)


# -- where targets go -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:a@192.0.2.1", Destination("udp", "192.0.2.1", 5060)),
        ("sip:a@192.0.2.1:5070;transport=TCP", Destination("tcp", "192.0.2.1", 5070)),
        ("sip:a@192.0.2.1;transport=tls", Destination("tls", "192.0.2.1", 5061)),
        ("sips:a@192.0.2.1", Destination("tls", "192.0.2.1", 5061)),
        ("sips:a@192.0.2.1:5071;transport=tcp", Destination("tls", "192.0.2.1", 5071)),
        ("sip:a@[2001:db8::1]:5062", Destination("udp", "2001:db8::1", 5062)),
        ("sip:pbx.example.com", Destination("udp", "pbx.example.com", 5060)),
    ],
)
def test_destination_of_a_uri(uri: str, expected: Destination) -> None:
    assert destination_for(RouteTarget(uri=uri)) == expected


@pytest.mark.parametrize(
    ("uri", "status"),
    [
        ("tel:+4930123", 416),
        ("sips:a@192.0.2.1;transport=udp", 416),
        ("sip:a@@bad", 502),
        ("", 502),
    ],
)
def test_unroutable_targets(uri: str, status: int) -> None:
    with pytest.raises(UnroutableTarget) as info:
        destination_for(RouteTarget(uri=uri))
    assert info.value.sip_status == status


def test_destination_is_the_live_flow(directory: GatewayDirectory) -> None:
    nat = directory.contacts("alice")[0]
    destination = destination_for(nat)
    assert destination.flow is nat.flow
    assert destination == Destination("udp", "203.0.113.7", 40000)
    assert destination.address == ("203.0.113.7", 40000)


def test_a_plain_target_with_a_closed_flow_uses_its_uri() -> None:
    flow = make_flow("tcp", ("127.0.0.1", 5060), ("192.0.2.1", 40000))
    flow.closed = True
    destination = destination_for(RouteTarget(uri="sip:a@192.0.2.1;transport=tcp", flow=flow))
    assert destination == Destination("tcp", "192.0.2.1", 5060)
    assert destination.flow is None


def test_udp_contact_behind_nat_without_a_flow_goes_to_the_registered_source(
    directory: GatewayDirectory, flows: FlowTable
) -> None:
    for flow in list(flows):
        flows.remove(flow)  # the UDP flow expired from the table
    nat = directory.contacts("alice")[0]
    assert nat.flow is None
    assert destination_for(nat) == Destination("udp", "203.0.113.7", 40000)


def test_udp_contact_not_behind_nat_uses_its_uri() -> None:
    same = binding(
        "alice",
        "sip:alice@198.51.100.5:5062",
        BindingFlow("udp", "127.0.0.1:5060", "198.51.100.5:5062"),
    )
    target = ContactTarget(uri=same.contact, account="alice", binding=same)
    assert destination_for(target) == Destination("udp", "198.51.100.5", 5062)


def test_tcp_contact_without_its_connection_uses_its_uri(directory: GatewayDirectory) -> None:
    # The TCP source port was ephemeral: nothing listens there, the contact's port is right.
    tcp = directory.contacts("alice")[1]
    assert destination_for(tcp) == Destination("tcp", "198.51.100.20", 5070)


def test_contact_registered_through_a_path_goes_to_the_first_path_hop() -> None:
    edge = binding(
        "alice",
        "sip:alice@10.0.0.5",
        BindingFlow("udp", "127.0.0.1:5060", "192.0.2.99:5060"),
        path=("<sip:edge1.example.net:5090;lr;transport=tcp>", "<sip:edge2.example.net;lr>"),
    )
    target = ContactTarget(uri=edge.contact, account="alice", binding=edge)
    assert destination_for(target) == Destination("tcp", "edge1.example.net", 5090)


def test_contact_target_keeps_routetarget_fields() -> None:
    target = ContactTarget(uri=ALICE_NAT.contact, account="alice", binding=ALICE_NAT)
    assert isinstance(target, RouteTarget)
    assert target.trunk is None
    assert target.binding is ALICE_NAT


@pytest.mark.parametrize("entry", ["<sip:edge@@bad>", "*"])
def test_a_bad_path_entry_is_unroutable(entry: str) -> None:
    bad = binding(
        "alice",
        "sip:alice@10.0.0.5",
        BindingFlow("udp", "127.0.0.1:5060", "192.0.2.99:5060"),
        path=(entry,),
    )
    with pytest.raises(UnroutableTarget, match="Path"):
        destination_for(ContactTarget(uri=bad.contact, account="alice", binding=bad))


def test_ipv6_binding_flows_are_found_and_used(store: SqliteStore, flows: FlowTable) -> None:
    store.accounts_add("dave", "pw", "voipgw.local")
    v6 = BindingFlow("udp", "[::1]:5060", "[2001:db8::77]:41000")
    store.upsert_binding(binding("dave", "sip:dave@[fd00::7]:5060", v6, key="a"))
    directory = GatewayDirectory(store, flows, TRUNKS, DOMAINS, now=lambda: NOW)
    (target,) = directory.contacts("dave")
    assert target.flow is None
    # No flow in the table: the NAT's public address from the REGISTER.
    assert destination_for(target) == Destination("udp", "2001:db8::77", 41000)
    live = make_flow("udp", ("::1", 5060), ("2001:db8::77", 41000))
    flows.add(live)
    (target,) = directory.contacts("dave")
    assert target.flow is live


CONTACT_URI = Destination("udp", "10.0.0.8", 5062)
NAT_SOURCE = Destination("udp", "203.0.113.7", 40000)


@pytest.mark.parametrize(
    ("local", "remote", "expected"),
    [
        ("127.0.0.1:5060", "nonsense", CONTACT_URI),
        ("127.0.0.1:5060", "[2001:db8::77]", CONTACT_URI),
        ("127.0.0.1:5060", "[2001:db8::77", CONTACT_URI),
        ("127.0.0.1:5060", "203.0.113.7:0", CONTACT_URI),
        ("127.0.0.1:5060", ":5060", CONTACT_URI),
        # An unreadable local side only prevents the flow lookup; the source still counts.
        ("garbage", "203.0.113.7:40000", NAT_SOURCE),
    ],
)
def test_unreadable_binding_flow_text_means_no_flow(
    store: SqliteStore, flows: FlowTable, local: str, remote: str, expected: Destination
) -> None:
    store.accounts_add("erin", "pw", "voipgw.local")
    flow = BindingFlow("udp", local, remote)
    store.upsert_binding(binding("erin", "sip:erin@10.0.0.8:5062", flow, key="e"))
    directory = GatewayDirectory(store, flows, TRUNKS, DOMAINS, now=lambda: NOW)
    (target,) = directory.contacts("erin")
    assert target.flow is None
    assert destination_for(target) == expected


def test_over_tls_only_keeps_the_targets_reached_over_tls_in_order() -> None:
    # RFC 5630 §3.1.3: a SIPS call reaches its callee over TLS (or WSS) only: the transport
    # a target is reached over decides, not the scheme its URI was registered with.
    tls_flow = make_flow("tls", ("127.0.0.1", 5061), ("203.0.113.7", 40001))
    udp_flow = make_flow("udp", ("127.0.0.1", 5060), ("203.0.113.7", 40000))
    over_tls = binding(
        "alice", "sip:alice@10.0.0.5:5061;transport=tls", BindingFlow("tls", "a:1", "b:2")
    )
    sips_over_udp = binding("alice", "sips:alice@10.0.0.6", ALICE_NAT_FLOW, key="udp")
    targets = [
        ContactTarget(uri=sips_over_udp.contact, flow=udp_flow, binding=sips_over_udp),
        RouteTarget(uri="sip:+4930123@192.0.2.10:5060;transport=udp", trunk="carrier"),
        ContactTarget(uri=over_tls.contact, flow=tls_flow, binding=over_tls),
        RouteTarget(uri="sip:+4930123@192.0.2.11:5061;transport=tls", trunk="secure"),
        RouteTarget(uri="sips:alice@192.0.2.12"),
        RouteTarget(uri="sip:alice@192.0.2.13;transport=wss"),
        RouteTarget(uri="sip:alice@192.0.2.14;transport=ws"),
        RouteTarget(uri="sips:alice@192.0.2.15;transport=udp"),  # unroutable: left out
        ALICE_TCP_TARGET,
    ]
    assert over_tls_only(targets) == (targets[2], targets[3], targets[4], targets[5])
    assert over_tls_only([targets[1]]) == ()


ALICE_TCP_TARGET = ContactTarget(uri=ALICE_TCP.contact, account="alice", binding=ALICE_TCP)
