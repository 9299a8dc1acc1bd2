"""The ``voipgw`` command as an operator runs it: a subprocess, real entry points."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.example_plugin import CALLS_EXAMPLE, EXAMPLE, install_example_plugin
from tests.integration.voipgw_process import voipgw_running
from tests.port_blocks import PortLease


def voipgw(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["run"],
        ["plugins"],
        ["check-config"],
        ["route"],
        ["registrations"],
        ["metrics-password"],
        ["migrate-store"],
    ],
)
def test_help_for_each_command(command: list[str]) -> None:
    result = voipgw(*command, "--help")
    assert result.returncode == 0
    assert "usage: voipgw" in result.stdout


def test_metrics_password_prints_a_hash_of_stdins_first_line_and_refuses_an_empty_one() -> None:
    from gateway.plugins.metrics.auth import PasswordHash

    made = subprocess.run(
        [sys.executable, "-m", "gateway", "metrics-password"],
        input="s3cret pass\nsecond line\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    assert "s3cret" not in made.stdout
    printed = PasswordHash.parse(made.stdout.strip())
    assert printed.matches(b"s3cret pass") and not printed.matches(b"s3cret pass\n")
    empty = subprocess.run(
        [sys.executable, "-m", "gateway", "metrics-password"],
        input="\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert empty.returncode == 2 and "the password is empty" in empty.stderr
    assert empty.stdout == ""


def test_migrate_store_on_sqlite_says_the_schema_version(tmp_path: Path) -> None:
    from gateway.core.store.sqlite import SqliteStore

    result = voipgw("migrate-store", "--state-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    store = SqliteStore.open(str(tmp_path))
    try:
        assert result.stdout == f"store: schema version {store.schema_version()}\n"
    finally:
        store.close()


def test_usage_error_exits_2() -> None:
    result = voipgw("frobnicate")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_plugins_lists_builtins_from_entry_points() -> None:
    result = voipgw("plugins")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "enabled" in lines["udp"] and "voipgw 0.1.0" in lines["udp"]
    assert "transports: udp" in lines["udp"]
    assert "transports: tcp" in lines["tcp"]


def test_check_config_ok(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[sip]\nlisten = ["udp:127.0.0.1:5099"]\n[plugins]\nenable = ["udp"]\n')
    result = voipgw("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout


def test_check_config_unknown_plugin_exits_2_naming_it_and_the_installed(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[plugins]\nenable = ["udp", "zrtpp"]\n')
    result = voipgw("check-config", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "'zrtpp' is not installed" in result.stderr
    assert "installed plugins:" in result.stderr and "udp" in result.stderr


def test_check_config_listener_without_transport_plugin(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[sip]\nlisten = ["tcp:127.0.0.1:5060"]\n[plugins]\nenable = ["udp"]\n')
    result = voipgw("check-config", str(path))
    assert result.returncode == 2
    assert "[sip] listen" in result.stderr and "'tcp'" in result.stderr


def test_check_config_trunk_interworking_must_be_registered(tmp_path: Path) -> None:
    trunk = '[[trunks]]\nname = "carrier"\naddress = "udp:192.0.2.10:5060"\n'
    path = tmp_path / "pstn.toml"
    path.write_text(trunk + 'interworking = "rfc3398"\n')  # the pstn plugin is not enabled
    result = voipgw("check-config", str(path))
    assert result.returncode == 2
    assert f"{path}: [trunks.carrier] interworking: unknown interworking 'rfc3398'" in (
        result.stderr
    )
    enabled = '[plugins]\nenable = ["udp", "pstn"]\n'
    path.write_text(enabled + trunk + 'interworking = "rfc3398"\n')
    result = voipgw("check-config", str(path))
    assert result.returncode == 0, result.stderr


def test_check_config_trunk_transport_needs_a_listener(tmp_path: Path) -> None:
    path = tmp_path / "tcp-trunk.toml"
    path.write_text(
        '[plugins]\nenable = ["udp", "tcp"]\n[sip]\nlisten = ["udp:127.0.0.1:5060"]\n'
        '[[trunks]]\nname = "carrier"\naddress = "tcp:192.0.2.10:5060"\n'
    )
    result = voipgw("check-config", str(path))
    assert result.returncode == 2
    assert f"{path}: [trunks.carrier] address: no [sip] listen entry for tcp" in result.stderr


def test_check_config_warns_of_one_did_reaching_two_accounts_through_two_trunks(
    tmp_path: Path,
) -> None:
    path = tmp_path / "dids.toml"
    path.write_text(
        '[numbering]\ncountry_code = "49"\n'
        '[[trunks]]\nname = "a"\naddress = "udp:192.0.2.10:5060"\n'
        'dids = {"030123456" = "alice"}\n'
        '[[trunks]]\nname = "b"\naddress = "udp:192.0.2.11:5060"\n'
        'dids = {"+4930123456" = "bob", "+4930999" = "bob"}\n'
    )
    result = voipgw("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"{path}: warning: DID +4930123456 reaches alice through trunk a and bob through trunk b"
    ]


def test_check_config_refuses_a_trunk_name_no_trunk_has_and_run_warns_of_it(
    tmp_path: Path,
    port_lease: PortLease,
) -> None:
    """A misspelt trunk in a plugin's list recorded (or signed, verified) nothing, silently.
    check-config names file, table, key, the name and the trunks there are, and exits 2;
    `voipgw run` says it as a WARNING and starts (an upgraded gateway keeps carrying calls),
    and a SIGHUP (certificates, not the file) leaves it running."""
    path = tmp_path / "recorder.toml"
    state = tmp_path / "state"
    head = (
        f'[gateway]\nstate_dir = "{state}"\n[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        f'[media]\nports = "{port_lease.text(10)}"\n'
        '[plugins]\nenable = ["udp", "recorder"]\n[plugins.recorder]\n'
    )
    trunk = '[[trunks]]\nname = "carrier"\naddress = "udp:192.0.2.10:5060"\n'
    path.write_text(head + 'trunks = ["carier"]\n' + trunk)
    result = voipgw("check-config", str(path))
    assert result.returncode == 2
    assert result.stderr == (
        f"voipgw: configuration error: {path}: [plugins.recorder] trunks: unknown trunk "
        "'carier': no [[trunks]] table has that name, so this key does nothing for it; "
        "known: carrier\n"
    )
    log = tmp_path / "run.log"
    warned = re.compile(r"WARNING gateway\.core\.gateway: configuration: .*unknown trunk 'carier'")
    ready = re.compile(r"voipgw ready: udp:127\.0\.0\.1:\d+")
    with voipgw_running(path, log, [warned, ready]) as (process, _):
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while "reloading certificates" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
    assert log.read_text().count("unknown trunk") == 1
    path.write_text(head + 'trunks = ["carrier"]\n' + trunk)
    result = voipgw("check-config", str(path))
    assert result.returncode == 0, result.stderr


def test_check_config_bad_key_names_file_table_key(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[media]\nports = 'all of them'\n")
    result = voipgw("check-config", str(path))
    assert result.returncode == 2
    assert f"{path}: [media] ports:" in result.stderr


def test_installed_plugin_is_listed_and_enabling_runs_its_hooks(tmp_path: Path) -> None:
    """Install the example plugin package into a temporary location (not the test environment)
    and check that discovery finds it and enabling it runs its registration hook."""
    if shutil.which("pip") is None and not (Path(sys.executable).parent / "pip").exists():
        pytest.fail("pip is needed to install the example plugin")
    target = tmp_path / "site"
    before = source_files(EXAMPLE)
    install_example_plugin(target)
    assert source_files(EXAMPLE) == before  # built from a copy: nothing written beside it
    env = {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}

    disabled = voipgw("plugins", env=env)
    assert disabled.returncode == 0, disabled.stderr
    line = next(ln for ln in disabled.stdout.splitlines() if ln.startswith("example-devices"))
    assert "disabled" in line and "voipgw-example-devices 0.1.0" in line

    config = tmp_path / "with-plugin.toml"
    config.write_text(
        '[plugins]\nenable = ["udp", "tcp", "example-devices"]\n'
        '[plugins.example-devices]\nmodels = ["Acme-T1", "Acme-T9"]\n'
    )
    enabled = voipgw("plugins", "--config", str(config), env=env)
    assert enabled.returncode == 0, enabled.stderr
    line = next(ln for ln in enabled.stdout.splitlines() if ln.startswith("example-devices"))
    assert "enabled" in line
    assert "device_profiles: acme-t1, acme-t9" in line
    assert "gateway_identify_device" in line
    # Its distribution's name is longer than the built-ins': the columns stay aligned.
    header = enabled.stdout.splitlines()[0]
    assert line.index("device_profiles") == header.index("REGISTERS")

    checked = voipgw("check-config", str(config), env=env)
    assert checked.returncode == 0, checked.stderr
    assert "6 passed" in own_tests(EXAMPLE, tmp_path, env)


def test_the_calls_example_installs_loads_checks_its_table_and_passes_its_own_tests(
    tmp_path: Path,
) -> None:
    """plugin_examples/voipgw-example-calls (a media tap and a routing decision), installed
    with pip as an operator does: listed with what it registers, its table checked, and its
    own tests run against the installed copy."""
    target = tmp_path / "site"
    before = source_files(CALLS_EXAMPLE)
    install_example_plugin(target, CALLS_EXAMPLE)
    assert source_files(CALLS_EXAMPLE) == before
    env = {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    config = tmp_path / "with-plugin.toml"
    config.write_text(
        '[plugins]\nenable = ["udp", "tcp", "example-calls"]\n'
        '[plugins.example-calls]\nshort_codes = ["*1=reception"]\n'
    )
    enabled = voipgw("plugins", "--config", str(config), env=env)
    assert enabled.returncode == 0, enabled.stderr
    line = next(ln for ln in enabled.stdout.splitlines() if ln.startswith("example-calls"))
    assert "enabled" in line and "voipgw-example-calls 0.1.0" in line
    assert "media_taps: example-calls" in line and "gateway_route_call" in line
    assert voipgw("check-config", str(config), env=env).returncode == 0

    config.write_text(config.read_text().replace("*1=reception", "*1"))
    refused = voipgw("check-config", str(config), env=env)
    assert refused.returncode == 2
    assert f"{config}: [plugins.example-calls] short_codes: '*1' is not CODE=ACCOUNT" in (
        refused.stderr
    )

    assert "9 passed" in own_tests(CALLS_EXAMPLE, tmp_path, env)


def source_files(example: Path) -> dict[str, tuple[int, int]]:
    """Each file under an example's directory (bytecode aside) with its modification time and
    size: what a build in the source tree (setuptools' build/ and *.egg-info) would change."""
    return {
        str(path.relative_to(example)): (path.stat().st_mtime_ns, path.stat().st_size)
        for path in example.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    }


def own_tests(example: Path, workdir: Path, env: dict[str, str]) -> str:
    """Run an example plugin's own tests against its installed copy; pytest's output."""
    own = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(example / "tests")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workdir,
        env={**os.environ, **env},
    )
    assert own.returncode == 0, own.stdout + own.stderr
    return own.stdout


