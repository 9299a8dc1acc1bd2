"""The phones' two-stream SDP and the callee that takes a second stream, shared by the in-memory
SIPREC tests of streams a call adds or removes (plain and SRTP towards the SRS): here so that no
test module imports another."""

from __future__ import annotations

from gateway.core.sdp.parser import parse_sdp_untrusted
from gateway.testing.sip_agent import Received
from tests.component.calls.b2bua_env import B2bua


def audio_video(port: int, video_port: int, *, version: int, second: str = "video") -> bytes:
    """A phone's SDP with an audio and a video stream (video at port 0: removed), or with
    ``second="audio"`` two audio streams."""
    line = (
        f"m=video {video_port} RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        if second == "video"
        else f"m=audio {video_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
    )
    return (
        f"v=0\r\no=- 1 {version} IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
        f"{line}a=sendrecv\r\n"
    ).encode()


async def callee_takes_two_streams(env: B2bua, port: int, second: str = "video") -> None:
    """alice's phone (its media at ``port``) answers a re-INVITE of two streams with both (the
    agent's own answers have one m= line)."""

    async def answer(received: Received) -> bool:
        if received.request.method != "INVITE" or not received.request.body:
            return False
        video = parse_sdp_untrusted(received.request.body).media[1].port
        body = audio_video(port, port + 2 if video else 0, version=5, second=second)
        await env.alice.respond(received, 200, body=body)
        return True

    env.alice.in_dialog = answer
