"""The example plugins' own tests run clean from the voipgw clone with pytest alone, as their
READMEs tell plugin authors to run them (`.venv/bin/pip install pytest`, then `.venv/bin/python
-m pytest plugin_examples/NAME/tests`): pytest took the clone's pyproject.toml, whose
``trio_mode`` belongs to pytest-trio, and printed "Unknown config option: trio_mode" where
pytest-trio is not installed (here: ``-p no:trio``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
EXAMPLES = sorted(path.name for path in (ROOT / "plugin_examples").iterdir() if path.is_dir())


@pytest.mark.parametrize("example", EXAMPLES)
def test_an_examples_tests_run_from_the_clone_with_pytest_alone(example: str) -> None:
    directory = ROOT / "plugin_examples" / example
    path = [str(ROOT), str(directory / "src"), os.environ.get("PYTHONPATH", "")]
    tests = str(directory.relative_to(ROOT) / "tests")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:trio", tests],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(path)},
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "Unknown config option" not in output, output
    assert "warning" not in output.splitlines()[-1], output
    # Its own settings, not the clone's (whose testpaths and trio_mode are voipgw's).
    assert f"rootdir: {directory}\n" in output, output