def test_accounts_add_list_set_remove_without_storing_the_password(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    added = voipgw("accounts", "add", "alice", "--password", "correct horse", "--state-dir", state)
    assert added.returncode == 0, added.stderr
    assert (
        voipgw("accounts", "add", "bob", "--password", "pw2", "--state-dir", state).returncode == 0
    )

    again = voipgw("accounts", "add", "alice", "--password", "x", "--state-dir", state)
    assert again.returncode == 2 and "already exists" in again.stderr

    changed = voipgw(
        "accounts",
        "set",
        "alice",
        "--media-policy",
        "sdes",
        "--require-tls",
        "--state-dir",
        state,
    )
    assert changed.returncode == 0, changed.stderr

    listed = voipgw("accounts", "list", "--state-dir", state)
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"][1:4] == ["yes", "sdes", "required"]
    assert rows["bob"][1:4] == ["yes", "best-effort", "-"]

    removed = voipgw("accounts", "remove", "bob", "--state-dir", state)
    assert removed.returncode == 0
    missing = voipgw("accounts", "remove", "bob", "--state-dir", state)
    assert missing.returncode == 2 and "no account 'bob'" in missing.stderr

    for path in (tmp_path / "state").iterdir():
        data = path.read_bytes()
        assert b"correct horse" not in data, f"password found in {path.name}"


def test_accounts_bind_certificates_and_require_tls(tmp_path: Path) -> None:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "00:15:65:aa:bb:cc")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "phone.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    state = str(tmp_path / "state")
    assert (
        voipgw("accounts", "add", "alice", "--password", "pw", "--state-dir", state).returncode == 0
    )
    other = "AA:" * 31 + "AA"
    result = voipgw(
        "accounts",
        "set",
        "alice",
        "--bind-cert",
        str(pem),
        "--bind-cert",
        other,
        "--bind-subject",
        "00:15:65:aa:bb:cc|Acme CA",
        "--require-tls",
        "--state-dir",
        state,
    )
    assert result.returncode == 0, result.stderr

    from gateway.core.store.sqlite import SqliteStore

    store = SqliteStore.open(state)
    try:
        account = store.get_account("alice")
        assert account is not None and account.require_tls
        matches = {(m.kind, m.value) for m in account.certificate_matches}
        assert matches == {
            ("fingerprint", cert.fingerprint(hashes.SHA256()).hex()),
            ("fingerprint", "aa" * 32),
            ("subject", "00:15:65:aa:bb:cc|Acme CA"),
        }
    finally:
        store.close()
    listed = voipgw("accounts", "list", "--state-dir", state)
    assert listed.stdout.splitlines()[1].split()[4] == "3"

    bad = voipgw(
        "accounts", "set", "alice", "--bind-cert", str(tmp_path / "nope.pem"), "--state-dir", state
    )
    assert bad.returncode == 2 and "nope.pem" in bad.stderr
    cleared = voipgw("accounts", "set", "alice", "--unbind-certs", "--state-dir", state)
    assert cleared.returncode == 0
    assert voipgw("accounts", "list", "--state-dir", state).stdout.splitlines()[1].split()[4] == "-"


