"""JAX's persistent compilation cache, switched on from the config (`compile_cache`, `paths.compile_cache_dir`).

A run compiles one program per model, phase and chunk shape; on an accelerator that is most of a quick
run (H200: 106 s for the quick preset, compile-bound). With the cache, a second run with the same
shapes loads the compiled programs from disk instead. JAX caches only programs that took at least
`jax_persistent_cache_min_compile_time_secs` (default 1 s) to compile; most of ours take less on CPU,
so the threshold is lowered to `min_compile_secs`.

Jobs that share the cache (a sweep on one machine or a cluster) run at once. Without a size limit JAX
writes entries with a plain `write_bytes` and reads them unlocked, so one job can read a half-written
entry of another (a warning and a recompile at best). With a limit (`max_bytes`) JAX's LRU cache takes a
`filelock` on the directory for every read and write, and evicts the least recently used entries.
"""

from __future__ import annotations

import logging
import os

import jax
from jax.experimental.compilation_cache import compilation_cache

log = logging.getLogger(__name__)


def configure(
  enabled: bool, cache_dir: str | os.PathLike[str] | None, min_compile_secs: float = 0.1, max_bytes: int = 8 << 30
) -> str | None:
  """Points JAX's persistent compilation cache at `cache_dir`, or leaves it off.

  Args:
    enabled: the `compile_cache` switch; False leaves JAX's own settings untouched.
    cache_dir: the directory (created if missing); None or empty: off.
    min_compile_secs: programs that compile faster than this are not written to disk (reading a tiny
      entry costs about what compiling it does).
    max_bytes: the cache's size limit; it also makes every read and write take the cache's file lock.

  Returns:
    The absolute cache directory in use, or None when off.
  """
  if not enabled or not cache_dir:
    return None
  path = os.path.abspath(os.path.expanduser(os.fspath(cache_dir)))
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    # A speed-up, not a result: a cache that cannot be created (a file in its place, a read-only mount)
    # must not stop the run; the checkpoint cache beside it is checked with its own one-line error.
    log.warning(
      "compilation cache off: cannot create %s (%s); set paths.compile_cache_dir or compile_cache=false",
      path,
      e.strerror or e,
    )
    return None
  if jax.config.jax_compilation_cache_dir != path:
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_secs))
    jax.config.update("jax_compilation_cache_max_size", int(max_bytes))
    # JAX decides once per process whether to use the cache, at the first compile: start afresh so a
    # process that compiled something before (a notebook, a test session) picks the directory up.
    compilation_cache.reset_cache()
  log.info("JAX compilation cache: %s", path)
  return path
