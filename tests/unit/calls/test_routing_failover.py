"""Failover routing without a network: which trunks serve a number and in what order, the
alternates a decision carries, trunks that are down, the health state, the configuration keys,
and giving a failed trunk's channel back."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.calls.limits import CallLimits, Limit
from gateway.core.calls.routing import (
    GatewayDirectory,
    RoutingError,
    default_route,
    route_call,
    trunks_by_prefix,
)
from gateway.core.calls.trunk_health import TrunkHealth
from gateway.core.config import ConfigError, TrunkConfig, from_mapping
from gateway.core.interfaces import Caller, RouteDecision, RouteTarget
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.message import Request
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import FlowTable


def trunk(name: str, *prefixes: str, enabled: bool = True) -> TrunkConfig:
    return TrunkConfig(
        name=name, address=f"udp:192.0.2.{len(name)}:5060", prefixes=prefixes, enabled=enabled
    )


DE = trunk("de", "+49")
DE_BACKUP = trunk("de2", "+49")
BERLIN = trunk("berlin", "+4930")
WORLD = trunk("world", "*")
OFF = trunk("off", "+4930", enabled=False)
TRUNKS = (DE, OFF, WORLD, DE_BACKUP, BERLIN)
ACCOUNT = Caller(kind="account", name="bob")


def test_trunks_are_ordered_by_longest_prefix_then_as_listed() -> None:
    names = [t.name for t in trunks_by_prefix(TRUNKS, "+4930123")]
    assert names == ["off", "berlin", "de", "de2", "world"]
    assert [t.name for t in trunks_by_prefix(TRUNKS, "+33123")] == ["world"]
    multi = trunk("multi", "+1", "+4930", "*")  # counted once, at its longest prefix
    assert [t.name for t in trunks_by_prefix((WORLD, multi, DE), "+4930")] == [
        "multi",
        "de",
        "world",
    ]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore.open(tmp_path)
    yield s
    s.close()


def directory(store: SqliteStore, down: set[str] = frozenset()) -> GatewayDirectory:  # type: ignore[assignment]
    return GatewayDirectory(
        store, FlowTable(), TRUNKS, frozenset(), lambda: 0.0, trunk_up=lambda n: n not in down
    )


def invite(uri: str) -> Request:
    return Request(method="INVITE", uri=parse_uri_untrusted(uri))


def test_a_number_goes_to_the_first_trunk_with_the_rest_as_alternates(
    store: SqliteStore,
) -> None:
    decision = default_route(invite("sip:+4930123@gw"), ACCOUNT, directory(store))
    assert [t.trunk for t in decision.targets] == ["berlin"]
    assert [t.trunk for t in decision.alternates] == ["de", "de2", "world"]
    assert directory(store).trunks_for_number("+4930123") == ("berlin", "de", "de2", "world")


def test_down_trunks_are_skipped(store: SqliteStore) -> None:
    gw = directory(store, down={"berlin", "de"})
    decision = default_route(invite("sip:+4930123@gw"), ACCOUNT, gw)
    assert [t.trunk for t in decision.targets] == ["de2"]
    assert [t.trunk for t in decision.alternates] == ["world"]
    assert gw.trunk_for_number("+4930123") == "de2"


def test_with_every_trunk_down_or_disabled_the_caller_gets_503_saying_which(
    store: SqliteStore,
) -> None:
    gw = directory(store, down={"berlin", "de", "de2", "world"})
    decision = default_route(invite("sip:+4930123@gw"), ACCOUNT, gw)
    assert decision.reject_status == 503
    # The first trunk in routing order that could not take it: the disabled one.
    assert decision.reject_reason == (
        "Service Unavailable: no trunk serves +4930123 (trunk off is disabled)"
    )
    decision = default_route(invite("sip:+33123@gw"), ACCOUNT, gw)
    assert decision.reject_reason == (
        "Service Unavailable: no trunk serves +33123 (trunk world is down (not answering OPTIONS))"
    )


def test_a_plugin_decision_with_alternates_but_no_targets_is_refused(store: SqliteStore) -> None:
    class Hook:
        def gateway_route_call(self, **kwargs: object) -> RouteDecision:
            return RouteDecision(alternates=(RouteTarget(uri="sip:1@192.0.2.1", trunk="de"),))

    with pytest.raises(RoutingError):
        route_call(Hook(), invite("sip:+49@gw"), ACCOUNT, directory(store))


def test_health_only_probed_trunks_go_down_and_changes_are_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    health = TrunkHealth(["probed"])
    with caplog.at_level(logging.WARNING, logger="gateway.core.calls.trunk_health"):
        health.failed("unprobed", "no response")
        assert health.is_up("unprobed")  # nothing would ever bring it back
        health.failed("probed", "no answer to OPTIONS within 5 s")
        health.failed("probed", "again")
        assert not health.is_up("probed")
        assert health.down == {"probed": "no answer to OPTIONS within 5 s"}
        health.answered("probed")
        health.answered("probed")
        assert health.is_up("probed")
    assert [r.getMessage() for r in caplog.records] == [
        "trunk probed is down: no answer to OPTIONS within 5 s; its calls go to the next trunk",
        "trunk probed is up again (it answered OPTIONS)",
    ]


def test_a_failed_trunks_channel_is_given_back() -> None:
    limits = CallLimits(lambda key: Limit(max_calls=1))
    call = object()
    assert limits.take(call, ("trunk", "de")) is None
    assert limits.take(object(), ("trunk", "de")) == "call limit"
    limits.release_one(call, ("trunk", "de"))
    assert limits.take(object(), ("trunk", "de")) is None
    limits.release_one(call, ("trunk", "de"))  # twice, or never counted: nothing happens
    limits.release(call)
    assert limits.in_progress[("trunk", "de")] == 1


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"sip": {"failover_statuses": [302]}}, "[sip] failover_statuses"),
        ({"sip": {"failover_statuses": [407]}}, "[sip] failover_statuses"),
        ({"sip": {"failover_statuses": [603]}}, "[sip] failover_statuses"),
        (
            {"trunks": [{"name": "t", "address": "udp:192.0.2.1:5060", "options_interval": 1}]},
            "[trunks.t] options_interval",
        ),
        (
            {"trunks": [{"name": "t", "address": "udp:192.0.2.1:5060", "response_timeout": -1}]},
            "[trunks.t] response_timeout",
        ),
    ],
)
def test_bad_failover_settings_name_their_key(data: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError, match=rf"^f\.toml: {re.escape(where)}: "):
        from_mapping(data, file="f.toml")


def test_one_unanswered_probe_is_no_dead_trunk(caplog: pytest.LogCaptureFixture) -> None:
    health = TrunkHealth(["carrier"])
    health.probe_failed("carrier", "no answer to OPTIONS within 5 s")
    assert health.is_up("carrier")
    health.answered("carrier")  # the count starts again
    health.probe_failed("carrier", "no answer to OPTIONS within 5 s")
    assert health.is_up("carrier")
    health.probe_failed("carrier", "no answer to OPTIONS within 5 s")
    assert not health.is_up("carrier")
    assert health.down == {"carrier": "no answer to OPTIONS within 5 s (2 probes in a row)"}