def test_calls_lists_live_calls_with_each_legs_protection(tmp_path: Path) -> None:
    from gateway.core.store.interface import CallRecord
    from gateway.core.store.sqlite import SqliteStore

    state = str(tmp_path / "state")
    store = SqliteStore.open(state)
    try:
        store.call_record_insert(CallRecord("live-1", "sip:alice@gw", "sip:+4930@gw", 1.0))
        store.call_record_update(
            "live-1",
            answered_at=2.0,
            security={
                "a": {
                    "signalling": "tls",
                    "signalling_secure": True,
                    "peer_certificate": {"verified": True},
                    "streams": [
                        {"encrypted": True, "suite": "AEAD_AES_256_GCM", "key_exchange": "sdes"}
                    ],
                    "srtp": {"auth_failures": 2, "replays": 1},
                },
                "b": {"signalling": "udp", "streams": [{"encrypted": False}]},
            },
        )
        store.call_record_insert(CallRecord("old-1", "sip:bob@gw", "sip:alice@gw", 1.0))
        store.call_record_update("old-1", ended_at=3.0, end_reason="BYE from A leg")
    finally:
        store.close()
    live = voipgw("calls", "--state-dir", state)
    assert live.returncode == 0, live.stderr
    assert "live-1" in live.stdout and "old-1" not in live.stdout
    assert (
        "caller leg: signalling TLS (peer certificate verified); "
        "media SRTP AEAD_AES_256_GCM keyed by sdes "
        "(2 packets failed SRTP authentication, 1 replays dropped)"
    ) in live.stdout
    assert "callee leg: signalling UDP; media RTP, not encrypted" in live.stdout
    # No gateway runs on this state directory: its live call's quality now cannot be asked.
    assert live.stderr.startswith("note: live call quality not available (no gateway running")
    recent = voipgw("calls", "--recent", "5", "--state-dir", state)
    assert "old-1" in recent.stdout and "ended (BYE from A leg)" in recent.stdout
    as_json = voipgw("calls", "--json", "--state-dir", state)
    import json

    assert [(c["call_id"], c["live_quality"]) for c in json.loads(as_json.stdout)] == [
        ("live-1", None)
    ]


