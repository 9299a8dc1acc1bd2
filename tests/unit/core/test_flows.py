from __future__ import annotations

from gateway.core.transport.flows import Flow, FlowKey, FlowTable


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
