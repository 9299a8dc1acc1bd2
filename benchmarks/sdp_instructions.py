"""SDP parses, rewrites and look-ups of real peers' bodies, for callgrind's instruction counts.

N operations of one KIND of body and one OP:

- KIND ``sipp``: sipp 3.6.1's offer (``tests/unit/sdp/sdp_samples.py`` SIPP_UAC, 7 lines), the
  same body every time, as the SIP benchmark sends it;
- KIND ``baresip`` (1.0.0, PCMU, PCMA, opus, telephone-event, 19 lines), ``linphone`` (5.1,
  SDES, nine formats, four a=crypto, 23 lines), ``polycom`` (a VVX-like offer: G.722, G.722.1,
  G.729 annexb=no, telephone-event 127, a=rtcp-mux, 18 lines): 1,000 bodies each, cycled, as
  phones send them: a new o= sess-id and version, m= port, a=ssrc and a=crypto key in each
  (seeded, so every run has the same bodies). 1,000 is more than the parser's value caches
  hold (256 entries), so a phone's o= and m= values miss them as in real traffic;
- OP ``parse``: ``parse_sdp_untrusted`` of the body's bytes; ``rewrite``: the media sections
  rewritten as ``gateway/core/media/session.py``'s ``_rewritten_media`` does for a leg (our
  port, our a=rtcp, the direction written out, the peer's transport and key attributes
  removed) and the session level as ``MediaSession._send`` builds it (the leg-specific
  attributes and the direction removed in one pass, the t= lines without r= and z=); ``look``:
  the 17 attribute look-ups a call makes of a parsed body (a=ice-ufrag, a=crypto, a=key-mgmt,
  a=rtcp-mux, a=rtcp, the directions, the a=rtpmap and a=fmtp values, a=setup, a=fingerprint,
  a=ptime). ``rewrite`` and ``look`` work on bodies parsed before the loop.

What it counts: callgrind counts every instruction of the process (the interpreter's start,
the imports, the bodies made), so run it at two N and take the difference / the N gap: the
instructions of one operation. ``--callgrind`` does that: it runs this script under valgrind at
N = ``--n1`` and ``--n2`` (500 and 2,500 unless told), ``PYTHONHASHSEED=0``, and prints the
figure::

    python benchmarks/sdp_instructions.py baresip parse --callgrind
    # baresip parse: 190,741 instructions per operation (Ir 1,285,355,574 at N = 500,
    #     1,666,837,918 at N = 2500)

which is, by hand::

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.500 \\
        python benchmarks/sdp_instructions.py baresip parse -n 500
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.2500 \\
        python benchmarks/sdp_instructions.py baresip parse -n 2500
    # per operation: (Ir of cg.2500 - Ir of cg.500) / 2000 (the "summary:" or "totals:" line)

The count does not depend on the machine's load. Compare two trees by running each tree's copy
of the script with that tree on ``PYTHONPATH`` (the script imports ``gateway`` from the
repository it sits in). Without valgrind it runs in a second or two and prints the number of
operations done (the wall-clock time it prints is no comparison on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The repository's tests/ is a namespace package: an installed distribution that ships a
# top-level "tests" package (one in the benchmark venv does) would win the import over it.
_tests = types.ModuleType("tests")
_tests.__path__ = [str(ROOT / "tests")]
sys.modules["tests"] = _tests

from gateway.core.media import session as media_session  # noqa: E402
from gateway.core.sdp.model import SessionDescription  # noqa: E402
from gateway.core.sdp.parser import parse_sdp_untrusted  # noqa: E402
from tests.unit.sdp.sdp_samples import BARESIP_PLAIN, LINPHONE_SRTP, SIPP_UAC, crlf  # noqa: E402

KINDS = ("sipp", "baresip", "linphone", "polycom")
OPS = ("parse", "rewrite", "look")
BODIES_PER_KIND = 1000

# A VVX-like offer (the shape of a Polycom phone's: wideband codecs first, G.729 without
# annex B, telephone-event on 127, rtcp-mux offered).
POLYCOM = """
v=0
o=- 1700000001 1700000001 IN IP4 127.0.0.1
s=Polycom IP Phone
c=IN IP4 127.0.0.1
t=0 0
a=sendrecv
m=audio 2222 RTP/AVP 9 115 102 0 8 18 127
a=rtpmap:9 G722/8000
a=rtpmap:115 G7221/32000
a=fmtp:115 bitrate=48000
a=rtpmap:102 G7221/16000
a=fmtp:102 bitrate=32000
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:18 G729/8000
a=fmtp:18 annexb=no
a=rtpmap:127 telephone-event/8000
a=rtcp-mux
"""

_KEY_CHARACTERS = "ABCDEFGHIJabcdefghij0123456789+/"


def bodies(kind: str) -> list[bytes]:
    """The bodies of one kind, as bytes on the wire (the module's docstring says which)."""
    if kind == "sipp":
        return [crlf(SIPP_UAC)]
    template = {"baresip": BARESIP_PLAIN, "linphone": LINPHONE_SRTP, "polycom": POLYCOM}[kind]
    rnd = random.Random(1)
    out = []
    for _ in range(BODIES_PER_KIND):
        lines = []
        for line in template.strip("\n").split("\n"):
            if line.startswith("o="):
                fields = line.split()
                fields[1] = str(rnd.randrange(10**9, 4 * 10**9))  # sess-id
                fields[2] = str(rnd.randrange(10**9, 4 * 10**9))  # sess-version
                line = " ".join(fields)
            elif line.startswith("m="):
                fields = line.split()
                fields[1] = str(rnd.randrange(10000, 30000, 2))
                line = " ".join(fields)
            elif line.startswith("a=ssrc:"):
                line = f"a=ssrc:{rnd.randrange(2**32)} cname:sip:a@127.0.0.1:5381"
            elif line.startswith("a=crypto:"):
                tag, suite, key = line.split(" ")
                # A made-up key of the sample's length ("inline:" is 7 of its characters).
                new_key = "".join(rnd.choice(_KEY_CHARACTERS) for _ in range(len(key) - 7))
                line = f"{tag} {suite} inline:{new_key}"
            lines.append(line)
        out.append(crlf("\n".join(lines)))
    return out


class _OurPorts:
    """The relay's ports the rewrite writes into the SDP (never bound): above the ephemeral
    range, as tests/test_benchmark_ports.py wants every fixed port number of a benchmark."""

    rtp_port = 62000
    rtcp_port = 62001


class _OurSide:
    """What ``_rewritten_media`` reads of a relay side: its ports."""

    ports = _OurPorts()


def _rewrite(description: SessionDescription) -> None:
    side: media_session.RelaySide = _OurSide()  # type: ignore[assignment]
    for media in description.media:
        media_session._rewritten_media(description, media, side, rtcp_mux=False)
    # The session level as MediaSession._send makes it (session 42: one pass, t=0 0 kept).
    media_session._relayed_attributes(description.attributes, None, None)
    media_session._without_repeats(description.times)


def _look(description: SessionDescription) -> None:
    media = description.media[0]
    section, session = media.attributes, description.attributes
    section.has("ice-ufrag")
    session.has("ice-ufrag")
    session.has("ice-lite")
    section.has("crypto")
    section.get("key-mgmt")
    session.get("key-mgmt")
    section.has("rtcp-fb")
    media.rtcp_mux  # noqa: B018 (a property: the look-up is the work)
    media.rtcp  # noqa: B018
    media.direction  # noqa: B018
    description.direction  # noqa: B018
    media.rtpmaps()
    media.fmtp(101)
    media.setup  # noqa: B018
    media.fingerprints  # noqa: B018
    section.values("rtpmap")
    media.ptime  # noqa: B018


def run(kind: str, op: str, n: int) -> None:
    """N operations OP on the bodies of KIND, cycled."""
    raw = bodies(kind)
    count = len(raw)
    if op == "parse":
        for i in range(n):
            parse_sdp_untrusted(raw[i % count])
        return
    parsed = [parse_sdp_untrusted(body) for body in raw]
    operation: Callable[[SessionDescription], None] = _rewrite if op == "rewrite" else _look
    for i in range(n):
        operation(parsed[i % count])


def _instructions(callgrind_out: Path) -> int:
    """The process's instruction count: callgrind's "summary:" (or older "totals:") line."""
    match = re.search(r"^(?:summary|totals): (\d+)", callgrind_out.read_text(), re.M)
    if match is None:
        raise SystemExit(f"no summary line in {callgrind_out}")
    return int(match.group(1))


def callgrind(kind: str, op: str, n1: int, n2: int) -> None:
    """Run this script under callgrind at N1 and N2 and print the instructions per operation."""
    counts = []
    with tempfile.TemporaryDirectory(prefix="sdp-instructions-") as directory:
        for n in (n1, n2):
            out = Path(directory) / f"callgrind.{n}"
            subprocess.run(
                [
                    "valgrind",
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}",
                    sys.executable,
                    __file__,
                    kind,
                    op,
                    "-n",
                    str(n),
                ],
                env={**os.environ, "PYTHONHASHSEED": "0"},
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            counts.append(_instructions(out))
    per_operation = (counts[1] - counts[0]) / (n2 - n1)
    print(
        f"{kind} {op}: {per_operation:,.0f} instructions per operation "
        f"(Ir {counts[0]:,} at N = {n1}, {counts[1]:,} at N = {n2})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("op", choices=OPS)
    parser.add_argument("-n", type=int, default=2500, help="operations (default 2500)")
    parser.add_argument(
        "--callgrind", action="store_true", help="run under valgrind at N1 and N2, print per op"
    )
    parser.add_argument("--n1", type=int, default=500)
    parser.add_argument("--n2", type=int, default=2500)
    args = parser.parse_args()
    if args.callgrind:
        if args.n2 <= args.n1:
            parser.error("--n2 must be more than --n1")
        callgrind(args.kind, args.op, args.n1, args.n2)
        return
    started = time.perf_counter()
    run(args.kind, args.op, args.n)
    seconds = time.perf_counter() - started
    print(f"{args.kind} {args.op}: {args.n} operations in {seconds:.3f} s (wall clock)")


if __name__ == "__main__":
    main()
