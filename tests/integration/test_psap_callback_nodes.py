"""A PSAP callback (RFC 7090) that the carrier sends to another node of a cluster: two
``voipgw run`` nodes share one PostgreSQL store, alice's emergency call leaves through node A,
and the call taker's callback reaches node B, whose share of the carrier's one channel
(``max_calls = 1``, counted for the cluster) is taken. Node B finds the number in the store and
serves the callback past the limit, marked to the phone; the same call unmarked is refused.

The carrier is a UDP socket on 127.0.0.2 (recognised as the trunk by its address), alice's
phone one on 127.0.0.1, registered through node A (as in test_call_limits_nodes.py).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgcluster import Cluster

from gateway.core.sip.message import Request, make_response
from gateway.core.sip.serializer import serialize_message
from gateway.testing.sip_agent import simple_sdp
from tests.integration.node_phones import (
    ACCOUNTS,
    ack_for,
    address_of,
    busy,
    digest,
    final_response,
    holds,
    port_of,
    receive,
    register_status,
    request,
    rung,
    udp_socket,
)
from tests.interop.harness import GatewayProcess

DID = "+4930123456"  # alice's number: her calls out present it, the carrier's calls to it ring her
CARRIER_IP = "127.0.0.2"

Nodes = tuple[GatewayProcess, GatewayProcess, socket.socket]


@pytest.fixture
def two_nodes_and_a_carrier(
    tmp_path: Path, postgres_cluster: Cluster, postgres_database: str
) -> Iterator[Nodes]:
    carrier = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    carrier.bind((CARRIER_IP, 0))
    carrier.settimeout(5.0)
    with carrier:
        trunk = f"""
[[trunks]]
name = "carrier"
address = "udp:{CARRIER_IP}:{port_of(carrier)}"
prefixes = ["112"]
max_calls = 1
dids = {{"{DID}" = "alice"}}
"""

        def node(name: str, accounts: dict[str, str]) -> GatewayProcess:
            store = postgres_cluster.store_table(postgres_database, tmp_path, name)
            return GatewayProcess(
                tmp_path / name,
                accounts=accounts,
                settings={"store": store},
                extra_toml=trunk,
                digest_algorithms=("MD5",),
                # The callbacks these tests make are said at WARNING (past the call limits).
                allowed_warnings=[r"PSAP callback from trunk carrier to \S+: served like an"],
            )

        node_a = node("node-a", {"alice": ACCOUNTS["alice"]})
        node_b = node("node-b", {})
        with node_a, node_b:
            yield node_a, node_b, carrier


def alice_calls_112(node: GatewayProcess, phone: socket.socket, carrier: socket.socket) -> None:
    """alice's emergency call through ``node``: the carrier gets it, presenting her DID, and
    it fails there (486): the call taker will call back."""
    target = f"sip:112@127.0.0.1:{node.port}"
    sdp = simple_sdp("127.0.0.1", 40000)
    phone.sendto(request("INVITE", target, phone, "alice", 1, body=sdp), address_of(node))
    challenge = final_response(phone)
    assert challenge.status == 407
    phone.sendto(ack_for(challenge, target), address_of(node))
    auth = digest(challenge.headers.get_all("Proxy-Authenticate")[0], "alice", "INVITE", target)
    phone.sendto(
        request("INVITE", target, phone, "alice", 2, f"Proxy-Authorization: {auth}", body=sdp),
        address_of(node),
    )
    while True:
        message, source = receive(carrier)
        if isinstance(message, Request) and message.method == "INVITE":
            break
    assert getattr(message.from_.uri, "user", None) == DID
    carrier.sendto(serialize_message(make_response(message, 486, "Busy Here", to_tag="p")), source)
    failed = final_response(phone)
    assert failed.status == 486
    phone.sendto(ack_for(failed, target), address_of(node))


def carrier_calls_alice(
    carrier: socket.socket, node: GatewayProcess, number: int, *extra: str
) -> str:
    """The carrier's INVITE to alice's DID through ``node``, its call ``number``."""
    here = f"{CARRIER_IP}:{port_of(carrier)}"
    uri = f"sip:{DID}@127.0.0.1:{node.port}"
    body = simple_sdp(CARRIER_IP, 41000 + 2 * number)
    lines = [
        f"INVITE {uri} SIP/2.0",
        f"Via: SIP/2.0/UDP {here};branch=z9hG4bKcarrier{number};rport",
        "Max-Forwards: 70",
        f"From: <sip:112@{here}>;tag=carrier-{number}",
        f"To: <{uri}>",
        f"Call-ID: carrier-call-{number}@{CARRIER_IP}",
        "CSeq: 1 INVITE",
        f"Contact: <sip:112@{here}>",
        *extra,
        "Content-Type: application/sdp",
        f"Content-Length: {len(body)}",
    ]
    carrier.sendto(("\r\n".join(lines) + "\r\n\r\n").encode() + body, address_of(node))
    return uri


def test_a_callback_to_another_node_is_served_past_its_full_call_limit(
    two_nodes_and_a_carrier: Nodes, postgres_cluster: Cluster, postgres_database: str
) -> None:
    node_a, node_b, carrier = two_nodes_and_a_carrier
    with udp_socket() as phone:
        assert register_status(node_a, phone, 1) == 200
        alice_calls_112(node_a, phone, carrier)
        stored = postgres_cluster.admin("SELECT number FROM psap_callbacks", postgres_database)
        assert stored == [(DID,)]
        deadline = time.monotonic() + 10.0
        while holds(postgres_cluster, postgres_database):  # the emergency call's, given back
            assert time.monotonic() < deadline, "the emergency call's hold stayed"
            time.sleep(0.02)

        # An ordinary call from the carrier takes its one channel, through node A.
        first_uri = carrier_calls_alice(carrier, node_a, 1)
        first, first_source = rung(phone)
        assert first.headers.get("Priority") is None
        assert holds(postgres_cluster, postgres_database) == [("node-a", "trunk", "carrier")]

        # Through node B, the carrier's next ordinary call finds the channel taken...
        second_uri = carrier_calls_alice(carrier, node_b, 2)
        refused = final_response(carrier)
        assert (refused.status, refused.reason) == (503, "Service Unavailable (trunk call limit)")
        carrier.sendto(ack_for(refused, second_uri), address_of(node_b))

        # ...but the call taker's callback, marked, is served all the same, and marked.
        callback_uri = carrier_calls_alice(carrier, node_b, 3, "Priority: psap-callback")
        callback, callback_source = rung(phone)
        assert callback_source == address_of(node_b)
        assert callback.headers.get("Priority") == "psap-callback"
        for invite, source, uri, node in (
            (first, first_source, first_uri, node_a),
            (callback, callback_source, callback_uri, node_b),
        ):
            busy(phone, invite, source)
            ended = final_response(carrier)
            assert ended.status == 486
            carrier.sendto(ack_for(ended, uri), address_of(node))
    log_b = node_b.log_text()
    assert f"PSAP callback from trunk carrier to {DID}: served like an emergency call" in log_b
    assert f"emergency call presented {DID} on trunk carrier" in node_a.log_text()
    assert "Traceback" not in log_b
