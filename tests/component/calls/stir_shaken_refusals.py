"""The verifier that refuses everything, of the in-memory STIR/SHAKEN required tests: moved here
from test_b2bua_stir_shaken_required.py so that no test module imports another."""

from __future__ import annotations

from typing import Any

from gateway.core.hookspecs import hookimpl
from gateway.core.interfaces import IdentityOutcome


class RefuseEverything:
    """A caller-identity plugin of someone else's that refuses every trunk call, emergency or
    not: the core must drop its refusal of an emergency call."""

    name = "refuse-everything"

    def sign(self, call: Any) -> None:
        return None

    def check(self, call: Any, request: Any) -> Any:
        seen.append(call.emergency)

        class Check:
            async def run(self) -> IdentityOutcome:
                return IdentityOutcome("failed", "refused by policy", reject=(403, "Forbidden"))

        return Check()

    @hookimpl
    def gateway_register_caller_identity(self, registry: Any, config: Any) -> None:
        registry.add(self.name, self)


seen: list[bool] = []
