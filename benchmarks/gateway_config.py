"""The gateway configuration the SIP benchmarks run voipgw with (sip_calls.py, soak.py).

Both put voipgw between sipp phones on 127.0.0.1 the same way: MD5 digest first (Debian's sipp
3.6 answers only the first challenge and knows only MD5), the outbound trunk ``carrier`` for +49
(a sipp UAS), and the calling trunk ``pbx`` recognised by its source address 127.0.0.2. What
differs (listeners, plugins, timers, the store) each script passes in as TOML text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"
TRUNK_IP = "127.0.0.2"  # the calling trunk pbx's source address


def gateway_config(
    state_dir: Path,
    *,
    listen: Sequence[str],
    media_ports: str,
    carrier_port: int,
    gateway_lines: str = "",
    sections: str = "",
    sip_lines: str = "",
    media_lines: str = "",
) -> str:
    """voipgw's configuration file. ``listen``: the ``[sip] listen`` entries; ``carrier_port``:
    the UDP port of the ``carrier`` trunk's UAS on 127.0.0.1. ``gateway_lines`` and
    ``sip_lines`` (each line ending in a newline) go at the end of ``[gateway]`` and ``[sip]``,
    ``media_lines`` at the end of ``[media]``;
    ``sections`` (whole tables: ``[store]``, ``[plugins]`` ...) between them."""
    listeners = ", ".join(f'"{entry}"' for entry in listen)
    return f"""\
[gateway]
state_dir = "{state_dir}"
digest_algorithms = ["MD5"]
{gateway_lines}
{sections}[sip]
listen = [{listeners}]
{sip_lines}
[media]
address = "{LOOPBACK}"
ports = "{media_ports}"
{media_lines}
[[trunks]]
name = "carrier"
address = "udp:{LOOPBACK}:{carrier_port}"
prefixes = ["+49"]
allowed_sources = []

[[trunks]]
name = "pbx"
address = "udp:{TRUNK_IP}:5060"
allowed_sources = ["{TRUNK_IP}"]
"""
