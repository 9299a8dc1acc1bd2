"""Connected UDP sockets: tie a media socket to the one peer it has latched, and untie it.

Why the relay connects a latched socket (``connect(2)`` on a datagram socket, POSIX): from then on
the kernel delivers to it only datagrams from that peer, so the relay reads with ``recv_into``
instead of ``recvfrom_into``, which builds a new address (a ``str``, an ``int`` and a tuple) for
every datagram that the relay then compares with the latched one; and it sends with ``send``. At
1000 calls that took the relay's CPU per forwarded RTP packet at capacity from 5.7 to 4.4-4.8 us
(docs/benchmarks.md, "Connected media sockets"); connecting but still reading with
``recvfrom_into`` gained nothing measurable.

What changes for the socket's other senders: the kernel drops their datagrams and answers them
with ICMP port unreachable, as it does for a port nobody holds (the relay dropped them too, after
reading them). ICMP errors from the peer now reach the socket: the next receive or send on it
fails once with ``ConnectionRefusedError``, which the relay counts as a receive or send error.

Python cannot undo ``connect`` (that needs a ``sockaddr`` of family ``AF_UNSPEC``, which the socket
module does not build), so :func:`dissolve` calls the C library's ``connect`` through ctypes.
Linux only, as the relay is.
"""

from __future__ import annotations

import ctypes
import os
import socket

_libc = ctypes.CDLL(None, use_errno=True)
_libc_connect = _libc.connect
_libc_connect.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
_libc_connect.restype = ctypes.c_int

# A struct sockaddr whose sa_family is AF_UNSPEC (0): connect(2) with it dissolves a datagram
# socket's association (POSIX connect(2); Linux: udp_disconnect).
_AF_UNSPEC_SOCKADDR = bytes(16)


def dissolve(sock: socket.socket) -> None:
    """Undo ``sock.connect(peer)``: ``sock`` receives from anyone again. It keeps its port when
    it was bound to a given one, as :class:`~gateway.core.media.ports.PortAllocator` binds (bound
    to port 0, the kernel would unbind it). Raises OSError."""
    if _libc_connect(sock.fileno(), _AF_UNSPEC_SOCKADDR, len(_AF_UNSPEC_SOCKADDR)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
