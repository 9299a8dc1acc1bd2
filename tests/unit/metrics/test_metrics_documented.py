"""Every metric family the exporter writes is documented in docs/metrics.md: operators build
dashboards and alerts from that page, and a family missing from it is one they never learn of."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[3]


def _families_written() -> set[str]:
    """The names passed to ``Exposition.family`` anywhere in the gateway's code."""
    names: set[str] = set()
    calls = 0
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        text = path.read_text("utf-8")
        calls += len(re.findall(r"\bout\.family\(", text))
        names.update(re.findall(r"\bout\.family\(\s*\"(voipgw_[a-z0-9_]+)\"", text))
    # Each call names its family as a literal: one that does not is not checked here.
    assert calls == len(names), (calls, len(names))
    return names


def test_every_metric_family_written_is_in_docs_metrics_md() -> None:
    documented = set(
        re.findall(
            r"^\| `(voipgw_[a-z0-9_]+)`",
            (ROOT / "docs" / "metrics.md").read_text("utf-8"),
            re.MULTILINE,
        )
    )
    written = _families_written()
    assert "voipgw_sip_auth_banned_sources" in written
    assert sorted(written - documented) == []
