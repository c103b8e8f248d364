"""Library log lines that are bookkeeping, not news for the user, hidden at the default log level: the CLI
(`shiftbench.cli`) and the Python API (`shiftbench.api.evaluate`) both call `quiet_library_logs` before a
run, so a run shows the same lines either way."""

from __future__ import annotations

import logging

# JAX's loggers whose INFO lines are its own bookkeeping: xla_bridge probing for backends that are not there
# (`Unable to initialize backend 'tpu' ... libtpu.so`, which reads like a failure) and the compilation
# cache's `Resetting cache at <empty>`. Their warnings still show.
JAX_CHATTER = ("jax._src.xla_bridge", "jax._src.compilation_cache")


def quiet_library_logs() -> None:
  """Shows only warnings and errors of absl (orbax logs every checkpoint step at INFO) and of `JAX_CHATTER`;
  at debug (`hydra.verbose=true`, `hydra.verbose=jax` and the like, or a caller's own DEBUG logging) every
  line of `JAX_CHATTER` shows, as before."""
  logging.getLogger("absl").setLevel(logging.WARNING)
  for name in JAX_CHATTER:
    logger = logging.getLogger(name)
    if logger.getEffectiveLevel() > logging.DEBUG:
      logger.setLevel(logging.WARNING)
