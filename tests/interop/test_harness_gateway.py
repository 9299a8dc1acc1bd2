"""GatewayProcess of the interop harness: config, accounts, readiness, logs, clean stop.

REGISTER is the one request the gateway handles end to end without a second party, so sipp
registering through ``run_sipp_uac`` proves the config, the accounts and the address.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess, options_ok, run_sipp_uac
from tests.interop.harness.gateway import startup_problems


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


MISSPELT_TRUNK = (
    '[plugins]\nenable = ["udp", "tcp", "recorder"]\n'
    '[plugins.recorder]\ntrunks = ["carier"]\n'
    '[[trunks]]\nname = "carrier"\naddress = "udp:127.0.0.1:5999"\n'
)


def test_startup_problems_are_the_warning_and_error_lines_not_allowed() -> None:
    log = (
        "2026-12-01 07:00:00,001 INFO gateway.core.gateway: listening on udp:127.0.0.1:5060\n"
        "2026-12-01 07:00:00,002 WARNING gateway.core.gateway: configuration: x: unknown trunk\n"
        "2026-12-01 07:00:00,003 ERROR gateway.plugins.taps.recorder: cannot write\n"
        "a continuation line saying WARNING\n"
    )
    assert startup_problems(log) == log.splitlines()[1:3]
    assert startup_problems(log, ["unknown trunk"]) == log.splitlines()[2:3]


@pytest.mark.interop
def test_a_warning_at_start_up_fails_the_test_unless_allowed(tmp_path: Path) -> None:
    """A harness config naming a trunk no [[trunks]] has: `voipgw run` warns and starts, and
    the test that wrote it would have passed."""
    gw = GatewayProcess(tmp_path / "refused", extra_toml=MISSPELT_TRUNK)
    expected = r"not expect.*\n.* WARNING .*unknown trunk 'carier'"
    with pytest.raises(RuntimeError, match=expected), gw:
        pass  # pragma: no cover - never entered
    assert gw.process is not None and gw.process.poll() is not None
    allowed = GatewayProcess(
        tmp_path / "allowed", extra_toml=MISSPELT_TRUNK, allowed_warnings=["unknown trunk 'carier'"]
    )
    with allowed:
        assert options_ok(allowed.port)


@pytest.mark.interop
def test_a_restart_in_the_same_workdir_is_not_failed_by_the_first_runs_warnings(
    tmp_path: Path,
) -> None:
    """The log is appended to: a gateway started again in the same directory (same log, same
    state) reads only its own start-up, not what peers provoked from the one before."""
    earlier = "2026-12-01 07:00:00,002 WARNING gateway.core.calls.call: a peer's doing\n"
    (tmp_path / "gateway.log").write_text(earlier)
    with GatewayProcess(tmp_path) as gw:
        assert options_ok(gw.port)
    assert gw.log_text().startswith(earlier)


LATE_WARNING = "2026-12-01 07:00:01,000 WARNING gateway.plugins.demo: a worker could not start\n"


@pytest.mark.interop
def test_a_warning_after_the_gateway_answered_fails_the_test_at_its_end(tmp_path: Path) -> None:
    """What plugin tasks and media workers log after the first OPTIONS answer counts too: the
    run is checked up to SIGTERM. (The line is appended as the gateway would write it: the
    log is opened for appending, so it lands among the gateway's own.)"""
    gw = GatewayProcess(tmp_path / "late")
    expected = r"does not expect.*\n.*a worker could not start"
    with pytest.raises(AssertionError, match=expected), gw, gw.log_path.open("a") as log:
        log.write(LATE_WARNING)
    assert gw.returncode == 0
    allowed = GatewayProcess(tmp_path / "allowed", allowed_warnings=["a worker could not start"])
    with allowed, allowed.log_path.open("a") as log:
        log.write(LATE_WARNING)
    assert allowed.run_problems == []


def test_the_control_socket_path_of_a_long_tmp_path_is_the_machines_not_the_tests() -> None:
    line = (
        "2026-12-01 07:00:00,002 WARNING gateway.core.control_server: control socket not "
        f"opened: /tmp/{'x' * 120}/state/control.sock is longer than a Unix socket path may "
        "be (107 octets); `voipgw calls` shows call quality as of each call's last change\n"
    )
    assert startup_problems(line) == []
    other = line.replace("is longer", "was longer")
    assert startup_problems(other) == other.splitlines()


@pytest.mark.parametrize(
    "line",
    [
        # A loaded machine: the media worker's sync answered late; the call goes on.
        "2026-12-01 07:00:00,002 WARNING gateway.core.media.remote_relay: media worker 0 applied "
        "no message within 1 s; the call goes on\n",
        # The machine's net.core.rmem_max (a stock runner's 212992), not the test's config.
        "2026-12-01 07:00:00,002 WARNING gateway.plugins.transports.udp: UDP receive buffer is "
        "425984 bytes, not the 4194304 of [plugins.udp] receive_buffer: the kernel caps it at "
        "net.core.rmem_max. Under load the kernel will drop datagrams before overload control "
        "sees them; raise it, e.g. sysctl -w net.core.rmem_max=4194304\n",
    ],
)
def test_what_the_machines_load_or_sysctl_makes_the_gateway_say_is_not_the_tests(
    line: str,
) -> None:
    assert startup_problems(line) == []
    other = line.replace(" is ", " was ", 1)
    other = other.replace("applied no message", "applied no messages")
    assert startup_problems(other) == other.splitlines()
