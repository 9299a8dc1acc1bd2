"""benchmarks/recorder_decode.py runs and prints its figures (a benchmark that broke would only
be noticed when somebody needs its numbers). No figure is asserted: only that there is one."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from gateway.core.media import amr

ROOT = Path(__file__).parents[3]
SCRIPT = ROOT / "benchmarks" / "recorder_decode.py"


def test_it_prints_a_cost_per_packet_for_each_codec_beside_g711() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--packets", "20", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        # This tree's gateway, whatever the environment has installed.
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    rows = re.findall(
        r"^(G\.711.+?|G\.722.+?|AMR.+?|Opus.+?)\s+([\d.]+)\s+(\d+)$", result.stdout, re.M
    )
    labels = [label for label, _, _ in rows]
    assert labels[0] == "G.711 PCMU -> 8 kHz PCM"
    assert "G.722 -> 16 kHz PCM, random octets" in labels
    assert labels[-1] == "Opus -> Ogg pages (not decoded)"
    for codec in (amr.AMR, amr.AMR_WB):  # session 62
        installed = amr.load_encoder(codec) and amr.load_decoder(codec)
        assert (f"{codec.name} by opencore-amr, two tones" in labels) == bool(installed)
    assert all(float(micros) > 0 for _, micros, _ in rows)
    assert result.stdout.startswith("G.722 decoder: ")
