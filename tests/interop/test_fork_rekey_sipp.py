"""A forked SDES callee re-keyed, with real peers on loopback (docs/media_security.md "Forked
SDES callees"): baresip (``srtp-mand``, over TLS) calls a TLS trunk, a sipp UAS behind stunnel
that stands for a forking proxy and two phones: phone 1's 183 with SDP keys the relay, phone
2's 200 (another To tag, RFC 3261 §12.1.2) answers. The gateway must re-INVITE phone 2's
dialog once it is confirmed, offering new keys of its own on every a=crypto line (RFC 4568
§7.1.4), and go on with the call: sipp's trace shows both INVITEs and their keys.

Debian's sipp has neither TLS nor SRTP (/work/shared/peers.md): it speaks TCP behind stunnel
and sends no media, so this checks the signalling and the keys offered; the SRTP contexts the
relay then uses (which key, which roll-over counter) are checked in virtual time by
tests/component/calls/test_b2bua_fork_rekey.py.
"""

from __future__ import annotations

import base64
import re
import time
from pathlib import Path

import pytest

from tests.interop.sdes_tls_trunk import alice_calls_the_tls_trunk

pytestmark = pytest.mark.interop

SUITE = "AES_CM_128_HMAC_SHA1_80"


def offered_key(invite: str) -> bytes:
    """The key and salt of the INVITE's a=crypto line of :data:`SUITE`."""
    found = re.search(rf"^a=crypto:\d+ {SUITE} inline:([A-Za-z0-9+/=]+)", invite, re.MULTILINE)
    assert found is not None, invite
    return base64.b64decode(found.group(1))


def to_tag(message: str) -> str:
    found = re.search(r"^To:.*;tag=([^;\s]+)", message, re.MULTILINE | re.IGNORECASE)
    assert found is not None, message
    return found.group(1)


@pytest.mark.parametrize(
    "scenario",
    [
        "calls/uas_fork_sdes_rekey.xml",
        "calls/uas_fork_sdes_rekey_narrowed.xml",
        "calls/uas_fork_sdes_rekey_widened.xml",
    ],
)
def test_a_forked_sdes_callee_answering_after_another_phones_183_is_re_invited_with_new_keys(
    tmp_path: Path, scenario: str
) -> None:
    """``..._narrowed.xml``: phone 2's 200 takes PCMU, PCMA and telephone-event, its answer to
    the re-key only PCMU (the codec in use): taken, the call goes on re-keyed (session 42
    ended it with cause 488). ``..._widened.xml``: phone 2's 200 takes PCMU only, its answer
    to the re-key PCMU, PCMA and telephone-event, which baresip offered: taken (sessions 42-44
    ended it with cause 488, "8 PCMA/8000, 101 telephone-event/8000 added")."""
    with alice_calls_the_tls_trunk(
        tmp_path, scenario, media_policy="sdes", log_level="debug", sip_trace=True
    ) as (gw, alice, trunk):
        deadline = time.monotonic() + 15
        while "the B leg re-keyed" not in gw.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        alice.hangup()
        alice.wait_closed()
        result = trunk.wait(timeout=15)
        log = gw.log_text()
    result.check()  # the re-INVITE came, its 200 was ACKed, then the caller's BYE
    first, again = result.received("INVITE ")
    acks = result.received("ACK ")
    answered = result.sent("SIP/2.0 200 OK")[0]  # phone 2's, to the INVITE
    # The re-INVITE is in the answering phone's dialog (its To tag, its Contact) ...
    assert to_tag(again) == to_tag(answered) and "Fork2" in to_tag(again)
    assert re.match(r"INVITE sip:fork2@", again)
    assert len(acks) == 2
    # ... and offers a new key of ours: the first phone's early media had our first one.
    assert offered_key(again) != offered_key(first)
    assert "another forked phone than the early media keyed by our SDP keys" in log
    assert "the B leg re-keyed: our SRTP key is its phone's alone" in log
    narrowed = (
        "the answer to our re-key re-offer on leg b leaves out 8 PCMA/8000, 101 "
        "telephone-event/8000 and keeps the codec in use: taken"
    )
    assert (narrowed in log) == scenario.endswith("_narrowed.xml")
    widened = (
        "the answer to our re-key re-offer on leg b adds 8 PCMA/8000, 101 "
        "telephone-event/8000, which leg a takes too: taken"
    )
    assert (widened in log) == scenario.endswith("_widened.xml")
    assert "changes the stream's codecs" not in log
