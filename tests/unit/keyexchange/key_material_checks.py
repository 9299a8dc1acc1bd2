"""The check that an error shows no key material, of the key material tests: moved here from
test_key_material_in_errors.py so that no test module imports another."""

from __future__ import annotations

import base64
from collections.abc import Iterator

WINDOW = 6  # octets: no run this long of a secret may show, in any encoding


def shown_forms(secret: bytes) -> Iterator[str]:
    """Every WINDOW-octet run of ``secret`` as hex, as escaped bytes (for runs a repr would
    escape), and the runs of its base64 at least that long."""
    for start in range(len(secret) - WINDOW + 1):
        run = secret[start : start + WINDOW]
        yield run.hex()
        if any(not 0x20 <= octet < 0x7F for octet in run):
            yield repr(run)[2:-1]
    encoded = base64.b64encode(secret).decode("ascii").rstrip("=")
    size = (WINDOW * 4 + 2) // 3
    for start in range(len(encoded) - size + 1):
        yield encoded[start : start + size]


def assert_hidden(texts: list[str], secrets: list[bytes]) -> None:
    forms = {form for secret in secrets for form in shown_forms(secret)}
    for text in set(texts):  # most mutations fail alike
        lowered = text.lower()
        found = [form for form in forms if form in text or form.lower() in lowered]
        assert not found, f"key material {found[:3]} in: {text[-300:]}"
