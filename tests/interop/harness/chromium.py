"""Headless Chromium running the test softphone page (tests/interop/browser/), and the tiny
HTTP server on 127.0.0.1 that serves the page and collects what it reports.

    with PageServer() as server, Chromium(tmp_path, server.url("softphone.html", ...)):
        server.wait_for("media", timeout=20)

The page POSTs each step as JSON to ``/report`` (``{"kind": ..., ...}``), in order; the test
polls ``PageServer.wait_for(kind)``, never sleeps. A page served from http://127.0.0.1 is a
secure context, so getUserMedia works (with Chromium's fake microphone) and the page may open a
plain ``ws://`` WebSocket to the gateway.

Chromium runs in its own process group (it forks zygote, renderer, GPU and network service
processes); on the way out the whole group gets SIGTERM, then SIGKILL, so no child outlives the
test. The browser process also gets SIGKILL when the pytest process dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

from tests.conftest import require_peer
from tests.interop.harness.ports import LOOPBACK, free_port
from tests.interop.harness.processes import die_with_parent, tail

#: The softphone page and its script.
PAGE_DIR = Path(__file__).parents[1] / "browser"

#: What the test needs from Chromium beyond headless mode:
#: - a fake microphone without a permission prompt (getUserMedia in a headless browser);
#: - host candidates that reach 127.0.0.1 on any machine: WebRTC skips loopback interfaces
#:   unless told (a machine with only a loopback would have no candidate), and may hide local
#:   addresses behind mDNS ``.local`` names (RFC 8828; not for a page granted the microphone,
#:   but the test should not depend on that);
#: - nothing that talks to the Internet (component updates, sign-in, safe browsing).
CHROMIUM_FLAGS = (
    "--headless=new",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--enable-logging=stderr",
    "--v=0",
)


#: The Fetch standard's "bad ports" (§2.9, port blocking): a browser refuses a connection to
#: any of them before a packet leaves, and the page sees only "WebSocket error". 10080 is among
#: the tests' port units (tests/port_blocks.py, 10000 up): a CI run failed on it once.
BAD_PORTS = frozenset(
    {1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95}
    | {101, 102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161}
    | {179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563}
    | {587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060}
    | {5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080}
)


def page_port() -> int:
    """A TCP port (``free_port``) for a listener the page connects to (the gateway's ws or
    wss): never one of :data:`BAD_PORTS`."""
    while (port := free_port("tcp")) in BAD_PORTS:
        pass  # handed out now, never again: the next one is another port
    return port


def chromium_binary() -> str:
    """Path of Debian's Chromium; skip (locally) or fail (CI) when it is not installed."""
    return require_peer("chromium")


class _Handler(SimpleHTTPRequestHandler):
    server: PageServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(PAGE_DIR), **kwargs)

    def do_POST(self) -> None:
        if self.path != "/report":
            self.send_error(404)
            return
        length = min(int(self.headers.get("Content-Length", "0")), 1 << 20)
        try:
            report = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400)
            return
        self.server.add_report(report)
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the reports are the record; no access log on stderr


class PageServer(ThreadingHTTPServer):
    """Serves tests/interop/browser/ on 127.0.0.1 (port 0) and collects the page's reports."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__((LOOPBACK, 0), _Handler)
        self.reports: list[dict[str, Any]] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``, the page's origin (the WebSocket's ``Origin``)."""
        return f"http://{LOOPBACK}:{self.server_address[1]}"

    def url(self, page: str, query: Mapping[str, str | int]) -> str:
        return f"{self.origin}/{page}?{urlencode(query)}"

    def add_report(self, report: dict[str, Any]) -> None:
        with self._changed:
            self.reports.append(report)
            self._changed.notify_all()

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        with self._changed:
            return [report for report in self.reports if report.get("kind") == kind]

    def wait_for(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        """The first report of ``kind``; AssertionError (with every report so far) when none
        comes within ``timeout`` s, or when the page reports an error first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for report in self.reports:
                    if report.get("kind") == kind:
                        return report
                    if report.get("kind") == "error":
                        raise AssertionError(f"the page failed: {report}\n{self.describe()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {kind!r} report in time:\n{self.describe()}")
                self._changed.wait(left)

    def describe(self) -> str:
        """Every report so far, one a line, each SDP body after its report."""
        lines = []
        for report in self.reports:
            lines.append(json.dumps({k: v for k, v in report.items() if k != "sdp"}))
            if report.get("sdp"):
                lines.append(str(report["sdp"]).rstrip())
        return "\n".join(lines)

    def __enter__(self) -> PageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


class Chromium:
    """Headless Chromium showing ``url``, with a throwaway profile under ``workdir`` and
    ``flags`` added to :data:`CHROMIUM_FLAGS`."""

    def __init__(self, workdir: Path, url: str, flags: Sequence[str] = ()) -> None:
        self.binary = chromium_binary()
        self.flags = tuple(flags)  # beyond CHROMIUM_FLAGS
        self.profile = workdir / "chromium-profile"
        self.log_path = workdir / "chromium.log"
        self.url = url
        self.process: subprocess.Popen[bytes] | None = None

    def args(self) -> list[str]:
        args = [self.binary, *CHROMIUM_FLAGS, *self.flags, f"--user-data-dir={self.profile}"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        return [*args, self.url]

    def version(self) -> str:
        """``Chromium 120.0.6099.224 built on Debian ...``."""
        result = subprocess.run(
            [self.binary, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        return result.stdout.strip()

    def start(self) -> None:
        self.profile.mkdir(parents=True, exist_ok=True)  # and the log's directory
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.args(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() reaches every child
                preexec_fn=die_with_parent,
            )

    def stop(self) -> None:
        """SIGTERM to Chromium's process group, SIGKILL to what is left after 5 s; returns
        once no process of the group is left."""
        if self.process is None:
            return
        group = self.process.pid  # a session leader's pid is its group's id
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, sig)
            deadline = time.monotonic() + 5
            while _group_alive(group) and time.monotonic() < deadline:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=0.05)  # reaps the browser process itself
            if not _group_alive(group):
                break
        self.process.wait()

    def log_text(self) -> str:
        return tail(self.log_path, 60)

    def __enter__(self) -> Chromium:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is not None:
            print(f"--- chromium log ({self.log_path}) ---")
            print(self.log_text())


def _group_alive(group: int) -> bool:
    """Whether a process of process group ``group`` is left (signal 0 checks, sends nothing)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True
