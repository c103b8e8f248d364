"""One optimiser step from a loss: what every training step (plain and replay) does after its forward pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax


def gradient_step(
  loss_fn: Callable[[Any], tuple[jax.Array, tuple[jax.Array, Any]]],
  params: Any,
  opt_state: Any,
  tx_update: optax.TransformUpdateFn,
  labels: jax.Array,
) -> tuple[Any, Any, Any, dict[str, jax.Array]]:
  """Differentiates `loss_fn(params) -> (loss, (logits, rest))`, applies the optimiser's update and returns
  (params, opt_state, rest, {"loss", "acc"}), with the batch accuracy of `logits` against `labels`."""
  (loss, (logits, rest)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  updates, opt_state = tx_update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  acc = jnp.mean(jnp.argmax(logits, -1) == labels)
  return params, opt_state, rest, {"loss": loss, "acc": acc}
