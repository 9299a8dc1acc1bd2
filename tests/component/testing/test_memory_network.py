"""MemoryNetwork delivery on trio's virtual clock: delay, loss, duplication, reordering, queues."""

from __future__ import annotations

import errno
import math

import pytest
import trio
import trio.testing

from gateway.testing.network import (
    CapturedDatagram,
    MemoryDatagramSocket,
    MemoryNetwork,
    NetworkStatistics,
    SocketStatistics,
)

A = ("127.0.0.1", 40000)
B = ("127.0.0.1", 5060)


async def _send_numbered(sock: MemoryDatagramSocket, count: int, dst: tuple[str, int]) -> None:
    for i in range(count):
        await sock.sendto(i.to_bytes(4, "big"), dst)


def _numbers(deliveries: list[CapturedDatagram]) -> list[int]:
    return [int.from_bytes(d.data, "big") for d in deliveries]


async def test_a_datagram_arrives_exactly_after_the_delay(autojump_clock: trio.abc.Clock) -> None:
    async with MemoryNetwork(seed=1, delay=0.25) as net:
        a, b = net.bind(A), net.bind(B)
        sent_at = trio.current_time()
        await a.sendto(b"INVITE", B)
        assert await b.recvfrom() == (b"INVITE", A)
        assert trio.current_time() == pytest.approx(sent_at + 0.25, abs=1e-9)
        assert net.capture == [CapturedDatagram(sent_at, A, B, b"INVITE")]
        assert [d.time for d in net.deliveries] == [trio.current_time()]


