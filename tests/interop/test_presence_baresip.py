"""Presence with real phones (RFC 3856, PUBLISH RFC 3903): two baresips with the ``presence``
module, registered as alice and bob. bob's contacts list alice (``;presence=p2p``), so it
subscribes to her presence at the gateway; alice's account publishes (``pubint``): ``unknown``
at start, ``open`` once registered, ``closed`` when told ``presence_offline``. bob's baresip
shows each change. baresip 1.0.0 answers only MD5 digest challenges, so the gateway offers MD5
alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.interop.harness import GatewayProcess
from tests.interop.harness.baresip import Baresip

pytestmark = pytest.mark.interop

PRESENCE_MODULES = "module_app\t\tcontact.so\nmodule_app\t\tpresence.so\n"
# contact_presence_str() colours the status: ESC[32mOnline ESC[;m.
CHANGED = r"<sip:alice@127\.0\.0\.1:\d+> changed status from \S*{}\S* to \S*{}"


def basic_of(message: str) -> str:
    found = re.search(r"<basic>(\w+)</basic>", message)
    assert found is not None, message
    return found.group(1)


def test_bob_sees_alice_go_online_and_offline(tmp_path: Path) -> None:
    with GatewayProcess(
        tmp_path,
        accounts={"alice": "wonderland", "bob": "builder"},
        extra_toml='[presence]\nallow = "all-accounts"\n',
        digest_algorithms=("MD5",),
    ) as gw:
        alice_aor, bob_aor = gw.uri("alice"), gw.uri("bob")
        with Baresip(
            tmp_path,
            "bob",
            extra_config=PRESENCE_MODULES,
            account=f"<{bob_aor}>;auth_pass=builder;regint=600",
            contacts=f'"Alice" <{alice_aor}>;presence=p2p\n',
            sip_trace=True,
        ) as bob:
            gw.wait_for_log(r"bob watches the presence of alice for \d+ s")
            # Nothing published yet: the gateway's neutral document.
            first = bob.wait_for(r"(?s)NOTIFY sip:.*?</presence>", timeout=10)
            assert basic_of(first.group(0)) == "closed"
            with Baresip(
                tmp_path,
                "alice",
                extra_config=PRESENCE_MODULES,
                account=f"<{alice_aor}>;auth_pass=wonderland;regint=600;pubint=600",
            ) as alice:
                bob.wait_for(CHANGED.format("Offline", "Online"), timeout=15)
                alice.command("presence_offline")
                bob.wait_for(CHANGED.format("Online", "Offline"), timeout=10)
                # Before alice quits: her removal (Expires: 0) may bring back a second
                # publication of hers, open, that baresip made racing its own registration.
                notifies = [entry.message for entry in bob.sip_messages("NOTIFY ")]
        assert all("Event: presence" in notify for notify in notifies), notifies
        assert all("Content-Type: application/pidf+xml" in notify for notify in notifies)
        shown = [basic_of(notify) for notify in notifies]
        assert shown[0] == "closed" and "open" in shown and shown[-1] == "closed", shown
        # alice's own document reached bob as published (baresip's tuple and contact).
        opened = next(n for n in notifies if basic_of(n) == "open")
        assert f"<contact>{alice_aor}</contact>" in opened, opened
