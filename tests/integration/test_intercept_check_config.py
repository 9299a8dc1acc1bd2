"""``voipgw check-config`` and the interception's certificates, as an operator runs it (a
subprocess, ``python -m gateway``): a plain check says nothing of an expired or expiring LI
certificate (the operator running it may not be cleared for interception, and start-up runs
with such a certificate); ``--intercept``, asked for by someone who is, says it. A file that
cannot be used at all (a key that is not its certificate's) stops start-up, so both say so."""

from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

from tests.interop.harness.pki import Issued, TestPki


def check_config(path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", *options, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def config(tmp_path: Path, name: str, x1: Issued, delivery: Issued, ca: Path) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        '[plugins]\nenable = ["udp", "intercept"]\n'
        "[plugins.intercept]\n"
        f'x1_certificate = "{x1.certificate}"\n'
        f'x1_private_key = "{x1.key}"\n'
        f'x1_ca = "{ca}"\n'
        f'delivery_certificate = "{delivery.certificate}"\n'
        f'delivery_private_key = "{delivery.key}"\n'
        f'delivery_ca = "{ca}"\n'
    )
    return path


def test_only_check_config_intercept_tells_of_expired_and_expiring_li_certificates(
    tmp_path: Path,
) -> None:
    ca = TestPki(tmp_path / "pki").ca("LI CA")
    now = datetime.datetime.now(datetime.UTC)
    expired = ca.issue("x1-old", days=5, not_before=now - datetime.timedelta(days=10))
    expiring = ca.issue("delivery-soon", days=10)
    valid = ca.issue("valid", days=200)
    worn = config(tmp_path, "worn", expired, expiring, ca.certificate)
    fine = config(tmp_path, "fine", valid, valid, ca.certificate)

    plain = check_config(worn)
    assert plain.returncode == 0, plain.stderr
    # Word for word what a table with valid certificates gets: nothing of them.
    assert plain.stderr == "" and plain.stdout == check_config(fine).stdout.replace(
        "fine.toml", "worn.toml"
    )
    assert plain.stdout == f"{worn}: OK (2 plugins: udp, intercept)\n"

    told = check_config(worn, "--intercept")
    assert told.returncode == 0, told.stderr  # start-up runs with them: not a config error
    warnings = told.stderr.splitlines()
    assert len(warnings) == 2, told.stderr
    assert warnings[0].startswith(
        f"{worn}: warning: [plugins.intercept] x1_certificate: {expired.certificate}: the "
        "certificate expired on "
    )
    assert warnings[1].startswith(
        f"{worn}: warning: [plugins.intercept] delivery_certificate: {expiring.certificate}: "
        "expires on "
    )
    assert ", in 10 day(s) (subject CN=delivery-soon): renew it, then SIGHUP" in warnings[1]
    assert "PRIVATE KEY" not in told.stdout + told.stderr

    fine_told = check_config(fine, "--intercept")
    assert fine_told.returncode == 0 and fine_told.stderr == ""
    (line, ok) = fine_told.stdout.splitlines()
    assert line.startswith(
        f"{fine}: [plugins.intercept] x1_certificate, delivery_certificate: "
        f"{valid.certificate}: valid until "
    )
    assert ok == f"{fine}: OK (2 plugins: udp, intercept)"
    assert not (tmp_path / "state" / "intercept").exists()  # check-config writes nothing


def test_a_key_mismatch_is_a_config_error_and_intercept_needs_the_plugin(tmp_path: Path) -> None:
    ca = TestPki(tmp_path / "pki").ca("LI CA")
    x1, other = ca.issue("x1"), ca.issue("other")
    path = config(tmp_path, "mismatch", x1, x1, ca.certificate)
    path.write_text(
        path.read_text().replace(f'x1_private_key = "{x1.key}"', f'x1_private_key = "{other.key}"')
    )
    refused = check_config(path)  # start-up refuses it too, naming the key at fault
    assert refused.returncode == 2
    assert "[plugins.intercept]" in refused.stderr
    assert "x1_private_key: cannot be loaded with x1_certificate" in refused.stderr

    without = tmp_path / "without.toml"
    without.write_text('[sip]\nlisten = ["udp:127.0.0.1:0"]\n[plugins]\nenable = ["udp"]\n')
    asked = check_config(without, "--intercept")
    assert asked.returncode == 2
    assert asked.stderr == (
        f"{without}: --intercept: the configuration does not enable the intercept plugin\n"
    )


def test_a_node_sharing_a_postgresql_store_is_warned_to_name_itself(tmp_path: Path) -> None:
    # Nodes sharing a store are several points of interception: left to the default
    # ne_identifier, every node would be "voipgw" to the ADMF and the mediation function.
    # A warning, not a refusal (an upgraded cluster keeps carrying calls), and only with
    # --intercept: a plain check-config says nothing of the interception's settings.
    ca = TestPki(tmp_path / "pki").ca("LI CA")
    issued = ca.issue("gw", days=200)
    path = config(tmp_path, "cluster", issued, issued, ca.certificate)
    store = '[store]\nbackend = "postgresql"\ndsn = "host=127.0.0.1 dbname=voipgw"\n'
    table = path.read_text()
    path.write_text(store + table)
    warning = (
        f"{path}: warning: [plugins.intercept] ne_identifier: not written, with [store] backend "
        '= "postgresql": each node of a cluster is a point of interception of its own'
    )
    plain = check_config(path)
    assert plain.returncode == 0, plain.stderr
    assert "ne_identifier" not in plain.stderr
    asked = check_config(path, "--intercept")
    assert asked.returncode == 0, asked.stderr
    assert warning in asked.stderr, asked.stderr
    path.write_text(store + table + 'ne_identifier = "voipgw"\n')  # named, if by that name
    named = check_config(path, "--intercept")
    assert named.returncode == 0, named.stderr
    assert "ne_identifier" not in named.stderr
    path.write_text(table)  # one node on SQLite: the default is fine
    alone = check_config(path, "--intercept")
    assert alone.returncode == 0, alone.stderr
    assert "ne_identifier" not in alone.stderr
