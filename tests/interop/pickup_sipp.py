"""The pickup code and ringing wait of the sipp call pickup tests: moved here from
test_pickup_sipp.py so that no test module imports another."""

from __future__ import annotations

import time

from tests.interop.harness import SippUas

PICKUP = '[[dialog_watch_groups]]\nname = "office"\naccounts = ["alice", "bob"]\npickup = true\n'


def _until_ringing(alice: SippUas, timeout: float = 10.0) -> None:
    """Poll alice's phone's message trace until it has sent 180 Ringing."""
    deadline = time.monotonic() + timeout
    while not [m for m in alice.result().sent("SIP/2.0 180") if m]:
        if not alice.running() or time.monotonic() > deadline:
            raise AssertionError(f"alice's phone never rang:\n{alice.result().describe()}")
        time.sleep(0.05)
