"""Requests the gateway originates outside calls towards a trunk named by DNS (RFC 3263), with
a fake resolver at the boundary, on the in-memory network in virtual time:

- an account's message-summary SUBSCRIBE relayed to a voicemail trunk named by DNS (each form:
  SRV, NAPTR, A records) goes to the trunk's cached targets, the next after a silent one
  (``response_timeout``) or a 503, never the next after another failure; a trunk whose name
  has not resolved is unreachable (503), and no DNS query is made for the SUBSCRIBE; one to
  a ``sips:`` URI goes to the trunk's TLS targets only (480 without any); one its last target
  never gets or never answers marks the (probed) trunk down, as calls and MESSAGE do;
- a MESSAGE to a number such a trunk serves follows the rule calls follow: 503 or silence
  (``response_timeout``) sends it to the trunk's next target, a 500 to the next trunk;
- what an operator sees (``Gateway.trunks_status``, the control socket's ``trunks``,
  ``voipgw trunks``, the metrics): the targets, when they were resolved and are resolved next,
  the last failure with the targets kept.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.calls.trunk_dns import NaptrRecord, SrvRecord
from gateway.core.cli import describe_trunk
from gateway.core.control import respond
from gateway.core.ids import SeededIds
from gateway.core.sip.dialog import Dialog
from gateway.core.sip.message import Request
from gateway.core.status import CallStatistics, StatusView
from gateway.plugins.metrics.collect import render
from gateway.testing.fake_dns import FakeResolver
from gateway.testing.network import Address
from gateway.testing.sip_agent import Received, SipAgent
from tests.component.calls.b2bua_env import ALICE_DID, GW, TRUNK, B2bua, start_b2bua
from tests.component.calls.mwi_subscriptions import (
    SUMMARY,
    SUMMARY_TYPE,
    Voicemail,
    subscribe_request,
)
from tests.component.calls.sips_phones import ALICE_TLS, assert_sips_not_allowed, tls_phone

NAME = "sip.carrier.example"
DEAD: Address = ("127.0.0.6", 5060)  # a target nothing answers at
SILENT: Address = ("127.0.0.8", 5060)  # another
FIRST: Address = ("127.0.0.5", 5060)  # a first target that answers (503, 500)
BACKUP: Address = ("127.0.0.7", 5060)  # another trunk serving the same numbers
TLS_TARGET: Address = ("127.0.0.6", 5061)  # the carrier's target over TLS
NUMBER = "+15550123"
TEXT = "text/plain"


def resolver_for(form: str, first: Address, second: Address = TRUNK) -> FakeResolver:
    """The carrier's records in ``form``: ``first`` then ``second`` (both on port 5060)."""
    srv = [
        SrvRecord(20, 0, second[1], "b.carrier.example"),
        SrvRecord(10, 0, first[1], "a.carrier.example"),
    ]
    hosts = {"a.carrier.example": [first[0]], "b.carrier.example": [second[0]]}
    if form == "srv":
        return FakeResolver(srv_records={f"_sip._udp.{NAME}": srv}, hosts=hosts)
    if form == "naptr":
        return FakeResolver(
            naptr_records={NAME: [NaptrRecord(10, 10, "S", "SIP+D2U", "", f"_sip._udp.{NAME}")]},
            srv_records={f"_sip._udp.{NAME}": srv},
            hosts=hosts,
        )
    assert form == "a"  # udp:NAME:5060, its addresses in the DNS's order
    return FakeResolver(hosts={NAME: [first[0], second[0]]})


ADDRESSES = {"srv": f"udp:{NAME}", "naptr": NAME, "a": f"udp:{NAME}:5060"}
# RFC 3263 §4.2: the Request-URI names the trunk's address as configured, not the target.
REQUEST_URIS = {
    "srv": f"sip:{ALICE_DID}@{NAME};transport=udp",
    "naptr": f"sip:{ALICE_DID}@{NAME}",
    "a": f"sip:{ALICE_DID}@{NAME}:5060;transport=udp",
}


