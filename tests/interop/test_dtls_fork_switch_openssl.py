"""Another forked phone's 200 after a taken early answer, with a real DTLS-SRTP peer
(docs/media_security.md, "Forked callees"; session 51).

A proxy downstream forks the gateway's one DTLS offer (RFC 3261 §16.7): phone 1's 183 answers
early with its certificate, phone 2's 200 (another To tag, §12.1.2) with another. Each
answering phone has its own association (RFC 5763 §5): the gateway must begin a fresh one with
phone 2, not refuse its answer as "a second answer changes the DTLS parameters" (488 to the
caller, BYE to phone 2, as before session 51).

Peers on 127.0.0.1: sipp on 127.0.0.2 as the trunk calling alice's DID (plain RTP); sipp as
alice's registered phone, standing for the forking proxy (scenario
calls/uas_fork_dtls_switch.xml: phone 1 at a port nobody serves, phone 2 at the ports of two
``openssl s_server -dtls1_2 -use_srtp``, RTP and RTCP: the trunk offered no rtcp-mux, RFC 5764
§4.1); both answer ``a=setup:passive``, so the gateway is the DTLS client. The system's openssl
(3.0 on Debian 12) is a second TLS stack beside pyOpenSSL's.
"""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.plugins.keyexchange.dtls_certificates import DtlsIdentity, generate_identity
from tests.conftest import require_peer
from tests.interop.harness import GatewayProcess, SippUas
from tests.interop.harness.ports import free_port_block
from tests.interop.harness.processes import die_with_parent, stop_process
from tests.interop.sipp_calls import ACCOUNTS, inbound_trunk, register, trunk_call

pytestmark = pytest.mark.interop

NOW = datetime.datetime.now(datetime.UTC)
DAY = datetime.timedelta(days=1)


def fingerprint(identity: DtlsIdentity) -> str:
    """The a=fingerprint value after ``sha-256 `` (RFC 8122 §5: upper-case hex pairs)."""
    return ":".join(f"{b:02X}" for b in identity.digest("sha-256"))


def pem_files(directory: Path, identity: DtlsIdentity) -> tuple[Path, Path]:
    certificate, key = directory / "phone2.crt", directory / "phone2.key"
    certificate.write_bytes(identity.certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        identity.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certificate, key


@contextmanager
def dtls_server(
    openssl: str, port: int, certificate: Path, key: Path, output: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``openssl s_server`` answering DTLS-SRTP handshakes on 127.0.0.1:``port``, its output
    in ``output``. Its stdin stays open while it runs (at end of input it exits: DONE, its
    output flushed); the ``with`` block ends by closing it."""
    with output.open("wb") as out:
        server = subprocess.Popen(
            [
                *(openssl, "s_server", "-dtls1_2", "-accept", f"127.0.0.1:{port}"),
                *("-use_srtp", "SRTP_AES128_CM_SHA1_80"),
                *("-keymatexport", "EXTRACTOR-dtls_srtp", "-keymatexportlen", "60"),
                *("-cert", str(certificate), "-key", str(key)),
            ],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    try:
        deadline = time.monotonic() + 10
        while b"ACCEPT" not in output.read_bytes():
            assert server.poll() is None, output.read_text(errors="replace")
            assert time.monotonic() < deadline, "s_server did not start"
            time.sleep(0.02)
        yield server
    finally:
        if server.stdin is not None:
            server.stdin.close()
        stop_process(server, timeout=5)


def test_another_phones_200_after_a_taken_early_answer_is_keyed_by_its_own_handshake(
    tmp_path: Path,
) -> None:
    openssl = require_peer("openssl")
    phone1 = generate_identity(now=NOW, max_age=DAY, common_name="phone 1")
    phone2 = generate_identity(now=NOW, max_age=DAY, common_name="phone 2")
    certificate, key = pem_files(tmp_path, phone2)
    phone2_port = free_port_block(2)
    alice = SippUas(
        "calls/uas_fork_dtls_switch.xml",
        workdir=tmp_path,
        keys={
            "fingerprint1": fingerprint(phone1),
            "fingerprint2": fingerprint(phone2),
            "phone2_port": str(phone2_port),
        },
    )
    outputs = [tmp_path / "s_server-rtp.txt", tmp_path / "s_server-rtcp.txt"]
    with GatewayProcess(
        tmp_path / "gw",
        accounts=ACCOUNTS,
        extra_toml=inbound_trunk(),
        settings={"gateway": {"log_level": "debug"}},
    ) as gw:
        gw.cli("accounts", "set", "alice", "--media-policy", "dtls")
        register(gw, tmp_path, "udp", alice.port)
        with ExitStack() as servers:
            for offset, output in enumerate(outputs):
                servers.enter_context(
                    dtls_server(openssl, phone2_port + offset, certificate, key, output)
                )
            with alice:
                caller = trunk_call("uac_call.xml", gw, tmp_path, call_duration_ms=3000)
                callee = alice.wait(timeout=15)
        records = gw.cli_until(lambda out: '"ended"' in out, "calls", "--recent", "1", "--json")
        log = gw.log_text()
    caller.check()  # answered, held 3 s, hung up by the caller: no BYE of ours before
    callee.check()  # phone 2's dialog ACKed, then the caller's BYE relayed
    (bye,) = callee.received("BYE ")
    assert "cause=488" not in bye, bye
    assert "a second answer changes the DTLS parameters" not in log
    for output in outputs:
        text = output.read_text(errors="replace")
        assert "SRTP Extension negotiated, profile=SRTP_AES128_CM_SHA1_80" in text, text
        assert "Keying material: " in text, text
    (record,) = json.loads(records)
    (stream,) = record["security"]["b"]["streams"]
    assert stream["key_exchange"] == "dtls" and stream["dtls_role"] == "client"
    assert stream["peer_certificate_sha256"] == phone2.sha256_hex()
    assert stream["rtcp_port_keyed"] is True
