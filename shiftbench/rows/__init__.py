"""What a results row is: its schema (identity, metrics, provenance), its comparison keys, and reading
rows back from results files.

Contract: above `infra` only; no JAX, no config system. Claims and reporting read rows through here.
"""
