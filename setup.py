"""Only what pyproject.toml cannot say: the top-level `conf/` ships inside the package as `shiftbench.conf`,
so an installed wheel (not only a checkout) finds its configs, and the local_gpus launcher ships in Hydra's
plugin namespace. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
  # hydra_plugins is a namespace package (no __init__.py: Hydra finds launchers in it), which find_packages
  # skips with everything under it, so the local_gpus launcher's package is named.
  packages=[*find_packages(include=["shiftbench*"]), "hydra_plugins.shiftbench_launcher", "shiftbench.conf"],
  package_dir={"shiftbench.conf": "conf"},
)
