"""Certificate reload (SIGHUP) in the ``tls`` and ``wss`` transports, without sockets: what a
reload swaps in, and that it swaps in nothing at all when any file fails (all or nothing), with
an error naming the file and never holding key material.

The transport's files stay at one path (``live/``), as certbot's ``live/`` symlinks do; a test
copies a certificate and key of the throw-away PKI over them, then reloads.
"""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path

import pytest
from OpenSSL import SSL

from gateway.core.interfaces import ReloadError
from gateway.plugins.transports.certificates import CertificatePaths, fingerprint
from gateway.plugins.transports.tls import (
    Mode,
    TlsConfig,
    TlsTransport,
    _ListenerSide,
)
from gateway.plugins.transports.wss import WssConfig, WssTransport
from tests.interop.harness.pki import Issued, TestCa, TestPki

LISTENER = ("127.0.0.1", 5061)


@pytest.fixture
def ca(tmp_path: Path) -> TestCa:
    return TestPki(tmp_path / "pki").ca("Reload CA")


@pytest.fixture
def live(tmp_path: Path) -> CertificatePaths:
    (tmp_path / "live").mkdir()
    return CertificatePaths(tmp_path / "live" / "cert.pem", tmp_path / "live" / "key.pem")


def install(issued: Issued, live: CertificatePaths) -> None:
    """What a deploy hook does: the new pair over the old files (key mode 0600)."""
    shutil.copyfile(issued.certificate, live.certificate)
    shutil.copyfile(issued.key, live.private_key)
    live.private_key.chmod(0o600)


def key_lines(issued: Issued) -> list[str]:
    """The base64 lines of a private key file: none may appear in an error or a log line."""
    return [line for line in issued.key.read_text().splitlines() if "-----" not in line]


def presented(context: SSL.Context) -> str:
    """The SHA-256 fingerprint of the certificate a new connection on ``context`` presents."""
    certificate = SSL.Connection(context, None).get_certificate()
    assert certificate is not None
    return fingerprint(certificate.to_cryptography())


def with_listener(transport: TlsTransport, paths: CertificatePaths, mode: Mode) -> TlsTransport:
    # What serve() notes once a listener is bound (no socket in a unit test).
    transport._listeners.append(
        _ListenerSide(LISTENER, mode, transport._server_context(paths, mode, ()))
    )
    return transport


def tls_transport(live: CertificatePaths, **settings: object) -> TlsTransport:
    config = TlsConfig(
        certificate=str(live.certificate), private_key=str(live.private_key), **settings
    )  # type: ignore[arg-type]
    return with_listener(TlsTransport(config), live, config.mode)


def test_a_reload_gives_new_handshakes_the_new_certificate(
    ca: TestCa, live: CertificatePaths
) -> None:
    a, b = ca.issue("sip-a.example"), ca.issue("sip-b.example")
    install(a, live)
    transport = tls_transport(live)
    old_context = transport._listeners[0].context
    assert presented(old_context) == a.fingerprint
    assert [c.sha256_fingerprint for c in transport.loaded_certificates()] == [a.fingerprint]

    install(b, live)
    loaded = transport.reload_certificates()

    assert [c.sha256_fingerprint for c in loaded] == [b.fingerprint]
    assert loaded[0].subject == "CN=sip-b.example"
    assert loaded[0].path == str(live.certificate)
    assert loaded[0].not_after == b.x509.not_valid_after_utc.timestamp()
    assert transport.loaded_certificates() == loaded
    assert presented(transport._listeners[0].context) == b.fingerprint
    # The old context is untouched: connections made on it keep presenting A.
    assert presented(old_context) == a.fingerprint
    assert transport._listeners[0].address == LISTENER


