"""Registering with a carrier against sipp (``[[trunks]] register = true``): sipp is the
carrier's registrar on 127.0.0.2, challenging with digest and checking the credentials itself
(verifyauth), then takes the removal the gateway sends when it stops. While registered, a call
from the carrier (another sipp on 127.0.0.2) to the registered Contact, naming alice's DID in
To, reaches her phone (sipp registered as alice).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, SippUas, run_sipp_uac
from tests.interop.sipp_calls import ACCOUNTS, DID, TRUNK_IP, register

pytestmark = pytest.mark.interop

USER, PASSWORD = "customer-17", "carrier-secret"


def test_the_gateway_registers_with_the_carrier_and_takes_its_calls(tmp_path: Path) -> None:
    registrar = SippUas(
        "calls/uas_registrar.xml",
        workdir=tmp_path,
        local_ip=TRUNK_IP,
        keys={"user": USER, "password": PASSWORD},
    )
    trunk = (
        "[[trunks]]\n"
        'name = "carrier"\n'
        f'address = "udp:{TRUNK_IP}:{registrar.port}"\n'
        f'allowed_sources = ["{TRUNK_IP}"]\n'
        f'username = "{USER}"\n'
        f'password = "{PASSWORD}"\n'
        "register = true\n"
        'register_domain = "carrier.test"\n'
        f'dids = {{"{DID}" = "alice"}}\n'
    )
    alice = SippUas("uas_answer.xml", workdir=tmp_path)
    with registrar:
        with GatewayProcess(tmp_path, accounts=ACCOUNTS, extra_toml=trunk) as gw:
            gw.wait_for_log(r"registered with trunk carrier for 300 s")
            register(gw, tmp_path, "udp", alice.port)
            with alice:
                run_sipp_uac(
                    "calls/uac_call_to_contact.xml",
                    gw.address,
                    workdir=tmp_path,
                    service=USER,
                    local_ip=TRUNK_IP,
                    keys={"did": DID},
                ).check()
                (invite,) = alice.wait(timeout=10).received("INVITE ")
        registered = registrar.wait(timeout=10)  # the removal came when the gateway stopped
    registered.check()
    registers = registered.received("REGISTER ")
    assert len(registers) == 3
    assert registers[0].startswith("REGISTER sip:carrier.test SIP/2.0"), registers[0]
    assert f"Contact: <sip:{USER}@127.0.0.1:" in registers[0]
    assert "Expires: 0" in registers[2]
    assert invite.startswith(f"INVITE sip:alice@127.0.0.1:{alice.port}"), invite
    assert PASSWORD not in gw.log_text()
