"""Two gateway nodes behind kamailio's dispatcher, the edge proxy operators put in front of a
pool of SBCs (../shared/peers.md §5; harness/kamailio.py has its routing).

The calling trunk (sipp on 127.0.0.2) calls alice's DID at kamailio (127.0.0.3), which
Record-Routes the INVITE and relays it to a node round robin; the nodes know kamailio as their
trunk by its source address, and alice (one sipp UAS) is registered at both. What an operator
relies on here: the nodes answer the dispatcher's OPTIONS probes, so kamailio takes them into
rotation; each call's dialog runs through kamailio both ways (the node returns kamailio's
Record-Route in its answer and sends its own requests to the caller along it); a node drained
for maintenance (SIGTERM, ``[gateway] drain_timeout``) answers the probes 503, leaves the
rotation and finishes the calls it holds; an INVITE that reaches a draining node before a probe
has taken it out is refused 503 and failed over by kamailio to the other node. And the other
direction, kamailio in front of the carriers as a node's outbound trunk: the callee leg's ACK
and BYE follow kamailio's Record-Route.
"""

from __future__ import annotations

import json
import re
import signal
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
from pgcluster import Cluster

from tests.interop.harness import LOOPBACK, GatewayProcess, SippResult, SippUas, run_sipp_uac
from tests.interop.harness.gateway import TomlValue
from tests.interop.harness.kamailio import ADDRESS, KamailioDispatcher, KamailioTls
from tests.interop.harness.pki import TestPki
from tests.interop.harness.ports import free_port, free_port_pair
from tests.interop.harness.tls_gateway import TlsGatewayProcess
from tests.interop.sipp_calls import (
    ACCOUNTS,
    ALICE,
    BOB,
    CALLER_ID,
    DID,
    TRUNK_IP,
    account_call,
    header,
    inbound_trunk,
    register,
    trunk_call,
)

pytestmark = pytest.mark.interop

CALLER = "+4940777"
#: Where the guesser of the auth_proxies test sends from: a phone apart from alice's 127.0.0.1.
GUESSER_IP = "127.0.0.4"


def edge_trunk(proxy_address: str, transport: str = "udp") -> str:
    """kamailio as the node's trunk: calls from 127.0.0.3 to the DID go to alice."""
    return (
        "[[trunks]]\n"
        'name = "edge"\n'
        f'address = "{transport}:{proxy_address}"\n'
        f'allowed_sources = ["{ADDRESS}"]\n'
        f'dids = {{"{DID}" = "alice"}}\n'
    )


@attrs.frozen
class EdgeTls:
    """Mutual TLS between kamailio and the nodes, as across a data centre: one operator CA
    issues kamailio's certificate (for 127.0.0.3) and the nodes' (for 127.0.0.1)."""

    kamailio: KamailioTls
    #: The nodes' ``[plugins.tls]``: their certificate, and kamailio's required and verified
    #: (it must chain to the CA and, towards kamailio as their trunk, name 127.0.0.3).
    node: dict[str, TomlValue]

    @classmethod
    def issue(cls, directory: Path, kamailio_names: Sequence[str] = (ADDRESS,)) -> EdgeTls:
        ca = TestPki(directory).ca("Operator Internal CA")
        edge = ca.issue("edge", hosts=kamailio_names)
        node = ca.issue("node", hosts=[LOOPBACK])
        return cls(
            KamailioTls(edge.certificate, edge.key, ca.certificate),
            {
                "mode": "mutual",
                "certificate": str(node.certificate),
                "private_key": str(node.key),
                "ca_bundles": [str(ca.certificate)],
                "system_ca_for_trunks": False,
            },
        )


def node(
    tmp_path: Path,
    name: str,
    proxy: KamailioDispatcher,
    port: int,
    drain_timeout: float,
    *,
    tls: EdgeTls | None = None,
    tls_port: int | None = None,
    allowed_warnings: Sequence[str] = (),
    idle_timeout: float | None = None,
    gateway: dict[str, TomlValue] | None = None,
) -> GatewayProcess:
    """A gateway node whose trunk is kamailio: calls from 127.0.0.3 to the DID go to alice.
    With ``tls`` it listens on TLS at ``tls_port`` too and reaches kamailio over TLS.
    ``idle_timeout``: of its TCP (and TLS) connections; ``gateway``: more ``[gateway]`` keys."""
    settings: dict[str, dict[str, TomlValue]] = {
        "gateway": {"drain_timeout": drain_timeout, **(gateway or {})}
    }
    if idle_timeout is not None:
        settings["plugins.tcp"] = {"idle_timeout": idle_timeout}
    allowed_warnings = [r"drain_timeout reached: ending \d+ call\(s\)", *allowed_warnings]
    common: dict[str, Any] = {
        "port": port,
        "accounts": ACCOUNTS,
        "settings": settings,
        "allowed_warnings": allowed_warnings,
    }
    if tls is None:
        return GatewayProcess(tmp_path / name, extra_toml=edge_trunk(proxy.address), **common)
    return TlsGatewayProcess(
        tmp_path / name,
        tls_port=tls_port,
        tls=tls.node if idle_timeout is None else {**tls.node, "idle_timeout": idle_timeout},
        extra_toml=edge_trunk(proxy.tls_address, "tls"),
        **common,
    )


