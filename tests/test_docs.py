"""The docs/ guide: its code runs, its commands print what it shows, its links and settings exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flask_eventlib import config
from tests.markdown import blocks, run_page

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
#: The topics the guide covers, one page each (the issue's list, plus the CLI and logging).
TOPICS = [
    "cli",
    "configuration",
    "console",
    "delivery",
    "deployment",
    "events",
    "http",
    "index",
    "javascript",
    "logging",
    "metrics",
    "serialization",
    "streams",
    "testing",
    "tracing",
    "validation",
]
LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_the_code_of_the_page_runs(page: Path, tmp_path: Path) -> None:
    run = run_page(page.read_text(), tmp_path)
    assert run.ok, run.output
    for command, expected, actual in run.commands:
        assert actual == expected, f"$ {command}\n--- the page shows ---\n{expected}--- it prints ---\n{actual}"
    if page.stem != "index":
        assert run.script_blocks or run.commands, f"{page.name} has no example that runs"


def test_the_guide_has_a_page_per_topic_and_the_index_links_them_all() -> None:
    assert [page.stem for page in PAGES] == TOPICS
    index = (DOCS / "index.md").read_text()
    linked = {target.partition("#")[0] for target in LINK.findall(index)}
    assert {f"{topic}.md" for topic in TOPICS if topic != "index"} <= linked


def test_the_readme_names_the_guide_with_no_link_that_breaks_on_a_package_registry() -> None:
    """PyPI and npm show the README without the repository around it: a relative link to a file
    would lead nowhere there, so the README names the guide's files and links only its own headings."""
    readme = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(), flags=re.S)
    assert "`docs/index.md`" in readme
    # Images aside: where one cannot load, the registry shows its alt text, which says what it was.
    text = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", readme)
    relative = [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    assert relative == []


def test_the_index_draws_the_flow() -> None:
    (diagram,) = [code for lang, code in blocks((DOCS / "index.md").read_text()) if lang == "mermaid"]
    assert diagram.startswith("flowchart")
    for step in ("log()", "broker", "handler", "dead letters", "POST /event/log"):
        assert step in diagram


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {slug(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}


@pytest.mark.parametrize("page", [*PAGES, ROOT / "README.md"], ids=[*(p.stem for p in PAGES), "README"])
def test_relative_links_and_their_anchors_exist(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{page.name}: {target} does not exist"
        if anchor:
            assert anchor in anchors(linked), f"{page.name}: no heading #{anchor} in {linked.name}"


def test_every_setting_the_guide_names_exists() -> None:
    # A line showing a did-you-mean names a misspelled key on purpose.
    lines = [line for page in PAGES for line in page.read_text().splitlines() if "did you mean" not in line]
    named = {key for line in lines for key in re.findall(r"EVENTLIB_[A-Z_]+[A-Z]", line)}
    assert named - set(config.DEFAULTS) == set()
