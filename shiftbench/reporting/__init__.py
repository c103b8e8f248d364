"""What a person reads: the leaderboard, its page and figures, the tidy table, the terminal summary, the
methods board and experiment tracking (wandb).

Contract: above `claims` and `rows`; no JAX, so `shiftbench-leaderboard` runs without it.
"""
