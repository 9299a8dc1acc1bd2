"""DigestAuthenticator: challenges, verification outcomes, stale nonces and replays."""

from __future__ import annotations

import itertools

import pytest

from gateway.core.auth.algorithms import DigestAlgorithm, compute_ha1, compute_response
from gateway.core.auth.credentials import parse_credentials_untrusted, quote
from gateway.core.auth.digest import (
    Authenticated,
    AuthKind,
    BadCredentials,
    Challenge,
    DigestAuthenticator,
    DigestConfig,
    Stale,
    UnknownUser,
)

REALM = "voipgw.local"
SECRET = b"0123456789abcdef-test-secret"
PASSWORD = "correct horse"
URI = "sip:127.0.0.1:5060"
NOW = 1_000_000.0


def counting_entropy():  # type: ignore[no-untyped-def]
    counter = itertools.count()
    return lambda n: next(counter).to_bytes(n, "big")


def make_auth(**config: object) -> DigestAuthenticator:
    return DigestAuthenticator(
        DigestConfig(realm=REALM, **config),  # type: ignore[arg-type]
        secret=SECRET,
        entropy=counting_entropy(),
    )


def lookup(username: str, realm: str, algorithm: DigestAlgorithm) -> str | None:
    if username != "alice":
        return None
    return compute_ha1(algorithm, username, realm, PASSWORD)


def challenge_params(value: str) -> dict[str, str]:
    # Challenges share the credentials grammar after the scheme; reuse a tiny parser here.
    assert value.startswith("Digest ")
    out: dict[str, str] = {}
    for part in value[len("Digest ") :].split(", "):
        name, _, raw = part.partition("=")
        out[name] = raw[1:-1] if raw.startswith('"') else raw
    return out


def answer(
    challenge_value: str,
    *,
    username: str = "alice",
    password: str = PASSWORD,
    method: str = "REGISTER",
    uri: str = URI,
    nc: int = 1,
    cnonce: str = "c0ffee",
    qop: str | None = "auth",
    nonce: str | None = None,
    extra: str = "",
) -> str:
    """What a well-behaved client sends back for ``challenge_value``."""
    p = challenge_params(challenge_value)
    algorithm = DigestAlgorithm.from_token(p["algorithm"])
    assert algorithm is not None
    nonce = nonce if nonce is not None else p["nonce"]
    ha1 = compute_ha1(algorithm, username, p["realm"], password)
    nc_text = f"{nc:08x}"
    response = compute_response(
        algorithm,
        ha1,
        method=method,
        uri=uri,
        nonce=nonce,
        qop=qop,
        nc=nc_text if qop else None,
        cnonce=cnonce if qop else None,
    )
    value = (
        f"Digest username={quote(username)}, realm={quote(p['realm'])}, nonce={quote(nonce)}, "
        f"uri={quote(uri)}, response={quote(response)}, algorithm={p['algorithm']}, "
        f"opaque={quote(p['opaque'])}"
    )
    if qop:
        value += f", qop={qop}, nc={nc_text}, cnonce={quote(cnonce)}"
    return value + extra


def run(
    auth: DigestAuthenticator,
    values: list[str],
    *,
    now: float = NOW,
    kind: AuthKind = AuthKind.WWW,
    method: str = "REGISTER",
) -> object:
    return auth.authenticate(
        values, kind=kind, method=method, request_uri=URI, now=now, lookup=lookup
    )


def test_challenge_offers_sha256_then_md5_with_one_nonce() -> None:
    auth = make_auth()
    challenge = auth.challenge(AuthKind.WWW, now=NOW)
    assert challenge.status == 401
    headers = challenge.response_headers()
    assert [name for name, _ in headers] == ["WWW-Authenticate", "WWW-Authenticate"]
    first, second = (challenge_params(v) for _, v in headers)
    assert (first["algorithm"], second["algorithm"]) == ("SHA-256", "MD5")
    assert first["nonce"] == second["nonce"]
    assert first["realm"] == REALM
    assert first["qop"] == "auth"
    assert first["opaque"] and first["opaque"] == second["opaque"]
    assert "stale" not in first


def test_proxy_kind_uses_407_and_proxy_headers() -> None:
    auth = make_auth()
    outcome = auth.authenticate(
        [], kind=AuthKind.PROXY, method="INVITE", request_uri=URI, now=NOW, lookup=lookup
    )
    assert isinstance(outcome, Challenge)
    assert outcome.status == 407
    assert {name for name, _ in outcome.response_headers()} == {"Proxy-Authenticate"}
    assert AuthKind.PROXY.credentials_header == "Proxy-Authorization"


def test_configurable_algorithm_order() -> None:
    auth = make_auth(algorithms=(DigestAlgorithm.SHA_512_256, DigestAlgorithm.SHA_256))
    values = auth.challenge_values(now=NOW)
    assert [challenge_params(v)["algorithm"] for v in values] == ["SHA-512-256", "SHA-256"]


