"""Trunk failover and health through the B2BUA: two trunks serve +1, "carrier" (listed first,
at 127.0.0.2) and "backup" (127.0.0.5); alice calls +15551234.

- the carrier's 503 sends the call to the backup, which answers: one call, through the backup;
  the callee's own answer (486) goes to alice with no failover; with every trunk failing alice
  gets the failure, and the trunks were tried one at a time, never both ringing;
- a carrier that does not respond at all within its ``response_timeout`` is given up for the
  backup; its late 2xx is ACKed and BYEd, its late 180 CANCELled;
- OPTIONS probes: a carrier whose answers stop is marked down (logged) and skipped, calls go
  straight to the backup; when it answers again it takes calls again; with both down the
  caller gets 503 saying so;
- a MESSAGE the carrier never gets (a transport error) or never answers (``response_timeout``)
  marks it down as a call does; one it refuses (503) does not.

Signalling on the in-memory network (link impairments delay or drop a trunk's datagrams), in
virtual time. Set-up as b2bua_env.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.ids import SeededIds
from gateway.core.sip.message import Request
from gateway.testing.sip_agent import AutoAnswer, Received, SipAgent
from tests.component.calls.b2bua_env import (
    GW,
    TRUNK,
    B2bua,
    answered_call,
    eventually,
    start_b2bua,
)
from tests.component.calls.transfer_calls import eventually_notify, refer

BACKUP = ("127.0.0.5", 5060)
NUMBER = "+15551234"


async def with_backup(
    nursery: trio.Nursery,
    tmp_path: Path,
    seed: int,
    *,
    carrier: dict[str, Any] | None = None,
    backup: dict[str, Any] | None = None,
    carrier_answers: AutoAnswer | None = None,
) -> tuple[B2bua, SipAgent]:
    env = await start_b2bua(
        nursery,
        tmp_path,
        seed,
        carrier=carrier,
        extra_trunks=[
            {
                "name": "backup",
                "address": f"udp:{BACKUP[0]}:{BACKUP[1]}",
                "prefixes": ["+1"],
                "allowed_sources": [],
                **(backup or {}),
            }
        ],
    )
    env.trunk.auto = carrier_answers
    agent = SipAgent(
        env.network, BACKUP, ids=SeededIds(seed + 5), user="backup", proxy=GW, media_port=41000
    )
    await nursery.start(agent.serve)
    return env, agent


async def alice_calls(env: B2bua) -> Any:
    """alice calls NUMBER, answering the 407; the call (its final response still to come)."""
    call = await env.alice.invite(f"sip:{NUMBER}@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    return call


async def test_a_carriers_503_fails_over_to_the_next_trunk(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, backup = await with_backup(
        nursery, tmp_path, voipgw_seed, carrier_answers=AutoAnswer(ring=True, status=503)
    )
    call = await alice_calls(env)
    final = await call.final()
    assert final.status == 200, final.reason
    assert (await backup.next_call(timeout=5)).invite.uri.user == NUMBER  # type: ignore[union-attr]
    assert len(env.trunk.requests("INVITE")) == 1
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.b is not None and gateway_call.b.target.trunk == "backup"  # type: ignore[union-attr]
    # The call record says which carrier failed, with what, and where the call went.
    assert gateway_call.security_record()["failovers"] == [
        {"trunk": "carrier", "status": 503, "reason": "Service Unavailable", "to": "backup"}
    ]
    # The carrier's channel was given back; the backup's is held by the call.
    assert dict(env.gateway.calls.limits.in_progress) == {
        ("account", "alice"): 1,
        ("trunk", "backup"): 1,
    }
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_the_callees_own_answer_is_not_failed_over(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, backup = await with_backup(
        nursery, tmp_path, voipgw_seed, carrier_answers=AutoAnswer(ring=True, status=486)
    )
    call = await alice_calls(env)
    assert (await call.final()).status == 486
    await eventually(lambda: env.calls == 0)
    assert backup.requests("INVITE") == []


async def test_every_trunk_failing_gives_the_caller_the_failure_one_trunk_at_a_time(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, backup = await with_backup(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier_answers=AutoAnswer(ring=True, status=503, delay=2.0),
    )
    backup.auto = AutoAnswer(ring=True, status=500)
    call = await alice_calls(env)
    assert (await call.final()).status == 503
    await eventually(lambda: env.calls == 0)
    # The backup's INVITE went out only after the carrier's 503: serial, not parallel.
    carrier_503 = next(
        d.time for d in env.network.capture if d.src == TRUNK and d.data.startswith(b"SIP/2.0 503")
    )
    backup_invite = next(
        d.time for d in env.network.capture if d.dst == BACKUP and d.data.startswith(b"INVITE")
    )
    assert backup_invite > carrier_503


async def test_a_silent_carrier_is_given_up_and_its_late_answer_hung_up(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, backup = await with_backup(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"response_timeout": 1.0},
        carrier_answers=AutoAnswer(ring=True, status=200),
    )
    env.network.set_link(TRUNK, GW, delay=3.0)  # everything the carrier says comes 3 s late
    call = await alice_calls(env)
    started = trio.current_time()
    final = await call.final()
    assert final.status == 200
    assert 1.0 <= trio.current_time() - started < 2.0  # the backup answered after 1 s
    assert len(backup.requests("INVITE")) == 1
    # The carrier's late 200 is ACKed and its dialog ended; the call stays on the backup.
    await eventually(lambda: len(env.trunk.requests("BYE")) == 1)
    assert len(env.trunk.requests("ACK")) == 1
    assert env.calls == 1
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_silent_carriers_late_ringing_is_cancelled(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, backup = await with_backup(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"response_timeout": 1.0},
        carrier_answers=AutoAnswer(ring=True, status=None),  # rings for ever
    )
    env.network.set_link(TRUNK, GW, delay=3.0)
    call = await alice_calls(env)
    assert (await call.final()).status == 200
    assert len(backup.requests("INVITE")) == 1
    await eventually(lambda: len(env.trunk.requests("CANCEL")) == 1)
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_probes_take_a_silent_carrier_out_of_routing_and_back(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.core.calls.trunk_health")
    env, backup = await with_backup(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"options_interval": 5.0},
        carrier_answers=AutoAnswer(ring=True, status=200),
    )
    health = env.gateway.trunk_health
    await eventually(lambda: len(env.trunk.requests("OPTIONS")) >= 1)
    assert health.is_up("carrier")
    env.network.set_link(TRUNK, GW, drop=1.0)  # the carrier's answers stop
    await eventually(lambda: not health.is_up("carrier"), timeout=30)
    assert "trunk carrier is down: no answer to OPTIONS within 5 s (2 probes in a row)" in (
        caplog.text
    )

    invites_before = len(env.trunk.requests("INVITE"))
    call = await alice_calls(env)
    assert (await call.final()).status == 200
    assert len(backup.requests("INVITE")) == 1
    assert len(env.trunk.requests("INVITE")) == invites_before  # not even tried
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)

    env.network.clear_link(TRUNK, GW)
    await eventually(lambda: health.is_up("carrier"), timeout=30)
    assert "trunk carrier is up again" in caplog.text
    call = await alice_calls(env)
    assert (await call.final()).status == 200
    assert len(env.trunk.requests("INVITE")) == invites_before + 1
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_with_every_trunk_down_the_caller_is_told(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, backup = await with_backup(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"options_interval": 5.0},
        backup={"options_interval": 5.0},
    )
    env.network.set_link(TRUNK, GW, drop=1.0)
    env.network.set_link(BACKUP, GW, drop=1.0)
    health = env.gateway.trunk_health
    await eventually(lambda: not health.is_up("carrier") and not health.is_up("backup"), timeout=30)
    call = await alice_calls(env)
    final = await call.final()
    assert final.status == 503
    assert "trunk carrier is down" in final.reason
    assert backup.requests("INVITE") == [] and env.trunk.requests("INVITE") == []


async def test_a_trunk_that_cannot_be_sent_to_fails_over_at_once(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, backup = await with_backup(nursery, tmp_path, voipgw_seed)
    endpoint = env.gateway.endpoint
    send_request = endpoint.send_request

    async def carrier_down(request: Any, *, address: Any = None, **kwargs: Any) -> Any:
        if request.method == "INVITE" and tuple(address) == TRUNK:
            raise ConnectionRefusedError(111, "Connection refused")  # a TCP/TLS trunk that is down
        return await send_request(request, address=address, **kwargs)

    endpoint.send_request = carrier_down  # type: ignore[method-assign]
    call = await alice_calls(env)
    assert (await call.final()).status == 200
    assert len(backup.requests("INVITE")) == 1
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_silent_carriers_late_answer_to_a_late_offer_is_hung_up_too(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, backup = await with_backup(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"response_timeout": 1.0},
        carrier_answers=AutoAnswer(ring=False, status=200),
    )
    backup.auto = AutoAnswer(
        ring=True, status=200, delay=10.0
    )  # rings while the carrier's 200 comes
    env.network.set_link(TRUNK, GW, delay=3.0)
    call = await env.alice.invite(f"sip:{NUMBER}@127.0.0.1:5060", sdp=b"")  # a late offer
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    assert env.gateway.calls is not None
    (gateway_call,) = env.gateway.calls.calls
    assert gateway_call.b is not None and gateway_call.b.target.trunk == "backup"  # type: ignore[union-attr]
    assert backup.requests("CANCEL") == []
    await eventually(lambda: len(env.trunk.requests("BYE")) == 1)
    assert dict(env.gateway.calls.limits.in_progress) == {
        ("account", "alice"): 1,
        ("trunk", "backup"): 1,
    }


async def test_a_trunk_answering_at_once_is_not_given_up(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Its 100 may be handled before the INVITE's send returns: the response_timeout must not
    be armed after it (the carrier then rings for longer than the timeout)."""
    env, backup = await with_backup(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"response_timeout": 1.0},
        carrier_answers=AutoAnswer(ring=True, status=200, delay=5.0),
    )
    endpoint = env.gateway.endpoint
    send_request = endpoint.send_request

    async def slow_return(request: Any, **kwargs: Any) -> Any:
        client = await send_request(request, **kwargs)
        if request.method == "INVITE":
            await trio.sleep(0.05)  # the 100 arrives meanwhile
        return client

    endpoint.send_request = slow_return  # type: ignore[method-assign]
    call = await alice_calls(env)
    assert (await call.final()).status == 200
    assert env.trunk.requests("CANCEL") == [] and backup.requests("INVITE") == []
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_blind_transfer_to_a_number_fails_over_as_a_call_does(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The carrier calls alice, who transfers it to +15551234: the carrier's own INVITE for
    that number gets 503, the backup's gets an answer, and the transfer completes."""
    env, backup = await with_backup(nursery, tmp_path, voipgw_seed)
    _, alice_leg = await answered_call(env)
    env.trunk.auto = AutoAnswer(ring=True, status=503)  # new calls; re-INVITEs still answered
    assert await refer(alice_leg, f"<sip:{NUMBER}@127.0.0.1:5060>") == 202
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    (invite,) = backup.requests("INVITE")
    assert invite.uri.user == NUMBER  # type: ignore[union-attr]
    assert env.gateway.calls is not None
    assert env.gateway.calls.failovers["carrier"] == 1


async def test_a_silent_carrier_is_given_up_in_a_blind_transfer_too(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """alice transfers the carrier's call to +15551234: the carrier says nothing to that
    INVITE within its response_timeout, so the backup is called, answers, and the transfer
    completes long before [sip] ring_timeout; the carrier's late 200 is ACKed and BYEd."""
    env, backup = await with_backup(
        nursery, tmp_path, voipgw_seed, carrier={"response_timeout": 1.0}
    )
    _, alice_leg = await answered_call(env)
    env.trunk.auto = AutoAnswer(ring=True, status=200)
    env.network.set_link(TRUNK, GW, delay=3.0)  # everything the carrier says comes 3 s late
    started = trio.current_time()
    assert await refer(alice_leg, f"<sip:{NUMBER}@127.0.0.1:5060>") == 202
    await eventually(lambda: len(backup.requests("INVITE")) == 1)
    assert 1.0 <= trio.current_time() - started < 2.0
    await eventually_notify(env.alice, "SIP/2.0 200 OK")
    assert env.gateway.calls is not None
    assert env.gateway.calls.failovers["carrier"] == 1
    await eventually(lambda: len(env.trunk.requests("BYE")) == 1)  # its late 200's dialog
    assert env.calls == 1


# -- a MESSAGE (RFC 3428) counts against a trunk as a call does ---------------------------------


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
        "MESSAGE", f"sip:{NUMBER}@127.0.0.1:5060", body=b"hi", content_type="text/plain"
    )
    _, final = await env.alice.send_authenticated(request)
    return final.status


@pytest.mark.parametrize("failure", ["no response", "transport error"])
async def test_a_message_the_carrier_never_gets_marks_it_down_as_a_call_does(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.core.calls.trunk_health")
    env, backup = await with_backup(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"options_interval": 60.0, "response_timeout": 1.0},
        carrier_answers=AutoAnswer(ring=True, status=200),
    )
    health = env.gateway.trunk_health
    await eventually(lambda: len(env.trunk.requests("OPTIONS")) >= 1)
    assert health.is_up("carrier")
    carrier = answer_messages(env.trunk, 200)
    relayed = answer_messages(backup, 202)
    if failure == "no response":
        env.network.set_link(TRUNK, GW, delay=3.0)  # its answers come after response_timeout
        why = "no response to a MESSAGE within 1 s"
    else:
        endpoint = env.gateway.endpoint
        send_request = endpoint.send_request

        async def refused(request: Request, **kwargs: Any) -> Any:
            if kwargs["address"] == TRUNK:
                raise ConnectionRefusedError(111, "Connection refused")
            return await send_request(request, **kwargs)

        monkeypatch.setattr(endpoint, "send_request", refused)
        why = "cannot send to it: ECONNREFUSED (Connection refused)"

    assert await alice_messages(env) == 202  # the backup took it
    assert len(relayed) == 1
    # Marked down by the same rule, the same log line and health (voipgw_trunk_up) as a call.
    assert health.down == {"carrier": why}
    assert f"trunk carrier is down: {why}" in caplog.text
    # Skipped by routing from now on: the next MESSAGE goes straight to the backup.
    tried = len(carrier) + len(sent_messages(env))
    assert await alice_messages(env) == 202
    assert len(relayed) == 2
    assert len(carrier) + len(sent_messages(env)) == tried


def sent_messages(env: B2bua) -> list[Any]:
    return [d for d in env.network.capture if d.dst == TRUNK and d.data.startswith(b"MESSAGE")]


async def test_a_message_the_carrier_refuses_does_not_mark_it_down(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env, backup = await with_backup(
        nursery,
        tmp_path,
        voipgw_seed,
        carrier={"options_interval": 60.0, "response_timeout": 1.0},
        carrier_answers=AutoAnswer(ring=True, status=200),
    )
    answer_messages(env.trunk, 503)  # an answer: the trunk is there, as for a call's 503
    relayed = answer_messages(backup, 202)
    assert await alice_messages(env) == 202
    assert len(relayed) == 1
    assert env.gateway.trunk_health.is_up("carrier")
