"""Every ```toml block of README.md and docs/*.md is a configuration ``voipgw check-config``
accepts, or a fragment of one.

Each block goes through what ``voipgw check-config`` runs (gateway/core/cli.py): the core tables
structured by ``config.from_mapping``, every enabled plugin's ``[plugins.NAME]`` table by the
plugin manager (``load_plugins``: unknown keys, wrong types and bad values are errors there, and
plugins that read files check them), and ``Gateway.check``. A failure names the doc file and the
line of the block's opening fence.

A fragment gets only what it cannot stand without:

- no ``[plugins] enable``: the default plugins plus every plugin the block gives a table (a block
  that has ``enable`` keeps it, so one listing no plugin its table configures fails);
- ``[gateway] state_dir`` in ``tmp_path`` (the check looks at it only if it exists);
- operator files, the block's absolute paths under ``/etc/``, are throwaway files at the same
  path under ``tmp_path``: a ``.key`` an EC P-256 private key, a ``.crt`` or ``.pem`` a
  self-signed CA certificate of that key, anything else a one-line secret (a password file), all
  mode 0600. The plugins still read them: a certificate key naming a ``.key`` file fails.

A block whose top-level table is ``[project...]`` is a plugin's pyproject.toml: its entry points
must be in the group voipgw loads plugins from.

Keys the text names in code (`` `[sip] overload_queue_delay` ``) must exist in that table too.
"""

from __future__ import annotations

import datetime
import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.core import config as cfg
from gateway.core.calls.numbering import NumberingPlan
from gateway.core.gateway import Gateway
from gateway.core.plugins import ENTRY_POINT_GROUP, PluginError, discover, load_plugins

ROOT = Path(__file__).parents[3]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\S*)\s*$")


@attrs.frozen
class Block:
    doc: str  # relative to the repository
    line: int  # 1-based line of the opening fence
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def toml_blocks(path: Path) -> list[Block]:
    """The ```toml blocks of a Markdown file, indented ones (in list items) included."""
    blocks: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not _FENCE.match(lines[end]):
            end += 1
        if opening["lang"] == "toml":
            indent = len(opening["indent"])
            text = "\n".join(line[indent:] for line in lines[index + 1 : end])
            blocks.append(Block(str(path.relative_to(ROOT)), index + 1, text))
        index = end + 1
    return blocks


BLOCKS = [block for doc in DOCS for block in toml_blocks(doc)]


@attrs.frozen
class OperatorFiles:
    """What the throwaway files hold; each is written where ``root`` mirrors its path."""

    root: Path
    key: bytes
    certificate: bytes
    crl: bytes  # a current CRL that the certificate (a CA) signed: [plugins.tls] crl_files

    def stand_in(self, path: str) -> str:
        local = self.root / path.lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        if path.endswith(".key"):
            local.write_bytes(self.key)
        elif path.endswith((".crt", ".pem")):
            local.write_bytes(self.certificate)
        elif path.endswith(".crl"):
            local.write_bytes(self.crl)
        else:
            local.write_text("not a real secret\n")
        local.chmod(0o600)
        return str(local)


def make_operator_files(root: Path) -> OperatorFiles:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "docs.example")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("docs.example")]), False)
        .sign(key, hashes.SHA256())
    )
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(name)
        .last_update(now - datetime.timedelta(hours=1))
        .next_update(now + datetime.timedelta(days=7))
        .sign(key, hashes.SHA256())
    )
    return OperatorFiles(
        root,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        certificate.public_bytes(serialization.Encoding.PEM),
        crl.public_bytes(serialization.Encoding.PEM),
    )


def _with_files(value: Any, files: OperatorFiles) -> Any:
    if isinstance(value, dict):
        return {key: _with_files(item, files) for key, item in value.items()}
    if isinstance(value, list):
        return [_with_files(item, files) for item in value]
    if isinstance(value, str) and value.startswith("/etc/"):
        return files.stand_in(value)
    return value


