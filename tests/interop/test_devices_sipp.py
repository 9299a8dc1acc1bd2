"""A device plugin installed the way operators install one (pip, entry point, enabled in the
config) shapes the legs of the phones it knows: the example plugin
(plugin_examples/voipgw-example-devices) with the model "sipp-interop" (the User-Agent of the
sipp REGISTER scenario) and the key exchanges SDES and DTLS-SRTP. With ZRTP enabled, the
gateway's INVITE to a registered phone carries ``a=zrtp-hash`` (best-effort over UDP); to a
phone whose profile leaves ZRTP out, it does not, and ``voipgw calls`` names the device.

Peers: sipp on 127.0.0.2 as the trunk calling alice's DID, sipp as alice's registered phone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.example_plugin import install_example_plugin
from tests.interop.harness import GatewayProcess, SippUas, run_sipp_uac
from tests.interop.sipp_calls import ACCOUNTS, DID, TRUNK_IP, inbound_trunk, register

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def example_plugin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example device plugin installed into a directory of its own (not the test
    environment), for the gateway's PYTHONPATH."""
    target = tmp_path_factory.mktemp("site")
    install_example_plugin(target)
    return target


def call_alice(tmp_path: Path, site: Path, model: str) -> tuple[str, str]:
    """The trunk calls alice's DID; the INVITE her phone got, and ``voipgw calls --recent``."""
    plugins = (
        '[plugins]\nenable = ["udp", "tcp", "zrtp", "example-devices"]\n\n'
        f'[plugins.example-devices]\nmodels = ["{model}"]\nkey_exchanges = ["sdes", "dtls"]\n\n'
    )
    alice = SippUas("uas_answer.xml", workdir=tmp_path)
    with GatewayProcess(
        tmp_path,
        accounts=ACCOUNTS,
        extra_toml=plugins + inbound_trunk(),
        env={"PYTHONPATH": str(site)},
    ) as gw:
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            run_sipp_uac(
                "uac_call.xml", gw.address, workdir=tmp_path, service=DID, local_ip=TRUNK_IP
            ).check()
            (invite,) = alice.wait(timeout=10).received("INVITE ")
        calls = gw.cli_until(lambda out: "ended" in out, "calls", "--recent", "5")
    return invite, calls


def test_a_phone_model_without_zrtp_is_not_offered_it(tmp_path: Path, example_plugin: Path) -> None:
    # Another model's profile: sipp is nobody's device, and is offered ZRTP.
    invite, calls = call_alice(tmp_path / "other", example_plugin, "Acme-T1")
    assert "a=zrtp-hash:" in invite, invite
    assert "device " not in calls, calls

    invite, calls = call_alice(tmp_path / "sipp", example_plugin, "sipp-interop")
    assert "a=zrtp-hash:" not in invite, invite
    assert "m=audio " in invite  # still an offer, in clear (best-effort, no SDES over UDP)
    callee_lines = [line for line in calls.splitlines() if "callee leg" in line]
    assert callee_lines and "device sipp-interop;" in callee_lines[0], calls
