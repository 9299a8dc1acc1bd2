"""Requests from SIP scanners, recognised by the User-Agent they announce (``[sip]
drop_user_agents``), are dropped without an answer.

SIPVicious (svmap, svwar, svcrack) and its kin sweep the internet's SIP ports: an OPTIONS to find
devices, REGISTERs or INVITEs for each extension to find accounts, then REGISTERs with one
password after another. They send ``User-Agent: friendly-scanner`` and the like. Any answer, even
a 403, tells svmap a SIP server is there and makes it worth the next tool; no answer at all looks
like a closed port (RFC 3261 lets a server discard a request it will not serve: no transaction
is made, nothing is retransmitted). Digest authentication and the failure limit
(gateway/core/auth/failures.py) protect the accounts all the same when a scanner changes its
User-Agent; dropping spares the work and the log lines of answering it.

The check runs on every request, so it is one dictionary lookup for a User-Agent seen before:
phones send the same one again and again. The memo is bounded (a scanner sending a new
User-Agent each time only costs the substring scan).
"""

from __future__ import annotations

from collections.abc import Iterable

# User-Agent strings remembered with their verdict; cleared when full.
MEMO_SIZE = 1024


class UserAgentFilter:
    """Whether a User-Agent contains one of the configured fragments, case-insensitively."""

    def __init__(self, fragments: Iterable[str]) -> None:
        self.fragments = tuple(fragment.lower() for fragment in fragments)
        self._verdicts: dict[str, bool] = {}

    def matches(self, user_agent: str) -> bool:
        verdict = self._verdicts.get(user_agent)
        if verdict is None:
            lowered = user_agent.lower()
            verdict = False
            for fragment in self.fragments:
                if fragment in lowered:
                    verdict = True
                    break
            if len(self._verdicts) >= MEMO_SIZE:
                self._verdicts.clear()
            self._verdicts[user_agent] = verdict
        return verdict