def target(gateway: GatewayProcess) -> str:
    """The node as kamailio's dispatcher list names it: its TLS listener, or UDP's and TCP's."""
    if isinstance(gateway, TlsGatewayProcess):
        return gateway.tls_address
    return f"{LOOPBACK}:{gateway.port}"


@contextmanager
def pool(
    tmp_path: Path,
    *,
    ping_interval: int = 0,
    drain_timeout: float = 60,
    calls: int = 1,
    call_duration_ms: int = 500,
    node_transport: str = "udp",
    tls: EdgeTls | None = None,
    alice_scenario: str = "uas_answer.xml",
    allowed_warnings: Sequence[str] = (),
    idle_timeout: float | None = None,
    gateway: dict[str, TomlValue] | None = None,
) -> Iterator[tuple[KamailioDispatcher, list[GatewayProcess], SippUas]]:
    """kamailio dispatching to two nodes (over ``node_transport``; over TLS with ``tls``, by
    default certificates as :meth:`EdgeTls.issue` makes them), alice registered at both and
    answering ``calls``. ``allowed_warnings``, ``idle_timeout`` and ``gateway`` (more
    ``[gateway]`` keys) are the nodes'."""
    ports = [free_port_pair(), free_port_pair()]
    if node_transport == "tls" and tls is None:
        tls = EdgeTls.issue(tmp_path / "pki")
    tls_ports = [free_port("tcp"), free_port("tcp")] if tls is not None else [None, None]
    proxy = KamailioDispatcher(
        tmp_path,
        [f"{LOOPBACK}:{tls_port or port}" for port, tls_port in zip(ports, tls_ports, strict=True)],
        ping_interval=ping_interval,
        node_transport=node_transport,
        tls=tls.kamailio if tls is not None else None,
    )
    nodes = [
        node(
            tmp_path,
            f"node{index}",
            proxy,
            port,
            drain_timeout,
            tls=tls,
            tls_port=tls_port,
            allowed_warnings=allowed_warnings,
            idle_timeout=idle_timeout,
            gateway=gateway,
        )
        for index, (port, tls_port) in enumerate(zip(ports, tls_ports, strict=True))
    ]
    alice = SippUas(
        alice_scenario,
        workdir=tmp_path,
        calls=calls,
        timeout=60,
        call_duration_ms=call_duration_ms,
    )
    with ExitStack() as stack:
        for gateway in nodes:
            stack.enter_context(gateway)
            register(gateway, tmp_path / gateway.workdir.name, "udp", alice.port)
        stack.enter_context(alice)
        stack.enter_context(proxy)
        yield proxy, nodes, alice


def call(
    proxy: KamailioDispatcher,
    tmp_path: Path,
    scenario: str = "uac_call.xml",
    *,
    calls: int = 1,
    rate: float | None = None,
    call_duration_ms: int | None = None,
    timeout: float = 15.0,
) -> SippResult:
    """The trunk (sipp on 127.0.0.2) calls the DID at kamailio."""
    return run_sipp_uac(
        scenario,
        proxy.address,
        workdir=tmp_path,
        service=DID,
        caller=CALLER,
        local_ip=TRUNK_IP,
        calls=calls,
        rate=rate,
        call_duration_ms=call_duration_ms,
        timeout=timeout,
    )


def end_reasons(gateway: GatewayProcess) -> list[str]:
    """Why each call of the node ended, from its ``call-ended`` lines, in order."""
    return re.findall(r"call \S+ ended: (.*)$", gateway.log_text(), re.M)


@pytest.mark.parametrize("node_transport", ["udp", "tls"])
def test_kamailio_probes_both_nodes_and_spreads_calls_routed_through_itself(
    tmp_path: Path, node_transport: str
) -> None:
    """Over TLS the probes and calls go over mutual TLS connections (kamailio verifies each
    node's certificate, the node kamailio's), and kamailio Record-Routes both of its sides."""
    with pool(tmp_path, ping_interval=1, calls=4, node_transport=node_transport) as (
        proxy,
        nodes,
        alice,
    ):
        # Listed inactive: only a 200 to the dispatcher's OPTIONS brings a node in.
        proxy.wait_for_states({target(gw): "AP" for gw in nodes})
        result = call(proxy, tmp_path, calls=4, rate=10)
        result.check()
        callee = alice.wait(timeout=20)
    callee.check()
    assert sorted(proxy.dispatched_to()) == sorted([target(gw) for gw in nodes] * 2)
    for gateway in nodes:
        assert end_reasons(gateway) == ["BYE from A leg"] * 2, gateway.log_text()
    # The nodes answered with kamailio's Record-Route, so the caller's ACK and BYE went back
    # through kamailio to the node that took each call.
    record_route = re.compile(rf"^Record-Route: <sip:{re.escape(proxy.address)};[^>]*\blr", re.M)
    answers = [
        a for a in result.received("SIP/2.0 200") if re.search(r"^CSeq: \d+ INVITE", a, re.M)
    ]
    assert len(answers) == 4 and all(record_route.search(a) for a in answers), answers
    for request in result.sent("ACK ") + result.sent("BYE "):
        assert re.search(rf"^Route: <sip:{re.escape(proxy.address)};", request, re.M), request
    log = proxy.log_text()
    assert (
        len(re.findall(r"in-dialog ACK ", log)) == 4
        and len(re.findall(r"in-dialog BYE ", log)) == 4
    ), log


