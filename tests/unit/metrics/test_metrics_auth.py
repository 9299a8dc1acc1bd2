"""Basic authentication of scrapes: the scrypt hash format, the Authorization header parser, the
cache of verified pairs, and how bad hashes are reported as config errors."""

from __future__ import annotations

import base64
import re

import pytest

from gateway.core.config import ConfigError, structure
from gateway.plugins.metrics import MetricsConfig, exposure_warning
from gateway.plugins.metrics.auth import (
    MAX_AUTHORIZATION,
    BasicAuth,
    PasswordHash,
    PasswordHashError,
    VerifiedCache,
    parse_basic_credentials_untrusted,
)

# The lowest cost parse() accepts: keeps these tests fast, the format is the same.
FAST = {"n": 2**10, "r": 1, "p": 1}
SALT = bytes(range(16))


def fast_hash(password: str) -> PasswordHash:
    return PasswordHash.make(password, salt=SALT, **FAST)


def test_a_hash_is_written_with_its_parameters_and_read_back() -> None:
    made = PasswordHash.make("correct horse")
    text = made.encode()
    assert re.fullmatch(r"scrypt\$16384\$8\$1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}", text), text
    parsed = PasswordHash.parse(text)
    assert parsed == made
    assert parsed.matches(b"correct horse")
    assert not parsed.matches(b"correct horsf")
    assert not parsed.matches(b"")
    assert "correct" not in repr(parsed) and parsed.encode() not in repr(parsed)


def test_two_hashes_of_one_password_differ_by_their_salt() -> None:
    assert PasswordHash.make("x", **FAST).encode() != PasswordHash.make("x", **FAST).encode()


def test_a_non_ascii_password_is_hashed_as_utf8() -> None:
    made = fast_hash("pässwörd")
    assert made.matches("pässwörd".encode())
    assert not made.matches("pässwörd".encode("latin-1"))


GOOD = fast_hash("secret").encode()
_, _N, _R, _P, _SALT, _HASH = GOOD.split("$")
_WIDE = "\uff11\uff10\uff12\uff14"  # 1024 in fullwidth digits: isdigit() but not ASCII


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("secret", "expected scrypt$N$r$p$SALT$HASH"),
        (f"bcrypt${_N}${_R}${_P}${_SALT}${_HASH}", "expected scrypt$N$r$p$SALT$HASH"),
        (f"scrypt${_N}${_R}${_P}${_SALT}", "expected scrypt$N$r$p$SALT$HASH"),
        (f"scrypt$1000${_R}${_P}${_SALT}${_HASH}", "N: expected a power of two"),
        (f"scrypt$512${_R}${_P}${_SALT}${_HASH}", "N: expected a power of two"),
        (f"scrypt${2**21}${_R}${_P}${_SALT}${_HASH}", "N: expected a power of two"),
        (f"scrypt$-1024${_R}${_P}${_SALT}${_HASH}", "N: expected a positive integer"),
        (f"scrypt${_WIDE}${_R}${_P}${_SALT}${_HASH}", "N: expected a positive integer"),
        (f"scrypt${_N}$0${_P}${_SALT}${_HASH}", "r, p: expected"),
        (f"scrypt${_N}${_R}$17${_SALT}${_HASH}", "r, p: expected"),
        (f"scrypt${2**20}$32${_P}${_SALT}${_HASH}", "MiB per check"),
        (f"scrypt${_N}${_R}${_P}$not*base64${_HASH}", "SALT: not base64"),
        (f"scrypt${_N}${_R}${_P}$${_HASH}", "SALT: expected base64"),
        (f"scrypt${_N}${_R}${_P}$AAAA${_HASH}", "SALT: expected at least 8 octets"),
        (f"scrypt${_N}${_R}${_P}${_SALT}$AAAA", "HASH: expected at least 16 octets"),
        (f"scrypt${_N}${_R}${_P}${_SALT}${'A' * 400}", "HASH: expected base64 of at most"),
    ],
)
def test_a_bad_hash_says_which_field_without_echoing_it(text: str, field: str) -> None:
    with pytest.raises(PasswordHashError) as caught:
        PasswordHash.parse(text)
    assert field in str(caught.value)
    for part in text.split("$")[4:]:
        if len(part) > 4:
            assert part not in str(caught.value)


def metrics_config(**table: object) -> MetricsConfig:
    return structure(MetricsConfig, table, file="gw.toml", table_name="plugins.metrics")


def test_a_bad_hash_in_the_config_names_file_table_key_and_user_never_the_hash() -> None:
    secret_looking = f"scrypt${_N}${_R}${_P}${_SALT}$SECRETHASHvalue!!"
    with pytest.raises(ConfigError) as caught:
        metrics_config(basic_auth_users={"prometheus": GOOD, "grafana": secret_looking})
    message = str(caught.value)
    assert message.startswith("gw.toml: [plugins.metrics]")
    assert "basic_auth_users: user 'grafana': HASH: not base64" in message
    assert "SECRETHASH" not in message and _SALT not in message


