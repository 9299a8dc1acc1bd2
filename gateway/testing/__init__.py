"""Public test utilities for voipgw and its plugins.

- :mod:`gateway.testing.network`: an in-memory datagram network with seeded loss, duplication,
  reordering and delay, on trio's (virtual) clock.
- :mod:`gateway.testing.streams`: in-memory byte streams that split and coalesce writes, and a
  listen/connect network of them.
- :mod:`gateway.testing.fake_dns`: a DNS resolver answering from tables, for trunks named by
  DNS (``Gateway(..., dns_resolver=...)``).
- :mod:`gateway.testing.fixtures`: pytest fixtures; opt in with
  ``pytest_plugins = ["gateway.testing.fixtures"]`` (not imported here, so this package does not
  need pytest).
"""

from __future__ import annotations

from gateway.testing.network import (
    Address,
    CapturedDatagram,
    Impairment,
    MemoryDatagramSocket,
    MemoryNetwork,
    NetworkStatistics,
    SocketStatistics,
)
from gateway.testing.streams import (
    MemoryListener,
    MemoryStream,
    MemoryStreamNetwork,
    chunked_one_way_pair,
    memory_stream_pair,
)

__all__ = [
    "Address",
    "CapturedDatagram",
    "Impairment",
    "MemoryDatagramSocket",
    "MemoryListener",
    "MemoryNetwork",
    "MemoryStream",
    "MemoryStreamNetwork",
    "NetworkStatistics",
    "SocketStatistics",
    "chunked_one_way_pair",
    "memory_stream_pair",
]
