"""What comes after a failed request to a trunk named by DNS (RFC 3263 §4.3), for calls and
MESSAGE alike (``routing.alternates_after``), when a MESSAGE moves on at all, and how
``voipgw trunks`` words a trunk's state and its DNS targets."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from gateway.core.calls.messages import NO_RESPONSE, _fails_over
from gateway.core.calls.routing import SERVER_FAILURES, TrunkHopTarget, alternates_after
from gateway.core.calls.trunk_dns import SrvRecord, TrunkHop, TrunkTargets
from gateway.core.cli import describe_session_target, describe_trunk
from gateway.core.config import DnsSection, TrunkConfig
from gateway.core.interfaces import RouteTarget
from gateway.core.sip.message import Response

URI = "sip:+15550123@sip.carrier.example;transport=udp"


def hop_target(trunk: str, index: int, last: bool = False) -> TrunkHopTarget:
    return TrunkHopTarget(
        uri=URI,
        trunk=trunk,
        hop=TrunkHop("udp", f"192.0.2.{index + 1}", 5060),
        index=index,
        last=last,
        server_name="sip.carrier.example",
    )


FIRST, SECOND = hop_target("carrier", 0), hop_target("carrier", 1, last=True)
BACKUP = RouteTarget("sip:+15550123@198.51.100.7:5060;transport=udp", trunk="backup")
OTHER_NAMED = hop_target("other", 0, last=True)


@pytest.mark.parametrize("status", SERVER_FAILURES)
def test_a_servers_failure_leaves_the_trunks_next_target(status: int) -> None:
    assert alternates_after([SECOND, BACKUP], FIRST, status) == [SECOND, BACKUP]


@pytest.mark.parametrize("status", [500, 502, 504, 486, 0])
def test_the_trunks_answer_skips_its_other_targets_only(status: int) -> None:
    # Another trunk named by DNS keeps its targets: only the failed trunk answered.
    alternates = [SECOND, OTHER_NAMED, BACKUP]
    assert alternates_after(alternates, FIRST, status) == [OTHER_NAMED, BACKUP]


def test_a_trunk_with_an_address_or_no_target_changes_nothing() -> None:
    alternates = [SECOND, BACKUP]
    assert alternates_after(alternates, BACKUP, 500) == alternates
    assert alternates_after(alternates, None, 500) == alternates


def test_a_message_moves_on_after_a_failover_status_or_our_own_timeout() -> None:
    failover = (408, 500, 502, 503, 504)
    assert _fails_over(Response(503, "Service Unavailable"), failover)
    assert not _fails_over(Response(486, "Busy Here"), failover)
    # Our response_timeout is ours: it moves on whatever failover_statuses say, as for a call.
    assert _fails_over(Response(408, NO_RESPONSE), (503,))
    assert not _fails_over(Response(408, "Request Timeout"), (503,))


def test_a_trunk_not_resolved_yet_has_a_status_without_targets() -> None:
    named = TrunkConfig(name="carrier", address="udp:sip.carrier.example")
    plain = TrunkConfig(name="backup", address="udp:198.51.100.7:5060")
    targets = TrunkTargets(
        [named, plain],
        DnsSection(),
        resolver=None,  # type: ignore[arg-type]  # nothing is resolved here
        rng=random.Random(1),
        on_unresolved=lambda trunk, why: None,
        on_resolved=lambda trunk: None,
        on_change=lambda trunk, resolution: None,
    )
    assert targets.status("backup") is None
    status = targets.status("carrier")
    assert status is not None
    assert status.address == "udp:sip.carrier.example"
    assert status.targets == () and status.resolved_at is None and status.error is None


NOW = 1_800_000_000.0


def test_describe_a_named_trunk() -> None:
    trunk = {
        "name": "carrier",
        "address": "sip.carrier.example",
        "enabled": True,
        "up": True,
        "down_reason": None,
        "registered": True,
        "dns": {
            "targets": ["tcp:192.0.2.1:5060", "udp:192.0.2.2:5060"],
            "resolved_at": NOW - 12,
            "next_resolution_at": NOW + 42,
            "ttl": 60,
            "error": None,
        },
    }
    assert describe_trunk(trunk, NOW) == [
        "carrier  sip.carrier.example  [up, registered]",
        "  DNS: resolved 2027-01-15 07:59:48 UTC (12 s ago, TTL 60 s); "
        "next look-up 2027-01-15 08:00:42 UTC (in 42 s)",
        "  targets: tcp:192.0.2.1:5060, udp:192.0.2.2:5060",
    ]


def test_describe_a_trunk_down_before_its_name_resolved_and_one_with_an_address() -> None:
    unresolved = {
        "name": "carrier",
        "address": "udp:sip.carrier.example",
        "enabled": True,
        "up": False,
        "down_reason": "udp:sip.carrier.example does not resolve: SERVFAIL",
        "registered": None,
        "dns": {
            "targets": [],
            "resolved_at": None,
            "next_resolution_at": NOW + 30,
            "ttl": None,
            "error": "SERVFAIL",
        },
    }
    assert describe_trunk(unresolved, NOW) == [
        "carrier  udp:sip.carrier.example  "
        "[down (udp:sip.carrier.example does not resolve: SERVFAIL)]",
        "  DNS: not resolved yet; next look-up 2027-01-15 08:00:30 UTC (in 30 s)",
        "  targets: (none)",
        "  last look-up failed: SERVFAIL",
    ]
    plain = {"name": "backup", "address": "udp:198.51.100.7:5060", "enabled": False, "dns": None}
    assert describe_trunk(plain, NOW) == ["backup  udp:198.51.100.7:5060  [disabled]"]


def test_check_config_resolve_says_what_each_named_trunk_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.core import cli, config
    from gateway.core.calls import trunk_dns
    from gateway.testing.fake_dns import FakeResolver

    resolver = FakeResolver(
        srv_records={"_sip._udp.sip.carrier.example": [SrvRecord(10, 0, 5060, "a.example.net")]},
        hosts={"a.example.net": ["192.0.2.1"]},
        ttl=300,
    )
    monkeypatch.setattr(trunk_dns, "DnsPythonResolver", lambda servers, timeout: resolver)
    loaded = config.from_mapping(
        {
            "trunks": [
                {"name": "carrier", "address": "udp:sip.carrier.example"},
                {"name": "other", "address": "tcp:sip.other.example"},
                {"name": "plain", "address": "udp:198.51.100.7:5060"},
            ]
        }
    )
    assert cli._resolve_named_trunks(loaded, ("udp", "tcp")) == [
        "trunk carrier: udp:sip.carrier.example resolves to udp:192.0.2.1:5060 (TTL 300 s)",
        "trunk other: tcp:sip.other.example does not resolve: "
        "sip.other.example has no SRV, A or AAAA record",
    ]
    plain = config.from_mapping({"trunks": [{"name": "plain", "address": "udp:192.0.2.9:5060"}]})
    assert cli._resolve_named_trunks(plain, ("udp",)) == [
        "no trunk is named by DNS: nothing to resolve"
    ]


SRS = "sip:srs@recorder.example;transport=udp"


def test_describe_a_session_target_named_by_dns() -> None:
    resolved = {
        "kind": "session target",
        "name": SRS,
        "address": "udp:recorder.example",
        "dns": {
            "targets": ["udp:192.0.2.9:5060"],
            "resolved_at": NOW - 5,
            "next_resolution_at": NOW + 49,
            "ttl": 60,
            "error": None,
        },
    }
    assert describe_session_target(resolved, NOW) == [
        f"{SRS}  udp:recorder.example  [resolved]",
        "  DNS: resolved 2027-01-15 07:59:55 UTC (5 s ago, TTL 60 s); "
        "next look-up 2027-01-15 08:00:49 UTC (in 49 s)",
        "  targets: udp:192.0.2.9:5060",
    ]
    unresolved = {
        **resolved,
        "dns": {
            "targets": [],
            "resolved_at": None,
            "next_resolution_at": NOW + 30,
            "ttl": None,
            "error": "SERVFAIL",
        },
    }
    assert describe_session_target(unresolved, NOW) == [
        f"{SRS}  udp:recorder.example  [not resolved: no session goes to it]",
        "  DNS: not resolved yet; next look-up 2027-01-15 08:00:30 UTC (in 30 s)",
        "  targets: (none)",
        "  last look-up failed: SERVFAIL",
    ]


def test_check_config_resolve_says_what_a_recorder_named_by_dns_resolves_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from gateway.core import cli, config
    from gateway.core.calls import trunk_dns
    from gateway.testing.fake_dns import FakeResolver

    resolver = FakeResolver(
        srv_records={
            "_sip._udp.sip.carrier.example": [SrvRecord(10, 0, 5060, "a.example.net")],
            "_sip._udp.recorder.example": [SrvRecord(10, 0, 5070, "srs.example.net")],
        },
        hosts={"a.example.net": ["192.0.2.1"], "srs.example.net": ["192.0.2.9"]},
        ttl=300,
    )
    monkeypatch.setattr(trunk_dns, "DnsPythonResolver", lambda servers, timeout: resolver)
    address = trunk_dns.named_uri_address(SRS)
    assert address is not None
    sessions = {SRS: address}
    named = config.from_mapping(
        {"trunks": [{"name": "carrier", "address": "udp:sip.carrier.example"}]}
    )
    # The trunks first, as before; then each session target named by DNS.
    assert cli._resolve_named_trunks(named, ("udp",), sessions) == [
        "trunk carrier: udp:sip.carrier.example resolves to udp:192.0.2.1:5060 (TTL 300 s)",
        f"session target {SRS}: udp:recorder.example resolves to udp:192.0.2.9:5070 (TTL 300 s)",
    ]
    plain = config.from_mapping({"trunks": [{"name": "plain", "address": "udp:192.0.2.9:5060"}]})
    assert cli._resolve_named_trunks(plain, ("udp",), sessions) == [
        f"session target {SRS}: udp:recorder.example resolves to udp:192.0.2.9:5070 (TTL 300 s)",
    ]
    resolver.failing = True
    (line,) = cli._resolve_named_trunks(plain, ("udp",), sessions)
    assert line.startswith(f"session target {SRS}: udp:recorder.example does not resolve: ")


def test_check_config_resolve_finds_the_siprec_recorder_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The recorders come from the enabled media taps (``MediaTap.sip_targets``), as the
    running gateway finds them: a URI with an IP address is not resolved."""
    from gateway.core import cli
    from gateway.core.calls import trunk_dns
    from gateway.testing.fake_dns import FakeResolver

    resolver = FakeResolver(
        srv_records={"_sip._udp.recorder.example": [SrvRecord(10, 0, 5070, "srs.example.net")]},
        hosts={"srs.example.net": ["192.0.2.9"]},
        ttl=300,
    )
    monkeypatch.setattr(trunk_dns, "DnsPythonResolver", lambda servers, timeout: resolver)
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path}"\n'
        '[plugins]\nenable = ["udp", "siprec"]\n'
        f'[plugins.siprec]\nsrs = "{SRS}"\nfallbacks = ["sip:srs@192.0.2.10:5060"]\n'
        "all_calls = true\n"
    )
    assert cli.main(["check-config", str(path), "--resolve"]) == 0
    out = capsys.readouterr().out
    assert (
        f"{path}: session target {SRS}: udp:recorder.example resolves to udp:192.0.2.9:5070"
    ) in out
    assert "192.0.2.10" not in out


