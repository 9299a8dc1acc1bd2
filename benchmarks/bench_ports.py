"""The benchmarks' media port ranges: blocks claimed with the lock the tests use.

A relay binds its media ports call by call, long after the benchmark started. A fixed range
between 10000 and the kernel's ephemeral ports (Linux: 32768) lies in the region from which
tests/port_blocks.py hands every test process its blocks, so a test run beside the benchmark
could claim a unit the relay had not bound yet (its probe binds fine) and then one of the two
failed to bind (session 29: sip_calls.py's 14000-17999 and a test's block 15900-15999). So
each benchmark takes its ranges as port blocks from tests/port_blocks.py: units locked (flock)
for the benchmark's process until it exits, which every test process and every other benchmark
steps over. Fixed port defaults stay only above the ephemeral range (sip_calls.py's SIP ports),
where neither the tests nor outgoing sockets go; tests/test_benchmark_ports.py fails on a fixed
port default in the tests' region or the ephemeral range.

tests/port_blocks.py is loaded from its file, not imported as ``tests.port_blocks``: the relay
benchmarks must import ``gateway`` from where it is installed (a build compiled with mypyc), so
the repository root is not put in front of ``sys.path`` for them; and in the benchmark
virtualenv ``tests`` is sippy's own top-level package, which shadows this repository's.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PORT_BLOCKS = Path(__file__).resolve().parents[1] / "tests" / "port_blocks.py"


@functools.cache
def _port_blocks() -> ModuleType:
    loaded = sys.modules.get("tests.port_blocks")
    if loaded is not None:  # a script imported it: one module, one set of held units
        return loaded
    spec = importlib.util.spec_from_file_location("voipgw_bench_port_blocks", PORT_BLOCKS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def port_block(count: int) -> range:
    """``count`` consecutive ports (the first even) locked for this process until it exits."""
    block: range = _port_blocks().port_block(count)
    return block


def media_ports(count: int) -> range:
    """:func:`port_block`, for a relay's media ports."""
    return port_block(count)


def media_ports_text(count: int) -> str:
    """:func:`media_ports` as a ``[media] ports`` value, "LOW-HIGH"."""
    block = media_ports(count)
    return f"{block.start}-{block.stop - 1}"
