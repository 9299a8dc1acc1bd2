"""sipvicious 0.3.3 (svmap, svwar, svcrack: the scanners that reach any SIP server on the internet
first) against ``voipgw run`` on 127.0.0.1 with accounts 1000, 1001, alice and bob.

- svwar (REGISTER, INVITE, OPTIONS, with and without ``--force``) finds no extension: the gateway
  answers an unknown user, its random sanity probe included, as it answers an account. svwar
  gives up at the sanity probe's 401/407 (and with ``--force`` at the first extension answered
  like it), so the same comparison is also made directly, field by field, for accounts,
  strangers, an emergency number, and for a wrong password against an unknown user's.
- svcrack with the right password after 200 wrong ones does not find it: after
  ``auth_max_failures`` failures its address gets 403 without a look at its credentials. The
  account's phone registers from another address meanwhile, and the block lifts after
  ``auth_failure_window``.
- svmap finds no device: ``[sip] drop_user_agents`` (by default) drops its requests unanswered,
  while an OPTIONS with another User-Agent still gets 200.

Each of these is calibrated: svmap and svcrack find the device and the password when the
defence is off, so the "finds nothing" assertions can fail.

Safety (../shared/peers.md §7): always ``-b 127.0.0.1 -x 127.0.0.1``, never ``-R`` (report-back
to the author) or ``-A`` (external IP lookup); each run bounded by ``--maximumtime`` and a
timeout (svmap has no ``--maximumtime``: ``-t 0.5`` and the timeout). Each run binds its own
free source port (-P): svwar and svcrack default to 5060, where a 407 the gateway retransmits to
an earlier run's unacknowledged INVITE (RFC 3261 §17.2.1) would reach the next run and read as
an extension found.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.conftest import require_peer
from tests.interop.harness.gateway import GatewayProcess, options_ok
from tests.interop.harness.ports import LOOPBACK, free_port
from tests.interop.harness.sipp import run_sipp_uac

ACCOUNTS = {"1000": "secret1000", "1001": "1001-pw-x", "alice": "wonderland", "bob": "builder"}
# svcrack and sipp 3.6 answer MD5 challenges only.
MD5 = ("MD5",)
MAX_FAILURES = 5
WINDOW = 5.0  # s; short for the test, 60 s by default
# No 503 for a REGISTER or INVITE that waited past [sip] overload_queue_delay (0.3 s) to be read:
# sipvicious takes it for the end. svcrack logs "We got an unknown response" and stops guessing
# (never blocked again), svwar reports the extension as "weird" (found). A loaded machine stalls
# the gateway that long (a CI run did; a 1 s SIGSTOP mid-attack does it every time); overload
# control has tests of its own, these are about the answers scanners get.
NO_DROP = {"sip": {"drop_user_agents": [], "overload_queue_delay": 0}}
# The sipvicious tools address sip:USER@127.0.0.1 (no port): made a domain of ours, so that a
# right password would get 200 and svcrack's failure is the failure limit's doing (with only the
# listener's host:port local, every guess gets 404 Domain Not Served Here, checked before the
# credentials: RFC 3261 §10.3).
DOMAIN = {"domains": [LOOPBACK]}
LIMITS = {"gateway": {**DOMAIN, "auth_max_failures": MAX_FAILURES, "auth_failure_window": WINDOW}}
# svcrack's dictionary: the right password after these. svcrack sends a REGISTER without
# credentials whenever 5 ms pass without an answer (its select timeout) and answers each 401 with
# the next password; once the gateway takes longer than that to answer (a loaded machine),
# several 401s come back as a block lifts, the first guesses block the source again and the rest
# get 403 without a digest check: svcrack goes past those passwords unchecked (a few a window
# at load 20 here). The gateway checks at most MAX_FAILURES a window whatever svcrack does, but
# svcrack runs out of a short list sooner: with 40 wrong ones it sent the right one after 31 s,
# 30 checks, and a little more load would have it there within this test's 20 s (found, or
# refused 403 and then out of passwords, never blocked again). 200 last the test's windows at
# any such pace, and without the limit svcrack goes through them in 6 s at load 20 (the
# calibration), well within the attack's 10 s: the limit is what keeps the password from it.
WRONG_PASSWORDS = [f"guess{number:03d}" for number in range(200)]
# svcrack's --maximumtime: it stops once this long has passed without an answer.
MAXIMUM_TIME = 10


def sipvicious(
    tool: str, gw: GatewayProcess, args: Sequence[str], *, timeout: float, stdin: str = ""
) -> str:
    """Run ``tool`` against the gateway from 127.0.0.1 and a free port; stdout and stderr."""
    path = require_peer(tool)
    command = [
        path,
        LOOPBACK,
        "-p",
        str(gw.port),
        "-b",
        LOOPBACK,
        "-x",
        LOOPBACK,
        "-P",
        str(free_port()),
        *args,
    ]
    assert "-R" not in command and "-A" not in command
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return _text(exc.stdout) + _text(exc.stderr) + "\n<timed out>"
    return done.stdout + done.stderr


def _text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def found_extensions(output: str) -> list[str]:
    """The rows of svwar's result table (``| 1000 | reqauth |``)."""
    return re.findall(r"^\| (\S+)\s+\| (?:reqauth|noauth|weird)", output, re.MULTILINE)


