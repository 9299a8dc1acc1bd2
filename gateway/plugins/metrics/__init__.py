"""The ``metrics`` plugin: a Prometheus exporter of what an SBC's operator watches (calls,
registrations, SIP overload, media and SRTP, key exchanges, trunks).

Theory of operation. The plugin registers one monitoring service (``gateway_register_services``);
the core starts its ``run`` with the gateway's read-only status view. ``run`` serves HTTP on
``[plugins.metrics] listen`` (:mod:`.server`); each GET of ``path`` reads the view and renders
the text exposition format 0.0.4 (:mod:`.collect`, :mod:`.exposition`). All the work is done
at a scrape: the core keeps its counters anyway, and counts calls for the view only while a
service such as this one is registered.

No TLS and no authentication: the exposition holds no secret and no call's identity, but it
shows the traffic. Bind it to the loopback (the default) or a management network, and let the
scraper's network reach it, nobody else's (docs/metrics.md).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import TYPE_CHECKING, Any

import attrs
import trio

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import GatewayStatus
from gateway.plugins.metrics.collect import render
from gateway.plugins.metrics.server import MetricsServer

if TYPE_CHECKING:
    from gateway.core.interfaces import Service
    from gateway.core.plugins import Registry

log = logging.getLogger(__name__)

DEFAULT_PORT = 9464  # the default port allocations of Prometheus exporters (its wiki)
_PATH = re.compile(r"/[A-Za-z0-9._~/-]*\Z")


@attrs.frozen
class MetricsConfig:
    """``[plugins.metrics]``. See docs/configuration.md."""

    listen: str = f"127.0.0.1:{DEFAULT_PORT}"
    path: str = "/metrics"

    def __attrs_post_init__(self) -> None:
        # structure() reports a ValueError as a config error of this table; say which key.
        self.address  # noqa: B018 - checks it
        if not _PATH.match(self.path):
            raise ValueError(
                f"path: expected an absolute path of letters, digits and ._~/- "
                f"(e.g. /metrics), not {self.path!r}"
            )

    @property
    def address(self) -> tuple[str, int]:
        """``listen`` as (IP address, port); an IPv6 address is written in brackets."""
        host, _, port_text = self.listen.rpartition(":")
        bracketed = host.startswith("[") and host.endswith("]")
        host = host[1:-1] if bracketed else host
        try:
            address = ipaddress.ip_address(host)
            if (address.version == 6) != bracketed:
                raise ValueError
            port = int(port_text)
            if not 0 <= port < 65536:
                raise ValueError
        except ValueError:
            raise ValueError(
                f"listen: expected ADDRESS:PORT (e.g. 127.0.0.1:9464 or [::1]:9464), "
                f"not {self.listen!r}"
            ) from None
        return host, port


class MetricsExporter:
    """The ``metrics`` service (``interfaces.Service``)."""

    name = "metrics"

    def __init__(self, config: MetricsConfig) -> None:
        self.config = config
        self.server: MetricsServer | None = None

    async def run(
        self,
        status: GatewayStatus,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve scrapes until cancelled; started once the port is bound (a port taken stops
        the gateway's start-up, saying so)."""
        server = MetricsServer(
            lambda: render(status), path=self.config.path, server=f"voipgw/{status.version}"
        )
        self.server = server
        host, port = self.config.address
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(server.serve, host, port)
            shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            log.info(
                "metrics: Prometheus exposition on http://%s:%d%s",
                shown,
                bound[1],
                self.config.path,
            )
            task_status.started()


@hookimpl
def gateway_plugin_config() -> type:
    return MetricsConfig


@hookimpl
def gateway_register_services(registry: Registry[Any], config: MetricsConfig) -> None:
    """Register the exporter (its table is optional: the defaults serve on the loopback)."""
    registry.add(MetricsExporter.name, MetricsExporter(config))


if TYPE_CHECKING:

    def _conforms(exporter: MetricsExporter) -> None:
        _service: Service = exporter
