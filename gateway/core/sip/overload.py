"""Overload control: new work that waited too long to be looked at is refused.

A gateway past its call rate that keeps accepting every INVITE collapses rather than slows
down: the backlog grows, UDP receive buffers overflow, UACs retransmit what was not answered
within T1 (RFC 3261 §17.1.1.2), the retransmissions are more work, and soon almost no call gets
through (RFC 6357 §3 describes the cascade). The way out is to refuse new work early and
cheaply, with a stateless 503, and go on serving the calls already accepted.

What is refused is decided by how long each request waited between arriving (the kernel's
stamp on a UDP datagram, else when the transport handed it over) and the endpoint taking it. A
new INVITE or REGISTER that waited longer than the limit is refused; everything else is served.
Under a steady overload the backlog grows until requests start to exceed the limit, and from
then on just enough of them are refused to hold the wait there: the refusals follow the excess
load without a figure of capacity being configured. A burst or a pause shorter than the limit
refuses nothing. The limit stays below T1 so that the 503 reaches the UAC before it retransmits.

A request that carries credentials (Authorization, Proxy-Authorization) is the second half of a
challenged set-up whose first half (INVITE, 407, ACK) was already served: refusing it would throw
that work away, so it gets until ``credentials_limit`` (T1) and the refusals fall on the first
halves, which cost only the 503.

Sans-IO: the caller passes each request's wait.
"""

from __future__ import annotations


class QueueDelayLimit:
    """Which new requests to refuse: those that waited longer than ``limit`` seconds, or than
    ``credentials_limit`` when they carry credentials (``limit`` 0: none).

    Also keeps the longest wait it was asked about, refused or not.
    """

    def __init__(self, limit: float, credentials_limit: float) -> None:
        if limit < 0 or credentials_limit < limit:
            raise ValueError("expected 0 <= limit <= credentials_limit")
        self.limit = limit
        self.credentials_limit = credentials_limit
        self.longest_wait = 0.0

    def too_late(self, waited: float, *, credentials: bool) -> bool:
        """Whether a new request that waited ``waited`` seconds is to be refused."""
        if waited > self.longest_wait:
            self.longest_wait = waited
        if not self.limit:
            return False
        return waited > (self.credentials_limit if credentials else self.limit)