async def start(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    resolver: FakeResolver,
    *,
    form: str = "srv",
    voicemail: bool = True,
    with_backup: bool = False,
    dns: dict[str, Any] | None = None,
    carrier: dict[str, Any] | None = None,
) -> B2bua:
    extra = []
    if with_backup:
        extra.append(
            {
                "name": "backup",
                "address": f"udp:{BACKUP[0]}:{BACKUP[1]}",
                "prefixes": ["+1"],
                "allowed_sources": [],
            }
        )
    return await start_b2bua(
        nursery,
        tmp_path,
        seed,
        carrier={
            "address": ADDRESSES[form],
            "response_timeout": 2.0,
            "voicemail": voicemail,
            **(carrier or {}),
        },
        extra_trunks=extra,
        dns_resolver=resolver,
        dns=dns,
        alice_auto=None,
    )


async def agent_at(env: B2bua, nursery: trio.Nursery, address: Address, seed: int) -> SipAgent:
    agent = SipAgent(env.network, address, ids=SeededIds(seed), user="server", proxy=GW, auto=None)
    await nursery.start(agent.serve)
    return agent


def sent_to(env: B2bua, address: Address, method: bytes) -> list[Any]:
    return [d for d in env.network.capture if d.dst == address and d.data.startswith(method)]


async def subscribe(env: B2bua) -> tuple[Request, Any]:
    return await env.alice.send_authenticated(subscribe_request(env.alice))


# -- message-summary subscriptions to a voicemail trunk named by DNS ---------------------------


@pytest.mark.parametrize("form", ["srv", "naptr", "a"])
async def test_a_subscription_leaves_a_silent_target_for_the_next(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    form: str,
) -> None:
    resolver = resolver_for(form, DEAD)
    env = await start(nursery, tmp_path, voipgw_seed, resolver, form=form)
    voicemail = Voicemail(env.trunk)
    queries = resolver.queries
    started = trio.current_time()
    sent, final = await subscribe(env)
    assert final.status == 200, final.reason
    assert resolver.queries == queries  # the cached answer: no DNS on the request path
    # The first target had the SUBSCRIBE for the trunk's response_timeout (2 s), unanswered.
    assert sent_to(env, DEAD, b"SUBSCRIBE")
    assert 2.0 <= trio.current_time() - started < 3.0
    (relayed,) = voicemail.subscribes
    assert str(relayed.uri) == REQUEST_URIS[form]
    assert relayed.cseq.number == 2  # a new transaction of the same subscription

    # The voicemail's NOTIFY reaches alice in her dialog.
    dialog = Dialog.create_uac(sent, final)
    env.alice.add_dialog(dialog)
    assert (await voicemail.notify()).status == 200
    notify = (await env.alice.next_request("NOTIFY")).request
    assert notify.body == SUMMARY and notify.content_type == SUMMARY_TYPE

    # Her refresh goes to the target that took the subscription, in its dialog.
    dead_before = len(sent_to(env, DEAD, b"SUBSCRIBE"))
    refresh = dialog.create_request(
        "SUBSCRIBE",
        via=env.alice.new_via(),
        contact=env.alice.contact,
        extra=[("Event", "message-summary"), ("Expires", "900")],
    )
    answer = await (await env.alice.send(refresh, GW)).final()
    assert answer.status == 200
    assert voicemail.subscribes[-1].to.tag is not None
    assert len(sent_to(env, DEAD, b"SUBSCRIBE")) == dead_before
    assert env.gateway.trunk_health.is_up("carrier")


@pytest.mark.parametrize(("status", "next_target"), [(503, True), (500, False)])
async def test_a_subscription_goes_to_the_next_target_after_a_503_only(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    status: int,
    next_target: bool,
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed, resolver_for("srv", FIRST))
    first = Voicemail(await agent_at(env, nursery, FIRST, voipgw_seed + 5), status=status)
    second = Voicemail(env.trunk)
    _, final = await subscribe(env)
    (refused,) = first.subscribes
    if not next_target:
        # RFC 3263 §4.3: only a server's failure moves on; a 500 is the trunk's answer.
        assert final.status == 500
        assert second.subscribes == []
        return
    assert final.status == 200, final.reason
    (taken,) = second.subscribes
    # The same subscription (the trunk's NOTIFYs find it), a new transaction.
    assert taken.call_id == refused.call_id and taken.from_.tag == refused.from_.tag
    assert taken.cseq.number == refused.cseq.number + 1
    assert str(taken.uri) == str(refused.uri) == REQUEST_URIS["srv"]
    assert (await second.notify()).status == 200
    assert (await env.alice.next_request("NOTIFY")).request.body == SUMMARY


