"""kamailio in front of gateway nodes: its dispatcher module spreads calls over them, as an
operator's edge proxy does (../shared/peers.md §5).

:class:`KamailioDispatcher` writes a kamailio.cfg and dispatcher.list into its run directory,
starts ``kamailio -DD -E`` (foreground, logging to its log file) on ``ADDRESS:port`` over UDP
and TCP, and on ``ADDRESS:tls_port`` over TLS when it reaches the nodes over TLS
(``node_transport="tls"``, with a :class:`KamailioTls`), polls until it answers OPTIONS, and
stops it on the way out. Its routing is the usual load balancer's:

- a new INVITE (or SUBSCRIBE) is Record-Routed and relayed to the next node round robin
  (``ds_select_dst(1, 4)``), a REGISTER to the node its Call-ID hashes to (algorithm 0); a 5xx
  or a node that does not answer sends it on to the next (``failure_route``, ``ds_next_dst``);
- in-dialog requests follow their Route headers (``loose_route``);
- as the phones' edge it adds a Path to each REGISTER it relays (``add_path_received()``,
  RFC 3327) and sends a node's request along that Path to the phone's address (the path
  module's ``use_received``);
- over TLS it presents its certificate both ways and requires and verifies the nodes' against
  its CA (mutual TLS between proxy and nodes, as operators run it across a data centre),
  logging each TLS request with what it verified;
- with ``ping_interval`` it sends OPTIONS to every node that often and takes a node out of
  rotation when it answers other than 200 or not at all (``ds_probing_mode`` 1, thresholds of
  1), back when it answers 200 again.

Every routing decision is logged as a line the tests read (:meth:`dispatched_to`).
"""

from __future__ import annotations

import glob
import re
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import attrs

from tests.conftest import missing, require_peer
from tests.interop.harness.ports import free_port
from tests.interop.harness.processes import start_process, stop_process, tail

#: kamailio binds another loopback address than the gateway nodes and phones on 127.0.0.1,
#: so the nodes tell it apart by source address (their trunk's ``allowed_sources``).
ADDRESS = "127.0.0.3"

#: Destination flags in dispatcher.list (kamailio's dispatcher module): probed, and starting
#: inactive until a first OPTIONS is answered 200.
INACTIVE_PROBING = 1 | 8


@attrs.frozen
class KamailioTls:
    """kamailio's certificate and key (PEM files), presented as TLS server and as TLS client,
    and the CA its peers' certificates must chain to."""

    certificate: Path
    private_key: Path
    ca_list: Path


# kamailio's tls module (Debian's kamailio-tls-modules): the same certificate as server and as
# client, and the peer's required and verified both ways.
_TLS_DOMAIN = """\
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
certificate = {certificate}
private_key = {private_key}
ca_list = {ca_list}
"""
_TLS_CONFIG = f"[server:default]\n{_TLS_DOMAIN}\n[client:default]\n{_TLS_DOMAIN}"

