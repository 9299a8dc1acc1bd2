"""Every relative link in README.md and docs/*.md reaches a file of the repository and, with a
``#fragment``, a heading of that file: a newcomer follows them from the README first, and a
heading renamed without its links leaves them on the top of a 1000-line page.

Anchors are computed as GitHub renders them: the heading's text lowercased, its inline markup
(backquotes, emphasis, links) reduced to the text, every character that is not a letter, digit,
space, hyphen or underscore dropped, spaces turned into hyphens, and a repeated anchor suffixed
``-1``, ``-2`` ... Links inside fenced code blocks and inline code are not links."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^\s*(```|~~~)")
_INLINE_CODE = re.compile(r"`+[^`]*`+")
# [text](target) or [text](target "title"); images ![..](..) too. The text may hold one level
# of brackets ([`[plugins.tls]`](docs/tls.md)).
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of the lines outside fenced code blocks."""
    lines = []
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading's text."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = text.replace("`", "").replace("*", "")  # code and emphasis: their text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    found: list[str] = []
    seen: dict[str, int] = {}
    for _, line in prose_lines(path):
        found += _HTML_ANCHOR.findall(line)
        heading = _HEADING.match(line)
        if heading is None:
            continue
        base = slug(heading.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.append(base if count == 0 else f"{base}-{count}")
    return frozenset(found)


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every relative link of ``path``."""
    found = []
    for number, line in prose_lines(path):
        for target in _LINK.findall(_INLINE_CODE.sub("", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
                continue  # https:, mailto: ...: not checked offline
            found.append((number, target))
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    problems = []
    for number, target in links(path):
        file_part, _, fragment = target.partition("#")
        linked = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not linked.exists():
            problems.append(f"{where}: no file {file_part}")
        elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
            problems.append(f"{where}: no heading with anchor #{fragment} in {linked.name}")
    return problems


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_reaches_a_file_and_its_heading(page: Path) -> None:
    assert broken_links(page) == []


def test_the_pages_have_links_to_check() -> None:
    # The link pattern must keep finding the README's links to docs/ and their anchors.
    targets = [target for _, target in links(ROOT / "README.md")]
    assert "docs/configuration.md#store" in targets
    assert "docs/benchmarks.md#the-compiled-relay" in targets


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("`[plugins.ws]` and `[plugins.wss]`", "pluginsws-and-pluginswss"),
        ("ICE-lite for WebRTC endpoints", "ice-lite-for-webrtc-endpoints"),
        ("T.38 fax passthrough", "t38-fax-passthrough"),
        ("The **compiled** relay", "the-compiled-relay"),
        ("Calls (`voipgw calls`)", "calls-voipgw-calls"),
        ("`[[dialog_watch_groups]]`", "dialog_watch_groups"),
    ],
)
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_missing_file_and_a_missing_anchor_are_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "other.md").write_text("# Title\n\n## Set up\n\n## Set up\n")
    page.write_text(
        "[ok](other.md#set-up) [second](other.md#set-up-1) [self](#here)\n\n# Here\n\n"
        "[gone](missing.md) [no anchor](other.md#setup) `[code](missing2.md)`\n"
        "```\n[fenced](missing3.md)\n```\n"
    )
    assert broken_links(page, tmp_path) == [
        "page.md:5: missing.md: no file missing.md",
        "page.md:5: other.md#setup: no heading with anchor #setup in other.md",
    ]
