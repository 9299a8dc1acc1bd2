"""Two ``voipgw run`` nodes sharing one PostgreSQL store, as behind a load balancer hashing on
Call-ID: a phone registers through node A, and a call that reaches node B rings it.

Node B has no flow of the phone's (the REGISTER came over A's socket), so it sends the INVITE to
the registered contact itself, which a phone on 127.0.0.1 is reachable at over UDP. Phones behind
NAT would need the load balancer's Path (RFC 3327; docs/architecture.md "Scale").
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pgcluster import Cluster, StallingProxy

from gateway.core.sip.message import Request, Response, make_response
from gateway.core.sip.serializer import serialize_message
from gateway.testing.sip_agent import simple_sdp
from tests.integration.node_phones import (
    ACCOUNTS,
    ack_for,
    address_of,
    busy,
    digest,
    final_response,
    port_of,
    receive,
    register_status,
    request,
    rung,
    udp_socket,
)
from tests.interop.harness import GatewayProcess

# What a node logs while its database is down or silent, on purpose in the tests that stop it:
# every such line names the store's connection.
DATABASE_FAILING = r"PostgreSQL host=\S+ port=\d+ dbname="


@pytest.fixture
def two_nodes(
    tmp_path: Path, postgres_cluster: Cluster, postgres_database: str
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    store = postgres_cluster.store_table(postgres_database, tmp_path)
    settings = {"store": store, "gateway": {"log_level": "debug"}}
    accounts = {name: ACCOUNTS[name] for name in ("alice", "bob")}
    node_a = GatewayProcess(
        tmp_path / "a", accounts=accounts, settings=settings, digest_algorithms=("MD5",)
    )
    node_b = GatewayProcess(tmp_path / "b", settings=settings, digest_algorithms=("MD5",))
    with node_a, node_b:
        yield node_a, node_b


def test_a_call_through_node_b_rings_the_phone_registered_through_node_a(
    two_nodes: tuple[GatewayProcess, GatewayProcess],
) -> None:
    node_a, node_b = two_nodes
    with udp_socket() as phone, udp_socket() as caller:
        # alice's phone registers through node A (digest: the account is in PostgreSQL).
        registrar = f"sip:127.0.0.1:{node_a.port}"
        phone.sendto(request("REGISTER", registrar, phone, "alice", 1), address_of(node_a))
        challenge = final_response(phone)
        assert challenge.status == 401
        auth = digest(
            challenge.headers.get_all("WWW-Authenticate")[0], "alice", "REGISTER", registrar
        )
        phone.sendto(
            request(
                "REGISTER", registrar, phone, "alice", 2, f"Authorization: {auth}", "Expires: 600"
            ),
            address_of(node_a),
        )
        assert final_response(phone).status == 200

        # bob calls alice through node B, which has never seen her phone.
        target = f"sip:alice@127.0.0.1:{node_b.port}"
        sdp = simple_sdp("127.0.0.1", 40000)
        caller.sendto(request("INVITE", target, caller, "bob", 1, body=sdp), address_of(node_b))
        challenge = final_response(caller)
        assert challenge.status == 407
        caller.sendto(ack_for(challenge, target), address_of(node_b))
        auth = digest(challenge.headers.get_all("Proxy-Authenticate")[0], "bob", "INVITE", target)
        caller.sendto(
            request("INVITE", target, caller, "bob", 2, f"Proxy-Authorization: {auth}", body=sdp),
            address_of(node_b),
        )

        # The phone is rung by node B, at the contact it registered through node A.
        invite, source = receive(phone)
        while not (isinstance(invite, Request) and invite.method == "INVITE"):
            invite, source = receive(phone)
        assert source == ("127.0.0.1", node_b.port)
        assert str(invite.uri) == f"sip:alice@127.0.0.1:{port_of(phone)}"
        busy = make_response(invite, 486, "Busy Here", to_tag="phone-tag")
        phone.sendto(serialize_message(busy), source)
        final = final_response(caller)
        assert final.status == 486
        caller.sendto(ack_for(final, target), address_of(node_b))

    assert "registered: 1 binding(s) for sip:alice@" in node_a.log_text()
    assert "binding(s) for" not in node_b.log_text()  # B took no REGISTER


def test_an_answer_to_another_nodes_challenge_gets_a_fresh_one_not_a_failure(
    tmp_path: Path, postgres_cluster: Cluster, postgres_database: str
) -> None:
    """A load balancer that sends a REGISTER's retry with credentials to another node than the
    one that challenged it (round robin, or the first node gone): the credentials prove the
    password, but the nonce and opaque are another node's (each node has its own secret). The
    node asks again with stale=true (RFC 7616 §3.3), and counts no failed authentication: the
    balancer's address is every phone's, and auth_max_failures would block them all."""
    store = postgres_cluster.store_table(postgres_database, tmp_path)
    settings = {"store": store, "gateway": {"domains": ["cluster.example"]}}
    node_a = GatewayProcess(
        tmp_path / "a",
        accounts={"alice": ACCOUNTS["alice"]},
        settings=settings,
        digest_algorithms=("MD5",),
    )
    node_b = GatewayProcess(tmp_path / "b", settings=settings, digest_algorithms=("MD5",))
    registrar = "sip:cluster.example"
    with node_a, node_b, udp_socket() as phone:
        phone.sendto(request("REGISTER", registrar, phone, "alice", 1), address_of(node_a))
        challenge = final_response(phone)
        assert challenge.status == 401
        auth = digest(
            challenge.headers.get_all("WWW-Authenticate")[0], "alice", "REGISTER", registrar
        )
        assert 'opaque=""' not in auth  # the client returns node A's opaque, as clients do
        phone.sendto(
            request("REGISTER", registrar, phone, "alice", 2, f"Authorization: {auth}"),
            address_of(node_b),
        )
        again = final_response(phone)
        assert again.status == 401
        (fresh,) = again.headers.get_all("WWW-Authenticate")
        assert "stale=true" in fresh, fresh
        auth = digest(fresh, "alice", "REGISTER", registrar)
        phone.sendto(
            request("REGISTER", registrar, phone, "alice", 3, f"Authorization: {auth}"),
            address_of(node_b),
        )
        assert final_response(phone).status == 200
        assert "authentication failed" not in node_b.log_text()


def test_an_account_added_with_the_cli_is_taken_by_a_running_node(
    two_nodes: tuple[GatewayProcess, GatewayProcess],
) -> None:
    node_a, node_b = two_nodes
    # Until the account is added, carol's REGISTERs are failed logins, on purpose.
    node_a.allowed_warnings += (r"authentication failed for user 'carol'",)
    with udp_socket() as phone:
        # Node A looks carol up and finds no account (and remembers that)...
        assert register_status(node_a, phone, 1, user="carol") == 401
        # ...until `voipgw accounts add`, run against node B's config, tells it otherwise.
        node_b.add_account("carol", ACCOUNTS["carol"])
        deadline = time.monotonic() + 10.0
        cseq = 3
        while (status := register_status(node_a, phone, cseq, user="carol")) != 200:
            # Each 401 counts as a failed login; five in 60 s would block the phone (403).
            assert status == 401 and time.monotonic() < deadline, status
            cseq += 2
            time.sleep(0.2)


def test_a_register_while_the_database_is_down_gets_503_and_works_once_it_is_back(
    two_nodes: tuple[GatewayProcess, GatewayProcess], postgres_cluster: Cluster
) -> None:
    node, other = two_nodes
    node.allowed_warnings += (DATABASE_FAILING,)
    other.allowed_warnings += (DATABASE_FAILING,)
    with udp_socket() as phone:
        assert register_status(node, phone, 1) == 200
        postgres_cluster.stop()
        try:
            started = time.monotonic()
            assert register_status(node, phone, 3) == 503
            # Answered at once: nothing waited for a connection (connect_timeout is 5 s).
            assert time.monotonic() - started < 4.0
        finally:
            postgres_cluster.start()
        deadline = time.monotonic() + 15.0
        cseq = 5
        while (status := register_status(node, phone, cseq)) != 200:
            assert status == 503 and time.monotonic() < deadline, status
            cseq += 2
            time.sleep(0.1)
    log = node.log_text()
    assert "REGISTER refused with 503" in log
    assert postgres_cluster.password not in log


def pidf(basic: str, note: str) -> bytes:
    return (
        '<?xml version="1.0"?><presence xmlns="urn:ietf:params:xml:ns:pidf" '
        f'entity="sip:alice@127.0.0.1"><tuple id="desk"><status><basic>{basic}</basic>'
        f"</status><note>{note}</note></tuple></presence>"
    ).encode()


def publish(
    node: GatewayProcess, phone: socket.socket, cseq: int, body: bytes, *extra: str
) -> Response:
    """alice's PUBLISH of her presence through ``node`` (answering the challenge)."""
    target = f"sip:alice@127.0.0.1:{node.port}"
    fields = ("Event: presence", *extra)
    pidf_type = "application/pidf+xml"
    phone.sendto(
        request(
            "PUBLISH", target, phone, "alice", cseq, *fields, body=body, content_type=pidf_type
        ),
        address_of(node),
    )
    challenge = final_response(phone)
    if challenge.status != 407:
        return challenge
    auth = digest(challenge.headers.get_all("Proxy-Authenticate")[0], "alice", "PUBLISH", target)
    phone.sendto(
        request(
            "PUBLISH",
            target,
            phone,
            "alice",
            cseq + 1,
            f"Proxy-Authorization: {auth}",
            *fields,
            body=body,
            content_type=pidf_type,
        ),
        address_of(node),
    )
    return final_response(phone)


