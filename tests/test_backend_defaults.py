"""Defaults that depend on the backend: `eval.batch_size: auto` and the JAX compilation cache."""

from __future__ import annotations

from pathlib import Path

import jax
import pytest
from hydra import compose, initialize_config_dir

from shiftbench.evaluators import batching
from shiftbench.runs import compile_cache, settings
from shiftbench.runs.settings import Settings

CONF = str(Path(__file__).resolve().parent.parent / "conf")


class FakeDevice:
  """An accelerator that reports `bytes_limit` free bytes (or nothing, like some backends)."""

  platform = "gpu"

  def __init__(self, free: int | None):
    self.free = free

  def memory_stats(self):
    return None if self.free is None else {"bytes_limit": self.free + 10**6, "bytes_in_use": 10**6}


def test_auto_eval_batch_is_512_on_cpu_and_sized_by_memory_on_accelerators():
  assert batching.auto_batch_size(64, [[32, 64, 128]], jax.devices("cpu")[0]) == batching.CPU_BATCH == 512
  forgetting, quick = (64, [[32, 64, 128]]), (32, [[8, 16, 32]])
  assert batching.auto_batch_size(*forgetting, FakeDevice(100 * 2**30)) == 8192  # an H200 after preallocation
  assert batching.auto_batch_size(*quick, FakeDevice(4 * 2**30)) == 4096  # small, at this geometry
  assert batching.auto_batch_size(*forgetting, FakeDevice(4 * 2**30)) == 1024  # the floor
  assert batching.auto_batch_size(*forgetting, FakeDevice(None)) == 8192  # no memory stats: the ceiling
  # The largest model sets the size: widening one model can only lower it.
  assert batching.auto_batch_size(64, [[8], [32, 64, 128]], FakeDevice(20 * 2**30)) == batching.auto_batch_size(
    64, [[32, 64, 128]], FakeDevice(20 * 2**30)
  )


def test_auto_eval_batch_on_cpu_fits_a_models_own_count_in_a_quarter_of_host_memory(monkeypatch):
  cpu, vgg16_224 = jax.devices("cpu")[0], 30 * 2**20  # VGG16's whole-canvas pass at 224 px: ~30 MiB per canvas
  monkeypatch.setattr(batching, "host_available_bytes", lambda: 20 * 2**30)
  # 5 GiB / 30 MiB = 170 -> 128, the largest size measured to run here (256 aborted, docs/paper.md)
  assert batching.auto_batch_size(224, [[64]], cpu, per_canvas_bytes=vgg16_224) == 128
  assert batching.auto_batch_size(224, [[64]], cpu, per_canvas_bytes=2**40) == 1  # one canvas at least
  assert batching.auto_batch_size(64, [[32, 64, 128]], cpu) == 512  # the small CNNs: no count, 512 as before
  monkeypatch.setattr(batching, "host_available_bytes", lambda: 2**40)
  assert batching.auto_batch_size(224, [[64]], cpu, per_canvas_bytes=vgg16_224) == batching.CPU_BATCH  # no more


def test_auto_eval_batch_of_a_torchvision_preset_on_cpu_comes_from_its_compiled_count(monkeypatch):
  """The config path: `auto` with a torchvision model counts its activations on CPU too, not only on GPUs."""
  overrides = ["model=vgg11", "+tv_width=0.125", "canvas.size=64", "canvas.object_size=16"]
  with initialize_config_dir(config_dir=CONF, version_base="1.3"):
    cfg = compose("config", overrides)
  settings._ACTIVATION_BYTES.clear()  # counted once per process and config: count it here
  counted = []
  real = batching.model_activation_bytes
  count = lambda *a, **k: counted.append(real(*a, **k)) or counted[-1]  # noqa: E731
  monkeypatch.setattr(batching, "model_activation_bytes", count)
  monkeypatch.setattr(batching, "host_available_bytes", lambda: 64 * 4 * counted[-1] if counted else 2**40)
  assert Settings.from_config(cfg).eval_batch == 64 and len(counted) == 1  # a quarter of 256 canvases' worth
  monkeypatch.setattr(batching, "host_available_bytes", lambda: 2**40)
  assert Settings.from_config(cfg).eval_batch == 512 and len(counted) == 1  # ample memory; the count was kept


def test_eval_batch_size_from_config_is_auto_or_a_positive_int():
  with initialize_config_dir(config_dir=CONF, version_base="1.3"):
    assert compose("config").eval.batch_size == "auto"
    assert Settings.from_config(compose("config")).eval_batch == 512  # tests run on CPU
    assert Settings.from_config(compose("config", ["eval.batch_size=300"])).eval_batch == 300
    for bad in ("0", "big"):
      with pytest.raises(ValueError, match="eval.batch_size must be a positive int or 'auto'"):
        Settings.from_config(compose("config", [f"eval.batch_size={bad}"]))


def test_compile_cache_directory_follows_the_config(tmp_path, monkeypatch):
  with initialize_config_dir(config_dir=CONF, version_base="1.3"):
    cfg = compose("config")
  assert cfg.compile_cache is True  # on by default, under the shiftbench cache directory
  monkeypatch.setenv("SHIFTBENCH_CACHE", str(tmp_path / "cache"))
  assert cfg.paths.compile_cache_dir == str(tmp_path / "cache" / "jax_cache")
  previous = jax.config.jax_compilation_cache_dir
  try:
    assert compile_cache.configure(False, tmp_path / "off") is None and not (tmp_path / "off").exists()
    path = compile_cache.configure(True, tmp_path / "jc", min_compile_secs=0.0)  # this one compiles fast
    assert path == str(tmp_path / "jc") and jax.config.jax_compilation_cache_dir == path
    jax.jit(lambda x: x * 3 + 1)(jax.numpy.ones(7)).block_until_ready()
    assert any((tmp_path / "jc").iterdir()), "the compiled program was not written to the cache"
  finally:
    jax.config.update("jax_compilation_cache_dir", previous)
    compile_cache.compilation_cache.reset_cache()


def test_a_compile_cache_that_cannot_be_created_is_skipped_with_a_warning(tmp_path, caplog):
  from shiftbench.runs import compile_cache

  blocker = tmp_path / "file"
  blocker.write_text("x")
  with caplog.at_level("WARNING"):
    assert compile_cache.configure(True, blocker / "jax_cache") is None
  assert "compilation cache off" in caplog.text and str(blocker) in caplog.text
