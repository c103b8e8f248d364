"""Training: the jitted loop (schedule, steps, stopping rules), periodic resumable checkpoints and the
shared cache of pretrained checkpoints.

Contract: above `evaluators`'s peers `models`, `data`, `rows`, `infra`; never sees the config system.
"""
