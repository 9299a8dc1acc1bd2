"""baresip 1.0.0 as a SIP phone on 127.0.0.1, driven over its ctrl_tcp socket.

    with Baresip(tmp_path, "alice", source=tone_wav(tmp_path / "1k.wav", 1000)) as alice:
        alice.register(gw.uri("alice"), "wonderland")
        alice.dial(gw.uri("bob"))
        alice.wait_established()
        ...
        alice.hangup()
        alice.wait_closed()
        assert abs(dominant_frequency(alice.received_audio()) - 440) < 5

Each instance has its own config directory (shared/peers.md §2.2): SIP on 127.0.0.1 only (UDP
and TCP on ``sip_port``; baresip also claims ``sip_port + 1`` for TLS), its own RTP port range,
audio read from a WAV by the aufile module and recorded by the sndfile module (received audio in
``rec/dump-*-dec.wav``, sent audio in ``-enc.wav``), ALSA's null device as the speaker. It starts
with one account, ``sip:NAME@127.0.0.1:SIP_PORT``, which does not register and answers every
call at once, so two instances can call each other without a registrar.

Commands go over ctrl_tcp (netstring-framed JSON); its asynchronous events (CALL_ESTABLISHED,
REGISTER_OK, ...) are collected in ``events``. baresip's own output goes to ``log_path``.
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import subprocess
import time
import wave
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import attrs

from tests.conftest import require_peer
from tests.interop.harness.ports import (
    LOOPBACK,
    free_port,
    free_port_block,
    release_port_block,
)
from tests.interop.harness.processes import start_process, stop_process, tail

Event = dict[str, Any]

MODULE_PATH = "/usr/lib/baresip/modules"
# No stdio.so: without a tty on stdin it fails ("fd_listen: fd=0 Operation not permitted").
# The audio codecs' modules come first (``Baresip(codecs=)``): baresip offers its codecs in the
# order their modules were loaded.
MODULES = ("alsa.so", "aufile.so", "sndfile.so", "srtp.so", "dtls_srtp.so")
# The sampling rate of each codec module's audio: aufile's source WAV must have the codec's
# ("aufile: input file ... must have sample-rate 16000 Hz"), and sndfile records at it.
CODEC_RATES = {
    "g711": 8000,
    "g722": 16000,
    "opus": 48000,
    "amr": 8000,
    "amr-wb": 16000,
    "gsm": 8000,
}
# The codecs of a module an account is narrowed to (its ``audio_codecs``): baresip's amr
# module offers AMR-WB/16000 before AMR/8000, and its phones would agree on the wideband one;
# "amr-wb" is that module narrowed to AMR-WB.
ACCOUNT_AUDIO_CODECS = {"amr": "AMR/8000/1", "amr-wb": "AMR-WB/16000/1"}
CODEC_MODULES = {"amr-wb": "amr"}
# And its channels: baresip's opus module is opus/48000/2 and runs its audio in stereo
# ("aufile: input file ... must have channels = 2"); the others mono.
CODEC_CHANNELS = {"opus": 2}
# netstrings carry ctrl_tcp messages; bound what a misbehaving peer can make us buffer.
MAX_CTRL_MESSAGE = 1 << 20


# baresip -s writes each message in colour: ESC[36;1m "#", "TRANSPORT SRC -> DST", the message,
# ESC[;m (libre's sip_trace handler).
_TRACE_ENTRY = re.compile(r"\x1b\[36;1m#\n(\S+) (\S+) -> (\S+)\n(.*?)\x1b\[;m", re.DOTALL)


@attrs.frozen
class SipTraceEntry:
    """One SIP message in baresip's ``-s`` trace: ``source`` -> ``destination`` ("IP:PORT")."""

    transport: str
    source: str
    destination: str
    message: str


class BaresipError(RuntimeError):
    """baresip refused a command, reported a failure, or did not answer in time."""


