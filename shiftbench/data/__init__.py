"""Dataset sources that turn into plain arrays of objects and labels (an `ObjectSet`).

Hydra picks a source with `_target_`; the keyword arguments of these functions are the config keys:
  shiftbench.data.load_glyphs: digits and letters generated offline from matplotlib's fonts (default).
  shiftbench.data.load_tfds: any TFDS image-classification dataset by name (mnist, emnist/letters, ...).
  shiftbench.data.load_npz: a user's own `.npz` file.
"""

from shiftbench.data.glyphs_builder import ShiftbenchGlyphs, load_glyphs
from shiftbench.data.npz import load_npz
from shiftbench.data.objects import ObjectSet, require_task, resize_objects, select_classes
from shiftbench.data.tfds_source import DatasetNotFoundError, load_tfds

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