def test_outbound_contexts_made_so_far_are_rebuilt(ca: TestCa, live: CertificatePaths) -> None:
    a, b = ca.issue("a"), ca.issue("b")
    install(a, live)
    bundle = live.certificate.with_name("trunk-ca.pem")
    shutil.copyfile(ca.certificate, bundle)
    transport = tls_transport(live, ca_bundles=(str(bundle),), system_ca_for_trunks=False)
    mutual = transport._client_context("mutual")  # presents our certificate to a trunk
    assert presented(mutual) == a.fingerprint

    install(b, live)
    transport.reload_certificates()

    assert set(transport._client_contexts) == {"mutual"}
    assert presented(transport._client_contexts["mutual"]) == b.fingerprint


@pytest.mark.parametrize(
    "breakage",
    ["mismatched key", "missing certificate", "certificate not PEM", "key not PEM", "expired"],
)
def test_a_bad_replacement_keeps_everything_and_names_the_file(
    ca: TestCa, live: CertificatePaths, breakage: str, tmp_path: Path
) -> None:
    a, b = ca.issue("a"), ca.issue("b")
    install(a, live)
    transport = tls_transport(live)
    listeners, clients = list(transport._listeners), dict(transport._client_contexts)
    before = transport.loaded_certificates()

    install(b, live)
    if breakage == "mismatched key":
        shutil.copyfile(a.key, live.private_key)  # B's certificate, A's key
        named, reason = live.private_key, "not the private key of"
    elif breakage == "missing certificate":
        live.certificate.unlink()
        named, reason = live.certificate, "does not exist"
    elif breakage == "certificate not PEM":
        live.certificate.write_bytes(b"this is not a certificate\n")
        named, reason = live.certificate, "not a usable certificate chain"
    elif breakage == "key not PEM":
        live.private_key.write_bytes(b"hunter2 secret-ish bytes\n")
        named, reason = live.private_key, "not the private key of"
    else:
        old = TestPki(tmp_path / "old").ca("Old CA")
        expired = old.issue(
            "expired",
            days=1,
            not_before=datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=3),
        )
        install(expired, live)
        named, reason = live.certificate, "the certificate expired on"

    with pytest.raises(ReloadError) as caught:
        transport.reload_certificates()

    message = str(caught.value)
    assert str(named) in message and reason in message, message
    for secret in key_lines(a) + key_lines(b) + ["hunter2", "PRIVATE KEY"]:
        assert secret not in message
    # All or nothing: the very same contexts and certificate as before.
    assert transport._listeners == listeners
    assert all(
        new.context is old.context for new, old in zip(transport._listeners, listeners, strict=True)
    )
    assert transport._client_contexts == clients
    assert transport.loaded_certificates() == before
    assert presented(transport._listeners[0].context) == a.fingerprint


def test_a_mutual_listener_reads_its_ca_bundle_again(ca: TestCa, live: CertificatePaths) -> None:
    install(ca.issue("gw"), live)
    bundle = live.certificate.with_name("vendor-ca.pem")
    shutil.copyfile(ca.certificate, bundle)
    transport = tls_transport(live, mode="mutual", ca_bundles=(str(bundle),))
    first = transport._listeners[0].context

    bundle.write_text("")  # an emptied bundle: start-up would refuse it, so does a reload
    with pytest.raises(ReloadError, match=r"vendor-ca\.pem holds no PEM certificate"):
        transport.reload_certificates()
    assert transport._listeners[0].context is first

    other = TestPki(live.certificate.parent.parent / "other").ca("Another Vendor CA")
    bundle.write_bytes(ca.certificate.read_bytes() + other.certificate.read_bytes())
    transport.reload_certificates()
    context = transport._listeners[0].context
    assert context is not first
    # The certificate request now names both CAs (RFC 8446 §4.2.4).
    names = SSL.Connection(context, None).get_client_ca_list()
    assert sorted(n.CN for n in names) == ["Another Vendor CA", "Reload CA"]


