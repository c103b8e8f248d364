"""Everything shiftbench caches goes under one root, `$SHIFTBENCH_CACHE` (default `~/.cache/shiftbench`)."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from shiftbench.data import glyph_cache
from shiftbench.infra import cache

CONF = Path(__file__).resolve().parent.parent / "conf"


def _files_under(root: Path) -> list[Path]:
  return [p for p in root.rglob("*") if p.is_file()]


def test_with_shiftbench_cache_set_nothing_is_cached_under_home(tmp_path, monkeypatch):
  home, root = tmp_path / "home", tmp_path / "cache"
  home.mkdir()
  monkeypatch.setenv("HOME", str(home))
  monkeypatch.setenv("SHIFTBENCH_CACHE", str(root))
  monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
  with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
    paths = OmegaConf.to_container(compose("config").paths, resolve=True)
  assert all(Path(p).is_relative_to(root) for p in paths.values()), paths
  objs = glyph_cache.load_glyphs("digits", ["0", "1"], train_per_class=2, test_per_class=1, image_size=8)
  assert objs.train_images.shape == (4, 8, 8, 1)
  assert _files_under(home) == []
  assert sorted(p.name for p in _files_under(root / "glyphs")) == ["arrays.npz", "meta.json"]


def test_the_cache_root_defaults_to_dot_cache_under_home_and_a_named_data_dir_is_kept(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.delenv("SHIFTBENCH_CACHE")
  assert cache.root() == tmp_path / ".cache" / "shiftbench"
  path = glyph_cache.cache_path(str(tmp_path / "mine"), "digits", "01", 2, 1, 8, 0)
  assert path.parent == tmp_path / "mine" / glyph_cache.CACHE_SUBDIR
