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


def test_bare_line_feeds_show_no_other_header() -> None:
    """A message whose lines end in LF (or CR) alone (RFC 3261 §7.5 asks for CRLF; some phones
    and scanners send LF, and the trace comes before the parser): still its first line only."""
    bare = INVITE.replace(b"\r\n", b"\n")
    assert _trace(bare) == (
        f"INVITE sip:bob:***@example.com SIP/2.0 (Call-ID a84b4c76e66710, CSeq 2 INVITE, "
        f"{len(bare)} bytes)"
    )
    for secret in ("hunter2", "n0nce", "d1gest", "S3CRETKEY", "z9hG4bKvia"):
        assert secret not in _trace(bare)
    # CR alone: no Call-ID or CSeq is found, and no header shown either.
    line = _trace(INVITE.replace(b"\r\n", b"\r"))
    assert line.startswith("INVITE sip:bob:***@example.com SIP/2.0 (Call-ID (none), CSeq (none), ")
    for secret in ("hunter2", "n0nce", "d1gest", "S3CRETKEY", "z9hG4bKvia"):
        assert secret not in line


def test_a_password_is_withheld_before_the_line_is_cut() -> None:
    # The line is cut at 200 characters: here within the password, before its "@".
    user = "u" * 150
    long_uri = f"INVITE sip:{user}:{'hunter2' * 9}@example.com SIP/2.0\r\n"
    line = _trace(long_uri.encode() + INVITE.split(b"\r\n", 1)[1])
    assert "hunter" not in line
    assert line.startswith(f"INVITE sip:{user}:***@")


def test_leading_line_breaks_are_skipped() -> None:
    # RFC 3261 §7.5: CRLFs before the start line are ignored (a keepalive's, RFC 5626 §3.5.1).
    assert _trace(b"\r\n" + INVITE).startswith("INVITE sip:bob:***@example.com SIP/2.0 (")
