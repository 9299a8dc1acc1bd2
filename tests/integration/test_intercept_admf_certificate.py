"""TS 103 221-1 error 1030 over real mutual TLS: with ``admf_certificates``, an X1 message is
taken only when its ``admfIdentifier`` is the ADMF whose client certificate the connection
presented, in a real ``voipgw run`` on 127.0.0.1 (the client of
test_intercept_certificate_sighup: Python's ssl with each ADMF's certificate from one LI CA).

ADMF 1 pings as itself (answered); ADMF 2, certified by the same CA, pings as ADMF 1 (1030),
as an ADMF nobody configured (1040), and as ADMF 1 to another NE (1060, checked first); the
plugin's own logger says which certificate was refused, no other logger does (the test's name
has no "admf": its path is in log lines).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from tests.integration.x1_certificates import (
    OWN_LOGGER,
    Pki,
    gateway,
    install,
    ordinary,
    x1_ping,
)
from tests.interop.harness.pki import TestPki

NS = "{http://uri.etsi.org/03221/X1/2017/10}"


def answered(answer: str) -> tuple[str, str]:
    """(the response's xsi:type, its errorCode or "") from an HTTP answer to one Ping."""
    head, _, body = answer.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 200 "), answer
    (message,) = ET.fromstring(body).findall(f"{NS}x1ResponseMessage")
    kind = message.get("{http://www.w3.org/2001/XMLSchema-instance}type", "")
    code = message.findtext(f"{NS}errorInformation/{NS}errorCode", "")
    return kind, code


def test_a_request_is_taken_only_for_the_identifier_of_its_client_certificate(
    tmp_path: Path,
) -> None:
    ca = TestPki(tmp_path / "pki").ca("LI CA")
    names = ("x1-a", "delivery", "sip-a", "admf-1", "admf-2")
    pki = Pki(ca, {name: ca.issue(name, hosts=["127.0.0.1"]) for name in names})
    live = tmp_path / "live"
    live.mkdir()
    install(pki.issued["x1-a"], live / "x1.crt", live / "x1.key")
    install(pki.issued["sip-a"], live / "sip.crt", live / "sip.key")
    table = '[plugins.intercept.admf_certificates]\n"admf-1" = "CN=admf-1"\n'

    with gateway(tmp_path, pki, live, table) as running:
        assert answered(x1_ping(pki, running.x1)[1]) == ("PingResponse", "")
        assert answered(x1_ping(pki, running.x1, client="admf-2")[1]) == ("ErrorResponse", "1030")
        unknown = x1_ping(pki, running.x1, admf="admf-9", client="admf-2")[1]
        assert answered(unknown) == ("ErrorResponse", "1040")
        # For another NE: 1060, checked before the ADMF and its certificate (no 1030 logged
        # for it below), and never 1050 (x1.py: that is the ADMF's code for our reports).
        elsewhere = x1_ping(pki, running.x1, client="admf-2", ne="gw-other")[1]
        assert answered(elsewhere) == ("ErrorResponse", "1060")
        assert "<neIdentifier>gw-int</neIdentifier>" in elsewhere  # answered under our name
        log = running.text()

    plugin = set(log.splitlines()) - set(ordinary(log))  # the plugin's loggers' lines
    refused = [line for line in plugin if "refused (1030)" in line]
    assert len(refused) == 1, log
    expected = f"WARNING {OWN_LOGGER}.x1: intercept: X1 request for admfIdentifier 'admf-1'"
    assert expected in refused[0]
    assert "subject is CN=admf-2, admf_certificates names CN=admf-1" in refused[0]
    for line in ordinary(log):
        assert "admf" not in line.lower() and "intercept" not in line.lower(), line
