"""A SIPREC recorder (SRS) named by DNS (RFC 3263), as trunks are: the fake resolver at the
boundary, the recorders SIP agents on the in-memory network, virtual time.

- ``srs = "sip:srs@recorder.example;transport=udp"``: the name's SRV targets, resolved at
  start-up (no DNS query when a call is recorded); the recording INVITE goes to the first, then
  to the next after a 503 or no answer at all (§4.3), never after another refusal; the
  Request-URI keeps the configured name;
- a name that has not resolved: the call goes on unrecorded, and nothing is asked of the DNS;
- what an operator sees: the control socket's ``trunks`` answer (``voipgw trunks``) and the
  metrics show the recorder's name in families and entries of their own.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import trio

import gateway.plugins.taps.siprec as siprec_plugin
from gateway.core.calls.trunk_dns import SrvRecord
from gateway.core.cli import describe_session_target
from gateway.core.control import respond
from gateway.core.ids import SeededIds
from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import render
from gateway.testing.fake_dns import FakeResolver
from gateway.testing.network import Address
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import B2bua, eventually, start_b2bua
from tests.component.calls.siprec_calls import answered_call, srs_answer

NAME = "recorder.example"
SRS_URI = f"sip:srs@{NAME};transport=udp"
FIRST: Address = ("127.0.0.9", 5060)  # the recorder of the lower SRV priority
SECOND: Address = ("127.0.0.10", 5060)


def resolver() -> FakeResolver:
    return FakeResolver(
        srv_records={
            f"_sip._udp.{NAME}": [
                SrvRecord(20, 0, SECOND[1], "b.recorder.example"),
                SrvRecord(10, 0, FIRST[1], "a.recorder.example"),
            ]
        },
        hosts={"a.recorder.example": [FIRST[0]], "b.recorder.example": [SECOND[0]]},
    )


async def recorder_env(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    dns: FakeResolver,
    *,
    first_listens: bool = True,
    srs: str = SRS_URI,
) -> tuple[B2bua, SipAgent | None, SipAgent]:
    env = await start_b2bua(
        nursery,
        tmp_path,
        seed,
        plugins=[("siprec", siprec_plugin)],
        plugin_tables={"enable": ["siprec"], "siprec": {"srs": srs, "trunks": ["carrier"]}},
        dns_resolver=dns,
        alice_auto=None,
    )
    agents = []
    for number, address in enumerate((FIRST, SECOND)):
        if address == FIRST and not first_listens:
            continue  # nothing answers there: datagrams to it are lost
        agent = SipAgent(
            env.network, address, ids=SeededIds(seed + 9 + number), user="srs", auto=None
        )
        await nursery.start(agent.serve)
        agents.append(agent)
    first = agents[0] if first_listens else None
    return env, first, agents[-1]


@pytest.mark.parametrize("first_answers", [503, None])
async def test_the_recording_goes_to_the_next_target_after_a_503_or_no_answer(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    first_answers: int | None,
) -> None:
    dns = resolver()
    env, first, second = await recorder_env(
        nursery, tmp_path, voipgw_seed, dns, first_listens=first_answers is not None
    )
    queries = dns.queries
    call, _, _ = await answered_call(env)
    if first is not None:
        refused = await first.next_call()
        assert str(refused.invite.uri) == SRS_URI  # RFC 3263: the URI as configured
        await refused.answer(503)
    recording = await second.next_call(timeout=40)  # after Timer B (32 s) when the first is mute
    assert str(recording.invite.uri) == SRS_URI
    assert recording.invite.headers.get("Require") == "siprec"
    await recording.answer(200, sdp=srs_answer())
    await second.next_request("ACK", timeout=5)
    assert dns.queries == queries  # the cached answer: no DNS on the call's path
    await call.bye()  # type: ignore[attr-defined]
    bye = await second.next_request("BYE", timeout=10)
    assert bye.request.call_id == recording.invite.call_id
    await eventually(lambda: env.calls == 0)


async def test_a_refusal_other_than_503_does_not_move_to_the_next_target(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, first, second = await recorder_env(nursery, tmp_path, voipgw_seed, resolver())
    assert first is not None
    call, _, _ = await answered_call(env)
    await (await first.next_call()).answer(488)  # RFC 3263 §4.3: the recorder's own answer
    await trio.sleep(40)
    assert second.requests("INVITE") == []
    assert env.calls == 1  # the call goes on, unrecorded
    await call.bye()  # type: ignore[attr-defined]
    await eventually(lambda: env.calls == 0)


async def test_a_recorder_whose_name_has_not_resolved_leaves_the_call_unrecorded(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    dns = resolver()
    dns.failing = True
    env, first, second = await recorder_env(nursery, tmp_path, voipgw_seed, dns)
    assert first is not None
    assert f"session target {SRS_URI}: the DNS of udp:{NAME} is failing" in caplog.text
    assert "no session goes to it until it resolves" in caplog.text
    queries = dns.queries
    call, _, _ = await answered_call(env)
    await eventually(lambda: "not recorded: no SRS took it" in caplog.text)
    assert "its host name has not resolved" in caplog.text
    assert first.requests("INVITE") == [] and second.requests("INVITE") == []
    assert dns.queries == queries  # the retry runs on its own schedule ([dns] retry_interval)
    assert env.calls == 1
    await call.bye()  # type: ignore[attr-defined]
    await eventually(lambda: env.calls == 0)


async def test_what_an_operator_sees_of_a_recorder_named_by_dns(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """``voipgw trunks`` (the control socket's ``trunks`` answer) and the metrics show the
    recorder's name as they show a trunk's: the targets, when they were resolved, the last
    failure with the targets kept; the trunk families and entries stay as they were."""
    dns = resolver()
    env, _, _ = await recorder_env(nursery, tmp_path, voipgw_seed, dns)
    answer = json.loads(respond(b'{"query": "trunks"}\n', env.gateway.control_answer))
    assert {trunk["kind"] for trunk in answer["trunks"]} == {"trunk"}
    assert SRS_URI not in {trunk["name"] for trunk in answer["trunks"]}
    (target,) = answer["session_targets"]
    assert target["kind"] == "session target" and target["name"] == SRS_URI
    assert target["address"] == f"udp:{NAME}"
    assert target["dns"]["targets"] == ["udp:127.0.0.9:5060", "udp:127.0.0.10:5060"]
    assert target["dns"]["error"] is None and abs(target["dns"]["resolved_at"] - time.time()) < 5
    assert describe_session_target(target, time.time())[0] == (f"{SRS_URI}  udp:{NAME}  [resolved]")
    exposition = render(StatusView(env.gateway, CallStatistics())).decode()
    assert f'voipgw_session_target_dns_targets{{uri="{SRS_URI}"}} 2' in exposition
    assert f'voipgw_session_target_dns_resolved_time_seconds{{uri="{SRS_URI}"}}' in exposition
    assert SRS_URI not in "\n".join(
        line for line in exposition.splitlines() if line.startswith("voipgw_trunk_")
    )

    # The DNS stops answering: the targets are kept, the failure shown.
    dns.failing = True
    await trio.sleep(3600)
    (target,) = env.gateway.session_targets_status()
    assert target["dns"]["targets"] == ["udp:127.0.0.9:5060", "udp:127.0.0.10:5060"]
    assert target["dns"]["error"]
    exposition = render(StatusView(env.gateway, CallStatistics())).decode()
    assert f'voipgw_session_target_dns_targets{{uri="{SRS_URI}"}} 2' in exposition


async def test_no_recorder_named_by_dns_no_session_target_family(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    assert env.gateway.session_targets_status() == []
    assert env.gateway.control_answer("trunks")["session_targets"] == []
    exposition = render(StatusView(env.gateway, CallStatistics())).decode()
    assert "voipgw_session_target_dns" not in exposition


async def test_a_recorders_targets_are_known_by_its_name_for_tls(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """RFC 5922 §4: a TLS connection to a target of a name must find that name (the URI's
    host, not the SRV target's) in the certificate. The tls transport asks
    ``Gateway.peer_name`` for it, as for a trunk named by DNS; without it, it checks the
    target's IP address and refuses a recorder whose certificate names recorder.example."""
    env, _, _ = await recorder_env(nursery, tmp_path, voipgw_seed, resolver())
    assert env.gateway.peer_name(FIRST) == NAME
    assert env.gateway.peer_name(SECOND) == NAME


async def test_a_recorder_uri_with_a_password_is_shown_without_it(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 3261 §19.1.1 deprecates sip:user:password@host, but a configured recorder URI may
    carry one: the log, ``voipgw trunks`` and the metric label show ``***`` instead."""
    caplog.set_level(logging.DEBUG)
    secret_uri = f"sip:srs:s3cret@{NAME};transport=udp"
    shown_uri = f"sip:srs:***@{NAME};transport=udp"
    dns = resolver()
    env, _, second = await recorder_env(
        nursery, tmp_path, voipgw_seed, dns, first_listens=False, srs=secret_uri
    )
    answer = json.loads(respond(b'{"query": "trunks"}\n', env.gateway.control_answer))
    (target,) = answer["session_targets"]
    assert target["name"] == shown_uri
    assert describe_session_target(target, time.time())[0].startswith(shown_uri)
    exposition = render(StatusView(env.gateway, CallStatistics())).decode()
    assert f'voipgw_session_target_dns_targets{{uri="{shown_uri}"}} 2' in exposition
    # A recorded call whose first target never answers: "no answer from <uri>" is logged.
    call, _, _ = await answered_call(env)
    recording = await second.next_call(timeout=40)  # after Timer B at the first
    assert str(recording.invite.uri) == secret_uri  # on the wire, the URI as configured
    await recording.answer(503)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert f"session to {shown_uri}: target" in logged
    assert "s3cret" not in logged and "s3cret" not in exposition and "s3cret" not in str(answer)
    await call.bye()  # type: ignore[attr-defined]