def test_voipgw_trunks_lists_session_targets_after_the_trunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.core import cli, control

    trunk = {"kind": "trunk", "name": "carrier", "address": "udp:192.0.2.1:5060", "dns": None}
    trunk |= {"enabled": True, "up": True, "down_reason": None, "registered": None}
    target = {"kind": "session target", "name": SRS, "address": "udp:recorder.example"}
    target["dns"] = {"targets": ["udp:192.0.2.9:5070"], "resolved_at": None, "ttl": None}
    answers = {"trunks": [trunk], "session_targets": [target]}
    monkeypatch.setattr(control, "ask", lambda path, query: answers)
    state = ["--state-dir", str(tmp_path)]
    assert cli.main(["trunks", "--json", *state]) == 0
    # One list as before, the trunks first; each entry says its kind.
    assert json.loads(capsys.readouterr().out) == [trunk, target]
    assert cli.main(["trunks", *state]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "carrier  udp:192.0.2.1:5060  [up]"
    assert out[1] == "session targets (named by DNS):"
    assert out[2] == f"{SRS}  udp:recorder.example  [resolved]"
    assert out[4] == "  targets: udp:192.0.2.9:5070"
    # A gateway from before session targets were shown: the trunks alone.
    del answers["session_targets"]
    assert cli.main(["trunks", "--json", *state]) == 0
    assert json.loads(capsys.readouterr().out) == [trunk]
