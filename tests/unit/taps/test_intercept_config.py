"""``[plugins.intercept]``: what a bad table is told, and what a good one registers."""

from __future__ import annotations

from pathlib import Path

import pytest

import gateway.plugins.taps.intercept as intercept_plugin
from gateway.core.config import ConfigError, from_mapping
from gateway.core.plugins import load_plugins
from tests.interop.harness.pki import TestPki


@pytest.fixture
def credentials(tmp_path: Path) -> dict[str, object]:
    pki = TestPki(tmp_path / "pki")
    ca = pki.ca("X1 CA")
    server = ca.issue("gw")
    return {
        "x1_certificate": str(server.certificate),
        "x1_private_key": str(server.key),
        "x1_ca": str(ca.certificate),
        "delivery_certificate": str(server.certificate),
        "delivery_private_key": str(server.key),
        "delivery_ca": str(ca.certificate),
        "state_dir": str(tmp_path / "state"),
    }


def load(table: dict[str, object]) -> object:
    config = from_mapping({"plugins": {"enable": ["intercept"], "intercept": table}})
    return load_plugins(config, extra=[("intercept", intercept_plugin)], installed={})


@pytest.mark.parametrize(
    ("change", "key", "reason"),
    [
        ({"x1_listen": "localhost:8443"}, "x1_listen", "ADDRESS:PORT"),
        ({"x1_ca": ""}, "x1_ca", "required"),
        ({"delivery_private_key": ""}, "delivery_private_key", "required while delivery_tls"),
        ({"x1_certificate": "/nonexistent/gw.crt"}, "x1_certificate", "no such file"),
        ({"pdu_version": 70000}, "pdu_version", "0 to 65535"),
        ({"keepalive_interval": 0.1}, "keepalive_interval", "1 to 3600"),
        ({"queue": 5}, "queue", "10 to 1000000"),
        ({"ne_identifier": ""}, "ne_identifier", "must not be empty"),
        ({"ne_identifier": "é" * 128}, "ne_identifier", "at most 255 octets"),
        ({"interception_point_id": "é" * 128}, "interception_point_id", "at most 255 octets"),
        ({"report_url": "http://10.0.9.2/X1"}, "report_url", "expected https://HOST"),
        ({"report_url": "https://10.0.9.2:99999/"}, "report_url", "expected https://HOST"),
        ({"report_url": "https://u:p@10.0.9.2/"}, "report_url", "no user, password"),
        ({"report_url": "https://10.0.9.2/"}, "report_admf_identifier", "required with"),
        ({"report_interval": 0.5}, "report_interval", "1 to 3600"),
        ({"admf_certificates": {"admf-1": "cn = admf"}}, "admf_certificates", "RFC 4514"),
        ({"admf_certificates": {"": "CN=admf-1"}}, "admf_certificates", "empty admfIdentifier"),
        (
            {"admf_identifiers": ["admf-1", "admf-2"], "admf_certificates": {"admf-1": "CN=a"}},
            "admf_certificates",
            "'admf-2' is in one of admf_certificates and admf_identifiers only",
        ),
        (
            {"report_url": "https://10.0.9.2/", "admf_identifiers": ["a"], "report_ca": "/no.pem"},
            "report_ca",
            "no such file",
        ),
    ],
)
def test_a_bad_table_names_the_key(
    credentials: dict[str, object], change: dict[str, object], key: str, reason: str
) -> None:
    with pytest.raises(ConfigError, match=r"plugins.intercept") as refused:
        load({**credentials, **change})
    assert key in str(refused.value) and reason in str(refused.value)


def test_a_key_that_does_not_match_its_certificate_is_refused_at_start(
    credentials: dict[str, object], tmp_path: Path
) -> None:
    other = TestPki(tmp_path / "other").ca("Other").issue("other")
    with pytest.raises(ConfigError) as refused:
        load({**credentials, "x1_private_key": str(other.key)})
    assert refused.value.key == "x1_private_key"
    assert f"cannot be loaded with x1_certificate ({other.key}: " in refused.value.message


@pytest.mark.parametrize(
    ("key", "what"),
    [
        ("x1_certificate", "a key file"),
        ("x1_private_key", "a certificate file"),
        ("x1_ca", "a key file"),
        ("delivery_certificate", "a key file"),
        ("delivery_private_key", "a certificate file"),
        ("delivery_ca", "a key file"),
    ],
)
def test_a_file_that_does_not_load_is_named_by_its_own_key(
    credentials: dict[str, object], key: str, what: str, tmp_path: Path
) -> None:
    """Not the three keys of its group ("x1_certificate, x1_private_key, x1_ca"): the
    operator is told which file to replace."""
    other = TestPki(tmp_path / "other").ca("Other").issue("other")
    wrong = other.key if what == "a key file" else other.certificate
    with pytest.raises(ConfigError) as refused:
        load({**credentials, key: str(wrong)})
    assert refused.value.table == "plugins.intercept"
    assert refused.value.key == key
    assert str(wrong) in refused.value.message


def test_plain_tcp_delivery_needs_no_delivery_credentials(credentials: dict[str, object]) -> None:
    table = {k: v for k, v in credentials.items() if not k.startswith("delivery_")}
    plugins = load({**table, "delivery_tls": False})
    tap = plugins.media_taps.get("intercept")  # type: ignore[attr-defined]
    assert isinstance(tap, intercept_plugin.Interception)
    assert (
        tap.provisioning.path == Path(str(credentials["state_dir"])) / "intercept" / "tasks.sqlite"
    )