def sigterm(gateway: GatewayProcess) -> None:
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGTERM)


def exit_code(gateway: GatewayProcess, timeout: float) -> int:
    assert gateway.process is not None
    return gateway.process.wait(timeout=timeout)


def first_call_answered(proxy: KamailioDispatcher) -> str:
    """The node kamailio sent the first call to, once the caller's ACK went through it."""
    proxy.wait_for_log(r"in-dialog ACK ")
    return proxy.dispatched_to()[0]


def three_calls_while_a_node_drains(
    tmp_path: Path, *, ping_interval: int
) -> tuple[KamailioDispatcher, str, str]:
    """A long call lands on a node; SIGTERM starts that node's drain while the call goes on
    (with probes, kamailio's next OPTIONS takes it out of rotation first); three more calls go
    through kamailio; the first ends as its caller hangs up and the drained node exits 0.
    Returns kamailio, the drained node's dispatcher target and the other node's."""
    with pool(tmp_path, ping_interval=ping_interval, calls=4) as (proxy, nodes, alice):
        by_target = {target(gw): gw for gw in nodes}
        if ping_interval:
            proxy.wait_for_states(dict.fromkeys(by_target, "AP"))
        with ThreadPoolExecutor(1) as executor:
            first = executor.submit(call, proxy, tmp_path, call_duration_ms=8000, timeout=30)
            drained_target = first_call_answered(proxy)
            (other_target,) = set(by_target) - {drained_target}
            drained = by_target[drained_target]
            sigterm(drained)
            drained.wait_for_log(r"draining: .* waiting up to 60 s for 1 call")
            if ping_interval:
                # Its 503 to the next OPTIONS takes it out (inactive, still probed).
                proxy.wait_for_states({drained_target: "IP", other_target: "AP"})
            call(proxy, tmp_path, calls=3, rate=10).check()
            assert first.result(timeout=40).ok, first.result().describe()
        # The call it held ended as its caller hung up, through kamailio; then it stopped.
        assert exit_code(drained, timeout=15) == 0
        alice.wait(timeout=20).check()
    assert end_reasons(drained) == ["BYE from A leg"]
    assert "drained: no calls in progress" in drained.log_text()
    assert end_reasons(by_target[other_target]) == ["BYE from A leg"] * 3
    return proxy, drained_target, other_target


def test_a_drained_node_leaves_the_rotation_at_the_next_probe_and_finishes_its_call(
    tmp_path: Path,
) -> None:
    proxy, drained, other = three_calls_while_a_node_drains(tmp_path, ping_interval=1)
    assert proxy.dispatched_to() == [drained] + [other] * 3


def test_an_invite_reaching_a_draining_node_is_refused_503_and_kamailio_fails_it_over(
    tmp_path: Path,
) -> None:
    """Without probes (or before the next one) kamailio still sends calls to a draining node:
    its 503 makes kamailio's failure route try the other node, and no call is lost."""
    proxy, drained_target, other_target = three_calls_while_a_node_drains(tmp_path, ping_interval=0)
    log = proxy.log_text()
    after_drain = proxy.dispatched_to()[1:]
    # Round robin sent at least one of the three to the draining node, and each such INVITE
    # was answered 503 and sent on to the other node.
    refused = after_drain.count(drained_target)
    assert refused >= 1, log
    assert len(re.findall(rf"to sip:{re.escape(other_target)} after 503$", log, re.M)) == refused
    assert after_drain.count(other_target) == 3  # where every one of them was answered


def the_node_hangs_up(
    tmp_path: Path, node_transport: str, *, caller_timeout: float = 30, **options: Any
) -> tuple[KamailioDispatcher, GatewayProcess, str, SippResult]:
    """A call through kamailio still up when its node's drain runs out (``drain_timeout``,
    3 s), so that the node sends its own BYE to the caller; returns kamailio, that node, its
    dispatcher target and the caller's sipp, which waits ``caller_timeout`` for the BYE
    (check it). ``options`` go to :func:`pool`."""
    with pool(tmp_path, drain_timeout=3, node_transport=node_transport, **options) as (
        proxy,
        nodes,
        alice,
    ):
        by_target = {target(gw): gw for gw in nodes}
        with ThreadPoolExecutor(1) as executor:
            caller = executor.submit(
                call, proxy, tmp_path, "uac_call_remote_bye.xml", timeout=caller_timeout
            )
            answered_by = first_call_answered(proxy)
            gateway = by_target[answered_by]
            sigterm(gateway)
            result = caller.result(timeout=caller_timeout + 10)
        assert exit_code(gateway, timeout=15) == 0
        alice.wait(timeout=20).check()
    return proxy, gateway, answered_by, result


