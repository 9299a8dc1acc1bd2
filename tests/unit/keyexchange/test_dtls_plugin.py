"""The ``dtls`` plugin: its entry point, ``[plugins.dtls]``, what it registers, the lazily made
certificate, and the sans-IO rule for its modules."""

from __future__ import annotations

import ast
import datetime
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from gateway.core.config import ConfigError, from_mapping
from gateway.core.interfaces import KeysReady
from gateway.core.plugins import load_plugins
from gateway.plugins.keyexchange import dtls_srtp
from gateway.plugins.keyexchange.dtls_certificates import certificate_digest, longest_max_age_days
from gateway.plugins.keyexchange.dtls_srtp import (
    DEFAULT_PROFILES,
    DtlsConfig,
    DtlsKeyExchange,
    DtlsNegotiation,
    parse_dtls_attributes_untrusted,
)

ROOT = Path(__file__).parents[3]


def load(tmp_path: Path, **table: object) -> DtlsKeyExchange:
    plugins_table: dict[str, object] = {"enable": ["dtls"]}
    plugins_table["dtls"] = {"state_dir": str(tmp_path), **table}
    config = from_mapping({"plugins": plugins_table})
    plugins = load_plugins(config, extra=[("dtls", dtls_srtp)], installed={})
    exchange = plugins.key_exchanges.get("dtls")
    assert isinstance(exchange, DtlsKeyExchange)
    assert plugins.registered_by("dtls") == {"key_exchanges": ["dtls"]}
    return exchange


def test_entry_point_is_declared_like_any_plugin() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry_points = project["project"]["entry-points"]["voipgw.plugins"]
    assert entry_points["dtls"] == "gateway.plugins.keyexchange.dtls_srtp"


def test_registers_a_media_path_exchange_with_the_defaults(tmp_path: Path) -> None:
    exchange = load(tmp_path)
    assert exchange.name == "dtls" and exchange.media_path is True
    assert [profile.name for profile in exchange.profiles] == list(DEFAULT_PROFILES)
    assert exchange.timing.handshake_timeout == 20.0 and exchange.mtu == 1200
    assert DtlsConfig().state_dir == "./voipgw-state"
    assert DtlsConfig().certificate_max_age_days == 30


def test_the_table_sets_profiles_timeout_and_mtu(tmp_path: Path) -> None:
    exchange = load(tmp_path, profiles=["SRTP_AES128_CM_SHA1_80"], handshake_timeout=7.5, mtu=1400)
    assert [profile.suite for profile in exchange.profiles] == ["AES_CM_128_HMAC_SHA1_80"]
    assert exchange.timing.handshake_timeout == 7.5 and exchange.mtu == 1400


def test_sdp_address_only_is_off_by_default_and_reaches_every_negotiation(tmp_path: Path) -> None:
    # Off by default (upgrade rule: a phone behind a NAT sends from another address than its
    # SDP's); on, the call's handshake task reads it from each stream's negotiation, the RTCP
    # port's included (docs/media_security.md, "Forged handshakes").
    assert load(tmp_path).offer(suites=[], secure_signalling=False).sdp_address_only is False
    exchange = load(tmp_path, sdp_address_only=True)
    offer = exchange.offer(suites=[], secure_signalling=False)
    assert offer.sdp_address_only is True
    answer = exchange.answer(offer.local_sdp_attributes(), suites=[], secure_signalling=False)
    assert answer is not None and answer.sdp_address_only is True
    rtcp = answer.rtcp_component()
    assert rtcp is not None and rtcp.sdp_address_only is True


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"sdp_address_only": "yes"}, "sdp_address_only"),
        ({"profiles": ["SRTP_AES256_CM_SHA1_80"]}, "unknown profile 'SRTP_AES256_CM_SHA1_80'"),
        ({"profiles": []}, "at least one profile"),
        ({"profiles": ["SRTP_AES128_CM_SHA1_80"] * 2}, "listed twice"),
        ({"handshake_timeout": 0}, "handshake_timeout: expected a positive number"),
        ({"certificate_max_age_days": 0}, "certificate_max_age_days: expected 1 or more"),
        (
            {"certificate_max_age_days": 10**9},
            "cannot be written, RFC 5280 §4.1.2.5), got 1000000000",
        ),
        ({"certificate_max_age_days": 3_000_000}, "certificate_max_age_days: expected 1 to "),
        ({"mtu": 100}, "mtu: expected 256 to 65507"),
        ({"colour": "blue"}, "unknown key"),
    ],
)
def test_bad_settings_name_the_table_and_key(
    tmp_path: Path, table: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=r"\[plugins\.dtls\]") as info:
        load(tmp_path, **table)
    assert message in str(info.value)


