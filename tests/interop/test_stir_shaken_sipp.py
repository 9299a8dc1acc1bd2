"""STIR/SHAKEN through ``voipgw run`` between sipp peers, the signer's certificate served over
real HTTPS on 127.0.0.1 (RFC 8224, RFC 8588, ATIS-1000074).

- Verification: a carrier (sipp on 127.0.0.2, calls/uac_call_identity.xml) calls alice's DID
  with an Identity header this test signed (gateway.testing.sti_pki, not the plugin's code);
  the x5u URL points at a Python HTTPS server whose certificate a test CA issued
  (``fetch_ca_file``); the STI chain ends at a test root (``trust_anchors``). Alice's phone
  (sipp, calls/uas_answer_verstat.xml) fails its run unless the From carries
  ``verstat=TN-Validation-Passed``; ``voipgw calls`` says "caller number verified". With
  ``missing_identity = "reject"`` the carrier's call without one (calls/uac_refused.xml) gets
  428 Use Identity Header (RFC 8224 §6.2.2) and the phone nothing.
- Signing: alice (sipp) calls out through a carrier (sipp, calls/uas_answer_identity.xml) that
  fails its run without a well-formed SHAKEN Identity; the test then verifies the captured
  header's signature with the signer's public key and reads its claims.

The scenarios are also run against each other without the gateway, so that the phone's and the
carrier's checks are shown to fail when what they check is missing.
"""

from __future__ import annotations

import os
import re
import socket
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from gateway.testing.sti_pki import make_identity, make_pki, read_identity
from tests.interop.harness import GatewayProcess, SippUas, run_sipp_uac
from tests.interop.harness.certificate_server import certificate_server
from tests.interop.sipp_calls import (
    ACCOUNTS,
    CALLER_ID,
    DID,
    TRUNK_IP,
    account_call,
    final_status_line,
    inbound_trunk,
    outbound_trunk,
    register,
)

pytestmark = pytest.mark.interop

CARRIER_CALLER = "+4940777"
OUR_X5U = "https://certs.voipgw.example/shaken.pem"


def plugin_env(workdir: Path) -> dict[str, str]:
    """The environment of a ``voipgw run`` that finds the ``stir_shaken`` entry point: in a
    venv installed before the plugin existed, a distribution of one entry point on PYTHONPATH
    declares it (the module itself is imported from the working tree, like the rest)."""
    if entry_points(group="voipgw.plugins", name="stir_shaken"):
        return {}
    shim = workdir / "entry-points"
    info = shim / "voipgw_stir_shaken_shim-0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: voipgw-stir-shaken-shim\nVersion: 0\n"
    )
    (info / "entry_points.txt").write_text(
        "[voipgw.plugins]\nstir_shaken = gateway.plugins.stir_shaken\n"
    )
    return {"PYTHONPATH": os.pathsep.join(filter(None, [str(shim), os.environ.get("PYTHONPATH")]))}


def stir_shaken_toml(table: dict[str, str | bool | list[str]]) -> str:
    lines = ["[plugins.stir_shaken]"]
    for key, value in table.items():
        if isinstance(value, bool):
            shown = "true" if value else "false"
        elif isinstance(value, list):
            shown = "[" + ", ".join(f'"{v}"' for v in value) + "]"
        else:
            shown = f'"{value}"'
        lines.append(f"{key} = {shown}")
    return "\n".join(lines) + "\n"


ENABLE = {"plugins": {"enable": ["udp", "tcp", "stir_shaken"]}}


