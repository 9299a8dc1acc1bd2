"""``voipgw run`` refusing to start, as an operator sees it: exit status 1 and one line that says
why, no traceback, and nothing left listening."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.harness.pki import TestPki
from tests.port_blocks import ModuleBlock

# The relay's ports: this process's own (tests/port_blocks.py), not the gateway's default range,
# which another test run's gateway may bind as well (tests/media_range_guard.py).
MEDIA_PORTS = ModuleBlock(20)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A TCP port on 127.0.0.1 somebody else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def run(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[media]\nports = "{MEDIA_PORTS.text()}"\n'
        + config
    )
    return subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_sip_port_in_use_is_one_line_and_exit_1(taken_port: int, tmp_path: Path) -> None:
    result = run(
        f'[sip]\nlisten = ["tcp:127.0.0.1:{taken_port}"]\n[plugins]\nenable = ["tcp"]\n', tmp_path
    )
    assert result.returncode == 1
    # Which listener, and what to do: a newcomer's first `voipgw run` meets another SIP server
    # on 5060.
    assert (
        f"cannot run: [Errno 98] cannot listen on tcp:127.0.0.1:{taken_port}: Address already "
        "in use (another program listens there: stop it, or give voipgw other ports with "
        "--listen or [sip] listen)"
    ) in result.stderr
    assert "Traceback" not in result.stderr


def test_the_readmes_port_in_use_line_is_the_one_the_gateway_prints(tmp_path: Path) -> None:
    """README's quote of the line a first ``voipgw run`` stops with when another SIP server
    holds 5060, word for word (it left out ``cannot run: [Errno 98]`` and what to do): an
    operator searches the log, or the web, for what the README says. Here on a UDP port of
    the test's own, the README's 5060 replaced by it."""
    readme = (Path(__file__).parents[2] / "README.md").read_text("utf-8")
    flat = " ".join(readme.split())  # the quote wraps across lines
    (quote,) = re.findall(r"`(ERROR gateway\.core\.gateway: cannot run: [^`]*)`", flat)
    assert "udp:127.0.0.1:5060" in quote
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = run(
            f'[sip]\nlisten = ["udp:127.0.0.1:{port}"]\n[plugins]\nenable = ["udp"]\n', tmp_path
        )
    assert result.returncode == 1
    expected = quote.replace("udp:127.0.0.1:5060", f"udp:127.0.0.1:{port}")
    assert expected in result.stderr, result.stderr


def test_an_x1_port_in_use_stops_the_start_instead_of_running_without_interception(
    taken_port: int, tmp_path: Path
) -> None:
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("X1 CA")
    server = ca.issue("gw")
    result = run(
        '[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        '[plugins]\nenable = ["udp", "intercept"]\n'
        "[plugins.intercept]\n"
        f'x1_listen = "127.0.0.1:{taken_port}"\n'
        f'x1_certificate = "{server.certificate}"\n'
        f'x1_private_key = "{server.key}"\n'
        f'x1_ca = "{ca.certificate}"\n'
        "delivery_tls = false\n",
        tmp_path,
    )
    assert result.returncode == 1
    assert "cannot run: [Errno 98] Address already in use" in result.stderr
    assert "voipgw ready" not in result.stderr and "Traceback" not in result.stderr


def test_check_config_of_an_interception_table_loads_its_certificates_and_writes_nothing(
    tmp_path: Path,
) -> None:
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("X1 CA")
    server = ca.issue("gw")
    table = (
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        '[plugins]\nenable = ["udp", "intercept"]\n'
        "[plugins.intercept]\n"
        f'x1_certificate = "{server.certificate}"\n'
        f'x1_private_key = "{server.key}"\n'
        f'x1_ca = "{ca.certificate}"\n'
        "delivery_tls = false\n"
    )
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text(table)
    bad.write_text(table.replace(str(server.key), str(tmp_path / "missing.key")))
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(good)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert not (tmp_path / "state" / "intercept").exists()
    refused = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert (
        "[plugins.intercept]" in refused.stderr and "x1_private_key: no such file" in refused.stderr
    )


def _mount_namespaces() -> bool:
    """Whether this process may make a private mount namespace (unshare -m: root with
    CAP_SYS_ADMIN, as on the CI's machine; not in a container without it)."""
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.skipif(not _mount_namespaces(), reason="needs unshare -m (root, CAP_SYS_ADMIN)")
def test_a_store_bind_mounted_read_only_is_refused_naming_its_mount(tmp_path: Path) -> None:
    """The SQLite store bind-mounted read-only on its own (a container's volume with :ro) in a
    writable state_dir whose name holds a space, which /proc/self/mountinfo writes as \\040:
    root's `voipgw run` stopped at the store ("not a usable voipgw store (attempt to write a
    readonly database)", which blames the file) or at its first write. It refuses to start,
    naming the mount to make read-write as the operator wrote it, read from the kernel's own
    mount table. The mount is made in a private mount namespace
    (unshare -m), which nothing outside it sees and which ends with the gateway."""
    state = tmp_path / "voipgw state"
    state.mkdir()
    store = state / "voipgw.sqlite3"
    store.touch()
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{state}"\n[media]\nports = "{MEDIA_PORTS.text()}"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0"]\n[plugins]\nenable = ["udp"]\n'
    )
    script = (
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && '
        'exec "$2" -m gateway run --config "$3"'
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(store), sys.executable, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0, result.stderr
    assert (
        f"{path}: [gateway] state_dir: {store} is on a read-only file system: the SQLite store "
        f"cannot be written (mount {store} read-write)"
    ) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not _mount_namespaces(), reason="needs unshare -m (root, CAP_SYS_ADMIN)")
def test_a_state_dir_bind_mounted_read_only_is_refused_naming_its_mount(tmp_path: Path) -> None:
    """The whole state_dir bind-mounted read-only (a container's volume with :ro): `voipgw
    run` and check-config said it was on a read-only file system, and no more, where a single
    file so mounted names the mount to make read-write. Both name it now, read from the
    kernel's own mount table in a private mount namespace (unshare -m)."""
    state = tmp_path / "voipgw state"
    state.mkdir()
    path = tmp_path / "voipgw.toml"
    path.write_text(
        f'[gateway]\nstate_dir = "{state}"\n[media]\nports = "{MEDIA_PORTS.text()}"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0"]\n[plugins]\nenable = ["udp"]\n'
    )
    script = (
        'state=$1 python=$2 && shift 2 && mount --bind "$state" "$state" && '
        'mount -o remount,bind,ro "$state" && exec "$python" -m gateway "$@"'
    )
    expected = (
        f"{path}: [gateway] state_dir: {state} is on a read-only file system (mount {state} "
        f"read-write): the SQLite store ({state / 'voipgw.sqlite3'}) cannot be opened"
    )
    for command in (["run", "--config", str(path)], ["check-config", str(path)]):
        result = subprocess.run(
            ["unshare", "-m", "sh", "-c", script, "sh", str(state), sys.executable, *command],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0, result.stderr
        assert expected in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
