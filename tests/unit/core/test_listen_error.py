"""The one line a SIP listener that cannot open stops the gateway with (gateway.listen_error):
the operating system's reason, never a transport plugin's own text."""

from __future__ import annotations

import errno

from gateway.core.config import ListenSpec
from gateway.core.gateway import listen_error

SPEC = ListenSpec.parse("udp:127.0.0.1:5060")


def test_an_address_in_use_is_said_with_what_to_change() -> None:
    error = listen_error(SPEC, OSError(errno.EADDRINUSE, "Address already in use"))
    assert error.errno == errno.EADDRINUSE
    assert str(error) == (
        "[Errno 98] cannot listen on udp:127.0.0.1:5060: Address already in use (another "
        "program listens there: stop it, or give voipgw other ports with --listen or [sip] "
        "listen)"
    )


def test_a_third_party_transports_own_strerror_is_not_shown() -> None:
    # A transport is a plugin: its OSError may carry any text it had in hand (a key, a
    # password), which logs.transport_error_text never shows; the startup line neither.
    error = listen_error(SPEC, OSError(errno.EACCES, "bind failed, key=s3cr3t-psk"))
    assert "s3cr3t" not in str(error)
    assert str(error) == "[Errno 13] cannot listen on udp:127.0.0.1:5060: Permission denied"
