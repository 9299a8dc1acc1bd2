"""``[gateway] auth_ipv6_prefix_length``: IPv6 sources' failures and bans counted per prefix.

A guesser on IPv6 holds a /64 at least and can send each guess from a new address of it;
counted per address, each address got ``max_failures`` fresh guesses and no ban ever held.
"""

from __future__ import annotations

import pytest

from gateway.core.auth.failures import FailureCounter, FailurePolicy

# Addresses of one /64 (2001:db8:1:2::/64), and one of the next /64 of the same /48.
SUBNET_A = [f"2001:db8:1:2::{number:x}" for number in range(1, 200)]
FAR_END_OF_A = "2001:db8:1:2:ffff:ffff:ffff:fffe"
SUBNET_B = "2001:db8:1:3::1"


def _counter(prefix_length: int, *, block_time: float = 0.0) -> FailureCounter:
    return FailureCounter(
        FailurePolicy(
            max_failures=3, window=60.0, block_time=block_time, ipv6_prefix_length=prefix_length
        )
    )


def test_a_64_counts_a_guesser_walking_its_subnet_as_one_source() -> None:
    counter = _counter(64)
    assert counter.record_failure(SUBNET_A[0], user="alice", now=0.0) is False
    assert counter.record_failure(SUBNET_A[1], user="alice", now=0.5) is False
    assert counter.record_failure(SUBNET_A[2], user="alice", now=1.25) is True
    # Every address of the /64 is blocked, guessing or not; the next /64 is not.
    assert counter.is_blocked(FAR_END_OF_A, now=1.25) is True
    assert counter.is_blocked(SUBNET_B, now=1.25) is False
    assert counter.blocked_for(SUBNET_A[100], now=1.25) == pytest.approx(58.75)
    assert counter.is_blocked(SUBNET_A[100], now=60.0) is False  # the first failure left
    assert len(counter) == 1
    assert counter.source_of(SUBNET_A[5]) == "2001:db8:1:2::/64"


def test_at_128_the_default_each_ipv6_address_counts_apart_as_before() -> None:
    counter = FailureCounter(FailurePolicy(max_failures=3, window=60.0))
    assert counter.policy.ipv6_prefix_length == 128
    for number, address in enumerate(SUBNET_A):
        assert counter.record_failure(address, user="alice", now=number * 0.01) is False
    assert len(counter) == len(SUBNET_A)
    for second in (1.0, 2.0):
        counter.record_failure(SUBNET_A[0], user="alice", now=second)
    assert counter.is_blocked(SUBNET_A[0], now=2.0) is True
    assert counter.is_blocked(SUBNET_A[1], now=2.0) is False
    assert counter.source_of(SUBNET_A[0]) == SUBNET_A[0]


def test_ipv4_counts_per_address_whatever_the_prefix_length() -> None:
    counter = _counter(48)
    for second in (0.0, 0.1, 0.2):
        counter.record_failure("192.0.2.66", user="alice", now=second)
    assert counter.is_blocked("192.0.2.66", now=0.2) is True
    assert counter.is_blocked("192.0.2.67", now=0.2) is False
    assert counter.source_of("192.0.2.66") == "192.0.2.66"


@pytest.mark.parametrize("prefix_length", [48, 64, 128])
def test_an_ipv4_mapped_address_counts_as_its_ipv4_address(prefix_length: int) -> None:
    """RFC 4291 §2.5.5.2: an IPv4 peer of a dual-stack socket arrives as ``::ffff:a.b.c.d``;
    it is the same guesser as the plain IPv4 address, never a prefix of ::ffff:0:0/96."""
    counter = _counter(prefix_length)
    assert counter.source_of("::ffff:192.0.2.66") == "192.0.2.66"
    counter.record_failure("::ffff:192.0.2.66", user="alice", now=0.0)
    counter.record_failure("192.0.2.66", user="alice", now=0.5)
    assert counter.record_failure("::ffff:192.0.2.66", user="alice", now=1.0) is True
    assert counter.is_blocked("192.0.2.66", now=1.0) is True
    assert counter.is_blocked("::ffff:192.0.2.67", now=1.0) is False


def test_a_ban_holds_the_whole_prefix_even_against_the_right_password() -> None:
    """A phone of the banned /64 logging in with the right password is refused until the ban
    ends (the caller checks is_blocked before the credentials); its success (had it been
    checked) would not lift the ban."""
    counter = _counter(64, block_time=600.0)
    for number in range(3):
        counter.record_failure(SUBNET_A[number], user="alice", now=10.0 + number * 0.25)
    assert counter.banned == 1 and counter.banned_now(now=10.5) == 1
    phone = SUBNET_A[150]
    for second in (20.0, 100.0, 609.0):  # past the window, within the ban
        assert counter.is_blocked(phone, now=second) is True
    counter.record_success(phone, user="alice")
    assert counter.is_blocked(phone, now=610.4) is True
    assert counter.blocked_for(phone, now=610.4) == pytest.approx(0.1)
    assert counter.is_blocked(SUBNET_B, now=20.0) is False
    assert counter.is_blocked(phone, now=610.5) is False
    assert counter.banned_now(now=610.5) == 0