def test_a_calls_transfers_are_said_in_words() -> None:
    from gateway.core.cli import describe_transfer

    done = {"by": "b", "to": "sip:bob@gw", "attended": False, "status": 200}
    assert describe_transfer(done) == "blind transfer by the callee to sip:bob@gw: done"
    failed = {"by": "a", "to": "sip:carol@gw", "attended": True, "status": 486}
    assert (
        describe_transfer(failed) == "attended transfer by the caller to sip:carol@gw: failed (486)"
    )


def test_a_dtls_leg_without_rtcp_mux_says_how_its_rtcp_port_is_keyed() -> None:
    from gateway.core.cli import describe_leg

    def leg(keyed: bool) -> dict[str, object]:
        stream = {"encrypted": True, "suite": "AES_CM_128_HMAC_SHA1_80", "key_exchange": "dtls"}
        return {"signalling": "udp", "streams": [{**stream, "rtcp_port_keyed": keyed}]}

    assert describe_leg(leg(True)) == (
        "signalling UDP; media SRTP AES_CM_128_HMAC_SHA1_80 keyed by dtls "
        "(RTCP on its own port, keyed by its own handshake)"
    )
    assert describe_leg(leg(False)).endswith("(RTCP on its own port, not keyed yet: RTCP dropped)")


