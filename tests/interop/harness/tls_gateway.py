"""``voipgw run`` with a TLS listener next to its UDP and TCP ones.

    with TlsGatewayProcess(tmp_path, tls={"mode": "mutual", "ca_bundles": [str(ca)]}) as gw:
        gw.tls_port          # TLS on 127.0.0.1:gw.tls_port; UDP/TCP on gw.port as usual
        gw.tls_address       # "127.0.0.1:PORT"

``tls`` is the ``[plugins.tls]`` table (scalars and lists; tables such as ``peers`` as inline
tables of strings). ``plugins`` is ``[plugins] enable`` (add ``"sdes"`` for SDES-SRTP).
Readiness is the usual OPTIONS over UDP, which the gateway answers only once every listener, the
TLS one included, is bound.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.interop.harness.gateway import GatewayProcess, TomlValue, toml_tables
from tests.interop.harness.ports import LOOPBACK, free_port, free_port_pair

TlsValue = TomlValue | Mapping[str, str]


def _inline_table(mapping: Mapping[str, str]) -> str:
    items = ", ".join(f'"{key}" = "{value}"' for key, value in mapping.items())
    return "{" + items + "}"


class TlsGatewayProcess(GatewayProcess):
    """A :class:`GatewayProcess` that also listens on TLS (``tls_port``), with the ``udp``,
    ``tcp`` and ``tls`` plugins enabled (or ``plugins``, which must include them) and ``tls``
    as its ``[plugins.tls]`` table."""

    def __init__(
        self,
        workdir: Path,
        *,
        tls: Mapping[str, TlsValue] | None = None,
        settings: Mapping[str, Mapping[str, TomlValue]] | None = None,
        extra_toml: str = "",
        port: int | None = None,
        tls_port: int | None = None,
        plugins: Sequence[str] = ("udp", "tcp", "tls"),
        **kwargs: Any,
    ) -> None:
        port = free_port_pair() if port is None else port
        self.tls_port = free_port("tcp") if tls_port is None else tls_port
        merged: dict[str, dict[str, TomlValue]] = {
            table: dict(keys) for table, keys in (settings or {}).items()
        }
        merged.setdefault("sip", {})["listen"] = [
            f"udp:{LOOPBACK}:{port}",
            f"tcp:{LOOPBACK}:{port}",
            f"tls:{LOOPBACK}:{self.tls_port}",
        ]
        merged.setdefault("plugins", {})["enable"] = list(plugins)
        scalars = {k: v for k, v in (tls or {}).items() if not isinstance(v, Mapping)}
        tables = {k: v for k, v in (tls or {}).items() if isinstance(v, Mapping)}
        tls_toml = toml_tables({"plugins.tls": scalars})  # type: ignore[dict-item]
        tls_toml += "".join(f"{key} = {_inline_table(value)}\n" for key, value in tables.items())
        super().__init__(
            workdir, settings=merged, extra_toml=tls_toml + extra_toml, port=port, **kwargs
        )

    @property
    def tls_address(self) -> str:
        """``127.0.0.1:PORT`` of the TLS listener."""
        return f"{LOOPBACK}:{self.tls_port}"

    @property
    def generated_certificate(self) -> Path:
        """Where the gateway writes its self-signed certificate when none is configured."""
        return self.state_dir / "tls" / "gateway.crt"
