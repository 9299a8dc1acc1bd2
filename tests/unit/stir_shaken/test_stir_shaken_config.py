"""``[plugins.stir_shaken]``: config errors name the file, the table and the key (never the
private key's bytes); signing picks the attestation (RFC 8588 §4) and keeps origid per call."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.core.config import ConfigError, structure
from gateway.core.interfaces import TrunkCall
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
