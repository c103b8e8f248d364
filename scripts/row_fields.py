"""Writes the table of row fields in docs/outputs.md from their declaration (`shiftbench.rows.schema.ROW`).

python scripts/row_fields.py          # rewrites the table between its markers
python scripts/row_fields.py --check  # exits 1 if the page differs (tests/test_row_fields.py checks the same)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shiftbench.rows import schema

PAGE = Path(__file__).resolve().parent.parent / "docs" / "outputs.md"
BEGIN = "<!-- row fields: written by scripts/row_fields.py from shiftbench.rows.schema.ROW; do not edit -->"
END = "<!-- end of row fields -->"


def written(text: str) -> str:
  """`text` (the page) with the declaration's table between the markers."""
  start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
  return f"{text[:start]}\n{schema.ROW.markdown()}{text[end:]}"


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--check", action="store_true", help="only say whether the page is up to date")
  args = parser.parse_args(argv)
  text = PAGE.read_text()
  if args.check:
    return 0 if written(text) == text else 1
  PAGE.write_text(written(text))
  return 0


if __name__ == "__main__":
  sys.exit(main())
