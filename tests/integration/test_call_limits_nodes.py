"""Two ``voipgw run`` nodes sharing one PostgreSQL store count a trunk's ``max_calls`` together:
with ``max_calls = 1``, the carrier's call ringing through node A makes node B refuse the
carrier's next call with 503 (trunk call limit), and once the first call ends node B takes one.

The carrier is a UDP socket on 127.0.0.1 (recognised as the trunk by its address); alice's
phone registers through node A and is rung by either node at its contact (as in
test_postgresql_nodes.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgcluster import Cluster

from gateway.testing.sip_agent import simple_sdp
from tests.integration.node_phones import (
    ACCOUNTS,
    ack_for,
    address_of,
    busy,
    final_response,
    holds,
    port_of,
    register_status,
    rung,
    udp_socket,
)
from tests.interop.harness import GatewayProcess

Nodes = tuple[GatewayProcess, GatewayProcess, socket.socket]


@pytest.fixture
def two_nodes_and_a_carrier(
    tmp_path: Path, postgres_cluster: Cluster, postgres_database: str
) -> Iterator[Nodes]:
    with udp_socket() as carrier:
        trunk = f"""
[[trunks]]
name = "carrier"
address = "udp:127.0.0.1:{port_of(carrier)}"
max_calls = 1
"""

        def node(name: str, accounts: dict[str, str]) -> GatewayProcess:
            store = postgres_cluster.store_table(postgres_database, tmp_path, name)
            return GatewayProcess(
                tmp_path / name,
                accounts=accounts,
                settings={"store": store},
                extra_toml=trunk,
                digest_algorithms=("MD5",),
            )

        node_a = node("node-a", {"alice": ACCOUNTS["alice"]})
        node_b = node("node-b", {})
        with node_a, node_b:
            yield node_a, node_b, carrier


def carrier_invite(carrier: socket.socket, node: GatewayProcess, number: int) -> str:
    """The carrier's INVITE for alice, its call ``number`` (distinct Call-ID and branch)."""
    here = f"127.0.0.1:{port_of(carrier)}"
    uri = f"sip:alice@127.0.0.1:{node.port}"
    body = simple_sdp("127.0.0.1", 41000 + 2 * number)
    lines = [
        f"INVITE {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {here};branch=z9hG4bKcarrier{number};rport",
        "Max-Forwards: 70",
        f"From: <sip:+4930555{number}@{here}>;tag=carrier-{number}",
        f"To: <{uri}>",
        f"Call-ID: carrier-call-{number}@127.0.0.1",
        "CSeq: 1 INVITE",
        f"Contact: <sip:+4930555{number}@{here}>",
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
    ]
    carrier.sendto(("\r\n".join(lines) + "\r\n\r\n").encode() + body, address_of(node))
    return uri


def test_a_trunks_max_calls_holds_for_the_two_nodes_together(
    two_nodes_and_a_carrier: Nodes, postgres_cluster: Cluster, postgres_database: str
) -> None:
    node_a, node_b, carrier = two_nodes_and_a_carrier
    with udp_socket() as phone:
        assert register_status(node_a, phone, 1) == 200
        # The carrier's first call rings alice through node A: the trunk's one channel.
        first_uri = carrier_invite(carrier, node_a, 1)
        first, first_source = rung(phone)
        assert first_source == address_of(node_a)
        assert holds(postgres_cluster, postgres_database) == [("node-a", "trunk", "carrier")]

        # Its second call, through node B, finds the channel taken on node A.
        second_uri = carrier_invite(carrier, node_b, 2)
        refused = final_response(carrier)
        assert refused.status == 503
        assert refused.reason == "Service Unavailable (trunk call limit)"
        carrier.sendto(ack_for(refused, second_uri), address_of(node_b))

        # The first call ends (alice is busy): its hold goes with it.
        busy(phone, first, first_source)
        ended = final_response(carrier)
        assert ended.status == 486
        carrier.sendto(ack_for(ended, first_uri), address_of(node_a))
        deadline = time.monotonic() + 10.0
        while holds(postgres_cluster, postgres_database):
            assert time.monotonic() < deadline, "the first call's hold stayed"
            time.sleep(0.02)

        # Now node B takes the carrier's next call.
        third_uri = carrier_invite(carrier, node_b, 3)
        third, third_source = rung(phone)
        assert third_source == address_of(node_b)
        assert holds(postgres_cluster, postgres_database) == [("node-b", "trunk", "carrier")]
        busy(phone, third, third_source)
        ended = final_response(carrier)
        assert ended.status == 486
        carrier.sendto(ack_for(ended, third_uri), address_of(node_b))
    assert "trunk call limit" not in node_a.log_text()


def store_node(
    workdir: Path,
    cluster: Cluster,
    database: str,
    secrets: Path,
    name: str,
    allowed_warnings: tuple[str, ...] = (),
) -> GatewayProcess:
    store = cluster.store_table(database, secrets, name)
    return GatewayProcess(
        workdir,
        settings={"store": store},
        digest_algorithms=("MD5",),
        allowed_warnings=allowed_warnings,
    )


def test_a_second_process_under_a_running_nodes_name_refuses_to_start_but_a_restart_does(
    tmp_path: Path, postgres_cluster: Cluster, postgres_database: str
) -> None:
    def heartbeats() -> list[tuple[object, ...]]:
        return postgres_cluster.admin(
            "SELECT node, instance FROM call_limit_nodes", postgres_database
        )

    first = store_node(tmp_path / "first", postgres_cluster, postgres_database, tmp_path, "gw")
    first.start()
    try:
        [(_, killed)] = heartbeats()
        # Another process configured with the same [store] node: refused, named, exit 2.
        twin = store_node(tmp_path / "twin", postgres_cluster, postgres_database, tmp_path, "gw")
        with pytest.raises(RuntimeError, match="gateway exited with 2 at start-up"):
            twin.start()
        assert twin.stop() == 2
        refusal = twin.log_text()
        assert f"voipgw: configuration error: {twin.config_path}: [store] node: 'gw'" in refusal
        assert "is the name of another running gateway" in refusal
        # The running node's heartbeat and name are untouched.
        assert heartbeats() == [("gw", killed)]
        assert "another running gateway" not in first.log_text()
    finally:
        assert first.process is not None
        first.process.kill()  # killed: its heartbeat stays, a few seconds young
        first.stop()
    # Restarted at once under its name. Its previous run's heartbeat does not move, so it
    # starts, after watching it for two heartbeat intervals; on a loaded machine the restart
    # may come too late to see it young (it ages out 10 s after the last beat, before or
    # while watched), and it starts without waiting. Either way it runs under the name.
    # When it watched, it warns that it dropped the killed run's holds: expected here.
    previous_run = (
        r"call limits: node 'gw': the heartbeat of instance \w+ did not move in .*: "
        r"taken for this node's previous run \(killed\), whose holds are dropped",
    )
    with store_node(
        tmp_path / "restarted",
        postgres_cluster,
        postgres_database,
        tmp_path,
        "gw",
        allowed_warnings=previous_run,
    ) as restarted:
        # Answering OPTIONS: the name check, logged unbuffered, is over.
        [(_, instance)] = heartbeats()
        assert instance != killed  # the name's heartbeat is the restart's own
        log = restarted.log_text()
        assert "another running gateway" not in log
        if f"has a recent heartbeat from another instance ({killed})" in log:
            # It watched its previous run's heartbeat: the wait's outcome is logged.
            assert (
                "taken for this node's previous run" in log
                or f"the heartbeat of instance {killed} went or aged out while watched" in log
            )
    assert heartbeats() == []