def test_a_plain_password_in_the_config_is_refused_without_being_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        metrics_config(basic_auth_users={"prometheus": "hunter2"})
    assert "basic_auth_users: user 'prometheus': expected scrypt$N$r$p$SALT$HASH" in str(
        caught.value
    )
    assert "voipgw metrics-password" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_user_name_with_a_colon_is_refused() -> None:
    # RFC 7617 §2: the first colon ends the user-id, so such a user could never log in.
    with pytest.raises(ConfigError, match=r"basic_auth_users: user 'a:b': expected a name"):
        metrics_config(basic_auth_users={"a:b": GOOD})


def test_basic_auth_users_of_the_wrong_type_is_named_and_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        metrics_config(basic_auth_users="prometheus:hunter2")
    assert "[plugins.metrics] basic_auth_users" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_the_config_never_shows_its_hashes() -> None:
    config = metrics_config(basic_auth_users={"prometheus": GOOD})
    assert _HASH not in repr(config)
    assert config.password_hashes["prometheus"].matches(b"secret")


def header(raw: bytes, scheme: bytes = b"Basic") -> bytes:
    return scheme + b" " + base64.b64encode(raw)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (header(b"prometheus:s3cret"), ("prometheus", "s3cret")),
        (header(b"prometheus:a:b:c"), ("prometheus", "a:b:c")),  # the first colon splits
        (header(b"prometheus:"), ("prometheus", "")),
        (header(b":pw"), ("", "pw")),
        (header("jürgen:päss".encode()), ("jürgen", "päss")),
        (header(b"p:s", b"bAsIc"), ("p", "s")),  # RFC 9110 §11.1: case-insensitive scheme
        (b"  " + header(b"p:s") + b"  ", ("p", "s")),
        (header(b"prometheus"), None),  # no colon
        (header("jürgen:päss".encode("latin-1")), None),  # not UTF-8
        (header(b"p:\xff"), None),
        (b"Basic cHJvbWV0aGV1czpz*WNyZXQ=", None),  # not base64
        (b"Basic cHJvbWV0aGV1czpzZWNyZXQ", None),  # missing padding
        (b"Basic", None),
        (b"Basic ", None),
        (header(b"p:s", b"Bearer"), None),
        (header(b"p:s", b"Digest"), None),
        (b"", None),
        (b"Basic " + base64.b64encode(b"p:" + b"x" * MAX_AUTHORIZATION), None),  # too long
    ],
)
def test_authorization_headers_are_parsed_or_refused(
    value: bytes, expected: tuple[str, str] | None
) -> None:
    assert parse_basic_credentials_untrusted(value) == expected


def test_a_verified_pair_is_cached_and_a_wrong_one_never_is() -> None:
    auth = BasicAuth({"prometheus": fast_hash("right")})
    assert not auth.cached("prometheus", "right")
    assert not auth.verify("prometheus", "wrong")
    assert not auth.cached("prometheus", "wrong") and len(auth.cache) == 0
    assert not auth.verify("nobody", "right") and len(auth.cache) == 0
    assert auth.verify("prometheus", "right")
    assert auth.cached("prometheus", "right")
    assert not auth.cached("prometheus", "righ") and not auth.cached("prometheus", "right ")
    assert not auth.cached("nobody", "right")
    # A cached pair is no longer valid once the user's hash is another one.
    auth.users["prometheus"] = fast_hash("new")
    assert not auth.cached("prometheus", "right")


def test_the_cache_is_bounded_and_forgets_the_least_recently_used() -> None:
    stored = fast_hash("x")
    cache = VerifiedCache(size=3)
    for user in ("a", "b", "c"):
        cache.add(user, "pw", stored)
    assert ("a", "pw", stored) in cache  # a is now the most recently used
    cache.add("d", "pw", stored)
    assert len(cache) == 3
    assert ("b", "pw", stored) not in cache
    assert all((user, "pw", stored) in cache for user in ("a", "c", "d"))
    for index in range(100):
        cache.add(f"user{index}", "pw", stored)
    assert len(cache) == 3


def test_the_exposure_warning_is_for_other_hosts_without_protection_only() -> None:
    assert exposure_warning(metrics_config()) is None
    assert exposure_warning(metrics_config(listen="[::1]:9464")) is None
    open_one = exposure_warning(metrics_config(listen="0.0.0.0:9464"))
    assert open_one is not None and "without TLS or authentication" in open_one
    clear = exposure_warning(metrics_config(listen="10.0.0.5:9464", basic_auth_users={"p": GOOD}))
    assert clear is not None and "passwords cross the network in clear" in clear