def test_a_carriers_signed_call_reaches_the_phone_as_tn_validation_passed(tmp_path: Path) -> None:
    pki = make_pki()
    anchors, _, _ = pki.write(tmp_path)
    with certificate_server(pki.chain_pem(), tmp_path) as (x5u, https_ca, requests):
        toml = inbound_trunk() + stir_shaken_toml(
            {
                "verify_trunks": ["pbx"],
                "trust_anchors": str(anchors),
                # Where the x5u is served: without a list, run warns (any host).
                "certificate_hosts": ["127.0.0.1"],
                "fetch_ca_file": str(https_ca),
                # This PKI names no CRL (test_stir_shaken_crl.py is about revocation): checked,
                # the call would pass marked "revocation not checked".
                "check_revocation": False,
            }
        )
        value = make_identity(
            pki.signer_key, x5u, orig=CARRIER_CALLER[1:], dest=DID[1:], iat=int(time.time())
        )
        with GatewayProcess(
            tmp_path, accounts=ACCOUNTS, settings=ENABLE, extra_toml=toml, env=plugin_env(tmp_path)
        ) as gw:
            alice = SippUas("calls/uas_answer_verstat.xml", workdir=tmp_path)
            register(gw, tmp_path, "udp", alice.port)
            with alice:
                carrier = run_sipp_uac(
                    "calls/uac_call_identity.xml",
                    gw.address,
                    workdir=tmp_path,
                    service=DID,
                    caller=CARRIER_CALLER,
                    local_ip=TRUNK_IP,
                    keys={"identity": value},
                )
                carrier.check()
                phone = alice.wait(timeout=10)
                phone.check()  # From carried verstat=TN-Validation-Passed
            calls = gw.cli_until(
                lambda out: "caller number verified" in out, "calls", "--recent", "5"
            )
            log = gw.log_text()
    (invite,) = phone.received("INVITE ")
    assert re.search(
        rf"^From: .*sip:{re.escape(CARRIER_CALLER)};verstat=TN-Validation-Passed@", invite, re.M
    ), invite
    assert "caller number verified (attestation A)" in calls
    assert requests == ["/shaken.pem"]
    assert "Traceback" not in log


def test_an_accounts_call_to_the_carrier_is_signed(tmp_path: Path) -> None:
    pki = make_pki()
    _, key, _ = pki.write(tmp_path)
    with SippUas("calls/uas_answer_identity.xml", workdir=tmp_path) as carrier:
        toml = outbound_trunk(carrier) + stir_shaken_toml(
            {"sign_trunks": ["carrier"], "certificate_url": OUR_X5U, "private_key": str(key)}
        )
        with GatewayProcess(
            tmp_path, accounts=ACCOUNTS, settings=ENABLE, extra_toml=toml, env=plugin_env(tmp_path)
        ) as gw:
            caller = account_call("uac_call_auth.xml", gw, tmp_path, service="+4989555")
            caller.check()
            answered = carrier.wait(timeout=10)
            answered.check()  # a well-formed SHAKEN Identity arrived
            log = gw.log_text()
    (invite,) = answered.received("INVITE ")
    match = re.search(r"^Identity:\s*(\S+)\s*$", invite, re.M)
    assert match is not None, invite
    header, claims = read_identity(match[1], pki.signer_key.public_key())
    assert header["x5u"] == OUR_X5U and header["ppt"] == "shaken"
    # alice has no DID on this carrier: presented by its caller_id, attestation B.
    assert claims["attest"] == "B"
    assert claims["orig"] == {"tn": CALLER_ID[1:]}
    assert claims["dest"] == {"tn": ["4989555"]}
    assert "BEGIN PRIVATE KEY" not in log and "Traceback" not in log


def test_a_verifier_that_requires_an_identity_answers_a_call_without_one_428(
    tmp_path: Path,
) -> None:
    pki = make_pki()
    anchors, _, _ = pki.write(tmp_path)
    toml = inbound_trunk() + stir_shaken_toml(
        {
            "verify_trunks": ["pbx"],
            "trust_anchors": str(anchors),
            "certificate_hosts": ["127.0.0.1"],
            "missing_identity": "reject",
        }
    )
    with GatewayProcess(
        tmp_path, accounts=ACCOUNTS, settings=ENABLE, extra_toml=toml, env=plugin_env(tmp_path)
    ) as gw:
        alice = SippUas("calls/uas_answer_verstat.xml", workdir=tmp_path, timeout=5)
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            carrier = run_sipp_uac(
                "calls/uac_refused.xml",
                gw.address,
                workdir=tmp_path,
                service=DID,
                caller=CARRIER_CALLER,
                local_ip=TRUNK_IP,
            )
            carrier.check()
        # Stopped now, not at its own timeout: the 428 ended the call, and the gateway's INVITE
        # would have reached alice before it, so her trace shows whether one came.
        phone = alice.result()
        calls = gw.cli_until(lambda out: "call refused" in out, "calls", "--recent", "5")
        log = gw.log_text()
    assert final_status_line(carrier).startswith("SIP/2.0 428 Use Identity Header"), carrier
    assert phone.received("INVITE ") == []
    assert "call refused: no Identity to verify (no Identity)" in calls
    assert "Traceback" not in log