@pytest.mark.parametrize("node_transport", ["udp", "tcp", "tls"])
def test_the_nodes_own_bye_reaches_the_caller_through_kamailio(
    tmp_path: Path, node_transport: str
) -> None:
    """A call still up when the drain runs out gets the node's BYE: towards the caller it
    follows the route set kamailio's Record-Route made (RFC 3261 §12.2.1.1), so kamailio
    relays it, and the caller sees kamailio's Via above the node's. Over TCP or TLS to the
    nodes (UDP from the caller) kamailio Record-Routes twice, once per side (RFC 5658): the
    node keeps both in the caller's 200 and sends its BYE to kamailio over the connection
    kamailio opened for the INVITE, still open. Over TLS kamailio and the node each verify the
    other's certificate (mutual TLS, one operator CA). kamailio is listed in ``[gateway]
    auth_proxies``: the caller's protection line says its own hop to kamailio (UDP, not
    encrypted), from kamailio's Via below its own, whatever kamailio's hop to the node is."""
    proxy, gateway, answered_by, result = the_node_hangs_up(
        tmp_path, node_transport, gateway={"auth_proxies": [ADDRESS]}
    )
    result.check()  # the BYE reached it and its 200 went back
    (answer,) = [
        a for a in result.received("SIP/2.0 200") if re.search(r"^CSeq: 1 INVITE", a, re.M)
    ]
    record_routes = re.findall(r"^Record-Route: <sip:([\d.]+:\d+)([^>]*)>", answer, re.M)
    hops = [hop for hop, _ in record_routes]
    if node_transport == "udp":
        assert hops == [proxy.address], answer
    else:
        # The node's side first (kamailio's last hop to it), then the caller's.
        node_side = proxy.tls_address if node_transport == "tls" else proxy.address
        assert hops == [node_side, proxy.address], answer
        assert f";transport={node_transport}" in record_routes[0][1], answer
    (bye,) = result.received("BYE ")
    vias = re.findall(r"^Via: SIP/2.0/(\w+) ([\d.]+:\d+)", bye, re.M)
    assert vias == [("UDP", proxy.address), (node_transport.upper(), answered_by)], bye
    assert "cause=503" in bye, bye
    log = proxy.log_text()
    # From the node's listening port: over kamailio's own connection to it (or over UDP).
    assert re.search(
        rf"in-dialog BYE \S+ from {re.escape(answered_by)} to sip:{re.escape(CALLER)}@{TRUNK_IP}:",
        log,
    ), log
    our_hop = node_transport.upper()
    if node_transport == "tls":
        # kamailio required and verified the node's certificate on its connection (tls.cfg).
        assert re.search(r"TLS BYE from \S+ verified=1 cn=node$", log, re.M), log
        our_hop += ", trunk's certificate verified"
    assert re.search(
        rf"^\S+ \S+ INFO \S+ call \S+ protection: caller leg: signalling {our_hop}, relayed by "
        rf"edge proxy {re.escape(ADDRESS)}:\d+, which received it over UDP \(NOT encrypted\) "
        rf"from {re.escape(TRUNK_IP)}:\d+;",
        gateway.log_text(),
        re.M,
    ), gateway.log_text()


@pytest.mark.parametrize("node_transport", ["tcp", "tls"])
def test_the_nodes_bye_reaches_the_caller_once_kamailios_connection_is_closed(
    tmp_path: Path, node_transport: str
) -> None:
    """kamailio's connection to the node closes while the call goes on (here the node's
    ``idle_timeout``, 1 s; kamailio's own ``tcp_connection_lifetime`` is two minutes by
    default): the node's BYE then goes over a new connection to where kamailio listens, its
    Record-Route hop (the trunk's address over TLS, where the trunk is configured so),
    never to the port kamailio's connection came from, which takes no connections. Over TLS
    the node verifies that kamailio's certificate names 127.0.0.3. Until session 59 the node
    connected to that port, was refused, and the caller was never told the call had ended."""
    proxy, gateway, answered_by, result = the_node_hangs_up(
        tmp_path, node_transport, idle_timeout=1.0
    )
    result.check()
    log = gateway.log_text()
    closed = log.index(f"{node_transport}: closing idle connection")
    assert closed < log.index("drain_timeout reached"), log
    assert "cannot reach" not in log, log
    # From a port of the node's own choosing: the new connection.
    kamailio_log = proxy.log_text()
    bye = re.search(rf"in-dialog BYE \S+ from ({re.escape(LOOPBACK)}:\d+) to ", kamailio_log)
    assert bye is not None and bye[1] != answered_by, kamailio_log
    if node_transport == "tls":
        assert re.search(r"TLS BYE from \S+ verified=1 cn=node$", kamailio_log, re.M)


