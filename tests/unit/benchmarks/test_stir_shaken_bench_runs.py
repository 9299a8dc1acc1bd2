"""benchmarks/stir_shaken.py runs and prints its figures. No figure is asserted: only that each
is there."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[3]
SCRIPT = ROOT / "benchmarks" / "stir_shaken.py"


def test_it_prints_a_cost_for_signing_and_verifying() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    rows = re.findall(r"^\s+(\S.*?)\s+([\d.]+)$", result.stdout, re.M)
    labels = [label for label, _ in rows]
    assert labels[0] == "sign (one ES256 signature and the header)"
    assert "verify, signer cached (parse, claims, signature)" in labels
    assert "CRL look-up, cached: an intermediate's CRL" in labels
    assert all(float(micros) > 0 for _, micros in rows)
