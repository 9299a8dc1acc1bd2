"""The ``wss`` signalling transport: SIP over secure WebSocket (RFC 7118, RFC 6455 §11.1.2).

What a browser softphone on an https page connects to (``wss://host:port``). It is the ``ws``
transport on connections that first run the ``tls`` transport's handshake: the same TLS
settings (TLS 1.2/1.3, AEAD suites, no resumption, RFC 9325), the same certificate loading,
errors and reload on SIGHUP, and, without ``certificate``, the same generated certificate in
``<state_dir>/tls/``.
One difference: a ``wss`` listener asks for no client certificate, because a browser asked for
one may interrupt its user with a certificate picker; browsers authenticate with SIP digest.

A browser checks our certificate against its own CA store and the host name in the
``wss://`` URL, and gives no prompt to accept a self-signed one for a WebSocket: configure a
certificate from a CA the browsers trust, or, for a test, open ``https://host:port/`` once and
accept the certificate there (the listener answers that page with a short HTTP 400).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
from OpenSSL import SSL

from gateway.core.hookspecs import hookimpl
from gateway.core.plugins import Registry
from gateway.plugins.transports.certificates import CertificatePaths
from gateway.plugins.transports.revocation import LoadedCrl
from gateway.plugins.transports.tls import Mode, TlsConfig, TlsTransport, server_context
from gateway.plugins.transports.ws import (
    WebSocketConnections,
    WsConfig,
)


@attrs.frozen
class WssConfig(WsConfig):
    """``[plugins.wss]``: ``[plugins.ws]``'s keys and the TLS certificate. See
    docs/configuration.md."""

    certificate: str | None = None
    private_key: str | None = None

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        _ = self.tls  # the tls transport's own checks (certificate and private_key go together)

    @property
    def tls(self) -> TlsConfig:
        """The settings the TLS handshake reads (the ``tls`` transport's code runs it)."""
        return TlsConfig(
            certificate=self.certificate,
            private_key=self.private_key,
            mode="encryption-only",
            handshake_timeout=self.handshake_timeout,
            max_connections_per_source=self.max_connections_per_source,
            idle_timeout=self.idle_timeout,
        )


class WssTransport(WebSocketConnections, TlsTransport):
    """SIP over WebSocket over TLS: :class:`TlsTransport` accepts and runs the TLS handshake,
    :class:`WebSocketConnections` runs the connection."""

    name = "wss"
    secure = True

    def __init__(self, config: WssConfig | None = None) -> None:
        self.wss_config = config or WssConfig()
        self.websocket = self.wss_config.websocket
        TlsTransport.__init__(self, self.wss_config.tls)
        self._connections = 0

    def _server_context(
        self, paths: CertificatePaths, mode: Mode, crls: Sequence[LoadedCrl]
    ) -> SSL.Context:
        # No client certificate asked for: no CA bundle and nothing to check for revocation.
        return server_context(paths, mode, (), request_certificate=False)


@hookimpl
def gateway_plugin_config() -> type:
    return WssConfig


@hookimpl
def gateway_register_transports(registry: Registry[WssTransport], config: WssConfig) -> None:
    registry.add(WssTransport.name, WssTransport(config))
