"""What the relay drops as a call between two real phones starts, and why (docs/metrics.md,
"Drops at a call's start").

Two baresip phones registered to the gateway; alice calls bob, who auto-answers, and alice
hangs up after a second of audio each way. baresip starts its stream as it rings: its first
RTCP packet, often an RTP packet or a few, reach the gateway before its 200 does. Until the
answer nothing flows from bob (he might be a fork that never answers): ``blocked``. alice
sends only once she has our 200: on a plain call nothing of hers is dropped. On a DTLS-SRTP
call (``mediaenc=dtls_srtp``, no rtcp-mux: a handshake on each port, RFC 5764 §4.1) her first
RTCP may also come before the keys (``blocked``), and an SRTCP packet may cross the end of its
port's handshake (``srtp_refused``), either way.

What was fixed must not come back, so while the call is up (a scrape of the live call's
counters, before the hang-up adds a DTLS phone's last RTCP in clear, ``srtp_refused``) there is
no ``malformed`` (a DTLS callee's
ClientHellos, sent as it rings, read before the call's handshake task took its sockets or, on
its RTCP port, with no handshake there before its answer: the handshake waited a second for
the resend, and media or SRTCP with it) and no ``unlatched_source`` (bob's RTCP, latched before
his answer from the address his answer implies, was refused as a previous peer's for 3 s); nor
after the hang-up (its close_notify alerts are DTLS, RFC 7983 §7, not malformed media). The
call record (``voipgw calls --json``) and the Prometheus exposition (read by Prometheus' own
parser) say the same.

With media workers (``[media] workers = 2``) the caller's handshake, ours to start (we answer
``a=setup:active``, RFC 5763 §5), must not start before our 200 reaches her: baresip ignores a
ClientHello before it has our answer's fingerprint, and the handshake waited for the resend (1 s,
RFC 6347 §4.2.4.1) while our 200 waited for the workers' ``MediaSession.applied()``: bob's first
second, about 50 packets, was dropped as ``blocked``. A capture shows the order: our first
ClientHello to alice after our 200 to her; and bob's ``blocked`` drops stay the few before his
answer, far fewer than that second's.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
from pathlib import Path

import pytest

from gateway.core.media.relay import DROP_REASONS
from tests.conftest import require_peer
from tests.integration.prometheus_scrape import curl, parser, value
from tests.interop.harness import Baresip, GatewayProcess, tone_wav
from tests.interop.harness.capture import HEURISTICS_FIRST, Capture, udp_filter

pytestmark = pytest.mark.interop

PASSWORDS = {"alice": "wonderland-d3o9", "bob": "builder-d3o9"}
READY = r"metrics: Prometheus exposition on http://127\.0\.0\.1:(\d+)/metrics"
TOTAL = "voipgw_media_dropped_packets"
FAMILY = "voipgw_media_dropped_packets_by_reason"
AUDIO_SECONDS = 1.0
RESEND_PACKETS = 25
"""Half the 20-ms packets of the second a ClientHello resent after 1 s costs (RFC 6347
§4.2.4.1): bob's ``blocked`` drops before his answer are a few, with the resend about 50."""


def _scrape(port: int) -> dict[str, object]:
    result = curl("--fail", f"http://127.0.0.1:{port}/metrics")
    assert result.returncode == 0, result.stderr
    return {f.name: f for f in parser().text_string_to_metric_families(result.stdout)}  # type: ignore[attr-defined]


def _by_reason(found: dict[str, object]) -> dict[str, float]:
    return {
        reason: value(found, FAMILY, f"{FAMILY}_total", reason=reason) for reason in DROP_REASONS
    }