def test_a_watcher_on_node_b_sees_a_registration_through_node_a(
    tmp_path: Path, postgres_cluster: Cluster, postgres_database: str
) -> None:
    """Presence across the cluster (docs/configuration.md ``[presence]``, "Cluster"): bob
    watches alice's presence through node B; alice registers through node A; node B's look at
    the shared store (every 5 s) finds her binding and tells bob she is open. Her phone
    publishes through node A: bob, on B, sees the document within the same look; a PUBLISH
    that modifies it by A's entity tag reaches node B (not 412) and bob hears of it at once;
    one by the tag B gave, through A, removes it (bob sees the registration's ``open`` again).
    Node B then stops: bob's last NOTIFY says ``deactivated`` (subscribe again, on node A)."""
    store = postgres_cluster.store_table(postgres_database, tmp_path)
    settings = {"store": store, "presence": {"allow": "all-accounts"}}
    accounts = {name: ACCOUNTS[name] for name in ("alice", "bob")}
    node_a = GatewayProcess(
        tmp_path / "a", accounts=accounts, settings=settings, digest_algorithms=("MD5",)
    )
    node_b = GatewayProcess(tmp_path / "b", settings=settings, digest_algorithms=("MD5",))
    with node_a, node_b, udp_socket() as watcher, udp_socket() as phone:
        target = f"sip:alice@127.0.0.1:{node_b.port}"
        presence = ("Event: presence", "Expires: 600", "Accept: application/pidf+xml")
        watcher.sendto(
            request("SUBSCRIBE", target, watcher, "bob", 1, *presence), address_of(node_b)
        )
        challenge = final_response(watcher)
        assert challenge.status == 407
        auth = digest(
            challenge.headers.get_all("Proxy-Authenticate")[0], "bob", "SUBSCRIBE", target
        )
        watcher.sendto(
            request(
                "SUBSCRIBE", target, watcher, "bob", 2, f"Proxy-Authorization: {auth}", *presence
            ),
            address_of(node_b),
        )
        assert final_response(watcher).status == 200

        def next_notify(timeout: float) -> Request:
            """The watcher's next NOTIFY, answered 200."""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                message, source = receive(watcher)
                if isinstance(message, Request) and message.method == "NOTIFY":
                    watcher.sendto(serialize_message(make_response(message, 200)), source)
                    return message
            raise AssertionError("no NOTIFY")

        def basic(notify: Request) -> str:
            found = re.search(rb"<basic>(\w+)</basic>", notify.body)
            assert found is not None, notify.body
            return found.group(1).decode()

        assert basic(next_notify(5)) == "closed"  # alice registered nowhere yet
        assert register_status(node_a, phone, 1) == 200
        registered = time.monotonic()
        assert basic(next_notify(10)) == "open"
        assert time.monotonic() - registered < 6.5  # within node B's look at the store

        # Published through A ("away", closed): B's next look at the store brings it to bob.
        published = publish(node_a, phone, 10, pidf("closed", "away"), "Expires: 600")
        assert published.status == 200, published.reason
        first = published.headers.get("SIP-ETag")
        assert first is not None
        sent = time.monotonic()
        notify = next_notify(10)
        assert time.monotonic() - sent < 6.5
        assert basic(notify) == "closed" and b"<note>away</note>" in notify.body
        # Modified through B by A's tag (the load balancer sent it there): 200, not 412, and
        # bob, watching on B, is told at once.
        with udp_socket() as phone_b:
            modified = publish(node_b, phone_b, 20, pidf("open", "back"), f"SIP-If-Match: {first}")
            assert modified.status == 200, modified.reason
            second = modified.headers.get("SIP-ETag")
            assert second is not None and second != first
            sent = time.monotonic()
            notify = next_notify(5)
            assert time.monotonic() - sent < 1.5
            assert basic(notify) == "open" and b"<note>back</note>" in notify.body
        # A's tag was superseded on B: 412 on A too. Removed through A by B's tag: bob sees
        # the registration's document again (the gateway's tuple) within B's next look.
        stale = publish(node_a, phone, 30, b"", f"SIP-If-Match: {first}", "Expires: 600")
        assert stale.status == 412
        removed = publish(node_a, phone, 40, b"", f"SIP-If-Match: {second}", "Expires: 0")
        assert removed.status == 200, removed.reason
        notify = next_notify(10)
        assert basic(notify) == "open" and b'id="gw"' in notify.body
        with ThreadPoolExecutor(max_workers=1) as pool:
            stopped = pool.submit(node_b.stop)
            final = next_notify(5)
            assert final.headers.get("Subscription-State") == "terminated;reason=deactivated"
            assert stopped.result(timeout=10) == 0
    assert "binding(s) for" not in node_b.log_text()  # B took no REGISTER


