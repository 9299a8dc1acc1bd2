"""Suite-wide settings.

Interop tests drive real third-party peers (sipp, baresip, linphonec, tshark ...), and the
PostgreSQL store's tests a real PostgreSQL server. Locally a missing peer skips those tests with
the apt package to install; with VOIPGW_REQUIRE_PEERS=1 (set by .ci/run) a missing peer is a
failure, never a skip.

Property tests (Hypothesis) run derandomized: the examples follow from each test's source, so a
run is repeatable and a failure in CI is one a contributor gets again with the same command.
Timing health checks and deadlines are off because the suite shares its machine with real peers
(a loaded CI runner made them fail with nothing wrong). ``--hypothesis-profile=explore`` draws new
random examples for a campaign (docs/testing.md).
"""

from __future__ import annotations

import gc
import os
import shutil
import sys
from collections.abc import Iterator
from typing import NoReturn

import pgcluster
import pytest
from hypothesis import HealthCheck, settings

from tests import port_blocks
from tests.port_blocks import PortLease

settings.register_profile(
    "voipgw",
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", parent=settings.get_profile("voipgw"), derandomize=False)
settings.load_profile("voipgw")

# media_range_guard: no test's gateway binds the default [media] ports (its docstring).
pytest_plugins = ["gateway.testing.fixtures", "tests.media_range_guard"]

# Debian package that provides each peer binary (../shared/peers.md).
PEER_PACKAGES = {
    "sipp": "sip-tester",
    "baresip": "baresip",
    "linphonec": "linphone-nogtk",
    "tshark": "tshark",
    "text2pcap": "wireshark-common",
    "sox": "sox",
    "socat": "socat",
    "stunnel4": "stunnel4",
    "openssl": "openssl",
    "sngrep": "sngrep",
    "curl": "curl",
    "opusinfo": "opus-tools",
    "opusdec": "opus-tools",
    "chromium": "chromium",
    "svmap": "sipvicious",
    "svwar": "sipvicious",
    "svcrack": "sipvicious",
    # Not on PATH: /usr/lib/postgresql/VERSION/bin (tests/pgcluster.py).
    "initdb": "postgresql",
    # /usr/sbin: found there when PATH lacks it (require_peer).
    "dnsmasq": "dnsmasq-base",
    "kamailio": "kamailio",
    "kamcmd": "kamailio",
}


def require_peer(binary: str) -> str:
    """Path of ``binary``; skip (locally) or fail (CI) when it is not installed."""
    # Daemons such as dnsmasq live in /usr/sbin, which a non-root PATH may not list.
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin")
    if path is not None:
        return path
    package = PEER_PACKAGES.get(binary, binary)
    missing(f"peer {binary!r} is not installed (apt-get install {package})")


def missing(message: str) -> NoReturn:
    """Skip (locally) or fail (CI) for a peer that is not there."""
    if os.environ.get("VOIPGW_REQUIRE_PEERS") == "1":
        pytest.fail(message + "; VOIPGW_REQUIRE_PEERS=1 requires every peer")
    pytest.skip(message)


@pytest.fixture
def no_collector() -> Iterator[None]:
    """Only reference counting frees anything while the test runs."""
    # pytest keeps the last failure's traceback (sys.last_value, for post-mortem debugging)
    # until the next test runs: an earlier test's failure must not become this one's garbage.
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            delattr(sys, name)
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@pytest.fixture
def port_lease() -> Iterator[PortLease]:
    """Port blocks for this test alone (``port_lease.text(20)`` for a ``[media] ports``), given
    back at its teardown, after every fixture it uses (a gateway it started is stopped by then),
    for the next test of this process (tests/port_blocks.py: a long run claims no new units)."""
    lease = PortLease()
    yield lease
    lease.release()


@pytest.fixture(scope="module", autouse=True)
def _port_units_back() -> Iterator[None]:
    """Between two modules, the module's ``ModuleBlock``s are given back and every unit with no
    port handed out is unlocked for other test runs (tests/port_blocks.py); first set up of the
    module's fixtures, so last torn down: whatever ran on those ports has stopped by then."""
    port_blocks.start_module()
    yield
    port_blocks.end_module()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[pgcluster.Cluster]:
    """A PostgreSQL server of this test session, on 127.0.0.1 (a free port), deleted at the
    end. Needs Debian's ``postgresql`` and the ``postgresql`` extra (psycopg)."""
    bindir = pgcluster.postgres_bindir()
    if bindir is None:
        missing(f"peer 'initdb' is not installed (apt-get install {PEER_PACKAGES['initdb']})")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        missing("psycopg is not installed (pip install -e '.[test,postgresql]')")
    cluster = pgcluster.Cluster(bindir)
    try:
        cluster.initdb()
        cluster.start()
        cluster.create_role()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def postgres_database(postgres_cluster: pgcluster.Cluster) -> Iterator[str]:
    """A fresh, empty database (its name) owned by the role the store connects as."""
    name = postgres_cluster.create_database()
    yield name
    postgres_cluster.drop_database(name)
