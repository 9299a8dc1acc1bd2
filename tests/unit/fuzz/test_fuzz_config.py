"""Mutation fuzzing of the configuration: "a bad config names the file, the table and the key".

The seed is one valid ``voipgw.toml`` that sets every key docs/configuration.md documents, in
every core table and every built-in plugin's table (:func:`test_the_seed_sets_every_documented_key`
fails when a key is documented that the seed does not set). Each mutation changes one thing of
it: a key given the wrong type, a number out of range (negative, 0, huge, NaN and inf), an empty
string or list, an unknown or misspelt key, a missing required key, a trunk or group named twice,
an address or port that is none, a path that does not exist, a trunk that a plugin key names
(``sign_trunks``, a recorder's ``trunks``) misspelt there or renamed in its ``[[trunks]]`` table, a
value out of the bounds the loader once missed (:func:`bounds`: T1 1e300, media address 0.0.0.0,
an inactivity timeout of 1e-9 s ...), which must be refused; or the file's bytes: invalid TOML,
bytes that are not UTF-8.

Each mutated file goes through what ``voipgw check-config`` runs (the file, the plugins' tables,
the gateway's own checks, no socket): it is accepted, or it raises :class:`ConfigError` naming the
file, the table and the key mutated (and the line, for a file that is not TOML). Anything else
(another exception, an error naming another key or none) is a bug. A trunk name no ``[[trunks]]``
table has is an error of check-config (``Gateway.name_errors``; ``voipgw run`` only warns of it), as
are the values of ``Gateway.value_errors``. A
sample of them goes through ``python -m gateway check-config`` too: exit status 2 and one line,
never a traceback.

Seeded and deterministic (``VOIPGW_FUZZ_SEED``); ``VOIPGW_FUZZ_EXAMPLES`` sets the number of
mutations (docs/testing.md).
"""

from __future__ import annotations

import functools
import json
import math
import random
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from gateway.core import config as cfg
from gateway.core.config import ConfigError, from_toml
from gateway.core.gateway import Gateway
from gateway.core.plugins import load_plugins
from gateway.testing.sti_pki import make_pki
from tests.interop.harness.pki import TestPki
from tests.unit.fuzz.mutator import base_seed, examples

DOC = (Path(__file__).parents[3] / "docs" / "configuration.md").read_text()
DEFAULT_MUTATIONS = 200
SUBPROCESS_SAMPLE = 4  # each a fresh interpreter importing every plugin: about a second

# Keys a documentation section names that its table does not have: [plugins.ws] shares its
# section with [plugins.wss], whose certificate and key it lacks.
NOT_IN_TABLE = {("plugins.ws", "certificate"), ("plugins.ws", "private_key")}


def documented_keys() -> dict[str, set[str]]:
    """Table name -> the keys docs/configuration.md lists for it (``trunks`` and
    ``dialog_watch_groups`` for the arrays of tables)."""
    tables: dict[str, set[str]] = {}
    current: tuple[str, ...] = ()
    fence = False
    for line in DOC.splitlines():
        if line.startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        if heading := re.match(r"#{2,3} (.*)", line):
            current = tuple(re.findall(r"`\[\[?([\w.]+)\]\]?`", heading.group(1)))
            for name in current:
                tables.setdefault(name, set())
            continue
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            for name in current:
                tables[name].update(re.findall(r"`(\w+)`", first_cell))
    return tables


# -- the seed: every key set -------------------------------------------------------------------


@attrs.frozen
class Files:
    root: Path
    state: Path
    cert: Path
    key: Path
    ca: Path
    crl: Path
    client_cert: Path
    client_key: Path
    password: Path
    psk: Path
    sti_anchors: Path
    sti_key: Path
    recordings: Path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("config-fuzz")
    pki = TestPki(root / "pki")
    ca = pki.ca("Fuzz CA")
    server = ca.issue("fuzz-server")
    client = ca.issue("admf-1")
    crl = ca.crl(root / "pki" / "ca.crl")
    password = root / "db-password"
    password.write_text("secret\n")
    password.chmod(0o600)
    psk = root / "mikey-psk.toml"
    psk.write_text('[accounts]\nalice = "' + "00" * 16 + '"\n[trunks]\n')
    psk.chmod(0o600)
    sti = root / "sti"
    sti.mkdir()
    anchors, sti_key, _ = make_pki().write(sti)
    state = root / "state"
    state.mkdir()
    recordings = root / "recordings"
    recordings.mkdir()
    return Files(
        root,
        state,
        server.certificate,
        server.key,
        ca.certificate,
        crl,
        client.certificate,
        client.key,
        password,
        psk,
        anchors,
        sti_key,
        recordings,
    )


