"""REGISTER against the gateway on real UDP sockets: digest challenge, binding, retransmission,
brute-force protection, and bindings that survive a restart."""

from __future__ import annotations

import re
import socket
import sqlite3
import time
from pathlib import Path

import trio

from gateway.core.auth.algorithms import DigestAlgorithm, compute_ha1, compute_response
from gateway.core.config import from_mapping
from gateway.core.gateway import Gateway
from gateway.core.ids import SeededIds
from gateway.core.plugins import load_plugins
from gateway.core.sip.message import Response
from gateway.core.sip.parser import parse_message_untrusted
from gateway.core.store.sqlite import DB_FILENAME, SqliteStore
from tests.port_blocks import ModuleBlock

# The relay's ports: this process's own (tests/port_blocks.py), not the gateway's default range,
# which another test run's gateway may bind as well (tests/media_range_guard.py).
MEDIA_PORTS = ModuleBlock(20)

REALM = "voipgw.local"


def register(
    port: int, *, branch: str, cseq: int, auth: str | None = None, user: str = "alice"
) -> bytes:
    lines = [
        f"REGISTER sip:127.0.0.1:{port} SIP/2.0",
        f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch={branch};rport",
        "Max-Forwards: 70",
        f"From: <sip:{user}@127.0.0.1:{port}>;tag=reg1",
        f"To: <sip:{user}@127.0.0.1:{port}>",
        f"Call-ID: register-{user}@127.0.0.1",
        f"CSeq: {cseq} REGISTER",
        f"Contact: <sip:{user}@127.0.0.1:5999>",
        "Expires: 600",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\nContent-Length: 0\r\n\r\n").encode()


def answer_challenge(challenge: str, port: int, password: str, user: str = "alice") -> str:
    params = dict(re.findall(r'(\w+)="?([^",]+)"?', challenge))
    algorithm = DigestAlgorithm.from_token(params.get("algorithm", "MD5"))
    uri = f"sip:127.0.0.1:{port}"
    ha1 = compute_ha1(algorithm, user, REALM, password)
    response = compute_response(
        algorithm,
        ha1,
        method="REGISTER",
        uri=uri,
        nonce=params["nonce"],
        qop="auth",
        nc="00000001",
        cnonce="c0ffee",
    )
    return (
        f'Digest username="{user}", realm="{REALM}", nonce="{params["nonce"]}", uri="{uri}", '
        f'response="{response}", algorithm={params.get("algorithm", "MD5")}, qop=auth, '
        f'nc=00000001, cnonce="c0ffee", opaque="{params.get("opaque", "")}"'
    )


async def exchange(sock: trio.socket.SocketType, port: int, data: bytes) -> Response:
    await sock.sendto(data, ("127.0.0.1", port))
    with trio.fail_after(5):
        while True:
            reply, _ = await sock.recvfrom(65535)
            message = parse_message_untrusted(reply)
            assert isinstance(message, Response)
            if message.status >= 200:
                return message


def state_with_alice(tmp_path: Path) -> Path:
    """A state directory whose store has the account alice (password "wonderland")."""
    state = tmp_path / "state"
    store = SqliteStore.open(state)
    store.accounts_add("alice", "wonderland", REALM)
    store.close()
    return state


async def run_gateway(state: Path, body) -> None:  # type: ignore[no-untyped-def]
    config = from_mapping(
        {
            "gateway": {"state_dir": str(state)},
            "sip": {"listen": ["udp:127.0.0.1:0"]},
            "media": {"ports": MEDIA_PORTS.text()},
        }
    )
    gw = Gateway(config, load_plugins(config), ids=SeededIds(7))
    async with trio.open_nursery() as nursery:
        await nursery.start(gw.serve)
        port = gw.listeners[0].address[1]
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            await sock.bind(("127.0.0.1", 0))
            await body(gw, port, sock)
        nursery.cancel_scope.cancel()


async def test_register_with_digest_then_retransmission_then_restart(tmp_path: Path) -> None:
    state = state_with_alice(tmp_path)

    async def first(gw: Gateway, port: int, sock: trio.socket.SocketType) -> None:
        challenge = await exchange(sock, port, register(port, branch="z9hG4bKr1", cseq=1))
        assert challenge.status == 401
        offered = challenge.headers.get_all("WWW-Authenticate")
        assert any("SHA-256" in value for value in offered)
        auth = answer_challenge(offered[0], port, "wonderland")
        ok = await exchange(sock, port, register(port, branch="z9hG4bKr2", cseq=2, auth=auth))
        assert ok.status == 200, ok.reason
        contacts = ok.headers.get_all("Contact")
        assert len(contacts) == 1 and "expires=600" in contacts[0]
        # A retransmission (same branch) is answered from the transaction, not re-processed
        # (re-processing would fail RFC 3261 §10.3's CSeq ordering check).
        again = await exchange(sock, port, register(port, branch="z9hG4bKr2", cseq=2, auth=auth))
        assert again.status == 200
        assert again.to.tag == ok.to.tag

    await run_gateway(state, first)

    async def after_restart(gw: Gateway, port: int, sock: trio.socket.SocketType) -> None:
        assert gw.store is not None
        bindings = gw.store.registrations_for(f"sip:alice@127.0.0.1:{port}") or tuple(
            b for a in ["alice"] for b in gw.store.bindings_for_account(a)
        )
        assert [b.contact for b in bindings] == ["sip:alice@127.0.0.1:5999"]

    await run_gateway(state, after_restart)


async def test_repeated_bad_passwords_get_403(tmp_path: Path) -> None:
    state = state_with_alice(tmp_path)

    async def attack(gw: Gateway, port: int, sock: trio.socket.SocketType) -> None:
        statuses = []
        for attempt in range(8):
            challenge = await exchange(
                sock, port, register(port, branch=f"z9hG4bKc{attempt}", cseq=10 + 2 * attempt)
            )
            if challenge.status == 403:
                statuses.append(403)
                continue
            auth = answer_challenge(challenge.headers.get_all("WWW-Authenticate")[0], port, "guess")
            reply = await exchange(
                sock,
                port,
                register(port, branch=f"z9hG4bKa{attempt}", cseq=11 + 2 * attempt, auth=auth),
            )
            statuses.append(reply.status)
        assert statuses[0] == 401
        assert statuses[-1] == 403
        assert (
            "Too Many Failed"
            in (await exchange(sock, port, register(port, branch="z9hG4bKz", cseq=99))).reason
        )

    await run_gateway(state, attack)


async def test_good_logins_between_guesses_do_not_lift_the_limit(tmp_path: Path) -> None:
    # Whoever holds the account mallory must not be able to reset the per-source failure count
    # by logging in as mallory between guesses at alice's password.
    state = tmp_path / "state"
    store = SqliteStore.open(state)
    store.accounts_add("alice", "wonderland", REALM)
    store.accounts_add("mallory", "own-password", REALM)
    store.close()

    async def attempt(
        port: int, sock: trio.socket.SocketType, n: int, user: str, password: str
    ) -> Response:
        challenge = await exchange(
            sock, port, register(port, branch=f"z9hG4bKc{n}", cseq=2 * n, user=user)
        )
        if challenge.status != 401:
            return challenge
        offered = challenge.headers.get_all("WWW-Authenticate")[0]
        auth = answer_challenge(offered, port, password, user=user)
        return await exchange(
            sock, port, register(port, branch=f"z9hG4bKa{n}", cseq=2 * n + 1, auth=auth, user=user)
        )

    async def attack(gw: Gateway, port: int, sock: trio.socket.SocketType) -> None:
        guesses = []
        for n in range(1, 9):
            own = await attempt(port, sock, 2 * n, "mallory", "own-password")
            guess = await attempt(port, sock, 2 * n + 1, "alice", f"guess-{n}")
            guesses.append((own.status, guess.status))
        assert guesses[0] == (200, 401)  # a wrong password is challenged again
        assert "Too Many Failed" in (await attempt(port, sock, 99, "alice", "wonderland")).reason
        assert (
            "Too Many Failed" in (await attempt(port, sock, 98, "mallory", "own-password")).reason
        )

    await run_gateway(state, attack)


async def test_account_bound_to_a_certificate_is_refused_over_udp(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = SqliteStore.open(state)
    store.accounts_add("alice", "wonderland", REALM)
    store.accounts_set("alice", certificate_matches=[("fingerprint", "ab" * 32)])
    store.close()

    async def right_password(gw: Gateway, port: int, sock: trio.socket.SocketType) -> None:
        challenge = await exchange(sock, port, register(port, branch="z9hG4bKb1", cseq=1))
        auth = answer_challenge(
            challenge.headers.get_all("WWW-Authenticate")[0], port, "wonderland"
        )
        refused = await exchange(sock, port, register(port, branch="z9hG4bKb2", cseq=2, auth=auth))
        assert refused.status == 403
        assert "device certificate" in refused.reason
        assert gw.store is not None
        assert gw.store.bindings_for_account("alice") == ()

    await run_gateway(state, right_password)


async def test_register_while_another_process_holds_the_store_gets_503_at_once(
    tmp_path: Path,
) -> None:
    # An operator's sqlite3 shell inside BEGIN: the gateway, whose event loop also relays every
    # call's media, waits 50 ms for the lock (not the CLI's 5 s), answers 503 with Retry-After
    # and changes nothing; once the lock is gone the same phone registers.
    state = state_with_alice(tmp_path)

    async def body(gw: Gateway, port: int, sock: trio.socket.SocketType) -> None:
        challenge = await exchange(sock, port, register(port, branch="z9hG4bKb1", cseq=1))
        assert challenge.status == 401  # reading accounts is not blocked by a writer (WAL)
        auth = answer_challenge(
            challenge.headers.get_all("WWW-Authenticate")[0], port, "wonderland"
        )
        shell = sqlite3.connect(state / DB_FILENAME, isolation_level=None)
        try:
            shell.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            refused = await exchange(
                sock, port, register(port, branch="z9hG4bKb2", cseq=2, auth=auth)
            )
            waited = time.monotonic() - started
            shell.execute("ROLLBACK")
        finally:
            shell.close()
        assert refused.status == 503, refused.reason
        assert refused.reason == "Service Unavailable (store busy)"
        assert refused.headers.get("Retry-After") == "5"
        assert waited < 2.0  # the gateway's short wait, not the CLI's 5 s
        assert gw.store is not None
        assert gw.store.bindings_for_account("alice") == ()
        challenge = await exchange(sock, port, register(port, branch="z9hG4bKb3", cseq=3))
        auth = answer_challenge(
            challenge.headers.get_all("WWW-Authenticate")[0], port, "wonderland"
        )
        ok = await exchange(sock, port, register(port, branch="z9hG4bKb4", cseq=4, auth=auth))
        assert ok.status == 200, ok.reason
        assert [b.contact for b in gw.store.bindings_for_account("alice")] == [
            "sip:alice@127.0.0.1:5999"
        ]

    await run_gateway(state, body)
