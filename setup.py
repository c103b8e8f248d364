"""Only what pyproject.toml cannot say: the top-level `conf/` ships inside the package as `shiftbench.conf`,
so an installed wheel (not only a checkout) finds its configs. Everything else is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
  packages=[*find_packages(include=["shiftbench*", "hydra_plugins*"]), "shiftbench.conf"],
  package_dir={"shiftbench.conf": "conf"},
)