def test_a_key_others_may_read_is_warned_about_again_and_still_loaded(
    ca: TestCa, live: CertificatePaths, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = ca.issue("a"), ca.issue("b")
    install(a, live)
    transport = tls_transport(live)
    install(b, live)
    live.private_key.chmod(0o640)
    caplog.clear()

    transport.reload_certificates()

    assert presented(transport._listeners[0].context) == b.fingerprint
    assert any(
        r.levelname == "WARNING"
        and f"tls: private key {live.private_key} is readable by group or others (mode 640)"
        in r.getMessage()
        for r in caplog.records
    )


def test_the_generated_certificate_is_read_again_and_never_regenerated(
    tmp_path: Path, ca: TestCa
) -> None:
    class Host:
        state_dir = tmp_path / "state"

    from gateway.core.config import ListenSpec

    transport = TlsTransport(TlsConfig())
    assert transport.loaded_certificates() == ()
    paths = transport.certificate_paths(ListenSpec("tls", "127.0.0.1", 5061), Host())  # type: ignore[arg-type]
    with_listener(transport, paths, "server-only")
    generated = transport.loaded_certificates()[0].sha256_fingerprint

    assert transport.reload_certificates()[0].sha256_fingerprint == generated
    # An operator's pair copied over the generated files is taken up.
    other = ca.issue("replacement", hosts=["127.0.0.1"])
    install(other, paths)
    assert transport.reload_certificates()[0].sha256_fingerprint == other.fingerprint
    # Deleted: refused (deleting is how a restart regenerates it), the replacement kept.
    paths.certificate.unlink()
    with pytest.raises(ReloadError, match="does not exist"):
        transport.reload_certificates()
    assert presented(transport._listeners[0].context) == other.fingerprint


def test_wss_keeps_asking_browsers_for_no_certificate_after_a_reload(
    ca: TestCa, live: CertificatePaths
) -> None:
    a, b = ca.issue("a"), ca.issue("b")
    install(a, live)
    config = WssConfig(certificate=str(live.certificate), private_key=str(live.private_key))
    transport = with_listener(WssTransport(config), live, "encryption-only")
    install(b, live)

    transport.reload_certificates()

    context = transport._listeners[0].context
    assert presented(context) == b.fingerprint
    assert context.get_verify_mode() == SSL.VERIFY_NONE


def test_error_texts_hold_no_key_even_when_the_key_is_where_the_certificate_should_be(
    ca: TestCa, live: CertificatePaths
) -> None:
    a = ca.issue("a")
    install(a, live)
    transport = tls_transport(live)
    shutil.copyfile(a.key, live.certificate)
    with pytest.raises(ReloadError) as caught:
        transport.reload_certificates()
    assert str(live.certificate) in str(caught.value)
    for secret in [*key_lines(a), "PRIVATE KEY"]:
        assert secret not in str(caught.value)


def test_a_generated_certificate_that_cannot_be_made_names_the_directory_and_key(
    tmp_path: Path,
) -> None:
    """<state_dir>/tls the service may not make or write in: the listener's start stopped on
    "cannot listen on tls:127.0.0.1:5061: Permission denied", which read as the port's fault
    and named neither the directory nor the key."""
    from gateway.core.config import ListenSpec, user_name
    from gateway.core.gateway import listen_error

    class Host:
        state_dir = tmp_path / "state"

    Host.state_dir.mkdir()
    (Host.state_dir / "tls").write_text("")  # in the way: mkdir fails for every user
    spec = ListenSpec("tls", "127.0.0.1", 5061)
    for transport in (TlsTransport(TlsConfig()), WssTransport(WssConfig())):
        with pytest.raises(OSError) as caught:
            transport.certificate_paths(spec, Host())  # type: ignore[arg-type]
        # Raised through the core's frames only, as at a listener's start (not this test's).
        error = caught.value.with_traceback(caught.value.__traceback__.tb_next)  # type: ignore[union-attr]
        assert str(listen_error(spec, error)) == (
            f"cannot listen on tls:127.0.0.1:5061: [gateway] state_dir: the generated "
            f"certificate cannot be made in {Host.state_dir / 'tls'}: File exists (this user: "
            f"{user_name()}; or configure certificate and private_key in "
            f"[plugins.{transport.name}])"
        )
