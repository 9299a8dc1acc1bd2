"""A caller-identity service's optional ``async def run`` (docs/plugin_hooks.md): the
gateway starts it as a plugin task, and only it. The hook predates ``run``: a service written
before may have a plain ``run`` method of its own, which the gateway must leave alone."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.core.hookspecs import hookimpl
from tests.component.calls.b2bua_env import start_b2bua


class OlderIdentityService:
    """A third party's caller-identity service with a plain ``run`` of its own (here: a
    batch job it runs from its own thread), and an ``async def run`` one beside it."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run(self) -> None:
        self.ran.append("plain run")

    def sign(self, call: object) -> None:
        return None

    def check(self, call: object, request: object) -> None:
        return None


class TaskIdentityService(OlderIdentityService):
    async def run(self) -> None:  # type: ignore[override]
        self.ran.append("task")
        await trio.sleep_forever()


class Plugin:
    def __init__(self) -> None:
        self.older = OlderIdentityService()
        self.task = TaskIdentityService()

    @hookimpl
    def gateway_register_caller_identity(self, registry: Any, config: object) -> None:
        registry.add("older", self.older)
        registry.add("task", self.task)


async def test_only_an_async_run_of_a_caller_identity_service_is_started(
    nursery: trio.Nursery,
    tmp_path: Path,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An ``async def run`` is started with the gateway; a plain ``run`` method is not called
    (it was, and awaiting what it returned logged "plugin task older stopped with an error"
    at every start)."""
    caplog.set_level(logging.INFO)
    plugin = Plugin()
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        plugins=[("identity_services", plugin)],
        plugin_tables={"enable": ["identity_services"]},
    )
    await trio.testing.wait_all_tasks_blocked()
    assert env.gateway.calls is not None
    assert plugin.task.ran == ["task"]
    assert plugin.older.ran == []
    assert not [r for r in caplog.records if "plugin task" in r.getMessage()]
