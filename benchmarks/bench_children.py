"""The benchmarks' children die with the benchmark.

A benchmark starts gateways (``voipgw run``, sippy's b2bua; in a session of their own, so that
``stop()`` ends whatever a ``--gateway-prefix`` forked), sipp, stunnel and rtpengine. A
benchmark killed alone (SIGKILL, the OOM killer, a ``timeout -s KILL``) runs no ``finally``: a
child in a session of its own gets no group signal either, and every child ran on, holding its
ports and a core, after the figures were gone. Each gets a parent-death signal, as every child
the tests start in a session of its own (tests/test_child_sessions.py checks both). So do the
relay benchmarks' load generators and memory_per_call.py's voipgw, multiprocessing children
(spawn) that no ``preexec_fn`` reaches: their target is :func:`run_dying_with_parent`, which sets
the signal first thing in the child. A killed benchmark left them spinning on a core, sending
to a relay that was gone.

The tests' ``die_with_parent`` (tests/interop/harness/processes.py) is loaded from its file, as
bench_ports.py loads tests/port_blocks.py: the relay benchmarks do not put the repository root in
front of ``sys.path``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

PROCESSES = Path(__file__).resolve().parents[1] / "tests" / "interop" / "harness" / "processes.py"


@functools.cache
def _processes() -> ModuleType:
    loaded = sys.modules.get("tests.interop.harness.processes")
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location("voipgw_bench_processes", PROCESSES)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Loaded now, in the parent: the preexec_fn runs between fork and exec, where no import may be
# made (processes.py looks prctl up at import for the same reason).
_die_with_parent = _processes().die_with_parent


def die_with_parent() -> None:
    """A ``preexec_fn``: SIGKILL to the child when the benchmark's thread that started it dies
    (prctl PR_SET_PDEATHSIG, Linux). Start children from the main thread only."""
    _die_with_parent(signal.SIGKILL)


def run_dying_with_parent(parent: int, target: Callable[..., None], *args: Any) -> None:
    """A multiprocessing child's target (``Process(target=run_dying_with_parent, args=(
    os.getpid(), target, *args))``): SIGKILL to the child when the benchmark's thread that
    started it dies, as :func:`die_with_parent`, then ``target(*args)``. A benchmark already
    gone before the signal was set (the child is another's then) never sends it: exit at once.
    Start children from the main thread only."""
    _die_with_parent(signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    target(*args)