def test_fresh_nonce_per_challenge() -> None:
    auth = make_auth()
    a = challenge_params(auth.challenge_values(now=NOW)[0])["nonce"]
    b = challenge_params(auth.challenge_values(now=NOW)[0])["nonce"]
    assert a != b


@pytest.mark.parametrize("index", [0, 1])
def test_good_answer_authenticates(index: int) -> None:
    auth = make_auth()
    challenge = auth.challenge_values(now=NOW)[index]
    outcome = run(auth, [answer(challenge)], now=NOW + 1)
    assert isinstance(outcome, Authenticated)
    assert outcome.username == "alice"
    assert outcome.realm == REALM
    assert outcome.algorithm is (DigestAlgorithm.SHA_256, DigestAlgorithm.MD5)[index]
    assert outcome.qop == "auth"


def test_nonce_reuse_with_higher_nc_then_replay() -> None:
    auth = make_auth()
    challenge = auth.challenge_values(now=NOW)[0]
    assert isinstance(run(auth, [answer(challenge, nc=1)]), Authenticated)
    assert isinstance(run(auth, [answer(challenge, nc=2)]), Authenticated)
    replay = run(auth, [answer(challenge, nc=2)])
    assert isinstance(replay, BadCredentials)
    assert replay.reason == "nonce-count replayed"
    lower = run(auth, [answer(challenge, nc=1)])
    assert isinstance(lower, BadCredentials)
    assert isinstance(run(auth, [answer(challenge, nc=7)]), Authenticated)


def test_nc_zero_is_refused() -> None:
    auth = make_auth()
    challenge = auth.challenge_values(now=NOW)[0]
    assert isinstance(run(auth, [answer(challenge, nc=0)]), BadCredentials)


def test_failed_attempt_does_not_burn_the_nonce_count() -> None:
    auth = make_auth()
    challenge = auth.challenge_values(now=NOW)[0]
    assert isinstance(run(auth, [answer(challenge, nc=5, password="wrong")]), BadCredentials)
    assert isinstance(run(auth, [answer(challenge, nc=1)]), Authenticated)


def test_expired_nonce_with_right_password_is_stale() -> None:
    auth = make_auth(nonce_lifetime=30.0)
    challenge = auth.challenge_values(now=NOW)[0]
    outcome = run(auth, [answer(challenge)], now=NOW + 31)
    assert isinstance(outcome, Stale)
    assert outcome.username == "alice"
    assert all(challenge_params(v)["stale"] == "true" for v in outcome.challenges)
    assert challenge_params(outcome.challenges[0])["nonce"] != challenge_params(challenge)["nonce"]
    # Still fine just inside the lifetime.
    challenge2 = auth.challenge_values(now=NOW)[0]
    assert isinstance(run(auth, [answer(challenge2)], now=NOW + 30), Authenticated)


def test_nonce_from_the_future_is_stale() -> None:
    auth = make_auth()
    challenge = auth.challenge_values(now=NOW + 60)[0]
    assert isinstance(run(auth, [answer(challenge)], now=NOW), Stale)


def test_expired_nonce_with_wrong_password_is_bad_credentials() -> None:
    auth = make_auth(nonce_lifetime=30.0)
    challenge = auth.challenge_values(now=NOW)[0]
    outcome = run(auth, [answer(challenge, password="nope")], now=NOW + 31)
    assert isinstance(outcome, BadCredentials)
    assert "stale" not in outcome.challenges[0]


def test_another_nodes_challenge_answered_with_the_right_password_is_stale() -> None:
    # Another secret: another node behind the same load balancer, or this node before its
    # restart. The client returns that challenge's nonce and opaque (RFC 7616 §3.3: the opaque
    # unchanged) and knows the password, so it only needs a fresh challenge: not a failure.
    other = DigestAuthenticator(
        DigestConfig(realm=REALM), secret=b"another-secret-of-16+", entropy=counting_entropy()
    )
    challenge = other.challenge_values(now=NOW)[0]
    auth = make_auth()
    assert (
        challenge_params(challenge)["opaque"]
        != challenge_params(auth.challenge_values(now=NOW)[0])["opaque"]
    )
    for value in (answer(challenge), answer(challenge).replace(", opaque=", ", x-opaque=")):
        outcome = run(auth, [value])
        assert isinstance(outcome, Stale), outcome
        assert all(challenge_params(v)["stale"] == "true" for v in outcome.challenges)
    wrong = run(auth, [answer(challenge, password="nope")])
    assert isinstance(wrong, BadCredentials)
    assert wrong.reason == "response does not match"


