"""The emergency trunk of the sipp location tests: moved here from test_location_sipp.py so that no
test module imports another."""

from __future__ import annotations

from tests.interop.harness import SippUas


def emergency_trunk(trunk: SippUas) -> str:
    """The trunk the gateway sends emergency calls to (``location`` left at its default)."""
    return (
        "[[trunks]]\n"
        'name = "emergency"\n'
        f'address = "{trunk.config_address}"\n'
        'prefixes = ["112"]\n'
        "allowed_sources = []\n"
    )
