"""The documentation stays a set of pages a newcomer can follow: the README a front page that links every page of
docs/, every link inside the repository and resolving (to its heading too), and the configuration reference naming
exactly the variables robin reads."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from robin import config

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
README_MAX_LINES = 260
# Examples of robin's own address, which a reader's robin answers on: not links out of the repository.
LOCAL_HOSTS = ("127.0.0.1", "localhost")

FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+).+?\1", re.DOTALL)
INLINE_LINK = re.compile(r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?", re.MULTILINE)
AUTOLINK = re.compile(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]+)>")
# What GitHub turns into a link by itself in prose.
BARE_URL = re.compile(r"(?<![(<\w])((?:https?://|www\.)[^\s)<>\]]+)")
SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//|www\.)")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def documents() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text a reader sees as prose: code blocks and code spans hold examples, not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def link_targets(text: str) -> list[str]:
    text = prose(text)
    targets = [*INLINE_LINK.findall(text), *REFERENCE_DEFINITION.findall(text), *AUTOLINK.findall(text)]
    linked = set(targets)
    return targets + [url for url in BARE_URL.findall(text) if url not in linked]


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text (links and code marks dropped) in lower case, punctuation
    removed, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text())):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def is_local_example(target: str) -> bool:
    host = re.sub(r"^[a-zA-Z]+://", "", target).split("/")[0].split(":")[0]
    return host in LOCAL_HOSTS


def link_problem(document: Path, target: str) -> str | None:
    """What is wrong with a link of `document` to `target`, or None."""
    if SCHEME.match(target):
        return None if is_local_example(target) else "points outside the repository"
    path_part, _, anchor = target.partition("#")
    if path_part.startswith("/"):
        return "is absolute: link relative to the document"
    linked = (document.parent / path_part).resolve() if path_part else document
    if not linked.is_relative_to(ROOT):
        return "points outside the repository"
    if not linked.exists():
        return f"names {linked.relative_to(ROOT)}, which does not exist"
    if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
        return f"names the heading #{anchor}, which {linked.relative_to(ROOT)} does not have"
    return None


@pytest.mark.parametrize("document", documents(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_link_stays_inside_the_repository_and_resolves(document: Path):
    problems = [f"{target}: {problem}" for target in link_targets(document.read_text())
                if (problem := link_problem(document, target))]
    assert not problems, f"{document.relative_to(ROOT)}: " + "; ".join(problems)


def test_readme_is_a_front_page():
    lines = README.read_text().count("\n")
    assert lines <= README_MAX_LINES, (f"README.md has {lines} lines: it is the front page; move the detail into "
                                       f"docs/ and link it")


def test_readme_links_every_page_of_docs():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in link_targets(README.read_text())
              if not SCHEME.match(target)}
    missing = [page.name for page in sorted((ROOT / "docs").glob("*.md")) if page.resolve() not in linked]
    assert not missing, f"README.md's documentation index does not link {missing}"


def variables_robin_reads() -> set[str]:
    """Every variable robin.config reads: each field of each section, and the few read on their own."""
    fields = {config._variable(section, f) for section in config.SECTIONS for f in dataclasses.fields(section)}
    return fields | {config.CONFIG_FILE, "ROBIN_FAULT_POINTS", config.PROMETHEUS_MULTIPROC_DIR}


def test_configuration_reference_lists_every_variable_robin_reads():
    documented = set(re.findall(r"\b(?:ROBIN|CSI|PROMETHEUS)_[A-Z0-9_]*[A-Z0-9]\b(?![_*])",
                                CONFIGURATION.read_text()))
    read = variables_robin_reads()
    assert not read - documented, f"docs/configuration.md does not describe {sorted(read - documented)}"
    assert not documented - read, f"docs/configuration.md names variables robin does not read: " \
                                  f"{sorted(documented - read)}"
