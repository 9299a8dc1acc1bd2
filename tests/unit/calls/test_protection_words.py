"""The words of a leg's protection (``voipgw calls`` and the line logged as an answered call
ends, gateway/core/calls/protection.py) for a stream whose keys come on the media path."""

from __future__ import annotations

from gateway.core.calls.protection import describe_leg


def leg(stream: dict[str, object]) -> dict[str, object]:
    """A leg's security record as LegSecurity.record makes it (media/security.py)."""
    return {
        "policy": "require",
        "signalling": "udp",
        "signalling_secure": False,
        "streams": [stream],
    }


def test_a_stream_whose_handshake_never_keyed_it_is_not_called_unencrypted() -> None:
    # A DTLS-SRTP (or ZRTP) stream whose handshake failed or never finished: no keys, so the
    # relay kept it blocked both ways (keying.py StreamKeys.of_legs): not one packet in clear.
    for exchange in ("dtls", "zrtp"):
        record = {"key_exchange": exchange, "suite": None, "encrypted": False, "keys_held_by": None}
        line = describe_leg(leg(record))
        assert "not encrypted" not in line
        assert line == (
            f"signalling UDP; media SRTP by {exchange} not keyed (its handshake unfinished or "
            "failed): its media dropped, none unencrypted"
        )


def test_a_stream_without_a_key_exchange_is_plain_rtp() -> None:
    record = {"key_exchange": "none", "suite": None, "encrypted": False, "keys_held_by": None}
    assert describe_leg(leg(record)) == "signalling UDP; media RTP, not encrypted"
