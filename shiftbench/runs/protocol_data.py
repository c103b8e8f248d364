"""Datasets A and B as the protocol uses them: loaded and resized from the config, checked (a task, the
same channels, new classes for B), hashed by content (what a cached checkpoint is keyed by), and split on
the device (B's validation objects held out; evaluated objects in class-balanced order)."""

from __future__ import annotations

from shiftbench.data import ObjectSet, require_task, resize_objects, subsets
from shiftbench.data.device import DeviceObjects
from shiftbench.infra import hashing
from shiftbench.infra.errors import ConfigError, DataError, UserError
from shiftbench.runs.settings import Settings


def dataset_hash(objs: ObjectSet) -> str:
  """sha256 of a dataset's arrays and class names, as loaded and resized: what the data *is*, whatever
  file, TFDS version or renderer it came from."""
  return hashing.sha256_arrays(
    objs.train_images, objs.train_labels, objs.test_images, objs.test_labels, names=objs.class_names
  )


def device_splits(objs: ObjectSet, s: Settings, validation: bool = False) -> tuple[DeviceObjects, DeviceObjects]:
  """(training objects, evaluated objects) on the device (`splits_b` for what `validation` means)."""
  return _splits(objs, s, validation)[:2]


def splits_b(objs: ObjectSet, s: Settings) -> tuple[DeviceObjects, DeviceObjects, DeviceObjects | None]:
  """Dataset B's (training, evaluated, validation) objects on the device, from one validation split.

  `s.validation_fraction` of each class of the training objects is held out, the same objects whichever
  split is evaluated, so a setting chosen on validation (`eval.split=validation`) is chosen under the very
  protocol that reports on test. The evaluated objects are put in class-balanced order
  (`subsets.balanced_order`) and cut to `eval.max_objects`. The validation objects (every held-out one,
  in class-balanced order; None when the fraction is 0) are what rows report `val_in_acc` on, so a rate
  can be chosen without looking at test.
  """
  return _splits(objs, s, True)


def _splits(
  objs: ObjectSet, s: Settings, validation: bool
) -> tuple[DeviceObjects, DeviceObjects, DeviceObjects | None]:
  train_x, train_y = objs.train_images, objs.train_labels
  eval_x, eval_y = objs.test_images, objs.test_labels
  held_out = None
  if validation and s.validation_fraction > 0:
    keep, held = subsets.split_validation(train_x, train_y, s.validation_fraction, s.subset_seed)
    val_x, val_y = train_x[held], train_y[held]
    val_order = subsets.balanced_order(val_x, val_y, s.subset_seed)
    held_out = DeviceObjects.from_numpy(val_x[val_order], val_y[val_order], objs.num_classes)
    if s.eval_split == "validation":
      eval_x, eval_y = val_x, val_y
    train_x, train_y = train_x[keep], train_y[keep]
  elif validation and s.eval_split == "validation":
    raise ConfigError("eval.split=validation needs eval.validation_fraction > 0 (got 0)")
  order = subsets.balanced_order(eval_x, eval_y, s.subset_seed)[: s.max_objects]
  return (
    DeviceObjects.from_numpy(train_x, train_y, objs.num_classes),
    DeviceObjects.from_numpy(eval_x[order], eval_y[order], objs.num_classes),
    held_out,
  )


def check_disjoint(data_a: ObjectSet, data_b: ObjectSet, allow_overlap: bool) -> None:
  """B's classes must be new (the protocol's premise): shared class names are a config error."""
  shared = sorted(set(data_a.class_names) & set(data_b.class_names))
  if shared and not allow_overlap:
    raise ConfigError(
      f"datasets A ({data_a.name}) and B ({data_b.name}) share the classes {shared}; fine-tuning "
      "must be on new classes: choose other data.pretrain.classes / data.finetune.classes, or set "
      "data.allow_overlap=true to run it anyway (recorded in every row)"
    )


def load_datasets(s: Settings) -> tuple[ObjectSet, ObjectSet]:
  """Loads datasets A and B (`Settings.loaders`) and resizes their objects to the object size."""
  data_a = resize_objects(_load(s, "pretrain"), s.spec.object_size)
  data_b = resize_objects(_load(s, "finetune"), s.spec.object_size)
  require_task(data_a, "A (data.pretrain)")
  require_task(data_b, "B (data.finetune)")
  if data_a.object_shape[-1] != data_b.object_shape[-1]:
    raise DataError(
      f"datasets A ({data_a.name}) and B ({data_b.name}) have different channel counts: "
      f"{data_a.object_shape[-1]} vs {data_b.object_shape[-1]}"
    )
  check_disjoint(data_a, data_b, s.allow_overlap)
  return data_a, data_b


def _load(s: Settings, side: str) -> ObjectSet:
  """One dataset from its loader; the loader refusing the arguments `data.<side>` gives it (a ValueError,
  TypeError or missing file: an unknown charset, a class it lacks) as one line naming the entry."""
  try:
    return s.loaders[side]()
  except UserError:
    raise
  except (ValueError, TypeError, FileNotFoundError) as e:
    raise ConfigError(f"data.{side} ({s.config['data'][side]['_target_']}): {e}") from e
