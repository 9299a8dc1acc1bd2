"""Device plugins installed the way operators install them (a distribution with an entry point,
enabled in the config) reacting to real peers' messages: sipp plays a quirky carrier
(scenarios/calls/uac_call_quirks.xml: User-Agent "quirky-carrier/1.0", an offer of G.722, PCMA,
PCMU and telephone-event, a BYE whose Reason lacks its protocol) calling alice's DID; alice's
phone is sipp too, registered as "sipp-interop".

- ``DeviceProfile.codecs``: the example plugin (plugin_examples/voipgw-example-devices) with
  the model "sipp-interop" and ``codecs = ["PCMU", "PCMA", "telephone-event"]``: the INVITE
  alice's phone gets offers those only, in that order (not the carrier's, which put PCMA
  first), and the call is set up and torn down as usual;
- ``gateway_inbound_message``: a plugin of the test's (installed beside it) that knows the
  carrier by its User-Agent (its profile, ``inbound.device``) gives its BYE's Reason the
  Q.850 protocol; the BYE alice's phone gets carries the fixed Reason, which the core passed
  on as it received it after the hook.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests.example_plugin import install_example_plugin
from tests.interop.harness import GatewayProcess, SippUas, run_sipp_uac
from tests.interop.sipp_calls import ACCOUNTS, DID, TRUNK_IP, inbound_trunk, register

pytestmark = pytest.mark.interop

QUIRKS_PLUGIN = '''\
"""Carrier quirks: a plugin as an operator would write one for a carrier's SBC."""

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import DeviceProfile
from gateway.core.sip.message import Request

CARRIER = DeviceProfile(name="quirky-carrier", user_agent_prefixes=("quirky-carrier/",))


@hookimpl
def gateway_register_device_profiles(registry, config):
    registry.add(CARRIER.name, CARRIER)


@hookimpl
def gateway_inbound_message(inbound):
    message = inbound.message
    if inbound.device is not CARRIER or not isinstance(message, Request):
        return
    reason = message.headers.get("Reason")
    if reason is not None and reason.startswith("cause="):
        fixed = f'Q.850;{reason};text="fixed by quirks"'
        inbound.message = message.with_headers(message.headers.set("Reason", fixed))
'''


@pytest.fixture(scope="module")
def plugins_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example device plugin pip-installed, and the quirks plugin as a distribution of its
    own (module, .dist-info with its entry point), in one directory for the gateway's
    PYTHONPATH."""
    site = tmp_path_factory.mktemp("site")
    install_example_plugin(site)
    (site / "voipgw_test_quirks.py").write_text(QUIRKS_PLUGIN)
    info = site / "voipgw_test_quirks-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: voipgw-test-quirks\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text("[voipgw.plugins]\nquirks = voipgw_test_quirks\n")
    return site


CONFIG = textwrap.dedent(
    """\
    [plugins]
    enable = ["udp", "tcp", "example-devices", "quirks"]

    [plugins.example-devices]
    models = ["sipp-interop"]
    codecs = ["PCMU", "PCMA", "telephone-event"]

    """
)


def test_a_phones_codecs_and_a_carriers_reason_are_fixed_by_plugins(
    tmp_path: Path, plugins_site: Path
) -> None:
    alice = SippUas("uas_answer.xml", workdir=tmp_path)
    with GatewayProcess(
        tmp_path,
        accounts=ACCOUNTS,
        extra_toml=CONFIG + inbound_trunk(),
        env={"PYTHONPATH": str(plugins_site)},
    ) as gw:
        register(gw, tmp_path, "udp", alice.port)
        with alice:
            run_sipp_uac(
                "calls/uac_call_quirks.xml",
                gw.address,
                workdir=tmp_path,
                service=DID,
                local_ip=TRUNK_IP,
            ).check()
            seen = alice.wait(timeout=10)
        (invite,) = seen.received("INVITE ")
        (bye,) = seen.received("BYE ")
        listed = gw.cli("plugins").stdout

    # The profile's codecs, in its order; the carrier offered G.722, PCMA, PCMU.
    media = re.search(r"^m=audio \d+ RTP/AVP ([\d ]+)$", invite, re.MULTILINE)
    assert media is not None and media[1].split() == ["0", "8", "101"], invite
    assert "G722" not in invite and "a=fmtp:101 0-16" in invite
    # The carrier's Reason as the quirks plugin fixed it, passed on to alice's phone.
    reasons = re.findall(r"^Reason:\s*(.*)$", bye, re.MULTILINE | re.IGNORECASE)
    assert reasons == ['Q.850;cause=16;text="fixed by quirks"'], bye
    line = next(ln for ln in listed.splitlines() if ln.startswith("quirks"))
    assert "gateway_inbound_message" in line and "voipgw-test-quirks 1.0" in line
