"""The README and docs/ name what the code has: every path and module they name exists, the model table lists
every preset in conf/model/, and the heatmap file names are the ones a run writes. (Links between pages are
tests/test_docs_links.py's.)"""

import json
import re
from pathlib import Path

import pytest

from shiftbench.rows.schema import RowId

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PATH = re.compile(r"\b(?:shiftbench|conf|scripts|tests|notebooks|hydra_plugins)/[\w./-]*\.(?:py|yaml|ipynb|sh|npz)\b")
# Paths named on purpose though absent, each with why.
ABSENT = {
  "shiftbench/methods/tempered_probe.py": "development.md: the file you would add for a built-in method",
  "shiftbench/multiseed.py": "performance.md: 'the former' module, measured before it went",
  "conf/model/NAME.yaml": "development.md: a placeholder",
}
# Modules of the layout before 0.7.0 (now shiftbench.reporting.*, claims.*, models.*, evaluators.*, ...).
FORMER = ("report", "results", "pretrained", "evaluation", "methods_claims", "architecture_claims", "forgetting_claims")


def _text(page: Path) -> str:
  return page.read_text()


def _pages_and_matches(pattern: re.Pattern) -> list[tuple[str, str]]:
  return [(p.relative_to(ROOT).as_posix(), m) for p in PAGES for m in pattern.findall(_text(p))]


def test_every_path_and_module_the_docs_name_exists():
  named = _pages_and_matches(PATH)
  assert len(named) > 30  # the pattern finds what the pages name
  missing = sorted({f"{page}: {path}" for page, path in named if path not in ABSENT and not (ROOT / path).exists()})
  assert {path for _, path in named} >= set(ABSENT)  # an entry no page names any more goes
  files = "json|md|csv|html|png|svg|yaml"  # `results.json` is a file, not the old module
  old = re.compile(rf"`(?:shiftbench[./])?(?:{'|'.join(FORMER)})(?:\.py\b|\.(?!(?:{files})\b)[A-Za-z_]\w*)")
  missing += [f"{page}: {m} (a module of the layout before 0.7.0)" for page, m in _pages_and_matches(old)]
  assert not missing, missing


def test_the_model_table_lists_every_preset_and_the_readme_counts_them():
  presets = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
  table = re.findall(r"^\| `(\w+)` \|", _text(ROOT / "docs" / "models.md"), re.M)
  assert sorted(table) == presets
  counts = re.findall(r"\[(\d+) presets\]\(docs/models\.md\)", _text(ROOT / "README.md"))
  assert counts == [str(len(presets))]


def _heatmap_names() -> list[str]:
  return re.findall(r"`(heatmaps/[^`]+\.png)`", _text(ROOT / "docs" / "outputs.md"))


def test_the_heatmap_names_in_outputs_md_are_the_files_a_run_writes(tiny_results):
  pattern, *examples = _heatmap_names()
  placeholders = {
    "MODEL": r"\w+",
    "PRETRAIN": r"[a-z_]+",
    "MODE": r"(?:last|head|full)",
    "METHOD": r"[a-z0-9]+[a-z][0-9.e-]*",
    "LR": r"[0-9.e-]+",
    "SEED": r"[0-9]+",
  }
  regex = re.compile(re.sub("|".join(placeholders), lambda m: placeholders[m.group()], re.escape(pattern)) + "$")
  run = tiny_results / "seed0"
  rows = json.loads((run / "results.json").read_text())["rows"]
  files = sorted(p.relative_to(run).as_posix() for p in (run / "heatmaps").glob("*.png"))
  assert files == sorted(r["heatmap"] for r in rows) and files
  assert all(regex.match(f) for f in files), (pattern, files)
  # A method's row (the tiny run has plain rows only) is named by the same RowId.name the protocol uses.
  method = RowId("cnn_fc", "translate", "full", "wise", 0.5, 0.001, 0)
  assert examples == [f"heatmaps/{method.name('_')}.png"]


@pytest.mark.parametrize("page", ["development.md"])
def test_the_test_count_is_a_command_not_a_number(page):
  """A count of tests goes stale with the next test; the page says how to count them."""
  text = _text(ROOT / "docs" / page)
  assert "pytest --collect-only -q" in text
  assert not re.search(r"&& pytest\s+#\s*\d+ tests", text)
