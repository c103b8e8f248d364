"""Dataset sources that turn into plain arrays of objects and labels (an `ObjectSet`).

Hydra picks a source with `_target_`; the keyword arguments of these functions are the config keys:
  shiftbench.data.load_glyphs: digits and letters generated offline from matplotlib's fonts (default).
  shiftbench.data.load_tfds: any TFDS image-classification dataset by name (mnist, emnist/letters, ...).
  shiftbench.data.load_npz: a user's own `.npz` file.

tensorflow-datasets is imported only when a TFDS name below is first used: glyph and `.npz` runs do not
need it installed, and start ~1-2 s sooner without it.
"""

import importlib

from shiftbench.data.glyph_cache import load_glyphs
from shiftbench.data.npz import load_npz
from shiftbench.data.objects import ObjectSet, require_task, resize_objects, select_classes

_LAZY = {"DatasetNotFoundError": "tfds_source", "load_tfds": "tfds_source", "ShiftbenchGlyphs": "glyphs_builder"}

__all__ = [
  "DatasetNotFoundError",
  "ObjectSet",
  "ShiftbenchGlyphs",
  "load_glyphs",
  "load_npz",
  "load_tfds",
  "require_task",
  "resize_objects",
  "select_classes",
]


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(f"shiftbench.data.{_LAZY[name]}"), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
