"""``voipgw run`` started with a service's soft open-files limit of 1024 (systemd's default,
``DefaultLimitNOFILE=1024:524288``) raises it to the hard limit before it binds a socket, and its
media workers have the raised limit too (gateway/core/open_files.py). Before session 63 it ran
with 1024: calls past about 250 at once were refused with "internal error" and a traceback each
(OSError: Too many open files) while media ports were free (docs/benchmarks.md, session 63)."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import missing
from tests.integration.voipgw_process import voipgw_running
from tests.interop.harness.processes import children_of
from tests.port_blocks import ModuleBlock

MEDIA_PORTS = ModuleBlock(40)


def open_files_limits(pid: int) -> tuple[int, int]:
    """The soft and hard "Max open files" of process ``pid`` (/proc/PID/limits)."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-files line in /proc/{pid}/limits")


def prlimit(nofile: str) -> list[str]:
    """The command prefix that starts the gateway with open-files limits ``SOFT:HARD`` (as a
    service's: systemd gives 1024 soft), lowering them only, which needs no privilege."""
    found = shutil.which("prlimit")
    if found is None:
        missing("prlimit is not installed (apt-get install util-linux)")
    return [found, f"--nofile={nofile}"]


@contextlib.contextmanager
def running_under(tmp_path: Path, nofile: str, workers: int) -> Iterator[subprocess.Popen[bytes]]:
    """``voipgw run`` on MEDIA_PORTS with ``[media] workers``, started under ``prlimit
    --nofile=SOFT:HARD``, once it says it is ready; its log is ``tmp_path / "voipgw.log"``."""
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n'
        '[sip]\nlisten = ["udp:127.0.0.1:0"]\n'
        f'[media]\naddress = "127.0.0.1"\nports = "{MEDIA_PORTS.text()}"\nworkers = {workers}\n'
        '[plugins]\nenable = ["udp"]\n'
    )
    ready = [re.compile(r"voipgw ready: ")]
    log = tmp_path / "voipgw.log"
    with voipgw_running(config, log, ready, prefix=prlimit(nofile)) as (process, _):
        yield process


@pytest.mark.parametrize("workers", [1, 2])
def test_a_service_soft_limit_is_raised_to_the_hard_limit_for_the_workers_too(
    tmp_path: Path, workers: int
) -> None:
    log = tmp_path / "voipgw.log"
    with running_under(tmp_path, "1024:4096", workers) as process:
        assert open_files_limits(process.pid) == (4096, 4096)
        started = log.read_text()
        assert "open files: limit raised from 1024 to 4096 (the hard limit)" in started
        assert started.index("open files: limit raised") < started.index("voipgw ready: ")
        assert "open files: the limit is" not in started  # enough for 40 media ports
        if workers > 1:
            media_workers = children_of(process.pid)
            assert len(media_workers) == workers, media_workers
            for pid in media_workers:
                assert open_files_limits(pid) == (4096, 4096)


def test_a_hard_limit_under_what_the_media_ports_need_is_a_warning(tmp_path: Path) -> None:
    log = tmp_path / "voipgw.log"
    with running_under(tmp_path, "256:512", workers=1) as process:
        assert open_files_limits(process.pid) == (512, 512)
        started = log.read_text()
    assert "open files: limit raised from 256 to 512 (the hard limit)" in started
    assert (
        "WARNING gateway.core.open_files: open files: the limit is 512, under the 1064 that the"
        f" gateway needs for [media] ports {MEDIA_PORTS.text()} and 1024 more (connections, the"
        " store)"
    ) in started
