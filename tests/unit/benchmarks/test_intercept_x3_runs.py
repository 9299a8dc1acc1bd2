"""benchmarks/intercept_x3.py runs and prints its figures (a benchmark that broke would only be
noticed when somebody needs its numbers)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).parents[3] / "benchmarks" / "intercept_x3.py"


def test_it_prints_a_cost_per_packet_for_each_case_beside_srtp_protect() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--packets", "200", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pattern = r"^(SRTP protect \(\S+\)|X3: [^\d]+?)\s+([\d.]+)\s+([\d.]+)$"
    rows = re.findall(pattern, result.stdout, re.M)
    assert [label for label, _, _ in rows] == [
        "SRTP protect (AES_CM_128_HMAC_SHA1_80)",
        "X3: one task, one destination",
        "X3: one task, two destinations",
        "X3: two tasks (caller and callee), one each",
    ]
    assert all(float(us) > 0 for _, us, _ in rows)
    assert float(rows[0][2]) == 1.0  # the yardstick against itself
    assert "PDU octets per packet and destination: 260 (172 of them the packet)" in result.stdout
