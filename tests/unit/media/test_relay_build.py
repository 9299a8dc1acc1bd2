"""Which build of the relay's per-packet modules the tests exercise (setup.py, VOIPGW_USE_MYPYC)."""

from __future__ import annotations

import os

from gateway.core.gateway import relay_build
from gateway.core.media import relay, srtp


def test_the_suite_checks_the_source_unless_it_was_asked_to_check_the_compiled_build() -> None:
    if os.environ.get("VOIPGW_USE_MYPYC") == "1":
        # tests/integration/test_compiled_relay.py runs the suite in a compiled copy.
        assert relay.COMPILED and srtp.COMPILED
        assert relay_build() == "compiled with mypyc"
    else:
        # Compiled modules left beside their sources (an in-place or editable build with
        # VOIPGW_USE_MYPYC=1) would be imported instead of the .py files: every other test
        # would check them, and edits to relay.py or srtp.py would not be seen.
        assert not relay.COMPILED and not srtp.COMPILED, (relay.__file__, srtp.__file__)
        assert relay_build().startswith("pure Python (an install with VOIPGW_USE_MYPYC=1")
