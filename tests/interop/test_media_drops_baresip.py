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

What was fixed must not come back: no ``malformed`` (bob's DTLS ClientHello on his RTCP port,
sent as he rings, had no handshake to go to before his answer and was dropped; SRTCP was then
dropped both ways for a second) and no ``unlatched_source`` (bob's RTCP, latched before his
answer from the address his answer implies, was refused as a previous peer's for 3 s). The call
record (``voipgw calls --json``) and the Prometheus exposition (read by Prometheus' own parser)
say the same.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.core.media.relay import DROP_REASONS
from tests.integration.prometheus_scrape import curl, parser, value
from tests.interop.harness import Baresip, GatewayProcess, tone_wav

pytestmark = pytest.mark.interop

PASSWORDS = {"alice": "wonderland-d3o9", "bob": "builder-d3o9"}
READY = r"metrics: Prometheus exposition on http://127\.0\.0\.1:(\d+)/metrics"
TOTAL = "voipgw_media_dropped_packets"
FAMILY = "voipgw_media_dropped_packets_by_reason"
AUDIO_SECONDS = 1.0


def _scrape(port: int) -> dict[str, object]:
    result = curl("--fail", f"http://127.0.0.1:{port}/metrics")
    assert result.returncode == 0, result.stderr
    return {f.name: f for f in parser().text_string_to_metric_families(result.stdout)}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("mediaenc", "policy", "caller_reasons", "callee_reasons"),
    [
        (None, None, set(), {"blocked"}),
        ("dtls_srtp", "dtls", {"blocked", "srtp_refused"}, {"blocked", "srtp_refused"}),
    ],
    ids=["plain", "dtls"],
)
def test_a_call_between_two_phones_drops_only_what_comes_before_answer_and_keys(
    tmp_path: Path,
    mediaenc: str | None,
    policy: str | None,
    caller_reasons: set[str],
    callee_reasons: set[str],
) -> None:
    plugins = ["udp", "tcp", "metrics"] + (["dtls"] if policy else [])
    with (
        GatewayProcess(
            tmp_path / "gw",
            accounts=PASSWORDS,
            digest_algorithms=("MD5",),  # baresip 1.0.0 fails on SHA-256 challenges
            settings={"plugins": {"enable": plugins}},
            extra_toml='[plugins.metrics]\nlisten = "127.0.0.1:0"\n',
        ) as gw,
        Baresip(
            tmp_path, "alice", source=tone_wav(tmp_path / "alice.wav", 1000.0), mediaenc=mediaenc
        ) as alice,
        Baresip(
            tmp_path, "bob", source=tone_wav(tmp_path / "bob.wav", 440.0), mediaenc=mediaenc
        ) as bob,
    ):
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
        alice.hangup()
        alice.wait_closed()
        bob.wait_closed()
        gw.wait_for_log(rf"call {re.escape(call['id'])} ended: BYE from A leg")
        found = _scrape(metrics_port)
        (record,) = json.loads(gw.cli("calls", "--recent", "1", "--json").stdout)

    media = record["security"]["media"]
    reasons = {
        direction: {
            reason: media.get(f"{direction}_dropped_{reason}", 0) for reason in DROP_REASONS
        }
        for direction in ("a_to_b", "b_to_a")
    }
    for direction, allowed in (("a_to_b", caller_reasons), ("b_to_a", callee_reasons)):
        counted = {reason for reason, count in reasons[direction].items() if count}
        assert counted <= allowed, (direction, media)
        assert sum(reasons[direction].values()) == media[f"{direction}_dropped"], media
    # The metrics say the same: the total as before, the reasons adding up to it.
    total = value(found, TOTAL, f"{TOTAL}_total")
    assert total == media["a_to_b_dropped"] + media["b_to_a_dropped"]
    by_reason = {
        reason: value(found, FAMILY, f"{FAMILY}_total", reason=reason) for reason in DROP_REASONS
    }
    assert by_reason == {
        reason: float(reasons["a_to_b"][reason] + reasons["b_to_a"][reason])
        for reason in DROP_REASONS
    }
