"""The example plugins (plugin_examples/voipgw-example-devices, voipgw-example-calls) installed
the way an operator installs a plugin, with pip, into a directory of its own rather than the test
environment: a gateway or CLI run with that directory on PYTHONPATH finds its entry point."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "plugin_examples" / "voipgw-example-devices"
CALLS_EXAMPLE = EXAMPLE.parent / "voipgw-example-calls"


def install_example_plugin(target: Path, example: Path = EXAMPLE) -> None:
    """pip-install ``example`` (the device example by default) into ``target`` (no dependencies,
    no network: the build backend comes from the test environment). Raises AssertionError with
    pip's output when it fails.

    pip builds a local directory in place (setuptools writes build/ and src/*.egg-info beside
    the sources), so it builds a copy: the checkout stays as it is, a file since removed from
    the example is not installed from an old build/lib, and two runs do not share a build."""
    with tempfile.TemporaryDirectory(prefix="voipgw-example-") as copy:
        source = Path(copy) / example.name
        shutil.copytree(
            example, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
        )
        _pip_install(target, source)


def _pip_install(target: Path, example: Path) -> None:
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(example),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stdout + install.stderr