def test_the_nodes_session_refresh_reaches_the_caller_through_kamailio_over_a_new_connection(
    tmp_path: Path,
) -> None:
    """RFC 4028 through kamailio over TCP, in real time (about 46 s): the carrier asks the
    node to refresh a 90 s session and refreshes once itself (its UPDATE reaches the node
    through kamailio); kamailio's connection to the node is closed while the call goes on
    (the node's ``idle_timeout``, 1 s), and the node's own UPDATE at half the interval goes
    over a new connection to kamailio's TCP side in the Record-Route, and on to the carrier.
    Before session 59 that UPDATE went to the port kamailio's connection came from and was
    never sent ("cannot reach a leg"), and the carrier, unrefreshed, would end the call."""
    with pool(tmp_path, node_transport="tcp", idle_timeout=1.0) as (proxy, nodes, alice):
        result = call(proxy, tmp_path, "calls/uac_call_session_timer.xml", timeout=80)
        result.check()  # the 200s stated the timer; the node's UPDATE came within 60 s
        alice.wait(timeout=20).check()
    (update,) = result.received("UPDATE ")
    assert header(update, "Session-Expires") == "90;refresher=uac", update
    (answered_by,) = proxy.dispatched_to()
    (gateway,) = [gw for gw in nodes if target(gw) == answered_by]
    log = gateway.log_text()
    assert "tcp: closing idle connection" in log and "cannot reach" not in log, log
    assert end_reasons(gateway) == ["BYE from A leg"], log
    # The node's UPDATE left from a port of its own choosing: its new connection.
    sent = re.search(r"in-dialog UPDATE \S+ from (\S+) to sip:\+", proxy.log_text())
    assert sent is not None and sent[1] != answered_by, proxy.log_text()


def test_a_node_sends_no_bye_to_a_record_route_hop_whose_certificate_names_another_address(
    tmp_path: Path,
) -> None:
    """kamailio's certificate chains to the operator's CA but names 127.0.0.9, not the
    127.0.0.3 where its Record-Route and the node's trunk send the node: once kamailio's own
    connection is closed, the node, as TLS client, refuses the new one (RFC 5922 §7.2: an
    IP-addressed hop is matched against the certificate's iPAddress entries) and its BYE goes
    nowhere, rather than to whoever holds that CA's certificate for another host. kamailio's
    connection to the node (the INVITE) was a client's, whose certificate only has to chain
    to the CA in mutual mode."""
    refused = (
        rf"tls: handshake to {re.escape(ADDRESS)}:\d+ failed \(mutual mode\): "
        r"certificate does not name 127\.0\.0\.3 \(it names IP:127\.0\.0\.9\)"
    )
    _, gateway, _, result = the_node_hangs_up(
        tmp_path,
        "tls",
        idle_timeout=1.0,
        tls=EdgeTls.issue(tmp_path / "pki", kamailio_names=["127.0.0.9"]),
        caller_timeout=8,
        allowed_warnings=[refused, r"tls: connection to \S+ failed"],
    )
    assert not result.ok and not result.received("BYE "), result.describe()
    log = gateway.log_text()
    assert re.search(refused, log), log
    assert re.search(rf"cannot reach a leg: .*{re.escape(ADDRESS)}", log), log


def test_a_call_out_through_kamailio_follows_its_record_route(tmp_path: Path) -> None:
    """The other direction: kamailio in front of the carriers, as the node's outbound trunk.
    The node builds the callee leg's route set from kamailio's Record-Route in the 2xx
    (RFC 3261 §12.1.2), so its ACK and its BYE (the caller hangs up) go through kamailio too."""
    with SippUas("uas_answer.xml", workdir=tmp_path) as carrier:
        proxy = KamailioDispatcher(tmp_path, [carrier.address])
        gateway = GatewayProcess(
            tmp_path / "node",
            accounts=ACCOUNTS,
            extra_toml=(
                "[[trunks]]\n"
                'name = "edge"\n'
                f'address = "udp:{proxy.address}"\n'
                'prefixes = ["+49"]\n'
                "allowed_sources = []\n"
                f'caller_id = "{CALLER_ID}"\n'
            ),
        )
        with proxy, gateway:
            caller = account_call("uac_call_auth.xml", gateway, tmp_path, service="+4989555")
            caller.check()
            callee = carrier.wait(timeout=10)
    callee.check()
    (invite,) = callee.received("INVITE ")
    assert re.search(rf"^Record-Route: <sip:{re.escape(proxy.address)};lr", invite, re.M), invite
    node = f"{LOOPBACK}:{gateway.port}"
    requests = callee.received("ACK ") + callee.received("BYE ")
    assert len(requests) == 2, callee.describe()
    for request in requests:
        vias = re.findall(r"^Via: SIP/2.0/UDP ([\d.]+:\d+)", request, re.M)
        assert vias == [proxy.address, node], request
    log = proxy.log_text()
    for method in ("ACK", "BYE"):
        assert re.search(rf"in-dialog {method} \S+ from {re.escape(node)} to ", log), log


