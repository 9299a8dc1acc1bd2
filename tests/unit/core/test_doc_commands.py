"""Every ``voipgw`` command line README.md and docs/*.md show names a command, an action and
flags that ``voipgw --help`` has (gateway/core/cli.py build_parser).

Command lines are read from code: inline code spans and the lines of fenced blocks, where
``voipgw`` (or a path ending in ``/voipgw``) starts the span or a shell command (after ``&&``,
``|``, ``;``, ``$ `` or systemd's ``ExecStart=``). Prose that merely says "voipgw"
is not a command. A bare flag in a code span (``--state-dir``) outside docs/benchmarks.md (whose
flags are the benchmark scripts') must be one of voipgw's, or listed in FOREIGN_FLAGS with the
program it belongs to.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import attrs
import pytest

from gateway.core import cli

ROOT = Path(__file__).parents[3]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^[ \t]*```")
_SPAN = re.compile(r"`([^`]+)`")
# Where a shell command starts in a line of code, then voipgw or a path to it.
_COMMAND = re.compile(r"(?:^|&&|\||;|\$ |Exec\w+=)\s*(?:\S*/)?voipgw\s+(?=\S)")
_FLAG = re.compile(r"--[a-z][a-z0-9-]*")

# Flags the docs show for programs other than voipgw.
FOREIGN_FLAGS = {
    "--enable-optimizations": "CPython's configure",
    "--with-lto": "CPython's configure",
    "--deploy-hook": "certbot",
    "--silent-timeout": "rtpengine",
    "--allow-loopback-in-peer-connection": "chromium",
    "--disable-features": "chromium",
    "--hypothesis-seed": "pytest (hypothesis)",
    "--fast": "testssl.sh",
    "--full": "benchmarks/testssl_scan.sh",
    "--sip-port-base": "benchmarks/sip_calls.py",
    "--add-ca": "testssl.sh",
    "--protocol-version": "a media worker's (python -m gateway.core.media.worker)",
}


@attrs.frozen
class Mention:
    doc: str
    line: int
    text: str  # what follows "voipgw ", or a bare flag

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def _code(path: Path) -> list[tuple[int, str, bool]]:
    """(line, code, is_span) for every code span (one may wrap onto the next line) and every
    line of a fenced block."""
    found: list[tuple[int, str, bool]] = []
    prose: list[tuple[int, str]] = []  # the lines outside blocks since the last block

    def spans() -> None:
        text = "\n".join(line for _, line in prose)
        for span in _SPAN.finditer(text):
            number = prose[0][0] + text.count("\n", 0, span.start())
            found.append((number, " ".join(span[1].split()), True))
        prose.clear()

    in_block = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if _FENCE.match(line):
            if not in_block:
                spans()
            in_block = not in_block
        elif in_block:
            found.append((number, line.strip(), False))
        else:
            prose.append((number, line))
    spans()
    return found


def mentions(path: Path, doc: str) -> tuple[list[Mention], list[Mention]]:
    """The voipgw command lines of ``path`` (named ``doc``), and its bare flags."""
    commands: list[Mention] = []
    flags: list[Mention] = []
    for number, code, is_span in _code(path):
        starts = [match.end() for match in _COMMAND.finditer(code)]
        commands.extend(Mention(doc, number, code[start:]) for start in starts)
        if not starts and is_span and code.startswith("--") and doc != "docs/benchmarks.md":
            flags.extend(Mention(doc, number, flag) for flag in _FLAG.findall(code))
    return commands, flags


COMMANDS: list[Mention] = []
BARE_FLAGS: list[Mention] = []
for _doc in DOCS:
    _commands, _flags = mentions(_doc, str(_doc.relative_to(ROOT)))
    COMMANDS += _commands
    BARE_FLAGS += _flags


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _words(text: str) -> list[str]:
    """The command's words up to the end of the command (a comment, a pipe, a redirection);
    a ``|`` inside ``[...]`` separates usage alternatives (``[--from-account N | --from-trunk N]``).
    """
    try:
        words = shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote in a shortened example
        words = text.split()
    out: list[str] = []
    depth = 0
    for word in words:
        depth += word.count("[") - word.count("]")
        if word == "|" and depth > 0:
            continue
        if word in ("&&", "|", ";", "<", ">", "...") or word.startswith(("<", ">", "#")):
            break
        out.append(word.strip("[]()|"))
    return out


def check_command(mention: Mention) -> None:
    """Raise AssertionError naming the place when the command line is not voipgw's."""
    parser = cli.build_parser()
    words = _words(mention.text)
    assert words, f"{mention.where}: 'voipgw' without a command"
    name = []
    # The first word names the command; a command with actions (accounts) needs one too.
    while (choices := _subcommands(parser)) and words and not words[0].startswith("-"):
        word = words.pop(0)
        assert word in choices, (
            f"{mention.where}: voipgw {' '.join(name)} has no command {word!r}; "
            f"it has {', '.join(choices)}"
        )
        name.append(word)
        parser = choices[word]
    for word in words:
        for flag in _FLAG.findall(word.split("=")[0]) if word.startswith("-") else ():
            assert flag in parser._option_string_actions, (
                f"{mention.where}: voipgw {' '.join(name)} has no option {flag}"
            )


