"""The page's own sections (`shiftbench.reporting.page` puts them together): what ran, the headline figure
at the size it was drawn for, the claims as every output lists them (`shiftbench.claims.listing`), where
fine-tuning stopped under the stopping rule (`shiftbench.reporting.stopping`), and the leaderboard in tables
that fit a 1400-px window. No jax here."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from shiftbench.claims import catalogue as claims_lib
from shiftbench.claims import listing
from shiftbench.reporting import headline, plots, stopping, terminal
from shiftbench.rows import schema


def table(columns: list[str], rows: list[list[Any]]) -> str:
  head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
  body = "\n".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
  return f"<table class='board'><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


# The board's metrics, by table: the result (with A's own invariance), then the shift metrics. Each table
# repeats the columns that say which line it is, so that each fits a 1400-px window; leaderboard.csv has
# every column in one table.
RESULT = (
  "in_acc",
  "off_acc",
  "invariance",
  "invariance_lost",
  *(m for m in schema.METRICS if m.startswith("pretrain_")),
)


def board_tables(columns: list[str], rows: list[list[Any]]) -> list[tuple[str, list[str], list[list[Any]]]]:
  """The board as (title, columns, rows) tables narrow enough for the page: the identity columns (the
  method and its setting as one, `terminal.method_column`) and seeds in each, then the result's metrics
  in the first and the shift metrics (and params) in the second."""
  columns, rows = terminal.method_column(columns, rows)
  headers = schema.METRICS
  result = {headers[m] for m in RESULT if m in headers}
  shift = {h for h in headers.values() if h not in result} | {"params"}
  ident = [i for i, c in enumerate(columns) if c not in result and c not in shift]
  out = []
  for title, members in (("Result", result), ("Shift metrics", shift)):
    keep = ident + [i for i, c in enumerate(columns) if c in members]
    if len(keep) > len(ident):
      out.append((title, [columns[i] for i in keep], [[r[i] for i in keep] for r in rows]))
  return out


# The claims table, verdict first: (header, width share). Fixed widths and wrapped text keep it inside the
# window.
CLAIM_LAYOUT = (
  ("id", 5),
  ("lr", 5),
  ("verdict", 9),
  ("effect, mean [CI]", 16),
  ("n", 3),
  ("claim", 30),
  ("compared", 32),
)
_VERDICT_CLASS = {claims_lib.PASS: "pass", claims_lib.FAIL: "fail", claims_lib.EQUIVALENT: "equivalent"}


def _claim_row(c: claims_lib.Claim) -> str:
  verdict = f"<td class='{_VERDICT_CLASS.get(c.verdict, 'other')}'>{html.escape(c.verdict)}</td>"
  claim = (
    f"{html.escape(c.claim)} <span class='cite'>({html.escape(c.citation)})</span>"
    if c.primary
    else html.escape(listing.role(c))
  )
  cells = [listing.shown_id(c), listing.rate(c)]
  tds = "".join(f"<td>{html.escape(str(v))}</td>" for v in cells) + verdict
  tds += f"<td>{html.escape(c.effect)}</td><td>{c.n}</td><td>{claim}</td><td>{html.escape(listing.compared(c))}</td>"
  return f"<tr class='{'primary' if c.primary else 'secondary'}'>{tds}</tr>"


def claims_table(claims: list[claims_lib.Claim]) -> str:
  """The claims as every output lists them (`claims.listing`), as one HTML table: per comparable group and
  section a heading row, each primary entry with its secondary entries folded under it (indented, marked
  ↳ and labelled); then the claims whose rows did not run, on one line."""
  report = listing.listing(claims_lib.ordered(claims))
  total = sum(w for _, w in CLAIM_LAYOUT)
  cols = "".join(f"<col style='width:{100 * w / total:.1f}%'>" for _, w in CLAIM_LAYOUT)
  head = "".join(f"<th>{html.escape(h)}</th>" for h, _ in CLAIM_LAYOUT)
  several = len(report.groups()) > 1
  body, not_run = [], []
  for label in report.groups():
    for b in (b for b in report.blocks if b.label == label):
      heading = " · ".join(t for t in ([f"[{label}]"] if several else []) + [listing.HEADINGS.get(b.section, "")] if t)
      if heading:
        body.append(f"<tr class='section'><td colspan='{len(CLAIM_LAYOUT)}'>{html.escape(heading)}</td></tr>")
      body += [_claim_row(c) for c in b.claims()]
    not_run += [(f"[{label}] " if several else "") + line for line in report.not_run_lines(label)]
  table = (
    f"<table class='claims'><colgroup>{cols}</colgroup><thead><tr>{head}</tr></thead><tbody>\n"
    + "\n".join(body)
    + "\n</tbody></table>"
    if body
    else ""
  )
  return table + "".join(f"\n<p class='notrun'>{html.escape(line)}</p>" for line in not_run)


def headline_section(path: Path) -> str:
  """The headline figure at the size it was drawn for (`headline.DISPLAY_DPI`: its 9-pt labels read as
  9 pt), with links to the SVG and the PNG beside the page."""
  width = plots.shown_width(path)
  data = base64.b64encode(path.read_bytes()).decode("ascii")
  links = [f"<a href='{n}'>{n}</a>" for n in (path.with_suffix(".svg").name, path.name) if (path.parent / n).exists()]
  return (
    f"<figure><img alt='{html.escape(headline.TITLE_TEXT)}' width='{width}' src='data:image/png;base64,{data}'>"
    f"<figcaption>Seed mean with its 95% t-interval per arm; ★ where C3b (full stays above scratch) is "
    f"supported. Vector version: {' · '.join(links)}</figcaption></figure>\n"
  )


def ran_rows(ran: list[tuple[str, str]]) -> str:
  """What ran, two facts a line (the first, the command, on a line of its own), so it takes little height."""
  cell = lambda k, v: f"<th>{html.escape(k)}</th><td>{html.escape(v)}</td>"  # noqa: E731
  (k0, v0), rest = ran[0], ran[1:]
  lines = [f"{cell(k0, v0).replace('<td>', '<td colspan=3>')}"]
  lines += ["".join(cell(k, v) for k, v in rest[i : i + 2]) for i in range(0, len(rest), 2)]
  return "".join(f"<tr>{line}</tr>" for line in lines)


def stopping_section(groups: list[stopping.Group]) -> str:
  """Where fine-tuning stopped (`stopping`), as a page section: one table per protocol group under the
  stopping rule; nothing when no row ran under it."""
  if not groups:
    return ""
  parts = [
    f"<h3>{html.escape(g.heading)}</h3>\n<p>{html.escape(g.summary)}</p>\n"
    f"{table(stopping.COLUMNS, [stopping.cells(x) for x in g.lines])}\n"
    for g in groups
  ]
  return f"<h2>{html.escape(stopping.TITLE)}</h2>\n<p>{html.escape(stopping.INTRO)}</p>\n" + "".join(parts)
