"""Scraping a running gateway's metrics as Prometheus would: curl over 127.0.0.1, the answer
read by Prometheus' own Python parser (``prometheus_client``, a test dependency). Helpers only:
no test is collected from this module."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import require_peer


def parser() -> object:
    """``prometheus_client.parser``: skipped locally when missing, a failure in CI (.ci/run
    installs the test extra)."""
    try:
        from prometheus_client import parser as found
    except ImportError:
        message = "prometheus_client is not installed (pip install -e '.[test]')"
        if os.environ.get("VOIPGW_REQUIRE_PEERS") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_peer("curl"), "--silent", "--show-error", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )


def value(found: dict[str, object], family: str, sample: str, **labels: str) -> float:
    for s in found[family].samples:  # type: ignore[attr-defined]
        if s.name == sample and s.labels == labels:
            return float(s.value)
    raise AssertionError(f"no sample {sample}{labels} in {family}")
