"""The TLS signalling fixture of the in-memory MIKEY tests: moved here from test_b2bua_mikey.py so
that no test module imports another."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.testing.memory_transport import MemoryUdpTransport


@pytest.fixture
def tls_signalling(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every memory flow is secure, as a TLS connection's would be."""
    original = MemoryUdpTransport._make_flow

    def secure(self: MemoryUdpTransport, *args: object) -> object:
        flow = original(self, *args)  # type: ignore[arg-type]
        flow.secure = True
        return flow

    monkeypatch.setattr(MemoryUdpTransport, "_make_flow", secure)
    yield