def seed_config(f: Files) -> dict[str, Any]:
    """A valid configuration that sets every documented key (what check-config accepts)."""
    state = str(f.state)
    return {
        "gateway": {
            "state_dir": state,
            "realm": "fuzz.example",
            "domains": ["fuzz.example", "192.0.2.1"],
            "digest_algorithms": ["SHA-256", "MD5"],
            "log_level": "info",
            "log_plugin_exception_text": False,
            "log_dtmf_digits": False,
            "gc_thresholds": [10000, 10, 10],
            "drain_timeout": 30.0,
            "auth_max_failures": 5,
            "auth_failure_window": 60.0,
            "auth_block_time": 600.0,
            "auth_ipv6_prefix_length": 64,
            "auth_proxies": ["192.0.2.10", "2001:db8:5::/64"],
            "psap_callback_window": 1800.0,
        },
        "sip": {
            "listen": [
                "udp:127.0.0.1:5060",
                "tcp:127.0.0.1:5060",
                "tls:127.0.0.1:5061",
                "ws:127.0.0.1:5066",
                "wss:127.0.0.1:7443",
            ],
            "user_agent": "voipgw-fuzz",
            "t1": 0.5,
            "t2": 4.0,
            "t4": 5.0,
            "max_message_size": 65535,
            "max_headers": 200,
            "overload_queue_delay": 0.3,
            "overload_retry_after": 5,
            "ring_timeout": 120.0,
            "session_expires": 1800,
            "min_se": 90,
            "failover_statuses": [408, 503],
            "nat_keepalive_interval": 30.0,
            "drop_user_agents": ["friendly-scanner"],
            "max_redirects": 5,
            "foreign_redirects": "refuse",
            "in_dialog_failures": "strict",
        },
        "media": {
            "address": "127.0.0.1",
            "ports": "30000-30999",
            "inactivity_timeout": 60.0,
            "hold_timeout": 3600.0,
            "workers": 2,
            "worker_ready_timeout": 90.0,
            "offer_rtcp_feedback": True,
            "rtcp_quality": True,
            "dtmf_interworking": True,
            "g711_transcoding": True,
            "ringback_tone": "eu",
        },
        "store": {
            "backend": "postgresql",
            "dsn": "postgresql://voipgw@127.0.0.1:5432/voipgw",
            "password_file": str(f.password),
            "connect_timeout": 5,
            "statement_timeout": 0.5,
            "node": "node-1",
            "max_cps_scope": "cluster",
            "call_record_days": 90.0,
            "call_id_index": False,
        },
        "numbering": {
            "country_code": "49",
            "area_code": "30",
            "international_prefix": "00",
            "national_prefix": "0",
            "national_number_length": 10,
            "short_codes": ["110"],
            "emergency_numbers": ["112", "110"],
        },
        "dns": {
            "servers": ["127.0.0.1:5353"],
            "timeout": 5.0,
            "min_ttl": 30.0,
            "max_ttl": 3600.0,
            "retry_interval": 30.0,
            "max_targets": 4,
        },
        "feature_codes": {"pickup": "*8", "directed_pickup": "**"},
        "presence": {"allow": "same-group", "from_registration": True},
        "registrar": {
            "min_expires": 60,
            "default_expires": 3600,
            "max_expires": 7200,
            "max_bindings": 10,
        },
        "plugins": {
            "enable": [
                "udp",
                "tcp",
                "tls",
                "ws",
                "wss",
                "sdes",
                "dtls",
                "zrtp",
                "mikey",
                "pstn",
                "recorder",
                "siprec",
                "hep",
                "intercept",
                "metrics",
                "stir_shaken",
            ],
            "udp": {"receive_buffer": 4194304},
            "tcp": {
                "max_connections_per_source": 32,
                "idle_timeout": 300.0,
                "connect_timeout": 10.0,
            },
            "tls": {
                "certificate": str(f.cert),
                "private_key": str(f.key),
                "mode": "mutual",
                "ca_bundles": [str(f.ca)],
                "crl_files": [str(f.crl)],
                "verify_peers": True,
                "system_ca_for_trunks": False,
                "peers": {"192.0.2.20:5061": "sip.carrier.example"},
                "listener_modes": {"127.0.0.1:5061": "mutual"},
                "peer_modes": {"192.0.2.20:5061": "server-only"},
                "handshake_timeout": 10.0,
                "max_connections_per_source": 32,
                "idle_timeout": 300.0,
                "connect_timeout": 10.0,
                "ocsp": "soft-fail",
                "ocsp_timeout": 3.0,
                "ocsp_responder": "http://127.0.0.1:8888/ocsp",
                "ocsp_stapling": True,
                "crl_urls": ["http://127.0.0.1:8888/ca.crl"],
                "crl_distribution_points": True,
            },
            "ws": {
                "allowed_origins": ["https://phone.fuzz.example"],
                "max_connections": 1024,
                "max_connections_per_source": 32,
                "handshake_timeout": 10.0,
                "ping_interval": 30.0,
                "idle_timeout": 90.0,
            },
            "wss": {
                "allowed_origins": ["https://phone.fuzz.example"],
                "max_connections": 1024,
                "max_connections_per_source": 32,
                "handshake_timeout": 10.0,
                "ping_interval": 30.0,
                "idle_timeout": 90.0,
                "certificate": str(f.cert),
                "private_key": str(f.key),
            },
            "dtls": {
                "state_dir": state,
                "certificate_max_age_days": 30,
                "handshake_timeout": 20.0,
                "profiles": ["SRTP_AEAD_AES_128_GCM", "SRTP_AES128_CM_SHA1_80"],
                "mtu": 1200,
                "sdp_address_only": False,
            },
            "sdes": {
                "answer_suite": "offer-order",
                "min_peer_key_lifetime": 2147483648,
                "mki": "receive-only",
            },
            "zrtp": {
                "state_dir": state,
                "key_agreements": ["X255", "DH3k"],
                "ciphers": ["AES1"],
                "auth_tags": ["HS80", "HS32"],
                "sas_types": ["B32"],
                "handshake_timeout": 20.0,
                "cache": True,
                "disclosure": False,
            },
            "mikey": {
                "state_dir": state,
                "offer_modes": ["psk", "null"],
                "accept_modes": ["null", "psk", "dh-hmac"],
                "psk_file": str(f.psk),
                "kemac_encryption": "aes-kw",
                "request_verification": True,
                "dh_group": "OAKLEY5",
                "style": "standard",
                "max_clock_skew": 120.0,
                "replay_cache_size": 10000,
            },
            "pstn": {"q850_for_status": {"480": 20}, "status_for_q850": {"34": 503}},
            "recorder": {
                "state_dir": state,
                "directory": str(f.recordings),
                "all_calls": False,
                "accounts": ["alice"],
                "trunks": ["carrier"],
                "format": "pcap",
                "queue": 2000,
                "min_free_mb": 0,
                "g722_decoder": "python",
            },
            "siprec": {
                "srs": "sip:srs@192.0.2.50:5060",
                "fallbacks": ["sip:srs@192.0.2.51:5060"],
                "all_calls": False,
                "accounts": ["alice"],
                "trunks": ["carrier"],
                "media_address": "127.0.0.1",
                "queue": 2000,
                "bye_timeout": 5.0,
                "final_metadata": True,
                "media_security": "none",
                "srtp_suites": ["AES_CM_128_HMAC_SHA1_80"],
                "answer_suite": "offer-order",
                "session_expires": 1800,
                "record_video": False,
                "recordpref": "pause",
                "record_indication": False,
            },
            "hep": {
                "collector": "udp:127.0.0.1:9060",
                "capture_id": 2001,
                "agent_name": "voipgw-fuzz",
                "password": "homer",
                "queue": 10000,
                "rtcp": True,
                "redact_keys": True,
                "redact_dtmf_digits": True,
                "redact_credentials": True,
            },
            "intercept": {
                "x1_listen": "127.0.0.1:8443",
                "x1_certificate": str(f.cert),
                "x1_private_key": str(f.key),
                "x1_ca": str(f.ca),
                "ne_identifier": "node-1",
                "interception_point_id": "ip-1",
                "admf_identifiers": ["admf-1"],
                "admf_certificates": {"admf-1": "CN=admf-1"},
                "delivery_tls": True,
                "delivery_certificate": str(f.client_cert),
                "delivery_private_key": str(f.client_key),
                "delivery_ca": str(f.ca),
                "pdu_version": 5,
                "keepalive_interval": 30.0,
                "queue": 10000,
                "report_url": "https://127.0.0.1:8444/x1",
                "report_certificate": str(f.client_cert),
                "report_private_key": str(f.client_key),
                "report_ca": str(f.ca),
                "report_admf_identifier": "admf-1",
                "report_interval": 30.0,
                "state_dir": state,
            },
            "metrics": {
                "listen": "127.0.0.1:9464",
                "path": "/metrics",
                "tls_certificate": str(f.cert),
                "tls_private_key": str(f.key),
                "tls_client_ca": str(f.ca),
                "basic_auth_users": {},
            },
            "stir_shaken": {
                "certificate_url": "https://cr.fuzz.example/signer.pem",
                "private_key": str(f.sti_key),
                "sign_trunks": ["carrier"],
                "account_attestation": {"alice": "A"},
                "sign_transit": False,
                "verify_trunks": ["carrier"],
                "trust_anchors": str(f.sti_anchors),
                "fetch_ca_file": str(f.ca),
                "certificate_hosts": ["cr.fuzz.example"],
                "fetch_timeout": 2.0,
                "freshness": 60.0,
                "certificate_cache": 3600.0,
                "require_tn_auth_list": True,
                "on_failure": "mark",
                "missing_identity": "mark",
                "check_revocation": True,
                "revocation_unavailable": "pass",
            },
        },
        "trunks": [
            {
                "name": "carrier",
                "address": "udp:192.0.2.20:5060",
                "prefixes": ["+49", ""],
                "strip_prefix": 1,
                "add_prefix": "00",
                "allowed_sources": ["192.0.2.20", "198.51.100.0/24"],
                "auth_by_source": True,
                "username": "gw",
                "password": "trunk-secret",
                "dids": {"+4930123456": "alice"},
                "media_policy": "best-effort",
                "offer_rtcp_feedback": False,
                "g711_transcoding": True,
                "caller_id": "+4930123400",
                "max_calls": 30,
                "max_cps": 10.0,
                "interworking": "rfc3398",
                "enabled": True,
                "number_format": "national",
                "options_interval": 30.0,
                "response_timeout": 5.0,
                "register": True,
                "register_domain": "sip.carrier.example:5060",
                "register_expires": 600,
                "contact_user": "gw-1",
                "country_code": "49",
                "area_code": "30",
                "international_prefix": "00",
                "national_prefix": "0",
                "national_number_length": 10,
                "voicemail": False,
                "location": "emergency",
                "dtmf": "rfc4733",
                "diversion": "diversion",
                "follow_redirects": True,
            },
            {
                "name": "pbx",
                "address": "tls:pbx.fuzz.example",
                "prefixes": ["+4930999"],
                "voicemail": True,
                "dids": {"+4930999100": "bob"},
            },
        ],
        "dialog_watch_groups": [
            {"name": "office", "accounts": ["alice", "bob"], "show_parties": True, "pickup": True},
        ],
    }


