"""voipgw: a secure SIP media gateway. The import package is ``gateway``."""

from __future__ import annotations

__version__ = "0.1.0"
