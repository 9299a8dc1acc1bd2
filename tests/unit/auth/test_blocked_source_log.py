"""Requests refused because their source is blocked (too many failed authentications) are
logged at most once every BLOCKED_LOG_INTERVAL seconds with their count. svcrack kept sending
REGISTERs while blocked (over 4000 in 30 s against voipgw run) and each got its own WARNING line.
The failure limit itself comes from ``[gateway] auth_max_failures`` and ``auth_failure_window``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from gateway.core.auth.client import authorize
from gateway.core.auth.digest import Authenticated, AuthKind
from gateway.core.auth.failures import FailurePolicy
from gateway.core.logs import LineFormatter
from gateway.core.registration import BLOCKED_LOG_INTERVAL, RegistrationService
from gateway.core.sip.message import Request, Response
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import Flow, FlowKey
from tests.fail2ban_regex import FAIL2BAN_HOST, FAIL2BAN_SUBNET, as_fail2ban_reads
from tests.unit.sip.sip_builders import request

GUESSER = ("192.0.2.66", 5060)
PHONE = ("192.0.2.7", 5060)


async def _send(data: bytes) -> None:
    raise AssertionError("nothing is sent")


def _service(
    tmp_path: Path, clock: list[float], policy: FailurePolicy | None = None
) -> RegistrationService:
    store = SqliteStore.open(tmp_path / "state")
    store.accounts_add("1000", "secret1000", "voipgw.local")
    return RegistrationService(
        store,
        realm="voipgw.local",
        domains=frozenset({"127.0.0.1:5060"}),
        new_tag=lambda: "t",
        clock=lambda: clock[0],
        failure_policy=policy or FailurePolicy(max_failures=3, window=5.0),
    )


def _register(address: tuple[str, int]) -> Request:
    host = f"[{address[0]}]" if ":" in address[0] else address[0]  # RFC 3261 §25.1 IPv6reference
    return request("REGISTER", uri="sip:127.0.0.1:5060", sent_by=f"{host}:{address[1]}")


def _flow(address: tuple[str, int]) -> Flow:
    return Flow(FlowKey("udp", ("127.0.0.1", 5060), address), _send, reliable=False)


def test_refusals_of_a_blocked_source_are_logged_once_per_interval(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "gateway.core.registration")
    clock = [1000.0]
    service = _service(tmp_path, clock)
    for _ in range(3):
        service.failures.record_failure(GUESSER[0], user="1000", now=clock[0])
    register = request("REGISTER", uri="sip:127.0.0.1:5060", sent_by="192.0.2.66:5060")
    for number in range(200):
        clock[0] = 1000.0 + number * 0.02  # 4 s of svcrack's pace
        answer = service.authenticate(register, _flow(GUESSER), AuthKind.WWW)
        assert isinstance(answer, Response) and answer.status == 403
    assert service.refused_blocked == 200
    lines = [r.getMessage() for r in caplog.records if "refused: too many" in r.getMessage()]
    assert lines == [
        "REGISTER from 192.0.2.66 refused: too many failed authentications (1 request(s) from "
        "blocked sources refused since the last such line)"
    ]
    # The policy is the one given: 5 s, not the default 60 s.
    clock[0] = 1005.0
    answer = service.authenticate(register, _flow(GUESSER), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 401
    clock[0] = 1000.0 + BLOCKED_LOG_INTERVAL
    for _ in range(3):
        service.failures.record_failure(GUESSER[0], user="1000", now=clock[0])
    service.authenticate(register, _flow(GUESSER), AuthKind.WWW)
    lines = [r.getMessage() for r in caplog.records if "refused: too many" in r.getMessage()]
    # The 199 refused after the first line, and this one.
    assert len(lines) == 2 and "(200 request(s)" in lines[1]


def test_another_address_is_not_blocked(tmp_path: Path) -> None:
    clock = [1000.0]
    service = _service(tmp_path, clock)
    for _ in range(3):
        service.failures.record_failure(GUESSER[0], user="1000", now=clock[0])
    register = request("REGISTER", uri="sip:127.0.0.1:5060", sent_by="192.0.2.7:5060")
    answer = service.authenticate(register, _flow(("192.0.2.7", 5060)), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 401


def test_a_banned_source_is_refused_for_the_block_time_even_with_the_right_password(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``[gateway] auth_block_time``: the WARNING says for how long; the right password from
    the banned address is not even checked (403, as while blocked by the window), and nothing
    it sends extends the ban; another address registers meanwhile."""
    caplog.set_level(logging.WARNING, "gateway.core.registration")
    clock = [1000.0]
    service = _service(tmp_path, clock, FailurePolicy(max_failures=3, window=5.0, block_time=600))
    register = _register(GUESSER)
    challenge = service.authenticate(register, _flow(GUESSER), AuthKind.WWW)
    assert isinstance(challenge, Response) and challenge.status == 401
    wrong = authorize(register, challenge, username="1000", password="guess", cnonce="c1")
    right = authorize(register, challenge, username="1000", password="secret1000", cnonce="c2")
    assert wrong is not None and right is not None
    for _ in range(3):
        answer = service.authenticate(wrong, _flow(GUESSER), AuthKind.WWW)
        assert isinstance(answer, Response)
    assert answer.status == 403
    (line,) = [r.getMessage() for r in caplog.records if "now blocked" in r.getMessage()]
    assert line == (
        "REGISTER from 192.0.2.66:5060: authentication failed for user '1000' (source now "
        "blocked), refused for the next 600 s"
    )
    for second in range(6, 600, 6):  # past the 5 s window, a phone behind the same NAT retries
        clock[0] = 1000.0 + second
        answer = service.authenticate(right, _flow(GUESSER), AuthKind.WWW)
        assert isinstance(answer, Response) and answer.status == 403
    assert service.failed == 3
    answer = service.authenticate(_register(PHONE), _flow(PHONE), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 401
    clock[0] = 1599.9
    answer = service.authenticate(register, _flow(GUESSER), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 403
    # 600 s after the failure that banned it (the first nonce is stale by now: a new one).
    clock[0] = 1600.0
    challenge = service.authenticate(register, _flow(GUESSER), AuthKind.WWW)
    assert isinstance(challenge, Response) and challenge.status == 401
    right = authorize(register, challenge, username="1000", password="secret1000", cnonce="c3")
    assert right is not None
    assert isinstance(service.authenticate(right, _flow(GUESSER), AuthKind.WWW), Authenticated)


# A fail2ban filter an operator wrote for the lines before auth_block_time: every failure's line,
# the one that blocks included, from the method to the user.
FAIL2BAN_FAILREGEX = (
    r"^(?:REGISTER|INVITE) from (?P<host>[0-9.]+):\d+: authentication failed for user '[^']*'"
)


def test_without_a_block_time_the_blocking_line_is_as_it_always_was(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without ``auth_block_time`` (0, the default) the WARNING of the failure that blocks is
    the line it always was: it starts as every failure's line (log watchers match that start)
    and ends with "(source now blocked)" (some filters match that end); the source is refused
    until the oldest of its counted failures is a window old."""
    caplog.set_level(logging.WARNING, "gateway.core.registration")
    clock = [1000.0]
    service = _service(tmp_path, clock)  # 3 failures in 5 s, no block_time
    register = _register(GUESSER)
    challenge = service.authenticate(register, _flow(GUESSER), AuthKind.WWW)
    assert isinstance(challenge, Response) and challenge.status == 401
    wrong = authorize(register, challenge, username="1000", password="guess", cnonce="c1")
    assert wrong is not None
    for second in (0.0, 1.0, 2.0):
        clock[0] = 1000.0 + second
        answer = service.authenticate(wrong, _flow(GUESSER), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 403
    lines = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert lines[-1] == (
        "REGISTER from 192.0.2.66:5060: authentication failed for user '1000' (source now blocked)"
    )
    assert len(lines) == 3
    for line in lines:
        match = re.match(FAIL2BAN_FAILREGEX, line)
        assert match is not None and match["host"] == "192.0.2.66", line
    # True: refused until 1005, the first failure a window old, then looked at again.
    clock[0] = 1004.9
    answer = service.authenticate(wrong, _flow(GUESSER), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 403
    clock[0] = 1005.0
    answer = service.authenticate(register, _flow(GUESSER), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 401


def test_a_ban_lasts_its_time_when_the_wall_clock_steps_back(tmp_path: Path) -> None:
    """The failure counter runs on its own (monotonic) clock: NTP stepping the wall clock back
    an hour during a 600 s ban neither stretches the ban by that hour nor is needed to end it."""
    store = SqliteStore.open(tmp_path / "state")
    store.accounts_add("1000", "secret1000", "voipgw.local")
    wall, elapsed = [1_000_000.0], [50.0]
    service = RegistrationService(
        store,
        realm="voipgw.local",
        domains=frozenset({"127.0.0.1:5060"}),
        new_tag=lambda: "t",
        clock=lambda: wall[0],
        failure_policy=FailurePolicy(max_failures=3, window=5.0, block_time=600),
        failure_clock=lambda: elapsed[0],
    )
    for _ in range(3):
        service.failures.record_failure(GUESSER[0], user="1000", now=elapsed[0])
    wall[0] -= 3600  # the step back
    elapsed[0] += 599.9
    answer = service.authenticate(_register(GUESSER), _flow(GUESSER), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 403
    elapsed[0] += 0.1
    answer = service.authenticate(_register(GUESSER), _flow(GUESSER), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 401


# The same filter for IPv6 sources (fail2ban's <HOST> takes "[2001:db8::1]"), and one anchored at
# the end as some operators wrote (docs/configuration.md, auth_max_failures).
FAIL2BAN_FAILREGEX_IPV6 = (
    r"^(?:REGISTER|INVITE) from \[(?P<host>[0-9a-f:]+)\]:\d+: authentication failed for user "
    r"'[^']*'"
)
FAIL2BAN_END_REGEX = r"\(source now blocked\)$"
GUESSER_V6 = ("2001:db8:1:2::66", 5060)


@pytest.mark.parametrize(
    ("prefix_length", "said"),
    [(128, ""), (64, " from 2001:db8:1:2::/64"), (48, " from 2001:db8:1::/48")],
)
def test_an_ipv6_block_names_the_address_and_the_prefix_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, prefix_length: int, said: str
) -> None:
    """``[gateway] auth_ipv6_prefix_length``: the failures of three addresses of one /64 block
    it. The WARNING names the address that failed last, as ever, and the prefix before
    "(source now blocked)", so that filters anchored at the line's start or at that end match
    it; at 128 (the default) the line is as before the key. Another address of the prefix is
    refused, an address of another /48 is challenged."""
    caplog.set_level(logging.WARNING, "gateway.core.registration")
    clock = [1000.0]
    policy = FailurePolicy(max_failures=3, window=5.0, ipv6_prefix_length=prefix_length)
    service = _service(tmp_path, clock, policy)
    for number in (1, 2, 0x66) if prefix_length < 128 else (0x66, 0x66, 0x66):
        address = (f"2001:db8:1:2::{number:x}", 5060)
        register = _register(address)
        challenge = service.authenticate(register, _flow(address), AuthKind.WWW)
        assert isinstance(challenge, Response) and challenge.status == 401
        wrong = authorize(register, challenge, username="1000", password="guess", cnonce="c")
        assert wrong is not None
        answer = service.authenticate(wrong, _flow(address), AuthKind.WWW)
        clock[0] += 0.5
    assert isinstance(answer, Response) and answer.status == 403
    lines = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert lines[-1] == (
        "REGISTER from [2001:db8:1:2::66]:5060: authentication failed for user '1000'"
        f"{said} (source now blocked)"
    )
    for line in lines:
        match = re.match(FAIL2BAN_FAILREGEX_IPV6, line)
        assert match is not None and match["host"].startswith("2001:db8:1:2::"), line
    assert re.search(FAIL2BAN_END_REGEX, lines[-1])
    neighbour = ("2001:db8:1:2::7", 5060)
    answer = service.authenticate(_register(neighbour), _flow(neighbour), AuthKind.WWW)
    assert isinstance(answer, Response)
    assert answer.status == (401 if prefix_length == 128 else 403)
    elsewhere = ("2001:db8:2::7", 5060)
    answer = service.authenticate(_register(elsewhere), _flow(elsewhere), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 401


def test_an_ipv6_ban_names_the_prefix_then_its_length(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With ``auth_block_time`` the ban's length comes last, after the prefix, as for IPv4; the
    right password from another address of the banned /64 is refused."""
    caplog.set_level(logging.WARNING, "gateway.core.registration")
    clock = [1000.0]
    policy = FailurePolicy(max_failures=3, window=5.0, block_time=600, ipv6_prefix_length=64)
    service = _service(tmp_path, clock, policy)
    for _ in range(2):
        service.failures.record_failure("2001:db8:1:2::1", user="1000", now=clock[0])
    register = _register(GUESSER_V6)
    challenge = service.authenticate(register, _flow(GUESSER_V6), AuthKind.WWW)
    assert isinstance(challenge, Response) and challenge.status == 401
    wrong = authorize(register, challenge, username="1000", password="guess", cnonce="c1")
    assert wrong is not None
    answer = service.authenticate(wrong, _flow(GUESSER_V6), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 403
    (line,) = [r.getMessage() for r in caplog.records if "now blocked" in r.getMessage()]
    assert line == (
        "REGISTER from [2001:db8:1:2::66]:5060: authentication failed for user '1000' from "
        "2001:db8:1:2::/64 (source now blocked), refused for the next 600 s"
    )
    phone = ("2001:db8:1:2::7", 5060)
    clock[0] += 60
    register = _register(phone)
    challenge = service.authenticate(register, _flow(phone), AuthKind.WWW)
    assert isinstance(challenge, Response) and challenge.status == 403


def _documented_subnet_failregex() -> str:
    """The failregex docs/configuration.md gives for banning a prefix with fail2ban's
    <SUBNET> (auth_ipv6_prefix_length's row), with the tag expanded as fail2ban does."""
    text = (Path(__file__).parents[3] / "docs" / "configuration.md").read_text("utf-8")
    (row,) = [line for line in text.splitlines() if line.startswith("| `auth_ipv6_prefix_length`")]
    codes = re.findall(r"`([^`]*)`", row)
    (regex,) = [code for code in codes if "<SUBNET>" in code and "source now blocked" in code]
    return regex.replace("<SUBNET>", FAIL2BAN_SUBNET)


# A user name is the client's to choose (a quoted-string in its credentials, RFC 7616 §3.4):
# one holding both quote marks is logged in single quotes with its own escaped, so it can
# carry what a prefix's blocking line says after the user.
INJECTED_USERS = (
    "a' from 0.0.0.0/0 (source now blocked)\"",
    "a' from 2001:db8:ffff::/48 (source now blocked), refused for the next 600 s\"",
)


@pytest.mark.parametrize("injected", INJECTED_USERS)
@pytest.mark.parametrize("block_time", [0.0, 600.0])
def test_the_documented_subnet_filter_bans_the_guessers_prefix_not_one_its_user_names(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, injected: str, block_time: float
) -> None:
    """The failregex docs/configuration.md gives fail2ban to ban a blocked IPv6 prefix whole
    matches the line of the failure that blocks, taking the prefix the gateway counted, and no
    other line: a guesser naming a user that says ``from 0.0.0.0/0 (source now blocked)`` gets
    neither every address nor another customer's /48 banned (the filter documented first,
    ``for user '[^']*' from <SUBNET> ...`` not anchored at the line's end, took the prefix from
    the user name on every one of the guesser's lines)."""
    caplog.set_level(logging.WARNING, "gateway.core.registration")
    failregex = re.compile(_documented_subnet_failregex())
    clock = [1000.0]
    policy = FailurePolicy(max_failures=3, window=5.0, block_time=block_time, ipv6_prefix_length=64)
    service = _service(tmp_path, clock, policy)
    for number in (1, 2, 0x66):
        address = (f"2001:db8:1:2::{number:x}", 5060)
        register = _register(address)
        challenge = service.authenticate(register, _flow(address), AuthKind.WWW)
        assert isinstance(challenge, Response) and challenge.status == 401
        wrong = authorize(register, challenge, username=injected, password="x", cnonce="c")
        assert wrong is not None
        answer = service.authenticate(wrong, _flow(address), AuthKind.WWW)
        clock[0] += 0.5
    assert isinstance(answer, Response) and answer.status == 403
    lines = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert len(lines) == 3 and "(source now blocked)" in lines[0]  # the injected words
    assert [failregex.search(line) for line in lines[:2]] == [None, None]
    match = failregex.search(lines[2])
    assert match is not None, lines[2]
    assert (match["ip6"], match["cidr"]) == ("2001:db8:1:2::", "64")
    # An ordinary user's blocking line, with and without a ban, as the docs show it.
    ban = ", refused for the next 600 s" if block_time else ""
    line = (
        "INVITE from [2001:db8:7:8::9]:5060: authentication failed for user '1000' from "
        f"2001:db8:7:8::/64 (source now blocked){ban}"
    )
    match = failregex.search(line)
    assert match is not None and (match["ip6"], match["cidr"]) == ("2001:db8:7:8::", "64")


def _documented_refusals_failregex() -> str:
    """The failregex docs/configuration.md gives for the refusals' line (auth_ipv6_prefix_length's
    row), with <HOST> expanded as fail2ban does."""
    text = (Path(__file__).parents[3] / "docs" / "configuration.md").read_text("utf-8")
    (row,) = [line for line in text.splitlines() if line.startswith("| `auth_ipv6_prefix_length`")]
    codes = re.findall(r"`([^`]*)`", row)
    (regex,) = [code for code in codes if "<HOST> refused" in code]
    return regex.replace("<HOST>", FAIL2BAN_HOST)


def _as_fail2ban_reads(record: logging.LogRecord) -> str:
    return as_fail2ban_reads(record, LineFormatter())


def _documented_refusals_line() -> str:
    text = (Path(__file__).parents[3] / "docs" / "configuration.md").read_text("utf-8")
    (row,) = [line for line in text.splitlines() if line.startswith("| `auth_ipv6_prefix_length`")]
    codes = re.findall(r"`([^`]*)`", row)
    (line,) = [code for code in codes if code.startswith("REGISTER from [") and "refused" in code]
    return line


@pytest.mark.parametrize(
    ("address", "prefix_length", "expected"),
    [
        ("192.0.2.66", 64, "REGISTER from 192.0.2.66 refused: too many failed authentications ("),
        (
            "2001:db8:1:2::66",
            128,
            "REGISTER from [2001:db8:1:2::66] refused: too many failed authentications (",
        ),
        (
            "2001:db8:1:2::66",
            64,
            "REGISTER from [2001:db8:1:2::66] refused: too many failed authentications from "
            "2001:db8:1:2::/64 (",
        ),
        (
            "::ffff:192.0.2.66",
            64,
            "REGISTER from [::ffff:192.0.2.66] refused: too many failed authentications (",
        ),
    ],
)
def test_the_refusals_line_brackets_an_ipv6_address_and_names_the_prefix(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    address: str,
    prefix_length: int,
    expected: str,
) -> None:
    """The line that sums up the requests refused from blocked sources writes an IPv6 address
    in brackets as the failure lines do (it wrote ``from 2001:db8:1:2::66 refused``) and names
    the prefix counted (``auth_ipv6_prefix_length`` below 128) after "too many failed
    authentications", where the blocking line names it; an IPv4 (or IPv4-mapped) source's
    line has no prefix. The failregex docs/configuration.md gives for this line takes the
    address with fail2ban's <HOST>; the documented <SUBNET> filter, for failures, takes nothing
    from it."""
    caplog.set_level(logging.WARNING, "gateway.core.registration")
    clock = [1000.0]
    policy = FailurePolicy(max_failures=3, window=5.0, ipv6_prefix_length=prefix_length)
    service = _service(tmp_path, clock, policy)
    for _ in range(3):
        service.failures.record_failure(address, user="1000", now=clock[0])
    answer = service.authenticate(_register((address, 5060)), _flow((address, 5060)), AuthKind.WWW)
    assert isinstance(answer, Response) and answer.status == 403
    (record,) = [r for r in caplog.records if "refused: too many" in r.getMessage()]
    line = record.getMessage()
    assert line == expected + (
        "1 request(s) from blocked sources refused since the last such line)"
    )
    # Matched as fail2ban matches it: on the written line, its date cut (the filter documented
    # first, anchored at the message, matched no line the gateway writes).
    match = re.search(_documented_refusals_failregex(), _as_fail2ban_reads(record))
    assert match is not None, _as_fail2ban_reads(record)
    assert (match["ip4"] or match["ip6"]) == address.removeprefix("::ffff:")
    assert re.search(_documented_subnet_failregex(), line) is None


def test_the_refusals_line_docs_configuration_shows_is_the_gateways(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "gateway.core.registration")
    clock = [1000.0]
    policy = FailurePolicy(max_failures=3, window=60.0, ipv6_prefix_length=64)
    service = _service(tmp_path, clock, policy)
    for _ in range(3):
        service.failures.record_failure("2001:db8:1:2::1", user="1000", now=clock[0])
    phone = ("2001:db8:1:2::7", 5060)
    for _ in range(12):  # the first line, then 11 refused within the interval
        service.authenticate(_register(phone), _flow(phone), AuthKind.WWW)
    clock[0] += BLOCKED_LOG_INTERVAL
    service.authenticate(_register(phone), _flow(phone), AuthKind.WWW)
    lines = [r.getMessage() for r in caplog.records if "refused: too many" in r.getMessage()]
    assert lines[1] == _documented_refusals_line()


def test_the_documented_refusals_filter_takes_no_address_from_a_user_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A guesser's user name, written on each of its failures' lines, holding the refusals'
    text with another's address: the failregex docs/configuration.md gives for the refusals'
    line, anchored at the line's start, takes nothing from those lines (the same filter
    without its anchor would ban the address the guesser wrote)."""
    caplog.set_level(logging.WARNING, "gateway.core.registration")
    failregex = _documented_refusals_failregex()
    assert failregex.startswith("^")
    clock = [1000.0]
    service = _service(tmp_path, clock, FailurePolicy(max_failures=3, window=5.0))
    injected = "x INVITE from 203.0.113.9 refused: too many failed authentications"
    address = ("192.0.2.66", 5060)
    for _ in range(3):
        register = _register(address)
        challenge = service.authenticate(register, _flow(address), AuthKind.WWW)
        assert isinstance(challenge, Response) and challenge.status == 401
        wrong = authorize(register, challenge, username=injected, password="x", cnonce="c")
        assert wrong is not None
        service.authenticate(wrong, _flow(address), AuthKind.WWW)
    lines = [
        _as_fail2ban_reads(r) for r in caplog.records if "authentication failed" in r.getMessage()
    ]
    assert len(lines) == 3 and all(injected in line for line in lines), lines
    assert [re.search(failregex, line) for line in lines] == [None, None, None]
    unanchored = re.search(r"(?:REGISTER|INVITE) from " + FAIL2BAN_HOST + " refused", lines[0])
    assert unanchored is not None and unanchored["ip4"] == "203.0.113.9"


def test_credentials_refused_for_another_reason_than_the_password_say_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The auth-failed WARNING reads alike for a wrong password and for credentials a client
    or a proxy in its path got otherwise wrong (its text is an interface). The second kind
    also gets an INFO line with the reason: a proxy that rewrote the Request-URI the digest
    names (kamailio's ds_select_domain) showed only as 'authentication failed'."""
    caplog.set_level(logging.INFO, "gateway.core.registration")
    clock = [1000.0]
    service = _service(tmp_path, clock, FailurePolicy(max_failures=10, window=5.0))
    # The phone sent its REGISTER to the proxy's address and answered for that Request-URI.
    sent = request("REGISTER", uri="sip:edge.example", sent_by="192.0.2.7:5060")
    challenge = service.authenticate(sent, _flow(PHONE), AuthKind.WWW)
    assert isinstance(challenge, Response) and challenge.status == 401
    right = authorize(sent, challenge, username="1000", password="secret1000", cnonce="c1")
    wrong = authorize(sent, challenge, username="1000", password="guess", cnonce="c2")
    assert right is not None and wrong is not None
    for credentials in (right, wrong):  # the Request-URI is checked before the password
        caplog.clear()
        # ... and the proxy rewrote the Request-URI to the node's.
        rewritten = request(
            "REGISTER",
            uri="sip:127.0.0.1:5060",
            sent_by="192.0.2.7:5060",
            extra=(f"Authorization: {credentials.headers.get('Authorization')}",),
        )
        answer = service.authenticate(rewritten, _flow(PHONE), AuthKind.WWW)
        assert isinstance(answer, Response) and answer.status == 401
        lines = [r.getMessage() for r in caplog.records]
        assert lines[0] == "REGISTER from 192.0.2.7:5060: authentication failed for user '1000'"
        assert lines[1:] == [
            "REGISTER from 192.0.2.7:5060: credentials of user '1000' not taken: digest "
            "uri does not match the Request-URI"
        ]
    # A wrong password over the right Request-URI: the WARNING alone, as before.
    caplog.clear()
    assert isinstance(service.authenticate(wrong, _flow(PHONE), AuthKind.WWW), Response)
    assert [r.getMessage() for r in caplog.records] == [
        "REGISTER from 192.0.2.7:5060: authentication failed for user '1000'"
    ]
