"""MemoryNetwork set-up without a clock: binding, ports, impairment validation, link overrides."""

from __future__ import annotations

import errno

import pytest

from gateway.testing.network import EPHEMERAL_PORTS, Impairment, MemoryNetwork


def test_binding_a_used_address_raises_eaddrinuse_like_a_socket() -> None:
    net = MemoryNetwork(seed=1)
    net.bind(("127.0.0.1", 5060))
    with pytest.raises(OSError) as excinfo:
        net.bind(("127.0.0.1", 5060))
    assert excinfo.value.errno == errno.EADDRINUSE


def test_the_same_port_on_another_host_is_a_different_address() -> None:
    net = MemoryNetwork(seed=1)
    a = net.bind(("127.0.0.1", 5060))
    b = net.bind(("127.0.0.2", 5060))
    assert a.getsockname() != b.getsockname()


def test_closing_frees_the_address() -> None:
    net = MemoryNetwork(seed=1)
    net.bind(("127.0.0.1", 5060)).close()
    assert net.bind(("127.0.0.1", 5060)).getsockname() == ("127.0.0.1", 5060)


def test_port_zero_picks_distinct_ephemeral_ports_and_skips_used_ones() -> None:
    net = MemoryNetwork(seed=1)
    net.bind(("127.0.0.1", EPHEMERAL_PORTS[0]))
    ports = [net.bind(("127.0.0.1", 0)).getsockname()[1] for _ in range(3)]
    assert ports == [EPHEMERAL_PORTS[1], EPHEMERAL_PORTS[2], EPHEMERAL_PORTS[3]]


def test_port_zero_does_not_hand_back_a_just_closed_port() -> None:
    net = MemoryNetwork(seed=1)
    sock = net.bind(("127.0.0.1", 0))
    first = sock.getsockname()
    sock.close()
    assert net.bind(("127.0.0.1", 0)).getsockname() != first


@pytest.mark.parametrize("address", [("0.0.0.0", 5060), ("::", 5060), ("", 5060)])
def test_wildcard_hosts_are_refused(address: tuple[str, int]) -> None:
    with pytest.raises(ValueError, match="wildcard"):
        MemoryNetwork(seed=1).bind(address)


@pytest.mark.parametrize("port", [-1, 65536])
def test_ports_out_of_range_are_refused(port: int) -> None:
    with pytest.raises(ValueError, match="port out of range"):
        MemoryNetwork(seed=1).bind(("127.0.0.1", port))


def test_receive_buffer_must_hold_a_datagram() -> None:
    with pytest.raises(ValueError, match="receive_buffer"):
        MemoryNetwork(seed=1).bind(("127.0.0.1", 0), receive_buffer=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"drop": -0.1},
        {"drop": 1.5},
        {"duplicate": 2.0},
        {"reorder": -1.0},
        {"delay": -0.01},
        {"delay": (0.2, 0.1)},
        {"reorder_window": -1.0},
    ],
)
def test_impossible_impairments_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Impairment(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        MemoryNetwork(1, **kwargs)  # type: ignore[arg-type]


def test_a_link_override_changes_one_direction_only() -> None:
    net = MemoryNetwork(seed=1, delay=0.01)
    a, b = ("127.0.0.1", 1000), ("127.0.0.1", 2000)
    net.set_link(a, b, drop=1.0)
    assert net.link_impairment(a, b) == Impairment(drop=1.0, delay=0.01)
    assert net.link_impairment(b, a) == Impairment(delay=0.01)


def test_a_link_override_follows_later_changes_of_the_default() -> None:
    net = MemoryNetwork(seed=1)
    a, b = ("127.0.0.1", 1000), ("127.0.0.1", 2000)
    net.set_link(a, b, drop=0.5)
    net.impairment = Impairment(delay=0.3)
    assert net.link_impairment(a, b) == Impairment(drop=0.5, delay=0.3)
    net.clear_link(a, b)
    assert net.link_impairment(a, b) == Impairment(delay=0.3)


def test_a_bad_link_override_is_refused_when_set() -> None:
    net = MemoryNetwork(seed=1)
    with pytest.raises(ValueError, match="drop"):
        net.set_link(("127.0.0.1", 1), ("127.0.0.1", 2), drop=3.0)
