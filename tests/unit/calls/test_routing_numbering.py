"""Routing with a numbering plan ([numbering], gateway/core/calls/numbering.py): what accounts
dial is routed by its E.164 reading and written as each trunk wants it; what a trunk sends
finds its DID however either is written; a trunk in another country reads and writes by its
own plan. Without [numbering] the same configuration routes as before (test_routing.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.calls.numbering import NumberingPlan
from gateway.core.calls.routing import GatewayDirectory, default_route
from gateway.core.config import ConfigError, TrunkConfig, from_mapping
from gateway.core.interfaces import Caller, Directory
from gateway.core.sip.grammar import parse_uri_untrusted
from gateway.core.sip.message import Request
from gateway.core.store.interface import Binding, BindingFlow
from gateway.core.store.sqlite import SqliteStore
from gateway.core.transport.flows import FlowTable

NOW = 1_750_000_000.0
BERLIN = NumberingPlan(country_code="49", area_code="30")

CARRIER = TrunkConfig(
    name="carrier",
    address="udp:192.0.2.10:5060",
    prefixes=("+49", "110", "112"),
    number_format="national",
    # As operators write them: one in E.164, one as the carrier delivers it.
    dids={"+4930123456": "alice", "030123457": "bob"},
    caller_id="030123450",
)
UK = TrunkConfig(
    name="uk",
    address="udp:198.51.100.44:5060",
    prefixes=("+44",),
    number_format="national",
    country_code="44",
    dids={"02079460000": "alice"},
)
WORLD = TrunkConfig(
    name="world", address="udp:203.0.113.1:5060", prefixes=("+",), number_format="international"
)
TRUNKS = (CARRIER, UK, WORLD)
ACCOUNT = Caller(kind="account", name="bob")


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[GatewayDirectory]:
    store = SqliteStore.open(tmp_path)
    for name in ("alice", "bob"):
        store.accounts_add(name, "pw", "voipgw.local")
        store.upsert_binding(
            Binding(
                aor=f"sip:{name}@voip.example.com",
                key=name,
                account=name,
                contact=f"sip:{name}@10.0.0.5:5060",
                expires_at=NOW + 600,
                call_id=f"reg-{name}",
                cseq=1,
                flow=BindingFlow("udp", "127.0.0.1:5060", "10.0.0.5:5060"),
            )
        )
    yield GatewayDirectory(
        store, FlowTable(), TRUNKS, frozenset({"voip.example.com"}), lambda: NOW, BERLIN
    )
    store.close()


def invite(uri: str) -> Request:
    return Request(method="INVITE", uri=parse_uri_untrusted(uri))


def routed_uris(directory: GatewayDirectory, caller: Caller, uri: str) -> list[str]:
    decision = default_route(invite(uri), caller, directory)
    assert decision.reject_status is None, decision.reject_reason
    return [target.uri for target in decision.targets]


@pytest.mark.parametrize(
    ("dialled", "sent"),
    [
        ("sip:030987654@voip.example.com", "sip:030987654@192.0.2.10:5060;transport=udp"),
        ("sip:987654@voip.example.com", "sip:030987654@192.0.2.10:5060;transport=udp"),
        ("sip:0049-30-987654@voip.example.com", "sip:030987654@192.0.2.10:5060;transport=udp"),
        ("tel:+49-30-987654", "sip:030987654@192.0.2.10:5060;transport=udp"),
        ("tel:987654;phone-context=+4989", "sip:089987654@192.0.2.10:5060;transport=udp"),
        # Another country: its own trunk, written in the UK's national format.
        ("sip:00442079460001@voip.example.com", "sip:02079460001@198.51.100.44:5060;transport=udp"),
        # Elsewhere: the default trunk, international format.
        ("sip:0033142685300@voip.example.com", "sip:0033142685300@203.0.113.1:5060;transport=udp"),
        # Emergency: digits kept, its own prefix.
        ("sip:112@voip.example.com", "sip:112@192.0.2.10:5060;transport=udp"),
    ],
)
def test_an_account_dialling_is_routed_by_e164_and_written_for_the_trunk(
    directory: GatewayDirectory, dialled: str, sent: str
) -> None:
    assert routed_uris(directory, ACCOUNT, dialled) == [sent]


def test_an_account_name_still_wins_over_a_number(directory: GatewayDirectory) -> None:
    assert routed_uris(directory, ACCOUNT, "sip:alice@voip.example.com") == [
        "sip:alice@10.0.0.5:5060"
    ]


@pytest.mark.parametrize(
    ("called", "account"),
    [
        ("sip:030123456@192.0.2.1", "alice"),  # national; the DID is written E.164
        ("sip:+4930123456@192.0.2.1", "alice"),
        ("sip:004930123456@192.0.2.1", "alice"),
        ("sip:123456@192.0.2.1", "alice"),  # a subscriber number in the trunk's area
        ("sip:+4930123457@192.0.2.1", "bob"),  # E.164; the DID is written national
        ("tel:030-123457", "bob"),
    ],
)
def test_a_trunks_called_number_finds_its_did_however_either_is_written(
    directory: GatewayDirectory, called: str, account: str
) -> None:
    caller = Caller(kind="trunk", name="carrier")
    assert routed_uris(directory, caller, called) == [f"sip:{account}@10.0.0.5:5060"]


def test_a_foreign_trunk_reads_its_numbers_by_its_own_plan(directory: GatewayDirectory) -> None:
    caller = Caller(kind="trunk", name="uk")
    # The UK carrier's national 020 7946 0000 is +44 20 7946 0000, alice's DID there.
    assert routed_uris(directory, caller, "sip:02079460000@192.0.2.1") == [
        "sip:alice@10.0.0.5:5060"
    ]
    assert directory.to_e164("02079460000", trunk="uk") == "+442079460000"
    assert directory.to_e164("02079460000", trunk="carrier") == "+492079460000"
    # Unknown trunk or none: how our accounts dial.
    assert directory.to_e164("02079460000") == "+492079460000"
    assert directory.to_e164("02079460000", trunk="nobody") == "+492079460000"


def test_an_unknown_did_is_still_404(directory: GatewayDirectory) -> None:
    decision = default_route(
        invite("sip:030555@192.0.2.1"), Caller(kind="trunk", name="carrier"), directory
    )
    assert decision.reject_status == 404


def test_written_for_a_trunk(directory: GatewayDirectory) -> None:
    assert directory.written_for("carrier", "+4930123450") == "030123450"
    assert directory.written_for("world", "+4930123450") == "004930123450"
    assert directory.written_for("uk", "+4930123450") == "004930123450"
    assert directory.written_for("carrier", "112") == "112"
    assert directory.written_for("nobody", "+4930123450") == "+4930123450"


def test_the_directory_with_numbering_still_satisfies_the_protocol(
    directory: GatewayDirectory,
) -> None:
    seen: Directory = directory  # mypy checks the structural type
    assert seen.to_e164("030123456") == "+4930123456"
    assert seen.written_for("carrier", "+4930123456") == "030123456"


def test_strip_and_add_prefix_apply_after_the_number_format(tmp_path: Path) -> None:
    trunk = TrunkConfig(
        name="pbx",
        address="udp:192.0.2.50:5060",
        prefixes=("+49",),
        number_format="national",
        strip_prefix=1,
        add_prefix="9",  # the PBX's outside-line digit, in front of the national number
    )
    store = SqliteStore.open(tmp_path)
    try:
        directory = GatewayDirectory(store, FlowTable(), (trunk,), frozenset(), lambda: NOW, BERLIN)
        target = directory.trunk_target("pbx", "+4930987654")
        assert target is not None
        assert target.uri == "sip:930987654@192.0.2.50:5060;transport=udp"
    finally:
        store.close()


def test_config_gives_each_trunk_its_plan() -> None:
    config = from_mapping(
        {
            "numbering": {"country_code": "49", "area_code": "30", "short_codes": ["112"]},
            "trunks": [
                {"name": "de", "address": "udp:192.0.2.1:5060"},
                {"name": "uk", "address": "udp:192.0.2.2:5060", "country_code": "44"},
                {"name": "muc", "address": "udp:192.0.2.3:5060", "area_code": "89"},
            ],
        }
    )
    de, uk, muc = config.trunks
    assert config.numbering_of(de) == config.numbering
    assert config.numbering_of(uk).country_code == "44"
    assert config.numbering_of(uk).area_code == ""  # Berlin's area is not the UK's
    assert config.numbering_of(uk).short_codes == ("112",)
    assert config.numbering_of(muc).to_e164("123456") == "+4989123456"


def test_two_dids_that_are_one_number_for_two_accounts_are_refused() -> None:
    data = {
        "numbering": {"country_code": "49", "area_code": "30"},
        "trunks": [
            {
                "name": "carrier",
                "address": "udp:192.0.2.1:5060",
                "dids": {"+4930123456": "alice", "030123456": "bob", "0301234567": "bob"},
            }
        ],
    }
    with pytest.raises(ConfigError, match=r"\[trunks.carrier\] dids: '\+4930123456' \(alice\)"):
        from_mapping(data, file="f.toml")
    data["trunks"][0]["dids"] = {"+4930123456": "alice", "030123456": "alice"}  # type: ignore[index]
    from_mapping(data, file="f.toml")  # the same account twice is only redundant


def test_a_short_code_goes_to_a_trunk_as_dialled_whatever_its_prefixes(tmp_path: Path) -> None:
    trunk = TrunkConfig(
        name="pbx",
        address="udp:192.0.2.50:5060",
        prefixes=("+49", "112"),
        number_format="national",
        strip_prefix=3,
        add_prefix="0",
    )
    store = SqliteStore.open(tmp_path)
    try:
        directory = GatewayDirectory(store, FlowTable(), (trunk,), frozenset(), lambda: NOW, BERLIN)
        emergency = directory.trunk_target("pbx", "112")
        assert emergency is not None and emergency.uri.startswith("sip:112@")
        number = directory.trunk_target("pbx", "+4930987654")
        assert number is not None and number.uri.startswith("sip:0987654@")  # strip 3, add 0
    finally:
        store.close()