class Baresip:
    """One baresip process with its own config directory under ``workdir``.

    ``source`` is the WAV it sends (16-bit mono at the rate of the first of ``codecs``: 8000 Hz
    for G.711, 16000 for G.722, 48000 for Opus; see ``tone_wav``; the call ends when the file
    does), or None for 60 s of silence. ``codecs`` are its audio codec modules, in the order it
    offers them
    (default G.711 alone). ``mediaenc`` is the local account's media
    encryption (srtp, srtp-mand, srtp-mandf, dtls_srtp). ``tls_certificate`` (key and
    certificate in one PEM) turns on the TLS listener on ``sip_port + 1``. ``extra_config``
    lines are appended to the generated config. ``sip_trace`` adds baresip's ``-s``: every SIP
    message it sends and receives, SDP included, goes to ``log_path`` (see ``sip_messages``);
    the only way to read the SDP of a call over TLS. ``rtcp_mux`` offers RFC 5761 rtcp-mux
    (WebRTC's way); by default RTCP has its own port. ``account`` replaces the accounts file's
    local account (one that registers from the start, e.g. with ``;pubint=600`` for the presence
    module's PUBLISH); ``contacts`` is the contacts file (``<uri>;presence=p2p`` lines are what
    the presence module subscribes to; the contact module reads the file).
    """

    def __init__(
        self,
        workdir: Path,
        name: str = "baresip",
        *,
        source: Path | None = None,
        mediaenc: str | None = None,
        tls_certificate: Path | None = None,
        extra_config: str = "",
        sip_trace: bool = False,
        rtp_port_count: int = 20,
        start_timeout: float = 10.0,
        rtcp_mux: bool = False,
        account: str | None = None,
        contacts: str = "",
        codecs: tuple[str, ...] = ("g711",),
    ) -> None:
        self.name = name
        self.dir = workdir / f"baresip-{name}"
        self.rec_dir = self.dir / "rec"
        self.log_path = self.dir / "output.log"
        # SIP on UDP and TCP, and TLS on the next port whether or not it is configured.
        self.sip_port = free_port_block(2, "both", align=1)
        self.ctrl_port = free_port("tcp")
        rtp_low = free_port_block(rtp_port_count)
        self.rtp_ports = (rtp_low, rtp_low + rtp_port_count - 1)
        self._ports_held = True  # until baresip has exited (stop)
        self.local_aor = f"sip:{name}@{LOOPBACK}:{self.sip_port}"
        self.source = source
        self.mediaenc = mediaenc
        self.tls_certificate = tls_certificate
        self.extra_config = extra_config
        self.sip_trace = sip_trace
        self.rtcp_mux = rtcp_mux
        self.account = account
        self.contacts = contacts
        self.codecs = codecs
        """baresip's audio codec modules, in the order it offers them (``g722``: G.722,
        recorded at 16 kHz)."""
        self.sample_rate = CODEC_RATES[codecs[0]]
        """The first codec's sampling rate: its source's (``source`` must have it) and its
        recordings' when that codec is the call's."""
        self.channels = CODEC_CHANNELS.get(codecs[0], 1)
        """The first codec's channels, as ``sample_rate``."""
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        #: Every ctrl_tcp event so far, oldest first.
        self.events: list[Event] = []
        self._taken: set[int] = set()  # indexes of events wait_event has returned
        self._responses: dict[str, Event] = {}
        self._sock: socket.socket | None = None
        self._buffer = b""
        self._tokens = itertools.count(1)

    # --- files and process ---------------------------------------------------------------

    def _config_text(self) -> str:
        source = self.source if self.source is not None else self._silence()
        lines = [
            ("poll_method", "epoll"),
            ("sip_listen", f"{LOOPBACK}:{self.sip_port}"),
            ("net_interface", LOOPBACK),  # not "lo": that fails with "could not get address"
            ("dns_server", f"{LOOPBACK}:53"),  # keep its resolver off the real network
            ("audio_player", "alsa,null"),
            ("audio_source", f"aufile,{source}"),
            ("audio_alert", "alsa,null"),
            ("rtp_ports", f"{self.rtp_ports[0]}-{self.rtp_ports[1]}"),
            ("rtp_timeout", "0"),
            ("rtcp_mux", "yes" if self.rtcp_mux else "no"),
            ("rtp_stats", "yes"),
            ("module_path", MODULE_PATH),
            *(("module", f"{CODEC_MODULES.get(codec, codec)}.so") for codec in self.codecs),
            *(("module", module) for module in MODULES),
            ("module_tmp", "account.so"),
            ("module_app", "menu.so"),
            ("module_app", "ctrl_tcp.so"),
            ("ctrl_tcp_listen", f"{LOOPBACK}:{self.ctrl_port}"),
            ("snd_path", str(self.rec_dir)),
        ]
        if self.tls_certificate is not None:
            lines.append(("sip_certificate", str(self.tls_certificate)))
        text = "".join(f"{key}\t\t{value}\n" for key, value in lines)
        return text + self.extra_config + ("\n" if self.extra_config else "")

    def _silence(self, seconds: int = 60) -> Path:
        path = self.dir / "silence.wav"
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(self.channels)
            wav.setsampwidth(2)
            wav.setframerate(self.sample_rate)
            wav.writeframes(bytes(2 * self.channels * self.sample_rate * seconds))
        return path

    def _account_params(self, mediaenc: str | None, answermode: str = "auto") -> str:
        params = f";answermode={answermode}"
        if mediaenc is not None:
            params += f";mediaenc={mediaenc}"
        narrowed = [ACCOUNT_AUDIO_CODECS[c] for c in self.codecs if c in ACCOUNT_AUDIO_CODECS]
        if narrowed:
            params += f";audio_codecs={','.join(narrowed)}"
        return params

    def start(self) -> None:
        """Write the config, start baresip and wait until ctrl_tcp answers."""
        self.rec_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "config").write_text(self._config_text())
        account = self.account or f"<{self.local_aor}>;regint=0"
        (self.dir / "accounts").write_text(f"{account}{self._account_params(self.mediaenc)}\n")
        (self.dir / "contacts").write_text(self.contacts)
        args = [require_peer("baresip"), "-f", str(self.dir)]
        if self.sip_trace:
            args.append("-s")
        self.process = start_process(args, log=self.log_path)
        deadline = time.monotonic() + self.start_timeout
        while self._sock is None:
            if self.process.poll() is not None:
                raise BaresipError(
                    f"baresip exited with {self.process.returncode}:\n{tail(self.log_path)}"
                )
            try:
                self._sock = socket.create_connection((LOOPBACK, self.ctrl_port), timeout=1.0)
            except OSError:
                if time.monotonic() > deadline:
                    raise BaresipError(
                        f"baresip ctrl_tcp did not open:\n{tail(self.log_path)}"
                    ) from None
                time.sleep(0.05)
        self.wait_for(r"baresip is ready", timeout=max(1.0, deadline - time.monotonic()))

    def stop(self, timeout: float = 5.0) -> int:
        """``quit`` (hangs up and unregisters), then SIGTERM, then SIGKILL; the exit code."""
        if self.process is None:
            raise BaresipError("baresip was not started")
        if self.process.poll() is None and self._sock is not None:
            try:
                self._send("quit", "")
                self.process.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                pass  # SIGTERM below
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        returncode = stop_process(self.process, sig=signal.SIGTERM, timeout=timeout)
        if self._ports_held:  # once: after that the blocks may already be another peer's
            self._ports_held = False
            release_port_block(self.sip_port, 2)
            low, high = self.rtp_ports
            release_port_block(low, high - low + 1)
        return returncode

    def __enter__(self) -> Baresip:
        try:
            self.start()
        except BaseException:
            if self.process is not None:
                stop_process(self.process, timeout=2.0)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
        if exc is not None:
            print(f"--- baresip {self.name} ({self.log_path}) ---")
            print(self.output()[-8000:])
            print(f"--- baresip {self.name} events ---")
            for event in self.events:
                print(json.dumps(event))

    # --- ctrl_tcp --------------------------------------------------------------------------

    def _send(self, command: str, params: str) -> str:
        if self._sock is None:
            raise BaresipError("baresip is not running")
        token = f"t{next(self._tokens)}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self._sock.sendall(str(len(body)).encode() + b":" + body + b",")
        return token

    def _pump(self, timeout: float) -> None:
        """Read what ctrl_tcp has sent within ``timeout`` s and file responses and events."""
        if self._sock is None:
            raise BaresipError("baresip is not running")
        self._sock.settimeout(max(timeout, 0.001))
        try:
            data = self._sock.recv(65536)
        except TimeoutError:
            return
        if not data:
            self._sock.close()
            self._sock = None
            raise BaresipError(f"baresip closed ctrl_tcp:\n{tail(self.log_path)}")
        self._buffer += data
        while b":" in self._buffer:
            length_text, _, rest = self._buffer.partition(b":")
            length = int(length_text)
            if length > MAX_CTRL_MESSAGE:
                raise BaresipError(f"ctrl_tcp message of {length} bytes")
            if len(rest) < length + 1:
                return  # incomplete netstring; wait for more
            message = json.loads(rest[:length])
            self._buffer = rest[length + 1 :]  # skip the trailing ","
            if message.get("event"):
                self.events.append(message)
            elif "token" in message:
                self._responses[message["token"]] = message

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> str:
        """Run a menu command (dial, hangup, uanew, ...); its text reply, or BaresipError."""
        token = self._send(command, params)
        deadline = time.monotonic() + timeout
        while token not in self._responses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BaresipError(f"no reply to {command!r} within {timeout} s")
            self._pump(remaining)
        reply = self._responses.pop(token)
        if not reply.get("ok"):
            raise BaresipError(f"{command} {params!r} failed: {reply.get('data')!r}")
        return str(reply.get("data", ""))

    def wait_event(
        self,
        event_type: str,
        timeout: float = 10.0,
        *,
        match: Callable[[Event], bool] | None = None,
        fail_on: tuple[str, ...] = (),
        after: int = 0,
    ) -> Event:
        """The oldest event of ``event_type`` (and ``match``) not returned before.

        ``after`` skips the first events: pass ``len(phone.events)`` taken before an action to
        wait for an event that action causes, not an older one of the same type (the
        CALL_REMOTE_SDP of a re-INVITE, not the call's first one). Raises BaresipError when an
        event of a type in ``fail_on`` comes first, or after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while True:
            for index, event in enumerate(self.events):
                if index < after or index in self._taken:
                    continue
                if match is not None and not match(event):
                    continue
                if event.get("type") == event_type:
                    self._taken.add(index)
                    return event
                if event.get("type") in fail_on:
                    self._taken.add(index)
                    raise BaresipError(f"{event['type']} while waiting for {event_type}: {event}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = [event.get("type") for event in self.events]
                raise BaresipError(f"no {event_type} within {timeout} s; events: {seen}")
            self._pump(min(remaining, 0.2))

    def output(self) -> str:
        """Everything baresip has printed so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def sip_messages(
        self, start: str = "", *, retransmissions: bool = False
    ) -> list[SipTraceEntry]:
        """The SIP messages of the ``sip_trace`` so far whose first line starts with ``start``
        (e.g. ``"SIP/2.0 200"``), oldest first, each with CRLF made LF. An entry equal to an
        earlier one (same transport, addresses and message) is a UDP retransmission (RFC 3261
        §17.1.1.2, §13.3.1.4: a request until answered, a 2xx until ACKed, as a loaded
        machine's peers do) and is left out unless ``retransmissions``."""
        entries: list[SipTraceEntry] = []
        for match in _TRACE_ENTRY.finditer(self.output()):
            transport, source, destination, message = match.groups()
            message = message.replace("\r\n", "\n")
            if message.startswith(start):
                entry = SipTraceEntry(transport, source, destination, message)
                if retransmissions or entry not in entries:
                    entries.append(entry)
        return entries

    def answer_to_invite(self) -> SipTraceEntry:
        """The one 200 answering an INVITE in the trace (sent or received by this phone)."""
        answers = [
            entry
            for entry in self.sip_messages("SIP/2.0 200 ")
            if re.search(r"^CSeq: \d+ INVITE$", entry.message, re.MULTILINE)
        ]
        assert len(answers) == 1, answers
        return answers[0]

    def wait_for(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Poll baresip's output until ``pattern`` (a regex) matches; the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (found := regex.search(self.output())) is None:
            if self.process is not None and self.process.poll() is not None:
                raise BaresipError(f"baresip exited; {pattern!r} not seen:\n{tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise BaresipError(f"{pattern!r} not in baresip output:\n{tail(self.log_path)}")
            time.sleep(0.05)
        return found

    # --- phone actions ---------------------------------------------------------------------

    def register(
        self,
        account_uri: str,
        password: str,
        *,
        regint: int = 600,
        mediaenc: str | None = None,
        params: str = "",
        timeout: float = 10.0,
        answermode: str = "auto",
    ) -> Event:
        """Add an account that registers (digest ``password``) and make it the one that dials.

        ``account_uri`` is the address of record, e.g. ``sip:alice@127.0.0.1:PORT``; baresip
        registers it at that host (``;transport=tcp`` inside the URI selects TCP). ``params``
        are more account parameters (";outbound=..."); ``answermode`` "manual" leaves incoming
        calls ringing until :meth:`accept`. Returns the REGISTER_OK event; raises
        BaresipError on REGISTER_FAIL. baresip 1.0.0 fails on any SHA-256 challenge, so the
        registrar must offer MD5 only.
        """
        aor = account_uri.strip("<>")
        line = f"<{aor}>;auth_pass={password};regint={regint}"
        self.command("uanew", line + self._account_params(mediaenc, answermode) + params)
        self.command("uafind", aor)  # the current UA is the one /dial uses
        return self.wait_event(
            "REGISTER_OK",
            timeout,
            match=lambda event: event.get("accountaor") == aor,
            fail_on=("REGISTER_FAIL",),
        )

    def register_over_tls(
        self, host: str, tls_port: int, password: str, *, mediaenc: str | None = None
    ) -> str:
        """Add an account that registers over TLS at ``host:tls_port`` and make it the one that
        dials; its address of record. baresip reports that address without the URI's
        ``;transport=tls``, so the REGISTER_OK is matched (and the account found) by it."""
        aor = f"sip:{self.name}@{host}:{tls_port}"
        line = f"<{aor};transport=tls>;auth_pass={password};regint=600"
        self.command("uanew", line + self._account_params(mediaenc))
        self.wait_event(
            "REGISTER_OK",
            10,
            match=lambda event: event.get("accountaor") == aor,
            fail_on=("REGISTER_FAIL",),
        )
        self.use_account(aor)
        return aor

    def use_account(self, account_uri: str) -> None:
        """Make the account with this address of record the one that dials."""
        self.command("uafind", account_uri.strip("<>"))

    def dial(self, uri: str) -> None:
        """Call ``uri`` from the current account; see wait_established()."""
        self.command("dial", uri)

    def accept(self) -> None:
        """Answer the incoming call that rings (an account registered with answermode manual)."""
        self.command("accept")

    def hangup(self) -> None:
        """Hang up the current call (BYE, or CANCEL while it rings)."""
        self.command("hangup")

    def hold(self) -> None:
        """Put the current call on hold: a re-INVITE offering ``a=sendonly`` (RFC 3264 §8.4).

        baresip 1.0.0 sends RTP only on a sendrecv stream, so a held call carries no audio in
        either direction; and its sndfile recording of received audio does not grow again after
        resume() (measure resumed audio in a capture, see ``rtp_payloads``).
        """
        self.command("hold")

    def resume(self) -> None:
        """Take the current call off hold: a re-INVITE offering ``a=sendrecv`` again.

        baresip 1.1 (Debian 13) answers a bare ``resume`` after ``hold`` with "Invalid
        argument" and resumes when given the call's id; 1.0 takes the bare command.
        """
        try:
            self.command("resume")
        except BaresipError as error:
            call_id = self._established_call_id()
            if "Invalid argument" not in str(error) or call_id is None:
                raise
            self.command("resume", call_id)

    def _established_call_id(self) -> str | None:
        """The id of the newest established call that has not closed, or None."""
        closed = {e.get("id") for e in self.events if e.get("type") == "CALL_CLOSED"}
        for event in reversed(self.events):
            if event.get("type") == "CALL_ESTABLISHED" and event.get("id") not in closed:
                return str(event.get("id"))
        return None

    def presence_offline(self) -> None:
        """Publish (and notify) the account's presence as closed, with the presence module:
        ``presence_offline`` in baresip 1.0 (Debian 12), ``presence offline`` from 1.1 (Debian
        13), which dropped the former."""
        try:
            self.command("presence_offline")
        except BaresipError as error:
            if "command not found" not in str(error):
                raise
            self.command("presence", "offline")

    def wait_established(self, timeout: float = 10.0) -> Event:
        """The next CALL_ESTABLISHED; BaresipError if the call closes first."""
        return self.wait_event("CALL_ESTABLISHED", timeout, fail_on=("CALL_CLOSED",))

    def wait_closed(self, timeout: float = 10.0) -> Event:
        """The next CALL_CLOSED (its ``param`` says why, e.g. "Connection reset by peer")."""
        return self.wait_event("CALL_CLOSED", timeout)

    # --- recordings ------------------------------------------------------------------------

    def recordings(self, kind: str = "dec") -> list[Path]:
        """sndfile's recordings, oldest first: "dec" (received) or "enc" (sent).

        The names carry a timestamp in seconds, so two calls that start in the same second
        share one file.
        """
        return sorted(self.rec_dir.glob(f"dump-*-{kind}.wav"))

    def received_audio(self, timeout: float = 5.0) -> Path:
        """The newest recording of received audio, once sndfile has finished writing it."""
        return self._finished_recording("dec", timeout)

    def sent_audio(self, timeout: float = 5.0) -> Path:
        """The newest recording of sent audio, once sndfile has finished writing it."""
        return self._finished_recording("enc", timeout)

    def recorded_seconds(self, kind: str = "dec") -> float:
        """Seconds of audio in the newest recording ("dec": received, "enc": sent), 0 if none.

        The sent recording grows in real time for as long as a call lasts, on hold too, so
        ``wait_audio(recorded_seconds("enc") + s, kind="enc")`` lets ``s`` seconds of the call
        pass by the phone's own audio clock.
        """
        files = self.recordings(kind)
        return self._seconds_in(files[-1]) if files else 0.0

    def _seconds_in(self, recording: Path) -> float:
        """Seconds of audio in one of its recordings (a 44-octet header, then 16-bit samples
        at the first codec's rate and channels)."""
        return max(0, recording.stat().st_size - 44) / (2 * self.channels * self.sample_rate)

    def wait_audio(self, seconds: float, timeout: float = 10.0, *, kind: str = "dec") -> Path:
        """Poll until the newest recording ("dec": received) holds ``seconds`` s of audio.

        This is how a test lets a call carry audio for a while without a fixed sleep. The
        recordings are 16-bit at the codec's rate and channels (8000 Hz for G.711, 16000 for
        G.722, mono; 48000 Hz stereo for Opus).
        """
        deadline = time.monotonic() + timeout
        while True:
            files = self.recordings(kind)
            if files and self._seconds_in(files[-1]) >= seconds:
                return files[-1]
            if time.monotonic() > deadline:
                sizes = {file.name: file.stat().st_size for file in files}
                raise BaresipError(f"no {seconds} s of {kind} audio after {timeout} s: {sizes}")
            time.sleep(0.05)

    def _finished_recording(self, kind: str, timeout: float) -> Path:
        deadline = time.monotonic() + timeout
        while True:
            files = self.recordings(kind)
            if files and _wav_complete(files[-1]):
                return files[-1]
            if time.monotonic() > deadline:
                raise BaresipError(f"no finished {kind} recording in {self.rec_dir}: {files}")
            time.sleep(0.05)


def _wav_complete(path: Path) -> bool:
    # libsndfile writes the RIFF chunk size (file size - 8, RIFF header) when it closes the file.
    data = path.read_bytes()[:8]
    return (
        len(data) == 8
        and data[:4] == b"RIFF"
        and int.from_bytes(data[4:], "little") == path.stat().st_size - 8
    )
