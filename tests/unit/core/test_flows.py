from __future__ import annotations

import re
from pathlib import Path

import gateway
from gateway.core.transport.flows import (
    Flow,
    FlowKey,
    FlowTable,
    format_address,
    format_host_port,
)


async def _send(data: bytes) -> None:
    return None


def flow(transport: str, remote_port: int, *, reliable: bool, last: float) -> Flow:
    key = FlowKey(transport, ("127.0.0.1", 5060), ("127.0.0.1", remote_port))
    return Flow(key=key, send=_send, reliable=reliable, last_activity=last)


def test_idle_datagram_flows_expire_and_connections_stay() -> None:
    table = FlowTable()
    old_udp = flow("udp", 40000, reliable=False, last=0.0)
    fresh_udp = flow("udp", 40001, reliable=False, last=290.0)
    old_tcp = flow("tcp", 40002, reliable=True, last=0.0)
    for f in (old_udp, fresh_udp, old_tcp):
        table.add(f)
    assert table.expire_datagram_flows(now=300.0, idle=60.0) == 1
    assert old_udp.closed
    assert table.find("udp", ("127.0.0.1", 40000)) is None
    assert table.find("udp", ("127.0.0.1", 40001)) is fresh_udp
    assert table.find("tcp", ("127.0.0.1", 40002)) is old_tcp
    assert len(table) == 2


def test_remove_keeps_a_newer_flow_for_the_same_remote() -> None:
    table = FlowTable()
    first = flow("tcp", 40000, reliable=True, last=0.0)
    table.add(first)
    second = Flow(
        key=FlowKey("tcp", ("127.0.0.1", 5061), ("127.0.0.1", 40000)),
        send=_send,
        reliable=True,
    )
    table.add(second)
    table.remove(first)
    assert table.find("tcp", ("127.0.0.1", 40000)) is second


def test_an_ipv6_host_is_written_in_brackets_before_its_port() -> None:
    # RFC 3986 §3.2.2 / RFC 3261 §25.1: without brackets the port reads as part of the address.
    assert format_host_port("2001:db8::1", 5060) == "[2001:db8::1]:5060"
    assert format_host_port("[2001:db8::1]", 5060) == "[2001:db8::1]:5060"
    assert format_host_port("2001:db8::1") == "[2001:db8::1]"
    assert format_host_port("192.0.2.1", 5060) == "192.0.2.1:5060"
    assert format_host_port("sip.example.com") == "sip.example.com"
    assert format_address(("::1", 5061)) == "[::1]:5061"


def test_gateway_sources_format_host_and_port_with_the_one_helper() -> None:
    # A log line or Reason text that writes f"{host}:{port}" or "%s:%d" by hand prints an IPv6
    # host without brackets ("2001:db8::1:5060"). The SIP message classes (gateway/core/sip)
    # write hosts that keep their brackets from the wire (RFC 5118) and are left out.
    root = Path(gateway.__file__).parent
    by_hand = re.compile(r"\{[^{}]*host[^{}]*\}:\{|%s:%d")
    found = [
        f"{path.relative_to(root)}:{number}: {line.strip()}"
        for path in sorted(root.rglob("*.py"))
        if path.parent.name != "sip" and path.name != "flows.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if by_hand.search(line)
    ]
    assert found == []
