"""The example plugins (plugin_examples/voipgw-example-devices, voipgw-example-calls) installed
the way an operator installs a plugin, with pip, into a directory of its own rather than the test
environment: a gateway or CLI run with that directory on PYTHONPATH finds its entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "plugin_examples" / "voipgw-example-devices"
CALLS_EXAMPLE = EXAMPLE.parent / "voipgw-example-calls"


def install_example_plugin(target: Path, example: Path = EXAMPLE) -> None:
    """pip-install ``example`` (the device example by default) into ``target`` (no dependencies,
    no network: the build backend comes from the test environment). Raises AssertionError with
    pip's output when it fails."""
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
