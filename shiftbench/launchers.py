"""`hydra/launcher=local_gpus`: a sweep's jobs in parallel on one machine, one device (GPU) each.

Every workload so far fits one GPU per job (docs/clusters.md), so a machine with several GPUs runs
several jobs at once. Each job is a submitit local job, a separate process that sees exactly one GPU
(`CUDA_VISIBLE_DEVICES`). At most one job runs per device, and the next job starts on the device that the
first finished job frees. Each job prints its own log, and each one can be requeued on a time limit, as
with the SLURM launcher.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)


def visible_devices(devices: Any) -> list[int]:
  """`auto`: every GPU `nvidia-smi -L` lists (one device, 0, when it lists none); else the given ids."""
  if devices != "auto":
    ids = [int(d) for d in (devices if isinstance(devices, (list, tuple)) else str(devices).split(","))]
    if not ids:
      raise ValueError("hydra.launcher.devices is empty; give device ids, e.g. [0,1], or auto")
    return ids
  try:
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=False).stdout
  except (OSError, subprocess.SubprocessError):
    listed = ""
  return list(range(sum(line.startswith("GPU ") for line in listed.splitlines()))) or [0]


class DeviceLauncher(LocalLauncher):
  """submitit's local launcher, with at most one job per device and each job pinned to its device.

  Args:
    devices: device ids (`[0, 1, 2, 3]`) or `auto` (every GPU on the machine).
    **params: submitit local parameters (`timeout_min`, `signal_delay_s`, `max_num_timeout`,
      `submitit_folder`, `setup`, ...).
  """

  def __init__(self, devices: Any = "auto", **params: Any) -> None:
    super().__init__(**params)
    self.devices = OmegaConf.to_container(devices, resolve=True) if OmegaConf.is_config(devices) else devices

  def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
    import submitit

    assert self.config is not None
    params = dict(self.params)
    executor = submitit.LocalExecutor(params.pop("submitit_folder"), max_num_timeout=params.pop("max_num_timeout", 0))
    params.pop("name", None)  # the local executor has no job names
    executor.update_parameters(**params, gpus_per_node=1)
    sweep_dir = Path(str(self.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    free, running = visible_devices(self.devices), {}
    log.info("local_gpus: %d jobs on devices %s, one job per device", len(job_overrides), free)
    results: list[JobReturn | None] = [None] * len(job_overrides)
    for i, overrides in enumerate(job_overrides):
      while not free:  # wait for a device
        free += self._collect(running, results)
        time.sleep(0.5)
      device = free.pop(0)
      executor.update_parameters(visible_gpus=[device])
      idx = initial_job_idx + i
      job = executor.submit(self, list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state())
      running[i] = (job, device)
      log.info(
        "local_gpus: job #%d on device %d (pid %s): %s", idx, device, job.job_id, " ".join(filter_overrides(overrides))
      )
    while running:
      self._collect(running, results)
      time.sleep(0.5)
    return results

  @staticmethod
  def _collect(running: dict, results: list) -> list[int]:
    """Moves finished jobs' returns into `results`; the devices they freed."""
    freed = []
    for i, (job, device) in list(running.items()):
      if job.done():
        results[i] = job.results()[0]
        log.info("local_gpus: job on device %d finished (pid %s)", device, job.job_id)
        del running[i]
        freed.append(device)
    return freed
