"""ip_facts: what the media path asks of an SDP address, memoized, equal to ipaddress's answers."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.ip import IpFacts, ip_facts

addresses = st.ip_addresses() | st.sampled_from(
    [ipaddress.ip_address(a) for a in ("0.0.0.0", "::", "224.0.0.1", "ff02::1", "127.0.0.1")]
)


@given(addresses, st.booleans())
def test_facts_equal_ipaddress_answers(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address, exploded: bool
) -> None:
    text = ip.exploded if exploded else str(ip)  # a non-canonical IPv6 text too
    assert ip_facts(text) == IpFacts(str(ip), ip.version, ip.is_unspecified, ip.is_multicast)


@pytest.mark.parametrize("text", ["example.com", "", "1.2.3", "::g", " 127.0.0.1"])
def test_anything_but_an_ip_literal_is_refused_every_time(text: str) -> None:
    for _ in range(2):  # a failure is not remembered as an answer
        with pytest.raises(ValueError):
            ip_facts(text)
