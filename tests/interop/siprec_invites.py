"""The SRS INVITE count of the SIPREC retry tests: moved here from test_siprec_retry.py so that no
test module imports another."""

from __future__ import annotations

import re
from datetime import datetime

from tests.interop.harness import SippResult

# sipp's -trace_msg: each message after a line of dashes and its time, then a line saying
# whether it was sent or received, a blank line, and the message.
TRACE_BLOCK = re.compile(r"^-{20,} (\S+ \S+)\n([^\n]*)\n\n", re.M)


def invites_received(srs: SippResult) -> list[tuple[datetime, str]]:
    """The INVITEs the SRS received, each with when it came (sipp's trace timestamps)."""
    trace = srs.messages().replace("\r\n", "\n")
    heads = list(TRACE_BLOCK.finditer(trace))
    found = []
    for head, following in zip(heads, [*heads[1:], None], strict=True):
        message = trace[head.end() : following.start() if following else len(trace)]
        if "received" in head[2] and message.startswith("INVITE "):
            found.append((datetime.fromisoformat(head[1]), message))
    return found