async def test_a_voicemail_trunk_whose_name_has_not_resolved_is_unreachable(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    resolver = resolver_for("srv", DEAD)
    resolver.failing = True
    env = await start(nursery, tmp_path, voipgw_seed, resolver, dns={"timeout": 1.0})
    voicemail = Voicemail(env.trunk)
    queries = resolver.queries
    _, final = await subscribe(env)
    assert final.status == 503
    assert "voicemail unreachable" in final.reason
    assert resolver.queries == queries  # nothing asked for it: the trunk is down
    assert voicemail.subscribes == [] and sent_to(env, DEAD, b"SUBSCRIBE") == []
    assert env.gateway.subscriptions is not None and len(env.gateway.subscriptions) == 0


SECOND_DEAD: Address = ("127.0.0.8", 5060)  # another target nothing answers at


@pytest.mark.parametrize("failure", ["first target only", "no response", "transport error"])
async def test_a_subscription_failing_at_the_last_target_marks_the_trunk_down(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    """As a call's INVITE and a MESSAGE: a probed voicemail trunk whose last target never gets
    the SUBSCRIBE (a transport error) or never answers it (``response_timeout``) is down, with
    the same log line; a silent target with another after it is one server's failure (RFC 3263
    §4.3) and the trunk stays up."""
    caplog.set_level(logging.WARNING, logger="gateway.core.calls.trunk_health")
    second = SECOND_DEAD if failure == "no response" else TRUNK
    # Probed (options_interval): the first probe, at DEAD, gives up after 32 s, long after.
    env = await start(
        nursery,
        tmp_path,
        voipgw_seed,
        resolver_for("srv", DEAD, second),
        carrier={"options_interval": 60.0},
    )
    voicemail = Voicemail(env.trunk)
    health = env.gateway.trunk_health
    if failure == "transport error":
        endpoint = env.gateway.endpoint
        send_request = endpoint.send_request

        async def refused(request: Request, **kwargs: Any) -> Any:
            if kwargs["address"] == TRUNK and request.method == "SUBSCRIBE":
                raise ConnectionRefusedError(111, "Connection refused")
            return await send_request(request, **kwargs)

        monkeypatch.setattr(endpoint, "send_request", refused)
    _, final = await subscribe(env)
    assert sent_to(env, DEAD, b"SUBSCRIBE")  # the first target was tried and was silent
    if failure == "first target only":
        assert final.status == 200, final.reason
        assert len(voicemail.subscribes) == 1
        assert health.is_up("carrier") and health.down == {}
        return
    if failure == "no response":
        # Never a 408 to the phone's SUBSCRIBE (RFC 4320 §4.2): 504, within its Timer F.
        assert (final.status, final.reason) == (504, "Server Time-out (no response in time)")
        assert sent_to(env, SECOND_DEAD, b"SUBSCRIBE")
        why = "no response to a SUBSCRIBE within 2 s"
    else:
        assert final.status == 503
        why = "cannot send to it: ECONNREFUSED (Connection refused)"
    assert voicemail.subscribes == []
    assert health.down == {"carrier": why}
    assert f"trunk carrier is down: {why}" in caplog.text
    assert not health.is_up("carrier")


@pytest.mark.parametrize("offers_tls", [True, False])
async def test_a_sips_subscription_goes_to_the_trunks_tls_targets_only(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    offers_tls: bool,
) -> None:
    # RFC 5630 §3.1.3: TLS on every hop. The NAPTR records prefer UDP (the carrier's agent at
    # 127.0.0.2), then TLS (another at 127.0.0.6:5061) when the carrier offers it.
    naptr = [NaptrRecord(10, 10, "S", "SIP+D2U", "", f"_sip._udp.{NAME}")]
    if offers_tls:
        naptr.append(NaptrRecord(10, 20, "S", "SIPS+D2T", "", f"_sips._tcp.{NAME}"))
    resolver = FakeResolver(
        naptr_records={NAME: naptr},
        srv_records={
            f"_sip._udp.{NAME}": [SrvRecord(10, 0, TRUNK[1], "b.carrier.example")],
            f"_sips._tcp.{NAME}": [SrvRecord(10, 0, TLS_TARGET[1], "t.carrier.example")],
        },
        hosts={"b.carrier.example": [TRUNK[0]], "t.carrier.example": [TLS_TARGET[0]]},
    )
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        sip={"listen": ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061"]},
        tls_stand_in=True,
        carrier={"address": NAME, "voicemail": True},
        dns_resolver=resolver,
        alice_auto=None,
    )
    over_udp = Voicemail(env.trunk)
    over_tls = Voicemail(await agent_at(env, nursery, TLS_TARGET, voipgw_seed + 5))
    phone = await tls_phone(env, nursery, ALICE_TLS, "alice", "wonderland-42", voipgw_seed + 6)
    request = subscribe_request(phone, uri="sips:alice@127.0.0.1:5061")
    _, final = await phone.send_authenticated(request)
    assert over_udp.subscribes == []
    if not offers_tls:
        assert final.status == 480
        assert_sips_not_allowed(final)
        return
    assert final.status == 200, final.reason
    (relayed,) = over_tls.subscribes
    assert str(relayed.uri) == f"sip:{ALICE_DID}@{NAME}"


# -- MESSAGE to a trunk named by DNS -------------------------------------------------------------


def answer_messages(agent: SipAgent, status: int) -> list[Request]:
    got: list[Request] = []

    async def answer(received: Received) -> bool:
        got.append(received.request)
        await agent.respond(received, status)
        return True

    agent.out_of_dialog = answer
    return got


async def alice_messages(env: B2bua) -> int:
    request = env.alice.new_request(
        "MESSAGE", f"sip:{NUMBER}@127.0.0.1:5060", body=b"hi", content_type=TEXT
    )
    _, final = await env.alice.send_authenticated(request)
    return final.status


@pytest.mark.parametrize(("status", "reaches"), [(503, "second target"), (500, "next trunk")])
async def test_a_message_fails_over_as_a_call_does(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    status: int,
    reaches: str,
) -> None:
    env = await start(
        nursery, tmp_path, voipgw_seed, resolver_for("srv", FIRST), voicemail=False,
        with_backup=True,
    )  # fmt: skip
    first = answer_messages(await agent_at(env, nursery, FIRST, voipgw_seed + 5), status)
    second = answer_messages(env.trunk, 202)
    backup = answer_messages(await agent_at(env, nursery, BACKUP, voipgw_seed + 6), 200)
    final = await alice_messages(env)
    assert len(first) == 1
    assert str(first[0].uri) == f"sip:{NUMBER}@{NAME};transport=udp"
    if reaches == "second target":
        assert final == 202
        assert len(second) == 1 and backup == []
    else:  # RFC 3263 §4.3: the trunk answered; its other targets are not asked
        assert final == 200
        assert second == [] and len(backup) == 1


async def test_a_message_leaves_a_silent_target_after_the_response_timeout(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start(nursery, tmp_path, voipgw_seed, resolver_for("srv", DEAD), voicemail=False)
    second = answer_messages(env.trunk, 202)
    started = trio.current_time()
    assert await alice_messages(env) == 202
    assert 2.0 <= trio.current_time() - started < 3.0
    assert sent_to(env, DEAD, b"MESSAGE") and len(second) == 1


async def test_a_message_tried_on_silent_targets_past_its_senders_timeout_is_no_internal_error(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A carrier whose every target is silent, without ``response_timeout`` (the default):
    each attempt waits out its Timer F (64*T1), and with the default failover statuses the
    MESSAGE goes on to the next target and the next trunk, past the sender's own Timer F. The
    relay is working, not lost: no internal error (the endpoint's bound on requests nothing
    answers, TransactionUnanswered, is for bugs), and the sender's transaction is answered and
    ends as any other."""
    caplog.set_level(logging.INFO)
    env = await start(
        nursery, tmp_path, voipgw_seed, resolver_for("srv", DEAD, SILENT), voicemail=False,
        with_backup=True, carrier={"response_timeout": 0.0},
    )  # fmt: skip
    endpoint = env.gateway.endpoint
    errors = endpoint.statistics.internal_errors
    await alice_messages(env)  # the sender's own Timer F, or an answer
    await trio.sleep(4 * 64 * 0.5)  # every attempt over, and what the gateway keeps after
    assert sent_to(env, DEAD, b"MESSAGE")
    assert endpoint.statistics.internal_errors == errors
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert endpoint.transactions.sizes()["sip_unanswered_requests"] == 0
    # RFC 4320 §4.2: no 408 to a non-INVITE (it would reach the sender after its Timer F);
    # the relay gave up.
    assert [d for d in env.network.capture if d.data.startswith(b"SIP/2.0 408")] == []
    assert "given up, none sent" in caplog.text


# -- what an operator sees -----------------------------------------------------------------------


async def test_trunks_status_shows_the_targets_and_when_they_were_resolved(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    resolver = resolver_for("srv", DEAD)
    env = await start(
        nursery, tmp_path, voipgw_seed, resolver, with_backup=True, dns={"retry_interval": 5.0}
    )
    status = {trunk["name"]: trunk for trunk in env.gateway.trunks_status()}
    assert status["backup"]["dns"] is None  # an address: nothing resolved
    assert status["backup"]["address"] == f"udp:{BACKUP[0]}:{BACKUP[1]}"
    carrier = status["carrier"]
    assert carrier["address"] == f"udp:{NAME}" and carrier["up"] is True
    dns = carrier["dns"]
    assert isinstance(dns, dict)
    assert dns["targets"] == ["udp:127.0.0.6:5060", "udp:127.0.0.2:5060"]  # by priority
    assert dns["ttl"] == 60.0 and dns["error"] is None
    # 90 % of the TTL after the answer (trunk_dns.refresh_in), in Unix time.
    assert dns["next_resolution_at"] - dns["resolved_at"] == pytest.approx(54.0)
    assert abs(dns["resolved_at"] - time.time()) < 5
    # The metrics say as much: the targets, and when (a trunk with an address: no series).
    exposition = render(StatusView(env.gateway, CallStatistics())).decode()
    assert 'voipgw_trunk_dns_targets{trunk="carrier"} 2' in exposition
    assert 'voipgw_trunk_dns_targets{trunk="backup"}' not in exposition
    (line,) = [
        line
        for line in exposition.splitlines()
        if line.startswith('voipgw_trunk_dns_resolved_time_seconds{trunk="carrier"}')
    ]
    assert float(line.split()[-1]) == pytest.approx(dns["resolved_at"], abs=1)

    # The DNS stops answering: the targets are kept, the failure and the next try shown.
    resolver.failing = True
    await trio.sleep(60)
    answer = json.loads(respond(b'{"query": "trunks"}\n', env.gateway.control_answer))
    (carrier,) = [trunk for trunk in answer["trunks"] if trunk["name"] == "carrier"]
    dns = carrier["dns"]
    assert dns["targets"] == ["udp:127.0.0.6:5060", "udp:127.0.0.2:5060"]
    assert "no answer" in dns["error"]
    assert 0 < dns["next_resolution_at"] - time.time() <= 5.0 + 1
    lines = describe_trunk(carrier, time.time())
    assert lines[0] == f"carrier  udp:{NAME}  [up]"
    assert lines[1].startswith("  DNS: resolved ") and "TTL 60 s" in lines[1]
    assert lines[2] == "  targets: udp:127.0.0.6:5060, udp:127.0.0.2:5060"
    assert lines[3].startswith("  last look-up failed: ")
    assert lines[3].endswith("; the targets above are kept")
