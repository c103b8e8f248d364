"""shiftbench's Hydra configs. They live at the repository's top level and ship inside the wheel as the
package `shiftbench.conf` (setup.py), which the CLI finds through `pkg://shiftbench.conf`."""
