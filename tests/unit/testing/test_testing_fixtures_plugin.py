"""gateway.testing.fixtures as a third party uses it: opted in by pytest_plugins, in its own run."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

CONFTEST = 'pytest_plugins = ["gateway.testing.fixtures"]\n'
INI = "[pytest]\ntrio_mode = true\n"

PLUGIN_TESTS = """
import socket

import trio

from gateway.testing import MemoryNetwork


async def test_memory_network_is_served_and_seeded(memory_network, voipgw_seed):
    assert isinstance(memory_network, MemoryNetwork)
    assert memory_network.seed == voipgw_seed
    a = memory_network.bind(("127.0.0.1", 0))
    b = memory_network.bind(("127.0.0.1", 5060))
    await a.sendto(b"OPTIONS", ("127.0.0.1", 5060))
    assert await b.recvfrom() == (b"OPTIONS", a.getsockname())


async def test_lossy_network_is_impaired(lossy_network, autojump_clock):
    assert lossy_network.impairment.drop > 0
    a = lossy_network.bind(("127.0.0.1", 0))
    b = lossy_network.bind(("127.0.0.1", 5060), receive_buffer=1000)
    for _ in range(500):
        await a.sendto(b"RTP", ("127.0.0.1", 5060))
    await trio.sleep(1)
    stats = lossy_network.statistics()
    assert stats.dropped > 0 and stats.duplicated > 0 and stats.reordered > 0


def test_free_ports_can_be_bound_on_loopback(free_udp_port, free_tcp_port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", free_udp_port))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", free_tcp_port))


def test_failing_with_a_seed(voipgw_seed):
    assert voipgw_seed < 0


def test_failing_without_a_seed():
    assert False
"""


@pytest.fixture
def plugin_suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makeini(INI)
    pytester.makepyfile(test_plugin=PLUGIN_TESTS)
    return pytester


def test_the_fixtures_work_in_a_suite_that_opts_in(plugin_suite: pytest.Pytester) -> None:
    result = plugin_suite.runpytest()
    result.assert_outcomes(passed=3, failed=2)


def test_a_failure_names_the_default_seed_and_how_to_rerun(plugin_suite: pytest.Pytester) -> None:
    result = plugin_suite.runpytest("-k", "failing")
    result.stdout.fnmatch_lines(["voipgw seed: 5060", "*seed 5060: rerun with --voipgw-seed=5060*"])
    # Only the test that used the seed reports it.
    assert result.stdout.str().count("rerun with --voipgw-seed") == 1


def test_the_seed_option_reaches_the_fixtures(plugin_suite: pytest.Pytester) -> None:
    result = plugin_suite.runpytest("--voipgw-seed=42", "-k", "memory_network or with_a_seed")
    result.stdout.fnmatch_lines(["voipgw seed: 42", "*seed 42: rerun with --voipgw-seed=42*"])
    result.assert_outcomes(passed=1, failed=1)  # the seed reaches the network too


def test_a_suite_that_does_not_opt_in_gets_no_fixtures(pytester: pytest.Pytester) -> None:
    pytester.makeini(INI)
    pytester.makepyfile("def test_uses_it(memory_network):\n    pass\n")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*fixture 'memory_network' not found*"])
    assert "voipgw seed" not in result.stdout.str()
