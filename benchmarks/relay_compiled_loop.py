"""Measure issue 7's option (a): the relay's per-packet loop compiled, everything else as it is.

Not part of the gateway, and nothing in gateway/ uses it. It exists so that the maintainers can
decide on a compiled per-packet path with a measured figure instead of an estimate
(docs/benchmarks.md, "A compiled per-packet loop").

Run from the repository root, like relay_srtp.py, whose options it takes (it runs that script
with one change)::

    python benchmarks/relay_compiled_loop.py --capacity --seconds 4
    python benchmarks/relay_compiled_loop.py --calls 1000 --scenarios srtp-srtp --relays voipgw

It needs a C compiler and the interpreter's headers (Debian: gcc, python3-dev): cffi, which
pylibsrtp already depends on, compiles the loop below into a temporary directory at start-up.

The change: ``MediaRelay._relay_ready`` (the Python hot path) is replaced, for each relay, once
every call's phones have sent their first packet, by one C call per wake-up that does what the
Python loop does for an RTP packet on a latched socket: ``epoll_wait`` with no timeout, then per
ready socket ``recvfrom``, the latched-source and RTP version checks, the route's libsrtp steps
(``srtp_unprotect`` / ``srtp_protect`` on the very libsrtp contexts the gateway's SrtpSession
created, called through the addresses of pylibsrtp's own library: the same libsrtp 2.7.0 and
OpenSSL 3.5 build), ``sendto`` the other side's latched address; rounds repeat until epoll reports
nothing, at most the relay's round limit. Until then, and for everything else (opening streams,
keying, latching), the gateway's own code runs. The relay task, trio and the wake-up are the
gateway's.

What this loop leaves out, which a production version would have to carry over from
``_relay_ready``: RTCP (rtcp-mux routing, SRTCP), DTLS and other non-RTP datagrams handed to the
key exchange, re-latching, blocked directions (no media before keys), taps, the per-SSRC limit,
drop counters by reason and the per-route statistics (it counts relayed packets and drops only),
and a rebuild when a stream's routes change (it reads them once). None of them costs anything
per packet in the Python relay's measured floor (docs/benchmarks.md, "Plain forwarding"), so the
figure is what a compiled loop would reach, not a lower bound of it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import struct
import sys
import tempfile
from typing import Any

import cffi
from pylibsrtp._binding import ffi as srtp_ffi
from pylibsrtp._binding import lib as srtp_lib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import relay_srtp

from gateway.core.media import relay as relay_module

TYPES = """
typedef int (*srtp_step)(void *ctx, void *packet, int *length);
struct route {
    int in_use;
    int out_fd;
    uint32_t source_address; uint16_t source_port;            /* network byte order */
    uint32_t destination_address; uint16_t destination_port;  /* network byte order */
    void *context_1; srtp_step step_1;
    void *context_2; srtp_step step_2;
    long packets, dropped;
};
"""
DECLARATIONS = (
    TYPES
    + """
long relay_ready(int epoll_fd, struct route *routes, int route_count, int max_rounds,
                 unsigned char *buffer, int buffer_size);
"""
)

SOURCE = (
    r"""
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
"""
    + TYPES
    + r"""
#define TRANSFORM_ROOM 64  /* SRTP tag and MKI room left at the end of the buffer */