def _all_options(parser: argparse.ArgumentParser) -> set[str]:
    options = set(parser._option_string_actions)
    for sub in _subcommands(parser).values():
        options |= _all_options(sub)
    return options


def test_the_docs_show_commands() -> None:
    shown = {mention.text.split()[0] for mention in COMMANDS}
    assert {"run", "accounts", "calls", "registrations", "route", "check-config"} <= shown
    assert any(flag.text == "--media-ports" for flag in BARE_FLAGS)


@pytest.mark.parametrize("mention", COMMANDS, ids=[f"{m.where} {m.text}" for m in COMMANDS])
def test_documented_command_exists(mention: Mention) -> None:
    check_command(mention)


@pytest.mark.parametrize("flag", BARE_FLAGS, ids=[f"{f.where} {f.text}" for f in BARE_FLAGS])
def test_documented_flag_exists(flag: Mention) -> None:
    assert flag.text in _all_options(cli.build_parser()) or flag.text in FOREIGN_FLAGS, (
        f"{flag.where}: no voipgw command has {flag.text} (another program's? FOREIGN_FLAGS)"
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("callz --json", "no command 'callz'"),
        ("accounts sett alice --max-calls 2", "no command 'sett'"),
        ("accounts set alice --max-call 2", "accounts set has no option --max-call"),
        ("calls --recent 5 --jsn", "calls has no option --jsn"),
        ("route 112 [--from-account NAME | --from-trunks NAME]", "no option --from-trunks"),
        ("run --config /etc/voipgw.toml --media-port 1-2", "run has no option --media-port"),
    ],
)
def test_a_wrong_command_fails_naming_the_place(text: str, named: str) -> None:
    with pytest.raises(AssertionError, match=rf"^docs/x\.md:3: .*{re.escape(named)}"):
        check_command(Mention("docs/x.md", 3, text))


def test_commands_are_found_in_code_only(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text(
        "voipgw is a gateway; `voipgw calls --json` and `--state-dir`, `voipgw\n"
        "accounts list` (wrapped).\n"
        "```sh\n.venv/bin/voipgw accounts add bob --password 'b s' && voipgw plugins\n```\n"
        "```ini\nExecStart=/opt/v/.venv/bin/voipgw run --config /etc/v.toml\n```\n"
    )
    commands, flags = mentions(doc, "x.md")
    assert [(m.line, m.text) for m in commands] == [
        (1, "calls --json"),
        (1, "accounts list"),
        (4, "accounts add bob --password 'b s' && voipgw plugins"),
        (4, "plugins"),
        (7, "run --config /etc/v.toml"),
    ]
    assert [(m.line, m.text) for m in flags] == [(1, "--state-dir")]
