"""The CRL fetch and TLS contexts of the TLS CRL tests: moved here from test_tls_crl_apply.py so
that no test module imports another."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL

from gateway.plugins.transports import tls
from gateway.plugins.transports.revocation import LoadedCrl, check_crl_untrusted
from gateway.plugins.transports.tls import TlsConfig, TlsTransport, _ListenerSide
from tests.interop.harness.pki import TestCa, TestPki

URL = "http://crl.vendor.example/factory.crl"
# Only a failing run waits this long (the loop never came round): never reached otherwise.
HANG = 10.0


def transport_with_contexts(
    pki: TestPki, vendor: TestCa, tmp_path: Path, **config: Any
) -> TlsTransport:
    """A transport fetching ``URL`` with one listener's context and one outbound context in
    use, as a serving gateway has."""
    own = vendor.issue("gateway")
    settings: dict[str, Any] = {
        "certificate": str(own.certificate),
        "private_key": str(own.key),
        "ca_bundles": (str(vendor.certificate),),
        "crl_urls": (URL,),
    }
    settings.update(config)
    transport = TlsTransport(TlsConfig(**settings))
    assert transport._paths is not None
    side = _ListenerSide(
        ("127.0.0.1", 5061),
        "server-only",
        transport._server_context(transport._paths, "server-only", ()),
    )
    transport._listeners.append(side)
    transport._client_context("server-only")
    return transport


def fetched(vendor: TestCa, tmp_path: Path, *, revoked: int = 0) -> LoadedCrl:
    phones = [vendor.issue(f"phone-{n}", hosts=[]) for n in range(revoked)]
    path = vendor.crl(tmp_path / "fetched.crl", der=True, number=7, revoked=phones)
    return check_crl_untrusted(path.read_bytes(), URL, [vendor.issued.x509])


def building(
    monkeypatch: pytest.MonkeyPatch, during: Callable[[], None]
) -> list[tuple[bool, tuple[int | None, ...]]]:
    """Wrap the outbound context's build (the last one of each round): ``during()`` runs in
    the building thread, then the build. Returns, per build, whether it ran in the event
    loop's thread and the cRLNumbers it got."""
    builds: list[tuple[bool, tuple[int | None, ...]]] = []
    make = tls.client_context

    def client_context(*args: Any, **kwargs: Any) -> SSL.Context:
        builds.append(
            (
                threading.current_thread() is threading.main_thread(),
                tuple(crl.number for crl in kwargs["crls"]),
            )
        )
        during()
        return make(*args, **kwargs)

    monkeypatch.setattr(tls, "client_context", client_context)
    return builds