long relay_ready(int epoll_fd, struct route *routes, int route_count, int max_rounds,
                 unsigned char *buffer, int buffer_size) {
    struct epoll_event events[1024];
    long relayed = 0;
    for (int round = 0; round < max_rounds; round++) {
        int ready = epoll_wait(epoll_fd, events, 1024, 0);
        if (ready <= 0)
            break;
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;  /* Python's select.epoll registers data.fd = fd */
            struct sockaddr_in source;
            socklen_t source_length = sizeof source;
            ssize_t size = recvfrom(fd, buffer, buffer_size - TRANSFORM_ROOM, MSG_DONTWAIT,
                                    (struct sockaddr *)&source, &source_length);
            if (size < 0 || fd >= route_count)
                continue;
            struct route *route = &routes[fd];
            if (!route->in_use || source.sin_port != route->source_port
                    || source.sin_addr.s_addr != route->source_address
                    || size < 12 || (buffer[0] & 0xC0) != 0x80) {
                route->dropped++;
                continue;
            }
            int length = (int)size;
            if ((route->step_1 && route->step_1(route->context_1, buffer, &length))
                    || (route->step_2 && route->step_2(route->context_2, buffer, &length))) {
                route->dropped++;
                continue;
            }
            struct sockaddr_in destination;
            memset(&destination, 0, sizeof destination);
            destination.sin_family = AF_INET;
            destination.sin_port = route->destination_port;
            destination.sin_addr.s_addr = route->destination_address;
            if (sendto(route->out_fd, buffer, length, 0, (struct sockaddr *)&destination,
                       sizeof destination) < 0) {
                route->dropped++;
                continue;
            }
            route->packets++;
            relayed++;
        }
    }
    return relayed;
}
"""
)

BUFFER_SIZE = 4096


def build_loop() -> Any:
    """Compile the loop into a temporary directory and import it."""
    builder = cffi.FFI()
    builder.cdef(DECLARATIONS)
    builder.set_source("_voipgw_relay_loop", SOURCE, extra_compile_args=["-O2"])
    directory = tempfile.mkdtemp(prefix="voipgw-relay-loop-")
    library = builder.compile(tmpdir=directory, verbose=False)
    spec = importlib.util.spec_from_file_location("_voipgw_relay_loop", library)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOOP = build_loop()
STEP_ADDRESSES = {
    name: int(srtp_ffi.cast("uintptr_t", srtp_ffi.addressof(srtp_lib, name)))
    for name in ("srtp_protect", "srtp_unprotect")
}
BUFFER = LOOP.ffi.new("unsigned char[]", BUFFER_SIZE)


def _address(host: str) -> int:
    value: int = struct.unpack("=I", socket.inet_aton(host))[0]  # stays in network order
    return value


def _libsrtp_steps(route: Any) -> list[Any]:
    """The gateway's libsrtp step objects of an in-place route, in order (none if plain)."""
    if route.plain:
        return []
    if not route.in_place:
        raise RuntimeError("a route with taps or Python-only transforms: not measured here")
    if route.step_fused:
        pair = route.step_in.__self__
        return [pair.first, pair.second]
    return [step.__self__ for step in (route.step_in, route.step_out) if step is not None]


class CompiledRoutes:
    """The C route table of one relay, built from its latched endpoints."""

    def __init__(self, relay: Any) -> None:
        ffi = LOOP.ffi
        self.count = len(relay._endpoints)
        self.routes = ffi.new("struct route[]", self.count)
        latched = [(fd, ep) for fd, ep in enumerate(relay._endpoints) if ep and ep.source]
        for fd, ep in latched:
            route, entry = ep.rtp, self.routes[fd]
            entry.in_use = 1
            entry.out_fd = route.sendto.__self__.fileno()
            entry.source_address = _address(ep.source[0])
            entry.source_port = socket.htons(ep.source[1])
            entry.destination_address = _address(route.destination[0])
            entry.destination_port = socket.htons(route.destination[1])
            steps = _libsrtp_steps(route)
            for index, step in enumerate(steps):
                context = ffi.cast("void *", int(srtp_ffi.cast("uintptr_t", step.context.ctx)))
                function = ffi.cast("srtp_step", STEP_ADDRESSES[step.function.__name__])
                if index == 0:
                    entry.context_1, entry.step_1 = context, function
                else:
                    entry.context_2, entry.step_2 = context, function
        # The relay's statistics sum its routes' counters: the loop's count goes to one of them.
        self.counter = latched[0][1].rtp
        print(f"    compiled loop takes over {len(latched)} sockets", flush=True)

    def relay_ready(self, epoll_fd: int, max_rounds: int) -> None:
        relayed = LOOP.lib.relay_ready(
            epoll_fd, self.routes, self.count, max_rounds, BUFFER, BUFFER_SIZE
        )
        self.counter.packets += relayed


def _all_latched(relay: Any) -> bool:
    endpoints = [ep for ep in relay._endpoints if ep is not None]
    latched = [ep for ep in endpoints if ep.source is not None]
    # Two sockets of four per call carry RTP (no RTCP is sent), each with a known destination.
    return len(latched) == 2 * len(relay._streams) and all(
        ep.rtp.destination is not None for ep in latched
    )


_python_relay_ready = relay_module.MediaRelay._relay_ready
_python_close = relay_module.MediaRelay.close
_compiled: dict[int, CompiledRoutes] = {}


def _relay_ready(relay: Any, now: float) -> None:
    routes = _compiled.get(id(relay))
    if routes is None:
        if not _all_latched(relay):
            _python_relay_ready(relay, now)
            return
        routes = _compiled[id(relay)] = CompiledRoutes(relay)
    routes.relay_ready(relay._epoll.fileno(), relay._max_rounds)


def _close(relay: Any) -> None:
    _compiled.pop(id(relay), None)
    _python_close(relay)


def main() -> None:
    relay_module.MediaRelay._relay_ready = _relay_ready  # type: ignore[method-assign]
    relay_module.MediaRelay.close = _close  # type: ignore[method-assign]
    print("voipgw's relay with its per-packet loop compiled (benchmarks/relay_compiled_loop.py)")
    relay_srtp.main()


if __name__ == "__main__":
    main()
