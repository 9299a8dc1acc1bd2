"""A call's RTCP reports to the capture agents (HEP protocol type 5, for Homer).

The call's :class:`~gateway.core.media.quality.CallQuality` hands each RTCP datagram a leg sent
(plain, after SRTCP) to :class:`RtcpToCaptures`, set as its listener only when a capture agent
takes RTCP (``[plugins.hep] rtcp``): other calls pay nothing. The report goes as the JSON object
Homer reads (:func:`~gateway.core.media.rtcp.report_json`), correlated with that leg's Call-ID
(a B2BUA's legs have their own), from the leg's RTCP address in its SDP to our RTCP port.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from gateway.core.interfaces import RtcpCapture
from gateway.core.media.rtcp import RtcpPacket, report_json

if TYPE_CHECKING:
    from gateway.core.calls.call import Call


class RtcpToCaptures:
    """:data:`gateway.core.media.quality.RtcpListener` of one call."""

    def __init__(self, call: Call, captures: tuple[RtcpCapture, ...]) -> None:
        self._call = call
        self._captures = captures

    def __call__(self, side: str, index: int, packet: bytes, packets: list[RtcpPacket]) -> None:
        call = self._call
        report = report_json(packets)
        leg = call.a if side == "a" else call.b
        if report is None or leg is None or call.media is None:
            return
        call_id = leg.dialog.call_id if leg.dialog is not None else None
        if call_id is None and leg.invite is not None:
            call_id = leg.invite.call_id
        addresses = call.media.rtcp_addresses(index, "a" if side == "a" else "b")
        if call_id is None or addresses is None:
            return
        payload = json.dumps(report).encode()
        at = time.time()
        for capture in self._captures:
            capture.rtcp_report(
                payload,
                source=addresses[0],
                destination=addresses[1],
                at=at,
                correlation=call_id.encode(),
            )
