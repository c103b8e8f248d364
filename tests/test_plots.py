"""The per-row heatmaps (`reporting.plots`): drawn from two threads at once, each PNG is whole and the same
as one drawn alone, and pyplot's global figure registry is never touched."""

import threading

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from shiftbench.reporting import plots


def _heatmap(path, seed: int):
  acc = np.random.default_rng(seed).random((5, 6)) * 0.9 + 0.1
  return plots.save_location_map(path, acc, np.arange(0, 25, 5), np.arange(0, 30, 5), 0.1, (10, 15), f"row {seed}")


def test_heatmaps_drawn_from_two_threads_at_once_are_whole_pngs_and_leave_pyplot_alone(tmp_path, monkeypatch):
  alone = {seed: matplotlib.image.imread(_heatmap(tmp_path / "alone" / f"{seed}.png", seed)) for seed in range(2)}

  def pyplot_used(*args, **kwargs):
    raise AssertionError("a heatmap went through pyplot's global figure registry")

  monkeypatch.setattr(plt, "figure", pyplot_used)  # plt.subplots makes its figure here
  monkeypatch.setattr(plt, "close", pyplot_used)
  errors = []

  def worker(name: str) -> None:
    try:
      for k in range(6):
        _heatmap(tmp_path / name / f"{k}.png", k % 2)
    except BaseException as e:  # noqa: BLE001 - reported by the main thread
      errors.append(e)

  threads = [threading.Thread(target=worker, args=(name,)) for name in ("a", "b")]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  if errors:
    raise errors[0]
  for name in ("a", "b"):
    for k in range(6):
      path = tmp_path / name / f"{k}.png"
      assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
      assert np.array_equal(matplotlib.image.imread(path), alone[k % 2]), path  # as drawn alone, pixel for pixel
  assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [f"{k}.png" for k in range(6)]  # no temp files left
  assert plt.get_fignums() == []


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_save_figure_writes_a_new_figure_without_pyplot(tmp_path, suffix):
  fig = plots.new_figure(figsize=(2, 2))
  fig.subplots().plot([0, 1], [1, 0])
  path = plots.save_figure(fig, tmp_path / f"f{suffix}")
  assert path.stat().st_size > 1000 and plt.get_fignums() == []