def test_a_zrtp_leg_says_its_sas_and_what_it_authenticates() -> None:
    from gateway.core.cli import describe_leg

    stream = {
        "encrypted": True,
        "suite": "AES_CM_128_HMAC_SHA1_80",
        "key_exchange": "zrtp",
        "zrtp_sas": "k4ab",
    }
    assert describe_leg({"signalling": "udp", "streams": [stream]}) == (
        "signalling UDP; media SRTP AES_CM_128_HMAC_SHA1_80 keyed by zrtp (ZRTP SAS 'k4ab': the "
        "phone shows it for its link to this gateway, not to the other party)"
    )


def test_a_calls_taps_are_said_with_what_they_miss() -> None:
    from gateway.core.cli import describe_taps

    assert describe_taps({"names": ["recorder"], "untapped_streams": []}) == (
        "media copied to: recorder"
    )
    assert describe_taps({"names": ["recorder"], "untapped_streams": [0, 1]}) == (
        "media copied to: recorder (NOT stream 0, 1: in a media worker, which taps cannot reach)"
    )


def test_media_policy_names_are_checked(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    bad = voipgw(
        "accounts", "add", "zed", "--password", "x", "--media-policy", "sdez", "--state-dir", state
    )
    assert bad.returncode == 2
    assert "unknown media policy 'sdez'" in bad.stderr and "best-effort" in bad.stderr
    good = voipgw(
        "accounts", "add", "zed", "--password", "x", "--media-policy", "sdes", "--state-dir", state
    )
    assert good.returncode == 0, good.stderr
    changed = voipgw(
        "accounts", "set", "zed", "--media-policy", "encrypted-only", "--state-dir", state
    )
    assert changed.returncode == 0
    config = tmp_path / "trunk.toml"
    config.write_text(
        '[[trunks]]\nname = "carrier"\naddress = "udp:127.0.0.2:5060"\n'
        'media_policy = "secure-ish"\n'
    )
    checked = voipgw("check-config", str(config))
    assert checked.returncode == 2
    assert "[trunks.carrier] media_policy" in checked.stderr


def test_accounts_max_calls_is_set_listed_and_checked(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    added = voipgw(
        "accounts", "add", "carol", "--password", "x", "--max-calls", "2", "--state-dir", state
    )
    assert added.returncode == 0, added.stderr
    voipgw("accounts", "add", "dave", "--password", "x", "--state-dir", state)
    listed = voipgw("accounts", "list", "--state-dir", state)
    header = listed.stdout.splitlines()[0].split()
    rows = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:]}
    column = header.index("CALLS")
    assert (rows["carol"][column], rows["dave"][column]) == ("2", "-")
    changed = voipgw("accounts", "set", "dave", "--max-calls", "1", "--state-dir", state)
    assert changed.returncode == 0 and "max_calls" in changed.stdout
    bad = voipgw("accounts", "set", "dave", "--max-calls", "-1", "--state-dir", state)
    assert bad.returncode == 2
    assert "max_calls must be 0 (no limit)" in bad.stderr


