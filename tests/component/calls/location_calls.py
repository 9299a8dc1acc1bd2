"""The PIDF-LO bodies and located calls of the in-memory location tests: moved here from
test_b2bua_location.py so that no test module imports another."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from gateway.core.sip.message import Response
from tests.component.calls.b2bua_env import B2bua, start_b2bua

BOUNDARY = "phone-boundary-42"
MIXED = f"multipart/mixed;boundary={BOUNDARY}"
PIDF = (
    b'<?xml version="1.0" encoding="UTF-8"?>\r\n'
    b'<presence xmlns="urn:ietf:params:xml:ns:pidf" entity="pres:alice@example.com">\r\n'
    b'<tuple id="t1"><status><geopriv xmlns="urn:ietf:params:xml:ns:pidf:geopriv10">'
    b'<location-info><civicAddress xmlns="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr">'
    b"<country>US</country><A1>NY</A1><RD>Main</RD><HNO>123</HNO><FLR>4</FLR>"
    b"</civicAddress></location-info></geopriv></status></tuple>\r\n</presence>\r\n"
)
LOCATION_PART = (
    b"Content-Type: application/pidf+xml\r\n"
    b"Content-ID: <target123@alice.example.com>\r\n"
    b"Content-Disposition: render;handling=optional\r\n\r\n" + PIDF
)
BY_VALUE = [("Geolocation", "<cid:target123@alice.example.com>"), ("Geolocation-Routing", "yes")]


def located_body(sdp: bytes, part: bytes = LOCATION_PART) -> bytes:
    return (
        f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\n\r\n".encode()
        + sdp
        + f"\r\n--{BOUNDARY}\r\n".encode()
        + part
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


async def started(nursery: trio.Nursery, tmp_path: Path, seed: int, **carrier: Any) -> B2bua:
    return await start_b2bua(
        nursery, tmp_path, seed, carrier={"prefixes": ["+1", "112"], **carrier}
    )


MOVED = LOCATION_PART.replace(b"<HNO>123</HNO>", b"<HNO>125</HNO>").replace(
    b"handling=optional", b"handling=required"
)


async def located_call(env: B2bua, dialled: str) -> Any:
    """alice's call to ``dialled`` with her location by value, answered."""
    call = await env.alice.invite(
        f"sip:{dialled}@127.0.0.1:5060",
        sdp=located_body(env.alice.offer_sdp()),
        content_type=MIXED,
        extra=BY_VALUE,
    )
    assert (await call.final()).status == 407
    await call.authenticate()
    assert (await call.final()).status == 200
    return call


MOVED_ONLY = (
    f"--{BOUNDARY}\r\n".encode() + MOVED + f"\r\n--{BOUNDARY}--\r\n".encode()
)  # an UPDATE's body without an offer: the location part alone


async def update(call: Any, body: bytes, extra: Sequence[tuple[str, str]]) -> Response:
    exchange = await call.request(
        "UPDATE", body=body, content_type=MIXED if body else None, extra=extra
    )
    return await exchange.final()
