"""The relay compiled by mypyc passes the same tests as its pure-Python source.

An install with ``VOIPGW_USE_MYPYC=1`` compiles setup.py's ``COMPILED_MODULES`` (the relay's
per-packet loop and the SRTP steps) into C extension modules (docs/benchmarks.md, "The compiled
relay"). Compiled code checks annotations at run time and refuses what a plain module allows
(patching a class from outside, an attribute not declared in ``__init__``), so a change can pass
every other test and still break the compiled build. This test builds a copy of the repository in
place exactly as setup.py does and runs the unit, component and integration tests against it in a
subprocess. It needs a C compiler and Python's headers: missing, it skips, and fails in CI
(``VOIPGW_REQUIRE_PEERS=1``, as for the interop peers).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
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


def test_the_compiled_relay_passes_the_unit_component_and_integration_tests(
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

    tests = _run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-x",
            "-p",
            "no:cacheprovider",
            "tests/unit",
            "tests/component",
            "tests/integration",
            "--deselect",
            "tests/integration/test_compiled_relay.py",
        ],
        copy,
        1200,
    )
    assert tests.returncode == 0, tests.stdout[-6000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout.splitlines()[-1]