def test_a_forged_opaque_over_our_nonce_gets_a_fresh_challenge() -> None:
    auth = make_auth()
    value = answer(auth.challenge_values(now=NOW)[0]).replace(
        ", opaque=", ', opaque="forged", x-opaque='
    )
    assert isinstance(run(auth, [value]), Stale)
    wrong = answer(auth.challenge_values(now=NOW)[0], password="nope")
    assert isinstance(
        run(auth, [wrong.replace(", opaque=", ', opaque="forged", x-opaque=')]), BadCredentials
    )


def test_tampered_nonce_is_not_accepted() -> None:
    auth = make_auth()
    challenge = auth.challenge_values(now=NOW)[0]
    nonce = challenge_params(challenge)["nonce"]
    flipped = nonce[:-2] + ("A" if nonce[-2] != "A" else "B") + nonce[-1]
    outcome = run(auth, [answer(challenge, nonce=flipped)])
    assert isinstance(outcome, Stale)  # right password over a nonce that is not ours
    assert isinstance(run(auth, [answer(challenge, nonce=flipped, password="x")]), BadCredentials)


def test_wrong_password() -> None:
    auth = make_auth()
    challenge = auth.challenge_values(now=NOW)[0]
    outcome = run(auth, [answer(challenge, password="guess")])
    assert isinstance(outcome, BadCredentials)
    assert outcome.reason == "response does not match"
    assert outcome.username == "alice"
    assert outcome.status == 401
    assert len(outcome.challenges) == 2
    assert "guess" not in repr(outcome)


def test_unknown_user_looks_like_bad_credentials_on_the_wire() -> None:
    auth = make_auth()
    challenge = auth.challenge_values(now=NOW)[0]
    outcome = run(auth, [answer(challenge, username="mallory")])
    assert isinstance(outcome, UnknownUser)
    assert outcome.username == "mallory"
    assert outcome.status == 401
    assert [n for n, _ in outcome.response_headers()] == ["WWW-Authenticate"] * 2


def test_uppercase_hex_response_is_accepted() -> None:
    auth = make_auth()
    challenge = auth.challenge_values(now=NOW)[0]
    value = answer(challenge)
    response = parse_credentials_untrusted(value)
    assert response is not None
    outcome = run(auth, [value.replace(response.response, response.response.upper())])
    assert isinstance(outcome, Authenticated)


def test_no_credentials_other_scheme_or_other_realm_is_a_challenge() -> None:
    auth = make_auth()
    assert isinstance(run(auth, []), Challenge)
    assert isinstance(run(auth, ["Basic YWxpY2U6cGFzcw=="]), Challenge)
    other_realm = answer(auth.challenge_values(now=NOW)[0]).replace(REALM, "elsewhere")
    assert isinstance(run(auth, [other_realm]), Challenge)


def test_picks_the_credentials_for_our_realm_among_several() -> None:
    auth = make_auth()
    ours = answer(auth.challenge_values(now=NOW)[0])
    theirs = ours.replace(REALM, "proxy.example")
    assert isinstance(run(auth, [theirs, "Basic eA==", ours]), Authenticated)


def test_malformed_credentials_are_bad_credentials() -> None:
    auth = make_auth()
    outcome = run(auth, ['Digest username="alice", realm="voipgw.local'])
    assert isinstance(outcome, BadCredentials)
    assert "malformed" in outcome.reason
    # ... unless a good value for our realm is also present.
    good = answer(auth.challenge_values(now=NOW)[0])
    assert isinstance(run(auth, ['Digest username="x', good]), Authenticated)


