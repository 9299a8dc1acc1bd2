"""docs/configuration.md documents every key of every core table and built-in plugin table."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from gateway.core import config as cfg
from gateway.plugins import metrics, stir_shaken
from gateway.plugins.keyexchange import dtls_srtp
from gateway.plugins.taps import hep
from gateway.plugins.transports import tcp, tls, udp, ws, wss

DOC = (Path(__file__).parents[3] / "docs" / "configuration.md").read_text()
TABLES = {
    "gateway": cfg.GatewaySection,
    "sip": cfg.SipSection,
    "media": cfg.MediaSection,
    "store": cfg.StoreSection,
    "plugins": cfg.PluginsSection,
    "numbering": cfg.NumberingPlan,
    "feature_codes": cfg.FeatureCodes,
    "dns": cfg.DnsSection,
    "presence": cfg.PresenceSection,
    "registrar": cfg.RegistrarSection,
    "plugins.udp": udp.UdpConfig,
    "plugins.tcp": tcp.TcpConfig,
    "plugins.tls": tls.TlsConfig,
    "plugins.ws": ws.WsConfig,
    "plugins.wss": wss.WssConfig,
    "plugins.dtls": dtls_srtp.DtlsConfig,
    "plugins.metrics": metrics.MetricsConfig,
    "plugins.stir_shaken": stir_shaken.StirShakenConfig,
    "plugins.hep": hep.HepConfig,
    "[trunks]": cfg.TrunkConfig,  # an array of tables: ## `[[trunks]]`
    "[dialog_watch_groups]": cfg.DialogWatchGroup,
}
CASES = [(table, field.name) for table, cls in TABLES.items() for field in attrs.fields(cls)]


def _section(table: str) -> str:
    start = DOC.index(f"## `[{table}]`") if f"## `[{table}]`" in DOC else DOC.index(f"`[{table}]`")
    end = DOC.find("\n#", start + 1)
    return DOC[start : end if end != -1 else len(DOC)]


@pytest.mark.parametrize(("table", "key"), CASES, ids=[f"{t}.{k}" for t, k in CASES])
def test_key_is_documented_in_its_table(table: str, key: str) -> None:
    assert f"| `{key}` |" in _section(table), f"[{table}] {key} is not in docs/configuration.md"
