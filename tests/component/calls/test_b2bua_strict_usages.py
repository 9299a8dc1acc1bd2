"""``[sip] in_dialog_failures = "strict"``: RFC 5057 §5.1's table applied as it stands
(gateway.core.sip.usages, docs/configuration.md). A re-INVITE, relayed request or session refresh
answered with a status that ends the dialog (404, 410, 416, 482, 484, 485, 502, 604) or the
invite usage (480, 405 to a re-INVITE), or 483 (never retried with a larger Max-Forwards), ends
the call as a 481 does: the requester gets 500 with a Warning naming the answer, a BYE saying
why, and the answering leg a BYE unless its dialog is gone. The default ("lenient") keeps these
calls (test_b2bua_dialog_lost.py); failures of the transaction alone keep them strict or not.
Signalling on the in-memory network, virtual time."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from gateway.testing.sip_agent import SDP, Call, Received
from tests.component.calls.b2bua_env import B2bua, answered_call, eventually, start_b2bua
from tests.component.calls.reinvite_answers import alice_answers_reinvites

STRICT = {"in_dialog_failures": "strict"}


async def strict_call(nursery: trio.Nursery, tmp_path: Path, seed: int) -> tuple[B2bua, Call]:
    env = await start_b2bua(nursery, tmp_path, seed, sip=STRICT)
    call, _ = await answered_call(env)
    return env, call


def alice_refuses(env: B2bua, method: str, status: int) -> None:
    """alice's phone answers every in-dialog ``method`` with ``status``."""

    async def hook(received: Received) -> bool:
        if received.request.method != method:
            return False
        await env.alice.respond(received, status)
        return True

    env.alice.in_dialog = hook


async def end_reason(env: B2bua) -> str:
    store = env.gateway.store
    await eventually(lambda: [r.ended_at for r in store.call_records_recent()] != [None])
    [record] = store.call_records_recent()
    assert record.end_reason is not None
    return record.end_reason


@pytest.mark.parametrize("status", [404, 410, 416, 482, 483, 484, 485, 502, 604])
async def test_a_reinvite_answered_with_a_dialog_ending_status_ends_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    status: int,
) -> None:
    """RFC 5057 §5.1: alice's dialog (its target or route) is broken: the trunk's re-INVITE gets
    500 naming her answer, then a BYE with her status as its cause; she gets none (a BYE into
    a broken dialog would only fail the same way). 483 too: §5.1 has the dialog destroyed as
    for 482 when the request is not retried with a larger Max-Forwards, and a BYE along the
    same route would run out of hops the same way."""
    env, call = await strict_call(nursery, tmp_path, voipgw_seed)
    alice_answers_reinvites(env, lambda received: env.alice.respond(received, status))
    hold = await call.request(
        "INVITE", body=env.trunk.offer_sdp(direction="sendonly"), content_type=SDP
    )
    final = await hold.final(timeout=5)
    assert final.status == 500
    assert f"the B leg answered {status} " in (final.headers.get("Warning") or "")
    bye = await env.trunk.next_request("BYE", timeout=5)
    assert f"cause={status};" in (bye.request.headers.get("Reason") or "")
    reason = await end_reason(env)
    assert reason.startswith(f"re-INVITE to the B leg answered {status} ")
    assert reason.endswith(": its dialog is gone")
    await eventually(lambda: env.calls == 0)
    await trio.sleep(1)
    assert env.alice.requests("BYE") == []


@pytest.mark.parametrize("status", [480, 405])
async def test_a_reinvite_whose_session_ran_out_ends_the_call_on_both_legs(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    status: int,
) -> None:
    """480 and a 405 to a re-INVITE end the invite usage, not the dialog: the call ends, and
    alice, whose dialog may still be there, gets a BYE too."""
    env, call = await strict_call(nursery, tmp_path, voipgw_seed)
    alice_answers_reinvites(env, lambda received: env.alice.respond(received, status))
    hold = await call.request(
        "INVITE", body=env.trunk.offer_sdp(direction="sendonly"), content_type=SDP
    )
    assert (await hold.final(timeout=5)).status == 500
    await env.trunk.next_request("BYE", timeout=5)
    bye = await env.alice.next_request("BYE", timeout=5)
    assert f"cause={status};" in (bye.request.headers.get("Reason") or "")
    assert (await end_reason(env)).startswith(f"re-INVITE to the B leg answered {status} ")
    await eventually(lambda: env.calls == 0)


@pytest.mark.parametrize(("method", "status"), [("INFO", 404), ("MESSAGE", 480)])
async def test_a_relayed_request_answered_with_an_ending_status_ends_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    method: str,
    status: int,
) -> None:
    """Strict, an INFO's or MESSAGE's 404 or 480 is the table's too (the leniency the default
    keeps for them, for Asterisk's MESSAGE 404, is what the operator turned off)."""
    env, call = await strict_call(nursery, tmp_path, voipgw_seed)
    alice_refuses(env, method, status)
    sent = await call.request(method, body=b"hello", content_type="text/plain")
    final = await sent.final(timeout=5)
    assert final.status == 500
    assert f"the B leg answered {status} " in (final.headers.get("Warning") or "")
    await env.trunk.next_request("BYE", timeout=5)
    assert (await end_reason(env)).startswith(f"{method} to the B leg answered {status} ")
    await eventually(lambda: env.calls == 0)


@pytest.mark.parametrize("status", [488, 491, 500])
async def test_a_reinvite_failure_of_the_transaction_alone_keeps_the_call(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    status: int,
) -> None:
    """A refused offer, glare, a server error: the session goes on as it was (RFC 3261 §14.1),
    strict or not; the answer passes on as it is."""
    env, call = await strict_call(nursery, tmp_path, voipgw_seed)
    alice_answers_reinvites(env, lambda received: env.alice.respond(received, status))
    hold = await call.request(
        "INVITE", body=env.trunk.offer_sdp(direction="sendonly"), content_type=SDP
    )
    assert (await hold.final(timeout=5)).status == status
    await trio.sleep(5)
    assert env.calls == 1
    assert env.trunk.requests("BYE") == [] and env.alice.requests("BYE") == []
    assert (await call.bye()).status == 200
