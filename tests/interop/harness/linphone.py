"""linphonec 5.1 as a SIP phone on 127.0.0.1, driven through a pseudo-terminal.

    with Linphone(tmp_path, "bob", source=tone_wav(tmp_path / "1k.wav", 1000),
                  account=LinphoneAccount(gw.tls_uri, "sip:bob@127.0.0.1", "builder"),
                  media_encryption="srtp", srtp_suites=("AES_256_CM_HMAC_SHA1_80",)) as bob:
        bob.wait_registered()
        bob.call("sip:carol@127.0.0.1:5061;transport=tls")
        bob.wait_connected()
        ...
        bob.terminate()
        bob.wait_ended()
        assert abs(dominant_frequency(bob.received_audio()) - 440) < 5

The traps of ../shared/peers.md §3 are handled here: each instance has its own HOME with
``.local/share/linphone`` (without it the core never starts), linphonec runs on a pseudo-terminal
(with a pipe on stdin readline never iterates the core), and RTP binds 127.0.0.1 with IPv6 off
(otherwise SDP names the host's routable address). SIP listens on kernel-chosen ports only
(``-1``): linphone reaches the gateway over the connection it registers on.

The account is written into linphonerc (``[proxy_0]``, ``[auth_info_0]``), so it registers at
start-up. linphonec still prints "Password for (null) on (null):" at the first digest challenge
and takes the next line typed as that password, whatever the line is; the driver types the
account's password there, so no command is swallowed.

Audio: ``soundcard use files`` makes linphonec play ``source`` (a WAV, see ``tone_wav``) as the
microphone and ``record`` writes what it receives to ``received_audio()``. linphonec's terminal
output goes to ``output_path``, its own log (``-d 5``) to ``log_path``.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import attrs

from tests.conftest import require_peer
from tests.interop.harness.ports import LOOPBACK, free_port_block, release_port_block
from tests.interop.harness.processes import die_with_parent, stop_process, tail

# Cursor and bracketed-paste escapes readline writes to the terminal.
_ESCAPES = re.compile(rb"\x1b\[[?0-9;]*[A-Za-z]")
_PASSWORD_PROMPT = "Password for "
#: Media encryption values linphonerc knows ([sip] media_encryption).
MEDIA_ENCRYPTIONS = ("none", "srtp", "zrtp", "dtls")


class LinphoneError(RuntimeError):
    """linphonec did not start, reported a failure, or did not say what was expected in time."""


@attrs.frozen
class LinphoneAccount:
    """Where linphonec registers: ``proxy`` (e.g. ``sip:127.0.0.1:5061;transport=tls``),
    ``identity`` (``sip:bob@127.0.0.1``) and the digest ``password``."""

    proxy: str
    identity: str
    password: str = attrs.field(repr=False)

    @property
    def username(self) -> str:
        return self.identity.split(":", 1)[1].split("@", 1)[0]


class Linphone:
    """One linphonec with its own HOME and linphonerc under ``workdir``.

    ``source`` is the WAV it sends (16-bit mono 8000 Hz, see ``tone_wav``), None for silence.
    ``media_encryption`` is linphone's ([sip] media_encryption: none, srtp, zrtp, dtls), made
    mandatory unless ``mandatory`` is False. ``srtp_suites`` lists the SDES suites it offers and
    accepts, in order ([sip] srtp_crypto_suites); empty means linphone's default four.
    ``zrtp_key_agreements`` lists the ZRTP key agreements it offers ([sip]
    zrtp_key_agreements_suites: "X255", "DH3k", "DH2k"...); empty means linphone's default
    (DH3k). ``auto_answer`` answers incoming calls (``-a``). Only PCMU is enabled, so the tone
    survives every hop unchanged in shape, unless ``codecs`` names others ((mime, rate), in
    order; e.g. ``(("G729", 8000),)``: mediastreamer2's bcg729). ``video`` adds a VP8 video
    stream to every call, sent from mediastreamer's static picture (no camera needed) and not
    displayed (``-V -C``).
    """

    def __init__(
        self,
        workdir: Path,
        name: str = "linphone",
        *,
        account: LinphoneAccount | None = None,
        source: Path | None = None,
        media_encryption: str = "none",
        mandatory: bool = True,
        srtp_suites: Sequence[str] = (),
        zrtp_key_agreements: Sequence[str] = (),
        auto_answer: bool = False,
        video: bool = False,
        codecs: Sequence[tuple[str, int]] = (("PCMU", 8000),),
        # linphonec loads every mediastreamer plugin before its prompt; with the suite's two
        # halves running, one (libmsqogl.so) once took over 5 s and the prompt missed 10 s.
        # Readiness is polled, so a longer bound costs nothing when it starts fast.
        start_timeout: float = 30.0,
    ) -> None:
        if media_encryption not in MEDIA_ENCRYPTIONS:
            raise ValueError(f"media_encryption must be one of {MEDIA_ENCRYPTIONS}")
        self.name = name
        self.dir = workdir / f"linphone-{name}"
        self.home = self.dir / "home"
        self.rc_path = self.dir / "linphonerc"
        self.log_path = self.dir / "linphonec.log"
        self.output_path = self.dir / "terminal.txt"
        self.record_path = self.dir / "received.wav"
        self.account = account
        self.source = source
        self.media_encryption = media_encryption
        self.mandatory = mandatory
        self.srtp_suites = tuple(srtp_suites)
        self.zrtp_key_agreements = tuple(zrtp_key_agreements)
        self.auto_answer = auto_answer
        self.video = video
        self.codecs = tuple(codecs)
        self.start_timeout = start_timeout
        # RTP on the first port, RTCP on the next (RFC 3550 §11).
        self.rtp_port = free_port_block(2)
        self.rtp_ports = (self.rtp_port, self.rtp_port + 1)
        self.video_rtp_port = free_port_block(2) if video else None
        self._ports_held = True  # until linphonec has exited (stop)
        self.process: subprocess.Popen[bytes] | None = None
        self._master: int | None = None
        self._output = bytearray()
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._passwords_typed = 0

    # --- files and process -------------------------------------------------------------------

    def _rc_text(self) -> str:
        sip = {
            "sip_port": "-1",
            "sip_tcp_port": "-1",
            "sip_tls_port": "-1",
            "bind_address": LOOPBACK,
            "guess_hostname": "0",
            "media_encryption": self.media_encryption,
            "media_encryption_mandatory": "1" if self.mandatory else "0",
            # The gateway's certificate is a test one; this test is about media, not TLS trust.
            "verify_server_certs": "0",
            "verify_server_cn": "0",
        }
        if self.srtp_suites:
            sip["srtp_crypto_suites"] = ",".join(self.srtp_suites)
        if self.zrtp_key_agreements:
            sip["zrtp_key_agreements_suites"] = ",".join(
                f"MS_ZRTP_KEY_AGREEMENT_{name.upper()}" for name in self.zrtp_key_agreements
            )
        sections: dict[str, dict[str, str]] = {
            "sip": sip,
            "rtp": {
                "bind_address": LOOPBACK,
                "prefer_ipv6": "0",
                "audio_rtp_port": str(self.rtp_port),
                "audio_jitt_comp": "60",
            },
            "video": {"display": "0", "capture": "0"},
            "sound": {"echocancellation": "0"},
        }
        enabled = [(mime, rate, 1) for mime, rate in self.codecs]
        disabled = [
            codec
            for codec in [
                ("PCMU", 8000, 1),
                ("opus", 48000, 2),
                ("speex", 16000, 1),
                ("speex", 8000, 1),
                ("PCMA", 8000, 1),
                ("G729", 8000, 1),
            ]
            if codec[:2] not in self.codecs
        ]
        for index, (mime, rate, channels) in enumerate(enabled + disabled):
            sections[f"audio_codec_{index}"] = {
                "mime": mime,
                "rate": str(rate),
                "channels": str(channels),
                "enabled": "1" if index < len(enabled) else "0",
            }
        if self.video_rtp_port is not None:
            sections["rtp"]["video_rtp_port"] = str(self.video_rtp_port)
            sections["video"] = {
                "enabled": "1",
                "capture": "1",
                "display": "0",
                "automatically_initiate": "1",
                "automatically_accept": "1",
                # mediastreamer's stand-in camera (/usr/share/linphone/images/nowebcamCIF.jpg).
                "device": "StaticImage: Static picture",
                "size": "qcif",
            }
            sections["video_codec_0"] = {"mime": "VP8", "rate": "90000", "enabled": "1"}
        if self.account is not None:
            sections["proxy_0"] = {
                "reg_proxy": f"<{self.account.proxy}>",
                "reg_route": f"<{self.account.proxy}>",
                "reg_identity": self.account.identity,
                "reg_expires": "600",
                "reg_sendregister": "1",
                "publish": "0",
            }
            sections["auth_info_0"] = {
                "username": self.account.username,
                "passwd": self.account.password,
            }
        return "".join(
            f"[{section}]\n" + "".join(f"{key}={value}\n" for key, value in keys.items())
            for section, keys in sections.items()
        )

    def start(self) -> None:
        """Write linphonerc, start linphonec on a pseudo-terminal, set up files as the sound
        card, and wait for its prompt."""
        binary = require_peer("linphonec")
        (self.home / ".local" / "share" / "linphone").mkdir(parents=True, exist_ok=True)
        self.rc_path.write_text(self._rc_text())
        self.rc_path.chmod(0o600)  # holds the account's password
        master, slave = pty.openpty()
        # A wide terminal: readline scrolls a long line sideways otherwise, and the echo of a
        # command with a long path never appears in one piece.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 4000, 0, 0))
        args = [binary, "-c", str(self.rc_path), "-d", "5", "-l", str(self.log_path)]
        if self.auto_answer:
            args.append("-a")
        if self.video:
            args += ["-V", "-C"]  # video features, capture without display
        try:
            self.process = subprocess.Popen(
                args,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=self.dir,
                env={**os.environ, "HOME": str(self.home), "TERM": "dumb"},
                preexec_fn=die_with_parent,
                start_new_session=True,  # its own session: the pty's signals reach it alone
            )
        finally:
            os.close(slave)
        self._master = master
        self._reader = threading.Thread(target=self._read, name=f"linphonec {self.name}")
        self._reader.daemon = True
        self._reader.start()
        self.wait_output(r"linphonec> ", timeout=self.start_timeout)
        if self.account is not None:
            # Let the password prompt of the first challenge come and be answered before typing
            # anything, or a command could be taken as the password.
            self.wait_registered(self.start_timeout)
        self.command("soundcard use files", expect=r"Using wav files")
        if self.source is not None:
            self.command(f"play {self.source}")
        self.command(f"record {self.record_path}")

    def _read(self) -> None:
        master = self._master  # stop() sets it to None once the process is gone
        assert master is not None
        with self.output_path.open("ab") as copy:
            while True:
                try:
                    data = os.read(master, 4096)
                except OSError:  # EIO: the process closed the terminal
                    return
                if not data:
                    return
                copy.write(data)
                copy.flush()
                with self._lock:
                    self._output.extend(data)
                self._answer_password_prompt()

    def _answer_password_prompt(self) -> None:
        # linphonec reads the line after its password prompt as the password (see module doc).
        if self.account is None:
            return
        while self._passwords_typed < self.output().count(_PASSWORD_PROMPT):
            self._passwords_typed += 1
            self._type(self.account.password)

    def stop(self, timeout: float = 5.0) -> int:
        """``quit``, then SIGTERM, then SIGKILL (linphonec sometimes hangs on SIGTERM); the
        exit code."""
        if self.process is None:
            raise LinphoneError("linphonec was not started")
        if self.process.poll() is None and self._master is not None:
            try:
                self._type("quit")
                self.process.wait(timeout=timeout)
            except (OSError, subprocess.TimeoutExpired):
                pass
        returncode = stop_process(self.process, sig=signal.SIGTERM, timeout=2.0)
        if self._ports_held:  # once: after that the blocks may already be another peer's
            self._ports_held = False
            release_port_block(self.rtp_port, 2)
            if self.video_rtp_port is not None:
                release_port_block(self.video_rtp_port, 2)
        # The process is gone, so the reader meets EIO at the terminal's end: let it finish
        # before the master closes (it would otherwise read a closed, or reused, descriptor).
        if self._reader is not None:
            self._reader.join(timeout=2.0)
        if self._master is not None:
            os.close(self._master)
            self._master = None
        return returncode

    def __enter__(self) -> Linphone:
        try:
            self.start()
        except BaseException:
            if self.process is not None:
                self.stop(timeout=1.0)
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
            print(f"--- linphonec {self.name} terminal ({self.output_path}) ---")
            print(self.output()[-6000:])
            print(f"--- linphonec {self.name} log ({self.log_path}), end ---")
            print(tail(self.log_path, 120))

    # --- terminal ------------------------------------------------------------------------------

    def _type(self, line: str) -> None:
        if self._master is None:
            raise LinphoneError("linphonec is not running")
        os.write(self._master, line.encode() + b"\n")

    def output(self) -> str:
        """Everything linphonec has printed on its terminal, escapes and CRs removed."""
        with self._lock:
            raw = bytes(self._output)
        return _ESCAPES.sub(b"", raw).decode(errors="replace").replace("\r", "")

    def wait_output(self, pattern: str, timeout: float = 10.0, *, after: int = 0) -> re.Match[str]:
        """Poll the terminal output from offset ``after`` until ``pattern`` (a regex) matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while (found := regex.search(self.output(), after)) is None:
            if self.process is not None and self.process.poll() is not None:
                raise LinphoneError(f"linphonec exited; {pattern!r} not seen:\n{self.output()}")
            if time.monotonic() > deadline:
                raise LinphoneError(f"{pattern!r} not on linphonec's terminal:\n{self.output()}")
            time.sleep(0.05)
        return found

    def wait_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Poll linphonec's own log (``-d 5``) until ``pattern`` (a regex) matches."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            try:
                text = self.log_path.read_text(errors="replace")
            except FileNotFoundError:
                text = ""
            if (found := regex.search(text)) is not None:
                return found
            if time.monotonic() > deadline:
                raise LinphoneError(f"{pattern!r} not in {self.log_path}:\n{tail(self.log_path)}")
            time.sleep(0.05)

    def command(self, line: str, *, expect: str | None = None, timeout: float = 5.0) -> None:
        """Type ``line``; wait until the terminal echoes it (and then shows ``expect``)."""
        mark = len(self.output())
        self._type(line)
        echo = self.wait_output(re.escape(line), timeout, after=mark)
        if expect is not None:
            self.wait_output(expect, timeout, after=echo.end())

    # --- phone actions -------------------------------------------------------------------------

    def wait_registered(self, timeout: float = 10.0) -> None:
        """Wait until the account's registration succeeded (LinphoneRegistrationOk)."""
        self.wait_log(r"to \[LinphoneRegistrationOk\]", timeout)

    def call(self, uri: str) -> None:
        """Call ``uri``; see wait_connected()."""
        self.command(f"call {uri}", expect=r"Establishing call")

    def wait_connected(self, timeout: float = 10.0) -> str:
        """Wait until a call is connected with its media established; the peer as printed.
        LinphoneError if the call ends or fails first."""
        regex = re.compile(
            r"Media streams established with (\S+) for call|"
            r"Call \d+ with \S+ (?:ended|error)|Call \d+ to \S+ (?:ended|error)"
        )
        found = self.wait_output(regex.pattern, timeout)
        if not found.group(0).startswith("Media streams established"):
            raise LinphoneError(f"call failed: {found.group(0)}\n{self.output()}")
        return found.group(1)

    def terminate(self) -> None:
        """Hang up the current call."""
        self.command("terminate")

    def wait_ended(self, timeout: float = 10.0) -> str:
        """Wait until a call has ended; the reason linphonec gives in brackets."""
        return self.wait_output(r"Call \d+ with \S+ ended \(([^)]*)\)", timeout).group(1)

    # --- recordings ----------------------------------------------------------------------------

    def recorded_seconds(self) -> float:
        """Seconds of received audio recorded so far (16-bit mono 8000 Hz)."""
        try:
            return max(0, self.record_path.stat().st_size - 44) / (2 * 8000)
        except FileNotFoundError:
            return 0.0

    def wait_audio(self, seconds: float, timeout: float = 10.0) -> None:
        """Poll until ``seconds`` s of received audio have been recorded."""
        deadline = time.monotonic() + timeout
        while self.recorded_seconds() < seconds:
            if time.monotonic() > deadline:
                raise LinphoneError(
                    f"only {self.recorded_seconds():.2f} s of received audio after {timeout} s"
                )
            time.sleep(0.05)

    def received_audio(self) -> Path:
        """The recording of what linphonec received (complete once the call has ended)."""
        if not self.record_path.exists():
            raise LinphoneError(f"linphonec recorded nothing ({self.record_path})")
        return self.record_path
