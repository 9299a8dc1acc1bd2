"""Build hook: with ``VOIPGW_USE_MYPYC=1``, compile the media relay's per-packet modules with mypyc.

Everything else about the package is in pyproject.toml. Without the variable the package is pure
Python: what an editable install and the test suite use. With it, the modules below are compiled
from the same source into C extension modules, which Python imports instead of the ``.py`` files:

    sudo apt-get install -y gcc python3-dev     # a C compiler and Python's headers
    .venv/bin/pip install . mypy 'setuptools>=77'  # mypyc, and what it type-checks against
    VOIPGW_USE_MYPYC=1 .venv/bin/pip install --no-build-isolation --force-reinstall --no-deps .

mypyc type-checks the modules it compiles, and everything they import, so the build needs the
runtime dependencies (attrs, trio, pylibsrtp, ...) beside mypy: hence no build isolation, in an
environment that has them. A pure-Python build needs neither.

That is how the relay reaches issue 7's per-core ratios against rtpengine (docs/benchmarks.md,
"The compiled relay"); ``voipgw run`` logs which build it runs. Do not combine it with an editable
install (``-e``): the compiled modules would shadow later edits of their ``.py`` files.
"""

import os

from setuptools import setup

COMPILED_MODULES = [
    "gateway/core/media/relay.py",  # the per-packet loop
    "gateway/core/media/srtp.py",  # the libsrtp steps it calls for every SRTP packet
]

if os.environ.get("VOIPGW_USE_MYPYC") == "1":
    try:
        from mypyc.build import mypycify
    except ImportError:
        raise SystemExit(
            "VOIPGW_USE_MYPYC=1 needs mypy in the build environment: pip install . mypy "
            "'setuptools>=77', then pip install --no-build-isolation ."
        ) from None

    setup(ext_modules=mypycify(COMPILED_MODULES, opt_level="3"))
else:
    setup()
