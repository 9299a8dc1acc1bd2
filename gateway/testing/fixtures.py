"""pytest fixtures for voipgw's tests and for plugin authors' test suites.

Opt in from the root ``conftest.py`` of your test suite (this module is deliberately not a
``pytest11`` entry point, so installing voipgw changes no one else's pytest run)::

    pytest_plugins = ["gateway.testing.fixtures"]

The async fixtures need pytest-trio. Every seeded fixture uses one seed, ``--voipgw-seed=N`` or
:data:`DEFAULT_SEED`; a failing test that used it reports the seed and the option to rerun with.

Fixtures:

- ``voipgw_seed``: the seed, an int.
- ``memory_network``: a running, unimpaired :class:`~gateway.testing.network.MemoryNetwork`.
- ``lossy_network``: the same with :data:`LOSSY` impairments (loss, duplicates, reordering, jitter).
- ``free_udp_port`` / ``free_tcp_port``: a port on 127.0.0.1 that was free a moment ago, for
  integration tests with real sockets. Another process may take it before you bind it; prefer
  binding port 0 and reading the port back when the code under test allows it.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Generator

import attrs
import pytest

from gateway.testing.network import Impairment, MemoryNetwork

#: Seed used when ``--voipgw-seed`` is not given: fixed, so runs are reproducible by default.
DEFAULT_SEED = 5060
#: Impairments of ``lossy_network``: a bad but usable path (10% loss, 5% duplicates,
#: 10% reordered, 5-50 ms one-way delay).
LOSSY = Impairment(drop=0.1, duplicate=0.05, reorder=0.1, delay=(0.005, 0.05))
#: Integration tests bind the loopback address only, never a routable one.
LOOPBACK = "127.0.0.1"

_SEED_KEY = pytest.StashKey[int]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.getgroup("voipgw").addoption(
        "--voipgw-seed",
        type=int,
        default=None,
        metavar="N",
        help=f"seed for voipgw's in-memory network impairments (default {DEFAULT_SEED})",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"voipgw seed: {_configured_seed(config)}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    seed = item.stash.get(_SEED_KEY, None)
    if seed is not None and report.failed:
        report.sections.append(("voipgw", f"seed {seed}: rerun with --voipgw-seed={seed}"))
    return report


def _configured_seed(config: pytest.Config) -> int:
    seed = config.getoption("voipgw_seed", default=None)
    return DEFAULT_SEED if seed is None else int(seed)


@pytest.fixture
def voipgw_seed(request: pytest.FixtureRequest) -> int:
    """The seed for this test's random impairments: ``--voipgw-seed`` or DEFAULT_SEED."""
    seed = _configured_seed(request.config)
    request.node.stash[_SEED_KEY] = seed
    return seed


@pytest.fixture
async def memory_network(voipgw_seed: int) -> AsyncIterator[MemoryNetwork]:
    """A served MemoryNetwork without impairments, seeded with ``voipgw_seed``."""
    async with MemoryNetwork(voipgw_seed) as net:
        yield net


@pytest.fixture
async def lossy_network(voipgw_seed: int) -> AsyncIterator[MemoryNetwork]:
    """A served MemoryNetwork with the LOSSY impairments, seeded with ``voipgw_seed``."""
    async with MemoryNetwork(voipgw_seed, **attrs.asdict(LOSSY, recurse=False)) as net:
        yield net


def find_free_port(kind: socket.SocketKind) -> int:
    """A port on 127.0.0.1 that no socket of ``kind`` (SOCK_DGRAM, SOCK_STREAM) holds right now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that was free when the test started."""
    return find_free_port(socket.SOCK_DGRAM)


@pytest.fixture
def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that was free when the test started."""
    return find_free_port(socket.SOCK_STREAM)
