"""The gateway with ``[media] workers = 2``: calls on the in-memory SIP network, media relayed by
two real worker processes on 127.0.0.1 (MEDIA_PORTS, tests/port_blocks.py), in real time (the
workers are real processes, so no virtual clock): every wait is bounded by ``trio.fail_after``.

Killing the worker that carries one call ends that call with BYE and a Reason on both legs; the
call on the other worker goes on; the worker is restarted and carries new calls; stopping the
gateway stops every worker.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.media.remote_relay import WORKER_EXITED, WorkerPool
from gateway.core.status import CallStatistics, StatusView
from gateway.core.store.interface import CallRecord
from gateway.core.store.sqlite import SqliteStore
from gateway.plugins.metrics.collect import render
from gateway.testing.memory_transport import memory_plugins
from gateway.testing.network import Address, MemoryNetwork
from gateway.testing.sip_agent import AutoAnswer, Call, SipAgent, sdp_connection
from tests.port_blocks import ModuleBlock

GW: Address = ("127.0.0.1", 5060)
TRUNK: Address = ("127.0.0.2", 5060)
ALICE: Address = ("127.0.0.3", 5060)
REALM = "voipgw.local"
PASSWORD = "wonderland-42"
DID = "+4930123456"
MEDIA_PORTS = ModuleBlock(100)  # this process's own ports (tests/port_blocks.py)
TIMEOUT = 15.0


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def eventually(predicate: Callable[[], bool]) -> None:
    with trio.fail_after(TIMEOUT):
        while not predicate():
            await trio.sleep(0.01)


async def voipgw_media_workers(state: Path, *flags: str) -> str:
    command = [sys.executable, "-m", "gateway", "media-workers", "--state-dir", str(state), *flags]
    with trio.fail_after(60):
        done = await trio.run_process(command, capture_stdout=True, capture_stderr=True)
    assert done.stderr == b"", done.stderr
    return done.stdout.decode()


async def answered_call(trunk: SipAgent, alice: SipAgent) -> tuple[Call, Call]:
    call = await trunk.invite(f"sip:{DID}@127.0.0.1:5060")
    final = await call.final(timeout=TIMEOUT)
    assert final.status == 200, final.reason
    leg_b = await alice.next_call(timeout=TIMEOUT)
    await alice.next_request("ACK", timeout=TIMEOUT)
    return call, leg_b


async def test_a_worker_exit_ends_its_calls_only_and_the_worker_comes_back(
    tmp_path: Path, voipgw_seed: int
) -> None:
    state = tmp_path / "state"
    store = SqliteStore.open(state)
    store.accounts_add("alice", PASSWORD, REALM)
    store.close()
    config = from_mapping(
        {
            "gateway": {"state_dir": str(state), "realm": REALM},
            "sip": {"listen": ["udp:127.0.0.1:5060"], "t1": 0.5},
            "media": {
                "address": "127.0.0.1",
                "ports": MEDIA_PORTS.text(),
                "workers": 2,
                "worker_ready_timeout": 45,
            },
            "plugins": {"enable": []},
            "trunks": [
                {
                    "name": "carrier",
                    "address": "udp:127.0.0.2:5060",
                    "prefixes": ["+1"],
                    "dids": {DID: "alice"},
                }
            ],
        }
    )
    pids: list[int | None] = []
    async with trio.open_nursery() as nursery:
        network = MemoryNetwork(voipgw_seed, delay=0.001)
        await nursery.start(network.serve)
        gateway = Gateway(config, memory_plugins(config, network), ids=SeededIds(voipgw_seed))
        await nursery.start(gateway.serve)
        assert gateway.relay is None
        pool = gateway.media_workers
        assert isinstance(pool, WorkerPool)
        assert pool._ready_within == 45.0  # [media] worker_ready_timeout

        def scrape() -> str:
            return render(StatusView(gateway, CallStatistics())).decode()

        assert 'voipgw_media_workers{state="running"} 2\n' in scrape()
        assert 'voipgw_media_workers{state="stopped"} 0\n' in scrape()
        assert 'voipgw_media_worker_restarts_total{reason="exited"} 0\n' in scrape()
        alice = SipAgent(
            network,
            ALICE,
            ids=SeededIds(voipgw_seed + 1),
            user="alice",
            password=PASSWORD,
            proxy=GW,
            auto=AutoAnswer(),
            media_port=30000,
        )
        trunk = SipAgent(
            network,
            TRUNK,
            ids=SeededIds(voipgw_seed + 2),
            user="+15550100",
            domain="127.0.0.2:5060",
            proxy=GW,
            media_port=40000,
        )
        await nursery.start(alice.serve)
        await nursery.start(trunk.serve)
        assert (await alice.register()).status == 200

        call_1, leg_b_1 = await answered_call(trunk, alice)
        call_2, _ = await answered_call(trunk, alice)
        # One call per worker, on ports of that worker's slice (as each leg's SDP says).
        assert pool.worker_streams() == [1, 1]
        slice_0 = range(pool.slices[0].low, pool.slices[0].high + 1)
        slice_1 = range(pool.slices[1].low, pool.slices[1].high + 1)
        first, second = (c.exchange.responses[-1].body for c in (call_1, call_2))
        assert sdp_connection(first)[1] in slice_0
        assert sdp_connection(second)[1] in slice_1

        pid_0, pid_1 = pool.worker_pids()
        assert pid_0 is not None and pid_1 is not None
        os.kill(pid_0, signal.SIGKILL)

        bye_a = await trunk.next_request("BYE", timeout=TIMEOUT)
        bye_b = await alice.next_request("BYE", timeout=TIMEOUT)
        assert bye_a.request.call_id == call_1.call_id
        assert bye_b.request.call_id == leg_b_1.call_id
        for bye in (bye_a, bye_b):
            reason = bye.request.headers.get("Reason")
            assert reason == f'SIP;cause=503;text="{WORKER_EXITED}"'

        # The call on worker 1 goes on: it still hangs up normally.
        await eventually(lambda: pool.worker_streams() == [0, 1])
        assert (await call_2.bye()).status == 200
        await eventually(lambda: pool.worker_streams() == [0, 0])

        # Worker 0 comes back and carries new calls.
        await eventually(lambda: pool.worker_starts() == [2, 1] and pool.worker_ready()[0] > 2)
        assert pool.worker_pids()[0] not in (None, pid_0)
        assert pool.worker_pids()[1] == pid_1
        assert 'voipgw_media_workers{state="running"} 2\n' in scrape()
        assert 'voipgw_media_worker_restarts_total{reason="exited"} 1\n' in scrape()
        assert 'voipgw_media_worker_restarts_total{reason="not_ready"} 0\n' in scrape()
        call_3, _ = await answered_call(trunk, alice)
        assert pool.worker_streams() == [1, 0]

        # What `voipgw media-workers` shows of it, asked over the control socket.
        shown = json.loads(await voipgw_media_workers(state, "--json"))
        assert shown["address"] == "127.0.0.1"
        worker_0, worker_1 = shown["workers"]
        assert (worker_0["index"], worker_0["ports"]) == (0, str(pool.slices[0]))
        assert (worker_0["state"], worker_0["pid"]) == ("running", pool.worker_pids()[0])
        assert (worker_0["streams"], worker_0["starts"]) == (1, 2)
        assert worker_0["restarts"]["exited"] == 1 and worker_0["last_ended"] == "exited"
        assert (worker_1["pid"], worker_1["starts"], worker_1["last_ended"]) == (pid_1, 1, None)
        assert sum(worker_1["restarts"].values()) == 0 and worker_1["streams"] == 0
        assert worker_1["running_for"] >= worker_0["running_for"] >= 0
        # Each worker's own process's memory: an interpreter with the relay loaded, tens of MiB.
        assert all(20 << 20 < w["resident_bytes"] < 500 << 20 for w in (worker_0, worker_1))
        scraped = scrape()
        assert 'voipgw_media_worker_streams{worker="0"} 1\n' in scraped
        assert 'voipgw_media_worker_streams{worker="1"} 0\n' in scraped
        assert 'voipgw_media_worker_resident_bytes{worker="1"} ' in scraped
        # Each worker's own tables, as it reports them every 5 s: call 3's stream on worker 0.
        await eventually(
            lambda: (
                'voipgw_media_worker_internal_entries{worker="0",table="worker_streams"} 1\n'
                in scrape()
            )
        )
        scraped = scrape()
        assert 'voipgw_media_worker_internal_entries{worker="0",table="media_streams"} 1\n' in (
            scraped
        )
        assert 'voipgw_media_worker_internal_entries{worker="1",table="worker_streams"} 0\n' in (
            scraped
        )
        text = await voipgw_media_workers(state)
        assert text.splitlines()[0] == "2 media workers on 127.0.0.1, 2 running"
        line_0, line_1 = text.splitlines()[1:]
        assert line_0.startswith(
            f"worker 0  ports {pool.slices[0]}  running, pid {pool.worker_pids()[0]}, for "
        )
        assert "streams 1  ready port pairs " + str(worker_0["ready_pairs"]) + (
            "  restarts: exited 1  memory "
        ) in line_0 and line_0.endswith(" MiB")
        assert line_1.startswith(f"worker 1  ports {pool.slices[1]}  running, pid {pid_1}, for ")
        assert "  restarts: none  memory " in line_1
        assert (await call_3.bye()).status == 200

        assert gateway.store is not None
        await eventually(lambda: gateway.calls is not None and not gateway.calls.calls)
        store = gateway.store

        def ended_records() -> dict[str, CallRecord]:
            return {
                r.call_id.split(";")[0]: r
                for r in store.call_records_recent()
                if r.ended_at is not None
            }

        await eventually(lambda: len(ended_records()) == 3)  # saved in batches
        records = ended_records()
        assert records[call_1.call_id].end_reason == WORKER_EXITED
        assert records[call_2.call_id].end_reason != WORKER_EXITED
        pids = pool.worker_pids()
        nursery.cancel_scope.cancel()

    # Stopping the gateway stopped its workers.
    assert pool.worker_pids() == [None, None]
    assert all(pid is not None and process_gone(pid) for pid in pids)
