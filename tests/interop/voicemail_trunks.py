"""The voicemail trunk of the sipp MWI tests: moved here from test_mwi_sipp.py so that no test
module imports another."""

from __future__ import annotations

from tests.interop.sipp_calls import DID, TRUNK_IP


def voicemail_trunk(port: int) -> str:
    """The voicemail platform's trunk (sipp on TRUNK_IP at ``port``), alice's DID on it."""
    return (
        "[[trunks]]\n"
        'name = "voicemail"\n'
        f'address = "udp:{TRUNK_IP}:{port}"\n'
        f'allowed_sources = ["{TRUNK_IP}"]\n'
        "voicemail = true\n"
        f'dids = {{"{DID}" = "alice"}}\n'
    )
