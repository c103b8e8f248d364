"""Random streams, one per phase and purpose, derived from a row's seed with `fold_in`.

Every consumer of randomness asks for its own stream: `stream(seed, PRETRAIN_INIT)` for the weights a
pretraining starts from, `stream(seed, FINETUNE_BATCHES)` for the fine-tune batches and placements, and
`evaluator_stream(seed, "consistency")` for one evaluator. Streams never share a key, and no seed `s + 1`
stands in for another phase's seed `s` (a `scratch` row would then start from another seed's pretrained
weights).
"""

from __future__ import annotations

import zlib

import jax

# Fixed phase ids: changing one changes every result, so they are constants, never positions in a list.
PRETRAIN_INIT = 1
FINETUNE_INIT = 2
PRETRAIN_BATCHES = 3
FINETUNE_BATCHES = 4
EVALUATION = 5  # each evaluator folds its own name into this one (`evaluator_stream`)
# Draws from A after pretraining for a fine-tune method (EWC's Fisher samples): each method folds its
# own name into this one (`name_id`).
FROM_PRETRAINING = 6
PHASES = {
  "pretrain_init": PRETRAIN_INIT,
  "finetune_init": FINETUNE_INIT,
  "pretrain_batches": PRETRAIN_BATCHES,
  "finetune_batches": FINETUNE_BATCHES,
  "evaluation": EVALUATION,
  "from_pretraining": FROM_PRETRAINING,
}


def stream(seed: int, phase: int) -> jax.Array:
  """The key of `phase` (one of the constants above) for a row's `seed`."""
  if phase not in PHASES.values():
    raise ValueError(f"unknown random stream phase {phase!r}; allowed: {PHASES}")
  return jax.random.fold_in(jax.random.key(int(seed)), phase)


def name_id(name: str) -> int:
  """A stable 31-bit id of a name (CRC-32: the same on every machine and Python, unlike `hash`)."""
  return zlib.crc32(name.encode()) & 0x7FFFFFFF


def evaluator_stream(seed: int, name: str) -> jax.Array:
  """The key of the evaluator configured under `name` (its `eval.metrics` key) for a row's `seed`."""
  return jax.random.fold_in(stream(seed, EVALUATION), name_id(name))