@pytest.fixture
def stalling_proxy(postgres_cluster: Cluster) -> Iterator[StallingProxy]:
    proxy = StallingProxy(postgres_cluster.port)
    yield proxy
    proxy.close()


def test_a_node_whose_database_stops_answering_keeps_serving_and_catches_up_once_it_answers(
    tmp_path: Path,
    postgres_cluster: Cluster,
    postgres_database: str,
    stalling_proxy: StallingProxy,
) -> None:
    """A database that stops answering while its kernel still acknowledges (a postgres process
    stopped, a pooler or proxy that stalls: the proxy here) held the node's event loop in its
    next statement until it answered again: no REGISTER, no OPTIONS, no call was served. The
    store's watchdog cuts the connection past statement_timeout + 1 s (1.5 s): a REGISTER gets
    503, an OPTIONS its 200, a call's record waits in memory, and once the database answers
    the node reconnects, registers again and writes the record."""
    store = postgres_cluster.store_table(postgres_database, tmp_path)
    store["dsn"] = store["dsn"].replace(
        f"port={postgres_cluster.port}", f"port={stalling_proxy.port}"
    )
    settings = {"store": store, "gateway": {"log_level": "debug"}}
    accounts = {name: ACCOUNTS[name] for name in ("alice", "bob")}
    node = GatewayProcess(
        tmp_path / "node",
        accounts=accounts,
        settings=settings,
        digest_algorithms=("MD5",),
        allowed_warnings=[DATABASE_FAILING],  # the proxy stalls the database on purpose
    )
    with node, udp_socket() as phone, udp_socket() as caller, udp_socket() as prober:
        # A generous bound that only proves no hang (the watchdog's is 1.5 s).
        for sock in (phone, caller, prober):
            sock.settimeout(10 * 1.5)
        assert register_status(node, phone, 1) == 200
        # bob calls alice; her phone rings, and the call's record is written.
        target = f"sip:alice@127.0.0.1:{node.port}"
        sdp = simple_sdp("127.0.0.1", 40000)
        caller.sendto(request("INVITE", target, caller, "bob", 1, body=sdp), address_of(node))
        challenge = final_response(caller)
        assert challenge.status == 407
        caller.sendto(ack_for(challenge, target), address_of(node))
        auth = digest(challenge.headers.get_all("Proxy-Authenticate")[0], "bob", "INVITE", target)
        caller.sendto(
            request("INVITE", target, caller, "bob", 2, f"Proxy-Authorization: {auth}", body=sdp),
            address_of(node),
        )
        invite, source = rung(phone)

        def records() -> list[tuple[object, ...]]:
            return postgres_cluster.admin("SELECT end_reason FROM call_records", postgres_database)

        deadline = time.monotonic() + 10.0
        while records() != [(None,)]:
            assert time.monotonic() < deadline, records()
            time.sleep(0.05)

        stalling_proxy.stall()
        # The call ends while the database does not answer: its record's save waits for it.
        busy(phone, invite, source)
        ended = final_response(caller)
        assert ended.status == 486
        caller.sendto(ack_for(ended, target), address_of(node))
        assert register_status(node, phone, 3) == 503
        prober.sendto(
            request("OPTIONS", f"sip:127.0.0.1:{node.port}", prober, "probe", 1),
            address_of(node),
        )
        assert final_response(prober).status == 200

        stalling_proxy.resume()
        deadline = time.monotonic() + 30.0
        cseq = 5
        while (status := register_status(node, phone, cseq)) != 200:
            assert status == 503 and time.monotonic() < deadline, status
            cseq += 2
            time.sleep(0.1)
        while records() == [(None,)]:
            assert time.monotonic() < deadline, records()
            time.sleep(0.05)
        assert records() != [(None,)] and len(records()) == 1
    log = node.log_text()
    assert "(statement_timeout + 1 s): connection cut" in log
    assert postgres_cluster.password not in log