def complete(data: dict[str, Any], tmp_path: Path, files: OperatorFiles) -> dict[str, Any]:
    """The configuration a fragment stands for (see the module docstring)."""
    data = _with_files(data, files)
    plugins = dict(data.get("plugins", {}))
    if "enable" not in plugins:
        configured = [name for name, value in plugins.items() if isinstance(value, dict)]
        plugins["enable"] = [*cfg.DEFAULT_PLUGINS] + [
            name for name in configured if name not in cfg.DEFAULT_PLUGINS
        ]
    data["plugins"] = plugins
    gateway = dict(data.get("gateway", {}))
    gateway.setdefault("state_dir", str(tmp_path / "state"))
    data["gateway"] = gateway
    return data


def check_block(block: Block, tmp_path: Path) -> None:
    """Raise AssertionError naming ``block.where`` when ``voipgw check-config`` would refuse the
    configuration the block stands for (or warn about it)."""
    try:
        data = tomllib.loads(block.text)
    except tomllib.TOMLDecodeError as exc:
        raise AssertionError(f"{block.where}: not valid TOML: {exc}") from None
    if "project" in data:
        groups = data["project"].get("entry-points", {})
        assert list(groups) == [ENTRY_POINT_GROUP], (
            f"{block.where}: a plugin's entry points go in [project.entry-points."
            f'"{ENTRY_POINT_GROUP}"], not {list(groups)}'
        )
        for name, target in groups[ENTRY_POINT_GROUP].items():
            assert isinstance(target, str) and target, f"{block.where}: entry point {name!r}"
        return
    if data.get("store", {}).get("backend") == "postgresql":
        pytest.importorskip("psycopg", reason="the postgresql extra checks the store's DSN")
    files = make_operator_files(tmp_path / "files")
    try:
        config = cfg.from_mapping(complete(data, tmp_path, files), file=block.where)
        plugins = load_plugins(config)
        gateway = Gateway(config, plugins)
        gateway.check()
    except (cfg.ConfigError, PluginError) as exc:
        raise AssertionError(f"{block.where}: {exc}") from None
    # What check-config refuses beyond check()'s first error (cmd_check_config): a plugin key
    # naming a trunk no [[trunks]] table has, a value `run` only warns of. An operator copies
    # an example into a file and runs check-config on it: it must pass there, not only here.
    errors = [str(error) for error in gateway.check_errors]
    assert not errors, f"{block.where}: check-config refuses: {errors}"
    warnings = [
        *cfg.listener_warnings(config, plugins.transports.names()),
        *cfg.did_warnings(config),
    ]
    assert not warnings, f"{block.where}: check-config warns: {warnings}"


def test_the_docs_have_their_examples() -> None:
    # The extraction finds what is there: a README example and the reference's tables.
    assert any(block.doc == "README.md" for block in BLOCKS)
    assert len(BLOCKS) >= 20
    assert any(block.doc == "docs/tls.md" and block.text.startswith("[sip]") for block in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.where for block in BLOCKS])
def test_example_is_a_valid_configuration(block: Block, tmp_path: Path) -> None:
    check_block(block, tmp_path)


# The check itself: each kind of mistake an example could hold fails it, naming the place.
README_EXAMPLE = next(block for block in BLOCKS if block.doc == "README.md")
TLS_FRAGMENT = next(block for block in BLOCKS if "ca_bundles" in block.text)
RECORDER_EXAMPLE = next(block for block in BLOCKS if "[plugins.recorder]" in block.text)
MISTAKES = [
    ("unknown key", README_EXAMPLE, "[media]\n", "[media]\nrtp_ports = 1\n", "rtp_ports"),
    ("wrong type", README_EXAMPLE, '"30000-39999"', "30000", "ports"),
    ("bad value", README_EXAMPLE, '"30000-39999"', '"39999-30000"', "ports"),
    ("unknown plugin", README_EXAMPLE, "enable = [", 'enable = ["tcpp", ', "tcpp"),
    ("plugin's key", TLS_FRAGMENT, "peer_modes", "peer_mode", "peer_mode"),
    ("plugin's value", TLS_FRAGMENT, '"server-only"', '"server"', "mode"),
    ("a file a key", TLS_FRAGMENT, "carrier-ca.pem", "carrier-ca.key", "ca.key holds no PEM"),
    ("not TOML", TLS_FRAGMENT, "mode =", "mode", "not valid TOML"),
    ("unknown trunk", RECORDER_EXAMPLE, 'trunks = ["carrier"]', 'trunks = ["carier"]', "carier"),
    ("no listener", README_EXAMPLE, "listen = [", "listen = [] # ", "[sip] listen is empty"),
]


