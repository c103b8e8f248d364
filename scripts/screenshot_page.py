"""Screenshot a run's `index.html` in headless Chromium, to see what a reader sees first.

Usage: `python scripts/screenshot_page.py RUN_DIR OUT.png [--width 1400] [--height 900] [--full]`

`--height` is the window: what is above the fold (900 px by default); `--full` takes the whole page (a tall
window, cropped to the page's height by Chromium's own screenshot). Needs a Chromium binary (`chromium`,
`chromium-browser` or `google-chrome` on PATH, or `--chromium PATH`; on Debian: `apt-get install -y
chromium`). No test depends on it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium(given: str | None) -> str:
  found = [given] if given else [b for b in BROWSERS if shutil.which(b)]
  if not found:
    raise SystemExit(f"error: no Chromium found (tried {', '.join(BROWSERS)}); install one or give --chromium PATH")
  return found[0]


def screenshot(page: Path, out: Path, width: int, height: int, chromium: str, timeout: float = 120) -> Path:
  """Writes a `width` x `height` PNG of `page` to `out` with headless Chromium."""
  out.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(prefix="shiftbench-chromium-") as profile:
    cmd = [
      chromium,
      "--headless",
      "--no-sandbox",  # as root in a container Chromium refuses to start without it
      "--disable-gpu",
      "--hide-scrollbars",
      f"--user-data-dir={profile}",
      f"--window-size={width},{height}",
      f"--screenshot={out.resolve()}",
      page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
  if done.returncode != 0 or not out.is_file():
    last = (done.stderr.strip().splitlines() or ["no output"])[-1]
    raise SystemExit(f"error: {chromium} could not screenshot {page} (exit {done.returncode}): {last}")
  return out


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("run_dir", type=Path, help="a run (or leaderboard) directory holding index.html")
  parser.add_argument("out", type=Path, help="the PNG to write")
  parser.add_argument("--width", type=int, default=1400, help="window width in CSS pixels (default 1400)")
  parser.add_argument("--height", type=int, default=900, help="window height: the fold (default 900)")
  parser.add_argument("--full", action="store_true", help="the whole page: a window 8000 px tall")
  parser.add_argument("--chromium", help="the browser binary (default: the first of chromium, google-chrome on PATH)")
  args = parser.parse_args(argv)
  page = args.run_dir / "index.html" if args.run_dir.is_dir() else args.run_dir
  if not page.is_file():
    raise SystemExit(f"error: no index.html in {args.run_dir}; give a run directory that has finished its leaderboard")
  if args.width < 200 or args.height < 200:
    raise SystemExit(f"error: --width {args.width} --height {args.height}: both must be at least 200 pixels")
  out = screenshot(page, args.out, args.width, 8000 if args.full else args.height, find_chromium(args.chromium))
  print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
  main()
