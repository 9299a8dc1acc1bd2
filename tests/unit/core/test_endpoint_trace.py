"""The DEBUG line of each SIP message received and sent (endpoint._trace, ``log_level =
"debug"``): first line, Call-ID, CSeq and size only; never another header, the body or a
password in the Request-URI; one line whatever the network's bytes hold."""

from __future__ import annotations

from gateway.core.endpoint import _trace

INVITE = (
    b"INVITE sip:bob:hunter2@example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKvia\r\n"
    b"i: a84b4c76e66710\r\n"
    b"CSeq: 2 INVITE\r\n"
    b'Proxy-Authorization: Digest username="alice", nonce="n0nce", response="d1gest"\r\n'
    b"Content-Length: 40\r\n\r\n"
    b"v=0\r\na=crypto:1 AES_CM inline:S3CRETKEY\r\n"
)


def test_a_message_is_its_first_line_call_id_cseq_and_size() -> None:
    assert _trace(INVITE) == (
        f"INVITE sip:bob:***@example.com SIP/2.0 (Call-ID a84b4c76e66710, CSeq 2 INVITE, "
        f"{len(INVITE)} bytes)"
    )
    for secret in ("hunter2", "n0nce", "d1gest", "S3CRETKEY", "z9hG4bKvia"):
        assert secret not in _trace(INVITE)


def test_garbage_is_one_bounded_printable_line() -> None:
    garbage = b"\x16\x03\x01" + b"A" * 5000 + b"\r\nCall-ID: x\x1b[31m\r\n"
    line = _trace(garbage)
    assert line.isprintable() and len(line) < 400
    assert line.endswith(f"(Call-ID x?[31m, CSeq (none), {len(garbage)} bytes)")
    assert _trace(b"") == " (Call-ID (none), CSeq (none), 0 bytes)"
