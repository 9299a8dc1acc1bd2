"""The open-files limit of ``voipgw run`` (RLIMIT_NOFILE): raised to the hard limit as it starts,
and a WARNING when even that is under what ``[media] ports`` needs.

Why. Every port of ``[media] ports`` in use is a socket (a call's leg holds an RTP and an RTCP
port), every phone registered over TCP, TLS or WebSocket a connection, the store and the taps
their files. A Linux process starts with a soft limit of 1024 open files (systemd's default for
services, ``DefaultLimitNOFILE=1024:524288``, and a login shell's), kept low for programs that
wait with select(2), which cannot watch a descriptor past 1023; the hard limit is far higher.
With 1024, calls past about 250 at once failed to bind their sockets (EMFILE) with most media
ports still free, each an "internal error" (docs/benchmarks.md, session 63). The gateway
waits with epoll (trio, the relay) and poll (psycopg), never select, so it raises its soft
limit to the hard one, as Go programs do since Go 1.19; rtpengine's and FreeSWITCH's units set
``LimitNOFILE`` for the same reason. Media workers are its children: they inherit the limit.
Since session 63.
"""

from __future__ import annotations

import logging
import math
import resource
from collections.abc import Callable

from gateway.core.config import GatewayConfig

log = logging.getLogger(__name__)

SPARE = 1024
"""Descriptors counted beside the media ports of the busiest process: listeners, SIP
connections, the store, the taps, the control socket, logs. A rough allowance for the WARNING,
not a reservation."""

Limits = tuple[int, int]


def descriptors_needed(config: GatewayConfig) -> int:
    """What the busiest process needs by ``config``: its media ports (all of them in the SIP
    process, or one worker's even share of ``[media] workers``) and :data:`SPARE`."""
    ports = config.media_ports
    count = ports.high - ports.low + 1
    if config.media.workers > 1:
        count = math.ceil(count / config.media.workers)
    return count + SPARE


def raise_to_hard_limit(
    get: Callable[[int], Limits] = resource.getrlimit,
    set_: Callable[[int, Limits], None] = resource.setrlimit,
) -> Limits:
    """Raise this process's soft limit to its hard limit: (soft before, soft after). A hard
    limit of RLIM_INFINITY is not one the kernel takes for open files (fs.nr_open caps it):
    the soft limit is left as it is then, as it is when the kernel refuses."""
    soft, hard = get(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft >= hard:
        return soft, soft
    try:
        set_(resource.RLIMIT_NOFILE, (hard, hard))
    except (OSError, ValueError):
        return soft, soft
    return soft, hard


def apply(config: GatewayConfig) -> None:
    """At ``voipgw run``'s start, before any worker is started: raise the limit, and say so,
    or say what it leaves short."""
    before, after = raise_to_hard_limit()
    needed = descriptors_needed(config)
    if after != before:
        log.info("open files: limit raised from %d to %d (the hard limit)", before, after)
    if after != resource.RLIM_INFINITY and after < needed:
        where = "each media worker" if config.media.workers > 1 else "the gateway"
        log.warning(
            "open files: the limit is %d, under the %d that %s needs for [media] ports %s and"
            " %d more (connections, the store): calls past that fail to bind their media"
            " sockets (EMFILE) with ports still free; raise the hard limit (systemd:"
            " LimitNOFILE= in the unit; a shell: ulimit -Hn) or narrow [media] ports",
            after,
            needed,
            where,
            config.media.ports,
            SPARE,
        )