# -- TOML writing --------------------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


def to_toml(data: dict[str, Any]) -> str:
    """``data`` as TOML text: scalars and lists as ``key = value``, nested tables (one level
    under ``plugins``) as ``[a.b]`` sections, lists of tables as ``[[name]]``."""
    # Top-level keys first: after a [table] header they would be that table's.
    lines = [
        f"{json.dumps(name)} = {_value(body)}"
        for name, body in data.items()
        if not isinstance(body, dict) and not _is_array_of_tables(body)
    ]

    def table(header: str, body: dict[str, Any]) -> None:
        lines.append(header)
        subtables = []
        for key, value in body.items():
            if isinstance(value, dict) and header == "[plugins]":
                subtables.append((key, value))
            else:
                lines.append(f"{json.dumps(key)} = {_value(value)}")
        for key, value in subtables:
            table(f"[plugins.{json.dumps(key)}]", value)

    for name, body in data.items():
        if _is_array_of_tables(body):
            for entry in body:
                lines.append(f"[[{json.dumps(name)}]]")
                lines.extend(f"{json.dumps(k)} = {_value(v)}" for k, v in entry.items())
        elif isinstance(body, dict):
            table(f"[{json.dumps(name)}]", body)
    return "\n".join(lines) + "\n"


def _is_array_of_tables(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def check_config(path: Path) -> None:
    """What ``voipgw check-config`` runs (cli.cmd_check_config), without its printing."""
    config = from_toml(path)
    plugins = load_plugins(config)
    gateway = Gateway(config, plugins)
    gateway.check()
    if gateway.check_errors:
        raise gateway.check_errors[0]


@functools.cache
def trunk_name_keys(files: Files) -> tuple[tuple[str, str], ...]:
    """(plugin, key) of every plugin key whose values name trunks (marked ``NAMES_TRUNKS``)."""
    path = files.root / "seed-for-trunk-keys.toml"
    path.write_text(to_toml(seed_config(files)))
    return tuple(
        (plugin, field.name)
        for plugin, value in sorted(load_plugins(from_toml(path)).configs.items())
        for field in attrs.fields(type(value))
        if field.metadata.get("voipgw.names") == "trunks"
    )


# -- mutations -----------------------------------------------------------------------------------


@attrs.frozen
class Mutation:
    """What one mutation did and which table and key its error must name (``key`` None: any
    key of ``table``; ``line``: a TOML error's line)."""

    description: str
    kind: str
    table: str
    key: str | None
    text: bytes
    line: int | None = None
    # Other keys the error may name instead: a key checked against another (min_se and
    # session_expires) names whichever of the two the check reads as wrong.
    also: frozenset[str] = frozenset()
    late: bool = False  # a TOML error may be found a line or two after ``line``


# (table, key) pairs checked against each other: the error may name either.
RELATED = {
    ("sip", "t1"): {"t2"},
    ("sip", "t2"): {"t1"},
    ("sip", "min_se"): {"session_expires"},
    ("sip", "session_expires"): {"min_se"},
    ("dns", "min_ttl"): {"max_ttl"},
    ("dns", "max_ttl"): {"min_ttl"},
    ("feature_codes", "pickup"): {"directed_pickup"},
    ("feature_codes", "directed_pickup"): {"pickup"},
    # A trunk's numbering plan (as [numbering]'s): an area code needs a country code and a
    # national prefix to put it after.
    **{
        (table, key): {"country_code", "area_code", "national_prefix"}
        for table in ("numbering", "trunks.carrier", "trunks.pbx")
        for key in ("country_code", "area_code", "national_prefix")
    },
}

WRONG_TYPES: tuple[Any, ...] = ("fuzz", 7, 2.5, True, [1, "two"], {"a": 1}, [], {})
NUMBERS: tuple[Any, ...] = (
    -1,
    0,
    1,
    -0.5,
    10**18,
    -(2**63),
    2**63 - 1,
    float("nan"),
    float("inf"),
    float("-inf"),
    1e308,
    1e300,
    1e-9,
)
STRINGS = (
    "",
    " ",
    "not-an-address",
    "999.1.1.1",
    "udp:127.0.0.1:70000",
    "udp:127.0.0.1:-1",
    "127.0.0.1:0",
    "[::1",
    "tls:[::1]:99999",
    "udp::5060",
    "/nonexistent/voipgw/file.pem",
    "sip:",
    "http://",
    "\u0663",
    "\u00b2",
    "udp:127.0.0.1:\u0663",  # ARABIC-INDIC DIGIT THREE: isdigit() is true of it
    "a\x00b",
    "a\r\nX-Injected: 1",
    'a"b',
    "x" * 300,
    "0.0.0.0",
    "::",
)


def bounds(files: Files) -> tuple[tuple[str, str, Any], ...]:
    """(table, key, value) the loader once accepted though the gateway could not work with it
    (docs/configuration.md says each bound): each "bound" mutation sets one, and it must be
    refused naming the table and key (some, values an earlier version ran with, only by
    check-config: ``Gateway.value_errors``, a warning at run)."""
    root = files.root / "bounds"
    if not root.exists():
        root.mkdir()
        (root / "not-a-directory").write_text("")
        psk = root / "psk-unknown-trunk.toml"
        psk.write_text('[trunks]\ncarier = "' + "00" * 16 + '"\n')
        psk.chmod(0o600)
        encrypted = root / "encrypted.key"
        encrypted.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n")
    return (
        ("sip", "t1", 1e300),
        ("sip", "t1", 1e-9),
        ("sip", "t2", 0.1),  # below t1
        ("sip", "t2", 1e300),
        ("sip", "t4", 1e300),
        ("sip", "ring_timeout", 1e-9),
        ("media", "address", "0.0.0.0"),
        ("media", "address", "::"),
        ("media", "address", "224.0.0.1"),
        ("plugins.siprec", "media_address", "0.0.0.0"),
        ("media", "inactivity_timeout", 1e-9),
        ("media", "hold_timeout", 1e-9),
        ("media", "worker_ready_timeout", 1e-9),
        ("trunks.carrier", "response_timeout", 1e-9),
        ("trunks.carrier", "dids", {"alice": "alice"}),
        ("gateway", "domains", ["not a host"]),
        ("gateway", "state_dir", str(root / "not-a-directory" / "state")),
        ("plugins.dtls", "state_dir", str(root / "not-a-directory" / "state")),
        ("plugins.intercept", "x1_listen", "127.0.0.1:0"),
        ("plugins.mikey", "psk_file", str(root / "psk-unknown-trunk.toml")),
        ("plugins.tls", "certificate", str(files.key)),
        ("plugins.tls", "private_key", str(files.client_key)),
        ("plugins.tls", "private_key", str(root / "encrypted.key")),
        ("plugins.wss", "private_key", str(files.client_key)),
        # The seed's crl_files read ca_bundles too; without them a bundle that is no PEM was a
        # plugin error (tests/unit/tls/test_tls_config.py tries that table).
        ("plugins.tls", "ca_bundles", [str(files.key)]),
        # The judge lets "a, b, c: ..." name b: test_intercept_config.py checks the one key.
        ("plugins.intercept", "x1_ca", str(files.key)),
        ("plugins.intercept", "x1_private_key", str(files.cert)),
        ("plugins.tcp", "idle_timeout", 1e-9),
        ("plugins.tcp", "connect_timeout", 0),
        ("plugins.tls", "idle_timeout", 1e-9),
        ("plugins.tls", "handshake_timeout", 1e-9),
        ("plugins.ws", "handshake_timeout", 1e-9),
        ("plugins.ws", "ping_interval", 1e-9),
        ("plugins.wss", "ping_interval", 1e-9),
        ("plugins.dtls", "handshake_timeout", 1e-9),
        ("plugins.zrtp", "handshake_timeout", 1e-9),
        ("plugins.mikey", "max_clock_skew", 1e-9),
        ("plugins.siprec", "bye_timeout", 1e-9),
        ("plugins.siprec", "bye_timeout", -1.0),
        ("plugins.siprec", "recordpref", "honour"),
        ("plugins.stir_shaken", "fetch_timeout", 1e-9),
        ("plugins.stir_shaken", "freshness", 1e-9),
        ("dns", "timeout", 1e-9),
        ("store", "statement_timeout", 1e-9),
        ("store", "statement_timeout", 0.0004),
    )


def _bound_table(data: dict[str, Any], name: str) -> dict[str, Any]:
    head, _, rest = name.partition(".")
    if head == "trunks":
        return next(t for t in data["trunks"] if t["name"] == rest)  # type: ignore[no-any-return]
    if head == "plugins":
        return data["plugins"][rest]  # type: ignore[no-any-return]
    return data[head]  # type: ignore[no-any-return]


def _leaves(data: dict[str, Any]) -> Iterator[tuple[list[Any], str, str]]:
    """(path to the containing table, table name as an error names it, key) for every key."""
    for name, body in data.items():
        if isinstance(body, list):
            for index, entry in enumerate(body):
                label = f"{name}.{entry['name']}"
                for key in entry:
                    yield [name, index], label, key
            continue
        for key, value in body.items():
            if name == "plugins" and isinstance(value, dict):
                for sub in value:
                    yield [name, key], f"plugins.{key}", sub
            else:
                yield [name], name, key


def _table(data: dict[str, Any], path: list[Any]) -> Any:
    node: Any = data
    for step in path:
        node = node[step]
    return node


def _misspell(rng: random.Random, key: str) -> str:
    chars = list(key)
    i = rng.randrange(len(chars))
    choice = rng.randrange(3)
    if choice == 0 and len(chars) > 1:
        del chars[i]
    elif choice == 1 and len(chars) > 1:
        j = min(i + 1, len(chars) - 1)
        chars[i], chars[j] = chars[j], chars[i]
    else:
        chars.insert(i, rng.choice("aeiou_"))
    spelt = "".join(chars)
    return spelt if spelt != key else key + "s"


def mutations(files: Files, count: int) -> list[Mutation]:
    """``count`` mutations of the seed, the same ones for the same seed."""
    rng = random.Random(f"config-fuzz:{base_seed()}")
    seed = seed_config(files)
    leaves = list(_leaves(seed))
    out: list[Mutation] = []
    while len(out) < count:
        data = json.loads(json.dumps(seed))  # a deep copy (the seed is JSON's types)
        path, table_name, key = leaves[rng.randrange(len(leaves))]
        table = _table(data, path)
        also = frozenset(RELATED.get((table_name, key), ()))
        kind = rng.choice(
            (
                "type",
                "number",
                "string",
                "empty",
                "unknown",
                "misspell",
                "missing",
                "duplicate",
                "list-item",
                "table-type",
                "bad-utf8",
                "bad-toml",
                "trunk-ref",
                "bound",
            )
        )
        expect_key: str | None = key
        line = None
        if kind == "type":
            table[key] = rng.choice(WRONG_TYPES)
            what = f"{key} = {_value(table[key])}"
        elif kind == "number":
            table[key] = rng.choice(NUMBERS)
            what = f"{key} = {_value(table[key])}"
        elif kind == "string":
            table[key] = rng.choice(STRINGS)
            what = f"{key} = {_value(table[key])}"
        elif kind == "empty":
            table[key] = {"str": "", "list": [], "dict": {}}.get(type(table[key]).__name__, "")
            what = f"{key} = {_value(table[key])}"
        elif kind == "list-item":
            value = table[key]
            item = rng.choice((*STRINGS, *NUMBERS, *WRONG_TYPES))
            if isinstance(value, list) and value and rng.random() < 0.2:
                item = rng.choice(value)  # an entry listed twice
            table[key] = [*value, item] if isinstance(value, list) else [item]
            what = f"{key} = {_value(table[key])}"
        elif kind == "unknown":
            table["fuzz_unknown_key"] = 1
            expect_key, what = "fuzz_unknown_key", "an unknown key"
        elif kind == "misspell":
            spelt = _misspell(rng, key)
            if spelt in table:
                continue
            table[spelt] = table.pop(key)
            expect_key, what = spelt, f"{key} spelt {spelt}"
        elif kind == "missing":
            del table[key]
            what = f"{key} left out"
        elif kind == "duplicate":
            entries = data[rng.choice(("trunks", "dialog_watch_groups"))]
            entries.append(dict(entries[0]))
            name = entries[0]["name"]
            section = "trunks" if entries is data["trunks"] else "dialog_watch_groups"
            table_name, expect_key, what = f"{section}.{name}", "name", f"{name} twice"
            also = frozenset({"voicemail", "dids"})  # the copy repeats those too
        elif kind == "trunk-ref":
            trunk = data["trunks"][0]
            spelt = _misspell(rng, trunk["name"])
            if rng.random() < 0.5:
                # A plugin key names a trunk that is not there: the error names that key.
                plugin, key = rng.choice(trunk_name_keys(files))
                data["plugins"][plugin][key] = [*data["plugins"][plugin][key], spelt]
                table_name, expect_key = f"plugins.{plugin}", key
                what = f"{key} = {_value(data['plugins'][plugin][key])}"
            else:
                # The trunk renamed: the keys that named it name nothing (judge()).
                trunk["name"] = spelt
                table_name, expect_key, what = f"trunks.{spelt}", "name", f"name = {spelt!r}"
        elif kind == "bound":
            table_name, expect_key, value = rng.choice(bounds(files))
            _bound_table(data, table_name)[expect_key] = value
            also = frozenset()
            what = f"{expect_key} = {_value(value)}"
        elif kind == "table-type":
            top = rng.choice(sorted(data))
            data[top] = rng.choice(("fuzz", 3, [1, 2], {"x": 1}, [{"x": 1}]))
            table_name, expect_key, what = top, None, f"{top} = {_value(data[top])}"
            if top == "plugins":
                expect_key = None
        else:
            text = to_toml(data).encode()
            lines = text.split(b"\n")
            index = rng.randrange(len(lines) - 1)
            if kind == "bad-utf8":
                bad = rng.choice((b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf"))
                at = rng.randrange(len(lines[index]) + 1)
                lines[index] = lines[index][:at] + bad + lines[index][at:]
                what = f"byte {bad!r} on line {index + 1}"
            else:
                broken = rng.choice(
                    (
                        b"[unclosed",
                        b"key = ",
                        b"= 1",
                        b'"unterminated = 1',
                        b"a = [1,",
                        b"x = 1 2",
                        b"[[",
                        lines[index],
                    )
                )
                lines.insert(index + 1, broken)
                index += 1
                what = f"{broken!r} after line {index}"
                try:
                    tomllib.loads(b"\n".join(lines).decode())
                    continue  # a line repeated may still be TOML (another [[trunks]])
                except tomllib.TOMLDecodeError:
                    pass
            # An array left open is found where the next line fails to continue it.
            late = b"[1," in lines[index]
            out.append(
                Mutation(
                    f"#{len(out)} {kind}: {what}",
                    kind,
                    "",
                    None,
                    b"\n".join(lines),
                    index + 1,
                    late=late,
                )
            )
            continue
        text = to_toml(data).encode()
        out.append(
            Mutation(
                f"#{len(out)} {kind}: [{table_name}] {what}",
                kind,
                table_name,
                expect_key,
                text,
                line,
                also,
            )
        )
    return out


def _table_names(name: str) -> set[str]:
    """What an error about a key of table ``name`` may call it: an entry of an array of tables
    is ``trunks.NAME`` or, before its name is read, ``trunks[INDEX]``."""
    names = {name}
    head, _, _ = name.partition(".")
    if head in ("trunks", "dialog_watch_groups"):
        names.update(f"{head}[{i}]" for i in range(4))
        names.add(head)
    if head == "plugins" and name != "plugins":
        names.add("plugins")  # a plugin table that is not a table is a key of [plugins]
    return names


def judge(mutation: Mutation, path: Path, run: Callable[[Path], None]) -> str | None:
    """None if ``run`` accepted the file or refused it as promised, else what went wrong."""
    try:
        run(path)
    except ConfigError as exc:
        text = str(exc)
        if "Traceback" in text or "\n" in text:
            return f"a ConfigError of several lines: {text!r}"
        if exc.file != str(path) or not text.startswith(str(path)):
            return f"names the wrong file: {text}"
        if (
            mutation.table.startswith("trunks.")
            and mutation.key == "name"
            and exc.table.startswith("plugins.")
            and exc.message.startswith("unknown trunk ")
        ):
            # A trunk renamed: a plugin key that named it (sign_trunks ...) names nothing now.
            return None
        if (
            mutation.key == "voicemail"
            and exc.key == "voicemail"
            and exc.table.startswith("trunks.")
            and f"trunk {mutation.table.removeprefix('trunks.')!r} is the voicemail" in exc.message
        ):
            # A second voicemail trunk: refused at the later of the two in the file, whose
            # error names the other, the one the mutation made voicemail.
            return None
        if mutation.line is not None:
            late = 3 if mutation.late else 1  # an open array is found where it fails to go on
            lines = set(range(mutation.line, mutation.line + late))
            if not any(re.search(rf"\bline {n}\b", text) for n in lines):
                return f"does not name line {mutation.line}: {text}"
            return None
        if (mutation.table, mutation.key) == ("plugins", "enable") and exc.table.startswith(
            "plugins."
        ):
            # enable changed: a plugin's table is now one for a plugin that is not enabled, or a
            # plugin whose table it is refuses it. The table is what the error names.
            return None
        if exc.key is not None and mutation.key is not None and exc.key != mutation.key:
            # A key checked against another (ocsp_responder needs ocsp, [plugins.tls]
            # listener_modes the [sip] listen entries) may be the one named, when the message
            # then names the key that changed.
            if exc.table in _table_names(mutation.table):
                if re.search(rf"\b{mutation.key}\b", exc.message):
                    return None
            elif f"[{mutation.table}] {mutation.key}" in exc.message:
                return None
        if exc.table not in _table_names(mutation.table):
            return f"names table [{exc.table}], not [{mutation.table}]: {text}"
        if exc.key is None:
            if mutation.key is None or exc.table == mutation.key:
                return None  # a table of the wrong type: the table is what is wrong
            return f"names no key: {text}"
        named = set(exc.key.split(", "))  # "a, b: ..." names keys checked together
        if mutation.key is not None and not named & {mutation.key, *mutation.also}:
            return f"names key {exc.key}, not {mutation.key}: {text}"
        return None
    except Exception as exc:
        return f"raised {type(exc).__name__} instead of ConfigError: {exc}"
    if mutation.kind == "trunk-ref":
        return "accepted a trunk name no [[trunks]] table has"
    if mutation.kind == "bound":
        return "accepted a value out of its bounds"
    return None


# -- the tests -----------------------------------------------------------------------------------


def test_the_seed_sets_every_documented_key(files: Files) -> None:
    seed = seed_config(files)
    set_keys: dict[str, set[str]] = {}
    for path, table_name, key in _leaves(seed):
        name = table_name if path[0] != "trunks" and path[0] != "dialog_watch_groups" else path[0]
        set_keys.setdefault(name, set()).add(key)
    for table, keys in documented_keys().items():
        missing = {k for k in keys if (table, k) not in NOT_IN_TABLE} - set_keys.get(table, set())
        if table == "plugins":
            missing -= {"enable"} if "enable" in seed["plugins"] else set()
        assert not missing, f"[{table}] {sorted(missing)}: documented, not set by seed_config()"


def test_the_seed_sets_every_key_of_every_table(files: Files, tmp_path: Path) -> None:
    """Keys the documentation may not name yet (the check above cannot see them)."""
    seed = seed_config(files)
    path = tmp_path / "voipgw.toml"
    path.write_text(to_toml(seed))
    config = from_toml(path)
    classes: dict[str, type] = {
        "gateway": cfg.GatewaySection,
        "sip": cfg.SipSection,
        "media": cfg.MediaSection,
        "store": cfg.StoreSection,
        "numbering": cfg.NumberingPlan,
        "dns": cfg.DnsSection,
        "feature_codes": cfg.FeatureCodes,
        "presence": cfg.PresenceSection,
        "registrar": cfg.RegistrarSection,
        "trunks": cfg.TrunkConfig,
        "dialog_watch_groups": cfg.DialogWatchGroup,
    }
    classes.update(
        {f"plugins.{name}": type(value) for name, value in load_plugins(config).configs.items()}
    )
    assert set(classes) - {"trunks", "dialog_watch_groups"} == {
        name for name, body in seed.items() if isinstance(body, dict) and name != "plugins"
    } | {f"plugins.{name}" for name, body in seed["plugins"].items() if isinstance(body, dict)}
    for table, cls in classes.items():
        if table in ("trunks", "dialog_watch_groups"):
            written = set(seed[table][0])
        elif table.startswith("plugins."):
            written = set(seed["plugins"][table.partition(".")[2]])
        else:
            written = set(seed[table])
        fields = {field.name for field in attrs.fields(cls)}
        assert fields <= written, f"[{table}] {sorted(fields - written)}: not set by seed_config()"


def test_the_seed_names_trunks_in_every_key_that_names_trunks(files: Files) -> None:
    """The trunk-ref mutations reach every such key: they are marked, and the seed sets them."""
    assert trunk_name_keys(files) == (
        ("recorder", "trunks"),
        ("siprec", "trunks"),
        ("stir_shaken", "sign_trunks"),
        ("stir_shaken", "verify_trunks"),
    )
    seed = seed_config(files)
    for plugin, key in trunk_name_keys(files):
        assert seed["plugins"][plugin][key], (plugin, key)


def test_the_seed_is_valid(files: Files, tmp_path: Path) -> None:
    path = tmp_path / "voipgw.toml"
    path.write_text(to_toml(seed_config(files)))
    check_config(path)


def test_mutated_configs_are_accepted_or_name_file_table_and_key(
    files: Files, tmp_path: Path
) -> None:
    failures = []
    for mutation in mutations(files, examples(DEFAULT_MUTATIONS)):
        path = tmp_path / "voipgw.toml"
        path.write_bytes(mutation.text)
        problem = judge(mutation, path, check_config)
        if problem is not None:
            failures.append(f"{mutation.description}: {problem}")
    assert not failures, f"{len(failures)} bad outcomes:\n" + "\n".join(failures)


def test_every_bound_is_refused_naming_its_table_and_key(files: Files, tmp_path: Path) -> None:
    """Each of :func:`bounds`, not only those the random mutations draw."""
    failures = []
    for table, key, value in bounds(files):
        data = seed_config(files)
        _bound_table(data, table)[key] = value
        mutation = Mutation(
            f"[{table}] {key} = {_value(value)}", "bound", table, key, to_toml(data).encode()
        )
        path = tmp_path / "voipgw.toml"
        path.write_bytes(mutation.text)
        problem = judge(mutation, path, check_config)
        if problem is not None:
            failures.append(f"{mutation.description}: {problem}")
    assert not failures, "\n".join(failures)


def test_check_config_says_a_sample_of_them_in_one_line(files: Files, tmp_path: Path) -> None:
    """``voipgw check-config`` as an operator runs it: a refused file is one line on stderr
    (one per unknown trunk name) and exit status 2 (docs/configuration.md), an accepted one
    "OK"; never a traceback."""
    rng = random.Random(f"config-fuzz-cli:{base_seed()}")
    pool = mutations(files, examples(DEFAULT_MUTATIONS))
    # Mostly mistakes no file gets past (so that the refusal is what is looked at), one other.
    refused = [m for m in pool if m.kind in ("unknown", "misspell", "bad-toml", "bad-utf8")]
    sample = [*rng.sample(refused, SUBPROCESS_SAMPLE - 1), rng.choice(pool)]
    for index, mutation in enumerate(sample):
        path = tmp_path / f"cli-{index}.toml"
        path.write_bytes(mutation.text)
        run = subprocess.run(
            [sys.executable, "-m", "gateway", "check-config", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Traceback" not in run.stderr, (mutation.description, run.stderr)
        if run.returncode == 0:
            assert mutation.kind not in ("unknown", "misspell", "bad-toml", "bad-utf8")
            assert run.stdout.startswith(f"{path}: OK"), (mutation.description, run.stdout)
            continue
        assert run.returncode == 2, (mutation.description, run.returncode, run.stderr)
        assert run.stdout == ""
        lines = run.stderr.splitlines()
        if mutation.kind != "trunk-ref":
            assert len(lines) == 1, (mutation.description, run.stderr)
        # A trunk renamed: one line per key that named it (check-config says every one).
        for line in lines:
            assert line.startswith(f"voipgw: configuration error: {path}: "), line