def test_the_longest_max_age_still_makes_a_certificate(tmp_path: Path) -> None:
    """The bound is the last day a certificate can be written, not a guess: at it the first
    offer makes one, ending by 9999-12-31."""
    now = datetime.datetime.now(datetime.UTC)
    exchange = load(tmp_path, certificate_max_age_days=longest_max_age_days(now) - 1)
    exchange.offer(suites=[], secure_signalling=False)
    loaded = x509.load_pem_x509_certificate((tmp_path / "dtls" / "certificate.pem").read_bytes())
    assert loaded.not_valid_after_utc.year == 9999


def test_the_certificate_is_made_at_first_use_not_at_start_up(tmp_path: Path) -> None:
    exchange = load(tmp_path, certificate_max_age_days=10)
    assert not (tmp_path / "dtls").exists()  # voipgw check-config writes nothing
    offer = exchange.offer(suites=[], secure_signalling=False)
    certificate = tmp_path / "dtls" / "certificate.pem"
    assert certificate.is_file() and (tmp_path / "dtls" / "private_key.pem").is_file()
    (fingerprint,) = parse_dtls_attributes_untrusted(offer.local_sdp_attributes()).fingerprints
    loaded = x509.load_pem_x509_certificate(certificate.read_bytes())
    der = loaded.public_bytes(serialization.Encoding.DER)
    assert fingerprint.digest == certificate_digest(der, "sha-256")
    validity = loaded.not_valid_after_utc - loaded.not_valid_before_utc
    assert validity.days == 10 + 30  # max age plus the margin (and the hour of backdating)


def test_two_registered_exchanges_handshake(tmp_path: Path) -> None:
    ours, theirs = load(tmp_path / "a"), load(tmp_path / "b")
    offerer = ours.offer(suites=[], secure_signalling=False)
    answerer = theirs.answer(offerer.local_sdp_attributes(), suites=[], secure_signalling=False)
    assert isinstance(answerer, DtlsNegotiation)
    offerer.remote_sdp_attributes(answerer.local_sdp_attributes())
    assert offerer.tls_id != answerer.tls_id  # from the OS's CSPRNG
    for _ in range(4):
        for sender, receiver in ((answerer, offerer), (offerer, answerer)):
            for datagram in sender.packets_to_send(now=0.0):
                receiver.receive_packet(datagram, now=0.0)
    assert isinstance(offerer.next_event(), KeysReady)
    assert isinstance(answerer.next_event(), KeysReady)


FORBIDDEN = {"trio", "socket", "time", "random", "asyncio", "threading", "select", "secrets"}


@pytest.mark.parametrize("module", ["dtls_srtp.py", "dtls_certificates.py"])
def test_the_modules_import_no_io_framework_or_clock(module: str) -> None:
    # Sans-IO: time comes in as ``now`` and the wall clock of certificate rotation is injected.
    # ``os`` is imported only for os.urandom (registration) and the certificate files.
    path = ROOT / "gateway" / "plugins" / "keyexchange" / module
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    assert "OpenSSL" in roots or "cryptography" in roots
    assert not roots & FORBIDDEN
