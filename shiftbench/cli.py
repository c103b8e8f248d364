"""`shiftbench`: the Hydra entry point. It only composes the config and calls the library."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
  from shiftbench.experiment import run_experiment  # after Hydra parsed args: `--help` stays instant

  logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every checkpoint step at INFO

  run_experiment(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
  main()