def test_header_count_is_bounded() -> None:
    auth = make_auth(max_credentials_headers=2)
    good = answer(auth.challenge_values(now=NOW)[0])
    assert isinstance(run(auth, ["Basic eA==", "Basic eA==", good]), Challenge)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (
            lambda v: v.replace("algorithm=SHA-256", "algorithm=SHA-512-256"),
            "algorithm not offered",
        ),
        (lambda v: v.replace("algorithm=SHA-256", "algorithm=MD5-sess"), "algorithm not offered"),
        (lambda v: v + ", userhash=true", "userhash not supported"),
        (lambda v: v.replace("qop=auth", "qop=auth-int"), "qop not offered"),
    ],
)
def test_unacceptable_parameters(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    auth = make_auth()
    value = mutate(answer(auth.challenge_values(now=NOW)[0]))
    outcome = run(auth, [value])
    assert isinstance(outcome, BadCredentials)
    assert outcome.reason == reason


def test_missing_algorithm_means_md5() -> None:
    auth = make_auth()
    md5_challenge = auth.challenge_values(now=NOW)[1]
    value = answer(md5_challenge).replace(", algorithm=MD5", "")
    outcome = run(auth, [value])
    assert isinstance(outcome, Authenticated)
    assert outcome.algorithm is DigestAlgorithm.MD5


def test_missing_opaque_is_tolerated() -> None:
    auth = make_auth()
    value = answer(auth.challenge_values(now=NOW)[0]).replace(", opaque=", ", x-opaque=")
    assert isinstance(run(auth, [value]), Authenticated)


def test_digest_uri_must_match_request_uri() -> None:
    auth = make_auth()
    value = answer(auth.challenge_values(now=NOW)[0], uri="sip:elsewhere.example")
    outcome = run(auth, [value])
    assert isinstance(outcome, BadCredentials)
    assert outcome.reason == "digest uri does not match the Request-URI"
    # Case differences are tolerated; no request_uri means no check.
    auth2 = make_auth()
    value2 = answer(auth2.challenge_values(now=NOW)[0], uri=URI.upper())
    assert isinstance(run(auth2, [value2]), Authenticated)
    auth3 = make_auth()
    value3 = answer(auth3.challenge_values(now=NOW)[0], uri="sip:elsewhere.example")
    outcome3 = auth3.authenticate(
        [value3], kind=AuthKind.WWW, method="REGISTER", request_uri=None, now=NOW, lookup=lookup
    )
    assert isinstance(outcome3, Authenticated)


def test_method_is_part_of_the_hash() -> None:
    auth = make_auth()
    value = answer(auth.challenge_values(now=NOW)[0], method="INVITE")
    assert isinstance(run(auth, [value], method="REGISTER"), BadCredentials)


def test_rfc2069_answers_are_refused_by_default() -> None:
    auth = make_auth()
    value = answer(auth.challenge_values(now=NOW)[1], qop=None)
    outcome = run(auth, [value])
    assert isinstance(outcome, BadCredentials)
    assert "RFC 2069" in outcome.reason


def test_rfc2069_answers_when_allowed_are_single_use() -> None:
    auth = make_auth(allow_rfc2069=True)
    value = answer(auth.challenge_values(now=NOW)[1], qop=None)
    outcome = run(auth, [value])
    assert isinstance(outcome, Authenticated)
    assert outcome.qop is None
    assert isinstance(run(auth, [value]), BadCredentials)


def test_lookup_gets_username_realm_and_algorithm() -> None:
    auth = make_auth()
    calls: list[tuple[str, str, DigestAlgorithm]] = []

    def recording(username: str, realm: str, algorithm: DigestAlgorithm) -> str | None:
        calls.append((username, realm, algorithm))
        return lookup(username, realm, algorithm)

    value = answer(auth.challenge_values(now=NOW)[0])
    auth.authenticate(
        [value], kind=AuthKind.WWW, method="REGISTER", request_uri=URI, now=NOW, lookup=recording
    )
    assert calls == [("alice", REALM, DigestAlgorithm.SHA_256)]
    calls.clear()
    not_offered = value.replace("algorithm=SHA-256", "algorithm=SHA-512-256")
    auth.authenticate(
        [not_offered],
        kind=AuthKind.WWW,
        method="REGISTER",
        request_uri=URI,
        now=NOW,
        lookup=recording,
    )
    assert calls == []


def test_evicted_nonce_is_refused_as_stale() -> None:
    auth = make_auth(max_tracked_nonces=2)
    first = auth.challenge_values(now=NOW)[0]
    unused = auth.challenge_values(now=NOW)[0]
    assert isinstance(run(auth, [answer(first)]), Authenticated)
    for i in range(2):
        later = auth.challenge_values(now=NOW + 1 + i)[0]
        assert isinstance(run(auth, [answer(later)], now=NOW + 2), Authenticated)
    # ``first`` fell out of the replay memory: its nc=1 answer could be replayed, so it is
    # refused; an unused nonce issued before the eviction is refused too.
    assert isinstance(run(auth, [answer(first, nc=1)], now=NOW + 3), Stale)
    assert isinstance(run(auth, [answer(first, nc=2)], now=NOW + 3), Stale)
    assert isinstance(run(auth, [answer(unused)], now=NOW + 3), Stale)
    newer = auth.challenge_values(now=NOW + 5)[0]
    assert isinstance(run(auth, [answer(newer)], now=NOW + 5), Authenticated)


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        DigestConfig(realm=REALM, algorithms=())
    with pytest.raises(ValueError):
        DigestConfig(realm=REALM, algorithms=(DigestAlgorithm.MD5, DigestAlgorithm.MD5))
    with pytest.raises(ValueError):
        DigestConfig(realm='bad"realm')
    with pytest.raises(ValueError):
        DigestAuthenticator(DigestConfig(realm=REALM), secret=b"short", entropy=counting_entropy())


def test_reprs_hold_no_secret() -> None:
    auth = make_auth()
    assert SECRET.decode() not in repr(auth)
    assert SECRET.decode() not in repr(auth._nonces)
