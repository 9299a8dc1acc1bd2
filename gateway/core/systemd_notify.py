"""Telling systemd how the gateway is doing: ready, reloading, stopping, and alive.

With ``Type=notify`` in the unit (README, "Under systemd"), ``systemctl start voipgw`` returns
once the gateway is ready (its listeners bound, media workers running, trunks named by DNS
resolved: the moment it logs ``voipgw ready``), not when its process was forked, so units ordered
``After=`` it (a proxy in front) start against a gateway that answers, and a gateway that fails
to start fails ``systemctl start``. ``systemctl reload`` (SIGHUP) shows the unit reloading until
the certificates are loaded, and a drain shows as stopping. With ``WatchdogSec=`` the gateway's
event loop pings systemd every half of it: a loop that stopped turning (a bug blocking it, which
no log line would tell) is killed and restarted by systemd (``Restart=on-failure``).

The protocol (sd_notify(3)): one datagram per message to the ``AF_UNIX`` socket that
``$NOTIFY_SOCKET`` names (a path, or ``@name`` in the abstract namespace), its text
newline-separated ``KEY=VALUE`` fields. That is all libsystemd's ``sd_notify`` does, so no
library. Outside systemd (no ``$NOTIFY_SOCKET``) nothing is sent. Like ``sd_notify`` with
``unset_environment``, the variables are taken out of the environment as they are read: the
media workers and whatever plugins start are other processes, whose messages systemd would
refuse (``NotifyAccess=main``) or, with ``all``, take as the gateway's.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import MutableMapping

import trio

log = logging.getLogger(__name__)


class SystemdNotifier:
    """The gateway's messages to systemd, when ``environ`` names its socket."""

    def __init__(self, environ: MutableMapping[str, str] = os.environ) -> None:
        path = environ.pop("NOTIFY_SOCKET", "")
        watchdog_usec = environ.pop("WATCHDOG_USEC", "")
        watchdog_pid = environ.pop("WATCHDOG_PID", "")
        self.address: str | None = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]  # the abstract namespace (unix(7))
        elif path.startswith("/"):
            self.address = path
        elif path:
            log.warning("systemd: NOTIFY_SOCKET %r is not a socket path: not notifying", path)
        self.watchdog_interval: float | None = None
        """Seconds between two watchdog pings (half of ``WatchdogSec=``), or None."""
        # systemd names the process it watches; a variable inherited from a parent that
        # systemd watched is not ours to answer (sd_watchdog_enabled(3)).
        ours = not watchdog_pid or watchdog_pid == str(os.getpid())
        if watchdog_usec.isdigit() and int(watchdog_usec) > 0 and ours:
            self.watchdog_interval = int(watchdog_usec) / 2e6
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC: which reload this is (Type=notify-reload, systemd 253; older ones
        # ignore the field).
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", "STATUS=reloading")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def send(self, *fields: str) -> None:
        """One message; never raises. A manager that cannot be reached is said once."""
        if self.address is None:
            return
        message = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.setblocking(False)  # a manager not reading must not stop the event loop
                sock.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning(
                    "systemd: cannot notify on NOTIFY_SOCKET (%s): the unit's state may lag",
                    os.strerror(exc.errno) if exc.errno else type(exc).__name__,
                )

    async def run_watchdog(self) -> None:
        """Ping systemd's watchdog from the event loop every ``watchdog_interval`` seconds: a
        ping proves the loop still runs tasks."""
        if self.address is None or self.watchdog_interval is None:
            return
        log.info("systemd: watchdog ping every %.1f s", self.watchdog_interval)
        while True:
            self.send("WATCHDOG=1")
            await trio.sleep(self.watchdog_interval)
