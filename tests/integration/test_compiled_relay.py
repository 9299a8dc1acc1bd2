"""The relay compiled by mypyc passes the same tests as its pure-Python source.

An install with ``VOIPGW_USE_MYPYC=1`` compiles setup.py's ``COMPILED_MODULES`` (the relay's
per-packet loop and the SRTP steps) into C extension modules (docs/benchmarks.md, "The compiled
relay"). Compiled code checks annotations at run time and refuses what a plain module allows
(patching a class from outside, an attribute not declared in ``__init__``), so a change can pass
every other test and still break the compiled build. This test builds a copy of the repository in
place exactly as setup.py does and runs the unit, component and integration tests that reach it
against it in a subprocess. It needs a C compiler and Python's headers: missing, it skips, and
fails in CI (``VOIPGW_REQUIRE_PEERS=1``, as for the interop peers).

Only the tests that run code of the compiled modules are run again (``COMPILED_RUN``): a test
that never calls into relay.py or srtp.py cannot behave differently when they are compiled, and
their module-level code runs at import, in every selected test. Which tests those are was
measured, not guessed: a trace of every Python call (``sys.settrace``, in the pytest process and
in every ``voipgw run`` it starts) over tests/unit, tests/component and tests/integration,
recording the tests during which a function of either module ran. It found

- tests/unit: the media and keyexchange packages (SRTP contexts, media sessions, the key
  negotiations that build ``SrtpKeys`` and check suites) and four modules elsewhere that call
  SRTP code (metrics status, the SIPREC SRTP tap, the X3 benchmark's sessions, the SDP fuzzer's
  key lengths); the rest of tests/unit (SIP, SDP, store, TLS, auth ...) never calls into them;
- tests/component: every call through the in-memory B2BUA (tests/component/calls: each opens
  relay streams, most forward media) and the DTLS handshakes (tests/component/keyexchange);
- tests/integration: the relay on real sockets (tests/integration/media) and the modules whose
  ``voipgw run`` carries calls (media workers, nodes, WebSocket calls). The other integration
  modules start and stop a gateway without a call: they run only ``MediaRelay.__init__``,
  ``serve`` and ``close``, which every selected gateway test runs too, or nothing at all (the
  CLI, the PostgreSQL store).

That is about 60 % of the unit and component time and half the integration time of the full
run; with the build, the test took 125 s instead of 263 s when this was measured (2026-11, two
shared cores). The selection runs in two pytest processes at once, one half on each core
(``COMPILED_RUN_HALVES``): the unit and component tests, which keep their own process busy (the
in-memory network, sans-IO engines), and the integration tests, which mostly wait for the
``voipgw run`` processes they start. Two test processes cannot collide: each takes its real
ports from blocks it holds a lock on (tests/port_blocks.py) or from port 0, and pytest gives
each its own numbered temporary directory.
``test_every_test_module_importing_the_compiled_modules_is_in_the_compiled_run``
keeps the list honest for new test modules that import relay or srtp; a new module that reaches
them only through a gateway's calls belongs in the list too. To measure again: a
``sitecustomize`` on ``PYTHONPATH`` whose ``sys.settrace`` function notes the current test (an
environment variable a small plugin sets per test) whenever a code object of relay.py or
srtp.py, or an attrs method generated for one of their classes, is called.
"""

from __future__ import annotations

import ast
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from functools import partial
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.interop.harness.processes import die_with_parent

ROOT = Path(__file__).resolve().parents[2]

#: What the compiled copy runs: the test packages and modules that call into setup.py's
#: COMPILED_MODULES (see the module docstring for how they were found), in two halves run at
#: once, each by its own pytest process. Their times were alike when measured (2026-11-30, two
#: cores, otherwise idle): the unit and component half 75 s, the integration half 76 s; the
#: test took 106 s with the build instead of 157 s with one process.
COMPILED_RUN_HALVES = (
    (
        "tests/unit/media",
        "tests/unit/keyexchange",
        "tests/unit/taps/test_siprec_srtp.py",
        "tests/unit/metrics/test_metrics_status.py",
        "tests/unit/benchmarks/test_intercept_x3_runs.py",
        "tests/unit/fuzz/test_fuzz_sdp.py",
        "tests/component/calls",
        "tests/component/keyexchange",
    ),
    (
        "tests/integration/media",
        "tests/integration/test_gateway_workers.py",
        "tests/integration/test_gateway_workers_t38.py",
        "tests/integration/test_call_limits_nodes.py",
        "tests/integration/test_postgresql_nodes.py",
        "tests/integration/test_websocket_sockets.py",
        "tests/integration/tls/test_tls_call_protection.py",
    ),
)
COMPILED_RUN = tuple(entry for half in COMPILED_RUN_HALVES for entry in half)
COMPILED_MODULE_NAMES = frozenset({"gateway.core.media.relay", "gateway.core.media.srtp"})
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.so",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    "voipgw-state",
)


