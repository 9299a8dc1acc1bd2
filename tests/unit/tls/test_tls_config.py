"""[plugins.tls]: defaults, validation errors that name the key, per-listener and per-trunk
lookups, and start-up errors for unusable certificate files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from gateway.core.config import ConfigError, ListenSpec, from_mapping, user_name
from gateway.core.gateway import Gateway
from gateway.core.plugins import load_plugins
from gateway.plugins.transports.tls import TlsConfig, TlsTransport
from tests.interop.harness.pki import TestPki


def load(tls: dict[str, Any]) -> TlsConfig:
    config = from_mapping(
        {
            "sip": {"listen": ["tls:127.0.0.1:5061"]},
            "plugins": {"enable": ["udp", "tcp", "tls"], "tls": tls},
        },
        file="gw.toml",
    )
    plugins = load_plugins(config)
    tls_config = plugins.configs["tls"]
    assert isinstance(tls_config, TlsConfig)
    return tls_config


def test_defaults() -> None:
    config = load({})
    assert config.mode == "server-only"
    assert config.certificate is None and config.private_key is None
    assert config.ca_bundles == ()
    assert config.verify_peers is True
    assert config.handshake_timeout == 10.0
    assert config.tcp.max_connections_per_source == 32
    assert config.tcp.idle_timeout == 300.0
    assert config.tcp.connect_timeout == 10.0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"mode": "both"}, "[plugins.tls] mode: expected one of 'encryption-only'"),
        ({"mode": "mutual"}, "[plugins.tls] ca_bundles: mutual mode"),
        ({"certificate": "a.crt"}, "[plugins.tls] private_key: certificate and private_key"),
        ({"private_key": "a.key"}, "[plugins.tls] certificate: certificate and private_key"),
        ({"handshake_timeout": 0}, "handshake_timeout: expected a positive number"),
        ({"idle_timeout": -1}, "idle_timeout: expected a positive number"),
        ({"max_connections_per_source": 0}, "max_connections_per_source: expected 1 or more"),
        ({"ca_bundles": "ca.pem"}, "[plugins.tls] ca_bundles: expected a list of strings"),
        ({"peers": {"trunk": "x.example"}}, "peers: expected IP:PORT, got 'trunk'"),
        ({"peers": {"192.0.2.1:99999": "x.example"}}, "port 0-65535"),
        ({"peers": {"192.0.2.1:5061": " x"}}, "peers: entry '192.0.2.1:5061': expected a host"),
        ({"peer_modes": {"192.0.2.1:5061": "strict"}}, "peer_modes: entry '192.0.2.1:5061'"),
        ({"listener_modes": {"127.0.0.1:5061": "mutual"}}, "ca_bundles: mutual mode"),
        ({"cipher_list": "ALL"}, "[plugins.tls] cipher_list: unknown key"),
    ],
)
def test_invalid_tables_name_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(table)
    assert str(caught.value).startswith("gw.toml: [plugins.tls]")
    assert message in str(caught.value)


def test_modes_per_listener_and_per_trunk(tmp_path: Path) -> None:
    bundle = TestPki(tmp_path).ca("CA").certificate
    config = TlsConfig(
        mode="server-only",
        ca_bundles=(str(bundle),),
        listener_modes={"127.0.0.1:5062": "mutual", "[::1]:5061": "encryption-only"},
        peer_modes={"192.0.2.10:5061": "encryption-only"},
        peers={"192.0.2.20:5061": "sip.carrier.example"},
    )
    assert config.listener_mode(ListenSpec("tls", "127.0.0.1", 5061)) == "server-only"
    assert config.listener_mode(ListenSpec("tls", "127.0.0.1", 5062)) == "mutual"
    assert config.listener_mode(ListenSpec("tls", "0:0::1", 5061)) == "encryption-only"
    assert config.peer_mode(("192.0.2.10", 5061)) == "encryption-only"
    assert config.peer_mode(("192.0.2.10", 5062)) == "server-only"
    assert config.server_name(("192.0.2.20", 5061)) == "sip.carrier.example"
    assert config.server_name(("192.0.2.30", 5061)) == "192.0.2.30"
    assert config.server_name(("PBX.example", 5061)) == "pbx.example"  # a name: checked as is
    assert config.peer_mode(("pbx.example", 5061)) == "server-only"
    assert config.verifies("server-only") and config.verifies("mutual")
    assert not config.verifies("encryption-only")
    assert not TlsConfig(verify_peers=False).verifies("server-only")


def test_configured_certificate_files_are_checked_at_start_up(tmp_path: Path) -> None:
    pki = TestPki(tmp_path)
    ca = pki.ca("CA")
    one = ca.issue("one")
    two = ca.issue("two")
    # A file that is not there is the table's mistake: a config error naming the key.
    with pytest.raises(ConfigError, match=r"\[plugins.tls\] certificate: .*missing.crt does not"):
        load({"certificate": str(tmp_path / "missing.crt"), "private_key": str(one.key)})
    with pytest.raises(ConfigError, match=r"\[plugins.tls\] private_key: expected the path of"):
        load({"certificate": str(one.certificate), "private_key": ""})
    with pytest.raises(ConfigError, match=r"\[plugins.tls\] ca_bundles: .*nothere.pem does not"):
        load({"mode": "mutual", "ca_bundles": [str(tmp_path / "nothere.pem")]})
    # A file that is there but unusable: a config error naming the key too.
    with pytest.raises(
        ConfigError, match=r"\[plugins.tls\] private_key: .*two\.key: not the private key of .*one"
    ):
        load({"certificate": str(one.certificate), "private_key": str(two.key)})
    with pytest.raises(
        ConfigError, match=r"\[plugins.tls\] certificate: .*one\.key: not a usable certificate"
    ):
        load({"certificate": str(one.key), "private_key": str(one.key)})
    # A CA bundle without a PEM certificate: the key named, not only the file (a plugin error
    # at registration before), in any mode (server-only verifies trunks against it).
    for mode in ("mutual", "server-only"):
        with pytest.raises(
            ConfigError, match=r"\[plugins.tls\] ca_bundles: .*one\.key holds no PEM certificate"
        ):
            load({"mode": mode, "ca_bundles": [str(ca.certificate), str(one.key)]})
    # Error messages never carry key material.
    with pytest.raises(ConfigError) as caught:
        load({"certificate": str(one.certificate), "private_key": str(two.key)})
    assert "PRIVATE KEY" not in str(caught.value)
    good = load({"certificate": str(one.certificate), "private_key": str(one.key)})
    assert TlsTransport(good).secure is True


def test_a_group_readable_private_key_is_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki = TestPki(tmp_path)
    issued = pki.ca("CA").issue("server")
    issued.key.chmod(0o640)
    TlsTransport(TlsConfig(certificate=str(issued.certificate), private_key=str(issued.key)))
    assert any("readable by group or others (mode 640)" in r.getMessage() for r in caplog.records)


def test_a_listener_mode_for_no_tls_listener_is_a_config_error(tmp_path: Path) -> None:
    # A mistyped address would leave the listener meant to be mutual in server-only mode.
    def gateway_with(listener_modes: dict[str, str]) -> Gateway:
        config = from_mapping(
            {
                "gateway": {"state_dir": str(tmp_path / "state")},
                "sip": {"listen": ["udp:127.0.0.1:5060", "tls:127.0.0.1:5061", "tls:[::1]:5061"]},
                "plugins": {
                    "enable": ["udp", "tls"],
                    "tls": {"listener_modes": listener_modes},
                },
            },
            file="voipgw.toml",
        )
        return Gateway(config, load_plugins(config))

    gateway_with({"127.0.0.1:5061": "encryption-only", "[0:0::1]:5061": "encryption-only"}).check()
    with pytest.raises(ConfigError) as info:
        gateway_with({"127.0.0.1:5062": "encryption-only"}).check()
    error = info.value
    assert (error.file, error.table, error.key) == ("voipgw.toml", "plugins.tls", "listener_modes")
    assert "'127.0.0.1:5062' is no tls listener" in error.message
    assert "tls:127.0.0.1:5061" in error.message
    with pytest.raises(ConfigError):
        gateway_with({"127.0.0.1:5060": "encryption-only"}).check()  # the udp listener


def test_an_encrypted_private_key_is_a_config_error_not_a_prompt(tmp_path: Path) -> None:
    """OpenSSL asked for the passphrase on the terminal (twice), which a service has not."""
    from cryptography.hazmat.primitives import serialization

    one = TestPki(tmp_path).ca("CA").issue("one")
    key = serialization.load_pem_private_key(one.key.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(ConfigError) as caught:
        load({"certificate": str(one.certificate), "private_key": str(encrypted)})
    assert str(caught.value) == (
        f"gw.toml: [plugins.tls] private_key: {encrypted}: the key is encrypted; give an "
        "unencrypted key file (mode 600)"
    )


def test_an_encrypted_key_after_a_long_chain_in_one_file_is_a_config_error_not_a_prompt(
    tmp_path: Path,
) -> None:
    """``cat fullchain.pem privkey.pem > combined.pem`` (HAProxy's layout), named by both keys:
    the key starts past the first 4 KiB when the chain is long (RSA intermediates), and OpenSSL
    asked for its passphrase on the terminal ("Enter PEM pass phrase:"), at start-up and at each
    SIGHUP, and read it from stdin without one."""
    from cryptography.hazmat.primitives import serialization

    pki = TestPki(tmp_path)
    one = pki.ca("CA").issue("one")
    chain = [one.certificate.read_bytes()]
    chain += [pki.ca(f"Intermediate {n}", rsa_key=True).certificate.read_bytes() for n in range(4)]
    key = serialization.load_pem_private_key(one.key.read_bytes(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.BestAvailableEncryption(b"secret"),
    )
    combined = tmp_path / "combined.pem"
    combined.write_bytes(b"".join(chain) + encrypted)
    assert combined.read_bytes().index(b"ENCRYPTED") > 4096
    with pytest.raises(ConfigError) as caught:
        load({"certificate": str(combined), "private_key": str(combined)})
    assert str(caught.value) == (
        f"gw.toml: [plugins.tls] private_key: {combined}: the key is encrypted; give an "
        "unencrypted key file (mode 600)"
    )


def test_an_unreadable_private_key_is_said_to_be_unreadable_not_another_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key file of mode 600 owned by the service's user, read by another user: OpenSSL said
    "not the private key of" the certificate, which sent the operator after the wrong file."""
    pki = TestPki(tmp_path)
    one = pki.ca("CA").issue("one")
    one.key.chmod(0o000)
    if os.geteuid() == 0:
        # root reads any file: the kernel's answer to another user, given to this one.
        opened = Path.open

        def open_as_another_user(path: Path, *args: Any, **kwargs: Any) -> Any:
            if path == one.key:
                raise PermissionError(13, "Permission denied", str(path))
            return opened(path, *args, **kwargs)

        monkeypatch.setattr(Path, "open", open_as_another_user)
    with pytest.raises(ConfigError) as caught:
        load({"certificate": str(one.certificate), "private_key": str(one.key)})
    assert (caught.value.table, caught.value.key) == ("plugins.tls", "private_key")
    assert caught.value.message.startswith(
        f"{one.key} cannot be read by this user ({user_name()}): Permission denied"
    )
    assert "not the private key" not in caught.value.message
