"""Requests with a SIP scanner's User-Agent (``[sip] drop_user_agents``) are dropped: no answer,
no transaction, no authentication or failure counted, counted in the statistics and logged at
most once a minute. The same requests with a phone's User-Agent, or from a trunk's address, are
served as ever. And ``[gateway] auth_max_failures`` / ``auth_failure_window`` reach the failure
limit of a running gateway.

Set-up as b2bua_env.py: the carrier's trunk is 127.0.0.2; the scanner sends from 192.0.2.66.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from gateway.core.ids import SeededIds
from gateway.core.status import CallStatistics, StatusView
from gateway.testing.sip_agent import SipAgent
from tests.component.calls.b2bua_env import ALICE_PASSWORD, GW, TRUNK, B2bua, start_b2bua
from tests.component.calls.scanner_requests import SCANNER, request

SVWAR = "friendly-scanner"


async def answers(env: B2bua, source: tuple[str, int], datagrams: list[bytes]) -> list[bytes]:
    """Send ``datagrams`` from ``source``; every answer within 64*T1 (retransmissions too)."""
    start = len(env.network.capture)
    sock = env.network.bind(source)
    try:
        for data in datagrams:
            await sock.sendto(data, GW)
        await trio.sleep(33)
    finally:
        sock.close()
    return [d.data for d in env.network.capture[start:] if d.src == GW and d.dst == source]


async def test_scanner_requests_get_no_answer_and_cost_no_authentication(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    registration = env.gateway.registration
    assert registration is not None
    sent = [
        request(method, user, user_agent=agent, number=number)
        for number, (method, user, agent) in enumerate(
            [
                ("OPTIONS", "100", SVWAR),  # svmap
                ("REGISTER", "alice", SVWAR),  # svwar
                ("INVITE", "alice", "Friendly-Scanner"),  # case does not matter
                ("REGISTER", "3800569113", "sipcli/v1.8"),
                ("OPTIONS", "100", "sip scanner VaxSIPUserAgent/3.1"),
            ]
        )
    ]
    start = len(env.network.capture)
    sock = env.network.bind(SCANNER)
    for data in sent:
        await sock.sendto(data, GW)
    await trio.sleep(1)
    # No server transaction was made for any of them (none would answer or retransmit).
    flows = env.gateway.endpoint._server_flows.values()
    assert [flow for flow in flows if flow.remote == SCANNER] == []
    assert len(registration.failures) == 0 and env.calls == 0
    await trio.sleep(32)
    assert [d for d in env.network.capture[start:] if d.src == GW and d.dst == SCANNER] == []
    assert env.gateway.endpoint.statistics.dropped_user_agent == len(sent)
    assert StatusView(env.gateway, CallStatistics()).sip().dropped_user_agent == len(sent)


async def test_other_user_agents_and_none_are_answered(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    sent = [
        request("OPTIONS", "100", user_agent="Yealink SIP-T46S 66.86.0.15", number=1),
        request("OPTIONS", "100", user_agent=None, number=2),
        # "scanner" alone is not a fingerprint: a substring of one does not match.
        request("OPTIONS", "100", user_agent="scanner", number=3),
    ]
    found = await answers(env, SCANNER, sent)
    assert [a.split(b"\r\n")[0] for a in found] == [b"SIP/2.0 200 OK"] * 3
    assert env.gateway.endpoint.statistics.dropped_user_agent == 0


async def test_a_trunks_requests_are_never_dropped(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """A carrier's OPTIONS health check must get its 200 whatever its User-Agent says."""
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    found = await answers(
        env, (TRUNK[0], 5077), [request("OPTIONS", "100", user_agent=SVWAR, number=1)]
    )
    assert [a.split(b"\r\n")[0] for a in found] == [b"SIP/2.0 200 OK"]
    assert env.gateway.endpoint.statistics.dropped_user_agent == 0


async def test_an_empty_list_drops_nothing(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, sip={"drop_user_agents": []})
    assert env.gateway.endpoint.user_agents is None
    found = await answers(env, SCANNER, [request("OPTIONS", "100", user_agent=SVWAR, number=1)])
    assert [a.split(b"\r\n")[0] for a in found] == [b"SIP/2.0 200 OK"]


