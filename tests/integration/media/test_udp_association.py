"""Connecting a media socket to its peer and undoing it, on real UDP sockets on 127.0.0.1.

Media sockets come from a :class:`PortAllocator` on MEDIA_PORTS, a block of this process (bound to a
given port, as the relay's are, which is what keeps the port through :func:`dissolve`); the other
sockets get theirs from the kernel. Every wait is bounded (``select`` or a socket timeout), none is
a fixed sleep.
"""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Callable, Iterator

import pytest

from gateway.core.config import PortRange
from gateway.core.media.ports import PortAllocator, PortPair
from gateway.core.media.udp_association import dissolve
from tests.port_blocks import ModuleBlock

ADDRESS = "127.0.0.1"
MEDIA_PORTS = ModuleBlock(100, parse=PortRange.parse)
TIMEOUT = 5.0

MakeSocket = Callable[[], socket.socket]


@pytest.fixture
def make_media_socket() -> Iterator[MakeSocket]:
    """A relay's RTP socket: non-blocking, bound to a given port."""
    allocator = PortAllocator(ADDRESS, MEDIA_PORTS.get())
    pairs: list[PortPair] = []

    def make() -> socket.socket:
        pairs.append(allocator.allocate())
        return pairs[-1].rtp_socket

    yield make
    for pair in pairs:
        pair.close()


@pytest.fixture
def make_socket() -> Iterator[MakeSocket]:
    """A phone's socket: blocking with a timeout, on a port the kernel picks."""
    sockets: list[socket.socket] = []

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sockets.append(sock)
        sock.bind((ADDRESS, 0))
        sock.settimeout(TIMEOUT)
        return sock

    yield make
    for sock in sockets:
        sock.close()


def wait_readable(sock: socket.socket) -> None:
    readable, _, _ = select.select([sock], [], [], TIMEOUT)
    assert readable, "nothing arrived"


def refused(stranger: socket.socket, port: int) -> bool:
    """``stranger`` sends to ``port``: True when the kernel answers port unreachable (a
    connected UDP socket reports it as ConnectionRefusedError), False when someone took it."""
    stranger.connect((ADDRESS, port))
    stranger.send(b"hello")
    try:
        stranger.recv(16)
    except ConnectionRefusedError:
        return True
    return False  # pragma: no cover - the taker answers nothing, so recv times out instead


def test_a_connected_socket_takes_only_its_peer_until_dissolved(
    make_media_socket: MakeSocket, make_socket: MakeSocket
):
    media, peer, stranger = make_media_socket(), make_socket(), make_socket()
    port = media.getsockname()[1]
    media.connect(peer.getsockname())
    assert refused(stranger, port)

    peer.sendto(b"from the peer", (ADDRESS, port))
    wait_readable(media)
    assert media.recv(64) == b"from the peer"

    dissolve(media)
    assert media.getsockname() == (ADDRESS, port)  # keeps its bound port
    stranger.send(b"let in")
    wait_readable(media)
    assert media.recvfrom(64) == (b"let in", stranger.getsockname())
    media.sendto(b"answer", stranger.getsockname())
    assert stranger.recv(64) == b"answer"


def test_dissolving_a_closed_socket_raises_oserror_naming_the_error(make_socket: MakeSocket):
    media = make_socket()
    media.close()  # fileno() is -1 now
    with pytest.raises(OSError) as raised:
        dissolve(media)
    assert raised.value.errno == errno.EBADF
    assert raised.value.strerror