def _to_caller(pcap: Path, gw: GatewayProcess, alice: Baresip) -> list[str]:
    """What the gateway sent alice, in capture order: ``"200"`` for our 200 to her INVITE,
    ``"ClientHello"`` for each ClientHello to her media ports (RFC 6347 §4.2: type 1)."""
    low, high = alice.rtp_ports
    display = (
        f'(sip.Status-Code == 200 and sip.CSeq.method == "INVITE" and udp.dstport == '
        f"{alice.sip_port}) or (dtls.handshake.type == 1 and udp.dstport >= {low} and "
        f"udp.dstport <= {high})"
    )
    args = [require_peer("tshark"), "-n", "-r", str(pcap), "-d", f"udp.port=={gw.port},sip"]
    args += HEURISTICS_FIRST  # a ClientHello to a port tshark gives another protocol
    args += ["-Y", display, "-T", "fields", "-e", "sip.Status-Code", "-e", "dtls.handshake.type"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    return ["200" if line.split("\t")[0] else "ClientHello" for line in result.stdout.splitlines()]


@pytest.mark.parametrize(
    ("mediaenc", "policy", "start_reasons", "workers"),
    [
        (None, None, {"blocked"}, 0),
        ("dtls_srtp", "dtls", {"blocked", "srtp_refused"}, 0),
        ("dtls_srtp", "dtls", {"blocked", "srtp_refused"}, 2),
    ],
    ids=["plain", "dtls", "dtls-media-workers"],
)
def test_a_call_between_two_phones_drops_only_what_comes_before_answer_and_keys(
    tmp_path: Path, mediaenc: str | None, policy: str | None, start_reasons: set[str], workers: int
) -> None:
    plugins = ["udp", "tcp", "metrics"] + (["dtls"] if policy else [])
    media = {"media": {"workers": workers}} if workers else {}
    with (
        GatewayProcess(
            tmp_path / "gw",
            accounts=PASSWORDS,
            digest_algorithms=("MD5",),  # baresip 1.0.0 fails on SHA-256 challenges
            settings={"plugins": {"enable": plugins}, **media},
            extra_toml='[plugins.metrics]\nlisten = "127.0.0.1:0"\n',
        ) as gw,
        Baresip(
            tmp_path, "alice", source=tone_wav(tmp_path / "alice.wav", 1000.0), mediaenc=mediaenc
        ) as alice,
        Baresip(
            tmp_path, "bob", source=tone_wav(tmp_path / "bob.wav", 440.0), mediaenc=mediaenc
        ) as bob,
        contextlib.ExitStack() as stack,
    ):
        pcap = tmp_path / "caller.pcap"
        if workers:
            stack.enter_context(Capture(pcap, udp_filter(alice.sip_port, alice.rtp_ports)))
        metrics_port = int(gw.wait_for_log(READY)[1])
        for phone in (alice, bob):
            if policy:
                gw.cli("accounts", "set", phone.name, "--media-policy", policy)
            phone.register(gw.uri(phone.name), PASSWORDS[phone.name], mediaenc=mediaenc)
        alice.dial(gw.uri("bob"))
        call = alice.wait_established()
        bob.wait_established()
        alice.wait_audio(AUDIO_SECONDS, timeout=20)
        bob.wait_audio(AUDIO_SECONDS, timeout=20)
        # The call is up, its start is over: what it dropped so far (the scrape reads the
        # live call's relay counters), before the hang-up adds its own (a DTLS phone's
        # close_notify alerts and last RTCP in clear, after the call let its keys go).
        during = _by_reason(_scrape(metrics_port))
        alice.hangup()
        alice.wait_closed()
        bob.wait_closed()
        gw.wait_for_log(rf"call {re.escape(call['id'])} ended: BYE from A leg")
        found = _scrape(metrics_port)
        (record,) = json.loads(gw.cli("calls", "--recent", "1", "--json").stdout)
        stack.close()  # the capture has every packet sent so far
        sent_to_alice = _to_caller(pcap, gw, alice) if workers else []

    assert {reason for reason, count in during.items() if count} <= start_reasons, during
    media = record["security"]["media"]
    reasons = {
        direction: {
            reason: media.get(f"{direction}_dropped_{reason}", 0) for reason in DROP_REASONS
        }
        for direction in ("a_to_b", "b_to_a")
    }
    for direction in ("a_to_b", "b_to_a"):
        assert sum(reasons[direction].values()) == media[f"{direction}_dropped"], media
    for direction in ("a_to_b", "b_to_a"):
        # The hang-up's DTLS close_notify alerts are the key exchange's own end, no malformed
        # media (RFC 7983 §7), also once the call has let its handshakes go (docs/metrics.md).
        assert reasons[direction]["malformed"] == 0, media
    if mediaenc is None:
        # alice sends once she has our 200; bob's media before his answer came, nothing else.
        assert media["a_to_b_dropped"] == 0, media
        assert {reason for reason, count in reasons["b_to_a"].items() if count} <= {"blocked"}
    if workers:
        # Our 200 (her answer, our fingerprint) reaches alice before our first ClientHello:
        # none was ignored, no handshake waited a second for the resend, nor bob's media.
        assert sent_to_alice[:1] == ["200"] and "ClientHello" in sent_to_alice, sent_to_alice
        assert reasons["b_to_a"]["blocked"] < RESEND_PACKETS, media
    # The metrics say what the record says: the total as before, the reasons adding up to it.
    total = value(found, TOTAL, f"{TOTAL}_total")
    assert total == media["a_to_b_dropped"] + media["b_to_a_dropped"]
    assert _by_reason(found) == {
        reason: float(reasons["a_to_b"][reason] + reasons["b_to_a"][reason])
        for reason in DROP_REASONS
    }