def test_a_cancel_while_the_certificate_server_does_not_answer_is_answered_487_at_once(
    tmp_path: Path,
) -> None:
    """RFC 3261 §9.2: the carrier CANCELs its signed call while the gateway waits for the
    signer's certificate from a server that takes the connection and never answers
    (``fetch_timeout`` 60 s): 200 to the CANCEL and 487 to the INVITE within sipp's run (the
    487 waited for the whole fetch_timeout, and the phone was rung then, before session 38),
    nobody rung."""
    pki = make_pki()
    anchors, _, _ = pki.write(tmp_path)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the TCP handshake; TLS gets no answer
        x5u = f"https://127.0.0.1:{silent.getsockname()[1]}/shaken.pem"
        toml = inbound_trunk() + stir_shaken_toml(
            {
                "verify_trunks": ["pbx"],
                "trust_anchors": str(anchors),
                "certificate_hosts": ["127.0.0.1"],
                "check_revocation": False,
            }
        ).replace("[plugins.stir_shaken]\n", "[plugins.stir_shaken]\nfetch_timeout = 60.0\n")
        value = make_identity(
            pki.signer_key, x5u, orig=CARRIER_CALLER[1:], dest=DID[1:], iat=int(time.time())
        )
        with GatewayProcess(
            tmp_path, accounts=ACCOUNTS, settings=ENABLE, extra_toml=toml, env=plugin_env(tmp_path)
        ) as gw:
            alice = SippUas("calls/uas_answer_verstat.xml", workdir=tmp_path, timeout=5)
            register(gw, tmp_path, "udp", alice.port)
            with alice:
                carrier = run_sipp_uac(
                    "calls/uac_cancel_identity.xml",
                    gw.address,
                    workdir=tmp_path,
                    service=DID,
                    caller=CARRIER_CALLER,
                    local_ip=TRUNK_IP,
                    keys={"identity": value},
                    timeout=10,
                )
                carrier.check()  # 200 and 487 (sipp gives up at 10 s)
            phone = alice.result()
            calls = gw.cli_until(lambda out: "cancelled by caller" in out, "calls", "--recent", "5")
            log = gw.log_text()
    assert phone.received("INVITE ") == []
    assert "cancelled by caller" in calls
    assert "Traceback" not in log


def test_the_verstat_phone_fails_a_call_without_verstat(tmp_path: Path) -> None:
    """Without the gateway the From has no verstat: the phone's check must fail."""
    with SippUas("calls/uas_answer_verstat.xml", workdir=tmp_path, timeout=5) as phone:
        run_sipp_uac(
            "calls/uac_call_identity.xml",
            phone.address,
            workdir=tmp_path,
            service=DID,
            caller=CARRIER_CALLER,
            keys={"identity": "a.b.c;info=<https://x/y>;alg=ES256;ppt=shaken"},
            timeout=4,
        )
        result = phone.wait(timeout=10)
    assert not result.ok
    assert "verstat" in result.error_log.read_text()


def test_the_identity_carrier_takes_a_shaken_identity_and_fails_without_one(
    tmp_path: Path,
) -> None:
    pki = make_pki()
    value = make_identity(pki.signer_key, OUR_X5U, orig="1", dest="2", iat=int(time.time()))
    with SippUas("calls/uas_answer_identity.xml", workdir=tmp_path) as carrier:
        signed = run_sipp_uac(
            "calls/uac_call_identity.xml",
            carrier.address,
            workdir=tmp_path,
            service="+4989555",
            keys={"identity": value},
        )
        signed.check()
        carrier.wait(timeout=10).check()
    with SippUas("calls/uas_answer_identity.xml", workdir=tmp_path / "plain", timeout=5) as plain:
        run_sipp_uac(
            "uac_call.xml", plain.address, workdir=tmp_path / "plain", service="1", timeout=4
        )
        unsigned = plain.wait(timeout=10)
    assert not unsigned.ok
    assert "Identity" in unsigned.error_log.read_text()