def _missing_toolchain() -> str | None:
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return "no C compiler (Debian: apt-get install gcc)"
    if not (Path(sysconfig.get_paths()["include"]) / "Python.h").exists():
        return "no Python headers (Debian: apt-get install python3-dev)"
    return None


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VOIPGW_USE_MYPYC": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _start(command: list[str], cwd: Path, output: BinaryIO) -> subprocess.Popen[bytes]:
    env = {**os.environ, "VOIPGW_USE_MYPYC": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # killed with what it started, if it must be
        # Out of reach of a signal to this run's group: a SIGINT if this process dies first,
        # on which its pytest tears its fixtures down (as _stop's).
        preexec_fn=partial(die_with_parent, signal.SIGINT),
    )


def _stop(run: subprocess.Popen[bytes]) -> bool:
    """A half still running (the other failed): SIGINT to its pytest first, which tears its
    fixtures down as after Ctrl-C (the PostgreSQL cluster of tests/pgcluster.py, whose server
    runs in a session of its own and outlived a SIGKILL of the half's session: session 29 found
    two left running), then SIGKILL to its session, pytest and what it started, after 60 s.
    Whether it had to be stopped."""
    if run.poll() is not None:
        return False
    run.send_signal(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        run.wait(60)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.pid, signal.SIGKILL)  # what it started and left behind, if anything
    run.wait()
    return True


def _imports_a_compiled_module(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        else:
            continue
        if names & COMPILED_MODULE_NAMES:
            return True
    return False


def test_every_test_module_importing_the_compiled_modules_is_in_the_compiled_run() -> None:
    """A test module that imports relay or srtp tests them: it must run compiled too."""
    selected = [ROOT / entry for entry in COMPILED_RUN]
    assert all(path.exists() for path in selected), [p for p in selected if not p.exists()]
    importing = [
        path
        for depth in ("unit", "component", "integration")
        for path in sorted((ROOT / "tests" / depth).rglob("*.py"))
        if _imports_a_compiled_module(path)
    ]
    assert len(importing) > 10, importing  # the walk finds the relay's own tests
    left_out = [
        str(path.relative_to(ROOT))
        for path in importing
        if not any(path == entry or entry in path.parents for entry in selected)
    ]
    assert left_out == [], f"add to a half of COMPILED_RUN_HALVES: {left_out}"
    # Nothing is run twice: no entry is listed twice, in one half or both, or inside another.
    nested = [
        (inner, outer)
        for inner in COMPILED_RUN
        for outer in COMPILED_RUN
        if inner != outer and (ROOT / outer) in (ROOT / inner).parents
    ]
    assert len(set(COMPILED_RUN)) == len(COMPILED_RUN) and nested == [], (COMPILED_RUN, nested)


def test_the_compiled_relay_passes_the_tests_that_reach_it(
    tmp_path: Path,
) -> None:
    missing = _missing_toolchain()
    if missing is not None:
        if os.environ.get("VOIPGW_REQUIRE_PEERS") == "1":
            pytest.fail(f"cannot compile the relay: {missing}")
        pytest.skip(f"cannot compile the relay: {missing}")
    copy = tmp_path / "voipgw"
    shutil.copytree(ROOT, copy, ignore=NOT_COPIED)

    built = _run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], copy, 900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]

    # The copy's modules are the extension modules, not the .py files beside them.
    which = _run(
        [
            sys.executable,
            "-c",
            "import gateway.core.media.relay as r, gateway.core.media.srtp as s\n"
            "from gateway.core.gateway import relay_build\n"
            "print(r.__file__, s.__file__, relay_build(), sep='|')",
        ],
        copy,
        60,
    )
    assert which.returncode == 0, which.stderr[-3000:]
    relay_file, srtp_file, build = which.stdout.strip().split("|")
    assert Path(relay_file).parent == copy / "gateway" / "core" / "media"
    assert not relay_file.endswith(".py") and not srtp_file.endswith(".py")
    assert build == "compiled with mypyc"

    # Both halves at once, one pytest process each: the second core is idle otherwise, while
    # this process waits. Their output goes to files, read once both have ended; a half that
    # fails stops the other (as -x stops a half at its first failure).
    outputs = [tmp_path / f"half-{number}.txt" for number in range(len(COMPILED_RUN_HALVES))]
    pytest_command = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider"]
    runs: list[subprocess.Popen[bytes]] = []
    stopped: list[bool] = []
    try:
        for half, output in zip(COMPILED_RUN_HALVES, outputs, strict=True):
            with output.open("wb") as sink:
                runs.append(_start([*pytest_command, *half], copy, sink))
        deadline = time.monotonic() + 1200
        while True:
            # Every half polled each time round (any() over poll() stopped at the first half
            # still running, so the second half's failure went unseen until the first ended).
            codes = [run.poll() for run in runs]
            if None not in codes or any(code not in (None, 0) for code in codes):
                break
            assert time.monotonic() < deadline, "the compiled copy's tests did not end in 1200 s"
            time.sleep(0.2)
    finally:
        stopped = [_stop(run) for run in runs]
    # The half that failed by itself first: a half stopped because of it shows only the
    # interruption.
    for number in sorted(range(len(runs)), key=lambda number: stopped[number]):
        half, run = " ".join(COMPILED_RUN_HALVES[number]), runs[number]
        text = outputs[number].read_text(errors="replace")
        if stopped[number]:
            half += " (stopped: the other half failed)"
        assert run.returncode == 0, f"{half}:\n{text[-9000:]}"
        assert " passed" in text.splitlines()[-1], f"{half}:\n{text[-3000:]}"