_CONFIG = """\
#!KAMAILIO
{defines}
debug=2
log_stderror=yes
children=2
tcp_children=1
# Its TCP connections to the nodes come from its own address, as on a host with one, so the
# nodes know it by source address over TCP too (the kernel would pick 127.0.0.1).
tcp_source_ipv4={address}
auto_aliases=no
dns=no
rev_dns=no
use_dns_cache=off
listen=udp:{address}:{port}
listen=tcp:{address}:{port}
#!ifdef WITH_TLS
enable_tls=yes
listen=tls:{address}:{tls_port}
#!endif
alias="{address}:{port}"
mpath="{modules}"
loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "xlog.so"
loadmodule "ctl.so"
loadmodule "dispatcher.so"
loadmodule "path.so"
#!ifdef WITH_TLS
loadmodule "tls.so"
modparam("tls", "config", "{rundir}/tls.cfg")
#!endif
modparam("ctl", "binrpc", "unix:{rundir}/kamailio_ctl")
modparam("dispatcher", "list_file", "{rundir}/dispatcher.list")
modparam("dispatcher", "flags", 2)
modparam("dispatcher", "xavp_dst", "_dsdst_")
modparam("dispatcher", "ds_ping_from", "sip:dispatcher@{address}")
modparam("dispatcher", "ds_ping_interval", {ping_interval})
modparam("dispatcher", "ds_probing_mode", 1)
modparam("dispatcher", "ds_probing_threshold", 1)
modparam("dispatcher", "ds_inactive_threshold", 1)
modparam("path", "use_received", 1)

request_route {{
  if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
  if (is_method("OPTIONS") && uri == myself && $rU == $null) {{
    sl_send_reply("200", "Keepalive"); exit;
  }}
#!ifdef WITH_TLS
  if ($pr == "tls") {{
    xlog("L_INFO", "TLS $rm from $si:$sp verified=$tls_peer_verified cn=$tls_peer_subject_cn\\n");
  }}
#!endif
  if (has_totag()) {{
    if (loose_route()) {{
      xlog("L_INFO", "in-dialog $rm $ci from $si:$sp to $ru\\n");
      t_relay(); exit;
    }}
    if (is_method("ACK")) {{ if (t_check_trans()) t_relay(); exit; }}
    sl_send_reply("404", "Not here"); exit;
  }}
  if (is_method("CANCEL")) {{ if (t_check_trans()) t_relay(); exit; }}
  t_check_trans();
  if (is_method("REGISTER")) {{
    add_path_received();
  }} else {{
    # A request from a node to a phone registered through us, its Route our Path: with our
    # Route alone loose_route() removes it and says false (a preloaded local route), and the
    # path module has set $du to the phone's address from its "received" parameter.
    loose_route();
    if ($du != $null) {{
      xlog("L_INFO", "along its Route $rm $ci to $ru via $du (Route: $hdr(Route))\\n");
      if (is_method("INVITE|SUBSCRIBE")) record_route();
      t_relay(); exit;
    }}
  }}
  if (is_method("INVITE|SUBSCRIBE")) record_route();
  # A REGISTER goes to the node its Call-ID hashes to (algorithm 0), so that its retry with
  # credentials reaches the node whose challenge it answers (nonces are per node); the rest
  # round robin (algorithm 4).
  if (is_method("REGISTER")) $var(algorithm) = 0; else $var(algorithm) = 4;
  if (!ds_select_dst("1", "$var(algorithm)")) {{ sl_send_reply("503", "No backend"); exit; }}
  xlog("L_INFO", "dispatching $rm $ci to $du\\n");
  t_on_failure("DS_FAIL");
  if (!t_relay()) sl_reply_error();
  exit;
}}

failure_route[DS_FAIL] {{
  if (t_is_canceled()) exit;
  if (t_check_status("5[0-9][0-9]") || (t_branch_timeout() && !t_branch_replied())) {{
    if (ds_next_dst()) {{
      xlog("L_INFO", "dispatching $rm $ci to $du after $T_reply_code\\n");
      t_on_failure("DS_FAIL");
      t_relay();
      exit;
    }}
  }}
}}
"""


def _modules_dir() -> str:
    """Debian's multiarch directory of kamailio's modules (/usr/lib/<triplet>/kamailio/modules)."""
    found = sorted(glob.glob("/usr/lib/*/kamailio/modules/dispatcher.so"))
    if not found:
        raise RuntimeError(
            "kamailio's dispatcher module is not installed (apt-get install kamailio)"
        )
    return str(Path(found[0]).parent)


def _require_tls_module(modules: str) -> None:
    """Debian ships kamailio's tls module apart (kamailio-tls-modules); in CI a missing one
    fails the test, as any missing peer does."""
    if not (Path(modules) / "tls.so").exists():
        missing("kamailio's tls module is not installed (apt-get install kamailio-tls-modules)")


