"""The dialog-info bodies of the sipp dialog event tests: moved here from
test_dialog_events_sipp.py so that no test module imports another."""

from __future__ import annotations

import xml.etree.ElementTree as ET

NS = "{urn:ietf:params:xml:ns:dialog-info}"


def body_of(message: str) -> ET.Element:
    _, _, body = message.partition("\n\n")
    return ET.fromstring(body.strip().encode())
