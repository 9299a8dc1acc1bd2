"""``[plugins.stir_shaken]``: config errors name the file, the table and the key (never the
private key's bytes); signing picks the attestation (RFC 8588 §4) and keeps origid per call."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.core import cli
from gateway.core import gateway as gateway_mod
from gateway.core.config import ConfigError, from_toml, structure
from gateway.core.gateway import Gateway
from gateway.core.interfaces import TrunkCall
from gateway.core.plugins import load_plugins
from gateway.plugins.stir_shaken import StirShaken, StirShakenConfig
from gateway.testing.sti_pki import make_pki, read_identity

URL = "https://certs.example.net/shaken.pem"


def config(**table: object) -> StirShakenConfig:
    return structure(StirShakenConfig, table, file="gw.toml", table_name="plugins.stir_shaken")


def refused(**table: object) -> str:
    with pytest.raises(ConfigError) as caught:
        config(**table)
    message = str(caught.value)
    assert message.startswith("gw.toml: [plugins.stir_shaken]"), message
    return message


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    anchors, key, _ = make_pki().write(tmp_path)
    return anchors, key


def test_signing_needs_an_https_url_and_a_p256_key(
    tmp_path: Path, files: tuple[Path, Path]
) -> None:
    _, key = files
    assert "certificate_url" in refused(sign_trunks=["carrier"], private_key=str(key))
    assert "certificate_url" in refused(
        sign_trunks=["carrier"], private_key=str(key), certificate_url="http://x/y.pem"
    )
    assert "private_key" in refused(sign_trunks=["carrier"], certificate_url=URL)
    missing = refused(sign_trunks=["carrier"], certificate_url=URL, private_key="/nonexistent/k")
    assert "private_key" in missing and "/nonexistent/k" in missing
    rsa_key = tmp_path / "rsa.key"
    secret = rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    rsa_key.write_bytes(secret)
    wrong = refused(sign_trunks=["carrier"], certificate_url=URL, private_key=str(rsa_key))
    assert "P-256" in wrong and str(rsa_key) in wrong
    garbage = tmp_path / "garbage.key"
    garbage.write_bytes(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n")
    message = refused(sign_trunks=["carrier"], certificate_url=URL, private_key=str(garbage))
    assert "not a PEM private key" in message and "c2VjcmV0" not in message
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"),
        )
    )
    assert "encrypted" in refused(
        sign_trunks=["carrier"], certificate_url=URL, private_key=str(encrypted)
    )


def test_verification_needs_trust_anchors(tmp_path: Path, files: tuple[Path, Path]) -> None:
    assert "trust_anchors" in refused(verify_trunks=["carrier"])
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    assert "trust_anchors" in refused(verify_trunks=["carrier"], trust_anchors=str(empty))
    assert "fetch_timeout" in refused(fetch_timeout=0)
    assert "account_attestation" in refused(account_attestation={"alice": "D"})
    assert "on_failure" in refused(on_failure="drop")
    anchors, _ = files
    assert config(verify_trunks=["carrier"], trust_anchors=str(anchors)).freshness == 60.0


def call(**fields: object) -> TrunkCall:
    base: dict[str, object] = {
        "call_id": "c1@x",
        "trunk": "carrier",
        "caller_kind": "account",
        "caller_name": "alice",
        "calling": ("+12025550123",),
        "called": "+12025550199",
        "own_number": True,
        "at": 1_800_000_000.0,
    }
    return TrunkCall(**{**base, **fields})  # type: ignore[arg-type]


def test_attestation_and_origid(files: tuple[Path, Path]) -> None:
    _, key = files
    service = StirShaken(
        config(
            sign_trunks=["carrier"],
            certificate_url=URL,
            private_key=str(key),
            account_attestation={"pbx": "A"},
        )
    )
    public = serialization.load_pem_private_key(key.read_bytes(), None).public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)

    def claims(**fields: object) -> dict[str, object] | None:
        outcome = service.sign(call(**fields))
        if outcome is None:
            return None
        ((name, value),) = outcome.headers
        assert name == "Identity"
        return read_identity(value, public)[1]

    own = claims()
    assert own is not None
    assert own["attest"] == "A"
    assert own["orig"] == {"tn": "12025550123"} and own["dest"] == {"tn": ["12025550199"]}
    assert own["iat"] == 1_800_000_000
    assert claims(own_number=False)["attest"] == "B"  # type: ignore[index]
    assert claims(own_number=False, caller_name="pbx")["attest"] == "A"  # type: ignore[index]
    # origid: the same for every INVITE of a call, another for another call.
    assert claims()["origid"] == own["origid"]  # type: ignore[index]
    assert claims(call_id="c2@x")["origid"] != own["origid"]  # type: ignore[index]
    # Transit calls are not ours to vouch for; nothing to sign without numbers or elsewhere.
    assert claims(caller_kind="trunk", caller_name="other") is None
    assert claims(calling=("anonymous",)) is None
    assert claims(calling=()) is None
    assert claims(trunk="another") is None
    transit = StirShaken(
        config(
            sign_trunks=["carrier"], certificate_url=URL, private_key=str(key), sign_transit=True
        )
    )
    outcome = transit.sign(call(caller_kind="trunk", caller_name="other"))
    assert outcome is not None and "attestation C" in outcome.described


def test_certificate_hosts_are_host_names_or_domains() -> None:
    assert config(certificate_hosts=["Certs.Example.NET.", ".sti.example"]).certificate_hosts == (
        "certs.example.net",
        ".sti.example",
    )
    for bad in ("https://certs.example.net", "*.example.net", "certs.example.net:443", ""):
        message = refused(certificate_hosts=[bad])
        assert "certificate_hosts" in message and repr(bad) in message


def test_revocation_is_checked_by_default_and_passes_when_the_crl_is_unavailable() -> None:
    default = config()
    assert (default.check_revocation, default.revocation_unavailable) == (True, "pass")
    assert "revocation_unavailable" in refused(revocation_unavailable="ignore")
    assert "check_revocation" in refused(check_revocation="sometimes")
    assert config(check_revocation=False, revocation_unavailable="fail").check_revocation is False


def test_verification_from_any_host_is_warned_of_by_check_config_and_run(
    tmp_path: Path,
    files: tuple[Path, Path],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """verify_trunks with certificate_hosts = [] (the default: any host) works, as it always
    did, but lets a verified trunk's callers choose where the gateway connects and fill its
    certificate fetches: check-config says so as a warning (exit 0: a default must not fail a
    deployment pipeline) and run at WARNING, naming the key and the remedy. Listed hosts, or
    no verification: nothing said."""
    anchors, _ = files
    note = (
        "certificate_hosts: empty, so a trunk in verify_trunks chooses where the gateway "
        "fetches certificates: each Identity's x5u may name any host, internal ones too, and a "
        "peer naming a new unreachable URL in each call holds its trunk's share of the 100 "
        "certificate fetches that may run at once (all of them for the only trunk in "
        "verify_trunks; a call from that trunk whose certificate is not cached then fails, 436 "
        'under on_failure = "reject"); list the STI-CR hosts of your peers\' certificates and the '
        'STI-PA\'s CRL host, e.g. certificate_hosts = [".carrier.example", "crl.sti-pa.example"]'
    )
    verifying = {"verify_trunks": ["carrier"], "trust_anchors": str(anchors)}
    assert config(**verifying).config_notes() == [note]
    assert config(**verifying, certificate_hosts=[".carrier.example"]).config_notes() == []
    # No verification, nothing of certificate_hosts (the plugin's idleness is a note of its
    # own: test_enabled_without_trunks_is_warned_of_by_check_config_and_run).
    assert not [n for n in config().config_notes() if n.startswith("certificate_hosts")]

    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        '[plugins]\nenable = ["udp", "stir_shaken"]\n'
        f'[plugins.stir_shaken]\nverify_trunks = ["carrier"]\ntrust_anchors = "{anchors}"\n'
        '[[trunks]]\nname = "carrier"\naddress = "udp:127.0.0.1:5090"\n'
    )
    code = cli.main(["check-config", str(path)])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_OK, err
    assert err.splitlines() == [f"voipgw: warning: {path}: [plugins.stir_shaken] {note}"]
    assert out.startswith(f"{path}: OK")

    class Opened(Exception):
        pass

    def open_store(*args: object, **kwargs: object) -> None:
        raise Opened

    loaded = from_toml(path)
    built = Gateway(loaded, load_plugins(loaded))
    monkeypatch.setattr(gateway_mod, "open_store", open_store)
    caplog.set_level(logging.WARNING)
    with pytest.raises(Opened):
        trio.run(built.serve)
    said = [
        (r.name, r.levelno, r.getMessage())
        for r in caplog.records
        if "certificate_hosts" in r.getMessage()
    ]
    assert said == [
        (
            "gateway.plugins.stir_shaken",
            logging.WARNING,
            f"configuration: {path}: [plugins.stir_shaken] {note}",
        )
    ]


def test_enabled_without_trunks_is_warned_of_by_check_config_and_run(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The plugin enabled with neither sign_trunks nor verify_trunks does nothing for any
    call: check-config says so as a warning (exit 0: a plugin enabled ahead of its trunks must
    not fail a deployment pipeline), run at WARNING in its configuration line, and, as before,
    in its own line at start-up (log watchers may match it). On main check-config said
    nothing, and run only the second line."""
    note = (
        "sign_trunks: empty, and so is verify_trunks: the plugin is enabled but signs and "
        "verifies no call; list the trunks whose INVITEs it signs (sign_trunks) and those whose "
        'Identity it verifies (verify_trunks), or take "stir_shaken" out of [plugins] enable'
    )
    assert config().config_notes() == [note]
    anchors, _, _ = make_pki().write(tmp_path)
    assert note not in config(verify_trunks=["carrier"], trust_anchors=str(anchors)).config_notes()

    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        '[plugins]\nenable = ["udp", "stir_shaken"]\n'
    )
    code = cli.main(["check-config", str(path)])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_OK, err
    assert f"voipgw: warning: {path}: [plugins.stir_shaken] {note}" in err.splitlines()
    assert out.startswith(f"{path}: OK")

    class Opened(Exception):
        pass

    def open_store(*args: object, **kwargs: object) -> None:
        raise Opened

    caplog.clear()  # check-config's own (its register hook's line among them)
    caplog.set_level(logging.WARNING)
    loaded = from_toml(path)
    built = Gateway(loaded, load_plugins(loaded))
    monkeypatch.setattr(gateway_mod, "open_store", open_store)
    with pytest.raises(Opened):
        trio.run(built.serve)
    said = [
        (r.name, r.levelno, r.getMessage())
        for r in caplog.records
        if "sign_trunks" in r.getMessage()
    ]
    assert sorted(said) == [
        (
            "gateway.plugins.stir_shaken",
            logging.WARNING,
            f"configuration: {path}: [plugins.stir_shaken] {note}",
        ),
        (
            "gateway.plugins.stir_shaken",
            logging.WARNING,
            "stir_shaken: enabled, but neither sign_trunks nor verify_trunks is set",
        ),
    ]
