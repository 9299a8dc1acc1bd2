"""Harness for interop tests: the gateway, sipp, baresip, captures and tones on 127.0.0.1.

Each peer is a context manager that starts its process, polls until it is ready (never a fixed
sleep) and stops it on the way out, failed test or not; every child process also dies with the
pytest process. Missing peers skip locally and fail in CI (``require_peer``).

- ports: ``free_port(kind)``, ``free_port_pair()``, ``free_port_block(count)``,
  ``wait_listening(port)``
- gateway: ``GatewayProcess`` (``voipgw run`` with a generated config)
- sipp: ``run_sipp_uac(...)``, ``SippUas``, ``SippResult``, ``SCENARIOS``
- capture: ``Capture``, ``udp_filter(...)``, ``rtp_streams(pcap, ports)``, ``rtp_packets``,
  ``udp_flows``
- baresip: ``Baresip``
- audio: ``tone_wav``, ``tone_ulaw``, ``dominant_frequency``, ``analyse_tone``
- pki: ``TestPki`` (a test CA, certificates it issues, self-signed ones), ``Issued``
- tls_gateway: ``TlsGatewayProcess`` (``GatewayProcess`` with a TLS listener too)
- openssl: ``s_client(...)``, ``SClientResult``, ``SServer`` (a TLS trunk)
- stunnel: ``StunnelClient`` (TLS for sipp, which has none)
- kamailio: ``KamailioDispatcher`` (kamailio's dispatcher in front of gateway nodes; imported
  from its module)
- ws_client: ``WsSipClient`` (a SIP-over-WebSocket softphone on the ``websockets`` package;
  imported from its module, so tests without that package still import the harness)
- chromium: ``Chromium`` (headless, showing the softphone page of tests/interop/browser/) and
  ``PageServer`` (serves the page, collects its reports); imported from its module
"""

from __future__ import annotations

from tests.interop.harness.audio import (
    ToneReport,
    analyse_tone,
    dominant_frequency,
    tone_ulaw,
    tone_wav,
)
from tests.interop.harness.baresip import Baresip, BaresipError
from tests.interop.harness.capture import (
    Capture,
    rtp_packets,
    rtp_streams,
    udp_filter,
    udp_flows,
)
from tests.interop.harness.gateway import GatewayProcess, options_ok
from tests.interop.harness.openssl import SClientResult, SServer, s_client
from tests.interop.harness.pki import Issued, TestCa, TestPki
from tests.interop.harness.ports import (
    LOOPBACK,
    free_port,
    free_port_block,
    free_port_pair,
    wait_listening,
)
from tests.interop.harness.sipp import SCENARIOS, SippResult, SippUas, run_sipp_uac
from tests.interop.harness.stunnel import StunnelClient
from tests.interop.harness.tls_gateway import TlsGatewayProcess

__all__ = [
    "LOOPBACK",
    "SCENARIOS",
    "Baresip",
    "BaresipError",
    "Capture",
    "GatewayProcess",
    "Issued",
    "SClientResult",
    "SServer",
    "SippResult",
    "SippUas",
    "StunnelClient",
    "TestCa",
    "TestPki",
    "TlsGatewayProcess",
    "ToneReport",
    "analyse_tone",
    "dominant_frequency",
    "free_port",
    "free_port_block",
    "free_port_pair",
    "options_ok",
    "rtp_packets",
    "rtp_streams",
    "run_sipp_uac",
    "s_client",
    "tone_ulaw",
    "tone_wav",
    "udp_filter",
    "udp_flows",
    "wait_listening",
]