async def test_without_delay_a_datagram_arrives_without_the_clock_moving(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with MemoryNetwork(seed=1) as net:
        a, b = net.bind(A), net.bind(B)
        before = trio.current_time()
        await a.sendto(b"x", B)
        await b.recvfrom()
        assert trio.current_time() == before


async def test_a_delay_range_spreads_arrivals_within_it(autojump_clock: trio.abc.Clock) -> None:
    async with MemoryNetwork(seed=3, delay=(0.01, 0.05)) as net:
        a, b = net.bind(A), net.bind(B)
        start = trio.current_time()
        await _send_numbered(a, 200, B)
        await trio.sleep(1)
        offsets = [d.time - start for d in net.deliveries]
        assert len(offsets) == 200
        assert all(0.01 - 1e-9 <= offset <= 0.05 + 1e-9 for offset in offsets)
        assert max(offsets) - min(offsets) > 0.03  # spread, not one fixed delay
        assert _numbers(net.deliveries) != list(range(200))  # jitter reorders
        assert b.statistics().queued == 200


def _lossy_run(seed: int) -> tuple[list[CapturedDatagram], NetworkStatistics]:
    """Two peers exchanging through a bad network, in a fresh trio run with a fresh clock."""

    async def scenario() -> tuple[list[CapturedDatagram], NetworkStatistics]:
        async with MemoryNetwork(
            seed, drop=0.2, duplicate=0.1, reorder=0.2, delay=(0.001, 0.03)
        ) as net:
            a, b = net.bind(A), net.bind(B)
            for i in range(100):
                await a.sendto(b"a%d" % i, B)
                await b.sendto(b"b%d" % i, A)
                await trio.sleep(0.02)
            await trio.sleep(1)
            return net.deliveries, net.statistics()

    return trio.run(scenario, clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_same_seed_gives_the_same_deliveries() -> None:
    first, first_stats = _lossy_run(seed=42)
    again, again_stats = _lossy_run(seed=42)
    assert first == again
    assert first_stats == again_stats
    assert first_stats.dropped > 0 and first_stats.duplicated > 0  # the impairments did act


def test_another_seed_gives_other_deliveries() -> None:
    assert _lossy_run(seed=42)[0] != _lossy_run(seed=43)[0]


async def test_the_drop_rate_is_close_to_the_configured_probability(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with MemoryNetwork(seed=7, drop=0.2) as net:
        a, b = net.bind(A), net.bind(B, receive_buffer=5000)
        await _send_numbered(a, 4000, B)
        await trio.testing.wait_all_tasks_blocked()
        stats = net.statistics()
        # Binomial(4000, 0.2): mean 800, standard deviation about 25; allow 5 deviations.
        assert abs(stats.dropped - 800) < 5 * math.sqrt(4000 * 0.2 * 0.8)
        assert stats.sent == 4000
        assert stats.delivered == 4000 - stats.dropped == b.statistics().queued
        assert len(net.capture) == 4000  # the capture shows dropped datagrams too


async def test_duplicates_arrive_twice(autojump_clock: trio.abc.Clock) -> None:
    async with MemoryNetwork(seed=7, duplicate=1.0) as net:
        a, b = net.bind(A), net.bind(B)
        await _send_numbered(a, 3, B)
        await trio.testing.wait_all_tasks_blocked()
        assert _numbers(net.deliveries) == [0, 0, 1, 1, 2, 2]
        assert net.statistics().duplicated == 3
        assert [await b.recvfrom() for _ in range(2)] == [(bytes(4), A), (bytes(4), A)]


async def test_the_duplication_rate_is_close_to_the_configured_probability(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with MemoryNetwork(seed=8, duplicate=0.1) as net:
        a, _ = net.bind(A), net.bind(B, receive_buffer=5000)
        await _send_numbered(a, 2000, B)
        await trio.testing.wait_all_tasks_blocked()
        stats = net.statistics()
        assert abs(stats.duplicated - 200) < 5 * math.sqrt(2000 * 0.1 * 0.9)
        assert stats.delivered == 2000 + stats.duplicated


async def test_reordered_datagrams_are_overtaken_but_all_arrive(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with MemoryNetwork(seed=5, reorder=0.3, delay=0.01) as net:
        a, b = net.bind(A), net.bind(B)
        start = trio.current_time()
        for i in range(100):
            await a.sendto(i.to_bytes(4, "big"), B)
            await trio.sleep(0.005)
        await trio.sleep(1)
        received = _numbers(net.deliveries)
        assert received != list(range(100))
        assert sorted(received) == list(range(100))
        assert 10 < net.statistics().reordered < 50
        # Held back by at most the reorder window on top of the delay.
        latest_send = start + 99 * 0.005
        assert max(d.time for d in net.deliveries) <= latest_send + 0.01 + 0.02 + 1e-9
        assert b.statistics().queued == 100


async def test_without_impairments_order_is_kept(autojump_clock: trio.abc.Clock) -> None:
    async with MemoryNetwork(seed=5, delay=0.01) as net:
        a, b = net.bind(A), net.bind(B)
        await _send_numbered(a, 50, B)
        received = [int.from_bytes((await b.recvfrom())[0], "big") for _ in range(50)]
        assert received == list(range(50))


async def test_a_full_receive_queue_drops_and_counts(autojump_clock: trio.abc.Clock) -> None:
    async with MemoryNetwork(seed=1) as net:
        a, b = net.bind(A), net.bind(B, receive_buffer=4)
        await _send_numbered(a, 10, B)
        await trio.testing.wait_all_tasks_blocked()
        assert b.statistics() == SocketStatistics(queued=4, receive_buffer=4, overflowed=6)
        stats = net.statistics()
        assert (stats.delivered, stats.overflowed) == (4, 6)
        assert [int.from_bytes((await b.recvfrom())[0], "big") for _ in range(4)] == [0, 1, 2, 3]


async def test_a_datagram_to_an_unbound_address_is_counted_unreachable(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with MemoryNetwork(seed=1, delay=0.1) as net:
        a, b = net.bind(A), net.bind(B)
        await a.sendto(b"nobody", ("127.0.0.1", 9))
        await a.sendto(b"closed before arrival", B)
        b.close()
        await trio.sleep(1)
        assert net.statistics().unreachable == 2
        assert net.deliveries == []


async def test_a_link_override_drops_one_direction_only(autojump_clock: trio.abc.Clock) -> None:
    async with MemoryNetwork(seed=1) as net:
        a, b = net.bind(A), net.bind(B)
        net.set_link(A, B, drop=1.0)
        await a.sendto(b"lost", B)
        await b.sendto(b"kept", A)
        assert await a.recvfrom() == (b"kept", B)
        assert b.statistics().queued == 0
        assert net.statistics().dropped == 1


async def test_a_link_override_delays_one_direction_only(autojump_clock: trio.abc.Clock) -> None:
    async with MemoryNetwork(seed=1, delay=0.01) as net:
        a, b = net.bind(A), net.bind(B)
        net.set_link(B, A, delay=0.5)
        start = trio.current_time()
        await a.sendto(b"fast", B)
        await b.recvfrom()
        assert trio.current_time() == pytest.approx(start + 0.01, abs=1e-9)
        await b.sendto(b"slow", A)
        await a.recvfrom()
        assert trio.current_time() == pytest.approx(start + 0.51, abs=1e-9)


async def test_close_wakes_a_blocked_receiver_and_stops_sends(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with MemoryNetwork(seed=1) as net:
        b = net.bind(B)

        async def receive() -> None:
            with pytest.raises(trio.ClosedResourceError):
                await b.recvfrom()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            b.close()
        with pytest.raises(trio.ClosedResourceError):
            await b.sendto(b"x", A)
        b.close()  # twice is harmless


async def test_recvfrom_truncates_to_bufsize_and_sendto_refuses_oversize(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with MemoryNetwork(seed=1) as net:
        a, b = net.bind(A), net.bind(B)
        assert await a.sendto(b"0123456789", B) == 10
        assert await b.recvfrom(4) == (b"0123", A)
        with pytest.raises(OSError) as excinfo:
            await a.sendto(bytes(65508), B)
        assert excinfo.value.errno == errno.EMSGSIZE


async def test_serve_can_run_in_the_callers_nursery(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork(seed=1, delay=0.1)
    a, b = net.bind(A), net.bind(B)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.serve)
        with pytest.raises(RuntimeError, match="already being served"):
            await nursery.start(net.serve)
        await a.sendto(b"x", B)
        assert await b.recvfrom() == (b"x", A)
        nursery.cancel_scope.cancel()


async def test_sending_on_a_network_nobody_serves_fails_loudly() -> None:
    net = MemoryNetwork(seed=1)
    a = net.bind(A)
    with pytest.raises(RuntimeError, match="not running"):
        await a.sendto(b"x", B)


async def test_an_error_in_the_body_propagates_unwrapped() -> None:
    with pytest.raises(KeyError):
        async with MemoryNetwork(seed=1):
            raise KeyError("from the test body")
