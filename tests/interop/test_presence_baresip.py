"""Presence with real phones (RFC 3856, PUBLISH RFC 3903): two baresips with the ``presence``
module, registered as alice and bob. bob's contacts list alice (``;presence=p2p``), so it
subscribes to her presence at the gateway; alice's account publishes (``pubint``): ``unknown``
at start, ``open`` once registered, ``closed`` when told ``presence_offline``. bob's baresip
shows each change. Without ``pubint`` baresip's presence module publishes nothing (its
publisher returns early when the account's pubint is 0, modules/presence/publisher.c), as most
desk phones: bob then sees alice online because she registered (``[presence]
from_registration``, on by default) and offline once she unregisters. baresip 1.0.0 answers
only MD5 digest challenges, so the gateway offers MD5 alone.
"""

from __future__ import annotations

import re
import time
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


def last_notify_closed(bob: Baresip, timeout: float) -> list[str]:
    """bob's presence NOTIFYs once one said ``open`` and the last says ``closed`` (polled; an
    AssertionError naming what they said after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        notifies = [entry.message for entry in bob.sip_messages("NOTIFY ")]
        shown = [basic_of(notify) for notify in notifies]
        if "open" in shown and shown[-1] == "closed":
            return notifies
        assert time.monotonic() < deadline, shown
        time.sleep(0.05)


def presence_gateway(tmp_path: Path) -> GatewayProcess:
    """A gateway where alice and bob (MD5 digest: baresip's) may watch each other."""
    return GatewayProcess(
        tmp_path,
        accounts={"alice": "wonderland", "bob": "builder"},
        extra_toml='[presence]\nallow = "all-accounts"\n',
        digest_algorithms=("MD5",),
    )


def watching_bob(tmp_path: Path, gw: GatewayProcess) -> Baresip:
    """bob's baresip with alice in its contacts: once started it subscribes to her presence."""
    return Baresip(
        tmp_path,
        "bob",
        extra_config=PRESENCE_MODULES,
        account=f"<{gw.uri('bob')}>;auth_pass=builder;regint=600",
        contacts=f'"Alice" <{gw.uri("alice")}>;presence=p2p\n',
        sip_trace=True,
    )


def test_bob_sees_alice_go_online_and_offline(tmp_path: Path) -> None:
    with presence_gateway(tmp_path) as gw, watching_bob(tmp_path, gw) as bob:
        alice_aor = gw.uri("alice")
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
            alice.presence_offline()
            # Before alice quits: her removal (Expires: 0) may bring back a second
            # publication of hers, open, that baresip made racing its own registration. And
            # bob's display turns Offline on the first NOTIFY that is not open: on a loaded
            # machine that was once her start-up publication ("unknown", sent again after her
            # "open"), with the "closed" one still to come: wait for the last to say closed.
            notifies = last_notify_closed(bob, timeout=10)
        assert all("Event: presence" in notify for notify in notifies), notifies
        assert all("Content-Type: application/pidf+xml" in notify for notify in notifies)
        shown = [basic_of(notify) for notify in notifies]
        assert shown[0] == "closed" and "open" in shown and shown[-1] == "closed", shown
        # alice's own document reached bob as published (baresip's tuple and contact); an
        # open one of the gateway's may come first, from her registration.
        opened = [n for n in notifies if basic_of(n) == "open"]
        assert any(f"<contact>{alice_aor}</contact>" in n for n in opened), opened


def test_bob_sees_alice_online_from_her_registration_alone(tmp_path: Path) -> None:
    with presence_gateway(tmp_path) as gw, watching_bob(tmp_path, gw) as bob:
        alice_aor = gw.uri("alice")
        gw.wait_for_log(r"bob watches the presence of alice for \d+ s")
        first = bob.wait_for(r"(?s)NOTIFY sip:.*?</presence>", timeout=10)
        assert basic_of(first.group(0)) == "closed"  # alice not registered yet
        # alice's presence module is loaded, but her account has no pubint: no PUBLISH.
        alice = Baresip(
            tmp_path,
            "alice",
            extra_config=PRESENCE_MODULES,
            account=f"<{alice_aor}>;auth_pass=wonderland;regint=600",
            sip_trace=True,
        )
        with alice:
            gw.wait_for_log(r"registered: 1 binding\(s\) for sip:alice@")
            bob.wait_for(CHANGED.format("Offline", "Online"), timeout=15)
        # baresip unregisters as it quits (Expires: 0): her last binding is gone.
        gw.wait_for_log(r"unregistered: 0 binding\(s\) for sip:alice@")
        bob.wait_for(CHANGED.format("Online", "Offline"), timeout=10)
        notifies = [entry.message for entry in bob.sip_messages("NOTIFY ")]
        assert alice.sip_messages("PUBLISH ") == []
        assert "PUBLISH" not in gw.log_text()
        shown = [basic_of(notify) for notify in notifies]
        assert shown == ["closed", "open", "closed"], shown
        # The gateway's own document (one tuple "gw"), not one a phone published.
        assert all('<tuple id="gw">' in notify for notify in notifies), notifies
