"""The SDP in a SIP body: application/sdp, or the SDP part of multipart/mixed as SIP-I / SIP-T
gateways send it (RFC 5621, RFC 2046 §5.1, RFC 3204), and every way such a body can be wrong."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.sdp.body import MAX_PARTS, UnsupportedBody, sdp_of
from gateway.core.sdp.errors import SdpError
from gateway.core.sdp.parser import parse_sdp_untrusted

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
)
# An ISUP IAM as SIP-I carries it (ITU-T Q.1912.5): binary, with CR and LF octets of its own.
IAM = bytes([0x01, 0x10, 0x48, 0x00, 0x0A, 0x03, 0x0D, 0x0A, 0x02, 0x0A, 0x08, 0x83, 0x90])
BOUNDARY = "unique-boundary-1"
MIXED = f"multipart/mixed;boundary={BOUNDARY}"


def multipart(*parts: tuple[str, bytes], boundary: str = BOUNDARY, close: bool = True) -> bytes:
    """``parts`` as (header lines, content), each delimiter line after a CRLF of its own."""
    body = b"a preamble nobody reads\r\n"
    for headers, content in parts:
        body += f"--{boundary}\r\n{headers}\r\n".encode() + content + b"\r\n"
    if close:
        body += f"--{boundary}--\r\n".encode() + b"an epilogue\r\n"
    return body


SDP_PART = ("Content-Type: application/sdp\r\n", SDP)
ISUP_OPTIONAL = (
    "Content-Type: application/ISUP;version=itu-t92+\r\n"
    "Content-Disposition: signal;handling=optional\r\n",
    IAM,
)


def test_an_sdp_body_is_itself() -> None:
    assert sdp_of("application/sdp", SDP) == SDP
    assert sdp_of("Application/SDP ; charset=utf-8", SDP) == SDP


def test_no_body_is_no_sdp() -> None:
    assert sdp_of(None, b"") == b""
    assert sdp_of("application/sdp", b"") == b""


def test_the_sdp_part_of_a_sip_i_body_without_the_isup_part() -> None:
    body = multipart(SDP_PART, ISUP_OPTIONAL)
    assert sdp_of(MIXED, body) == SDP
    assert parse_sdp_untrusted(sdp_of(MIXED, body)).media[0].port == 40000
    # Either order, a quoted boundary, parameter names in any case.
    assert sdp_of(f'multipart/mixed; BOUNDARY="{BOUNDARY}"', multipart(ISUP_OPTIONAL, SDP_PART))
    assert sdp_of(MIXED, multipart(ISUP_OPTIONAL, SDP_PART)) == SDP


def test_a_multipart_body_with_only_optional_parts_carries_no_sdp() -> None:
    # A SIP-I INVITE without SDP: a late offer, as an empty body would be.
    assert sdp_of(MIXED, multipart(ISUP_OPTIONAL)) == b""


@pytest.mark.parametrize(
    "disposition",
    [
        "Content-Disposition: signal;handling=required\r\n",
        "Content-Disposition: signal\r\n",  # RFC 3261 §20.11: handling defaults to required
        "",
    ],
    ids=["required", "no-handling", "no-disposition"],
)
def test_a_required_part_that_is_not_sdp_is_unsupported(disposition: str) -> None:
    isup = (f"Content-Type: application/ISUP;version=itu-t92+\r\n{disposition}", IAM)
    with pytest.raises(UnsupportedBody, match="application/isup is required"):
        sdp_of(MIXED, multipart(SDP_PART, isup))


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/isup", "multipart/alternative", None]
)
def test_other_body_types_are_unsupported(content_type: str | None) -> None:
    with pytest.raises(UnsupportedBody, match="unsupported body type"):
        sdp_of(content_type, SDP)


@pytest.mark.parametrize(
    ("content_type", "body", "says"),
    [
        ("multipart/mixed", multipart(SDP_PART), "without a valid boundary"),
        ('multipart/mixed;boundary=""', multipart(SDP_PART), "without a valid boundary"),
        ("multipart/mixed;boundary=" + "b" * 71, multipart(SDP_PART), "without a valid boundary"),
        ("multipart/mixed;boundary=other", multipart(SDP_PART), "without its boundary delimiter"),
        (MIXED, multipart(SDP_PART, close=False), "without its close delimiter"),
        (MIXED, multipart(SDP_PART, SDP_PART), "more than one application/sdp part"),
        (MIXED, multipart(*[ISUP_OPTIONAL] * (MAX_PARTS + 1)), f"more than {MAX_PARTS} parts"),
        (MIXED, b"--unique-boundary-1 trailing\r\n\r\nx\r\n--unique-boundary-1--", "other text"),
        (MIXED, b"--unique-boundary-1\r\nContent-Type: application/sdp", "blank line"),
        (MIXED, multipart(("no colon here\r\n", SDP)), "malformed header line"),
        (
            MIXED,
            multipart(("".join(f"X-{i}: {i}\r\n" for i in range(17)), SDP)),
            "more than 16 header lines",
        ),
    ],
    ids=[
        "no-boundary",
        "empty-boundary",
        "long-boundary",
        "other-boundary",
        "not-closed",
        "two-sdp-parts",
        "too-many-parts",
        "text-after-delimiter",
        "headers-never-end",
        "bad-header",
        "too-many-headers",
    ],
)
def test_malformed_multipart_bodies_are_refused_with_a_reason(
    content_type: str, body: bytes, says: str
) -> None:
    with pytest.raises(SdpError, match=says) as raised:
        sdp_of(content_type, body)
    assert not isinstance(raised.value, UnsupportedBody)  # malformed: 488/400, not 415


def test_part_headers_fold_and_a_part_without_headers_is_text_plain() -> None:
    folded = ("Content-Type:\r\n application/sdp\r\n", SDP)
    assert sdp_of(MIXED, multipart(folded)) == SDP
    bare = ("", b"hello")  # no headers: text/plain (RFC 2046 §5.1), required by default
    with pytest.raises(UnsupportedBody, match="text/plain"):
        sdp_of(MIXED, multipart(SDP_PART, bare))


FRAGMENTS = [
    b"--" + BOUNDARY.encode(),
    b"--",
    b"\r\n",
    b"\n",
    b"\r\n\r\n",
    b"Content-Type: application/sdp",
    b"Content-Type: application/ISUP",
    b"Content-Disposition: signal;handling=optional",
    b"Content-Disposition: ;handling",
    b" ",
    b":",
    SDP,
    IAM,
    b"\xff\xfe",
]


@settings(max_examples=400, deadline=None)
@given(
    content_type=st.one_of(
        st.sampled_from([MIXED, "application/sdp", f'multipart/mixed;boundary="{BOUNDARY}"']),
        st.none(),
        st.text(max_size=40),
    ),
    pieces=st.lists(st.sampled_from(FRAGMENTS), max_size=30),
    noise=st.binary(max_size=40),
)
def test_whatever_arrives_gives_bytes_or_an_sdp_error(
    content_type: str | None, pieces: list[bytes], noise: bytes
) -> None:
    # What the network sends decides only between an SDP (possibly empty) and a stated refusal.
    body = b"".join(pieces) + noise
    try:
        sdp = sdp_of(content_type, body)
    except SdpError as err:
        assert err.reason
    else:
        assert isinstance(sdp, bytes) and len(sdp) <= len(body)