def test_route_shows_the_reading_the_trunks_in_failover_order_and_refusals(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n\n'
        '[numbering]\ncountry_code = "49"\narea_code = "30"\n\n'
        '[[trunks]]\nname = "carrier"\naddress = "udp:192.0.2.10:5060"\n'
        'prefixes = ["+49", "112"]\nnumber_format = "national"\n'
        'dids = {"+4930123456" = "alice"}\n\n'
        '[[trunks]]\nname = "world"\naddress = "udp:192.0.2.20:5060"\nprefixes = ["*"]\n'
        'number_format = "international"\n'
    )
    added = voipgw("accounts", "add", "alice", "--password", "pw", "--config", str(config))
    assert added.returncode == 0, added.stderr

    national = voipgw("route", "987654", "--from-account", "alice", "--config", str(config))
    assert national.returncode == 0, national.stderr
    assert national.stdout.splitlines() == [
        "987654 dialled by account alice: read as +4930987654",
        "  trunk carrier: sip:030987654@192.0.2.10:5060;transport=udp",
        "if that fails (a failover status), one at a time:",
        "  trunk world: sip:004930987654@192.0.2.20:5060;transport=udp",
    ]
    emergency = voipgw("route", "112", "--config", str(config))
    assert emergency.stdout.splitlines()[:2] == [
        "112 dialled",
        "  trunk carrier: sip:112@192.0.2.10:5060;transport=udp",
    ]
    did = voipgw("route", "030123456", "--from-trunk", "carrier", "--config", str(config))
    assert did.stdout.splitlines() == [
        "030123456 delivered by trunk carrier: read as +4930123456",
        "refused: 480 Temporarily Unavailable: alice has no registered device",
    ]
    unknown = voipgw("route", "1", "--from-trunk", "nope", "--config", str(config))
    assert unknown.returncode == 2
    assert "no trunk 'nope'; trunks: carrier, world" in unknown.stderr


def test_registrations_lists_each_binding_with_where_it_came_from(tmp_path: Path) -> None:
    import json
    import time

    from gateway.core.store.interface import Binding, BindingFlow
    from gateway.core.store.sqlite import SqliteStore

    state = tmp_path / "state"
    store = SqliteStore.open(state)
    try:
        store.accounts_add("alice", "pw", "voipgw.local")
        store.accounts_add("bob", "pw", "voipgw.local")
        now = time.time()
        edge = "<sip:192.0.2.1:5060;lr;received=sip:198.51.100.9:5062>"
        for account, contact, remote, agent, path in (
            ("alice", "sip:alice@10.0.0.5:5060", "203.0.113.7:40000", "Yealink SIP-T46U", ()),
            ("bob", "sip:bob@198.51.100.9:5062", "192.0.2.1:5060", None, (edge,)),
        ):
            store.upsert_binding(
                Binding(
                    aor=f"sip:{account}@voipgw.local",
                    key=contact,
                    account=account,
                    contact=contact,
                    expires_at=now + 600,
                    call_id=f"reg-{account}",
                    cseq=1,
                    flow=BindingFlow("udp", "127.0.0.1:5060", remote),
                    user_agent=agent,
                    path=path,
                )
            )
    finally:
        store.close()
    listed = voipgw("registrations", "--state-dir", str(state))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("alice  sip:alice@10.0.0.5:5060  from udp 203.0.113.7:40000  ")
    assert lines[0].endswith("s left  Yealink SIP-T46U  behind NAT")
    # bob registered through an edge proxy (RFC 3327 Path): calls reach it there first.
    assert lines[1].endswith(f"s left  (no User-Agent)  via {edge}")
    only_bob = json.loads(
        voipgw("registrations", "bob", "--json", "--state-dir", str(state)).stdout
    )
    assert [(r["account"], r["behind_nat"], r["device"], r["path"]) for r in only_bob] == [
        ("bob", False, None, [edge])
    ]
    # What is left is 600 s less the time since the binding was written: two CLI runs, each
    # an interpreter start (seconds on a loaded machine, not a fixed 10 s margin).
    since_written = time.time() - now
    assert 600 - since_written - 1 <= only_bob[0]["expires_in"] <= 600


