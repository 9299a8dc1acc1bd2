"""Stateless nonces and the nonce-count memory."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.auth.nonce import NcVerdict, NonceCounts, NonceIssuer, NonceStatus

SECRET = b"k" * 32


def issuer(lifetime: float = 300.0) -> NonceIssuer:
    return NonceIssuer(SECRET, lambda n: b"\x07" * n, lifetime=lifetime)


def test_round_trip_and_issue_time() -> None:
    nonces = issuer()
    nonce = nonces.issue("r", now=1234.5678)
    check = nonces.check(nonce, "r", now=1300.0)
    assert check.status is NonceStatus.VALID
    assert check.issued_at == pytest.approx(1234.567)


def test_nonce_is_bound_to_realm_and_secret() -> None:
    nonce = issuer().issue("r", now=10.0)
    assert issuer().check(nonce, "other", now=10.0).status is NonceStatus.INVALID
    other = NonceIssuer(b"x" * 32, lambda n: b"\x07" * n)
    assert other.check(nonce, "r", now=10.0).status is NonceStatus.INVALID


def test_lifetime_and_skew() -> None:
    nonces = issuer(lifetime=60.0)
    nonce = nonces.issue("r", now=100.0)
    assert nonces.check(nonce, "r", now=160.0).status is NonceStatus.VALID
    assert nonces.check(nonce, "r", now=160.5).status is NonceStatus.STALE
    assert nonces.check(nonce, "r", now=95.0).status is NonceStatus.VALID  # within 5 s skew
    assert nonces.check(nonce, "r", now=94.0).status is NonceStatus.STALE


def test_salt_comes_from_entropy() -> None:
    counter = iter(range(1000))
    nonces = NonceIssuer(SECRET, lambda n: next(counter).to_bytes(n, "big"))
    assert nonces.issue("r", now=1.0) != nonces.issue("r", now=1.0)


def test_entropy_of_wrong_size_is_a_local_error() -> None:
    with pytest.raises(ValueError):
        NonceIssuer(SECRET, lambda n: b"").issue("r", now=1.0)


def test_alternative_base64_spelling_is_refused() -> None:
    nonces = NonceIssuer(SECRET, lambda n: b"\xfb\xff" * (n // 2))
    for now in range(50):
        nonce = nonces.issue("r", now=float(now))
        if "-" in nonce or "_" in nonce:
            break
    else:
        pytest.fail("no nonce with a URL-safe character")
    respelled = nonce.replace("-", "+").replace("_", "/")
    assert base64.b64decode(respelled) == base64.urlsafe_b64decode(nonce)
    assert nonces.check(respelled, "r", now=float(now)).status is NonceStatus.INVALID


@given(st.text(max_size=80))
def test_garbage_is_invalid_never_an_exception(garbage: str) -> None:
    assert issuer().check(garbage, "r", now=0.0).status is NonceStatus.INVALID


def test_opaque_is_stable_per_realm() -> None:
    assert issuer().opaque("r") == issuer().opaque("r")
    assert issuer().opaque("r") != issuer().opaque("s")


def test_short_secret_rejected() -> None:
    with pytest.raises(ValueError):
        NonceIssuer(b"short", lambda n: b"\x00" * n)


def test_nonce_counts_strictly_increase() -> None:
    counts = NonceCounts(10)
    assert counts.verdict("a", 1, 0.0) is NcVerdict.FRESH
    counts.record("a", 1, 0.0)
    assert counts.verdict("a", 1, 0.0) is NcVerdict.REPLAYED
    assert counts.verdict("a", 2, 0.0) is NcVerdict.FRESH
    assert counts.verdict("b", 1, 0.0) is NcVerdict.FRESH


def test_no_qop_nonce_is_single_use() -> None:
    counts = NonceCounts(10)
    assert counts.verdict("a", None, 0.0) is NcVerdict.FRESH
    counts.record("a", None, 0.0)
    assert counts.verdict("a", None, 0.0) is NcVerdict.REPLAYED
    assert counts.verdict("a", 0xFFFFFFFF, 0.0) is NcVerdict.REPLAYED


def test_memory_is_bounded_and_least_recently_used_goes_first() -> None:
    counts = NonceCounts(2)
    counts.record("a", 1, 1.0)
    counts.record("b", 1, 2.0)
    counts.record("a", 2, 1.0)  # touch "a": "b" is now the oldest
    counts.record("c", 1, 3.0)
    assert len(counts) == 2
    assert counts.verdict("a", 3, 1.0) is NcVerdict.FRESH
    # "b" (issued 2.0) was evicted: unknown nonces issued up to 2.0 cannot be judged.
    assert counts.verdict("b", 2, 2.0) is NcVerdict.FORGOTTEN
    assert counts.verdict("z", 1, 1.5) is NcVerdict.FORGOTTEN
    assert counts.verdict("y", 1, 2.5) is NcVerdict.FRESH
