"""Suite-wide settings.

Interop tests drive real third-party peers (sipp, baresip, linphonec, tshark ...). Locally a
missing peer skips those tests with the apt package to install; with VOIPGW_REQUIRE_PEERS=1 (set
by .ci/run) a missing peer is a failure, never a skip.
"""

from __future__ import annotations

import os
import shutil

import pytest

pytest_plugins = ["gateway.testing.fixtures"]

# Debian package that provides each peer binary (../shared/peers.md).
PEER_PACKAGES = {
    "sipp": "sip-tester",
    "baresip": "baresip",
    "linphonec": "linphone-nogtk",
    "tshark": "tshark",
    "sox": "sox",
    "socat": "socat",
    "stunnel4": "stunnel4",
    "openssl": "openssl",
    "sngrep": "sngrep",
    "curl": "curl",
}


def require_peer(binary: str) -> str:
    """Path of ``binary``; skip (locally) or fail (CI) when it is not installed."""
    path = shutil.which(binary)
    if path is not None:
        return path
    package = PEER_PACKAGES.get(binary, binary)
    message = f"peer {binary!r} is not installed (apt-get install {package})"
    if os.environ.get("VOIPGW_REQUIRE_PEERS") == "1":
        pytest.fail(message + "; VOIPGW_REQUIRE_PEERS=1 requires every peer")
    pytest.skip(message)