def edge_and_node(
    tmp_path: Path,
    *,
    gateway: dict[str, TomlValue] | None = None,
    extra_toml: str = "",
    allowed_warnings: Sequence[str] = (),
    node_transport: str = "udp",
    idle_timeout: float | None = None,
) -> tuple[KamailioDispatcher, GatewayProcess]:
    """kamailio as the phones' edge in front of one node (reached over ``node_transport``,
    UDP or TCP), whose domains include kamailio's address (phones register alice@kamailio);
    ``gateway`` adds ``[gateway]`` keys, ``idle_timeout`` is the node's TCP one."""
    node_port = free_port_pair()
    proxy = KamailioDispatcher(tmp_path, [f"{LOOPBACK}:{node_port}"], node_transport=node_transport)
    settings: dict[str, dict[str, TomlValue]] = {
        "gateway": {"domains": [proxy.address], **(gateway or {})}
    }
    if idle_timeout is not None:
        settings["plugins.tcp"] = {"idle_timeout": idle_timeout}
    node = GatewayProcess(
        tmp_path / "node",
        port=node_port,
        accounts=ACCOUNTS,
        settings=settings,
        extra_toml=extra_toml,
        allowed_warnings=allowed_warnings,
    )
    return proxy, node


def register_through(
    proxy: KamailioDispatcher,
    tmp_path: Path,
    *,
    password: str = ALICE[1],
    port: int | None = None,
    local_ip: str = LOOPBACK,
) -> SippResult:
    """alice's REGISTER (answering the challenge with ``password``) sent to kamailio, with her
    Contact on ``port`` (default: sipp's own)."""
    return run_sipp_uac(
        "register_auth.xml",
        proxy.address,
        workdir=tmp_path,
        service="alice",
        auth=("alice", password),
        port=port,
        local_ip=local_ip,
    )


def test_a_phone_registered_through_kamailio_with_a_path_is_called_through_it(
    tmp_path: Path,
) -> None:
    """kamailio as the phones' edge (NAT, TCP and TLS flows end there): it adds a Path to each
    REGISTER (``add_path_received()``, RFC 3327); the node stores it, echoes it in its 200 and
    sends a call for the phone to kamailio with the Path as its Route (§5.3), where kamailio's
    path module finds the phone's address again (its ``received`` parameter)."""
    alice = SippUas("uas_answer.xml", workdir=tmp_path)
    proxy, gateway = edge_and_node(tmp_path, extra_toml=inbound_trunk())
    with proxy, gateway:
        registration = register_through(proxy, tmp_path, port=alice.port)
        registration.check()
        gateway.wait_for_log(r"registered: 1 binding\(s\) for sip:alice@")
        (binding,) = json.loads(gateway.cli("registrations", "alice", "--json").stdout)
        with alice:
            trunk_call("uac_call.xml", gateway, tmp_path).check()
            callee = alice.wait(timeout=10)
    callee.check()
    # The operator sees the Path: calls to alice go to kamailio first.
    assert binding["path"] == [f"<sip:{proxy.address};lr;received=sip:{LOOPBACK}:{alice.port}>"], (
        binding
    )
    # The phone did not say "Supported: path", so the Path is stored but not echoed (§5.3).
    (ok,) = registration.received("SIP/2.0 200")
    assert not re.search(r"^Path:", ok, re.M), ok
    node = f"{LOOPBACK}:{gateway.port}"
    (invite,) = callee.received("INVITE ")
    assert invite.startswith(f"INVITE sip:alice@{LOOPBACK}:{alice.port}"), invite
    # kamailio took its own Route off; its Record-Route keeps the dialog through it.
    assert not re.search(r"^Route:", invite, re.M), invite
    assert re.findall(r"^Via: SIP/2.0/UDP ([\d.]+:\d+)", invite, re.M) == [proxy.address, node]
    (bye,) = callee.received("BYE ")
    assert re.findall(r"^Via: SIP/2.0/UDP ([\d.]+:\d+)", bye, re.M) == [proxy.address, node]
    log = proxy.log_text()
    # The node sent the INVITE to kamailio with the Path as its Route.
    along = re.search(
        r"along its Route INVITE \S+ to sip:alice@\S+ via (\S+) \(Route: (.*)\)$", log, re.M
    )
    assert along is not None, log
    assert along[1] == f"sip:{LOOPBACK}:{alice.port}", log
    assert along[2] == f"<sip:{proxy.address};lr;received=sip:{LOOPBACK}:{alice.port}>", log
    to_alice = rf"to sip:\S*{re.escape(LOOPBACK)}:{alice.port}"  # her Contact
    for method in ("ACK", "BYE"):
        assert re.search(rf"in-dialog {method} \S+ from {re.escape(node)} {to_alice}", log), log
    # Its protection line does not pass kamailio's hop to alice off as the node's.
    path = re.escape(f"<sip:{proxy.address};lr;received=sip:{LOOPBACK}:{alice.port}>")
    assert re.search(
        rf" protection: .*; callee leg: signalling UDP, through edge proxy {path} \(its "
        r"registered Path\), whose hop to the phone the gateway does not see; media ",
        gateway.log_text(),
    ), gateway.log_text()


