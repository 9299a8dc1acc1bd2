"""Media port pairs from a configured range: an even RTP port and RTCP on the next one.

RFC 3550 §11: RTP uses an even port and RTCP the next higher (odd) port; SDP without ``a=rtcp``
implies that pairing (RFC 3605 §2.1), so the gateway allocates and binds both ports of a pair even
when the leg later negotiates rtcp-mux (RFC 5761), which keeps the offer valid for either answer.

The allocator binds plain non-blocking stdlib UDP sockets (the relay drains them from one epoll,
see :mod:`gateway.core.media.relay`). Freed pairs go to the back of a FIFO, so a port is reused as
late as possible and late packets of an ended call rarely reach the next one. A pair that some other
process holds is skipped and retried later. When no pair can be bound, :class:`PortsExhausted`
tells the B2BUA to answer 503.

Usage::

    allocator = PortAllocator(config.media.address, config.media_ports)   # [media] address, ports
    with allocator.allocate() as pair:      # closes both sockets and frees the pair on every path
        ...
"""

from __future__ import annotations

import collections
import errno
import ipaddress
import logging
import os
import socket
import time

import attrs

from gateway.core.config import PortRange
from gateway.core.media.errors import LocalMediaError, PortsExhausted

log = logging.getLogger(__name__)

OUT_OF_DESCRIPTORS_LOG_EVERY = 60.0
"""Seconds between two WARNINGs that media sockets cannot be made for want of descriptors
(each call refused meanwhile is counted into the next)."""

_SOCK_NONBLOCK: int = getattr(socket, "SOCK_NONBLOCK", 0)
"""socket(2)'s flag for a non-blocking socket; 0 where the platform has none (setblocking then)."""


def rtp_ports(ports: PortRange) -> range:
    """The even RTP ports of ``ports`` whose RTCP port (+1) is in the range too."""
    return range(ports.low + ports.low % 2, ports.high, 2)


@attrs.define(eq=False)
class PortPair:
    """Two bound non-blocking UDP sockets, RTP on an even port and RTCP on the next one.

    Close it (or leave its ``with`` block) to close both sockets and give the pair back to the
    allocator; closing twice is harmless.
    """

    address: str
    rtp_port: int
    rtp_socket: socket.socket
    rtcp_socket: socket.socket
    _allocator: PortAllocator | None = attrs.field(default=None, repr=False)

    @property
    def rtcp_port(self) -> int:
        return self.rtp_port + 1

    @property
    def closed(self) -> bool:
        return self._allocator is None

    def close(self) -> None:
        """Close both sockets and return the pair to its allocator."""
        allocator, self._allocator = self._allocator, None
        if allocator is None:
            return
        self.rtp_socket.close()
        self.rtcp_socket.close()
        allocator._release(self.rtp_port)

    def __enter__(self) -> PortPair:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class PortAllocator:
    """Hands out :class:`PortPair` objects bound on ``address`` from ``ports`` (the ``[media]``
    ``address`` and ``ports`` settings, default 127.0.0.1 and 30000-30999).

    Linux (and any POSIX) semantics assumed: a closed UDP port can be bound again at once, so no
    ``SO_REUSEADDR`` is set (on Linux it would let two sockets share a UDP port).
    """

    def __init__(self, address: str, ports: PortRange) -> None:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise LocalMediaError(f"media address {address!r} is not an IP address") from None
        self.address = str(ip)
        self.family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        self.ports = ports
        self._free: collections.deque[int] = collections.deque(rtp_ports(ports))
        self._in_use: set[int] = set()
        self._out_of_descriptors_said = -OUT_OF_DESCRIPTORS_LOG_EVERY
        self._out_of_descriptors_unsaid = 0

    @property
    def in_use(self) -> int:
        """Number of pairs currently allocated."""
        return len(self._in_use)

    @property
    def available(self) -> int:
        """Number of pairs not allocated (some may still be held by other processes)."""
        return len(self._free)

    def allocate(self) -> PortPair:
        """Bind the next free pair. Raises :class:`PortsExhausted` when none can be bound.

        Pairs that another process holds (EADDRINUSE) are moved to the back and tried again
        later. A process out of descriptors (EMFILE, ENFILE: the open-files limit,
        gateway/core/open_files.py) cannot make the sockets whatever the port: PortsExhausted
        too, so that the call is refused 503 as for no ports, not 500 with a traceback as our
        bug, and a WARNING says why, at most once a minute. Any other bind error (e.g. the
        address is not local) is a configuration error and propagates.
        """
        for _ in range(len(self._free)):
            rtp_port = self._free.popleft()
            try:
                rtp_socket = self._bind(rtp_port)
                try:
                    rtcp_socket = self._bind(rtp_port + 1)
                except BaseException:
                    rtp_socket.close()
                    raise
            except OSError as exc:
                self._free.append(rtp_port)
                if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                    continue
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    self._out_of_descriptors(exc.errno)
                    raise PortsExhausted(
                        f"no media sockets on {self.address}: {os.strerror(exc.errno)}"
                    ) from None
                raise
            except BaseException:
                self._free.append(rtp_port)
                raise
            self._in_use.add(rtp_port)
            return PortPair(self.address, rtp_port, rtp_socket, rtcp_socket, self)
        raise PortsExhausted(
            f"no free media port pair in {self.ports.low}-{self.ports.high} on {self.address} "
            f"({len(self._in_use)} in use)"
        )

    def _out_of_descriptors(self, code: int) -> None:
        self._out_of_descriptors_unsaid += 1
        now = time.monotonic()
        if now - self._out_of_descriptors_said < OUT_OF_DESCRIPTORS_LOG_EVERY:
            return
        log.warning(
            "media ports: %d port pair(s) not bound since the last such line, their calls"
            " refused (503): no socket could be made (%s) with %d of %d pairs of %s in use: the"
            " process's open-files limit (see 'open files:' at the start; systemd:"
            " LimitNOFILE=)",
            self._out_of_descriptors_unsaid,
            errno.errorcode.get(code, str(code)),
            len(self._in_use),
            len(self._in_use) + len(self._free),
            self.ports,
        )
        self._out_of_descriptors_said = now
        self._out_of_descriptors_unsaid = 0

    def _bind(self, port: int) -> socket.socket:
        # Non-blocking from socket(2) itself (SOCK_NONBLOCK, Linux): setblocking(False) would be
        # one more system call (ioctl FIONBIO) per socket, four per call (docs/benchmarks.md,
        # session 28). Python then reads the socket as non-blocking too (timeout 0).
        sock = socket.socket(self.family, socket.SOCK_DGRAM | _SOCK_NONBLOCK)
        try:
            if not _SOCK_NONBLOCK:
                sock.setblocking(False)
            sock.bind((self.address, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def _release(self, rtp_port: int) -> None:
        self._in_use.discard(rtp_port)
        self._free.append(rtp_port)
