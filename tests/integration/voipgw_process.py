"""``voipgw run`` as a child process for integration tests: started with a config file, its log
(stderr) in a file, waited for until the lines that say it is ready, stopped with SIGTERM.

The interop tests' ``GatewayProcess`` writes its own config and probes with OPTIONS; these tests
write configs of their own (metrics, TLS files) and read the ports the gateway bound (port 0)
from its log.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from tests.interop.harness.processes import die_with_parent


@contextlib.contextmanager
def voipgw_running(
    config: Path,
    log: Path,
    ready: Sequence[re.Pattern[str]],
    *,
    new_session: bool = False,
    timeout: float = 30.0,
    args: Sequence[str] = (),
    prefix: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[subprocess.Popen[bytes], list[re.Match[str]]]]:
    """The process and the match of each ``ready`` pattern, once all are in the log. On the way
    out: SIGTERM (SIGKILL after 20 s), then exit code 0 and no traceback in the log are
    asserted. ``new_session``: its own process group, as a service's. ``args``: more options
    of ``voipgw run`` (``--log-level debug``). ``prefix``: a command that execs it (``prlimit
    --nofile=...``: the same process). ``env``: variables added to its environment."""
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [*prefix, sys.executable, "-m", "gateway", "run", "--config", str(config), *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=new_session,
            env=None if env is None else {**os.environ, **env},
            preexec_fn=die_with_parent,  # in a session of its own, no group signal reaches it
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            text = log.read_text()
            found = [pattern.search(text) for pattern in ready]
            if all(found):
                break
            assert process.poll() is None, text
            assert time.monotonic() < deadline, f"not ready:\n{text}"
            time.sleep(0.1)
        yield process, [match for match in found if match is not None]
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    text = log.read_text()
    assert process.returncode == 0, text
    assert "Traceback" not in text