# What a scanner guessing passwords and extensions makes the gateway log, on purpose here.
GUESSING = [
    r"authentication failed for user",
    r"refused: too many failed authentications",
]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayProcess]:
    """Scanners answered as any UA (no User-Agent drop), failures limited to 5 in 4 s."""
    require_peer("svwar")
    with GatewayProcess(
        tmp_path / "gw",
        accounts=ACCOUNTS,
        digest_algorithms=MD5,
        settings={**NO_DROP, **LIMITS},
        # svwar and svcrack guess on purpose: failures, and the block they run into, are logged.
        allowed_warnings=GUESSING,
    ) as gw:
        yield gw


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_svwar_finds_no_extension(gateway: GatewayProcess, method: str) -> None:
    args = ["-e", "990-1010", "-m", method, "--maximumtime=10"]
    output = sipvicious("svwar", gateway, args, timeout=30)
    assert "No server response" not in output, output
    assert found_extensions(output) == [], output
    if method != "OPTIONS":
        # The random extension of the sanity probe gets the challenge every account gets.
        assert "authentication request for an unknown extension" in output, output
    # --force: past the sanity check, every extension of the range, accounts included.
    output = sipvicious("svwar", gateway, [*args, "--force"], timeout=30)
    assert found_extensions(output) == [], output
    # Names from a dictionary (-d - reads stdin), accounts among them.
    names = ["-d", "-", "-m", method, "--maximumtime=10", "--force"]
    output = sipvicious("svwar", gateway, names, timeout=30, stdin="alice\nbob\ncarol\nadmin\n")
    assert found_extensions(output) == [], output


