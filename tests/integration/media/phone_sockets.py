"""Helpers shared by the media tests whose phones are plain trio UDP sockets on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio


def udp_socket() -> trio.socket.SocketType:
    """An unbound UDP socket for a phone (the test binds it to its port). No SO_REUSEADDR: a
    port another socket holds must fail the bind, not share its datagrams."""
    return trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)


async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` until it holds; fail after 5 s."""
    with trio.fail_after(5):
        while not condition():
            await trio.sleep(0.005)


async def receive(sock: trio.socket.SocketType, within: float) -> bytes | None:
    """The next datagram on ``sock``, or None if none arrives within ``within`` seconds."""
    with trio.move_on_after(within):
        data, _ = await sock.recvfrom(2048)
        return data
    return None