class KamailioDispatcher:
    """kamailio on ``ADDRESS:port`` (UDP and TCP) dispatching to ``nodes`` (``host:port`` each,
    over ``node_transport``), all inactive until each answers OPTIONS when ``ping_interval``
    (seconds) is given, all active from the start without it (no OPTIONS sent). With
    ``node_transport="tls"`` it also listens on ``ADDRESS:tls_port`` with ``tls``."""

    def __init__(
        self,
        workdir: Path,
        nodes: Sequence[str],
        *,
        ping_interval: int = 0,
        node_transport: str = "udp",
        tls: KamailioTls | None = None,
    ) -> None:
        if (node_transport == "tls") != (tls is not None):
            raise ValueError("kamailio reaches its nodes over TLS with certificates, or neither")
        self.binary = require_peer("kamailio")
        self.kamcmd = require_peer("kamcmd")
        self.rundir = workdir / "kamailio"
        self.port = free_port("both")  # it listens on UDP and TCP
        self.tls = tls
        self.tls_port = free_port("tcp") if tls is not None else None
        self.nodes = tuple(nodes)
        self.ping_interval = ping_interval
        self.node_transport = node_transport
        self.log_path = self.rundir / "kamailio.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        """``127.0.0.3:PORT``, the target for sipp and the nodes' trunk."""
        return f"{ADDRESS}:{self.port}"

    @property
    def tls_address(self) -> str:
        """``127.0.0.3:TLS_PORT``, where the nodes reach it over TLS."""
        if self.tls_port is None:
            raise ValueError("this kamailio does not listen on TLS")
        return f"{ADDRESS}:{self.tls_port}"

    def start(self) -> None:
        """Write the config and list, start kamailio, poll until it answers OPTIONS."""
        self.rundir.mkdir(parents=True, exist_ok=True)
        flags = INACTIVE_PROBING if self.ping_interval else 0
        params = "" if self.node_transport == "udp" else f";transport={self.node_transport}"
        (self.rundir / "dispatcher.list").write_text(
            "".join(f"1 sip:{node}{params} {flags} 0\n" for node in self.nodes)
        )
        modules = _modules_dir()
        if self.tls is not None:
            _require_tls_module(modules)
            (self.rundir / "tls.cfg").write_text(
                _TLS_CONFIG.format(
                    certificate=self.tls.certificate,
                    private_key=self.tls.private_key,
                    ca_list=self.tls.ca_list,
                )
            )
        config = self.rundir / "kamailio.cfg"
        config.write_text(
            _CONFIG.format(
                defines="#!define WITH_TLS" if self.tls is not None else "",
                address=ADDRESS,
                port=self.port,
                tls_port=self.tls_port,
                modules=modules,
                rundir=self.rundir,
                ping_interval=self.ping_interval,
            )
        )
        check = subprocess.run(
            [self.binary, "-c", "-f", str(config)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"kamailio refused its config:\n{check.stdout}{check.stderr}")
        # -DD: in the foreground with its children forked; -E: its log to standard error.
        command = [self.binary, "-f", str(config), "-DD", "-E", "-Y", str(self.rundir)]
        command += ["-P", str(self.rundir / "kamailio.pid"), "-m", "64", "-M", "8"]
        self.process = start_process(command, log=self.log_path, cwd=self.rundir)
        deadline = time.monotonic() + 15
        while not self._answers_options():
            if self.process.poll() is not None:
                raise RuntimeError(f"kamailio exited at start-up:\n{tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kamailio did not answer OPTIONS:\n{tail(self.log_path)}")
            time.sleep(0.05)

    def _answers_options(self) -> bool:
        probe = (
            f"OPTIONS sip:{self.address} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKkam{time.monotonic_ns()};rport\r\n"
            f"From: <sip:ready@127.0.0.1>;tag=r\r\nTo: <sip:{self.address}>\r\n"
            f"Call-ID: kam{time.monotonic_ns()}@127.0.0.1\r\nCSeq: 1 OPTIONS\r\n"
            "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            sock.bind(("127.0.0.1", 0))
            sock.sendto(probe, (ADDRESS, self.port))
            try:
                return sock.recv(65535).startswith(b"SIP/2.0 200")
            except OSError:
                return False

    def states(self) -> dict[str, str]:
        """Each node's dispatcher flags, from ``kamcmd dispatcher.list``: ``AP`` active and
        probed, ``IP`` inactive (not answering 200) and probed, ``AX`` active and not probed."""
        out = subprocess.run(
            [self.kamcmd, "-s", f"unix:{self.rundir}/kamailio_ctl", "dispatcher.list"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        return {
            uri: flags for uri, flags in re.findall(r"URI: sip:([^;\s]+)\S*\s+FLAGS: (\S+)", out)
        }

    def wait_for_states(self, wanted: dict[str, str], timeout: float = 15.0) -> None:
        """Poll :meth:`states` until each node in ``wanted`` has its flags."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.states()
            if all(states.get(node) == flags for node, flags in wanted.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"dispatcher states {states}, wanted {wanted}:\n{tail(self.log_path)}"
                )
            time.sleep(0.1)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 15.0) -> re.Match[str]:
        """Poll kamailio's log until ``pattern`` (a regular expression, multi-line) matches."""
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.log_text(), re.M)
            if match is not None:
                return match
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} in kamailio's log:\n{tail(self.log_path)}")
            time.sleep(0.05)

    def dispatched_to(self) -> list[str]:
        """The node (``host:port``) each INVITE was sent to, in order, failovers included."""
        return re.findall(
            r"dispatching INVITE \S+ to sip:([^;\s]+)\S*?(?: after \d+)?$", self.log_text(), re.M
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=5.0)
            self.process = None

    def __enter__(self) -> KamailioDispatcher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
