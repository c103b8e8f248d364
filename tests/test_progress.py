"""Progress you can see: a bar over rows on a terminal, plain log lines elsewhere, and JAX's probing hidden."""

import io
import logging
import os
import re
import subprocess
import sys

import pytest

from shiftbench.runs import log_levels, progress


class FakeTerminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def test_rows_draws_a_bar_with_count_and_eta_on_a_terminal():
  term = FakeTerminal()
  rows = progress.Rows(total=4, done=1, file=term)
  assert rows.drawn
  assert rows.advance().startswith("row 2/4, ") and "ETA" in rows.status()
  rows.close()
  text = term.getvalue()
  assert "rows:" in text and "2/4" in text and "<" in text  # tqdm's `[elapsed<remaining]`


def test_rows_draws_nothing_when_stderr_is_not_a_terminal_and_the_log_line_says_where_the_run_is():
  log_file = io.StringIO()
  rows = progress.Rows(total=3, file=log_file)
  assert not rows.drawn
  assert re.fullmatch(r"row 1/3, [\d:]+ elapsed, ETA [\d:]+", rows.advance())
  rows.advance()
  assert "ETA" not in rows.advance()  # the last row: nothing left
  rows.close()
  rows.close()
  assert log_file.getvalue() == ""


def test_log_lines_print_above_the_bar_while_it_is_drawn(monkeypatch):
  term = FakeTerminal()
  monkeypatch.setattr(sys, "stdout", term)
  handler = logging.StreamHandler(sys.stdout)  # Hydra's console handler
  root = logging.getLogger()
  monkeypatch.setattr(root, "handlers", [handler])
  rows = progress.Rows(total=2, file=term)
  assert handler not in root.handlers  # tqdm's handler writes through `tqdm.write`
  logging.getLogger("shiftbench.test").warning("a log line")
  rows.close()
  assert "a log line\n" in term.getvalue()
  assert root.handlers == [handler]


@pytest.fixture
def jax_loggers():
  loggers = [logging.getLogger(n) for n in log_levels.JAX_CHATTER]
  levels = [lg.level for lg in loggers]
  root_level = logging.getLogger().level
  for lg in loggers:
    lg.setLevel(logging.NOTSET)
  yield loggers
  for lg, level in zip(loggers, levels):
    lg.setLevel(level)
  logging.getLogger().setLevel(root_level)


def test_jax_backend_probing_is_hidden_at_the_default_level_but_not_its_warnings(jax_loggers):
  logging.getLogger().setLevel(logging.INFO)  # Hydra's default
  log_levels.quiet_library_logs()
  bridge = logging.getLogger("jax._src.xla_bridge")
  assert not bridge.isEnabledFor(logging.INFO) and bridge.isEnabledFor(logging.WARNING)


def test_jax_backend_probing_shows_at_debug(jax_loggers):
  logging.getLogger().setLevel(logging.DEBUG)  # hydra.verbose=true
  log_levels.quiet_library_logs()
  assert logging.getLogger("jax._src.xla_bridge").isEnabledFor(logging.DEBUG)


# A user's script: its own INFO logging, then `evaluate` up to the run (which this stand-in replaces): JAX's
# real backend probing, then an INFO and a WARNING line of the probing logger, as a backend missing here logs.
_EVALUATE_PROBING = """
import logging, sys
logging.basicConfig(level=logging.INFO)
import shiftbench
from shiftbench.runs import experiment

class Stop(Exception):
  pass

def probe(cfg, output_dir):
  import jax
  jax.devices()
  bridge = logging.getLogger("jax._src.xla_bridge")
  bridge.info("Unable to initialize backend 'stand-in': no such plugin")
  bridge.warning("a warning of the probing logger")
  raise Stop

experiment.run_experiment = probe
try:
  shiftbench.evaluate("cnn_fc", "smoke", sys.argv[1], logger="none")
except Stop:
  pass
"""


def test_evaluate_hides_jax_backend_probing_as_the_cli_does(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}  # let JAX probe every backend
  run = subprocess.run(
    [sys.executable, "-c", _EVALUATE_PROBING, str(tmp_path / "run")], capture_output=True, text=True, env=env
  )
  assert run.returncode == 0, run.stderr[-2000:]
  assert "Unable to initialize backend" not in run.stderr
  assert "a warning of the probing logger" in run.stderr  # its warnings still show


def test_glyph_rendering_draws_no_bar_when_stderr_is_not_a_terminal(capsys):
  from shiftbench.data import glyphs

  glyphs.render_splits("01", {"train": 2}, 8, 0, workers=1, desc="rendering glyphs")
  assert "rendering glyphs" not in capsys.readouterr().err
