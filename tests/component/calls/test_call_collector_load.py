"""What an ended call leaves for the cyclic garbage collector to walk while its transactions live.

A call's four transactions (INVITE and BYE, each on both legs) outlive it by up to 64*T1 = 32 s
(RFC 3261 Timer J, RFC 6026 Timers L and M), and the endpoint keeps a ClientRequest with each
client transaction as long. At R calls/s the gateway holds ~32 R calls' worth of them: every
tracked container among them is walked by each young collection that finds it new, by the middle
collection it is promoted by, and by every full collection for 32 s (docs/benchmarks.md, "Session
36 (collector)"). Strings, numbers, bytes, None and tuples or dicts of only those are not walked;
objects shared by every call (enum members, the peer's Hop, the flow, the timers) are not the
call's.

Counted here for a plain call through the B2BUA once it has ended (the collector run once, so
tuples of strings are untracked as they would be after their first young collection): each
transaction (4) and each ClientRequest (2): 6. No longer kept: the BYE's 200 as a Response
(its Headers and their fields tuple: 3, and before a collection untracks them a tuple per header
field), which answered a retransmitted BYE until Timer J, kept as the bytes sent since session
71 (bytes are not tracked); each transaction's key (4: a named tuple, which CPython never
untracks; a plain tuple of strings since); before session 36, two frozensets of To tags per
ClientRequest (4; a frozenset is always tracked, even empty; tuples of strings now), and each
transaction's entry in the table's timer heap (4; tuples that held the transaction, of numbers
only now).
"""

from __future__ import annotations

import collections
import enum
import gc
import types
from pathlib import Path

import trio

from gateway.core.endpoint import ClientRequest
from gateway.core.sip.transaction import Transaction
from tests.component.calls.b2bua_env import answered_call, start_b2bua

# The tracked objects a plain call's transactions and client requests keep after it ended.
PLAIN_CALL_BUDGET = 6


def walked(root: object, shared: set[int]) -> collections.Counter[str]:
    """The tracked objects reachable from ``root`` that are not shared (by type name)."""
    found: collections.Counter[str] = collections.Counter()
    seen: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or id(obj) in shared or not gc.is_tracked(obj):
            continue
        seen.add(id(obj))
        if isinstance(obj, (type, types.ModuleType, types.FunctionType, enum.Enum)):
            continue  # the program's, not the call's
        found[type(obj).__qualname__] += 1
        todo.extend(gc.get_referents(obj))
    return found


async def test_an_ended_call_leaves_few_objects_for_the_collector(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    await trio.sleep(40)  # the start's transactions (alice's REGISTERs) are gone
    endpoint = env.gateway.endpoint
    table = endpoint.transactions
    assert len(table) == 0
    call, _leg_b = await answered_call(env)
    assert (await call.bye()).status == 200
    await trio.sleep(2)  # ended; its transactions wait out Timers J, L and M (32 s)
    gc.collect()

    transactions: list[Transaction] = [*table._client.values(), *table._server.values()]
    requests: list[ClientRequest] = list(endpoint._client_requests.values())
    assert sorted(f"{type(t).__name__} {t.method}" for t in transactions) == [
        "ClientInviteTransaction INVITE",
        "ClientNonInviteTransaction BYE",
        "ServerInviteTransaction INVITE",
        "ServerNonInviteTransaction BYE",
    ]
    assert sorted(r.transaction.method for r in requests) == ["BYE", "INVITE"]
    shared = {id(table.timers), id(endpoint), id(table)}
    shared |= {id(t) for t in transactions} | {id(t.peer) for t in transactions}
    shared |= {id(r.flow) for r in requests}

    kept: collections.Counter[str] = collections.Counter()
    for request in requests:
        # Nothing but itself: no fresh empty frozensets, no channel, no sink into its call.
        assert walked(request, shared) == {"ClientRequest": 1}, request.transaction.method
        kept["ClientRequest"] += 1
    for transaction in transactions:
        kept += walked(transaction, shared - {id(transaction)})
    assert sum(kept.values()) <= PLAIN_CALL_BUDGET, kept
    assert [entry for entry in table._heap if gc.is_tracked(entry)] == []
