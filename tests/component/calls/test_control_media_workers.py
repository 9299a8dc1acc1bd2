"""The control socket's ``media_workers`` query (``voipgw media-workers``) of a gateway that relays
media in its own process (``[media] workers = 1``, the default): no worker list, said as such.
A gateway with worker processes answers each one: tests/integration/test_gateway_workers.py."""

from __future__ import annotations

import json
from pathlib import Path

import trio

from gateway.core.control import respond
from tests.component.calls.b2bua_env import start_b2bua


async def test_a_gateway_without_worker_processes_answers_none(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, alice_auto=None)
    assert env.gateway.media_workers is None
    answer = json.loads(respond(b'{"query": "media_workers"}\n', env.gateway.control_answer))
    assert answer == {"workers": None, "address": None}
