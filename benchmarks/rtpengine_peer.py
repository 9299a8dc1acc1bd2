"""rtpengine (userspace only) as the peer media relay of the benchmarks: process and NG client.

Run from the repository root for a smoke check (starts rtpengine on 127.0.0.1, bridges one call
RTP->SRTP and one SRTP->SRTP, 20 packets each way, checks every payload, stops rtpengine)::

    python benchmarks/rtpengine_peer.py

What is here (../shared/peers.md section 4 is the recipe):

- :class:`Rtpengine` starts ``rtpengine`` in the foreground with no config file, no kernel
  forwarding (``--table=-1``), media and the NG control socket on 127.0.0.1 only, its own port
  range, ``--delete-delay=0``; the process is bounded by ``timeout -k`` and stopped by
  :meth:`Rtpengine.stop` (or the ``with`` block). Readiness is an NG ``ping`` answered, polled.
- :class:`NgClient` speaks the NG protocol: one UDP datagram ``<cookie> <bencoded dict>`` per
  request, the reply carries the same cookie. rtpengine caches replies by cookie (so that a
  retransmitted request is not executed twice): cookies must never repeat within one
  rtpengine's life, hence the process id and a counter in each.
- :func:`bridge_call` does the offer/answer for one call between phone A and phone B, each plain
  RTP (RTP/AVP) or SDES-SRTP (RTP/SAVP, RFC 4568), and returns where each phone sends and the
  key rtpengine protects towards each SRTP phone with (read from rtpengine's a=crypto).

Keys: the phones' keys are chosen by the caller (benchmark keys, never secrets); rtpengine's
keys arrive in its SDP. For an SRTP->SRTP bridge rtpengine copies A's a=crypto line into its
offer to B (a "passthrough" offer: if B picked that line rtpengine would forward A's SRTP
unchanged); :func:`bridge_call` makes B pick the line of B's own suite, so rtpengine decrypts and
re-encrypts, which is the bridging being measured.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import attrs
from bench_children import die_with_parent
from bench_ports import media_ports

ADDRESS = "127.0.0.1"
# rtpengine's NG port and media range, unless given: port blocks locked for this process
# (benchmarks/bench_ports.py), so neither a test run nor another benchmark takes them meanwhile.
RTP_PORTS = 5000  # 1250 calls of 2 RTP/RTCP pairs

# Limits for parsing rtpengine's replies (they are bytes from a socket).
MAX_REPLY = 65535
MAX_DEPTH = 16
MAX_ITEMS = 4096


# One counter per Python process, shared by every client: rtpengine answers a repeated cookie
# from its reply cache, so two clients counting from 0 would get each other's replies.
_COOKIES = itertools.count()


class NgError(Exception):
    """rtpengine refused a request, answered garbage, or did not answer."""


# -- bencode (BitTorrent encoding, as NG uses it) --------------------------------------------


def bencode(value: object) -> bytes:
    """Encode int, str, bytes, list and dict (str keys, sorted as bencode requires)."""
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def parse_bencode_untrusted(data: bytes, *, max_depth: int = MAX_DEPTH) -> object:
    """Decode one bencoded value that fills ``data``; dict keys become str, strings stay bytes.

    Raises :class:`NgError` on malformed input, nesting deeper than ``max_depth`` or more than
    :data:`MAX_ITEMS` items in one list or dict.
    """
    try:
        value, end = _decode(data, 0, max_depth)
    except (ValueError, IndexError, UnicodeDecodeError) as exc:
        raise NgError(f"malformed bencode from rtpengine: {exc}") from None
    if end != len(data):
        raise NgError("trailing octets after the bencoded reply")
    return value


def _decode(data: bytes, at: int, depth: int) -> tuple[object, int]:
    if depth < 0:
        raise ValueError("nested too deep")
    kind = data[at : at + 1]
    if kind == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1 : end]), end + 1
    if kind in (b"l", b"d"):
        at += 1
        items: list[object] = []
        while data[at : at + 1] != b"e":
            if len(items) >= 2 * MAX_ITEMS:
                raise ValueError("too many items")
            item, at = _decode(data, at, depth - 1)
            items.append(item)
        if kind == b"l":
            return items, at + 1
        if len(items) % 2:
            raise ValueError("dict with a key and no value")
        keys = items[0::2]
        if not all(isinstance(k, bytes) for k in keys):
            raise ValueError("dict key is not a string")
        return {k.decode(): v for k, v in zip(keys, items[1::2], strict=True)}, at + 1  # type: ignore[attr-defined]
    colon = data.index(b":", at)
    length = int(data[at:colon])
    if length < 0 or colon + 1 + length > len(data):
        raise ValueError("string runs past the end")
    return data[colon + 1 : colon + 1 + length], colon + 1 + length


# -- NG client --------------------------------------------------------------------------------


class NgClient:
    """Request/reply over NG (UDP). A lost datagram is retried with the same cookie, which
    rtpengine answers from its cache instead of running the command twice."""

    def __init__(self, address: tuple[str, int], *, timeout: float = 2.0) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((ADDRESS, 0))
        self._sock.connect(address)
        self._sock.settimeout(timeout)

    def request(self, command: dict[str, object], *, attempts: int = 3) -> dict[str, object]:
        """Send one command dict; return the reply dict. Raises :class:`NgError` when the
        result is not ``ok``/``pong`` or no reply came."""
        cookie = f"{os.getpid()}_{next(_COOKIES)}".encode()
        datagram = cookie + b" " + bencode(command)
        for _ in range(attempts):
            self._sock.send(datagram)
            deadline = time.monotonic() + (self._sock.gettimeout() or 2.0)
            while time.monotonic() < deadline:
                try:
                    reply = self._sock.recv(MAX_REPLY)
                except (TimeoutError, ConnectionRefusedError):
                    break
                if reply.startswith(cookie + b" "):  # else a late reply to an earlier attempt
                    return _check(command, parse_bencode_untrusted(reply[len(cookie) + 1 :]))
        raise NgError(f"no NG reply to {command.get('command')!r}")

    def close(self) -> None:
        self._sock.close()


def _check(command: dict[str, object], reply: object) -> dict[str, object]:
    if not isinstance(reply, dict):
        raise NgError("NG reply is not a dict")
    result = reply.get("result")
    if result != (b"pong" if command.get("command") == "ping" else b"ok"):
        reason = reply.get("error-reason", b"?")
        raise NgError(f"rtpengine refused {command.get('command')!r}: {result!r} {reason!r}")
    return reply


# -- the process ------------------------------------------------------------------------------


@contextlib.contextmanager
def running(engine: Rtpengine | None) -> Iterator[NgClient | None]:
    """Start ``engine`` (None: the run wants no rtpengine) and yield its NG client; close the
    client and stop rtpengine however the block ends."""
    if engine is None:
        yield None
        return
    client = engine.start()
    print(f"rtpengine started: pid {engine.pid}, --num-threads={engine.threads}", flush=True)
    try:
        yield client
    finally:
        client.close()
        engine.stop()
        print("rtpengine stopped", flush=True)


@attrs.define(eq=False)
class Rtpengine:
    """One rtpengine process on 127.0.0.1 (userspace forwarding only).

    ``threads`` is ``--num-threads`` (media worker threads; rtpengine's default is one per CPU).
    ``lifetime`` bounds the process in seconds even if this Python process dies (``timeout -k``).
    """

    ng_port: int = attrs.field(factory=lambda: media_ports(2).start)
    port_min: int | None = None  # None (both): a block of RTP_PORTS
    port_max: int | None = None
    threads: int = 1
    lifetime: float = 900.0
    log_path: str = os.devnull
    _process: subprocess.Popen[bytes] | None = None
    _log: object = None

    def __attrs_post_init__(self) -> None:
        if self.port_min is None or self.port_max is None:
            block = media_ports(RTP_PORTS)
            self.port_min, self.port_max = block.start, block.stop - 1

    @property
    def pid(self) -> int:
        """The rtpengine process itself (not the ``timeout`` wrapper), for CPU accounting."""
        if self._process is None:
            raise RuntimeError("rtpengine is not running")
        wrapper = self._process.pid
        for _ in range(200):
            for child in _children(wrapper):
                return child
            time.sleep(0.01)
        raise RuntimeError("rtpengine's process was not found under its timeout wrapper")

    def start(self) -> NgClient:
        """Start rtpengine and return an NG client once it answers ``ping``."""
        binary = shutil.which("rtpengine")
        if binary is None:
            raise RuntimeError("rtpengine is not installed: apt-get install -y rtpengine")
        command = [
            "timeout", "-k", "3", f"{self.lifetime:.0f}",
            binary,
            "--config-file=none", "--foreground", "--log-stderr", "--log-level=4",
            "--table=-1",  # no kernel forwarding: userspace only
            f"--interface={ADDRESS}",
            f"--listen-ng={ADDRESS}:{self.ng_port}",
            f"--port-min={self.port_min}", f"--port-max={self.port_max}",
            "--delete-delay=0",
            f"--num-threads={self.threads}",
        ]  # fmt: skip
        self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in stop)
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            preexec_fn=die_with_parent,  # bench_children.py
        )
        client = NgClient((ADDRESS, self.ng_port), timeout=0.1)
        deadline = time.monotonic() + 10.0
        while True:
            try:
                client.request({"command": "ping"}, attempts=1)
                break
            except NgError:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    client.close()
                    self.stop()
                    raise RuntimeError(f"rtpengine did not start (see {self.log_path})") from None
        client.close()
        return NgClient((ADDRESS, self.ng_port))

    def stop(self) -> None:
        """SIGTERM (``timeout`` passes it on), wait, SIGKILL if it lingers. Idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        log, self._log = self._log, None
        if log is not None:
            log.close()  # type: ignore[attr-defined]

    def __enter__(self) -> Rtpengine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _children(pid: int) -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces, so split after the last ')'.
        if int(stat[stat.rindex(b")") + 2 :].split()[1]) == pid:
            yield int(entry)


# -- SDP and offer/answer ---------------------------------------------------------------------


@attrs.frozen
class Srtp:
    """One SDES crypto attribute's content: suite name and master key || master salt."""

    suite: str
    key: bytes = attrs.field(repr=False)


@attrs.frozen
class BridgedCall:
    """What the phones of one call bridged by rtpengine need."""

    a_relay_port: int
    """Where phone A sends (and hears from): the port in rtpengine's answer to A."""
    b_relay_port: int
    """Where phone B sends (and hears from): the port in rtpengine's offer to B."""
    a_receive: Srtp | None
    """rtpengine's key for what it sends to A (None: A is plain RTP)."""
    b_receive: Srtp | None
    """rtpengine's key for what it sends to B."""


@attrs.frozen
class _Media:
    host: str
    port: int
    protocol: str
    crypto: tuple[tuple[int, Srtp], ...]


def phone_sdp(port: int, srtp: Srtp | None, *, tag: int = 1) -> str:
    """A phone's SDP: one PCMU stream at 127.0.0.1:port, RTP/AVP, or RTP/SAVP with one
    a=crypto (RFC 4568 §9.1: ``inline:`` base64 of key || salt)."""
    protocol = "RTP/SAVP" if srtp else "RTP/AVP"
    lines = [
        "v=0",
        f"o=- {port} 1 IN IP4 {ADDRESS}",
        "s=-",
        f"c=IN IP4 {ADDRESS}",
        "t=0 0",
        f"m=audio {port} {protocol} 0",
        "a=rtpmap:0 PCMU/8000",
        "a=sendrecv",
    ]
    if srtp is not None:
        key = base64.b64encode(srtp.key).decode()
        lines.append(f"a=crypto:{tag} {srtp.suite} inline:{key}")
    return "\r\n".join(lines) + "\r\n"


def parse_sdp_untrusted(sdp: bytes, *, max_lines: int = 200) -> _Media:
    """The connection address, first m= port/protocol and a=crypto lines of rtpengine's SDP."""
    host = None
    media = None
    crypto: list[tuple[int, Srtp]] = []
    lines = sdp.decode("ascii", "replace").splitlines()
    if len(lines) > max_lines:
        raise NgError("SDP from rtpengine has too many lines")
    for line in lines:
        if line.startswith("c=IN IP4 "):
            host = line.split()[2]
        elif line.startswith("m=") and media is None:
            fields = line[2:].split()
            media = (int(fields[1]), fields[2])
        elif line.startswith("a=crypto:") and media is not None:
            # a=crypto:<tag> <suite> inline:<key||salt>[|lifetime][|MKI:length] (RFC 4568 §9.1)
            tag, suite, params = line[len("a=crypto:") :].split()[:3]
            if not params.startswith("inline:"):
                continue
            encoded = params[len("inline:") :].split("|")[0]
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
            crypto.append((int(tag), Srtp(suite, key)))
    if host is None or media is None:
        raise NgError("SDP from rtpengine has no c= or m= line")
    return _Media(host, media[0], media[1], tuple(crypto))


_FLAGS: dict[str, object] = {
    "replace": ["origin", "session-connection"],
    "ICE": "remove",
    "DTLS": "off",  # SDES only: no a=setup/a=fingerprint towards the SRTP phone
}


def bridge_call(
    client: NgClient,
    call_id: str,
    *,
    a_port: int,
    b_port: int,
    a_srtp: Srtp | None,
    b_srtp: Srtp | None,
) -> BridgedCall:
    """Offer from phone A (at ``a_port``, sending with ``a_srtp``'s key or in clear), answer
    from phone B (``b_port``, ``b_srtp``) through rtpengine; B's side is RTP/SAVP when
    ``b_srtp`` is given ("transport-protocol"), and B picks rtpengine's crypto line of
    ``b_srtp.suite``."""
    offer = client.request(
        {
            "command": "offer",
            "call-id": call_id,
            "from-tag": "a",
            "sdp": phone_sdp(a_port, a_srtp),
            "transport-protocol": "RTP/SAVP" if b_srtp else "RTP/AVP",
            **_FLAGS,
        }
    )
    to_b = parse_sdp_untrusted(_bytes(offer, "sdp"))
    b_receive = None
    tag = 1
    if b_srtp is not None:
        # The last line of the suite: with A on SRTP, rtpengine's first line is A's own (see the
        # module docstring); its own lines follow.
        matches = [(t, s) for t, s in to_b.crypto if s.suite == b_srtp.suite]
        if not matches:
            raise NgError(f"rtpengine offered no {b_srtp.suite} line")
        tag, b_receive = matches[-1]
    answer = client.request(
        {
            "command": "answer",
            "call-id": call_id,
            "from-tag": "a",
            "to-tag": "b",
            "sdp": phone_sdp(b_port, b_srtp, tag=tag),
            **_FLAGS,
        }
    )
    to_a = parse_sdp_untrusted(_bytes(answer, "sdp"))
    a_receive = None
    if a_srtp is not None:
        if len(to_a.crypto) != 1 or to_a.crypto[0][1].suite != a_srtp.suite:
            raise NgError(f"rtpengine did not answer A with {a_srtp.suite}")
        a_receive = to_a.crypto[0][1]
    for media in (to_a, to_b):
        if media.host != ADDRESS:
            raise NgError(f"rtpengine put media on {media.host}, not {ADDRESS}")
    return BridgedCall(to_a.port, to_b.port, a_receive, b_receive)


def delete_call(client: NgClient, call_id: str) -> None:
    client.request({"command": "delete", "call-id": call_id, "from-tag": "a"})


def _bytes(reply: dict[str, object], key: str) -> bytes:
    value = reply.get(key)
    if not isinstance(value, bytes):
        raise NgError(f"NG reply has no {key!r}: {sorted(reply)} {reply.get('warning')!r}")
    return value


# -- smoke check ------------------------------------------------------------------------------


def _smoke() -> int:
    import struct

    import pylibsrtp

    profiles = {
        "AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
        "AEAD_AES_128_GCM": pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM,
    }

    def session(srtp: Srtp | None, ssrc_type: int) -> pylibsrtp.Session | None:
        if srtp is None:
            return None
        policy = pylibsrtp.Policy(
            key=srtp.key, ssrc_type=ssrc_type, srtp_profile=profiles[srtp.suite]
        )
        return pylibsrtp.Session(policy=policy)

    a_key = Srtp("AES_CM_128_HMAC_SHA1_80", bytes(range(30)))
    b_key = Srtp("AEAD_AES_128_GCM", bytes(range(100, 128)))
    failures = 0
    with Rtpengine(lifetime=60) as engine:
        client = engine.start()
        for name, a_srtp, b_srtp in (("RTP->SRTP", None, a_key), ("SRTP->SRTP", a_key, b_key)):
            phones = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
            for phone in phones:
                phone.bind((ADDRESS, 0))
                phone.settimeout(1.0)
            call = bridge_call(
                client,
                f"smoke-{name}",
                a_port=phones[0].getsockname()[1],
                b_port=phones[1].getsockname()[1],
                a_srtp=a_srtp,
                b_srtp=b_srtp,
            )
            phones[0].connect((ADDRESS, call.a_relay_port))
            phones[1].connect((ADDRESS, call.b_relay_port))
            senders = [
                session(a_srtp, pylibsrtp.Policy.SSRC_ANY_OUTBOUND),
                session(b_srtp, pylibsrtp.Policy.SSRC_ANY_OUTBOUND),
            ]
            receivers = [
                session(call.a_receive, pylibsrtp.Policy.SSRC_ANY_INBOUND),
                session(call.b_receive, pylibsrtp.Policy.SSRC_ANY_INBOUND),
            ]
            ok = 0
            for seq in range(20):
                for side in (0, 1):
                    payload = bytes([side + 1, seq]) * 80
                    rtp = struct.pack("!BBHII", 0x80, 0, seq, 160 * seq, 0xA0 + side) + payload
                    sender = senders[side]
                    phones[side].send(sender.protect(rtp) if sender else rtp)
                    other = 1 - side
                    try:
                        got = phones[other].recv(2048)
                    except TimeoutError:
                        continue
                    receiver = receivers[other]
                    plain = receiver.unprotect(got) if receiver else got
                    ok += plain[12:] == payload
            print(f"{name}: {ok}/40 packets relayed with the right payload", flush=True)
            failures += ok != 40
            delete_call(client, f"smoke-{name}")
            for phone in phones:
                phone.close()
        client.close()
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(_smoke())
