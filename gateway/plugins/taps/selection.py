"""Which calls a tap takes: every call, or those from or to named accounts and trunks (the
``all_calls``, ``accounts`` and ``trunks`` keys of the recorder's and the SIPREC client's
tables)."""

from __future__ import annotations

import attrs

from gateway.core.interfaces import TappedCall

NOTHING_SELECTED = (
    "all_calls, accounts, trunks: name the calls to take (all_calls = true, or accounts and "
    "trunks whose calls are taken)"
)


@attrs.frozen
class CallSelection:
    all_calls: bool = False
    accounts: tuple[str, ...] = ()
    trunks: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.all_calls or self.accounts or self.trunks)

    def wants(self, call: TappedCall) -> bool:
        if self.all_calls:
            return True
        for kind, name in (
            (call.caller_kind, call.caller_name),
            (call.callee_kind, call.callee_name),
        ):
            if kind == "account" and name in self.accounts:
                return True
            if kind == "trunk" and name in self.trunks:
                return True
        return False
