"""PSAP callbacks through the B2BUA (RFC 7090, gateway/core/calls/psap_callback.py).

alice calls 112 through the carrier, which gets her DID (national: 030123456). For the next
``[gateway] psap_callback_window`` seconds a carrier INVITE marked ``Priority: psap-callback``
to that number gets past every limit an ordinary call meets, and alice's phone is told it is a
callback; an unmarked call, a marked call to another number, one from an account, or one after
the window is an ordinary call, and the marking goes no further.

Set-up as b2bua_env.py: alice registered at 127.0.0.3, the trunk "carrier" at 127.0.0.2, here
in Germany (country code 49, Berlin's area 30) and taking national numbers.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from gateway.core.store.errors import StoreBusy
from gateway.core.store.sqlite import SqliteStore
from gateway.testing.sip_agent import Call
from tests.component.calls.b2bua_env import B2bua, eventually, start_b2bua
from tests.component.calls.drain_steps import start_drain
from tests.component.calls.metrics_scrape import metrics_env, scrape
from tests.component.calls.stir_shaken_refusals import RefuseEverything

BERLIN = {"country_code": "49", "area_code": "30"}
CARRIER = {"prefixes": ["+49", "112"], "number_format": "national"}
ALICE_NATIONAL = "030123456"  # alice's DID +4930123456 as the carrier writes it
MARKED = [("Priority", "psap-callback")]


async def psap_env(
    nursery: trio.Nursery, tmp_path: Path, seed: int, *, window: float = 1800.0
) -> B2bua:
    env = await start_b2bua(
        nursery,
        tmp_path,
        seed,
        numbering=BERLIN,
        carrier=CARRIER,
        gateway_table={"psap_callback_window": window},
    )
    store_follows_trio_clock(env)
    return env


def store_follows_trio_clock(env: B2bua) -> None:
    """The store keeps each number's window on the wall clock (it outlives the process);
    here that clock moves with trio's, which the autojump clock runs ahead."""
    store = env.gateway.store
    assert isinstance(store, SqliteStore)
    wall, start = time.time(), trio.current_time()
    store._clock = lambda: wall + (trio.current_time() - start)