def test_enabling_it_without_a_table_is_an_error_that_says_so() -> None:
    with pytest.raises(ConfigError, match=r"\[plugins.intercept\] x1_certificate: required"):
        load_plugins(
            from_mapping({"plugins": {"enable": ["intercept"]}}),
            extra=[("intercept", intercept_plugin)],
            installed={},
        )


def test_reports_are_off_without_a_url_and_reuse_the_x1_credentials_with_one(
    credentials: dict[str, object],
) -> None:
    without = load(credentials).media_taps.get("intercept")  # type: ignore[attr-defined]
    assert isinstance(without, intercept_plugin.Interception) and without.reports is None
    table = {**credentials, "report_url": "https://127.0.0.1:8444/X1", "admf_identifiers": ["a"]}
    tap = load(table).media_taps.get("intercept")  # type: ignore[attr-defined]
    assert isinstance(tap, intercept_plugin.Interception) and tap.reports is not None
    assert (tap.reports.endpoint.host, tap.reports.endpoint.port) == ("127.0.0.1", 8444)
    assert tap.reports.endpoint.path == "/X1"
    assert tap.config.report_admf == "a"
    assert tap.config._file("report_ca") == credentials["x1_ca"]


def test_a_report_key_that_does_not_match_its_certificate_is_refused_at_start(
    credentials: dict[str, object], tmp_path: Path
) -> None:
    other = TestPki(tmp_path / "other").ca("Other").issue("other")
    table = {
        **credentials,
        "report_url": "https://127.0.0.1/",
        "report_admf_identifier": "admf-1",
        "report_private_key": str(other.key),
    }
    with pytest.raises(
        ConfigError, match="report_private_key: cannot be loaded with report_certificate"
    ):
        load(table)


def test_admf_certificates_name_the_admfs_taken_and_reported_to(
    credentials: dict[str, object],
) -> None:
    table = {
        **credentials,
        "admf_certificates": {"admf-1": "CN=admf-1,O=Example LI", "admf-2": "CN=admf-2"},
        "report_url": "https://127.0.0.1:8444/X1",
    }
    tap = load(table).media_taps.get("intercept")  # type: ignore[attr-defined]
    assert isinstance(tap, intercept_plugin.Interception)
    assert tap.x1.admf_certificates == {"admf-1": "CN=admf-1,O=Example LI", "admf-2": "CN=admf-2"}
    assert tap.x1.admf_identifiers == ("admf-1", "admf-2")
    assert tap.config.report_admf == "admf-1"


def test_a_node_on_a_shared_store_is_warned_on_the_taps_logger_not_refused(
    credentials: dict[str, object], caplog: pytest.LogCaptureFixture
) -> None:
    from gateway.core.gateway import Gateway
    from gateway.core.store.errors import StoreUnavailable

    def gateway(table: dict[str, object], backend: str) -> Gateway:
        store = {"backend": backend, "dsn": "host=127.0.0.1 port=1 dbname=voipgw"}
        if backend == "sqlite":
            store = {}
        config = from_mapping(
            {
                "sip": {"listen": []},
                "store": store,
                "plugins": {"enable": ["intercept"], "intercept": table},
            }
        )
        plugins = load_plugins(config, extra=[("intercept", intercept_plugin)], installed={})
        built = Gateway(config, plugins)
        built.check()  # a warning is no ConfigError: the node starts
        return built

    unnamed = gateway(credentials, "postgresql")
    assert list(unnamed.node_warnings) == ["intercept"]
    assert unnamed.node_warnings["intercept"][0].startswith("ne_identifier: not written")
    assert gateway({**credentials, "ne_identifier": "voipgw"}, "postgresql").node_warnings == {}
    assert gateway(credentials, "sqlite").node_warnings == {}

    import trio

    async def serve() -> None:
        # The store at port 1 never answers: serve stops there, after the warnings.
        with trio.move_on_after(5), pytest.raises(StoreUnavailable):
            await unnamed.serve()

    caplog.set_level("WARNING")
    trio.run(serve)
    said = [
        (record.name, record.getMessage())
        for record in caplog.records
        if "ne_identifier" in record.getMessage()
    ]
    assert len(said) == 1, said
    assert said[0][0] == "gateway.plugins.taps.intercept"
    assert said[0][1].startswith("[plugins.intercept] ne_identifier: not written")


def test_an_x1_port_of_0_is_an_error_for_check_config(credentials: dict[str, object]) -> None:
    """The system would choose the port at each start: the ADMF, configured with ours, would
    not know where to connect. ``voipgw run`` warns and starts (the tests bind port 0)."""
    config = load({**credentials, "x1_listen": "127.0.0.1:0"}).configs["intercept"]  # type: ignore[attr-defined]
    assert config.config_warnings() == [
        "x1_listen: expected a port 1-65535 the ADMF is configured with, got '127.0.0.1:0' "
        "(port 0: the system chooses one at each start)"
    ]
    assert load(credentials).configs["intercept"].config_warnings() == []  # type: ignore[attr-defined]
