"""The README is the first page a new user reads and the docs/ site holds the rest: the README stays
short, opens with the two commands for a fresh machine, and every link of it and every page of the
site resolves (mkdocs build --strict, run by `make test`, checks the site's own links and anchors)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub and MkDocs both spell it for plain headings."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text))


def anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_readme_is_short_and_opens_with_the_fresh_machine_commands():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300, "README.md is for the first hour: move detail into docs/"
    first_block = text.split("```")[1]
    assert re.search(r"^make demo\b", first_block, re.M) and re.search(r"^make test\b", first_block, re.M)
    assert "\n## Large models\n" in text


def test_readme_links_resolve():
    links = [u for u in LINK.findall(README.read_text(encoding="utf-8")) if "://" not in u]
    assert any(u.startswith("docs/") for u in links)
    for url in links:
        file, _, anchor = url.partition("#")
        target = ROOT / file if file else README
        assert target.is_file(), url
        if anchor:
            assert anchor in anchors(target), url


def test_every_docs_page_is_in_the_nav():
    nav = set(re.findall(r"^\s*-\s*[^:\n]+:\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    assert nav == {p.name for p in DOCS.glob("*.md")}


def test_ci_runs_make_test():
    assert re.search(r"^make test$", (ROOT / ".ci" / "run").read_text(), re.M)