def test_a_phone_registered_through_kamailio_over_tcp_is_called_after_its_connection_closed(
    tmp_path: Path,
) -> None:
    """kamailio relays alice's REGISTER to the node over TCP, so her Path names kamailio's TCP
    side; that connection is closed (the node's ``idle_timeout``, 1 s) before a call for her,
    which the node sends along the Path over a new connection of its own, not the REGISTER's
    closed one (RFC 3327 §5.3: the Path is the way to the contact)."""
    alice = SippUas("uas_answer.xml", workdir=tmp_path)
    proxy, gateway = edge_and_node(
        tmp_path, extra_toml=inbound_trunk(), node_transport="tcp", idle_timeout=1.0
    )
    with proxy, gateway:
        register_through(proxy, tmp_path, port=alice.port).check()
        gateway.wait_for_log(r"registered: 1 binding\(s\) for sip:alice@")
        gateway.wait_for_log(r"tcp: closing idle connection .*<->127\.0\.0\.3:")
        with alice:
            trunk_call("uac_call.xml", gateway, tmp_path).check()
            alice.wait(timeout=10).check()
    log = proxy.log_text()
    along = re.search(r"along its Route INVITE \S+ to \S+ via \S+ \(Route: (.*)\)$", log, re.M)
    assert along is not None and f"<sip:{proxy.address};transport=tcp;lr;" in along[1], log
    ack = re.search(r"in-dialog ACK \S+ from (\S+) to ", log)
    assert ack is not None and ack[1] != f"{LOOPBACK}:{gateway.port}", log


def test_nodes_sharing_a_store_reach_a_phone_registered_through_kamailio_from_either_node(
    tmp_path: Path, postgres_cluster: Cluster, postgres_database: str
) -> None:
    """The cluster of docs/architecture.md ("Reaching a phone registered through another
    node"): two nodes on one PostgreSQL store behind one kamailio, the trunks' dispatcher and
    the phones' edge at once. alice registers through kamailio, reaching one node; a call for
    her that kamailio hands to either node finds her binding in the store, with its Path, and
    goes to her through kamailio, which holds her flow."""
    store = postgres_cluster.store_table(postgres_database, tmp_path)
    alice = SippUas("uas_answer.xml", workdir=tmp_path, calls=2)
    ports = [free_port_pair(), free_port_pair()]
    proxy = KamailioDispatcher(tmp_path, [f"{LOOPBACK}:{port}" for port in ports])
    nodes = [
        GatewayProcess(
            tmp_path / f"node{index}",
            port=port,
            accounts=ACCOUNTS if index == 0 else {},  # in the shared store
            settings={"store": store, "gateway": {"domains": [proxy.address]}},
            extra_toml=edge_trunk(proxy.address),
        )
        for index, port in enumerate(ports)
    ]
    with proxy, nodes[0], nodes[1]:
        register_through(proxy, tmp_path, port=alice.port).check()
        with alice:
            result = call(proxy, tmp_path, calls=2, rate=10)
            result.check()
            callee = alice.wait(timeout=20)
    callee.check()
    # Both REGISTERs (challenged, then with credentials) went to one node, whose challenge
    # the second answered; the calls went one to each node.
    registered_at = [
        gw for gw in nodes if re.search(r"registered: 1 binding\(s\) for sip:alice@", gw.log_text())
    ]
    assert len(registered_at) == 1, [gw.log_text() for gw in nodes]
    for gateway in nodes:
        assert end_reasons(gateway) == ["BYE from A leg"], gateway.log_text()
    # Each node sent its INVITE for alice to kamailio, along her Path, and kamailio to her.
    vias = [
        re.findall(r"^Via: SIP/2.0/UDP ([\d.]+:\d+)", invite, re.M)
        for invite in callee.received("INVITE ")
    ]
    assert sorted(vias) == sorted([[proxy.address, f"{LOOPBACK}:{port}"] for port in ports])