async def test_a_configured_list_replaces_the_default(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    env = await start_b2bua(nursery, tmp_path, voipgw_seed, sip={"drop_user_agents": ["evil"]})
    found = await answers(
        env,
        SCANNER,
        [
            request("OPTIONS", "100", user_agent="EvilScan 2", number=1),
            request("OPTIONS", "100", user_agent=SVWAR, number=2),
        ],
    )
    assert [a.split(b"\r\n")[0] for a in found] == [b"SIP/2.0 200 OK"]
    assert b"\r\nCall-ID: scan2\r\n" in found[0]  # friendly-scanner's, no longer dropped
    assert env.gateway.endpoint.statistics.dropped_user_agent == 1


async def test_drops_are_logged_at_most_once_a_minute_with_their_count(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "gateway.core.endpoint")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    sock = env.network.bind(SCANNER)
    for number in range(50):
        await sock.sendto(
            request("REGISTER", str(1000 + number), user_agent=SVWAR, number=number), GW
        )
    await trio.sleep(61)
    await sock.sendto(request("INVITE", "1000", user_agent="x" * 500 + SVWAR, number=99), GW)
    await trio.sleep(1)
    lines = [r.getMessage() for r in caplog.records if "SIP scanners" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "dropped 1 request(s)" in lines[0]
    assert "REGISTER from 192.0.2.66:5060, User-Agent 'friendly-scanner'" in lines[0]
    assert "dropped 50 request(s)" in lines[1]
    # The scanner's own text is cut short in the log.
    assert f"User-Agent '{'x' * 64}'" in lines[1] and SVWAR not in lines[1]


async def test_the_failure_limit_is_configured_blocks_one_address_only_and_lifts(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """``[gateway] auth_max_failures`` and ``auth_failure_window``: svcrack's pattern (wrong
    passwords for an account, from one address) is refused with 403 after 2 failures here,
    alice's own phone at another address registers meanwhile, and after 3 s the guesser is
    challenged again."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        gateway_table={"auth_max_failures": 2, "auth_failure_window": 3},
    )
    guesser = SipAgent(
        env.network,
        SCANNER,
        ids=SeededIds(voipgw_seed + 9),
        user="alice",
        password="not-her-password",
        proxy=GW,
    )
    await nursery.start(guesser.serve)
    assert (await guesser.register()).status == 401  # the first failure: challenged again
    refused = await guesser.register()  # the second: blocked
    assert (refused.status, refused.reason) == (403, "Too Many Failed Authentications")
    assert (await guesser.register()).status == 403
    assert (await env.alice.register()).status == 200  # her phone, from 127.0.0.3
    await trio.sleep(3)  # the failure counter runs on trio's clock, which autojump_clock moves
    assert (await guesser.register()).status == 401


async def test_unacknowledged_challenges_of_a_scan_are_not_logged_one_line_each(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """svwar -m INVITE (here with a User-Agent of its own, so not dropped) never ACKs the 407s:
    each server transaction ends at Timer H (RFC 3261 §17.2.1). That is routine for a scan,
    and each used to log an INFO line; a scan of 10,000 extensions wrote 10,000."""
    caplog.set_level(logging.INFO, "gateway.core.endpoint")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    sent = [
        request("INVITE", str(1000 + number), user_agent="disguised", number=number)
        for number in range(20)
    ]
    found = await answers(env, SCANNER, sent)
    finals = {a.split(b"\r\n")[0] for a in found} - {b"SIP/2.0 100 Trying"}
    assert finals == {b"SIP/2.0 407 Proxy Authentication Required"}
    await trio.sleep(5)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert [line for line in lines if "TransactionTimeout" in line] == []


async def test_a_transaction_s_log_line_names_its_key_as_before_the_upgrade(
    nursery: trio.Nursery,
    tmp_path: Path,
    autojump_clock: trio.abc.Clock,
    voipgw_seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The key in "transaction ...: ..." lines reads as the named tuple it was until session 37
    ("TransactionKey(method='INVITE', branch=..."), not as the plain tuple it became: scripts
    and log watchers match these lines."""
    caplog.set_level(logging.DEBUG, "gateway.core.endpoint")
    env = await start_b2bua(nursery, tmp_path, voipgw_seed)
    sent = [request("INVITE", "1000", user_agent="disguised", number=0)]
    await answers(env, SCANNER, sent)
    await trio.sleep(40)  # past Timer H (64*T1)
    lines = [r.getMessage() for r in caplog.records if "Timer H" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].startswith("transaction TransactionKey(method='INVITE', branch='z9hg4bk")
    assert lines[0].endswith("legacy=None): no ACK (Timer H)")


async def test_auth_block_time_bans_the_guessing_address_past_the_window(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """``[gateway] auth_block_time`` reaches the failure counter: the guesser is still refused
    after the 3 s window, while it goes on, and challenged again 60 s after it was banned;
    alice's phone at another address registers meanwhile."""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        gateway_table={"auth_max_failures": 2, "auth_failure_window": 3, "auth_block_time": 60},
    )
    guesser = SipAgent(
        env.network,
        SCANNER,
        ids=SeededIds(voipgw_seed + 9),
        user="alice",
        password="not-her-password",
        proxy=GW,
    )
    await nursery.start(guesser.serve)
    # The ban runs on trio's clock (monotonic, what autojump_clock moves), not the wall clock
    # that an NTP step would stretch or cut short.
    assert (await guesser.register()).status == 401
    assert (await guesser.register()).status == 403  # banned from here on
    banned_at = trio.current_time()
    # The ban table is one of the internal tables watched for leaks (benchmarks/soak.py).
    tables = dict(StatusView(env.gateway, CallStatistics()).tables())
    assert (tables["auth_failure_sources"], tables["auth_banned_sources"]) == (1, 1)
    for offset in (3.0, 30.0, 59.5):  # past the 3 s window, while it goes on
        await trio.sleep_until(banned_at + offset)
        assert (await guesser.register()).status == 403
    assert (await env.alice.register()).status == 200  # her phone, from 127.0.0.3
    await trio.sleep_until(banned_at + 60)
    assert (await guesser.register()).status == 401


async def test_an_ipv6_guesser_walking_its_64_is_banned_whole(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.abc.Clock, voipgw_seed: int
) -> None:
    """``[gateway] auth_ipv6_prefix_length = 64``: svcrack's pattern from a new IPv6 address
    for each guess. Two failures from two addresses of one /64 ban the /64: a third address of
    it is refused even with alice's right password, an address of the next /64 is challenged,
    and 60 s after the ban the /64 is challenged again. (2001:db8::/32 is the documentation
    prefix, RFC 3849: these addresses exist on the in-memory network only.)"""
    env = await start_b2bua(
        nursery,
        tmp_path,
        voipgw_seed,
        gateway_table={
            "auth_max_failures": 2,
            "auth_failure_window": 3,
            "auth_block_time": 60,
            "auth_ipv6_prefix_length": 64,
        },
    )

    async def agent(host: str, seed: int, password: str) -> SipAgent:
        sip_agent = SipAgent(
            env.network,
            (host, 5060),
            ids=SeededIds(voipgw_seed + seed),
            user="alice",
            password=password,
            proxy=GW,
        )
        await nursery.start(sip_agent.serve)
        return sip_agent

    first = await agent("2001:db8:1:2::66", 9, "not-her-password")
    second = await agent("2001:db8:1:2::67", 10, "not-her-password")
    phone_in_the_64 = await agent("2001:db8:1:2::7", 11, ALICE_PASSWORD)
    guesser_next_door = await agent("2001:db8:1:3::66", 12, "not-her-password")
    assert (await first.register()).status == 401
    refused = await second.register()  # the /64's second failure: banned
    assert (refused.status, refused.reason) == (403, "Too Many Failed Authentications")
    banned_at = trio.current_time()
    assert (await phone_in_the_64.register()).status == 403
    assert (await guesser_next_door.register()).status == 401  # its own first failure
    tables = dict(StatusView(env.gateway, CallStatistics()).tables())
    # Two prefixes counted, one banned: the tables hold prefixes, not addresses.
    assert (tables["auth_failure_sources"], tables["auth_banned_sources"]) == (2, 1)
    await trio.sleep_until(banned_at + 59.5)
    assert (await phone_in_the_64.register()).status == 403
    await trio.sleep_until(banned_at + 60)
    assert (await phone_in_the_64.register()).status == 200
