"""Hydra finds launchers only in the `hydra_plugins` namespace; the implementation is shiftbench.launchers."""

from shiftbench import launchers


class DeviceLauncher(launchers.DeviceLauncher):
  """`hydra/launcher=local_gpus`: a sweep's jobs in parallel on one machine, one device each."""
