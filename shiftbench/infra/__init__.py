"""Infrastructure under everything: one-line user errors, content hashes, atomic files, inter-process
locks, the shared build-once cache and a bounded network probe.

Contract: imports nothing else of shiftbench, no JAX and no config system (pyproject's import contracts).
"""
