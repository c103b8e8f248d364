"""Data only: the reference rows of the published presets (`<preset>.json.gz`), read by
`shiftbench.rows.reference` and made by `scripts/make_reference.py` (docs/results.md, "Reference rows")."""
