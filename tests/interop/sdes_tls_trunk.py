"""baresip calling a TLS trunk with SDES through the gateway, for the tests of SDES callees
behind a forking proxy (test_fork_rekey_sipp.py, test_fork_best_effort_sipp.py): alice's
baresip (``srtp-mand``, registered over TLS) dials :data:`TRUNK_NUMBER`; the trunk is a sipp
UAS running a scenario over TCP behind stunnel (Debian's sipp has no TLS,
/work/shared/peers.md), whose certificate a test CA issues and the gateway's CA bundle
trusts. The scenario's Contacts name the stunnel port (``-key contact_port``, set here)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

from tests.interop.harness import LOOPBACK, Baresip, SippUas, tone_wav
from tests.interop.harness.pki import TestPki
from tests.interop.harness.ports import free_port
from tests.interop.harness.stunnel import StunnelServer
from tests.interop.harness.tls_gateway import TlsGatewayProcess

ALICE_PASSWORD = "wonderland-5e1f"
TRUNK_NUMBER = "+4989555"


def tls_trunk_toml(tunnel_port: int, media_policy: str) -> str:
    """The ``[[trunks]]`` table of the carrier behind stunnel on ``tunnel_port``: TLS, serving
    +49, calling from nowhere (it only answers), with ``media_policy``."""
    return (
        "[[trunks]]\n"
        'name = "carrier"\n'
        f'address = "tls:{LOOPBACK}:{tunnel_port}"\n'
        'prefixes = ["+49"]\n'
        "allowed_sources = []\n"
        f'media_policy = "{media_policy}"\n'
    )


@contextlib.contextmanager
def alice_calls_the_tls_trunk(
    tmp_path: Path,
    scenario: str,
    *,
    media_policy: str,
    keys: Mapping[str, str] | None = None,
    log_level: str | None = None,
    sip_trace: bool = False,
) -> Iterator[tuple[TlsGatewayProcess, Baresip, SippUas]]:
    """The gateway, alice's baresip and the trunk's sipp, all running, alice's call to the
    trunk established (its ``media_policy``; ``keys`` are the scenario's other -key values;
    ``log_level`` the gateway's, when not the harness's). Everything is stopped on leaving."""
    ca = TestPki(tmp_path / "pki").ca("Carrier CA")
    trunk_certificate = ca.issue("trunk.carrier.test")  # names 127.0.0.1
    tunnel_port = free_port("tcp")
    trunk = SippUas(
        scenario,
        workdir=tmp_path,
        transport="tcp",
        keys={"contact_port": str(tunnel_port), **(keys or {})},
    )
    gateway = TlsGatewayProcess(
        tmp_path / "gw",
        plugins=("udp", "tcp", "tls", "sdes"),
        tls={"ca_bundles": [str(ca.certificate)]},
        accounts={"alice": ALICE_PASSWORD},
        digest_algorithms=("MD5",),
        settings={
            "gateway": {"domains": [LOOPBACK], **({"log_level": log_level} if log_level else {})}
        },
        extra_toml=tls_trunk_toml(tunnel_port, media_policy),
    )
    source = tone_wav(tmp_path / "alice.wav", 1000.0)
    with (
        trunk,
        StunnelServer(
            trunk.address, workdir=tmp_path, certificate=trunk_certificate, port=tunnel_port
        ),
        gateway,
        Baresip(
            tmp_path, "alice", source=source, mediaenc="srtp-mand", sip_trace=sip_trace
        ) as alice,
    ):
        port = gateway.tls_port
        alice.register_over_tls(LOOPBACK, port, ALICE_PASSWORD, mediaenc="srtp-mand")
        alice.dial(f"sip:{TRUNK_NUMBER}@{LOOPBACK}:{port};transport=tls")
        alice.wait_established(timeout=15)
        yield gateway, alice, trunk
