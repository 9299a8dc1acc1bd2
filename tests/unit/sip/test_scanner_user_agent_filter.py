"""The User-Agent check of ``[sip] drop_user_agents`` (gateway/core/sip/scanners.py)."""

from __future__ import annotations

from gateway.core.config import DEFAULT_DROP_USER_AGENTS
from gateway.core.sip import scanners
from gateway.core.sip.scanners import UserAgentFilter


def test_the_default_fingerprints_match_what_scanners_send_case_insensitively() -> None:
    check = UserAgentFilter(DEFAULT_DROP_USER_AGENTS)
    for agent in (
        "friendly-scanner",  # sipvicious 0.3.3 svmap, svwar, svcrack
        "Friendly-Scanner",
        "sipcli/v1.8",
        "sipvicious",
        "VaxSIPUserAgent/3.1",
        "pplsip",
        "sundayddr",
    ):
        assert check.matches(agent), agent


def test_phones_and_trunks_do_not_match() -> None:
    check = UserAgentFilter(DEFAULT_DROP_USER_AGENTS)
    for agent in (
        "Yealink SIP-T46S 66.86.0.15",
        "PolycomVVX-VVX_450-UA/6.4.3.5018",
        "Grandstream GXP2170 1.0.11.23",
        "Asterisk PBX 20.5.0",
        "FreeSWITCH-mod_sofia/1.10.11",
        "baresip v1.0.0 (x86_64/linux)",
        "sipp",
        "MySipClient 2.1",  # not sipcli's "sipcli/v1.8"
        "scanner",
        "",
    ):
        assert not check.matches(agent), agent


def test_the_memo_stays_bounded_and_keeps_its_verdicts() -> None:
    check = UserAgentFilter(["friendly-scanner"])
    for number in range(scanners.MEMO_SIZE * 3):
        assert check.matches(f"friendly-scanner {number}")
        assert not check.matches(f"phone {number}")
        assert len(check._verdicts) <= scanners.MEMO_SIZE
    assert check.matches("friendly-scanner") and check.matches("friendly-scanner")
    assert not check.matches("phone") and not check.matches("phone")
