"""Every relative link in the README and docs/ points at a file that exists (and at a heading that
exists, where it names one); the README stays short enough to read in five minutes."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _anchors(page: Path) -> set[str]:
  """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
  text = FENCE.sub("", page.read_text())
  headings = re.findall(r"^#+\s+(.*?)\s*$", text, re.M)
  return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def _links(page: Path) -> list[str]:
  return [t for t in LINK.findall(FENCE.sub("", page.read_text())) if not re.match(r"[a-z]+:", t)]


def test_the_pages_exist_and_have_links():
  assert len(PAGES) >= 9 and sum(len(_links(p)) for p in PAGES) > 20


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
  broken = []
  for target in _links(page):
    path, _, anchor = target.partition("#")
    dest = (page.parent / path).resolve() if path else page
    if not dest.exists():
      broken.append(f"{target} (no such file)")
    elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
      broken.append(f"{target} (no heading #{anchor} in {dest.relative_to(ROOT)})")
  assert not broken, f"{page.relative_to(ROOT)}: {broken}"


def test_the_readme_is_short():
  assert len((ROOT / "README.md").read_text().splitlines()) < 250
