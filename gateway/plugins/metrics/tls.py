"""The exporter's TLS server context: HTTPS for Prometheus' ``scheme: https`` and, with a client
CA, mutual TLS for its ``tls_config.cert_file``.

The stdlib ``ssl`` module (served with ``trio.SSLStream``) is enough here: unlike the SIP
``tls`` transport, which needs OpenSSL's verify callback to accept and fingerprint any client
certificate (pyOpenSSL, gateway/plugins/transports/tls.py), the exporter either requires a
certificate that chains to its CA or asks for none. The protocol settings are the transport's
(RFC 9325): TLS 1.2 and 1.3 only (§3.1.1), TLS 1.2 suites with ECDHE and AEAD only
(:data:`~gateway.plugins.transports.tls.TLS12_CIPHERS`, §4.2), no compression (§3.3), no
renegotiation (§3.5). Certificate files are read with the transport's
:func:`~gateway.plugins.transports.certificates.load_certificates` and fail with its
:class:`~gateway.plugins.transports.certificates.CertificateError`, whose messages name the file
and never hold key bytes. Like the transport's, the files are read at start-up and again on
SIGHUP (``MetricsExporter.reload_certificates``).
"""

from __future__ import annotations

import ssl
from pathlib import Path

from gateway.core.config import unentered_problem
from gateway.plugins.transports.certificates import CertificateError, load_certificates
from gateway.plugins.transports.tls import TLS12_CIPHERS


class TlsFileError(CertificateError):
    """A TLS file of ``[plugins.metrics]`` cannot be used; ``key`` is the config key naming it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def describe_ssl_error(exc: ssl.SSLError) -> str:
    """OpenSSL's reason in words ("key values mismatch", "unsupported protocol"): never key
    bytes, and the same wording the SIP transport's log lines use."""
    reason = exc.reason or exc.strerror or type(exc).__name__
    return str(reason).lower().replace("_", " ")


def _refuse_passphrase() -> bytes:
    # Without this, OpenSSL would prompt for a passphrase on the terminal and hang start-up.
    raise CertificateError("the key is encrypted; give an unencrypted key file (mode 600)")


def server_context(certificate: str, private_key: str, client_ca: str | None) -> ssl.SSLContext:
    """The context the exporter serves with: the certificate chain and its key (PEM files), and
    when ``client_ca`` is given, client certificates required and verified against it.
    :class:`TlsFileError` names the key (tls_certificate, tls_private_key, tls_client_ca) and
    the file."""
    files = (
        ("tls_certificate", certificate),
        ("tls_private_key", private_key),
        ("tls_client_ca", client_ca),
    )
    for key, name in files:
        # stat(2) failing with EACCES (a directory this user may not enter) is not "cannot
        # read ...: Permission denied" of the file: say which directory, as the tls plugin does.
        unreached = unentered_problem(Path(name)) if name is not None else None
        if unreached is not None:
            raise TlsFileError(key, unreached)
    try:
        load_certificates(Path(certificate))  # missing, unreadable, not PEM: a clear reason
    except CertificateError as exc:
        raise TlsFileError("tls_certificate", str(exc)) from None
    key_path = Path(private_key)
    try:
        with key_path.open("rb"):
            pass
    except OSError as exc:
        raise TlsFileError("tls_private_key", f"cannot read {key_path}: {exc.strerror}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2  # RFC 9325 §3.1.1
    context.set_ciphers(TLS12_CIPHERS)  # TLS 1.3 suites are all AEAD with (EC)DHE already
    context.options |= (
        ssl.OP_NO_COMPRESSION  # RFC 9325 §3.3
        | ssl.OP_NO_RENEGOTIATION  # RFC 9325 §3.5
        | ssl.OP_CIPHER_SERVER_PREFERENCE
    )
    try:
        context.load_cert_chain(certificate, private_key, password=_refuse_passphrase)
    except CertificateError as exc:
        raise TlsFileError("tls_private_key", f"{key_path}: {exc}") from None
    except ssl.SSLError as exc:
        raise TlsFileError(
            "tls_private_key",
            f"{key_path}: not the private key of {certificate} ({describe_ssl_error(exc)})",
        ) from None
    if client_ca is not None:
        try:
            load_certificates(Path(client_ca))
            context.load_verify_locations(cafile=client_ca)
        except CertificateError as exc:
            raise TlsFileError("tls_client_ca", str(exc)) from None
        except ssl.SSLError as exc:
            raise TlsFileError("tls_client_ca", f"{client_ca}: {describe_ssl_error(exc)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    else:
        context.verify_mode = ssl.CERT_NONE
    return context
