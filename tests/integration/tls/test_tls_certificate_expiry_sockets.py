"""``voipgw run`` serving a TLS certificate that expires within 14 days: one WARNING when its
listener starts (tests/component/transports/test_tls_certificate_expiry.py drives the daily
repeat on trio's clock), and check-config's warning, exit 0."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.integration.voipgw_process import voipgw_running
from tests.interop.harness.pki import TestPki
from tests.port_blocks import ModuleBlock

MEDIA_PORTS = ModuleBlock(20)


def test_a_certificate_expiring_within_14_days_is_warned_of_at_start(tmp_path: Path) -> None:
    pair = TestPki(tmp_path / "pki").ca("CA").issue("gateway", days=10)
    config = tmp_path / "voipgw.toml"
    config.write_text(
        f'[gateway]\nstate_dir = "{tmp_path / "state"}"\n[media]\nports = "{MEDIA_PORTS.text()}"\n'
        '[sip]\nlisten = ["tls:127.0.0.1:0"]\n[plugins]\nenable = ["tls"]\n'
        f'[plugins.tls]\ncertificate = "{pair.certificate}"\nprivate_key = "{pair.key}"\n'
    )
    warning = (
        rf"WARNING gateway\.plugins\.transports\.tls: tls: the certificate in "
        rf"{re.escape(str(pair.certificate))} expires on [0-9-]+ [0-9:]+ UTC \(in 9 days\): "
        "renew it"
    )
    ready = re.compile(r"voipgw ready: .*tls:127\.0\.0\.1:\d+")
    log = tmp_path / "voipgw.log"
    with voipgw_running(config, log, [ready, re.compile(warning)]):
        pass
    assert len(re.findall(warning, log.read_text())) == 1, log.read_text()
    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert re.search(
        r"\[plugins\.tls\] certificate: the certificate in .* \(in 9 days\)", checked.stderr
    )
