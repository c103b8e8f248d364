"""The claims report: the literature's qualitative results judged on rows (three-valued verdicts with
95% intervals over seeds), one module per family, and the catalogue that runs them all.

Contract: reads rows only (`rows`, `infra`); no JAX, no config system, so `shiftbench-leaderboard` starts fast.
"""
