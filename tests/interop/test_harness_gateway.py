"""GatewayProcess of the interop harness: config, accounts, readiness, logs, clean stop.

REGISTER is the one request the gateway handles end to end without a second party, so sipp
registering through ``run_sipp_uac`` proves the config, the accounts and the address.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, options_ok, run_sipp_uac


@pytest.mark.interop
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_sipp_registers_through_a_gateway_process(tmp_path: Path, transport: str) -> None:
    with GatewayProcess(tmp_path, accounts={"alice": "wonderland", "bob": "builder"}) as gw:
        assert options_ok(gw.port)
        for user, password in (("alice", "wonderland"), ("bob", "builder")):
            result = run_sipp_uac(
                "register_auth.xml",
                gw.address,
                workdir=tmp_path,
                transport=transport,
                service=user,
                auth=(user, password),
            )
            result.check()
            gw.wait_for_log(rf"registered: 1 binding\(s\) for {gw.uri(user)} via {transport}:")
    assert gw.returncode == 0
    assert not options_ok(gw.port)


def test_generated_config(tmp_path: Path) -> None:
    trunk = '[[trunks]]\nname = "carrier"\naddress = "udp:127.0.0.1:5999"\nprefixes = ["+49"]\n'
    gw = GatewayProcess(
        tmp_path,
        settings={"sip": {"t1": 0.1}, "gateway": {"log_level": "debug"}},
        extra_toml=trunk,
        digest_algorithms=["MD5"],
    )
    config = tomllib.loads(gw.config_text)
    assert config["gateway"] == {
        "state_dir": str(tmp_path / "state"),
        "digest_algorithms": ["MD5"],
        "log_level": "debug",
    }
    assert config["sip"] == {
        "listen": [f"udp:127.0.0.1:{gw.port}", f"tcp:127.0.0.1:{gw.port}"],
        "t1": 0.1,
    }
    low, high = gw.media_ports
    assert (high - low + 1, low % 2) == (100, 0)
    assert config["media"] == {"address": "127.0.0.1", "ports": f"{low}-{high}"}
    assert config["trunks"] == [
        {"name": "carrier", "address": "udp:127.0.0.1:5999", "prefixes": ["+49"]}
    ]
    assert gw.uri("bob", "tcp") == f"sip:bob@127.0.0.1:{gw.port};transport=tcp"


@pytest.mark.interop
def test_a_gateway_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, settings={"sip": {"t1": "fast"}})
    with pytest.raises(RuntimeError, match=r"\[sip\] t1"), gw:
        pass  # pragma: no cover - never entered
    assert gw.process is not None
    assert gw.process.poll() is not None