async def alice_calls_112(env: B2bua) -> None:
    """An emergency call that drops: answered by the carrier, then ended by alice."""
    call = await env.alice.invite("sip:112@127.0.0.1:5060")
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    invite = env.trunk.requests("INVITE")[-1]
    assert getattr(invite.from_.uri, "user", "") == ALICE_NATIONAL  # the number presented
    assert (await call.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def carrier_calls_alice(env: B2bua, *, marked: bool) -> Call:
    return await env.trunk.invite(env.did_uri(ALICE_NATIONAL), extra=MARKED if marked else ())


async def test_a_callback_gets_past_the_gateways_call_cap_and_is_marked_to_the_phone(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await psap_env(nursery, tmp_path, voipgw_seed)
    await alice_calls_112(env)
    manager = env.gateway.calls
    assert manager is not None
    manager.max_calls = 0  # full: every ordinary call gets 503

    ordinary = await carrier_calls_alice(env, marked=False)
    final = await ordinary.final()
    assert (final.status, final.reason) == (503, "Service Unavailable (call limit reached)")

    callback = await carrier_calls_alice(env, marked=True)
    assert (await callback.final()).status == 200
    (to_alice,) = env.alice.requests("INVITE")
    assert to_alice.headers.get("Priority") == "psap-callback"
    assert env.calls == 1
    assert (await callback.bye()).status == 200
    await eventually(lambda: env.calls == 0)


async def test_a_callback_gets_past_the_trunks_and_the_accounts_limits(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await psap_env(nursery, tmp_path, voipgw_seed)
    await alice_calls_112(env)
    assert env.gateway.store is not None
    env.gateway.store.accounts_set("alice", max_calls=1)
    first = await carrier_calls_alice(env, marked=False)
    assert (await first.final()).status == 200  # alice is on a call: her one channel

    busy = await carrier_calls_alice(env, marked=False)
    assert (await busy.final()).status == 486  # her limit: refused like a busy phone
    callback = await carrier_calls_alice(env, marked=True)
    assert (await callback.final()).status == 200
    assert env.calls == 2
    manager = env.gateway.calls
    assert manager is not None
    assert manager.limits.refused[(("account", "alice"), "call limit")] == 1  # the unmarked one


async def test_a_marked_call_that_follows_no_emergency_call_is_an_ordinary_call(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """No emergency call before it, or the window over, or to another number: the call is
    refused like any other when the gateway is full, and rings the phone without the
    marking when it is not."""
    env = await psap_env(nursery, tmp_path, voipgw_seed, window=600.0)
    manager = env.gateway.calls
    assert manager is not None

    before = await carrier_calls_alice(env, marked=True)
    assert (await before.final()).status == 200
    (to_alice,) = env.alice.requests("INVITE")
    assert to_alice.headers.get("Priority") is None  # not passed on
    assert (await before.bye()).status == 200
    await eventually(lambda: env.calls == 0)

    await alice_calls_112(env)
    manager.max_calls = 0
    to_bob = await env.trunk.invite(env.did_uri("0304567"), extra=MARKED)  # not alice's number
    assert (await to_bob.final()).status == 503
    await trio.sleep(601)
    late = await carrier_calls_alice(env, marked=True)
    assert (await late.final()).status == 503


async def test_only_a_trunk_can_mark_a_callback(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """An account (or anyone not at a trunk's address) writing the header gets nothing for it."""
    env = await psap_env(nursery, tmp_path, voipgw_seed)
    await alice_calls_112(env)
    manager = env.gateway.calls
    assert manager is not None
    manager.max_calls = 0
    call = await env.alice.invite(env.did_uri(ALICE_NATIONAL), extra=MARKED)
    assert (await call.final()).status == 503


async def test_a_callback_outlasts_the_drain(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """Served while draining, and not ended when the drain runs out, like the emergency call
    it follows."""
    env = await psap_env(nursery, tmp_path, voipgw_seed)
    await alice_calls_112(env)
    in_progress = await carrier_calls_alice(env, marked=False)
    assert (await in_progress.final()).status == 200  # keeps the drain waiting
    drained = await start_drain(nursery, env, timeout=30)
    refused = await carrier_calls_alice(env, marked=False)
    assert (await refused.final()).status == 503
    callback = await carrier_calls_alice(env, marked=True)
    assert (await callback.final()).status == 200
    await trio.sleep(60)
    assert env.calls == 1 and not drained.is_set()  # the ordinary call ended at 30 s
    ended = {bye.call_id for bye in env.trunk.requests("BYE")}
    assert in_progress.dialog.call_id in ended and callback.dialog.call_id not in ended
    assert (await callback.bye()).status == 200
    with trio.fail_after(5):
        await drained.wait()


async def test_no_caller_identity_check_refuses_a_callback(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A PSAP's callback often comes unsigned: a plugin's refusal of it is dropped, as for an
    emergency call (TrunkCall.psap_callback)."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        numbering=BERLIN,
        carrier=CARRIER,
        plugins=[("refuse-everything", RefuseEverything())],
        plugin_tables={"enable": ["refuse-everything"]},
    )
    await alice_calls_112(env)
    ordinary = await carrier_calls_alice(env, marked=False)
    assert (await ordinary.final()).status == 403
    callback = await carrier_calls_alice(env, marked=True)
    assert (await callback.final()).status == 200
    assert len(env.alice.requests("INVITE")) == 1


async def test_a_callback_after_a_restart_on_the_same_store_is_still_one(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """The gateway dies after alice's emergency call (its nursery cancelled: nothing saved at
    a stop) and starts again on its state directory: the number is in the store, so the
    PSAP's callback gets past the full gateway and reaches alice marked."""
    async with trio.open_nursery() as first_run:
        before = await psap_env(first_run, tmp_path, voipgw_seed)
        await alice_calls_112(before)
        first_run.cancel_scope.cancel()

    # Other seeds: alice's phone too starts again (a new REGISTER Call-ID, RFC 3261 §10.2.4).
    env = await start_b2bua(nursery, tmp_path, voipgw_seed + 100, numbering=BERLIN, carrier=CARRIER)
    manager = env.gateway.calls
    assert manager is not None
    assert len(manager.psap_callbacks) == 0  # a new process: nothing in memory
    manager.max_calls = 0
    ordinary = await carrier_calls_alice(env, marked=False)
    assert (await ordinary.final()).status == 503

    callback = await carrier_calls_alice(env, marked=True)
    assert (await callback.final()).status == 200
    (to_alice,) = env.alice.requests("INVITE")
    assert to_alice.headers.get("Priority") == "psap-callback"
    assert manager.psap_callbacks.store_hits == 1
    assert (await callback.bye()).status == 200


async def test_a_store_that_fails_leaves_memory_to_answer_and_is_counted(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store refuses the number (another process holds its write lock): the emergency
    call goes on, this node still recognises the callback from memory, and the failure is a
    WARNING and a counted sample."""
    env, address = await metrics_env(
        nursery, tmp_path, voipgw_seed, numbering=BERLIN, carrier=CARRIER
    )

    def busy(*args: object) -> None:
        raise StoreBusy("voipgw.sqlite3: another process held the write lock")

    monkeypatch.setattr(env.gateway.store, "psap_number_presented", busy)
    monkeypatch.setattr(env.gateway.store, "psap_number_remaining", busy)
    await alice_calls_112(env)
    manager = env.gateway.calls
    assert manager is not None
    manager.max_calls = 0
    callback = await carrier_calls_alice(env, marked=True)
    leg = await env.alice.next_call()  # rung past the full gateway
    assert leg.invite.headers.get("Priority") == "psap-callback"
    samples = await scrape(address)
    assert samples["voipgw_psap_callback_store_failures_total"] == 1
    assert samples["voipgw_psap_callbacks_from_store_total"] == 0
    assert "the store did not answer (voipgw.sqlite3: another process" in caplog.text
    await callback.cancel()