def probe(port: int, method: str, user: str, *, source: str, authorization: str = "") -> str:
    """One request as svwar builds it, from ``source``; the first answer that is not a 100."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2.0)
        sock.bind((source, 0))
        local = sock.getsockname()[1]
        unique = time.monotonic_ns()
        lines = [
            f"{method} sip:{user}@{LOOPBACK} SIP/2.0",
            f"Via: SIP/2.0/UDP {source}:{local};branch=z9hG4bK-{unique};rport",
            "Max-Forwards: 70",
            f'From: "{user}"<sip:{user}@{LOOPBACK}>;tag={unique}',
            f'To: "{user}"<sip:{user}@{LOOPBACK}>',
            f"Call-ID: {unique}",
            f"CSeq: 1 {method}",
            f"Contact: <sip:{user}@{source}:{local}>",
            "User-Agent: probe",
            *([authorization] if authorization else []),
            "Content-Length: 0",
            "",
            "",
        ]
        sock.sendto("\r\n".join(lines).encode(), (LOOPBACK, port))
        while (answer := sock.recv(65535).decode()).startswith("SIP/2.0 100 "):
            pass
    return answer


def blank(answer: str) -> str:
    """``answer`` without what differs from request to request: the echoed Via, From, To,
    Call-ID and Contact (they name the user and the source), tags, nonce and opaque."""
    kept = [
        line
        for line in answer.split("\r\n")
        if not line.lower().startswith(("via:", "from:", "to:", "call-id:", "contact:"))
    ]
    return re.sub(r'\b(tag|nonce|opaque)=("?)[^";,]*', r"\1=\2X", "\r\n".join(kept))


def digest(method: str, user: str, password: str, challenge: str) -> str:
    """Credentials (RFC 7616 §3.4, MD5, qop=auth) for ``challenge``, a 401 or 407."""
    header = "Authorization" if challenge.startswith("SIP/2.0 401") else "Proxy-Authorization"
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge.split("Digest ", 1)[1]))
    uri = f"sip:{user}@{LOOPBACK}"

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{user}:{fields['realm']}:{password}")
    response = md5(f"{ha1}:{fields['nonce']}:00000001:c0ffee:auth:{md5(f'{method}:{uri}')}")
    return (
        f'{header}: Digest username="{user}", realm="{fields["realm"]}", '
        f'nonce="{fields["nonce"]}", uri="{uri}", response="{response}", algorithm=MD5, '
        f'opaque="{fields["opaque"]}", qop=auth, nc=00000001, cnonce="c0ffee"'
    )


@pytest.mark.parametrize("method", ["REGISTER", "INVITE", "OPTIONS"])
def test_accounts_and_strangers_get_the_same_answers(gateway: GatewayProcess, method: str) -> None:
    """What svwar compares, field by field: an account (numeric or a name), svwar's random
    sanity-probe extension, an emergency number and a name nobody has get the same answer;
    a wrong password for an account the same as any password for a user that does not exist.
    Each user from its own address, so that no failure limit is reached."""
    answers = {}
    for number, user in enumerate(["1000", "alice", "3800569113", "112", "carol"]):
        source = f"127.0.1.{number + 1}"
        first = probe(gateway.port, method, user, source=source)
        second = ""
        if first.startswith(("SIP/2.0 401 ", "SIP/2.0 407 ")):
            credentials = digest(method, user, "not-the-password", first)
            second = blank(
                probe(gateway.port, method, user, source=source, authorization=credentials)
            )
        answers[user] = (blank(first), second)
    expected = answers["1000"]
    if method == "OPTIONS":
        assert expected[0].startswith("SIP/2.0 200 "), expected
    else:
        assert expected[0].startswith(("SIP/2.0 401 ", "SIP/2.0 407 ")), expected
        assert expected[1].startswith(expected[0].split("\r\n")[0]), expected
    for user, answer in answers.items():
        assert answer == expected, (user, answer, expected)


def test_svcrack_does_not_find_the_password_and_the_phone_still_registers(
    gateway: GatewayProcess, tmp_path: Path
) -> None:
    dictionary = tmp_path / "passwords.txt"
    dictionary.write_text("\n".join([*WRONG_PASSWORDS, ACCOUNTS["1000"]]) + "\n")
    attack = subprocess.Popen(
        [
            require_peer("svcrack"),
            LOOPBACK,
            "-p",
            str(gateway.port),
            "-b",
            LOOPBACK,
            "-x",
            LOOPBACK,
            "-P",
            str(free_port()),
            "-u",
            "1000",
            "-d",
            str(dictionary),
            f"--maximumtime={MAXIMUM_TIME}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    started = time.monotonic()
    blocked_line = "authentication failed for user '1000' (source now blocked)"
    try:
        first_block = _logged_at(gateway.wait_for_log("(?m)^.*" + re.escape(blocked_line))[0])
        first_seen = time.monotonic()
        # The real phone, from another address, registers during the attack.
        phone = run_sipp_uac(
            "register_auth.xml",
            gateway.address,
            workdir=tmp_path,
            service="1000",
            auth=("1000", ACCOUNTS["1000"]),
            local_ip="127.0.0.2",
        )
        phone.check()
        gateway.wait_for_log(
            r"registered: 1 binding\(s\) for sip:1000@.* via udp:\S*<->127\.0\.0\.2:"
        )
        # The attack goes on for two more windows (at most 5 guesses in each) and stops after a
        # burst of guesses: svcrack guesses as soon as the oldest failure leaves the window, a
        # few in a few ms, and is blocked again. Stopped when a burst is over, its address stays
        # blocked for most of a window. The second window's block comes two windows after the
        # first burst (the first window's about one, within a burst's spread), by the gateway's
        # clock; svcrack sends every 5 ms while it is answered, and stops after MAXIMUM_TIME
        # without an answer: no block by then, and it has stopped.
        deadline = first_seen + 2 * WINDOW + MAXIMUM_TIME
        while not any(
            _logged_at(line) >= first_block + 1.5 * WINDOW
            for line in gateway.log_text().splitlines()
            if blocked_line in line
        ):
            assert time.monotonic() < deadline, "svcrack was not blocked two windows later"
            time.sleep(0.05)
        _wait_until_quiet(gateway, "authentication failed for user '1000'", quiet=0.5)
        assert attack.poll() is None, "svcrack ended: it ran out of passwords or found one"
    except AssertionError as exc:
        failure: AssertionError | None = exc
    else:
        failure = None
    finally:
        attack.terminate()
        output, _ = attack.communicate(timeout=10)
    if failure is not None:
        # Why svcrack stopped, if it did ("We got an unknown response", "no more passwords").
        raise AssertionError(f"{failure}\nsvcrack's output:\n{output}") from failure
    elapsed = time.monotonic() - started
    assert ACCOUNTS["1000"] not in output, output
    log = gateway.log_text()
    assert "registered: 1 binding(s) for sip:1000@" in log
    assert not re.search(r"registered: .* for sip:1000@.* via udp:\S*<->127\.0\.0\.1:", log)
    # At most MAX_FAILURES guesses per window reached the digest check.
    guesses = log.count("authentication failed for user '1000'")
    assert 2 * MAX_FAILURES <= guesses <= MAX_FAILURES * (elapsed / WINDOW + 1), guesses
    # The refusals of the blocked source are not logged one line each (thousands were).
    refusals = log.count("refused: too many failed authentications")
    assert 1 <= refusals <= elapsed / 10 + 1, refusals

    # Right after the attack the guesser's address is still refused, even with the password ...
    blocked = run_sipp_uac(
        "register_auth.xml",
        gateway.address,
        workdir=tmp_path,
        service="1000",
        auth=("1000", ACCOUNTS["1000"]),
        local_ip=LOOPBACK,
        timeout=5,
    )
    assert not blocked.ok and any(" 403 " in m for m in blocked.received("SIP/2.0")), (
        blocked.describe()
    )
    # ... and the block lifts by itself once the window has passed.
    deadline = time.monotonic() + WINDOW + 10
    while True:
        retry = run_sipp_uac(
            "register_auth.xml",
            gateway.address,
            workdir=tmp_path,
            service="1000",
            auth=("1000", ACCOUNTS["1000"]),
            local_ip=LOOPBACK,
            timeout=5,
        )
        if retry.ok:
            break
        assert time.monotonic() < deadline, retry.describe()
        time.sleep(0.5)


def _logged_at(line: str) -> float:
    """The time a gateway log line was written (its ``%(asctime)s``), in seconds."""
    written = datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return written.timestamp()


def _wait_until_quiet(
    gateway: GatewayProcess, text: str, *, quiet: float, timeout: float = 60.0
) -> None:
    """Poll the log until no new line with ``text`` came for ``quiet`` seconds; fail if lines
    keep coming for ``timeout`` seconds (a guesser that is never stopped)."""
    count = gateway.log_text().count(text)
    since = deadline = time.monotonic()
    deadline += timeout
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, f"{text!r} still logged after {timeout} s"
        time.sleep(0.05)
        now = gateway.log_text().count(text)
        if now != count:
            count, since = now, time.monotonic()


def test_svcrack_calibration_finds_the_password_without_the_limit(tmp_path: Path) -> None:
    """Without a practical failure limit svcrack finds the password: the test above would see
    it if the limit did not hold."""
    require_peer("svcrack")
    dictionary = tmp_path / "passwords.txt"
    dictionary.write_text("\n".join([*WRONG_PASSWORDS, ACCOUNTS["1000"]]) + "\n")
    settings = {**NO_DROP, "gateway": {**DOMAIN, "auth_max_failures": 1000}}
    with GatewayProcess(
        tmp_path / "gw",
        accounts=ACCOUNTS,
        digest_algorithms=MD5,
        settings=settings,
        # svwar and svcrack guess on purpose: failures, and the block they run into, are logged.
        allowed_warnings=GUESSING,
    ) as gw:
        output = sipvicious(
            "svcrack",
            gw,
            ["-u", "1000", "-d", str(dictionary), f"--maximumtime={MAXIMUM_TIME}"],
            timeout=30,
        )
    assert re.search(r"\| 1000\s+\| secret1000", output), output


def test_svmap_finds_nothing_and_options_from_others_are_answered(tmp_path: Path) -> None:
    require_peer("svmap")
    with GatewayProcess(
        tmp_path / "gw", accounts=ACCOUNTS, digest_algorithms=MD5, settings=LIMITS
    ) as gw:
        output = sipvicious("svmap", gw, ["-t", "0.5"], timeout=20)
        assert "found nothing" in output and "voipgw" not in output, output
        output = sipvicious("svmap", gw, ["-m", "INVITE", "-t", "0.5"], timeout=20)
        assert "found nothing" in output and "voipgw" not in output, output
        # svwar and svcrack send the same User-Agent: no answer at all.
        output = sipvicious("svwar", gw, ["-e", "999-1001", "--maximumtime=5"], timeout=20)
        assert "timed out" in output and "found nothing" in output, output
        # A trunk health check or phone with its own User-Agent is answered as ever.
        assert options_ok(gw.port)
        line = gw.wait_for_log(r"dropped (\d+) request\(s\) from SIP scanners.*friendly-scanner")
        assert int(line.group(1)) >= 1
        assert "authentication failed" not in gw.log_text()


def test_svmap_calibration_finds_the_gateway_when_nothing_is_dropped(
    gateway: GatewayProcess,
) -> None:
    output = sipvicious("svmap", gateway, ["-t", "0.5"], timeout=20)
    assert f"{LOOPBACK}:{gateway.port}" in output and "voipgw" in output, output