@pytest.mark.parametrize(
    ("block", "old", "new", "named"),
    [case[1:] for case in MISTAKES],
    ids=[case[0] for case in MISTAKES],
)
def test_a_wrong_example_fails_naming_doc_and_line(
    block: Block, old: str, new: str, named: str, tmp_path: Path
) -> None:
    assert old in block.text
    wrong = attrs.evolve(block, text=block.text.replace(old, new, 1))
    with pytest.raises(AssertionError) as failure:
        check_block(wrong, tmp_path)
    message = str(failure.value)
    assert message.startswith(f"{block.doc}:{block.line}: ")
    assert named in message


def test_a_table_for_a_plugin_the_block_does_not_enable_fails(tmp_path: Path) -> None:
    block = Block("docs/example.md", 7, '[plugins]\nenable = ["udp"]\n\n[plugins.tls]\n')
    with pytest.raises(AssertionError, match=r"^docs/example.md:7: .*plugins\.tls"):
        check_block(block, tmp_path)


# Keys named in running text: "`[sip] overload_queue_delay`", "`[numbering] country_code = "49"`".
_INLINE_KEY = re.compile(r"`\[\[?(?P<table>[a-z_]+(?:\.[a-z_]+)?)\]\]?\s+(?P<key>[a-z_][a-z0-9_]*)")
CORE_TABLES: dict[str, type] = {
    "gateway": cfg.GatewaySection,
    "sip": cfg.SipSection,
    "media": cfg.MediaSection,
    "store": cfg.StoreSection,
    "plugins": cfg.PluginsSection,
    "numbering": NumberingPlan,
    "feature_codes": cfg.FeatureCodes,
    "dns": cfg.DnsSection,
    "presence": cfg.PresenceSection,
    "registrar": cfg.RegistrarSection,
    "trunks": cfg.TrunkConfig,  # also `[trunks.NAME] key`, as errors name a trunk's table
    "dialog_watch_groups": cfg.DialogWatchGroup,
}
INLINE_KEYS = [
    Block(str(doc.relative_to(ROOT)), text.count("\n", 0, match.start()) + 1, match[0])
    for doc in DOCS
    for text in [doc.read_text()]
    for match in _INLINE_KEY.finditer(text)
]


def _table_class(table: str) -> type | None:
    head, _, name = table.partition(".")
    if head != "plugins" or not name:
        return CORE_TABLES.get(head)
    plugin = discover().get(name)
    if plugin is None:
        return None
    module = importlib.import_module(plugin.value.partition(":")[0])
    declared: type | None = getattr(module, "gateway_plugin_config", lambda: None)()
    return declared


def test_the_docs_name_keys_in_their_text() -> None:
    assert any(block.text == "`[sip] overload_queue_delay" for block in INLINE_KEYS)


@pytest.mark.parametrize("mention", INLINE_KEYS, ids=[m.where for m in INLINE_KEYS])
def test_a_key_named_in_the_text_exists(mention: Block) -> None:
    match = _INLINE_KEY.match(mention.text)
    assert match is not None
    cls = _table_class(match["table"])
    assert cls is not None, f"{mention.where}: no table [{match['table']}]"
    assert match["key"] in attrs.fields_dict(cls), (
        f"{mention.where}: [{match['table']}] has no key {match['key']!r}"
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("`[sip] overload_delay", "[sip] has no key 'overload_delay'"),
        ("`[plugins.tls] modes", "[plugins.tls] has no key 'modes'"),
        ("`[trunks.carrier] allowed_source", "[trunks.carrier] has no key"),
        ("`[siip] listen", "no table [siip]"),
        ("`[plugins.nope] listen", "no table [plugins.nope]"),
    ],
)
def test_a_wrong_key_in_the_text_fails_naming_the_place(text: str, named: str) -> None:
    with pytest.raises(AssertionError, match=rf"^README\.md:9: {re.escape(named)}"):
        test_a_key_named_in_the_text_exists(Block("README.md", 9, text))
