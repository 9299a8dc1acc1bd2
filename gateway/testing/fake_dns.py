"""A DNS for tests of trunks named by DNS (RFC 3263): :class:`FakeResolver` answers NAPTR, SRV
and address queries from its tables, and fails on demand, where the gateway asks dnspython
(``Gateway(..., dns_resolver=FakeResolver(...))``; gateway/core/calls/trunk_dns.py)."""

from __future__ import annotations

import attrs
import trio

from gateway.core.calls.trunk_dns import DnsError, NaptrRecord, SrvRecord


@attrs.define
class FakeResolver:
    """Answers from ``srv_records`` (``"_sip._udp.NAME"`` -> records), ``hosts`` (name ->
    addresses) and ``naptr_records`` (domain -> records), each answer with ``ttl`` and after
    ``delay`` seconds (trio's clock); a name not listed has no records. ``failing`` makes every
    query a DNS failure (a server that does not answer). ``queries`` counts them, ``asked``
    lists them (``"SRV _sip._udp.NAME"``)."""

    srv_records: dict[str, list[SrvRecord]] = attrs.Factory(dict)
    hosts: dict[str, list[str]] = attrs.Factory(dict)
    ttl: float = 60.0
    delay: float = 0.01
    failing: bool = False
    queries: int = 0
    naptr_records: dict[str, list[NaptrRecord]] = attrs.Factory(dict)
    asked: list[str] = attrs.Factory(list)

    async def naptr(self, name: str) -> tuple[list[NaptrRecord], float]:
        await self._asked(name, "NAPTR")
        return list(self.naptr_records.get(name, [])), self.ttl

    async def srv(self, name: str) -> tuple[list[SrvRecord], float]:
        await self._asked(name, "SRV")
        return list(self.srv_records.get(name, [])), self.ttl

    async def addresses(self, name: str) -> tuple[list[str], float]:
        await self._asked(name, "A")
        return list(self.hosts.get(name, [])), self.ttl

    async def _asked(self, name: str, rdtype: str) -> None:
        self.queries += 1
        self.asked.append(f"{rdtype} {name}")
        await trio.sleep(self.delay)
        if self.failing:
            raise DnsError(f"{name} {rdtype}: no answer")
