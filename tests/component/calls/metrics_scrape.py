"""The metrics environment and Prometheus scrape of the in-memory call tests: moved here from
test_b2bua_metrics.py so that no test module imports another."""

from __future__ import annotations

import re
from pathlib import Path

import trio

import gateway.plugins.metrics as metrics_plugin
from gateway.core.store.interface import CallRecord
from tests.component.calls.b2bua_env import (
    B2bua,
    start_b2bua,
)

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})? (\S+)$")


async def metrics_env(
    nursery: trio.Nursery, tmp_path: Path, seed: int, **kwargs: object
) -> tuple[B2bua, tuple[str, int]]:
    plugins = [("metrics", metrics_plugin), *kwargs.pop("plugins", [])]  # type: ignore[misc]
    env = await start_b2bua(
        nursery,
        tmp_path,
        seed,
        plugins=plugins,
        plugin_tables={"enable": ["metrics"], "metrics": {"listen": "127.0.0.1:0"}},
        alice_auto=None,
        **kwargs,  # type: ignore[arg-type]
    )
    exporter = env.gateway.plugins.services.get("metrics")
    assert exporter is not None and exporter.server is not None
    assert exporter.server.address is not None
    return env, exporter.server.address


async def http(address: tuple[str, int], request: bytes) -> bytes:
    """Send ``request`` on a new connection; everything the server answers until it closes."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(request)
        answer = b""
        while chunk := await stream.receive_some(65536):
            answer += chunk
    return answer


async def scrape(address: tuple[str, int]) -> dict[str, float]:
    """GET /metrics: each sample by its name and labels as written."""
    answer = await http(address, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    assert b"content-type: text/plain; version=0.0.4; charset=utf-8" in head.lower()
    samples: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match is not None, line
        samples[match[1] + (match[2] or "")] = float(match[3])
    return samples


def aged_records(now: int) -> list[CallRecord]:
    """Three records that ended two days before ``now`` (a second apart), one that ended a
    minute before it: whole seconds, as a scrape writes them."""
    return [
        CallRecord(f"old{i}", "sip:a@x", "sip:b@x", now - 3 * 86400, None, now - 2 * 86400 - i)
        for i in range(3)
    ] + [CallRecord("new", "sip:a@x", "sip:b@x", now - 3600, None, now - 60)]