@pytest.mark.parametrize("listed", [True, False], ids=["auth_proxies", "without"])
def test_a_guesser_behind_kamailio_is_blocked_alone_when_kamailio_is_an_auth_proxy(
    tmp_path: Path, listed: bool
) -> None:
    """Every phone behind kamailio comes from kamailio's address. With kamailio in
    ``[gateway] auth_proxies`` the node counts a failed authentication against the address
    kamailio received it from (the Via below kamailio's): a guesser on 127.0.0.4 is blocked and
    alice on 127.0.0.1 registers through the same kamailio. Without it (as before the key) the
    guesser blocks kamailio's address, and alice with it."""
    proxy, gateway = edge_and_node(
        tmp_path,
        gateway={"auth_max_failures": 2, "auth_proxies": [ADDRESS] if listed else []},
        allowed_warnings=[r"authentication failed for user", r"too many failed authentications"],
    )
    with proxy, gateway:
        for _ in range(2):
            assert not register_through(proxy, tmp_path, password="guess", local_ip=GUESSER_IP).ok
        blocked = r"authentication failed for user 'alice' \(source now blocked\)"
        line = gateway.wait_for_log(rf"REGISTER from (\S+): {blocked}")
        assert line[1].startswith(f"{GUESSER_IP}:" if listed else f"{ADDRESS}:{proxy.port}")
        result = register_through(proxy, tmp_path)
    if listed:
        result.check()
    else:
        assert "SIP/2.0 403 Too Many Failed Authentications" in result.messages(), result.describe()


@pytest.mark.parametrize("node_transport", ["udp", "tcp"])
def test_a_watchers_notifies_come_through_kamailio(tmp_path: Path, node_transport: str) -> None:
    """A buddy list through kamailio: bob's SUBSCRIBE to alice's presence is Record-Routed,
    so the node's NOTIFYs (the first, and the one ending the subscription as the node stops)
    follow that route set back through kamailio (RFC 6665 §4.1.3, RFC 3261 §12.1.1), as a
    phone behind the edge's NAT or TLS connection needs. Over TCP kamailio's connection to
    the node is closed (the node's ``idle_timeout``, 1 s here; kamailio's own lifetime is two
    minutes) before the last NOTIFY, which goes over a new connection to kamailio's TCP side
    in its Record-Route; before session 59 it went to the port kamailio's connection came
    from, was refused, and bob's lamp kept showing alice present."""
    proxy, gateway = edge_and_node(
        tmp_path,
        extra_toml='[presence]\nallow = "all-accounts"\n',
        node_transport=node_transport,
        idle_timeout=1.0 if node_transport == "tcp" else None,
    )
    with proxy, gateway, ThreadPoolExecutor(1) as executor:
        register(gateway, tmp_path, "udp", free_port_pair())  # alice: present
        watching = executor.submit(
            run_sipp_uac,
            "calls/uac_subscribe_presence_stop.xml",
            proxy.address,
            workdir=tmp_path,
            service="alice",
            caller="bob",
            auth=BOB,
            timeout=20,
        )
        gateway.wait_for_log(r"bob watches the presence of alice for 600 s")
        proxy.wait_for_log(r"in-dialog NOTIFY ")
        if node_transport == "tcp":
            gateway.wait_for_log(r"tcp: closing idle connection .*<->127\.0\.0\.3:")
        assert gateway.stop() == 0
        watcher = watching.result(timeout=30)
    watcher.check()
    notifies = watcher.received("NOTIFY ")
    assert len(notifies) == 2, watcher.describe()
    assert "<basic>open</basic>" in notifies[0]
    assert "Subscription-State: terminated;reason=deactivated\n" in notifies[1]
    node = f"{LOOPBACK}:{gateway.port}"
    for notify in notifies:
        vias = re.findall(r"^Via: SIP/2.0/(\w+) ([\d.]+:\d+)", notify, re.M)
        assert vias == [("UDP", proxy.address), (node_transport.upper(), node)], notify
    if node_transport == "tcp":
        # The first over kamailio's connection (from the node's listening port), the last
        # over the node's own.
        sources = re.findall(r"in-dialog NOTIFY \S+ from (\S+) to ", proxy.log_text())
        assert len(sources) == 2 and sources[0] == node and sources[1] != node, sources


def test_a_caller_cancelling_through_kamailio_stops_the_phone_ringing(tmp_path: Path) -> None:
    """The carrier's CANCEL reaches the node through kamailio (hop by hop, RFC 3261 §16.10):
    the node matches it to the INVITE kamailio relayed, answers 487, and cancels alice's
    ringing leg."""
    with pool(tmp_path, alice_scenario="uas_ring_forever.xml") as (proxy, nodes, alice):
        result = call(proxy, tmp_path, "uac_cancel.xml")
        result.check()
        callee = alice.wait(timeout=20)
    callee.check()
    assert result.received("SIP/2.0 487"), result.describe()
    (dispatched_to,) = proxy.dispatched_to()
    (node,) = [gw for gw in nodes if target(gw) == dispatched_to]
    (cancel,) = callee.received("CANCEL ")
    assert re.findall(r"^Via: SIP/2.0/UDP ([\d.]+:\d+)", cancel, re.M) == [dispatched_to], cancel
    assert end_reasons(node) == ["cancelled by caller"], node.log_text()