def reading_stdin(pid: int) -> bool:
    """Whether process ``pid`` is blocked in read(2) on its standard input (Linux: the
    syscall number and first argument /proc shows; read is 0 on x86-64, 63 on arm64)."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except OSError:
        return False
    return len(fields) > 1 and fields[0] in ("0", "63") and fields[1] == "0x0"


def test_a_one_shot_command_interrupted_exits_130(tmp_path: Path) -> None:
    """A one-shot command stopped by SIGINT (Ctrl-C) exited 0, as if it had done its work: a
    script's ``voipgw ... && next`` went on. It exits 130, the shell's status for a command
    SIGINT ended, and says so (``voipgw run``, whose SIGINT is its ordinary stop, keeps 0)."""
    if not Path("/proc/self/syscall").exists():
        pytest.skip("needs /proc/PID/syscall to see the command waiting")
    command = subprocess.Popen(
        [sys.executable, "-m", "gateway", "metrics-password"],
        cwd=Path(__file__).parents[2],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # SIGINT as a terminal's foreground command has it: a test run started in the
        # background by a script, or under nohup, ignores it, and the command would too.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 60.0
        while not reading_stdin(command.pid):  # waiting for the password
            assert command.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        command.send_signal(signal.SIGINT)
        _, err = command.communicate(timeout=60)
    finally:
        if command.poll() is None:
            command.kill()
            command.wait()
    assert command.returncode == 130, err
    assert err == "voipgw: metrics-password: interrupted\n"


@pytest.mark.parametrize(
    "command",
    [
        ["calls"],
        ["calls", "--recent", "5"],
        ["registrations"],
        ["accounts", "list"],
    ],
)
def test_a_command_reading_the_store_where_there_is_none_says_so_and_creates_nothing(
    command: list[str], tmp_path: Path
) -> None:
    # Run from another directory than `voipgw run` (./voipgw-state is relative), `voipgw calls`
    # created an empty store there and answered "no live calls" while the gateway had calls.
    state = tmp_path / "voipgw-state"
    result = voipgw(*command, "--state-dir", str(state))
    assert result.returncode == 2
    assert result.stderr == (
        f"voipgw: {command[0]}: no voipgw store in {state}: run this in the directory "
        "`voipgw run` was started in, or give it the same --state-dir or --config\n"
    )
    assert result.stdout == ""
    assert not state.exists()


def test_route_where_there_is_no_store_routes_by_the_config_alone_and_says_so(
    tmp_path: Path,
) -> None:
    # `voipgw route` checks a config's routing before its gateway ever ran (a config-CI
    # script): with no store it routes with no accounts, says so, and creates nothing.
    state = tmp_path / "voipgw-state"
    config = tmp_path / "voipgw.toml"
    config.write_text(
        '[[trunks]]\nname = "carrier"\naddress = "udp:192.0.2.10:5060"\nprefixes = ["+1"]\n'
    )
    result = voipgw("route", "+15551234567", "--config", str(config), "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"voipgw: route: no voipgw store in {state}: run this in the directory `voipgw run` was "
        "started in, or give it the same --state-dir or --config; routed with no accounts or "
        "registrations\n"
    )
    assert "  trunk carrier: " in result.stdout
    assert not state.exists()


def test_a_relative_state_directory_is_said_with_where_it_was_looked_for(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "calls"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
    )
    assert result.returncode == 2
    assert f"no voipgw store in voipgw-state (seen from {tmp_path})" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_accounts_add_of_an_existing_name_says_how_to_change_its_password(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    assert (
        voipgw("accounts", "add", "alice", "--password", "a", "--state-dir", state).returncode == 0
    )
    again = voipgw("accounts", "add", "alice", "--password", "b", "--state-dir", state)
    assert again.returncode == 2
    assert again.stderr == (
        "voipgw: accounts add: account 'alice' already exists; "
        "`voipgw accounts set alice --password PW` changes its password\n"
    )


def test_check_config_warns_of_a_gateway_no_phone_can_reach(tmp_path: Path) -> None:
    # enable replaces the default list: a newcomer adding "metrics" alone had a gateway that
    # said "voipgw ready: " and listened for SIP nowhere.
    path = tmp_path / "voipgw.toml"
    path.write_text('[plugins]\nenable = ["metrics", "dtls"]\n')
    result = voipgw("check-config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == (
        f"{path}: warning: no SIP listener: [plugins] enable names no SIP transport (udp, tcp, "
        "tls, ws, wss), so no phone or trunk can reach the gateway; enable replaces the default "
        'list, so keep the transports beside what you add: enable = ["udp", "tcp", "tls", '
        '"sdes", "dtls", "metrics"]\n'
    )
    path.write_text("[sip]\nlisten = []\n")
    empty = voipgw("check-config", str(path))
    assert empty.stderr == (
        f"{path}: warning: [sip] listen is empty: no phone or trunk can reach the gateway\n"
    )
    path.write_text('[plugins]\nenable = ["udp", "metrics"]\n')
    assert voipgw("check-config", str(path)).stderr == ""