def test_banned_now_counts_only_bans_that_have_not_ended() -> None:
    """``banned`` is the table's size (ended bans stay until pushed out); ``banned_now`` what
    the voipgw_sip_auth_banned_sources gauge shows: bans still running, the table unchanged."""
    counter = _counter(64, block_time=100.0)
    sources = ["192.0.2.66", SUBNET_A[0], SUBNET_B, "::ffff:192.0.2.67"]
    for start, address in enumerate(sources):
        for step in range(3):
            counter.record_failure(address, user="alice", now=start * 10.0 + step * 0.5)
    assert counter.banned_now(now=31.0) == 4
    assert counter.banned_now(now=100.5) == 4
    assert counter.banned_now(now=101.0) == 3  # the first ban ended at 101.0
    assert counter.banned_now(now=121.0) == 1
    assert counter.banned_now(now=131.0) == 0
    assert counter.banned == 4  # nothing dropped by looking


def test_the_tables_are_bounded_in_prefixes() -> None:
    """The same bounds as per address: max_sources prefixes' failures, max_sources bans. A
    guesser walking 1,000 addresses of its /64 takes one entry, not 1,000."""
    policy = FailurePolicy(
        max_failures=3, window=60.0, max_sources=4, block_time=600.0, ipv6_prefix_length=64
    )
    counter = FailureCounter(policy)
    for number in range(1000):
        counter.record_failure(f"2001:db8:1:2::{number + 1:x}", user="alice", now=number * 0.001)
    assert (len(counter), counter.banned) == (1, 1)
    for subnet in range(10):
        for step in range(3):
            counter.record_failure(f"2001:db8:2:{subnet:x}::{step + 1}", user="x", now=2.0 + step)
    assert len(counter) == 4 and counter.banned == 4
    # The first /64's ban, the one nearest its end, made way for the later ones.
    assert counter.is_blocked(SUBNET_A[0], now=5.0) is False


def test_the_prefix_length_is_validated() -> None:
    for length in (0, 129):
        with pytest.raises(ValueError):
            FailurePolicy(ipv6_prefix_length=length)
    assert FailurePolicy(ipv6_prefix_length=64).ipv6_prefix_length == 64


def test_a_good_login_forgets_its_users_failures_of_the_whole_prefix() -> None:
    """A success forgets the failures counted for its source: at 64 the /64's failures that
    named its user, whichever address of the /64 they came from (a phone whose temporary
    address changed since its wrong password, RFC 8981), and only those; an IPv4-mapped
    address's success forgets its IPv4 address's failures."""
    counter = _counter(64)
    counter.record_failure(SUBNET_A[0], user="alice", now=0.0)
    counter.record_failure(SUBNET_A[1], user="alice", now=0.1)
    counter.record_failure(SUBNET_A[2], user="bob", now=0.2)
    counter.record_success(SUBNET_A[3], user="alice")
    assert (
        counter.record_failure(SUBNET_A[4], user="bob", now=0.3) is False
    )  # bob's 2 (with alice's: 3)
    assert counter.record_failure(SUBNET_A[5], user="bob", now=0.4) is True  # bob's 3
    mapped = _counter(128)
    mapped.record_failure("192.0.2.7", user="alice", now=0.0)
    mapped.record_failure("192.0.2.7", user="alice", now=0.1)
    mapped.record_success("::ffff:192.0.2.7", user="alice")
    assert len(mapped) == 0


def test_a_translators_ipv4_clients_share_a_prefix_as_docs_configuration_says() -> None:
    """IPv4 clients through NAT64/SIIT (RFC 6052's 64:ff9b::/96) are not IPv4-mapped: at 96 or
    less they are one source, above it whole ranges of IPv4 addresses are (docs/configuration.md
    tells operators behind a translator to keep 128)."""
    translated = ["64:ff9b::c000:207", "64:ff9b::cb00:7107"]  # 192.0.2.7, 203.0.113.7
    assert _counter(64).source_of(translated[0]) == _counter(64).source_of(translated[1])
    assert _counter(96).source_of(translated[0]) == "64:ff9b::/96"
    assert _counter(120).source_of(translated[0]) == _counter(120).source_of("64:ff9b::c000:2ff")
    assert _counter(128).source_of(translated[0]) == translated[0]
